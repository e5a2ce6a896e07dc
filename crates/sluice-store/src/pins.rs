//! Pins: trust on first use of every tool definition (and each server's
//! instructions). A changed definition waits as "pending" until an operator
//! approves it. Two backends behind one interface: SQLite (one gateway; on the
//! blocking pool) and PostgreSQL (shared by every replica; `pins_pg`).
//!
//! Both keep two tables keyed by (server_key, item): `pins`, what was
//! approved, and `pending`, a changed definition waiting for approval.

use crate::pins_pg::PgPins;
use crate::{StoreError, now_ms};
use rusqlite::{Connection, OptionalExtension, params};
use std::path::Path;
use std::sync::{Arc, Mutex};

/// What a definition is, compared with its pin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinStatus {
    /// Seen now for the first time: pinned.
    New,
    /// Matches its pin.
    Same,
    /// Differs from its pin; held until approved. Carries the pinned definition.
    Changed {
        /// The pinned (approved) definition, canonical JSON.
        pinned: String,
    },
}

/// One pin or pending change, for `sluice pins list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinRow {
    /// The server's name (as configured), for people.
    pub server: String,
    /// The pinned item: a tool's name, or `#instructions` for the server's instructions.
    pub item: String,
    /// The pinned definition's fingerprint (`sha256:<hex>`).
    pub fingerprint: String,
    /// A changed definition waits for approval.
    pub pending: Option<String>,
    /// When the pin was made or last approved (milliseconds since the Unix epoch).
    pub since_ms: u64,
}

/// The pin store: SQLite or PostgreSQL.
#[derive(Clone)]
pub struct PinStore {
    backend: Backend,
}

#[derive(Clone)]
enum Backend {
    Sqlite(SqlitePins),
    Postgres(Arc<PgPins>),
}

impl PinStore {
    /// Opens the configured pin store: PostgreSQL when `pins_url` is set,
    /// else the SQLite file at `pins_path`. PostgreSQL is connected to (and
    /// its tables created) now if it answers, else on first use: see
    /// [`PinStore::ping`].
    pub async fn from_config(cfg: &sluice_config::Defence) -> Result<Self, StoreError> {
        match &cfg.pins_url {
            Some(url) => Self::open_postgres(url.expose()).await,
            None => Self::open(&cfg.pins_path),
        }
    }

    /// Opens (creating) the SQLite pin database.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Ok(PinStore {
            backend: Backend::Sqlite(SqlitePins::open(path)?),
        })
    }

    /// Opens the pins in PostgreSQL (`postgres://…` or `postgresql://…`),
    /// without TLS. A malformed URL is an error; an unreachable server is
    /// not: every call fails (`Unavailable`) until it answers, and a lost
    /// connection is made again on the next call.
    pub async fn open_postgres(url: &str) -> Result<Self, StoreError> {
        Ok(PinStore {
            backend: Backend::Postgres(Arc::new(PgPins::open(url).await?)),
        })
    }

    /// The backend's kind, for logs.
    pub fn kind(&self) -> &'static str {
        match &self.backend {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// Where the pins live, for logs: the file, or the URL without its password.
    pub fn location(&self) -> String {
        match &self.backend {
            Backend::Sqlite(s) => s.path.clone(),
            Backend::Postgres(p) => p.location().to_string(),
        }
    }

    /// Checks the store answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Sqlite(_) => Ok(()),
            Backend::Postgres(p) => p.ping().await,
        }
    }

    /// Compares a definition with its pin: pins it on first sight, records a
    /// change as pending.
    pub async fn check(
        &self,
        server_key: &str,
        server: &str,
        item: &str,
        fingerprint: &str,
        definition: &str,
    ) -> Result<PinStatus, StoreError> {
        match &self.backend {
            Backend::Sqlite(s) => {
                s.check(server_key, server, item, fingerprint, definition)
                    .await
            }
            Backend::Postgres(p) => {
                p.check(server_key, server, item, fingerprint, definition)
                    .await
            }
        }
    }

    /// Every pin, with its pending change if any.
    pub async fn list(&self) -> Result<Vec<PinRow>, StoreError> {
        match &self.backend {
            Backend::Sqlite(s) => s.list().await,
            Backend::Postgres(p) => p.list().await,
        }
    }

    /// The pinned and the pending definition of an item waiting for approval.
    pub async fn pending(
        &self,
        server: &str,
        item: &str,
    ) -> Result<Option<(String, String)>, StoreError> {
        match &self.backend {
            Backend::Sqlite(s) => s.pending(server, item).await,
            Backend::Postgres(p) => p.pending(server, item).await,
        }
    }

    /// Approves the pending changes of a server (one item, or all): they
    /// become the pins. Returns how many were approved.
    pub async fn approve(&self, server: &str, item: Option<&str>) -> Result<usize, StoreError> {
        match &self.backend {
            Backend::Sqlite(s) => s.approve(server, item).await,
            Backend::Postgres(p) => p.approve(server, item).await,
        }
    }
}

/// Pins in a SQLite file.
#[derive(Clone)]
struct SqlitePins {
    conn: Arc<Mutex<Connection>>,
    path: String,
}

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable {
        store: "pins (sqlite)",
        reason: e.to_string(),
    }
}

