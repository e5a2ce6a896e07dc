use super::rate::{Clock, caller};
use super::{Loud, ToolCall, decided};
use crate::error::Fail;
use crate::gateway::Gateway;
use crate::pipeline::RequestCtx;
use serde_json::Value;
use sluice_pipeline::{Flow, Refusal};
use sluice_policy::{LoopGuard as Guard, LoopRule, LoopVerdict};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Loop guard: the same caller calling the same tool with the same
/// arguments (or alternating between two such calls) `repeats` times within
/// `window`.
///
/// - Runs: after rate limits, on every routed `tools/call`, when enabled.
/// - May: at `repeats`, log and count (`noticed`) and serve the call; one
///   more, answer an `isError` result telling the agent it appears to be
///   looping (`loop_detected`) instead of calling; beyond that, refuse
///   (`loop_refused`) until the oldest repeat leaves the window.
/// - Default: off (`loop_guard.enabled = false`); `repeats = 5`, `window =
///   "60s"`; `exempt_tools` (exposed names) are never judged; `tool_repeats`
///   sets a tool's own threshold.
pub(crate) struct LoopGuard {
    config: Option<sluice_config::LoopGuard>,
    guard: Guard,
    clock: Clock,
}

impl LoopGuard {
    pub(crate) fn new(config: &sluice_config::LoopGuard) -> LoopGuard {
        let start = Instant::now();
        Self::with_clock(config, Arc::new(move || start.elapsed()))
    }

    pub(crate) fn with_clock(config: &sluice_config::LoopGuard, clock: Clock) -> LoopGuard {
        LoopGuard {
            guard: Guard::new(config.window),
            config: config.enabled.then(|| config.clone()),
            clock,
        }
    }

    pub(crate) fn run(&self, gw: &Gateway, ctx: &RequestCtx, call: &ToolCall) -> Flow<Fail> {
        let Some(config) = &self.config else {
            return Flow::Next;
        };
        let tool = call.exposed();
        if config.exempt_tools.iter().any(|t| t == tool) {
            return Flow::Next;
        }
        let rule = LoopRule {
            repeats: config
                .tool_repeats
                .get(tool)
                .copied()
                .unwrap_or(config.repeats),
        };
        let signature = signature(tool, call.arguments());
        let window = humantime::format_duration(config.window);
        match self
            .guard
            .observe(&caller(ctx), signature, rule, (self.clock)())
        {
            LoopVerdict::Fine => Flow::Next,
            LoopVerdict::Noticed { repeats } => {
                decided(
                    gw,
                    ctx,
                    "loop_guard",
                    "noticed",
                    Loud::Warn,
                    &format_args!("{repeats} identical calls within {window}"),
                );
                Flow::Next
            }
            LoopVerdict::Warned { repeats } => {
                decided(
                    gw,
                    ctx,
                    "loop_guard",
                    "loop_detected",
                    Loud::Warn,
                    &format_args!("{repeats} identical calls within {window}"),
                );
                Flow::Answer(
                    Refusal::limited(
                        "loop_detected",
                        format!(
                            "Tool `{tool}` was not called: this is call {repeats} of it with the same arguments within {window}, so the agent appears to be looping. Use the result you already have, change the arguments, or ask the user how to proceed."
                        ),
                        Duration::ZERO,
                    )
                    .into(),
                )
            }
            LoopVerdict::Refused {
                repeats,
                retry_after,
            } => {
                let secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
                decided(
                    gw,
                    ctx,
                    "loop_guard",
                    "loop_refused",
                    Loud::Warn,
                    &format_args!(
                        "{repeats} identical calls within {window}; retry after {secs} s"
                    ),
                );
                Flow::Answer(
                    Refusal::limited(
                        "loop_refused",
                        format!(
                            "Tool `{tool}` was not called: it was called {repeats} times with the same arguments within {window}, and the gateway refuses more of the same until the loop stops (retry after {secs} s). Do not repeat this call; ask the user how to proceed."
                        ),
                        Duration::from_secs(secs),
                    )
                    .into(),
                )
            }
        }
    }
}

/// A call's identity: the tool and its arguments in canonical form (object
/// keys sorted), hashed.
fn signature(tool: &str, arguments: Option<&Value>) -> u64 {
    fn feed(v: &Value, h: &mut impl Hasher) {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                h.write_u8(b'{');
                for k in keys {
                    k.hash(h);
                    feed(&m[k], h);
                }
                h.write_u8(b'}');
            }
            Value::Array(a) => {
                h.write_u8(b'[');
                for x in a {
                    feed(x, h);
                }
                h.write_u8(b']');
            }
            other => other.to_string().hash(h),
        }
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    tool.hash(&mut h);
    if let Some(a) = arguments {
        feed(a, &mut h);
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::signature;
    use serde_json::json;

    #[test]
    fn signatures_ignore_key_order_but_not_values() {
        let a = signature("t", Some(&json!({"a": 1, "b": {"x": [1, 2], "y": "z"}})));
        let b = signature("t", Some(&json!({"b": {"y": "z", "x": [1, 2]}, "a": 1})));
        assert_eq!(a, b);
        assert_ne!(
            a,
            signature("t", Some(&json!({"a": 2, "b": {"x": [1, 2], "y": "z"}})))
        );
        assert_ne!(
            a,
            signature("u", Some(&json!({"a": 1, "b": {"x": [1, 2], "y": "z"}})))
        );
        assert_ne!(
            signature("t", Some(&json!([1, 2]))),
            signature("t", Some(&json!([2, 1])))
        );
    }
}
