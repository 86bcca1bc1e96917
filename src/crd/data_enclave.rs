use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;

use super::Selector;
use serde::{Deserialize, Serialize};

/// The label prefix a kubelet may not set on its own Node while the NodeRestriction
/// admission plugin is on. Site selectors built only from such keys cannot be joined
/// by a compromised or misconfigured node labelling itself into the enclave.
pub const TRUSTED_LABEL_PREFIX: &str = "node-restriction.kubernetes.io/";

/// A data enclave: the sites (data centres) where in-scope data may live, the storage
/// classes that keep volumes there, the gateway through which traffic may cross its
/// boundary, and the staff allowed to reach into its pods.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "enclave.dev",
    version = "v1alpha1",
    kind = "DataEnclave",
    plural = "dataenclaves",
    shortname = "enclave",
    shortname = "enclaves",
    status = "DataEnclaveStatus",
    printcolumn = r#"{"name":"Jurisdiction","type":"string","jsonPath":".spec.jurisdiction"}"#,
    printcolumn = r#"{"name":"Ready-Nodes","type":"string","jsonPath":".status.readyNodesBySite"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Labels-Trusted","type":"string","jsonPath":".status.conditions[?(@.type==\"SiteLabelsTrusted\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct DataEnclaveSpec {
    /// The jurisdiction whose law the enclave satisfies, e.g. `EU`. Informational:
    /// it is shown in `kubectl get` and copied into reports.
    #[x_kube(validation = Rule::new("self.size() > 0").message("spec.jurisdiction must not be empty, e.g. EU"))]
    #[schemars(length(max = 64))]
    pub jurisdiction: String,

    /// The sites (data centres) of the enclave. A node belongs to the enclave when it
    /// matches the nodeSelector of at least one site. At least one site; names unique.
    #[schemars(length(min = 1, max = 32))]
    #[x_kube(validation = Rule::new("self.all(s, self.exists_one(t, t.name == s.name))").message("spec.sites: site names must be unique"))]
    pub sites: Vec<Site>,

    /// Storage classes whose volumes live inside the enclave. Volumes of in-scope pods
    /// must use one of them when a policy enforces storage classes.
    #[serde(default, skip_serializing_if = "EnclaveStorage::is_empty")]
    pub storage: EnclaveStorage,

    /// The pods through which traffic may enter or leave the enclave.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<Gateway>,

    /// Who may exec, attach or port-forward into in-scope pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<Access>,

    /// What in-scope pods may use although it lets data past the enclave's fence or
    /// storage rules. By default in-scope pods may not use `spec.hostNetwork`, nor inline
    /// volumes that reach storage or servers by themselves (nfs, iscsi, hostPath, inline
    /// CSI, ...): the kubelet mounts those on the node's network, to wherever the pod
    /// names, and no NetworkPolicy or storage class applies. List here only what the
    /// enclave really needs; everything listed applies to every pod of every policy of
    /// this enclave.
    #[serde(default, skip_serializing_if = "PodSecurity::is_empty")]
    pub pod_security: PodSecurity,
}

/// Exceptions to the side-door rules for the pods of an enclave, in the spirit of a
/// PodSecurityPolicy's `hostNetwork`, `volumes` and `allowedCSIDrivers`. These rules are
/// the enclave's own and independent of Pod Security Admission.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodSecurity {
    /// Admit in-scope pods with `spec.hostNetwork: true`. Such pods share their node's
    /// network and are outside every NetworkPolicy, so the enclave's fence does not hold
    /// them. Default false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_host_network: bool,

    /// Inline volume types in-scope pods may use, by their field name in a pod's
    /// `spec.volumes[]` (e.g. `nfs`, `hostPath`). configMap, secret, emptyDir,
    /// downwardAPI, projected, persistentVolumeClaim, image and ephemeral (judged by its
    /// claim template's storage class) are always allowed; inline CSI volumes are
    /// allowed per driver with `allowedCSIDrivers`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new("self.all(c, self.exists_one(d, d == c))").message("spec.podSecurity.allowedVolumeTypes must be unique"))]
    pub allowed_volume_types: Vec<InlineVolumeType>,

    /// CSI drivers whose inline volumes (`spec.volumes[].csi`) in-scope pods may use,
    /// e.g. `secrets-store.csi.k8s.io`. Claims provisioned by CSI drivers are judged by
    /// their storage class instead and need no entry here.
    #[serde(
        default,
        rename = "allowedCSIDrivers",
        skip_serializing_if = "Vec::is_empty"
    )]
    #[schemars(
        length(max = 64),
        inner(
            length(min = 1, max = 63),
            regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
        )
    )]
    #[x_kube(validation = Rule::new("self.all(c, self.exists_one(d, d == c))").message("spec.podSecurity.allowedCSIDrivers must be unique"))]
    pub allowed_csi_drivers: Vec<String>,
}

