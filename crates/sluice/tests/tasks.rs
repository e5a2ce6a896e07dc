//! 2025-11-25 tasks pass through the gateway to the server that created them
//! (server-everything's `simulate-research-query` requires a task).

mod common;

use common::{Client, Gateway};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

fn everything() -> String {
    let bin = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/e2e/node_modules/.bin/mcp-server-everything"
    );
    assert!(
        std::path::Path::new(bin).exists(),
        "{bin} is missing: run scripts/test.sh (it installs the npm packages)"
    );
    format!(
        "[sessions]\nstore = \"memory\"\n[[servers]]\nname = \"everything\"\ncommand = \"{bin}\"\n"
    )
}

#[tokio::test]
async fn tasks_are_created_polled_and_read_through_the_gateway() {
    let gw = Gateway::start("tasks", &everything());
    let mut c = Client::new(&gw.url);
    let init = c.initialize_with(json!({})).await;
    assert!(
        init["capabilities"]["tasks"]["requests"]["tools"]["call"].is_object(),
        "{init}"
    );

    let created = c
        .call(
            "tools/call",
            json!({"name": "everything__simulate-research-query", "arguments": {"topic": "gateways"}, "task": {"ttl": 60000}}),
        )
        .await;
    let id = created["task"]["taskId"]
        .as_str()
        .unwrap_or_else(|| panic!("{created}"))
        .to_string();

    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let t = c.call("tasks/get", json!({"taskId": id})).await;
        match t["status"].as_str() {
            Some("completed") => break,
            Some("working") => {}
            other => panic!("unexpected status {other:?}: {t}"),
        }
        assert!(Instant::now() < deadline, "the task never completed: {t}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let result = c.call("tasks/result", json!({"taskId": id})).await;
    assert!(result["content"].is_array(), "{result}");
    let listed = c.call("tasks/list", json!({})).await;
    assert!(
        listed["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["taskId"] == id.as_str()),
        "{listed}"
    );

    // Another session cannot reach this session's task.
    let mut other = Client::new(&gw.url);
    other.initialize_with(json!({})).await;
    let r = other.request(3, "tasks/get", json!({"taskId": id})).await;
    assert_eq!(r.error_code(), -32602, "{}", r.body);
    let listed: Value = other.call("tasks/list", json!({})).await;
    assert_eq!(listed["tasks"], json!([]));
}

// ----- the 2026-07-28 tasks extension --------------------------------------

const EXT: &str = "io.modelcontextprotocol/tasks";

/// Two 2026 fixtures, `a__…` and `b__…`: each keeps its own tasks.
fn two_fixtures() -> String {
    let bin = common::sibling_bin("sluice-fixture");
    format!(
        "[sessions]\nstore = \"memory\"\n\
         [[servers]]\nname = \"a\"\ncommand = \"{bin}\"\nargs = [\"stdio\", \"--era\", \"modern\"]\n\
         [[servers]]\nname = \"b\"\ncommand = \"{bin}\"\nargs = [\"stdio\", \"--era\", \"modern\"]\n",
        bin = bin.display()
    )
}

/// A 2026 request; `ext` declares the tasks extension.
async fn modern(
    c: &Client,
    method: &str,
    mut params: Value,
    ext: bool,
    name: Option<&str>,
) -> common::Reply {
    let caps = if ext {
        json!({"extensions": {EXT: {}}, "elicitation": {}})
    } else {
        json!({})
    };
    params["_meta"] = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": caps,
        "io.modelcontextprotocol/clientInfo": {"name": "t", "version": "1"}
    });
    let mut rb = c
        .http
        .post(&c.url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", method);
    if let Some(n) = name {
        rb = rb.header("mcp-name", n);
    }
    Client::send(
        rb.body(json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).to_string()),
    )
    .await
}

