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
use crate::session::{Caller, Outbound, Session};
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
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

/// True when a request's `MCP-Protocol-Version` selects the stateless
/// revision: it names no session-era revision and the request belongs to no
/// session (a session's request with a bad version is a session-era error).
pub(crate) fn selects_modern(headers: &HeaderMap) -> bool {
    !headers.contains_key(mcp_header::SESSION_ID)
        && headers
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
        crate::rescue::POLICY_CODE => StatusCode::FORBIDDEN,
        crate::rescue::LIMITED_CODE => StatusCode::TOO_MANY_REQUESTS,
        crate::rescue::UNAVAILABLE_CODE => StatusCode::SERVICE_UNAVAILABLE,
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

/// The `x-mcp-header` annotations of a tool's top-level arguments: (header name, argument).
pub(crate) fn param_headers(tool: &Value) -> Vec<(String, String)> {
    let Some(Value::Object(props)) = tool.pointer("/inputSchema/properties") else {
        return Vec::new();
    };
    props
        .iter()
        .filter_map(|(arg, schema)| {
            let h = schema.get("x-mcp-header")?.as_str()?;
            let valid = !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
            valid.then(|| (h.to_string(), arg.clone()))
        })
        .collect()
}

/// `Mcp-Param-*` headers must mirror the arguments their tool annotates with
/// `x-mcp-header`: present exactly when the argument is, and equal to it.
fn check_param_headers(
    gw: &Gateway,
    headers: &HeaderMap,
    params: &Map<String, Value>,
) -> Result<(), RpcError> {
    let Some(name) = params.get("name").and_then(Value::as_str) else {
        return Ok(());
    };
    // An unknown tool is not checked here; the call itself will say it is unknown.
    let Some((_, tool)) = gw.tool_definition(name) else {
        return Ok(());
    };
    let args = params.get("arguments").and_then(Value::as_object);
    for (h, arg) in param_headers(&tool) {
        let header = format!("mcp-param-{}", h.to_ascii_lowercase());
        let sent = single_header(headers, &header)?;
        let value = args.and_then(|a| a.get(&arg)).filter(|v| !v.is_null());
        match (sent, value) {
            (None, None) => {}
            (Some(_), None) => {
                return Err(RpcError::new(
                    HEADER_MISMATCH,
                    format!(
                        "Mcp-Param-{h} header is present but the request body has no '{arg}' argument"
                    ),
                ));
            }
            (None, Some(_)) => {
                return Err(RpcError::new(
                    HEADER_MISMATCH,
                    format!(
                        "Mcp-Param-{h} header is missing but the request body's '{arg}' argument is present"
                    ),
                ));
            }
            (Some(s), Some(v)) => {
                let decoded = sluice_mcp::headers::decode(s).map_err(|e| {
                    RpcError::new(
                        HEADER_MISMATCH,
                        format!(
                            "Mcp-Param-{h} header carries a malformed base64 sentinel value: {e}"
                        ),
                    )
                })?;
                if !sluice_mcp::headers::matches(&decoded, v) {
                    return Err(RpcError::new(
                        HEADER_MISMATCH,
                        format!(
                            "Mcp-Param-{h} header does not match the request body's '{arg}' argument"
                        ),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Decodes a header value strictly; `None` for a malformed sentinel (see
/// [`sluice_mcp::headers::decode`]).
fn decode_header_value(v: &str) -> Option<String> {
    sluice_mcp::headers::decode(v).ok().map(|v| v.into_owned())
}

/// Serves a POST of the stateless revision.
pub(crate) async fn post(
    gw: &Arc<Gateway>,
    headers: &HeaderMap,
    bytes: Bytes,
    caller: Caller,
) -> Response {
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
        "subscriptions/listen" => listen(gw, headers, req, envelope, &caller).await,
        "tools/list"
        | "prompts/list"
        | "resources/list"
        | "resources/templates/list"
        | "tools/call"
        | "prompts/get"
        | "resources/read"
        | "completion/complete"
        | "tasks/get"
        | "tasks/update"
        | "tasks/cancel" => call(gw, req, envelope, headers, &caller).await,
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
        "tasks/get" | "tasks/update" | "tasks/cancel" => {
            Some(("taskId", params.get("taskId").and_then(Value::as_str)))
        }
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
        // Tasks of 2026 upstreams pass through (crate::tasks); the
        // session-era `tasks` capability is a different wire.
        c.remove("tasks");
        if gw.modern_tasks() {
            c.insert("extensions".into(), json!({crate::tasks::EXTENSION: {}}));
        }
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

/// Passes a request's messages to its response, dropping logs the client did
/// not ask for. A request an upstream sends to the client (elicitation,
/// sampling, roots) cannot travel on a 2026 stream: it goes to `inputs`, to be
/// asked as an `input_required` result.
struct RequestOut {
    tx: mpsc::UnboundedSender<String>,
    inputs: Option<mpsc::UnboundedSender<(String, Value)>>,
    logs: bool,
}

impl Outbound for RequestOut {
    fn send(&self, msg: String) -> bool {
        if !self.logs && msg.starts_with(r#"{"jsonrpc":"2.0","method":"notifications/message""#) {
            return true;
        }
        if let Some(inputs) = &self.inputs
            && let Ok(Message::Request(r)) = Message::parse(msg.as_bytes())
        {
            let key = match &r.id {
                Id::Str(s) => s.clone(),
                Id::Num(n) => n.to_string(),
            };
            let mut req = json!({"method": r.method});
            if let Some(p) = r.params {
                req["params"] = serde_json::from_str(p.get()).unwrap_or(Value::Null);
            }
            return inputs.send((key, req)).is_ok();
        }
        self.tx.send(msg).is_ok()
    }
}

/// The outcome of a call: a shaped result, or an error object and its code.
type Outcome = Result<String, (String, i64)>;

/// A call in flight. Dropping it cancels the call, unless it is parked
/// waiting for the client's input.
pub(crate) struct Flight {
    abort: AbortHandle,
    done: tokio::sync::oneshot::Receiver<Outcome>,
    notes: mpsc::UnboundedReceiver<String>,
    inputs: mpsc::UnboundedReceiver<(String, Value)>,
    sess: Arc<Session>,
    method: String,
    target: String,
    /// Input requests asked and not answered yet, by key.
    asked: Vec<(String, Value)>,
}

impl Drop for Flight {
    fn drop(&mut self) {
        self.abort.abort();
    }
}

enum Step {
    Note(String),
    Input,
    Done(Outcome),
    Gone,
}

impl Flight {
    /// The next thing that happens: a message for the client, input needed,
    /// or the answer. Messages sent before the answer come first.
    async fn next(&mut self) -> Step {
        tokio::select! {
            biased;
            Some(n) = self.notes.recv() => Step::Note(n),
            Some(i) = self.inputs.recv() => {
                self.asked.push(i);
                // Requests sent together are asked together.
                tokio::time::sleep(Duration::from_millis(20)).await;
                while let Ok(i) = self.inputs.try_recv() {
                    self.asked.push(i);
                }
                Step::Input
            }
            d = &mut self.done => match d {
                Ok(o) => Step::Done(o),
                Err(_) => Step::Gone,
            },
        }
    }
}

/// Calls parked on `input_required`, by key, and the key that signs their state.
pub(crate) struct Parked {
    calls: std::sync::Mutex<std::collections::HashMap<String, (std::time::Instant, Flight)>>,
    key: Vec<u8>,
}

/// Marks the states this gateway signs; others belong to a 2026 upstream and
/// are passed back to it untouched.
const STATE_PREFIX: &str = "sluice1.";

/// How long a parked call waits for the client's retry.
const PARK_FOR: Duration = Duration::from_secs(600);

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

impl Parked {
    pub(crate) fn new(key: Option<sluice_config::Secret>) -> Self {
        let key = match key {
            Some(k) => k.expose().as_bytes().to_vec(),
            None => uuid::Uuid::new_v4()
                .as_bytes()
                .iter()
                .chain(uuid::Uuid::new_v4().as_bytes())
                .copied()
                .collect(),
        };
        Parked {
            calls: std::sync::Mutex::new(std::collections::HashMap::new()),
            key,
        }
    }

    fn park(&self, key: String, f: Flight) {
        let mut calls = self.calls.lock().unwrap();
        calls.retain(|_, (t, _)| t.elapsed() < PARK_FOR);
        calls.insert(key, (std::time::Instant::now(), f));
    }

    fn take(&self, key: &str) -> Option<Flight> {
        let (t, f) = self.calls.lock().unwrap().remove(key)?;
        (t.elapsed() < PARK_FOR).then_some(f)
    }

    pub(crate) fn mac(&self, payload: &str) -> String {
        use hmac::Mac;
        let mut m = HmacSha256::new_from_slice(&self.key).expect("any key length");
        m.update(payload.as_bytes());
        URL_SAFE_NO_PAD.encode(m.finalize().into_bytes())
    }

    /// `v1.{claims}.{hmac}`: which replica holds the call, its key, what it
    /// answers (method and name), and when it expires.
    fn sign(&self, replica: &str, key: &str, method: &str, target: &str) -> String {
        let exp = crate::session::now_ms() + PARK_FOR.as_millis() as u64;
        let claims = URL_SAFE_NO_PAD.encode(
            json!({"r": replica, "k": key, "m": method, "t": target, "e": exp}).to_string(),
        );
        let mac = self.mac(&claims);
        format!("{STATE_PREFIX}{claims}.{mac}")
    }

    /// The claims of a state this gateway (or a replica sharing its key) signed.
    fn verify(&self, state: &str) -> Option<Value> {
        use hmac::Mac;
        let rest = state.strip_prefix(STATE_PREFIX)?;
        let (claims, mac) = rest.split_once('.')?;
        let mut m = HmacSha256::new_from_slice(&self.key).expect("any key length");
        m.update(claims.as_bytes());
        m.verify_slice(&URL_SAFE_NO_PAD.decode(mac).ok()?).ok()?;
        let v: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).ok()?).ok()?;
        (v["e"].as_u64()? > crate::session::now_ms()).then_some(v)
    }
}

/// Why a retry's state no longer names a parked call.
const CALL_ENDED: &str =
    "its call already completed or waited too long; send the request again without requestState";

pub(crate) fn invalid_state(reason: &str) -> RpcError {
    RpcError::invalid_params(format!("Invalid or expired requestState: {reason}"))
        .with_data(json!({"reason": "invalid_request_state"}))
}

/// A stateless call: answered by the gateway core with a session made for
/// this one request (or resumed, for a retry carrying `requestState`).
async fn call(
    gw: &Arc<Gateway>,
    req: Request,
    mut env: Envelope,
    headers: &HeaderMap,
    caller: &Caller,
) -> Response {
    let method = req.method.clone();
    if method == "tools/call"
        && let Err(e) = check_param_headers(gw, headers, &env.params)
    {
        return error(Some(&req.id), e);
    }
    let target = env
        .params
        .get(match method.as_str() {
            "resources/read" => "uri",
            "tasks/get" | "tasks/update" | "tasks/cancel" => "taskId",
            _ => "name",
        })
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let accepts_sse = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/event-stream") || v.contains("*/*"));

    let ours = env
        .params
        .get("requestState")
        .and_then(Value::as_str)
        .is_some_and(|s| s.starts_with(STATE_PREFIX));
    let (state, responses) = if ours
        || env
            .params
            .get("requestState")
            .is_some_and(|s| !s.is_string())
    {
        (
            env.params.remove("requestState"),
            env.params.remove("inputResponses"),
        )
    } else {
        // No state, or a 2026 upstream's own: the upstream continues its call.
        (None, None)
    };
    let flight = match state {
        Some(Value::String(state)) => {
            let Some(claims) = gw.parked.verify(&state) else {
                return error(
                    Some(&req.id),
                    invalid_state("it was altered, or it expired"),
                );
            };
            if claims["m"] != method.as_str() || claims["t"] != target.as_str() {
                return error(
                    Some(&req.id),
                    invalid_state("it belongs to another request"),
                );
            }
            let key = claims["k"].as_str().unwrap_or_default();
            if claims["r"] != gw.replica() {
                // The call is parked on another replica: it continues there.
                let holder = claims["r"].as_str().unwrap_or_default();
                return crate::relay::relay_retry(gw, holder, key, &req.id, responses).await;
            }
            let Some(mut f) = gw.parked.take(key) else {
                return error(Some(&req.id), invalid_state(CALL_ENDED));
            };
            answer_inputs(&mut f, responses.as_ref());
            f
        }
        Some(_) => return error(Some(&req.id), invalid_state("it must be a string")),
        None => start(gw, &method, target, env, caller),
    };
    drive(gw, req.id, flight, accepts_sse).await
}

/// Starts a call on its own task.
fn start(
    gw: &Arc<Gateway>,
    method: &str,
    target: String,
    env: Envelope,
    caller: &Caller,
) -> Flight {
    let sess = Arc::new(Session::new(
        format!("stateless-{}", uuid::Uuid::new_v4().simple()).into(),
        MODERN,
        env.capabilities,
        env.client_info,
        caller,
    ));
    *sess.log_level.lock().unwrap() = env.log_level.clone();
    let (tx, notes) = mpsc::unbounded_channel::<String>();
    let (inputs_tx, inputs) = mpsc::unbounded_channel();
    let out: Arc<dyn Outbound> = Arc::new(RequestOut {
        tx,
        inputs: Some(inputs_tx),
        logs: env.log_level.is_some(),
    });
    let params = raw(Value::Object(env.params).to_string());
    let (done_tx, done) = tokio::sync::oneshot::channel::<Outcome>();
    let (g, s, m) = (gw.clone(), sess.clone(), method.to_string());
    let task = tokio::spawn(async move {
        let mut ctx = crate::pipeline::RequestCtx::new(&s, &m, out);
        let outcome = match g.serve(&mut ctx, Some(&params)).await {
            Ok(result) => Ok(shape_result(&m, result.get())),
            Err(error) => Err(shape_error(&error)),
        };
        let _ = done_tx.send(outcome);
    });
    Flight {
        abort: task.abort_handle(),
        done,
        notes,
        inputs,
        sess,
        method: method.to_string(),
        target,
        asked: Vec::new(),
    }
}

/// Continues a call parked here for a retry another replica relayed
/// (`crate::relay`): its answer as `drive` gives it to a client that takes
/// no stream, as a response line and its HTTP status.
pub(crate) async fn continue_parked(
    gw: &Gateway,
    id: &Id,
    key: &str,
    responses: Option<&Value>,
) -> (String, StatusCode) {
    let Some(mut f) = gw.parked.take(key) else {
        return error_line(id, invalid_state(CALL_ENDED));
    };
    answer_inputs(&mut f, responses);
    settle(gw, id, f).await
}

/// Hands the client's answers to the upstream requests waiting for them.
fn answer_inputs(f: &mut Flight, responses: Option<&Value>) {
    let Some(Value::Object(responses)) = responses else {
        return;
    };
    let mut awaiting = f.sess.awaiting.lock().unwrap();
    f.asked.retain(|(key, _)| {
        let Some(answer) = responses.get(key) else {
            return true;
        };
        if let Some(reply) = awaiting.remove(&Id::Str(key.clone())) {
            let _ = reply.send(Ok(raw(answer.to_string())));
        }
        false
    });
}

fn outcome_line(id: &Id, o: &Outcome) -> (String, StatusCode) {
    match o {
        Ok(result) => (jsonrpc::response_ok(id, result), StatusCode::OK),
        Err((err, code)) => (jsonrpc::response_err(Some(id), err), status_for(*code)),
    }
}

/// Parks the call and builds its `input_required` answer.
fn input_required(gw: &Gateway, id: &Id, f: Flight) -> String {
    let key = uuid::Uuid::new_v4().simple().to_string();
    let state = gw.parked.sign(gw.replica(), &key, &f.method, &f.target);
    let requests: Map<String, Value> = f.asked.iter().cloned().collect();
    let result = json!({
        "resultType": "input_required",
        "inputRequests": requests,
        "requestState": state,
        "_meta": server_info_meta(),
    });
    gw.parked.park(key, f);
    jsonrpc::response_ok(id, &result.to_string())
}

fn error_line(id: &Id, err: RpcError) -> (String, StatusCode) {
    (
        jsonrpc::response_err(Some(id), &err.to_json()),
        status_for(err.code),
    )
}

/// Runs a call until its answer or its next need for input; interim
/// messages are not sent. The answer for a client that takes no stream.
async fn settle(gw: &Gateway, id: &Id, mut f: Flight) -> (String, StatusCode) {
    if !f.asked.is_empty() {
        // Answers to only some of the questions: ask the rest again.
        return (input_required(gw, id, f), StatusCode::OK);
    }
    loop {
        match f.next().await {
            Step::Note(_) => {}
            Step::Input => return (input_required(gw, id, f), StatusCode::OK),
            Step::Done(o) => return outcome_line(id, &o),
            Step::Gone => {
                return error_line(id, RpcError::internal("the call ended without an answer"));
            }
        }
    }
}

/// Answers a call: plain JSON when the answer (or a need for input) comes
/// first and within `sessions.sse_after`, else an SSE stream (if the client
/// takes one) with keep-alives while the call is quiet. Closing the response
/// cancels the call.
async fn drive(gw: &Arc<Gateway>, id: Id, f: Flight, accepts_sse: bool) -> Response {
    if !accepts_sse {
        let (line, status) = settle(gw, &id, f).await;
        return json_line(line, status);
    }
    if !f.asked.is_empty() {
        // Answers to only some of the questions: ask the rest again.
        return json_line(input_required(gw, &id, f), StatusCode::OK);
    }
    use futures_util::StreamExt;
    let lines = flight_lines(gw.clone(), id, f);
    match crate::respond::first(lines, gw.config.sessions.sse_after, |l| l.last).await {
        crate::respond::First::Answer(l) => json_line(l.text, l.status),
        // `flight_lines` always ends with an answer; this is only for completeness.
        crate::respond::First::Nothing => {
            error(None, RpcError::internal("the call ended without an answer"))
        }
        crate::respond::First::Stream(queued, rest) => {
            let head: String = queued.iter().map(|l| sse::event(None, &l.text)).collect();
            let events = rest.map(|l| sse::event(None, &l.text));
            crate::respond::sse(head, events, gw.config.sessions.sse_keepalive, ())
        }
    }
}

/// One line of a call's answer: a message sent while it runs, or the final
/// one (result, error, or `input_required`) with its HTTP status.
struct Line {
    text: String,
    status: StatusCode,
    last: bool,
}

/// A call's lines as they come, ending with the final one. The flight lives
/// in the stream: dropping the stream before the end cancels the call, and a
/// need for input parks it.
fn flight_lines(gw: Arc<Gateway>, id: Id, f: Flight) -> stream::BoxStream<'static, Line> {
    use futures_util::StreamExt;
    stream::unfold(Some(f), move |f| {
        let (gw, id) = (gw.clone(), id.clone());
        async move {
            let mut f = f?;
            let line = |text, status| Line {
                text,
                status,
                last: true,
            };
            let (l, rest) = match f.next().await {
                Step::Note(n) => (
                    Line {
                        text: n,
                        status: StatusCode::OK,
                        last: false,
                    },
                    Some(f),
                ),
                Step::Input => (line(input_required(&gw, &id, f), StatusCode::OK), None),
                Step::Done(o) => {
                    let (text, status) = outcome_line(&id, &o);
                    (line(text, status), None)
                }
                Step::Gone => {
                    let (text, status) =
                        error_line(&id, RpcError::internal("the call ended without an answer"));
                    (line(text, status), None)
                }
            };
            Some((l, rest))
        }
    })
    .boxed()
}

pub(crate) fn json_line(line: String, status: StatusCode) -> Response {
    // A refusal that says when to come back says it in the header too.
    let retry_after = (status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::SERVICE_UNAVAILABLE)
        .then(|| retry_after_secs(&line))
        .flatten();
    let mut r = (status, [(header::CONTENT_TYPE, "application/json")], line).into_response();
    if let Some(secs) = retry_after {
        r.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
    }
    r
}

/// `error.data.retryAfterSeconds` of a JSON-RPC error response line.
fn retry_after_secs(line: &str) -> Option<u64> {
    let v: Value = serde_json::from_str(line).ok()?;
    v.pointer("/error/data/retryAfterSeconds")?.as_u64()
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
                        inputs: None,
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
async fn listen(
    gw: &Arc<Gateway>,
    headers: &HeaderMap,
    req: Request,
    env: Envelope,
    caller: &Caller,
) -> Response {
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
        caller,
    ));
    // Subscribe upstream to the resources asked for (session-era upstreams need it).
    let mut subscribed = Vec::new();
    for uri in &filter.uris {
        let params = raw(json!({"uri": uri}).to_string());
        let out: Arc<dyn Outbound> = Arc::new(RequestOut {
            tx: mpsc::unbounded_channel().0,
            inputs: None,
            logs: false,
        });
        match gw
            .dispatch(&sess, "resources/subscribe", Some(&params), &out)
            .await
        {
            Ok(_) => subscribed.push(json!(uri)),
            Err(e) => {
                tracing::info!(%uri, error = %crate::rescue::error_json(&e), "resource subscription not honored")
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
    use futures_util::StreamExt;
    let events =
        tokio_stream::wrappers::UnboundedReceiverStream::new(rx).map(|m| sse::event(None, &m));
    crate::respond::sse(
        String::new(),
        events,
        gw.config.sessions.sse_keepalive,
        guard,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

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
