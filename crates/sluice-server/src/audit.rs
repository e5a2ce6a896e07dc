//! What the gateway writes to the audit log, and from where.
//!
//! - `tool_call`: every `tools/call` of every front end passes the pipeline's
//!   [`AuditStage`], which opens a [`CallNote`] when the call starts, tells it
//!   where the call was routed, and records the call's typed outcome when it
//!   ends (or, from the note's `Drop`, that the request was cancelled).
//! - `defence` and `pin`: the defence records a finding or a held-back
//!   change the first time it sees it (per server, tool and fingerprint), so
//!   re-listing does not repeat it; output findings are recorded per call.
//! - `approval`: every human-approval decision.
//!
//! Events are small owned structs; serialization, redaction and hashing
//! happen on the audit writer, off the request path.

use crate::error::Fail;
use crate::gateway::Gateway;
use crate::pipeline::{Outcome as CallOutcome, RequestCtx};
use crate::session::Session;
use serde_json::Value;
use serde_json::value::RawValue;
use sluice_audit::{AuditLog, Caller, Decision, Event, Finding, Outcome, PinHeld, ToolCall};
use sluice_scan::Report;
use sluice_upstream::UpstreamError;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// How `modern::start` names the session it makes for one 2026 request.
const STATELESS_PREFIX: &str = "stateless-";

/// Findings remembered as already recorded; past this the memory starts over.
const MAX_SEEN: usize = 65_536;

/// The gateway's audit log and what it has already recorded once.
pub(crate) struct Audit {
    pub log: AuditLog,
    seen: Mutex<HashSet<String>>,
}

impl Audit {
    pub(crate) fn new(log: AuditLog) -> Audit {
        Audit {
            log,
            seen: Mutex::new(HashSet::new()),
        }
    }

    /// True the first time this (kind, server, item, fingerprint) comes by.
    fn first_sighting(&self, kind: &str, server: &str, item: &str, fingerprint: &str) -> bool {
        let mut seen = self.seen.lock().unwrap();
        if seen.len() >= MAX_SEEN {
            seen.clear();
        }
        seen.insert(format!("{kind}\0{server}\0{item}\0{fingerprint}"))
    }
}

/// What the audit log learns of one `tools/call` as it proceeds.
pub(crate) struct CallNote {
    /// `None`: nothing is recorded (audit off, or not a tool call).
    log: Option<AuditLog>,
    started: Instant,
    session: Arc<str>,
    request: Option<String>,
    client_name: Option<String>,
    client_version: Option<String>,
    remote: Option<std::net::SocketAddr>,
    caller: Option<Box<Caller>>,
    tool: String,
    server: Option<String>,
    upstream_tool: Option<String>,
    arguments: Option<Value>,
}

impl CallNote {
    fn new(log: &AuditLog, ctx: &RequestCtx) -> CallNote {
        let sess: &Session = &ctx.session;
        let mut note = CallNote::off();
        if !log.enabled() {
            return note;
        }
        note.log = Some(log.clone());
        // A 2026 request has a session made for it alone: its id is the request's.
        match sess.id.strip_prefix(STATELESS_PREFIX) {
            Some(request) => {
                note.session = "stateless".into();
                note.request = Some(request.to_string());
            }
            None => note.session = sess.id.clone(),
        }
        let info = |k: &str| {
            sess.client_info
                .get(k)
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        note.client_name = info("name");
        note.client_version = info("version");
        note.remote = ctx.remote;
        note.caller = ctx.principal.as_ref().map(|p| {
            Box::new(Caller {
                principal: p.id.to_string(),
                tenant: ctx.tenant.as_ref().map(|t| t.0.to_string()),
            })
        });
        note
    }

    /// A note that records nothing.
    pub(crate) fn off() -> CallNote {
        CallNote {
            log: None,
            started: Instant::now(),
            session: "".into(),
            request: None,
            client_name: None,
            client_version: None,
            remote: None,
            caller: None,
            tool: String::new(),
            server: None,
            upstream_tool: None,
            arguments: None,
        }
    }

    /// Where the call goes, and its arguments (copied only when the log keeps them).
    pub(crate) fn routed(&mut self, ctx: &RequestCtx, arguments: Option<&Value>) {
        let Some(log) = &self.log else { return };
        let route = ctx.routed();
        self.tool = route.exposed.clone();
        self.server = Some(route.server_name.to_string());
        self.upstream_tool = Some(route.name.clone());
        if log.keeps_arguments() {
            self.arguments = arguments.cloned();
        }
    }

    fn event(&mut self, outcome: Outcome) -> Event {
        Event::ToolCall(ToolCall {
            session: self.session.clone(),
            request: self.request.take(),
            client_name: self.client_name.take(),
            client_version: self.client_version.take(),
            remote: self.remote,
            caller: self.caller.take(),
            tool: std::mem::take(&mut self.tool),
            server: self.server.take(),
            upstream_tool: self.upstream_tool.take(),
            arguments: self.arguments.take(),
            outcome,
            duration_ms: self.started.elapsed().as_millis() as u64,
        })
    }

    /// Records the call with its typed outcome.
    async fn finish(mut self, ctx: &RequestCtx, result: &CallOutcome) {
        let Some(log) = self.log.take() else { return };
        if self.tool.is_empty()
            && let Some(tool) = &ctx.tool
        {
            self.tool = tool.clone();
        }
        let outcome = match result {
            Ok(r) => result_outcome(r),
            Err(Fail::Policy(r)) => Outcome::Refused {
                reason: r.code.to_string(),
                detail: r.message.clone(),
            },
            Err(Fail::Upstream {
                error: UpstreamError::Rpc(e),
                ..
            }) => rpc_error(e.get()),
            // Any other upstream fault reaches the agent as a tool error.
            Err(Fail::Upstream { error, .. }) => Outcome::ToolError {
                code: Some(error.code().to_string()),
            },
            Err(Fail::Client(e)) => Outcome::Error {
                code: e.code,
                message: e.message.clone(),
            },
        };
        log.record(self.event(outcome)).await;
    }
}

/// A JSON-RPC error object's code and message.
fn rpc_error(error: &str) -> Outcome {
    let (code, message) = crate::rescue::code_and_message(error);
    Outcome::Error { code, message }
}

impl Drop for CallNote {
    /// A request aborted mid-call (cancelled, or its client gone) is still recorded.
    fn drop(&mut self) {
        if let Some(log) = self.log.take() {
            log.record_detached(self.event(Outcome::Cancelled));
        }
    }
}

/// `ok`, or `tool_error` when the result says `isError: true`. Only results
/// that mention `isError` at all are parsed.
fn result_outcome(r: &RawValue) -> Outcome {
    if !r.get().contains("\"isError\"") {
        return Outcome::Ok;
    }
    let v: Value = serde_json::from_str(r.get()).unwrap_or_default();
    if v.get("isError") != Some(&Value::Bool(true)) {
        return Outcome::Ok;
    }
    Outcome::ToolError {
        code: v
            .pointer("/_meta/sluice~1error/code")
            .and_then(Value::as_str)
            .map(str::to_string),
    }
}

/// Rule ids of a report, strongest first, each once.
fn rules(report: &Report) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for r in &report.reasons {
        if !out.contains(&r.rule) {
            out.push(r.rule.clone());
        }
    }
    out
}

