//! HTTP upstreams: Streamable HTTP (2025-03-26 and later) and legacy
//! HTTP+SSE (2024-11-05).
//!
//! A Streamable HTTP upstream keeps one MCP session for the gateway, reused by
//! every call over the shared, pooled `reqwest::Client`. Messages a server
//! streams while answering a POST belong to that call; messages on its
//! standalone GET stream belong to none.

use crate::backoff::Backoff;
use crate::duplex::{Duplex, progress_token, reply_line};
use crate::{CallCtx, Related, UpstreamError, UpstreamEvent};
use futures_util::StreamExt;
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderValue};
use serde_json::value::RawValue;
use sluice_mcp::jsonrpc::{self, Id, Message};
use sluice_mcp::sse;
use sluice_mcp::version::header;
use sluice_pipeline::ServerId;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

const ACCEPT_BOTH: &str = "application/json, text/event-stream";

/// One Streamable HTTP upstream session.
pub(crate) struct HttpConn {
    server: ServerId,
    name: String,
    client: reqwest::Client,
    url: String,
    /// `url`, parsed once rather than on every request.
    parsed: reqwest::Url,
    headers: HeaderMap,
    session: RwLock<Option<HeaderValue>>,
    protocol: RwLock<HeaderValue>,
    next_id: AtomicU64,
    events: mpsc::UnboundedSender<UpstreamEvent>,
    init_params: String,
    /// Set when the server speaks the stateless revision: no session, every
    /// request carries its envelope and routing headers.
    modern: std::sync::atomic::AtomicBool,
    /// Resource URIs clients subscribed to (2026: carried by our listen stream).
    subscriptions: std::sync::Mutex<std::collections::BTreeSet<String>>,
    /// Makes the listen stream reopen with the current subscriptions.
    relisten: Arc<tokio::sync::Notify>,
}

/// What an initialize POST returned.
pub(crate) enum InitOutcome {
    Ok(Box<RawValue>),
    /// The endpoint does not speak Streamable HTTP (404/405 on POST): try legacy SSE.
    NotStreamable(u16),
}

impl HttpConn {
    pub(crate) fn new(
        server: ServerId,
        name: String,
        client: reqwest::Client,
        url: String,
        headers: HeaderMap,
        events: mpsc::UnboundedSender<UpstreamEvent>,
        init_params: String,
    ) -> Self {
        let parsed = reqwest::Url::parse(&url)
            .unwrap_or_else(|_| reqwest::Url::parse("http://invalid./").expect("valid"));
        HttpConn {
            parsed,
            init_params,
            modern: std::sync::atomic::AtomicBool::new(false),
            subscriptions: std::sync::Mutex::new(std::collections::BTreeSet::new()),
            relisten: Arc::new(tokio::sync::Notify::new()),
            server,
            name,
            client,
            url,
            headers,
            session: RwLock::new(None),
            protocol: RwLock::new(HeaderValue::from_static(sluice_mcp::version::LATEST)),
            next_id: AtomicU64::new(1),
            events,
        }
    }

    /// Runs the initialize handshake and records the session id and version.
    pub(crate) async fn initialize(
        self: &Arc<Self>,
        timeout: Duration,
    ) -> Result<InitOutcome, UpstreamError> {
        *self.session.write().unwrap() = None;
        let body = jsonrpc::request(&Id::Num(0), "initialize", Some(&self.init_params));
        let resp = self.post(body, timeout).await?;
        let status = resp.status().as_u16();
        if status == 404 || status == 405 {
            return Ok(InitOutcome::NotStreamable(status));
        }
        if let Some(sid) = resp.headers().get(header::SESSION_ID) {
            *self.session.write().unwrap() = Some(sid.clone());
        }
        let ctx = CallCtx::new(timeout);
        let result = self.read_response(resp, 0, &ctx).await?;
        if let Some(v) = negotiated_version(&result)
            && let Ok(h) = HeaderValue::from_str(&v)
        {
            *self.protocol.write().unwrap() = h;
        }
        self.notify("notifications/initialized", None).await?;
        Ok(InitOutcome::Ok(result))
    }

    pub(crate) fn is_modern(&self) -> bool {
        self.modern.load(Ordering::Relaxed)
    }

    fn request_builder(
        &self,
        body: String,
        route: Option<(&str, Option<&str>)>,
    ) -> reqwest::RequestBuilder {
        self.request_builder_with(body, route, &[])
    }

