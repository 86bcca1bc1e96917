//! SubjectAccessReview (`authorization.k8s.io/v1`) in and out, and the handler the
//! operator's HTTPS server serves at [`super::PATH`]: decode, [`decide`], record, answer.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{body::Bytes, extract::State, response::Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::decide::{self, Attributes, Door, Judgement, NodePods, Verdict};
use crate::{
    admission::server::{AdmissionState, answer},
    decisions::{Kind, Record},
    scope::Catalog,
};

/// How long a [`NodePods`] index is used before it is rebuilt from the caches: a pod
/// that just started on a node is known to guard it within this long.
pub const NODE_INDEX_TTL: Duration = Duration::from_secs(1);

/// The authorizer's own state beside the admission state.
#[derive(Default)]
pub struct AuthzState {
    nodes: Mutex<Option<(Instant, Arc<NodePods>)>>,
}

impl AuthzState {
    /// The node index, rebuilt when older than [`NODE_INDEX_TTL`]: `nodes/proxy`
    /// requests come in bursts (a scraper, `kubectl logs -f` through the kubelet), and
    /// walking every covered pod per request would cost more than the decision.
    pub fn node_pods<C: Catalog>(&self, catalog: &C) -> Arc<NodePods> {
        let mut guard = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
        match &*guard {
            Some((built, index)) if built.elapsed() < NODE_INDEX_TTL => index.clone(),
            _ => {
                let index = Arc::new(NodePods::build(catalog));
                *guard = Some((Instant::now(), index.clone()));
                index
            }
        }
    }
}

/// An incoming SubjectAccessReview.
#[derive(Deserialize, Default)]
pub struct ReviewIn {
    #[serde(default, rename = "apiVersion")]
    pub api_version: String,
    #[serde(default)]
    pub spec: Spec,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Spec {
    #[serde(default)]
    pub resource_attributes: Option<ResourceAttributes>,
    #[serde(default)]
    pub user: String,
    #[serde(default)]
    pub groups: Vec<String>,
}

#[derive(Deserialize, Default)]
pub struct ResourceAttributes {
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub verb: String,
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub resource: String,
    #[serde(default)]
    pub subresource: String,
    #[serde(default)]
    pub name: String,
}

/// The answer: `allowed` is never true (the authorizer only ever refuses or abstains).
#[derive(Serialize, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ReviewOut {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub status: Status,
}

#[derive(Serialize, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub allowed: bool,
    pub denied: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub evaluation_error: String,
}

impl ReviewOut {
    fn new(status: Status) -> Self {
        Self {
            api_version: "authorization.k8s.io/v1",
            kind: "SubjectAccessReview",
            status,
        }
    }

    pub fn of(verdict: &Verdict) -> Self {
        Self::new(Status {
            allowed: false,
            denied: verdict.deny.is_some(),
            reason: verdict.deny.clone().unwrap_or_default(),
            evaluation_error: String::new(),
        })
    }

    /// A review that cannot be read is refused: the API server's matchConditions send
    /// only requests that can reach enclave data, and one the operator cannot judge
    /// fails closed (a misconfigured `subjectAccessReviewVersion` shows at once, and the
    /// probe reports it).
    fn unreadable(error: String) -> Self {
        Self::new(Status {
            allowed: false,
            denied: true,
            reason: error.clone(),
            evaluation_error: error,
        })
    }
}

/// Decides one review.
pub fn review<C: Catalog>(catalog: &C, state: &AuthzState, review: &ReviewIn) -> Verdict {
    let Some(resource) = &review.spec.resource_attributes else {
        return Verdict::default();
    };
    let attributes = attributes(&review.spec, resource);
    // Only node requests need the index; building it for others would be waste.
    if Door::of(&attributes) == Some(Door::NodeProxy) {
        let nodes = state.node_pods(catalog);
        decide::decide(catalog, &nodes, &attributes)
    } else {
        decide::decide(catalog, &NodePods::default(), &attributes)
    }
}

fn attributes<'a>(spec: &'a Spec, resource: &'a ResourceAttributes) -> Attributes<'a> {
    Attributes {
        user: &spec.user,
        groups: &spec.groups,
        verb: &resource.verb,
        group: &resource.group,
        resource: &resource.resource,
        subresource: &resource.subresource,
        namespace: &resource.namespace,
        name: &resource.name,
        now: jiff::Timestamp::now(),
    }
}

