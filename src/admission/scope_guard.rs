//! The scope guard: nothing a tenant does to pod labels takes data out of a policy's
//! scope.
//!
//! A policy with a pod selector covers the pods of its namespaces that carry the labels
//! it selects; labels are the tenant's to write. Three ways they could move data out,
//! and what this module refuses (Enforce) or reports (Audit), in the namespaces the
//! policy covers:
//!
//! - **Leaving scope** (`kubectl label pod db-0 tier-`): a pod UPDATE after which a pod
//!   the selector matched no longer matches. Placement was fixed at creation, but the
//!   fence and the access gate follow the labels, so the pod would run unfenced and
//!   ungated with its data. Pods leave scope by being deleted (or by an admin changing
//!   the policy), never by a relabel.
//! - **Entering scope unplaced**: a pod UPDATE after which a pod the selector did not
//!   match does, while its node affinity does not hold it inside the enclave. It would
//!   become a peer of the fenced pods from wherever it runs. A pod created with the
//!   labels is placed by admission; one relabelled into scope must already be held
//!   inside.
//! - **Copies outside scope** (`kubectl debug db-0 --copy-to=x` drops the labels; a
//!   Deployment or StatefulSet whose template drops them): a pod CREATE outside the
//!   selector that mounts a PersistentVolumeClaim, an ephemeral volume whose claim is
//!   filled from a data source (a clone or snapshot of existing data), or a volume that
//!   reaches storage by itself (`hostPath`, `nfs`, `csi`, …: the same disk, export or
//!   host directory the enclave's data is on). Every claim of a covered namespace is
//!   enclave data — the volume rule already keeps each of them on the enclave's storage
//!   whatever the pod selector — so only pods in scope (placed, fenced and gated) may
//!   mount one. Volumes that start empty or carry configuration (`emptyDir`,
//!   `configMap`, `secret`, `projected`, `downwardAPI`, `image`, an ephemeral claim
//!   without a source) are allowed.
//!
//! What the pod carries that a tenant cannot forge is the claim it mounts (and the
//! namespace it is in): decided here from the request alone, with no API call and no
//! fact that changes with the cluster, which is why both engines can evaluate it. The
//! webhook and the native policy are narrowed by the same CEL match conditions
//! ([`match_conditions`]), so the operator is only called for requests this guard
//! would act on. Secrets are not guarded: anyone who can create pods in a namespace can
//! read its Secrets through the API (`edit` has `get secrets`), and the exposure report
//! names who can; what a Secret opens inside the cluster — the in-scope pods — is
//! fenced from out-of-scope pods.

use std::collections::BTreeMap;

use k8s_openapi::api::{
    admissionregistration::v1::{
        MatchCondition, ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
        ValidatingAdmissionPolicyBindingSpec, ValidatingAdmissionPolicySpec, Validation, Variable,
    },
    core::v1::{PodSpec, Volume},
};

use super::decide::{Decision, Finding, FindingKind, Outcome};
use crate::{
    crd::{Enforcement, ResidencyPolicy, Selector, SelectorOperator},
    placement,
    scope::{self, Catalog, ResolvedEnclave},
};

/// The pod selector the guard protects, if the policy has one that can leave pods out:
/// without one (or with an empty one) every pod of a covered namespace is in scope and
/// no label moves it.
pub fn guarded_selector(policy: &ResidencyPolicy) -> Option<&Selector> {
    policy
        .spec
        .match_
        .pod_selector
        .as_ref()
        .filter(|s| !s.match_labels.is_empty() || !s.match_expressions.is_empty())
}

/// The selector as messages show it: `tier=data, env In [eu, no], x Exists`.
pub fn describe(selector: &Selector) -> String {
    let mut parts: Vec<String> = selector
        .match_labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    for r in &selector.match_expressions {
        parts.push(match r.operator {
            SelectorOperator::In | SelectorOperator::NotIn => {
                format!(
                    "{} {} [{}]",
                    r.key,
                    r.operator.as_str(),
                    r.values.join(", ")
                )
            }
            SelectorOperator::Exists | SelectorOperator::DoesNotExist => {
                format!("{} {}", r.key, r.operator.as_str())
            }
        });
    }
    parts.join(", ")
}