/// Audit: records every `tools/call` in the audit log, however it ends.
///
/// - Runs: around every `tools/call`: opened before the first stage,
///   finished with the typed outcome after the last (a request aborted
///   mid-way is recorded as `cancelled`).
/// - May: nothing to the call; queues one event (arguments redacted on the
///   writer, off the request path).
/// - Default: on when `[audit] enabled = true`; a no-op otherwise.
pub(crate) struct AuditStage;

impl AuditStage {
    /// The record of a call that starts now.
    pub(crate) fn begin(&self, gw: &Gateway, ctx: &RequestCtx) -> CallNote {
        CallNote::new(&gw.audit.log, ctx)
    }

    /// Records the call with its outcome.
    pub(crate) async fn finish(&self, note: CallNote, ctx: &RequestCtx, outcome: &CallOutcome) {
        note.finish(ctx, outcome).await;
    }
}

impl Gateway {
    /// Records a detector finding; definitions and instructions only the
    /// first time their fingerprint is seen.
    pub(crate) fn audit_finding(
        &self,
        server: &str,
        tool: Option<&str>,
        kind: &'static str,
        report: &Report,
        action: &'static str,
        fingerprint: impl FnOnce() -> Option<String>,
    ) {
        if !self.audit.log.enabled() {
            return;
        }
        let fingerprint = fingerprint();
        if let Some(fp) = &fingerprint
            && !self
                .audit
                .first_sighting(kind, server, tool.unwrap_or_default(), fp)
        {
            return;
        }
        self.audit.log.record_detached(Event::Defence(Finding {
            server: server.to_string(),
            tool: tool.map(str::to_string),
            kind,
            verdict: report.verdict.as_str(),
            rules: rules(report),
            action,
            fingerprint,
        }));
    }

    /// Records a definition held back because it changed, once per new version.
    pub(crate) fn audit_pin(
        &self,
        server: &str,
        tool: Option<&str>,
        kind: &'static str,
        old_fingerprint: Option<&str>,
        new_fingerprint: &str,
    ) {
        if !self.audit.log.enabled()
            || !self
                .audit
                .first_sighting("pin", server, tool.unwrap_or_default(), new_fingerprint)
        {
            return;
        }
        self.audit.log.record_detached(Event::Pin(PinHeld {
            server: server.to_string(),
            tool: tool.map(str::to_string),
            kind,
            old_fingerprint: old_fingerprint.map(str::to_string),
            new_fingerprint: new_fingerprint.to_string(),
        }));
    }

    /// Records a human-approval decision.
    pub(crate) async fn audit_approval(
        &self,
        sess: &Session,
        server: &str,
        tool: &str,
        decision: &Result<(), String>,
    ) {
        if !self.audit.log.enabled() {
            return;
        }
        self.audit
            .log
            .record(Event::Approval(Decision {
                session: sess.id.clone(),
                server: server.to_string(),
                tool: tool.to_string(),
                approved: decision.is_ok(),
                reason: decision.as_ref().err().cloned(),
            }))
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_string()).unwrap()
    }

    #[test]
    fn outcomes_read_from_results() {
        assert_eq!(
            result_outcome(&raw(r#"{"content":[{"type":"text","text":"isError"}]}"#)),
            Outcome::Ok
        );
        assert_eq!(
            result_outcome(&raw(r#"{"content":[],"isError":false}"#)),
            Outcome::Ok
        );
        assert_eq!(
            result_outcome(&raw(r#"{"content":[], "isError": true}"#)),
            Outcome::ToolError { code: None }
        );
        assert_eq!(
            result_outcome(&raw(
                r#"{"isError":true,"_meta":{"sluice/error":{"code":"timeout"}}}"#
            )),
            Outcome::ToolError {
                code: Some("timeout".into())
            }
        );
    }
}
