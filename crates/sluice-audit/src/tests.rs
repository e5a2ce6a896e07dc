use super::*;
use serde_json::{Value, json};
use sluice_config::AuditArguments;
use std::path::{Path, PathBuf};

fn scratch(tag: &str) -> PathBuf {
    let n = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let d = std::env::temp_dir().join(format!("sluice-audit-{tag}-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn args() -> Arguments {
    Arguments::new(AuditArguments::Redacted, &[], 4096)
}

fn call(tool: &str, arguments: Value) -> Event {
    Event::ToolCall(ToolCall {
        session: "s-1".into(),
        request: None,
        client_name: Some("tests".into()),
        client_version: Some("1".into()),
        remote: Some("127.0.0.1:4000".parse().unwrap()),
        caller: Some(Box::new(Caller {
            principal: "abcdefghijklmnop".into(),
            tenant: Some("acme".into()),
        })),
        tool: tool.into(),
        server: Some("srv".into()),
        upstream_tool: Some(tool.trim_start_matches("srv__").into()),
        arguments: Some(arguments),
        outcome: Outcome::Ok,
        duration_ms: 3,
    })
}

async fn write(path: &Path, key: Option<&[u8]>, tools: &[&str]) -> AuditLog {
    let log = AuditLog::open_at(path, key, args()).unwrap();
    for t in tools {
        log.record(call(t, json!({"text": t}))).await;
    }
    log.close().await;
    log
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn records(path: &Path) -> Vec<Value> {
    lines(path)
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn check(path: &Path, key: Option<&[u8]>) -> Result<Verified, VerifyError> {
    verify(
        std::io::BufReader::new(std::fs::File::open(path).unwrap()),
        key,
    )
}

fn broken(path: &Path, key: Option<&[u8]>) -> Broken {
    match check(path, key) {
        Err(VerifyError::Broken(b)) => b,
        other => panic!("expected a broken chain, got {other:?}"),
    }
}

#[tokio::test]
async fn records_are_chained_and_the_chain_continues_across_reopen() {
    let dir = scratch("reopen");
    let path = dir.join("audit.jsonl");
    let log = write(&path, None, &["srv__a", "srv__b", "srv__c"]).await;
    assert_eq!(log.records(), 3);
    assert_eq!(log.write_errors(), 0);
    write(&path, None, &["srv__d", "srv__e"]).await;

    let recs = records(&path);
    assert_eq!(recs.len(), 5);
    assert_eq!(recs[0]["prev"], GENESIS);
    for (i, r) in recs.iter().enumerate() {
        assert_eq!(r["seq"], i as u64 + 1);
        assert_eq!(r["event"], "tool_call");
        if i > 0 {
            assert_eq!(r["prev"], recs[i - 1]["hash"], "record {i} links back");
        }
    }
    let r = &recs[3];
    assert_eq!(r["tool"], "srv__d");
    assert_eq!(r["server"], "srv");
    assert_eq!(r["upstream_tool"], "d");
    assert_eq!(r["client"], json!({"name": "tests", "version": "1"}));
    assert_eq!(r["remote"], "127.0.0.1:4000");
    assert_eq!(r["principal"], "abcdefghijklmnop");
    assert_eq!(r["tenant"], "acme");
    assert_eq!(r["outcome"], "ok");
    assert_eq!(r["duration_ms"], 3);
    let ts = r["ts"].as_str().unwrap();
    assert!(
        ts.len() == 24 && ts.ends_with('Z'),
        "RFC 3339 UTC with ms: {ts}"
    );
    // The member order is part of the format.
    let first = &lines(&path)[0];
    assert!(first.starts_with("{\"seq\":1,\"ts\":\""), "{first}");
    assert!(
        first.contains("\"prev\":\"") && first.ends_with("\"}"),
        "{first}"
    );

    let ok = check(&path, None).unwrap();
    assert_eq!(ok.records, 5);
    assert!(ok.restarts.is_empty());
    assert_eq!(ok.head, recs[4]["hash"]);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_torn_last_line_starts_a_new_segment_with_chain_restart() {
    let dir = scratch("torn");
    let path = dir.join("audit.jsonl");
    write(&path, None, &["srv__a", "srv__b"]).await;
    let head = records(&path)[1]["hash"].as_str().unwrap().to_string();
    // A crash in the middle of a write.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    std::io::Write::write_all(&mut f, b"{\"seq\":3,\"ts\":\"2026-").unwrap();
    drop(f);
    assert!(matches!(
        broken(&path, None).problem,
        Problem::Unparseable(_)
    ));

    write(&path, None, &["srv__c"]).await;
    let text = lines(&path);
    assert_eq!(text.len(), 5, "{text:?}");
    assert_eq!(
        text[2], "{\"seq\":3,\"ts\":\"2026-",
        "the torn bytes stay, on their own line"
    );
    let restart: Value = serde_json::from_str(&text[3]).unwrap();
    assert_eq!(restart["event"], "chain_restart");
    assert_eq!(restart["seq"], 3, "continues from the last good record");
    assert_eq!(restart["prev"], head.as_str());
    assert!(
        restart["reason"].as_str().unwrap().contains("incomplete"),
        "{restart}"
    );
    let next: Value = serde_json::from_str(&text[4]).unwrap();
    assert_eq!(next["seq"], 4);
    assert_eq!(next["prev"], restart["hash"]);

    let ok = check(&path, None).unwrap();
    assert_eq!(ok.records, 4);
    assert_eq!(ok.restarts.len(), 1);
    assert_eq!(ok.restarts[0].0, 4);

    // Garbage that is not followed by a chain_restart is still a break.
    let mut all = text.clone();
    all.remove(3);
    std::fs::write(&path, all.join("\n") + "\n").unwrap();
    assert_eq!(broken(&path, None).line, 3);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn hmac_chains_verify_only_with_their_key() {
    let dir = scratch("hmac");
    let keyed = dir.join("keyed.jsonl");
    let plain = dir.join("plain.jsonl");
    let key = b"0123456789abcdef0123456789abcdef";
    write(&keyed, Some(key), &["srv__a", "srv__b"]).await;
    write(&plain, None, &["srv__a", "srv__b"]).await;

    assert_eq!(check(&keyed, Some(key)).unwrap().records, 2);
    assert_eq!(check(&plain, None).unwrap().records, 2);
    let b = broken(&keyed, None);
    assert_eq!(b.line, 1);
    assert_eq!(b.problem, Problem::HashMismatch { first: true });
    assert!(b.to_string().contains("--key-env"), "{b}");
    assert_eq!(
        broken(&keyed, Some(b"another key, just as long.......")).line,
        1
    );
    assert_eq!(broken(&plain, Some(key)).line, 1);

    // Reopening with another key: the chain goes on, with an explicit restart.
    write(
        &keyed,
        Some(b"a new key that is long enough!!!"),
        &["srv__c"],
    )
    .await;
    let recs = records(&keyed);
    assert_eq!(recs[2]["event"], "chain_restart");
    assert!(recs[2]["reason"].as_str().unwrap().contains("key"));
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn edits_and_deletions_are_found_at_their_line() {
    let dir = scratch("tamper");
    let path = dir.join("audit.jsonl");
    write(&path, None, &["srv__a", "srv__b", "srv__c", "srv__d"]).await;
    let orig = lines(&path);
    let save = |l: &[String]| std::fs::write(&path, l.join("\n") + "\n").unwrap();

    let mut edited = orig.clone();
    edited[2] = edited[2].replace("\"outcome\":\"ok\"", "\"outcome\":\"refused\"");
    assert_ne!(edited[2], orig[2]);
    save(&edited);
    let b = broken(&path, None);
    assert_eq!(
        (b.line, &b.problem),
        (3, &Problem::HashMismatch { first: false })
    );

    let mut deleted = orig.clone();
    deleted.remove(1);
    save(&deleted);
    let b = broken(&path, None);
    assert_eq!(b.line, 2);
    assert_eq!(
        b.problem,
        Problem::SeqGap {
            expected: 2,
            found: 3
        }
    );

    // An edit with the hash recomputed (no key): the next record's prev gives it away.
    let mut forged = orig.clone();
    let mut rec: Value = serde_json::from_str(&forged[1]).unwrap();
    rec["outcome"] = json!("error");
    let obj = rec.as_object_mut().unwrap();
    obj.remove("hash");
    let body = serde_json::to_string(&rec).unwrap();
    let hash =
        chain::Hasher::new(None).hash(rec["prev"].as_str().unwrap().as_bytes(), body.as_bytes());
    forged[1] = format!("{},\"hash\":\"{hash}\"}}", &body[..body.len() - 1]);
    save(&forged);
    let b = broken(&path, None);
    assert_eq!((b.line, &b.problem), (3, &Problem::PrevMismatch));

    save(&orig);
    assert_eq!(check(&path, None).unwrap().records, 4);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn arguments_are_redacted_and_capped_in_the_record() {
    let dir = scratch("redact");
    let path = dir.join("audit.jsonl");
    let log = AuditLog::open_at(
        &path,
        None,
        Arguments::new(AuditArguments::Redacted, &["ssn".into()], 200),
    )
    .unwrap();
    log.record(call(
        "srv__a",
        json!({"text": "kept", "api_key": "sk-1", "nested": {"auth": {"user": "u"}, "list": [{"SSN": 1}]}}),
    ))
    .await;
    log.record(call(
        "srv__b",
        json!({"text": "x".repeat(1000), "token": "t0ps3cret"}),
    ))
    .await;
    log.close().await;
    let recs = records(&path);
    assert_eq!(
        recs[0]["arguments"],
        json!({"text": "kept", "api_key": REDACTED, "nested": {"auth": REDACTED, "list": [{"SSN": REDACTED}]}})
    );
    let cut = recs[1]["arguments"].as_str().expect("cut to a string");
    assert!(cut.contains("[truncated: ") && cut.len() < 260, "{cut}");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        !text.contains("sk-1") && !text.contains("t0ps3cret"),
        "{text}"
    );
    check(&path, None).unwrap();

    let omit = dir.join("omit.jsonl");
    let log =
        AuditLog::open_at(&omit, None, Arguments::new(AuditArguments::Omit, &[], 10)).unwrap();
    assert!(!log.keeps_arguments());
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_full_queue_makes_callers_wait_and_nothing_is_lost() {
    let dir = scratch("burst");
    let path = dir.join("audit.jsonl");
    let log = AuditLog::open_at(&path, None, args()).unwrap();
    let n = QUEUE * 3;
    let tasks: Vec<_> = (0..4)
        .map(|t| {
            let log = log.clone();
            tokio::spawn(async move {
                for i in 0..n / 4 {
                    log.record(call(&format!("srv__t{t}_{i}"), json!({}))).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    log.record_detached(call("srv__last", json!({})));
    log.close().await;
    assert_eq!(log.records(), n as u64 + 1);
    assert_eq!(check(&path, None).unwrap().records, n as u64 + 1);
    // After close, records are refused loudly (counted), not silently.
    log.record(call("srv__late", json!({}))).await;
    assert_eq!(log.write_errors(), 1);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn records_reach_the_file_without_close_and_on_drop() {
    let dir = scratch("drop");
    let path = dir.join("audit.jsonl");
    let log = AuditLog::open_at(&path, None, args()).unwrap();
    log.record(call("srv__a", json!({}))).await;
    // Written within a batch interval, while the log stays open.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while std::fs::read_to_string(&path).unwrap().is_empty() {
        assert!(std::time::Instant::now() < deadline, "never written");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    log.record(call("srv__b", json!({}))).await;
    drop(log);
    while lines(&path).len() < 2 {
        assert!(std::time::Instant::now() < deadline, "not drained on drop");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn one_file_one_writer() {
    let dir = scratch("lock");
    let path = dir.join("audit.jsonl");
    let first = AuditLog::open_at(&path, None, args()).unwrap();
    match AuditLog::open_at(&path, None, args()) {
        Err(e @ OpenError::Locked { .. }) => assert!(e.to_string().contains("audit.path")),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("a second writer must be refused"),
    }
    first.close().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn disabled_logs_create_nothing() {
    let dir = scratch("off");
    let path = dir.join("audit.jsonl");
    let cfg = sluice_config::Audit {
        enabled: false,
        path: path.clone(),
        hmac_key: None,
        arguments: AuditArguments::Redacted,
        redact_keys: vec![],
        max_argument_bytes: 4096,
    };
    let log = AuditLog::open(&cfg).unwrap();
    assert!(!log.enabled());
    log.record(call("srv__a", json!({}))).await;
    log.close().await;
    assert!(!path.exists());
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn write_errors_are_counted_and_retried() {
    let full = Path::new("/dev/full");
    if !full.exists() {
        eprintln!("no /dev/full here; skipped");
        return;
    }
    let log = AuditLog::open_at(full, None, args()).unwrap();
    log.record(call("srv__a", json!({}))).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while log.write_errors() < 2 {
        assert!(std::time::Instant::now() < deadline, "no retry counted");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(log.records(), 0);
}
