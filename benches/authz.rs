//! The authorizer's decision in process: decode a SubjectAccessReview, decide from the
//! caches, encode the answer — for a refused `kubectl logs`, an approved one, and a
//! `nodes/proxy` request — against a catalog of 10,000 covered pods on 500 nodes.
//! Also the cost of rebuilding the node index (at most once a second).
//!
//! `cargo bench --bench authz`; docs/benchmarks.md records the results.

use std::{
    hint::black_box,
    time::{Duration, Instant},
};

use criterion::{Criterion, criterion_group, criterion_main};
use enclave_operator::{
    authz::{
        decide::NodePods,
        review::{self, AuthzState, ReviewIn, ReviewOut},
    },
    cache::CachedPod,
    scope::StaticCatalog,
};

const CATALOG: &str = include_str!("../src/authz/testdata/catalog.yaml");

/// The unit tests' catalog with 10,000 more in-scope pods spread over 500 nodes.
fn catalog() -> StaticCatalog {
    let mut catalog = StaticCatalog::from_yaml(CATALOG).expect("fixture");
    for i in 0..10_000 {
        let mut pod = CachedPod::default();
        pod.metadata.name = Some(format!("app-{i}"));
        pod.metadata.namespace = Some("shop".into());
        pod.metadata.labels = Some([("app".to_string(), format!("app-{}", i % 50))].into());
        pod.spec.node_name = Some(format!("node-{}", i % 500));
        catalog.pods.push(std::sync::Arc::new(pod));
    }
    catalog
}

fn body(user: &str, groups: &str, attributes: &str) -> Vec<u8> {
    format!(
        r#"{{"apiVersion":"authorization.k8s.io/v1","kind":"SubjectAccessReview","metadata":{{"creationTimestamp":null}},"spec":{{"resourceAttributes":{attributes},"user":"{user}","groups":{groups},"uid":"1"}},"status":{{"allowed":false}}}}"#
    )
    .into_bytes()
}

fn once(catalog: &StaticCatalog, state: &AuthzState, body: &[u8]) -> Vec<u8> {
    let review_in: ReviewIn = serde_json::from_slice(body).expect("review");
    let verdict = review::review(catalog, state, &review_in);
    let _record = review::record(&review_in, &verdict);
    serde_json::to_vec(&ReviewOut::of(&verdict)).expect("encode")
}

fn authz(c: &mut Criterion) {
    let catalog = catalog();
    let state = AuthzState::default();
    let logs = r#"{"namespace":"shop","verb":"get","group":"","version":"v1","resource":"pods","subresource":"log","name":"app-17"}"#;
    let node = r#"{"namespace":"","verb":"get","group":"","version":"v1","resource":"nodes","subresource":"proxy","name":"node-17"}"#;
    let denied = body("mallory", r#"["system:authenticated"]"#, logs);
    let approved = body(
        "alice",
        r#"["eu-data-stewards","system:authenticated"]"#,
        logs,
    );
    let kubelet = body("prom", r#"["system:authenticated"]"#, node);
    assert!(String::from_utf8_lossy(&once(&catalog, &state, &denied)).contains("\"denied\":true"));
    assert!(
        String::from_utf8_lossy(&once(&catalog, &state, &approved)).contains("\"denied\":false")
    );
    assert!(String::from_utf8_lossy(&once(&catalog, &state, &kubelet)).contains("\"denied\":true"));

    c.bench_function("authorize_logs_denied", |b| {
        b.iter(|| once(&catalog, &state, black_box(&denied)))
    });
    c.bench_function("authorize_logs_approved", |b| {
        b.iter(|| once(&catalog, &state, black_box(&approved)))
    });
    c.bench_function("authorize_nodes_proxy_cached_index", |b| {
        b.iter(|| once(&catalog, &state, black_box(&kubelet)))
    });
    c.bench_function("node_index_rebuild_10000_pods", |b| {
        b.iter(|| NodePods::build(black_box(&catalog)))
    });

    // Percentiles of single decisions, as the webhook sees them (no HTTP).
    let mut samples: Vec<Duration> = Vec::with_capacity(20_000);
    for i in 0..20_000 {
        let body = [&denied, &approved, &kubelet][i % 3];
        let started = Instant::now();
        black_box(once(&catalog, &state, body));
        samples.push(started.elapsed());
    }
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q) as usize];
    println!(
        "authorizer decision, 20,000 reviews: p50 {:?} p99 {:?} max {:?}",
        at(0.5),
        at(0.99),
        samples[samples.len() - 1]
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(Duration::from_secs(3));
    targets = authz
}
criterion_main!(benches);
