//! A duplex message channel to one upstream: stdio children and legacy
//! HTTP+SSE servers both send every message on one inbound stream, so both
//! share this request/response matcher.

use crate::{CallCtx, Related, Reply, UpstreamError, UpstreamEvent};
use serde_json::value::RawValue;
use sluice_mcp::jsonrpc::{self, Id, Message};
use sluice_pipeline::ServerId;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::{mpsc, oneshot};

struct Pending {
    done: oneshot::Sender<Result<Box<RawValue>, UpstreamError>>,
    related: Option<mpsc::UnboundedSender<Related>>,
    progress: Option<String>,
}

#[derive(Default)]
struct State {
    /// In-flight calls by upstream id (ids increase, so the last entry is the newest).
    pending: BTreeMap<u64, Pending>,
    /// Progress token (JSON text) → the call it belongs to.
    progress: HashMap<String, mpsc::UnboundedSender<Related>>,
    closed: Option<String>,
}

/// Matches responses to requests over one ordered message stream.
pub(crate) struct Duplex {
    server: ServerId,
    name: String,
    out: mpsc::UnboundedSender<String>,
    next_id: AtomicU64,
    state: Mutex<State>,
    events: mpsc::UnboundedSender<UpstreamEvent>,
}

impl Duplex {
    /// `out` receives serialized messages to write to the server, in order.
    pub(crate) fn new(
        server: ServerId,
        name: String,
        out: mpsc::UnboundedSender<String>,
        events: mpsc::UnboundedSender<UpstreamEvent>,
    ) -> Self {
        Duplex {
            server,
            name,
            out,
            next_id: AtomicU64::new(1),
            state: Mutex::new(State::default()),
            events,
        }
    }

    /// Calls awaiting an answer.
    pub(crate) fn in_flight(&self) -> usize {
        self.state.lock().unwrap().pending.len()
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.state.lock().unwrap().closed.is_some()
    }

    /// Sends a request and waits for its response, the deadline, or the connection's end.
    pub(crate) async fn request(
        &self,
        method: &str,
        params: Option<&str>,
        ctx: CallCtx,
    ) -> Result<Box<RawValue>, UpstreamError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut st = self.state.lock().unwrap();
            if let Some(reason) = &st.closed {
                return Err(UpstreamError::Unavailable(reason.clone()));
            }
            if let (Some(tok), Some(rel)) = (&ctx.progress_token, &ctx.related) {
                st.progress.insert(tok.clone(), rel.clone());
            }
            st.pending.insert(
                id,
                Pending {
                    done: tx,
                    related: ctx.related,
                    progress: ctx.progress_token,
                },
            );
        }
        let mut guard = CancelGuard {
            duplex: self,
            id,
            armed: true,
        };
        if self
            .out
            .send(jsonrpc::request(&Id::Num(id as i64), method, params))
            .is_err()
        {
            guard.armed = false;
            return Err(UpstreamError::Unavailable(
                "the connection is closed".into(),
            ));
        }
        match tokio::time::timeout(ctx.timeout, rx).await {
            Ok(Ok(r)) => {
                guard.armed = false;
                r
            }
            Ok(Err(_)) => {
                guard.armed = false;
                Err(UpstreamError::Transport("the connection closed".into()))
            }
            Err(_) => Err(UpstreamError::Timeout(ctx.timeout)),
        }
    }

    /// Sends a notification.
    pub(crate) fn notify(&self, method: &str, params: Option<&str>) -> Result<(), UpstreamError> {
        self.out
            .send(jsonrpc::notification(method, params))
            .map_err(|_| UpstreamError::Unavailable("the connection is closed".into()))
    }

    /// Fails every pending call; later calls fail fast with `reason`.
    pub(crate) fn close(&self, reason: String) {
        let pending = {
            let mut st = self.state.lock().unwrap();
            st.closed = Some(reason.clone());
            st.progress.clear();
            std::mem::take(&mut st.pending)
        };
        for (_, p) in pending {
            let _ = p.done.send(Err(UpstreamError::Transport(reason.clone())));
        }
    }

    /// Handles one message read from the server.
    pub(crate) fn on_message(&self, bytes: &[u8]) {
        let msg = match Message::parse(bytes) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(server = %self.name, error = %e.error.message, "upstream sent an invalid message");
                // If the broken message names a call in flight, fail that call now
                // rather than letting it run into its timeout.
                if let Some(id) = sniff_id(bytes) {
                    let p = self.state.lock().unwrap().pending.remove(&id);
                    if let Some(p) = p {
                        let _ = p.done.send(Err(UpstreamError::Protocol(format!(
                            "its answer is not valid JSON-RPC ({})",
                            e.error.message
                        ))));
                    }
                }
                return;
            }
        };
        match msg {
            Message::Response(r) => {
                let Id::Num(n) = r.id else {
                    tracing::warn!(server = %self.name, id = %r.id, "response to an id the gateway never sent; dropped");
                    return;
                };
                let p = {
                    let mut st = self.state.lock().unwrap();
                    let p = st.pending.remove(&(n as u64));
                    if let Some(Some(tok)) = p.as_ref().map(|p| &p.progress) {
                        st.progress.remove(tok);
                    }
                    p
                };
                match p {
                    Some(p) => {
                        let _ = p.done.send(r.outcome.map_err(UpstreamError::Rpc));
                    }
                    None => {
                        tracing::debug!(server = %self.name, id = n, "late response to a cancelled or timed-out call; dropped")
                    }
                }
            }
            Message::Notification(n) => self.route_notification(n.method, n.params),
            Message::Request(r) => {
                if r.method == "ping" {
                    let _ = self.out.send(jsonrpc::response_ok(&r.id, "{}"));
                    return;
                }
                let (tx, rx) = oneshot::channel();
                let target = self.newest_related();
                let req = Related::Request {
                    method: r.method.clone(),
                    params: r.params,
                    reply: tx,
                };
                match target {
                    Some(sink) => {
                        if let Err(mpsc::error::SendError(Related::Request {
                            method,
                            params,
                            reply,
                        })) = sink.send(req)
                        {
                            let _ = self.events.send(UpstreamEvent::Request {
                                server: self.server,
                                method,
                                params,
                                reply,
                            });
                        }
                    }
                    None => {
                        let Related::Request {
                            method,
                            params,
                            reply,
                        } = req
                        else {
                            unreachable!()
                        };
                        let _ = self.events.send(UpstreamEvent::Request {
                            server: self.server,
                            method,
                            params,
                            reply,
                        });
                    }
                }
                let out = self.out.clone();
                let id = r.id;
                tokio::spawn(async move {
                    let line = match rx.await {
                        Ok(reply) => reply_line(&id, reply),
                        Err(_) => jsonrpc::response_err(
                            Some(&id),
                            &sluice_mcp::RpcError::internal(
                                "the gateway could not deliver this request to a client",
                            )
                            .to_json(),
                        ),
                    };
                    let _ = out.send(line);
                });
            }
        }
    }

    fn newest_related(&self) -> Option<mpsc::UnboundedSender<Related>> {
        let st = self.state.lock().unwrap();
        st.pending
            .values()
            .rev()
            .find_map(|p| p.related.clone().filter(|s| !s.is_closed()))
    }

    fn route_notification(&self, method: String, params: Option<Box<RawValue>>) {
        let sink = match method.as_str() {
            "notifications/progress" => {
                let tok = params.as_deref().and_then(progress_token);
                let st = self.state.lock().unwrap();
                tok.and_then(|t| st.progress.get(&t).cloned())
            }
            m if m.ends_with("/list_changed") || m == "notifications/resources/updated" => None,
            // Logs and anything else emitted while calls are in flight: on a
            // single shared stream the newest call is the best attribution.
            _ => self.newest_related(),
        };
        let unsent = match sink {
            Some(s) => match s.send(Related::Notification { method, params }) {
                Ok(()) => return,
                Err(mpsc::error::SendError(Related::Notification { method, params })) => {
                    (method, params)
                }
                Err(_) => return,
            },
            None => (method, params),
        };
        let _ = self.events.send(UpstreamEvent::Notification {
            server: self.server,
            method: unsent.0,
            params: unsent.1,
        });
    }
}

