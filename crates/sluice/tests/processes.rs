//! Stdio upstreams never outlive the gateway: not on a clean stop, not on `kill -9`.

mod common;

use common::{Gateway, sibling_bin};
use std::time::{Duration, Instant};

/// Pids whose parent is `ppid`, from /proc.
fn children(ppid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the parenthesised command name: state, ppid, …
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let parent: u32 = after.split(' ').nth(1).unwrap().parse().unwrap();
        if parent == ppid {
            out.push(pid);
        }
    }
    out
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s[s.rfind(')').unwrap() + 2..].starts_with('Z'))
        .unwrap_or(false)
}

fn wait_gone(pids: &[u32]) -> Vec<u32> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left: Vec<u32> = pids.iter().copied().filter(|p| alive(*p)).collect();
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn config() -> String {
    let fx = sibling_bin("sluice-fixture");
    format!(
        "[[servers]]\nname = \"a\"\ncommand = \"{0}\"\n[[servers]]\nname = \"b\"\ncommand = \"{0}\"\n",
        fx.display()
    )
}

#[test]
fn kill_9_of_the_gateway_leaves_no_orphans() {
    let gw = Gateway::start("orphans", &config());
    let kids = children(gw.pid());
    assert_eq!(kids.len(), 2, "two stdio servers started: {kids:?}");
    let status = std::process::Command::new("kill")
        .args(["-9", &gw.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(
        wait_gone(&kids),
        Vec::<u32>::new(),
        "children outlived a killed gateway"
    );
}

#[test]
fn sigterm_stops_the_gateway_and_its_children() {
    let gw = Gateway::start("sigterm", &config());
    let kids = children(gw.pid());
    assert_eq!(kids.len(), 2);
    std::process::Command::new("kill")
        .args(["-TERM", &gw.pid().to_string()])
        .status()
        .unwrap();
    assert_eq!(wait_gone(&kids), Vec::<u32>::new());
    assert!(gw.logs().contains("shutting down") || !alive(gw.pid()));
}

/// Live processes whose command line contains `marker`.
fn processes_with(marker: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        if String::from_utf8_lossy(&cmd).contains(marker) && alive(pid) {
            out.push(pid);
        }
    }
    out
}

fn marker(tag: &str) -> String {
    format!(
        "{tag}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

fn one_server(name: &str, marker: &str, extra: &str) -> String {
    format!(
        "[health]\ninterval = \"1h\"\n[[servers]]\nname = \"{name}\"\ncommand = \"{}\"\nargs = [\"--name\", \"{marker}\"]\n{extra}",
        sibling_bin("sluice-fixture").display()
    )
}

#[tokio::test]
async fn a_hundred_crash_restart_cycles_leak_no_process() {
    let mark = marker("crashloop");
    // The breaker would (rightly) stop calling a server that crashes this often.
    let gw = Gateway::start(
        "crashloop",
        &one_server(
            "crashy",
            &mark,
            "[servers.circuit_breaker]\nconsecutive_failures = 1000\nmin_calls = 1000\n",
        ),
    );
    let mut c = common::Client::new(&gw.url);
    c.initialize().await;
    for cycle in 0..100 {
        let r = c
            .call(
                "tools/call",
                serde_json::json!({"name": "crashy__crash", "arguments": {}}),
            )
            .await;
        assert_eq!(r["isError"], true, "cycle {cycle}: {r}");
        // Wait for the restart before the next crash.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let r = c
                .call(
                    "tools/call",
                    serde_json::json!({"name": "crashy__echo", "arguments": {"text": "up"}}),
                )
                .await;
            if r["content"][0]["text"] == "up" {
                break;
            }
            assert!(Instant::now() < deadline, "cycle {cycle}: no restart: {r}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let procs = processes_with(&mark);
    assert_eq!(
        procs.len(),
        1,
        "exactly the current server runs after 100 crashes: {procs:?}"
    );
    let body = common::http()
        .get(format!("{}/admin/servers", gw.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(v["servers"][0]["restarts"].as_u64().unwrap() >= 100, "{v}");
    drop(gw);
    assert_eq!(wait_gone(&procs), Vec::<u32>::new());
}

#[tokio::test]
async fn servers_are_recycled_after_max_calls_without_failing_calls() {
    let mark = marker("recycle");
    let gw = Gateway::start("recycle", &one_server("fx", &mark, "max_calls = 3\n"));
    let mut c = common::Client::new(&gw.url);
    c.initialize().await;
    let mut pids = std::collections::HashSet::new();
    for i in 0..10 {
        let r = c
            .call(
                "tools/call",
                serde_json::json!({"name": "fx__echo", "arguments": {"text": format!("{i}")}}),
            )
            .await;
        assert_eq!(
            r["content"][0]["text"],
            format!("{i}"),
            "call {i} succeeded across recycling"
        );
        pids.extend(processes_with(&mark));
    }
    // Recycling runs beside the calls: give a loaded machine time to finish it.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut i = 10;
    while pids.len() < 3 {
        assert!(
            Instant::now() < deadline,
            "recycled at least twice: {pids:?}"
        );
        let r = c
            .call(
                "tools/call",
                serde_json::json!({"name": "fx__echo", "arguments": {"text": "more"}}),
            )
            .await;
        assert_eq!(
            r["content"][0]["text"], "more",
            "call {i} succeeded across recycling"
        );
        pids.extend(processes_with(&mark));
        i += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while processes_with(&mark).len() > 1 {
        assert!(
            Instant::now() < deadline,
            "old servers were not stopped: {:?}",
            processes_with(&mark)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn per_session_isolation_gives_each_session_its_own_server() {
    let mark = marker("isolated");
    let gw = Gateway::start(
        "isolated",
        // A session-era server: its state lives in its session (a 2026 server keeps none).
        &one_server("fx", &mark, "isolation = \"per-session\"\n").replace(
            "args = [\"--name\",",
            "args = [\"--era\", \"legacy\", \"--name\",",
        ),
    );
    let mut a = common::Client::new(&gw.url);
    a.initialize().await;
    let mut b = common::Client::new(&gw.url);
    b.initialize().await;
    // State set by A's server is not seen by B's.
    let r = call(&a, "toggle_dynamic_tool").await;
    assert!(r.body.contains("now listed"), "{}", r.body);
    let r = call(&a, "dynamic_tool").await;
    assert!(r.body.contains("dynamic tool called"), "{}", r.body);
    let r = call(&b, "dynamic_tool").await;
    assert!(
        r.body.contains("Unknown tool"),
        "B's own server never enabled it: {}",
        r.body
    );
    // One shared instance plus one per session.
    assert_eq!(
        processes_with(&mark).len(),
        3,
        "{:?}",
        processes_with(&mark)
    );
    // Ending A stops A's server.
    let r = common::Client::send(
        a.http
            .delete(&a.url)
            .header("mcp-session-id", a.session.clone().unwrap()),
    )
    .await;
    assert_eq!(r.status, 200);
    let deadline = Instant::now() + Duration::from_secs(30);
    while processes_with(&mark).len() != 2 {
        assert!(
            Instant::now() < deadline,
            "A's server was not stopped: {:?}",
            processes_with(&mark)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn call(c: &common::Client, tool: &str) -> common::Reply {
    c.request(
        1,
        "tools/call",
        serde_json::json!({"name": format!("fx__{tool}"), "arguments": {}}),
    )
    .await
}
