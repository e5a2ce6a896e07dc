//! An upstream that streams an endless SSE line must fail the call with an
//! explicit error, without the gateway buffering the line. The upstream is a
//! small axum server inside the test, on 127.0.0.1:0; memory is this test
//! process's own (the upstream client runs here too).

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde_json::{Value, json};
use sluice_upstream::{Upstream, UpstreamError};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;

/// What the server sends: one `data:` line of this many bytes, no newline.
const HUGE: usize = 64 * 1024 * 1024;
const CHUNK: usize = 64 * 1024;

/// The tests measure this process's memory: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[derive(Default)]
struct Probe {
    /// Serve the GET stream (the huge line) instead of refusing it with 405.
    huge_get: bool,
    /// Bytes of the huge line handed to the HTTP stack.
    sent: AtomicU64,
    /// GET streams opened.
    gets: AtomicU64,
}

/// `data: xxxx…` for [`HUGE`] bytes, in [`CHUNK`]-sized chunks that all share
/// one allocation, so the server itself holds only one chunk.
fn huge_line(probe: Arc<Probe>) -> Response {
    let chunk = Bytes::from(vec![b'x'; CHUNK]);
    let chunks = std::iter::once(Bytes::from_static(b"data: "))
        .chain(std::iter::repeat_n(chunk, HUGE / CHUNK));
    let body = futures_util::stream::iter(chunks).map(move |c| {
        probe.sent.fetch_add(c.len() as u64, Ordering::Relaxed);
        Ok::<_, std::convert::Infallible>(c)
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .body(Body::from_stream(body))
        .unwrap()
}

async fn mcp(State(probe): State<Arc<Probe>>, method: Method, body: Bytes) -> Response {
    if method == Method::GET {
        if !probe.huge_get {
            return StatusCode::METHOD_NOT_ALLOWED.into_response();
        }
        probe.gets.fetch_add(1, Ordering::Relaxed);
        return huge_line(probe);
    }
    if method != Method::POST {
        return StatusCode::OK.into_response();
    }
    let msg: Value = serde_json::from_slice(&body).unwrap_or_default();
    let Some(id) = msg.get("id").cloned() else {
        return StatusCode::ACCEPTED.into_response();
    };
    let answer = |result: Value| {
        (
            [
                (header::CONTENT_TYPE, "application/json"),
                (header::HeaderName::from_static("mcp-session-id"), "s-1"),
            ],
            json!({"jsonrpc": "2.0", "id": id, "result": result}).to_string(),
        )
            .into_response()
    };
    match msg["method"].as_str().unwrap_or("") {
        // A session-era server: no stateless discovery.
        "server/discover" => (StatusCode::BAD_REQUEST, "not here").into_response(),
        "initialize" => answer(json!({
            "protocolVersion": "2025-11-25",
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "huge", "version": "1"},
        })),
        "tools/call" => huge_line(probe),
        _ => answer(json!({})),
    }
}

async fn serve(probe: Arc<Probe>) -> String {
    let app = Router::new()
        .route("/mcp", axum::routing::any(mcp))
        .with_state(probe);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/mcp")
}

async fn upstream(
    url: &str,
) -> (
    Arc<Upstream>,
    mpsc::UnboundedReceiver<sluice_upstream::UpstreamEvent>,
) {
    let config = sluice_config::Config::parse(
        &format!("[[servers]]\nname = \"huge\"\nurl = \"{url}\"\ntimeout = \"30s\"\n"),
        &|_| None,
    )
    .unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    let up = Upstream::new(
        sluice_upstream::ServerId::new(0),
        config.servers[0].clone(),
        config.health.clone(),
        sluice_upstream::http_client(),
        tx,
    );
    up.start().await.unwrap();
    assert!(up.is_connected(), "the test upstream is connected");
    (up, rx)
}

/// This process's resident memory in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

/// Samples [`rss_kib`] every few milliseconds until dropped; keeps the peak.
struct PeakRss {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PeakRss {
    fn start() -> Self {
        let peak = Arc::new(AtomicU64::new(rss_kib()));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (peak.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                p.fetch_max(rss_kib(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        PeakRss {
            peak,
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap();
        self.peak.load(Ordering::Relaxed)
    }
}

const MIB: u64 = 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_sse_line_fails_the_call_without_being_buffered() {
    let _one = SERIAL.lock().await;
    let probe = Arc::new(Probe::default());
    let url = serve(probe.clone()).await;
    let (up, _events) = upstream(&url).await;

    let before = rss_kib();
    let sampler = PeakRss::start();
    let started = std::time::Instant::now();
    let res = tokio::time::timeout(
        Duration::from_secs(60),
        up.request(
            "tools/call",
            Some(r#"{"name":"anything","arguments":{}}"#),
            sluice_upstream::CallCtx::new(Duration::from_secs(30)),
            false,
        ),
    )
    .await
    .expect("the call ends on its own, well before the test's bound");
    let peak = sampler.finish();
    let after = rss_kib();

    match res {
        Err(UpstreamError::Protocol(msg)) => assert!(
            msg.contains("SSE event larger than 16777216 bytes"),
            "the error names the cause: {msg}"
        ),
        other => panic!("expected an explicit protocol error, got {other:?}"),
    }
    let sent = probe.sent.load(Ordering::Relaxed);
    eprintln!(
        "rss before {before} KiB, peak {peak} KiB, after {after} KiB; server sent {} MiB in {:?}",
        sent / (1024 * 1024),
        started.elapsed()
    );
    assert!(
        sent < (HUGE as u64) * 3 / 4,
        "the client stopped reading the stream early ({sent} bytes sent)"
    );
    // The parser holds at most 16 MiB; 64 MiB buffered would show here.
    assert!(
        peak.saturating_sub(before) < 32 * MIB,
        "peak memory grew by {} KiB",
        peak - before
    );
    assert!(
        after.saturating_sub(before) < 32 * MIB,
        "memory grew by {} KiB and stayed",
        after - before
    );
    up.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_line_on_the_get_stream_drops_that_stream() {
    let _one = SERIAL.lock().await;
    let probe = Arc::new(Probe {
        huge_get: true,
        ..Probe::default()
    });
    let url = serve(probe.clone()).await;
    let (up, _events) = upstream(&url).await;
    // The first stream is refused at 16 MiB and a new one is opened after
    // the backoff; buffering the whole line would take the first one to its end.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while probe.gets.load(Ordering::Relaxed) < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the GET stream was not reopened"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let sent = probe.sent.load(Ordering::Relaxed);
    assert!(
        sent < (HUGE as u64) * 3 / 4,
        "the first GET stream was read only up to the limit ({sent} bytes sent)"
    );
    up.shutdown(Duration::from_secs(1)).await;
}
