//! Admission decisions, pure: from a pod (or a pod template) and the [`Catalog`] to a
//! verdict — allow, deny with a message naming the policy and the allowed sites, or
//! allow with a patch — plus warnings and what Audit policies would have done.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::PodSpec;

use crate::{
    placement,
    scope::{self, Applicable, Catalog, ResolvedEnclave},
};

/// Annotation naming the policies that placed a pod (or a DaemonSet's template).
pub const POLICY_ANNOTATION: &str = "enclave.dev/policy";

/// What admission should answer.
#[derive(Debug, Default, PartialEq)]
pub struct Verdict {
    /// Why the request is denied; None to allow.
    pub denied: Option<String>,
    /// The new pod spec, when the mutation changes it.
    pub spec: Option<PodSpec>,
    /// Policies that changed the spec, for the annotation.
    pub placed_by: Vec<String>,
    /// Warnings shown to the user (kubectl prints them).
    pub warnings: Vec<String>,
    /// What to record as Events on the policies: denials, and what Audit policies
    /// would have done.
    pub reports: Vec<Report>,
}

/// A denial by, or an Audit finding of, one policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    pub policy: String,
    /// An Audit finding (nothing was blocked or changed), not a denial.
    pub audit: bool,
    pub message: String,
}

impl Verdict {
    fn deny(mut self, policy: &str, message: String) -> Self {
        self.reports.push(Report {
            policy: policy.to_string(),
            audit: false,
            message: message.clone(),
        });
        self.denied = Some(message);
        self
    }

    fn audit(&mut self, policy: &str, message: String) {
        self.warnings.push(message.clone());
        self.reports.push(Report {
            policy: policy.to_string(),
            audit: true,
            message,
        });
    }

    /// Did an Audit policy find something?
    pub fn audited(&self) -> bool {
        self.reports.iter().any(|r| r.audit)
    }
}

/// Where the pod is, as far as placement is concerned.
pub struct PodView<'a> {
    pub kind: &'a str,
    pub namespace: &'a str,
    pub name: &'a str,
    pub labels: &'a BTreeMap<String, String>,
    pub spec: &'a PodSpec,
}

fn outside_message(policy: &str, enclave: &ResolvedEnclave, what: &str) -> String {
    format!(
        "policy {policy}: {what}; pods in its scope must run on nodes of DataEnclave {} (sites: {})",
        enclave.name(),
        enclave.site_names().join(", ")
    )
}

/// Why an enforced policy refuses this spec, if it does: a nodeName outside the
/// enclave (or unknown), or node constraints no enclave node can satisfy.
fn refusal(
    catalog: &impl Catalog,
    policy: &str,
    enclave: &ResolvedEnclave,
    view: &PodView,
) -> Option<String> {
    if let Some(node) = view.spec.node_name.as_deref() {
        return match catalog.node_labels(node) {
            None => Some(outside_message(
                policy,
                enclave,
                &format!("spec.nodeName {node:?} is not a known node"),
            )),
            Some(labels) if !enclave.contains_node(&labels) => Some(outside_message(
                policy,
                enclave,
                &format!("spec.nodeName {node:?} is a node outside the enclave"),
            )),
            Some(_) => None,
        };
    }
    (!placement::satisfiable_in_enclave(view.spec, &enclave.site_terms)).then(|| {
        outside_message(
            policy,
            enclave,
            &format!("{} {}/{} asks for nodes (spec.nodeSelector or spec.affinity) that no site of the enclave can satisfy", view.kind, view.namespace, view.name),
        )
    })
}

/// The policies covering the view, or a denial when that cannot be known: an in-scope
/// request (the webhook's selectors let it through) fails closed.
fn covering(catalog: &impl Catalog, view: &PodView) -> Result<Vec<Applicable>, String> {
    scope::applicable(catalog, view.namespace, view.labels).ok_or_else(|| {
        format!(
            "enclave-operator has not yet seen namespace {:?} and cannot decide on its residency; retry in a moment",
            view.namespace
        )
    })
}

