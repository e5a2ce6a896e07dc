//! The request pipeline: every front end's requests pass [`Pipeline::call`].
//!
//! The 2025-11-25 session front end (`http.rs`), the 2026-07-28 stateless
//! front end (`modern.rs`) and stdio (`stdio.rs`) each build a
//! [`RequestCtx`] and call `Pipeline::call`; what comes back is mapped to the
//! wire by [`crate::rescue`]. A `tools/call` runs the stages below in this
//! order, each a small struct in [`crate::stages`] with its contract in its
//! doc comment:
//!
//! ```text
//! builtin → resolve → hold → [authenticate → authorize] → rate limit → loop guard
//!         → approval → dispatch → output limits → output scan → audit
//! ```
//!
//! The bracketed stages are the places identity and access will stand. Other methods are routed by [`Gateway::dispatch`].

use crate::error::Fail;
use crate::gateway::Gateway;
use crate::metrics::RequestLabels;
use crate::session::{Outbound, Session};
use crate::stages::{
    Approval, AuditStage, Builtin, Dispatch, Hold, LoopGuard, OutputLimits, OutputScan, RateLimit,
    Resolve, ToolCall,
};
use serde_json::value::RawValue;
use sluice_config::Config;
use sluice_mcp::version;
use sluice_pipeline::{Era, Flow, Principal, Route, TenantId};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tracing::Instrument;

/// What the pipeline knows of one request as it passes the stages.
pub(crate) struct RequestCtx {
    /// The revision family the client speaks.
    pub era: Era,
    /// The JSON-RPC method.
    pub method: String,
    /// The client's session: its capabilities, streams and in-flight calls.
    /// A 2026 request has one made for it alone.
    pub session: Arc<Session>,
    /// The client's side of the request: notifications and questions
    /// (elicitation, sampling) for the client go here.
    pub out: Arc<dyn Outbound>,
    /// The client's address, when it came over the network.
    pub remote: Option<SocketAddr>,
    /// Who is calling: the principal the HTTP front end verified (`[auth]`).
    pub principal: Option<Principal>,
    /// The principal's tenant, if its credential names one.
    pub tenant: Option<TenantId>,
    /// The tool or prompt name the client used, once read.
    pub tool: Option<String>,
    /// Where the call goes: filled by the resolve stage.
    pub route: Option<Route>,
    /// When the request must be answered by, if a stage set one.
    pub deadline: Option<Instant>,
    /// The request's tracing span.
    pub span: tracing::Span,
}

impl RequestCtx {
    /// The context of a request `method` on `session`, answered through `out`.
    pub(crate) fn new(session: &Arc<Session>, method: &str, out: Arc<dyn Outbound>) -> RequestCtx {
        let era = if session.protocol_version == version::MODERN {
            Era::Stateless
        } else {
            Era::Session
        };
        let principal = session.authenticated();
        let who = principal.as_ref().map(|p| &*p.id);
        let span = tracing::debug_span!("request", method, era = era.as_str(), session = %session.id, principal = who);
        RequestCtx {
            tenant: principal.as_ref().and_then(|p| p.tenant.clone()),
            principal,
            era,
            span,
            method: method.to_string(),
            remote: session.remote(),
            session: session.clone(),
            out,
            tool: None,
            route: None,
            deadline: None,
        }
    }
}

/// A request's result, or why it failed (mapped to the wire by `rescue`).
pub(crate) type Outcome = Result<Box<RawValue>, Fail>;

/// The ordered stages a request passes, each built from its config section.
pub(crate) struct Pipeline {
    builtin: Builtin,
    resolve: Resolve,
    hold: Hold,
    rate_limit: RateLimit,
    loop_guard: LoopGuard,
    approval: Approval,
    dispatch: Dispatch,
    output_limits: OutputLimits,
    output_scan: OutputScan,
    audit: AuditStage,
}

