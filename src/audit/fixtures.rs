//! What the audit's unit tests (`audit::tests`) and its benchmark (`benches/audit.rs`)
//! both build their worlds with: the fence the operator would have written, and an
//! observation of a cluster without a decision-log chain. Not part of the operator's
//! API (hidden from the docs); public only because a benchmark is another crate.

use std::sync::Arc;

use jiff::Timestamp;

use super::report::{ChainObservation, Observation};
use crate::{
    catalog::{Catalog, StaticCatalog},
    controller::residency::network,
    scope,
};

/// Adds to `catalog` the NetworkPolicies of the operator's fence for every policy, as the
/// controller would write them, so that a compliant world reports a green network check.
pub fn add_operator_fence(catalog: &mut StaticCatalog, operator_namespace: &str) {
    let fence: Vec<_> = catalog
        .policies()
        .iter()
        .flat_map(|policy| {
            let enclave = scope::resolve_enclave(catalog, policy).expect("enclave");
            let inside = network::namespaces(policy, catalog, operator_namespace);
            network::desired(policy, &enclave, &inside).expect("fence")
        })
        .collect();
    catalog
        .network_policies
        .extend(fence.into_iter().map(Arc::new));
}

/// An observation at a fixed time, with no checkpoints ConfigMap and nothing unreadable:
/// the report then depends on the catalog alone.
pub fn observation(operator_namespace: &str) -> Observation {
    Observation {
        generated_at: Timestamp::from_second(1_800_000_000).expect("time"),
        operator_namespace: operator_namespace.into(),
        chain: ChainObservation::Absent {
            config_map: "enclave-operator-checkpoints".into(),
        },
        unreadable: Vec::new(),
        only_policies: Vec::new(),
        since: None,
        moves: Vec::new(),
    }
}
