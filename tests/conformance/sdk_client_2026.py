"""Drive a 2026-07-28 server with the official Python SDK client.

    tests/.venv/bin/python tests/conformance/sdk_client_2026.py URL

URL is a Streamable HTTP endpoint serving the sluice-fixture tools (the
fixture itself, `sluice-fixture http`, or Sluice in front of it). Uses
`Client(url, mode="2026-07-28")` (no probe) and `mode="auto"` (probes
server/discover): lists tools, calls `echo`, drives MRTR tools through the
SDK's callbacks (elicitation, sampling, roots, several rounds), reports
progress, opens `listen(tools_list_changed=True)` and triggers a change with
`test_trigger_tool_change`. Prints one line per check; exits 1 on the first
failure.
"""

import sys

import anyio
from mcp import Client
from mcp_types import CreateMessageResult, ElicitResult, ListRootsResult, Root, TextContent


async def on_elicit(ctx, params):
    props = params.requested_schema.get("properties", {})
    content = {}
    for key, schema in props.items():
        content[key] = True if schema.get("type") == "boolean" else {"name": "Alice", "color": "blue"}.get(key, "x")
    return ElicitResult(action="accept", content=content)


async def on_sample(ctx, params):
    return CreateMessageResult(
        role="assistant", content=TextContent(type="text", text="Paris"), model="sdk-test", stop_reason="endTurn"
    )


async def on_roots(ctx):
    return ListRootsResult(roots=[Root(uri="file:///work", name="work")])


def check(label, cond, detail=""):
    print(("ok   " if cond else "FAIL ") + label + (f": {detail}" if detail else ""))
    if not cond:
        sys.exit(1)


def text_of(result):
    return result.content[0].text if result.content else ""


async def main(url):
    callbacks = dict(elicitation_callback=on_elicit, sampling_callback=on_sample, list_roots_callback=on_roots)
    async with Client(url, mode="2026-07-28", **callbacks) as c:
        tools = await c.list_tools()
        names = [t.name for t in tools.tools]
        check("tools/list", "echo" in names and "test_input_required_result_elicitation" in names, f"{len(names)} tools")

        r = await c.call_tool("echo", {"text": "hello 2026"})
        check("tools/call echo", text_of(r) == "hello 2026", text_of(r))

        r = await c.call_tool("test_input_required_result_elicitation", {})
        check("MRTR elicitation (user_name)", text_of(r) == "Hello, Alice!", text_of(r))

        r = await c.call_tool("test_input_required_result_multi_round", {})
        check("MRTR two rounds", text_of(r) == "Alice likes blue", text_of(r))

        r = await c.call_tool("test_input_required_result_multiple_inputs", {})
        check("MRTR three kinds at once", text_of(r) == "name=Alice, greeting=Paris, roots=file:///work", text_of(r))

        r = await c.call_tool("test_input_required_result_request_state", {})
        check("MRTR requestState echoed", text_of(r).startswith("state-ok"), text_of(r))

        r = await c.call_tool("test_sampling", {"prompt": "capital?"})
        check("2025 tool's sampling request as MRTR", text_of(r) == "LLM response: Paris", text_of(r))

        seen = []

        async def progress(p, total, message):
            seen.append(p)

        await c.call_tool("test_tool_with_progress", {}, progress_callback=progress)
        check("progress notifications", seen == [0.0, 50.0, 100.0], str(seen))

        prompt = await c.get_prompt("test_input_required_result_prompt", {})
        check("MRTR on prompts/get", "Use this context" in prompt.messages[0].content.text)

        async with c.listen(tools_list_changed=True) as sub:
            await c.call_tool("test_trigger_tool_change", {})
            with anyio.fail_after(5):
                event = await sub.__anext__()
        check("listen(tools_list_changed) after test_trigger_tool_change", "Tools" in type(event).__name__, repr(event))

    async with Client(url, mode="auto", **callbacks) as c2:
        check("mode=auto probes server/discover", c2.protocol_version == "2026-07-28", str(c2.protocol_version))


if __name__ == "__main__":
    anyio.run(main, sys.argv[1])
