//! sluice-audit: the tamper-evident audit log.
//!
//! [`AuditLog`] is a cheap handle: [`AuditLog::record`] stamps an [`Event`]
//! and queues it on a bounded channel; one writer thread turns events into
//! hash-chained JSON Lines (format: [`chain`]) and appends them to the file in
//! batches: a batch is written when the queue is drained (and at least every
//! 100 ms while it is not), and records that follow within 10 ms join the
//! next batch rather than waking the writer one by one.
//! Nothing accepted is dropped: a full queue makes callers wait, a failed
//! write is logged, counted ([`AuditLog::write_errors`]) and retried.
//! [`AuditLog::close`] drains the queue and syncs the file.
//!
//! [`verify()`] walks a log's chain and names the first broken line.

#![warn(missing_docs)]

pub mod chain;
mod event;
mod redact;
mod verify;
mod writer;

pub use chain::GENESIS;
pub use event::{Caller, Decision, Event, Finding, Outcome, PinHeld, ToolCall};
pub use redact::{Arguments, REDACTED};
pub use verify::{Broken, Problem, Verified, VerifyError, verify};
pub use writer::OpenError;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use tokio::sync::{mpsc, oneshot};

/// Events queued for the writer before callers wait.
const QUEUE: usize = 4096;

/// Counts kept by the writer, read by the metrics.
#[derive(Debug, Default)]
pub struct Counters {
    records: AtomicU64,
    write_errors: AtomicU64,
}

impl Counters {
    /// Records written to the file.
    pub fn records(&self) -> u64 {
        self.records.load(Ordering::Relaxed)
    }

    /// Failed writes (each retry counts), fsync failures, and records
    /// refused because the log was already closed.
    pub fn write_errors(&self) -> u64 {
        self.write_errors.load(Ordering::Relaxed)
    }
}

pub(crate) struct Stamped {
    at: SystemTime,
    event: Event,
}

// Records are nearly every message: boxing them would cost an allocation each.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Msg {
    Record(Stamped),
    Close(oneshot::Sender<()>),
}

/// A handle on the audit log; clones share one writer.
#[derive(Clone)]
pub struct AuditLog {
    inner: Option<Arc<Inner>>,
    counters: Arc<Counters>,
}

struct Inner {
    tx: mpsc::Sender<Msg>,
    keeps_arguments: bool,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl AuditLog {
    /// A log that records nothing (`audit.enabled = false`).
    pub fn disabled() -> AuditLog {
        AuditLog {
            inner: None,
            counters: Arc::default(),
        }
    }

    /// Opens the log of `config` (or a disabled one), continuing its chain.
    pub fn open(config: &sluice_config::Audit) -> Result<AuditLog, OpenError> {
        if !config.enabled {
            return Ok(AuditLog::disabled());
        }
        let key = config.hmac_key.as_ref().map(|k| k.expose().as_bytes());
        let args = Arguments::new(
            config.arguments,
            &config.redact_keys,
            config.max_argument_bytes,
        );
        Self::open_at(&config.path, key, args)
    }

    /// Opens the log at `path`, chained with HMAC-SHA256 under `key` when given.
    pub fn open_at(
        path: &std::path::Path,
        key: Option<&[u8]>,
        args: Arguments,
    ) -> Result<AuditLog, OpenError> {
        let counters = Arc::<Counters>::default();
        let keeps_arguments = args.kept();
        let w = writer::Writer::open(path, chain::Hasher::new(key), args, counters.clone())?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let thread = std::thread::Builder::new()
            .name("sluice-audit".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .build()
                    .expect("the audit writer's runtime starts");
                rt.block_on(w.run(rx));
            })
            .map_err(|source| OpenError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(AuditLog {
            inner: Some(Arc::new(Inner {
                tx,
                keeps_arguments,
                thread: Mutex::new(Some(thread)),
            })),
            counters,
        })
    }

    /// Whether records are written at all.
    pub fn enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Whether `tool_call` records keep arguments (so callers may skip copying them).
    pub fn keeps_arguments(&self) -> bool {
        self.inner.as_ref().is_some_and(|i| i.keeps_arguments)
    }

    /// Queues an event; waits only while the queue is full.
    pub async fn record(&self, event: Event) {
        let Some(inner) = &self.inner else { return };
        let msg = Msg::Record(Stamped {
            at: SystemTime::now(),
            event,
        });
        match inner.tx.try_send(msg) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(msg)) => {
                if let Err(mpsc::error::SendError(msg)) = inner.tx.send(msg).await {
                    self.refused(msg);
                }
            }
            Err(mpsc::error::TrySendError::Closed(msg)) => self.refused(msg),
        }
    }

    /// Queues an event from code that cannot wait: when the queue is full,
    /// a task waits for room instead (it needs a Tokio runtime then).
    pub fn record_detached(&self, event: Event) {
        let Some(inner) = &self.inner else { return };
        let msg = Msg::Record(Stamped {
            at: SystemTime::now(),
            event,
        });
        match inner.tx.try_send(msg) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(msg)) => {
                match tokio::runtime::Handle::try_current() {
                    Ok(rt) => {
                        let this = self.clone();
                        rt.spawn(async move {
                            if let Some(inner) = &this.inner
                                && let Err(mpsc::error::SendError(msg)) = inner.tx.send(msg).await
                            {
                                this.refused(msg);
                            }
                        });
                    }
                    Err(_) => {
                        // No runtime on this thread (checked just above), so blocking
                        // here cannot stall or panic a tokio worker.
                        #[allow(clippy::disallowed_methods)]
                        let sent = inner.tx.blocking_send(msg);
                        if let Err(mpsc::error::SendError(msg)) = sent {
                            self.refused(msg);
                        }
                    }
                }
            }
            Err(mpsc::error::TrySendError::Closed(msg)) => self.refused(msg),
        }
    }

    fn refused(&self, msg: Msg) {
        self.counters.write_errors.fetch_add(1, Ordering::Relaxed);
        if let Msg::Record(r) = msg {
            tracing::error!(
                event = r.event.kind(),
                "audit log already closed; record not written"
            );
        }
    }

    /// Writes everything queued, syncs the file and stops the writer. Later
    /// records are refused (logged and counted as write errors).
    pub async fn close(&self) {
        let Some(inner) = &self.inner else { return };
        let (ack, done) = oneshot::channel();
        if inner.tx.send(Msg::Close(ack)).await.is_ok() {
            let _ = done.await;
        }
        let thread = inner.thread.lock().unwrap().take();
        if let Some(t) = thread {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
    }

    /// The writer's counts.
    pub fn counters(&self) -> Arc<Counters> {
        self.counters.clone()
    }

    /// Records written so far.
    pub fn records(&self) -> u64 {
        self.counters.records()
    }

    /// Write errors so far (see [`Counters::write_errors`]).
    pub fn write_errors(&self) -> u64 {
        self.counters.write_errors()
    }
}

#[cfg(test)]
mod tests;
