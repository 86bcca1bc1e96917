//! Moving a claim's data into the enclave, pure: the state machine of a
//! [`VolumeMigration`](crate::crd::VolumeMigration), as one function
//! [`next`]`(observed, status, settings, now) -> Step`.
//!
//! The controller (`crate::controller::volume_move`) reads the world into an
//! [`Observed`], calls [`next`] with the status it last wrote, writes the returned
//! status FIRST and only then takes the returned actions, each of which is idempotent
//! (an "ensure", safe to repeat). A crash between the status write and an action
//! therefore leaves a status that already says what is about to happen, with the world
//! not yet changed: the next call sees the same status and the same world, and asks for
//! the same action again (or rolls back). Everything a later step or a rollback needs
//! (the original replicas, the original claim's UID, size and labels, the source's
//! reclaim policy, the destination claim's name, that the operator itself released the
//! claim, the StatefulSet to make again) is in the status before the action that would
//! destroy it.
//!
//! Phases, in order: `Planned` (preflight) → `AwaitingApproval` (if the policy asks) →
//! `Copying` (the source set to Retain, credentials made, the destination claim made,
//! a first copy while the application runs) → `Quiescing` (replicas remembered, then
//! scaled to zero) → `FinalSync` (the delta, source read-only) → `Verifying` (both
//! manifests; equal root hashes or no switch) → `Switching` (movers gone, both volumes
//! Retain, the original and the temporary claim deleted, the new volume pre-bound by
//! `claimRef`, the claim recreated under its name with `volumeName`) → `Restoring` (a
//! StatefulSet whose claim templates name classes outside made again with the
//! enclave's, then the replicas back) → `Done` (the source kept for the retention
//! window) → `Erasing` (the source deleted through its reclaim path) → `Erased`.
//!
//! Any failure from `Copying` to `Switching` rolls back (`RollingBack` → `RolledBack`):
//! the claim back on the source volume (recreated there if the operator had released
//! it), the destination claim and volume removed, the source's reclaim policy and the
//! replicas restored. After the switch the application may have written to the new
//! volume, so a rollback would lose data: failures from `Restoring` on end in `Failed`
//! with both volumes retained, for a person to decide. `Failed` is also where preflight
//! refusals end (nothing was changed). The source is never erased from `Failed`, and
//! never before the new claim is Bound, the application back, the root hashes equal and
//! the retention window over; the erasure re-checks all of it when it starts.

pub mod manifest;
pub mod mover;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::conditions;
use crate::crd::{
    ClaimCopy, MigrationPhase as Phase, TemplateClassChange, VolumeMigrationSpec,
    VolumeMigrationStatus as Status, WorkloadRef,
};

/// The policy's settings for moves.
#[derive(Clone, Debug, PartialEq)]
pub struct MoveSettings {
    /// A move waits for an approval before it changes anything.
    pub require_approval: bool,
    /// The shortest retention window; a VolumeMigration cannot ask for less.
    pub min_retention: SignedDuration,
    /// The window when the VolumeMigration names none.
    pub default_retention: SignedDuration,
    /// How long the application may take to stop before the move rolls back.
    pub quiesce_timeout: SignedDuration,
}

impl Default for MoveSettings {
    fn default() -> Self {
        Self {
            require_approval: true,
            min_retention: SignedDuration::from_hours(24),
            default_retention: SignedDuration::from_hours(7 * 24),
            quiesce_timeout: SignedDuration::from_mins(10),
        }
    }
}

impl MoveSettings {
    /// The window for a move whose spec asks for `hours`: the policy's minimum at least.
    pub fn retention(&self, hours: Option<i32>) -> SignedDuration {
        hours
            .map(|h| SignedDuration::from_hours(i64::from(h.max(0))))
            .unwrap_or(self.default_retention)
            .max(self.min_retention)
    }
}

/// A PersistentVolume's reclaim policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reclaim {
    Retain,
    Delete,
    Recycle,
}

impl Reclaim {
    pub fn as_str(self) -> &'static str {
        match self {
            Reclaim::Retain => "Retain",
            Reclaim::Delete => "Delete",
            Reclaim::Recycle => "Recycle",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "Retain" => Some(Reclaim::Retain),
            "Delete" => Some(Reclaim::Delete),
            "Recycle" => Some(Reclaim::Recycle),
            _ => None,
        }
    }
}

/// A PersistentVolume's `status.phase`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VolumePhase {
    Pending,
    Available,
    Bound,
    Released,
    Failed,
}

/// A PersistentVolumeClaim, as far as the move reads it.
#[derive(Clone, Debug, PartialEq)]
pub struct ClaimView {
    pub uid: String,
    /// `spec.volumeName`.
    pub volume_name: Option<String>,
    /// `status.phase == Bound`.
    pub bound: bool,
    /// `metadata.deletionTimestamp` is set.
    pub deleting: bool,
    /// `spec.storageClassName`.
    pub storage_class: Option<String>,
    /// `spec.resources.requests.storage` as written, and in bytes.
    pub request: String,
    pub request_bytes: u64,
    pub access_modes: Vec<String>,
    /// `spec.volumeMode == Block`.
    pub block: bool,
    pub labels: BTreeMap<String, String>,
}

/// A PersistentVolume's `spec.claimRef`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimRef {
    pub namespace: String,
    pub name: String,
    pub uid: Option<String>,
}

/// A PersistentVolume, as far as the move reads it.
#[derive(Clone, Debug, PartialEq)]
pub struct VolumeView {
    pub name: String,
    pub phase: VolumePhase,
    pub reclaim: Reclaim,
    pub claim_ref: Option<ClaimRef>,
    pub capacity_bytes: u64,
    /// Inside the enclave, as [`crate::volumes::Storage::volume_outside_reason`] says.
    pub inside: bool,
}

/// The workload whose pods mount the claim.
#[derive(Clone, Debug, PartialEq)]
pub struct OwnerView {
    /// Deployment or StatefulSet; any other kind is refused by preflight.
    pub kind: String,
    pub name: String,
    /// `spec.replicas`.
    pub replicas: i32,
    /// `status.readyReplicas`.
    pub ready_replicas: i32,
    /// A HorizontalPodAutoscaler scaling it, by name.
    pub autoscaler: Option<String>,
    /// A StatefulSet's `persistentVolumeClaimRetentionPolicy.whenScaled: Delete`.
    pub when_scaled_delete: bool,
    /// The object's UID: only that object is ever deleted.
    pub uid: String,
    /// `metadata.deletionTimestamp` is set.
    pub deleting: bool,
    /// Its controller (`Kind/name`) when another controller manages it: the operator
    /// never recreates what another controller owns.
    pub managed_by: Option<String>,
    /// A StatefulSet's claim templates.
    pub claim_templates: Vec<ClaimTemplateView>,
    /// A StatefulSet as it would be created again (JSON: name, labels, annotations,
    /// owner references and the spec; never its status or identity).
    pub manifest: Option<String>,
}

/// One of a StatefulSet's `volumeClaimTemplates`.
#[derive(Clone, Debug, PartialEq)]
pub struct ClaimTemplateView {
    pub name: String,
    /// `spec.storageClassName`.
    pub storage_class: Option<String>,
}

/// The claim template of StatefulSet `set` that makes `claim`: the StatefulSet
/// controller names its claims `<template>-<set>-<ordinal>`.
pub fn claim_template<'t>(
    set: &str,
    templates: impl IntoIterator<Item = &'t str>,
    claim: &str,
) -> Option<&'t str> {
    templates.into_iter().find(|template| {
        claim
            .strip_prefix(&format!("{template}-{set}-"))
            .is_some_and(|ordinal| {
                !ordinal.is_empty() && ordinal.bytes().all(|b| b.is_ascii_digit())
            })
    })
}

/// A StatefulSet manifest with the claim templates `templates` on `class`; every other
/// field as it was.
pub fn with_template_class(
    manifest: &str,
    templates: &[String],
    class: &str,
) -> Result<String, String> {
    let mut set: serde_json::Value = serde_json::from_str(manifest)
        .map_err(|e| format!("the StatefulSet does not read as JSON: {e}"))?;
    let all = set
        .pointer_mut("/spec/volumeClaimTemplates")
        .and_then(serde_json::Value::as_array_mut)
        .ok_or("the StatefulSet has no spec.volumeClaimTemplates")?;
    for template in templates {
        let found = all
            .iter_mut()
            .find(|t| t.pointer("/metadata/name").and_then(|n| n.as_str()) == Some(template))
            .ok_or_else(|| format!("the StatefulSet has no claim template named {template}"))?;
        let spec = found
            .as_object_mut()
            .ok_or("a claim template is not an object")?
            .entry("spec")
            .or_insert_with(|| serde_json::json!({}));
        spec.as_object_mut()
            .ok_or("a claim template's spec is not an object")?
            .insert("storageClassName".into(), class.into());
    }
    serde_json::to_string(&set).map_err(|e| e.to_string())
}

