#!/usr/bin/env bash
# Runs every test of Sluice, installing what the tests need first (and starting
# Redis and PostgreSQL on loopback if they are not running):
#   - Rust: cargo fmt --check, clippy -D warnings, cargo test --workspace
#   - end to end: the Python SDK (mcp 2.x) and the TypeScript SDK through the gateway
#   - the official conformance suites (0.1.16 and the pinned 0.2.0 alpha) through the gateway
# Build output goes to $CARGO_TARGET_DIR (default: ~/.cache/sluice/target, outside the clone).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sluice/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
BIN="$CARGO_TARGET_DIR/debug"
results=()
failed=0

step() { echo; echo "=== $* ==="; }
record() { # name, exit code
    if [[ "$2" == 0 ]]; then results+=("ok    $1"); else results+=("FAIL  $1"); failed=$((failed + 1)); fi
}

# ---- install what the tests need (idempotent) ----
stamp_ok() { [[ -f "$2" && "$(cat "$2")" == "$(sha256sum "$1" | cut -d' ' -f1)" ]]; }
stamp() { sha256sum "$1" | cut -d' ' -f1 >"$2"; }

step "install: npm packages for the end-to-end tests"
if ! stamp_ok tests/e2e/package-lock.json tests/e2e/node_modules/.sluice-stamp; then
    (cd tests/e2e && npm ci --no-audit --no-fund --loglevel=error)
    stamp tests/e2e/package-lock.json tests/e2e/node_modules/.sluice-stamp
fi

step "install: Python venv (tests/.venv)"
if ! stamp_ok tests/requirements.txt tests/.venv/.sluice-stamp; then
    python3 -m venv tests/.venv
    tests/.venv/bin/pip install --quiet --disable-pip-version-check -r tests/requirements.txt
    stamp tests/requirements.txt tests/.venv/.sluice-stamp
fi

step "install: nginx (the reverse proxy of the long-call tests)"
command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || { apt-get update -qq && apt-get install -y -qq nginx-light; }

step "services: Redis on 127.0.0.1:6379 (the Redis session store and its tests)"
if ! (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null; then
    command -v redis-server >/dev/null || { echo "redis-server is not installed (apt-get install redis-server)"; exit 1; }
    mkdir -p /tmp/sluice-redis
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
        --dir /tmp/sluice-redis --logfile /tmp/sluice-redis/redis.log
    for _ in $(seq 1 50); do (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null && break; sleep 0.1; done
fi
echo "Redis is up"

step "services: PostgreSQL on 127.0.0.1:5432 (pins in PostgreSQL and their tests)"
# The pin tests read SLUICE_TEST_POSTGRES_URL; they fail (never skip) without PostgreSQL.
export SLUICE_TEST_POSTGRES_URL="${SLUICE_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}"
pg_up() { pg_isready -q -h 127.0.0.1 -p 5432; }
command -v pg_isready >/dev/null || { echo "pg_isready is not installed (apt-get install postgresql)"; exit 1; }
if ! pg_up; then
    command -v pg_ctlcluster >/dev/null || { echo "PostgreSQL is not installed (apt-get install postgresql)"; exit 1; }
    pg_version="$(ls /etc/postgresql | sort -V | tail -1)"
    [[ -n "$pg_version" ]] || { echo "no PostgreSQL cluster in /etc/postgresql"; exit 1; }
    pg_ctlcluster --skip-systemctl-redirect "$pg_version" main start || true
    for _ in $(seq 1 60); do pg_up && break; sleep 0.5; done
    pg_up || { echo "PostgreSQL $pg_version/main did not accept connections on 127.0.0.1:5432 within 30 s"; exit 1; }
fi
echo "PostgreSQL is up ($SLUICE_TEST_POSTGRES_URL)"

# ---- Rust ----
step "cargo fmt --check"
cargo fmt --all -- --check
record "cargo fmt" $?

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --quiet -- -D warnings
record "cargo clippy" $?

step "cargo build (binaries used by the tests)"
cargo build --workspace --bins --quiet

step "cargo test"
set +e
cargo test --workspace --no-fail-fast 2>&1 | tee "$CARGO_TARGET_DIR/cargo-test.log"
record "cargo test" "${PIPESTATUS[0]}"

# ---- end to end with real clients ----
export SLUICE_BIN="$BIN/sluice" SLUICE_FIXTURE_BIN="$BIN/sluice-fixture"
step "Python SDK through the gateway (pytest)"
(cd tests/e2e && timeout 600 ../.venv/bin/python -m pytest -q -p no:cacheprovider .)
record "python e2e" $?

step "TypeScript SDK through the gateway (node --test)"
(cd tests/e2e && timeout 600 node --test ts_client.test.mjs ts_auth.test.mjs)
record "typescript e2e" $?

# ---- conformance through the gateway ----
CONF_DIR="$(mktemp -d "${TMPDIR:-/tmp}/sluice-conf.XXXXXX")"

# conformance NAME ERA [RUN_ENV]: the gateway fronting the fixture (unprefixed,
# over stdio, in era ERA), graded by tests/conformance/run.sh.
conformance() {
    local name="$1" era="$2" run_env="${3:-}" tag
    tag="$(echo "$name" | tr -c 'a-z0-9' '-')"
    cat >"$CONF_DIR/$tag.toml" <<TOML
[sessions]
store = "memory"
[[servers]]
name = "fixture"
prefix = ""
command = "$BIN/sluice-fixture"
args = ["--era", "$era"]
TOML
    "$BIN/sluice" serve --config "$CONF_DIR/$tag.toml" --listen 127.0.0.1:0 2>"$CONF_DIR/$tag.log" &
    local pid=$! url=""
    for _ in $(seq 1 300); do
        url="$(sed -n 's/^sluice listening on //p' "$CONF_DIR/$tag.log" | head -1)"
        [[ -n "$url" ]] && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if [[ -n "$url" ]]; then
        env $run_env bash tests/conformance/run.sh "$url"
        record "$name" $?
    else
        echo "gateway did not start:"; cat "$CONF_DIR/$tag.log"
        record "$name" 1
    fi
    kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
}

step "conformance 2025-11-25 through the gateway (a 2025 fixture upstream)"
conformance "conformance 2025 (through the gateway)" legacy
step "conformance 2025-11-25 clients through the gateway to a 2026-only upstream (era bridging)"
conformance "conformance 2025 clients to a 2026 upstream (through the gateway)" modern
step "conformance 2026-07-28 through the gateway (a 2026-only upstream; 0 failures, tasks extension included)"
conformance "conformance 2026-07-28 (through the gateway)" modern CONFORMANCE_2026=only
rm -rf "$CONF_DIR"
set -e

echo
echo "=== summary ==="
printf '%s\n' "${results[@]}"
echo "suites: $(( ${#results[@]} - failed )) passed, $failed failed"
[[ $failed == 0 ]]
