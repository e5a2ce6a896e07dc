"""A legacy HTTP+SSE (2024-11-05 transport) MCP server built with the official
Python SDK, for testing Sluice's legacy upstream support. Binds 127.0.0.1 on a
free port and prints `listening on http://127.0.0.1:PORT/sse`."""

import socket
import sys

import uvicorn
from mcp.server.mcpserver import MCPServer

server = MCPServer("legacy-sse")


@server.tool()
def add(a: int, b: int) -> str:
    """Adds two integers."""
    return str(a + b)


@server.resource("legacy://greeting")
def greeting() -> str:
    return "hello from the legacy server"


def main() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    app = server.sse_app()
    print(f"listening on http://127.0.0.1:{port}/sse", flush=True)
    config = uvicorn.Config(app, log_level="warning")
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    sys.exit(main())