    fn request_builder_with(
        &self,
        body: String,
        route: Option<(&str, Option<&str>)>,
        extra: &[(String, String)],
    ) -> reqwest::RequestBuilder {
        let rb = self
            .client
            .post(self.parsed.clone())
            .headers(self.headers.clone())
            .header(ACCEPT, ACCEPT_BOTH)
            .header(CONTENT_TYPE, "application/json");
        let rb = match route {
            Some((method, params)) if self.is_modern() => {
                let mut rb = rb
                    .header(header::PROTOCOL_VERSION, crate::modern::MODERN)
                    .header(header::METHOD, method);
                if let Some(name) = params.and_then(|p| crate::modern::name_header(method, p)) {
                    rb = rb.header(header::NAME, name);
                }
                for (k, v) in extra {
                    rb = rb.header(k.as_str(), v.as_str());
                }
                rb
            }
            _ => {
                let mut rb = rb.header(
                    header::PROTOCOL_VERSION,
                    self.protocol.read().unwrap().clone(),
                );
                if let Some(sid) = self.session.read().unwrap().clone() {
                    rb = rb.header(header::SESSION_ID, sid);
                }
                rb
            }
        };
        rb.body(body)
    }

    async fn post(
        &self,
        body: String,
        timeout: Duration,
    ) -> Result<reqwest::Response, UpstreamError> {
        self.post_routed(body, None, timeout).await
    }

    async fn post_routed(
        &self,
        body: String,
        route: Option<(&str, Option<&str>)>,
        timeout: Duration,
    ) -> Result<reqwest::Response, UpstreamError> {
        self.post_with(body, route, &[], timeout).await
    }

    async fn post_with(
        &self,
        body: String,
        route: Option<(&str, Option<&str>)>,
        extra: &[(String, String)],
        timeout: Duration,
    ) -> Result<reqwest::Response, UpstreamError> {
        let fut = self.request_builder_with(body, route, extra).send();
        match tokio::time::timeout(timeout, fut).await {
            Err(_) => Err(UpstreamError::Timeout(timeout)),
            Ok(Err(e)) if e.is_connect() => Err(UpstreamError::Unavailable(format!(
                "cannot connect to {}: {}",
                self.url,
                root_cause(&e)
            ))),
            Ok(Err(e)) => Err(UpstreamError::Transport(root_cause(&e))),
            Ok(Ok(r)) => Ok(r),
        }
    }

    /// Sends a request; re-initializes once if the server forgot the session.
    pub(crate) async fn request(
        self: &Arc<Self>,
        method: &str,
        params: Option<&str>,
        ctx: CallCtx,
    ) -> Result<Box<RawValue>, UpstreamError> {
        let deadline = tokio::time::Instant::now() + ctx.timeout;
        for attempt in 0..2 {
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            let body = jsonrpc::request(&Id::Num(id as i64), method, params);
            // In 2026 closing the request is the cancellation; nothing is sent.
            let mut guard = CancelGuard {
                conn: Arc::downgrade(self),
                id,
                armed: !self.is_modern(),
            };
            let work = async {
                let resp = self
                    .post_with(body, Some((method, params)), &ctx.headers, ctx.timeout)
                    .await?;
                let status = resp.status().as_u16();
                if status == 404
                    && attempt == 0
                    && !self.is_modern()
                    && self.session.read().unwrap().is_some()
                {
                    return Ok(None);
                }
                self.read_response(resp, id, &ctx).await.map(Some)
            };
            let res = match tokio::time::timeout_at(deadline, work).await {
                Ok(r) => r,
                Err(_) => return Err(UpstreamError::Timeout(ctx.timeout)),
            };
            match res {
                Ok(Some(v)) => {
                    guard.armed = false;
                    return Ok(v);
                }
                Ok(None) => {
                    guard.armed = false;
                    tracing::info!(server = %self.name, "upstream session expired; re-initializing");
                    match self.initialize(ctx.timeout).await? {
                        InitOutcome::Ok(_) => continue,
                        InitOutcome::NotStreamable(s) => {
                            return Err(UpstreamError::Http {
                                status: s,
                                body: "the server stopped accepting MCP requests".into(),
                            });
                        }
                    }
                }
                Err(e) => {
                    if matches!(e, UpstreamError::Unavailable(_) | UpstreamError::Rpc(_)) {
                        guard.armed = false;
                    }
                    return Err(e);
                }
            }
        }
        Err(UpstreamError::Protocol(
            "the server keeps rejecting its new session".into(),
        ))
    }

