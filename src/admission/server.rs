//! HTTP handlers: decode the AdmissionReview, decide, encode the response with its
//! JSON patch. One route per resource kind, so each decodes straight into its type.

use std::{collections::BTreeMap, net::SocketAddr, sync::Arc, time::Instant};

use axum::{Json, Router, extract::State, routing::post};
use k8s_openapi::api::{apps::v1::DaemonSet, core::v1::Pod};
use kube::core::{
    DynamicObject, Resource,
    admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation},
};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, histogram::Histogram},
    registry::Registry,
};
use serde_json::Value;

use super::decide::{self, POLICY_ANNOTATION, PodView, Report, Verdict};
use crate::scope::Catalog;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReviewLabels {
    pub webhook: &'static str,
    pub verdict: &'static str,
}

/// Admission metrics: reviews by webhook and verdict, and their latency.
#[derive(Clone)]
pub struct AdmissionMetrics {
    pub reviews: Family<ReviewLabels, Counter>,
    pub duration: Histogram,
}

impl AdmissionMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            reviews: Family::default(),
            duration: Histogram::new([0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.05]),
        };
        registry.register(
            "reviews",
            "Admission reviews by webhook and verdict (allowed, patched, denied, audited)",
            metrics.reviews.clone(),
        );
        registry.register(
            "review_duration_seconds",
            "Time to decide one admission review",
            metrics.duration.clone(),
        );
        metrics
    }
}

/// What the handlers share.
pub struct AdmissionState<C> {
    pub catalog: C,
    pub metrics: AdmissionMetrics,
    /// Where denials and Audit findings go to become Events on their policies.
    pub events: Option<tokio::sync::mpsc::Sender<Report>>,
}

type Review = Json<AdmissionReview<DynamicObject>>;

/// A response, its verdict label for metrics, and the reports to record as Events.
pub type Answer = (AdmissionResponse, &'static str, Vec<Report>);

/// The routes: `/mutate/pods`, `/validate/pods`, `/mutate/daemonsets`, `/validate/workloads`.
pub fn router<C: Catalog + Send + Sync + 'static>(state: Arc<AdmissionState<C>>) -> Router {
    Router::new()
        .route("/mutate/pods", post(mutate_pods::<C>))
        .route("/validate/pods", post(validate_pods::<C>))
        .route("/mutate/daemonsets", post(mutate_daemonsets::<C>))
        .route("/validate/workloads", post(validate_workloads::<C>))
        .with_state(state)
}

/// Turns a verdict into the response, with a JSON patch from `before` to the new
/// affinity at `affinity_path` (and the policy annotation at `annotations_path`).
fn respond(
    request: &AdmissionRequest<impl Resource>,
    mut verdict: Verdict,
    before: Option<&Value>,
    affinity_path: &[&str],
    annotations_path: &[&str],
) -> Answer {
    let reports = std::mem::take(&mut verdict.reports);
    let audited = reports.iter().any(|r| r.audit);
    let mut response = AdmissionResponse::from(request);
    if !verdict.warnings.is_empty() {
        response.warnings = Some(verdict.warnings.clone());
    }
    if let Some(message) = verdict.denied {
        return (response.deny(message), "denied", reports);
    }
    let (Some(spec), Some(before)) = (verdict.spec, before) else {
        return (
            response,
            if audited { "audited" } else { "allowed" },
            reports,
        );
    };
    let mut after = before.clone();
    // Only the affinity is replaced: re-encoding the whole spec could drop fields this
    // build of k8s-openapi does not know.
    let Ok(affinity) = serde_json::to_value(spec.affinity) else {
        return (
            response.deny("enclave-operator could not encode the placed affinity"),
            "denied",
            reports,
        );
    };
    set_path(&mut after, affinity_path, affinity);
    let annotations = ensure_object(&mut after, annotations_path);
    annotations.insert(
        POLICY_ANNOTATION.into(),
        Value::String(verdict.placed_by.join(",")),
    );
    let patch = json_patch::diff(before, &after);
    match response.clone().with_patch(patch) {
        Ok(response) => (response, "patched", reports),
        Err(_) => (
            response.deny("enclave-operator could not encode its patch"),
            "denied",
            reports,
        ),
    }
}

