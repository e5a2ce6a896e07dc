//! The fixture binary over stdio.

mod common;

use common::StdioFixture;
use serde_json::{Value, json};

const CONFORMANCE_TOOLS: &[&str] = &[
    "test_simple_text",
    "test_image_content",
    "test_audio_content",
    "test_embedded_resource",
    "test_multiple_content_types",
    "test_tool_with_logging",
    "test_tool_with_progress",
    "test_error_handling",
    "test_sampling",
    "test_elicitation",
    "test_elicitation_sep1034_defaults",
    "test_elicitation_sep1330_enums",
    "json_schema_2020_12_tool",
    "test_reconnection",
];

#[tokio::test]
async fn initialize_reports_name_version_and_capabilities() {
    let (fx, init) = StdioFixture::initialized(&["--name", "upstream-a"], json!({})).await;
    let result = &init["result"];
    assert_eq!(init["jsonrpc"], "2.0");
    assert_eq!(init["id"], 0);
    assert_eq!(result["protocolVersion"], "2025-11-25");
    assert_eq!(result["serverInfo"]["name"], "upstream-a");
    for cap in ["tools", "resources", "prompts", "logging", "completions"] {
        assert!(result["capabilities"][cap].is_object(), "capability {cap}");
    }
    assert_eq!(result["capabilities"]["resources"]["subscribe"], true);
    assert!(fx.shutdown().await.success());
}

#[tokio::test]
async fn initialize_accepts_older_versions_and_answers_unknown_with_latest() {
    let mut fx = StdioFixture::spawn(&[]);
    for (id, asked, expected) in [
        (1, "2025-06-18", "2025-06-18"),
        (2, "2025-03-26", "2025-03-26"),
        (3, "1999-01-01", "2025-11-25"),
    ] {
        let init = fx
            .request(
                id,
                "initialize",
                json!({"protocolVersion": asked, "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}),
            )
            .await;
        assert_eq!(init["result"]["protocolVersion"], expected);
    }
    assert_eq!(fx.request(4, "ping", json!({})).await["result"], json!({}));
}

#[tokio::test]
async fn tools_list_has_every_fixture_and_passthrough_fields() {
    let (mut fx, _) = StdioFixture::initialized(&[], json!({})).await;
    let list = fx.request(1, "tools/list", json!({})).await;
    let tools = list["result"]["tools"].as_array().expect("tools");
    let names: Vec<&str> = tools
        .iter()
        .map(|t| t["name"].as_str().expect("name"))
        .collect();
    for expected in
        CONFORMANCE_TOOLS
            .iter()
            .chain(&["echo", "noop", "passthrough_probe", "slow", "fail"])
    {
        assert!(
            names.contains(expected),
            "{expected} missing from {names:?}"
        );
    }
    for tool in tools {
        assert!(tool["description"].is_string(), "{tool}");
        assert_eq!(tool["inputSchema"]["type"], "object", "{tool}");
    }
    let probe = tools
        .iter()
        .find(|t| t["name"] == "passthrough_probe")
        .expect("probe");
    assert_eq!(probe["_meta"], json!({"com.example/vendor": {"k": [1, 2]}}));
    assert_eq!(
        probe["annotations"],
        json!({"readOnlyHint": true, "x-custom": "kept"})
    );
    assert_eq!(probe["execution"], json!({"taskSupport": "optional"}));
    assert_eq!(probe["x-future-field"], json!({"nested": true}));
    let schema = &tools
        .iter()
        .find(|t| t["name"] == "json_schema_2020_12_tool")
        .expect("tool")["inputSchema"];
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    assert_eq!(schema["additionalProperties"], false);
}

#[tokio::test]
async fn tools_call_answers() {
    let (mut fx, _) = StdioFixture::initialized(&[], json!({})).await;
    let noop = fx.call(1, "noop", json!({})).await;
    assert_eq!(
        noop["result"],
        json!({"content": [{"type": "text", "text": "ok"}]})
    );

    let echo = fx.call(2, "echo", json!({"text": "héllo"})).await;
    assert_eq!(echo["result"]["content"][0]["text"], "héllo");

    let probe = fx.call(3, "passthrough_probe", json!({})).await;
    assert_eq!(
        probe["result"]["_meta"],
        json!({"com.example/trace": "abc"})
    );
    assert_eq!(probe["result"]["x-result-extra"], 42);
    assert!(probe["result"]["content"].is_array());

    let err = fx.call(4, "test_error_handling", json!({})).await;
    assert_eq!(err["result"]["isError"], true);

    let fail = fx.call(5, "fail", json!({})).await;
    assert_eq!(fail["error"]["code"], -32603);
    let fail = fx
        .call(6, "fail", json!({"code": -32001, "message": "boom"}))
        .await;
    assert_eq!(
        fail["error"],
        json!({"code": -32001, "message": "boom", "data": {"tool": "fail"}})
    );

    let unknown = fx.call(7, "no_such_tool", json!({})).await;
    assert_eq!(unknown["error"]["code"], -32602);

    let image = fx.call(8, "test_image_content", json!({})).await;
    assert_eq!(image["result"]["content"][0]["mimeType"], "image/png");

    let slow = fx.call(9, "slow", json!({"ms": 20})).await;
    assert_eq!(slow["result"]["content"][0]["text"], "slept 20 ms");

    let unknown_method = fx.request(10, "no/such/method", json!({})).await;
    assert_eq!(unknown_method["error"]["code"], -32601);
}

#[tokio::test]
async fn progress_and_logging_notifications_precede_the_result() {
    let (mut fx, _) = StdioFixture::initialized(&[], json!({})).await;
    fx.send(
        &json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
            "name": "test_tool_with_progress", "arguments": {}, "_meta": {"progressToken": "tok-1"},
        }}),
    )
    .await;
    let result = fx.response(1).await;
    assert!(result["result"]["content"].is_array());
    let progress: Vec<&Value> = fx
        .seen
        .iter()
        .filter(|m| m["method"] == "notifications/progress")
        .collect();
    assert_eq!(progress.len(), 3);
    assert!(
        progress
            .iter()
            .all(|p| p["params"]["progressToken"] == "tok-1")
    );
    assert_eq!(progress[2]["params"]["progress"], 100);

    fx.seen.clear();
    assert_eq!(
        fx.request(2, "logging/setLevel", json!({"level": "warning"}))
            .await["result"],
        json!({})
    );
    fx.call(3, "test_tool_with_logging", json!({})).await;
    assert!(
        fx.seen.is_empty(),
        "info logs must be filtered at level warning: {:?}",
        fx.seen
    );
    fx.request(4, "logging/setLevel", json!({"level": "debug"}))
        .await;
    fx.call(5, "test_tool_with_logging", json!({})).await;
    let logs = fx
        .seen
        .iter()
        .filter(|m| m["method"] == "notifications/message")
        .count();
    assert_eq!(logs, 3);
}

