//! Streamable HTTP front end (protocol 2025-11-25 and earlier session eras).
//!
//! `POST /mcp` carries one JSON-RPC message; a request is answered with JSON
//! when the upstream answers before sending anything else and within
//! `sessions.sse_after`, and with an SSE stream (priming event, keep-alives)
//! otherwise. `GET /mcp` opens the session's standalone stream or
//! resumes a broken one (`Last-Event-ID`); `DELETE /mcp` ends the session.
//! Every response to a request on `/mcp` passes the Origin and Host checks.

use crate::gateway::Gateway;
use crate::modern;
use crate::respond::{self, First};
use crate::session::{Caller, Outbound, Persist, Session, StreamItem};
use crate::sessions::CreateError;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::stream::{self, BoxStream, StreamExt};
use serde_json::json;
use sluice_auth::{Authenticator, Denied};
use sluice_config::Listen;
use sluice_mcp::jsonrpc::{self, Message};
use sluice_mcp::version::{self, header as mcp_header};
use sluice_mcp::{RpcError, sse};
use sluice_pipeline::Principal;
use sluice_store::StreamMeta;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

#[derive(Clone)]
struct AppState {
    gw: Arc<Gateway>,
    guard: Arc<Guard>,
    /// Present when `auth.mode = "required"`: every request to `/mcp` must
    /// authenticate.
    auth: Option<Arc<Authenticator>>,
}

/// Origin and Host validation against DNS rebinding.
struct Guard {
    allowed_origins: Vec<String>,
    allowed_hosts: Vec<String>,
    max_body: usize,
}

/// The router: `/mcp`, `/healthz`, `/readyz`, and with `auth` the
/// protected-resource metadata (RFC 9728) at its root and path-inserted forms.
pub(crate) fn router(gw: Arc<Gateway>, auth: Option<Arc<Authenticator>>) -> Router {
    let listen: &Listen = &gw.config.listen;
    let guard = Arc::new(Guard {
        allowed_origins: listen.allowed_origins.clone(),
        allowed_hosts: listen
            .allowed_hosts
            .iter()
            .map(|h| h.to_ascii_lowercase())
            .collect(),
        max_body: listen.max_body_bytes,
    });
    let mut r = Router::new();
    if auth.is_some() {
        r = r
            .route(sluice_auth::METADATA_PREFIX, get(resource_metadata))
            .route(
                &format!("{}/mcp", sluice_auth::METADATA_PREFIX),
                get(resource_metadata),
            );
    }
    r.route("/mcp", get(get_mcp).post(post_mcp).delete(delete_mcp))
        .route(
            "/healthz",
            get(|| async { json_response(json!({"status": "ok"}).to_string()) }),
        )
        .route("/readyz", get(readyz))
        .route("/admin/servers", get(admin_servers))
        .route("/metrics", get(metrics))
        .with_state(AppState { gw, guard, auth })
}

/// Serves until `shutdown` resolves; ends idle sessions in the background.
/// With `auth`, requests to `/mcp` must authenticate.
pub async fn serve(
    gw: Arc<Gateway>,
    auth: Option<Arc<Authenticator>>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let idle = gw.config.sessions.idle_timeout;
    let weak = Arc::downgrade(&gw);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(15).min(idle));
        loop {
            tick.tick().await;
            let Some(gw) = weak.upgrade() else { return };
            let n = gw.evict_idle(idle).await;
            if n > 0 {
                tracing::info!(sessions = n, "ended idle sessions");
            }
        }
    });
    let app = router(gw, auth).into_make_service_with_connect_info::<std::net::SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

// ----- errors on the wire ----------------------------------------------------

/// A request refused before it reaches the gateway core: an HTTP status and
/// the JSON-RPC error that explains it.
struct Rejection(StatusCode, RpcError);

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        let body = jsonrpc::response_err(None, &self.1.to_json());
        let mut r = (self.0, [(header::CONTENT_TYPE, "application/json")], body).into_response();
        if self.0 == StatusCode::SERVICE_UNAVAILABLE {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
        }
        r
    }
}

