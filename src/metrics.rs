//! Prometheus metrics, in a registry of our own (prefix `enclave_operator`), with one
//! sub-registry per component. Served on `/metrics` by [`crate::http`].

use std::time::Duration;

pub use crate::admission::server::AdmissionMetrics;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, histogram::Histogram},
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

/// Every metric of the operator, and the registry that encodes them.
pub struct Metrics {
    pub registry: Registry,
    pub reconcile: ReconcileMetrics,
    pub admission: AdmissionMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("enclave_operator");
        let reconcile = ReconcileMetrics::register(registry.sub_registry_with_prefix("controller"));
        let admission = AdmissionMetrics::register(registry.sub_registry_with_prefix("admission"));
        Self {
            registry,
            reconcile,
            admission,
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
