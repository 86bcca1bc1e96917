//! Admission decisions, pure: from a pod (or a pod template) and the [`Catalog`] to a
//! typed [`Decision`] — allow, place (a new affinity), or deny with a message naming the
//! policy, the enclave and its sites — plus warnings and findings for the record.
//!
//! These functions are the reference semantics of admission: the native engine's CEL
//! ([`super::native`]) is written to decide exactly the same, and a differential test
//! holds the two together. Several enforcing policies apply as a fixpoint, so that the
//! order in which the API server happens to run one MutatingAdmissionPolicy per policy
//! cannot change the result: each policy crosses its enclave into what the others left.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Affinity, PodSpec};

use crate::{
    names::POLICY_ANNOTATION,
    placement,
    scope::{self, Applicable, Catalog, ResolvedEnclave},
};

/// What admission answers.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Admit unchanged.
    Allow,
    /// Admit with the enclave ANDed into the placement.
    Place(Placement),
    /// Refuse, with a message for the user.
    Deny(String),
}

/// The placement admission writes into a pod or a pod template.
#[derive(Clone, Debug, PartialEq)]
pub struct Placement {
    pub affinity: Affinity,
    /// The new value of the [`POLICY_ANNOTATION`]: the enforcing policies that hold the
    /// pod, sorted, with whatever the annotation listed before.
    pub annotation: String,
}

/// Why a policy is named in a decision: what was done, or what Audit would have done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FindingKind {
    Placed,
    Denied,
    /// Audit: the pod would have been placed.
    WouldPlace,
    /// Audit: the pod would have been refused.
    WouldDeny,
    /// Access: approved staff reached into a pod the policy covers.
    Admitted,
}

impl FindingKind {
    /// Audit findings block and change nothing.
    pub fn is_audit(self) -> bool {
        matches!(self, FindingKind::WouldPlace | FindingKind::WouldDeny)
    }
}

/// One policy's part in a decision, for Events, the decision log and metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub policy: String,
    pub kind: FindingKind,
    pub message: String,
}

/// A decision: the outcome, warnings shown to the user (kubectl prints them), and the
/// findings to record.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub outcome: Outcome,
    pub warnings: Vec<String>,
    pub findings: Vec<Finding>,
    /// The AccessGrants an allowed access attempt went through, for the record.
    pub grants: Vec<String>,
    /// The DataEnclave whose gate refused an access attempt: the subject's denials
    /// are counted against it ([`crate::grants::anomaly`]).
    pub refused_by: Option<String>,
}

impl Default for Decision {
    fn default() -> Self {
        Self {
            outcome: Outcome::Allow,
            warnings: Vec::new(),
            findings: Vec::new(),
            grants: Vec::new(),
            refused_by: None,
        }
    }
}

impl Decision {
    fn deny(mut self, policy: &str, message: String) -> Self {
        self.findings.push(Finding {
            policy: policy.to_string(),
            kind: FindingKind::Denied,
            message: message.clone(),
        });
        self.outcome = Outcome::Deny(message);
        self
    }

    /// A denial that no single policy owns (the scope itself cannot be decided).
    fn refuse(message: String) -> Self {
        Self {
            outcome: Outcome::Deny(message),
            ..Self::default()
        }
    }

    fn audit(&mut self, policy: &str, kind: FindingKind, message: String) {
        self.warnings.push(message.clone());
        self.findings.push(Finding {
            policy: policy.to_string(),
            kind,
            message,
        });
    }

    /// What an Enforce policy would have refused, under Audit: a warning and a finding,
    /// and the request goes on.
    fn would_deny(&mut self, policy: &str, message: String) {
        self.audit(
            policy,
            FindingKind::WouldDeny,
            format!("(Audit) would deny: {message}"),
        );
    }

    /// Did an Audit policy find something?
    pub fn audited(&self) -> bool {
        self.findings.iter().any(|f| f.kind.is_audit())
    }

    /// The label of the outcome in metrics.
    pub fn label(&self) -> &'static str {
        match self.outcome {
            Outcome::Deny(_) => "denied",
            Outcome::Place(_) => "patched",
            Outcome::Allow if self.audited() => "audited",
            Outcome::Allow => "allowed",
        }
    }
}

/// The kind of object a decision is about, for messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subject {
    Pod,
    /// A workload's pod template: DaemonSet, Deployment, StatefulSet, …
    Template(&'static str),
}

impl Subject {
    fn kind(self) -> &'static str {
        match self {
            Subject::Pod => "Pod",
            Subject::Template(kind) => kind,
        }
    }
}

/// A pod, or a workload's pod template, as placement decisions see it.
pub struct PodView<'a> {
    pub subject: Subject,
    pub namespace: &'a str,
    pub name: &'a str,
    pub labels: &'a BTreeMap<String, String>,
    pub annotations: &'a BTreeMap<String, String>,
    pub spec: &'a PodSpec,
}

fn outside_message(policy: &str, enclave: &ResolvedEnclave, what: &str) -> String {
    format!(
        "policy {policy}: {what}; pods in its scope must run on nodes of DataEnclave {} (sites: {})",
        enclave.name(),
        enclave.site_names().join(", ")
    )
}

