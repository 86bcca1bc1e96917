//! What the residency controller remembers between passes, in memory: the evictions of
//! the last minute (for the rate), evictions the watch has not shown yet (so that a pass
//! right after an eviction cannot exceed `maxConcurrent`, nor evict the same pod again),
//! evictions per owner (so that a replacement that lands outside again is reported, not
//! evicted in a loop), and refusals by PodDisruptionBudgets (so that a pod a PDB holds
//! is retried later while
//! the others keep moving: as soon as its owner's replicas are back when the refusal
//! was the budget spent on them, with backoff when the PDB refused an owner at rest).
//!
//! Losing it in a restart is safe: the budget also counts what the cluster shows (pods
//! on their way and owners' missing replicas), a refused pod is tried once more, and a
//! loop costs one more eviction per owner before it is seen again.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use jiff::Timestamp;
use kube::ResourceExt;

use crate::cache::{AwaitingDetail, CachedPod};

const RATE_WINDOW: Duration = Duration::from_secs(60);
/// A watch that has not delivered an eviction's effect by then never will.
const UNSEEN_HORIZON: Duration = Duration::from_secs(60);
/// How long an owner's replacements are watched for landing outside again.
pub const LOOP_WINDOW: Duration = Duration::from_secs(600);
/// Backoff after a PDB refused an eviction: doubles from this, while the owner was at
/// rest when it refused (the PDB is held by something else: `maxUnavailable: 0`, pods
/// that are not healthy)…
const REFUSAL_BACKOFF: Duration = Duration::from_secs(5);
/// …up to this.
const REFUSAL_BACKOFF_MAX: Duration = Duration::from_secs(60);

/// One eviction, until the cache shows its effect.
struct Unseen {
    pod_uid: String,
    when: Instant,
}

/// A PDB refused to let a pod go.
#[derive(Clone, Debug)]
pub struct Refusal {
    pub until: Instant,
    pub count: u32,
    /// How many of those refused an owner at rest: what the backoff grows with.
    at_rest: u32,
    pub message: String,
    /// The owner had replicas on their way when the PDB refused: the budget was spent
    /// on them, and the pod may go as soon as they are back (no need to wait `until`).
    pub owner_busy: bool,
}

/// The evictions from one owner within [`LOOP_WINDOW`]: the last one, and what the
/// operator knew of the owner's pods when the first one opened the window.
#[derive(Clone, Debug)]
pub struct OwnerEviction {
    pub at: Timestamp,
    pub node: String,
    when: Instant,
    /// When the window opened (the first eviction of it).
    first_at: Timestamp,
    /// The pods the operator had seen when the window opened: none of them can be a
    /// replacement, whatever its creation timestamp says (it has one-second precision,
    /// and a rollout that completes the second its namespace comes into scope shares
    /// that second with the first evictions).
    known: Arc<KnownPods>,
    /// Names of the owner's pods evicted in the window: a StatefulSet's replacement
    /// takes its predecessor's name, so a known name proves nothing for these.
    evicted_names: Vec<String>,
}

/// The pods of one owner's namespace that the operator had seen at a moment: UIDs of
/// the pods it held in full, names of those still awaiting their detail (a summary has
/// no UID).
#[derive(Debug, Default)]
pub struct KnownPods {
    uids: std::collections::HashSet<String>,
    awaiting_names: std::collections::HashSet<String>,
}

impl KnownPods {
    /// What the cache holds of `namespace` now.
    pub fn of(namespace: &str, pods: &[Arc<CachedPod>], awaiting: &[AwaitingDetail]) -> Self {
        Self {
            uids: pods
                .iter()
                .filter(|p| p.metadata.namespace.as_deref() == Some(namespace))
                .filter_map(|p| p.uid())
                .collect(),
            awaiting_names: awaiting
                .iter()
                .filter(|a| a.namespace == namespace)
                .map(|a| a.name.clone())
                .collect(),
        }
    }
}

impl OwnerEviction {
    /// Whether `pod`, of this owner, replaced one of the window's evictions: it was
    /// first seen after the window opened. A pod created in an earlier second predates
    /// every eviction of the window even if the watch showed it late.
    pub fn replaced_by(&self, pod: &CachedPod) -> bool {
        let name = pod.name_any();
        let seen_before = pod.uid().is_some_and(|uid| self.known.uids.contains(&uid))
            || (self.known.awaiting_names.contains(&name) && !self.evicted_names.contains(&name));
        let created_before = pod
            .metadata
            .creation_timestamp
            .as_ref()
            .is_some_and(|t| t.0.as_second() < self.first_at.as_second());
        !seen_before && !created_before
    }
}

