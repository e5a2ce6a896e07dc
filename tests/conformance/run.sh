#!/usr/bin/env bash
# Run the official MCP conformance suites (server scenarios) against a URL.
#
#   tests/conformance/run.sh [URL]
#
# With a URL (e.g. the gateway's http://127.0.0.1:PORT/mcp in front of the
# fixture) it tests that URL. Without one it builds and starts
# `sluice-fixture http --listen 127.0.0.1:0` and tests the fixture itself.
#
# Runs two pinned suite versions, each must report 0 failures:
#   - @modelcontextprotocol/conformance 0.1.16         server --suite all
#   - @modelcontextprotocol/conformance 0.2.0-alpha.12  server --requirements 2025-11-25
# Exit 0 if both pass, 1 if either reports a failure (or cannot run).
#
# Opt-in third run, the stateless revision (CONFORMANCE_2026=1):
#   - @modelcontextprotocol/conformance 0.2.0-alpha.12  server --requirements 2026-07-28
# It must exit 0 (the suite's exit code counts only the scenarios 2026-07-28
# scores) AND print 0 failures in its Total, which also counts the scenarios
# it runs but never scores (the tasks-* extension, pending ones).
# CONFORMANCE_2026_SCORED_ONLY=1 judges by the exit code alone, for an
# upstream without the tasks extension. The script prints that Total and the
# scored summary ("scored: N/M scenarios passed").
#
# Installs the suites and Node 22 from the committed package-lock.json with
# `npm ci` when node_modules is missing or stale (needs npm on PATH).
#
# Environment:
#   CONFORMANCE_SUITE        0.1.16 suite: all (default), active or pending
#   CONFORMANCE_REQUIREMENTS alpha requirements revision (default 2025-11-25)
#   CONFORMANCE_TIMEOUT      seconds allowed for each suite run (default 600)
#   CONFORMANCE_2026         1: also run the 2026-07-28 requirements (above);
#                            only: run just that one
#   CONFORMANCE_2026_SCORED_ONLY 1: judge the 2026 run by the scored scenarios only
#   CONFORMANCE_BASELINE_0_1_16, CONFORMANCE_BASELINE_ALPHA
#                            optional --expected-failures YAML files; when set,
#                            that suite is judged by its exit code
#   SLUICE_FIXTURE_BIN       fixture binary to start when no URL is given
#                            (default: build it with cargo)
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
URL="${1:-}"
SUITE="${CONFORMANCE_SUITE:-all}"
REQUIREMENTS="${CONFORMANCE_REQUIREMENTS:-2025-11-25}"
RUN_TIMEOUT="${CONFORMANCE_TIMEOUT:-600}"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/sluice-conformance.XXXXXX")"
FIXTURE_PID=""

