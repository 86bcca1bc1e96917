//! Nothing a tenant does to pod labels moves data out, against the local control plane
//! and with both engines (the suite runs `admission::` again with
//! `ENCLAVE_TEST_ADMISSION=webhook`): with a policy that selects pods by label,
//! `kubectl label pod db-0 tier-` is refused, `kubectl debug db-0 --copy-to` (which drops
//! the labels and keeps the claim) is refused, a pod relabelled into scope must already
//! be held inside, Audit warns instead; the fence names only in-scope pods as peers and
//! reachability reports a tenant policy that opens the data pod to an unlabelled one;
//! and the two engines give the same verdicts and messages.

use std::time::Duration;

use serde_json::Value;

use crate::common::*;

const TIMEOUT: Duration = Duration::from_secs(60);
const ENCLAVE: &str = "labels-eu";
const SELECTOR: &str = "    podSelector: {matchLabels: {tier: data}}\n";

/// The namespace with its policy (pods labelled `tier: data` in scope), a Secret, and a
/// claim on the enclave's storage.
fn setup(namespace: &str, extra: &str) -> TestNamespace {
    shared_operator("admission");
    apply(&eu_enclave(ENCLAVE));
    let ns = TestNamespace::new(namespace, true);
    apply(&policy(namespace, ENCLAVE, &format!("{SELECTOR}{extra}")));
    let (ok, out) = kubectl_outcome(
        &["apply", "-n", namespace, "-f", "-"],
        Some(
            "apiVersion: v1\nkind: Secret\nmetadata: {name: db}\nstringData: {password: s3cret}\n---\napiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: data-db-0}\nspec:\n  accessModes: [ReadWriteOnce]\n  storageClassName: eu-dublin-ssd\n  resources: {requests: {storage: 1Gi}}\n",
        ),
    );
    assert!(ok, "{out}");
    ns
}

/// A pod with `labels`, mounting the claim and the Secret when `data`.
fn pod(name: &str, labels: &str, data: bool, spec_extra: &str) -> String {
    let volumes = if data {
        "  volumes:\n  - {name: data, persistentVolumeClaim: {claimName: data-db-0}}\n  - {name: creds, secret: {secretName: db}}\n"
    } else {
        ""
    };
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels: {labels}\nspec:\n  containers: [{{name: app, image: registry.k8s.io/pause:3.10}}]\n{volumes}{spec_extra}"
    )
}

/// Waits until the policy of `namespace` says Ready (in force) and admission places
/// labelled pods (a server-side dry run), whichever the engine: pods in scope can be
/// created from then on. Ready first: a policy of the same name from an earlier run may
/// have left objects the garbage collector has not removed yet, which place the probe
/// until they go.
async fn wait_for_placement(namespace: &str) {
    wait_for_admission(namespace).await;
    eventually(
        Duration::from_secs(30),
        &format!("admission to place labelled pods in {namespace}"),
        || async {
            let (ok, placed) = kubectl_outcome(
                &[
                    "apply",
                    "--dry-run=server",
                    "-n",
                    namespace,
                    "-o",
                    "jsonpath={.metadata.annotations}",
                    "-f",
                    "-",
                ],
                Some(&pod("guard-probe", "{tier: data}", false, "")),
            );
            if ok && placed.contains(namespace) {
                Ok(())
            } else {
                Err(placed)
            }
        },
    )
    .await;
}

/// Waits until `attempt` (a server-side dry run) is refused with `expected` in the
/// message, or, for Audit, admitted with it as a warning: the guard is in force. Where
/// the guard is missing, this is where the test fails, with the attack's answer.
async fn wait_until_guarded(
    what: &str,
    enforced: bool,
    expected: &str,
    attempt: &[&str],
    stdin: Option<&str>,
) {
    eventually(
        Duration::from_secs(30),
        &format!("the scope guard to catch {what}"),
        || async {
            let (ok, out) = kubectl_outcome(attempt, stdin);
            let caught = out.contains(expected) && ok != enforced;
            if caught {
                Ok(())
            } else {
                Err(format!(
                    "{} {out}",
                    if ok {
                        "admitted:"
                    } else {
                        "refused otherwise:"
                    }
                ))
            }
        },
    )
    .await;
}

