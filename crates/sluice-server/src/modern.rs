//! The stateless revision 2026-07-28 on the same `/mcp` endpoint.
//!
//! A POST whose `MCP-Protocol-Version` names a non-handshake revision is
//! served here: no session, every request self-contained. Each request runs
//! the validation ladder in the order the specification and its conformance
//! suite expect (envelope `_meta`, then header/body agreement, then the
//! version), is answered by the same gateway core as legacy requests, and its
//! result is shaped for 2026 clients (`resultType`, `ttlMs`/`cacheScope`,
//! `serverInfo`, error codes of the new revision). Closing the response
//! cancels the call. `subscriptions/listen` streams change notifications.

use crate::error::raw;
use crate::gateway::Gateway;
use crate::session::{Outbound, Session};
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use futures_util::stream;
use serde_json::{Map, Value, json};
use sluice_mcp::jsonrpc::{self, Id, Message, Request};
use sluice_mcp::version::{self, MODERN, header as mcp_header};
use sluice_mcp::{RpcError, sse};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

const META_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
const META_CAPS: &str = "io.modelcontextprotocol/clientCapabilities";
const META_INFO: &str = "io.modelcontextprotocol/clientInfo";
const META_LOG: &str = "io.modelcontextprotocol/logLevel";
const META_SERVER_INFO: &str = "io.modelcontextprotocol/serverInfo";
const META_SUBSCRIPTION: &str = "io.modelcontextprotocol/subscriptionId";

/// New 2026 error codes.
const HEADER_MISMATCH: i64 = -32020;
const UNSUPPORTED_VERSION: i64 = -32022;

/// True when a request's `MCP-Protocol-Version` selects the stateless revision.
pub(crate) fn selects_modern(headers: &HeaderMap) -> bool {
    headers
        .get(mcp_header::PROTOCOL_VERSION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| !version::is_legacy(v.trim()))
}

/// A 2026 error answer: the HTTP status the revision prescribes for its code.
fn error(id: Option<&Id>, err: RpcError) -> Response {
    let status = status_for(err.code);
    let body = jsonrpc::response_err(id, &err.to_json());
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn status_for(code: i64) -> StatusCode {
    match code {
        -32601 => StatusCode::NOT_FOUND,
        -32700 | -32600 | -32602 | -32020 | -32021 | -32022 => StatusCode::BAD_REQUEST,
        _ => StatusCode::OK,
    }
}

/// One header's value, trimmed of surrounding whitespace; a repeated header is an error.
fn single_header<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, RpcError> {
    let mut values = headers.get_all(name).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(RpcError::new(
            HEADER_MISMATCH,
            format!("{name} header appears more than once"),
        ));
    }
    Ok(first.map(|v| v.to_str().unwrap_or("\u{0}").trim_matches([' ', '\t'])))
}

/// Decodes `=?base64?…?=` (strict, canonical padding, UTF-8); other values are literal.
fn decode_header_value(v: &str) -> Option<String> {
    match v
        .strip_prefix("=?base64?")
        .and_then(|r| r.strip_suffix("?="))
    {
        None => Some(v.to_string()),
        Some(b64) => {
            let bytes = STANDARD.decode(b64).ok()?;
            if STANDARD.encode(&bytes) != b64 {
                return None;
            }
            String::from_utf8(bytes).ok()
        }
    }
}

/// Serves a POST of the stateless revision.
pub(crate) async fn post(gw: &Arc<Gateway>, headers: &HeaderMap, bytes: Bytes) -> Response {
    let req = match Message::parse(&bytes) {
        Ok(Message::Request(r)) => r,
        // No client-to-server notification is defined over HTTP in 2026.
        Ok(Message::Notification(_)) => return StatusCode::ACCEPTED.into_response(),
        Ok(Message::Response(_)) => {
            return error(
                None,
                RpcError::invalid_request(
                    "Body must be a single JSON-RPC request or notification object",
                ),
            );
        }
        Err(f) => return error(f.id.as_ref(), f.error),
    };
    let envelope = match validate(headers, &req) {
        Ok(e) => e,
        Err(e) => return error(Some(&req.id), e),
    };
    match req.method.as_str() {
        "server/discover" => respond_json(&req.id, discover(gw)),
        "subscriptions/listen" => listen(gw, headers, req, envelope).await,
        "tools/list"
        | "prompts/list"
        | "resources/list"
        | "resources/templates/list"
        | "tools/call"
        | "prompts/get"
        | "resources/read"
        | "completion/complete" => call(gw, req, envelope, headers).await,
        m => error(
            Some(&req.id),
            RpcError::new(-32601, "Method not found").with_data(json!(m)),
        ),
    }
}

