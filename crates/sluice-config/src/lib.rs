//! `sluice.toml`: deserialized into raw structs (unknown keys rejected), then
//! validated into typed [`Config`] with every problem reported at once, each
//! naming its key. Values may read the environment with `${VAR}` or
//! `${VAR:-default}`; secrets (header values, env values) are never echoed in
//! errors or `Debug` output.

#![warn(missing_docs)]

mod raw;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// A validated gateway configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// `[listen]`: the downstream HTTP listener.
    pub listen: Listen,
    /// `[gateway]`: gateway-wide paging, timeouts and the health tool.
    pub gateway: Gateway,
    /// `[health]`: active probes of every upstream.
    pub health: Health,
    /// `[defence]`: tool pinning and output scanning.
    pub defence: Defence,
    /// `[sessions]`: where sessions live and how SSE streams behave.
    pub sessions: Sessions,
    /// `[audit]`: the tamper-evident audit log.
    pub audit: Audit,
    /// `[auth]`: who may call `/mcp`.
    pub auth: Auth,
    /// `[[servers]]`: the upstream MCP servers, in file order.
    pub servers: Vec<Server>,
    /// `[[limits]]`: rate limits and quotas on client requests.
    pub limits: Vec<Limit>,
    /// `[loop_guard]`: agent-loop detection.
    pub loop_guard: LoopGuard,
}

/// Downstream HTTP listener settings.
#[derive(Debug, Clone)]
pub struct Listen {
    /// Address to bind; default `127.0.0.1:8080`.
    pub addr: SocketAddr,
    /// Origins allowed besides loopback ones (`http://localhost:*`, `http://127.0.0.1:*`, `http://[::1]:*`).
    pub allowed_origins: Vec<String>,
    /// Host header values allowed besides loopback names. `"*"` allows any.
    pub allowed_hosts: Vec<String>,
    /// Largest accepted request body; default 4 MiB.
    pub max_body_bytes: usize,
}

/// Gateway-wide behaviour.
#[derive(Debug, Clone)]
pub struct Gateway {
    /// Items per page of a merged list; default 1000.
    pub page_size: usize,
    /// Default upstream request timeout; default 60 s.
    pub request_timeout: Duration,
    /// Expose the `sluice__health` tool to agents; default true.
    pub health_tool: bool,
    /// Key that signs `requestState` of `input_required` results, so every
    /// replica can verify them; random per process when unset.
    pub state_key: Option<Secret>,
}

/// Session settings (2025-11-25 era).
#[derive(Debug, Clone)]
pub struct Sessions {
    /// Where sessions and their SSE event logs live; default SQLite.
    pub store: Store,
    /// A session unused this long is ended; default 30 min.
    pub idle_timeout: Duration,
    /// Most sessions at once; default 100000.
    pub max_sessions: usize,
    /// SSE events kept per stream for `Last-Event-ID` replay; default 256.
    pub replay_events: usize,
    /// SSE events older than this are not replayed; default 5 min.
    pub replay_max_age: Duration,
    /// Open SSE streams on this gateway at once; default 10000.
    pub max_streams: usize,
    /// Open SSE streams per session; default 8.
    pub max_streams_per_session: usize,
    /// A request not answered within this becomes an SSE stream (a priming
    /// event, then keep-alives), in both eras; default 1 s.
    pub sse_after: Duration,
    /// A comment is sent on an SSE stream quiet for this long, so proxies
    /// with an idle timeout keep it open; default 15 s.
    pub sse_keepalive: Duration,
}

/// Where sessions and their SSE event logs live (`sessions.store`; default SQLite).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Store {
    /// In this process only: sessions end with it.
    Memory,
    /// A SQLite file: sessions survive restarts of a single gateway.
    Sqlite {
        /// The file (`sessions.sqlite_path`; default `sluice-sessions.db`,
        /// relative to the config file).
        path: PathBuf,
    },
    /// Redis: sessions shared by every replica, which any replica can serve.
    Redis {
        /// The Redis to use (`sessions.redis_url`; default `redis://127.0.0.1:6379`).
        url: Secret,
        /// Prefix of every key and channel (`sessions.key_prefix`; default `sluice:`).
        key_prefix: String,
    },
}