fn rpc_error(status: StatusCode, err: RpcError) -> Response {
    Rejection(status, err).into_response()
}

fn json_response(body: String) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

// ----- checks ----------------------------------------------------------------

fn is_loopback_host(host: &str) -> bool {
    matches!(host, "localhost" | "127.0.0.1" | "::1" | "[::1]")
}

/// The host part of `host[:port]` or `[v6]:port`.
fn strip_port(hostport: &str) -> &str {
    if let Some(rest) = hostport.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match hostport.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => hostport,
    }
}

impl Guard {
    fn check(&self, headers: &HeaderMap) -> Result<(), Rejection> {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default()
            .to_ascii_lowercase();
        let name = strip_port(&host);
        let host_ok = is_loopback_host(name)
            || self
                .allowed_hosts
                .iter()
                .any(|a| a == "*" || *a == host || *a == name);
        if !host_ok {
            return Err(Rejection(
                StatusCode::FORBIDDEN,
                RpcError::invalid_request(format!(
                    "Forbidden: Host `{host}` is not allowed (see listen.allowed_hosts)"
                )),
            ));
        }
        if let Some(origin) = headers.get(header::ORIGIN) {
            let origin = origin.to_str().unwrap_or_default();
            let o_host = origin
                .split_once("://")
                .map(|(_, rest)| strip_port(rest.split('/').next().unwrap_or_default()))
                .unwrap_or_default();
            let ok = (origin.starts_with("http://") || origin.starts_with("https://"))
                && is_loopback_host(o_host)
                || self.allowed_origins.iter().any(|a| a == "*" || a == origin);
            if !ok {
                return Err(Rejection(
                    StatusCode::FORBIDDEN,
                    RpcError::invalid_request(format!(
                        "Forbidden: Origin `{origin}` is not allowed (see listen.allowed_origins)"
                    )),
                ));
            }
        }
        Ok(())
    }
}

// ----- authentication ---------------------------------------------------------

/// The principal of a request to `/mcp`: `None` when authentication is off,
/// or the refusal (400, 401, 403, 503) with its `WWW-Authenticate` challenge.
/// The token is never logged, echoed or forwarded.
async fn authenticate(
    st: &AppState,
    headers: &HeaderMap,
    uri: &Uri,
) -> Result<Option<Principal>, Response> {
    let Some(auth) = &st.auth else {
        return Ok(None);
    };
    let verdict = match auth.check_query(uri.query()) {
        Err(d) => Err(d),
        Ok(()) => {
            auth.authenticate(
                headers
                    .get_all(header::AUTHORIZATION)
                    .iter()
                    .map(HeaderValue::as_bytes),
            )
            .await
        }
    };
    match verdict {
        Ok(p) => Ok(Some(p)),
        Err(d) => {
            refused(&st.gw, d.code(), &d);
            Err(denied(auth, &d))
        }
    }
}

/// Logs and counts an authentication refusal like any stage decision
/// (`sluice_stage_decisions_total{stage="authenticate"}`).
fn refused(gw: &Gateway, decision: &'static str, reason: &dyn std::fmt::Display) {
    gw.metrics
        .stage_decisions
        .get_or_create(&crate::metrics::StageLabels {
            stage: "authenticate",
            decision,
        })
        .inc();
    tracing::info!(stage = "authenticate", decision, %reason, "stage decision");
}

