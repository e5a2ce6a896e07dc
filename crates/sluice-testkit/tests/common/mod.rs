//! Drive the built `sluice-fixture` binary from tests.
#![allow(dead_code)]

use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::TcpStream;
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_sluice-fixture");
/// How long anything the fixture must do may take: generous for a loaded machine.
pub(crate) const WAIT: Duration = Duration::from_secs(30);

/// The fixture over stdio.
pub(crate) struct StdioFixture {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Lines<BufReader<ChildStdout>>,
    /// Notifications and server-to-client requests seen while waiting.
    pub seen: Vec<Value>,
}

impl StdioFixture {
    pub(crate) fn spawn(args: &[&str]) -> Self {
        let mut child = Command::new(BIN)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn sluice-fixture");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("stdout");
        Self {
            child,
            stdin,
            lines: BufReader::new(stdout).lines(),
            seen: Vec::new(),
        }
    }

    /// Spawn and complete the initialize handshake.
    pub(crate) async fn initialized(args: &[&str], capabilities: Value) -> (Self, Value) {
        let mut fx = Self::spawn(args);
        let init = fx
            .request(
                0,
                "initialize",
                json!({
                    "protocolVersion": "2025-11-25",
                    "capabilities": capabilities,
                    "clientInfo": {"name": "sluice-testkit-tests", "version": "0"},
                }),
            )
            .await;
        fx.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await;
        (fx, init)
    }

    pub(crate) async fn send(&mut self, message: &Value) {
        let mut line = serde_json::to_vec(message).expect("json");
        line.push(b'\n');
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(&line).await.expect("write");
        stdin.flush().await.expect("flush");
    }

    pub(crate) async fn send_raw(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(line.as_bytes()).await.expect("write");
        stdin.write_all(b"\n").await.expect("write");
        stdin.flush().await.expect("flush");
    }

    /// The next message from the fixture.
    pub(crate) async fn recv(&mut self) -> Value {
        let line = tokio::time::timeout(WAIT, self.lines.next_line())
            .await
            .expect("fixture answered in time")
            .expect("read stdout")
            .expect("fixture stdout still open");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    }

    /// Messages until the response with `id`; others go to `seen`.
    pub(crate) async fn response(&mut self, id: i64) -> Value {
        loop {
            let msg = self.recv().await;
            if msg.get("method").is_none() && msg["id"] == json!(id) {
                return msg;
            }
            self.seen.push(msg);
        }
    }

    pub(crate) async fn request(&mut self, id: i64, method: &str, params: Value) -> Value {
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await;
        self.response(id).await
    }

    pub(crate) async fn call(&mut self, id: i64, tool: &str, arguments: Value) -> Value {
        self.request(
            id,
            "tools/call",
            json!({"name": tool, "arguments": arguments}),
        )
        .await
    }

    pub(crate) fn close_stdin(&mut self) {
        drop(self.stdin.take());
    }

    /// Wait for the process to exit on its own.
    pub(crate) async fn wait_exit(&mut self) -> std::process::ExitStatus {
        tokio::time::timeout(WAIT, self.child.wait())
            .await
            .expect("fixture exited in time")
            .expect("wait")
    }

    /// Close stdin and wait for the process to exit.
    pub(crate) async fn shutdown(mut self) -> std::process::ExitStatus {
        drop(self.stdin.take());
        tokio::time::timeout(WAIT, self.child.wait())
            .await
            .expect("fixture exited after stdin closed")
            .expect("wait")
    }
}

/// The fixture over HTTP.
pub(crate) struct HttpFixture {
    _child: Child,
    pub addr: String,
}

impl HttpFixture {
    pub(crate) async fn spawn(args: &[&str]) -> Self {
        let mut child = Command::new(BIN)
            .arg("http")
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn sluice-fixture http");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(WAIT, lines.next_line())
            .await
            .expect("listening line in time")
            .expect("read")
            .expect("a line");
        let url = line
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {line}"));
        let addr = url
            .strip_prefix("http://")
            .and_then(|rest| rest.strip_suffix("/mcp"))
            .unwrap_or_else(|| panic!("unexpected url: {url}"))
            .to_owned();
        Self {
            _child: child,
            addr,
        }
    }