/// Why an enforced policy refuses this spec, if it does: a nodeName that is not a node of
/// the enclave, or node constraints no enclave node can satisfy.
fn refusal(
    catalog: &impl Catalog,
    policy: &str,
    enclave: &ResolvedEnclave,
    view: &PodView,
    spec: &PodSpec,
) -> Option<String> {
    if let Err(why) = placement::judgeable(spec) {
        return Some(outside_message(
            policy,
            enclave,
            &format!(
                "{} {}/{}: {why}",
                view.subject.kind(),
                view.namespace,
                view.name
            ),
        ));
    }
    let is_enclave_node = |node: &str| {
        catalog
            .node_labels(node)
            .is_some_and(|labels| enclave.contains_node(&labels))
    };
    if let Some(node) = spec.node_name.as_deref() {
        return (!is_enclave_node(node)).then(|| {
            outside_message(
                policy,
                enclave,
                &format!("spec.nodeName {node:?} is not a node of the enclave"),
            )
        });
    }
    (!placement::satisfiable_in_enclave(spec, &enclave.site_terms, &is_enclave_node)).then(|| {
        outside_message(
            policy,
            enclave,
            &format!(
                "{} {}/{} asks for nodes (spec.nodeSelector or spec.affinity) that no node of the enclave can satisfy",
                view.subject.kind(),
                view.namespace,
                view.name
            ),
        )
    })
}

/// Why this policy refuses the pod's side doors, if it does: host network or an inline
/// volume the enclave does not allow ([`super::doors`]), or, when the policy enforces
/// storage classes, a generic ephemeral volume whose claim would keep its data off the
/// enclave's storage. Kept apart from the placement checks: the native engine compiles
/// these into validations of their own.
fn side_door(
    catalog: &impl Catalog,
    applicable: &Applicable,
    enclave: &ResolvedEnclave,
    view: &PodView,
) -> Option<String> {
    let name = applicable.name();
    let subject = format!(
        "policy {name}: {} {}/{}",
        view.subject.kind(),
        view.namespace,
        view.name
    );
    if let Some(door) = super::doors::first_door(view.spec, &enclave.enclave.spec.pod_security) {
        return Some(format!(
            "{subject}: {door}; DataEnclave {} keeps the data of pods in its scope behind its fence and on its storage",
            enclave.name()
        ));
    }
    if !applicable.policy.spec.volumes.enforce_storage_classes {
        return None;
    }
    let claims = super::doors::ephemeral_claims(view.spec);
    if claims.is_empty() {
        return None;
    }
    let classes = catalog.storage_classes();
    let default_class = crate::volumes::default_class(&classes);
    let enclave_nodes = enclave_nodes(catalog, enclave);
    let storage = crate::volumes::Storage {
        classes: &enclave.enclave.spec.storage.storage_class_names,
        default_class: default_class.as_deref(),
        enclave_nodes: &enclave_nodes,
    };
    claims.iter().find_map(|(at, template)| {
        let annotations = template
            .metadata
            .as_ref()
            .and_then(|m| m.annotations.clone())
            .unwrap_or_default();
        storage
            .claim_outside(&annotations, &template.spec, &|n| catalog.volume(n))
            .map(|why| {
                format!(
                    "{subject}: {at}: {why}; data in its scope must stay on the storage of DataEnclave {}",
                    enclave.name()
                )
            })
    })
}

fn enclave_nodes(
    catalog: &impl Catalog,
    enclave: &ResolvedEnclave,
) -> Vec<std::sync::Arc<k8s_openapi::api::core::v1::Node>> {
    catalog
        .nodes()
        .iter()
        .filter(|n| enclave.contains_node(kube::ResourceExt::labels(n.as_ref())))
        .cloned()
        .collect()
}

/// The policies covering the view, or a denial when that cannot be known: an in-scope
/// request (the API server's selectors let it through) fails closed.
fn covering(catalog: &impl Catalog, view: &PodView) -> Result<Vec<Applicable>, String> {
    scope::applicable(catalog, view.namespace, view.labels).ok_or_else(|| {
        format!(
            "enclave-operator has not yet seen namespace {:?} and cannot decide on its residency; retry in a moment",
            view.namespace
        )
    })
}

/// When a refusal comes from combining policies (the pod alone would fit this policy's
/// enclave), the other enforcing policies that hold the pod, for the message.
fn conflict_note(others: &[String]) -> String {
    if others.is_empty() {
        String::new()
    } else {
        format!(
            "; the pod is also held by policy {}, and no node is in both enclaves",
            others.join(", policy ")
        )
    }
}

/// The entries of the policy annotation a pod already carries.
fn annotated_policies(view: &PodView) -> Option<BTreeSet<String>> {
    view.annotations.get(POLICY_ANNOTATION).map(|value| {
        value
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    })
}

