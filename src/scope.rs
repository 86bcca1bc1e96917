//! Which policies cover a pod, and what their enclaves require — resolved from
//! in-memory state only (the [`Catalog`]), so the admission path makes no API call.
//! The predicates themselves are pure and live in [`crate::coverage`] (the caches use
//! them, and the catalog reads the caches); they are re-exported here so that a
//! decision finds everything about scope in one place.

use std::collections::BTreeMap;

pub use crate::catalog::{Catalog, StaticCatalog};
pub use crate::coverage::{
    ALWAYS_EXCLUDED_NAMESPACES, Applicable, DEFAULT_OPERATOR_NAMESPACE, ResolvedEnclave, covers,
    covers_namespace, never_in_scope, operator_namespace, set_operator_namespace,
};
use crate::crd::ResidencyPolicy;

/// The policies covering a namespace, its pod selector aside; `None` when the namespace
/// is not in the cache (yet).
pub fn applicable_to_namespace(catalog: &impl Catalog, namespace: &str) -> Option<Vec<Applicable>> {
    let namespace_labels = catalog.namespace_labels(namespace)?;
    Some(
        catalog
            .policies()
            .into_iter()
            .filter(|p| covers_namespace(p, namespace, &namespace_labels))
            .map(|policy| Applicable {
                enclave: resolve_enclave(catalog, &policy),
                policy,
            })
            .collect(),
    )
}

/// Resolves a policy's enclave, or says why it cannot be used.
pub fn resolve_enclave(
    catalog: &impl Catalog,
    policy: &ResidencyPolicy,
) -> Result<ResolvedEnclave, String> {
    let name = &policy.spec.enclave;
    let enclave = catalog
        .enclave(name)
        .ok_or_else(|| format!("DataEnclave {name:?} does not exist"))?;
    ResolvedEnclave::resolve(enclave).map_err(|e| format!("DataEnclave {name:?} is invalid: {e}"))
}

/// The policies covering an object, in name order. `None` when the namespace is not in
/// the cache (yet): the caller decides whether that fails closed.
pub fn applicable(
    catalog: &impl Catalog,
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> Option<Vec<Applicable>> {
    let namespace_labels = catalog.namespace_labels(namespace)?;
    Some(
        catalog
            .policies()
            .into_iter()
            .filter(|p| covers(p, namespace, &namespace_labels, labels))
            .map(|policy| Applicable {
                enclave: resolve_enclave(catalog, &policy),
                policy,
            })
            .collect(),
    )
}
