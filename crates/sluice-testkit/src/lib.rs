//! sluice-testkit: test support for Sluice.
//!
//! The main item is [`fixture`]: a hand-written MCP server that provides
//! every fixture the official `@modelcontextprotocol/conformance` server
//! scenarios call, plus a few tools for the gateway's own tests and
//! benchmarks. It speaks both protocol eras on the same transports: the
//! session-based 2025-11-25 (also accepting 2025-06-18 and 2025-03-26) and
//! the stateless 2026-07-28, chosen per request (`--era legacy|modern|dual`).
//! It is built on raw `serde_json` so it can emit fields a typed SDK would
//! drop.
//!
//! The `sluice-fixture` binary wraps it: `sluice-fixture [stdio]` speaks
//! newline-delimited JSON-RPC on stdin/stdout, `sluice-fixture http --listen
//! 127.0.0.1:0` serves Streamable HTTP at `/mcp`.

pub mod fixture;
