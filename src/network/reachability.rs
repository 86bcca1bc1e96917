//! Leaks found by reachability, not by pattern.
//!
//! NetworkPolicies are additive: the fence isolates the in-scope pods, but any other
//! policy that selects them can reopen a path, and a policy that looks harmless ("allow
//! from namespaces labelled `team: x`") may match a namespace outside the enclave. So
//! instead of pattern-matching policies, [`evaluate`] computes, in the style of the
//! Cyclonus NetworkPolicy conformance model, what the union of all policies lets
//! through, and reports each path from an in-scope pod to a peer outside the enclave
//! with the policy that opens it.
//!
//! # Semantics (Kubernetes `networking.k8s.io/v1` NetworkPolicy)
//!
//! - `policyTypes` absent or empty means `Ingress`, plus `Egress` when the policy has
//!   at least one egress rule. Rules of a direction the policy does not list are ignored.
//! - A pod is isolated for a direction iff a policy of that type in its namespace
//!   selects it (absent or empty `podSelector` selects every pod there). A pod that is
//!   not isolated allows everything in that direction.
//! - What is allowed is the union over every rule of every policy that selects the pod
//!   for the direction. A rule without peers allows all peers; without ports, all ports.
//! - Peers: `podSelector` alone selects pods of the policy's own namespace;
//!   `namespaceSelector` alone every pod of the matching namespaces; both, the matching
//!   pods of the matching namespaces; `ipBlock` the addresses of `cidr` minus `except`
//!   (IPv4 and IPv6).
//! - Ports: protocol defaults to TCP; a number, optionally to `endPort`; a name resolves
//!   against the container ports the destination pod declares, with the same protocol
//!   (for egress the peer, for ingress the in-scope pod). A named port towards an
//!   `ipBlock` destination matches nothing: an address declares no port names.
//! - Traffic between two pods needs the sender's egress AND the receiver's ingress to
//!   allow it; both sides are evaluated. Addresses outside the cluster have no policy,
//!   so for `ipBlock` and "any address" only the in-scope side is evaluated.
//!
//! # The enclave boundary
//!
//! Inside are the in-scope pods (inside namespaces AND the policy's pod selector: a pod
//! the selector leaves out is neither placed nor gated, so it is outside) and the
//! gateway pods; the DNS pods are inside for their DNS port over UDP and TCP only. An address range is
//! inside when the allowed CIDRs cover it; the same CIDRs are trusted for ingress. A rule
//! that allows every destination (or source) reaches "any address" unless the allowed
//! CIDRs cover both `0.0.0.0/0` and `::/0`; the outside pods it also reaches are then
//! not listed again for that policy, since "any address" says more. Verdicts are about
//! the pods that exist now: a namespace without pods contributes no leak until a pod
//! appears, which the next evaluation sees.
//!
//! A group whose pods no NetworkPolicy isolates for a direction is reported as
//! [`Leak::NotIsolated`]: the caller evaluates only where the fence should be, so this
//! means the fence is missing, and everything is open.
//!
//! # Not modelled
//!
//! - CNI-specific kinds (CiliumNetworkPolicy, CiliumClusterwideNetworkPolicy, Calico
//!   NetworkPolicy and GlobalNetworkPolicy, Antrea policies) and the cluster-scoped
//!   AdminNetworkPolicy / BaselineAdminNetworkPolicy: these can deny what we report as
//!   open, or open what we report as closed.
//! - Host-network pods and traffic from a pod's own node (always allowed to it by the
//!   API's definition): pods are taken as pod-network pods.
//! - Services: NetworkPolicy applies after ClusterIP/NodePort translation, so ports are
//!   the pods' ports, and a Service in front of a pod changes nothing here.
//! - `ipBlock` versus pod IPs: CNIs differ in whether an `ipBlock` also matches
//!   in-cluster pod IPs. Here `ipBlock` applies to addresses only and pods are matched by
//!   selectors only; [`PodInfo::ip`] is shown in reports, never matched.
//! - Malformed objects the API server would refuse are read conservatively towards "no
//!   traffic": an unknown protocol, an out-of-range port or an unparsable `cidr` allows
//!   nothing; an unparsable `except` entry carves nothing out; a policy without a
//!   namespace selects nothing. Objects are identified by namespace/name, which the API
//!   keeps unique.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{
    DnsPeer, EnclaveGateway, NAMESPACE_NAME_LABEL, Protocol, optional_selector_matches,
    selector_matches,
};

/// Leaks listed per group at most; the rest are counted in
/// [`PodGroup::leaks_left_out`], so that one allow-all policy over a large cluster does
/// not produce a status nobody can read.
pub const MAX_LEAKS_PER_GROUP: usize = 20;

/// Everything the evaluation depends on: the cluster's namespaces, pods and
/// NetworkPolicies, and where the enclave's boundary runs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct World {
    /// Every namespace, for namespace selectors. A namespace that only pods name is
    /// taken with its name label alone.
    pub namespaces: Vec<NamespaceInfo>,
    /// Every pod: the in-scope ones and every possible peer.
    pub pods: Vec<PodInfo>,
    /// Every NetworkPolicy of the cluster, the fence's included.
    pub network_policies: Vec<NetworkPolicy>,
    pub enclave: EnclaveBoundary,
}

/// A namespace as selectors see it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NamespaceInfo {
    pub name: String,
    /// Its labels. `kubernetes.io/metadata.name` is added when missing, as the API
    /// server always sets it.
    pub labels: BTreeMap<String, String>,
}

impl NamespaceInfo {
    /// The parts of a Namespace the evaluation reads; `None` without a name.
    pub fn from_namespace(namespace: &Namespace) -> Option<Self> {
        Some(Self {
            name: namespace.metadata.name.clone()?,
            labels: namespace.metadata.labels.clone().unwrap_or_default(),
        })
    }
}

/// A pod as NetworkPolicies see it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodInfo {
    pub namespace: String,
    pub name: String,
    /// Shared with the pod cache (pods of one workload share one map): a pass over a
    /// large cluster must not copy every pod's labels.
    pub labels: Arc<BTreeMap<String, String>>,
    /// The pod IP when known; shown in reports, never matched against `ipBlock`.
    pub ip: Option<IpAddr>,
    /// The container ports the pod declares, which named policy ports resolve against
    /// (shared: the pods of one workload declare the same ones).
    pub ports: Arc<[DeclaredPort]>,
}

impl PodInfo {
    /// The parts of a Pod the evaluation reads; `None` without a name or namespace.
    /// Ports come from containers and init containers (sidecars declare ports there);
    /// a port with a protocol the API does not define is left out.
    pub fn from_pod(pod: &Pod) -> Option<Self> {
        let ports = pod
            .spec
            .iter()
            .flat_map(|spec| {
                spec.containers
                    .iter()
                    .chain(spec.init_containers.iter().flatten())
            })
            .flat_map(|container| container.ports.iter().flatten())
            .filter_map(|port| {
                Some(DeclaredPort {
                    name: port.name.clone(),
                    number: port.container_port,
                    protocol: Protocol::parse(port.protocol.as_deref().unwrap_or("TCP"))?,
                })
            })
            .collect();
        Some(Self {
            namespace: pod.metadata.namespace.clone()?,
            name: pod.metadata.name.clone()?,
            labels: Arc::new(pod.metadata.labels.clone().unwrap_or_default()),
            ip: pod
                .status
                .as_ref()
                .and_then(|status| status.pod_ip.as_deref())
                .and_then(|ip| ip.parse().ok()),
            ports,
        })
    }
}

/// A container port a pod declares.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct DeclaredPort {
    pub name: Option<String>,
    pub number: i32,
    pub protocol: Protocol,
}

/// Where the enclave's boundary runs, and which pods to evaluate.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EnclaveBoundary {
    /// Namespaces inside the enclave (those the ResidencyPolicy selects). Their pods
    /// matching `in_scope_pod_selector` are inside and evaluated; the others are
    /// outside, like the pods of any other namespace.
    pub inside_namespaces: BTreeSet<String>,
    /// The ResidencyPolicy's pod selector; absent means every pod of an inside namespace.
    pub in_scope_pod_selector: Option<LabelSelector>,
    /// Pods matching the gateway are inside.
    pub gateway: Option<EnclaveGateway>,
    /// Pods matching the DNS peer are inside for its port over UDP and TCP only.
    pub dns: DnsPeer,
    /// Address ranges inside the enclave, for egress and ingress alike.
    pub allowed_cidrs: Vec<IpNet>,
    /// The operator's own namespace: its pods are inside. The operator already reads
    /// every object of the enclave through the API server, only admins place pods in its
    /// namespace, and it reaches a volume move's sender for its progress counters
    /// (through a NetworkPolicy of the move's own, which would otherwise read as a leak).
    pub operator_namespace: Option<String>,
}

/// A direction of traffic, seen from the in-scope pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    const BOTH: [Direction; 2] = [Direction::Ingress, Direction::Egress];

    /// The direction the same traffic has at the other end.
    fn opposite(self) -> Direction {
        match self {
            Direction::Ingress => Direction::Egress,
            Direction::Egress => Direction::Ingress,
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::Ingress => "Ingress",
            Direction::Egress => "Egress",
        })
    }
}

/// A NetworkPolicy, by namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PolicyRef {
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for PolicyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Ports by protocol, as sorted, disjoint, non-adjacent inclusive ranges within
/// 1-65535. Concrete port sets make both sides of a path comparable: named ports are
/// resolved before they get here.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortSet {
    ranges: BTreeMap<Protocol, Vec<(u16, u16)>>,
}

