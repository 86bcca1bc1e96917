//! The load generator of `make bench-scale` (`hack/bench-scale.sh` drives it): puts a
//! cluster of a given size in place and makes pod events, fast, with many concurrent
//! requests on one client. Pods are bound to the kwok nodes by `nodeName` (no scheduler
//! in the way) in namespaces of 100 pods, `scale-00000`, `scale-00001`, …; every tenth
//! namespace carries `enclave.dev/scale=in`, which the benchmark's policy selects.
//!
//! `SCALE_CMD`:
//! - `populate`: namespaces and pods up to `SCALE_PODS` in all, on `SCALE_NODES` nodes
//!   (`bench-0` … `bench-N-1`), deleting namespaces beyond it (pods deleted at once).
//! - `touch`: `SCALE_EVENTS` pod updates (an annotation), in covered namespaces when
//!   `SCALE_SCOPE=in`, in the others when `out`; prints the seconds it took.

use std::time::Instant;

use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
};

const PODS_PER_NAMESPACE: usize = 100;
const CONCURRENCY: usize = 48;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn namespace_name(i: usize) -> String {
    format!("scale-{i:05}")
}

fn covered(i: usize) -> bool {
    i.is_multiple_of(10)
}

fn pod(namespace: usize, i: usize, nodes: usize) -> Pod {
    // Five pods per "ReplicaSet": the label sets repeat as they do in real clusters.
    let app = format!("app-{}", i / 5);
    let global = namespace * PODS_PER_NAMESPACE + i;
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": format!("{app}-{i:03}"),
            "labels": {"app": app, "pod-template-hash": format!("{:010x}", i / 5 * 7919), "tier": "backend"},
            "annotations": {"team": "payments", "owner": "platform"},
        },
        "spec": {
            "nodeName": format!("bench-{}", global % nodes),
            "containers": [{
                "name": "app", "image": "registry.example.com/app:1.0",
                "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                "ports": [{"name": "http", "containerPort": 8080}],
                "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
            }],
            "tolerations": [{"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}],
        }
    }))
    .expect("pod")
}

async fn populate(client: Client) {
    let pods = env("SCALE_PODS", 10_000);
    let nodes = env("SCALE_NODES", 500).max(1);
    let wanted = pods.div_ceil(PODS_PER_NAMESPACE);
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let existing: Vec<usize> = namespaces
        .list(&ListParams::default().labels("enclave.dev/scale-bench"))
        .await
        .expect("list namespaces")
        .items
        .iter()
        .filter_map(|n| n.name_any().strip_prefix("scale-")?.parse().ok())
        .collect();
    let started = Instant::now();
    // Shrinking: pods first (at once, no grace: kwok pods have nothing to stop), then
    // the namespaces.
    let extra: Vec<usize> = existing.iter().copied().filter(|&i| i >= wanted).collect();
    stream::iter(extra)
        .for_each_concurrent(8, |i| {
            let client = client.clone();
            async move {
                let name = namespace_name(i);
                let api: Api<Pod> = Api::namespaced(client.clone(), &name);
                let _ = api
                    .delete_collection(
                        &DeleteParams::default().grace_period(0),
                        &ListParams::default(),
                    )
                    .await;
                let _ = Api::<Namespace>::all(client)
                    .delete(&name, &DeleteParams::default())
                    .await;
            }
        })
        .await;
    // Growing: every namespace up to `wanted`, every pod in it (409s are fine).
    stream::iter(0..wanted)
        .for_each_concurrent(8, |i| {
            let namespaces = namespaces.clone();
            async move {
                let mut labels = serde_json::json!({"enclave.dev/scale-bench": "true"});
                if covered(i) {
                    labels["enclave.dev/scale"] = "in".into();
                }
                let namespace: Namespace = serde_json::from_value(serde_json::json!({
                    "metadata": {"name": namespace_name(i), "labels": labels}
                }))
                .expect("namespace");
                match namespaces.create(&PostParams::default(), &namespace).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(status)) if status.code == 409 => {}
                    Err(error) => panic!("create namespace {}: {error}", namespace_name(i)),
                }
            }
        })
        .await;
    let work: Vec<(usize, usize)> = (0..wanted)
        .flat_map(|n| {
            let in_this = PODS_PER_NAMESPACE.min(pods - n * PODS_PER_NAMESPACE);
            (0..in_this).map(move |i| (n, i))
        })
        .collect();
    let created = stream::iter(work)
        .map(|(n, i)| {
            let api: Api<Pod> = Api::namespaced(client.clone(), &namespace_name(n));
            async move {
                loop {
                    match api.create(&PostParams::default(), &pod(n, i, nodes)).await {
                        Ok(_) => return 1,
                        Err(kube::Error::Api(status)) if status.code == 409 => return 0,
                        // The API server sheds load with 429 under this rate: retry.
                        Err(kube::Error::Api(status)) if status.code == 429 => {
                            tokio::time::sleep(std::time::Duration::from_millis(200)).await
                        }
                        Err(error) => panic!("create pod {n}/{i}: {error}"),
                    }
                }
            }
        })
        .buffer_unordered(CONCURRENCY)
        .fold(0usize, |sum, n| async move { sum + n })
        .await;
    eprintln!(
        "populate: {wanted} namespaces, {pods} pods ({created} created) in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

async fn touch(client: Client) {
    let events = env("SCALE_EVENTS", 1000);
    let inside = std::env::var("SCALE_SCOPE").as_deref() != Ok("out");
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let selector = if inside {
        "enclave.dev/scale=in"
    } else {
        "enclave.dev/scale-bench,enclave.dev/scale!=in"
    };
    let names: Vec<String> = namespaces
        .list(&ListParams::default().labels(selector))
        .await
        .expect("list namespaces")
        .items
        .iter()
        .map(|n| n.name_any())
        .collect();
    let mut targets: Vec<(String, String)> = Vec::new();
    for name in &names {
        let api: Api<Pod> = Api::namespaced(client.clone(), name);
        for pod in api
            .list(&ListParams::default())
            .await
            .expect("list pods")
            .items
        {
            targets.push((name.clone(), pod.name_any()));
        }
        if targets.len() >= events {
            break;
        }
    }
    assert!(!targets.is_empty(), "no pods {selector}");
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let started = Instant::now();
    // Round-robin over the pods found until `events` updates are made.
    stream::iter(0..events)
        .for_each_concurrent(CONCURRENCY, |k| {
            let (namespace, name) = targets[k % targets.len()].clone();
            let api: Api<Pod> = Api::namespaced(client.clone(), &namespace);
            async move {
                let patch = serde_json::json!({"metadata": {"annotations": {"bench/touched": format!("{stamp}-{k}")}}});
                api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .unwrap_or_else(|e| panic!("patch {namespace}/{name}: {e}"));
            }
        })
        .await;
    println!("{:.3}", started.elapsed().as_secs_f64());
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes `--bench`; the command comes from the environment.
    let client = Client::try_default()
        .await
        .expect("a cluster (make bench-scale starts one)");
    match std::env::var("SCALE_CMD").as_deref() {
        Ok("populate") => populate(client).await,
        Ok("touch") => touch(client).await,
        other => panic!("SCALE_CMD must be populate or touch, not {other:?}"),
    }
}
