//! Is an engine in force in the API server — checked, not assumed? Writing an
//! admission object is not enforcing it: the API server loads webhook configurations
//! and admission policies through its own informers, and compiles policies, a moment
//! later. An engine switch (`spec.admission.engine`, or the operator's `--admission`)
//! removes the old engine's objects only after a probe shows the new one refusing.
//!
//! The probe is a server-side dry-run CREATE of a pod in a namespace the policy covers,
//! carrying the policy's pod selector's labels and pinned by `spec.nodeName` to a node
//! that cannot exist ([`PROBE_NODE`]), which every enforcing engine refuses. The
//! refusal must name the new engine's object: the API server says
//! `ValidatingAdmissionPolicy 'enclave-check.<policy>' with binding … denied request`
//! for the native engine and `admission webhook "pods.<policy>.policies.enclave.dev"
//! denied the request` for webhooks. A dry run is never persisted, so the probe
//! changes nothing, and the operator's ServiceAccount may create pods in dry runs only
//! (the chart's `dry-run-only` ValidatingAdmissionPolicy refuses the rest).
//!
//! The old engine would refuse the probe first and hide the new one: mutating webhooks
//! run before validating admission policies. A probe for the native engine is marked
//! ([`PROBE_ANNOTATION`]) and the webhooks admit it when it is a dry run
//! ([`passes_webhooks`]): the API server sets `dryRun`, and a dry run is never stored,
//! so the exception lets nothing through. Webhooks, the other way round, run before
//! the validating policies the native engine refuses with, so their probe needs no mark.
//!
//! One API server's answer: with several API servers behind a load balancer each loads
//! objects on its own (the same holds for every other admission object).

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::{
        Container, PersistentVolumeClaim, PersistentVolumeClaimSpec, Pod, PodSpec,
        VolumeResourceRequirements,
    },
    apimachinery::pkg::api::resource::Quantity,
};
use kube::{
    Api, Client, ResourceExt,
    api::{ObjectMeta, PostParams},
};

use super::{Engine, native, webhooks};
use crate::{
    catalog::Catalog,
    crd::{Enforcement, ResidencyPolicy, SelectorOperator},
    names::{self, FIELD_MANAGER},
    scope, selector,
};

/// Marks a dry-run probe for the native engine, which the webhooks let through.
pub const PROBE_ANNOTATION: &str = "enclave.dev/probe";

/// The node probes are pinned to: `.invalid` is reserved (RFC 2606), so no node of any
/// enclave is ever called so, and every engine refuses a pod pinned to it.
pub const PROBE_NODE: &str = "enclave-probe.invalid";

/// The StorageClass probe claims ask for: reserved as [`PROBE_NODE`] is, so no enclave
/// lists it and every enforcing engine refuses the claim.
pub const PROBE_CLASS: &str = "enclave-probe.invalid";

/// What a probe found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The engine refused the probe itself.
    InForce,
    /// It did not (yet): why, for the policy's status.
    NotYet(String),
    /// Nothing to probe: the policy does not refuse (Audit), or covers no namespace or
    /// no pod can match its pod selector, so nothing can slip through a switch.
    Nothing(String),
}

/// May a pod request pass the operator's pod webhooks unjudged? Only a dry run (never
/// stored, whatever admission says) marked as a probe of the native engine.
pub fn passes_webhooks(dry_run: bool, annotations: Option<&BTreeMap<String, String>>) -> bool {
    dry_run
        && annotations
            .and_then(|a| a.get(PROBE_ANNOTATION))
            .is_some_and(|engine| engine == Engine::Native.as_str())
}

/// Labels that satisfy a pod selector, or `None` when no pod can (a key both required
/// with two values, or required and forbidden).
fn labels_for(policy: &ResidencyPolicy) -> Option<BTreeMap<String, String>> {
    let Some(pod_selector) = &policy.spec.match_.pod_selector else {
        return Some(BTreeMap::new());
    };
    let mut labels = pod_selector.match_labels.clone();
    for requirement in &pod_selector.match_expressions {
        match requirement.operator {
            SelectorOperator::In => {
                if !labels.contains_key(&requirement.key) {
                    labels.insert(requirement.key.clone(), requirement.values.first()?.clone());
                }
            }
            SelectorOperator::Exists => {
                labels
                    .entry(requirement.key.clone())
                    .or_insert_with(|| "probe".into());
            }
            // An absent key satisfies both.
            SelectorOperator::NotIn | SelectorOperator::DoesNotExist => {}
        }
    }
    selector::matches(pod_selector, &labels).then_some(labels)
}