/// The destination StorageClass.
#[derive(Clone, Debug, PartialEq)]
pub struct ClassView {
    pub name: String,
    /// Why it can provision outside the enclave, if it can
    /// ([`crate::volumes::Storage::class_reaches_outside`]).
    pub reaches_outside: Option<String>,
    /// The access modes its volumes support, when known.
    pub access_modes: Option<Vec<String>>,
    /// The largest volume it provisions, when known.
    pub max_bytes: Option<u64>,
}

/// An approval (or refusal) of the move the controller counted: made by someone the
/// policy names, as the API server authenticated them. Never read from the spec.
#[derive(Clone, Debug, PartialEq)]
pub struct Approval {
    pub by: String,
    pub at: Timestamp,
    pub approved: bool,
}

/// The credentials made for this move's transfer alone.
#[derive(Clone, Debug, PartialEq)]
pub struct Credentials {
    pub sender_sha256: String,
    pub receiver_sha256: String,
}

/// A pass of the mover.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Pass {
    /// The first copy, while the application runs.
    First,
    /// The delta, with the application stopped and the source read-only.
    Final,
    /// Each side computes its manifest; the receiver also diffs it with the sender's.
    Verify,
}

impl Pass {
    fn describe(self) -> &'static str {
        match self {
            Pass::First => "first copy",
            Pass::Final => "final sync",
            Pass::Verify => "verification",
        }
    }
}

/// One side (sender or receiver) of a pass: its Job's outcome.
#[derive(Clone, Debug, PartialEq)]
pub enum JobView {
    Running {
        bytes: u64,
        files: u64,
        bytes_per_second: u64,
    },
    Succeeded {
        bytes: u64,
        files: u64,
        /// The pass's average rate (`bytes` over the time rsync ran).
        bytes_per_second: u64,
        /// Verify pass: this side's manifest root hash.
        root_hash: Option<String>,
        /// Verify pass, receiver: the first path where the manifests differ.
        first_difference: Option<String>,
    },
    Failed {
        exit_code: Option<i32>,
        message: String,
    },
    /// The node's runtime could not start the container (the kubelet's `StartError`):
    /// nothing ran, so the pass can be run again.
    NotStarted { message: String },
}

/// How many times a move runs a pass again whose mover the node could not start,
/// before it rolls back.
pub const MOVER_START_RETRIES: i32 = 3;

/// Both sides of a pass; `None`: that side's Job does not exist.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TransferView {
    pub sender: Option<JobView>,
    pub receiver: Option<JobView>,
}

/// What the controller read, for one VolumeMigration.
#[derive(Clone, Debug, PartialEq)]
pub struct Observed {
    pub namespace: String,
    pub generation: Option<i64>,
    pub spec: VolumeMigrationSpec,
    /// The claim named `spec.claimName`.
    pub claim: Option<ClaimView>,
    /// Every `None` below means the API server answered NotFound; a failed read is an
    /// error of the controller and never reaches this function.
    ///
    /// The source PersistentVolume: `status.sourceVolume`, or before planning the
    /// claim's `volumeName`.
    pub source_volume: Option<VolumeView>,
    /// The temporary destination claim (`status.destinationClaim`, or before planning
    /// the name it will get).
    pub destination_claim: Option<ClaimView>,
    /// The destination PersistentVolume (`status.destinationVolume`, or the destination
    /// claim's `volumeName`).
    pub destination_volume: Option<VolumeView>,
    /// The workload whose pods mount the claim; `None`: not found.
    pub owner: Option<OwnerView>,
    /// Pods, other than the mover's, that mount the claim and have not finished.
    pub claim_users: u32,
    /// Of those, the pods that are Ready: the application reading the claim.
    pub claim_users_ready: u32,
    /// The enclave's storage classes, in order.
    pub enclave_classes: Vec<String>,
    /// The destination class (`spec.storageClassName` or the enclave's first); `None`:
    /// not found.
    pub destination_class: Option<ClassView>,
    /// What the namespace's ResourceQuota leaves for the destination class, when bounded.
    pub quota_remaining_bytes: Option<u64>,
    pub approval: Option<Approval>,
    pub credentials: Option<Credentials>,
    /// The mover Jobs by pass; a Job counts until its pods are gone (they hold the
    /// claims the switch releases).
    pub transfers: BTreeMap<Pass, TransferView>,
    /// When `status.statefulSetReplacement` holds a set to create in place of the
    /// owner observed (same UID): the API server's answer to a dry-run creation of it
    /// (admission runs before the name is found taken), `Err` naming the refusal.
    pub replacement_check: Option<Result<(), String>>,
}

/// What the controller does after writing the status; every action is idempotent.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Make this move's transfer certificates and keys, if not made yet.
    IssueCredentials,
    /// Delete them.
    RevokeCredentials,
    SetReclaimPolicy {
        volume: String,
        policy: Reclaim,
    },
    /// Create the temporary claim the receiver writes into, if absent.
    CreateDestinationClaim {
        name: String,
        storage_class: String,
        storage_bytes: u64,
        access_modes: Vec<String>,
    },
    /// Start both sides of a pass, if not running or done.
    StartTransfer {
        pass: Pass,
        source_read_only: bool,
    },
    /// Delete every mover Job of this move.
    DeleteTransfers,
    /// Delete both sides of this pass (one of them never started), so that the pass
    /// starts again once they are gone.
    RestartPass {
        pass: Pass,
    },
    ScaleOwner {
        owner: WorkloadRef,
        replicas: i32,
    },
    /// Delete the claim with this name, only if it has this UID (a precondition).
    DeleteClaim {
        name: String,
        uid: String,
    },
    /// Set the volume's `claimRef` to this claim, without a UID, so that it binds the
    /// claim of this name that is created next and no other.
    BindVolume {
        volume: String,
        namespace: String,
        claim: String,
    },
    /// Create the claim under `name` with `volumeName: volume`, if absent.
    CreateClaim {
        name: String,
        volume: String,
        copy: ClaimCopy,
        storage_class: Option<String>,
    },
    /// Delete the volume through its reclaim path: reclaim policy Delete first, so that
    /// its provisioner deletes the storage, then the object.
    DeleteVolume {
        volume: String,
    },
    /// Delete the StatefulSet with this name, only if it has this UID (a precondition),
    /// orphaning its pods and claims.
    DeleteStatefulSet {
        name: String,
        uid: String,
    },
    /// Create the StatefulSet of this manifest, if absent.
    CreateStatefulSet {
        name: String,
        manifest: String,
    },
}

/// The status to write first, and the actions to take after, in order; the controller
/// stops at the first action that fails (the next call asks for it again). Actions are
/// asked for only on what was observed, never on what an earlier action of the same
/// step is expected to have done.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    pub status: Status,
    pub actions: Vec<Action>,
}

/// How a pass stands.
enum PassState<'a> {
    /// A side's Job is missing.
    NotStarted,
    Running(Option<&'a JobView>),
    Failed(String),
    /// A side's container never started.
    NotStartedByTheNode(String),
    Succeeded(&'a JobView, &'a JobView),
}

/// The state of a pass from both sides' Jobs.
fn pass_state(observed: &Observed, pass: Pass) -> PassState<'_> {
    let Some(transfer) = observed.transfers.get(&pass) else {
        return PassState::NotStarted;
    };
    let sides = [
        ("sender", &transfer.sender),
        ("receiver", &transfer.receiver),
    ];
    for (side, job) in sides {
        if let Some(JobView::NotStarted { message }) = job {
            return PassState::NotStartedByTheNode(format!(
                "the {} {side}'s container was not started by its node: {message}",
                pass.describe()
            ));
        }
    }
    for (side, job) in sides {
        if let Some(JobView::Failed { exit_code, message }) = job {
            // The verify pass runs no rsync: its exit codes are the mover's own.
            let why = match (pass, exit_code) {
                (Pass::Verify, Some(code)) if message.is_empty() => format!("exit code {code}"),
                (Pass::Verify, Some(code)) => format!("exit code {code}: {message}"),
                _ => job_failure(*exit_code, message),
            };
            return PassState::Failed(format!("the {} {side} failed: {why}", pass.describe()));
        }
    }
    match (&transfer.sender, &transfer.receiver) {
        (Some(s @ JobView::Succeeded { .. }), Some(r @ JobView::Succeeded { .. })) => {
            PassState::Succeeded(s, r)
        }
        (None, _) | (_, None) => PassState::NotStarted,
        (sender, _) => PassState::Running(sender.as_ref()),
    }
}

