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
