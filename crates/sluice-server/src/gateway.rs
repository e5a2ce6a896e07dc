//! The gateway core: one MCP server made of many.
//!
//! Front ends (Streamable HTTP, stdio) hand every client message to
//! [`Gateway`]. The request path is `dispatch`: route the name or URI to its
//! upstream, rewrite only what must change (names, progress tokens, ids), and
//! forward raw JSON both ways.

use crate::catalog::{Catalog, Kind};
use crate::error::{Fail, raw};
use crate::metrics::Metrics;
use crate::pipeline::{Pipeline, RequestCtx};
use crate::report;
use crate::rescue::{Wire, rescue};
use crate::session::{LogOp, Outbound, Session};
use futures_util::future::join_all;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};
use sluice_config::Config;
use sluice_mcp::jsonrpc::{self, Id, Notification, Request, Response};
use sluice_mcp::{RpcError, cursor, names, version};
use sluice_pipeline::ServerId;
use sluice_store::{LogBounds, Store, StoreError};
use sluice_upstream::{CallCtx, Related, Reply, Upstream, UpstreamError, UpstreamEvent};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::mpsc;

/// A per-session upstream instance: (session, server).
pub(crate) type IsolatedKey = (Arc<str>, ServerId);

/// The aggregating gateway.
pub struct Gateway {
    /// The validated configuration the gateway was started with.
    pub(crate) config: Arc<Config>,
    /// The configured servers and their cached lists.
    pub(crate) catalog: Catalog,
    /// Sessions this replica serves (a cache of the store, see `sessions.rs`).
    pub(crate) sessions: RwLock<HashMap<Arc<str>, Arc<Session>>>,
    pub(crate) store: Store,
    /// Unique per process: names this replica's streams and requests.
    pub(crate) replica: Arc<str>,
    /// Ordered writes of stream events to the store.
    pub(crate) writer: mpsc::UnboundedSender<LogOp>,
    /// SSE streams open on this replica.
    pub(crate) open_streams: std::sync::atomic::AtomicUsize,
    next_client_request: AtomicU64,
    next_progress: AtomicU64,
    pub(crate) metrics: Metrics,
    /// Per-session upstream instances, by (session, server).
    pub(crate) isolated: Mutex<HashMap<IsolatedKey, Arc<Upstream>>>,
    /// 2026 calls waiting for the client's input (`input_required`).
    pub(crate) parked: crate::modern::Parked,
    /// 2026 retries relayed to or from the replica holding their parked call.
    pub(crate) relays: crate::relay::Relays,
    /// Pinned tool definitions (trust on first use).
    pub(crate) pins: Option<sluice_store::PinStore>,
    /// The tool lists last checked for shadowing (by identity), so each set is checked once.
    shadow_checked: Mutex<Vec<usize>>,
    /// Tasks created through the gateway (2025-11-25 tasks): id → (server, session).
    tasks: Mutex<HashMap<String, (ServerId, Arc<str>)>>,
    pub(crate) http_client: sluice_upstream::HttpClient,
    /// The audit log (see `audit.rs`).
    pub(crate) audit: crate::audit::Audit,
    /// The stages every request passes (see `pipeline.rs`).
    pipeline: Pipeline,
    me: std::sync::OnceLock<std::sync::Weak<Gateway>>,
}

/// A client's initialize request, accepted.
pub(crate) struct Initialized {
    pub protocol_version: &'static str,
    pub capabilities: Value,
    pub client_info: Value,
    /// The initialize result, JSON text.
    pub result: String,
}

impl Gateway {
    /// Builds the gateway and starts every upstream; waits (at most `wait`)
    /// for each upstream's first connection attempt. Events go to `audit`.
    pub async fn start(
        config: Config,
        audit: sluice_audit::AuditLog,
        wait: Duration,
    ) -> Result<Arc<Gateway>, StoreError> {
        let sc = &config.sessions;
        let store = Store::open(
            &sc.store,
            sc.idle_timeout,
            LogBounds {
                max_events: sc.replay_events,
                max_age: sc.replay_max_age,
            },
        )
        .await?;
        let config_state_key = config.gateway.state_key.clone();
        let pins = if config.servers.iter().any(|s| s.pinning) {
            let pins = sluice_store::PinStore::from_config(&config.defence).await?;
            match pins.ping().await {
                Ok(()) => {
                    tracing::info!(store = pins.kind(), at = %pins.location(), "pins ready")
                }
                // Start anyway, like the session store: tools are held back
                // (`pin_store_unavailable`) until the pin store answers.
                Err(e) => {
                    tracing::error!(store = pins.kind(), error = %e, "pin store unavailable; pinned servers' tools are held back until it answers")
                }
            }
            Some(pins)
        } else {
            None
        };
        let (writer, writer_rx) = mpsc::unbounded_channel();
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let client = sluice_upstream::http_client();
        let upstreams: Vec<_> = config
            .servers
            .iter()
            .enumerate()
            .map(|(i, s)| {
                Upstream::new(
                    Catalog::id_at(i),
                    s.clone(),
                    config.health.clone(),
                    client.clone(),
                    events_tx.clone(),
                )
            })
            .collect();
        let firsts: Vec<_> = upstreams.iter().map(|u| u.start()).collect();
        let pipeline = Pipeline::build(&config);
        let gw = Arc::new(Gateway {
            catalog: Catalog::new(upstreams),
            config: Arc::new(config),
            sessions: RwLock::new(HashMap::new()),
            store,
            replica: format!(
                "{:012x}",
                uuid::Uuid::new_v4().as_u128() as u64 & 0xffff_ffff_ffff
            )
            .into(),
            writer,
            open_streams: std::sync::atomic::AtomicUsize::new(0),
            next_client_request: AtomicU64::new(1),
            next_progress: AtomicU64::new(1),
            metrics: Metrics::new(audit.counters()),
            isolated: Mutex::new(HashMap::new()),
            parked: crate::modern::Parked::new(config_state_key),
            relays: crate::relay::Relays::default(),
            pins,
            shadow_checked: Mutex::new(Vec::new()),
            tasks: Mutex::new(HashMap::new()),
            http_client: client,
            audit: crate::audit::Audit::new(audit),
            pipeline,
            me: std::sync::OnceLock::new(),
        });
        let _ = gw.me.set(Arc::downgrade(&gw));
        tokio::spawn(Self::run_events(Arc::downgrade(&gw), events_rx));
        gw.start_store_tasks(writer_rx);
        // The detector builds its matchers on first use (tens of ms): do it
        // now, beside the upstreams' start, not on a client's first call.
        let warm = tokio::task::spawn_blocking(|| {
            let ctx = sluice_scan::ScanContext::default();
            let _ = sluice_scan::scan_call_result(
                &json!({"content": [{"type": "text", "text": "warm-up"}]}),
                &ctx,
            );
            let _ = sluice_scan::scan_definition(
                &json!({"name": "warm_up", "description": "Warms up."}),
                &ctx,
            );
            let _ = sluice_scan::scan_instructions("Warm up.", &ctx);
        });
        tracing::info!(store = gw.store.kind(), replica = %gw.replica, "session store open");
        let _ = tokio::time::timeout(wait, join_all(firsts)).await;
        let _ = warm.await;
        gw.refresh_instructions(false).await;
        Ok(gw)
    }

