//! Health of one upstream: connection state, active probe results, passive
//! outcomes of real calls, and the circuit breaker, folded into one status.

use crate::breaker::{self, Breaker, Refused};
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

/// What an agent or operator needs to know about a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Connected, probes answer, recent calls succeed.
    Healthy,
    /// Connected and answering, but recent calls failed.
    Degraded,
    /// Not connected, probes fail, or the circuit breaker is open: calls fail fast.
    Down,
}

impl Status {
    /// The lower-case name used in the health report, metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Healthy => "healthy",
            Status::Degraded => "degraded",
            Status::Down => "down",
        }
    }
}

/// A point-in-time view of a server's health.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The status now.
    pub status: Status,
    /// When the status last changed.
    pub since: SystemTime,
    /// Whether a connection (process, session or stream) is up.
    pub connected: bool,
    /// The latest failure of a call, probe or connection, and when.
    pub last_error: Option<(SystemTime, String)>,
    /// When a call or probe last succeeded.
    pub last_ok: Option<SystemTime>,
    /// Failed calls among the last real calls (at most [`RECENT`]).
    pub recent_failed: u32,
    /// How many real calls that window holds.
    pub recent_total: u32,
    /// "closed", "open" or "half-open".
    pub breaker: &'static str,
    /// While open: when the next call is let through.
    pub retry_in: Option<Duration>,
    /// Real calls since start.
    pub calls: u64,
    /// Real calls since start that failed.
    pub failures: u64,
    /// Reconnections (restarts of a child, new sessions) since the first connection.
    pub restarts: u64,
}

/// How many recent call outcomes are kept.
pub const RECENT: usize = 10;

pub(crate) struct Health {
    name: String,
    inner: Mutex<Inner>,
}

struct Inner {
    connected: bool,
    probe_ok: Option<bool>,
    recent: VecDeque<bool>,
    last_error: Option<(SystemTime, String)>,
    last_ok: Option<SystemTime>,
    status: Status,
    since: SystemTime,
    breaker: Breaker,
    calls: u64,
    failures: u64,
    restarts: u64,
}

impl Health {
    pub(crate) fn new(name: &str, cfg: sluice_config::Breaker) -> Self {
        Health {
            name: name.to_string(),
            inner: Mutex::new(Inner {
                connected: false,
                probe_ok: None,
                recent: VecDeque::with_capacity(RECENT),
                last_error: None,
                last_ok: None,
                status: Status::Down,
                since: SystemTime::now(),
                breaker: Breaker::new(cfg),
                calls: 0,
                failures: 0,
                restarts: 0,
            }),
        }
    }

    /// May a call go out now? Refused while the circuit is open.
    pub(crate) fn admit(&self) -> Result<(), Refused> {
        let mut g = self.inner.lock().unwrap();
        let r = g.breaker.admit(Instant::now()).map_err(|mut refused| {
            if let Some((_, e)) = &g.last_error {
                refused.reason = format!("{} (last error: {e})", refused.reason);
            }
            refused
        });
        self.update(&mut g);
        r
    }

    /// Records a real call's outcome: `Ok` when the server answered (even with
    /// an error). `reached`: the call got to the server, so it counts for the
    /// circuit breaker (a server that is not connected is down already).
    pub(crate) fn record_call(&self, outcome: Result<(), String>, reached: bool) {
        let mut g = self.inner.lock().unwrap();
        g.calls += 1;
        let ok = outcome.is_ok();
        if g.recent.len() == RECENT {
            g.recent.pop_front();
        }
        g.recent.push_back(ok);
        if reached {
            g.breaker.record(Instant::now(), ok);
        }
        match outcome {
            Ok(()) => {
                g.last_ok = Some(SystemTime::now());
                g.probe_ok = Some(true);
            }
            Err(e) => {
                g.failures += 1;
                g.last_error = Some((SystemTime::now(), e));
            }
        }
        self.update(&mut g);
    }

    /// Records an active probe's outcome.
    pub(crate) fn record_probe(&self, outcome: Result<(), String>) {
        let mut g = self.inner.lock().unwrap();
        g.breaker.record(Instant::now(), outcome.is_ok());
        match outcome {
            Ok(()) => {
                g.probe_ok = Some(true);
                g.last_ok = Some(SystemTime::now());
            }
            Err(e) => {
                g.probe_ok = Some(false);
                g.last_error = Some((SystemTime::now(), e));
            }
        }
        self.update(&mut g);
    }

    pub(crate) fn set_connected(&self, connected: bool, reason: Option<String>) {
        let mut g = self.inner.lock().unwrap();
        g.connected = connected;
        if connected {
            g.probe_ok = None;
        } else if let Some(r) = reason {
            g.last_error = Some((SystemTime::now(), r));
        }
        self.update(&mut g);
    }

    pub(crate) fn note_restart(&self) {
        self.inner.lock().unwrap().restarts += 1;
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        let g = self.inner.lock().unwrap();
        let (breaker, retry_in) = match g.breaker.state() {
            breaker::State::Closed => ("closed", None),
            breaker::State::HalfOpen => ("half-open", None),
            breaker::State::Open { until } => (
                "open",
                Some(until.saturating_duration_since(Instant::now())),
            ),
        };
        Snapshot {
            status: g.status,
            since: g.since,
            connected: g.connected,
            last_error: g.last_error.clone(),
            last_ok: g.last_ok,
            recent_failed: g.recent.iter().filter(|ok| !**ok).count() as u32,
            recent_total: g.recent.len() as u32,
            breaker,
            retry_in,
            calls: g.calls,
            failures: g.failures,
            restarts: g.restarts,
        }
    }

    /// Recomputes the status; logs and timestamps a change.
    fn update(&self, g: &mut Inner) {
        let down = !g.connected
            || g.probe_ok == Some(false)
            || matches!(g.breaker.state(), breaker::State::Open { .. });
        if !down && g.status == Status::Down {
            // Failures of an outage that is over no longer describe the server.
            g.recent.clear();
        }
        let status = if down {
            Status::Down
        } else if g.recent.back() == Some(&false)
            || g.recent.iter().filter(|ok| !**ok).count() >= 2
            || g.breaker.state() == breaker::State::HalfOpen
        {
            Status::Degraded
        } else {
            Status::Healthy
        };
        if status != g.status {
            let reason = g.last_error.as_ref().map(|(_, e)| e.as_str()).unwrap_or("");
            match status {
                Status::Down => tracing::warn!(server = %self.name, reason, "server is down"),
                Status::Degraded => {
                    tracing::warn!(server = %self.name, reason, "server is degraded")
                }
                Status::Healthy => tracing::info!(server = %self.name, "server is healthy"),
            }
            g.status = status;
            g.since = SystemTime::now();
        }
    }
}
