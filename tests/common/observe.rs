//! What the operator shows in the cluster, read the same way by every test: a
//! policy's status, the Events it records and its decision log.

use std::time::Duration;

use enclave_operator::crd::{ResidencyPolicy, ResidencyPolicyStatus};
use serde_json::Value;

use super::{client, eventually, kubectl_ok, shared_decisions};

/// The status of the ResidencyPolicy `name`; empty while it has none (or no policy
/// of that name exists), so that a test polls it until it shows what it waits for.
pub async fn policy_status(name: &str) -> ResidencyPolicyStatus {
    let api: kube::Api<ResidencyPolicy> = kube::Api::all(client().await);
    api.get_status(name)
        .await
        .ok()
        .and_then(|p| p.status)
        .unwrap_or_default()
}

/// Waits up to `timeout` until the status of `policy` satisfies `done`, and returns it;
/// on timeout the failure shows the last status read.
pub async fn status_becomes(
    policy: &str,
    timeout: Duration,
    what: &str,
    done: impl Fn(&ResidencyPolicyStatus) -> bool,
) -> ResidencyPolicyStatus {
    let done = &done;
    eventually(timeout, what, || async move {
        let status = policy_status(policy).await;
        if done(&status) {
            Ok(status)
        } else {
            Err(status)
        }
    })
    .await
}

/// The condition `type_` of a policy's status as (status, reason); empty strings while
/// the status has no such condition.
pub fn condition(status: &ResidencyPolicyStatus, type_: &str) -> (String, String) {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone()))
        .unwrap_or_default()
}

/// Empties the conditions of the DataEnclave `name`: what an earlier run left there
/// proves nothing, and what comes back is this run's.
pub fn clear_enclave_conditions(name: &str) {
    kubectl_ok(&[
        "patch",
        "dataenclave",
        name,
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"conditions":[]}}"#,
    ]);
}

/// The names of the Events in `namespace` that `field_selector` selects (for example
/// `reason=EvictedIntoEnclave`), one a line.
pub fn event_names(namespace: &str, field_selector: &str) -> String {
    kubectl_ok(&[
        "get",
        "events",
        "-n",
        namespace,
        "--field-selector",
        field_selector,
        "-o",
        "name",
    ])
}

/// The shared operator's decision records about the object `name` (in `namespace`, or
/// in any namespace and none when `None`).
pub fn decisions_about(namespace: Option<&str>, name: &str) -> Vec<Value> {
    shared_decisions()
        .into_iter()
        .filter(|record| {
            let object = &record["fields"]["object"];
            object["name"] == name && namespace.is_none_or(|ns| object["namespace"] == ns)
        })
        .collect()
}
