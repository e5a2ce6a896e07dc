//! The writer: one thread that owns the file, chains records and writes
//! them in batches.

use crate::chain::{GENESIS, Hasher, Line};
use crate::redact::Arguments;
use crate::verify::tail;
use crate::{Counters, Msg, Stamped};
use nix::fcntl::Flock;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// A batch is written at least this often while records keep coming.
const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// …or once it holds this many bytes.
const BATCH_BYTES: usize = 256 * 1024;
/// While writes fail, records are held up to this many bytes; past it the
/// writer stops taking records, so callers wait (nothing is dropped).
const MAX_PENDING: usize = 8 * 1024 * 1024;
/// After a batch the writer waits this long for more before it sleeps on
/// the channel again: records then reach the file within about this long.
const LINGER: Duration = Duration::from_millis(10);
/// Retries of a failed write: after this, doubling up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);
/// How much of the end of an existing log is read to find its last record.
const TAIL_BYTES: u64 = 1024 * 1024;

/// Why the log could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Opening or reading the file failed, or the writer thread did not start.
    #[error("cannot open the audit log {path}: {source}")]
    Io {
        /// The configured `audit.path`.
        path: PathBuf,
        /// The underlying failure.
        source: std::io::Error,
    },
    /// Another process holds the file's lock: two writers would fork the chain.
    #[error(
        "the audit log {path} is in use by another process (each gateway needs its own audit.path)"
    )]
    Locked {
        /// The configured `audit.path`.
        path: PathBuf,
    },
}

pub(crate) struct Writer {
    file: Flock<File>,
    path: PathBuf,
    hasher: Hasher,
    args: Arguments,
    counters: Arc<Counters>,
    /// The chain's head: the next `seq` and the last `hash`.
    next_seq: u64,
    prev: String,
    /// Lines built but not yet written, and how many of them (for the counter).
    pending: Vec<u8>,
    pending_records: u64,
    /// Bytes of `pending` already written (a write may stop part-way).
    written: usize,
    failing: bool,
}

