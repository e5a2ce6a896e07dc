"""A legacy HTTP+SSE upstream (2024-11-05 transport, Python SDK server) behind
Sluice: set explicitly with transport = "sse", and detected with "auto"."""

import pathlib
import subprocess
import sys
import tempfile

import pytest
from mcp import Client

from conftest import HERE, SLUICE, _read_line_with, _stop

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def legacy_gateway():
    legacy = subprocess.Popen(
        [sys.executable, str(HERE / "servers" / "legacy_sse_server.py")],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    legacy_url, _ = _read_line_with(legacy, legacy.stdout, "listening on ")
    cfg = pathlib.Path(tempfile.mkdtemp(prefix="sluice-sse-")) / "sluice.toml"
    cfg.write_text(
        f"""
[[servers]]
name = "explicit"
url = "{legacy_url}"
transport = "sse"

[[servers]]
name = "detected"
url = "{legacy_url}"
"""
    )
    gw = subprocess.Popen(
        [str(SLUICE), "serve", "--config", str(cfg), "--listen", "127.0.0.1:0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url, _ = _read_line_with(gw, gw.stderr, "sluice listening on ")
    yield url
    _stop(gw)
    _stop(legacy)


async def test_legacy_sse_server_is_served_set_and_detected(legacy_gateway):
    async with Client(legacy_gateway, mode="legacy") as c:
        names = {t.name for t in (await c.list_tools()).tools}
        assert {"explicit__add", "detected__add"} <= names, names
        for name in ("explicit__add", "detected__add"):
            r = await c.call_tool(name, {"a": 20, "b": 22})
            assert not r.is_error, r
            assert r.content[0].text == "42"
        r = await c.read_resource("legacy://greeting")
        assert "hello from the legacy server" in r.contents[0].text
