//! Upstream MCP servers: how the gateway reaches them and keeps them up.
//!
//! An [`Upstream`] owns one pooled connection to its server (a supervised
//! stdio child, a Streamable HTTP session, or a legacy HTTP+SSE stream) and
//! reconnects it with backoff when it breaks. Calls never open a new
//! connection or session: they share the live one.
//!
//! Messages the server sends while serving a call (progress, logs,
//! server-to-client requests) are delivered to that call's [`Related`] sink;
//! messages tied to no call arrive as [`UpstreamEvent`]s.

#![warn(missing_docs)]

mod backoff;
mod breaker;
mod conn;
mod duplex;
mod error;
pub mod health;
mod http;
mod modern;
mod stdio;
mod upstream;

pub use error::UpstreamError;
pub use health::{Snapshot, Status};
pub use sluice_pipeline::ServerId;
pub use upstream::{ServerInfo, Upstream};

use serde_json::value::RawValue;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// The client's answer to a server-to-client request: a result or an error object, raw.
pub type Reply = Result<Box<RawValue>, Box<RawValue>>;

/// A message an upstream sends to the client while serving a call.
#[derive(Debug)]
pub enum Related {
    /// A notification about the call (progress, a log message), to relay to the client.
    Notification {
        /// The notification's method, e.g. `notifications/progress`.
        method: String,
        /// Its params, raw (the progress token is still the one sent upstream).
        params: Option<Box<RawValue>>,
    },
    /// A server-to-client request (sampling, elicitation, roots). Answer through `reply`.
    Request {
        /// The request's method, e.g. `sampling/createMessage`.
        method: String,
        /// Its params, raw.
        params: Option<Box<RawValue>>,
        /// Where the client's answer goes; dropping it answers the server with an error.
        reply: oneshot::Sender<Reply>,
    },
}

/// A message from an upstream that belongs to no call.
#[derive(Debug)]
pub enum UpstreamEvent {
    /// A notification tied to no call, e.g. `notifications/tools/list_changed`.
    Notification {
        /// The server that sent it.
        server: ServerId,
        /// The notification's method.
        method: String,
        /// Its params, raw.
        params: Option<Box<RawValue>>,
    },
    /// A server-to-client request tied to no call. Answer through `reply`.
    Request {
        /// The server that sent it.
        server: ServerId,
        /// The request's method, e.g. `roots/list`.
        method: String,
        /// Its params, raw.
        params: Option<Box<RawValue>>,
        /// Where the answer goes; dropping it answers the server with an error.
        reply: oneshot::Sender<Reply>,
    },
    /// The server (re)connected: cached lists are stale.
    Connected {
        /// The server that connected.
        server: ServerId,
    },
    /// The connection broke; calls fail until it is back.
    Disconnected {
        /// The server that disconnected.
        server: ServerId,
        /// Why, for logs and health.
        reason: String,
    },
}

/// Per-call context.
#[derive(Clone)]
pub struct CallCtx {
    /// Where progress, logs and server-to-client requests of this call go.
    pub related: Option<mpsc::UnboundedSender<Related>>,
    /// The progress token sent upstream (JSON text), so progress notifications find this call.
    pub progress_token: Option<String>,
    /// Give up (and tell the server `notifications/cancelled`) after this long.
    pub timeout: Duration,
    /// The capabilities of the client this call is for: a 2026-07-28
    /// upstream gets them in the request's envelope.
    pub client_caps: Option<std::sync::Arc<serde_json::Value>>,
    /// Extra request headers for a 2026 HTTP upstream (`Mcp-Param-*`).
    pub headers: Vec<(String, String)>,
    /// The log level the client asked for; a 2026 upstream sends log
    /// notifications only when the request names one.
    pub log_level: Option<String>,
}

impl CallCtx {
    /// A context with this timeout and nothing else: no sink, token, capabilities or headers.
    pub fn new(timeout: Duration) -> Self {
        CallCtx {
            client_caps: None,
            headers: Vec::new(),
            log_level: None,
            related: None,
            progress_token: None,
            timeout,
        }
    }
}

/// The initialize params the gateway sends upstream. Shared connections
/// declare that the gateway can relay sampling, elicitation and roots; a
/// connection made for one client session declares that client's own
/// capabilities.
pub(crate) fn initialize_params(client_caps: Option<&serde_json::Value>) -> String {
    let caps = match client_caps {
        Some(c) => c.to_string(),
        None => {
            r#"{"roots":{"listChanged":true},"sampling":{},"elicitation":{"form":{},"url":{}}}"#
                .to_string()
        }
    };
    format!(
        r#"{{"protocolVersion":"{}","capabilities":{caps},"clientInfo":{{"name":"sluice","version":"{}"}}}}"#,
        sluice_mcp::version::LATEST,
        env!("CARGO_PKG_VERSION")
    )
}

/// The HTTP client shared by every HTTP upstream (one connection pool).
pub type HttpClient = reqwest::Client;

/// Builds the shared HTTP client (rustls with the ring provider).
pub fn http_client() -> HttpClient {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .pool_idle_timeout(Duration::from_secs(90))
        // Enough idle connections for every call in flight: closing the
        // surplus and reopening it costs more than keeping it.
        .pool_max_idle_per_host(1024)
        .tcp_nodelay(true)
        // MCP endpoints do not redirect; following would only add work per call.
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("the HTTP client builds")
}
