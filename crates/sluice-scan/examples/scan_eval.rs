//! Print the recall / false-positive table on the development set.
//!
//! `cargo run -p sluice-scan --features eval --example scan_eval [-- [--peer-names] [--items] [DIR]]`
//! `--items` also prints every item that is not judged as labelled (JSON lines).

use sluice_scan::{EvalOptions, Verdict, default_dataset_dir, evaluate_dataset};

fn main() {
    let mut opts = EvalOptions::default();
    let mut items = false;
    let mut all = false;
    let mut dir = default_dataset_dir();
    for a in std::env::args().skip(1) {
        match a.as_str() {
            "--peer-names" => opts.peer_names = true,
            "--items" => items = true,
            "--all" => all = true,
            other => dir = other.into(),
        }
    }
    match evaluate_dataset(&dir, opts) {
        Ok(report) => {
            print!("{}", report.table());
            if items || all {
                for it in &report.items {
                    let wrong = match it.set {
                        "benign_descriptions" => it.verdict != Verdict::Clean,
                        _ => it.verdict != Verdict::Malicious,
                    };
                    if all || wrong {
                        println!("{}", serde_json::to_string(it).unwrap_or_default());
                    }
                }
            }
        }
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(3);
        }
    }
}
