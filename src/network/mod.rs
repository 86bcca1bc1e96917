//! Network fencing of the pods a ResidencyPolicy covers, and the check that the fence
//! still holds.
//!
//! - [`fence`] builds the NetworkPolicies the operator owns: a default deny for the
//!   in-scope pods of each in-scope namespace, and one allow policy that reopens only the
//!   enclave's own namespaces, its gateway, cluster DNS and the allowed egress CIDRs.
//! - [`reachability`] evaluates every NetworkPolicy in the cluster, the tenants' as well
//!   as ours, and reports which in-scope pods can still talk to something outside the
//!   enclave and which policy opens that path. NetworkPolicies are additive, so a
//!   tenant's allow rule reopens what the fence closes; only evaluating the union, as a
//!   CNI does, finds that.
//!
//! Both halves are pure functions of their inputs, so that every verdict can be pinned
//! down by a fixture. The label selector matching they share lives here.

pub mod fence;
pub mod reachability;

pub use fence::{
    ALLOW_NAME_PREFIX, DENY_NAME_PREFIX, FenceError, FenceInput, MANAGED_BY_LABEL,
    MANAGED_BY_VALUE, POLICY_LABEL, bounded_name, fence_policies, policy_label_value,
};
pub use reachability::{
    DeclaredPort, Direction, EnclaveBoundary, Leak, MAX_LEAKS_PER_GROUP, NamespaceInfo,
    OutsidePeer, PodGroup, PodInfo, PolicyRef, PortSet, ReachabilityReport, World, evaluate,
};

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde::Deserialize;

/// The label the API server puts on every namespace with the namespace's own name. It
/// is the only namespace label a tenant cannot change, so peers that must mean one
/// namespace (cluster DNS) select it by this label.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// The pods through which traffic may cross the enclave boundary: pods matching
/// `pod_selector` (all pods when absent) in namespaces matching `namespace_selector`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnclaveGateway {
    /// Namespaces of the gateway pods.
    pub namespace_selector: LabelSelector,
    /// The gateway pods within those namespaces; absent means every pod there.
    #[serde(default)]
    pub pod_selector: Option<LabelSelector>,
}

/// The cluster DNS servers. In-scope pods must resolve names, so the fence lets them
/// reach these pods, but only on the DNS port: anything else sent to them would leave
/// the enclave like traffic to any other outside pod.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DnsPeer {
    /// Namespaces of the DNS pods; by default `kube-system`, selected by its name label.
    pub namespace_selector: LabelSelector,
    /// The DNS pods within those namespaces; absent means every pod there.
    pub pod_selector: Option<LabelSelector>,
    /// The port the DNS pods listen on (after Service translation), over UDP and TCP.
    pub port: u16,
}

impl Default for DnsPeer {
    /// CoreDNS as most distributions install it: pods labelled `k8s-app: kube-dns` in
    /// `kube-system`, port 53.
    fn default() -> Self {
        Self {
            namespace_selector: LabelSelector {
                match_labels: Some(BTreeMap::from([(
                    NAMESPACE_NAME_LABEL.to_string(),
                    "kube-system".to_string(),
                )])),
                match_expressions: None,
            },
            pod_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(
                    "k8s-app".to_string(),
                    "kube-dns".to_string(),
                )])),
                match_expressions: None,
            }),
            port: 53,
        }
    }
}

/// The transport protocols a NetworkPolicy port can name.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
pub enum Protocol {
    /// The NetworkPolicy and container port default.
    #[default]
    #[serde(rename = "TCP")]
    Tcp,
    #[serde(rename = "UDP")]
    Udp,
    #[serde(rename = "SCTP")]
    Sctp,
}

impl Protocol {
    /// Every protocol, in the order reports list them.
    pub const ALL: [Protocol; 3] = [Protocol::Tcp, Protocol::Udp, Protocol::Sctp];