    pub(crate) fn upstreams(&self) -> &[Arc<Upstream>] {
        self.catalog.servers()
    }

    /// A weak handle to this gateway, for tasks it spawns.
    pub(crate) fn self_ref(&self) -> std::sync::Weak<Gateway> {
        self.me.get().cloned().unwrap_or_default()
    }

    /// Stops every upstream (process groups get SIGTERM, then SIGKILL after `grace`).
    pub async fn shutdown(&self, grace: Duration) {
        for s in self.sessions.write().unwrap().drain() {
            s.1.close();
        }
        let isolated: Vec<Arc<Upstream>> = self
            .isolated
            .lock()
            .unwrap()
            .drain()
            .map(|(_, u)| u)
            .collect();
        join_all(isolated.iter().map(|u| u.shutdown(grace))).await;
        join_all(self.catalog.servers().iter().map(|u| u.shutdown(grace))).await;
        self.audit.log.close().await;
    }

    /// Sessions this replica holds in memory.
    pub(crate) fn session_count(&self) -> usize {
        self.sessions.read().unwrap().len()
    }

    // ----- initialize -----------------------------------------------------

    /// Accepts a client's initialize: negotiates the version and answers with
    /// the union of the upstreams' capabilities.
    pub(crate) fn initialize(&self, params: Option<&RawValue>) -> Result<Initialized, RpcError> {
        let p = params_map(params)?;
        let requested = p
            .get("protocolVersion")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                RpcError::invalid_params("initialize needs params.protocolVersion (a string)")
            })?;
        let protocol_version = version::supported(requested).unwrap_or(version::LATEST);
        let capabilities = match p.get("capabilities") {
            None | Some(Value::Null) => json!({}),
            Some(v @ Value::Object(_)) => v.clone(),
            Some(_) => {
                return Err(RpcError::invalid_params(
                    "initialize params.capabilities must be an object",
                ));
            }
        };
        let client_info = p.get("clientInfo").cloned().unwrap_or(Value::Null);
        let result = json!({
            "protocolVersion": protocol_version,
            "capabilities": self.capabilities(),
            "serverInfo": {"name": "sluice", "title": "Sluice MCP gateway", "version": env!("CARGO_PKG_VERSION")},
            "instructions": self.instructions(),
        });
        let mut result = result;
        if result["instructions"].is_null() {
            result.as_object_mut().unwrap().remove("instructions");
        }
        Ok(Initialized {
            protocol_version,
            capabilities,
            client_info,
            result: result.to_string(),
        })
    }

    pub(crate) fn capabilities(&self) -> Value {
        let infos: Vec<_> = self
            .catalog
            .servers()
            .iter()
            .filter_map(|u| u.last_info())
            .collect();
        let unknown = infos.len() < self.catalog.servers().len();
        let any = |cap: &str| unknown || infos.iter().any(|i| i.has(cap));
        let mut caps = Map::new();
        if any("tools") {
            caps.insert("tools".into(), json!({"listChanged": true}));
        }
        if any("prompts") {
            caps.insert("prompts".into(), json!({"listChanged": true}));
        }
        if any("resources") {
            let subscribe = unknown || infos.iter().any(|i| i.flag("resources", "subscribe"));
            caps.insert(
                "resources".into(),
                json!({"listChanged": true, "subscribe": subscribe}),
            );
        }
        if any("completions") {
            caps.insert("completions".into(), json!({}));
        }
        // Tasks pass through to the server that created them.
        if let Some(t) = infos
            .iter()
            .find_map(|i| i.capabilities.get("tasks").filter(|t| t.is_object()))
        {
            caps.insert("tasks".into(), t.clone());
        }
        caps.insert("logging".into(), json!({}));
        Value::Object(caps)
    }

    pub(crate) fn instructions(&self) -> Option<String> {
        let parts: Vec<String> = self
            .catalog
            .servers()
            .iter()
            .filter_map(|u| {
                let i = u.last_info()?.instructions.clone()?;
                if !self.catalog.instructions_allowed(u.id) {
                    return None;
                }
                Some(format!("## Server `{}`\n{}", u.name(), i))
            })
            .collect();
        (!parts.is_empty()).then(|| parts.join("\n\n"))
    }

    // ----- the request path -----------------------------------------------

    /// Serves a request on its own task, abortable by `notifications/cancelled`.
    /// `done` gets the response line, or `None` if the request was cancelled.
    pub(crate) fn spawn_request(
        self: &Arc<Self>,
        sess: &Arc<Session>,
        req: Request,
        out: Arc<dyn Outbound>,
        done: impl FnOnce(Option<String>) + Send + 'static,
    ) {
        let gw = self.clone();
        let s = sess.clone();
        let id = req.id.clone();
        let guard = DoneGuard(Some(Box::new(done)));
        let mut inflight = sess.inflight.lock().unwrap();
        let task = tokio::spawn(async move {
            let req_id = req.id.clone();
            let line = gw.handle_request(&s, req, out).await;
            s.inflight.lock().unwrap().remove(&req_id);
            guard.complete(line);
        });
        inflight.insert(id, task.abort_handle());
    }

    /// Serves one request and returns the response line.
    pub(crate) async fn handle_request(
        &self,
        sess: &Arc<Session>,
        req: Request,
        out: Arc<dyn Outbound>,
    ) -> String {
        let mut ctx = RequestCtx::new(sess, &req.method, out);
        match self.serve(&mut ctx, req.params.as_deref()).await {
            Ok(result) => jsonrpc::response_ok(&req.id, result.get()),
            Err(error) => jsonrpc::response_err(Some(&req.id), &error),
        }
    }

    /// Runs a request through the pipeline and maps its outcome to the wire
    /// (`rescue`): the result, or the JSON-RPC error object's text. Every
    /// front end's requests come through here.
    pub(crate) async fn serve(
        &self,
        ctx: &mut RequestCtx,
        params: Option<&RawValue>,
    ) -> Result<Box<RawValue>, String> {
        match self.pipeline.call(self, ctx, params).await {
            Ok(result) => Ok(result),
            Err(fail) => match rescue(ctx, &fail, |name| self.upstream_named(name)) {
                Wire::Result(result) => Ok(result),
                Wire::Error(error) => Err(error),
            },
        }
    }

    /// The configured upstream named `name`.
    pub(crate) fn upstream_named(&self, name: &str) -> Option<&Upstream> {
        self.catalog.named(name).map(|u| &**u)
    }

    pub(crate) async fn dispatch(
        &self,
        sess: &Arc<Session>,
        method: &str,
        params: Option<&RawValue>,
        out: &Arc<dyn Outbound>,
    ) -> Result<Box<RawValue>, Fail> {
        match method {
            "ping" => Ok(raw("{}".into())),
            "initialize" => Err(RpcError::invalid_request(
                "Invalid Request: this session is already initialized; start a new session instead",
            )
            .into()),
            "tools/list" => self.list(Kind::Tools, params).await,
            "prompts/list" => self.list(Kind::Prompts, params).await,
            "resources/list" => self.list(Kind::Resources, params).await,
            "resources/templates/list" => self.list(Kind::Templates, params).await,
            // `tools/call` passes the pipeline's stages (`Pipeline::call`).
            "prompts/get" => self.get_prompt(sess, params, out).await,
            "resources/read" | "resources/subscribe" | "resources/unsubscribe" => {
                self.call_uri(sess, method, params, out).await
            }
            "completion/complete" => self.complete(sess, params, out).await,
            "tasks/get" | "tasks/update" | "tasks/cancel"
                if sess.protocol_version == version::MODERN =>
            {
                self.call_task_modern(sess, method, params, out).await
            }
            "tasks/get" | "tasks/result" | "tasks/cancel" => {
                self.call_task(sess, method, params, out).await
            }
            "tasks/list" => self.list_tasks(sess).await,
            "logging/setLevel" => self.set_level(sess, params).await,
            _ => Err(RpcError::method_not_found(method).into()),
        }
    }

    /// prompts/get: route by exposed name, rewrite it, forward.
    async fn get_prompt(
        &self,
        sess: &Arc<Session>,
        params: Option<&RawValue>,
        out: &Arc<dyn Outbound>,
    ) -> Result<Box<RawValue>, Fail> {
        let mut p = params_map(params)?;
        let exposed = required_str(&p, "prompts/get", "name")?.to_string();
        let (u, name) = self.route_name(Kind::Prompts, &exposed).await?;
        let up = &self.upstream_for(sess, u).await?;
        p.insert("name".into(), Value::String(name));
        self.forward_safe(sess, up, "prompts/get", p, out).await
    }

    /// resources/read, subscribe, unsubscribe: route by URI.
    async fn call_uri(
        &self,
        sess: &Arc<Session>,
        method: &str,
        params: Option<&RawValue>,
        out: &Arc<dyn Outbound>,
    ) -> Result<Box<RawValue>, Fail> {
        let p = params_map(params)?;
        let uri = required_str(&p, method, "uri")?.to_string();
        let up = &self.upstream_for(sess, self.route_uri(&uri).await?).await?;
        // 2026 servers have no resources/subscribe: the gateway subscribes
        // through its listen stream and answers the session-era client itself.
        let subscribe = method == "resources/subscribe";
        if (subscribe || method == "resources/unsubscribe")
            && up.info().is_some_and(|i| i.is_modern())
        {
            if !up.set_subscription(&uri, subscribe) {
                return Err(RpcError::new(
                    sluice_mcp::jsonrpc::code::METHOD_NOT_FOUND,
                    format!("server `{}` speaks MCP 2026-07-28 and cannot take resource subscriptions over this transport", up.name()),
                )
                .into());
            }
            let changed = if subscribe {
                sess.subscriptions.lock().unwrap().insert(uri)
            } else {
                sess.subscriptions.lock().unwrap().remove(&uri)
            };
            if changed {
                self.save_session(sess).await;
            }
            return Ok(raw("{}".into()));
        }
        let r = self.forward_safe(sess, up, method, p, out).await?;
        let changed = match method {
            "resources/subscribe" => sess.subscriptions.lock().unwrap().insert(uri),
            "resources/unsubscribe" => sess.subscriptions.lock().unwrap().remove(&uri),
            _ => false,
        };
        if changed {
            self.save_session(sess).await;
        }
        Ok(r)
    }

    async fn complete(
        &self,
        sess: &Arc<Session>,
        params: Option<&RawValue>,
        out: &Arc<dyn Outbound>,
    ) -> Result<Box<RawValue>, Fail> {
        let mut p = params_map(params)?;
        let r = p
            .get_mut("ref")
            .and_then(Value::as_object_mut)
            .ok_or_else(|| {
                RpcError::invalid_params("completion/complete needs params.ref (an object)")
            })?;
        let u = match r.get("type").and_then(Value::as_str) {
            Some("ref/prompt") => {
                let exposed = r
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                let (u, name) = self.route_name(Kind::Prompts, &exposed).await?;
                r.insert("name".into(), Value::String(name));
                u
            }
            Some("ref/resource") => {
                let uri = r
                    .get("uri")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                self.route_uri(&uri).await?
            }
            other => {
                return Err(RpcError::invalid_params(format!(
                    "completion/complete: unknown ref type {other:?}; expected \"ref/prompt\" or \"ref/resource\""
                ))
                .into());
            }
        };
        let up = &self.upstream_for(sess, u).await?;
        self.forward_safe(sess, up, "completion/complete", p, out)
            .await
    }

    /// Remembers a task a tool call created, so its `tasks/*` requests reach its server.
    pub(crate) fn note_task(&self, u: ServerId, sess: &Arc<Session>, result: &RawValue) {
        if !result.get().contains("\"taskId\"") {
            return;
        }
        let id = serde_json::from_str::<Value>(result.get())
            .ok()
            .and_then(|v| {
                v.pointer("/task/taskId")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            });
        if let Some(id) = id {
            self.tasks.lock().unwrap().insert(id, (u, sess.id.clone()));
        }
    }

    /// `tasks/get`, `tasks/result`, `tasks/cancel`: to the server that created the task.
    async fn call_task(
        &self,
        sess: &Arc<Session>,
        method: &str,
        params: Option<&RawValue>,
        out: &Arc<dyn Outbound>,
    ) -> Result<Box<RawValue>, Fail> {
        let p = params_map(params)?;
        let id = required_str(&p, method, "taskId")?;
        let owner = self.tasks.lock().unwrap().get(id).cloned();
        let Some((u, _)) = owner.filter(|(_, s)| *s == sess.id) else {
            return Err(RpcError::invalid_params(format!(
                "Unknown task `{id}`: no task of this session has that id"
            ))
            .into());
        };
        let up = &self.upstream_for(sess, u).await?;
        self.forward_safe(sess, up, method, p, out).await
    }

    /// `tasks/list`: this session's tasks, from every server that has tasks.
    async fn list_tasks(&self, sess: &Arc<Session>) -> Result<Box<RawValue>, Fail> {
        let mine: HashMap<String, ServerId> = self
            .tasks
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, (_, s))| *s == sess.id)
            .map(|(id, (u, _))| (id.clone(), *u))
            .collect();
        let servers: HashSet<ServerId> = mine.values().copied().collect();
        let mut tasks = Vec::new();
        for u in servers {
            let up = &self.catalog.server(u);
            match up
                .request("tasks/list", None, CallCtx::new(up.config.timeout), true)
                .await
            {
                Ok(r) => {
                    let v: Value = serde_json::from_str(r.get()).unwrap_or(Value::Null);
                    for t in v
                        .get("tasks")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                    {
                        if t.get("taskId")
                            .and_then(Value::as_str)
                            .is_some_and(|id| mine.contains_key(id))
                        {
                            tasks.push(t.clone());
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(server = %up.name(), error = %e, "tasks/list failed; its tasks omitted")
                }
            }
        }
        Ok(raw(json!({"tasks": tasks}).to_string()))
    }

    /// Forwards a request that is safe to repeat (reads, completions,
    /// subscriptions) with the server's timeout; failures name the server.
    pub(crate) async fn forward_safe(
        &self,
        sess: &Arc<Session>,
        up: &Upstream,
        method: &str,
        params: Map<String, Value>,
        out: &Arc<dyn Outbound>,
    ) -> Result<Box<RawValue>, Fail> {
        let policy = Policy {
            timeout: up.config.timeout,
            may_retry_sent: true,
        };
        self.forward(sess, up, method, params, out, policy)
            .await
            .map_err(|error| Fail::Upstream {
                server: up.name().into(),
                error,
            })
    }

    /// logging/setLevel reaches every upstream that logs.
    async fn set_level(
        &self,
        sess: &Arc<Session>,
        params: Option<&RawValue>,
    ) -> Result<Box<RawValue>, Fail> {
        let p = params_map(params)?;
        let level = required_str(&p, "logging/setLevel", "level")?;
        const LEVELS: [&str; 8] = [
            "debug",
            "info",
            "notice",
            "warning",
            "error",
            "critical",
            "alert",
            "emergency",
        ];
        if !LEVELS.contains(&level) {
            return Err(RpcError::invalid_params(format!(
                "logging/setLevel: `{level}` is not one of {}",
                LEVELS.join(", ")
            ))
            .into());
        }
        *sess.log_level.lock().unwrap() = Some(level.to_string());
        self.save_session(sess).await;
        let text = Value::Object(p.clone()).to_string();
        // A server isolated per session gets the level on this session's instance.
        let targets: Vec<Arc<Upstream>> = self
            .catalog
            .servers()
            .iter()
            .filter_map(|u| match u.config.isolation {
                sluice_config::Isolation::Shared => Some(u.clone()),
                sluice_config::Isolation::PerSession => self.isolated_instance(&sess.id, u.id),
            })
            .collect();
        let calls = targets
            .iter()
            .filter(|u| u.info().is_some_and(|i| i.has("logging")))
            .map(|u| {
                let text = text.clone();
                async move {
                    if let Err(e) = u
                        .request(
                            "logging/setLevel",
                            Some(&text),
                            CallCtx::new(u.config.timeout),
                            true,
                        )
                        .await
                    {
                        tracing::warn!(server = %u.name(), error = %e, "logging/setLevel failed upstream");
                    }
                }
            });
        join_all(calls).await;
        Ok(raw("{}".into()))
    }

    /// Forwards a request upstream, relaying what the server sends while it
    /// works (progress, logs, server-to-client requests) to the client.
    pub(crate) async fn forward(
        &self,
        sess: &Arc<Session>,
        up: &Upstream,
        method: &str,
        mut params: Map<String, Value>,
        out: &Arc<dyn Outbound>,
        policy: Policy,
    ) -> Result<Box<RawValue>, UpstreamError> {
        let Policy {
            timeout,
            may_retry_sent,
        } = policy;
        // A client's progress token is replaced by one unique on the shared upstream connection.
        let original_token = params
            .get("_meta")
            .and_then(|m| m.get("progressToken"))
            .cloned();
        let mut ctx = CallCtx::new(timeout);
        if original_token.is_some() {
            let token = format!(
                "sluice-{}",
                self.next_progress.fetch_add(1, Ordering::Relaxed)
            );
            ctx.progress_token = Some(format!("\"{token}\""));
            params["_meta"]["progressToken"] = Value::String(token);
        }
        let modern_upstream = up.info().is_some_and(|i| i.is_modern());
        if modern_upstream {
            ctx.client_caps = Some(Arc::new(sess.client_capabilities.clone()));
            ctx.log_level = sess.log_level.lock().unwrap().clone();
            if method == "tools/call" {
                ctx.headers = self.param_headers_for(up, &params).await;
            }
        }
        let (tx, mut rx) = mpsc::unbounded_channel();
        ctx.related = Some(tx);
        // A 2026 upstream may answer `input_required`: a session-era client
        // is asked as server-to-client requests, and the call is sent again
        // with the answers (at most 10 rounds). A 2026 client gets the
        // result as it is and retries through the gateway itself.
        let bridge = modern_upstream && sess.protocol_version != version::MODERN;
        for _round in 0..10 {
            let text = Value::Object(params.clone()).to_string();
            let call = up.request(method, Some(&text), ctx.clone(), may_retry_sent);
            tokio::pin!(call);
            let res = loop {
                tokio::select! {
                    biased;
                    Some(rel) = rx.recv() => self.relay(sess, up, rel, original_token.as_ref(), out),
                    res = &mut call => {
                        while let Ok(rel) = rx.try_recv() {
                            self.relay(sess, up, rel, original_token.as_ref(), out);
                        }
                        break res;
                    }
                }
            };
            let result = res?;
            if !bridge || !result.get().contains("\"input_required\"") {
                return Ok(result);
            }
            let mut r: Map<String, Value> = serde_json::from_str(result.get())
                .map_err(|e| UpstreamError::Protocol(e.to_string()))?;
            if r.get("resultType").and_then(Value::as_str) != Some("input_required") {
                return Ok(result);
            }
            let asks = match r.remove("inputRequests") {
                Some(Value::Object(m)) => m,
                _ => Map::new(),
            };
            let answers = self.ask_inputs(sess, up, asks, out, timeout).await?;
            params.insert("inputResponses".into(), Value::Object(answers));
            match r.remove("requestState") {
                Some(state) => params.insert("requestState".into(), state),
                None => params.remove("requestState"),
            };
        }
        Err(UpstreamError::Protocol(
            "it asked for input more than 10 times in one call".into(),
        ))
    }

    /// Asks a session-era client what a 2026 upstream needs to go on, as
    /// server-to-client requests, and collects the answers by key.
    async fn ask_inputs(
        &self,
        sess: &Session,
        up: &Upstream,
        asks: Map<String, Value>,
        out: &Arc<dyn Outbound>,
        timeout: Duration,
    ) -> Result<Map<String, Value>, UpstreamError> {
        let mut waits = Vec::new();
        for (key, ask) in asks {
            let method = ask
                .get("method")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let params = ask.get("params").map(|p| raw(p.to_string()));
            let (tx, rx) = tokio::sync::oneshot::channel();
            self.ask_client(sess, up.name(), &method, params.as_deref(), tx, out);
            waits.push((key, rx));
        }
        let mut answers = Map::new();
        for (key, rx) in waits {
            match tokio::time::timeout(timeout, rx).await {
                Ok(Ok(Ok(answer))) => {
                    answers.insert(
                        key,
                        serde_json::from_str(answer.get()).unwrap_or(Value::Null),
                    );
                }
                // The client refused or could not answer: that is the call's answer.
                Ok(Ok(Err(error))) => return Err(UpstreamError::Rpc(error)),
                Ok(Err(_)) => {
                    return Err(UpstreamError::Transport(
                        "the client went away before answering the server's question".into(),
                    ));
                }
                Err(_) => return Err(UpstreamError::Timeout(timeout)),
            }
        }
        Ok(answers)
    }

    /// Sends one message of an upstream's call on to the client.
    fn relay(
        &self,
        sess: &Session,
        up: &Upstream,
        rel: Related,
        token: Option<&Value>,
        out: &Arc<dyn Outbound>,
    ) {
        match rel {
            Related::Notification { method, params } => {
                let line = match (method.as_str(), token, params.as_deref()) {
                    ("notifications/progress", Some(tok), Some(p)) => {
                        let mut m: Map<String, Value> = match serde_json::from_str(p.get()) {
                            Ok(m) => m,
                            Err(_) => return,
                        };
                        m.insert("progressToken".into(), tok.clone());
                        jsonrpc::notification(&method, Some(&Value::Object(m).to_string()))
                    }
                    _ => jsonrpc::notification(&method, params.as_deref().map(RawValue::get)),
                };
                if !out.send(line) {
                    self.metrics.drop("client_stream_closed");
                    tracing::debug!(server = %up.name(), %method, "client stream closed; notification not delivered");
                }
            }
            Related::Request {
                method,
                params,
                reply,
            } => {
                self.ask_client(sess, up.name(), &method, params.as_deref(), reply, out);
            }
        }
    }

    /// Relays a server-to-client request to the client under an id of the gateway's own.
    pub(crate) fn ask_client(
        &self,
        sess: &Session,
        server: &str,
        method: &str,
        params: Option<&RawValue>,
        reply: tokio::sync::oneshot::Sender<Reply>,
        out: &Arc<dyn Outbound>,
    ) {
        let needed = match method {
            "sampling/createMessage" => Some("sampling"),
            "elicitation/create" => Some("elicitation"),
            "roots/list" => Some("roots"),
            _ => None,
        };
        if let Some(cap) = needed
            && !sess.client_supports(cap)
        {
            let _ = reply.send(Err(raw(
                RpcError::new(
                    sluice_mcp::jsonrpc::code::METHOD_NOT_FOUND,
                    format!("the client did not declare the `{cap}` capability, so it cannot answer {method}"),
                )
                .to_json(),
            )));
            return;
        }
        let id = Id::Str(format!(
            "sluice-{}-{}",
            self.replica,
            self.next_client_request.fetch_add(1, Ordering::Relaxed)
        ));
        sess.awaiting.lock().unwrap().insert(id.clone(), reply);
        if !out.send(jsonrpc::request(&id, method, params.map(RawValue::get))) {
            self.metrics.drop("client_stream_closed");
            tracing::warn!(%server, %method, "client stream closed; server-to-client request not delivered");
            if let Some(reply) = sess.awaiting.lock().unwrap().remove(&id) {
                let _ = reply.send(Err(raw(RpcError::internal(
                    "the client's stream is closed; the request could not be delivered",
                )
                .to_json())));
            }
        }
    }

    /// A client's answer to a server-to-client request, wherever it is awaited.
    pub(crate) fn handle_response(&self, sess: &Session, resp: Response) {
        let waiting_here = sess.awaiting.lock().unwrap().contains_key(&resp.id);
        if !waiting_here {
            let message = match &resp.outcome {
                Ok(r) => jsonrpc::response_ok(&resp.id, r.get()),
                Err(e) => jsonrpc::response_err(Some(&resp.id), e.get()),
            };
            if self.forward_response(sess, &resp.id, message) {
                return;
            }
        }
        self.handle_local_response(sess, resp);
    }

    /// A client's answer to a request this replica is waiting on.
    pub(crate) fn handle_local_response(&self, sess: &Session, resp: Response) {
        match sess.awaiting.lock().unwrap().remove(&resp.id) {
            Some(reply) => {
                let _ = reply.send(resp.outcome);
            }
            None => {
                self.metrics.drop("response_to_unknown_request");
                tracing::warn!(session = %sess.id, id = %resp.id, "response to no pending request; dropped")
            }
        }
    }

    /// A client's notification.
    pub(crate) async fn handle_notification(&self, sess: &Session, n: Notification) {
        match n.method.as_str() {
            "notifications/initialized" => {}
            "notifications/cancelled" => {
                let raw_id = n
                    .params
                    .as_deref()
                    .and_then(|p| serde_json::from_str::<Value>(p.get()).ok())
                    .and_then(|v| v.get("requestId").cloned());
                let id = raw_id
                    .clone()
                    .and_then(|v| serde_json::from_value::<Id>(v).ok());
                match id.and_then(|id| sess.inflight.lock().unwrap().remove(&id)) {
                    Some(task) => task.abort(),
                    None => match raw_id {
                        // Perhaps another replica runs it.
                        Some(v) => self.forward_cancel(sess, v),
                        None => {
                            tracing::debug!(session = %sess.id, "cancellation without a requestId")
                        }
                    },
                }
            }
            "notifications/roots/list_changed" => {
                for u in self.catalog.servers() {
                    if u.is_connected() {
                        let _ = u
                            .notify(&n.method, n.params.as_deref().map(RawValue::get))
                            .await;
                    }
                }
            }
            other => {
                tracing::debug!(session = %sess.id, method = other, "client notification ignored")
            }
        }
    }

    // ----- lists ------------------------------------------------------------

    /// A merged list, paginated with the gateway's own cursors.
    async fn list(&self, kind: Kind, params: Option<&RawValue>) -> Result<Box<RawValue>, Fail> {
        let p = params_map(params)?;
        let offset = match p.get("cursor") {
            None | Some(Value::Null) => 0,
            Some(Value::String(c)) => cursor::decode(c).ok_or_else(|| {
                RpcError::invalid_params(format!(
                    "Invalid cursor `{c}`: not one this gateway issued"
                ))
            })?,
            Some(_) => {
                return Err(RpcError::invalid_params("params.cursor must be a string").into());
            }
        };
        let lists = join_all(
            self.catalog
                .servers()
                .iter()
                .map(|u| self.upstream_list(u.id, kind)),
        )
        .await;
        if kind == Kind::Tools {
            let current: Vec<(ServerId, Arc<Vec<Value>>)> = self
                .catalog
                .servers()
                .iter()
                .zip(&lists)
                .filter_map(|(u, l)| l.as_ref().ok().map(|l| (u.id, l.clone())))
                .collect();
            let ids: Vec<usize> = current
                .iter()
                .map(|(_, l)| Arc::as_ptr(l) as usize)
                .collect();
            let fresh = {
                let mut seen = self.shadow_checked.lock().unwrap();
                let fresh = *seen != ids;
                *seen = ids;
                fresh
            };
            if fresh {
                self.report_shadowing(&current);
            }
        }
        let mut items = Vec::new();
        let mut seen = HashSet::new();
        for (up, list) in self.catalog.servers().iter().zip(lists) {
            let list = match list {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(server = %up.name(), list = kind.method(), error = %e, "listing failed; server's items omitted");
                    continue;
                }
            };
            // Held-back tools are hidden (a released one shows again).
            let held: Vec<String> = if kind == Kind::Tools {
                let mut still = Vec::new();
                for n in self.catalog.held_names(up.id) {
                    if self.hold_of(up.id, &n).await.is_some() {
                        still.push(n);
                    }
                }
                still
            } else {
                Vec::new()
            };
            for item in list.iter() {
                let mut item = item.clone();
                let key = match kind {
                    Kind::Tools | Kind::Prompts => {
                        let Some(name) = item.get("name").and_then(Value::as_str) else {
                            continue;
                        };
                        if held.iter().any(|h| h == name) {
                            continue;
                        }
                        let exposed = names::expose(&up.config.prefix, name);
                        item["name"] = Value::String(exposed.clone());
                        exposed
                    }
                    Kind::Resources => item
                        .get("uri")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                    Kind::Templates => item
                        .get("uriTemplate")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                };
                if !seen.insert(key.clone()) {
                    tracing::warn!(server = %up.name(), name = %key, "duplicate {} hidden; an earlier server provides it", kind.noun());
                    continue;
                }
                items.push(item);
            }
        }
        if kind == Kind::Tools && self.config.gateway.health_tool {
            items.push(report::health_tool());
        }
        let total = items.len();
        let start = offset.min(total);
        let end = (start + self.config.gateway.page_size).min(total);
        let slice: Vec<Value> = items.drain(start..end).collect();
        let mut result = Map::new();
        result.insert(kind.key().into(), Value::Array(slice));
        if end < total {
            result.insert("nextCursor".into(), Value::String(cursor::encode(end)));
        }
        Ok(raw(Value::Object(result).to_string()))
    }

    /// One upstream's full list: cached while the server promises list_changed
    /// notifications, refetched otherwise; the last good copy on failure.
    pub(crate) async fn upstream_list(
        &self,
        u: ServerId,
        kind: Kind,
    ) -> Result<Arc<Vec<Value>>, UpstreamError> {
        let up = self.catalog.server(u);
        let cached = self.catalog.list(u, kind);
        let Some(info) = up.info() else {
            return cached.ok_or_else(|| UpstreamError::Unavailable("not connected".into()));
        };
        if !info.has(kind.capability()) {
            return Ok(Arc::new(Vec::new()));
        }
        if let Some(c) = &cached
            && info.flag(kind.capability(), "listChanged")
        {
            return Ok(c.clone());
        }
        match self.fetch_all(up, kind).await {
            Ok(list) => {
                let held = if kind == Kind::Tools {
                    self.defend_tools(u, &list).await
                } else {
                    HashMap::new()
                };
                let list = Arc::new(list);
                self.catalog.store_list(u, kind, list.clone());
                if kind == Kind::Tools {
                    self.catalog.set_held(u, held);
                }
                Ok(list)
            }
            Err(e) => cached.ok_or(e),
        }
    }

    async fn fetch_all(&self, up: &Upstream, kind: Kind) -> Result<Vec<Value>, UpstreamError> {
        let mut all = Vec::new();
        let mut next: Option<String> = None;
        for _ in 0..1000 {
            let params = next.as_ref().map(|c| json!({"cursor": c}).to_string());
            let r = up
                .request(
                    kind.method(),
                    params.as_deref(),
                    CallCtx::new(up.config.timeout),
                    true,
                )
                .await?;
            let mut page: Map<String, Value> = serde_json::from_str(r.get()).map_err(|e| {
                UpstreamError::Protocol(format!("bad {} result: {e}", kind.method()))
            })?;
            match page.remove(kind.key()) {
                Some(Value::Array(items)) => all.extend(items),
                _ => {
                    return Err(UpstreamError::Protocol(format!(
                        "{} result has no `{}` array",
                        kind.method(),
                        kind.key()
                    )));
                }
            }
            match page.remove("nextCursor") {
                Some(Value::String(c)) if !c.is_empty() => next = Some(c),
                _ => return Ok(all),
            }
        }
        Err(UpstreamError::Protocol(format!(
            "{} never stopped paginating",
            kind.method()
        )))
    }

    pub(crate) fn cached_tools(&self, u: ServerId) -> Option<Arc<Vec<Value>>> {
        self.catalog.list(u, Kind::Tools)
    }

    /// Why tool `name` of server `u` is held back, if it is. A tool held for
    /// a changed definition (or because the pin store did not answer) is
    /// checked again, so an approval (or the store's return) takes effect at once.
    pub(crate) async fn hold_of(&self, u: ServerId, name: &str) -> Option<crate::defence::Hold> {
        let hold = self.catalog.hold(u, name)?;
        if hold.code != "tool_definition_changed"
            && hold.code != crate::defence::PIN_STORE_UNAVAILABLE
        {
            return Some(hold);
        }
        let tool = self.catalog.tool(u, name)?;
        match self.check_pin(self.catalog.server(u), &tool).await {
            Some(h) => {
                if h.code != hold.code {
                    self.catalog.set_hold(u, name, h.clone());
                }
                Some(h)
            }
            None => {
                let why = if hold.code == crate::defence::PIN_STORE_UNAVAILABLE {
                    "pin store answers again"
                } else {
                    "changed definition approved"
                };
                tracing::info!(server = %self.catalog.server(u).name(), tool = name, "{why}; tool released");
                self.catalog.release(u, name);
                None
            }
        }
    }

    // ----- routing ----------------------------------------------------------

    /// The `Mcp-Param-*` headers a 2026 upstream expects for a call, from the
    /// `x-mcp-header` annotations of its tool.
    async fn param_headers_for(
        &self,
        up: &Upstream,
        params: &Map<String, Value>,
    ) -> Vec<(String, String)> {
        let Some(name) = params.get("name").and_then(Value::as_str) else {
            return Vec::new();
        };
        let list = match self.cached_tools(up.id) {
            Some(l) => l,
            None => match self.upstream_list(up.id, Kind::Tools).await {
                Ok(l) => l,
                Err(_) => return Vec::new(),
            },
        };
        let Some(tool) = crate::catalog::find_tool(&list, name) else {
            return Vec::new();
        };
        let args = params.get("arguments").and_then(Value::as_object);
        crate::modern::param_headers(tool)
            .into_iter()
            .filter_map(|(h, arg)| {
                let value = sluice_mcp::headers::param_header(args?.get(&arg)?)?;
                Some((format!("Mcp-Param-{h}"), value))
            })
            .collect()
    }

    /// The definition of an exposed tool, as its server listed it.
    pub(crate) fn tool_definition(&self, exposed: &str) -> Option<(ServerId, Value)> {
        let (u, name) = self.catalog.lookup_name(Kind::Tools, exposed)?;
        Some((u, self.catalog.tool(u, &name)?))
    }

    /// Exposed tool or prompt name → (upstream, the upstream's own name).
    pub(crate) async fn route_name(
        &self,
        kind: Kind,
        exposed: &str,
    ) -> Result<(ServerId, String), Fail> {
        if let Some(r) = self.catalog.lookup_name(kind, exposed) {
            return Ok(r);
        }
        // Lists not fetched yet (a client may call before listing): fetch, then look again.
        let unloaded: Vec<ServerId> = self
            .catalog
            .servers()
            .iter()
            .map(|u| u.id)
            .filter(|u| !self.catalog.has_list(*u, kind))
            .collect();
        if !unloaded.is_empty() {
            join_all(unloaded.iter().map(|u| self.upstream_list(*u, kind))).await;
            if let Some(r) = self.catalog.lookup_name(kind, exposed) {
                return Ok(r);
            }
        }
        let noun = kind.noun();
        let owner = exposed
            .split_once(names::SEP)
            .and_then(|(p, rest)| {
                self.catalog
                    .servers()
                    .iter()
                    .find(|u| u.config.prefix == p)
                    .map(|u| (u, rest))
            })
            .or_else(|| {
                self.catalog
                    .servers()
                    .iter()
                    .find(|u| u.config.prefix.is_empty())
                    .map(|u| (u, exposed))
            });
        match owner {
            // The server's list could not be fetched, or each session has its
            // own instance whose list may differ: let the server itself decide.
            Some((u, rest))
                if u.config.isolation == sluice_config::Isolation::PerSession
                    || !self.catalog.has_list(u.id, kind) =>
            {
                Ok((u.id, rest.to_string()))
            }
            Some((u, rest)) => Err(RpcError::invalid_params(format!(
                "Unknown {noun} `{exposed}`: server `{}` has no {noun} named `{rest}`",
                u.name()
            ))
            .into()),
            None => Err(RpcError::invalid_params(format!(
                "Unknown {noun} `{exposed}`: it maps to no configured server (names look like `server__{noun}`)"
            ))
            .into()),
        }
    }

    /// Resource URI → upstream: listed URIs, then template prefixes, then the
    /// only resource server, then the only server using that URI scheme.
    async fn route_uri(&self, uri: &str) -> Result<ServerId, Fail> {
        if let Some(u) = self.catalog.lookup_uri(uri) {
            return Ok(u);
        }
        let unloaded: Vec<ServerId> = self
            .catalog
            .servers()
            .iter()
            .map(|u| u.id)
            .filter(|u| {
                !self.catalog.has_list(*u, Kind::Resources)
                    || !self.catalog.has_list(*u, Kind::Templates)
            })
            .collect();
        if !unloaded.is_empty() {
            join_all(unloaded.iter().flat_map(|u| {
                [
                    self.upstream_list(*u, Kind::Resources),
                    self.upstream_list(*u, Kind::Templates),
                ]
            }))
            .await;
            if let Some(u) = self.catalog.lookup_uri(uri) {
                return Ok(u);
            }
        }
        let with_resources: Vec<ServerId> = self
            .catalog
            .servers()
            .iter()
            .filter(|u| u.last_info().is_some_and(|i| i.has("resources")))
            .map(|u| u.id)
            .collect();
        if let [only] = with_resources[..] {
            return Ok(only);
        }
        if let Some((scheme, _)) = uri.split_once("://") {
            let scheme = format!("{scheme}://");
            let owners: Vec<ServerId> = with_resources
                .iter()
                .copied()
                .filter(|u| self.catalog.uses_scheme(*u, &scheme))
                .collect();
            if let [only] = owners[..] {
                return Ok(only);
            }
        }
        Err(RpcError::invalid_params(format!(
            "Unknown resource `{uri}`: no configured server lists it or a template matching it"
        ))
        .into())
    }

    // ----- messages tied to no request -------------------------------------

    async fn run_events(
        gw: std::sync::Weak<Gateway>,
        mut rx: mpsc::UnboundedReceiver<UpstreamEvent>,
    ) {
        while let Some(ev) = rx.recv().await {
            let Some(gw) = gw.upgrade() else { return };
            gw.on_event(&gw, ev);
        }
    }

    fn on_event(&self, this: &Arc<Gateway>, ev: UpstreamEvent) {
        match ev {
            UpstreamEvent::Connected { server } => {
                self.catalog.invalidate(server, &Kind::ALL);
                let g = this.clone();
                tokio::spawn(async move {
                    let ok = g.check_instructions(server).await;
                    g.catalog.set_instructions_allowed(server, ok);
                });
                let info = self.catalog.server(server).info();
                for (cap, method) in [
                    ("tools", "notifications/tools/list_changed"),
                    ("prompts", "notifications/prompts/list_changed"),
                    ("resources", "notifications/resources/list_changed"),
                ] {
                    if info.as_ref().is_some_and(|i| i.has(cap)) {
                        self.broadcast(&jsonrpc::notification(method, None));
                    }
                }
            }
            UpstreamEvent::Disconnected { server, reason } => {
                tracing::warn!(server = %self.catalog.server(server).name(), %reason, "upstream disconnected; its tools stay listed and fail fast");
            }
            UpstreamEvent::Notification {
                server,
                method,
                params,
            } => {
                let kinds: &[Kind] = match method.as_str() {
                    "notifications/tools/list_changed" => &[Kind::Tools],
                    "notifications/prompts/list_changed" => &[Kind::Prompts],
                    "notifications/resources/list_changed" => &[Kind::Resources, Kind::Templates],
                    _ => &[],
                };
                let line = jsonrpc::notification(&method, params.as_deref().map(RawValue::get));
                if !kinds.is_empty() {
                    self.catalog.invalidate(server, kinds);
                    self.broadcast(&line);
                } else if method == "notifications/resources/updated" {
                    let uri = params
                        .as_deref()
                        .and_then(|p| serde_json::from_str::<Value>(p.get()).ok())
                        .and_then(|v| v.get("uri")?.as_str().map(str::to_string))
                        .unwrap_or_default();
                    let subscribed: Vec<Arc<Session>> = self
                        .sessions
                        .read()
                        .unwrap()
                        .values()
                        .filter(|s| s.subscriptions.lock().unwrap().contains(&uri))
                        .cloned()
                        .collect();
                    for s in subscribed {
                        this.deliver_unsolicited(&s, line.clone());
                    }
                } else if method == "notifications/tasks/status" {
                    let id = params
                        .as_deref()
                        .and_then(|p| serde_json::from_str::<Value>(p.get()).ok())
                        .and_then(|v| v.get("taskId")?.as_str().map(str::to_string));
                    let owner = id.and_then(|id| self.tasks.lock().unwrap().get(&id).cloned());
                    let sess =
                        owner.and_then(|(_, s)| self.sessions.read().unwrap().get(&s).cloned());
                    match sess {
                        Some(s) => this.deliver_unsolicited(&s, line),
                        None => tracing::debug!("task status for no known session; dropped"),
                    }
                } else if method == "notifications/message" {
                    for s in self.sessions.read().unwrap().values() {
                        if s.log_level.lock().unwrap().is_some() {
                            s.send_unsolicited(line.clone());
                        }
                    }
                } else {
                    tracing::debug!(server = %self.catalog.server(server).name(), %method, "upstream notification for no call; dropped");
                }
            }
            UpstreamEvent::Request {
                server,
                method,
                params,
                reply,
            } => {
                // Tied to no call: ask the most recently active session that can answer.
                let cap = match method.as_str() {
                    "sampling/createMessage" => "sampling",
                    "elicitation/create" => "elicitation",
                    "roots/list" => "roots",
                    _ => "",
                };
                let target = self
                    .sessions
                    .read()
                    .unwrap()
                    .values()
                    .filter(|s| {
                        (cap.is_empty() || s.client_supports(cap))
                            && s.unsolicited.lock().unwrap().is_some()
                    })
                    .max_by_key(|s| s.last_active_ms())
                    .cloned();
                let name = self.catalog.server(server).name().to_string();
                match target {
                    Some(s) => {
                        let out = s.unsolicited.lock().unwrap().clone();
                        if let Some(out) = out {
                            self.ask_client(&s, &name, &method, params.as_deref(), reply, &out);
                        }
                    }
                    None => {
                        self.metrics.drop("no_client_for_request");
                        let _ = reply.send(Err(raw(
                            RpcError::internal(format!(
                                "no connected client can answer {method} (none has an open stream and the capability)"
                            ))
                            .to_json(),
                        )));
                    }
                }
            }
        }
    }

    /// The `sluice__health` tool's answer.
    pub(crate) fn health_result(&self, params: &Map<String, Value>) -> Box<RawValue> {
        let only = params
            .get("arguments")
            .and_then(|a| a.get("server"))
            .and_then(Value::as_str);
        let chosen: Vec<&Arc<Upstream>> = self
            .catalog
            .servers()
            .iter()
            .filter(|u| only.is_none_or(|n| n == u.name()))
            .collect();
        if chosen.is_empty() {
            let names: Vec<&str> = self.catalog.servers().iter().map(|u| u.name()).collect();
            return raw(json!({
                "content": [{"type": "text", "text": format!("No server is named `{}`; servers: {}", only.unwrap_or_default(), names.join(", "))}],
                "isError": true
            }).to_string());
        }
        let text: Vec<String> = chosen.iter().map(|u| report::sentence(u)).collect();
        let servers: Vec<Value> = chosen.iter().map(|u| report::server(u)).collect();
        raw(json!({
            "content": [{"type": "text", "text": text.join("\n")}],
            "structuredContent": {"servers": servers}
        })
        .to_string())
    }

    /// Prometheus exposition text.
    pub(crate) fn metrics_text(&self) -> String {
        self.metrics
            .render(self.catalog.servers(), self.session_count())
    }

    /// Every server's state, as served at `/admin/servers`.
    pub(crate) fn servers_json(&self) -> Value {
        Value::Array(
            self.catalog
                .servers()
                .iter()
                .map(|u| report::server(u))
                .collect(),
        )
    }

    fn broadcast(&self, line: &str) {
        for s in self.sessions.read().unwrap().values() {
            s.send_unsolicited(line.to_string());
        }
    }
}

