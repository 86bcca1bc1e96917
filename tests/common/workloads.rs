//! Workloads that migration tests move: Deployments placed outside the enclave before a
//! policy arrives, and a monitor of how many of their pods are on their way at once.

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use k8s_openapi::api::core::v1::Pod;

use super::*;

/// A Deployment whose pods prefer (softly) the nodes matching `key=value`. Its pods take
/// a second to become Ready (kwok honours the annotation; a real kubelet ignores it), so
/// that replacements stay in flight long enough for PDBs and `maxConcurrent` to matter.
pub fn deployment(name: &str, replicas: u32, key: &str, value: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\nspec:\n  replicas: {replicas}\n  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}}}, annotations: {{pod-ready.stage.kwok.x-k8s.io/delay: 1s}}}}\n    spec:\n      containers: [{{name: app, image: registry.k8s.io/pause:3.10}}]\n      affinity:\n        nodeAffinity:\n          preferredDuringSchedulingIgnoredDuringExecution:\n          - weight: 100\n            preference: {{matchExpressions: [{{key: \"{key}\", operator: In, values: [\"{value}\"]}}]}}\n"
    )
}

pub fn in_namespace(namespace: &str, yaml: &str) {
    let out = kubectl(&["apply", "-n", namespace, "-f", "-"], Some(yaml));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs a bare pause pod `name` and waits until it is Running: the node it runs on.
pub async fn running_pause_pod(namespace: &str, name: &str) -> String {
    kubectl_ok(&[
        "run",
        name,
        "-n",
        namespace,
        "--image=registry.k8s.io/pause:3.10",
        "--restart=Never",
    ]);
    eventually(
        Duration::from_secs(60),
        &format!("pod {namespace}/{name} running"),
        || async {
            let out = kubectl_ok(&[
                "get",
                "pod",
                name,
                "-n",
                namespace,
                "-o",
                "jsonpath={.status.phase}/{.spec.nodeName}",
            ]);
            match out.split_once('/') {
                Some(("Running", node)) if !node.is_empty() => Ok(node.to_string()),
                _ => Err(out),
            }
        },
    )
    .await
}

pub fn outside(pod: &Pod) -> bool {
    node_of(pod).is_some_and(|n| !ENCLAVE_NODES.contains(&n))
}

pub async fn running_pods(
    namespace: &str,
    n: usize,
    what: &str,
    accept: impl Fn(&[Pod]) -> bool,
) -> Vec<Pod> {
    let client = client().await;
    eventually(Duration::from_secs(120), what, || async {
        let pods: Vec<Pod> = pods(&client, namespace).await;
        let running: Vec<Pod> = pods.iter().filter(|p| is_running(p)).cloned().collect();
        if pods.len() == n && running.len() == n && accept(&running) {
            Ok(running)
        } else {
            Err(pods
                .iter()
                .map(|p| {
                    format!(
                        "{}@{}:{}",
                        p.metadata.name.clone().unwrap_or_default(),
                        node_of(p).unwrap_or("-"),
                        is_running(p)
                    )
                })
                .collect::<Vec<_>>())
        }
    })
    .await
}

/// Tracks, by polling every 100 ms, the most pods of a namespace on their way at once,
/// overall and per app label: the replicas an app is short of Running pods that are not
/// terminating, as a PodDisruptionBudget counts them. (Counting pods that are not
/// Running would count one move twice while the evicted pod terminates and its
/// replacement is pending.)
pub struct InFlightMonitor {
    max: Arc<AtomicUsize>,
    max_per_app: Arc<std::sync::Mutex<BTreeMap<String, usize>>>,
    task: tokio::task::JoinHandle<()>,
}

impl InFlightMonitor {
    pub fn start(namespace: &str, replicas: &[(&str, usize)]) -> Self {
        let max = Arc::new(AtomicUsize::new(0));
        let max_per_app = Arc::new(std::sync::Mutex::new(BTreeMap::new()));
        let (max2, per_app2, namespace) = (max.clone(), max_per_app.clone(), namespace.to_string());
        let replicas: BTreeMap<String, usize> = replicas
            .iter()
            .map(|(app, n)| (app.to_string(), *n))
            .collect();
        let task = tokio::spawn(async move {
            let client = client().await;
            loop {
                let pods = pods(&client, &namespace).await;
                let mut running: BTreeMap<String, usize> = BTreeMap::new();
                for pod in pods.iter().filter(|p| is_running(p)) {
                    let app = pod
                        .metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get("app"))
                        .cloned()
                        .unwrap_or_default();
                    *running.entry(app).or_default() += 1;
                }
                let short: BTreeMap<&String, usize> = replicas
                    .iter()
                    .map(|(app, want)| {
                        (
                            app,
                            want.saturating_sub(running.get(app).copied().unwrap_or(0)),
                        )
                    })
                    .collect();
                max2.fetch_max(short.values().sum(), Ordering::Relaxed);
                {
                    let mut seen = per_app2.lock().expect("not poisoned");
                    for (app, n) in short {
                        let entry: &mut usize = seen.entry(app.clone()).or_default();
                        *entry = (*entry).max(n);
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Self {
            max,
            max_per_app,
            task,
        }
    }

    /// Stops polling; returns the most in flight at once, overall and for `app`.
    pub fn stop(self, app: &str) -> (usize, usize) {
        self.task.abort();
        let per_app = self
            .max_per_app
            .lock()
            .expect("not poisoned")
            .get(app)
            .copied()
            .unwrap_or_default();
        (self.max.load(Ordering::Relaxed), per_app)
    }
}
