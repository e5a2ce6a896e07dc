"""The official Python SDK in its stateless 2026-07-28 mode through Sluice,
whose upstreams speak 2025-11-25 (server-everything over stdio, the fixture
over HTTP)."""

import anyio
import pytest
from mcp import Client

pytestmark = pytest.mark.anyio


async def test_a_2026_client_uses_session_era_upstreams(gateway_url):
    async with Client(gateway_url, mode="2026-07-28") as c:
        tools = await c.list_tools()
        names = {t.name for t in tools.tools}
        assert {"everything__echo", "remote__echo", "sluice__health"} <= names
        assert tools.ttl_ms == 0

        r = await c.call_tool("everything__echo", {"message": "stateless"})
        assert r.content[0].text == "Echo: stateless"
        r = await c.call_tool("remote__echo", {"text": "stateless over http"})
        assert r.content[0].text == "stateless over http"

        r = await c.read_resource("test://static-text")
        assert r.contents[0].text

        p = await c.get_prompt("everything__simple-prompt")
        assert p.messages

        seen = []

        async def on_progress(progress, total, message):
            seen.append(progress)

        r = await c.call_tool(
            "everything__trigger-long-running-operation",
            {"duration": 1, "steps": 3},
            progress_callback=on_progress,
        )
        assert not r.is_error
        assert len(seen) == 3, seen


async def test_auto_mode_discovers_the_2026_revision(gateway_url):
    async with Client(gateway_url, mode="auto") as c:
        assert c.protocol_version == "2026-07-28"
        r = await c.call_tool("remote__echo", {"text": "auto"})
        assert r.content[0].text == "auto"


async def test_a_subscription_receives_list_changed(gateway_url):
    async with Client(gateway_url, mode="2026-07-28") as c:
        async with c.listen(tools_list_changed=True) as sub:
            # The fixture speaks 2026 too: the gateway hears it on its own listen stream.
            await c.call_tool("remote__test_trigger_tool_change", {})
            with anyio.fail_after(10):
                event = await sub.__anext__()
            assert "ToolsListChanged" in type(event).__name__, event


async def test_an_upstream_elicitation_becomes_an_input_required_round_trip(gateway_url):
    import mcp.types as types

    asked = []

    async def on_elicit(context, params):
        asked.append(params.message)
        return types.ElicitResult(action="accept", content={"username": "alice", "email": "a@example.com"})

    async def on_sampling(context, params):
        return types.CreateMessageResult(
            role="assistant",
            content=types.TextContent(type="text", text="sampled for a 2026 client"),
            model="m",
            stop_reason="endTurn",
        )

    async with Client(
        gateway_url, mode="2026-07-28", elicitation_callback=on_elicit, sampling_callback=on_sampling
    ) as c:
        # A session-era upstream over HTTP asks the client mid-call.
        r = await c.call_tool("remote__test_elicitation", {"message": "Who are you?"})
        assert not r.is_error, r
        assert asked, "the elicitation reached the 2026 client"
        assert "alice" in str(r.content), r
        # And over stdio, with sampling.
        r = await c.call_tool("everything__trigger-sampling-request", {"prompt": "hi", "maxTokens": 10})
        assert not r.is_error, r
        assert "sampled for a 2026 client" in str(r.content), r
