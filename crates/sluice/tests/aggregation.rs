//! Aggregation through the built gateway: two stdio servers and one HTTP
//! server behind one endpoint, names prefixed, unknown fields kept, streams
//! resumable. Upstreams are the repo's fixture server (`sluice-fixture`).

mod common;

use common::{Client, Gateway, sibling_bin};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// The fixture in HTTP mode on a free port, stopped by pid on drop.
struct HttpFixture {
    child: Child,
    url: String,
}

impl HttpFixture {
    fn start() -> HttpFixture {
        let mut child = Command::new(sibling_bin("sluice-fixture"))
            .args([
                "--name",
                "remote-fixture",
                "http",
                "--listen",
                "127.0.0.1:0",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .expect("fixture prints its URL")
            .to_string();
        HttpFixture { child, url }
    }
}

impl Drop for HttpFixture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config(remote: &str) -> String {
    let fx = sibling_bin("sluice-fixture");
    format!(
        r#"
[[servers]]
name = "alpha"
command = "{fx}"
args = ["--name", "alpha"]

[[servers]]
name = "beta"
command = "{fx}"
args = ["--name", "beta"]

[[servers]]
name = "remote"
url = "{remote}"
"#,
        fx = fx.display()
    )
}

fn names(list: &Value, key: &str) -> Vec<String> {
    list[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn two_stdio_servers_and_one_http_server_are_served_as_one() {
    let remote = HttpFixture::start();
    let gw = Gateway::start("aggregate", &config(&remote.url));
    let mut c = Client::new(&gw.url);
    let init = c.initialize().await;
    assert_eq!(init["protocolVersion"], "2025-11-25");
    assert_eq!(init["serverInfo"]["name"], "sluice");
    assert!(init["capabilities"]["tools"].is_object());
    assert!(
        init["capabilities"]["resources"]["subscribe"]
            .as_bool()
            .unwrap()
    );

    let tools = c.call("tools/list", json!({})).await;
    let names = names(&tools, "tools");
    for server in ["alpha", "beta", "remote"] {
        for tool in ["echo", "noop", "test_simple_text"] {
            let n = format!("{server}__{tool}");
            assert!(names.contains(&n), "missing {n} in {names:?}");
        }
    }
    assert!(names.iter().all(|n| {
        n.len() <= 64
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    }));

    // Calls reach the right server, over stdio and HTTP alike.
    for server in ["alpha", "beta", "remote"] {
        let r = c
            .call(
                "tools/call",
                json!({"name": format!("{server}__echo"), "arguments": {"text": server}}),
            )
            .await;
        assert_eq!(r["content"][0]["text"], server, "{r}");
    }

    // Prompts are prefixed too; resources keep their URIs.
    let prompts = c.call("prompts/list", json!({})).await;
    assert!(names_of(&prompts, "prompts").contains(&"remote__test_simple_prompt".to_string()));
    let r = c
        .call("prompts/get", json!({"name": "beta__test_simple_prompt"}))
        .await;
    assert!(r["messages"].is_array(), "{r}");
    let r = c
        .call("resources/read", json!({"uri": "test://static-text"}))
        .await;
    assert!(r["contents"][0]["text"].is_string(), "{r}");

    // An unknown tool of a known server names both.
    let r = c
        .request(9, "tools/call", json!({"name": "alpha__nope"}))
        .await;
    assert_eq!(r.error_code(), -32602);
    assert!(
        r.body.contains("alpha__nope") && r.body.contains("`alpha`"),
        "{}",
        r.body
    );
}

fn names_of(list: &Value, key: &str) -> Vec<String> {
    names(list, key)
}

#[tokio::test]
async fn fields_the_gateway_does_not_know_reach_the_client_unchanged() {
    let remote = HttpFixture::start();
    let gw = Gateway::start("passthrough", &config(&remote.url));
    let mut c = Client::new(&gw.url);
    c.initialize().await;
    let tools = c.call("tools/list", json!({})).await;
    for server in ["alpha", "remote"] {
        let probe = tools["tools"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == format!("{server}__passthrough_probe"))
            .unwrap_or_else(|| panic!("no probe of {server}"));
        assert_eq!(
            probe["_meta"]["com.example/vendor"],
            json!({"k": [1, 2]}),
            "{probe}"
        );
        assert_eq!(probe["annotations"]["x-custom"], "kept");
        assert_eq!(probe["execution"]["taskSupport"], "optional");
        assert_eq!(probe["x-future-field"], json!({"nested": true}));

        let r = c
            .call(
                "tools/call",
                json!({"name": format!("{server}__passthrough_probe"), "arguments": {}}),
            )
            .await;
        assert_eq!(r["x-result-extra"], 42, "{r}");
        assert_eq!(r["_meta"]["com.example/trace"], "abc", "{r}");
    }
    let r = c
        .call("resources/read", json!({"uri": "test://passthrough"}))
        .await;
    assert_eq!(r["contents"][0]["x-content-extra"], "kept", "{r}");
    assert!(r["contents"][0]["_meta"].is_object(), "{r}");
}

#[tokio::test]
async fn progress_reaches_the_client_with_its_own_token_and_a_broken_stream_resumes() {
    let remote = HttpFixture::start();
    let gw = Gateway::start("resume", &config(&remote.url));
    let mut c = Client::new(&gw.url);
    c.initialize().await;

    // Progress on an SSE response, token restored.
    let r = c
        .request(
            21,
            "tools/call",
            json!({"name": "remote__test_tool_with_progress", "arguments": {}, "_meta": {"progressToken": "mine-1"}}),
        )
        .await;
    let msgs = r.messages();
    let progress: Vec<&Value> = msgs
        .iter()
        .filter(|m| m["method"] == "notifications/progress")
        .collect();
    assert!(!progress.is_empty(), "{}", r.body);
    assert!(
        progress
            .iter()
            .all(|p| p["params"]["progressToken"] == "mine-1"),
        "{}",
        r.body
    );
    assert!(
        r.body
            .lines()
            .any(|l| l.starts_with("id: ") && l.ends_with("-0")),
        "SSE with a priming event: {}",
        r.body
    );

    // Break a stream after its first event, then resume with Last-Event-ID.
    let mut resp = c
        .post_builder(
            json!({"jsonrpc":"2.0","id":22,"method":"tools/call","params":{"name":"alpha__slow","arguments":{"ms":600},"_meta":{"progressToken":7}}})
                .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let first = resp.chunk().await.unwrap().unwrap();
    let first = String::from_utf8_lossy(&first).to_string();
    let last_id = first
        .lines()
        .find_map(|l| l.strip_prefix("id: "))
        .expect("priming event id")
        .to_string();
    drop(resp); // the client's connection breaks mid-call

    tokio::time::sleep(std::time::Duration::from_millis(900)).await;
    let r = Client::send(
        c.http
            .get(&c.url)
            .header("accept", "text/event-stream")
            .header("mcp-session-id", c.session.clone().unwrap())
            .header("last-event-id", &last_id),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let responses: Vec<Value> = r.messages().into_iter().filter(|m| m["id"] == 22).collect();
    assert_eq!(
        responses.len(),
        1,
        "the missed response, exactly once: {}",
        r.body
    );
    assert!(responses[0]["result"]["content"].is_array(), "{}", r.body);
}

#[tokio::test]
async fn server_to_client_requests_are_relayed_with_ids_mapped() {
    let remote = HttpFixture::start();
    let gw = Gateway::start("relay", &config(&remote.url));
    let mut c = Client::new(&gw.url);
    c.initialize().await;
    for server in ["alpha", "remote"] {
        let mut resp = c
            .post_builder(
                json!({"jsonrpc":"2.0","id":31,"method":"tools/call","params":{"name":format!("{server}__test_sampling"),"arguments":{"prompt":"hi"}}})
                    .to_string(),
            )
            .send()
            .await
            .unwrap();
        // Read until the sampling request arrives.
        let mut buf = String::new();
        let req = loop {
            let chunk = resp.chunk().await.unwrap().expect("stream open");
            buf.push_str(&String::from_utf8_lossy(&chunk));
            if let Some(m) = buf
                .lines()
                .filter_map(|l| l.strip_prefix("data: "))
                .filter(|d| !d.is_empty())
                .map(|d| serde_json::from_str::<Value>(d).unwrap())
                .find(|m| m["method"] == "sampling/createMessage")
            {
                break m;
            }
        };
        let answer = json!({"jsonrpc":"2.0","id":req["id"],"result":{"role":"assistant","content":{"type":"text","text":"from the client"},"model":"m","stopReason":"endTurn"}});
        let r = c.post(answer.to_string()).await;
        assert_eq!(r.status, 202, "{}", r.body);
        let mut rest = String::new();
        while let Some(chunk) = resp.chunk().await.unwrap() {
            rest.push_str(&String::from_utf8_lossy(&chunk));
        }
        assert!(rest.contains("\"id\":31"), "{rest}");
        assert!(rest.contains("from the client"), "{server}: {rest}");
    }
}
