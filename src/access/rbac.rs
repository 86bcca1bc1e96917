//! The access exposure report: which RBAC bindings let someone outside the enclave's
//! approved staff reach into the enclave's pods (a shell, their logs, a proxy to their
//! ports, the kubelet's API), read its secrets, handle its volumes, rewrite its pods
//! and workloads, change what decides its scope (namespace labels, admission objects,
//! the enclave's own resources), or act as someone approved (impersonation, tokens).
//! Each way is its own [`Permission`]; kubelet identities are reported as such
//! ([`Holder::Node`]), not hidden among the control plane's.
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

/// A sensitive permission: one way to reach the personal data inside enclave pods, or
/// to change who may. Each is its own category in the report.
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
    /// `pods/log` with `get`: read what the pod's containers print, which is personal
    /// data as soon as an application logs it. Admission never sees a read.
    PodLogs,
    /// `pods/proxy`, any verb a proxy request has: reach the pod's ports through the
    /// API server.
    PodProxy,
    /// `services/proxy`, any proxy verb: reach the ports of the pods behind a service through
    /// the API server.
    ServiceProxy,
    /// `nodes/proxy`, any proxy verb: the kubelet's API (`exec`, `attach`, `run`,
    /// `portForward`, `containerLogs`) for every pod on every node. Cluster-scoped, so
    /// only a ClusterRoleBinding grants it; never seen by pod admission.
    NodeProxy,
    /// `nodes/log`, any proxy verb: the kubelet's `/logs/`, the node's `/var/log`, which
    /// holds every container's log under `/var/log/pods`. Cluster-scoped.
    NodeLogs,
    /// `pods` with `create`, `update` or `patch`: start a pod that mounts the data's
    /// claim, or swap the image of the pod that holds it.
    PodWrite,
    /// Workload controllers with `create`, `update` or `patch` (Deployments,
    /// StatefulSets, DaemonSets, ReplicaSets, Jobs, CronJobs, ReplicationControllers):
    /// the same as [`Permission::PodWrite`], through a controller that writes the pod.
    Workloads,
    /// `secrets` with `get`, `list` or `watch`: read credentials, such as those of the
    /// enclave's databases.
    ReadSecrets,
    /// `persistentvolumeclaims` with any write verb: the claims are where the data rests.
    Volumes,
    /// `impersonate` (or a constrained `impersonate:` verb) on `users`: act as any user
    /// named, approved staff included. Cluster-scoped.
    ImpersonateUsers,
    /// `impersonate` on `groups`: claim membership of any group named, approved groups
    /// included. Cluster-scoped.
    ImpersonateGroups,
    /// `impersonate` on `serviceaccounts`: act as the service accounts of a namespace
    /// (`edit` holds it). In the service account's namespace or cluster-wide.
    ImpersonateServiceAccounts,
    /// A constrained `impersonate:` verb on `nodes`: act as a kubelet, which the node
    /// authorizer lets read the secrets and claims of the pods on its node.
    /// Cluster-scoped.
    ImpersonateNodes,
    /// `impersonate` on `uids` or `userextras/*`: completes an impersonated identity
    /// (and an authorizer may decide on extras). Alone it becomes no one, but a report
    /// that errs must err towards a review. Cluster-scoped.
    ImpersonateExtras,
    /// `serviceaccounts/token` with `create`: mint a token for a service account of the
    /// namespace and act as it from anywhere (`edit` holds it).
    ServiceAccountTokens,
    /// `namespaces` (or `namespaces/status`) with `update` or `patch`: a namespace's
    /// labels decide whether the enclave's policies cover it, so relabelling one takes
    /// its pods out of scope. A RoleBinding grants it on its own namespace, because the
    /// API server gives a namespace request the namespace's own name as its namespace.
    NamespaceWrite,
    /// Writes to admission objects (`admissionregistration.k8s.io`: mutating and
    /// validating webhook configurations, admission policies and their bindings): turn
    /// off the operator's placement and access gate. Cluster-scoped.
    AdmissionWrite,
    /// Writes to DataEnclave or ResidencyPolicy (`enclave.dev`): approve oneself, or
    /// take a namespace out of scope; or erasing AccessApprovals or AccessAnomalies:
    /// undo a revocation, lift a lockout. Cluster-scoped.
    EnclaveWrite,
    /// Some of the permissions above are granted only through a `*` in apiGroups,
    /// resources or verbs. Never alone: it marks grants that also cover whatever
    /// resources and verbs are added to the API later, and that a reviewer will not
    /// find by searching the roles for `pods/exec`.
    Wildcard,
}

impl Permission {
    /// Every permission, in report order.
    pub const ALL: [Permission; 23] = [
        Permission::Exec,
        Permission::Attach,
        Permission::PortForward,
        Permission::EphemeralContainers,
        Permission::PodLogs,
        Permission::PodProxy,
        Permission::ServiceProxy,
        Permission::NodeProxy,
        Permission::NodeLogs,
        Permission::PodWrite,
        Permission::Workloads,
        Permission::ReadSecrets,
        Permission::Volumes,
        Permission::ImpersonateUsers,
        Permission::ImpersonateGroups,
        Permission::ImpersonateServiceAccounts,
        Permission::ImpersonateNodes,
        Permission::ImpersonateExtras,
        Permission::ServiceAccountTokens,
        Permission::NamespaceWrite,
        Permission::AdmissionWrite,
        Permission::EnclaveWrite,
        Permission::Wildcard,
    ];

    /// The name used in reports and status fields.
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Exec => "Exec",
            Permission::Attach => "Attach",
            Permission::PortForward => "PortForward",
            Permission::EphemeralContainers => "EphemeralContainers",
            Permission::PodLogs => "PodLogs",
            Permission::PodProxy => "PodProxy",
            Permission::ServiceProxy => "ServiceProxy",
            Permission::NodeProxy => "NodeProxy",
            Permission::NodeLogs => "NodeLogs",
            Permission::PodWrite => "PodWrite",
            Permission::Workloads => "Workloads",
            Permission::ReadSecrets => "ReadSecrets",
            Permission::Volumes => "Volumes",
            Permission::ImpersonateUsers => "ImpersonateUsers",
            Permission::ImpersonateGroups => "ImpersonateGroups",
            Permission::ImpersonateServiceAccounts => "ImpersonateServiceAccounts",
            Permission::ImpersonateNodes => "ImpersonateNodes",
            Permission::ImpersonateExtras => "ImpersonateExtras",
            Permission::ServiceAccountTokens => "ServiceAccountTokens",
            Permission::NamespaceWrite => "NamespaceWrite",
            Permission::AdmissionWrite => "AdmissionWrite",
            Permission::EnclaveWrite => "EnclaveWrite",
            Permission::Wildcard => "Wildcard",
        }
    }

    /// Only a ClusterRoleBinding can grant it: the resource is cluster-scoped, and a
    /// RoleBinding's rules apply only to requests in its own namespace.
    pub fn is_cluster_scoped(self) -> bool {
        matches!(
            self,
            Permission::NodeProxy
                | Permission::NodeLogs
                | Permission::ImpersonateUsers
                | Permission::ImpersonateGroups
                | Permission::ImpersonateNodes
                | Permission::ImpersonateExtras
                | Permission::AdmissionWrite
                | Permission::EnclaveWrite
        )
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

/// Who holds a finding's access, in order of concern: what needs a decision first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Holder {
    /// Someone the enclave does not approve: a decision to make.
    Unapproved,
    /// A kubelet's credentials (`system:nodes`, `system:node:<name>`). Reported rather
    /// than hidden as built-in: the group holds every node's credentials, those of nodes
    /// outside the enclave's sites too, and RBAC never needs to give a kubelet what the
    /// node authorizer already does. Listed after the others because removing it may
    /// need care (a node plugin may rely on it).
    Node,
    /// A control plane component (or a binding Kubernetes bootstraps for one), or the
    /// operator's own service account: expected and not removable, named for
    /// completeness.
    BuiltIn,
}

