//! The stateless revision 2026-07-28 over stdio: requests carrying
//! `params._meta["io.modelcontextprotocol/protocolVersion"]` are served
//! without (or regardless of) an initialize handshake.

mod common;

use common::{StdioFixture, envelope};
use serde_json::{Value, json};

fn modern(params: Value) -> Value {
    let mut params = params;
    if params.get("_meta").is_none() {
        params["_meta"] = envelope(json!({"elicitation": {}, "sampling": {}, "roots": {}}));
    }
    params
}

#[tokio::test]
async fn discover_without_initialize() {
    let mut fx = StdioFixture::spawn(&["--name", "stdio-2026"]);
    let discover = fx.request(1, "server/discover", modern(json!({}))).await;
    let result = &discover["result"];
    assert_eq!(result["supportedVersions"], json!(["2026-07-28"]));
    assert_eq!(result["resultType"], "complete");
    assert_eq!(
        result["_meta"]["io.modelcontextprotocol/serverInfo"]["name"],
        "stdio-2026"
    );
    // The ladder without headers: a missing envelope, a non-string or
    // unsupported version.
    let e = fx.request(2, "server/discover", json!({})).await;
    assert_eq!(e["error"]["code"], -32602);
    let mut meta = envelope(json!({}));
    meta["io.modelcontextprotocol/protocolVersion"] = json!(2026);
    let e = fx.request(3, "tools/list", json!({"_meta": meta})).await;
    assert_eq!(e["error"]["code"], -32602);
    meta["io.modelcontextprotocol/protocolVersion"] = json!("2099-01-01");
    let e = fx.request(4, "tools/list", json!({"_meta": meta})).await;
    assert_eq!(e["error"]["code"], -32022);
    assert_eq!(e["error"]["data"]["requested"], "2099-01-01");
    let e = fx.request(5, "ping", modern(json!({}))).await;
    assert_eq!(e["error"]["code"], -32601);
    let e = fx
        .request(6, "resources/read", modern(json!({"uri": "test://nope"})))
        .await;
    assert_eq!(e["error"]["code"], -32602);
    assert_eq!(e["error"]["data"]["uri"], "test://nope");
    assert!(fx.shutdown().await.success());
}

#[tokio::test]
async fn both_eras_on_one_connection() {
    let (mut fx, init) = StdioFixture::initialized(&[], json!({})).await;
    assert_eq!(init["result"]["protocolVersion"], "2025-11-25");
    let legacy = fx.request(1, "tools/list", json!({})).await;
    let modern_list = fx.request(2, "tools/list", modern(json!({}))).await;
    let count = |v: &Value| v["result"]["tools"].as_array().map_or(0, Vec::len);
    assert!(count(&modern_list) > count(&legacy));
    assert!(legacy["result"].get("resultType").is_none());
    assert_eq!(modern_list["result"]["resultType"], "complete");
    assert_eq!(fx.request(3, "ping", json!({})).await["result"], json!({}));
}

#[tokio::test]
async fn input_required_progress_and_logs() {
    let mut fx = StdioFixture::spawn(&[]);
    let name = "test_input_required_result_multiple_inputs";
    let first = fx
        .request(
            1,
            "tools/call",
            modern(json!({"name": name, "arguments": {}})),
        )
        .await;
    let result = &first["result"];
    assert_eq!(result["resultType"], "input_required");
    let keys: Vec<&String> = result["inputRequests"]
        .as_object()
        .expect("requests")
        .keys()
        .collect();
    assert_eq!(keys, ["user_name", "greeting", "client_roots"]);
    let done = fx
        .request(
            2,
            "tools/call",
            modern(json!({"name": name, "arguments": {}, "requestState": result["requestState"],
                "inputResponses": {
                    "user_name": {"action": "accept", "content": {"name": "Al"}},
                    "greeting": {"role": "assistant", "content": {"type": "text", "text": "hey"}, "model": "m"},
                    "client_roots": {"roots": [{"uri": "file:///r"}]},
                }})),
        )
        .await;
    assert_eq!(
        done["result"]["content"][0]["text"],
        "name=Al, greeting=hey, roots=file:///r"
    );
    // Nothing was sent but responses: no server-to-client requests.
    assert!(fx.seen.is_empty(), "{:?}", fx.seen);

    let mut meta = envelope(json!({}));
    meta["progressToken"] = json!(7);
    meta["io.modelcontextprotocol/logLevel"] = json!("info");
    fx.request(
        3,
        "tools/call",
        json!({"name": "test_tool_with_progress", "arguments": {}, "_meta": meta}),
    )
    .await;
    fx.request(
        4,
        "tools/call",
        json!({"name": "test_logging_tool", "arguments": {}, "_meta": meta}),
    )
    .await;
    fx.request(
        5,
        "tools/call",
        modern(json!({"name": "test_logging_tool", "arguments": {}})),
    )
    .await;
    let methods: Vec<&str> = fx
        .seen
        .iter()
        .filter_map(|m| m["method"].as_str())
        .collect();
    assert_eq!(
        methods,
        [
            "notifications/progress",
            "notifications/progress",
            "notifications/progress",
            "notifications/message",
            "notifications/message",
            "notifications/message",
        ]
    );
}

