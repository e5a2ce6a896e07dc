//! `sluice audit verify FILE [--key-env VAR]`: checks an audit log's hash chain.

use std::path::PathBuf;
use std::process::ExitCode;

/// What to do with an audit log.
#[derive(clap::Subcommand)]
pub(crate) enum AuditCommand {
    /// Walk the hash chain of an audit log. Exit code: 0 intact, 1 broken
    /// (the first broken line and why), 2 could not verify.
    Verify {
        /// The audit log (JSON Lines).
        file: PathBuf,
        /// Environment variable holding the log's `audit.hmac_key`, for logs
        /// written with one.
        #[arg(long, value_name = "VAR")]
        key_env: Option<String>,
    },
}

pub(crate) fn run(cmd: &AuditCommand) -> ExitCode {
    let AuditCommand::Verify { file, key_env } = cmd;
    let key = match key_env.as_deref().map(std::env::var) {
        None => None,
        Some(Ok(k)) if !k.is_empty() => Some(k),
        Some(_) => {
            eprintln!(
                "error: environment variable {} is not set",
                key_env.as_deref().unwrap_or_default()
            );
            return ExitCode::from(2);
        }
    };
    let input = match std::fs::File::open(file) {
        Ok(f) => std::io::BufReader::new(f),
        Err(e) => {
            eprintln!("error: cannot read {}: {e}", file.display());
            return ExitCode::from(2);
        }
    };
    match sluice_audit::verify(input, key.as_deref().map(str::as_bytes)) {
        Ok(v) => {
            println!("ok: {} records, chain intact", v.records);
            for (line, reason) in &v.restarts {
                println!("note: line {line}: chain_restart: {reason}");
            }
            println!("head: {}", v.head);
            ExitCode::SUCCESS
        }
        Err(sluice_audit::VerifyError::Broken(b)) => {
            println!("broken: {b}");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("error: {}: {e}", file.display());
            ExitCode::from(2)
        }
    }
}
