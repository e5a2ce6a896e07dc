//! Sessions that survive replicas, restarts and store outages. Replicas
//! share a real Redis (127.0.0.1:6379, a key prefix per test); the outage
//! test runs its own Redis server on a free port and stops it by pid.

mod common;

use common::{Client, Gateway, Redis, sibling_bin};
use serde_json::{Value, json};
use std::process::Command;
use std::time::{Duration, Instant};

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

fn fixture_server() -> String {
    format!(
        "[[servers]]\nname = \"fx\"\ncommand = \"{}\"\n",
        sibling_bin("sluice-fixture").display()
    )
}

fn redis_config(prefix: &str, port: u16) -> String {
    format!(
        "[sessions]\nstore = \"redis\"\nredis_url = \"redis://127.0.0.1:{port}\"\nkey_prefix = \"{prefix}:\"\n{}",
        fixture_server()
    )
}

fn on(c: &Client, url: &str) -> Client {
    Client {
        http: c.http.clone(),
        url: url.to_string(),
        session: c.session.clone(),
    }
}

async fn read_until(resp: &mut reqwest::Response, needle: &str) -> String {
    let mut body = String::new();
    while !body.contains(needle) {
        let chunk = tokio::time::timeout(Duration::from_secs(30), resp.chunk())
            .await
            .unwrap_or_else(|_| panic!("no `{needle}` in: {body}"))
            .unwrap()
            .unwrap_or_else(|| panic!("stream ended without `{needle}`: {body}"));
        body.push_str(&String::from_utf8_lossy(&chunk));
    }
    body
}

async fn read_to_end(mut resp: reqwest::Response) -> String {
    let mut body = String::new();
    while let Ok(Some(chunk)) = tokio::time::timeout(Duration::from_secs(30), resp.chunk())
        .await
        .expect("stream ends")
    {
        body.push_str(&String::from_utf8_lossy(&chunk));
    }
    body
}

#[tokio::test]
async fn any_replica_serves_any_request_of_a_session() {
    let cfg = redis_config(&unique("anyrep"), 6379);
    let a = Gateway::start("replica-a", &cfg);
    let b = Gateway::start("replica-b", &cfg);
    let mut ca = Client::new(&a.url);
    ca.initialize().await;
    let cb = on(&ca, &b.url);

    let tools = cb.call("tools/list", json!({})).await;
    assert!(
        tools["tools"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "fx__echo")
    );
    let r = cb
        .call(
            "tools/call",
            json!({"name": "fx__echo", "arguments": {"text": "via b"}}),
        )
        .await;
    assert_eq!(r["content"][0]["text"], "via b");

    // The standalone stream opens on B.
    let resp = cb
        .http
        .get(&cb.url)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", cb.session.clone().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    drop(resp);

    // Ended on A, gone on B too.
    let r = Client::send(
        ca.http
            .delete(&ca.url)
            .header("mcp-session-id", ca.session.clone().unwrap()),
    )
    .await;
    assert_eq!(r.status, 200);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = cb.request(9, "ping", json!({})).await;
        if r.status == 404 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "B still serves an ended session: {}",
            r.body
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_stream_broken_on_one_replica_resumes_on_another_exactly_once() {
    let cfg = redis_config(&unique("resume"), 6379);
    let a = Gateway::start("resume-a", &cfg);
    let b = Gateway::start("resume-b", &cfg);
    let mut ca = Client::new(&a.url);
    ca.initialize().await;
    let mut resp = ca
        .post_builder(
            json!({"jsonrpc":"2.0","id":"long","method":"tools/call","params":{"name":"fx__slow","arguments":{"ms":1200},"_meta":{"progressToken":"p"}}})
                .to_string(),
        )
        .send()
        .await
        .unwrap();
    let first = read_until(&mut resp, "notifications/progress").await;
    let last_id = first
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("id: "))
        .unwrap()
        .to_string();
    let seen_before = first.matches("notifications/progress").count();
    drop(resp); // the connection to A breaks; A keeps serving the call

    let r = ca.resume(&b.url, &last_id).await;
    assert_eq!(r.status(), 200);
    let body = read_to_end(r).await;
    let msgs: Vec<Value> = body
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| !d.is_empty())
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let answers: Vec<&Value> = msgs.iter().filter(|m| m["id"] == "long").collect();
    assert_eq!(answers.len(), 1, "the answer exactly once: {body}");
    assert!(answers[0]["result"]["content"].is_array(), "{body}");
    let progress: Vec<f64> = msgs
        .iter()
        .filter(|m| m["method"] == "notifications/progress")
        .map(|m| m["params"]["progress"].as_f64().unwrap())
        .collect();
    assert!(
        !progress.is_empty(),
        "missed progress events replayed: {body}"
    );
    let mut sorted = progress.clone();
    sorted.dedup();
    assert_eq!(sorted, progress, "no event twice: {body}");
    assert!(
        seen_before + progress.len() >= 10,
        "every progress event, once: {seen_before} + {progress:?}"
    );
}

