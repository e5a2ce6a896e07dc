//! Rate limits and the loop guard through the gateway: explicit refusals
//! that say when to come back, budgets that survive a new session, and the
//! 2026 revision's 429 with `Retry-After`.

mod common;

use common::{Client, Gateway, Redis, Reply, sibling_bin};
use serde_json::{Value, json};

fn config(extra: &str) -> String {
    format!(
        "[sessions]\nstore = \"memory\"\n[[servers]]\nname = \"fx\"\ncommand = \"{}\"\n{extra}",
        sibling_bin("sluice-fixture").display()
    )
}

fn echo(text: &str) -> Value {
    json!({"name": "fx__echo", "arguments": {"text": text}})
}

async fn stateless_call(c: &Client, id: i64, text: &str) -> Reply {
    let rb = c
        .http
        .post(&c.url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", "fx__echo")
        .body(
            json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{
                "name":"fx__echo","arguments":{"text":text},
                "_meta":{
                    "io.modelcontextprotocol/protocolVersion":"2026-07-28",
                    "io.modelcontextprotocol/clientCapabilities":{},
                    "io.modelcontextprotocol/clientInfo":{"name":"t","version":"1"}}}})
            .to_string(),
        );
    Client::send(rb).await
}

#[tokio::test]
async fn a_limit_is_enforced_exactly_and_a_new_session_gets_no_new_budget() {
    let gw = Gateway::start(
        "limits",
        &config(
            "[[limits]]\nname = \"per-user-tools\"\nper = [\"principal\", \"tool\"]\nrate = \"3/hour\"\nburst = 3\n",
        ),
    );
    let mut c = Client::new(&gw.url);
    c.initialize().await;
    for i in 0..3 {
        let r = c.call("tools/call", echo(&format!("{i}"))).await;
        assert_eq!(r["content"][0]["text"], format!("{i}"), "{r}");
    }
    let refused = c.request(4, "tools/call", echo("4")).await;
    let e = &refused.response()["error"];
    assert_eq!(e["code"], -32029, "{}", refused.body);
    assert_eq!(e["data"]["limit"], "per-user-tools", "{e}");
    assert_eq!(
        e["data"]["scope"], "principal=127.0.0.1, tool=fx__echo",
        "{e}"
    );
    let wait = e["data"]["retryAfterSeconds"].as_u64().unwrap();
    assert!(
        (1..=1200).contains(&wait),
        "one call refills in 20 min: {e}"
    );
    let msg = e["message"].as_str().unwrap();
    assert!(
        msg.contains("fx__echo") && msg.contains("per-user-tools") && msg.contains("Retry after"),
        "{msg}"
    );
    // Listing is not counted.
    c.call("tools/list", json!({})).await;

    // A new session from the same client has the same budget.
    let mut again = Client::new(&gw.url);
    again.initialize().await;
    let r = again.request(1, "tools/call", echo("5")).await;
    assert_eq!(r.error_code(), -32029, "{}", r.body);

    // So does a 2026 request: 429 with Retry-After.
    let r = stateless_call(&again, 2, "6").await;
    assert_eq!(r.status, 429, "{}", r.body);
    let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=1200).contains(&retry), "{retry}");
    assert_eq!(r.response()["error"]["data"]["limit"], "per-user-tools");

    let metrics = gw.metrics().await;
    assert!(
        metrics.contains(r#"sluice_limit_refusals_total{limit="per-user-tools"} 3"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_limit_may_answer_a_tool_call_as_a_tool_error() {
    let gw = Gateway::start(
        "limits-result",
        &config("[[limits]]\nname = \"one\"\nrate = \"1/day\"\nanswer = \"tool_result\"\n"),
    );
    let mut c = Client::new(&gw.url);
    c.initialize().await;
    c.call("tools/call", echo("a")).await;
    let r = c.call("tools/call", echo("b")).await;
    assert_eq!(r["isError"], true, "{r}");
    let meta = &r["_meta"]["sluice/error"];
    assert_eq!(meta["code"], "rate_limited", "{r}");
    assert_eq!(meta["limit"], "one", "{r}");
    assert!(meta["retryAfter"].as_u64().unwrap() > 3600, "{r}");
}

#[tokio::test]
async fn identical_calls_are_reported_then_refused_and_other_calls_go_on() {
    let gw = Gateway::start(
        "loops",
        &config("[loop_guard]\nenabled = true\nrepeats = 3\nwindow = \"10m\"\n"),
    );
    let mut c = Client::new(&gw.url);
    c.initialize().await;
    let mut texts = Vec::new();
    for _ in 0..5 {
        let r = c.call("tools/call", echo("same")).await;
        texts.push(r);
    }
    for r in &texts[..3] {
        assert_eq!(r["content"][0]["text"], "same", "served: {r}");
    }
    assert_eq!(texts[3]["isError"], true, "{}", texts[3]);
    assert_eq!(texts[3]["_meta"]["sluice/error"]["code"], "loop_detected");
    assert!(
        texts[3]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("appears to be looping"),
        "{}",
        texts[3]
    );
    assert_eq!(
        texts[4]["_meta"]["sluice/error"]["code"], "loop_refused",
        "{}",
        texts[4]
    );
    // Other arguments are served.
    let r = c.call("tools/call", echo("different")).await;
    assert_eq!(r["content"][0]["text"], "different", "{r}");
    let logs = gw.logs();
    assert!(
        logs.contains("stage=\"loop_guard\"") && logs.contains("decision=\"noticed\""),
        "{logs}"
    );
}

#[test]
fn bad_limits_are_reported_with_their_keys() {
    let dir = common::scratch("limits-check");
    let path = dir.join("bad.toml");
    std::fs::write(
        &path,
        config(
            "[[limits]]\nname = \"a\"\nrate = \"lots\"\nper = [\"planet\"]\n[[limits]]\nname = \"a\"\nrate = \"5/min\"\nburst = 0\nmethods = [\"initialize\"]\n[loop_guard]\nrepeats = 1\n",
        ),
    )
    .unwrap();
    let out = std::process::Command::new(sibling_bin("sluice"))
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    for key in [
        "limits[0].rate",
        "limits[0].per[0]",
        "limits[1].name",
        "limits[1].burst",
        "limits[1].methods[0]",
        "loop_guard.repeats",
    ] {
        assert!(text.contains(key), "{key} not reported:\n{text}");
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn replicas_share_one_budget_in_redis_and_follow_the_outage_policy() {
    let redis = Redis::start(free_port());
    let url = format!("redis://127.0.0.1:{}", redis.port);
    let rules = format!(
        "[[limits]]\nname = \"shared\"\nrate = \"4/hour\"\nburst = 4\nstore = \"redis\"\nredis_url = \"{url}\"\non_store_error = \"deny\"\n\
         [[limits]]\nname = \"lenient\"\nper = [\"tool\"]\nrate = \"1000/hour\"\nstore = \"redis\"\nredis_url = \"{url}\"\non_store_error = \"allow\"\n"
    );
    let a = Gateway::start("limits-a", &config(&rules));
    let b = Gateway::start("limits-b", &config(&rules));
    let mut ca = Client::new(&a.url);
    ca.initialize().await;
    let mut cb = Client::new(&b.url);
    cb.initialize().await;
    // Four calls in all, on either replica; the fifth is refused on both.
    for (i, c) in [&ca, &cb, &ca, &cb].into_iter().enumerate() {
        c.call("tools/call", echo(&format!("{i}"))).await;
    }
    for c in [&ca, &cb] {
        let r = c.request(9, "tools/call", echo("over")).await;
        assert_eq!(r.error_code(), -32029, "{}", r.body);
        assert_eq!(r.response()["error"]["data"]["limit"], "shared");
    }

    // Redis goes away: `shared` denies (503-class error), naming the store.
    let port = redis.port;
    drop(redis);
    let r = ca.request(10, "tools/call", echo("down")).await;
    let e = &r.response()["error"];
    assert_eq!(e["code"], -32003, "{}", r.body);
    assert_eq!(
        e["data"]["sluice"]["code"], "limit_store_unavailable",
        "{}",
        r.body
    );
    assert!(e["message"].as_str().unwrap().contains("`shared`"), "{e}");

    // It comes back empty: the gateway recovers by itself, with a fresh budget.
    let _redis = Redis::start(port);
    let mut served = None;
    for _ in 0..60 {
        let r = ca.request(11, "tools/call", echo("back")).await;
        if r.response().get("result").is_some() {
            served = Some(r.body);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    assert!(
        served.is_some(),
        "the gateway did not recover after Redis returned"
    );
    let logs = a.logs();
    assert_eq!(
        logs.matches("limit store unavailable").count(),
        1,
        "logged once per outage:\n{logs}"
    );
    assert!(logs.contains("limit store answers again"), "{logs}");
}

#[tokio::test]
async fn a_full_bulkhead_answers_busy_instead_of_hanging() {
    let cfg = format!(
        "[sessions]\nstore = \"memory\"\n[[servers]]\nname = \"fx\"\ncommand = \"{}\"\nmax_concurrent = 1\nmax_queue = 1\nqueue_timeout = \"3s\"\ntimeout = \"120s\"\n",
        sibling_bin("sluice-fixture").display()
    );
    let gw = Gateway::start("bulkhead", &cfg);
    let mut c = Client::new(&gw.url);
    c.initialize().await;
    let slow = json!({"name": "fx__slow", "arguments": {"ms": 60000}});
    // A holds the only slot; B waits in the one queue place.
    let a = {
        let rb = c.post_builder(
            json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":slow}).to_string(),
        );
        tokio::spawn(Client::send(rb))
    };
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let b = {
        let rb = c.post_builder(
            json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":echo("b")}).to_string(),
        );
        tokio::spawn(Client::send(rb))
    };
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    // C finds the queue full: refused at once.
    let r = c.call("tools/call", echo("c")).await;
    assert_eq!(r["_meta"]["sluice/error"]["code"], "upstream_busy", "{r}");
    assert!(
        r["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("already waiting"),
        "{r}"
    );
    // B gives up after the queue timeout, explicitly.
    let rb = b.await.unwrap();
    let r = &rb.response()["result"];
    assert_eq!(
        r["_meta"]["sluice/error"]["code"], "upstream_busy",
        "{}",
        rb.body
    );
    assert!(
        r["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("came free within 3s"),
        "{r}"
    );
    a.abort();
}
