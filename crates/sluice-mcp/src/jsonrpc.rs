//! The JSON-RPC 2.0 envelope.
//!
//! Only the envelope is parsed; `params`, `result` and `error` stay raw JSON so
//! that whatever the gateway does not rewrite reaches the other side unchanged.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::fmt;

/// A request id. MCP allows strings and integers (never null).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Id {
    /// An integer id, echoed back as a number.
    Num(i64),
    /// A string id, echoed back as the same string.
    Str(String),
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Id::Num(n) => write!(f, "{n}"),
            Id::Str(s) => write!(f, "{s:?}"),
        }
    }
}

impl Id {
    /// The id as JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("id serializes")
    }
}

/// Standard JSON-RPC and MCP error codes.
pub mod code {
    /// The bytes are not JSON.
    pub const PARSE_ERROR: i64 = -32700;
    /// Valid JSON that is not a JSON-RPC 2.0 request.
    pub const INVALID_REQUEST: i64 = -32600;
    /// No such method here (or not in this protocol era).
    pub const METHOD_NOT_FOUND: i64 = -32601;
    /// The method exists but its params are wrong (an unknown tool, a bad cursor).
    pub const INVALID_PARAMS: i64 = -32602;
    /// The gateway or an upstream failed while serving the request.
    pub const INTERNAL_ERROR: i64 = -32603;
    /// MCP: resource not found.
    pub const RESOURCE_NOT_FOUND: i64 = -32002;
    /// MCP 2026-07-28: the request needs a client capability it did not declare.
    pub const MISSING_CAPABILITY: i64 = -32021;
}

/// A JSON-RPC error object produced by the gateway itself.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RpcError {
    /// The error code; see [`code`].
    pub code: i64,
    /// A short human-readable description, sent to the client as is.
    pub message: String,
    /// Machine-readable detail (e.g. the gateway's refusal reason); omitted when `None`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
}

impl RpcError {
    /// An error with this code and message and no `data`.
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        RpcError {
            code,
            message: message.into(),
            data: None,
        }
    }
    /// The same error carrying `data`.
    pub fn with_data(mut self, data: serde_json::Value) -> Self {
        self.data = Some(data);
        self
    }
    /// -32700: the input was not JSON.
    pub fn parse(msg: impl Into<String>) -> Self {
        Self::new(code::PARSE_ERROR, msg)
    }
    /// -32600: the JSON is not an acceptable request.
    pub fn invalid_request(msg: impl Into<String>) -> Self {
        Self::new(code::INVALID_REQUEST, msg)
    }
    /// -32601 naming the method.
    pub fn method_not_found(method: &str) -> Self {
        Self::new(
            code::METHOD_NOT_FOUND,
            format!("Method not found: {method}"),
        )
    }
    /// -32602: the params are wrong.
    pub fn invalid_params(msg: impl Into<String>) -> Self {
        Self::new(code::INVALID_PARAMS, msg)
    }
    /// -32603: the gateway or an upstream failed.
    pub fn internal(msg: impl Into<String>) -> Self {
        Self::new(code::INTERNAL_ERROR, msg)
    }
    /// The error object as JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("error serializes")
    }
}

/// A request: expects a response with the same id.
#[derive(Debug)]
pub struct Request {
    /// The id the response must carry.
    pub id: Id,
    /// The method name, e.g. `tools/call`.
    pub method: String,
    /// The params, raw so they are forwarded untouched unless rewritten.
    pub params: Option<Box<RawValue>>,
}

/// A notification: no id, no response.
#[derive(Debug)]
pub struct Notification {
    /// The method name, e.g. `notifications/progress`.
    pub method: String,
    /// The params, raw.
    pub params: Option<Box<RawValue>>,
}

/// A response: `Ok(result)` or `Err(error object)`, both raw.
#[derive(Debug)]
pub struct Response {
    /// The id of the request this answers.
    pub id: Id,
    /// The `result` member, or the `error` object.
    pub outcome: Result<Box<RawValue>, Box<RawValue>>,
}

/// One JSON-RPC message of any kind.
#[derive(Debug)]
pub enum Message {
    /// Has an id and a method: answer it.
    Request(Request),
    /// Has a method but no id: never answered.
    Notification(Notification),
    /// Has an id and a result or error: answers an earlier request.
    Response(Response),
}

#[derive(Deserialize)]
struct Envelope {
    jsonrpc: Option<Box<RawValue>>,
    #[serde(default, deserialize_with = "present")]
    id: Option<Option<serde_json::Value>>,
    method: Option<serde_json::Value>,
    params: Option<Box<RawValue>>,
    /// Present even when null: `"result": null` is a success like any other.
    #[serde(default, deserialize_with = "present_raw")]
    result: Option<Box<RawValue>>,
    error: Option<Box<RawValue>>,
}

/// Distinguishes `"id": null` (Some(None)) from an absent id (None).
fn present<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<serde_json::Value>>, D::Error> {
    Option::<serde_json::Value>::deserialize(d).map(Some)
}