impl Store {
    /// The store's kind, for errors and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Store::Memory => "memory",
            Store::Sqlite { .. } => "sqlite",
            Store::Redis { .. } => "redis",
        }
    }
}

/// One upstream MCP server.
#[derive(Debug, Clone)]
pub struct Server {
    /// Unique name; used in logs, errors and as the default prefix.
    pub name: String,
    /// Prefix of exposed tool and prompt names (`{prefix}__{name}`); empty = unprefixed.
    pub prefix: String,
    /// `/readyz` fails while a required server is not connected; default true.
    pub required: bool,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Per-tool timeouts, by the upstream's own tool name.
    pub tool_timeouts: BTreeMap<String, Duration>,
    /// How to reach the server: `command` (stdio) or `url` (HTTP).
    pub transport: Transport,
    /// Retries of a request that never reached the server (and, for
    /// idempotent tools, of one whose connection broke); default 2.
    pub retries: u32,
    /// Tools safe to retry after they may have run: exact names, or a prefix ending in `*`.
    pub idempotent_tools: Vec<String>,
    /// `[servers.circuit_breaker]`: when calls to the server fail fast.
    pub breaker: Breaker,
    /// Stdio: restart the server after this many calls (none by default).
    pub max_calls: Option<u64>,
    /// Stdio: restart the server after it has run this long (none by default).
    pub max_lifetime: Option<Duration>,
    /// At most this many calls in flight to the server at once (none by default).
    pub bulkhead: Option<Bulkhead>,
    /// Caps on what a tool result may carry back to the client.
    pub output: OutputLimits,
    /// Whether client sessions share one connection to this server.
    pub isolation: Isolation,
    /// What the poisoning detector's verdicts do for this server.
    pub scan: ScanPolicy,
    /// Hold back changed tool definitions until an operator approves them.
    pub pinning: bool,
    /// The server's `destructiveHint` annotations are believed (for `approval = "destructive"`).
    pub trusted: bool,
    /// When a call must be approved by the user first.
    pub approval: Approval,
    /// Per-tool overrides of `approval`, by the server's own tool name.
    pub tool_approval: BTreeMap<String, Approval>,
}

/// What a malicious verdict does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanPolicy {
    /// Malicious tools are hidden and refused; malicious outputs withheld.
    Block,
    /// Kept, logged and counted.
    Warn,
    /// Not scanned.
    Off,
}

/// When a tool call needs the user's approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Approval {
    /// No call needs approval (the default).
    Never,
    /// Every call asks the user first.
    Always,
    /// When the tool is annotated `destructiveHint` by a `trusted` server.
    Destructive,
}

/// Defence against poisoned and changed tools.
#[derive(Debug, Clone)]
pub struct Defence {
    /// The pin database (SQLite); relative paths are relative to the config file.
    /// Ignored when `pins_url` is set.
    pub pins_path: PathBuf,
    /// A PostgreSQL URL (`postgres://` or `postgresql://`): pins live there,
    /// shared by every replica. Unset by default (SQLite at `pins_path`).
    pub pins_url: Option<Secret>,
    /// Scan every tool output; default true.
    pub scan_outputs: bool,
}

/// One `[[limits]]` rule: a rate and a burst (GCRA) per key.
#[derive(Debug, Clone)]
pub struct Limit {
    /// Shown in refusals, logs and metrics.
    pub name: String,
    /// What the budget is kept per (`principal` by default); none = one
    /// budget for everyone.
    pub per: Vec<LimitKey>,
    /// How fast the budget refills.
    pub rate: Rate,
    /// How many requests may come at once (default: the rate's count).
    pub burst: u32,
    /// The methods counted (default `tools/call` only).
    pub methods: Vec<&'static str>,
    /// Where budgets are kept.
    pub store: LimitStore,
    /// What to do when the shared store does not answer.
    pub on_store_error: OnStoreError,
    /// How a refused `tools/call` is told.
    pub answer: LimitAnswer,
}

