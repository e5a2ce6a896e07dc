//! What is recorded. Events are plain owned data, built cheaply on the
//! request path; they are serialized (and arguments redacted) on the writer.

use crate::chain::Line;
use crate::redact::Arguments;
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::Arc;

/// One auditable thing that happened.
#[derive(Debug, Clone)]
pub enum Event {
    /// A `tools/call` and how it ended (`"event": "tool_call"`).
    ToolCall(ToolCall),
    /// The poisoning detector flagged something (`"event": "defence"`).
    Defence(Finding),
    /// A changed definition was held back against its pin (`"event": "pin"`).
    Pin(PinHeld),
    /// A user approved or refused a call (`"event": "approval"`).
    Approval(Decision),
}

impl Event {
    /// The `event` member of the record.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::ToolCall(_) => "tool_call",
            Event::Defence(_) => "defence",
            Event::Pin(_) => "pin",
            Event::Approval(_) => "approval",
        }
    }

    pub(crate) fn write(&mut self, line: &mut Line<'_>, args: &Arguments) {
        match self {
            Event::ToolCall(c) => c.write(line, args),
            Event::Defence(f) => f.write(line),
            Event::Pin(p) => p.write(line),
            Event::Approval(d) => d.write(line),
        }
    }
}

/// A `tools/call`: who called which tool with which arguments, and how it ended.
#[derive(Debug, Clone)]
pub struct ToolCall {
    /// The session id, or `"stateless"` for a 2026-07-28 request.
    pub session: Arc<str>,
    /// For stateless requests: the gateway's id of the request.
    pub request: Option<String>,
    /// The client's `clientInfo.name`, when it sent one.
    pub client_name: Option<String>,
    /// The client's `clientInfo.version`, when it sent one.
    pub client_version: Option<String>,
    /// The client's address (HTTP), when known.
    pub remote: Option<SocketAddr>,
    /// Who called, when authentication is on (boxed: most records of a
    /// gateway without auth have none, and the event stays small).
    pub caller: Option<Box<Caller>>,
    /// The tool name as the client sent it.
    pub tool: String,
    /// The server it was routed to (none when routing failed).
    pub server: Option<String>,
    /// The server's own name of the tool.
    pub upstream_tool: Option<String>,
    /// The call's arguments, as sent; redacted and capped on the writer
    /// according to `audit.arguments`. `None` when not kept.
    pub arguments: Option<Value>,
    /// How the call ended.
    pub outcome: Outcome,
    /// How long the call took, in milliseconds.
    pub duration_ms: u64,
}

/// The authenticated principal of a call: its id (an API key's id), never
/// a token, and its tenant if its credential names one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The principal's id (an API key's id).
    pub principal: String,
    /// Its tenant, if any.
    pub tenant: Option<String>,
}

/// How a tool call ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// A result without `isError`.
    Ok,
    /// A result with `isError: true`; `code` is the gateway's reason when it
    /// made the result (`timeout`, `unavailable`, `output_withheld`, …).
    ToolError {
        /// The gateway's reason; `None` when the server itself reported the error.
        code: Option<String>,
    },
    /// A JSON-RPC error.
    Error {
        /// The JSON-RPC error code.
        code: i64,
        /// The error message (capped in the record).
        message: String,
    },
    /// The gateway did not call the tool.
    Refused {
        /// A stable code (`tool_blocked`, `tool_definition_changed`, `approval_refused`).
        reason: String,
        /// Human-readable detail (capped in the record).
        detail: String,
    },
    /// The client cancelled the request (or went away) before it ended.
    Cancelled,
}

