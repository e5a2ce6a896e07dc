//! Measuring the detector on the labelled development set
//! (`shared/datasets/poisoning-dev/`): recall on the malicious sets, false-positive rate
//! on the benign set, and the committed baseline they must not regress below.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::jsonl::{scan_definition_record, scan_output_record};
use crate::scan::{ScanContext, Scanner, Verdict};

/// Errors of the evaluation.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// The dataset folder does not exist.
    #[error(
        "poisoning-dev dataset not found at {0}: it lives in shared/datasets/poisoning-dev/ next to the repository (set SLUICE_POISONING_DEV to another folder)"
    )]
    Missing(PathBuf),
    /// A set's file could not be read.
    #[error("{file}: {error}")]
    Read {
        /// The file.
        file: PathBuf,
        /// Why reading it failed.
        error: std::io::Error,
    },
    /// A line of a set's file is not valid JSON.
    #[error("{file} line {line}: {error}")]
    Parse {
        /// The file.
        file: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The JSON parser's message.
        error: String,
    },
}

/// File of the dataset: tool definitions labelled malicious (recall is measured on them).
pub const MALICIOUS_DESCRIPTIONS: &str = "malicious_tool_descriptions.jsonl";
/// File of the dataset: benign tool definitions (the false-positive rate is measured on them).
pub const BENIGN_DESCRIPTIONS: &str = "benign_tool_descriptions.jsonl";
/// File of the dataset: tool outputs labelled malicious.
pub const MALICIOUS_OUTPUTS: &str = "malicious_tool_outputs.jsonl";
/// File of the dataset: rug-pull cases (definitions that change after approval); counted only.
pub const RUG_PULLS: &str = "rug_pull_cases.jsonl";

/// Where the development set is: `$SLUICE_POISONING_DEV`, else
/// `<repo>/../shared/datasets/poisoning-dev` as seen from this crate's sources.
pub fn default_dataset_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("SLUICE_POISONING_DEV") {
        return PathBuf::from(p);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/datasets/poisoning-dev")
}

/// Counts on one labelled set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Items scanned.
    pub total: usize,
    /// Items judged malicious.
    pub malicious: usize,
    /// Items judged suspicious.
    pub suspicious: usize,
}

impl Counts {
    fn add(&mut self, v: Verdict) {
        self.total += 1;
        match v {
            Verdict::Malicious => self.malicious += 1,
            Verdict::Suspicious => self.suspicious += 1,
            Verdict::Clean => {}
        }
    }
    /// Items judged clean.
    pub fn clean(&self) -> usize {
        self.total - self.malicious - self.suspicious
    }
    /// Share judged malicious.
    pub fn malicious_rate(&self) -> f64 {
        ratio(self.malicious, self.total)
    }
    /// Share judged suspicious or malicious.
    pub fn flagged_rate(&self) -> f64 {
        ratio(self.malicious + self.suspicious, self.total)
    }
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// The verdict on one item of the set.
#[derive(Debug, Clone, Serialize)]
pub struct ItemResult {
    /// The set it belongs to, e.g. `malicious_descriptions`.
    pub set: &'static str,
    /// The item's `id` in the dataset.
    pub id: String,
    /// Its `attack_category` (benign descriptions: its `server`).
    pub category: String,
    /// The detector's verdict.
    pub verdict: Verdict,
    /// The detector's score.
    pub score: f64,
    /// Ids of the rules that fired, strongest first.
    pub rules: Vec<String>,
}

/// Results on the whole development set.
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    /// Version of the rule set measured.
    pub rules_version: String,
    /// Whether [`EvalOptions::peer_names`] was on.
    pub peer_names: bool,
    /// Verdicts on [`MALICIOUS_DESCRIPTIONS`].
    pub malicious_descriptions: Counts,
    /// Verdicts on [`BENIGN_DESCRIPTIONS`].
    pub benign_descriptions: Counts,
    /// Verdicts on [`MALICIOUS_OUTPUTS`].
    pub malicious_outputs: Counts,
    /// Records in [`RUG_PULLS`].
    pub rug_pull_cases: usize,
    /// Malicious descriptions per attack category.
    pub by_category: BTreeMap<String, Counts>,
    /// Every item's verdict, set by set.
    pub items: Vec<ItemResult>,
}

