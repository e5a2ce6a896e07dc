"""A 2026-07-28-only upstream (Python SDK server) behind Sluice: reached by a
session-era client (input_required bridged into elicitation) and by a 2026
client (input_required passed through)."""

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
