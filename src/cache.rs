//! The operator's watches: one reflector store per kind, read by every controller and
//! by the admission webhook (no API call per decision), each with a broadcast that fires
//! only when something a decision depends on changed — for Nodes, their labels,
//! readiness or existence, so that kubelet heartbeats do not wake the reconcilers.

use std::{
    collections::{BTreeMap, HashMap},
    fmt::Debug,
    hash::{DefaultHasher, Hash, Hasher},
};

use futures::{Stream, StreamExt};
use k8s_openapi::{
    api::core::v1::{
        Affinity, Namespace, Node, PersistentVolume, PersistentVolumeClaim, Pod, PodSpec,
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

use crate::crd::{DataEnclave, ResidencyPolicy};

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
    pub fn start(api: Api<K>, strip: fn(&mut K), fingerprint: fn(&K) -> u64) -> Self {
        let (store, writer) = reflector::store();
        let (changes, _) = broadcast::channel(16);
        let watched = Self {
            store,
            changes: changes.clone(),
        };
        let events = watcher(api, watcher::Config::default().any_semantic())
            .default_backoff()
            .modify(strip)
            .reflect(writer);
        tokio::spawn(async move {
            let mut seen: HashMap<ObjectRef<K>, u64> = HashMap::new();
            let mut events = std::pin::pin!(events);
            while let Some(event) = events.next().await {
                let changed = match event {
                    Ok(watcher::Event::Apply(obj)) | Ok(watcher::Event::InitApply(obj)) => {
                        let digest = fingerprint(&obj);
                        seen.insert(ObjectRef::from_obj(&obj), digest) != Some(digest)
                    }
                    Ok(watcher::Event::Delete(obj)) => {
                        seen.remove(&ObjectRef::from_obj(&obj)).is_some()
                    }
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
        futures::stream::unfold(self.changes.subscribe(), |mut rx| async move {
            match rx.recv().await {
                Ok(()) | Err(broadcast::error::RecvError::Lagged(_)) => Some(((), rx)),
                Err(broadcast::error::RecvError::Closed) => None,
            }
        })
    }
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
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: CachedPodSpec,
    #[serde(default)]
    pub status: CachedPodStatus,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
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
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct CachedPodStatus {
    #[serde(default)]
    pub phase: Option<String>,
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

impl CachedPod {
    pub fn node_name(&self) -> Option<&str> {
        self.spec.node_name.as_deref()
    }

    pub fn phase(&self) -> Option<&str> {
        self.status.phase.as_deref()
    }

    /// The scheduling constraints as a `PodSpec`, the form the placement algebra takes.
    pub fn placement_spec(&self) -> PodSpec {
        PodSpec {
            node_name: self.spec.node_name.clone(),
            node_selector: self.spec.node_selector.clone(),
            affinity: self.spec.affinity.clone(),
            ..Default::default()
        }
    }
}

/// Keeps only the policy annotations: the rest of the metadata stays as labels and
/// owners are read.
fn strip_pod(pod: &mut CachedPod) {
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

/// Every store the operator reads.
#[derive(Clone)]
pub struct Caches {
    pub nodes: Watched<Node>,
    pub pods: Watched<CachedPod>,
    pub namespaces: Watched<Namespace>,
    pub claims: Watched<PersistentVolumeClaim>,
    pub volumes: Watched<PersistentVolume>,
    /// Guarded: an object that does not parse (version skew, a hand-edited object) is
    /// kept as invalid instead of failing the whole watch, and decisions skip it.
    pub enclaves: Watched<DeserializeGuard<DataEnclave>>,
    pub policies: Watched<DeserializeGuard<ResidencyPolicy>>,
    synced: tokio::sync::watch::Receiver<bool>,
}

impl Caches {
    pub fn start(client: &Client) -> Self {
        let nodes = Watched::start(Api::all(client.clone()), strip_node, node_fingerprint);
        let pods = Watched::start(Api::all(client.clone()), strip_pod, any_change);
        let namespaces = Watched::start(
            Api::all(client.clone()),
            strip_managed_fields,
            labels_fingerprint,
        );
        let claims = Watched::start(Api::all(client.clone()), strip_managed_fields, any_change);
        let volumes = Watched::start(Api::all(client.clone()), strip_managed_fields, any_change);
        let enclaves = Watched::start(Api::all(client.clone()), strip_managed_fields, generation);
        let policies = Watched::start(Api::all(client.clone()), strip_managed_fields, generation);
        // A store's readiness wakes only one waiter (kube's DelayedInit keeps a single
        // waker), so one task waits for all of them and publishes the result for any
        // number of waiters.
        let (tx, synced) = tokio::sync::watch::channel(false);
        let stores = (
            nodes.store.clone(),
            pods.store.clone(),
            namespaces.store.clone(),
            claims.store.clone(),
            volumes.store.clone(),
            enclaves.store.clone(),
            policies.store.clone(),
        );
        tokio::spawn(async move {
            let (a, b, c, d, e, f, g) = stores;
            let _ = a.wait_until_ready().await;
            let _ = b.wait_until_ready().await;
            let _ = c.wait_until_ready().await;
            let _ = d.wait_until_ready().await;
            let _ = e.wait_until_ready().await;
            let _ = f.wait_until_ready().await;
            let _ = g.wait_until_ready().await;
            let _ = tx.send(true);
        });
        Self {
            nodes,
            pods,
            namespaces,
            claims,
            volumes,
            enclaves,
            policies,
            synced,
        }
    }

    /// Has every store completed its first list?
    pub fn is_ready(&self) -> bool {
        *self.synced.borrow()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_pod_keeps_what_decisions_read() {
        let review: serde_json::Value =
            serde_json::from_str(include_str!("../tests/fixtures/pod-review.json"))
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
}
