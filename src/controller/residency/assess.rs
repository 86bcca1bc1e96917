//! Judging a policy's scope, pure: every pod in scope against the enclave, from the
//! [`Catalog`] and the controller's [`Memory`], into counts, violations, the pods to
//! evict (in a fair order) and how many are already on their way.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Node;
use kube::ResourceExt;

use super::memory::Memory;
use crate::{
    cache::{CachedPod, ReplicaOwner},
    catalog::Catalog,
    crd::{Enforcement, ResidencyPolicy, Violation},
    placement,
    scope::{self, ResolvedEnclave},
    volumes::{Storage, VolumeOutside},
};

/// At most this many violations are listed in status; the counts cover the rest.
pub const MAX_VIOLATIONS: usize = 50;

/// A pod not running this long after its creation is stuck, not on its way: it no longer
/// holds the migration budget (one tenant's unschedulable pod must not stall a policy).
pub const STUCK: Duration = Duration::from_secs(300);

/// What the controller concluded about one pod in scope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Judgement {
    /// On (or held to) enclave nodes.
    Compliant,
    /// Outside and on its way: being deleted after an eviction.
    Migrating,
    /// Outside; will be evicted when the budget allows.
    ToEvict,
    /// Outside and not moved automatically; the reason says why.
    Blocked {
        reason: &'static str,
        message: String,
    },
    /// Not compliant, and the policy does not move it (Audit, migration disabled, a pod
    /// that cannot be placed in the enclave at all).
    Reported {
        reason: &'static str,
        message: String,
    },
}

/// A pod that is blocked, for the record.
#[derive(Clone, Debug)]
pub struct BlockedPod {
    pub pod: Arc<CachedPod>,
    pub reason: &'static str,
    pub message: String,
}

/// The state of a policy's scope.
#[derive(Debug, Default)]
pub struct Assessment {
    pub matched: i32,
    pub compliant: i32,
    pub non_compliant: i32,
    pub migrating: i32,
    pub blocked: i32,
    /// Pods in scope not read in full yet (their namespace just came into scope and is
    /// being listed) and not running inside the enclave: judged when their detail
    /// arrives. Those running outside are also in `non_compliant`.
    pub awaiting_detail: i32,
    /// Every violation, sorted by namespace and name (status lists the first ones).
    pub violations: Vec<Violation>,
    /// Pods to evict, namespaces taking turns so that one large namespace cannot hold
    /// back the others.
    pub to_evict: Vec<Arc<CachedPod>>,
    /// Pods on their way: the concurrency budget is spent on these.
    pub in_flight: usize,
    /// Enforcing policies that share scope with this one while no node is in both
    /// enclaves.
    pub conflicts: BTreeSet<String>,
    pub blocked_pods: Vec<BlockedPod>,
    /// When the first pod held back by a PDB may be tried again.
    pub retry_in: Option<Duration>,
    /// Owners (by UID) with replicas on their way: a PDB refusing one of their pods is
    /// the budget spent on those, not a PDB that holds.
    pub busy_owners: HashSet<String>,
}

/// What the cached pods show of their owners.
struct OwnerReplicas<'a> {
    /// Per owner UID: replicas running, and replicas stuck (not running after [`STUCK`]).
    running: HashMap<&'a str, (i32, i32)>,
    /// Owners with replicas on their way: terminating, not ready yet, or missing.
    busy: HashSet<String>,
}

impl<'a> OwnerReplicas<'a> {
    fn count(
        pods: &'a [Arc<CachedPod>],
        owners: &HashMap<String, Arc<ReplicaOwner>>,
        now: Timestamp,
    ) -> Self {
        let mut running: HashMap<&str, (i32, i32)> = HashMap::new();
        let mut ready: HashMap<&str, i32> = HashMap::new();
        let mut busy = HashSet::new();
        for pod in pods {
            let Some(owner) = controller(pod) else {
                continue;
            };
            if is_terminating(pod) {
                busy.insert(owner.uid.clone());
                continue;
            }
            let stuck = age(pod, now) >= STUCK;
            let entry = running.entry(owner.uid.as_str()).or_default();
            if is_running(pod) {
                entry.0 += 1;
            } else if stuck {
                entry.1 += 1;
            }
            if pod.is_ready() {
                *ready.entry(owner.uid.as_str()).or_default() += 1;
            } else if !stuck && !is_finished(pod) {
                busy.insert(owner.uid.clone());
            }
        }
        for (uid, owner) in owners {
            let stuck = running.get(uid.as_str()).map_or(0, |r| r.1);
            if !owner.failing
                && owner.desired > ready.get(uid.as_str()).copied().unwrap_or(0) + stuck
            {
                busy.insert(uid.clone());
            }
        }
        Self { running, busy }
    }
}