#[tokio::test]
async fn answers_and_cancellations_reach_the_replica_running_the_call() {
    let cfg = redis_config(&unique("relay"), 6379);
    let a = Gateway::start("relay-a", &cfg);
    let b = Gateway::start("relay-b", &cfg);
    let mut ca = Client::new(&a.url);
    ca.initialize().await;
    let cb = on(&ca, &b.url);

    // Sampling asked on A's stream, answered through B.
    let mut resp = ca
        .post_builder(
            json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"fx__test_sampling","arguments":{"prompt":"hi"}}})
                .to_string(),
        )
        .send()
        .await
        .unwrap();
    let body = read_until(&mut resp, "sampling/createMessage").await;
    let req: Value = body
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| d.contains("sampling/createMessage"))
        .map(|d| serde_json::from_str(d).unwrap())
        .next()
        .unwrap();
    let answer = json!({"jsonrpc":"2.0","id":req["id"],"result":{"role":"assistant","content":{"type":"text","text":"answered via b"},"model":"m","stopReason":"endTurn"}});
    assert_eq!(cb.post(answer.to_string()).await.status, 202);
    let rest = read_to_end(resp).await;
    assert!(rest.contains("answered via b"), "{rest}");

    // A call running on A, cancelled through B: ended well before it would finish.
    let slow = Duration::from_secs(40);
    let mut resp = ca
        .post_builder(
            json!({"jsonrpc":"2.0","id":"c1","method":"tools/call","params":{"name":"fx__slow","arguments":{"ms":slow.as_millis() as u64},"_meta":{"progressToken":1}}})
                .to_string(),
        )
        .send()
        .await
        .unwrap();
    read_until(&mut resp, "notifications/progress").await;
    let started = Instant::now();
    let r = cb
        .post(
            json!({"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"c1"}})
                .to_string(),
        )
        .await;
    assert_eq!(r.status, 202);
    let rest = read_to_end(resp).await;
    assert!(
        started.elapsed() < slow / 2,
        "cancelled, not finished: {:?}",
        started.elapsed()
    );
    assert!(!rest.contains("\"result\""), "{rest}");
}

#[tokio::test]
async fn with_sqlite_a_killed_gateway_restarts_and_its_sessions_continue() {
    let dir = common::scratch("restart-db");
    let db = dir.join("sessions.db");
    let cfg = format!(
        "[sessions]\nstore = \"sqlite\"\nsqlite_path = \"{}\"\n{}",
        db.display(),
        fixture_server()
    );
    let first = Gateway::start("restart-1", &cfg);
    let mut c = Client::new(&first.url);
    c.initialize().await;
    c.call("logging/setLevel", json!({"level": "debug"})).await;
    Command::new("kill")
        .args(["-9", &first.pid().to_string()])
        .status()
        .unwrap();
    drop(first);

    let second = Gateway::start("restart-2", &cfg);
    let again = Client {
        http: c.http.clone(),
        url: second.url.clone(),
        session: c.session.clone(),
    };
    let r = again
        .call(
            "tools/call",
            json!({"name": "fx__echo", "arguments": {"text": "same session"}}),
        )
        .await;
    assert_eq!(
        r["content"][0]["text"], "same session",
        "no re-initialize needed"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn limits_give_a_clear_503_with_retry_after() {
    let mut cfg =
        String::from("[sessions]\nstore = \"memory\"\nmax_sessions = 2\nmax_streams = 1\n");
    cfg.push_str(&fixture_server());
    let gw = Gateway::start("limits", &cfg);
    let mut one = Client::new(&gw.url);
    one.initialize().await;
    let mut two = Client::new(&gw.url);
    two.initialize().await;
    let r = Client::new(&gw.url)
        .post(
            json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}})
                .to_string(),
        )
        .await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.headers.contains_key("retry-after"));
    assert!(r.body.contains("max_sessions"), "{}", r.body);

    let get = |c: &Client| {
        c.http
            .get(&c.url)
            .header("accept", "text/event-stream")
            .header("mcp-session-id", c.session.clone().unwrap())
            .send()
    };
    let open = get(&one).await.unwrap();
    assert_eq!(open.status(), 200);
    let refused = Client::send(
        two.http
            .get(&two.url)
            .header("accept", "text/event-stream")
            .header("mcp-session-id", two.session.clone().unwrap()),
    )
    .await;
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert!(refused.body.contains("max_streams"), "{}", refused.body);
    assert!(refused.headers.contains_key("retry-after"));
    drop(open);
}