/// Where to probe: a namespace the policy covers, preferably one no other policy does
/// (there, only this policy's objects can answer). `(namespace, shared)`.
pub fn namespace(policy: &ResidencyPolicy, catalog: &impl Catalog) -> Option<(String, bool)> {
    let others: Vec<_> = catalog
        .policies()
        .into_iter()
        .filter(|p| p.name_any() != policy.name_any())
        .collect();
    let mut shared = None;
    for (name, labels) in catalog.namespaces() {
        if !scope::covers_namespace(policy, &name, &labels) {
            continue;
        }
        if !others
            .iter()
            .any(|p| scope::covers_namespace(p, &name, &labels))
        {
            return Some((name, false));
        }
        shared.get_or_insert(name);
    }
    shared.map(|name| (name, true))
}

/// The probe pod for `engine`, or `None` when no pod can match the pod selector.
pub fn pod(policy: &ResidencyPolicy, engine: Engine) -> Option<Pod> {
    let labels = labels_for(policy)?;
    Some(Pod {
        metadata: ObjectMeta {
            name: Some(names::bounded("enclave-probe-", &policy.name_any(), "", 63)),
            labels: Some(labels),
            annotations: Some([(PROBE_ANNOTATION.to_string(), engine.as_str().to_string())].into()),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            node_name: Some(PROBE_NODE.into()),
            containers: vec![Container {
                name: "probe".into(),
                image: Some("registry.k8s.io/pause:3.10".into()),
                ..Container::default()
            }],
            ..PodSpec::default()
        }),
        status: None,
    })
}

/// A part of a policy's enforcement that the API server loads on its own (each native
/// admission policy, each webhook configuration), probed on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// A pod pinned outside the enclave is refused (the native `enclave-check`, the
    /// `pods` webhooks). The other validating policies of the native engine are written
    /// before it, so its refusal also shows them loaded (see [`in_force`]).
    Check,
    /// A pod in scope is placed: it comes back with the policy's annotation.
    Placement,
    /// A claim on storage outside the enclave is refused (`enclave-volumes`, the
    /// `volumes` webhook), when the policy enforces storage classes.
    Claims,
}

impl Part {
    fn what(self) -> &'static str {
        match self {
            Part::Check => "a dry-run pod pinned outside the enclave",
            Part::Placement => "a dry-run pod in scope",
            Part::Claims => "a dry-run claim on storage outside the enclave",
        }
    }

    /// The object that refuses the probe for `policy` under `engine`, as the API server
    /// names it in the refusal; and the prefix any policy's object of that kind has.
    fn refuser(self, engine: Engine, policy: &str) -> (String, &'static str) {
        let (native_kind, entry) = match self {
            Part::Check | Part::Placement => ("check", "pods"),
            Part::Claims => ("volumes", "volumes"),
        };
        match engine {
            Engine::Native => (
                format!(
                    "ValidatingAdmissionPolicy '{}'",
                    native::object_name(native_kind, policy)
                ),
                match self {
                    Part::Claims => "ValidatingAdmissionPolicy 'enclave-volumes.",
                    _ => "ValidatingAdmissionPolicy 'enclave-check.",
                },
            ),
            Engine::Webhook => {
                let entry = super::ENTRIES
                    .iter()
                    .find(|e| e.name == entry)
                    .unwrap_or(&super::ENTRIES[0]);
                (
                    format!(
                        "admission webhook \"{}\"",
                        webhooks::webhook_name(entry, policy)
                    ),
                    ".policies.enclave.dev\" denied the request",
                )
            }
        }
    }
}

/// Judges the API server's answer to a probe of the pod check. Pure.
/// `shared`: the namespace is also covered by other policies, whose objects of the same
/// engine may answer first (the webhooks judge every policy covering a pod, and there
/// the other policies' objects are as much in force as this one's).
pub fn judge(
    engine: Engine,
    policy: &str,
    shared: bool,
    answer: Result<(), (u16, String)>,
) -> Verdict {
    judge_refusal(Part::Check, engine, policy, shared, answer)
}

