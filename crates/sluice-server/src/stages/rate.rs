use super::{Loud, decided};
use crate::error::Fail;
use crate::gateway::Gateway;
use crate::pipeline::RequestCtx;
use sluice_config::{Limit, LimitAnswer, LimitKey, LimitStore, OnStoreError};
use sluice_pipeline::{Flow, LimitHit, Refusal};
use sluice_policy::{Gcra, Limits};
use sluice_store::{Budget, RedisLimits};
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Where shared budgets live in Redis.
const REDIS_PREFIX: &str = "sluice:limits:";

/// One Redis holding shared budgets, and whether it is down now.
struct Shared {
    store: RedisLimits,
    down: AtomicBool,
}

/// The clock limits read: time since a fixed start.
pub(crate) type Clock = Arc<dyn Fn() -> Duration + Send + Sync>;

/// Rate limit: every `[[limits]]` rule that counts the request's method is
/// checked against the caller's budget; all are consumed, or none.
///
/// - Runs: after hold, on `tools/call`; before dispatch on other methods a
///   rule names in `methods`. Never on `initialize`, the SSE GET or
///   notifications.
/// - May: refuse with `rate_limited`, naming the limit, whose budget it is
///   and when to come back (`retryAfterSeconds`); a JSON-RPC error (HTTP 429
///   with `Retry-After` for 2026-07-28 requests), or an `isError` tool result
///   where the rule says `answer = "tool_result"`.
/// - Default: no limits. Budgets are kept per the rule's `per` keys; the
///   principal is, until identity is configured, the client's IP address, so
///   a new session does not get a new budget.
pub(crate) struct RateLimit {
    rules: Vec<Limit>,
    /// Budgets of the local rules (indexed like `rules`).
    limits: Limits,
    /// Per rule: the Redis its budgets live in, for `store = "redis"`.
    shared: Vec<Option<Arc<Shared>>>,
    clock: Clock,
}

impl RateLimit {
    pub(crate) fn new(rules: &[Limit]) -> RateLimit {
        let start = Instant::now();
        Self::with_clock(rules, Arc::new(move || start.elapsed()))
    }

    /// Limits on `clock` (tests pass one they move by hand).
    pub(crate) fn with_clock(rules: &[Limit], clock: Clock) -> RateLimit {
        // One connection per Redis URL, shared by the rules that name it.
        let mut stores: Vec<(String, Arc<Shared>)> = Vec::new();
        let shared = rules
            .iter()
            .map(|r| {
                let LimitStore::Redis { url } = &r.store else {
                    return None;
                };
                if let Some((_, s)) = stores.iter().find(|(u, _)| *u == url.0) {
                    return Some(s.clone());
                }
                match RedisLimits::open(&url.0, REDIS_PREFIX) {
                    Ok(store) => {
                        let s = Arc::new(Shared {
                            store,
                            down: AtomicBool::new(false),
                        });
                        stores.push((url.0.clone(), s.clone()));
                        Some(s)
                    }
                    Err(e) => {
                        // Validated as a redis URL; a client that cannot be
                        // made counts as a store that is down.
                        tracing::error!(limit = %r.name, error = %e, "limit store cannot be opened");
                        None
                    }
                }
            })
            .collect();
        RateLimit {
            shared,
            limits: Limits::new(
                rules
                    .iter()
                    .map(|r| Gcra::new(r.rate.interval(), r.burst))
                    .collect(),
            ),
            rules: rules.to_vec(),
            clock,
        }
    }

    /// Whether any rule counts `method`.
    pub(crate) fn counts(&self, method: &str) -> bool {
        self.rules.iter().any(|r| r.methods.contains(&method))
    }

    pub(crate) async fn run(&self, gw: &Gateway, ctx: &RequestCtx) -> Flow<Fail> {
        if self.rules.is_empty() {
            return Flow::Next;
        }
        let applicable: Vec<(usize, String)> = self
            .rules
            .iter()
            .enumerate()
            .filter(|(_, r)| r.methods.contains(&ctx.method.as_str()))
            .map(|(i, r)| (i, scope(r, ctx)))
            .collect();
        if applicable.is_empty() {
            return Flow::Next;
        }
        let local: Vec<(usize, &str)> = applicable
            .iter()
            .filter(|(i, _)| matches!(self.rules[*i].store, LimitStore::Local))
            .map(|(i, k)| (*i, k.as_str()))
            .collect();
        let now = (self.clock)();
        // Every budget is checked before any is consumed: local ones first
        // without consuming, then the shared ones (one atomic script per
        // store), then the local ones for real.
        if let Err(hit) = self.limits.peek(&local, now) {
            return self.refuse(gw, ctx, hit.limit, &applicable, hit.retry_after);
        }
        if let Some(answer) = self.check_shared(gw, ctx, &applicable).await {
            return answer;
        }
        match self.limits.check(&local, now) {
            Ok(()) => Flow::Next,
            Err(hit) => self.refuse(gw, ctx, hit.limit, &applicable, hit.retry_after),
        }
    }

