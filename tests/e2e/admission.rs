//! Admission against the local control plane: in-scope pods are placed in the enclave
//! (cross-product affinity), pods that can never be placed there are denied, DaemonSets
//! are constrained, Audit changes nothing, and out-of-scope pods are untouched.

use std::time::Duration;

use crate::common::*;
use k8s_openapi::api::core::v1::Pod;

const TIMEOUT: Duration = Duration::from_secs(60);
const ENCLAVE: &str = "admission-eu";

fn setup(namespace: &str, extra: &str) -> TestNamespace {
    shared_operator("admission");
    apply(&eu_enclave(ENCLAVE));
    let ns = TestNamespace::new(namespace, true);
    apply(&policy(namespace, ENCLAVE, extra));
    ns
}

fn deployment(name: &str, replicas: u32, template_spec: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\nspec:\n  replicas: {replicas}\n  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}}}}}\n    spec:\n      containers: [{{name: app, image: registry.k8s.io/pause:3.10}}]\n{template_spec}"
    )
}

fn pod(name: &str, spec_extra: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  containers: [{{name: app, image: registry.k8s.io/pause:3.10}}]\n{spec_extra}"
    )
}

/// Waits until `n` pods of the namespace run, and returns them.
async fn running(namespace: &str, n: usize) -> Vec<Pod> {
    let client = client().await;
    eventually(
        TIMEOUT,
        &format!("{n} running pods in {namespace}"),
        || async {
            let pods: Vec<Pod> = pods(&client, namespace)
                .await
                .into_iter()
                .filter(is_running)
                .collect();
            if pods.len() == n {
                Ok(pods)
            } else {
                Err(pods
                    .iter()
                    .map(|p| (p.metadata.name.clone(), node_of(p).map(str::to_string)))
                    .collect::<Vec<_>>())
            }
        },
    )
    .await
}

fn in_namespace(namespace: &str, yaml: &str) -> std::process::Output {
    kubectl(&["apply", "-n", namespace, "-f", "-"], Some(yaml))
}

#[tokio::test]
async fn deployment_of_twenty_lands_only_on_enclave_nodes() {
    let _cluster = cluster_lock().read().await;
    let ns = setup("adm-deploy", "");
    wait_for_webhook(&ns.name).await;
    assert!(
        in_namespace(&ns.name, &deployment("web", 20, ""))
            .status
            .success()
    );
    let pods = running(&ns.name, 20).await;
    for pod in &pods {
        let node = node_of(pod).expect("running pods are bound");
        assert!(
            ENCLAVE_NODES.contains(&node),
            "pod {:?} runs on {node}, outside the enclave",
            pod.metadata.name
        );
        let annotations = pod.metadata.annotations.clone().unwrap_or_default();
        assert_eq!(
            annotations.get("enclave.dev/policy").map(String::as_str),
            Some(ns.name.as_str())
        );
    }
}

