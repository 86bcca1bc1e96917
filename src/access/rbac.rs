//! The access exposure report: which RBAC bindings let someone outside the enclave's
//! approved staff reach into the enclave's pods, read its secrets or handle its volumes.
//!
//! Keeping personal data inside an enclave means little if anyone can `kubectl exec`
//! into the pods that hold it. Kubernetes RBAC is additive and spread over four kinds of
//! object, with ClusterRoles assembled from other ClusterRoles by label, so "who can
//! exec into enclave pods" is not visible in any one place. This module answers it from
//! a snapshot of those objects, the way the API server's RBAC authorizer would, and
//! names every grant to a subject the enclave does not list.
//!
//! It is pure (no client, no async) so that every decision is unit- and
//! property-testable, and so that the same code can run on a live cache or on YAML.
//!
//! Where the report deliberately reports more than the authorizer would allow, the
//! item says so: an access report that errs must err towards a false alarm, which costs
//! a review, rather than a miss, which costs the data.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;

use k8s_openapi::api::rbac::v1::{
    self as rbac, ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use serde::{Deserialize, Serialize};

/// A sensitive permission: one way to reach the personal data inside enclave pods.
///
/// Ordered as listed, so that a finding's grants read from the most direct access
/// (a shell in the pod) to the least.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Permission {
    /// `pods/exec` with `create` or `get` (older servers upgrade websocket exec
    /// through `get`): run commands inside a container.
    Exec,
    /// `pods/attach` with `create` or `get`: attach to a running container's console.
    Attach,
    /// `pods/portforward` with `create` or `get`: open the pod's ports to a workstation.
    PortForward,
    /// `pods/ephemeralcontainers` with `update` or `patch`: add a debug container to a
    /// running pod, which shares its process namespace and volumes.
    EphemeralContainers,
    /// `secrets` with `get`, `list` or `watch`: read credentials, such as those of the
    /// enclave's databases.
    ReadSecrets,
    /// `persistentvolumeclaims` with any verb: the claims are where the data rests.
    Volumes,
    /// Some of the permissions above are granted only through a `*` in apiGroups,
    /// resources or verbs. Never alone: it marks grants that also cover whatever
    /// resources and verbs are added to the API later, and that a reviewer will not
    /// find by searching the roles for `pods/exec`.
    Wildcard,
}

impl Permission {
    /// Every permission, in report order.
    pub const ALL: [Permission; 7] = [
        Permission::Exec,
        Permission::Attach,
        Permission::PortForward,
        Permission::EphemeralContainers,
        Permission::ReadSecrets,
        Permission::Volumes,
        Permission::Wildcard,
    ];

    /// The name used in reports and status fields.
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Exec => "Exec",
            Permission::Attach => "Attach",
            Permission::PortForward => "PortForward",
            Permission::EphemeralContainers => "EphemeralContainers",
            Permission::ReadSecrets => "ReadSecrets",
            Permission::Volumes => "Volumes",
            Permission::Wildcard => "Wildcard",
        }
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One sensitive permission a finding's subject holds, and on which objects.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Grant {
    pub permission: Permission,
    /// `None`: every object of the resource. `Some`: only the objects so named (sorted,
    /// never empty), because every rule granting the permission lists `resourceNames`.
    /// Still an exposure (the named pod may be the one holding the data), but a
    /// narrower one, and the names tell the reviewer which.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_names: Option<Vec<String>>,
}

/// The kind of a binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum BindingKind {
    RoleBinding,
    ClusterRoleBinding,
}

/// The binding that makes the grant: the object a reviewer edits or deletes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BindingRef {
    pub kind: BindingKind,
    /// Set for RoleBindings, `None` for ClusterRoleBindings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
}

/// The kind of role a binding refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum RoleKind {
    Role,
    ClusterRole,
}

/// The role whose rules (after aggregation) hold the sensitive permissions.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoleRef {
    pub kind: RoleKind,
    pub name: String,
}

/// The kinds of subject RBAC knows. Any other kind in a binding matches no request, so
/// it is not reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum SubjectKind {
    User,
    Group,
    ServiceAccount,
}

/// Who holds the access.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubjectRef {
    pub kind: SubjectKind,
    pub name: String,
    /// The service account's namespace, defaulted from a RoleBinding's own namespace
    /// as the authorizer does; `None` for users and groups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

impl SubjectRef {
    /// The user name the API server sees for this subject:
    /// `system:serviceaccount:<namespace>:<name>` for a service account, the name for a
    /// user, and `None` for a group, which is not a user.
    pub fn username(&self) -> Option<String> {
        match (self.kind, &self.namespace) {
            (SubjectKind::User, _) => Some(self.name.clone()),
            (SubjectKind::ServiceAccount, Some(namespace)) => {
                Some(format!("{SA_USER_PREFIX}{namespace}:{}", self.name))
            }
            (SubjectKind::ServiceAccount, None) | (SubjectKind::Group, _) => None,
        }
    }
}

/// Where a finding's access applies.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "scope", content = "namespace")]
pub enum AppliesTo {
    /// A RoleBinding grants only in its own namespace.
    Namespace(String),
    /// A ClusterRoleBinding grants in every namespace, including enclave namespaces
    /// created after the report.
    AllNamespaces,
}

/// One subject of one binding that holds sensitive access to the enclave's namespaces
/// without being approved.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    pub binding: BindingRef,
    pub subject: SubjectRef,
    pub role: RoleRef,
    pub applies_to: AppliesTo,
    /// One entry per permission, in [`Permission`] order; never empty.
    pub grants: Vec<Grant>,
    /// The subject is a Kubernetes component (or the binding is one Kubernetes
    /// bootstraps for its components). Such access is expected and cannot be removed,
    /// so it is named for completeness but kept apart from what needs a decision.
    pub built_in: bool,
}

impl Finding {
    /// The permissions granted, in order.
    pub fn permissions(&self) -> impl Iterator<Item = Permission> + '_ {
        self.grants.iter().map(|grant| grant.permission)
    }

    /// The grant of one permission, if held.
    pub fn grant(&self, permission: Permission) -> Option<&Grant> {
        self.grants
            .iter()
            .find(|grant| grant.permission == permission)
    }
}

impl fmt::Display for BindingRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            BindingKind::RoleBinding => "RoleBinding",
            BindingKind::ClusterRoleBinding => "ClusterRoleBinding",
        };
        match &self.namespace {
            Some(namespace) => write!(f, "{kind} {namespace}/{}", self.name),
            None => write!(f, "{kind} {}", self.name),
        }
    }
}

impl fmt::Display for RoleRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            RoleKind::Role => "Role",
            RoleKind::ClusterRole => "ClusterRole",
        };
        write!(f, "{kind} {}", self.name)
    }
}

impl fmt::Display for SubjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.kind, &self.namespace) {
            (SubjectKind::User, _) => write!(f, "User {}", self.name),
            (SubjectKind::Group, _) => write!(f, "Group {}", self.name),
            (SubjectKind::ServiceAccount, Some(namespace)) => {
                write!(f, "ServiceAccount {namespace}/{}", self.name)
            }
            (SubjectKind::ServiceAccount, None) => write!(f, "ServiceAccount {}", self.name),
        }
    }
}

impl fmt::Display for AppliesTo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AppliesTo::Namespace(namespace) => write!(f, "namespace {namespace}"),
            AppliesTo::AllNamespaces => f.write_str("all namespaces"),
        }
    }
}

impl fmt::Display for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.resource_names {
            None => write!(f, "{}", self.permission),
            Some(names) => write!(f, "{} [{}]", self.permission, names.join(", ")),
        }
    }
}

/// One line for logs and events, e.g. `RoleBinding enclave-a/shell gives User mallory
/// Exec, Attach via ClusterRole debug in namespace enclave-a`.
impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} gives {} ", self.binding, self.subject)?;
        for (i, grant) in self.grants.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{grant}")?;
        }
        write!(f, " via {} in {}", self.role, self.applies_to)?;
        if self.built_in {
            f.write_str(" (built-in)")?;
        }
        Ok(())
    }
}

/// What the report is about: the enclave's namespaces and the staff approved to reach
/// into them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessScope {
    /// The namespaces the enclave holds. RoleBindings elsewhere cannot reach them.
    pub namespaces: BTreeSet<String>,
    /// Approved user names, including service accounts written in full as
    /// `system:serviceaccount:<namespace>:<name>`.
    pub approved_users: BTreeSet<String>,
    /// Approved group names. `system:serviceaccounts` approves every service account and
    /// `system:serviceaccounts:<namespace>` every service account in that namespace,
    /// because that is how the API server groups them.
    pub approved_groups: BTreeSet<String>,
}

