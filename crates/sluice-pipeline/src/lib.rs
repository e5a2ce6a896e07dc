//! The request pipeline's vocabulary, without I/O.
//!
//! Every front end (2025-11-25 sessions, 2026-07-28 stateless HTTP, stdio)
//! hands a request to one `Pipeline::call` in `sluice-server`; the stages it
//! runs speak in these types:
//!
//! - [`Flow`]: what a stage decided: go on ([`Flow::Next`]) or answer now
//!   ([`Flow::Answer`]). Never a bool whose meaning must be remembered.
//! - [`Era`]: which revision of the protocol the client speaks.
//! - [`ServerId`], [`Route`]: where a call goes, once resolved.
//! - [`Principal`], [`TenantId`]: who is calling (slots the identity stage fills).
//! - [`Refusal`]: the gateway's own "no" (denied, limited, held), with the
//!   code and text an agent can act on; mapped to the wire in one place.

#![warn(missing_docs, unreachable_pub)]

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// What a stage decided about a request.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a stage's decision must be acted on"]
pub enum Flow<T> {
    /// Go on to the next stage.
    Next,
    /// Stop here: this is the request's answer.
    Answer(T),
}

impl<T> Flow<T> {
    /// `Answer(t)` if `answer` is `Some(t)`, else `Next`.
    pub fn answer_if(answer: Option<T>) -> Flow<T> {
        match answer {
            Some(t) => Flow::Answer(t),
            None => Flow::Next,
        }
    }
}

/// The protocol revision family a client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Era {
    /// 2025-11-25 and earlier: `initialize`, `Mcp-Session-Id`, server-to-client requests.
    Session,
    /// 2026-07-28: stateless requests, `input_required` round trips.
    Stateless,
}

impl Era {
    /// The label used in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Era::Session => "session",
            Era::Stateless => "stateless",
        }
    }
}

/// A configured upstream server, as the request path names it.
///
/// Issued by the gateway's catalog; holds no position a caller may index
/// with. Today it is the server's place in the configuration; hot reload
/// will issue ids that outlive a reordering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServerId(u32);

impl ServerId {
    /// The id the catalog issued as `n`.
    pub const fn new(n: u32) -> ServerId {
        ServerId(n)
    }

    /// The number the catalog issued.
    pub const fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for ServerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s{}", self.0)
    }
}

/// Where a named call (a tool or a prompt) goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The server that owns it.
    pub server: ServerId,
    /// The server's configured name (for errors, logs and the audit log).
    pub server_name: Arc<str>,
    /// The name the client used (`server__tool`).
    pub exposed: String,
    /// The server's own name for it.
    pub name: String,
}

/// The tenant a principal belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TenantId(pub Arc<str>);

/// Who is calling, once authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// A stable id (a key id, or a token's subject).
    pub id: Arc<str>,
    /// The tenant it belongs to, if tenants are configured.
    pub tenant: Option<TenantId>,
    /// Scopes granted to it.
    pub scopes: Vec<String>,
}

/// Whether, and when, an agent may try a refused call again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Retrying will not help (denied, held for review, refused by the user).
    Never,
    /// The refusal is temporary; `Some` says how long to wait.
    Later(Option<Duration>),
}

/// Why the gateway's policy refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    /// Not allowed: access rules, a held-back tool, a refused approval.
    Denied,
    /// Over a rate limit or quota.
    Limited,
    /// A policy dependency (the pin store, a limiter) did not answer: failed closed.
    Unavailable,
}

/// The gateway's own refusal of a request, as the agent is told it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Which kind of refusal (maps to the HTTP status and JSON-RPC code).
    pub kind: RefusalKind,
    /// A stable code, as in the result's `_meta["sluice/error"].code`
    /// (`tool_poisoned`, `approval_refused`, …).
    pub code: &'static str,
    /// A sentence an agent can act on: what was refused and why.
    pub message: String,
    /// Whether a retry may succeed.
    pub retry: Retry,
    /// The limit that refused, for a `Limited` refusal.
    pub limit: Option<LimitHit>,
    /// A refused `tools/call` is told as an `isError` tool result (true:
    /// holds, approvals, loops) or as a JSON-RPC error (limits, by default).
    pub as_tool_result: bool,
}

/// The limit a refusal hit: its configured name and the budget's scope
/// (`principal=…, tool=…`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitHit {
    /// The limit's `name`.
    pub name: String,
    /// Whose budget ran out.
    pub scope: String,
}

impl Refusal {
    /// A refusal that retrying will not change.
    pub fn denied(code: &'static str, message: impl Into<String>) -> Refusal {
        Refusal {
            kind: RefusalKind::Denied,
            code,
            message: message.into(),
            retry: Retry::Never,
            limit: None,
            as_tool_result: true,
        }
    }

    /// A limit was hit; the agent may retry after `retry_after`.
    pub fn limited(
        code: &'static str,
        message: impl Into<String>,
        retry_after: Duration,
    ) -> Refusal {
        Refusal {
            kind: RefusalKind::Limited,
            code,
            message: message.into(),
            retry: Retry::Later(Some(retry_after)),
            limit: None,
            as_tool_result: true,
        }
    }

    /// A policy dependency is down; the gateway fails closed for now.
    pub fn unavailable(code: &'static str, message: impl Into<String>) -> Refusal {
        Refusal {
            kind: RefusalKind::Unavailable,
            code,
            message: message.into(),
            retry: Retry::Later(None),
            limit: None,
            as_tool_result: true,
        }
    }

    /// The HTTP status a stateless response carries for this refusal.
    pub fn http_status(&self) -> u16 {
        match self.kind {
            RefusalKind::Denied => 403,
            RefusalKind::Limited => 429,
            RefusalKind::Unavailable => 503,
        }
    }

    /// Seconds to wait before retrying, when known (`retryAfter`, `Retry-After`).
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self.retry {
            Retry::Later(Some(d)) => Some(d.as_secs_f64().ceil() as u64),
            _ => None,
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_know_their_status_and_wait() {
        let d = Refusal::denied("tool_poisoned", "no");
        assert_eq!((d.http_status(), d.retry_after_secs()), (403, None));
        let l = Refusal::limited("rate_limited", "slow down", Duration::from_millis(1500));
        assert_eq!((l.http_status(), l.retry_after_secs()), (429, Some(2)));
        let u = Refusal::unavailable("pin_store_unavailable", "later");
        assert_eq!((u.http_status(), u.retry), (503, Retry::Later(None)));
    }

    #[test]
    fn flows_from_options() {
        assert_eq!(Flow::answer_if(Some(3)), Flow::Answer(3));
        assert_eq!(Flow::<u8>::answer_if(None), Flow::Next);
    }
}