#[tokio::test]
async fn sampling_and_elicitation_round_trip_through_the_client() {
    let (mut fx, _) =
        StdioFixture::initialized(&[], json!({"sampling": {}, "elicitation": {}})).await;
    fx.send(
        &json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
            "name": "test_sampling", "arguments": {"prompt": "2+2?"},
        }}),
    )
    .await;
    let request = fx.recv().await;
    assert_eq!(request["method"], "sampling/createMessage");
    assert_eq!(request["params"]["messages"][0]["content"]["text"], "2+2?");
    assert_eq!(request["params"]["maxTokens"], 100);
    fx.send(&json!({"jsonrpc": "2.0", "id": request["id"], "result": {
        "role": "assistant", "content": {"type": "text", "text": "4"}, "model": "m", "stopReason": "endTurn",
    }}))
    .await;
    let result = fx.response(1).await;
    assert_eq!(result["result"]["content"][0]["text"], "LLM response: 4");

    fx.send(
        &json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
            "name": "test_elicitation_sep1034_defaults", "arguments": {},
        }}),
    )
    .await;
    let request = fx.recv().await;
    assert_eq!(request["method"], "elicitation/create");
    let props = &request["params"]["requestedSchema"]["properties"];
    assert_eq!(props["name"]["default"], "John Doe");
    assert_eq!(props["age"]["default"], 30);
    assert_eq!(props["score"]["default"], 95.5);
    assert_eq!(props["status"]["default"], "active");
    assert_eq!(props["verified"]["default"], true);
    fx.send(&json!({"jsonrpc": "2.0", "id": request["id"], "result": {"action": "decline"}}))
        .await;
    let result = fx.response(2).await;
    let text = result["result"]["content"][0]["text"]
        .as_str()
        .expect("text");
    assert!(text.contains("action=decline"), "{text}");
}

