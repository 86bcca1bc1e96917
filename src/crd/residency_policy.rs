use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;

use super::Selector;
use serde::{Deserialize, Serialize};

/// A residency policy: which pods carry data that must stay in an enclave, and how
/// strictly the operator keeps them there.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "enclave.dev",
    version = "v1alpha1",
    kind = "ResidencyPolicy",
    plural = "residencypolicies",
    shortname = "rpol",
    shortname = "residency",
    status = "ResidencyPolicyStatus",
    printcolumn = r#"{"name":"Enclave","type":"string","jsonPath":".spec.enclave"}"#,
    printcolumn = r#"{"name":"Enforcement","type":"string","jsonPath":".spec.enforcement"}"#,
    printcolumn = r#"{"name":"Matched","type":"integer","jsonPath":".status.matchedPods"}"#,
    printcolumn = r#"{"name":"Compliant","type":"integer","jsonPath":".status.compliantPods"}"#,
    printcolumn = r#"{"name":"Migrating","type":"integer","jsonPath":".status.migratingPods"}"#,
    printcolumn = r#"{"name":"Blocked","type":"integer","jsonPath":".status.blockedPods"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ResidencyPolicySpec {
    /// Name of the DataEnclave whose sites the matched pods must run on.
    #[schemars(length(min = 1, max = 253))]
    pub enclave: String,

    /// Which pods the policy covers.
    #[serde(rename = "match")]
    pub match_: PolicyMatch,

    /// `Enforce` mutates, denies and migrates; `Audit` changes nothing and reports
    /// everything Enforce would do.
    #[serde(default)]
    pub enforcement: Enforcement,

    /// Soft preferences among the enclave's sites.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<Placement>,

    /// How pods already running outside the enclave are moved into it.
    #[serde(default)]
    pub migration: Migration,

    /// Network fencing of the matched pods.
    #[serde(default)]
    pub network: Network,

    /// Volume rules for the matched pods.
    #[serde(default)]
    pub volumes: Volumes,

    /// How this policy's admission is enforced, when it should differ from the
    /// operator's `--admission` choice (to move policies between engines one at a time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admission: Option<AdmissionSettings>,
}

/// Per-policy admission settings.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionSettings {
    /// `Native` (admission policies evaluated by the API server, Kubernetes 1.36+) or
    /// `Webhook` (the operator's webhooks). Unset: the operator's `--admission` choice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<AdmissionEngine>,
}

/// An admission engine.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum AdmissionEngine {
    Native,
    Webhook,
}

/// Selects the pods of a policy. Namespaces are chosen by label so that a tenant
/// cannot leave the scope by renaming a workload.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyMatch {
    /// Namespaces whose pods are in scope. Must not be empty: use a label such as
    /// `enclave.dev/residency: eu`.
    #[x_kube(validation = Rule::new("(has(self.matchLabels) && size(self.matchLabels) > 0) || (has(self.matchExpressions) && size(self.matchExpressions) > 0)").message("match.namespaceSelector must have matchLabels or matchExpressions: an empty selector would cover every namespace"))]
    pub namespace_selector: Selector,
    /// Pods within those namespaces; absent or empty means all of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<Selector>,
}

/// What the operator does with pods in scope.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Enforcement {
    /// Mutate new pods into the enclave, deny the ones that cannot go there, migrate
    /// running pods.
    #[default]
    Enforce,
    /// Block and change nothing; count and report what Enforce would do.
    Audit,
}

/// Soft placement preferences.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Placement {
    /// Sites the scheduler should prefer, with weights; added as preferred node affinity.
    #[serde(default)]
    #[schemars(length(max = 32))]
    pub preferred_sites: Vec<PreferredSite>,
}

/// A weighted preference for one site of the enclave.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PreferredSite {
    /// Name of a site of the enclave.
    #[schemars(length(min = 1, max = 63))]
    pub site: String,
    /// Weight from 1 to 100, as in preferred node affinity.
    #[schemars(range(min = 1, max = 100))]
    pub weight: i32,
}

/// Migration of pods that run outside the enclave.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Migration {
    /// Evict in-scope pods that run outside the enclave so that their owners recreate
    /// them inside it.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Evictions per minute across the policy, at least 1.
    #[serde(default = "default_max_evictions_per_minute")]
    #[schemars(range(min = 1, max = 100000))]
    pub max_evictions_per_minute: i32,
    /// Pods of the policy that may be on their way (evicted, not yet replaced) at once, at least 1.
    #[serde(default = "default_max_concurrent")]
    #[schemars(range(min = 1, max = 10000))]
    pub max_concurrent: i32,
    /// Also evict pods that no controller owns. They are not recreated, so by default
    /// they are reported and left running.
    #[serde(default)]
    pub evict_unmanaged_pods: bool,
    /// Moving the data of in-scope claims bound to volumes outside the enclave
    /// (VolumeMigrations in the policy's namespaces).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_moves: Option<VolumeMoves>,
}