/// A refusal on the wire: the status, the challenge, and a JSON-RPC error
/// naming what was wrong (`data.sluice.code`).
fn denied(auth: &Authenticator, d: &Denied) -> Response {
    let status = StatusCode::from_u16(d.status()).unwrap_or(StatusCode::UNAUTHORIZED);
    let reason = status.canonical_reason().unwrap_or("Unauthorized");
    let err = RpcError::new(-32001, format!("{reason}: {d}"))
        .with_data(json!({"sluice": {"code": d.code()}}));
    let mut r = Rejection(status, err).into_response();
    if status != StatusCode::SERVICE_UNAVAILABLE
        && let Ok(v) = HeaderValue::from_str(&auth.challenge(d))
    {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    r
}

/// `GET /.well-known/oauth-protected-resource[/mcp]`: where to authenticate
/// and how (RFC 9728).
async fn resource_metadata(State(st): State<AppState>) -> Response {
    match &st.auth {
        Some(a) => json_response(a.metadata().to_string()),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// 404, as for an unknown session, when the session belongs to another
/// principal than the request's (its existence is not disclosed).
fn check_owner(
    gw: &Gateway,
    sess: &Session,
    principal: &Option<Principal>,
) -> Result<(), Rejection> {
    if sess.principal.as_deref() == principal.as_ref().map(|p| &*p.id) {
        sess.set_authenticated(principal.clone());
        return Ok(());
    }
    let who = principal.as_ref().map_or("no principal", |p| &*p.id);
    refused(
        gw,
        "session_of_another_principal",
        &format_args!(
            "{who} presented session {}, which belongs to another principal",
            sess.id
        ),
    );
    Err(Rejection(
        StatusCode::NOT_FOUND,
        RpcError::new(
            -32001,
            "Session not found: it ended or never existed; initialize a new session",
        ),
    ))
}

/// The session named by `Mcp-Session-Id`: 400 when absent, 404 when unknown
/// or ended, 503 when the session store cannot be reached.
async fn session(gw: &Gateway, headers: &HeaderMap) -> Result<Arc<Session>, Rejection> {
    let Some(id) = headers.get(mcp_header::SESSION_ID) else {
        return Err(Rejection(
            StatusCode::BAD_REQUEST,
            RpcError::invalid_request(
                "Bad Request: the Mcp-Session-Id header is required; send initialize first",
            ),
        ));
    };
    let id = id.to_str().unwrap_or_default();
    match gw.find_session(id).await {
        Ok(Some(s)) => Ok(s),
        Ok(None) => Err(Rejection(
            StatusCode::NOT_FOUND,
            RpcError::new(
                -32001,
                "Session not found: it ended or never existed; initialize a new session",
            ),
        )),
        Err(e) => Err(store_unavailable(&e)),
    }
}

/// 503 naming the store; the client may retry shortly.
fn store_unavailable(e: &sluice_store::StoreError) -> Rejection {
    Rejection(
        StatusCode::SERVICE_UNAVAILABLE,
        RpcError::internal(format!("Service Unavailable: {e}; retry shortly")),
    )
}

/// Rejects an unsupported `MCP-Protocol-Version` header with 400.
fn check_version(headers: &HeaderMap) -> Result<(), Rejection> {
    match headers.get(mcp_header::PROTOCOL_VERSION) {
        None => Ok(()),
        Some(v) => {
            let v = v.to_str().unwrap_or_default();
            if version::supported(v).is_some() {
                Ok(())
            } else {
                Err(Rejection(
                    StatusCode::BAD_REQUEST,
                    RpcError::invalid_request(format!(
                        "Bad Request: unsupported MCP-Protocol-Version `{v}`; supported: {}",
                        version::SUPPORTED.join(", ")
                    )),
                ))
            }
        }
    }
}

fn accepts(headers: &HeaderMap, what: &str) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains(what) || v.contains("*/*"))
}

// ----- POST -------------------------------------------------------------------

async fn post_mcp(State(st): State<AppState>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let headers = parts.headers;
    let remote = parts
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0);
    if let Err(r) = st.guard.check(&headers) {
        return r.into_response();
    }
    let principal = match authenticate(&st, &headers, &parts.uri).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let ct_ok = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !ct_ok {
        return rpc_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            RpcError::invalid_request(
                "Unsupported Media Type: Content-Type must be application/json",
            ),
        );
    }
    if headers.contains_key(header::ACCEPT)
        && !accepts(&headers, "application/json")
        && !accepts(&headers, "text/event-stream")
    {
        return rpc_error(
            StatusCode::NOT_ACCEPTABLE,
            RpcError::invalid_request(
                "Not Acceptable: Accept must include application/json and text/event-stream",
            ),
        );
    }
    let bytes: Bytes = match axum::body::to_bytes(body, st.guard.max_body).await {
        Ok(b) => b,
        Err(_) => {
            return rpc_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                RpcError::invalid_request(format!(
                    "Payload Too Large: the request body exceeds {} bytes (listen.max_body_bytes)",
                    st.guard.max_body
                )),
            );
        }
    };
    if modern::selects_modern(&headers) {
        let caller = Caller { remote, principal };
        return modern::post(&st.gw, &headers, bytes, caller).await;
    }
    let msg = match Message::parse(&bytes) {
        Ok(m) => m,
        Err(f) => {
            let body = jsonrpc::response_err(f.id.as_ref(), &f.error.to_json());
            return (
                StatusCode::BAD_REQUEST,
                [(header::CONTENT_TYPE, "application/json")],
                body,
            )
                .into_response();
        }
    };
    if let Message::Request(r) = &msg
        && r.method == "initialize"
    {
        let caller = Caller { remote, principal };
        return initialize(&st.gw, r, &caller).await;
    }
    let sess = match session(&st.gw, &headers).await {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    if let Err(r) = check_owner(&st.gw, &sess, &principal) {
        return r.into_response();
    }
    if let Err(r) = check_version(&headers) {
        return r.into_response();
    }
    sess.touch();
    sess.set_remote(remote);
    match msg {
        Message::Notification(n) => {
            st.gw.handle_notification(&sess, n).await;
            StatusCode::ACCEPTED.into_response()
        }
        Message::Response(r) => {
            st.gw.handle_response(&sess, r);
            StatusCode::ACCEPTED.into_response()
        }
        Message::Request(r) => {
            request(&st.gw, sess, r, accepts(&headers, "text/event-stream")).await
        }
    }
}