/// A pod CREATE or UPDATE as the guard sees it.
pub struct ScopeView<'a> {
    pub namespace: &'a str,
    /// The pod's name (its generateName before it has one).
    pub name: &'a str,
    pub labels: &'a BTreeMap<String, String>,
    /// The labels before an UPDATE; `None` for a CREATE.
    pub old_labels: Option<&'a BTreeMap<String, String>>,
    pub spec: &'a PodSpec,
}

/// What a volume brings of data a pod outside the selector must not hold: the claim it
/// mounts, the source an ephemeral claim is filled from, or storage it reaches by itself
/// (`hostPath`, `nfs`, `csi`, `iscsi`, …: every kind but those that start empty or carry
/// configuration). `None` for those.
fn data_of(volume: &Volume) -> Option<String> {
    if let Some(claim) = &volume.persistent_volume_claim {
        return Some(format!(
            "volume {} (claim {})",
            volume.name, claim.claim_name
        ));
    }
    if let Some(ephemeral) = &volume.ephemeral {
        let spec = &ephemeral.volume_claim_template.as_ref()?.spec;
        let (kind, name) = match (&spec.data_source_ref, &spec.data_source) {
            (Some(source), _) => (&source.kind, &source.name),
            (None, Some(source)) => (&source.kind, &source.name),
            (None, None) => return None,
        };
        return Some(format!(
            "volume {} (an ephemeral claim filled from {kind} {name})",
            volume.name
        ));
    }
    let empty_or_configuration = volume.empty_dir.is_some()
        || volume.config_map.is_some()
        || volume.secret.is_some()
        || volume.projected.is_some()
        || volume.downward_api.is_some()
        || volume.image.is_some();
    (!empty_or_configuration).then(|| format!("volume {} ({REACHES_STORAGE})", volume.name))
}

/// How messages name a volume that is neither a claim nor empty nor configuration.
const REACHES_STORAGE: &str = "a host path, network or CSI volume, which reaches storage by itself";

/// Why the policy refuses the request, if it does (before the Audit prefix).
fn refusal(
    policy: &str,
    selector: &Selector,
    enclave: &Result<ResolvedEnclave, String>,
    view: &ScopeView,
) -> Option<String> {
    let now = crate::selector::matches(selector, view.labels);
    let subject = format!("Pod {}/{}", view.namespace, view.name);
    let wanted = describe(selector);
    match view.old_labels {
        Some(old) => {
            let before = crate::selector::matches(selector, old);
            if before && !now {
                return Some(format!(
                    "policy {policy}: {subject} would leave the policy's scope: its labels would no longer match the pod selector ({wanted}), and a pod in scope keeps the labels that put it there (its data would run unfenced and ungated); delete the pod instead, or ask an admin to change the policy"
                ));
            }
            if !before && now {
                return match enclave {
                    Err(problem) => Some(format!(
                        "policy {policy}: {problem}; pods cannot enter its scope until it exists"
                    )),
                    Ok(enclave)
                        if placement::judgeable(view.spec).is_err()
                            || !placement::implies_enclave(view.spec, &enclave.site_terms) =>
                    {
                        Some(format!(
                            "policy {policy}: {subject} would enter the policy's scope (pod selector {wanted}) without being held inside DataEnclave {} (sites: {}): its node affinity was fixed when it was created; create a new pod with these labels, which admission places",
                            enclave.name(),
                            enclave.site_names().join(", ")
                        ))
                    }
                    Ok(_) => None,
                };
            }
            None
        }
        None if now => None,
        None => {
            let data = view.spec.volumes.iter().flatten().find_map(data_of)?;
            Some(format!(
                "policy {policy}: {subject} is outside the policy's pod selector ({wanted}) but mounts {data}: the claims and storage of its namespaces hold the enclave's data, and only pods in scope (placed, fenced and gated) may mount them; give the pod the labels the selector asks for"
            ))
        }
    }
}