/// [`wait_until_guarded`] with an unlabelled pod mounting the claim, as a debug copy is.
async fn wait_for_guard(namespace: &str, enforced: bool) {
    wait_until_guarded(
        "an unlabelled pod mounting the claim",
        enforced,
        "outside the policy's pod selector",
        &["apply", "--dry-run=server", "-n", namespace, "-f", "-"],
        Some(&pod("guard-probe", "{}", true, "")),
    )
    .await;
}

/// The webhook engine records every refusal of the guard in the decision log.
async fn recorded_denial(namespace: &str, pod: &str) {
    if !webhook_engine() || external_operator() {
        return;
    }
    eventually(TIMEOUT, "a PodDenied record of the scope guard", || async {
        let found = shared_decisions().into_iter().any(|r| {
            r["kind"] == "PodDenied"
                && r["fields"]["webhook"] == "scope"
                && r["fields"]["object"]["namespace"] == namespace
                && r["fields"]["object"]["name"] == pod
        });
        if found { Ok(()) } else { Err("none yet") }
    })
    .await;
}

fn labels_of(namespace: &str, pod: &str) -> String {
    kubectl_ok(&[
        "get",
        "pod",
        pod,
        "-n",
        namespace,
        "-o",
        "jsonpath={.metadata.labels}",
    ])
}