async fn initialize(gw: &Arc<Gateway>, req: &jsonrpc::Request, caller: &Caller) -> Response {
    // Instructions held back may have been approved meanwhile.
    if gw.config.servers.iter().any(|s| s.pinning) {
        gw.refresh_instructions(true).await;
    }
    let init = match gw.initialize(req.params.as_deref()) {
        Ok(i) => i,
        Err(e) => return json_response(jsonrpc::response_err(Some(&req.id), &e.to_json())),
    };
    let version = init.protocol_version;
    let result = init.result.clone();
    let sess = match gw.create_session(init, caller).await {
        Ok(s) => s,
        Err(CreateError::Full(max)) => {
            return rpc_error(
                StatusCode::SERVICE_UNAVAILABLE,
                RpcError::internal(format!(
                    "Service Unavailable: the session limit ({max}, sessions.max_sessions) is reached; retry later"
                )),
            );
        }
        Err(CreateError::Store(e)) => return store_unavailable(&e).into_response(),
    };
    tracing::info!(session = %sess.id, version, "session started");
    let mut resp = json_response(jsonrpc::response_ok(&req.id, &result));
    resp.headers_mut().insert(
        mcp_header::SESSION_ID,
        HeaderValue::from_str(&sess.id).expect("uuid is a valid header"),
    );
    resp
}

/// Refuses a new SSE stream when the gateway or the session has too many.
fn stream_capacity(gw: &Gateway, sess: &Session) -> Result<(), Rejection> {
    let cfg = &gw.config.sessions;
    let open = gw.open_streams.load(std::sync::atomic::Ordering::Relaxed);
    if open >= cfg.max_streams {
        return Err(Rejection(
            StatusCode::SERVICE_UNAVAILABLE,
            RpcError::internal(format!(
                "Service Unavailable: {open} SSE streams are open, the limit of sessions.max_streams; retry later"
            )),
        ));
    }
    let mine = sess.streams.lock().unwrap().open_count();
    if mine >= cfg.max_streams_per_session {
        return Err(Rejection(
            StatusCode::SERVICE_UNAVAILABLE,
            RpcError::internal(format!(
                "Service Unavailable: this session has {mine} SSE streams open, the limit of sessions.max_streams_per_session; close one or retry later"
            )),
        ));
    }
    Ok(())
}