const FIRST_PORT: u16 = 1;
const LAST_PORT: u16 = u16::MAX;

impl PortSet {
    /// No port at all.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Every port of every protocol.
    pub fn all() -> Self {
        Self {
            ranges: Protocol::ALL
                .into_iter()
                .map(|p| (p, vec![(FIRST_PORT, LAST_PORT)]))
                .collect(),
        }
    }

    /// Every port of one protocol.
    pub fn protocol(protocol: Protocol) -> Self {
        Self::range(protocol, FIRST_PORT, LAST_PORT)
    }

    /// Ports `first` to `last` inclusive of one protocol; empty when `last < first`.
    pub fn range(protocol: Protocol, first: u16, last: u16) -> Self {
        Self::normalized(protocol, vec![(first.max(FIRST_PORT), last)])
    }

    /// A range as the API states it (`port`, `endPort`): empty when `first` is not a
    /// port number, `last` clipped to the last port.
    fn api_range(protocol: Protocol, first: i32, last: i32) -> Self {
        let Ok(first) = u16::try_from(first) else {
            return Self::empty();
        };
        let last = u16::try_from(last.max(0)).unwrap_or(LAST_PORT);
        if first < FIRST_PORT {
            return Self::empty();
        }
        Self::range(protocol, first, last)
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    pub fn is_all(&self) -> bool {
        *self == Self::all()
    }

    pub fn contains(&self, protocol: Protocol, port: u16) -> bool {
        self.ranges
            .get(&protocol)
            .is_some_and(|ranges| ranges.iter().any(|(a, b)| (*a..=*b).contains(&port)))
    }

    /// The ranges as (protocol, first, last), in protocol then port order.
    pub fn ranges(&self) -> impl Iterator<Item = (Protocol, u16, u16)> + '_ {
        self.ranges
            .iter()
            .flat_map(|(p, ranges)| ranges.iter().map(move |(a, b)| (*p, *a, *b)))
    }

    pub fn union(&self, other: &PortSet) -> PortSet {
        let mut out = self.clone();
        for (protocol, ranges) in &other.ranges {
            let mut merged = out.ranges.remove(protocol).unwrap_or_default();
            merged.extend(ranges.iter().copied());
            out.insert_normalized(*protocol, merged);
        }
        out
    }

    pub fn intersection(&self, other: &PortSet) -> PortSet {
        let mut out = PortSet::empty();
        for (protocol, mine) in &self.ranges {
            let Some(theirs) = other.ranges.get(protocol) else {
                continue;
            };
            let overlaps = mine
                .iter()
                .flat_map(|(a, b)| {
                    theirs
                        .iter()
                        .map(move |(c, d)| ((*a).max(*c), (*b).min(*d)))
                })
                .collect();
            out.insert_normalized(*protocol, overlaps);
        }
        out
    }

    pub fn difference(&self, other: &PortSet) -> PortSet {
        self.intersection(&other.complement())
    }

    fn complement(&self) -> PortSet {
        let mut out = PortSet::empty();
        for protocol in Protocol::ALL {
            let mut gaps = Vec::new();
            let mut next = u32::from(FIRST_PORT);
            for (a, b) in self.ranges.get(&protocol).into_iter().flatten() {
                if u32::from(*a) > next {
                    gaps.push((next, u32::from(*a) - 1));
                }
                next = u32::from(*b) + 1;
            }
            if next <= u32::from(LAST_PORT) {
                gaps.push((next, u32::from(LAST_PORT)));
            }
            let gaps = gaps
                .into_iter()
                .filter_map(|(a, b)| Some((u16::try_from(a).ok()?, u16::try_from(b).ok()?)))
                .collect();
            out.insert_normalized(protocol, gaps);
        }
        out
    }

    fn normalized(protocol: Protocol, ranges: Vec<(u16, u16)>) -> Self {
        let mut out = Self::empty();
        out.insert_normalized(protocol, ranges);
        out
    }

    /// Sorts, drops empty ranges and merges overlapping or adjacent ones, so that equal
    /// sets compare equal.
    fn insert_normalized(&mut self, protocol: Protocol, mut ranges: Vec<(u16, u16)>) {
        ranges.retain(|(a, b)| a <= b);
        ranges.sort_unstable();
        let mut merged: Vec<(u16, u16)> = Vec::with_capacity(ranges.len());
        for (a, b) in ranges {
            match merged.last_mut() {
                Some(last) if u32::from(a) <= u32::from(last.1) + 1 => last.1 = last.1.max(b),
                _ => merged.push((a, b)),
            }
        }
        if merged.is_empty() {
            self.ranges.remove(&protocol);
        } else {
            self.ranges.insert(protocol, merged);
        }
    }

    fn items(&self) -> Vec<String> {
        self.ranges
            .iter()
            .flat_map(|(protocol, ranges)| {
                ranges.iter().map(move |(a, b)| match (a, b) {
                    (&FIRST_PORT, &LAST_PORT) => format!("any/{protocol}"),
                    (a, b) if a == b => format!("{a}/{protocol}"),
                    (a, b) => format!("{a}-{b}/{protocol}"),
                })
            })
            .collect()
    }
}

impl fmt::Display for PortSet {
    /// `any port`, a list such as `80/TCP, 8000-8100/TCP, any/UDP`, or, when shorter,
    /// `any port except 53/TCP, 53/UDP`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("no port");
        }
        if self.is_all() {
            return f.write_str("any port");
        }
        let own = self.items();
        let missing = self.complement().items();
        if missing.len() < own.len() {
            write!(f, "any port except {}", missing.join(", "))
        } else {
            f.write_str(&own.join(", "))
        }
    }
}

/// A peer outside the enclave.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OutsidePeer {
    /// Every address, and so every pod: a rule without peers.
    AnyAddress,
    /// An `ipBlock` that reaches beyond the allowed CIDRs, as the policy states it.
    AddressBlock { cidr: String, except: Vec<String> },
    /// Every outside pod of a namespace (at least two), when all are reached alike.
    Namespace { name: String, pods: usize },
    /// One outside pod.
    Pod {
        namespace: String,
        name: String,
        ip: Option<IpAddr>,
    },
}

impl fmt::Display for OutsidePeer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OutsidePeer::AnyAddress => f.write_str("any address"),
            OutsidePeer::AddressBlock { cidr, except } if except.is_empty() => f.write_str(cidr),
            OutsidePeer::AddressBlock { cidr, except } => {
                write!(f, "{cidr} except {}", except.join(", "))
            }
            OutsidePeer::Namespace { name, pods } => write!(f, "namespace {name} ({pods} pods)"),
            OutsidePeer::Pod {
                namespace,
                name,
                ip: None,
            } => write!(f, "pod {namespace}/{name}"),
            OutsidePeer::Pod {
                namespace,
                name,
                ip: Some(ip),
            } => write!(f, "pod {namespace}/{name} ({ip})"),
        }
    }
}

/// One way out of (or into) the enclave for a group of in-scope pods.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Leak {
    /// No NetworkPolicy isolates the pods for this direction: everything is open, and
    /// the fence that should be there is missing.
    NotIsolated(Direction),
    /// A path to (egress) or from (ingress) an outside peer, on `ports`, opened by the
    /// rules of `opened_by` (policies selecting the in-scope pods).
    Open {
        direction: Direction,
        peer: OutsidePeer,
        ports: PortSet,
        opened_by: Vec<PolicyRef>,
    },
}

impl fmt::Display for Leak {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Leak::NotIsolated(direction) => {
                write!(f, "no NetworkPolicy isolates these pods for {direction}")
            }
            Leak::Open {
                direction,
                peer,
                ports,
                opened_by,
            } => {
                let way = match direction {
                    Direction::Egress => "Egress to",
                    Direction::Ingress => "Ingress from",
                };
                let policies: Vec<String> = opened_by.iter().map(ToString::to_string).collect();
                write!(f, "{way} {peer} on {ports} via {}", policies.join(", "))
            }
        }
    }
}

/// In-scope pods of one namespace selected by the same NetworkPolicies, which are
/// therefore fenced (or not) alike.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodGroup {
    pub namespace: String,
    pub pod_count: usize,
    /// The first pod of the group by name, to point a reader at a concrete pod.
    pub representative_pod: String,
    /// Every pod of the group by name, in the same order: the audit report gives each
    /// pod its group's verdict.
    pub pods: Vec<String>,
    /// The NetworkPolicies selecting these pods (any direction), by namespace/name.
    pub selected_by: Vec<PolicyRef>,
    /// The group's leaks, in order, at most [`MAX_LEAKS_PER_GROUP`].
    pub leaks: Vec<Leak>,
    /// How many further leaks were found and not listed.
    pub leaks_left_out: usize,
}

/// The verdict over every in-scope pod, grouped.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReachabilityReport {
    /// Every group of in-scope pods, leaking or not, by namespace then selecting policies.
    pub groups: Vec<PodGroup>,
}

impl ReachabilityReport {
    /// Whether any in-scope pod can reach, or be reached from, outside the enclave.
    pub fn has_leaks(&self) -> bool {
        self.groups.iter().any(|group| !group.leaks.is_empty())
    }
}

/// Which in-scope pods can send to, or receive from, a peer outside the enclave, and
/// which NetworkPolicy opens each path. Deterministic: the result depends on the
/// contents of `world`, not on the order of its lists.
pub fn evaluate(world: &World) -> ReachabilityReport {
    let model = Model::new(world);
    let mut groups: BTreeMap<(&str, &[usize]), Vec<usize>> = BTreeMap::new();
    for pod in model.in_scope_pods() {
        let key = (
            model.pods[pod].namespace.as_str(),
            model.selecting[pod].as_slice(),
        );
        groups.entry(key).or_default().push(pod);
    }
    ReachabilityReport {
        groups: groups
            .into_iter()
            .map(|((namespace, selecting), members)| {
                model.group_report(namespace, selecting, &members)
            })
            .collect(),
    }
}