/// The decision-log record of an answer to a covered request, allowed or denied.
pub fn record(review: &ReviewIn, verdict: &Verdict) -> Option<Record> {
    if !verdict.covered() {
        return None;
    }
    let resource = review.spec.resource_attributes.as_ref()?;
    let attributes = attributes(&review.spec, resource);
    let door = verdict.door?;
    let denying = verdict
        .findings
        .iter()
        .find(|f| f.judgement == Judgement::Denied);
    let message = match &verdict.deny {
        Some(reason) => reason.clone(),
        None => verdict
            .findings
            .iter()
            .map(|f| f.message.as_str())
            .collect::<Vec<_>>()
            .join("; "),
    };
    let policy = denying
        .or(verdict.findings.first())
        .map(|f| f.policy.as_str());
    let mut record = Record::new(
        if verdict.deny.is_some() {
            Kind::AuthorizerDenied
        } else {
            Kind::AuthorizerNoOpinion
        },
        policy,
        Verdict::subject(&attributes),
        message,
    )
    .with("user", attributes.user)
    .with("groups", attributes.groups.to_vec())
    .with("verb", attributes.verb)
    .with("door", door.as_str());
    if !attributes.subresource.is_empty() {
        record = record.with("subresource", attributes.subresource);
    }
    if !verdict.grants.is_empty() {
        // What was done under which grant: the audit report joins on it.
        record = record.with("grants", verdict.grants.clone());
    }
    if verdict
        .findings
        .iter()
        .any(|f| f.judgement == Judgement::WouldDeny)
    {
        record = record.with("audit", true);
    }
    let policies: Vec<Value> = verdict
        .findings
        .iter()
        .map(|f| Value::String(f.policy.clone()))
        .collect();
    if !policies.is_empty() {
        record = record.with("policies", policies);
    }
    Some(record)
}

