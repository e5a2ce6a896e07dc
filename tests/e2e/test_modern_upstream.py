"""A 2026-07-28-only upstream (Python SDK server) behind Sluice: reached by a
session-era client (input_required bridged into elicitation) and by a 2026
client (input_required passed through)."""

import json
import pathlib
import subprocess
import sys
import tempfile

import anyio
import mcp.types as types
import pytest
from mcp import Client

from conftest import HERE, SLUICE, _read_line_with, _stop

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def modern_gateway():
    upstream = subprocess.Popen(
        [sys.executable, str(HERE / "servers" / "modern_server.py")],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    url, _ = _read_line_with(upstream, upstream.stdout, "listening on ")
    cfg = pathlib.Path(tempfile.mkdtemp(prefix="sluice-modern-")) / "sluice.toml"
    cfg.write_text(f'[[servers]]\nname = "modern"\nurl = "{url}"\n')
    gw = subprocess.Popen(
        [str(SLUICE), "serve", "--config", str(cfg), "--listen", "127.0.0.1:0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    gw_url, _ = _read_line_with(gw, gw.stderr, "sluice listening on ")
    yield gw_url
    _stop(gw)
    _stop(upstream)


async def on_elicit(context, params):
    return types.ElicitResult(action="accept", content={"name": "Alice"})


async def test_a_legacy_client_reaches_a_2026_only_upstream(modern_gateway):
    seen = []

    async def on_progress(progress, total, message):
        seen.append(progress)

    async with Client(modern_gateway, mode="legacy", elicitation_callback=on_elicit) as c:
        names = {t.name for t in (await c.list_tools()).tools}
        assert {"modern__echo", "modern__ask_name"} <= names, names
        r = await c.call_tool("modern__echo", {"text": "from 2025"})
        assert r.content[0].text == "from 2025"
        # The upstream's input_required becomes an elicitation on the legacy session.
        r = await c.call_tool("modern__ask_name", {})
        assert not r.is_error, r
        assert r.content[0].text == "Hello, Alice!"
        r = await c.call_tool("modern__slow", {}, progress_callback=on_progress)
        assert r.content[0].text == "done"
    assert len(seen) == 3, seen


async def test_a_2026_client_gets_the_upstreams_input_required_passed_through(modern_gateway):
    async with Client(modern_gateway, mode="2026-07-28", elicitation_callback=on_elicit) as c:
        r = await c.call_tool("modern__ask_name", {})
        assert not r.is_error, r
        assert r.content[0].text == "Hello, Alice!"
        async with c.listen(tools_list_changed=True) as sub:
            await c.call_tool("modern__change_tools", {})
            with anyio.fail_after(10):
                event = await sub.__anext__()
            assert "ToolsListChanged" in type(event).__name__, event


async def test_param_headers_are_sent_upstream_and_checked_downstream(modern_gateway):
    # A legacy client: the gateway sends Mcp-Param-Region to the 2026 upstream, which requires it.
    async with Client(modern_gateway, mode="legacy") as c:
        r = await c.call_tool("modern__routed", {"region": "eu-west1", "query": "q"})
        assert not r.is_error, r
        assert r.content[0].text == "eu-west1:q"
    # A 2026 client sends it itself; the gateway checks it.
    async with Client(modern_gateway, mode="2026-07-28") as c:
        tools = {t.name: t for t in (await c.list_tools()).tools}
        r = await c.call_tool("modern__routed", {"region": "us-east1", "query": "q"})
        assert r.content[0].text == "us-east1:q"
    import urllib.error
    import urllib.request

    meta = {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
    }
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "modern__routed", "arguments": {"region": "us-east1", "query": "q"}, "_meta": meta}}
    base = {"content-type": "application/json", "accept": "application/json, text/event-stream",
            "mcp-protocol-version": "2026-07-28", "mcp-method": "tools/call", "mcp-name": "modern__routed"}

    def post(headers):
        req = urllib.request.Request(modern_gateway, data=json.dumps(body).encode(), headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    status, answer = await anyio.to_thread.run_sync(post, {**base, "mcp-param-region": "elsewhere"})
    assert status == 400 and answer["error"]["code"] == -32020, answer
    status, answer = await anyio.to_thread.run_sync(post, base)
    assert status == 400 and "missing" in answer["error"]["message"], answer
