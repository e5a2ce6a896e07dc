//! `sluice-bench all`: starts the fixture upstream, the bare proxy and Sluice
//! (HTTP and stdio upstream) on free loopback ports, runs every scenario at
//! every concurrency in one process (interleaved, so drift on a noisy machine
//! hits all rows alike), measures idle-session memory on a fresh gateway, and
//! prints the table and the targets. Every process it starts is stopped by
//! its own pid (or, for an external gateway, its own process group).

use crate::client::{Client, Era, Target};
use crate::load::{self, IdleResult};
use crate::stats::{self, Probe};
use crate::table::{self, Role, Row};
use crate::{SpecArgs, exe_dir};
use anyhow::{Context, anyhow, bail};
use clap::Args;
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;

#[derive(Args)]
pub(crate) struct AllArgs {
    /// Concurrency levels (clients, one session and connection each).
    #[arg(long, value_delimiter = ',', default_value = "1,16,64,256")]
    pub concurrency: Vec<usize>,
    #[command(flatten)]
    pub spec: SpecArgs,
    /// Idle sessions for the RSS-per-session probe (0 skips it).
    #[arg(long, default_value_t = 10_000)]
    pub sessions: usize,
    /// Directory holding `sluice` and `sluice-fixture` (default: next to this binary).
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// Scenarios to run (default all): direct, proxy, sluice-http, sluice-stdio.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Session stores for extra `sluice (HTTP upstream)` rows besides the
    /// in-memory one of the main rows: `sqlite` (a file in the work dir),
    /// `redis` (a redis-server the harness starts, or --redis-url); empty
    /// (`--stores ''`) for none.
    #[arg(long, value_delimiter = ',', default_value = "sqlite,redis")]
    pub stores: Vec<String>,
    /// Concurrency levels of the extra-store rows.
    #[arg(long, value_delimiter = ',', default_value = "1,64")]
    pub store_concurrency: Vec<usize>,
    /// Another `sluice` binary to measure beside the built one, as
    /// `NAME=PATH` (repeatable): adds `sluice (HTTP upstream) [NAME]` rows
    /// (memory sessions), interleaved with the others, for A/B comparisons.
    #[arg(long)]
    pub compare: Vec<String>,
    /// Use this Redis instead of starting redis-server.
    #[arg(long)]
    pub redis_url: Option<String>,
    /// A script that puts another gateway in front of the fixture: run as
    /// `SCRIPT start UPSTREAM_URL`, it prints `key=value` lines (name, url,
    /// pgid or pid, tool, header (repeatable), concurrency, duration) and then `ready`,
    /// leaving the gateway running in its own process group, which the
    /// harness stops afterwards. Repeatable. See bench/contextforge.sh.
    #[arg(long)]
    pub external: Vec<PathBuf>,
    /// Where logs and generated configs go (default: a fresh temp directory).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Upstream-bound pass: the fixture's `slow` tool sleeping this long, at
    /// `--slow-concurrency`, for direct, proxy and Sluice (0 skips it). With
    /// a no-op tool the 2 shared cores are the bottleneck, not the upstream.
    #[arg(long, default_value_t = 20)]
    pub slow_ms: u64,
    #[arg(long, default_value_t = 64)]
    pub slow_concurrency: usize,
    /// Runs per row (in rounds across the scenarios); the row shows the run
    /// with the median throughput. 3 steadies a noisy machine, at 3× the time.
    #[arg(long, default_value_t = 1)]
    pub repeat: usize,
    /// Load-generator runtime threads (1: current-thread runtime).
    #[arg(long, default_value_t = 1)]
    pub client_threads: usize,
}

/// A process the harness started.
pub(crate) struct Service {
    name: String,
    child: Child,
    pub(crate) pid: u32,
    pub(crate) url: String,
}

impl Service {
    /// Starts `cmd` and waits until it prints `listening on http://…` (the
    /// URL is kept) or, when given, the `ready` marker.
    pub(crate) async fn start(name: &str, cmd: Command, logs: &Path) -> anyhow::Result<Service> {
        Service::start_until(name, cmd, logs, None).await
    }

