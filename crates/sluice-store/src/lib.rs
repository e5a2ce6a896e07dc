//! Where sessions live: a small serializable record per session, and a
//! bounded log of the SSE events that may need replay, behind one interface
//! with three implementations — memory (one process), SQLite (one gateway,
//! survives restarts) and Redis (shared by every replica). One test suite runs
//! against all three.
//!
//! Dispatch is an enum rather than a trait object: three known stores, and
//! async methods without boxing.
//!
//! The pins of tool definitions ([`PinStore`]) live here too: in SQLite (one
//! gateway), or in PostgreSQL shared by every replica (`defence.pins_url`),
//! and so do the API key records ([`KeyStore`], `auth.api_keys.url`).

#![warn(missing_docs)]

mod keys;
mod limits_redis;
mod memory;
mod pins;
mod pins_pg;
mod redis_store;
mod sqlite;

pub use keys::{KeyRecord, KeyStore};
pub use limits_redis::{Budget, RedisLimits};
pub use pins::{PinRow, PinStatus, PinStore};
pub use redis_store::{Bus, BusMessage};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What any replica needs to serve a session (2025-11-25 era).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// The session id, as sent in `Mcp-Session-Id`.
    pub id: String,
    /// The protocol version negotiated at `initialize`.
    #[serde(rename = "v")]
    pub protocol_version: String,
    /// The client's `capabilities` from `initialize`, as sent.
    #[serde(rename = "caps")]
    pub client_capabilities: Value,
    /// The client's `clientInfo` from `initialize`, as sent.
    #[serde(rename = "info")]
    pub client_info: Value,
    /// Who the client authenticated as (empty until authentication exists).
    #[serde(rename = "p", default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    /// The level set by `logging/setLevel`, if any.
    #[serde(rename = "log", default, skip_serializing_if = "Option::is_none")]
    pub log_level: Option<String>,
    /// URIs the client subscribed to with `resources/subscribe`.
    #[serde(rename = "subs", default, skip_serializing_if = "Vec::is_empty")]
    pub subscriptions: Vec<String>,
    /// The replica holding the session's standalone GET stream, if one is open.
    #[serde(rename = "sa", default, skip_serializing_if = "Option::is_none")]
    pub standalone_owner: Option<String>,
    /// Milliseconds since the Unix epoch.
    #[serde(rename = "t")]
    pub created_ms: u64,
}

/// What is known of one SSE stream, for resuming it anywhere.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamMeta {
    /// The replica writing the stream.
    pub owner: String,
    /// The id of the request the stream answers (JSON), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// True once the stream's last event is logged.
    pub done: bool,
}

/// One logged SSE event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Position in its stream, increasing; part of the SSE event id.
    pub seq: u64,
    /// The event's `data:` payload (a JSON-RPC message).
    pub data: String,
}

/// A store failure: the store is named, nothing secret is.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The store did not answer or refused the operation.
    #[error("{} is unavailable: {reason}", store_name(store))]
    Unavailable {
        /// Which store, e.g. `redis` or `pins (postgres)`.
        store: &'static str,
        /// Why, without secrets.
        reason: String,
    },
    /// The store returned something that does not decode.
    #[error("{} holds a record it cannot read: {reason}", store_name(store))]
    Corrupt {
        /// Which store, e.g. `redis` or `pins (postgres)`.
        store: &'static str,
        /// What could not be read, without secrets.
        reason: String,
    },
}

/// "the session store (redis)", or "the pin store (postgres)" for `pins (postgres)`.
fn store_name(store: &str) -> String {
    if let Some(backend) = store.strip_prefix("pins ") {
        format!("the pin store {backend}")
    } else if let Some(backend) = store.strip_prefix("keys ") {
        format!("the key store {backend}")
    } else if let Some(backend) = store.strip_prefix("limits ") {
        format!("the limit store {backend}")
    } else {
        format!("the session store ({store})")
    }
}

/// Bounds of each stream's event log.
#[derive(Debug, Clone, Copy)]
pub struct LogBounds {
    /// Most events kept per stream (`sessions.replay_events`).
    pub max_events: usize,
    /// Events older than this are dropped (`sessions.replay_max_age`).
    pub max_age: Duration,
}

/// The session store.
pub enum Store {
    /// In this process only (`store = "memory"`).
    Memory(memory::MemoryStore),
    /// A SQLite file, for one gateway (`store = "sqlite"`).
    Sqlite(sqlite::SqliteStore),
    /// Redis, shared by every replica (`store = "redis"`).
    Redis(redis_store::RedisStore),
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

macro_rules! each {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            Store::Memory($s) => $e,
            Store::Sqlite($s) => $e,
            Store::Redis($s) => $e,
        }
    };
}

