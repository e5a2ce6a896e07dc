//! Every rule of the embedded rules file fires on each of its positive examples and on
//! none of its negative ones.

use serde_json::{Value, json};
use sluice_scan::{Report, ScanContext, Scanner, Scope};

fn context() -> ScanContext {
    ScanContext {
        known_tools: vec!["send_email".into(), "search_repositories".into()],
        known_servers: vec!["github".into()],
        own_tools: Vec::new(),
    }
}

fn scan(scope: Scope, example: &str) -> Report {
    let scanner = Scanner::builtin();
    let ctx = context();
    match scope {
        Scope::Definition => {
            // a JSON object with a name or a description is a whole definition
            let tool: Value = match serde_json::from_str::<Value>(example) {
                Ok(v) if v.get("name").is_some() || v.get("description").is_some() => v,
                _ => json!({"name": "example_tool", "description": example}),
            };
            scanner.scan_definition(&tool, &ctx)
        }
        Scope::Instructions => scanner.scan_instructions(example, &ctx),
        Scope::Output => scanner.scan_output(example, &ctx),
    }
}

#[test]
fn every_rule_has_examples_that_behave() {
    let scanner = Scanner::builtin();
    let mut failures = Vec::new();
    for rule in &scanner.ruleset().rules {
        assert!(
            !rule.examples.positive.is_empty(),
            "{} has no positive example",
            rule.id
        );
        assert!(
            !rule.examples.negative.is_empty(),
            "{} has no negative example",
            rule.id
        );
        let scope = [Scope::Definition, Scope::Output, Scope::Instructions]
            .into_iter()
            .find(|s| rule.applies_to(*s))
            .expect("a rule applies somewhere");
        for ex in &rule.examples.positive {
            let r = scan(scope, ex);
            if !r.has_rule(&rule.id) {
                failures.push(format!(
                    "{}: positive example did not fire: {ex:?} -> {}",
                    rule.id,
                    r.summary()
                ));
            }
        }
        for ex in &rule.examples.negative {
            let r = scan(scope, ex);
            if r.has_rule(&rule.id) {
                failures.push(format!(
                    "{}: negative example fired: {ex:?} -> {:?}",
                    rule.id,
                    r.reasons
                        .iter()
                        .find(|x| x.rule == rule.id)
                        .map(|x| x.evidence())
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failure(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn embedded_rules_load_and_are_versioned() {
    let rs = Scanner::builtin().ruleset();
    assert!(!rs.version.is_empty());
    assert!(rs.rules.len() >= 20);
    assert!(rs.thresholds.suspicious < rs.thresholds.malicious);
}

#[test]
fn every_rule_is_documented() {
    let doc = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/scanning.md");
    let text = std::fs::read_to_string(&doc).unwrap_or_else(|e| panic!("{}: {e}", doc.display()));
    let missing: Vec<&str> = Scanner::builtin()
        .ruleset()
        .rules
        .iter()
        .map(|r| r.id.as_str())
        .filter(|id| !text.contains(&format!("`{id}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "rules missing from docs/scanning.md: {missing:?}"
    );
}
