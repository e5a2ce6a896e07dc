//! Server health as JSON: for `sluice__health`, `/admin/servers` and `/readyz`.

use serde_json::{Value, json};
use sluice_config::Transport;
use sluice_upstream::Upstream;
use std::time::SystemTime;

fn time(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// One server's state.
pub(crate) fn server(u: &Upstream) -> Value {
    let h = u.health();
    let transport = match &u.config.transport {
        Transport::Stdio { .. } => "stdio",
        Transport::Http { .. } => "http",
    };
    json!({
        "name": u.name(),
        "status": h.status.as_str(),
        "since": time(h.since),
        "connected": h.connected,
        "required": u.config.required,
        "transport": transport,
        "lastError": h.last_error.as_ref().map(|(_, e)| e.clone()),
        "lastErrorAt": h.last_error.as_ref().map(|(t, _)| time(*t)),
        "lastOkAt": h.last_ok.map(time),
        "recentCalls": h.recent_total,
        "recentFailures": h.recent_failed,
        "circuitBreaker": h.breaker,
        "retryInSeconds": h.retry_in.map(|d| d.as_secs_f64().ceil() as u64),
        "calls": h.calls,
        "failures": h.failures,
        "restarts": h.restarts,
    })
}

/// A sentence an agent can act on.
pub(crate) fn sentence(u: &Upstream) -> String {
    let h = u.health();
    let mut s = format!("`{}` is {}", u.name(), h.status.as_str());
    if h.recent_total > 0 && h.recent_failed > 0 {
        s.push_str(&format!(
            "; it failed {} of its last {} calls",
            h.recent_failed, h.recent_total
        ));
    }
    if let Some((t, e)) = &h.last_error
        && h.status != sluice_upstream::Status::Healthy
    {
        s.push_str(&format!("; last error at {}: {e}", time(*t)));
    }
    if let Some(d) = h.retry_in {
        s.push_str(&format!("; calls resume in {} s", d.as_secs().max(1)));
    }
    s
}

/// The `sluice__health` tool definition.
pub(crate) fn health_tool() -> Value {
    json!({
        "name": "sluice__health",
        "title": "Health of the servers behind this gateway",
        "description": "Reports whether each MCP server behind this gateway is healthy, degraded or down, with its recent failures and last error. Call it before relying on a server whose tools failed, or to choose between servers.",
        "inputSchema": {
            "type": "object",
            "properties": {
                "server": {"type": "string", "description": "Report only this server (by name)."}
            }
        },
        "annotations": {"readOnlyHint": true, "openWorldHint": false, "idempotentHint": true}
    })
}
