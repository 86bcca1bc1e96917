//! Prometheus metrics, in a registry of our own (prefix `enclave_operator`), with one
//! sub-registry per component. Served on `/metrics` by [`crate::http`].

use std::time::Duration;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    pub controller: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    pub controller: &'static str,
    pub error: &'static str,
}

/// Reconcile runs, failures by error category, and durations, per controller.
#[derive(Clone)]
pub struct ReconcileMetrics {
    pub runs: Family<ControllerLabels, Counter>,
    pub failures: Family<FailureLabels, Counter>,
    pub duration: Family<ControllerLabels, Histogram>,
}

impl ReconcileMetrics {
    fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            runs: Family::default(),
            failures: Family::default(),
            duration: Family::new_with_constructor(|| {
                Histogram::new([0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0])
            }),
        };
        registry.register(
            "reconcile_runs",
            "Reconciliations run",
            metrics.runs.clone(),
        );
        registry.register(
            "reconcile_failures",
            "Reconciliations that failed, by error category",
            metrics.failures.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time spent in one reconciliation",
            metrics.duration.clone(),
        );
        metrics
    }

    /// Records one reconcile run of `controller` that took `elapsed`.
    pub fn observe(&self, controller: &'static str, elapsed: Duration) {
        let labels = ControllerLabels { controller };
        self.runs.get_or_create(&labels).inc();
        self.duration
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
    }

    pub fn failed(&self, controller: &'static str, error: &'static str) {
        self.failures
            .get_or_create(&FailureLabels { controller, error })
            .inc();
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReviewLabels {
    pub webhook: &'static str,
    pub verdict: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AccessLabels {
    pub decision: &'static str,
    pub subresource: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClosedLabels {
    pub reason: &'static str,
}

/// Admission metrics: reviews by webhook and verdict, their latency, and connections.
#[derive(Clone)]
pub struct AdmissionMetrics {
    pub reviews: Family<ReviewLabels, Counter>,
    pub duration: Histogram,
    pub connections: Gauge,
    pub closed: Family<ClosedLabels, Counter>,
    pub access: Family<AccessLabels, Counter>,
    /// Alarms raised on suspicious access, by reason (see [`crate::grants::anomaly`]).
    pub suspicious: Family<SuspiciousLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SuspiciousLabels {
    pub reason: &'static str,
    pub lockout: &'static str,
}

impl AdmissionMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            reviews: Family::default(),
            duration: Histogram::new([0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.05]),
            connections: Gauge::default(),
            closed: Family::default(),
            access: Family::default(),
            suspicious: Family::default(),
        };
        registry.register(
            "suspicious_access",
            "Alarms raised on repeated denied attempts by one subject, by reason (RepeatedDenials, ManyPods, OutsideGrant, NeverApproved) and lockout (true, false)",
            metrics.suspicious.clone(),
        );
        registry.register(
            "reviews",
            "Admission reviews by webhook and verdict (allowed, patched, denied, audited, invalid)",
            metrics.reviews.clone(),
        );
        registry.register(
            "review_duration_seconds",
            "Time to decide one admission review",
            metrics.duration.clone(),
        );
        registry.register(
            "connections",
            "Open connections to the webhook server",
            metrics.connections.clone(),
        );
        registry.register(
            "access_attempts",
            "Attempts to exec, attach, port-forward or debug into in-scope pods, by decision and subresource",
            metrics.access.clone(),
        );
        registry.register(
            "connections_closed",
            "Connections closed by the server's limits, by reason (limit, handshake, timeout)",
            metrics.closed.clone(),
        );
        metrics
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CheckpointFailureLabels {
    pub reason: &'static str,
}

/// The decision log: lines written, records lost (and themselves recorded), Events that
/// did not fit their queue, checkpoints stored and not stored.
#[derive(Clone, Default)]
pub struct EvidenceMetrics {
    pub lines: Counter,
    pub lost: Counter,
    pub events_dropped: Counter,
    pub checkpoints: Counter,
    pub checkpoint_failures: Family<CheckpointFailureLabels, Counter>,
    pub chains_failing: Gauge,
}

impl EvidenceMetrics {
    fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "log_lines",
            "Lines written to the decision log",
            metrics.lines.clone(),
        );
        registry.register(
            "records_lost",
            "Decisions that did not fit the queue (each loss is itself a RecordsLost line)",
            metrics.lost.clone(),
        );
        registry.register(
            "events_dropped",
            "Admission Events not published because their queue was full",
            metrics.events_dropped.clone(),
        );
        registry.register(
            "checkpoints",
            "Checkpoints of the decision log's head stored in the cluster",
            metrics.checkpoints.clone(),
        );
        registry.register(
            "checkpoint_failures",
            "Checkpoints of the decision log's head that could not be stored, by reason (conflict, too_large, forbidden, refused, unreachable; lease: the heartbeat Lease could not be renewed)",
            metrics.checkpoint_failures.clone(),
        );
        registry.register(
            "chains_failing",
            "Chains of this process whose last checkpoint could not be stored",
            metrics.chains_failing.clone(),
        );
        metrics
    }
}

/// Every metric of the operator, and the registry that encodes them.
pub struct Metrics {
    pub registry: Registry,
    /// 1 while this replica leads (runs the controllers), else 0.
    pub leader: Gauge,
    pub reconcile: ReconcileMetrics,
    pub admission: AdmissionMetrics,
    pub evidence: EvidenceMetrics,
    pub auditsink: crate::auditsink::server::Metrics,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("enclave_operator");
        let reconcile = ReconcileMetrics::register(registry.sub_registry_with_prefix("controller"));
        let admission = AdmissionMetrics::register(registry.sub_registry_with_prefix("admission"));
        let evidence = EvidenceMetrics::register(registry.sub_registry_with_prefix("evidence"));
        let auditsink = crate::auditsink::server::Metrics::register(
            registry.sub_registry_with_prefix("auditsink"),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica leads and runs the controllers, else 0",
            leader.clone(),
        );
        Self {
            registry,
            leader,
            reconcile,
            admission,
            evidence,
            auditsink,
        }
    }
}

impl Metrics {
    /// The OpenMetrics text exposition of every metric.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}
