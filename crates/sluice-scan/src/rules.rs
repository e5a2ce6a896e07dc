//! The rules file: parsing and compilation.

use regex::{Regex, RegexBuilder};
use serde::{Deserialize, Serialize};

/// The rule set shipped with this crate (`rules/rules.toml`).
pub const BUILTIN_RULES_TOML: &str = include_str!("../rules/rules.toml");

/// Format of the rules file this crate understands.
pub const RULES_FORMAT: u32 = 1;

/// Errors found while loading a rules file.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    /// The file is not TOML, or does not have the rules file's shape.
    #[error("rules file is not valid TOML: {0}")]
    Toml(#[from] toml::de::Error),
    /// The file's `format` is not [`RULES_FORMAT`].
    #[error("rules file format {found} is not supported (expected {RULES_FORMAT})")]
    Format {
        /// The `format` the file declares.
        found: u32,
    },
    /// A regular expression does not compile (or is too large).
    #[error("rule {rule}: pattern {index} does not compile: {error}")]
    Pattern {
        /// The rule's id.
        rule: String,
        /// The pattern's 0-based position in the rule's `patterns`.
        index: usize,
        /// The regex crate's message.
        error: String,
    },
    /// A rule (or the thresholds) is inconsistent, e.g. an unknown builtin.
    #[error("rule {rule}: {problem}")]
    Invalid {
        /// The rule's id (`thresholds` for the thresholds table).
        rule: String,
        /// What is wrong with it.
        problem: String,
    },
}

/// Severity of a rule, for reports (the weight is what scores).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth noting; not a sign of attack on its own.
    Info,
    /// Weak evidence.
    Low,
    /// Moderate evidence.
    Medium,
    /// Strong evidence.
    High,
    /// A near-certain sign of attack.
    Critical,
}

impl Severity {
    /// The lower-case name used in the rules file and in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

/// What is being scanned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// A tool definition (from `tools/list`).
    Definition,
    /// A server's `instructions` (from `initialize`).
    Instructions,
    /// A tool output (a `tools/call` result).
    Output,
}

/// Which texts of a definition a rule reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Target {
    /// Descriptions, titles, defaults, enums, annotations, `_meta`, outputs... (includes
    /// the texts inside the input schema).
    Text,
    /// Only the texts inside the input schema (property descriptions, defaults, enums).
    ParamText,
    /// The tool's name.
    Name,
    /// Input-schema property names.
    ParamName,
}

/// Built-in detectors implemented in code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Builtin {
    InvisibleCharacters,
    BidiControl,
    UnicodeTags,
    AnsiEscape,
    EncodedPayload,
    KnownToolReference,
    NameCollision,
    NameDuplicate,
}

impl Builtin {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "invisible-characters" => Builtin::InvisibleCharacters,
            "bidi-control" => Builtin::BidiControl,
            "unicode-tags" => Builtin::UnicodeTags,
            "ansi-escape" => Builtin::AnsiEscape,
            "encoded-payload" => Builtin::EncodedPayload,
            "known-tool-reference" => Builtin::KnownToolReference,
            "name-collision" => Builtin::NameCollision,
            "name-duplicate" => Builtin::NameDuplicate,
            _ => return None,
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    format: u32,
    version: String,
    thresholds: Thresholds,
    #[serde(rename = "rule")]
    rules: Vec<RuleSpec>,
}

