//! The NetworkPolicies the operator owns for one ResidencyPolicy: the fence.
//!
//! For each in-scope namespace there are two objects:
//! - `enclave-fence-deny-<policy>` isolates the in-scope pods for ingress and egress
//!   and allows nothing, so that the pods are fenced even while the allow policy is
//!   missing or being replaced;
//! - `enclave-fence-allow-<policy>` reopens the paths that stay inside the enclave:
//!   to and from the in-scope pods of the policy's namespaces (namespace selector AND
//!   pod selector) and the gateway pods, to the cluster DNS pods on the DNS port, and to
//!   the allowed egress CIDRs.
//!
//! NetworkPolicies are additive, so the fence cannot stop a tenant's own policy from
//! reopening a path; [`super::reachability`] finds those. The builder is pure and its
//! output is deterministic (sorted namespaces, sorted CIDRs), so that the reconciler
//! can compare desired with actual objects without spurious updates.

use std::collections::{BTreeMap, BTreeSet};

use ipnet::IpNet;
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Deserialize;

use super::{DnsPeer, EnclaveGateway, Protocol};

/// The standard label naming the tool that manages an object.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Our value of [`MANAGED_BY_LABEL`]; the reconciler lists its objects by it.
pub const MANAGED_BY_VALUE: &str = "enclave-operator";
/// The label naming the ResidencyPolicy a fence object belongs to (see
/// [`policy_label_value`] for names longer than a label value may be).
pub const POLICY_LABEL: &str = "enclave.dev/policy";
/// Name prefix of the default-deny object.
pub const DENY_NAME_PREFIX: &str = "enclave-fence-deny-";
/// Name prefix of the allow object.
pub const ALLOW_NAME_PREFIX: &str = "enclave-fence-allow-";

/// Longest object name the API accepts for a NetworkPolicy (a DNS subdomain).
const MAX_OBJECT_NAME: usize = 253;
/// Longest label value the API accepts.
const MAX_LABEL_VALUE: usize = 63;
/// Hex digits of the hash that stands for the cut-off part of a long name: 40 bits, so a
/// collision between two policies of one cluster is not a practical concern.
const NAME_HASH_DIGITS: usize = 10;

/// Everything the fence of one ResidencyPolicy depends on.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FenceInput {
    /// Name of the ResidencyPolicy (a DNS subdomain, up to 253 characters).
    pub policy_name: String,
    /// The policy's namespace selector: the in-scope namespaces, whose in-scope pods
    /// (with `pod_selector`) the fenced pods may talk to.
    pub namespace_selector: LabelSelector,
    /// The policy's pod selector; absent means every pod of an in-scope namespace.
    #[serde(default)]
    pub pod_selector: Option<LabelSelector>,
    /// The enclave's gateway, if it has one.
    #[serde(default)]
    pub gateway: Option<EnclaveGateway>,
    /// Extra egress destinations, as CIDRs (validated by the CRD's schema).
    #[serde(default, rename = "allowedEgressCIDRs")]
    pub allowed_egress_cidrs: Vec<String>,
    /// The cluster DNS pods.
    #[serde(default)]
    pub dns: DnsPeer,
    /// Names of the in-scope namespaces (those matching `namespace_selector` now).
    #[serde(default)]
    pub namespaces: Vec<String>,
}

/// Why no fence could be built. Both come from input the API server should already have
/// refused, so they point at a bug or a bypassed schema rather than at a user mistake.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FenceError {
    /// The policy name is not a DNS subdomain, so neither object names nor the policy
    /// label could be derived from it.
    #[error("policy name {0:?} is not a DNS subdomain")]
    InvalidPolicyName(String),
    /// An allowed egress CIDR does not parse.
    #[error("allowed egress CIDR {cidr:?} is not a CIDR: {reason}")]
    InvalidCidr { cidr: String, reason: String },
}

