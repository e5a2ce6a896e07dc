//! The detector: extracts every model-visible text, normalises it, runs the rules and
//! turns the hits into a scored verdict with reasons.

use std::collections::BTreeMap;
use std::sync::{LazyLock, OnceLock};

use regex::{RegexSet, RegexSetBuilder, SetMatches};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::normalize::{self, Normalized};
use crate::rules::{
    BUILTIN_RULES_TOML, Builtin, Matcher, Near, Rule, RulesError, Ruleset, Scope, Severity, Target,
    relax_pattern,
};

/// The verdict of a scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// The score is below the `suspicious` threshold.
    Clean,
    /// Worth a warning: at or above `suspicious`, below `malicious`.
    Suspicious,
    /// At or above the `malicious` threshold: block or withhold it.
    Malicious,
}

impl Verdict {
    /// The lower-case name used in reports, logs and the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Clean => "clean",
            Verdict::Suspicious => "suspicious",
            Verdict::Malicious => "malicious",
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One reason behind a verdict: a rule that fired, where, and on what text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reason {
    /// Rule id from the rules file.
    pub rule: String,
    /// The rule's severity, for reports.
    pub severity: Severity,
    /// The rule's contribution to the score.
    pub weight: f64,
    /// Where the text was found, e.g. `description`, `inputSchema.properties.note.description`,
    /// `description (base64)`, `output`.
    pub location: String,
    /// The matched text (normalised), with a little context.
    pub snippet: String,
}

impl Reason {
    /// `location: snippet`, the evidence string of the JSONL output.
    pub fn evidence(&self) -> String {
        format!("{}: {}", self.location, self.snippet)
    }
}

/// The result of scanning one definition, instructions text or output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// What the score amounts to under the rule set's thresholds.
    pub verdict: Verdict,
    /// 0..1, rounded to three decimals.
    pub score: f64,
    /// Strongest first.
    pub reasons: Vec<Reason>,
}

impl Report {
    /// Whether a rule fired.
    pub fn has_rule(&self, id: &str) -> bool {
        self.reasons.iter().any(|r| r.rule == id)
    }

    /// One line for people: `malicious (0.93): conceal-from-user, sensitive-file-access`.
    pub fn summary(&self) -> String {
        let rules: Vec<&str> = self.reasons.iter().map(|r| r.rule.as_str()).collect();
        if rules.is_empty() {
            format!("{} ({:.2})", self.verdict, self.score)
        } else {
            format!("{} ({:.2}): {}", self.verdict, self.score, rules.join(", "))
        }
    }
}

/// What the scanner knows about the surroundings of what it scans.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanContext {
    /// Names of tools offered by *other* servers (for shadowing and name collisions).
    #[serde(default)]
    pub known_tools: Vec<String>,
    /// Names of other servers.
    #[serde(default)]
    pub known_servers: Vec<String>,
    /// Names of the other tools of the *same* server: references to them are not
    /// shadowing.
    #[serde(default)]
    pub own_tools: Vec<String>,
}

#[derive(Debug, Clone)]
struct Segment {
    location: String,
    target: Target,
    text: String,
    /// Encoding layers removed to obtain this text ("base64", "hidden tag characters"...).
    layers: Vec<&'static str>,
}

#[derive(Debug, Default)]
struct Obfuscation {
    invisible: Vec<(String, usize, Option<char>)>,
    bidi: Vec<(String, usize)>,
    tags: Vec<(String, String)>,
    ansi: Vec<(String, usize, usize)>,
}

#[derive(Default)]
struct Extraction {
    segments: Vec<Segment>,
    obfuscation: Obfuscation,
    tool_name: Option<String>,
    params: Vec<String>,
    in_input_schema: bool,
}

const MAX_DECODE_DEPTH: usize = 3;

impl Extraction {
    fn add(&mut self, location: String, target: Target, raw: &str) {
        if raw.trim().is_empty() {
            return;
        }
        let n = normalize::normalize(raw);
        self.record(&location, &n);
        let target = if target == Target::Text && self.in_input_schema {
            Target::ParamText
        } else {
            target
        };
        if !n.hidden_tags.is_empty() {
            let hidden = normalize::normalize(&n.hidden_tags);
            self.segments.push(Segment {
                location: format!("{location} (hidden tag characters)"),
                target: Target::Text,
                text: hidden.text.clone(),
                layers: vec!["hidden tag characters"],
            });
            self.decode(&location, &hidden.text, vec!["hidden tag characters"], 1);
        }
        self.decode(&location, &n.text, Vec::new(), 0);
        let text = match target {
            Target::Text | Target::ParamText => n.text,
            Target::Name | Target::ParamName => spaced_identifier(&n.text),
        };
        self.segments.push(Segment {
            location,
            target,
            text,
            layers: Vec::new(),
        });
    }

