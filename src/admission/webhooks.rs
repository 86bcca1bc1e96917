//! The webhook engine's configurations: for each ResidencyPolicy one
//! MutatingWebhookConfiguration and one ValidatingWebhookConfiguration, with one webhook
//! per entry of [`super::ENTRIES`], narrowed by the policy's own namespace and pod
//! selectors so that requests outside every policy never reach the operator.
//!
//! One configuration pair per policy, not one for all: a policy whose configuration
//! cannot be written (a name the API refuses, a quota) then fails alone, and its status
//! says so, instead of taking every other policy's webhooks with it. Names are bounded
//! ([`crate::names::bounded`]) whatever the policy's name.
//!
//! The configurations are owned by a cluster-scoped object of the installation (the
//! chart's ClusterRole) when the operator is told one: `helm uninstall` deletes it and
//! the garbage collector deletes them, even if the operator is already gone, so that no
//! fail-closed webhook outlives the operator.

use k8s_openapi::{
    ByteString,
    api::admissionregistration::v1::{
        MatchCondition, MutatingWebhook, MutatingWebhookConfiguration, RuleWithOperations,
        ServiceReference, ValidatingWebhook, ValidatingWebhookConfiguration, WebhookClientConfig,
    },
    apimachinery::pkg::apis::meta::v1::{
        LabelSelector, LabelSelectorRequirement, ObjectMeta, OwnerReference,
    },
};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams},
};

use super::{
    ENTRIES, Entry, Failure, Handler, Phase, Rule,
    native::fast,
    review::{NODE_USER_PREFIX, NODES_GROUP},
};
use crate::{
    crd::{Enforcement, ResidencyPolicy, Selector},
    names::{self, FIELD_MANAGER, MANAGED_BY_LABEL, POLICY_LABEL, VOLUME_MIGRATION_LABEL},
    scope::{ALWAYS_EXCLUDED_NAMESPACES, ResolvedEnclave},
};

/// Seconds the API server waits for us. Short: in-scope requests fail closed, and a
/// stuck operator must not hold a rollout for long.
pub const TIMEOUT_SECONDS: i32 = 5;

/// The full name of the policy a generated object belongs to (labels hold at most 63
/// characters, policy names up to 253).
pub const POLICY_NAME_ANNOTATION: &str = "enclave.dev/policy-name";

/// Where the API server reaches the webhook server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `https://<host:port>`: the operator runs outside the cluster (tests, `make demo`).
    Url(String),
    /// A Service in front of the operator's pods.
    Service {
        namespace: String,
        name: String,
        port: i32,
    },
}

impl Endpoint {
    fn client_config(&self, path: &str, ca_bundle: &[u8]) -> WebhookClientConfig {
        let ca_bundle = Some(ByteString(ca_bundle.to_vec()));
        match self {
            Endpoint::Url(base) => WebhookClientConfig {
                url: Some(format!("{base}{path}")),
                ca_bundle,
                service: None,
            },
            Endpoint::Service {
                namespace,
                name,
                port,
            } => WebhookClientConfig {
                service: Some(ServiceReference {
                    namespace: namespace.clone(),
                    name: name.clone(),
                    path: Some(path.into()),
                    port: Some(*port),
                }),
                ca_bundle,
                url: None,
            },
        }
    }
}

/// What every generated configuration needs besides the policy.
#[derive(Clone, Debug)]
pub struct Target {
    pub endpoint: Endpoint,
    pub ca_bundle: Vec<u8>,
    /// The operator's namespace, never in scope.
    pub operator_namespace: String,
    /// The installation's cluster-scoped owner, if any.
    pub owner: Option<OwnerReference>,
}

fn rule(rule: &Rule) -> RuleWithOperations {
    let strings = |items: &[&str]| Some(items.iter().map(|s| s.to_string()).collect());
    RuleWithOperations {
        api_groups: strings(rule.groups),
        api_versions: Some(vec!["*".into()]),
        resources: strings(rule.resources),
        operations: strings(rule.operations),
        scope: Some("Namespaced".into()),
    }
}

