//! The residency controller: for each ResidencyPolicy, a pipeline of steps, each its
//! own module —
//!
//! 1. **dereference** the enclave ([`crate::scope::resolve_enclave`]);
//! 2. **admission**: write and read back the policy's admission objects ([`admission`]);
//! 3. **assess** every pod in scope, pure ([`assess`]);
//! 4. **status**: build it, pure, and write it when it changed ([`status`]);
//! 5. **migrate**: evict pods running outside, within the policy's rate and concurrency,
//!    PDBs respected ([`migrate`]).
//!
//! Progress is derived from the cluster on every pass — pods on their way and owners'
//! missing replicas — plus a short [`memory::Memory`], so a restart mid-migration
//! neither loses track nor evicts more than `maxConcurrent` at once.

pub mod admission;
pub mod assess;
pub mod leaving;
pub mod memory;
pub mod migrate;
pub mod network;
pub mod status;
pub mod storage;

use std::{
    collections::{BTreeMap, HashSet},
    sync::Arc,
    time::Duration,
};

use futures::StreamExt;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{Patch, PatchParams},
    core::DeserializeGuard,
    runtime::{Controller, controller::Action, events::EventType, watcher},
};
use serde_json::json;

use super::{RESYNC, Result, error_policy, instrumented, publish, publish_related, unguard};
use crate::{
    admission::native,
    conditions,
    context::Context,
    crd::{Enforcement, ResidencyPolicy},
    decisions::{Kind, Record, Subject},
    names::FIELD_MANAGER,
    scope,
};

const CONTROLLER: &str = "residency";
/// Warning Events on blocked pods per pass at most; beyond it, one Event on the policy.
const MAX_POD_EVENTS_PER_PASS: usize = 50;
/// Event calls in flight at once.
const EVENT_CALLS: usize = 8;

/// The controller's state: the shared context and its own memory.
pub struct Residency {
    pub ctx: Arc<Context>,
    pub memory: memory::Memory,
    pub fence: network::FenceMemory,
    pub scope: leaving::ScopeMemory,
    pub admission_in_place: AdmissionClock,
    pub admission_writes: admission::Writes,
}

/// How long admission objects must have been in place, unchanged, before pods are
/// evicted. The API server loads admission policies and webhook configurations through
/// its informers, so a write is in force only a moment after it is read back; a
/// replacement created in that moment would be admitted without the enclave, land
/// outside and have to be evicted a second time.
pub const ADMISSION_SETTLE: Duration = Duration::from_secs(3);

/// Since when each policy's admission, as it is now, has been in place: per policy UID,
/// the fingerprint of what its admission objects are built from and the first time
/// they were read back in place.
#[derive(Default)]
pub struct AdmissionClock(
    std::sync::Mutex<std::collections::HashMap<String, (String, std::time::Instant)>>,
);

impl AdmissionClock {
    /// How much longer to wait before evicting; zero once settled.
    fn wait(
        &self,
        policy: &ResidencyPolicy,
        enclave: &scope::ResolvedEnclave,
        engine: &str,
    ) -> Duration {
        let fingerprint = format!(
            "{}/{}/{}/{}",
            policy.metadata.generation.unwrap_or_default(),
            enclave.enclave.metadata.uid.as_deref().unwrap_or_default(),
            enclave.enclave.metadata.generation.unwrap_or_default(),
            engine
        );
        let now = std::time::Instant::now();
        let mut clock = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let since = clock
            .entry(policy.uid().unwrap_or_default())
            .and_modify(|(seen, since)| {
                if *seen != fingerprint {
                    *seen = fingerprint.clone();
                    *since = now;
                }
            })
            .or_insert_with(|| (fingerprint.clone(), now))
            .1;
        ADMISSION_SETTLE.saturating_sub(now.saturating_duration_since(since))
    }

    /// Forgets a policy's admission (not in place, or gone).
    fn reset(&self, policy: &ResidencyPolicy) {
        if let Some(uid) = policy.uid() {
            self.0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&uid);
        }
    }
}