/// What the envelope of a valid 2026 request says.
struct Envelope {
    params: Map<String, Value>,
    capabilities: Value,
    client_info: Value,
    log_level: Option<String>,
}

/// The validation ladder; the first failing rung answers.
fn validate(headers: &HeaderMap, req: &Request) -> Result<Envelope, RpcError> {
    let version_header = single_header(headers, mcp_header::PROTOCOL_VERSION)?;
    let method_header = single_header(headers, mcp_header::METHOD)?;
    let name_header = single_header(headers, mcp_header::NAME)?;

    let mut params: Map<String, Value> = match req.params.as_deref() {
        Some(p) => serde_json::from_str(p.get()).unwrap_or_default(),
        None => Map::new(),
    };
    let Some(Value::Object(meta)) = params.get("_meta") else {
        return Err(RpcError::invalid_params(format!(
            "params._meta must be an object carrying the required '{META_VERSION}' and '{META_CAPS}' envelope keys"
        )));
    };
    let missing: Vec<&str> = [META_VERSION, META_CAPS]
        .into_iter()
        .filter(|k| !meta.contains_key(*k))
        .collect();
    if !missing.is_empty() {
        return Err(RpcError::invalid_params(format!(
            "params._meta is missing the required envelope key(s): {}",
            missing.join(", ")
        )));
    }
    let body_version = meta.get(META_VERSION).and_then(Value::as_str);
    if version_header.is_none() || version_header != body_version {
        return Err(RpcError::new(
            HEADER_MISMATCH,
            "mcp-protocol-version header does not match the request envelope's protocol version",
        ));
    }
    if method_header != Some(req.method.as_str()) {
        return Err(RpcError::new(
            HEADER_MISMATCH,
            "mcp-method header does not match the request body's method",
        ));
    }
    let named = match req.method.as_str() {
        "tools/call" | "prompts/get" => Some(("name", params.get("name").and_then(Value::as_str))),
        "resources/read" => Some(("uri", params.get("uri").and_then(Value::as_str))),
        _ => None,
    };
    if let Some((field, Some(body_value))) = named {
        match name_header.map(decode_header_value) {
            Some(Some(v)) if v == body_value => {}
            Some(None) => {
                return Err(RpcError::new(
                    HEADER_MISMATCH,
                    "mcp-name header carries a malformed base64 sentinel value",
                ));
            }
            _ => {
                return Err(RpcError::new(
                    HEADER_MISMATCH,
                    format!(
                        "mcp-name header does not match the request body's '{field}' parameter"
                    ),
                ));
            }
        }
    }
    let Some(v) = body_version else {
        return Err(RpcError::invalid_params(
            "the protocol-version envelope value must be a string",
        ));
    };
    if !version::MODERN_SUPPORTED.contains(&v) {
        return Err(
            RpcError::new(UNSUPPORTED_VERSION, "Unsupported protocol version")
                .with_data(json!({"supported": version::MODERN_SUPPORTED, "requested": v})),
        );
    }
    let capabilities = meta.get(META_CAPS).cloned().unwrap_or_else(|| json!({}));
    let client_info = meta.get(META_INFO).cloned().unwrap_or(Value::Null);
    let log_level = meta
        .get(META_LOG)
        .and_then(Value::as_str)
        .map(str::to_string);
    // The envelope is for the gateway; upstreams get their own.
    if let Some(Value::Object(meta)) = params.get_mut("_meta") {
        meta.retain(|k, _| !k.starts_with("io.modelcontextprotocol/"));
        if meta.is_empty() {
            params.remove("_meta");
        }
    }
    Ok(Envelope {
        params,
        capabilities,
        client_info,
        log_level,
    })
}

