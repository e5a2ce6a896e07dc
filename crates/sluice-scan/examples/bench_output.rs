//! Times the detector on a small, typical tool output (a rough per-call cost).
//!
//!     cargo run --release -p sluice-scan --example bench_output

fn main() {
    let result = serde_json::json!({"content": [{"type": "text", "text": "ok"}]});
    let larger = serde_json::json!({"content": [{"type": "text", "text": "The weather in Paris is 18°C with light rain expected in the evening. ".repeat(20)}]});
    let large = serde_json::json!({"content": [{"type": "text", "text": "The weather in Paris is 18°C with light rain expected in the evening. ".repeat(570)}]});
    let ctx = sluice_scan::ScanContext::default();
    let _ = sluice_scan::scan_call_result(&result, &ctx); // compile the rules once
    for (name, r, n) in [
        ("2-byte output", &result, 20_000),
        ("1.4 KB output", &larger, 20_000),
        ("40 KB output", &large, 1_000),
    ] {
        let t = std::time::Instant::now();
        for _ in 0..n {
            std::hint::black_box(sluice_scan::scan_call_result(r, &ctx));
        }
        println!(
            "{name}: {:.2} µs per scan",
            t.elapsed().as_secs_f64() * 1e6 / n as f64
        );
    }
}
