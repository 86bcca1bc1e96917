//! The authorizer's decision, pure: from the attributes of a SubjectAccessReview and
//! the operator's caches (the [`Catalog`], and the [`NodePods`] index built from it) to
//! a [`Verdict`]. No API call: the API server asks before every covered request.
//!
//! The subject rule is the admission gate's ([`crate::crd::Access::admits`]): a user
//! named in the DataEnclave's `approvedUsers` or a member of one of its
//! `approvedGroups`, as the API server authenticated (or, with impersonation, as it
//! impersonated) them.

use std::collections::{BTreeMap, HashMap};

use kube::ResourceExt;

use crate::{
    crd::{Access, Enforcement, GatedRead, ResidencyPolicy},
    decisions,
    scope::{self, Catalog, ResolvedEnclave},
};

/// The synthetic subject of the operator's own probe ([`super::probe`]): always denied
/// on a covered request, so that the operator can see from a SubjectAccessReview of its
/// own whether the API server consults the authorizer. Approving it would only blind
/// the probe: nothing is reachable through it.
pub const PROBE_USER: &str = "enclave-operator:authorizer-probe";

/// The words of the probe's denial, by which the probe recognises it.
pub const PROBE_REASON: &str = "enclave-operator authorizer probe: refused as always";

/// What the API server asks about, as far as the decision reads it (the
/// `SubjectAccessReviewSpec` of `authorization.k8s.io/v1`).
#[derive(Clone, Copy, Debug)]
pub struct Attributes<'a> {
    pub user: &'a str,
    pub groups: &'a [String],
    pub verb: &'a str,
    /// The API group of the resource; `""` for the core group.
    pub group: &'a str,
    pub resource: &'a str,
    pub subresource: &'a str,
    pub namespace: &'a str,
    pub name: &'a str,
    /// The moment of the request: grants are judged at it.
    pub now: jiff::Timestamp,
}

/// A way to enclave data the authorizer covers. `pods/exec`, `pods/attach` and
/// `pods/portforward` are not among them: they reach admission (CONNECT), where the
/// access gate decides them by the same rule and records the container and command,
/// which a SubjectAccessReview does not carry; one place decides each door, so each
/// refusal has one message and one record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Door {
    /// `pods/log`: `kubectl logs` (gated when the enclave gates `Logs`).
    Logs,
    /// `pods/proxy`: the pod's ports through the API server.
    PodProxy,
    /// `services/proxy`: a Service's pods' ports through the API server.
    ServiceProxy,
    /// `nodes/proxy`: the kubelet's API (exec, attach, run, logs, port-forward of every
    /// pod on the node), through the API server or, as the kubelet asks the API server,
    /// directly.
    NodeProxy,
    /// get, list, watch of Secrets (gated when the enclave gates `Secrets`).
    Secrets,
    /// `impersonate` of an approved user, group or service account.
    Impersonate,
    /// `serviceaccounts/token` create: minting a token of an approved service account.
    Token,
    /// The operator's own probe.
    Probe,
}