#[tokio::test]
async fn own_affinity_terms_are_crossed_with_every_site() {
    let _cluster = cluster_lock().read().await;
    let ns = setup("adm-cross", "");
    wait_for_webhook(&ns.name).await;
    // Its own wish, two ORed terms: zone eu-west-1b (Dublin) or zone us-east-1a (Virginia).
    let affinity = "  affinity:\n    nodeAffinity:\n      requiredDuringSchedulingIgnoredDuringExecution:\n        nodeSelectorTerms:\n        - matchExpressions: [{key: topology.kubernetes.io/zone, operator: In, values: [eu-west-1b]}]\n        - matchExpressions: [{key: topology.kubernetes.io/zone, operator: In, values: [us-east-1a]}]\n";
    let out = in_namespace(&ns.name, &pod("two-terms", affinity));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pods = running(&ns.name, 1).await;
    // The only enclave node that satisfies its own wish.
    assert_eq!(node_of(&pods[0]), Some("dublin-b"));
    let terms = pods[0]
        .spec
        .as_ref()
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| {
            n.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .map(|r| r.node_selector_terms.clone())
        .expect("required affinity");
    assert_eq!(
        terms.len(),
        4,
        "T1∧dublin, T1∧norway, T2∧dublin, T2∧norway: {terms:?}"
    );
    for term in &terms {
        let keys: Vec<&str> = term
            .match_expressions
            .iter()
            .flatten()
            .map(|e| e.key.as_str())
            .collect();
        assert!(
            keys.contains(&"topology.kubernetes.io/zone") && keys.contains(&SITE_LABEL),
            "every term keeps the pod's wish and adds a site: {keys:?}"
        );
    }
}

#[tokio::test]
async fn pods_pinned_outside_the_enclave_are_denied_with_the_reason() {
    let _cluster = cluster_lock().read().await;
    let ns = setup("adm-deny", "");
    wait_for_webhook(&ns.name).await;
    let out = in_namespace(
        &ns.name,
        &pod(
            "by-selector",
            &format!("  nodeSelector: {{{SITE_LABEL}: virginia}}\n"),
        ),
    );
    assert!(
        !out.status.success(),
        "a pod asking for Virginia must be denied"
    );
    let error = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "denied the request",
        "policy adm-deny",
        "DataEnclave admission-eu",
        "dublin, norway",
        "nodeSelector",
    ] {
        assert!(error.contains(needle), "{needle:?} missing from: {error}");
    }
    let out = in_namespace(&ns.name, &pod("by-name", "  nodeName: virginia-a\n"));
    assert!(
        !out.status.success(),
        "a pod bound to virginia-a must be denied"
    );
    let error = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "policy adm-deny",
        "spec.nodeName \"virginia-a\"",
        "outside the enclave",
        "dublin, norway",
    ] {
        assert!(error.contains(needle), "{needle:?} missing from: {error}");
    }
    // A Deployment whose template can never be placed is admitted with a warning; its
    // pods are the ones denied.
    let out = in_namespace(
        &ns.name,
        &deployment(
            "virginia-only",
            1,
            &format!("      nodeSelector: {{{SITE_LABEL}: virginia}}\n"),
        ),
    );
    assert!(out.status.success());
    let warning = String::from_utf8_lossy(&out.stderr);
    assert!(
        warning.contains("Warning") && warning.contains("its pods will be denied"),
        "{warning}"
    );
    // Each denial is recorded as an Event on the policy.
    eventually(TIMEOUT, "a Denied Event on the policy", || async {
        let out = kubectl_ok(&[
            "get",
            "events",
            "-A",
            "--field-selector",
            "involvedObject.name=adm-deny,reason=Denied",
            "-o",
            "jsonpath={.items[*].message}",
        ]);
        if out.contains("policy adm-deny") {
            Ok(())
        } else {
            Err(out)
        }
    })
    .await;
    // nodeName inside the enclave is fine.
    let out = in_namespace(&ns.name, &pod("on-dublin", "  nodeName: dublin-a\n"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn daemonset_in_scope_runs_only_on_enclave_nodes() {
    let _cluster = cluster_lock().read().await;
    let ns = setup("adm-ds", "");
    wait_for_webhook(&ns.name).await;
    let daemonset = "apiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n  name: agent\nspec:\n  selector: {matchLabels: {app: agent}}\n  template:\n    metadata: {labels: {app: agent}}\n    spec:\n      containers: [{name: app, image: registry.k8s.io/pause:3.10}]\n";
    assert!(in_namespace(&ns.name, daemonset).status.success());
    let pods = running(&ns.name, 3).await;
    let mut nodes: Vec<&str> = pods.iter().filter_map(node_of).collect();
    nodes.sort();
    assert_eq!(nodes, ENCLAVE_NODES);
    let desired = kubectl_ok(&[
        "get",
        "daemonset",
        "agent",
        "-n",
        &ns.name,
        "-o",
        "jsonpath={.status.desiredNumberScheduled}",
    ]);
    assert_eq!(
        desired, "3",
        "the DaemonSet controller targets only the enclave's nodes"
    );
}

#[tokio::test]
async fn audit_mode_changes_nothing_and_warns() {
    let _cluster = cluster_lock().read().await;
    let ns = setup("adm-audit", "  enforcement: Audit\n");
    // Audit never mutates, so wait for its webhook by its warning.
    let out = eventually(TIMEOUT, "the audit webhook", || async {
        let out = kubectl(
            &[
                "run",
                "probe",
                "-n",
                "adm-audit",
                "--image=registry.k8s.io/pause:3.10",
                "--dry-run=server",
                "--overrides",
                &format!("{{\"spec\":{{\"nodeSelector\":{{\"{SITE_LABEL}\":\"virginia\"}}}}}}"),
            ],
            None,
        );
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if out.status.success() && stderr.contains("Audit") {
            Ok(stderr)
        } else {
            Err(stderr)
        }
    })
    .await;
    assert!(out.contains("would deny"), "{out}");
    let out = in_namespace(
        &ns.name,
        &pod(
            "audited",
            &format!("  nodeSelector: {{{SITE_LABEL}: virginia}}\n"),
        ),
    );
    assert!(
        out.status.success(),
        "Audit must not block: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pods = running(&ns.name, 1).await;
    assert!(node_of(&pods[0]).is_some_and(|n| n.starts_with("virginia")));
    assert!(
        pods[0]
            .spec
            .as_ref()
            .and_then(|s| s.affinity.as_ref())
            .is_none(),
        "Audit must not mutate"
    );
}

#[tokio::test]
async fn out_of_scope_pods_are_untouched() {
    let _cluster = cluster_lock().read().await;
    shared_operator("admission");
    let ns = TestNamespace::new("adm-outside", false);
    let out = in_namespace(
        &ns.name,
        &pod(
            "free",
            &format!("  nodeSelector: {{{SITE_LABEL}: virginia}}\n"),
        ),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pods = running(&ns.name, 1).await;
    assert!(
        pods[0]
            .metadata
            .annotations
            .as_ref()
            .is_none_or(|a| !a.contains_key("enclave.dev/policy"))
    );
    assert!(
        pods[0]
            .spec
            .as_ref()
            .and_then(|s| s.affinity.as_ref())
            .is_none()
    );
}
