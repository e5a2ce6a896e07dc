#!/usr/bin/env bash
# IBM ContextForge (mcp-contextforge-gateway) in front of the bench fixture,
# for the side-by-side row of `sluice-bench all`.
#
#   bench/contextforge.sh install            # venv under bench/.venv-contextforge
#   bench/contextforge.sh start UPSTREAM_URL # start it, register UPSTREAM_URL, print
#                                            # name=/url=/header=/tool=/pgid=/concurrency= then ready
#
# `start` leaves the gateway running in its own process group (pgid=); the
# harness stops it with SIGTERM/SIGKILL to that group. Normally it is run by
#   sluice-bench all --external bench/contextforge.sh
# (bench/run.sh does this when the venv exists or CONTEXTFORGE=1).
#
# Settings (environment):
#   CONTEXTFORGE_VERSION      default 1.1.0
#   CONTEXTFORGE_PYTHON       default python3.11 (1.1.0 declares >= 3.12; installed with --ignore-requires-python)
#   CONTEXTFORGE_WORKERS      uvicorn workers, default: number of cores
#   CONTEXTFORGE_CONCURRENCY  concurrency levels to run it at, default 1,16,64
#   CONTEXTFORGE_DURATION     measured time per run, default 15s (its calls take
#                             seconds each at c=64; a short window would hold few)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$HERE/.venv-contextforge"
VERSION="${CONTEXTFORGE_VERSION:-1.1.0}"
PY="${CONTEXTFORGE_PYTHON:-python3.11}"

log() { echo "contextforge.sh: $*" >&2; }

install() {
    local have=""
    if [[ -x "$VENV/bin/mcpgateway" ]]; then
        have="$("$VENV/bin/pip" show mcp-contextforge-gateway 2>/dev/null || true)"
    fi
    if [[ "$have" == *$'\nVersion: '"$VERSION"$'\n'* ]]; then
        return
    fi
    log "installing mcp-contextforge-gateway==$VERSION into $VENV (a few minutes)"
    "$PY" -m venv "$VENV"
    "$VENV/bin/pip" install -q --upgrade pip >&2
    "$VENV/bin/pip" install -q --ignore-requires-python "mcp-contextforge-gateway==$VERSION" >&2
}

# curl-free HTTP helper: METHOD URL [JSON_BODY]; prints the body, fails on >= 400.
api() {
    "$VENV/bin/python" - "$@" <<'PY'
import sys, os, urllib.request
method, url = sys.argv[1], sys.argv[2]
data = sys.argv[3].encode() if len(sys.argv) > 3 else None
req = urllib.request.Request(url, data=data, method=method)
req.add_header("Authorization", "Bearer " + os.environ["CF_TOKEN"])
req.add_header("Content-Type", "application/json")
req.add_header("Accept", "application/json")
try:
    with urllib.request.urlopen(req, timeout=120) as r:
        sys.stdout.write(r.read().decode())
except urllib.error.HTTPError as e:
    sys.stderr.write(f"{method} {url}: HTTP {e.code}: {e.read().decode()[:2000]}\n")
    sys.exit(1)
PY
}

