//! Policy decisions without I/O, on a clock the caller passes in (so tests
//! drive time exactly):
//!
//! - [`Limits`]: rate limits and quotas as GCRA budgets per key; a request
//!   that several limits apply to is checked against all of them before any
//!   budget is consumed.
//! - [`LoopGuard`]: an agent calling the same tool with the same arguments
//!   again and again (or alternating between two such calls) within a window.

#![warn(missing_docs, unreachable_pub)]

mod limits;
mod loops;

pub use limits::{Gcra, Limited, Limits};
pub use loops::{LoopGuard, LoopRule, LoopVerdict};
