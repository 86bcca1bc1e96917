//! The one index of cluster state that every decision reads: admission, the
//! controllers and the audit report. [`Catalog`] is implemented by the live watches
//! ([`crate::cache::Caches`]) and by [`StaticCatalog`], a world loaded from YAML, so
//! that judging, assessing and building status are unit-tested without a cluster.

use std::{collections::BTreeMap, sync::Arc};

use k8s_openapi::api::{
    core::v1::{Node, PersistentVolume, PersistentVolumeClaim},
    networking::v1::NetworkPolicy,
    storage::v1::StorageClass,
};
use kube::{ResourceExt, runtime::reflector::ObjectRef};
use serde::Deserialize;

use crate::{
    cache::{AwaitingDetail, CachedPod, Caches, PodSummary, ReplicaOwner},
    crd::{DataEnclave, ResidencyPolicy},
};

/// The state decisions are made from. Reads are from memory: no API call.
pub trait Catalog {
    /// Every ResidencyPolicy that parses, in name order.
    fn policies(&self) -> Vec<Arc<ResidencyPolicy>>;
    fn enclave(&self, name: &str) -> Option<Arc<DataEnclave>>;
    fn namespace_labels(&self, name: &str) -> Option<BTreeMap<String, String>>;
    fn node_labels(&self, name: &str) -> Option<BTreeMap<String, String>>;
    /// The labels of one pod, if it is known.
    fn pod_labels(&self, namespace: &str, name: &str) -> Option<BTreeMap<String, String>>;
    /// Every namespace with its labels.
    fn namespaces(&self) -> BTreeMap<String, BTreeMap<String, String>>;
    fn nodes(&self) -> Vec<Arc<Node>>;
    /// The pods some policy's namespace selector can reach, in full. Pods of other
    /// namespaces are only in [`Catalog::pod_summaries`].
    fn pods(&self) -> Vec<Arc<CachedPod>>;
    /// Every pod, as reachability sees it (namespace, name, labels, named ports).
    fn pod_summaries(&self) -> Vec<PodSummary>;
    /// [`Catalog::pods`], and the pods of namespaces newly in reach that their list in
    /// full has not reached yet, as of one moment: a page read in full moves pods from
    /// the second to the first, and two reads apart would miss or double-count them.
    fn pods_and_awaiting_detail(&self) -> (Vec<Arc<CachedPod>>, Vec<AwaitingDetail>);
    fn claim(&self, namespace: &str, name: &str) -> Option<Arc<PersistentVolumeClaim>>;
    fn volume(&self, name: &str) -> Option<Arc<PersistentVolume>>;
    /// ReplicaSets and StatefulSets: what their pods' replacements come from.
    fn replica_owners(&self) -> Vec<Arc<ReplicaOwner>>;
    fn storage_classes(&self) -> Vec<Arc<StorageClass>>;
    fn volumes(&self) -> Vec<Arc<PersistentVolume>>;
    fn claims(&self) -> Vec<Arc<PersistentVolumeClaim>>;
    fn network_policies(&self) -> Vec<Arc<NetworkPolicy>>;
    /// Roles, ClusterRoles and their bindings, for the access exposure report.
    fn rbac(&self) -> crate::access::rbac::RbacObjects;
    /// AccessGrants and AccessApprovals (those that parse), or `None` while their
    /// watches have not completed their first list: access decisions then fail closed.
    fn grants(&self) -> Option<crate::grants::Grants>;
}