impl AccessScope {
    pub fn new<N, U, G>(namespaces: N, approved_users: U, approved_groups: G) -> Self
    where
        N: IntoIterator,
        N::Item: Into<String>,
        U: IntoIterator,
        U::Item: Into<String>,
        G: IntoIterator,
        G::Item: Into<String>,
    {
        AccessScope {
            namespaces: namespaces.into_iter().map(Into::into).collect(),
            approved_users: approved_users.into_iter().map(Into::into).collect(),
            approved_groups: approved_groups.into_iter().map(Into::into).collect(),
        }
    }

    /// Is this subject approved staff?
    ///
    /// Users and groups are compared by name: the report cannot know who is in a group,
    /// so approving a group never approves a user. Service accounts are the exception
    /// because their groups are fixed by the API server: a service account is also
    /// approved through `system:serviceaccounts` or `system:serviceaccounts:<ns>`, and
    /// so is a User subject that names a service account by its full user name, since
    /// the authorizer sees the same identity either way. For the same reason the group
    /// `system:serviceaccounts:<ns>` is approved when `system:serviceaccounts` is: all
    /// its members are.
    pub fn approves(&self, subject: &SubjectRef) -> bool {
        match subject.kind {
            SubjectKind::Group => {
                self.approved_groups.contains(&subject.name)
                    || (subject.name.starts_with(SA_GROUP_PREFIX)
                        && self.approved_groups.contains(ALL_SA_GROUP))
            }
            SubjectKind::User => match service_account_of(&subject.name) {
                Some(namespace) => self.approves_service_account(&subject.name, namespace),
                None => self.approved_users.contains(&subject.name),
            },
            SubjectKind::ServiceAccount => match (&subject.namespace, subject.username()) {
                (Some(namespace), Some(username)) => {
                    self.approves_service_account(&username, namespace)
                }
                _ => false,
            },
        }
    }

    fn approves_service_account(&self, username: &str, namespace: &str) -> bool {
        self.approved_users.contains(username)
            || self.approved_groups.contains(ALL_SA_GROUP)
            || self
                .approved_groups
                .contains(&format!("{SA_GROUP_PREFIX}{namespace}"))
    }
}

/// The report.
///
/// Considers every RoleBinding in an enclave namespace and every ClusterRoleBinding
/// (whatever the scope, since it reaches every namespace the enclave has now or gains
/// later), resolves the role each refers to, with ClusterRole aggregation, and returns
/// one [`Finding`] per unapproved subject that the role gives at least one sensitive
/// [`Permission`].
///
/// A binding that refers to a role that does not exist grants nothing, as in the
/// authorizer, and is skipped rather than failing the report: RBAC objects are
/// created in any order, and the report must still show every other exposure.
///
/// Sorted and free of duplicates, and independent of the order of every input (lists,
/// rules, subjects, selectors), so that a status field built from it changes only when
/// access does.
pub fn find_exposures(
    roles: &[Role],
    cluster_roles: &[ClusterRole],
    role_bindings: &[RoleBinding],
    cluster_role_bindings: &[ClusterRoleBinding],
    scope: &AccessScope,
) -> Vec<Finding> {
    let index = RoleIndex::new(roles, cluster_roles);
    let mut findings = Vec::new();

    for binding in role_bindings {
        let Some(namespace) = binding.metadata.namespace.as_deref() else {
            continue;
        };
        if !scope.namespaces.contains(namespace) {
            continue;
        }
        let Some((role, grants)) = index.resolve(&binding.role_ref, Some(namespace)) else {
            continue;
        };
        let bound = Bound {
            binding: BindingRef {
                kind: BindingKind::RoleBinding,
                namespace: Some(namespace.to_owned()),
                name: binding.metadata.name.clone().unwrap_or_default(),
            },
            metadata: &binding.metadata,
            role,
            grants,
            applies_to: AppliesTo::Namespace(namespace.to_owned()),
            namespace: Some(namespace),
        };
        bound.report(binding.subjects.as_deref(), scope, &mut findings);
    }

    for binding in cluster_role_bindings {
        let Some((role, grants)) = index.resolve(&binding.role_ref, None) else {
            continue;
        };
        let bound = Bound {
            binding: BindingRef {
                kind: BindingKind::ClusterRoleBinding,
                namespace: None,
                name: binding.metadata.name.clone().unwrap_or_default(),
            },
            metadata: &binding.metadata,
            role,
            grants,
            applies_to: AppliesTo::AllNamespaces,
            namespace: None,
        };
        bound.report(binding.subjects.as_deref(), scope, &mut findings);
    }

    findings.sort();
    findings.dedup();
    findings
}

/// The sensitive permissions a list of rules grants, as [`Grant`]s in permission order.
///
/// Exposed on its own so that a role can be judged before anything binds it.
pub fn sensitive_grants<'a>(rules: impl IntoIterator<Item = &'a PolicyRule>) -> Vec<Grant> {
    let mut grants = Grants::default();
    for rule in rules {
        grants.add_rule(rule);
    }
    grants.to_vec()
}

/// A bounded account of the findings for a status field: a status must stay small
/// however many bindings a cluster has, and must lead with what needs a decision.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExposureSummary {
    /// Every finding.
    pub total: usize,
    /// Findings for built-in subjects: expected and not removable.
    pub built_in: usize,
    /// Findings that need a decision: `total - built_in`.
    pub other: usize,
    /// At most the requested number of findings: the others first, then built-in ones,
    /// each in report order.
    pub findings: Vec<Finding>,
    /// How many findings are counted but not listed.
    pub omitted: usize,
}

/// Summarize findings for a status field, listing at most `limit` of them.
pub fn summarize(findings: &[Finding], limit: usize) -> ExposureSummary {
    let mut ordered: Vec<&Finding> = findings.iter().collect();
    // Others before built-in ones; within each, the report's own order, even if the
    // caller passes findings in another order.
    ordered.sort_by(|a, b| (a.built_in, a).cmp(&(b.built_in, b)));
    let built_in = findings.iter().filter(|f| f.built_in).count();
    let shown: Vec<Finding> = ordered.into_iter().take(limit).cloned().collect();
    ExposureSummary {
        total: findings.len(),
        built_in,
        other: findings.len() - built_in,
        omitted: findings.len() - shown.len(),
        findings: shown,
    }
}

/// A snapshot of the RBAC objects, owned: what a YAML file or a set of caches holds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RbacObjects {
    pub roles: Vec<Role>,
    pub cluster_roles: Vec<ClusterRole>,
    pub role_bindings: Vec<RoleBinding>,
    pub cluster_role_bindings: Vec<ClusterRoleBinding>,
}

/// Why RBAC objects could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RbacError {
    /// A document is not YAML, or not a valid object of the kind it names.
    #[error("YAML document {document}: {source}")]
    Yaml {
        /// Counted from 1, as a reader counts documents in the file.
        document: usize,
        #[source]
        source: serde_yaml::Error,
    },
    /// A document holds an object that is not one of the four RBAC kinds (or a `List`
    /// of them). Rejected rather than skipped, so that a misspelt kind cannot make a
    /// binding silently vanish from the report.
    #[error(
        "YAML document {document}: kind {kind:?} is not Role, ClusterRole, RoleBinding, ClusterRoleBinding or List"
    )]
    UnsupportedKind { document: usize, kind: String },
}

impl RbacObjects {
    /// Read multi-document YAML, as `kubectl get roles,clusterroles,rolebindings,\
    /// clusterrolebindings -A -o yaml` prints it (a `List`) or as manifests are written
    /// (one object per document). Empty documents are skipped.
    pub fn from_yaml(text: &str) -> Result<Self, RbacError> {
        let mut objects = RbacObjects::default();
        for (index, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
            let number = index + 1;
            let value =
                serde_yaml::Value::deserialize(document).map_err(|source| RbacError::Yaml {
                    document: number,
                    source,
                })?;
            objects.push(number, value)?;
        }
        Ok(objects)
    }

    /// The report on this snapshot; see [`find_exposures`].
    pub fn exposures(&self, scope: &AccessScope) -> Vec<Finding> {
        find_exposures(
            &self.roles,
            &self.cluster_roles,
            &self.role_bindings,
            &self.cluster_role_bindings,
            scope,
        )
    }

