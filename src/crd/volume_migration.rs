use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The move of one PersistentVolumeClaim's data from a volume outside the enclave onto
/// enclave storage, keeping the claim's name: a first copy while the application runs,
/// a final delta with the application scaled to zero and the source read-only, both
/// sides' manifests (SHA-256 of every file's content) compared, the claim switched to
/// the new volume, the application's replicas restored, and after a retention window
/// the source erased through its storage class's reclaim path. Any failure before the
/// erasure rolls back: the application back on its original volume with its original
/// replicas, the half-made destination removed, the reason in `status.rollbackReason`.
///
/// Where the move stands is kept in `status` (written by the operator alone, before
/// each step it takes), so that a new leader resumes it or rolls it back from there.
/// Who approved the move is recorded in `status.approvedBy` by the operator from an
/// approval it counted; nothing in the spec can say a move is approved. The spec cannot
/// change once created: a different move is a new VolumeMigration.
///
/// With approval required (the policy's `migration.volumeMoves.requireApproval`, the
/// default), the move waits until an approver of the enclave creates an AccessApproval
/// naming it (`spec.volumeMigration`: namespace, name and UID).
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "enclave.dev",
    version = "v1alpha1",
    kind = "VolumeMigration",
    plural = "volumemigrations",
    shortname = "volmig",
    shortname = "volmigs",
    namespaced,
    status = "VolumeMigrationStatus",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Claim","type":"string","jsonPath":".spec.claimName"}"#,
    printcolumn = r#"{"name":"Progress","type":"string","jsonPath":".status.progress"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = Rule::new("self == oldSelf").message("spec is immutable: a VolumeMigration cannot be changed once created (delete it before it starts copying, or create another)"))]
#[serde(rename_all = "camelCase")]
pub struct VolumeMigrationSpec {
    /// The PersistentVolumeClaim whose data moves, in the VolumeMigration's namespace.
    /// After the move the claim has the same name and is bound to the new volume.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub claim_name: String,

    /// The StorageClass of the new volume; it must be one of the enclave's
    /// (`spec.storage.storageClassNames` of the DataEnclave) and able to provision only
    /// inside it. Absent: the enclave's first class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub storage_class_name: Option<String>,

    /// How long the source volume is kept after the application is back on the new
    /// one, in hours, before it is erased. The policy's minimum applies when this is
    /// shorter or absent (a move cannot shorten the window its policy sets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 8760))]
    pub retention_hours: Option<i32>,
}

/// Where a move stands.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema,
)]
pub enum MigrationPhase {
    /// Created; the preflight checks have not passed yet.
    Planned,
    /// Preflight passed; waiting for an approval the policy requires.
    AwaitingApproval,
    /// The first copy, while the application runs.
    Copying,
    /// The application is being scaled to zero (its replicas are remembered).
    Quiescing,
    /// The final delta, with the source read-only and the application stopped.
    FinalSync,
    /// Both sides compute their manifests; the move goes on only if they are equal.
    Verifying,
    /// Both volumes set to Retain, the old claim released, the new volume pre-bound
    /// and the claim recreated under its name.
    Switching,
    /// The application's replicas are being restored, now on the new volume.
    Restoring,
    /// The application runs on the new volume; the source is kept until the
    /// retention window ends.
    Done,
    /// The source volume is being deleted through its class's reclaim path.
    Erasing,
    /// The source volume is gone.
    Erased,
    /// A failure before erasure: the original claim, volume and replicas are being
    /// restored and the destination removed.
    RollingBack,
    /// The application is back on its original volume; see `rollbackReason`.
    RolledBack,
    /// Refused by preflight (nothing was changed) or stopped where only a person can
    /// decide; the source is never erased from here. See `message`.
    Failed,
}

impl MigrationPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            MigrationPhase::Planned => "Planned",
            MigrationPhase::AwaitingApproval => "AwaitingApproval",
            MigrationPhase::Copying => "Copying",
            MigrationPhase::Quiescing => "Quiescing",
            MigrationPhase::FinalSync => "FinalSync",
            MigrationPhase::Verifying => "Verifying",
            MigrationPhase::Switching => "Switching",
            MigrationPhase::Restoring => "Restoring",
            MigrationPhase::Done => "Done",
            MigrationPhase::Erasing => "Erasing",
            MigrationPhase::Erased => "Erased",
            MigrationPhase::RollingBack => "RollingBack",
            MigrationPhase::RolledBack => "RolledBack",
            MigrationPhase::Failed => "Failed",
        }
    }

    /// Nothing more happens from here.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            MigrationPhase::Erased | MigrationPhase::RolledBack | MigrationPhase::Failed
        )
    }
}

/// The workload whose pods mount the claim.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadRef {
    /// Deployment or StatefulSet.
    pub kind: String,
    pub name: String,
}

/// What the operator needs to recreate the claim under its name (on the new volume, or
/// on the original one when rolling back) once the original object is gone.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClaimCopy {
    /// `spec.resources.requests.storage` of the original claim, as written.
    pub storage: String,
    /// `spec.accessModes` of the original claim.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub access_modes: Vec<String>,
    /// The original claim's labels (a StatefulSet's selector may rely on them).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// `spec.storageClassName` of the original claim, to recreate it as it was when
    /// rolling back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

