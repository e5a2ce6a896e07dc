//! Property tests of config loading (`Config::parse`): whatever the text,
//! loading never panics, and every problem it reports names either a config
//! key or a position in the text that exists. A valid config with one value
//! changed is reported at that value's key (or its section, for checks that
//! tie keys together), and an error never shows what `${VAR}` resolved to.
//!
//! Cases are bounded so each property takes about a second in a debug build.

use proptest::prelude::*;
use proptest::test_runner::Config as Runner;
use sluice_config::{Config, ConfigError};

/// A run of `cases` with no regression files written into the source tree:
/// a case that fails is kept as a unit test instead.
fn cases(cases: u32) -> Runner {
    Runner {
        cases,
        failure_persistence: None,
        ..Runner::default()
    }
}

const STATE_KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef";
const TOKEN: &str = "t0k3n-never-shown";

/// The environment the configs read: two variables, one of them a secret.
fn env(k: &str) -> Option<String> {
    match k {
        "STATE_KEY" => Some(STATE_KEY.to_string()),
        "TOKEN" => Some(TOKEN.to_string()),
        _ => None,
    }
}

/// A valid config that sets (nearly) every key, one line each.
const BASE: &str = r#"[listen]
addr = "127.0.0.1:8080"
allowed_origins = ["https://app.example.com"]
allowed_hosts = ["gw.example.com"]
max_body_bytes = 1048576
[gateway]
page_size = 100
request_timeout = "30s"
health_tool = true
state_key = "${STATE_KEY}"
[health]
interval = "15s"
timeout = "5s"
[sessions]
store = "sqlite"
sqlite_path = "sessions.db"
idle_timeout = "30m"
max_sessions = 1000
replay_events = 256
replay_max_age = "5m"
max_streams = 100
max_streams_per_session = 8
[defence]
pins_path = "pins.db"
scan_outputs = true
[audit]
enabled = true
path = "audit.jsonl"
arguments = "redacted"
redact_keys = ["ssn"]
max_argument_bytes = 4096
[[servers]]
name = "local"
command = "npx"
args = ["-y", "server", "${TOKEN}"]
env = { API_TOKEN = "${TOKEN}" }
timeout = "10s"
tool_timeouts = { build = "10m" }
retries = 2
idempotent_tools = ["read_*"]
max_calls = 100
max_lifetime = "1h"
max_output_tokens = 1000
tool_max_output_tokens = { big = 5000 }
max_binary_bytes = 100000
isolation = "shared"
scan = "block"
pinning = true
trusted = false
approval = "never"
tool_approval = { rm = "always" }
[servers.circuit_breaker]
consecutive_failures = 5
failure_rate = 0.5
window = "60s"
min_calls = 10
open_for = "30s"
[[servers]]
name = "remote"
prefix = "rm"
url = "https://mcp.example.com/mcp?key=${TOKEN}"
transport = "streamable-http"
headers = { Authorization = "Bearer ${TOKEN}" }
"#;

const SECTIONS: [&str; 7] = [
    "listen", "gateway", "health", "sessions", "defence", "audit", "servers",
];

/// The position a TOML error names (`line L, column C`), if `key` is one.
fn position(key: &str) -> Option<(usize, usize)> {
    let (line, column) = key.strip_prefix("line ")?.split_once(", column ")?;
    Some((line.parse().ok()?, column.parse().ok()?))
}

/// Every problem names a key of a known section or a position inside
/// `text`, says something, and shows no secret.
fn check_problems(text: &str, err: &ConfigError) -> Result<(), TestCaseError> {
    prop_assert!(!err.problems.is_empty());
    for p in &err.problems {
        prop_assert!(!p.message.trim().is_empty(), "{:?}", p);
        if let Some((line, column)) = position(&p.key) {
            let lines: Vec<&str> = text.split('\n').collect();
            prop_assert!(line >= 1 && line <= lines.len(), "{:?} in {:?}", p, text);
            prop_assert!(
                column >= 1 && column <= lines[line - 1].chars().count() + 1,
                "{:?} in {:?}",
                p,
                text
            );
        } else {
            let section = p.key.split(['.', '[']).next().unwrap_or("");
            prop_assert!(
                SECTIONS.contains(&section) && p.key.len() > section.len(),
                "{:?} names neither a key nor a position",
                p
            );
        }
    }
    let shown = err.to_string();
    prop_assert!(
        !shown.contains(TOKEN),
        "a resolved secret is shown: {}",
        shown
    );
    prop_assert!(
        !shown.contains(STATE_KEY),
        "the state key is shown: {}",
        shown
    );
    Ok(())
}