fn ensure_object<'a>(
    value: &'a mut Value,
    path: &[&str],
) -> &'a mut serde_json::Map<String, Value> {
    let mut current = value;
    for key in path {
        if !current.is_object() {
            *current = Value::Object(Default::default());
        }
        current = current
            .as_object_mut()
            .expect("made an object above")
            .entry(key.to_string())
            .or_insert_with(|| Value::Object(Default::default()));
    }
    if !current.is_object() {
        *current = Value::Object(Default::default());
    }
    current.as_object_mut().expect("made an object above")
}

fn set_path(value: &mut Value, path: &[&str], new: Value) {
    let (last, parents) = path.split_last().expect("non-empty path");
    ensure_object(value, parents).insert(last.to_string(), new);
}

/// Decodes the request, or answers with an `invalid` response naming the problem.
fn request_of(
    review: AdmissionReview<DynamicObject>,
) -> Result<AdmissionRequest<DynamicObject>, String> {
    review
        .try_into()
        .map_err(|e: kube::core::admission::ConvertAdmissionReviewError| e.to_string())
}

fn typed<T: serde::de::DeserializeOwned>(object: &DynamicObject) -> Result<(Value, T), String> {
    let value = serde_json::to_value(object).map_err(|e| e.to_string())?;
    let typed = T::deserialize(&value).map_err(|e| e.to_string())?;
    Ok((value, typed))
}

async fn handle<C: Catalog>(
    state: &AdmissionState<C>,
    webhook: &'static str,
    review: AdmissionReview<DynamicObject>,
    decide: impl FnOnce(&C, &AdmissionRequest<DynamicObject>) -> Answer,
) -> Review {
    let started = Instant::now();
    let dry_run = review.request.as_ref().is_some_and(|r| r.dry_run);
    let (response, verdict, reports) = match request_of(review) {
        Ok(request) => decide(&state.catalog, &request),
        Err(problem) => (AdmissionResponse::invalid(problem), "invalid", Vec::new()),
    };
    state
        .metrics
        .duration
        .observe(started.elapsed().as_secs_f64());
    state
        .metrics
        .reviews
        .get_or_create(&ReviewLabels { webhook, verdict })
        .inc();
    if verdict == "denied" {
        tracing::info!(webhook, message = %response.result.message, "admission denied");
    }
    // Events are reports, sent off the request path: a full queue drops them rather
    // than delaying admission. Dry runs change nothing, so they are not reported.
    if !dry_run && let Some(events) = &state.events {
        for report in reports {
            let _ = events.try_send(report);
        }
    }
    Json(response.into_review())
}

fn empty_labels() -> &'static BTreeMap<String, String> {
    static EMPTY: std::sync::OnceLock<BTreeMap<String, String>> = std::sync::OnceLock::new();
    EMPTY.get_or_init(BTreeMap::new)
}

/// Decides on a pod review: `decider` is `decide::mutate` or `decide::validate`.
pub fn pod_review<C: Catalog>(
    catalog: &C,
    request: &AdmissionRequest<DynamicObject>,
    decider: fn(&C, &PodView) -> Verdict,
) -> Answer {
    // Affinity is immutable once a pod exists: only creation is decided.
    let (Operation::Create, Some(object)) = (&request.operation, &request.object) else {
        return (AdmissionResponse::from(request), "allowed", Vec::new());
    };
    let (value, pod) = match typed::<Pod>(object) {
        Ok(parsed) => parsed,
        Err(e) => {
            return (
                AdmissionResponse::from(request).deny(format!("pod does not parse: {e}")),
                "denied",
                Vec::new(),
            );
        }
    };
    let spec = pod.spec.unwrap_or_default();
    let namespace = request
        .namespace
        .as_deref()
        .or(pod.metadata.namespace.as_deref())
        .unwrap_or_default();
    let name = pod
        .metadata
        .name
        .as_deref()
        .or(pod.metadata.generate_name.as_deref())
        .unwrap_or_default();
    let view = PodView {
        kind: "Pod",
        namespace,
        name,
        labels: pod.metadata.labels.as_ref().unwrap_or(empty_labels()),
        spec: &spec,
    };
    let verdict = decider(catalog, &view);
    respond(
        request,
        verdict,
        Some(&value),
        &["spec", "affinity"],
        &["metadata", "annotations"],
    )
}

