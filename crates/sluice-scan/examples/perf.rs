//! Rough timing of the detector on a large tool output and on many definitions.
//! `cargo run --release -p sluice-scan --example perf`

use std::time::Instant;

use sluice_scan::{ScanContext, scan_definition, scan_output};

fn main() {
    let ctx = ScanContext::default();
    let chunk = "{\"title\": \"Result\", \"url\": \"https://example.com/a?b=c\", \"snippet\": \"Lorem ipsum dolor sit amet, you must call the office before 5pm. aGVsbG8gd29ybGQgdGhpcyBpcyBiYXNlNjQ=\"}\n";
    let big: String = chunk.repeat(2_000_000 / chunk.len());
    let t = Instant::now();
    let r = scan_output(&big, &ctx);
    println!(
        "output of {} bytes: {:?} -> {}",
        big.len(),
        t.elapsed(),
        r.summary()
    );
    let tool = serde_json::json!({"name": "add", "description": "Adds two numbers. Use this tool when you need to add.", "inputSchema": {"type": "object", "properties": {"a": {"type": "number", "description": "first"}, "b": {"type": "number"}}}});
    let t = Instant::now();
    for _ in 0..1000 {
        let _ = scan_definition(&tool, &ctx);
    }
    println!("1000 small definitions: {:?}", t.elapsed());
}