/// Parses `text`: never panics (the proptest runner would report it), and
/// any error passes [`check_problems`].
fn check_any(text: &str) -> Result<Result<Config, ConfigError>, TestCaseError> {
    let r = Config::parse(text, &env);
    if let Err(e) = &r {
        check_problems(text, e)?;
    }
    Ok(r)
}

/// A value as it may appear after `=`: valid TOML of every type, values
/// the validation must refuse, and text that is not TOML at all.
fn value() -> impl Strategy<Value = String> {
    let fixed = prop::sample::select(vec![
        "\"\"",
        "\"0s\"",
        "\"-5s\"",
        "\"1y\"",
        "\"5 parsecs\"",
        "\"99999999999999999999h\"",
        "\"${NOPE}\"",
        "\"${TOKEN}\"",
        "\"${\"",
        "\"${TOKEN:-x}\"",
        "\"${NOPE:-x}\"",
        "\"memory\"",
        "\"redis\"",
        "\"per-session\"",
        "\"sse\"",
        "\"always\"",
        "\"*\"",
        "\"a__b\"",
        "\"sluice\"",
        "\"http://x\"",
        "\"redis://h\"",
        "\"postgres://u:p@h/db\"",
        "0",
        "-1",
        "1",
        "11",
        "9223372036854775807",
        "-9223372036854775808",
        "0.0",
        "-0.0",
        "1.5",
        "nan",
        "inf",
        "-inf",
        "true",
        "false",
        "[]",
        "[1, \"a\"]",
        "[\"${TOKEN}\"]",
        "{}",
        "{ a = \"b\" }",
        "{ a = 1 }",
        "1979-05-27T07:32:00Z",
        "'literal'",
        "\"\"\"multi\nline\"\"\"",
        "\"open",
        "[",
        "{",
        "=",
        "",
        "# comment",
    ])
    .prop_map(str::to_string);
    prop_oneof![
        6 => fixed,
        1 => any::<i64>().prop_map(|n| n.to_string()),
        1 => any::<f64>().prop_map(|f| format!("{f:?}")),
        1 => any::<String>().prop_map(|s| basic_string(&s)),
    ]
}

/// `s` as a TOML basic string (`"..."`, escaped as TOML requires).
fn basic_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// One change to a config's lines.
#[derive(Debug, Clone)]
enum Mutation {
    /// The value of line `.0` (a `key = value` line) becomes `.1`.
    Value(usize, String),
    Delete(usize),
    Duplicate(usize),
    Swap(usize, usize),
    /// A line `key = value` inserted before line `.0`.
    Insert(usize, String, String),
    /// A character inserted at char index `.0` of the whole text.
    Char(usize, char),
    /// The text cut at char index `.0`.
    Truncate(usize),
}

fn key() -> impl Strategy<Value = String> {
    let known = prop::sample::select(vec![
        "addr",
        "name",
        "command",
        "url",
        "timeout",
        "store",
        "redis_url",
        "sqlite_path",
        "prefix",
        "transport",
        "args",
        "env",
        "headers",
        "max_calls",
        "pins_url",
        "hmac_key",
        "state_key",
        "interval",
        "isolation",
        "open_for",
        "adress",
        "servers",
        "listen.addr",
        "\"quoted key\"",
        "a.b.c",
    ])
    .prop_map(str::to_string);
    prop_oneof![4 => known, 1 => any::<String>()]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<usize>(), value()).prop_map(|(i, v)| Mutation::Value(i, v)),
        1 => any::<usize>().prop_map(Mutation::Delete),
        1 => any::<usize>().prop_map(Mutation::Duplicate),
        1 => (any::<usize>(), any::<usize>()).prop_map(|(i, j)| Mutation::Swap(i, j)),
        1 => (any::<usize>(), key(), value()).prop_map(|(i, k, v)| Mutation::Insert(i, k, v)),
        1 => (any::<usize>(), any::<char>()).prop_map(|(i, c)| Mutation::Char(i, c)),
        1 => any::<usize>().prop_map(Mutation::Truncate),
    ]
}

/// Indices of the `key = value` lines of `lines`.
fn value_lines(lines: &[String]) -> Vec<usize> {
    (0..lines.len())
        .filter(|&i| lines[i].contains(" = ") && !lines[i].starts_with('['))
        .collect()
}

