//! Volume moves, I/O: the leader's controller of VolumeMigrations. Each tick it reads
//! the world of every move that is not over into an [`Observed`], asks the pure state
//! machine ([`crate::volume_move::next`]) for the next step, writes the status it
//! returns FIRST, records the step (decision log, Event), and only then takes the
//! step's actions, in order, stopping at the first that fails (the next tick asks for
//! it again: every action is an "ensure"). Reads go to the API server, not the caches:
//! a move decides from what is there now, and moves are few.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::Duration,
};

use jiff::Timestamp;
use k8s_openapi::{
    ByteString,
    api::networking::v1::{
        NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
        NetworkPolicySpec,
    },
    api::{
        apps::v1::{Deployment, ReplicaSet, StatefulSet},
        autoscaling::v2::HorizontalPodAutoscaler,
        core::v1::{
            Affinity, Capabilities, ConfigMap, Container, KeyToPath, NodeAffinity, NodeSelector,
            PersistentVolume, PersistentVolumeClaim, PersistentVolumeClaimSpec,
            PersistentVolumeClaimVolumeSource, Pod, PodSpec, ResourceQuota, Secret,
            SecretVolumeSource, SecurityContext, Volume, VolumeMount, VolumeResourceRequirements,
        },
    },
    apimachinery::pkg::{
        api::resource::Quantity,
        apis::meta::v1::{LabelSelector, ObjectMeta},
        util::intstr::IntOrString,
    },
};
use kube::{
    Api, Resource, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions},
    runtime::events::EventType,
};
use serde_json::json;

use super::{Term, publish};
use crate::{
    context::Context,
    crd::{
        AccessApproval, ApprovalDecision, ClaimCopy, MigrationPhase, VolumeMigration,
        VolumeMigrationStatus,
    },
    decisions::{Kind, Record, Subject},
    names::{MANAGED_BY_LABEL, VOLUME_MIGRATION_LABEL},
    scope::{self, Catalog},
    volume_move::{
        Action, Approval, ClaimTemplateView, ClaimView, ClassView, Credentials, JobView,
        MoveSettings, Observed, OwnerView, Pass, Reclaim, TransferView, VolumePhase, VolumeView,
        destination_claim_name, mover, next,
    },
    volumes::{self, Storage},
};

/// How often moves are looked at.
pub const TICK: Duration = Duration::from_secs(3);

/// Steps taken for one move in one tick, at most: a step whose actions are all
/// status (nothing to wait for) is followed at once by the next.
const STEPS_PER_TICK: usize = 6;

/// The port the receiver listens on.
const MOVER_PORT: u16 = 8873;

/// How long a mover pod may run before the kubelet stops it (a pass that hangs ends
/// in a rollback rather than holding the application down for ever).
const MOVER_DEADLINE_SECONDS: i64 = 6 * 3600;

/// A mover pod not scheduled after this long has failed.
const UNSCHEDULED_LIMIT: Duration = Duration::from_secs(10 * 60);

const PASS_LABEL: &str = "enclave.dev/mover-pass";
const SIDE_LABEL: &str = "enclave.dev/mover-side";

/// The phases during which a move holds a slot of `maxConcurrent`.
fn holds_a_slot(phase: Option<MigrationPhase>) -> bool {
    matches!(
        phase,
        Some(
            MigrationPhase::Copying
                | MigrationPhase::Quiescing
                | MigrationPhase::FinalSync
                | MigrationPhase::Verifying
                | MigrationPhase::Switching
                | MigrationPhase::Restoring
                | MigrationPhase::RollingBack
        )
    )
}

pub async fn run(ctx: Arc<Context>, term: Term) {
    loop {
        if term.ended() {
            return;
        }
        pass(&ctx).await;
        tokio::select! {
            () = tokio::time::sleep(TICK) => {}
            () = term.end() => return,
        }
    }
}

/// What the policies covering a namespace say about moves in it.
struct Covering {
    settings: MoveSettings,
    max_concurrent: usize,
    /// The enclave classes every covering policy allows, in the first one's order.
    classes: Vec<String>,
    /// The enclaves, for approvers and nodes.
    enclaves: Vec<scope::ResolvedEnclave>,
    policy: String,
    /// The lowest `bandwidthLimitMiBPerSecond` of the covering policies.
    bandwidth_limit_mib: Option<u64>,
}

/// The settings of the policies covering `namespace`: the strictest of each.
fn covering(ctx: &Context, namespace: &str) -> Result<Covering, String> {
    let catalog = &ctx.caches;
    let applicable = scope::applicable_to_namespace(catalog, namespace)
        .ok_or_else(|| format!("namespace {namespace} is not known yet"))?;
    if applicable.is_empty() {
        return Err(format!(
            "no ResidencyPolicy covers namespace {namespace}, so there is no enclave to move the data into"
        ));
    }
    let mut settings = MoveSettings::default();
    let mut require_approval = false;
    let mut max_concurrent = usize::MAX;
    let mut bandwidth_limit_mib = None;
    let mut classes: Option<Vec<String>> = None;
    let mut enclaves = Vec::new();
    let mut names = Vec::new();
    for a in &applicable {
        let enclave = a
            .enclave
            .clone()
            .map_err(|e| format!("ResidencyPolicy {}: {e}", a.name()))?;
        let moves = a
            .policy
            .spec
            .migration
            .volume_moves
            .clone()
            .unwrap_or_default();
        require_approval |= moves.require_approval;
        if let Some(limit) = moves.bandwidth_limit_mib_per_second {
            let limit = u64::try_from(limit.max(1)).unwrap_or(1);
            bandwidth_limit_mib = Some(bandwidth_limit_mib.map_or(limit, |l: u64| l.min(limit)));
        }
        max_concurrent = max_concurrent.min(moves.max_concurrent.max(1) as usize);
        settings.min_retention =
            settings
                .min_retention
                .max(jiff::SignedDuration::from_hours(i64::from(
                    moves.min_retention_hours,
                )));
        settings.default_retention =
            jiff::SignedDuration::from_hours(i64::from(moves.default_retention_hours))
                .max(settings.default_retention.min(jiff::SignedDuration::ZERO));
        settings.quiesce_timeout =
            jiff::SignedDuration::from_mins(i64::from(moves.quiesce_timeout_minutes));
        let own = &enclave.enclave.spec.storage.storage_class_names;
        classes = Some(match classes {
            None => own.clone(),
            Some(c) => c.into_iter().filter(|x| own.contains(x)).collect(),
        });
        names.push(a.name());
        enclaves.push(enclave);
    }
    // The first policy's minimum is the floor; a policy without moves set keeps the
    // defaults (24 h minimum) rather than letting another policy's shorter one apply.
    if applicable.len() == 1 {
        let moves = applicable[0]
            .policy
            .spec
            .migration
            .volume_moves
            .clone()
            .unwrap_or_default();
        settings.min_retention =
            jiff::SignedDuration::from_hours(i64::from(moves.min_retention_hours));
    }
    settings.require_approval = require_approval;
    Ok(Covering {
        settings,
        max_concurrent,
        classes: classes.unwrap_or_default(),
        enclaves,
        policy: names.join(","),
        bandwidth_limit_mib,
    })
}

/// One tick over every move.
async fn pass(ctx: &Context) {
    let api: Api<VolumeMigration> = Api::all(ctx.client.clone());
    let mut moves = match api.list(&ListParams::default()).await {
        Ok(list) => list.items,
        Err(error) => {
            tracing::warn!(%error, "could not list VolumeMigrations");
            return;
        }
    };
    create_moves(ctx, &moves).await;
    moves.sort_by_key(|m| m.metadata.creation_timestamp.clone().map(|t| t.0));
    let mut running: BTreeMap<String, usize> = BTreeMap::new();
    let mut owners: BTreeSet<(String, String, String)> = BTreeSet::new();
    for m in &moves {
        let status = m.status.clone().unwrap_or_default();
        if holds_a_slot(status.phase) {
            *running
                .entry(m.namespace().unwrap_or_default())
                .or_default() += 1;
            if let Some(o) = &status.owner {
                owners.insert((
                    m.namespace().unwrap_or_default(),
                    o.kind.clone(),
                    o.name.clone(),
                ));
            }
        }
    }
    for m in moves {
        let status = m.status.clone().unwrap_or_default();
        if status.phase.is_some_and(MigrationPhase::is_terminal) {
            continue;
        }
        let namespace = m.namespace().unwrap_or_default();
        let name = m.name_any();
        let key = format!("volumemigration/{namespace}/{name}");
        let cover = match covering(ctx, &namespace) {
            Ok(c) => c,
            Err(why) => {
                refuse(ctx, &m, &why).await;
                continue;
            }
        };
        // Slots: a move starts copying only while fewer than maxConcurrent run in its
        // namespace's policies, and one owner is moved one claim at a time.
        let waiting = matches!(
            status.phase,
            None | Some(MigrationPhase::Planned | MigrationPhase::AwaitingApproval)
        );
        if waiting {
            let busy = running.get(&namespace).copied().unwrap_or(0);
            let same_owner = status.owner.as_ref().is_some_and(|o| {
                owners.contains(&(namespace.clone(), o.kind.clone(), o.name.clone()))
            });
            if busy >= cover.max_concurrent || same_owner {
                continue_waiting(ctx, &m, busy, same_owner).await;
                continue;
            }
        }
        match drive(ctx, &m, &cover).await {
            Ok(phase) => {
                ctx.succeeded(&key);
                if waiting && holds_a_slot(phase) {
                    *running.entry(namespace.clone()).or_default() += 1;
                    if let Some(o) = status.owner {
                        owners.insert((namespace, o.kind, o.name));
                    }
                }
            }
            Err(error) => {
                let delay = ctx.backoff(&key);
                tracing::warn!(%error, migration = %key, ?delay, "volume move step failed; retried next tick");
            }
        }
    }
}