async fn mutate_pods<C: Catalog>(
    State(state): State<Arc<AdmissionState<C>>>,
    Json(review): Review,
) -> Review {
    handle(&state, "mutate-pods", review, |catalog, request| {
        pod_review(catalog, request, decide::mutate)
    })
    .await
}

async fn validate_pods<C: Catalog>(
    State(state): State<Arc<AdmissionState<C>>>,
    Json(review): Review,
) -> Review {
    handle(&state, "validate-pods", review, |catalog, request| {
        pod_review(catalog, request, decide::validate)
    })
    .await
}

async fn mutate_daemonsets<C: Catalog>(
    State(state): State<Arc<AdmissionState<C>>>,
    Json(review): Review,
) -> Review {
    handle(&state, "mutate-daemonsets", review, |catalog, request| {
        let Some(object) = &request.object else {
            return (AdmissionResponse::from(request), "allowed", Vec::new());
        };
        let (value, daemonset) = match typed::<DaemonSet>(object) {
            Ok(parsed) => parsed,
            Err(e) => {
                return (
                    AdmissionResponse::from(request).deny(format!("DaemonSet does not parse: {e}")),
                    "denied",
                    Vec::new(),
                );
            }
        };
        let Some(template) = daemonset.spec.map(|s| s.template) else {
            return (AdmissionResponse::from(request), "allowed", Vec::new());
        };
        let spec = template.spec.unwrap_or_default();
        let labels = template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.as_ref())
            .unwrap_or(empty_labels());
        let view = PodView {
            kind: "DaemonSet",
            namespace: request.namespace.as_deref().unwrap_or_default(),
            name: &request.name,
            labels,
            spec: &spec,
        };
        let verdict = decide::mutate(catalog, &view);
        // The template changes on CREATE and UPDATE: the DaemonSet controller creates
        // pods from it, and a template that targets outside nodes would leave them pending.
        respond(
            request,
            verdict,
            Some(&value),
            &["spec", "template", "spec", "affinity"],
            &["spec", "template", "metadata", "annotations"],
        )
    })
    .await
}

/// The pod template of a workload, wherever its kind keeps it.
fn pod_template(kind: &str, object: &Value) -> Option<k8s_openapi::api::core::v1::PodTemplateSpec> {
    let template = match kind {
        "CronJob" => object.pointer("/spec/jobTemplate/spec/template")?,
        _ => object.pointer("/spec/template")?,
    };
    serde_json::from_value(template.clone()).ok()
}

async fn validate_workloads<C: Catalog>(
    State(state): State<Arc<AdmissionState<C>>>,
    Json(review): Review,
) -> Review {
    handle(&state, "validate-workloads", review, |catalog, request| {
        let Some(object) = &request.object else {
            return (AdmissionResponse::from(request), "allowed", Vec::new());
        };
        let Ok(value) = serde_json::to_value(object) else {
            return (AdmissionResponse::from(request), "allowed", Vec::new());
        };
        let Some(template) = pod_template(&request.kind.kind, &value) else {
            return (AdmissionResponse::from(request), "allowed", Vec::new());
        };
        let spec = template.spec.unwrap_or_default();
        let labels = template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.as_ref())
            .unwrap_or(empty_labels());
        let view = PodView {
            kind: &request.kind.kind,
            namespace: request.namespace.as_deref().unwrap_or_default(),
            name: &request.name,
            labels,
            spec: &spec,
        };
        respond(
            request,
            decide::warn_workload(catalog, &view),
            None,
            &[],
            &[],
        )
    })
    .await
}

