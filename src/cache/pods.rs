//! The pod cache, sized by what policies cover rather than by the cluster.
//!
//! Every pod is watched (a pod anywhere can be the peer of a NetworkPolicy rule, or the
//! target of `kubectl exec`), but only pods in *covered* namespaces — namespaces some
//! ResidencyPolicy's namespace selector matches — are kept in full ([`CachedPod`]:
//! placement, owners, claims, phase). Every other pod is kept as a [`Summary`]: its
//! labels (interned: the pods of one ReplicaSet share one map), its named ports and
//! whether it is terminating — what deciding scope, the access gate and reachability
//! read of it, at a few hundred bytes instead of a few kilobytes.
//!
//! When a namespace becomes covered (a label added, a policy created or widened), its
//! pods are listed again in full; when it stops being covered they are summarised in
//! place. Changes of summarised pods wake the controllers only when what they read
//! (labels, ports, existence) changes: status updates of pods out of every policy's
//! reach cost a decode and a comparison, nothing more.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    sync::{Arc, RwLock},
};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api, Client, ResourceExt,
    api::ListParams,
    core::DeserializeGuard,
    runtime::{WatchStreamExt, watcher},
};
use tokio::sync::{broadcast, watch};

use super::{CachedPod, NamedPort, Watched, strip_pod};
use crate::{coverage, crd::ResidencyPolicy};

pub type Labels = BTreeMap<String, String>;

/// A pod as reachability, scope and the access gate see it; built for every pod.
#[derive(Clone, Debug, PartialEq)]
pub struct PodSummary {
    pub namespace: String,
    pub name: String,
    pub labels: Arc<Labels>,
    pub named_ports: Arc<[NamedPort]>,
    pub terminating: bool,
}

impl PodSummary {
    pub fn of(pod: &CachedPod) -> Option<Self> {
        Some(Self {
            namespace: pod.metadata.namespace.clone()?,
            name: pod.name_any(),
            labels: Arc::new(pod.labels().clone()),
            named_ports: pod.spec.named_ports.clone().into(),
            terminating: pod.metadata.deletion_timestamp.is_some(),
        })
    }
}

/// What is kept of a pod outside every covered namespace.
#[derive(Clone, Debug)]
struct Summary {
    labels: Arc<Labels>,
    named_ports: Arc<[NamedPort]>,
    terminating: bool,
    /// Where it runs and whether it finished: read only while its namespace, newly
    /// covered, is being listed in full ([`PodIndex::awaiting_detail`]). Their changes
    /// wake nobody: a namespace out of every policy's reach is scheduled, run and
    /// finished without a pass.
    node: Option<Arc<str>>,
    finished: bool,
}

impl Summary {
    /// Whether a decision out of scope (reachability, the access gate) may read the
    /// pod differently.
    fn reads_differently(&self, other: &Self) -> bool {
        self.labels != other.labels
            || self.named_ports != other.named_ports
            || self.terminating != other.terminating
    }
}

/// A pod of a newly covered namespace, before its list in full has reached it: enough
/// to count it in scope and say whether it runs inside the enclave.
#[derive(Clone, Debug)]
pub struct AwaitingDetail {
    pub namespace: String,
    pub name: String,
    pub labels: Arc<Labels>,
    pub node: Option<Arc<str>>,
}

#[derive(Clone, Debug)]
enum Detail {
    Full(Arc<CachedPod>),
    Summary(Summary),
}

#[derive(Clone, Debug)]
struct Slot {
    detail: Detail,
    /// The list (initial or re-list) that last saw the pod: pods a re-list no longer
    /// returns are swept when it completes, without holding a second copy meanwhile.
    epoch: u32,
}

#[derive(Default)]
struct State {
    covered: BTreeSet<String>,
    by_namespace: HashMap<String, HashMap<String, Slot>>,
    epoch: u32,
    /// One shared map per distinct label set of summarised pods.
    interned: HashSet<Arc<Labels>>,
    /// One shared list per distinct set of named ports (most pods of a cluster
    /// declare one of a handful).
    interned_ports: HashSet<Arc<[NamedPort]>>,
    /// One shared name per node that summarised pods run on.
    interned_nodes: HashSet<Arc<str>>,
    /// Removals since the interner was last pruned.
    removed: usize,
}

