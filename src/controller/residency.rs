//! The residency controller: for each ResidencyPolicy, finds the pods in its scope,
//! judges each against its enclave, moves the ones running outside by eviction (PDBs
//! respected, within the policy's rate and concurrency), and reports it all in status.
//!
//! Progress is derived from the cluster on every run — pods terminating or not yet
//! running count as in flight — so a restart mid-migration neither loses track nor
//! evicts more than `maxConcurrent` at once.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::StreamExt;
use k8s_openapi::{
    api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim, Pod},
    apimachinery::pkg::apis::meta::v1::Time,
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{EvictParams, Patch, PatchParams},
    core::DeserializeGuard,
    runtime::{Controller, controller::Action, events::EventType, watcher},
};
use serde_json::json;

use super::{Error, RESYNC, Result, error_policy, instrumented, publish, unguard};
use crate::{
    cache::CachedPod,
    conditions::{self, Observed},
    context::{Context, FIELD_MANAGER},
    crd::{Enforcement, ResidencyPolicy, ResidencyPolicyStatus, Violation},
    placement,
    scope::{self, ResolvedEnclave},
};

const CONTROLLER: &str = "residency";

/// At most this many violations are listed in status; the counts cover the rest.
pub const MAX_VIOLATIONS: usize = 50;

/// What the controller concluded about one pod in scope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Judgement {
    /// On (or held to) enclave nodes.
    Compliant,
    /// Outside and on its way: being deleted after an eviction.
    Migrating,
    /// Outside; will be evicted when the budget allows.
    ToEvict,
    /// Outside and must not be moved automatically (the reason says why).
    Blocked {
        reason: &'static str,
        message: String,
    },
    /// Outside, and the policy does not move it (Audit mode or migration disabled).
    Reported {
        reason: &'static str,
        message: String,
    },
}

/// The state of a policy's scope.
#[derive(Debug, Default)]
pub struct Assessment {
    pub status: ResidencyPolicyStatus,
    /// Pods to evict, in a stable order (namespace, name).
    pub to_evict: Vec<Arc<CachedPod>>,
    /// Pods on their way (terminating, or created but not yet running): the
    /// concurrency budget is spent on these.
    pub in_flight: usize,
}

/// Everything `assess` reads: cached objects, no client.
pub struct World<'a> {
    pub pods: &'a [Arc<CachedPod>],
    pub nodes: &'a BTreeMap<String, Arc<Node>>,
    pub claims: &'a BTreeMap<(String, String), Arc<PersistentVolumeClaim>>,
    pub volumes: &'a BTreeMap<String, Arc<PersistentVolume>>,
    pub namespaces: &'a BTreeMap<String, BTreeMap<String, String>>,
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

fn controller_kind(pod: &CachedPod) -> Option<&str> {
    pod.owner_references()
        .iter()
        .find(|o| o.controller == Some(true))
        .map(|o| o.kind.as_str())
}

/// The first PVC of the pod whose volume lives outside the enclave: a storage class
/// that is not the enclave's, or node affinity no enclave node satisfies.
fn volume_outside(
    pod: &CachedPod,
    namespace: &str,
    enclave: &ResolvedEnclave,
    world: &World,
) -> Option<String> {
    let classes = &enclave.enclave.spec.storage.storage_class_names;
    let enclave_nodes: Vec<&Arc<Node>> = world
        .nodes
        .values()
        .filter(|n| enclave.contains_node(n.labels()))
        .collect();
    for claim_name in &pod.spec.claims {
        let Some(claim) = world
            .claims
            .get(&(namespace.to_string(), claim_name.clone()))
        else {
            continue;
        };
        let Some(volume_name) = claim.spec.as_ref().and_then(|s| s.volume_name.as_ref()) else {
            continue;
        };
        let Some(volume) = world.volumes.get(volume_name) else {
            continue;
        };
        let spec = volume.spec.as_ref();
        let class = spec
            .and_then(|s| s.storage_class_name.as_deref())
            .unwrap_or_default();
        if !classes.iter().any(|c| c == class) {
            return Some(format!(
                "PVC {claim_name} is bound to PersistentVolume {volume_name} of storage class {class:?}, not one of the enclave's ({})",
                classes.join(", ")
            ));
        }
        let terms = spec
            .and_then(|s| s.node_affinity.as_ref())
            .and_then(|a| a.required.as_ref())
            .map(|r| r.node_selector_terms.as_slice());
        if let Some(terms) = terms
            && !enclave_nodes.iter().any(|n| {
                terms
                    .iter()
                    .any(|t| placement::term_matches_node(t, &n.name_any(), n.labels()))
            })
        {
            return Some(format!(
                "PVC {claim_name} is bound to PersistentVolume {volume_name}, which only nodes outside the enclave can reach"
            ));
        }
    }
    None
}

