//! API key records: what `sluice keys` creates and the gateway verifies on
//! every request. Two backends behind one interface, like the pins: SQLite
//! (one gateway; on the blocking pool) and PostgreSQL (shared by every
//! replica, so a revocation is seen by all of them on their next lookup).
//!
//! A record never holds a key's secret: only its keyed hash (hex), made and
//! checked by `sluice-auth`. Nothing here caches: every lookup reads the store.

use crate::pins_pg::{PgKind, PgPins, on_client};
use crate::{StoreError, now_ms};
use rusqlite::{Connection, OptionalExtension, params};
use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// One API key, as stored.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyRecord {
    /// The key's public id (the lookup index; also the principal's id).
    pub id: String,
    /// A label for people (`--name`).
    pub name: String,
    /// The tenant the key's principal belongs to, if any (`--tenant`).
    pub tenant: Option<String>,
    /// Scopes the key grants, checked against `auth.required_scopes`.
    pub scopes: Vec<String>,
    /// Milliseconds since the Unix epoch.
    pub created_ms: u64,
    /// Refused from this moment on, if set.
    pub expires_ms: Option<u64>,
    /// Refused since this moment, if set.
    pub revoked_ms: Option<u64>,
    /// HMAC-SHA-256 of the current secret under the pepper (hex).
    pub hash: String,
    /// The hash of the secret the last rotation replaced: accepted until
    /// `prev_until_ms`.
    pub prev_hash: Option<String>,
    /// Until when `prev_hash` is still accepted (milliseconds since the Unix epoch).
    pub prev_until_ms: Option<u64>,
    /// When the key was last rotated.
    pub rotated_ms: Option<u64>,
}

impl fmt::Debug for KeyRecord {
    /// The hashes are left out: they are not secrets, but nothing needs them in a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRecord")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("tenant", &self.tenant)
            .field("scopes", &self.scopes)
            .field("created_ms", &self.created_ms)
            .field("expires_ms", &self.expires_ms)
            .field("revoked_ms", &self.revoked_ms)
            .field("hash", &"<redacted>")
            .field("prev_until_ms", &self.prev_until_ms)
            .field("rotated_ms", &self.rotated_ms)
            .finish()
    }
}

/// The key store: SQLite or PostgreSQL.
#[derive(Clone)]
pub struct KeyStore {
    backend: Backend,
}

#[derive(Clone)]
enum Backend {
    Sqlite(SqliteKeys),
    Postgres(Arc<PgKeys>),
}

/// How many connections the PostgreSQL key store uses in turn.
const PG_CONNECTIONS: usize = 4;

/// A few PostgreSQL connections used in turn: every request looks its key up,
/// and one connection (one operation at a time) would serialize them all.
struct PgKeys {
    conns: Vec<PgPins>,
    next: AtomicUsize,
}

impl PgKeys {
    fn pick(&self) -> &PgPins {
        &self.conns[self.next.fetch_add(1, Ordering::Relaxed) % self.conns.len()]
    }
}

const PG_STORE: &str = "keys (postgres)";

const PG_SCHEMA: &str = "BEGIN;
SET LOCAL client_min_messages = warning;
SELECT pg_advisory_xact_lock(hashtext('sluice keys schema'));
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, tenant TEXT, scopes TEXT NOT NULL,
    created BIGINT NOT NULL, expires BIGINT, revoked BIGINT,
    hash TEXT NOT NULL, prev_hash TEXT, prev_until BIGINT, rotated BIGINT);
COMMIT;";

const PG_KEYS: PgKind = PgKind {
    store: PG_STORE,
    url_key: "auth.api_keys.url",
    schema: PG_SCHEMA,
    tables: "the api_keys table",
};

const COLUMNS: &str =
    "id, name, tenant, scopes, created, expires, revoked, hash, prev_hash, prev_until, rotated";

fn scopes_text(scopes: &[String]) -> String {
    scopes.join(" ")
}

