//! Pins in PostgreSQL (`defence.pins_url`), shared by every replica.
//!
//! One connection: pin checks are rare (a tools/list refresh, a call of a held
//! tool, the `sluice pins` CLI). It is made at open if PostgreSQL answers, else
//! on first use, and made again on the next call after it is lost, so a
//! PostgreSQL restart needs no gateway restart. The tables are created on every
//! new connection (`IF NOT EXISTS`, under an advisory lock, as replicas may
//! start together).
//!
//! Every statement is safe with several replicas on one database: a first
//! sight is `INSERT … ON CONFLICT DO NOTHING` followed by a re-read (of two
//! replicas pinning the same new item at once, one pins it and the other finds
//! the same pin); an approval is one transaction.
//!
//! No TLS yet (`NoTls`): for PostgreSQL on localhost or a trusted network.

use crate::{PinRow, PinStatus, StoreError, now_ms};
use std::time::{Duration, Instant};
use tokio::sync::Mutex;
use tokio_postgres::{Client, NoTls};

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one operation may take before the store counts as unavailable.
pub(crate) const OP_TIMEOUT: Duration = Duration::from_secs(5);
/// After a failed connection attempt, calls fail at once for this long
/// instead of each waiting for an attempt of its own.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// The tables, as in SQLite. The advisory lock serializes their creation:
/// concurrent `CREATE TABLE IF NOT EXISTS` of one table can fail in PostgreSQL.
/// (Quietly: an existing table is not worth a notice in the log.)
const SCHEMA: &str = "BEGIN;
SET LOCAL client_min_messages = warning;
SELECT pg_advisory_xact_lock(hashtext('sluice pins schema'));
CREATE TABLE IF NOT EXISTS pins (
    server_key TEXT NOT NULL, server TEXT NOT NULL, item TEXT NOT NULL,
    fingerprint TEXT NOT NULL, definition TEXT NOT NULL, since BIGINT NOT NULL,
    PRIMARY KEY (server_key, item));
CREATE TABLE IF NOT EXISTS pending (
    server_key TEXT NOT NULL, server TEXT NOT NULL, item TEXT NOT NULL,
    fingerprint TEXT NOT NULL, definition TEXT NOT NULL, since BIGINT NOT NULL,
    PRIMARY KEY (server_key, item));
COMMIT;";

const STORE: &str = "pins (postgres)";

/// What one PostgreSQL-backed store is: its name in errors ("pins
/// (postgres)"), the config key of its URL, and the schema made on connect.
#[derive(Clone, Copy)]
pub(crate) struct PgKind {
    pub(crate) store: &'static str,
    pub(crate) url_key: &'static str,
    pub(crate) schema: &'static str,
    /// What the schema holds, for errors ("the pin tables").
    pub(crate) tables: &'static str,
}

const PINS: PgKind = PgKind {
    store: STORE,
    url_key: "defence.pins_url",
    schema: SCHEMA,
    tables: "the pin tables",
};

fn unavailable_in(store: &'static str, reason: impl Into<String>) -> StoreError {
    StoreError::Unavailable {
        store,
        reason: reason.into(),
    }
}

/// A PostgreSQL error, told plainly: the server's own message for a database
/// error (never a parameter value).
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}

/// True when an error leaves the connection unusable: anything but a
/// database error (I/O, closed), or a fatal one, as when the server shuts
/// down or an administrator ends the session (its message may arrive as the
/// answer to the next query, before the connection is seen closed).
fn broken(e: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::Severity;
    match e.as_db_error() {
        None => true,
        Some(db) => {
            let code = db.code().code();
            matches!(
                db.parsed_severity(),
                Some(Severity::Fatal | Severity::Panic)
            ) || code.starts_with("57P")
                || code.starts_with("08")
        }
    }
}