fn server_info_meta() -> Value {
    json!({META_SERVER_INFO: {"name": "sluice", "title": "Sluice MCP gateway", "version": env!("CARGO_PKG_VERSION")}})
}

fn discover(gw: &Gateway) -> String {
    let mut caps = gw.capabilities();
    if let Value::Object(c) = &mut caps {
        // logging/setLevel does not exist in 2026; log level travels per request.
        c.remove("logging");
    }
    let mut r = json!({
        "supportedVersions": version::MODERN_SUPPORTED,
        "capabilities": caps,
        "resultType": "complete",
        "ttlMs": 0,
        "cacheScope": "private",
        "_meta": server_info_meta(),
    });
    if let Some(i) = gw.instructions() {
        r["instructions"] = Value::String(i);
    }
    r.to_string()
}

fn respond_json(id: &Id, result: String) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        jsonrpc::response_ok(id, &result),
    )
        .into_response()
}

/// Shapes a result for a 2026 client: `resultType`, cache fields on
/// cacheable methods, and the gateway's identity under `_meta`.
fn shape_result(method: &str, result: &str) -> String {
    let mut r: Map<String, Value> = match serde_json::from_str(result) {
        Ok(m) => m,
        Err(_) => return result.to_string(),
    };
    r.entry("resultType").or_insert_with(|| json!("complete"));
    if matches!(
        method,
        "tools/list"
            | "prompts/list"
            | "resources/list"
            | "resources/templates/list"
            | "resources/read"
    ) {
        // Upstreams of the session era give no cache hints; the answer may
        // depend on who asks once policy applies, so it is private.
        r.entry("ttlMs").or_insert_with(|| json!(0));
        r.entry("cacheScope").or_insert_with(|| json!("private"));
    }
    let meta = r.entry("_meta").or_insert_with(|| json!({}));
    if let Value::Object(m) = meta {
        m.insert(
            META_SERVER_INFO.into(),
            server_info_meta()[META_SERVER_INFO].clone(),
        );
    }
    Value::Object(r).to_string()
}

/// Rewrites error codes that 2026 retired: resource-not-found -32002 is -32602.
fn shape_error(error: &str) -> (String, i64) {
    let Ok(mut e) = serde_json::from_str::<Map<String, Value>>(error) else {
        return (error.to_string(), 0);
    };
    let code = e.get("code").and_then(Value::as_i64).unwrap_or(0);
    if code == -32002 {
        e.insert("code".into(), json!(-32602));
        return (Value::Object(e).to_string(), -32602);
    }
    (error.to_string(), code)
}

/// Passes a request's messages to its response, dropping logs the client did not ask for.
struct RequestOut {
    tx: mpsc::UnboundedSender<String>,
    logs: bool,
}

impl Outbound for RequestOut {
    fn send(&self, msg: String) -> bool {
        if !self.logs && msg.starts_with(r#"{"jsonrpc":"2.0","method":"notifications/message""#) {
            return true;
        }
        self.tx.send(msg).is_ok()
    }
}

