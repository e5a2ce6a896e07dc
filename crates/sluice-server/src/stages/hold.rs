use super::{Loud, decided};
use crate::defence::PIN_STORE_UNAVAILABLE;
use crate::error::Fail;
use crate::gateway::Gateway;
use crate::pipeline::RequestCtx;
use sluice_pipeline::{Flow, Refusal};

/// Hold: refuses a tool the defence holds back (poisoned, changed since
/// approved, or not checkable while the pin store is down).
///
/// - Runs: after resolve, on every routed `tools/call`.
/// - May: refuse (`tool_blocked`, `tool_definition_changed`,
///   `pin_store_unavailable`, …); a held-back change is checked against the
///   pin again, so an approval takes effect at once.
/// - Default: on for every server; holds only what the defence found.
pub(crate) struct Hold;

impl Hold {
    pub(crate) async fn run(&self, gw: &Gateway, ctx: &RequestCtx) -> Flow<Fail> {
        let route = ctx.routed();
        let Some(hold) = gw.hold_of(route.server, &route.name).await else {
            return Flow::Next;
        };
        decided(gw, ctx, "hold", hold.code, Loud::Warn, &hold.reason);
        let exposed = &route.exposed;
        let refusal = if hold.code == PIN_STORE_UNAVAILABLE {
            Refusal::unavailable(
                hold.code,
                format!(
                    "Tool `{exposed}` is held back by the gateway: {}. Try again later.",
                    hold.reason
                ),
            )
        } else {
            Refusal::denied(
                hold.code,
                format!(
                    "Tool `{exposed}` is held back by the gateway: {}. Do not retry it.",
                    hold.reason
                ),
            )
        };
        Flow::Answer(refusal.into())
    }
}