/// Score thresholds of the verdicts.
#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    /// A score at or above this is at least `suspicious`.
    pub suspicious: f64,
    /// A score at or above this is `malicious`.
    pub malicious: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSpec {
    id: String,
    description: String,
    severity: Severity,
    weight: f64,
    #[serde(default)]
    scopes: Vec<Scope>,
    #[serde(default)]
    targets: Vec<Target>,
    #[serde(default)]
    patterns: Vec<String>,
    #[serde(default)]
    case_sensitive: bool,
    #[serde(default)]
    near: Vec<NearSpec>,
    #[serde(default)]
    unless_near: Vec<NearSpec>,
    #[serde(default)]
    other_tool: bool,
    #[serde(default)]
    stack: bool,
    max_weight: Option<f64>,
    group: Option<String>,
    builtin: Option<String>,
    examples: Examples,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NearSpec {
    #[serde(default)]
    patterns: Vec<String>,
    #[serde(default = "default_window")]
    window: usize,
    #[serde(default)]
    schema_params: bool,
}

fn default_window() -> usize {
    150
}

/// Positive and negative examples of a rule (checked by the test suite).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Examples {
    /// Inputs the rule must fire on.
    #[serde(default)]
    pub positive: Vec<String>,
    /// Inputs the rule must not fire on.
    #[serde(default)]
    pub negative: Vec<String>,
}

#[derive(Debug)]
pub(crate) struct Near {
    pub patterns: Vec<Regex>,
    pub window: usize,
    pub schema_params: bool,
}

#[derive(Debug)]
pub(crate) enum Matcher {
    Patterns(Vec<Regex>),
    Builtin(Builtin),
}

/// A compiled rule.
#[derive(Debug)]
pub struct Rule {
    /// Stable identifier, reported in every [`Reason`](crate::Reason).
    pub id: String,
    /// What the rule means, for people.
    pub description: String,
    /// For reports; the weight is what scores.
    pub severity: Severity,
    /// Contribution in 0..1 to the noisy-OR score when the rule fires.
    pub weight: f64,
    /// Where the rule applies (definitions, instructions, outputs).
    pub scopes: Vec<Scope>,
    /// Which texts of a definition it reads.
    pub targets: Vec<Target>,
    /// Each distinct pattern that matches adds `weight` again, up to `max_weight`.
    pub stack: bool,
    /// The cap of a stacking rule's contribution (its `weight` when not set).
    pub max_weight: f64,
    /// Rules of one group count once: only the strongest that fired adds to the score.
    pub group: Option<String>,
    /// Examples the test suite checks the rule against.
    pub examples: Examples,
    pub(crate) other_tool: bool,
    pub(crate) case_sensitive: bool,
    pub(crate) matcher: Matcher,
    pub(crate) near: Vec<Near>,
    pub(crate) unless_near: Vec<Near>,
}

impl Rule {
    /// Whether the rule runs on inputs of this scope.
    pub fn applies_to(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }
    pub(crate) fn reads(&self, target: Target) -> bool {
        self.targets.contains(&target)
            || (target == Target::ParamText && self.targets.contains(&Target::Text))
    }
    /// Whether the rule is implemented in code rather than by patterns.
    pub fn is_builtin(&self) -> bool {
        matches!(self.matcher, Matcher::Builtin(_))
    }
    pub(crate) fn builtin(&self) -> Option<Builtin> {
        match self.matcher {
            Matcher::Builtin(b) => Some(b),
            Matcher::Patterns(_) => None,
        }
    }
}

/// A compiled rule set.
#[derive(Debug)]
pub struct Ruleset {
    /// The rule set's own version, bumped on every rule change; reported with findings.
    pub version: String,
    /// Scores at which verdicts change.
    pub thresholds: Thresholds,
    /// The rules, in file order.
    pub rules: Vec<Rule>,
}

fn compile(
    rule: &str,
    index: usize,
    pattern: &str,
    case_sensitive: bool,
) -> Result<Regex, RulesError> {
    RegexBuilder::new(pattern)
        .case_insensitive(!case_sensitive)
        .size_limit(50 << 20)
        .build()
        .map_err(|e| RulesError::Pattern {
            rule: rule.to_string(),
            index,
            error: e.to_string(),
        })
}