/// Mutating admission of a pod (CREATE) or a workload's template: AND the enclaves of
/// the enforcing policies into the required node affinity, deny what can never be placed
/// inside, and report what Audit policies would do.
///
/// The result is a fixpoint of one step per enforcing policy (cross its enclave in when
/// the pod does not already imply it; add its preferred sites), so it does not depend on
/// the order in which policies are applied. The annotation is written only when the
/// placement changes or the pod already has one, and then lists every enforcing policy
/// holding the pod.
pub fn mutate<C: Catalog>(catalog: &C, view: &PodView) -> Decision {
    let policies = match covering(catalog, view) {
        Ok(policies) => policies,
        Err(message) => return Decision::refuse(message),
    };
    let mut decision = Decision::default();
    let mut spec = view.spec.clone();
    let mut holding: Vec<String> = Vec::new();
    let mut changed = false;
    for applicable in &policies {
        let name = applicable.name();
        let enforced = applicable.enforced();
        let enclave = match &applicable.enclave {
            Ok(enclave) => enclave,
            Err(problem) if enforced => {
                let message =
                    format!("policy {name}: {problem}; in-scope pods are refused until it exists");
                return decision.deny(&name, message);
            }
            Err(problem) => {
                decision.audit(
                    &name,
                    FindingKind::WouldDeny,
                    format!("policy {name} (Audit): would refuse: {problem}"),
                );
                continue;
            }
        };
        if let Some(message) = refusal(catalog, &name, enclave, view, &spec) {
            if enforced {
                let alone = refusal(catalog, &name, enclave, view, view.spec).is_none();
                let note = if alone {
                    conflict_note(&holding)
                } else {
                    String::new()
                };
                return decision.deny(&name, format!("{message}{note}"));
            }
            decision.would_deny(&name, message);
            continue;
        }
        if let Some(message) = side_door(catalog, applicable, enclave, view) {
            if enforced {
                return decision.deny(&name, message);
            }
            // Audit goes on to say what placement would do as well.
            decision.would_deny(&name, message);
        }
        let implied = placement::implies_enclave(&spec, &enclave.site_terms);
        if !implied && let Err(why) = placement::within_bounds(&spec, &enclave.site_terms) {
            let message = outside_message(
                &name,
                enclave,
                &format!(
                    "{} {}/{}: {why}",
                    view.subject.kind(),
                    view.namespace,
                    view.name
                ),
            );
            if enforced {
                return decision.deny(&name, message);
            }
            decision.would_deny(&name, message);
            continue;
        }
        let placed = placement::constrain(
            &spec,
            &enclave.site_terms,
            &enclave.preferred(&applicable.policy),
        );
        if !enforced {
            if placed.is_some() && !implied {
                decision.audit(
                    &name,
                    FindingKind::WouldPlace,
                    format!(
                        "policy {name} (Audit): would require nodes of DataEnclave {} (sites: {})",
                        enclave.name(),
                        enclave.site_names().join(", ")
                    ),
                );
            }
            continue;
        }
        holding.push(name.clone());
        if let Some(affinity) = placed {
            spec.affinity = Some(affinity);
            changed = true;
            decision.findings.push(Finding {
                policy: name.clone(),
                kind: FindingKind::Placed,
                message: format!(
                    "{} {}/{} placed on nodes of DataEnclave {} (sites: {})",
                    view.subject.kind(),
                    view.namespace,
                    view.name,
                    enclave.name(),
                    enclave.site_names().join(", ")
                ),
            });
        }
    }
    let previous = annotated_policies(view);
    if !changed && previous.is_none() {
        return decision;
    }
    let mut annotation = previous.clone().unwrap_or_default();
    annotation.extend(holding);
    if !changed && previous.as_ref() == Some(&annotation) {
        return decision;
    }
    decision.outcome = Outcome::Place(Placement {
        affinity: spec.affinity.unwrap_or_default(),
        annotation: annotation.into_iter().collect::<Vec<_>>().join(","),
    });
    decision
}

/// Validating admission of a pod (CREATE) or a DaemonSet's template, after every
/// mutation: the final object must be held inside the enclave of every enforcing policy.
pub fn validate<C: Catalog>(catalog: &C, view: &PodView) -> Decision {
    let policies = match covering(catalog, view) {
        Ok(policies) => policies,
        Err(message) => return Decision::refuse(message),
    };
    let enforcing: Vec<&Applicable> = policies.iter().filter(|a| a.enforced()).collect();
    let decision = Decision::default();
    for applicable in &enforcing {
        let name = applicable.name();
        let enclave = match &applicable.enclave {
            Ok(enclave) => enclave,
            Err(problem) => {
                let message =
                    format!("policy {name}: {problem}; in-scope pods are refused until it exists");
                return decision.deny(&name, message);
            }
        };
        if let Some(message) = refusal(catalog, &name, enclave, view, view.spec) {
            let others: Vec<String> = enforcing
                .iter()
                .map(|a| a.name())
                .filter(|other| *other != name)
                .collect();
            return decision.deny(&name, format!("{message}{}", conflict_note(&others)));
        }
        if view.spec.node_name.is_none()
            && !placement::implies_enclave(view.spec, &enclave.site_terms)
        {
            let what = match placement::within_bounds(view.spec, &enclave.site_terms) {
                Err(why) => format!(
                    "{} {}/{}: {why}",
                    view.subject.kind(),
                    view.namespace,
                    view.name
                ),
                Ok(()) => "the pod's node affinity does not keep it inside the enclave (the placement mutation was bypassed, or is still coming into force: retry in a moment)".to_string(),
            };
            return decision.deny(&name, outside_message(&name, enclave, &what));
        }
        if let Some(message) = side_door(catalog, applicable, enclave, view) {
            return decision.deny(&name, message);
        }
    }
    decision
}

/// Validating admission of a workload (Deployment, StatefulSet, ReplicaSet, Job,
/// CronJob, DaemonSet): never denied — its pods are — but warned about when its pod
/// template can never be placed in the enclave.
pub fn warn_workload<C: Catalog>(catalog: &C, view: &PodView) -> Decision {
    let mut decision = Decision::default();
    let Ok(policies) = covering(catalog, view) else {
        return decision;
    };
    for applicable in policies {
        let name = applicable.name();
        match &applicable.enclave {
            Err(problem) => decision.warnings.push(format!(
                "policy {name}: {problem}; the pods of {} {} will be refused",
                view.subject.kind(),
                view.name
            )),
            Ok(enclave) => {
                if let Some(message) = refusal(catalog, &name, enclave, view, view.spec) {
                    let consequence = if applicable.enforced() {
                        "its pods will be denied"
                    } else {
                        "(Audit) its pods would be denied"
                    };
                    decision.warnings.push(format!("{message}: {consequence}"));
                }
            }
        }
    }
    decision
}

/// A claim, or a StatefulSet's claim templates, as the volume check sees them.
pub struct ClaimsView<'a> {
    /// `PersistentVolumeClaim` or `StatefulSet`.
    pub kind: &'a str,
    pub namespace: &'a str,
    pub name: &'a str,
    pub claims: Vec<Claim>,
}