/// A PostgreSQL URL without its password (in the user info or a `password`
/// parameter), for logs and errors.
pub(crate) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<not a URL>".into();
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***@{hosts}"),
            None => format!("{userinfo}@{hosts}"),
        },
        None => authority.to_string(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let params: Vec<String> = query
                .split('&')
                .map(|p| match p.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                    _ => p.to_string(),
                })
                .collect();
            format!("{path}?{}", params.join("&"))
        }
        None => tail.to_string(),
    };
    format!("{scheme}://{authority}{tail}")
}

/// One lazily re-made PostgreSQL connection (the pins', or another store's:
/// see [`PgKind`]).
pub(crate) struct PgPins {
    kind: PgKind,
    config: tokio_postgres::Config,
    /// The URL without its password.
    shown: String,
    pub(crate) conn: Mutex<Conn>,
}

#[derive(Default)]
pub(crate) struct Conn {
    pub(crate) client: Option<Client>,
    /// The last failed connection attempt: when, and why.
    failed: Option<(Instant, String)>,
}

/// Runs an operation (`$op`, a future using the client `$c`) on the
/// connection, made first if need be, within `OP_TIMEOUT`; see `settle`.
macro_rules! on_client {
    ($self:expr, retry = $retry:expr, |$c:ident| $op:expr) => {{
        let mut g = $self.conn.lock().await;
        let mut again = $retry;
        loop {
            let fresh = $self.connect(&mut g).await?;
            let $c = g.client.as_mut().expect("connected");
            let r = tokio::time::timeout($crate::pins_pg::OP_TIMEOUT, $op).await;
            if let Some(out) = $self.settle(&mut g, r, fresh, &mut again) {
                break out;
            }
        }
    }};
}
pub(crate) use on_client;

impl PgPins {
    pub(crate) async fn open(url: &str) -> Result<Self, StoreError> {
        Self::open_as(url, PINS).await
    }

    /// Opens a connection for the store `kind` describes.
    pub(crate) async fn open_as(url: &str, kind: PgKind) -> Result<Self, StoreError> {
        let shown = redact(url);
        let mut config: tokio_postgres::Config = url.parse().map_err(|e| {
            unavailable_in(
                kind.store,
                format!(
                    "{} ({shown}) is not a valid PostgreSQL URL: {e}",
                    kind.url_key
                ),
            )
        })?;
        config.connect_timeout(CONNECT_TIMEOUT);
        if config.get_application_name().is_none() {
            config.application_name("sluice");
        }
        let pins = PgPins {
            kind,
            config,
            shown,
            conn: Mutex::new(Conn::default()),
        };
        {
            // Connect and create the tables now if PostgreSQL answers; if it
            // does not, every call says why until it does.
            let mut g = pins.conn.lock().await;
            let _ = pins.connect(&mut g).await;
        }
        Ok(pins)
    }

    /// The URL without its password.
    pub(crate) fn location(&self) -> &str {
        &self.shown
    }

    /// Makes sure `g` holds an open connection; true if it was made now.
    pub(crate) async fn connect(&self, g: &mut Conn) -> Result<bool, StoreError> {
        if g.client.as_ref().is_some_and(|c| !c.is_closed()) {
            return Ok(false);
        }
        g.client = None;
        if let Some((at, why)) = &g.failed
            && at.elapsed() < RETRY_AFTER
        {
            return Err(unavailable_in(self.kind.store, why.clone()));
        }
        match self.connect_now().await {
            Ok(c) => {
                g.client = Some(c);
                g.failed = None;
                Ok(true)
            }
            Err(why) => {
                g.failed = Some((Instant::now(), why.clone()));
                Err(unavailable_in(self.kind.store, why))
            }
        }
    }

