//! Hand-written fixtures in the style of public attack write-ups that are *not* in the
//! development set (sidenote exfiltration, cross-tool shadowing, sleeper instructions,
//! full-schema poisoning, tag smuggling, ANSI hiding, fake-error outputs), and honest
//! tools and outputs with strong wording. A guard against tuning to the development set.

use std::path::Path;

use serde_json::Value;
use sluice_scan::{ScanContext, Verdict, scan_definition_record, scan_output_record};

fn load(name: &str) -> Vec<Value> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("fixture line is JSON"))
        .collect()
}

fn check(name: &str, scan: impl Fn(&Value) -> sluice_scan::Report) {
    let mut failures = Vec::new();
    for rec in load(name) {
        let label = rec["label"].as_str().unwrap_or_default();
        let r = scan(&rec);
        eprintln!(
            "{:<28} {:<9} -> {}",
            rec["id"].as_str().unwrap_or("?"),
            label,
            r.summary()
        );
        let ok = match label {
            "malicious" => r.verdict == Verdict::Malicious,
            _ => r.verdict != Verdict::Malicious,
        };
        if !ok {
            failures.push(format!("{} ({label}): {}", rec["id"], r.summary()));
        }
    }
    assert!(failures.is_empty(), "misjudged:\n{}", failures.join("\n"));
}

#[test]
fn handwritten_definitions() {
    check("definitions_heldout_style.jsonl", |r| {
        scan_definition_record(r, &ScanContext::default())
    });
}

#[test]
fn handwritten_outputs() {
    check("outputs_heldout_style.jsonl", |r| {
        scan_output_record(r, &ScanContext::default())
    });
}

/// `tools/list` captures of published servers (npm: @playwright/mcp 0.0.83,
/// @modelcontextprotocol/server-github 2025.4.8, -filesystem, -everything and -memory
/// 2026.8.31, -slack 2025.4.25, @notionhq/notion-mcp-server 2.5.2), none of which is in
/// the development set: none may be judged malicious, and at most one suspicious.
#[test]
fn published_servers_are_not_flagged() {
    let mut suspicious = Vec::new();
    for rec in load("benign_published_servers.jsonl") {
        let r = scan_definition_record(&rec, &ScanContext::default());
        assert_ne!(
            r.verdict,
            Verdict::Malicious,
            "{}: {}",
            rec["id"],
            r.summary()
        );
        if r.verdict == Verdict::Suspicious {
            suspicious.push(format!("{}: {}", rec["id"], r.summary()));
        }
    }
    assert!(
        suspicious.len() <= 1,
        "suspicious:\n{}",
        suspicious.join("\n")
    );
}