/// How a forwarded request may be retried and how long it may take.
pub(crate) struct Policy {
    pub timeout: Duration,
    /// The request is safe to repeat even if it may have reached the server.
    pub may_retry_sent: bool,
}

/// The gateway's own tool reporting server health.
pub(crate) const HEALTH_TOOL: &str = "sluice__health";

/// A low-cardinality label for a method.
pub(crate) fn metric_method(m: &str) -> &'static str {
    const KNOWN: [&str; 14] = [
        "ping",
        "tools/list",
        "tools/call",
        "prompts/list",
        "prompts/get",
        "resources/list",
        "resources/templates/list",
        "resources/read",
        "resources/subscribe",
        "resources/unsubscribe",
        "completion/complete",
        "logging/setLevel",
        "initialize",
        "sluice",
    ];
    KNOWN.iter().copied().find(|k| *k == m).unwrap_or("other")
}

/// `params.{field}` as a string; -32602 naming the method and field otherwise.
pub(crate) fn required_str<'a>(
    p: &'a Map<String, Value>,
    method: &str,
    field: &str,
) -> Result<&'a str, RpcError> {
    p.get(field).and_then(Value::as_str).ok_or_else(|| {
        RpcError::invalid_params(format!("{method} needs params.{field} (a string)"))
    })
}

