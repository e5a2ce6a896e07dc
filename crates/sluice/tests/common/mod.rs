//! Test helpers: run the built `sluice` binary on a free loopback port and
//! talk to it over HTTP. Each gateway is stopped by its own pid on drop.

#![allow(dead_code)]

use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub(crate) struct Gateway {
    child: Child,
    pub url: String,
    pub base: String,
    pub dir: PathBuf,
    pub logs: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

/// A unique scratch directory under the system temp dir.
pub(crate) fn scratch(tag: &str) -> PathBuf {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let d = std::env::temp_dir().join(format!("sluice-test-{tag}-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Path of a binary built next to `sluice` (e.g. `sluice-fixture`).
pub(crate) fn sibling_bin(name: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_BIN_EXE_sluice"))
        .parent()
        .unwrap()
        .join(name);
    assert!(
        p.exists(),
        "{} is not built; run `cargo build --workspace --bins` first",
        p.display()
    );
    p
}

impl Gateway {
    /// Starts `sluice serve` with `config` (TOML) on 127.0.0.1:0.
    pub(crate) fn start(tag: &str, config: &str) -> Gateway {
        let dir = scratch(tag);
        let path = dir.join("sluice.toml");
        std::fs::write(&path, config).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["serve", "--config"])
            .arg(&path)
            .args(["--listen", "127.0.0.1:0"])
            .env("SLUICE_LOG", "info")
            .stdin(Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("sluice starts");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let logs = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(u) = line.strip_prefix("sluice listening on ") {
                    let _ = tx.send(u.trim().to_string());
                }
                sink.lock().unwrap().push(line);
            }
        });
        let url = match rx.recv_timeout(Duration::from_secs(90)) {
            Ok(u) => u,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "sluice did not start; logs:\n{}",
                    logs.lock().unwrap().join("\n")
                );
            }
        };
        let base = url.trim_end_matches("/mcp").to_string();
        Gateway {
            child,
            url,
            base,
            dir,
            logs,
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn logs(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    /// The gateway's `/metrics` text.
    pub(crate) async fn metrics(&self) -> String {
        http()
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .expect("metrics answered")
            .text()
            .await
            .expect("metrics text")
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub(crate) struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Reply {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
    /// JSON-RPC messages in the body, whether JSON or SSE.
    pub(crate) fn messages(&self) -> Vec<Value> {
        if self.body.trim_start().starts_with('{') {
            return vec![self.json()];
        }
        self.body
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter(|d| !d.is_empty())
            .map(|d| serde_json::from_str(d).unwrap())
            .collect()
    }
    /// The message carrying a result or error.
    pub(crate) fn response(&self) -> Value {
        self.messages()
            .into_iter()
            .find(|m| m.get("result").is_some() || m.get("error").is_some())
            .unwrap_or_else(|| panic!("no response in: {}", self.body))
    }
    pub(crate) fn error_code(&self) -> i64 {
        self.response()["error"]["code"]
            .as_i64()
            .unwrap_or_else(|| panic!("no error in: {}", self.body))
    }
}

/// An HTTP client (rustls with the ring provider, as the gateway uses).
pub(crate) fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

pub(crate) struct Client {
    pub http: reqwest::Client,
    pub url: String,
    pub session: Option<String>,
}

impl Client {
    pub(crate) fn new(url: &str) -> Client {
        Client {
            http: http(),
            url: url.to_string(),
            session: None,
        }
    }

    pub(crate) fn post_builder(&self, body: impl Into<reqwest::Body>) -> reqwest::RequestBuilder {
        let mut rb = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(body);
        if let Some(s) = &self.session {
            rb = rb.header("mcp-session-id", s);
        }
        rb
    }

    pub(crate) async fn send(rb: reqwest::RequestBuilder) -> Reply {
        let r = rb.send().await.expect("request sent");
        Reply {
            status: r.status().as_u16(),
            headers: r.headers().clone(),
            body: r.text().await.unwrap(),
        }
    }

    pub(crate) async fn post(&self, body: impl Into<reqwest::Body>) -> Reply {
        Self::send(self.post_builder(body)).await
    }

    pub(crate) async fn initialize(&mut self) -> Value {
        self.initialize_with(
            json!({"sampling": {}, "elicitation": {}, "roots": {"listChanged": true}}),
        )
        .await
    }

    pub(crate) async fn initialize_with(&mut self, caps: Value) -> Value {
        let r = self
            .post(
                json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{
                    "protocolVersion":"2025-11-25","capabilities":caps,
                    "clientInfo":{"name":"sluice-tests","version":"1"}}})
                .to_string(),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        self.session = Some(r.headers["mcp-session-id"].to_str().unwrap().to_string());
        let n = self
            .post(json!({"jsonrpc":"2.0","method":"notifications/initialized"}).to_string())
            .await;
        assert_eq!(n.status, 202, "{}", n.body);
        r.json()["result"].clone()
    }

    pub(crate) async fn request(&self, id: i64, method: &str, params: Value) -> Reply {
        self.post(json!({"jsonrpc":"2.0","id":id,"method":method,"params":params}).to_string())
            .await
    }

    /// `GET` of this session's stream at `url` (any replica), resuming after
    /// `last_event_id`: the raw response, for tests that read it as it comes.
    pub(crate) async fn resume(&self, url: &str, last_event_id: &str) -> reqwest::Response {
        self.http
            .get(url)
            .header("accept", "text/event-stream")
            .header("mcp-session-id", self.session.clone().expect("initialized"))
            .header("last-event-id", last_event_id)
            .send()
            .await
            .expect("resume request sent")
    }

    /// A request's result; panics on an error.
    pub(crate) async fn call(&self, method: &str, params: Value) -> Value {
        let r = self.request(7, method, params).await;
        let resp = r.response();
        assert!(resp.get("error").is_none(), "{method} failed: {}", r.body);
        resp["result"].clone()
    }
}

/// The records of an audit log once `ready` holds for them (the writer
/// writes in batches: this waits up to 10 s). Panics with the log otherwise.
pub(crate) async fn audit_records(
    path: &std::path::Path,
    ready: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let records: Vec<Value> = text
            .split_inclusive('\n')
            .filter(|l| l.ends_with('\n'))
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        if ready(&records) {
            return records;
        }
        if std::time::Instant::now() > deadline {
            panic!("audit log {} never got there:\n{text}", path.display());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Records of one `event` kind.
pub(crate) fn of_kind<'a>(records: &'a [Value], event: &str) -> Vec<&'a Value> {
    records.iter().filter(|r| r["event"] == event).collect()
}

/// Runs `sluice audit verify` on a log: (exit code, stdout + stderr).
pub(crate) fn audit_verify(path: &std::path::Path, key_env: Option<(&str, &str)>) -> (i32, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
    cmd.args(["audit", "verify"]).arg(path);
    if let Some((var, key)) = key_env {
        cmd.args(["--key-env", var]).env(var, key);
    }
    let out = cmd.output().expect("sluice runs");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// A redis-server of the test's own on a loopback port, stopped (by its pid) when dropped.
pub(crate) struct Redis {
    child: std::process::Child,
    pub(crate) port: u16,
}

impl Redis {
    pub(crate) fn start(port: u16) -> Redis {
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not start on {port}"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Redis { child, port }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