impl PodSecurity {
    fn is_empty(&self) -> bool {
        !self.allow_host_network
            && self.allowed_volume_types.is_empty()
            && self.allowed_csi_drivers.is_empty()
    }
}

/// An inline volume type that reaches storage or a server by itself, named as its field
/// in a pod's `spec.volumes[]`.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, JsonSchema,
)]
pub enum InlineVolumeType {
    #[serde(rename = "awsElasticBlockStore")]
    AwsElasticBlockStore,
    #[serde(rename = "azureDisk")]
    AzureDisk,
    #[serde(rename = "azureFile")]
    AzureFile,
    #[serde(rename = "cephfs")]
    Cephfs,
    #[serde(rename = "cinder")]
    Cinder,
    #[serde(rename = "fc")]
    Fc,
    #[serde(rename = "flexVolume")]
    FlexVolume,
    #[serde(rename = "flocker")]
    Flocker,
    #[serde(rename = "gcePersistentDisk")]
    GcePersistentDisk,
    #[serde(rename = "gitRepo")]
    GitRepo,
    #[serde(rename = "glusterfs")]
    Glusterfs,
    #[serde(rename = "hostPath")]
    HostPath,
    #[serde(rename = "iscsi")]
    Iscsi,
    #[serde(rename = "nfs")]
    Nfs,
    #[serde(rename = "photonPersistentDisk")]
    PhotonPersistentDisk,
    #[serde(rename = "portworxVolume")]
    PortworxVolume,
    #[serde(rename = "quobyte")]
    Quobyte,
    #[serde(rename = "rbd")]
    Rbd,
    #[serde(rename = "scaleIO")]
    ScaleIo,
    #[serde(rename = "storageos")]
    Storageos,
    #[serde(rename = "vsphereVolume")]
    VsphereVolume,
}

impl InlineVolumeType {
    /// Every type, in the order admission looks for them.
    pub const ALL: [InlineVolumeType; 21] = [
        Self::AwsElasticBlockStore,
        Self::AzureDisk,
        Self::AzureFile,
        Self::Cephfs,
        Self::Cinder,
        Self::Fc,
        Self::FlexVolume,
        Self::Flocker,
        Self::GcePersistentDisk,
        Self::GitRepo,
        Self::Glusterfs,
        Self::HostPath,
        Self::Iscsi,
        Self::Nfs,
        Self::PhotonPersistentDisk,
        Self::PortworxVolume,
        Self::Quobyte,
        Self::Rbd,
        Self::ScaleIo,
        Self::Storageos,
        Self::VsphereVolume,
    ];

    /// The field name in `spec.volumes[]`, as the API and the CRD spell it.
    pub fn field(self) -> &'static str {
        match self {
            Self::AwsElasticBlockStore => "awsElasticBlockStore",
            Self::AzureDisk => "azureDisk",
            Self::AzureFile => "azureFile",
            Self::Cephfs => "cephfs",
            Self::Cinder => "cinder",
            Self::Fc => "fc",
            Self::FlexVolume => "flexVolume",
            Self::Flocker => "flocker",
            Self::GcePersistentDisk => "gcePersistentDisk",
            Self::GitRepo => "gitRepo",
            Self::Glusterfs => "glusterfs",
            Self::HostPath => "hostPath",
            Self::Iscsi => "iscsi",
            Self::Nfs => "nfs",
            Self::PhotonPersistentDisk => "photonPersistentDisk",
            Self::PortworxVolume => "portworxVolume",
            Self::Quobyte => "quobyte",
            Self::Rbd => "rbd",
            Self::ScaleIo => "scaleIO",
            Self::Storageos => "storageos",
            Self::VsphereVolume => "vsphereVolume",
        }
    }
}

/// One data centre of the enclave.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Site {
    /// Name of the site, a DNS label such as `dublin`; referenced by policies'
    /// `placement.preferredSites`.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,

    /// Selects the site's nodes by their labels. Use keys under
    /// `node-restriction.kubernetes.io/`: a kubelet cannot set those on its own Node, so
    /// a node cannot label itself into the enclave (otherwise the enclave reports
    /// `SiteLabelsTrusted=False`). Must not be empty: an empty selector matches every node.
    #[x_kube(validation = Rule::new("(has(self.matchLabels) && size(self.matchLabels) > 0) || (has(self.matchExpressions) && size(self.matchExpressions) > 0)").message("nodeSelector must have matchLabels or matchExpressions: an empty selector would put every node in the enclave"))]
    pub node_selector: Selector,

    /// Free-form facts about the site (country, energy source, ...), for the people who
    /// read the DataEnclave; no decision reads them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
}