#[tokio::test]
async fn listen_until_cancelled() {
    let mut fx = StdioFixture::spawn(&[]);
    fx.send(&json!({"jsonrpc": "2.0", "id": "sub", "method": "subscriptions/listen",
        "params": modern(json!({"notifications": {"toolsListChanged": true, "resourceSubscriptions": ["test://watched-resource"]}}))}))
        .await;
    let ack = fx.recv().await;
    assert_eq!(ack["method"], "notifications/subscriptions/acknowledged");
    assert_eq!(
        ack["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"],
        "sub"
    );
    fx.request(
        1,
        "tools/call",
        modern(json!({"name": "test_trigger_tool_change", "arguments": {}})),
    )
    .await;
    fx.request(
        2,
        "tools/call",
        modern(json!({"name": "trigger_resource_update", "arguments": {}})),
    )
    .await;
    fx.request(
        3,
        "tools/call",
        modern(json!({"name": "test_trigger_prompt_change", "arguments": {}})),
    )
    .await;
    let mut seen: Vec<Value> = std::mem::take(&mut fx.seen);
    while seen.len() < 2 {
        seen.push(fx.recv().await);
    }
    assert_eq!(seen[0]["method"], "notifications/tools/list_changed");
    assert_eq!(seen[1]["method"], "notifications/resources/updated");
    assert_eq!(seen[1]["params"]["uri"], "test://watched-resource");
    assert!(
        seen.iter()
            .all(|m| m["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"] == "sub")
    );
    // Cancelling the listen ends it: no more changes, and no response.
    fx.send(&json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": "sub"}}))
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    fx.request(
        4,
        "tools/call",
        modern(json!({"name": "test_trigger_tool_change", "arguments": {}})),
    )
    .await;
    assert!(fx.seen.is_empty(), "{:?}", fx.seen);
    assert!(fx.shutdown().await.success());
}

#[tokio::test]
async fn eras_can_be_restricted() {
    // legacy: like a server that predates 2026.
    let mut fx = StdioFixture::spawn(&["--era", "legacy"]);
    let e = fx.request(1, "server/discover", modern(json!({}))).await;
    assert_eq!(e["error"]["code"], -32601);

    // modern: initialize is refused, naming the supported version.
    let mut fx = StdioFixture::spawn(&["--era", "modern"]);
    let e = fx
        .request(
            1,
            "initialize",
            json!({"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}),
        )
        .await;
    assert_eq!(e["error"]["code"], -32022);
    assert_eq!(e["error"]["data"]["supported"], json!(["2026-07-28"]));
    let e = fx.request(2, "tools/list", json!({})).await;
    assert_eq!(e["error"]["code"], -32602);
    let ok = fx.request(3, "tools/list", modern(json!({}))).await;
    assert_eq!(ok["result"]["resultType"], "complete");
}

/// The cancelled call's length: far longer than exiting takes, and longer
/// than `WAIT`, so a fixture still running it fails either check.
const SLOW: std::time::Duration = std::time::Duration::from_secs(40);

#[tokio::test]
async fn cancelled_stateless_call_gets_no_response() {
    let mut fx = StdioFixture::spawn(&[]);
    fx.send(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": modern(json!({"name": "slow", "arguments": {"ms": SLOW.as_millis() as u64}}))}))
        .await;
    fx.send(
        &json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 1}}),
    )
    .await;
    let next = fx
        .request(
            2,
            "tools/call",
            modern(json!({"name": "noop", "arguments": {}})),
        )
        .await;
    assert_eq!(next["result"]["content"][0]["text"], "ok");
    assert!(fx.seen.is_empty(), "{:?}", fx.seen);
    // The slow call stopped: the fixture exits at once when stdin closes,
    // not when the call would have ended.
    let started = std::time::Instant::now();
    assert!(fx.shutdown().await.success());
    assert!(started.elapsed() < SLOW / 2, "{:?}", started.elapsed());
}