impl Door {
    /// The door of a request, or `None` when the authorizer has no opinion on it at all.
    pub fn of(a: &Attributes) -> Option<Door> {
        if a.user == PROBE_USER {
            return Some(Door::Probe);
        }
        // Legacy impersonation asks `impersonate` on core users, groups and service
        // accounts; constrained impersonation (Kubernetes 1.35+) asks
        // `impersonate:<mode>` on them in authentication.k8s.io first.
        if a.verb == "impersonate" || a.verb.starts_with("impersonate:") {
            return match (a.group, a.resource) {
                ("" | "authentication.k8s.io", "users" | "groups" | "serviceaccounts") => {
                    Some(Door::Impersonate)
                }
                _ => None,
            };
        }
        if !a.group.is_empty() {
            return None;
        }
        Some(match (a.resource, a.subresource) {
            ("pods", "log") => Door::Logs,
            ("pods", "proxy") => Door::PodProxy,
            ("services", "proxy") => Door::ServiceProxy,
            ("nodes", "proxy") => Door::NodeProxy,
            ("serviceaccounts", "token") if a.verb == "create" => Door::Token,
            ("secrets", "") if matches!(a.verb, "get" | "list" | "watch") => Door::Secrets,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Door::Logs => "logs",
            Door::PodProxy => "pods/proxy",
            Door::ServiceProxy => "services/proxy",
            Door::NodeProxy => "nodes/proxy",
            Door::Secrets => "secrets",
            Door::Impersonate => "impersonate",
            Door::Token => "token",
            Door::Probe => "probe",
        }
    }

    /// "may not <phrase>", for messages.
    fn phrase(self, a: &Attributes) -> String {
        let (ns, name) = (a.namespace, a.name);
        match self {
            Door::Logs => format!("read the logs of pod {ns}/{name}"),
            Door::PodProxy => format!("proxy to pod {ns}/{name}"),
            Door::ServiceProxy => format!("proxy to service {ns}/{name}"),
            Door::NodeProxy => format!("reach the kubelet API of node {name}"),
            Door::Secrets if ns.is_empty() => format!("{} secrets in all namespaces", a.verb),
            Door::Secrets if name.is_empty() => format!("{} secrets in namespace {ns}", a.verb),
            Door::Secrets => format!("read secret {ns}/{name}"),
            Door::Impersonate => format!("impersonate {}", target(a).0),
            Door::Token => format!("mint a token for service account {ns}/{name}"),
            Door::Probe => "anything".to_string(),
        }
    }

    /// The read the enclave must gate for this door to be gated; `None`: always gated.
    fn read(self) -> Option<GatedRead> {
        match self {
            Door::Logs => Some(GatedRead::Logs),
            Door::Secrets => Some(GatedRead::Secrets),
            _ => None,
        }
    }
}

/// How one policy judged a covered request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Judgement {
    /// The subject is approved staff: no opinion, RBAC decides.
    Approved,
    /// Refused (an enforcing policy).
    Denied,
    /// An auditing policy would refuse: no opinion, recorded.
    WouldDeny,
}

/// One policy's part in a verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub policy: String,
    pub enclave: String,
    pub judgement: Judgement,
    pub message: String,
}

/// The answer to a SubjectAccessReview.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Verdict {
    /// The door the request goes through; `None`: not covered (no opinion, no record).
    pub door: Option<Door>,
    /// The reason of an explicit deny; `None`: no opinion (RBAC decides).
    pub deny: Option<String>,
    /// Every policy that judged it, in policy order, up to the one that denied.
    pub findings: Vec<Finding>,
    /// The AccessGrants the request went through, for the record.
    pub grants: Vec<String>,
}

impl Verdict {
    /// A request some policy judged: every one is a decision-log record.
    pub fn covered(&self) -> bool {
        self.door.is_some_and(|d| d != Door::Probe)
            && (self.deny.is_some() || !self.findings.is_empty())
    }

    /// What the verdict was about, for the record.
    pub fn subject(a: &Attributes) -> decisions::Subject {
        let kind = match a.resource {
            "pods" => "Pod",
            "services" => "Service",
            "nodes" => "Node",
            "secrets" => "Secret",
            "serviceaccounts" => "ServiceAccount",
            "users" => "User",
            "groups" => "Group",
            other => other,
        };
        let namespace = (!a.namespace.is_empty()).then_some(a.namespace);
        decisions::Subject::new(kind, namespace, a.name)
    }

    fn deny(mut self, finding: Finding) -> Self {
        self.deny = Some(finding.message.clone());
        self.findings.push(finding);
        self
    }
}

/// The pods of covered namespaces by the node they run on, with their labels: which
/// nodes hold in-scope data. Built from the caches (at most once a second, see
/// [`super::review::AuthzState`]), read on every `nodes/proxy` request.
#[derive(Debug, Default)]
pub struct NodePods {
    by_node: HashMap<String, Vec<PodAt>>,
}

/// A pod's namespace and labels.
type PodAt = (String, BTreeMap<String, String>);

