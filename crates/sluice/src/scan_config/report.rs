//! Scanning what the servers offered, and the text, JSON and SARIF reports.

use super::collect::{Collected, human};
use super::load::Format;
use serde_json::{Value, json};
use sluice_scan::{Reason, Report, ScanContext, Verdict, scan_definition, scan_instructions};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

/// What a finding is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ItemKind {
    Instructions,
    Tool,
    Prompt,
    Resource,
    ResourceTemplate,
}

impl ItemKind {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            ItemKind::Instructions => "instructions",
            ItemKind::Tool => "tool",
            ItemKind::Prompt => "prompt",
            ItemKind::Resource => "resource",
            ItemKind::ResourceTemplate => "resource-template",
        }
    }
}

/// One scanned thing: a tool definition, a prompt, a resource, the instructions.
#[derive(Debug)]
pub(super) struct Item {
    pub kind: ItemKind,
    pub name: String,
    pub report: Report,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Status {
    /// Everything was listed and scanned.
    Ok,
    /// Some lists failed; what was listed was scanned.
    Partial,
    /// Nothing could be read: invalid entry, did not start, timed out.
    Failed,
    /// Disabled in the config: not started.
    Skipped,
}

impl Status {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Partial => "partial",
            Status::Failed => "failed",
            Status::Skipped => "skipped",
        }
    }
}

/// Counts of what a server offered.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Counts {
    pub tools: usize,
    pub prompts: usize,
    pub resources: usize,
    pub resource_templates: usize,
}

/// One server's result.
#[derive(Debug)]
pub(super) struct ServerResult {
    pub name: String,
    pub origin: String,
    /// Line of the server's key in the config file (SARIF region).
    pub line: Option<usize>,
    pub transport: Option<String>,
    pub status: Status,
    pub skipped: Option<String>,
    pub errors: Vec<String>,
    pub items: Vec<Item>,
    pub counts: Counts,
    pub protocol_version: Option<String>,
    pub server_info: Option<Value>,
    pub elapsed: Option<Duration>,
}

impl ServerResult {
    pub(super) fn verdict(&self) -> Verdict {
        self.items
            .iter()
            .map(|i| i.report.verdict)
            .max()
            .unwrap_or(Verdict::Clean)
    }
}

/// The whole run.
#[derive(Debug)]
pub(super) struct Run {
    pub config: String,
    /// `None` when the file could not be read as any known format.
    pub format: Option<Format>,
    pub servers: Vec<ServerResult>,
}

impl Run {
    /// 2 malicious > 1 suspicious > 3 could not scan (a server failed, or a list) > 0 clean.
    pub(super) fn exit_code(&self) -> u8 {
        match self.servers.iter().map(ServerResult::verdict).max() {
            Some(Verdict::Malicious) => 2,
            Some(Verdict::Suspicious) => 1,
            _ if self
                .servers
                .iter()
                .any(|s| matches!(s.status, Status::Failed | Status::Partial)) =>
            {
                3
            }
            _ => 0,
        }
    }

    fn tally(&self) -> (usize, usize, usize, usize) {
        let mut t = (0, 0, 0, 0); // items, clean, suspicious, malicious
        for i in self.servers.iter().flat_map(|s| &s.items) {
            t.0 += 1;
            match i.report.verdict {
                Verdict::Clean => t.1 += 1,
                Verdict::Suspicious => t.2 += 1,
                Verdict::Malicious => t.3 += 1,
            }
        }
        t
    }

    fn status_count(&self, st: Status) -> usize {
        self.servers.iter().filter(|s| s.status == st).count()
    }
}

/// The collected offer of one server, before scanning.
pub(super) struct Pending {
    pub name: String,
    pub origin: String,
    pub line: Option<usize>,
    pub transport: Option<String>,
    pub skipped: Option<String>,
    /// `Err` when the entry was unusable.
    pub collected: Result<Collected, String>,
}

fn item_name(v: &Value, field: &str) -> String {
    match v.get(field) {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => "(unnamed)".into(),
    }
}