/// The policy's namespace selector, with the always-excluded namespaces and the
/// operator's own namespace ANDed out. Shared with the native engine's bindings.
pub fn namespace_selector(policy: &ResidencyPolicy, operator_namespace: &str) -> LabelSelector {
    let mut selector = policy.spec.match_.namespace_selector.to_label_selector();
    let mut excluded: Vec<String> = ALWAYS_EXCLUDED_NAMESPACES
        .iter()
        .map(|s| s.to_string())
        .collect();
    if !excluded.iter().any(|n| n == operator_namespace) {
        excluded.push(operator_namespace.to_string());
    }
    selector
        .match_expressions
        .get_or_insert_with(Vec::new)
        .push(LabelSelectorRequirement {
            key: "kubernetes.io/metadata.name".into(),
            operator: "NotIn".into(),
            values: Some(excluded),
        });
    selector
}

/// What a policy's webhooks and native bindings match by the object's own labels: the
/// policy's pod selector where the entry is scoped to pods, and never an object of a
/// volume move ([`VOLUME_MIGRATION_LABEL`]: its sender runs next to the volume outside
/// the enclave; only the operator can set the label, see there).
pub fn object_selector(policy: &ResidencyPolicy, pod_scoped: bool) -> LabelSelector {
    let mut selector = pod_scoped
        .then(|| {
            policy
                .spec
                .match_
                .pod_selector
                .as_ref()
                .map(Selector::to_label_selector)
        })
        .flatten()
        .unwrap_or_default();
    selector
        .match_expressions
        .get_or_insert_with(Vec::new)
        .push(LabelSelectorRequirement {
            key: VOLUME_MIGRATION_LABEL.into(),
            operator: "DoesNotExist".into(),
            values: None,
        });
    selector
}

/// A kubelet creating the mirror pod of a static pod on its own node never reaches the
/// webhook: recognised as [`super::review::is_own_mirror_pod`] does, by what only a
/// kubelet can be (the user `system:node:<name>` in `system:nodes`, the pod bound to
/// `<name>`), which a tenant cannot forge by impersonating the group alone.
pub fn not_from_a_node() -> MatchCondition {
    MatchCondition {
        name: "not-from-a-node".into(),
        expression: format!("!({})", from_its_node()),
    }
}

/// The CEL that is true for a pod a node creates bound to itself (a mirror pod).
pub fn from_its_node() -> String {
    let prefix_len = NODE_USER_PREFIX.len();
    format!(
        "'{NODES_GROUP}' in request.userInfo.groups && request.userInfo.username.startsWith('{NODE_USER_PREFIX}') && object != null && has(object.spec) && has(object.spec.nodeName) && size(request.userInfo.username) > {prefix_len} && object.spec.nodeName == request.userInfo.username.substring({prefix_len})"
    )
}

fn failure_policy(entry: &Entry, policy: &ResidencyPolicy) -> String {
    match (entry.failure, policy.spec.enforcement) {
        (Failure::ByEnforcement, Enforcement::Enforce) => "Fail".into(),
        _ => "Ignore".into(),
    }
}

/// The name of the configurations of a policy.
pub fn configuration_name(policy: &str) -> String {
    names::bounded("enclave-operator-", policy, "", names::MAX_NAME)
}

/// The name of one entry's webhook within a policy's configuration: unique within it,
/// a valid fully qualified name whatever the policy's name.
pub fn webhook_name(entry: &Entry, policy: &str) -> String {
    format!(
        "{}.{}.policies.enclave.dev",
        entry.name,
        names::label_value(policy)
    )
}

/// Metadata of an object generated for `policy`.
pub fn metadata(name: String, policy: &str, owner: Option<&OwnerReference>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        labels: Some(
            [
                (MANAGED_BY_LABEL.to_string(), FIELD_MANAGER.to_string()),
                (POLICY_LABEL.to_string(), names::label_value(policy)),
            ]
            .into(),
        ),
        annotations: Some([(POLICY_NAME_ANNOTATION.to_string(), policy.to_string())].into()),
        owner_references: owner.map(|o| vec![o.clone()]),
        ..ObjectMeta::default()
    }
}

struct Common {
    name: String,
    client_config: WebhookClientConfig,
    rules: Vec<RuleWithOperations>,
    failure_policy: String,
    namespace_selector: LabelSelector,
    object_selector: Option<LabelSelector>,
    match_conditions: Option<Vec<MatchCondition>>,
}