impl Store {
    /// Opens the configured store. `idle` is how long an unused session lives.
    pub async fn open(
        cfg: &sluice_config::Store,
        idle: Duration,
        bounds: LogBounds,
    ) -> Result<Store, StoreError> {
        Ok(match cfg {
            sluice_config::Store::Memory => Store::Memory(memory::MemoryStore::new(bounds)),
            sluice_config::Store::Sqlite { path } => {
                Store::Sqlite(sqlite::SqliteStore::open(path, bounds).await?)
            }
            sluice_config::Store::Redis { url, key_prefix } => Store::Redis(
                redis_store::RedisStore::open(url.expose(), key_prefix, idle, bounds).await?,
            ),
        })
    }

    /// The store's kind, for errors and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Store::Memory(_) => "memory",
            Store::Sqlite(_) => "sqlite",
            Store::Redis(_) => "redis",
        }
    }

    /// True when other replicas may share this store.
    pub fn is_shared(&self) -> bool {
        matches!(self, Store::Redis(_))
    }

    /// Stores a new session's record.
    pub async fn create(&self, rec: &SessionRecord) -> Result<(), StoreError> {
        each!(self, s => s.put(rec).await)
    }

    /// Replaces a record (log level, subscriptions changed).
    pub async fn update(&self, rec: &SessionRecord) -> Result<(), StoreError> {
        each!(self, s => s.put(rec).await)
    }

    /// The record of a session, or `None` if it does not exist (or expired).
    pub async fn get(&self, id: &str) -> Result<Option<SessionRecord>, StoreError> {
        each!(self, s => s.get(id).await)
    }

    /// Marks a session used now; false if it no longer exists.
    pub async fn touch(&self, id: &str) -> Result<bool, StoreError> {
        each!(self, s => s.touch(id).await)
    }

    /// Deletes a session and its logs; false if it did not exist.
    pub async fn delete(&self, id: &str) -> Result<bool, StoreError> {
        each!(self, s => s.delete(id).await)
    }

    /// How many sessions exist (on every replica, for a shared store).
    pub async fn count(&self) -> Result<usize, StoreError> {
        each!(self, s => s.count().await)
    }

    /// Deletes sessions unused for `idle`; returns their ids.
    pub async fn evict_idle(&self, idle: Duration) -> Result<Vec<String>, StoreError> {
        each!(self, s => s.evict_idle(idle).await)
    }

    /// Appends events to a stream's log (in order), trimming it to its bounds.
    pub async fn append(
        &self,
        session: &str,
        stream: &str,
        events: &[Event],
    ) -> Result<(), StoreError> {
        each!(self, s => s.append(session, stream, events).await)
    }

    /// The logged events of a stream after `after`, oldest first.
    pub async fn events_after(
        &self,
        session: &str,
        stream: &str,
        after: u64,
    ) -> Result<Vec<Event>, StoreError> {
        each!(self, s => s.events_after(session, stream, after).await)
    }

    /// Records a stream's owner and state, for resuming it from any replica.
    pub async fn set_stream(
        &self,
        session: &str,
        stream: &str,
        meta: &StreamMeta,
    ) -> Result<(), StoreError> {
        each!(self, s => s.set_stream(session, stream, meta).await)
    }

    /// What is known of a stream, or `None` if it was never recorded.
    pub async fn get_stream(
        &self,
        session: &str,
        stream: &str,
    ) -> Result<Option<StreamMeta>, StoreError> {
        each!(self, s => s.get_stream(session, stream).await)
    }

    /// Announces that `replica` is alive for `ttl`.
    pub async fn heartbeat(&self, replica: &str, ttl: Duration) -> Result<(), StoreError> {
        match self {
            Store::Redis(s) => s.heartbeat(replica, ttl).await,
            _ => Ok(()),
        }
    }

    /// True while `replica` keeps announcing itself. A single-process store
    /// knows only itself: any other owner is a previous run, and gone.
    pub async fn replica_alive(&self, replica: &str, me: &str) -> Result<bool, StoreError> {
        match self {
            Store::Redis(s) => s.replica_alive(replica).await,
            _ => Ok(replica == me),
        }
    }

    /// Checks the store answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        each!(self, s => s.ping().await)
    }

    /// The cross-replica message bus, for a shared store.
    pub fn bus(&self) -> Option<Bus> {
        match self {
            Store::Redis(s) => Some(s.bus()),
            _ => None,
        }
    }
}