fn judge(
    policy: &ResidencyPolicy,
    enclave: &ResolvedEnclave,
    pod: &CachedPod,
    namespace: &str,
    world: &World,
) -> (Judgement, Option<String>) {
    let node = pod.node_name();
    let inside = match node {
        Some(node) => world
            .nodes
            .get(node)
            .is_some_and(|n| enclave.contains_node(n.labels())),
        // Not scheduled yet: compliant if its constraints hold it inside.
        None => placement::implies_enclave(&pod.placement_spec(), &enclave.site_terms),
    };
    if inside {
        return (Judgement::Compliant, None);
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
    if is_terminating(pod) {
        return (Judgement::Migrating, Some(where_));
    }
    if node.is_none() {
        // Admission constrains new pods; one without constraints predates the policy and
        // will be scheduled anywhere. Nothing to evict yet: report it.
        return (
            Judgement::Reported {
                reason: "UnconstrainedPending",
                message: format!("pod {where_}"),
            },
            Some(where_),
        );
    }
    if let Some(why) = volume_outside(pod, namespace, enclave, world) {
        return (
            Judgement::Blocked {
                reason: "VolumeOutsideEnclave",
                message: format!("pod {where_}; not evicted because {why}: migrate the data first"),
            },
            Some(where_),
        );
    }
    let migration = &policy.spec.migration;
    match controller_kind(pod) {
        Some("DaemonSet") => {
            return (
                Judgement::Blocked {
                    reason: "DaemonSetPod",
                    message: format!(
                        "pod {where_}; its DaemonSet recreates it on the same node: update the DaemonSet so that the webhook constrains its template"
                    ),
                },
                Some(where_),
            );
        }
        None if !migration.evict_unmanaged_pods => {
            return (
                Judgement::Blocked {
                    reason: "Unmanaged",
                    message: format!(
                        "pod {where_}; no controller would recreate it, so it is not evicted (set migration.evictUnmanagedPods to allow)"
                    ),
                },
                Some(where_),
            );
        }
        _ => {}
    }
    if policy.spec.enforcement == Enforcement::Audit {
        return (
            Judgement::Reported {
                reason: "OutsideEnclave",
                message: format!("pod {where_}; Audit mode: would be evicted"),
            },
            Some(where_),
        );
    }
    if !migration.enabled {
        return (
            Judgement::Reported {
                reason: "OutsideEnclave",
                message: format!("pod {where_}; migration is disabled"),
            },
            Some(where_),
        );
    }
    (Judgement::ToEvict, Some(where_))
}

/// Does the new status say anything the old one did not (condition timestamps aside)?
fn status_changed(old: Option<&ResidencyPolicyStatus>, new: &ResidencyPolicyStatus) -> bool {
    let Some(old) = old else { return true };
    let strip = |s: &ResidencyPolicyStatus| ResidencyPolicyStatus {
        conditions: Vec::new(),
        ..s.clone()
    };
    strip(old) != strip(new) || !conditions::same(&old.conditions, &new.conditions)
}

/// Judges every pod in the policy's scope and builds the status. Pure.
pub fn assess(
    policy: &ResidencyPolicy,
    enclave: Result<&ResolvedEnclave, &str>,
    world: &World,
    now: &Time,
) -> Assessment {
    let previous = policy
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let generation = policy.metadata.generation;
    let enclave = match enclave {
        Ok(enclave) => enclave,
        Err(problem) => {
            let ready = Observed::new(
                "Ready",
                false,
                "EnclaveNotFound",
                format!("{problem}; in-scope pods are refused under Enforce"),
            );
            let compliant =
                Observed::new("Compliant", false, "EnclaveNotFound", problem.to_string());
            return Assessment {
                status: ResidencyPolicyStatus {
                    observed_generation: generation,
                    conditions: conditions::settle(
                        previous,
                        vec![ready, compliant],
                        generation,
                        now,
                    ),
                    ..Default::default()
                },
                ..Default::default()
            };
        }
    };

    let mut status = ResidencyPolicyStatus {
        observed_generation: generation,
        ..Default::default()
    };
    let mut assessment = Assessment::default();
    let mut violations = Vec::new();
    for pod in world.pods {
        let namespace = pod.namespace().unwrap_or_default();
        let Some(namespace_labels) = world.namespaces.get(&namespace) else {
            continue;
        };
        if is_finished(pod) || !scope::covers(policy, &namespace, namespace_labels, pod.labels()) {
            continue;
        }
        status.matched_pods += 1;
        let (judgement, _) = judge(policy, enclave, pod, &namespace, world);
        if !is_running(pod) && matches!(judgement, Judgement::Compliant | Judgement::Migrating) {
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
            Judgement::Compliant => status.compliant_pods += 1,
            Judgement::Migrating => {
                status.non_compliant_pods += 1;
                status.migrating_pods += 1;
            }
            Judgement::ToEvict => {
                status.non_compliant_pods += 1;
                violations.push(violation("OutsideEnclave", format!("pod runs on node {}, outside DataEnclave {}; it will be evicted so that its owner recreates it inside", pod.node_name().unwrap_or_default(), enclave.name())));
                assessment.to_evict.push(pod.clone());
            }
            Judgement::Blocked { reason, message } => {
                status.non_compliant_pods += 1;
                status.blocked_pods += 1;
                violations.push(violation(reason, message));
            }
            Judgement::Reported { reason, message } => {
                status.non_compliant_pods += 1;
                violations.push(violation(reason, message));
            }
        }
    }
    violations.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    violations.truncate(MAX_VIOLATIONS);
    status.violations = violations;
    assessment
        .to_evict
        .sort_by_key(|p| (p.namespace(), p.name_any()));

    let unknown_sites: Vec<&str> = policy
        .spec
        .placement
        .iter()
        .flat_map(|p| &p.preferred_sites)
        .filter(|p| !enclave.enclave.spec.sites.iter().any(|s| s.name == p.site))
        .map(|p| p.site.as_str())
        .collect();
    let ready = if unknown_sites.is_empty() {
        Observed::new(
            "Ready",
            true,
            "EnclaveResolved",
            format!(
                "enforcing DataEnclave {} ({})",
                enclave.name(),
                enclave.site_names().join(", ")
            ),
        )
    } else {
        Observed::new(
            "Ready",
            false,
            "UnknownPreferredSite",
            format!(
                "placement.preferredSites names sites DataEnclave {} does not have: {}",
                enclave.name(),
                unknown_sites.join(", ")
            ),
        )
    };
    let compliant = if status.non_compliant_pods == 0 {
        Observed::new(
            "Compliant",
            true,
            "AllPodsInEnclave",
            format!(
                "all {} pods in scope are inside the enclave",
                status.matched_pods
            ),
        )
    } else {
        let (reason, what) = if policy.spec.enforcement == Enforcement::Audit {
            ("AuditOnly", "Audit mode moves nothing")
        } else if status.migrating_pods > 0 || !assessment.to_evict.is_empty() {
            ("Migrating", "moving them into the enclave")
        } else if status.blocked_pods > 0 {
            ("Blocked", "they need manual action (see violations)")
        } else {
            ("OutsideEnclave", "see violations")
        };
        Observed::new(
            "Compliant",
            false,
            reason,
            format!(
                "{} of {} pods in scope are outside the enclave: {what}",
                status.non_compliant_pods, status.matched_pods
            ),
        )
    };
    status.conditions = conditions::settle(previous, vec![ready, compliant], generation, now);
    assessment.status = status;
    assessment
}

/// One eviction this operator made, until the cache shows its effect.
struct Evicted {
    pod_uid: String,
    owner_uid: Option<String>,
    at: jiff::Timestamp,
    when: Instant,
}

/// Evictions per policy: the last minute's, for the rate budget, and those the caches
/// have not caught up with yet — counted as in flight so that a reconcile that runs
/// before the watch delivers the eviction cannot evict past `maxConcurrent`. In memory:
/// after a restart the bound derived from the cluster (terminating and pending pods)
/// still holds.
#[derive(Default)]
pub struct EvictionLog {
    recent: Mutex<HashMap<String, VecDeque<Instant>>>,
    unseen: Mutex<HashMap<String, Vec<Evicted>>>,
}

/// Eviction calls in flight at once within one pass (the budget still bounds the total).
const EVICTION_PARALLELISM: usize = 16;

const RATE_WINDOW: Duration = Duration::from_secs(60);
/// A watch that has not delivered an eviction's effect by then never will.
const UNSEEN_HORIZON: Duration = Duration::from_secs(60);

impl EvictionLog {
    /// How many evictions the rate allows now, and when the next one will be allowed.
    fn budget(&self, policy: &str, per_minute: usize) -> (usize, Duration) {
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        let log = recent.entry(policy.to_string()).or_default();
        while log.front().is_some_and(|t| t.elapsed() >= RATE_WINDOW) {
            log.pop_front();
        }
        let next = log
            .front()
            .map(|t| RATE_WINDOW.saturating_sub(t.elapsed()))
            .unwrap_or_default();
        (per_minute.saturating_sub(log.len()), next)
    }

    fn record(&self, policy: &str, pod: &CachedPod) {
        self.recent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(policy.to_string())
            .or_default()
            .push_back(Instant::now());
        let owner_uid = pod
            .owner_references()
            .iter()
            .find(|o| o.controller == Some(true))
            .map(|o| o.uid.clone());
        let evicted = Evicted {
            pod_uid: pod.uid().unwrap_or_default(),
            owner_uid,
            at: jiff::Timestamp::now(),
            when: Instant::now(),
        };
        self.unseen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(policy.to_string())
            .or_default()
            .push(evicted);
    }

    /// Evictions whose effect the cached pods do not show yet: the evicted pod is not
    /// seen terminating, and no newer pod of its owner is seen. Forgets the rest.
    fn unseen(&self, policy: &str, pods: &[Arc<CachedPod>]) -> usize {
        let mut unseen = self.unseen.lock().unwrap_or_else(|p| p.into_inner());
        let Some(entries) = unseen.get_mut(policy) else {
            return 0;
        };
        entries.retain(|e| {
            let terminating = pods.iter().any(|p| p.uid().as_deref() == Some(&e.pod_uid) && p.metadata.deletion_timestamp.is_some());
            let replaced = e.owner_uid.as_ref().is_some_and(|owner| {
                pods.iter().any(|p| {
                    p.uid().as_deref() != Some(&e.pod_uid)
                        && p.owner_references().iter().any(|o| &o.uid == owner)
                        // Creation timestamps have second precision.
                        && p.metadata.creation_timestamp.as_ref().is_some_and(|t| t.0.as_second() >= e.at.as_second())
                })
            });
            !terminating && !replaced && e.when.elapsed() < UNSEEN_HORIZON
        });
        entries.len()
    }
}

/// Owned copies of the caches, taken once per run, that a [`World`] borrows.
struct Snapshot {
    pods: Vec<Arc<CachedPod>>,
    nodes: BTreeMap<String, Arc<Node>>,
    claims: BTreeMap<(String, String), Arc<PersistentVolumeClaim>>,
    volumes: BTreeMap<String, Arc<PersistentVolume>>,
    namespaces: BTreeMap<String, BTreeMap<String, String>>,
}

impl Snapshot {
    fn take(ctx: &Context) -> Self {
        let caches = &ctx.caches;
        Self {
            pods: caches.pods.store.state(),
            nodes: caches
                .nodes
                .store
                .state()
                .into_iter()
                .map(|n| (n.name_any(), n))
                .collect(),
            claims: caches
                .claims
                .store
                .state()
                .into_iter()
                .map(|c| ((c.namespace().unwrap_or_default(), c.name_any()), c))
                .collect(),
            volumes: caches
                .volumes
                .store
                .state()
                .into_iter()
                .map(|v| (v.name_any(), v))
                .collect(),
            namespaces: caches
                .namespaces
                .store
                .state()
                .into_iter()
                .map(|n| (n.name_any(), n.labels().clone()))
                .collect(),
        }
    }

    fn world(&self) -> World<'_> {
        World {
            pods: &self.pods,
            nodes: &self.nodes,
            claims: &self.claims,
            volumes: &self.volumes,
            namespaces: &self.namespaces,
        }
    }
}