/// A dimension a limit's budget is kept per.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKey {
    /// Who calls (until identity is configured: the client's address).
    Principal,
    /// The caller's tenant.
    Tenant,
    /// The profile (virtual server) called through.
    Profile,
    /// The server called.
    Server,
    /// The tool (or prompt) called, by its exposed name.
    Tool,
}

/// `count` requests per `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Requests allowed per `per` (at least 1).
    pub count: u64,
    /// The period the count refills over (`s`, `min`, `h` or `day`).
    pub per: Duration,
}

impl Rate {
    /// The time one request's share of the budget takes to refill.
    pub fn interval(&self) -> Duration {
        self.per / self.count.min(u32::MAX as u64) as u32
    }
}

/// Where a limit's budgets live.
#[derive(Debug, Clone)]
pub enum LimitStore {
    /// In this process (the default).
    Local,
    /// In Redis, shared by replicas.
    Redis {
        /// The Redis (`redis_url`; default `[sessions].redis_url` when sessions use Redis).
        url: Secret,
    },
}

/// A shared limit's behaviour while its store does not answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnStoreError {
    /// Serve the request (the default).
    Allow,
    /// Refuse it (503).
    Deny,
}

/// How a refused `tools/call` is told to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitAnswer {
    /// A JSON-RPC error (HTTP 429 with `Retry-After` on 2026-07-28 requests).
    Error,
    /// An `isError` tool result saying the same.
    ToolResult,
}

/// A server's bulkhead: calls beyond `max_concurrent` wait in a queue of
/// `max_queue` for at most `queue_timeout`, then get an explicit "busy".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bulkhead {
    /// Calls in flight to the server at once (`max_concurrent`; at least 1).
    pub max_concurrent: usize,
    /// Default 100; 0 refuses at once when all slots are taken.
    pub max_queue: usize,
    /// Default 10 s.
    pub queue_timeout: Duration,
}

/// `[loop_guard]`: the same caller calling the same tool with the same
/// arguments `repeats` times within `window` is told it is looping.
#[derive(Debug, Clone)]
pub struct LoopGuard {
    /// Off by default.
    pub enabled: bool,
    /// Identical calls within `window` that count as a loop (default 5).
    pub repeats: u32,
    /// Default 60 s.
    pub window: Duration,
    /// Exposed tool names never treated as loops (pollers).
    pub exempt_tools: Vec<String>,
    /// Per-tool `repeats`.
    pub tool_repeats: BTreeMap<String, u32>,
}

/// The tamper-evident audit log (JSON Lines, hash-chained).
#[derive(Debug, Clone)]
pub struct Audit {
    /// Write the audit log; default true. When false no file is created.
    pub enabled: bool,
    /// The log file; default `sluice-audit.jsonl`, relative to the config file.
    pub path: PathBuf,
    /// Chains records with HMAC-SHA256 under this key instead of plain SHA-256,
    /// so that only a key holder can rewrite the chain.
    pub hmac_key: Option<Secret>,
    /// What a `tool_call` record keeps of the call's arguments.
    pub arguments: AuditArguments,
    /// Argument keys redacted besides the built-in ones (whole key, any case,
    /// `-` and `_` ignored).
    pub redact_keys: Vec<String>,
    /// Recorded arguments longer than this (serialized) are cut; default 4096.
    pub max_argument_bytes: usize,
}

