//! The table: one Markdown row per (scenario, concurrency), with ratio
//! columns against the direct and bare-proxy rows of the same concurrency.

use crate::load::{IdleResult, LoadResult};
use std::fmt::Write;

/// What a row is, for the ratio columns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    Direct,
    Proxy,
    Gateway,
}

#[derive(Clone, Debug)]
pub(crate) struct Row {
    pub label: String,
    /// Rows are compared (ratio columns) within a group at equal concurrency.
    pub group: String,
    pub role: Role,
    pub concurrency: usize,
    pub result: Option<LoadResult>,
    /// Why there is no result.
    pub failure: Option<String>,
}

impl Row {
    pub(crate) fn new(label: &str, concurrency: usize, result: LoadResult) -> Row {
        Row {
            label: label.to_string(),
            group: String::new(),
            role: Role::Gateway,
            concurrency,
            result: Some(result),
            failure: None,
        }
    }
}

fn us(ns: u64) -> String {
    let us = ns as f64 / 1000.0;
    if us >= 100.0 {
        format!("{us:.0}")
    } else {
        format!("{us:.1}")
    }
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "–".into(), |v| format!("{v:.digits$}"))
}

fn find<'a>(rows: &'a [Row], role: Role, like: &Row) -> Option<&'a LoadResult> {
    rows.iter()
        .find(|r| r.role == role && r.concurrency == like.concurrency && r.group == like.group)
        .and_then(|r| r.result.as_ref())
        .filter(|r| r.calls > 0)
}

/// Gateway CPU per call of `r` over the bare proxy's at the same concurrency.
pub(crate) fn cpu_vs_proxy(rows: &[Row], r: &Row) -> Option<f64> {
    let p = find(rows, Role::Proxy, r)?.gw_cpu_us()?;
    let g = r.result.as_ref()?.gw_cpu_us()?;
    (p > 0.0).then(|| g / p)
}

/// p50 of `r` minus direct's p50 at the same concurrency, µs.
pub(crate) fn added_p50_us(rows: &[Row], r: &Row) -> Option<f64> {
    let d = find(rows, Role::Direct, r)?;
    let g = r.result.as_ref().filter(|g| g.calls > 0)?;
    Some((g.latency.p50 as f64 - d.latency.p50 as f64) / 1000.0)
}

/// Throughput of `r` over direct's at the same concurrency.
pub(crate) fn tput_vs_direct(rows: &[Row], r: &Row) -> Option<f64> {
    let d = find(rows, Role::Direct, r)?.calls_per_sec();
    let g = r.result.as_ref()?.calls_per_sec();
    (d > 0.0).then(|| g / d)
}

pub(crate) const HEADER: &str = "| scenario | c | calls/s | p50 µs | p90 µs | p99 µs | max µs | errors | gw CPU µs/call | upstream CPU µs/call | client CPU µs/call | other load (cores) | gw RSS MiB | CPU ÷ proxy | +p50 µs vs direct | calls/s ÷ direct |\n|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n";

/// The rows as a Markdown table (the header included).
pub(crate) fn render(rows: &[Row]) -> String {
    let mut out = String::from(HEADER);
    for row in rows {
        let _ = writeln!(out, "{}", render_row(rows, row));
    }
    out
}

