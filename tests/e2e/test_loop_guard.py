"""A real SDK client (Python mcp 2.x) that loops: the gateway's loop guard
reports the loop, then refuses it, with texts an agent can act on; and a
rate limit refuses with when to come back."""

import pathlib
import subprocess
import tempfile

import pytest
from mcp import Client

from conftest import FIXTURE, SLUICE, _read_line_with, _stop

pytestmark = pytest.mark.anyio


def _gateway(extra):
    tmp = tempfile.mkdtemp(prefix="sluice-e2e-loop-")
    cfg = pathlib.Path(tmp) / "sluice.toml"
    cfg.write_text(
        f"""
[sessions]
store = "memory"
{extra}
[[servers]]
name = "fx"
command = "{FIXTURE}"
"""
    )
    gw = subprocess.Popen(
        [str(SLUICE), "serve", "--config", str(cfg), "--listen", "127.0.0.1:0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url, log = _read_line_with(gw, gw.stderr, "sluice listening on ")
    return gw, url, log


@pytest.fixture
def guarded_url():
    gw, url, log = _gateway('[loop_guard]\nenabled = true\nrepeats = 3\nwindow = "10m"\n')
    yield url, log
    _stop(gw)


@pytest.fixture
def limited_url():
    gw, url, _ = _gateway(
        '[[limits]]\nname = "echoes"\nper = ["principal", "tool"]\nrate = "2/hour"\nanswer = "tool_result"\n'
    )
    yield url
    _stop(gw)


async def test_a_loop_is_reported_then_refused(guarded_url):
    url, log = guarded_url
    async with Client(url, mode="legacy") as c:
        results = [await c.call_tool("fx__echo", {"text": "again"}) for _ in range(5)]
    assert [r.is_error for r in results] == [False, False, False, True, True]
    warned, refused = results[3].content[0].text, results[4].content[0].text
    assert "appears to be looping" in warned, warned
    assert "refuses more of the same" in refused and "retry after" in refused, refused
    assert any('decision="noticed"' in line for line in log), "\n".join(log)


async def test_a_rate_limit_says_when_to_come_back(limited_url):
    async with Client(limited_url, mode="2026-07-28") as c:
        ok = [await c.call_tool("fx__echo", {"text": str(i)}) for i in range(2)]
        assert not any(r.is_error for r in ok)
        r = await c.call_tool("fx__echo", {"text": "one too many"})
    assert r.is_error
    text = r.content[0].text
    assert "rate limit `echoes`" in text and "Retry after" in text, text