async fn task_get(c: &Client, id: &str) -> Value {
    let r = modern(c, "tasks/get", json!({"taskId": id}), true, Some(id)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.response()["result"].clone()
}

/// Polls until the task leaves `working`.
async fn settle(c: &Client, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let t = task_get(c, id).await;
        if t["status"] != "working" {
            return t;
        }
        assert!(Instant::now() < deadline, "the task never settled: {t}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn create(c: &Client, tool: &str, args: Value) -> String {
    let r = modern(
        c,
        "tools/call",
        json!({"name": tool, "arguments": args}),
        true,
        Some(tool),
    )
    .await;
    let res = r.response()["result"].clone();
    assert_eq!(res["resultType"], "task", "{}", r.body);
    assert!(res.get("requestState").is_none(), "{res}");
    res["taskId"]
        .as_str()
        .unwrap_or_else(|| panic!("{res}"))
        .to_string()
}

#[tokio::test]
async fn tasks_of_2026_servers_pass_through_to_2026_clients() {
    let gw = Gateway::start("tasks2026", &two_fixtures());
    let c = Client::new(&gw.url);

    // Advertised as the extension, never as the session-era slot.
    let r = modern(&c, "server/discover", json!({}), false, None).await;
    let caps = &r.response()["result"]["capabilities"];
    assert!(caps["extensions"][EXT].is_object(), "{caps}");
    assert!(caps.get("tasks").is_none(), "{caps}");

    // A task of server `a` completes, with its result inlined.
    let id = create(&c, "a__slow_compute", json!({"seconds": 1, "label": "x"})).await;
    let t = settle(&c, &id).await;
    assert_eq!(t["status"], "completed", "{t}");
    assert_eq!(t["taskId"], id.as_str(), "the client sees the gateway's id");
    assert!(t["result"]["content"].is_array(), "{t}");

    // Server `b` has a task of the same kind; its id routes to `b`.
    let id_b = create(&c, "b__confirm_delete", json!({"filename": "f.txt"})).await;
    assert_ne!(id, id_b);
    let deadline = Instant::now() + Duration::from_secs(60);
    let waiting = loop {
        let t = task_get(&c, &id_b).await;
        if t["status"] == "input_required" {
            break t;
        }
        assert!(Instant::now() < deadline, "never asked for input: {t}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let keys: Vec<String> = waiting["inputRequests"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert!(!keys.is_empty(), "{waiting}");
    let answers: serde_json::Map<String, Value> = keys
        .iter()
        .map(|k| {
            (
                k.clone(),
                json!({"action": "accept", "content": {"confirm": true}}),
            )
        })
        .collect();
    let r = modern(
        &c,
        "tasks/update",
        json!({"taskId": id_b, "inputResponses": answers}),
        true,
        Some(&id_b),
    )
    .await;
    assert_eq!(
        r.response()["result"]["resultType"],
        "complete",
        "{}",
        r.body
    );
    assert_eq!(settle(&c, &id_b).await["status"], "completed");

    // Cancel is acknowledged and the task ends cancelled.
    let long = create(&c, "a__slow_compute", json!({"seconds": 60, "label": "y"})).await;
    let r = modern(
        &c,
        "tasks/cancel",
        json!({"taskId": long}),
        true,
        Some(&long),
    )
    .await;
    let ack = &r.response()["result"];
    assert_eq!(ack["resultType"], "complete", "{}", r.body);
    assert!(ack.get("status").is_none(), "{ack}");
    assert_eq!(settle(&c, &long).await["status"], "cancelled");

    // Without the extension: -32021, naming it.
    let r = modern(&c, "tasks/get", json!({"taskId": id}), false, Some(&id)).await;
    assert_eq!((r.status, r.error_code()), (400, -32021), "{}", r.body);
    assert!(r.response()["error"]["data"]["requiredCapabilities"]["extensions"][EXT].is_object());
    // A tool that requires a task, called without the extension: the server's -32021.
    let r = modern(
        &c,
        "tools/call",
        json!({"name": "a__failing_job", "arguments": {}}),
        false,
        Some("a__failing_job"),
    )
    .await;
    assert_eq!(r.error_code(), -32021, "{}", r.body);

    // An id the gateway did not make, or altered: unknown (-32602).
    for bad in [
        "nope".to_string(),
        id.replacen("st1.", "st1.A", 1),
        format!("{id}x"),
    ] {
        let r = modern(&c, "tasks/get", json!({"taskId": bad}), true, Some(&bad)).await;
        assert_eq!(
            (r.status, r.error_code()),
            (400, -32602),
            "{bad}: {}",
            r.body
        );
    }
    // The routing header must name the task.
    let r = modern(&c, "tasks/get", json!({"taskId": id}), true, Some("other")).await;
    assert_eq!((r.status, r.error_code()), (400, -32020), "{}", r.body);
    // Removed methods of the session-era wire.
    for m in ["tasks/list", "tasks/result"] {
        let r = modern(&c, m, json!({"taskId": id}), true, None).await;
        assert_eq!(r.error_code(), -32601, "{m}: {}", r.body);
    }
}
