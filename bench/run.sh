#!/usr/bin/env bash
# The whole performance table in one command (see docs/performance.md):
# builds the release binaries, then `sluice-bench all`, ContextForge's row
# included (installed into bench/.venv-contextforge on first use).
#
#   bench/run.sh                      # everything, ~4-5 min (+ ContextForge install once)
#   CONTEXTFORGE=0 bench/run.sh       # without ContextForge
#   bench/run.sh --duration 2s --concurrency 1,64   # any `sluice-bench all` option
#
# Or this checkout against another git revision (`sluice-bench compare`):
#
#   bench/run.sh --compare [REV] [compare options]
#
# builds `sluice` of REV (default: the merge-base of HEAD with
# $SLUICE_COMPARE_BASE, bcdc2b8 = main before the pipeline refactor) in a
# temporary git worktree with its own CARGO_TARGET_DIR
# ($SLUICE_COMPARE_TARGET_DIR, default ~/.cache/sluice/target-compare; the
# binary is kept there per commit, so a second run does not rebuild it), and
# measures it against this checkout's `sluice`, both in front of this
# checkout's `sluice-fixture`. Defaults: --duration 2s --warmup 500ms
# --repeat 6; any `sluice-bench compare` option after REV overrides them
# (e.g. --concurrency 1,16,64, --upstreams http, --eras session).
# (`--compare NAME=PATH` is still passed to `sluice-bench all` as before.)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sluice/target}"

compare=0
rev=""
args=()
while (($#)); do
    case "$1" in
        --compare | --compare=*)
            if [[ "$1" == --compare=* ]]; then
                value="${1#--compare=}"
            elif (($# > 1)) && [[ "$2" != -* ]]; then
                value="$2"
                shift
            else
                value=""
            fi
            if [[ "$value" == *=* ]]; then
                # NAME=PATH: extra rows of `sluice-bench all`.
                args+=(--compare "$value")
            else
                compare=1
                rev="$value"
            fi
            ;;
        *) args+=("$1") ;;
    esac
    shift
done

cargo build --release --quiet -p sluice -p sluice-testkit -p sluice-bench
R="$CARGO_TARGET_DIR/release"

if ((compare == 0)); then
    if [[ "${CONTEXTFORGE:-1}" != 0 ]]; then
        bash bench/contextforge.sh install
        args=(--external bench/contextforge.sh "${args[@]}")
    fi
    exec "$R/sluice-bench" all "${args[@]}"
fi

if [[ -z "$rev" ]]; then
    base="${SLUICE_COMPARE_BASE:-bcdc2b8}"
    rev="$(git merge-base HEAD "$base")" || {
        echo "run.sh: no merge-base of HEAD and $base; name a revision: --compare REV" >&2
        exit 2
    }
fi
old_sha="$(git rev-parse --verify --quiet "$rev^{commit}")" || {
    echo "run.sh: \`$rev\` is not a commit" >&2
    exit 2
}
old_name="$(git rev-parse --short "$old_sha")"
new_name="$(git rev-parse --short HEAD)"
if [[ -n "$(git status --porcelain --untracked-files=no)" ]]; then
    new_name="$new_name+modified"
fi

OLD_TARGET="${SLUICE_COMPARE_TARGET_DIR:-$HOME/.cache/sluice/target-compare}"
old_bin="$OLD_TARGET/compare-bins/sluice-$old_sha"
if [[ ! -x "$old_bin" ]]; then
    tmp="$(mktemp -d "${TMPDIR:-/tmp}/sluice-compare.XXXXXX")"
    cleanup() {
        git -C "$ROOT" worktree remove --force "$tmp/src" 2>/dev/null || true
        rm -rf "$tmp"
        git -C "$ROOT" worktree prune 2>/dev/null || true
    }
    trap cleanup EXIT
    echo "run.sh: building sluice at $old_name in $tmp/src (CARGO_TARGET_DIR=$OLD_TARGET)" >&2
    git worktree add --detach --quiet "$tmp/src" "$old_sha"
    if [[ ! -d "$OLD_TARGET/release" && -d "$R/deps" ]]; then
        # Seed with this checkout's release dependencies: only the workspace
        # crates of REV then need compiling.
        echo "run.sh: seeding $OLD_TARGET/release from $R" >&2
        mkdir -p "$OLD_TARGET"
        cp -a "$R" "$OLD_TARGET/release"
    fi
    (cd "$tmp/src" && CARGO_TARGET_DIR="$OLD_TARGET" cargo build --release --quiet -p sluice)
    mkdir -p "$OLD_TARGET/compare-bins"
    cp "$OLD_TARGET/release/sluice" "$old_bin.part"
    mv "$old_bin.part" "$old_bin"
    cleanup
    trap - EXIT
fi

exec "$R/sluice-bench" compare \
    --old "$old_name=$old_bin" \
    --new "$new_name=$R/sluice" \
    --fixture "$R/sluice-fixture" \
    --duration 2s --warmup 500ms --repeat 6 \
    "${args[@]}"