cleanup() {
    if [[ -n "$FIXTURE_PID" ]] && kill -0 "$FIXTURE_PID" 2>/dev/null; then
        kill "$FIXTURE_PID" 2>/dev/null
        for _ in $(seq 1 50); do
            kill -0 "$FIXTURE_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$FIXTURE_PID" 2>/dev/null
        wait "$FIXTURE_PID" 2>/dev/null
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

die() {
    echo "run.sh: $*" >&2
    exit 1
}

# ---- install (idempotent) ----
install_suites() {
    local stamp="$HERE/node_modules/.sluice-lock-sha256"
    local want
    want="$(sha256sum "$HERE/package-lock.json" | cut -d' ' -f1)"
    if [[ -x "$HERE/node_modules/node/bin/node" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
        return 0
    fi
    command -v npm >/dev/null || die "npm is needed to install the conformance suites"
    echo "run.sh: installing conformance suites and Node 22 (npm ci)" >&2
    (cd "$HERE" && timeout 600 npm ci --no-audit --no-fund --loglevel=error >&2) || die "npm ci failed"
    [[ -x "$HERE/node_modules/node/bin/node" ]] || die "node@22 did not install (node_modules/node/bin/node missing)"
    echo "$want" >"$stamp"
}
install_suites

NODE_BIN="$HERE/node_modules/node/bin"
export PATH="$NODE_BIN:$PATH"
"$NODE_BIN/node" --version | grep -q '^v22\.' || die "node_modules/node is not Node 22"
SUITE_0_1_16="$HERE/node_modules/@modelcontextprotocol/conformance/dist/index.js"
SUITE_ALPHA="$HERE/node_modules/conformance-alpha/dist/index.js"
ALPHA_VERSION="$("$NODE_BIN/node" -p "require('$HERE/node_modules/conformance-alpha/package.json').version")"
STABLE_VERSION="$("$NODE_BIN/node" -p "require('$HERE/node_modules/@modelcontextprotocol/conformance/package.json').version")"

# ---- the server under test ----
if [[ -z "$URL" ]]; then
    BIN="${SLUICE_FIXTURE_BIN:-}"
    if [[ -z "$BIN" ]]; then
        (cd "$ROOT" && timeout 1200 cargo build -q -p sluice-testkit --bin sluice-fixture) || die "building sluice-fixture failed"
        BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/sluice-fixture"
    fi
    [[ -x "$BIN" ]] || die "no fixture binary at $BIN"
    "$BIN" http --listen 127.0.0.1:0 >"$WORK/fixture.out" 2>"$WORK/fixture.err" &
    FIXTURE_PID=$!
    for _ in $(seq 1 100); do
        URL="$(sed -n 's/^listening on //p' "$WORK/fixture.out")"
        [[ -n "$URL" ]] && break
        kill -0 "$FIXTURE_PID" 2>/dev/null || break
        sleep 0.1
    done
    [[ -n "$URL" ]] || { cat "$WORK/fixture.err" >&2; die "sluice-fixture did not report its address"; }
    echo "run.sh: started sluice-fixture (pid $FIXTURE_PID) at $URL" >&2
fi

# ---- run ----
PASSED_TOTAL=0
FAILED_TOTAL=0
STATUS=0
SUMMARIES=()

# run_suite LABEL BASELINE ARGS...
run_suite() {
    local label="$1" baseline="$2"
    shift 2
    local log="$WORK/$label.log"
    local args=("$@")
    [[ -n "$baseline" ]] && args+=(--expected-failures "$baseline")
    echo "run.sh: === $label: server --url $URL ${args[*]}" >&2
    # The suite writes nothing outside its cwd's results/ (only with -o).
    (cd "$WORK" && timeout --kill-after=10 "$RUN_TIMEOUT" "$NODE_BIN/node" "${args[@]}") >"$log" 2>&1
    local rc=$?
    sed -n '/=== SUMMARY ===/,$p' "$log" >&2
    local total
    total="$(grep -E '^Total: [0-9]+ passed, [0-9]+ failed' "$log" | tail -1)"
    if [[ -z "$total" ]]; then
        tail -40 "$log" >&2
        [[ $rc -eq 124 || $rc -eq 137 ]] && echo "run.sh: $label timed out after ${RUN_TIMEOUT}s" >&2
        SUMMARIES+=("$label: no summary (exit $rc)")
        STATUS=1
        return
    fi
    local passed failed
    passed="$(sed -E 's/^Total: ([0-9]+) passed.*/\1/' <<<"$total")"
    failed="$(sed -E 's/^Total: [0-9]+ passed, ([0-9]+) failed.*/\1/' <<<"$total")"
    PASSED_TOTAL=$((PASSED_TOTAL + passed))
    FAILED_TOTAL=$((FAILED_TOTAL + failed))
    SUMMARIES+=("$label: $total")
    if [[ $rc -ne 0 ]]; then
        STATUS=1
        # Show what failed.
        grep -E '^\s+- |Error:|✗' "$log" | head -60 >&2
    elif [[ -z "$baseline" && "$failed" -ne 0 ]]; then
        STATUS=1
    fi
}

# run_2026: the alpha at --requirements 2026-07-28, judged by its exit code
# and its Total (see above); not added to the combined Total below.
run_2026() {
    local label="conformance-$ALPHA_VERSION (2026-07-28)"
    local log="$WORK/conformance-2026.log"
    echo "run.sh: === $label: server --url $URL --requirements 2026-07-28" >&2
    (cd "$WORK" && timeout --kill-after=10 "$RUN_TIMEOUT" "$NODE_BIN/node" "$SUITE_ALPHA" \
        server --url "$URL" --requirements 2026-07-28) >"$log" 2>&1
    local rc=$?
    sed -n '/=== SUMMARY ===/,$p' "$log" >&2
    local total
    total="$(grep -E '^Total: [0-9]+ passed, [0-9]+ failed' "$log" | tail -1)"
    if [[ -z "$total" ]]; then
        tail -40 "$log" >&2
        [[ $rc -eq 124 || $rc -eq 137 ]] && echo "run.sh: $label timed out after ${RUN_TIMEOUT}s" >&2
        SUMMARIES+=("$label: no summary (exit $rc)")
        STATUS=1
        return
    fi
    # Scenario lines of the summary, minus the "Not scored" block's names.
    local scored
    scored="$(awk '
        /^=== SUMMARY ===/ { in_summary = 1; next }
        /^Not scored for / { in_summary = 0; not_scored = 1; next }
        in_summary && /^(✓|✗) [^:]+:/ {
            name = $2; sub(/:$/, "", name); result[name] = ($1 == "✓") }
        not_scored && /^  (✓|✗) / { skip[$2] = 1 }
        END {
            n = 0; ok = 0; bad = ""
            for (s in result) if (!(s in skip)) { n++; if (result[s]) ok++; else bad = bad " " s }
            printf "scored: %d/%d scenarios passed%s", ok, n, (bad == "" ? "" : ", failing:" bad)
        }' "$log")"
    SUMMARIES+=("$label: $total; $scored (exit $rc)")
    local failed
    failed="$(sed -E 's/^Total: [0-9]+ passed, ([0-9]+) failed.*/\1/' <<<"$total")"
    # Strict: the unscored scenarios (tasks-*) must pass too, unless asked not to.
    if [[ "${CONFORMANCE_2026_SCORED_ONLY:-}" != "1" && "$failed" != "0" ]]; then
        echo "run.sh: $label: $failed failed checks (unscored scenarios included)" >&2
        rc=1
    fi
    if [[ $rc -ne 0 ]]; then
        STATUS=1
        grep -E '^\s+- |Error:|✗' "$log" | head -60 >&2
    fi
}

if [[ "${CONFORMANCE_2026:-}" != "only" ]]; then
    run_suite "conformance-$STABLE_VERSION" "${CONFORMANCE_BASELINE_0_1_16:-}" \
        "$SUITE_0_1_16" server --url "$URL" --suite "$SUITE"
    run_suite "conformance-$ALPHA_VERSION" "${CONFORMANCE_BASELINE_ALPHA:-}" \
        "$SUITE_ALPHA" server --url "$URL" --requirements "$REQUIREMENTS"
fi
case "${CONFORMANCE_2026:-}" in
    "" | 0) ;;
    1 | only) run_2026 ;;
    *) die "CONFORMANCE_2026 must be 1 or only" ;;
esac

echo
for line in "${SUMMARIES[@]}"; do
    echo "$line"
done
if [[ $STATUS -ne 0 ]]; then
    echo "run.sh: conformance FAILED against $URL" >&2
fi
if [[ "${CONFORMANCE_2026:-}" != "only" ]]; then
    echo "Total: $PASSED_TOTAL passed, $FAILED_TOTAL failed"
fi
exit "$STATUS"