/// The numeric `"id"` of a message too broken to parse, if one can be read.
fn sniff_id(bytes: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(bytes).ok()?;
    let at = text.find("\"id\"")? + 4;
    let rest = text[at..].trim_start().strip_prefix(':')?.trim_start();
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Serializes the client's answer to a server-to-client request.
pub(crate) fn reply_line(id: &Id, reply: Reply) -> String {
    match reply {
        Ok(r) => jsonrpc::response_ok(id, r.get()),
        Err(e) => jsonrpc::response_err(Some(id), e.get()),
    }
}

/// `params.progressToken` as JSON text.
pub(crate) fn progress_token(params: &RawValue) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct P<'a> {
        #[serde(rename = "progressToken", borrow)]
        token: Option<&'a RawValue>,
    }
    serde_json::from_str::<P>(params.get())
        .ok()?
        .token
        .map(|t| t.get().to_string())
}

/// Tells the server a call it is serving was abandoned (timeout or client cancel).
struct CancelGuard<'a> {
    duplex: &'a Duplex,
    id: u64,
    armed: bool,
}

impl Drop for CancelGuard<'_> {
    fn drop(&mut self) {
        let mut st = self.duplex.state.lock().unwrap();
        if let Some(p) = st.pending.remove(&self.id)
            && let Some(tok) = p.progress
        {
            st.progress.remove(&tok);
        }
        drop(st);
        if self.armed {
            let params = format!(
                r#"{{"requestId":{},"reason":"cancelled by the gateway (timeout or client cancellation)"}}"#,
                self.id
            );
            let _ = self.duplex.notify("notifications/cancelled", Some(&params));
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sniffs_the_id_of_a_broken_message() {
        assert_eq!(
            super::sniff_id(br#"{"jsonrpc":"2.0","id": 42,"result":{"#),
            Some(42)
        );
        assert_eq!(super::sniff_id(br#"{"jsonrpc":"2.0","result""#), None);
        assert_eq!(super::sniff_id(br#"{"id":"abc""#), None);
    }
}
