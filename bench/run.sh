#!/usr/bin/env bash
# The whole performance table in one command (see docs/performance.md):
# builds the release binaries, then `sluice-bench all`, ContextForge's row
# included (installed into bench/.venv-contextforge on first use).
#
#   bench/run.sh                      # everything, ~4-5 min (+ ContextForge install once)
#   CONTEXTFORGE=0 bench/run.sh       # without ContextForge
#   bench/run.sh --duration 2s --concurrency 1,64   # any `sluice-bench all` option
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sluice/target}"
cargo build --release --quiet -p sluice -p sluice-testkit -p sluice-bench
args=()
if [[ "${CONTEXTFORGE:-1}" != 0 ]]; then
    bash bench/contextforge.sh install
    args+=(--external bench/contextforge.sh)
fi
exec "$CARGO_TARGET_DIR/release/sluice-bench" all "${args[@]}" "$@"