    fn record(&mut self, location: &str, n: &Normalized) {
        if n.invisible > 0 {
            self.obfuscation.invisible.push((
                location.to_string(),
                n.invisible,
                n.invisible_example,
            ));
        }
        if n.bidi > 0 {
            self.obfuscation.bidi.push((location.to_string(), n.bidi));
        }
        if !n.hidden_tags.is_empty() {
            self.obfuscation
                .tags
                .push((location.to_string(), n.hidden_tags.clone()));
        }
        if n.ansi > 0 {
            self.obfuscation
                .ansi
                .push((location.to_string(), n.ansi, n.ansi_concealing));
        }
    }

    fn decode(&mut self, location: &str, text: &str, layers: Vec<&'static str>, depth: usize) {
        if depth >= MAX_DECODE_DEPTH {
            return;
        }
        for (enc, decoded) in normalize::decode_layers(text) {
            let n = normalize::normalize(&decoded);
            let mut l = layers.clone();
            l.push(enc.label());
            let loc = format!("{location} ({})", l.join(" > "));
            self.record(&loc, &n);
            self.decode(location, &n.text, l.clone(), depth + 1);
            self.segments.push(Segment {
                location: loc,
                target: Target::Text,
                text: n.text,
                layers: l,
            });
        }
    }

    /// Every string leaf of `v` (keys are not texts, except schema property names).
    fn add_strings(&mut self, v: &Value, path: &str) {
        match v {
            Value::String(s) => self.add(path.to_string(), Target::Text, s),
            Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    self.add_strings(x, &format!("{path}[{i}]"));
                }
            }
            Value::Object(o) => {
                for (k, x) in o {
                    self.add_strings(x, &join_path(path, k));
                }
            }
            _ => {}
        }
    }

    /// A JSON schema: descriptions, titles, defaults, enums, examples, and the names of
    /// properties (which the model reads too).
    fn add_schema(&mut self, v: &Value, path: &str, top: bool) {
        match v {
            Value::Object(o) => {
                for (k, x) in o {
                    let p = join_path(path, k);
                    match k.as_str() {
                        "type" | "$schema" | "$ref" | "$id" | "format" | "required" | "pattern"
                        | "$anchor" | "$dynamicRef" => {}
                        "properties" | "patternProperties" => {
                            if let Value::Object(props) = x {
                                for (name, sub) in props {
                                    let pp = join_path(&p, name);
                                    if k == "properties" {
                                        if top {
                                            self.params.push(name.clone());
                                        }
                                        self.add(format!("{pp} (name)"), Target::ParamName, name);
                                    }
                                    self.add_schema(sub, &pp, false);
                                }
                            } else {
                                self.add_strings(x, &p);
                            }
                        }
                        "$defs" | "definitions" => {
                            if let Value::Object(defs) = x {
                                for (name, sub) in defs {
                                    self.add_schema(sub, &join_path(&p, name), false);
                                }
                            }
                        }
                        "default" | "const" | "examples" | "enum" | "description" | "title"
                        | "$comment" => self.add_strings(x, &p),
                        _ => match x {
                            Value::Object(_) => self.add_schema(x, &p, false),
                            Value::Array(a) => {
                                for (i, item) in a.iter().enumerate() {
                                    if item.is_object() {
                                        self.add_schema(item, &format!("{p}[{i}]"), false);
                                    } else {
                                        self.add_strings(item, &format!("{p}[{i}]"));
                                    }
                                }
                            }
                            Value::String(s) => self.add(p, Target::Text, s),
                            _ => {}
                        },
                    }
                }
            }
            Value::String(s) => self.add(path.to_string(), Target::Text, s),
            _ => {}
        }
    }
}

fn join_path(path: &str, key: &str) -> String {
    let simple = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '$');
    match (path.is_empty(), simple) {
        (true, true) => key.to_string(),
        (true, false) => format!("[{key:?}]"),
        (false, true) => format!("{path}.{key}"),
        (false, false) => format!("{path}[{key:?}]"),
    }
}

