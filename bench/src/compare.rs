//! `sluice-bench compare`: two `sluice` binaries (an old and a new revision)
//! in front of the same upstream, measured in one run with the same load and
//! durations. Every row runs both gateways back to back, the old one first in
//! even rounds and the new one first in odd rounds (A B, B A, A B, …), so
//! drift on a shared machine hits both sides alike; a row shows the medians
//! of its rounds and the spread of the per-round ratios.
//!
//! Rows: `tools/call` of the fixture's `noop` through one hop, per upstream
//! transport (one HTTP `sluice-fixture` shared by both gateways, or a stdio
//! child of each gateway from the same fixture binary), per protocol era
//! (2025-11-25 session, 2026-07-28 stateless) and per concurrency.

use crate::client::{Era, Target};
use crate::load::{self, LoadResult};
use crate::run::{MEMORY, Service, machine, sluice_config, smoke_era, start_sluice_bin};
use crate::stats::{self, Probe};
use crate::{SpecArgs, exe_dir};
use anyhow::{Context, anyhow, bail};
use clap::Args;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;
use tokio::process::Command;

#[derive(Args)]
pub(crate) struct CompareArgs {
    /// The old gateway, as `NAME=PATH` to a `sluice` binary (NAME labels its columns).
    #[arg(long)]
    pub old: String,
    /// The new gateway, as `NAME=PATH`.
    #[arg(long)]
    pub new: String,
    /// The upstream both gateways call (default: `sluice-fixture` next to this binary).
    #[arg(long)]
    pub fixture: Option<PathBuf>,
    /// Concurrency levels (clients; in the session era one session each).
    #[arg(long, value_delimiter = ',', default_value = "1,16")]
    pub concurrency: Vec<usize>,
    /// Protocol eras of the clients: `session` (2025-11-25), `stateless` (2026-07-28).
    #[arg(long, value_delimiter = ',', default_value = "session,stateless")]
    pub eras: Vec<String>,
    /// Upstream transports: `http` (one fixture for both gateways), `stdio`
    /// (a fixture child per gateway).
    #[arg(long, value_delimiter = ',', default_value = "http,stdio")]
    pub upstreams: Vec<String>,
    #[command(flatten)]
    pub spec: SpecArgs,
    /// Rounds per row; each round runs both gateways once. Even, so each
    /// side goes first equally often.
    #[arg(long, default_value_t = 6)]
    pub repeat: usize,
    /// A row whose new/old CPU per call exceeds 1 + this, and whose per-round
    /// ratios all exceed 1, is reported as costing more.
    #[arg(long, default_value_t = 0.05)]
    pub threshold: f64,
    /// Where logs and generated configs go (default: a fresh temp directory;
    /// the gateways' audit logs are deleted at the end).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
}

/// One side of the comparison.
struct Side {
    name: String,
    binary: PathBuf,
}

fn side(spec: &str) -> anyhow::Result<Side> {
    let (name, path) = spec
        .split_once('=')
        .ok_or_else(|| anyhow!("wants NAME=PATH, got `{spec}`"))?;
    let binary = PathBuf::from(path);
    if !binary.is_file() {
        bail!("{} is not a file", binary.display());
    }
    Ok(Side {
        name: name.to_string(),
        binary,
    })
}

/// A gateway under test: its address and what is probed.
struct Gateway {
    target: Arc<Target>,
    gw: Probe,
    up: Option<Probe>,
}

/// One row of the comparison: both sides' runs, round by round.
#[derive(Default)]
pub(crate) struct Pair {
    pub label: String,
    pub concurrency: usize,
    pub old: Vec<LoadResult>,
    pub new: Vec<LoadResult>,
    pub failure: Option<String>,
}

/// The median of `v` (the mean of the middle two for an even count).
pub(crate) fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

fn median_of(runs: &[LoadResult], f: impl Fn(&LoadResult) -> Option<f64>) -> Option<f64> {
    median(&mut runs.iter().filter_map(f).collect::<Vec<_>>())
}

impl Pair {
    pub(crate) fn cpu(runs: &[LoadResult]) -> Option<f64> {
        median_of(runs, |r| r.gw_cpu_us())
    }

    /// Median new CPU per call over median old.
    pub(crate) fn ratio(&self) -> Option<f64> {
        let (o, n) = (Pair::cpu(&self.old)?, Pair::cpu(&self.new)?);
        (o > 0.0).then(|| n / o)
    }

