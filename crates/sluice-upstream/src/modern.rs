//! Speaking the stateless revision 2026-07-28 to upstreams: the discover
//! probe that tells an upstream's era, and the per-request envelope
//! (`_meta` and headers) every 2026 request carries.

use crate::upstream::ServerInfo;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

pub(crate) const MODERN: &str = "2026-07-28";
const META_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
const META_CAPS: &str = "io.modelcontextprotocol/clientCapabilities";
const META_INFO: &str = "io.modelcontextprotocol/clientInfo";
const META_SERVER_INFO: &str = "io.modelcontextprotocol/serverInfo";

/// `params` with the 2026 envelope added to `_meta`: the version, the
/// capabilities of the client this request is for, and the gateway's identity.
pub(crate) fn stamp(params: Option<&str>, client_caps: Option<&Value>) -> String {
    stamp_with(params, client_caps, None)
}

/// [`stamp`], with the log level the client asked for.
pub(crate) fn stamp_with(
    params: Option<&str>,
    client_caps: Option<&Value>,
    log_level: Option<&str>,
) -> String {
    let mut p: Map<String, Value> = params
        .and_then(|p| serde_json::from_str(p).ok())
        .unwrap_or_default();
    let meta = p.entry("_meta").or_insert_with(|| json!({}));
    if let Value::Object(m) = meta {
        m.insert(META_VERSION.into(), json!(MODERN));
        m.insert(
            META_CAPS.into(),
            client_caps.cloned().unwrap_or_else(|| json!({})),
        );
        m.insert(
            META_INFO.into(),
            json!({"name": "sluice", "version": env!("CARGO_PKG_VERSION")}),
        );
        if let Some(level) = log_level {
            m.insert("io.modelcontextprotocol/logLevel".into(), json!(level));
        }
    }
    Value::Object(p).to_string()
}

/// What a `server/discover` answer says, if it names the stateless revision.
pub(crate) fn discovered(result: &RawValue) -> Option<ServerInfo> {
    let v: Value = serde_json::from_str(result.get()).ok()?;
    let versions = v.get("supportedVersions")?.as_array()?;
    if !versions.iter().any(|x| x == MODERN) {
        return None;
    }
    Some(ServerInfo {
        protocol_version: MODERN.into(),
        capabilities: v.get("capabilities").cloned().unwrap_or_else(|| json!({})),
        server_info: v
            .get("_meta")
            .and_then(|m| m.get(META_SERVER_INFO))
            .or_else(|| v.get("serverInfo"))
            .cloned()
            .unwrap_or(Value::Null),
        instructions: v
            .get("instructions")
            .and_then(Value::as_str)
            .map(str::to_string),
    })
}

/// The `Mcp-Name` header value of a request, encoded as the revision asks
/// (see [`sluice_mcp::headers::encode`]).
pub(crate) fn name_header(method: &str, params: &str) -> Option<String> {
    let field = match method {
        "tools/call" | "prompts/get" => "name",
        "resources/read" => "uri",
        // The tasks extension routes its methods by task id.
        "tasks/get" | "tasks/update" | "tasks/cancel" => "taskId",
        _ => return None,
    };
    let v: Value = serde_json::from_str(params).ok()?;
    Some(sluice_mcp::headers::encode(v.get(field)?.as_str()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_the_envelope_and_keeps_params() {
        let s: Value = serde_json::from_str(&stamp(
            Some(r#"{"name":"x","_meta":{"progressToken":3}}"#),
            Some(&json!({"sampling": {}})),
        ))
        .unwrap();
        assert_eq!(s["name"], "x");
        assert_eq!(s["_meta"]["progressToken"], 3);
        assert_eq!(s["_meta"][META_VERSION], MODERN);
        assert_eq!(s["_meta"][META_CAPS], json!({"sampling": {}}));
    }

    #[test]
    fn names_the_request() {
        assert_eq!(
            name_header("tools/call", r#"{"name":"Hello, 世界"}"#).as_deref(),
            Some("=?base64?SGVsbG8sIOS4lueVjA==?=")
        );
        assert_eq!(
            name_header("resources/read", r#"{"uri":"test://a"}"#).as_deref(),
            Some("test://a")
        );
        assert_eq!(name_header("tools/list", "{}"), None);
    }

    #[test]
    fn recognises_a_discover_result() {
        let r = RawValue::from_string(
            json!({"supportedVersions":["2026-07-28"],"capabilities":{"tools":{}},"_meta":{META_SERVER_INFO:{"name":"n"}}}).to_string(),
        )
        .unwrap();
        let info = discovered(&r).unwrap();
        assert_eq!(info.protocol_version, MODERN);
        assert_eq!(info.server_info["name"], "n");
        let legacy =
            RawValue::from_string(json!({"supportedVersions":["2025-11-25"]}).to_string()).unwrap();
        assert!(discovered(&legacy).is_none());
    }
}