impl NodePods {
    pub fn build<C: Catalog>(catalog: &C) -> Self {
        let mut by_node: HashMap<String, Vec<PodAt>> = HashMap::new();
        for pod in catalog.pods() {
            let (Some(node), Some(namespace)) = (&pod.spec.node_name, &pod.metadata.namespace)
            else {
                continue;
            };
            by_node
                .entry(node.clone())
                .or_default()
                .push((namespace.clone(), pod.labels().clone()));
        }
        Self { by_node }
    }

    fn on(&self, node: &str) -> &[PodAt] {
        self.by_node.get(node).map_or(&[], Vec::as_slice)
    }
}

/// Which policies a request is judged by.
enum Scope<'a> {
    /// A pod: the policies covering its namespace and, when the pod is known, its labels
    /// (an unknown pod is judged by every policy of its namespace: fail closed).
    Pod,
    /// Everything in a namespace (services, secrets): every policy of the namespace.
    Namespace,
    /// Across namespaces (a cluster-wide list of secrets): every policy.
    Everywhere,
    /// A node: the policies whose enclave has it in a site, or that cover a pod on it.
    Node(&'a NodePods),
    /// An identity: the policies whose enclave approves it.
    Identity,
}

/// Decides a SubjectAccessReview. An explicit deny for subjects the enclave does not
/// approve on covered requests; no opinion otherwise, so that RBAC decides.
pub fn decide<C: Catalog>(catalog: &C, nodes: &NodePods, a: &Attributes) -> Verdict {
    let Some(door) = Door::of(a) else {
        return Verdict::default();
    };
    let verdict = Verdict {
        door: Some(door),
        ..Verdict::default()
    };
    let scope = match door {
        Door::Probe => {
            return Verdict {
                deny: Some(PROBE_REASON.to_string()),
                ..verdict
            };
        }
        Door::Logs | Door::PodProxy => Scope::Pod,
        Door::ServiceProxy => Scope::Namespace,
        Door::Secrets if a.namespace.is_empty() => Scope::Everywhere,
        Door::Secrets => Scope::Namespace,
        Door::NodeProxy => Scope::Node(nodes),
        Door::Impersonate | Door::Token => Scope::Identity,
    };
    judge(catalog, a, door, scope, verdict)
}

/// The identity an impersonation or token request would act as: (description, user,
/// groups) — a group alone for group impersonation.
fn target(a: &Attributes) -> (String, String, Vec<String>) {
    match (a.resource, a.subresource) {
        ("users", _) => (format!("user {}", a.name), a.name.to_string(), Vec::new()),
        ("groups", _) => (
            format!("group {}", a.name),
            String::new(),
            vec![a.name.to_string()],
        ),
        _ => (
            format!("service account {}/{}", a.namespace, a.name),
            format!("system:serviceaccount:{}:{}", a.namespace, a.name),
            vec![
                "system:serviceaccounts".to_string(),
                format!("system:serviceaccounts:{}", a.namespace),
            ],
        ),
    }
}

