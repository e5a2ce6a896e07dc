//! Starting one server, reading what it offers the model, and stopping it.

use serde_json::{Value, json};
use sluice_config::Server;
use sluice_upstream::{CallCtx, Upstream, UpstreamError, UpstreamEvent};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Set in every stdio server's environment (`PID.INDEX`), so every process a server
/// started can be found and stopped, even one that left its process group.
const TAG_VAR: &str = "SLUICE_SCAN_TAG";

/// How long a stopping server gets between SIGTERM and SIGKILL.
pub(super) const STOP_GRACE: Duration = Duration::from_secs(2);
/// A server that keeps paginating past this many pages is cut off.
const MAX_PAGES: usize = 1000;

/// What one server offered.
#[derive(Debug, Default)]
pub(super) struct Offer {
    pub protocol_version: Option<String>,
    pub server_info: Option<Value>,
    pub instructions: Option<String>,
    pub tools: Vec<Value>,
    pub prompts: Vec<Value>,
    pub resources: Vec<Value>,
    pub resource_templates: Vec<Value>,
}

/// The outcome of reading one server.
#[derive(Debug)]
pub(super) struct Collected {
    /// `None` when nothing could be read (did not start, no initialize).
    pub offer: Option<Offer>,
    /// Everything that went wrong; non-empty means the scan is incomplete.
    pub errors: Vec<String>,
    pub elapsed: Duration,
}

/// Upstreams that are running, so an interrupted scan can stop them.
pub(super) type Live = Arc<Mutex<Vec<Arc<Upstream>>>>;

/// The shared pieces every server needs.
pub(super) struct Env {
    pub client: sluice_upstream::HttpClient,
    pub events: mpsc::UnboundedSender<UpstreamEvent>,
    pub health: sluice_config::Health,
    pub live: Live,
    pub stderr: StderrTail,
}