fn common(
    entry: &Entry,
    policy: &ResidencyPolicy,
    target: &Target,
    enclave: Option<&ResolvedEnclave>,
) -> Common {
    let mut match_conditions = entry.match_conditions(policy);
    // The final check of pods makes no call for a pod that plainly stays in the
    // enclave (`native::fast`): one HTTPS hop less for the common pod.
    if entry.handler == Handler::ValidatePod
        && let Some(settled) = enclave.and_then(|e| fast::not_settled(&e.site_terms))
    {
        match_conditions.get_or_insert_with(Vec::new).push(settled);
    }
    let name = policy.name_any();
    Common {
        name: webhook_name(entry, &name),
        client_config: target
            .endpoint
            .client_config(&entry.path(), &target.ca_bundle),
        rules: entry.rules.iter().map(rule).collect(),
        failure_policy: failure_policy(entry, policy),
        namespace_selector: namespace_selector(policy, &target.operator_namespace),
        object_selector: entry
            .objects_have_labels()
            .then(|| object_selector(policy, entry.pod_scoped)),
        match_conditions,
    }
}

/// Is the entry served as a webhook for a policy of this engine?
fn served(entry: &Entry, engine: super::Engine) -> bool {
    engine == super::Engine::Webhook || entry.webhook_only
}

/// The mutating configuration of a policy (None when the engine serves none of its
/// entries as webhooks).
pub fn mutating(
    policy: &ResidencyPolicy,
    target: &Target,
    engine: super::Engine,
) -> Option<MutatingWebhookConfiguration> {
    let name = policy.name_any();
    let webhooks: Vec<MutatingWebhook> = ENTRIES
        .iter()
        .filter(|e| e.phase == Phase::Mutating && served(e, engine) && e.applies_to(policy))
        .map(|entry| {
            let c = common(entry, policy, target, None);
            MutatingWebhook {
                name: c.name,
                admission_review_versions: vec!["v1".into()],
                side_effects: "None".into(),
                timeout_seconds: Some(TIMEOUT_SECONDS),
                client_config: c.client_config,
                rules: Some(c.rules),
                failure_policy: Some(c.failure_policy),
                namespace_selector: Some(c.namespace_selector),
                object_selector: c.object_selector,
                match_conditions: c.match_conditions,
                // Another webhook may change the object after us; look again if it did.
                reinvocation_policy: Some("IfNeeded".into()),
                ..MutatingWebhook::default()
            }
        })
        .collect();
    (!webhooks.is_empty()).then(|| MutatingWebhookConfiguration {
        metadata: metadata(configuration_name(&name), &name, target.owner.as_ref()),
        webhooks: Some(webhooks),
    })
}

/// The validating configuration of a policy.
pub fn validating(
    policy: &ResidencyPolicy,
    target: &Target,
    engine: super::Engine,
    enclave: Option<&ResolvedEnclave>,
) -> ValidatingWebhookConfiguration {
    let name = policy.name_any();
    let webhooks = ENTRIES
        .iter()
        .filter(|e| e.phase == Phase::Validating && served(e, engine) && e.applies_to(policy))
        .map(|entry| {
            let c = common(entry, policy, target, enclave);
            ValidatingWebhook {
                name: c.name,
                admission_review_versions: vec!["v1".into()],
                side_effects: "None".into(),
                timeout_seconds: Some(TIMEOUT_SECONDS),
                client_config: c.client_config,
                rules: Some(c.rules),
                failure_policy: Some(c.failure_policy),
                namespace_selector: Some(c.namespace_selector),
                object_selector: c.object_selector,
                match_conditions: c.match_conditions,
                ..ValidatingWebhook::default()
            }
        })
        .collect();
    ValidatingWebhookConfiguration {
        metadata: metadata(configuration_name(&name), &name, target.owner.as_ref()),
        webhooks: Some(webhooks),
    }
}