    /// The protocol as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        }
    }

    /// Parses the API spelling (case-sensitive, as the API server validates it). `None`
    /// for anything else, which callers treat as matching no traffic.
    pub fn parse(value: &str) -> Option<Protocol> {
        Protocol::ALL.into_iter().find(|p| p.as_str() == value)
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Does `selector` match these labels? Standard `metav1.LabelSelector` semantics:
/// every matchLabels entry AND every matchExpression must hold, and an empty selector
/// matches everything. An operator the API does not define, or a requirement with the
/// wrong number of values, matches nothing, so a malformed selector can only narrow
/// what a policy opens, never widen what the fence or the gateway lets in.
fn selector_matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let labels_hold = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(key, value)| labels.get(key) == Some(value));
    labels_hold
        && selector.match_expressions.iter().flatten().all(|req| {
            let values = req.values.as_deref().unwrap_or_default();
            let value = labels.get(&req.key);
            match (req.operator.as_str(), values.is_empty()) {
                ("In", false) => value.is_some_and(|v| values.contains(v)),
                ("NotIn", false) => value.is_none_or(|v| !values.contains(v)),
                ("Exists", true) => value.is_some(),
                ("DoesNotExist", true) => value.is_none(),
                _ => false,
            }
        })
}

/// An optional selector where absence means "everything" (a NetworkPolicy's or a
/// gateway's pod selector).
fn optional_selector_matches(
    selector: Option<&LabelSelector>,
    labels: &BTreeMap<String, String>,
) -> bool {
    selector.is_none_or(|s| selector_matches(s, labels))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn expression(key: &str, operator: &str, values: &[&str]) -> LabelSelector {
        LabelSelector {
            match_labels: None,
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: key.to_string(),
                operator: operator.to_string(),
                values: (!values.is_empty())
                    .then(|| values.iter().map(|v| v.to_string()).collect()),
            }]),
        }
    }

    #[test]
    fn empty_selector_matches_everything() {
        assert!(selector_matches(&LabelSelector::default(), &labels(&[])));
        assert!(selector_matches(
            &LabelSelector::default(),
            &labels(&[("a", "b")])
        ));
    }

    #[test]
    fn match_labels_and_expressions_must_all_hold() {
        let mut selector = expression("tier", "In", &["web", "api"]);
        selector.match_labels = Some(labels(&[("team", "x")]));
        assert!(selector_matches(
            &selector,
            &labels(&[("team", "x"), ("tier", "api")])
        ));
        assert!(!selector_matches(&selector, &labels(&[("tier", "api")])));
        assert!(!selector_matches(
            &selector,
            &labels(&[("team", "x"), ("tier", "db")])
        ));
    }

    #[test]
    fn operators_follow_the_api() {
        let present = labels(&[("k", "v")]);
        let absent = labels(&[]);
        assert!(selector_matches(&expression("k", "In", &["v"]), &present));
        assert!(!selector_matches(&expression("k", "In", &["v"]), &absent));
        assert!(!selector_matches(
            &expression("k", "NotIn", &["v"]),
            &present
        ));
        assert!(
            selector_matches(&expression("k", "NotIn", &["v"]), &absent),
            "NotIn matches an absent key"
        );
        assert!(selector_matches(&expression("k", "Exists", &[]), &present));
        assert!(!selector_matches(&expression("k", "Exists", &[]), &absent));
        assert!(selector_matches(
            &expression("k", "DoesNotExist", &[]),
            &absent
        ));
        assert!(!selector_matches(
            &expression("k", "DoesNotExist", &[]),
            &present
        ));
    }

    #[test]
    fn malformed_requirements_match_nothing() {
        let present = labels(&[("k", "v")]);
        let absent = labels(&[]);
        for selector in [
            expression("k", "Equals", &["v"]),
            expression("k", "In", &[]),
            expression("k", "NotIn", &[]),
            expression("k", "Exists", &["v"]),
            expression("k", "DoesNotExist", &["v"]),
        ] {
            assert!(!selector_matches(&selector, &present), "{selector:?}");
            assert!(!selector_matches(&selector, &absent), "{selector:?}");
        }
    }

    #[test]
    fn absent_optional_selector_matches_everything() {
        assert!(optional_selector_matches(None, &labels(&[("a", "b")])));
        let selector = expression("a", "In", &["c"]);
        assert!(!optional_selector_matches(
            Some(&selector),
            &labels(&[("a", "b")])
        ));
    }

    #[test]
    fn protocols_parse_case_sensitively() {
        assert_eq!(Protocol::parse("SCTP"), Some(Protocol::Sctp));
        assert_eq!(Protocol::parse("tcp"), None);
        assert_eq!(Protocol::default(), Protocol::Tcp);
    }
}