/// The live catalog: the watches' stores, read in place.
impl Catalog for Caches {
    fn policies(&self) -> Vec<Arc<ResidencyPolicy>> {
        // Objects that do not parse are left out here and reported by the controllers.
        self.parsed_policies()
    }
    fn enclave(&self, name: &str) -> Option<Arc<DataEnclave>> {
        self.parsed_enclaves()
            .into_iter()
            .find(|e| e.metadata.name.as_deref() == Some(name))
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
    fn pod_labels(&self, namespace: &str, name: &str) -> Option<BTreeMap<String, String>> {
        self.pods.labels(namespace, name)
    }
    fn namespaces(&self) -> BTreeMap<String, BTreeMap<String, String>> {
        self.namespaces
            .store
            .state()
            .into_iter()
            .map(|n| (n.name_any(), n.labels().clone()))
            .collect()
    }
    fn nodes(&self) -> Vec<Arc<Node>> {
        self.nodes.store.state()
    }
    fn pods(&self) -> Vec<Arc<CachedPod>> {
        self.pods.covered_pods()
    }
    fn pod_summaries(&self) -> Vec<PodSummary> {
        self.pods.summaries()
    }
    fn pods_and_awaiting_detail(&self) -> (Vec<Arc<CachedPod>>, Vec<AwaitingDetail>) {
        self.pods.covered_and_awaiting_detail()
    }
    fn claim(&self, namespace: &str, name: &str) -> Option<Arc<PersistentVolumeClaim>> {
        self.claims
            .store
            .get(&ObjectRef::new(name).within(namespace))
    }
    fn volume(&self, name: &str) -> Option<Arc<PersistentVolume>> {
        self.volumes.store.get(&ObjectRef::new(name))
    }
    fn storage_classes(&self) -> Vec<Arc<StorageClass>> {
        self.storage_classes.store.state()
    }
    fn volumes(&self) -> Vec<Arc<PersistentVolume>> {
        self.volumes.store.state()
    }
    fn claims(&self) -> Vec<Arc<PersistentVolumeClaim>> {
        self.claims.store.state()
    }
    fn network_policies(&self) -> Vec<Arc<NetworkPolicy>> {
        self.network_policies.store.state()
    }
    fn rbac(&self) -> crate::access::rbac::RbacObjects {
        fn own<K: Clone>(items: Vec<Arc<K>>) -> Vec<K> {
            items.iter().map(|item| K::clone(item)).collect()
        }
        crate::access::rbac::RbacObjects {
            roles: own(self.roles.store.state()),
            cluster_roles: own(self.cluster_roles.store.state()),
            role_bindings: own(self.role_bindings.store.state()),
            cluster_role_bindings: own(self.cluster_role_bindings.store.state()),
        }
    }
    fn grants(&self) -> Option<crate::grants::Grants> {
        if !self.grants_ready() {
            return None;
        }
        Some(self.parsed_grants())
    }
    fn replica_owners(&self) -> Vec<Arc<ReplicaOwner>> {
        let sets = self.replica_sets.store.state();
        let stateful = self.stateful_sets.store.state();
        sets.iter()
            .map(|s| Arc::new(s.owner()))
            .chain(stateful.iter().map(|s| Arc::new(s.owner())))
            .collect()
    }
}

/// A catalog held in plain collections: for unit tests, fixtures and benchmarks.
#[derive(Default, Clone)]
pub struct StaticCatalog {
    pub policies: Vec<Arc<ResidencyPolicy>>,
    pub enclaves: BTreeMap<String, Arc<DataEnclave>>,
    pub namespaces: BTreeMap<String, BTreeMap<String, String>>,
    pub nodes: BTreeMap<String, Arc<Node>>,
    pub pods: Vec<Arc<CachedPod>>,
    pub awaiting_detail: Vec<AwaitingDetail>,
    pub claims: BTreeMap<(String, String), Arc<PersistentVolumeClaim>>,
    pub volumes: BTreeMap<String, Arc<PersistentVolume>>,
    pub owners: Vec<Arc<ReplicaOwner>>,
    pub storage_classes: Vec<Arc<StorageClass>>,
    pub network_policies: Vec<Arc<NetworkPolicy>>,
    pub rbac: crate::access::rbac::RbacObjects,
    pub grants: crate::grants::Grants,
    /// Pretend the grants' watches have not synced yet.
    pub grants_unsynced: bool,
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
        self.nodes.get(name).map(|n| n.labels().clone())
    }
    fn pod_labels(&self, namespace: &str, name: &str) -> Option<BTreeMap<String, String>> {
        self.pods
            .iter()
            .find(|p| p.namespace().as_deref() == Some(namespace) && p.name_any() == name)
            .map(|p| p.labels().clone())
    }
    fn namespaces(&self) -> BTreeMap<String, BTreeMap<String, String>> {
        self.namespaces.clone()
    }
    fn nodes(&self) -> Vec<Arc<Node>> {
        self.nodes.values().cloned().collect()
    }
    fn pods(&self) -> Vec<Arc<CachedPod>> {
        self.pods.clone()
    }
    fn pod_summaries(&self) -> Vec<PodSummary> {
        self.pods.iter().filter_map(|p| PodSummary::of(p)).collect()
    }
    fn pods_and_awaiting_detail(&self) -> (Vec<Arc<CachedPod>>, Vec<AwaitingDetail>) {
        (self.pods.clone(), self.awaiting_detail.clone())
    }
    fn claim(&self, namespace: &str, name: &str) -> Option<Arc<PersistentVolumeClaim>> {
        self.claims
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }
    fn volume(&self, name: &str) -> Option<Arc<PersistentVolume>> {
        self.volumes.get(name).cloned()
    }
    fn replica_owners(&self) -> Vec<Arc<ReplicaOwner>> {
        self.owners.clone()
    }
    fn storage_classes(&self) -> Vec<Arc<StorageClass>> {
        self.storage_classes.clone()
    }
    fn volumes(&self) -> Vec<Arc<PersistentVolume>> {
        self.volumes.values().cloned().collect()
    }
    fn claims(&self) -> Vec<Arc<PersistentVolumeClaim>> {
        self.claims.values().cloned().collect()
    }
    fn network_policies(&self) -> Vec<Arc<NetworkPolicy>> {
        self.network_policies.clone()
    }
    fn rbac(&self) -> crate::access::rbac::RbacObjects {
        self.rbac.clone()
    }
    fn grants(&self) -> Option<crate::grants::Grants> {
        (!self.grants_unsynced).then(|| self.grants.clone())
    }
}