#[tokio::test]
async fn relabelling_a_data_pod_out_of_scope_is_refused() {
    let _cluster = cluster_lock().read().await;
    let ns = setup("lbl-relabel", "");
    wait_for_placement(&ns.name).await;
    let (ok, out) = kubectl_outcome(
        &["apply", "-n", &ns.name, "-f", "-"],
        Some(&pod("db-0", "{tier: data, app: db}", true, "")),
    );
    assert!(ok, "{out}");
    wait_until_guarded(
        "the label removed (dry run)",
        true,
        "would leave the policy's scope",
        &[
            "label",
            "pod",
            "db-0",
            "-n",
            &ns.name,
            "tier-",
            "--dry-run=server",
        ],
        None,
    )
    .await;

    // The attack of the issue: the label that holds the pod in scope removed.
    let (ok, out) = kubectl_outcome(&["label", "pod", "db-0", "-n", &ns.name, "tier-"], None);
    assert!(!ok, "the label was removed: {out}");
    assert!(
        out.contains(&format!(
            "policy {}: Pod {}/db-0 would leave the policy's scope: its labels would no longer match the pod selector (tier=data)",
            ns.name, ns.name
        )),
        "{out}"
    );
    // Changed to another value: the same.
    let (ok, out) = kubectl_outcome(
        &[
            "label",
            "pod",
            "db-0",
            "-n",
            &ns.name,
            "tier=cache",
            "--overwrite",
        ],
        None,
    );
    assert!(
        !ok && out.contains("would leave the policy's scope"),
        "{out}"
    );
    // Any other label change is the tenant's.
    kubectl_ok(&["label", "pod", "db-0", "-n", &ns.name, "version=v2"]);
    let labels = labels_of(&ns.name, "db-0");
    assert!(
        labels.contains(r#""tier":"data""#) && labels.contains(r#""version":"v2""#),
        "{labels}"
    );
    recorded_denial(&ns.name, "db-0").await;

    // Relabelling into scope: only a pod already held inside may enter.
    let (ok, out) = kubectl_outcome(
        &["apply", "-n", &ns.name, "-f", "-"],
        Some(&format!(
            "{}---\n{}",
            pod("loose", "{app: web}", false, ""),
            pod(
                "pinned",
                "{app: web}",
                false,
                "  nodeSelector: {node-restriction.kubernetes.io/enclave-site: dublin}\n"
            )
        )),
    );
    assert!(ok, "{out}");
    let (ok, out) = kubectl_outcome(
        &["label", "pod", "loose", "-n", &ns.name, "tier=data"],
        None,
    );
    assert!(!ok, "an unplaced pod entered the scope: {out}");
    assert!(
        out.contains("would enter the policy's scope (pod selector tier=data) without being held inside DataEnclave labels-eu"),
        "{out}"
    );
    kubectl_ok(&["label", "pod", "pinned", "-n", &ns.name, "tier=data"]);
}

#[tokio::test]
async fn a_debug_copy_that_drops_the_labels_is_refused() {
    let _cluster = cluster_lock().read().await;
    let ns = setup("lbl-debug", "");
    wait_for_placement(&ns.name).await;
    wait_for_guard(&ns.name, true).await;
    let (ok, out) = kubectl_outcome(
        &["apply", "-n", &ns.name, "-f", "-"],
        Some(&pod("db-0", "{tier: data, app: db}", true, "")),
    );
    assert!(ok, "{out}");

    // kubectl debug --copy-to drops the labels by default and keeps the volumes.
    let (ok, out) = kubectl_outcome(
        &[
            "debug",
            "db-0",
            "-n",
            &ns.name,
            "--copy-to=db-copy",
            "--image=registry.k8s.io/pause:3.10",
            "--container=debugger",
        ],
        None,
    );
    assert!(!ok, "the copy was created: {out}");
    assert!(
        out.contains(&format!(
            "policy {}: Pod {}/db-copy is outside the policy's pod selector (tier=data) but mounts volume data (claim data-db-0)",
            ns.name, ns.name
        )),
        "{out}"
    );
    let (exists, _) = kubectl_outcome(&["get", "pod", "db-copy", "-n", &ns.name], None);
    assert!(!exists, "the refused copy exists");
    recorded_denial(&ns.name, "db-copy").await;

    // The same copy keeping the labels is in scope: placed (and fenced and gated).
    let (ok, out) = kubectl_outcome(
        &[
            "debug",
            "db-0",
            "-n",
            &ns.name,
            "--copy-to=db-copy",
            "--image=registry.k8s.io/pause:3.10",
            "--container=debugger",
            "--keep-labels=true",
        ],
        None,
    );
    assert!(ok, "{out}");
    // It keeps the original's placed affinity (a copy keeps the spec) and its labels.
    let copy = kubectl_ok(&[
        "get",
        "pod",
        "db-copy",
        "-n",
        &ns.name,
        "-o",
        "jsonpath={.metadata.labels.tier} {.spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[*].matchExpressions[*].values}",
    ]);
    assert!(
        copy.starts_with("data ") && copy.contains("dublin") && copy.contains("norway"),
        "{copy}"
    );

    // A workload whose template drops the label: its pods are refused the same way.
    let (ok, out) = kubectl_outcome(
        &["apply", "-n", &ns.name, "-f", "-"],
        Some(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: exporter}\nspec:\n  replicas: 1\n  selector: {matchLabels: {app: exporter}}\n  template:\n    metadata: {labels: {app: exporter}}\n    spec:\n      containers: [{name: app, image: registry.k8s.io/pause:3.10}]\n      volumes: [{name: data, persistentVolumeClaim: {claimName: data-db-0}}]\n",
        ),
    );
    assert!(ok, "{out}");
    eventually(TIMEOUT, "the ReplicaSet refused its pods", || async {
        let (_, conditions) = kubectl_outcome(
            &[
                "get",
                "replicasets",
                "-n",
                &ns.name,
                "-l",
                "app=exporter",
                "-o",
                "jsonpath={.items[*].status.conditions[*].message}",
            ],
            None,
        );
        if conditions.contains("outside the policy's pod selector") {
            Ok(())
        } else {
            Err(conditions)
        }
    })
    .await;
    let (_, pods) = kubectl_outcome(
        &[
            "get",
            "pods",
            "-n",
            &ns.name,
            "-l",
            "app=exporter",
            "-o",
            "name",
        ],
        None,
    );
    assert!(pods.trim().is_empty(), "{pods}");
}

#[tokio::test]
async fn audit_warns_about_labels_and_copies_and_blocks_nothing() {
    let _cluster = cluster_lock().read().await;
    let ns = setup("lbl-audit", "  enforcement: Audit\n");
    let (ok, out) = kubectl_outcome(
        &["apply", "-n", &ns.name, "-f", "-"],
        Some(&pod("db-0", "{tier: data}", true, "")),
    );
    assert!(ok, "{out}");
    wait_until_guarded(
        "the label removed (dry run), under Audit",
        false,
        "(Audit) would deny",
        &[
            "label",
            "pod",
            "db-0",
            "-n",
            &ns.name,
            "tier-",
            "--dry-run=server",
        ],
        None,
    )
    .await;
    let (ok, out) = kubectl_outcome(&["label", "pod", "db-0", "-n", &ns.name, "tier-"], None);
    assert!(ok, "{out}");
    assert!(
        out.contains("(Audit) would deny: policy lbl-audit: Pod lbl-audit/db-0 would leave the policy's scope"),
        "{out}"
    );
    let (ok, out) = kubectl_outcome(
        &[
            "debug",
            "db-0",
            "-n",
            &ns.name,
            "--copy-to=db-copy",
            "--image=registry.k8s.io/pause:3.10",
            "--container=debugger",
        ],
        None,
    );
    assert!(ok, "{out}");
    assert!(out.contains("(Audit) would deny"), "{out}");
}