/// Serves a request: JSON if the answer comes first and within
/// `sessions.sse_after`, else an SSE stream that starts with a priming event
/// (its id lets the client resume on any replica) and carries keep-alives
/// while the call is quiet.
async fn request(
    gw: &Arc<Gateway>,
    sess: Arc<Session>,
    req: jsonrpc::Request,
    sse_ok: bool,
) -> Response {
    let log = sess
        .streams
        .lock()
        .unwrap()
        .open(&gw.replica, gw.config.sessions.replay_events);
    let (_, rx) = log.attach(0);
    let request_id = req.id.to_json();
    let done_log = log.clone();
    let done_sess = sess.clone();
    let out: Arc<dyn Outbound> = log.clone();
    gw.spawn_request(&sess, req, out, move |line| {
        match line {
            Some(l) => {
                done_log.push(l, true);
            }
            None => done_log.finish_without_message(),
        }
        done_sess
            .streams
            .lock()
            .unwrap()
            .finished(done_log.id.clone());
    });
    let events = live_events(rx);
    if !sse_ok {
        // The client cannot take a stream: wait for the answer; interim
        // messages stay in the replay log only.
        return answer_without_stream(&sess, Vec::new(), events).await;
    }
    let (queued, rest) =
        match respond::first(events, gw.config.sessions.sse_after, |e| e.last).await {
            // Cancelled: no response is sent for a cancelled request.
            First::Nothing => return StatusCode::ACCEPTED.into_response(),
            First::Answer(e) => {
                // The answer came first and alone: plain JSON, no stream to keep.
                sess.streams.lock().unwrap().forget(&log.id);
                return json_response(e.msg.to_string());
            }
            First::Stream(queued, rest) => (queued, rest),
        };
    if stream_capacity(gw, &sess).is_err() {
        // Too many streams are open: answer as if the client took none.
        return answer_without_stream(&sess, queued, rest).await;
    }
    log.persist(Persist {
        writer: gw.writer.clone(),
        session: sess.id.clone(),
        meta: StreamMeta {
            owner: gw.replica.to_string(),
            request_id: Some(request_id),
            done: false,
        },
    });
    let mut head = priming(&log.id);
    for e in &queued {
        head.push_str(&e.frame(&log.id));
    }
    sse_body(gw, &log.id, head, rest)
}

/// Waits for a request's answer and sends it as plain JSON (202 if it was
/// cancelled without one).
async fn answer_without_stream(
    sess: &Session,
    queued: Vec<LogEvent>,
    mut rest: BoxStream<'static, LogEvent>,
) -> Response {
    let mut last = queued.into_iter().last().map(|e| e.msg);
    while let Some(e) = rest.next().await {
        last = Some(e.msg);
    }
    match last {
        Some(m) => {
            tracing::debug!(session = %sess.id, "answered without a stream; interim messages not sent");
            json_response(m.to_string())
        }
        None => StatusCode::ACCEPTED.into_response(),
    }
}

/// One event of a stream's log as its reader gets it; `last` marks the
/// answer, which the log sends together with the end of the stream.
struct LogEvent {
    seq: u64,
    msg: Arc<str>,
    last: bool,
}

impl LogEvent {
    /// The event on the wire, with its id `{stream}-{seq}`.
    fn frame(&self, stream_id: &str) -> String {
        sse::event(Some(&format!("{stream_id}-{}", self.seq)), &self.msg)
    }
}