    fn push(&mut self, document: usize, value: serde_yaml::Value) -> Result<(), RbacError> {
        if value.is_null() {
            return Ok(());
        }
        let yaml = |source| RbacError::Yaml { document, source };
        let kind = value
            .get("kind")
            .and_then(serde_yaml::Value::as_str)
            .unwrap_or_default();
        match kind {
            "Role" => self
                .roles
                .push(serde_yaml::from_value(value).map_err(yaml)?),
            "ClusterRole" => self
                .cluster_roles
                .push(serde_yaml::from_value(value).map_err(yaml)?),
            "RoleBinding" => self
                .role_bindings
                .push(serde_yaml::from_value(value).map_err(yaml)?),
            "ClusterRoleBinding" => self
                .cluster_role_bindings
                .push(serde_yaml::from_value(value).map_err(yaml)?),
            "List" => {
                if let Some(items) = value.get("items").and_then(serde_yaml::Value::as_sequence) {
                    for item in items {
                        self.push(document, item.clone())?;
                    }
                }
            }
            other => {
                return Err(RbacError::UnsupportedKind {
                    document,
                    kind: other.to_owned(),
                });
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------
// Names Kubernetes gives its own identities.

/// Service account user names: `system:serviceaccount:<namespace>:<name>`.
const SA_USER_PREFIX: &str = "system:serviceaccount:";
/// Every service account is in this group.
const ALL_SA_GROUP: &str = "system:serviceaccounts";
/// Service accounts of one namespace: `system:serviceaccounts:<namespace>`.
const SA_GROUP_PREFIX: &str = "system:serviceaccounts:";
/// Names Kubernetes reserves for itself.
const SYSTEM_PREFIX: &str = "system:";
/// The label Kubernetes puts on the RBAC objects it bootstraps.
const BOOTSTRAP_LABEL: &str = "kubernetes.io/bootstrapping";
const BOOTSTRAP_VALUE: &str = "rbac-defaults";
/// The namespace of the control plane's own service accounts.
const CONTROL_PLANE_NAMESPACE: &str = "kube-system";

/// Groups of control plane components: built-in wherever they are bound. (Members of
/// `system:masters` bypass RBAC altogether, so no binding adds or removes anything.)
const COMPONENT_GROUPS: &[&str] = &["system:masters", "system:nodes"];
/// Users of control plane components: built-in wherever they are bound.
const COMPONENT_USERS: &[&str] = &[
    "system:apiserver",
    "system:kube-controller-manager",
    "system:kube-proxy",
    "system:kube-scheduler",
];
/// Kubelets authenticate as `system:node:<node name>`.
const NODE_USER_PREFIX: &str = "system:node:";
/// `system:` identities that stand for people or arbitrary workloads, not for the
/// control plane. Sensitive access for them is never expected, even in a binding that
/// looks bootstrapped, so they are never built-in.
const OPEN_GROUPS: &[&str] = &[
    "system:authenticated",
    "system:unauthenticated",
    ALL_SA_GROUP,
];
const ANONYMOUS_USER: &str = "system:anonymous";

/// The namespace of a service account user name, if the name is one.
fn service_account_of(username: &str) -> Option<&str> {
    let (namespace, name) = username.strip_prefix(SA_USER_PREFIX)?.split_once(':')?;
    (!namespace.is_empty() && !name.is_empty()).then_some(namespace)
}

/// Is this finding's access the control plane's own?
///
/// A known component identity is built-in wherever it is bound. Otherwise the binding
/// must look like one Kubernetes bootstraps (the `rbac-defaults` label, or a `system:`
/// name) and the subject must be a `system:` identity of the control plane: a
/// `system:` user or group that is not one of the open groups or the anonymous user, or
/// a service account in kube-system. Both conditions, because either alone can be
/// forged by anyone who may create bindings: a binding named `system:x` that gives
/// user `mallory` exec must still count as a decision to make.
fn is_built_in(subject: &SubjectRef, binding: &ObjectMeta) -> bool {
    if is_component(subject) {
        return true;
    }
    let bootstrapped = binding
        .labels
        .as_ref()
        .and_then(|labels| labels.get(BOOTSTRAP_LABEL))
        .is_some_and(|value| value == BOOTSTRAP_VALUE)
        || binding
            .name
            .as_deref()
            .is_some_and(|name| name.starts_with(SYSTEM_PREFIX));
    bootstrapped && is_control_plane_identity(subject)
}

fn is_component(subject: &SubjectRef) -> bool {
    let name = subject.name.as_str();
    match subject.kind {
        SubjectKind::Group => COMPONENT_GROUPS.contains(&name),
        SubjectKind::User => {
            COMPONENT_USERS.contains(&name)
                || name
                    .strip_prefix(NODE_USER_PREFIX)
                    .is_some_and(|node| !node.is_empty())
        }
        SubjectKind::ServiceAccount => false,
    }
}

fn is_control_plane_identity(subject: &SubjectRef) -> bool {
    let name = subject.name.as_str();
    match subject.kind {
        SubjectKind::Group => {
            name.starts_with(SYSTEM_PREFIX)
                && !OPEN_GROUPS.contains(&name)
                && !name.starts_with(SA_GROUP_PREFIX)
        }
        SubjectKind::User => match service_account_of(name) {
            Some(namespace) => namespace == CONTROL_PLANE_NAMESPACE,
            None => name.starts_with(SYSTEM_PREFIX) && name != ANONYMOUS_USER,
        },
        SubjectKind::ServiceAccount => {
            subject.namespace.as_deref() == Some(CONTROL_PLANE_NAMESPACE)
        }
    }
}

// ---------------------------------------------------------------------------------
// Rule matching, as the RBAC authorizer does it.

/// A sensitive request: a core-group resource (and subresource) with the verbs that
/// make it sensitive (`None`: any verb).
struct Check {
    permission: Permission,
    resource: &'static str,
    subresource: Option<&'static str>,
    verbs: Option<&'static [&'static str]>,
}

const CHECKS: [Check; 6] = [
    Check {
        permission: Permission::Exec,
        resource: "pods",
        subresource: Some("exec"),
        verbs: Some(&["create", "get"]),
    },
    Check {
        permission: Permission::Attach,
        resource: "pods",
        subresource: Some("attach"),
        verbs: Some(&["create", "get"]),
    },
    Check {
        permission: Permission::PortForward,
        resource: "pods",
        subresource: Some("portforward"),
        verbs: Some(&["create", "get"]),
    },
    Check {
        permission: Permission::EphemeralContainers,
        resource: "pods",
        subresource: Some("ephemeralcontainers"),
        verbs: Some(&["update", "patch"]),
    },
    Check {
        permission: Permission::ReadSecrets,
        resource: "secrets",
        subresource: None,
        verbs: Some(&["get", "list", "watch"]),
    },
    // Writing claims reaches data (a claim can name an existing volume and a pod can
    // then mount it); reading claim objects shows their metadata only, and every
    // namespace viewer holds it, so it is not counted.
    Check {
        permission: Permission::Volumes,
        resource: "persistentvolumeclaims",
        subresource: None,
        verbs: Some(&["create", "update", "patch", "delete", "deletecollection"]),
    },
];

/// How a rule field covers a request. Ordered so that `max` picks the better of two
/// entries and `min` the weaker of two fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Match {
    Wildcard,
    Exact,
}

/// Does a rule grant a check, and only through a wildcard? Non-resource URLs are
/// ignored: they reach no pod, secret or claim.
fn rule_match(rule: &PolicyRule, check: &Check) -> Option<Match> {
    let group = best(rule.api_groups.iter().flatten(), |group| match group {
        "" => Some(Match::Exact),
        "*" => Some(Match::Wildcard),
        _ => None,
    })?;
    let resource = best(rule.resources.iter().flatten(), |resource| {
        resource_match(resource, check)
    })?;
    let verb = best(rule.verbs.iter(), |verb| match (verb, check.verbs) {
        ("*", _) => Some(Match::Wildcard),
        ("", _) => None,
        (_, None) => Some(Match::Exact),
        (verb, Some(verbs)) => verbs.contains(&verb).then_some(Match::Exact),
    })?;
    Some(group.min(resource).min(verb))
}

fn best<'a>(
    entries: impl Iterator<Item = &'a String>,
    classify: impl Fn(&str) -> Option<Match>,
) -> Option<Match> {
    entries.filter_map(|entry| classify(entry)).max()
}

/// Does a rule's resource entry cover a check's resource?
///
/// The authorizer honors `*` (everything, subresources included), an exact
/// `resource/subresource`, and `*/subresource`. The report also takes `pods/*` (and
/// `*/*`) to cover the pod subresources: the authorizer matches neither literally, but
/// whoever wrote one meant every subresource, an authorizer webhook or a later
/// Kubernetes may honor it, and flagging it costs a review where missing it would
/// hide an intent to grant exec.
fn resource_match(entry: &str, check: &Check) -> Option<Match> {
    if entry == "*" {
        return Some(Match::Wildcard);
    }
    match (check.subresource, entry.split_once('/')) {
        (None, None) => (entry == check.resource).then_some(Match::Exact),
        (Some(wanted), Some((resource, subresource))) => {
            if resource == check.resource && subresource == wanted {
                Some(Match::Exact)
            } else if (resource == check.resource || resource == "*")
                && (subresource == wanted || subresource == "*")
            {
                Some(Match::Wildcard)
            } else {
                None
            }
        }
        _ => None,
    }
}

/// Which objects of a resource a grant covers.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Objects {
    All,
    Named(BTreeSet<String>),
}