/// Applies `m` to the text `lines` joins to (each index taken modulo what it indexes).
fn apply(lines: &mut Vec<String>, m: &Mutation) {
    let n = lines.len().max(1);
    match m {
        Mutation::Value(i, v) => {
            let keyed = value_lines(lines);
            if let Some(&at) = keyed.get(i % keyed.len().max(1)) {
                let k = lines[at].split(" = ").next().unwrap().to_string();
                lines[at] = format!("{k} = {v}");
            }
        }
        Mutation::Delete(i) if !lines.is_empty() => {
            lines.remove(i % n);
        }
        Mutation::Duplicate(i) if !lines.is_empty() => {
            let l = lines[i % n].clone();
            lines.insert(i % n, l);
        }
        Mutation::Swap(i, j) if !lines.is_empty() => lines.swap(i % n, j % n),
        Mutation::Insert(i, k, v) => lines.insert(i % (lines.len() + 1), format!("{k} = {v}")),
        Mutation::Char(i, c) => {
            let mut text = lines.join("\n");
            let at = text
                .char_indices()
                .map(|(b, _)| b)
                .nth(i % (text.chars().count() + 1))
                .unwrap_or(text.len());
            text.insert(at, *c);
            *lines = text.split('\n').map(str::to_string).collect();
        }
        Mutation::Truncate(i) => {
            let text = lines.join("\n");
            let cut: String = text.chars().take(i % (text.chars().count() + 1)).collect();
            *lines = cut.split('\n').map(str::to_string).collect();
        }
        _ => {}
    }
}

fn base_lines() -> Vec<String> {
    BASE.lines().map(str::to_string).collect()
}

/// The section a line of [`BASE`] belongs to, as problem keys begin with it.
fn section_of(lines: &[String], at: usize) -> String {
    let header = lines[..=at]
        .iter()
        .rev()
        .find(|l| l.starts_with('['))
        .expect("every line is under a header");
    let name = header.trim_matches(['[', ']']);
    let top = name.split('.').next().unwrap();
    if top == "servers" {
        "servers[".to_string()
    } else {
        format!("{top}.")
    }
}

#[test]
fn the_base_config_is_valid() {
    let c = Config::parse(BASE, &env).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.servers.len(), 2);
}

proptest! {
    #![proptest_config(cases(2000))]

    /// Arbitrary text: no panic, and every problem names a key or a position.
    #[test]
    fn arbitrary_text_never_panics(text in any::<String>()) {
        let _ = check_any(&text)?;
    }
}

proptest! {
    #![proptest_config(cases(1000))]

    /// TOML-ish token soup (headers, keys, values, punctuation): the same.
    #[test]
    fn tomlish_text_never_panics(
        parts in prop::collection::vec(
            prop_oneof![
                2 => prop::sample::select(vec![
                    "[listen]", "[gateway]", "[health]", "[sessions]", "[defence]", "[audit]",
                    "[[servers]]", "[servers.circuit_breaker]", "[servers]", "[[listen]]", "[",
                    "]", "=", " = ", "\n", ",", ".", "{", "}", "#",
                ]).prop_map(str::to_string),
                2 => key(),
                2 => value(),
            ],
            0..30,
        ),
    ) {
        let _ = check_any(&parts.concat())?;
    }
}

proptest! {
    #![proptest_config(cases(1500))]

    /// One value of a valid config changed: loading it either succeeds or
    /// reports problems in that value's section (its own key, or the key a
    /// check ties it to), or a TOML error at a position.
    #[test]
    fn one_changed_value_is_reported_in_its_section(i in any::<usize>(), v in value()) {
        let mut lines = base_lines();
        let keyed = value_lines(&lines);
        let at = keyed[i % keyed.len()];
        apply(&mut lines, &Mutation::Value(i, v));
        let text = lines.join("\n");
        if let Err(e) = check_any(&text)? {
            let section = section_of(&lines, at);
            for p in &e.problems {
                prop_assert!(
                    position(&p.key).is_some() || p.key.starts_with(&section),
                    "changing line {} ({:?}) gave {:?}, outside {}",
                    at + 1,
                    lines[at],
                    p,
                    section
                );
            }
        }
    }
}

proptest! {
    #![proptest_config(cases(1000))]

    /// A few arbitrary edits of a valid config (values, lines moved, dropped
    /// or added, characters inserted, the text cut): no panic, and every
    /// problem names a key or a position.
    #[test]
    fn mutated_configs_never_panic(ms in prop::collection::vec(mutation(), 1..5)) {
        let mut lines = base_lines();
        for m in &ms {
            apply(&mut lines, m);
        }
        let _ = check_any(&lines.join("\n"))?;
    }
}