impl SqlitePins {
    fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let c = Connection::open(path)
            .map_err(|e| err(format!("cannot open {}: {e}", path.display())))?;
        c.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA busy_timeout = 5000;
             CREATE TABLE IF NOT EXISTS pins (
                 server_key TEXT NOT NULL, server TEXT NOT NULL, item TEXT NOT NULL,
                 fingerprint TEXT NOT NULL, definition TEXT NOT NULL, since INTEGER NOT NULL,
                 PRIMARY KEY (server_key, item));
             CREATE TABLE IF NOT EXISTS pending (
                 server_key TEXT NOT NULL, server TEXT NOT NULL, item TEXT NOT NULL,
                 fingerprint TEXT NOT NULL, definition TEXT NOT NULL, since INTEGER NOT NULL,
                 PRIMARY KEY (server_key, item));",
        )
        .map_err(err)?;
        Ok(SqlitePins {
            conn: Arc::new(Mutex::new(c)),
            path: path.display().to_string(),
        })
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || f(&mut conn.lock().unwrap()))
            .await
            .map_err(err)?
            .map_err(err)
    }

    /// Compares a definition with its pin: pins it on first sight, records a
    /// change as pending.
    async fn check(
        &self,
        server_key: &str,
        server: &str,
        item: &str,
        fingerprint: &str,
        definition: &str,
    ) -> Result<PinStatus, StoreError> {
        let (k, s, i, f, d) = (
            server_key.to_string(),
            server.to_string(),
            item.to_string(),
            fingerprint.to_string(),
            definition.to_string(),
        );
        self.run(move |c| {
            let pinned: Option<(String, String)> = c
                .query_row(
                    "SELECT fingerprint, definition FROM pins WHERE server_key = ?1 AND item = ?2",
                    params![k, i],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            match pinned {
                None => {
                    c.execute(
                        "INSERT INTO pins VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                        params![k, s, i, f, d, now_ms() as i64],
                    )?;
                    Ok(PinStatus::New)
                }
                Some((pf, _)) if pf == f => {
                    c.execute("DELETE FROM pending WHERE server_key = ?1 AND item = ?2", params![k, i])?;
                    Ok(PinStatus::Same)
                }
                Some((_, pinned)) => {
                    c.execute(
                        "INSERT INTO pending VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                         ON CONFLICT(server_key, item) DO UPDATE SET fingerprint = excluded.fingerprint,
                           definition = excluded.definition, server = excluded.server",
                        params![k, s, i, f, d, now_ms() as i64],
                    )?;
                    Ok(PinStatus::Changed { pinned })
                }
            }
        })
        .await
    }

    /// Every pin, with its pending change if any.
    async fn list(&self) -> Result<Vec<PinRow>, StoreError> {
        self.run(|c| {
            let mut st = c.prepare(
                "SELECT p.server, p.item, p.fingerprint, q.fingerprint, p.since
                 FROM pins p LEFT JOIN pending q ON p.server_key = q.server_key AND p.item = q.item
                 ORDER BY p.server, p.item",
            )?;
            let rows = st.query_map([], |r| {
                Ok(PinRow {
                    server: r.get(0)?,
                    item: r.get(1)?,
                    fingerprint: r.get(2)?,
                    pending: r.get(3)?,
                    since_ms: r.get::<_, i64>(4)? as u64,
                })
            })?;
            rows.collect()
        })
        .await
    }

    /// The pinned and the pending definition of an item waiting for approval.
    async fn pending(
        &self,
        server: &str,
        item: &str,
    ) -> Result<Option<(String, String)>, StoreError> {
        let (s, i) = (server.to_string(), item.to_string());
        self.run(move |c| {
            c.query_row(
                "SELECT p.definition, q.definition FROM pending q
                 JOIN pins p ON p.server_key = q.server_key AND p.item = q.item
                 WHERE q.server = ?1 AND q.item = ?2",
                params![s, i],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
        })
        .await
    }

    /// Approves the pending changes of a server (one item, or all): they
    /// become the pins. Returns how many were approved.
    async fn approve(&self, server: &str, item: Option<&str>) -> Result<usize, StoreError> {
        let (s, i) = (server.to_string(), item.map(str::to_string));
        self.run(move |c| {
            let tx = c.transaction()?;
            let n = {
                let mut st = tx.prepare(
                    "SELECT server_key, item, fingerprint, definition FROM pending
                     WHERE server = ?1 AND (?2 IS NULL OR item = ?2)",
                )?;
                let rows: Vec<(String, String, String, String)> = st
                    .query_map(params![s, i], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                    })?
                    .collect::<rusqlite::Result<_>>()?;
                for (k, item, f, d) in &rows {
                    tx.execute(
                        "UPDATE pins SET fingerprint = ?3, definition = ?4, since = ?5
                         WHERE server_key = ?1 AND item = ?2",
                        params![k, item, f, d, now_ms() as i64],
                    )?;
                    tx.execute(
                        "DELETE FROM pending WHERE server_key = ?1 AND item = ?2",
                        params![k, item],
                    )?;
                }
                rows.len()
            };
            tx.commit()?;
            Ok(n)
        })
        .await
    }
}
