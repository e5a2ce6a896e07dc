//! The `sluice` binary: CLI and wiring only.

use anyhow::Context;
use clap::{Parser, Subcommand};
use sluice_config::{AuthMode, Config};
use sluice_server::Gateway;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

mod audit;
mod keys;
mod pins;
mod scan_config;

/// mimalloc: the gateway allocates small, short-lived buffers on every call,
/// where it measured well ahead of glibc's allocator (docs/performance.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "sluice",
    version,
    about = "A production gateway for the Model Context Protocol"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve Streamable HTTP at /mcp (plus /healthz and /readyz).
    Serve {
        #[arg(long, short, default_value = "sluice.toml")]
        config: PathBuf,
        /// Overrides listen.addr.
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Serve the same gateway over stdin/stdout.
    Stdio {
        #[arg(long, short, default_value = "sluice.toml")]
        config: PathBuf,
    },
    /// Validate the config and print every problem; exit 1 on any.
    Check {
        #[arg(long, short, default_value = "sluice.toml")]
        config: PathBuf,
    },
    /// Review and approve tool definitions that changed after they were pinned.
    Pins {
        #[arg(long, short, default_value = "sluice.toml", global = true)]
        config: PathBuf,
        #[command(subcommand)]
        command: pins::PinsCommand,
    },
    /// Create, list, revoke and rotate API keys (`[auth.api_keys]`).
    Keys {
        #[arg(long, short, default_value = "sluice.toml", global = true)]
        config: PathBuf,
        #[command(subcommand)]
        command: keys::KeysCommand,
    },
    /// Check the hash chain of an audit log.
    Audit {
        #[command(subcommand)]
        command: audit::AuditCommand,
    },
    /// Scan tool definitions or tool outputs offline for poisoning, or start the
    /// servers of a config and scan what they offer.
    /// Exit code: 0 clean, 1 suspicious, 2 malicious, 3 could not scan.
    Scan {
        /// JSON Lines of tool definitions (`description`, `name`, `inputSchema`, …).
        #[arg(
            long,
            conflicts_with_all = ["outputs", "config"],
            required_unless_present_any = ["outputs", "config"]
        )]
        definitions: Option<PathBuf>,
        /// JSON Lines of tool outputs (`text`).
        #[arg(long, conflicts_with = "config")]
        outputs: Option<PathBuf>,
        /// A Sluice config, or a Claude Code (`.mcp.json`, `~/.claude.json`), Claude
        /// Desktop, Cursor or VS Code MCP config: start each server, list its tools,
        /// prompts and resources, scan them, stop it.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Output format: `jsonl` for --definitions/--outputs (the default there);
        /// `text` (default), `json` or `sarif` for --config.
        #[arg(long, value_parser = ["jsonl", "text", "json", "sarif"])]
        format: Option<String>,
        /// With --config: time allowed per server to start and list everything
        /// (`30s`, `2m`, `500ms`, or seconds).
        #[arg(long, default_value = "30s", value_parser = scan_config::parse_duration)]
        timeout: Duration,
        /// With --config: servers started at once.
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
        jobs: u16,
        /// With --config: no progress on stderr.
        #[arg(long, short)]
        quiet: bool,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // A usage error of `scan` is "could not scan" (3), not "malicious" (clap's 2).
        Err(e) if e.use_stderr() && std::env::args().nth(1).as_deref() == Some("scan") => {
            let _ = e.print();
            return ExitCode::from(3);
        }
        Err(e) => e.exit(),
    };
    if let Command::Scan {
        config: Some(config),
        format,
        timeout,
        jobs,
        quiet,
        ..
    } = &cli.command
    {
        return scan_config::main(config, format.as_deref(), *timeout, *jobs, *quiet);
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let path = match &cli.command {
        Command::Serve { config, .. }
        | Command::Stdio { config }
        | Command::Check { config }
        | Command::Pins { config, .. }
        | Command::Keys { config, .. } => config.clone(),
        Command::Audit { command } => return audit::run(command),
        Command::Scan {
            definitions,
            outputs,
            format,
            ..
        } => {
            if format.as_deref().is_some_and(|f| f != "jsonl") {
                eprintln!(
                    "error: --definitions and --outputs write jsonl; text, json and sarif are for --config"
                );
                return ExitCode::from(3);
            }
            return scan(definitions.as_deref(), outputs.as_deref());
        }
    };
    let config = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            for p in &e.problems {
                eprintln!("error: {p}");
            }
            eprintln!("{}: {} problem(s)", path.display(), e.problems.len());
            return ExitCode::from(1);
        }
    };
    let result = match cli.command {
        Command::Check { .. } => {
            println!("{}: ok ({} servers)", path.display(), config.servers.len());
            return ExitCode::SUCCESS;
        }
        Command::Pins { command, .. } => return pins::run(&config, command),
        Command::Keys { command, .. } => return keys::run(&config, command),
        Command::Serve { listen, .. } => run(serve(config, listen)),
        Command::Stdio { .. } => run(stdio(config)),
        Command::Scan { .. } | Command::Audit { .. } => unreachable!("handled above"),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// `sluice scan --definitions|--outputs FILE`: one JSON line per input line.
fn scan(definitions: Option<&std::path::Path>, outputs: Option<&std::path::Path>) -> ExitCode {
    let (path, outputs_mode) = match (definitions, outputs) {
        (Some(p), _) => (p, false),
        (None, Some(p)) => (p, true),
        (None, None) => unreachable!("clap requires one"),
    };
    let file = match std::fs::File::open(path) {
        Ok(f) => std::io::BufReader::new(f),
        Err(e) => {
            eprintln!("error: cannot read {}: {e}", path.display());
            return ExitCode::from(3);
        }
    };
    let out = std::io::BufWriter::new(std::io::stdout().lock());
    let opts = sluice_scan::JsonlOptions::default();
    let result = if outputs_mode {
        sluice_scan::scan_outputs_jsonl(file, out, &opts)
    } else {
        sluice_scan::scan_definitions_jsonl(file, out, &opts)
    };
    match result {
        Ok(summary) => ExitCode::from(summary.exit_code() as u8),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(3)
        }
    }
}