impl Holder {
    pub fn as_str(self) -> &'static str {
        match self {
            Holder::Unapproved => "Unapproved",
            Holder::Node => "Node",
            Holder::BuiltIn => "BuiltIn",
        }
    }
}

/// One subject of one binding that holds sensitive access to the enclave's namespaces
/// without being approved, or that can act as someone approved.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    pub binding: BindingRef,
    pub subject: SubjectRef,
    pub role: RoleRef,
    pub applies_to: AppliesTo,
    /// One entry per permission, in [`Permission`] order; never empty. For a
    /// RoleBinding outside the enclave's namespaces (reported only because it reaches
    /// an approved service account there), only the grants that act as it.
    pub grants: Vec<Grant>,
    pub holder: Holder,
    /// The approved subjects this subject can act as through these grants, by
    /// impersonating them or minting their tokens (sorted): whatever the enclave
    /// approves them for, it approves this subject for too. A service account in a
    /// group the enclave approves (`system:serviceaccounts:<ns>`) is named by that
    /// group.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub acts_as: Vec<SubjectRef>,
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

    /// Expected access of a control plane component: not a decision to make.
    pub fn built_in(&self) -> bool {
        self.holder == Holder::BuiltIn
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
        if !self.acts_as.is_empty() {
            f.write_str(", acting as approved ")?;
            for (i, subject) in self.acts_as.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{subject}")?;
            }
        }
        match self.holder {
            Holder::Unapproved => {}
            Holder::Node => f.write_str(" (node credentials)")?,
            Holder::BuiltIn => f.write_str(" (built-in)")?,
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
    /// The operator's own namespace. Its service accounts are the installation's: the
    /// operator must write admission objects, so its binding holds what the report
    /// counts, and is expected (built-in), not a decision. Whoever can act as them
    /// already controls the operator.
    pub operator_namespace: Option<String>,
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
            operator_namespace: None,
        }
    }

    /// The same scope, with the operator's own namespace (see
    /// [`AccessScope::operator_namespace`]).
    pub fn with_operator_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.operator_namespace = Some(namespace.into());
        self
    }

    /// Is this subject one of the operator's own service accounts (or their group)?
    fn is_operator(&self, subject: &SubjectRef) -> bool {
        let Some(operator) = self.operator_namespace.as_deref() else {
            return false;
        };
        match subject.kind {
            SubjectKind::ServiceAccount => subject.namespace.as_deref() == Some(operator),
            SubjectKind::User => service_account_of(&subject.name) == Some(operator),
            SubjectKind::Group => subject
                .name
                .strip_prefix(SA_GROUP_PREFIX)
                .is_some_and(|namespace| namespace == operator),
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

    /// Every identity the enclave approves, in the form someone would have to become
    /// to pass as it.
    fn approved_identities(&self) -> Vec<Approved> {
        let users = self.approved_users.iter().map(|user| {
            match user
                .strip_prefix(SA_USER_PREFIX)
                .and_then(|rest| rest.split_once(':'))
                .filter(|(namespace, name)| !namespace.is_empty() && !name.is_empty())
            {
                Some((namespace, name)) => Approved::ServiceAccount {
                    namespace: namespace.to_owned(),
                    name: name.to_owned(),
                },
                None => Approved::User(user.clone()),
            }
        });
        let groups = self.approved_groups.iter().map(|group| {
            if group == ALL_SA_GROUP {
                Approved::AllServiceAccounts
            } else {
                match group.strip_prefix(SA_GROUP_PREFIX) {
                    Some(namespace) if !namespace.is_empty() => {
                        Approved::ServiceAccountsIn(namespace.to_owned())
                    }
                    _ => Approved::Group(group.clone()),
                }
            }
        });
        users.chain(groups).collect()
    }
}

/// An identity the enclave approves, as the API server lets someone else become it.
///
/// Impersonating a user or a group is authorized on the cluster-scoped `users` and
/// `groups`; impersonating a service account (its user name included: the API server
/// turns `system:serviceaccount:<ns>:<name>` into a service account request) on
/// `serviceaccounts` in its namespace, and a token for it is `serviceaccounts/token` in
/// its namespace. So a RoleBinding in a service account's namespace can reach it, and
/// only a ClusterRoleBinding can reach a user or a group.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Approved {
    User(String),
    Group(String),
    ServiceAccount {
        namespace: String,
        name: String,
    },
    /// `system:serviceaccounts:<ns>`: any service account of the namespace.
    ServiceAccountsIn(String),
    /// `system:serviceaccounts`: any service account at all.
    AllServiceAccounts,
}

impl Approved {
    /// Can a RoleBinding in this namespace reach it?
    fn lives_in(&self, namespace: &str) -> bool {
        match self {
            Approved::ServiceAccount { namespace: ns, .. } | Approved::ServiceAccountsIn(ns) => {
                ns == namespace
            }
            Approved::AllServiceAccounts => true,
            Approved::User(_) | Approved::Group(_) => false,
        }
    }

    /// Do these grants, bound in `namespace` (`None`: cluster-wide), let their holder
    /// act as this identity? Impersonating a group also needs a user to impersonate,
    /// but any user name does, so holding the group is counted as enough.
    fn reached_by(&self, held: &Held, namespace: Option<&str>) -> bool {
        use Permission::{ImpersonateGroups, ImpersonateServiceAccounts, ImpersonateUsers};
        let here = |ns: &str| namespace.is_none_or(|bound| bound == ns);
        let any_service_account =
            held.holds(ImpersonateServiceAccounts) || held.holds(Permission::ServiceAccountTokens);
        match self {
            Approved::User(name) => held.covers(ImpersonateUsers, name),
            Approved::Group(name) => held.covers(ImpersonateGroups, name),
            Approved::ServiceAccount {
                namespace: ns,
                name,
            } => {
                here(ns)
                    && (held.covers(ImpersonateServiceAccounts, name)
                        || held.covers(Permission::ServiceAccountTokens, name))
            }
            Approved::ServiceAccountsIn(ns) => {
                (here(ns) && any_service_account)
                    || held.covers(ImpersonateGroups, &format!("{SA_GROUP_PREFIX}{ns}"))
            }
            Approved::AllServiceAccounts => {
                any_service_account || held.covers(ImpersonateGroups, ALL_SA_GROUP)
            }
        }
    }

    /// The identity as a report names it.
    fn subject(&self) -> SubjectRef {
        let (kind, name, namespace) = match self {
            Approved::User(name) => (SubjectKind::User, name.clone(), None),
            Approved::Group(name) => (SubjectKind::Group, name.clone(), None),
            Approved::ServiceAccount { namespace, name } => (
                SubjectKind::ServiceAccount,
                name.clone(),
                Some(namespace.clone()),
            ),
            Approved::ServiceAccountsIn(namespace) => (
                SubjectKind::Group,
                format!("{SA_GROUP_PREFIX}{namespace}"),
                None,
            ),
            Approved::AllServiceAccounts => (SubjectKind::Group, ALL_SA_GROUP.to_owned(), None),
        };
        SubjectRef {
            kind,
            name,
            namespace,
        }
    }
}