/// The claims a policy with `volumeMoves.createMoves` wants moved: in its namespaces,
/// bound to a volume outside its enclave, with no VolumeMigration naming them yet.
fn claims_to_move<C: Catalog>(catalog: &C, moves: &[VolumeMigration]) -> Vec<(String, String)> {
    let existing: BTreeSet<(String, String)> = moves
        .iter()
        .map(|m| (m.namespace().unwrap_or_default(), m.spec.claim_name.clone()))
        .collect();
    let namespaces = catalog.namespaces();
    let nodes = catalog.nodes();
    let classes = catalog.storage_classes();
    let default_class = volumes::default_class(&classes);
    let mut wanted = BTreeSet::new();
    for policy in catalog.policies() {
        if !policy
            .spec
            .migration
            .volume_moves
            .as_ref()
            .is_some_and(|v| v.create_moves)
        {
            continue;
        }
        let Ok(enclave) = scope::resolve_enclave(catalog, &policy) else {
            continue;
        };
        let enclave_nodes: Vec<_> = nodes
            .iter()
            .filter(|n| enclave.contains_node(n.labels()))
            .cloned()
            .collect();
        let storage = Storage {
            classes: &enclave.enclave.spec.storage.storage_class_names,
            default_class: default_class.as_deref(),
            enclave_nodes: &enclave_nodes,
        };
        for claim in catalog.claims() {
            let namespace = claim.namespace().unwrap_or_default();
            let covered = namespaces
                .get(&namespace)
                .is_some_and(|labels| scope::covers_namespace(&policy, &namespace, labels));
            let outside = claim
                .spec
                .as_ref()
                .and_then(|s| s.volume_name.as_deref())
                .and_then(|v| catalog.volume(v))
                .is_some_and(|pv| storage.volume_outside(&pv).is_some());
            let key = (namespace, claim.name_any());
            if covered && outside && !existing.contains(&key) {
                wanted.insert(key);
            }
        }
    }
    wanted.into_iter().collect()
}

/// Creates the VolumeMigrations that policies with `createMoves` want.
async fn create_moves(ctx: &Context, moves: &[VolumeMigration]) {
    for (namespace, claim) in claims_to_move(&ctx.caches, moves) {
        let api: Api<VolumeMigration> = Api::namespaced(ctx.client.clone(), &namespace);
        let mut m = VolumeMigration::new(
            &claim,
            crate::crd::VolumeMigrationSpec {
                claim_name: claim.clone(),
                storage_class_name: None,
                retention_hours: None,
            },
        );
        m.metadata.labels = Some(BTreeMap::from([(
            MANAGED_BY_LABEL.to_string(),
            crate::names::FIELD_MANAGER.to_string(),
        )]));
        match api.create(&PostParams::default(), &m).await {
            Ok(_) => {
                tracing::info!(%namespace, %claim, "created a VolumeMigration for a claim outside the enclave")
            }
            // A VolumeMigration of that name moves another claim: a person decides.
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(error) => {
                tracing::warn!(%error, %namespace, %claim, "could not create a VolumeMigration")
            }
        }
    }
}

/// A move that cannot be judged at all (no policy, no enclave): Failed, nothing changed.
async fn refuse(ctx: &Context, m: &VolumeMigration, why: &str) {
    let status = m.status.clone().unwrap_or_default();
    // Only before anything was changed; a running move keeps going on what it has.
    if status.phase.is_some() && status.phase != Some(MigrationPhase::Planned) {
        tracing::warn!(migration = %m.name_any(), why, "volume move cannot read its policy");
        return;
    }
    let mut new = status.clone();
    new.phase = Some(MigrationPhase::Failed);
    new.message = Some(why.to_string());
    new.times.failed = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        Timestamp::now(),
    ));
    if write_status(ctx, m, &new).await.is_ok() {
        record(ctx, m, &new, "").await;
    }
}

async fn continue_waiting(ctx: &Context, m: &VolumeMigration, busy: usize, same_owner: bool) {
    let status = m.status.clone().unwrap_or_default();
    if status.phase == Some(MigrationPhase::AwaitingApproval) {
        return;
    }
    let why = if same_owner {
        "waiting: another claim of the same workload is being moved".to_string()
    } else {
        format!("waiting: {busy} moves already running (the policy's maxConcurrent)")
    };
    if status.message.as_deref() != Some(why.as_str()) {
        let mut new = status;
        new.message = Some(why);
        if new.phase.is_none() {
            new.phase = Some(MigrationPhase::Planned);
        }
        let _ = write_status(ctx, m, &new).await;
    }
}

async fn write_status(
    ctx: &Context,
    m: &VolumeMigration,
    status: &VolumeMigrationStatus,
) -> Result<(), kube::Error> {
    let api: Api<VolumeMigration> =
        Api::namespaced(ctx.client.clone(), &m.namespace().unwrap_or_default());
    // The whole status, replaced: fields the step cleared must go too.
    let mut object = m.clone();
    object.status = Some(status.clone());
    api.replace_status(&m.name_any(), &PostParams::default(), &object)
        .await
        .map(|_| ())
}

/// Steps one move as far as it goes without waiting; returns its phase.
async fn drive(
    ctx: &Context,
    m: &VolumeMigration,
    cover: &Covering,
) -> Result<Option<MigrationPhase>, kube::Error> {
    let api: Api<VolumeMigration> =
        Api::namespaced(ctx.client.clone(), &m.namespace().unwrap_or_default());
    let mut current = m.clone();
    for _ in 0..STEPS_PER_TICK {
        let status = current.status.clone().unwrap_or_default();
        let observed = observe(ctx, &current, cover).await?;
        let step = next(&observed, &status, &cover.settings, Timestamp::now());
        let changed = step.status != status;
        if changed {
            write_status(ctx, &current, &step.status).await?;
            // A step can pass through Done (the application back on the new volume)
            // straight to Erasing when the window is already over: Done is recorded
            // all the same, so the evidence shows the moment the window started.
            if status.times.done.is_none()
                && step.status.times.done.is_some()
                && step.status.phase != Some(MigrationPhase::Done)
            {
                let mut done = step.status.clone();
                done.phase = Some(MigrationPhase::Done);
                done.message = Some("the application runs on the new volume".into());
                record(ctx, &current, &done, &cover.policy).await;
            }
            if step.status.phase != status.phase {
                record(ctx, &current, &step.status, &cover.policy).await;
            }
        }
        for action in &step.actions {
            take(ctx, &current, &step.status, cover, action).await?;
        }
        if step.status.phase.is_some_and(MigrationPhase::is_terminal)
            || (step.actions.is_empty() && !changed)
        {
            return Ok(step.status.phase);
        }
        if !step.actions.is_empty() {
            // Actions change the world; the next tick observes what they did.
            return Ok(step.status.phase);
        }
        current = api.get(&m.name_any()).await?;
    }
    Ok(current.status.and_then(|s| s.phase))
}

/// One decision-log record and one Event for a phase the move entered.
async fn record(ctx: &Context, m: &VolumeMigration, s: &VolumeMigrationStatus, policy: &str) {
    let namespace = m.namespace().unwrap_or_default();
    let name = m.name_any();
    let phase = s.phase.map(MigrationPhase::as_str).unwrap_or("Planned");
    let message = s.message.clone().unwrap_or_default();
    let mut record = Record::new(
        Kind::VolumeMoveStep,
        (!policy.is_empty()).then_some(policy),
        Subject::new("VolumeMigration", Some(&namespace), &name),
        format!(
            "VolumeMigration {namespace}/{name} of claim {}: {phase}: {message}",
            m.spec.claim_name
        ),
    )
    .with("phase", phase)
    .with("claim", m.spec.claim_name.clone());
    let optional = [
        ("sourceVolume", &s.source_volume),
        ("destinationVolume", &s.destination_volume),
        ("destinationClaim", &s.destination_claim),
        ("destinationStorageClass", &s.destination_storage_class),
        ("sourceRootHash", &s.source_root_hash),
        ("destinationRootHash", &s.destination_root_hash),
        ("senderCertificateSha256", &s.sender_certificate_sha256),
        ("receiverCertificateSha256", &s.receiver_certificate_sha256),
        ("approvedBy", &s.approved_by),
        ("rollbackReason", &s.rollback_reason),
    ];
    for (key, value) in optional {
        if let Some(value) = value {
            record = record.with(key, value.clone());
        }
    }
    if let Some(bytes) = s.bytes_total {
        record = record.with("bytesTotal", bytes);
    }
    if let Some(bytes) = s.bytes_done {
        record = record.with("bytesDone", bytes);
    }
    if let Some(files) = s.files_done {
        record = record.with("filesDone", files);
    }
    if let Some(t) = &s.times.erase_after {
        record = record.with("eraseAfter", t.0.to_string());
    }
    if let Some(r) = &s.stateful_set_replacement {
        // The owner created again with its claim template on the enclave's class.
        let names: Vec<&str> = r.templates.iter().map(|t| t.name.as_str()).collect();
        record = record
            .with("statefulSetReplacedUid", r.replaced_uid.clone())
            .with("claimTemplates", names.join(","))
            .with("claimTemplateStorageClass", r.storage_class_name.clone());
        if let Some(why) = &r.refused {
            record = record.with("statefulSetReplacementRefused", why.clone());
        }
    }
    ctx.sink.record(record);
    let warning = matches!(
        s.phase,
        Some(MigrationPhase::RollingBack | MigrationPhase::RolledBack | MigrationPhase::Failed)
    );
    publish(
        ctx,
        &m.object_ref(&()),
        if warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        &format!("Volume{phase}"),
        "MoveVolume",
        message,
    )
    .await;
}

// ---- Observing -----------------------------------------------------------------

