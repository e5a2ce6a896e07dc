//! Protocol knowledge shared by every side of the gateway: the JSON-RPC 2.0
//! envelope, MCP protocol versions, exposed-name mapping, opaque cursors and
//! SSE framing. Nothing here does I/O.

pub mod cursor;
pub mod jsonrpc;
pub mod names;
pub mod sse;
pub mod version;

pub use jsonrpc::{Id, Message, RpcError};