/// The storage of the enclave.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct EnclaveStorage {
    /// StorageClasses whose volumes are provisioned inside the enclave's sites.
    #[serde(default)]
    #[schemars(length(max = 64), inner(length(min = 1, max = 253)))]
    #[x_kube(validation = Rule::new("self.all(c, self.exists_one(d, d == c))").message("spec.storage.storageClassNames must be unique"))]
    pub storage_class_names: Vec<String>,
}

impl EnclaveStorage {
    fn is_empty(&self) -> bool {
        self.storage_class_names.is_empty()
    }
}

/// Pods allowed to carry traffic across the enclave boundary.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Gateway {
    /// Namespaces of the gateway pods.
    pub namespace_selector: Selector,
    /// The gateway pods within those namespaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<Selector>,
}

/// The staff approved to reach into in-scope pods.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Access {
    /// Groups (as authenticated by the API server) approved for exec, attach and port-forward.
    #[serde(default)]
    #[schemars(length(max = 256), inner(length(min = 1, max = 253)))]
    pub approved_groups: Vec<String>,
    /// Users approved for exec, attach and port-forward.
    #[serde(default)]
    #[schemars(length(max = 256), inner(length(min = 1, max = 253)))]
    pub approved_users: Vec<String>,
    /// Which reads of the enclave's data the authorizer keeps to the approved staff, on
    /// top of the proxies, the kubelet's API, and impersonating or minting tokens for
    /// approved subjects (always gated where the API server asks the authorizer; exec,
    /// attach and port-forward are the admission gate's). `Logs`: container logs of in-scope
    /// pods (`kubectl logs`). `Secrets`: get, list and watch of Secrets in the enclave's
    /// namespaces, and cluster-wide lists of Secrets. Default `[Logs]`; `[]` leaves
    /// reads to RBAC alone.
    #[serde(default = "default_gated_reads")]
    #[x_kube(validation = Rule::new("self.all(r, self.exists_one(s, s == r))").message("spec.access.gatedReads must be unique"))]
    #[schemars(length(max = 2))]
    pub gated_reads: Vec<GatedRead>,
    /// Users who may approve AccessGrants to this enclave (never their own), acknowledge
    /// break-glass grants and clear lockouts. With `approvedUsers` and `approvedGroups`
    /// empty ("no standing access"), an approved, unexpired grant is the only way in.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 253)))]
    pub approver_users: Vec<String>,
    /// Groups whose members may approve, as `approverUsers`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 253)))]
    pub approver_groups: Vec<String>,
    /// The longest AccessGrant this enclave approves, in minutes. Default 480 (8 h).
    #[serde(default = "default_max_grant_minutes")]
    #[schemars(range(min = 1, max = 10080))]
    pub max_grant_minutes: i32,
    /// How long a break-glass grant lasts at most, in minutes. Default 60.
    #[serde(default = "default_break_glass_minutes")]
    #[schemars(range(min = 1, max = 1440))]
    pub break_glass_minutes: i32,
    /// What counts as suspicious, and what is done about it. Unset: 5 denied attempts
    /// by one subject in 300 seconds raise the alarm, without lockout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anomalies: Option<AnomalyRules>,
}