/// `pattern` relaxed into one that matches wherever the original does (a superset), and
/// that a DFA runs fast: word-boundary assertions (`\b`) removed, bounded repetitions
/// `{m,n}` opened up to `{m,}`.
///
/// An assertion only ever rejects matches, and `{m,}` accepts all that `{m,n}` does, so
/// if the relaxed pattern finds nothing, neither does the original: an exact prefilter.
/// Unicode word boundaries are what forces the `regex` crate off its fast DFA onto the
/// PikeVM / backtracker as soon as the text holds one non-ASCII character; bounded
/// repetitions (`[^.]{0,40}?`) multiply the states of a DFA that runs many patterns
/// at once.
pub(crate) fn relax_pattern(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len());
    let mut chars = pattern.chars().peekable();
    // depth of (possibly nested) character classes
    let mut class = 0usize;
    // just opened a class: a `]` (or `^]`) here is a literal
    let mut class_start = false;
    while let Some(c) = chars.next() {
        let at_start = std::mem::take(&mut class_start);
        match c {
            '\\' => match chars.next() {
                Some('b') if class == 0 => {}
                Some(n) => {
                    out.push('\\');
                    out.push(n);
                }
                None => out.push('\\'),
            },
            '[' => {
                // also nested classes and `[:alpha:]`: their brackets balance too
                class += 1;
                out.push(c);
                if chars.peek() == Some(&'^') {
                    out.push('^');
                    chars.next();
                }
                class_start = true;
            }
            ']' if class > 0 && !at_start => {
                class -= 1;
                out.push(c);
            }
            '{' if class == 0 => {
                let rest: String = chars.clone().take_while(|&c| c != '}').collect();
                match rest.split_once(',') {
                    Some((min, max))
                        if !max.is_empty()
                            && min.chars().all(|c| c.is_ascii_digit())
                            && max.chars().all(|c| c.is_ascii_digit()) =>
                    {
                        out.push('{');
                        out.push_str(min);
                        out.push_str(",}");
                        for _ in 0..=rest.chars().count() {
                            chars.next(); // the bounds and the `}`
                        }
                    }
                    _ => out.push(c),
                }
            }
            _ => out.push(c),
        }
    }
    out
}

fn compile_near(rule: &str, specs: Vec<NearSpec>) -> Result<Vec<Near>, RulesError> {
    specs
        .into_iter()
        .map(|n| {
            if n.patterns.is_empty() && !n.schema_params {
                return Err(RulesError::Invalid {
                    rule: rule.to_string(),
                    problem: "a near condition needs patterns or schema_params".into(),
                });
            }
            Ok(Near {
                patterns: n
                    .patterns
                    .iter()
                    .enumerate()
                    .map(|(i, p)| compile(rule, i, p, false))
                    .collect::<Result<_, _>>()?,
                window: n.window,
                schema_params: n.schema_params,
            })
        })
        .collect()
}