fn condition_became(
    previous: Option<&crate::crd::ResidencyPolicyStatus>,
    next: &crate::crd::ResidencyPolicyStatus,
    type_: &str,
    value: &str,
) -> Option<String> {
    let find = |s: &crate::crd::ResidencyPolicyStatus| {
        s.conditions.iter().find(|c| c.type_ == type_).cloned()
    };
    let now = find(next)?;
    let before = previous.and_then(find);
    (now.status == value && before.is_none_or(|b| b.status != value)).then_some(now.message)
}

/// Milliseconds per phase of a pass.
struct Laps {
    last: std::time::Instant,
    laps: Vec<(&'static str, Duration)>,
}

impl Laps {
    fn start() -> Self {
        Self {
            last: std::time::Instant::now(),
            laps: Vec::new(),
        }
    }

    fn lap(&mut self, phase: &'static str) {
        let now = std::time::Instant::now();
        self.laps.push((phase, now - self.last));
        self.last = now;
    }
}

impl std::fmt::Display for Laps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (phase, took)) in self.laps.iter().enumerate() {
            let sep = if i == 0 { "" } else { " " };
            write!(f, "{sep}{phase}={:.1}ms", took.as_secs_f64() * 1000.0)?;
        }
        Ok(())
    }
}

#[tracing::instrument(skip_all, fields(policy = %policy.name_any()))]
async fn enforce(policy: &ResidencyPolicy, state: &Residency) -> Result<Action> {
    let ctx = &state.ctx;
    let name = policy.name_any();

    // Where a pass spends its time, for the debug log (a pass over a large cluster
    // should be explainable without a profiler).
    let mut laps = Laps::start();

    // 1. Dereference.
    let enclave = scope::resolve_enclave(&ctx.caches, policy);
    let enclave_ref = enclave.as_ref().map_err(String::as_str);

    // 2. Admission objects first: the enclave must hold before anything moves into it.
    let readiness = admission::ensure(ctx, &state.admission_writes, policy, enclave_ref).await;
    if let AdmissionReadiness::NotInPlace { reason, message } = &readiness {
        tracing::warn!(reason, message, "admission is not in place");
    }
    laps.lap("admission");

    // 3. Assess.
    let assessment = enclave.as_ref().ok().map(|enclave| {
        assess::assess(
            policy,
            enclave,
            &ctx.caches,
            &state.memory,
            jiff::Timestamp::now(),
        )
    });

    // Volumes and the network, each its own step.
    laps.lap("assess");
    let volumes = enclave
        .as_ref()
        .ok()
        .map(|enclave| storage::assess(policy, enclave, &ctx.caches));
    let mut leaks = network::LeakAssessment::default();
    let mut fence = Ok(0);
    let inside = network::namespaces(policy, &ctx.caches, &ctx.admission.operator_namespace);
    record_leaving(state, policy, &inside).await;
    if let Ok(enclave) = &enclave {
        fence = match network::desired(policy, enclave, &inside) {
            Ok(desired) => network::apply(state, policy, desired)
                .await
                .map_err(|e| e.to_string()),
            Err(error) => Err(error.to_string()),
        };
        laps.lap("fence");
        leaks = network::leaks(policy, enclave, &ctx.caches, &inside);
        laps.lap("reachability");
    }
    record_findings(state, &name, volumes.as_ref(), &leaks).await;

    // 4. Status, before any eviction: detection must not wait for the moves.
    let found = status::Found {
        enclave: enclave_ref,
        admission: &readiness,
        assessment: assessment.as_ref(),
        volumes: volumes.as_ref(),
        network: enclave.is_ok().then(|| status::NetworkFound {
            isolation: policy.spec.network.isolation,
            fence: fence.clone(),
            leaks: &leaks,
        }),
        checkpoints: Some(crate::evidence::health::condition(
            &ctx.checkpoints.failures(),
        )),
    };
    let next = status::build(policy, &found, &conditions::now());
    laps.lap("findings");
    if status::changed(policy.status.as_ref(), &next) {
        let api: Api<ResidencyPolicy> = Api::all(ctx.client.clone());
        let patch = json!({"apiVersion": "enclave.dev/v1alpha1", "kind": "ResidencyPolicy", "status": next});
        api.patch_status(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
        tracing::info!(
            matched = next.matched_pods,
            compliant = next.compliant_pods,
            migrating = next.migrating_pods,
            blocked = next.blocked_pods,
            "policy status updated"
        );
        let reference = policy.object_ref(&());
        if let Some(message) = condition_became(policy.status.as_ref(), &next, "Conflicted", "True")
        {
            publish(
                ctx,
                &reference,
                EventType::Warning,
                "ConflictingPolicies",
                "Reconcile",
                message,
            )
            .await;
        }
        if let Some(message) = condition_became(policy.status.as_ref(), &next, "Ready", "False") {
            publish(
                ctx,
                &reference,
                EventType::Warning,
                "NotReady",
                "Reconcile",
                message,
            )
            .await;
        }
    }

    let Some(assessment) = assessment else {
        return Ok(Action::requeue(RESYNC));
    };
    laps.lap("status");
    record_blocked(state, policy, &assessment).await;
    laps.lap("blocked");
    tracing::debug!(laps = %laps, "pass phases");

    // 5. Migrate, only with the enclave's admission in place: a replacement admitted
    // without it could land outside again.
    let (Ok(enclave), AdmissionReadiness::InPlace { engine }) = (&enclave, &readiness) else {
        state.admission_in_place.reset(policy);
        // An engine switch under way, or objects written but not yet loaded by the API
        // server, are probed again soon (the old engine, or the refusal, holds until then).
        let switching = matches!(
            &readiness,
            AdmissionReadiness::NotInPlace { reason, .. }
                if *reason == admission::ENGINE_SWITCHING || *reason == admission::NOT_YET_IN_FORCE
        );
        return Ok(Action::requeue(if switching {
            Duration::from_secs(1)
        } else if assessment.to_evict.is_empty() {
            RESYNC
        } else {
            Duration::from_secs(5)
        }));
    };
    let settling = state.admission_in_place.wait(policy, enclave, engine);
    if !settling.is_zero() && !assessment.to_evict.is_empty() {
        tracing::debug!(
            ?settling,
            "admission just changed: evictions wait until it is in force"
        );
        return Ok(Action::requeue(settling));
    }
    // Come back when a pod a PDB held back may be tried again.
    let retry = assessment
        .retry_in
        .map_or(RESYNC, |w| w.max(Duration::from_millis(200)));
    if assessment.to_evict.is_empty() || policy.spec.enforcement != Enforcement::Enforce {
        return Ok(Action::requeue(retry));
    }
    migrate::run(state, policy, enclave, &assessment)
        .await
        .map(|action| match assessment.retry_in {
            Some(wait) if wait < Duration::from_secs(2) => {
                Action::requeue(wait.max(Duration::from_millis(200)))
            }
            _ => action,
        })
}

use status::AdmissionReadiness;

/// Records the namespaces that left the policy's scope since its last pass: a decision
/// and a Warning Event on the policy each.
async fn record_leaving(state: &Residency, policy: &ResidencyPolicy, inside: &[String]) {
    let ctx = &state.ctx;
    let live: std::collections::BTreeSet<String> = crate::catalog::Catalog::policies(&ctx.caches)
        .iter()
        .filter_map(|p| p.uid())
        .collect();
    state.scope.retain(&live);
    let now: std::collections::BTreeSet<String> = inside.iter().cloned().collect();
    let left = state.scope.observe(
        policy,
        &now,
        &crate::catalog::Catalog::namespaces(&ctx.caches),
        &ctx.admission.operator_namespace,
    );
    let name = policy.name_any();
    for gone in left {
        tracing::info!(namespace = %gone.namespace, reason = gone.reason, "namespace left the policy's scope");
        ctx.sink.record(
            Record::new(
                Kind::NamespaceLeftScope,
                Some(&name),
                Subject::new("Namespace", None, &gone.namespace),
                gone.message.clone(),
            )
            .with("reason", gone.reason),
        );
        let related = k8s_openapi::api::core::v1::ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Namespace".into()),
            name: Some(gone.namespace.clone()),
            ..Default::default()
        };
        publish_related(
            ctx,
            &policy.object_ref(&()),
            Some(related),
            EventType::Warning,
            "NamespaceLeftScope",
            "Scope",
            gone.message,
        )
        .await;
    }
}

