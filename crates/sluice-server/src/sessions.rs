//! Sessions in the store: any replica serves any session.
//!
//! The store holds each session's record and the event logs of its SSE
//! streams; this replica caches the sessions it serves, with what lives only
//! here (calls in flight, requests awaiting the client, attached readers).
//! Messages that must reach another replica (a client's answer to a request
//! that replica is waiting on, a cancellation, a notification for a stream it
//! holds, the end of a session, a 2026 retry for a call parked elsewhere:
//! `relay.rs`) travel on the store's bus.

use crate::gateway::{Gateway, Initialized};
use crate::session::{LogOp, Session, now_ms};
use sluice_mcp::jsonrpc::{Id, Message};
use sluice_store::{BusMessage, Event, Store, StoreError};
use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::mpsc;

/// How often this replica refreshes a session it serves in the store.
const TOUCH_EVERY_MS: u64 = 1000;
/// Heartbeat period and lifetime of a replica's liveness key.
const HEARTBEAT: Duration = Duration::from_secs(2);
const HEARTBEAT_TTL: Duration = Duration::from_secs(6);

/// Why a session could not be created.
#[derive(Debug)]
pub(crate) enum CreateError {
    /// `sessions.max_sessions` is reached.
    Full(usize),
    Store(StoreError),
}

impl Gateway {
    /// Starts the store's helpers: the ordered event writer, the bus
    /// listener and the replica heartbeat.
    pub(crate) fn start_store_tasks(self: &Arc<Self>, writer_rx: mpsc::UnboundedReceiver<LogOp>) {
        tokio::spawn(write_events(Arc::downgrade(self), writer_rx));
        if let Some(bus) = self.store.bus() {
            let mut inbox = bus.listen(&self.replica);
            let gw = Arc::downgrade(self);
            tokio::spawn(async move {
                while let Some(msg) = inbox.recv().await {
                    let Some(gw) = gw.upgrade() else { return };
                    gw.on_bus(msg);
                }
            });
            let gw = Arc::downgrade(self);
            tokio::spawn(async move {
                loop {
                    let Some(g) = gw.upgrade() else { return };
                    if let Err(e) = g.store.heartbeat(&g.replica, HEARTBEAT_TTL).await {
                        tracing::warn!(error = %e, "replica heartbeat failed");
                    }
                    drop(g);
                    tokio::time::sleep(HEARTBEAT).await;
                }
            });
        }
    }

    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    /// This replica's id (unique per process).
    pub(crate) fn replica(&self) -> &str {
        &self.replica
    }

    /// Creates a session for an accepted initialize.
    pub(crate) async fn create_session(
        &self,
        init: Initialized,
        caller: &crate::session::Caller,
    ) -> Result<Arc<Session>, CreateError> {
        let max = self.config.sessions.max_sessions;
        let count = self.store.count().await.map_err(CreateError::Store)?;
        if count >= max {
            return Err(CreateError::Full(max));
        }
        let id: Arc<str> = uuid::Uuid::new_v4().simple().to_string().into();
        let sess = Arc::new(Session::new(
            id,
            init.protocol_version,
            init.capabilities,
            init.client_info,
            caller,
        ));
        self.store
            .create(&sess.to_record())
            .await
            .map_err(CreateError::Store)?;
        self.cache(sess.clone());
        Ok(sess)
    }

    fn cache(&self, s: Arc<Session>) {
        self.sessions.write().unwrap().insert(s.id.clone(), s);
    }

    /// Registers a session that lives only in this process (stdio mode).
    pub(crate) fn register_local(&self, s: Arc<Session>) {
        self.cache(s);
    }

    /// Forgets a local-only session.
    pub(crate) fn forget_local(&self, id: &str) {
        if let Some(s) = self.sessions.write().unwrap().remove(id) {
            s.close();
        }
        self.stop_isolated(id);
    }