    /// Asks whether the server speaks the stateless revision: `Some` with what
    /// it declared when it does, `None` when it answers like a session-era
    /// server (any error). Failing to reach it at all is an error.
    pub(crate) async fn discover(
        self: &Arc<Self>,
        timeout: Duration,
    ) -> Result<Option<crate::ServerInfo>, UpstreamError> {
        self.modern.store(true, Ordering::Relaxed);
        let params = crate::modern::stamp(None, None);
        let body = jsonrpc::request(&Id::Num(0), "server/discover", Some(&params));
        let outcome = async {
            let resp = self
                .post_routed(body, Some(("server/discover", Some(&params))), timeout)
                .await?;
            if !resp.status().is_success() {
                return Ok(None);
            }
            let ctx = CallCtx::new(timeout);
            Ok(self
                .read_response(resp, 0, &ctx)
                .await
                .ok()
                .and_then(|r| crate::modern::discovered(&r)))
        }
        .await;
        if !matches!(outcome, Ok(Some(_))) {
            self.modern.store(false, Ordering::Relaxed);
        }
        outcome
    }

    /// Keeps a `subscriptions/listen` stream open to a 2026 server, for its
    /// change notifications.
    pub(crate) async fn listen_modern(conn: Weak<HttpConn>) {
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        loop {
            let Some(this) = conn.upgrade() else { return };
            let uris: Vec<String> = this.subscriptions.lock().unwrap().iter().cloned().collect();
            let filter = serde_json::json!({"notifications": {
                "toolsListChanged": true,
                "promptsListChanged": true,
                "resourcesListChanged": true,
                "resourceSubscriptions": uris,
            }});
            let params = crate::modern::stamp(Some(&filter.to_string()), None);
            let body = jsonrpc::request(
                &Id::Str("sluice-listen".into()),
                "subscriptions/listen",
                Some(&params),
            );
            let sent = this
                .request_builder(body, Some(("subscriptions/listen", Some(&params))))
                .send()
                .await;
            match sent {
                Ok(resp) if resp.status().is_success() => {
                    let mut parser = sse::Parser::default();
                    let mut stream = resp.bytes_stream();
                    let mut dropped = false;
                    let notify = this.relisten.clone();
                    drop(this);
                    let relisten = notify.notified();
                    tokio::pin!(relisten);
                    let mut changed = false;
                    loop {
                        let chunk = tokio::select! {
                            c = stream.next() => c,
                            _ = &mut relisten => {
                                changed = true;
                                break;
                            }
                        };
                        let Some(Ok(chunk)) = chunk else { break };
                        let Some(this) = conn.upgrade() else { return };
                        let mut refused = None;
                        for ev in parser.feed(&chunk) {
                            let ev = match ev {
                                Ok(ev) => ev,
                                Err(e) => {
                                    refused = Some(e);
                                    break;
                                }
                            };
                            if let Ok(Message::Notification(n)) = Message::parse(ev.data.as_bytes())
                                && n.method != "notifications/subscriptions/acknowledged"
                            {
                                let _ = this.events.send(UpstreamEvent::Notification {
                                    server: this.server,
                                    method: n.method,
                                    params: n.params,
                                });
                            }
                        }
                        if let Some(e) = refused {
                            let e = too_large(e);
                            tracing::warn!(server = %this.name, error = %e, "upstream listen stream dropped");
                            dropped = true;
                            break;
                        }
                    }
                    if changed {
                        continue; // reopen at once with the new subscriptions
                    }
                    // A stream that ended is a success; one dropped for an
                    // oversized event is retried later and later.
                    if !dropped {
                        backoff.reset();
                    }
                }
                Ok(resp) => {
                    tracing::debug!(server = %this.name, status = resp.status().as_u16(), "upstream listen refused")
                }
                Err(e) => {
                    tracing::debug!(server = %this.name, error = %root_cause(&e), "upstream listen failed")
                }
            }
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }

    /// Adds or removes a resource subscription of a 2026 server: its listen
    /// stream reopens with the new set.
    pub(crate) fn set_subscription(&self, uri: &str, on: bool) {
        let changed = {
            let mut subs = self.subscriptions.lock().unwrap();
            if on {
                subs.insert(uri.to_string())
            } else {
                subs.remove(uri)
            }
        };
        if changed {
            self.relisten.notify_one();
        }
    }

    /// Sends a notification or a response (expects 202).
    pub(crate) async fn notify(
        &self,
        method: &str,
        params: Option<&str>,
    ) -> Result<(), UpstreamError> {
        if self.is_modern() {
            // The stateless revision defines no client-to-server notifications over HTTP.
            return Ok(());
        }

        self.send_message(jsonrpc::notification(method, params))
            .await
    }

    async fn send_message(&self, body: String) -> Result<(), UpstreamError> {
        let resp = self.post(body, Duration::from_secs(30)).await?;
        let status = resp.status().as_u16();
        match status {
            200..=299 => Ok(()),
            401 | 403 => Err(UpstreamError::Unauthorized(status)),
            _ => Err(UpstreamError::Http {
                status,
                body: snippet(resp).await,
            }),
        }
    }

    /// Reads a POST's answer, JSON or SSE, until the response with `id`.
    async fn read_response(
        self: &Arc<Self>,
        resp: reqwest::Response,
        id: u64,
        ctx: &CallCtx,
    ) -> Result<Box<RawValue>, UpstreamError> {
        let status = resp.status().as_u16();
        match status {
            200 => {}
            401 | 403 => return Err(UpstreamError::Unauthorized(status)),
            _ => {
                let body = snippet(resp).await;
                // A JSON-RPC error body with a 4xx status is still the server's answer.
                if let Ok(Message::Response(r)) = Message::parse(body.as_bytes())
                    && let Err(e) = r.outcome
                {
                    return Err(UpstreamError::Rpc(e));
                }
                return Err(UpstreamError::Http { status, body });
            }
        }
        let is_sse = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        if !is_sse {
            let bytes = resp
                .bytes()
                .await
                .map_err(|e| UpstreamError::Transport(root_cause(&e)))?;
            return match Message::parse(&bytes) {
                Ok(Message::Response(r)) if r.id == Id::Num(id as i64) => {
                    r.outcome.map_err(UpstreamError::Rpc)
                }
                Ok(_) => Err(UpstreamError::Protocol(
                    "expected the response to the request".into(),
                )),
                Err(e) => Err(UpstreamError::Protocol(e.error.message)),
            };
        }
        let mut parser = sse::Parser::default();
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| UpstreamError::Transport(root_cause(&e)))?;
            for ev in parser.feed(&chunk) {
                // Dropping the stream closes the response: the server stops sending.
                let ev = ev.map_err(too_large)?;
                if ev.data.is_empty() {
                    continue;
                }
                match Message::parse(ev.data.as_bytes()) {
                    Ok(Message::Response(r)) if r.id == Id::Num(id as i64) => {
                        return r.outcome.map_err(UpstreamError::Rpc);
                    }
                    Ok(Message::Response(r)) => {
                        tracing::debug!(server = %self.name, id = %r.id, "unexpected response on a POST stream; dropped")
                    }
                    Ok(Message::Notification(n)) => {
                        self.related_notification(ctx, n.method, n.params)
                    }
                    Ok(Message::Request(r)) => self.related_request(ctx.related.as_ref(), r),
                    Err(e) => {
                        tracing::warn!(server = %self.name, error = %e.error.message, "invalid message on an upstream stream; dropped")
                    }
                }
            }
        }
        Err(UpstreamError::Transport(
            "the server closed the response stream before answering".into(),
        ))
    }

    fn related_notification(&self, ctx: &CallCtx, method: String, params: Option<Box<RawValue>>) {
        let is_global =
            method.ends_with("/list_changed") || method == "notifications/resources/updated";
        if !is_global && let Some(sink) = &ctx.related {
            let ok = if method == "notifications/progress" {
                ctx.progress_token.is_some()
                    && params.as_deref().and_then(progress_token) == ctx.progress_token
            } else {
                true
            };
            if ok {
                let _ = sink.send(Related::Notification { method, params });
                return;
            }
        }
        let _ = self.events.send(UpstreamEvent::Notification {
            server: self.server,
            method,
            params,
        });
    }

    /// Relays a server-to-client request and POSTs the client's answer back.
    fn related_request(
        self: &Arc<Self>,
        sink: Option<&mpsc::UnboundedSender<Related>>,
        r: jsonrpc::Request,
    ) {
        let (tx, rx) = oneshot::channel();
        let delivered = match sink {
            Some(s) => s
                .send(Related::Request {
                    method: r.method.clone(),
                    params: r.params.clone(),
                    reply: tx,
                })
                .map_err(|e| match e.0 {
                    Related::Request { reply, .. } => reply,
                    _ => unreachable!(),
                }),
            None => Err(tx),
        };
        if let Err(tx) = delivered {
            let _ = self.events.send(UpstreamEvent::Request {
                server: self.server,
                method: r.method,
                params: r.params,
                reply: tx,
            });
        }
        let id = r.id;
        let this = self.clone();
        tokio::spawn(async move {
            let line = match rx.await {
                Ok(reply) => reply_line(&id, reply),
                Err(_) => jsonrpc::response_err(
                    Some(&id),
                    &sluice_mcp::RpcError::internal(
                        "the gateway could not deliver this request to a client",
                    )
                    .to_json(),
                ),
            };
            if let Err(e) = this.send_message(line).await {
                tracing::warn!(server = %this.name, error = %e, "could not return the client's answer upstream");
            }
        });
    }

    /// Keeps the standalone GET stream open for messages tied to no call.
    /// Returns when the server does not offer one (405) or the connection is dropped.
    pub(crate) async fn listen(conn: Weak<HttpConn>) {
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        loop {
            let Some(this) = conn.upgrade() else { return };
            let mut rb = this
                .client
                .get(&this.url)
                .headers(this.headers.clone())
                .header(ACCEPT, "text/event-stream")
                .header(
                    header::PROTOCOL_VERSION,
                    this.protocol.read().unwrap().clone(),
                );
            if let Some(sid) = this.session.read().unwrap().clone() {
                rb = rb.header(header::SESSION_ID, sid);
            }
            match rb.send().await {
                Ok(resp) if resp.status().as_u16() == 405 => return,
                Ok(resp) if resp.status().is_success() => {
                    let mut parser = sse::Parser::default();
                    let mut stream = resp.bytes_stream();
                    drop(this);
                    // A stream that ended is a success; one dropped for an
                    // oversized event is retried later and later.
                    let mut dropped = false;
                    'stream: while let Some(Ok(chunk)) = stream.next().await {
                        let Some(this) = conn.upgrade() else { return };
                        for ev in parser.feed(&chunk) {
                            let ev = match ev {
                                Ok(ev) => ev,
                                Err(e) => {
                                    let e = too_large(e);
                                    tracing::warn!(server = %this.name, error = %e, "upstream GET stream dropped");
                                    dropped = true;
                                    break 'stream;
                                }
                            };
                            match Message::parse(ev.data.as_bytes()) {
                                Ok(Message::Notification(n)) => {
                                    let _ = this.events.send(UpstreamEvent::Notification {
                                        server: this.server,
                                        method: n.method,
                                        params: n.params,
                                    });
                                }
                                Ok(Message::Request(r)) => this.related_request(None, r),
                                _ => {}
                            }
                        }
                    }
                    if !dropped {
                        backoff.reset();
                    }
                }
                Ok(resp) => {
                    tracing::debug!(server = %this.name, status = resp.status().as_u16(), "upstream GET stream refused")
                }
                Err(e) => {
                    tracing::debug!(server = %this.name, error = %root_cause(&e), "upstream GET stream failed")
                }
            }
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }

    /// Ends the upstream session (DELETE), best effort.
    pub(crate) async fn close(&self) {
        let sid = self.session.read().unwrap().clone();
        if let Some(sid) = sid {
            let _ = self
                .client
                .delete(&self.url)
                .headers(self.headers.clone())
                .header(header::SESSION_ID, sid)
                .timeout(Duration::from_secs(2))
                .send()
                .await;
        }
    }
}

