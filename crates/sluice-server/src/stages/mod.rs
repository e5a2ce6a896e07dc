//! The stages of a `tools/call`, in the order [`crate::pipeline::Pipeline`]
//! runs them. Each is a small struct built from its config section; its doc
//! comment says when it runs, what it may change, and its default.
//!
//! A stage that decides anything other than "go on" (refuses, answers,
//! cuts or withholds) reports it through [`decided`]: one log line with the
//! stage, the decision and the reason, and one count in
//! `sluice_stage_decisions_total{stage,decision}`.

mod approval;
mod builtin;
mod dispatch;
mod hold;
mod loop_guard;
mod output;
mod rate;
mod resolve;

pub(crate) use approval::Approval;
pub(crate) use builtin::Builtin;
pub(crate) use dispatch::Dispatch;
pub(crate) use hold::Hold;
pub(crate) use loop_guard::LoopGuard;
pub(crate) use output::{OutputLimits, OutputScan};
pub(crate) use rate::RateLimit;
pub(crate) use resolve::Resolve;

use crate::error::Fail;
use crate::gateway::{Gateway, params_map, required_str};
use crate::metrics::StageLabels;
use crate::pipeline::RequestCtx;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use sluice_pipeline::Route;
use std::fmt::Display;

/// The audit stage: it records every `tools/call` however it ends (see `crate::audit`).
pub(crate) use crate::audit::AuditStage;

/// How loudly a decision is logged.
#[derive(Clone, Copy)]
pub(crate) enum Loud {
    /// Routine (the gateway answered a built-in tool).
    Info,
    /// Worth an operator's look (a refusal, a cut or withheld output).
    Warn,
}

/// Reports a stage's decision: a log line and a count.
pub(crate) fn decided(
    gw: &Gateway,
    ctx: &RequestCtx,
    stage: &'static str,
    decision: &'static str,
    loud: Loud,
    reason: &dyn Display,
) {
    gw.metrics
        .stage_decisions
        .get_or_create(&StageLabels { stage, decision })
        .inc();
    let server = ctx.route.as_ref().map(|r| &*r.server_name);
    let tool = ctx.tool.as_deref();
    let session = &*ctx.session.id;
    let principal = ctx.principal.as_ref().map(|p| &*p.id);
    let tenant = ctx.tenant.as_ref().map(|t| &*t.0);
    match loud {
        Loud::Info => {
            tracing::info!(stage, decision, method = %ctx.method, server, tool, session, principal, tenant, %reason, "stage decision")
        }
        Loud::Warn => {
            tracing::warn!(stage, decision, method = %ctx.method, server, tool, session, principal, tenant, %reason, "stage decision")
        }
    }
}

/// A `tools/call`'s params: parsed once, forwarded with only the name rewritten.
pub(crate) struct ToolCall {
    params: Map<String, Value>,
}

impl ToolCall {
    /// The params of a `tools/call`: an object with a string `name` (-32602 otherwise).
    pub(crate) fn parse(params: Option<&RawValue>) -> Result<ToolCall, Fail> {
        let params = params_map(params)?;
        required_str(&params, "tools/call", "name")?;
        Ok(ToolCall { params })
    }

    /// The tool name the client used.
    pub(crate) fn exposed(&self) -> &str {
        self.params
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    /// The call's arguments, if any.
    pub(crate) fn arguments(&self) -> Option<&Value> {
        self.params.get("arguments")
    }

    /// All params, for the gateway's own tools.
    pub(crate) fn params(&self) -> &Map<String, Value> {
        &self.params
    }

    /// The params to forward: the name becomes the server's own.
    pub(crate) fn into_upstream(mut self, route: &Route) -> Map<String, Value> {
        self.params
            .insert("name".into(), Value::String(route.name.clone()));
        self.params
    }
}

impl RequestCtx {
    /// The route the resolve stage found. Stages after resolve run only on
    /// resolved requests (`Pipeline::call` is the one place that orders them).
    pub(crate) fn routed(&self) -> &Route {
        self.route
            .as_ref()
            .expect("a stage after resolve runs only on a resolved request")
    }
}

#[cfg(test)]
mod tests;