/// Mutating admission of a pod (CREATE) or a DaemonSet's template: AND the enclaves of
/// the enforcing policies into the required node affinity, deny what can never be
/// placed inside, and report what Audit policies would do.
pub fn mutate(catalog: &impl Catalog, view: &PodView) -> Verdict {
    let mut verdict = Verdict::default();
    let policies = match covering(catalog, view) {
        Ok(policies) => policies,
        Err(message) => {
            return Verdict {
                denied: Some(message),
                ..Verdict::default()
            };
        }
    };
    let mut spec = view.spec.clone();
    for applicable in policies {
        let name = applicable.name();
        let enforced = applicable.enforced();
        let enclave = match &applicable.enclave {
            Ok(enclave) => enclave,
            Err(problem) if enforced => {
                let message =
                    format!("policy {name}: {problem}; in-scope pods are refused until it exists");
                return verdict.deny(&name, message);
            }
            Err(problem) => {
                verdict.audit(
                    &name,
                    format!("policy {name} (Audit): would refuse: {problem}"),
                );
                continue;
            }
        };
        let current = PodView {
            spec: &spec,
            ..*view
        };
        if let Some(message) = refusal(catalog, &name, enclave, &current) {
            if enforced {
                return verdict.deny(&name, message);
            }
            verdict.audit(&name, format!("(Audit) would deny: {message}"));
            continue;
        }
        if let Some(affinity) = placement::constrain(
            &spec,
            &enclave.site_terms,
            &enclave.preferred(&applicable.policy),
        ) {
            if enforced {
                spec.affinity = Some(affinity);
                verdict.placed_by.push(name);
            } else {
                let message = format!(
                    "policy {name} (Audit): would require nodes of DataEnclave {}",
                    enclave.name()
                );
                verdict.audit(&name, message);
            }
        }
    }
    if !verdict.placed_by.is_empty() {
        verdict.spec = Some(spec);
    }
    verdict
}

/// Validating admission of a pod (CREATE), after every mutation: the final pod must be
/// held inside the enclave of every enforcing policy.
pub fn validate(catalog: &impl Catalog, view: &PodView) -> Verdict {
    let policies = match covering(catalog, view) {
        Ok(policies) => policies,
        Err(message) => {
            return Verdict {
                denied: Some(message),
                ..Verdict::default()
            };
        }
    };
    let verdict = Verdict::default();
    for applicable in policies.iter().filter(|a| a.enforced()) {
        let name = applicable.name();
        let enclave = match &applicable.enclave {
            Ok(enclave) => enclave,
            Err(problem) => {
                let message =
                    format!("policy {name}: {problem}; in-scope pods are refused until it exists");
                return verdict.deny(&name, message);
            }
        };
        if let Some(message) = refusal(catalog, &name, enclave, view) {
            return verdict.deny(&name, message);
        }
        if view.spec.node_name.is_none()
            && !placement::implies_enclave(view.spec, &enclave.site_terms)
        {
            let message = outside_message(
                &name,
                enclave,
                "the pod's node affinity does not keep it inside the enclave (was the enclave-operator mutating webhook bypassed?)",
            );
            return verdict.deny(&name, message);
        }
    }
    verdict
}