#[derive(Default)]
struct PolicyMemory {
    recent: VecDeque<Instant>,
    unseen: Vec<Unseen>,
}

/// The controller's memory, shared by every pass.
#[derive(Default)]
pub struct Memory {
    policies: Mutex<HashMap<String, PolicyMemory>>,
    refusals: Mutex<HashMap<String, Refusal>>,
    owners: Mutex<HashMap<String, OwnerEviction>>,
    /// Pods evicted in the last [`UNSEEN_HORIZON`], by UID: a pass that runs before the
    /// watch shows one terminating must not evict it again (a second eviction of a pod
    /// already going is accepted by the API server, and would be a second `PodEvicted`
    /// in the evidence).
    evicted_pods: Mutex<HashMap<String, Instant>>,
    /// What was last recorded as blocked, per policy and pod UID: records on change only.
    blocked: Mutex<HashMap<String, HashMap<String, &'static str>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn controller_uid(pod: &CachedPod) -> Option<String> {
    pod.owner_references()
        .iter()
        .find(|o| o.controller == Some(true))
        .map(|o| o.uid.clone())
}

impl Memory {
    /// How many evictions the rate allows now, and when the next one will be allowed.
    pub fn rate_budget(&self, policy: &str, per_minute: usize) -> (usize, Duration) {
        let mut policies = lock(&self.policies);
        let log = &mut policies.entry(policy.to_string()).or_default().recent;
        while log.front().is_some_and(|t| t.elapsed() >= RATE_WINDOW) {
            log.pop_front();
        }
        let next = log
            .front()
            .map(|t| RATE_WINDOW.saturating_sub(t.elapsed()))
            .unwrap_or_default();
        (per_minute.saturating_sub(log.len()), next)
    }

    /// Records an eviction of `policy`. `known` says which pods the operator had seen
    /// when it evicted (asked only when the eviction opens its owner's loop window).
    pub fn evicted(&self, policy: &str, pod: &CachedPod, known: impl FnOnce() -> KnownPods) {
        let owner_uid = controller_uid(pod);
        let now = Timestamp::now();
        {
            let mut policies = lock(&self.policies);
            let memory = policies.entry(policy.to_string()).or_default();
            memory.recent.push_back(Instant::now());
            memory.unseen.push(Unseen {
                pod_uid: pod.uid().unwrap_or_default(),
                when: Instant::now(),
            });
        }
        if let Some(owner) = owner_uid {
            let mut owners = lock(&self.owners);
            owners.retain(|_, e| e.when.elapsed() < LOOP_WINDOW);
            let node = pod.node_name().unwrap_or_default().to_string();
            match owners.get_mut(&owner) {
                Some(window) => {
                    window.at = now;
                    window.node = node;
                    window.when = Instant::now();
                    window.evicted_names.push(pod.name_any());
                }
                None => {
                    owners.insert(
                        owner,
                        OwnerEviction {
                            at: now,
                            node,
                            when: Instant::now(),
                            first_at: now,
                            known: Arc::new(known()),
                            evicted_names: vec![pod.name_any()],
                        },
                    );
                }
            }
        }
        if let Some(uid) = pod.uid() {
            lock(&self.refusals).remove(&uid);
            lock(&self.evicted_pods).insert(uid, Instant::now());
        }
    }

    /// Whether `pod` was evicted lately (its eviction not yet shown by the watch).
    pub fn evicted_lately(&self, pod: &CachedPod) -> bool {
        pod.uid().is_some_and(|uid| {
            lock(&self.evicted_pods)
                .get(&uid)
                .is_some_and(|at| at.elapsed() < UNSEEN_HORIZON)
        })
    }

    /// Evictions whose effect the cached pods do not show yet: the evicted pod is still
    /// seen running, not terminating. Forgets the rest. Only the pod itself says so: a
    /// replacement of its owner seen first proves nothing for it (two pods of one owner
    /// evicted in the same second, the watch showing the first one's replacement before
    /// the second one's deletion, would otherwise count the second as done while the
    /// owner's count still holds it as running: one move counted by neither, and one
    /// pod more than `maxConcurrent` let go).
    pub fn unseen(&self, policy: &str, pods: &[Arc<CachedPod>]) -> usize {
        lock(&self.evicted_pods).retain(|_, at| at.elapsed() < UNSEEN_HORIZON);
        let mut policies = lock(&self.policies);
        let Some(memory) = policies.get_mut(policy) else {
            return 0;
        };
        memory.unseen.retain(|e| {
            let still_running = pods.iter().any(|p| {
                p.uid().as_deref() == Some(&e.pod_uid) && p.metadata.deletion_timestamp.is_none()
            });
            still_running && e.when.elapsed() < UNSEEN_HORIZON
        });
        memory.unseen.len()
    }

