//! The gateway over stdin/stdout, for agents that launch a local process.
//! One client, one implicit session; logs go to stderr.

use crate::gateway::Gateway;
use crate::session::{Outbound, Session};
use sluice_mcp::RpcError;
use sluice_mcp::jsonrpc::{self, Message};
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

struct Lines(mpsc::UnboundedSender<String>);

impl Outbound for Lines {
    fn send(&self, msg: String) -> bool {
        self.0.send(msg).is_ok()
    }
}

/// Serves one client on `input`/`output` until `input` ends.
pub async fn serve(
    gw: Arc<Gateway>,
    input: impl AsyncRead + Unpin,
    mut output: impl AsyncWrite + Unpin + Send + 'static,
) -> std::io::Result<()> {
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    let writer = tokio::spawn(async move {
        while let Some(mut line) = rx.recv().await {
            line.push('\n');
            if output.write_all(line.as_bytes()).await.is_err() || output.flush().await.is_err() {
                break;
            }
        }
    });
    let out: Arc<dyn Outbound> = Arc::new(Lines(tx.clone()));
    let max = gw.config.listen.max_body_bytes;
    let mut session: Option<Arc<Session>> = None;
    let mut reader = BufReader::new(input);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = (&mut reader)
            .take(max as u64 + 1)
            .read_until(b'\n', &mut buf)
            .await?;
        if n == 0 {
            break;
        }
        if buf.len() > max && buf.last() != Some(&b'\n') {
            // Skip the rest of the oversized line, then report it.
            let mut sink = Vec::new();
            reader.read_until(b'\n', &mut sink).await?;
            let err = RpcError::invalid_request(format!(
                "message exceeds {max} bytes (listen.max_body_bytes)"
            ));
            let _ = tx.send(jsonrpc::response_err(None, &err.to_json()));
            continue;
        }
        let line = buf.trim_ascii();
        if line.is_empty() {
            continue;
        }
        let msg = match Message::parse(line) {
            Ok(m) => m,
            Err(f) => {
                let _ = tx.send(jsonrpc::response_err(f.id.as_ref(), &f.error.to_json()));
                continue;
            }
        };
        match (msg, &session) {
            (Message::Request(r), _) if r.method == "initialize" => {
                match gw.initialize(r.params.as_deref()) {
                    Ok(init) => {
                        if let Some(old) = session.take() {
                            gw.forget_local(&old.id);
                        }
                        let s = Arc::new(Session::new(
                            "stdio".into(),
                            init.protocol_version,
                            init.capabilities,
                            init.client_info,
                            &crate::session::Caller::default(),
                        ));
                        s.set_unsolicited(Some(out.clone()));
                        gw.register_local(s.clone());
                        session = Some(s);
                        let _ = tx.send(jsonrpc::response_ok(&r.id, &init.result));
                    }
                    Err(e) => {
                        let _ = tx.send(jsonrpc::response_err(Some(&r.id), &e.to_json()));
                    }
                }
            }
            (Message::Request(r), None) if r.method == "ping" => {
                let _ = tx.send(jsonrpc::response_ok(&r.id, "{}"));
            }
            (Message::Request(r), None) => {
                let err = RpcError::invalid_request(format!(
                    "`{}` before initialize; send initialize first",
                    r.method
                ));
                let _ = tx.send(jsonrpc::response_err(Some(&r.id), &err.to_json()));
            }
            (Message::Request(r), Some(s)) => {
                s.touch();
                let tx = tx.clone();
                gw.spawn_request(s, r, out.clone(), move |line| {
                    if let Some(l) = line {
                        let _ = tx.send(l);
                    }
                });
            }
            (Message::Notification(n), Some(s)) => gw.handle_notification(s, n).await,
            (Message::Response(r), Some(s)) => gw.handle_response(s, r),
            (_, None) => tracing::debug!("message before initialize ignored"),
        }
    }
    if let Some(s) = session {
        gw.forget_local(&s.id);
    }
    drop(tx);
    drop(out);
    let _ = writer.await;
    Ok(())
}