/// A mover's failure in words: its exit code (rsync's, named) and its message.
pub fn job_failure(exit_code: Option<i32>, message: &str) -> String {
    let code = match exit_code {
        None => "no exit code (the pod was lost)".to_string(),
        Some(code) => {
            let meaning = match code {
                1 => "syntax or usage error",
                2 => "protocol incompatibility",
                3 => "errors selecting input/output files",
                5 => "error starting the client-server protocol",
                10 => "error in socket I/O (the connection was cut)",
                11 => "error in file I/O",
                12 => "error in the protocol data stream (the connection was cut)",
                20 => "stopped by a signal",
                23 => "partial transfer: some files could not be read or written",
                24 => "partial transfer: some source files vanished",
                30 => "timeout in data send/receive",
                35 => "timeout waiting for the connection",
                137 => "killed (out of memory or deleted)",
                _ => "non-zero exit",
            };
            format!("exit code {code} ({meaning})")
        }
    };
    if message.is_empty() {
        code
    } else {
        format!("{code}: {message}")
    }
}

fn is_root_hash(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Bytes for people: 1.5 GiB.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// The name of the temporary destination claim of a claim.
pub fn destination_claim_name(claim: &str) -> String {
    crate::names::bounded("", claim, "-enclave-move", crate::names::MAX_NAME)
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// The next step of a move: the status to write, then the actions to take.
pub fn next(observed: &Observed, status: &Status, settings: &MoveSettings, now: Timestamp) -> Step {
    let mut machine = Machine {
        o: observed,
        s: status.clone(),
        settings,
        now,
        actions: Vec::new(),
    };
    // A phase either asks for actions (and stays) or moves on, and the next phase runs
    // in the same call, so that its actions follow the status that names it. Every
    // phase moves forward at most once per call, so this ends.
    for _ in 0..32 {
        let phase = machine.phase();
        machine.run(phase);
        if machine.phase() == phase || !machine.actions.is_empty() {
            break;
        }
    }
    machine.finish()
}

struct Machine<'a> {
    o: &'a Observed,
    s: Status,
    settings: &'a MoveSettings,
    now: Timestamp,
    actions: Vec<Action>,
}

impl<'a> Machine<'a> {
    fn phase(&self) -> Phase {
        self.s.phase.unwrap_or(Phase::Planned)
    }

    fn time(&self) -> Option<Time> {
        Some(Time(self.now))
    }

    fn say(&mut self, message: impl Into<String>) {
        self.s.message = Some(message.into());
    }

    fn act(&mut self, action: Action) {
        if !self.actions.contains(&action) {
            self.actions.push(action);
        }
    }

    fn enter(&mut self, phase: Phase) {
        let at = self.time();
        let times = &mut self.s.times;
        let slot = match phase {
            Phase::Planned => &mut times.planned,
            Phase::AwaitingApproval => &mut times.planned,
            Phase::Copying => &mut times.copy_started,
            Phase::Quiescing => &mut times.quiesce_started,
            Phase::FinalSync => &mut times.final_sync_started,
            Phase::Verifying => &mut times.verify_started,
            Phase::Switching => &mut times.switch_started,
            Phase::Restoring => &mut times.restore_started,
            Phase::Done => &mut times.done,
            Phase::Erasing => &mut times.erase_started,
            Phase::Erased => &mut times.erased,
            Phase::RollingBack => &mut times.rollback_started,
            Phase::RolledBack => &mut times.rolled_back,
            Phase::Failed => &mut times.failed,
        };
        if slot.is_none() {
            *slot = at;
        }
        self.s.phase = Some(phase);
        // The current pass's counters belong to the pass.
        if matches!(phase, Phase::FinalSync | Phase::Verifying) {
            self.s.bytes_done = None;
            self.s.files_done = None;
            self.s.bytes_per_second = None;
        }
    }

    /// Stop where only a person can decide; nothing more is done.
    fn fail(&mut self, why: String) {
        self.enter(Phase::Failed);
        self.say(why);
    }

    /// Undo the move, from a phase before the application runs on the new volume.
    fn roll_back(&mut self, why: String) {
        self.s.rolled_back_from = Some(self.phase());
        self.s.rollback_reason = Some(why.clone());
        self.enter(Phase::RollingBack);
        self.say(format!("rolling back: {why}"));
    }

    fn claim_name(&self) -> &str {
        &self.o.spec.claim_name
    }

    fn source_name(&self) -> Option<&str> {
        self.s.source_volume.as_deref()
    }

    fn destination_volume_name(&self) -> Option<String> {
        self.s.destination_volume.clone().or_else(|| {
            self.o
                .destination_claim
                .as_ref()
                .and_then(|c| c.volume_name.clone())
        })
    }

    fn owner_ref(&self) -> Option<WorkloadRef> {
        self.s.owner.clone()
    }

    fn run(&mut self, phase: Phase) {
        match phase {
            Phase::Planned => self.plan(),
            Phase::AwaitingApproval => self.await_approval(),
            Phase::Copying => self.copying(),
            Phase::Quiescing => self.quiescing(),
            Phase::FinalSync => self.final_sync(),
            Phase::Verifying => self.verifying(),
            Phase::Switching => self.switching(),
            Phase::Restoring => self.restoring(),
            Phase::Done => self.done(),
            Phase::Erasing => self.erasing(),
            Phase::RollingBack => self.rolling_back(),
            Phase::Erased | Phase::RolledBack | Phase::Failed => {}
        }
    }

    // ---- Planned: preflight ------------------------------------------------------

    /// Why the move cannot start, naming the field; or what the plan records.
    fn preflight(&self) -> Result<PlanFacts, String> {
        let o = self.o;
        let ns = &o.namespace;
        let name = self.claim_name();
        let claim = o.claim.as_ref().ok_or_else(|| {
            format!("spec.claimName: PersistentVolumeClaim {ns}/{name} does not exist")
        })?;
        if claim.deleting {
            return Err(format!(
                "spec.claimName: PersistentVolumeClaim {ns}/{name} is being deleted"
            ));
        }
        let volume_name = match (&claim.volume_name, claim.bound) {
            (Some(v), true) => v.clone(),
            _ => {
                return Err(format!(
                    "spec.claimName: PersistentVolumeClaim {ns}/{name} is not Bound to a volume, so there is no data to move"
                ));
            }
        };
        if claim.block {
            return Err(format!(
                "PersistentVolumeClaim {name} has spec.volumeMode: Block; block volumes are not moved (the mover copies files); only Filesystem is allowed"
            ));
        }
        if claim.access_modes.iter().any(|m| m == "ReadWriteMany") {
            return Err(format!(
                "PersistentVolumeClaim {name} has ReadWriteMany in spec.accessModes; a volume written from several nodes cannot be frozen for a consistent final copy; allowed: ReadWriteOnce, ReadWriteOncePod, ReadOnlyMany"
            ));
        }
        let source = o
            .source_volume
            .as_ref()
            .filter(|v| v.name == volume_name)
            .ok_or_else(|| {
                format!("PersistentVolume {volume_name} (spec.volumeName of claim {name}) does not exist")
            })?;
        if source.inside {
            return Err(format!(
                "PersistentVolume {volume_name} of claim {name} is already inside the enclave: nothing to move"
            ));
        }
        let owner = o.owner.as_ref().ok_or_else(|| {
            format!(
                "owner not found: no Deployment or StatefulSet in {ns} has pods mounting claim {name} (the owner is scaled to zero for the final copy)"
            )
        })?;
        if owner.kind != "Deployment" && owner.kind != "StatefulSet" {
            return Err(format!(
                "claim {name} is mounted by {} {}; only the claims of Deployments and StatefulSets are moved (their replicas can be stopped and restored)",
                owner.kind, owner.name
            ));
        }
        if let Some(hpa) = &owner.autoscaler {
            return Err(format!(
                "HorizontalPodAutoscaler {hpa} scales {} {} and would undo its scale to zero during the final copy; remove it for the move",
                owner.kind, owner.name
            ));
        }
        if owner.when_scaled_delete {
            return Err(format!(
                "StatefulSet {} has spec.persistentVolumeClaimRetentionPolicy.whenScaled: Delete; scaling it to zero would delete claim {name}; set it to Retain for the move",
                owner.name
            ));
        }
        let class_name = match (&o.spec.storage_class_name, o.enclave_classes.first()) {
            (Some(class), _) => class.clone(),
            (None, Some(first)) => first.clone(),
            (None, None) => {
                return Err(
                    "spec.storageClassName is absent and the enclave lists no storage classes (spec.storage.storageClassNames of the DataEnclave)".into(),
                );
            }
        };
        if !o.enclave_classes.contains(&class_name) {
            return Err(format!(
                "spec.storageClassName: \"{class_name}\" is not one of the enclave's ({})",
                crate::volumes::allowed_classes(&o.enclave_classes)
            ));
        }
        let class = o
            .destination_class
            .as_ref()
            .filter(|c| c.name == class_name)
            .ok_or_else(|| {
                format!("spec.storageClassName: StorageClass {class_name} does not exist")
            })?;
        if let Some(why) = &class.reaches_outside {
            return Err(format!("spec.storageClassName: {why}"));
        }
        if let Some(supported) = &class.access_modes
            && let Some(mode) = claim.access_modes.iter().find(|m| !supported.contains(m))
        {
            return Err(format!(
                "claim {name} has {mode} in spec.accessModes, which StorageClass {class_name} does not support (it supports {})",
                supported.join(", ")
            ));
        }
        let needed = claim.request_bytes.max(source.capacity_bytes);
        if let Some(max) = class.max_bytes
            && needed > max
        {
            return Err(format!(
                "claim {name} needs {} (spec.resources.requests.storage, or its volume's capacity if larger) and StorageClass {class_name} provisions at most {}",
                human_bytes(needed),
                human_bytes(max)
            ));
        }
        if let Some(left) = o.quota_remaining_bytes
            && needed > left
        {
            return Err(format!(
                "claim {name} needs {} and the namespace's ResourceQuota leaves {} of StorageClass {class_name}",
                human_bytes(needed),
                human_bytes(left)
            ));
        }
        let destination = destination_claim_name(name);
        if o.destination_claim.is_some() {
            return Err(format!(
                "a PersistentVolumeClaim named {destination} already exists; the move needs that name for its destination"
            ));
        }
        Ok(PlanFacts {
            claim_uid: claim.uid.clone(),
            copy: ClaimCopy {
                storage: claim.request.clone(),
                access_modes: claim.access_modes.clone(),
                labels: claim.labels.clone(),
                storage_class_name: claim.storage_class.clone(),
            },
            source: source.name.clone(),
            reclaim: source.reclaim,
            destination,
            class: class_name,
            owner: WorkloadRef {
                kind: owner.kind.clone(),
                name: owner.name.clone(),
            },
            bytes: needed,
        })
    }

    fn plan(&mut self) {
        if self.s.times.planned.is_none() {
            self.s.times.planned = self.time();
        }
        match self.preflight() {
            Err(why) => self.fail(format!("refused by preflight: {why}")),
            Ok(facts) => {
                self.s.source_claim_uid = Some(facts.claim_uid);
                self.s.claim = Some(facts.copy);
                self.s.source_volume = Some(facts.source);
                self.s.source_reclaim_policy = Some(facts.reclaim.as_str().to_string());
                self.s.destination_claim = Some(facts.destination);
                self.s.destination_storage_class = Some(facts.class);
                self.s.owner = Some(facts.owner);
                self.s.bytes_total = Some(to_i64(facts.bytes));
                if self.settings.require_approval {
                    self.enter(Phase::AwaitingApproval);
                    self.say("preflight passed; waiting for an approval");
                } else {
                    self.enter(Phase::Copying);
                }
            }
        }
    }

    // ---- AwaitingApproval ----------------------------------------------------------

    fn await_approval(&mut self) {
        // Nothing was changed yet: a claim gone or replaced ends the move here.
        if let Some(why) = self.claim_replaced() {
            return self.fail(format!("before anything was changed: {why}"));
        }
        match &self.o.approval {
            Some(a) if a.approved => {
                self.s.approved_by = Some(a.by.clone());
                self.s.times.approved = Some(Time(a.at));
                self.enter(Phase::Copying);
            }
            Some(a) => {
                let why = format!("the move was refused by {}", a.by);
                self.fail(why);
            }
            None if !self.settings.require_approval => self.enter(Phase::Copying),
            None => self.say("preflight passed; waiting for an approval"),
        }
    }

    // ---- Checks shared by the phases before the switch ------------------------------

    /// The original claim is gone, being deleted or replaced (by someone else: before
    /// `claimReleased` the operator never deletes it).
    fn claim_replaced(&self) -> Option<String> {
        let name = self.claim_name();
        match &self.o.claim {
            None => Some(format!(
                "PersistentVolumeClaim {name} was deleted during the move (not by the move)"
            )),
            Some(c) if Some(&c.uid) != self.s.source_claim_uid.as_ref() => Some(format!(
                "PersistentVolumeClaim {name} was deleted and created again during the move (not by the move)"
            )),
            Some(c) if c.deleting => Some(format!(
                "PersistentVolumeClaim {name} is being deleted (not by the move)"
            )),
            Some(_) => None,
        }
    }

    /// Everything that ends a move before the switch, whatever the phase.
    fn world_broken(&self) -> Option<String> {
        if let Some(why) = self.claim_replaced() {
            return Some(why);
        }
        let source = self.source_name().unwrap_or_default();
        if self.o.source_volume.is_none() {
            return Some(format!(
                "PersistentVolume {source} disappeared during the move"
            ));
        }
        let owner = self.s.owner.clone().unwrap_or(WorkloadRef {
            kind: "owner".into(),
            name: String::new(),
        });
        match &self.o.owner {
            None => {
                return Some(format!(
                    "{} {} was deleted during the move",
                    owner.kind, owner.name
                ));
            }
            Some(o) if o.kind != owner.kind || o.name != owner.name => {
                return Some(format!(
                    "claim {} is now mounted by {} {}, not {} {}",
                    self.claim_name(),
                    o.kind,
                    o.name,
                    owner.kind,
                    owner.name
                ));
            }
            Some(o) if o.autoscaler.is_some() => {
                return Some(format!(
                    "HorizontalPodAutoscaler {} now scales {} {}",
                    o.autoscaler.clone().unwrap_or_default(),
                    o.kind,
                    o.name
                ));
            }
            Some(o) if o.when_scaled_delete => {
                return Some(format!(
                    "StatefulSet {} now has persistentVolumeClaimRetentionPolicy.whenScaled: Delete",
                    o.name
                ));
            }
            Some(_) => {}
        }
        if let (Some(recorded), Some(seen)) =
            (&self.s.destination_claim_uid, &self.o.destination_claim)
            && &seen.uid != recorded
        {
            return Some(format!(
                "the destination claim {} was deleted and created again during the move (not by the move)",
                self.s.destination_claim.clone().unwrap_or_default()
            ));
        }
        if let Some(c) = &self.o.destination_claim
            && c.deleting
        {
            return Some(format!(
                "the destination claim {} is being deleted (not by the move)",
                self.s.destination_claim.clone().unwrap_or_default()
            ));
        }
        if self.s.destination_claim_uid.is_some() && self.o.destination_claim.is_none() {
            return Some(format!(
                "the destination claim {} was deleted during the move (not by the move)",
                self.s.destination_claim.clone().unwrap_or_default()
            ));
        }
        if let Some(v) = &self.o.destination_volume
            && !v.inside
        {
            return Some(format!(
                "the destination volume {} was provisioned outside the enclave",
                v.name
            ));
        }
        if let (Some(seen), Some(sender)) = (&self.o.credentials, &self.s.sender_certificate_sha256)
            && (&seen.sender_sha256 != sender
                || Some(&seen.receiver_sha256) != self.s.receiver_certificate_sha256.as_ref())
        {
            return Some(
                "the transfer's certificates changed during the move (not by the move)".into(),
            );
        }
        None
    }

    /// The application must stay stopped from the final sync until the switch: pods
    /// writing after the final copy would make the copy stale.
    fn app_restarted(&self) -> Option<String> {
        let o = self.o.owner.as_ref()?;
        if o.replicas > 0 {
            return Some(format!(
                "{} {} was scaled back to {} replicas during the {} (not by the move): the source changed after the copy",
                o.kind,
                o.name,
                o.replicas,
                self.phase().as_str()
            ));
        }
        (self.o.claim_users > 0).then(|| {
            format!(
                "{} pods mounted claim {} during the {}: the source may have changed after the copy",
                self.o.claim_users,
                self.claim_name(),
                self.phase().as_str()
            )
        })
    }

    fn record_progress(&mut self, pass: Pass, job: Option<&JobView>) {
        // The verify pass copies nothing and serves no counters: no figures (they belong
        // to a pass), and the progress says what runs (its end says the root hash).
        if pass == Pass::Verify {
            if !matches!(job, Some(JobView::Succeeded { .. })) {
                self.s.progress = Some("verification: both sides hashing every file".into());
            }
            return;
        }
        let (bytes, files, rate) = match job {
            Some(
                JobView::Running {
                    bytes,
                    files,
                    bytes_per_second,
                }
                | JobView::Succeeded {
                    bytes,
                    files,
                    bytes_per_second,
                    ..
                },
            ) => (
                *bytes,
                *files,
                (*bytes_per_second > 0).then_some(*bytes_per_second),
            ),
            _ => (0, 0, None),
        };
        self.s.bytes_done = Some(to_i64(bytes));
        self.s.files_done = Some(to_i64(files));
        self.s.bytes_per_second = rate.map(to_i64);
        let total = self
            .s
            .bytes_total
            .map(|t| format!(" of {}", human_bytes(t.max(0) as u64)))
            .unwrap_or_default();
        let rate = rate
            .map(|r| format!(", {}/s", human_bytes(r)))
            .unwrap_or_default();
        self.s.progress = Some(format!(
            "{}: {}{total}, {files} files{rate}",
            pass.describe(),
            human_bytes(bytes)
        ));
    }

    /// Runs a pass: starts it, reports progress, and gives both sides' outcomes when
    /// it succeeded. A failed side rolls the move back.
    fn pass(&mut self, pass: Pass, read_only: bool) -> Option<(&'a JobView, &'a JobView)> {
        match pass_state(self.o, pass) {
            PassState::NotStarted => {
                self.record_progress(pass, None);
                self.act(Action::StartTransfer {
                    pass,
                    source_read_only: read_only,
                });
                None
            }
            PassState::Running(job) => {
                self.record_progress(pass, job);
                None
            }
            PassState::Failed(why) => {
                self.roll_back(why);
                None
            }
            // A runtime that could not start a container (on a loaded node, say) ran
            // nothing: both sides are made again, a few times, before giving up.
            PassState::NotStartedByTheNode(why) => {
                let restarts = self.s.mover_restarts.unwrap_or(0);
                if restarts >= MOVER_START_RETRIES {
                    self.roll_back(format!("{why} (the pass was run again {restarts} times)"));
                } else {
                    self.s.mover_restarts = Some(restarts + 1);
                    self.say(format!(
                        "running the {} again ({} of {MOVER_START_RETRIES}): {why}",
                        pass.describe(),
                        restarts + 1
                    ));
                    self.act(Action::RestartPass { pass });
                }
                None
            }
            PassState::Succeeded(sender, receiver) => {
                self.record_progress(pass, Some(sender));
                Some((sender, receiver))
            }
        }
    }
}

struct PlanFacts {
    claim_uid: String,
    copy: ClaimCopy,
    source: String,
    reclaim: Reclaim,
    destination: String,
    class: String,
    owner: WorkloadRef,
    bytes: u64,
}

impl Machine<'_> {
    // ---- Copying: the first copy while the application runs --------------------------

    fn copying(&mut self) {
        if let Some(why) = self.world_broken() {
            return self.roll_back(why);
        }
        let mut ready = true;
        // The source is set to Retain before anything is copied: a claim deleted during
        // the move then leaves its data, and the switch releases it without losing it.
        if let (Some(source), Some(v)) = (self.source_name(), &self.o.source_volume)
            && v.reclaim != Reclaim::Retain
        {
            let volume = source.to_string();
            self.act(Action::SetReclaimPolicy {
                volume,
                policy: Reclaim::Retain,
            });
            ready = false;
        }
        match &self.o.credentials {
            None => {
                self.act(Action::IssueCredentials);
                ready = false;
            }
            Some(c) => {
                self.s.sender_certificate_sha256 = Some(c.sender_sha256.clone());
                self.s.receiver_certificate_sha256 = Some(c.receiver_sha256.clone());
            }
        }
        match &self.o.destination_claim {
            None => {
                let copy = self.s.claim.clone().unwrap_or_default();
                self.act(Action::CreateDestinationClaim {
                    name: self.s.destination_claim.clone().unwrap_or_default(),
                    storage_class: self.s.destination_storage_class.clone().unwrap_or_default(),
                    storage_bytes: self.s.bytes_total.unwrap_or_default().max(0) as u64,
                    access_modes: copy.access_modes,
                });
                ready = false;
            }
            Some(c) => {
                self.s.destination_claim_uid = Some(c.uid.clone());
                if let Some(v) = &c.volume_name
                    && c.bound
                {
                    self.s.destination_volume = Some(v.clone());
                }
            }
        }
        if !ready {
            self.say("preparing: source set to Retain, credentials, destination claim");
            return;
        }
        // A ReadWriteOncePod claim cannot be mounted by the sender while a pod of the
        // application holds it: its whole copy is the final sync, application stopped.
        let single_pod = self
            .s
            .claim
            .as_ref()
            .is_some_and(|c| c.access_modes.iter().any(|m| m == "ReadWriteOncePod"));
        if single_pod {
            return self.enter(Phase::Quiescing);
        }
        if self.pass(Pass::First, false).is_some() {
            self.enter(Phase::Quiescing);
        } else if self.phase() == Phase::Copying {
            self.say("copying while the application runs");
        }
    }

    // ---- Quiescing: the application scaled to zero, its replicas remembered ---------

    fn quiescing(&mut self) {
        if let Some(why) = self.world_broken() {
            return self.roll_back(why);
        }
        let Some(owner) = self.o.owner.clone() else {
            return;
        };
        // Remembered once, before the first scale: after a crash the owner is already at
        // zero, and zero must not overwrite the replicas to restore.
        if self.s.original_replicas.is_none() {
            self.s.original_replicas = Some(owner.replicas);
        }
        if owner.replicas == 0 && self.o.claim_users == 0 {
            return self.enter(Phase::FinalSync);
        }
        let started = self.s.times.quiesce_started.as_ref().map(|t| t.0);
        if let Some(started) = started
            && self.now.duration_since(started) > self.settings.quiesce_timeout
        {
            let why = if owner.replicas > 0 {
                format!(
                    "{} {} is back at {} replicas after being scaled to zero: something else scales it",
                    owner.kind, owner.name, owner.replicas
                )
            } else {
                format!(
                    "{} pods still mount claim {} after the quiesce timeout",
                    self.o.claim_users,
                    self.claim_name()
                )
            };
            return self.roll_back(why);
        }
        if owner.replicas != 0 {
            let target = self.owner_ref().unwrap_or(WorkloadRef {
                kind: owner.kind.clone(),
                name: owner.name.clone(),
            });
            self.act(Action::ScaleOwner {
                owner: target,
                replicas: 0,
            });
        }
        self.say(format!(
            "stopping {} {} (remembered replicas: {})",
            owner.kind,
            owner.name,
            self.s.original_replicas.unwrap_or_default()
        ));
    }

    // ---- FinalSync: the delta, source read-only ---------------------------------------

    fn final_sync(&mut self) {
        if let Some(why) = self.world_broken().or_else(|| self.app_restarted()) {
            return self.roll_back(why);
        }
        if self.pass(Pass::Final, true).is_some() {
            self.enter(Phase::Verifying);
        } else if self.phase() == Phase::FinalSync {
            self.say("final sync with the application stopped and the source read-only");
        }
    }

    // ---- Verifying: both manifests, equal or no switch -------------------------------

    fn verifying(&mut self) {
        if let Some(why) = self.world_broken().or_else(|| self.app_restarted()) {
            return self.roll_back(why);
        }
        let Some((sender, receiver)) = self.pass(Pass::Verify, true) else {
            if self.phase() == Phase::Verifying {
                self.say("computing both sides' manifests");
            }
            return;
        };
        let root = |job: &JobView| match job {
            JobView::Succeeded { root_hash, .. } => root_hash.clone(),
            _ => None,
        };
        let (source, destination) = (root(sender), root(receiver));
        let (Some(source), Some(destination)) = (
            source.filter(|h| is_root_hash(h)),
            destination.filter(|h| is_root_hash(h)),
        ) else {
            return self.roll_back(
                "the verification ended without a valid manifest root hash from both sides; the move does not go on unverified".into(),
            );
        };
        self.s.source_root_hash = Some(source.clone());
        self.s.destination_root_hash = Some(destination.clone());
        if source != destination {
            let first = match receiver {
                JobView::Succeeded {
                    first_difference: Some(d),
                    ..
                } => format!("; first difference: {d}"),
                _ => String::new(),
            };
            return self.roll_back(format!(
                "the manifests differ: source root {source}, destination root {destination}{first}"
            ));
        }
        if self.destination_volume_name().is_none() {
            return self.roll_back("the destination claim is not bound to a volume".into());
        }
        self.s.progress = Some(format!("verified: root {}", &source[..12]));
        self.enter(Phase::Switching);
    }

    // ---- Switching: the claim keeps its name, on the new volume ----------------------

    fn switching(&mut self) {
        let released = self.s.times.claim_released.is_some();
        if !released && let Some(why) = self.world_broken().or_else(|| self.app_restarted()) {
            return self.roll_back(why);
        }
        if released && let Some(why) = self.app_restarted() {
            // Pods may be up on the new claim already, or pending for it: not a reason
            // to give up a verified copy; the rollback stops them first.
            return self.roll_back(why);
        }
        let (Some(source), Some(destination)) =
            (self.s.source_volume.clone(), self.destination_volume_name())
        else {
            return self.roll_back("the source or destination volume is not known".into());
        };
        let Some(dest_volume) = self.o.destination_volume.clone() else {
            return self.roll_back(format!(
                "the destination volume {destination} disappeared before the switch"
            ));
        };
        if self.o.source_volume.is_none() {
            return self.fail(format!(
                "PersistentVolume {source} (the source) disappeared during the switch; the verified copy is kept on {destination} (Retain)"
            ));
        }
        // 1. The movers gone (they hold both claims), both volumes Retain.
        let mut ready = true;
        if !self.o.transfers.is_empty() {
            self.act(Action::DeleteTransfers);
            ready = false;
        }
        if self.o.credentials.is_some() {
            self.act(Action::RevokeCredentials);
        }
        for v in [self.o.source_volume.as_ref(), Some(&dest_volume)]
            .into_iter()
            .flatten()
        {
            if v.reclaim != Reclaim::Retain {
                self.act(Action::SetReclaimPolicy {
                    volume: v.name.clone(),
                    policy: Reclaim::Retain,
                });
                ready = false;
            }
        }
        if !ready {
            return self.say("switching: stopping the movers, setting both volumes to Retain");
        }
        // 2. Both claims released; recorded first, so that the missing claim is known
        //    to be the move's doing (recreated, never reported as the user's deletion).
        if !released {
            self.s.times.claim_released = self.time();
        }
        let name = self.claim_name().to_string();
        let mut released_all = true;
        if let Some(c) = &self.o.claim
            && Some(&c.uid) == self.s.source_claim_uid.as_ref()
        {
            self.act(Action::DeleteClaim {
                name: name.clone(),
                uid: c.uid.clone(),
            });
            released_all = false;
        }
        if let Some(c) = &self.o.destination_claim {
            self.act(Action::DeleteClaim {
                name: self.s.destination_claim.clone().unwrap_or_default(),
                uid: c.uid.clone(),
            });
            released_all = false;
        }
        if !released_all {
            return self.say("switching: releasing the original and the temporary claim");
        }
        // 3. The new volume pre-bound to the claim's name, 4. the claim recreated on it.
        let ns = self.o.namespace.clone();
        match &self.o.claim {
            None => {
                let pre_bound = dest_volume
                    .claim_ref
                    .as_ref()
                    .is_some_and(|r| r.namespace == ns && r.name == name && r.uid.is_none());
                if !pre_bound {
                    self.act(Action::BindVolume {
                        volume: destination.clone(),
                        namespace: ns,
                        claim: name.clone(),
                    });
                }
                self.act(Action::CreateClaim {
                    name,
                    volume: destination.clone(),
                    copy: self.s.claim.clone().unwrap_or_default(),
                    storage_class: self.s.destination_storage_class.clone(),
                });
                self.say(format!(
                    "switching: claim recreated on PersistentVolume {destination}"
                ));
            }
            Some(c) if c.volume_name.as_deref() == Some(destination.as_str()) => {
                if c.bound {
                    self.enter(Phase::Restoring);
                } else {
                    self.say(format!(
                        "switching: waiting for the claim to bind to {destination}"
                    ));
                }
            }
            Some(c) => {
                let other = c.volume_name.clone().unwrap_or_else(|| "no volume".into());
                self.fail(format!(
                    "a PersistentVolumeClaim {name} not made by the move appeared during the switch (it names {other}); the source {source} and the verified copy {destination} are both kept (Retain)"
                ));
            }
        }
    }

    // ---- Restoring: the application back, on the new volume ------------------------

    fn restoring(&mut self) {
        let destination = self.destination_volume_name().unwrap_or_default();
        let on_destination = self
            .o
            .claim
            .as_ref()
            .is_some_and(|c| c.bound && c.volume_name.as_deref() == Some(destination.as_str()));
        // The application may have written to the new volume from here: a rollback
        // would lose that, so a broken world stops the move for a person to decide.
        if !on_destination {
            return self.fail(format!(
                "claim {} is no longer bound to {destination} while the application was being restored; both volumes are kept (Retain)",
                self.claim_name()
            ));
        }
        if self.template_into_enclave() {
            return;
        }
        let Some(owner) = self.o.owner.clone() else {
            return self.fail(format!(
                "the owner was deleted while being restored; claim {} is on {destination}, the source is kept (Retain)",
                self.claim_name()
            ));
        };
        let original = self.s.original_replicas.unwrap_or_default();
        if original == 0 {
            return self.enter_done();
        }
        if owner.replicas == 0 {
            let target = self.owner_ref().unwrap_or(WorkloadRef {
                kind: owner.kind.clone(),
                name: owner.name.clone(),
            });
            self.act(Action::ScaleOwner {
                owner: target,
                replicas: original,
            });
            return self.say(format!("restoring {original} replicas"));
        }
        // Someone may have scaled it meanwhile; their count stands. A pod Ready on the
        // claim is the application back on its data: the other replicas of a
        // StatefulSet may wait on claims of their own still outside the enclave (their
        // moves come next), which must not hold this one.
        if self.o.claim_users_ready >= 1
            || (owner.ready_replicas >= 1 && owner.ready_replicas >= owner.replicas.min(original))
        {
            return self.enter_done();
        }
        self.say(format!(
            "waiting for {} {}: {} of {} replicas ready",
            owner.kind, owner.name, owner.ready_replicas, owner.replicas
        ));
    }

    fn enter_done(&mut self) {
        self.enter(Phase::Done);
        let window = self.settings.retention(self.o.spec.retention_hours);
        let done = self.s.times.done.as_ref().map_or(self.now, |t| t.0);
        let after = done.checked_add(window).unwrap_or(done);
        self.s.times.erase_after = Some(Time(after));
        self.s.progress = Some("done".into());
        let template = self
            .template_left_outside()
            .map(|why| format!("; {why}"))
            .unwrap_or_default();
        self.say(format!(
            "the application runs on {}; the source {} is kept until {after}{template}",
            self.destination_volume_name().unwrap_or_default(),
            self.source_name().unwrap_or_default()
        ));
    }

    /// The owner StatefulSet's claim templates whose class is not one of the enclave's
    /// (no class: the default, which may be outside), with that class.
    fn templates_outside(&self, owner: &OwnerView) -> Vec<TemplateClassChange> {
        if owner.kind != "StatefulSet" {
            return Vec::new();
        }
        owner
            .claim_templates
            .iter()
            .filter(|t| {
                !t.storage_class
                    .as_ref()
                    .is_some_and(|c| self.o.enclave_classes.contains(c))
            })
            .map(|t| TemplateClassChange {
                name: t.name.clone(),
                previous_storage_class_name: t.storage_class.clone(),
            })
            .collect()
    }

    /// Why the owner's claim templates still name a class outside the enclave after
    /// the move, when the operator leaves them so.
    fn template_left_outside(&self) -> Option<String> {
        let owner = self.o.owner.as_ref()?;
        let outside = self.templates_outside(owner);
        let first = outside.first()?;
        let refused = self
            .s
            .stateful_set_replacement
            .as_ref()
            .and_then(|r| r.refused.clone());
        let why = match (&owner.managed_by, refused) {
            (Some(by), _) => format!("it is managed by {by}: change the template there"),
            (None, Some(why)) => {
                format!(
                    "the API server would not admit it made again, so it was left as it was: {why}"
                )
            }
            (None, None) => "it could not be made again".into(),
        };
        let class = first
            .previous_storage_class_name
            .clone()
            .unwrap_or_else(|| "the default class".into());
        Some(format!(
            "StatefulSet {}'s claim template {} still names {class}: {why}",
            owner.name, first.name
        ))
    }

    /// A StatefulSet's claim templates name the enclave's class once its claim moved,
    /// so that the claims it makes later (a scale-up) are provisioned inside. Templates
    /// cannot be changed in place: the set is deleted with its pods and claims orphaned
    /// (at zero replicas none run) and created again from a manifest the status holds
    /// before the delete, once a dry run says the API server admits it (else the set is
    /// left as it was: an application down for want of its set is worse than a
    /// template outside). Returns whether the restore waits on it.
    fn template_into_enclave(&mut self) -> bool {
        let class = self.s.destination_storage_class.clone().unwrap_or_default();
        let pending = self
            .s
            .stateful_set_replacement
            .as_ref()
            .and_then(|r| r.manifest.clone().map(|m| (m, r.replaced_uid.clone())));
        let Some(owner) = self.o.owner.clone() else {
            // Deleted by the move (or by someone else after it): created again.
            let Some((manifest, _)) = pending else {
                return false;
            };
            let name = self.s.owner.clone().map(|o| o.name).unwrap_or_default();
            self.act(Action::CreateStatefulSet {
                name: name.clone(),
                manifest,
            });
            self.say(format!(
                "creating StatefulSet {name} again with its claim templates on {class}"
            ));
            return true;
        };
        if owner.kind != "StatefulSet" || owner.managed_by.is_some() {
            return false;
        }
        if owner.deleting {
            self.say(format!(
                "waiting for StatefulSet {} to be deleted; its pods and claims are orphaned, not deleted",
                owner.name
            ));
            return true;
        }
        let now = Time(self.now);
        if let Some(r) = self.s.stateful_set_replacement.as_mut() {
            if r.manifest.is_some() && r.replaced_uid != owner.uid {
                // The set exists again: the record has done its work.
                r.manifest = None;
                r.recreated = Some(now);
            } else if r.replaced_uid == owner.uid && r.refused.is_some() {
                // Refused once: not tried again for this set.
                return false;
            }
        }
        let outside = self.templates_outside(&owner);
        if outside.is_empty() {
            return false;
        }
        let recorded = pending.is_some_and(|(_, uid)| uid == owner.uid);
        if !recorded {
            let names: Vec<String> = outside.iter().map(|t| t.name.clone()).collect();
            let manifest = owner
                .manifest
                .as_deref()
                .ok_or_else(|| "its manifest was not read".to_string())
                .and_then(|m| with_template_class(m, &names, &class));
            let (manifest, refused) = match manifest {
                Ok(m) => (Some(m), None),
                Err(why) => (None, Some(why)),
            };
            let done = refused.is_some();
            self.s.stateful_set_replacement = Some(crate::crd::StatefulSetReplacement {
                replaced_uid: owner.uid.clone(),
                templates: outside,
                storage_class_name: class.clone(),
                manifest,
                recreated: None,
                refused,
            });
            if done {
                return false;
            }
            // The dry run is observed next, before anything is deleted.
            self.say(format!(
                "asking the API server whether it admits StatefulSet {} with its claim templates on {class}",
                owner.name
            ));
            return true;
        }
        match &self.o.replacement_check {
            None => {
                self.say(format!(
                    "asking the API server whether it admits StatefulSet {} with its claim templates on {class}",
                    owner.name
                ));
                true
            }
            Some(Err(why)) => {
                if let Some(r) = self.s.stateful_set_replacement.as_mut() {
                    r.manifest = None;
                    r.refused = Some(why.clone());
                }
                false
            }
            Some(Ok(())) => {
                self.act(Action::DeleteStatefulSet {
                    name: owner.name.clone(),
                    uid: owner.uid.clone(),
                });
                self.say(format!(
                    "replacing StatefulSet {} so that its claim templates name {class} (templates cannot be changed in place; pods and claims are kept)",
                    owner.name
                ));
                true
            }
        }
    }

    // ---- Done, Erasing: the source erased after the window, if still safe ---------------

    /// Why the source may not be erased now, if not. Re-checked at every step of the
    /// erasure, from the world as it is now: the status says the move was verified,
    /// the world must say the claim lives on the new volume and the source is free.
    fn erasure_blocked(&self) -> Option<String> {
        let (Some(source), Some(destination)) =
            (&self.s.source_root_hash, &self.s.destination_root_hash)
        else {
            return Some("the move has no manifest root hashes".into());
        };
        if !is_root_hash(source) || source != destination {
            return Some("the manifest root hashes are not equal".into());
        }
        let done = self.s.times.done.as_ref()?.0;
        let window = self.settings.retention(self.o.spec.retention_hours);
        let after = done.checked_add(window).ok()?;
        if self.now < after {
            return Some(format!("the retention window lasts until {after}"));
        }
        let dest_volume = self.destination_volume_name().unwrap_or_default();
        let on_destination = self.o.claim.as_ref().is_some_and(|c| {
            c.bound
                && !dest_volume.is_empty()
                && c.volume_name.as_deref() == Some(dest_volume.as_str())
        });
        if !on_destination {
            return Some(format!(
                "claim {} is not bound to {dest_volume}",
                self.claim_name()
            ));
        }
        if let Some(v) = &self.o.source_volume {
            // Exactly the claim the move released (this namespace, this name, its UID),
            // and not bound again: the status alone (which only the operator may write)
            // never picks the volume to erase, the volume's own record must agree.
            let released_by_us = v.claim_ref.as_ref().is_some_and(|r| {
                r.namespace == self.o.namespace
                    && r.name == self.claim_name()
                    && r.uid.is_some()
                    && r.uid == self.s.source_claim_uid
            });
            let unbound = matches!(v.phase, VolumePhase::Released | VolumePhase::Failed);
            if !released_by_us || !unbound {
                return Some(format!(
                    "PersistentVolume {} is not the released volume of the original claim {} (its claimRef or phase changed)",
                    v.name,
                    self.claim_name()
                ));
            }
        }
        None
    }

    fn done(&mut self) {
        let Some(source) = self.s.source_volume.clone() else {
            return;
        };
        if self.o.source_volume.is_none() {
            self.enter(Phase::Erased);
            return self.say(format!(
                "PersistentVolume {source} was deleted by someone else before the retention window ended; it held manifest root {}",
                self.s.source_root_hash.clone().unwrap_or_default()
            ));
        }
        match self.erasure_blocked() {
            None => self.enter(Phase::Erasing),
            Some(why) => {
                let held = if self
                    .s
                    .times
                    .erase_after
                    .as_ref()
                    .is_some_and(|t| self.now < t.0)
                {
                    format!("the source {source} is kept: {why}")
                } else {
                    format!("erasure of {source} held: {why}")
                };
                let template = self
                    .template_left_outside()
                    .map(|why| format!("; {why}"))
                    .unwrap_or_default();
                self.say(format!("{held}{template}"));
            }
        }
    }

    fn erasing(&mut self) {
        let source = self.s.source_volume.clone().unwrap_or_default();
        let Some(v) = self.o.source_volume.clone() else {
            self.enter(Phase::Erased);
            self.s.progress = Some("erased".into());
            return self.say(format!(
                "PersistentVolume {source} erased through its reclaim path; it held manifest root {}",
                self.s.source_root_hash.clone().unwrap_or_default()
            ));
        };
        if let Some(why) = self.erasure_blocked() {
            // Stop a deletion the world no longer allows, and hold.
            if v.reclaim != Reclaim::Retain {
                self.act(Action::SetReclaimPolicy {
                    volume: source.clone(),
                    policy: Reclaim::Retain,
                });
            }
            self.s.phase = Some(Phase::Done);
            return self.say(format!("erasure of {source} stopped: {why}"));
        }
        if v.phase == VolumePhase::Failed {
            return self.fail(format!(
                "the provisioner could not delete PersistentVolume {source} (phase Failed); erase it by hand: it held manifest root {}",
                self.s.source_root_hash.clone().unwrap_or_default()
            ));
        }
        self.act(Action::DeleteVolume { volume: source });
        self.say("erasing the source through its reclaim path");
    }

    // ---- RollingBack -------------------------------------------------------------

    fn rolling_back(&mut self) {
        let name = self.claim_name().to_string();
        let ns = self.o.namespace.clone();
        let source = self.s.source_volume.clone().unwrap_or_default();
        let destination = self.destination_volume_name();
        let mut complete = true;

        // 1. The movers and their credentials gone.
        if !self.o.transfers.is_empty() {
            self.act(Action::DeleteTransfers);
            complete = false;
        }
        if self.o.credentials.is_some() {
            self.act(Action::RevokeCredentials);
            complete = false;
        }

        // 2. The claim back on the source volume.
        let original_uid = self.s.source_claim_uid.clone();
        let mut user_deleted_claim = false;
        let released = self.s.times.claim_released.is_some();
        let claim_on_source = match &self.o.claim {
            // The original claim, being deleted by the move's own switch (a pod still
            // holds it): it will be gone, then recreated on the source; until then the
            // rollback is not over.
            Some(c) if Some(&c.uid) == original_uid.as_ref() && c.deleting && released => false,
            // Being deleted by someone else: their decision stands, as below.
            Some(c) if Some(&c.uid) == original_uid.as_ref() && c.deleting => {
                user_deleted_claim = true;
                true
            }
            Some(c) if Some(&c.uid) == original_uid.as_ref() => true,
            Some(c) if !source.is_empty() && c.volume_name.as_deref() == Some(source.as_str()) => {
                c.bound
            }
            Some(c)
                if destination.is_some() && c.volume_name.as_deref() == destination.as_deref() =>
            {
                // The claim is on the new volume: stop the application, then release it.
                self.stop_owner();
                if self.o.owner.as_ref().is_none_or(|o| o.replicas == 0) && self.o.claim_users == 0
                {
                    self.act(Action::DeleteClaim {
                        name: name.clone(),
                        uid: c.uid.clone(),
                    });
                }
                false
            }
            Some(c) => {
                let other = c.volume_name.clone().unwrap_or_else(|| "no volume".into());
                return self.fail(format!(
                    "rollback stopped: a PersistentVolumeClaim {name} not made by the move exists (it names {other}); the source {source} is kept (Retain)"
                ));
            }
            None if released => {
                match &self.o.source_volume {
                    None => {
                        return self.fail(format!(
                            "rollback stopped: PersistentVolume {source} (the source) is gone"
                        ));
                    }
                    Some(v) => {
                        let pre_bound = v.claim_ref.as_ref().is_some_and(|r| {
                            r.namespace == ns && r.name == name && r.uid.is_none()
                        });
                        if !pre_bound {
                            self.act(Action::BindVolume {
                                volume: source.clone(),
                                namespace: ns.clone(),
                                claim: name.clone(),
                            });
                        }
                        self.act(Action::CreateClaim {
                            name: name.clone(),
                            volume: source.clone(),
                            copy: self.s.claim.clone().unwrap_or_default(),
                            storage_class: self
                                .s
                                .claim
                                .as_ref()
                                .and_then(|c| c.storage_class_name.clone()),
                        });
                    }
                }
                false
            }
            None => {
                // Deleted by someone before the switch: their decision stands.
                user_deleted_claim = true;
                true
            }
        };
        complete &= claim_on_source;

        // 3. The destination removed, only once the claim is off it.
        if claim_on_source {
            if let Some(c) = &self.o.destination_claim {
                self.act(Action::DeleteClaim {
                    name: self.s.destination_claim.clone().unwrap_or_default(),
                    uid: c.uid.clone(),
                });
                complete = false;
            }
            if let Some(v) = &self.o.destination_volume
                && v.name != source
            {
                self.act(Action::DeleteVolume {
                    volume: v.name.clone(),
                });
                complete = false;
            }
        }

        // 4. The source's reclaim policy as it was, once its claim is back on it; a
        //    source whose claim someone deleted stays Retain (its data kept, said so).
        if let Some(v) = &self.o.source_volume {
            let original = self
                .s
                .source_reclaim_policy
                .as_deref()
                .and_then(Reclaim::parse)
                .unwrap_or(Reclaim::Retain);
            let wanted = if user_deleted_claim {
                Reclaim::Retain
            } else {
                original
            };
            if claim_on_source && v.reclaim != wanted {
                self.act(Action::SetReclaimPolicy {
                    volume: source.clone(),
                    policy: wanted,
                });
                complete = false;
            }
        }

        // 5. The replicas restored, once the claim is back on the source.
        if claim_on_source
            && let (Some(original), Some(owner)) = (self.s.original_replicas, self.o.owner.clone())
            && original > 0
            && owner.replicas == 0
        {
            let target = self.owner_ref().unwrap_or(WorkloadRef {
                kind: owner.kind.clone(),
                name: owner.name.clone(),
            });
            self.act(Action::ScaleOwner {
                owner: target,
                replicas: original,
            });
            complete = false;
        }

        let why = self.s.rollback_reason.clone().unwrap_or_default();
        if complete {
            self.enter(Phase::RolledBack);
            self.s.progress = Some("rolled back".into());
            let kept = if user_deleted_claim {
                format!(
                    "; claim {name} had been deleted by someone, so it is not recreated and PersistentVolume {source} is kept (Retain): delete it by hand if that was meant"
                )
            } else {
                String::new()
            };
            self.say(format!("rolled back: {why}{kept}"));
        } else {
            self.say(format!("rolling back: {why}"));
        }
    }

    fn stop_owner(&mut self) {
        if let Some(owner) = self.o.owner.clone()
            && owner.replicas > 0
        {
            let target = self.owner_ref().unwrap_or(WorkloadRef {
                kind: owner.kind.clone(),
                name: owner.name.clone(),
            });
            self.act(Action::ScaleOwner {
                owner: target,
                replicas: 0,
            });
        }
    }

    // ---- The status as written ---------------------------------------------------

    fn finish(mut self) -> Step {
        let phase = self.phase();
        self.s.phase = Some(phase);
        self.s.observed_generation = self.o.generation;
        let verified = matches!(
            (&self.s.source_root_hash, &self.s.destination_root_hash),
            (Some(a), Some(b)) if a == b
        );
        let mismatch = matches!(
            (&self.s.source_root_hash, &self.s.destination_root_hash),
            (Some(a), Some(b)) if a != b
        );
        let message = self.s.message.clone().unwrap_or_default();
        let observed = vec![
            conditions::Observed::new(
                "Progressing",
                !phase.is_terminal() && phase != Phase::Done,
                phase.as_str(),
                message.clone(),
            ),
            conditions::Observed::new(
                "Verified",
                verified,
                if verified {
                    "ManifestsEqual"
                } else if mismatch {
                    "ManifestsDiffer"
                } else {
                    "NotVerified"
                },
                match (&self.s.source_root_hash, &self.s.destination_root_hash) {
                    (Some(a), Some(b)) => format!("source root {a}, destination root {b}"),
                    _ => "no manifests compared yet".into(),
                },
            ),
            conditions::Observed::new(
                "SourceErased",
                phase == Phase::Erased,
                if phase == Phase::Erased {
                    "Erased"
                } else {
                    "Kept"
                },
                self.s.source_volume.clone().unwrap_or_default(),
            ),
        ];
        self.s.conditions = conditions::settle(
            &self.s.conditions,
            observed,
            self.o.generation,
            &Time(self.now),
        );
        Step {
            status: self.s,
            actions: self.actions,
        }
    }
}