fn is_terminating(pod: &CachedPod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

fn is_finished(pod: &CachedPod) -> bool {
    matches!(pod.phase(), Some("Succeeded" | "Failed"))
}

fn is_running(pod: &CachedPod) -> bool {
    pod.phase() == Some("Running")
}

fn controller(
    pod: &CachedPod,
) -> Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference> {
    pod.owner_references()
        .iter()
        .find(|o| o.controller == Some(true))
}

fn age(pod: &CachedPod, now: Timestamp) -> Duration {
    pod.metadata
        .creation_timestamp
        .as_ref()
        .map(|t| Duration::from_secs(u64::try_from(now.as_second() - t.0.as_second()).unwrap_or(0)))
        .unwrap_or_default()
}

/// What judging one pod reads.
struct Scene<'a, C: Catalog> {
    policy: &'a ResidencyPolicy,
    enclave: &'a ResolvedEnclave,
    catalog: &'a C,
    memory: &'a Memory,
    nodes: &'a BTreeMap<String, Arc<Node>>,
    enclave_nodes: &'a [Arc<Node>],
    /// Other enforcing policies whose enclave shares no node with this one.
    disjoint: &'a [(Arc<ResidencyPolicy>, String)],
    /// ReplicaSets and StatefulSets by UID: what a replacement would ask for.
    owners: &'a HashMap<String, Arc<ReplicaOwner>>,
    /// Owners with replicas on their way (see [`OwnerReplicas`]).
    busy_owners: &'a HashSet<String>,
    /// The earliest end of a PDB refusal's backoff seen while judging.
    retry_in: std::cell::Cell<Option<Duration>>,
    namespaces: &'a BTreeMap<String, BTreeMap<String, String>>,
}

