//! The stateless revision 2026-07-28 over Streamable HTTP: era routing, the
//! validation ladder with its codes and statuses, result shaping, MRTR,
//! subscriptions/listen and logging.

mod common;

use std::time::Duration;

use common::{HttpFixture, envelope, modern_headers, modern_request};
use serde_json::{Value, json};

const SERVER_INFO: &str = "io.modelcontextprotocol/serverInfo";

fn assert_error(reply: &common::HttpReply, status: u16, code: i64, id: Value) -> Value {
    assert_eq!(reply.status, status, "{}", reply.body);
    let body = reply.json();
    assert_eq!(body["error"]["code"], code, "{body}");
    assert_eq!(body["id"], id, "{body}");
    body["error"].clone()
}

#[tokio::test]
async fn discover_and_result_shaping() {
    let fx = HttpFixture::spawn(&["--name", "fx-2026", "--ttl-ms", "5000"]).await;
    let reply = fx.modern(json!(1), "server/discover", json!({}), &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.header("mcp-session-id"), None);
    let result = reply.json()["result"].clone();
    assert_eq!(result["supportedVersions"], json!(["2026-07-28"]));
    assert_eq!(result["capabilities"]["tools"]["listChanged"], true);
    assert_eq!(result["resultType"], "complete");
    assert_eq!(result["ttlMs"], 5000);
    assert_eq!(result["cacheScope"], "public");
    assert_eq!(result["_meta"][SERVER_INFO]["name"], "fx-2026");
    assert!(result.get("serverInfo").is_none());

    // Lists are cacheable and carry the 2026 fixtures; 2025 sessions do
    // not see them.
    let tools = fx
        .modern(json!(2), "tools/list", json!({}), &[])
        .await
        .json();
    let names: Vec<&str> = tools["result"]["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    for name in [
        "echo",
        "test_simple_text",
        "test_missing_capability",
        "test_input_required_result_elicitation",
        "test_trigger_tool_change",
    ] {
        assert!(names.contains(&name), "{name} in {names:?}");
    }
    assert_eq!(tools["result"]["ttlMs"], 5000);
    let session = fx.initialize(json!({})).await;
    let legacy = fx
        .post(
            Some(&session),
            &json!({"jsonrpc": "2.0", "id": 3, "method": "tools/list"}),
        )
        .await
        .json();
    let legacy_names: Vec<&str> = legacy["result"]["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(!legacy_names.contains(&"test_missing_capability"));
    assert!(legacy["result"].get("resultType").is_none());

    // Every result: resultType and the serverInfo stamp, _meta merged.
    let call = fx
        .modern(
            json!("c"),
            "tools/call",
            json!({"name": "passthrough_probe", "arguments": {}}),
            &[],
        )
        .await
        .json();
    assert_eq!(call["id"], "c");
    assert_eq!(call["result"]["resultType"], "complete");
    assert_eq!(call["result"]["_meta"]["com.example/trace"], "abc");
    assert_eq!(call["result"]["_meta"][SERVER_INFO]["name"], "fx-2026");
    assert!(call["result"].get("ttlMs").is_none());
    let read = fx
        .modern(
            json!(4),
            "resources/read",
            json!({"uri": "test://static-text"}),
            &[],
        )
        .await
        .json();
    assert_eq!(read["result"]["cacheScope"], "public");
    // 2026 forbids -32002: resource not found is -32602 with the URI.
    let missing = fx
        .modern(
            json!(5),
            "resources/read",
            json!({"uri": "test://nope"}),
            &[],
        )
        .await;
    let err = assert_error(&missing, 400, -32602, json!(5));
    assert_eq!(err["data"]["uri"], "test://nope");
}

#[tokio::test]
async fn validation_ladder_codes_and_statuses() {
    let fx = HttpFixture::spawn(&[]).await;
    let meta = envelope(json!({}));

    // Rungs 3 and 4: the envelope.
    let r = fx
        .modern(json!(101), "server/discover", json!({"_meta": {}}), &[])
        .await;
    let err = assert_error(&r, 400, -32602, json!(101));
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("missing the required envelope key")
    );
    let body = json!({"jsonrpc": "2.0", "id": 102, "method": "server/discover"});
    let headers = modern_headers(&body, &[]);
    let headers: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let r = fx.exchange("POST", &headers, Some(&body)).await;
    assert_error(&r, 400, -32602, json!(102));
    // clientInfo is optional.
    let mut no_info = meta.clone();
    no_info
        .as_object_mut()
        .unwrap()
        .remove("io.modelcontextprotocol/clientInfo");
    let r = fx
        .modern(
            json!(105),
            "server/discover",
            json!({"_meta": no_info}),
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);

    // Rung 5 before 7: header 2026 with body v999 is a header mismatch.
    let mut v999 = meta.clone();
    v999["io.modelcontextprotocol/protocolVersion"] = json!("v999.0.0");
    let r = fx
        .modern(json!(302), "server/discover", json!({"_meta": v999}), &[])
        .await;
    assert_error(&r, 400, -32020, json!(302));
    // Rung 7: both v999.
    let r = fx
        .modern(
            json!(301),
            "server/discover",
            json!({"_meta": v999}),
            &[("MCP-Protocol-Version", "v999.0.0")],
        )
        .await;
    let err = assert_error(&r, 400, -32022, json!(301));
    assert_eq!(
        err["data"],
        json!({"supported": ["2026-07-28"], "requested": "v999.0.0"})
    );

    // Mcp-Method and Mcp-Name.
    let r = fx
        .modern(
            json!(6),
            "tools/list",
            json!({}),
            &[("Mcp-Method", "TOOLS/LIST")],
        )
        .await;
    assert_error(&r, 400, -32020, json!(6));
    let echo = json!({"name": "echo", "arguments": {"text": "hi"}});
    let r = fx
        .modern(
            json!(7),
            "tools/call",
            echo.clone(),
            &[("Mcp-Name", "other")],
        )
        .await;
    assert_error(&r, 400, -32020, json!(7));
    for ok in ["=?base64?ZWNobw==?=", "  echo  "] {
        let r = fx
            .modern(json!(8), "tools/call", echo.clone(), &[("Mcp-Name", ok)])
            .await;
        assert_eq!(r.status, 200, "Mcp-Name {ok:?}: {}", r.body);
        assert_eq!(r.json()["result"]["content"][0]["text"], "hi");
    }
    let mut body = modern_request(json!(9), "tools/list", json!({}));
    body["params"]["_meta"] = meta.clone();
    let mut headers = modern_headers(&body, &[]);
    headers.push(("Mcp-Method".into(), "tools/list".into()));
    let headers: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let r = fx.exchange("POST", &headers, Some(&body)).await;
    let err = assert_error(&r, 400, -32020, json!(9));
    assert!(err["message"].as_str().unwrap().contains("more than once"));

    // Removed and unknown methods: 404 -32601.
    for (id, method) in [
        (500, "initialize"),
        (501, "ping"),
        (502, "logging/setLevel"),
        (503, "resources/subscribe"),
        (601, "unknown/method"),
    ] {
        let r = fx.modern(json!(id), method, json!({}), &[]).await;
        let err = assert_error(&r, 404, -32601, json!(id));
        assert_eq!(err["data"], method);
    }

    // Missing capability: -32021, data.requiredCapabilities an object.
    let r = fx
        .modern(
            json!(401),
            "tools/call",
            json!({"name": "test_missing_capability", "arguments": {}, "_meta": meta}),
            &[],
        )
        .await;
    let err = assert_error(&r, 400, -32021, json!(401));
    assert_eq!(err["data"]["requiredCapabilities"], json!({"sampling": {}}));

    // HTTP layer: batches, responses, parse errors, notifications, GET.
    let batch = json!([modern_request(json!(1), "tools/list", json!({}))]);
    let headers = modern_headers(&batch[0], &[]);
    let headers: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let r = fx.exchange("POST", &headers, Some(&batch)).await;
    assert_error(&r, 400, -32600, Value::Null);
    let note =
        json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 1}});
    let r = fx.exchange("POST", &headers, Some(&note)).await;
    assert_eq!(r.status, 202);
    let r = fx
        .exchange(
            "GET",
            &[
                ("Accept", "text/event-stream"),
                ("MCP-Protocol-Version", "2026-07-28"),
            ],
            None,
        )
        .await;
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("POST"));
    let r = fx
        .modern(
            json!(10),
            "tools/list",
            json!({}),
            &[("Accept", "text/event-stream")],
        )
        .await;
    assert_eq!(r.status, 406);

    // A session id on a 2026 request is ignored, never echoed.
    let r = fx
        .modern(
            json!(11),
            "tools/list",
            json!({}),
            &[("Mcp-Session-Id", "abc")],
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("mcp-session-id"), None);

    // No version header but a modern envelope (and no session): stateless,
    // so the missing header is a -32020.
    let body = modern_request(json!(12), "tools/list", json!({}));
    let r = fx
        .exchange(
            "POST",
            &[
                ("Content-Type", "application/json"),
                ("Accept", "application/json, text/event-stream"),
            ],
            Some(&body),
        )
        .await;
    assert_error(&r, 400, -32020, json!(12));
}