/// Starts `server`, lists its tools, prompts, resources and resource templates
/// (every page) within `timeout`, and stops it.
pub(super) async fn collect(
    index: usize,
    mut server: Server,
    timeout: Duration,
    env: &Env,
) -> Collected {
    let started = Instant::now();
    let name = server.name.clone();
    let tag = format!("{}.{index}", std::process::id());
    if let sluice_config::Transport::Stdio { env, .. } = &mut server.transport {
        env.push((TAG_VAR.into(), sluice_config::Secret(tag.clone())));
    }
    let up = Upstream::new(
        sluice_upstream::ServerId::new(index as u32),
        server,
        env.health.clone(),
        env.client.clone(),
        env.events.clone(),
    );
    env.live.lock().unwrap().push(up.clone());
    let deadline = tokio::time::Instant::now() + timeout;
    let phase = std::cell::Cell::new("starting the server and waiting for initialize");
    let mut errors = Vec::new();
    let work = async {
        let first = up.start();
        let _ = first.await;
        // The supervisor reports the first attempt just before it records the
        // outcome: wait for either the connection or the error to show.
        let info = loop {
            if let Some(info) = up.info() {
                break info;
            }
            if let Some((_, e)) = up.last_error() {
                return Err(e);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let mut offer = Offer {
            protocol_version: Some(info.protocol_version.clone()),
            server_info: Some(info.server_info.clone()),
            instructions: info.instructions.clone(),
            ..Offer::default()
        };
        let mut list_errors = Vec::new();
        for (cap, method, key) in [
            ("tools", "tools/list", "tools"),
            ("prompts", "prompts/list", "prompts"),
            ("resources", "resources/list", "resources"),
            ("resources", "resources/templates/list", "resourceTemplates"),
        ] {
            if !info.has(cap) {
                continue;
            }
            phase.set(method);
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            match list_all(&up, method, key, remaining).await {
                Ok(items) => match key {
                    "tools" => offer.tools = items,
                    "prompts" => offer.prompts = items,
                    "resources" => offer.resources = items,
                    _ => offer.resource_templates = items,
                },
                // resources/templates/list is optional for a server offering resources.
                Err(e) if method == "resources/templates/list" && e.contains("-32601") => {}
                Err(e) => list_errors.push(format!("{method}: {e}")),
            }
        }
        Ok((offer, list_errors))
    };
    let offer = match tokio::time::timeout_at(deadline, work).await {
        Ok(Ok((offer, list_errors))) => {
            errors.extend(list_errors);
            Some(offer)
        }
        Ok(Err(why)) => {
            errors.push(format!("could not start: {why}"));
            None
        }
        Err(_) => {
            errors.push(format!(
                "timed out after {} while {}",
                human(timeout),
                phase.get()
            ));
            None
        }
    };
    up.shutdown(STOP_GRACE).await;
    env.live.lock().unwrap().retain(|u| !Arc::ptr_eq(u, &up));
    // A server stopped before it finished initialize is not in the upstream's hands
    // yet, and a server may leave processes behind: stop whatever carries its tag.
    reap_tagged(&format!("{TAG_VAR}={tag}"), STOP_GRACE).await;
    if offer.is_none() {
        // The last lines the server wrote on stderr usually say why it failed.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let tail = env.stderr.take(&name);
        if !tail.is_empty() {
            let shown: Vec<&str> = tail
                .iter()
                .rev()
                .take(5)
                .rev()
                .map(String::as_str)
                .collect();
            if let Some(last) = errors.last_mut() {
                last.push_str(&format!(
                    "; the server's stderr ended: {}",
                    shown.join(" ⏎ ")
                ));
            }
        }
    }
    Collected {
        offer,
        errors,
        elapsed: started.elapsed(),
    }
}

async fn list_all(
    up: &Upstream,
    method: &str,
    key: &str,
    budget: Duration,
) -> Result<Vec<Value>, String> {
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let params = cursor.as_ref().map(|c| json!({ "cursor": c }).to_string());
        let raw = up
            .request(method, params.as_deref(), CallCtx::new(budget), true)
            .await
            .map_err(|e| error_text(&e))?;
        let mut page: serde_json::Map<String, Value> = serde_json::from_str(raw.get())
            .map_err(|e| format!("the result is not a JSON object: {e}"))?;
        match page.remove(key) {
            Some(Value::Array(items)) => all.extend(items),
            _ => return Err(format!("the result has no `{key}` array")),
        }
        match page.remove("nextCursor") {
            Some(Value::String(c)) if !c.is_empty() => {
                if cursor.as_deref() == Some(c.as_str()) {
                    return Err("the server returned the same cursor twice".into());
                }
                cursor = Some(c);
            }
            _ => return Ok(all),
        }
    }
    Err(format!("still paginating after {MAX_PAGES} pages"))
}

/// An upstream error in words (JSON-RPC errors with their code and message).
fn error_text(e: &UpstreamError) -> String {
    match e {
        UpstreamError::Rpc(raw) => {
            let v: Value = serde_json::from_str(raw.get()).unwrap_or(Value::Null);
            let code = v.get("code").and_then(Value::as_i64).unwrap_or(0);
            let msg = v.get("message").and_then(Value::as_str).unwrap_or("");
            format!("the server returned error {code}: {msg}")
        }
        UpstreamError::Unauthorized(status) => format!(
            "the server refused the request (HTTP {status}); sluice scan sends only the headers in the config"
        ),
        e => format!("the server {e}"),
    }
}

pub(super) fn human(d: Duration) -> String {
    if d.as_millis().is_multiple_of(1000) {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

/// Answers what servers ask the client during a scan: roots are empty; sampling
/// and elicitation are refused.
pub(super) async fn answer_server_requests(mut events: mpsc::UnboundedReceiver<UpstreamEvent>) {
    while let Some(ev) = events.recv().await {
        if let UpstreamEvent::Request { method, reply, .. } = ev {
            let answer = if method == "roots/list" {
                Ok(raw(r#"{"roots":[]}"#))
            } else {
                Err(raw(
                    r#"{"code":-32601,"message":"sluice scan does not answer server requests"}"#,
                ))
            };
            let _ = reply.send(answer);
        }
    }
}

fn raw(s: &str) -> Box<serde_json::value::RawValue> {
    serde_json::value::RawValue::from_string(s.to_string()).expect("valid JSON")
}

/// The last lines each stdio server wrote on stderr (logged by sluice-upstream
/// under the target `sluice::upstream::stderr`).
#[derive(Clone, Default)]
pub(super) struct StderrTail(Arc<Mutex<HashMap<String, VecDeque<String>>>>);

const TAIL_LINES: usize = 20;
const TAIL_LINE_CHARS: usize = 300;

impl StderrTail {
    pub(super) fn take(&self, server: &str) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .remove(server)
            .map(Vec::from)
            .unwrap_or_default()
    }

    fn push(&self, server: String, line: String) {
        let mut map = self.0.lock().unwrap();
        let q = map.entry(server).or_default();
        if q.len() == TAIL_LINES {
            q.pop_front();
        }
        q.push_back(line.chars().take(TAIL_LINE_CHARS).collect());
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for StderrTail {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if event.metadata().target() != "sluice::upstream::stderr" {
            return;
        }
        #[derive(Default)]
        struct Fields {
            server: Option<String>,
            message: Option<String>,
        }
        impl tracing::field::Visit for Fields {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                match field.name() {
                    "server" => self.server = Some(format!("{value:?}")),
                    "message" => self.message = Some(format!("{value:?}")),
                    _ => {}
                }
            }
            fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
                match field.name() {
                    "server" => self.server = Some(value.to_string()),
                    "message" => self.message = Some(value.to_string()),
                    _ => {}
                }
            }
        }
        let mut f = Fields::default();
        event.record(&mut f);
        if let (Some(server), Some(message)) = (f.server, f.message) {
            self.push(server, message);
        }
    }
}

/// Processes whose environment holds `needle` (`VAR=value`, or `VAR=prefix` when
/// `prefix` is set), from /proc.
fn tagged(needle: &str, prefix: bool) -> Vec<i32> {
    let me = std::process::id() as i32;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| *pid != me)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|env| {
                env.split(|b| *b == 0).any(|kv| {
                    if prefix {
                        kv.starts_with(needle.as_bytes())
                    } else {
                        kv == needle.as_bytes()
                    }
                })
            })
        })
        .collect()
}

async fn reap(needle: &str, prefix: bool, grace: Duration) {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let pids = tagged(needle, prefix);
    if pids.is_empty() {
        return;
    }
    for p in &pids {
        let _ = kill(Pid::from_raw(*p), Signal::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline && !tagged(needle, prefix).is_empty() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for p in tagged(needle, prefix) {
        let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
    }
}

/// Stops every process left by one server.
async fn reap_tagged(needle: &str, grace: Duration) {
    reap(needle, false, grace).await;
}

/// Stops every process left by any server of this run.
pub(super) async fn reap_all(grace: Duration) {
    reap(&format!("{TAG_VAR}={}.", std::process::id()), true, grace).await;
}