impl<C: Catalog> Scene<'_, C> {
    /// The first PVC of the pod whose volume lives outside the enclave: a storage class
    /// that is not the enclave's, or node affinity no enclave node satisfies.
    fn volume_outside(&self, pod: &CachedPod, namespace: &str) -> Option<String> {
        let classes = &self.enclave.enclave.spec.storage.storage_class_names;
        let storage = Storage {
            classes,
            default_class: None,
            enclave_nodes: self.enclave_nodes,
        };
        for claim_name in &pod.spec.claims {
            let Some(claim) = self.catalog.claim(namespace, claim_name) else {
                continue;
            };
            let Some(volume_name) = claim.spec.as_ref().and_then(|s| s.volume_name.as_ref()) else {
                continue;
            };
            let Some(volume) = self.catalog.volume(volume_name) else {
                continue;
            };
            match storage.volume_outside_reason(&volume) {
                Some(VolumeOutside::Class(class)) => {
                    return Some(format!(
                        "PVC {claim_name} is bound to PersistentVolume {volume_name} of storage class {class:?}, not one of the enclave's ({})",
                        classes.join(", ")
                    ));
                }
                Some(VolumeOutside::Unreachable) => {
                    return Some(format!(
                        "PVC {claim_name} is bound to PersistentVolume {volume_name}, which only nodes outside the enclave can reach"
                    ));
                }
                None => {}
            }
        }
        None
    }

    /// Why admission would refuse the pod's replacement, if it would: what its owner's
    /// template asks for (or, without a known template, the pod's own constraints other
    /// than a node name the scheduler may have set) can never be placed in the enclave.
    /// Evicting such a pod would only take the workload down.
    fn replacement_refused(&self, pod: &CachedPod) -> Option<String> {
        let is_enclave_node = |node: &str| {
            self.nodes
                .get(node)
                .is_some_and(|n| self.enclave.contains_node(n.labels()))
        };
        let (spec, from) = match controller(pod).and_then(|o| self.owners.get(&o.uid)) {
            Some(owner) => (
                owner.template_placement.placement_spec(),
                format!(
                    "{} {}",
                    owner.kind,
                    owner.metadata.name.clone().unwrap_or_default()
                ),
            ),
            None => {
                let mut spec = pod.placement_spec();
                spec.node_name = None;
                (spec, "the pod's own node constraints".to_string())
            }
        };
        if let Some(node) = spec.node_name.as_deref()
            && !is_enclave_node(node)
        {
            return Some(format!(
                "{from} pins it to node {node}, outside the enclave (spec.nodeName)"
            ));
        }
        (spec.node_name.is_none()
            && !placement::satisfiable_in_enclave(
                &spec,
                &self.enclave.site_terms,
                &is_enclave_node,
            ))
        .then(|| format!("{from} asks for nodes no node of the enclave can satisfy"))
    }

    /// Enforcing policies that also cover the pod while sharing no node with ours.
    fn conflicting(&self, pod: &CachedPod, namespace: &str) -> Vec<String> {
        let Some(labels) = self.namespaces.get(namespace) else {
            return Vec::new();
        };
        self.disjoint
            .iter()
            .filter(|(other, _)| scope::covers(other, namespace, labels, pod.labels()))
            .map(|(other, _)| other.name_any())
            .collect()
    }

    fn judge(&self, pod: &CachedPod, namespace: &str, now: Timestamp) -> Judgement {
        let enclave = self.enclave;
        let enforced = self.policy.spec.enforcement == Enforcement::Enforce;
        let node = pod.node_name();
        let inside = match node {
            Some(node) => self
                .nodes
                .get(node)
                .is_some_and(|n| enclave.contains_node(n.labels())),
            // Not scheduled yet: compliant if its constraints hold it inside.
            None => placement::implies_enclave(&pod.placement_spec(), &enclave.site_terms),
        };
        if inside {
            if node.is_none() && !is_terminating(pod) {
                let spec = pod.placement_spec();
                let fits = self
                    .enclave_nodes
                    .iter()
                    .any(|n| placement::pod_fits_node(&spec, &n.name_any(), n.labels()));
                if !fits {
                    return Judgement::Reported {
                        reason: "NoEnclaveNodeFits",
                        message: format!(
                            "pod is pending: its node constraints keep it inside DataEnclave {}, but no node of the enclave satisfies them",
                            enclave.name()
                        ),
                    };
                }
            }
            return Judgement::Compliant;
        }
        let where_ = match node {
            Some(node) => format!(
                "runs on node {node}, outside DataEnclave {}",
                enclave.name()
            ),
            None => format!(
                "is pending without node affinity that keeps it inside DataEnclave {}",
                enclave.name()
            ),
        };
        // Evicted a moment ago, the watch not showing it terminating yet: on its way all
        // the same (a second eviction would be accepted, and logged twice).
        if is_terminating(pod) || self.memory.evicted_lately(pod) {
            return Judgement::Migrating;
        }
        if node.is_none() {
            // Admission constrains new pods; one without constraints predates the policy
            // and will be scheduled anywhere. Nothing to evict yet: report it.
            return Judgement::Reported {
                reason: "UnconstrainedPending",
                message: format!("pod {where_}"),
            };
        }
        let conflicts = self.conflicting(pod, namespace);
        if enforced && !conflicts.is_empty() {
            return Judgement::Blocked {
                reason: "ConflictingPolicies",
                message: format!(
                    "pod {where_}; not evicted because policy {} also holds it and no node is in both enclaves: its replacement could run nowhere",
                    conflicts.join(", policy ")
                ),
            };
        }
        if let Some(why) = self.volume_outside(pod, namespace) {
            return Judgement::Blocked {
                reason: "VolumeOutsideEnclave",
                message: format!("pod {where_}; not evicted because {why}: migrate the data first"),
            };
        }
        let migration = &self.policy.spec.migration;
        match controller(pod).map(|o| o.kind.as_str()) {
            Some("DaemonSet") => {
                return Judgement::Blocked {
                    reason: "DaemonSetPod",
                    message: format!(
                        "pod {where_}; its DaemonSet recreates it on the same node: update the DaemonSet so that admission constrains its template"
                    ),
                };
            }
            Some("Node") => {
                return Judgement::Blocked {
                    reason: "StaticPod",
                    message: format!(
                        "pod {where_}; it is a static pod of that node's kubelet: move its manifest off the node"
                    ),
                };
            }
            None if !migration.evict_unmanaged_pods => {
                return Judgement::Blocked {
                    reason: "Unmanaged",
                    message: format!(
                        "pod {where_}; no controller would recreate it, so it is not evicted (set migration.evictUnmanagedPods to allow)"
                    ),
                };
            }
            _ => {}
        }
        if !enforced {
            return Judgement::Reported {
                reason: "OutsideEnclave",
                message: format!("pod {where_}; Audit mode: would be evicted"),
            };
        }
        if !migration.enabled {
            return Judgement::Reported {
                reason: "OutsideEnclave",
                message: format!("pod {where_}; migration is disabled"),
            };
        }
        if let Some(why) = self.replacement_refused(pod) {
            return Judgement::Blocked {
                reason: "ReplacementWouldBeRefused",
                message: format!(
                    "pod {where_}; not evicted because its replacement would be refused: {why}; fix the workload's template"
                ),
            };
        }
        if let Some(owner) = controller(pod)
            && let Some(eviction) = self.memory.owner_eviction(&owner.uid)
            && eviction.replaced_by(pod)
        {
            return Judgement::Blocked {
                reason: "ReplacementOutsideEnclave",
                message: format!(
                    "pod {where_}; it replaced a pod of {} {} evicted from node {} at {}, and landed outside again: its template pins it there (spec.nodeName?) or admission did not constrain it, so evicting it again would only loop",
                    owner.kind, owner.name, eviction.node, eviction.at
                ),
            };
        }
        if let Some(uid) = pod.uid()
            && let Some(refusal) = self.memory.refusal(&uid)
            // Refused while its owner's replicas were on their way, and they are back:
            // the budget is free again, no reason to wait out the backoff.
            && !(refusal.owner_busy
                && controller(pod).is_some_and(|o| !self.busy_owners.contains(&o.uid)))
        {
            let wait = refusal
                .until
                .saturating_duration_since(std::time::Instant::now());
            self.retry_in.set(Some(
                self.retry_in.get().map_or(wait, |w: Duration| w.min(wait)),
            ));
            return Judgement::Blocked {
                reason: "DisruptionBudget",
                message: format!(
                    "pod {where_}; its eviction was refused {} time(s) by a PodDisruptionBudget ({}); retried later",
                    refusal.count, refusal.message
                ),
            };
        }
        let _ = now;
        Judgement::ToEvict
    }
}

