//! The admission path — decode the AdmissionReview, decide, build the JSON patch,
//! encode the response — for a 5 KB pod, from in-memory state only (no API call).
//!
//! `cargo bench --bench admission` (or `make bench`). Besides criterion's per-review
//! figures, it replays 20,000 reviews at 1,000 reviews/s on one thread and prints the
//! latency percentiles; docs/benchmarks.md records the results.

use std::{
    hint::black_box,
    sync::Arc,
    time::{Duration, Instant},
};

use axum::body::Body;
use criterion::{Criterion, criterion_group, criterion_main};
use enclave_operator::{
    admission::{
        Handler, review,
        server::{AdmissionMetrics, AdmissionState, Limits, router},
    },
    scope::StaticCatalog,
};
use tower::ServiceExt;

const REVIEW: &str = include_str!("../tests/fixtures/pod-review.json");
const CATALOG: &str = include_str!("../tests/fixtures/catalog.yaml");

fn catalog() -> StaticCatalog {
    StaticCatalog::from_yaml(CATALOG).expect("fixture")
}

/// Decode, decide, patch, encode: what one mutating review costs, without HTTP.
fn review_once(catalog: &StaticCatalog, body: &[u8]) -> Vec<u8> {
    let review: review::ReviewIn = serde_json::from_slice(body).expect("review");
    let request = review.request.expect("request");
    let answer = review::decide(Handler::MutatePod, catalog, &request);
    serde_json::to_vec(&answer.review).expect("encode")
}

fn admission(c: &mut Criterion) {
    let catalog = catalog();
    let body = REVIEW.as_bytes();
    assert!(body.len() >= 5_000, "the fixture is a 5 KB pod");
    // It must really place the pod, or the benchmark measures a no-op.
    assert!(String::from_utf8_lossy(&review_once(&catalog, body)).contains("\"patch\""));

    c.bench_function("mutate_pod_review_5kb", |b| {
        b.iter(|| review_once(&catalog, black_box(body)))
    });

    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let state = Arc::new(AdmissionState::new(
        catalog.clone(),
        AdmissionMetrics::register(&mut prometheus_client::registry::Registry::default()),
        None,
        Limits::default(),
    ));
    let app = router(state);
    c.bench_function("mutate_pod_review_5kb_through_router", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let request = axum::http::Request::post("/mutate/pods")
                    .header("content-type", "application/json")
                    .body(Body::from(REVIEW))
                    .expect("request");
                black_box(app.clone().oneshot(request).await.expect("served"))
            })
        })
    });

    // Open-loop load: 1,000 reviews/s on this one thread for 20 s; latency counts from
    // each review's scheduled start, so a slow review delays (and penalises) the next.
    let rate = 1_000u32;
    let total = 20_000u32;
    let interval = Duration::from_secs(1) / rate;
    let mut latencies = Vec::with_capacity(total as usize);
    let start = Instant::now();
    for i in 0..total {
        let scheduled = start + interval * i;
        while Instant::now() < scheduled {
            std::hint::spin_loop();
        }
        black_box(review_once(&catalog, body));
        latencies.push(scheduled.elapsed());
    }
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    println!(
        "load {rate} reviews/s x {total}: p50 {:?}  p99 {:?}  p99.9 {:?}  max {:?}",
        pct(0.50),
        pct(0.99),
        pct(0.999),
        latencies[latencies.len() - 1]
    );
}

criterion_group!(benches, admission);
criterion_main!(benches);
