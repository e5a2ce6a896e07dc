//! The 2026-07-28 tasks extension (`io.modelcontextprotocol/tasks`) through
//! the gateway.
//!
//! Tasks pass through: a 2026 upstream creates them, and `tasks/get`,
//! `tasks/update` and `tasks/cancel` go back to it with their parameters
//! unchanged. Only the task id the client sees is the gateway's own: it names
//! the server and the tool that made the task and is signed with the key of
//! `requestState`, so any replica sharing that key routes it without shared
//! state, two servers' ids cannot collide, and a client cannot point an id at
//! another server or tool.

use crate::error::{Fail, raw};
use crate::gateway::Gateway;
use crate::session::{Outbound, Session};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};
use sluice_mcp::jsonrpc::RpcError;
use std::sync::Arc;

/// The extension's id, in capabilities and errors.
pub(crate) const EXTENSION: &str = "io.modelcontextprotocol/tasks";

/// Whether a client's capabilities declare the tasks extension.
pub(crate) fn declared(caps: &Value) -> bool {
    caps.get("extensions")
        .and_then(|e| e.get(EXTENSION))
        .is_some()
}

/// The -32021 answer to a tasks request from a client that did not declare
/// the extension.
pub(crate) fn not_declared(method: &str) -> RpcError {
    RpcError::new(
        sluice_mcp::jsonrpc::code::MISSING_CAPABILITY,
        format!(
            "{method} needs the {EXTENSION} extension: declare it in _meta[\"io.modelcontextprotocol/clientCapabilities\"].extensions"
        ),
    )
    .with_data(json!({"requiredCapabilities": {"extensions": {EXTENSION: {}}}}))
}

/// Where a task lives: the server, the exposed name of the tool that made it,
/// and the server's own task id.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct TaskRef {
    pub server: String,
    pub tool: String,
    pub id: String,
}

const PREFIX: &str = "st1.";

impl Gateway {
    /// Whether a 2026 upstream offers the tasks extension.
    pub(crate) fn modern_tasks(&self) -> bool {
        self.catalog.servers().iter().any(|u| {
            u.last_info().is_some_and(|i| {
                i.is_modern()
                    && i.capabilities
                        .get("extensions")
                        .and_then(|e| e.get(EXTENSION))
                        .is_some()
            })
        })
    }

    /// The id a client sees for a task of `server`.
    pub(crate) fn wrap_task_id(&self, server: &str, tool: &str, id: &str) -> String {
        let head = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(server),
            URL_SAFE_NO_PAD.encode(tool)
        );
        let mac = self.parked.mac(&format!("{head}.{id}"));
        format!("{PREFIX}{head}.{}.{id}", &mac[..22])
    }

    /// The task a client's id names, if the gateway made that id.
    pub(crate) fn unwrap_task_id(&self, wrapped: &str) -> Option<TaskRef> {
        let rest = wrapped.strip_prefix(PREFIX)?;
        let mut parts = rest.splitn(4, '.');
        let (server, tool, mac, id) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let want = self.parked.mac(&format!("{server}.{tool}.{id}"));
        // Constant time is not needed for a 128-bit tag compared once per
        // request, but it costs nothing.
        if mac.len() != 22 || !constant_eq(mac.as_bytes(), &want.as_bytes()[..22]) {
            return None;
        }
        let text = |p: &str| {
            URL_SAFE_NO_PAD
                .decode(p)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
        };
        Some(TaskRef {
            server: text(server)?,
            tool: text(tool)?,
            id: id.to_string(),
        })
    }

    /// A `tools/call` answer that created a task gets the gateway's task id.
    pub(crate) fn wrap_created_task(
        &self,
        server: &str,
        tool: &str,
        result: Box<RawValue>,
    ) -> Box<RawValue> {
        if !result.get().contains("\"task\"") {
            return result;
        }
        let Ok(mut r) = serde_json::from_str::<Map<String, Value>>(result.get()) else {
            return result;
        };
        if r.get("resultType").and_then(Value::as_str) != Some("task") {
            return result;
        }
        if let Some(Value::String(id)) = r.get("taskId") {
            let wrapped = self.wrap_task_id(server, tool, id);
            r.insert("taskId".into(), Value::String(wrapped));
        }
        raw(Value::Object(r).to_string())
    }

    /// `tasks/get`, `tasks/update`, `tasks/cancel` of a 2026 client: to the
    /// server that made the task, with its own id; a finished task's result
    /// passes the same output limits and defence as a direct call's.
    pub(crate) async fn call_task_modern(
        &self,
        sess: &Arc<Session>,
        method: &str,
        params: Option<&RawValue>,
        out: &Arc<dyn Outbound>,
    ) -> Result<Box<RawValue>, Fail> {
        if !declared(&sess.client_capabilities) {
            return Err(not_declared(method).into());
        }
        let mut p = crate::gateway::params_map(params)?;
        let wrapped = crate::gateway::required_str(&p, method, "taskId")?.to_string();
        let unknown = || {
            Fail::from(
                RpcError::invalid_params(format!(
                    "Unknown task `{wrapped}`: the gateway did not create a task with that id"
                ))
                .with_data(json!({"taskId": wrapped})),
            )
        };
        let Some(task) = self.unwrap_task_id(&wrapped) else {
            return Err(unknown());
        };
        let Some(u) = self.catalog.named(&task.server).map(|u| u.id) else {
            return Err(unknown());
        };
        let up = &self.upstream_for(sess, u).await?;
        p.insert("taskId".into(), Value::String(task.id.clone()));
        let result = self.forward_safe(sess, up, method, p, out).await?;
        if method != "tasks/get" {
            return Ok(result);
        }
        let Ok(mut r) = serde_json::from_str::<Map<String, Value>>(result.get()) else {
            return Ok(result);
        };
        if r.contains_key("taskId") {
            r.insert("taskId".into(), Value::String(wrapped));
        }
        if let Some(inner) = r.remove("result") {
            let upstream_name = self
                .route_name(crate::catalog::Kind::Tools, &task.tool)
                .await
                .map(|(_, n)| n)
                .unwrap_or_else(|_| task.tool.clone());
            let limits = crate::limits::Limits {
                max_tokens: up.config.max_output_tokens(&upstream_name),
                max_binary: up.config.output.max_binary_bytes,
            };
            let shaped = self.defend_output(
                up,
                &task.tool,
                crate::limits::apply(raw(inner.to_string()), &limits),
            );
            let inner: Value = serde_json::from_str(shaped.get()).unwrap_or(inner);
            r.insert("result".into(), inner);
        }
        Ok(raw(Value::Object(r).to_string()))
    }
}

fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_reads_the_extensions_map() {
        assert!(declared(&json!({"extensions": {EXTENSION: {}}})));
        assert!(!declared(&json!({"extensions": {}})));
        assert!(!declared(&json!({"sampling": {}})));
    }

    #[test]
    fn the_missing_extension_error_names_it() {
        let e = not_declared("tasks/get");
        assert_eq!(e.code, -32021);
        let data = e.data.unwrap();
        assert!(data["requiredCapabilities"]["extensions"][EXTENSION].is_object());
    }
}
