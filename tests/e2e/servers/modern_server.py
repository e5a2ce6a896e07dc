"""A 2026-07-28-only MCP server built with the official Python SDK (its
dual-era app behind a gate that refuses the session era), for testing
Sluice's 2026 upstream support. Binds 127.0.0.1 on a free port and prints
`listening on http://127.0.0.1:PORT/mcp`."""

import json
import socket
import sys

from typing import Annotated

import anyio
import uvicorn
from pydantic import Field
from mcp.server.caching import CacheHint
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.request_state import RequestStateSecurity
from mcp_types import CallToolResult, ElicitRequest, ElicitRequestFormParams, InputRequiredResult, TextContent

mcp = MCPServer(
    "modern-only",
    version="0.1.0",
    request_state_security=RequestStateSecurity(keys=[b"k" * 32]),
    cache_hints={"tools/list": CacheHint(ttl_ms=60_000, scope="public")},
)


@mcp.tool()
def echo(text: str) -> str:
    """Echoes the text."""
    return text


@mcp.tool()
def routed(region: Annotated[str, Field(json_schema_extra={"x-mcp-header": "Region"})], query: str) -> str:
    """Answers from a region; the region travels in the Mcp-Param-Region header."""
    return f"{region}:{query}"


@mcp.tool()
async def ask_name(ctx: Context) -> CallToolResult | InputRequiredResult:
    """Asks the user's name (multi-round-trip)."""
    answers = ctx.input_responses or {}
    if "user_name" not in answers:
        return InputRequiredResult(
            request_state="round-1",
            input_requests={
                "user_name": ElicitRequest(
                    params=ElicitRequestFormParams(
                        message="What is your name?",
                        requested_schema={
                            "type": "object",
                            "properties": {"name": {"type": "string"}},
                            "required": ["name"],
                        },
                    )
                )
            },
        )
    return CallToolResult(content=[TextContent(type="text", text=f"Hello, {answers['user_name'].content['name']}!")])


@mcp.tool()
async def change_tools(ctx: Context) -> str:
    """Announces a tools/list change to listeners."""
    await ctx.notify_tools_changed()
    return "published"


@mcp.tool()
async def slow(ctx: Context) -> str:
    """Reports progress three times."""
    for i in range(3):
        await ctx.report_progress(i * 50, 100)
        await anyio.sleep(0.05)
    return "done"


inner = mcp.streamable_http_app()
MODERN = ["2026-07-28"]
HANDSHAKE = {"2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"}


async def app(scope, receive, send):
    """Refuses everything that would reach the SDK's session-era path."""
    if scope["type"] == "http" and scope["path"] == "/mcp":
        hdrs = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        if scope["method"] in ("GET", "DELETE"):
            await send({"type": "http.response.start", "status": 405, "headers": [(b"allow", b"POST")]})
            return await send({"type": "http.response.body", "body": b""})
        pv = hdrs.get("mcp-protocol-version")
        if scope["method"] == "POST" and (pv is None or pv in HANDSHAKE):
            body = b""
            while True:
                m = await receive()
                body += m.get("body", b"")
                if not m.get("more_body"):
                    break
            try:
                rid = json.loads(body).get("id")
            except Exception:
                rid = None
            err = {
                "jsonrpc": "2.0",
                "id": rid,
                "error": {
                    "code": -32022,
                    "message": "Unsupported protocol version",
                    "data": {"supported": MODERN, "requested": pv or ""},
                },
            }
            await send(
                {"type": "http.response.start", "status": 400, "headers": [(b"content-type", b"application/json")]}
            )
            return await send({"type": "http.response.body", "body": json.dumps(err).encode()})
    await inner(scope, receive, send)


def main() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    print(f"listening on http://127.0.0.1:{sock.getsockname()[1]}/mcp", flush=True)
    uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on")).run(sockets=[sock])


if __name__ == "__main__":
    sys.exit(main())
