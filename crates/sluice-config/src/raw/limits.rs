//! `[[limits]]` and `[loop_guard]`: their raw shapes and validation.

use super::Check;
use crate::{Limit, LimitAnswer, LimitKey, LimitStore, LoopGuard, OnStoreError, Rate, Secret};
use serde::Deserialize;
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLimit {
    name: Option<String>,
    per: Option<Vec<String>>,
    rate: Option<String>,
    burst: Option<i64>,
    methods: Option<Vec<String>>,
    store: Option<String>,
    redis_url: Option<String>,
    on_store_error: Option<String>,
    answer: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLoopGuard {
    enabled: Option<bool>,
    repeats: Option<i64>,
    window: Option<String>,
    #[serde(default)]
    exempt_tools: Vec<String>,
    #[serde(default)]
    tool_repeats: BTreeMap<String, i64>,
}

/// Methods a limit may count: client requests that do work (never the SSE
/// GET, `initialize` or notifications).
const COUNTABLE: [&str; 8] = [
    "tools/call",
    "tools/list",
    "prompts/get",
    "prompts/list",
    "resources/read",
    "resources/list",
    "resources/templates/list",
    "completion/complete",
];

/// `"60/min"` → 60 per minute.
fn parse_rate(s: &str) -> Result<Rate, String> {
    let bad = || format!("`{s}` is not a rate like \"60/min\" (units: s, min, h, day)");
    let (n, unit) = s.split_once('/').ok_or_else(bad)?;
    let count: u64 = n.trim().parse().map_err(|_| bad())?;
    if count == 0 {
        return Err("the count must be greater than zero".into());
    }
    let per = match unit.trim() {
        "s" | "sec" | "second" => Duration::from_secs(1),
        "m" | "min" | "minute" => Duration::from_secs(60),
        "h" | "hour" => Duration::from_secs(3600),
        "d" | "day" => Duration::from_secs(86_400),
        _ => return Err(bad()),
    };
    Ok(Rate { count, per })
}

pub(crate) fn limits(
    c: &mut Check<'_>,
    raw: Vec<RawLimit>,
    default_redis: Option<&str>,
) -> Vec<Limit> {
    let mut out = Vec::new();
    let mut names = HashSet::new();
    for (i, l) in raw.into_iter().enumerate() {
        let k = |f: &str| format!("limits[{i}].{f}");
        let name = match l.name {
            Some(n) if super::valid_name(&n) => n,
            Some(n) => {
                c.fail(
                    k("name"),
                    format!("`{n}` must be 1-32 characters of [a-zA-Z0-9_-]"),
                );
                n
            }
            None => {
                c.fail(
                    k("name"),
                    "every limit needs a name (it is shown in refusals and metrics)",
                );
                format!("limit-{i}")
            }
        };
        if !names.insert(name.clone()) {
            c.fail(k("name"), format!("`{name}` names two limits"));
        }
        let mut per = Vec::new();
        for (j, p) in l
            .per
            .unwrap_or_else(|| vec!["principal".into()])
            .iter()
            .enumerate()
        {
            let key = match p.as_str() {
                "principal" => LimitKey::Principal,
                "tenant" => LimitKey::Tenant,
                "profile" => LimitKey::Profile,
                "server" => LimitKey::Server,
                "tool" => LimitKey::Tool,
                other => {
                    c.fail(
                        format!("limits[{i}].per[{j}]"),
                        format!("`{other}` is not one of principal, tenant, profile, server, tool"),
                    );
                    continue;
                }
            };
            if per.contains(&key) {
                c.fail(
                    format!("limits[{i}].per[{j}]"),
                    format!("`{p}` is named twice"),
                );
            }
            per.push(key);
        }
        let rate = match l.rate.as_deref() {
            Some(r) => parse_rate(r).unwrap_or_else(|e| {
                c.fail(k("rate"), e);
                Rate {
                    count: 1,
                    per: Duration::from_secs(1),
                }
            }),
            None => {
                c.fail(k("rate"), "every limit needs a rate, like \"60/min\"");
                Rate {
                    count: 1,
                    per: Duration::from_secs(1),
                }
            }
        };
        let burst = match l.burst {
            None => rate.count.min(u32::MAX as u64) as u32,
            Some(b) if b > 0 && b <= u32::MAX as i64 => b as u32,
            Some(b) => {
                c.fail(k("burst"), format!("must be a positive integer, got {b}"));
                1
            }
        };
        let mut methods = Vec::new();
        for (j, m) in l
            .methods
            .unwrap_or_else(|| vec!["tools/call".into()])
            .into_iter()
            .enumerate()
        {
            match COUNTABLE.iter().find(|c| **c == m) {
                Some(m) => methods.push(*m),
                None => c.fail(
                    format!("limits[{i}].methods[{j}]"),
                    format!("`{m}` cannot be limited; one of: {}", COUNTABLE.join(", ")),
                ),
            }
        }
        let store = match l.store.as_deref() {
            None | Some("local") => {
                if l.redis_url.is_some() {
                    c.fail(k("redis_url"), "`redis_url` applies to store = \"redis\"");
                }
                LimitStore::Local
            }
            Some("redis") => {
                let url = match (l.redis_url.as_deref(), default_redis) {
                    (Some(u), _) => c.expand(&k("redis_url"), u),
                    (None, Some(u)) => u.to_string(),
                    (None, None) => {
                        c.fail(
                            k("redis_url"),
                            "store = \"redis\" needs `redis_url` (or [sessions] store = \"redis\" with its redis_url)",
                        );
                        String::new()
                    }
                };
                let known = ["redis://", "rediss://", "unix://"];
                if !url.is_empty() && !known.iter().any(|p| url.starts_with(p)) {
                    c.fail(
                        k("redis_url"),
                        "must start with redis://, rediss:// or unix://",
                    );
                }
                LimitStore::Redis { url: Secret(url) }
            }
            Some(other) => {
                c.fail(
                    k("store"),
                    format!("`{other}` is not \"local\" or \"redis\""),
                );
                LimitStore::Local
            }
        };
        let on_store_error = match l.on_store_error.as_deref() {
            None | Some("allow") => OnStoreError::Allow,
            Some("deny") => OnStoreError::Deny,
            Some(other) => {
                c.fail(
                    k("on_store_error"),
                    format!("`{other}` is not \"allow\" or \"deny\""),
                );
                OnStoreError::Allow
            }
        };
        if l.on_store_error.is_some() && matches!(store, LimitStore::Local) {
            c.fail(
                k("on_store_error"),
                "`on_store_error` applies to store = \"redis\"",
            );
        }
        let answer = match l.answer.as_deref() {
            None | Some("error") => LimitAnswer::Error,
            Some("tool_result") => LimitAnswer::ToolResult,
            Some(other) => {
                c.fail(
                    k("answer"),
                    format!("`{other}` is not \"error\" or \"tool_result\""),
                );
                LimitAnswer::Error
            }
        };
        out.push(Limit {
            name,
            per,
            rate,
            burst,
            methods,
            store,
            on_store_error,
            answer,
        });
    }
    out
}

pub(crate) fn loop_guard(c: &mut Check<'_>, raw: RawLoopGuard) -> LoopGuard {
    let repeats = |c: &mut Check<'_>, key: &str, v: i64| -> u32 {
        if (2..=10_000).contains(&v) {
            v as u32
        } else {
            c.fail(key, format!("must be between 2 and 10000, got {v}"));
            5
        }
    };
    let default_repeats = match raw.repeats {
        Some(v) => repeats(c, "loop_guard.repeats", v),
        None => 5,
    };
    let tool_repeats = raw
        .tool_repeats
        .into_iter()
        .map(|(tool, v)| {
            let n = repeats(c, &format!("loop_guard.tool_repeats.{tool}"), v);
            (tool, n)
        })
        .collect();
    LoopGuard {
        enabled: raw.enabled.unwrap_or(false),
        repeats: default_repeats,
        window: c.duration(
            "loop_guard.window",
            raw.window.as_deref(),
            Duration::from_secs(60),
        ),
        exempt_tools: raw.exempt_tools,
        tool_repeats,
    }
}
