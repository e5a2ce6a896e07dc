//! The fault matrix: every way an upstream can fail, through the gateway.
//! Each fault must reach the agent as an explicit error within its timeout,
//! leave the gateway up and the other servers answering, and show in health
//! and metrics.

mod common;

use common::{Client, Gateway, sibling_bin};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The gateway's request timeout in the fault matrix: deliberately long, so a
/// fault that must fail fast (well under it) and one that waits it out stay
/// far apart however loaded the machine is.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// How long the flaky server's circuit stays open: long enough that it is
/// still open for the call that checks it, however slowly the calls before it
/// ran (when it is over, a probe that fails opens it for as long again).
const OPEN_FOR: Duration = Duration::from_secs(10);

/// "Failed fast": well under the timeout the call would otherwise wait out.
fn fast(took: Duration, timeout: Duration) -> bool {
    took < timeout / 2
}

struct HttpFixture {
    child: Child,
    url: String,
    base: String,
}

impl HttpFixture {
    fn start(extra: &[&str]) -> HttpFixture {
        Self::start_on("127.0.0.1:0", extra)
    }

    fn start_on(listen: &str, extra: &[&str]) -> HttpFixture {
        let mut child = Command::new(sibling_bin("sluice-fixture"))
            .args(["http", "--listen", listen])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .expect("fixture URL")
            .to_string();
        let base = url.trim_end_matches("/mcp").to_string();
        HttpFixture { child, url, base }
    }

    fn port(&self) -> u16 {
        self.base.rsplit(':').next().unwrap().parse().unwrap()
    }
}

impl Drop for HttpFixture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn fixture() -> String {
    sibling_bin("sluice-fixture").display().to_string()
}

/// A free loopback port with nothing listening (bound, then released).
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn call_tool(c: &Client, name: &str, args: Value) -> (Value, Duration) {
    let start = Instant::now();
    let r = c
        .call("tools/call", json!({"name": name, "arguments": args}))
        .await;
    (r, start.elapsed())
}

