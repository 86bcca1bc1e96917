use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A request for time-bound access to the pods of a DataEnclave: who asks (as the API
/// server authenticated them), what for (verbs, namespaces, pods), why, and for how
/// long. It takes effect only once approved, through an AccessApproval, by someone the
/// enclave names as an approver who is not the requester; it ends at its expiry or when
/// revoked. The spec cannot change once created: a wider request is a new grant,
/// approved anew.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "enclave.dev",
    version = "v1alpha1",
    kind = "AccessGrant",
    plural = "accessgrants",
    shortname = "grant",
    shortname = "grants",
    status = "AccessGrantStatus",
    printcolumn = r#"{"name":"Enclave","type":"string","jsonPath":".spec.enclave"}"#,
    printcolumn = r#"{"name":"Requester","type":"string","jsonPath":".spec.requester"}"#,
    printcolumn = r#"{"name":"State","type":"string","jsonPath":".status.state"}"#,
    printcolumn = r#"{"name":"Approved-By","type":"string","jsonPath":".status.approvedBy"}"#,
    printcolumn = r#"{"name":"Time-Left","type":"string","jsonPath":".status.timeLeft"}"#,
    printcolumn = r#"{"name":"Expires","type":"string","jsonPath":".status.expiresAt"}"#,
    printcolumn = r#"{"name":"Break-Glass","type":"boolean","jsonPath":".spec.breakGlass"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = Rule::new("self == oldSelf").message("spec is immutable: an AccessGrant cannot be changed once created (ask for a new grant instead)"))]
#[serde(rename_all = "camelCase")]
pub struct AccessGrantSpec {
    /// The DataEnclave whose pods the grant reaches.
    #[schemars(length(min = 1, max = 253))]
    pub enclave: String,

    /// The user asking, exactly as the API server authenticates them. Checked at
    /// creation against the request that creates the grant (the chart's
    /// ValidatingAdmissionPolicy `enclave-operator-access-identity`): nobody can ask in
    /// someone else's name.
    #[schemars(length(min = 1, max = 253))]
    pub requester: String,

    /// Groups of the requester that make them eligible for break-glass, each checked
    /// at creation against the groups the API server authenticated. Only read for
    /// `breakGlass`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(length(min = 1, max = 253)))]
    pub requester_groups: Vec<String>,

    /// What the grant allows: Exec, Attach, PortForward, Debug (ephemeral containers),
    /// Logs, Proxy (`pods/proxy`).
    #[schemars(length(min = 1, max = 6))]
    #[x_kube(validation = Rule::new("self.all(v, self.exists_one(w, w == v))").message("spec.verbs must be unique"))]
    pub verbs: Vec<GrantVerb>,

    /// The namespaces whose pods the grant reaches.
    #[schemars(
        length(min = 1, max = 16),
        inner(
            length(min = 1, max = 63),
            regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
        )
    )]
    pub namespaces: Vec<String>,

    /// The pods (by name) the grant reaches in those namespaces; empty: all of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(min = 1, max = 253)))]
    pub pods: Vec<String>,

    /// Why access is needed, for the approver and the record.
    #[schemars(length(min = 1, max = 1024))]
    pub reason: String,

    /// A ticket or incident reference, e.g. `INC-1234`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub ticket: Option<String>,

    /// For how long, from approval, in minutes. At most the enclave's
    /// `spec.access.maxGrantMinutes` (a longer grant is never approved).
    #[schemars(range(min = 1, max = 10080))]
    pub duration_minutes: i32,

    /// An emergency: a requester the enclave names as an approver gets access at once,
    /// without a second person, for at most the enclave's `spec.access.breakGlassMinutes`;
    /// a Warning Event and the DataEnclave's `BreakGlassActive` condition are raised,
    /// and another approver must acknowledge it afterwards (an AccessApproval with
    /// `decision: Acknowledge`); until then the audit report lists it as a finding.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub break_glass: bool,
}