    /// new/old CPU per call of each round (the two runs of a round ran back to back).
    pub(crate) fn round_ratios(&self) -> Vec<f64> {
        self.old
            .iter()
            .zip(&self.new)
            .filter_map(|(o, n)| Some(n.gw_cpu_us()? / o.gw_cpu_us().filter(|o| *o > 0.0)?))
            .collect()
    }

    /// More CPU per call: the median ratio above 1 + `threshold` and every
    /// round's ratio above 1 (so not one noisy round's doing).
    pub(crate) fn costs_more(&self, threshold: f64) -> bool {
        let rounds = self.round_ratios();
        self.ratio().is_some_and(|r| r > 1.0 + threshold)
            && !rounds.is_empty()
            && rounds.iter().all(|r| *r > 1.0)
    }
}

fn f1(v: Option<f64>) -> String {
    v.map_or_else(|| "–".into(), |v| format!("{v:.1}"))
}

fn f0(v: Option<f64>) -> String {
    v.map_or_else(|| "–".into(), |v| format!("{v:.0}"))
}

/// The comparison as a Markdown table.
pub(crate) fn render(old: &str, new: &str, pairs: &[Pair]) -> String {
    let mut out = format!(
        "| row | c | CPU µs/call {old} | CPU µs/call {new} | new/old | per-round new/old (min–max) | calls/s {old} | calls/s {new} | p50 µs {old} | p50 µs {new} | of which system µs/call {old} / {new} | upstream CPU µs/call {old} / {new} | other load (cores) | errors |\n\
         |---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n"
    );
    for p in pairs {
        if let Some(f) = &p.failure {
            let _ = writeln!(
                out,
                "| {} | {} | failed: {} | | | | | | | | | | | |",
                p.label,
                p.concurrency,
                f.replace('|', "/")
            );
            continue;
        }
        let rounds = p.round_ratios();
        let spread = match (
            rounds.iter().copied().reduce(f64::min),
            rounds.iter().copied().reduce(f64::max),
        ) {
            (Some(lo), Some(hi)) => format!("{lo:.2}–{hi:.2}"),
            _ => "–".into(),
        };
        let all: Vec<LoadResult> = p.old.iter().chain(&p.new).cloned().collect();
        let errors: u64 = all.iter().map(|r| r.errors).sum();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} / {} | {} / {} | {} | {} |",
            p.label,
            p.concurrency,
            f1(Pair::cpu(&p.old)),
            f1(Pair::cpu(&p.new)),
            p.ratio().map_or_else(|| "–".into(), |r| format!("{r:.3}")),
            spread,
            f0(median_of(&p.old, |r| Some(r.calls_per_sec()))),
            f0(median_of(&p.new, |r| Some(r.calls_per_sec()))),
            f0(median_of(&p.old, |r| Some(r.latency.p50 as f64 / 1000.0))),
            f0(median_of(&p.new, |r| Some(r.latency.p50 as f64 / 1000.0))),
            f1(median_of(&p.old, |r| r.gw_sys_cpu_us())),
            f1(median_of(&p.new, |r| r.gw_sys_cpu_us())),
            f1(median_of(&p.old, |r| r.up_cpu_us())),
            f1(median_of(&p.new, |r| r.up_cpu_us())),
            median_of(&all, |r| r.other_cores()).map_or_else(|| "–".into(), |v| format!("{v:.2}")),
            errors,
        );
    }
    out
}

/// The verdict lines under the table.
pub(crate) fn verdict(pairs: &[Pair], threshold: f64) -> String {
    let more: Vec<String> = pairs
        .iter()
        .filter(|p| p.costs_more(threshold))
        .map(|p| {
            format!(
                "{} c={} ({:+.1} %)",
                p.label,
                p.concurrency,
                (p.ratio().unwrap_or(1.0) - 1.0) * 100.0
            )
        })
        .collect();
    let failed = pairs.iter().filter(|p| p.failure.is_some()).count();
    let mut out = String::new();
    if more.is_empty() {
        let _ = writeln!(
            out,
            "No row costs more CPU per call in the new revision (threshold: median ratio > {:.2} with every round's ratio > 1).",
            1.0 + threshold
        );
    } else {
        let _ = writeln!(
            out,
            "More CPU per call in the new revision (median ratio > {:.2}, every round > 1): {}.",
            1.0 + threshold,
            more.join("; ")
        );
    }
    if failed > 0 {
        let _ = writeln!(out, "{failed} row(s) failed; see above.");
    }
    out
}

