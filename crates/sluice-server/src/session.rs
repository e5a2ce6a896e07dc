//! A client session (2025-11-25 era): what the client negotiated, its
//! in-flight calls, the server-to-client requests awaiting its answer, and its
//! SSE streams with their bounded replay logs.

use serde_json::Value;
use sluice_mcp::Id;
use sluice_upstream::Reply;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;

/// Somewhere to send messages to the client: an SSE stream or stdout.
pub trait Outbound: Send + Sync {
    /// Queues one serialized JSON-RPC message. Returns false if it could not be queued.
    fn send(&self, msg: String) -> bool;
}

/// One client session.
pub struct Session {
    pub id: Arc<str>,
    pub protocol_version: &'static str,
    pub client_capabilities: Value,
    pub client_info: Value,
    created: Instant,
    last_active_ms: AtomicU64,
    pub(crate) closed: AtomicBool,
    pub(crate) log_level: Mutex<Option<String>>,
    /// Client request id → the task serving it (aborted on `notifications/cancelled`).
    pub(crate) inflight: Mutex<HashMap<Id, AbortHandle>>,
    /// Server-to-client requests awaiting the client's answer, by the id the client saw.
    pub(crate) awaiting: Mutex<HashMap<Id, oneshot::Sender<Reply>>>,
    pub(crate) subscriptions: Mutex<HashSet<String>>,
    /// Where messages tied to no request go (the standalone GET stream, or stdout).
    pub(crate) unsolicited: Mutex<Option<Arc<dyn Outbound>>>,
    pub(crate) streams: Mutex<Streams>,
}

impl Session {
    pub fn new(
        id: Arc<str>,
        protocol_version: &'static str,
        client_capabilities: Value,
        client_info: Value,
    ) -> Self {
        let s = Session {
            id,
            protocol_version,
            client_capabilities,
            client_info,
            created: Instant::now(),
            last_active_ms: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            log_level: Mutex::new(None),
            inflight: Mutex::new(HashMap::new()),
            awaiting: Mutex::new(HashMap::new()),
            subscriptions: Mutex::new(HashSet::new()),
            unsolicited: Mutex::new(None),
            streams: Mutex::new(Streams::default()),
        };
        s.touch();
        s
    }

    /// Records activity (for idle eviction and for choosing a session for unsolicited requests).
    pub fn touch(&self) {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        self.last_active_ms.store(ms, Ordering::Relaxed);
    }

    pub fn last_active_ms(&self) -> u64 {
        self.last_active_ms.load(Ordering::Relaxed)
    }

    pub fn age(&self) -> std::time::Duration {
        self.created.elapsed()
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    /// True when the client declared capability `name` at initialize.
    pub fn client_supports(&self, name: &str) -> bool {
        self.client_capabilities
            .get(name)
            .is_some_and(|v| !v.is_null())
    }

    /// Sets where unsolicited messages go.
    pub fn set_unsolicited(&self, out: Option<Arc<dyn Outbound>>) {
        *self.unsolicited.lock().unwrap() = out;
    }

    /// Sends a message tied to no request; false when the client has no open stream for it.
    pub fn send_unsolicited(&self, msg: String) -> bool {
        let out = self.unsolicited.lock().unwrap().clone();
        out.is_some_and(|o| o.send(msg))
    }

    /// Ends the session: aborts its calls and fails what awaits the client.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        for (_, h) in self.inflight.lock().unwrap().drain() {
            h.abort();
        }
        self.awaiting.lock().unwrap().clear();
        self.set_unsolicited(None);
        let mut streams = self.streams.lock().unwrap();
        for s in streams.by_id.values() {
            s.finish_without_message();
        }
        streams.by_id.clear();
    }
}

/// A session's SSE streams, by id, with finished ones kept briefly for replay.
#[derive(Default)]
pub(crate) struct Streams {
    next_id: u64,
    pub(crate) by_id: HashMap<u64, Arc<StreamLog>>,
    finished: VecDeque<u64>,
    pub(crate) standalone: Option<u64>,
}

