//! Run the JSONL modes on a file: what `sluice scan --definitions|--outputs FILE --format jsonl` prints.
//!
//! `cargo run -p sluice-scan --example scan_jsonl -- --definitions FILE.jsonl`
//! `cargo run -p sluice-scan --example scan_jsonl -- --outputs FILE.jsonl`
//! Exit code: 0 clean, 1 suspicious, 2 malicious, 3 could not scan.

use std::io::BufReader;

use sluice_scan::{JsonlOptions, scan_definitions_jsonl, scan_outputs_jsonl};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut opts = JsonlOptions::default();
    let mut mode = None;
    let mut file = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--definitions" | "--outputs" => {
                mode = Some(a.clone());
                file = it.next().cloned();
            }
            "--peer-names" => opts.peer_names = true,
            "--known-tool" => opts.context.known_tools.extend(it.next().cloned()),
            "--format" => {
                let _ = it.next();
            }
            other => {
                eprintln!("unknown argument {other}");
                std::process::exit(3);
            }
        }
    }
    let (Some(mode), Some(file)) = (mode, file) else {
        eprintln!(
            "usage: scan_jsonl --definitions|--outputs FILE.jsonl [--peer-names] [--known-tool NAME]..."
        );
        std::process::exit(3);
    };
    let input = match std::fs::File::open(&file) {
        Ok(f) => BufReader::new(f),
        Err(e) => {
            eprintln!("{file}: {e}");
            std::process::exit(3);
        }
    };
    let stdout = std::io::stdout().lock();
    let result = if mode == "--definitions" {
        scan_definitions_jsonl(input, stdout, &opts)
    } else {
        scan_outputs_jsonl(input, stdout, &opts)
    };
    match result {
        Ok(summary) => std::process::exit(summary.exit_code()),
        Err(e) => {
            eprintln!("{file}: {e}");
            std::process::exit(3);
        }
    }
}