    /// The shared budgets, store by store; an answer if one refuses, or if
    /// its store is down and a rule there says `on_store_error = "deny"`.
    async fn check_shared(
        &self,
        gw: &Gateway,
        ctx: &RequestCtx,
        applicable: &[(usize, String)],
    ) -> Option<Flow<Fail>> {
        // Stores already asked, by address (each is asked once per request).
        let mut done: Vec<usize> = Vec::new();
        for (i, _) in applicable {
            let Some(shared) = &self.shared[*i] else {
                if matches!(self.rules[*i].store, LimitStore::Redis { .. }) {
                    return self.store_down(gw, ctx, &[*i], &"the limit store could not be opened");
                }
                continue;
            };
            if done.contains(&(Arc::as_ptr(shared) as usize)) {
                continue;
            }
            done.push(Arc::as_ptr(shared) as usize);
            let group: Vec<usize> = applicable
                .iter()
                .map(|(j, _)| *j)
                .filter(|j| {
                    self.shared[*j]
                        .as_ref()
                        .is_some_and(|s| Arc::ptr_eq(s, shared))
                })
                .collect();
            let budgets: Vec<Budget> = group
                .iter()
                .map(|j| {
                    let rule = &self.rules[*j];
                    let scope = &applicable
                        .iter()
                        .find(|(k, _)| k == j)
                        .expect("applicable")
                        .1;
                    Budget {
                        key: format!("{}|{scope}", rule.name),
                        interval: rule.rate.interval(),
                        burst: rule.burst,
                    }
                })
                .collect();
            match shared.store.check(&budgets).await {
                Ok(Ok(())) => {
                    if shared.down.swap(false, Ordering::Relaxed) {
                        tracing::info!(limits = %names(&self.rules, &group), "limit store answers again; shared limits apply again");
                    }
                }
                Ok(Err((k, wait))) => {
                    return Some(self.refuse(gw, ctx, group[k], applicable, wait));
                }
                Err(e) => {
                    if !shared.down.swap(true, Ordering::Relaxed) {
                        tracing::error!(limits = %names(&self.rules, &group), error = %e, "limit store unavailable; each limit follows its on_store_error until it answers");
                    }
                    if let Some(answer) = self.store_down(gw, ctx, &group, &e) {
                        return Some(answer);
                    }
                }
            }
        }
        None
    }

    /// A shared store is down: counted per rule; refused if any rule denies.
    fn store_down(
        &self,
        gw: &Gateway,
        ctx: &RequestCtx,
        group: &[usize],
        why: &dyn std::fmt::Display,
    ) -> Option<Flow<Fail>> {
        for j in group {
            gw.metrics.limit_store_error(&self.rules[*j].name);
        }
        let deny = group
            .iter()
            .find(|j| self.rules[**j].on_store_error == OnStoreError::Deny)?;
        let rule = &self.rules[*deny];
        decided(gw, ctx, "rate_limit", "store_unavailable", Loud::Warn, why);
        let mut refusal = Refusal::unavailable(
            "limit_store_unavailable",
            format!(
                "{}: the store of rate limit `{}` is unavailable, and that limit refuses requests while it is (on_store_error = \"deny\"). Retry later.",
                what(ctx),
                rule.name
            ),
        );
        refusal.as_tool_result = rule.answer == LimitAnswer::ToolResult;
        Some(Flow::Answer(refusal.into()))
    }

    fn refuse(
        &self,
        gw: &Gateway,
        ctx: &RequestCtx,
        limit: usize,
        applicable: &[(usize, String)],
        retry_after: Duration,
    ) -> Flow<Fail> {
        let rule = &self.rules[limit];
        let scope = &applicable
            .iter()
            .find(|(i, _)| *i == limit)
            .expect("applicable")
            .1;
        let secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
        gw.metrics.limit_refused(&rule.name);
        decided(
            gw,
            ctx,
            "rate_limit",
            "limited",
            Loud::Warn,
            &format_args!("limit `{}` for {scope}; retry after {secs} s", rule.name),
        );
        let mut refusal = Refusal::limited(
            "rate_limited",
            format!(
                "{}: rate limit `{}` ({} per {}, burst {}) for {scope} is used up. Retry after {secs} s.",
                what(ctx),
                rule.name,
                rule.rate.count,
                humantime::format_duration(rule.rate.per),
                rule.burst
            ),
            Duration::from_secs(secs),
        );
        refusal.limit = Some(LimitHit {
            name: rule.name.clone(),
            scope: scope.clone(),
        });
        refusal.as_tool_result = rule.answer == LimitAnswer::ToolResult;
        Flow::Answer(refusal.into())
    }
}

/// What was not done, for a refusal's first words.
fn what(ctx: &RequestCtx) -> String {
    match ctx.tool.as_deref() {
        Some(tool) if ctx.method == "tools/call" => format!("Tool `{tool}` was not called"),
        _ => format!("`{}` was not served", ctx.method),
    }
}

fn names(rules: &[Limit], group: &[usize]) -> String {
    group
        .iter()
        .map(|j| rules[*j].name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The budget a request counts against under `rule`: `key=value` per
/// dimension the rule names (empty: one budget for everyone).
fn scope(rule: &Limit, ctx: &RequestCtx) -> String {
    let mut s = String::new();
    for k in &rule.per {
        if !s.is_empty() {
            s.push_str(", ");
        }
        let _ = match k {
            LimitKey::Principal => write!(s, "principal={}", caller(ctx)),
            LimitKey::Tenant => write!(s, "tenant={}", ctx.tenant.as_ref().map_or("-", |t| &*t.0)),
            LimitKey::Profile => write!(s, "profile=-"),
            LimitKey::Server => write!(
                s,
                "server={}",
                ctx.route.as_ref().map_or("-", |r| &*r.server_name)
            ),
            LimitKey::Tool => write!(s, "tool={}", ctx.tool.as_deref().unwrap_or("-")),
        };
    }
    if s.is_empty() {
        s.push_str("everyone");
    }
    s
}

/// Who is calling, for budgets and loop detection: the principal once
/// identity is configured; until then the client's IP address (so a new
/// session, or another replica, does not start a new budget), or `local`
/// for stdio.
pub(crate) fn caller(ctx: &RequestCtx) -> String {
    match (&ctx.principal, ctx.remote) {
        (Some(p), _) => p.id.to_string(),
        (None, Some(addr)) => addr.ip().to_string(),
        (None, None) => "local".into(),
    }
}