fn claim_view(c: &PersistentVolumeClaim) -> ClaimView {
    let spec = c.spec.clone().unwrap_or_default();
    let request = spec
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .map(|q| q.0.clone())
        .unwrap_or_default();
    ClaimView {
        uid: c.uid().unwrap_or_default(),
        volume_name: spec.volume_name.clone().filter(|v| !v.is_empty()),
        bound: c.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound"),
        deleting: c.metadata.deletion_timestamp.is_some(),
        storage_class: volumes::claim_class(c.annotations(), &spec)
            .ok()
            .flatten()
            .map(|(class, _)| class.to_string()),
        request_bytes: quantity_bytes(&request).unwrap_or(0),
        request,
        access_modes: spec.access_modes.clone().unwrap_or_default(),
        block: spec.volume_mode.as_deref() == Some("Block"),
        labels: c.labels().clone(),
    }
}

/// What the namespace's ResourceQuotas leave for one more claim of `class`, in bytes:
/// the least, over every quota without scopes, of `requests.storage` and
/// `<class>.storageclass.storage.k8s.io/requests.storage` hard minus used (used counts 0
/// when the quota controller has not filled it in yet). `None`: no bound. A quota with a
/// scope is left out: claims are not among what scopes select, and being stricter than the
/// API server would stop moves it admits.
pub fn quota_remaining_bytes(quotas: &[ResourceQuota], class: &str) -> Option<u64> {
    let per_class = format!("{class}.storageclass.storage.k8s.io/requests.storage");
    quotas
        .iter()
        .filter(|q| {
            q.spec.as_ref().is_some_and(|s| {
                s.scopes.as_ref().is_none_or(Vec::is_empty) && s.scope_selector.is_none()
            })
        })
        .flat_map(|q| {
            let hard = q
                .spec
                .as_ref()
                .and_then(|s| s.hard.clone())
                .unwrap_or_default();
            let used = q
                .status
                .as_ref()
                .and_then(|s| s.used.clone())
                .unwrap_or_default();
            ["requests.storage", per_class.as_str()]
                .into_iter()
                .filter_map(move |key| {
                    let hard = quantity_bytes(&hard.get(key)?.0)?;
                    let used = used
                        .get(key)
                        .and_then(|u| quantity_bytes(&u.0))
                        .unwrap_or(0);
                    Some(hard.saturating_sub(used))
                })
        })
        .min()
}

/// Bytes of a storage quantity (`10Gi`, `500M`, `1e9`); `None` when it is not one.
pub fn quantity_bytes(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let value: f64 = number.parse().ok()?;
    let factor: f64 = match suffix {
        "" => 1.0,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        s if s.starts_with('e') || s.starts_with('E') => 10f64.powi(s[1..].parse().ok()?),
        _ => return None,
    };
    let bytes = value * factor;
    (bytes.is_finite() && bytes >= 0.0).then(|| bytes.ceil() as u64)
}

fn volume_view(v: &PersistentVolume, storage: &Storage) -> VolumeView {
    let spec = v.spec.clone().unwrap_or_default();
    let phase = match v.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Available") => VolumePhase::Available,
        Some("Bound") => VolumePhase::Bound,
        Some("Released") => VolumePhase::Released,
        Some("Failed") => VolumePhase::Failed,
        _ => VolumePhase::Pending,
    };
    VolumeView {
        name: v.name_any(),
        phase,
        reclaim: spec
            .persistent_volume_reclaim_policy
            .as_deref()
            .and_then(Reclaim::parse)
            .unwrap_or(Reclaim::Delete),
        claim_ref: spec
            .claim_ref
            .as_ref()
            .map(|r| crate::volume_move::ClaimRef {
                namespace: r.namespace.clone().unwrap_or_default(),
                name: r.name.clone().unwrap_or_default(),
                uid: r.uid.clone().filter(|u| !u.is_empty()),
            }),
        capacity_bytes: spec
            .capacity
            .as_ref()
            .and_then(|c| c.get("storage"))
            .and_then(|q| quantity_bytes(&q.0))
            .unwrap_or(0),
        inside: storage.volume_outside_reason(v).is_none(),
    }
}

fn mounts_claim(pod: &Pod, claim: &str) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .is_some_and(|vs| {
            vs.iter().any(|v| {
                v.persistent_volume_claim
                    .as_ref()
                    .is_some_and(|c| c.claim_name == claim)
            })
        })
}

fn pod_ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn finished(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// The Deployment or StatefulSet behind a pod, through its controller reference.
async fn owner_of_pod(
    ctx: &Context,
    ns: &str,
    pod: &Pod,
) -> Result<Option<(String, String)>, kube::Error> {
    let Some(owner) = pod
        .owner_references()
        .iter()
        .find(|o| o.controller == Some(true))
    else {
        return Ok(None);
    };
    match owner.kind.as_str() {
        "StatefulSet" => Ok(Some(("StatefulSet".into(), owner.name.clone()))),
        "ReplicaSet" => {
            let rs: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), ns);
            Ok(rs.get_opt(&owner.name).await?.and_then(|rs| {
                rs.owner_references()
                    .iter()
                    .find(|o| o.controller == Some(true) && o.kind == "Deployment")
                    .map(|o| ("Deployment".to_string(), o.name.clone()))
            }))
        }
        _ => Ok(None),
    }
}

/// A StatefulSet whose claim template names this claim (`<template>-<set>-<ordinal>`).
fn statefulset_of_claim(sets: &[StatefulSet], claim: &str) -> Option<String> {
    sets.iter().find_map(|set| {
        let name = set.name_any();
        let templates = set.spec.as_ref()?.volume_claim_templates.as_ref()?;
        let names = templates.iter().filter_map(|t| t.metadata.name.as_deref());
        crate::volume_move::claim_template(&name, names, claim).map(|_| name.clone())
    })
}

/// A StatefulSet as the move would create it again: its name, labels, annotations,
/// owner references and spec, never its status or identity (UID, resourceVersion,
/// managed fields), nor finalizers (their controllers add them to the new object).
pub fn statefulset_manifest(set: &StatefulSet) -> Option<String> {
    let again = StatefulSet {
        metadata: ObjectMeta {
            name: set.metadata.name.clone(),
            namespace: set.metadata.namespace.clone(),
            labels: set.metadata.labels.clone(),
            annotations: set.metadata.annotations.clone(),
            owner_references: set.metadata.owner_references.clone(),
            ..ObjectMeta::default()
        },
        spec: set.spec.clone(),
        status: None,
    };
    serde_json::to_string(&again).ok()
}

async fn owner_view(
    ctx: &Context,
    ns: &str,
    kind: &str,
    name: &str,
) -> Result<Option<OwnerView>, kube::Error> {
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(ctx.client.clone(), ns);
    let autoscaler = hpas
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .find(|h| h.spec.scale_target_ref.kind == kind && h.spec.scale_target_ref.name == name)
        .map(|h| h.name_any());
    // Replicas as asked (`spec.replicas`, 1 when unset) and Ready (`status`).
    let view = |meta: &ObjectMeta, replicas: Option<i32>, ready: Option<i32>| OwnerView {
        kind: kind.into(),
        name: name.into(),
        replicas: replicas.unwrap_or(1),
        ready_replicas: ready.unwrap_or(0),
        autoscaler: autoscaler.clone(),
        when_scaled_delete: false,
        uid: meta.uid.clone().unwrap_or_default(),
        deleting: meta.deletion_timestamp.is_some(),
        managed_by: meta
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true))
            .map(|o| format!("{}/{}", o.kind, o.name)),
        claim_templates: Vec::new(),
        manifest: None,
    };
    Ok(match kind {
        "Deployment" => Api::<Deployment>::namespaced(ctx.client.clone(), ns)
            .get_opt(name)
            .await?
            .map(|d| {
                view(
                    &d.metadata,
                    d.spec.and_then(|s| s.replicas),
                    d.status.and_then(|s| s.ready_replicas),
                )
            }),
        "StatefulSet" => Api::<StatefulSet>::namespaced(ctx.client.clone(), ns)
            .get_opt(name)
            .await?
            .map(|set| {
                let manifest = statefulset_manifest(&set);
                let spec = set.spec.clone().unwrap_or_default();
                let mut owner = view(
                    &set.metadata,
                    spec.replicas,
                    set.status.as_ref().and_then(|s| s.ready_replicas),
                );
                owner.when_scaled_delete = spec
                    .persistent_volume_claim_retention_policy
                    .as_ref()
                    .and_then(|p| p.when_scaled.as_deref())
                    == Some("Delete");
                owner.claim_templates = spec
                    .volume_claim_templates
                    .iter()
                    .flatten()
                    .map(|t| ClaimTemplateView {
                        name: t.metadata.name.clone().unwrap_or_default(),
                        storage_class: t.spec.as_ref().and_then(|s| s.storage_class_name.clone()),
                    })
                    .collect();
                owner.manifest = manifest;
                owner
            }),
        _ => None,
    })
}

/// The name of a move's credentials Secret.
fn secret_name(m: &VolumeMigration) -> String {
    crate::names::bounded("", &m.name_any(), "-mover-tls", crate::names::MAX_NAME)
}

/// The name the receiver's certificate is for, which the sender checks.
fn server_name(m: &VolumeMigration) -> String {
    format!(
        "receiver.{}.{}.volume-move.enclave.dev",
        crate::names::label_value(&m.name_any()),
        m.namespace().unwrap_or_default()
    )
}

/// The name the sender's certificate is for, which the operator checks when it asks
/// the sender for its progress.
fn sender_name(m: &VolumeMigration) -> String {
    format!(
        "sender.{}.{}.volume-move.enclave.dev",
        crate::names::label_value(&m.name_any()),
        m.namespace().unwrap_or_default()
    )
}

/// The NetworkPolicy that lets the operator's pods reach a move's senders' progress
/// port (and nothing else of them): a fence isolates the namespace's pods.
fn progress_policy_name(m: &VolumeMigration) -> String {
    crate::names::bounded("", &m.name_any(), "-mover-progress", crate::names::MAX_NAME)
}