    /// A PDB refused to let `uid` go: back off before trying it again. A refusal while
    /// the owner had replicas on their way does not grow the backoff: it is the budget
    /// doing its job, not a PDB that holds.
    pub fn refused(&self, uid: &str, message: String, owner_busy: bool) -> Refusal {
        let mut refusals = lock(&self.refusals);
        let (count, at_rest) = refusals.get(uid).map_or((0, 0), |r| (r.count, r.at_rest));
        let at_rest = if owner_busy { at_rest } else { at_rest + 1 };
        let backoff = REFUSAL_BACKOFF
            .saturating_mul(1 << at_rest.saturating_sub(1).min(8))
            .min(REFUSAL_BACKOFF_MAX);
        let refusal = Refusal {
            until: Instant::now() + backoff,
            count: count + 1,
            at_rest,
            message,
            owner_busy,
        };
        refusals.insert(uid.to_string(), refusal.clone());
        refusal
    }

    /// The refusal still holding `uid` back, if any.
    pub fn refusal(&self, uid: &str) -> Option<Refusal> {
        lock(&self.refusals)
            .get(uid)
            .filter(|r| r.until > Instant::now())
            .cloned()
    }

    /// The last eviction from `owner` within [`LOOP_WINDOW`].
    pub fn owner_eviction(&self, owner: &str) -> Option<OwnerEviction> {
        let mut owners = lock(&self.owners);
        owners.retain(|_, e| e.when.elapsed() < LOOP_WINDOW);
        owners.get(owner).cloned()
    }

    /// Is this a new (or changed) block of `uid` under `policy`, worth recording?
    pub fn newly_blocked(&self, policy: &str, uid: &str, reason: &'static str) -> bool {
        lock(&self.blocked)
            .entry(policy.to_string())
            .or_default()
            .insert(uid.to_string(), reason)
            != Some(reason)
    }

    /// Forgets the blocks of `policy` whose pods are no longer blocked.
    pub fn keep_blocked(&self, policy: &str, uids: &std::collections::HashSet<String>) {
        if let Some(blocked) = lock(&self.blocked).get_mut(policy) {
            blocked.retain(|uid, _| uids.contains(uid));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backoff(refusal: &Refusal) -> u64 {
        // Whole seconds left, rounded up (the refusal was just recorded).
        refusal
            .until
            .saturating_duration_since(Instant::now())
            .as_secs_f64()
            .ceil() as u64
    }

    #[test]
    fn refusals_while_the_owner_is_busy_keep_a_short_backoff_and_at_rest_it_grows() {
        let memory = Memory::default();
        for _ in 0..6 {
            let refusal = memory.refused("pod", "budget spent".into(), true);
            assert_eq!(backoff(&refusal), 5, "{refusal:?}");
        }
        let grown: Vec<u64> = (0..6)
            .map(|_| backoff(&memory.refused("pod", "held".into(), false)))
            .collect();
        assert_eq!(grown, [5, 10, 20, 40, 60, 60]);
        let last = memory.refusal("pod").expect("still held back");
        assert_eq!(last.count, 12, "every refusal is counted for the report");
        assert!(!last.owner_busy);
    }

    #[test]
    fn a_pod_just_evicted_is_not_evicted_again_before_the_watch_shows_it() {
        let memory = Memory::default();
        let pod = |uid: &str| -> CachedPod {
            serde_json::from_value(serde_json::json!({
                "metadata": {"namespace": "shop", "name": uid, "uid": uid},
                "spec": {"nodeName": "virginia-a"},
            }))
            .expect("a pod")
        };
        assert!(!memory.evicted_lately(&pod("a")));
        memory.evicted("p", &pod("a"), KnownPods::default);
        assert!(memory.evicted_lately(&pod("a")));
        assert!(!memory.evicted_lately(&pod("b")), "only that pod");
        // Kept across passes (a pass forgets only what is older than the horizon).
        memory.unseen("p", &[]);
        assert!(memory.evicted_lately(&pod("a")));
    }

    /// A pod of owner `rs` created `created` (RFC 3339).
    fn owned(name: &str, uid: &str, created: &str) -> CachedPod {
        serde_json::from_value(serde_json::json!({
            "metadata": {
                "namespace": "shop", "name": name, "uid": uid, "creationTimestamp": created,
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "rs", "controller": true}],
            },
            "spec": {"nodeName": "virginia-a"},
        }))
        .expect("a pod")
    }

