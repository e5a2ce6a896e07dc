//! Long calls: a request not answered within `sessions.sse_after` becomes an
//! SSE stream with keep-alive comments (both eras), so it survives a proxy's
//! idle timeout (a real nginx with `proxy_read_timeout 2s`), and a
//! session-era stream starts with a priming event whose id resumes it on
//! another replica (two gateways sharing Redis on 127.0.0.1:6379).

mod common;

use common::{Client, Gateway, sibling_bin};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn fixture_server() -> String {
    format!(
        "[[servers]]\nname = \"fx\"\ncommand = \"{}\"\n",
        sibling_bin("sluice-fixture").display()
    )
}

/// A gateway config with these `[sessions]` keys and the fixture as `fx`.
fn config(sessions: &str) -> String {
    format!("[sessions]\n{sessions}\n{}", fixture_server())
}

fn unique(tag: &str) -> String {
    format!(
        "{tag}{}x{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

/// The 2026-07-28 envelope, with a progress token when given.
fn meta_2026(progress: Option<&str>) -> Value {
    let mut m = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "long-calls", "version": "1"}
    });
    if let Some(p) = progress {
        m["progressToken"] = json!(p);
    }
    m
}

/// A 2026-07-28 `tools/call` of `tool` to `url`, accepting `accept`.
fn call_2026(
    http: &reqwest::Client,
    url: &str,
    accept: &str,
    tool: &str,
    args: Value,
    progress: Option<&str>,
) -> reqwest::RequestBuilder {
    http.post(url)
        .header("content-type", "application/json")
        .header("accept", accept)
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", tool)
        .body(
            json!({"jsonrpc":"2.0","id":"long","method":"tools/call",
                "params":{"name": tool, "arguments": args, "_meta": meta_2026(progress)}})
            .to_string(),
        )
}

/// A session-era `tools/call` of `tool` with request id `"long"`.
fn call_session(c: &Client, url: &str, tool: &str, args: Value) -> reqwest::RequestBuilder {
    Client {
        http: c.http.clone(),
        url: url.to_string(),
        session: c.session.clone(),
    }
    .post_builder(
        json!({"jsonrpc":"2.0","id":"long","method":"tools/call",
            "params":{"name": tool, "arguments": args}})
        .to_string(),
    )
}

fn content_type(r: &reqwest::Response) -> String {
    r.headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

/// Reads a body until it contains `needle`, within `within`.
async fn read_until(resp: &mut reqwest::Response, needle: &str, within: Duration) -> String {
    let deadline = Instant::now() + within;
    let mut body = String::new();
    while !body.contains(needle) {
        let left = deadline.saturating_duration_since(Instant::now());
        let chunk = tokio::time::timeout(left, resp.chunk())
            .await
            .unwrap_or_else(|_| panic!("no `{needle}` within {within:?} in: {body:?}"))
            .unwrap_or_else(|e| panic!("body broke ({e}) before `{needle}`: {body:?}"))
            .unwrap_or_else(|| panic!("body ended without `{needle}`: {body:?}"));
        body.push_str(&String::from_utf8_lossy(&chunk));
    }
    body
}

/// Reads a body to its end, which must come within `within`.
async fn read_to_end(mut resp: reqwest::Response, within: Duration) -> String {
    let deadline = Instant::now() + within;
    let mut body = String::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, resp.chunk()).await {
            Err(_) => panic!("body did not end within {within:?}: {body:?}"),
            Ok(Err(e)) => panic!("body broke ({e}): {body:?}"),
            Ok(Ok(None)) => return body,
            Ok(Ok(Some(chunk))) => body.push_str(&String::from_utf8_lossy(&chunk)),
        }
    }
}

/// The JSON-RPC messages of an SSE body (comments and empty events skipped).
fn messages(body: &str) -> Vec<Value> {
    body.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| !d.trim().is_empty())
        .map(|d| serde_json::from_str(d).unwrap_or_else(|e| panic!("bad event ({e}): {d}")))
        .collect()
}