impl ToolCall {
    fn write(&mut self, line: &mut Line<'_>, args: &Arguments) {
        line.str("session", &self.session);
        line.opt_str("request", self.request.as_deref());
        if self.client_name.is_some() || self.client_version.is_some() {
            line.value(
                "client",
                &serde_json::json!({"name": self.client_name, "version": self.client_version}),
            );
        }
        if let Some(r) = self.remote {
            line.str("remote", &r.to_string());
        }
        if let Some(c) = &self.caller {
            line.str("principal", &c.principal);
            line.opt_str("tenant", c.tenant.as_deref());
        }
        line.str("tool", &self.tool);
        line.opt_str("server", self.server.as_deref());
        line.opt_str("upstream_tool", self.upstream_tool.as_deref());
        if let Some(a) = &mut self.arguments {
            line.raw("arguments", &args.render(a));
        }
        match &self.outcome {
            Outcome::Ok => line.str("outcome", "ok"),
            Outcome::ToolError { code } => {
                line.str("outcome", "tool_error");
                line.opt_str("code", code.as_deref());
            }
            Outcome::Error { code, message } => {
                line.str("outcome", "error");
                line.value(
                    "error",
                    &serde_json::json!({"code": code, "message": cap(message)}),
                );
            }
            Outcome::Refused { reason, detail } => {
                line.str("outcome", "refused");
                line.str("reason", reason);
                line.str("detail", cap(detail));
            }
            Outcome::Cancelled => line.str("outcome", "cancelled"),
        }
        line.num("duration_ms", self.duration_ms as i64);
    }
}

/// A poisoning-detector finding on a definition, instructions or an output.
#[derive(Debug, Clone)]
pub struct Finding {
    /// The configured name of the server the finding is about.
    pub server: String,
    /// The server's own tool name (outputs: the exposed name); none for instructions.
    pub tool: Option<String>,
    /// `definition`, `instructions` or `output`.
    pub kind: &'static str,
    /// `suspicious` or `malicious`.
    pub verdict: &'static str,
    /// Ids of the rules that fired, strongest first.
    pub rules: Vec<String>,
    /// `blocked` (hidden and refused), `withheld` (output replaced) or
    /// `warned` (kept, flagged here and in metrics).
    pub action: &'static str,
    /// `sha256:…` of what was scanned (definitions and instructions).
    pub fingerprint: Option<String>,
}

impl Finding {
    fn write(&self, line: &mut Line<'_>) {
        line.str("server", &self.server);
        line.opt_str("tool", self.tool.as_deref());
        line.str("kind", self.kind);
        line.str("verdict", self.verdict);
        line.value("rules", &self.rules);
        line.str("action", self.action);
        line.opt_str("fingerprint", self.fingerprint.as_deref());
    }
}

/// A definition (or instructions) that changed since it was pinned, held back.
#[derive(Debug, Clone)]
pub struct PinHeld {
    /// The configured name of the server whose definition changed.
    pub server: String,
    /// The server's own tool name; none for instructions.
    pub tool: Option<String>,
    /// `definition` or `instructions`.
    pub kind: &'static str,
    /// Fingerprint of the approved (pinned) version, when known.
    pub old_fingerprint: Option<String>,
    /// Fingerprint of the version the server offers now.
    pub new_fingerprint: String,
}

impl PinHeld {
    fn write(&self, line: &mut Line<'_>) {
        line.str("server", &self.server);
        line.opt_str("tool", self.tool.as_deref());
        line.str("kind", self.kind);
        line.opt_str("old_fingerprint", self.old_fingerprint.as_deref());
        line.str("new_fingerprint", &self.new_fingerprint);
        line.str("action", "held");
    }
}

/// A human-approval decision on a tool call.
#[derive(Debug, Clone)]
pub struct Decision {
    /// The session id of the call, as in [`ToolCall::session`].
    pub session: Arc<str>,
    /// The configured name of the server the tool belongs to.
    pub server: String,
    /// The exposed tool name.
    pub tool: String,
    /// Whether the call may proceed.
    pub approved: bool,
    /// Why it may not proceed (refusals only).
    pub reason: Option<String>,
}

impl Decision {
    fn write(&self, line: &mut Line<'_>) {
        line.str("session", &self.session);
        line.str("server", &self.server);
        line.str("tool", &self.tool);
        line.str(
            "decision",
            if self.approved { "approved" } else { "refused" },
        );
        line.opt_str("reason", self.reason.as_deref().map(cap));
    }
}

/// Free text (error messages, reasons) is cut at this many bytes.
const MAX_TEXT: usize = 1024;

fn cap(s: &str) -> &str {
    if s.len() <= MAX_TEXT {
        return s;
    }
    let mut end = MAX_TEXT;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
