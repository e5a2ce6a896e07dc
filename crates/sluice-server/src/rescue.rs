//! The one mapping of a failed request to the wire.
//!
//! Every front end gets a request's outcome from `Pipeline::call` and turns a
//! [`Fail`] into what the client sees here, and nowhere else:
//!
//! - a failed `tools/call` (policy refusal, or an upstream fault other than
//!   the upstream's own JSON-RPC error) is a *result* with `isError: true`,
//!   text naming the server, the tool and the cause, and a stable code under
//!   `_meta["sluice/error"]`, so the agent can reason about it;
//! - anything else is a JSON-RPC error: the client's mistakes with the
//!   spec's codes, an upstream's own JSON-RPC error unchanged, upstream faults
//!   as -32603 naming the server, refusals as [`POLICY_CODE`] (denied),
//!   [`LIMITED_CODE`] or [`UNAVAILABLE_CODE`] with `data.sluice.code`, and
//!   `data.retryAfterSeconds`, `data.limit`, `data.scope` for a limit (a
//!   limit's rule may ask for a tool result instead: `answer = "tool_result"`);
//! - stateless (2026-07-28) responses carry the HTTP status the JSON-RPC
//!   code implies (`modern.rs`: 403, 429 with `Retry-After`, 503; it also
//!   renames codes 2026 retired).

use crate::error::{Fail, raw};
use crate::pipeline::RequestCtx;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use sluice_mcp::RpcError;
use sluice_pipeline::{Refusal, RefusalKind};
use sluice_upstream::{Upstream, UpstreamError};

/// The JSON-RPC error code of a refusal told as an error: denied (in the
/// implementation-defined server-error range; 403 on 2026 requests).
pub(crate) const POLICY_CODE: i64 = -32001;
/// A rate limit or quota refused it (429 with `Retry-After` on 2026 requests).
pub(crate) const LIMITED_CODE: i64 = -32029;
/// A policy dependency did not answer; the gateway failed closed (503).
pub(crate) const UNAVAILABLE_CODE: i64 = -32003;

/// What a failure becomes on the wire.
pub(crate) enum Wire {
    /// A result: a failed `tools/call` the agent reads as a tool error.
    Result(Box<RawValue>),
    /// A JSON-RPC error object, JSON text.
    Error(String),
}

/// Maps a failure of the request in `ctx` to the wire. `servers` finds an
/// upstream by name, for the health history a failed tool call reports.
pub(crate) fn rescue<'a>(
    ctx: &RequestCtx,
    fail: &Fail,
    servers: impl Fn(&str) -> Option<&'a Upstream>,
) -> Wire {
    let tool = (ctx.method == "tools/call")
        .then_some(ctx.tool.as_deref())
        .flatten();
    match (fail, tool) {
        (Fail::Policy(r), Some(tool)) if r.as_tool_result => {
            let server = ctx.route.as_ref().map(|r| &*r.server_name);
            Wire::Result(refusal_result(server, tool, r))
        }
        (Fail::Upstream { server, error }, Some(tool))
            if !matches!(error, UpstreamError::Rpc(_)) =>
        {
            Wire::Result(raw(tool_error_result(server, servers(server), tool, error)))
        }
        (fail, _) => Wire::Error(error_json(fail)),
    }
}

/// The JSON-RPC error object of a failure that is not a tool result.
pub(crate) fn error_json(fail: &Fail) -> String {
    match fail {
        Fail::Client(e) => e.to_json(),
        Fail::Policy(r) => policy_error(r).to_json(),
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

fn policy_error(r: &Refusal) -> RpcError {
    let mut data = json!({"sluice": {"code": r.code}});
    if let Some(s) = r.retry_after_secs() {
        data["sluice"]["retryAfter"] = json!(s);
        data["retryAfterSeconds"] = json!(s);
    }
    if let Some(hit) = &r.limit {
        data["limit"] = json!(hit.name);
        data["scope"] = json!(hit.scope);
    }
    let code = match r.kind {
        RefusalKind::Denied => POLICY_CODE,
        RefusalKind::Limited => LIMITED_CODE,
        RefusalKind::Unavailable => UNAVAILABLE_CODE,
    };
    RpcError::new(code, r.message.clone()).with_data(data)
}

/// The tool result of a call the gateway refused.
fn refusal_result(server: Option<&str>, tool: &str, r: &Refusal) -> Box<RawValue> {
    let mut meta = json!({"code": r.code, "tool": tool});
    if let Some(server) = server {
        meta["server"] = json!(server);
    }
    if let Some(s) = r.retry_after_secs() {
        meta["retryAfter"] = json!(s);
    }
    if let Some(hit) = &r.limit {
        meta["limit"] = json!(hit.name);
        meta["scope"] = json!(hit.scope);
    }
    raw(json!({
        "content": [{"type": "text", "text": r.message}],
        "isError": true,
        "_meta": {"sluice/error": meta}
    })
    .to_string())
}

/// A failed `tools/call` as a tool result the agent can reason about:
/// `isError: true`, text naming the server, the tool and the cause (and the
/// server's recent failures), and a stable code under `_meta`.
fn tool_error_result(
    server: &str,
    up: Option<&Upstream>,
    tool: &str,
    error: &UpstreamError,
) -> String {
    let history = match up.map(Upstream::health) {
        Some(h) if h.recent_failed > 0 => format!(
            " It has failed {} of its last {} calls.",
            h.recent_failed, h.recent_total
        ),
        _ => String::new(),
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

/// The parsed `{code, message}` of a JSON-RPC error object's text.
pub(crate) fn code_and_message(error: &str) -> (i64, String) {
    let e: Value = serde_json::from_str(error).unwrap_or_default();
    (
        e["code"].as_i64().unwrap_or(0),
        e["message"].as_str().unwrap_or_default().to_string(),
    )
}