/// Other enforcing policies whose enclave has no node in common with `enclave`.
fn disjoint_policies<C: Catalog>(
    catalog: &C,
    policy: &ResidencyPolicy,
    enclave: &ResolvedEnclave,
    nodes: &[Arc<Node>],
) -> Vec<(Arc<ResidencyPolicy>, String)> {
    catalog
        .policies()
        .into_iter()
        .filter(|other| {
            other.name_any() != policy.name_any() && other.spec.enforcement == Enforcement::Enforce
        })
        .filter_map(|other| {
            let theirs = scope::resolve_enclave(catalog, &other).ok()?;
            let shared = nodes
                .iter()
                .any(|n| enclave.contains_node(n.labels()) && theirs.contains_node(n.labels()));
            (!shared).then(|| (other, theirs.name()))
        })
        .collect()
}

/// Do two policies cover a namespace in common (and, with pod selectors, a pod)?
fn share_scope(
    a: &ResidencyPolicy,
    b: &ResidencyPolicy,
    namespaces: &BTreeMap<String, BTreeMap<String, String>>,
    pods: &[Arc<CachedPod>],
) -> bool {
    namespaces.iter().any(|(name, labels)| {
        let both = |pod_labels: &BTreeMap<String, String>| {
            scope::covers(a, name, labels, pod_labels) && scope::covers(b, name, labels, pod_labels)
        };
        if a.spec.match_.pod_selector.is_none() && b.spec.match_.pod_selector.is_none() {
            both(&BTreeMap::new())
        } else {
            pods.iter()
                .filter(|p| p.namespace().as_deref() == Some(name.as_str()))
                .any(|p| both(p.labels()))
        }
    })
}