fn judge<C: Catalog>(
    catalog: &C,
    a: &Attributes,
    door: Door,
    scope: Scope,
    mut verdict: Verdict,
) -> Verdict {
    let namespace_labels = match scope {
        Scope::Pod | Scope::Namespace => match catalog.namespace_labels(a.namespace) {
            Some(labels) => Some(labels),
            None => {
                // Not in the cache yet (just created, or the caches are filling): in
                // scope or not cannot be told, so covered requests fail closed, as at
                // the admission gate.
                verdict.deny = Some(format!(
                    "enclave-operator has not yet seen namespace {:?} and cannot decide who may {}; retry in a moment",
                    a.namespace,
                    door.phrase(a)
                ));
                return verdict;
            }
        },
        _ => None,
    };
    let pod_labels = match scope {
        Scope::Pod => catalog.pod_labels(a.namespace, a.name),
        _ => None,
    };
    let node_labels = match scope {
        Scope::Node(_) => catalog.node_labels(a.name),
        _ => None,
    };
    let identity = matches!(scope, Scope::Identity).then(|| target(a));
    // Read once, and only when some policy judges the request: cluster-wide Secret
    // lists by controllers reach here often and concern no grant.
    let mut grants: Option<Option<crate::grants::Grants>> = None;
    for policy in catalog.policies() {
        // Which policies judge the request.
        let name = policy.name_any();
        let enforced = policy.spec.enforcement == Enforcement::Enforce;
        let mut enclave: Option<Result<ResolvedEnclave, String>> = None;
        let mut resolved = || {
            enclave
                .get_or_insert_with(|| scope::resolve_enclave(catalog, &policy))
                .clone()
        };
        let relevant = match &scope {
            Scope::Pod | Scope::Namespace => {
                let Some(labels) = namespace_labels.as_ref() else {
                    continue;
                };
                scope::covers_namespace(&policy, a.namespace, labels)
                    && match (&scope, &policy.spec.match_.pod_selector, &pod_labels) {
                        (Scope::Pod, Some(selector), Some(labels)) => {
                            crate::selector::matches(selector, labels)
                        }
                        _ => true,
                    }
            }
            Scope::Everywhere => true,
            Scope::Node(pods) => match &node_labels {
                // A node the operator has not seen is judged by every policy.
                None => true,
                Some(labels) => {
                    resolved().is_ok_and(|e| e.contains_node(labels))
                        || covers_a_pod_on(catalog, &policy, pods.on(a.name))
                }
            },
            Scope::Identity => {
                let Some((_, user, groups)) = identity.as_ref() else {
                    continue;
                };
                match resolved() {
                    Ok(enclave) => {
                        let access = access_of(&enclave);
                        if user.is_empty() {
                            groups.iter().any(|g| access.approved_groups.contains(g))
                        } else {
                            access.admits(user, groups).is_some()
                        }
                    }
                    Err(_) => false,
                }
            }
        };
        if !relevant {
            continue;
        }
        let enclave = match resolved() {
            Ok(enclave) => enclave,
            Err(problem) if enforced => {
                return verdict.deny(Finding {
                    policy: name.clone(),
                    enclave: policy.spec.enclave.clone(),
                    judgement: Judgement::Denied,
                    message: format!(
                        "policy {name}: {problem}; nobody may {} until it exists",
                        door.phrase(a)
                    ),
                });
            }
            Err(_) => continue,
        };
        let access = access_of(&enclave);
        if door.read().is_some_and(|read| !access.gates(read)) {
            continue;
        }
        let enclave_name = enclave.name();
        // Grants open a pod's logs and proxy only; the other doors (a node's kubelet,
        // a Service's pods, Secrets, identities) reach more than one pod's data.
        let verb = match door {
            Door::Logs => Some(crate::crd::GrantVerb::Logs),
            Door::PodProxy => Some(crate::crd::GrantVerb::Proxy),
            _ => None,
        };
        let judged = crate::grants::gate(
            grants.get_or_insert_with(|| catalog.grants()).as_ref(),
            &enclave.enclave,
            &access,
            a.user,
            a.groups,
            verb,
            a.namespace,
            a.name,
            a.now,
        );
        let refusal = match judged {
            crate::grants::Gate::Admitted { how, grant } => {
                verdict.grants.extend(grant);
                verdict.findings.push(Finding {
                    policy: name,
                    message: format!("{how} may {} (DataEnclave {enclave_name})", door.phrase(a)),
                    enclave: enclave_name,
                    judgement: Judgement::Approved,
                });
                continue;
            }
            crate::grants::Gate::Refused(why) => why,
        };
        let message = format!(
            "enclave-operator: policy {name}: {} may not {}: {refusal}",
            a.user,
            door.phrase(a),
        );
        if enforced {
            return verdict.deny(Finding {
                policy: name,
                enclave: enclave_name,
                judgement: Judgement::Denied,
                message,
            });
        }
        verdict.findings.push(Finding {
            policy: name,
            enclave: enclave_name,
            judgement: Judgement::WouldDeny,
            message: format!("(Audit) would deny: {message}"),
        });
    }
    verdict
}

