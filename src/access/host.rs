//! Who can reach the enclave's nodes themselves: namespaces whose pods may take host
//! access there.
//!
//! A pod with a `hostPath` volume, a privileged container, the node's PID, IPC or
//! network namespace, or capabilities beyond the default set reads what its node holds:
//! every pod's `emptyDir` and writable layers, their logs, the kubelet's mounts of their
//! volumes (`/var/lib/kubelet/pods`), the traffic on the node's interfaces. A pod of any
//! namespace can land on an enclave node — by `spec.nodeName` (`kubectl debug node/…`
//! writes one), as a DaemonSet's pod, or through a nodeSelector naming a site — and read
//! the enclave's data from there; placement, the fence and the access gate are about
//! the enclave's own pods and do not stand in its way.
//!
//! Kubernetes refuses such pods wherever Pod Security Admission enforces the `baseline`
//! level or above: host namespaces, privileged containers, added capabilities beyond
//! baseline's list and `hostPath` volumes are refused at creation and in ephemeral
//! containers, by the API server, whether the operator runs or not. The namespace label
//! that sets the level is an admin's to write (namespaces are cluster-scoped; the
//! exposure report names who can change their labels). So the operator does not add a
//! check of its own, which every pod creation in the cluster would pay for (one CEL
//! conversion of the pod, docs/benchmarks.md); it reports the namespaces where the
//! level does not hold, and the DataEnclave's `HostAccessGuarded` condition says
//! whether there are any.
//!
//! Not reported: `kube-system` and the operator's namespace (never in scope: the
//! control plane's node agents run there), and namespaces whose every pod an enforcing
//! policy of the enclave places inside it (no pod selector): their host access stays on
//! the enclave's nodes, among the pods whose writes the exposure report already names.
//! What the operator cannot see: the API server's default level for unlabelled
//! namespaces and its exemptions (its `AdmissionConfiguration`), so a namespace without
//! the label is reported even where the default is `baseline`; labelling it costs
//! nothing.

use std::{collections::BTreeMap, sync::Arc};

use crate::{
    admission::scope_guard,
    coverage::{self, never_in_scope},
    crd::{Enforcement, ResidencyPolicy},
};

/// Pod Security Admission's namespace label for the enforced level.
pub const ENFORCE_LABEL: &str = "pod-security.kubernetes.io/enforce";

/// Pod Security Admission refuses host access in a namespace with these labels: the
/// enforced level is set and is not `privileged`. An invalid level counts, as Pod
/// Security Admission enforces `restricted` for it; the version label does not matter,
/// as every version of `baseline` refuses host namespaces, privileged containers, added
/// capabilities and `hostPath` volumes.
pub fn refuses_host_access(labels: &BTreeMap<String, String>) -> bool {
    labels
        .get(ENFORCE_LABEL)
        .is_some_and(|level| level != "privileged")
}

/// Does the policy hold every pod of its namespaces inside its enclave: enforcing, and
/// no pod selector that could leave some out.
fn holds_every_pod(policy: &ResidencyPolicy, enclave: &str) -> bool {
    policy.spec.enclave == enclave
        && policy.spec.enforcement == Enforcement::Enforce
        && scope_guard::guarded_selector(policy).is_none()
}