/// The answer to request `"long"` in an SSE body: exactly one.
fn the_answer(body: &str) -> Value {
    let answers: Vec<Value> = messages(body)
        .into_iter()
        .filter(|m| m["id"] == "long")
        .collect();
    assert_eq!(answers.len(), 1, "the answer exactly once: {body:?}");
    answers.into_iter().next().unwrap()
}

fn keep_alives(s: &str) -> usize {
    s.matches(": keep-alive\n\n").count()
}

#[tokio::test]
async fn a_streaming_2026_call_gets_keep_alives_while_it_waits() {
    // The first progress report starts the stream (sse_after is long), then
    // the call is quiet for 700 ms between reports.
    let gw = Gateway::start(
        "long-2026-stream",
        &config("store = \"memory\"\nsse_after = \"10s\"\nsse_keepalive = \"150ms\""),
    );
    let http = common::http();
    let mut resp = call_2026(
        &http,
        &gw.url,
        "application/json, text/event-stream",
        "fx__slow",
        json!({"ms": 2000, "progress_every": 700}),
        Some("p"),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(content_type(&resp), "text/event-stream");
    let head = read_until(&mut resp, "notifications/progress", Duration::from_secs(10)).await;
    let rest = read_to_end(resp, Duration::from_secs(15)).await;
    let answer = the_answer(&rest);
    assert_eq!(
        answer["result"]["content"][0]["text"], "slept 2000 ms",
        "{rest:?}"
    );
    let before_answer = &rest[..rest.find("\"id\":\"long\"").unwrap()];
    assert!(
        keep_alives(before_answer) >= 2,
        "keep-alives after the stream started, while the call waited: {head:?} then {rest:?}"
    );
    assert!(
        messages(&rest)
            .iter()
            .any(|m| m["method"] == "notifications/progress"),
        "later progress arrives too: {rest:?}"
    );
}

#[tokio::test]
async fn a_quiet_2026_call_becomes_a_stream_after_the_delay_and_a_quick_one_stays_json() {
    let gw = Gateway::start(
        "long-2026-quiet",
        &config("store = \"memory\"\nsse_after = \"300ms\"\nsse_keepalive = \"150ms\""),
    );
    let http = common::http();
    let started = Instant::now();
    let resp = call_2026(
        &http,
        &gw.url,
        "application/json, text/event-stream",
        "fx__slow",
        json!({"ms": 3000}),
        None,
    )
    .send()
    .await
    .unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "the headers come after sse_after, not with the answer"
    );
    assert_eq!(content_type(&resp), "text/event-stream");
    let body = read_to_end(resp, Duration::from_secs(15)).await;
    assert_eq!(
        the_answer(&body)["result"]["content"][0]["text"],
        "slept 3000 ms",
        "{body:?}"
    );
    assert!(keep_alives(&body) >= 2, "keep-alives while quiet: {body:?}");
    assert_eq!(
        the_answer(&body)["result"]["resultType"],
        "complete",
        "shaped for 2026: {body:?}"
    );

    // An answer within the delay is plain JSON.
    let resp = call_2026(
        &http,
        &gw.url,
        "application/json, text/event-stream",
        "fx__echo",
        json!({"text": "quick"}),
        None,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(content_type(&resp), "application/json");
    let v: Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
    assert_eq!(v["result"]["content"][0]["text"], "quick");
}

#[tokio::test]
async fn a_quiet_session_call_switches_to_sse_with_a_priming_event_and_is_replayable() {
    let gw = Gateway::start(
        "long-session",
        &config("store = \"memory\"\nsse_after = \"300ms\"\nsse_keepalive = \"150ms\""),
    );
    let mut c = Client::new(&gw.url);
    c.initialize().await;

    let resp = call_session(&c, &gw.url, "fx__slow", json!({"ms": 1500}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(content_type(&resp), "text/event-stream");
    let body = read_to_end(resp, Duration::from_secs(15)).await;
    // The priming event: a retry hint, an id, empty data.
    let first_event = body.split("\n\n").next().unwrap();
    let prime_id = first_event
        .lines()
        .find_map(|l| l.strip_prefix("id: "))
        .unwrap_or_else(|| panic!("the first event has an id: {body:?}"))
        .to_string();
    assert!(
        first_event.lines().any(|l| l.starts_with("retry: ")),
        "a retry hint: {body:?}"
    );
    assert!(
        first_event.lines().any(|l| l == "data: "),
        "empty data: {body:?}"
    );
    assert!(keep_alives(&body) >= 2, "keep-alives while quiet: {body:?}");
    let answer = the_answer(&body);
    assert_eq!(
        answer["result"]["content"][0]["text"], "slept 1500 ms",
        "{body:?}"
    );
    // The answer has an id of the same stream, after the priming one.
    let stream = prime_id.rsplit_once('-').unwrap().0;
    assert!(
        body.contains(&format!("id: {stream}-1\ndata: {{")),
        "{body:?}"
    );

    // The stream's events were kept: resuming from the priming id replays the answer.
    let r = c.resume(&gw.url, &prime_id).await;
    assert_eq!(r.status(), 200);
    let replay = read_to_end(r, Duration::from_secs(10)).await;
    assert_eq!(
        the_answer(&replay)["result"]["content"][0]["text"],
        "slept 1500 ms",
        "{replay:?}"
    );

    // A quick answer stays plain JSON.
    let r = c
        .request(
            3,
            "tools/call",
            json!({"name": "fx__echo", "arguments": {"text": "hi"}}),
        )
        .await;
    assert!(
        r.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json"),
        "{}",
        r.body
    );
    assert_eq!(r.json()["result"]["content"][0]["text"], "hi");
}

#[tokio::test]
async fn a_stream_dropped_on_one_replica_resumes_on_another_with_its_result() {
    let prefix = unique("longresume");
    let cfg = config(&format!(
        "store = \"redis\"\nredis_url = \"redis://127.0.0.1:6379\"\nkey_prefix = \"{prefix}:\"\nsse_after = \"300ms\"\nsse_keepalive = \"500ms\""
    ));
    let a = Gateway::start("long-resume-a", &cfg);
    let b = Gateway::start("long-resume-b", &cfg);
    let mut c = Client::new(&a.url);
    c.initialize().await;

    // A quiet 3 s call on A; the client leaves after the priming event.
    let mut resp = call_session(&c, &a.url, "fx__slow", json!({"ms": 3000}))
        .send()
        .await
        .unwrap();
    assert_eq!(content_type(&resp), "text/event-stream");
    let head = read_until(&mut resp, "data: \n\n", Duration::from_secs(10)).await;
    let prime_id = head
        .lines()
        .find_map(|l| l.strip_prefix("id: "))
        .unwrap_or_else(|| panic!("a priming event with an id: {head:?}"))
        .to_string();
    assert!(
        !head.contains("\"id\":\"long\""),
        "not answered yet: {head:?}"
    );
    drop(resp);

    let r = c.resume(&b.url, &prime_id).await;
    assert_eq!(r.status(), 200);
    let body = read_to_end(r, Duration::from_secs(20)).await;
    assert_eq!(
        the_answer(&body)["result"]["content"][0]["text"],
        "slept 3000 ms",
        "the result, from B: {body:?}"
    );

    // Replica loss: the replica running the call dies after the priming
    // event; resuming on B ends with an explicit error, not a hang.
    let mut resp = call_session(&c, &a.url, "fx__slow", json!({"ms": 60000}))
        .send()
        .await
        .unwrap();
    let head = read_until(&mut resp, "data: \n\n", Duration::from_secs(10)).await;
    let prime_id = head
        .lines()
        .find_map(|l| l.strip_prefix("id: "))
        .unwrap()
        .to_string();
    // Stream metadata is written behind; give it a moment to reach Redis.
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(resp);
    drop(a);
    let r = c.resume(&b.url, &prime_id).await;
    assert_eq!(r.status(), 200);
    let body = read_to_end(r, Duration::from_secs(30)).await;
    let answer = the_answer(&body);
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("stopped before it answered"),
        "{body:?}"
    );
}

// ----- through nginx ------------------------------------------------------------

/// nginx in the foreground with its own config in a scratch directory,
/// proxying 127.0.0.1:{port} to `upstream` with `proxy_read_timeout 2s` and
/// no buffering. Stopped by its pid on drop.
struct Nginx {
    child: Child,
    url: String,
    dir: PathBuf,
}

fn nginx_binary() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain([PathBuf::from("/usr/sbin")])
        .map(|d| d.join("nginx"))
        .find(|p| p.is_file());
    on_path.unwrap_or_else(|| {
        panic!(
            "nginx is not installed; these tests need a real reverse proxy: \
             apt-get update && apt-get install -y nginx-light (scripts/test.sh installs it)"
        )
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Nginx {
    fn start(upstream: &str) -> Nginx {
        let bin = nginx_binary();
        let dir = common::scratch("nginx");
        let port = free_port();
        let upstream = upstream
            .trim_start_matches("http://")
            .trim_end_matches("/mcp");
        let d = dir.display();
        let conf = format!(
            r#"master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://{upstream};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_read_timeout 2s;
        }}
    }}
}}
"#
        );
        let path = dir.join("nginx.conf");
        std::fs::write(&path, conf).unwrap();
        let mut child = Command::new(&bin)
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(&path)
            .args(["-g", "daemon off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{} does not start: {e}", bin.display()));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            if let Some(status) = child.try_wait().unwrap() {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    use std::io::Read;
                    let _ = e.read_to_string(&mut err);
                }
                let log = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
                panic!("nginx exited ({status}): {err}\n{log}");
            }
            assert!(
                Instant::now() < deadline,
                "nginx did not listen on 127.0.0.1:{port} within 10 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Nginx {
            child,
            url: format!("http://127.0.0.1:{port}/mcp"),
            dir,
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn a_5s_call_survives_a_proxy_with_a_2s_idle_timeout_in_both_eras() {
    let gw = Gateway::start(
        "long-nginx",
        &config("store = \"memory\"\nsse_keepalive = \"500ms\""),
    );
    let proxy = Nginx::start(&gw.url);
    let http = common::http();

    // The proxy's timeout is real: a client that takes only JSON gets
    // nothing on the wire for 5 s, and nginx gives up on it.
    let r = call_2026(
        &http,
        &proxy.url,
        "application/json",
        "fx__slow",
        json!({"ms": 5000}),
        None,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(
        r.status(),
        504,
        "nginx cuts a silent response after 2 s: {}",
        r.text().await.unwrap_or_default()
    );

    // 2026-07-28, accepting SSE.
    let started = Instant::now();
    let resp = call_2026(
        &http,
        &proxy.url,
        "application/json, text/event-stream",
        "fx__slow",
        json!({"ms": 5000}),
        None,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    let body = read_to_end(resp, Duration::from_secs(30)).await;
    assert_eq!(
        the_answer(&body)["result"]["content"][0]["text"],
        "slept 5000 ms",
        "2026 call through nginx: {body:?}"
    );
    assert!(started.elapsed() >= Duration::from_millis(4900));

    // The session era.
    let mut c = Client::new(&proxy.url);
    c.initialize().await;
    let resp = call_session(&c, &proxy.url, "fx__slow", json!({"ms": 5000}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body = read_to_end(resp, Duration::from_secs(30)).await;
    assert_eq!(
        the_answer(&body)["result"]["content"][0]["text"],
        "slept 5000 ms",
        "session-era call through nginx: {body:?}"
    );
}
