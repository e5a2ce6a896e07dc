use super::ToolCall;
use crate::error::Fail;
use crate::gateway::{Gateway, Policy};
use crate::pipeline::RequestCtx;
use serde_json::value::RawValue;
use sluice_pipeline::Era;
use sluice_upstream::Upstream;
use std::time::Instant;

/// Dispatch: forwards the call to its server and relays what the server
/// sends while working (progress, logs, questions for the client).
///
/// - Runs: after every stage that may refuse.
/// - May: rewrite the name (to the server's own) and the progress token;
///   give a created task the gateway's id (2026) or remember its owner (2025).
///   An upstream failure is `Fail::Upstream`, logged once by `Pipeline::call`
///   and counted in `sluice_requests_total{outcome="upstream"}`.
/// - Default: the server's `timeout` (or the tool's in `tool_timeouts`),
///   capped by `ctx.deadline` when a stage set one;
///   a call that may have reached the server is retried only for tools in
///   `idempotent_tools`.
pub(crate) struct Dispatch;

impl Dispatch {
    pub(crate) async fn run(
        &self,
        gw: &Gateway,
        ctx: &RequestCtx,
        up: &Upstream,
        call: ToolCall,
    ) -> Result<Box<RawValue>, Fail> {
        let route = ctx.routed();
        let mut timeout = up
            .config
            .tool_timeouts
            .get(&route.name)
            .copied()
            .unwrap_or(up.config.timeout);
        // A deadline set by an earlier stage caps the server's timeout.
        if let Some(deadline) = ctx.deadline {
            timeout = timeout.min(deadline.saturating_duration_since(Instant::now()));
        }
        let policy = Policy {
            timeout,
            may_retry_sent: up.config.is_idempotent(&route.name),
        };
        let params = call.into_upstream(route);
        let result = gw
            .forward(&ctx.session, up, "tools/call", params, &ctx.out, policy)
            .await
            .map_err(|error| Fail::Upstream {
                server: up.name().into(),
                error,
            })?;
        Ok(match ctx.era {
            Era::Stateless => gw.wrap_created_task(up.name(), &route.exposed, result),
            Era::Session => {
                gw.note_task(route.server, &ctx.session, &result);
                result
            }
        })
    }
}
