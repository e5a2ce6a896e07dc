use super::{Loud, ToolCall, decided};
use crate::catalog::Catalog;
use crate::error::Fail;
use crate::gateway::{Gateway, Policy};
use crate::pipeline::RequestCtx;
use serde_json::value::RawValue;
use sluice_pipeline::{Era, Refusal, ServerId};
use sluice_upstream::Upstream;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// Dispatch: forwards the call to its server and relays what the server
/// sends while working (progress, logs, questions for the client).
///
/// - Runs: after every stage that may refuse.
/// - May: rewrite the name (to the server's own) and the progress token;
///   give a created task the gateway's id (2026) or remember its owner (2025).
///   An upstream failure is `Fail::Upstream`, logged once by `Pipeline::call`
///   and counted in `sluice_requests_total{outcome="upstream"}`.
/// - Bulkhead: a server with `max_concurrent` takes that many calls at once;
///   more wait (at most `max_queue` of them, each at most `queue_timeout`)
///   and are then refused with `upstream_busy`, never left hanging.
/// - Default: the server's `timeout` (or the tool's in `tool_timeouts`),
///   capped by `ctx.deadline` when a stage set one;
///   a call that may have reached the server is retried only for tools in
///   `idempotent_tools`.
pub(crate) struct Dispatch {
    bulkheads: HashMap<ServerId, Bulkhead>,
}

/// One server's concurrency cap and its waiting room.
struct Bulkhead {
    config: sluice_config::Bulkhead,
    slots: Semaphore,
    waiting: AtomicUsize,
}

impl Dispatch {
    pub(crate) fn new(servers: &[sluice_config::Server]) -> Dispatch {
        Dispatch {
            bulkheads: servers
                .iter()
                .enumerate()
                .filter_map(|(i, s)| {
                    let config = s.bulkhead?;
                    Some((
                        Catalog::id_at(i),
                        Bulkhead {
                            slots: Semaphore::new(config.max_concurrent),
                            waiting: AtomicUsize::new(0),
                            config,
                        },
                    ))
                })
                .collect(),
        }
    }

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
        let _slot = match self.bulkheads.get(&route.server) {
            None => None,
            Some(b) => match b.slots.try_acquire() {
                Ok(permit) => Some(permit),
                Err(_) => Some(self.wait(gw, ctx, b).await?),
            },
        };
        let params = call.into_upstream(route);
        let result = gw
            .forward(&ctx.session, up, "tools/call", params, &ctx.out, policy)
            .await
            .map_err(|error| Fail::Upstream {
                server: up.name().into(),
                error,
            })?;
        drop(_slot);
        Ok(match ctx.era {
            Era::Stateless => gw.wrap_created_task(up.name(), &route.exposed, result),
            Era::Session => {
                gw.note_task(route.server, &ctx.session, &result);
                result
            }
        })
    }
}

impl Dispatch {
    /// Waits for a free slot of a full bulkhead, or refuses: the queue is
    /// full, or the wait took `queue_timeout`.
    async fn wait<'a>(
        &self,
        gw: &Gateway,
        ctx: &RequestCtx,
        b: &'a Bulkhead,
    ) -> Result<tokio::sync::SemaphorePermit<'a>, Fail> {
        let route = ctx.routed();
        let busy = |why: String| {
            decided(gw, ctx, "dispatch", "upstream_busy", Loud::Warn, &why);
            Fail::Policy(Refusal::limited(
                "upstream_busy",
                format!(
                    "Tool `{}` was not called: server `{}` is busy ({why}). Retry in a few seconds.",
                    route.exposed, route.server_name
                ),
                Duration::from_secs(1),
            ))
        };
        let c = b.config;
        if b.waiting.fetch_add(1, Ordering::SeqCst) >= c.max_queue {
            b.waiting.fetch_sub(1, Ordering::SeqCst);
            return Err(busy(format!(
                "all {} of its call slots are taken and {} calls are already waiting",
                c.max_concurrent, c.max_queue
            )));
        }
        let got = tokio::time::timeout(c.queue_timeout, b.slots.acquire()).await;
        b.waiting.fetch_sub(1, Ordering::SeqCst);
        match got {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(busy(format!(
                "no call slot of its {} came free within {}",
                c.max_concurrent,
                humantime::format_duration(c.queue_timeout)
            ))),
        }
    }
}