/// The guard's decision on a pod CREATE or UPDATE: every policy covering the namespace
/// with a pod selector, in name order; the first enforcing refusal denies, Audit
/// policies warn and record.
pub fn decide(catalog: &impl Catalog, view: &ScopeView) -> Decision {
    let Some(policies) = scope::applicable_to_namespace(catalog, view.namespace) else {
        return Decision {
            outcome: Outcome::Deny(format!(
                "enclave-operator has not yet seen namespace {:?} and cannot decide on its residency; retry in a moment",
                view.namespace
            )),
            ..Decision::default()
        };
    };
    let mut decision = Decision::default();
    for applicable in &policies {
        let Some(selector) = guarded_selector(&applicable.policy) else {
            continue;
        };
        let name = applicable.name();
        let Some(message) = refusal(&name, selector, &applicable.enclave, view) else {
            continue;
        };
        if applicable.enforced() {
            decision.findings.push(Finding {
                policy: name,
                kind: FindingKind::Denied,
                message: message.clone(),
            });
            decision.outcome = Outcome::Deny(message);
            return decision;
        }
        let message = format!("(Audit) would deny: {message}");
        decision.warnings.push(message.clone());
        decision.findings.push(Finding {
            policy: name,
            kind: FindingKind::WouldDeny,
            message,
        });
    }
    decision
}

/// The labels of `object` (a CEL expression), or an empty map.
fn labels_of(object: &str) -> String {
    format!("(has({object}.metadata.labels) ? {object}.metadata.labels : {{}})")
}

/// The volumes of `object` that bring data ([`data_of`]).
fn data_volumes(object: &str) -> String {
    let template = "v.ephemeral.volumeClaimTemplate.spec";
    format!(
        "(has({object}.spec.volumes) ? {object}.spec.volumes : []).filter(v, has(v.persistentVolumeClaim) || (has(v.ephemeral) ? has(v.ephemeral.volumeClaimTemplate) && (has({template}.dataSourceRef) || has({template}.dataSource)) : !(has(v.emptyDir) || has(v.configMap) || has(v.secret) || has(v.projected) || has(v.downwardAPI) || has(v.image))))"
    )
}

/// The requests the guard acts on, as one CEL condition, for both engines: a CREATE
/// outside the selector with data volumes, or an UPDATE that moves the pod across the
/// selector. Everything else never reaches the operator or costs more than this.
fn relevant(selector: &Selector) -> String {
    let now = super::native::cel::selector_condition(selector, &labels_of("object"));
    let before = super::native::cel::selector_condition(selector, &labels_of("oldObject"));
    format!(
        "request.operation == 'CREATE' ? (!({now}) && size({}) > 0) : (request.operation == 'UPDATE' && ({before}) != ({now}))",
        data_volumes("object")
    )
}

/// The match conditions of the guard's webhook and native policy.
pub fn match_conditions(policy: &ResidencyPolicy) -> Vec<MatchCondition> {
    let mut conditions = vec![super::webhooks::not_from_a_node()];
    if let Some(selector) = guarded_selector(policy) {
        conditions.push(MatchCondition {
            name: "crosses-scope".into(),
            expression: relevant(selector),
        });
    }
    conditions
}