/// A stream's events as they reach its reader, ending with the stream.
fn live_events(rx: mpsc::UnboundedReceiver<StreamItem>) -> BoxStream<'static, LogEvent> {
    stream::unfold(
        (rx, None::<StreamItem>, false),
        |(mut rx, stash, ended)| async move {
            if ended {
                return None;
            }
            let item = match stash {
                Some(i) => i,
                None => rx.recv().await?,
            };
            let (seq, Some(msg)) = item else {
                return None;
            };
            let (last, stash) = match rx.try_recv() {
                Ok((_, None)) => (true, None),
                Ok(next) => (false, Some(next)),
                Err(_) => (false, None),
            };
            Some((LogEvent { seq, msg, last }, (rx, stash, last)))
        },
    )
    .boxed()
}

/// The priming event of a new stream: its first id (`{stream}-0`, empty
/// data) and how soon to reconnect, so a client whose connection breaks
/// before any message can still resume with `Last-Event-ID`.
fn priming(stream_id: &str) -> String {
    let mut head = String::from("retry: 1000\n");
    head.push_str(&sse::event(Some(&format!("{stream_id}-0")), ""));
    head
}

/// An SSE body: an optional priming event, queued events, then live ones.
fn sse_response(
    gw: &Arc<Gateway>,
    stream_id: &str,
    prime: bool,
    queued: Vec<StreamItem>,
    rx: mpsc::UnboundedReceiver<StreamItem>,
) -> Response {
    let mut head = if prime {
        priming(stream_id)
    } else {
        String::new()
    };
    let mut ended = false;
    for (seq, m) in queued {
        match m {
            Some(m) => head.push_str(&sse::event(Some(&format!("{stream_id}-{seq}")), &m)),
            None => ended = true,
        }
    }
    let live = if ended {
        stream::empty().boxed()
    } else {
        live_events(rx)
    };
    sse_body(gw, stream_id, head, live)
}

/// The shared SSE body (`respond::sse`) for a stream of this session era,
/// counted among the open streams while the client reads it.
fn sse_body(
    gw: &Arc<Gateway>,
    stream_id: &str,
    head: String,
    live: BoxStream<'static, LogEvent>,
) -> Response {
    let stream_id: Arc<str> = stream_id.into();
    let events = live.map(move |e| e.frame(&stream_id));
    respond::sse(
        head,
        events,
        gw.config.sessions.sse_keepalive,
        OpenStream::new(gw.clone()),
    )
}

/// Counts an open SSE stream for as long as its body lives.
struct OpenStream(Arc<Gateway>);

