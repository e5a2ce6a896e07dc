//! The supervised upstream: connects, keeps the connection, reconnects with
//! backoff, and stops its process group on shutdown.

use crate::backoff::Backoff;
use crate::conn::Conn;
use crate::health::{Health, Snapshot};
use crate::http::{self, HttpConn, InitOutcome};
use crate::{CallCtx, UpstreamError, UpstreamEvent, stdio};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;
use serde_json::value::RawValue;
use sluice_config::{HttpMode, Server, Transport};
use sluice_pipeline::ServerId;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};
use tokio::sync::{Notify, mpsc, oneshot, watch};

/// What a server said about itself at initialize.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    /// The revision agreed at initialize (or found by the 2026 discover probe).
    pub protocol_version: String,
    /// The server's `capabilities` object.
    pub capabilities: serde_json::Value,
    /// The server's `serverInfo` object (name, version), as sent.
    pub server_info: serde_json::Value,
    /// The server's `instructions` for the model, scanned like tool definitions.
    pub instructions: Option<String>,
}

impl ServerInfo {
    /// True when the server speaks the stateless revision 2026-07-28.
    pub fn is_modern(&self) -> bool {
        self.protocol_version == crate::modern::MODERN
    }

    /// True when the server declared capability `name` (e.g. "tools").
    pub fn has(&self, name: &str) -> bool {
        self.capabilities.get(name).is_some_and(|v| !v.is_null())
    }
    /// True when capability `name` declares `field: true` (e.g. "listChanged").
    pub fn flag(&self, name: &str, field: &str) -> bool {
        self.capabilities
            .get(name)
            .and_then(|c| c.get(field))
            .and_then(|v| v.as_bool())
            .unwrap_or(false)
    }
}

#[derive(Default)]
struct State {
    conn: Option<Conn>,
    info: Option<Arc<ServerInfo>>,
    pgid: Option<u32>,
    last_error: Option<(SystemTime, String)>,
    /// Set when the last connection attempt was refused for credentials (HTTP status).
    unauthorized: Option<u16>,
    /// The process group of a stdio server still in its handshake.
    starting_pgid: Option<u32>,
}

/// One upstream server, its live connection and its supervisor.
pub struct Upstream {
    /// The gateway's stable id of this server.
    pub id: ServerId,
    /// The server's `[[servers]]` entry.
    pub config: Server,
    state: RwLock<State>,
    events: mpsc::UnboundedSender<UpstreamEvent>,
    client: reqwest::Client,
    stop: watch::Sender<bool>,
    health: Health,
    probe: sluice_config::Health,
    /// Calls on the current connection (for `max_calls` recycling).
    calls_on_conn: AtomicU64,
    recycle: Notify,
    ping_unsupported: AtomicBool,
    /// The initialize params this upstream sends (see `initialize_params`).
    init_params: String,
    /// A 2026 stdio server's listen request (its change notifications), and
    /// the resource URIs it carries.
    stdio_listen: std::sync::Mutex<(
        Option<tokio::task::AbortHandle>,
        std::collections::BTreeSet<String>,
    )>,
}

/// A freshly made connection, before it is installed.
struct Connected {
    conn: Conn,
    info: ServerInfo,
    pgid: Option<u32>,
}

impl Upstream {
    /// A shared upstream, not yet connected: [`Upstream::start`] runs its supervisor.
    /// Messages tied to no call go to `events`.
    pub fn new(
        id: ServerId,
        config: Server,
        probe: sluice_config::Health,
        client: reqwest::Client,
        events: mpsc::UnboundedSender<UpstreamEvent>,
    ) -> Arc<Self> {
        Arc::new(Upstream {
            id,
            health: Health::new(&config.name, config.breaker.clone()),
            config,
            state: RwLock::new(State::default()),
            events,
            client,
            stop: watch::channel(false).0,
            probe,
            calls_on_conn: AtomicU64::new(0),
            recycle: Notify::new(),
            ping_unsupported: AtomicBool::new(false),
            init_params: crate::initialize_params(None),
            stdio_listen: std::sync::Mutex::new((None, std::collections::BTreeSet::new())),
        })
    }