/// `getHistorical_stock-prices` -> `get historical stock prices`.
pub(crate) fn spaced_identifier(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    let mut prev: Option<char> = None;
    for c in s.chars() {
        if c == '_' || c == '-' || c == '.' || c == '/' || c == ':' || c.is_whitespace() {
            if !out.ends_with(' ') && !out.is_empty() {
                out.push(' ');
            }
            prev = None;
            continue;
        }
        if let Some(p) = prev
            && c.is_uppercase()
            && p.is_lowercase()
            && !out.ends_with(' ')
        {
            out.push(' ');
        }
        out.extend(c.to_lowercase());
        prev = Some(c);
    }
    out.trim_end().to_string()
}

/// Lower-case, alphanumerics only: `Get_Stock-Info` -> `getstockinfo`.
pub(crate) fn canonical_name(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(|c| c.to_lowercase())
        .collect()
}

fn field<'a>(v: &'a Value, names: &[&str]) -> Option<&'a Value> {
    names
        .iter()
        .find_map(|n| v.get(*n).filter(|x| !x.is_null()))
}

fn extract_definition(tool: &Value) -> Extraction {
    let mut ex = Extraction::default();
    if let Some(Value::String(name)) = field(tool, &["name", "tool_name"]) {
        ex.tool_name = Some(name.clone());
        ex.add("name".into(), Target::Name, name);
    }
    if let Some(v) = field(tool, &["title"]) {
        ex.add_strings(v, "title");
    }
    if let Some(v) = field(tool, &["description"]) {
        ex.add_strings(v, "description");
    }
    if let Some(v) = field(tool, &["inputSchema", "input_schema", "parameters"]) {
        ex.in_input_schema = true;
        ex.add_schema(v, "inputSchema", true);
        ex.in_input_schema = false;
    }
    if let Some(v) = field(tool, &["outputSchema", "output_schema"]) {
        ex.add_schema(v, "outputSchema", false);
    }
    if let Some(v) = field(tool, &["annotations"]) {
        ex.add_strings(v, "annotations");
    }
    if let Some(v) = field(tool, &["_meta"]) {
        ex.add_strings(v, "_meta");
    }
    ex
}

struct Hit {
    rule: usize,
    pattern: usize,
    location: String,
    snippet: String,
    encoded: bool,
}

const SNIPPET_CONTEXT: usize = 40;
const SNIPPET_MAX_MATCH: usize = 160;