/// Judges the answer to a probe that must be refused ([`Part::Check`], [`Part::Claims`]). Pure.
pub fn judge_refusal(
    part: Part,
    engine: Engine,
    policy: &str,
    shared: bool,
    answer: Result<(), (u16, String)>,
) -> Verdict {
    let (code, message) = match answer {
        Ok(()) => {
            return Verdict::NotYet(format!(
                "{} was admitted: the {} engine is not in force in the API server yet",
                part.what(),
                engine.as_str()
            ));
        }
        Err(refusal) => refusal,
    };
    let (ours, any) = part.refuser(engine, policy);
    if code == 403 && (message.contains(&ours) || (shared && message.contains(any))) {
        Verdict::InForce
    } else {
        Verdict::NotYet(format!(
            "{} was refused, but not by the {} engine's {ours} ({code}: {})",
            part.what(),
            engine.as_str(),
            names::truncate(message, 300)
        ))
    }
}

/// Judges the answer to a probe of the placement: the pod came back (`Ok`, with its
/// annotations) or was refused. Pure. A pod refused for another reason than a missing
/// placement (an enclave without nodes, another policy's check) shows nothing of the
/// placement, but nothing is admitted unplaced either: nothing to wait for.
pub fn judge_placement(
    engine: Engine,
    policy: &str,
    answer: Result<Option<BTreeMap<String, String>>, (u16, String)>,
) -> Verdict {
    match answer {
        Ok(annotations) => {
            let placed = annotations
                .as_ref()
                .and_then(|a| a.get(names::POLICY_ANNOTATION))
                .is_some_and(|held| held.split(',').any(|p| p == policy));
            if placed {
                Verdict::InForce
            } else {
                Verdict::NotYet(format!(
                    "{} was admitted without the placement of policy {policy}: the {} engine's placement is not in force in the API server yet",
                    Part::Placement.what(),
                    engine.as_str()
                ))
            }
        }
        Err((_, message)) if message.contains("placement mutation was bypassed") => {
            Verdict::NotYet(format!(
                "{} was refused unplaced: the {} engine's placement is not in force in the API server yet",
                Part::Placement.what(),
                engine.as_str()
            ))
        }
        Err((code, message)) => Verdict::Nothing(format!(
            "the placement cannot be observed: {} was refused ({code}: {})",
            Part::Placement.what(),
            names::truncate(message, 300)
        )),
    }
}

/// A server-side dry-run create: never stored, whatever admission says.
fn dry_run() -> PostParams {
    PostParams {
        dry_run: true,
        field_manager: Some(FIELD_MANAGER.into()),
    }
}

/// The API server's answer to a dry run: what it returned, or its refusal; `Err` with
/// why when it could not be asked.
async fn ask<K>(api: &Api<K>, object: &K) -> Result<Result<K, (u16, String)>, String>
where
    K: Clone + std::fmt::Debug + serde::Serialize + serde::de::DeserializeOwned,
{
    match api.create(&dry_run(), object).await {
        Ok(created) => Ok(Ok(created)),
        Err(kube::Error::Api(status)) => Ok(Err((status.code, status.message))),
        Err(error) => Err(format!("could not probe admission: {error}")),
    }
}

/// Where and with what a policy is probed, or why it cannot be.
fn target(
    policy: &ResidencyPolicy,
    catalog: &impl Catalog,
    engine: Engine,
) -> Result<(String, bool, Pod), Verdict> {
    if policy.spec.enforcement != Enforcement::Enforce {
        return Err(Verdict::Nothing("an Audit policy refuses nothing".into()));
    }
    let Some((namespace, shared)) = namespace(policy, catalog) else {
        return Err(Verdict::Nothing("the policy covers no namespace".into()));
    };
    let Some(pod) = pod(policy, engine) else {
        return Err(Verdict::Nothing(
            "no pod can match the policy's pod selector".into(),
        ));
    };
    Ok((namespace, shared, pod))
}

