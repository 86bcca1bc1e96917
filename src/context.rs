//! What the controllers and the HTTP servers share.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::{
    Client,
    runtime::events::{Recorder, Reporter},
};
use tokio::sync::watch;

use crate::{
    admission::{
        Engine,
        webhooks::{Endpoint, Target},
    },
    cache::Caches,
    decisions::Sink,
    metrics::Metrics,
    names::FIELD_MANAGER,
};

/// How the operator's admission objects are written: the engine, where webhooks reach
/// the operator, the CA bundle they trust, and who owns what is written.
#[derive(Clone)]
pub struct AdmissionSetup {
    /// The engine of policies that do not choose one (`spec.admission.engine`).
    pub engine: Engine,
    /// Does the API server serve MutatingAdmissionPolicy v1?
    pub native_served: bool,
    pub endpoint: Endpoint,
    pub ca_bundle: watch::Receiver<Vec<u8>>,
    /// The operator's namespace: never in scope; holds its Secrets and Lease.
    pub operator_namespace: String,
    /// The installation's cluster-scoped object that owns the webhook configurations.
    pub owner: Option<OwnerReference>,
}

impl AdmissionSetup {
    /// The engine of one policy: its own choice, else the operator's.
    pub fn engine_of(&self, policy: &crate::crd::ResidencyPolicy) -> Engine {
        match policy.spec.admission.as_ref().and_then(|a| a.engine) {
            Some(crate::crd::AdmissionEngine::Native) => Engine::Native,
            Some(crate::crd::AdmissionEngine::Webhook) => Engine::Webhook,
            None => self.engine,
        }
    }

    /// What the webhook configurations are generated for, with the current CA bundle.
    pub fn target(&self) -> Target {
        Target {
            endpoint: self.endpoint.clone(),
            ca_bundle: self.ca_bundle.borrow().clone(),
            operator_namespace: self.operator_namespace.clone(),
            owner: self.owner.clone(),
        }
    }
}

/// Shared state of the operator, handed to every reconcile as `Arc<Context>`.
pub struct Context {
    pub client: Client,
    /// A client without retries of its own, for evictions: a PodDisruptionBudget's 429
    /// is an answer for this pass, not something to repeat for minutes.
    pub eviction_client: Client,
    pub recorder: Recorder,
    /// Who reports this operator's Events (also those sent without the recorder).
    pub reporter: Reporter,
    pub metrics: Arc<Metrics>,
    pub caches: Caches,
    /// Where every decision is recorded.
    pub sink: Sink,
    pub admission: AdmissionSetup,
    /// Whether this process's decision log checkpoints are stored.
    pub checkpoints: crate::evidence::health::Health,
    /// What the leader's last authorizer probe saw (`None` before the first).
    pub authorizer: watch::Sender<Option<crate::authz::probe::Probed>>,
    /// The image the mover pods of volume moves run (the operator's own, with rsync).
    pub mover_image: Option<String>,
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    pub fn new(
        client: Client,
        eviction_client: Client,
        metrics: Arc<Metrics>,
        caches: Caches,
        sink: Sink,
        admission: AdmissionSetup,
    ) -> Self {
        let reporter = Reporter {
            controller: FIELD_MANAGER.into(),
            instance: std::env::var("POD_NAME")
                .ok()
                .or_else(|| std::env::var("HOSTNAME").ok()),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter.clone()),
            reporter,
            client,
            eviction_client,
            metrics,
            caches,
            sink,
            admission,
            checkpoints: crate::evidence::health::Health::default(),
            authorizer: watch::Sender::new(None),
            mover_image: None,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// The delay before retrying an object that failed `key`: 1 s doubling to 5 min.
    pub fn backoff(&self, key: &str) -> Duration {
        let mut failures = self
            .failures
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let count = failures.entry(key.to_string()).or_insert(0);
        *count = count.saturating_add(1);
        Duration::from_secs(1u64 << (*count - 1).min(8)).min(Duration::from_secs(300))
    }

    /// Forgets the failures of `key` after a success.
    pub fn succeeded(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(key);
    }
}