    /// An upstream connection for one client session (`isolation =
    /// "per-session"`): initialized with that client's capabilities.
    pub fn for_session(
        id: ServerId,
        config: Server,
        probe: sluice_config::Health,
        client: reqwest::Client,
        events: mpsc::UnboundedSender<UpstreamEvent>,
        client_caps: &serde_json::Value,
    ) -> Arc<Self> {
        let mut up = Arc::into_inner(Self::new(id, config, probe, client, events))
            .expect("a new upstream is not shared yet");
        up.init_params = crate::initialize_params(Some(client_caps));
        Arc::new(up)
    }

    /// The server's health right now.
    pub fn health(&self) -> Snapshot {
        self.health.snapshot()
    }

    /// The server's configured name, as used in logs, metrics and tool prefixes.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// What the server declared at initialize, while connected.
    pub fn info(&self) -> Option<Arc<ServerInfo>> {
        let st = self.state.read().unwrap();
        st.conn.as_ref()?;
        st.info.clone()
    }

    /// Capabilities last seen, even while disconnected (keeps the aggregate stable).
    pub fn last_info(&self) -> Option<Arc<ServerInfo>> {
        self.state.read().unwrap().info.clone()
    }

    /// Whether a live connection is installed now (calls would be sent).
    pub fn is_connected(&self) -> bool {
        self.state
            .read()
            .unwrap()
            .conn
            .as_ref()
            .is_some_and(|c| !c.is_closed())
    }

    /// The last connection error and when it happened.
    pub fn last_error(&self) -> Option<(SystemTime, String)> {
        self.state.read().unwrap().last_error.clone()
    }

    fn conn(&self) -> Result<Conn, UpstreamError> {
        let st = self.state.read().unwrap();
        match &st.conn {
            Some(c) => Ok(c.clone()),
            None if st.unauthorized.is_some() => {
                Err(UpstreamError::Unauthorized(st.unauthorized.unwrap_or(401)))
            }
            None => Err(UpstreamError::Unavailable(match &st.last_error {
                Some((_, e)) => format!("not connected ({e})"),
                None => "still connecting".into(),
            })),
        }
    }

    /// Sends a request over the live connection, through the circuit breaker.
    ///
    /// A request that never reached the server (not connected, connection
    /// refused) is retried with backoff (100 ms doubling) up to `retries`
    /// times within the deadline; one whose connection broke after sending is
    /// retried only when `may_retry_sent` (the caller knows it is idempotent).
    pub async fn request(
        &self,
        method: &str,
        params: Option<&str>,
        ctx: CallCtx,
        may_retry_sent: bool,
    ) -> Result<Box<RawValue>, UpstreamError> {
        let deadline = tokio::time::Instant::now() + ctx.timeout;
        let mut backoff = Duration::from_millis(100);
        let mut attempt = 0;
        loop {
            let res = self.attempt(method, params, &ctx, deadline).await;
            let retry = match &res {
                Err(UpstreamError::Unavailable(_)) => true,
                Err(UpstreamError::Transport(_)) => may_retry_sent,
                _ => false,
            };
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            if !retry || attempt >= self.config.retries || remaining <= backoff {
                // A timeout is reported against the whole deadline, not the last attempt's share.
                return res.map_err(|e| match e {
                    UpstreamError::Timeout(_) => UpstreamError::Timeout(ctx.timeout),
                    e => e,
                });
            }
            attempt += 1;
            if let Err(e) = &res {
                tracing::info!(server = %self.name(), %method, attempt, error = %e, "retrying");
            }
            tokio::time::sleep(backoff).await;
            backoff *= 2;
        }
    }