impl Ruleset {
    /// Parse and compile a rules file.
    pub fn from_toml(source: &str) -> Result<Self, RulesError> {
        let file: RulesFile = toml::from_str(source)?;
        if file.format != RULES_FORMAT {
            return Err(RulesError::Format { found: file.format });
        }
        let mut seen = std::collections::HashSet::new();
        let mut rules = Vec::with_capacity(file.rules.len());
        for spec in file.rules {
            let id = spec.id.clone();
            let invalid = |problem: &str| RulesError::Invalid {
                rule: id.clone(),
                problem: problem.to_string(),
            };
            if !seen.insert(spec.id.clone()) {
                return Err(invalid("duplicate rule id"));
            }
            if !(0.0..=1.0).contains(&spec.weight) {
                return Err(invalid("weight must be within 0..1"));
            }
            if spec.examples.positive.is_empty() || spec.examples.negative.is_empty() {
                return Err(invalid(
                    "every rule needs a positive and a negative example",
                ));
            }
            let matcher = match (&spec.builtin, spec.patterns.is_empty()) {
                (Some(name), true) => Matcher::Builtin(
                    Builtin::parse(name).ok_or_else(|| invalid("unknown builtin detector"))?,
                ),
                (Some(_), false) => return Err(invalid("a builtin rule has no patterns")),
                (None, true) => return Err(invalid("a rule needs patterns or a builtin")),
                (None, false) => Matcher::Patterns(
                    spec.patterns
                        .iter()
                        .enumerate()
                        .map(|(i, p)| compile(&spec.id, i, p, spec.case_sensitive))
                        .collect::<Result<_, _>>()?,
                ),
            };
            if spec.other_tool
                && let Matcher::Patterns(ps) = &matcher
            {
                for (i, p) in ps.iter().enumerate() {
                    if !p.capture_names().flatten().any(|n| n.starts_with("tool")) {
                        return Err(RulesError::Invalid {
                            rule: spec.id.clone(),
                            problem: format!("other_tool: pattern {i} has no (?P<tool>...) group"),
                        });
                    }
                }
            }
            rules.push(Rule {
                near: compile_near(&spec.id, spec.near)?,
                unless_near: compile_near(&spec.id, spec.unless_near)?,
                id: spec.id,
                description: spec.description,
                severity: spec.severity,
                weight: spec.weight,
                scopes: if spec.scopes.is_empty() {
                    vec![Scope::Definition, Scope::Instructions, Scope::Output]
                } else {
                    spec.scopes
                },
                targets: if spec.targets.is_empty() {
                    vec![Target::Text, Target::Name, Target::ParamName]
                } else {
                    spec.targets
                },
                stack: spec.stack,
                max_weight: spec.max_weight.unwrap_or(spec.weight).clamp(0.0, 1.0),
                group: spec.group,
                examples: spec.examples,
                other_tool: spec.other_tool,
                case_sensitive: spec.case_sensitive,
                matcher,
            });
        }
        if !(0.0 < file.thresholds.suspicious
            && file.thresholds.suspicious <= file.thresholds.malicious
            && file.thresholds.malicious <= 1.0)
        {
            return Err(RulesError::Invalid {
                rule: "thresholds".into(),
                problem: "need 0 < suspicious <= malicious <= 1".into(),
            });
        }
        Ok(Ruleset {
            version: file.version,
            thresholds: file.thresholds,
            rules,
        })
    }

    /// The rule with this id.
    pub fn rule(&self, id: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.id == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relaxed_patterns() {
        assert_eq!(relax_pattern(r"\bfoo\s+bar\b"), r"foo\s+bar");
        assert_eq!(
            relax_pattern(r"a[^.\n]{0,40}?b{2}c{3,}"),
            r"a[^.\n]{0,}?b{2}c{3,}"
        );
        assert_eq!(relax_pattern(r"\\b[\b]x"), r"\\b[\b]x");
        assert_eq!(relax_pattern(r"[]{0,3}]\{1,2\}"), r"[]{0,3}]\{1,2\}");
        assert_eq!(relax_pattern(r"(?:\w+\s+){0,4}?x"), r"(?:\w+\s+){0,}?x");
    }

    /// Every relaxed pattern compiles and matches wherever its original matches.
    #[test]
    fn relaxed_patterns_match_a_superset() {
        let rs = Ruleset::from_toml(BUILTIN_RULES_TOML).expect("builtin rules");
        let texts: Vec<&str> = rs
            .rules
            .iter()
            .flat_map(|r| r.examples.positive.iter().chain(&r.examples.negative))
            .map(String::as_str)
            .collect();
        for rule in &rs.rules {
            let Matcher::Patterns(ps) = &rule.matcher else {
                continue;
            };
            for p in ps {
                let relaxed = compile(&rule.id, 0, &relax_pattern(p.as_str()), rule.case_sensitive)
                    .expect("relaxed pattern compiles");
                for t in &texts {
                    if p.is_match(t) {
                        assert!(relaxed.is_match(t), "{}: {} on {t}", rule.id, p.as_str());
                    }
                }
            }
        }
    }
}