/// A NetworkPolicy as the evaluation uses it.
struct ParsedPolicy<'w> {
    reference: PolicyRef,
    namespace: &'w str,
    /// `None` selects every pod of the namespace.
    pod_selector: Option<&'w LabelSelector>,
    /// Rules of the directions the policy isolates; `None` for a direction it does not.
    ingress: Option<Vec<ParsedRule<'w>>>,
    egress: Option<Vec<ParsedRule<'w>>>,
}

impl<'w> ParsedPolicy<'w> {
    /// `None` for a policy without a namespace: it cannot select any pod.
    fn new(policy: &'w NetworkPolicy) -> Option<Self> {
        let namespace = policy.metadata.namespace.as_deref()?;
        let spec = policy.spec.as_ref();
        let ingress_rules = spec.and_then(|s| s.ingress.as_deref()).unwrap_or_default();
        let egress_rules = spec.and_then(|s| s.egress.as_deref()).unwrap_or_default();
        let (isolates_ingress, isolates_egress) = match spec
            .and_then(|s| s.policy_types.as_deref())
            .filter(|types| !types.is_empty())
        {
            Some(types) => (
                types.iter().any(|t| t == "Ingress"),
                types.iter().any(|t| t == "Egress"),
            ),
            // The API's defaulting: always Ingress, Egress when there are egress rules.
            None => (true, !egress_rules.is_empty()),
        };
        Some(Self {
            reference: PolicyRef {
                namespace: namespace.to_string(),
                name: policy.metadata.name.clone().unwrap_or_default(),
            },
            namespace,
            pod_selector: spec.and_then(|s| s.pod_selector.as_ref()),
            ingress: isolates_ingress.then(|| {
                ingress_rules
                    .iter()
                    .map(|r| ParsedRule::new(r.from.as_deref(), r.ports.as_deref()))
                    .collect()
            }),
            egress: isolates_egress.then(|| {
                egress_rules
                    .iter()
                    .map(|r| ParsedRule::new(r.to.as_deref(), r.ports.as_deref()))
                    .collect()
            }),
        })
    }

    fn rules(&self, direction: Direction) -> Option<&[ParsedRule<'w>]> {
        match direction {
            Direction::Ingress => self.ingress.as_deref(),
            Direction::Egress => self.egress.as_deref(),
        }
    }
}

/// An ingress or egress rule; `from` and `to` play the same part.
struct ParsedRule<'w> {
    /// `None`: every peer (the list is absent or empty).
    peers: Option<&'w [NetworkPolicyPeer]>,
    /// `None`: every port (the list is absent or empty).
    ports: Option<&'w [NetworkPolicyPort]>,
}

impl<'w> ParsedRule<'w> {
    fn new(peers: Option<&'w [NetworkPolicyPeer]>, ports: Option<&'w [NetworkPolicyPort]>) -> Self {
        Self {
            peers: peers.filter(|p| !p.is_empty()),
            ports: ports.filter(|p| !p.is_empty()),
        }
    }

    /// The ports this rule allows towards `destination` (the pod receiving the
    /// traffic), or towards an address when `None`.
    fn ports_towards(&self, destination: Option<&PodInfo>) -> PortSet {
        let Some(ports) = self.ports else {
            return PortSet::all();
        };
        ports.iter().fold(PortSet::empty(), |allowed, port| {
            allowed.union(&policy_port(port, destination))
        })
    }
}

/// One `ports` entry resolved to concrete ports.
fn policy_port(port: &NetworkPolicyPort, destination: Option<&PodInfo>) -> PortSet {
    let Some(protocol) = Protocol::parse(port.protocol.as_deref().unwrap_or("TCP")) else {
        return PortSet::empty();
    };
    match &port.port {
        None => PortSet::protocol(protocol),
        Some(IntOrString::Int(first)) => {
            PortSet::api_range(protocol, *first, port.end_port.unwrap_or(*first))
        }
        Some(IntOrString::String(name)) => destination
            .into_iter()
            .flat_map(|pod| pod.ports.iter())
            .filter(|declared| {
                declared.protocol == protocol && declared.name.as_deref() == Some(name.as_str())
            })
            .fold(PortSet::empty(), |allowed, declared| {
                allowed.union(&PortSet::api_range(
                    protocol,
                    declared.number,
                    declared.number,
                ))
            }),
    }
}

/// Where one in-scope pod's policies let traffic go in one direction.
enum Side {
    /// No policy isolates the pod for this direction.
    NotIsolated,
    /// The outside peers reached, each with the ports and the policy that opens them.
    Isolated(Vec<Opening>),
}

struct Opening {
    peer: PeerAtom,
    ports: PortSet,
    policy: usize,
}

/// The ports each opening policy (by index) opens towards one peer.
type ByPolicy = BTreeMap<usize, PortSet>;

/// An outside peer before reporting merges pods into namespaces.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum PeerAtom {
    AnyAddress,
    Block { cidr: String, except: Vec<String> },
    Pod(usize),
}

static NO_LABELS: BTreeMap<String, String> = BTreeMap::new();

/// The world indexed for evaluation. Pods and policies are sorted by namespace and
/// name, so that indices, and everything ordered by them, do not depend on input order.
struct Model<'w> {
    boundary: &'w EnclaveBoundary,
    namespace_labels: BTreeMap<&'w str, BTreeMap<String, String>>,
    pods: Vec<&'w PodInfo>,
    /// The indices of each namespace's pods (contiguous: pods are sorted by namespace),
    /// so that a peer selecting one namespace looks at its pods only.
    namespace_pods: BTreeMap<&'w str, std::ops::Range<usize>>,
    policies: Vec<ParsedPolicy<'w>>,
    /// For each pod, the policies selecting it (any direction), in policy order.
    selecting: Vec<Vec<usize>>,
    /// The allowed CIDRs reduced to their network address.
    allowed_cidrs: Vec<IpNet>,
    /// Whether some address lies outside the allowed CIDRs, i.e. whether a rule
    /// without peers reaches outside through addresses.
    some_address_outside: bool,
}

impl<'w> Model<'w> {
    fn new(world: &'w World) -> Self {
        let mut namespace_labels: BTreeMap<&str, BTreeMap<String, String>> = BTreeMap::new();
        for namespace in &world.namespaces {
            let mut labels = namespace.labels.clone();
            labels.insert(NAMESPACE_NAME_LABEL.to_string(), namespace.name.clone());
            namespace_labels.insert(namespace.name.as_str(), labels);
        }
        for pod in &world.pods {
            namespace_labels
                .entry(pod.namespace.as_str())
                .or_insert_with(|| {
                    BTreeMap::from([(NAMESPACE_NAME_LABEL.to_string(), pod.namespace.clone())])
                });
        }

        let mut pods: Vec<&PodInfo> = world.pods.iter().collect();
        pods.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        let mut policies: Vec<ParsedPolicy> = world
            .network_policies
            .iter()
            .filter_map(ParsedPolicy::new)
            .collect();
        policies.sort_by(|a, b| a.reference.cmp(&b.reference));
        let mut namespace_pods: BTreeMap<&str, std::ops::Range<usize>> = BTreeMap::new();
        for (index, pod) in pods.iter().enumerate() {
            namespace_pods
                .entry(pod.namespace.as_str())
                .and_modify(|range| range.end = index + 1)
                .or_insert(index..index + 1);
        }
        let mut namespace_policies: HashMap<&str, Vec<usize>> = HashMap::new();
        for (index, policy) in policies.iter().enumerate() {
            namespace_policies
                .entry(policy.namespace)
                .or_default()
                .push(index);
        }
        let selecting = pods
            .iter()
            .map(|pod| {
                namespace_policies
                    .get(pod.namespace.as_str())
                    .into_iter()
                    .flatten()
                    .copied()
                    .filter(|&i| optional_selector_matches(policies[i].pod_selector, &pod.labels))
                    .collect()
            })
            .collect();

        let allowed_cidrs: Vec<IpNet> = world
            .enclave
            .allowed_cidrs
            .iter()
            .map(IpNet::trunc)
            .collect();
        // The defaults are 0.0.0.0/0 and ::/0.
        let everything = [IpNet::V4(Ipv4Net::default()), IpNet::V6(Ipv6Net::default())];
        let some_address_outside = !subtract_networks(&everything, &allowed_cidrs).is_empty();
        Self {
            boundary: &world.enclave,
            namespace_labels,
            pods,
            namespace_pods,
            policies,
            selecting,
            allowed_cidrs,
            some_address_outside,
        }
    }

    fn namespace_labels(&self, namespace: &str) -> &BTreeMap<String, String> {
        self.namespace_labels.get(namespace).unwrap_or(&NO_LABELS)
    }

