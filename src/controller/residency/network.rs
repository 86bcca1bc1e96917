//! The network step: the NetworkPolicies that fence the policy's namespaces (built by
//! [`crate::network::fence`], pure; applied here, healed when edited or deleted, removed
//! where they no longer belong), and the leaks the union of every NetworkPolicy opens
//! ([`crate::network::reachability`], pure).

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::{Arc, Mutex},
};

use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicySpec};
use kube::{
    Api, Resource, ResourceExt,
    api::{DeleteParams, Patch, PatchParams},
    runtime::events::EventType,
};

use super::Residency;
use crate::{
    cache::NamedPort,
    catalog::Catalog,
    controller::{Error, Result, publish},
    crd::{NetworkIsolation, ResidencyPolicy, Violation},
    decisions::{Kind, Record, Subject},
    names::FIELD_MANAGER,
    network::{
        DnsPeer, EnclaveGateway,
        fence::{self, FenceInput, MANAGED_BY_LABEL, MANAGED_BY_VALUE, POLICY_LABEL},
        reachability::{self, DeclaredPort, EnclaveBoundary, Leak, NamespaceInfo, PodInfo},
    },
    scope::{self, ResolvedEnclave},
};

/// What the fence looked like after our last write, per policy (by UID), namespace and
/// name: an observed spec that differs was edited by someone else; a missing one was
/// deleted. Each entry also keeps the namespace's UID: a fence that went with its
/// namespace (or with its policy, whose UID then changes) was not tampered with.
#[derive(Default)]
pub struct FenceMemory(Mutex<HashMap<FenceKey, Remembered>>);

type FenceKey = (String, String, String);

struct Remembered {
    namespace_uid: Option<String>,
    spec: NetworkPolicySpec,
}