/// Serves the webhook over TLS until the process ends; `tls` is reloaded in place when
/// certificates rotate.
pub async fn serve(
    addr: SocketAddr,
    tls: axum_server::tls_rustls::RustlsConfig,
    router: Router,
) -> std::io::Result<()> {
    tracing::info!(%addr, "serving admission webhooks over TLS");
    axum_server::bind_rustls(addr, tls)
        .serve(router.into_make_service())
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scope::StaticCatalog;
    use axum::body::Body;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    const REVIEW: &str = include_str!("../../tests/fixtures/pod-review.json");

    fn state() -> Arc<AdmissionState<StaticCatalog>> {
        let catalog = StaticCatalog::from_yaml(include_str!("../../tests/fixtures/catalog.yaml"))
            .expect("fixture");
        Arc::new(AdmissionState {
            catalog,
            metrics: AdmissionMetrics::register(&mut Registry::default()),
            events: None,
        })
    }

    async fn call(path: &str, body: String) -> AdmissionResponse {
        let request = axum::http::Request::post(path)
            .header("content-type", "application/json")
            .body(Body::from(body))
            .expect("request");
        let response = router(state()).oneshot(request).await.expect("served");
        assert_eq!(response.status(), 200);
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let review: AdmissionReview<DynamicObject> =
            serde_json::from_slice(&bytes).expect("a review");
        review.response.expect("a response")
    }

    #[tokio::test]
    async fn mutation_patch_places_the_pod_and_keeps_its_own_terms() {
        let response = call("/mutate/pods", REVIEW.to_string()).await;
        assert!(response.allowed, "{:?}", response.result);
        let patch: json_patch::Patch =
            serde_json::from_slice(&response.patch.expect("a patch")).expect("JSON patch");
        let review: Value = serde_json::from_str(REVIEW).expect("fixture");
        let mut pod = review["request"]["object"].clone();
        json_patch::patch(&mut pod, &patch).expect("the patch applies");
        let pod: Pod = serde_json::from_value(pod).expect("still a pod");
        assert_eq!(
            pod.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(POLICY_ANNOTATION))
                .map(String::as_str),
            Some("eu-user-data")
        );
        let spec = pod.spec.expect("spec");
        let terms = &spec
            .affinity
            .as_ref()
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|n| {
                n.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .expect("required")
            .node_selector_terms;
        assert_eq!(terms.len(), 4, "2 own terms × 2 sites");
        assert!(
            spec.affinity
                .as_ref()
                .and_then(|a| a.pod_anti_affinity.as_ref())
                .is_some()
        );
        // The patched pod passes validation.
        let mut validated: Value = serde_json::from_str(REVIEW).expect("fixture");
        validated["request"]["object"]["spec"] = serde_json::to_value(&spec).expect("spec");
        let response = call("/validate/pods", validated.to_string()).await;
        assert!(response.allowed, "{:?}", response.result);
    }

    #[tokio::test]
    async fn pinned_pod_is_denied_and_garbage_is_invalid() {
        let mut review: Value = serde_json::from_str(REVIEW).expect("fixture");
        review["request"]["object"]["spec"]["nodeSelector"] =
            serde_json::json!({"node-restriction.kubernetes.io/enclave-site": "virginia"});
        let response = call("/mutate/pods", review.to_string()).await;
        assert!(!response.allowed);
        assert!(
            response.result.message.contains("policy eu-user-data"),
            "{}",
            response.result.message
        );
        let response = call(
            "/mutate/pods",
            r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#.into(),
        )
        .await;
        assert!(!response.allowed, "a review without a request is refused");
    }
}