    async fn start_until(
        name: &str,
        mut cmd: Command,
        logs: &Path,
        ready: Option<&'static str>,
    ) -> anyhow::Result<Service> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().with_context(|| format!("starting {name}"))?;
        let pid = child.id().ok_or_else(|| anyhow!("{name} exited at once"))?;
        let log = Arc::new(Mutex::new(std::fs::File::create(
            logs.join(format!("{name}.log")),
        )?));
        let (tx, rx) = oneshot::channel();
        let tx = Arc::new(Mutex::new(Some(tx)));
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn AsyncRead + Send + Unpin>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn AsyncRead + Send + Unpin>),
        ]
        .into_iter()
        .flatten()
        {
            let log = log.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stream).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let found = match line.find("listening on http://") {
                        Some(i) => line[i + "listening on ".len()..]
                            .split_whitespace()
                            .next()
                            .map(str::to_string),
                        None => ready.filter(|m| line.contains(m)).map(str::to_string),
                    };
                    if let Some(url) = found
                        && let Some(tx) = tx.lock().unwrap().take()
                    {
                        let _ = tx.send(url);
                    }
                    let mut f = log.lock().unwrap_or_else(|e| e.into_inner());
                    let _ = writeln!(f, "{line}");
                }
            });
        }
        let url = match tokio::time::timeout(Duration::from_secs(90), rx).await {
            Ok(Ok(url)) => url,
            _ => {
                let _ = child.kill().await;
                bail!(
                    "{name} did not report its address; see {}",
                    logs.join(format!("{name}.log")).display()
                );
            }
        };
        Ok(Service {
            name: name.to_string(),
            child,
            pid,
            url,
        })
    }

    /// SIGTERM to its pid, then SIGKILL after a grace period.
    pub(crate) async fn stop(mut self) {
        let _ = kill(Pid::from_raw(self.pid as i32), Signal::SIGTERM);
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
            .await
            .is_err()
        {
            eprintln!("{} ignored SIGTERM; killing it", self.name);
            let _ = self.child.kill().await;
        }
    }
}

/// A gateway started by an external script (ContextForge).
struct External {
    name: String,
    url: String,
    headers: Vec<String>,
    tool: String,
    probe: Option<Probe>,
    pgid: Option<u32>,
    concurrency: Option<Vec<usize>>,
    /// Measured time per run, when the gateway needs longer than the default.
    duration: Option<Duration>,
}

impl External {
    async fn start(script: &Path, upstream: &str, logs: &Path) -> anyhow::Result<External> {
        eprintln!(
            "starting external gateway: {} start {upstream}",
            script.display()
        );
        let mut child = Command::new("bash")
            .arg(script)
            .arg("start")
            .arg(upstream)
            .env("SLUICE_BENCH_WORK_DIR", logs)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("running {}", script.display()))?;
        let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
        let mut ext = External {
            name: script
                .file_stem()
                .map_or("external".into(), |s| s.to_string_lossy().into_owned()),
            url: String::new(),
            headers: Vec::new(),
            tool: "noop".into(),
            probe: None,
            pgid: None,
            concurrency: None,
            duration: None,
        };
        let mut ready = false;
        let read = async {
            while let Some(line) = lines.next_line().await? {
                let line = line.trim();
                if line == "ready" {
                    ready = true;
                    break;
                }
                let Some((k, v)) = line.split_once('=') else {
                    continue;
                };
                match k {
                    "name" => ext.name = v.to_string(),
                    "url" => ext.url = v.to_string(),
                    "header" => ext.headers.push(v.to_string()),
                    "tool" => ext.tool = v.to_string(),
                    "pgid" => {
                        let g: u32 = v.parse()?;
                        ext.pgid = Some(g);
                        ext.probe = Some(Probe::Group(g));
                    }
                    "pid" => ext.probe = Some(Probe::Pid(v.parse()?)),
                    "duration" => {
                        ext.duration = Some(crate::parse_duration(v).map_err(|e| anyhow!(e))?)
                    }
                    "concurrency" => {
                        ext.concurrency = Some(
                            v.split(',')
                                .map(|c| c.trim().parse())
                                .collect::<Result<_, _>>()?,
                        )
                    }
                    _ => {}
                }
            }
            anyhow::Ok(())
        };
        let r = tokio::time::timeout(Duration::from_secs(900), read).await;
        let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
        match r {
            Ok(Ok(())) if ready && !ext.url.is_empty() => Ok(ext),
            Ok(Err(e)) => {
                ext.stop().await;
                Err(e)
            }
            _ => {
                ext.stop().await;
                bail!("{} start did not print url=… and ready", script.display())
            }
        }
    }

    /// SIGTERM to its process group, then SIGKILL.
    async fn stop(&self) {
        let Some(g) = self.pgid else { return };
        let pg = Pid::from_raw(g as i32);
        let _ = killpg(pg, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && !stats::group_members(g).is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if !stats::group_members(g).is_empty() {
            let _ = killpg(pg, Signal::SIGKILL);
        }
    }
}