impl Writer {
    /// Opens (creating) the log, locks it, and finds where its chain ends.
    pub(crate) fn open(
        path: &Path,
        hasher: Hasher,
        args: Arguments,
        counters: Arc<Counters>,
    ) -> Result<Writer, OpenError> {
        let io = |source| OpenError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(io)?;
        let mut file = match Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(f) => f,
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                return Err(OpenError::Locked {
                    path: path.to_path_buf(),
                });
            }
            Err((_, e)) => return Err(io(std::io::Error::from(e))),
        };
        let meta = file.metadata().map_err(io)?;
        // Not a regular file (a pipe, a device): nothing to continue from.
        let len = if meta.is_file() { meta.len() } else { 0 };
        let from = len.saturating_sub(TAIL_BYTES);
        let mut bytes = Vec::with_capacity((len - from) as usize);
        if len > 0 {
            file.seek(SeekFrom::Start(from)).map_err(io)?;
            (&mut *file)
                .take(len - from)
                .read_to_end(&mut bytes)
                .map_err(io)?;
        }
        let t = tail(&bytes, from == 0, &hasher);
        let mut w = Writer {
            file,
            path: path.to_path_buf(),
            hasher,
            args,
            counters,
            next_seq: 1,
            prev: GENESIS.to_string(),
            pending: Vec::new(),
            pending_records: 0,
            written: 0,
            failing: false,
        };
        if let Some((seq, hash)) = &t.last {
            w.next_seq = seq + 1;
            w.prev = hash.clone();
        }
        let mut reasons = Vec::new();
        if t.torn_lines > 0 {
            reasons.push(format!(
                "{} incomplete line(s) after the last record (a crash during a write?)",
                t.torn_lines
            ));
        }
        if t.last.is_none() && len > 0 {
            reasons.push("no readable record at the end of the file".to_string());
        }
        if t.last.is_some() && !t.verifies {
            reasons.push(
                "the last record does not verify with the configured key (the key changed, or the record was altered)"
                    .to_string(),
            );
        }
        if t.open_line {
            // The torn bytes become a line of their own.
            w.pending.push(b'\n');
        }
        if !reasons.is_empty() {
            let reason = reasons.join("; ");
            tracing::error!(path = %path.display(), %reason, "audit log: the end of the existing log is damaged; a new chain segment starts with a chain_restart record");
            let ts = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
            let mut line = Line::start(&mut w.pending, w.next_seq, &ts, "chain_restart");
            line.str("reason", &reason);
            w.prev = line.finish(&w.prev, &w.hasher);
            w.next_seq += 1;
            w.pending_records += 1;
            w.flush();
        }
        tracing::info!(path = %path.display(), next_seq = w.next_seq, "audit log open");
        Ok(w)
    }

    /// Serves the channel until it closes or a `Close` arrives.
    ///
    /// The first record after a quiet spell wakes the writer; it writes the
    /// batch, then lingers [`LINGER`] and takes what came meanwhile as the
    /// next batch, so a busy gateway does not pay a thread wake-up per record.
    pub(crate) async fn run(mut self, mut rx: mpsc::Receiver<Msg>) {
        let mut backoff = RETRY_FIRST;
        let mut acks = Vec::new();
        'serve: loop {
            // While writes fail and the backlog is full, take nothing: callers wait.
            if self.failing && self.pending.len() >= MAX_PENDING {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(RETRY_MAX);
                self.flush();
                continue;
            }
            let first = if self.failing {
                match tokio::time::timeout(backoff, rx.recv()).await {
                    Ok(m) => m,
                    Err(_) => {
                        backoff = (backoff * 2).min(RETRY_MAX);
                        self.flush();
                        continue;
                    }
                }
            } else {
                rx.recv().await
            };
            let Some(first) = first else { break };
            if !self.take(first, &mut acks) {
                break;
            }
            loop {
                if !self.drain(&mut rx, &mut acks) {
                    break 'serve;
                }
                // The channel is drained (or the backlog full): write the batch.
                self.flush();
                if self.failing {
                    break;
                }
                backoff = RETRY_FIRST;
                tokio::time::sleep(LINGER).await;
                if rx.is_empty() {
                    break;
                }
            }
        }
        // Closing: take what is queued, then write it all and sync.
        rx.close();
        while let Some(m) = rx.recv().await {
            match m {
                Msg::Record(r) => self.append(r),
                Msg::Close(ack) => acks.push(ack),
            }
        }
        for attempt in 0..5 {
            self.flush();
            if !self.failing {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
        }
        if self.failing {
            let lost = self.pending_records;
            tracing::error!(path = %self.path.display(), records = lost, "audit log: could not write the last records before closing; they are lost");
        }
        if let Err(e) = self.file.sync_all() {
            self.counters.write_errors.fetch_add(1, Ordering::Relaxed);
            tracing::error!(path = %self.path.display(), error = %e, "audit log: fsync failed on close");
        }
        tracing::info!(path = %self.path.display(), last_seq = self.next_seq - 1, head = %self.prev, "audit log closed");
        for ack in acks {
            let _ = ack.send(());
        }
    }

    /// Takes one message; false for `Close`.
    fn take(&mut self, m: Msg, acks: &mut Vec<tokio::sync::oneshot::Sender<()>>) -> bool {
        match m {
            Msg::Record(r) => {
                self.append(r);
                true
            }
            Msg::Close(ack) => {
                acks.push(ack);
                false
            }
        }
    }

    /// Takes what is queued, writing every [`FLUSH_EVERY`] or [`BATCH_BYTES`]
    /// on the way; false when a `Close` came.
    fn drain(
        &mut self,
        rx: &mut mpsc::Receiver<Msg>,
        acks: &mut Vec<tokio::sync::oneshot::Sender<()>>,
    ) -> bool {
        let mut batch_start = Instant::now();
        while !(self.failing && self.pending.len() >= MAX_PENDING) {
            let Ok(m) = rx.try_recv() else { break };
            if !self.take(m, acks) {
                return false;
            }
            if self.pending.len() >= BATCH_BYTES || batch_start.elapsed() >= FLUSH_EVERY {
                self.flush();
                batch_start = Instant::now();
            }
        }
        true
    }

    fn append(&mut self, mut r: Stamped) {
        let ts = humantime::format_rfc3339_millis(r.at).to_string();
        let mut line = Line::start(&mut self.pending, self.next_seq, &ts, r.event.kind());
        r.event.write(&mut line, &self.args);
        self.prev = line.finish(&self.prev, &self.hasher);
        self.next_seq += 1;
        self.pending_records += 1;
    }

    /// Writes what is pending; on failure keeps the unwritten rest for the next try.
    fn flush(&mut self) {
        while self.written < self.pending.len() {
            match self.file.write(&self.pending[self.written..]) {
                Ok(0) => {
                    self.fail(&std::io::Error::from(std::io::ErrorKind::WriteZero));
                    return;
                }
                Ok(n) => self.written += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.fail(&e);
                    return;
                }
            }
        }
        if self.failing {
            tracing::info!(path = %self.path.display(), "audit log: writing again");
            self.failing = false;
        }
        self.counters
            .records
            .fetch_add(self.pending_records, Ordering::Relaxed);
        self.pending.clear();
        self.pending_records = 0;
        self.written = 0;
    }

    fn fail(&mut self, e: &std::io::Error) {
        self.counters.write_errors.fetch_add(1, Ordering::Relaxed);
        tracing::error!(path = %self.path.display(), error = %e, pending_records = self.pending_records, "audit log: write failed; records are held and the write retried");
        self.failing = true;
    }
}