    #[test]
    fn a_pod_seen_before_the_first_eviction_is_no_replacement_whatever_its_timestamp() {
        // A rollout that completes the second its namespace comes into scope: the
        // evicted pod and its siblings share the second of the eviction.
        let now = Timestamp::now().to_string();
        let first = owned("web-a", "uid-a", &now);
        let sibling = owned("web-b", "uid-b", &now);
        let memory = Memory::default();
        let seen = [Arc::new(first.clone()), Arc::new(sibling.clone())];
        memory.evicted("p", &first, || KnownPods::of("shop", &seen, &[]));
        let window = memory.owner_eviction("rs").expect("the window is open");
        assert!(
            !window.replaced_by(&sibling),
            "seen before the eviction: an original, not a replacement"
        );
        let replacement = owned("web-c", "uid-c", &now);
        assert!(
            window.replaced_by(&replacement),
            "first seen after the eviction, in the same second: a replacement"
        );
        let older = owned("web-d", "uid-d", "2026-01-01T00:00:00Z");
        assert!(
            !window.replaced_by(&older),
            "created in an earlier second: it predates the eviction, even if shown late"
        );
    }

    #[test]
    fn an_eviction_counts_until_its_own_pod_is_seen_going_whatever_its_siblings_show() {
        // Two pods of one owner evicted in the same second; the watch shows the first
        // one terminating and its replacement before the second one's deletion.
        let now = Timestamp::now().to_string();
        let memory = Memory::default();
        let (a, b) = (owned("web-a", "uid-a", &now), owned("web-b", "uid-b", &now));
        memory.evicted("p", &a, KnownPods::default);
        memory.evicted("p", &b, KnownPods::default);
        let mut a_going = a.clone();
        a_going.metadata.deletion_timestamp = a.metadata.creation_timestamp.clone();
        let replacement = owned("web-c", "uid-c", &now);
        let cache = [
            Arc::new(a_going),
            Arc::new(b.clone()),
            Arc::new(replacement),
        ];
        assert_eq!(
            memory.unseen("p", &cache),
            1,
            "web-b is still seen running: its eviction is on its way, not done"
        );
        let cache = [Arc::new(owned("web-c", "uid-c", &now))];
        assert_eq!(memory.unseen("p", &cache), 0, "both seen gone");
    }

    #[test]
    fn the_window_keeps_what_was_known_when_it_opened() {
        let now = Timestamp::now().to_string();
        let memory = Memory::default();
        let a = owned("web-a", "uid-a", &now);
        memory.evicted("p", &a, || {
            KnownPods::of("shop", &[Arc::new(a.clone())], &[])
        });
        // The replacement of web-a is seen, lands outside, and a second pod of the owner is
        // evicted: the replacement must stay one (else the loop guard forgets it).
        let replacement = owned("web-c", "uid-c", &now);
        let b = owned("web-b", "uid-b", &now);
        memory.evicted("p", &b, || {
            unreachable!("the window is open: nothing is asked again")
        });
        let window = memory.owner_eviction("rs").expect("open");
        assert!(window.replaced_by(&replacement));
        assert_eq!(window.node, "virginia-a");
    }

    #[test]
    fn a_pod_awaiting_its_detail_is_known_by_name_except_a_statefulset_successor() {
        let now = Timestamp::now().to_string();
        let awaiting = |name: &str| AwaitingDetail {
            namespace: "shop".into(),
            name: name.into(),
            labels: Arc::default(),
            node: None,
        };
        let memory = Memory::default();
        let evicted = owned("db-0", "uid-old", &now);
        memory.evicted("p", &evicted, || {
            KnownPods::of("shop", &[], &[awaiting("db-0"), awaiting("db-1")])
        });
        let window = memory.owner_eviction("rs").expect("open");
        assert!(
            !window.replaced_by(&owned("db-1", "uid-1", &now)),
            "db-1 was seen (as a summary) before the eviction"
        );
        assert!(
            window.replaced_by(&owned("db-0", "uid-new", &now)),
            "db-0 now is the successor of the evicted db-0"
        );
    }
}
