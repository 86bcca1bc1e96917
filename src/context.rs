//! What the controllers and the HTTP servers share.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use kube::{
    Client,
    runtime::events::{Recorder, Reporter},
};

use crate::{cache::Caches, controller::residency::EvictionLog, metrics::Metrics};

/// The field manager of every write the operator makes (server-side apply): one
/// constant, so that ownership of fields never flips between our own writes.
pub const FIELD_MANAGER: &str = "enclave-operator";

/// Shared state of the operator, handed to every reconcile as `Arc<Context>`.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub caches: Caches,
    /// Recent evictions per policy, for the rate limit.
    pub evictions: EvictionLog,
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    pub fn new(client: Client, metrics: Arc<Metrics>, caches: Caches) -> Self {
        let reporter = Reporter {
            controller: FIELD_MANAGER.into(),
            instance: std::env::var("POD_NAME")
                .ok()
                .or_else(|| std::env::var("HOSTNAME").ok()),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            caches,
            evictions: EvictionLog::default(),
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