fn progress_policy(m: &VolumeMigration, operator_namespace: &str) -> NetworkPolicy {
    let label = crate::names::label_value(&m.name_any());
    NetworkPolicy {
        metadata: owned_meta(m, progress_policy_name(m), BTreeMap::new()),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([
                    (VOLUME_MIGRATION_LABEL.to_string(), label),
                    (SIDE_LABEL.to_string(), "sender".to_string()),
                ])),
                ..LabelSelector::default()
            }),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: Some(vec![NetworkPolicyPeer {
                    namespace_selector: Some(LabelSelector {
                        match_labels: Some(BTreeMap::from([(
                            "kubernetes.io/metadata.name".to_string(),
                            operator_namespace.to_string(),
                        )])),
                        ..LabelSelector::default()
                    }),
                    ..NetworkPolicyPeer::default()
                }]),
                ports: Some(vec![NetworkPolicyPort {
                    port: Some(IntOrString::Int(i32::from(mover::progress::PROGRESS_PORT))),
                    protocol: Some("TCP".into()),
                    end_port: None,
                }]),
            }]),
            egress: None,
        }),
    }
}

fn fingerprint(pem: &[u8]) -> Option<String> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    use sha2::{Digest, Sha256};
    let der = CertificateDer::from_pem_slice(pem).ok()?;
    Some(hex::encode(Sha256::digest(der.as_ref())))
}

/// The name of the ConfigMap with a move's certificates (no keys).
fn certificates_name(m: &VolumeMigration) -> String {
    crate::names::bounded("", &m.name_any(), "-mover-certs", crate::names::MAX_NAME)
}

fn credentials_of(certificates: &ConfigMap) -> Option<Credentials> {
    let data = certificates.data.as_ref()?;
    Some(Credentials {
        sender_sha256: fingerprint(data.get("sender.crt")?.as_bytes())?,
        receiver_sha256: fingerprint(data.get("receiver.crt")?.as_bytes())?,
    })
}

fn pass_name(pass: Pass) -> &'static str {
    match pass {
        Pass::First => "first",
        Pass::Final => "final",
        Pass::Verify => "verify",
    }
}

fn pass_of(text: &str) -> Option<Pass> {
    match text {
        "first" => Some(Pass::First),
        "final" => Some(Pass::Final),
        "verify" => Some(Pass::Verify),
        _ => None,
    }
}

/// The kubelet's reasons for a container its node's runtime could not start (containerd:
/// `StartError`; dockershim: `ContainerCannotRun`), exit code 128.
const NOT_STARTED_REASONS: &[&str] = &["StartError", "ContainerCannotRun"];

/// One mover pod's outcome, as the state machine reads a Job's.
fn job_view(pod: &Pod, now: Timestamp) -> JobView {
    let status = pod.status.clone().unwrap_or_default();
    let terminated = status
        .container_statuses
        .iter()
        .flatten()
        .find_map(|c| c.state.as_ref()?.terminated.clone());
    // A pod on its way out (a pass run again, a rollback) is still there: its volume is
    // still mounted and its name still taken, whatever its outcome was.
    if pod.metadata.deletion_timestamp.is_some() && status.phase.as_deref() != Some("Succeeded") {
        return JobView::Running {
            bytes: 0,
            files: 0,
            bytes_per_second: 0,
        };
    }
    if let Some(t) = &terminated
        && t.reason
            .as_deref()
            .is_some_and(|r| NOT_STARTED_REASONS.contains(&r))
    {
        return JobView::NotStarted {
            message: t.message.clone().unwrap_or_default(),
        };
    }
    match status.phase.as_deref() {
        Some("Succeeded") => {
            let message = terminated.and_then(|t| t.message).unwrap_or_default();
            match mover::parse_report(&message) {
                Ok(r) => JobView::Succeeded {
                    bytes: r.bytes,
                    files: r.files,
                    bytes_per_second: r.bytes_per_second,
                    root_hash: r.root_hash,
                    first_difference: r.first_difference,
                },
                Err(e) => JobView::Failed {
                    exit_code: Some(0),
                    message: e.to_string(),
                },
            }
        }
        Some("Failed") => {
            let exit_code = terminated.as_ref().map(|t| t.exit_code);
            let message = terminated
                .and_then(|t| t.message)
                .map(|m| match mover::parse_report(&m) {
                    Ok(r) => {
                        let mut text = r.message;
                        if let Some(d) = r.first_difference {
                            text = format!("{text} (manifests differ at {d})");
                        }
                        text
                    }
                    Err(_) => m,
                })
                .or(status.message.clone())
                .unwrap_or_default();
            JobView::Failed { exit_code, message }
        }
        _ => {
            let unscheduled = status
                .conditions
                .iter()
                .flatten()
                .find(|c| c.type_ == "PodScheduled" && c.status == "False");
            let created = pod.metadata.creation_timestamp.as_ref().map(|t| t.0);
            if let (Some(c), Some(created)) = (unscheduled, created)
                && now.duration_since(created).unsigned_abs() > UNSCHEDULED_LIMIT
            {
                return JobView::Failed {
                    exit_code: None,
                    message: format!(
                        "not scheduled in {} minutes: {}",
                        UNSCHEDULED_LIMIT.as_secs() / 60,
                        c.message.clone().unwrap_or_default()
                    ),
                };
            }
            JobView::Running {
                bytes: 0,
                files: 0,
                bytes_per_second: 0,
            }
        }
    }
}

async fn observe(
    ctx: &Context,
    m: &VolumeMigration,
    cover: &Covering,
) -> Result<Observed, kube::Error> {
    let ns = m.namespace().unwrap_or_default();
    let status = m.status.clone().unwrap_or_default();
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
    let volumes: Api<PersistentVolume> = Api::all(ctx.client.clone());
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);

    let nodes = ctx.caches.nodes();
    let enclave_nodes: Vec<_> = nodes
        .iter()
        .filter(|n| cover.enclaves.iter().all(|e| e.contains_node(n.labels())))
        .cloned()
        .collect();
    let classes = ctx.caches.storage_classes();
    let default_class = volumes::default_class(&classes);
    let storage = Storage {
        classes: &cover.classes,
        default_class: default_class.as_deref(),
        enclave_nodes: &enclave_nodes,
    };

    let claim = claims
        .get_opt(&m.spec.claim_name)
        .await?
        .map(|c| claim_view(&c));
    let source_name = status
        .source_volume
        .clone()
        .or_else(|| claim.as_ref().and_then(|c| c.volume_name.clone()));
    let source_volume = match &source_name {
        Some(n) => volumes.get_opt(n).await?.map(|v| volume_view(&v, &storage)),
        None => None,
    };
    let destination_claim_name = status
        .destination_claim
        .clone()
        .unwrap_or_else(|| destination_claim_name(&m.spec.claim_name));
    let destination_claim = claims
        .get_opt(&destination_claim_name)
        .await?
        .map(|c| claim_view(&c));
    let destination_name = status.destination_volume.clone().or_else(|| {
        destination_claim
            .as_ref()
            .and_then(|c| c.volume_name.clone())
    });
    let destination_volume = match &destination_name {
        Some(n) => volumes.get_opt(n).await?.map(|v| volume_view(&v, &storage)),
        None => None,
    };

    let all_pods = pods.list(&ListParams::default()).await?.items;
    let users: Vec<&Pod> = all_pods
        .iter()
        .filter(|p| !p.labels().contains_key(VOLUME_MIGRATION_LABEL))
        .filter(|p| mounts_claim(p, &m.spec.claim_name) && !finished(p))
        .collect();
    let owner_ref = match &status.owner {
        Some(o) => Some((o.kind.clone(), o.name.clone())),
        None => {
            let mut found = None;
            for pod in &users {
                if let Some(o) = owner_of_pod(ctx, &ns, pod).await? {
                    found = Some(o);
                    break;
                }
            }
            if found.is_none() {
                let sets: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &ns);
                let sets = sets.list(&ListParams::default()).await?.items;
                found = statefulset_of_claim(&sets, &m.spec.claim_name)
                    .map(|n| ("StatefulSet".to_string(), n));
            }
            found
        }
    };
    let owner = match owner_ref {
        Some((kind, name)) => owner_view(ctx, &ns, &kind, &name).await?,
        None => None,
    };

    let destination_class_name = m
        .spec
        .storage_class_name
        .clone()
        .or_else(|| cover.classes.first().cloned());
    let destination_class = destination_class_name.as_ref().and_then(|name| {
        classes
            .iter()
            .find(|c| &c.name_any() == name)
            .map(|c| ClassView {
                name: name.clone(),
                reaches_outside: storage.class_reaches_outside(c, &nodes),
                access_modes: None,
                max_bytes: None,
            })
    });

    let approval = approval_of(ctx, m, cover).await?;
    let quota_remaining_bytes = match &destination_class_name {
        Some(class) => {
            let quotas: Api<ResourceQuota> = Api::namespaced(ctx.client.clone(), &ns);
            quota_remaining_bytes(&quotas.list(&ListParams::default()).await?.items, class)
        }
        None => None,
    };

    // The certificates are read from their ConfigMap: the operator makes and deletes
    // the Secret with the keys but never reads a Secret.
    let certificates: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ns);
    let certificates = certificates.get_opt(&certificates_name(m)).await?;
    let credentials = certificates.as_ref().and_then(credentials_of);
    let move_ca = certificates
        .as_ref()
        .and_then(|c| c.data.as_ref()?.get("ca.crt").cloned());

    let now = Timestamp::now();
    let mut transfers: BTreeMap<Pass, TransferView> = BTreeMap::new();
    for pod in all_pods.iter().filter(|p| {
        p.labels().get(VOLUME_MIGRATION_LABEL) == Some(&crate::names::label_value(&m.name_any()))
    }) {
        let labels = pod.labels();
        let Some(pass) = labels.get(PASS_LABEL).and_then(|p| pass_of(p)) else {
            continue;
        };
        let mut view = job_view(pod, now);
        if let (JobView::Running { .. }, Some(ca)) = (&view, &move_ca)
            && pass != Pass::Verify
            && labels.get(SIDE_LABEL).map(String::as_str) == Some("sender")
            && let Some(report) = progress_of(pod, &sender_name(m), ca).await
        {
            view = JobView::Running {
                bytes: report.bytes,
                files: report.files,
                bytes_per_second: report.bytes_per_second,
            };
        }
        let transfer = transfers.entry(pass).or_default();
        match labels.get(SIDE_LABEL).map(String::as_str) {
            Some("sender") => transfer.sender = Some(view),
            Some("receiver") => transfer.receiver = Some(view),
            _ => {}
        }
    }

    let replacement_check = match (&status.stateful_set_replacement, &owner) {
        (Some(r), Some(o)) if r.replaced_uid == o.uid && !o.deleting => match &r.manifest {
            Some(manifest) => Some(admits_statefulset(ctx, &ns, &o.name, manifest).await?),
            None => None,
        },
        _ => None,
    };

    Ok(Observed {
        namespace: ns,
        generation: m.metadata.generation,
        spec: m.spec.clone(),
        claim,
        source_volume,
        destination_claim,
        destination_volume,
        owner,
        claim_users: users.len() as u32,
        claim_users_ready: users.iter().filter(|p| pod_ready(p)).count() as u32,
        enclave_classes: cover.classes.clone(),
        destination_class,
        quota_remaining_bytes,
        approval,
        credentials,
        transfers,
        replacement_check,
    })
}

