//! What the gateway writes to the audit log, and from where.
//!
//! - `tool_call`: every `tools/call` of every front end passes
//!   [`Gateway::call_tool`], which fills a [`CallNote`] as the call is routed,
//!   refused or answered, and records it when the call ends (or, from the
//!   note's `Drop`, when the request is cancelled).
//! - `defence` and `pin`: the defence records a finding or a held-back
//!   change the first time it sees it (per server, tool and fingerprint), so
//!   re-listing does not repeat it; output findings are recorded per call.
//! - `approval`: every human-approval decision.
//!
//! Events are small owned structs; serialization, redaction and hashing
//! happen on the audit writer, off the request path.

use crate::error::Fail;
use crate::gateway::{Gateway, Kind};
use crate::session::{Outbound, Session};
use serde_json::Value;
use serde_json::value::RawValue;
use sluice_audit::{AuditLog, Decision, Event, Finding, Outcome, PinHeld, ToolCall};
use sluice_scan::Report;
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
    tool: String,
    server: Option<String>,
    upstream_tool: Option<String>,
    arguments: Option<Value>,
    refused: Option<(&'static str, String)>,
}

impl CallNote {
    fn new(log: &AuditLog, sess: &Session) -> CallNote {
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
        note.remote = sess.remote();
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
            tool: String::new(),
            server: None,
            upstream_tool: None,
            arguments: None,
            refused: None,
        }
    }

    /// The tool name the client asked for.
    pub(crate) fn named(&mut self, exposed: &str) {
        if self.log.is_some() {
            self.tool = exposed.to_string();
        }
    }

    /// Where the call goes, and its arguments (copied only when the log keeps them).
    pub(crate) fn routed(&mut self, server: &str, tool: &str, arguments: Option<&Value>) {
        let Some(log) = &self.log else { return };
        self.server = Some(server.to_string());
        self.upstream_tool = Some(tool.to_string());
        if log.keeps_arguments() {
            self.arguments = arguments.cloned();
        }
    }

    /// The gateway refused the call (`code` as in the result's `_meta`).
    pub(crate) fn refused(&mut self, code: &'static str, detail: &str) {
        if self.log.is_some() {
            self.refused = Some((code, detail.to_string()));
        }
    }

    fn event(&mut self, outcome: Outcome) -> Event {
        Event::ToolCall(ToolCall {
            session: self.session.clone(),
            request: self.request.take(),
            client_name: self.client_name.take(),
            client_version: self.client_version.take(),
            remote: self.remote,
            tool: std::mem::take(&mut self.tool),
            server: self.server.take(),
            upstream_tool: self.upstream_tool.take(),
            arguments: self.arguments.take(),
            outcome,
            duration_ms: self.started.elapsed().as_millis() as u64,
        })
    }

    /// Records the call with the outcome of `result`.
    async fn finish(mut self, result: &Result<Box<RawValue>, Fail>) {
        let Some(log) = self.log.take() else { return };
        let outcome = match (result, self.refused.take()) {
            (Ok(_), Some((reason, detail))) => Outcome::Refused {
                reason: reason.to_string(),
                detail,
            },
            (Ok(r), None) => result_outcome(r),
            (Err(fail), _) => {
                let e: Value = serde_json::from_str(&fail.to_error_json()).unwrap_or_default();
                Outcome::Error {
                    code: e["code"].as_i64().unwrap_or(0),
                    message: e["message"].as_str().unwrap_or_default().to_string(),
                }
            }
        };
        log.record(self.event(outcome)).await;
    }
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

impl Gateway {
    /// `tools/call`, recorded in the audit log however it ends.
    pub(crate) async fn call_tool(
        &self,
        sess: &Arc<Session>,
        params: Option<&RawValue>,
        out: &Arc<dyn Outbound>,
    ) -> Result<Box<RawValue>, Fail> {
        let mut note = CallNote::new(&self.audit.log, sess);
        let r = self
            .call_named(sess, Kind::Tools, "tools/call", params, out, &mut note)
            .await;
        note.finish(&r).await;
        r
    }

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