/// When repeated denied attempts by one subject raise an alarm (a Warning Event, the
/// `enclave_operator_admission_suspicious_access_total` metric, the DataEnclave's
/// `SuspiciousAccess` condition naming the subject, a decision-log record) and whether
/// the subject is then locked out.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnomalyRules {
    /// Denied attempts by one subject within `windowSeconds` that raise the alarm.
    #[serde(default = "default_denied_attempts")]
    #[schemars(range(min = 1, max = 1000))]
    pub denied_attempts: i32,
    /// The window, in seconds.
    #[serde(default = "default_window_seconds")]
    #[schemars(range(min = 1, max = 86400))]
    pub window_seconds: i32,
    /// Distinct pods one subject is denied within `windowSeconds` that raise the alarm
    /// on their own, whatever `deniedAttempts` says (someone looking for a way in); 0
    /// turns the rule off.
    #[serde(default = "default_many_pods")]
    #[schemars(range(min = 0, max = 1000))]
    pub many_pods: i32,
    /// A denied attempt by a subject who holds an active grant of the enclave (so the
    /// attempt was outside its scope) raises the alarm at once.
    #[serde(default = "default_true")]
    pub outside_grant: bool,
    /// A denied attempt by a subject who has never had access to the enclave (not on
    /// its standing lists, no grant of theirs ever approved) raises the alarm at once.
    #[serde(default = "default_true")]
    pub never_approved: bool,
    /// Lock the subject out once an alarm for repeated denials or many pods is raised:
    /// every attempt on the enclave's pods is refused, even with a standing approval or
    /// an active grant, until an approver clears it (an AccessApproval with `decision:
    /// ClearLockout`). A single attempt (outside a grant, never approved) raises an
    /// alarm but never locks out: one mistyped pod name must not lock an engineer out in
    /// an incident, and someone who keeps trying crosses the other thresholds.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lockout: bool,
}

impl Default for AnomalyRules {
    fn default() -> Self {
        Self {
            denied_attempts: default_denied_attempts(),
            window_seconds: default_window_seconds(),
            many_pods: default_many_pods(),
            outside_grant: true,
            never_approved: true,
            lockout: false,
        }
    }
}

fn default_denied_attempts() -> i32 {
    5
}

fn default_window_seconds() -> i32 {
    300
}

fn default_many_pods() -> i32 {
    3
}

fn default_true() -> bool {
    true
}

fn default_max_grant_minutes() -> i32 {
    480
}

fn default_break_glass_minutes() -> i32 {
    60
}

/// A read the authorizer can keep to the approved staff.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum GatedRead {
    /// Container logs (`pods/log`) of in-scope pods.
    Logs,
    /// Secrets of the enclave's namespaces (get, list, watch), and cluster-wide lists.
    Secrets,
}

fn default_gated_reads() -> Vec<GatedRead> {
    vec![GatedRead::Logs]
}

impl Default for Access {
    /// Nobody approved, logs gated: an enclave is closed by default.
    fn default() -> Self {
        Self {
            approved_groups: Vec::new(),
            approved_users: Vec::new(),
            gated_reads: default_gated_reads(),
            approver_users: Vec::new(),
            approver_groups: Vec::new(),
            max_grant_minutes: default_max_grant_minutes(),
            break_glass_minutes: default_break_glass_minutes(),
            anomalies: None,
        }
    }
}

impl Access {
    /// Why a subject, as the API server authenticated it, is approved: a user named in
    /// `approvedUsers`, or a member of a group in `approvedGroups`; `None` when it is
    /// not. Service accounts are users named `system:serviceaccount:<ns>:<name>` and
    /// members of `system:serviceaccounts[:<ns>]`. The one rule the admission gate and
    /// the authorizer share.
    pub fn admits(&self, user: &str, groups: &[String]) -> Option<String> {
        if self.approved_users.iter().any(|u| u == user) {
            return Some(format!("approved user {user}"));
        }
        groups
            .iter()
            .find(|g| self.approved_groups.contains(g))
            .map(|group| format!("{user} as a member of approved group {group}"))
    }

    /// The approved staff as a refusal names them, `groups: a, b; users: c` (`none`
    /// for an empty list): the admission gate and the authorizer say it the same way.
    pub fn staff(&self) -> String {
        let list = |items: &[String]| {
            if items.is_empty() {
                "none".to_string()
            } else {
                items.join(", ")
            }
        };
        format!(
            "groups: {}; users: {}",
            list(&self.approved_groups),
            list(&self.approved_users)
        )
    }

    /// Why a subject may approve grants to this enclave: a user named in
    /// `approverUsers`, or a member of a group in `approverGroups` (the groups checked
    /// at creation of the approval); `None` when they may not.
    pub fn approver(&self, user: &str, groups: &[String]) -> Option<String> {
        if self.approver_users.iter().any(|u| u == user) {
            return Some(format!("approver {user}"));
        }
        groups
            .iter()
            .find(|g| self.approver_groups.contains(g))
            .map(|group| format!("{user} as a member of approver group {group}"))
    }

    /// Does the enclave gate this read?
    pub fn gates(&self, read: GatedRead) -> bool {
        self.gated_reads.contains(&read)
    }
}