#[tokio::test]
async fn cancelled_slow_call_gets_no_response() {
    let (mut fx, _) = StdioFixture::initialized(&[], json!({})).await;
    fx.send(
        &json!({"jsonrpc": "2.0", "id": "slow-1", "method": "tools/call", "params": {
            "name": "slow", "arguments": {"ms": 60000},
        }}),
    )
    .await;
    fx.send(&json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": "slow-1"}}))
        .await;
    // The next answer is for the ping: the cancelled call never answers.
    let pong = fx.request(2, "ping", json!({})).await;
    assert_eq!(pong["result"], json!({}));
    assert!(fx.seen.is_empty(), "{:?}", fx.seen);
    assert!(fx.shutdown().await.success());
}

#[tokio::test]
async fn resources_prompts_and_completion() {
    let (mut fx, _) = StdioFixture::initialized(&[], json!({})).await;
    let list = fx.request(1, "resources/list", json!({})).await;
    let uris: Vec<&str> = list["result"]["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .map(|r| r["uri"].as_str().expect("uri"))
        .collect();
    for uri in [
        "test://static-text",
        "test://static-binary",
        "test://watched-resource",
        "test://passthrough",
    ] {
        assert!(uris.contains(&uri), "{uri}");
    }
    let read = fx
        .request(2, "resources/read", json!({"uri": "test://passthrough"}))
        .await;
    let content = &read["result"]["contents"][0];
    assert_eq!(content["x-content-extra"], "kept");
    assert!(content["_meta"]["com.example/vendor"].is_object());

    let templated = fx
        .request(
            3,
            "resources/read",
            json!({"uri": "test://template/123/data"}),
        )
        .await;
    assert!(
        templated["result"]["contents"][0]["text"]
            .as_str()
            .expect("text")
            .contains("123")
    );

    let missing = fx
        .request(4, "resources/read", json!({"uri": "test://nope"}))
        .await;
    assert_eq!(missing["error"]["code"], -32002);

    assert_eq!(
        fx.request(
            5,
            "resources/subscribe",
            json!({"uri": "test://watched-resource"})
        )
        .await["result"],
        json!({})
    );
    let update = fx
        .call(
            6,
            "trigger_resource_update",
            json!({"uri": "test://watched-resource"}),
        )
        .await;
    assert!(
        update["result"]["content"][0]["text"]
            .as_str()
            .expect("text")
            .starts_with("sent")
    );
    assert!(
        fx.seen
            .iter()
            .any(|m| m["method"] == "notifications/resources/updated"
                && m["params"]["uri"] == "test://watched-resource")
    );
    assert_eq!(
        fx.request(
            7,
            "resources/unsubscribe",
            json!({"uri": "test://watched-resource"})
        )
        .await["result"],
        json!({})
    );

    let prompt = fx
        .request(
            8,
            "prompts/get",
            json!({"name": "test_prompt_with_arguments", "arguments": {"arg1": "a", "arg2": "b"}}),
        )
        .await;
    assert_eq!(
        prompt["result"]["messages"][0]["content"]["text"],
        "Prompt with arguments: arg1='a', arg2='b'"
    );
    let missing_arg = fx
        .request(
            9,
            "prompts/get",
            json!({"name": "test_prompt_with_arguments", "arguments": {"arg1": "a"}}),
        )
        .await;
    assert_eq!(missing_arg["error"]["code"], -32602);

    let completion = fx
        .request(
            10,
            "completion/complete",
            json!({
                "ref": {"type": "ref/prompt", "name": "test_prompt_with_arguments"},
                "argument": {"name": "arg1", "value": "par"},
            }),
        )
        .await;
    assert_eq!(
        completion["result"]["completion"]["values"],
        json!(["paris", "park", "party"])
    );
}

#[tokio::test]
async fn pagination_and_dynamic_tool() {
    let (mut fx, _) = StdioFixture::initialized(&["--page-size", "4"], json!({})).await;
    let mut names = Vec::new();
    let mut cursor: Option<Value> = None;
    for id in 1.. {
        let params = match &cursor {
            Some(c) => json!({"cursor": c}),
            None => json!({}),
        };
        let page = fx.request(id, "tools/list", params).await;
        let tools = page["result"]["tools"].as_array().expect("tools");
        assert!(tools.len() <= 4);
        names.extend(
            tools
                .iter()
                .map(|t| t["name"].as_str().expect("name").to_owned()),
        );
        cursor = page["result"].get("nextCursor").cloned();
        if cursor.is_none() {
            break;
        }
    }
    assert!(names.len() > 4 && names.contains(&"noop".to_owned()));
    assert!(!names.contains(&"dynamic_tool".to_owned()));

    fx.call(100, "toggle_dynamic_tool", json!({})).await;
    assert!(
        fx.seen
            .iter()
            .any(|m| m["method"] == "notifications/tools/list_changed")
    );
    let called = fx.call(101, "dynamic_tool", json!({})).await;
    assert_eq!(
        called["result"]["content"][0]["text"],
        "dynamic tool called"
    );
    fx.call(102, "toggle_dynamic_tool", json!({})).await;
    assert_eq!(
        fx.call(103, "dynamic_tool", json!({})).await["error"]["code"],
        -32602
    );
}

#[tokio::test]
async fn malformed_input_gets_json_rpc_errors() {
    let mut fx = StdioFixture::spawn(&[]);
    fx.send_raw("{not json").await;
    let parse = fx.recv().await;
    assert_eq!(parse["error"]["code"], -32700);
    assert_eq!(parse["id"], Value::Null);
    fx.send_raw(r#"{"jsonrpc":"2.0","foo":1}"#).await;
    assert_eq!(fx.recv().await["error"]["code"], -32600);
    // Requests written just before stdin closes are still answered.
    fx.send_raw(r#"{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"slow","arguments":{"ms":50}}}"#)
        .await;
    fx.close_stdin();
    assert_eq!(fx.recv().await["id"], 9);
    assert!(fx.shutdown().await.success());
}

#[tokio::test]
async fn crash_exits_without_answering() {
    let (mut fx, _) = StdioFixture::initialized(&[], json!({})).await;
    fx.send(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "crash", "arguments": {"code": 7}}}))
        .await;
    let status = fx.wait_exit().await;
    assert_eq!(status.code(), Some(7));
}