impl Objects {
    /// An empty `resourceNames` restricts nothing, as in the authorizer.
    fn of(rule: &PolicyRule) -> Objects {
        match rule.resource_names.as_deref() {
            None | Some([]) => Objects::All,
            Some(names) => Objects::Named(names.iter().cloned().collect()),
        }
    }

    /// Grants add up: two rules cover the union of their objects.
    fn widen(&mut self, other: &Objects) {
        match (&mut *self, other) {
            (Objects::All, _) => {}
            (_, Objects::All) => *self = Objects::All,
            (Objects::Named(mine), Objects::Named(theirs)) => {
                mine.extend(theirs.iter().cloned());
            }
        }
    }
}

/// The sensitive permissions a set of rules adds up to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Grants(BTreeMap<Permission, Objects>);

impl Grants {
    fn add(&mut self, permission: Permission, objects: &Objects) {
        match self.0.get_mut(&permission) {
            Some(held) => held.widen(objects),
            None => {
                self.0.insert(permission, objects.clone());
            }
        }
    }

    fn add_rule(&mut self, rule: &PolicyRule) {
        let objects = Objects::of(rule);
        for check in &CHECKS {
            if let Some(matched) = rule_match(rule, check) {
                self.add(check.permission, &objects);
                if matched == Match::Wildcard {
                    self.add(Permission::Wildcard, &objects);
                }
            }
        }
    }

    fn merge(&mut self, other: &Grants) {
        for (permission, objects) in &other.0 {
            self.add(*permission, objects);
        }
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn to_vec(&self) -> Vec<Grant> {
        self.0
            .iter()
            .map(|(permission, objects)| Grant {
                permission: *permission,
                resource_names: match objects {
                    Objects::All => None,
                    Objects::Named(names) => Some(names.iter().cloned().collect()),
                },
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------------
// Roles, with ClusterRole aggregation resolved.

/// The sensitive grants of every role, by name.
///
/// Objects that share a name (which a live cluster never has, but a hand-made input
/// may) have their rules added together, so that no input order can hide one of them.
struct RoleIndex<'a> {
    /// Namespace, then name.
    roles: BTreeMap<&'a str, BTreeMap<&'a str, Grants>>,
    cluster_roles: BTreeMap<&'a str, Grants>,
}

impl<'a> RoleIndex<'a> {
    fn new(roles: &'a [Role], cluster_roles: &'a [ClusterRole]) -> Self {
        let mut role_grants: BTreeMap<&str, BTreeMap<&str, Grants>> = BTreeMap::new();
        for role in roles {
            let (Some(namespace), Some(name)) = (
                role.metadata.namespace.as_deref(),
                role.metadata.name.as_deref(),
            ) else {
                continue;
            };
            let grants = role_grants
                .entry(namespace)
                .or_default()
                .entry(name)
                .or_default();
            for rule in role.rules.iter().flatten() {
                grants.add_rule(rule);
            }
        }

        // Each ClusterRole's own rules, and which ClusterRoles its aggregation rule
        // selects.
        let mut own: BTreeMap<&str, Grants> = BTreeMap::new();
        let mut aggregates: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for role in cluster_roles {
            let Some(name) = role.metadata.name.as_deref() else {
                continue;
            };
            let grants = own.entry(name).or_default();
            for rule in role.rules.iter().flatten() {
                grants.add_rule(rule);
            }
            let selectors = role
                .aggregation_rule
                .iter()
                .flat_map(|rule| rule.cluster_role_selectors.iter().flatten());
            for selector in selectors {
                for other in cluster_roles {
                    if let Some(other_name) = other.metadata.name.as_deref()
                        && selector_matches(selector, other.metadata.labels.as_ref())
                    {
                        aggregates.entry(name).or_default().insert(other_name);
                    }
                }
            }
        }

        let cluster_role_grants = own
            .keys()
            .map(|&name| (name, aggregated(name, &own, &aggregates)))
            .collect();
        RoleIndex {
            roles: role_grants,
            cluster_roles: cluster_role_grants,
        }
    }

    /// The role a binding refers to and its grants, if it exists and grants anything
    /// sensitive. `namespace` is the RoleBinding's; a ClusterRoleBinding has none and
    /// so cannot refer to a Role.
    fn resolve(
        &self,
        role_ref: &rbac::RoleRef,
        namespace: Option<&str>,
    ) -> Option<(RoleRef, &Grants)> {
        let name = role_ref.name.as_str();
        let (kind, grants) = match (role_ref.kind.as_str(), namespace) {
            ("Role", Some(namespace)) => (RoleKind::Role, self.roles.get(namespace)?.get(name)?),
            ("ClusterRole", _) => (RoleKind::ClusterRole, self.cluster_roles.get(name)?),
            _ => return None,
        };
        (!grants.is_empty()).then(|| {
            (
                RoleRef {
                    kind,
                    name: name.to_owned(),
                },
                grants,
            )
        })
    }
}

/// A ClusterRole's effective grants: its own rules and those of every ClusterRole its
/// aggregation rule selects, transitively.
///
/// The aggregation controller copies the selected roles' current rules into the
/// aggregated role, and those may themselves be aggregated, so the role ends up with
/// the rules of everything reachable. Computed here as reachability over the
/// selection graph, which is the same answer whatever the order and ends on cycles.
/// The role's own stored rules are included too: the controller may not have run yet,
/// or may have failed on a selector, leaving earlier rules in place.
fn aggregated(
    start: &str,
    own: &BTreeMap<&str, Grants>,
    aggregates: &BTreeMap<&str, BTreeSet<&str>>,
) -> Grants {
    let mut grants = Grants::default();
    let mut seen = BTreeSet::from([start]);
    let mut queue = VecDeque::from([start]);
    while let Some(name) = queue.pop_front() {
        if let Some(role_grants) = own.get(name) {
            grants.merge(role_grants);
        }
        for &next in aggregates.get(name).into_iter().flatten() {
            if seen.insert(next) {
                queue.push_back(next);
            }
        }
    }
    grants
}

/// `metav1.LabelSelector` semantics: every matchLabels entry and every matchExpression
/// must hold, so an empty selector selects everything, as it does for the aggregation
/// controller. An operator the API does not define, or a requirement with the wrong
/// number of values, matches nothing; the API server rejects such a selector, and the
/// role's stored rules still count. (The same semantics as the operator's shared
/// selector matching, restated here so that this module stands alone.)
fn selector_matches(selector: &LabelSelector, labels: Option<&BTreeMap<String, String>>) -> bool {
    let label = |key: &str| labels.and_then(|labels| labels.get(key));
    selector
        .match_labels
        .iter()
        .flatten()
        .all(|(key, value)| label(key) == Some(value))
        && selector
            .match_expressions
            .iter()
            .flatten()
            .all(|requirement| {
                let values = requirement.values.as_deref().unwrap_or_default();
                let value = label(&requirement.key);
                match (requirement.operator.as_str(), values.is_empty()) {
                    ("In", false) => value.is_some_and(|v| values.contains(v)),
                    ("NotIn", false) => value.is_none_or(|v| !values.contains(v)),
                    ("Exists", true) => value.is_some(),
                    ("DoesNotExist", true) => value.is_none(),
                    _ => false,
                }
            })
}

// ---------------------------------------------------------------------------------
// Bindings.

/// A binding with its role resolved, ready to report on its subjects.
struct Bound<'a> {
    binding: BindingRef,
    metadata: &'a ObjectMeta,
    role: RoleRef,
    grants: &'a Grants,
    applies_to: AppliesTo,
    /// The RoleBinding's namespace, which service account subjects default to.
    namespace: Option<&'a str>,
}

impl Bound<'_> {
    fn report(
        &self,
        subjects: Option<&[rbac::Subject]>,
        scope: &AccessScope,
        out: &mut Vec<Finding>,
    ) {
        for subject in subjects.into_iter().flatten() {
            let Some(subject) = subject_ref(subject, self.namespace) else {
                continue;
            };
            if scope.approves(&subject) {
                continue;
            }
            out.push(Finding {
                binding: self.binding.clone(),
                built_in: is_built_in(&subject, self.metadata),
                subject,
                role: self.role.clone(),
                applies_to: self.applies_to.clone(),
                grants: self.grants.to_vec(),
            });
        }
    }
}

/// The subject as the authorizer matches it, or `None` if it matches no request: an
/// unknown kind, an empty name, or a service account with no namespace in a
/// ClusterRoleBinding (there is no namespace to default to).
fn subject_ref(subject: &rbac::Subject, binding_namespace: Option<&str>) -> Option<SubjectRef> {
    let kind = match subject.kind.as_str() {
        "User" => SubjectKind::User,
        "Group" => SubjectKind::Group,
        "ServiceAccount" => SubjectKind::ServiceAccount,
        _ => return None,
    };
    if subject.name.is_empty() {
        return None;
    }
    let namespace = match kind {
        SubjectKind::ServiceAccount => Some(
            subject
                .namespace
                .as_deref()
                .filter(|namespace| !namespace.is_empty())
                .or(binding_namespace)?
                .to_owned(),
        ),
        SubjectKind::User | SubjectKind::Group => None,
    };
    Some(SubjectRef {
        kind,
        name: subject.name.clone(),
        namespace,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use Permission::*;

    const DIRECT: &str = include_str!("testdata/direct.yaml");
    const SCOPE: &str = include_str!("testdata/scope.yaml");
    const WILDCARDS: &str = include_str!("testdata/wildcards.yaml");
    const AGGREGATION: &str = include_str!("testdata/aggregation.yaml");
    const SUBJECTS: &str = include_str!("testdata/subjects.yaml");
    const BUILTIN: &str = include_str!("testdata/builtin.yaml");
    const MISSING: &str = include_str!("testdata/missing.yaml");
    const DEFAULTS: &str = include_str!("testdata/defaults.yaml");

    /// The enclave of every fixture: two namespaces, with approved staff named in
    /// subjects.yaml.
    fn scope() -> AccessScope {
        AccessScope::new(
            ["enclave-a", "enclave-b"],
            ["dr-ada", "system:serviceaccount:enclave-a:etl"],
            ["enclave-staff", "system:serviceaccounts:enclave-b"],
        )
    }

    fn report(yaml: &str) -> Vec<Finding> {
        RbacObjects::from_yaml(yaml)
            .expect("fixture parses")
            .exposures(&scope())
    }

    fn named<'a>(findings: &'a [Finding], binding: &str) -> Vec<&'a Finding> {
        findings
            .iter()
            .filter(|f| f.binding.name == binding)
            .collect()
    }

    /// The one finding of a binding.
    fn only<'a>(findings: &'a [Finding], binding: &str) -> &'a Finding {
        let found = named(findings, binding);
        assert_eq!(found.len(), 1, "{binding}: {found:#?}");
        found[0]
    }