/// Records volumes outside the enclave and network leaks when they are first found (not
/// every pass), with an Event on the policy.
async fn record_findings(
    state: &Residency,
    policy: &str,
    volumes: Option<&storage::VolumeAssessment>,
    leaks: &network::LeakAssessment,
) {
    let found = volumes
        .map(|v| v.violations.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|v| (Kind::VolumeOutsideEnclave, v))
        .chain(leaks.violations.iter().map(|v| (Kind::NetworkLeakFound, v)));
    let mut current = HashSet::new();
    let scope = format!("findings/{policy}");
    for (kind, violation) in found {
        let key = format!(
            "{}/{}/{}/{}",
            violation.kind,
            violation.namespace.as_deref().unwrap_or_default(),
            violation.name,
            violation.message
        );
        current.insert(key.clone());
        if !state.memory.newly_blocked(&scope, &key, kind.as_str()) {
            continue;
        }
        state.ctx.sink.record(
            Record::new(
                kind,
                Some(policy),
                Subject::new(
                    &violation.kind,
                    violation.namespace.as_deref(),
                    &violation.name,
                ),
                violation.message.clone(),
            )
            .with("reason", violation.reason.clone()),
        );
        let reference = k8s_openapi::api::core::v1::ObjectReference {
            api_version: Some("enclave.dev/v1alpha1".into()),
            kind: Some("ResidencyPolicy".into()),
            name: Some(policy.to_string()),
            ..Default::default()
        };
        // Named as the related object, so that findings about different objects keep
        // an Event each instead of merging into one series.
        let related = k8s_openapi::api::core::v1::ObjectReference {
            api_version: Some(api_version_of(&violation.kind).into()),
            kind: Some(violation.kind.clone()),
            namespace: violation.namespace.clone(),
            name: Some(violation.name.clone()),
            ..Default::default()
        };
        publish_related(
            &state.ctx,
            &reference,
            Some(related),
            EventType::Warning,
            &violation.reason,
            "Audit",
            format!(
                "{} {}: {}",
                violation.kind, violation.name, violation.message
            ),
        )
        .await;
    }
    state.memory.keep_blocked(&scope, &current);
}