/// Who may call the gateway (`[auth]`).
#[derive(Debug, Clone)]
pub struct Auth {
    /// Whether every request must authenticate; see [`AuthMode`].
    pub mode: AuthMode,
    /// The gateway's canonical resource URI (the protected-resource metadata's
    /// `resource`); `None` means `http://{the bound listen address}/mcp`.
    pub public_url: Option<String>,
    /// Scopes every request needs; missing ones get 403 `insufficient_scope`.
    /// Default none.
    pub required_scopes: Vec<String>,
    /// API keys (`[auth.api_keys]`).
    pub api_keys: ApiKeys,
}

/// Whether requests must authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// No `[auth]` mode written: open, which is allowed only on a loopback
    /// listener (the gateway says so at start and refuses any other address).
    Unset,
    /// Every request to `/mcp` needs a valid credential.
    Required,
    /// Open, written explicitly: allowed on any address.
    Off,
}

/// API keys (`[auth.api_keys]`).
#[derive(Debug, Clone)]
pub struct ApiKeys {
    /// Accept API keys; default true.
    pub enabled: bool,
    /// The server-side pepper: only HMAC-SHA-256(pepper, secret) is stored.
    /// Needed to create or verify keys; at least 32 bytes.
    pub pepper: Option<Secret>,
    /// The key database (SQLite); default `sluice-keys.db`, relative to the
    /// config file. Ignored when `url` is set.
    pub path: PathBuf,
    /// A PostgreSQL URL: keys live there, shared by every replica.
    pub url: Option<Secret>,
}

/// What the audit log keeps of tool-call arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditArguments {
    /// Kept, with secret-looking values replaced by `"[redacted]"` (the default).
    Redacted,
    /// Not recorded.
    Omit,
    /// Kept as sent.
    Full,
}

/// How client sessions share an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    /// One pooled connection for every session (the default).
    Shared,
    /// A connection (a process, for stdio) per client session, initialized
    /// with that client's capabilities: for servers that keep state.
    PerSession,
}

impl Server {
    /// True when `tool` (the server's own name) may be retried after it may have run.
    pub fn is_idempotent(&self, tool: &str) -> bool {
        self.idempotent_tools
            .iter()
            .any(|p| match p.strip_suffix('*') {
                Some(prefix) => tool.starts_with(prefix),
                None => p == tool,
            })
    }

    /// The output-token budget of `tool`.
    pub fn max_output_tokens(&self, tool: &str) -> usize {
        self.output
            .tool_max_output_tokens
            .get(tool)
            .copied()
            .unwrap_or(self.output.max_output_tokens)
    }
}

/// Circuit breaker settings of one upstream.
#[derive(Debug, Clone)]
pub struct Breaker {
    /// Opens after this many failures in a row; default 5.
    pub consecutive_failures: u32,
    /// …or when at least this share of calls in `window` failed; default 0.5.
    pub failure_rate: f64,
    /// Window of the failure rate; default 60 s.
    pub window: Duration,
    /// The rate counts only once the window holds this many calls; default 10.
    pub min_calls: u32,
    /// How long it stays open before letting a probe through; default 30 s.
    pub open_for: Duration,
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker {
            consecutive_failures: 5,
            failure_rate: 0.5,
            window: Duration::from_secs(60),
            min_calls: 10,
            open_for: Duration::from_secs(30),
        }
    }
}

/// Limits on what a tool returns to the model.
#[derive(Debug, Clone)]
pub struct OutputLimits {
    /// Estimated tokens (≈ 4 bytes each) of text a tool result may carry; default 10000.
    pub max_output_tokens: usize,
    /// Per-tool overrides of `max_output_tokens`.
    pub tool_max_output_tokens: BTreeMap<String, usize>,
    /// Largest image, audio or blob item (base64 bytes); default 1 MiB.
    pub max_binary_bytes: usize,
}

impl Default for OutputLimits {
    fn default() -> Self {
        OutputLimits {
            max_output_tokens: 10_000,
            tool_max_output_tokens: BTreeMap::new(),
            max_binary_bytes: 1024 * 1024,
        }
    }
}