/// The namespaces whose pods may take host access on the enclave's nodes, by name:
/// every namespace but those never in scope, those an enforcing policy of the enclave
/// holds whole, and those where Pod Security Admission refuses host access.
pub fn unguarded_namespaces(
    enclave: &str,
    policies: &[Arc<ResidencyPolicy>],
    namespaces: &BTreeMap<String, BTreeMap<String, String>>,
) -> Vec<String> {
    let holding: Vec<&ResidencyPolicy> = policies
        .iter()
        .map(|p| p.as_ref())
        .filter(|p| holds_every_pod(p, enclave))
        .collect();
    namespaces
        .iter()
        .filter(|(name, labels)| {
            !never_in_scope(name)
                && !refuses_host_access(labels)
                && !holding
                    .iter()
                    .any(|p| coverage::covers_namespace(p, name, labels))
        })
        .map(|(name, _)| name.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(name: &str, enclave: &str, enforcement: &str, extra: &str) -> Arc<ResidencyPolicy> {
        Arc::new(serde_yaml::from_str(&format!(
            "apiVersion: enclave.dev/v1alpha1\nkind: ResidencyPolicy\nmetadata: {{name: {name}}}\nspec:\n  enclave: {enclave}\n  enforcement: {enforcement}\n  match:\n    namespaceSelector: {{matchLabels: {{data: eu}}}}\n{extra}"
        ))
        .expect("fixture"))
    }

    fn namespaces(items: &[(&str, &[(&str, &str)])]) -> BTreeMap<String, BTreeMap<String, String>> {
        items
            .iter()
            .map(|(name, labels)| {
                (
                    name.to_string(),
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                )
            })
            .collect()
    }

    #[test]
    fn only_a_level_other_than_privileged_refuses_host_access() {
        let labels = |v: Option<&str>| -> BTreeMap<String, String> {
            v.map(|v| (ENFORCE_LABEL.to_string(), v.to_string()))
                .into_iter()
                .collect()
        };
        assert!(!refuses_host_access(&labels(None)));
        assert!(!refuses_host_access(&labels(Some("privileged"))));
        assert!(refuses_host_access(&labels(Some("baseline"))));
        assert!(refuses_host_access(&labels(Some("restricted"))));
        // Pod Security Admission enforces `restricted` for a level it cannot parse.
        assert!(refuses_host_access(&labels(Some("Baseline"))));
        assert!(refuses_host_access(&labels(Some(""))));
        // Only the enforced level counts: warnings and audits refuse nothing.
        let warn_only: BTreeMap<String, String> = [(
            "pod-security.kubernetes.io/warn".to_string(),
            "baseline".to_string(),
        )]
        .into();
        assert!(!refuses_host_access(&warn_only));
    }

    #[test]
    fn namespaces_the_enclave_holds_whole_or_pod_security_guards_are_not_listed() {
        let all = namespaces(&[
            ("default", &[]),
            ("kube-system", &[]),
            ("enclave-system", &[]),
            ("monitoring", &[(ENFORCE_LABEL, "privileged")]),
            ("team-a", &[(ENFORCE_LABEL, "baseline")]),
            ("shop", &[("data", "eu")]),
            (
                "shop-guarded",
                &[("data", "eu"), (ENFORCE_LABEL, "restricted")],
            ),
        ]);
        let enforced = policy("p", "eu", "Enforce", "");
        assert_eq!(
            unguarded_namespaces("eu", &[enforced], &all),
            ["default", "monitoring"],
        );
        // No policy: every namespace but the control plane's, the operator's and the
        // guarded ones.
        assert_eq!(
            unguarded_namespaces("eu", &[], &all),
            ["default", "monitoring", "shop"],
        );
    }

    #[test]
    fn a_namespace_is_held_whole_only_by_an_enforcing_policy_of_the_enclave_without_pod_selector() {
        let all = namespaces(&[("shop", &[("data", "eu")])]);
        let listed = |p: Arc<ResidencyPolicy>| unguarded_namespaces("eu", &[p], &all);
        assert!(listed(policy("p", "eu", "Enforce", "")).is_empty());
        // Audit places nothing: the namespace's pods may run anywhere.
        assert_eq!(listed(policy("p", "eu", "Audit", "")), ["shop"]);
        // Another enclave's policy holds them on other nodes, which may be ours too.
        assert_eq!(listed(policy("p", "us", "Enforce", "")), ["shop"]);
        // A pod selector leaves the namespace's other pods free to run anywhere.
        let selected = policy(
            "p",
            "eu",
            "Enforce",
            "    podSelector: {matchLabels: {tier: data}}\n",
        );
        assert_eq!(listed(selected), ["shop"]);
        // An empty pod selector selects every pod.
        let empty = policy("p", "eu", "Enforce", "    podSelector: {}\n");
        assert!(listed(empty).is_empty());
    }
}