/// Scans everything collected. Shadowing checks see the other servers' tool and
/// server names.
pub(super) fn analyze(pending: Vec<Pending>) -> Vec<ServerResult> {
    // server display names and serverInfo names, and every server's tool names
    let mut names: Vec<BTreeSet<String>> = Vec::new();
    let mut tools: Vec<Vec<String>> = Vec::new();
    for p in &pending {
        let mut n = BTreeSet::from([p.name.clone()]);
        let mut t = Vec::new();
        if let Ok(Collected { offer: Some(o), .. }) = &p.collected {
            if let Some(Value::String(s)) = o.server_info.as_ref().and_then(|i| i.get("name")) {
                n.insert(s.clone());
            }
            t = o
                .tools
                .iter()
                .filter_map(|x| x.get("name").and_then(Value::as_str).map(String::from))
                .collect();
        }
        names.push(n);
        tools.push(t);
    }
    pending
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            let own: BTreeSet<&String> = names[i].iter().collect();
            let ctx = ScanContext {
                own_tools: tools[i].clone(),
                known_tools: tools
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .flat_map(|(_, t)| t.iter().cloned())
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect(),
                known_servers: names
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .flat_map(|(_, n)| n.iter())
                    .filter(|n| !own.contains(n))
                    .cloned()
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect(),
            };
            let mut r = ServerResult {
                name: p.name,
                origin: p.origin,
                line: p.line,
                transport: p.transport,
                status: Status::Ok,
                skipped: p.skipped.clone(),
                errors: Vec::new(),
                items: Vec::new(),
                counts: Counts::default(),
                protocol_version: None,
                server_info: None,
                elapsed: None,
            };
            if p.skipped.is_some() {
                r.status = Status::Skipped;
                return r;
            }
            let c = match p.collected {
                Ok(c) => c,
                Err(e) => {
                    r.status = Status::Failed;
                    r.errors.push(e);
                    return r;
                }
            };
            r.elapsed = Some(c.elapsed);
            r.errors = c.errors;
            let Some(o) = c.offer else {
                r.status = Status::Failed;
                return r;
            };
            if !r.errors.is_empty() {
                r.status = Status::Partial;
            }
            r.protocol_version = o.protocol_version;
            r.server_info = o.server_info;
            r.counts = Counts {
                tools: o.tools.len(),
                prompts: o.prompts.len(),
                resources: o.resources.len(),
                resource_templates: o.resource_templates.len(),
            };
            if let Some(text) = o.instructions.as_deref().filter(|t| !t.trim().is_empty()) {
                r.items.push(Item {
                    kind: ItemKind::Instructions,
                    name: "instructions".into(),
                    report: scan_instructions(text, &ctx),
                });
            }
            for t in &o.tools {
                r.items.push(Item {
                    kind: ItemKind::Tool,
                    name: item_name(t, "name"),
                    report: scan_definition(t, &ctx),
                });
            }
            for p in &o.prompts {
                let mut texts = texts_of(p, "");
                if let Some(Value::Array(args)) = p.get("arguments") {
                    for a in args {
                        let n = item_name(a, "name");
                        texts.extend(texts_of(a, &format!("arguments.{n}.")));
                    }
                }
                r.items.push(Item {
                    kind: ItemKind::Prompt,
                    name: item_name(p, "name"),
                    report: scan_texts(&texts, &ctx),
                });
            }
            for (kind, list, id) in [
                (ItemKind::Resource, &o.resources, "uri"),
                (
                    ItemKind::ResourceTemplate,
                    &o.resource_templates,
                    "uriTemplate",
                ),
            ] {
                for x in list {
                    let name = match x.get("name").and_then(Value::as_str) {
                        Some(n) => n.to_string(),
                        None => item_name(x, id),
                    };
                    r.items.push(Item {
                        kind,
                        name,
                        report: scan_texts(&texts_of(x, ""), &ctx),
                    });
                }
            }
            r
        })
        .collect()
}

/// The model-visible texts of a prompt, prompt argument, resource or template.
fn texts_of(v: &Value, prefix: &str) -> Vec<(String, String)> {
    ["title", "description"]
        .iter()
        .filter_map(|f| match v.get(*f) {
            Some(Value::String(s)) if !s.trim().is_empty() => {
                Some((format!("{prefix}{f}"), s.clone()))
            }
            _ => None,
        })
        .collect()
}

