//! Redis: sessions and event logs shared by every replica, plus a pub/sub bus
//! that carries what must reach the replica holding a call or a stream.
//!
//! Keys (under the configured prefix): `s:{id}` the record (expires after the
//! idle timeout, refreshed on use), `sessions` a sorted set by last use (count
//! and eviction), `e:{id}:{stream}` the event log (a capped list),
//! `st:{id}:{stream}` stream metadata, `r:{replica}` replica heartbeats.
//! Channels: `replica:{id}` and `all` for bus messages, `stream:{id}:{stream}`
//! for live events of a stream being followed on another replica.

use crate::{Event, LogBounds, SessionRecord, StoreError, StreamMeta, now_ms};
use futures_util::StreamExt;
use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, mpsc};

/// How long a store operation may take before the store counts as unavailable.
const OP_TIMEOUT: Duration = Duration::from_secs(2);

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable {
        store: "redis",
        reason: e.to_string(),
    }
}

/// A connection made on first use and re-made after an outage.
pub(crate) struct Lazy {
    pub(crate) client: redis::Client,
    pub(crate) conn: Mutex<Option<ConnectionManager>>,
}

impl Lazy {
    pub(crate) async fn get(&self) -> Result<ConnectionManager, StoreError> {
        let mut g = self.conn.lock().await;
        if let Some(c) = g.as_ref() {
            return Ok(c.clone());
        }
        let cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(OP_TIMEOUT))
            .set_response_timeout(Some(OP_TIMEOUT))
            .set_number_of_retries(1);
        let c = tokio::time::timeout(
            OP_TIMEOUT,
            ConnectionManager::new_with_config(self.client.clone(), cfg),
        )
        .await
        .map_err(|_| unavailable("connecting timed out"))?
        .map_err(unavailable)?;
        *g = Some(c.clone());
        Ok(c)
    }
}

pub struct RedisStore {
    lazy: Arc<Lazy>,
    prefix: String,
    idle: Duration,
    bounds: LogBounds,
}

impl RedisStore {
    pub(crate) async fn open(
        url: &str,
        prefix: &str,
        idle: Duration,
        bounds: LogBounds,
    ) -> Result<Self, StoreError> {
        let client =
            redis::Client::open(url).map_err(|e| unavailable(format!("bad redis_url: {e}")))?;
        let store = RedisStore {
            lazy: Arc::new(Lazy {
                client,
                conn: Mutex::new(None),
            }),
            prefix: prefix.to_string(),
            idle,
            bounds,
        };
        if let Err(e) = store.lazy.get().await {
            // Start anyway: requests fail with 503 until Redis answers.
            tracing::warn!(error = %e, "Redis is not reachable yet; sessions are unavailable until it is");
        }
        Ok(store)
    }

    fn key(&self, parts: &[&str]) -> String {
        let mut k = self.prefix.clone();
        k.push_str(&parts.join(":"));
        k
    }

    async fn op<T>(
        &self,
        f: impl AsyncFnOnce(&mut ConnectionManager) -> redis::RedisResult<T>,
    ) -> Result<T, StoreError> {
        let mut c = self.lazy.get().await?;
        match tokio::time::timeout(OP_TIMEOUT, f(&mut c)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(unavailable(e)),
            Err(_) => Err(unavailable("the operation timed out")),
        }
    }

    fn idle_secs(&self) -> u64 {
        self.idle.as_secs().max(1)
    }

    pub(crate) async fn put(&self, rec: &SessionRecord) -> Result<(), StoreError> {
        let json = serde_json::to_string(rec).expect("record serializes");
        let (k, z, ttl) = (
            self.key(&["s", &rec.id]),
            self.key(&["sessions"]),
            self.idle_secs(),
        );
        let id = rec.id.clone();
        self.op(async move |c| {
            redis::pipe()
                .set_ex(&k, json, ttl)
                .zadd(&z, &id, now_ms())
                .query_async::<()>(c)
                .await
        })
        .await
    }

    pub(crate) async fn get(&self, id: &str) -> Result<Option<SessionRecord>, StoreError> {
        let k = self.key(&["s", id]);
        let json: Option<String> = self.op(async move |c| c.get(&k).await).await?;
        json.map(|j| {
            serde_json::from_str(&j).map_err(|e| StoreError::Corrupt {
                store: "redis",
                reason: e.to_string(),
            })
        })
        .transpose()
    }

    pub(crate) async fn touch(&self, id: &str) -> Result<bool, StoreError> {
        let (k, z, ttl) = (
            self.key(&["s", id]),
            self.key(&["sessions"]),
            self.idle_secs(),
        );
        let id = id.to_string();
        self.op(async move |c| {
            let alive: bool = c.expire(&k, ttl as i64).await?;
            if alive {
                let _: () = c.zadd(&z, &id, now_ms()).await?;
            }
            Ok(alive)
        })
        .await
    }