/// The apiVersion of a kind a finding names.
fn api_version_of(kind: &str) -> &'static str {
    match kind {
        "StorageClass" => "storage.k8s.io/v1",
        "NetworkPolicy" => "networking.k8s.io/v1",
        _ => "v1",
    }
}

/// Records pods that became blocked (once per block, not every pass), with an Event.
async fn record_blocked(
    state: &Residency,
    policy_object: &ResidencyPolicy,
    assessment: &assess::Assessment,
) {
    let name = policy_object.name_any();
    let policy = name.as_str();
    let mut current = HashSet::new();
    let mut newly = Vec::new();
    for blocked in &assessment.blocked_pods {
        let uid = blocked.pod.uid().unwrap_or_default();
        current.insert(uid.clone());
        // DisruptionBudget refusals are recorded when they happen, by migrate.
        if blocked.reason == "DisruptionBudget"
            || !state.memory.newly_blocked(policy, &uid, blocked.reason)
        {
            continue;
        }
        let namespace = blocked.pod.namespace();
        state.ctx.sink.record(
            Record::new(
                Kind::PodBlocked,
                Some(policy),
                Subject::new("Pod", namespace.as_deref(), &blocked.pod.name_any()),
                blocked.message.clone(),
            )
            .with("reason", blocked.reason),
        );
        newly.push(blocked);
    }
    state.memory.keep_blocked(policy, &current);
    // Every block is in the decision log and status; Events, a best-effort channel for
    // people, are bounded per pass, so that the first pass over thousands of blocked pods
    // (a new leader's, say) neither floods the API server nor holds the migration.
    let reasons: Vec<&str> = newly.iter().map(|blocked| blocked.reason).collect();
    let (evented, summary) = blocked_events(&reasons);
    futures::stream::iter(&newly[..evented])
        .for_each_concurrent(EVENT_CALLS, |blocked| async move {
            publish(
                &state.ctx,
                &blocked.pod.object_ref(&()),
                EventType::Warning,
                blocked.reason,
                "Migrate",
                blocked.message.clone(),
            )
            .await;
        })
        .await;
    if let Some(note) = summary {
        publish(
            &state.ctx,
            &policy_object.object_ref(&()),
            EventType::Warning,
            "PodsBlocked",
            "Migrate",
            note,
        )
        .await;
    }
}