/// The fence's allow policy names the in-scope pods (namespace AND pod selector) as its
/// peers, and a tenant policy that lets every pod of the namespace reach the data pod
/// is reported, naming the unlabelled pod.
#[tokio::test]
async fn an_unlabelled_pod_is_no_peer_of_the_fenced_pods() {
    let _cluster = cluster_lock().read().await;
    let ns = setup("lbl-fence", "");
    wait_for_placement(&ns.name).await;
    let allow = "enclave-fence-allow-lbl-fence";
    let peers = eventually(TIMEOUT, "the fence in place", || async {
        let (ok, out) = kubectl_outcome(
            &["get", "networkpolicy", allow, "-n", &ns.name, "-o", "json"],
            None,
        );
        if !ok {
            return Err(out);
        }
        let np: Value = serde_json::from_str(&out).map_err(|e| e.to_string())?;
        Ok(np["spec"]["ingress"][0]["from"][0].clone())
    })
    .await;
    assert_eq!(
        peers["podSelector"]["matchLabels"]["tier"], "data",
        "the fence's own peer must be the in-scope pods only: {peers}"
    );
    for (name, egress_peer) in [("ingress", "from"), ("egress", "to")] {
        let (_, out) = kubectl_outcome(
            &[
                "get",
                "networkpolicy",
                allow,
                "-n",
                &ns.name,
                "-o",
                &format!(
                    "jsonpath={{.spec.{name}[0].{egress_peer}[0].podSelector.matchLabels.tier}}"
                ),
            ],
            None,
        );
        assert_eq!(out, "data", "{name}");
    }

    let (ok, out) = kubectl_outcome(
        &["apply", "-n", &ns.name, "-f", "-"],
        Some(&format!(
            "{}---\n{}---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: same-namespace}}\nspec:\n  podSelector: {{matchLabels: {{tier: data}}}}\n  policyTypes: [Ingress]\n  ingress: [{{from: [{{podSelector: {{}}}}]}}]\n",
            pod("db", "{tier: data}", false, ""),
            pod("intruder", "{app: tool}", false, "")
        )),
    );
    assert!(ok, "{out}");
    let policies: kube::Api<enclave_operator::crd::ResidencyPolicy> =
        kube::Api::all(client().await);
    let leak = eventually(
        TIMEOUT,
        "the path to the unlabelled pod reported",
        || async {
            let status = policies
                .get(&ns.name)
                .await
                .ok()
                .and_then(|p| p.status)
                .unwrap_or_default();
            status
                .violations
                .iter()
                .find(|v| v.reason == "NetworkLeak")
                .map(|v| v.message.clone())
                .ok_or(status.network_leaks)
        },
    )
    .await;
    assert!(
        leak.contains(&format!("{}/intruder", ns.name))
            && leak.contains(&format!("{}/same-namespace", ns.name)),
        "{leak}"
    );
}

/// What one engine answered, for comparison: refused or not and, for the guard's
/// refusals and warnings, the message with the namespace (= policy name) replaced, from
/// `policy <name>:` on. Placement refusals are compared by outcome only (the native
/// differential test covers them).
fn verdict(result: (bool, String), namespace: &str) -> String {
    let (ok, out) = result;
    let marker = format!("policy {namespace}:");
    let message = out
        .find(&marker)
        .map(|i| out[i..].lines().next().unwrap_or_default().to_string())
        .filter(|m| m.contains("pod selector"))
        .unwrap_or_default()
        .replace(namespace, "NS");
    let message = message.trim_end_matches(['"', '\'', '.', ' ']).to_string();
    format!("{} {message}", if ok { "admitted" } else { "refused" })
}