fn text(r: &Value) -> String {
    r["content"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|c| c["text"].as_str())
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

fn code(r: &Value) -> &str {
    r["_meta"]["sluice/error"]["code"].as_str().unwrap_or("")
}

async fn servers(gw: &Gateway) -> Vec<Value> {
    let body = common::http()
        .get(format!("{}/admin/servers", gw.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let v: Value = serde_json::from_str(&body).unwrap();
    v["servers"].as_array().unwrap().clone()
}

async fn status_of(gw: &Gateway, name: &str) -> String {
    servers(gw)
        .await
        .into_iter()
        .find(|s| s["name"] == name)
        .map(|s| s["status"].as_str().unwrap().to_string())
        .unwrap()
}

async fn wait_status(gw: &Gateway, name: &str, want: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let s = status_of(gw, name).await;
        if s == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} is {s}, expected {want}; servers: {:?}",
            servers(gw).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn still_serving(c: &Client) {
    let (r, _) = call_tool(c, "ok__echo", json!({"text": "still here"})).await;
    assert_eq!(
        r["content"][0]["text"], "still here",
        "the healthy server keeps answering"
    );
}

#[tokio::test]
async fn every_fault_is_explicit_and_contained() {
    let unauthorized = HttpFixture::start(&["--status", "401"]);
    let flaky = HttpFixture::start(&[]);
    let fx = fixture();
    let cfg = format!(
        r#"
[gateway]
request_timeout = "{request_timeout}s"

[health]
interval = "300ms"
timeout = "1s"

[[servers]]
name = "ok"
command = "{fx}"

[[servers]]
name = "crashy"
command = "{fx}"

[[servers]]
name = "hangs"
command = "{fx}"
timeout = "1s"

[[servers]]
name = "garbage"
command = "{fx}"

[[servers]]
name = "big"
command = "{fx}"
max_output_tokens = 1000
max_binary_bytes = 10000

[[servers]]
name = "dead"
command = "{fx}"
args = ["--exit-at-start", "7"]
required = false

[[servers]]
name = "unauth"
url = "{unauth}"
required = false

[[servers]]
name = "flaky"
url = "{flaky}"
[servers.circuit_breaker]
consecutive_failures = 3
open_for = "{open_for}s"

[[servers]]
name = "refused"
url = "http://127.0.0.1:{port}/mcp"
required = false
"#,
        request_timeout = REQUEST_TIMEOUT.as_secs(),
        open_for = OPEN_FOR.as_secs(),
        unauth = unauthorized.url,
        flaky = flaky.url,
        port = closed_port(),
    );
    let gw = Gateway::start("faults", &cfg);
    let mut c = Client::new(&gw.url);
    c.initialize().await;
    let mut report = Vec::new();

    // Crash: the in-flight call fails explicitly; the server comes back.
    let (r, took) = call_tool(&c, "crashy__crash", json!({})).await;
    assert_eq!(r["isError"], true, "{r}");
    assert_eq!(code(&r), "upstream_connection_lost", "{r}");
    assert!(text(&r).contains("exited"), "{r}");
    assert!(fast(took, REQUEST_TIMEOUT), "{took:?}");
    report.push(("crash", text(&r)));
    still_serving(&c).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (r, _) = call_tool(&c, "crashy__echo", json!({"text": "back"})).await;
        if r["content"][0]["text"] == "back" {
            break;
        }
        assert!(Instant::now() < deadline, "crashy never came back: {r}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Hang: its own 1 s timeout fires (not before it, and not the gateway's
    // 60 s one) and the server is told to cancel.
    let (r, took) = call_tool(&c, "hangs__hang", json!({})).await;
    assert_eq!(code(&r), "upstream_timeout", "{r}");
    assert!(text(&r).contains("did not answer within 1 s"), "{r}");
    assert!(
        took >= Duration::from_secs(1) && fast(took, REQUEST_TIMEOUT),
        "{took:?}"
    );
    report.push(("hang", text(&r)));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !gw.logs().contains("fixture: cancelled request") {
        assert!(
            Instant::now() < deadline,
            "the hung server was not sent notifications/cancelled"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Invalid JSON in the answer: fails that call at once, not at its timeout.
    let (r, took) = call_tool(&c, "garbage__invalid_json", json!({})).await;
    assert_eq!(code(&r), "upstream_protocol_error", "{r}");
    assert!(text(&r).contains("not valid JSON"), "{r}");
    assert!(fast(took, REQUEST_TIMEOUT), "{took:?}");
    report.push(("invalid JSON", text(&r)));

    // Huge outputs: cut with a marker, structured content removed, big images replaced.
    let (r, _) = call_tool(&c, "big__huge", json!({"bytes": 200000})).await;
    let t = text(&r);
    assert!(
        t.contains("[sluice: output truncated"),
        "{}",
        &t[t.len().saturating_sub(300)..]
    );
    assert!(t.len() < 4000 + 400);
    report.push(("huge text", t[t.find("[sluice").unwrap()..].to_string()));
    let (r, _) = call_tool(
        &c,
        "big__huge",
        json!({"bytes": 200000, "kind": "structured"}),
    )
    .await;
    assert!(
        r.get("structuredContent").is_none(),
        "structured content is removed, not cut"
    );
    assert_eq!(r["isError"], true);
    report.push(("huge structured", text(&r)));
    let (r, _) = call_tool(&c, "big__huge", json!({"bytes": 50000, "kind": "image"})).await;
    assert!(text(&r).contains("image/png"), "{r}");
    assert!(
        r["content"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["type"] == "text")
    );

    // Exit at start: explicit, fast, and the server is down.
    let (r, took) = call_tool(&c, "dead__echo", json!({"text": "x"})).await;
    assert_eq!(code(&r), "upstream_unavailable", "{r}");
    assert!(text(&r).contains("exit status: 7"), "{r}");
    assert!(fast(took, REQUEST_TIMEOUT), "{took:?}");
    report.push(("exit at start", text(&r)));

    // 401: reported as a credentials problem, not an outage.
    let (r, took) = call_tool(&c, "unauth__echo", json!({"text": "x"})).await;
    assert_eq!(code(&r), "upstream_unauthorized", "{r}");
    assert!(text(&r).contains("credentials"), "{r}");
    assert!(fast(took, REQUEST_TIMEOUT), "{took:?}");
    report.push(("HTTP 401", text(&r)));

    // Connection refused.
    let (r, took) = call_tool(&c, "refused__echo", json!({"text": "x"})).await;
    assert_eq!(code(&r), "upstream_unavailable", "{r}");
    assert!(
        text(&r).contains("refused") || text(&r).contains("cannot connect"),
        "{r}"
    );
    assert!(fast(took, REQUEST_TIMEOUT), "{took:?}");
    report.push(("connection refused", text(&r)));

    // 503 mid-life: explicit errors, then the breaker opens and fails fast, then recovers.
    let (r, _) = call_tool(&c, "flaky__echo", json!({"text": "fine"})).await;
    assert_eq!(r["content"][0]["text"], "fine");
    common::http()
        .post(format!("{}/fixture/status/503", flaky.base))
        .send()
        .await
        .unwrap();
    let (r, _) = call_tool(&c, "flaky__echo", json!({"text": "x"})).await;
    assert_eq!(code(&r), "upstream_http_error", "{r}");
    assert!(text(&r).contains("503"), "{r}");
    report.push(("HTTP 503", text(&r)));
    for _ in 0..3 {
        call_tool(&c, "flaky__echo", json!({"text": "x"})).await;
    }
    let (r, took) = call_tool(&c, "flaky__echo", json!({"text": "x"})).await;
    assert_eq!(code(&r), "upstream_circuit_open", "{r}");
    assert!(text(&r).contains("try it again in"), "{r}");
    assert!(fast(took, REQUEST_TIMEOUT), "fails fast: {took:?}");
    report.push(("circuit open", text(&r)));
    assert_eq!(status_of(&gw, "flaky").await, "down");
    common::http()
        .post(format!("{}/fixture/status/0", flaky.base))
        .send()
        .await
        .unwrap();
    // Closes once `open_for` is over and a probe gets through.
    wait_status(&gw, "flaky", "healthy", OPEN_FOR + Duration::from_secs(30)).await;
    let (r, _) = call_tool(&c, "flaky__echo", json!({"text": "recovered"})).await;
    assert_eq!(r["content"][0]["text"], "recovered");

    still_serving(&c).await;

    // Health as the agent and the operator see it.
    for (name, want) in [
        ("dead", "down"),
        ("unauth", "down"),
        ("refused", "down"),
        ("ok", "healthy"),
    ] {
        wait_status(&gw, name, want, Duration::from_secs(30)).await;
    }
    let crashy = servers(&gw)
        .await
        .into_iter()
        .find(|s| s["name"] == "crashy")
        .unwrap();
    assert!(crashy["restarts"].as_u64().unwrap() >= 1, "{crashy}");
    let (h, _) = call_tool(&c, "sluice__health", json!({})).await;
    assert!(text(&h).contains("`dead` is down"), "{h}");
    assert!(text(&h).contains("`ok` is healthy"), "{h}");
    let listed = c.call("tools/list", json!({})).await;
    assert!(
        listed["tools"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "sluice__health")
    );

    let metrics = gw.metrics().await;
    assert!(
        metrics.contains(r#"sluice_upstream_status{server="dead",status="down"} 1"#),
        "{metrics}"
    );
    let failures = metrics
        .lines()
        .find(|l| l.starts_with(r#"sluice_upstream_failures_total{server="hangs"}"#))
        .expect("failures metric");
    assert!(!failures.ends_with(" 0"), "{failures}");

    eprintln!("\nfault → error text the agent received:");
    for (fault, text) in report {
        eprintln!("- {fault}: {text}");
    }
}

#[tokio::test]
async fn a_killed_server_is_down_within_one_probe_interval_and_healthy_after_it_returns() {
    let victim = HttpFixture::start(&[]);
    let port = victim.port();
    let (interval, timeout) = (Duration::from_secs(1), Duration::from_secs(1));
    let cfg = format!(
        "[health]\ninterval = \"{}s\"\ntimeout = \"{}s\"\n[[servers]]\nname = \"victim\"\nurl = \"{}\"\n",
        interval.as_secs(),
        timeout.as_secs(),
        victim.url
    );
    let gw = Gateway::start("probe", &cfg);
    wait_status(&gw, "victim", "healthy", Duration::from_secs(30)).await;
    drop(victim); // killed
    let killed = Instant::now();
    // Nothing calls the server: only the next probe can notice, at most one
    // interval plus one probe timeout after the kill. Four times that leaves
    // room for a loaded machine; without probes it would never be down.
    let within = (interval + timeout) * 4;
    wait_status(&gw, "victim", "down", within * 2).await;
    assert!(killed.elapsed() < within, "{:?}", killed.elapsed());
    let mut c = Client::new(&gw.url);
    c.initialize().await;
    let (h, _) = call_tool(&c, "sluice__health", json!({"server": "victim"})).await;
    assert!(text(&h).contains("`victim` is down"), "{h}");

    let _back = HttpFixture::start_on(&format!("127.0.0.1:{port}"), &[]);
    wait_status(&gw, "victim", "healthy", Duration::from_secs(30)).await;
    let (r, _) = call_tool(&c, "victim__echo", json!({"text": "again"})).await;
    assert_eq!(
        r["content"][0]["text"], "again",
        "the gateway re-initialized the upstream session"
    );
}
