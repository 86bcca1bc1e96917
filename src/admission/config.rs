//! The MutatingWebhookConfiguration and ValidatingWebhookConfiguration that send
//! in-scope requests to the operator — one webhook per policy and resource, narrowed by
//! the policy's own namespace and pod selectors so that requests outside every policy
//! never reach us — kept current by server-side apply, caBundle included.

use std::sync::Arc;

use k8s_openapi::{
    ByteString,
    api::admissionregistration::v1::{
        MatchCondition, MutatingWebhook, MutatingWebhookConfiguration, RuleWithOperations,
        ServiceReference, ValidatingWebhook, ValidatingWebhookConfiguration, WebhookClientConfig,
    },
    apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement, ObjectMeta},
};
use kube::{
    Api, Client, ResourceExt,
    api::{Patch, PatchParams},
};

use crate::{
    context::FIELD_MANAGER,
    crd::{Enforcement, ResidencyPolicy, Selector},
    scope::ALWAYS_EXCLUDED_NAMESPACES,
};

/// Name of both webhook configurations.
pub const CONFIGURATION_NAME: &str = "enclave-operator";

/// Seconds the API server waits for us. Short: in-scope requests fail closed, and a
/// stuck operator must not hold a deployment rollout for long.
pub const TIMEOUT_SECONDS: i32 = 5;

