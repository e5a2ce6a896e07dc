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
    let deadline = Instant::now() + Duration::from_secs(10);
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