    pub(crate) async fn delete(&self, id: &str) -> Result<bool, StoreError> {
        let (k, z) = (self.key(&["s", id]), self.key(&["sessions"]));
        let pattern_e = self.key(&["e", id, "*"]);
        let pattern_st = self.key(&["st", id, "*"]);
        let id = id.to_string();
        self.op(async move |c| {
            let mut extra: Vec<String> = Vec::new();
            for pat in [&pattern_e, &pattern_st] {
                let mut it: redis::AsyncIter<String> = c.scan_match(pat).await?;
                while let Some(k) = it.next().await {
                    extra.push(k?);
                }
            }
            let removed: i64 = c.del(&k).await?;
            let _: () = c.zrem(&z, &id).await?;
            if !extra.is_empty() {
                let _: () = c.del(extra).await?;
            }
            Ok(removed > 0)
        })
        .await
    }

    pub(crate) async fn count(&self) -> Result<usize, StoreError> {
        let z = self.key(&["sessions"]);
        self.op(async move |c| c.zcard(&z).await).await
    }

    pub(crate) async fn evict_idle(&self, idle: Duration) -> Result<Vec<String>, StoreError> {
        let z = self.key(&["sessions"]);
        let cutoff = now_ms().saturating_sub(idle.as_millis() as u64);
        let ids: Vec<String> = self
            .op(async move |c| c.zrangebyscore(&z, 0u64, cutoff).await)
            .await?;
        for id in &ids {
            self.delete(id).await?;
        }
        Ok(ids)
    }

    pub(crate) async fn append(
        &self,
        session: &str,
        stream: &str,
        events: &[Event],
    ) -> Result<(), StoreError> {
        let k = self.key(&["e", session, stream]);
        let now = now_ms();
        let items: Vec<String> = events
            .iter()
            .map(|e| format!("{} {} {}", e.seq, now, e.data))
            .collect();
        let (max, ttl) = (self.bounds.max_events as isize, self.idle_secs());
        self.op(async move |c| {
            redis::pipe()
                .rpush(&k, items)
                .ltrim(&k, -max, -1)
                .expire(&k, ttl as i64)
                .query_async::<()>(c)
                .await
        })
        .await
    }

    pub(crate) async fn events_after(
        &self,
        session: &str,
        stream: &str,
        after: u64,
    ) -> Result<Vec<Event>, StoreError> {
        let k = self.key(&["e", session, stream]);
        let items: Vec<String> = self.op(async move |c| c.lrange(&k, 0, -1).await).await?;
        let oldest = now_ms().saturating_sub(self.bounds.max_age.as_millis() as u64);
        Ok(items
            .into_iter()
            .filter_map(|it| {
                let mut parts = it.splitn(3, ' ');
                let seq: u64 = parts.next()?.parse().ok()?;
                let at: u64 = parts.next()?.parse().ok()?;
                let data = parts.next()?.to_string();
                (seq > after && at >= oldest).then_some(Event { seq, data })
            })
            .collect())
    }

    pub(crate) async fn set_stream(
        &self,
        session: &str,
        stream: &str,
        meta: &StreamMeta,
    ) -> Result<(), StoreError> {
        let k = self.key(&["st", session, stream]);
        let json = serde_json::to_string(meta).expect("meta serializes");
        let ttl = self.idle_secs();
        self.op(async move |c| c.set_ex(&k, json, ttl).await).await
    }

    pub(crate) async fn get_stream(
        &self,
        session: &str,
        stream: &str,
    ) -> Result<Option<StreamMeta>, StoreError> {
        let k = self.key(&["st", session, stream]);
        let json: Option<String> = self.op(async move |c| c.get(&k).await).await?;
        Ok(json.and_then(|j| serde_json::from_str(&j).ok()))
    }

    pub(crate) async fn heartbeat(&self, replica: &str, ttl: Duration) -> Result<(), StoreError> {
        let k = self.key(&["r", replica]);
        let secs = ttl.as_secs().max(1);
        self.op(async move |c| c.set_ex(&k, 1, secs).await).await
    }

    pub(crate) async fn replica_alive(&self, replica: &str) -> Result<bool, StoreError> {
        let k = self.key(&["r", replica]);
        self.op(async move |c| c.exists(&k).await).await
    }

    pub(crate) async fn ping(&self) -> Result<(), StoreError> {
        self.op(async move |c| redis::cmd("PING").query_async::<()>(c).await)
            .await
    }

    pub(crate) fn bus(&self) -> Bus {
        Bus {
            lazy: self.lazy.clone(),
            prefix: self.prefix.clone(),
        }
    }
}