impl State {
    fn intern(&mut self, labels: &Labels) -> Arc<Labels> {
        if let Some(shared) = self.interned.get(labels) {
            return shared.clone();
        }
        let shared = Arc::new(labels.clone());
        self.interned.insert(shared.clone());
        shared
    }

    fn intern_ports(&mut self, ports: &[NamedPort]) -> Arc<[NamedPort]> {
        if let Some(shared) = self.interned_ports.get(ports) {
            return shared.clone();
        }
        let shared: Arc<[NamedPort]> = ports.into();
        self.interned_ports.insert(shared.clone());
        shared
    }

    fn intern_node(&mut self, node: &str) -> Arc<str> {
        if let Some(shared) = self.interned_nodes.get(node) {
            return shared.clone();
        }
        let shared: Arc<str> = node.into();
        self.interned_nodes.insert(shared.clone());
        shared
    }

    fn summarise(&mut self, pod: &CachedPod) -> Summary {
        Summary {
            labels: self.intern(pod.labels()),
            named_ports: self.intern_ports(&pod.spec.named_ports),
            terminating: pod.metadata.deletion_timestamp.is_some(),
            node: pod.node_name().map(|node| self.intern_node(node)),
            finished: matches!(pod.phase(), Some("Succeeded" | "Failed")),
        }
    }

    /// Drops label sets no pod holds any more (only the interner's own reference left).
    fn prune(&mut self) {
        self.removed += 1;
        if self.removed >= 1024 {
            self.removed = 0;
            self.interned.retain(|labels| Arc::strong_count(labels) > 1);
            self.interned_ports
                .retain(|ports| Arc::strong_count(ports) > 1);
            self.interned_nodes
                .retain(|node| Arc::strong_count(node) > 1);
        }
    }

    /// Stores a pod seen by the watch; returns whether a decision may read differently.
    fn put(&mut self, mut pod: CachedPod) -> bool {
        let Some(namespace) = pod.metadata.namespace.clone() else {
            return false;
        };
        strip_pod(&mut pod);
        let name = pod.name_any();
        let detail = if self.covered.contains(&namespace) {
            Detail::Full(Arc::new(pod))
        } else {
            Detail::Summary(self.summarise(&pod))
        };
        let epoch = self.epoch;
        let pods = self.by_namespace.entry(namespace).or_default();
        let changed = match (pods.get(&name).map(|s| &s.detail), &detail) {
            (Some(Detail::Summary(old)), Detail::Summary(new)) => old.reads_differently(new),
            _ => true,
        };
        pods.insert(name, Slot { detail, epoch });
        changed
    }

    fn remove(&mut self, namespace: &str, name: &str) -> bool {
        let removed = self
            .by_namespace
            .get_mut(namespace)
            .and_then(|pods| pods.remove(name))
            .is_some();
        if self
            .by_namespace
            .get(namespace)
            .is_some_and(HashMap::is_empty)
        {
            self.by_namespace.remove(namespace);
        }
        if removed {
            self.prune();
        }
        removed
    }

    fn counts(&self) -> (usize, usize, usize) {
        let mut full = 0;
        let mut summarised = 0;
        for slot in self.by_namespace.values().flat_map(HashMap::values) {
            match slot.detail {
                Detail::Full(_) => full += 1,
                Detail::Summary(_) => summarised += 1,
            }
        }
        (full, summarised, self.interned.len())
    }

    fn covered_pods(&self) -> Vec<Arc<CachedPod>> {
        self.covered
            .iter()
            .filter_map(|namespace| self.by_namespace.get(namespace))
            .flat_map(|pods| pods.values())
            .filter_map(|slot| match &slot.detail {
                Detail::Full(pod) => Some(pod.clone()),
                Detail::Summary(_) => None,
            })
            .collect()
    }

