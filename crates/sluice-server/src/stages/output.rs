use super::{Loud, decided};
use crate::gateway::Gateway;
use crate::limits::{self, Limits};
use crate::pipeline::RequestCtx;
use serde_json::value::RawValue;
use sluice_upstream::Upstream;

/// Output limits: a result too large for a model's context is cut with an
/// explicit marker (never into invalid JSON).
///
/// - Runs: on every successful `tools/call` result.
/// - May: cut text, replace oversized binary items, drop oversized
///   `structuredContent`; notes what it did under `_meta["sluice/truncated"]`.
/// - Default: `output.max_tokens` (per tool: `output.tool_max_tokens`) and
///   `output.max_binary_bytes` of the server; results under both by raw
///   size are not parsed.
pub(crate) struct OutputLimits;

impl OutputLimits {
    pub(crate) fn run(
        &self,
        gw: &Gateway,
        ctx: &RequestCtx,
        up: &Upstream,
        result: Box<RawValue>,
    ) -> Box<RawValue> {
        let limits = Limits {
            max_tokens: up.config.max_output_tokens(&ctx.routed().name),
            max_binary: up.config.output.max_binary_bytes,
        };
        let (result, cut) = limits::cut(result, &limits);
        if cut {
            decided(
                gw,
                ctx,
                "output_limits",
                "cut",
                Loud::Warn,
                &format_args!(
                    "over {} tokens or {} binary bytes",
                    limits.max_tokens, limits.max_binary
                ),
            );
        }
        result
    }
}

/// Output scan: the poisoning detector reads the result; a malicious one is
/// withheld (an `isError` result saying so) where the server's `scan =
/// "block"`, and flagged ones are logged, counted and audited.
///
/// - Runs: after output limits, on every successful `tools/call` result.
/// - May: replace the result with `output_withheld`.
/// - Default: on (`defence.scan_outputs = true`, server `scan = "block"`).
pub(crate) struct OutputScan {
    enabled: bool,
}

impl OutputScan {
    pub(crate) fn new(config: &sluice_config::Defence) -> OutputScan {
        OutputScan {
            enabled: config.scan_outputs,
        }
    }

    pub(crate) fn run(
        &self,
        gw: &Gateway,
        ctx: &RequestCtx,
        up: &Upstream,
        result: Box<RawValue>,
    ) -> Box<RawValue> {
        if !self.enabled {
            return result;
        }
        let (result, action) = gw.scan_output(up, &ctx.routed().exposed, result);
        if let Some(action) = action {
            decided(
                gw,
                ctx,
                "output_scan",
                action,
                Loud::Warn,
                &"flagged by the poisoning detector",
            );
        }
        result
    }
}