    /// One HTTP/1.1 exchange on a fresh connection (`Connection: close`).
    pub(crate) async fn exchange(
        &self,
        method: &str,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> HttpReply {
        let body = body
            .map(|b| serde_json::to_vec(b).expect("json"))
            .unwrap_or_default();
        let mut req = format!(
            "{method} /mcp HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
            req.push_str(&format!("Host: {}\r\n", self.addr));
        }
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        let mut stream = TcpStream::connect(&self.addr).await.expect("connect");
        stream.write_all(req.as_bytes()).await.expect("write head");
        stream.write_all(&body).await.expect("write body");
        let mut raw = Vec::new();
        tokio::time::timeout(WAIT, stream.read_to_end(&mut raw))
            .await
            .expect("reply in time")
            .expect("read reply");
        HttpReply::parse(&raw)
    }

    pub(crate) async fn post(&self, session: Option<&str>, body: &Value) -> HttpReply {
        let mut headers = vec![
            ("Content-Type", "application/json"),
            ("Accept", "application/json, text/event-stream"),
        ];
        if let Some(s) = session {
            headers.push(("Mcp-Session-Id", s));
        }
        self.exchange("POST", &headers, Some(body)).await
    }

    /// A stateless (2026-07-28) POST with the routing headers a conforming
    /// client sends, plus `extra` headers.
    pub(crate) async fn modern(
        &self,
        id: Value,
        method: &str,
        params: Value,
        extra: &[(&str, &str)],
    ) -> HttpReply {
        let body = modern_request(id, method, params);
        let headers = modern_headers(&body, extra);
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        self.exchange("POST", &headers, Some(&body)).await
    }

    /// Open a POST whose answer is read as it arrives (an SSE stream).
    pub(crate) async fn open(&self, headers: &[(&str, &str)], body: &Value) -> EventStream {
        let body = serde_json::to_vec(body).expect("json");
        let mut req = format!(
            "POST /mcp HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n",
            self.addr,
            body.len()
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        let mut stream = TcpStream::connect(&self.addr).await.expect("connect");
        stream.write_all(req.as_bytes()).await.expect("write head");
        stream.write_all(&body).await.expect("write body");
        EventStream {
            stream,
            buf: String::new(),
        }
    }

    /// initialize + notifications/initialized; the session id.
    pub(crate) async fn initialize(&self, capabilities: Value) -> String {
        let reply = self
            .post(
                None,
                &json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                    "protocolVersion": "2025-11-25",
                    "capabilities": capabilities,
                    "clientInfo": {"name": "sluice-testkit-tests", "version": "0"},
                }}),
            )
            .await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        let session = reply
            .header("mcp-session-id")
            .expect("session id")
            .to_owned();
        let ack = self
            .post(
                Some(&session),
                &json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
            )
            .await;
        assert_eq!(ack.status, 202);
        session
    }
}

/// The default 2026 request envelope.
pub(crate) fn envelope(capabilities: Value) -> Value {
    json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientInfo": {"name": "sluice-testkit-tests", "version": "0"},
        "io.modelcontextprotocol/clientCapabilities": capabilities,
    })
}

/// A 2026 request: `params` plus the default envelope (kept if `params`
/// has its own `_meta`).
pub(crate) fn modern_request(id: Value, method: &str, mut params: Value) -> Value {
    if params.get("_meta").is_none() {
        params["_meta"] = envelope(json!({"elicitation": {}, "sampling": {}, "roots": {}}));
    }
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
}

/// The headers a 2026 client sends for `body`, then `extra` (an extra
/// header replaces a default one of the same name).
pub(crate) fn modern_headers(body: &Value, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut headers: Vec<(String, String)> = vec![
        ("Content-Type".into(), "application/json".into()),
        (
            "Accept".into(),
            "application/json, text/event-stream".into(),
        ),
        ("MCP-Protocol-Version".into(), "2026-07-28".into()),
        (
            "Mcp-Method".into(),
            body["method"].as_str().unwrap_or_default().into(),
        ),
    ];
    let name = match body["method"].as_str() {
        Some("tools/call" | "prompts/get") => body["params"]["name"].as_str(),
        Some("resources/read") => body["params"]["uri"].as_str(),
        Some("tasks/get" | "tasks/update" | "tasks/cancel") => body["params"]["taskId"].as_str(),
        _ => None,
    };
    if let Some(name) = name {
        headers.push(("Mcp-Name".into(), name.into()));
    }
    for (k, v) in extra {
        headers.retain(|(h, _)| !h.eq_ignore_ascii_case(k));
        headers.push(((*k).into(), (*v).into()));
    }
    headers
}

/// An HTTP answer read as it arrives: the JSON messages of its `data:` lines.
pub(crate) struct EventStream {
    stream: TcpStream,
    buf: String,
}

impl EventStream {
    /// The next `data:` message, or None if none came within `wait` (or
    /// the connection ended).
    pub(crate) async fn next(&mut self, wait: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            while let Some(end) = self.buf.find('\n') {
                let line: String = self.buf.drain(..=end).collect();
                if let Some(data) = line.trim_end().strip_prefix("data:") {
                    let data = data.trim();
                    if !data.is_empty() {
                        return Some(serde_json::from_str(data).expect("data is JSON"));
                    }
                }
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout_at(deadline, self.stream.read(&mut chunk))
                .await
                .ok()?
                .expect("read");
            if n == 0 {
                return None;
            }
            self.buf.push_str(&String::from_utf8_lossy(&chunk[..n]));
        }
    }
}

pub(crate) struct HttpReply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpReply {
    fn parse(raw: &[u8]) -> Self {
        let text = String::from_utf8_lossy(raw);
        let (head, body) = text.split_once("\r\n\r\n").expect("HTTP head");
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .expect("status line");
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let chunked = headers
            .iter()
            .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
        let body = if chunked {
            dechunk(body)
        } else {
            body.to_owned()
        };
        Self {
            status,
            headers,
            body,
        }
    }

    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// The JSON messages of an SSE body (events with empty data skipped).
    pub(crate) fn sse_messages(&self) -> Vec<Value> {
        self.body
            .split("\n\n")
            .filter_map(|event| {
                let data: Vec<&str> = event
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .map(str::trim_start)
                    .collect();
                let data = data.join("\n");
                (!data.trim().is_empty())
                    .then(|| serde_json::from_str(&data).expect("SSE data is JSON"))
            })
            .collect()
    }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}
