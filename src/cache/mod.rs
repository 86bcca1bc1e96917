//! The operator's watches: one reflector store per kind, read by every controller and
//! by the admission webhook (no API call per decision), each with a broadcast that fires
//! only when something a decision depends on changed — for Nodes, their labels,
//! readiness or existence, so that kubelet heartbeats do not wake the reconcilers.
//! Pods have a cache of their own ([`pods::PodIndex`]) that keeps full detail only
//! where a policy can reach.

mod parsed;
mod pods;

pub use pods::{AwaitingDetail, Labels, PodIndex, PodSummary};

use std::{
    collections::{BTreeMap, HashMap},
    fmt::Debug,
    hash::{DefaultHasher, Hash, Hasher},
    sync::Arc,
};

use futures::{Stream, StreamExt};
use k8s_openapi::{
    api::{
        apps::v1::{ReplicaSet, StatefulSet},
        core::v1::{
            Affinity, Namespace, Node, PersistentVolume, PersistentVolumeClaim, Pod, PodSpec,
        },
        networking::v1::NetworkPolicy,
        rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding},
        storage::v1::StorageClass,
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::{
    Api, Client, Resource, ResourceExt,
    core::DeserializeGuard,
    runtime::{
        WatchStreamExt,
        reflector::{self, ObjectRef, Store},
        watcher,
    },
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use tokio::sync::broadcast;

use crate::crd::{AccessAnomaly, AccessApproval, AccessGrant, DataEnclave, ResidencyPolicy};

/// A reflector store and a broadcast of relevant changes to it.
pub struct Watched<K: Resource<DynamicType = ()> + 'static> {
    pub store: Store<K>,
    changes: broadcast::Sender<()>,
}

impl<K: Resource<DynamicType = ()> + 'static> Clone for Watched<K> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            changes: self.changes.clone(),
        }
    }
}

impl<K> Watched<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    /// Starts the watch on a background task. `strip` drops what the operator never
    /// reads before it is cached; `fingerprint` digests what it does read, and a change
    /// is broadcast only when the digest changes. The store is empty until the first
    /// list completes: use `store.wait_until_ready()` before trusting it.
    pub fn start(
        api: Api<K>,
        config: &watcher::Config,
        strip: fn(&mut K),
        fingerprint: fn(&K) -> u64,
    ) -> Self {
        let (store, writer) = reflector::store();
        let (changes, _) = broadcast::channel(16);
        let watched = Self {
            store,
            changes: changes.clone(),
        };
        let events = watcher(api, config.clone())
            .default_backoff()
            .modify(strip)
            .reflect(writer);
        tokio::spawn(async move {
            // Keyed by a digest of namespace and name: an `ObjectRef` would hold a
            // second copy of the name, namespace, UID and resource version.
            let mut seen: HashMap<u64, u64> = HashMap::new();
            let mut events = std::pin::pin!(events);
            while let Some(event) = events.next().await {
                let changed = match event {
                    Ok(watcher::Event::Apply(obj)) | Ok(watcher::Event::InitApply(obj)) => {
                        let digest = fingerprint(&obj);
                        seen.insert(key(&obj), digest) != Some(digest)
                    }
                    Ok(watcher::Event::Delete(obj)) => seen.remove(&key(&obj)).is_some(),
                    Ok(watcher::Event::Init) => false,
                    Ok(watcher::Event::InitDone) => {
                        tracing::debug!(kind = %K::kind(&()), "cache synced");
                        true
                    }
                    Err(error) => {
                        tracing::warn!(kind = %K::kind(&()), %error, "watch failed; retrying with backoff");
                        false
                    }
                };
                if changed {
                    // No receiver yet is fine: every controller lists all when it starts.
                    let _ = changes.send(());
                }
            }
        });
        watched
    }

    /// A stream that yields once per relevant change (a burst a slow receiver missed
    /// is coalesced into one).
    pub fn changes(&self) -> impl Stream<Item = ()> + Send + 'static {
        change_stream(self.changes.subscribe())
    }
}