    async fn connect_now(&self) -> Result<Client, String> {
        let shown = &self.shown;
        let (client, connection) =
            match tokio::time::timeout(CONNECT_TIMEOUT, self.config.connect(NoTls)).await {
                Err(_) => {
                    return Err(format!(
                        "connecting to {shown} timed out after {} s",
                        CONNECT_TIMEOUT.as_secs()
                    ));
                }
                Ok(Err(e)) => return Err(format!("cannot connect to {shown}: {}", describe(&e))),
                Ok(Ok(pair)) => pair,
            };
        let at = shown.clone();
        let store = self.kind.store;
        tokio::spawn(async move {
            // Ends when the client is dropped (Ok) or the connection is lost.
            if let Err(e) = connection.await {
                tracing::warn!(location = %at, store, error = %describe(&e), "connection to PostgreSQL lost; it is made again on next use");
            }
        });
        let tables = self.kind.tables;
        match tokio::time::timeout(OP_TIMEOUT, client.batch_execute(self.kind.schema)).await {
            Ok(Ok(())) => Ok(client),
            Ok(Err(e)) => Err(format!(
                "cannot create {tables} in {shown}: {}",
                describe(&e)
            )),
            Err(_) => Err(format!(
                "{shown} did not create {tables} within {} s",
                OP_TIMEOUT.as_secs()
            )),
        }
    }

    /// What became of one operation: its result, or `None` to run it once
    /// more. A broken connection (say, PostgreSQL restarted since its last
    /// use) is dropped; with `again`, and if it was not new, the operation
    /// runs once more on a new one.
    pub(crate) fn settle<T>(
        &self,
        g: &mut Conn,
        r: Result<Result<T, tokio_postgres::Error>, tokio::time::error::Elapsed>,
        fresh: bool,
        again: &mut bool,
    ) -> Option<Result<T, StoreError>> {
        match r {
            Ok(Ok(v)) => Some(Ok(v)),
            Ok(Err(e)) => {
                if broken(&e) || g.client.as_ref().is_none_or(Client::is_closed) {
                    g.client = None;
                    if *again && !fresh {
                        *again = false;
                        return None;
                    }
                }
                Some(Err(unavailable_in(
                    self.kind.store,
                    format!("{}: {}", self.shown, describe(&e)),
                )))
            }
            Err(_) => {
                g.client = None;
                Some(Err(unavailable_in(
                    self.kind.store,
                    format!(
                        "{} did not answer within {} s",
                        self.shown,
                        OP_TIMEOUT.as_secs()
                    ),
                )))
            }
        }
    }

    pub(crate) async fn ping(&self) -> Result<(), StoreError> {
        on_client!(self, retry = true, |c| c.batch_execute("SELECT 1"))
    }

    pub(crate) async fn check(
        &self,
        server_key: &str,
        server: &str,
        item: &str,
        fingerprint: &str,
        definition: &str,
    ) -> Result<PinStatus, StoreError> {
        on_client!(self, retry = true, |c| check_on(
            c,
            server_key,
            server,
            item,
            fingerprint,
            definition
        ))
    }

    pub(crate) async fn list(&self) -> Result<Vec<PinRow>, StoreError> {
        on_client!(self, retry = true, |c| list_on(c))
    }

    pub(crate) async fn pending(
        &self,
        server: &str,
        item: &str,
    ) -> Result<Option<(String, String)>, StoreError> {
        on_client!(self, retry = true, |c| pending_on(c, server, item))
    }

    /// Not retried: a lost answer to a commit that went through would
    /// otherwise be retried into "nothing to approve".
    pub(crate) async fn approve(
        &self,
        server: &str,
        item: Option<&str>,
    ) -> Result<usize, StoreError> {
        on_client!(self, retry = false, |c| approve_on(c, server, item))
    }
}

