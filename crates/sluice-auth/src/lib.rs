//! Who is calling: API keys end to end, and what a protected resource
//! answers (RFC 6750 Bearer challenges, RFC 9728 protected-resource metadata).
//!
//! - [`key`]: the `slk_…` format, generation from the OS's CSPRNG, the keyed
//!   hash that is stored, the constant-time comparison.
//! - [`ApiKeys`]: create, list, revoke, rotate and verify keys against the
//!   [`KeyStore`] (SQLite or PostgreSQL). Every verification reads the store,
//!   so a revocation holds at once on every replica sharing it.
//! - [`Authenticator`]: what the HTTP front end asks: the principal behind an
//!   `Authorization` header, or why not ([`Denied`], with its status and
//!   challenge), and the metadata document.

#![warn(missing_docs)]

pub mod key;

pub use key::{ApiKey, FormatError};
pub use sluice_store::{KeyRecord, KeyStore, StoreError};

use sluice_config::{Auth, AuthMode};
use sluice_pipeline::{Principal, TenantId};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Why a presented key is refused. The token itself is never part of it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum KeyError {
    /// Not a key, or a mistyped one (no lookup was made).
    #[error(transparent)]
    Format(#[from] FormatError),
    /// Unknown id, or a secret that does not match (told alike, so ids cannot
    /// be probed).
    #[error("the API key is not valid: unknown, or its secret does not match")]
    Invalid,
    /// The key (its secret verified) was revoked.
    #[error("the API key {id} was revoked")]
    Revoked {
        /// The key's id.
        id: String,
    },
    /// The key (its secret verified) is past its expiry.
    #[error("the API key {id} expired")]
    Expired {
        /// The key's id.
        id: String,
    },
    /// The key store could not be asked.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What `sluice keys` and the gateway need to manage API keys.
#[derive(Clone)]
pub struct ApiKeys {
    store: KeyStore,
    pepper: Arc<[u8]>,
}

/// A key just made: its record and, once, the whole key.
#[derive(Debug)]
pub struct Created {
    /// What is stored (no secret).
    pub record: KeyRecord,
    /// The whole key, to show once.
    pub key: ApiKey,
}

/// Why a key could not be made or changed.
#[derive(Debug, thiserror::Error)]
pub enum ManageError {
    /// No key has this id.
    #[error("no API key has id {0}")]
    Unknown(String),
    /// A revoked key cannot be rotated.
    #[error("the API key {0} is revoked: it cannot be rotated; create a new one")]
    Revoked(String),
    /// No randomness for a secret.
    #[error("the operating system's random number generator failed: {0}")]
    Random(getrandom::Error),
    /// The key store could not be asked.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a new key is for.
#[derive(Debug, Clone, Default)]
pub struct NewKey {
    /// A label for people.
    pub name: String,
    /// The tenant its principal belongs to.
    pub tenant: Option<String>,
    /// Scopes granted to its principal.
    pub scopes: Vec<String>,
    /// How long it is valid; forever when `None`.
    pub expires_in: Option<Duration>,
}

impl ApiKeys {
    /// Keys in `store`, hashed under `pepper`.
    pub fn new(store: KeyStore, pepper: &[u8]) -> ApiKeys {
        ApiKeys {
            store,
            pepper: pepper.into(),
        }
    }

    /// The configured key store and pepper (`[auth.api_keys]`); an error
    /// names the missing key.
    pub async fn from_config(cfg: &sluice_config::ApiKeys) -> Result<ApiKeys, String> {
        let pepper = cfg.pepper.as_ref().ok_or(
            "auth.api_keys.pepper is not set: API keys need a server-side pepper (at least 32 bytes, e.g. pepper = \"${SLUICE_KEY_PEPPER}\")",
        )?;
        let store = KeyStore::from_config(cfg)
            .await
            .map_err(|e| e.to_string())?;
        Ok(ApiKeys::new(store, pepper.expose().as_bytes()))
    }

    /// The store, for logs (`kind`, `location`).
    pub fn store(&self) -> &KeyStore {
        &self.store
    }

    /// Makes and stores a new key.
    pub async fn create(&self, new: NewKey) -> Result<Created, ManageError> {
        let key = ApiKey::generate().map_err(ManageError::Random)?;
        let now = now_ms();
        let record = KeyRecord {
            id: key.id().to_string(),
            name: new.name,
            tenant: new.tenant,
            scopes: new.scopes,
            created_ms: now,
            expires_ms: new
                .expires_in
                .map(|d| now.saturating_add(d.as_millis() as u64)),
            revoked_ms: None,
            hash: key.hash(&self.pepper),
            prev_hash: None,
            prev_until_ms: None,
            rotated_ms: None,
        };
        self.store.insert(&record).await?;
        Ok(Created { record, key })
    }

    /// Every key (records only: no secret is kept anywhere).
    pub async fn list(&self) -> Result<Vec<KeyRecord>, StoreError> {
        self.store.list().await
    }

    /// Revokes a key: refused from the next request on, on every replica.
    pub async fn revoke(&self, id: &str) -> Result<KeyRecord, ManageError> {
        self.store
            .revoke(id)
            .await?
            .ok_or_else(|| ManageError::Unknown(id.to_string()))
    }

    /// Gives a key a new secret; the old one keeps working for `overlap`.
    pub async fn rotate(&self, id: &str, overlap: Duration) -> Result<Created, ManageError> {
        let key = ApiKey::regenerate(id).map_err(ManageError::Random)?;
        let until = now_ms().saturating_add(overlap.as_millis() as u64);
        match self
            .store
            .rotate(id, &key.hash(&self.pepper), until)
            .await?
        {
            Some(record) => Ok(Created { record, key }),
            None => match self.store.get(id).await? {
                Some(_) => Err(ManageError::Revoked(id.to_string())),
                None => Err(ManageError::Unknown(id.to_string())),
            },
        }
    }

    /// The principal a presented key stands for. The secret is checked
    /// before the key's state, so only its holder learns that it was revoked
    /// or expired.
    pub async fn verify(&self, token: &str) -> Result<Principal, KeyError> {
        let key = ApiKey::parse(token)?;
        let rec = self.store.get(key.id()).await?.ok_or(KeyError::Invalid)?;
        let now = now_ms();
        let current = key.matches(&self.pepper, &rec.hash);
        let previous = rec.prev_hash.as_deref().is_some_and(|h| {
            rec.prev_until_ms.is_some_and(|until| now < until) && key.matches(&self.pepper, h)
        });
        if !(current || previous) {
            return Err(KeyError::Invalid);
        }
        if rec.revoked_ms.is_some() {
            return Err(KeyError::Revoked { id: rec.id });
        }
        if rec.expires_ms.is_some_and(|e| now >= e) {
            return Err(KeyError::Expired { id: rec.id });
        }
        Ok(Principal {
            id: rec.id.into(),
            tenant: rec.tenant.map(|t| TenantId(t.into())),
            scopes: rec.scopes,
        })
    }
}

/// Why a request is refused, with what the client is told.
#[derive(Debug, thiserror::Error)]
pub enum Denied {
    /// No `Authorization` header.
    #[error("authentication required: send Authorization: Bearer <API key>")]
    Missing,
    /// Not one `Bearer <token>` header.
    #[error("the Authorization header is malformed: {0}")]
    BadHeader(&'static str),
    /// A token in the URL's query string.
    #[error(
        "tokens in the query string are refused (they end up in logs): send Authorization: Bearer <token>"
    )]
    TokenInQuery,
    /// The key was refused.
    #[error(transparent)]
    Key(KeyError),
    /// The principal lacks required scopes.
    #[error("the credential lacks the scope(s) this gateway requires: {}", missing.join(" "))]
    Scope {
        /// The required scopes it lacks.
        missing: Vec<String>,
    },
}

impl Denied {
    /// The HTTP status: 400, 401, 403, or 503 when the key store cannot be
    /// reached.
    pub fn status(&self) -> u16 {
        match self {
            Denied::TokenInQuery => 400,
            Denied::Scope { .. } => 403,
            Denied::Key(KeyError::Store(_)) => 503,
            _ => 401,
        }
    }

    /// A stable code for logs and the error's data (`invalid_token`, …).
    pub fn code(&self) -> &'static str {
        match self {
            Denied::Missing => "missing_token",
            Denied::BadHeader(_) => "invalid_request",
            Denied::TokenInQuery => "invalid_request",
            Denied::Key(KeyError::Format(FormatError::Malformed)) => "malformed_token",
            Denied::Key(KeyError::Format(FormatError::Checksum)) => "bad_checksum",
            Denied::Key(KeyError::Invalid) => "invalid_token",
            Denied::Key(KeyError::Revoked { .. }) => "revoked_token",
            Denied::Key(KeyError::Expired { .. }) => "expired_token",
            Denied::Key(KeyError::Store(_)) => "key_store_unavailable",
            Denied::Scope { .. } => "insufficient_scope",
        }
    }
}

/// The front end's view of authentication: built when `auth.mode =
/// "required"`.
pub struct Authenticator {
    keys: Option<ApiKeys>,
    required_scopes: Vec<String>,
    resource: String,
    metadata_url: String,
}

/// Where RFC 9728 puts the metadata of the resource at `path`: the
/// well-known prefix, then the resource's path (`/mcp`).
pub const METADATA_PREFIX: &str = "/.well-known/oauth-protected-resource";

impl Authenticator {
    /// The authenticator for `[auth]`, or `None` when requests need none.
    /// `default_url` is the resource URI when `auth.public_url` is unset.
    pub async fn from_config(
        cfg: &Auth,
        default_url: &str,
    ) -> Result<Option<Authenticator>, String> {
        if cfg.mode != AuthMode::Required {
            return Ok(None);
        }
        let keys = if cfg.api_keys.enabled {
            Some(ApiKeys::from_config(&cfg.api_keys).await?)
        } else {
            None
        };
        Ok(Some(Authenticator::new(
            keys,
            cfg.required_scopes.clone(),
            cfg.public_url.as_deref().unwrap_or(default_url),
        )))
    }

    /// An authenticator over `keys`, for the resource `public_url`.
    pub fn new(
        keys: Option<ApiKeys>,
        required_scopes: Vec<String>,
        public_url: &str,
    ) -> Authenticator {
        let (origin, path) = split_url(public_url);
        let path = path.trim_end_matches('/');
        Authenticator {
            keys,
            required_scopes,
            resource: public_url.to_string(),
            metadata_url: format!("{origin}{METADATA_PREFIX}{path}"),
        }
    }

    /// The API keys, for logs.
    pub fn keys(&self) -> Option<&ApiKeys> {
        self.keys.as_ref()
    }

    /// Refuses a query string that carries a token (`access_token=`, or any
    /// value that looks like a Sluice key).
    pub fn check_query(&self, query: Option<&str>) -> Result<(), Denied> {
        let Some(q) = query else { return Ok(()) };
        let leaked = q.split('&').any(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            k.eq_ignore_ascii_case("access_token")
                || k.eq_ignore_ascii_case("token")
                || k.eq_ignore_ascii_case("api_key")
                || v.starts_with(key::PREFIX)
                || v.starts_with("slk%5F")
                || v.starts_with("slk%5f")
        });
        if leaked {
            Err(Denied::TokenInQuery)
        } else {
            Ok(())
        }
    }

    /// The principal behind the request's `Authorization` header values.
    pub async fn authenticate<'a>(
        &self,
        mut authorization: impl Iterator<Item = &'a [u8]>,
    ) -> Result<Principal, Denied> {
        let Some(first) = authorization.next() else {
            return Err(Denied::Missing);
        };
        if authorization.next().is_some() {
            return Err(Denied::BadHeader("send one Authorization header"));
        }
        let text =
            std::str::from_utf8(first).map_err(|_| Denied::BadHeader("it is not ASCII text"))?;
        let (scheme, token) = text
            .split_once(' ')
            .ok_or(Denied::BadHeader("expected `Bearer <token>`"))?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(Denied::BadHeader("only the Bearer scheme is accepted"));
        }
        let token = token.trim();
        if token.is_empty() {
            return Err(Denied::BadHeader("the Bearer token is empty"));
        }
        let Some(keys) = &self.keys else {
            return Err(Denied::Key(KeyError::Invalid));
        };
        let principal = keys.verify(token).await.map_err(Denied::Key)?;
        let missing: Vec<String> = self
            .required_scopes
            .iter()
            .filter(|s| !principal.scopes.contains(s))
            .cloned()
            .collect();
        if !missing.is_empty() {
            return Err(Denied::Scope { missing });
        }
        Ok(principal)
    }

    /// The `WWW-Authenticate` value for a refusal.
    pub fn challenge(&self, d: &Denied) -> String {
        let mut v = format!("Bearer resource_metadata=\"{}\"", self.metadata_url);
        let error = match d {
            Denied::Missing => None,
            Denied::BadHeader(_) | Denied::TokenInQuery => Some("invalid_request"),
            Denied::Scope { .. } => Some("insufficient_scope"),
            Denied::Key(_) => Some("invalid_token"),
        };
        if let Some(e) = error {
            v.push_str(&format!(", error=\"{e}\""));
        }
        if !self.required_scopes.is_empty() {
            v.push_str(&format!(", scope=\"{}\"", self.required_scopes.join(" ")));
        }
        v
    }

    /// The protected-resource metadata document (RFC 9728).
    pub fn metadata(&self) -> serde_json::Value {
        serde_json::json!({
            "resource": self.resource,
            "bearer_methods_supported": ["header"],
            "scopes_supported": self.required_scopes,
            "resource_name": "Sluice MCP gateway",
        })
    }

    /// Where the metadata is (`resource_metadata` in challenges).
    pub fn metadata_url(&self) -> &str {
        &self.metadata_url
    }
}