/// Where the API server reaches the webhook server.
#[derive(Clone, Debug)]
pub enum Endpoint {
    /// `https://<host:port>` — the operator runs outside the cluster (tests, `make demo`).
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

fn rule(groups: &[&str], resources: &[&str], operations: &[&str]) -> RuleWithOperations {
    RuleWithOperations {
        api_groups: Some(groups.iter().map(|s| s.to_string()).collect()),
        api_versions: Some(vec!["*".into()]),
        resources: Some(resources.iter().map(|s| s.to_string()).collect()),
        operations: Some(operations.iter().map(|s| s.to_string()).collect()),
        scope: Some("Namespaced".into()),
    }
}

/// The policy's namespace selector, with the always-excluded namespaces and the
/// operator's own namespace ANDed out.
fn namespace_selector(policy: &ResidencyPolicy, operator_namespace: Option<&str>) -> LabelSelector {
    let mut selector = policy.spec.match_.namespace_selector.to_label_selector();
    let mut excluded: Vec<String> = ALWAYS_EXCLUDED_NAMESPACES
        .iter()
        .map(|s| s.to_string())
        .collect();
    excluded.extend(operator_namespace.map(str::to_string));
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

/// Mirror pods (static pods reported by a kubelet) cannot be changed or refused
/// meaningfully, so they never reach the webhook.
fn not_mirror_pod() -> MatchCondition {
    MatchCondition {
        name: "not-a-mirror-pod".into(),
        expression: "!has(object.metadata.annotations) || !('kubernetes.io/config.mirror' in object.metadata.annotations)".into(),
    }
}

/// Enforce fails closed; Audit must never block, so it fails open.
fn failure_policy(policy: &ResidencyPolicy) -> String {
    match policy.spec.enforcement {
        Enforcement::Enforce => "Fail".into(),
        Enforcement::Audit => "Ignore".into(),
    }
}

fn webhook_name(policy: &ResidencyPolicy, what: &str) -> String {
    format!("{what}.{}.policies.enclave.dev", policy.name_any())
}

fn metadata() -> ObjectMeta {
    ObjectMeta {
        name: Some(CONFIGURATION_NAME.into()),
        labels: Some(
            [(
                "app.kubernetes.io/managed-by".to_string(),
                FIELD_MANAGER.to_string(),
            )]
            .into(),
        ),
        ..Default::default()
    }
}

/// The mutating configuration for these policies: pods on CREATE, DaemonSets on
/// CREATE and UPDATE (their template), per policy.
pub fn mutating(
    policies: &[Arc<ResidencyPolicy>],
    endpoint: &Endpoint,
    ca_bundle: &[u8],
    operator_namespace: Option<&str>,
) -> MutatingWebhookConfiguration {
    let mut webhooks = Vec::new();
    for policy in policies {
        let base = MutatingWebhook {
            admission_review_versions: vec!["v1".into()],
            side_effects: "None".into(),
            failure_policy: Some(failure_policy(policy)),
            timeout_seconds: Some(TIMEOUT_SECONDS),
            namespace_selector: Some(namespace_selector(policy, operator_namespace)),
            // Another webhook may change the pod after us; look again if it did.
            reinvocation_policy: Some("IfNeeded".into()),
            ..Default::default()
        };
        webhooks.push(MutatingWebhook {
            name: webhook_name(policy, "pods"),
            client_config: endpoint.client_config("/mutate/pods", ca_bundle),
            rules: Some(vec![rule(&[""], &["pods"], &["CREATE"])]),
            object_selector: policy
                .spec
                .match_
                .pod_selector
                .as_ref()
                .map(Selector::to_label_selector),
            match_conditions: Some(vec![not_mirror_pod()]),
            ..base.clone()
        });
        webhooks.push(MutatingWebhook {
            name: webhook_name(policy, "daemonsets"),
            client_config: endpoint.client_config("/mutate/daemonsets", ca_bundle),
            rules: Some(vec![rule(
                &["apps"],
                &["daemonsets"],
                &["CREATE", "UPDATE"],
            )]),
            ..base
        });
    }
    MutatingWebhookConfiguration {
        metadata: metadata(),
        webhooks: Some(webhooks),
    }
}

/// The validating configuration: the final pod on CREATE (fails closed under Enforce),
/// and workloads' templates for warnings (never blocks).
pub fn validating(
    policies: &[Arc<ResidencyPolicy>],
    endpoint: &Endpoint,
    ca_bundle: &[u8],
    operator_namespace: Option<&str>,
) -> ValidatingWebhookConfiguration {
    let mut webhooks = Vec::new();
    for policy in policies {
        let base = ValidatingWebhook {
            admission_review_versions: vec!["v1".into()],
            side_effects: "None".into(),
            timeout_seconds: Some(TIMEOUT_SECONDS),
            namespace_selector: Some(namespace_selector(policy, operator_namespace)),
            ..Default::default()
        };
        webhooks.push(ValidatingWebhook {
            name: webhook_name(policy, "pods"),
            client_config: endpoint.client_config("/validate/pods", ca_bundle),
            rules: Some(vec![rule(&[""], &["pods"], &["CREATE"])]),
            object_selector: policy
                .spec
                .match_
                .pod_selector
                .as_ref()
                .map(Selector::to_label_selector),
            match_conditions: Some(vec![not_mirror_pod()]),
            failure_policy: Some(failure_policy(policy)),
            ..base.clone()
        });
        webhooks.push(ValidatingWebhook {
            name: webhook_name(policy, "workloads"),
            client_config: endpoint.client_config("/validate/workloads", ca_bundle),
            rules: Some(vec![
                rule(
                    &["apps"],
                    &["deployments", "statefulsets", "replicasets", "daemonsets"],
                    &["CREATE", "UPDATE"],
                ),
                rule(&["batch"], &["jobs", "cronjobs"], &["CREATE", "UPDATE"]),
            ]),
            // Warnings only: a workload is never blocked on us.
            failure_policy: Some("Ignore".into()),
            ..base
        });
    }
    ValidatingWebhookConfiguration {
        metadata: metadata(),
        webhooks: Some(webhooks),
    }
}

/// Applies both configurations (server-side apply, forced: the operator owns them).
pub async fn apply(
    client: &Client,
    mutating: &MutatingWebhookConfiguration,
    validating: &ValidatingWebhookConfiguration,
) -> Result<(), kube::Error> {
    let params = PatchParams::apply(FIELD_MANAGER).force();
    Api::<MutatingWebhookConfiguration>::all(client.clone())
        .patch(CONFIGURATION_NAME, &params, &Patch::Apply(mutating))
        .await?;
    Api::<ValidatingWebhookConfiguration>::all(client.clone())
        .patch(CONFIGURATION_NAME, &params, &Patch::Apply(validating))
        .await?;
    Ok(())
}