    async fn attempt(
        &self,
        method: &str,
        params: Option<&str>,
        ctx: &CallCtx,
        deadline: tokio::time::Instant,
    ) -> Result<Box<RawValue>, UpstreamError> {
        if let Err(refused) = self.health.admit() {
            return Err(UpstreamError::CircuitOpen {
                retry_in: refused.retry_in,
                reason: refused.reason,
            });
        }
        let mut ctx = ctx.clone();
        ctx.timeout = deadline.saturating_duration_since(tokio::time::Instant::now());
        let stamped;
        let params = if self.info().is_some_and(|i| i.is_modern()) {
            stamped = crate::modern::stamp_with(
                params,
                ctx.client_caps.as_deref(),
                ctx.log_level.as_deref(),
            );
            Some(stamped.as_str())
        } else {
            params
        };
        let res = match self.conn() {
            Ok(conn) => conn.request(method, params, ctx).await,
            Err(e) => Err(e),
        };
        match &res {
            Err(UpstreamError::CircuitOpen { .. }) => {}
            Err(e) if e.is_fault() => self.health.record_call(Err(e.to_string()), !e.never_sent()),
            _ => self.health.record_call(Ok(()), true),
        }
        if let Some(max) = self.config.max_calls
            && self.calls_on_conn.fetch_add(1, Ordering::Relaxed) + 1 == max
        {
            tracing::info!(server = %self.name(), max_calls = max, "recycling the server after max_calls");
            self.recycle.notify_one();
        }
        res
    }

    /// One active health probe: `ping`, or `tools/list` for servers without ping.
    pub async fn probe(&self) {
        let outcome = match self.conn() {
            Err(e) => {
                // Not connected: down already; the breaker is for servers that answer badly.
                self.health.set_connected(false, Some(e.to_string()));
                return;
            }
            Ok(conn) => {
                if self.health.admit().is_err() {
                    return; // the circuit is open and waiting; its timer decides
                }
                let modern = self.info().is_some_and(|i| i.is_modern());
                let method = if modern {
                    "server/discover"
                } else if self.ping_unsupported.load(Ordering::Relaxed) {
                    "tools/list"
                } else {
                    "ping"
                };
                let stamped = modern.then(|| crate::modern::stamp(None, None));
                match conn
                    .request(method, stamped.as_deref(), CallCtx::new(self.probe.timeout))
                    .await
                {
                    Ok(_) => Ok(()),
                    Err(UpstreamError::Rpc(_)) if method == "ping" => {
                        self.ping_unsupported.store(true, Ordering::Relaxed);
                        Ok(())
                    }
                    Err(UpstreamError::Rpc(_)) => Ok(()),
                    Err(e) => Err(format!("health probe ({method}) failed: the server {e}")),
                }
            }
        };
        self.health.record_probe(outcome);
    }

    /// Subscribes to (or unsubscribes from) a resource of a 2026 server, which
    /// has no `resources/subscribe`: updates come on its listen stream.
    /// False when the server cannot do it (not connected, or not over HTTP).
    pub fn set_subscription(&self, uri: &str, on: bool) -> bool {
        match self.conn() {
            Ok(Conn::Http(h)) if h.is_modern() => {
                h.set_subscription(uri, on);
                true
            }
            Ok(conn @ Conn::Duplex(_)) if self.info().is_some_and(|i| i.is_modern()) => {
                let changed = {
                    let mut g = self.stdio_listen.lock().unwrap();
                    if on {
                        g.1.insert(uri.to_string())
                    } else {
                        g.1.remove(uri)
                    }
                };
                if changed {
                    self.listen_stdio(conn);
                }
                true
            }
            _ => false,
        }
    }

    /// (Re)opens a 2026 stdio server's listen request with the current
    /// subscriptions; the previous one is cancelled.
    fn listen_stdio(&self, conn: Conn) {
        let mut g = self.stdio_listen.lock().unwrap();
        if let Some(old) = g.0.take() {
            old.abort();
        }
        let filter = serde_json::json!({"notifications": {
            "toolsListChanged": true,
            "promptsListChanged": true,
            "resourcesListChanged": true,
            "resourceSubscriptions": g.1.iter().collect::<Vec<_>>(),
        }});
        let params = crate::modern::stamp(Some(&filter.to_string()), None);
        let task = tokio::spawn(async move {
            // Answered only when the server ends the subscription.
            let _ = conn
                .request(
                    "subscriptions/listen",
                    Some(&params),
                    CallCtx::new(Duration::from_secs(365 * 86_400)),
                )
                .await;
        });
        g.0 = Some(task.abort_handle());
    }

    /// Sends a notification over the live connection.
    pub async fn notify(&self, method: &str, params: Option<&str>) -> Result<(), UpstreamError> {
        if self.info().is_some_and(|i| i.is_modern()) && method != "notifications/cancelled" {
            return Ok(()); // no such notifications in 2026-07-28
        }
        self.conn()?.notify(method, params).await
    }