/// A StatefulSet created again so that its claim templates name the enclave's class.
/// `volumeClaimTemplates` cannot be changed in place, so the set is deleted with its
/// pods and claims orphaned (none run: it is at zero replicas) and created again from
/// `manifest`, which is written here before the delete: an operator that stops in
/// between finds the set to create in the status.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatefulSetReplacement {
    /// The UID of the StatefulSet replaced; only that object is ever deleted.
    pub replaced_uid: String,
    /// The claim templates whose class was outside the enclave, with that class.
    pub templates: Vec<TemplateClassChange>,
    /// The class they name now.
    pub storage_class_name: String,
    /// The StatefulSet to create (JSON), until it exists again; cleared then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<String>,
    /// When the new StatefulSet was seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recreated: Option<Time>,
    /// Why the API server would not admit the new set (asked with a dry run before the
    /// old one is deleted): the set is then left as it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
}

/// One claim template whose class changed.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TemplateClassChange {
    pub name: String,
    /// The class it named before (absent: the default class).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_storage_class_name: Option<String>,
}

/// When each step began (written before the step's action is taken).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct MigrationTimes {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub planned: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy_started: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quiesce_started: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_sync_started: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_started: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switch_started: Option<Time>,
    /// When the operator deleted the original claim: from here a missing claim is the
    /// operator's own doing, to be recreated (on the new volume, or on the original one
    /// when rolling back).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim_released: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_started: Option<Time>,
    /// The application back, on the new volume; the retention window starts here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done: Option<Time>,
    /// When the source may be erased (`done` plus the retention window).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub erase_after: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub erase_started: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub erased: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_started: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolled_back: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<Time>,
}

/// Where a move stands, written by the operator before each step it takes. The chart
/// gives nobody else the right to write it (`volumemigrations/status`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumeMigrationStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<MigrationPhase>,
    /// What the move is doing or waiting for, or why it was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Who approved the move, from an approval the operator counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_by: Option<String>,
    /// The workload whose replicas are scaled to zero and restored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<WorkloadRef>,
    /// The owner's replicas before the move scaled it to zero; restored afterwards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_replicas: Option<i32>,
    /// The UID of the original claim: only that object is ever deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_claim_uid: Option<String>,
    /// The original claim's size, access modes and labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim: Option<ClaimCopy>,
    /// The PersistentVolume the data comes from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_volume: Option<String>,
    /// Its reclaim policy before the move set it to Retain; restored on rollback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_reclaim_policy: Option<String>,
    /// The claim the receiver writes into until the switch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_claim: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_claim_uid: Option<String>,
    /// The PersistentVolume the data goes to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_volume: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_storage_class: Option<String>,
    /// The source's size, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_total: Option<i64>,
    /// Bytes transferred by the current pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_done: Option<i64>,
    /// Files transferred by the current pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files_done: Option<i64>,
    /// The current pass's rate, in bytes per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_per_second: Option<i64>,
    /// The pass and its progress, for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
    /// The root hash (SHA-256, hex) of the source's manifest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_root_hash: Option<String>,
    /// The root hash of the destination's manifest; the switch happens only when it
    /// equals the source's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_root_hash: Option<String>,
    /// SHA-256 fingerprints of the certificates made for this move's transfer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender_certificate_sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receiver_certificate_sha256: Option<String>,
    #[serde(default)]
    pub times: MigrationTimes,
    /// The phase a rollback started from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolled_back_from: Option<MigrationPhase>,
    /// Why the move was rolled back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_reason: Option<String>,
    /// Passes run again because a node could not start a mover's container (at most
    /// 3, then the move rolls back).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mover_restarts: Option<i32>,
    /// The owner StatefulSet, created again with the claim template on the enclave's
    /// class (the template is immutable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stateful_set_replacement: Option<StatefulSetReplacement>,
    #[serde(default)]
    #[schemars(schema_with = "super::conditions_schema")]
    pub conditions: Vec<Condition>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::{CustomResourceExt, Resource};

    /// `kubectl get volumemigrations` shows phase, claim and progress; the kind is
    /// namespaced (a move belongs to the claim's namespace) and its spec immutable.
    #[test]
    fn the_crd_is_namespaced_immutable_and_shows_progress() {
        let crd = VolumeMigration::crd();
        assert_eq!(crd.spec.scope, "Namespaced");
        let version = &crd.spec.versions[0];
        let columns: Vec<&str> = version
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(columns, ["Phase", "Claim", "Progress", "Age"]);
        let schema = serde_json::to_string(&version.schema).expect("schema serializes");
        assert!(schema.contains("self == oldSelf"), "{schema}");
        assert!(
            version
                .subresources
                .as_ref()
                .is_some_and(|s| s.status.is_some())
        );
        assert_eq!(VolumeMigration::group(&()), "enclave.dev");
    }

    #[test]
    fn status_round_trips_with_phases_as_words() {
        let status = VolumeMigrationStatus {
            phase: Some(MigrationPhase::AwaitingApproval),
            ..Default::default()
        };
        let json = serde_json::to_value(&status).expect("serializes");
        assert_eq!(json["phase"], "AwaitingApproval");
        let back: VolumeMigrationStatus = serde_json::from_value(json).expect("parses");
        assert_eq!(back, status);
        assert_eq!(MigrationPhase::RollingBack.as_str(), "RollingBack");
    }
}
