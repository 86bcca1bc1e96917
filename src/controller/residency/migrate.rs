//! The migration step: evicts the assessed pods within the policy's budget — at most
//! `maxConcurrent` on their way and `maxEvictionsPerMinute` — through the Eviction API,
//! so that PodDisruptionBudgets are respected and owners recreate the pods, which
//! admission then places inside.
//!
//! A refusal by a PDB (HTTP 429) is an answer, not an error: the eviction client makes
//! no retries of its own (kube's default retry policy would repeat a 429 for minutes
//! and hold the pass), the pod is reported as blocked by its PDB and retried with
//! backoff on a later pass, and the other pods keep moving.

use std::{collections::VecDeque, sync::Arc, time::Duration};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, Resource, ResourceExt,
    api::EvictParams,
    runtime::{controller::Action, events::EventType},
};

use super::{Residency, assess::Assessment};
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

/// The next round of evictions: up to `share` pods of each owner, taken a pod of each
/// owner at a time so that a round the budget (`left`) cuts short stays fair, as
/// (owner's index, pod). The first round of a pass takes one pod per owner, and the
/// share doubles each round (up to the calls a pass makes at once): an owner under a
/// tight PodDisruptionBudget costs at most a refusal or two, and one large Deployment
/// no longer moves one eviction call at a time (a 10,000-pod Deployment took 10 s per
/// 100 evictions that way, the whole pass waiting on one call after another).
fn next_round<T>(
    owners: &mut [(String, VecDeque<T>)],
    share: usize,
    left: usize,
) -> Vec<(usize, T)> {
    let mut round = Vec::new();
    for _ in 0..share {
        let before = round.len();
        for (index, (_, pods)) in owners.iter_mut().enumerate() {
            if round.len() == left {
                return round;
            }
            if let Some(pod) = pods.pop_front() {
                round.push((index, pod));
            }
        }
        if round.len() == before {
            break;
        }
    }
    round
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
    // Owners in the order their first candidate comes, each with its pods in order.
    let mut owners: Vec<(String, VecDeque<Arc<CachedPod>>)> = Vec::new();
    for pod in to_evict {
        let owner =
            controller_uid(pod).map_or_else(|| pod.uid().unwrap_or_default(), str::to_owned);
        match owners.iter_mut().find(|(uid, _)| *uid == owner) {
            Some((_, pods)) => pods.push_back(pod.clone()),
            None => owners.push((owner, VecDeque::from([pod.clone()]))),
        }
    }
    let mut results = Vec::new();
    let (mut left, mut share) = (budget, 1);
    while left > 0 {
        // Owned pods: a stream of borrowed ones trips the compiler's higher-ranked
        // lifetime inference once the controller future must be Send.
        let round = next_round(&mut owners, share, left);
        if round.is_empty() {
            break;
        }
        left -= round.len();
        share = (share * 2).min(PARALLELISM);
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
                if let Some((_, pods)) = owners.get_mut(index) {
                    pods.clear();
                }
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
    let pods = crate::catalog::Catalog::pods(&ctx.caches);
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
                state.memory.evicted(&name, &pod);
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

    fn owners(sizes: &[usize]) -> Vec<(String, VecDeque<String>)> {
        sizes
            .iter()
            .enumerate()
            .map(|(o, &n)| {
                (
                    format!("owner-{o}"),
                    (0..n).map(|p| format!("{o}/{p}")).collect(),
                )
            })
            .collect()
    }

    #[test]
    fn rounds_start_at_one_pod_per_owner_and_take_turns() {
        let mut owners = owners(&[3, 1, 2]);
        let first = next_round(&mut owners, 1, 100);
        assert_eq!(
            first.iter().map(|(_, p)| p.as_str()).collect::<Vec<_>>(),
            ["0/0", "1/0", "2/0"]
        );
        // A share of two takes a pod of each owner, then a second of each.
        let second = next_round(&mut owners, 2, 100);
        assert_eq!(
            second.iter().map(|(_, p)| p.as_str()).collect::<Vec<_>>(),
            ["0/1", "2/1", "0/2"]
        );
        assert!(next_round(&mut owners, 4, 100).is_empty());
    }

    #[test]
    fn the_budget_cuts_a_round_short_fairly() {
        let mut owners = owners(&[5, 5, 5]);
        let round = next_round(&mut owners, 4, 4);
        assert_eq!(
            round.iter().map(|(o, _)| *o).collect::<Vec<_>>(),
            [0, 1, 2, 0],
            "every owner gets one before any gets a second"
        );
    }

    #[test]
    fn one_large_owner_is_evicted_many_at_a_time_after_the_first_round() {
        let mut owners = owners(&[100]);
        let (mut left, mut share, mut rounds) = (100, 1, Vec::new());
        while left > 0 {
            let round = next_round(&mut owners, share, left);
            left -= round.len();
            rounds.push(round.len());
            share = (share * 2).min(PARALLELISM);
        }
        assert_eq!(rounds, [1, 2, 4, 8, 16, 16, 16, 16, 16, 5]);
    }
}
