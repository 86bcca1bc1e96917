//! Regression tests for what a hostile tenant and ordinary faults did to the
//! controller (the hardening issue): a PodDisruptionBudget held at zero blocks only its
//! own pods, and a workload whose replacements would be refused is reported, not
//! evicted in a loop.

use std::time::Duration;

use crate::common::*;
use k8s_openapi::api::core::v1::Pod;

const TIMEOUT: Duration = Duration::from_secs(120);
const ENCLAVE: &str = "hardening-eu";

fn in_namespace(namespace: &str, yaml: &str) {
    let out = kubectl(&["apply", "-n", namespace, "-f", "-"], Some(yaml));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A Deployment whose pods prefer Virginia (so they start outside the enclave).
fn deployment(name: &str, replicas: u32, template_extra: &str, annotations: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\nspec:\n  replicas: {replicas}\n  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}}}, annotations: {{{annotations}}}}}\n    spec:\n      terminationGracePeriodSeconds: 0\n      containers: [{{name: app, image: registry.k8s.io/pause:3.10}}]\n{template_extra}      affinity:\n        nodeAffinity:\n          preferredDuringSchedulingIgnoredDuringExecution:\n          - weight: 100\n            preference: {{matchExpressions: [{{key: {SITE_LABEL}, operator: In, values: [virginia]}}]}}\n"
    )
}

fn outside(pod: &Pod) -> bool {
    node_of(pod).is_some_and(|n| !ENCLAVE_NODES.contains(&n))
}

async fn namespace_pods(namespace: &str) -> Vec<Pod> {
    pods(&client().await, namespace).await
}

async fn violations(policy: &str) -> Vec<(String, String)> {
    policy_status(policy)
        .await
        .violations
        .into_iter()
        .map(|v| (v.name, v.reason))
        .collect()
}