/// One scenario: where its clients go and what is probed.
struct Scenario {
    label: String,
    role: Role,
    target: Arc<Target>,
    tool: String,
    gw: Option<Probe>,
    up: Option<Probe>,
    concurrency: Option<Vec<usize>>,
    failure: Option<String>,
    /// The upstream's `slow` tool under this scenario's naming (none for externals).
    slow_tool: Option<String>,
    /// Overrides `--duration` for this scenario.
    duration: Option<Duration>,
}

/// A gateway config with one server `fx`; `sessions` are the `[sessions]`
/// lines choosing the store.
pub(crate) fn sluice_config(upstream: &str, sessions: &str) -> String {
    format!(
        "[sessions]\nidle_timeout = \"1h\"\n{sessions}\n\n[[servers]]\nname = \"fx\"\n{upstream}\n"
    )
}

pub(crate) const MEMORY: &str = "store = \"memory\"";

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A throwaway redis-server on a free loopback port.
async fn start_redis(logs: &Path) -> anyhow::Result<(Service, String)> {
    let port = free_port()?;
    let mut cmd = Command::new("redis-server");
    cmd.args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args(["--save", "", "--appendonly", "no"])
        .current_dir(logs);
    let s = Service::start_until("redis", cmd, logs, Some("Ready to accept connections"))
        .await
        .context("starting redis-server (is it installed?)")?;
    Ok((s, format!("redis://127.0.0.1:{port}")))
}

async fn start_sluice(
    name: &str,
    bins: &Path,
    logs: &Path,
    config: &str,
) -> anyhow::Result<Service> {
    // Gateways run side by side from one directory: each needs its own audit log.
    let config = format!("[audit]\npath = \"{name}.audit.jsonl\"\n{config}");
    start_sluice_bin(name, &bins.join("sluice"), logs, &config).await
}

pub(crate) async fn start_sluice_bin(
    name: &str,
    binary: &Path,
    logs: &Path,
    config: &str,
) -> anyhow::Result<Service> {
    let path = logs.join(format!("{name}.toml"));
    std::fs::write(&path, config)?;
    let mut cmd = Command::new(binary);
    cmd.arg("serve")
        .arg("--config")
        .arg(&path)
        .arg("--listen")
        .arg("127.0.0.1:0");
    Service::start(name, cmd, logs).await
}

/// One verified session and call, so a broken scenario fails fast and clearly.
async fn smoke(target: &Arc<Target>, tool: &str) -> anyhow::Result<()> {
    smoke_era(target, tool, Era::Session).await
}

/// [`smoke`] in the given protocol era.
pub(crate) async fn smoke_era(target: &Arc<Target>, tool: &str, era: Era) -> anyhow::Result<()> {
    let mut c = Client::with_era(target.clone(), era);
    tokio::time::timeout(Duration::from_secs(30), async {
        c.initialize().await?;
        c.call(tool, "{}", true).await?;
        c.delete().await;
        anyhow::Ok(())
    })
    .await
    .map_err(|_| anyhow!("timed out"))?
}

