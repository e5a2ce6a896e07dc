//! Downstream: the aggregating gateway core and its front ends.
//!
//! - [`gateway`]: one MCP server made of many (routing, aggregation, relaying).
//! - [`http`]: Streamable HTTP at `/mcp` (2025-11-25 sessions, SSE, resumability).
//! - [`stdio`]: the same gateway over stdin/stdout.
//! - `audit`: what goes to the audit log, and from where.

mod audit;
mod defence;
mod error;
pub mod gateway;
pub mod http;
mod isolation;
mod limits;
mod metrics;
mod modern;
mod relay;
mod report;
mod respond;
pub mod session;
mod sessions;
pub mod stdio;
mod tasks;

pub use gateway::Gateway;
pub use sessions::CreateError;