#[tokio::test]
async fn a_redis_outage_fails_fast_with_503_and_the_gateway_recovers_by_itself() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let redis = Redis::start(port);
    let gw = Gateway::start("outage", &redis_config(&unique("outage"), redis.port));
    let mut c = Client::new(&gw.url);
    c.initialize().await;
    drop(redis); // Redis goes away

    let started = Instant::now();
    let r = c.request(1, "tools/list", json!({})).await;
    // A cached session may still answer for up to a second; then the store is needed.
    let r = if r.status == 200 {
        tokio::time::sleep(Duration::from_millis(1100)).await;
        c.request(2, "tools/list", json!({})).await
    } else {
        r
    };
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.body.contains("redis"), "names the store: {}", r.body);
    assert!(r.headers.contains_key("retry-after"));
    // Fails, not waits: the store gives up on an operation after 2 s, and
    // nothing here may wait on Redis for 20 s (a request would without that limit).
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "fails fast: {:?}",
        started.elapsed()
    );
    let health = common::http()
        .get(format!("{}/healthz", gw.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200, "the gateway stays up");

    let _back = Redis::start(port);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut fresh = Client::new(&gw.url);
    loop {
        let r = fresh
            .post(
                json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}})
                    .to_string(),
            )
            .await;
        if r.status == 200 {
            fresh.session = Some(r.headers["mcp-session-id"].to_str().unwrap().to_string());
            break;
        }
        assert!(Instant::now() < deadline, "did not recover: {}", r.body);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let r = fresh
        .call(
            "tools/call",
            json!({"name": "fx__echo", "arguments": {"text": "recovered"}}),
        )
        .await;
    assert_eq!(r["content"][0]["text"], "recovered");
}

