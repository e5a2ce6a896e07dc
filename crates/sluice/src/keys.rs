//! `sluice keys create | list | revoke | rotate`: API keys in the gateway's
//! key store (`[auth.api_keys]`: SQLite, or PostgreSQL shared by replicas).
//! A new key is printed once, on the last line of stdout; only its keyed
//! hash is stored.

use serde_json::json;
use sluice_auth::{ApiKeys, KeyRecord, NewKey};
use sluice_config::Config;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What to do with the API keys.
#[derive(clap::Subcommand)]
pub(crate) enum KeysCommand {
    /// Creates a key and prints it once, on the last line.
    Create {
        /// A label for people: who or what uses the key.
        #[arg(long)]
        name: String,
        /// The tenant the key's principal belongs to.
        #[arg(long)]
        tenant: Option<String>,
        /// Scopes granted, comma-separated (`mcp,admin`).
        #[arg(long, value_delimiter = ',')]
        scopes: Vec<String>,
        /// Valid for this long (`30d`, `12h`); forever when absent.
        #[arg(long, value_parser = parse_duration)]
        expires: Option<Duration>,
        #[arg(long, default_value = "text", value_parser = ["text", "json"])]
        format: String,
    },
    /// Every key, without secrets.
    List {
        #[arg(long, default_value = "text", value_parser = ["text", "json"])]
        format: String,
    },
    /// Revokes a key: refused from the next request on, on every replica.
    Revoke { id: String },
    /// Gives a key a new secret (same id); the old one works until the overlap ends.
    Rotate {
        id: String,
        /// How long the old secret keeps working (`1h`, `2s`; `0s` ends it now).
        #[arg(long, default_value = "1h", value_parser = parse_duration_or_zero)]
        overlap: Duration,
        #[arg(long, default_value = "text", value_parser = ["text", "json"])]
        format: String,
    },
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    match parse_duration_or_zero(s)? {
        d if d.is_zero() => Err("must be longer than zero".into()),
        d => Ok(d),
    }
}

fn parse_duration_or_zero(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("`{s}` is not a duration like \"30d\", \"12h\" or \"90s\": {e}"))
}

/// Scopes and tenants are tokens: printable ASCII without spaces, quotes or
/// backslashes (they appear in `WWW-Authenticate` challenges).
fn token_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::from(1)
}

pub(crate) fn run(config: &Config, cmd: KeysCommand) -> ExitCode {
    if let KeysCommand::Create {
        name,
        tenant,
        scopes,
        ..
    } = &cmd
    {
        if name.trim().is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
            return fail("--name must be 1 to 128 characters, without control characters");
        }
        if let Some(t) = tenant
            && !token_ok(t)
        {
            return fail("--tenant must be printable ASCII without spaces, quotes or backslashes");
        }
        if let Some(s) = scopes.iter().find(|s| !token_ok(s)) {
            return fail(format!(
                "--scopes: `{s}` is not a scope (printable ASCII without spaces, quotes or backslashes, comma-separated)"
            ));
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime starts");
    rt.block_on(async {
        let keys = match ApiKeys::from_config(&config.auth.api_keys).await {
            Ok(k) => k,
            Err(e) => return fail(e),
        };
        match cmd {
            KeysCommand::Create {
                name,
                tenant,
                scopes,
                expires,
                format,
            } => {
                let made = keys
                    .create(NewKey {
                        name,
                        tenant,
                        scopes,
                        expires_in: expires,
                    })
                    .await;
                match made {
                    Ok(c) => {
                        let key = c.key.expose();
                        if format == "json" {
                            let mut v = record_json(&c.record);
                            v["key"] = json!(key);
                            println!("{v}");
                        } else {
                            println!("created API key {}", describe(&c.record));
                            println!("store it now: it is shown only once; only its hash is kept");
                            println!("{key}");
                        }
                        ExitCode::SUCCESS
                    }
                    Err(e) => fail(e),
                }
            }
            KeysCommand::List { format } => match keys.list().await {
                Ok(rows) if format == "json" => {
                    let all: Vec<_> = rows.iter().map(record_json).collect();
                    println!("{}", json!({ "keys": all }));
                    ExitCode::SUCCESS
                }
                Ok(rows) => {
                    println!(
                        "{:<16}  {:<9}  {:<20}  {:<12}  {:<20}  {:<20}  scopes",
                        "id", "state", "name", "tenant", "created", "expires"
                    );
                    for r in rows {
                        println!(
                            "{:<16}  {:<9}  {:<20}  {:<12}  {:<20}  {:<20}  {}",
                            r.id,
                            state(&r),
                            r.name,
                            r.tenant.as_deref().unwrap_or("-"),
                            time(Some(r.created_ms)),
                            time(r.expires_ms),
                            r.scopes.join(",")
                        );
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            },
            KeysCommand::Revoke { id } => match keys.revoke(&id).await {
                Ok(r) => {
                    println!("revoked API key {} ({}): refused from now on", r.id, r.name);
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            },
            KeysCommand::Rotate {
                id,
                overlap,
                format,
            } => match keys.rotate(&id, overlap).await {
                Ok(c) => {
                    let key = c.key.expose();
                    if format == "json" {
                        let mut v = record_json(&c.record);
                        v["key"] = json!(key);
                        println!("{v}");
                    } else {
                        println!(
                            "rotated API key {}: the old secret works until {}",
                            c.record.id,
                            time(c.record.prev_until_ms)
                        );
                        println!("store it now: it is shown only once; only its hash is kept");
                        println!("{key}");
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            },
        }
    })
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `active`, `revoked`, `expired`, or `rotating` while an old secret still works.
fn state(r: &KeyRecord) -> &'static str {
    let now = now_ms();
    if r.revoked_ms.is_some() {
        "revoked"
    } else if r.expires_ms.is_some_and(|e| now >= e) {
        "expired"
    } else if r.prev_until_ms.is_some_and(|u| now < u) {
        "rotating"
    } else {
        "active"
    }
}

/// RFC 3339 (UTC, seconds), or `-`.
fn time(ms: Option<u64>) -> String {
    match ms {
        Some(ms) => {
            humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
        }
        None => "-".into(),
    }
}

fn describe(r: &KeyRecord) -> String {
    let mut s = format!("{} (name `{}`", r.id, r.name);
    if let Some(t) = &r.tenant {
        s.push_str(&format!(", tenant `{t}`"));
    }
    if !r.scopes.is_empty() {
        s.push_str(&format!(", scopes {}", r.scopes.join(",")));
    }
    match r.expires_ms {
        Some(_) => s.push_str(&format!(", expires {})", time(r.expires_ms))),
        None => s.push_str(", never expires)"),
    }
    s
}

/// A key's record as JSON: never its hash.
fn record_json(r: &KeyRecord) -> serde_json::Value {
    json!({
        "id": r.id,
        "name": r.name,
        "tenant": r.tenant,
        "scopes": r.scopes,
        "state": state(r),
        "created": time(Some(r.created_ms)),
        "expires": r.expires_ms.map(|m| time(Some(m))),
        "revoked": r.revoked_ms.map(|m| time(Some(m))),
        "rotated": r.rotated_ms.map(|m| time(Some(m))),
        "previous_secret_until": r.prev_until_ms.map(|m| time(Some(m))),
    })
}