/// The native engine's form of [`decide`] for one policy: a ValidatingAdmissionPolicy
/// and binding, `None` when the policy has no pod selector to guard.
pub fn native_policy(
    policy: &ResidencyPolicy,
    enclave: Result<&ResolvedEnclave, &str>,
    object: String,
    metadata: impl Fn(String) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    match_resources: k8s_openapi::api::admissionregistration::v1::MatchResources,
) -> Option<(ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding)> {
    use super::native::cel::quote;
    let selector = guarded_selector(policy)?;
    let name = kube::ResourceExt::name_any(policy);
    let enforced = policy.spec.enforcement == Enforcement::Enforce;
    let wanted = describe(selector);
    let p = quote(&format!("policy {name}: "));
    // The webhook names a pod by its name, or its generateName before it has one.
    let subject = "'Pod ' + request.namespace + '/' + (has(object.metadata.name) && object.metadata.name != '' ? object.metadata.name : (has(object.metadata.generateName) ? object.metadata.generateName : request.name))";
    let mut variables = vec![
        Variable {
            name: "isIn".into(),
            expression: super::native::cel::selector_condition(selector, &labels_of("object")),
        },
        Variable {
            name: "wasIn".into(),
            expression: format!(
                "request.operation == 'UPDATE' && ({})",
                super::native::cel::selector_condition(selector, &labels_of("oldObject"))
            ),
        },
        Variable {
            name: "data".into(),
            expression: data_volumes("object"),
        },
    ];
    let leaving = format!(
        "{p} + {subject} + {}",
        quote(&format!(
            " would leave the policy's scope: its labels would no longer match the pod selector ({wanted}), and a pod in scope keeps the labels that put it there (its data would run unfenced and ungated); delete the pod instead, or ask an admin to change the policy"
        ))
    );
    let entering = match enclave {
        Err(problem) => quote(&format!(
            "policy {name}: {problem}; pods cannot enter its scope until it exists"
        )),
        Ok(enclave) => format!(
            "{p} + {subject} + {}",
            quote(&format!(
                " would enter the policy's scope (pod selector {wanted}) without being held inside DataEnclave {} (sites: {}): its node affinity was fixed when it was created; create a new pod with these labels, which admission places",
                enclave.name(),
                enclave.site_names().join(", ")
            ))
        ),
    };
    let entering_ok = match enclave {
        Err(_) => "false".to_string(),
        Ok(enclave) => {
            variables.extend(super::native::cel::placement_variables(
                "object.spec",
                &enclave.site_terms,
                None,
            ));
            "variables.implied".to_string()
        }
    };
    let first = "variables.data[0]";
    let template = format!("{first}.ephemeral.volumeClaimTemplate.spec");
    let source = format!(
        "(has({template}.dataSourceRef) ? {template}.dataSourceRef.kind + ' ' + {template}.dataSourceRef.name : {template}.dataSource.kind + ' ' + {template}.dataSource.name)"
    );
    let copying = format!(
        "{p} + {subject} + {} + 'volume ' + {first}.name + (has({first}.persistentVolumeClaim) ? ' (claim ' + {first}.persistentVolumeClaim.claimName + ')' : (has({first}.ephemeral) ? ' (an ephemeral claim filled from ' + {source} + ')' : {})) + {}",
        quote(&format!(
            " is outside the policy's pod selector ({wanted}) but mounts "
        )),
        quote(&format!(" ({REACHES_STORAGE})")),
        quote(
            ": the claims and storage of its namespaces hold the enclave's data, and only pods in scope (placed, fenced and gated) may mount them; give the pod the labels the selector asks for"
        )
    );
    let validation = |expression: String, message: String| Validation {
        expression,
        message_expression: Some(if enforced {
            message
        } else {
            format!("'(Audit) would deny: ' + {message}")
        }),
        reason: Some("Forbidden".into()),
        ..Validation::default()
    };
    let validations = vec![
        validation("!variables.wasIn || variables.isIn".into(), leaving),
        validation(
            format!(
                "request.operation != 'UPDATE' || variables.wasIn || !variables.isIn || {entering_ok}"
            ),
            entering,
        ),
        validation(
            "request.operation != 'CREATE' || variables.isIn || size(variables.data) == 0".into(),
            copying,
        ),
    ];
    let vap = ValidatingAdmissionPolicy {
        metadata: metadata(object.clone()),
        spec: Some(ValidatingAdmissionPolicySpec {
            failure_policy: Some(if enforced { "Fail" } else { "Ignore" }.into()),
            param_kind: None,
            match_constraints: Some(
                k8s_openapi::api::admissionregistration::v1::MatchResources {
                    resource_rules: Some(vec![
                        k8s_openapi::api::admissionregistration::v1::NamedRuleWithOperations {
                            api_groups: Some(vec![String::new()]),
                            api_versions: Some(vec!["*".into()]),
                            resources: Some(vec!["pods".into()]),
                            operations: Some(vec!["CREATE".into(), "UPDATE".into()]),
                            ..Default::default()
                        },
                    ]),
                    match_policy: Some("Equivalent".into()),
                    ..Default::default()
                },
            ),
            match_conditions: Some(match_conditions(policy)),
            variables: Some(variables),
            validations: Some(validations),
            ..ValidatingAdmissionPolicySpec::default()
        }),
        status: None,
    };
    let binding = ValidatingAdmissionPolicyBinding {
        metadata: metadata(object.clone()),
        spec: ValidatingAdmissionPolicyBindingSpec {
            policy_name: object,
            param_ref: None,
            match_resources: Some(match_resources),
            validation_actions: if enforced {
                vec!["Deny".into()]
            } else {
                vec!["Audit".into(), "Warn".into()]
            },
        },
    };
    Some((vap, binding))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::scope::StaticCatalog;

    /// The fixture's catalog with `tier: data` as the pod selector of both policies
    /// (`shop` enforces, `analytics` audits).
    fn catalog() -> StaticCatalog {
        let mut catalog =
            StaticCatalog::from_yaml(include_str!("../../tests/fixtures/catalog.yaml"))
                .expect("fixture parses");
        for policy in &mut catalog.policies {
            let mut changed = (**policy).clone();
            changed.spec.match_.pod_selector =
                Some(serde_yaml::from_str("matchLabels: {tier: data}").expect("selector"));
            *policy = Arc::new(changed);
        }
        catalog
    }

    fn labels(yaml: &str) -> BTreeMap<String, String> {
        serde_yaml::from_str(yaml).expect("labels")
    }

    fn spec(yaml: &str) -> PodSpec {
        serde_yaml::from_str(yaml).expect("spec")
    }

    fn judge(
        catalog: &StaticCatalog,
        namespace: &str,
        labels: &BTreeMap<String, String>,
        old: Option<&BTreeMap<String, String>>,
        spec: &PodSpec,
    ) -> Decision {
        decide(
            catalog,
            &ScopeView {
                namespace,
                name: "db-0",
                labels,
                old_labels: old,
                spec,
            },
        )
    }

    fn denial(decision: &Decision) -> &str {
        match &decision.outcome {
            Outcome::Deny(message) => message,
            other => panic!("expected a denial, got {other:?}"),
        }
    }

    const PLACED: &str =
        "containers: []\nnodeSelector: {node-restriction.kubernetes.io/enclave-site: dublin}";
    const CLAIM: &str = "containers: []\nvolumes: [{name: data, persistentVolumeClaim: {claimName: data-db-0}}, {name: creds, secret: {secretName: db}}]";

    #[test]
    fn removing_the_label_that_holds_a_pod_in_scope_is_refused() {
        let catalog = catalog();
        let data = labels("{tier: data, app: db}");
        let bare = labels("{app: db}");
        let placed = spec(PLACED);
        let message = denial(&judge(&catalog, "shop", &bare, Some(&data), &placed)).to_string();
        assert!(
            message
                .starts_with("policy eu-user-data: Pod shop/db-0 would leave the policy's scope")
                && message.contains("pod selector (tier=data)"),
            "{message}"
        );
        let decision = judge(&catalog, "shop", &bare, Some(&data), &placed);
        assert_eq!(decision.findings[0].kind, FindingKind::Denied);
        // Other label changes of a pod in scope, and of a pod out of scope, are fine.
        let relabelled = labels("{tier: data, app: db, version: v2}");
        assert_eq!(
            judge(&catalog, "shop", &relabelled, Some(&data), &placed),
            Decision::default()
        );
        let other = labels("{app: web, version: v2}");
        assert_eq!(
            judge(&catalog, "shop", &other, Some(&bare), &placed),
            Decision::default()
        );
        // Audit reports and allows; a namespace no policy covers is not ours.
        let audited = judge(&catalog, "analytics", &bare, Some(&data), &placed);
        assert_eq!(audited.outcome, Outcome::Allow);
        assert!(
            audited.warnings[0]
                .starts_with("(Audit) would deny: policy eu-audit: Pod analytics/db-0 would leave")
        );
        assert_eq!(audited.findings[0].kind, FindingKind::WouldDeny);
        assert_eq!(
            judge(&catalog, "public", &bare, Some(&data), &placed),
            Decision::default()
        );
    }

    #[test]
    fn entering_scope_needs_a_pod_held_inside() {
        let catalog = catalog();
        let data = labels("{tier: data}");
        let bare = labels("{}");
        let unplaced = spec("containers: []");
        let message = denial(&judge(&catalog, "shop", &data, Some(&bare), &unplaced)).to_string();
        assert!(
            message.contains("would enter the policy's scope (pod selector tier=data) without being held inside DataEnclave eu (sites: dublin, norway)"),
            "{message}"
        );
        let outside = spec(
            "containers: []\nnodeSelector: {node-restriction.kubernetes.io/enclave-site: virginia}",
        );
        assert!(matches!(
            judge(&catalog, "shop", &data, Some(&bare), &outside).outcome,
            Outcome::Deny(_)
        ));
        assert_eq!(
            judge(&catalog, "shop", &data, Some(&bare), &spec(PLACED)),
            Decision::default()
        );
    }

    #[test]
    fn a_copy_outside_the_selector_may_not_mount_the_namespaces_claims() {
        let catalog = catalog();
        let bare = labels("{app: db}");
        let with_claim = spec(CLAIM);
        let message = denial(&judge(&catalog, "shop", &bare, None, &with_claim)).to_string();
        assert!(
            message.contains("Pod shop/db-0 is outside the policy's pod selector (tier=data) but mounts volume data (claim data-db-0)"),
            "{message}"
        );
        // In scope: the copy is placed, fenced and gated like the original.
        assert_eq!(
            judge(&catalog, "shop", &labels("{tier: data}"), None, &with_claim),
            Decision::default()
        );
        // Secrets and empty volumes alone are not the enclave's data (see the module).
        let stateless = spec(
            "containers: []\nvolumes: [{name: creds, secret: {secretName: db}}, {name: tmp, emptyDir: {}}, {name: scratch, ephemeral: {volumeClaimTemplate: {spec: {accessModes: [ReadWriteOnce], storageClassName: eu-dublin-ssd, resources: {requests: {storage: 1Gi}}}}}}]",
        );
        assert_eq!(
            judge(&catalog, "shop", &bare, None, &stateless),
            Decision::default()
        );
        // Storage a volume reaches by itself is data too (the same export, disk or host
        // directory as the enclave's); configuration is not.
        for volume in [
            "{name: raw, hostPath: {path: /var/lib/kubelet/pods}}",
            "{name: raw, nfs: {server: 198.51.100.7, path: /export}}",
            "{name: raw, csi: {driver: smb.csi.k8s.io, volumeAttributes: {source: //eu/share}}}",
        ] {
            let message = denial(&judge(
                &catalog,
                "shop",
                &bare,
                None,
                &spec(&format!("containers: []\nvolumes: [{volume}]")),
            ))
            .to_string();
            assert!(
                message.contains("mounts volume raw (a host path, network or CSI volume, which reaches storage by itself)"),
                "{message}"
            );
        }
        let configuration = spec(
            "containers: []\nvolumes: [{name: a, configMap: {name: c}}, {name: b, projected: {sources: []}}, {name: c, downwardAPI: {items: []}}, {name: d, image: {reference: registry.k8s.io/pause:3.10}}]",
        );
        assert_eq!(
            judge(&catalog, "shop", &bare, None, &configuration),
            Decision::default()
        );
        // An ephemeral claim cloned from an existing claim is a copy of its data.
        let cloned = spec(
            "containers: []\nvolumes: [{name: scratch, ephemeral: {volumeClaimTemplate: {spec: {accessModes: [ReadWriteOnce], dataSource: {kind: PersistentVolumeClaim, name: data-db-0}, resources: {requests: {storage: 1Gi}}}}}}]",
        );
        let message = denial(&judge(&catalog, "shop", &bare, None, &cloned)).to_string();
        assert!(
            message.contains("mounts volume scratch (an ephemeral claim filled from PersistentVolumeClaim data-db-0)"),
            "{message}"
        );
        let audited = judge(&catalog, "analytics", &bare, None, &with_claim);
        assert_eq!(audited.outcome, Outcome::Allow);
        assert!(audited.audited());
    }

    #[test]
    fn without_a_pod_selector_nothing_is_guarded_and_nothing_is_compiled() {
        let catalog = StaticCatalog::from_yaml(include_str!("../../tests/fixtures/catalog.yaml"))
            .expect("fixture parses");
        let bare = labels("{}");
        let data = labels("{tier: data}");
        assert_eq!(
            judge(&catalog, "shop", &bare, Some(&data), &spec(CLAIM)),
            Decision::default()
        );
        assert!(guarded_selector(&catalog.policies[0]).is_none());
        let empty: ResidencyPolicy = {
            let mut p = (*catalog.policies[0]).clone();
            p.spec.match_.pod_selector = Some(Selector::default());
            p
        };
        assert!(guarded_selector(&empty).is_none());
        assert!(
            native_policy(
                &catalog.policies[0],
                Err("x"),
                "n".into(),
                |_| Default::default(),
                Default::default()
            )
            .is_none()
        );
    }

    /// The guard must see pods without the selector's labels (the copy has none), so
    /// neither engine may narrow it by the pod selector; its match conditions do.
    #[test]
    fn both_engines_see_pods_outside_the_selector() {
        use crate::admission::{Engine, webhooks};
        let catalog = catalog();
        let policy = catalog
            .policies
            .iter()
            .find(|p| kube::ResourceExt::name_any(p.as_ref()) == "eu-user-data")
            .expect("the enforcing policy");
        let target = webhooks::Target {
            endpoint: webhooks::Endpoint::Url("https://127.0.0.1:8443".into()),
            ca_bundle: b"CA".to_vec(),
            operator_namespace: "enclave-system".into(),
            owner: None,
        };
        let config = webhooks::validating(policy, &target, Engine::Webhook, None);
        let hook = config
            .webhooks
            .iter()
            .flatten()
            .find(|w| w.name == "scope.eu-user-data.policies.enclave.dev")
            .expect("the scope webhook");
        assert_eq!(
            hook.object_selector,
            Some(webhooks::object_selector(policy, false)),
            "not narrowed by the pod selector (only the objects of volume moves are left out)"
        );
        let conditions = hook.match_conditions.as_ref().expect("conditions");
        assert_eq!(conditions, &match_conditions(policy));
        assert!(conditions[1].expression.contains("oldObject"));
        assert_eq!(
            hook.rules.as_ref().expect("rules")[0].operations,
            Some(vec!["CREATE".to_string(), "UPDATE".to_string()])
        );
        let enclave = crate::scope::resolve_enclave(&catalog, policy).expect("enclave");
        let compiled = crate::admission::native::compile(
            policy,
            Ok(&enclave),
            &crate::admission::native::Facts::default(),
            "enclave-system",
        );
        let (vap, binding) = compiled.scope.expect("the native scope guard");
        let binding = binding.spec.match_resources.expect("resources");
        assert_eq!(
            binding.object_selector,
            Some(webhooks::object_selector(policy, false))
        );
        assert!(binding.namespace_selector.is_some());
        let spec = vap.spec.expect("spec");
        assert_eq!(spec.match_conditions, Some(match_conditions(policy)));
        assert_eq!(spec.validations.expect("validations").len(), 3);
        // Without a pod selector: no webhook, no native policy.
        let plain = StaticCatalog::from_yaml(include_str!("../../tests/fixtures/catalog.yaml"))
            .expect("fixture parses");
        let config = webhooks::validating(&plain.policies[0], &target, Engine::Webhook, None);
        assert!(
            !config
                .webhooks
                .iter()
                .flatten()
                .any(|w| w.name.starts_with("scope."))
        );
    }

    #[test]
    fn an_unknown_namespace_fails_closed() {
        let decision = judge(&catalog(), "brand-new", &labels("{}"), None, &spec(CLAIM));
        assert!(denial(&decision).contains("retry in a moment"));
    }

    #[test]
    fn selectors_are_described_as_users_write_them() {
        let selector: Selector = serde_yaml::from_str(
            "matchLabels: {tier: data}\nmatchExpressions: [{key: env, operator: In, values: [eu, no]}, {key: x, operator: DoesNotExist}]",
        )
        .expect("selector");
        assert_eq!(
            describe(&selector),
            "tier=data, env In [eu, no], x DoesNotExist"
        );
    }
}
