//! The migration step: evicts the assessed pods within the policy's budget — at most
//! `maxConcurrent` on their way and `maxEvictionsPerMinute` — through the Eviction API,
//! so that PodDisruptionBudgets are respected and owners recreate the pods, which
//! admission then places inside.
//!
//! A refusal by a PDB (HTTP 429) is an answer, not an error: the eviction client makes
//! no retries of its own (kube's default retry policy would repeat a 429 for minutes
//! and hold the pass), the pod is reported as blocked by its PDB and retried with
//! backoff on a later pass, and the other pods keep moving.

use std::{
    collections::{HashMap, VecDeque, hash_map::Entry},
    sync::Arc,
    time::Duration,
};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, Resource, ResourceExt,
    api::EvictParams,
    runtime::{controller::Action, events::EventType},
};

use super::{Residency, assess::Assessment, memory::KnownPods};
use crate::{
    cache::CachedPod,
    controller::{Error, Result, publish, publish_once},
    crd::ResidencyPolicy,
    decisions::{Kind, Record, Subject},
    scope::ResolvedEnclave,
};

/// Eviction calls in flight at once within one pass (the budget bounds the total).
const PARALLELISM: usize = 16;
/// Event calls in flight at once for the pods one pass evicted.
const EVENT_PARALLELISM: usize = 8;
/// One eviction call may not hold a pass longer than this.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// What one eviction call came to.
enum Outcome {
    Evicted,
    /// A PodDisruptionBudget does not allow it now.
    Refused(String),
    /// The pod is gone already.
    Gone,
}

/// The UID of the pod's controller.
fn controller_uid(pod: &CachedPod) -> Option<&str> {
    pod.owner_references()
        .iter()
        .find(|o| o.controller == Some(true))
        .map(|o| o.uid.as_str())
}

async fn evict(state: &Residency, pod: &CachedPod) -> Result<Outcome> {
    let namespace = pod.namespace().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(state.ctx.eviction_client.clone(), &namespace);
    let (name, params) = (pod.name_any(), EvictParams::default());
    let call = api.evict(&name, &params);
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(Ok(_)) => Ok(Outcome::Evicted),
        Ok(Err(kube::Error::Api(status))) if status.code == 429 => {
            Ok(Outcome::Refused(status.message))
        }
        Ok(Err(kube::Error::Api(status))) if status.code == 404 => Ok(Outcome::Gone),
        Ok(Err(error)) => Err(Error::Kube(error)),
        // Treated like a refusal: try it again later, let the others move now.
        Err(_) => Ok(Outcome::Refused(format!(
            "the eviction call took longer than {CALL_TIMEOUT:?}"
        ))),
    }
}

/// The eviction rounds of one pass: candidates grouped by owner, owners in the order
/// their first candidate comes, each owner's pods in order. A round takes up to `share`
/// pods of each owner, a pod of each owner at a time so that a round the budget cuts
/// short stays fair. The first round of a pass takes one pod per owner, and the share
/// doubles each round (up to the calls a pass makes at once): an owner under a tight
/// PodDisruptionBudget costs at most a refusal or two, and one large Deployment no
/// longer moves one eviction call at a time (a 10,000-pod Deployment took 10 s per 100
/// evictions that way, the whole pass waiting on one call after another).
struct Rounds<T> {
    owners: Vec<VecDeque<T>>,
    share: usize,
}

impl<T> Rounds<T> {
    fn new(candidates: impl IntoIterator<Item = T>, owner_of: impl Fn(&T) -> String) -> Self {
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut owners: Vec<VecDeque<T>> = Vec::new();
        for candidate in candidates {
            match index.entry(owner_of(&candidate)) {
                Entry::Occupied(owner) => owners[*owner.get()].push_back(candidate),
                Entry::Vacant(owner) => {
                    owner.insert(owners.len());
                    owners.push(VecDeque::from([candidate]));
                }
            }
        }
        Self { owners, share: 1 }
    }

    /// The next round, at most `left` long, as (owner's index, candidate).
    fn next(&mut self, left: usize) -> Vec<(usize, T)> {
        let mut round = Vec::new();
        'round: for _ in 0..self.share {
            let before = round.len();
            for (index, pods) in self.owners.iter_mut().enumerate() {
                if round.len() == left {
                    break 'round;
                }
                if let Some(pod) = pods.pop_front() {
                    round.push((index, pod));
                }
            }
            if round.len() == before {
                break;
            }
        }
        self.share = (self.share * 2).min(PARALLELISM);
        round
    }

    /// The owner was refused: no more tries this pass.
    fn stop(&mut self, owner: usize) {
        if let Some(pods) = self.owners.get_mut(owner) {
            pods.clear();
        }
    }
}

