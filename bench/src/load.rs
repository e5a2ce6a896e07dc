//! The load generator: N concurrent MCP clients, one legacy (2025-11-25)
//! session each (or stateless 2026-07-28 requests), calling one tool back to
//! back for a fixed time or a fixed number of calls; and the idle-session
//! memory probe.

use crate::client::{Client, Era, Target};
use crate::stats::{self, Latency, Probe};
use anyhow::{Context, bail};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// What to run.
#[derive(Clone, Debug)]
pub struct LoadSpec {
    pub concurrency: usize,
    /// Calls before measuring starts (per run, timed).
    pub warmup: Duration,
    /// Measured time; ignored when `calls` is set.
    pub duration: Duration,
    /// Measured calls in total (instead of a duration).
    pub calls: Option<u64>,
    /// Hard bound on the measured phase whatever `calls` says.
    pub max_duration: Duration,
    /// A call slower than this counts as an error (and its connection is dropped).
    pub call_timeout: Duration,
    pub tool: String,
    /// The `arguments` object, as JSON text.
    pub args: String,
    /// The protocol era the clients speak.
    pub era: Era,
}

/// What a run measured.
#[derive(Clone, Debug, Default)]
pub(crate) struct LoadResult {
    pub calls: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub elapsed: Duration,
    pub latency: Latency,
    /// CPU of the probed gateway over the measured phase.
    pub gw_cpu: Option<Duration>,
    /// The part of `gw_cpu` spent in the kernel (`stime`).
    pub gw_sys_cpu: Option<Duration>,
    pub gw_rss_kib: Option<u64>,
    /// CPU of the probed upstream over the measured phase.
    pub up_cpu: Option<Duration>,
    /// CPU of this load generator over the measured phase.
    pub client_cpu: Option<Duration>,
    /// CPU the rest of the machine used over the measured phase (busy time
    /// of all CPUs minus the three above): other work competing for the cores.
    pub other_cpu: Option<Duration>,
}

impl LoadResult {
    pub(crate) fn calls_per_sec(&self) -> f64 {
        self.calls as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn per_call(&self, d: Option<Duration>) -> Option<f64> {
        let d = d?;
        (self.calls > 0).then(|| d.as_secs_f64() * 1e6 / self.calls as f64)
    }

    /// Gateway CPU per successful call, µs.
    pub(crate) fn gw_cpu_us(&self) -> Option<f64> {
        self.per_call(self.gw_cpu)
    }

    /// The kernel's part of [`Self::gw_cpu_us`].
    pub(crate) fn gw_sys_cpu_us(&self) -> Option<f64> {
        self.per_call(self.gw_sys_cpu)
    }

    pub(crate) fn up_cpu_us(&self) -> Option<f64> {
        self.per_call(self.up_cpu)
    }

    pub(crate) fn client_cpu_us(&self) -> Option<f64> {
        self.per_call(self.client_cpu)
    }

    /// Other load on the machine during the run, in cores.
    pub(crate) fn other_cores(&self) -> Option<f64> {
        Some(self.other_cpu?.as_secs_f64() / self.elapsed.as_secs_f64().max(1e-9))
    }
}

struct Shared {
    measuring: AtomicBool,
    stop: AtomicBool,
    ready: AtomicUsize,
    /// Calls still to start in call-count mode (unbounded otherwise).
    remaining: AtomicI64,
    errors: AtomicU64,
    first_error: std::sync::Mutex<Option<String>>,
}

impl Shared {
    fn error(&self, e: &anyhow::Error) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_error.lock().unwrap_or_else(|e| e.into_inner());
        if first.is_none() {
            *first = Some(format!("{e:#}"));
        }
    }
}

struct Snapshot {
    at: Instant,
    gw: Option<Duration>,
    gw_sys: Option<Duration>,
    up: Option<Duration>,
    me: Option<Duration>,
    machine: Option<Duration>,
}