/// Something a grant allows on the pods it reaches.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema,
)]
pub enum GrantVerb {
    /// `kubectl exec` (`pods/exec`).
    Exec,
    /// `kubectl attach` (`pods/attach`).
    Attach,
    /// `kubectl port-forward` (`pods/portforward`).
    PortForward,
    /// `kubectl debug` (`pods/ephemeralcontainers`).
    Debug,
    /// `kubectl logs` (`pods/log`).
    Logs,
    /// The pod's ports through the API server (`pods/proxy`).
    Proxy,
}

impl GrantVerb {
    pub fn as_str(self) -> &'static str {
        match self {
            GrantVerb::Exec => "Exec",
            GrantVerb::Attach => "Attach",
            GrantVerb::PortForward => "PortForward",
            GrantVerb::Debug => "Debug",
            GrantVerb::Logs => "Logs",
            GrantVerb::Proxy => "Proxy",
        }
    }

    /// The verb of an admission CONNECT or UPDATE on a pod subresource.
    pub fn of_subresource(subresource: &str) -> Option<Self> {
        Some(match subresource {
            "exec" => GrantVerb::Exec,
            "attach" => GrantVerb::Attach,
            "portforward" => GrantVerb::PortForward,
            "ephemeralcontainers" => GrantVerb::Debug,
            "log" => GrantVerb::Logs,
            "proxy" => GrantVerb::Proxy,
            _ => return None,
        })
    }
}

/// Where a grant stands, as the operator last evaluated it. Informational: decisions
/// never read the status (a tenant with write access to it could forge it); they
/// evaluate the spec and the approvals afresh.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccessGrantStatus {
    /// Pending, Active, Denied, Expired, Revoked or Invalid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Who approved (or, for break-glass, who invoked it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_by: Option<String>,
    /// When it took effect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_from: Option<String>,
    /// When it ends (or ended).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// While active: what is left of it, to the minute rounded up (refreshed every
    /// minute; access itself ends at `expiresAt` exactly).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_left: Option<String>,
    /// For break-glass: who acknowledged it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reviewed_by: Option<String>,
    /// Why it is in this state, including approvals that were not counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default)]
    #[schemars(schema_with = "super::conditions_schema")]
    pub conditions: Vec<Condition>,
}

/// An approver's decision on an AccessGrant (approve, deny, revoke, acknowledge a
/// break-glass grant), or the clearing of a lockout. A separate object so that RBAC
/// can give approvers, and only them, the right to create it (the chart's ClusterRole
/// `enclave-operator-access-approver`); the operator counts it only if the approver is
/// named by the grant's enclave and is not the grant's requester. Immutable.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "enclave.dev",
    version = "v1alpha1",
    kind = "AccessApproval",
    plural = "accessapprovals",
    shortname = "approval",
    shortname = "approvals",
    printcolumn = r#"{"name":"Decision","type":"string","jsonPath":".spec.decision"}"#,
    printcolumn = r#"{"name":"Grant","type":"string","jsonPath":".spec.grant.name"}"#,
    printcolumn = r#"{"name":"Approver","type":"string","jsonPath":".spec.approver"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = Rule::new("self == oldSelf").message("spec is immutable: an AccessApproval cannot be changed once created"))]
#[x_kube(validation = Rule::new("(self.decision == 'ClearLockout') == (has(self.lockout) && !has(self.grant) && !has(self.volumeMigration))").message("decision ClearLockout takes spec.lockout (and no spec.grant or spec.volumeMigration); every other decision takes spec.grant or spec.volumeMigration"))]
#[x_kube(validation = Rule::new("self.decision == 'ClearLockout' || (has(self.grant) != has(self.volumeMigration))").message("a decision names exactly one of spec.grant and spec.volumeMigration"))]
#[x_kube(validation = Rule::new("!has(self.volumeMigration) || self.decision == 'Approve' || self.decision == 'Deny'").message("a decision on a volumeMigration is Approve or Deny"))]
#[serde(rename_all = "camelCase")]
pub struct AccessApprovalSpec {
    /// The grant decided on: its name and UID (`kubectl get accessgrant NAME -o
    /// jsonpath={.metadata.uid}`), so that a grant deleted and created again under the
    /// same name, perhaps wider, is not approved by an old approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<GrantRef>,

