//! The stateless 2026-07-28 revision on `/mcp`: the validation ladder, its
//! error codes and statuses, `server/discover`, and result shaping.

mod common;

use common::{Client, Gateway, Reply, sibling_bin};
use serde_json::{Value, json};

fn meta() -> Value {
    json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "t", "version": "1"}
    })
}

async fn post(c: &Client, body: Value, headers: &[(&str, &str)]) -> Reply {
    let mut rb = c
        .http
        .post(&c.url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream");
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    Client::send(rb.body(body.to_string())).await
}

fn std_headers(method: &'static str) -> Vec<(&'static str, &'static str)> {
    vec![
        ("mcp-protocol-version", "2026-07-28"),
        ("mcp-method", method),
    ]
}

#[tokio::test]
async fn the_validation_ladder_answers_with_the_revisions_codes() {
    let cfg = format!(
        "[sessions]\nstore = \"memory\"\n[[servers]]\nname = \"fx\"\nprefix = \"\"\ncommand = \"{}\"\n",
        sibling_bin("sluice-fixture").display()
    );
    let gw = Gateway::start("stateless", &cfg);
    let c = Client::new(&gw.url);

    // discover
    let r = post(
        &c,
        json!({"jsonrpc":"2.0","id":1,"method":"server/discover","params":{"_meta": meta()}}),
        &std_headers("server/discover"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let d = &r.json()["result"];
    assert_eq!(d["supportedVersions"], json!(["2026-07-28"]));
    assert_eq!(d["resultType"], "complete");
    assert!(d["capabilities"]["tools"].is_object());
    assert_eq!(
        d["_meta"]["io.modelcontextprotocol/serverInfo"]["name"],
        "sluice"
    );
    assert!(
        r.headers.get("mcp-session-id").is_none(),
        "no sessions in 2026"
    );

    // 1. no _meta
    let r = post(
        &c,
        json!({"jsonrpc":"2.0","id":2,"method":"tools/list","params":{}}),
        &std_headers("tools/list"),
    )
    .await;
    assert_eq!((r.status, r.error_code()), (400, -32602), "{}", r.body);
    assert_eq!(r.json()["id"], 2, "errors carry the request id");
    // 2. a required key missing
    let mut m = meta();
    m.as_object_mut()
        .unwrap()
        .remove("io.modelcontextprotocol/clientCapabilities");
    let r = post(
        &c,
        json!({"jsonrpc":"2.0","id":3,"method":"tools/list","params":{"_meta": m}}),
        &std_headers("tools/list"),
    )
    .await;
    assert_eq!((r.status, r.error_code()), (400, -32602));
    assert!(r.body.contains("clientCapabilities"), "{}", r.body);
    // 3. header/body mismatch before the version check
    let mut m = meta();
    m["io.modelcontextprotocol/protocolVersion"] = json!("v999.0.0");
    let r = post(
        &c,
        json!({"jsonrpc":"2.0","id":4,"method":"tools/list","params":{"_meta": m}}),
        &std_headers("tools/list"),
    )
    .await;
    assert_eq!((r.status, r.error_code()), (400, -32020), "{}", r.body);
    let r = post(
        &c,
        json!({"jsonrpc":"2.0","id":5,"method":"tools/list","params":{"_meta": meta()}}),
        &std_headers("prompts/list"),
    )
    .await;
    assert_eq!((r.status, r.error_code()), (400, -32020));
    let r = post(
        &c,
        json!({"jsonrpc":"2.0","id":6,"method":"tools/call","params":{"name":"echo","arguments":{"text":"x"},"_meta": meta()}}),
        &[("mcp-protocol-version", "2026-07-28"), ("mcp-method", "tools/call"), ("mcp-name", "other")],
    )
    .await;
    assert_eq!((r.status, r.error_code()), (400, -32020));
    // 4. unsupported version: -32022 with data
    let mut m = meta();
    m["io.modelcontextprotocol/protocolVersion"] = json!("2099-01-01");
    let r = post(
        &c,
        json!({"jsonrpc":"2.0","id":7,"method":"tools/list","params":{"_meta": m}}),
        &[
            ("mcp-protocol-version", "2099-01-01"),
            ("mcp-method", "tools/list"),
        ],
    )
    .await;
    assert_eq!((r.status, r.error_code()), (400, -32022), "{}", r.body);
    let e = &r.json()["error"]["data"];
    assert_eq!(e["requested"], "2099-01-01");
    assert_eq!(e["supported"], json!(["2026-07-28"]));
    // 5. removed and unknown methods: 404 -32601
    for m in [
        "initialize",
        "ping",
        "logging/setLevel",
        "resources/subscribe",
        "no/such",
    ] {
        let mut h = vec![("mcp-protocol-version", "2026-07-28")];
        h.push(("mcp-method", m));
        let r = post(
            &c,
            json!({"jsonrpc":"2.0","id":8,"method":m,"params":{"_meta": meta()}}),
            &h,
        )
        .await;
        assert_eq!((r.status, r.error_code()), (404, -32601), "{m}: {}", r.body);
    }
    // Sessions' verbs do not exist.
    let r = Client::send(
        c.http
            .get(&c.url)
            .header("accept", "text/event-stream")
            .header("mcp-protocol-version", "2026-07-28"),
    )
    .await;
    assert_eq!(r.status, 405);
    // Notifications are acknowledged.
    let r = post(
        &c,
        json!({"jsonrpc":"2.0","method":"notifications/whatever"}),
        &std_headers("notifications/whatever"),
    )
    .await;
    assert_eq!(r.status, 202);

    // A valid call: shaped for 2026, names checked (base64 sentinel accepted).
    let r = post(
        &c,
        json!({"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"echo","arguments":{"text":"ok"},"_meta": meta()}}),
        &[("mcp-protocol-version", "2026-07-28"), ("mcp-method", "tools/call"), ("mcp-name", "=?base64?ZWNobw==?=")],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let res = &r.response()["result"];
    assert_eq!(res["content"][0]["text"], "ok");
    assert_eq!(res["resultType"], "complete");
    let r = post(
        &c,
        json!({"jsonrpc":"2.0","id":10,"method":"tools/list","params":{"_meta": meta()}}),
        &std_headers("tools/list"),
    )
    .await;
    let res = &r.response()["result"];
    assert_eq!(
        (res["ttlMs"].clone(), res["cacheScope"].clone()),
        (json!(0), json!("private"))
    );
    // A retired code is rewritten: resource not found is -32602 in 2026.
    let r = post(
        &c,
        json!({"jsonrpc":"2.0","id":11,"method":"resources/read","params":{"uri":"test://nope","_meta": meta()}}),
        &[("mcp-protocol-version", "2026-07-28"), ("mcp-method", "resources/read"), ("mcp-name", "test://nope")],
    )
    .await;
    assert_eq!((r.status, r.error_code()), (400, -32602), "{}", r.body);

    // The legacy era still works on the same endpoint.
    let mut legacy = Client::new(&gw.url);
    legacy.initialize().await;
    let r = legacy
        .call(
            "tools/call",
            json!({"name": "echo", "arguments": {"text": "legacy"}}),
        )
        .await;
    assert_eq!(r["content"][0]["text"], "legacy");
}

#[tokio::test]
async fn upstream_requests_become_input_required_with_a_signed_state() {
    let cfg = format!(
        "[sessions]\nstore = \"memory\"\n[[servers]]\nname = \"fx\"\nprefix = \"\"\ncommand = \"{}\"\nargs = [\"--era\", \"legacy\"]\n",
        sibling_bin("sluice-fixture").display()
    );
    let gw = Gateway::start("mrtr", &cfg);
    let c = Client::new(&gw.url);
    let mut m = meta();
    m["io.modelcontextprotocol/clientCapabilities"] = json!({"elicitation": {}});
    let headers = [
        ("mcp-protocol-version", "2026-07-28"),
        ("mcp-method", "tools/call"),
        ("mcp-name", "test_elicitation"),
    ];
    let call = |extra: Value| {
        let mut params = json!({"name": "test_elicitation", "arguments": {"message": "name?"}, "_meta": m.clone()});
        if let Value::Object(e) = extra {
            params.as_object_mut().unwrap().extend(e);
        }
        json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":params})
    };
    let r = post(&c, call(json!({})), &headers).await;
    let res = r.response()["result"].clone();
    assert_eq!(res["resultType"], "input_required", "{}", r.body);
    let (key, ask) = res["inputRequests"]
        .as_object()
        .unwrap()
        .iter()
        .next()
        .unwrap();
    assert_eq!(ask["method"], "elicitation/create");
    let state = res["requestState"].as_str().unwrap().to_string();

    // A tampered state is refused.
    let r = post(
        &c,
        call(json!({"requestState": format!("{state}-TAMPERED"), "inputResponses": {}})),
        &headers,
    )
    .await;
    assert_eq!((r.status, r.error_code()), (400, -32602), "{}", r.body);
    // The genuine retry completes the upstream call with the client's answer.
    let answer = json!({key.clone(): {"action": "accept", "content": {"username": "bob", "email": "b@example.com"}}});
    let r = post(
        &c,
        call(json!({"requestState": state.clone(), "inputResponses": answer})),
        &headers,
    )
    .await;
    let res = &r.response()["result"];
    assert_eq!(res["resultType"], "complete", "{}", r.body);
    assert!(r.body.contains("bob"), "{}", r.body);
    // A state is good once.
    let r = post(
        &c,
        call(json!({"requestState": state, "inputResponses": answer})),
        &headers,
    )
    .await;
    assert_eq!(r.error_code(), -32602, "{}", r.body);

    // A client without the capability is not asked; the upstream is told why.
    let mut no_caps = Client::new(&gw.url);
    no_caps.url = gw.url.clone();
    let mut params = call(json!({}));
    params["params"]["_meta"]["io.modelcontextprotocol/clientCapabilities"] = json!({});
    let r = post(&no_caps, params, &headers).await;
    assert!(!r.body.contains("input_required"), "{}", r.body);
}

#[tokio::test]
async fn closing_a_2026_response_cancels_the_call_upstream() {
    let cfg = format!(
        "[sessions]\nstore = \"memory\"\n[[servers]]\nname = \"fx\"\nprefix = \"\"\ncommand = \"{}\"\n",
        sibling_bin("sluice-fixture").display()
    );
    let gw = Gateway::start("stateless-cancel", &cfg);
    let c = Client::new(&gw.url);
    let mut m = meta();
    m["progressToken"] = json!("p1");
    let mut resp = c
        .http
        .post(&c.url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", "slow")
        .body(json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"slow","arguments":{"ms":10000},"_meta": m}}).to_string())
        .send()
        .await
        .unwrap();
    let mut body = String::new();
    while !body.contains("notifications/progress") {
        let chunk = resp.chunk().await.unwrap().expect("progress streams");
        body.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(body.contains("\"progressToken\":\"p1\""), "{body}");
    drop(resp);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !gw.logs().contains("fixture: cancelled request") {
        assert!(
            std::time::Instant::now() < deadline,
            "the upstream was not told: {}",
            gw.logs()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_2026_client_approves_a_call_through_an_input_required_round() {
    let cfg = format!(
        "[sessions]\nstore = \"memory\"\n[[servers]]\nname = \"fx\"\nprefix = \"\"\ncommand = \"{}\"\ntool_approval = {{ echo = \"always\" }}\n",
        sibling_bin("sluice-fixture").display()
    );
    let gw = Gateway::start("approval-2026", &cfg);
    let c = Client::new(&gw.url);
    let mut m = meta();
    m["io.modelcontextprotocol/clientCapabilities"] = json!({"elicitation": {}});
    let headers = [
        ("mcp-protocol-version", "2026-07-28"),
        ("mcp-method", "tools/call"),
        ("mcp-name", "echo"),
    ];
    let call = |extra: Value| {
        let mut params =
            json!({"name": "echo", "arguments": {"text": "approved"}, "_meta": m.clone()});
        if let Value::Object(e) = extra {
            params.as_object_mut().unwrap().extend(e);
        }
        json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":params})
    };
    let r = post(&c, call(json!({})), &headers).await;
    let res = r.response()["result"].clone();
    assert_eq!(res["resultType"], "input_required", "{}", r.body);
    let (key, ask) = res["inputRequests"]
        .as_object()
        .unwrap()
        .iter()
        .next()
        .unwrap();
    assert!(
        ask["params"]["message"].as_str().unwrap().contains("echo"),
        "{ask}"
    );
    let state = res["requestState"].as_str().unwrap();
    let yes = json!({key.clone(): {"action": "accept", "content": {"approve": true}}});
    let r = post(
        &c,
        call(json!({"requestState": state, "inputResponses": yes})),
        &headers,
    )
    .await;
    assert_eq!(
        r.response()["result"]["content"][0]["text"],
        "approved",
        "{}",
        r.body
    );

    // Declined: the call does not happen.
    let r = post(&c, call(json!({})), &headers).await;
    let res = r.response()["result"].clone();
    let (key, _) = res["inputRequests"]
        .as_object()
        .unwrap()
        .iter()
        .next()
        .unwrap();
    let no = json!({key.clone(): {"action": "decline"}});
    let r = post(
        &c,
        call(json!({"requestState": res["requestState"].clone(), "inputResponses": no})),
        &headers,
    )
    .await;
    let res = &r.response()["result"];
    assert_eq!(res["isError"], true, "{}", r.body);
    assert_eq!(
        res["_meta"]["sluice/error"]["code"], "approval_refused",
        "{}",
        r.body
    );
}

/// 2026 requests pass the same pipeline as session-era ones: counted in
/// `sluice_requests_total` (by era) and their upstream failures logged.
#[tokio::test]
async fn stateless_calls_are_counted_and_their_upstream_failures_logged() {
    let cfg = format!(
        "[sessions]\nstore = \"memory\"\n[[servers]]\nname = \"fx\"\ncommand = \"{}\"\n[[servers]]\nname = \"dead\"\ncommand = \"false\"\n",
        sibling_bin("sluice-fixture").display()
    );
    let gw = Gateway::start("stateless-metrics", &cfg);
    let c = Client::new(&gw.url);
    let call = |id: i64, name: &'static str| {
        let c = &c;
        async move {
            post(
                c,
                json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":name,"arguments":{"text":"x"},"_meta": meta()}}),
                &[("mcp-protocol-version", "2026-07-28"), ("mcp-method", "tools/call"), ("mcp-name", name)],
            )
            .await
        }
    };
    let ok = call(1, "fx__echo").await;
    assert_eq!(
        ok.response()["result"]["content"][0]["text"],
        "x",
        "{}",
        ok.body
    );
    let failed = call(2, "dead__echo").await;
    let r = &failed.response()["result"];
    assert_eq!(r["isError"], true, "{}", failed.body);
    assert_eq!(
        r["_meta"]["sluice/error"]["code"], "upstream_unavailable",
        "{}",
        failed.body
    );

    let metrics = gw.metrics().await;
    for line in [
        r#"sluice_requests_total{method="tools/call",era="stateless",outcome="ok"} 1"#,
        r#"sluice_requests_total{method="tools/call",era="stateless",outcome="upstream"} 1"#,
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} missing:\n{metrics}"
        );
    }
    let logs = gw.logs();
    assert!(
        logs.lines().any(|l| l.contains("upstream failure")
            && l.contains("era=\"stateless\"")
            && l.contains("dead")
            && l.contains("upstream_unavailable")),
        "no upstream-failure log for the 2026 call:\n{logs}"
    );
}