/// Observed state of a DataEnclave, written by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct DataEnclaveStatus {
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The node inventory of each site.
    #[serde(default)]
    pub sites: Vec<SiteStatus>,
    /// Ready and total nodes per site in one line, e.g. `dublin=2/2 norway=1/1`, for
    /// `kubectl get` (printer columns show only the first element of a list).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ready_nodes_by_site: String,
    /// Bindings that give someone outside the approved staff a way to the enclave's
    /// data (exec, attach, port-forward, debug containers, logs, proxies, the kubelet's
    /// API, pod and workload writes, secrets, claims), to what decides its scope
    /// (namespace labels, admission objects, DataEnclave and ResidencyPolicy), or to
    /// an approved identity (impersonation, tokens): up to 50, unapproved subjects
    /// first, then node credentials, then built-in subjects.
    #[serde(default)]
    pub exposures: Vec<Exposure>,
    /// How many such bindings there are in all.
    #[serde(default)]
    pub exposure_count: i32,
    /// Of those, how many are to built-in system subjects (expected, not removable).
    #[serde(default)]
    pub built_in_exposure_count: i32,
    /// Of those, how many are to node credentials (`system:nodes`, `system:node:*`).
    #[serde(default)]
    pub node_exposure_count: i32,
    /// Namespaces whose pods may take host access (`hostPath`, privileged containers,
    /// host namespaces, added capabilities) on the enclave's nodes and read what the
    /// nodes hold, because Pod Security Admission does not enforce `baseline` there
    /// (label `pod-security.kubernetes.io/enforce`): up to 50, by name. Not listed:
    /// `kube-system`, the operator's namespace, and namespaces whose every pod an
    /// enforcing policy of the enclave places inside it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub host_access_namespaces: Vec<String>,
    /// How many such namespaces there are in all.
    #[serde(default)]
    pub host_access_namespace_count: i32,
    /// `Ready`, `SitesPopulated`, `SiteLabelsTrusted`, `AccessRestricted`,
    /// `HostAccessGuarded` (whether every namespace whose pods may run on the enclave's
    /// nodes refuses host access) and `AuthorizerInForce` (whether the API server asks
    /// the operator's authorizer before RBAC, so that logs, proxies and the kubelet API
    /// are kept to the approved staff).
    #[serde(default)]
    #[schemars(schema_with = "super::conditions_schema")]
    pub conditions: Vec<Condition>,
}

/// Someone outside the approved staff who can reach enclave data through RBAC.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Exposure {
    /// The binding, e.g. `RoleBinding shop/debuggers` or `ClusterRoleBinding ops`.
    pub binding: String,
    /// Who it gives access to, e.g. `User mallory` or `ServiceAccount ci/deployer`.
    pub subject: String,
    /// Through which role, e.g. `ClusterRole edit`.
    pub role: String,
    /// What it reaches, one category each: Exec, Attach, PortForward,
    /// EphemeralContainers, PodLogs, PodProxy, ServiceProxy, NodeProxy, NodeLogs,
    /// PodWrite, Workloads, ReadSecrets, Volumes, ImpersonateUsers, ImpersonateGroups,
    /// ImpersonateServiceAccounts, ImpersonateNodes, ImpersonateExtras,
    /// ServiceAccountTokens, NamespaceWrite, AdmissionWrite, EnclaveWrite, Wildcard
    /// (with `[names]` when restricted to named objects).
    pub grants: Vec<String>,
    /// Where: `namespace shop` or `all namespaces`.
    pub applies_to: String,
    /// A built-in system subject (e.g. `system:masters`): expected, not removable.
    #[serde(default)]
    pub built_in: bool,
    /// Who holds it: an unapproved subject, a node's credentials, or a built-in
    /// component.
    #[serde(default)]
    pub holder: ExposureHolder,
    /// Approved subjects it can act as (by impersonation or a minted token), e.g.
    /// `ServiceAccount tools/debugger`: it passes as them wherever they are approved.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub acts_as: Vec<String>,
}

/// Who holds an exposure.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ExposureHolder {
    /// Someone the enclave does not approve: a decision to make.
    #[default]
    Unapproved,
    /// A kubelet's credentials (`system:nodes`, `system:node:<name>`), those of nodes
    /// outside the enclave's sites too: a decision to make, listed after the others.
    Node,
    /// A control plane component: expected, not removable.
    BuiltIn,
}

/// How many nodes a site has.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SiteStatus {
    /// The site's name.
    pub name: String,
    /// Nodes matching the site's selector.
    pub nodes: i32,
    /// Of those, nodes whose Ready condition is True.
    pub ready_nodes: i32,
    /// Label keys of the site's selector that a kubelet could set on its own Node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub untrusted_label_keys: Vec<String>,
}