/// Judges every pod in the policy's scope. Pure: reads the catalog and the memory.
pub fn assess<C: Catalog>(
    policy: &ResidencyPolicy,
    enclave: &ResolvedEnclave,
    catalog: &C,
    memory: &Memory,
    now: Timestamp,
) -> Assessment {
    let all_nodes = catalog.nodes();
    let nodes: BTreeMap<String, Arc<Node>> = all_nodes
        .iter()
        .map(|n| (n.name_any(), n.clone()))
        .collect();
    let enclave_nodes: Vec<Arc<Node>> = all_nodes
        .iter()
        .filter(|n| enclave.contains_node(n.labels()))
        .cloned()
        .collect();
    let namespaces = catalog.namespaces();
    let (pods, awaiting) = catalog.pods_and_awaiting_detail();
    let enforced = policy.spec.enforcement == Enforcement::Enforce;
    let disjoint = if enforced {
        disjoint_policies(catalog, policy, enclave, &all_nodes)
    } else {
        Vec::new()
    };
    let owners: HashMap<String, Arc<ReplicaOwner>> = catalog
        .replica_owners()
        .into_iter()
        .filter_map(|o| Some((o.metadata.uid.clone()?, o)))
        .collect();
    let replicas = OwnerReplicas::count(&pods, &owners, now);
    let scene = Scene {
        busy_owners: &replicas.busy,
        policy,
        enclave,
        catalog,
        memory,
        nodes: &nodes,
        enclave_nodes: &enclave_nodes,
        disjoint: &disjoint,
        owners: &owners,
        namespaces: &namespaces,
        retry_in: std::cell::Cell::new(None),
    };
    let mut assessment = Assessment {
        conflicts: disjoint
            .iter()
            .filter(|(other, _)| share_scope(policy, other, &namespaces, &pods))
            .map(|(other, _)| other.name_any())
            .collect(),
        ..Assessment::default()
    };

    let mut to_evict: BTreeMap<String, Vec<Arc<CachedPod>>> = BTreeMap::new();
    for pod in &pods {
        let namespace = pod.namespace().unwrap_or_default();
        let Some(namespace_labels) = namespaces.get(&namespace) else {
            continue;
        };
        if is_finished(pod) || !scope::covers(policy, &namespace, namespace_labels, pod.labels()) {
            continue;
        }
        assessment.matched += 1;
        let judgement = scene.judge(pod, &namespace, now);
        // Pods of ReplicaSets and StatefulSets are counted through their owner below.
        let counted_by_owner = controller(pod)
            .is_some_and(|o| matches!(o.kind.as_str(), "ReplicaSet" | "StatefulSet"));
        let on_the_way = is_terminating(pod) || (!is_running(pod) && age(pod, now) < STUCK);
        if !counted_by_owner
            && on_the_way
            && matches!(judgement, Judgement::Compliant | Judgement::Migrating)
        {
            assessment.in_flight += 1;
        }
        let violation = |reason: &str, message: String| Violation {
            kind: "Pod".into(),
            namespace: Some(namespace.clone()),
            name: pod.name_any(),
            reason: reason.into(),
            message,
        };
        match judgement {
            Judgement::Compliant => assessment.compliant += 1,
            Judgement::Migrating => {
                assessment.non_compliant += 1;
                assessment.migrating += 1;
            }
            Judgement::ToEvict => {
                assessment.non_compliant += 1;
                assessment.violations.push(violation(
                    "OutsideEnclave",
                    format!(
                        "pod runs on node {}, outside DataEnclave {}; it will be evicted so that its owner recreates it inside",
                        pod.node_name().unwrap_or_default(),
                        enclave.name()
                    ),
                ));
                to_evict
                    .entry(namespace.clone())
                    .or_default()
                    .push(pod.clone());
            }
            Judgement::Blocked { reason, message } => {
                assessment.non_compliant += 1;
                assessment.blocked += 1;
                assessment
                    .violations
                    .push(violation(reason, message.clone()));
                assessment.blocked_pods.push(BlockedPod {
                    pod: pod.clone(),
                    reason,
                    message,
                });
            }
            Judgement::Reported { reason, message } => {
                assessment.non_compliant += 1;
                assessment.violations.push(violation(reason, message));
            }
        }
    }

    // Pods of a namespace newly in scope that its list in full has not reached yet:
    // counted at once (a 10,000-pod namespace takes seconds to list), judged, and
    // evicted, only once read in full. Their owners' replicas count as missing, and so
    // in flight, until then: nothing of the namespace moves on a partial view.
    for pod in awaiting {
        let Some(namespace_labels) = namespaces.get(&pod.namespace) else {
            continue;
        };
        if !scope::covers(policy, &pod.namespace, namespace_labels, &pod.labels) {
            continue;
        }
        assessment.matched += 1;
        let node = pod.node.as_deref().map(|name| nodes.get(name));
        match node {
            Some(Some(node)) if enclave.contains_node(node.labels()) => assessment.compliant += 1,
            Some(_) => {
                assessment.awaiting_detail += 1;
                assessment.non_compliant += 1;
            }
            None => assessment.awaiting_detail += 1,
        }
    }

    // Owners' replicas on their way: evicted and not recreated yet, or recreated and
    // not running yet. After a restart nothing else remembers an eviction whose pod is
    // already gone. Owners that cannot create pods are stuck, not on their way.
    for owner in owners.values() {
        let namespace = owner.metadata.namespace.clone().unwrap_or_default();
        let Some(labels) = namespaces.get(&namespace) else {
            continue;
        };
        if owner.failing || !scope::covers(policy, &namespace, labels, &owner.template_labels) {
            continue;
        }
        let uid = owner.metadata.uid.as_deref().unwrap_or_default();
        let (running, stuck) = replicas.running.get(uid).copied().unwrap_or_default();
        let missing = owner.desired - running - stuck;
        assessment.in_flight += usize::try_from(missing).unwrap_or(0);
    }

    assessment.retry_in = scene.retry_in.get();
    assessment.busy_owners = replicas.busy;
    assessment
        .violations
        .sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    // Namespaces take turns, each in name order.
    let mut queues: Vec<std::collections::VecDeque<Arc<CachedPod>>> = to_evict
        .into_values()
        .map(|mut pods| {
            pods.sort_by_key(|p| p.name_any());
            pods.into()
        })
        .collect();
    while queues.iter().any(|q| !q.is_empty()) {
        for queue in &mut queues {
            if let Some(pod) = queue.pop_front() {
                assessment.to_evict.push(pod);
            }
        }
    }
    assessment
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::residency::memory::KnownPods;
    use crate::{cache::AwaitingDetail, catalog::StaticCatalog};

    fn world(extra: &str) -> StaticCatalog {
        let base = include_str!("testdata/world.yaml");
        StaticCatalog::from_yaml(&format!("{base}{extra}")).expect("fixture parses")
    }

    fn run(catalog: &StaticCatalog, memory: &Memory) -> Assessment {
        let policy = catalog.policies()[0].clone();
        let enclave = scope::resolve_enclave(catalog, &policy).expect("enclave");
        assess(
            &policy,
            &enclave,
            catalog,
            memory,
            Timestamp::from_second(1_800_000_100).expect("ts"),
        )
    }

    fn reasons(assessment: &Assessment) -> Vec<(String, String)> {
        assessment
            .violations
            .iter()
            .map(|v| (v.name.clone(), v.reason.clone()))
            .collect()
    }

    #[test]
    fn pods_outside_are_evicted_and_those_that_cannot_move_are_reported() {
        let catalog = world("");
        let assessment = run(&catalog, &Memory::default());
        assert_eq!(assessment.matched, 6);
        assert_eq!(assessment.compliant, 1);
        let evict: Vec<String> = assessment.to_evict.iter().map(|p| p.name_any()).collect();
        assert_eq!(evict, ["api-1", "web-1", "web-2"], "namespaces take turns");
        assert_eq!(
            reasons(&assessment),
            [
                ("api-1".to_string(), "OutsideEnclave".to_string()),
                ("bare".to_string(), "Unmanaged".to_string()),
                ("web-1".to_string(), "OutsideEnclave".to_string()),
                ("web-2".to_string(), "OutsideEnclave".to_string()),
                (
                    "with-volume".to_string(),
                    "VolumeOutsideEnclave".to_string()
                ),
            ]
        );
        assert_eq!(assessment.blocked, 2);
    }

    #[test]
    fn a_refused_or_looping_pod_is_blocked_and_the_others_keep_moving() {
        let catalog = world("");
        let memory = Memory::default();
        memory.refused(
            "uid-web-1",
            "Cannot evict pod as it would violate the pod's disruption budget".into(),
            false,
        );
        let web2 = catalog
            .pods
            .iter()
            .find(|p| p.name_any() == "web-2")
            .expect("pod")
            .clone();
        // An eviction from web-2's owner, after which a replacement (api-1 stands in: same
        // owner) landed outside again.
        let mut evicted = (*web2).clone();
        evicted.metadata.uid = Some("uid-old".into());
        memory.evicted("p", &evicted, KnownPods::default);
        let assessment = run(&catalog, &memory);
        let evict: Vec<String> = assessment.to_evict.iter().map(|p| p.name_any()).collect();
        assert_eq!(evict, ["api-1"], "{:?}", reasons(&assessment));
        let reasons = reasons(&assessment);
        assert!(reasons.contains(&("web-1".to_string(), "DisruptionBudget".to_string())));
        assert!(reasons.contains(&("web-2".to_string(), "ReplacementOutsideEnclave".to_string())));
    }

    #[test]
    fn siblings_created_the_second_of_an_eviction_are_evicted_not_taken_for_replacements() {
        // web-1 and web-2 of one ReplicaSet, both created the very second web-1 is
        // evicted (a rollout completed as its namespace came into scope): web-2 is an
        // original the operator had seen, and goes the same way.
        let now = Timestamp::now();
        let mut catalog = world("");
        for pod in &mut catalog.pods {
            if matches!(pod.name_any().as_str(), "web-1" | "web-2") {
                let mut pod2 = (**pod).clone();
                pod2.metadata.creation_timestamp =
                    Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now));
                *pod = Arc::new(pod2);
            }
        }
        let web1 = catalog
            .pods
            .iter()
            .find(|p| p.name_any() == "web-1")
            .expect("pod")
            .clone();
        let memory = Memory::default();
        memory.evicted("p", &web1, || KnownPods::of("shop", &catalog.pods, &[]));
        let assessment = run(&catalog, &memory);
        let reasons = reasons(&assessment);
        assert!(
            reasons.contains(&("web-2".to_string(), "OutsideEnclave".to_string())),
            "{reasons:?}"
        );
        let evict: Vec<String> = assessment.to_evict.iter().map(|p| p.name_any()).collect();
        assert!(evict.contains(&"web-2".to_string()), "{evict:?}");
    }

    #[test]
    fn pods_of_a_namespace_being_listed_are_counted_at_once_and_judged_later() {
        let mut catalog = world("");
        let before = run(&catalog, &Memory::default());
        let awaiting = |namespace: &str, app: &str, node: Option<&str>| AwaitingDetail {
            namespace: namespace.into(),
            name: format!("{app}-{}", node.unwrap_or("pending")),
            labels: Arc::new([("app".to_string(), app.to_string())].into()),
            node: node.map(Arc::from),
        };
        catalog.awaiting_detail = vec![
            awaiting("shop", "web", Some("virginia-a")),
            awaiting("shop", "web", Some("virginia-a")),
            awaiting("api", "api", Some("dublin-a")),
            awaiting("api", "api", None),
            awaiting("public", "web", Some("virginia-a")),
        ];
        let after = run(&catalog, &Memory::default());
        assert_eq!(
            after.matched,
            before.matched + 4,
            "out of scope: not counted"
        );
        assert_eq!(after.compliant, before.compliant + 1, "running inside");
        assert_eq!(
            after.non_compliant,
            before.non_compliant + 2,
            "running outside"
        );
        assert_eq!(after.awaiting_detail, 3, "outside or pending");
        assert_eq!(
            after.to_evict.len(),
            before.to_evict.len(),
            "nothing evicted before it is read in full"
        );
        assert_eq!(after.violations.len(), before.violations.len());

        // Only pods awaiting their detail, none outside yet: not Compliant either.
        let inside_only = StaticCatalog {
            pods: catalog
                .pods
                .iter()
                .filter(|p| p.node_name() == Some("dublin-a"))
                .cloned()
                .collect(),
            awaiting_detail: vec![awaiting("api", "api", None)],
            ..catalog.clone()
        };
        let assessment = run(&inside_only, &Memory::default());
        assert_eq!(
            (assessment.non_compliant, assessment.awaiting_detail),
            (0, 1)
        );
        let policy = inside_only.policies()[0].clone();
        let enclave = scope::resolve_enclave(&inside_only, &policy).expect("enclave");
        let found = super::super::status::Found {
            enclave: Ok(&enclave),
            admission: &super::super::status::AdmissionReadiness::InPlace { engine: "native" },
            assessment: Some(&assessment),
            volumes: None,
            network: None,
            checkpoints: None,
        };
        let status = super::super::status::build(&policy, &found, &crate::conditions::now());
        let compliant = status
            .conditions
            .iter()
            .find(|c| c.type_ == "Compliant")
            .expect("Compliant");
        assert_eq!(
            (compliant.status.as_str(), compliant.reason.as_str()),
            ("False", "Assessing"),
            "{}",
            compliant.message
        );
        assert!(
            compliant.message.contains("1 not read in full yet"),
            "{}",
            compliant.message
        );
    }

    #[test]
    fn a_pod_evicted_a_moment_ago_is_migrating_not_evicted_again() {
        let catalog = world("");
        let memory = Memory::default();
        let api1 = catalog
            .pods
            .iter()
            .find(|p| p.name_any() == "api-1")
            .expect("pod")
            .clone();
        let before = run(&catalog, &memory);
        memory.evicted("p", &api1, KnownPods::default);
        let after = run(&catalog, &memory);
        let evict: Vec<String> = after.to_evict.iter().map(|p| p.name_any()).collect();
        assert!(!evict.contains(&"api-1".to_string()), "{evict:?}");
        assert_eq!(
            evict.len(),
            before.to_evict.len() - 1,
            "{:?}",
            reasons(&after)
        );
        assert_eq!(after.migrating, before.migrating + 1);
        assert!(
            !reasons(&after).contains(&("api-1".to_string(), "OutsideEnclave".to_string())),
            "no longer reported as to be evicted"
        );
    }

    /// web-1 and web-2's ReplicaSet, wanting the two it has.
    const WEB_RS_OF_TWO: &str = "