/// One item per broadcast change; a burst a slow receiver missed is coalesced into one.
fn change_stream(rx: broadcast::Receiver<()>) -> impl Stream<Item = ()> + Send + 'static {
    futures::stream::unfold(rx, |mut rx| async move {
        match rx.recv().await {
            Ok(()) | Err(broadcast::error::RecvError::Lagged(_)) => Some(((), rx)),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    })
}

fn key<K: Resource>(obj: &K) -> u64 {
    digest(&(&obj.meta().namespace, &obj.meta().name))
}

/// How every watch lists: a streaming list (the initial state sent over the watch,
/// one object at a time: no list response held whole while it is decoded) where the
/// API server has it on by default (Kubernetes 1.34 and later, 1.33 excepted), pages
/// of 500 from the API server's cache otherwise.
pub fn list_config(streaming: bool) -> watcher::Config {
    if streaming {
        watcher::Config::default().streaming_lists()
    } else {
        watcher::Config::default().any_semantic()
    }
}

/// Does this API server stream lists by default (the WatchList feature)?
pub fn streams_lists(version: &k8s_openapi::apimachinery::pkg::version::Info) -> bool {
    let minor: u32 = version
        .minor
        .trim_end_matches(|c: char| !c.is_ascii_digit())
        .parse()
        .unwrap_or(0);
    version.major == "1" && minor >= 34
}

fn digest<T: Hash + ?Sized>(value: &T) -> u64 {
    let mut hasher = DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

/// Any change counts: the resource version moves on every write.
fn any_change<K: Resource>(obj: &K) -> u64 {
    digest(&obj.meta().resource_version)
}

/// Only spec changes count (status writes do not move the generation).
fn generation<K: Resource>(obj: &K) -> u64 {
    digest(&obj.meta().generation)
}

fn strip_managed_fields<K: Resource>(obj: &mut K) {
    obj.meta_mut().managed_fields = None;
}

/// Is the node's Ready condition True?
pub fn node_is_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True")
}

/// Keeps labels, spec and the Ready condition: the image list alone is often tens of
/// KB per node.
fn strip_node(node: &mut Node) {
    node.meta_mut().managed_fields = None;
    node.annotations_mut().clear();
    if let Some(status) = node.status.as_mut() {
        let ready = status
            .conditions
            .take()
            .map(|c| c.into_iter().filter(|c| c.type_ == "Ready").collect());
        *status = Default::default();
        status.conditions = ready;
    }
}

fn node_fingerprint(node: &Node) -> u64 {
    digest(&(node.labels(), node_is_ready(node)))
}

/// A pod as the operator caches it: metadata and the few fields placement and
/// migration read, deserialized straight from the watch. Everything else in the JSON —
/// containers, projected token volumes, most of the status — is skipped by serde and
/// never materialised: a full `Pod` costs 2.4 KB before any heap data, a `Volume` 3.2 KB.
#[derive(Resource, Clone, Debug, Default, Deserialize, Serialize)]
#[resource(inherit = "Pod")]
pub struct CachedPod {
    #[serde(deserialize_with = "lean_metadata")]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: CachedPodSpec,
    #[serde(default)]
    pub status: CachedPodStatus,
}

/// Reads an object's metadata without its `managedFields`. Deserializing `ObjectMeta`
/// builds them as `serde_json::Value` trees (a few KB per pod) only for [`strip_pod`] to
/// drop them; skipped here, serde steps over them in the JSON instead. Listing a
/// 10,000-pod namespace in full held 95 MB of them at the peak of a migration.
fn lean_metadata<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<ObjectMeta, D::Error> {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Lean {
        annotations: Option<BTreeMap<String, String>>,
        creation_timestamp: Option<Time>,
        deletion_grace_period_seconds: Option<i64>,
        deletion_timestamp: Option<Time>,
        finalizers: Option<Vec<String>>,
        generate_name: Option<String>,
        generation: Option<i64>,
        labels: Option<BTreeMap<String, String>>,
        name: Option<String>,
        namespace: Option<String>,
        owner_references: Option<Vec<OwnerReference>>,
        resource_version: Option<String>,
        uid: Option<String>,
    }
    let lean = Lean::deserialize(deserializer)?;
    Ok(ObjectMeta {
        annotations: lean.annotations,
        creation_timestamp: lean.creation_timestamp,
        deletion_grace_period_seconds: lean.deletion_grace_period_seconds,
        deletion_timestamp: lean.deletion_timestamp,
        finalizers: lean.finalizers,
        generate_name: lean.generate_name,
        generation: lean.generation,
        labels: lean.labels,
        name: lean.name,
        namespace: lean.namespace,
        owner_references: lean.owner_references,
        resource_version: lean.resource_version,
        uid: lean.uid,
        managed_fields: None,
        self_link: None,
    })
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CachedPodSpec {
    #[serde(default)]
    pub node_name: Option<String>,
    #[serde(default)]
    pub node_selector: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub affinity: Option<Affinity>,
    /// Claim names of the pod's PersistentVolumeClaim volumes.
    #[serde(
        default,
        rename = "volumes",
        deserialize_with = "claim_names",
        skip_serializing
    )]
    pub claims: Vec<String>,
    /// The named ports its containers declare (NetworkPolicies may refer to them).
    #[serde(
        default,
        rename = "containers",
        deserialize_with = "named_ports",
        skip_serializing
    )]
    pub named_ports: Vec<NamedPort>,
}

