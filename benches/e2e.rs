//! Pod CREATE through the real API server, interleaved: a namespace without policy, one
//! enforced by the native engine, one by webhooks (run by `make bench-e2e`, which
//! starts the control plane, the operator and the policies first; `make bench-peers`
//! adds namespaces Kyverno enforces). Server-side dry runs, so the measurement is
//! admission, not the scheduler; one keep-alive client per namespace and worker.
//!
//! Environment: `BENCH_NAMESPACES` (comma-separated, first = the baseline),
//! `BENCH_REQUESTS` per namespace (default 500), `BENCH_CONCURRENCY` (default 1).

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::{Api, api::PostParams};

fn pod(i: usize) -> Pod {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("bench-{i}"), "labels": {"app": "bench"}},
        "spec": {
            "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10",
                "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}],
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["eu-west-1a", "eu-north-1a"]}]}
            ]}}}
        }
    }))
    .expect("pod")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
    let namespaces: Vec<String> = std::env::var("BENCH_NAMESPACES")
        .unwrap_or_else(|_| "bench-none,bench-native,bench-webhook".into())
        .split(',')
        .map(str::to_string)
        .collect();
    let requests: usize = std::env::var("BENCH_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let concurrency: usize = std::env::var("BENCH_CONCURRENCY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); namespaces.len()];
    // One client (one keep-alive connection pool) per namespace and worker.
    let mut workers = Vec::new();
    for worker in 0..concurrency {
        let mut apis = Vec::new();
        for namespace in &namespaces {
            let client = kube::Client::try_default()
                .await
                .expect("a cluster (make bench-e2e starts one)");
            apis.push(Api::<Pod>::namespaced(client, namespace));
        }
        let per_worker = requests.div_ceil(concurrency);
        workers.push(tokio::spawn(async move {
            let params = PostParams {
                dry_run: true,
                ..PostParams::default()
            };
            // Warm every connection and every admission path first.
            for api in &apis {
                for i in 0..20 {
                    let _ = api.create(&params, &pod(i)).await;
                }
            }
            let mut mine: Vec<Vec<Duration>> = vec![Vec::new(); apis.len()];
            for i in 0..per_worker {
                // Interleaved: each round sends one request to every namespace, in a
                // rotating order, so drift in the cluster hits all of them alike.
                for k in 0..apis.len() {
                    let which = (i + k) % apis.len();
                    let started = Instant::now();
                    let result = apis[which]
                        .create(&params, &pod(worker * per_worker + i))
                        .await;
                    let took = started.elapsed();
                    if let Err(error) = result {
                        panic!("create in namespace {which}: {error}");
                    }
                    mine[which].push(took);
                }
            }
            mine
        }));
    }
    for worker in workers {
        for (i, durations) in worker.await.expect("worker").into_iter().enumerate() {
            samples[i].extend(durations);
        }
    }
    for s in &mut samples {
        s.sort();
    }
    let base = &samples[0];
    println!(
        "| path (concurrency {concurrency}, {} requests each) | p50 ms | p90 ms | p99 ms | p99.9 ms | increment p50 / p90 / p99 / p99.9 ms |",
        base.len()
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    const QUANTILES: [f64; 4] = [0.5, 0.9, 0.99, 0.999];
    for (namespace, s) in namespaces.iter().zip(&samples) {
        let at: Vec<f64> = QUANTILES.iter().map(|q| ms(percentile(s, *q))).collect();
        let increments: Vec<String> = QUANTILES
            .iter()
            .zip(&at)
            .map(|(q, v)| format!("{:+.2}", v - ms(percentile(base, *q))))
            .collect();
        println!(
            "| {namespace} | {:.2} | {:.2} | {:.2} | {:.2} | {} |",
            at[0],
            at[1],
            at[2],
            at[3],
            increments.join(" / ")
        );
    }
}
