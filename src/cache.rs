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
use k8s_openapi::api::core::v1::{
    Namespace, Node, PersistentVolume, PersistentVolumeClaim, Pod, PodSpec,
};
use kube::{
    Api, Client, Resource, ResourceExt,
    runtime::{
        WatchStreamExt,
        reflector::{self, ObjectRef, Store},
        watcher,
    },
};
use serde::de::DeserializeOwned;
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

/// Keeps what placement and migration read: labels, owners, node, node selector,
/// affinity, PVC volumes, phase.
fn strip_pod(pod: &mut Pod) {
    let meta = pod.meta_mut();
    meta.managed_fields = None;
    meta.annotations = meta.annotations.take().map(|a| {
        a.into_iter()
            .filter(|(k, _)| k.starts_with("enclave.dev/"))
            .collect()
    });
    // Only what placement and migration read. Containers and most volumes go: a
    // Volume is several KB in memory even when it holds a small projected token.
    if let Some(spec) = pod.spec.take() {
        pod.spec = Some(PodSpec {
            node_name: spec.node_name,
            node_selector: spec.node_selector,
            affinity: spec.affinity,
            volumes: spec.volumes.map(|volumes| {
                volumes
                    .into_iter()
                    .filter(|v| v.persistent_volume_claim.is_some())
                    .collect()
            }),
            ..Default::default()
        });
    }
    if let Some(status) = pod.status.as_mut() {
        *status = k8s_openapi::api::core::v1::PodStatus {
            phase: status.phase.take(),
            ..Default::default()
        };
    }
}

fn labels_fingerprint<K: Resource>(obj: &K) -> u64 {
    digest(&obj.meta().labels)
}

/// Every store the operator reads.
#[derive(Clone)]
pub struct Caches {
    pub nodes: Watched<Node>,
    pub pods: Watched<Pod>,
    pub namespaces: Watched<Namespace>,
    pub claims: Watched<PersistentVolumeClaim>,
    pub volumes: Watched<PersistentVolume>,
    pub enclaves: Watched<DataEnclave>,
    pub policies: Watched<ResidencyPolicy>,
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