struct DeletePolicy(&'static str);

impl Drop for DeletePolicy {
    fn drop(&mut self) {
        if !keep() {
            let _ = kubectl(
                &[
                    "delete",
                    "residencypolicy",
                    self.0,
                    "--ignore-not-found",
                    "--wait=false",
                ],
                None,
            );
        }
    }
}

/// Row 1: a PDB with maxUnavailable 0 on some in-scope pods is an answer, not an
/// error: those pods are reported as blocked by it, and the policy's other pods, in
/// another namespace, keep moving.
#[tokio::test]
async fn a_pdb_held_at_zero_blocks_only_its_own_pods() {
    let _cluster = cluster_lock().read().await;
    shared_operator("hardening");
    apply(&eu_enclave(ENCLAVE));
    let held = TestNamespace::in_scope_of("hard-pdb-held", "hard-pdb");
    let free = TestNamespace::in_scope_of("hard-pdb-free", "hard-pdb");
    in_namespace(&held.name, &deployment("held", 3, "", ""));
    in_namespace(
        &held.name,
        "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata:\n  name: held\nspec:\n  maxUnavailable: 0\n  selector: {matchLabels: {app: held}}\n",
    );
    in_namespace(&free.name, &deployment("free", 3, "", ""));
    for ns in [&held.name, &free.name] {
        eventually(TIMEOUT, "pods running in Virginia", || async {
            let pods = namespace_pods(ns).await;
            if pods.len() == 3 && pods.iter().all(|p| is_running(p) && outside(p)) {
                Ok(())
            } else {
                Err(pods.len())
            }
        })
        .await;
    }
    let held_before: Vec<String> = namespace_pods(&held.name)
        .await
        .iter()
        .filter_map(|p| p.metadata.uid.clone())
        .collect();
    let _policy = DeletePolicy("hard-pdb");
    apply(&policy(
        "hard-pdb",
        ENCLAVE,
        "  migration: {maxConcurrent: 2, maxEvictionsPerMinute: 600}\n",
    ));
    // The free namespace moves in although every pod of the held one is refused.
    eventually(
        TIMEOUT,
        "the other namespace's pods inside the enclave",
        || async {
            let pods = namespace_pods(&free.name).await;
            let inside = pods.iter().filter(|p| is_running(p) && !outside(p)).count();
            if pods.len() == 3 && inside == 3 {
                Ok(())
            } else {
                Err(format!("{inside}/3 inside"))
            }
        },
    )
    .await;
    // The held pods are reported as blocked by their PDB, with an Event, and not moved.
    eventually(
        TIMEOUT,
        "the held pods reported as DisruptionBudget",
        || async {
            let reported: Vec<(String, String)> = violations("hard-pdb")
                .await
                .into_iter()
                .filter(|(_, r)| r == "DisruptionBudget")
                .collect();
            if reported.len() == 3 {
                Ok(())
            } else {
                Err(reported)
            }
        },
    )
    .await;
    let events = kubectl_ok(&[
        "get",
        "events",
        "-n",
        &held.name,
        "--field-selector",
        "reason=DisruptionBudget",
        "-o",
        "jsonpath={.items[*].message}",
    ]);
    assert!(
        events.contains("disruption budget") || events.contains("PodDisruptionBudget"),
        "{events}"
    );
    let held_after: Vec<String> = namespace_pods(&held.name)
        .await
        .iter()
        .filter_map(|p| p.metadata.uid.clone())
        .collect();
    assert_eq!(held_before, held_after, "no held pod was evicted");
}

/// Row 4, the workload variant: a Deployment whose template pins its pods to a node
/// outside the enclave (with a forged mirror-pod annotation, which changes nothing)
/// predates the policy. Its replacements would be refused, so its pods are reported,
/// never evicted: no eviction loop, no workload taken down.
#[tokio::test]
async fn pods_whose_replacements_would_be_refused_are_reported_not_evicted() {
    let _cluster = cluster_lock().read().await;
    shared_operator("hardening");
    apply(&eu_enclave(ENCLAVE));
    let ns = TestNamespace::new("hard-pinned", true);
    in_namespace(
        &ns.name,
        &deployment(
            "pinned",
            2,
            "      nodeName: virginia-a\n",
            "kubernetes.io/config.mirror: forged",
        ),
    );
    eventually(TIMEOUT, "the pinned pods running", || async {
        let pods = namespace_pods(&ns.name).await;
        if pods.len() == 2 && pods.iter().all(is_running) {
            Ok(())
        } else {
            Err(pods.len())
        }
    })
    .await;
    let before: Vec<String> = namespace_pods(&ns.name)
        .await
        .iter()
        .filter_map(|p| p.metadata.uid.clone())
        .collect();
    apply(&policy(
        &ns.name,
        ENCLAVE,
        "  migration: {maxEvictionsPerMinute: 600}\n",
    ));
    eventually(
        TIMEOUT,
        "the pods reported as ReplacementWouldBeRefused",
        || async {
            let reported: Vec<(String, String)> = violations(&ns.name)
                .await
                .into_iter()
                .filter(|(_, r)| r == "ReplacementWouldBeRefused")
                .collect();
            if reported.len() == 2 {
                Ok(())
            } else {
                Err(reported)
            }
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after: Vec<String> = namespace_pods(&ns.name)
        .await
        .iter()
        .filter_map(|p| p.metadata.uid.clone())
        .collect();
    assert_eq!(before, after, "nothing evicted");
    let evictions = event_names(&ns.name, "reason=EvictedIntoEnclave");
    assert!(evictions.trim().is_empty(), "no eviction: {evictions}");
}

/// The operator's ServiceAccount may create pods and claims (its admission probes), but
/// the chart's `dry-run-only` policy refuses any it would store: RBAC alone cannot tell
/// a dry run from a real request. (Under `make kind-e2e` the chart is the one installed
/// in the cluster, with the same policy.)
#[tokio::test]
async fn the_operators_account_creates_pods_and_claims_only_as_dry_runs() {
    let _cluster = cluster_lock().read().await;
    let ns = TestNamespace::new("hardening-dry-run-only", false);
    let account = format!("system:serviceaccount:{OPERATOR_NAMESPACE}:enclave-operator");
    let objects = [
        "apiVersion: v1\nkind: Pod\nmetadata: {name: probe}\nspec:\n  containers: [{name: app, image: registry.k8s.io/pause:3.10}]\n",
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: probe}\nspec:\n  accessModes: [ReadWriteOnce]\n  resources: {requests: {storage: 1Gi}}\n",
    ];
    for yaml in objects {
        let create = |extra: &[&str]| {
            let mut args = vec!["create", "-n", &ns.name, "--as", &account, "-f", "-"];
            args.extend_from_slice(extra);
            kubectl(&args, Some(yaml))
        };
        let dry = create(&["--dry-run=server"]);
        assert!(
            dry.status.success(),
            "a dry run is allowed: {}",
            String::from_utf8_lossy(&dry.stderr)
        );
        let real = create(&[]);
        let error = String::from_utf8_lossy(&real.stderr);
        assert!(
            !real.status.success() && error.contains("only as") && error.contains("dry runs"),
            "a stored create is refused by the dry-run-only policy: {error}"
        );
    }
}

/// The label that takes a volume move's objects out of every policy's admission is the
/// operator's alone: the chart's `volume-move-label` policy refuses a pod or claim that
/// carries it, and a relabel that adds it, from anyone else (a namespace admin, or even
/// a cluster admin), and lets the operator's ServiceAccount set it.
#[tokio::test]
async fn only_the_operator_sets_the_volume_move_label() {
    let _cluster = cluster_lock().read().await;
    let ns = TestNamespace::new("hardening-move-label", false);
    let tenant = ["--as", "tenant-admin", "--as-group", "system:masters"];
    let labelled = [
        "apiVersion: v1\nkind: Pod\nmetadata: {name: sender, labels: {enclave.dev/volume-migration: x}}\nspec:\n  containers: [{name: app, image: registry.k8s.io/pause:3.10}]\n",
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: claim, labels: {enclave.dev/volume-migration: x}}\nspec:\n  accessModes: [ReadWriteOnce]\n  resources: {requests: {storage: 1Gi}}\n",
    ];
    for yaml in labelled {
        let mut args = vec!["create", "-n", &ns.name, "--dry-run=server", "-f", "-"];
        args.extend_from_slice(&tenant);
        let out = kubectl(&args, Some(yaml));
        let error = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && error.contains("set only by the enclave-operator"),
            "a tenant's object with the volume move label is refused: {error}"
        );
        let account = format!("system:serviceaccount:{OPERATOR_NAMESPACE}:enclave-operator");
        let out = kubectl(
            &[
                "create",
                "-n",
                &ns.name,
                "--dry-run=server",
                "--as",
                &account,
                "-f",
                "-",
            ],
            Some(yaml),
        );
        assert!(
            out.status.success(),
            "the operator may set the label: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Added afterwards by a relabel: refused too.
    let plain = "apiVersion: v1\nkind: Pod\nmetadata: {name: plain}\nspec:\n  containers: [{name: app, image: registry.k8s.io/pause:3.10}]\n";
    let mut args = vec!["create", "-n", &ns.name, "-f", "-"];
    args.extend_from_slice(&tenant);
    let out = kubectl(&args, Some(plain));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut args = vec![
        "label",
        "-n",
        &ns.name,
        "pod/plain",
        "enclave.dev/volume-migration=x",
    ];
    args.extend_from_slice(&tenant);
    let out = kubectl(&args, None);
    let error = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && error.contains("set only by the enclave-operator"),
        "a relabel adding the volume move label is refused: {error}"
    );
}