/// Keeps a present member raw, `null` included (an absent one stays None).
fn present_raw<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Box<RawValue>>, D::Error> {
    Box::<RawValue>::deserialize(d).map(Some)
}

/// Why a message could not be accepted, with the id if one was readable.
#[derive(Debug)]
pub struct ParseFailure {
    /// The message's id, if it could be read, so the error can answer it.
    pub id: Option<Id>,
    /// The error to send back (-32700 or -32600).
    pub error: RpcError,
}

impl Message {
    /// Parses one JSON-RPC message. Invalid JSON is -32700; valid JSON that is
    /// not a JSON-RPC 2.0 message is -32600 naming what is wrong.
    pub fn parse(bytes: &[u8]) -> Result<Message, Box<ParseFailure>> {
        let fail = |id: Option<Id>, error: RpcError| Err(Box::new(ParseFailure { id, error }));
        let trimmed = trim_ascii_start(bytes);
        if trimmed.first() == Some(&b'[') {
            // Batches were removed in 2025-06-18; a batch is valid JSON but not a message we accept.
            if serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_err() {
                return fail(None, RpcError::parse("Parse error: body is not valid JSON"));
            }
            return fail(
                None,
                RpcError::invalid_request(
                    "Invalid Request: JSON-RPC batches are not supported; send one message per request",
                ),
            );
        }
        let env: Envelope = match serde_json::from_slice(bytes) {
            Ok(e) => e,
            // -32700 only for text that is not JSON at all: JSON the envelope
            // cannot hold (a number out of range, nesting past serde_json's
            // limit, not an object) is an invalid request.
            Err(e) if serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_err() => {
                let message = if e.is_syntax() || e.is_eof() {
                    format!("Parse error: {e}")
                } else {
                    "Parse error: body is not valid JSON".to_string()
                };
                return fail(None, RpcError::parse(message));
            }
            Err(e) if trimmed.first() == Some(&b'{') => {
                return fail(
                    None,
                    RpcError::invalid_request(format!("Invalid Request: {e}")),
                );
            }
            Err(_) => {
                return fail(
                    None,
                    RpcError::invalid_request(
                        "Invalid Request: a JSON-RPC message must be an object",
                    ),
                );
            }
        };
        let id = match env.id {
            None => None,
            Some(None) => {
                return fail(
                    None,
                    RpcError::invalid_request("Invalid Request: id must not be null"),
                );
            }
            Some(Some(v)) => match serde_json::from_value::<Id>(v) {
                Ok(id) => Some(id),
                Err(_) => {
                    return fail(
                        None,
                        RpcError::invalid_request(
                            "Invalid Request: id must be a string or an integer",
                        ),
                    );
                }
            },
        };
        match env.jsonrpc.as_deref().map(RawValue::get) {
            Some("\"2.0\"") => {}
            _ => {
                return fail(
                    id,
                    RpcError::invalid_request("Invalid Request: jsonrpc must be \"2.0\""),
                );
            }
        }
        if let Some(p) = &env.params {
            let c = p.get().as_bytes().first();
            if c != Some(&b'{') && c != Some(&b'[') {
                return fail(
                    id,
                    RpcError::invalid_request("Invalid Request: params must be an object"),
                );
            }
        }
        match (env.method, id) {
            (Some(serde_json::Value::String(method)), Some(id)) => Ok(Message::Request(Request {
                id,
                method,
                params: env.params,
            })),
            (Some(serde_json::Value::String(method)), None) => {
                Ok(Message::Notification(Notification {
                    method,
                    params: env.params,
                }))
            }
            (Some(_), id) => fail(
                id,
                RpcError::invalid_request("Invalid Request: method must be a string"),
            ),
            (None, Some(id)) => match (env.result, env.error) {
                (Some(r), None) => Ok(Message::Response(Response { id, outcome: Ok(r) })),
                (None, Some(e)) => Ok(Message::Response(Response {
                    id,
                    outcome: Err(e),
                })),
                _ => fail(
                    Some(id),
                    RpcError::invalid_request(
                        "Invalid Request: a response needs exactly one of result and error",
                    ),
                ),
            },
            (None, None) => fail(
                None,
                RpcError::invalid_request("Invalid Request: message has neither method nor id"),
            ),
        }
    }
}

fn trim_ascii_start(b: &[u8]) -> &[u8] {
    let n = b.iter().take_while(|c| c.is_ascii_whitespace()).count();
    &b[n..]
}

/// Serializes a success response.
pub fn response_ok(id: &Id, result: &str) -> String {
    let id = id.to_json();
    let mut s = String::with_capacity(result.len() + id.len() + 36);
    s.push_str("{\"jsonrpc\":\"2.0\",\"id\":");
    s.push_str(&id);
    s.push_str(",\"result\":");
    s.push_str(result);
    s.push('}');
    s
}