/// Whom a candidate is grouped with in the rounds: its controller, within its own
/// namespace, or only itself. A tenant can write any owner UID on its own pods;
/// keyed by namespace, a pod claiming another namespace's owner never shares that
/// owner's rounds, so its refusals never stop another tenant's evictions.
fn owner_key(pod: &CachedPod) -> String {
    match controller_uid(pod) {
        Some(uid) => format!("{}/{uid}", pod.namespace().unwrap_or_default()),
        None => format!("pod {}", pod.uid().unwrap_or_default()),
    }
}

/// Evicts up to `budget` of the candidates in rounds (see [`next_round`]): an owner
/// whose pod a PodDisruptionBudget refused gets no more tries this pass (its other pods
/// would be refused too), and its share of the budget goes to the next owners instead
/// of being spent on refusals. Candidates keep their order (namespaces taking turns)
/// within each owner.
async fn evict_in_rounds(
    state: &Residency,
    to_evict: &[Arc<CachedPod>],
    budget: usize,
) -> Vec<(Arc<CachedPod>, Result<Outcome>)> {
    let mut rounds = Rounds::new(to_evict.iter().cloned(), |pod| owner_key(pod));
    let mut results = Vec::new();
    let mut left = budget;
    while left > 0 {
        // Owned pods: a stream of borrowed ones trips the compiler's higher-ranked
        // lifetime inference once the controller future must be Send.
        let round = rounds.next(left);
        if round.is_empty() {
            break;
        }
        left -= round.len();
        let outcomes: Vec<(usize, Arc<CachedPod>, Result<Outcome>)> = futures::stream::iter(round)
            .map(|(index, pod)| async move {
                let result = evict(state, &pod).await;
                (index, pod, result)
            })
            .buffer_unordered(PARALLELISM)
            .collect()
            .await;
        for (index, pod, result) in outcomes {
            if !matches!(result, Ok(Outcome::Evicted)) {
                // Refused (or failed): this owner waits for the next pass.
                rounds.stop(index);
            }
            results.push((pod, result));
        }
    }
    results
}