fn scopes_of(text: &str) -> Vec<String> {
    text.split(' ')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

fn ms(v: Option<i64>) -> Option<u64> {
    v.map(|n| n.max(0) as u64)
}

impl KeyStore {
    /// Opens the configured key store: PostgreSQL when `auth.api_keys.url`
    /// is set, else the SQLite file at `auth.api_keys.path`.
    pub async fn from_config(cfg: &sluice_config::ApiKeys) -> Result<Self, StoreError> {
        match &cfg.url {
            Some(url) => Self::open_postgres(url.expose()).await,
            None => Self::open(&cfg.path),
        }
    }

    /// Opens (creating) the SQLite key database.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Ok(KeyStore {
            backend: Backend::Sqlite(SqliteKeys::open(path)?),
        })
    }

    /// Opens the keys in PostgreSQL, without TLS. A malformed URL is an
    /// error; an unreachable server is not: every lookup fails
    /// (`Unavailable`) until it answers.
    pub async fn open_postgres(url: &str) -> Result<Self, StoreError> {
        Ok(KeyStore {
            backend: Backend::Postgres(Arc::new(PgKeys {
                conns: futures_util::future::try_join_all(
                    (0..PG_CONNECTIONS).map(|_| PgPins::open_as(url, PG_KEYS)),
                )
                .await?,
                next: AtomicUsize::new(0),
            })),
        })
    }

    /// The backend's kind, for logs.
    pub fn kind(&self) -> &'static str {
        match &self.backend {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// Where the keys live, for logs: the file, or the URL without its password.
    pub fn location(&self) -> String {
        match &self.backend {
            Backend::Sqlite(s) => s.path.clone(),
            Backend::Postgres(pool) => pool.conns[0].location().to_string(),
        }
    }

    /// Stores a new key. An id already taken is an error (ids are random).
    pub async fn insert(&self, rec: &KeyRecord) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Sqlite(s) => s.insert(rec.clone()).await,
            Backend::Postgres(pool) => {
                let p = pool.pick();
                let n = on_client!(p, retry = false, |c| pg_insert(c, rec))?;
                if n == 1 {
                    Ok(())
                } else {
                    Err(StoreError::Corrupt {
                        store: PG_STORE,
                        reason: format!("key id {} is already taken", rec.id),
                    })
                }
            }
        }
    }

    /// The key with this id, read from the store now.
    pub async fn get(&self, id: &str) -> Result<Option<KeyRecord>, StoreError> {
        match &self.backend {
            Backend::Sqlite(s) => s.get(id.to_string()).await,
            Backend::Postgres(pool) => {
                let p = pool.pick();
                let q = format!("SELECT {COLUMNS} FROM api_keys WHERE id = $1");
                let row = on_client!(p, retry = true, |c| c.query_opt(&q, &[&id]))?;
                Ok(row.as_ref().map(pg_record))
            }
        }
    }

    /// Every key, oldest first.
    pub async fn list(&self) -> Result<Vec<KeyRecord>, StoreError> {
        match &self.backend {
            Backend::Sqlite(s) => s.list().await,
            Backend::Postgres(pool) => {
                let p = pool.pick();
                let q =
                    format!("SELECT {COLUMNS} FROM api_keys ORDER BY created, id COLLATE \"C\"");
                let rows = on_client!(p, retry = true, |c| c.query(&q, &[]))?;
                Ok(rows.iter().map(pg_record).collect())
            }
        }
    }

    /// Revokes a key (a second revocation keeps the first time). Returns the
    /// record after, or `None` for an unknown id.
    pub async fn revoke(&self, id: &str) -> Result<Option<KeyRecord>, StoreError> {
        let now = now_ms() as i64;
        match &self.backend {
            Backend::Sqlite(s) => {
                let i = id.to_string();
                s.run(move |c| {
                    c.execute(
                        "UPDATE api_keys SET revoked = COALESCE(revoked, ?2) WHERE id = ?1",
                        params![i, now],
                    )
                })
                .await?;
            }
            Backend::Postgres(pool) => {
                let p = pool.pick();
                on_client!(p, retry = true, |c| c.execute(
                    "UPDATE api_keys SET revoked = COALESCE(revoked, $2) WHERE id = $1",
                    &[&id as &(dyn tokio_postgres::types::ToSql + Sync), &now]
                ))?;
            }
        }
        self.get(id).await
    }

    /// Replaces the secret of a key that is not revoked: `new_hash` becomes
    /// current and the old hash stays accepted until `prev_until_ms`.
    /// Returns the record after, or `None` if the id is unknown or revoked.
    pub async fn rotate(
        &self,
        id: &str,
        new_hash: &str,
        prev_until_ms: u64,
    ) -> Result<Option<KeyRecord>, StoreError> {
        let now = now_ms() as i64;
        let until = prev_until_ms as i64;
        let n = match &self.backend {
            Backend::Sqlite(s) => {
                let (i, h) = (id.to_string(), new_hash.to_string());
                s.run(move |c| {
                    c.execute(
                        "UPDATE api_keys SET prev_hash = hash, prev_until = ?3, hash = ?2, rotated = ?4
                         WHERE id = ?1 AND revoked IS NULL",
                        params![i, h, until, now],
                    )
                })
                .await? as u64
            }
            // Not retried: a lost answer to an update that went through would
            // otherwise rotate twice, and the first new secret would never work.
            Backend::Postgres(pool) => on_client!(pool.pick(), retry = false, |c| c.execute(
                "UPDATE api_keys SET prev_hash = hash, prev_until = $3, hash = $2, rotated = $4
                 WHERE id = $1 AND revoked IS NULL",
                &[
                    &id as &(dyn tokio_postgres::types::ToSql + Sync),
                    &new_hash,
                    &until,
                    &now
                ]
            ))?,
        };
        if n == 0 {
            return Ok(None);
        }
        self.get(id).await
    }
}

