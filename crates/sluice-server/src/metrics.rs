//! Prometheus metrics, registered once at start-up and served at `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use sluice_upstream::{Status, Upstream};
use std::sync::Arc;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RequestLabels {
    pub method: &'static str,
    /// `session` (2025-11-25 and earlier) or `stateless` (2026-07-28).
    pub era: &'static str,
    /// `ok`, or who was at fault: `client`, `policy`, `upstream`.
    pub outcome: &'static str,
}

/// A pipeline stage's decision other than "go on".
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct StageLabels {
    pub stage: &'static str,
    pub decision: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabels {
    limit: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct DropLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FindingLabels {
    server: String,
    kind: &'static str,
    verdict: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServerLabels {
    server: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    server: String,
    status: &'static str,
}

pub(crate) struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub stage_decisions: Family<StageLabels, Counter>,
    limit_refusals: Family<LimitLabels, Counter>,
    limit_store_errors: Family<LimitLabels, Counter>,
    pub dropped: Family<DropLabels, Counter>,
    pub sessions: Gauge,
    findings: Family<FindingLabels, Counter>,
    upstream_status: Family<StatusLabels, Gauge>,
    upstream_calls: Family<ServerLabels, Counter>,
    upstream_failures: Family<ServerLabels, Counter>,
    upstream_restarts: Family<ServerLabels, Counter>,
    audit: Arc<sluice_audit::Counters>,
    audit_records: Counter,
    audit_write_errors: Counter,
}

impl Metrics {
    pub(crate) fn new(audit: Arc<sluice_audit::Counters>) -> Self {
        let mut registry = Registry::with_prefix("sluice");
        let requests = Family::<RequestLabels, Counter>::default();
        let stage_decisions = Family::<StageLabels, Counter>::default();
        let limit_refusals = Family::<LimitLabels, Counter>::default();
        let limit_store_errors = Family::<LimitLabels, Counter>::default();
        registry.register(
            "limit_store_errors",
            "Decisions of each shared [[limits]] rule made while its Redis did not answer (then on_store_error applies)",
            limit_store_errors.clone(),
        );
        registry.register(
            "limit_refusals",
            "Requests refused by each [[limits]] rule",
            limit_refusals.clone(),
        );
        let dropped = Family::<DropLabels, Counter>::default();
        let sessions = Gauge::default();
        let findings = Family::<FindingLabels, Counter>::default();
        registry.register(
            "scan_findings",
            "Poisoning-detector findings and held definition changes, by server, kind (definition, output, definition_change) and verdict",
            findings.clone(),
        );
        let upstream_status = Family::<StatusLabels, Gauge>::default();
        let upstream_calls = Family::<ServerLabels, Counter>::default();
        let upstream_failures = Family::<ServerLabels, Counter>::default();
        let upstream_restarts = Family::<ServerLabels, Counter>::default();
        registry.register(
            "requests",
            "Client requests served, by method, era (session, stateless) and outcome (ok, or the fault: client, policy, upstream)",
            requests.clone(),
        );
        registry.register(
            "stage_decisions",
            "Pipeline stage decisions other than going on (a refusal, an answer, a cut or withheld output), by stage and decision",
            stage_decisions.clone(),
        );
        registry.register(
            "dropped_messages",
            "Messages that could not be delivered, by reason",
            dropped.clone(),
        );
        registry.register("sessions", "Open client sessions", sessions.clone());
        registry.register(
            "upstream_status",
            "1 for the current health status of each upstream server (healthy, degraded, down)",
            upstream_status.clone(),
        );
        registry.register(
            "upstream_calls",
            "Requests sent to each upstream server",
            upstream_calls.clone(),
        );
        registry.register(
            "upstream_failures",
            "Requests an upstream server failed to answer (timeouts, lost connections, HTTP and protocol errors)",
            upstream_failures.clone(),
        );
        registry.register(
            "upstream_restarts",
            "Reconnections and restarts of each upstream server",
            upstream_restarts.clone(),
        );
        let audit_records = Counter::default();
        let audit_write_errors = Counter::default();
        registry.register(
            "audit_records",
            "Records written to the audit log",
            audit_records.clone(),
        );
        registry.register(
            "audit_write_errors",
            "Failed audit log writes (each is retried) and records refused after close",
            audit_write_errors.clone(),
        );
        Metrics {
            registry,
            audit,
            audit_records,
            audit_write_errors,
            requests,
            stage_decisions,
            limit_refusals,
            limit_store_errors,
            dropped,
            sessions,
            findings,
            upstream_status,
            upstream_calls,
            upstream_failures,
            upstream_restarts,
        }
    }

    pub(crate) fn finding(&self, server: &str, kind: &'static str, verdict: &'static str) {
        self.findings
            .get_or_create(&FindingLabels {
                server: server.to_string(),
                kind,
                verdict,
            })
            .inc();
    }

    /// Counts a refusal by limit `name`.
    pub(crate) fn limit_refused(&self, name: &str) {
        self.limit_refusals
            .get_or_create(&LimitLabels {
                limit: name.to_string(),
            })
            .inc();
    }

    /// Counts a decision of limit `name` made while its store was down.
    pub(crate) fn limit_store_error(&self, name: &str) {
        self.limit_store_errors
            .get_or_create(&LimitLabels {
                limit: name.to_string(),
            })
            .inc();
    }

    pub(crate) fn drop(&self, reason: &'static str) {
        self.dropped.get_or_create(&DropLabels { reason }).inc();
    }

    /// The exposition text, with upstream figures read at scrape time.
    pub(crate) fn render(&self, upstreams: &[Arc<Upstream>], sessions: usize) -> String {
        self.sessions.set(sessions as i64);
        for u in upstreams {
            let h = u.health();
            let server = || ServerLabels {
                server: u.name().to_string(),
            };
            for s in [Status::Healthy, Status::Degraded, Status::Down] {
                self.upstream_status
                    .get_or_create(&StatusLabels {
                        server: u.name().to_string(),
                        status: s.as_str(),
                    })
                    .set(i64::from(h.status == s));
            }
            catch_up(&self.upstream_calls.get_or_create(&server()), h.calls);
            catch_up(&self.upstream_failures.get_or_create(&server()), h.failures);
            catch_up(&self.upstream_restarts.get_or_create(&server()), h.restarts);
        }
        catch_up(&self.audit_records, self.audit.records());
        catch_up(&self.audit_write_errors, self.audit.write_errors());
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("metrics encode");
        out
    }
}

/// Moves a counter up to a total kept elsewhere.
fn catch_up(c: &Counter, total: u64) {
    let cur = c.get();
    if total > cur {
        c.inc_by(total - cur);
    }
}