fn floor_boundary(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn ceil_boundary(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while i < s.len() && !s.is_char_boundary(i) {
        i += 1;
    }
    i
}

fn snippet(text: &str, start: usize, end: usize) -> String {
    let end = if end - start > SNIPPET_MAX_MATCH {
        floor_boundary(text, start + SNIPPET_MAX_MATCH)
    } else {
        end
    };
    let s = floor_boundary(text, start.saturating_sub(SNIPPET_CONTEXT));
    let e = ceil_boundary(text, end + SNIPPET_CONTEXT);
    let mut out = String::new();
    if s > 0 {
        out.push_str("...");
    }
    out.push_str(&text[s..e].replace('\n', " "));
    if e < text.len() {
        out.push_str("...");
    }
    out
}

fn contains_word(haystack_lower: &str, needle_lower: &str) -> bool {
    if needle_lower.is_empty() {
        return false;
    }
    let is_word = |c: char| c.is_alphanumeric() || c == '_';
    let mut from = 0;
    while let Some(pos) = haystack_lower[from..].find(needle_lower) {
        let start = from + pos;
        let end = start + needle_lower.len();
        let before = haystack_lower[..start].chars().next_back();
        let after = haystack_lower[end..].chars().next();
        if !before.is_some_and(is_word) && !after.is_some_and(is_word) {
            return true;
        }
        from = start + needle_lower.len().max(1);
        from = ceil_boundary(haystack_lower, from);
        if from >= haystack_lower.len() {
            break;
        }
    }
    false
}

fn near_holds(near: &Near, text: &str, start: usize, end: usize, params: &[String]) -> bool {
    let s = floor_boundary(text, start.saturating_sub(near.window));
    let e = ceil_boundary(text, end + near.window);
    let window = &text[s..e];
    if near.patterns.iter().any(|p| p.is_match(window)) {
        return true;
    }
    if near.schema_params {
        let lower = window.to_lowercase();
        for p in params {
            if p.chars().count() < 3 {
                continue;
            }
            if contains_word(&lower, &p.to_lowercase())
                || contains_word(&lower, &spaced_identifier(p))
            {
                return true;
            }
        }
    }
    false
}

/// Whether `text_lower` mentions the tool `name`. Identifier-like names (with `_`, `-`,
/// `.` or inner capitals) count as plain words; a single common word such as `search`
/// counts only when quoted or followed by "tool"/"function".
fn mentions_tool(text_lower: &str, name: &str) -> bool {
    let n = name.to_lowercase();
    let identifier_like = name.contains(['_', '-', '.'])
        || name.chars().skip(1).any(char::is_uppercase)
        || name.chars().any(|c| c.is_ascii_digit());
    if identifier_like {
        return contains_word(text_lower, &n);
    }
    ["`", "'", "\""]
        .iter()
        .any(|q| text_lower.contains(&format!("{q}{n}{q}")))
        || contains_word(text_lower, &format!("{n} tool"))
        || contains_word(text_lower, &format!("{n} function"))
}

const NOT_TOOL_NAMES: &[&str] = &[
    "this",
    "that",
    "the",
    "a",
    "an",
    "any",
    "each",
    "every",
    "other",
    "same",
    "these",
    "those",
    "another",
    "following",
    "above",
    "current",
    "new",
    "your",
    "our",
    "my",
    "said",
    "which",
    "its",
    "their",
    "original",
    "old",
    "previous",
    "main",
    "primary",
    "first",
    "next",
    "last",
    "correct",
    "right",
    "appropriate",
    "relevant",
    "specific",
    "given",
    "default",
    "standard",
    "analysis",
];

fn is_self_reference(captured: &str, ctx_self: Option<&str>, own_tools: &[String]) -> bool {
    let c = canonical_name(captured);
    if c.len() < 2 || NOT_TOOL_NAMES.contains(&captured.to_lowercase().as_str()) {
        return true;
    }
    if let Some(me) = ctx_self {
        let m = canonical_name(me);
        if c == m || (c.len() >= 4 && m.contains(&c)) {
            return true;
        }
    }
    own_tools.iter().any(|t| canonical_name(t) == c)
}

/// Levenshtein distance, bounded (returns `max + 1` as soon as it is exceeded).
fn edit_distance(a: &str, b: &str, max: usize) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    if a.len().abs_diff(b.len()) > max {
        return max + 1;
    }
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for i in 1..=a.len() {
        cur[0] = i;
        let mut row_min = cur[0];
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            cur[j] = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
            row_min = row_min.min(cur[j]);
        }
        if row_min > max {
            return max + 1;
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

const NAME_AFFIXES: &[&str] = &[
    "best",
    "premium",
    "ultimate",
    "pro",
    "advanced",
    "enhanced",
    "improved",
    "new",
    "v2",
    "v3",
    "plus",
    "official",
    "secure",
    "super",
    "fast",
    "better",
    "real",
    "true",
    "fixed",
    "updated",
    "latest",
    "optimized",
    "optimised",
    "verified",
    "trusted",
];

/// How the tool's name imitates a known name, if it does.
fn name_collision(own: &str, known: &str) -> Option<&'static str> {
    if own == known {
        return None; // exact duplicates are reported by name-duplicate
    }
    let (o, k) = (canonical_name(own), canonical_name(known));
    if o.is_empty() || k.len() < 4 {
        return None;
    }
    if o == k {
        return Some("same name up to case and separators");
    }
    for affix in NAME_AFFIXES {
        if o == format!("{affix}{k}") || o == format!("{k}{affix}") {
            return Some("known name with a marketing affix");
        }
    }
    if k.len() >= 8 && edit_distance(&o, &k, 1) <= 1 {
        return Some("one edit away");
    }
    None
}

/// One pass over a text that rules out the patterns that cannot match it.
///
/// A `RegexSet` of every pattern of the rules of one scope, relaxed ([`relax_pattern`]):
/// exact as a filter (a pattern the set does not report cannot match), and run by the
/// DFA even on non-ASCII text, where the patterns themselves (Unicode `\b`) need the
/// much slower PikeVM / backtracker.
#[derive(Debug)]
struct Prefilter {
    set: RegexSet,
    /// Per rule, per pattern: its index in `set` (`None`: not in the set, always run).
    slots: Vec<Vec<Option<usize>>>,
}

impl Prefilter {
    fn new(ruleset: &Ruleset, scope: Scope) -> Option<Prefilter> {
        let mut patterns = Vec::new();
        let mut slots = Vec::with_capacity(ruleset.rules.len());
        for rule in &ruleset.rules {
            let mut rule_slots = Vec::new();
            if let Matcher::Patterns(ps) = &rule.matcher
                && rule.applies_to(scope)
            {
                for re in ps {
                    let relaxed = relax_pattern(re.as_str());
                    rule_slots.push(Some(patterns.len()));
                    patterns.push(if rule.case_sensitive {
                        format!("(?:{relaxed})")
                    } else {
                        format!("(?i:{relaxed})")
                    });
                }
            }
            slots.push(rule_slots);
        }
        if patterns.is_empty() {
            return None;
        }
        let set = RegexSetBuilder::new(&patterns)
            .size_limit(200 << 20)
            .dfa_size_limit(64 << 20)
            .build()
            .ok()?;
        Some(Prefilter { set, slots })
    }

    /// Whether pattern `pattern` of rule `rule` may match a text for which the set
    /// reported `matches`.
    fn may_match(&self, matches: &SetMatches, rule: usize, pattern: usize) -> bool {
        match self
            .slots
            .get(rule)
            .and_then(|r| r.get(pattern))
            .copied()
            .flatten()
        {
            Some(slot) => matches.matched(slot),
            None => true,
        }
    }
}

/// The detector.
#[derive(Debug)]
pub struct Scanner {
    ruleset: Ruleset,
    /// Per scope (definition, instructions, output), built on first use.
    prefilters: [OnceLock<Option<Prefilter>>; 3],
}

static BUILTIN: LazyLock<Scanner> = LazyLock::new(|| {
    Scanner::from_toml(BUILTIN_RULES_TOML)
        .expect("the embedded rules file is valid (checked by tests)")
});

impl Scanner {
    /// A scanner running an already compiled rule set.
    pub fn new(ruleset: Ruleset) -> Self {
        Scanner {
            ruleset,
            prefilters: Default::default(),
        }
    }

    fn prefilter(&self, scope: Scope) -> Option<&Prefilter> {
        let i = match scope {
            Scope::Definition => 0,
            Scope::Instructions => 1,
            Scope::Output => 2,
        };
        self.prefilters[i]
            .get_or_init(|| Prefilter::new(&self.ruleset, scope))
            .as_ref()
    }

    /// A scanner for a rules file of your own.
    pub fn from_toml(source: &str) -> Result<Self, RulesError> {
        Ok(Scanner::new(Ruleset::from_toml(source)?))
    }

    /// The scanner with the embedded rule set (compiled once).
    pub fn builtin() -> &'static Scanner {
        &BUILTIN
    }

    /// The rules this scanner runs (their version, thresholds and metadata).
    pub fn ruleset(&self) -> &Ruleset {
        &self.ruleset
    }

    /// Scan a tool definition (an MCP `Tool` object; `tool_name`/`input_schema` spellings
    /// are accepted too).
    pub fn scan_definition(&self, tool: &Value, ctx: &ScanContext) -> Report {
        self.run(extract_definition(tool), Scope::Definition, ctx)
    }

    /// Scan a server's `instructions` text.
    pub fn scan_instructions(&self, instructions: &str, ctx: &ScanContext) -> Report {
        let mut ex = Extraction::default();
        ex.add("instructions".into(), Target::Text, instructions);
        self.run(ex, Scope::Instructions, ctx)
    }

    /// Scan a tool output given as text.
    pub fn scan_output(&self, text: &str, ctx: &ScanContext) -> Report {
        let mut ex = Extraction::default();
        ex.add("output".into(), Target::Text, text);
        self.run(ex, Scope::Output, ctx)
    }

    /// Scan an MCP `CallToolResult` (`content` blocks of type text and embedded text
    /// resources, and `structuredContent`).
    pub fn scan_call_result(&self, result: &Value, ctx: &ScanContext) -> Report {
        let mut ex = Extraction::default();
        if let Some(Value::Array(blocks)) = result.get("content") {
            for (i, b) in blocks.iter().enumerate() {
                if let Some(Value::String(t)) = b.get("text") {
                    ex.add(format!("content[{i}].text"), Target::Text, t);
                }
                if let Some(Value::String(t)) = b.get("resource").and_then(|r| r.get("text")) {
                    ex.add(format!("content[{i}].resource.text"), Target::Text, t);
                }
            }
        }
        if let Some(sc) = result.get("structuredContent") {
            ex.add_strings(sc, "structuredContent");
        }
        if let Value::String(s) = result {
            ex.add("output".into(), Target::Text, s);
        }
        self.run(ex, Scope::Output, ctx)
    }

    fn run(&self, ex: Extraction, scope: Scope, ctx: &ScanContext) -> Report {
        let mut hits: Vec<Hit> = Vec::new();
        let self_name = ex.tool_name.as_deref();
        let prefilter = self.prefilter(scope);
        // per segment: the patterns that may match it
        let candidates: Vec<Option<SetMatches>> = ex
            .segments
            .iter()
            .map(|seg| prefilter.map(|p| p.set.matches(&seg.text)))
            .collect();
        for (ri, rule) in self.ruleset.rules.iter().enumerate() {
            if !rule.applies_to(scope) {
                continue;
            }
            match &rule.matcher {
                Matcher::Patterns(patterns) => {
                    for (seg, cands) in ex.segments.iter().zip(&candidates) {
                        if !rule.reads(seg.target) {
                            continue;
                        }
                        for (pi, re) in patterns.iter().enumerate() {
                            if let (Some(p), Some(c)) = (prefilter, cands)
                                && !p.may_match(c, ri, pi)
                            {
                                continue;
                            }
                            if let Some(h) = self.first_valid_match(rule, re, seg, &ex, ctx, scope)
                            {
                                hits.push(Hit {
                                    rule: ri,
                                    pattern: pi,
                                    location: seg.location.clone(),
                                    snippet: h,
                                    encoded: !seg.layers.is_empty(),
                                });
                                if !rule.stack {
                                    break;
                                }
                            }
                        }
                    }
                }
                Matcher::Builtin(b) => {
                    if *b == Builtin::EncodedPayload {
                        continue; // decided after the other rules
                    }
                    for (location, snippet) in self.builtin_hits(*b, &ex, scope, ctx, self_name) {
                        hits.push(Hit {
                            rule: ri,
                            pattern: 0,
                            location,
                            snippet,
                            encoded: false,
                        });
                    }
                }
            }
        }
        // encoded-payload: some meaningful rule fired on decoded text
        if let Some(ri) = self
            .ruleset
            .rules
            .iter()
            .position(|r| r.builtin() == Some(Builtin::EncodedPayload) && r.applies_to(scope))
        {
            let enc = hits
                .iter()
                .filter(|h| h.encoded && self.ruleset.rules[h.rule].weight >= 0.25)
                .map(|h| {
                    (
                        h.location.clone(),
                        format!(
                            "decoded text fires {}: {}",
                            self.ruleset.rules[h.rule].id, h.snippet
                        ),
                    )
                })
                .next();
            if let Some((location, snippet)) = enc {
                hits.push(Hit {
                    rule: ri,
                    pattern: 0,
                    location,
                    snippet,
                    encoded: true,
                });
            }
        }
        self.score(hits)
    }

    fn first_valid_match(
        &self,
        rule: &Rule,
        re: &regex::Regex,
        seg: &Segment,
        ex: &Extraction,
        ctx: &ScanContext,
        scope: Scope,
    ) -> Option<String> {
        for caps in re.captures_iter(&seg.text).take(32) {
            let m = caps.get(0)?;
            if rule.other_tool {
                let captured = caps
                    .iter()
                    .zip(re.capture_names())
                    .filter_map(|(c, n)| match (c, n) {
                        (Some(c), Some(n)) if n.starts_with("tool") => Some(c.as_str()),
                        _ => None,
                    })
                    .next();
                let Some(captured) = captured else { continue };
                if is_self_reference(captured, ex.tool_name.as_deref(), &ctx.own_tools) {
                    continue;
                }
                // in a server's instructions, only names of other servers' tools count
                if scope == Scope::Instructions
                    && !ctx
                        .known_tools
                        .iter()
                        .any(|k| canonical_name(k) == canonical_name(captured))
                {
                    continue;
                }
            }
            if !rule
                .near
                .iter()
                .all(|n| near_holds(n, &seg.text, m.start(), m.end(), &ex.params))
            {
                continue;
            }
            if rule
                .unless_near
                .iter()
                .any(|n| near_holds(n, &seg.text, m.start(), m.end(), &ex.params))
            {
                continue;
            }
            return Some(snippet(&seg.text, m.start(), m.end()));
        }
        None
    }

    fn builtin_hits(
        &self,
        b: Builtin,
        ex: &Extraction,
        scope: Scope,
        ctx: &ScanContext,
        self_name: Option<&str>,
    ) -> Vec<(String, String)> {
        let ob = &ex.obfuscation;
        match b {
            Builtin::InvisibleCharacters => ob
                .invisible
                .iter()
                .map(|(loc, n, ex)| {
                    let example = ex.map(|c| format!(" (e.g. U+{:04X})", c as u32)).unwrap_or_default();
                    (loc.clone(), format!("{n} invisible character(s) stripped{example}"))
                })
                .take(1)
                .collect(),
            Builtin::BidiControl => ob
                .bidi
                .iter()
                .map(|(loc, n)| (loc.clone(), format!("{n} bidirectional control character(s) stripped")))
                .take(1)
                .collect(),
            Builtin::UnicodeTags => ob
                .tags
                .iter()
                .map(|(loc, hidden)| {
                    let shown: String = hidden.chars().take(160).collect();
                    (loc.clone(), format!("hidden text in Unicode tag characters: \"{shown}\""))
                })
                .take(1)
                .collect(),
            Builtin::AnsiEscape => ob
                .ansi
                .iter()
                .filter(|(_, _, concealing)| scope != Scope::Output || *concealing > 0)
                .map(|(loc, n, c)| {
                    (loc.clone(), format!("{n} ANSI escape sequence(s) stripped, {c} of which hide or overwrite text"))
                })
                .take(1)
                .collect(),
            Builtin::EncodedPayload => Vec::new(),
            Builtin::KnownToolReference => {
                let mut out = Vec::new();
                let me = self_name.map(canonical_name);
                'seg: for seg in ex
                    .segments
                    .iter()
                    .filter(|s| matches!(s.target, Target::Text | Target::ParamText))
                {
                    let lower = seg.text.to_lowercase();
                    for k in &ctx.known_tools {
                        let kc = canonical_name(k);
                        if k.chars().count() < 4 || me.as_deref() == Some(kc.as_str()) {
                            continue;
                        }
                        if ctx.own_tools.iter().any(|t| canonical_name(t) == kc) {
                            continue;
                        }
                        if mentions_tool(&lower, k) {
                            out.push((seg.location.clone(), format!("names tool `{k}` of another server")));
                            break 'seg;
                        }
                    }
                    for s in &ctx.known_servers {
                        if s.chars().count() < 4 {
                            continue;
                        }
                        let sl = s.to_lowercase();
                        if [" server", " mcp", " tools", " tool"]
                            .iter()
                            .any(|suffix| contains_word(&lower, &format!("{sl}{suffix}")))
                        {
                            out.push((seg.location.clone(), format!("names server `{s}`")));
                            break 'seg;
                        }
                    }
                }
                out
            }
            Builtin::NameCollision => {
                let Some(me) = self_name else { return Vec::new() };
                ctx.known_tools
                    .iter()
                    .filter_map(|k| name_collision(me, k).map(|how| ("name".to_string(), format!("`{me}` imitates `{k}` ({how})"))))
                    .take(1)
                    .collect()
            }
            Builtin::NameDuplicate => {
                let Some(me) = self_name else { return Vec::new() };
                ctx.known_tools
                    .iter()
                    .filter(|k| k.as_str() == me)
                    .map(|k| ("name".to_string(), format!("`{me}` is also the name of another server's tool `{k}`")))
                    .take(1)
                    .collect()
            }
        }
    }

    fn score(&self, hits: Vec<Hit>) -> Report {
        // per rule: the distinct patterns that fired, and the first hit of each
        let mut by_rule: BTreeMap<usize, Vec<&Hit>> = BTreeMap::new();
        for h in &hits {
            let v = by_rule.entry(h.rule).or_default();
            if !v.iter().any(|x| x.pattern == h.pattern) {
                v.push(h);
            }
        }
        // weight of each rule that fired
        let weighted: Vec<(usize, f64, Vec<&Hit>)> = by_rule
            .into_iter()
            .map(|(ri, hs)| {
                let rule = &self.ruleset.rules[ri];
                let w = if rule.stack {
                    let n = i32::try_from(hs.len()).unwrap_or(i32::MAX);
                    (1.0 - (1.0 - rule.weight).powi(n)).min(rule.max_weight)
                } else {
                    rule.weight
                };
                (ri, w, hs)
            })
            .collect();
        // within a group only the strongest rule counts
        let mut group_best: BTreeMap<&str, (usize, f64)> = BTreeMap::new();
        for (ri, w, _) in &weighted {
            if let Some(g) = self.ruleset.rules[*ri].group.as_deref() {
                let e = group_best.entry(g).or_insert((*ri, *w));
                if *w > e.1 {
                    *e = (*ri, *w);
                }
            }
        }
        let mut reasons = Vec::new();
        let mut keep = 1.0f64;
        for (ri, w, hs) in weighted {
            let rule = &self.ruleset.rules[ri];
            let w = match rule.group.as_deref().and_then(|g| group_best.get(g)) {
                Some((best, _)) if *best != ri => 0.0,
                _ => w,
            };
            keep *= 1.0 - w;
            let first = hs[0];
            let snippet = if rule.stack && hs.len() > 1 {
                hs.iter()
                    .take(4)
                    .map(|h| h.snippet.as_str())
                    .collect::<Vec<_>>()
                    .join(" | ")
            } else {
                first.snippet.clone()
            };
            reasons.push(Reason {
                rule: rule.id.clone(),
                severity: rule.severity,
                weight: (w * 1000.0).round() / 1000.0,
                location: first.location.clone(),
                snippet,
            });
        }
        reasons.sort_by(|a, b| {
            b.weight
                .total_cmp(&a.weight)
                .then(b.severity.cmp(&a.severity))
        });
        let score = ((1.0 - keep) * 1000.0).round() / 1000.0;
        let t = self.ruleset.thresholds;
        let verdict = if score >= t.malicious {
            Verdict::Malicious
        } else if score >= t.suspicious {
            Verdict::Suspicious
        } else {
            Verdict::Clean
        };
        Report {
            verdict,
            score,
            reasons,
        }
    }
}