    /// The VolumeMigration decided on (Approve or Deny): its namespace, name and UID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_migration: Option<MigrationRef>,

    /// The lockout cleared (decision `ClearLockout`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lockout: Option<LockoutRef>,

    /// Approve, Deny, Revoke, Acknowledge (a break-glass grant, after the fact) or
    /// ClearLockout.
    pub decision: ApprovalDecision,

    /// The approver, exactly as the API server authenticates them; checked at creation
    /// against the request that creates the approval.
    #[schemars(length(min = 1, max = 253))]
    pub approver: String,

    /// Groups of the approver through which the enclave names them an approver, each
    /// checked at creation against the groups the API server authenticated.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(length(min = 1, max = 253)))]
    pub approver_groups: Vec<String>,

    /// Why, for the record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub reason: Option<String>,
}

/// A grant, by name and UID.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct GrantRef {
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    #[schemars(length(min = 1, max = 64))]
    pub uid: String,
}

/// A VolumeMigration, by namespace, name and UID (a move deleted and created again
/// under the same name is not approved by an old approval).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct MigrationRef {
    #[schemars(length(min = 1, max = 63))]
    pub namespace: String,
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    #[schemars(length(min = 1, max = 64))]
    pub uid: String,
}

/// A subject locked out of an enclave.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct LockoutRef {
    #[schemars(length(min = 1, max = 253))]
    pub enclave: String,
    #[schemars(length(min = 1, max = 253))]
    pub user: String,
}

/// What an approver decided.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ApprovalDecision {
    Approve,
    Deny,
    Revoke,
    Acknowledge,
    ClearLockout,
}

impl ApprovalDecision {
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalDecision::Approve => "Approve",
            ApprovalDecision::Deny => "Deny",
            ApprovalDecision::Revoke => "Revoke",
            ApprovalDecision::Acknowledge => "Acknowledge",
            ApprovalDecision::ClearLockout => "ClearLockout",
        }
    }
}

/// Suspicious access to an enclave by one subject, raised by the operator (and only by
/// it: the chart gives nobody else the right to create one): repeated denied attempts
/// within the enclave's window, perhaps on many pods or outside a grant's scope. With
/// `lockout`, every attempt of the subject on the enclave's pods is refused until an
/// approver clears it (an AccessApproval with `decision: ClearLockout` created after
/// this object). Immutable; it stays as the record of the alarm.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "enclave.dev",
    version = "v1alpha1",
    kind = "AccessAnomaly",
    plural = "accessanomalies",
    shortname = "anomaly",
    shortname = "anomalies",
    printcolumn = r#"{"name":"Enclave","type":"string","jsonPath":".spec.enclave"}"#,
    printcolumn = r#"{"name":"User","type":"string","jsonPath":".spec.user"}"#,
    printcolumn = r#"{"name":"Attempts","type":"integer","jsonPath":".spec.deniedAttempts"}"#,
    printcolumn = r#"{"name":"Lockout","type":"boolean","jsonPath":".spec.lockout"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = Rule::new("self == oldSelf").message("spec is immutable"))]
#[serde(rename_all = "camelCase")]
pub struct AccessAnomalySpec {
    #[schemars(length(min = 1, max = 253))]
    pub enclave: String,
    /// The subject, as the API server authenticated it.
    #[schemars(length(min = 1, max = 253))]
    pub user: String,
    /// What was seen: RepeatedDenials, and where they apply ManyPods (attempts on
    /// several pods), OutsideGrant (the subject holds an active grant and reached
    /// beyond it), NeverApproved (no standing approval and no grant at all).
    #[schemars(length(max = 4))]
    pub reasons: Vec<String>,
    /// Denied attempts counted within the window.
    pub denied_attempts: i32,
    pub window_seconds: i32,
    /// The pods reached for (up to 16).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub pods: Vec<String>,
    /// Whether the subject is locked out until an approver clears it.
    #[serde(default)]
    pub lockout: bool,
}