#[tokio::test]
async fn both_engines_guard_labels_and_copies_alike() {
    let _cluster = cluster_lock().read().await;
    shared_operator("admission");
    apply(&eu_enclave(ENCLAVE));
    let engine = |name: &str| format!("  admission: {{engine: {name}}}\n");
    let native = setup("lbl-diff-native", &engine("Native"));
    let webhook = setup("lbl-diff-webhook", &engine("Webhook"));
    for namespace in [&native.name, &webhook.name] {
        wait_for_placement(namespace).await;
        wait_for_guard(namespace, true).await;
    }

    let ephemeral = |source: bool| {
        format!(
            "  volumes:\n  - name: scratch\n    ephemeral:\n      volumeClaimTemplate:\n        spec:\n          accessModes: [ReadWriteOnce]\n          storageClassName: eu-dublin-ssd\n          resources: {{requests: {{storage: 1Gi}}}}\n{}",
            if source {
                "          dataSource: {kind: PersistentVolumeClaim, name: data-db-0}\n"
            } else {
                ""
            }
        )
    };
    let placed = "  nodeSelector: {node-restriction.kubernetes.io/enclave-site: norway}\n";
    let outside = "  nodeSelector: {node-restriction.kubernetes.io/enclave-site: virginia}\n";
    let mut creates: Vec<(String, String)> = Vec::new();
    for labels in ["{}", "{tier: data}", "{tier: cache}", "{app: db}"] {
        for (what, data, extra) in [
            ("claim", true, String::new()),
            ("none", false, String::new()),
            ("clone", false, ephemeral(true)),
            ("scratch", false, ephemeral(false)),
            ("claim-placed", true, placed.to_string()),
            ("claim-outside", true, outside.to_string()),
            (
                "host-path",
                false,
                "  volumes: [{name: raw, hostPath: {path: /var/lib/kubelet/pods}}]\n".to_string(),
            ),
            (
                "configuration",
                false,
                "  volumes: [{name: a, configMap: {name: c}}, {name: b, downwardAPI: {items: []}}]\n".to_string(),
            ),
        ] {
            creates.push((
                format!("create {labels} {what}"),
                pod("c", labels, data, &extra),
            ));
        }
    }
    let mut compared = 0;
    let mut refused = 0;
    for (case, yaml) in &creates {
        let answer = |namespace: &str| {
            verdict(
                kubectl_outcome(
                    &["apply", "--dry-run=server", "-n", namespace, "-f", "-"],
                    Some(yaml),
                ),
                namespace,
            )
        };
        let (a, b) = (answer(&native.name), answer(&webhook.name));
        assert_eq!(a, b, "{case}: native vs webhook");
        compared += 1;
        refused += usize::from(a.starts_with("refused"));
    }

    // Updates: the same pods in both namespaces, relabelled (dry run).
    let existing = [
        ("db", "{tier: data, app: db}", true, ""),
        ("loose", "{app: web}", false, ""),
        ("pinned", "{app: web}", false, placed),
    ];
    for namespace in [&native.name, &webhook.name] {
        for (name, labels, data, extra) in existing {
            let (ok, out) = kubectl_outcome(
                &["apply", "-n", namespace, "-f", "-"],
                Some(&pod(name, labels, data, extra)),
            );
            assert!(ok, "{out}");
        }
    }
    let updates: &[(&str, &[&str])] = &[
        ("db", &["tier-"]),
        ("db", &["tier=cache", "--overwrite"]),
        ("db", &["version=v2"]),
        ("db", &["app-"]),
        ("loose", &["tier=data"]),
        ("loose", &["tier=cache"]),
        ("pinned", &["tier=data"]),
        ("pinned", &["app-"]),
    ];
    for (name, change) in updates {
        let answer = |namespace: &str| {
            let mut args = vec!["label", "pod", name, "-n", namespace, "--dry-run=server"];
            args.extend_from_slice(change);
            verdict(kubectl_outcome(&args, None), namespace)
        };
        let (a, b) = (answer(&native.name), answer(&webhook.name));
        assert_eq!(a, b, "label {name} {change:?}: native vs webhook");
        compared += 1;
        refused += usize::from(a.starts_with("refused"));
    }
    eprintln!("scope guard differential: {compared} requests, {refused} refused by both engines");
    assert!(
        refused >= 10 && refused + 10 <= compared,
        "the cases exercise both outcomes: {refused} of {compared}"
    );
}
