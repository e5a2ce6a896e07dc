use super::{Loud, decided};
use crate::catalog::Kind;
use crate::error::Fail;
use crate::gateway::Gateway;
use crate::pipeline::RequestCtx;
use sluice_pipeline::{Flow, Route};

/// Resolve: the exposed tool name → the server that owns it and its own name.
///
/// - Runs: on every `tools/call` the gateway does not answer itself.
/// - May: set `ctx.route`; answer -32602 naming the unknown tool (and the
///   server its prefix names, if any).
/// - Default: always on. A tool not listed yet loads the lists first; a
///   per-session server, or one whose list cannot be fetched, gets the call
///   by its prefix and decides itself.
pub(crate) struct Resolve;

impl Resolve {
    pub(crate) async fn run(&self, gw: &Gateway, ctx: &mut RequestCtx) -> Flow<Fail> {
        let exposed = ctx.tool.as_deref().unwrap_or_default();
        match gw.route_name(Kind::Tools, exposed).await {
            Ok((u, name)) => {
                ctx.route = Some(Route {
                    server: u,
                    server_name: gw.catalog.server(u).name().into(),
                    exposed: exposed.to_string(),
                    name,
                });
                Flow::Next
            }
            Err(fail) => {
                if let Fail::Client(e) = &fail {
                    decided(gw, ctx, "resolve", "unknown_tool", Loud::Warn, &e.message);
                }
                Flow::Answer(fail)
            }
        }
    }
}