/// `https://host:port/path` → (`https://host:port`, `/path`).
fn split_url(url: &str) -> (&str, &str) {
    let start = url.find("://").map_or(0, |i| i + 3);
    match url[start..].find('/') {
        Some(i) => url.split_at(start + i),
        None => (url, ""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_metadata_url_inserts_the_well_known_path_before_the_resource_path() {
        let a = Authenticator::new(None, vec!["mcp".into()], "http://127.0.0.1:8080/mcp");
        assert_eq!(
            a.metadata_url(),
            "http://127.0.0.1:8080/.well-known/oauth-protected-resource/mcp"
        );
        let b = Authenticator::new(None, vec![], "https://mcp.example.com");
        assert_eq!(
            b.metadata_url(),
            "https://mcp.example.com/.well-known/oauth-protected-resource"
        );
        assert_eq!(
            a.challenge(&Denied::Missing),
            "Bearer resource_metadata=\"http://127.0.0.1:8080/.well-known/oauth-protected-resource/mcp\", scope=\"mcp\""
        );
        assert!(
            a.challenge(&Denied::Scope {
                missing: vec!["mcp".into()]
            })
            .contains("error=\"insufficient_scope\", scope=\"mcp\"")
        );
        assert_eq!(a.metadata()["bearer_methods_supported"][0], "header");
    }

    #[test]
    fn tokens_in_query_strings_are_refused() {
        let a = Authenticator::new(None, vec![], "http://127.0.0.1:8080/mcp");
        assert!(a.check_query(None).is_ok());
        assert!(a.check_query(Some("x=1")).is_ok());
        for q in [
            "access_token=abc",
            "a=1&token=x",
            "k=slk_abc",
            "k=slk%5Fabc",
        ] {
            assert!(
                matches!(a.check_query(Some(q)), Err(Denied::TokenInQuery)),
                "{q}"
            );
        }
    }
}