/// Aborts the call when the client goes away (closing the response is how a
/// 2026 client cancels).
struct CancelOnDrop(AbortHandle);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A stateless call: answered by the gateway core with a session made for
/// this one request, JSON if the answer comes first, else an SSE stream.
async fn call(gw: &Arc<Gateway>, req: Request, env: Envelope, headers: &HeaderMap) -> Response {
    let sess = Arc::new(Session::new(
        format!("stateless-{}", uuid::Uuid::new_v4().simple()).into(),
        MODERN,
        env.capabilities,
        env.client_info,
    ));
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    let out: Arc<dyn Outbound> = Arc::new(RequestOut {
        tx: tx.clone(),
        logs: env.log_level.is_some(),
    });
    let params = raw(Value::Object(env.params).to_string());
    let id = req.id.clone();
    let method = req.method.clone();
    let g = gw.clone();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<(String, StatusCode)>();
    let task = tokio::spawn(async move {
        let (line, status) = match g.dispatch(&sess, &method, Some(&params), &out).await {
            Ok(result) => (
                jsonrpc::response_ok(&id, &shape_result(&method, result.get())),
                StatusCode::OK,
            ),
            Err(fail) => {
                let (err, code) = shape_error(&fail.to_error_json());
                (jsonrpc::response_err(Some(&id), &err), status_for(code))
            }
        };
        let _ = done_tx.send((line, status));
    });
    let cancel = CancelOnDrop(task.abort_handle());
    drop(tx);
    let mut done_rx = done_rx;
    // The answer first and alone: plain JSON, with the status its code calls for.
    let first = tokio::select! {
        biased;
        done = &mut done_rx => match done {
            Ok((line, status)) => {
                if let Ok(msg) = rx.try_recv() {
                    // Something was sent before the answer: stream both.
                    return stream_answer(vec![msg], rx, Some(line), None, cancel);
                }
                return (status, [(header::CONTENT_TYPE, "application/json")], line).into_response();
            }
            Err(_) => return error(Some(&req.id), RpcError::internal("the request was cancelled")),
        },
        msg = rx.recv() => msg,
    };
    let accepts_sse = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/event-stream") || v.contains("*/*"));
    match first {
        Some(msg) if accepts_sse => stream_answer(vec![msg], rx, None, Some(done_rx), cancel),
        _ => match done_rx.await {
            Ok((line, status)) => {
                (status, [(header::CONTENT_TYPE, "application/json")], line).into_response()
            }
            Err(_) => error(
                Some(&req.id),
                RpcError::internal("the request was cancelled"),
            ),
        },
    }
}

/// An SSE answer: queued messages, live ones, then the response. The call is
/// cancelled if the client closes the stream first.
fn stream_answer(
    queued: Vec<String>,
    rx: mpsc::UnboundedReceiver<String>,
    answer: Option<String>,
    done: Option<tokio::sync::oneshot::Receiver<(String, StatusCode)>>,
    cancel: CancelOnDrop,
) -> Response {
    struct St {
        queued: std::collections::VecDeque<String>,
        rx: mpsc::UnboundedReceiver<String>,
        answer: Option<String>,
        done: Option<tokio::sync::oneshot::Receiver<(String, StatusCode)>>,
        finished: bool,
        _cancel: CancelOnDrop,
    }
    let st = St {
        queued: queued.into(),
        rx,
        answer,
        done,
        finished: false,
        _cancel: cancel,
    };
    let body = stream::unfold(st, |mut st| async move {
        if let Some(m) = st.queued.pop_front() {
            return Some((
                Ok::<_, std::convert::Infallible>(Bytes::from(sse::event(None, &m))),
                st,
            ));
        }
        if st.finished {
            return None;
        }
        loop {
            if let Some(done) = st.done.as_mut() {
                tokio::select! {
                    biased;
                    m = st.rx.recv() => match m {
                        Some(m) => return Some((Ok(Bytes::from(sse::event(None, &m))), st)),
                        None => {
                            // No more messages: wait for the answer.
                            let r = done.await;
                            st.done = None;
                            st.answer = r.ok().map(|(l, _)| l);
                        }
                    },
                    r = &mut *done => {
                        st.done = None;
                        st.answer = r.ok().map(|(l, _)| l);
                        // Drain what was sent before the answer.
                        while let Ok(m) = st.rx.try_recv() {
                            st.queued.push_back(m);
                        }
                        if let Some(m) = st.queued.pop_front() {
                            return Some((Ok(Bytes::from(sse::event(None, &m))), st));
                        }
                    }
                }
            } else {
                if let Some(m) = st.queued.pop_front() {
                    return Some((Ok(Bytes::from(sse::event(None, &m))), st));
                }
                st.finished = true;
                return st
                    .answer
                    .take()
                    .map(|a| (Ok(Bytes::from(sse::event(None, &a))), st));
            }
        }
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache, no-transform")
        .body(Body::from_stream(body))
        .expect("valid response")
}

/// Which change notifications a `subscriptions/listen` stream asked for.
struct Filter {
    tools: bool,
    prompts: bool,
    resources: bool,
    uris: HashSet<String>,
}

/// Delivers change notifications to one listen stream, tagged with its id.
struct ListenOut {
    tx: mpsc::UnboundedSender<String>,
    id: Value,
    filter: Filter,
}

impl Outbound for ListenOut {
    fn send(&self, msg: String) -> bool {
        let Ok(mut m) = serde_json::from_str::<Map<String, Value>>(&msg) else {
            return true;
        };
        let wanted = match m.get("method").and_then(Value::as_str) {
            Some("notifications/tools/list_changed") => self.filter.tools,
            Some("notifications/prompts/list_changed") => self.filter.prompts,
            Some("notifications/resources/list_changed") => self.filter.resources,
            Some("notifications/resources/updated") => m
                .get("params")
                .and_then(|p| p.get("uri"))
                .and_then(Value::as_str)
                .is_some_and(|u| self.filter.uris.contains(u)),
            _ => false,
        };
        if !wanted {
            return true;
        }
        let params = m.entry("params").or_insert_with(|| json!({}));
        if let Value::Object(p) = params {
            let meta = p.entry("_meta").or_insert_with(|| json!({}));
            if let Value::Object(meta) = meta {
                meta.insert(META_SUBSCRIPTION.into(), self.id.clone());
            }
        }
        self.tx.send(Value::Object(m).to_string()).is_ok()
    }
}

/// Removes a listen stream's registration when the client closes it.
struct ListenGuard {
    gw: Arc<Gateway>,
    sess: Arc<Session>,
}

impl Drop for ListenGuard {
    fn drop(&mut self) {
        self.gw.forget_local(&self.sess.id);
        let (gw, sess) = (self.gw.clone(), self.sess.clone());
        let uris: Vec<String> = sess.subscriptions.lock().unwrap().iter().cloned().collect();
        if !uris.is_empty() {
            tokio::spawn(async move {
                for uri in uris {
                    let params = raw(json!({"uri": uri}).to_string());
                    let out: Arc<dyn Outbound> = Arc::new(RequestOut {
                        tx: mpsc::unbounded_channel().0,
                        logs: false,
                    });
                    let _ = gw
                        .dispatch(&sess, "resources/unsubscribe", Some(&params), &out)
                        .await;
                }
            });
        }
    }
}

/// `subscriptions/listen`: acknowledges, then streams the change notifications asked for.
async fn listen(gw: &Arc<Gateway>, headers: &HeaderMap, req: Request, env: Envelope) -> Response {
    let accepts_sse = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/event-stream"));
    if !accepts_sse {
        return (
            StatusCode::NOT_ACCEPTABLE,
            [(header::CONTENT_TYPE, "application/json")],
            jsonrpc::response_err(
                Some(&req.id),
                &RpcError::invalid_request("subscriptions/listen answers with an SSE stream; Accept must include text/event-stream").to_json(),
            ),
        )
            .into_response();
    }
    let asked = env
        .params
        .get("notifications")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let flag = |k: &str| asked.get(k).and_then(Value::as_bool).unwrap_or(false);
    let caps = gw.capabilities();
    let supports = |k: &str| caps.get(k).is_some();
    let uris: HashSet<String> = asked
        .get("resourceSubscriptions")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let filter = Filter {
        tools: flag("toolsListChanged") && supports("tools"),
        prompts: flag("promptsListChanged") && supports("prompts"),
        resources: flag("resourcesListChanged") && supports("resources"),
        uris,
    };
    let mut honored = Map::new();
    for (k, on) in [
        ("toolsListChanged", filter.tools),
        ("promptsListChanged", filter.prompts),
        ("resourcesListChanged", filter.resources),
    ] {
        if on {
            honored.insert(k.into(), json!(true));
        }
    }
    let sub_id = serde_json::to_value(&req.id).unwrap_or(Value::Null);
    let sess = Arc::new(Session::new(
        format!("listen-{}", uuid::Uuid::new_v4().simple()).into(),
        MODERN,
        env.capabilities,
        env.client_info,
    ));
    // Subscribe upstream to the resources asked for (session-era upstreams need it).
    let mut subscribed = Vec::new();
    for uri in &filter.uris {
        let params = raw(json!({"uri": uri}).to_string());
        let out: Arc<dyn Outbound> = Arc::new(RequestOut {
            tx: mpsc::unbounded_channel().0,
            logs: false,
        });
        match gw
            .dispatch(&sess, "resources/subscribe", Some(&params), &out)
            .await
        {
            Ok(_) => subscribed.push(json!(uri)),
            Err(e) => {
                tracing::info!(%uri, error = %e.to_error_json(), "resource subscription not honored")
            }
        }
    }
    if !subscribed.is_empty() {
        honored.insert("resourceSubscriptions".into(), Value::Array(subscribed));
    }
    let (tx, rx) = mpsc::unbounded_channel();
    let ack = jsonrpc::notification(
        "notifications/subscriptions/acknowledged",
        Some(&json!({"_meta": {META_SUBSCRIPTION: sub_id}, "notifications": honored}).to_string()),
    );
    let _ = tx.send(ack);
    sess.set_unsolicited(Some(Arc::new(ListenOut {
        tx,
        id: sub_id,
        filter,
    })));
    gw.register_local(sess.clone());
    let guard = ListenGuard {
        gw: gw.clone(),
        sess,
    };
    struct St {
        rx: mpsc::UnboundedReceiver<String>,
        keepalive: tokio::time::Interval,
        _guard: ListenGuard,
    }
    let mut keepalive = tokio::time::interval(Duration::from_secs(15));
    keepalive.reset();
    let st = St {
        rx,
        keepalive,
        _guard: guard,
    };
    let body = stream::unfold(st, |mut st| async move {
        tokio::select! {
            m = st.rx.recv() => m.map(|m| (Ok::<_, std::convert::Infallible>(Bytes::from(sse::event(None, &m))), st)),
            _ = st.keepalive.tick() => Some((Ok(Bytes::from_static(b": ping\n\n")), st)),
        }
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache, no-transform")
        .body(Body::from_stream(body))
        .expect("valid response")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_decode_strictly() {
        assert_eq!(decode_header_value("echo").as_deref(), Some("echo"));
        assert_eq!(
            decode_header_value("=?base64?SGVsbG8sIOS4lueVjA==?=").as_deref(),
            Some("Hello, 世界")
        );
        assert_eq!(
            decode_header_value("=?base64?SGVsbG8?="),
            None,
            "missing padding"
        );
        assert_eq!(decode_header_value("=?base64?SGVs!!!bG8=?="), None);
        assert_eq!(
            decode_header_value("=?base64?abc").as_deref(),
            Some("=?base64?abc"),
            "literal"
        );
    }

    #[test]
    fn results_are_shaped_for_2026_clients() {
        let r: Value =
            serde_json::from_str(&shape_result("tools/list", r#"{"tools":[]}"#)).unwrap();
        assert_eq!(r["resultType"], "complete");
        assert_eq!(r["ttlMs"], 0);
        assert_eq!(r["cacheScope"], "private");
        assert_eq!(r["_meta"][META_SERVER_INFO]["name"], "sluice");
        let r: Value = serde_json::from_str(&shape_result(
            "tools/call",
            r#"{"content":[],"_meta":{"x":1}}"#,
        ))
        .unwrap();
        assert!(r.get("ttlMs").is_none());
        assert_eq!(r["_meta"]["x"], 1);
        let (e, code) =
            shape_error(r#"{"code":-32002,"message":"Resource not found","data":{"uri":"x"}}"#);
        assert_eq!(code, -32602);
        assert!(e.contains("-32602") && e.contains("\"uri\""));
    }
}
