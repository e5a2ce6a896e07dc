//! Failures of a client request and their one mapping to the wire.

use serde_json::json;
use serde_json::value::RawValue;
use sluice_mcp::RpcError;
use sluice_upstream::{Upstream, UpstreamError};

/// Why a request failed, grouped by who is at fault.
#[derive(Debug)]
pub(crate) enum Fail {
    /// The client's request was wrong (bad params, unknown tool, …).
    Client(RpcError),
    /// An upstream failed to serve it.
    Upstream {
        server: String,
        error: UpstreamError,
    },
}

impl From<RpcError> for Fail {
    fn from(e: RpcError) -> Self {
        Fail::Client(e)
    }
}

impl Fail {
    /// The JSON-RPC error object sent to the client. An upstream's own
    /// JSON-RPC error is forwarded unchanged; faults name the server and cause.
    pub(crate) fn to_error_json(&self) -> String {
        match self {
            Fail::Client(e) => e.to_json(),
            Fail::Upstream {
                error: UpstreamError::Rpc(raw),
                ..
            } => raw.get().to_string(),
            Fail::Upstream { server, error } => {
                RpcError::internal(format!("server `{server}` {error}"))
                    .with_data(json!({"sluice": {"code": error.code(), "server": server}}))
                    .to_json()
            }
        }
    }
}

/// A failed `tools/call` as a tool result the agent can reason about:
/// `isError: true`, text naming the server, the tool and the cause, and a
/// stable code under `_meta`.
pub(crate) fn tool_error_result(up: &Upstream, tool: &str, error: &UpstreamError) -> String {
    let server = up.name();
    let h = up.health();
    let history = if h.recent_failed > 0 {
        format!(
            " It has failed {} of its last {} calls.",
            h.recent_failed, h.recent_total
        )
    } else {
        String::new()
    };
    let advice = match error {
        UpstreamError::Unavailable(_) => "The call did not reach the server; retry later.",
        UpstreamError::Timeout(_) => "The tool may still have run; check before retrying.",
        UpstreamError::Unauthorized(_) => {
            "The gateway's credentials for this server need attention; retrying will not help."
        }
        UpstreamError::Transport(_) => "The tool may have run; check before retrying.",
        UpstreamError::CircuitOpen { .. } => "Call `sluice__health` to see when it recovers.",
        _ => "Do not rely on this tool's output.",
    };
    json!({
        "content": [{
            "type": "text",
            "text": format!("Tool `{tool}` failed: server `{server}` {error}.{history} {advice}")
        }],
        "isError": true,
        "_meta": {"sluice/error": {"code": error.code(), "server": server, "tool": tool}}
    })
    .to_string()
}

/// Wraps gateway-built JSON text as a raw value.
pub(crate) fn raw(text: String) -> Box<RawValue> {
    RawValue::from_string(text).expect("gateway builds valid JSON")
}