/// How long the operator waits for a sender's counters, each tick.
const PROGRESS_TIMEOUT: Duration = Duration::from_millis(1500);

/// A running sender's counters, or nothing (not listening yet, unreachable: the
/// status then shows none, and the pass goes on).
async fn progress_of(pod: &Pod, name: &str, ca: &str) -> Option<mover::Report> {
    let status = pod.status.as_ref()?;
    if status.phase.as_deref() != Some("Running") {
        return None;
    }
    let address = format!(
        "{}:{}",
        host_of(status.pod_ip.as_deref()?),
        mover::progress::PROGRESS_PORT
    );
    match mover::progress::fetch(&address, name, ca.as_bytes(), PROGRESS_TIMEOUT).await {
        Ok(report) => Some(report),
        Err(error) => {
            tracing::debug!(pod = %pod.name_any(), %error, "no progress from the sender");
            None
        }
    }
}

/// Whether the API server admits this StatefulSet, asked with a server-side dry run of
/// its creation while the set it replaces still exists: admission (and validation) run
/// before the name is found taken, so "already exists" means admitted.
async fn admits_statefulset(
    ctx: &Context,
    ns: &str,
    name: &str,
    manifest: &str,
) -> Result<Result<(), String>, kube::Error> {
    let mut set: StatefulSet = match serde_json::from_str(manifest) {
        Ok(set) => set,
        Err(e) => return Ok(Err(format!("the recorded StatefulSet does not read: {e}"))),
    };
    set.metadata.name = Some(name.to_string());
    set.metadata.namespace = Some(ns.to_string());
    let sets: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), ns);
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    match sets.create(&dry_run, &set).await {
        Ok(_) => Ok(Ok(())),
        Err(kube::Error::Api(e)) if e.code == 409 && e.reason == "AlreadyExists" => Ok(Ok(())),
        Err(kube::Error::Api(e)) if matches!(e.code, 400 | 403 | 422) => Ok(Err(e.message)),
        Err(other) => Err(other),
    }
}

/// The first decision on this move (by name and UID) by an approver of every
/// enclave covering it, in creation order: what the API server authenticated (the
/// chart's identity policy checks `spec.approver` at creation), never the spec's say.
async fn approval_of(
    ctx: &Context,
    m: &VolumeMigration,
    cover: &Covering,
) -> Result<Option<Approval>, kube::Error> {
    let api: Api<AccessApproval> = Api::all(ctx.client.clone());
    let mut decisions: Vec<AccessApproval> = api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|a| {
            a.spec.volume_migration.as_ref().is_some_and(|r| {
                Some(&r.namespace) == m.namespace().as_ref()
                    && r.name == m.name_any()
                    && Some(&r.uid) == m.uid().as_ref()
            })
        })
        .collect();
    decisions.sort_by_key(|a| a.metadata.creation_timestamp.clone().map(|t| t.0));
    Ok(decisions.into_iter().find_map(|a| {
        let access = |e: &scope::ResolvedEnclave| e.enclave.spec.access.clone().unwrap_or_default();
        let counted = cover.enclaves.iter().all(|e| {
            access(e)
                .approver(&a.spec.approver, &a.spec.approver_groups)
                .is_some()
        });
        let approved = match a.spec.decision {
            ApprovalDecision::Approve => true,
            ApprovalDecision::Deny => false,
            _ => return None,
        };
        counted.then(|| Approval {
            by: a.spec.approver.clone(),
            at: a
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0)
                .unwrap_or_else(Timestamp::now),
            approved,
        })
    }))
}

// ---- Acting --------------------------------------------------------------------

fn owned_meta(m: &VolumeMigration, name: String, extra: BTreeMap<String, String>) -> ObjectMeta {
    let mut labels = extra;
    labels.insert(
        VOLUME_MIGRATION_LABEL.into(),
        crate::names::label_value(&m.name_any()),
    );
    labels.insert(MANAGED_BY_LABEL.into(), crate::names::FIELD_MANAGER.into());
    ObjectMeta {
        name: Some(name),
        namespace: m.namespace(),
        labels: Some(labels),
        owner_references: m.controller_owner_ref(&()).map(|o| vec![o]),
        ..ObjectMeta::default()
    }
}

/// Claims are never owned by the move: deleting a VolumeMigration must not let the
/// garbage collector take data with it.
fn claim_meta(m: &VolumeMigration, name: &str, labels: BTreeMap<String, String>) -> ObjectMeta {
    let mut meta = owned_meta(m, name.to_string(), labels);
    meta.owner_references = None;
    meta
}

/// A deletion of the object with this UID and no other (one made again under the same
/// name is left alone).
fn only_uid(uid: &str) -> DeleteParams {
    DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some(uid.to_string()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    }
}

fn ignore_conflict(result: Result<(), kube::Error>) -> Result<(), kube::Error> {
    match result {
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        other => other,
    }
}

fn ignore_missing(result: Result<(), kube::Error>) -> Result<(), kube::Error> {
    match result {
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        other => other,
    }
}

async fn take(
    ctx: &Context,
    m: &VolumeMigration,
    status: &VolumeMigrationStatus,
    cover: &Covering,
    action: &Action,
) -> Result<(), kube::Error> {
    let ns = m.namespace().unwrap_or_default();
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
    let volumes: Api<PersistentVolume> = Api::all(ctx.client.clone());
    let apply = PatchParams::default();
    match action {
        Action::IssueCredentials => {
            let (secret, certificates) = credentials(m).map_err(|e| {
                kube::Error::Service(format!("could not make the move's certificates: {e}").into())
            })?;
            let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
            // A Secret left by a step that did not finish holds keys whose certificates
            // are unknown here (the operator reads no Secret): replaced.
            if let Err(kube::Error::Api(e)) = secrets.create(&PostParams::default(), &secret).await
            {
                if e.code != 409 {
                    return Err(kube::Error::Api(e));
                }
                ignore_missing(
                    secrets
                        .delete(&secret_name(m), &DeleteParams::default())
                        .await
                        .map(|_| ()),
                )?;
                secrets.create(&PostParams::default(), &secret).await?;
            }
            let maps: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ns);
            ignore_conflict(
                maps.create(&PostParams::default(), &certificates)
                    .await
                    .map(|_| ()),
            )
        }
        Action::RevokeCredentials => {
            let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
            ignore_missing(
                secrets
                    .delete(&secret_name(m), &DeleteParams::default())
                    .await
                    .map(|_| ()),
            )?;
            let maps: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ns);
            ignore_missing(
                maps.delete(&certificates_name(m), &DeleteParams::default())
                    .await
                    .map(|_| ()),
            )
        }
        Action::SetReclaimPolicy { volume, policy } => volumes
            .patch(
                volume,
                &apply,
                &Patch::Merge(json!({"spec": {"persistentVolumeReclaimPolicy": policy.as_str()}})),
            )
            .await
            .map(|_| ()),
        Action::CreateDestinationClaim {
            name,
            storage_class,
            storage_bytes,
            access_modes,
        } => {
            let claim = PersistentVolumeClaim {
                metadata: claim_meta(m, name, BTreeMap::new()),
                spec: Some(PersistentVolumeClaimSpec {
                    storage_class_name: Some(storage_class.clone()),
                    access_modes: Some(access_modes.clone()),
                    resources: Some(VolumeResourceRequirements {
                        requests: Some(BTreeMap::from([(
                            "storage".to_string(),
                            Quantity(storage_bytes.to_string()),
                        )])),
                        ..VolumeResourceRequirements::default()
                    }),
                    ..PersistentVolumeClaimSpec::default()
                }),
                status: None,
            };
            ignore_conflict(
                claims
                    .create(&PostParams::default(), &claim)
                    .await
                    .map(|_| ()),
            )
        }
        Action::StartTransfer {
            pass,
            source_read_only,
        } => start_transfer(ctx, m, status, cover, *pass, *source_read_only).await,
        Action::DeleteTransfers => {
            let selector = format!(
                "{VOLUME_MIGRATION_LABEL}={}",
                crate::names::label_value(&m.name_any())
            );
            delete_pods(ctx, &ns, &selector, &DeleteParams::default()).await?;
            let policies: Api<NetworkPolicy> = Api::namespaced(ctx.client.clone(), &ns);
            ignore_missing(
                policies
                    .delete(&progress_policy_name(m), &DeleteParams::default())
                    .await
                    .map(|_| ()),
            )
        }
        Action::RestartPass { pass } => {
            let selector = format!(
                "{VOLUME_MIGRATION_LABEL}={},{PASS_LABEL}={}",
                crate::names::label_value(&m.name_any()),
                pass_name(*pass)
            );
            // One second to stop: the receiver only waits for a sender that will not come.
            let quickly = DeleteParams {
                grace_period_seconds: Some(1),
                ..DeleteParams::default()
            };
            delete_pods(ctx, &ns, &selector, &quickly).await
        }
        Action::ScaleOwner { owner, replicas } => {
            let patch = Patch::Merge(json!({"spec": {"replicas": replicas}}));
            match owner.kind.as_str() {
                "Deployment" => Api::<Deployment>::namespaced(ctx.client.clone(), &ns)
                    .patch_scale(&owner.name, &apply, &patch)
                    .await
                    .map(|_| ()),
                "StatefulSet" => Api::<StatefulSet>::namespaced(ctx.client.clone(), &ns)
                    .patch_scale(&owner.name, &apply, &patch)
                    .await
                    .map(|_| ()),
                other => Err(kube::Error::Service(
                    format!("cannot scale a {other}").into(),
                )),
            }
        }
        Action::DeleteClaim { name, uid } => {
            ignore_missing(claims.delete(name, &only_uid(uid)).await.map(|_| ()))
        }
        Action::BindVolume {
            volume,
            namespace,
            claim,
        } => volumes
            .patch(
                volume,
                &apply,
                &Patch::Merge(json!({"spec": {"claimRef": {
                    "kind": "PersistentVolumeClaim",
                    "apiVersion": "v1",
                    "namespace": namespace,
                    "name": claim,
                    "uid": null,
                    "resourceVersion": null,
                }}})),
            )
            .await
            .map(|_| ()),
        Action::CreateClaim {
            name,
            volume,
            copy,
            storage_class,
        } => {
            let claim = recreated_claim(m, name, volume, copy, storage_class.clone());
            ignore_conflict(
                claims
                    .create(&PostParams::default(), &claim)
                    .await
                    .map(|_| ()),
            )
        }
        Action::DeleteStatefulSet { .. } | Action::CreateStatefulSet { .. } => {
            replace_statefulset(ctx, &ns, action).await
        }
        Action::DeleteVolume { volume } => {
            // Through the reclaim path: with Delete on a Released volume the volume
            // controller has the provisioner delete the storage, then the object.
            volumes
                .patch(
                    volume,
                    &apply,
                    &Patch::Merge(json!({"spec": {"persistentVolumeReclaimPolicy": "Delete"}})),
                )
                .await
                .map(|_| ())
        }
    }
}