impl FenceMemory {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<FenceKey, Remembered>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The in-scope namespaces of a policy (the operator's own never is).
pub fn namespaces<C: Catalog>(
    policy: &ResidencyPolicy,
    catalog: &C,
    operator_namespace: &str,
) -> Vec<String> {
    catalog
        .namespaces()
        .into_iter()
        .filter(|(name, labels)| {
            name != operator_namespace && scope::covers_namespace(policy, name, labels)
        })
        .map(|(name, _)| name)
        .collect()
}

/// The enclave's gateway as the fence and reachability take it: the pods outside
/// that may talk to the enclave's.
fn gateway(enclave: &ResolvedEnclave) -> Option<EnclaveGateway> {
    enclave
        .enclave
        .spec
        .gateway
        .as_ref()
        .map(|g| EnclaveGateway {
            namespace_selector: g.namespace_selector.to_label_selector(),
            pod_selector: g
                .pod_selector
                .as_ref()
                .map(crate::crd::Selector::to_label_selector),
        })
}

/// The fence NetworkPolicies the policy should own. Pure.
pub fn desired(
    policy: &ResidencyPolicy,
    enclave: &ResolvedEnclave,
    namespaces: &[String],
) -> std::result::Result<Vec<NetworkPolicy>, fence::FenceError> {
    if policy.spec.network.isolation == NetworkIsolation::None {
        return Ok(Vec::new());
    }
    let gateway = gateway(enclave);
    let input = FenceInput {
        policy_name: policy.name_any(),
        namespace_selector: policy.spec.match_.namespace_selector.to_label_selector(),
        pod_selector: policy
            .spec
            .match_
            .pod_selector
            .as_ref()
            .map(crate::crd::Selector::to_label_selector),
        gateway,
        allowed_egress_cidrs: policy.spec.network.allow_egress_cidrs.clone(),
        dns: DnsPeer::default(),
        namespaces: namespaces.to_vec(),
    };
    let mut policies = fence::fence_policies(&input)?;
    let owner = policy.controller_owner_ref(&());
    for np in &mut policies {
        np.metadata.owner_references = owner.clone().map(|o| vec![o]);
    }
    Ok(policies)
}

fn key(np: &NetworkPolicy) -> (String, String) {
    (np.namespace().unwrap_or_default(), np.name_any())
}

/// Applies the fence, removes what no longer belongs, and records what had to be healed.
pub async fn apply(
    state: &Residency,
    policy: &ResidencyPolicy,
    desired: Vec<NetworkPolicy>,
) -> Result<usize> {
    let ctx = &state.ctx;
    let name = policy.name_any();
    let label = fence::policy_label_value(&name);
    let owned: Vec<_> = ctx
        .caches
        .network_policies()
        .into_iter()
        .filter(|np| {
            np.labels().get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGED_BY_VALUE)
                && np.labels().get(POLICY_LABEL) == Some(&label)
        })
        .collect();
    let wanted: BTreeSet<(String, String)> = desired.iter().map(key).collect();
    let policy_uid = policy.uid().unwrap_or_default();
    let namespace_uid = |namespace: &str| {
        ctx.caches
            .namespaces
            .store
            .get(&kube::runtime::reflector::ObjectRef::new(namespace))
            .and_then(|n| n.uid())
    };
    // Forget what no longer belongs: fences of this policy outside its namespaces now,
    // and those of policies that are gone.
    {
        let live: BTreeSet<String> = ctx
            .caches
            .policies()
            .iter()
            .filter_map(|p| p.uid())
            .collect();
        state.fence.lock().retain(|(uid, namespace, np_name), _| {
            live.contains(uid)
                && (uid != &policy_uid || wanted.contains(&(namespace.clone(), np_name.clone())))
        });
    }
    let mut healed = 0;
    for np in &desired {
        let (namespace, np_name) = key(np);
        let observed = owned
            .iter()
            .find(|o| key(o) == (namespace.clone(), np_name.clone()));
        let memory_key = (policy_uid.clone(), namespace.clone(), np_name.clone());
        let current_namespace = namespace_uid(&namespace);
        let drifted = match state.fence.lock().get(&memory_key) {
            // The namespace was deleted and made again: its fence went with it.
            Some(last) if last.namespace_uid != current_namespace => false,
            // We wrote it before: gone, or changed since, means someone else did that.
            Some(_) if observed.is_none() => true,
            Some(last) => observed.and_then(|o| o.spec.as_ref()) != Some(&last.spec),
            None => false,
        };
        let api: Api<NetworkPolicy> = Api::namespaced(ctx.client.clone(), &namespace);
        let applied = api
            .patch(
                &np_name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(np),
            )
            .await
            .map_err(Error::Kube)?;
        state.fence.lock().insert(
            memory_key,
            Remembered {
                namespace_uid: current_namespace,
                spec: applied.spec.clone().unwrap_or_default(),
            },
        );
        if drifted {
            healed += 1;
            let message = format!(
                "NetworkPolicy {namespace}/{np_name} of the enclave's fence was {} and has been restored",
                if observed.is_none() {
                    "deleted"
                } else {
                    "changed"
                }
            );
            tracing::info!(%namespace, networkpolicy = %np_name, "fence healed");
            ctx.sink.record(Record::new(
                Kind::NetworkPolicyHealed,
                Some(&name),
                Subject::new("NetworkPolicy", Some(&namespace), &np_name),
                message.clone(),
            ));
            publish(
                ctx,
                &policy.object_ref(&()),
                EventType::Warning,
                "FenceHealed",
                "Fence",
                message,
            )
            .await;
        }
    }
    let mut all_namespaces = None;
    for np in owned.iter().filter(|np| !wanted.contains(&key(np))) {
        let (namespace, np_name) = key(np);
        match Api::<NetworkPolicy>::namespaced(ctx.client.clone(), &namespace)
            .delete(&np_name, &DeleteParams::default())
            .await
        {
            // Removed by us: recorded, with why. One already gone (with its namespace)
            // was not removed by the operator.
            Ok(_) => {
                let namespaces = all_namespaces
                    .get_or_insert_with(|| crate::catalog::Catalog::namespaces(&ctx.caches));
                let (reason, why) = super::leaving::removal(
                    policy,
                    &namespace,
                    namespaces,
                    &ctx.admission.operator_namespace,
                );
                let message = format!(
                    "NetworkPolicy {namespace}/{np_name} of the enclave's fence was removed: {why}"
                );
                tracing::info!(%namespace, networkpolicy = %np_name, reason, "fence removed");
                ctx.sink.record(
                    Record::new(
                        Kind::FenceRemoved,
                        Some(&name),
                        Subject::new("NetworkPolicy", Some(&namespace), &np_name),
                        message.clone(),
                    )
                    .with("reason", reason),
                );
                let related = k8s_openapi::api::core::v1::ObjectReference {
                    api_version: Some("networking.k8s.io/v1".into()),
                    kind: Some("NetworkPolicy".into()),
                    namespace: Some(namespace.clone()),
                    name: Some(np_name.clone()),
                    ..Default::default()
                };
                crate::controller::publish_related(
                    ctx,
                    &policy.object_ref(&()),
                    Some(related),
                    EventType::Normal,
                    "FenceRemoved",
                    "Fence",
                    message,
                )
                .await;
            }
            Err(kube::Error::Api(_)) => {}
            Err(error) => return Err(Error::Kube(error)),
        }
        state
            .fence
            .lock()
            .remove(&(policy_uid.clone(), namespace, np_name));
    }
    Ok(healed)
}

/// What the reachability step found.
#[derive(Debug, Default)]
pub struct LeakAssessment {
    pub violations: Vec<Violation>,
    pub leaks: i32,
}

/// The leaks of the policy's pods through the union of all NetworkPolicies. Pure.
pub fn leaks<C: Catalog>(
    policy: &ResidencyPolicy,
    enclave: &ResolvedEnclave,
    catalog: &C,
    inside: &[String],
) -> LeakAssessment {
    reachability_report(policy, enclave, catalog, inside)
        .map(|report| leak_assessment(&report))
        .unwrap_or_default()
}

/// What the union of all NetworkPolicies lets the policy's pods reach, group by group;
/// `None` when the policy asks for no network isolation. Pure. The audit report reads
/// the groups (every pod's verdict), the controller only [`leak_assessment`].
pub fn reachability_report<C: Catalog>(
    policy: &ResidencyPolicy,
    enclave: &ResolvedEnclave,
    catalog: &C,
    inside: &[String],
) -> Option<reachability::ReachabilityReport> {
    if policy.spec.network.isolation == NetworkIsolation::None {
        return None;
    }
    let namespaces: Vec<NamespaceInfo> = catalog
        .namespaces()
        .into_iter()
        .map(|(name, labels)| NamespaceInfo { name, labels })
        .collect();
    let summaries = catalog.pod_summaries();
    // Pods share their ports list with the others of their workload (the cache interns
    // them): convert each distinct list once, not once per pod.
    let mut converted: HashMap<Arc<[NamedPort]>, Arc<[DeclaredPort]>> = HashMap::new();
    let mut pods: Vec<PodInfo> = Vec::with_capacity(summaries.len());
    for p in summaries.into_iter().filter(|p| !p.terminating) {
        let ports = converted
            .entry(p.named_ports.clone())
            .or_insert_with(|| {
                p.named_ports
                    .iter()
                    .filter_map(|port| {
                        Some(DeclaredPort {
                            name: Some(port.name.clone()),
                            number: port.number,
                            protocol: crate::network::Protocol::parse(&port.protocol)?,
                        })
                    })
                    .collect()
            })
            .clone();
        pods.push(PodInfo {
            namespace: p.namespace,
            name: p.name,
            labels: p.labels,
            ip: None,
            ports,
        });
    }
    let world = reachability::World {
        namespaces,
        pods,
        network_policies: catalog
            .network_policies()
            .iter()
            .map(|np| (**np).clone())
            .collect(),
        enclave: EnclaveBoundary {
            inside_namespaces: inside.iter().cloned().collect(),
            in_scope_pod_selector: policy
                .spec
                .match_
                .pod_selector
                .as_ref()
                .map(crate::crd::Selector::to_label_selector),
            gateway: gateway(enclave),
            dns: DnsPeer::default(),
            allowed_cidrs: policy
                .spec
                .network
                .allow_egress_cidrs
                .iter()
                .filter_map(|c| c.parse().ok())
                .collect(),
            operator_namespace: Some(crate::coverage::operator_namespace().to_string()),
        },
    };
    Some(reachability::evaluate(&world))
}

/// The leaking groups of a reachability report as violations, one per group. Pure.
pub fn leak_assessment(report: &reachability::ReachabilityReport) -> LeakAssessment {
    let mut assessment = LeakAssessment::default();
    for group in report.groups.iter().filter(|g| !g.leaks.is_empty()) {
        let count = group.leaks.len() + group.leaks_left_out;
        assessment.leaks += i32::try_from(count).unwrap_or(i32::MAX);
        let reason = if group
            .leaks
            .iter()
            .any(|l| matches!(l, Leak::NotIsolated(_)))
        {
            "NotFenced"
        } else {
            "NetworkLeak"
        };
        let shown: Vec<String> = group
            .leaks
            .iter()
            .take(3)
            .map(ToString::to_string)
            .collect();
        assessment.violations.push(Violation {
            kind: "Pod".into(),
            namespace: Some(group.namespace.clone()),
            name: group.representative_pod.clone(),
            reason: reason.into(),
            message: format!(
                "{} pod(s) like {} can reach outside the enclave: {}{}",
                group.pod_count,
                group.representative_pod,
                shown.join("; "),
                if count > shown.len() {
                    format!(" (and {} more)", count - shown.len())
                } else {
                    String::new()
                }
            ),
        });
    }
    assessment
}

/// Labels of a NetworkPolicy the operator owns, for tests and the audit report.
pub fn owned_labels(policy: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (MANAGED_BY_LABEL.to_string(), MANAGED_BY_VALUE.to_string()),
        (POLICY_LABEL.to_string(), fence::policy_label_value(policy)),
    ])
}