    fn in_scope_pods(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.pods.len()).filter(|&i| self.in_scope(i))
    }

    /// Pods matching `pod_selector` (all when absent) in namespaces matching
    /// `namespace_selector`: how gateways and the DNS peer are given.
    fn matches_peer_pods(
        &self,
        namespace_selector: &LabelSelector,
        pod_selector: Option<&LabelSelector>,
        pod: usize,
    ) -> bool {
        let pod = self.pods[pod];
        selector_matches(namespace_selector, self.namespace_labels(&pod.namespace))
            && optional_selector_matches(pod_selector, &pod.labels)
    }

    /// The pods of the namespaces that can hold outside pods, by namespace: the only
    /// ones a path can leave through. Without a pod selector every pod of an inside
    /// namespace is inside, so those namespaces are skipped; with one, the pods it
    /// leaves out are outside and [`Model::outside_ports`] decides pod by pod.
    fn outside_namespaces(&self) -> impl Iterator<Item = (&'w str, std::ops::Range<usize>)> + '_ {
        let whole_namespaces_inside = self.boundary.in_scope_pod_selector.is_none();
        self.namespace_pods
            .iter()
            .filter(move |(namespace, _)| {
                !(whole_namespaces_inside && self.boundary.inside_namespaces.contains(**namespace))
            })
            .map(|(namespace, range)| (*namespace, range.clone()))
    }

    /// Is the pod one the policy covers (an inside namespace, and its pod selector)?
    fn in_scope(&self, pod: usize) -> bool {
        let pod = self.pods[pod];
        self.boundary.inside_namespaces.contains(&pod.namespace)
            && optional_selector_matches(self.boundary.in_scope_pod_selector.as_ref(), &pod.labels)
    }

    /// The outside pods a peer of a policy in `policy_namespace` can select: its own
    /// namespace's for a bare pod selector, those of the namespaces a namespace
    /// selector matches, none for an address block. [`Model::peer_selects`] still
    /// decides each.
    fn peer_candidates(
        &self,
        policy_namespace: &str,
        peer: &NetworkPolicyPeer,
    ) -> Vec<std::ops::Range<usize>> {
        match (&peer.ip_block, &peer.namespace_selector, &peer.pod_selector) {
            (Some(_), _, _) | (None, None, None) => Vec::new(),
            (None, None, Some(_)) => self
                .outside_namespaces()
                .filter(|(namespace, _)| *namespace == policy_namespace)
                .map(|(_, range)| range)
                .collect(),
            (None, Some(namespaces), _) => self
                .outside_namespaces()
                .filter(|(namespace, _)| {
                    selector_matches(namespaces, self.namespace_labels(namespace))
                })
                .map(|(_, range)| range)
                .collect(),
        }
    }

    /// Does a policy peer of a policy in `policy_namespace` select this pod? `ipBlock`
    /// peers never do (addresses only), nor does a peer with no selector at all.
    fn peer_selects(&self, policy_namespace: &str, peer: &NetworkPolicyPeer, pod: usize) -> bool {
        if peer.ip_block.is_some() {
            return false;
        }
        let info = self.pods[pod];
        match (&peer.namespace_selector, &peer.pod_selector) {
            (None, None) => false,
            (None, Some(pods)) => {
                info.namespace == policy_namespace && selector_matches(pods, &info.labels)
            }
            (Some(namespaces), pods) => self.matches_peer_pods(namespaces, pods.as_ref(), pod),
        }
    }

    /// The ports on which traffic with this pod leaves the enclave: `None` for a pod
    /// inside, every port but DNS for a DNS pod, every port for any other pod. A pod of
    /// an inside namespace that the pod selector leaves out is outside: it is neither
    /// placed in the enclave nor gated, so what reaches it has left.
    fn outside_ports(&self, pod: usize) -> Option<PortSet> {
        let boundary = self.boundary;
        if self.in_scope(pod)
            || boundary.operator_namespace.as_deref() == Some(self.pods[pod].namespace.as_str())
        {
            return None;
        }
        if boundary.gateway.as_ref().is_some_and(|gateway| {
            self.matches_peer_pods(
                &gateway.namespace_selector,
                gateway.pod_selector.as_ref(),
                pod,
            )
        }) {
            return None;
        }
        let dns = &boundary.dns;
        if self.matches_peer_pods(&dns.namespace_selector, dns.pod_selector.as_ref(), pod) {
            let dns_ports = PortSet::range(Protocol::Udp, dns.port, dns.port)
                .union(&PortSet::range(Protocol::Tcp, dns.port, dns.port));
            return Some(PortSet::all().difference(&dns_ports));
        }
        Some(PortSet::all())
    }

    /// The parts of `cidr` minus `except` that the allowed CIDRs do not cover, as a
    /// peer; `None` when nothing is left (or the CIDR does not parse).
    fn block_outside(&self, block: &IPBlock) -> Option<PeerAtom> {
        let cidr = block.cidr.trim().parse::<IpNet>().ok()?.trunc();
        let mut holes: Vec<IpNet> = block
            .except
            .iter()
            .flatten()
            .filter_map(|except| except.trim().parse::<IpNet>().ok())
            .map(|net| net.trunc())
            .collect();
        holes.extend(self.allowed_cidrs.iter().copied());
        if subtract_networks(&[cidr], &holes).is_empty() {
            return None;
        }
        let mut except: Vec<String> = block.except.iter().flatten().cloned().collect();
        except.sort();
        except.dedup();
        Some(PeerAtom::Block {
            cidr: block.cidr.clone(),
            except,
        })
    }

    /// The policies isolating `pod` for `direction`, in policy order.
    fn isolating(&self, pod: usize, direction: Direction) -> impl Iterator<Item = usize> + '_ {
        self.selecting[pod]
            .iter()
            .copied()
            .filter(move |&i| self.policies[i].rules(direction).is_some())
    }

    /// What `pod`'s own policies allow in `direction` with the pod `counterpart`: the
    /// other side of a two-sided path. Everything when `pod` is not isolated.
    fn allowance(&self, pod: usize, direction: Direction, counterpart: usize) -> PortSet {
        let destination = match direction {
            Direction::Ingress => self.pods[pod],
            Direction::Egress => self.pods[counterpart],
        };
        let mut isolated = false;
        let mut allowed = PortSet::empty();
        for index in self.isolating(pod, direction) {
            isolated = true;
            let policy = &self.policies[index];
            for rule in policy.rules(direction).unwrap_or_default() {
                let admits = rule.peers.is_none_or(|peers| {
                    peers
                        .iter()
                        .any(|peer| self.peer_selects(policy.namespace, peer, counterpart))
                });
                if admits {
                    allowed = allowed.union(&rule.ports_towards(Some(destination)));
                }
            }
        }
        if isolated { allowed } else { PortSet::all() }
    }

    /// Every outside peer the in-scope `pod` can reach in `direction`, with the policy
    /// whose rule opens it.
    fn side(&self, pod: usize, direction: Direction) -> Side {
        let isolating: Vec<usize> = self.isolating(pod, direction).collect();
        if isolating.is_empty() {
            return Side::NotIsolated;
        }
        let own = self.pods[pod];
        // The other end's verdict depends only on the two pods; compute it once.
        let mut counterpart_allows: HashMap<usize, PortSet> = HashMap::new();
        let mut openings = Vec::new();
        for index in isolating {
            let policy = &self.policies[index];
            for rule in policy.rules(direction).unwrap_or_default() {
                // Named ports towards an address resolve to nothing on egress; on
                // ingress the in-scope pod is the destination and resolves them.
                let address_ports = match direction {
                    Direction::Ingress => rule.ports_towards(Some(own)),
                    Direction::Egress => rule.ports_towards(None),
                };
                let mut reach_pod = |other: usize, openings: &mut Vec<Opening>| {
                    let Some(outside) = self.outside_ports(other) else {
                        return;
                    };
                    let destination = match direction {
                        Direction::Egress => self.pods[other],
                        Direction::Ingress => own,
                    };
                    let theirs = counterpart_allows
                        .entry(other)
                        .or_insert_with(|| self.allowance(other, direction.opposite(), pod));
                    let ports = rule
                        .ports_towards(Some(destination))
                        .intersection(theirs)
                        .intersection(&outside);
                    if !ports.is_empty() {
                        openings.push(Opening {
                            peer: PeerAtom::Pod(other),
                            ports,
                            policy: index,
                        });
                    }
                };
                match rule.peers {
                    None => {
                        if !address_ports.is_empty() && self.some_address_outside {
                            openings.push(Opening {
                                peer: PeerAtom::AnyAddress,
                                ports: address_ports.clone(),
                                policy: index,
                            });
                        }
                        let outside: Vec<std::ops::Range<usize>> =
                            self.outside_namespaces().map(|(_, range)| range).collect();
                        for other in outside.into_iter().flatten() {
                            reach_pod(other, &mut openings);
                        }
                    }
                    Some(peers) => {
                        for peer in peers {
                            if let Some(block) = &peer.ip_block {
                                if address_ports.is_empty() {
                                    continue;
                                }
                                if let Some(atom) = self.block_outside(block) {
                                    openings.push(Opening {
                                        peer: atom,
                                        ports: address_ports.clone(),
                                        policy: index,
                                    });
                                }
                                continue;
                            }
                            for other in self
                                .peer_candidates(policy.namespace, peer)
                                .into_iter()
                                .flatten()
                            {
                                if self.peer_selects(policy.namespace, peer, other) {
                                    reach_pod(other, &mut openings);
                                }
                            }
                        }
                    }
                }
            }
        }
        Side::Isolated(openings)
    }

    /// Outside pods per namespace, for deciding when a whole namespace is reached.
    fn outside_pods_in(&self, namespace: &str) -> usize {
        self.namespace_pods
            .get(namespace)
            .cloned()
            .into_iter()
            .flatten()
            .filter(|&i| self.outside_ports(i).is_some())
            .count()
    }

    fn outside_peer(&self, atom: PeerAtom) -> OutsidePeer {
        match atom {
            PeerAtom::AnyAddress => OutsidePeer::AnyAddress,
            PeerAtom::Block { cidr, except } => OutsidePeer::AddressBlock { cidr, except },
            PeerAtom::Pod(index) => {
                let pod = self.pods[index];
                OutsidePeer::Pod {
                    namespace: pod.namespace.clone(),
                    name: pod.name.clone(),
                    ip: pod.ip,
                }
            }
        }
    }

    fn group_report(&self, namespace: &str, selecting: &[usize], members: &[usize]) -> PodGroup {
        let mut not_isolated = BTreeSet::new();
        // Replicas (same labels, same declared ports) have the same paths: both their
        // own side and the other end's verdict depend only on those, and on the
        // namespace, which the whole group shares.
        let mut evaluated: HashSet<(&BTreeMap<String, String>, &[DeclaredPort])> = HashSet::new();
        // (direction, peer) -> opening policy -> ports, merged over the group's pods.
        let mut paths: BTreeMap<(Direction, PeerAtom), ByPolicy> = BTreeMap::new();
        for &pod in members {
            let info = self.pods[pod];
            if !evaluated.insert((&info.labels, &info.ports[..])) {
                continue;
            }
            for direction in Direction::BOTH {
                let openings = match self.side(pod, direction) {
                    Side::NotIsolated => {
                        not_isolated.insert(direction);
                        continue;
                    }
                    Side::Isolated(openings) => openings,
                };
                // A policy that opens "any address" also opens every outside pod on
                // those ports; list only what it opens beyond that.
                let mut any_address: ByPolicy = BTreeMap::new();
                for opening in &openings {
                    if opening.peer == PeerAtom::AnyAddress {
                        let ports = any_address.entry(opening.policy).or_default();
                        *ports = ports.union(&opening.ports);
                    }
                }
                for opening in openings {
                    let ports = match (&opening.peer, any_address.get(&opening.policy)) {
                        (PeerAtom::Pod(_), Some(covered)) => opening.ports.difference(covered),
                        _ => opening.ports,
                    };
                    if ports.is_empty() {
                        continue;
                    }
                    let merged = paths
                        .entry((direction, opening.peer))
                        .or_default()
                        .entry(opening.policy)
                        .or_default();
                    *merged = merged.union(&ports);
                }
            }
        }

        let mut leaks: Vec<Leak> = not_isolated.into_iter().map(Leak::NotIsolated).collect();
        for ((direction, peer), by_policy) in self.merge_namespaces(paths) {
            let mut by_ports: BTreeMap<PortSet, Vec<PolicyRef>> = BTreeMap::new();
            for (policy, ports) in by_policy {
                by_ports
                    .entry(ports)
                    .or_default()
                    .push(self.policies[policy].reference.clone());
            }
            for (ports, opened_by) in by_ports {
                leaks.push(Leak::Open {
                    direction,
                    peer: peer.clone(),
                    ports,
                    opened_by,
                });
            }
        }
        leaks.sort();
        let leaks_left_out = leaks.len().saturating_sub(MAX_LEAKS_PER_GROUP);
        leaks.truncate(MAX_LEAKS_PER_GROUP);

        PodGroup {
            namespace: namespace.to_string(),
            pod_count: members.len(),
            representative_pod: members
                .first()
                .map(|&pod| self.pods[pod].name.clone())
                .unwrap_or_default(),
            pods: members
                .iter()
                .map(|&pod| self.pods[pod].name.clone())
                .collect(),
            selected_by: selecting
                .iter()
                .map(|&i| self.policies[i].reference.clone())
                .collect(),
            leaks,
            leaks_left_out,
        }
    }

    /// Turns atoms into reported peers, replacing the pods of a namespace by the
    /// namespace when every outside pod there (two or more) is reached on the same ports
    /// through the same policies.
    fn merge_namespaces(
        &self,
        paths: BTreeMap<(Direction, PeerAtom), ByPolicy>,
    ) -> BTreeMap<(Direction, OutsidePeer), ByPolicy> {
        let mut merged = BTreeMap::new();
        let mut pods_by_namespace: BTreeMap<(Direction, &str), Vec<(usize, ByPolicy)>> =
            BTreeMap::new();
        for ((direction, atom), by_policy) in paths {
            match atom {
                PeerAtom::Pod(pod) => pods_by_namespace
                    .entry((direction, self.pods[pod].namespace.as_str()))
                    .or_default()
                    .push((pod, by_policy)),
                atom => {
                    merged.insert((direction, self.outside_peer(atom)), by_policy);
                }
            }
        }
        for ((direction, namespace), reached) in pods_by_namespace {
            let outside_here = self.outside_pods_in(namespace);
            let alike = reached.windows(2).all(|pair| pair[0].1 == pair[1].1);
            if alike && reached.len() >= 2 && reached.len() == outside_here {
                if let Some((_, by_policy)) = reached.into_iter().next() {
                    let peer = OutsidePeer::Namespace {
                        name: namespace.to_string(),
                        pods: outside_here,
                    };
                    merged.insert((direction, peer), by_policy);
                }
                continue;
            }
            for (pod, by_policy) in reached {
                merged.insert(
                    (direction, self.outside_peer(PeerAtom::Pod(pod))),
                    by_policy,
                );
            }
        }
        merged
    }
}

