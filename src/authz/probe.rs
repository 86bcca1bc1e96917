//! Is the authorizer in force? The leader asks the API server, every
//! [`INTERVAL`], a SubjectAccessReview for the synthetic [`PROBE_USER`] reading a pod's
//! logs. Only the operator's authorizer refuses that subject with [`PROBE_REASON`]; so
//! the answer tells whether the API server consults it (refused with our reason), cannot
//! reach it (refused with another reason: the failure policy), or does not ask it at all
//! (no opinion). Each DataEnclave carries the answer as the `AuthorizerInForce`
//! condition, so a cluster without the authorizer is visibly weaker, not silently.

use std::{sync::Arc, time::Duration};

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec, SubjectAccessReviewStatus,
};
use kube::{Api, api::PostParams};

use super::decide::{PROBE_REASON, PROBE_USER};
use crate::{conditions::Observed, context::Context};

/// How often the leader probes.
pub const INTERVAL: Duration = Duration::from_secs(20);

/// The condition type on every DataEnclave.
pub const CONDITION: &str = "AuthorizerInForce";

/// The namespace the probe names: any but those the API server's configuration keeps
/// from the authorizer (kube-system, the operator's own); it need not exist.
pub const PROBE_NAMESPACE: &str = "enclave-operator-probe";

/// What the last probe saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probed {
    /// The API server answered the review.
    Answer {
        allowed: bool,
        denied: bool,
        reason: String,
        evaluation_error: String,
    },
    /// The review could not be created.
    Failed(String),
}

/// The review the probe sends.
pub fn probe_review() -> SubjectAccessReview {
    SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(PROBE_USER.to_string()),
            resource_attributes: Some(ResourceAttributes {
                namespace: Some(PROBE_NAMESPACE.to_string()),
                verb: Some("get".to_string()),
                resource: Some("pods".to_string()),
                subresource: Some("log".to_string()),
                name: Some("authorizer-probe".to_string()),
                ..ResourceAttributes::default()
            }),
            ..SubjectAccessReviewSpec::default()
        },
        ..SubjectAccessReview::default()
    }
}

impl Probed {
    pub fn of(status: Option<SubjectAccessReviewStatus>) -> Self {
        let status = status.unwrap_or_default();
        Probed::Answer {
            allowed: status.allowed,
            denied: status.denied.unwrap_or(false),
            reason: status.reason.unwrap_or_default(),
            evaluation_error: status.evaluation_error.unwrap_or_default(),
        }
    }
}

/// The condition a probe's answer gives. Pure.
pub fn condition(probed: &Probed) -> Observed {
    const HOW: &str = "see README, \"The authorizer\"";
    match probed {
        Probed::Answer {
            denied: true,
            reason,
            ..
        } if reason.contains(PROBE_REASON) => Observed::new(
            CONDITION,
            true,
            "Answering",
            "the API server asks enclave-operator before RBAC: logs, proxies, the kubelet API, impersonation and tokens of approved subjects are kept to the approved staff",
        ),
        Probed::Answer {
            denied: true,
            reason,
            evaluation_error,
            ..
        } => Observed::new(
            CONDITION,
            false,
            "NotAnswering",
            format!(
                "the API server asks enclave-operator but gets no answer ({}): requests the authorizer covers are refused by its failure policy until it answers",
                [reason.as_str(), evaluation_error.as_str()]
                    .into_iter()
                    .filter(|s| !s.is_empty())
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        ),
        Probed::Answer { allowed: true, .. } => Observed::new(
            CONDITION,
            false,
            "ProbeAllowed",
            format!(
                "an authorizer before enclave-operator's allowed the synthetic subject {PROBE_USER}: the enclave-operator webhook must come right after Node; {HOW}"
            ),
        ),
        Probed::Answer {
            evaluation_error, ..
        } => Observed::new(
            CONDITION,
            false,
            "NotConfigured",
            format!(
                "the API server does not ask enclave-operator{}: container logs, pods/proxy, services/proxy, the kubelet API (nodes/proxy) and impersonation are gated by RBAC alone, and only exec, attach, port-forward and debug containers by the admission gate; {HOW}",
                if evaluation_error.is_empty() {
                    String::new()
                } else {
                    format!(" ({evaluation_error})")
                }
            ),
        ),
        Probed::Failed(error) => Observed::new(
            CONDITION,
            false,
            "ProbeFailed",
            format!("could not ask the API server a SubjectAccessReview: {error}"),
        ),
    }
}

/// Puts the probe's condition into an enclave's status, keeping its transition time.
pub fn add_condition(
    status: &mut crate::crd::DataEnclaveStatus,
    enclave: &crate::crd::DataEnclave,
    probed: &Probed,
    now: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
) {
    let previous = enclave
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    status.conditions.retain(|c| c.type_ != CONDITION);
    status.conditions.extend(crate::conditions::settle(
        previous,
        vec![condition(probed)],
        enclave.metadata.generation,
        now,
    ));
}

/// Fires when the probe's answer changes, to re-run the enclaves' status.
pub fn changes(ctx: &Context) -> impl futures::Stream<Item = ()> + Send + 'static {
    let receiver = ctx.authorizer.subscribe();
    futures::stream::unfold(receiver, |mut receiver| async move {
        receiver.changed().await.ok()?;
        Some(((), receiver))
    })
}