async fn evict(
    ctx: &Context,
    policy: &ResidencyPolicy,
    enclave: &ResolvedEnclave,
    pod: &CachedPod,
) -> Result<bool> {
    // Evictions of one pass run concurrently; each makes two API calls (eviction, Event).
    let namespace = pod.namespace().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    let node = pod.node_name().unwrap_or_default();
    match api.evict(&pod.name_any(), &EvictParams::default()).await {
        Ok(_) => {
            let note = format!(
                "evicted from node {node} (outside the enclave) so that its owner recreates it in DataEnclave {} (policy {})",
                enclave.name(),
                policy.name_any()
            );
            tracing::info!(pod = %format!("{namespace}/{}", pod.name_any()), %node, "evicted into the enclave");
            publish(
                ctx,
                &pod.object_ref(&()),
                EventType::Normal,
                "EvictedIntoEnclave",
                "Evict",
                note.clone(),
            )
            .await;
            Ok(true)
        }
        // 429: a PodDisruptionBudget forbids it now. Try again on a later run.
        Err(kube::Error::Api(status)) if status.code == 429 => {
            tracing::info!(pod = %format!("{namespace}/{}", pod.name_any()), "eviction refused by a PodDisruptionBudget; will retry");
            Ok(false)
        }
        // Gone already: nothing to move.
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
        Err(error) => Err(Error::Kube(error)),
    }
}