    fn permissions(finding: &Finding) -> Vec<Permission> {
        finding.permissions().collect()
    }

    fn user(name: &str) -> SubjectRef {
        SubjectRef {
            kind: SubjectKind::User,
            name: name.to_owned(),
            namespace: None,
        }
    }

    fn group(name: &str) -> SubjectRef {
        SubjectRef {
            kind: SubjectKind::Group,
            name: name.to_owned(),
            namespace: None,
        }
    }

    fn service_account(namespace: &str, name: &str) -> SubjectRef {
        SubjectRef {
            kind: SubjectKind::ServiceAccount,
            name: name.to_owned(),
            namespace: Some(namespace.to_owned()),
        }
    }

    fn subjects(findings: &[&Finding]) -> Vec<SubjectRef> {
        findings.iter().map(|f| f.subject.clone()).collect()
    }

    #[test]
    fn direct_role_grants_exec() {
        let findings = report(DIRECT);
        let finding = only(&findings, "pod-shell");
        assert_eq!(
            finding,
            &Finding {
                binding: BindingRef {
                    kind: BindingKind::RoleBinding,
                    namespace: Some("enclave-a".into()),
                    name: "pod-shell".into(),
                },
                subject: user("mallory"),
                role: RoleRef {
                    kind: RoleKind::Role,
                    name: "pod-shell".into(),
                },
                applies_to: AppliesTo::Namespace("enclave-a".into()),
                grants: vec![Grant {
                    permission: Exec,
                    resource_names: None,
                }],
                built_in: false,
            }
        );
    }

    #[test]
    fn direct_attach_and_port_forward_but_not_proxy() {
        let findings = report(DIRECT);
        assert_eq!(
            permissions(only(&findings, "attach-and-forward")),
            [Attach, PortForward]
        );
    }

    #[test]
    fn ephemeral_containers_need_update_or_patch() {
        let findings = report(DIRECT);
        assert_eq!(
            permissions(only(&findings, "debug-containers")),
            [EphemeralContainers]
        );
        assert!(named(&findings, "debug-containers-read").is_empty());
    }

    #[test]
    fn secrets_list_is_exposed_but_create_only_is_not() {
        let findings = report(DIRECT);
        assert_eq!(permissions(only(&findings, "secret-lister")), [ReadSecrets]);
        assert!(named(&findings, "secret-creator").is_empty());
    }

    #[test]
    fn persistent_volume_claims_written() {
        let findings = report(DIRECT);
        assert_eq!(permissions(only(&findings, "claims-deleter")), [Volumes]);
    }

    #[test]
    fn resource_names_are_recorded() {
        let findings = report(DIRECT);
        let finding = only(&findings, "named-objects");
        let names = |p| {
            finding
                .grant(p)
                .map(|grant| grant.resource_names.clone())
                .expect("granted")
        };
        // Two rules narrow exec: the names add up.
        assert_eq!(names(Exec), Some(vec!["db-0".into(), "db-1".into()]));
        assert_eq!(names(ReadSecrets), Some(vec!["db-password".into()]));
        // One rule narrows port-forward, another (with an empty list) does not.
        assert_eq!(names(PortForward), None);
        assert_eq!(permissions(finding), [Exec, PortForward, ReadSecrets]);
    }

    #[test]
    fn cluster_role_bound_in_scope_namespace_only() {
        let findings = report(SCOPE);
        let debuggers = named(&findings, "debuggers");
        assert_eq!(debuggers.len(), 1, "{debuggers:#?}");
        let finding = debuggers[0];
        assert_eq!(finding.binding.namespace.as_deref(), Some("enclave-a"));
        assert_eq!(finding.applies_to, AppliesTo::Namespace("enclave-a".into()));
        assert_eq!(finding.subject, group("contractors"));
        assert_eq!(
            finding.role,
            RoleRef {
                kind: RoleKind::ClusterRole,
                name: "pod-debugger".into()
            }
        );
        assert_eq!(permissions(finding), [Exec, Attach]);
    }

    #[test]
    fn cluster_role_binding_covers_all_namespaces() {
        let findings = report(SCOPE);
        let finding = only(&findings, "cluster-debuggers");
        assert_eq!(finding.binding.kind, BindingKind::ClusterRoleBinding);
        assert_eq!(finding.binding.namespace, None);
        assert_eq!(finding.applies_to, AppliesTo::AllNamespaces);
        assert_eq!(permissions(finding), [Exec, Attach]);
    }

    #[test]
    fn role_binding_cannot_borrow_a_role_from_another_namespace() {
        let findings = report(SCOPE);
        assert!(named(&findings, "borrowed-role").is_empty());
        assert_eq!(findings.len(), 2, "{findings:#?}");
    }

    #[test]
    fn wildcard_resources_verbs_and_api_groups() {
        let findings = report(WILDCARDS);
        // Only "get" on every resource: reading claims does not count.
        assert_eq!(
            permissions(only(&findings, "all-resources")),
            [Exec, Attach, PortForward, ReadSecrets, Wildcard]
        );
        assert_eq!(
            permissions(only(&findings, "all-verbs")),
            [ReadSecrets, Wildcard]
        );
        assert_eq!(permissions(only(&findings, "all-groups")), [Exec, Wildcard]);
    }

    #[test]
    fn pods_star_covers_pod_subresources() {
        let findings = report(WILDCARDS);
        // create reaches exec, attach and port-forward; patch the ephemeral containers.
        assert_eq!(
            permissions(only(&findings, "pod-subresources")),
            [Exec, Attach, PortForward, EphemeralContainers, Wildcard]
        );
        assert_eq!(permissions(only(&findings, "any-exec")), [Exec, Wildcard]);
    }

