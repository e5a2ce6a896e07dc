//! Why an upstream call failed, in words an agent can act on.

use serde_json::value::RawValue;
use std::time::Duration;

/// An upstream call's failure. `Display` completes the sentence "server `x` …".
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The server is not connected (process not running, connection refused).
    /// The request never reached it, so it is safe to retry.
    #[error("is unavailable: {0}")]
    Unavailable(String),
    /// No answer within the deadline; the server was sent `notifications/cancelled`.
    #[error("did not answer within {}", humanize(*.0))]
    Timeout(Duration),
    /// The server rejected the gateway's credentials.
    #[error("rejected the gateway's credentials (HTTP {0}); check the server's configured token")]
    Unauthorized(u16),
    /// The server answered with an unexpected HTTP status.
    #[error("answered HTTP {status}: {body}")]
    Http {
        /// The HTTP status code.
        status: u16,
        /// The start of the response body, or what the gateway made of the status.
        body: String,
    },
    /// The connection broke while the request was in flight; it may have run.
    #[error("lost the connection during the call: {0}")]
    Transport(String),
    /// The server sent something that is not valid MCP.
    #[error("sent an invalid response: {0}")]
    Protocol(String),
    /// The circuit breaker is open: the call was not sent.
    #[error("is failing and is not being called: {reason}; the gateway will try it again in {} s", .retry_in.as_secs().max(1))]
    CircuitOpen {
        /// When the breaker lets the next call through.
        retry_in: Duration,
        /// Why the circuit opened, in words.
        reason: String,
    },
    /// The server answered with a JSON-RPC error; forwarded to the client as it is.
    #[error("returned an error")]
    Rpc(Box<RawValue>),
}

impl UpstreamError {
    /// True when the request certainly did not reach the server (safe to retry).
    pub fn never_sent(&self) -> bool {
        matches!(
            self,
            UpstreamError::Unavailable(_) | UpstreamError::CircuitOpen { .. }
        )
    }

    /// True when this counts against the server's health (the server did not answer properly).
    pub fn is_fault(&self) -> bool {
        !matches!(
            self,
            UpstreamError::Rpc(_) | UpstreamError::CircuitOpen { .. }
        )
    }

    /// A stable code for logs, metrics and `_meta`.
    pub fn code(&self) -> &'static str {
        match self {
            UpstreamError::Unavailable(_) => "upstream_unavailable",
            UpstreamError::Timeout(_) => "upstream_timeout",
            UpstreamError::Unauthorized(_) => "upstream_unauthorized",
            UpstreamError::Http { .. } => "upstream_http_error",
            UpstreamError::Transport(_) => "upstream_connection_lost",
            UpstreamError::Protocol(_) => "upstream_protocol_error",
            UpstreamError::CircuitOpen { .. } => "upstream_circuit_open",
            UpstreamError::Rpc(_) => "upstream_error",
        }
    }
}

fn humanize(d: Duration) -> String {
    if d.as_millis().is_multiple_of(1000) {
        format!("{} s", d.as_secs())
    } else {
        format!("{} ms", d.as_millis())
    }
}
