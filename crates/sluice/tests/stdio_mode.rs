//! `sluice stdio`: the same gateway over stdin/stdout, and `sluice check`.

mod common;

use common::sibling_bin;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

#[test]
fn stdio_front_end_serves_initialize_list_and_call() {
    let dir = common::scratch("stdio");
    let cfg = dir.join("sluice.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[servers]]\nname = \"fx\"\ncommand = \"{}\"\n",
            sibling_bin("sluice-fixture").display()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["stdio", "--config"])
        .arg(&cfg)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut send = |v: Value| {
        writeln!(stdin, "{v}").unwrap();
        stdin.flush().unwrap();
    };
    let mut recv = |id: i64| -> Value {
        loop {
            let mut line = String::new();
            assert!(out.read_line(&mut line).unwrap() > 0, "stdout closed");
            let v: Value = serde_json::from_str(&line).unwrap();
            if v["id"] == id {
                return v;
            }
        }
    };
    send(json!({"jsonrpc":"2.0","id":1,"method":"tools/list"}));
    assert_eq!(
        recv(1)["error"]["code"],
        -32600,
        "requests before initialize are refused"
    );
    send(
        json!({"jsonrpc":"2.0","id":2,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}),
    );
    assert_eq!(recv(2)["result"]["protocolVersion"], "2025-06-18");
    send(json!({"jsonrpc":"2.0","method":"notifications/initialized"}));
    send(json!({"jsonrpc":"2.0","id":3,"method":"tools/list"}));
    let tools = recv(3);
    assert!(
        tools["result"]["tools"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "fx__echo"),
        "{tools}"
    );
    send(
        json!({"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"fx__echo","arguments":{"text":"over stdio"}}}),
    );
    assert_eq!(recv(4)["result"]["content"][0]["text"], "over stdio");
    writeln!(stdin, "{{broken").unwrap();
    stdin.flush().unwrap();
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert!(line.contains("-32700"), "{line}");
    drop(stdin);
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "exits cleanly when stdin closes: {status}"
    );
    // The audit log was drained and closed on the way out.
    let log = std::fs::read_to_string(dir.join("sluice-audit.jsonl")).unwrap();
    let call: Value = log
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|r| r["event"] == "tool_call")
        .unwrap_or_else(|| panic!("no tool_call in {log}"));
    assert_eq!(
        (
            &call["session"],
            &call["client"]["name"],
            &call["tool"],
            &call["outcome"]
        ),
        (
            &json!("stdio"),
            &json!("t"),
            &json!("fx__echo"),
            &json!("ok")
        ),
        "{call}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn check_reports_every_problem_with_its_key_and_exits_1() {
    let dir = common::scratch("check");
    let cfg = dir.join("sluice.toml");
    std::fs::write(
        &cfg,
        "[listen]\naddr = \"nowhere\"\n[[servers]]\nname = \"bad name\"\ncommand = \"x\"\n[[servers]]\nname = \"h\"\nurl = \"http://127.0.0.1:1/mcp\"\nheaders = { Authorization = \"Bearer ${SLUICE_TEST_UNSET_VAR}\" }\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["check", "--config"])
        .arg(&cfg)
        .env_remove("SLUICE_TEST_UNSET_VAR")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("listen.addr"), "{err}");
    assert!(err.contains("servers[0].name"), "{err}");
    assert!(
        err.contains("servers[1].headers.Authorization") && err.contains("SLUICE_TEST_UNSET_VAR"),
        "{err}"
    );
    assert!(err.contains("3 problem"), "{err}");

    std::fs::write(&cfg, "[[servers]]\nname = \"ok\"\ncommand = \"x\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["check", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(out.status.success());
    let _ = std::fs::remove_dir_all(dir);
}