fn command_output(cmd: &str, args: &[&str]) -> Option<String> {
    let o = std::process::Command::new(cmd).args(args).output().ok()?;
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

pub(crate) fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = command_output("uname", &["-r"]).unwrap_or_default();
    let rev = command_output("git", &["rev-parse", "--short", "HEAD"]).unwrap_or_default();
    let dirty = command_output("git", &["status", "--porcelain", "--untracked-files=no"])
        .is_some_and(|s| !s.is_empty());
    let git = match (rev.is_empty(), dirty) {
        (true, _) => String::new(),
        (false, false) => format!(", git {rev}"),
        (false, true) => format!(", git {rev} (modified)"),
    };
    format!("{cores} cores ({cpu}), Linux {kernel}{git}")
}

pub(crate) async fn all(a: AllArgs) -> anyhow::Result<()> {
    let t0 = Instant::now();
    let bins = a.bin_dir.clone().unwrap_or_else(exe_dir);
    for b in ["sluice", "sluice-fixture"] {
        if !bins.join(b).exists() {
            bail!(
                "{} not found; build with `cargo build --release -p sluice -p sluice-testkit -p sluice-bench`",
                bins.join(b).display()
            );
        }
    }
    let logs = match &a.work_dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("sluice-bench-{}", std::process::id())),
    };
    std::fs::create_dir_all(&logs)?;
    let logs = logs.canonicalize()?;
    eprintln!("logs and configs: {}", logs.display());
    let wanted = |s: &str| a.only.is_empty() || a.only.iter().any(|o| o == s);

    let mut services: Vec<Service> = Vec::new();
    let mut externals: Vec<External> = Vec::new();
    let result = async {
        let mut fx_cmd = Command::new(bins.join("sluice-fixture"));
        fx_cmd.args(["http", "--listen", "127.0.0.1:0"]);
        let fixture = Service::start("fixture", fx_cmd, &logs).await?;
        let fx_url = fixture.url.clone();
        let fx_probe = Some(Probe::Pid(fixture.pid));
        services.push(fixture);
        let mut scenarios = Vec::new();
        let plain =
            |label: &str, role, url: &str, tool: &str, gw, up| -> anyhow::Result<Scenario> {
                Ok(Scenario {
                    label: label.into(),
                    role,
                    target: Arc::new(Target::parse(url, &[])?),
                    tool: tool.into(),
                    gw,
                    up,
                    concurrency: None,
                    failure: None,
                    slow_tool: Some(tool.replace("noop", "slow")),
                    duration: None,
                })
            };
        if wanted("direct") {
            scenarios.push(plain(
                "direct",
                Role::Direct,
                &fx_url,
                "noop",
                None,
                fx_probe,
            )?);
        }
        if wanted("proxy") {
            let mut cmd = Command::new(std::env::current_exe()?);
            cmd.args(["proxy", "--listen", "127.0.0.1:0", "--upstream", &fx_url]);
            let p = Service::start("bare-proxy", cmd, &logs).await?;
            scenarios.push(plain(
                "bare proxy",
                Role::Proxy,
                &p.url,
                "noop",
                Some(Probe::Pid(p.pid)),
                fx_probe,
            )?);
            services.push(p);
        }
        let http_upstream = format!("url = \"{fx_url}\"");
        if wanted("sluice-http") {
            let s = start_sluice(
                "sluice-http",
                &bins,
                &logs,
                &sluice_config(&http_upstream, MEMORY),
            )
            .await?;
            scenarios.push(plain(
                "sluice (HTTP upstream)",
                Role::Gateway,
                &s.url,
                "fx__noop",
                Some(Probe::Pid(s.pid)),
                fx_probe,
            )?);
            services.push(s);
        }
        for spec in &a.compare {
            let (name, path) = spec
                .split_once('=')
                .ok_or_else(|| anyhow!("--compare wants NAME=PATH, got `{spec}`"))?;
            let s = start_sluice_bin(
                &format!("sluice-http-{name}"),
                Path::new(path),
                &logs,
                &sluice_config(&http_upstream, MEMORY),
            )
            .await?;
            scenarios.push(plain(
                &format!("sluice (HTTP upstream) [{name}]"),
                Role::Gateway,
                &s.url,
                "fx__noop",
                Some(Probe::Pid(s.pid)),
                fx_probe,
            )?);
            services.push(s);
        }
        for store in a
            .stores
            .iter()
            .filter(|s| !s.is_empty() && *s != "memory" && wanted("sluice-http"))
        {
            let name = format!("sluice-http-{store}");
            let extra = match store.as_str() {
                "sqlite" => Ok(format!(
                    "store = \"sqlite\"\nsqlite_path = {:?}",
                    logs.join(format!("{name}.db")).display().to_string()
                )),
                "redis" => match &a.redis_url {
                    Some(url) => Ok(url.clone()),
                    None => start_redis(&logs).await.map(|(s, url)| {
                        services.push(s);
                        url
                    }),
                }
                .map(|url| {
                    format!(
                        "store = \"redis\"\nredis_url = {url:?}\nkey_prefix = \"sluice-bench-{}:\"",
                        std::process::id()
                    )
                }),
                other => Ok(format!("store = {other:?}")),
            };
            let started = match extra {
                Ok(extra) => {
                    start_sluice(&name, &bins, &logs, &sluice_config(&http_upstream, &extra)).await
                }
                Err(e) => Err(e),
            };
            match started {
                Ok(s) => {
                    let mut sc = plain(
                        &format!("sluice (HTTP upstream, {store} sessions)"),
                        Role::Gateway,
                        &s.url,
                        "fx__noop",
                        Some(Probe::Pid(s.pid)),
                        fx_probe,
                    )?;
                    sc.concurrency = Some(a.store_concurrency.clone());
                    sc.slow_tool = None;
                    scenarios.push(sc);
                    services.push(s);
                }
                Err(e) => {
                    let mut sc = plain(
                        &format!("sluice (HTTP upstream, {store} sessions)"),
                        Role::Gateway,
                        "http://127.0.0.1:1/mcp",
                        "fx__noop",
                        None,
                        None,
                    )?;
                    sc.failure = Some(format!("{e:#}"));
                    scenarios.push(sc);
                }
            }
        }
        if wanted("sluice-stdio") {
            let fx_bin = bins.join("sluice-fixture");
            let upstream = format!("command = {:?}", fx_bin.display().to_string());
            let s = start_sluice(
                "sluice-stdio",
                &bins,
                &logs,
                &sluice_config(&upstream, MEMORY),
            )
            .await?;
            let child = stats::children(s.pid).into_iter().next();
            scenarios.push(plain(
                "sluice (stdio upstream)",
                Role::Gateway,
                &s.url,
                "fx__noop",
                Some(Probe::Pid(s.pid)),
                child.map(Probe::Pid),
            )?);
            services.push(s);
        }
        for script in &a.external {
            match External::start(script, &fx_url, &logs).await {
                Ok(ext) => {
                    scenarios.push(Scenario {
                        label: ext.name.clone(),
                        role: Role::Gateway,
                        target: Arc::new(Target::parse(&ext.url, &ext.headers)?),
                        tool: ext.tool.clone(),
                        gw: ext.probe,
                        up: fx_probe,
                        concurrency: ext.concurrency.clone(),
                        failure: None,
                        slow_tool: None,
                        duration: ext.duration,
                    });
                    externals.push(ext);
                }
                Err(e) => {
                    eprintln!("external gateway {} failed: {e:#}", script.display());
                    let mut sc = plain(
                        &script.file_stem().unwrap_or_default().to_string_lossy(),
                        Role::Gateway,
                        "http://127.0.0.1:1/mcp",
                        "noop",
                        None,
                        None,
                    )?;
                    sc.failure = Some(format!("{e:#}"));
                    scenarios.push(sc);
                }
            }
        }
        for sc in scenarios.iter_mut().filter(|s| s.failure.is_none()) {
            if let Err(e) = smoke(&sc.target, &sc.tool).await {
                eprintln!("{}: smoke test failed: {e:#}", sc.label);
                sc.failure = Some(format!("smoke test: {e:#}"));
            }
        }

        // The runs, interleaved by concurrency.
        let mut rows: Vec<Row> = Vec::new();
        let slow_args = format!("{{\"ms\":{}}}", a.slow_ms);
        let slow_group = format!("{} ms tool", a.slow_ms);
        let mut passes: Vec<(usize, bool)> = a.concurrency.iter().map(|&c| (c, false)).collect();
        if a.slow_ms > 0 {
            passes.push((a.slow_concurrency, true));
        }
        for (c, slow) in passes {
            // Each (scenario, c) runs `repeat` times, in rounds across the
            // scenarios; the row is the run with the median throughput.
            let first_row = rows.len();
            let mut runs: Vec<Vec<load::LoadResult>> = Vec::new();
            for round in 0..a.repeat.max(1) {
                let mut k = 0;
                for sc in &scenarios {
                    if sc.concurrency.as_ref().is_some_and(|l| !l.contains(&c)) {
                        continue;
                    }
                    let (tool, args, group) = match (slow, &sc.slow_tool) {
                        (false, _) => (sc.tool.as_str(), "{}", String::new()),
                        (true, Some(t)) => (t.as_str(), slow_args.as_str(), slow_group.clone()),
                        (true, None) => continue,
                    };
                    let label = if slow {
                        format!("{}, {group}", sc.label)
                    } else {
                        sc.label.clone()
                    };
                    if round == 0 {
                        rows.push(Row {
                            label,
                            group,
                            role: sc.role,
                            concurrency: c,
                            result: None,
                            failure: sc.failure.clone(),
                        });
                        runs.push(Vec::new());
                    }
                    let row = &mut rows[first_row + k];
                    let results = &mut runs[k];
                    k += 1;
                    if row.failure.is_none() {
                        eprint!("{} c={c} … ", row.label);
                        let mut spec = a.spec.spec(c, tool, args);
                        if let Some(d) = sc.duration {
                            spec.duration = d;
                        }
                        match load::run(sc.target.clone(), &spec, sc.gw, sc.up).await {
                            Ok(r) => {
                                eprintln!(
                                    "{:.0} calls/s, p50 {:.0} µs, {} errors{}",
                                    r.calls_per_sec(),
                                    r.latency.p50 as f64 / 1000.0,
                                    r.errors,
                                    r.first_error
                                        .as_deref()
                                        .map(|e| format!(" (first: {e})"))
                                        .unwrap_or_default()
                                );
                                results.push(r);
                            }
                            Err(e) => {
                                eprintln!("failed: {e:#}");
                                row.failure = Some(format!("{e:#}"));
                            }
                        }
                    }
                }
            }
            for (row, mut results) in rows[first_row..].iter_mut().zip(runs) {
                if row.failure.is_none() && !results.is_empty() {
                    results.sort_by(|x, y| x.calls_per_sec().total_cmp(&y.calls_per_sec()));
                    row.result = Some(results.swap_remove(results.len() / 2));
                }
            }
        }

        // Idle sessions, on a fresh gateway.
        let idle = if a.sessions > 0 && wanted("sluice-http") {
            eprint!("{} idle sessions … ", a.sessions);
            let s = start_sluice(
                "sluice-idle",
                &bins,
                &logs,
                &sluice_config(&http_upstream, MEMORY),
            )
            .await?;
            let target = Arc::new(Target::parse(&s.url, &[])?);
            let r = load::idle(
                target,
                a.sessions,
                8,
                Probe::Pid(s.pid),
                Duration::from_millis(500),
            )
            .await;
            s.stop().await;
            match r {
                Ok(r) => {
                    eprintln!("{:.0} bytes/session", r.bytes_per_session());
                    Some(r)
                }
                Err(e) => {
                    eprintln!("failed: {e:#}");
                    None
                }
            }
        } else {
            None
        };
        anyhow::Ok((rows, idle))
    }
    .await;

    for ext in &externals {
        ext.stop().await;
    }
    for s in services.into_iter().rev() {
        s.stop().await;
    }
    let (rows, idle) = result?;
    print!("{}", report(&a, &rows, idle.as_ref(), t0.elapsed()));
    Ok(())
}