impl OpenStream {
    fn new(gw: Arc<Gateway>) -> Self {
        gw.open_streams
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        OpenStream(gw)
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0
            .open_streams
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

// ----- GET --------------------------------------------------------------------

async fn get_mcp(State(st): State<AppState>, uri: Uri, headers: HeaderMap) -> Response {
    if let Err(r) = st.guard.check(&headers) {
        return r.into_response();
    }
    let principal = match authenticate(&st, &headers, &uri).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    if modern::selects_modern(&headers) {
        return not_in_2026();
    }
    if !accepts(&headers, "text/event-stream") {
        return rpc_error(
            StatusCode::NOT_ACCEPTABLE,
            RpcError::invalid_request(
                "Not Acceptable: GET /mcp opens an SSE stream; Accept must include text/event-stream",
            ),
        );
    }
    let sess = match session(&st.gw, &headers).await {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    if let Err(r) = check_owner(&st.gw, &sess, &principal) {
        return r.into_response();
    }
    if let Err(r) = check_version(&headers) {
        return r.into_response();
    }
    sess.touch();
    if let Err(r) = stream_capacity(&st.gw, &sess) {
        return r.into_response();
    }
    if let Some(last) = headers.get(mcp_header::LAST_EVENT_ID) {
        let last = last.to_str().unwrap_or_default();
        let parsed = last
            .rsplit_once('-')
            .and_then(|(s, n)| Some((s.to_string(), n.parse::<u64>().ok()?)))
            .filter(|(s, _)| !s.is_empty());
        let Some((stream_id, seq)) = parsed else {
            return rpc_error(
                StatusCode::BAD_REQUEST,
                RpcError::invalid_request(format!(
                    "Bad Request: Last-Event-ID `{last}` is not an event id of this server"
                )),
            );
        };
        return resume(&st.gw, &sess, &stream_id, seq).await;
    }
    let log = {
        let mut streams = sess.streams.lock().unwrap();
        if let Some(cur) = streams
            .standalone
            .clone()
            .and_then(|id| streams.by_id.get(&id).cloned())
            && cur.has_reader()
        {
            return rpc_error(
                StatusCode::CONFLICT,
                RpcError::invalid_request("Conflict: this session already has an open GET stream"),
            );
        }
        let log = streams.open(&st.gw.replica, st.gw.config.sessions.replay_events);
        if let Some(old) = streams.standalone.replace(log.id.clone()) {
            streams.forget(&old);
        }
        log
    };
    let (_, rx) = log.attach(0);
    sess.set_unsolicited(Some(log.clone() as Arc<dyn Outbound>));
    log.persist(Persist {
        writer: st.gw.writer.clone(),
        session: sess.id.clone(),
        meta: StreamMeta {
            owner: st.gw.replica.to_string(),
            request_id: None,
            done: false,
        },
    });
    let owner = Some(st.gw.replica.to_string());
    if *sess.standalone_owner.lock().unwrap() != owner {
        *sess.standalone_owner.lock().unwrap() = owner;
        st.gw.save_session(&sess).await;
    }
    sse_response(&st.gw, &log.id, true, Vec::new(), rx)
}

/// Resumes a broken stream after event `seq`: from this replica's memory if
/// it holds the stream, else from the store, following it live while another
/// replica still writes it. A stream whose writer is gone ends with an error
/// for its request, so the client is never left waiting.
async fn resume(gw: &Arc<Gateway>, sess: &Arc<Session>, stream_id: &str, seq: u64) -> Response {
    let stream: Arc<str> = stream_id.into();
    let local = sess.streams.lock().unwrap().by_id.get(stream_id).cloned();
    if let Some(log) = local {
        let (replay, rx) = log.attach(seq);
        let queued = replay.into_iter().map(|(s, m)| (s, Some(m))).collect();
        return sse_response(gw, stream_id, false, queued, rx);
    }
    let store = gw.store();
    // Another replica writes its events a few milliseconds after sending
    // them: a client that reconnects at once may get here first.
    let mut found = store.get_stream(&sess.id, stream_id).await;
    for _ in 0..10 {
        if !matches!(found, Ok(None)) || stream_id.starts_with(gw.replica()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        found = store.get_stream(&sess.id, stream_id).await;
    }
    let meta = match found {
        Ok(Some(m)) => m,
        Ok(None) => {
            return rpc_error(
                StatusCode::NOT_FOUND,
                RpcError::invalid_request(format!(
                    "Not Found: stream `{stream_id}` is no longer kept; its events cannot be replayed"
                )),
            );
        }
        Err(e) => return store_unavailable(&e).into_response(),
    };
    // Follow first, then read the log, so no event falls between the two.
    let mut follow = match (meta.done, store.bus()) {
        (false, Some(bus)) => bus.follow(&sess.id, stream_id).await.ok(),
        _ => None,
    };
    let events = match store.events_after(&sess.id, stream_id, seq).await {
        Ok(e) => e,
        Err(e) => return store_unavailable(&e).into_response(),
    };
    let mut last_seq = seq;
    let mut queued: Vec<StreamItem> = Vec::with_capacity(events.len() + 1);
    for e in events {
        last_seq = last_seq.max(e.seq);
        queued.push((e.seq, Some(e.data.into())));
    }
    let (tx, rx) = mpsc::unbounded_channel();
    let finished = meta.done
        || !store
            .replica_alive(&meta.owner, gw.replica())
            .await
            .unwrap_or(false);
    if finished {
        let answered = queued.iter().any(|(_, m)| {
            m.as_deref()
                .is_some_and(|m| m.contains("\"result\"") || m.contains("\"error\""))
        });
        if !meta.done
            && !answered
            && let Some(id) = &meta.request_id
        {
            queued.push((last_seq + 1, Some(owner_gone(id).into())));
        }
        queued.push((0, None));
    } else if let Some(mut f) = follow.take() {
        let (gw, session, owner) = (gw.clone(), sess.id.clone(), meta.owner.clone());
        let request_id = meta.request_id.clone();
        tokio::spawn(async move {
            let mut check = tokio::time::interval(Duration::from_secs(2));
            check.tick().await;
            let mut last_seq = last_seq;
            loop {
                tokio::select! {
                    item = f.recv() => match item {
                        Some((s, Some(d))) if s > last_seq => {
                            last_seq = s;
                            if tx.send((s, Some(d.into()))).is_err() {
                                return;
                            }
                        }
                        Some((_, Some(_))) => {}
                        Some((_, None)) | None => {
                            let _ = tx.send((0, None));
                            return;
                        }
                    },
                    _ = check.tick() => {
                        // The writer may have died without finishing the stream.
                        if gw.store().replica_alive(&owner, gw.replica()).await.unwrap_or(true) {
                            continue;
                        }
                        let done = gw
                            .store()
                            .get_stream(&session, &stream)
                            .await
                            .ok()
                            .flatten()
                            .is_some_and(|m| m.done);
                        if !done && let Some(id) = &request_id {
                            let _ = tx.send((last_seq + 1, Some(owner_gone(id).into())));
                        }
                        let _ = tx.send((0, None));
                        return;
                    }
                }
            }
        });
    }
    sse_response(gw, stream_id, false, queued, rx)
}

/// The error a client gets for a request whose replica died before answering.
fn owner_gone(request_id: &str) -> String {
    let err = RpcError::internal(
        "the gateway instance serving this request stopped before it answered; the request may or may not have completed upstream",
    );
    format!(
        r#"{{"jsonrpc":"2.0","id":{request_id},"error":{}}}"#,
        err.to_json()
    )
}

/// GET streams and DELETE belong to sessions, which 2026-07-28 does not have.
fn not_in_2026() -> Response {
    let mut r = rpc_error(
        StatusCode::METHOD_NOT_ALLOWED,
        RpcError::invalid_request(
            "Method Not Allowed: MCP 2026-07-28 has no sessions; only POST is served for it",
        ),
    );
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("POST"));
    r
}

// ----- DELETE -----------------------------------------------------------------

async fn delete_mcp(State(st): State<AppState>, uri: Uri, headers: HeaderMap) -> Response {
    if let Err(r) = st.guard.check(&headers) {
        return r.into_response();
    }
    let principal = match authenticate(&st, &headers, &uri).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    if modern::selects_modern(&headers) {
        return not_in_2026();
    }
    let sess = match session(&st.gw, &headers).await {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    if let Err(r) = check_owner(&st.gw, &sess, &principal) {
        return r.into_response();
    }
    if let Err(e) = st.gw.end_session(&sess.id).await {
        return store_unavailable(&e).into_response();
    }
    tracing::info!(session = %sess.id, "session ended by the client");
    StatusCode::OK.into_response()
}

// ----- readiness ----------------------------------------------------------------

async fn readyz(State(st): State<AppState>) -> Response {
    let servers = st.gw.servers_json();
    let ready = servers
        .as_array()
        .into_iter()
        .flatten()
        .all(|s| s["required"] == false || s["status"] != "down");
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        json_response(json!({"ready": ready, "servers": servers}).to_string()),
    )
        .into_response()
}

/// `GET /admin/servers`: every upstream's health, as JSON.
async fn admin_servers(State(st): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(r) = st.guard.check(&headers) {
        return r.into_response();
    }
    json_response(json!({"servers": st.gw.servers_json()}).to_string())
}

/// `GET /metrics`: Prometheus text exposition.
async fn metrics(State(st): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(r) = st.guard.check(&headers) {
        return r.into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        st.gw.metrics_text(),
    )
        .into_response()
}
