//! API keys end to end through the built binary: `sluice keys` against a
//! config, the gateway with `auth.mode = "required"`, both eras, every kind
//! of refusal with its status and challenge, sessions bound to their
//! principal, rotation, the same PostgreSQL store shared by two gateways,
//! and the safe default without `[auth]`.

mod common;

use common::{Client, Gateway, Reply, audit_records, of_kind, sibling_bin};
use serde_json::{Value, json};
use std::process::{Command, Stdio};
use std::time::Duration;

const PEPPER: &str = "a-test-pepper-of-at-least-thirty-two-bytes";

fn pg_url() -> String {
    std::env::var("SLUICE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A config with auth required (scope `mcp`) over the stdio fixture;
/// `keys` adds to `[auth.api_keys]`.
fn config(keys: &str) -> String {
    config_with("[sessions]\nstore = \"memory\"\n", keys)
}

fn config_with(sessions: &str, keys: &str) -> String {
    format!(
        "{sessions}[audit]\npath = \"audit.jsonl\"\n\
         [auth]\nmode = \"required\"\nrequired_scopes = [\"mcp\"]\n\
         [auth.api_keys]\nenabled = true\npepper = \"{PEPPER}\"\n{keys}\
         [[servers]]\nname = \"fx\"\nprefix = \"\"\ncommand = \"{}\"\n",
        sibling_bin("sluice-fixture").display()
    )
}

/// Runs `sluice keys ARGS --config CONFIG`: (exit code, stdout, stderr).
fn keys(config: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("keys")
        .args(args)
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .output()
        .expect("sluice runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Creates a key; returns (id, key) from the JSON on the last line.
fn create(config: &std::path::Path, args: &[&str]) -> (String, String) {
    let mut all = vec!["create", "--format", "json"];
    all.extend_from_slice(args);
    let (code, out, err) = keys(config, &all);
    assert_eq!(code, 0, "keys create failed: {err}");
    let last = out.lines().last().expect("a line");
    let v: Value = serde_json::from_str(last).unwrap();
    assert!(v.get("hash").is_none(), "{v}");
    (
        v["id"].as_str().unwrap().to_string(),
        v["key"].as_str().unwrap().to_string(),
    )
}

fn body(id: i64, method: &str, params: Value) -> String {
    json!({"jsonrpc":"2.0","id":id,"method":method,"params":params}).to_string()
}

/// A POST to `url` with the key (if any), the session (if any) and headers.
async fn post(
    url: &str,
    key: Option<&str>,
    session: Option<&str>,
    body: String,
    headers: &[(&str, &str)],
) -> Reply {
    let mut rb = common::http()
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream");
    if let Some(k) = key {
        rb = rb.header("authorization", format!("Bearer {k}"));
    }
    if let Some(s) = session {
        rb = rb.header("mcp-session-id", s);
    }
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    Client::send(rb.body(body)).await
}

/// A session-era `initialize` with `key`: the session id.
async fn initialize(url: &str, key: &str) -> String {
    let r = post(
        url,
        Some(key),
        None,
        body(
            0,
            "initialize",
            json!({"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"auth-tests","version":"1"}}),
        ),
        &[],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let sid = r.headers["mcp-session-id"].to_str().unwrap().to_string();
    let n = post(
        url,
        Some(key),
        Some(&sid),
        json!({"jsonrpc":"2.0","method":"notifications/initialized"}).to_string(),
        &[],
    )
    .await;
    assert_eq!(n.status, 202, "{}", n.body);
    sid
}

async fn echo_session(url: &str, key: &str, sid: &str, text: &str) -> Reply {
    post(
        url,
        Some(key),
        Some(sid),
        body(
            5,
            "tools/call",
            json!({"name":"echo","arguments":{"text":text}}),
        ),
        &[],
    )
    .await
}

fn meta() -> Value {
    json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "auth-tests", "version": "1"}
    })
}

async fn echo_2026(url: &str, key: Option<&str>, text: &str) -> Reply {
    post(
        url,
        key,
        None,
        body(
            9,
            "tools/call",
            json!({"name":"echo","arguments":{"text":text},"_meta": meta()}),
        ),
        &[
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/call"),
            ("mcp-name", "echo"),
        ],
    )
    .await
}

fn text_of(r: &Reply) -> String {
    let res = &r.response()["result"];
    assert!(res["isError"] != true, "{}", r.body);
    res["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Asserts a refusal: status, `data.sluice.code`, the challenge, and that
/// the body does not echo `token`.
fn refused(r: &Reply, status: u16, code: &str, token: Option<&str>) -> String {
    assert_eq!(r.status, status, "{}", r.body);
    assert_eq!(
        r.response()["error"]["data"]["sluice"]["code"],
        code,
        "{}",
        r.body
    );
    if let Some(t) = token {
        assert!(!r.body.contains(t), "the token is echoed: {}", r.body);
    }
    r.headers
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

#[tokio::test]
async fn api_keys_guard_both_eras_and_every_refusal_says_why() {
    let gw = Gateway::start("auth-keys", &config(""));
    let cfg = gw.dir.join("sluice.toml");
    let (id_a, key_a) = create(
        &cfg,
        &[
            "--name",
            "alice",
            "--tenant",
            "acme",
            "--scopes",
            "mcp,extra",
        ],
    );
    let (_, key_b) = create(&cfg, &["--name", "bob", "--scopes", "mcp"]);
    let (_, key_c) = create(&cfg, &["--name", "carol"]);
    let metadata_url = format!("{}/.well-known/oauth-protected-resource/mcp", gw.base);
    let challenge = format!("Bearer resource_metadata=\"{metadata_url}\"");

    // The protected-resource metadata (RFC 9728), both forms.
    for url in [
        metadata_url.clone(),
        format!("{}/.well-known/oauth-protected-resource", gw.base),
    ] {
        let text = common::http()
            .get(&url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let m: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(m["resource"], gw.url.as_str(), "{m}");
        assert_eq!(m["bearer_methods_supported"], json!(["header"]));
        assert_eq!(m["scopes_supported"], json!(["mcp"]));
    }

    let init = body(
        0,
        "initialize",
        json!({"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}),
    );
    // No token: 401 with the challenge, no error code (RFC 6750 §3.1).
    let r = post(&gw.url, None, None, init.clone(), &[]).await;
    let h = refused(&r, 401, "missing_token", None);
    assert_eq!(h, format!("{challenge}, scope=\"mcp\""));
    assert!(r.body.contains("Authorization: Bearer"), "{}", r.body);
    // Not a key.
    let r = post(&gw.url, Some("not-a-key-4711"), None, init.clone(), &[]).await;
    let h = refused(&r, 401, "malformed_token", Some("not-a-key-4711"));
    assert!(
        h.starts_with(&challenge) && h.contains("error=\"invalid_token\""),
        "{h}"
    );
    // A typo: the checksum catches it before any lookup.
    let i = key_a.len() - 20;
    let flipped = if &key_a[i..=i] == "a" { "b" } else { "a" };
    let typo = format!("{}{flipped}{}", &key_a[..i], &key_a[i + 1..]);
    let r = post(&gw.url, Some(&typo), None, init.clone(), &[]).await;
    refused(&r, 401, "bad_checksum", Some(&typo));
    assert!(r.body.contains("checksum"), "{}", r.body);
    // Another scheme, and two headers.
    let basic = common::http()
        .post(&gw.url)
        .header("content-type", "application/json")
        .header("authorization", "Basic dXNlcjpwYXNz")
        .body(init.clone());
    let r = Client::send(basic).await;
    refused(&r, 401, "invalid_request", None);
    let two = common::http()
        .post(&gw.url)
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {key_a}"))
        .header("authorization", format!("Bearer {key_b}"))
        .body(init.clone());
    refused(
        &Client::send(two).await,
        401,
        "invalid_request",
        Some(&key_a),
    );
    // A token in the query string is refused even with a good header.
    let url = format!("{}?access_token={key_a}", gw.url);
    let r = post(&url, Some(&key_a), None, init.clone(), &[]).await;
    refused(&r, 400, "invalid_request", Some(&key_a));
    // A valid key without the required scope: 403, step-up challenge.
    let r = post(&gw.url, Some(&key_c), None, init.clone(), &[]).await;
    let h = refused(&r, 403, "insufficient_scope", Some(&key_c));
    assert!(
        h.contains("error=\"insufficient_scope\", scope=\"mcp\""),
        "{h}"
    );

    // Session era with the key.
    let sid = initialize(&gw.url, &key_a).await;
    assert_eq!(
        text_of(&echo_session(&gw.url, &key_a, &sid, "hello").await),
        "hello"
    );
    // The session needs the key on every request, GET and DELETE included.
    let r = post(
        &gw.url,
        None,
        Some(&sid),
        body(6, "tools/list", json!({})),
        &[],
    )
    .await;
    refused(&r, 401, "missing_token", None);
    for method in [reqwest::Method::GET, reqwest::Method::DELETE] {
        let r = common::http()
            .request(method.clone(), &gw.url)
            .header("accept", "text/event-stream")
            .header("mcp-session-id", &sid)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{method}");
        assert!(
            r.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .starts_with(&challenge)
        );
    }
    // Another principal presenting alice's session id: 404, as if it did not exist.
    let r = echo_session(&gw.url, &key_b, &sid, "mine now").await;
    assert_eq!(r.status, 404, "{}", r.body);
    let r = common::http()
        .delete(&gw.url)
        .header("authorization", format!("Bearer {key_b}"))
        .header("mcp-session-id", &sid)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // … and the session still works for alice.
    assert_eq!(
        text_of(&echo_session(&gw.url, &key_a, &sid, "still").await),
        "still"
    );

    // The 2026-07-28 revision with the key; without, 401.
    assert_eq!(
        text_of(&echo_2026(&gw.url, Some(&key_a), "modern").await),
        "modern"
    );
    refused(
        &echo_2026(&gw.url, None, "x").await,
        401,
        "missing_token",
        None,
    );

    // The audit log names the principal (key id and tenant) of both eras.
    let path = gw.dir.join("audit.jsonl");
    let records = audit_records(&path, |r| of_kind(r, "tool_call").len() >= 3).await;
    let calls = of_kind(&records, "tool_call");
    for text in ["hello", "modern"] {
        let c = calls
            .iter()
            .find(|c| c["arguments"]["text"] == text)
            .unwrap_or_else(|| panic!("no call {text}: {calls:?}"));
        assert_eq!(c["principal"], id_a.as_str(), "{c}");
        assert_eq!(c["tenant"], "acme", "{c}");
    }
    let audit = std::fs::read_to_string(&path).unwrap();
    assert!(!audit.contains(&key_a), "no key in the audit log");

    // Revoked: refused at once, on the session and in 2026.
    let (code, out, err) = keys(&cfg, &["revoke", &id_a]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("revoked"), "{out}");
    let r = echo_session(&gw.url, &key_a, &sid, "after").await;
    let h = refused(&r, 401, "revoked_token", Some(&key_a));
    assert!(h.contains("error=\"invalid_token\""), "{h}");
    refused(
        &echo_2026(&gw.url, Some(&key_a), "x").await,
        401,
        "revoked_token",
        Some(&key_a),
    );
    // Bob is unaffected.
    assert_eq!(
        text_of(&echo_2026(&gw.url, Some(&key_b), "bob").await),
        "bob"
    );

    // Expired.
    let (_, key_d) = create(
        &cfg,
        &["--name", "dave", "--scopes", "mcp", "--expires", "3s"],
    );
    assert_eq!(text_of(&echo_2026(&gw.url, Some(&key_d), "d").await), "d");
    tokio::time::sleep(Duration::from_secs(4)).await;
    refused(
        &echo_2026(&gw.url, Some(&key_d), "x").await,
        401,
        "expired_token",
        Some(&key_d),
    );

    // Every refusal is a counted stage decision.
    let metrics = gw.metrics().await;
    for decision in [
        "missing_token",
        "malformed_token",
        "bad_checksum",
        "insufficient_scope",
        "revoked_token",
        "expired_token",
        "session_of_another_principal",
    ] {
        let line = format!(
            "sluice_stage_decisions_total{{stage=\"authenticate\",decision=\"{decision}\"}} "
        );
        assert!(metrics.contains(&line), "{line} not in:\n{metrics}");
    }

    // `keys list` shows every key and its state, never a secret.
    let (code, out, _) = keys(&cfg, &["list", "--format", "json"]);
    assert_eq!(code, 0);
    let listed: Value = serde_json::from_str(out.trim()).unwrap();
    let states: Vec<(&str, &str)> = listed["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| (k["name"].as_str().unwrap(), k["state"].as_str().unwrap()))
        .collect();
    assert_eq!(
        states,
        [
            ("alice", "revoked"),
            ("bob", "active"),
            ("carol", "active"),
            ("dave", "expired")
        ]
    );
    for k in [&key_a, &key_b, &key_c, &key_d] {
        assert!(!out.contains(k.as_str()), "a key in `keys list`");
        assert!(!gw.logs().contains(&k[4..40]), "a key in the gateway's log");
    }
    let (_, text, _) = keys(&cfg, &["list"]);
    assert!(text.contains("alice") && text.contains("revoked"), "{text}");
}

#[tokio::test]
async fn a_rotated_key_keeps_its_old_secret_only_for_the_overlap() {
    let gw = Gateway::start("auth-rotate", &config(""));
    let cfg = gw.dir.join("sluice.toml");
    let (id, old) = create(&cfg, &["--name", "ci", "--scopes", "mcp"]);
    let sid = initialize(&gw.url, &old).await;
    let (code, out, err) = keys(&cfg, &["rotate", &id, "--overlap", "3s"]);
    assert_eq!(code, 0, "{err}");
    let new = out.lines().last().unwrap().to_string();
    assert!(new.starts_with("slk_") && new != old, "{out}");
    assert!(new.contains(&id), "the id is kept");
    // Both work during the overlap; the session stays bound to the same principal.
    assert_eq!(text_of(&echo_2026(&gw.url, Some(&old), "old").await), "old");
    assert_eq!(
        text_of(&echo_session(&gw.url, &new, &sid, "new").await),
        "new"
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    refused(
        &echo_2026(&gw.url, Some(&old), "x").await,
        401,
        "invalid_token",
        Some(&old),
    );
    assert_eq!(
        text_of(&echo_session(&gw.url, &new, &sid, "later").await),
        "later"
    );
    // Unknown ids and bad input are told plainly.
    let (code, _, err) = keys(&cfg, &["rotate", "nosuchkey0000000"]);
    assert_eq!(code, 1);
    assert!(err.contains("no API key has id nosuchkey0000000"), "{err}");
    let (code, _, err) = keys(&cfg, &["revoke", "nosuchkey0000000"]);
    assert_eq!(code, 1);
    assert!(err.contains("no API key has id"), "{err}");
    let (code, _, err) = keys(&cfg, &["create", "--name", "x", "--scopes", "a b"]);
    assert_eq!(code, 1);
    assert!(err.contains("--scopes: `a b` is not a scope"), "{err}");
    let (code, _, err) = keys(&cfg, &["create", "--name", "x", "--expires", "forever"]);
    assert_eq!(code, 2, "a usage error");
    assert!(err.contains("not a duration"), "{err}");
    let (code, _, err) = keys(&cfg, &["create", "--name", " "]);
    assert_eq!(code, 1);
    assert!(err.contains("--name"), "{err}");
}

/// The client's key never reaches an upstream: the HTTP fixture prints every
/// Authorization header it receives, and sees only the upstream's own.
#[tokio::test]
async fn the_clients_key_is_never_forwarded_upstream() {
    let mut fixture = Command::new(sibling_bin("sluice-fixture"))
        .args(["http", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(fixture.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let upstream = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .to_string();
    let stderr = fixture.stderr.take().unwrap();
    let seen = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
    let cfg = format!(
        "[sessions]\nstore = \"memory\"\n[auth]\nmode = \"required\"\n[auth.api_keys]\npepper = \"{PEPPER}\"\n\
         [[servers]]\nname = \"up\"\nprefix = \"\"\nurl = \"{upstream}\"\nheaders = {{ Authorization = \"Bearer upstream-own-token\" }}\n"
    );
    let gw = Gateway::start("auth-upstream", &cfg);
    let (_, key) = create(&gw.dir.join("sluice.toml"), &["--name", "n"]);
    let sid = initialize(&gw.url, &key).await;
    assert_eq!(text_of(&echo_session(&gw.url, &key, &sid, "s").await), "s");
    assert_eq!(text_of(&echo_2026(&gw.url, Some(&key), "m").await), "m");
    drop(gw);
    let _ = fixture.kill();
    let _ = fixture.wait();
    let seen = seen.join().unwrap();
    assert!(
        seen.contains("received Authorization: Bearer upstream-own-token"),
        "the fixture reports headers: {seen}"
    );
    assert!(
        !seen.contains("slk_"),
        "the client's key reached the upstream: {seen}"
    );
}

/// Two replicas on one PostgreSQL key store and one Redis session store: a
/// session stays bound to its key on either replica, and a key revoked by
/// one CLI run is refused by both on their next request.
#[tokio::test]
async fn postgres_key_store_is_shared_and_revocation_holds_on_every_replica() {
    let keys_cfg = format!("url = \"{}\"\n", pg_url());
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let sessions = format!(
        "[sessions]\nstore = \"redis\"\nredis_url = \"redis://127.0.0.1:6379\"\nkey_prefix = \"sluice-auth-test-{n}:\"\n"
    );
    let a = Gateway::start("auth-pg-a", &config_with(&sessions, &keys_cfg));
    let b = Gateway::start("auth-pg-b", &config_with(&sessions, &keys_cfg));
    let cfg = a.dir.join("sluice.toml");
    let (id, key) = create(&cfg, &["--name", "shared", "--scopes", "mcp"]);
    let (_, other) = create(&cfg, &["--name", "other", "--scopes", "mcp"]);
    assert_eq!(text_of(&echo_2026(&a.url, Some(&key), "a").await), "a");
    assert_eq!(text_of(&echo_2026(&b.url, Some(&key), "b").await), "b");
    // A session made on A is served by B for its key, and is 404 for another.
    let sid = initialize(&a.url, &key).await;
    assert_eq!(
        text_of(&echo_session(&b.url, &key, &sid, "on b").await),
        "on b"
    );
    assert_eq!(echo_session(&b.url, &other, &sid, "x").await.status, 404);
    assert_eq!(echo_session(&a.url, &other, &sid, "x").await.status, 404);
    let (code, _, err) = keys(&b.dir.join("sluice.toml"), &["revoke", &id]);
    assert_eq!(code, 0, "{err}");
    for gw in [&a, &b] {
        refused(
            &echo_2026(&gw.url, Some(&key), "x").await,
            401,
            "revoked_token",
            Some(&key),
        );
    }
}

/// Without `[auth]` the gateway serves loopback only, and says so; any other
/// address needs `auth.mode`. A required mode without a pepper is refused.
#[tokio::test]
async fn without_auth_the_gateway_stays_on_loopback() {
    let open = format!(
        "[sessions]\nstore = \"memory\"\n[[servers]]\nname = \"fx\"\ncommand = \"{}\"\n",
        sibling_bin("sluice-fixture").display()
    );
    let dir = common::scratch("auth-default");
    let path = dir.join("sluice.toml");
    std::fs::write(&path, &open).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["serve", "--config"])
        .arg(&path)
        .args(["--listen", "0.0.0.0:0"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("refusing to listen on 0.0.0.0:0 without authentication"),
        "{err}"
    );
    assert!(err.contains("auth.mode = \"off\""), "{err}");

    let gw = Gateway::start("auth-loopback", &open);
    assert!(gw.logs().contains("no [auth] section"), "{}", gw.logs());
    let mut c = Client::new(&gw.url);
    c.initialize().await;

    std::fs::write(&path, "[auth]\nmode = \"required\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(err.contains("auth.api_keys.pepper: must be set"), "{err}");
    // `sluice keys` without a pepper names the key to set.
    std::fs::write(&path, "").unwrap();
    let (code, _, err) = keys(&path, &["create", "--name", "x"]);
    assert_eq!(code, 1);
    assert!(err.contains("auth.api_keys.pepper is not set"), "{err}");
}

/// The principal a key yields is what later stages key on: a rate limit per
/// principal counts each key apart (not the shared client address).
#[tokio::test]
async fn rate_limits_count_each_key_apart() {
    let cfg = config("")
        + "[[limits]]\nname = \"per-key\"\nper = [\"principal\"]\nrate = \"2/hour\"\nburst = 2\n";
    let gw = Gateway::start("auth-limits", &cfg);
    let path = gw.dir.join("sluice.toml");
    let (id_a, key_a) = create(&path, &["--name", "a", "--scopes", "mcp"]);
    let (_, key_b) = create(&path, &["--name", "b", "--scopes", "mcp"]);
    let sa = initialize(&gw.url, &key_a).await;
    let sb = initialize(&gw.url, &key_b).await;
    for i in 0..2 {
        let t = format!("a{i}");
        assert_eq!(text_of(&echo_session(&gw.url, &key_a, &sa, &t).await), t);
    }
    let r = echo_session(&gw.url, &key_a, &sa, "a2").await;
    let e = &r.response()["error"];
    assert_eq!(e["data"]["limit"], "per-key", "{}", r.body);
    assert_eq!(
        e["data"]["scope"],
        format!("principal={id_a}"),
        "{}",
        r.body
    );
    // The other key has its own budget.
    assert_eq!(
        text_of(&echo_session(&gw.url, &key_b, &sb, "b0").await),
        "b0"
    );
}
