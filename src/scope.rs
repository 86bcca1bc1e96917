//! Which policies cover a pod, and what their enclaves require — resolved from
//! in-memory state only (the [`Catalog`]), so the admission path makes no API call.

use std::{collections::BTreeMap, sync::Arc};

use k8s_openapi::api::core::v1::NodeSelectorTerm;
use kube::{ResourceExt, runtime::reflector::ObjectRef};

use crate::{
    cache::Caches,
    crd::{DataEnclave, Enforcement, ResidencyPolicy},
    placement, selector,
};

/// Namespaces no policy may reach into, whatever its selector says: the control plane's
/// own, so that a policy can never stop the cluster from repairing itself.
pub const ALWAYS_EXCLUDED_NAMESPACES: &[&str] = &["kube-system"];

/// The state decisions are made from.
pub trait Catalog {
    /// Every ResidencyPolicy, in name order.
    fn policies(&self) -> Vec<Arc<ResidencyPolicy>>;
    fn enclave(&self, name: &str) -> Option<Arc<DataEnclave>>;
    fn namespace_labels(&self, name: &str) -> Option<BTreeMap<String, String>>;
    fn node_labels(&self, name: &str) -> Option<BTreeMap<String, String>>;
}

impl Catalog for Caches {
    fn policies(&self) -> Vec<Arc<ResidencyPolicy>> {
        // Invalid objects are left out here and reported by the controllers.
        let mut policies: Vec<Arc<ResidencyPolicy>> = self
            .policies
            .store
            .state()
            .iter()
            .filter_map(|g| g.0.as_ref().ok().cloned().map(Arc::new))
            .collect();
        policies.sort_by_key(|p| p.name_any());
        policies
    }
    fn enclave(&self, name: &str) -> Option<Arc<DataEnclave>> {
        self.enclaves
            .store
            .get(&ObjectRef::new(name))
            .and_then(|g| g.0.as_ref().ok().cloned().map(Arc::new))
    }
    fn namespace_labels(&self, name: &str) -> Option<BTreeMap<String, String>> {
        Caches::namespace_labels(self, name)
    }
    fn node_labels(&self, name: &str) -> Option<BTreeMap<String, String>> {
        self.nodes
            .store
            .get(&ObjectRef::new(name))
            .map(|n| n.labels().clone())
    }
}

/// A catalog held in plain collections: for unit tests, fixtures and benchmarks.
#[derive(Default, Clone)]
pub struct StaticCatalog {
    pub policies: Vec<Arc<ResidencyPolicy>>,
    pub enclaves: BTreeMap<String, Arc<DataEnclave>>,
    pub namespaces: BTreeMap<String, BTreeMap<String, String>>,
    pub nodes: BTreeMap<String, BTreeMap<String, String>>,
}

impl Catalog for StaticCatalog {
    fn policies(&self) -> Vec<Arc<ResidencyPolicy>> {
        self.policies.clone()
    }
    fn enclave(&self, name: &str) -> Option<Arc<DataEnclave>> {
        self.enclaves.get(name).cloned()
    }
    fn namespace_labels(&self, name: &str) -> Option<BTreeMap<String, String>> {
        self.namespaces.get(name).cloned()
    }
    fn node_labels(&self, name: &str) -> Option<BTreeMap<String, String>> {
        self.nodes.get(name).cloned()
    }
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
pub fn covers(
    policy: &ResidencyPolicy,
    namespace: &str,
    namespace_labels: &BTreeMap<String, String>,
    labels: &BTreeMap<String, String>,
) -> bool {
    !ALWAYS_EXCLUDED_NAMESPACES.contains(&namespace)
        && selector::matches(&policy.spec.match_.namespace_selector, namespace_labels)
        && policy
            .spec
            .match_
            .pod_selector
            .as_ref()
            .is_none_or(|s| selector::matches(s, labels))
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

#[derive(serde::Deserialize)]
struct CatalogFixture {
    enclave: DataEnclave,
    policies: Vec<ResidencyPolicy>,
    namespaces: BTreeMap<String, BTreeMap<String, String>>,
    nodes: BTreeMap<String, BTreeMap<String, String>>,
}

impl StaticCatalog {
    /// A catalog from YAML (see `tests/fixtures/catalog.yaml`): one enclave, its
    /// policies, namespace labels and node labels.
    pub fn from_yaml(yaml: &str) -> Result<Self, serde_yaml::Error> {
        let fixture: CatalogFixture = serde_yaml::from_str(yaml)?;
        let mut policies: Vec<Arc<ResidencyPolicy>> =
            fixture.policies.into_iter().map(Arc::new).collect();
        policies.sort_by_key(|p| p.name_any());
        Ok(Self {
            policies,
            enclaves: [(fixture.enclave.name_any(), Arc::new(fixture.enclave))].into(),
            namespaces: fixture.namespaces,
            nodes: fixture.nodes,
        })
    }
}
