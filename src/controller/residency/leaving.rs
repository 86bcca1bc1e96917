//! Leaving scope, recorded: a namespace that a policy covered and no longer covers has
//! lost admission, the access gate and the fence at once, so the moment is evidence. Each
//! such namespace becomes a `NamespaceLeftScope` decision and a Warning Event on the
//! policy, and each fence NetworkPolicy the operator removes a `FenceRemoved` decision
//! naming why ([`removal`]).
//!
//! What was in scope is remembered per policy by the leader, from one pass to the next
//! ([`ScopeMemory`]); a new leader starts from what it sees, so a namespace that left
//! while no operator led is recorded by the removal of its fence (the fence is in the
//! cluster, not in memory), not as leaving. Pure decisions, memory at the edge.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::Mutex,
};

use kube::ResourceExt;

use crate::{crd::NetworkIsolation, crd::ResidencyPolicy, scope};

/// A namespace that left a policy's scope, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Left {
    pub namespace: String,
    /// CamelCase, for the record and the Event.
    pub reason: &'static str,
    pub message: String,
}

/// What a policy covered at its last pass.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Seen {
    pub generation: Option<i64>,
    pub namespaces: BTreeSet<String>,
}

fn labels_text(labels: &BTreeMap<String, String>) -> String {
    if labels.is_empty() {
        return "none".into();
    }
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The namespaces `before` held that `now` does not, each with why. Pure.
pub fn left(
    policy: &ResidencyPolicy,
    before: &Seen,
    now: &BTreeSet<String>,
    namespaces: &BTreeMap<String, BTreeMap<String, String>>,
    operator_namespace: &str,
) -> Vec<Left> {
    let name = policy.name_any();
    let consequence = "admission, the access gate and the fence no longer cover its pods";
    before
        .namespaces
        .difference(now)
        .map(|namespace| {
            let (reason, why) = match namespaces.get(namespace) {
                None => ("NamespaceDeleted", format!("namespace {namespace} was deleted")),
                Some(_) if namespace == operator_namespace => (
                    "OperatorNamespace",
                    format!("namespace {namespace} is the operator's own, never in scope"),
                ),
                Some(labels) if before.generation != policy.metadata.generation => (
                    "PolicyChanged",
                    format!(
                        "ResidencyPolicy {name} changed (generation {} to {}) and no longer selects namespace {namespace} (labels: {})",
                        before.generation.unwrap_or_default(),
                        policy.metadata.generation.unwrap_or_default(),
                        labels_text(labels)
                    ),
                ),
                Some(labels) => (
                    "NamespaceRelabelled",
                    format!(
                        "namespace {namespace}'s labels no longer match the namespaceSelector of ResidencyPolicy {name} (labels now: {})",
                        labels_text(labels)
                    ),
                ),
            };
            Left {
                namespace: namespace.clone(),
                reason,
                message: format!("{why}: {consequence}"),
            }
        })
        .collect()
}

/// Why a NetworkPolicy of the fence in `namespace` is no longer wanted. Pure.
pub fn removal(
    policy: &ResidencyPolicy,
    namespace: &str,
    namespaces: &BTreeMap<String, BTreeMap<String, String>>,
    operator_namespace: &str,
) -> (&'static str, String) {
    let name = policy.name_any();
    if policy.spec.network.isolation == NetworkIsolation::None {
        return (
            "IsolationNone",
            format!(
                "ResidencyPolicy {name} asks for no network isolation (spec.network.isolation: None)"
            ),
        );
    }
    match namespaces.get(namespace) {
        None => (
            "NamespaceDeleted",
            format!("namespace {namespace} was deleted"),
        ),
        Some(_) if namespace == operator_namespace => (
            "OperatorNamespace",
            format!("namespace {namespace} is the operator's own, never fenced"),
        ),
        Some(labels) if !scope::covers_namespace(policy, namespace, labels) => (
            "NamespaceLeftScope",
            format!(
                "namespace {namespace} is no longer in the scope of ResidencyPolicy {name} (labels now: {})",
                labels_text(labels)
            ),
        ),
        Some(_) => (
            "NoLongerPartOfTheFence",
            format!(
                "the fence of ResidencyPolicy {name} no longer has this NetworkPolicy (renamed or replaced)"
            ),
        ),
    }
}

/// What each policy (by UID) covered at its last pass.
#[derive(Default)]
pub struct ScopeMemory(Mutex<HashMap<String, Seen>>);

impl ScopeMemory {
    /// Remembers what `policy` covers now and returns the namespaces that left since
    /// its last pass (none at the first pass this process sees).
    pub fn observe(
        &self,
        policy: &ResidencyPolicy,
        now: &BTreeSet<String>,
        namespaces: &BTreeMap<String, BTreeMap<String, String>>,
        operator_namespace: &str,
    ) -> Vec<Left> {
        let uid = policy.uid().unwrap_or_default();
        let next = Seen {
            generation: policy.metadata.generation,
            namespaces: now.clone(),
        };
        let mut memory = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match memory.insert(uid, next) {
            Some(before) => left(policy, &before, now, namespaces, operator_namespace),
            None => Vec::new(),
        }
    }

    /// Forgets policies that are gone.
    pub fn retain(&self, live: &BTreeSet<String>) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|uid, _| live.contains(uid));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(generation: i64, isolation: &str) -> ResidencyPolicy {
        serde_yaml::from_str(&format!(
            "apiVersion: enclave.dev/v1alpha1\nkind: ResidencyPolicy\nmetadata: {{name: p, uid: u1, generation: {generation}}}\nspec:\n  enclave: eu\n  match:\n    namespaceSelector: {{matchLabels: {{tier: eu}}}}\n  network: {{isolation: {isolation}}}\n"
        ))
        .expect("a policy")
    }

    fn namespaces(list: &[(&str, &[(&str, &str)])]) -> BTreeMap<String, BTreeMap<String, String>> {
        list.iter()
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

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn namespaces_that_leave_are_named_with_why_and_the_first_pass_records_nothing() {
        let memory = ScopeMemory::default();
        let all = namespaces(&[("shop", &[("tier", "eu")]), ("db", &[("tier", "eu")])]);
        let p1 = policy(1, "Enclave");
        assert!(
            memory
                .observe(&p1, &set(&["shop", "db"]), &all, "enclave-system")
                .is_empty()
        );
        assert!(
            memory
                .observe(&p1, &set(&["shop", "db"]), &all, "enclave-system")
                .is_empty()
        );

        let relabelled = namespaces(&[("shop", &[("tier", "us")]), ("db", &[("tier", "eu")])]);
        let left = memory.observe(&p1, &set(&["db"]), &relabelled, "enclave-system");
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].namespace, "shop");
        assert_eq!(left[0].reason, "NamespaceRelabelled");
        assert!(
            left[0].message.contains("labels now: tier=us"),
            "{}",
            left[0].message
        );
        assert!(
            left[0].message.contains("no longer cover"),
            "{}",
            left[0].message
        );

        let gone = namespaces(&[]);
        let left = memory.observe(&p1, &set(&[]), &gone, "enclave-system");
        assert_eq!(left[0].reason, "NamespaceDeleted");

        let p2 = policy(2, "Enclave");
        memory.observe(&p2, &set(&["db"]), &all, "enclave-system");
        let p3 = policy(3, "Enclave");
        let left = memory.observe(&p3, &set(&[]), &all, "enclave-system");
        assert_eq!(left[0].reason, "PolicyChanged");
    }

    #[test]
    fn a_fence_removal_says_why() {
        let all = namespaces(&[
            ("shop", &[("tier", "us")]),
            ("db", &[("tier", "eu")]),
            ("enclave-system", &[("tier", "eu")]),
        ]);
        let p = policy(1, "Enclave");
        assert_eq!(
            removal(&p, "shop", &all, "enclave-system").0,
            "NamespaceLeftScope"
        );
        assert_eq!(
            removal(&p, "gone", &all, "enclave-system").0,
            "NamespaceDeleted"
        );
        assert_eq!(
            removal(&p, "enclave-system", &all, "enclave-system").0,
            "OperatorNamespace"
        );
        assert_eq!(
            removal(&p, "db", &all, "enclave-system").0,
            "NoLongerPartOfTheFence"
        );
        assert_eq!(
            removal(&policy(1, "None"), "db", &all, "enclave-system").0,
            "IsolationNone"
        );
    }
}