    /// Pods of covered namespaces still summarised (their namespace's list in full is
    /// on its way), unfinished: a pass counts them in scope at once, rather than when the
    /// last page of a large namespace arrives.
    fn awaiting_detail(&self) -> Vec<AwaitingDetail> {
        let mut awaiting = Vec::new();
        for namespace in &self.covered {
            let Some(pods) = self.by_namespace.get(namespace) else {
                continue;
            };
            for (name, slot) in pods {
                if let Detail::Summary(s) = &slot.detail
                    && !s.finished
                {
                    awaiting.push(AwaitingDetail {
                        namespace: namespace.clone(),
                        name: name.clone(),
                        labels: s.labels.clone(),
                        node: s.node.clone(),
                    });
                }
            }
        }
        awaiting
    }

    /// Forgets pods the re-list that just completed did not return.
    fn sweep(&mut self) -> bool {
        let epoch = self.epoch;
        let before: usize = self.by_namespace.values().map(HashMap::len).sum();
        for pods in self.by_namespace.values_mut() {
            pods.retain(|_, slot| slot.epoch == epoch);
        }
        self.by_namespace.retain(|_, pods| !pods.is_empty());
        let after: usize = self.by_namespace.values().map(HashMap::len).sum();
        self.interned.retain(|labels| Arc::strong_count(labels) > 1);
        self.interned_ports
            .retain(|ports| Arc::strong_count(ports) > 1);
        self.interned_nodes
            .retain(|node| Arc::strong_count(node) > 1);
        before != after
    }

    /// Adopts a new covered set: pods of namespaces that left it are summarised at once;
    /// the namespaces that joined it are returned, to be listed in full.
    fn cover(&mut self, covered: BTreeSet<String>) -> Vec<String> {
        let joined: Vec<String> = covered.difference(&self.covered).cloned().collect();
        let left: Vec<String> = self.covered.difference(&covered).cloned().collect();
        self.covered = covered;
        for namespace in left {
            let Some(mut pods) = self.by_namespace.remove(&namespace) else {
                continue;
            };
            for slot in pods.values_mut() {
                if let Detail::Full(pod) = &slot.detail {
                    slot.detail = Detail::Summary(self.summarise(pod));
                }
            }
            self.by_namespace.insert(namespace, pods);
        }
        joined
    }

    /// Puts the full detail of pods listed (a page at a time) after `namespace` joined the
    /// covered set in place of their summaries. Only summaries are replaced: a pod the watch delivered
    /// in full since is as new as the list or newer, and a pod missing was deleted.
    fn upgrade(&mut self, namespace: &str, listed: Vec<CachedPod>) -> bool {
        if !self.covered.contains(namespace) {
            return false;
        }
        let Some(pods) = self.by_namespace.get_mut(namespace) else {
            return false;
        };
        let mut changed = false;
        for mut pod in listed {
            let name = pod.name_any();
            if let Some(slot) = pods.get_mut(&name)
                && matches!(slot.detail, Detail::Summary(_))
            {
                strip_pod(&mut pod);
                slot.detail = Detail::Full(Arc::new(pod));
                changed = true;
            }
        }
        changed
    }
}

/// The namespaces some policy's namespace selector matches.
fn covered_namespaces(
    namespaces: &Watched<Namespace>,
    policies: &Watched<DeserializeGuard<ResidencyPolicy>>,
) -> BTreeSet<String> {
    let policies: Vec<Arc<DeserializeGuard<ResidencyPolicy>>> = policies.store.state();
    let policies: Vec<&ResidencyPolicy> =
        policies.iter().filter_map(|g| g.0.as_ref().ok()).collect();
    namespaces
        .store
        .state()
        .iter()
        .filter_map(|namespace| {
            let name = namespace.name_any();
            policies
                .iter()
                .any(|p| coverage::covers_namespace(p, &name, namespace.labels()))
                .then_some(name)
        })
        .collect()
}

