//! A client session (2025-11-25 era): what the client negotiated, its
//! in-flight calls, the server-to-client requests awaiting its answer, and its
//! SSE streams with their bounded replay logs.

use serde_json::Value;
use sluice_mcp::Id;
use sluice_store::{Event, SessionRecord, StreamMeta};
use sluice_upstream::Reply;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;

/// Who is on the other end of a request, as the front end learned it: a
/// session made for the request (by `initialize`, or for one 2026 request) is
/// bound to its principal and knows its address.
#[derive(Clone, Default)]
pub(crate) struct Caller {
    /// The client's address (HTTP front ends).
    pub(crate) remote: Option<std::net::SocketAddr>,
    /// The principal authentication found, when it is on.
    pub(crate) principal: Option<sluice_pipeline::Principal>,
}

/// Somewhere to send messages to the client: an SSE stream or stdout.
pub(crate) trait Outbound: Send + Sync {
    /// Queues one serialized JSON-RPC message. Returns false if it could not be queued.
    fn send(&self, msg: String) -> bool;
}

/// One client session, as this replica knows it: the stored record's
/// fields, plus what lives only here (calls in flight, requests awaiting the
/// client, streams with a reader attached).
pub(crate) struct Session {
    pub(crate) id: Arc<str>,
    pub(crate) protocol_version: &'static str,
    pub(crate) client_capabilities: Value,
    pub(crate) client_info: Value,
    /// The id of the principal that created the session: only it may use
    /// the session (another gets 404). `None` when authentication is off.
    pub(crate) principal: Option<String>,
    /// The principal as verified at the session's latest request (its
    /// tenant and scopes), for the pipeline's `RequestCtx`.
    authenticated: Mutex<Option<sluice_pipeline::Principal>>,
    /// The replica holding this session's standalone stream.
    pub(crate) standalone_owner: Mutex<Option<String>>,
    created_ms: u64,
    /// When this replica last refreshed the session in the store (ms).
    pub(crate) stored_touch_ms: AtomicU64,
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
    /// The client's address at its latest HTTP request (for the audit log).
    remote: Mutex<Option<std::net::SocketAddr>>,
}

impl Session {
    pub(crate) fn new(
        id: Arc<str>,
        protocol_version: &'static str,
        client_capabilities: Value,
        client_info: Value,
        caller: &Caller,
    ) -> Self {
        let authenticated = caller.principal.clone();
        let s = Session {
            id,
            protocol_version,
            client_capabilities,
            client_info,
            principal: authenticated.as_ref().map(|p| p.id.to_string()),
            authenticated: Mutex::new(authenticated),
            standalone_owner: Mutex::new(None),
            created_ms: now_ms(),
            stored_touch_ms: AtomicU64::new(now_ms()),
            last_active_ms: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            log_level: Mutex::new(None),
            inflight: Mutex::new(HashMap::new()),
            awaiting: Mutex::new(HashMap::new()),
            subscriptions: Mutex::new(HashSet::new()),
            unsolicited: Mutex::new(None),
            streams: Mutex::new(Streams::default()),
            remote: Mutex::new(caller.remote),
        };
        s.touch();
        s
    }

    /// A session as stored by any replica.
    pub(crate) fn from_record(rec: &SessionRecord) -> Self {
        let version = sluice_mcp::version::supported(&rec.protocol_version)
            .unwrap_or(sluice_mcp::version::LATEST);
        let mut s = Session::new(
            rec.id.as_str().into(),
            version,
            rec.client_capabilities.clone(),
            rec.client_info.clone(),
            &Caller::default(),
        );
        // Bound to whoever created it, not to the request that loads it.
        s.principal = rec.principal.clone();
        *s.authenticated.get_mut().unwrap() = None;
        *s.standalone_owner.get_mut().unwrap() = rec.standalone_owner.clone();
        s.created_ms = rec.created_ms;
        *s.log_level.get_mut().unwrap() = rec.log_level.clone();
        s.subscriptions
            .get_mut()
            .unwrap()
            .extend(rec.subscriptions.iter().cloned());
        s
    }

    /// The record other replicas need to serve this session.
    pub(crate) fn to_record(&self) -> SessionRecord {
        let mut subscriptions: Vec<String> =
            self.subscriptions.lock().unwrap().iter().cloned().collect();
        subscriptions.sort();
        SessionRecord {
            id: self.id.to_string(),
            protocol_version: self.protocol_version.to_string(),
            client_capabilities: self.client_capabilities.clone(),
            client_info: self.client_info.clone(),
            principal: self.principal.clone(),
            log_level: self.log_level.lock().unwrap().clone(),
            subscriptions,
            standalone_owner: self.standalone_owner.lock().unwrap().clone(),
            created_ms: self.created_ms,
        }
    }

    /// The client's address at its latest HTTP request, if known.
    pub(crate) fn remote(&self) -> Option<std::net::SocketAddr> {
        *self.remote.lock().unwrap()
    }

    /// The principal verified at the session's latest request, if any.
    pub(crate) fn authenticated(&self) -> Option<sluice_pipeline::Principal> {
        self.authenticated.lock().unwrap().clone()
    }

    /// Records the principal verified for the request being served (the
    /// front end has checked it is the one the session is bound to).
    pub(crate) fn set_authenticated(&self, p: Option<sluice_pipeline::Principal>) {
        if p.is_some() {
            *self.authenticated.lock().unwrap() = p;
        }
    }

    pub(crate) fn set_remote(&self, addr: Option<std::net::SocketAddr>) {
        if addr.is_some() {
            *self.remote.lock().unwrap() = addr;
        }
    }