/// The handler of [`super::PATH`] on the operator's HTTPS server.
pub async fn handle<C: Catalog + Send + Sync + 'static>(
    State(state): State<Arc<AdmissionState<C>>>,
    body: Bytes,
) -> Response {
    let started = Instant::now();
    let (out, verdict_label) = match serde_json::from_slice::<ReviewIn>(&body) {
        Ok(review_in)
            if review_in.api_version.is_empty()
                || review_in.api_version == "authorization.k8s.io/v1" =>
        {
            let verdict = review(&state.catalog, &state.authz, &review_in);
            if let (Some(sink), Some(record)) = (&state.sink, record(&review_in, &verdict)) {
                sink.record(record);
            }
            if verdict.deny.is_some()
                && verdict.door != Some(Door::Probe)
                && let Some(denying) = verdict
                    .findings
                    .iter()
                    .find(|f| f.judgement == decide::Judgement::Denied)
            {
                state.observer.denied(
                    &state.catalog,
                    &state.metrics,
                    &denying.enclave,
                    &review_in.spec.user,
                    &review_in.spec.groups,
                    review_in
                        .spec
                        .resource_attributes
                        .as_ref()
                        .map_or("", |r| r.name.as_str()),
                    jiff::Timestamp::now(),
                );
            }
            if let Some(reason) = &verdict.deny
                && verdict.door != Some(Door::Probe)
            {
                tracing::info!(user = %review_in.spec.user, %reason, "authorizer denied");
            }
            let label = if verdict.deny.is_some() {
                "denied"
            } else if verdict.covered() {
                "no_opinion"
            } else {
                "uncovered"
            };
            (ReviewOut::of(&verdict), label)
        }
        Ok(review_in) => (
            ReviewOut::unreadable(format!(
                "enclave-operator answers authorization.k8s.io/v1 SubjectAccessReviews, got apiVersion {:?}: set subjectAccessReviewVersion: v1",
                review_in.api_version
            )),
            "invalid",
        ),
        Err(error) => (
            ReviewOut::unreadable(format!("the SubjectAccessReview does not parse: {error}")),
            "invalid",
        ),
    };
    answer(&state.metrics, "authorize", verdict_label, started, &out)
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use prometheus_client::registry::Registry;
    use serde_json::json;
    use tower::ServiceExt;

    use super::*;
    use crate::{
        admission::server::{Limits, router},
        decisions::Sink,
        metrics::AdmissionMetrics,
        scope::StaticCatalog,
    };

    fn state(sink: Option<Sink>) -> Arc<AdmissionState<StaticCatalog>> {
        let catalog =
            StaticCatalog::from_yaml(include_str!("testdata/catalog.yaml")).expect("fixture");
        Arc::new(AdmissionState::new(
            catalog,
            AdmissionMetrics::register(&mut Registry::default()),
            sink,
            Limits::default(),
        ))
    }

    async fn call(state: Arc<AdmissionState<StaticCatalog>>, body: Value) -> Value {
        let request = axum::http::Request::post(super::super::PATH)
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .expect("request");
        let response = router(state).oneshot(request).await.expect("served");
        assert_eq!(response.status(), axum::http::StatusCode::OK);
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        serde_json::from_slice(&bytes).expect("JSON")
    }

    /// A review as kube-apiserver sends it (v1, every string attribute present).
    fn review(user: &str, groups: &[&str], attributes: Value) -> Value {
        json!({
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "metadata": {"creationTimestamp": null},
            "spec": {"resourceAttributes": attributes, "user": user, "groups": groups, "uid": "1"},
            "status": {"allowed": false}
        })
    }

    fn logs(namespace: &str, pod: &str) -> Value {
        json!({"namespace": namespace, "verb": "get", "group": "", "version": "v1", "resource": "pods", "subresource": "log", "name": pod})
    }

    #[tokio::test]
    async fn answers_deny_or_no_opinion_and_records_every_covered_answer() {
        let (sink, mut records) = Sink::new(16);
        let state = state(Some(sink));

        let out = call(
            state.clone(),
            review("mallory", &["system:authenticated"], logs("shop", "db-0")),
        )
        .await;
        assert_eq!(out["apiVersion"], "authorization.k8s.io/v1");
        assert_eq!(out["kind"], "SubjectAccessReview");
        assert_eq!(out["status"]["allowed"], false);
        assert_eq!(out["status"]["denied"], true);
        assert!(
            out["status"]["reason"]
                .as_str()
                .expect("reason")
                .contains("may not read the logs of pod shop/db-0")
        );
        let record = records.try_recv().expect("a denial is recorded");
        assert_eq!(record.kind, Kind::AuthorizerDenied);
        assert_eq!(record.policy.as_deref(), Some("eu-user-data"));
        assert_eq!(
            record.subject,
            crate::decisions::Subject::new("Pod", Some("shop"), "db-0")
        );
        assert_eq!(record.details["user"], "mallory");
        assert_eq!(record.details["door"], "logs");

        let out = call(
            state.clone(),
            review("alice", &["eu-data-stewards"], logs("shop", "db-0")),
        )
        .await;
        assert_eq!(
            out["status"],
            json!({"allowed": false, "denied": false}),
            "no opinion: RBAC decides"
        );
        let record = records
            .try_recv()
            .expect("an approved read is recorded too");
        assert_eq!(record.kind, Kind::AuthorizerNoOpinion);

        let out = call(state.clone(), review("mallory", &[], logs("public", "web"))).await;
        assert_eq!(out["status"]["denied"], false);
        assert!(
            records.try_recv().is_err(),
            "requests outside every enclave are not recorded"
        );

        // A non-resource request (matchConditions should not send one) is no concern.
        let out = call(state.clone(), json!({"apiVersion": "authorization.k8s.io/v1", "spec": {"nonResourceAttributes": {"path": "/healthz", "verb": "get"}, "user": "x"}})).await;
        assert_eq!(out["status"]["denied"], false);
    }

    #[tokio::test]
    async fn a_review_it_cannot_read_is_refused() {
        let out = call(
            state(None),
            json!({"apiVersion": "authorization.k8s.io/v1beta1", "spec": {}}),
        )
        .await;
        assert_eq!(out["status"]["denied"], true);
        assert!(
            out["status"]["reason"]
                .as_str()
                .expect("reason")
                .contains("subjectAccessReviewVersion: v1")
        );
        let request = axum::http::Request::post(super::super::PATH)
            .body(Body::from("not json"))
            .expect("request");
        let response = router(state(None)).oneshot(request).await.expect("served");
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        let out: Value = serde_json::from_slice(&bytes).expect("JSON");
        assert_eq!(out["status"]["denied"], true);
    }

    #[tokio::test]
    async fn node_requests_use_the_node_index() {
        let state = state(None);
        let node = |name: &str| json!({"verb": "get", "group": "", "resource": "nodes", "subresource": "proxy", "name": name, "namespace": ""});
        let out = call(state.clone(), review("prom", &[], node("virginia-a"))).await;
        assert_eq!(
            out["status"]["denied"], true,
            "an in-scope pod runs on virginia-a"
        );
        let out = call(state.clone(), review("prom", &[], node("virginia-b"))).await;
        assert_eq!(out["status"]["denied"], false);
    }
}
