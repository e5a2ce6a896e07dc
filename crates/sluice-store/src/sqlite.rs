//! SQLite: one gateway's sessions survive its restarts. Every statement runs
//! on the blocking pool, never on the async workers.

use crate::{Event, LogBounds, SessionRecord, StoreError, StreamMeta, now_ms};
use rusqlite::{Connection, OptionalExtension, params};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    bounds: LogBounds,
}

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable {
        store: "sqlite",
        reason: e.to_string(),
    }
}

impl SqliteStore {
    pub(crate) async fn open(path: &Path, bounds: LogBounds) -> Result<Self, StoreError> {
        let path = path.to_path_buf();
        let conn = tokio::task::spawn_blocking(move || -> Result<Connection, StoreError> {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .map_err(|e| err(format!("cannot create {}: {e}", dir.display())))?;
            }
            let c = Connection::open(&path)
                .map_err(|e| err(format!("cannot open {}: {e}", path.display())))?;
            c.execute_batch(
                "PRAGMA journal_mode = WAL;
                 PRAGMA synchronous = NORMAL;
                 PRAGMA busy_timeout = 5000;
                 CREATE TABLE IF NOT EXISTS sessions (
                     id TEXT PRIMARY KEY, record TEXT NOT NULL, last_active INTEGER NOT NULL);
                 CREATE INDEX IF NOT EXISTS sessions_last_active ON sessions(last_active);
                 CREATE TABLE IF NOT EXISTS events (
                     session TEXT NOT NULL, stream TEXT NOT NULL, seq INTEGER NOT NULL,
                     at INTEGER NOT NULL, data TEXT NOT NULL,
                     PRIMARY KEY (session, stream, seq));
                 CREATE TABLE IF NOT EXISTS streams (
                     session TEXT NOT NULL, stream TEXT NOT NULL, meta TEXT NOT NULL,
                     PRIMARY KEY (session, stream));",
            )
            .map_err(err)?;
            Ok(c)
        })
        .await
        .map_err(err)??;
        Ok(SqliteStore {
            conn: Arc::new(Mutex::new(conn)),
            bounds,
        })
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut c = conn.lock().unwrap();
            f(&mut c)
        })
        .await
        .map_err(err)?
        .map_err(err)
    }

    pub(crate) async fn put(&self, rec: &SessionRecord) -> Result<(), StoreError> {
        let json = serde_json::to_string(rec).expect("record serializes");
        let id = rec.id.clone();
        self.run(move |c| {
            c.execute(
                "INSERT INTO sessions (id, record, last_active) VALUES (?1, ?2, ?3)
                 ON CONFLICT(id) DO UPDATE SET record = excluded.record, last_active = excluded.last_active",
                params![id, json, now_ms() as i64],
            )
            .map(|_| ())
        })
        .await
    }

    pub(crate) async fn get(&self, id: &str) -> Result<Option<SessionRecord>, StoreError> {
        let id = id.to_string();
        let json: Option<String> = self
            .run(move |c| {
                c.query_row(
                    "SELECT record FROM sessions WHERE id = ?1",
                    params![id],
                    |r| r.get(0),
                )
                .optional()
            })
            .await?;
        json.map(|j| {
            serde_json::from_str(&j).map_err(|e| StoreError::Corrupt {
                store: "sqlite",
                reason: e.to_string(),
            })
        })
        .transpose()
    }

    pub(crate) async fn touch(&self, id: &str) -> Result<bool, StoreError> {
        let id = id.to_string();
        self.run(move |c| {
            c.execute(
                "UPDATE sessions SET last_active = ?2 WHERE id = ?1",
                params![id, now_ms() as i64],
            )
            .map(|n| n > 0)
        })
        .await
    }

    pub(crate) async fn delete(&self, id: &str) -> Result<bool, StoreError> {
        let id = id.to_string();
        self.run(move |c| {
            let tx = c.transaction()?;
            tx.execute("DELETE FROM events WHERE session = ?1", params![id])?;
            tx.execute("DELETE FROM streams WHERE session = ?1", params![id])?;
            let n = tx.execute("DELETE FROM sessions WHERE id = ?1", params![id])?;
            tx.commit()?;
            Ok(n > 0)
        })
        .await
    }

    pub(crate) async fn count(&self) -> Result<usize, StoreError> {
        self.run(|c| c.query_row("SELECT COUNT(*) FROM sessions", [], |r| r.get::<_, i64>(0)))
            .await
            .map(|n| n as usize)
    }

    pub(crate) async fn evict_idle(&self, idle: Duration) -> Result<Vec<String>, StoreError> {
        let cutoff = now_ms().saturating_sub(idle.as_millis() as u64) as i64;
        let ids: Vec<String> = self
            .run(move |c| {
                let mut st = c.prepare("SELECT id FROM sessions WHERE last_active < ?1")?;
                let rows = st.query_map(params![cutoff], |r| r.get(0))?;
                rows.collect()
            })
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
        let (session, stream) = (session.to_string(), stream.to_string());
        let events: Vec<Event> = events.to_vec();
        let bounds = self.bounds;
        self.run(move |c| {
            let now = now_ms() as i64;
            let tx = c.transaction()?;
            for e in &events {
                tx.execute(
                    "INSERT OR REPLACE INTO events (session, stream, seq, at, data) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![session, stream, e.seq as i64, now, e.data],
                )?;
            }
            let oldest = now - bounds.max_age.as_millis() as i64;
            tx.execute(
                "DELETE FROM events WHERE session = ?1 AND stream = ?2 AND (at < ?3 OR seq <=
                   (SELECT seq FROM events WHERE session = ?1 AND stream = ?2 ORDER BY seq DESC LIMIT 1 OFFSET ?4))",
                params![session, stream, oldest, bounds.max_events as i64],
            )?;
            tx.commit()
        })
        .await
    }

    pub(crate) async fn events_after(
        &self,
        session: &str,
        stream: &str,
        after: u64,
    ) -> Result<Vec<Event>, StoreError> {
        let (session, stream) = (session.to_string(), stream.to_string());
        let oldest = now_ms().saturating_sub(self.bounds.max_age.as_millis() as u64) as i64;
        self.run(move |c| {
            let mut st = c.prepare(
                "SELECT seq, data FROM events WHERE session = ?1 AND stream = ?2 AND seq > ?3 AND at >= ?4 ORDER BY seq",
            )?;
            let rows = st.query_map(params![session, stream, after as i64, oldest], |r| {
                Ok(Event {
                    seq: r.get::<_, i64>(0)? as u64,
                    data: r.get(1)?,
                })
            })?;
            rows.collect()
        })
        .await
    }

    pub(crate) async fn set_stream(
        &self,
        session: &str,
        stream: &str,
        meta: &StreamMeta,
    ) -> Result<(), StoreError> {
        let (session, stream) = (session.to_string(), stream.to_string());
        let json = serde_json::to_string(meta).expect("meta serializes");
        self.run(move |c| {
            c.execute(
                "INSERT OR REPLACE INTO streams (session, stream, meta) VALUES (?1, ?2, ?3)",
                params![session, stream, json],
            )
            .map(|_| ())
        })
        .await
    }

    pub(crate) async fn get_stream(
        &self,
        session: &str,
        stream: &str,
    ) -> Result<Option<StreamMeta>, StoreError> {
        let (session, stream) = (session.to_string(), stream.to_string());
        let json: Option<String> = self
            .run(move |c| {
                c.query_row(
                    "SELECT meta FROM streams WHERE session = ?1 AND stream = ?2",
                    params![session, stream],
                    |r| r.get(0),
                )
                .optional()
            })
            .await?;
        Ok(json.and_then(|j| serde_json::from_str(&j).ok()))
    }

    pub(crate) async fn ping(&self) -> Result<(), StoreError> {
        self.run(|c| c.query_row("SELECT 1", [], |_| Ok(()))).await
    }
}
