//! `sluice scan --config FILE`: start every server of a Sluice or MCP client
//! config, list what it offers the model (tools, prompts, resources, resource
//! templates, instructions), scan it for poisoning, stop it, and report.
//!
//! Exit code: 2 if anything is malicious, else 1 if anything is suspicious, else
//! 3 if a server (or one of its lists) could not be read, else 0.

mod collect;
mod load;
mod progress;
mod report;

use futures_util::StreamExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// Report formats of `--config`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OutFormat {
    Text,
    Json,
    Sarif,
}

impl OutFormat {
    pub(crate) fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "text" => OutFormat::Text,
            "json" => OutFormat::Json,
            "sarif" => OutFormat::Sarif,
            _ => return None,
        })
    }
}

pub(crate) struct Args {
    pub config: PathBuf,
    pub format: OutFormat,
    /// Per server: start, initialize and every list must fit in this.
    pub timeout: Duration,
    /// Servers read at once.
    pub jobs: usize,
    /// No progress on stderr.
    pub quiet: bool,
}

/// Exit code of an interrupted scan (128 + SIGINT).
const INTERRUPTED: u8 = 130;

/// `sluice scan --config FILE [--format text|json|sarif] [--timeout D] [--jobs N] [-q]`.
pub(crate) fn main(
    config: &std::path::Path,
    format: Option<&str>,
    timeout: Duration,
    jobs: u16,
    quiet: bool,
) -> ExitCode {
    let Some(format) = format.map_or(Some(OutFormat::Text), OutFormat::parse) else {
        eprintln!(
            "error: --format jsonl applies to --definitions and --outputs; --config takes text, json or sarif"
        );
        return ExitCode::from(3);
    };
    run(Args {
        config: config.to_path_buf(),
        format,
        timeout,
        jobs: usize::from(jobs),
        quiet,
    })
}

/// `30s`, `2m`, `500ms`, `1h`, or a number of seconds (for `--timeout`).
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration like 30s, 2m or 500ms"))?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        u => return Err(format!("unknown unit `{u}`: use ms, s, m or h")),
    };
    if !(secs > 0.0 && secs <= 86_400.0) {
        return Err("must be more than zero and at most a day".into());
    }
    Ok(Duration::from_secs_f64(secs))
}

pub(crate) fn run(args: Args) -> ExitCode {
    let tail = collect::StderrTail::default();
    init_logging(tail.clone());
    let loaded = load::load(&args.config, args.timeout);
    let file_text = std::fs::read_to_string(&args.config).unwrap_or_default();
    let config_name = args.config.display().to_string();
    let (format, entries) = match loaded {
        Ok(l) => (l.format, l.entries),
        Err(problems) => {
            for p in &problems {
                eprintln!("error: {p}");
            }
            if args.format != OutFormat::Text {
                // CI still gets a document saying why nothing was scanned.
                let run = report::Run {
                    config: config_name,
                    format: None,
                    servers: Vec::new(),
                };
                let mut doc = match args.format {
                    OutFormat::Json => report::json(&run),
                    _ => report::sarif(&run),
                };
                set_file_errors(&mut doc, args.format, &problems);
                println!("{}", serde_json::to_string_pretty(&doc).expect("JSON"));
            }
            return ExitCode::from(3);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::from(3);
        }
    };
    let pending = runtime.block_on(collect_all(entries, format, &file_text, &args, tail));
    let Some(pending) = pending else {
        return ExitCode::from(INTERRUPTED);
    };
    // The runtime (and any task left over) goes before the report is printed.
    runtime.shutdown_timeout(Duration::from_millis(200));
    let run = report::Run {
        config: config_name,
        format: Some(format),
        servers: report::analyze(pending),
    };
    let out = match args.format {
        OutFormat::Text => {
            let color = std::io::IsTerminal::is_terminal(&std::io::stdout())
                && std::env::var_os("NO_COLOR").is_none();
            report::text(&run, color)
        }
        OutFormat::Json => serde_json::to_string_pretty(&report::json(&run)).expect("JSON") + "\n",
        OutFormat::Sarif => {
            serde_json::to_string_pretty(&report::sarif(&run)).expect("JSON") + "\n"
        }
    };
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    if stdout
        .write_all(out.as_bytes())
        .and_then(|_| stdout.flush())
        .is_err()
    {
        return ExitCode::from(3);
    }
    ExitCode::from(run.exit_code())
}

