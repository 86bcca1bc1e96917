//! Admission against the local control plane: in-scope pods are placed in the enclave
//! (cross-product affinity), pods that can never be placed there are denied, DaemonSets
//! are constrained, Audit changes nothing, and out-of-scope pods are untouched.

// The scope guard's tests live beside these so that they run under both engines
// (`ENCLAVE_TEST_ADMISSION=webhook` runs `admission::` again).
mod labels;
mod ready;

use std::time::Duration;

use crate::common::*;
use k8s_openapi::api::core::v1::Pod;

/// The operator's own integrity, run with this module in both engines.
#[path = "integrity.rs"]
mod integrity;

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
        "denied",
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
        "not a node of the enclave",
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
    // With webhooks each denial is also recorded as an Event on the policy (the native
    // engine decides inside the API server, where the operator does not see it).
    if webhook_engine() {
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
    }
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

/// Row 2 of the hardening issue: a policy with the longest name the API allows gets
/// admission objects that fit, is Ready only once they are in place, enforces, and does
/// not keep a policy created after it from being enforced.
#[tokio::test]
async fn the_longest_policy_name_is_enforced_and_blocks_no_other_policy() {
    let _cluster = cluster_lock().read().await;
    shared_operator("admission");
    apply(&eu_enclave(ENCLAVE));
    let long = format!(
        "{}.{}.{}.{}",
        "a".repeat(63),
        "b".repeat(63),
        "c".repeat(63),
        "d".repeat(61)
    );
    let ns = TestNamespace::new("adm-long", true);
    apply(&format!(
        "apiVersion: enclave.dev/v1alpha1\nkind: ResidencyPolicy\nmetadata:\n  name: {long}\nspec:\n  enclave: {ENCLAVE}\n  match:\n    namespaceSelector: {{matchLabels: {{enclave.dev/test-scope: adm-long}}}}\n"
    ));
    struct Delete(String);
    impl Drop for Delete {
        fn drop(&mut self) {
            let _ = kubectl(
                &["delete", "residencypolicy", &self.0, "--wait=false"],
                None,
            );
        }
    }
    let _delete = Delete(long.clone());
    wait_for_admission_by(&ns.name, &long).await;
    assert_eq!(condition_of(&long, "Ready").await.0, "True");
    let out = in_namespace(&ns.name, &pod("pinned", "  nodeName: virginia-a\n"));
    assert!(!out.status.success(), "a pod pinned to Virginia is refused");
    // A policy created afterwards is enforced too.
    let after = setup("adm-long-after", "");
    wait_for_admission(&after.name).await;
    let out = in_namespace(&after.name, &pod("pinned", "  nodeName: virginia-a\n"));
    assert!(!out.status.success(), "the later policy enforces as well");
}

/// The status of a policy's condition: (status, reason, message).
async fn condition_of(policy: &str, type_: &str) -> (String, String, String) {
    let policies: kube::Api<enclave_operator::crd::ResidencyPolicy> =
        kube::Api::all(client().await);
    eventually(
        TIMEOUT,
        &format!("condition {type_} of {policy}"),
        || async {
            let condition = policies
                .get(policy)
                .await
                .ok()
                .and_then(|p| p.status)
                .and_then(|s| s.conditions.into_iter().find(|c| c.type_ == type_));
            condition
                .map(|c| (c.status, c.reason, c.message))
                .ok_or("not yet")
        },
    )
    .await
}