    /// The session `id`, from this replica's cache or the store; `None` if it
    /// ended or never existed.
    pub(crate) async fn find_session(&self, id: &str) -> Result<Option<Arc<Session>>, StoreError> {
        let cached = self.sessions.read().unwrap().get(id).cloned();
        if let Some(s) = cached {
            let last = s.stored_touch_ms.load(std::sync::atomic::Ordering::Relaxed);
            let now = now_ms();
            if now.saturating_sub(last) < TOUCH_EVERY_MS {
                return Ok(Some(s));
            }
            // Refresh it in the store, which also tells whether another
            // replica ended it meanwhile.
            s.stored_touch_ms
                .store(now, std::sync::atomic::Ordering::Relaxed);
            if self.store.touch(id).await? {
                return Ok(Some(s));
            }
            self.forget_local(id);
            return Ok(None);
        }
        match self.store.get(id).await? {
            Some(rec) => {
                let s = Arc::new(Session::from_record(&rec));
                tracing::debug!(session = %id, "session loaded from the store");
                self.cache(s.clone());
                Ok(Some(s))
            }
            None => Ok(None),
        }
    }

    /// Writes a session's changed record (log level, subscriptions, stream owner).
    pub(crate) async fn save_session(&self, s: &Session) {
        if let Err(e) = self.store.update(&s.to_record()).await {
            tracing::warn!(session = %s.id, error = %e, "session change not saved");
        }
    }

    /// Ends a session everywhere; false if it did not exist.
    pub(crate) async fn end_session(&self, id: &str) -> Result<bool, StoreError> {
        let existed = self.store.delete(id).await?;
        self.forget_local(id);
        if let Some(bus) = self.store.bus()
            && let Err(e) = bus
                .send(None, &BusMessage::SessionEnded { session: id.into() })
                .await
        {
            tracing::warn!(session = %id, error = %e, "could not tell other replicas a session ended");
        }
        Ok(existed)
    }

    /// Ends sessions idle longer than `idle` (in the store), and forgets
    /// cached ones this replica has not used for as long.
    pub(crate) async fn evict_idle(&self, idle: Duration) -> usize {
        let ended = match self.store.evict_idle(idle).await {
            Ok(ids) => ids,
            Err(e) => {
                tracing::warn!(error = %e, "idle eviction skipped");
                Vec::new()
            }
        };
        for id in &ended {
            self.forget_local(id);
        }
        let cutoff = now_ms().saturating_sub(idle.as_millis() as u64);
        let stale: Vec<Arc<str>> = self
            .sessions
            .read()
            .unwrap()
            .values()
            .filter(|s| s.last_active_ms() < cutoff && s.inflight.lock().unwrap().is_empty())
            .map(|s| s.id.clone())
            .collect();
        for id in &stale {
            self.sessions.write().unwrap().remove(id);
            self.stop_isolated(id);
        }
        ended.len()
    }

    /// A client's answer to a server-to-client request that another replica is waiting on.
    pub(crate) fn forward_response(&self, sess: &Session, id: &Id, message: String) -> bool {
        let Some(owner) = request_owner(id) else {
            return false;
        };
        if owner == &*self.replica {
            return false;
        }
        let Some(bus) = self.store.bus() else {
            return false;
        };
        let msg = BusMessage::ClientResponse {
            session: sess.id.to_string(),
            message,
        };
        let owner = owner.to_string();
        tokio::spawn(async move {
            if let Err(e) = bus.send(Some(&owner), &msg).await {
                tracing::warn!(error = %e, "client response could not reach its replica");
            }
        });
        true
    }

    /// A cancellation for a request this replica does not run: every replica checks.
    pub(crate) fn forward_cancel(&self, sess: &Session, request_id: serde_json::Value) {
        if let Some(bus) = self.store.bus() {
            let msg = BusMessage::Cancel {
                session: sess.id.to_string(),
                request_id,
            };
            tokio::spawn(async move {
                let _ = bus.send(None, &msg).await;
            });
        }
    }

    /// Sends a message tied to no request to the session's standalone stream,
    /// wherever it is open.
    pub(crate) fn deliver_unsolicited(self: &Arc<Self>, sess: &Arc<Session>, line: String) {
        if sess.send_unsolicited(line.clone()) {
            return;
        }
        let Some(bus) = self.store.bus() else {
            self.metrics.drop("no_open_stream");
            tracing::debug!(session = %sess.id, "no open stream for a notification; dropped");
            return;
        };
        let gw = self.clone();
        let id = sess.id.to_string();
        tokio::spawn(async move {
            let owner = match gw.store.get(&id).await {
                Ok(Some(rec)) => rec.standalone_owner,
                _ => None,
            };
            match owner.filter(|o| o.as_str() != &*gw.replica) {
                Some(owner) => {
                    let msg = BusMessage::Unsolicited {
                        session: id,
                        message: line,
                    };
                    if bus.send(Some(&owner), &msg).await.is_err() {
                        gw.metrics.drop("no_open_stream");
                    }
                }
                None => gw.metrics.drop("no_open_stream"),
            }
        });
    }