    #[test]
    fn wildcards_outside_the_core_group_or_on_urls_grant_nothing() {
        let findings = report(WILDCARDS);
        assert!(named(&findings, "apps-everything").is_empty());
        assert!(named(&findings, "urls-everything").is_empty());
    }

    #[test]
    fn wildcard_marks_only_what_a_wildcard_adds() {
        let findings = report(WILDCARDS);
        assert_eq!(
            permissions(only(&findings, "exact-and-wildcard")),
            [Exec, ReadSecrets, Wildcard]
        );
    }

    #[test]
    fn aggregated_admin_picks_up_custom_exec_role() {
        let findings = report(AGGREGATION);
        let finding = only(&findings, "admin");
        assert_eq!(finding.role.name, "admin");
        assert_eq!(permissions(finding), [Exec]);
    }

    #[test]
    fn aggregation_cycle_ends_with_the_union() {
        let findings = report(AGGREGATION);
        assert_eq!(
            permissions(only(&findings, "loop-a")),
            [Attach, ReadSecrets]
        );
        assert_eq!(
            permissions(only(&findings, "loop-b")),
            [Attach, ReadSecrets]
        );
        assert_eq!(permissions(only(&findings, "self-loop")), [Volumes]);
    }

    #[test]
    fn aggregation_is_transitive_and_keeps_stored_rules() {
        let findings = report(AGGREGATION);
        assert_eq!(
            permissions(only(&findings, "chain-top")),
            [PortForward, EphemeralContainers]
        );
    }

    #[test]
    fn aggregation_match_expressions() {
        let findings = report(AGGREGATION);
        // exp-data (In, DoesNotExist) and exp-owned (Exists, NotIn on a missing
        // label); not the retired, web or frontend roles, nor the malformed selector.
        assert_eq!(permissions(only(&findings, "expressions")), [Exec, Volumes]);
    }

    #[test]
    fn approved_users_groups_and_service_accounts_are_not_reported() {
        let findings = report(SUBJECTS);
        assert_eq!(
            subjects(&named(&findings, "staff-shell")),
            [
                user("mallory"),
                group("contractors"),
                service_account("tools", "builder"),
                service_account("enclave-a", "ci"),
            ]
        );
    }

    #[test]
    fn service_account_namespace_group_approves_that_namespace_only() {
        let findings = report(SUBJECTS);
        // batch and the reporter named as a user are in enclave-b, approved through
        // system:serviceaccounts:enclave-b; the others are in enclave-a.
        assert_eq!(
            subjects(&named(&findings, "batch-shell")),
            [
                user("system:serviceaccount:enclave-a:reporter"),
                group("system:serviceaccounts:enclave-a"),
                service_account("enclave-a", "ci"),
            ]
        );
        // In a ClusterRoleBinding, a service account needs its namespace.
        assert_eq!(
            subjects(&named(&findings, "cluster-shell")),
            [user("mallory")]
        );
    }

    #[test]
    fn all_service_accounts_group_approves_every_service_account() {
        let objects = RbacObjects::from_yaml(SUBJECTS).expect("fixture parses");
        let mut scope = scope();
        scope
            .approved_groups
            .insert("system:serviceaccounts".into());
        let findings = objects.exposures(&scope);
        // Every service account, the system:serviceaccounts:enclave-a group and the
        // service account named as a user are approved; the people are not.
        let left: Vec<(&str, SubjectRef)> = findings
            .iter()
            .map(|f| (f.binding.name.as_str(), f.subject.clone()))
            .collect();
        assert_eq!(
            left,
            [
                ("staff-shell", user("mallory")),
                ("staff-shell", group("contractors")),
                ("cluster-shell", user("mallory")),
            ]
        );
    }

    #[test]
    fn built_in_subjects_are_marked() {
        let findings = report(BUILTIN);
        let built_in: Vec<(&str, SubjectRef)> = findings
            .iter()
            .filter(|f| f.built_in)
            .map(|f| (f.binding.name.as_str(), f.subject.clone()))
            .collect();
        assert_eq!(
            built_in,
            [
                ("cluster-admin", group("system:masters")),
                ("scheduler-extras", user("system:kube-scheduler")),
                ("scheduler-extras", user("system:node:worker-1")),
                ("scheduler-extras", group("system:nodes")),
                (
                    "system:controller:generic-garbage-collector",
                    service_account("kube-system", "generic-garbage-collector")
                ),
            ]
        );
        let masters = only(&findings, "cluster-admin");
        assert_eq!(permissions(masters), Permission::ALL);
        // The garbage collector can read secrets and patch ephemeral containers.
        let collector = only(&findings, "system:controller:generic-garbage-collector");
        assert!(collector.grant(ReadSecrets).is_some());
        assert!(collector.grant(EphemeralContainers).is_some());
    }

    #[test]
    fn system_look_alikes_are_not_built_in() {
        let findings = report(BUILTIN);
        let other: Vec<(&str, SubjectRef)> = findings
            .iter()
            .filter(|f| !f.built_in)
            .map(|f| (f.binding.name.as_str(), f.subject.clone()))
            .collect();
        assert_eq!(
            other,
            [
                ("addon-exec", service_account("kube-system", "addon")),
                ("everyone-admin", user("system:anonymous")),
                ("everyone-admin", group("system:authenticated")),
                ("everyone-admin", group("system:serviceaccounts")),
                ("everyone-admin", service_account("enclave-a", "default")),
                ("system:sneaky", user("mallory")),
            ]
        );
    }

    #[test]
    fn missing_role_grants_nothing() {
        let findings = report(MISSING);
        assert_eq!(
            findings
                .iter()
                .map(|f| f.binding.name.as_str())
                .collect::<Vec<_>>(),
            ["real"]
        );
    }

    #[test]
    fn defaults_view_reads_claims_only_while_edit_and_admin_reach_pods() {
        let findings = report(DEFAULTS);

        // view reaches no pod, no secret, and only reads claims: nothing sensitive.
        assert!(named(&findings, "auditors-view").is_empty());

        let edit = only(&findings, "developers-edit");
        assert_eq!(
            permissions(edit),
            [Exec, Attach, PortForward, ReadSecrets, Volumes]
        );

        // admin is edit and more.
        let admin = only(&findings, "team-lead-admin");
        assert_eq!(admin.grants, edit.grants);

        let masters = only(&findings, "cluster-admin");
        assert!(masters.built_in);
        assert_eq!(masters.applies_to, AppliesTo::AllNamespaces);
        assert_eq!(permissions(masters), Permission::ALL);

        let mallory = only(&findings, "mallory-cluster-admin");
        assert!(!mallory.built_in);
        assert_eq!(mallory.applies_to, AppliesTo::Namespace("enclave-a".into()));
        assert_eq!(permissions(mallory), Permission::ALL);
    }

    #[test]
    fn report_is_sorted_and_without_duplicates() {
        let mut objects = RbacObjects::from_yaml(SCOPE).expect("fixture parses");
        // The same binding twice, and the same subject twice in it.
        let mut binding = objects.cluster_role_bindings[0].clone();
        let subject = binding.subjects.as_ref().expect("subjects")[0].clone();
        binding.subjects.get_or_insert_with(Vec::new).push(subject);
        objects.cluster_role_bindings.push(binding);
        let findings = objects.exposures(&scope());
        assert_eq!(findings.len(), 2, "{findings:#?}");
        assert!(findings.windows(2).all(|pair| pair[0] < pair[1]));
        assert_eq!(findings[0].binding.kind, BindingKind::RoleBinding);
    }

    #[test]
    fn summary_is_bounded_and_leads_with_other_findings() {
        let findings = report(BUILTIN);
        assert_eq!(findings.len(), 11);
        let summary = summarize(&findings, 3);
        assert_eq!(summary.total, 11);
        assert_eq!(summary.built_in, 5);
        assert_eq!(summary.other, 6);
        assert_eq!(summary.omitted, 8);
        assert_eq!(summary.findings.len(), 3);
        assert!(summary.findings.iter().all(|f| !f.built_in));

        let all = summarize(&findings, 100);
        assert_eq!(all.omitted, 0);
        assert_eq!(all.findings.len(), 11);
        assert!(all.findings[..6].iter().all(|f| !f.built_in));
        assert!(all.findings[6..].iter().all(|f| f.built_in));

        // The order of the input does not change the summary.
        let mut reversed = findings.clone();
        reversed.reverse();
        assert_eq!(summarize(&reversed, 3), summary);

        assert_eq!(summarize(&[], 3), ExposureSummary::default());
    }