/// Of the pods newly blocked in a pass (their reasons, in order): how many get an Event of
/// their own, and the note of the one Event on the policy that counts the rest by reason.
fn blocked_events(reasons: &[&str]) -> (usize, Option<String>) {
    let evented = reasons.len().min(MAX_POD_EVENTS_PER_PASS);
    let rest = &reasons[evented..];
    if rest.is_empty() {
        return (evented, None);
    }
    let mut by_reason: BTreeMap<&str, usize> = BTreeMap::new();
    for reason in rest {
        *by_reason.entry(reason).or_default() += 1;
    }
    let counts: Vec<String> = by_reason.iter().map(|(r, n)| format!("{r}: {n}")).collect();
    let note = format!(
        "{} more pods newly blocked ({}) without an Event of their own; status.violations and the decision log name each",
        rest.len(),
        counts.join(", ")
    );
    (evented, Some(note))
}

async fn reconcile(
    guard: Arc<DeserializeGuard<ResidencyPolicy>>,
    state: Arc<Residency>,
) -> Result<Action> {
    let policy = unguard(&guard, &state.ctx).await?;
    // A policy being deleted writes nothing: the garbage collector is deleting the
    // admission objects it owns, and writing them again would race it — objects written
    // for the dying policy are collected later, possibly after a new policy of the same
    // name took them over (its placement then vanished under it, in tests that
    // recreate a policy at once).
    if policy.metadata.deletion_timestamp.is_some() {
        tracing::debug!(policy = %policy.name_any(), "being deleted: nothing to write");
        return Ok(Action::await_change());
    }
    instrumented(CONTROLLER, policy, &state.ctx, enforce(policy, &state)).await
}

/// The admission objects the operator owns as they change: a configuration edited or
/// deleted by hand is repaired at once.
fn admission_changes(
    client: &Client,
    native_served: bool,
) -> futures::stream::BoxStream<'static, native::Touched> {
    futures::stream::select_all([
        native::touched::<MutatingWebhookConfiguration>(client),
        native::touched::<ValidatingWebhookConfiguration>(client),
        native::changes(client, native_served),
    ])
    .boxed()
}

