//! The measured harness: recall and false-positive rate on the development set
//! (`shared/datasets/poisoning-dev/`, next to the repository), checked against the
//! committed baseline (`crates/sluice-scan/baseline.json`).
//!
//! The table goes straight to the process's stderr (not through the test harness's
//! capture), so it shows with or without `--nocapture`.
//! `SLUICE_SCAN_UPDATE_BASELINE=1 cargo test -p sluice-scan --test dataset_harness`
//! rewrites the baseline after a deliberate change.

use std::io::Write as _;
use std::path::Path;

use sluice_scan::{Baseline, EvalOptions, default_dataset_dir, evaluate_dataset};

fn say(text: &str) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(text.as_bytes());
    let _ = err.flush();
}

#[test]
fn poisoning_dev_recall_and_fpr_do_not_regress() {
    let dir = default_dataset_dir();
    assert!(
        dir.is_dir(),
        "the poisoning-dev dataset is missing: expected it at {} \
         (shared/datasets/poisoning-dev/ beside the repository; set SLUICE_POISONING_DEV to use another folder)",
        dir.display()
    );
    let report = evaluate_dataset(&dir, EvalOptions::default()).expect("dataset readable");
    say(&format!("\n{}", report.table()));
    let peer = evaluate_dataset(&dir, EvalOptions { peer_names: true }).expect("dataset readable");
    say(&format!(
        "{}\n",
        peer.table().lines().take(5).collect::<Vec<_>>().join("\n")
    ));

    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("baseline.json");
    let current = report.baseline();
    if std::env::var_os("SLUICE_SCAN_UPDATE_BASELINE").is_some() {
        let json = serde_json::to_string_pretty(&current).expect("baseline serialises");
        std::fs::write(&path, json + "\n").expect("baseline written");
        say(&format!("baseline written to {}\n", path.display()));
        return;
    }
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (create it with SLUICE_SCAN_UPDATE_BASELINE=1)",
            path.display()
        )
    });
    let baseline: Baseline = serde_json::from_str(&text).expect("baseline.json parses");
    let regressions = baseline.regressions(&current);
    assert!(
        regressions.is_empty(),
        "detection regressed against {}:\n{}\n\n{}",
        path.display(),
        regressions.join("\n"),
        report.table()
    );
    if current != baseline {
        say(
            "figures differ from baseline.json without regressing; refresh it with SLUICE_SCAN_UPDATE_BASELINE=1\n",
        );
    }
}

#[test]
fn missing_dataset_is_reported_clearly() {
    let err = evaluate_dataset(
        Path::new("/nonexistent/poisoning-dev"),
        EvalOptions::default(),
    )
    .expect_err("no dataset there");
    assert!(
        err.to_string().contains("poisoning-dev dataset not found"),
        "{err}"
    );
}

/// The JSONL modes (item 3 of the issue) on the development files: one line per record,
/// in order, with the documented keys.
#[test]
fn jsonl_modes_on_the_development_files() {
    use sluice_scan::{JsonlOptions, scan_definitions_jsonl, scan_outputs_jsonl};
    let dir = default_dataset_dir();
    assert!(
        dir.is_dir(),
        "the poisoning-dev dataset is missing: expected it at {}",
        dir.display()
    );
    for (file, outputs) in [
        ("malicious_tool_descriptions.jsonl", false),
        ("benign_tool_descriptions.jsonl", false),
        ("malicious_tool_outputs.jsonl", true),
    ] {
        let input = std::fs::read_to_string(dir.join(file)).expect("readable");
        let mut out = Vec::new();
        let summary = if outputs {
            scan_outputs_jsonl(input.as_bytes(), &mut out, &JsonlOptions::default())
        } else {
            scan_definitions_jsonl(input.as_bytes(), &mut out, &JsonlOptions::default())
        }
        .expect("scanned");
        let lines: Vec<serde_json::Value> = String::from_utf8(out)
            .expect("utf-8")
            .lines()
            .map(|l| serde_json::from_str(l).expect("JSON line"))
            .collect();
        assert_eq!(lines.len(), input.lines().count(), "{file}");
        assert_eq!(summary.errors, 0);
        for (i, (l, src)) in lines.iter().zip(input.lines()).enumerate() {
            let src: serde_json::Value = serde_json::from_str(src).expect("input JSON");
            let keys: Vec<&String> = l.as_object().expect("object").keys().collect();
            assert_eq!(keys, ["line", "id", "verdict", "score", "reasons"]);
            assert_eq!(l["line"], i + 1);
            assert_eq!(l["id"], src["id"]);
            let score = l["score"].as_f64().expect("score");
            assert!((0.0..=1.0).contains(&score));
            assert!(matches!(
                l["verdict"].as_str(),
                Some("clean" | "suspicious" | "malicious")
            ));
            for r in l["reasons"].as_array().expect("reasons") {
                assert!(r["rule"].is_string() && r["evidence"].is_string());
            }
        }
    }
}