#[tokio::test]
async fn mcp_param_headers() {
    let fx = HttpFixture::spawn(&[]).await;
    let call =
        json!({"name": "test_header_params", "arguments": {"region": "Hello", "query": "q"}});
    for (header, status) in [
        (Some("Hello"), 200),
        (Some("=?base64?SGVsbG8=?="), 200),
        (Some("=?base64?SGVsbG8?="), 400),
        (Some("=?base64?SGVs!!!bG8=?="), 400),
        (Some("Bye"), 400),
        (None, 400),
    ] {
        let extra: Vec<(&str, &str)> = header.iter().map(|h| ("Mcp-Param-Region", *h)).collect();
        let r = fx
            .modern(json!(1), "tools/call", call.clone(), &extra)
            .await;
        assert_eq!(r.status, status, "Mcp-Param-Region {header:?}: {}", r.body);
        if status == 400 {
            assert_eq!(r.json()["error"]["code"], -32020);
        }
    }
    // A value without the full sentinel is a literal.
    let literal =
        json!({"name": "test_header_params", "arguments": {"region": "=?base64?SGVsbG8="}});
    let r = fx
        .modern(
            json!(2),
            "tools/call",
            literal,
            &[("Mcp-Param-Region", "=?base64?SGVsbG8=")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
}

async fn call(fx: &HttpFixture, id: i64, params: Value) -> Value {
    let r = fx.modern(json!(id), "tools/call", params, &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["result"].clone()
}

#[tokio::test]
async fn input_required_rounds() {
    let fx = HttpFixture::spawn(&[]).await;
    let name = "test_input_required_result_elicitation";

    let first = call(&fx, 1, json!({"name": name, "arguments": {}})).await;
    assert_eq!(first["resultType"], "input_required");
    let ask = &first["inputRequests"]["user_name"];
    assert_eq!(ask["method"], "elicitation/create");
    assert!(ask.get("id").is_none() && ask.get("jsonrpc").is_none());
    let state = first["requestState"].as_str().expect("state").to_owned();
    let answer = json!({"user_name": {"action": "accept", "content": {"name": "Alice"}}});
    let done = call(
        &fx,
        2,
        json!({"name": name, "arguments": {}, "inputResponses": answer, "requestState": state}),
    )
    .await;
    assert_eq!(done["resultType"], "complete");
    assert_eq!(done["content"][0]["text"], "Hello, Alice!");
    // A state is good for one retry.
    let r = fx
        .modern(
            json!(20),
            "tools/call",
            json!({"name": name, "arguments": {}, "inputResponses": answer, "requestState": state}),
            &[],
        )
        .await;
    assert_error(&r, 400, -32602, json!(20));

    // Tampered state: -32602, HTTP 400.
    let r = fx
        .modern(
            json!(3),
            "tools/call",
            json!({"name": name, "arguments": {}, "inputResponses": answer, "requestState": format!("{state}-TAMPERED")}),
            &[],
        )
        .await;
    let err = assert_error(&r, 400, -32602, json!(3));
    assert_eq!(err["data"]["reason"], "invalid_request_state");
    // A state issued for another tool is rejected too.
    let r = fx
        .modern(
            json!(4),
            "tools/call",
            json!({"name": "test_input_required_result_request_state", "arguments": {}, "inputResponses": answer, "requestState": state}),
            &[],
        )
        .await;
    assert_error(&r, 400, -32602, json!(4));
    // A wrong key is asked again; an invalid answer is an error.
    let again = call(
        &fx,
        5,
        json!({"name": name, "arguments": {}, "inputResponses": {"wrong_key": {"action": "accept"}}}),
    )
    .await;
    assert_eq!(again["resultType"], "input_required");
    let r = fx
        .modern(
            json!(6),
            "tools/call",
            json!({"name": name, "arguments": {}, "inputResponses": {"user_name": 12345}}),
            &[],
        )
        .await;
    assert_error(&r, 400, -32602, json!(6));

    // Multi-round: each round's state differs; answers carry over.
    let multi = "test_input_required_result_multi_round";
    let r1 = call(&fx, 7, json!({"name": multi, "arguments": {}})).await;
    assert!(r1["inputRequests"]["step1"].is_object());
    let r2 = call(
        &fx,
        8,
        json!({"name": multi, "arguments": {}, "requestState": r1["requestState"],
            "inputResponses": {"step1": {"action": "accept", "content": {"name": "Bo"}}}}),
    )
    .await;
    assert!(r2["inputRequests"]["step2"].is_object());
    assert_ne!(r2["requestState"], r1["requestState"]);
    let r3 = call(
        &fx,
        9,
        json!({"name": multi, "arguments": {}, "requestState": r2["requestState"],
            "inputResponses": {"step2": {"action": "accept", "content": {"color": "blue"}}}}),
    )
    .await;
    assert_eq!(r3["content"][0]["text"], "Bo likes blue");

    // Only the declared kinds are asked for.
    let caps_only_sampling = json!({"name": "test_input_required_result_capabilities", "arguments": {},
        "_meta": envelope(json!({"sampling": {}}))});
    let r = call(&fx, 10, caps_only_sampling).await;
    let methods: Vec<&str> = r["inputRequests"]
        .as_object()
        .expect("requests")
        .values()
        .filter_map(|v| v["method"].as_str())
        .collect();
    assert_eq!(methods, ["sampling/createMessage"]);

    // prompts/get and resources/read may answer input_required too.
    let p = fx
        .modern(
            json!(11),
            "prompts/get",
            json!({"name": "test_input_required_result_prompt"}),
            &[],
        )
        .await
        .json();
    assert!(p["result"]["inputRequests"]["user_context"].is_object());
    let p = fx
        .modern(
            json!(12),
            "prompts/get",
            json!({"name": "test_input_required_result_prompt",
                "inputResponses": {"user_context": {"action": "accept", "content": {"context": "ctx"}}}}),
            &[],
        )
        .await
        .json();
    assert_eq!(
        p["result"]["messages"][0]["content"]["text"],
        "Use this context: ctx"
    );
    let res = fx
        .modern(
            json!(13),
            "resources/read",
            json!({"uri": "test://input-required"}),
            &[],
        )
        .await
        .json();
    assert_eq!(res["result"]["resultType"], "input_required");

    // A 2025 tool asking the client through a server-to-client request
    // becomes an input request in 2026.
    let s = call(
        &fx,
        14,
        json!({"name": "test_sampling", "arguments": {"prompt": "hi"}}),
    )
    .await;
    assert_eq!(
        s["inputRequests"]["input_1"]["method"],
        "sampling/createMessage"
    );
    let s = call(
        &fx,
        15,
        json!({"name": "test_sampling", "arguments": {"prompt": "hi"}, "requestState": s["requestState"],
            "inputResponses": {"input_1": {"role": "assistant", "content": {"type": "text", "text": "yo"}, "model": "m"}}}),
    )
    .await;
    assert_eq!(s["content"][0]["text"], "LLM response: yo");
}

#[tokio::test]
async fn progress_and_logging_only_when_asked() {
    let fx = HttpFixture::spawn(&[]).await;
    // No progress token: plain JSON.
    let r = fx
        .modern(
            json!(1),
            "tools/call",
            json!({"name": "test_tool_with_progress", "arguments": {}}),
            &[],
        )
        .await;
    assert_eq!(r.header("content-type"), Some("application/json"));
    // With one: SSE, three increasing progress notifications, then the result.
    let mut meta = envelope(json!({}));
    meta["progressToken"] = json!("p-1");
    let r = fx
        .modern(
            json!(2),
            "tools/call",
            json!({"name": "test_tool_with_progress", "arguments": {}, "_meta": meta}),
            &[],
        )
        .await;
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    let messages = r.sse_messages();
    let progress: Vec<&Value> = messages
        .iter()
        .filter(|m| m["method"] == "notifications/progress")
        .collect();
    assert_eq!(progress.len(), 3, "{messages:?}");
    assert!(
        progress
            .iter()
            .all(|p| p["params"]["progressToken"] == "p-1")
    );
    assert_eq!(messages.last().expect("result")["id"], 2);

    // Logging: nothing without logLevel, and only at or above it.
    let r = fx
        .modern(
            json!(3),
            "tools/call",
            json!({"name": "test_logging_tool", "arguments": {}}),
            &[],
        )
        .await;
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert!(!r.body.contains("notifications/message"));
    for (level, expected) in [("info", 3), ("error", 0)] {
        let mut meta = envelope(json!({}));
        meta["io.modelcontextprotocol/logLevel"] = json!(level);
        let r = fx
            .modern(
                json!(4),
                "tools/call",
                json!({"name": "test_logging_tool", "arguments": {}, "_meta": meta}),
                &[],
            )
            .await;
        let logs = if r.header("content-type") == Some("text/event-stream") {
            r.sse_messages()
                .iter()
                .filter(|m| m["method"] == "notifications/message")
                .count()
        } else {
            0
        };
        assert_eq!(logs, expected, "logLevel {level}: {}", r.body);
    }
}

#[tokio::test]
async fn subscriptions_listen_delivers_only_what_was_asked() {
    let fx = HttpFixture::spawn(&[]).await;
    let open = |id: &'static str, filter: Value| {
        let body = modern_request(
            json!(id),
            "subscriptions/listen",
            json!({"notifications": filter}),
        );
        let headers = modern_headers(&body, &[]);
        (body, headers)
    };
    let (body, headers) = open(
        "listen-tools",
        json!({"toolsListChanged": true, "promptsListChanged": false}),
    );
    let h: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let mut tools = fx.open(&h, &body).await;
    let (body, headers) = open("listen-prompts", json!({"promptsListChanged": true}));
    let h: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let mut prompts = fx.open(&h, &body).await;

    let wait = Duration::from_secs(30);
    let ack = tools.next(wait).await.expect("ack");
    assert_eq!(ack["method"], "notifications/subscriptions/acknowledged");
    assert_eq!(
        ack["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"],
        "listen-tools"
    );
    assert_eq!(
        ack["params"]["notifications"],
        json!({"toolsListChanged": true})
    );
    assert!(ack.get("id").is_none());
    let ack = prompts.next(wait).await.expect("ack");
    assert_eq!(
        ack["params"]["notifications"],
        json!({"promptsListChanged": true})
    );

    call(
        &fx,
        1,
        json!({"name": "test_trigger_tool_change", "arguments": {}}),
    )
    .await;
    let change = tools.next(wait).await.expect("tools change");
    assert_eq!(change["method"], "notifications/tools/list_changed");
    assert_eq!(
        change["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"],
        "listen-tools"
    );
    assert!(prompts.next(Duration::from_millis(300)).await.is_none());

    call(
        &fx,
        2,
        json!({"name": "test_trigger_prompt_change", "arguments": {}}),
    )
    .await;
    let change = prompts.next(wait).await.expect("prompts change");
    assert_eq!(change["method"], "notifications/prompts/list_changed");
    assert!(tools.next(Duration::from_millis(300)).await.is_none());

    // Without sessions, dynamic_tool is toggled for every stateless request.
    let listed = |v: &Value| {
        v["result"]["tools"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t["name"] == "dynamic_tool"))
    };
    assert!(!listed(
        &fx.modern(json!(3), "tools/list", json!({}), &[])
            .await
            .json()
    ));
    call(
        &fx,
        4,
        json!({"name": "toggle_dynamic_tool", "arguments": {}}),
    )
    .await;
    let change = tools.next(wait).await.expect("tools change");
    assert_eq!(change["method"], "notifications/tools/list_changed");
    assert!(listed(
        &fx.modern(json!(5), "tools/list", json!({}), &[])
            .await
            .json()
    ));
    let r = call(&fx, 6, json!({"name": "dynamic_tool", "arguments": {}})).await;
    assert_eq!(r["content"][0]["text"], "dynamic tool called");
}

#[tokio::test]
async fn modern_only_refuses_the_handshake() {
    let fx = HttpFixture::spawn(&["--era", "modern"]).await;
    let r = fx
        .post(
            None,
            &json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"},
            }}),
        )
        .await;
    let err = assert_error(&r, 400, -32022, json!(1));
    assert_eq!(err["data"]["supported"], json!(["2026-07-28"]));
    assert!(err["message"].as_str().unwrap().contains("2026-07-28"));
    let r = fx
        .exchange("GET", &[("Accept", "text/event-stream")], None)
        .await;
    assert_eq!(r.status, 405);
    let r = fx.modern(json!(2), "server/discover", json!({}), &[]).await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn legacy_only_ignores_the_stateless_revision() {
    let fx = HttpFixture::spawn(&["--era", "legacy"]).await;
    // As before 2026: a 2026 version header is an unsupported version.
    let r = fx.modern(json!(1), "server/discover", json!({}), &[]).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["code"], -32600);
    fx.initialize(json!({})).await;
}