/// Scans each text as instructions-like prose; the item's report is the strongest,
/// with every reason relabelled to where its text came from.
fn scan_texts(texts: &[(String, String)], ctx: &ScanContext) -> Report {
    let mut verdict = Verdict::Clean;
    let mut score: f64 = 0.0;
    let mut reasons: Vec<Reason> = Vec::new();
    for (loc, text) in texts {
        let rep = scan_instructions(text, ctx);
        verdict = verdict.max(rep.verdict);
        score = score.max(rep.score);
        for mut reason in rep.reasons {
            reason.location = match reason.location.strip_prefix("instructions") {
                Some(rest) => format!("{loc}{rest}"),
                None => format!("{loc}: {}", reason.location),
            };
            reasons.push(reason);
        }
    }
    reasons.sort_by(|a, b| b.weight.total_cmp(&a.weight));
    Report {
        verdict,
        score,
        reasons,
    }
}

// ---------------------------------------------------------------------------------
// Text
// ---------------------------------------------------------------------------------

/// Server-controlled text made safe for a terminal: control, bidi and invisible
/// characters shown as escapes, one line, at most `max` characters.
pub(super) fn safe(s: &str, max: usize) -> String {
    let mut out = String::new();
    for (n, c) in s.chars().enumerate() {
        if n >= max {
            out.push('…');
            break;
        }
        match c {
            '\n' | '\r' | '\t' => out.push(' '),
            c if c.is_control()
                || matches!(c as u32, 0x200B..=0x200F | 0x202A..=0x202E | 0x2060..=0x206F | 0xFEFF | 0xE0000..=0xE007F) =>
            {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

struct Paint(bool);

impl Paint {
    fn verdict(&self, v: Verdict) -> String {
        let (code, word) = match v {
            Verdict::Malicious => ("1;31", "MALICIOUS"),
            Verdict::Suspicious => ("1;33", "SUSPICIOUS"),
            Verdict::Clean => ("32", "clean"),
        };
        self.wrap(code, word)
    }
    fn wrap(&self, code: &str, s: &str) -> String {
        if self.0 {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }
}

pub(super) fn text(run: &Run, color: bool) -> String {
    let p = Paint(color);
    let mut o = String::new();
    let _ = writeln!(
        o,
        "sluice scan: {} ({}), {} server(s), rules {}",
        run.config,
        run.format.map_or("unknown format", Format::label),
        run.servers.len(),
        sluice_scan::rules_version()
    );
    for s in &run.servers {
        let _ = writeln!(o);
        let status = match s.status {
            Status::Ok => p.wrap("32", "ok"),
            Status::Partial => p.wrap("1;33", "INCOMPLETE"),
            Status::Failed => p.wrap("1;31", "FAILED"),
            Status::Skipped => "skipped".into(),
        };
        let mut head = format!("{}  {status}", safe(&s.name, 80));
        if let Some(t) = &s.transport {
            let _ = write!(head, "  ({})", safe(t, 100));
        }
        let _ = writeln!(o, "{head}");
        if let Some(why) = &s.skipped {
            let _ = writeln!(o, "  {why}");
        }
        if matches!(s.status, Status::Ok | Status::Partial) {
            let c = s.counts;
            let flagged = s
                .items
                .iter()
                .filter(|i| i.report.verdict != Verdict::Clean)
                .count();
            let mut line = format!(
                "  {} tool(s), {} prompt(s), {} resource(s), {} template(s)",
                c.tools, c.prompts, c.resources, c.resource_templates
            );
            if let Some(e) = s.elapsed {
                let _ = write!(line, " in {}", human_short(e));
            }
            let _ = write!(
                line,
                ": {}",
                if flagged == 0 {
                    p.verdict(Verdict::Clean)
                } else {
                    format!("{flagged} finding(s)")
                }
            );
            let _ = writeln!(o, "{line}");
        }
        for e in &s.errors {
            let _ = writeln!(o, "  error: {}", safe(e, 600));
        }
        let mut flagged: Vec<&Item> = s
            .items
            .iter()
            .filter(|i| i.report.verdict != Verdict::Clean)
            .collect();
        flagged.sort_by(|a, b| {
            b.report
                .verdict
                .cmp(&a.report.verdict)
                .then(b.report.score.total_cmp(&a.report.score))
        });
        for i in flagged {
            let _ = writeln!(
                o,
                "  {} {} `{}` (score {:.2})",
                p.verdict(i.report.verdict),
                i.kind.as_str(),
                safe(&i.name, 80),
                i.report.score
            );
            let width = i
                .report
                .reasons
                .iter()
                .map(|r| r.rule.len())
                .max()
                .unwrap_or(0);
            for r in &i.report.reasons {
                let _ = writeln!(o, "      {:width$}  {}", r.rule, safe(&r.evidence(), 160));
            }
        }
    }
    let (items, clean, suspicious, malicious) = run.tally();
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "{} server(s): {} scanned, {} incomplete, {} failed, {} skipped; {} item(s): {} malicious, {} suspicious, {} clean; exit {}",
        run.servers.len(),
        run.status_count(Status::Ok),
        run.status_count(Status::Partial),
        run.status_count(Status::Failed),
        run.status_count(Status::Skipped),
        items,
        malicious,
        suspicious,
        clean,
        run.exit_code()
    );
    o
}

pub(super) fn human_short(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else {
        human(Duration::from_millis(d.as_millis() as u64 / 100 * 100))
    }
}

// ---------------------------------------------------------------------------------
// JSON
// ---------------------------------------------------------------------------------

fn reason_json(r: &Reason) -> Value {
    json!({
        "rule": r.rule,
        "severity": r.severity.as_str(),
        "location": r.location,
        "evidence": r.evidence(),
    })
}

pub(super) fn json(run: &Run) -> Value {
    let (items, clean, suspicious, malicious) = run.tally();
    let servers: Vec<Value> = run
        .servers
        .iter()
        .map(|s| {
            json!({
                "name": s.name,
                "origin": s.origin,
                "transport": s.transport,
                "status": s.status.as_str(),
                "skipped": s.skipped,
                "verdict": s.verdict().as_str(),
                "protocol_version": s.protocol_version,
                "server_info": s.server_info,
                "elapsed_ms": s.elapsed.map(|d| d.as_millis() as u64),
                "counts": {
                    "tools": s.counts.tools,
                    "prompts": s.counts.prompts,
                    "resources": s.counts.resources,
                    "resource_templates": s.counts.resource_templates,
                },
                "items": s.items.iter().map(|i| json!({
                    "kind": i.kind.as_str(),
                    "name": i.name,
                    "verdict": i.report.verdict.as_str(),
                    "score": i.report.score,
                    "reasons": i.report.reasons.iter().map(reason_json).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
                "errors": s.errors,
            })
        })
        .collect();
    let errors: Vec<Value> = run
        .servers
        .iter()
        .flat_map(|s| {
            s.errors
                .iter()
                .map(|e| json!({"server": s.name, "error": e}))
        })
        .collect();
    json!({
        "tool": "sluice-scan",
        "version": env!("CARGO_PKG_VERSION"),
        "rules_version": sluice_scan::rules_version(),
        "config": run.config,
        "format": run.format.map(Format::id),
        "verdict": run.servers.iter().map(ServerResult::verdict).max().unwrap_or(Verdict::Clean).as_str(),
        "exit_code": run.exit_code(),
        "summary": {
            "servers": run.servers.len(),
            "scanned": run.status_count(Status::Ok),
            "incomplete": run.status_count(Status::Partial),
            "failed": run.status_count(Status::Failed),
            "skipped": run.status_count(Status::Skipped),
            "items": items,
            "clean": clean,
            "suspicious": suspicious,
            "malicious": malicious,
        },
        "servers": servers,
        "errors": errors,
    })
}

// ---------------------------------------------------------------------------------
// SARIF 2.1.0
// ---------------------------------------------------------------------------------

fn level_of_severity(s: sluice_scan::Severity) -> &'static str {
    use sluice_scan::Severity::*;
    match s {
        Critical | High => "error",
        Medium | Low => "warning",
        Info => "note",
    }
}

/// `server/tool` for tools, `server/<kind>:<name>` for the rest.
fn logical_name(server: &str, i: &Item) -> String {
    match i.kind {
        ItemKind::Tool => format!("{server}/{}", i.name),
        ItemKind::Instructions => format!("{server}/instructions"),
        k => format!("{server}/{}:{}", k.as_str(), i.name),
    }
}

pub(super) fn sarif(run: &Run) -> Value {
    let ruleset = sluice_scan::Scanner::builtin().ruleset();
    let mut rule_ids: BTreeMap<String, usize> = BTreeMap::new();
    let flagged = || {
        run.servers.iter().flat_map(|s| {
            s.items
                .iter()
                .filter(|i| i.report.verdict != Verdict::Clean)
                .map(move |i| (s, i))
        })
    };
    for (_, i) in flagged() {
        for r in &i.report.reasons {
            let n = rule_ids.len();
            rule_ids.entry(r.rule.clone()).or_insert(n);
        }
    }
    let mut ordered: Vec<(&String, &usize)> = rule_ids.iter().collect();
    ordered.sort_by_key(|(_, n)| **n);
    let rules: Vec<Value> = ordered
        .iter()
        .map(|(id, _)| {
            let rule = ruleset.rule(id);
            let text = rule
                .map(|r| r.description.clone())
                .unwrap_or_else(|| id.to_string());
            let mut v = json!({
                "id": id,
                "name": id,
                "shortDescription": {"text": text},
                "fullDescription": {"text": text},
            });
            if let Some(r) = rule {
                v["defaultConfiguration"] = json!({"level": level_of_severity(r.severity)});
                v["properties"] = json!({
                    "severity": r.severity.as_str(),
                    "weight": r.weight,
                    "tags": ["security", "mcp", "tool-poisoning"],
                });
            }
            v
        })
        .collect();
    let mut results = Vec::new();
    for (s, i) in flagged() {
        let level = match i.report.verdict {
            Verdict::Malicious => "error",
            _ => "warning",
        };
        let fq = logical_name(&s.name, i);
        let mut seen = BTreeSet::new();
        for r in &i.report.reasons {
            if !seen.insert(r.rule.as_str()) {
                continue;
            }
            let evidence: Vec<String> = i
                .report
                .reasons
                .iter()
                .filter(|x| x.rule == r.rule)
                .map(|x| x.evidence())
                .collect();
            let mut physical = json!({"artifactLocation": {"uri": artifact_uri(&run.config)}});
            if let Some(line) = s.line {
                physical["region"] = json!({"startLine": line});
            }
            results.push(json!({
                "ruleId": r.rule,
                "ruleIndex": rule_ids[&r.rule],
                "level": level,
                "message": {"text": format!(
                    "{} `{}` of server `{}` is {} (score {:.2}); {}: {}",
                    i.kind.as_str(), i.name, s.name, i.report.verdict, i.report.score, r.rule, evidence.join(" | ")
                )},
                "locations": [{
                    "physicalLocation": physical,
                    "logicalLocations": [{
                        "name": i.name,
                        "fullyQualifiedName": fq,
                        "kind": if i.kind == ItemKind::Tool { "function" } else { "member" },
                    }],
                }],
                "partialFingerprints": {"sluiceItem/v1": format!("{fq}#{}", r.rule)},
                "properties": {
                    "server": s.name,
                    "itemKind": i.kind.as_str(),
                    "verdict": i.report.verdict.as_str(),
                    "score": i.report.score,
                },
            }));
        }
    }
    let notifications: Vec<Value> = run
        .servers
        .iter()
        .flat_map(|s| {
            s.errors.iter().map(move |e| {
                json!({
                    "level": "error",
                    "message": {"text": format!("server `{}`: {e}", s.name)},
                    "locations": [{"logicalLocations": [{"name": s.name, "kind": "module"}]}],
                })
            })
        })
        .collect();
    json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "sluice-scan",
                "version": env!("CARGO_PKG_VERSION"),
                "semanticVersion": env!("CARGO_PKG_VERSION"),
                "rules": rules,
                "properties": {"rulesVersion": sluice_scan::rules_version()},
            }},
            "invocations": [{
                "executionSuccessful": !run.servers.iter().any(|s| matches!(s.status, Status::Failed | Status::Partial)),
                "toolExecutionNotifications": notifications,
                "exitCode": run.exit_code(),
            }],
            "artifacts": [{"location": {"uri": artifact_uri(&run.config)}}],
            "results": results,
        }],
    })
}

/// The config path as a SARIF URI reference (relative paths stay relative).
fn artifact_uri(path: &str) -> String {
    let p = Path::new(path);
    let s = p.to_string_lossy().replace('\\', "/");
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => {
                out.push(b as char)
            }
            b => {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    if p.is_absolute() {
        format!("file://{out}")
    } else {
        out
    }
}