/// Active health checks.
#[derive(Debug, Clone)]
pub struct Health {
    /// Time between probes of each server; default 15 s.
    pub interval: Duration,
    /// A probe not answered within this is a failure; default 5 s.
    pub timeout: Duration,
}

/// How to reach an upstream.
#[derive(Debug, Clone)]
pub enum Transport {
    /// A child process speaking newline-delimited JSON-RPC on stdin/stdout.
    Stdio {
        /// Program to run (`command`).
        command: String,
        /// Its arguments (`args`; default none).
        args: Vec<String>,
        /// Extra environment, on top of the gateway's (`env`); values are secrets.
        env: Vec<(String, Secret)>,
        /// Working directory (`cwd`); default the gateway's.
        cwd: Option<PathBuf>,
    },
    /// A remote server over HTTP.
    Http {
        /// The server's MCP endpoint (`url`).
        url: String,
        /// Headers sent upstream (`headers`); values are secrets.
        headers: Vec<(String, Secret)>,
        /// Which HTTP transport to speak (`transport`; default auto).
        mode: HttpMode,
    },
}

/// Which HTTP transport an upstream speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpMode {
    /// Try Streamable HTTP, fall back to legacy HTTP+SSE.
    Auto,
    /// Streamable HTTP only, with no fallback to legacy SSE.
    StreamableHttp,
    /// Legacy HTTP+SSE (protocol 2024-11-05).
    Sse,
}

/// A value that must not appear in logs or errors.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

impl Secret {
    /// The secret value itself, for the one place that must send or use it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// One configuration problem, naming its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The offending key, dotted (e.g. `servers[0].timeout`), or the file path.
    pub key: String,
    /// What is wrong with it.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Every problem found in a configuration.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    /// Every problem found, in the order they were found.
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &std::path::Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            problems: vec![Problem {
                key: path.display().to_string(),
                message: format!("cannot read config file: {e}"),
            }],
        })?;
        let mut config = Self::parse(&text, &|k| std::env::var(k).ok())?;
        // A relative SQLite path is relative to the config file, not the working directory.
        if let Store::Sqlite { path: db } = &mut config.sessions.store
            && db.is_relative()
            && let Some(dir) = path.parent()
        {
            *db = dir.join(&*db);
        }
        if config.defence.pins_path.is_relative()
            && let Some(dir) = path.parent()
        {
            config.defence.pins_path = dir.join(&config.defence.pins_path);
        }
        if config.auth.api_keys.path.is_relative()
            && let Some(dir) = path.parent()
        {
            config.auth.api_keys.path = dir.join(&config.auth.api_keys.path);
        }
        if config.audit.path.is_relative()
            && let Some(dir) = path.parent()
        {
            config.audit.path = dir.join(&config.audit.path);
        }
        Ok(config)
    }

    /// Parses and validates config text; `env` resolves `${VAR}` references.
    pub fn parse(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let raw: raw::RawConfig = toml::from_str(text).map_err(|e| ConfigError {
            problems: vec![toml_problem(text, &e)],
        })?;
        raw::validate(raw, env)
    }
}

/// A TOML error, keyed by where it is: `line L, column C` (both 1-based,
/// the column in characters), as an editor shows a position.
fn toml_problem(text: &str, e: &toml::de::Error) -> Problem {
    let msg = e.message().trim().to_string();
    let key = match e.span() {
        Some(s) => {
            let (line, column) = line_column(text, s.start);
            format!("line {line}, column {column}")
        }
        None => "sluice.toml".to_string(),
    };
    Problem { key, message: msg }
}

/// The 1-based line and character column of byte `at` of `text` (clamped
/// to the text, and to the start of a character).
fn line_column(text: &str, at: usize) -> (usize, usize) {
    let mut at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    let before = &text[..at];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (
        before.matches('\n').count() + 1,
        before[line_start..].chars().count() + 1,
    )
}
