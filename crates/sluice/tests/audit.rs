//! The audit log through the built gateway: tool calls of both eras
//! recorded with secrets redacted, the chain verified by `sluice audit
//! verify`, tampering found, HMAC keys, and no file when it is disabled.

mod common;

use common::{Client, Gateway, audit_records, audit_verify, of_kind, sibling_bin};
use serde_json::{Value, json};

fn fixture(extra: &str) -> String {
    format!(
        "{extra}[[servers]]\nname = \"fx\"\ncommand = \"{}\"\n",
        sibling_bin("sluice-fixture").display()
    )
}

/// A stateless 2026-07-28 `tools/call`.
async fn call_2026(c: &Client, name: &str, arguments: Value) -> Value {
    let meta = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "modern-client", "version": "2"}
    });
    let rb = c
        .http
        .post(&c.url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", name)
        .body(
            json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":name,"arguments":arguments,"_meta":meta}})
                .to_string(),
        );
    let r = Client::send(rb).await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.response()["result"].clone()
}

#[tokio::test]
async fn tool_calls_are_recorded_with_secrets_redacted_and_the_chain_verifies() {
    let gw = Gateway::start(
        "audit-calls",
        &fixture("[audit]\npath = \"logs/audit.jsonl\"\n"),
    );
    let path = gw.dir.join("logs/audit.jsonl");
    let mut c = Client::new(&gw.url);
    c.initialize().await;
    let session = c.session.clone().unwrap();

    let r = c
        .call(
            "tools/call",
            json!({"name": "fx__echo", "arguments": {"text": "hello", "api_key": "sk-live-123"}}),
        )
        .await;
    assert_eq!(r["content"][0]["text"], "hello");
    let r = c
        .call(
            "tools/call",
            json!({"name": "fx__test_error_handling", "arguments": {}}),
        )
        .await;
    assert_eq!(r["isError"], true);
    let r = c
        .request(9, "tools/call", json!({"name": "fx__nope"}))
        .await;
    assert_eq!(r.error_code(), -32602);
    let r = call_2026(
        &c,
        "fx__echo",
        json!({"text": "modern", "password": "hunter2"}),
    )
    .await;
    assert_eq!(r["content"][0]["text"], "modern", "{r}");

    let records = audit_records(&path, |r| of_kind(r, "tool_call").len() >= 4).await;
    let calls = of_kind(&records, "tool_call");
    let echo = calls
        .iter()
        .find(|r| r["arguments"]["text"] == "hello")
        .expect("the echo call is recorded");
    assert_eq!(echo["tool"], "fx__echo");
    assert_eq!(echo["server"], "fx");
    assert_eq!(echo["upstream_tool"], "echo");
    assert_eq!(echo["outcome"], "ok");
    assert_eq!(echo["arguments"]["api_key"], "[redacted]");
    assert_eq!(echo["session"], session.as_str());
    assert_eq!(
        echo["client"],
        json!({"name": "sluice-tests", "version": "1"})
    );
    assert!(
        echo["remote"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{echo}"
    );
    assert!(echo["duration_ms"].is_u64());

    let failed = calls
        .iter()
        .find(|r| r["tool"] == "fx__test_error_handling")
        .unwrap();
    assert_eq!(failed["outcome"], "tool_error", "{failed}");
    let unknown = calls.iter().find(|r| r["tool"] == "fx__nope").unwrap();
    assert_eq!(unknown["outcome"], "error", "{unknown}");
    assert_eq!(unknown["error"]["code"], -32602);
    assert!(unknown.get("server").is_none(), "not routed: {unknown}");

    let modern = calls
        .iter()
        .find(|r| r["arguments"]["text"] == "modern")
        .unwrap();
    assert_eq!(modern["session"], "stateless", "{modern}");
    assert!(
        modern["request"].as_str().is_some_and(|r| r.len() >= 16),
        "{modern}"
    );
    assert_eq!(modern["client"]["name"], "modern-client");
    assert_eq!(modern["arguments"]["password"], "[redacted]");
    assert!(modern["remote"].as_str().is_some(), "{modern}");

    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        !text.contains("sk-live-123") && !text.contains("hunter2"),
        "no secret reaches the file"
    );

    let metrics = gw.metrics().await;
    assert!(
        metrics.contains("sluice_audit_records_total")
            && metrics.contains("sluice_audit_write_errors_total 0"),
        "{metrics}"
    );

    // The chain verifies…
    let (code, out) = audit_verify(&path, None);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.starts_with(&format!("ok: {} records, chain intact", records.len())),
        "{out}"
    );

    // …and tampering is found at its line.
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() >= 4);
    let mid = lines.len() / 2;
    let tampered = gw.dir.join("tampered.jsonl");
    let mut edited: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    edited[mid] = edited[mid].replacen("\"ts\":\"2", "\"ts\":\"1", 1);
    std::fs::write(&tampered, edited.join("\n") + "\n").unwrap();
    let (code, out) = audit_verify(&tampered, None);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("line {}: hash mismatch", mid + 1)),
        "{out}"
    );

    let mut deleted: Vec<&str> = lines.clone();
    deleted.remove(mid);
    std::fs::write(&tampered, deleted.join("\n") + "\n").unwrap();
    let (code, out) = audit_verify(&tampered, None);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&format!("line {}: seq gap", mid + 1)), "{out}");
}

#[tokio::test]
async fn an_hmac_keyed_log_verifies_only_with_its_key() {
    // The key comes from the environment, like other secrets (here its default).
    let key = "an-audit-key-of-more-than-32-bytes-for-tests";
    let gw = Gateway::start(
        "audit-hmac",
        &fixture(&format!(
            "[audit]\nhmac_key = \"${{SLUICE_TEST_AUDIT_KEY_UNSET:-{key}}}\"\narguments = \"omit\"\n"
        )),
    );
    let path = gw.dir.join("sluice-audit.jsonl");
    let mut c = Client::new(&gw.url);
    c.initialize().await;
    c.call(
        "tools/call",
        json!({"name": "fx__echo", "arguments": {"text": "x"}}),
    )
    .await;
    let records = audit_records(&path, |r| !of_kind(r, "tool_call").is_empty()).await;
    let call = of_kind(&records, "tool_call")[0];
    assert!(call.get("arguments").is_none(), "omitted: {call}");
    assert!(!gw.logs().contains(key), "the key is never logged");

    let (code, out) = audit_verify(&path, Some(("SLUICE_TEST_AUDIT_KEY", key)));
    assert_eq!(code, 0, "{out}");
    let (code, out) = audit_verify(&path, None);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("line 1: hash mismatch") && out.contains("--key-env"),
        "{out}"
    );
    let (code, out) = audit_verify(&path, Some(("SLUICE_TEST_AUDIT_KEY", "wrong")));
    assert_eq!(code, 1, "{out}");
}

#[tokio::test]
async fn a_disabled_audit_log_writes_no_file() {
    let gw = Gateway::start("audit-off", &fixture("[audit]\nenabled = false\n"));
    let mut c = Client::new(&gw.url);
    c.initialize().await;
    let r = c
        .call(
            "tools/call",
            json!({"name": "fx__echo", "arguments": {"text": "x"}}),
        )
        .await;
    assert_eq!(r["content"][0]["text"], "x");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!gw.dir.join("sluice-audit.jsonl").exists());
}
