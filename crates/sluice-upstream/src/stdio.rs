//! Stdio upstreams: a child process per server, newline-delimited JSON-RPC on
//! its stdin/stdout, stderr logged under the server's name.
//!
//! The child runs in its own process group so stopping it stops everything it
//! started, and it receives SIGKILL if the gateway dies (PR_SET_PDEATHSIG), so
//! no server outlives the gateway.

use crate::UpstreamEvent;
use crate::duplex::Duplex;
use sluice_config::Secret;
use sluice_pipeline::ServerId;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;
use tokio::sync::{mpsc, oneshot};

/// A running child: its process group id and its message channel.
pub(crate) struct Child {
    pub pgid: u32,
    pub duplex: Arc<Duplex>,
}

pub(crate) struct Spec<'a> {
    pub server: ServerId,
    pub name: &'a str,
    pub command: &'a str,
    pub args: &'a [String],
    pub env: &'a [(String, Secret)],
    pub cwd: Option<&'a PathBuf>,
}

/// Starts the child. `closed` fires with the reason when its stdout ends.
pub(crate) fn spawn(
    spec: Spec<'_>,
    events: mpsc::UnboundedSender<UpstreamEvent>,
    closed: oneshot::Sender<String>,
) -> std::io::Result<Child> {
    let mut cmd = Command::new(spec.command);
    cmd.args(spec.args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    for (k, v) in spec.env {
        cmd.env(k, v.expose());
    }
    if let Some(dir) = spec.cwd {
        cmd.current_dir(dir);
    }
    die_with_parent(&mut cmd);
    let mut child = cmd.spawn()?;
    let pgid = child.id().unwrap_or(0);
    let mut stdin = child.stdin.take().expect("piped stdin");
    let stdout = child.stdout.take().expect("piped stdout");
    let stderr = child.stderr.take().expect("piped stderr");
    let name = spec.name.to_string();

    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<String>();
    let duplex = Arc::new(Duplex::new(spec.server, name.clone(), out_tx, events));

    tokio::spawn(async move {
        while let Some(mut line) = out_rx.recv().await {
            line.push('\n');
            if stdin.write_all(line.as_bytes()).await.is_err() || stdin.flush().await.is_err() {
                break;
            }
        }
    });

    let log_name = name.clone();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            tracing::info!(target: "sluice::upstream::stderr", server = %log_name, "{line}");
        }
    });

    let reader_duplex = duplex.clone();
    tokio::spawn(async move {
        let mut reader = BufReader::with_capacity(64 * 1024, stdout);
        let mut buf = Vec::with_capacity(8192);
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = buf.trim_ascii();
                    if !line.is_empty() {
                        reader_duplex.on_message(line);
                    }
                }
            }
        }
        let reason = match child.wait().await {
            Ok(status) => format!("the server process exited ({status})"),
            Err(e) => format!("the server process ended: {e}"),
        };
        tracing::warn!(server = %name, %reason, "stdio upstream stopped");
        reader_duplex.close(reason.clone());
        let _ = closed.send(reason);
    });

    Ok(Child { pgid, duplex })
}

/// Sends `signal` to the child's whole process group.
pub(crate) fn kill_group(pgid: u32, signal: nix::sys::signal::Signal) {
    if pgid > 1 {
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid as i32), signal);
    }
}

/// Asks the kernel to SIGKILL the child when the gateway dies, so a crashed
/// or `kill -9`ed gateway leaves no orphaned servers.
#[allow(unsafe_code)]
fn die_with_parent(cmd: &mut Command) {
    // SAFETY: the closure runs between fork and exec and only calls prctl,
    // which is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                .map_err(std::io::Error::from)
        });
    }
}