    fn on_bus(self: &Arc<Self>, msg: BusMessage) {
        let local = |id: &str| self.sessions.read().unwrap().get(id).cloned();
        match msg {
            BusMessage::ClientResponse { session, message } => {
                let Some(s) = local(&session) else { return };
                if let Ok(Message::Response(r)) = Message::parse(message.as_bytes()) {
                    self.handle_local_response(&s, r);
                }
            }
            BusMessage::Cancel {
                session,
                request_id,
            } => {
                let Some(s) = local(&session) else { return };
                if let Ok(id) = serde_json::from_value::<Id>(request_id)
                    && let Some(task) = s.inflight.lock().unwrap().remove(&id)
                {
                    task.abort();
                }
            }
            BusMessage::Unsolicited { session, message } => {
                let delivered = local(&session).is_some_and(|s| s.send_unsolicited(message));
                if !delivered {
                    self.metrics.drop("no_open_stream");
                }
            }
            BusMessage::SessionEnded { session } => self.forget_local(&session),
            BusMessage::MrtrRetry {
                key,
                id,
                responses,
                reply_to,
                corr,
            } => self.serve_relayed(key, id, responses, reply_to, corr),
            BusMessage::MrtrAnswer { corr, line, status } => {
                self.relayed_answer(&corr, line, status)
            }
            BusMessage::MrtrCancel { corr } => self.cancel_relayed(&corr),
        }
    }
}

/// The replica that issued a server-to-client request id (`sluice-{replica}-{n}`).
fn request_owner(id: &Id) -> Option<&str> {
    match id {
        Id::Str(s) => s.strip_prefix("sluice-")?.rsplit_once('-').map(|(r, _)| r),
        Id::Num(_) => None,
    }
}

/// Writes stream events and metadata to the store in order, batching what
/// is queued, and publishes live events for replicas following a stream.
async fn write_events(gw: Weak<Gateway>, mut rx: mpsc::UnboundedReceiver<LogOp>) {
    let mut batch = Vec::new();
    while rx.recv_many(&mut batch, 256).await > 0 {
        let Some(gw) = gw.upgrade() else { return };
        let bus = gw.store.bus();
        let mut events: HashMap<(Arc<str>, Arc<str>), Vec<Event>> = HashMap::new();
        let mut order: Vec<(Arc<str>, Arc<str>)> = Vec::new();
        let mut metas = Vec::new();
        for op in batch.drain(..) {
            match op {
                LogOp::Event {
                    session,
                    stream,
                    event,
                } => {
                    let key = (session, stream);
                    if !events.contains_key(&key) {
                        order.push(key.clone());
                    }
                    events.entry(key).or_default().push(event);
                }
                LogOp::Meta {
                    session,
                    stream,
                    meta,
                } => metas.push((session, stream, meta)),
            }
        }
        for key in order {
            let evs = events.remove(&key).unwrap_or_default();
            if let Err(e) = gw.store.append(&key.0, &key.1, &evs).await {
                tracing::warn!(session = %key.0, error = %e, "stream events not stored; they cannot be replayed elsewhere");
            }
            if let Some(bus) = &bus {
                for ev in &evs {
                    let _ = bus
                        .stream_event(&key.0, &key.1, ev.seq, Some(&ev.data))
                        .await;
                }
            }
        }
        for (session, stream, meta) in metas {
            if let Err(e) = gw.store.set_stream(&session, &stream, &meta).await {
                tracing::warn!(session = %session, error = %e, "stream state not stored");
            }
            if meta.done
                && let Some(bus) = &bus
            {
                let _ = bus.stream_event(&session, &stream, u64::MAX, None).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn request_ids_name_their_replica() {
        use sluice_mcp::Id;
        assert_eq!(
            super::request_owner(&Id::Str("sluice-ab12-7".into())),
            Some("ab12")
        );
        assert_eq!(super::request_owner(&Id::Str("other".into())), None);
        assert_eq!(super::request_owner(&Id::Num(3)), None);
    }
}