#[tokio::test]
async fn a_stream_whose_replica_died_ends_with_an_explicit_error_elsewhere() {
    let cfg = redis_config(&unique("dead"), 6379);
    let a = Gateway::start("dead-a", &cfg);
    let b = Gateway::start("dead-b", &cfg);
    let mut ca = Client::new(&a.url);
    ca.initialize().await;
    let mut resp = ca
        .post_builder(
            json!({"jsonrpc":"2.0","id":"orphan","method":"tools/call","params":{"name":"fx__slow","arguments":{"ms":60000},"_meta":{"progressToken":"p"}}})
                .to_string(),
        )
        .send()
        .await
        .unwrap();
    let first = read_until(&mut resp, "notifications/progress").await;
    let last_id = first
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("id: "))
        .unwrap()
        .to_string();
    drop(resp);
    // Events reach the store a few milliseconds after they are sent (write-behind).
    tokio::time::sleep(Duration::from_millis(300)).await;
    Command::new("kill")
        .args(["-9", &a.pid().to_string()])
        .status()
        .unwrap();

    let started = Instant::now();
    let r = ca.resume(&b.url, &last_id).await;
    let mut r = r;
    let mut body = String::new();
    // A's liveness key lives 6 s and B looks every 2 s: the error comes within
    // about 8 s. 30 s leaves room for a loaded machine; a stream nobody ends
    // is read for 45 s, so it cannot pass for one that ended.
    let within = Duration::from_secs(30);
    let deadline = Instant::now() + within * 3 / 2;
    while let Ok(Ok(Some(chunk))) = tokio::time::timeout_at(deadline.into(), r.chunk()).await {
        body.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(
        body.contains(r#""id":"orphan""#) && body.contains("stopped before it answered"),
        "{body}"
    );
    assert!(started.elapsed() < within, "{:?}", started.elapsed());
}

/// Two replicas on one Redis and one `gateway.state_key`, with a
/// session-era fixture (its server-to-client requests become
/// `input_required` rounds for 2026 clients); `test_sampling` and `slow`
/// need approval first, so `test_sampling` takes two rounds.
fn mrtr_config(prefix: &str) -> String {
    format!(
        "[gateway]\nstate_key = \"{}\"\n[sessions]\nstore = \"redis\"\nredis_url = \"redis://127.0.0.1:6379\"\nkey_prefix = \"{prefix}:\"\n[[servers]]\nname = \"fx\"\ncommand = \"{}\"\nargs = [\"--era\", \"legacy\"]\ntool_approval = {{ test_sampling = \"always\", slow = \"always\" }}\n",
        "k".repeat(64),
        sibling_bin("sluice-fixture").display()
    )
}

/// A 2026 `tools/call` of `tool` to `url`, with `extra` params (a retry's
/// `requestState` and `inputResponses`).
async fn call_2026(url: &str, id: Value, tool: &str, args: Value, extra: Value) -> common::Reply {
    let mut params = json!({"name": tool, "arguments": args, "_meta": {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {"elicitation": {}, "sampling": {}},
        "io.modelcontextprotocol/clientInfo": {"name": "t", "version": "1"}
    }});
    if let Value::Object(e) = extra {
        params.as_object_mut().unwrap().extend(e);
    }
    Client::send(
        common::http()
            .post(url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2026-07-28")
            .header("mcp-method", "tools/call")
            .header("mcp-name", tool)
            .body(
                json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":params}).to_string(),
            ),
    )
    .await
}

/// The one question of an `input_required` answer: (its key, its request), and the state.
fn asked(r: &common::Reply) -> (String, Value, String) {
    let res = r.response()["result"].clone();
    assert_eq!(res["resultType"], "input_required", "{}", r.body);
    let (key, ask) = res["inputRequests"]
        .as_object()
        .unwrap()
        .iter()
        .next()
        .unwrap();
    let state = res["requestState"].as_str().unwrap().to_string();
    (key.clone(), ask.clone(), state)
}

#[tokio::test]
async fn a_2026_retry_continues_its_call_on_any_replica() {
    let cfg = mrtr_config(&unique("mrtr"));
    let a = Gateway::start("mrtr-a", &cfg);
    let b = Gateway::start("mrtr-b", &cfg);
    let tool = "fx__test_elicitation";
    let args = json!({"message": "name?"});

    // Asked on A; a tampered state is refused on B.
    let r = call_2026(&a.url, json!(1), tool, args.clone(), json!({})).await;
    let (key, ask, state) = asked(&r);
    assert_eq!(ask["method"], "elicitation/create", "{ask}");
    let r = call_2026(
        &b.url,
        json!(2),
        tool,
        args.clone(),
        json!({"requestState": format!("{state}x"), "inputResponses": {}}),
    )
    .await;
    assert_eq!((r.status, r.error_code()), (400, -32602), "{}", r.body);

    // Answered on B: the call parked on A continues there, and B relays its result.
    let answer = json!({key: {"action": "accept", "content": {"username": "bob", "email": "b@example.com"}}});
    let retry = json!({"requestState": state, "inputResponses": answer});
    let r = call_2026(&b.url, json!("on-b"), tool, args.clone(), retry.clone()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let resp = r.response();
    assert_eq!(resp["id"], "on-b", "the client's own id: {}", r.body);
    assert_eq!(resp["result"]["resultType"], "complete", "{}", r.body);
    assert!(
        r.body.contains("bob"),
        "the tool saw the answer: {}",
        r.body
    );
    // The state was used: A says so, through B.
    let r = call_2026(&b.url, json!(3), tool, args, retry).await;
    assert_eq!((r.status, r.error_code()), (400, -32602), "{}", r.body);
    assert!(r.body.contains("already completed"), "{}", r.body);

    // Two rounds (the gateway's approval, then the tool's sampling request),
    // both answered on B; the second round is parked on A again.
    let tool = "fx__test_sampling";
    let args = json!({"prompt": "hi"});
    let r = call_2026(&a.url, json!(4), tool, args.clone(), json!({})).await;
    let (key, ask, state) = asked(&r);
    assert_eq!(ask["method"], "elicitation/create", "approval: {ask}");
    let yes = json!({key: {"action": "accept", "content": {"approve": true}}});
    let r = call_2026(
        &b.url,
        json!(5),
        tool,
        args.clone(),
        json!({"requestState": state, "inputResponses": yes}),
    )
    .await;
    let (key, ask, state) = asked(&r);
    assert_eq!(ask["method"], "sampling/createMessage", "{ask}");
    let sampled = json!({key: {"role": "assistant", "content": {"type": "text", "text": "relayed twice"}, "model": "m", "stopReason": "endTurn"}});
    let r = call_2026(
        &b.url,
        json!(6),
        tool,
        args,
        json!({"requestState": state, "inputResponses": sampled}),
    )
    .await;
    assert_eq!(r.response()["id"], 6, "{}", r.body);
    assert_eq!(
        r.response()["result"]["content"][0]["text"],
        "LLM response: relayed twice",
        "{}",
        r.body
    );

    // A client that leaves while B waits cancels the call on A.
    let (tool, args) = ("fx__slow", json!({"ms": 20000}));
    let r = call_2026(&a.url, json!(7), tool, args.clone(), json!({})).await;
    let (key, _, state) = asked(&r);
    let yes = json!({key: {"action": "accept", "content": {"approve": true}}});
    let retry = call_2026(
        &b.url,
        json!(8),
        tool,
        args,
        json!({"requestState": state, "inputResponses": yes}),
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(1500), retry)
            .await
            .is_err(),
        "slow answers after 20 s"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !a.logs().contains("fixture: cancelled request") {
        assert!(
            Instant::now() < deadline,
            "the upstream was not told: {}",
            a.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_2026_retry_whose_holder_died_is_told_to_start_again() {
    let cfg = mrtr_config(&unique("mrtrdead"));
    let a = Gateway::start("mrtrdead-a", &cfg);
    let b = Gateway::start("mrtrdead-b", &cfg);
    let tool = "fx__test_elicitation";
    let r = call_2026(&a.url, json!(1), tool, json!({}), json!({})).await;
    let (key, _, state) = asked(&r);
    Command::new("kill")
        .args(["-9", &a.pid().to_string()])
        .status()
        .unwrap();

    // Until A's heartbeat expires it counts as alive, but nothing hears it:
    // 503, retry shortly. Then: gone, send the request again.
    let retry = json!({"requestState": state, "inputResponses": {key: {"action": "decline"}}});
    let deadline = Instant::now() + Duration::from_secs(30);
    let r = loop {
        let r = call_2026(&b.url, json!(2), tool, json!({}), retry.clone()).await;
        if r.status != 503 {
            break r;
        }
        assert!(r.body.contains("not receiving messages"), "{}", r.body);
        assert!(r.headers.contains_key("retry-after"));
        assert!(Instant::now() < deadline, "still 503: {}", r.body);
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!((r.status, r.error_code()), (400, -32602), "{}", r.body);
    assert!(
        r.body.contains("holding its call stopped") && r.body.contains("without requestState"),
        "{}",
        r.body
    );
}
