//! Per-session upstream connections (`isolation = "per-session"`).
//!
//! A stateful server (one that remembers things between calls) must not be
//! shared by clients. For such a server each client session gets its own
//! connection — its own process, for stdio — initialized with that client's
//! capabilities, made on first use on this replica and stopped when the
//! session ends here. Messages the instance sends outside a call go to its
//! session only. The shared instance still runs, for listing and health.

use crate::error::Fail;
use crate::gateway::Gateway;
use crate::session::Session;
use serde_json::value::RawValue;
use sluice_config::Isolation;
use sluice_mcp::jsonrpc;
use sluice_pipeline::ServerId;
use sluice_upstream::{Upstream, UpstreamError, UpstreamEvent};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::mpsc;

impl Gateway {
    /// The upstream instance that serves `sess` for server `u`.
    pub(crate) async fn upstream_for(
        &self,
        sess: &Arc<Session>,
        u: ServerId,
    ) -> Result<Arc<Upstream>, Fail> {
        let template = self.catalog.server(u);
        if template.config.isolation == Isolation::Shared {
            return Ok(template.clone());
        }
        let key = (sess.id.clone(), u);
        if let Some(up) = self.isolated.lock().unwrap().get(&key) {
            return Ok(up.clone());
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let up = Upstream::for_session(
            u,
            template.config.clone(),
            self.config.health.clone(),
            self.http_client.clone(),
            tx,
            &sess.client_capabilities,
        );
        let first = up.start();
        tokio::spawn(forward_events(Arc::downgrade(sess), self.self_ref(), rx));
        self.isolated.lock().unwrap().insert(key, up.clone());
        tracing::info!(server = %template.name(), session = %sess.id, "started a per-session instance");
        let _ = tokio::time::timeout(template.config.timeout, first).await;
        if !up.is_connected() {
            let reason = up
                .last_error()
                .map(|(_, e)| e)
                .unwrap_or_else(|| "it did not start in time".into());
            return Err(Fail::Upstream {
                server: template.name().into(),
                error: UpstreamError::Unavailable(format!("the session's own instance: {reason}")),
            });
        }
        Ok(up)
    }

    /// The session's instance of server `u`, if it has one running here.
    pub(crate) fn isolated_instance(&self, session: &str, u: ServerId) -> Option<Arc<Upstream>> {
        self.isolated
            .lock()
            .unwrap()
            .get(&(session.into(), u))
            .cloned()
    }

    /// Stops the per-session instances of an ended (or forgotten) session.
    pub(crate) fn stop_isolated(&self, session: &str) {
        let mine: Vec<Arc<Upstream>> = {
            let mut map = self.isolated.lock().unwrap();
            let keys: Vec<_> = map
                .keys()
                .filter(|(s, _)| &**s == session)
                .cloned()
                .collect();
            keys.into_iter().filter_map(|k| map.remove(&k)).collect()
        };
        for up in mine {
            tracing::info!(server = %up.name(), session, "stopping a per-session instance");
            tokio::spawn(async move { up.shutdown(Duration::from_secs(2)).await });
        }
    }
}

/// Routes what a per-session instance sends outside a call to its session.
async fn forward_events(
    sess: Weak<Session>,
    gw: Weak<Gateway>,
    mut rx: mpsc::UnboundedReceiver<UpstreamEvent>,
) {
    while let Some(ev) = rx.recv().await {
        let (Some(sess), Some(gw)) = (sess.upgrade(), gw.upgrade()) else {
            return;
        };
        match ev {
            UpstreamEvent::Notification { method, params, .. } => {
                let line = jsonrpc::notification(&method, params.as_deref().map(RawValue::get));
                gw.deliver_unsolicited(&sess, line);
            }
            UpstreamEvent::Request {
                server,
                method,
                params,
                reply,
            } => {
                let name = gw.catalog.server(server).name().to_string();
                match sess.unsolicited.lock().unwrap().clone() {
                    Some(out) => {
                        gw.ask_client(&sess, &name, &method, params.as_deref(), reply, &out)
                    }
                    None => {
                        let _ = reply.send(Err(crate::error::raw(
                            sluice_mcp::RpcError::internal(format!(
                                "the client has no open stream to answer {method}"
                            ))
                            .to_json(),
                        )));
                    }
                }
            }
            UpstreamEvent::Connected { .. } | UpstreamEvent::Disconnected { .. } => {}
        }
    }
}