/// The pod cache: see the module documentation.
#[derive(Clone)]
pub struct PodIndex {
    state: Arc<RwLock<State>>,
    changes: broadcast::Sender<()>,
    synced: watch::Receiver<bool>,
}

impl PodIndex {
    /// Starts the watch once `stores_synced` says the namespace and policy caches
    /// have synced (kube's store readiness wakes only one waiter, so the caller waits
    /// for them and says so).
    pub fn start(
        client: Client,
        config: watcher::Config,
        namespaces: Watched<Namespace>,
        policies: Watched<DeserializeGuard<ResidencyPolicy>>,
        stores_synced: watch::Receiver<bool>,
    ) -> Self {
        let state = Arc::new(RwLock::new(State::default()));
        let (changes, _) = broadcast::channel(16);
        let (ready, synced) = watch::channel(false);
        let index = Self {
            state: state.clone(),
            changes: changes.clone(),
            synced,
        };
        let task = Maintainer {
            client,
            state,
            changes,
            namespaces,
            policies,
        };
        tokio::spawn(task.run(config, stores_synced, ready));
        index
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        // A panic while holding the lock leaves consistent data (every write is one
        // insert or replace); keep serving it.
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Every pod of the covered namespaces, in full.
    pub fn covered_pods(&self) -> Vec<Arc<CachedPod>> {
        self.read().covered_pods()
    }

    /// [`Self::covered_pods`] and [`State::awaiting_detail`] under one read: a page
    /// put in place between two reads would be missed or counted twice.
    pub fn covered_and_awaiting_detail(&self) -> (Vec<Arc<CachedPod>>, Vec<AwaitingDetail>) {
        let state = self.read();
        (state.covered_pods(), state.awaiting_detail())
    }

    /// Every pod, as reachability sees it.
    pub fn summaries(&self) -> Vec<PodSummary> {
        let state = self.read();
        let mut all = Vec::with_capacity(state.by_namespace.values().map(HashMap::len).sum());
        for (namespace, pods) in &state.by_namespace {
            for (name, slot) in pods {
                let summary = match &slot.detail {
                    Detail::Full(pod) => PodSummary::of(pod),
                    Detail::Summary(s) => Some(PodSummary {
                        namespace: namespace.clone(),
                        name: name.clone(),
                        labels: s.labels.clone(),
                        named_ports: s.named_ports.clone(),
                        terminating: s.terminating,
                    }),
                };
                all.extend(summary);
            }
        }
        all
    }

    pub fn labels(&self, namespace: &str, name: &str) -> Option<Labels> {
        let state = self.read();
        let slot = state.by_namespace.get(namespace)?.get(name)?;
        Some(match &slot.detail {
            Detail::Full(pod) => pod.labels().clone(),
            Detail::Summary(s) => Labels::clone(&s.labels),
        })
    }

    /// Pods kept in full and summarised, and the distinct label sets of the latter.
    pub fn counts(&self) -> (usize, usize, usize) {
        self.read().counts()
    }

    pub fn is_ready(&self) -> bool {
        *self.synced.borrow()
    }

    pub async fn wait_until_ready(&self) {
        let mut synced = self.synced.clone();
        let _ = synced.wait_for(|ready| *ready).await;
    }

    /// A stream that yields once per relevant change, bursts coalesced.
    pub fn changes(&self) -> impl futures::Stream<Item = ()> + Send + 'static {
        super::change_stream(self.changes.subscribe())
    }
}

/// The task that keeps a [`PodIndex`]: applies watch events and coverage changes.
struct Maintainer {
    client: Client,
    state: Arc<RwLock<State>>,
    changes: broadcast::Sender<()>,
    namespaces: Watched<Namespace>,
    policies: Watched<DeserializeGuard<ResidencyPolicy>>,
}

impl Maintainer {
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    fn notify(&self) {
        // No receiver yet is fine: every controller lists all when it starts.
        let _ = self.changes.send(());
    }