    #[test]
    fn summary_round_trips_through_yaml() {
        let summary = summarize(&report(DIRECT), 10);
        let text = serde_yaml::to_string(&summary).expect("serializes");
        assert!(text.contains("appliesTo:"), "{text}");
        assert!(text.contains("resourceNames:"), "{text}");
        let back: ExposureSummary = serde_yaml::from_str(&text).expect("deserializes");
        assert_eq!(back, summary);
    }

    #[test]
    fn finding_reads_as_one_line() {
        let findings = report(DIRECT);
        assert_eq!(
            only(&findings, "named-objects").to_string(),
            "RoleBinding enclave-a/named-objects gives User mallory Exec [db-0, db-1], \
             PortForward, ReadSecrets [db-password] via Role named-objects in namespace enclave-a"
        );
        let findings = report(BUILTIN);
        assert_eq!(
            only(&findings, "system:controller:generic-garbage-collector").to_string(),
            "ClusterRoleBinding system:controller:generic-garbage-collector gives \
             ServiceAccount kube-system/generic-garbage-collector Exec, Attach, PortForward, \
             EphemeralContainers, ReadSecrets, Volumes, Wildcard via ClusterRole \
             system:controller:generic-garbage-collector in all namespaces (built-in)"
        );
    }

    #[test]
    fn sensitive_grants_judges_rules_alone() {
        let objects = RbacObjects::from_yaml(DEFAULTS).expect("fixture parses");
        let edit_rules = objects
            .cluster_roles
            .iter()
            .find(|role| role.metadata.name.as_deref() == Some("system:aggregate-to-edit"))
            .and_then(|role| role.rules.as_ref())
            .expect("edit rules");
        let granted: Vec<Permission> = sensitive_grants(edit_rules)
            .into_iter()
            .map(|grant| grant.permission)
            .collect();
        assert_eq!(granted, [Exec, Attach, PortForward, ReadSecrets, Volumes]);
        assert!(sensitive_grants(&[]).is_empty());
    }

    #[test]
    fn yaml_reads_lists_and_skips_empty_documents() {
        let text = "---\n---\napiVersion: v1\nkind: List\nitems:\n\
            - apiVersion: rbac.authorization.k8s.io/v1\n  kind: ClusterRole\n  metadata: {name: a}\n\
            - apiVersion: rbac.authorization.k8s.io/v1\n  kind: ClusterRoleBinding\n  metadata: {name: b}\n  \
              roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: a}\n";
        let objects = RbacObjects::from_yaml(text).expect("parses");
        assert_eq!(objects.cluster_roles.len(), 1);
        assert_eq!(objects.cluster_role_bindings.len(), 1);
    }

    #[test]
    fn yaml_rejects_other_kinds_and_bad_objects() {
        let other = "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: a}\n\
            ---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: b}\n";
        match RbacObjects::from_yaml(other) {
            Err(RbacError::UnsupportedKind { document, kind }) => {
                assert_eq!((document, kind.as_str()), (2, "ConfigMap"));
            }
            result => panic!("expected UnsupportedKind, got {result:?}"),
        }
        // Subjects must be a list.
        let broken = "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: a}\n\
            roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: r}\nsubjects: mallory\n";
        assert!(matches!(
            RbacObjects::from_yaml(broken),
            Err(RbacError::Yaml { document: 1, .. })
        ));
        // An API version this code does not know.
        let beta = "apiVersion: rbac.authorization.k8s.io/v1beta1\nkind: ClusterRole\nmetadata: {name: a}\n";
        assert!(matches!(
            RbacObjects::from_yaml(beta),
            Err(RbacError::Yaml { document: 1, .. })
        ));
        assert!(matches!(
            RbacObjects::from_yaml("kind: [unclosed"),
            Err(RbacError::Yaml { document: 1, .. })
        ));
    }

    #[test]
    fn selector_semantics() {
        let labels: BTreeMap<String, String> = [("team".to_owned(), "data".to_owned())]
            .into_iter()
            .collect();
        let expression = |key: &str, operator: &str, values: Option<&[&str]>| LabelSelector {
            match_expressions: Some(vec![
                k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement {
                    key: key.to_owned(),
                    operator: operator.to_owned(),
                    values: values.map(|v| v.iter().map(|s| (*s).to_owned()).collect()),
                },
            ]),
            match_labels: None,
        };
        let cases = [
            (LabelSelector::default(), true),
            (expression("team", "In", Some(&["data", "ml"])), true),
            (expression("team", "In", Some(&["web"])), false),
            (expression("team", "NotIn", Some(&["web"])), true),
            (expression("tier", "NotIn", Some(&["web"])), true),
            (expression("team", "Exists", None), true),
            (expression("tier", "DoesNotExist", None), true),
            (expression("team", "DoesNotExist", None), false),
            // Malformed: select nothing.
            (expression("team", "In", Some(&[])), false),
            (expression("team", "Exists", Some(&["data"])), false),
            (expression("team", "Equals", Some(&["data"])), false),
        ];
        for (selector, expected) in cases {
            assert_eq!(
                selector_matches(&selector, Some(&labels)),
                expected,
                "{selector:?}"
            );
        }
        assert!(!selector_matches(&expression("team", "Exists", None), None));
    }

    /// Properties over random RBAC worlds drawn from small pools of names, so that
    /// bindings, roles, labels and subjects collide often.
    mod properties {
        use super::*;
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;
        use proptest::collection::vec;
        use proptest::prelude::*;
        use proptest::sample::{Index, select, subsequence};

        const NAMESPACES: &[&str] = &["enclave-a", "enclave-b", "outside"];
        const ROLE_NAMES: &[&str] = &["r1", "r2"];
        const CLUSTER_ROLE_NAMES: &[&str] = &["c1", "c2", "c3", "c4"];
        const BINDING_NAMES: &[&str] = &["b1", "b2", "system:b3"];
        // No user name of a service account and no system:serviceaccounts groups:
        // those approve more than one subject by design (see AccessScope::approves).
        const USERS: &[&str] = &["alice", "bob", "system:kube-scheduler"];
        const GROUPS: &[&str] = &["devs", "ops", "system:masters", "system:authenticated"];
        const SERVICE_ACCOUNTS: &[&str] = &["default", "ci"];

        fn strings(items: Vec<&str>) -> Vec<String> {
            items.into_iter().map(str::to_owned).collect()
        }

        fn meta(namespace: Option<&str>, name: &str, labels: Option<(&str, &str)>) -> ObjectMeta {
            ObjectMeta {
                namespace: namespace.map(str::to_owned),
                name: Some(name.to_owned()),
                labels: labels.map(|(k, v)| [(k.to_owned(), v.to_owned())].into_iter().collect()),
                ..ObjectMeta::default()
            }
        }

        fn rule() -> impl Strategy<Value = PolicyRule> {
            (
                subsequence(&["", "*", "apps"][..], 1..=2),
                subsequence(
                    &[
                        "pods",
                        "pods/exec",
                        "pods/attach",
                        "pods/portforward",
                        "pods/ephemeralcontainers",
                        "pods/*",
                        "*/exec",
                        "*",
                        "secrets",
                        "persistentvolumeclaims",
                        "configmaps",
                    ][..],
                    1..=3,
                ),
                subsequence(
                    &[
                        "get", "list", "watch", "create", "update", "patch", "delete", "*",
                    ][..],
                    1..=3,
                ),
                proptest::option::of(subsequence(&["a", "b"][..], 0..=2)),
            )
                .prop_map(|(groups, resources, verbs, names)| PolicyRule {
                    api_groups: Some(strings(groups)),
                    resources: Some(strings(resources)),
                    verbs: strings(verbs),
                    resource_names: names.map(strings),
                    non_resource_urls: None,
                })
        }

        fn role() -> impl Strategy<Value = Role> {
            (select(NAMESPACES), select(ROLE_NAMES), vec(rule(), 1..3)).prop_map(
                |(namespace, name, rules)| Role {
                    metadata: meta(Some(namespace), name, None),
                    rules: Some(rules),
                },
            )
        }

        fn selector() -> impl Strategy<Value = LabelSelector> {
            (select(&["x", "y"][..]), 0..3u8).prop_map(|(value, form)| {
                let requirement = |operator: &str, values: Option<Vec<String>>| LabelSelector {
                    match_expressions: Some(vec![LabelSelectorRequirement {
                        key: "agg".into(),
                        operator: operator.into(),
                        values,
                    }]),
                    match_labels: None,
                };
                match form {
                    0 => LabelSelector {
                        match_labels: Some([("agg".to_owned(), value.to_owned())].into()),
                        match_expressions: None,
                    },
                    1 => requirement("In", Some(vec![value.to_owned()])),
                    _ => requirement("Exists", None),
                }
            })
        }