/// A container port with a name.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq, Hash)]
pub struct NamedPort {
    pub name: String,
    pub number: i32,
    pub protocol: String,
}

/// Reads `spec.containers` keeping only the named ports.
fn named_ports<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<NamedPort>, D::Error> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Container {
        #[serde(default)]
        ports: Vec<Port>,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Port {
        #[serde(default)]
        name: Option<String>,
        container_port: i32,
        #[serde(default)]
        protocol: Option<String>,
    }
    let containers: Option<Vec<Container>> = Option::deserialize(deserializer)?;
    Ok(containers
        .into_iter()
        .flatten()
        .flat_map(|c| c.ports)
        .filter_map(|p| {
            Some(NamedPort {
                name: p.name.filter(|n| !n.is_empty())?,
                number: p.container_port,
                protocol: p.protocol.unwrap_or_else(|| "TCP".into()),
            })
        })
        .collect())
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct CachedPodStatus {
    #[serde(default)]
    pub phase: Option<String>,
    /// The Ready condition's status (`None` while the pod reports no conditions): what
    /// a PodDisruptionBudget counts as healthy.
    #[serde(
        default,
        rename = "conditions",
        deserialize_with = "ready_condition",
        skip_serializing
    )]
    pub ready: Option<bool>,
}

/// Reads `status.conditions` keeping only whether Ready is True.
fn ready_condition<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<bool>, D::Error> {
    #[derive(Deserialize)]
    struct Condition {
        #[serde(rename = "type")]
        type_: String,
        #[serde(default)]
        status: String,
    }
    let conditions: Option<Vec<Condition>> = Option::deserialize(deserializer)?;
    Ok(conditions.map(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True")))
}

/// Reads `spec.volumes` keeping only PVC claim names.
fn claim_names<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct VolumeRef {
        persistent_volume_claim: Option<ClaimRef>,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct ClaimRef {
        claim_name: String,
    }
    let volumes: Option<Vec<VolumeRef>> = Option::deserialize(deserializer)?;
    Ok(volumes
        .into_iter()
        .flatten()
        .filter_map(|v| v.persistent_volume_claim.map(|c| c.claim_name))
        .collect())
}

impl CachedPodSpec {
    /// The scheduling constraints as a `PodSpec`, the form the placement algebra takes.
    pub fn placement_spec(&self) -> PodSpec {
        PodSpec {
            node_name: self.node_name.clone(),
            node_selector: self.node_selector.clone(),
            affinity: self.affinity.clone(),
            ..Default::default()
        }
    }
}

impl CachedPod {
    pub fn node_name(&self) -> Option<&str> {
        self.spec.node_name.as_deref()
    }

    pub fn phase(&self) -> Option<&str> {
        self.status.phase.as_deref()
    }

    /// Ready, as a PodDisruptionBudget counts it; a pod that reports no conditions is
    /// taken as ready once it runs.
    pub fn is_ready(&self) -> bool {
        self.status
            .ready
            .unwrap_or_else(|| self.phase() == Some("Running"))
    }

    /// The scheduling constraints as a `PodSpec`, the form the placement algebra takes.
    pub fn placement_spec(&self) -> PodSpec {
        self.spec.placement_spec()
    }
}

/// Keeps only the policy annotations: the rest of the metadata stays as labels and
/// owners are read.
pub(crate) fn strip_pod(pod: &mut CachedPod) {
    pod.metadata.managed_fields = None;
    pod.metadata.annotations = pod.metadata.annotations.take().map(|a| {
        a.into_iter()
            .filter(|(k, _)| k.starts_with("enclave.dev/"))
            .collect()
    });
}

fn labels_fingerprint<K: Resource>(obj: &K) -> u64 {
    digest(&obj.meta().labels)
}

/// The replica count and pod labels of a ReplicaSet or StatefulSet: what the migration
/// budget needs to see pods that were evicted and are not recreated yet (after a
/// restart nothing else remembers them).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaOwner {
    pub kind: String,
    pub metadata: ObjectMeta,
    /// `spec.replicas` (1 when unset, as the API defaults it).
    pub desired: i32,
    /// The labels of the pods it creates.
    #[serde(default)]
    pub template_labels: BTreeMap<String, String>,
    /// Where the pods it creates ask to run: what a replacement of an evicted pod asks.
    #[serde(default)]
    pub template_placement: CachedPodSpec,
    /// It cannot create pods (condition ReplicaFailure): its missing replicas are not on
    /// their way, and must not hold the budget of a policy.
    #[serde(default)]
    pub failing: bool,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct OwnerSpec {
    #[serde(default)]
    pub replicas: Option<i32>,
    #[serde(default)]
    pub template: Option<OwnerTemplate>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct OwnerTemplate {
    #[serde(default)]
    pub metadata: Option<OwnerTemplateMeta>,
    #[serde(default)]
    pub spec: Option<CachedPodSpec>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct OwnerTemplateMeta {
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct OwnerStatus {
    #[serde(default)]
    pub conditions: Option<Vec<OwnerCondition>>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct OwnerCondition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
}

macro_rules! lean_owner {
    ($name:ident, $kind:literal) => {
        #[doc = concat!("A ", $kind, " as the operator caches it: metadata, replicas, template labels, conditions.")]
        #[derive(Resource, Clone, Debug, Default, Deserialize, Serialize)]
        #[resource(inherit = $kind)]
        pub struct $name {
            #[serde(deserialize_with = "lean_metadata")]
            pub metadata: ObjectMeta,
            #[serde(default)]
            pub spec: OwnerSpec,
            #[serde(default)]
            pub status: OwnerStatus,
        }

        impl $name {
            /// What decisions read of it (the audit report builds its catalog with this too).
            pub fn owner(&self) -> ReplicaOwner {
                ReplicaOwner {
                    kind: $kind.to_string(),
                    metadata: self.metadata.clone(),
                    desired: self.spec.replicas.unwrap_or(1),
                    template_labels: self
                        .spec
                        .template
                        .as_ref()
                        .and_then(|t| t.metadata.as_ref())
                        .and_then(|m| m.labels.clone())
                        .unwrap_or_default(),
                    template_placement: self
                        .spec
                        .template
                        .as_ref()
                        .and_then(|t| t.spec.clone())
                        .unwrap_or_default(),
                    failing: self
                        .status
                        .conditions
                        .iter()
                        .flatten()
                        .any(|c| c.type_ == "ReplicaFailure" && c.status == "True"),
                }
            }
        }
    };
}

lean_owner!(CachedReplicaSet, "ReplicaSet");
lean_owner!(CachedStatefulSet, "StatefulSet");

/// Drops managed fields and annotations and keeps the labels: `kubectl apply` keeps a
/// whole copy of the object in an annotation, and nothing the operator decides reads
/// annotations of owners or RBAC objects (the exposure report reads the
/// `kubernetes.io/bootstrapping` label).
fn strip_annotations<K: Resource>(obj: &mut K) {
    let meta = obj.meta_mut();
    meta.managed_fields = None;
    meta.annotations = None;
}

/// The parsed objects of the guarded stores ([`parsed::Parsed`]).
#[derive(Default)]
struct ParsedStores {
    policies: parsed::Parsed<ResidencyPolicy>,
    enclaves: parsed::Parsed<DataEnclave>,
    grants: parsed::Parsed<AccessGrant>,
    approvals: parsed::Parsed<AccessApproval>,
    anomalies: parsed::Parsed<AccessAnomaly>,
}

/// Every store the operator reads.
#[derive(Clone)]
pub struct Caches {
    pub nodes: Watched<Node>,
    pub pods: PodIndex,
    pub namespaces: Watched<Namespace>,
    pub claims: Watched<PersistentVolumeClaim>,
    pub volumes: Watched<PersistentVolume>,
    pub replica_sets: Watched<CachedReplicaSet>,
    pub stateful_sets: Watched<CachedStatefulSet>,
    pub storage_classes: Watched<StorageClass>,
    pub network_policies: Watched<NetworkPolicy>,
    /// RBAC, for the access exposure report.
    pub roles: Watched<Role>,
    pub cluster_roles: Watched<ClusterRole>,
    pub role_bindings: Watched<RoleBinding>,
    pub cluster_role_bindings: Watched<ClusterRoleBinding>,
    /// Guarded: an object that does not parse (version skew, a hand-edited object) is
    /// kept as invalid instead of failing the whole watch, and decisions skip it.
    pub enclaves: Watched<DeserializeGuard<DataEnclave>>,
    pub policies: Watched<DeserializeGuard<ResidencyPolicy>>,
    pub access_grants: Watched<DeserializeGuard<AccessGrant>>,
    pub access_approvals: Watched<DeserializeGuard<AccessApproval>>,
    pub access_anomalies: Watched<DeserializeGuard<AccessAnomaly>>,
    /// The guarded stores' objects, copied out of their guards once per version.
    parsed: Arc<ParsedStores>,
    synced: tokio::sync::watch::Receiver<bool>,
    /// Every store but the pods' (see [`Caches::admission_ready`]).
    admission_synced: tokio::sync::watch::Receiver<bool>,
}

impl Caches {
    /// Starts every watch; `config` from [`list_config`].
    pub fn start(client: &Client, config: &watcher::Config) -> Self {
        let nodes = Watched::start(
            Api::all(client.clone()),
            config,
            strip_node,
            node_fingerprint,
        );
        let namespaces = Watched::start(
            Api::all(client.clone()),
            config,
            strip_managed_fields,
            labels_fingerprint,
        );
        let claims = Watched::start(
            Api::all(client.clone()),
            config,
            strip_managed_fields,
            any_change,
        );
        let volumes = Watched::start(
            Api::all(client.clone()),
            config,
            strip_managed_fields,
            any_change,
        );
        let replica_sets = Watched::start(
            Api::all(client.clone()),
            config,
            strip_annotations,
            any_change,
        );
        let storage_classes = Watched::start(
            Api::all(client.clone()),
            config,
            strip_managed_fields,
            any_change,
        );
        let network_policies = Watched::start(
            Api::all(client.clone()),
            config,
            strip_managed_fields,
            any_change,
        );
        let stateful_sets = Watched::start(
            Api::all(client.clone()),
            config,
            strip_annotations,
            any_change,
        );
        let roles = Watched::start(
            Api::all(client.clone()),
            config,
            strip_annotations,
            any_change,
        );
        let cluster_roles = Watched::start(
            Api::all(client.clone()),
            config,
            strip_annotations,
            any_change,
        );
        let role_bindings = Watched::start(
            Api::all(client.clone()),
            config,
            strip_annotations,
            any_change,
        );
        let cluster_role_bindings = Watched::start(
            Api::all(client.clone()),
            config,
            strip_annotations,
            any_change,
        );
        let enclaves = Watched::start(
            Api::all(client.clone()),
            config,
            strip_managed_fields,
            generation,
        );
        let policies = Watched::start(
            Api::all(client.clone()),
            config,
            strip_managed_fields,
            generation,
        );
        // Grants and approvals: every write counts (an approval is a new object; a
        // grant's status is written by the operator and wakes the grant controller).
        let access_grants = Watched::start(
            Api::all(client.clone()),
            config,
            strip_managed_fields,
            any_change,
        );
        let access_approvals = Watched::start(
            Api::all(client.clone()),
            config,
            strip_managed_fields,
            any_change,
        );
        let access_anomalies = Watched::start(
            Api::all(client.clone()),
            config,
            strip_managed_fields,
            any_change,
        );

        // A store's readiness wakes only one waiter (kube's DelayedInit keeps a single
        // waker), so one task waits for all of them and publishes the result for any
        // number of waiters.
        let (tx, synced) = tokio::sync::watch::channel(false);
        let waits = [
            ready_future(&nodes.store),
            ready_future(&namespaces.store),
            ready_future(&claims.store),
            ready_future(&volumes.store),
            ready_future(&replica_sets.store),
            ready_future(&stateful_sets.store),
            ready_future(&storage_classes.store),
            ready_future(&network_policies.store),
            ready_future(&roles.store),
            ready_future(&cluster_roles.store),
            ready_future(&role_bindings.store),
            ready_future(&cluster_role_bindings.store),
            ready_future(&enclaves.store),
            ready_future(&policies.store),
            ready_future(&access_grants.store),
            ready_future(&access_approvals.store),
            ready_future(&access_anomalies.store),
        ];
        // The pod cache starts once the others have synced: which namespaces are
        // covered must be known before the first pod is stored.
        let (stores_tx, stores_synced) = tokio::sync::watch::channel(false);
        let pods = PodIndex::start(
            client.clone(),
            config.clone(),
            namespaces.clone(),
            policies.clone(),
            stores_synced.clone(),
        );
        let pods_ready = pods.clone();
        tokio::spawn(async move {
            futures::future::join_all(waits).await;
            let _ = stores_tx.send(true);
            pods_ready.wait_until_ready().await;
            let _ = tx.send(true);
        });
        Self {
            nodes,
            pods,
            namespaces,
            claims,
            volumes,
            replica_sets,
            stateful_sets,
            storage_classes,
            network_policies,
            roles,
            cluster_roles,
            role_bindings,
            cluster_role_bindings,
            enclaves,
            policies,
            access_grants,
            access_approvals,
            access_anomalies,
            parsed: Arc::default(),
            synced,
            admission_synced: stores_synced,
        }
    }

    /// Every ResidencyPolicy that parses, by name.
    pub fn parsed_policies(&self) -> Vec<Arc<ResidencyPolicy>> {
        self.parsed.policies.of(self.policies.store.state())
    }

    /// Every DataEnclave that parses, by name.
    pub fn parsed_enclaves(&self) -> Vec<Arc<DataEnclave>> {
        self.parsed.enclaves.of(self.enclaves.store.state())
    }

    /// The AccessGrants, AccessApprovals and AccessAnomalies that parse.
    pub fn parsed_grants(&self) -> crate::grants::Grants {
        crate::grants::Grants {
            grants: self.parsed.grants.of(self.access_grants.store.state()),
            approvals: self
                .parsed
                .approvals
                .of(self.access_approvals.store.state()),
            anomalies: self
                .parsed
                .anomalies
                .of(self.access_anomalies.store.state()),
        }
    }

    /// Have the grant stores (grants, approvals, anomalies) completed their first list?
    /// They are among the stores admission waits for; a second waiter on a store
    /// would never be woken (see above), so their readiness is admission's.
    pub fn grants_ready(&self) -> bool {
        self.admission_ready()
    }

    /// Has every store completed its first list?
    pub fn is_ready(&self) -> bool {
        *self.synced.borrow()
    }

    /// Has every store admission reads completed its first list? All but the pods:
    /// pod admission reads nodes, namespaces, claims, volumes, classes, enclaves and
    /// policies, never other pods, and the access gate judges a pod it has not seen
    /// yet by every policy of its namespace (fail closed). On a large cluster the
    /// pod list is most of a cold start (10,000 pods: about a second), so a new replica
    /// serves admission before it, and its controllers start after it.
    pub fn admission_ready(&self) -> bool {
        *self.admission_synced.borrow()
    }

    /// Waits until every store has completed its first list. Any number of tasks may wait.
    pub async fn wait_until_ready(&self) {
        let mut synced = self.synced.clone();
        let _ = synced.wait_for(|ready| *ready).await;
    }

    /// Labels of a namespace, from the cache.
    pub fn namespace_labels(&self, name: &str) -> Option<BTreeMap<String, String>> {
        self.namespaces
            .store
            .get(&ObjectRef::new(name))
            .map(|ns| ns.labels().clone())
    }
}

/// A store's first list, as a boxed future so that stores of every kind wait together.
fn ready_future<K>(store: &Store<K>) -> futures::future::BoxFuture<'static, ()>
where
    K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
{
    let store = store.clone();
    Box::pin(async move {
        let _ = store.wait_until_ready().await;
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_pod_keeps_what_decisions_read() {
        let review: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/fixtures/pod-review.json"))
                .expect("fixture");
        let mut object = review["request"]["object"].clone();
        object["spec"]["nodeName"] = "dublin-a".into();
        object["spec"]["volumes"]
            .as_array_mut()
            .expect("volumes")
            .push(serde_json::json!({"name": "data", "persistentVolumeClaim": {"claimName": "checkout-data"}}));
        object["status"] = serde_json::json!({"phase": "Running", "podIP": "10.0.0.1"});
        let pod: CachedPod = serde_json::from_value(object).expect("a pod parses as CachedPod");
        assert_eq!(pod.node_name(), Some("dublin-a"));
        assert_eq!(pod.phase(), Some("Running"));
        assert_eq!(
            pod.spec.claims,
            ["checkout-data"],
            "only PVC volumes are kept"
        );
        assert_eq!(
            pod.placement_spec()
                .affinity
                .and_then(|a| a.node_affinity)
                .map(|n| n
                    .required_during_scheduling_ignored_during_execution
                    .is_some()),
            Some(true)
        );
        assert_eq!(pod.owner_references()[0].kind, "ReplicaSet");
        assert_eq!(CachedPod::kind(&()), "Pod");
        assert_eq!(CachedPod::plural(&()), "pods");
    }

    #[test]
    fn cached_objects_skip_managed_fields_and_keep_the_rest_of_the_metadata() {
        let pod: CachedPod = serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "web-1", "namespace": "shop", "uid": "u-1", "resourceVersion": "7",
                "generateName": "web-", "generation": 2,
                "creationTimestamp": "2026-11-26T10:00:00Z",
                "deletionTimestamp": "2026-11-26T10:05:00Z", "deletionGracePeriodSeconds": 30,
                "labels": {"app": "web"}, "annotations": {"enclave.dev/x": "1"},
                "finalizers": ["f"],
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web",
                                     "uid": "rs-1", "controller": true}],
                "managedFields": [{"manager": "kubectl", "operation": "Apply",
                                   "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:containers": {}}}}]
            }
        }))
        .expect("a pod parses");
        let meta = &pod.metadata;
        assert!(meta.managed_fields.is_none(), "never materialised");
        assert_eq!(
            (
                meta.name.as_deref(),
                meta.namespace.as_deref(),
                meta.uid.as_deref()
            ),
            (Some("web-1"), Some("shop"), Some("u-1"))
        );
        assert_eq!(meta.resource_version.as_deref(), Some("7"));
        assert_eq!(meta.generate_name.as_deref(), Some("web-"));
        assert_eq!(meta.generation, Some(2));
        assert!(meta.creation_timestamp.is_some() && meta.deletion_timestamp.is_some());
        assert_eq!(meta.deletion_grace_period_seconds, Some(30));
        assert_eq!(pod.labels()["app"], "web");
        assert_eq!(pod.annotations()["enclave.dev/x"], "1");
        assert_eq!(meta.finalizers.as_deref(), Some(&["f".to_string()][..]));
        assert_eq!(pod.owner_references()[0].uid, "rs-1");
        let owner: CachedReplicaSet = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "managedFields": [{"manager": "kube-controller-manager",
                                                            "fieldsV1": {"f:status": {}}}]},
            "spec": {"replicas": 3}
        }))
        .expect("a ReplicaSet parses");
        assert!(owner.metadata.managed_fields.is_none());
        assert_eq!(owner.owner().desired, 3);
    }
}