/// Row 4: the mirror-pod annotation is a tenant's to write; it skips nothing. Only a
/// node's own request is a mirror pod.
#[tokio::test]
async fn a_forged_mirror_pod_annotation_skips_nothing() {
    let _cluster = cluster_lock().read().await;
    let ns = setup("adm-mirror", "");
    wait_for_admission(&ns.name).await;
    let forged = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: forged\n  annotations: {kubernetes.io/config.mirror: forged}\nspec:\n  nodeName: virginia-a\n  containers: [{name: app, image: registry.k8s.io/pause:3.10}]\n".to_string();
    let out = in_namespace(&ns.name, &forged);
    assert!(
        !out.status.success(),
        "a forged mirror pod on Virginia is refused"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a node of the enclave"));
}

/// Two enforcing policies of overlapping enclaves (Dublin and Norway; Dublin alone) on
/// one namespace: every pod is placed by both and lands in Dublin, whichever policy runs
/// first (the API server runs admission policies in a Go map's order, a new one per
/// request), each evaluated once (`reinvocationPolicy: Never`).
#[tokio::test]
async fn overlapping_policies_both_place_every_pod_in_any_order() {
    let _cluster = cluster_lock().read().await;
    shared_operator("admission");
    apply(&eu_enclave(ENCLAVE));
    apply(&format!(
        "apiVersion: enclave.dev/v1alpha1\nkind: DataEnclave\nmetadata:\n  name: admission-dublin\nspec:\n  jurisdiction: EU\n  sites:\n  - name: dublin\n    nodeSelector: {{matchLabels: {{{SITE_LABEL}: dublin}}}}\n"
    ));
    let ns = TestNamespace::new("adm-overlap", true);
    let policies = ["adm-overlap-dublin", "adm-overlap-eu"];
    for (name, enclave) in policies.iter().zip(["admission-dublin", ENCLAVE]) {
        apply(&format!(
            "apiVersion: enclave.dev/v1alpha1\nkind: ResidencyPolicy\nmetadata:\n  name: {name}\nspec:\n  enclave: {enclave}\n  match:\n    namespaceSelector: {{matchLabels: {{enclave.dev/test-scope: adm-overlap}}}}\n"
        ));
    }
    struct Delete([&'static str; 2]);
    impl Drop for Delete {
        fn drop(&mut self) {
            let mut args = vec!["delete", "residencypolicy", "--wait=false"];
            args.extend(self.0);
            let _ = kubectl(&args, None);
        }
    }
    let _delete = Delete(policies);
    for policy in policies {
        wait_for_admission_by(&ns.name, policy).await;
    }
    let client = client().await;
    let api: kube::Api<Pod> = kube::Api::namespaced(client, &ns.name);
    let dry_run = kube::api::PostParams {
        dry_run: true,
        ..Default::default()
    };
    for i in 0..16 {
        let pod: Pod = serde_yaml::from_str(&pod(&format!("p{i}"), "")).expect("fixture");
        let placed = api.create(&dry_run, &pod).await.expect("admitted");
        let annotation = placed
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("enclave.dev/policy"))
            .cloned()
            .unwrap_or_default();
        assert_eq!(annotation, policies.join(","), "pod {i}: placed by both");
        let terms = placed
            .spec
            .and_then(|s| s.affinity)
            .and_then(|a| a.node_affinity)
            .and_then(|n| n.required_during_scheduling_ignored_during_execution)
            .map(|r| r.node_selector_terms)
            .unwrap_or_default();
        assert!(!terms.is_empty(), "pod {i}: placed");
        for term in &terms {
            let sites: Vec<&Vec<String>> = term
                .match_expressions
                .iter()
                .flatten()
                .filter(|e| e.key == SITE_LABEL && e.operator == "In")
                .filter_map(|e| e.values.as_ref())
                .collect();
            assert!(
                sites.iter().any(|v| v.as_slice() == ["dublin"]),
                "pod {i}: every term keeps it in Dublin: {terms:?}"
            );
        }
    }
}

/// Row 5: two enforcing policies whose enclaves share no node, on one namespace: both
/// report the conflict, new pods are refused naming both, nothing is evicted.
#[tokio::test]
async fn disjoint_enforcing_policies_conflict_visibly_and_move_nothing() {
    let _cluster = cluster_lock().read().await;
    shared_operator("admission");
    apply(&eu_enclave(ENCLAVE));
    apply(&format!(
        "apiVersion: enclave.dev/v1alpha1\nkind: DataEnclave\nmetadata:\n  name: admission-us\nspec:\n  jurisdiction: US\n  sites:\n  - name: virginia\n    nodeSelector: {{matchLabels: {{{SITE_LABEL}: virginia}}}}\n"
    ));
    let ns = TestNamespace::new("adm-conflict", true);
    // Six pods running in Dublin before any policy.
    let out = in_namespace(
        &ns.name,
        &deployment(
            "web",
            6,
            &format!("      nodeSelector: {{{SITE_LABEL}: dublin}}\n"),
        ),
    );
    assert!(out.status.success());
    let before = running(&ns.name, 6).await;
    let scope = "    namespaceSelector: {matchLabels: {enclave.dev/test-scope: adm-conflict}}\n";
    for (name, enclave) in [
        ("adm-conflict-eu", ENCLAVE),
        ("adm-conflict-us", "admission-us"),
    ] {
        apply(&format!(
            "apiVersion: enclave.dev/v1alpha1\nkind: ResidencyPolicy\nmetadata:\n  name: {name}\nspec:\n  enclave: {enclave}\n  match:\n{scope}"
        ));
    }
    struct Delete;
    impl Drop for Delete {
        fn drop(&mut self) {
            let _ = kubectl(
                &[
                    "delete",
                    "residencypolicy",
                    "adm-conflict-eu",
                    "adm-conflict-us",
                    "--wait=false",
                ],
                None,
            );
        }
    }
    let _delete = Delete;
    for (policy, other) in [
        ("adm-conflict-eu", "adm-conflict-us"),
        ("adm-conflict-us", "adm-conflict-eu"),
    ] {
        let (status, reason, message) = eventually(TIMEOUT, "the conflict reported", || async {
            let c = condition_of(policy, "Conflicted").await;
            if c.0 == "True" { Ok(c) } else { Err(c) }
        })
        .await;
        assert_eq!(
            (status.as_str(), reason.as_str()),
            ("True", "DisjointEnclaves")
        );
        assert!(message.contains(other), "{message}");
    }
    eventually(TIMEOUT, "a ConflictingPolicies Event", || async {
        let out = kubectl_ok(&[
            "get",
            "events",
            "-A",
            "--field-selector",
            "reason=ConflictingPolicies",
            "-o",
            "jsonpath={.items[*].involvedObject.name}",
        ]);
        if out.contains("adm-conflict-eu") && out.contains("adm-conflict-us") {
            Ok(())
        } else {
            Err(out)
        }
    })
    .await;
    // A new pod is refused, naming both policies (once both policies' admission is in
    // force: native policies take a moment to reach the API server's admission).
    eventually(
        TIMEOUT,
        "a new pod refused naming both policies",
        || async {
            let out = in_namespace(&ns.name, &pod("new", ""));
            let error = String::from_utf8_lossy(&out.stderr).into_owned();
            if !out.status.success()
                && error.contains("adm-conflict-eu")
                && error.contains("adm-conflict-us")
            {
                Ok(())
            } else {
                let _ = kubectl(
                    &["delete", "pod", "new", "-n", &ns.name, "--ignore-not-found"],
                    None,
                );
                Err(error)
            }
        },
    )
    .await;
    // Nothing is evicted: the same six pods are still running.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = running(&ns.name, 6).await;
    let uids = |pods: &[Pod]| {
        let mut uids: Vec<String> = pods.iter().filter_map(|p| p.metadata.uid.clone()).collect();
        uids.sort();
        uids
    };
    assert_eq!(uids(&before), uids(&after), "no pod was evicted");
}

/// Row 8: a review as large as the API server allows is decided (a 1.1 MB DaemonSet is
/// created and updated), and a pod too large to cross with the enclave is refused with
/// a message that says why.
#[tokio::test]
async fn large_objects_are_decided_and_oversized_affinity_is_explained() {
    let _cluster = cluster_lock().read().await;
    let ns = setup("adm-large", "");
    wait_for_admission(&ns.name).await;
    let big = "x".repeat(1_100_000);
    let daemonset = |revision: u32| {
        format!(
            "apiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n  name: big\n  annotations: {{revision: \"{revision}\"}}\nspec:\n  selector: {{matchLabels: {{app: big}}}}\n  template:\n    metadata: {{labels: {{app: big}}}}\n    spec:\n      containers: [{{name: app, image: registry.k8s.io/pause:3.10, env: [{{name: BLOB, value: \"{big}\"}}]}}]\n"
        )
    };
    for revision in [1, 2] {
        let out = kubectl(
            &["apply", "--server-side", "-n", &ns.name, "-f", "-"],
            Some(&daemonset(revision)),
        );
        assert!(
            out.status.success(),
            "revision {revision}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let terms: Vec<String> = (0..200)
        .map(|i| format!("{{matchExpressions: [{{key: example.com/k{i}, operator: Exists}}]}}"))
        .collect();
    let wide = pod(
        "wide",
        &format!(
            "  affinity: {{nodeAffinity: {{requiredDuringSchedulingIgnoredDuringExecution: {{nodeSelectorTerms: [{}]}}}}}}\n",
            terms.join(", ")
        ),
    );
    let out = in_namespace(&ns.name, &wide);
    assert!(!out.status.success());
    let error = String::from_utf8_lossy(&out.stderr);
    assert!(
        error.contains("400 node selector terms") && error.contains("use fewer nodeSelectorTerms"),
        "{error}"
    );
}

fn claim(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: {name}\nspec:\n  accessModes: [ReadWriteOnce]\n  resources: {{requests: {{storage: 1Gi}}}}\n{spec}"
    )
}

/// Volumes at admission: a claim on storage outside the enclave is refused naming the
/// allowed classes, so is a StatefulSet whose claim template names one, and a claim
/// naming a volume is judged by that volume.
#[tokio::test]
async fn claims_must_use_the_enclaves_storage() {
    let _cluster = cluster_lock().read().await;
    let ns = setup("adm-volumes", "");
    // Ready means every part in force, the volumes rule included: no retry needed.
    wait_for_admission(&ns.name).await;
    let us_claim = claim("us", "  storageClassName: us-east-ssd\n");
    let out = in_namespace(&ns.name, &us_claim);
    assert!(!out.status.success(), "a claim on us-east-ssd is refused");
    let error = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "policy adm-volumes",
        "us-east-ssd",
        "eu-dublin-ssd, eu-norway-ssd",
    ] {
        assert!(error.contains(needle), "{needle:?} missing from {error}");
    }
    assert!(
        in_namespace(
            &ns.name,
            &claim("eu", "  storageClassName: eu-dublin-ssd\n")
        )
        .status
        .success()
    );
    let statefulset = "apiVersion: apps/v1\nkind: StatefulSet\nmetadata:\n  name: db\nspec:\n  serviceName: db\n  selector: {matchLabels: {app: db}}\n  template:\n    metadata: {labels: {app: db}}\n    spec:\n      containers: [{name: app, image: registry.k8s.io/pause:3.10}]\n  volumeClaimTemplates:\n  - metadata: {name: data}\n    spec: {accessModes: [ReadWriteOnce], storageClassName: us-east-ssd, resources: {requests: {storage: 1Gi}}}\n".to_string();
    let out = in_namespace(&ns.name, &statefulset);
    assert!(
        !out.status.success(),
        "a StatefulSet whose claims would land in Virginia is refused"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("claim data"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A claim naming a volume is judged by the volume, whatever class it states.
    for (pv, site) in [("adm-volumes-us", "virginia"), ("adm-volumes-eu", "dublin")] {
        apply(&format!(
            "apiVersion: v1\nkind: PersistentVolume\nmetadata:\n  name: {pv}\nspec:\n  capacity: {{storage: 1Gi}}\n  accessModes: [ReadWriteOnce]\n  storageClassName: eu-dublin-ssd\n  hostPath: {{path: /tmp/{pv}}}\n  nodeAffinity: {{required: {{nodeSelectorTerms: [{{matchExpressions: [{{key: {SITE_LABEL}, operator: In, values: [{site}]}}]}}]}}}}\n"
        ));
    }
    // Native checks read the enclave's volumes from facts compiled into its policies, which follow the
    // volumes a moment later.
    eventually(
        TIMEOUT,
        "the claim on the Dublin volume admitted",
        || async {
            let out = in_namespace(
                &ns.name,
                &claim(
                    "on-eu",
                    "  storageClassName: eu-dublin-ssd\n  volumeName: adm-volumes-eu\n",
                ),
            );
            if out.status.success() {
                Ok(())
            } else {
                Err(String::from_utf8_lossy(&out.stderr).into_owned())
            }
        },
    )
    .await;
    let out = in_namespace(
        &ns.name,
        &claim(
            "on-us",
            "  storageClassName: eu-dublin-ssd\n  volumeName: adm-volumes-us\n",
        ),
    );
    assert!(
        !out.status.success(),
        "a claim of the Virginia volume is refused"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("adm-volumes-us"));
    let _ = kubectl(
        &[
            "delete",
            "pv",
            "adm-volumes-us",
            "adm-volumes-eu",
            "--wait=false",
        ],
        None,
    );
}

/// A StatefulSet made before the policy, with its claim template on storage outside,
/// is refused nothing on UPDATE: its templates cannot change (the API server refuses it
/// before admission), so an update moves no data, and refusing it would stop its image
/// rollouts and the garbage collector's removal of the `orphan` finalizer, on which a
/// volume move's replacement of the set (and `kubectl delete --cascade=orphan`) waits.
/// A new set with the same template is still refused.
#[tokio::test]
async fn a_statefulset_made_before_the_policy_can_be_updated_and_deleted_orphaning() {
    let _cluster = cluster_lock().read().await;
    shared_operator("admission");
    apply(&eu_enclave(ENCLAVE));
    let name = "adm-sts-before";
    let ns = TestNamespace::new(name, false);
    let statefulset = "apiVersion: apps/v1\nkind: StatefulSet\nmetadata:\n  name: db\nspec:\n  replicas: 0\n  serviceName: db\n  selector: {matchLabels: {app: db}}\n  template:\n    metadata: {labels: {app: db}}\n    spec:\n      containers: [{name: app, image: registry.k8s.io/pause:3.10}]\n  volumeClaimTemplates:\n  - metadata: {name: data}\n    spec: {accessModes: [ReadWriteOnce], storageClassName: us-east-ssd, resources: {requests: {storage: 1Gi}}}\n";
    assert!(in_namespace(name, statefulset).status.success());
    let scope = format!("enclave.dev/test-scope={name}");
    assert!(
        kubectl(&["label", "namespace", name, &scope], None)
            .status
            .success(),
        "the namespace enters the policy's scope"
    );
    apply(&policy(name, ENCLAVE, ""));
    wait_for_admission(name).await;
    let again = in_namespace(
        name,
        &statefulset.replace("name: db\nspec", "name: db-new\nspec"),
    );
    assert!(
        !again.status.success(),
        "a new StatefulSet on us-east-ssd is still refused"
    );
    let out = kubectl(
        &["label", "statefulset", "-n", name, "db", "tier=backend"],
        None,
    );
    assert!(
        out.status.success(),
        "an update of the set made before the policy is admitted: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = kubectl(
        &[
            "delete",
            "statefulset",
            "-n",
            name,
            "db",
            "--cascade=orphan",
            "--wait=true",
            "--timeout=60s",
        ],
        None,
    );
    assert!(
        out.status.success(),
        "the garbage collector removes the orphan finalizer: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(ns);
}

/// A claim without a class is judged by the cluster's default StorageClass, and refused
/// when there is none.
#[tokio::test]
async fn a_claim_without_a_class_is_judged_by_the_default_class() {
    // Changes which StorageClass is the cluster's default.
    let _cluster = cluster_lock().write().await;
    let ns = setup("adm-default-class", "");
    wait_for_admission(&ns.name).await;
    struct Undefault;
    impl Drop for Undefault {
        fn drop(&mut self) {
            for class in ["eu-norway-ssd", "us-east-ssd"] {
                let _ = kubectl(
                    &[
                        "annotate",
                        "storageclass",
                        class,
                        "storageclass.kubernetes.io/is-default-class-",
                    ],
                    None,
                );
            }
        }
    }
    let _undefault = Undefault;
    let out = in_namespace(&ns.name, &claim("none", ""));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no default StorageClass"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (default, admitted) in [("eu-norway-ssd", true), ("us-east-ssd", false)] {
        for class in ["eu-norway-ssd", "us-east-ssd"] {
            let value = if class == default { "true" } else { "false" };
            kubectl_ok(&[
                "annotate",
                "storageclass",
                class,
                &format!("storageclass.kubernetes.io/is-default-class={value}"),
                "--overwrite",
            ]);
        }
        eventually(
            TIMEOUT,
            &format!("a classless claim judged by default {default}"),
            || async {
                let out = kubectl(
                    &["apply", "--dry-run=server", "-n", &ns.name, "-f", "-"],
                    Some(&claim("defaulted", "")),
                );
                let error = String::from_utf8_lossy(&out.stderr).into_owned();
                match (out.status.success(), admitted) {
                    (true, true) => Ok(()),
                    (false, false) if error.contains(default) => Ok(()),
                    _ => Err(error),
                }
            },
        )
        .await;
    }
}

/// Admission objects deleted by hand are written again at once, by the pass their
/// deletion triggers, not at the once-a-minute rewrite: passes that find nothing
/// changed skip the writes.
#[tokio::test]
async fn admission_objects_deleted_by_hand_are_put_back_at_once() {
    let _cluster = cluster_lock().read().await;
    let ns = setup("adm-repair", "");
    wait_for_admission(&ns.name).await;
    // What the engine relies on to refuse a pod pinned outside the enclave.
    let objects: Vec<(&str, String)> = if webhook_engine() {
        vec![
            (
                "validatingwebhookconfiguration",
                format!("enclave-operator-{}", ns.name),
            ),
            (
                "mutatingwebhookconfiguration",
                format!("enclave-operator-{}", ns.name),
            ),
        ]
    } else {
        vec![
            (
                "validatingadmissionpolicybinding",
                format!("enclave-check.{}", ns.name),
            ),
            (
                "mutatingadmissionpolicy",
                format!("enclave-place.{}", ns.name),
            ),
        ]
    };
    let uid = |kind: &str, name: &str| {
        let out = kubectl(&["get", kind, name, "-o", "jsonpath={.metadata.uid}"], None);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // Several passes run and skip their writes (pods come and go elsewhere in the
    // suite); the deletion must still be noticed.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before: Vec<String> = objects.iter().map(|(k, n)| uid(k, n)).collect();
    assert!(before.iter().all(|u| !u.is_empty()), "{objects:?} exist");
    let deleted = std::time::Instant::now();
    for (kind, name) in &objects {
        let out = kubectl(&["delete", kind, name, "--wait=false"], None);
        assert!(out.status.success(), "delete {kind} {name}: {out:?}");
    }
    eventually(
        Duration::from_secs(20),
        "the admission objects written again",
        || async {
            let now: Vec<String> = objects.iter().map(|(k, n)| uid(k, n)).collect();
            if now
                .iter()
                .zip(&before)
                .all(|(n, b)| !n.is_empty() && n != b)
            {
                Ok(())
            } else {
                Err(now)
            }
        },
    )
    .await;
    let repaired = deleted.elapsed();
    eprintln!("admission objects written again {repaired:?} after their deletion");
    assert!(repaired < Duration::from_secs(10), "{repaired:?}");
    // Ready stayed True (the status is the last pass's observation and the repair is
    // quicker than a pass): ask the API server itself when the rewritten objects hold.
    wait_until_enforced(&ns.name, &ns.name).await;
    let out = in_namespace(&ns.name, &pod("pinned", "  nodeName: virginia-a\n"));
    assert!(
        !out.status.success(),
        "a pod pinned to Virginia is refused again"
    );
}

mod doors;