/// The desired fence objects for `input`: for each in-scope namespace in name order,
/// the default deny and then the allow policy. No owner references: the caller adds
/// them, since only it knows the ResidencyPolicy's uid.
pub fn fence_policies(input: &FenceInput) -> Result<Vec<NetworkPolicy>, FenceError> {
    if !is_dns_subdomain(&input.policy_name) {
        return Err(FenceError::InvalidPolicyName(input.policy_name.clone()));
    }
    let cidrs = normalized_cidrs(&input.allowed_egress_cidrs)?;
    let labels = BTreeMap::from([
        (MANAGED_BY_LABEL.to_string(), MANAGED_BY_VALUE.to_string()),
        (
            POLICY_LABEL.to_string(),
            policy_label_value(&input.policy_name),
        ),
    ]);
    let deny_name = bounded_name(DENY_NAME_PREFIX, &input.policy_name, MAX_OBJECT_NAME);
    let allow_name = bounded_name(ALLOW_NAME_PREFIX, &input.policy_name, MAX_OBJECT_NAME);
    let pod_selector = input.pod_selector.clone().unwrap_or_default();
    let allow_spec = allow_spec(input, &pod_selector, &cidrs);
    let deny_spec = NetworkPolicySpec {
        pod_selector: Some(pod_selector),
        policy_types: Some(both_policy_types()),
        ingress: None,
        egress: None,
    };

    let namespaces: BTreeSet<&str> = input.namespaces.iter().map(String::as_str).collect();
    let mut policies = Vec::with_capacity(namespaces.len() * 2);
    for namespace in namespaces {
        let metadata = |name: &str| ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            labels: Some(labels.clone()),
            ..ObjectMeta::default()
        };
        policies.push(NetworkPolicy {
            metadata: metadata(&deny_name),
            spec: Some(deny_spec.clone()),
        });
        policies.push(NetworkPolicy {
            metadata: metadata(&allow_name),
            spec: Some(allow_spec.clone()),
        });
    }
    Ok(policies)
}

/// The value of [`POLICY_LABEL`] for a policy: its name when that fits a label value
/// (63 characters), else the name cut short with a hash of the whole name appended, so
/// that two long names sharing a prefix still get different values.
pub fn policy_label_value(policy_name: &str) -> String {
    bounded_name("", policy_name, MAX_LABEL_VALUE)
}

/// `prefix` + `name` when that is at most `max` bytes; otherwise as much of it as fits
/// followed by `-` and a hash of the whole untruncated string, `max` bytes at most.
/// Deterministic across runs and Rust versions (FNV-1a, not `std`'s hasher), because
/// the names it makes are stored in the cluster and compared on every reconcile. The
/// cut never ends on `-` or `.`, so a valid DNS subdomain stays one.
pub fn bounded_name(prefix: &str, name: &str, max: usize) -> String {
    let full = format!("{prefix}{name}");
    if full.len() <= max {
        return full;
    }
    let digest = format!("{:016x}", fnv1a_64(full.as_bytes()));
    let suffix = &digest[..NAME_HASH_DIGITS.min(max)];
    let Some(room) = max.checked_sub(NAME_HASH_DIGITS + 1) else {
        return suffix.to_string();
    };
    let head = head_within(&full, room).trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
    if head.is_empty() {
        suffix.to_string()
    } else {
        format!("{head}-{suffix}")
    }
}

/// The longest prefix of `text` of at most `max_bytes` bytes that ends on a character
/// boundary (names are ASCII when valid, but slicing must not panic when they are not).
fn head_within(text: &str, max_bytes: usize) -> &str {
    let end = text
        .char_indices()
        .map(|(i, c)| i + c.len_utf8())
        .take_while(|end| *end <= max_bytes)
        .last()
        .unwrap_or(0);
    &text[..end]
}

/// 64-bit FNV-1a: tiny, specified, and stable, which is all a name suffix needs.
fn fnv1a_64(bytes: &[u8]) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes.iter().fold(OFFSET_BASIS, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(PRIME)
    })
}

