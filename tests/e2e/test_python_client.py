"""The official Python SDK (mcp 2.x, legacy 2025-11-25 mode) through Sluice."""

import mcp.types as types
import pytest
from mcp import Client

pytestmark = pytest.mark.anyio


async def test_lists_and_calls_tools_of_both_servers(gateway_url):
    async with Client(gateway_url, mode="legacy") as c:
        assert c.server_info.name == "sluice"
        tools = (await c.list_tools()).tools
        names = {t.name for t in tools}
        assert "everything__echo" in names
        assert "remote__echo" in names
        assert all(len(n) <= 64 for n in names)

        r = await c.call_tool("everything__echo", {"message": "hello"})
        assert not r.is_error
        assert r.content[0].text == "Echo: hello"

        r = await c.call_tool("remote__echo", {"text": "over http"})
        assert r.content[0].text == "over http"

        r = await c.call_tool("everything__get-sum", {"a": 2, "b": 40})
        assert "42" in r.content[0].text


async def test_reads_a_resource_and_gets_a_prompt(gateway_url):
    async with Client(gateway_url, mode="legacy") as c:
        resources = (await c.list_resources()).resources
        uris = [str(r.uri) for r in resources]
        assert "test://static-text" in uris  # from the HTTP server
        everything = [u for u in uris if not u.startswith("test://")]
        assert everything, uris
        r = await c.read_resource(everything[0])
        assert r.contents

        prompts = {p.name for p in (await c.list_prompts()).prompts}
        assert "everything__simple-prompt" in prompts, prompts
        p = await c.get_prompt("everything__simple-prompt")
        assert p.messages

        p = await c.get_prompt("remote__test_prompt_with_arguments", {"arg1": "a", "arg2": "b"})
        assert p.messages


async def test_receives_progress(gateway_url):
    seen = []

    async def on_progress(progress, total, message):
        seen.append((progress, total))

    async with Client(gateway_url, mode="legacy") as c:
        r = await c.call_tool(
            "everything__trigger-long-running-operation",
            {"duration": 1, "steps": 3},
            progress_callback=on_progress,
        )
        assert not r.is_error
    assert len(seen) == 3, seen
    assert seen[-1][0] == 3


async def test_sampling_request_is_relayed_to_the_client(gateway_url):
    async def sampling(context, params):
        return types.CreateMessageResult(
            role="assistant",
            content=types.TextContent(type="text", text="sampled by the client"),
            model="test-model",
            stop_reason="endTurn",
        )

    async with Client(gateway_url, mode="legacy", sampling_callback=sampling) as c:
        r = await c.call_tool("everything__trigger-sampling-request", {"prompt": "hi", "maxTokens": 10})
        assert not r.is_error, r
        assert "sampled by the client" in str(r.content)


async def test_unknown_tool_is_a_clear_error(gateway_url):
    async with Client(gateway_url, mode="legacy") as c:
        with pytest.raises(Exception) as e:
            await c.call_tool("nowhere__tool", {})
        assert "nowhere__tool" in str(e.value)