    async fn run(
        self,
        config: watcher::Config,
        mut stores_synced: watch::Receiver<bool>,
        ready: watch::Sender<bool>,
    ) {
        if stores_synced.wait_for(|synced| *synced).await.is_err() {
            return;
        }
        let initial = covered_namespaces(&self.namespaces, &self.policies);
        let _ = self.write().cover(initial);

        let api: Api<CachedPod> = Api::all(self.client.clone());
        let mut events = std::pin::pin!(watcher(api, config).default_backoff());
        let mut coverage = std::pin::pin!(futures::stream::select(
            self.namespaces.changes(),
            self.policies.changes()
        ));
        let (listed_tx, mut listed) = tokio::sync::mpsc::channel::<(String, Vec<CachedPod>)>(4);
        let mut listing = false;
        loop {
            tokio::select! {
                event = events.next() => {
                    let Some(event) = event else { break };
                    let changed = match event {
                        Ok(watcher::Event::Init) => {
                            listing = true;
                            let mut state = self.write();
                            state.epoch = state.epoch.wrapping_add(1);
                            false
                        }
                        Ok(watcher::Event::InitApply(pod)) => {
                            self.write().put(pod);
                            false
                        }
                        Ok(watcher::Event::InitDone) => {
                            listing = false;
                            self.write().sweep();
                            let _ = ready.send(true);
                            let (full, summarised, label_sets) = self.write().counts();
                            tracing::debug!(full, summarised, label_sets, "pod cache synced");
                            true
                        }
                        Ok(watcher::Event::Apply(pod)) => self.write().put(pod),
                        Ok(watcher::Event::Delete(pod)) => match pod.metadata.namespace.as_deref() {
                            Some(namespace) => self.write().remove(namespace, &pod.name_any()),
                            None => false,
                        },
                        Err(error) => {
                            tracing::warn!(kind = "Pod", %error, "watch failed; retrying with backoff");
                            false
                        }
                    };
                    // A (re-)list is announced once, when it is complete.
                    if changed && !listing {
                        self.notify();
                    }
                }
                Some(()) = coverage.next() => {
                    let covered = covered_namespaces(&self.namespaces, &self.policies);
                    let joined = self.write().cover(covered);
                    if !joined.is_empty() {
                        tracing::debug!(namespaces = ?joined, "namespaces covered: listing their pods in full");
                        self.notify();
                    }
                    for namespace in joined {
                        tokio::spawn(list_namespace(self.client.clone(), namespace, listed_tx.clone()));
                    }
                }
                Some((namespace, pods)) = listed.recv() => {
                    if self.write().upgrade(&namespace, pods) {
                        self.notify();
                    }
                }
            }
        }
    }
}

