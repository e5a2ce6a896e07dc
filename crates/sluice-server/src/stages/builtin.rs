use super::{Loud, ToolCall, decided};
use crate::gateway::{Gateway, HEALTH_TOOL};
use crate::pipeline::RequestCtx;
use serde_json::value::RawValue;
use sluice_pipeline::Flow;

/// The gateway's own tools (`sluice__health`).
///
/// - Runs: first, on every `tools/call`.
/// - May: answer the call itself, before any routing.
/// - Default: on (`gateway.health_tool = true`).
pub(crate) struct Builtin {
    health: bool,
}

impl Builtin {
    pub(crate) fn new(config: &sluice_config::Gateway) -> Builtin {
        Builtin {
            health: config.health_tool,
        }
    }

    pub(crate) fn run(
        &self,
        gw: &Gateway,
        ctx: &RequestCtx,
        call: &ToolCall,
    ) -> Flow<Box<RawValue>> {
        if self.health && call.exposed() == HEALTH_TOOL {
            decided(gw, ctx, "builtin", "answered", Loud::Info, &HEALTH_TOOL);
            return Flow::Answer(gw.health_result(call.params()));
        }
        Flow::Next
    }
}