/// The report.
///
/// Considers every RoleBinding in an enclave namespace and every ClusterRoleBinding
/// (whatever the scope, since it reaches every namespace the enclave has now or gains
/// later), resolves the role each refers to, with ClusterRole aggregation, and returns
/// one [`Finding`] per unapproved subject that the role gives at least one sensitive
/// [`Permission`]. A RoleBinding counts only the namespaced permissions, as in the
/// authorizer.
///
/// RoleBindings in other namespaces are considered too where an approved service
/// account lives (or every namespace, when `system:serviceaccounts` is approved): a
/// subject that can impersonate it or mint its token there passes as approved staff
/// everywhere. Such a finding lists only those grants, and every finding names in
/// `acts_as` the approved identities its subject can become.
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
    let approved = scope.approved_identities();
    let mut findings = Vec::new();

    for binding in role_bindings {
        let Some(namespace) = binding.metadata.namespace.as_deref() else {
            continue;
        };
        // Outside the enclave's namespaces a RoleBinding reaches no enclave pod, but it
        // may reach an approved service account that lives there.
        let in_enclave = scope.namespaces.contains(namespace);
        if !in_enclave && !approved.iter().any(|a| a.lives_in(namespace)) {
            continue;
        }
        let Some((role, grants)) = index.resolve(&binding.role_ref, Some(namespace)) else {
            continue;
        };
        // A RoleBinding's rules apply to requests in its namespace only, so it grants
        // nothing on cluster-scoped resources whatever its role says.
        let held = grants.held(|permission, reach| {
            reach == Reach::Namespaced && (in_enclave || IDENTITY_PERMISSIONS.contains(&permission))
        });
        let acts_as = held.acts_as(&approved, Some(namespace));
        if held.is_empty() || (!in_enclave && acts_as.is_empty()) {
            continue;
        }
        let bound = Bound {
            binding: BindingRef {
                kind: BindingKind::RoleBinding,
                namespace: Some(namespace.to_owned()),
                name: binding.metadata.name.clone().unwrap_or_default(),
            },
            metadata: &binding.metadata,
            role,
            grants: held.to_vec(),
            acts_as,
            applies_to: AppliesTo::Namespace(namespace.to_owned()),
            namespace: Some(namespace),
        };
        bound.report(binding.subjects.as_deref(), scope, &mut findings);
    }

    for binding in cluster_role_bindings {
        let Some((role, grants)) = index.resolve(&binding.role_ref, None) else {
            continue;
        };
        let held = grants.held(|_, _| true);
        let bound = Bound {
            binding: BindingRef {
                kind: BindingKind::ClusterRoleBinding,
                namespace: None,
                name: binding.metadata.name.clone().unwrap_or_default(),
            },
            metadata: &binding.metadata,
            role,
            grants: held.to_vec(),
            acts_as: held.acts_as(&approved, None),
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
    grants.held(|_, _| true).to_vec()
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
    /// Findings for node credentials (counted in `other` too: they need a decision).
    #[serde(default)]
    pub node: usize,
    /// Findings that need a decision: `total - built_in`.
    pub other: usize,
    /// At most the requested number of findings, in [`Holder`] order (unapproved
    /// subjects, then nodes, then built-in ones), each in report order.
    pub findings: Vec<Finding>,
    /// How many findings are counted but not listed.
    pub omitted: usize,
}

/// Summarize findings for a status field, listing at most `limit` of them.
pub fn summarize(findings: &[Finding], limit: usize) -> ExposureSummary {
    let mut ordered: Vec<&Finding> = findings.iter().collect();
    // Unapproved before nodes before built-in; within each, the report's own order,
    // even if the caller passes findings in another order.
    ordered.sort_by(|a, b| (a.holder, a).cmp(&(b.holder, b)));
    let built_in = findings.iter().filter(|f| f.built_in()).count();
    let node = findings.iter().filter(|f| f.holder == Holder::Node).count();
    let shown: Vec<Finding> = ordered.into_iter().take(limit).cloned().collect();
    ExposureSummary {
        total: findings.len(),
        built_in,
        node,
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
const COMPONENT_GROUPS: &[&str] = &["system:masters"];
/// Users of control plane components: built-in wherever they are bound.
const COMPONENT_USERS: &[&str] = &[
    "system:apiserver",
    "system:kube-controller-manager",
    "system:kube-proxy",
    "system:kube-scheduler",
];
/// Every kubelet is in this group.
const NODES_GROUP: &str = "system:nodes";
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

/// Who holds a finding's access: a node, the control plane, or someone to decide on.
///
/// A kubelet identity is a node whatever the binding looks like: the point is that
/// every node's credentials hold it, those of nodes outside the enclave too.
///
/// A known component identity is built-in wherever it is bound. Otherwise the binding
/// must look like one Kubernetes bootstraps (the `rbac-defaults` label, or a `system:`
/// name) and the subject must be a `system:` identity of the control plane: a
/// `system:` user or group that is not one of the open groups or the anonymous user, or
/// a service account in kube-system. Both conditions, because either alone can be
/// forged by anyone who may create bindings: a binding named `system:x` that gives
/// user `mallory` exec must still count as a decision to make.
fn holder(subject: &SubjectRef, binding: &ObjectMeta) -> Holder {
    if is_node(subject) {
        return Holder::Node;
    }
    if is_component(subject) {
        return Holder::BuiltIn;
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
    if bootstrapped && is_control_plane_identity(subject) {
        Holder::BuiltIn
    } else {
        Holder::Unapproved
    }
}

fn is_node(subject: &SubjectRef) -> bool {
    let name = subject.name.as_str();
    match subject.kind {
        SubjectKind::Group => name == NODES_GROUP,
        SubjectKind::User => name
            .strip_prefix(NODE_USER_PREFIX)
            .is_some_and(|node| !node.is_empty()),
        SubjectKind::ServiceAccount => false,
    }
}

fn is_component(subject: &SubjectRef) -> bool {
    let name = subject.name.as_str();
    match subject.kind {
        SubjectKind::Group => COMPONENT_GROUPS.contains(&name),
        SubjectKind::User => COMPONENT_USERS.contains(&name),
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

/// Whether a check's resource lives in a namespace. A RoleBinding grants only
/// namespaced checks, and only in its namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Reach {
    Namespaced,
    Cluster,
}

/// Which subresource a check asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sub {
    /// The resource itself.
    None,
    /// One subresource, e.g. `exec`.
    Named(&'static str),
    /// Any subresource: `userextras/<key>` names the extra field's key.
    Any,
}

/// A sensitive request: resources of some API groups (and a subresource), with the
/// verbs that make it sensitive (`None`: any verb). A verb ending in `:` stands for
/// every verb with that prefix (the constrained impersonation verbs,
/// `impersonate:user-info`, `impersonate:serviceaccount`, ...).
struct Check {
    permission: Permission,
    groups: &'static [&'static str],
    resources: &'static [&'static str],
    subresource: Sub,
    verbs: Option<&'static [&'static str]>,
    reach: Reach,
}

const CORE: &[&str] = &[""];
/// Legacy impersonation asks about `users`, `groups` and `serviceaccounts` in the core
/// group (and `uids`, `userextras` in `authentication.k8s.io`); constrained
/// impersonation asks about all of them in `authentication.k8s.io`. Both groups count
/// for every impersonation check: a rule in the wrong one is a false alarm at worst.
const IMPERSONATION_GROUPS: &[&str] = &["", "authentication.k8s.io"];
const IMPERSONATE: Option<&[&str]> = Some(&["impersonate", "impersonate:"]);
/// Verbs that change an object (delete too: deleting a webhook configuration or a
/// policy turns it off).
const WRITE: Option<&[&str]> = Some(&["create", "update", "patch", "delete", "deletecollection"]);
/// Verbs that change or remove an existing object.
const ERASE: Option<&[&str]> = Some(&["update", "patch", "delete", "deletecollection"]);
/// The verbs a proxy request can have: the API server names them after the HTTP
/// method, and every method reaches the target.
const PROXY: Option<&[&str]> = Some(&["get", "create", "update", "patch", "delete"]);
/// Verbs that set a pod's spec, directly or through a template.
const POD_SPEC_WRITE: Option<&[&str]> = Some(&["create", "update", "patch"]);

/// The permissions whose only use outside the enclave's namespaces is to act as an
/// approved service account living there.
const IDENTITY_PERMISSIONS: [Permission; 2] = [
    Permission::ImpersonateServiceAccounts,
    Permission::ServiceAccountTokens,
];

const CHECKS: [Check; 27] = [
    Check {
        permission: Permission::Exec,
        groups: CORE,
        resources: &["pods"],
        subresource: Sub::Named("exec"),
        verbs: Some(&["create", "get"]),
        reach: Reach::Namespaced,
    },
    Check {
        permission: Permission::Attach,
        groups: CORE,
        resources: &["pods"],
        subresource: Sub::Named("attach"),
        verbs: Some(&["create", "get"]),
        reach: Reach::Namespaced,
    },
    Check {
        permission: Permission::PortForward,
        groups: CORE,
        resources: &["pods"],
        subresource: Sub::Named("portforward"),
        verbs: Some(&["create", "get"]),
        reach: Reach::Namespaced,
    },
    Check {
        permission: Permission::EphemeralContainers,
        groups: CORE,
        resources: &["pods"],
        subresource: Sub::Named("ephemeralcontainers"),
        verbs: Some(&["update", "patch"]),
        reach: Reach::Namespaced,
    },
    Check {
        permission: Permission::PodLogs,
        groups: CORE,
        resources: &["pods"],
        subresource: Sub::Named("log"),
        verbs: Some(&["get"]),
        reach: Reach::Namespaced,
    },
    Check {
        permission: Permission::PodProxy,
        groups: CORE,
        resources: &["pods"],
        subresource: Sub::Named("proxy"),
        verbs: PROXY,
        reach: Reach::Namespaced,
    },
    Check {
        permission: Permission::ServiceProxy,
        groups: CORE,
        resources: &["services"],
        subresource: Sub::Named("proxy"),
        verbs: PROXY,
        reach: Reach::Namespaced,
    },
    // The kubelet authorizes its API the same way whether the request comes through the
    // API server's proxy or straight to port 10250: exec, attach, run, portForward and
    // containerLogs as nodes/proxy, /logs/ as nodes/log.
    Check {
        permission: Permission::NodeProxy,
        groups: CORE,
        resources: &["nodes"],
        subresource: Sub::Named("proxy"),
        verbs: PROXY,
        reach: Reach::Cluster,
    },
    Check {
        permission: Permission::NodeLogs,
        groups: CORE,
        resources: &["nodes"],
        subresource: Sub::Named("log"),
        verbs: PROXY,
        reach: Reach::Cluster,
    },
    Check {
        permission: Permission::PodWrite,
        groups: CORE,
        resources: &["pods"],
        subresource: Sub::None,
        verbs: POD_SPEC_WRITE,
        reach: Reach::Namespaced,
    },
    Check {
        permission: Permission::Workloads,
        groups: &["apps"],
        resources: &["deployments", "statefulsets", "daemonsets", "replicasets"],
        subresource: Sub::None,
        verbs: POD_SPEC_WRITE,
        reach: Reach::Namespaced,
    },
    Check {
        permission: Permission::Workloads,
        groups: &["batch"],
        resources: &["jobs", "cronjobs"],
        subresource: Sub::None,
        verbs: POD_SPEC_WRITE,
        reach: Reach::Namespaced,
    },
    Check {
        permission: Permission::Workloads,
        groups: CORE,
        resources: &["replicationcontrollers"],
        subresource: Sub::None,
        verbs: POD_SPEC_WRITE,
        reach: Reach::Namespaced,
    },
    Check {
        permission: Permission::ReadSecrets,
        groups: CORE,
        resources: &["secrets"],
        subresource: Sub::None,
        verbs: Some(&["get", "list", "watch"]),
        reach: Reach::Namespaced,
    },
    // Writing claims reaches data (a claim can name an existing volume and a pod can
    // then mount it); reading claim objects shows their metadata only, and every
    // namespace viewer holds it, so it is not counted.
    Check {
        permission: Permission::Volumes,
        groups: CORE,
        resources: &["persistentvolumeclaims"],
        subresource: Sub::None,
        verbs: WRITE,
        reach: Reach::Namespaced,
    },
    Check {
        permission: Permission::ImpersonateUsers,
        groups: IMPERSONATION_GROUPS,
        resources: &["users"],
        subresource: Sub::None,
        verbs: IMPERSONATE,
        reach: Reach::Cluster,
    },
    Check {
        permission: Permission::ImpersonateGroups,
        groups: IMPERSONATION_GROUPS,
        resources: &["groups"],
        subresource: Sub::None,
        verbs: IMPERSONATE,
        reach: Reach::Cluster,
    },
    Check {
        permission: Permission::ImpersonateServiceAccounts,
        groups: IMPERSONATION_GROUPS,
        resources: &["serviceaccounts"],
        subresource: Sub::None,
        verbs: IMPERSONATE,
        reach: Reach::Namespaced,
    },
    Check {
        permission: Permission::ImpersonateNodes,
        groups: IMPERSONATION_GROUPS,
        resources: &["nodes"],
        subresource: Sub::None,
        verbs: Some(&["impersonate:"]),
        reach: Reach::Cluster,
    },
    Check {
        permission: Permission::ImpersonateExtras,
        groups: IMPERSONATION_GROUPS,
        resources: &["uids"],
        subresource: Sub::None,
        verbs: IMPERSONATE,
        reach: Reach::Cluster,
    },
    Check {
        permission: Permission::ImpersonateExtras,
        groups: IMPERSONATION_GROUPS,
        resources: &["userextras"],
        subresource: Sub::Any,
        verbs: IMPERSONATE,
        reach: Reach::Cluster,
    },
    Check {
        permission: Permission::ServiceAccountTokens,
        groups: CORE,
        resources: &["serviceaccounts"],
        subresource: Sub::Named("token"),
        verbs: Some(&["create"]),
        reach: Reach::Namespaced,
    },
    Check {
        permission: Permission::NamespaceWrite,
        groups: CORE,
        resources: &["namespaces"],
        subresource: Sub::None,
        verbs: Some(&["update", "patch"]),
        reach: Reach::Namespaced,
    },
    // The status strategy of namespaces keeps the spec, not the metadata: a write
    // through /status can carry labels too.
    Check {
        permission: Permission::NamespaceWrite,
        groups: CORE,
        resources: &["namespaces"],
        subresource: Sub::Named("status"),
        verbs: Some(&["update", "patch"]),
        reach: Reach::Namespaced,
    },
    Check {
        permission: Permission::AdmissionWrite,
        groups: &["admissionregistration.k8s.io"],
        resources: &[
            "mutatingwebhookconfigurations",
            "validatingwebhookconfigurations",
            "mutatingadmissionpolicies",
            "mutatingadmissionpolicybindings",
            "validatingadmissionpolicies",
            "validatingadmissionpolicybindings",
        ],
        subresource: Sub::None,
        verbs: WRITE,
        reach: Reach::Cluster,
    },
    Check {
        permission: Permission::EnclaveWrite,
        groups: &["enclave.dev"],
        resources: &["dataenclaves", "residencypolicies"],
        subresource: Sub::None,
        verbs: WRITE,
        reach: Reach::Cluster,
    },
    // Erasing a decision on a grant (a revocation, a denial) reopens it; erasing an
    // AccessAnomaly lifts its lockout. Creating one is an approver's (and counts only
    // for the approvers the enclave names) or the operator's, and is not reported.
    Check {
        permission: Permission::EnclaveWrite,
        groups: &["enclave.dev"],
        resources: &["accessapprovals", "accessanomalies"],
        subresource: Sub::None,
        verbs: ERASE,
        reach: Reach::Cluster,
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
        "*" => Some(Match::Wildcard),
        group if check.groups.contains(&group) => Some(Match::Exact),
        _ => None,
    })?;
    let resource = best(rule.resources.iter().flatten(), |entry| {
        check
            .resources
            .iter()
            .filter_map(|resource| resource_match(entry, resource, check.subresource))
            .max()
    })?;
    let verb = best(rule.verbs.iter(), |verb| match (verb, check.verbs) {
        ("*", _) => Some(Match::Wildcard),
        ("", _) => None,
        (_, None) => Some(Match::Exact),
        (verb, Some(verbs)) => verbs
            .iter()
            .any(|wanted| match wanted.strip_suffix(':') {
                Some(prefix) => verb
                    .strip_prefix(prefix)
                    .is_some_and(|rest| rest.len() > 1 && rest.starts_with(':')),
                None => verb == *wanted,
            })
            .then_some(Match::Exact),
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
fn resource_match(entry: &str, resource: &str, subresource: Sub) -> Option<Match> {
    if entry == "*" {
        return Some(Match::Wildcard);
    }
    match (subresource, entry.split_once('/')) {
        (Sub::None, None) => (entry == resource).then_some(Match::Exact),
        (Sub::Named(wanted), Some((r, s))) => {
            if r == resource && s == wanted {
                Some(Match::Exact)
            } else if (r == resource || r == "*") && (s == wanted || s == "*") {
                Some(Match::Wildcard)
            } else {
                None
            }
        }
        // Any key of userextras: a named key is exact, `*` a wildcard.
        (Sub::Any, Some((r, s))) if !s.is_empty() => {
            if r == resource && s != "*" {
                Some(Match::Exact)
            } else if r == resource || r == "*" {
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

    fn covers(&self, name: &str) -> bool {
        match self {
            Objects::All => true,
            Objects::Named(names) => names.contains(name),
        }
    }
}

/// The sensitive permissions a set of rules adds up to, by where they apply: what a
/// role holds before a binding decides which of it counts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Grants(BTreeMap<(Permission, Reach), Objects>);

impl Grants {
    fn add(&mut self, key: (Permission, Reach), objects: &Objects) {
        match self.0.get_mut(&key) {
            Some(held) => held.widen(objects),
            None => {
                self.0.insert(key, objects.clone());
            }
        }
    }

    fn add_rule(&mut self, rule: &PolicyRule) {
        let objects = Objects::of(rule);
        for check in &CHECKS {
            if let Some(matched) = rule_match(rule, check) {
                self.add((check.permission, check.reach), &objects);
                if matched == Match::Wildcard {
                    self.add((Permission::Wildcard, check.reach), &objects);
                }
            }
        }
    }

    fn merge(&mut self, other: &Grants) {
        for (key, objects) in &other.0 {
            self.add(*key, objects);
        }
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// What a binding gives of these grants: those its kind and place let count.
    /// `Wildcard` is kept by where the wildcard matched, so it stays only if a check
    /// that counts came through one.
    fn held(&self, counts: impl Fn(Permission, Reach) -> bool) -> Held {
        let mut held = Held::default();
        for (&(permission, reach), objects) in &self.0 {
            if counts(permission, reach) {
                held.add(permission, objects);
            }
        }
        held
    }
}

/// The grants of one binding, by permission.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Held(BTreeMap<Permission, Objects>);

impl Held {
    fn add(&mut self, permission: Permission, objects: &Objects) {
        match self.0.get_mut(&permission) {
            Some(held) => held.widen(objects),
            None => {
                self.0.insert(permission, objects.clone());
            }
        }
    }

    fn holds(&self, permission: Permission) -> bool {
        self.0.contains_key(&permission)
    }

    fn covers(&self, permission: Permission, name: &str) -> bool {
        self.0
            .get(&permission)
            .is_some_and(|objects| objects.covers(name))
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The approved identities these grants reach, in report order.
    fn acts_as(&self, approved: &[Approved], namespace: Option<&str>) -> Vec<SubjectRef> {
        let mut reached: Vec<SubjectRef> = approved
            .iter()
            .filter(|identity| identity.reached_by(self, namespace))
            .map(Approved::subject)
            .collect();
        reached.sort();
        reached.dedup();
        reached
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
    /// What the binding gives, in report order.
    grants: Vec<Grant>,
    /// The approved identities those grants act as.
    acts_as: Vec<SubjectRef>,
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
                holder: if scope.is_operator(&subject) {
                    Holder::BuiltIn
                } else {
                    holder(&subject, self.metadata)
                },
                subject,
                role: self.role.clone(),
                applies_to: self.applies_to.clone(),
                grants: self.grants.clone(),
                acts_as: self.acts_as.clone(),
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
    const PATHS: &str = include_str!("testdata/paths.yaml");
    const IDENTITIES: &str = include_str!("testdata/identities.yaml");
    const NODES: &str = include_str!("testdata/nodes.yaml");
    const OPERATOR: &str = include_str!("testdata/operator.yaml");

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

    /// What the one finding of a binding grants.
    fn granted(findings: &[Finding], binding: &str) -> Vec<Permission> {
        permissions(only(findings, binding))
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
                grants: vec![
                    Grant {
                        permission: Exec,
                        resource_names: None,
                    },
                    Grant {
                        permission: PodLogs,
                        resource_names: None,
                    },
                ],
                holder: Holder::Unapproved,
                acts_as: vec![],
            }
        );
    }

    /// What single bindings of the fixtures grant, one case a row: (case, fixture,
    /// binding, grants); no grants: the binding is not reported at all.
    #[rustfmt::skip] // a table: one row a line reads better than rustfmt's tuples
    const GRANTS: &[(&str, &str, &str, &[Permission])] = &[
        ("direct attach, port-forward and proxy", DIRECT, "attach-and-forward", &[Attach, PortForward, PodProxy]),
        ("ephemeral containers need update or patch", DIRECT, "debug-containers", &[EphemeralContainers]),
        ("reading ephemeral containers adds none", DIRECT, "debug-containers-read", &[]),
        ("listing secrets exposes them", DIRECT, "secret-lister", &[ReadSecrets]),
        ("creating secrets alone does not", DIRECT, "secret-creator", &[]),
        ("persistent volume claims written", DIRECT, "claims-deleter", &[Volumes]),
        // create reaches exec, attach, port-forward and the proxy; patch the ephemeral
        // containers. Not the logs (get) nor the pods themselves.
        ("pods/* covers the pod subresources", WILDCARDS, "pod-subresources", &[Exec, Attach, PortForward, EphemeralContainers, PodProxy, Wildcard]),
        ("pods/* covers exec", WILDCARDS, "any-exec", &[Exec, Wildcard]),
        ("a wildcard in apps grants workloads", WILDCARDS, "apps-everything", &[Workloads, Wildcard]),
        ("a wildcard on URLs grants nothing", WILDCARDS, "urls-everything", &[]),
        ("Wildcard marks only what a wildcard adds", WILDCARDS, "exact-and-wildcard", &[Exec, ReadSecrets, Wildcard]),
        ("an aggregation cycle ends with the union", AGGREGATION, "loop-a", &[Attach, ReadSecrets]),
        ("an aggregation cycle ends with the union", AGGREGATION, "loop-b", &[Attach, ReadSecrets]),
        ("a role aggregating itself keeps its rules", AGGREGATION, "self-loop", &[Volumes]),
        ("aggregation is transitive and keeps stored rules", AGGREGATION, "chain-top", &[PortForward, EphemeralContainers]),
        // exp-data (In, DoesNotExist) and exp-owned (Exists, NotIn on a missing label);
        // not the retired, web or frontend roles, nor the malformed selector.
        ("aggregation by match expressions", AGGREGATION, "expressions", &[Exec, Volumes]),
        ("logs are their own category", PATHS, "logs-reader", &[PodLogs]),
        ("the pod proxy is its own category", PATHS, "pod-proxy", &[PodProxy]),
        ("the service proxy is its own category", PATHS, "service-proxy", &[ServiceProxy]),
        ("listing pods reads no logs", PATHS, "logs-list", &[]),
        ("reading services proxies nothing", PATHS, "service-reader", &[]),
    ];

    #[test]
    fn each_binding_grants_what_its_rules_reach() {
        for (case, fixture, binding, grants) in GRANTS {
            let findings = report(fixture);
            if grants.is_empty() {
                let found = named(&findings, binding);
                assert!(found.is_empty(), "{case}: {binding} reported: {found:#?}");
            } else {
                assert_eq!(granted(&findings, binding), *grants, "{case}");
            }
        }
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
        // Only "get" on every resource: reading claims does not count, and in a
        // RoleBinding neither does anything cluster-scoped (nodes/proxy).
        assert_eq!(
            granted(&findings, "all-resources"),
            [
                Exec,
                Attach,
                PortForward,
                PodLogs,
                PodProxy,
                ServiceProxy,
                ReadSecrets,
                Wildcard
            ]
        );
        assert_eq!(granted(&findings, "all-verbs"), [ReadSecrets, Wildcard]);
        assert_eq!(granted(&findings, "all-groups"), [Exec, Wildcard]);
    }

    #[test]
    fn aggregated_admin_picks_up_custom_exec_role() {
        let findings = report(AGGREGATION);
        let finding = only(&findings, "admin");
        assert_eq!(finding.role.name, "admin");
        assert_eq!(permissions(finding), [Exec]);
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
            .filter(|f| f.built_in())
            .map(|f| (f.binding.name.as_str(), f.subject.clone()))
            .collect();
        assert_eq!(
            built_in,
            [
                ("cluster-admin", group("system:masters")),
                ("scheduler-extras", user("system:kube-scheduler")),
                (
                    "system:controller:generic-garbage-collector",
                    service_account("kube-system", "generic-garbage-collector")
                ),
            ]
        );
        // Kubelets are not the control plane: their credentials are reported as nodes.
        let nodes: Vec<(&str, SubjectRef)> = findings
            .iter()
            .filter(|f| f.holder == Holder::Node)
            .map(|f| (f.binding.name.as_str(), f.subject.clone()))
            .collect();
        assert_eq!(
            nodes,
            [
                ("scheduler-extras", user("system:node:worker-1")),
                ("scheduler-extras", group("system:nodes")),
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
            .filter(|f| f.holder == Holder::Unapproved)
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

    /// The permissions of each binding of a fixture, by binding name.
    fn by_binding(findings: &[Finding]) -> BTreeMap<String, Vec<Permission>> {
        findings
            .iter()
            .map(|f| (f.binding.name.clone(), permissions(f)))
            .collect()
    }

    #[test]
    fn cluster_wide_kubelet_access_is_reported() {
        let findings = report(PATHS);
        let prom = only(&findings, "prom-kubelet");
        assert_eq!(prom.binding.kind, BindingKind::ClusterRoleBinding);
        assert_eq!(prom.subject, user("prom"));
        assert_eq!(prom.applies_to, AppliesTo::AllNamespaces);
        // nodes/stats and nodes/metrics add nothing.
        assert_eq!(permissions(prom), [NodeProxy]);
        assert_eq!(prom.holder, Holder::Unapproved);
        assert_eq!(granted(&findings, "node-logs"), [NodeLogs]);
    }

    #[test]
    fn pod_and_workload_writes_are_reported() {
        let found = by_binding(&report(PATHS));
        for (binding, expected) in [
            ("pod-creator", vec![PodWrite]),
            ("pod-patcher", vec![PodWrite]),
            ("deployers", vec![Workloads]),
            ("batch-runner", vec![Workloads]),
            ("rc-writer", vec![Workloads]),
            ("daemon-writer", vec![Workloads]),
        ] {
            assert_eq!(found.get(binding), Some(&expected), "{binding}");
        }
        // Deleting pods, scaling, or a core-group "deployments": nothing.
        assert!(!found.contains_key("pod-deleter"));
        assert!(!found.contains_key("scaler"));
    }

    #[test]
    fn impersonation_and_tokens_are_reported() {
        let found = by_binding(&report(PATHS));
        assert_eq!(found["impersonate-users"], [ImpersonateUsers]);
        assert_eq!(found["impersonate-groups"], [ImpersonateGroups]);
        assert_eq!(found["impersonate-extras"], [ImpersonateExtras]);
        // Constrained impersonation's identity verbs count; its action verbs alone
        // (impersonate-on:...) become no one.
        assert_eq!(
            found["impersonate-constrained"],
            [ImpersonateUsers, ImpersonateNodes]
        );
        assert_eq!(found["sa-impersonator"], [ImpersonateServiceAccounts]);
        assert_eq!(found["token-minter"], [ServiceAccountTokens]);
        assert!(!found.contains_key("sa-reader"));
    }

    #[test]
    fn scope_and_admission_writes_are_reported() {
        let findings = report(PATHS);
        let found = by_binding(&findings);
        assert_eq!(found["namespace-labeller"], [NamespaceWrite]);
        assert_eq!(found["namespace-status"], [NamespaceWrite]);
        assert_eq!(found["webhook-editor"], [AdmissionWrite]);
        assert_eq!(found["policy-binder"], [AdmissionWrite]);
        assert_eq!(found["enclave-editor"], [EnclaveWrite]);
        assert_eq!(found["decision-eraser"], [EnclaveWrite]);
        for harmless in [
            "namespace-reader",
            "admission-reader",
            "enclave-reader",
            "grant-approver",
        ] {
            assert!(!found.contains_key(harmless), "{harmless}");
        }
        // A RoleBinding can patch its own namespace: the API server gives a namespace
        // request the namespace's name as its namespace.
        let own = only(&findings, "namespace-labeller-in-namespace");
        assert_eq!(permissions(own), [NamespaceWrite]);
        assert_eq!(own.applies_to, AppliesTo::Namespace("enclave-a".into()));
    }

    #[test]
    fn a_role_binding_grants_nothing_cluster_scoped() {
        let findings = report(PATHS);
        for binding in [
            "prom-kubelet-in-namespace",
            "impersonate-users-in-namespace",
            "webhook-editor-in-namespace",
            "enclave-editor-in-namespace",
        ] {
            assert!(named(&findings, binding).is_empty(), "{binding}");
        }
        assert!(
            findings
                .iter()
                .filter(|f| f.binding.kind == BindingKind::RoleBinding)
                .flat_map(Finding::permissions)
                .all(|p| !p.is_cluster_scoped())
        );
    }

    #[test]
    fn every_category_has_a_fixture() {
        let mut seen: BTreeSet<Permission> = BTreeSet::new();
        for fixture in [DIRECT, WILDCARDS, PATHS] {
            seen.extend(report(fixture).iter().flat_map(Finding::permissions));
        }
        let missing: Vec<Permission> = Permission::ALL
            .into_iter()
            .filter(|p| !seen.contains(p))
            .collect();
        assert!(missing.is_empty(), "no fixture grants {missing:?}");
    }

    /// The enclave of identities.yaml: an approved service account outside the
    /// enclave's namespaces, and a namespace's service accounts approved by group.
    fn identity_scope() -> AccessScope {
        AccessScope::new(
            ["enclave-a", "enclave-b"],
            ["dr-ada", "system:serviceaccount:tools:debugger"],
            ["enclave-staff", "system:serviceaccounts:ops"],
        )
    }

    fn acts_as(findings: &[Finding]) -> Vec<(&str, SubjectRef, Vec<SubjectRef>)> {
        findings
            .iter()
            .map(|f| {
                (
                    f.binding.name.as_str(),
                    f.subject.clone(),
                    f.acts_as.clone(),
                )
            })
            .collect()
    }

    #[test]
    fn who_can_act_as_approved_subjects_is_named() {
        let objects = RbacObjects::from_yaml(IDENTITIES).expect("fixture parses");
        let findings = objects.exposures(&identity_scope());
        let ops = group("system:serviceaccounts:ops");
        let debugger = service_account("tools", "debugger");
        assert_eq!(
            acts_as(&findings),
            [
                // RoleBindings in tools and ops: their service accounts.
                ("ops-edit", user("carol"), vec![ops.clone()]),
                ("debugger-token", user("mallory"), vec![debugger.clone()]),
                ("devs-edit", group("devs"), vec![debugger.clone()]),
                // Cluster-wide: users and groups by name, service accounts anywhere.
                ("impersonate-ada", user("eve"), vec![user("dr-ada")]),
                ("impersonate-bob", user("eve"), vec![]),
                (
                    "impersonate-staff",
                    user("eve"),
                    vec![group("enclave-staff")]
                ),
                ("sa-impersonator", user("frank"), vec![ops, debugger]),
            ]
        );
        // Outside the enclave's namespaces, only the grants that act as someone are
        // listed: the shell in tools reaches no enclave pod.
        let devs = only(&findings, "devs-edit");
        assert_eq!(
            permissions(devs),
            [ImpersonateServiceAccounts, ServiceAccountTokens]
        );
        assert_eq!(devs.applies_to, AppliesTo::Namespace("tools".into()));
        assert_eq!(
            devs.to_string(),
            "RoleBinding tools/devs-edit gives Group devs ImpersonateServiceAccounts, \
             ServiceAccountTokens via ClusterRole edit-like in namespace tools, acting as \
             approved ServiceAccount tools/debugger"
        );
        // A cluster-wide binding keeps all it gives.
        assert_eq!(
            granted(&findings, "sa-impersonator"),
            [Exec, ImpersonateServiceAccounts, ServiceAccountTokens]
        );
    }

    #[test]
    fn approving_every_service_account_makes_every_namespace_count() {
        let objects = RbacObjects::from_yaml(IDENTITIES).expect("fixture parses");
        let mut scope = identity_scope();
        scope
            .approved_groups
            .insert("system:serviceaccounts".into());
        let findings = objects.exposures(&scope);
        let everyone = group("system:serviceaccounts");
        // The namespace nothing else lives in now counts, and the builder's token
        // (any service account will do) too.
        let elsewhere = findings
            .iter()
            .find(|f| f.binding.namespace.as_deref() == Some("elsewhere"))
            .expect("elsewhere/devs-edit");
        assert_eq!(elsewhere.acts_as, std::slice::from_ref(&everyone));
        assert_eq!(only(&findings, "builder-token").acts_as, [everyone]);
        assert!(named(&findings, "shell-only").is_empty());
    }

    #[test]
    fn node_credentials_are_reported_as_nodes() {
        let findings = report(NODES);
        let holders: Vec<(&str, SubjectRef, Holder)> = findings
            .iter()
            .map(|f| (f.binding.name.as_str(), f.subject.clone(), f.holder))
            .collect();
        assert_eq!(
            holders,
            [
                ("dublin-kubelet", user("system:node:dublin-a"), Holder::Node),
                ("nameless-node", user("system:node:"), Holder::Unapproved),
                ("nodes-read-secrets", group("system:nodes"), Holder::Node),
                (
                    "system:virginia-kubelet",
                    user("system:node:virginia-a"),
                    Holder::Node
                ),
            ]
        );
        assert_eq!(
            only(&findings, "system:virginia-kubelet").to_string(),
            "ClusterRoleBinding system:virginia-kubelet gives User system:node:virginia-a \
             Exec via ClusterRole system:kubelet-exec in all namespaces (node credentials)"
        );
        let summary = summarize(&findings, 10);
        assert_eq!((summary.node, summary.built_in, summary.other), (3, 0, 4));
        assert_eq!(summary.findings[0].subject, user("system:node:"));
    }

    #[test]
    fn the_operators_own_service_accounts_are_built_in() {
        let objects = RbacObjects::from_yaml(OPERATOR).expect("fixture parses");
        let holders = |scope: &AccessScope| -> Vec<(SubjectRef, Holder)> {
            objects
                .exposures(scope)
                .iter()
                .map(|f| (f.subject.clone(), f.holder))
                .collect()
        };
        assert_eq!(
            holders(&scope().with_operator_namespace("enclave-system")),
            [
                (service_account("tools", "copycat"), Holder::Unapproved),
                (
                    service_account("enclave-system", "enclave-operator"),
                    Holder::BuiltIn
                ),
            ]
        );
        // Without knowing the operator's namespace, nothing is assumed.
        assert_eq!(
            holders(&scope()),
            [
                (service_account("tools", "copycat"), Holder::Unapproved),
                (
                    service_account("enclave-system", "enclave-operator"),
                    Holder::Unapproved
                ),
            ]
        );
        let finding = &objects.exposures(&scope())[0];
        assert_eq!(permissions(finding), [AdmissionWrite]);
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
    fn defaults_view_reads_logs_while_edit_and_admin_reach_pods_and_identities() {
        let findings = report(DEFAULTS);

        // view reaches no shell, no secret, and only reads claims; but it reads logs.
        assert_eq!(granted(&findings, "auditors-view"), [PodLogs]);

        let edit = only(&findings, "developers-edit");
        assert_eq!(
            permissions(edit),
            [
                Exec,
                Attach,
                PortForward,
                PodLogs,
                PodProxy,
                ServiceProxy,
                PodWrite,
                Workloads,
                ReadSecrets,
                Volumes,
                ImpersonateServiceAccounts,
                ServiceAccountTokens
            ]
        );
        // ...and so it passes as the approved service account of its namespace.
        assert_eq!(edit.acts_as, [service_account("enclave-a", "etl")]);

        // admin is edit and more.
        let admin = only(&findings, "team-lead-admin");
        assert_eq!(admin.grants, edit.grants);

        let masters = only(&findings, "cluster-admin");
        assert!(masters.built_in());
        assert_eq!(masters.applies_to, AppliesTo::AllNamespaces);
        assert_eq!(permissions(masters), Permission::ALL);

        // In one namespace: everything namespaced, nothing cluster-scoped.
        let mallory = only(&findings, "mallory-cluster-admin");
        assert!(!mallory.built_in());
        assert_eq!(mallory.applies_to, AppliesTo::Namespace("enclave-a".into()));
        let namespaced: Vec<Permission> = Permission::ALL
            .into_iter()
            .filter(|p| !p.is_cluster_scoped())
            .collect();
        assert_eq!(permissions(mallory), namespaced);
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
        assert_eq!(summary.built_in, 3);
        assert_eq!(summary.node, 2);
        assert_eq!(summary.other, 8);
        assert_eq!(summary.omitted, 8);
        assert_eq!(summary.findings.len(), 3);
        assert!(
            summary
                .findings
                .iter()
                .all(|f| f.holder == Holder::Unapproved)
        );

        let all = summarize(&findings, 100);
        assert_eq!(all.omitted, 0);
        assert_eq!(all.findings.len(), 11);
        // Unapproved subjects, then nodes, then built-in components.
        let holders: Vec<Holder> = all.findings.iter().map(|f| f.holder).collect();
        assert!(
            holders.windows(2).all(|pair| pair[0] <= pair[1]),
            "{holders:?}"
        );
        assert_eq!(holders[5], Holder::Unapproved);
        assert_eq!(holders[6..8], [Holder::Node, Holder::Node]);
        assert_eq!(holders[8], Holder::BuiltIn);

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
             EphemeralContainers, PodLogs, PodProxy, ServiceProxy, NodeProxy, NodeLogs, \
             PodWrite, Workloads, ReadSecrets, Volumes, NamespaceWrite, AdmissionWrite, \
             EnclaveWrite, Wildcard via ClusterRole \
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
        assert_eq!(
            granted,
            [
                Exec,
                Attach,
                PortForward,
                PodProxy,
                ServiceProxy,
                PodWrite,
                Workloads,
                ReadSecrets,
                Volumes,
                ImpersonateServiceAccounts,
                ServiceAccountTokens
            ]
        );
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
        // No user name of a service account and no system:serviceaccounts groups as
        // subjects: those approve more than one subject by design (see
        // AccessScope::approves). Kubelet identities, which are reported as nodes.
        const USERS: &[&str] = &[
            "alice",
            "bob",
            "system:kube-scheduler",
            "system:node:virginia-a",
        ];
        const GROUPS: &[&str] = &[
            "devs",
            "ops",
            "system:masters",
            "system:authenticated",
            "system:nodes",
        ];
        const SERVICE_ACCOUNTS: &[&str] = &["default", "ci"];
        /// Approved identities a base scope may hold besides the subjects above:
        /// service accounts in and outside the enclave, by name and by namespace.
        const APPROVED_SERVICE_ACCOUNTS: &[&str] = &[
            "system:serviceaccount:outside:ci",
            "system:serviceaccount:enclave-a:default",
        ];
        const APPROVED_SA_GROUPS: &[&str] = &["system:serviceaccounts:outside"];

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
                subsequence(
                    &[
                        "",
                        "*",
                        "apps",
                        "authentication.k8s.io",
                        "admissionregistration.k8s.io",
                    ][..],
                    1..=2,
                ),
                subsequence(
                    &[
                        "pods",
                        "pods/exec",
                        "pods/attach",
                        "pods/portforward",
                        "pods/ephemeralcontainers",
                        "pods/log",
                        "pods/proxy",
                        "pods/*",
                        "*/exec",
                        "*/proxy",
                        "*",
                        "nodes/proxy",
                        "secrets",
                        "persistentvolumeclaims",
                        "configmaps",
                        "deployments",
                        "namespaces",
                        "users",
                        "groups",
                        "serviceaccounts",
                        "serviceaccounts/token",
                        "validatingwebhookconfigurations",
                    ][..],
                    1..=3,
                ),
                subsequence(
                    &[
                        "get",
                        "list",
                        "watch",
                        "create",
                        "update",
                        "patch",
                        "delete",
                        "impersonate",
                        "impersonate:serviceaccount",
                        "*",
                    ][..],
                    1..=3,
                ),
                // Names of pods and of identities, so that narrowed impersonation
                // sometimes reaches an approved one.
                proptest::option::of(subsequence(&["a", "ci", "alice"][..], 0..=2)),
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

        /// Some approvals to start from, drawn from the same pools, and approved
        /// service accounts that others may act as.
        fn base_scope() -> impl Strategy<Value = AccessScope> {
            (
                subsequence(USERS, 0..=1),
                subsequence(GROUPS, 0..=1),
                subsequence(APPROVED_SERVICE_ACCOUNTS, 0..=2),
                subsequence(APPROVED_SA_GROUPS, 0..=1),
            )
                .prop_map(|(users, groups, accounts, account_groups)| {
                    AccessScope::new(
                        ["enclave-a", "enclave-b"],
                        users.into_iter().chain(accounts),
                        groups.into_iter().chain(account_groups),
                    )
                })
        }

        fn is_kubelet(subject: &SubjectRef) -> bool {
            match subject.kind {
                SubjectKind::Group => subject.name == "system:nodes",
                SubjectKind::User => subject.name.starts_with("system:node:"),
                SubjectKind::ServiceAccount => false,
            }
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
                            && new.holder == old.holder
                            && old.grants.iter().all(|grant| {
                                new.grant(grant.permission).is_some_and(|g| covers(g, grant))
                            })
                            && old.acts_as.iter().all(|a| new.acts_as.contains(a))
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
                // Its findings go; every other finding stays as it was, except that
                // it may now act as the newly approved subject, and a binding may
                // appear only because it acts as it (a RoleBinding where the newly
                // approved service account lives).
                prop_assert!(after.iter().all(|f| f.subject != subject), "{after:#?}");
                let without_it = |f: &Finding| {
                    let mut f = f.clone();
                    f.acts_as.retain(|a| a != &subject);
                    f
                };
                let stripped: Vec<Finding> = after.iter().map(without_it).collect();
                for old in before.iter().filter(|f| f.subject != subject) {
                    prop_assert!(stripped.contains(old), "lost: {old:#?}\nafter: {after:#?}");
                }
                for (new, bare) in after.iter().zip(&stripped) {
                    if !before.contains(bare) {
                        prop_assert_eq!(&new.acts_as, &vec![subject.clone()], "{:#?}", new);
                    }
                }
            }

            #[test]
            fn role_bindings_never_grant_cluster_scoped_permissions(
                world in world(),
                scope in base_scope(),
            ) {
                for finding in world.exposures(&scope) {
                    if finding.binding.kind == BindingKind::RoleBinding {
                        prop_assert!(
                            finding.permissions().all(|p| !p.is_cluster_scoped()),
                            "{finding:#?}"
                        );
                    }
                }
            }

            #[test]
            fn kubelets_are_reported_as_nodes_and_only_they(
                world in world(),
                scope in base_scope(),
            ) {
                for finding in world.exposures(&scope) {
                    prop_assert_eq!(
                        finding.holder == Holder::Node,
                        is_kubelet(&finding.subject),
                        "{:#?}",
                        finding
                    );
                }
            }

            #[test]
            fn acting_as_names_only_approved_identities_through_identity_grants(
                world in world(),
                scope in base_scope(),
            ) {
                use Permission::*;
                for finding in world.exposures(&scope) {
                    for identity in &finding.acts_as {
                        prop_assert!(scope.approves(identity), "{identity} in {finding:#?}");
                    }
                    if !finding.acts_as.is_empty() {
                        prop_assert!(
                            finding.permissions().any(|p| matches!(
                                p,
                                ImpersonateUsers
                                    | ImpersonateGroups
                                    | ImpersonateServiceAccounts
                                    | ServiceAccountTokens
                            )),
                            "{finding:#?}"
                        );
                    }
                    // Outside the enclave's namespaces, only a way to an approved
                    // identity is reported, and only what leads there.
                    if let AppliesTo::Namespace(namespace) = &finding.applies_to
                        && !scope.namespaces.contains(namespace)
                    {
                        prop_assert!(!finding.acts_as.is_empty(), "{finding:#?}");
                        prop_assert!(
                            finding
                                .permissions()
                                .all(|p| IDENTITY_PERMISSIONS.contains(&p)),
                            "{finding:#?}"
                        );
                    }
                }
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