/// Deletes the StatefulSet of this UID with its pods and claims orphaned, or creates
/// it again from the manifest the status holds.
/// Deletes the pods of `namespace` that `selector` selects and that are not being
/// deleted already.
async fn delete_pods(
    ctx: &Context,
    namespace: &str,
    selector: &str,
    params: &DeleteParams,
) -> Result<(), kube::Error> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    for pod in pods
        .list(&ListParams::default().labels(selector))
        .await?
        .items
    {
        if pod.metadata.deletion_timestamp.is_none() {
            ignore_missing(pods.delete(&pod.name_any(), params).await.map(|_| ()))?;
        }
    }
    Ok(())
}

async fn replace_statefulset(ctx: &Context, ns: &str, action: &Action) -> Result<(), kube::Error> {
    let sets: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), ns);
    match action {
        Action::DeleteStatefulSet { name, uid } => {
            let orphaning = DeleteParams {
                propagation_policy: Some(kube::api::PropagationPolicy::Orphan),
                ..only_uid(uid)
            };
            ignore_missing(sets.delete(name, &orphaning).await.map(|_| ()))
        }
        Action::CreateStatefulSet { name, manifest } => {
            let mut set: StatefulSet = serde_json::from_str(manifest).map_err(|e| {
                kube::Error::Service(
                    format!("status.statefulSetReplacement.manifest does not read: {e}").into(),
                )
            })?;
            // The record names the set it replaces; nothing else is created from it.
            set.metadata.name = Some(name.clone());
            set.metadata.namespace = Some(ns.to_string());
            ignore_conflict(sets.create(&PostParams::default(), &set).await.map(|_| ()))
        }
        _ => Ok(()),
    }
}

fn recreated_claim(
    m: &VolumeMigration,
    name: &str,
    volume: &str,
    copy: &ClaimCopy,
    storage_class: Option<String>,
) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: claim_meta(m, name, copy.labels.clone()),
        spec: Some(PersistentVolumeClaimSpec {
            storage_class_name: storage_class,
            access_modes: Some(copy.access_modes.clone()),
            volume_name: Some(volume.to_string()),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    Quantity(copy.storage.clone()),
                )])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        status: None,
    }
}

/// A CA made for this move, a server certificate for the receiver and a client
/// certificate for the sender, signed by it; the CA's key is dropped here, so no third
/// certificate can ever be made. The Secret holds what the movers mount; the ConfigMap
/// the certificates alone, for the status and the record.
fn credentials(m: &VolumeMigration) -> Result<(Secret, ConfigMap), rcgen::Error> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let now = time::OffsetDateTime::now_utc();
    let valid = |p: &mut CertificateParams| {
        p.not_before = now - time::Duration::minutes(5);
        p.not_after = now + time::Duration::days(14);
    };
    let mut ca = CertificateParams::default();
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    ca.distinguished_name
        .push(DnType::CommonName, format!("volume move {}", m.name_any()));
    valid(&mut ca);
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);

    let mut receiver = CertificateParams::new(vec![server_name(m)])?;
    receiver.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    valid(&mut receiver);
    let receiver_key = KeyPair::generate()?;
    let receiver_cert = receiver.signed_by(&receiver_key, &issuer)?;

    // The sender's certificate also serves its progress counters to the operator.
    let mut sender = CertificateParams::new(vec![sender_name(m)])?;
    sender
        .distinguished_name
        .push(DnType::CommonName, format!("sender of {}", m.name_any()));
    sender.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ClientAuth,
        ExtendedKeyUsagePurpose::ServerAuth,
    ];
    valid(&mut sender);
    let sender_key = KeyPair::generate()?;
    let sender_cert = sender.signed_by(&sender_key, &issuer)?;

    let data = BTreeMap::from([
        ("ca.crt".to_string(), ByteString(ca_cert.pem().into_bytes())),
        (
            "receiver.crt".to_string(),
            ByteString(receiver_cert.pem().into_bytes()),
        ),
        (
            "receiver.key".to_string(),
            ByteString(receiver_key.serialize_pem().into_bytes()),
        ),
        (
            "sender.crt".to_string(),
            ByteString(sender_cert.pem().into_bytes()),
        ),
        (
            "sender.key".to_string(),
            ByteString(sender_key.serialize_pem().into_bytes()),
        ),
    ]);
    let public = ["ca.crt", "receiver.crt", "sender.crt"]
        .iter()
        .filter_map(|k| {
            let text = String::from_utf8(data.get(*k)?.0.clone()).ok()?;
            Some((k.to_string(), text))
        })
        .collect();
    Ok((
        Secret {
            metadata: owned_meta(m, secret_name(m), BTreeMap::new()),
            data: Some(data),
            type_: Some("Opaque".into()),
            ..Secret::default()
        },
        ConfigMap {
            metadata: owned_meta(m, certificates_name(m), BTreeMap::new()),
            data: Some(public),
            ..ConfigMap::default()
        },
    ))
}

fn mover_pod_name(m: &VolumeMigration, pass: Pass, side: &str) -> String {
    crate::names::bounded(
        "",
        &m.name_any(),
        &format!("-{}-{side}", pass_name(pass)),
        63,
    )
}

#[allow(clippy::too_many_arguments)]
fn mover_pod(
    m: &VolumeMigration,
    image: &str,
    pass: Pass,
    side: &str,
    claim: &str,
    read_only: bool,
    args: Vec<String>,
    capabilities: &[&str],
    affinity: Option<Affinity>,
) -> Pod {
    let labels = BTreeMap::from([
        (PASS_LABEL.to_string(), pass_name(pass).to_string()),
        (SIDE_LABEL.to_string(), side.to_string()),
    ]);
    let items = vec![
        KeyToPath {
            key: "ca.crt".into(),
            path: "ca.crt".into(),
            mode: None,
        },
        KeyToPath {
            key: format!("{side}.crt"),
            path: "tls.crt".into(),
            mode: None,
        },
        KeyToPath {
            key: format!("{side}.key"),
            path: "tls.key".into(),
            mode: None,
        },
    ];
    Pod {
        metadata: owned_meta(m, mover_pod_name(m, pass, side), labels),
        spec: Some(PodSpec {
            restart_policy: Some("Never".into()),
            active_deadline_seconds: Some(MOVER_DEADLINE_SECONDS),
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            affinity,
            containers: vec![Container {
                name: "mover".into(),
                image: Some(image.to_string()),
                image_pull_policy: Some("IfNotPresent".into()),
                args: Some(args),
                termination_message_policy: Some("File".into()),
                volume_mounts: Some(vec![
                    VolumeMount {
                        name: "data".into(),
                        mount_path: "/data".into(),
                        read_only: Some(read_only),
                        ..VolumeMount::default()
                    },
                    VolumeMount {
                        name: "credentials".into(),
                        mount_path: "/credentials".into(),
                        read_only: Some(true),
                        ..VolumeMount::default()
                    },
                    VolumeMount {
                        name: "tmp".into(),
                        mount_path: "/tmp".into(),
                        ..VolumeMount::default()
                    },
                ]),
                security_context: Some(SecurityContext {
                    run_as_user: Some(0),
                    run_as_group: Some(0),
                    run_as_non_root: Some(false),
                    allow_privilege_escalation: Some(false),
                    read_only_root_filesystem: Some(true),
                    capabilities: Some(Capabilities {
                        drop: Some(vec!["ALL".into()]),
                        add: Some(capabilities.iter().map(|c| c.to_string()).collect()),
                    }),
                    seccomp_profile: Some(k8s_openapi::api::core::v1::SeccompProfile {
                        type_: "RuntimeDefault".into(),
                        localhost_profile: None,
                    }),
                    ..SecurityContext::default()
                }),
                ..Container::default()
            }],
            volumes: Some(vec![
                Volume {
                    name: "data".into(),
                    persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                        claim_name: claim.to_string(),
                        read_only: Some(read_only),
                    }),
                    ..Volume::default()
                },
                Volume {
                    name: "credentials".into(),
                    secret: Some(SecretVolumeSource {
                        secret_name: Some(secret_name(m)),
                        items: Some(items),
                        default_mode: Some(0o400),
                        optional: Some(false),
                    }),
                    ..Volume::default()
                },
                Volume {
                    name: "tmp".into(),
                    empty_dir: Some(Default::default()),
                    ..Volume::default()
                },
            ]),
            ..PodSpec::default()
        }),
        status: None,
    }
}

