//! The API server rejects invalid resources with a message that names the field: the
//! schema and CEL rules in the generated CRDs, checked against a real kube-apiserver.

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::common::*;

/// A fresh name per object: the tests run in parallel against one API server.
fn unique(prefix: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!("{prefix}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

fn enclave(spec: &str) -> String {
    let name = unique("validation-enclave");
    format!(
        "apiVersion: enclave.dev/v1alpha1\nkind: DataEnclave\nmetadata:\n  name: {name}\nspec:\n{spec}"
    )
}

fn policy(spec: &str) -> String {
    let name = unique("validation-policy");
    format!(
        "apiVersion: enclave.dev/v1alpha1\nkind: ResidencyPolicy\nmetadata:\n  name: {name}\nspec:\n{spec}"
    )
}

const SITE: &str = "  - name: dublin\n    nodeSelector: {matchLabels: {node-restriction.kubernetes.io/enclave-site: dublin}}\n";

/// Asserts that the rejection names every one of `needles`.
fn rejected_with(yaml: &str, needles: &[&str]) {
    let error = apply_rejected(yaml);
    for needle in needles {
        assert!(
            error.contains(needle),
            "expected {needle:?} in the API server's error:\n{error}"
        );
    }
}

#[test]
fn a_valid_enclave_and_policy_are_accepted() {
    // The baseline: without it, every rejection below could be a broken CRD.
    let enclave = enclave(&format!(
        "  jurisdiction: EU\n  sites:\n{SITE}  storage: {{storageClassNames: [eu-dublin-ssd]}}\n"
    ));
    let policy = policy(&format!(
        "{MATCH}  network: {{allowEgressCIDRs: [10.0.0.0/8]}}\n"
    ));
    apply(&enclave);
    apply(&policy);
    for object in [policy, enclave] {
        let out = kubectl(&["delete", "-f", "-"], Some(&object));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn enclave_without_sites_is_rejected() {
    rejected_with(
        &enclave("  jurisdiction: EU\n  sites: []\n"),
        &["spec.sites"],
    );
    rejected_with(
        &enclave("  jurisdiction: EU\n"),
        &["spec.sites", "Required"],
    );
}

#[test]
fn duplicate_site_names_are_rejected() {
    rejected_with(
        &enclave(&format!("  jurisdiction: EU\n  sites:\n{SITE}{SITE}")),
        &["spec.sites", "site names must be unique"],
    );
}

#[test]
fn empty_site_selector_is_rejected() {
    rejected_with(
        &enclave("  jurisdiction: EU\n  sites:\n  - name: everywhere\n    nodeSelector: {}\n"),
        &[
            "spec.sites[0].nodeSelector",
            "an empty selector would put every node in the enclave",
        ],
    );
}

#[test]
fn unknown_selector_operator_is_rejected() {
    rejected_with(
        &enclave(
            "  jurisdiction: EU\n  sites:\n  - name: dublin\n    nodeSelector: {matchExpressions: [{key: a, operator: Like, values: [b]}]}\n",
        ),
        &[
            "spec.sites[0].nodeSelector.matchExpressions[0].operator",
            "supported values",
            "\"DoesNotExist\"",
        ],
    );
}

#[test]
fn bad_site_name_and_empty_jurisdiction_are_rejected() {
    rejected_with(
        &enclave(
            "  jurisdiction: EU\n  sites:\n  - name: Dublin_1\n    nodeSelector: {matchLabels: {a: b}}\n",
        ),
        &["spec.sites[0].name"],
    );
    rejected_with(
        &enclave(&format!("  jurisdiction: ''\n  sites:\n{SITE}")),
        &["spec.jurisdiction", "must not be empty"],
    );
}

#[test]
fn duplicate_storage_classes_are_rejected() {
    rejected_with(
        &enclave(&format!(
            "  jurisdiction: EU\n  sites:\n{SITE}  storage: {{storageClassNames: [a, a]}}\n"
        )),
        &["spec.storage.storageClassNames", "must be unique"],
    );
}

const MATCH: &str =
    "  enclave: eu\n  match: {namespaceSelector: {matchLabels: {enclave.dev/residency: eu}}}\n";

#[test]
fn unknown_enforcement_mode_is_rejected() {
    rejected_with(
        &policy(&format!("{MATCH}  enforcement: Block\n")),
        &["spec.enforcement", "Enforce", "Audit"],
    );
}

#[test]
fn non_positive_rates_are_rejected() {
    rejected_with(
        &policy(&format!(
            "{MATCH}  migration: {{maxEvictionsPerMinute: 0}}\n"
        )),
        &["spec.migration.maxEvictionsPerMinute"],
    );
    rejected_with(
        &policy(&format!("{MATCH}  migration: {{maxConcurrent: -1}}\n")),
        &["spec.migration.maxConcurrent"],
    );
}

#[test]
fn policy_scope_and_preferences_are_checked() {
    rejected_with(
        &policy(
            "  enclave: eu\n  match: {namespaceSelector: {matchExpressions: [{key: team, operator: Matches, values: [a]}]}}\n",
        ),
        &[
            "spec.match.namespaceSelector.matchExpressions[0].operator",
            "supported values",
        ],
    );
    rejected_with(
        &policy("  enclave: eu\n  match: {namespaceSelector: {}}\n"),
        &[
            "spec.match.namespaceSelector",
            "would cover every namespace",
        ],
    );
    rejected_with(
        &policy(&format!(
            "{MATCH}  placement: {{preferredSites: [{{site: norway, weight: 101}}]}}\n"
        )),
        &["spec.placement.preferredSites[0].weight"],
    );
    rejected_with(
        &policy(&format!(
            "{MATCH}  network: {{allowEgressCIDRs: [not-a-cidr]}}\n"
        )),
        &["spec.network.allowEgressCIDRs", "CIDR"],
    );
}

/// Row 9 of the hardening issue: label keys, values and operators are checked as
/// Kubernetes checks them, so an enclave no node could ever match is refused when it is
/// applied, naming the field.
#[test]
fn labels_are_checked_as_kubernetes_checks_them() {
    for (selector, needles) in [
        (
            "{matchLabels: {node-restriction.kubernetes.io/enclave-site: dublín}}",
            &["matchLabels", "dublín"][..],
        ),
        (
            "{matchExpressions: [{key: sité, operator: Exists}]}",
            &["matchExpressions[0].key"][..],
        ),
        (
            "{matchExpressions: [{key: site, operator: In, values: [\"a b\"]}]}",
            &["values[0]"][..],
        ),
        (
            "{matchLabels: {sité: dublin}}",
            &["matchLabels keys must be label keys", "sité"][..],
        ),
        (
            "{matchExpressions: [{key: site, operator: In}]}",
            &["values must be given for In and NotIn"][..],
        ),
    ] {
        rejected_with(
            &enclave(&format!(
                "  jurisdiction: EU\n  sites: [{{name: x, nodeSelector: {selector}}}]\n"
            )),
            needles,
        );
    }
}