fn access_of(enclave: &ResolvedEnclave) -> Access {
    enclave.enclave.spec.access.clone().unwrap_or_default()
}

/// Does the policy cover one of these pods (namespace, labels)?
fn covers_a_pod_on<C: Catalog>(catalog: &C, policy: &ResidencyPolicy, pods: &[PodAt]) -> bool {
    pods.iter().any(|(namespace, labels)| {
        catalog
            .namespace_labels(namespace)
            .is_some_and(|ns| scope::covers(policy, namespace, &ns, labels))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{crd::DataEnclave, scope::StaticCatalog};

    fn catalog() -> StaticCatalog {
        StaticCatalog::from_yaml(include_str!("testdata/catalog.yaml")).expect("fixture parses")
    }

    const NONE: &[String] = &[];

    /// Asks as `user` in `groups` for `[verb, resource, subresource, namespace, name]`.
    fn ask(catalog: &StaticCatalog, user: &str, groups: &[String], request: [&str; 5]) -> Verdict {
        let [verb, resource, subresource, namespace, name] = request;
        let nodes = NodePods::build(catalog);
        decide(
            catalog,
            &nodes,
            &Attributes {
                user,
                groups,
                verb,
                group: "",
                resource,
                subresource,
                namespace,
                name,
                now: jiff::Timestamp::UNIX_EPOCH,
            },
        )
    }

    fn with_access(catalog: &mut StaticCatalog, edit: impl FnOnce(&mut Access)) {
        let mut enclave = DataEnclave::clone(&catalog.enclaves["eu"]);
        let mut access = enclave.spec.access.clone().unwrap_or_default();
        edit(&mut access);
        enclave.spec.access = Some(access);
        catalog.enclaves.insert("eu".into(), Arc::new(enclave));
    }

    use std::sync::Arc;

    /// An active grant opens the logs and the proxy of its pods to its requester, and
    /// nothing else (not Secrets, not the kubelet's API), for its time only; a lockout
    /// closes even the standing staff's way; unsynced grants close every covered door.
    #[test]
    fn grants_open_logs_and_proxy_for_their_pods_and_time_only() {
        let mut catalog = catalog();
        with_access(&mut catalog, |access| {
            access.approver_users = vec!["carol".into()];
            access.gated_reads = vec![GatedRead::Logs, GatedRead::Secrets];
        });
        catalog.grants.grants = vec![Arc::new(
            serde_yaml::from_str(
                "metadata: {name: inc-7, uid: u7, creationTimestamp: '2027-01-01T00:00:00Z'}\n\
                 spec: {enclave: eu, requester: alice, verbs: [Logs, Proxy], namespaces: [shop], pods: [db-0], reason: INC-7, durationMinutes: 10}",
            )
            .expect("grant"),
        )];
        catalog.grants.approvals = vec![Arc::new(
            serde_yaml::from_str(
                "metadata: {name: inc-7-ok, creationTimestamp: '2027-01-01T00:00:10Z'}\n\
                 spec: {grant: {name: inc-7, uid: u7}, decision: Approve, approver: carol}",
            )
            .expect("approval"),
        )];
        let at = |user: &str, request: [&str; 5], t: &str| {
            let [verb, resource, subresource, namespace, name] = request;
            decide(
                &catalog,
                &NodePods::build(&catalog),
                &Attributes {
                    user,
                    groups: NONE,
                    verb,
                    group: "",
                    resource,
                    subresource,
                    namespace,
                    name,
                    now: t.parse().expect("time"),
                },
            )
        };
        const DURING: &str = "2027-01-01T00:05:00Z";
        let logs = at("alice", ["get", "pods", "log", "shop", "db-0"], DURING);
        assert_eq!(logs.deny, None, "{logs:?}");
        assert_eq!(logs.grants, ["inc-7"]);
        let proxy = at("alice", ["get", "pods", "proxy", "shop", "db-0"], DURING);
        assert_eq!(proxy.deny, None, "{proxy:?}");
        for (user, request, t, why) in [
            (
                "alice",
                ["get", "pods", "log", "shop", "db-0"],
                "2027-01-01T00:10:10Z",
                "expired",
            ),
            (
                "alice",
                ["get", "pods", "log", "shop", "db-1"],
                DURING,
                "another pod",
            ),
            (
                "alice",
                ["get", "secrets", "", "shop", "db-password"],
                DURING,
                "Secrets",
            ),
            (
                "bob-not",
                ["get", "pods", "log", "shop", "db-0"],
                DURING,
                "another user",
            ),
        ] {
            assert!(at(user, request, t).deny.is_some(), "{why}");
        }
        catalog.grants_unsynced = true;
        let unsynced = ask(
            &catalog,
            "bob",
            NONE,
            ["get", "pods", "log", "shop", "db-0"],
        );
        assert!(
            unsynced
                .deny
                .is_some_and(|d| d.contains("has not yet synced the AccessGrants")),
            "standing staff too, while grants are unknown"
        );
    }

    #[test]
    fn logs_of_enclave_pods_are_kept_to_the_approved_staff() {
        let catalog = catalog();
        let logs = |user: &str, groups: &[String], ns: &str, pod: &str| {
            ask(&catalog, user, groups, ["get", "pods", "log", ns, pod])
        };
        let denied = logs("mallory", NONE, "shop", "db-0");
        assert_eq!(denied.door, Some(Door::Logs));
        let reason = denied.deny.clone().expect("denied");
        assert!(
            reason.contains("policy eu-user-data: mallory may not read the logs of pod shop/db-0: DataEnclave eu admits only its approved staff (groups: eu-data-stewards; users: bob, system:serviceaccount:ops:backup)"),
            "{reason}"
        );
        assert!(denied.covered());

        let steward = logs("alice", &["eu-data-stewards".to_string()], "shop", "db-0");
        assert_eq!(
            steward.deny, None,
            "approved staff: no opinion, RBAC decides"
        );
        assert!(steward.covered(), "recorded all the same");
        assert_eq!(steward.findings[0].judgement, Judgement::Approved);
        assert!(
            steward.findings[0]
                .message
                .contains("alice as a member of approved group eu-data-stewards")
        );

        let outside = logs("mallory", NONE, "public", "web");
        assert_eq!(outside.deny, None);
        assert!(
            !outside.covered(),
            "a namespace no policy covers is none of ours"
        );

        let audited = logs("mallory", NONE, "analytics", "job");
        assert_eq!(audited.deny, None, "Audit refuses nothing");
        assert_eq!(audited.findings[0].judgement, Judgement::WouldDeny);
        assert!(audited.covered());

        let unseen = logs("mallory", NONE, "brand-new", "x");
        assert!(
            unseen
                .deny
                .as_deref()
                .is_some_and(|r| r.contains("has not yet seen namespace")),
            "an unseen namespace fails closed: {unseen:?}"
        );
    }

    #[test]
    fn which_reads_are_gated_is_the_enclaves_choice() {
        let mut catalog = catalog();
        // Secrets are opt-in: by default only logs are gated.
        let secret = |c: &StaticCatalog, ns: &str, verb: &str| {
            ask(
                c,
                "mallory",
                NONE,
                [
                    verb,
                    "secrets",
                    "",
                    ns,
                    if verb == "get" { "db" } else { "" },
                ],
            )
        };
        assert_eq!(secret(&catalog, "shop", "get").deny, None);
        assert!(!secret(&catalog, "shop", "get").covered());

        with_access(&mut catalog, |a| a.gated_reads = vec![GatedRead::Secrets]);
        let read = secret(&catalog, "shop", "get");
        assert!(
            read.deny
                .as_deref()
                .is_some_and(|r| r.contains("may not read secret shop/db")),
            "{read:?}"
        );
        assert!(secret(&catalog, "shop", "list").deny.is_some());
        let everywhere = secret(&catalog, "", "watch");
        assert!(
            everywhere
                .deny
                .as_deref()
                .is_some_and(|r| r.contains("watch secrets in all namespaces")),
            "a cluster-wide watch reads the enclave's secrets too: {everywhere:?}"
        );
        assert_eq!(secret(&catalog, "public", "get").deny, None);
        // ... and with Secrets alone, logs are no longer gated.
        let logs = ask(
            &catalog,
            "mallory",
            NONE,
            ["get", "pods", "log", "shop", "db-0"],
        );
        assert_eq!(logs.deny, None);

        with_access(&mut catalog, |a| a.gated_reads = vec![]);
        assert_eq!(secret(&catalog, "shop", "get").deny, None);
    }

    #[test]
    fn pod_proxies_follow_the_pod_selector_and_fail_closed_on_unseen_pods() {
        let catalog = catalog();
        let proxy = |pod: &str| {
            ask(
                &catalog,
                "mallory",
                NONE,
                ["get", "pods", "proxy", "mixed", pod],
            )
        };
        assert!(
            proxy("db")
                .deny
                .as_deref()
                .is_some_and(|r| r.contains("may not proxy to pod mixed/db")),
            "{:?}",
            proxy("db")
        );
        assert_eq!(
            proxy("web").deny,
            None,
            "the policy's pod selector leaves web out"
        );
        assert!(!proxy("web").covered());
        assert!(
            proxy("not-seen-yet").deny.is_some(),
            "judged by every policy of its namespace"
        );
        // The proxy's verbs are whatever the HTTP method was.
        assert!(
            ask(
                &catalog,
                "mallory",
                NONE,
                ["create", "pods", "proxy", "shop", "db-0"]
            )
            .deny
            .is_some()
        );
    }

    #[test]
    fn service_proxies_are_judged_by_namespace() {
        let catalog = catalog();
        let proxy = |ns: &str| {
            ask(
                &catalog,
                "mallory",
                NONE,
                ["get", "services", "proxy", ns, "web"],
            )
        };
        assert!(
            proxy("mixed")
                .deny
                .as_deref()
                .is_some_and(|r| r.contains("may not proxy to service mixed/web")),
            "a Service may select in-scope pods whatever its name: {:?}",
            proxy("mixed")
        );
        assert_eq!(proxy("public").deny, None);
        assert_eq!(
            ask(
                &catalog,
                "bob",
                NONE,
                ["get", "services", "proxy", "shop", "db"]
            )
            .deny,
            None
        );
    }

    #[test]
    fn the_kubelet_api_of_enclave_nodes_and_nodes_running_in_scope_pods_is_gated() {
        let catalog = catalog();
        let node = |name: &str| ask(&catalog, "prom", NONE, ["get", "nodes", "proxy", "", name]);
        let site = node("dublin-a");
        assert!(
            site.deny
                .as_deref()
                .is_some_and(|r| r.contains("prom may not reach the kubelet API of node dublin-a")),
            "{site:?}"
        );
        assert!(node("norway-a").deny.is_some());
        assert!(
            node("virginia-a").deny.is_some(),
            "an in-scope pod not moved yet runs there: its data is on that node"
        );
        assert_eq!(
            node("virginia-b").deny,
            None,
            "only an out-of-scope pod (mixed/web) runs there"
        );
        assert!(!node("virginia-b").covered());
        assert!(
            node("unknown-node").deny.is_some(),
            "an unseen node fails closed"
        );
        let approved = ask(
            &catalog,
            "bob",
            NONE,
            ["create", "nodes", "proxy", "", "dublin-a"],
        );
        assert_eq!(approved.deny, None);
        assert!(approved.covered());
    }

    #[test]
    fn approved_identities_cannot_be_borrowed() {
        let catalog = catalog();
        let impersonate = |user: &str, resource: &str, ns: &str, name: &str| {
            ask(
                &catalog,
                user,
                NONE,
                ["impersonate", resource, "", ns, name],
            )
        };
        let sa = impersonate("mallory", "serviceaccounts", "ops", "backup");
        assert!(
            sa.deny.as_deref().is_some_and(
                |r| r.contains("mallory may not impersonate service account ops/backup")
            ),
            "{sa:?}"
        );
        assert_eq!(sa.door, Some(Door::Impersonate));
        assert!(impersonate("mallory", "users", "", "bob").deny.is_some());
        assert!(
            impersonate("mallory", "groups", "", "eu-data-stewards")
                .deny
                .is_some()
        );
        assert_eq!(
            impersonate("bob", "serviceaccounts", "ops", "backup").deny,
            None
        );
        // Identities the enclave does not approve are RBAC's business.
        assert!(!impersonate("mallory", "users", "", "carol").covered());
        assert!(!impersonate("mallory", "serviceaccounts", "ops", "other").covered());
        assert!(!impersonate("mallory", "groups", "", "system:nodes").covered());

        let token = ask(
            &catalog,
            "mallory",
            NONE,
            ["create", "serviceaccounts", "token", "ops", "backup"],
        );
        assert!(
            token
                .deny
                .as_deref()
                .is_some_and(|r| r.contains("may not mint a token for service account ops/backup")),
            "{token:?}"
        );
        assert!(
            !ask(
                &catalog,
                "mallory",
                NONE,
                ["create", "serviceaccounts", "token", "ops", "other"]
            )
            .covered()
        );
    }

    #[test]
    fn constrained_impersonation_is_judged_like_legacy_impersonation() {
        let catalog = catalog();
        let verdict = decide(
            &catalog,
            &NodePods::default(),
            &Attributes {
                user: "mallory",
                groups: NONE,
                verb: "impersonate:serviceaccount",
                group: "authentication.k8s.io",
                resource: "serviceaccounts",
                subresource: "",
                namespace: "ops",
                name: "backup",
                now: jiff::Timestamp::UNIX_EPOCH,
            },
        );
        assert_eq!(verdict.door, Some(Door::Impersonate));
        assert!(verdict.deny.is_some(), "{verdict:?}");
    }

    #[test]
    fn only_the_doors_it_covers_reach_a_verdict() {
        let catalog = catalog();
        // exec, attach and port-forward are the admission gate's.
        for sub in ["exec", "attach", "portforward"] {
            assert_eq!(
                Door::of(&Attributes {
                    user: "m",
                    groups: NONE,
                    verb: "create",
                    group: "",
                    resource: "pods",
                    subresource: sub,
                    namespace: "shop",
                    name: "db-0",
                    now: jiff::Timestamp::UNIX_EPOCH,
                }),
                None
            );
        }
        assert_eq!(
            ask(
                &catalog,
                "mallory",
                NONE,
                ["get", "pods", "", "shop", "db-0"]
            ),
            Verdict::default()
        );
        assert_eq!(
            Door::of(&Attributes {
                user: "m",
                groups: NONE,
                verb: "get",
                group: "apps",
                resource: "pods",
                subresource: "log",
                namespace: "shop",
                name: "x",
                now: jiff::Timestamp::UNIX_EPOCH,
            }),
            None
        );
        let probe = ask(
            &catalog,
            PROBE_USER,
            NONE,
            ["get", "pods", "log", "enclave-operator-probe", "p"],
        );
        assert_eq!(probe.deny.as_deref(), Some(PROBE_REASON));
        assert!(!probe.covered(), "the probe is not an access attempt");
    }

    #[test]
    fn a_policy_whose_enclave_is_missing_refuses_in_its_scope() {
        let mut catalog = catalog();
        catalog.enclaves.clear();
        let logs = ask(
            &catalog,
            "bob",
            NONE,
            ["get", "pods", "log", "shop", "db-0"],
        );
        assert!(
            logs.deny
                .as_deref()
                .is_some_and(|r| r.contains("DataEnclave \"eu\" does not exist")),
            "{logs:?}"
        );
    }
}