async fn pg_insert(
    c: &mut tokio_postgres::Client,
    r: &KeyRecord,
) -> Result<u64, tokio_postgres::Error> {
    let q = format!(
        "INSERT INTO api_keys ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
         ON CONFLICT (id) DO NOTHING"
    );
    c.execute(
        &q,
        &[
            &r.id,
            &r.name,
            &r.tenant,
            &scopes_text(&r.scopes),
            &(r.created_ms as i64),
            &r.expires_ms.map(|v| v as i64),
            &r.revoked_ms.map(|v| v as i64),
            &r.hash,
            &r.prev_hash,
            &r.prev_until_ms.map(|v| v as i64),
            &r.rotated_ms.map(|v| v as i64),
        ],
    )
    .await
}

fn pg_record(r: &tokio_postgres::Row) -> KeyRecord {
    KeyRecord {
        id: r.get(0),
        name: r.get(1),
        tenant: r.get(2),
        scopes: scopes_of(r.get(3)),
        created_ms: r.get::<_, i64>(4).max(0) as u64,
        expires_ms: ms(r.get(5)),
        revoked_ms: ms(r.get(6)),
        hash: r.get(7),
        prev_hash: r.get(8),
        prev_until_ms: ms(r.get(9)),
        rotated_ms: ms(r.get(10)),
    }
}

/// Keys in a SQLite file.
#[derive(Clone)]
struct SqliteKeys {
    conn: Arc<Mutex<Connection>>,
    path: String,
}

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable {
        store: "keys (sqlite)",
        reason: e.to_string(),
    }
}

fn sqlite_record(r: &rusqlite::Row<'_>) -> rusqlite::Result<KeyRecord> {
    Ok(KeyRecord {
        id: r.get(0)?,
        name: r.get(1)?,
        tenant: r.get(2)?,
        scopes: scopes_of(&r.get::<_, String>(3)?),
        created_ms: r.get::<_, i64>(4)?.max(0) as u64,
        expires_ms: ms(r.get(5)?),
        revoked_ms: ms(r.get(6)?),
        hash: r.get(7)?,
        prev_hash: r.get(8)?,
        prev_until_ms: ms(r.get(9)?),
        rotated_ms: ms(r.get(10)?),
    })
}

impl SqliteKeys {
    fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let c = Connection::open(path)
            .map_err(|e| err(format!("cannot open {}: {e}", path.display())))?;
        c.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA busy_timeout = 5000;
             CREATE TABLE IF NOT EXISTS api_keys (
                 id TEXT PRIMARY KEY, name TEXT NOT NULL, tenant TEXT, scopes TEXT NOT NULL,
                 created INTEGER NOT NULL, expires INTEGER, revoked INTEGER,
                 hash TEXT NOT NULL, prev_hash TEXT, prev_until INTEGER, rotated INTEGER);",
        )
        .map_err(err)?;
        Ok(SqliteKeys {
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

    async fn insert(&self, r: KeyRecord) -> Result<(), StoreError> {
        self.run(move |c| {
            c.execute(
                &format!(
                    "INSERT INTO api_keys ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
                ),
                params![
                    r.id,
                    r.name,
                    r.tenant,
                    scopes_text(&r.scopes),
                    r.created_ms as i64,
                    r.expires_ms.map(|v| v as i64),
                    r.revoked_ms.map(|v| v as i64),
                    r.hash,
                    r.prev_hash,
                    r.prev_until_ms.map(|v| v as i64),
                    r.rotated_ms.map(|v| v as i64),
                ],
            )
            .map(|_| ())
        })
        .await
    }

    async fn get(&self, id: String) -> Result<Option<KeyRecord>, StoreError> {
        self.run(move |c| {
            c.query_row(
                &format!("SELECT {COLUMNS} FROM api_keys WHERE id = ?1"),
                params![id],
                sqlite_record,
            )
            .optional()
        })
        .await
    }

    async fn list(&self) -> Result<Vec<KeyRecord>, StoreError> {
        self.run(|c| {
            let mut st = c.prepare(&format!(
                "SELECT {COLUMNS} FROM api_keys ORDER BY created, id"
            ))?;
            let rows = st.query_map([], sqlite_record)?;
            rows.collect()
        })
        .await
    }
}