/// RFC 1123 subdomain as the API server checks object names: at most 253 characters,
/// dot-separated labels of lowercase letters, digits and `-`, each starting and ending
/// with a letter or digit.
fn is_dns_subdomain(name: &str) -> bool {
    name.len() <= MAX_OBJECT_NAME
        && name.split('.').all(|label| {
            let bytes = label.as_bytes();
            let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
            match (bytes.first(), bytes.last()) {
                (Some(first), Some(last)) => {
                    alnum(first) && alnum(last) && bytes.iter().all(|b| alnum(b) || *b == b'-')
                }
                _ => false,
            }
        })
}

/// The allowed CIDRs parsed, reduced to their network address (`10.0.0.1/8` is the
/// range `10.0.0.0/8`, which is what every CNI applies), without repeats and in address
/// order, so that reordering the ResidencyPolicy's list does not rewrite the fence.
fn normalized_cidrs(cidrs: &[String]) -> Result<BTreeSet<IpNet>, FenceError> {
    cidrs
        .iter()
        .map(|cidr| {
            cidr.trim()
                .parse::<IpNet>()
                .map(|net| net.trunc())
                .map_err(|e| FenceError::InvalidCidr {
                    cidr: cidr.clone(),
                    reason: e.to_string(),
                })
        })
        .collect()
}

fn both_policy_types() -> Vec<String> {
    vec!["Ingress".to_string(), "Egress".to_string()]
}

