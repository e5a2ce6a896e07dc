//! Protocol knowledge shared by every side of the gateway: the JSON-RPC 2.0
//! envelope, MCP protocol versions, exposed-name mapping, opaque cursors,
//! SSE framing and the 2026 header value encoding. Nothing here does I/O.

#![warn(missing_docs)]

pub mod cursor;
pub mod headers;
pub mod jsonrpc;
pub mod names;
pub mod sse;
pub mod version;

pub use jsonrpc::{Id, Message, RpcError};