/// Validating admission of a workload (Deployment, StatefulSet, ReplicaSet, Job,
/// CronJob, DaemonSet): never denied — its pods are — but warned about when its pod
/// template can never be placed in the enclave.
pub fn warn_workload(catalog: &impl Catalog, view: &PodView) -> Verdict {
    let mut verdict = Verdict::default();
    let Ok(policies) = covering(catalog, view) else {
        return verdict;
    };
    for applicable in policies {
        let name = applicable.name();
        match &applicable.enclave {
            Err(problem) => verdict.warnings.push(format!(
                "policy {name}: {problem}; the pods of {} {} will be refused",
                view.kind, view.name
            )),
            Ok(enclave) => {
                if let Some(message) = refusal(catalog, &name, enclave, view) {
                    let consequence = if applicable.enforced() {
                        "its pods will be denied"
                    } else {
                        "(Audit) its pods would be denied"
                    };
                    verdict.warnings.push(format!("{message}: {consequence}"));
                }
            }
        }
    }
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scope::StaticCatalog;

    fn catalog() -> StaticCatalog {
        StaticCatalog::from_yaml(include_str!("../../tests/fixtures/catalog.yaml"))
            .expect("fixture parses")
    }

    fn view<'a>(
        namespace: &'a str,
        labels: &'a BTreeMap<String, String>,
        spec: &'a PodSpec,
    ) -> PodView<'a> {
        PodView {
            kind: "Pod",
            namespace,
            name: "p",
            labels,
            spec,
        }
    }

    fn spec(yaml: &str) -> PodSpec {
        serde_yaml::from_str(yaml).expect("fixture parses")
    }

    #[test]
    fn in_scope_pod_is_placed_and_the_result_validates() {
        let catalog = catalog();
        let labels = BTreeMap::new();
        let pod = spec("containers: [{name: app, image: x}]");
        let verdict = mutate(&catalog, &view("shop", &labels, &pod));
        assert_eq!(verdict.denied, None);
        assert_eq!(verdict.placed_by, ["eu-user-data"]);
        let placed = verdict.spec.expect("placed");
        assert!(placement::implies_enclave(
            &placed,
            &crate::scope::resolve_enclave(&catalog, &catalog.policies[1])
                .expect("enclave")
                .site_terms
        ));
        assert_eq!(
            validate(&catalog, &view("shop", &labels, &placed)).denied,
            None,
            "what mutate produces, validate accepts"
        );
        assert!(
            validate(&catalog, &view("shop", &labels, &pod))
                .denied
                .is_some(),
            "an unplaced pod is refused"
        );
    }

    #[test]
    fn denials_name_the_policy_and_the_sites() {
        let catalog = catalog();
        let labels = BTreeMap::new();
        let pinned = spec(
            "containers: []\nnodeSelector: {node-restriction.kubernetes.io/enclave-site: virginia}",
        );
        let denied = mutate(&catalog, &view("shop", &labels, &pinned))
            .denied
            .expect("denied");
        assert!(
            denied.contains("policy eu-user-data") && denied.contains("sites: dublin, norway"),
            "{denied}"
        );
        let named = spec("containers: []\nnodeName: virginia-a");
        let denied = mutate(&catalog, &view("shop", &labels, &named))
            .denied
            .expect("denied");
        assert!(denied.contains("spec.nodeName \"virginia-a\""), "{denied}");
        let unknown = spec("containers: []\nnodeName: mars-1");
        assert!(
            mutate(&catalog, &view("shop", &labels, &unknown))
                .denied
                .expect("denied")
                .contains("not a known node")
        );
    }

    #[test]
    fn audit_changes_nothing_and_out_of_scope_is_untouched() {
        let catalog = catalog();
        let labels = BTreeMap::new();
        let pinned = spec(
            "containers: []\nnodeSelector: {node-restriction.kubernetes.io/enclave-site: virginia}",
        );
        let audited = mutate(&catalog, &view("analytics", &labels, &pinned));
        assert_eq!(
            (audited.denied.as_deref(), audited.spec.as_ref()),
            (None, None)
        );
        assert!(
            audited.warnings.iter().any(|w| w.contains("would deny")),
            "{:?}",
            audited.warnings
        );
        assert_eq!(
            mutate(&catalog, &view("public", &labels, &pinned)),
            Verdict::default()
        );
    }

    #[test]
    fn unknown_namespace_fails_closed() {
        let labels = BTreeMap::new();
        let pod = spec("containers: []");
        assert!(
            mutate(&catalog(), &view("brand-new", &labels, &pod))
                .denied
                .expect("denied")
                .contains("retry")
        );
    }
}
