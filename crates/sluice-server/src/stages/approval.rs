use super::{Loud, decided};
use crate::error::Fail;
use crate::gateway::Gateway;
use crate::pipeline::RequestCtx;
use serde_json::Value;
use sluice_pipeline::{Flow, Refusal};
use sluice_upstream::Upstream;

/// Approval: asks the user (elicitation, or `input_required` for a 2026
/// client) before a call that needs it, and refuses when not approved.
///
/// - Runs: after hold (and, later, authorization and limits), before dispatch.
/// - May: ask the client a question; refuse with `approval_refused` naming why.
/// - Default: `approval = "destructive"` per server: trusted servers' tools
///   annotated `destructiveHint: true`; `tool_approval` overrides per tool.
pub(crate) struct Approval;

impl Approval {
    pub(crate) async fn run(
        &self,
        gw: &Gateway,
        ctx: &RequestCtx,
        up: &Upstream,
        arguments: Option<&Value>,
    ) -> Flow<Fail> {
        let route = ctx.routed();
        if !gw.needs_approval(up, &route.name) {
            return Flow::Next;
        }
        let Err(why) = gw
            .ask_approval(&ctx.session, up, &route.exposed, arguments, &ctx.out)
            .await
        else {
            return Flow::Next;
        };
        decided(gw, ctx, "approval", "refused", Loud::Warn, &why);
        Flow::Answer(
            Refusal::denied(
                "approval_refused",
                format!(
                    "Tool `{}` was not called: it needs the user's approval, and {why}.",
                    route.exposed
                ),
            )
            .into(),
        )
    }
}
