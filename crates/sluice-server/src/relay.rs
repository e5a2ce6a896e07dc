//! 2026 retries that reach a replica other than the one holding their call.
//!
//! A call parked on `input_required` lives in the memory of the replica that
//! started it, and its `requestState` names that replica. A retry the load
//! balancer sends elsewhere is verified there (B), then relayed on the
//! store's bus to the holder (A), which continues the call and sends back
//! the answer, a plain JSON response (interim notifications are not relayed):
//!
//! ```text
//! client ──retry──▶ B ──MrtrRetry──▶ A: take the call, hand it the answers,
//!        ◀─answer── B ◀─MrtrAnswer── A  run it to its result or next input_required
//! ```
//!
//! A new `input_required` parks the call on A again and names A. If B stops
//! waiting (its client left, its wait ran out), it sends `MrtrCancel` and A
//! aborts the call, as closing a local response does. Without a bus (memory
//! and SQLite stores serve one replica) there is nobody to relay to.

use crate::gateway::Gateway;
use crate::modern::{continue_parked, invalid_state, json_line};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use serde_json::Value;
use sluice_mcp::RpcError;
use sluice_mcp::jsonrpc::{self, Id};
use sluice_store::{Bus, BusMessage, StoreError};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::AbortHandle;

/// How often a waiting replica checks that the holder is still alive.
const CHECK_HOLDER: Duration = Duration::from_secs(2);
/// Added to the longest upstream timeout for the relay's own wait.
const MARGIN: Duration = Duration::from_secs(30);
/// The longest a relayed retry is waited for.
const MAX_WAIT: Duration = Duration::from_secs(600);

/// A relayed answer: the client's response line and its HTTP status.
type Answer = (String, u16);

/// The retries in flight between replicas.
#[derive(Default)]
pub(crate) struct Relays {
    /// Retries this replica relayed, waiting for their answer, by correlation id.
    waiting: Mutex<HashMap<String, oneshot::Sender<Answer>>>,
    /// Relayed retries this replica runs for another, by correlation id.
    serving: Mutex<HashMap<String, AbortHandle>>,
}

/// Why a relayed retry got no answer.
enum RelayFailure {
    /// The holder stopped before the retry was sent.
    HolderGone,
    /// The holder is alive but nothing listens on its channel.
    HolderDeaf,
    /// The holder stopped while the retry was waiting.
    HolderStopped,
    /// No answer within the wait.
    TimedOut(Duration),
    /// The bus could not be used.
    Store(StoreError),
}

impl RelayFailure {
    fn to_wire(&self) -> (StatusCode, RpcError) {
        match self {
            RelayFailure::HolderGone => (
                StatusCode::BAD_REQUEST,
                invalid_state(
                    "the gateway instance holding its call stopped; send the request again without requestState",
                ),
            ),
            RelayFailure::HolderDeaf => (
                StatusCode::SERVICE_UNAVAILABLE,
                RpcError::internal(
                    "Service Unavailable: the gateway instance holding the call is not receiving messages from the other instances; retry shortly with the same requestState",
                ),
            ),
            RelayFailure::HolderStopped => (
                StatusCode::OK,
                RpcError::internal(
                    "the gateway instance holding the call stopped before it answered; the call may or may not have completed upstream; send the request again without requestState",
                ),
            ),
            RelayFailure::TimedOut(wait) => (
                StatusCode::OK,
                RpcError::internal(format!(
                    "the gateway instance holding the call did not answer within {} s; the call was cancelled and may or may not have completed upstream",
                    wait.as_secs()
                )),
            ),
            RelayFailure::Store(e) => (
                StatusCode::SERVICE_UNAVAILABLE,
                RpcError::internal(format!("Service Unavailable: {e}; retry shortly")),
            ),
        }
    }
}

/// Answers a verified retry whose call is parked on `holder`, another
/// replica, by relaying it there.
pub(crate) async fn relay_retry(
    gw: &Arc<Gateway>,
    holder: &str,
    key: &str,
    id: &Id,
    responses: Option<Value>,
) -> Response {
    let Some(bus) = gw.store().bus() else {
        // Memory and SQLite stores have no bus between instances.
        let err = invalid_state(
            "the call it continues is held by another gateway instance; send the request again without requestState",
        );
        return json_line(
            jsonrpc::response_err(Some(id), &err.to_json()),
            StatusCode::BAD_REQUEST,
        );
    };
    match relay(gw, bus, holder, key, id, responses).await {
        Ok((line, status)) => json_line(line, StatusCode::from_u16(status).unwrap_or_default()),
        Err(f) => {
            let (status, err) = f.to_wire();
            tracing::info!(holder, cause = %err.message, "relayed retry not answered");
            let mut r = json_line(jsonrpc::response_err(Some(id), &err.to_json()), status);
            if status == StatusCode::SERVICE_UNAVAILABLE {
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
            }
            r
        }
    }
}