/// A message for another replica.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum BusMessage {
    /// A client's answer to a server-to-client request the target replica is waiting on.
    ClientResponse {
        /// The session id.
        session: String,
        /// The client's JSON-RPC response, serialized.
        message: String,
    },
    /// A client cancelled a request; whichever replica runs it aborts it.
    Cancel {
        /// The session id.
        session: String,
        /// The JSON-RPC id of the cancelled request.
        request_id: serde_json::Value,
    },
    /// A message for the session's standalone stream, held by the target replica.
    Unsolicited {
        /// The session id.
        session: String,
        /// The JSON-RPC message to send, serialized.
        message: String,
    },
    /// The session ended: forget it.
    SessionEnded {
        /// The session id.
        session: String,
    },
    /// A 2026 client's retry of a call parked on the target replica
    /// (`input_required`): continue it with `responses` and send the answer,
    /// under `corr`, to `reply_to`. `id` is the client's JSON-RPC id.
    MrtrRetry {
        /// Which parked call, as named by its `requestState`.
        key: String,
        /// The client's JSON-RPC id of the retry.
        id: serde_json::Value,
        /// The client's answers to the call's input requests (null if none).
        responses: serde_json::Value,
        /// The replica waiting for the answer.
        reply_to: String,
        /// Correlates the answer (or a cancel) with this retry.
        corr: String,
    },
    /// The answer to a relayed retry: the JSON-RPC response line for the
    /// client and its HTTP status.
    MrtrAnswer {
        /// The `corr` of the retry this answers.
        corr: String,
        /// The JSON-RPC response line for the client.
        line: String,
        /// The HTTP status to answer the client with.
        status: u16,
    },
    /// The replica that relayed a retry stopped waiting for it: abort the call.
    MrtrCancel {
        /// The `corr` of the abandoned retry.
        corr: String,
    },
}

/// Redis pub/sub between replicas.
#[derive(Clone)]
pub struct Bus {
    lazy: Arc<Lazy>,
    prefix: String,
}

impl Bus {
    fn channel(&self, parts: &[&str]) -> String {
        format!("{}{}", self.prefix, parts.join(":"))
    }

    /// Publishes `payload`; returns how many listeners received it.
    async fn publish(&self, channel: String, payload: String) -> Result<usize, StoreError> {
        let mut c = self.lazy.get().await?;
        tokio::time::timeout(OP_TIMEOUT, c.publish::<_, _, usize>(channel, payload))
            .await
            .map_err(|_| unavailable("publish timed out"))?
            .map_err(unavailable)
    }

    /// Sends `msg` to one replica (`Some`) or to all (`None`); returns how
    /// many listeners received it (0: nobody was listening, it is lost).
    pub async fn send(&self, to: Option<&str>, msg: &BusMessage) -> Result<usize, StoreError> {
        let ch = match to {
            Some(r) => self.channel(&["replica", r]),
            None => self.channel(&["all"]),
        };
        self.publish(
            ch,
            serde_json::to_string(msg).expect("bus message serializes"),
        )
        .await
    }

    /// Publishes a live stream event (`None`: the stream ended) for replicas following it.
    pub async fn stream_event(
        &self,
        session: &str,
        stream: &str,
        seq: u64,
        data: Option<&str>,
    ) -> Result<(), StoreError> {
        let payload = match data {
            Some(d) => format!("{seq} {d}"),
            None => format!("{seq}"),
        };
        self.publish(self.channel(&["stream", session, stream]), payload)
            .await
            .map(drop)
    }

    /// Receives this replica's messages (and broadcasts) until the receiver is dropped;
    /// reconnects after outages.
    pub fn listen(&self, replica: &str) -> mpsc::UnboundedReceiver<BusMessage> {
        let (tx, rx) = mpsc::unbounded_channel();
        let channels = vec![self.channel(&["replica", replica]), self.channel(&["all"])];
        let client = self.lazy.client.clone();
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(200);
            while !tx.is_closed() {
                match client.get_async_pubsub().await {
                    Ok(mut ps) => {
                        if ps.subscribe(&channels).await.is_ok() {
                            backoff = Duration::from_millis(200);
                            let mut msgs = ps.on_message();
                            while let Some(m) = msgs.next().await {
                                let Ok(payload) = m.get_payload::<String>() else {
                                    continue;
                                };
                                match serde_json::from_str::<BusMessage>(&payload) {
                                    Ok(msg) => {
                                        if tx.send(msg).is_err() {
                                            return;
                                        }
                                    }
                                    Err(e) => {
                                        tracing::warn!(error = %e, "unreadable bus message dropped")
                                    }
                                }
                            }
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "bus: cannot reach Redis"),
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        });
        rx
    }

    /// Follows a stream written by another replica: `(seq, Some(data))` per
    /// event, `(seq, None)` at its end. The subscription is made before this
    /// returns, so events published afterwards are not missed.
    pub async fn follow(
        &self,
        session: &str,
        stream: &str,
    ) -> Result<mpsc::UnboundedReceiver<(u64, Option<String>)>, StoreError> {
        let mut ps = self
            .lazy
            .client
            .get_async_pubsub()
            .await
            .map_err(unavailable)?;
        ps.subscribe(self.channel(&["stream", session, stream]))
            .await
            .map_err(unavailable)?;
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut msgs = ps.on_message();
            loop {
                tokio::select! {
                    m = msgs.next() => {
                        let Some(m) = m else { return };
                        let Ok(payload) = m.get_payload::<String>() else { continue };
                        let (seq, data) = match payload.split_once(' ') {
                            Some((s, d)) => (s.parse().unwrap_or(0), Some(d.to_string())),
                            None => (payload.parse().unwrap_or(0), None),
                        };
                        let end = data.is_none();
                        if tx.send((seq, data)).is_err() || end {
                            return;
                        }
                    }
                    _ = tx.closed() => return,
                }
            }
        });
        Ok(rx)
    }
}