/// One claim or claim template: its name, its annotations (the beta storage-class
/// annotation decides before the spec) and its spec.
pub struct Claim {
    pub name: String,
    pub annotations: BTreeMap<String, String>,
    pub spec: k8s_openapi::api::core::v1::PersistentVolumeClaimSpec,
}

/// Validating admission of a PersistentVolumeClaim (CREATE) or a StatefulSet's claim
/// templates: every claim of an enforcing policy's namespaces (its pod selector aside:
/// claims carry no pod labels) must keep its data on the enclave's storage.
pub fn volumes<C: Catalog>(catalog: &C, view: &ClaimsView) -> Decision {
    let Some(policies) = scope::applicable_to_namespace(catalog, view.namespace) else {
        return Decision::refuse(format!(
            "enclave-operator has not yet seen namespace {:?} and cannot decide on its residency; retry in a moment",
            view.namespace
        ));
    };
    let mut decision = Decision::default();
    let classes = catalog.storage_classes();
    let default_class = crate::volumes::default_class(&classes);
    for applicable in policies
        .iter()
        .filter(|a| a.policy.spec.volumes.enforce_storage_classes)
    {
        let name = applicable.name();
        let enforced = applicable.enforced();
        let enclave = match &applicable.enclave {
            Ok(enclave) => enclave,
            Err(problem) if enforced => {
                return decision.deny(
                    &name,
                    format!(
                        "policy {name}: {problem}; in-scope claims are refused until it exists"
                    ),
                );
            }
            Err(_) => continue,
        };
        let enclave_nodes = enclave_nodes(catalog, enclave);
        let storage = crate::volumes::Storage {
            classes: &enclave.enclave.spec.storage.storage_class_names,
            default_class: default_class.as_deref(),
            enclave_nodes: &enclave_nodes,
        };
        for claim in &view.claims {
            let Some(why) =
                storage.claim_outside(&claim.annotations, &claim.spec, &|n| catalog.volume(n))
            else {
                continue;
            };
            let message = format!(
                "policy {name}: {} {}/{}: claim {}: {why}; data in its scope must stay on the storage of DataEnclave {}",
                view.kind,
                view.namespace,
                view.name,
                claim.name,
                enclave.name()
            );
            if enforced {
                return decision.deny(&name, message);
            }
            decision.would_deny(&name, message);
            break;
        }
    }
    decision
}

/// An attempt to reach into a pod: exec, attach, port-forward, or a debug container.
pub struct AccessView<'a> {
    pub namespace: &'a str,
    pub pod: &'a str,
    /// `exec`, `attach`, `portforward` or `ephemeralcontainers`.
    pub subresource: &'a str,
    pub user: &'a str,
    pub groups: &'a [String],
    /// The moment of the attempt: grants are judged at it.
    pub now: jiff::Timestamp,
}

fn verb(subresource: &str) -> &'static str {
    match subresource {
        "exec" => "exec into",
        "attach" => "attach to",
        "portforward" => "port-forward to",
        "ephemeralcontainers" => "add a debug container to",
        _ => "reach into",
    }
}