/// Serializes an error response; `id` is null when the request's id was unreadable.
pub fn response_err(id: Option<&Id>, error: &str) -> String {
    let id = id.map(Id::to_json).unwrap_or_else(|| "null".into());
    format!("{{\"jsonrpc\":\"2.0\",\"id\":{id},\"error\":{error}}}")
}

/// Serializes a request.
pub fn request(id: &Id, method: &str, params: Option<&str>) -> String {
    let method = serde_json::to_string(method).expect("string serializes");
    match params {
        Some(p) => format!(
            "{{\"jsonrpc\":\"2.0\",\"id\":{},\"method\":{method},\"params\":{p}}}",
            id.to_json()
        ),
        None => format!(
            "{{\"jsonrpc\":\"2.0\",\"id\":{},\"method\":{method}}}",
            id.to_json()
        ),
    }
}

/// Serializes a notification.
pub fn notification(method: &str, params: Option<&str>) -> String {
    let method = serde_json::to_string(method).expect("string serializes");
    match params {
        Some(p) => format!("{{\"jsonrpc\":\"2.0\",\"method\":{method},\"params\":{p}}}"),
        None => format!("{{\"jsonrpc\":\"2.0\",\"method\":{method}}}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(b: &str) -> i64 {
        Message::parse(b.as_bytes()).unwrap_err().error.code
    }

    #[test]
    fn classifies_messages() {
        assert!(matches!(
            Message::parse(br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#),
            Ok(Message::Request(Request { id: Id::Num(1), .. }))
        ));
        assert!(matches!(
            Message::parse(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#),
            Ok(Message::Notification(_))
        ));
        assert!(matches!(
            Message::parse(br#"{"jsonrpc":"2.0","id":"a","result":{}}"#),
            Ok(Message::Response(Response { outcome: Ok(_), .. }))
        ));
    }

    #[test]
    fn rejects_bad_input_with_the_right_code() {
        assert_eq!(err("{not json"), code::PARSE_ERROR);
        assert_eq!(err(""), code::PARSE_ERROR);
        assert_eq!(err("42"), code::INVALID_REQUEST);
        assert_eq!(err(r#"{"id":1,"method":"ping"}"#), code::INVALID_REQUEST);
        assert_eq!(
            err(r#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#),
            code::INVALID_REQUEST
        );
        assert_eq!(
            err(r#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#),
            code::INVALID_REQUEST
        );
        assert_eq!(
            err(r#"{"jsonrpc":"2.0","id":1,"method":5}"#),
            code::INVALID_REQUEST
        );
        assert_eq!(
            err(r#"{"jsonrpc":"2.0","id":1,"method":"x","params":3}"#),
            code::INVALID_REQUEST
        );
        assert_eq!(
            err(r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#),
            code::INVALID_REQUEST
        );
    }

    /// Found by `tests/fuzz_envelope.rs`: valid JSON that serde_json cannot
    /// turn into values (out of range, too deep) was answered -32700.
    #[test]
    fn json_the_envelope_cannot_hold_is_an_invalid_request_not_a_parse_error() {
        assert_eq!(err("1e999"), code::INVALID_REQUEST);
        assert_eq!(
            err(r#"{"jsonrpc":"2.0","id":1e999,"method":"ping"}"#),
            code::INVALID_REQUEST
        );
        let deep = format!(
            r#"{{"jsonrpc":"2.0","id":{}1{},"method":"ping"}}"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        assert_eq!(err(&deep), code::INVALID_REQUEST);
        assert_eq!(
            err(r#"{"jsonrpc":"2.0","id":1,"method":"ping""#),
            code::PARSE_ERROR
        );
        assert_eq!(err("5 x"), code::PARSE_ERROR);
    }

    /// Found by `tests/fuzz_envelope.rs`: `"result": null` was taken for an
    /// absent result, and the response refused.
    #[test]
    fn a_null_result_is_a_result() {
        match Message::parse(br#"{"jsonrpc":"2.0","id":0,"result":null}"#) {
            Ok(Message::Response(Response { outcome: Ok(r), .. })) => assert_eq!(r.get(), "null"),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            err(r#"{"jsonrpc":"2.0","id":0,"result":null,"error":{"code":1,"message":"m"}}"#),
            code::INVALID_REQUEST
        );
        // A null error next to a result is the absent error some servers send.
        assert!(matches!(
            Message::parse(br#"{"jsonrpc":"2.0","id":0,"result":{},"error":null}"#),
            Ok(Message::Response(Response { outcome: Ok(_), .. }))
        ));
    }

    #[test]
    fn serializes_envelopes() {
        assert_eq!(
            response_ok(&Id::Str("x".into()), "{}"),
            r#"{"jsonrpc":"2.0","id":"x","result":{}}"#
        );
        assert_eq!(
            response_err(None, &RpcError::parse("p").to_json()),
            r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"p"}}"#
        );
        assert_eq!(
            notification("a/b", None),
            r#"{"jsonrpc":"2.0","method":"a/b"}"#
        );
    }
}
