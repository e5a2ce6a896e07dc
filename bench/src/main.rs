//! `sluice-bench`: Sluice's benchmark harness.
//!
//! ```text
//! sluice-bench all   [--concurrency 1,16,64,256] [--duration 5s] [--warmup 1s] [--sessions 10000]
//!                    [--external bench/contextforge.sh]      # the whole table, one run
//! sluice-bench compare --old NAME=PATH --new NAME=PATH [--concurrency 1,16] [--repeat 5]
//!                    [--eras session,stateless] [--upstreams http,stdio]   # two gateways, A/B
//! sluice-bench load  --url URL [-c N] [--duration 5s | --calls N] [--tool noop] [--pid P] ...
//! sluice-bench idle  --url URL --pid P [--sessions 10000]
//! sluice-bench proxy --upstream URL [--listen 127.0.0.1:0]   # the bare proxy hop
//! ```
//!
//! See docs/performance.md for the method and the latest table.

mod client;
mod compare;
mod load;
mod proxy;
mod run;
mod stats;
mod table;

use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "sluice-bench", version, about = "Sluice's benchmark harness")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start every scenario on loopback and print the whole table.
    // A later `--duration 5s` overrides an earlier one (bench/run.sh passes its defaults first).
    #[command(args_override_self = true)]
    All(run::AllArgs),
    /// Two `sluice` binaries in front of the same upstream, interleaved: CPU
    /// per call old against new, per row.
    #[command(args_override_self = true)]
    Compare(compare::CompareArgs),
    /// Drive N concurrent MCP clients against one URL and print one row.
    Load(LoadArgs),
    /// Open many idle sessions and report the gateway's RSS per session.
    Idle(IdleArgs),
    /// Run the bare reverse-proxy hop (the floor).
    Proxy {
        /// Upstream MCP URL, e.g. http://127.0.0.1:PORT/mcp.
        #[arg(long)]
        upstream: String,
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// Runtime worker threads (default: one per core, as Sluice).
        #[arg(long)]
        threads: Option<usize>,
    },
}

#[derive(Args, Clone, Debug)]
pub struct SpecArgs {
    /// Measured time per run.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Unmeasured calls before each run.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Measure this many calls instead of a duration.
    #[arg(long)]
    pub calls: Option<u64>,
    /// Bound on a call-count run.
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    pub max_duration: Duration,
    /// A call slower than this is an error.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub call_timeout: Duration,
}

impl SpecArgs {
    pub fn spec(&self, concurrency: usize, tool: &str, args: &str) -> load::LoadSpec {
        load::LoadSpec {
            concurrency,
            warmup: self.warmup,
            duration: self.duration,
            calls: self.calls,
            max_duration: self.max_duration,
            call_timeout: self.call_timeout,
            tool: tool.to_string(),
            args: args.to_string(),
            era: client::Era::Session,
        }
    }
}

#[derive(Args)]
struct LoadArgs {
    /// MCP endpoint, e.g. http://127.0.0.1:8080/mcp.
    #[arg(long)]
    url: String,
    /// Extra request header `Name: value` (repeatable), e.g. Authorization.
    #[arg(long = "header", short = 'H')]
    headers: Vec<String>,
    /// Concurrent clients, one session and connection each.
    #[arg(long, short = 'c', default_value_t = 1)]
    concurrency: usize,
    #[arg(long, default_value = "noop")]
    tool: String,
    /// The tool's `arguments`, as JSON.
    #[arg(long, default_value = "{}")]
    args: String,
    /// Protocol era: `session` (2025-11-25) or `stateless` (2026-07-28).
    #[arg(long, default_value = "session", value_parser = client::Era::parse)]
    era: client::Era,
    /// The gateway process whose CPU per call and RSS to report.
    #[arg(long)]
    pid: Option<u32>,
    /// Like --pid, but summed over a whole process group (pre-forking servers).
    #[arg(long, conflicts_with = "pid")]
    pgid: Option<u32>,
    /// The upstream process whose CPU per call to report.
    #[arg(long)]
    upstream_pid: Option<u32>,
    /// Row label.
    #[arg(long, default_value = "target")]
    label: String,
    #[command(flatten)]
    spec: SpecArgs,
    /// Client runtime threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

#[derive(Args)]
struct IdleArgs {
    #[arg(long)]
    url: String,
    #[arg(long = "header", short = 'H')]
    headers: Vec<String>,
    /// The gateway's pid.
    #[arg(long)]
    pid: u32,
    #[arg(long, default_value_t = 10_000)]
    sessions: usize,
    /// Connections opening sessions in parallel.
    #[arg(long, default_value_t = 8)]
    parallel: usize,
}

/// `500ms`, `5s`, `2m`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = num.parse().map_err(|_| format!("bad duration `{s}`"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("bad duration unit in `{s}` (ms, s, m)")),
    };
    Ok(Duration::from_secs_f64(secs))
}

fn runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Proxy {
            upstream,
            listen,
            threads,
        } => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            if let Some(t) = threads {
                b.worker_threads(t);
            }
            b.enable_all()
                .build()?
                .block_on(proxy::serve(listen, &upstream))
        }
        Command::Load(a) => runtime(a.threads)?.block_on(async move {
            let target = Arc::new(client::Target::parse(&a.url, &a.headers)?);
            let gw = a
                .pid
                .map(stats::Probe::Pid)
                .or(a.pgid.map(stats::Probe::Group));
            let up = a.upstream_pid.map(stats::Probe::Pid);
            let mut spec = a.spec.spec(a.concurrency, &a.tool, &a.args);
            spec.era = a.era;
            let r = load::run(target, &spec, gw, up).await?;
            let row = table::Row::new(&a.label, a.concurrency, r);
            print!("{}", table::render(&[row]));
            Ok(())
        }),
        Command::Idle(a) => runtime(1)?.block_on(async move {
            let target = Arc::new(client::Target::parse(&a.url, &a.headers)?);
            let r = load::idle(
                target,
                a.sessions,
                a.parallel,
                stats::Probe::Pid(a.pid),
                Duration::from_millis(500),
            )
            .await?;
            println!("{}", table::idle_line(&r));
            Ok(())
        }),
        Command::All(a) => runtime(a.client_threads)?.block_on(run::all(a)),
        Command::Compare(a) => runtime(1)?.block_on(compare::compare(a)),
    }
}

/// Where the sibling binaries (`sluice`, `sluice-fixture`) are by default.
pub fn exe_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("5h").is_err());
    }
}