    /// Starts the supervisor and the health probe. The supervisor connects,
    /// waits for the connection to break (or for `max_calls`/`max_lifetime`
    /// to recycle it), and reconnects with exponential backoff and jitter
    /// (the first wait 100–200 ms, doubling, never 30 s; reset by every
    /// successful connection). The returned
    /// receiver fires after the first attempt, whatever its outcome.
    pub fn start(self: &Arc<Self>) -> oneshot::Receiver<()> {
        let (first_tx, first_rx) = oneshot::channel();
        tokio::spawn(self.clone().supervise(first_tx));
        let this = Arc::downgrade(self);
        let interval = self.probe.interval;
        let mut stop = self.stop.subscribe();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.changed() => return,
                }
                let Some(up) = this.upgrade() else { return };
                up.probe().await;
            }
        });
        first_rx
    }

    async fn supervise(self: Arc<Self>, first_tx: oneshot::Sender<()>) {
        let mut first = Some(first_tx);
        let mut stop = self.stop.subscribe();
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(30));
        let mut connections = 0u64;
        loop {
            if *stop.borrow() {
                return;
            }
            let (closed_tx, mut closed_rx) = oneshot::channel();
            let attempt = tokio::select! {
                r = self.connect(closed_tx) => r,
                _ = stop.changed() => return,
            };
            let fresh = match attempt {
                Ok(c) => c,
                Err(e) => {
                    let wait = backoff.next_delay();
                    tracing::warn!(server = %self.name(), error = %e, retry_in = ?wait, "upstream connection failed");
                    self.mark_down(match &e {
                        UpstreamError::Unavailable(reason) => reason.clone(),
                        e => format!("the server {e}"),
                    });
                    if let UpstreamError::Unauthorized(status) = e {
                        self.state.write().unwrap().unauthorized = Some(status);
                    }
                    // The first attempt is over once its outcome is recorded.
                    if let Some(tx) = first.take() {
                        let _ = tx.send(());
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = stop.changed() => return,
                    }
                    continue;
                }
            };
            backoff.reset();
            connections += 1;
            if connections > 1 {
                self.health.note_restart();
            }
            let _ = self.install(fresh);
            if let Some(tx) = first.take() {
                let _ = tx.send(());
            }
            // Serve on this connection until it breaks or is due for recycling.
            loop {
                let lifetime = async {
                    match self.config.max_lifetime {
                        Some(d) => tokio::time::sleep(d).await,
                        None => std::future::pending().await,
                    }
                };
                let outcome = tokio::select! {
                    r = &mut closed_rx => Err(r.unwrap_or_else(|_| "connection dropped".into())),
                    _ = self.recycle.notified() => Ok("max_calls"),
                    _ = lifetime => Ok("max_lifetime"),
                    _ = stop.changed() => return,
                };
                match outcome {
                    Err(reason) => {
                        self.mark_down(reason.clone());
                        let _ = self.events.send(UpstreamEvent::Disconnected {
                            server: self.id,
                            reason,
                        });
                        break;
                    }
                    Ok(why) => {
                        // Start the replacement first, then let the old one finish its calls.
                        let (next_tx, next_rx) = oneshot::channel();
                        match self.connect(next_tx).await {
                            Ok(next) => {
                                let old = self.install(next);
                                closed_rx = next_rx;
                                self.health.note_restart();
                                tracing::info!(server = %self.name(), reason = why, "server recycled");
                                if let Some((conn, pgid)) = old {
                                    tokio::spawn(drain_and_stop(conn, pgid, self.config.timeout));
                                }
                            }
                            Err(e) => {
                                tracing::warn!(server = %self.name(), error = %e, "recycling failed; keeping the current server");
                            }
                        }
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff.next_delay()) => {}
                _ = stop.changed() => return,
            }
        }
    }

    /// Installs a new connection; returns the one it replaces.
    fn install(&self, c: Connected) -> Option<(Conn, Option<u32>)> {
        let old = {
            let mut st = self.state.write().unwrap();
            let old = st.conn.take().map(|conn| (conn, st.pgid.take()));
            st.conn = Some(c.conn);
            st.unauthorized = None;
            st.starting_pgid = None;
            st.info = Some(Arc::new(c.info));
            st.pgid = c.pgid;
            old
        };
        self.calls_on_conn.store(0, Ordering::Relaxed);
        self.health.set_connected(true, None);
        let fresh = self.state.read().unwrap().conn.clone();
        if let Some(conn @ Conn::Duplex(_)) = fresh
            && self.info().is_some_and(|i| i.is_modern())
        {
            self.listen_stdio(conn);
        }
        tracing::info!(server = %self.name(), "upstream connected");
        let _ = self
            .events
            .send(UpstreamEvent::Connected { server: self.id });
        old
    }

    fn mark_down(&self, reason: String) {
        {
            let mut st = self.state.write().unwrap();
            st.conn = None;
            st.pgid = None;
            st.starting_pgid = None;
            st.last_error = Some((SystemTime::now(), reason.clone()));
        }
        self.health.set_connected(false, Some(reason));
    }

    async fn connect(&self, closed: oneshot::Sender<String>) -> Result<Connected, UpstreamError> {
        let timeout = self.config.timeout;
        let (conn, pgid) = match &self.config.transport {
            Transport::Stdio {
                command,
                args,
                env,
                cwd,
            } => {
                let child = stdio::spawn(
                    stdio::Spec {
                        server: self.id,
                        name: self.name(),
                        command,
                        args,
                        env,
                        cwd: cwd.as_ref(),
                    },
                    self.events.clone(),
                    closed,
                )
                .map_err(|e| {
                    UpstreamError::Unavailable(format!("cannot start `{command}`: {e}"))
                })?;
                // Known at once, so a shutdown during the handshake stops it too.
                self.state.write().unwrap().starting_pgid = Some(child.pgid);
                (Conn::Duplex(child.duplex), Some(child.pgid))
            }
            Transport::Http { url, headers, mode } => {
                let headers = header_map(headers)?;
                if *mode != HttpMode::Sse {
                    let h = Arc::new(HttpConn::new(
                        self.id,
                        self.name().to_string(),
                        self.client.clone(),
                        url.clone(),
                        headers.clone(),
                        self.events.clone(),
                        self.init_params.clone(),
                    ));
                    if let Some(info) = h.discover(timeout).await? {
                        tracing::info!(server = %self.name(), "the server speaks MCP 2026-07-28");
                        tokio::spawn(HttpConn::listen_modern(Arc::downgrade(&h)));
                        let stop = self.stop.subscribe();
                        tokio::spawn(async move {
                            let mut stop = stop;
                            let _ = stop.changed().await;
                            drop(closed);
                        });
                        return Ok(Connected {
                            conn: Conn::Http(h),
                            info,
                            pgid: None,
                        });
                    }
                    match h.initialize(timeout).await? {
                        InitOutcome::Ok(result) => {
                            let info = parse_info(&result)?;
                            tokio::spawn(HttpConn::listen(Arc::downgrade(&h)));
                            // Keep `closed` alive for as long as the session: HTTP has no
                            // connection to lose; failures surface per call.
                            let stop = self.stop.subscribe();
                            tokio::spawn(async move {
                                let mut stop = stop;
                                let _ = stop.changed().await;
                                drop(closed);
                            });
                            return Ok(Connected {
                                conn: Conn::Http(h),
                                info,
                                pgid: None,
                            });
                        }
                        InitOutcome::NotStreamable(status) if *mode == HttpMode::Auto => {
                            tracing::info!(server = %self.name(), status, "POST refused; trying legacy HTTP+SSE");
                        }
                        InitOutcome::NotStreamable(status) => {
                            return Err(UpstreamError::Http {
                                status,
                                body: "the endpoint does not accept MCP POST requests".into(),
                            });
                        }
                    }
                }
                let d = http::connect_legacy_sse(
                    http::SseTarget {
                        server: self.id,
                        name: self.name(),
                        client: &self.client,
                        url,
                        headers: &headers,
                    },
                    self.events.clone(),
                    closed,
                    timeout,
                )
                .await?;
                (Conn::Duplex(d), None)
            }
        };
        let handshake = async {
            // A stdio server that answers `server/discover` speaks 2026-07-28;
            // a session-era one refuses the method.
            if matches!(conn, Conn::Duplex(_)) && pgid.is_some() {
                let probe = conn
                    .request(
                        "server/discover",
                        Some(&crate::modern::stamp(None, None)),
                        CallCtx::new(timeout.min(Duration::from_secs(10))),
                    )
                    .await;
                if let Ok(result) = &probe
                    && let Some(info) = crate::modern::discovered(result)
                {
                    tracing::info!(server = %self.name(), "the server speaks MCP 2026-07-28");
                    return Ok::<_, UpstreamError>(info);
                }
            }
            let result = conn
                .request("initialize", Some(&self.init_params), CallCtx::new(timeout))
                .await?;
            let info = parse_info(&result)?;
            conn.notify("notifications/initialized", None).await?;
            Ok::<_, UpstreamError>(info)
        };
        match handshake.await.map_err(|e| match e {
            UpstreamError::Transport(reason) => UpstreamError::Unavailable(format!(
                "it stopped before completing initialize: {reason}"
            )),
            e => e,
        }) {
            Ok(info) => Ok(Connected { conn, info, pgid }),
            Err(e) => {
                if let Some(p) = pgid {
                    stdio::kill_group(p, nix::sys::signal::Signal::SIGKILL);
                }
                Err(e)
            }
        }
    }

    /// Stops the supervisor and the server: SIGTERM to a child's process group,
    /// SIGKILL after `grace`; DELETE for an HTTP session.
    pub async fn shutdown(&self, grace: Duration) {
        let _ = self.stop.send(true);
        let (conn, pgid, starting) = {
            let mut st = self.state.write().unwrap();
            (st.conn.take(), st.pgid.take(), st.starting_pgid.take())
        };
        if let Some(Conn::Http(h)) = &conn {
            h.close().await;
        }
        if let Some(p) = starting {
            stdio::kill_group(p, nix::sys::signal::Signal::SIGKILL);
        }
        if let Some(p) = pgid {
            stdio::kill_group(p, nix::sys::signal::Signal::SIGTERM);
            let deadline = tokio::time::Instant::now() + grace;
            while tokio::time::Instant::now() < deadline && group_alive(p) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            stdio::kill_group(p, nix::sys::signal::Signal::SIGKILL);
        }
    }
}