/// Whole-file problems in a JSON or SARIF document.
fn set_file_errors(doc: &mut serde_json::Value, format: OutFormat, problems: &[String]) {
    use serde_json::json;
    match format {
        OutFormat::Json => {
            doc["errors"] = problems
                .iter()
                .map(|p| json!({"server": null, "error": p}))
                .collect();
            doc["exit_code"] = json!(3);
        }
        _ => {
            let run = &mut doc["runs"][0]["invocations"][0];
            run["executionSuccessful"] = json!(false);
            run["exitCode"] = json!(3);
            run["toolExecutionNotifications"] = problems
                .iter()
                .map(|p| json!({"level": "error", "message": {"text": p}}))
                .collect();
        }
    }
}

/// Logs stay quiet unless SLUICE_LOG asks for them (they would break the progress
/// bar); servers' stderr lines are kept to explain failures.
fn init_logging(tail: collect::StderrTail) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{EnvFilter, Layer};
    let filter = EnvFilter::try_from_env("SLUICE_LOG").unwrap_or_else(|_| EnvFilter::new("off"));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_filter(filter);
    let tail = tail.with_filter(
        tracing_subscriber::filter::Targets::new()
            .with_target("sluice::upstream::stderr", tracing::Level::TRACE),
    );
    let _ = tracing_subscriber::registry()
        .with(fmt)
        .with(tail)
        .try_init();
}

/// Reads every server, `jobs` at a time. `None` when interrupted (every server
/// started so far is stopped first).
async fn collect_all(
    entries: Vec<load::Entry>,
    format: load::Format,
    file_text: &str,
    args: &Args,
    tail: collect::StderrTail,
) -> Option<Vec<report::Pending>> {
    let (events_tx, events_rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(collect::answer_server_requests(events_rx));
    let env = collect::Env {
        client: sluice_upstream::http_client(),
        events: events_tx,
        health: load::quiet_health(),
        live: Default::default(),
        stderr: tail,
    };
    let live = env.live.clone();
    let runnable = entries
        .iter()
        .filter(|e| e.server.is_ok() && e.skipped.is_none())
        .count();
    let progress = Arc::new(progress::Progress::new(runnable, args.quiet));
    let ticker = progress.is_bar().then(|| {
        let p = progress.clone();
        tokio::spawn(async move {
            let mut t = tokio::time::interval(Duration::from_millis(120));
            loop {
                t.tick().await;
                p.tick();
            }
        })
    });
    let env = &env;
    let progress_ref = &progress;
    let work = futures_util::stream::iter(entries.into_iter().enumerate())
        .map(|(index, e)| async move {
            let line = load::key_line(file_text, &e.key, format);
            let transport = e.server.as_ref().ok().map(load::describe);
            let collected = match e.server {
                Err(why) => Err(format!("cannot be scanned: {why}")),
                Ok(_) if e.skipped.is_some() => Err(String::new()),
                Ok(server) => {
                    let k = progress_ref.begin(&e.name);
                    let c = collect::collect(index, server, args.timeout, env).await;
                    let outcome = match (&c.offer, c.errors.first()) {
                        (Some(o), None) => format!(
                            "ok, {} tool(s), {} prompt(s), {} resource(s), {} template(s) in {}",
                            o.tools.len(),
                            o.prompts.len(),
                            o.resources.len(),
                            o.resource_templates.len(),
                            report::human_short(c.elapsed)
                        ),
                        (Some(_), Some(e)) => format!("incomplete: {}", report::safe(e, 200)),
                        (None, e) => format!("failed: {}", report::safe(e.map_or("", |s| s), 200)),
                    };
                    progress_ref.end(k, &e.name, &outcome);
                    Ok(c)
                }
            };
            report::Pending {
                name: e.name,
                origin: e.origin,
                line,
                transport,
                skipped: e.skipped,
                collected,
            }
        })
        .buffered(args.jobs.max(1))
        .collect::<Vec<_>>();
    let result = tokio::select! {
        r = work => Some(r),
        _ = interrupted() => None,
    };
    if let Some(t) = ticker {
        t.abort();
    }
    progress.clear();
    if result.is_none() {
        eprintln!("interrupted: stopping the servers");
        let ups: Vec<_> = live.lock().unwrap().drain(..).collect();
        futures_util::future::join_all(ups.iter().map(|u| u.shutdown(Duration::from_millis(500))))
            .await;
    }
    // Nothing a server started outlives the scan.
    collect::reap_all(Duration::from_millis(500)).await;
    result
}

async fn interrupted() {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