/// Lists one namespace's pods in full, a page of 500 at a time, each page put in place
/// of its pods' summaries as it comes (never the whole namespace held beside its
/// summaries), retrying until a list completes: a namespace that joined the covered set
/// must not stay summarised. A retry lists again from the start; pods already in full
/// are left as they are.
async fn list_namespace(
    client: Client,
    namespace: String,
    pages: tokio::sync::mpsc::Sender<(String, Vec<CachedPod>)>,
) {
    let api: Api<CachedPod> = Api::namespaced(client, &namespace);
    let mut delay = std::time::Duration::from_millis(200);
    let mut params = ListParams::default().limit(500);
    loop {
        match api.list(&params).await {
            Ok(page) => {
                if pages.send((namespace.clone(), page.items)).await.is_err() {
                    return;
                }
                match page.metadata.continue_ {
                    Some(token) if !token.is_empty() => params = params.continue_token(&token),
                    _ => return,
                }
            }
            Err(error) => {
                tracing::warn!(%namespace, %error, "listing the pods of a newly covered namespace failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(std::time::Duration::from_secs(10));
                params = ListParams::default().limit(500);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(namespace: &str, name: &str, labels: &[(&str, &str)], node: &str) -> CachedPod {
        serde_json::from_value(serde_json::json!({
            "metadata": {
                "namespace": namespace, "name": name,
                "labels": labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Labels>(),
                "managedFields": [{"manager": "kubectl"}],
            },
            "spec": {"nodeName": node, "containers": [{"name": "app", "ports": [{"name": "http", "containerPort": 8080}]}]},
        }))
        .expect("a pod")
    }

    fn covered(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    fn full(state: &State, namespace: &str, name: &str) -> Option<bool> {
        let slot = state.by_namespace.get(namespace)?.get(name)?;
        Some(matches!(slot.detail, Detail::Full(_)))
    }

    #[test]
    fn pods_are_kept_in_full_only_in_covered_namespaces() {
        let mut state = State::default();
        state.cover(covered(&["shop"]));
        assert!(state.put(pod("shop", "a", &[("app", "web")], "dublin-a")));
        assert!(state.put(pod("other", "b", &[("app", "web")], "virginia-a")));
        assert!(state.put(pod("other", "c", &[("app", "web")], "virginia-b")));
        assert_eq!(full(&state, "shop", "a"), Some(true));
        assert_eq!(full(&state, "other", "b"), Some(false));
        assert_eq!(
            state.counts(),
            (1, 2, 1),
            "the two summaries share one label set"
        );
        let Detail::Full(kept) = &state.by_namespace["shop"]["a"].detail else {
            unreachable!()
        };
        assert!(kept.metadata.managed_fields.is_none(), "stripped");
        assert_eq!(kept.node_name(), Some("dublin-a"));
    }

    #[test]
    fn a_summarised_pod_wakes_decisions_only_when_what_they_read_changes() {
        let mut state = State::default();
        assert!(state.put(pod("other", "b", &[("app", "web")], "virginia-a")));
        // Moved to another node, same labels and ports: nothing a decision reads.
        assert!(!state.put(pod("other", "b", &[("app", "web")], "virginia-b")));
        assert!(state.put(pod("other", "b", &[("app", "api")], "virginia-b")));
        assert!(state.remove("other", "b"));
        assert!(!state.remove("other", "b"));
        assert!(state.by_namespace.is_empty());
    }

    #[test]
    fn coverage_changes_summarise_at_once_and_list_the_joined_namespaces() {
        let mut state = State::default();
        state.put(pod("shop", "a", &[("app", "web")], "dublin-a"));
        state.put(pod("shop", "gone", &[("app", "web")], "dublin-a"));
        assert_eq!(state.cover(covered(&["shop"])), ["shop"]);
        assert_eq!(full(&state, "shop", "a"), Some(false), "until listed");
        state.remove("shop", "gone");
        let listed = vec![
            pod("shop", "a", &[("app", "web")], "dublin-a"),
            pod("shop", "gone", &[("app", "web")], "dublin-a"),
        ];
        assert!(state.upgrade("shop", listed));
        assert_eq!(full(&state, "shop", "a"), Some(true));
        assert_eq!(
            full(&state, "shop", "gone"),
            None,
            "a deleted pod is not revived"
        );
        // A list that arrives after its namespace left the covered set changes nothing.
        assert!(state.cover(covered(&[])).is_empty());
        assert_eq!(full(&state, "shop", "a"), Some(false));
        assert!(!state.upgrade("shop", vec![pod("shop", "a", &[], "dublin-a")]));
    }

    #[test]
    fn pods_of_a_namespace_being_listed_are_counted_from_their_summaries() {
        let mut state = State::default();
        state.put(pod("shop", "a", &[("app", "web")], "virginia-a"));
        let mut done = pod("shop", "done", &[("app", "web")], "virginia-a");
        done.status.phase = Some("Succeeded".into());
        state.put(done);
        state.put(pod("other", "b", &[("app", "web")], "virginia-a"));
        assert!(state.awaiting_detail().is_empty(), "nothing covered");
        state.cover(covered(&["shop"]));
        let awaiting = state.awaiting_detail();
        assert_eq!(
            awaiting.len(),
            1,
            "finished pods are not counted: {awaiting:?}"
        );
        assert_eq!(awaiting[0].namespace, "shop");
        assert_eq!(awaiting[0].node.as_deref(), Some("virginia-a"));
        assert_eq!(
            awaiting[0].labels.get("app").map(String::as_str),
            Some("web")
        );
        assert!(state.covered_pods().is_empty(), "none in full yet");
        assert!(state.upgrade(
            "shop",
            vec![pod("shop", "a", &[("app", "web")], "virginia-a")]
        ));
        assert!(state.awaiting_detail().is_empty(), "read in full");
        assert_eq!(state.covered_pods().len(), 1);
    }

    /// A pass reads the pods in full and those awaiting their detail while pages move
    /// pods from one to the other: it must see every pod once, never a page missed or
    /// counted twice.
    #[test]
    fn pods_in_full_and_awaiting_are_read_as_of_one_moment() {
        const PODS: usize = 400;
        let listed: Vec<CachedPod> = (0..PODS)
            .map(|i| pod("shop", &format!("p{i}"), &[("app", "web")], "virginia-a"))
            .collect();
        let mut state = State::default();
        for pod in &listed {
            state.put(pod.clone());
        }
        let index = PodIndex {
            state: Arc::new(RwLock::new(state)),
            changes: broadcast::channel(1).0,
            synced: watch::channel(false).1,
        };
        let writer = std::thread::spawn({
            let state = index.state.clone();
            move || {
                for _ in 0..200 {
                    state.write().unwrap().cover(covered(&["shop"]));
                    for page in listed.chunks(50) {
                        state.write().unwrap().upgrade("shop", page.to_vec());
                    }
                    state.write().unwrap().cover(covered(&[]));
                }
            }
        });
        let mut seen = 0;
        while !writer.is_finished() {
            let (full, awaiting) = index.covered_and_awaiting_detail();
            let total = full.len() + awaiting.len();
            assert!(
                total == 0 || total == PODS,
                "{} in full + {} awaiting",
                full.len(),
                awaiting.len()
            );
            seen += usize::from(total == PODS && !full.is_empty() && !awaiting.is_empty());
        }
        writer.join().expect("writer");
        eprintln!("{seen} reads caught a namespace half read in full");
    }

    #[test]
    fn a_namespace_listed_page_by_page_fills_in_and_a_retried_list_keeps_newer_pods() {
        let mut state = State::default();
        for name in ["a", "b", "c"] {
            state.put(pod("shop", name, &[("app", "web")], "virginia-a"));
        }
        state.cover(covered(&["shop"]));
        assert!(state.upgrade("shop", vec![pod("shop", "a", &[], "virginia-a")]));
        assert_eq!(
            full(&state, "shop", "a"),
            Some(true),
            "the first page is in"
        );
        assert_eq!(
            full(&state, "shop", "b"),
            Some(false),
            "the next is not yet"
        );
        // The watch brings b in full; a retried list starting over changes it not.
        state.put(pod("shop", "b", &[("app", "web")], "dublin-a"));
        let page = vec![
            pod("shop", "a", &[], "virginia-a"),
            pod("shop", "b", &[], "virginia-a"),
            pod("shop", "c", &[], "virginia-a"),
        ];
        assert!(state.upgrade("shop", page), "c was still a summary");
        assert_eq!(full(&state, "shop", "c"), Some(true));
        let b = state.by_namespace["shop"]["b"].detail.clone();
        assert!(
            matches!(b, Detail::Full(pod) if pod.node_name() == Some("dublin-a")),
            "the watch's newer b is kept"
        );
    }

    #[test]
    fn a_relist_sweeps_what_it_did_not_return() {
        let mut state = State::default();
        state.put(pod("other", "a", &[("app", "web")], "n"));
        state.put(pod("other", "b", &[("app", "db")], "n"));
        state.epoch += 1;
        state.put(pod("other", "a", &[("app", "web")], "n"));
        assert!(state.sweep());
        assert_eq!(state.counts(), (0, 1, 1), "b and its label set are gone");
    }
}
