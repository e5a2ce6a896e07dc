//! The fixture binary over Streamable HTTP.

mod common;

use common::HttpFixture;
use serde_json::json;

#[tokio::test]
async fn session_lifecycle_and_json_answers() {
    let fx = HttpFixture::spawn(&["--name", "http-fixture"]).await;
    let session = fx.initialize(json!({})).await;
    assert!(session.bytes().all(|b| (0x21..=0x7e).contains(&b)));

    let reply = fx
        .post(
            Some(&session),
            &json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "noop"}}),
        )
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.json()["result"]["content"][0]["text"], "ok");

    let no_session = fx
        .post(None, &json!({"jsonrpc": "2.0", "id": 3, "method": "ping"}))
        .await;
    assert_eq!(no_session.status, 400);
    let unknown = fx
        .post(
            Some("nope"),
            &json!({"jsonrpc": "2.0", "id": 3, "method": "ping"}),
        )
        .await;
    assert_eq!(unknown.status, 404);

    let deleted = fx
        .exchange("DELETE", &[("Mcp-Session-Id", &session)], None)
        .await;
    assert_eq!(deleted.status, 200);
    let after = fx
        .post(
            Some(&session),
            &json!({"jsonrpc": "2.0", "id": 4, "method": "ping"}),
        )
        .await;
    assert_eq!(after.status, 404);
}

#[tokio::test]
async fn rejects_foreign_host_and_origin() {
    let fx = HttpFixture::spawn(&[]).await;
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"},
    }});
    let base = [
        ("Content-Type", "application/json"),
        ("Accept", "application/json, text/event-stream"),
    ];
    let evil_host = fx
        .exchange(
            "POST",
            &[base[0], base[1], ("Host", "evil.example.com")],
            Some(&init),
        )
        .await;
    assert_eq!(evil_host.status, 403);
    let evil_origin = fx
        .exchange(
            "POST",
            &[base[0], base[1], ("Origin", "http://evil.example.com")],
            Some(&init),
        )
        .await;
    assert_eq!(evil_origin.status, 403);
    let local_origin = format!("http://{}", fx.addr);
    let ok = fx
        .exchange(
            "POST",
            &[base[0], base[1], ("Origin", &local_origin)],
            Some(&init),
        )
        .await;
    assert_eq!(ok.status, 200);
}

#[tokio::test]
async fn streaming_tools_answer_with_sse() {
    let fx = HttpFixture::spawn(&[]).await;
    let session = fx.initialize(json!({})).await;
    let reply = fx
        .post(
            Some(&session),
            &json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {
                "name": "test_tool_with_progress", "arguments": {}, "_meta": {"progressToken": 5},
            }}),
        )
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("text/event-stream"));
    assert!(
        reply.body.starts_with("id: "),
        "priming event first: {}",
        reply.body
    );
    let messages = reply.sse_messages();
    assert_eq!(messages.len(), 4, "{messages:?}");
    assert!(
        messages[..3]
            .iter()
            .all(|m| m["method"] == "notifications/progress" && m["params"]["progressToken"] == 5)
    );
    assert_eq!(messages[3]["id"], 7);

    // --sse-responses is off: a plain call is JSON, but SSE-only clients get SSE.
    let sse_only = fx
        .exchange(
            "POST",
            &[
                ("Content-Type", "application/json"),
                ("Accept", "text/event-stream"),
                ("Mcp-Session-Id", &session),
            ],
            Some(&json!({"jsonrpc": "2.0", "id": 8, "method": "ping"})),
        )
        .await;
    assert_eq!(sse_only.header("content-type"), Some("text/event-stream"));
    assert_eq!(sse_only.sse_messages()[0]["id"], 8);
}

#[tokio::test]
async fn reconnection_replays_the_result_after_last_event_id() {
    let fx = HttpFixture::spawn(&[]).await;
    let session = fx.initialize(json!({})).await;
    let first = fx
        .post(
            Some(&session),
            &json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "test_reconnection"}}),
        )
        .await;
    assert!(
        first.sse_messages().is_empty(),
        "stream closes before the result: {}",
        first.body
    );
    assert!(first.body.contains("retry: "));
    let last_id = first
        .body
        .lines()
        .find_map(|l| l.strip_prefix("id: "))
        .expect("event id")
        .to_owned();
    let resumed = fx
        .exchange(
            "GET",
            &[
                ("Accept", "text/event-stream"),
                ("Mcp-Session-Id", &session),
                ("Last-Event-ID", &last_id),
            ],
            None,
        )
        .await;
    assert_eq!(resumed.status, 200);
    let messages = resumed.sse_messages();
    assert_eq!(messages.len(), 1, "{}", resumed.body);
    assert_eq!(messages[0]["id"], 1);
    assert!(messages[0]["result"]["content"].is_array());
}