        fn cluster_role() -> impl Strategy<Value = ClusterRole> {
            (
                select(CLUSTER_ROLE_NAMES),
                proptest::option::of(select(&["x", "y"][..])),
                proptest::option::of(vec(selector(), 1..3)),
                vec(rule(), 0..3),
            )
                .prop_map(|(name, label, selectors, rules)| ClusterRole {
                    metadata: meta(None, name, label.map(|value| ("agg", value))),
                    aggregation_rule: selectors.map(|selectors| rbac::AggregationRule {
                        cluster_role_selectors: Some(selectors),
                    }),
                    rules: Some(rules),
                })
        }

        fn subject() -> impl Strategy<Value = rbac::Subject> {
            let named = |kind: &str, name: &str, namespace: Option<&str>| rbac::Subject {
                kind: kind.to_owned(),
                name: name.to_owned(),
                namespace: namespace.map(str::to_owned),
                api_group: None,
            };
            prop_oneof![
                select(USERS).prop_map(move |name| named("User", name, None)),
                select(GROUPS).prop_map(move |name| named("Group", name, None)),
                (
                    proptest::option::of(select(NAMESPACES)),
                    select(SERVICE_ACCOUNTS)
                )
                    .prop_map(move |(namespace, name)| named(
                        "ServiceAccount",
                        name,
                        namespace
                    )),
            ]
        }

        fn role_ref() -> impl Strategy<Value = rbac::RoleRef> {
            prop_oneof![
                1 => select(ROLE_NAMES).prop_map(|name| ("Role", name)),
                2 => select(CLUSTER_ROLE_NAMES).prop_map(|name| ("ClusterRole", name)),
            ]
            .prop_map(|(kind, name)| rbac::RoleRef {
                api_group: Some("rbac.authorization.k8s.io".into()),
                kind: kind.into(),
                name: name.into(),
            })
        }

        fn bootstrap_label(bootstrapped: bool) -> Option<(&'static str, &'static str)> {
            bootstrapped.then_some((BOOTSTRAP_LABEL, BOOTSTRAP_VALUE))
        }

        fn role_binding() -> impl Strategy<Value = RoleBinding> {
            (
                select(NAMESPACES),
                select(BINDING_NAMES),
                role_ref(),
                vec(subject(), 0..4),
                any::<bool>(),
            )
                .prop_map(|(namespace, name, role_ref, subjects, bootstrapped)| {
                    RoleBinding {
                        metadata: meta(Some(namespace), name, bootstrap_label(bootstrapped)),
                        role_ref,
                        subjects: Some(subjects),
                    }
                })
        }

        fn cluster_role_binding() -> impl Strategy<Value = ClusterRoleBinding> {
            (
                select(BINDING_NAMES),
                role_ref(),
                vec(subject(), 0..4),
                any::<bool>(),
            )
                .prop_map(|(name, role_ref, subjects, bootstrapped)| {
                    ClusterRoleBinding {
                        metadata: meta(None, name, bootstrap_label(bootstrapped)),
                        role_ref,
                        subjects: Some(subjects),
                    }
                })
        }

        fn world() -> impl Strategy<Value = RbacObjects> {
            (
                vec(role(), 1..4),
                vec(cluster_role(), 1..6),
                vec(role_binding(), 1..5),
                vec(cluster_role_binding(), 1..3),
            )
                .prop_map(
                    |(roles, cluster_roles, role_bindings, cluster_role_bindings)| RbacObjects {
                        roles,
                        cluster_roles,
                        role_bindings,
                        cluster_role_bindings,
                    },
                )
        }

        /// Some approvals to start from, drawn from the same pools.
        fn base_scope() -> impl Strategy<Value = AccessScope> {
            (subsequence(USERS, 0..=1), subsequence(GROUPS, 0..=1)).prop_map(|(users, groups)| {
                AccessScope::new(["enclave-a", "enclave-b"], users, groups)
            })
        }

        /// Fisher-Yates with a small deterministic generator, so that one seed from
        /// proptest reorders every list in the world.
        fn shuffle<T>(items: &mut [T], seed: &mut u64) {
            for i in (1..items.len()).rev() {
                *seed ^= *seed << 13;
                *seed ^= *seed >> 7;
                *seed ^= *seed << 17;
                let j = usize::try_from(*seed % (i as u64 + 1)).expect("fits");
                items.swap(i, j);
            }
        }

        fn shuffled(world: &RbacObjects, seed: u64) -> RbacObjects {
            let mut seed = seed | 1;
            let mut world = world.clone();
            shuffle(&mut world.roles, &mut seed);
            shuffle(&mut world.cluster_roles, &mut seed);
            shuffle(&mut world.role_bindings, &mut seed);
            shuffle(&mut world.cluster_role_bindings, &mut seed);
            for role in &mut world.roles {
                shuffle(role.rules.get_or_insert_with(Vec::new), &mut seed);
            }
            for role in &mut world.cluster_roles {
                shuffle(role.rules.get_or_insert_with(Vec::new), &mut seed);
                if let Some(selectors) = role
                    .aggregation_rule
                    .as_mut()
                    .and_then(|rule| rule.cluster_role_selectors.as_mut())
                {
                    shuffle(selectors, &mut seed);
                }
            }
            for binding in &mut world.role_bindings {
                shuffle(binding.subjects.get_or_insert_with(Vec::new), &mut seed);
            }
            for binding in &mut world.cluster_role_bindings {
                shuffle(binding.subjects.get_or_insert_with(Vec::new), &mut seed);
            }
            world
        }

        /// Does `wider` grant at least what `narrower` does?
        fn covers(wider: &Grant, narrower: &Grant) -> bool {
            match (&wider.resource_names, &narrower.resource_names) {
                (None, _) => true,
                (Some(_), None) => false,
                (Some(wide), Some(narrow)) => narrow.iter().all(|name| wide.contains(name)),
            }
        }

        proptest! {
            // No regression files: they would be written outside this module's folder.
            #![proptest_config(ProptestConfig {
                failure_persistence: None,
                ..ProptestConfig::default()
            })]

            #[test]
            fn adding_a_rule_never_removes_a_finding(
                world in world(),
                scope in base_scope(),
                extra in rule(),
                target in any::<Index>(),
                to_cluster_role in any::<bool>(),
            ) {
                let before = world.exposures(&scope);
                let mut grown = world.clone();
                if to_cluster_role && !grown.cluster_roles.is_empty() {
                    let i = target.index(grown.cluster_roles.len());
                    grown.cluster_roles[i].rules.get_or_insert_with(Vec::new).push(extra);
                } else if !grown.roles.is_empty() {
                    let i = target.index(grown.roles.len());
                    grown.roles[i].rules.get_or_insert_with(Vec::new).push(extra);
                }
                let after = grown.exposures(&scope);
                for old in &before {
                    let kept = after.iter().any(|new| {
                        new.binding == old.binding
                            && new.subject == old.subject
                            && new.role == old.role
                            && new.applies_to == old.applies_to
                            && new.built_in == old.built_in
                            && old.grants.iter().all(|grant| {
                                new.grant(grant.permission).is_some_and(|g| covers(g, grant))
                            })
                    });
                    prop_assert!(kept, "lost or narrowed: {old:#?}\nafter: {after:#?}");
                }
            }

            #[test]
            fn approving_a_subject_removes_exactly_its_findings(
                world in world(),
                scope in base_scope(),
                pick in any::<Index>(),
            ) {
                let before = world.exposures(&scope);
                prop_assume!(!before.is_empty());
                let subject = before[pick.index(before.len())].subject.clone();
                let mut approved = scope.clone();
                match subject.kind {
                    SubjectKind::User => {
                        approved.approved_users.insert(subject.name.clone());
                    }
                    SubjectKind::Group => {
                        approved.approved_groups.insert(subject.name.clone());
                    }
                    SubjectKind::ServiceAccount => {
                        let username = subject.username().expect("namespaced");
                        approved.approved_users.insert(username);
                    }
                }
                let after = world.exposures(&approved);
                let expected: Vec<Finding> =
                    before.iter().filter(|f| f.subject != subject).cloned().collect();
                prop_assert_eq!(after, expected);
            }

            #[test]
            fn output_is_independent_of_input_order(
                world in world(),
                scope in base_scope(),
                seed in any::<u64>(),
            ) {
                let findings = world.exposures(&scope);
                prop_assert!(findings.windows(2).all(|pair| pair[0] < pair[1]));
                prop_assert_eq!(shuffled(&world, seed).exposures(&scope), findings);
            }
        }
    }
}