/// A node in a fixture: its labels, or a whole Node object.
#[derive(Deserialize)]
#[serde(untagged)]
enum FixtureNode {
    Labels(BTreeMap<String, String>),
    Node(Box<Node>),
}

/// The YAML form of a [`StaticCatalog`] (see `tests/fixtures/catalog.yaml`).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Fixture {
    #[serde(default)]
    enclave: Option<DataEnclave>,
    #[serde(default)]
    enclaves: Vec<DataEnclave>,
    #[serde(default)]
    policies: Vec<ResidencyPolicy>,
    #[serde(default)]
    namespaces: BTreeMap<String, BTreeMap<String, String>>,
    #[serde(default)]
    nodes: BTreeMap<String, FixtureNode>,
    #[serde(default)]
    pods: Vec<CachedPod>,
    #[serde(default)]
    claims: Vec<PersistentVolumeClaim>,
    #[serde(default)]
    volumes: Vec<PersistentVolume>,
    #[serde(default)]
    owners: Vec<ReplicaOwner>,
    #[serde(default)]
    storage_classes: Vec<StorageClass>,
    #[serde(default)]
    network_policies: Vec<NetworkPolicy>,
}

impl StaticCatalog {
    /// A catalog from YAML: enclaves, policies, namespace labels, nodes (labels or whole
    /// objects, Ready unless they say otherwise), pods, claims, volumes and owners.
    pub fn from_yaml(yaml: &str) -> Result<Self, serde_yaml::Error> {
        let fixture: Fixture = serde_yaml::from_str(yaml)?;
        let mut policies: Vec<Arc<ResidencyPolicy>> =
            fixture.policies.into_iter().map(Arc::new).collect();
        policies.sort_by_key(|p| p.name_any());
        let nodes = fixture
            .nodes
            .into_iter()
            .map(|(name, node)| {
                let mut node = match node {
                    FixtureNode::Node(node) => *node,
                    FixtureNode::Labels(labels) => {
                        let mut node = Node::default();
                        node.metadata.labels = Some(labels);
                        node.status = Some(k8s_openapi::api::core::v1::NodeStatus {
                            conditions: Some(vec![k8s_openapi::api::core::v1::NodeCondition {
                                type_: "Ready".into(),
                                status: "True".into(),
                                ..Default::default()
                            }]),
                            ..Default::default()
                        });
                        node
                    }
                };
                node.metadata.name = Some(name.clone());
                (name, Arc::new(node))
            })
            .collect();
        Ok(Self {
            policies,
            enclaves: fixture
                .enclave
                .into_iter()
                .chain(fixture.enclaves)
                .map(|e| (e.name_any(), Arc::new(e)))
                .collect(),
            namespaces: fixture.namespaces,
            nodes,
            pods: fixture.pods.into_iter().map(Arc::new).collect(),
            awaiting_detail: Vec::new(),
            claims: fixture
                .claims
                .into_iter()
                .map(|c| {
                    (
                        (c.namespace().unwrap_or_default(), c.name_any()),
                        Arc::new(c),
                    )
                })
                .collect(),
            volumes: fixture
                .volumes
                .into_iter()
                .map(|v| (v.name_any(), Arc::new(v)))
                .collect(),
            owners: fixture.owners.into_iter().map(Arc::new).collect(),
            storage_classes: fixture.storage_classes.into_iter().map(Arc::new).collect(),
            network_policies: fixture.network_policies.into_iter().map(Arc::new).collect(),
            rbac: crate::access::rbac::RbacObjects::default(),
            grants: crate::grants::Grants::default(),
            grants_unsynced: false,
        })
    }
}
