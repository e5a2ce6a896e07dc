//! Bad input gets a clear error, and the gateway keeps serving.

mod common;

use common::{Client, Gateway};
use serde_json::json;

const CONFIG: &str = "[listen]\nmax_body_bytes = 2048\n";

#[tokio::test]
async fn every_kind_of_bad_input_gets_its_error_and_the_gateway_keeps_serving() {
    let gw = Gateway::start("bad-input", CONFIG);
    let mut c = Client::new(&gw.url);

    // Before any session.
    let r = c.post("{not json").await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.error_code(), -32700);

    let r = c.post(r#"{"id":1,"method":"ping"}"#).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.error_code(), -32600);
    assert!(r.body.contains("jsonrpc"), "{}", r.body);

    let r = c
        .post(json!({"jsonrpc":"2.0","id":1,"method":"ping"}).to_string())
        .await;
    assert_eq!(r.status, 400, "missing session id: {}", r.body);
    assert!(r.body.contains("Mcp-Session-Id"), "{}", r.body);

    let big = json!({"jsonrpc":"2.0","id":1,"method":"ping","params":{"pad":"x".repeat(4096)}})
        .to_string();
    let r = c.post(big).await;
    assert_eq!(r.status, 413, "{}", r.body);
    assert!(r.body.contains("2048"), "{}", r.body);

    let r = Client::send(
        c.post_builder(json!({"jsonrpc":"2.0","id":1,"method":"ping"}).to_string())
            .header("origin", "http://evil.example"),
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("evil.example"), "{}", r.body);

    let r = Client::send(
        c.post_builder(json!({"jsonrpc":"2.0","id":1,"method":"ping"}).to_string())
            .header("host", "attacker.example:80"),
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.body);

    let r = Client::send(
        c.http
            .post(&c.url)
            .header("content-type", "text/plain")
            .body("{}"),
    )
    .await;
    assert_eq!(r.status, 415, "{}", r.body);

    // A loopback Origin is fine.
    let r = Client::send(
        c.post_builder(
            json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}})
                .to_string(),
        )
        .header("origin", "http://localhost:3000"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);

    c.initialize().await;

    let r = c.request(2, "no/such/method", json!({})).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.error_code(), -32601);
    assert!(r.body.contains("no/such/method"));

    let r = c.request(3, "tools/call", json!({"arguments": {}})).await;
    assert_eq!(r.error_code(), -32602);
    assert!(r.body.contains("name"), "{}", r.body);

    let r = c
        .request(4, "tools/call", json!({"name": "nowhere__tool"}))
        .await;
    assert_eq!(r.error_code(), -32602);
    assert!(r.body.contains("nowhere__tool"), "{}", r.body);

    let r = c
        .request(5, "resources/read", json!({"uri": "file:///etc/passwd"}))
        .await;
    assert_eq!(r.error_code(), -32602);
    assert!(r.body.contains("file:///etc/passwd"), "{}", r.body);

    let r = c
        .request(6, "tools/list", json!({"cursor": "not-a-cursor"}))
        .await;
    assert_eq!(r.error_code(), -32602);

    let r = c
        .request(7, "logging/setLevel", json!({"level": "loud"}))
        .await;
    assert_eq!(r.error_code(), -32602);

    let r = Client::send(
        c.post_builder(json!({"jsonrpc":"2.0","id":8,"method":"ping"}).to_string())
            .header("mcp-protocol-version", "1999-01-01"),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("1999-01-01"), "{}", r.body);

    let mut stranger = Client::new(&gw.url);
    stranger.session = Some("0123456789abcdef".into());
    let r = stranger.request(9, "ping", json!({})).await;
    assert_eq!(r.status, 404, "{}", r.body);

    // Still serving.
    let r = c.request(10, "ping", json!({})).await;
    assert_eq!(r.response()["result"], json!({}));

    // An ended session is gone.
    let r = Client::send(
        c.http
            .delete(&c.url)
            .header("mcp-session-id", c.session.clone().unwrap()),
    )
    .await;
    assert_eq!(r.status, 200);
    let r = c.request(11, "ping", json!({})).await;
    assert_eq!(r.status, 404, "{}", r.body);
}

#[tokio::test]
async fn health_endpoints_answer() {
    let gw = Gateway::start("health", "");
    let http = common::http();
    let r = http
        .get(format!("{}/healthz", gw.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = http
        .get(format!("{}/readyz", gw.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert_eq!(v["ready"], true);
}

#[tokio::test]
async fn an_unreachable_required_server_makes_readyz_fail_and_names_it() {
    let gw = Gateway::start(
        "ready-down",
        "[[servers]]\nname = \"gone\"\nurl = \"http://127.0.0.1:9/mcp\"\ntimeout = \"2s\"\n",
    );
    let r = common::http()
        .get(format!("{}/readyz", gw.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let body = r.text().await.unwrap();
    assert!(body.contains("\"gone\""), "{body}");
}