/// How the data of claims outside the enclave is moved in (see VolumeMigration).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumeMoves {
    /// The operator creates a VolumeMigration for every claim of the policy's
    /// namespaces bound to a volume outside the enclave (one per claim; a move that
    /// rolled back is not created again until someone deletes it). Off: people create
    /// them.
    #[serde(default)]
    pub create_moves: bool,
    /// A move waits for an AccessApproval (decision Approve, `spec.volumeMigration`)
    /// by an approver of the enclave before it changes anything.
    #[serde(default = "default_true")]
    pub require_approval: bool,
    /// Moves of the policy's namespaces that copy, switch or roll back at once.
    #[serde(default = "default_one")]
    #[schemars(range(min = 1, max = 100))]
    pub max_concurrent: i32,
    /// The shortest time the source volume is kept after the application runs on the
    /// new one; a VolumeMigration cannot ask for less.
    #[serde(default = "default_min_retention_hours")]
    #[schemars(range(min = 0, max = 8760))]
    pub min_retention_hours: i32,
    /// The retention when the VolumeMigration names none.
    #[serde(default = "default_retention_hours")]
    #[schemars(range(min = 0, max = 8760))]
    pub default_retention_hours: i32,
    /// How long the application may take to stop before the move rolls back.
    #[serde(default = "default_quiesce_minutes")]
    #[schemars(range(min = 1, max = 1440))]
    pub quiesce_timeout_minutes: i32,
    /// At most this many MiB per second on the wire for each move's copy (rsync's
    /// `--bwlimit`), so that moves do not fill the link between data centres. It
    /// lengthens the final sync too, while the application is stopped. Unset: no limit.
    /// Several policies over one namespace: the lowest.
    #[serde(
        default,
        rename = "bandwidthLimitMiBPerSecond",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = 1, max = 1048576))]
    pub bandwidth_limit_mib_per_second: Option<i32>,
}

impl Default for VolumeMoves {
    fn default() -> Self {
        Self {
            create_moves: false,
            require_approval: true,
            max_concurrent: default_one(),
            min_retention_hours: default_min_retention_hours(),
            default_retention_hours: default_retention_hours(),
            quiesce_timeout_minutes: default_quiesce_minutes(),
            bandwidth_limit_mib_per_second: None,
        }
    }
}

fn default_one() -> i32 {
    1
}
fn default_min_retention_hours() -> i32 {
    24
}
fn default_retention_hours() -> i32 {
    168
}
fn default_quiesce_minutes() -> i32 {
    10
}

impl Default for Migration {
    fn default() -> Self {
        Self {
            enabled: true,
            max_evictions_per_minute: default_max_evictions_per_minute(),
            max_concurrent: default_max_concurrent(),
            evict_unmanaged_pods: false,
            volume_moves: None,
        }
    }
}

fn default_true() -> bool {
    true
}
fn default_max_evictions_per_minute() -> i32 {
    30
}
fn default_max_concurrent() -> i32 {
    5
}

/// Network fencing.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Network {
    /// `Enclave` allows traffic only within the enclave and through its gateway; `None`
    /// leaves the network alone.
    #[serde(default)]
    pub isolation: NetworkIsolation,
    /// Extra egress destinations allowed from matched pods, as CIDRs.
    #[serde(default, rename = "allowEgressCIDRs")]
    #[schemars(length(max = 64), inner(length(max = 64)))]
    #[x_kube(validation = Rule::new("self.all(c, isCIDR(c))").message("network.allowEgressCIDRs must hold CIDRs such as 10.0.0.0/8"))]
    pub allow_egress_cidrs: Vec<String>,
}

/// Network isolation mode.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum NetworkIsolation {
    /// Fence matched pods with NetworkPolicies.
    #[default]
    Enclave,
    /// Do not manage NetworkPolicies.
    None,
}

/// Volume rules.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Volumes {
    /// Require the PVCs of matched pods to use the enclave's storage classes.
    #[serde(default = "default_true")]
    pub enforce_storage_classes: bool,
}

impl Default for Volumes {
    fn default() -> Self {
        Self {
            enforce_storage_classes: true,
        }
    }
}

/// Observed state of a ResidencyPolicy, written by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResidencyPolicyStatus {
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Pods in scope.
    #[serde(default)]
    pub matched_pods: i32,
    /// Pods in scope that run (or are bound) on enclave nodes, or are pending with a
    /// placement that keeps them inside.
    #[serde(default)]
    pub compliant_pods: i32,
    /// Pods in scope outside the enclave.
    #[serde(default)]
    pub non_compliant_pods: i32,
    /// Pods evicted and on their way into the enclave.
    #[serde(default)]
    pub migrating_pods: i32,
    /// Pods outside the enclave that will not be moved automatically (volume outside
    /// the enclave, no controller, eviction disabled).
    #[serde(default)]
    pub blocked_pods: i32,
    /// Claims in scope (and enclave storage classes) whose data lives or would be
    /// provisioned outside the enclave.
    #[serde(default)]
    pub non_compliant_volumes: i32,
    /// Paths out of the enclave that the NetworkPolicies selecting in-scope pods open.
    #[serde(default)]
    pub network_leaks: i32,
    /// Up to 50 violations, the rest counted in the totals above.
    #[serde(default)]
    pub violations: Vec<Violation>,
    /// `Ready`, `Compliant`, `Conflicted`, `VolumesCompliant` and `NetworkFenced`.
    #[serde(default)]
    #[schemars(schema_with = "super::conditions_schema")]
    pub conditions: Vec<Condition>,
}

/// One object that breaks the policy.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Violation {
    /// Kind of the object, e.g. Pod.
    pub kind: String,
    /// Its namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Its name.
    pub name: String,
    /// A CamelCase reason, e.g. OutsideEnclave, VolumeOutsideEnclave, Unmanaged,
    /// ClaimOutsideEnclave, StorageClassReachesOutside, NetworkLeak.
    pub reason: String,
    /// What is wrong and what will happen.
    pub message: String,
}