start() {
    local upstream="$1"
    install
    local work="${SLUICE_BENCH_WORK_DIR:-$(mktemp -d)}/contextforge"
    rm -rf "$work" && mkdir -p "$work"
    local port
    port="$("$VENV/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
    local secret
    secret="$("$VENV/bin/python" -c 'import secrets; print(secrets.token_urlsafe(48))')"
    local cores
    cores="$(nproc)"

    export HOST=127.0.0.1 PORT="$port"
    export DATABASE_URL="sqlite:///$work/mcp.db"
    export JWT_SECRET_KEY="$secret" AUTH_ENCRYPTION_SECRET="$secret-enc"
    export PLATFORM_ADMIN_EMAIL=admin@example.com PLATFORM_ADMIN_PASSWORD="Bench-$secret"
    export BASIC_AUTH_PASSWORD="Bench-$secret" DEFAULT_USER_PASSWORD="Bench-$secret"
    export AUTH_REQUIRED=true MCP_CLIENT_AUTH_ENABLED=true
    export SSRF_ALLOW_LOCALHOST=true
    # No rate limiting during the run.
    export RATE_LIMITING_ENABLED=false TOOL_RATE_LIMIT=1000 RATE_LIMIT_MEDIUM_RPM=10000000 RATE_LIMIT_MEDIUM_BURST=1000000
    export MCPGATEWAY_UI_ENABLED=false MCPGATEWAY_ADMIN_API_ENABLED=true
    export CACHE_TYPE=database LOG_LEVEL=ERROR
    export DEV_MODE=false ENVIRONMENT=development

    log "starting on 127.0.0.1:$port (workers: ${CONTEXTFORGE_WORKERS:-$cores}); logs in $work"
    (cd "$work" && exec setsid "$VENV/bin/mcpgateway" --host 127.0.0.1 --port "$port" \
        --workers "${CONTEXTFORGE_WORKERS:-$cores}" --log-level warning >"$work/gateway.log" 2>&1) &
    local pid=$!
    # setsid makes it a session (and process group) leader: pgid == pid.
    local base="http://127.0.0.1:$port"
    local up=0
    for _ in $(seq 1 120); do
        if ! kill -0 "$pid" 2>/dev/null; then
            log "it exited; last log lines:"; tail -30 "$work/gateway.log" >&2; exit 1
        fi
        if "$VENV/bin/python" -c "import urllib.request,sys; urllib.request.urlopen('$base/health', timeout=2)" 2>/dev/null; then
            up=1; break
        fi
        if grep -q "Traceback\|SecurityConfigurationError" "$work/gateway.log"; then
            break
        fi
        sleep 1
    done
    if [[ $up != 1 ]]; then
        log "not healthy after 120 s"; tail -30 "$work/gateway.log" >&2; kill -- "-$pid" 2>/dev/null || true; exit 1
    fi

    CF_TOKEN="$(cd "$work" && "$VENV/bin/python" -m mcpgateway.utils.create_jwt_token \
        --username admin@example.com --exp 120 --secret "$secret" 2>/dev/null | tail -1)"
    export CF_TOKEN

    # Register the fixture as a gateway (Streamable HTTP), then a virtual
    # server exposing its `noop` tool; clients talk to /servers/ID/mcp.
    api POST "$base/gateways" "{\"name\":\"fx\",\"url\":\"$upstream\",\"transport\":\"STREAMABLEHTTP\"}" >"$work/gateway.json" || {
        kill -- "-$pid" 2>/dev/null || true; exit 1; }
    api GET "$base/tools?limit=0" >"$work/tools.json"
    local tool_id tool_name
    read -r tool_id tool_name < <("$VENV/bin/python" - "$work/tools.json" <<'PY'
import json, sys
data = json.load(open(sys.argv[1]))
tools = data if isinstance(data, list) else data.get("tools") or data.get("items") or []
for t in tools:
    if t.get("originalName", t.get("original_name")) == "noop" or t.get("name", "").endswith("noop"):
        print(t["id"], t["name"])
        break
PY
)
    if [[ -z "${tool_id:-}" ]]; then
        log "the fixture's noop tool was not registered; tools: $(head -c 2000 "$work/tools.json")"
        kill -- "-$pid" 2>/dev/null || true; exit 1
    fi
    api POST "$base/servers" "{\"server\":{\"name\":\"bench\",\"associated_tools\":[\"$tool_id\"]}}" >"$work/server.json" 2>"$work/server.err" \
        || api POST "$base/servers" "{\"name\":\"bench\",\"associated_tools\":[\"$tool_id\"]}" >"$work/server.json" || {
            cat "$work/server.err" >&2; kill -- "-$pid" 2>/dev/null || true; exit 1; }
    local server_id
    server_id="$("$VENV/bin/python" -c "import json,sys; print(json.load(open(sys.argv[1]))['id'])" "$work/server.json")"

    echo "name=contextforge $VERSION"
    echo "url=$base/servers/$server_id/mcp"
    echo "header=Authorization: Bearer $CF_TOKEN"
    echo "tool=$tool_name"
    echo "pgid=$pid"
    echo "concurrency=${CONTEXTFORGE_CONCURRENCY:-1,16,64}"
    echo "duration=${CONTEXTFORGE_DURATION:-15s}"
    echo "ready"
}

case "${1:-}" in
    install) install ;;
    start) [[ $# -eq 2 ]] || { echo "usage: $0 start UPSTREAM_URL" >&2; exit 2; }; start "$2" ;;
    *) echo "usage: $0 install | start UPSTREAM_URL" >&2; exit 2 ;;
esac