/// `params` as an object (absent = empty); anything else is -32602.
pub(crate) fn params_map(params: Option<&RawValue>) -> Result<Map<String, Value>, RpcError> {
    match params {
        None => Ok(Map::new()),
        Some(p) => serde_json::from_str(p.get())
            .map_err(|_| RpcError::invalid_params("params must be an object")),
    }
}

/// Runs `done` once: with the response, or with `None` if the task was aborted.
struct DoneGuard(Option<Box<dyn FnOnce(Option<String>) + Send>>);

impl DoneGuard {
    fn complete(mut self, line: String) {
        if let Some(f) = self.0.take() {
            f(Some(line));
        }
    }
}

impl Drop for DoneGuard {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f(None);
        }
    }
}

#[cfg(test)]
impl Gateway {
    /// Tests: the tool list of server `u` as if it had been fetched, with
    /// `held` tools held back.
    pub(crate) fn seed_tools(
        &self,
        u: ServerId,
        list: Vec<Value>,
        held: Vec<(&str, &'static str)>,
    ) {
        self.catalog.store_list(u, Kind::Tools, Arc::new(list));
        self.catalog.set_held(
            u,
            held.into_iter()
                .map(|(name, code)| {
                    (
                        name.to_string(),
                        crate::defence::Hold {
                            code,
                            reason: format!("test hold {code}"),
                        },
                    )
                })
                .collect(),
        );
    }
}
