//! Raw TOML shapes and their validation.

mod limits;

use crate::*;
use serde::Deserialize;

/// The longest duration any key accepts (about 10 years).
const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 86_400);

/// The shortest `sessions.sse_keepalive` accepted.
const MIN_KEEPALIVE: Duration = Duration::from_millis(100);

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    #[serde(default)]
    listen: RawListen,
    #[serde(default)]
    gateway: RawGateway,
    #[serde(default)]
    health: RawHealth,
    #[serde(default)]
    defence: RawDefence,
    #[serde(default)]
    sessions: RawSessions,
    #[serde(default)]
    audit: RawAudit,
    auth: Option<RawAuth>,
    #[serde(default)]
    servers: Vec<RawServer>,
    #[serde(default)]
    limits: Vec<limits::RawLimit>,
    #[serde(default)]
    loop_guard: limits::RawLoopGuard,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawListen {
    addr: Option<String>,
    #[serde(default)]
    allowed_origins: Vec<String>,
    #[serde(default)]
    allowed_hosts: Vec<String>,
    max_body_bytes: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawGateway {
    page_size: Option<i64>,
    request_timeout: Option<String>,
    health_tool: Option<bool>,
    state_key: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDefence {
    pins_path: Option<String>,
    pins_url: Option<String>,
    scan_outputs: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAudit {
    enabled: Option<bool>,
    path: Option<String>,
    hmac_key: Option<String>,
    arguments: Option<String>,
    #[serde(default)]
    redact_keys: Vec<String>,
    max_argument_bytes: Option<i64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    mode: Option<String>,
    public_url: Option<String>,
    required_scopes: Option<Vec<String>>,
    #[serde(default)]
    api_keys: RawApiKeys,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawApiKeys {
    enabled: Option<bool>,
    pepper: Option<String>,
    path: Option<String>,
    url: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    interval: Option<String>,
    timeout: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawBreaker {
    consecutive_failures: Option<i64>,
    failure_rate: Option<f64>,
    window: Option<String>,
    min_calls: Option<i64>,
    open_for: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSessions {
    store: Option<String>,
    sqlite_path: Option<String>,
    redis_url: Option<String>,
    key_prefix: Option<String>,
    idle_timeout: Option<String>,
    max_sessions: Option<i64>,
    replay_events: Option<i64>,
    replay_max_age: Option<String>,
    max_streams: Option<i64>,
    max_streams_per_session: Option<i64>,
    sse_after: Option<String>,
    sse_keepalive: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    name: Option<String>,
    prefix: Option<String>,
    required: Option<bool>,
    timeout: Option<String>,
    #[serde(default)]
    tool_timeouts: BTreeMap<String, String>,
    command: Option<String>,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    cwd: Option<String>,
    url: Option<String>,
    transport: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    retries: Option<i64>,
    #[serde(default)]
    idempotent_tools: Vec<String>,
    #[serde(default)]
    circuit_breaker: RawBreaker,
    max_calls: Option<i64>,
    max_lifetime: Option<String>,
    max_concurrent: Option<i64>,
    max_queue: Option<i64>,
    queue_timeout: Option<String>,
    max_output_tokens: Option<i64>,
    #[serde(default)]
    tool_max_output_tokens: BTreeMap<String, i64>,
    max_binary_bytes: Option<i64>,
    isolation: Option<String>,
    scan: Option<String>,
    pinning: Option<bool>,
    trusted: Option<bool>,
    approval: Option<String>,
    #[serde(default)]
    tool_approval: BTreeMap<String, String>,
}

struct Check<'a> {
    problems: Vec<Problem>,
    env: &'a dyn Fn(&str) -> Option<String>,
}

impl Check<'_> {
    fn fail(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            key: key.into(),
            message: message.into(),
        });
    }

    fn duration(&mut self, key: &str, v: Option<&str>, default: Duration) -> Duration {
        match v {
            None => default,
            Some(s) => match humantime::parse_duration(s) {
                // Added to the clock, a longer one would overflow it.
                Ok(d) if d > MAX_DURATION => {
                    self.fail(key, format!("`{s}` is too long: at most 10 years"));
                    default
                }
                Ok(d) if !d.is_zero() => d,
                Ok(_) => {
                    self.fail(key, "must be greater than zero");
                    default
                }
                Err(e) => {
                    self.fail(
                        key,
                        format!("`{s}` is not a duration like \"30s\" or \"5m\": {e}"),
                    );
                    default
                }
            },
        }
    }

    fn positive(&mut self, key: &str, v: Option<i64>, default: usize) -> usize {
        match v {
            None => default,
            Some(n) if n > 0 => n as usize,
            Some(n) => {
                self.fail(key, format!("must be a positive integer, got {n}"));
                default
            }
        }
    }

    /// Expands `${VAR}` and `${VAR:-default}`; never echoes the resolved value.
    fn expand(&mut self, key: &str, s: &str) -> String {
        let mut out = String::with_capacity(s.len());
        let mut rest = s;
        while let Some(i) = rest.find("${") {
            out.push_str(&rest[..i]);
            let after = &rest[i + 2..];
            let Some(end) = after.find('}') else {
                self.fail(key, "unterminated `${` in value");
                return out;
            };
            let expr = &after[..end];
            let (var, default) = match expr.split_once(":-") {
                Some((v, d)) => (v, Some(d)),
                None => (expr, None),
            };
            match ((self.env)(var), default) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => self.fail(key, format!("environment variable {var} is not set")),
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        out
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

pub(crate) fn validate(
    raw: RawConfig,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let mut c = Check {
        problems: Vec::new(),
        env,
    };

    let addr_text = raw.listen.addr.as_deref().unwrap_or("127.0.0.1:8080");
    let addr = addr_text.parse::<SocketAddr>().unwrap_or_else(|_| {
        c.fail(
            "listen.addr",
            format!("`{addr_text}` is not an IP:port address"),
        );
        SocketAddr::from(([127, 0, 0, 1], 8080))
    });
    for (i, o) in raw.listen.allowed_origins.iter().enumerate() {
        if o != "*" && !(o.starts_with("http://") || o.starts_with("https://")) {
            c.fail(
                format!("listen.allowed_origins[{i}]"),
                format!("`{o}` must be an origin like https://app.example.com, or \"*\""),
            );
        }
    }
    let max_body = match raw.listen.max_body_bytes {
        None => 4 * 1024 * 1024,
        Some(0) => {
            c.fail("listen.max_body_bytes", "must be greater than zero");
            4 * 1024 * 1024
        }
        Some(n) => n as usize,
    };
    let listen = Listen {
        addr,
        allowed_origins: raw.listen.allowed_origins,
        allowed_hosts: raw.listen.allowed_hosts,
        max_body_bytes: max_body,
    };

    let request_timeout = c.duration(
        "gateway.request_timeout",
        raw.gateway.request_timeout.as_deref(),
        Duration::from_secs(60),
    );
    let gateway = Gateway {
        page_size: c.positive("gateway.page_size", raw.gateway.page_size, 1000),
        request_timeout,
        health_tool: raw.gateway.health_tool.unwrap_or(true),
        state_key: raw.gateway.state_key.as_deref().map(|k| {
            let key = c.expand("gateway.state_key", k);
            if key.len() < 32 {
                c.fail(
                    "gateway.state_key",
                    "must be at least 32 bytes (e.g. 64 hex characters)",
                );
            }
            Secret(key)
        }),
    };
    let health = Health {
        interval: c.duration(
            "health.interval",
            raw.health.interval.as_deref(),
            Duration::from_secs(15),
        ),
        timeout: c.duration(
            "health.timeout",
            raw.health.timeout.as_deref(),
            Duration::from_secs(5),
        ),
    };

    let rs = &raw.sessions;
    if rs.store.as_deref() != Some("redis") && (rs.redis_url.is_some() || rs.key_prefix.is_some()) {
        c.fail(
            "sessions.redis_url",
            "`redis_url` and `key_prefix` apply to store = \"redis\"",
        );
    }
    if !matches!(rs.store.as_deref(), None | Some("sqlite")) && rs.sqlite_path.is_some() {
        c.fail(
            "sessions.sqlite_path",
            "`sqlite_path` applies to store = \"sqlite\"",
        );
    }
    let store = match rs.store.as_deref() {
        None | Some("sqlite") => Store::Sqlite {
            path: PathBuf::from(c.expand(
                "sessions.sqlite_path",
                rs.sqlite_path.as_deref().unwrap_or("sluice-sessions.db"),
            )),
        },
        Some("memory") => Store::Memory,
        Some("redis") => {
            let url = c.expand(
                "sessions.redis_url",
                rs.redis_url.as_deref().unwrap_or("redis://127.0.0.1:6379"),
            );
            if !(url.starts_with("redis://")
                || url.starts_with("rediss://")
                || url.starts_with("unix://"))
            {
                c.fail(
                    "sessions.redis_url",
                    "must start with redis://, rediss:// or unix://",
                );
            }
            Store::Redis {
                url: Secret(url),
                key_prefix: rs.key_prefix.clone().unwrap_or_else(|| "sluice:".into()),
            }
        }
        Some(other) => {
            c.fail(
                "sessions.store",
                format!("`{other}` is not one of \"sqlite\", \"memory\", \"redis\""),
            );
            Store::Memory
        }
    };
    let sessions = Sessions {
        store,
        idle_timeout: c.duration(
            "sessions.idle_timeout",
            raw.sessions.idle_timeout.as_deref(),
            Duration::from_secs(30 * 60),
        ),
        max_sessions: c.positive("sessions.max_sessions", raw.sessions.max_sessions, 100_000),
        replay_events: c.positive("sessions.replay_events", raw.sessions.replay_events, 256),
        replay_max_age: c.duration(
            "sessions.replay_max_age",
            raw.sessions.replay_max_age.as_deref(),
            Duration::from_secs(300),
        ),
        max_streams: c.positive("sessions.max_streams", raw.sessions.max_streams, 10_000),
        max_streams_per_session: c.positive(
            "sessions.max_streams_per_session",
            raw.sessions.max_streams_per_session,
            8,
        ),
        sse_after: c.duration(
            "sessions.sse_after",
            raw.sessions.sse_after.as_deref(),
            Duration::from_secs(1),
        ),
        sse_keepalive: c.duration(
            "sessions.sse_keepalive",
            raw.sessions.sse_keepalive.as_deref(),
            Duration::from_secs(15),
        ),
    };
    if sessions.sse_keepalive < MIN_KEEPALIVE {
        c.fail(
            "sessions.sse_keepalive",
            format!(
                "must be at least {}ms: comments more often only load the network",
                MIN_KEEPALIVE.as_millis()
            ),
        );
    }

    let audit = audit(&mut c, &raw.audit);
    let session_redis = match &sessions.store {
        Store::Redis { url, .. } => Some(url.0.clone()),
        _ => None,
    };
    let limits = limits::limits(&mut c, raw.limits, session_redis.as_deref());
    let loop_guard = limits::loop_guard(&mut c, raw.loop_guard);

    let mut servers = Vec::new();
    let mut names = std::collections::HashSet::new();
    let mut prefixes = std::collections::HashMap::new();
    for (i, s) in raw.servers.into_iter().enumerate() {
        let k = |f: &str| format!("servers[{i}].{f}");
        let name = match s.name {
            Some(n) if valid_name(&n) && !n.contains("__") => n,
            Some(n) => {
                c.fail(
                    k("name"),
                    format!("`{n}` must be 1-32 characters of [a-zA-Z0-9_-] without `__`"),
                );
                continue;
            }
            None => {
                c.fail(k("name"), "is required");
                continue;
            }
        };
        if !names.insert(name.clone()) {
            c.fail(k("name"), format!("`{name}` is used by another server"));
        }
        let prefix = s.prefix.unwrap_or_else(|| name.clone());
        if !prefix.is_empty() && (!valid_name(&prefix) || prefix.contains("__")) {
            c.fail(
                k("prefix"),
                format!(
                    "`{prefix}` must be empty or 1-32 characters of [a-zA-Z0-9_-] without `__`"
                ),
            );
        }
        if prefix == "sluice" {
            c.fail(
                k("prefix"),
                "`sluice` is reserved for the gateway's own tools; set another `prefix`",
            );
        }
        if let Some(other) = prefixes.insert(prefix.clone(), name.clone()) {
            c.fail(
                k("prefix"),
                format!(
                    "`{prefix}` is also the prefix of server `{other}`; prefixes must be unique"
                ),
            );
        }
        let timeout = c.duration(&k("timeout"), s.timeout.as_deref(), request_timeout);
        let mut tool_timeouts = BTreeMap::new();
        for (tool, d) in &s.tool_timeouts {
            let key = k(&format!("tool_timeouts.{tool}"));
            tool_timeouts.insert(tool.clone(), c.duration(&key, Some(d), timeout));
        }
        let transport = match (s.command, s.url) {
            (Some(_), Some(_)) => {
                c.fail(
                    k("command"),
                    "set either `command` (stdio) or `url` (HTTP), not both",
                );
                continue;
            }
            (None, None) => {
                c.fail(
                    k("command"),
                    "set `command` (stdio server) or `url` (HTTP server)",
                );
                continue;
            }
            (Some(command), None) => {
                if !s.headers.is_empty() {
                    c.fail(k("headers"), "only HTTP servers (`url`) take headers");
                }
                if let Some(t) = s.transport.as_deref().filter(|t| *t != "stdio") {
                    c.fail(
                        k("transport"),
                        format!("`{t}` does not fit a `command` server; use \"stdio\""),
                    );
                }
                if command.trim().is_empty() {
                    c.fail(k("command"), "must not be empty");
                }
                let command = c.expand(&k("command"), &command);
                let args = s
                    .args
                    .iter()
                    .enumerate()
                    .map(|(j, a)| c.expand(&k(&format!("args[{j}]")), a))
                    .collect();
                let env = s
                    .env
                    .iter()
                    .map(|(ek, v)| (ek.clone(), Secret(c.expand(&k(&format!("env.{ek}")), v))))
                    .collect();
                let cwd = s.cwd.map(|d| PathBuf::from(c.expand(&k("cwd"), &d)));
                Transport::Stdio {
                    command,
                    args,
                    env,
                    cwd,
                }
            }
            (None, Some(url)) => {
                if !s.args.is_empty() || !s.env.is_empty() || s.cwd.is_some() {
                    c.fail(
                        k("args"),
                        "`args`, `env` and `cwd` apply to `command` servers only",
                    );
                }
                let written = url;
                let url = c.expand(&k("url"), &written);
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    // As written: what `${VAR}` resolved to may be a credential.
                    c.fail(
                        k("url"),
                        format!("`{written}` must be an http:// or https:// URL"),
                    );
                }
                let mode = match s.transport.as_deref() {
                    None | Some("auto") => HttpMode::Auto,
                    Some("streamable-http") | Some("http") => HttpMode::StreamableHttp,
                    Some("sse") => HttpMode::Sse,
                    Some(t) => {
                        c.fail(
                            k("transport"),
                            format!("`{t}` is not one of \"auto\", \"streamable-http\", \"sse\""),
                        );
                        HttpMode::Auto
                    }
                };
                let headers = s
                    .headers
                    .iter()
                    .map(|(hk, v)| {
                        (
                            hk.clone(),
                            Secret(c.expand(&k(&format!("headers.{hk}")), v)),
                        )
                    })
                    .collect();
                Transport::Http { url, headers, mode }
            }
        };
        let d = Breaker::default();
        let b = &s.circuit_breaker;
        let breaker = Breaker {
            consecutive_failures: c.positive(
                &k("circuit_breaker.consecutive_failures"),
                b.consecutive_failures,
                d.consecutive_failures as usize,
            ) as u32,
            failure_rate: match b.failure_rate {
                None => d.failure_rate,
                Some(r) if r > 0.0 && r <= 1.0 => r,
                Some(r) => {
                    c.fail(
                        k("circuit_breaker.failure_rate"),
                        format!("must be in (0, 1], got {r}"),
                    );
                    d.failure_rate
                }
            },
            window: c.duration(&k("circuit_breaker.window"), b.window.as_deref(), d.window),
            min_calls: c.positive(
                &k("circuit_breaker.min_calls"),
                b.min_calls,
                d.min_calls as usize,
            ) as u32,
            open_for: c.duration(
                &k("circuit_breaker.open_for"),
                b.open_for.as_deref(),
                d.open_for,
            ),
        };
        let retries = match s.retries {
            None => 2,
            Some(n) if (0..=10).contains(&n) => n as u32,
            Some(n) => {
                c.fail(k("retries"), format!("must be between 0 and 10, got {n}"));
                2
            }
        };
        let is_stdio = matches!(transport, Transport::Stdio { .. });
        if !is_stdio && (s.max_calls.is_some() || s.max_lifetime.is_some()) {
            c.fail(
                k("max_calls"),
                "`max_calls` and `max_lifetime` apply to `command` servers only",
            );
        }
        let max_calls = s
            .max_calls
            .map(|n| c.positive(&k("max_calls"), Some(n), 1) as u64);
        let max_lifetime = s
            .max_lifetime
            .as_deref()
            .map(|v| c.duration(&k("max_lifetime"), Some(v), Duration::from_secs(3600)));
        if s.max_concurrent.is_none() && (s.max_queue.is_some() || s.queue_timeout.is_some()) {
            c.fail(
                k("max_queue"),
                "`max_queue` and `queue_timeout` apply with `max_concurrent`",
            );
        }
        let bulkhead = s.max_concurrent.map(|n| Bulkhead {
            max_concurrent: c.positive(&k("max_concurrent"), Some(n), 1),
            max_queue: match s.max_queue {
                None => 100,
                Some(q) if q >= 0 => q as usize,
                Some(q) => {
                    c.fail(k("max_queue"), format!("must be zero or more, got {q}"));
                    0
                }
            },
            queue_timeout: c.duration(
                &k("queue_timeout"),
                s.queue_timeout.as_deref(),
                Duration::from_secs(10),
            ),
        });
        let od = OutputLimits::default();
        let mut tool_max = BTreeMap::new();
        for (tool, n) in &s.tool_max_output_tokens {
            let key = k(&format!("tool_max_output_tokens.{tool}"));
            tool_max.insert(
                tool.clone(),
                c.positive(&key, Some(*n), od.max_output_tokens),
            );
        }
        let output = OutputLimits {
            max_output_tokens: c.positive(
                &k("max_output_tokens"),
                s.max_output_tokens,
                od.max_output_tokens,
            ),
            tool_max_output_tokens: tool_max,
            max_binary_bytes: c.positive(
                &k("max_binary_bytes"),
                s.max_binary_bytes,
                od.max_binary_bytes,
            ),
        };
        let isolation = match s.isolation.as_deref() {
            None | Some("shared") => Isolation::Shared,
            Some("per-session") => Isolation::PerSession,
            Some(other) => {
                c.fail(
                    k("isolation"),
                    format!("`{other}` is not one of \"shared\", \"per-session\""),
                );
                Isolation::Shared
            }
        };
        let scan = match s.scan.as_deref() {
            None | Some("block") => ScanPolicy::Block,
            Some("warn") => ScanPolicy::Warn,
            Some("off") => ScanPolicy::Off,
            Some(other) => {
                c.fail(
                    k("scan"),
                    format!("`{other}` is not one of \"block\", \"warn\", \"off\""),
                );
                ScanPolicy::Block
            }
        };
        let mut approval_of = |key: String, v: Option<&str>| match v {
            None | Some("never") => Approval::Never,
            Some("always") => Approval::Always,
            Some("destructive") => Approval::Destructive,
            Some(other) => {
                c.fail(
                    key,
                    format!("`{other}` is not one of \"never\", \"always\", \"destructive\""),
                );
                Approval::Never
            }
        };
        let approval = approval_of(k("approval"), s.approval.as_deref());
        let tool_approval = s
            .tool_approval
            .iter()
            .map(|(t, v)| {
                (
                    t.clone(),
                    approval_of(k(&format!("tool_approval.{t}")), Some(v)),
                )
            })
            .collect();
        servers.push(Server {
            scan,
            pinning: s.pinning.unwrap_or(true),
            trusted: s.trusted.unwrap_or(false),
            approval,
            tool_approval,
            isolation,
            name,
            prefix,
            required: s.required.unwrap_or(true),
            timeout,
            tool_timeouts,
            transport,
            retries,
            idempotent_tools: s.idempotent_tools,
            breaker,
            max_calls,
            max_lifetime,
            bulkhead,
            output,
        });
    }

    let defence = Defence {
        pins_path: PathBuf::from(c.expand(
            "defence.pins_path",
            raw.defence.pins_path.as_deref().unwrap_or("sluice-pins.db"),
        )),
        pins_url: raw.defence.pins_url.as_deref().map(|u| {
            let before = c.problems.len();
            let url = c.expand("defence.pins_url", u);
            // The URL may carry a password: the error names the key, never the value.
            if c.problems.len() == before
                && !(url.starts_with("postgres://") || url.starts_with("postgresql://"))
            {
                c.fail(
                    "defence.pins_url",
                    "must be a PostgreSQL URL starting with postgres:// or postgresql://",
                );
            }
            Secret(url)
        }),
        scan_outputs: raw.defence.scan_outputs.unwrap_or(true),
    };

    let auth = auth(&mut c, raw.auth.as_ref());

    if c.problems.is_empty() {
        Ok(Config {
            auth,
            defence,
            listen,
            gateway,
            health,
            sessions,
            audit,
            servers,
            limits,
            loop_guard,
        })
    } else {
        Err(ConfigError {
            problems: c.problems,
        })
    }
}

/// Checks a PostgreSQL URL (already expanded) without echoing it: it may
/// carry a password.
fn postgres_url(c: &mut Check<'_>, key: &str, raw: &str) -> Secret {
    let before = c.problems.len();
    let url = c.expand(key, raw);
    if c.problems.len() == before
        && !(url.starts_with("postgres://") || url.starts_with("postgresql://"))
    {
        c.fail(
            key,
            "must be a PostgreSQL URL starting with postgres:// or postgresql://",
        );
    }
    Secret(url)
}

/// The `[auth]` section.
fn auth(c: &mut Check<'_>, ra: Option<&RawAuth>) -> Auth {
    let default = RawAuth::default();
    let ra = ra.unwrap_or(&default);
    let mode = match ra.mode.as_deref() {
        None => AuthMode::Unset,
        Some("required") => AuthMode::Required,
        Some("off") => AuthMode::Off,
        Some(other) => {
            c.fail(
                "auth.mode",
                format!("`{other}` is not one of \"required\", \"off\""),
            );
            AuthMode::Unset
        }
    };
    let public_url = match ra.public_url.as_deref() {
        None => None,
        Some(u) => {
            let u = c.expand("auth.public_url", u);
            let scheme_ok = u.starts_with("http://") || u.starts_with("https://");
            let rest = u.split_once("://").map_or("", |(_, r)| r);
            if !scheme_ok || rest.is_empty() || rest.starts_with('/') {
                c.fail(
                    "auth.public_url",
                    format!("`{u}` must be an absolute http:// or https:// URL like https://mcp.example.com/mcp"),
                );
            } else if u.contains(['?', '#']) {
                c.fail("auth.public_url", "must not have a query or fragment");
            }
            Some(u)
        }
    };
    let required_scopes = ra.required_scopes.clone().unwrap_or_default();
    for (i, s) in required_scopes.iter().enumerate() {
        if s.is_empty()
            || !s
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
        {
            c.fail(
                format!("auth.required_scopes[{i}]"),
                "a scope is printable ASCII without spaces, quotes or backslashes",
            );
        }
    }
    let rk = &ra.api_keys;
    let pepper = rk.pepper.as_deref().map(|p| {
        let before = c.problems.len();
        let p = c.expand("auth.api_keys.pepper", p);
        if c.problems.len() == before && p.len() < 32 {
            c.fail(
                "auth.api_keys.pepper",
                "must be at least 32 bytes (e.g. 64 hex characters)",
            );
        }
        Secret(p)
    });
    let api_keys = ApiKeys {
        enabled: rk.enabled.unwrap_or(true),
        path: PathBuf::from(c.expand(
            "auth.api_keys.path",
            rk.path.as_deref().unwrap_or("sluice-keys.db"),
        )),
        url: rk
            .url
            .as_deref()
            .map(|u| postgres_url(c, "auth.api_keys.url", u)),
        pepper,
    };
    if mode == AuthMode::Required {
        if !api_keys.enabled {
            c.fail(
                "auth.api_keys.enabled",
                "auth.mode = \"required\" needs a way to authenticate: enable API keys",
            );
        } else if api_keys.pepper.is_none() {
            c.fail(
                "auth.api_keys.pepper",
                "must be set when auth.mode = \"required\" (e.g. pepper = \"${SLUICE_KEY_PEPPER}\")",
            );
        }
    }
    Auth {
        mode,
        public_url,
        required_scopes,
        api_keys,
    }
}

/// The `[audit]` section.
fn audit(c: &mut Check<'_>, ra: &RawAudit) -> Audit {
    let path = c.expand(
        "audit.path",
        ra.path.as_deref().unwrap_or("sluice-audit.jsonl"),
    );
    if path.trim().is_empty() {
        c.fail("audit.path", "must not be empty");
    }
    let hmac_key = ra.hmac_key.as_deref().map(|k| {
        let key = c.expand("audit.hmac_key", k);
        if key.len() < 32 {
            c.fail(
                "audit.hmac_key",
                "must be at least 32 bytes (e.g. 64 hex characters)",
            );
        }
        Secret(key)
    });
    let arguments = match ra.arguments.as_deref() {
        None | Some("redacted") => AuditArguments::Redacted,
        Some("omit") => AuditArguments::Omit,
        Some("full") => AuditArguments::Full,
        Some(other) => {
            c.fail(
                "audit.arguments",
                format!("`{other}` is not one of \"redacted\", \"omit\", \"full\""),
            );
            AuditArguments::Redacted
        }
    };
    for (i, k) in ra.redact_keys.iter().enumerate() {
        if k.trim().is_empty() {
            c.fail(format!("audit.redact_keys[{i}]"), "must not be empty");
        }
    }
    Audit {
        enabled: ra.enabled.unwrap_or(true),
        path: PathBuf::from(path),
        hmac_key,
        arguments,
        redact_keys: ra.redact_keys.clone(),
        max_argument_bytes: c.positive("audit.max_argument_bytes", ra.max_argument_bytes, 4096),
    }
}

#[cfg(test)]
mod tests {
    use crate::*;

    fn env(k: &str) -> Option<String> {
        (k == "REMOTE_TOKEN").then(|| "s3cret".to_string())
    }

    #[test]
    fn minimal_shape_from_the_issue_parses() {
        let c = Config::parse(
            r#"
            [listen]
            addr = "127.0.0.1:8080"
            [[servers]]
            name = "everything"
            command = "npx"
            args = ["-y", "@modelcontextprotocol/server-everything"]
            env = { SOME_VAR = "value" }
            [[servers]]
            name = "remote"
            url = "http://127.0.0.1:3001/mcp"
            headers = { Authorization = "Bearer ${REMOTE_TOKEN}" }
            "#,
            &env,
        )
        .unwrap();
        assert_eq!(c.servers.len(), 2);
        assert_eq!(c.servers[0].prefix, "everything");
        assert_eq!(c.listen.max_body_bytes, 4 * 1024 * 1024);
        match &c.servers[1].transport {
            Transport::Http { headers, mode, .. } => {
                assert_eq!(headers[0].1.expose(), "Bearer s3cret");
                assert_eq!(*mode, HttpMode::Auto);
            }
            _ => panic!("expected http"),
        }
        assert!(
            !format!("{c:?}").contains("s3cret"),
            "secrets leak into Debug"
        );
    }

    #[test]
    fn durations_too_long_for_the_clock_are_refused() {
        let err = Config::parse(
            "[gateway]\nrequest_timeout = \"500000000y\"\n[sessions]\nidle_timeout = \"9y\"\n",
            &env,
        )
        .unwrap_err();
        assert_eq!(err.problems.len(), 1, "{err}");
        assert_eq!(err.problems[0].key, "gateway.request_timeout");
        assert!(err.problems[0].message.contains("too long"), "{err}");
    }

    #[test]
    fn reports_every_problem_with_its_key() {
        let err = Config::parse(
            r#"
            [listen]
            addr = "nope"
            [gateway]
            request_timeout = "soon"
            [[servers]]
            name = "a__b"
            command = "x"
            [[servers]]
            name = "ok"
            url = "ftp://x"
            headers = { Authorization = "${MISSING}" }
            [[servers]]
            name = "both"
            command = "x"
            url = "http://x"
            "#,
            &env,
        )
        .unwrap_err();
        let keys: Vec<&str> = err.problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "listen.addr",
                "gateway.request_timeout",
                "servers[0].name",
                "servers[1].url",
                "servers[1].headers.Authorization",
                "servers[2].command"
            ],
            "{err}"
        );
    }

    #[test]
    fn pins_url_is_optional_expanded_and_checked() {
        let c = Config::parse("", &env).unwrap();
        assert!(c.defence.pins_url.is_none());
        assert_eq!(c.defence.pins_path, PathBuf::from("sluice-pins.db"));

        let pg = |k: &str| match k {
            "PG_PASSWORD" => Some("hunter2".to_string()),
            _ => None,
        };
        for scheme in ["postgres", "postgresql"] {
            let c = Config::parse(
                &format!(
                    "[defence]\npins_url = \"{scheme}://sluice:${{PG_PASSWORD}}@db:5432/pins\"\n"
                ),
                &pg,
            )
            .unwrap();
            assert_eq!(
                c.defence.pins_url.as_ref().unwrap().expose(),
                format!("{scheme}://sluice:hunter2@db:5432/pins")
            );
            assert!(
                !format!("{c:?}").contains("hunter2"),
                "the URL leaks into Debug"
            );
        }

        // Every problem at once, each naming its key, never echoing the URL.
        let err = Config::parse(
            "[defence]\npins_path = \"${NOPE}\"\npins_url = \"mysql://u:hunter2@db/pins\"\n",
            &pg,
        )
        .unwrap_err();
        let keys: Vec<&str> = err.problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["defence.pins_path", "defence.pins_url"], "{err}");
        assert!(!err.to_string().contains("hunter2"), "{err}");
        let err = Config::parse("[defence]\npins_url = \"${NOPE}\"\n", &pg).unwrap_err();
        assert_eq!(err.problems.len(), 1, "{err}");
        assert_eq!(err.problems[0].key, "defence.pins_url");
        assert!(err.problems[0].message.contains("NOPE"), "{err}");
    }

    /// Found by `tests/fuzz_config.rs`: the key of a TOML error said
    /// `line:byte N` with N a byte offset, not a line.
    #[test]
    fn a_toml_error_names_its_line_and_column() {
        let err = Config::parse("[listen]\naddr = \"x\"\nport 8080\n", &env).unwrap_err();
        assert_eq!(err.problems.len(), 1, "{err}");
        assert_eq!(err.problems[0].key, "line 3, column 6", "{err}");
        let err = Config::parse("a", &env).unwrap_err();
        assert_eq!(err.problems[0].key, "line 1, column 2", "{err}");
        // Columns count characters, not bytes.
        let err = Config::parse("[listen]\n# é\nadresse = 1\n", &env).unwrap_err();
        assert_eq!(err.problems[0].key, "line 3, column 1", "{err}");
        let err = Config::parse("k = \"é\" x\n", &env).unwrap_err();
        assert_eq!(err.problems[0].key, "line 1, column 9", "{err}");
    }

    /// Found by `tests/fuzz_config.rs`: a URL that is not http(s) was shown
    /// with its `${VAR}` resolved, which may be a credential.
    #[test]
    fn a_bad_url_is_shown_as_written() {
        let err = Config::parse(
            "[[servers]]\nname = \"r\"\nurl = \"ftp://h/?key=${REMOTE_TOKEN}\"\n",
            &env,
        )
        .unwrap_err();
        assert_eq!(err.problems[0].key, "servers[0].url");
        assert!(err.to_string().contains("${REMOTE_TOKEN}"), "{err}");
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = Config::parse("[listen]\nadress = \"x\"\n", &env).unwrap_err();
        assert!(err.to_string().contains("adress"), "{err}");
    }

    #[test]
    fn duplicate_prefixes_are_rejected() {
        let err = Config::parse(
            "[[servers]]\nname=\"a\"\nprefix=\"\"\ncommand=\"x\"\n[[servers]]\nname=\"b\"\nprefix=\"\"\ncommand=\"y\"\n",
            &env,
        )
        .unwrap_err();
        assert_eq!(err.problems[0].key, "servers[1].prefix");
    }

    #[test]
    fn audit_defaults_and_keys() {
        let c = Config::parse("", &env).unwrap();
        assert!(c.audit.enabled);
        assert_eq!(c.audit.path, std::path::PathBuf::from("sluice-audit.jsonl"));
        assert!(c.audit.hmac_key.is_none());
        assert_eq!(c.audit.arguments, AuditArguments::Redacted);
        assert_eq!(c.audit.max_argument_bytes, 4096);

        let key_env = |k: &str| (k == "AUDIT_KEY").then(|| "k".repeat(40));
        let c = Config::parse(
            "[audit]\nenabled = false\npath = \"/var/log/a.jsonl\"\nhmac_key = \"${AUDIT_KEY}\"\narguments = \"omit\"\nredact_keys = [\"ssn\"]\nmax_argument_bytes = 100\n",
            &key_env,
        )
        .unwrap();
        assert!(!c.audit.enabled);
        assert_eq!(c.audit.arguments, AuditArguments::Omit);
        assert_eq!(c.audit.hmac_key.as_ref().unwrap().expose(), "k".repeat(40));
        assert_eq!(c.audit.redact_keys, ["ssn"]);
        assert_eq!(c.audit.max_argument_bytes, 100);
        assert!(!format!("{c:?}").contains("kkkk"), "the key never shows");
    }

    #[test]
    fn audit_problems_are_all_reported() {
        let err = Config::parse(
            "[audit]\nhmac_key = \"short\"\narguments = \"some\"\nredact_keys = [\"\"]\nmax_argument_bytes = 0\n",
            &env,
        )
        .unwrap_err();
        let keys: Vec<&str> = err.problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "audit.hmac_key",
                "audit.arguments",
                "audit.redact_keys[0]",
                "audit.max_argument_bytes"
            ],
            "{err}"
        );
        assert!(!err.to_string().contains("short"), "{err}");
        let err = Config::parse("[audit]\nhmac_key = \"${NOPE}\"\n", &env).unwrap_err();
        assert_eq!(err.problems[0].key, "audit.hmac_key");
    }

    #[test]
    fn a_relative_audit_path_is_relative_to_the_config_file() {
        let dir = std::env::temp_dir().join(format!("sluice-config-audit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("sluice.toml");
        std::fs::write(&path, "[audit]\npath = \"logs/audit.jsonl\"\n").unwrap();
        let c = Config::load(&path).unwrap();
        assert_eq!(c.audit.path, dir.join("logs/audit.jsonl"));
        std::fs::write(&path, "").unwrap();
        assert_eq!(
            Config::load(&path).unwrap().audit.path,
            dir.join("sluice-audit.jsonl")
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn sse_delays_default_parse_and_are_checked() {
        let c = Config::parse("", &env).unwrap();
        assert_eq!(c.sessions.sse_after, Duration::from_secs(1));
        assert_eq!(c.sessions.sse_keepalive, Duration::from_secs(15));
        let c = Config::parse(
            "[sessions]\nsse_after = \"250ms\"\nsse_keepalive = \"2s\"\n",
            &env,
        )
        .unwrap();
        assert_eq!(c.sessions.sse_after, Duration::from_millis(250));
        assert_eq!(c.sessions.sse_keepalive, Duration::from_secs(2));
        let err = Config::parse(
            "[sessions]\nsse_after = \"0s\"\nsse_keepalive = \"10ms\"\n",
            &env,
        )
        .unwrap_err();
        let keys: Vec<&str> = err.problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            ["sessions.sse_after", "sessions.sse_keepalive"],
            "{err}"
        );
    }

    #[test]
    fn auth_defaults_to_unset() {
        let c = Config::parse("[listen]\naddr = \"127.0.0.1:9000\"\n", &env).unwrap();
        assert_eq!(c.auth.mode, AuthMode::Unset);
        assert_eq!(c.auth.public_url, None);
        assert!(c.auth.required_scopes.is_empty());
        assert!(c.auth.api_keys.enabled);
        assert!(c.auth.api_keys.pepper.is_none());
        assert_eq!(c.auth.api_keys.path, PathBuf::from("sluice-keys.db"));
        assert!(c.auth.api_keys.url.is_none());
    }

    #[test]
    fn auth_section_from_the_issue_parses_with_its_pepper_from_the_environment() {
        let pepper = |k: &str| (k == "PEPPER").then(|| "p".repeat(40));
        let c = Config::parse(
            "[auth]\nmode = \"required\"\npublic_url = \"https://mcp.example.com/mcp\"\nrequired_scopes = [\"mcp\"]\n[auth.api_keys]\nenabled = true\npepper = \"${PEPPER}\"\nurl = \"postgres://u:pw@db/keys\"\n",
            &pepper,
        )
        .unwrap();
        assert_eq!(c.auth.mode, AuthMode::Required);
        assert_eq!(
            c.auth.public_url.as_deref(),
            Some("https://mcp.example.com/mcp")
        );
        assert_eq!(c.auth.required_scopes, ["mcp"]);
        assert_eq!(
            c.auth.api_keys.pepper.as_ref().unwrap().expose(),
            "p".repeat(40)
        );
        assert!(
            !format!("{:?}", c.auth).contains("pppp"),
            "the pepper is redacted"
        );
        assert!(
            !format!("{:?}", c.auth).contains("pw@"),
            "the URL is redacted"
        );
    }

    #[test]
    fn auth_problems_name_their_keys_and_never_the_secrets() {
        let err = Config::parse(
            "[auth]\nmode = \"maybe\"\npublic_url = \"ftp://x\"\nrequired_scopes = [\"a b\"]\n[auth.api_keys]\npepper = \"short-secret\"\nurl = \"mysql://u:hunter2@db\"\n",
            &env,
        )
        .unwrap_err();
        let keys: Vec<&str> = err.problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "auth.mode",
                "auth.public_url",
                "auth.required_scopes[0]",
                "auth.api_keys.pepper",
                "auth.api_keys.url"
            ],
            "{err}"
        );
        let text = err.to_string();
        assert!(
            !text.contains("short-secret") && !text.contains("hunter2"),
            "{text}"
        );
        let err = Config::parse("[auth]\nmode = \"required\"\n", &env).unwrap_err();
        assert_eq!(err.problems[0].key, "auth.api_keys.pepper", "{err}");
        let err = Config::parse(
            "[auth]\nmode = \"required\"\n[auth.api_keys]\nenabled = false\n",
            &env,
        )
        .unwrap_err();
        assert_eq!(err.problems[0].key, "auth.api_keys.enabled", "{err}");
        let err = Config::parse("[auth.api_keys]\npepper = \"${NOPE}\"\n", &env).unwrap_err();
        assert_eq!(err.problems.len(), 1, "{err}");
        assert!(err.to_string().contains("NOPE is not set"), "{err}");
        let err = Config::parse("[auth]\nmod = \"off\"\n", &env).unwrap_err();
        assert!(err.to_string().contains("unknown field `mod`"), "{err}");
        let c = Config::parse("[auth]\nmode = \"off\"\n", &env).unwrap();
        assert_eq!(c.auth.mode, AuthMode::Off);
    }
}
