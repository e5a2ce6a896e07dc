//! Cancellation, list_changed, pagination and long names through the gateway.

mod common;

use common::{Client, Gateway, sibling_bin};
use serde_json::{Value, json};
use std::time::Duration;

fn fixture_server(name: &str, prefix: Option<&str>, extra_args: &[&str]) -> String {
    let mut args = vec!["--name".to_string(), name.to_string()];
    args.extend(extra_args.iter().map(|s| s.to_string()));
    let args: Vec<String> = args.iter().map(|a| format!("{a:?}")).collect();
    let prefix = prefix
        .map(|p| format!("prefix = {p:?}\n"))
        .unwrap_or_default();
    format!(
        "[[servers]]\nname = {name:?}\n{prefix}command = {:?}\nargs = [{}]\n",
        sibling_bin("sluice-fixture").display().to_string(),
        args.join(", ")
    )
}

#[tokio::test]
async fn a_cancelled_call_is_cancelled_upstream_and_gets_no_response() {
    let gw = Gateway::start("cancel", &fixture_server("fx", None, &[]));
    let mut c = Client::new(&gw.url);
    c.initialize().await;
    // Far longer than the cancel takes to end the stream, and shorter than the
    // gateway's 60 s request timeout: "ended by the cancel" is well under half of it.
    let slow = Duration::from_secs(40);
    let mut resp = c
        .post_builder(
            json!({"jsonrpc":"2.0","id":"slow-1","method":"tools/call","params":{"name":"fx__slow","arguments":{"ms":slow.as_millis() as u64},"_meta":{"progressToken":1}}})
                .to_string(),
        )
        .send()
        .await
        .unwrap();
    // Wait until the call is running (first progress event).
    let mut body = String::new();
    while !body.contains("notifications/progress") {
        let chunk = resp.chunk().await.unwrap().expect("stream open");
        body.push_str(&String::from_utf8_lossy(&chunk));
    }
    let r = c
        .post(json!({"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"slow-1","reason":"user"}}).to_string())
        .await;
    assert_eq!(r.status, 202);
    let started = std::time::Instant::now();
    while let Some(chunk) = tokio::time::timeout(slow / 2, resp.chunk())
        .await
        .expect("the stream ends soon after the cancel")
        .unwrap()
    {
        body.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(started.elapsed() < slow / 2, "{:?}", started.elapsed());
    assert!(
        !body.contains("\"result\""),
        "no response for a cancelled request: {body}"
    );
    // The upstream was told.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !gw.logs().contains("fixture: cancelled request") {
        assert!(
            std::time::Instant::now() < deadline,
            "upstream never got notifications/cancelled:\n{}",
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // And the session goes on.
    let r = c
        .call(
            "tools/call",
            json!({"name":"fx__echo","arguments":{"text":"after"}}),
        )
        .await;
    assert_eq!(r["content"][0]["text"], "after");
}

#[tokio::test]
async fn list_changed_from_an_upstream_reaches_the_client_and_refreshes_the_list() {
    // A session-era upstream: its list_changed arrives over stdio as it happens.
    let gw = Gateway::start(
        "listchanged",
        &fixture_server("fx", None, &["--era", "legacy"]),
    );
    let mut c = Client::new(&gw.url);
    c.initialize().await;
    let before = c.call("tools/list", json!({})).await;
    let has_dynamic = |l: &Value| {
        l["tools"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "fx__dynamic_tool")
    };
    assert!(!has_dynamic(&before));

    let mut stream = c
        .http
        .get(&c.url)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", c.session.clone().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    // A second standalone stream on the same session is refused.
    let second = c
        .http
        .get(&c.url)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", c.session.clone().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(second.status(), 409);

    c.call(
        "tools/call",
        json!({"name":"fx__toggle_dynamic_tool","arguments":{}}),
    )
    .await;
    let mut body = String::new();
    while !body.contains("notifications/tools/list_changed") {
        let chunk = tokio::time::timeout(Duration::from_secs(30), stream.chunk())
            .await
            .expect("list_changed arrives")
            .unwrap()
            .expect("stream open");
        body.push_str(&String::from_utf8_lossy(&chunk));
    }
    let after = c.call("tools/list", json!({})).await;
    assert!(has_dynamic(&after), "{after}");
}

#[tokio::test]
async fn merged_lists_paginate_with_the_gateways_own_cursors() {
    let mut cfg = String::from("[gateway]\npage_size = 5\n");
    cfg.push_str(&fixture_server("a", None, &["--page-size", "3"]));
    cfg.push_str(&fixture_server("b", None, &["--page-size", "4"]));
    let gw = Gateway::start("paging", &cfg);
    let mut c = Client::new(&gw.url);
    c.initialize().await;
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..100 {
        let params = match &cursor {
            Some(c) => json!({"cursor": c}),
            None => json!({}),
        };
        let page = c.call("tools/list", params).await;
        let tools = page["tools"].as_array().unwrap();
        assert!(tools.len() <= 5);
        all.extend(
            tools
                .iter()
                .map(|t| t["name"].as_str().unwrap().to_string()),
        );
        match page.get("nextCursor").and_then(Value::as_str) {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
    }
    let a = all.iter().filter(|n| n.starts_with("a__")).count();
    let b = all.iter().filter(|n| n.starts_with("b__")).count();
    assert!(
        a > 10 && a == b,
        "every page of both upstreams: {a} vs {b}: {all:?}"
    );
    let mut dedup = all.clone();
    dedup.sort();
    dedup.dedup();
    assert_eq!(dedup.len(), all.len(), "no item twice");
}

#[tokio::test]
async fn long_names_are_shortened_stably_and_still_route() {
    let prefix = "a_very_long_server_prefix_for_x";
    let gw = Gateway::start("longnames", &fixture_server("fx", Some(prefix), &[]));
    let mut c = Client::new(&gw.url);
    // No elicitation capability: the routed call fails fast upstream instead of waiting for an answer.
    c.initialize_with(json!({})).await;
    let tools = c.call("tools/list", json!({})).await;
    let names: Vec<&str> = tools["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    let re_ok = |n: &str| {
        !n.is_empty()
            && n.len() <= 64
            && n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    };
    assert!(names.iter().all(|n| re_ok(n)), "{names:?}");
    let long = names
        .iter()
        .find(|n| n.len() == 64 && n.starts_with(&format!("{prefix}__test_elicitation_sep10")))
        .expect("the long tool name was shortened");
    assert_eq!(long.len(), 64);
    let r = c
        .request(5, "tools/call", json!({"name": long, "arguments": {}}))
        .await;
    assert!(
        r.body.contains("elicitation"),
        "routes to the upstream: {}",
        r.body
    );
    let echo = format!("{prefix}__echo");
    let r = c
        .call(
            "tools/call",
            json!({"name": echo, "arguments": {"text": "x"}}),
        )
        .await;
    assert_eq!(r["content"][0]["text"], "x");
}
