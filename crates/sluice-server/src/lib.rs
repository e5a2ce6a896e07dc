//! Downstream: the aggregating gateway core and its front ends.
//!
//! - [`gateway`]: one MCP server made of many (routing, aggregation, relaying).
//! - [`http`]: Streamable HTTP at `/mcp` (2025-11-25 sessions, SSE, resumability).
//! - [`stdio`]: the same gateway over stdin/stdout.
//! - `pipeline`: the one request path (`Pipeline::call`) and its `stages`.
//! - `rescue`: the one mapping of failures to the wire.
//! - `respond`: "JSON if the answer comes first, else SSE", and the one SSE body.
//! - `audit`: what goes to the audit log, and from where.

#![warn(missing_docs)]

mod audit;
mod catalog;
mod defence;
mod error;
pub mod gateway;
pub mod http;
mod isolation;
mod limits;
mod metrics;
mod modern;
mod pipeline;
mod relay;
mod report;
mod rescue;
mod respond;
mod session;
mod sessions;
mod stages;
pub mod stdio;
mod tasks;

pub use gateway::Gateway;
