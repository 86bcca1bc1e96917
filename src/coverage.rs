//! Which namespaces and objects a policy covers, and an enclave in the form placement
//! uses: pure predicates over the objects they are given. They read no index, so that
//! the caches can decide what to keep with them while the [`crate::catalog`] built on
//! those caches serves the helpers in [`crate::scope`] that resolve from it.

use std::{
    collections::BTreeMap,
    sync::{Arc, OnceLock},
};

use k8s_openapi::api::core::v1::NodeSelectorTerm;
use kube::ResourceExt;

use crate::{
    crd::{DataEnclave, Enforcement, ResidencyPolicy},
    placement, selector,
};

/// Namespaces no policy may reach into, whatever its selector says: the control plane's
/// own, so that a policy can never stop the cluster from repairing itself.
pub const ALWAYS_EXCLUDED_NAMESPACES: &[&str] = &["kube-system"];

/// The operator's own namespace, set once at start ([`set_operator_namespace`]).
static OPERATOR_NAMESPACE: OnceLock<String> = OnceLock::new();

/// The namespace assumed before [`set_operator_namespace`] (the chart's default): unit
/// tests and tools that never set it still keep the usual namespace out of scope.
pub const DEFAULT_OPERATOR_NAMESPACE: &str = "enclave-system";

/// Records the operator's namespace, which no part of the operator (placement, the
/// gate, the fence, migration, volumes) may ever treat as in scope: a policy whose
/// selector matched it would otherwise have the operator evict, fence or refuse
/// itself. One process serves one namespace, so the first call wins; a later call
/// with another name is refused, never silently ignored.
pub fn set_operator_namespace(namespace: &str) -> Result<(), String> {
    let held = OPERATOR_NAMESPACE.get_or_init(|| namespace.to_string());
    if held == namespace {
        Ok(())
    } else {
        Err(format!(
            "the operator's namespace is already {held:?}; it cannot become {namespace:?}"
        ))
    }
}

/// The operator's namespace (see [`set_operator_namespace`]).
pub fn operator_namespace() -> &'static str {
    OPERATOR_NAMESPACE
        .get()
        .map_or(DEFAULT_OPERATOR_NAMESPACE, String::as_str)
}

/// Is the namespace out of every policy's reach, whatever its labels: the control
/// plane's ([`ALWAYS_EXCLUDED_NAMESPACES`]) or the operator's own. Every scope decision
/// goes through here, so that admission, the controllers and the audit agree.
pub fn never_in_scope(namespace: &str) -> bool {
    ALWAYS_EXCLUDED_NAMESPACES.contains(&namespace) || namespace == operator_namespace()
}

/// An enclave in the form placement decisions use.
#[derive(Clone, Debug)]
pub struct ResolvedEnclave {
    pub enclave: Arc<DataEnclave>,
    /// One node selector term per site, in site order.
    pub site_terms: Vec<NodeSelectorTerm>,
}

impl ResolvedEnclave {
    pub fn resolve(enclave: Arc<DataEnclave>) -> Result<Self, placement::PlacementError> {
        let selectors: Vec<_> = enclave
            .spec
            .sites
            .iter()
            .map(|s| s.node_selector.to_label_selector())
            .collect();
        let site_terms = placement::site_terms(&selectors)?;
        Ok(Self {
            enclave,
            site_terms,
        })
    }

    pub fn name(&self) -> String {
        self.enclave.name_any()
    }

    /// The site names, for messages.
    pub fn site_names(&self) -> Vec<&str> {
        self.enclave
            .spec
            .sites
            .iter()
            .map(|s| s.name.as_str())
            .collect()
    }

    /// Does a node with these labels belong to the enclave?
    pub fn contains_node(&self, labels: &BTreeMap<String, String>) -> bool {
        self.enclave
            .spec
            .sites
            .iter()
            .any(|s| selector::matches(&s.node_selector, labels))
    }

    /// The soft preferences of a policy as (site term, weight); unknown sites are skipped
    /// (the policy's status reports them).
    pub fn preferred(&self, policy: &ResidencyPolicy) -> Vec<(NodeSelectorTerm, i32)> {
        let Some(placement) = &policy.spec.placement else {
            return Vec::new();
        };
        placement
            .preferred_sites
            .iter()
            .filter_map(|p| {
                let index = self
                    .enclave
                    .spec
                    .sites
                    .iter()
                    .position(|s| s.name == p.site)?;
                Some((self.site_terms[index].clone(), p.weight))
            })
            .collect()
    }
}

/// A policy that covers an object, with its enclave resolved, or why it cannot be.
#[derive(Clone, Debug)]
pub struct Applicable {
    pub policy: Arc<ResidencyPolicy>,
    pub enclave: Result<ResolvedEnclave, String>,
}

impl Applicable {
    pub fn name(&self) -> String {
        self.policy.name_any()
    }
    pub fn enforced(&self) -> bool {
        self.policy.spec.enforcement == Enforcement::Enforce
    }
}

/// Does the policy cover an object with these labels in a namespace with these labels?
/// Never the objects of a volume move ([`crate::names::VOLUME_MIGRATION_LABEL`]).
pub fn covers(
    policy: &ResidencyPolicy,
    namespace: &str,
    namespace_labels: &BTreeMap<String, String>,
    labels: &BTreeMap<String, String>,
) -> bool {
    !never_in_scope(namespace)
        && !labels.contains_key(crate::names::VOLUME_MIGRATION_LABEL)
        && selector::matches(&policy.spec.match_.namespace_selector, namespace_labels)
        && policy
            .spec
            .match_
            .pod_selector
            .as_ref()
            .is_none_or(|s| selector::matches(s, labels))
}

/// Does the policy cover the namespace (its pod selector aside)? For what is not a pod:
/// claims, NetworkPolicies, access to the namespace's pods.
pub fn covers_namespace(
    policy: &ResidencyPolicy,
    namespace: &str,
    namespace_labels: &BTreeMap<String, String>,
) -> bool {
    !never_in_scope(namespace)
        && selector::matches(&policy.spec.match_.namespace_selector, namespace_labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(selector: &str) -> ResidencyPolicy {
        serde_yaml::from_str(&format!(
            "apiVersion: enclave.dev/v1alpha1\nkind: ResidencyPolicy\nmetadata: {{name: p}}\nspec:\n  enclave: eu\n  match:\n    namespaceSelector: {selector}\n"
        ))
        .expect("fixture")
    }

    #[test]
    fn the_operators_namespace_and_kube_system_are_never_in_scope() {
        // Unit tests never set it: the chart's default namespace is assumed.
        assert_eq!(operator_namespace(), DEFAULT_OPERATOR_NAMESPACE);
        let everything = policy("{}");
        let by_name = policy("{matchLabels: {kubernetes.io/metadata.name: enclave-system}}");
        let labels = |name: &str| -> BTreeMap<String, String> {
            [("kubernetes.io/metadata.name".to_string(), name.to_string())].into()
        };
        for namespace in ["enclave-system", "kube-system"] {
            assert!(never_in_scope(namespace));
            assert!(!covers_namespace(
                &everything,
                namespace,
                &labels(namespace)
            ));
            assert!(!covers(
                &everything,
                namespace,
                &labels(namespace),
                &BTreeMap::new()
            ));
        }
        assert!(!covers_namespace(
            &by_name,
            "enclave-system",
            &labels("enclave-system")
        ));
        assert!(covers_namespace(&everything, "shop", &labels("shop")));
        assert!(set_operator_namespace("enclave-system").is_ok());
        assert!(
            set_operator_namespace("elsewhere").is_err(),
            "a second namespace is refused, not ignored"
        );
    }
}