/// Probes whether `engine` refuses pods pinned outside the enclave for `policy` (an
/// engine switch waits for this before it removes the old engine).
pub async fn probe(
    client: &Client,
    catalog: &impl Catalog,
    policy: &ResidencyPolicy,
    engine: Engine,
) -> Verdict {
    let (namespace, shared, pod) = match target(policy, catalog, engine) {
        Ok(target) => target,
        Err(verdict) => return verdict,
    };
    let api = Api::<Pod>::namespaced(client.clone(), &namespace);
    match ask(&api, &pod).await {
        Ok(answer) => judge(engine, &policy.name_any(), shared, answer.map(|_| ())),
        Err(why) => Verdict::NotYet(why),
    }
}

/// The dry-run claim of [`Part::Claims`]: on a StorageClass no enclave has.
pub fn claim(policy: &ResidencyPolicy) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(names::bounded("enclave-probe-", &policy.name_any(), "", 63)),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            storage_class_name: Some(PROBE_CLASS.into()),
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            resources: Some(VolumeResourceRequirements {
                requests: Some([("storage".to_string(), Quantity("1Mi".into()))].into()),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        status: None,
    }
}

/// Was a probe refused because its namespace is being deleted (the API server's
/// NamespaceLifecycle plugin)? Nothing can be created there, so the probe shows nothing.
/// Pure.
pub fn namespace_terminating<T>(answer: &Result<T, (u16, String)>) -> bool {
    matches!(answer, Err((403, message)) if message.contains("because it is being terminated"))
}