/// Evicts what the budget allows and says when to come back.
pub async fn run(
    state: &Residency,
    policy: &ResidencyPolicy,
    enclave: &ResolvedEnclave,
    assessment: &Assessment,
) -> Result<Action> {
    let ctx = &state.ctx;
    let name = policy.name_any();
    let migration = &policy.spec.migration;
    let (rate_budget, next_token) = state.memory.rate_budget(
        &name,
        usize::try_from(migration.max_evictions_per_minute).unwrap_or(1),
    );
    let (pods, awaiting) = crate::catalog::Catalog::pods_and_awaiting_detail(&ctx.caches);
    let in_flight = assessment.in_flight + state.memory.unseen(&name, &pods);
    let concurrency_budget = usize::try_from(migration.max_concurrent)
        .unwrap_or(1)
        .saturating_sub(in_flight);
    let budget = rate_budget.min(concurrency_budget);
    tracing::debug!(
        candidates = assessment.to_evict.len(),
        in_flight,
        rate_budget,
        budget,
        "migration budget"
    );
    let results = evict_in_rounds(state, &assessment.to_evict, budget).await;
    // Owners with replicas on their way now: those the assessment saw, and those one of
    // whose pods went in this pass (a PDB refusing their next pod is that budget spent).
    let busy_owners: std::collections::HashSet<String> = results
        .iter()
        .filter(|(_, result)| matches!(result, Ok(Outcome::Evicted)))
        .filter_map(|(pod, _)| controller_uid(pod).map(str::to_owned))
        .chain(assessment.busy_owners.iter().cloned())
        .collect();
    let mut evicted = Vec::new();
    let mut pod_events = Vec::new();
    let mut first_error = None;
    for (pod, result) in results {
        let namespace = pod.namespace().unwrap_or_default();
        let subject = Subject::new("Pod", Some(&namespace), &pod.name_any());
        let node = pod.node_name().unwrap_or_default().to_string();
        match result {
            Ok(Outcome::Evicted) => {
                state
                    .memory
                    .evicted(&name, &pod, || KnownPods::of(&namespace, &pods, &awaiting));
                let note = format!(
                    "evicted from node {node} (outside the enclave) so that its owner recreates it in DataEnclave {} (policy {name})",
                    enclave.name()
                );
                tracing::info!(pod = %format!("{namespace}/{}", pod.name_any()), %node, "evicted into the enclave");
                ctx.sink.record(
                    Record::new(Kind::PodEvicted, Some(&name), subject, note.clone())
                        .with("node", node),
                );
                pod_events.push((pod.object_ref(&()), note));
                evicted.push(format!("{namespace}/{}", pod.name_any()));
            }
            Ok(Outcome::Refused(message)) => {
                let uid = pod.uid().unwrap_or_default();
                let owner_busy = controller_uid(&pod).is_some_and(|o| busy_owners.contains(o));
                let refusal = state.memory.refused(&uid, message.clone(), owner_busy);
                let note = format!(
                    "not evicted from node {node} (outside DataEnclave {}): {}; retried in {} s",
                    enclave.name(),
                    message.trim_end_matches('.'),
                    refusal
                        .until
                        .saturating_duration_since(std::time::Instant::now())
                        .as_secs_f64()
                        .ceil()
                );
                tracing::info!(pod = %format!("{namespace}/{}", pod.name_any()), "eviction refused by a PodDisruptionBudget; will retry");
                ctx.sink.record(
                    Record::new(Kind::PodBlocked, Some(&name), subject, note.clone())
                        .with("reason", "DisruptionBudget"),
                );
                publish(
                    ctx,
                    &pod.object_ref(&()),
                    EventType::Warning,
                    "DisruptionBudget",
                    "Evict",
                    note,
                )
                .await;
            }
            Ok(Outcome::Gone) => {}
            Err(error) => first_error = first_error.or(Some(error)),
        }
    }
    // One Event on each evicted pod, a few at a time: a pass of 100 evictions no
    // longer waits on 100 Event calls one after another.
    futures::stream::iter(pod_events)
        .for_each_concurrent(EVENT_PARALLELISM, |(reference, note)| async move {
            publish_once(
                ctx,
                &reference,
                EventType::Normal,
                "EvictedIntoEnclave",
                "Evict",
                note,
            )
            .await;
        })
        .await;
    if !evicted.is_empty() {
        evicted.sort();
        let shown = evicted
            .iter()
            .take(5)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
        let more = evicted.len().saturating_sub(5);
        let note = format!(
            "evicted {} pod(s) running outside DataEnclave {} so that their owners recreate them inside: {shown}{}",
            evicted.len(),
            enclave.name(),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        );
        publish(
            ctx,
            &policy.object_ref(&()),
            EventType::Normal,
            "EvictedIntoEnclave",
            "Evict",
            note,
        )
        .await;
    }
    if let Some(error) = first_error {
        return Err(error);
    }
    // More to move: come back when the rate allows; pod changes wake us sooner.
    let requeue = if rate_budget == 0 {
        next_token.max(Duration::from_millis(200))
    } else {
        Duration::from_secs(2)
    };
    Ok(Action::requeue(requeue))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Candidates named "owner/pod".
    fn rounds(sizes: &[usize]) -> Rounds<String> {
        let candidates = sizes
            .iter()
            .enumerate()
            .flat_map(|(o, &n)| (0..n).map(move |p| format!("{o}/{p}")));
        Rounds::new(candidates, |c| {
            c.split('/').next().unwrap_or_default().to_string()
        })
    }

    fn names(round: &[(usize, String)]) -> Vec<&str> {
        round.iter().map(|(_, p)| p.as_str()).collect()
    }

    #[test]
    fn rounds_start_at_one_pod_per_owner_and_take_turns() {
        let mut rounds = rounds(&[3, 1, 2]);
        assert_eq!(names(&rounds.next(100)), ["0/0", "1/0", "2/0"]);
        // A share of two takes a pod of each owner, then a second of each.
        assert_eq!(names(&rounds.next(100)), ["0/1", "2/1", "0/2"]);
        assert!(rounds.next(100).is_empty());
    }

    #[test]
    fn the_budget_cuts_a_round_short_fairly() {
        let mut rounds = rounds(&[5, 5, 5]);
        rounds.share = 4;
        let round = rounds.next(4);
        assert_eq!(
            round.iter().map(|(o, _)| *o).collect::<Vec<_>>(),
            [0, 1, 2, 0],
            "every owner gets one before any gets a second"
        );
    }

    #[test]
    fn one_large_owner_is_evicted_many_at_a_time_after_the_first_round() {
        let mut rounds = rounds(&[100]);
        let (mut left, mut sizes) = (100, Vec::new());
        while left > 0 {
            let round = rounds.next(left);
            left -= round.len();
            sizes.push(round.len());
        }
        assert_eq!(sizes, [1, 2, 4, 8, 16, 16, 16, 16, 16, 5]);
    }

    #[test]
    fn a_stopped_owner_gets_no_more_tries_and_the_others_go_on() {
        let mut rounds = rounds(&[4, 4]);
        assert_eq!(names(&rounds.next(100)), ["0/0", "1/0"]);
        rounds.stop(0);
        assert_eq!(names(&rounds.next(100)), ["1/1", "1/2"]);
    }

    #[test]
    fn a_pod_claiming_another_namespaces_owner_is_not_grouped_with_it() {
        let pod = |namespace: &str, name: &str| -> CachedPod {
            serde_json::from_value(serde_json::json!({"metadata": {
                "namespace": namespace, "name": name, "uid": format!("uid-{name}"),
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web",
                                     "uid": "rs-victim", "controller": true}]
            }}))
            .expect("a pod parses")
        };
        let (victim, forged) = (pod("victim", "web-1"), pod("tenant", "web-2"));
        assert_ne!(owner_key(&victim), owner_key(&forged));
        let mut rounds = Rounds::new([forged, victim], owner_key);
        assert_eq!(rounds.next(100).len(), 2, "two owners, one pod each");
    }
}