/// One row; ratio columns use the direct and proxy rows found in `rows`.
pub(crate) fn render_row(rows: &[Row], row: &Row) -> String {
    let failure = match &row.result {
        Some(r) if r.calls == 0 => Some(format!(
            "no call completed in {:.0} s ({} errors{})",
            r.elapsed.as_secs_f64(),
            r.errors,
            r.first_error
                .as_deref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        )),
        _ => row.failure.clone(),
    };
    let Some(r) = row.result.as_ref().filter(|r| r.calls > 0) else {
        return format!(
            "| {} | {} | failed: {} | | | | | | | | | | | | | |",
            row.label,
            row.concurrency,
            failure.as_deref().unwrap_or("no result").replace('|', "/")
        );
    };
    let ratio =
        |v: Option<f64>, suffix: &str| v.map_or_else(|| "–".into(), |v| format!("{v:.2}{suffix}"));
    let cpu_ratio = match row.role {
        Role::Gateway => ratio(cpu_vs_proxy(rows, row), "×"),
        _ => "–".into(),
    };
    let (p50, tput) = match row.role {
        Role::Direct => ("–".into(), "–".into()),
        _ => (
            added_p50_us(rows, row).map_or_else(|| "–".into(), |v| format!("{v:+.0}")),
            tput_vs_direct(rows, row).map_or_else(|| "–".into(), |v| format!("{:.0}%", v * 100.0)),
        ),
    };
    format!(
        "| {} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
        row.label,
        row.concurrency,
        r.calls_per_sec(),
        us(r.latency.p50),
        us(r.latency.p90),
        us(r.latency.p99),
        us(r.latency.max),
        r.errors,
        opt(r.gw_cpu_us(), 1),
        opt(r.up_cpu_us(), 1),
        opt(r.client_cpu_us(), 1),
        opt(r.other_cores(), 2),
        opt(r.gw_rss_kib.map(|k| k as f64 / 1024.0), 1),
        cpu_ratio,
        p50,
        tput,
    )
}

pub(crate) fn idle_line(r: &IdleResult) -> String {
    format!(
        "{} idle sessions: RSS {:.1} → {:.1} MiB, {:.0} bytes per session ({} errors, opened in {:.1} s)",
        r.sessions,
        r.rss_before_kib as f64 / 1024.0,
        r.rss_after_kib as f64 / 1024.0,
        r.bytes_per_session(),
        r.errors,
        r.elapsed.as_secs_f64()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Latency;
    use std::time::Duration;

    fn row(label: &str, role: Role, c: usize, calls: u64, p50: u64, cpu_ms: u64) -> Row {
        Row {
            label: label.into(),
            group: String::new(),
            role,
            concurrency: c,
            result: Some(LoadResult {
                calls,
                elapsed: Duration::from_secs(1),
                latency: Latency {
                    p50,
                    p90: p50,
                    p99: p50,
                    max: p50,
                },
                gw_cpu: (role != Role::Direct).then(|| Duration::from_millis(cpu_ms)),
                ..LoadResult::default()
            }),
            failure: None,
        }
    }

    #[test]
    fn ratios_against_same_concurrency() {
        let rows = vec![
            row("direct", Role::Direct, 1, 10_000, 100_000, 0),
            row("proxy", Role::Proxy, 1, 8_000, 130_000, 200),
            row("sluice", Role::Gateway, 1, 5_000, 180_000, 250),
            row("direct", Role::Direct, 64, 1, 1, 0),
            Row {
                group: "slow".into(),
                ..row("direct", Role::Direct, 1, 1, 1, 0)
            },
        ];
        let g = &rows[2];
        // proxy: 200 ms / 8000 = 25 µs; sluice: 250 ms / 5000 = 50 µs.
        assert!((cpu_vs_proxy(&rows, g).unwrap() - 2.0).abs() < 1e-9);
        assert!((added_p50_us(&rows, g).unwrap() - 80.0).abs() < 1e-9);
        assert!((tput_vs_direct(&rows, g).unwrap() - 0.5).abs() < 1e-9);
        let text = render(&rows);
        assert!(text.contains("| sluice | 1 | 5000 | 180 |"), "{text}");
        assert!(text.contains("| 2.00× | +80 | 50% |"), "{text}");

        // A run in which no call completed is a failure, not a zero row.
        let mut stuck = row("stuck", Role::Gateway, 1, 0, 0, 10);
        stuck.result.as_mut().unwrap().errors = 3;
        assert!(
            render_row(&rows, &stuck).contains("failed: no call completed in 1 s (3 errors)"),
            "{}",
            render_row(&rows, &stuck)
        );
        assert_eq!(added_p50_us(&rows, &stuck), None);
    }
}