/// Do the configurations the API server holds carry every webhook we asked for, with
/// our CA bundle? Compared on what we set, read back from the server's answer.
pub fn in_place(
    applied: (
        Option<&MutatingWebhookConfiguration>,
        &ValidatingWebhookConfiguration,
    ),
    desired: (
        Option<&MutatingWebhookConfiguration>,
        &ValidatingWebhookConfiguration,
    ),
) -> bool {
    fn hooks<'a>(
        list: impl Iterator<Item = (&'a String, &'a WebhookClientConfig, Option<&'a String>)>,
    ) -> Vec<(String, Option<Vec<u8>>, Option<String>)> {
        let mut all: Vec<_> = list
            .map(|(n, c, f)| {
                (
                    n.clone(),
                    c.ca_bundle.as_ref().map(|b| b.0.clone()),
                    f.cloned(),
                )
            })
            .collect();
        all.sort();
        all
    }
    let mutating = |c: &MutatingWebhookConfiguration| {
        hooks(
            c.webhooks
                .iter()
                .flatten()
                .map(|w| (&w.name, &w.client_config, w.failure_policy.as_ref())),
        )
    };
    let validating = |c: &ValidatingWebhookConfiguration| {
        hooks(
            c.webhooks
                .iter()
                .flatten()
                .map(|w| (&w.name, &w.client_config, w.failure_policy.as_ref())),
        )
    };
    applied.0.map(mutating) == desired.0.map(mutating)
        && validating(applied.1) == validating(desired.1)
}

/// Writes a policy's configurations (server-side apply, forced: the operator owns them;
/// a mutating configuration the engine does not need is deleted) and returns what the
/// API server holds now.
pub async fn apply(
    client: &Client,
    mutating: Option<&MutatingWebhookConfiguration>,
    validating: &ValidatingWebhookConfiguration,
) -> Result<
    (
        Option<MutatingWebhookConfiguration>,
        ValidatingWebhookConfiguration,
    ),
    kube::Error,
> {
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mutating_api = Api::<MutatingWebhookConfiguration>::all(client.clone());
    let m = match mutating {
        Some(mutating) => Some(
            mutating_api
                .patch(&mutating.name_any(), &params, &Patch::Apply(mutating))
                .await?,
        ),
        None => {
            match mutating_api
                .delete(&validating.name_any(), &DeleteParams::default())
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(error) => return Err(error),
            }
            None
        }
    };
    let v = Api::<ValidatingWebhookConfiguration>::all(client.clone())
        .patch(&validating.name_any(), &params, &Patch::Apply(validating))
        .await?;
    Ok((m, v))
}

/// Does the API server hold the policy's pod webhooks (the engine was, or is becoming,
/// the webhook one)? Only that engine has a mutating configuration.
pub async fn pods_held(client: &Client, policy: &str) -> Result<bool, kube::Error> {
    Ok(Api::<MutatingWebhookConfiguration>::all(client.clone())
        .get_opt(&configuration_name(policy))
        .await?
        .is_some())
}

/// Deletes a policy's configurations (the policy is gone, or uses the native engine).
pub async fn delete(client: &Client, policy: &str) -> Result<(), kube::Error> {
    let name = configuration_name(policy);
    let ignore_missing = |r: Result<_, kube::Error>| match r {
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        other => other.map(|_| ()),
    };
    ignore_missing(
        Api::<MutatingWebhookConfiguration>::all(client.clone())
            .delete(&name, &DeleteParams::default())
            .await
            .map(|_| ()),
    )?;
    ignore_missing(
        Api::<ValidatingWebhookConfiguration>::all(client.clone())
            .delete(&name, &DeleteParams::default())
            .await
            .map(|_| ()),
    )
}

