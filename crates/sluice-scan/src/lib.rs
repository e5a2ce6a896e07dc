//! sluice-scan: an offline detector for poisoned MCP tool definitions, server
//! instructions and tool outputs, plus the pure functions behind definition pinning.
//!
//! * [`scan_definition`], [`scan_instructions`], [`scan_output`], [`scan_call_result`]
//!   return a [`Report`]: a [`Verdict`] (`clean`, `suspicious`, `malicious`), a score in
//!   0..1 and [`Reason`]s (rule id, location, matched text).
//! * Rules are data: `rules/rules.toml`, embedded at build time ([`BUILTIN_RULES_TOML`]);
//!   [`Scanner::from_toml`] loads another rule set.
//! * [`scan_definitions_jsonl`] / [`scan_outputs_jsonl`] implement the offline
//!   `sluice scan --definitions|--outputs FILE --format jsonl` modes line for line.
//! * [`definition_fingerprint`] / [`diff_definitions`] pin a definition (SHA-256 of its
//!   canonical JSON) and describe what changed (rug pulls).
//! * With the `eval` feature (for the `scan_eval` example and the dataset harness test,
//!   not part of the API), `evaluate_dataset` measures recall and false-positive rate
//!   on the development set.
//!
//! No network, no model: everything here is a pure function of its input.

#![warn(missing_docs)]

#[cfg(feature = "eval")]
mod eval;
mod jsonl;
mod normalize;
mod pin;
mod rules;
mod scan;

#[cfg(feature = "eval")]
pub use eval::{
    BENIGN_DESCRIPTIONS, Baseline, Counts, EvalError, EvalOptions, EvalReport, ItemResult,
    MALICIOUS_DESCRIPTIONS, MALICIOUS_OUTPUTS, RUG_PULLS, default_dataset_dir, evaluate_dataset,
};
pub use jsonl::{
    JsonlOptions, JsonlSummary, LineReason, ScanLine, scan_definition_record,
    scan_definitions_jsonl, scan_output_record, scan_outputs_jsonl,
};
pub use pin::{
    ChangeKind, DefinitionChange, DefinitionDiff, UNPINNED_TOOL_FIELDS, canonical_json,
    definition_fingerprint, diff_definitions, diff_instructions, instructions_fingerprint,
    pinned_view,
};
pub use rules::{
    BUILTIN_RULES_TOML, Examples, RULES_FORMAT, Rule, RulesError, Ruleset, Scope, Severity, Target,
    Thresholds,
};
pub use scan::{
    Reason, Report, ScanContext, Scanner, Verdict, scan_call_result, scan_definition,
    scan_instructions, scan_output,
};

/// Version of the embedded rule set.
pub fn rules_version() -> &'static str {
    &Scanner::builtin().ruleset().version
}