/// Is every part of `policy`'s enforcement under `engine` in force in the API server,
/// observed by dry runs: the check refuses a pod pinned outside, the placement places a
/// pod, and (when the policy enforces storage classes) a claim outside is refused?
///
/// The native engine's other validating policies (workload warnings, the scope guard)
/// are written before `enclave-check` (`native::apply`), and the API server reads each
/// kind through one watch, in the order of writes, and loads the policies it has read
/// together: the check in force shows them loaded too.
pub async fn in_force(
    client: &Client,
    catalog: &impl Catalog,
    policy: &ResidencyPolicy,
    engine: Engine,
) -> Verdict {
    let (namespace, shared, pinned) = match target(policy, catalog, engine) {
        Ok(target) => target,
        Err(verdict) => return verdict,
    };
    let name = policy.name_any();
    let pods = Api::<Pod>::namespaced(client.clone(), &namespace);
    let check = match ask(&pods, &pinned).await {
        // A namespace being deleted takes nothing new, and it is the only one the probe
        // could pick (it prefers one no other policy covers): Ready is not held back by a
        // namespace stuck in deletion. (An engine switch, [`probe`], waits instead.)
        Ok(answer) if namespace_terminating(&answer) => {
            return Verdict::Nothing(format!("namespace {namespace} is being deleted"));
        }
        Ok(answer) => judge(engine, &name, shared, answer.map(|_| ())),
        Err(why) => return Verdict::NotYet(why),
    };
    if check != Verdict::InForce {
        return check;
    }
    let mut in_scope = pinned;
    if let Some(spec) = in_scope.spec.as_mut() {
        spec.node_name = None;
    }
    let placement = match ask(&pods, &in_scope).await {
        Ok(answer) => judge_placement(engine, &name, answer.map(|pod| pod.metadata.annotations)),
        Err(why) => return Verdict::NotYet(why),
    };
    if matches!(placement, Verdict::NotYet(_)) {
        return placement;
    }
    if policy.spec.volumes.enforce_storage_classes {
        let claims = Api::<PersistentVolumeClaim>::namespaced(client.clone(), &namespace);
        let refused = match ask(&claims, &claim(policy)).await {
            Ok(answer) => judge_refusal(Part::Claims, engine, &name, shared, answer.map(|_| ())),
            Err(why) => return Verdict::NotYet(why),
        };
        if refused != Verdict::InForce {
            return refused;
        }
    }
    Verdict::InForce
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::StaticCatalog;
    use std::sync::Arc;

    fn policy(name: &str, namespace: &str, pods: &str) -> ResidencyPolicy {
        let mut policy: ResidencyPolicy = serde_yaml::from_str(&format!(
            "apiVersion: enclave.dev/v1alpha1\nkind: ResidencyPolicy\nmetadata: {{name: x}}\nspec:\n  enclave: eu\n  match:\n    namespaceSelector: {{matchLabels: {{team: {namespace}}}}}\n{pods}"
        ))
        .expect("fixture");
        policy.metadata.name = Some(name.into());
        policy
    }

    #[test]
    fn the_probe_pod_matches_the_pod_selector_and_is_pinned_outside() {
        let p = policy(
            "p",
            "a",
            "    podSelector:\n      matchLabels: {tier: db}\n      matchExpressions:\n      - {key: data, operator: In, values: [personal, other]}\n      - {key: owner, operator: Exists}\n      - {key: test, operator: DoesNotExist}\n",
        );
        let pod = pod(&p, Engine::Native).expect("satisfiable");
        let labels = pod.metadata.labels.expect("labels");
        assert_eq!(labels["tier"], "db");
        assert_eq!(labels["data"], "personal");
        assert!(labels.contains_key("owner") && !labels.contains_key("test"));
        assert_eq!(
            pod.spec.expect("spec").node_name.as_deref(),
            Some(PROBE_NODE)
        );
        let impossible = policy(
            "p",
            "a",
            "    podSelector:\n      matchLabels: {tier: db}\n      matchExpressions:\n      - {key: tier, operator: DoesNotExist}\n",
        );
        assert!(pod_or_none(&impossible));
    }

    fn pod_or_none(p: &ResidencyPolicy) -> bool {
        pod(p, Engine::Webhook).is_none()
    }

    #[test]
    fn only_a_refusal_by_the_new_engine_counts() {
        let vap = "pods \"enclave-probe-p\" is forbidden: ValidatingAdmissionPolicy 'enclave-check.p' with binding 'enclave-check.p' denied request: policy p: spec.nodeName";
        let hook = "admission webhook \"pods.p.policies.enclave.dev\" denied the request: policy p: spec.nodeName";
        let other_hook =
            "admission webhook \"pods.q.policies.enclave.dev\" denied the request: policy q";
        assert_eq!(
            judge(Engine::Native, "p", false, Err((403, vap.into()))),
            Verdict::InForce
        );
        assert!(matches!(
            judge(Engine::Native, "p", false, Err((403, hook.into()))),
            Verdict::NotYet(_)
        ));
        assert!(matches!(
            judge(Engine::Native, "p", false, Ok(())),
            Verdict::NotYet(_)
        ));
        assert_eq!(
            judge(Engine::Webhook, "p", false, Err((403, hook.into()))),
            Verdict::InForce
        );
        assert!(matches!(
            judge(Engine::Webhook, "p", false, Err((403, vap.into()))),
            Verdict::NotYet(_)
        ));
        assert!(matches!(
            judge(Engine::Webhook, "p", false, Err((403, other_hook.into()))),
            Verdict::NotYet(_)
        ));
        assert_eq!(
            judge(Engine::Webhook, "p", true, Err((403, other_hook.into()))),
            Verdict::InForce,
            "in a namespace other policies cover too, their webhooks judge this policy as well"
        );
        assert!(matches!(
            judge(Engine::Webhook, "p", false, Err((500, hook.into()))),
            Verdict::NotYet(_)
        ));
    }

    #[test]
    fn claims_are_in_force_only_when_the_volumes_check_refuses_them() {
        let vap = "persistentvolumeclaims \"enclave-probe-p\" is forbidden: ValidatingAdmissionPolicy 'enclave-volumes.p' with binding 'enclave-volumes.p' denied request: policy p: claim";
        let hook =
            "admission webhook \"volumes.p.policies.enclave.dev\" denied the request: policy p";
        let check = "ValidatingAdmissionPolicy 'enclave-check.p' with binding 'enclave-check.p' denied request";
        let judge = |engine, message: &str| {
            judge_refusal(Part::Claims, engine, "p", false, Err((403, message.into())))
        };
        assert_eq!(judge(Engine::Native, vap), Verdict::InForce);
        assert_eq!(judge(Engine::Webhook, hook), Verdict::InForce);
        assert!(matches!(judge(Engine::Native, check), Verdict::NotYet(_)));
        assert!(matches!(judge(Engine::Native, hook), Verdict::NotYet(_)));
        assert!(matches!(
            judge_refusal(Part::Claims, Engine::Native, "p", false, Ok(())),
            Verdict::NotYet(why) if why.contains("claim")
        ));
        assert_eq!(
            claim(&policy("p", "a", ""))
                .spec
                .and_then(|s| s.storage_class_name)
                .as_deref(),
            Some(PROBE_CLASS)
        );
    }

    #[test]
    fn placement_is_in_force_only_when_the_pod_comes_back_placed_by_this_policy() {
        let annotated = |value: &str| {
            Ok(Some(
                [(names::POLICY_ANNOTATION.to_string(), value.to_string())].into(),
            ))
        };
        assert_eq!(
            judge_placement(Engine::Native, "p", annotated("q,p")),
            Verdict::InForce
        );
        assert!(matches!(
            judge_placement(Engine::Native, "p", annotated("q,pp")),
            Verdict::NotYet(_)
        ));
        assert!(matches!(
            judge_placement(Engine::Native, "p", Ok(None)),
            Verdict::NotYet(_)
        ));
        assert!(matches!(
            judge_placement(
                Engine::Native,
                "p",
                Err((403, "policy p: the pod's node affinity does not keep it inside the enclave (the placement mutation was bypassed, or is still coming into force: retry in a moment)".into()))
            ),
            Verdict::NotYet(_)
        ));
        // Refused for another reason: nothing is admitted unplaced, nothing to wait for.
        assert!(matches!(
            judge_placement(
                Engine::Native,
                "p",
                Err((
                    403,
                    "policy p: Pod ns/x asks for nodes that no node of the enclave can satisfy"
                        .into()
                ))
            ),
            Verdict::Nothing(_)
        ));
    }

    #[test]
    fn a_probe_refused_by_a_namespace_being_deleted_is_recognised() {
        let terminating: Result<(), _> = Err((
            403,
            "pods \"enclave-probe-p\" is forbidden: unable to create new content in namespace shop because it is being terminated".to_string(),
        ));
        assert!(namespace_terminating(&terminating));
        let refused: Result<(), _> = Err((
            403,
            "ValidatingAdmissionPolicy 'enclave-check.p' with binding 'enclave-check.p' denied request".to_string(),
        ));
        assert!(!namespace_terminating(&refused));
        assert!(!namespace_terminating(&Ok::<(), (u16, String)>(())));
    }

    #[test]
    fn only_dry_run_native_probes_pass_the_webhooks() {
        let marked: BTreeMap<String, String> =
            [(PROBE_ANNOTATION.to_string(), "native".to_string())].into();
        let webhook: BTreeMap<String, String> =
            [(PROBE_ANNOTATION.to_string(), "webhook".to_string())].into();
        assert!(passes_webhooks(true, Some(&marked)));
        assert!(!passes_webhooks(false, Some(&marked)), "stored: judged");
        assert!(!passes_webhooks(true, Some(&webhook)));
        assert!(!passes_webhooks(true, None));
    }

    #[test]
    fn probes_prefer_a_namespace_no_other_policy_covers() {
        let mut catalog = StaticCatalog::default();
        let labels = |team: &str, name: &str| -> BTreeMap<String, String> {
            [
                ("team".to_string(), team.to_string()),
                ("kubernetes.io/metadata.name".to_string(), name.to_string()),
            ]
            .into()
        };
        for (name, team) in [
            ("a-shared", "a"),
            ("b-alone", "a"),
            ("enclave-system", "a"),
            ("other", "b"),
        ] {
            catalog.namespaces.insert(name.into(), labels(team, name));
        }
        let p = Arc::new(policy("p", "a", ""));
        let mut q = policy("q", "a", "");
        q.spec.match_.namespace_selector =
            serde_yaml::from_str("{matchLabels: {kubernetes.io/metadata.name: a-shared}}")
                .expect("selector");
        let q = Arc::new(q);
        catalog.policies = vec![p.clone(), q.clone()];
        assert_eq!(namespace(&p, &catalog), Some(("b-alone".into(), false)));
        assert_eq!(namespace(&q, &catalog), Some(("a-shared".into(), true)));
        let nobody = Arc::new(policy("n", "c", ""));
        assert_eq!(namespace(&nobody, &catalog), None);
    }
}
