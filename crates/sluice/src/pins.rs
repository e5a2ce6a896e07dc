//! `sluice pins list | diff SERVER TOOL | approve SERVER [TOOL]`: review and
//! approve tool definitions that changed after they were pinned.

use sluice_config::Config;
use sluice_store::PinStore;
use std::process::ExitCode;

/// What to do with the pins.
#[derive(clap::Subcommand)]
pub(crate) enum PinsCommand {
    /// Every pinned definition, and the changes waiting for approval.
    List,
    /// What changed in a held-back definition.
    Diff { server: String, tool: String },
    /// Accepts the changed definitions of a server (one tool, or all).
    Approve {
        server: String,
        tool: Option<String>,
    },
}

pub(crate) fn run(config: &Config, cmd: PinsCommand) -> ExitCode {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime starts");
    rt.block_on(async {
        // The gateway's own pin store: SQLite at `pins_path`, or PostgreSQL at `pins_url`.
        let pins = match PinStore::from_config(&config.defence).await {
            Ok(p) => p,
            Err(e) => return fail(e),
        };
        match cmd {
            PinsCommand::List => match pins.list().await {
                Ok(rows) => {
                    println!(
                        "{:<20} {:<32} {:<10} fingerprint",
                        "server", "tool", "state"
                    );
                    for r in rows {
                        let item = if r.item == "#instructions" {
                            "(instructions)"
                        } else {
                            &r.item
                        };
                        let state = if r.pending.is_some() {
                            "CHANGED"
                        } else {
                            "pinned"
                        };
                        println!(
                            "{:<20} {:<32} {:<10} {}",
                            r.server, item, state, r.fingerprint
                        );
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            },
            PinsCommand::Diff { server, tool } => match pins.pending(&server, &tool).await {
                Ok(Some((pinned, current))) => {
                    let pinned = serde_json::from_str(&pinned).unwrap_or_default();
                    let current = serde_json::from_str(&current).unwrap_or_default();
                    let diff = sluice_scan::diff_definitions(&pinned, &current);
                    println!("{}", diff.render());
                    ExitCode::SUCCESS
                }
                Ok(None) => {
                    eprintln!(
                        "no change is waiting for approval for `{tool}` of server `{server}`"
                    );
                    ExitCode::from(1)
                }
                Err(e) => fail(e),
            },
            PinsCommand::Approve { server, tool } => {
                match pins.approve(&server, tool.as_deref()).await {
                    Ok(0) => {
                        eprintln!("nothing to approve for server `{server}`");
                        ExitCode::from(1)
                    }
                    Ok(n) => {
                        println!("approved {n} changed definition(s) of `{server}`");
                        ExitCode::SUCCESS
                    }
                    Err(e) => fail(e),
                }
            }
        }
    })
}

fn fail(e: sluice_store::StoreError) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(1)
}