#[tracing::instrument(skip_all, fields(policy = %policy.name_any()))]
async fn enforce(policy: &ResidencyPolicy, ctx: &Context) -> Result<Action> {
    let enclave = scope::resolve_enclave(&ctx.caches, policy);
    let snapshot = Snapshot::take(ctx);
    let assessment = assess(
        policy,
        enclave.as_ref().map_err(String::as_str),
        &snapshot.world(),
        &conditions::now(),
    );

    // Status first: detection must not wait for the evictions of this pass.
    let status = &assessment.status;
    if status_changed(policy.status.as_ref(), status) {
        let api: Api<ResidencyPolicy> = Api::all(ctx.client.clone());
        let patch = json!({"apiVersion": "enclave.dev/v1alpha1", "kind": "ResidencyPolicy", "status": status});
        api.patch_status(
            &policy.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
        tracing::info!(
            matched = status.matched_pods,
            compliant = status.compliant_pods,
            migrating = status.migrating_pods,
            blocked = status.blocked_pods,
            "policy status updated"
        );
    }

    let (Ok(enclave), false) = (&enclave, assessment.to_evict.is_empty()) else {
        return Ok(Action::requeue(RESYNC));
    };
    let migration = &policy.spec.migration;
    let name = policy.name_any();
    let (rate_budget, next_token) = ctx.evictions.budget(
        &name,
        usize::try_from(migration.max_evictions_per_minute).unwrap_or(1),
    );
    let in_flight = assessment.in_flight + ctx.evictions.unseen(&name, &snapshot.pods);
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
    // Owned pods: a stream of borrowed ones trips the compiler's higher-ranked lifetime
    // inference once the controller future must be Send.
    let candidates: Vec<Arc<CachedPod>> =
        assessment.to_evict.iter().take(budget).cloned().collect();
    let results: Vec<(Arc<CachedPod>, Result<bool>)> = futures::stream::iter(candidates)
        .map(|pod| async move {
            let result = evict(ctx, policy, enclave, &pod).await;
            (pod, result)
        })
        .buffer_unordered(EVICTION_PARALLELISM)
        .collect()
        .await;
    let mut evicted = Vec::new();
    let mut first_error = None;
    for (pod, result) in results {
        match result {
            Ok(true) => {
                ctx.evictions.record(&name, &pod);
                evicted.push(format!(
                    "{}/{}",
                    pod.namespace().unwrap_or_default(),
                    pod.name_any()
                ));
            }
            Ok(false) => {}
            Err(error) => first_error = first_error.or(Some(error)),
        }
    }
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

async fn reconcile(
    guard: Arc<DeserializeGuard<ResidencyPolicy>>,
    ctx: Arc<Context>,
) -> Result<Action> {
    let policy = unguard(&guard, &ctx).await?;
    instrumented(CONTROLLER, policy, &ctx, enforce(policy, &ctx)).await
}

/// Runs the residency controller until shutdown. Any change to pods, nodes, enclaves,
/// namespaces or volumes re-runs every policy (debounced): policies are few, and each
/// run reads only caches.
pub async fn run(client: Client, ctx: Arc<Context>) {
    let policies: Api<DeserializeGuard<ResidencyPolicy>> = Api::all(client);
    ctx.caches.wait_until_ready().await;
    let caches = &ctx.caches;
    let triggers = futures::stream::select_all([
        caches.pods.changes().boxed(),
        caches.nodes.changes().boxed(),
        caches.enclaves.changes().boxed(),
        caches.namespaces.changes().boxed(),
        caches.claims.changes().boxed(),
        caches.volumes.changes().boxed(),
    ]);
    Controller::new(policies, watcher::Config::default().any_semantic())
        .reconcile_all_on(triggers)
        .with_config(
            kube::runtime::controller::Config::default().debounce(Duration::from_millis(300)),
        )
        .shutdown_on_signal()
        .run(
            reconcile,
            |guard, error, ctx| error_policy(CONTROLLER, guard.as_ref(), error, &ctx),
            ctx.clone(),
        )
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "reconcile did not complete");
            }
        })
        .await;
}
