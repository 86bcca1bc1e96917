//! The authorizer: the security gateway for what admission never sees.
//!
//! Reads (`pods/log`, Secrets), the proxies (`pods/proxy`, `services/proxy`), the
//! kubelet's API (`nodes/proxy`: exec, attach, run, logs and port-forward of every pod
//! on a node, through the API server or, as the kubelet asks the API server, directly),
//! impersonation and token minting are authorized, never admitted. The operator serves
//! a SubjectAccessReview webhook ([`PATH`], on its HTTPS server) that the API server asks
//! **after the Node authorizer and before RBAC** through its structured authorization
//! configuration ([`configuration`]). It answers an explicit deny to subjects an
//! enclave does not approve on requests that reach that enclave's data, and no opinion
//! to everything else, so that RBAC still decides; it never allows.
//!
//! - [`decide`]: the pure decision, from the review's attributes and the caches.
//! - [`review`]: SubjectAccessReview in and out, the handler, the decision-log record.
//! - [`probe`]: whether the API server consults it, for the DataEnclave's status.

pub mod decide;
pub mod probe;
pub mod review;

use std::time::Duration;

/// Where the operator's HTTPS server answers SubjectAccessReviews.
pub const PATH: &str = "/authorize";

/// How long the API server keeps an answer (`unauthorizedTTL`: a deny and a no-opinion
/// are both "not allowed" to its cache). It bounds how late an approval or a
/// revocation takes effect, and how often a repeated identical request is asked again.
pub const UNAUTHORIZED_TTL: Duration = Duration::from_secs(10);

/// How long the API server waits for an answer before its failure policy applies.
/// Decisions take microseconds; the budget is for a replica that is restarting.
pub const TIMEOUT: Duration = Duration::from_secs(3);

/// The requests the API server sends to the `enclave-data` webhook: those through which
/// enclave data can be reached. A CEL expression on the SubjectAccessReview (`request`);
/// the namespaces are not known to the API server's configuration, so every namespace's
/// requests of these kinds are sent (and answered with no opinion where no policy
/// covers them).
const DATA_DOORS: &str = "(request.resourceAttributes.verb == 'impersonate' || request.resourceAttributes.verb.startsWith('impersonate:')) && request.resourceAttributes.group in ['', 'authentication.k8s.io'] && request.resourceAttributes.resource in ['users', 'groups', 'serviceaccounts'] || request.resourceAttributes.group == '' && (request.resourceAttributes.resource == 'pods' && request.resourceAttributes.subresource in ['log', 'proxy'] || request.resourceAttributes.resource in ['services', 'nodes'] && request.resourceAttributes.subresource == 'proxy' || request.resourceAttributes.resource == 'serviceaccounts' && request.resourceAttributes.subresource == 'token' && request.resourceAttributes.verb == 'create')";

/// The requests the API server sends to the `enclave-secrets` webhook (Secrets are
/// gated only where an enclave opts in, see `spec.access.gatedReads`).
const SECRET_READS: &str = "request.resourceAttributes.group == '' && request.resourceAttributes.resource == 'secrets' && request.resourceAttributes.subresource == '' && request.resourceAttributes.verb in ['get', 'list', 'watch']";

/// The API server's `AuthorizationConfiguration` (`apiserver.config.k8s.io/v1`,
/// `--authorization-config`) with the operator's webhooks between Node and RBAC.
///
/// - `enclave-data` (logs, the three proxies, impersonation, tokens): `failurePolicy: Deny`. While the operator cannot answer, these requests
///   are refused for everyone but `system:masters` and nodes (decided before any
///   webhook) — in every namespace but kube-system and the operator's own, since the
///   configuration cannot tell which namespaces an enclave covers. An open door during
///   an outage would be worse than no `kubectl logs` for its duration; the operator's
///   own logs stay readable to repair it.
/// - `enclave-secrets` (get, list, watch of Secrets): `failurePolicy: NoOpinion`.
///   Controllers read Secrets all the time; refusing every Secret read in the cluster
///   while the operator restarts would take the cluster down with it. So an outage
///   leaves Secrets to RBAC, and the probe reports the authorizer not in force.
///
/// Both: matchConditions keep every other request from ever waiting on the operator;
/// answers are cached for [`UNAUTHORIZED_TTL`] (`authorizedTTL` is moot: the
/// authorizer never allows); timeout [`TIMEOUT`].
pub fn configuration(operator_namespace: &str, kubeconfig: &str) -> String {
    let ttl = UNAUTHORIZED_TTL.as_secs();
    let timeout = TIMEOUT.as_secs();
    let webhook = |name: &str, failure: &str, doors: &str| {
        format!(
            r#"- type: Webhook
  name: {name}
  webhook:
    timeout: {timeout}s
    subjectAccessReviewVersion: v1
    matchConditionSubjectAccessReviewVersion: v1
    failurePolicy: {failure}
    authorizedTTL: 10s
    cacheAuthorizedRequests: false
    unauthorizedTTL: {ttl}s
    cacheUnauthorizedRequests: true
    connectionInfo:
      type: KubeConfigFile
      kubeConfigFile: {kubeconfig}
    matchConditions:
    - expression: has(request.resourceAttributes)
    - expression: "!(request.resourceAttributes.namespace in ['kube-system', '{operator_namespace}'])"
    - expression: "{doors}"
"#
        )
    };
    format!(
        "# enclave-operator's authorizer between Node and RBAC (generated by `enclave-operator authorization-config`).\napiVersion: apiserver.config.k8s.io/v1\nkind: AuthorizationConfiguration\nauthorizers:\n- type: Node\n  name: node\n{}{}- type: RBAC\n  name: rbac\n",
        webhook("enclave-data", "Deny", DATA_DOORS),
        webhook("enclave-secrets", "NoOpinion", SECRET_READS),
    )
}

/// A kubeconfig through which the API server reaches the webhook.
pub fn kubeconfig(url: &str, ca_file: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: enclave-operator\n  cluster:\n    server: {url}{PATH}\n    certificate-authority: {ca_file}\nusers:\n- name: kube-apiserver\n  user: {{}}\ncontexts:\n- name: enclave-operator\n  context: {{cluster: enclave-operator, user: kube-apiserver}}\ncurrent-context: enclave-operator\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_local_control_plane_uses_the_generated_configuration() {
        assert_eq!(
            include_str!("../../tools/cluster/authorization.yaml"),
            configuration("@OPERATOR_NAMESPACE@", "@KUBECONFIG@"),
            "tools/cluster/authorization.yaml is generated: enclave-operator authorization-config --namespace @OPERATOR_NAMESPACE@ --kubeconfig @KUBECONFIG@"
        );
    }

    #[test]
    fn the_configuration_is_valid_yaml_with_node_first_and_rbac_last() {
        let value: serde_yaml::Value =
            serde_yaml::from_str(&configuration("enclave-system", "/etc/k/a.kubeconfig"))
                .expect("YAML");
        let types: Vec<&str> = value["authorizers"]
            .as_sequence()
            .expect("authorizers")
            .iter()
            .map(|a| a["type"].as_str().expect("type"))
            .collect();
        assert_eq!(types, ["Node", "Webhook", "Webhook", "RBAC"]);
        assert_eq!(
            value["authorizers"][1]["webhook"]["failurePolicy"],
            serde_yaml::Value::from("Deny")
        );
        assert_eq!(
            value["authorizers"][2]["webhook"]["failurePolicy"],
            serde_yaml::Value::from("NoOpinion")
        );
    }
}