/// Scan a tool definition with the embedded rules.
pub fn scan_definition(tool: &Value, ctx: &ScanContext) -> Report {
    Scanner::builtin().scan_definition(tool, ctx)
}

/// Scan a server's instructions with the embedded rules.
pub fn scan_instructions(instructions: &str, ctx: &ScanContext) -> Report {
    Scanner::builtin().scan_instructions(instructions, ctx)
}

/// Scan a tool output (text) with the embedded rules.
pub fn scan_output(text: &str, ctx: &ScanContext) -> Report {
    Scanner::builtin().scan_output(text, ctx)
}

/// Scan an MCP `CallToolResult` with the embedded rules.
pub fn scan_call_result(result: &Value, ctx: &ScanContext) -> Report {
    Scanner::builtin().scan_call_result(result, ctx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spaced_identifiers() {
        assert_eq!(
            spaced_identifier("getHistorical_stock-prices"),
            "get historical stock prices"
        );
        assert_eq!(spaced_identifier("PremiumSearch"), "premium search");
        assert_eq!(
            spaced_identifier("conversation_history"),
            "conversation history"
        );
    }

    #[test]
    fn collisions() {
        assert!(name_collision("Get_Stock_Info", "get_stock_info").is_some());
        assert!(name_collision("best_get_stock_info", "get_stock_info").is_some());
        assert!(name_collision("get_stock_infos", "get_stock_info").is_some());
        assert!(name_collision("get_stock_info", "get_stock_info").is_none());
        assert!(name_collision("read_file", "write_file").is_none());
    }

    #[test]
    fn edit_distance_bounded() {
        assert_eq!(edit_distance("kitten", "sitting", 5), 3);
        assert_eq!(edit_distance("abc", "abcdefgh", 2), 3);
    }

    #[test]
    fn tool_mentions() {
        assert!(mentions_tool("then use send_email now", "send_email"));
        assert!(mentions_tool("then use sendemail now", "sendEmail"));
        assert!(!mentions_tool("search the web", "search"));
        assert!(mentions_tool("use the search tool", "search"));
        assert!(mentions_tool("call `search` first", "search"));
    }

    #[test]
    fn words() {
        assert!(contains_word("use send_email now", "send_email"));
        assert!(!contains_word("use send_emails now", "send_email"));
    }
}