owners:
- kind: ReplicaSet
  metadata: {name: web-rs, namespace: shop, uid: rs-web}
  desired: 2
  templateLabels: {app: web}
";

    #[test]
    fn a_pod_refused_while_its_owner_was_busy_goes_as_soon_as_the_owner_is_back() {
        let owners = WEB_RS_OF_TWO;
        let message = "Cannot evict pod as it would violate the pod's disruption budget";
        // Both replicas of web-rs run and are ready: the owner is at rest.
        let catalog = world(owners);
        let memory = Memory::default();
        memory.refused("uid-web-1", message.into(), true);
        memory.refused("uid-web-2", message.into(), false);
        let assessment = run(&catalog, &memory);
        assert!(
            assessment.busy_owners.is_empty(),
            "{:?}",
            assessment.busy_owners
        );
        let evict: Vec<String> = assessment.to_evict.iter().map(|p| p.name_any()).collect();
        assert!(
            evict.contains(&"web-1".to_string()),
            "refused while busy: {evict:?}"
        );
        assert!(
            reasons(&assessment).contains(&("web-2".to_string(), "DisruptionBudget".to_string())),
            "refused at rest, it waits out its backoff"
        );

        // A third replica wanted and not there yet: the owner is busy, web-1 waits.
        let catalog = world(&owners.replace("desired: 2", "desired: 3"));
        let assessment = run(&catalog, &memory);
        assert!(assessment.busy_owners.contains("rs-web"));
        assert!(
            reasons(&assessment).contains(&("web-1".to_string(), "DisruptionBudget".to_string()))
        );
    }

    #[test]
    fn a_replica_that_runs_but_is_not_ready_keeps_its_owner_busy() {
        let owners = WEB_RS_OF_TWO;
        let yaml = format!("{}{owners}", include_str!("testdata/world.yaml")).replacen(
            "  spec: {nodeName: virginia-a}\n  status: {phase: Running}",
            "  spec: {nodeName: virginia-a}\n  status: {phase: Running, conditions: [{type: Ready, status: 'False'}]}",
            1,
        );
        let catalog = StaticCatalog::from_yaml(&yaml).expect("fixture");
        assert!(
            catalog.pods.iter().any(|p| !p.is_ready()),
            "the fixture has a pod that is not ready"
        );
        let assessment = run(&catalog, &Memory::default());
        assert!(assessment.busy_owners.contains("rs-web"));
    }

    #[test]
    fn missing_replicas_count_as_in_flight_unless_their_owner_cannot_create_them() {
        let owners = "
owners:
- kind: ReplicaSet
  metadata: {name: web-rs, namespace: shop, uid: rs-web}
  desired: 5
  templateLabels: {app: web}
- kind: ReplicaSet
  metadata: {name: stuck-rs, namespace: shop, uid: rs-stuck}
  desired: 3
  templateLabels: {app: stuck}
  failing: true
";
        let assessment = run(&world(owners), &Memory::default());
        // web-rs wants 5 and runs 2 (web-1, web-2): 3 on their way.
        assert_eq!(assessment.in_flight, 3);
    }

    #[test]
    fn a_pod_whose_replacement_would_be_refused_is_not_evicted() {
        let owners = "
owners:
- kind: ReplicaSet
  metadata: {name: web-rs, namespace: shop, uid: rs-web}
  desired: 2
  templateLabels: {app: web}
  templatePlacement: {nodeName: virginia-a}
";
        let assessment = run(&world(owners), &Memory::default());
        let reasons = reasons(&assessment);
        assert!(
            reasons.contains(&("web-1".to_string(), "ReplacementWouldBeRefused".to_string())),
            "{reasons:?}"
        );
        assert!(
            !assessment
                .to_evict
                .iter()
                .any(|p| p.name_any().starts_with("web"))
        );
        // api-1 has no known owner and no constraints: it moves.
        assert!(assessment.to_evict.iter().any(|p| p.name_any() == "api-1"));
    }

    #[test]
    fn disjoint_enforcing_policies_conflict_and_block_eviction() {
        let us = "
enclaves:
- apiVersion: enclave.dev/v1alpha1
  kind: DataEnclave
  metadata: {name: us}
  spec:
    jurisdiction: US
    sites: [{name: virginia, nodeSelector: {matchLabels: {node-restriction.kubernetes.io/enclave-site: virginia}}}]
";
        let mut catalog = world(us);
        let mut other = (*catalog.policies[0]).clone();
        other.metadata.name = Some("q-us".into());
        other.spec.enclave = "us".into();
        catalog.policies.push(Arc::new(other));
        let assessment = run(&catalog, &Memory::default());
        assert_eq!(assessment.conflicts.iter().collect::<Vec<_>>(), ["q-us"]);
        assert!(
            assessment.to_evict.is_empty(),
            "no eviction while the combined enclave is empty"
        );
        assert!(
            reasons(&assessment)
                .iter()
                .any(|(_, r)| r == "ConflictingPolicies")
        );
    }

    #[test]
    fn a_pending_pod_no_enclave_node_fits_is_reported() {
        let pending = "
- metadata: {name: nowhere, namespace: shop, uid: uid-nowhere, creationTimestamp: '2027-01-15T08:00:00Z', ownerReferences: [{apiVersion: apps/v1, kind: ReplicaSet, name: x, uid: rs-x, controller: true}]}
  spec:
    affinity: {nodeAffinity: {requiredDuringSchedulingIgnoredDuringExecution: {nodeSelectorTerms: [{matchExpressions: [{key: node-restriction.kubernetes.io/enclave-site, operator: In, values: [dublin]}, {key: topology.kubernetes.io/zone, operator: In, values: [eu-west-1z]}]}]}}}
  status: {phase: Pending}
";
        let yaml = include_str!("testdata/world.yaml").replace(
            "pods:\n",
            &format!("pods:\n{}", pending.trim_start_matches('\n')),
        );
        let catalog = StaticCatalog::from_yaml(&yaml).expect("fixture");
        let assessment = run(&catalog, &Memory::default());
        assert!(
            reasons(&assessment)
                .contains(&("nowhere".to_string(), "NoEnclaveNodeFits".to_string()))
        );
    }
}