fn snapshot(gw: Option<Probe>, up: Option<Probe>, tps: u64) -> Snapshot {
    let gw = gw.and_then(|p| p.cpu_split(tps));
    Snapshot {
        at: Instant::now(),
        gw: gw.map(|g| g.0),
        gw_sys: gw.map(|g| g.1),
        up: up.and_then(|p| p.cpu(tps)),
        me: Probe::Pid(std::process::id()).cpu(tps),
        machine: stats::machine_busy(tps),
    }
}

fn delta(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    Some(b?.saturating_sub(a?))
}

/// Runs one load against `target`. `gw` and `up` are the processes whose CPU
/// time per call is reported. Every run ends by itself: after
/// warmup + duration (or `max_duration` in call-count mode) plus at most one
/// call timeout.
pub(crate) async fn run(
    target: Arc<Target>,
    spec: &LoadSpec,
    gw: Option<Probe>,
    up: Option<Probe>,
) -> anyhow::Result<LoadResult> {
    let tps = stats::clock_ticks_per_sec();
    let shared = Arc::new(Shared {
        measuring: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        ready: AtomicUsize::new(0),
        remaining: AtomicI64::new(spec.calls.map_or(i64::MAX, |c| c as i64)),
        errors: AtomicU64::new(0),
        first_error: std::sync::Mutex::new(None),
    });
    let mut tasks = Vec::with_capacity(spec.concurrency);
    for _ in 0..spec.concurrency {
        let target = target.clone();
        let shared = shared.clone();
        let spec = spec.clone();
        tasks.push(tokio::spawn(client_loop(target, shared, spec)));
    }

    // Wait (bounded) for every client's session.
    let setup_deadline = Instant::now() + spec.call_timeout.max(Duration::from_secs(10));
    while shared.ready.load(Ordering::Relaxed) < spec.concurrency {
        if Instant::now() > setup_deadline {
            shared.stop.store(true, Ordering::Relaxed);
            let first = shared.first_error.lock().unwrap().clone();
            for t in &tasks {
                t.abort();
            }
            bail!(
                "only {} of {} clients initialized: {}",
                shared.ready.load(Ordering::Relaxed),
                spec.concurrency,
                first.unwrap_or_else(|| "timed out".into())
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(spec.warmup).await;
    shared.errors.store(0, Ordering::Relaxed);
    *shared.first_error.lock().unwrap() = None;
    let start = snapshot(gw, up, tps);
    shared.measuring.store(true, Ordering::Release);

    let end_by = start.at
        + if spec.calls.is_some() {
            spec.max_duration
        } else {
            spec.duration
        };
    if spec.calls.is_some() {
        while Instant::now() < end_by && !tasks.iter().all(|t| t.is_finished()) {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    } else {
        tokio::time::sleep_until(end_by.into()).await;
    }
    shared.measuring.store(false, Ordering::Release);
    let end = snapshot(gw, up, tps);
    let gw_rss_kib = gw.and_then(|p| p.rss_kib());
    shared.stop.store(true, Ordering::Relaxed);

    let mut samples = Vec::new();
    let grace = Instant::now() + spec.call_timeout + Duration::from_secs(2);
    for t in tasks {
        let abort = t.abort_handle();
        match tokio::time::timeout_at(grace.into(), t).await {
            Ok(Ok(s)) => samples.extend(s),
            Ok(Err(_)) => {}
            Err(_) => abort.abort(),
        }
    }
    let calls = samples.len() as u64;
    let latency = stats::summarize(&mut samples);
    Ok(LoadResult {
        calls,
        errors: shared.errors.load(Ordering::Relaxed),
        first_error: shared.first_error.lock().unwrap().clone(),
        elapsed: end.at - start.at,
        latency,
        gw_cpu: delta(start.gw, end.gw),
        gw_sys_cpu: delta(start.gw_sys, end.gw_sys),
        gw_rss_kib,
        up_cpu: delta(start.up, end.up),
        client_cpu: delta(start.me, end.me),
        other_cpu: delta(start.machine, end.machine).map(|m| {
            [
                delta(start.gw, end.gw),
                delta(start.up, end.up),
                delta(start.me, end.me),
            ]
            .into_iter()
            .flatten()
            .fold(m, |m, d| m.saturating_sub(d))
        }),
    })
}

/// One client: a session, then calls back to back. Returns the latencies
/// (ns) of the successful calls that ended inside the measured phase.
async fn client_loop(target: Arc<Target>, shared: Arc<Shared>, spec: LoadSpec) -> Vec<u64> {
    let mut client = Client::with_era(target, spec.era);
    let mut samples = Vec::new();
    let mut counted_ready = false;
    while !shared.stop.load(Ordering::Relaxed) {
        if !client.has_session() {
            match tokio::time::timeout(spec.call_timeout, client.initialize()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    shared.error(&e);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                Err(_) => {
                    shared.error(&anyhow::anyhow!("initialize timed out"));
                    continue;
                }
            }
        }
        if !counted_ready {
            // The first call is verified in full before the client counts as ready.
            match tokio::time::timeout(spec.call_timeout, client.call(&spec.tool, &spec.args, true))
                .await
            {
                Ok(Ok(())) => {
                    counted_ready = true;
                    shared.ready.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Err(e)) => {
                    shared.error(&e);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(_) => shared.error(&anyhow::anyhow!("first tools/call timed out")),
            }
            continue;
        }
        let measured = shared.measuring.load(Ordering::Acquire);
        if measured && shared.remaining.fetch_sub(1, Ordering::Relaxed) <= 0 {
            break;
        }
        let t0 = Instant::now();
        let r = tokio::time::timeout(
            spec.call_timeout,
            client.call(&spec.tool, &spec.args, false),
        )
        .await;
        let ns = t0.elapsed().as_nanos() as u64;
        // A call counts if it ended inside the measured phase (closed-loop
        // throughput: completions per second of the window, so a gateway
        // whose calls outlast the window is not shown as doing nothing); in
        // call-count mode it must also have started inside it.
        let counted =
            shared.measuring.load(Ordering::Acquire) && (measured || spec.calls.is_none());
        match r {
            Ok(Ok(())) => {
                if counted {
                    samples.push(ns);
                }
            }
            Ok(Err(e)) => {
                if counted {
                    shared.error(&e);
                }
            }
            Err(_) => {
                if counted {
                    shared.error(&anyhow::anyhow!(
                        "tools/call timed out after {:?}",
                        spec.call_timeout
                    ));
                }
                // The connection is mid-response: drop it, keep the session.
                client.drop_connection();
            }
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), client.delete()).await;
    samples
}

/// What the idle-session probe measured.
#[derive(Clone, Debug)]
pub(crate) struct IdleResult {
    pub sessions: usize,
    pub errors: u64,
    pub rss_before_kib: u64,
    pub rss_after_kib: u64,
    pub elapsed: Duration,
}

impl IdleResult {
    pub(crate) fn bytes_per_session(&self) -> f64 {
        (self.rss_after_kib as f64 - self.rss_before_kib as f64) * 1024.0
            / self.sessions.max(1) as f64
    }
}

/// Opens `sessions` sessions (initialize + initialized, then nothing) over
/// `parallel` connections and reports the gateway's RSS growth.
pub(crate) async fn idle(
    target: Arc<Target>,
    sessions: usize,
    parallel: usize,
    pid: Probe,
    settle: Duration,
) -> anyhow::Result<IdleResult> {
    // One session and call first, so lazily built state is not counted.
    let mut warm = Client::new(target.clone());
    warm.initialize().await.context("warm-up session")?;
    tokio::time::sleep(settle).await;
    let before = pid.rss_kib().context("reading the gateway's RSS")?;
    let t0 = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..parallel.max(1) {
        let target = target.clone();
        let next = next.clone();
        let errors = errors.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = Client::new(target);
            while next.fetch_add(1, Ordering::Relaxed) < sessions {
                match tokio::time::timeout(Duration::from_secs(10), c.initialize()).await {
                    Ok(Ok(())) => {}
                    _ => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        c.drop_connection();
                    }
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = t0.elapsed();
    tokio::time::sleep(settle).await;
    let after = pid.rss_kib().context("reading the gateway's RSS")?;
    Ok(IdleResult {
        sessions,
        errors: errors.load(Ordering::Relaxed),
        rss_before_kib: before,
        rss_after_kib: after,
        elapsed,
    })
}
