//! Why a request failed, grouped by who is at fault. The one mapping of a
//! failure to the wire is [`crate::rescue`].

use serde_json::value::RawValue;
use sluice_mcp::RpcError;
use sluice_pipeline::Refusal;
use sluice_upstream::UpstreamError;

/// Why a request failed, grouped by who is at fault.
#[derive(Debug)]
pub(crate) enum Fail {
    /// The client's request was wrong (bad params, unknown tool, …).
    Client(RpcError),
    /// The gateway's policy refused it (held tool, approval refused; later
    /// access rules and limits).
    Policy(Refusal),
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

impl From<Refusal> for Fail {
    fn from(r: Refusal) -> Self {
        Fail::Policy(r)
    }
}

impl Fail {
    /// A stable label for metrics and logs: `client`, `policy` or `upstream`.
    pub(crate) fn fault(&self) -> &'static str {
        match self {
            Fail::Client(_) => "client",
            Fail::Policy(_) => "policy",
            Fail::Upstream { .. } => "upstream",
        }
    }
}

/// Wraps gateway-built JSON text as a raw value.
pub(crate) fn raw(text: String) -> Box<RawValue> {
    RawValue::from_string(text).expect("gateway builds valid JSON")
}
