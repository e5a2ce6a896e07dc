//! `sluice-fixture`: the MCP fixture server (see `sluice_testkit::fixture`).
//!
//! ```text
//! sluice-fixture [--era legacy|modern|dual] [--name NAME] [--page-size N] [stdio]
//! sluice-fixture [--era legacy|modern|dual] [--name NAME] [--page-size N] http [--listen 127.0.0.1:0] [--sse-responses]
//! ```
//!
//! `--era` picks the protocol eras served: `dual` (default) serves the
//! initialize handshake (2025-11-25) and the stateless 2026-07-28 side by
//! side, per request; `modern` only 2026-07-28 (initialize is refused with
//! an error naming it, HTTP 400); `legacy` only the handshake, like a server
//! that predates 2026 (`server/discover` is -32601 on stdio).
//!
//! In HTTP mode it prints exactly one line to stdout once bound:
//! `listening on http://127.0.0.1:PORT/mcp`.

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sluice_testkit::fixture::{self, Era, Fixture, FixtureConfig};

#[derive(Parser)]
#[command(
    name = "sluice-fixture",
    version,
    about = "MCP fixture server for Sluice's conformance runs, tests and benchmarks"
)]
struct Cli {
    /// serverInfo.name reported by initialize.
    #[arg(long, global = true, default_value = "sluice-fixture")]
    name: String,
    /// Page size of tools/list, resources/list, resources/templates/list and
    /// prompts/list (0: no pagination).
    #[arg(long, global = true, default_value_t = 0)]
    page_size: usize,
    /// Protocol eras served: legacy (2025-11-25 handshake only), modern
    /// (stateless 2026-07-28 only) or dual (both, per request).
    #[arg(long, global = true, default_value = "dual", value_parser = parse_era)]
    era: Era,
    /// Secret the 2026 requestState HMAC key is derived from (replicas that
    /// share it accept each other's states); default: random per process.
    #[arg(long, global = true)]
    state_secret: Option<String>,
    /// ttlMs of the cacheable 2026 results (lists, resources/read, discover).
    #[arg(long, global = true, default_value_t = 0)]
    ttl_ms: u64,
    /// Exit at once with this code, before serving anything (fault tests).
    #[arg(long, global = true)]
    exit_at_start: Option<u8>,
    #[command(subcommand)]
    transport: Option<Transport>,
}

fn parse_era(s: &str) -> Result<Era, String> {
    s.parse()
}

#[derive(Subcommand)]
enum Transport {
    /// Newline-delimited JSON-RPC on stdin/stdout; logs on stderr (default).
    Stdio,
    /// Streamable HTTP at /mcp.
    Http {
        /// Address to listen on; loopback only.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// Answer every POST carrying a request with an SSE stream (when
        /// accepted), not only tool calls that stream.
        #[arg(long)]
        sse_responses: bool,
        /// Answer every request with this HTTP status (fault tests: 401, 503).
        #[arg(long, default_value_t = 0)]
        status: u16,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let cli = Cli::parse();
    if let Some(code) = cli.exit_at_start {
        eprintln!("sluice-fixture: exiting at start with code {code} (--exit-at-start)");
        return ExitCode::from(code);
    }
    let mut config = FixtureConfig {
        name: cli.name,
        page_size: cli.page_size,
        era: cli.era,
        state_secret: cli.state_secret,
        ttl_ms: cli.ttl_ms,
        ..FixtureConfig::default()
    };
    let result = match cli.transport.unwrap_or(Transport::Stdio) {
        Transport::Stdio => fixture::serve_stdio(Fixture::new(config)).await,
        Transport::Http {
            listen,
            sse_responses,
            status,
        } => {
            config.sse_responses = sse_responses;
            config
                .http_status
                .store(status, std::sync::atomic::Ordering::Relaxed);
            match fixture::bind_loopback(listen).await {
                Ok(listener) => {
                    let addr = listener.local_addr().expect("bound address");
                    let mut stdout = std::io::stdout().lock();
                    let _ = writeln!(stdout, "listening on http://{addr}/mcp");
                    let _ = stdout.flush();
                    drop(stdout);
                    fixture::serve_http(Fixture::new(config), listener).await
                }
                Err(e) => Err(e),
            }
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sluice-fixture: {e}");
            ExitCode::FAILURE
        }
    }
}