struct CancelGuard {
    conn: Weak<HttpConn>,
    id: u64,
    armed: bool,
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Some(conn) = self.conn.upgrade() {
            let params = format!(
                r#"{{"requestId":{},"reason":"cancelled by the gateway (timeout or client cancellation)"}}"#,
                self.id
            );
            tokio::spawn(async move {
                let _ = conn.notify("notifications/cancelled", Some(&params)).await;
            });
        }
    }
}

/// Where a legacy HTTP+SSE server is.
pub(crate) struct SseTarget<'a> {
    pub server: ServerId,
    pub name: &'a str,
    pub client: &'a reqwest::Client,
    pub url: &'a str,
    pub headers: &'a HeaderMap,
}

/// Connects to a legacy HTTP+SSE server: GET the stream, wait for the
/// `endpoint` event, then POST every message there. `closed` fires when the stream ends.
pub(crate) async fn connect_legacy_sse(
    target: SseTarget<'_>,
    events: mpsc::UnboundedSender<UpstreamEvent>,
    closed: oneshot::Sender<String>,
    timeout: Duration,
) -> Result<Arc<Duplex>, UpstreamError> {
    let SseTarget {
        server,
        name,
        client,
        url,
        headers,
    } = target;
    let resp = tokio::time::timeout(
        timeout,
        client
            .get(url)
            .headers(headers.clone())
            .header(ACCEPT, "text/event-stream")
            .send(),
    )
    .await
    .map_err(|_| UpstreamError::Timeout(timeout))?
    .map_err(|e| {
        UpstreamError::Unavailable(format!("cannot connect to {url}: {}", root_cause(&e)))
    })?;
    let status = resp.status().as_u16();
    if status == 401 || status == 403 {
        return Err(UpstreamError::Unauthorized(status));
    }
    if status != 200 {
        return Err(UpstreamError::Http {
            status,
            body: snippet(resp).await,
        });
    }
    let mut stream = resp.bytes_stream();
    let mut parser = sse::Parser::default();
    let mut pending_events = Vec::new();
    let endpoint = loop {
        let chunk = tokio::time::timeout(timeout, stream.next())
            .await
            .map_err(|_| UpstreamError::Timeout(timeout))?;
        let Some(Ok(chunk)) = chunk else {
            return Err(UpstreamError::Protocol(
                "the SSE stream ended before its `endpoint` event".into(),
            ));
        };
        let mut found = None;
        for ev in parser.feed(&chunk) {
            let ev = ev.map_err(too_large)?;
            if found.is_none() && ev.event.as_deref() == Some("endpoint") {
                found = Some(ev.data);
            } else {
                pending_events.push(ev);
            }
        }
        if let Some(ep) = found {
            break ep;
        }
    };
    let base = reqwest::Url::parse(url).map_err(|e| UpstreamError::Protocol(e.to_string()))?;
    let post_url = base
        .join(endpoint.trim())
        .map_err(|e| UpstreamError::Protocol(format!("bad endpoint `{endpoint}`: {e}")))?;

    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<String>();
    let duplex = Arc::new(Duplex::new(server, name.to_string(), out_tx, events));
    let (c, h, n) = (client.clone(), headers.clone(), name.to_string());
    let writer_duplex = Arc::downgrade(&duplex);
    tokio::spawn(async move {
        while let Some(body) = out_rx.recv().await {
            let res = c
                .post(post_url.clone())
                .headers(h.clone())
                .header(CONTENT_TYPE, "application/json")
                .body(body)
                .send()
                .await;
            match res {
                Ok(r) if r.status().is_success() => {}
                Ok(r) => {
                    tracing::warn!(server = %n, status = r.status().as_u16(), "legacy SSE upstream refused a message")
                }
                Err(e) => {
                    tracing::warn!(server = %n, error = %root_cause(&e), "legacy SSE upstream unreachable");
                    if let Some(d) = writer_duplex.upgrade() {
                        d.close(format!(
                            "cannot reach the message endpoint: {}",
                            root_cause(&e)
                        ));
                    }
                }
            }
        }
    });
    let reader = duplex.clone();
    let n = name.to_string();
    tokio::spawn(async move {
        for ev in pending_events {
            reader.on_message(ev.data.as_bytes());
        }
        let mut reason = "the server closed its SSE stream".to_string();
        'stream: while let Some(chunk) = stream.next().await {
            let Ok(chunk) = chunk else { break };
            for ev in parser.feed(&chunk) {
                let ev = match ev {
                    Ok(ev) => ev,
                    Err(e) => {
                        // Its answers are lost with the event: fail the calls and reconnect.
                        reason = format!("the server {}", too_large(e));
                        break 'stream;
                    }
                };
                if ev.event.as_deref().is_none_or(|e| e == "message") && !ev.data.is_empty() {
                    reader.on_message(ev.data.as_bytes());
                }
            }
        }
        tracing::warn!(server = %n, %reason, "legacy SSE upstream stopped");
        reader.close(reason.clone());
        let _ = closed.send(reason);
    });
    Ok(duplex)
}

/// The upstream error for an SSE event over the parser's limit; the caller
/// stops reading that stream.
fn too_large(e: sse::EventTooLarge) -> UpstreamError {
    UpstreamError::Protocol(format!(
        "{e} (the gateway's limit); the gateway stopped reading that stream"
    ))
}

fn negotiated_version(result: &RawValue) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct R {
        #[serde(rename = "protocolVersion")]
        v: Option<String>,
    }
    serde_json::from_str::<R>(result.get()).ok()?.v
}

async fn snippet(resp: reqwest::Response) -> String {
    let text = resp.text().await.unwrap_or_default();
    let mut s: String = text.chars().take(300).collect();
    if s.len() < text.len() {
        s.push('…');
    }
    s
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}