/// The security gate: an attempt on a pod of an enforcing policy is admitted only for
/// the staff its DataEnclave approves (`spec.access`): a user named there, or a member
/// of a group named there; or for a user with an active AccessGrant of that enclave
/// covering the attempt's verb, namespace and pod ([`crate::grants`]). Service accounts
/// are users named `system:serviceaccount:<namespace>:<name>` (or members of the groups
/// `system:serviceaccounts[:<namespace>]`). A subject the enclave has locked out is
/// refused whatever approves it. A pod the operator has not seen yet is judged by every
/// policy of its namespace, and while the grants are not yet synced no in-scope
/// request passes: in-scope requests fail closed.
pub fn access<C: Catalog>(catalog: &C, view: &AccessView) -> Decision {
    let grants = catalog.grants();
    let Some(namespace_labels) = catalog.namespace_labels(view.namespace) else {
        return Decision::refuse(format!(
            "enclave-operator has not yet seen namespace {:?} and cannot decide who may reach its pods; retry in a moment",
            view.namespace
        ));
    };
    let pod_labels = catalog.pod_labels(view.namespace, view.pod);
    let mut decision = Decision::default();
    for policy in catalog.policies() {
        if !scope::covers_namespace(&policy, view.namespace, &namespace_labels) {
            continue;
        }
        // A volume move's mover pod holds the claim's data (and its transfer keys)
        // whatever the pod selector says: gated by every policy of its namespace. Only
        // the operator can set the label (the chart's volume-move-label policy).
        if let (Some(selector), Some(labels)) = (&policy.spec.match_.pod_selector, &pod_labels)
            && !crate::selector::matches(selector, labels)
            && !labels.contains_key(crate::names::VOLUME_MIGRATION_LABEL)
        {
            continue;
        }
        let name = kube::ResourceExt::name_any(policy.as_ref());
        let enforced = policy.spec.enforcement == crate::crd::Enforcement::Enforce;
        let enclave = match scope::resolve_enclave(catalog, &policy) {
            Ok(enclave) => enclave,
            Err(problem) if enforced => {
                return decision.deny(
                    &name,
                    format!("policy {name}: {problem}; access to in-scope pods is refused until it exists"),
                );
            }
            Err(_) => continue,
        };
        let approved = enclave.enclave.spec.access.clone().unwrap_or_default();
        let judged = crate::grants::gate(
            grants.as_ref(),
            &enclave.enclave,
            &approved,
            view.user,
            view.groups,
            crate::crd::GrantVerb::of_subresource(view.subresource),
            view.namespace,
            view.pod,
            view.now,
        );
        let refusal = match judged {
            crate::grants::Gate::Admitted { how, grant } => {
                decision.grants.extend(grant);
                decision.findings.push(Finding {
                    policy: name,
                    kind: FindingKind::Admitted,
                    message: format!(
                        "{how} may {} pod {}/{} of DataEnclave {}",
                        verb(view.subresource),
                        view.namespace,
                        view.pod,
                        enclave.name()
                    ),
                });
                continue;
            }
            crate::grants::Gate::Refused(why) => why,
        };
        let message = format!(
            "policy {name}: {} may not {} pod {}/{}: {refusal}",
            view.user,
            verb(view.subresource),
            view.namespace,
            view.pod,
        );
        if enforced {
            decision.refused_by = Some(enclave.name());
            return decision.deny(&name, message);
        }
        decision.would_deny(&name, message);
    }
    decision
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scope::StaticCatalog;

    fn catalog() -> StaticCatalog {
        StaticCatalog::from_yaml(include_str!("../../tests/fixtures/catalog.yaml"))
            .expect("fixture parses")
    }

    fn no_labels() -> &'static BTreeMap<String, String> {
        static EMPTY: BTreeMap<String, String> = BTreeMap::new();
        &EMPTY
    }

    fn view<'a>(namespace: &'a str, spec: &'a PodSpec) -> PodView<'a> {
        PodView {
            subject: Subject::Pod,
            namespace,
            name: "p",
            labels: no_labels(),
            annotations: no_labels(),
            spec,
        }
    }

    fn spec(yaml: &str) -> PodSpec {
        serde_yaml::from_str(yaml).expect("fixture parses")
    }

    fn placed(decision: &Decision) -> &Placement {
        match &decision.outcome {
            Outcome::Place(placement) => placement,
            other => panic!("expected a placement, got {other:?}"),
        }
    }

    fn denied(decision: &Decision) -> &str {
        match &decision.outcome {
            Outcome::Deny(message) => message,
            other => panic!("expected a denial, got {other:?}"),
        }
    }

    #[test]
    fn in_scope_pod_is_placed_and_the_result_validates() {
        let catalog = catalog();
        let pod = spec("containers: [{name: app, image: x}]");
        let decision = mutate(&catalog, &view("shop", &pod));
        let placement = placed(&decision);
        assert_eq!(placement.annotation, "eu-user-data");
        assert_eq!(decision.findings[0].kind, FindingKind::Placed);
        let mut after = pod.clone();
        after.affinity = Some(placement.affinity.clone());
        assert!(placement::implies_enclave(
            &after,
            &crate::scope::resolve_enclave(&catalog, &catalog.policies[1])
                .expect("enclave")
                .site_terms
        ));
        assert_eq!(
            validate(&catalog, &view("shop", &after)).outcome,
            Outcome::Allow,
            "what mutate produces, validate accepts"
        );
        assert!(
            denied(&validate(&catalog, &view("shop", &pod))).contains("bypassed"),
            "an unplaced pod is refused"
        );
        // Mutating the placed pod again changes nothing: idempotent.
        let annotations: BTreeMap<String, String> =
            [(POLICY_ANNOTATION.to_string(), placement.annotation.clone())].into();
        let again = mutate(
            &catalog,
            &PodView {
                annotations: &annotations,
                ..view("shop", &after)
            },
        );
        assert_eq!(again.outcome, Outcome::Allow);
    }

    #[test]
    fn denials_name_the_policy_and_the_sites() {
        let catalog = catalog();
        let pinned = spec(
            "containers: []\nnodeSelector: {node-restriction.kubernetes.io/enclave-site: virginia}",
        );
        let decision = mutate(&catalog, &view("shop", &pinned));
        let message = denied(&decision);
        assert!(
            message.contains("policy eu-user-data") && message.contains("sites: dublin, norway"),
            "{message}"
        );
        assert_eq!(decision.findings[0].kind, FindingKind::Denied);
        for node in ["virginia-a", "mars-1"] {
            let named = spec(&format!("containers: []\nnodeName: {node}"));
            assert!(
                denied(&mutate(&catalog, &view("shop", &named))).contains(&format!(
                    "spec.nodeName \"{node}\" is not a node of the enclave"
                ))
            );
        }
    }

    #[test]
    fn match_fields_pinning_outside_is_denied() {
        let catalog = catalog();
        let pinned = |node: &str| {
            spec(&format!(
                "containers: []\naffinity: {{nodeAffinity: {{requiredDuringSchedulingIgnoredDuringExecution: {{nodeSelectorTerms: [{{matchFields: [{{key: metadata.name, operator: In, values: [{node}]}}]}}]}}}}}}"
            ))
        };
        assert!(
            denied(&mutate(&catalog, &view("shop", &pinned("virginia-a"))))
                .contains("no node of the enclave")
        );
        assert!(matches!(
            mutate(&catalog, &view("shop", &pinned("dublin-a"))).outcome,
            Outcome::Place(_)
        ));
    }

    #[test]
    fn audit_changes_nothing_and_out_of_scope_is_untouched() {
        let catalog = catalog();
        let pinned = spec(
            "containers: []\nnodeSelector: {node-restriction.kubernetes.io/enclave-site: virginia}",
        );
        let audited = mutate(&catalog, &view("analytics", &pinned));
        assert_eq!(audited.outcome, Outcome::Allow);
        assert_eq!(audited.label(), "audited");
        assert!(
            audited.warnings.iter().any(|w| w.contains("would deny")),
            "{:?}",
            audited.warnings
        );
        assert_eq!(
            mutate(&catalog, &view("public", &pinned)),
            Decision::default()
        );
    }

    #[test]
    fn unknown_namespace_fails_closed() {
        let pod = spec("containers: []");
        assert!(denied(&mutate(&catalog(), &view("brand-new", &pod))).contains("retry"));
    }

    #[test]
    fn a_pod_too_large_to_cross_is_refused_with_the_reason() {
        let terms: String = (0..200)
            .map(|i| format!("{{matchExpressions: [{{key: k{i}, operator: Exists}}]}}"))
            .collect::<Vec<_>>()
            .join(", ");
        let wide = spec(&format!(
            "containers: []\naffinity: {{nodeAffinity: {{requiredDuringSchedulingIgnoredDuringExecution: {{nodeSelectorTerms: [{terms}]}}}}}}"
        ));
        let message = denied(&mutate(&catalog(), &view("shop", &wide))).to_string();
        assert!(message.contains("400 node selector terms"), "{message}");
        assert!(
            denied(&validate(&catalog(), &view("shop", &wide))).contains("400 node selector terms")
        );
    }

    #[test]
    fn claims_off_the_enclaves_storage_are_refused_naming_the_classes() {
        let catalog = catalog();
        let view = |kind, spec: &str| ClaimsView {
            kind,
            namespace: "shop",
            name: "data",
            claims: vec![Claim {
                name: "data".into(),
                annotations: BTreeMap::new(),
                spec: serde_yaml::from_str(spec).expect("spec"),
            }],
        };
        let refused = volumes(
            &catalog,
            &view("PersistentVolumeClaim", "{storageClassName: us-east-ssd}"),
        );
        let message = denied(&refused);
        assert!(
            message.contains("us-east-ssd")
                && message.contains("eu-dublin-ssd, eu-norway-ssd")
                && message.contains("policy eu-user-data"),
            "{message}"
        );
        assert_eq!(
            volumes(
                &catalog,
                &view("PersistentVolumeClaim", "{storageClassName: eu-dublin-ssd}")
            )
            .outcome,
            Outcome::Allow
        );
        assert!(
            denied(&volumes(&catalog, &view("StatefulSet", "{}")))
                .contains("no default StorageClass")
        );
        let audited = volumes(
            &catalog,
            &ClaimsView {
                namespace: "analytics",
                ..view("PersistentVolumeClaim", "{storageClassName: us-east-ssd}")
            },
        );
        assert_eq!(audited.outcome, Outcome::Allow);
        assert!(audited.warnings[0].contains("(Audit) would deny"));
    }

    #[test]
    fn only_approved_staff_reach_into_enclave_pods() {
        let mut catalog = catalog();
        let mut enclave = (*catalog.enclaves["eu"]).clone();
        enclave.spec.access = Some(crate::crd::Access {
            approved_groups: vec!["eu-data-stewards".into()],
            approved_users: vec!["system:serviceaccount:ops:backup".into()],
            ..Default::default()
        });
        catalog
            .enclaves
            .insert("eu".into(), std::sync::Arc::new(enclave));
        let attempt = |user: &'static str, groups: &'static [String]| AccessView {
            namespace: "shop",
            pod: "db-0",
            subresource: "exec",
            user,
            groups,
            now: jiff::Timestamp::UNIX_EPOCH,
        };
        static NONE: Vec<String> = Vec::new();
        let denied_decision = access(&catalog, &attempt("mallory", &NONE));
        let message = denied(&denied_decision);
        assert!(
            message.contains("mallory may not exec into pod shop/db-0")
                && message.contains("groups: eu-data-stewards"),
            "{message}"
        );
        static STEWARDS: std::sync::LazyLock<Vec<String>> =
            std::sync::LazyLock::new(|| vec!["eu-data-stewards".into()]);
        let steward = access(&catalog, &attempt("alice", &STEWARDS));
        assert_eq!(steward.outcome, Outcome::Allow);
        // Admitted staff are named in a finding, so that the attempt is recorded.
        assert_eq!(steward.findings.len(), 1);
        assert_eq!(steward.findings[0].kind, FindingKind::Admitted);
        assert!(
            steward.findings[0]
                .message
                .contains("alice as a member of approved group eu-data-stewards"),
            "{:?}",
            steward.findings
        );
        let backup = access(
            &catalog,
            &attempt("system:serviceaccount:ops:backup", &NONE),
        );
        assert_eq!(backup.outcome, Outcome::Allow);
        assert!(
            backup.findings[0].message.starts_with(
                "approved user system:serviceaccount:ops:backup may exec into pod shop/db-0"
            ),
            "{:?}",
            backup.findings
        );
        // Outside every policy: not ours to judge, and nothing to record.
        let outside = AccessView {
            namespace: "public",
            ..attempt("mallory", &NONE)
        };
        let outside = access(&catalog, &outside);
        assert_eq!(outside.outcome, Outcome::Allow);
        assert!(outside.findings.is_empty());
        // Audit records and allows.
        let audited = access(
            &catalog,
            &AccessView {
                namespace: "analytics",
                ..attempt("mallory", &NONE)
            },
        );
        assert_eq!(audited.outcome, Outcome::Allow);
        assert!(audited.audited());
    }

    /// With no standing access, an approved grant is the only way in: for its user,
    /// verbs, namespaces and pods, from its approval to its expiry; and while the grants
    /// are not synced nobody passes, approved staff included.
    #[test]
    fn an_active_grant_lets_its_requester_through_for_its_scope_and_time_only() {
        let mut catalog = catalog();
        let mut enclave = (*catalog.enclaves["eu"]).clone();
        enclave.spec.access = Some(crate::crd::Access {
            approved_users: vec!["bob".into()],
            approver_users: vec!["carol".into()],
            ..Default::default()
        });
        catalog
            .enclaves
            .insert("eu".into(), std::sync::Arc::new(enclave));
        let grant: crate::crd::AccessGrant = serde_yaml::from_str(
            "metadata: {name: inc-1, uid: u1, creationTimestamp: '2027-01-01T00:00:00Z'}\n\
             spec: {enclave: eu, requester: alice, verbs: [Exec], namespaces: [shop], pods: [db-0], reason: INC-1, durationMinutes: 30}",
        )
        .expect("grant parses");
        let approval: crate::crd::AccessApproval = serde_yaml::from_str(
            "metadata: {name: inc-1-ok, creationTimestamp: '2027-01-01T00:01:00Z'}\n\
             spec: {grant: {name: inc-1, uid: u1}, decision: Approve, approver: carol}",
        )
        .expect("approval parses");
        catalog.grants = crate::grants::Grants {
            grants: vec![std::sync::Arc::new(grant)],
            approvals: vec![std::sync::Arc::new(approval)],
            ..Default::default()
        };
        static NONE: Vec<String> = Vec::new();
        let time = |t: &str| t.parse::<jiff::Timestamp>().expect("time");
        let attempt = |pod: &'static str, subresource: &'static str, t: &str| AccessView {
            namespace: "shop",
            pod,
            subresource,
            user: "alice",
            groups: &NONE,
            now: time(t),
        };
        let during = access(&catalog, &attempt("db-0", "exec", "2027-01-01T00:10:00Z"));
        assert_eq!(during.outcome, Outcome::Allow, "{during:?}");
        assert_eq!(during.grants, ["inc-1"]);
        assert!(
            during.findings[0]
                .message
                .contains("alice under grant inc-1 (approved by carol"),
            "{:?}",
            during.findings
        );
        for (pod, subresource, t, why) in [
            ("db-0", "exec", "2027-01-01T00:00:30Z", "before approval"),
            ("db-0", "exec", "2027-01-01T00:31:00Z", "after expiry"),
            ("db-1", "exec", "2027-01-01T00:10:00Z", "another pod"),
            ("db-0", "attach", "2027-01-01T00:10:00Z", "another verb"),
        ] {
            let refused = access(&catalog, &attempt(pod, subresource, t));
            assert!(
                denied(&refused).contains("holders of an active AccessGrant covering the request"),
                "{why}: {refused:?}"
            );
        }
        catalog.grants_unsynced = true;
        let unsynced = access(&catalog, &attempt("db-0", "exec", "2027-01-01T00:10:00Z"));
        assert!(
            denied(&unsynced).contains("has not yet synced the AccessGrants"),
            "{unsynced:?}"
        );
        let bob = AccessView {
            user: "bob",
            ..attempt("db-0", "exec", "2027-01-01T00:10:00Z")
        };
        assert!(matches!(access(&catalog, &bob).outcome, Outcome::Deny(_)));
    }

    /// `/readyz` does not wait for the pod cache: until a pod is cached, the gate must
    /// judge it by every policy of its namespace, pod selectors or not.
    #[test]
    fn a_pod_not_cached_yet_is_judged_by_every_policy_of_its_namespace() {
        let mut catalog = catalog();
        let index = catalog
            .policies
            .iter()
            .position(|p| kube::ResourceExt::name_any(p.as_ref()) == "eu-user-data")
            .expect("the enforcing policy of shop");
        let mut policy = (*catalog.policies[index]).clone();
        policy.spec.match_.pod_selector =
            Some(serde_yaml::from_str("matchLabels: {tier: data}").expect("selector"));
        catalog.policies[index] = std::sync::Arc::new(policy);
        catalog.pods.push(std::sync::Arc::new(
            serde_yaml::from_str("metadata: {name: web-0, namespace: shop, labels: {tier: web}}")
                .expect("pod"),
        ));
        static NONE: Vec<String> = Vec::new();
        let attempt = |pod: &'static str| AccessView {
            namespace: "shop",
            pod,
            subresource: "exec",
            user: "mallory",
            groups: &NONE,
            now: jiff::Timestamp::UNIX_EPOCH,
        };
        // Known, and outside the pod selector: not in scope.
        assert_eq!(access(&catalog, &attempt("web-0")).outcome, Outcome::Allow);
        // A volume move's mover pod, outside the selector too, holds the claim's data:
        // gated.
        catalog.pods.push(std::sync::Arc::new(
            serde_yaml::from_str(
                "metadata: {name: data-first-sender, namespace: shop, labels: {enclave.dev/volume-migration: data}}",
            )
            .expect("pod"),
        ));
        let mover = access(&catalog, &attempt("data-first-sender"));
        assert!(
            denied(&mover).contains("mallory may not exec into pod shop/data-first-sender"),
            "{mover:?}"
        );
        // Not known yet: in scope until proven otherwise.
        let unseen = access(&catalog, &attempt("db-7"));
        assert!(
            denied(&unseen).contains("mallory may not exec into pod shop/db-7"),
            "{unseen:?}"
        );
    }

    /// Issue 21: host network and inline volumes are refused in scope by both the
    /// mutation and the final check, naming the field; Audit warns and goes on; the
    /// enclave's allow-list admits them; out of scope nothing is judged.
    #[test]
    fn side_doors_are_refused_in_scope_naming_the_field() {
        let catalog = catalog();
        let host = spec(
            "containers: []\nhostNetwork: true\nnodeSelector: {node-restriction.kubernetes.io/enclave-site: dublin}",
        );
        for decision in [
            mutate(&catalog, &view("shop", &host)),
            validate(&catalog, &view("shop", &host)),
        ] {
            let message = denied(&decision);
            assert!(
                message.starts_with("policy eu-user-data: Pod shop/p: spec.hostNetwork: true")
                    && message.ends_with("DataEnclave eu keeps the data of pods in its scope behind its fence and on its storage"),
                "{message}"
            );
        }
        let nfs = spec(
            "containers: []\nvolumes: [{name: data, nfs: {server: 198.51.100.7, path: /export}}]",
        );
        assert!(
            denied(&mutate(&catalog, &view("shop", &nfs)))
                .contains("spec.volumes[0].nfs (volume data)")
        );
        // Audit: warned, and placement is still reported.
        let audited = mutate(&catalog, &view("analytics", &nfs));
        assert_eq!(audited.outcome, Outcome::Allow);
        assert!(
            audited.warnings.iter().any(|w| w.starts_with(
                "(Audit) would deny: policy eu-audit: Pod analytics/p: spec.volumes[0].nfs"
            )),
            "{:?}",
            audited.warnings
        );
        assert!(
            audited
                .findings
                .iter()
                .any(|f| f.kind == FindingKind::WouldPlace),
            "{:?}",
            audited.findings
        );
        assert_eq!(mutate(&catalog, &view("public", &nfs)), Decision::default());
        // The enclave's allow-list.
        let mut allowing = catalog.clone();
        let mut enclave = (*allowing.enclaves["eu"]).clone();
        enclave.spec.pod_security =
            serde_yaml::from_str("{allowHostNetwork: true, allowedVolumeTypes: [nfs]}")
                .expect("allow-list");
        allowing
            .enclaves
            .insert("eu".into(), std::sync::Arc::new(enclave));
        assert!(matches!(
            mutate(&allowing, &view("shop", &nfs)).outcome,
            Outcome::Place(_)
        ));
        assert_eq!(
            validate(&allowing, &view("shop", &host)).outcome,
            Outcome::Allow
        );
    }

    /// Generic ephemeral volumes are claims: judged by their template's class, the
    /// beta annotation first, when the policy enforces storage classes.
    #[test]
    fn ephemeral_volumes_are_judged_by_their_claim_templates_class() {
        let catalog = catalog();
        let pod = |template: &str| {
            spec(&format!(
                "containers: []\nnodeSelector: {{node-restriction.kubernetes.io/enclave-site: dublin}}\nvolumes: [{{name: scratch, ephemeral: {{volumeClaimTemplate: {template}}}}}]"
            ))
        };
        let us = pod("{spec: {storageClassName: us-east-ssd}}");
        let message = denied(&validate(&catalog, &view("shop", &us))).to_string();
        assert!(
            message.starts_with("policy eu-user-data: Pod shop/p: spec.volumes[0].ephemeral (volume scratch): it uses storage class \"us-east-ssd\"")
                && message.contains("eu-dublin-ssd, eu-norway-ssd"),
            "{message}"
        );
        let mixed = pod(
            "{metadata: {annotations: {volume.beta.kubernetes.io/storage-class: us-east-ssd}}, spec: {storageClassName: eu-dublin-ssd}}",
        );
        assert!(denied(&mutate(&catalog, &view("shop", &mixed))).contains("make the two agree"));
        let eu = pod(
            "{metadata: {annotations: {volume.beta.kubernetes.io/storage-class: eu-norway-ssd}}, spec: {}}",
        );
        assert_eq!(
            validate(&catalog, &view("shop", &eu)).outcome,
            Outcome::Allow
        );
        // No default class in the fixture: a classless template is refused.
        assert!(
            denied(&validate(&catalog, &view("shop", &pod("{spec: {}}"))))
                .contains("no default StorageClass")
        );
    }

    #[test]
    fn a_claim_is_judged_by_its_beta_annotation_first() {
        let catalog = catalog();
        let claim = |annotation: &str, spec: &str| ClaimsView {
            kind: "PersistentVolumeClaim",
            namespace: "shop",
            name: "data",
            claims: vec![Claim {
                name: "data".into(),
                annotations: BTreeMap::from([(
                    crate::volumes::BETA_CLASS_ANNOTATION.to_string(),
                    annotation.to_string(),
                )]),
                spec: serde_yaml::from_str(spec).expect("spec"),
            }],
        };
        assert!(
            denied(&volumes(
                &catalog,
                &claim("us-east-ssd", "{storageClassName: eu-dublin-ssd}")
            ))
            .contains("make the two agree")
        );
        assert!(denied(&volumes(&catalog, &claim("us-east-ssd", "{}"))).contains("us-east-ssd"));
        assert_eq!(
            volumes(&catalog, &claim("eu-dublin-ssd", "{}")).outcome,
            Outcome::Allow
        );
    }

    #[test]
    fn the_annotation_keeps_what_was_there_and_is_not_added_to_untouched_pods() {
        let catalog = catalog();
        // Inside the enclave already, with the policy's preferred site: nothing to change.
        let inside = spec(
            "containers: []\nnodeSelector: {node-restriction.kubernetes.io/enclave-site: dublin}\naffinity: {nodeAffinity: {preferredDuringSchedulingIgnoredDuringExecution: [{weight: 50, preference: {matchExpressions: [{key: node-restriction.kubernetes.io/enclave-site, operator: In, values: [norway]}]}}]}}",
        );
        assert_eq!(
            mutate(&catalog, &view("shop", &inside)).outcome,
            Outcome::Allow
        );
        let annotations: BTreeMap<String, String> =
            [(POLICY_ANNOTATION.to_string(), "zz,older".to_string())].into();
        let decision = mutate(
            &catalog,
            &PodView {
                annotations: &annotations,
                ..view("shop", &inside)
            },
        );
        assert_eq!(placed(&decision).annotation, "eu-user-data,older,zz");
    }
}