/// Deletes admission objects of policies that no longer exist, whenever policies or
/// admission objects change. Owner references do the same for native objects; this
/// also covers webhook configurations (owned by the installation) and objects left by
/// an operator that was down when a policy was deleted.
async fn sweep(ctx: Arc<Context>) {
    let mut changes = futures::stream::select(
        ctx.caches.policies.changes().boxed(),
        admission_changes(&ctx.client, ctx.admission.native_served)
            .map(|_| ())
            .boxed(),
    )
    .boxed();
    ctx.caches.wait_until_ready().await;
    loop {
        let policies: HashSet<String> = ctx
            .caches
            .policies
            .store
            .state()
            .iter()
            .filter_map(|g| g.meta().name.clone())
            .collect();
        if let Err(error) =
            crate::admission::webhooks::sweep(&ctx.client, |p| policies.contains(p)).await
        {
            tracing::debug!(%error, "could not sweep webhook configurations");
        }
        if ctx.admission.native_served
            && let Err(error) = native::sweep(&ctx.client, |p| policies.contains(p)).await
        {
            tracing::debug!(%error, "could not sweep native admission objects");
        }
        tokio::select! {
            change = changes.next() => if change.is_none() { return },
            () = tokio::time::sleep(RESYNC) => {}
        }
        // Let a burst of changes settle.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Runs the residency controller until `stop`. Any change to pods, nodes, enclaves,
/// namespaces, volumes, owners, the CA bundle or the admission objects re-runs every
/// policy (at most once per 300 ms while changes flow): policies are few, and each run reads only caches.
pub async fn run(ctx: Arc<Context>, term: super::Term) {
    let stop = term.end();
    let policies: Api<DeserializeGuard<ResidencyPolicy>> = Api::all(ctx.client.clone());
    tokio::select! {
        () = ctx.caches.wait_until_ready() => {}
        () = stop.clone() => return,
    }
    let sweeper = tokio::spawn({
        let (ctx, stop) = (ctx.clone(), stop.clone());
        async move {
            tokio::select! {
                () = sweep(ctx) => {}
                () = stop => {}
            }
        }
    });
    let state = Arc::new(Residency {
        ctx: ctx.clone(),
        memory: memory::Memory::default(),
        fence: network::FenceMemory::default(),
        scope: leaving::ScopeMemory::default(),
        admission_in_place: AdmissionClock::default(),
        admission_writes: admission::Writes::default(),
    });
    let caches = &ctx.caches;
    let ca_changes =
        futures::stream::unfold(ctx.admission.ca_bundle.clone(), |mut rx| async move {
            rx.changed().await.ok().map(|()| ((), rx))
        });
    // A touched admission object is written again by the pass it triggers.
    let admission_touched = admission_changes(&ctx.client, ctx.admission.native_served).map({
        let state = state.clone();
        move |(name, annotations, deleted)| {
            let policy = admission::touched_policy(&name, annotations.as_ref());
            state.admission_writes.touched(policy, deleted);
        }
    });
    let triggers = futures::stream::select_all([
        caches.pods.changes().boxed(),
        caches.nodes.changes().boxed(),
        caches.enclaves.changes().boxed(),
        caches.namespaces.changes().boxed(),
        caches.claims.changes().boxed(),
        caches.volumes.changes().boxed(),
        caches.replica_sets.changes().boxed(),
        caches.stateful_sets.changes().boxed(),
        caches.storage_classes.changes().boxed(),
        caches.network_policies.changes().boxed(),
        ca_changes.boxed(),
        admission_touched.boxed(),
        ctx.checkpoints.changes().boxed(),
    ]);
    let controller = Controller::new(policies, watcher::Config::default().any_semantic());
    let graceful = term.graceful_shutdown(controller.store());
    controller
        .reconcile_all_on(super::coalesce(triggers, Duration::from_millis(300)))
        .graceful_shutdown_on(graceful)
        .run(
            term.guard(reconcile),
            |guard, error, state| error_policy(CONTROLLER, guard.as_ref(), error, &state.ctx),
            state,
        )
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "reconcile did not complete");
            }
        })
        .await;
    let _ = sweeper.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocked_pods_get_events_up_to_a_bound_and_the_rest_are_counted_on_the_policy() {
        let few = ["Unmanaged"; 3];
        assert_eq!(blocked_events(&few), (3, None));
        let mut many = vec!["Unmanaged"; 1000];
        many.extend(["VolumeOutsideEnclave"; 20]);
        let (evented, summary) = blocked_events(&many);
        assert_eq!(evented, MAX_POD_EVENTS_PER_PASS);
        let summary = summary.expect("the rest are counted");
        assert!(
            summary.starts_with(&format!(
                "{} more pods newly blocked (Unmanaged: {}, VolumeOutsideEnclave: 20)",
                1020 - MAX_POD_EVENTS_PER_PASS,
                1000 - MAX_POD_EVENTS_PER_PASS
            )),
            "{summary}"
        );
    }
}