/// The table, the idle line and the targets, as Markdown.
fn report(a: &AllArgs, rows: &[Row], idle: Option<&IdleResult>, took: Duration) -> String {
    let mut out = String::new();
    let mut mode = match a.spec.calls {
        Some(n) => format!("{n} calls per run"),
        None => format!("{:?} per run", a.spec.duration),
    };
    if a.repeat > 1 {
        mode.push_str(&format!(", median of {} runs per row", a.repeat));
    }
    let _ = writeln!(
        out,
        "\nsluice-bench: {}; {mode} after {:?} warm-up; tool `noop` of sluice-fixture; whole run {:.0} s\n",
        machine(),
        a.spec.warmup,
        took.as_secs_f64()
    );
    out.push_str(&table::render(rows));
    out.push('\n');
    if let Some(r) = idle {
        let _ = writeln!(out, "Sluice, {}\n", table::idle_line(r));
    }
    let sluice: Vec<&Row> = rows
        .iter()
        .filter(|r| r.label == "sluice (HTTP upstream)")
        .collect();
    let sluice_slow = rows.iter().find(|r| {
        r.label.starts_with("sluice (HTTP upstream), ") && r.concurrency == a.slow_concurrency
    });
    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    out.push_str("Targets (Sluice, HTTP upstream):\n");
    let cpu: Vec<(usize, f64)> = sluice
        .iter()
        .filter_map(|r| Some((r.concurrency, table::cpu_vs_proxy(rows, r)?)))
        .collect();
    if !cpu.is_empty() {
        let worst = cpu.iter().map(|x| x.1).fold(0.0, f64::max);
        let list: Vec<String> = cpu.iter().map(|(c, v)| format!("c={c} {v:.2}×")).collect();
        let _ = writeln!(
            out,
            "- gateway CPU per call ≤ 2× the bare proxy's: {} — {}",
            list.join(", "),
            verdict(worst <= 2.0)
        );
    }
    if let Some(v) = sluice
        .iter()
        .find(|r| r.concurrency == 1)
        .and_then(|r| table::added_p50_us(rows, r))
    {
        let _ = writeln!(
            out,
            "- added p50 over direct ≤ 100 µs at c=1: {v:+.0} µs — {}",
            verdict(v <= 100.0)
        );
    }
    let noop64 = sluice
        .iter()
        .find(|r| r.concurrency == 64)
        .and_then(|r| table::tput_vs_direct(rows, r));
    let slow = sluice_slow.and_then(|r| Some((r, table::tput_vs_direct(rows, r)?)));
    match (slow, noop64) {
        (Some((r, v)), noop) => {
            let _ = writeln!(
                out,
                "- throughput ≥ 90% of direct at c={} when the upstream is the bottleneck ({}): {:.0}% — {}{}",
                r.concurrency,
                r.group,
                v * 100.0,
                verdict(v >= 0.9),
                noop.map(|n| format!(
                    "; with the no-op tool, where the shared cores are the bottleneck: {:.0}%",
                    n * 100.0
                ))
                .unwrap_or_default()
            );
        }
        (None, Some(v)) => {
            let _ = writeln!(
                out,
                "- throughput ≥ 90% of direct at c=64 (no-op tool, CPU-bound): {:.0}% — {}",
                v * 100.0,
                verdict(v >= 0.9)
            );
        }
        (None, None) => {}
    }
    if let Some(r) = idle {
        let b = r.bytes_per_session();
        let _ = writeln!(
            out,
            "- RSS per idle session ≤ 8 KB: {:.1} KB — {}",
            b / 1024.0,
            verdict(b <= 8192.0)
        );
    }
    out
}