/// Waits (at most `grace`) for a replaced connection's calls to finish, then stops it.
async fn drain_and_stop(conn: Conn, pgid: Option<u32>, grace: Duration) {
    let deadline = tokio::time::Instant::now() + grace;
    while conn.in_flight() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if let Conn::Http(h) = &conn {
        h.close().await;
    }
    if let Some(p) = pgid {
        stdio::kill_group(p, nix::sys::signal::Signal::SIGTERM);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while tokio::time::Instant::now() < deadline && group_alive(p) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stdio::kill_group(p, nix::sys::signal::Signal::SIGKILL);
    }
}

fn group_alive(pgid: u32) -> bool {
    nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid as i32), None).is_ok()
}

fn header_map(headers: &[(String, sluice_config::Secret)]) -> Result<HeaderMap, UpstreamError> {
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        let name = HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| UpstreamError::Protocol(format!("header name `{k}` is invalid")))?;
        let mut value = HeaderValue::from_str(v.expose()).map_err(|_| {
            UpstreamError::Protocol(format!("the value of header `{k}` is invalid"))
        })?;
        value.set_sensitive(true);
        map.insert(name, value);
    }
    Ok(map)
}

fn parse_info(result: &RawValue) -> Result<ServerInfo, UpstreamError> {
    #[derive(Deserialize)]
    struct R {
        #[serde(rename = "protocolVersion")]
        protocol_version: String,
        #[serde(default)]
        capabilities: serde_json::Value,
        #[serde(rename = "serverInfo", default)]
        server_info: serde_json::Value,
        instructions: Option<String>,
    }
    let r: R = serde_json::from_str(result.get())
        .map_err(|e| UpstreamError::Protocol(format!("bad initialize result: {e}")))?;
    if sluice_mcp::version::supported(&r.protocol_version).is_none() {
        return Err(UpstreamError::Protocol(format!(
            "the server speaks protocol {}, which the gateway does not",
            r.protocol_version
        )));
    }
    Ok(ServerInfo {
        protocol_version: r.protocol_version,
        capabilities: r.capabilities,
        server_info: r.server_info,
        instructions: r.instructions,
    })
}