/// Deletes the configurations whose policy no longer exists, and those of an older
/// release that kept every policy in one `enclave-operator` configuration.
pub async fn sweep(
    client: &Client,
    is_policy: impl Fn(&str) -> bool,
) -> Result<usize, kube::Error> {
    let selector = ListParams::default().labels(&format!("{MANAGED_BY_LABEL}={FIELD_MANAGER}"));
    let mut orphans: Vec<String> = Vec::new();
    let owner_of = |meta: &ObjectMeta| {
        meta.annotations
            .as_ref()
            .and_then(|a| a.get(POLICY_NAME_ANNOTATION))
            .cloned()
    };
    for config in Api::<MutatingWebhookConfiguration>::all(client.clone())
        .list_metadata(&selector)
        .await?
    {
        if owner_of(&config.metadata).is_none_or(|p| !is_policy(&p)) {
            orphans.push(config.name_any());
        }
    }
    for config in Api::<ValidatingWebhookConfiguration>::all(client.clone())
        .list_metadata(&selector)
        .await?
    {
        if owner_of(&config.metadata).is_none_or(|p| !is_policy(&p))
            && !orphans.contains(&config.name_any())
        {
            orphans.push(config.name_any());
        }
    }
    for name in &orphans {
        let dp = DeleteParams::default();
        for result in [
            Api::<MutatingWebhookConfiguration>::all(client.clone())
                .delete(name, &dp)
                .await
                .map(|_| ()),
            Api::<ValidatingWebhookConfiguration>::all(client.clone())
                .delete(name, &dp)
                .await
                .map(|_| ()),
        ] {
            match result {
                Ok(()) | Err(kube::Error::Api(_)) => {}
                Err(error) => return Err(error),
            }
        }
        tracing::info!(configuration = %name, "deleted the webhook configurations of a policy that no longer exists");
    }
    Ok(orphans.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::Engine;

    fn policy(name: &str) -> ResidencyPolicy {
        let mut policy: ResidencyPolicy = serde_yaml::from_str(
            "apiVersion: enclave.dev/v1alpha1\nkind: ResidencyPolicy\nmetadata: {name: x}\nspec:\n  enclave: eu\n  match:\n    namespaceSelector: {matchLabels: {enclave.dev/residency: eu}}\n    podSelector: {matchLabels: {data: personal}}\n",
        )
        .expect("fixture");
        policy.metadata.name = Some(name.to_string());
        policy
    }

    fn target() -> Target {
        Target {
            endpoint: Endpoint::Url("https://127.0.0.1:8443".into()),
            ca_bundle: b"CA".to_vec(),
            operator_namespace: "enclave-system".into(),
            owner: None,
        }
    }

    #[test]
    fn the_final_check_of_pods_makes_no_call_for_a_plainly_settled_pod() {
        let catalog = crate::scope::StaticCatalog::from_yaml(include_str!(
            "../../tests/fixtures/catalog.yaml"
        ))
        .expect("fixture parses");
        let policy = policy("eu-user-data");
        let enclave = crate::scope::resolve_enclave(&catalog, &policy).expect("enclave");
        let v = validating(&policy, &target(), Engine::Webhook, Some(&enclave));
        let conditions = |name: &str| {
            let hook = v
                .webhooks
                .iter()
                .flatten()
                .find(|w| w.name == format!("{name}.eu-user-data.policies.enclave.dev"))
                .expect("webhook");
            hook.match_conditions
                .iter()
                .flatten()
                .map(|c| c.name.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            conditions("pods"),
            ["not-from-a-node", "not-plainly-settled"],
            "the same condition as the native check's (native::fast)"
        );
        assert!(
            !conditions("workloads").contains(&"not-plainly-settled".to_string()),
            "only the final check of pods skips"
        );
        let without = validating(&policy, &target(), Engine::Webhook, None);
        assert!(
            without
                .webhooks
                .iter()
                .flatten()
                .flat_map(|w| w.match_conditions.iter().flatten())
                .all(|c| c.name != "not-plainly-settled"),
            "no enclave, no shortcut: the webhook judges every pod"
        );
    }

    #[test]
    fn every_entry_becomes_a_webhook_narrowed_by_the_policy() {
        let m = mutating(&policy("eu-user-data"), &target(), Engine::Webhook).expect("mutating");
        let v = validating(&policy("eu-user-data"), &target(), Engine::Webhook, None);
        let hooks = m.webhooks.as_ref().expect("webhooks");
        assert_eq!(
            hooks.len() + v.webhooks.as_ref().map_or(0, Vec::len),
            ENTRIES.len()
        );
        let pods = &hooks[0];
        assert_eq!(pods.name, "pods.eu-user-data.policies.enclave.dev");
        assert_eq!(
            pods.client_config.url.as_deref(),
            Some("https://127.0.0.1:8443/mutate/pods")
        );
        assert_eq!(pods.failure_policy.as_deref(), Some("Fail"));
        assert!(
            pods.object_selector.is_some(),
            "pods are narrowed by the pod selector"
        );
        assert_eq!(
            pods.match_conditions.as_ref().expect("conditions")[0].expression,
            "!('system:nodes' in request.userInfo.groups && request.userInfo.username.startsWith('system:node:') && object != null && has(object.spec) && has(object.spec.nodeName) && size(request.userInfo.username) > 12 && object.spec.nodeName == request.userInfo.username.substring(12))"
        );
        let excluded = &pods
            .namespace_selector
            .as_ref()
            .expect("ns")
            .match_expressions
            .as_ref()
            .expect("exprs")[0];
        assert_eq!(
            excluded.values.as_ref().expect("values"),
            &["kube-system", "enclave-system"]
        );
        // DaemonSets are judged by their template: no pod selector, only the objects
        // of volume moves left out.
        let daemonsets = hooks[1].object_selector.as_ref().expect("selector");
        assert!(daemonsets.match_labels.is_none());
        assert_eq!(
            daemonsets.match_expressions,
            Some(vec![LabelSelectorRequirement {
                key: VOLUME_MIGRATION_LABEL.into(),
                operator: "DoesNotExist".into(),
                values: None,
            }])
        );
        let gate = v
            .webhooks
            .iter()
            .flatten()
            .find(|w| w.name.starts_with("access."))
            .expect("the access gate's webhook");
        assert!(
            gate.object_selector.is_none(),
            "a CONNECT's object has no labels: any object selector would keep exec from the gate"
        );
        assert!(
            pods.object_selector
                .as_ref()
                .and_then(|s| s.match_expressions.as_ref())
                .is_some_and(|e| e.iter().any(|r| r.key == VOLUME_MIGRATION_LABEL)),
            "pods of volume moves are left out"
        );
    }

    #[test]
    fn names_stay_valid_for_the_longest_policy_names() {
        let long = format!(
            "{}.{}.{}.{}",
            "a".repeat(63),
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(61)
        );
        assert_eq!(long.len(), 253);
        let m = mutating(&policy(&long), &target(), Engine::Webhook).expect("mutating");
        let name = m.metadata.name.clone().expect("name");
        assert!(name.len() <= 253, "{}", name.len());
        for hook in m.webhooks.expect("webhooks") {
            assert!(hook.name.len() <= 253);
            assert!(
                hook.name
                    .split('.')
                    .all(|label| !label.is_empty() && label.len() <= 63),
                "{}",
                hook.name
            );
        }
        assert_eq!(
            m.metadata.annotations.expect("annotations")[POLICY_NAME_ANNOTATION],
            long,
            "the full name is kept for the sweep"
        );
        assert!(m.metadata.labels.expect("labels")[POLICY_LABEL].len() <= 63);
    }

    #[test]
    fn read_back_notices_a_missing_webhook_or_a_stale_ca() {
        let desired = (
            mutating(&policy("p"), &target(), Engine::Webhook).expect("mutating"),
            validating(&policy("p"), &target(), Engine::Webhook, None),
        );
        assert!(in_place(
            (Some(&desired.0), &desired.1),
            (Some(&desired.0), &desired.1)
        ));
        let mut stale = desired.0.clone();
        stale.webhooks.as_mut().expect("hooks")[0]
            .client_config
            .ca_bundle = Some(ByteString(b"OLD".to_vec()));
        assert!(!in_place(
            (Some(&stale), &desired.1),
            (Some(&desired.0), &desired.1)
        ));
        let mut missing = desired.1.clone();
        missing.webhooks.as_mut().expect("hooks").pop();
        assert!(!in_place(
            (Some(&desired.0), &missing),
            (Some(&desired.0), &desired.1)
        ));
    }

    #[test]
    fn the_native_engine_keeps_only_the_access_webhook() {
        assert!(mutating(&policy("p"), &target(), Engine::Native).is_none());
        let v = validating(&policy("p"), &target(), Engine::Native, None);
        let names: Vec<String> = v
            .webhooks
            .expect("hooks")
            .into_iter()
            .map(|w| w.name)
            .collect();
        assert_eq!(names, ["access.p.policies.enclave.dev"]);
    }

    #[test]
    fn audit_policies_never_fail_closed() {
        let mut audit = policy("p");
        audit.spec.enforcement = Enforcement::Audit;
        let m = mutating(&audit, &target(), Engine::Webhook).expect("mutating");
        assert!(
            m.webhooks
                .expect("hooks")
                .iter()
                .all(|w| w.failure_policy.as_deref() == Some("Ignore"))
        );
    }
}