/// Returns the failure a stage answered with; goes on otherwise.
macro_rules! stage {
    ($flow:expr) => {
        if let Flow::Answer(fail) = $flow {
            return Err(fail);
        }
    };
}

impl Pipeline {
    /// The stages, built from the configuration.
    pub(crate) fn build(config: &Config) -> Pipeline {
        Pipeline {
            builtin: Builtin::new(&config.gateway),
            resolve: Resolve,
            hold: Hold,
            rate_limit: RateLimit::new(&config.limits),
            loop_guard: LoopGuard::new(&config.loop_guard),
            approval: Approval,
            dispatch: Dispatch::new(&config.servers),
            output_limits: OutputLimits,
            output_scan: OutputScan::new(&config.defence),
            audit: AuditStage,
        }
    }

    /// Serves one request of any front end: the one function to read to
    /// follow a call. Counts it (`sluice_requests_total{method,era,outcome}`)
    /// and logs an upstream failure, whichever era it came in.
    pub(crate) async fn call(
        &self,
        gw: &Gateway,
        ctx: &mut RequestCtx,
        params: Option<&RawValue>,
    ) -> Outcome {
        let span = ctx.span.clone();
        let outcome = match ctx.method.as_str() {
            "tools/call" => self.call_tool(gw, ctx, params).instrument(span).await,
            method => {
                if self.rate_limit.counts(method)
                    && let Flow::Answer(fail) = self.rate_limit.run(gw, ctx).await
                {
                    Err(fail)
                } else {
                    let (sess, out) = (ctx.session.clone(), ctx.out.clone());
                    gw.dispatch(&sess, method, params, &out)
                        .instrument(span)
                        .await
                }
            }
        };
        let outcome_label = match &outcome {
            Ok(_) => "ok",
            Err(fail) => fail.fault(),
        };
        gw.metrics
            .requests
            .get_or_create(&RequestLabels {
                method: crate::gateway::metric_method(&ctx.method),
                era: ctx.era.as_str(),
                outcome: outcome_label,
            })
            .inc();
        if let Err(Fail::Upstream { server, error }) = &outcome {
            tracing::warn!(method = %ctx.method, era = ctx.era.as_str(), tool = ctx.tool.as_deref(), %server, code = error.code(), error = %error, "upstream failure");
        }
        outcome
    }

    /// `tools/call`, stage by stage; the audit stage records it however it
    /// ends (a request aborted mid-way is recorded as cancelled).
    async fn call_tool(
        &self,
        gw: &Gateway,
        ctx: &mut RequestCtx,
        params: Option<&RawValue>,
    ) -> Outcome {
        let mut record = self.audit.begin(gw, ctx);
        let outcome = self.tool_stages(gw, ctx, params, &mut record).await;
        self.audit.finish(record, ctx, &outcome).await;
        outcome
    }

    async fn tool_stages(
        &self,
        gw: &Gateway,
        ctx: &mut RequestCtx,
        params: Option<&RawValue>,
        record: &mut crate::audit::CallNote,
    ) -> Outcome {
        let call = ToolCall::parse(params)?;
        ctx.tool = Some(call.exposed().to_string());
        if let Flow::Answer(result) = self.builtin.run(gw, ctx, &call) {
            return Ok(result);
        }
        stage!(self.resolve.run(gw, ctx).await);
        record.routed(ctx, call.arguments());
        stage!(self.hold.run(gw, ctx).await);
        // Identity and access go here.
        stage!(self.rate_limit.run(gw, ctx).await);
        stage!(self.loop_guard.run(gw, ctx, &call));
        let up = gw.upstream_for(&ctx.session, ctx.routed().server).await?;
        stage!(self.approval.run(gw, ctx, &up, call.arguments()).await);
        let result = self.dispatch.run(gw, ctx, &up, call).await?;
        let result = self.output_limits.run(gw, ctx, &up, result);
        Ok(self.output_scan.run(gw, ctx, &up, result))
    }
}