const TASKS: &str = "io.modelcontextprotocol/tasks";

/// `params` carrying an envelope that declares the tasks extension.
fn with_tasks(mut params: Value) -> Value {
    params["_meta"] = envelope(json!({"elicitation": {}, "extensions": {TASKS: {}}}));
    params
}

/// tasks/get until the task has `status`.
async fn task_reaches(fx: &HttpFixture, id: &str, status: &str) -> Value {
    for i in 0..600 {
        let r = fx
            .modern(
                json!(i),
                "tasks/get",
                with_tasks(json!({"taskId": id})),
                &[],
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        let task = r.json()["result"].clone();
        if task["status"] == status {
            return task;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("task {id} never reached {status}");
}

#[tokio::test]
async fn tasks_extension() {
    let fx = HttpFixture::spawn(&[]).await;
    let discover = fx
        .modern(json!(1), "server/discover", json!({}), &[])
        .await
        .json();
    assert_eq!(
        discover["result"]["capabilities"]["extensions"][TASKS],
        json!({})
    );

    // Without the extension: optional tools run in the request, required
    // ones and the tasks methods are -32021.
    let sync = call(
        &fx,
        2,
        json!({"name": "slow_compute", "arguments": {"seconds": 0, "label": "now"}}),
    )
    .await;
    assert_eq!(sync["resultType"], "complete");
    assert!(sync.get("taskId").is_none(), "{sync}");
    let r = fx
        .modern(
            json!(3),
            "tools/call",
            json!({"name": "failing_job", "arguments": {}}),
            &[],
        )
        .await;
    let e = assert_error(&r, 400, -32021, json!(3));
    assert_eq!(
        e["data"]["requiredCapabilities"]["extensions"][TASKS],
        json!({})
    );
    let r = fx
        .modern(json!(4), "tasks/get", json!({"taskId": "x"}), &[])
        .await;
    assert_error(&r, 400, -32021, json!(4));

    // With it: a flat CreateTaskResult, parked input_required, answered by
    // tasks/update.
    let r = fx
        .modern(
            json!(5),
            "tools/call",
            with_tasks(json!({"name": "confirm_delete", "arguments": {"filename": "a.txt"}})),
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let created = r.json()["result"].clone();
    assert_eq!(created["resultType"], "task");
    assert_eq!(created["status"], "working");
    assert!(created.get("task").is_none() && created.get("requestState").is_none());
    let id = created["taskId"].as_str().expect("taskId").to_owned();
    let parked = task_reaches(&fx, &id, "input_required").await;
    assert_eq!(
        parked["inputRequests"]["confirm"]["method"],
        "elicitation/create"
    );

    // Mcp-Name must carry the task id.
    let get = with_tasks(json!({"taskId": id}));
    for name in ["other-task", ""] {
        let r = fx
            .modern(json!(6), "tasks/get", get.clone(), &[("Mcp-Name", name)])
            .await;
        assert_error(&r, 400, -32020, json!(6));
    }

    let update = with_tasks(json!({"taskId": id, "inputResponses": {
        "confirm": {"action": "accept", "content": {"confirm": true}},
    }}));
    let r = fx.modern(json!(7), "tasks/update", update, &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let ack = r.json()["result"].clone();
    assert_eq!(ack["resultType"], "complete");
    assert!(ack.get("taskId").is_none() && ack.get("status").is_none());
    let done = task_reaches(&fx, &id, "completed").await;
    assert_eq!(done["result"]["content"][0]["text"], "Deleted a.txt");

    // Cancel: settles cancelled; idempotent; unknown ids are -32602.
    let long = call(
        &fx,
        8,
        with_tasks(json!({"name": "slow_compute", "arguments": {"seconds": 60}})),
    )
    .await;
    let long_id = long["taskId"].as_str().expect("taskId").to_owned();
    for i in [9, 10] {
        let r = fx
            .modern(
                json!(i),
                "tasks/cancel",
                with_tasks(json!({"taskId": long_id})),
                &[],
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    task_reaches(&fx, &long_id, "cancelled").await;
    let r = fx
        .modern(
            json!(11),
            "tasks/cancel",
            with_tasks(json!({"taskId": "no-such-task"})),
            &[],
        )
        .await;
    assert_error(&r, 400, -32602, json!(11));
    // The 2025 methods are gone.
    let r = fx
        .modern(json!(12), "tasks/list", with_tasks(json!({})), &[])
        .await;
    assert_error(&r, 404, -32601, json!(12));
}
