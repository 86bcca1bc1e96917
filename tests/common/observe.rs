//! What the operator shows in the cluster, read the same way by every test: a
//! policy's status and the Events it records.

use enclave_operator::crd::{ResidencyPolicy, ResidencyPolicyStatus};

use super::{client, kubectl_ok};

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