async fn relay(
    gw: &Gateway,
    bus: Bus,
    holder: &str,
    key: &str,
    id: &Id,
    responses: Option<Value>,
) -> Result<Answer, RelayFailure> {
    let alive = || gw.store().replica_alive(holder, gw.replica());
    if !alive().await.map_err(RelayFailure::Store)? {
        return Err(RelayFailure::HolderGone);
    }
    let corr = uuid::Uuid::new_v4().simple().to_string();
    let (tx, mut rx) = oneshot::channel();
    gw.relays.waiting.lock().unwrap().insert(corr.clone(), tx);
    let mut pending = Pending {
        relays: &gw.relays,
        bus: bus.clone(),
        holder: holder.to_string(),
        corr: corr.clone(),
        settled: false,
    };
    let msg = BusMessage::MrtrRetry {
        key: key.to_string(),
        id: serde_json::to_value(id).unwrap_or(Value::Null),
        responses: responses.unwrap_or(Value::Null),
        reply_to: gw.replica().to_string(),
        corr,
    };
    if bus
        .send(Some(holder), &msg)
        .await
        .map_err(RelayFailure::Store)?
        == 0
    {
        // Nothing received it: there is no call to cancel.
        pending.settled = true;
        return Err(RelayFailure::HolderDeaf);
    }
    let wait = relay_wait(gw);
    let deadline = tokio::time::sleep(wait);
    tokio::pin!(deadline);
    let mut check = tokio::time::interval(CHECK_HOLDER);
    check.tick().await;
    loop {
        tokio::select! {
            answer = &mut rx => {
                pending.settled = true;
                // Only this wait removes an unanswered sender: `Err` cannot happen.
                return answer.map_err(|_| RelayFailure::HolderStopped);
            }
            _ = &mut deadline => return Err(RelayFailure::TimedOut(wait)),
            _ = check.tick() => {
                // A store error says nothing about the holder: keep waiting.
                if !alive().await.unwrap_or(true) {
                    pending.settled = true;
                    return Err(RelayFailure::HolderStopped);
                }
            }
        }
    }
}

/// How long a relayed retry is waited for: the holder enforces the
/// upstream's own timeout, so the longest one configured (approvals wait at
/// least 60 s), plus a margin, at most 10 minutes.
fn relay_wait(gw: &Gateway) -> Duration {
    let longest = gw
        .config
        .servers
        .iter()
        .flat_map(|s| std::iter::once(s.timeout).chain(s.tool_timeouts.values().copied()))
        .fold(Duration::from_secs(60), Duration::max);
    (longest + MARGIN).min(MAX_WAIT)
}

/// A relayed retry waiting for its answer. Dropped unanswered (the client
/// left, the wait ran out), it tells the holder to abort the call.
struct Pending<'a> {
    relays: &'a Relays,
    bus: Bus,
    holder: String,
    corr: String,
    /// Nothing left to cancel: answered, or the holder cannot be reached.
    settled: bool,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        self.relays.waiting.lock().unwrap().remove(&self.corr);
        if self.settled {
            return;
        }
        let msg = BusMessage::MrtrCancel {
            corr: std::mem::take(&mut self.corr),
        };
        let (bus, holder) = (self.bus.clone(), std::mem::take(&mut self.holder));
        tokio::spawn(async move {
            if let Err(e) = bus.send(Some(&holder), &msg).await {
                tracing::warn!(%holder, error = %e, "could not tell the holder to abort a relayed call");
            }
        });
    }
}

impl Gateway {
    /// Holder side: continues a call parked here for a retry another replica
    /// relayed, and sends that replica the answer.
    pub(crate) fn serve_relayed(
        self: &Arc<Self>,
        key: String,
        id: Value,
        responses: Value,
        reply_to: String,
        corr: String,
    ) {
        let Some(bus) = self.store().bus() else {
            return;
        };
        let gw = self.clone();
        let mut serving = self.relays.serving.lock().unwrap();
        let c = corr.clone();
        let task = tokio::spawn(async move {
            let (line, status) = match serde_json::from_value::<Id>(id) {
                Ok(id) => continue_parked(&gw, &id, &key, Some(&responses)).await,
                Err(_) => {
                    let err = RpcError::internal("a relayed retry carried an unreadable id");
                    (jsonrpc::response_err(None, &err.to_json()), StatusCode::OK)
                }
            };
            gw.relays.serving.lock().unwrap().remove(&corr);
            let msg = BusMessage::MrtrAnswer {
                corr,
                line,
                status: status.as_u16(),
            };
            match bus.send(Some(&reply_to), &msg).await {
                Ok(n) if n > 0 => {}
                outcome => {
                    gw.metrics.drop("relay_answer_lost");
                    tracing::warn!(replica = %reply_to, error = ?outcome.err(), "the answer to a relayed retry did not reach the replica waiting for it");
                }
            }
        });
        serving.insert(c, task.abort_handle());
    }

    /// Waiting side: hands a relayed answer to the retry waiting for it.
    pub(crate) fn relayed_answer(&self, corr: &str, line: String, status: u16) {
        let waiter = self.relays.waiting.lock().unwrap().remove(corr);
        let delivered = waiter.is_some_and(|w| w.send((line, status)).is_ok());
        if !delivered {
            self.metrics.drop("relay_answer_unclaimed");
            tracing::info!(
                corr,
                "a relayed answer arrived after its retry stopped waiting"
            );
        }
    }

    /// Holder side: the replica that relayed a retry stopped waiting; abort its call.
    pub(crate) fn cancel_relayed(&self, corr: &str) {
        if let Some(task) = self.relays.serving.lock().unwrap().remove(corr) {
            task.abort();
            tracing::info!(corr, "relayed call cancelled: its retry stopped waiting");
        }
    }
}