async fn start_gateway(
    name: &str,
    side: &Side,
    upstream: &str,
    logs: &Path,
    fx_probe: Option<Probe>,
    stdio: bool,
) -> anyhow::Result<(Service, Gateway)> {
    // Both gateways run from one directory: each needs its own audit log.
    let config = format!(
        "[audit]\npath = \"{name}.audit.jsonl\"\n{}",
        sluice_config(upstream, MEMORY)
    );
    let s = start_sluice_bin(name, &side.binary, logs, &config).await?;
    let up = if stdio {
        stats::children(s.pid).into_iter().next().map(Probe::Pid)
    } else {
        fx_probe
    };
    let g = Gateway {
        target: Arc::new(Target::parse(&s.url, &[])?),
        gw: Probe::Pid(s.pid),
        up,
    };
    Ok((s, g))
}

pub(crate) async fn compare(a: CompareArgs) -> anyhow::Result<()> {
    let t0 = Instant::now();
    let old = side(&a.old).context("--old")?;
    let new = side(&a.new).context("--new")?;
    let fixture = a
        .fixture
        .clone()
        .unwrap_or_else(|| exe_dir().join("sluice-fixture"));
    if !fixture.is_file() {
        bail!(
            "{} not found; build with `cargo build --release -p sluice-testkit`",
            fixture.display()
        );
    }
    let eras: Vec<Era> = a
        .eras
        .iter()
        .map(|e| Era::parse(e))
        .collect::<anyhow::Result<_>>()?;
    for u in &a.upstreams {
        if u != "http" && u != "stdio" {
            bail!("unknown upstream `{u}` (http, stdio)");
        }
    }
    let logs = match &a.work_dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("sluice-bench-compare-{}", std::process::id())),
    };
    std::fs::create_dir_all(&logs)?;
    let logs = logs.canonicalize()?;
    eprintln!("logs and configs: {}", logs.display());

    let mut services: Vec<Service> = Vec::new();
    let result = async {
        let mut fx_cmd = Command::new(&fixture);
        fx_cmd.args(["http", "--listen", "127.0.0.1:0"]);
        let fx = Service::start("fixture", fx_cmd, &logs).await?;
        let fx_probe = Some(Probe::Pid(fx.pid));
        let http_upstream = format!("url = \"{}\"", fx.url);
        let stdio_upstream = format!("command = {:?}", fixture.display().to_string());
        services.push(fx);

        // What each row runs: (index into `pairs`, era, index into `gateways`).
        let mut gateways: Vec<(Gateway, Gateway)> = Vec::new();
        let mut pairs: Vec<Pair> = Vec::new();
        let mut plan: Vec<(usize, Era, usize)> = Vec::new();
        for u in &a.upstreams {
            let stdio = u == "stdio";
            let upstream = if stdio {
                &stdio_upstream
            } else {
                &http_upstream
            };
            let (so, go) =
                start_gateway(&format!("old-{u}"), &old, upstream, &logs, fx_probe, stdio)
                    .await
                    .with_context(|| format!("starting {} ({u} upstream)", old.name))?;
            services.push(so);
            let (sn, gn) =
                start_gateway(&format!("new-{u}"), &new, upstream, &logs, fx_probe, stdio)
                    .await
                    .with_context(|| format!("starting {} ({u} upstream)", new.name))?;
            services.push(sn);
            let gi = gateways.len();
            gateways.push((go, gn));
            for &era in &eras {
                let label = format!(
                    "tools/call, {} upstream, {}",
                    if stdio { "stdio" } else { "HTTP" },
                    era.describe()
                );
                let mut failure = None;
                for (who, g) in [(&old.name, &gateways[gi].0), (&new.name, &gateways[gi].1)] {
                    if let Err(e) = smoke_era(&g.target, "fx__noop", era).await {
                        eprintln!("{label} [{who}]: smoke test failed: {e:#}");
                        failure = Some(format!("smoke test of {who}: {e:#}"));
                    }
                }
                for &c in &a.concurrency {
                    plan.push((pairs.len(), era, gi));
                    pairs.push(Pair {
                        label: label.clone(),
                        concurrency: c,
                        failure: failure.clone(),
                        ..Pair::default()
                    });
                }
            }
        }

        for round in 0..a.repeat.max(1) {
            for &(k, era, gi) in &plan {
                if pairs[k].failure.is_some() {
                    continue;
                }
                let (go, gn) = &gateways[gi];
                let c = pairs[k].concurrency;
                let mut spec = a.spec.spec(c, "fx__noop", "{}");
                spec.era = era;
                let order = if round % 2 == 0 {
                    [(false, go), (true, gn)]
                } else {
                    [(true, gn), (false, go)]
                };
                for (is_new, g) in order {
                    let who = if is_new { &new.name } else { &old.name };
                    eprint!(
                        "round {}/{} {} c={c} [{who}] … ",
                        round + 1,
                        a.repeat.max(1),
                        pairs[k].label
                    );
                    match load::run(g.target.clone(), &spec, Some(g.gw), g.up).await {
                        Ok(r) => {
                            eprintln!(
                                "{:.0} calls/s, {} µs/call, {} errors{}",
                                r.calls_per_sec(),
                                f1(r.gw_cpu_us()),
                                r.errors,
                                r.first_error
                                    .as_deref()
                                    .map(|e| format!(" (first: {e})"))
                                    .unwrap_or_default()
                            );
                            if r.calls == 0 {
                                pairs[k].failure = Some(format!(
                                    "no call completed for {who} ({} errors)",
                                    r.errors
                                ));
                            } else if is_new {
                                pairs[k].new.push(r);
                            } else {
                                pairs[k].old.push(r);
                            }
                        }
                        Err(e) => {
                            eprintln!("failed: {e:#}");
                            pairs[k].failure = Some(format!("{who}: {e:#}"));
                        }
                    }
                    if pairs[k].failure.is_some() {
                        break;
                    }
                }
            }
        }
        anyhow::Ok(pairs)
    }
    .await;
    for s in services.into_iter().rev() {
        s.stop().await;
    }
    // The audit logs grow by hundreds of MB per run and nothing reads them.
    if let Ok(dir) = std::fs::read_dir(&logs) {
        for e in dir.flatten() {
            if e.file_name().to_string_lossy().ends_with(".audit.jsonl") {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    let pairs = result?;

    let mode = match a.spec.calls {
        Some(n) => format!("{n} calls per run"),
        None => format!("{:?} per run", a.spec.duration),
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nsluice-bench compare: {}; old {} ({}), new {} ({}); upstream {} (the same binary for both); \
         {mode} after {:?} warm-up, {} round(s) per row, old and new back to back in each round \
         (alternating which goes first); medians of the rounds; tool `noop`; whole run {:.0} s\n",
        machine(),
        old.name,
        old.binary.display(),
        new.name,
        new.binary.display(),
        fixture.display(),
        a.spec.warmup,
        a.repeat.max(1),
        t0.elapsed().as_secs_f64()
    );
    out.push_str(&render(&old.name, &new.name, &pairs));
    out.push('\n');
    out.push_str(&verdict(&pairs, a.threshold));
    print!("{out}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn run(calls: u64, cpu_ms: u64) -> LoadResult {
        LoadResult {
            calls,
            elapsed: Duration::from_secs(1),
            gw_cpu: Some(Duration::from_millis(cpu_ms)),
            ..LoadResult::default()
        }
    }

    #[test]
    fn medians() {
        assert_eq!(median(&mut []), None);
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), Some(2.5));
    }

    #[test]
    fn ratios_and_verdict() {
        // old: 100, 110, 90 µs/call; new: 110, 120, 99 µs/call.
        let p = Pair {
            label: "x".into(),
            concurrency: 1,
            old: vec![run(1000, 100), run(1000, 110), run(1000, 90)],
            new: vec![run(1000, 110), run(1000, 120), run(1000, 99)],
            failure: None,
        };
        assert!((p.ratio().unwrap() - 1.1).abs() < 1e-9);
        assert_eq!(p.round_ratios().len(), 3);
        assert!(p.costs_more(0.05));
        assert!(!p.costs_more(0.2));
        // One round in the other direction: noise, not a cost.
        let q = Pair {
            new: vec![run(1000, 110), run(1000, 120), run(1000, 85)],
            ..p
        };
        assert!(!q.costs_more(0.05));
        let text = render("a", "b", std::slice::from_ref(&q));
        assert!(
            text.contains("| x | 1 | 100.0 | 110.0 | 1.100 | 0.94–1.10 |"),
            "{text}"
        );
        assert!(verdict(&[q], 0.05).starts_with("No row"));
    }
}
