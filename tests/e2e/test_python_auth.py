"""The official Python SDK with an API key (`Authorization: Bearer slk_…`)
through a gateway with `auth.mode = "required"`, in both eras; without the
key the SDK is refused."""

import json
import pathlib
import subprocess
import tempfile

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from conftest import FIXTURE, SLUICE, _read_line_with, _stop

pytestmark = pytest.mark.anyio

PEPPER = "an-e2e-pepper-of-at-least-thirty-two-bytes"


@pytest.fixture(scope="module")
def authed_gateway():
    """(url, key): a gateway over the stdio fixture that requires API keys,
    and a key made with `sluice keys create`."""
    for p in (SLUICE, FIXTURE):
        assert p.exists(), f"{p} missing: run scripts/test.sh (it builds what tests need)"
    tmp = tempfile.mkdtemp(prefix="sluice-e2e-auth-")
    cfg = pathlib.Path(tmp) / "sluice.toml"
    cfg.write_text(
        f"""
[sessions]
store = "memory"

[auth]
mode = "required"
required_scopes = ["mcp"]

[auth.api_keys]
pepper = "{PEPPER}"

[[servers]]
name = "fx"
command = "{FIXTURE}"
"""
    )
    made = subprocess.run(
        [str(SLUICE), "keys", "create", "--name", "python-e2e", "--scopes", "mcp",
         "--format", "json", "--config", str(cfg)],
        capture_output=True, text=True, check=True,
    )
    key = json.loads(made.stdout.strip().splitlines()[-1])["key"]
    assert key.startswith("slk_")
    gw = subprocess.Popen(
        [str(SLUICE), "serve", "--config", str(cfg), "--listen", "127.0.0.1:0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url, _ = _read_line_with(gw, gw.stderr, "sluice listening on ")
    yield url, key
    _stop(gw)


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
async def test_the_sdk_calls_tools_with_an_api_key(authed_gateway, mode):
    url, key = authed_gateway
    async with create_mcp_http_client(headers={"Authorization": f"Bearer {key}"}) as http:
        async with Client(streamable_http_client(url, http_client=http), mode=mode) as c:
            names = {t.name for t in (await c.list_tools()).tools}
            assert "fx__echo" in names
            r = await c.call_tool("fx__echo", {"text": f"with a key ({mode})"})
            assert r.content[0].text == f"with a key ({mode})"


async def test_without_the_key_the_sdk_is_refused_with_a_challenge(authed_gateway):
    url, _ = authed_gateway
    with pytest.raises(Exception):
        async with Client(url, mode="legacy") as c:
            await c.list_tools()
    # What the SDK saw: 401 and where to find the resource's metadata.
    async with httpx2.AsyncClient() as http:
        r = await http.post(
            url,
            headers={"content-type": "application/json", "accept": "application/json, text/event-stream"},
            content=json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}),
        )
        assert r.status_code == 401
        assert 'resource_metadata="' in r.headers["www-authenticate"]
        meta = (await http.get(url.replace("/mcp", "/.well-known/oauth-protected-resource/mcp"))).json()
        assert meta["resource"] == url