/// Asks once.
pub async fn probe(client: &kube::Client) -> Probed {
    let api: Api<SubjectAccessReview> = Api::all(client.clone());
    match api.create(&PostParams::default(), &probe_review()).await {
        Ok(review) => Probed::of(review.status),
        Err(error) => Probed::Failed(error.to_string()),
    }
}

/// Probes every [`INTERVAL`] while this replica leads, publishing what it sees in the
/// context (which re-runs the DataEnclaves' status when it changes).
pub async fn run(ctx: Arc<Context>, term: crate::controller::Term) {
    loop {
        let probed = probe(&ctx.client).await;
        ctx.authorizer.send_if_modified(|last| {
            let changed = last.as_ref() != Some(&probed);
            if changed {
                tracing::info!(condition = ?condition(&probed), "authorizer probe");
            }
            *last = Some(probed);
            changed
        });
        tokio::select! {
            () = tokio::time::sleep(INTERVAL) => {}
            () = term.end() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(allowed: bool, denied: bool, reason: &str, error: &str) -> Probed {
        Probed::Answer {
            allowed,
            denied,
            reason: reason.into(),
            evaluation_error: error.into(),
        }
    }

    #[test]
    fn in_force_only_when_the_authorizer_itself_refused_the_probe() {
        let ours = condition(&answer(false, true, PROBE_REASON, ""));
        assert!(ours.status);
        assert_eq!(ours.reason, "Answering");

        // failurePolicy Deny with the webhook down: refused, but not by us.
        let down = condition(&answer(
            false,
            true,
            "",
            "Post \"https://127.0.0.1:1/authorize\": dial tcp: connection refused",
        ));
        assert!(!down.status);
        assert_eq!(down.reason, "NotAnswering");
        assert!(
            down.message.contains("connection refused"),
            "{}",
            down.message
        );

        // No authorization configuration: RBAC has no opinion on the synthetic subject.
        let absent = condition(&answer(false, false, "", ""));
        assert!(!absent.status);
        assert_eq!(absent.reason, "NotConfigured");
        assert!(absent.message.contains("nodes/proxy"));

        assert_eq!(
            condition(&answer(true, false, "allowed by AlwaysAllow", "")).reason,
            "ProbeAllowed"
        );
        assert_eq!(
            condition(&Probed::Failed("forbidden".into())).reason,
            "ProbeFailed"
        );
    }

    #[test]
    fn the_probe_asks_about_a_covered_request_outside_the_excluded_namespaces() {
        let review = probe_review();
        let attributes = review.spec.resource_attributes.expect("resource request");
        assert_eq!(attributes.subresource.as_deref(), Some("log"));
        assert_ne!(attributes.namespace.as_deref(), Some("kube-system"));
        assert_eq!(review.spec.user.as_deref(), Some(PROBE_USER));
    }
}