async fn check_on(
    c: &mut Client,
    server_key: &str,
    server: &str,
    item: &str,
    fingerprint: &str,
    definition: &str,
) -> Result<PinStatus, tokio_postgres::Error> {
    loop {
        // Of replicas pinning the same new item at once, one inserts; the
        // others find its pin below.
        let inserted = c
            .execute(
                "INSERT INTO pins (server_key, server, item, fingerprint, definition, since)
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (server_key, item) DO NOTHING",
                &[
                    &server_key,
                    &server,
                    &item,
                    &fingerprint,
                    &definition,
                    &(now_ms() as i64),
                ],
            )
            .await?;
        if inserted == 1 {
            return Ok(PinStatus::New);
        }
        let Some(row) = c
            .query_opt(
                "SELECT fingerprint, definition FROM pins WHERE server_key = $1 AND item = $2",
                &[&server_key, &item],
            )
            .await?
        else {
            continue; // removed meanwhile: pin it again
        };
        let pinned_fingerprint: String = row.get(0);
        if pinned_fingerprint == fingerprint {
            c.execute(
                "DELETE FROM pending WHERE server_key = $1 AND item = $2",
                &[&server_key, &item],
            )
            .await?;
            return Ok(PinStatus::Same);
        }
        c.execute(
            "INSERT INTO pending (server_key, server, item, fingerprint, definition, since)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (server_key, item) DO UPDATE SET fingerprint = EXCLUDED.fingerprint,
               definition = EXCLUDED.definition, server = EXCLUDED.server",
            &[
                &server_key,
                &server,
                &item,
                &fingerprint,
                &definition,
                &(now_ms() as i64),
            ],
        )
        .await?;
        return Ok(PinStatus::Changed { pinned: row.get(1) });
    }
}

async fn list_on(c: &mut Client) -> Result<Vec<PinRow>, tokio_postgres::Error> {
    let rows = c
        .query(
            r#"SELECT p.server, p.item, p.fingerprint, q.fingerprint, p.since
               FROM pins p LEFT JOIN pending q ON p.server_key = q.server_key AND p.item = q.item
               ORDER BY p.server COLLATE "C", p.item COLLATE "C""#,
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| PinRow {
            server: r.get(0),
            item: r.get(1),
            fingerprint: r.get(2),
            pending: r.get(3),
            since_ms: r.get::<_, i64>(4) as u64,
        })
        .collect())
}

async fn pending_on(
    c: &mut Client,
    server: &str,
    item: &str,
) -> Result<Option<(String, String)>, tokio_postgres::Error> {
    let row = c
        .query_opt(
            "SELECT p.definition, q.definition FROM pending q
             JOIN pins p ON p.server_key = q.server_key AND p.item = q.item
             WHERE q.server = $1 AND q.item = $2
             ORDER BY q.since DESC LIMIT 1",
            &[&server, &item],
        )
        .await?;
    Ok(row.map(|r| (r.get(0), r.get(1))))
}

async fn approve_on(
    c: &mut Client,
    server: &str,
    item: Option<&str>,
) -> Result<usize, tokio_postgres::Error> {
    let tx = c.transaction().await?;
    // Taken out of `pending` and into `pins` in one transaction: a change
    // recorded meanwhile by a replica is either approved or left pending.
    let rows = tx
        .query(
            "DELETE FROM pending WHERE server = $1 AND ($2::TEXT IS NULL OR item = $2)
             RETURNING server_key, item, fingerprint, definition",
            &[&server, &item],
        )
        .await?;
    let now = now_ms() as i64;
    for r in &rows {
        let (k, i, f, d): (&str, &str, &str, &str) = (r.get(0), r.get(1), r.get(2), r.get(3));
        tx.execute(
            "UPDATE pins SET fingerprint = $3, definition = $4, since = $5
             WHERE server_key = $1 AND item = $2",
            &[&k, &i, &f, &d, &now],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(rows.len())
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn urls_are_shown_without_their_password() {
        assert_eq!(
            redact("postgres://sluice:hunter2@db:5432/pins"),
            "postgres://sluice:***@db:5432/pins"
        );
        assert_eq!(
            redact("postgresql://u:p@ss@db/pins?sslmode=disable&password=hunter2"),
            "postgresql://u:***@db/pins?sslmode=disable&password=***"
        );
        assert_eq!(
            redact("postgres://postgres@127.0.0.1:5432/test"),
            "postgres://postgres@127.0.0.1:5432/test"
        );
        assert_eq!(redact("postgres://db"), "postgres://db");
        assert_eq!(redact("nonsense"), "<not a URL>");
    }
}