/// `base` minus `holes`, as disjoint networks. Two networks are either nested or
/// disjoint, so a hole inside a piece splits the piece in halves until the hole is cut
/// out: at most one piece per prefix bit per hole.
fn subtract_networks(base: &[IpNet], holes: &[IpNet]) -> Vec<IpNet> {
    let mut pieces: Vec<IpNet> = base.to_vec();
    for hole in holes {
        let mut kept = Vec::with_capacity(pieces.len());
        let mut pending = pieces;
        while let Some(piece) = pending.pop() {
            if hole.contains(&piece) {
                continue;
            }
            if piece.contains(hole) {
                if let Ok(halves) = piece.subnets(piece.prefix_len() + 1) {
                    pending.extend(halves);
                }
                continue;
            }
            kept.push(piece);
        }
        pieces = kept;
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::super::{FenceInput, fence_policies};
    use super::*;
    use proptest::prelude::*;
    use serde::Deserialize;

    // ---- truth table ------------------------------------------------------------

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    struct TruthTable {
        standard: StandardWorld,
        cases: Vec<Case>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    struct StandardWorld {
        namespace_selector: LabelSelector,
        gateway: Option<EnclaveGateway>,
        namespaces: Vec<NamespaceFixture>,
        pods: Vec<PodFixture>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct NamespaceFixture {
        name: String,
        #[serde(default)]
        labels: BTreeMap<String, String>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct PodFixture {
        namespace: String,
        name: String,
        #[serde(default)]
        labels: BTreeMap<String, String>,
        #[serde(default)]
        ip: Option<IpAddr>,
        #[serde(default)]
        ports: Vec<PortFixture>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct PortFixture {
        name: Option<String>,
        port: i32,
        #[serde(default)]
        protocol: Protocol,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    struct Case {
        name: String,
        /// Why the verdict is what it is, when the case alone does not say.
        #[serde(default)]
        why: String,
        #[serde(default = "with_fence")]
        fence: bool,
        #[serde(default)]
        pod_selector: Option<LabelSelector>,
        #[serde(default, rename = "allowedEgressCIDRs")]
        allowed_egress_cidrs: Vec<String>,
        #[serde(default)]
        extra_pods: Vec<PodFixture>,
        /// Kept as plain data so that a field the NetworkPolicy type does not know
        /// (a typo) is caught instead of silently dropped.
        #[serde(default)]
        policies: Vec<serde_json::Value>,
        groups: Option<Vec<String>>,
        expect: Vec<String>,
    }

    fn with_fence() -> bool {
        true
    }

    impl PodFixture {
        fn to_pod(&self) -> PodInfo {
            PodInfo {
                namespace: self.namespace.clone(),
                name: self.name.clone(),
                labels: self.labels.clone().into(),
                ip: self.ip,
                ports: self
                    .ports
                    .iter()
                    .map(|p| DeclaredPort {
                        name: p.name.clone(),
                        number: p.port,
                        protocol: p.protocol,
                    })
                    .collect(),
            }
        }
    }

    const FENCED_POLICY: &str = "eu-data";

    fn parse_policy(case: &str, value: &serde_json::Value) -> Result<NetworkPolicy, String> {
        let policy: NetworkPolicy = serde_json::from_value(value.clone())
            .map_err(|e| format!("{case}: policy does not parse: {e}"))?;
        let mut round_trip = serde_json::to_value(&policy).map_err(|e| format!("{case}: {e}"))?;
        if let Some(object) = round_trip.as_object_mut() {
            object.remove("apiVersion");
            object.remove("kind");
        }
        if &round_trip != value {
            return Err(format!(
                "{case}: policy has fields NetworkPolicy does not know:\n{value}\nread as\n{round_trip}"
            ));
        }
        Ok(policy)
    }

    fn case_world(standard: &StandardWorld, case: &Case) -> Result<World, String> {
        let namespaces: Vec<NamespaceInfo> = standard
            .namespaces
            .iter()
            .map(|n| NamespaceInfo {
                name: n.name.clone(),
                labels: n.labels.clone(),
            })
            .collect();
        let inside: BTreeSet<String> = namespaces
            .iter()
            .filter(|n| selector_matches(&standard.namespace_selector, &n.labels))
            .map(|n| n.name.clone())
            .collect();
        let mut policies = case
            .policies
            .iter()
            .map(|value| parse_policy(&case.name, value))
            .collect::<Result<Vec<_>, _>>()?;
        if case.fence {
            let fence = fence_policies(&FenceInput {
                policy_name: FENCED_POLICY.to_string(),
                namespace_selector: standard.namespace_selector.clone(),
                pod_selector: case.pod_selector.clone(),
                gateway: standard.gateway.clone(),
                allowed_egress_cidrs: case.allowed_egress_cidrs.clone(),
                dns: DnsPeer::default(),
                namespaces: inside.iter().cloned().collect(),
            })
            .map_err(|e| format!("{}: fence: {e}", case.name))?;
            policies.extend(fence);
        }
        let allowed_cidrs = case
            .allowed_egress_cidrs
            .iter()
            .map(|c| {
                c.parse::<IpNet>()
                    .map_err(|e| format!("{}: {c}: {e}", case.name))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(World {
            namespaces,
            pods: standard
                .pods
                .iter()
                .chain(&case.extra_pods)
                .map(PodFixture::to_pod)
                .collect(),
            network_policies: policies,
            enclave: EnclaveBoundary {
                inside_namespaces: inside,
                in_scope_pod_selector: case.pod_selector.clone(),
                gateway: standard.gateway.clone(),
                dns: DnsPeer::default(),
                allowed_cidrs,
                operator_namespace: None,
            },
        })
    }

    fn group_lines(report: &ReachabilityReport) -> Vec<String> {
        report
            .groups
            .iter()
            .map(|g| {
                let policies: Vec<String> = g.selected_by.iter().map(ToString::to_string).collect();
                format!(
                    "{}/{} x{} [{}]",
                    g.namespace,
                    g.representative_pod,
                    g.pod_count,
                    policies.join(", ")
                )
            })
            .collect()
    }

    fn leak_lines(report: &ReachabilityReport) -> Vec<String> {
        let mut lines = Vec::new();
        for group in &report.groups {
            let at = format!("{}/{}", group.namespace, group.representative_pod);
            lines.extend(group.leaks.iter().map(|leak| format!("{at}: {leak}")));
            if group.leaks_left_out > 0 {
                lines.push(format!(
                    "{at}: {} more leaks left out",
                    group.leaks_left_out
                ));
            }
        }
        lines
    }

    fn check_case(standard: &StandardWorld, case: &Case) -> Result<(), String> {
        let world = case_world(standard, case)?;
        let report = evaluate(&world);
        let mut problems = Vec::new();
        let leaks = leak_lines(&report);
        if leaks != case.expect {
            problems.push(format!(
                "leaks differ\n  expected: {:#?}\n  actual:   {:#?}",
                case.expect, leaks
            ));
        }
        if let Some(expected) = &case.groups {
            let groups = group_lines(&report);
            if &groups != expected {
                problems.push(format!(
                    "groups differ\n  expected: {expected:#?}\n  actual:   {groups:#?}"
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            let why = if case.why.is_empty() {
                String::new()
            } else {
                format!(" ({})", case.why)
            };
            Err(format!("case {}{why}: {}", case.name, problems.join("\n")))
        }
    }

    #[test]
    fn truth_table() {
        let table: TruthTable =
            serde_yaml::from_str(include_str!("testdata/reachability-cases.yaml"))
                .expect("truth table parses");
        assert!(table.cases.len() >= 30, "{} cases", table.cases.len());
        let names: BTreeSet<&str> = table.cases.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names.len(), table.cases.len(), "case names must be unique");
        let failures: Vec<String> = table
            .cases
            .iter()
            .filter_map(|case| check_case(&table.standard, case).err())
            .collect();
        assert!(
            failures.is_empty(),
            "{} of {} cases failed:\n\n{}",
            failures.len(),
            table.cases.len(),
            failures.join("\n\n")
        );
    }

    // ---- unit tests -------------------------------------------------------------

    fn net(text: &str) -> IpNet {
        text.parse().expect("test CIDR")
    }

    #[test]
    fn subtracting_networks_splits_around_holes() {
        let left = subtract_networks(&[net("10.0.0.0/8")], &[net("10.128.0.0/9")]);
        assert_eq!(left, vec![net("10.0.0.0/9")]);
        assert!(subtract_networks(&[net("10.1.0.0/16")], &[net("10.0.0.0/8")]).is_empty());
        let mut left = subtract_networks(&[net("10.0.0.0/8")], &[net("10.0.0.0/10")]);
        left.sort();
        assert_eq!(left, vec![net("10.64.0.0/10"), net("10.128.0.0/9")]);
        // Families never mix.
        assert_eq!(
            subtract_networks(&[net("::/0")], &[net("0.0.0.0/0")]),
            vec![net("::/0")]
        );
        let everything_but_one = subtract_networks(&[net("::/0")], &[net("2001:db8::1/128")]);
        assert_eq!(everything_but_one.len(), 128);
    }

    #[test]
    fn port_sets_are_normalized() {
        let tcp = |a, b| PortSet::range(Protocol::Tcp, a, b);
        assert_eq!(tcp(80, 90).union(&tcp(91, 100)), tcp(80, 100));
        assert_eq!(tcp(80, 90).union(&tcp(85, 95)), tcp(80, 95));
        assert_eq!(tcp(80, 90).intersection(&tcp(85, 95)), tcp(85, 90));
        assert!(tcp(80, 90).intersection(&tcp(91, 95)).is_empty());
        assert_eq!(
            tcp(1, 100).difference(&tcp(50, 60)),
            tcp(1, 49).union(&tcp(61, 100))
        );
        assert!(PortSet::all().difference(&PortSet::all()).is_empty());
        assert!(tcp(90, 80).is_empty());
        assert!(PortSet::api_range(Protocol::Tcp, 0, 10).is_empty());
        assert!(PortSet::api_range(Protocol::Tcp, 70000, 70000).is_empty());
        assert_eq!(
            PortSet::api_range(Protocol::Tcp, 65000, 70000),
            tcp(65000, 65535)
        );
        assert!(tcp(80, 80).contains(Protocol::Tcp, 80));
        assert!(!tcp(80, 80).contains(Protocol::Udp, 80));
    }

    #[test]
    fn port_sets_read_well() {
        let tcp = |a, b| PortSet::range(Protocol::Tcp, a, b);
        assert_eq!(PortSet::all().to_string(), "any port");
        assert_eq!(PortSet::empty().to_string(), "no port");
        assert_eq!(
            tcp(80, 80)
                .union(&tcp(8000, 8100))
                .union(&PortSet::protocol(Protocol::Udp))
                .to_string(),
            "80/TCP, 8000-8100/TCP, any/UDP"
        );
        assert_eq!(
            PortSet::all().difference(&tcp(53, 53)).to_string(),
            "any port except 53/TCP"
        );
    }

    #[test]
    fn pods_and_namespaces_convert_from_api_objects() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"namespace": "eu-a", "name": "api", "labels": {"app": "api"}},
            "spec": {
                "containers": [{"name": "c", "ports": [
                    {"name": "http", "containerPort": 8080},
                    {"name": "odd", "containerPort": 9, "protocol": "QUIC"}
                ]}],
                "initContainers": [{"name": "s", "ports": [{"containerPort": 53, "protocol": "UDP"}]}]
            },
            "status": {"podIP": "10.1.2.3"}
        }))
        .expect("pod");
        let info = PodInfo::from_pod(&pod).expect("named");
        assert_eq!(info.ip, Some("10.1.2.3".parse().expect("ip")));
        assert_eq!(
            info.ports[..],
            [
                DeclaredPort {
                    name: Some("http".to_string()),
                    number: 8080,
                    protocol: Protocol::Tcp
                },
                DeclaredPort {
                    name: None,
                    number: 53,
                    protocol: Protocol::Udp
                },
            ]
        );
        assert_eq!(PodInfo::from_pod(&Pod::default()), None);
        let namespace: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "eu-a", "labels": {"residency": "eu"}}
        }))
        .expect("namespace");
        let info = NamespaceInfo::from_namespace(&namespace).expect("named");
        assert_eq!(info.labels.get("residency").map(String::as_str), Some("eu"));
    }

    #[test]
    fn leaks_per_group_are_capped_and_counted() {
        let peers: Vec<serde_json::Value> = (0..25)
            .map(|i| serde_json::json!({"ipBlock": {"cidr": format!("198.51.{i}.0/24")}}))
            .collect();
        let policy: NetworkPolicy = serde_json::from_value(serde_json::json!({
            "metadata": {"namespace": "in", "name": "many"},
            "spec": {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"to": peers}]}
        }))
        .expect("policy");
        let world = World {
            namespaces: vec![],
            pods: vec![PodInfo {
                namespace: "in".to_string(),
                name: "p".to_string(),
                ..PodInfo::default()
            }],
            network_policies: vec![policy],
            enclave: EnclaveBoundary {
                inside_namespaces: BTreeSet::from(["in".to_string()]),
                ..EnclaveBoundary::default()
            },
        };
        let report = evaluate(&world);
        assert_eq!(report.groups.len(), 1);
        let group = &report.groups[0];
        // Ingress is not isolated (one leak) plus 25 blocks.
        assert_eq!(group.leaks.len(), MAX_LEAKS_PER_GROUP);
        assert_eq!(group.leaks_left_out, 26 - MAX_LEAKS_PER_GROUP);
        assert_eq!(group.leaks[0], Leak::NotIsolated(Direction::Ingress));
        assert!(report.has_leaks());
    }

    /// A volume move's progress policy opens its senders' port to the operator's
    /// namespace: no leak. The same rule opening it to another namespace is one.
    #[test]
    fn the_operators_namespace_reaching_a_senders_progress_port_is_no_leak() {
        let world = |from: &str| {
            let fence: NetworkPolicy = serde_json::from_value(serde_json::json!({
                "metadata": {"namespace": "in", "name": "enclave-fence-deny-p"},
                "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
            }))
            .expect("fence");
            let progress: NetworkPolicy = serde_json::from_value(serde_json::json!({
                "metadata": {"namespace": "in", "name": "m-mover-progress"},
                "spec": {
                    "podSelector": {"matchLabels": {"enclave.dev/mover-side": "sender"}},
                    "policyTypes": ["Ingress"],
                    "ingress": [{
                        "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": from}}}],
                        "ports": [{"port": 8874}],
                    }],
                }
            }))
            .expect("progress");
            let pod = |namespace: &str, name: &str, labels: &[(&str, &str)]| PodInfo {
                namespace: namespace.to_string(),
                name: name.to_string(),
                labels: labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<BTreeMap<_, _>>()
                    .into(),
                ..PodInfo::default()
            };
            World {
                namespaces: vec![],
                pods: vec![
                    pod(
                        "in",
                        "m-first-sender",
                        &[("enclave.dev/mover-side", "sender")],
                    ),
                    pod("enclave-system", "enclave-operator-0", &[]),
                    pod("elsewhere", "other", &[]),
                ],
                network_policies: vec![fence, progress],
                enclave: EnclaveBoundary {
                    inside_namespaces: BTreeSet::from(["in".to_string()]),
                    operator_namespace: Some("enclave-system".into()),
                    ..EnclaveBoundary::default()
                },
            }
        };
        assert!(!evaluate(&world("enclave-system")).has_leaks());
        let report = evaluate(&world("elsewhere"));
        assert!(report.has_leaks(), "{report:?}");
    }

    #[test]
    fn policy_without_namespace_selects_nothing() {
        let policy: NetworkPolicy = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "floating"},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
        }))
        .expect("policy");
        assert!(ParsedPolicy::new(&policy).is_none());
    }

    // ---- properties -------------------------------------------------------------

    const NAMESPACES: [(&str, &[(&str, &str)]); 6] = [
        ("in-a", &[("residency", "eu"), ("team", "x")]),
        ("in-b", &[("residency", "eu")]),
        ("out-a", &[("residency", "us"), ("team", "x")]),
        ("out-b", &[]),
        ("kube-system", &[]),
        ("gw", &[("role", "gateway")]),
    ];
    const INSIDE: [&str; 2] = ["in-a", "in-b"];
    const CIDRS: [&str; 8] = [
        "10.0.0.0/8",
        "10.20.0.0/16",
        "10.20.5.0/24",
        "0.0.0.0/0",
        "203.0.113.0/24",
        "2001:db8::/32",
        "2001:db8:1::/48",
        "::/0",
    ];

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn world_namespaces() -> Vec<NamespaceInfo> {
        NAMESPACES
            .iter()
            .map(|(name, pairs)| NamespaceInfo {
                name: name.to_string(),
                labels: labels(pairs),
            })
            .collect()
    }

    fn arb_label() -> impl Strategy<Value = (String, String)> {
        prop_oneof![
            prop::sample::select(vec!["a", "b", "c"])
                .prop_map(|v| ("app".to_string(), v.to_string())),
            prop::sample::select(vec!["eu", "us"])
                .prop_map(|v| ("residency".to_string(), v.to_string())),
            Just(("team".to_string(), "x".to_string())),
            Just(("role".to_string(), "gateway".to_string())),
            Just(("k8s-app".to_string(), "kube-dns".to_string())),
        ]
    }

    /// Selectors biased towards matching something: empty and single-label selectors
    /// over the labels pods and namespaces carry, and now and then expressions,
    /// including malformed ones.
    fn arb_selector() -> impl Strategy<Value = LabelSelector> {
        let requirement = (
            prop::sample::select(vec!["app", "residency", "team", "k8s-app"]),
            prop::sample::select(vec!["In", "NotIn", "Exists", "DoesNotExist", "Bogus"]),
            prop::collection::vec(
                prop::sample::select(vec!["a", "b", "eu", "x", "kube-dns"]),
                0..3,
            ),
        )
            .prop_map(|(key, operator, values)| {
                k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement {
                    key: key.to_string(),
                    operator: operator.to_string(),
                    values: Some(values.into_iter().map(String::from).collect()),
                }
            });
        prop_oneof![
            3 => Just(LabelSelector::default()),
            3 => arb_label().prop_map(|(key, value)| LabelSelector {
                match_labels: Some(BTreeMap::from([(key, value)])),
                match_expressions: None,
            }),
            1 => prop::collection::vec(requirement, 1..3).prop_map(|requirements| LabelSelector {
                match_labels: None,
                match_expressions: Some(requirements),
            }),
        ]
    }

    fn arb_peer() -> impl Strategy<Value = NetworkPolicyPeer> {
        prop_oneof![
            arb_selector().prop_map(|s| NetworkPolicyPeer {
                pod_selector: Some(s),
                ..Default::default()
            }),
            arb_selector().prop_map(|s| NetworkPolicyPeer {
                namespace_selector: Some(s),
                ..Default::default()
            }),
            (arb_selector(), arb_selector()).prop_map(|(n, p)| NetworkPolicyPeer {
                namespace_selector: Some(n),
                pod_selector: Some(p),
                ip_block: None,
            }),
            (
                prop::sample::select(CIDRS.to_vec()),
                prop::collection::vec(prop::sample::select(CIDRS.to_vec()), 0..2)
            )
                .prop_map(|(cidr, except)| NetworkPolicyPeer {
                    ip_block: Some(IPBlock {
                        cidr: cidr.to_string(),
                        except: Some(except.into_iter().map(String::from).collect()),
                    }),
                    ..Default::default()
                }),
        ]
    }

    fn arb_port() -> impl Strategy<Value = NetworkPolicyPort> {
        let port = prop_oneof![
            Just(None),
            prop::sample::select(vec![53, 80, 443, 3868, 8080])
                .prop_map(|p| Some(IntOrString::Int(p))),
            prop::sample::select(vec!["http", "dns", "alt", "nope"])
                .prop_map(|n| Some(IntOrString::String(n.to_string()))),
        ];
        (
            prop::option::of(prop::sample::select(vec!["TCP", "UDP", "SCTP"])),
            port,
            prop::option::of(0..100i32),
        )
            .prop_map(|(protocol, port, span)| NetworkPolicyPort {
                end_port: match &port {
                    Some(IntOrString::Int(p)) => span.map(|s| p + s),
                    _ => None,
                },
                protocol: protocol.map(String::from),
                port,
            })
    }

    type ArbRule = (
        Option<Vec<NetworkPolicyPeer>>,
        Option<Vec<NetworkPolicyPort>>,
    );

    fn arb_rule() -> impl Strategy<Value = ArbRule> {
        (
            prop::option::of(prop::collection::vec(arb_peer(), 0..3)),
            prop::option::of(prop::collection::vec(arb_port(), 0..3)),
        )
    }

    /// A NetworkPolicy in one of `namespaces`, named by the caller so names stay unique.
    fn arb_policy(namespaces: Vec<&'static str>) -> impl Strategy<Value = NetworkPolicy> {
        (
            prop::sample::select(namespaces),
            prop::option::of(arb_selector()),
            prop::sample::select(vec![
                None,
                Some(vec!["Ingress"]),
                Some(vec!["Egress"]),
                Some(vec!["Ingress", "Egress"]),
            ]),
            prop::option::of(prop::collection::vec(arb_rule(), 1..3)),
            prop::option::of(prop::collection::vec(arb_rule(), 1..3)),
        )
            .prop_map(
                |(namespace, pod_selector, types, ingress, egress)| NetworkPolicy {
                    metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                        namespace: Some(namespace.to_string()),
                        ..Default::default()
                    },
                    spec: Some(k8s_openapi::api::networking::v1::NetworkPolicySpec {
                        pod_selector,
                        policy_types: types.map(|t| t.into_iter().map(String::from).collect()),
                        ingress: ingress.map(|rules| {
                            rules
                                .into_iter()
                                .map(|(from, ports)| {
                                    k8s_openapi::api::networking::v1::NetworkPolicyIngressRule {
                                        from,
                                        ports,
                                    }
                                })
                                .collect()
                        }),
                        egress: egress.map(|rules| {
                            rules
                                .into_iter()
                                .map(|(to, ports)| {
                                    k8s_openapi::api::networking::v1::NetworkPolicyEgressRule {
                                        to,
                                        ports,
                                    }
                                })
                                .collect()
                        }),
                    }),
                },
            )
    }

    fn named(policies: Vec<NetworkPolicy>, prefix: &str) -> Vec<NetworkPolicy> {
        policies
            .into_iter()
            .enumerate()
            .map(|(i, mut policy)| {
                policy.metadata.name = Some(format!("{prefix}-{i}"));
                policy
            })
            .collect()
    }

    fn arb_pods() -> impl Strategy<Value = Vec<PodInfo>> {
        let declared = prop::sample::subsequence(
            vec![
                ("http", 80, Protocol::Tcp),
                ("dns", 53, Protocol::Udp),
                ("alt", 8080, Protocol::Tcp),
                ("diameter", 3868, Protocol::Sctp),
            ],
            0..3,
        );
        prop::collection::vec(
            (
                // Inside namespaces twice as likely, so that most worlds have pods to evaluate.
                prop::sample::select(vec![
                    "in-a",
                    "in-a",
                    "in-b",
                    "in-b",
                    "out-a",
                    "out-b",
                    "kube-system",
                    "gw",
                ]),
                prop::collection::vec(arb_label(), 0..3),
                declared,
            ),
            2..10,
        )
        .prop_map(|pods| {
            pods.into_iter()
                .enumerate()
                .map(|(i, (namespace, labels, ports))| PodInfo {
                    namespace: namespace.to_string(),
                    name: format!("pod-{i}"),
                    labels: Arc::new(labels.into_iter().collect()),
                    ip: None,
                    ports: ports
                        .into_iter()
                        .map(|(name, number, protocol)| DeclaredPort {
                            name: Some(name.to_string()),
                            number,
                            protocol,
                        })
                        .collect(),
                })
                .collect()
        })
    }

    fn gateway() -> EnclaveGateway {
        EnclaveGateway {
            namespace_selector: LabelSelector {
                match_labels: Some(labels(&[("role", "gateway")])),
                match_expressions: None,
            },
            pod_selector: Some(LabelSelector {
                match_labels: Some(labels(&[("app", "a")])),
                match_expressions: None,
            }),
        }
    }

    fn arb_boundary() -> impl Strategy<Value = EnclaveBoundary> {
        (
            prop::option::of(arb_selector()),
            prop::sample::subsequence(CIDRS.to_vec(), 0..3),
        )
            .prop_map(|(in_scope_pod_selector, cidrs)| EnclaveBoundary {
                inside_namespaces: INSIDE.iter().map(|n| n.to_string()).collect(),
                in_scope_pod_selector,
                gateway: Some(gateway()),
                dns: DnsPeer::default(),
                allowed_cidrs: cidrs.iter().map(|c| net(c)).collect(),
                operator_namespace: None,
            })
    }

    fn all_namespaces() -> Vec<&'static str> {
        NAMESPACES.iter().map(|(n, _)| *n).collect()
    }

    fn outside_namespaces() -> Vec<&'static str> {
        all_namespaces()
            .into_iter()
            .filter(|n| !INSIDE.contains(n))
            .collect()
    }

    /// A policy isolating every pod of `namespace` both ways and allowing nothing.
    fn deny_all(namespace: &str) -> NetworkPolicy {
        serde_json::from_value(serde_json::json!({
            "metadata": {"namespace": namespace, "name": "zz-deny-all"},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
        }))
        .unwrap_or_default()
    }

    fn fence_for(boundary: &EnclaveBoundary) -> Vec<NetworkPolicy> {
        fence_policies(&FenceInput {
            policy_name: "eu-data".to_string(),
            namespace_selector: LabelSelector {
                match_labels: Some(labels(&[("residency", "eu")])),
                match_expressions: None,
            },
            pod_selector: boundary.in_scope_pod_selector.clone(),
            gateway: boundary.gateway.clone(),
            allowed_egress_cidrs: boundary
                .allowed_cidrs
                .iter()
                .map(ToString::to_string)
                .collect(),
            dns: boundary.dns.clone(),
            namespaces: boundary.inside_namespaces.iter().cloned().collect(),
        })
        .unwrap_or_default()
    }

    type Paths = BTreeMap<(String, Direction), Option<BTreeMap<String, PortSet>>>;

    /// Every outside path of every in-scope pod, before grouping and merging: `None` for
    /// a direction the pod is not isolated in.
    fn paths(world: &World) -> Paths {
        let model = Model::new(world);
        let mut out = Paths::new();
        for pod in model.in_scope_pods() {
            let pod_name = format!("{}/{}", model.pods[pod].namespace, model.pods[pod].name);
            for direction in Direction::BOTH {
                let side = match model.side(pod, direction) {
                    Side::NotIsolated => None,
                    Side::Isolated(openings) => {
                        let mut by_peer: BTreeMap<String, PortSet> = BTreeMap::new();
                        for opening in openings {
                            let key = model.outside_peer(opening.peer).to_string();
                            let ports = by_peer.entry(key).or_default();
                            *ports = ports.union(&opening.ports);
                        }
                        Some(by_peer)
                    }
                };
                out.insert((pod_name.clone(), direction), side);
            }
        }
        out
    }

    fn assert_contains(before: &Paths, after: &Paths) -> Result<(), TestCaseError> {
        for (key, side) in before {
            let Some(side) = side else { continue };
            let Some(Some(after_side)) = after.get(key) else {
                return Err(TestCaseError::fail(format!("{key:?} lost its paths")));
            };
            for (peer, ports) in side {
                let after_ports = after_side.get(peer).cloned().unwrap_or_default();
                prop_assert!(
                    ports.difference(&after_ports).is_empty(),
                    "{:?}: path to {} on {} shrank to {}",
                    key,
                    peer,
                    ports,
                    after_ports
                );
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 384, ..ProptestConfig::default() })]

        /// Once every pod is isolated both ways (so that no policy can newly isolate
        /// one), adding a NetworkPolicy only ever adds paths: allows are a union.
        #[test]
        fn adding_a_policy_never_removes_a_path(
            pods in arb_pods(),
            boundary in arb_boundary(),
            policies in prop::collection::vec(arb_policy(all_namespaces()), 0..8),
            extra in arb_policy(all_namespaces()),
        ) {
            let mut network_policies: Vec<NetworkPolicy> =
                all_namespaces().into_iter().map(deny_all).collect();
            network_policies.extend(named(policies, "tenant"));
            let before = World { namespaces: world_namespaces(), pods, network_policies, enclave: boundary };
            let mut after = before.clone();
            let mut extra = extra;
            extra.metadata.name = Some("added".to_string());
            after.network_policies.push(extra);
            assert_contains(&paths(&before), &paths(&after))?;
        }

        /// The fence alone never leaks, whatever the pods and the boundary, and the
        /// fence never opens a leak that tenant policies are found to open.
        #[test]
        fn without_tenant_policies_only_the_fence_remains_and_it_does_not_leak(
            pods in arb_pods(),
            boundary in arb_boundary(),
            tenant in prop::collection::vec(arb_policy(all_namespaces()), 0..5),
        ) {
            let fence = fence_for(&boundary);
            prop_assert!(!fence.is_empty());
            let fence_refs: BTreeSet<String> = fence
                .iter()
                .map(|p| format!("{}/{}", p.metadata.namespace.as_deref().unwrap_or_default(), p.metadata.name.as_deref().unwrap_or_default()))
                .collect();
            let mut world = World { namespaces: world_namespaces(), pods, network_policies: fence.clone(), enclave: boundary };
            world.network_policies.extend(named(tenant, "tenant"));

            let report = evaluate(&world);
            for group in &report.groups {
                for leak in &group.leaks {
                    if let Leak::Open { opened_by, .. } = leak {
                        for policy in opened_by {
                            prop_assert!(!fence_refs.contains(&policy.to_string()), "the fence opens {}", leak);
                        }
                    }
                }
            }

            world.network_policies = fence;
            let report = evaluate(&world);
            prop_assert!(!report.has_leaks(), "{:#?}", report);
            for group in &report.groups {
                for policy in &group.selected_by {
                    prop_assert!(fence_refs.contains(&policy.to_string()));
                }
            }
        }

        /// Deny-everything in every namespace: whatever other namespaces' policies open,
        /// the in-scope pods are isolated both ways and reach nothing outside.
        #[test]
        fn default_deny_everywhere_has_no_leak(
            pods in arb_pods(),
            boundary in arb_boundary(),
            elsewhere in prop::collection::vec(arb_policy(outside_namespaces()), 0..5),
        ) {
            let mut network_policies: Vec<NetworkPolicy> =
                all_namespaces().into_iter().map(deny_all).collect();
            network_policies.extend(named(elsewhere, "outside"));
            let world = World { namespaces: world_namespaces(), pods, network_policies, enclave: boundary };
            let report = evaluate(&world);
            prop_assert!(!report.has_leaks(), "{:#?}", report);
        }

        /// The verdict depends on what the world holds, not on the order it is listed in.
        #[test]
        fn result_is_independent_of_input_order(
            pods in arb_pods(),
            boundary in arb_boundary(),
            tenant in prop::collection::vec(arb_policy(all_namespaces()), 0..6),
            with_fence in any::<bool>(),
            rotation in 0..16usize,
        ) {
            let mut network_policies = named(tenant, "tenant");
            if with_fence {
                network_policies.extend(fence_for(&boundary));
            }
            let world = World { namespaces: world_namespaces(), pods, network_policies, enclave: boundary };
            let mut shuffled = world.clone();
            shuffled.namespaces.reverse();
            shuffled.pods.reverse();
            let pods_len = shuffled.pods.len().max(1);
            shuffled.pods.rotate_left(rotation % pods_len);
            shuffled.network_policies.reverse();
            let policies_len = shuffled.network_policies.len().max(1);
            shuffled.network_policies.rotate_left(rotation % policies_len);
            shuffled.enclave.allowed_cidrs.reverse();
            for policy in &mut shuffled.network_policies {
                if let Some(spec) = policy.spec.as_mut() {
                    for rule in spec.ingress.iter_mut().flatten() {
                        rule.from.iter_mut().for_each(|peers| peers.reverse());
                        rule.ports.iter_mut().for_each(|ports| ports.reverse());
                    }
                    for rule in spec.egress.iter_mut().flatten() {
                        rule.to.iter_mut().for_each(|peers| peers.reverse());
                    }
                    spec.ingress.iter_mut().for_each(|rules| rules.reverse());
                    spec.egress.iter_mut().for_each(|rules| rules.reverse());
                }
            }
            prop_assert_eq!(evaluate(&world), evaluate(&shuffled));
        }
    }
}