fn run(f: impl std::future::Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?
        .block_on(f)
}

/// How long start-up waits for each upstream's first connection attempt.
const CONNECT_WAIT: Duration = Duration::from_secs(60);
/// How long a stopping server's process group gets between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(2);

async fn serve(mut config: Config, listen: Option<SocketAddr>) -> anyhow::Result<()> {
    if let Some(addr) = listen {
        config.listen.addr = addr;
    }
    let addr = config.listen.addr;
    check_exposure(&config)?;
    if !addr.ip().is_loopback() && config.listen.allowed_hosts.is_empty() {
        tracing::warn!(%addr, "listening beyond loopback, but only loopback Host headers are allowed; set listen.allowed_hosts");
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let local = listener.local_addr()?;
    let auth =
        sluice_auth::Authenticator::from_config(&config.auth, &format!("http://{local}/mcp"))
            .await
            .map_err(|e| anyhow::anyhow!("opening the API key store: {e}"))?
            .map(std::sync::Arc::new);
    match (&auth, config.auth.mode) {
        (Some(a), _) => {
            let store = a.keys().map(|k| k.store());
            tracing::info!(
                keys = store.map(|s| s.kind()),
                location = store.map(|s| s.location()),
                scopes = ?config.auth.required_scopes,
                metadata = a.metadata_url(),
                "authentication required on /mcp"
            );
        }
        (None, AuthMode::Off) => {
            tracing::warn!(%addr, "authentication is off (auth.mode = \"off\"): anyone who reaches the listener can call every tool");
        }
        (None, _) => {
            tracing::warn!(%addr, "no [auth] section: the gateway is open to anyone who reaches this loopback listener; set auth.mode = \"required\" to require API keys");
            eprintln!(
                "warning: no [auth] section: /mcp is open to local clients (listening on loopback only); see docs/auth.md"
            );
        }
    }
    let audit = sluice_audit::AuditLog::open(&config.audit)?;
    let gw = Gateway::start(config, audit, CONNECT_WAIT)
        .await
        .context("opening the session store")?;
    tracing::info!("sluice listening on http://{local}/mcp");
    eprintln!("sluice listening on http://{local}/mcp");
    sluice_server::http::serve(gw.clone(), auth, listener, shutdown_signal()).await?;
    tracing::info!("shutting down");
    gw.shutdown(STOP_GRACE).await;
    Ok(())
}

/// The safe default: without an `[auth]` mode the gateway serves only a
/// loopback listener. Any other address needs `auth.mode = "required"`, or
/// `"off"` written explicitly.
fn check_exposure(config: &Config) -> anyhow::Result<()> {
    let addr = config.listen.addr;
    if config.auth.mode == AuthMode::Unset && !addr.ip().is_loopback() {
        anyhow::bail!(
            "refusing to listen on {addr} without authentication: anyone who reaches it could call every tool. \
             Set auth.mode = \"required\" (with [auth.api_keys] pepper, then `sluice keys create`), \
             or write auth.mode = \"off\" to serve it open on purpose, or listen on 127.0.0.1 (see docs/auth.md)"
        );
    }
    Ok(())
}

async fn stdio(config: Config) -> anyhow::Result<()> {
    let audit = sluice_audit::AuditLog::open(&config.audit)?;
    let gw = Gateway::start(config, audit, CONNECT_WAIT)
        .await
        .context("opening the session store")?;
    tokio::select! {
        r = sluice_server::stdio::serve(gw.clone(), tokio::io::stdin(), tokio::io::stdout()) => r?,
        _ = shutdown_signal() => {}
    }
    gw.shutdown(STOP_GRACE).await;
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