/// Finished streams kept per session for `Last-Event-ID` replay.
const KEEP_FINISHED: usize = 16;

impl Streams {
    pub(crate) fn open(&mut self, cap: usize) -> Arc<StreamLog> {
        self.next_id += 1;
        let s = Arc::new(StreamLog::new(self.next_id, cap));
        self.by_id.insert(self.next_id, s.clone());
        s
    }

    /// Notes that a stream finished; drops the oldest finished ones beyond the bound.
    pub(crate) fn finished(&mut self, id: u64) {
        self.finished.push_back(id);
        while self.finished.len() > KEEP_FINISHED {
            if let Some(old) = self.finished.pop_front() {
                self.by_id.remove(&old);
            }
        }
    }

    pub(crate) fn forget(&mut self, id: u64) {
        self.by_id.remove(&id);
    }
}

/// One event of a stream: its sequence number and message (None closes the stream).
pub(crate) type StreamItem = (u64, Option<Arc<str>>);

/// An SSE stream's bounded event log and its live reader, if one is attached.
/// Messages are logged before they are sent, so a reader that reconnects with
/// `Last-Event-ID` gets every message it missed, once.
pub(crate) struct StreamLog {
    pub(crate) id: u64,
    inner: Mutex<LogInner>,
}

struct LogInner {
    events: VecDeque<(u64, Arc<str>)>,
    next_seq: u64,
    done: bool,
    cap: usize,
    live: Option<mpsc::UnboundedSender<StreamItem>>,
}

impl StreamLog {
    fn new(id: u64, cap: usize) -> Self {
        StreamLog {
            id,
            inner: Mutex::new(LogInner {
                events: VecDeque::new(),
                next_seq: 1,
                done: false,
                cap,
                live: None,
            }),
        }
    }

    /// Appends a message; `last` ends the stream after it.
    pub(crate) fn push(&self, msg: String, last: bool) -> bool {
        let mut g = self.inner.lock().unwrap();
        if g.done {
            return false;
        }
        let seq = g.next_seq;
        g.next_seq += 1;
        let msg: Arc<str> = msg.into();
        g.events.push_back((seq, msg.clone()));
        while g.events.len() > g.cap {
            g.events.pop_front();
        }
        if let Some(live) = &g.live
            && live.send((seq, Some(msg))).is_err()
        {
            g.live = None;
        }
        if last {
            g.done = true;
            if let Some(live) = g.live.take() {
                let _ = live.send((seq, None));
            }
        }
        true
    }

    pub(crate) fn finish_without_message(&self) {
        let mut g = self.inner.lock().unwrap();
        g.done = true;
        if let Some(live) = g.live.take() {
            let _ = live.send((0, None));
        }
    }

    /// Attaches a reader: returns the logged events after `after` and a
    /// receiver for the rest (ends at once if the stream is done).
    pub(crate) fn attach(
        &self,
        after: u64,
    ) -> (Vec<(u64, Arc<str>)>, mpsc::UnboundedReceiver<StreamItem>) {
        let mut g = self.inner.lock().unwrap();
        let replay = g
            .events
            .iter()
            .filter(|(s, _)| *s > after)
            .cloned()
            .collect();
        let (tx, rx) = mpsc::unbounded_channel();
        if g.done {
            let _ = tx.send((0, None));
        } else {
            g.live = Some(tx);
        }
        (replay, rx)
    }

    /// True while a reader is attached.
    pub(crate) fn has_reader(&self) -> bool {
        self.inner
            .lock()
            .unwrap()
            .live
            .as_ref()
            .is_some_and(|l| !l.is_closed())
    }
}

impl Outbound for StreamLog {
    fn send(&self, msg: String) -> bool {
        self.push(msg, false)
    }
}