/// Options of the evaluation.
#[derive(Debug, Clone, Copy, Default)]
pub struct EvalOptions {
    /// Give each description the names of the other tools of its own file as known
    /// tools of other servers (see [`crate::JsonlOptions::peer_names`]).
    pub peer_names: bool,
}

fn read_jsonl(dir: &Path, name: &str) -> Result<Vec<Value>, EvalError> {
    let file = dir.join(name);
    let text = std::fs::read_to_string(&file).map_err(|error| EvalError::Read {
        file: file.clone(),
        error,
    })?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| EvalError::Parse {
                file: file.clone(),
                line: i + 1,
                error: e.to_string(),
            })
        })
        .collect()
}

fn names(records: &[Value]) -> Vec<String> {
    let mut n: Vec<String> = records
        .iter()
        .filter_map(|r| {
            r.get("tool_name")
                .or_else(|| r.get("name"))
                .and_then(Value::as_str)
        })
        .map(str::to_string)
        .collect();
    n.sort();
    n.dedup();
    n
}

fn str_field(v: &Value, k: &str) -> String {
    v.get(k)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// Scan every item of the development set in `dir`.
pub fn evaluate_dataset(dir: &Path, opts: EvalOptions) -> Result<EvalReport, EvalError> {
    if !dir.is_dir() {
        return Err(EvalError::Missing(dir.to_path_buf()));
    }
    let mal = read_jsonl(dir, MALICIOUS_DESCRIPTIONS)?;
    let ben = read_jsonl(dir, BENIGN_DESCRIPTIONS)?;
    let outs = read_jsonl(dir, MALICIOUS_OUTPUTS)?;
    let rugs = read_jsonl(dir, RUG_PULLS)?;

    let mut report = EvalReport {
        rules_version: Scanner::builtin().ruleset().version.clone(),
        peer_names: opts.peer_names,
        malicious_descriptions: Counts::default(),
        benign_descriptions: Counts::default(),
        malicious_outputs: Counts::default(),
        rug_pull_cases: rugs.len(),
        by_category: BTreeMap::new(),
        items: Vec::new(),
    };

    for (set, records) in [
        ("malicious_descriptions", &mal),
        ("benign_descriptions", &ben),
    ] {
        let peers = if opts.peer_names {
            names(records)
        } else {
            Vec::new()
        };
        for r in records.iter() {
            let me = str_field(r, "tool_name");
            let ctx = ScanContext {
                known_tools: peers.iter().filter(|p| **p != me).cloned().collect(),
                ..ScanContext::default()
            };
            let rep = scan_definition_record(r, &ctx);
            let category = str_field(r, "attack_category");
            if set == "malicious_descriptions" {
                report.malicious_descriptions.add(rep.verdict);
                report
                    .by_category
                    .entry(category.clone())
                    .or_default()
                    .add(rep.verdict);
            } else {
                report.benign_descriptions.add(rep.verdict);
            }
            report.items.push(ItemResult {
                set,
                id: str_field(r, "id"),
                category: if category.is_empty() {
                    str_field(r, "server")
                } else {
                    category
                },
                verdict: rep.verdict,
                score: rep.score,
                rules: rep.reasons.iter().map(|x| x.rule.clone()).collect(),
            });
        }
    }
    for r in &outs {
        let rep = scan_output_record(r, &ScanContext::default());
        report.malicious_outputs.add(rep.verdict);
        report.items.push(ItemResult {
            set: "malicious_outputs",
            id: str_field(r, "id"),
            category: str_field(r, "attack_category"),
            verdict: rep.verdict,
            score: rep.score,
            rules: rep.reasons.iter().map(|x| x.rule.clone()).collect(),
        });
    }
    Ok(report)
}

fn pct(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

impl EvalReport {
    /// The table printed by the harness and by `sluice scan --eval`.
    pub fn table(&self) -> String {
        let mut t = String::new();
        let _ = writeln!(
            t,
            "sluice-scan rules {} on poisoning-dev{}",
            self.rules_version,
            if self.peer_names {
                " (peer names as known tools)"
            } else {
                ""
            }
        );
        let _ = writeln!(
            t,
            "{:<26} {:>5} {:>10} {:>11} {:>6}  metric",
            "set", "n", "malicious", "suspicious", "clean"
        );
        let row = |t: &mut String, name: &str, c: &Counts, metric: String| {
            let _ = writeln!(
                t,
                "{:<26} {:>5} {:>10} {:>11} {:>6}  {}",
                name,
                c.total,
                c.malicious,
                c.suspicious,
                c.clean(),
                metric
            );
        };
        let m = &self.malicious_descriptions;
        row(
            &mut t,
            "malicious descriptions",
            m,
            format!(
                "recall {} (suspicious or worse {})",
                pct(m.malicious_rate()),
                pct(m.flagged_rate())
            ),
        );
        let b = &self.benign_descriptions;
        row(
            &mut t,
            "benign descriptions",
            b,
            format!(
                "FPR {} (suspicious or worse {})",
                pct(b.malicious_rate()),
                pct(b.flagged_rate())
            ),
        );
        let o = &self.malicious_outputs;
        row(
            &mut t,
            "malicious outputs",
            o,
            format!(
                "recall {} (suspicious or worse {})",
                pct(o.malicious_rate()),
                pct(o.flagged_rate())
            ),
        );
        let _ = writeln!(
            t,
            "{:<26} {:>5}  not scannable: the implementation changes, the definition does not (pinning sees only definition changes)",
            "rug-pull cases", self.rug_pull_cases
        );
        let _ = writeln!(t, "malicious descriptions by attack category:");
        for (cat, c) in &self.by_category {
            let _ = writeln!(
                t,
                "  {:<46} {:>3}/{:<3} malicious, {:>2} suspicious",
                cat, c.malicious, c.total, c.suspicious
            );
        }
        t
    }

    /// The figures that the baseline pins.
    pub fn baseline(&self) -> Baseline {
        Baseline {
            rules_version: self.rules_version.clone(),
            malicious_descriptions: self.malicious_descriptions,
            benign_descriptions: self.benign_descriptions,
            malicious_outputs: self.malicious_outputs,
        }
    }
}

/// The committed baseline (`crates/sluice-scan/baseline.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    /// Version of the rule set the baseline was taken with.
    pub rules_version: String,
    /// Counts on [`MALICIOUS_DESCRIPTIONS`] then.
    pub malicious_descriptions: Counts,
    /// Counts on [`BENIGN_DESCRIPTIONS`] then.
    pub benign_descriptions: Counts,
    /// Counts on [`MALICIOUS_OUTPUTS`] then.
    pub malicious_outputs: Counts,
}

impl Baseline {
    /// Regressions of `current` against this baseline: recall (malicious verdicts) on
    /// the malicious sets must not drop, the false-positive rate on the benign set must
    /// not rise, neither counted as malicious nor as suspicious-or-worse.
    pub fn regressions(&self, current: &Baseline) -> Vec<String> {
        let mut out = Vec::new();
        for (name, base, cur) in [
            (
                "malicious descriptions",
                &self.malicious_descriptions,
                &current.malicious_descriptions,
            ),
            (
                "malicious outputs",
                &self.malicious_outputs,
                &current.malicious_outputs,
            ),
        ] {
            if cur.malicious_rate() + 1e-9 < base.malicious_rate() {
                out.push(format!(
                    "{name}: recall {} < baseline {}",
                    pct(cur.malicious_rate()),
                    pct(base.malicious_rate())
                ));
            }
            if cur.flagged_rate() + 1e-9 < base.flagged_rate() {
                out.push(format!(
                    "{name}: suspicious-or-worse {} < baseline {}",
                    pct(cur.flagged_rate()),
                    pct(base.flagged_rate())
                ));
            }
        }
        let (b, c) = (&self.benign_descriptions, &current.benign_descriptions);
        if c.malicious_rate() > b.malicious_rate() + 1e-9 {
            out.push(format!(
                "benign descriptions: FPR {} > baseline {}",
                pct(c.malicious_rate()),
                pct(b.malicious_rate())
            ));
        }
        if c.flagged_rate() > b.flagged_rate() + 1e-9 {
            out.push(format!(
                "benign descriptions: suspicious-or-worse {} > baseline {}",
                pct(c.flagged_rate()),
                pct(b.flagged_rate())
            ));
        }
        out
    }
}