    /// Records activity (for idle eviction and for choosing a session for unsolicited requests).
    pub(crate) fn touch(&self) {
        self.last_active_ms.store(now_ms(), Ordering::Relaxed);
    }

    pub(crate) fn last_active_ms(&self) -> u64 {
        self.last_active_ms.load(Ordering::Relaxed)
    }

    /// True when the client declared capability `name` at initialize.
    pub(crate) fn client_supports(&self, name: &str) -> bool {
        self.client_capabilities
            .get(name)
            .is_some_and(|v| !v.is_null())
    }

    /// Sets where unsolicited messages go.
    pub(crate) fn set_unsolicited(&self, out: Option<Arc<dyn Outbound>>) {
        *self.unsolicited.lock().unwrap() = out;
    }

    /// Sends a message tied to no request; false when the client has no open stream for it.
    pub(crate) fn send_unsolicited(&self, msg: String) -> bool {
        let out = self.unsolicited.lock().unwrap().clone();
        out.is_some_and(|o| o.send(msg))
    }

    /// Ends the session: aborts its calls and fails what awaits the client.
    pub(crate) fn close(&self) {
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

/// A session's SSE streams on this replica, by id, with finished ones kept
/// briefly for replay.
#[derive(Default)]
pub(crate) struct Streams {
    next_id: u64,
    pub(crate) by_id: HashMap<Arc<str>, Arc<StreamLog>>,
    finished: VecDeque<Arc<str>>,
    pub(crate) standalone: Option<Arc<str>>,
}

/// Finished streams kept per session for `Last-Event-ID` replay.
const KEEP_FINISHED: usize = 16;

impl Streams {
    /// Opens a stream whose id is unique across replicas (`{replica}x{n}`).
    pub(crate) fn open(&mut self, replica: &str, cap: usize) -> Arc<StreamLog> {
        self.next_id += 1;
        let id: Arc<str> = format!("{replica}x{:x}", self.next_id).into();
        let s = Arc::new(StreamLog::new(id.clone(), cap));
        self.by_id.insert(id, s.clone());
        s
    }

    /// Open streams with a reader attached.
    pub(crate) fn open_count(&self) -> usize {
        self.by_id.values().filter(|s| s.has_reader()).count()
    }

    /// Notes that a stream finished; drops the oldest finished ones beyond the bound.
    pub(crate) fn finished(&mut self, id: Arc<str>) {
        self.finished.push_back(id);
        while self.finished.len() > KEEP_FINISHED {
            if let Some(old) = self.finished.pop_front() {
                self.by_id.remove(&old);
            }
        }
    }

    pub(crate) fn forget(&mut self, id: &str) {
        self.by_id.remove(id);
    }
}

/// One event of a stream: its sequence number and message (None closes the stream).
pub(crate) type StreamItem = (u64, Option<Arc<str>>);

/// An SSE stream's bounded event log and its live reader, if one is attached.
/// Messages are logged before they are sent, so a reader that reconnects with
/// `Last-Event-ID` gets every message it missed, once.
pub(crate) struct StreamLog {
    pub(crate) id: Arc<str>,
    inner: Mutex<LogInner>,
}

struct LogInner {
    events: VecDeque<(u64, Arc<str>)>,
    next_seq: u64,
    done: bool,
    cap: usize,
    live: Option<mpsc::UnboundedSender<StreamItem>>,
    /// Set once the stream is an SSE stream: its events also go to the store.
    persist: Option<Persist>,
}

/// Where a persisted stream's events go: the gateway's store writer.
pub(crate) struct Persist {
    pub writer: mpsc::UnboundedSender<LogOp>,
    pub session: Arc<str>,
    pub meta: StreamMeta,
}

/// A write for the store, done in order by the gateway's writer task.
pub(crate) enum LogOp {
    Event {
        session: Arc<str>,
        stream: Arc<str>,
        event: Event,
    },
    Meta {
        session: Arc<str>,
        stream: Arc<str>,
        meta: StreamMeta,
    },
}

impl StreamLog {
    fn new(id: Arc<str>, cap: usize) -> Self {
        StreamLog {
            id,
            inner: Mutex::new(LogInner {
                events: VecDeque::new(),
                next_seq: 1,
                done: false,
                cap,
                live: None,
                persist: None,
            }),
        }
    }

    /// From now on, also write this stream's events (those logged so far
    /// included) to the store, so any replica can replay them.
    pub(crate) fn persist(&self, p: Persist) {
        let mut g = self.inner.lock().unwrap();
        let _ = p.writer.send(LogOp::Meta {
            session: p.session.clone(),
            stream: self.id.clone(),
            meta: StreamMeta {
                done: g.done,
                ..p.meta.clone()
            },
        });
        for (seq, data) in &g.events {
            let _ = p.writer.send(LogOp::Event {
                session: p.session.clone(),
                stream: self.id.clone(),
                event: Event {
                    seq: *seq,
                    data: data.to_string(),
                },
            });
        }
        g.persist = Some(p);
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
        if let Some(p) = &g.persist {
            let _ = p.writer.send(LogOp::Event {
                session: p.session.clone(),
                stream: self.id.clone(),
                event: Event {
                    seq,
                    data: msg.to_string(),
                },
            });
            if last {
                let _ = p.writer.send(LogOp::Meta {
                    session: p.session.clone(),
                    stream: self.id.clone(),
                    meta: StreamMeta {
                        done: true,
                        ..p.meta.clone()
                    },
                });
            }
        }
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
        if let Some(p) = &g.persist {
            let _ = p.writer.send(LogOp::Meta {
                session: p.session.clone(),
                stream: self.id.clone(),
                meta: StreamMeta {
                    done: true,
                    ..p.meta.clone()
                },
            });
        }
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