/// A pod IP as the host of `host:port` (IPv6 in brackets).
fn host_of(address: &str) -> String {
    if address.contains(':') {
        format!("[{address}]")
    } else {
        address.to_string()
    }
}

/// Both sides of a pass: the receiver first (in the enclave, on the destination
/// claim), then, once the receiver has an address, the sender (next to the source
/// volume, which its node affinity decides).
async fn start_transfer(
    ctx: &Context,
    m: &VolumeMigration,
    status: &VolumeMigrationStatus,
    cover: &Covering,
    pass: Pass,
    source_read_only: bool,
) -> Result<(), kube::Error> {
    let Some(image) = ctx.mover_image.clone() else {
        return Err(kube::Error::Service(
            "the operator has no mover image (--mover-image)".into(),
        ));
    };
    let ns = m.namespace().unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let destination = status
        .destination_claim
        .clone()
        .unwrap_or_else(|| destination_claim_name(&m.spec.claim_name));
    let common = |role: &str| {
        vec![
            "mover".to_string(),
            role.to_string(),
            "--pass".into(),
            pass_name(pass).into(),
            "--credentials".into(),
            "/credentials".into(),
            "--data".into(),
            "/data".into(),
        ]
    };
    let receiver_name = mover_pod_name(m, pass, "receiver");
    let receiver = match pods.get_opt(&receiver_name).await? {
        Some(p) => p,
        None => {
            let mut args = common("receive");
            args.extend(["--listen".into(), format!("0.0.0.0:{MOVER_PORT}")]);
            // Every enclave's sites at once: the destination volume is provisioned
            // where the receiver is scheduled (WaitForFirstConsumer).
            let terms = cover
                .enclaves
                .first()
                .map(|e| e.site_terms.clone())
                .unwrap_or_default();
            let affinity = Affinity {
                node_affinity: Some(NodeAffinity {
                    required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                        node_selector_terms: terms,
                    }),
                    ..NodeAffinity::default()
                }),
                ..Affinity::default()
            };
            let pod = mover_pod(
                m,
                &image,
                pass,
                "receiver",
                &destination,
                pass == Pass::Verify,
                args,
                mover::RECEIVER_CAPABILITIES,
                Some(affinity),
            );
            match pods.create(&PostParams::default(), &pod).await {
                Ok(p) => p,
                Err(kube::Error::Api(e)) if e.code == 409 => pods.get(&receiver_name).await?,
                Err(e) => return Err(e),
            }
        }
    };
    // A receiver on its way out (its pass is run again) is waited for, not connected to.
    if receiver.metadata.deletion_timestamp.is_some() {
        return Ok(());
    }
    let Some(address) = receiver.status.as_ref().and_then(|s| s.pod_ip.clone()) else {
        // The sender is made on a later tick, when the receiver has an address.
        return Ok(());
    };
    let sender_pod = mover_pod_name(m, pass, "sender");
    if pods.get_opt(&sender_pod).await?.is_some() {
        return Ok(());
    }
    let mut args = common("send");
    args.extend([
        "--connect".into(),
        format!("{}:{MOVER_PORT}", host_of(&address)),
        "--server-name".into(),
        server_name(m),
    ]);
    if pass != Pass::Verify {
        let policies: Api<NetworkPolicy> = Api::namespaced(ctx.client.clone(), &ns);
        let policy = progress_policy(m, &ctx.admission.operator_namespace);
        ignore_conflict(
            policies
                .create(&PostParams::default(), &policy)
                .await
                .map(|_| ()),
        )?;
        args.extend([
            "--progress-listen".into(),
            format!("0.0.0.0:{}", mover::progress::PROGRESS_PORT),
        ]);
        if let Some(mib) = cover.bandwidth_limit_mib {
            args.extend(["--bwlimit-kib".into(), (mib * 1024).to_string()]);
        }
    }
    let pod = mover_pod(
        m,
        &image,
        pass,
        "sender",
        &m.spec.claim_name,
        source_read_only || pass == Pass::Verify,
        args,
        mover::SENDER_CAPABILITIES,
        None,
    );
    ignore_conflict(pods.create(&PostParams::default(), &pod).await.map(|_| ()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A VolumeMigration of namespace `shop`.
    fn a_move(name: &str, claim: &str) -> VolumeMigration {
        let mut m = VolumeMigration::new(
            name,
            crate::crd::VolumeMigrationSpec {
                claim_name: claim.into(),
                storage_class_name: None,
                retention_hours: None,
            },
        );
        m.metadata.namespace = Some("shop".into());
        m
    }

    const CATALOG: &str = r#"
enclave:
  apiVersion: enclave.dev/v1alpha1
  kind: DataEnclave
  metadata: {name: eu}
  spec:
    jurisdiction: EU
    sites:
      - name: dublin
        nodeSelector: {matchLabels: {site: dublin}}
    storage: {storageClassNames: [eu-dublin-ssd]}
policies:
  - apiVersion: enclave.dev/v1alpha1
    kind: ResidencyPolicy
    metadata: {name: moves}
    spec:
      enclave: eu
      match: {namespaceSelector: {matchLabels: {scope: moves}}}
      migration: {volumeMoves: {createMoves: CREATE}}
namespaces:
  shop: {scope: moves}
  public: {}
nodes:
  dublin-a: {site: dublin}
  virginia-a: {site: virginia}
claims:
  - metadata: {name: outside, namespace: shop}
    spec: {volumeName: pv-us, storageClassName: us-east-ssd}
  - metadata: {name: moved, namespace: shop}
    spec: {volumeName: pv-us-2, storageClassName: us-east-ssd}
  - metadata: {name: inside, namespace: shop}
    spec: {volumeName: pv-eu, storageClassName: eu-dublin-ssd}
  - metadata: {name: elsewhere, namespace: public}
    spec: {volumeName: pv-us-3, storageClassName: us-east-ssd}
volumes:
  - metadata: {name: pv-us}
    spec: {storageClassName: us-east-ssd}
  - metadata: {name: pv-us-2}
    spec: {storageClassName: us-east-ssd}
  - metadata: {name: pv-us-3}
    spec: {storageClassName: us-east-ssd}
  - metadata: {name: pv-eu}
    spec: {storageClassName: eu-dublin-ssd}
"#;

    /// With `createMoves`, a move per claim of the policy's namespaces bound outside
    /// the enclave, none for a claim inside, outside the scope, or already moving
    /// (or moved, or rolled back: the VolumeMigration stays until a person deletes it).
    #[test]
    fn the_operator_creates_moves_only_where_a_policy_asks() {
        let catalog = crate::catalog::StaticCatalog::from_yaml(&CATALOG.replace("CREATE", "true"))
            .expect("catalog");
        let existing = a_move("moved", "moved");
        assert_eq!(
            claims_to_move(&catalog, &[existing]),
            [("shop".to_string(), "outside".to_string())]
        );
        let off = crate::catalog::StaticCatalog::from_yaml(&CATALOG.replace("CREATE", "false"))
            .expect("catalog");
        assert!(claims_to_move(&off, &[]).is_empty(), "createMoves off");
    }

    /// The least of what every unscoped quota leaves, in total and for the class;
    /// another class's bound and a scoped quota do not count.
    #[test]
    fn the_quota_left_for_the_destination_is_the_least_of_hard_minus_used() {
        let quota = |hard: &[(&str, &str)], used: &[(&str, &str)], scoped: bool| {
            let map = |pairs: &[(&str, &str)]| {
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
                    .collect::<BTreeMap<_, _>>()
            };
            ResourceQuota {
                spec: Some(k8s_openapi::api::core::v1::ResourceQuotaSpec {
                    hard: Some(map(hard)),
                    scopes: scoped.then(|| vec!["Terminating".to_string()]),
                    ..Default::default()
                }),
                status: Some(k8s_openapi::api::core::v1::ResourceQuotaStatus {
                    used: Some(map(used)),
                    ..Default::default()
                }),
                ..Default::default()
            }
        };
        let eu = "eu-dublin-ssd.storageclass.storage.k8s.io/requests.storage";
        let us = "us-east-ssd.storageclass.storage.k8s.io/requests.storage";
        assert_eq!(quota_remaining_bytes(&[], "eu-dublin-ssd"), None);
        let quotas = [
            quota(
                &[("requests.storage", "10Gi")],
                &[("requests.storage", "4Gi")],
                false,
            ),
            quota(&[(eu, "5Gi"), (us, "1Gi")], &[(eu, "2Gi")], false),
            quota(&[("requests.storage", "1Gi")], &[], true),
            quota(&[("pods", "10")], &[], false),
        ];
        assert_eq!(
            quota_remaining_bytes(&quotas, "eu-dublin-ssd"),
            Some(3 << 30)
        );
        assert_eq!(
            quota_remaining_bytes(&quotas[..1], "eu-dublin-ssd"),
            Some(6 << 30)
        );
        // Used not filled in yet: the whole hard bound; used above hard: nothing left.
        let fresh = [quota(&[(eu, "5Gi")], &[], false)];
        assert_eq!(
            quota_remaining_bytes(&fresh, "eu-dublin-ssd"),
            Some(5 << 30)
        );
        let over = [quota(&[(eu, "1Gi")], &[(eu, "2Gi")], false)];
        assert_eq!(quota_remaining_bytes(&over, "eu-dublin-ssd"), Some(0));
        assert_eq!(quota_remaining_bytes(&quotas[2..], "eu-dublin-ssd"), None);
    }

    #[test]
    fn quantities_read_as_bytes() {
        assert_eq!(quantity_bytes("1Gi"), Some(1 << 30));
        assert_eq!(quantity_bytes("500M"), Some(500_000_000));
        assert_eq!(quantity_bytes("1e3"), Some(1000));
        assert_eq!(quantity_bytes("1.5Ki"), Some(1536));
        assert_eq!(quantity_bytes("12"), Some(12));
        assert_eq!(quantity_bytes("1Xi"), None);
        assert_eq!(quantity_bytes(""), None);
    }

    #[test]
    fn a_statefulset_is_found_by_its_claim_template() {
        let set: StatefulSet = serde_json::from_value(json!({
            "metadata": {"name": "db"},
            "spec": {"selector": {}, "serviceName": "db", "template": {},
                     "volumeClaimTemplates": [{"metadata": {"name": "data"}}]}
        }))
        .expect("a StatefulSet");
        let sets = [set];
        assert_eq!(
            statefulset_of_claim(&sets, "data-db-0").as_deref(),
            Some("db")
        );
        assert_eq!(
            statefulset_of_claim(&sets, "data-db-12").as_deref(),
            Some("db")
        );
        assert_eq!(statefulset_of_claim(&sets, "data-db-x"), None);
        assert_eq!(statefulset_of_claim(&sets, "data-db-"), None);
        assert_eq!(statefulset_of_claim(&sets, "logs-db-0"), None);
    }

    /// The set made again is the user's object without its identity and status: what
    /// the API server would refuse (a UID, a resourceVersion) or what is not the
    /// user's to keep (managed fields, finalizers, status) is left out.
    #[test]
    fn a_statefulset_is_recorded_as_the_user_made_it_without_identity_or_status() {
        let set: StatefulSet = serde_json::from_value(json!({
            "metadata": {
                "name": "db", "namespace": "shop", "uid": "u-1", "resourceVersion": "42",
                "generation": 3, "creationTimestamp": "2026-12-01T00:00:00Z",
                "labels": {"app": "db"}, "annotations": {"team": "payments"},
                "finalizers": ["example.com/hold"],
                "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "x", "uid": "u-2"}],
                "managedFields": [{"manager": "kubectl"}],
            },
            "spec": {"replicas": 0, "selector": {}, "serviceName": "db", "template": {},
                     "volumeClaimTemplates": [{"metadata": {"name": "data"},
                                               "spec": {"storageClassName": "us-east-ssd"}}]},
            "status": {"replicas": 2, "readyReplicas": 2},
        }))
        .expect("a StatefulSet");
        let manifest: serde_json::Value =
            serde_json::from_str(&statefulset_manifest(&set).expect("serializes")).expect("JSON");
        let meta = &manifest["metadata"];
        for gone in [
            "uid",
            "resourceVersion",
            "generation",
            "creationTimestamp",
            "finalizers",
            "managedFields",
        ] {
            assert!(meta.get(gone).is_none(), "{gone}: {meta}");
        }
        assert!(manifest.get("status").is_none());
        assert_eq!(meta["labels"]["app"], "db");
        assert_eq!(meta["annotations"]["team"], "payments");
        assert_eq!(meta["ownerReferences"][0]["name"], "x");
        assert_eq!(manifest["spec"]["serviceName"], "db");
        assert_eq!(
            manifest["spec"]["volumeClaimTemplates"][0]["spec"]["storageClassName"],
            "us-east-ssd"
        );
    }

    #[test]
    fn the_credentials_are_three_certificates_and_no_ca_key_and_the_certificates_are_public() {
        let m = a_move("move-data", "data");
        let (secret, certificates) = credentials(&m).expect("certificates");
        let data = secret.data.as_ref().expect("data");
        let keys: Vec<&str> = data.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "ca.crt",
                "receiver.crt",
                "receiver.key",
                "sender.crt",
                "sender.key"
            ]
        );
        let public = certificates.data.as_ref().expect("data");
        let keys: Vec<&str> = public.keys().map(String::as_str).collect();
        assert_eq!(keys, ["ca.crt", "receiver.crt", "sender.crt"], "no key");
        let seen = credentials_of(&certificates).expect("fingerprints");
        assert_ne!(seen.sender_sha256, seen.receiver_sha256);
        assert_eq!(seen.sender_sha256.len(), 64);
        // Made again, they differ: credentials for this move alone.
        let again = credentials_of(&credentials(&m).expect("again").1).expect("again");
        assert_ne!(again, seen);
    }

    /// The operator reads a sender's counters with what the move's ConfigMap holds (its
    /// CA) and the sender's name; the receiver's certificate, served in the sender's
    /// place, is refused, as is another move's CA.
    #[tokio::test]
    async fn the_operator_reads_a_senders_counters_only_from_that_sender() {
        let m = a_move("move-data", "data");
        let (secret, certificates) = credentials(&m).expect("certificates");
        let data = secret.data.expect("data");
        let ca = certificates.data.expect("data")["ca.crt"].clone();
        let serve = |side: &str| {
            let dir = tempfile::tempdir().expect("dir");
            for (file, key) in [
                ("ca.crt", "ca.crt".to_string()),
                ("tls.crt", format!("{side}.crt")),
                ("tls.key", format!("{side}.key")),
            ] {
                std::fs::write(dir.path().join(file), &data[&key].0).expect("write");
            }
            let config = mover::progress_server_config(dir.path()).expect("config");
            async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind");
                let address = listener.local_addr().expect("address").to_string();
                let counters = Arc::new(mover::progress::Counters::default());
                counters.observe("  1,048,576  50%  1.00MB/s  0:00:01 (xfr#3, to-chk=3/6)");
                tokio::spawn(mover::progress::serve(listener, config, counters));
                (dir, address)
            }
        };
        let timeout = Duration::from_secs(5);
        let (_sender_dir, sender) = serve("sender").await;
        let report = mover::progress::fetch(&sender, &sender_name(&m), ca.as_bytes(), timeout)
            .await
            .expect("the sender's counters");
        assert_eq!((report.bytes, report.files), (1 << 20, 3));

        let (_receiver_dir, receiver) = serve("receiver").await;
        let refused =
            mover::progress::fetch(&receiver, &sender_name(&m), ca.as_bytes(), timeout).await;
        assert!(
            refused.is_err(),
            "the receiver answered as the sender: {refused:?}"
        );
        let other = credentials(&m).expect("another").1.data.expect("data")["ca.crt"].clone();
        let refused =
            mover::progress::fetch(&sender, &sender_name(&m), other.as_bytes(), timeout).await;
        assert!(
            refused.is_err(),
            "another move's CA was trusted: {refused:?}"
        );
    }

    /// A container the runtime never started is told apart from a mover that failed,
    /// and a pod on its way out counts as still there.
    #[test]
    fn a_mover_the_node_never_started_is_not_a_failed_mover() {
        let pod = |reason: &str, exit_code: i32, deleting: bool| -> Pod {
            let mut pod: Pod = serde_json::from_value(json!({
                "metadata": {"name": "m-first-sender", "creationTimestamp": "2026-12-07T10:00:00Z"},
                "status": {"phase": "Failed", "containerStatuses": [{
                    "name": "mover", "image": "i", "imageID": "", "ready": false,
                    "restartCount": 0,
                    "state": {"terminated": {"exitCode": exit_code, "reason": reason,
                        "message": "failed to create containerd task: OCI runtime create failed"}}
                }]}
            }))
            .expect("pod");
            if deleting {
                pod.metadata.deletion_timestamp = Some(
                    k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Timestamp::now()),
                );
            }
            pod
        };
        let now = Timestamp::now();
        assert!(matches!(
            job_view(&pod("StartError", 128, false), now),
            JobView::NotStarted { message } if message.contains("OCI runtime create failed")
        ));
        assert!(matches!(
            job_view(&pod("ContainerCannotRun", 128, false), now),
            JobView::NotStarted { .. }
        ));
        assert!(matches!(
            job_view(&pod("Error", 12, false), now),
            JobView::Failed {
                exit_code: Some(12),
                ..
            }
        ));
        assert!(matches!(
            job_view(&pod("StartError", 128, true), now),
            JobView::Running { .. }
        ));
    }

    /// The policy selects the move's senders only and opens their progress port to
    /// the operator's namespace only.
    #[test]
    fn the_progress_policy_opens_the_senders_port_to_the_operators_namespace_only() {
        let m = a_move("move-data", "data");
        let policy = serde_json::to_value(progress_policy(&m, "enclave-system")).expect("json");
        assert_eq!(
            policy["spec"],
            json!({
                "podSelector": {"matchLabels": {
                    "enclave.dev/volume-migration": "move-data",
                    "enclave.dev/mover-side": "sender",
                }},
                "policyTypes": ["Ingress"],
                "ingress": [{
                    "from": [{"namespaceSelector": {"matchLabels": {
                        "kubernetes.io/metadata.name": "enclave-system",
                    }}}],
                    "ports": [{"port": 8874, "protocol": "TCP"}],
                }],
            })
        );
        assert_eq!(policy["metadata"]["namespace"], "shop");
    }
}
