//! The supervised upstream: connects, keeps the connection, reconnects with
//! backoff, and stops its process group on shutdown.

use crate::conn::Conn;
use crate::http::{self, HttpConn, InitOutcome};
use crate::{CallCtx, UpstreamError, UpstreamEvent, stdio};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;
use serde_json::value::RawValue;
use sluice_config::{HttpMode, Server, Transport};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, oneshot, watch};

/// What a server said about itself at initialize.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    pub protocol_version: String,
    /// The server's `capabilities` object.
    pub capabilities: serde_json::Value,
    pub server_info: serde_json::Value,
    pub instructions: Option<String>,
}

impl ServerInfo {
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
}

/// One upstream server, its live connection and its supervisor.
pub struct Upstream {
    pub index: usize,
    pub config: Server,
    state: RwLock<State>,
    events: mpsc::UnboundedSender<UpstreamEvent>,
    client: reqwest::Client,
    stop: watch::Sender<bool>,
}

impl Upstream {
    pub fn new(
        index: usize,
        config: Server,
        client: reqwest::Client,
        events: mpsc::UnboundedSender<UpstreamEvent>,
    ) -> Arc<Self> {
        Arc::new(Upstream {
            index,
            config,
            state: RwLock::new(State::default()),
            events,
            client,
            stop: watch::channel(false).0,
        })
    }

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
            None => Err(UpstreamError::Unavailable(match &st.last_error {
                Some((_, e)) => format!("not connected ({e})"),
                None => "still connecting".into(),
            })),
        }
    }

    /// Sends a request over the live connection.
    pub async fn request(
        &self,
        method: &str,
        params: Option<&str>,
        ctx: CallCtx,
    ) -> Result<Box<RawValue>, UpstreamError> {
        self.conn()?.request(method, params, ctx).await
    }

    /// Sends a notification over the live connection.
    pub async fn notify(&self, method: &str, params: Option<&str>) -> Result<(), UpstreamError> {
        self.conn()?.notify(method, params).await
    }

    /// Starts the supervisor: connect, wait for the connection to break,
    /// reconnect with exponential backoff (0.5 s doubling to 30 s).
    /// The returned receiver fires after the first attempt, whatever its outcome.
    pub fn start(self: &Arc<Self>) -> oneshot::Receiver<()> {
        let (first_tx, first_rx) = oneshot::channel();
        let this = self.clone();
        tokio::spawn(async move {
            let mut first = Some(first_tx);
            let mut stop = this.stop.subscribe();
            let mut backoff = Duration::from_millis(500);
            loop {
                if *stop.borrow() {
                    return;
                }
                let (closed_tx, closed_rx) = oneshot::channel();
                let attempt = tokio::select! {
                    r = this.connect(closed_tx) => r,
                    _ = stop.changed() => return,
                };
                match attempt {
                    Ok(()) => {
                        backoff = Duration::from_millis(500);
                        tracing::info!(server = %this.name(), "upstream connected");
                        let _ = this
                            .events
                            .send(UpstreamEvent::Connected { server: this.index });
                        if let Some(tx) = first.take() {
                            let _ = tx.send(());
                        }
                        let reason = tokio::select! {
                            r = closed_rx => r.unwrap_or_else(|_| "connection dropped".into()),
                            _ = stop.changed() => return,
                        };
                        this.mark_down(reason.clone());
                        let _ = this.events.send(UpstreamEvent::Disconnected {
                            server: this.index,
                            reason,
                        });
                    }
                    Err(e) => {
                        tracing::warn!(server = %this.name(), error = %e, retry_in = ?backoff, "upstream connection failed");
                        this.mark_down(e.to_string());
                        if let Some(tx) = first.take() {
                            let _ = tx.send(());
                        }
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.changed() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        });
        first_rx
    }

    fn mark_down(&self, reason: String) {
        let mut st = self.state.write().unwrap();
        st.conn = None;
        st.pgid = None;
        st.last_error = Some((SystemTime::now(), reason));
    }

    async fn connect(&self, closed: oneshot::Sender<String>) -> Result<(), UpstreamError> {
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
                        server: self.index,
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
                (Conn::Duplex(child.duplex), Some(child.pgid))
            }
            Transport::Http { url, headers, mode } => {
                let headers = header_map(headers)?;
                if *mode != HttpMode::Sse {
                    let h = Arc::new(HttpConn::new(
                        self.index,
                        self.name().to_string(),
                        self.client.clone(),
                        url.clone(),
                        headers.clone(),
                        self.events.clone(),
                    ));
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
                            self.set_connected(Conn::Http(h), info, None);
                            return Ok(());
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
                        server: self.index,
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
            let result = conn
                .request(
                    "initialize",
                    Some(&crate::initialize_params()),
                    CallCtx::new(timeout),
                )
                .await?;
            let info = parse_info(&result)?;
            conn.notify("notifications/initialized", None).await?;
            Ok::<_, UpstreamError>(info)
        };
        match handshake.await {
            Ok(info) => {
                self.set_connected(conn, info, pgid);
                Ok(())
            }
            Err(e) => {
                if let Some(p) = pgid {
                    stdio::kill_group(p, nix::sys::signal::Signal::SIGKILL);
                }
                Err(e)
            }
        }
    }

    fn set_connected(&self, conn: Conn, info: ServerInfo, pgid: Option<u32>) {
        let mut st = self.state.write().unwrap();
        st.conn = Some(conn);
        st.info = Some(Arc::new(info));
        st.pgid = pgid;
    }

    /// Stops the supervisor and the server: SIGTERM to a child's process group,
    /// SIGKILL after `grace`; DELETE for an HTTP session.
    pub async fn shutdown(&self, grace: Duration) {
        let _ = self.stop.send(true);
        let (conn, pgid) = {
            let mut st = self.state.write().unwrap();
            (st.conn.take(), st.pgid.take())
        };
        if let Some(Conn::Http(h)) = &conn {
            h.close().await;
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