/// The allow policy's spec: the only paths the fence leaves open.
fn allow_spec(
    input: &FenceInput,
    pod_selector: &LabelSelector,
    cidrs: &BTreeSet<IpNet>,
) -> NetworkPolicySpec {
    // The policy's own in-scope pods (its namespaces AND its pod selector) and the
    // gateway pods: both directions. A pod of a covered namespace that the pod selector
    // leaves out is outside the enclave (it is neither placed nor gated), so it is no
    // peer: a namespace-wide peer would let any unlabelled pod a tenant starts there
    // reach the data.
    let mut enclave_peers = vec![NetworkPolicyPeer {
        namespace_selector: Some(input.namespace_selector.clone()),
        pod_selector: input.pod_selector.clone(),
        ip_block: None,
    }];
    if let Some(gateway) = &input.gateway {
        enclave_peers.push(NetworkPolicyPeer {
            namespace_selector: Some(gateway.namespace_selector.clone()),
            pod_selector: gateway.pod_selector.clone(),
            ip_block: None,
        });
    }

    let mut egress = vec![
        NetworkPolicyEgressRule {
            to: Some(enclave_peers.clone()),
            ports: None,
        },
        NetworkPolicyEgressRule {
            to: Some(vec![NetworkPolicyPeer {
                namespace_selector: Some(input.dns.namespace_selector.clone()),
                pod_selector: input.dns.pod_selector.clone(),
                ip_block: None,
            }]),
            ports: Some(
                [Protocol::Udp, Protocol::Tcp]
                    .into_iter()
                    .map(|protocol| NetworkPolicyPort {
                        protocol: Some(protocol.as_str().to_string()),
                        port: Some(IntOrString::Int(i32::from(input.dns.port))),
                        end_port: None,
                    })
                    .collect(),
            ),
        },
    ];
    if !cidrs.is_empty() {
        egress.push(NetworkPolicyEgressRule {
            to: Some(
                cidrs
                    .iter()
                    .map(|cidr| NetworkPolicyPeer {
                        ip_block: Some(IPBlock {
                            cidr: cidr.to_string(),
                            except: None,
                        }),
                        ..NetworkPolicyPeer::default()
                    })
                    .collect(),
            ),
            ports: None,
        });
    }

    NetworkPolicySpec {
        pod_selector: Some(pod_selector.clone()),
        policy_types: Some(both_policy_types()),
        ingress: Some(vec![NetworkPolicyIngressRule {
            from: Some(enclave_peers),
            ports: None,
        }]),
        egress: Some(egress),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A fixture: the input and the exact objects expected, as they would be applied.
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    struct Fixture {
        input: FenceInput,
        expected: Vec<NetworkPolicy>,
    }

    fn check_fixture(name: &str, yaml: &str) {
        let fixture: Fixture =
            serde_yaml::from_str(yaml).unwrap_or_else(|e| panic!("{name}: bad fixture: {e}"));
        let actual = fence_policies(&fixture.input).expect("fence builds");
        if actual != fixture.expected {
            panic!(
                "{name}: fence differs from the fixture; built:\n{}",
                serde_yaml::to_string(&actual).expect("serializes")
            );
        }
        for policy in &actual {
            let name = policy.metadata.name.as_deref().expect("named");
            assert!(is_dns_subdomain(name), "{name} is not a DNS subdomain");
            for value in policy.metadata.labels.iter().flatten().map(|(_, v)| v) {
                assert!(value.len() <= MAX_LABEL_VALUE, "label value {value}");
            }
        }
    }

    #[test]
    fn fence_without_gateway() {
        check_fixture(
            "fence-no-gateway",
            include_str!("testdata/fence-no-gateway.yaml"),
        );
    }

    #[test]
    fn fence_with_gateway_and_cidrs() {
        check_fixture(
            "fence-gateway-cidrs",
            include_str!("testdata/fence-gateway-cidrs.yaml"),
        );
    }

    #[test]
    fn fence_with_pod_selector_and_custom_dns() {
        check_fixture(
            "fence-pod-selector",
            include_str!("testdata/fence-pod-selector.yaml"),
        );
    }

    #[test]
    fn fence_with_long_policy_name() {
        check_fixture(
            "fence-long-name",
            include_str!("testdata/fence-long-name.yaml"),
        );
    }

    #[test]
    fn no_namespaces_no_objects() {
        let input = FenceInput {
            policy_name: "eu".to_string(),
            namespace_selector: LabelSelector::default(),
            pod_selector: None,
            gateway: None,
            allowed_egress_cidrs: vec![],
            dns: DnsPeer::default(),
            namespaces: vec![],
        };
        assert_eq!(fence_policies(&input), Ok(vec![]));
    }

    #[test]
    fn invalid_input_is_refused() {
        let mut input = FenceInput {
            policy_name: "Not_A_Name".to_string(),
            namespace_selector: LabelSelector::default(),
            pod_selector: None,
            gateway: None,
            allowed_egress_cidrs: vec![],
            dns: DnsPeer::default(),
            namespaces: vec!["a".to_string()],
        };
        assert_eq!(
            fence_policies(&input),
            Err(FenceError::InvalidPolicyName("Not_A_Name".to_string()))
        );
        input.policy_name = String::new();
        assert!(fence_policies(&input).is_err());
        input.policy_name = "eu".to_string();
        input.allowed_egress_cidrs = vec!["10.0.0.0/33".to_string()];
        assert!(matches!(
            fence_policies(&input),
            Err(FenceError::InvalidCidr { .. })
        ));
    }

    #[test]
    fn cidrs_are_normalized_sorted_and_deduplicated() {
        let cidrs = normalized_cidrs(&[
            "192.168.1.7/24".to_string(),
            "10.0.0.0/8".to_string(),
            "2001:db8::1/32".to_string(),
            "192.168.1.0/24".to_string(),
        ])
        .expect("valid");
        let rendered: Vec<String> = cidrs.iter().map(ToString::to_string).collect();
        assert_eq!(rendered, ["10.0.0.0/8", "192.168.1.0/24", "2001:db8::/32"]);
    }

    #[test]
    fn bounded_name_keeps_short_names() {
        assert_eq!(bounded_name("p-", "eu", 253), "p-eu");
        let exact = "a".repeat(251);
        assert_eq!(bounded_name("p-", &exact, 253), format!("p-{exact}"));
    }

    #[test]
    fn bounded_name_cuts_long_names_with_a_stable_hash() {
        let long = "a".repeat(253);
        let name = bounded_name(DENY_NAME_PREFIX, &long, 253);
        assert_eq!(name.len(), 253);
        assert!(name.starts_with(DENY_NAME_PREFIX));
        assert_eq!(name, bounded_name(DENY_NAME_PREFIX, &long, 253));
        // Pinned: the name is stored in clusters, so the hash must never change.
        assert_eq!(
            bounded_name("", &"x".repeat(70), 63),
            format!("{}-513a36f591", "x".repeat(52))
        );
        assert_eq!(fnv1a_64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a_64(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn bounded_name_tells_apart_names_that_share_the_kept_part() {
        let first = format!("{}-one", "a".repeat(250));
        let second = format!("{}-two", "a".repeat(250));
        assert_ne!(
            bounded_name(ALLOW_NAME_PREFIX, &first, 253),
            bounded_name(ALLOW_NAME_PREFIX, &second, 253)
        );
    }

    #[test]
    fn bounded_name_never_ends_the_kept_part_on_punctuation() {
        // The cut would fall right after "b." and "c-": both are trimmed.
        let dotted = format!("{}b.{}", "a".repeat(50), "c".repeat(40));
        let name = bounded_name("", &dotted, 63);
        assert!(is_dns_subdomain(&name), "{name}");
        assert!(name.starts_with(&format!("{}b-", "a".repeat(50))), "{name}");
        let dashed = format!("{}c-{}", "a".repeat(50), "d".repeat(40));
        let name = bounded_name("", &dashed, 63);
        assert!(name.starts_with(&format!("{}c-", "a".repeat(50))), "{name}");
        assert!(is_dns_subdomain(&name), "{name}");
    }

    #[test]
    fn bounded_name_handles_tiny_limits_and_non_ascii() {
        assert_eq!(bounded_name("abc", "def", 0), "");
        assert_eq!(bounded_name("abc", "def", 4).len(), 4);
        assert_eq!(bounded_name("", "---------------", 11).len(), 10);
        let name = bounded_name("", &"é".repeat(40), 63);
        assert!(name.len() <= 63);
    }

    fn dns_subdomain() -> impl Strategy<Value = String> {
        proptest::string::string_regex("[a-z0-9]([-.a-z0-9]{0,251}[a-z0-9])?")
            .expect("regex")
            .prop_filter("valid subdomain", |name| is_dns_subdomain(name))
    }

    proptest! {
        #[test]
        fn bounded_names_are_valid_bounded_and_deterministic(name in dns_subdomain()) {
            for (prefix, max) in [(DENY_NAME_PREFIX, MAX_OBJECT_NAME), (ALLOW_NAME_PREFIX, MAX_OBJECT_NAME), ("", MAX_LABEL_VALUE)] {
                let bounded = bounded_name(prefix, &name, max);
                prop_assert!(bounded.len() <= max);
                prop_assert!(bounded.is_empty() || is_dns_subdomain(&bounded), "{}", bounded);
                prop_assert_eq!(&bounded, &bounded_name(prefix, &name, max));
                if prefix.len() + name.len() <= max {
                    prop_assert_eq!(bounded, format!("{prefix}{name}"));
                }
            }
        }

        #[test]
        fn fence_objects_are_valid_for_any_policy_name(name in dns_subdomain()) {
            let input = FenceInput {
                policy_name: name,
                namespace_selector: LabelSelector::default(),
                pod_selector: None,
                gateway: None,
                allowed_egress_cidrs: vec![],
                dns: DnsPeer::default(),
                namespaces: vec!["b".to_string(), "a".to_string()],
            };
            let policies = fence_policies(&input).expect("valid input");
            prop_assert_eq!(policies.len(), 4);
            for policy in &policies {
                let object_name = policy.metadata.name.as_deref().unwrap_or_default();
                prop_assert!(is_dns_subdomain(object_name), "{}", object_name);
                let label = policy.metadata.labels.as_ref().and_then(|l| l.get(POLICY_LABEL)).cloned().unwrap_or_default();
                prop_assert!(!label.is_empty() && label.len() <= MAX_LABEL_VALUE);
            }
        }
    }
}
