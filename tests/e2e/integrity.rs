//! The operator's own integrity (issue 21, items 5–7), run in both engines as part of
//! `admission::`: an engine switch leaves no moment without enforcement; admission
//! objects edited by hand are compared in full, repaired and recorded; the operator's
//! own namespace is never in scope, whatever a policy selects.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use crate::common::*;
use enclave_operator::crd::ResidencyPolicy;
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(60);
const ENCLAVE: &str = "integrity-eu";

fn setup(namespace: &str, extra: &str) -> TestNamespace {
    shared_operator("integrity");
    apply(&eu_enclave(ENCLAVE));
    let ns = TestNamespace::new(namespace, true);
    apply(&policy(namespace, ENCLAVE, extra));
    ns
}

/// A pod pinned to Virginia, by name or by node selector.
fn pinned(by_name: bool) -> Pod {
    let placement = if by_name {
        json!({"nodeName": "virginia-a"})
    } else {
        json!({"nodeSelector": {SITE_LABEL: "virginia"}})
    };
    let mut spec = json!({"containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10"}]});
    spec.as_object_mut()
        .expect("object")
        .extend(placement.as_object().expect("object").clone());
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "pinned-"},
        "spec": spec,
    }))
    .expect("pod")
}

/// The `Ready` condition of a policy: (status, message).
async fn ready(policy: &str) -> (String, String) {
    let api: Api<ResidencyPolicy> = Api::all(client().await);
    api.get_status(policy)
        .await
        .ok()
        .and_then(|p| p.status)
        .and_then(|s| s.conditions.into_iter().find(|c| c.type_ == "Ready"))
        .map(|c| (c.status, c.message))
        .unwrap_or_default()
}

fn exists(kind: &str, name: &str) -> bool {
    let out = kubectl(
        &["get", kind, name, "--ignore-not-found", "-o", "name"],
        None,
    );
    !String::from_utf8_lossy(&out.stdout).trim().is_empty()
}

/// Item 5: pinned pods are created in a loop while the policy's engine switches back
/// and forth (between the operator's default, which `--admission` sets, and the other
/// engine): none is admitted.
#[tokio::test]
async fn engine_switches_leave_no_moment_without_enforcement() {
    let _cluster = cluster_lock().read().await;
    let ns = setup("int-switch", "");
    wait_for_admission(&ns.name).await;
    let client = client().await;
    let default = if webhook_engine() {
        "webhook"
    } else {
        "native"
    };
    let other = if webhook_engine() {
        "Native"
    } else {
        "Webhook"
    };

    let stop = Arc::new(AtomicBool::new(false));
    let attempts = Arc::new(AtomicUsize::new(0));
    let mut creators = Vec::new();
    for worker in 0..2 {
        let (client, namespace) = (client.clone(), ns.name.clone());
        let (stop, attempts) = (stop.clone(), attempts.clone());
        creators.push(tokio::spawn(async move {
            let api: Api<Pod> = Api::namespaced(client, &namespace);
            let mut admitted = Vec::new();
            let mut i = 0usize;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                match api
                    .create(
                        &PostParams::default(),
                        &pinned((i + worker).is_multiple_of(2)),
                    )
                    .await
                {
                    Ok(pod) => admitted.push(pod.metadata.name.unwrap_or_default()),
                    Err(kube::Error::Api(status)) if status.code == 403 => {}
                    Err(error) => panic!("creating a pinned pod: {error}"),
                }
                attempts.fetch_add(1, Ordering::SeqCst);
            }
            admitted
        }));
    }

    let policies: Api<ResidencyPolicy> = Api::all(client.clone());
    let mut switches = Vec::new();
    for round in 0..4u32 {
        // Away from the default, then back to it (the field removed).
        let (engine, patch) = if round.is_multiple_of(2) {
            (
                other.to_lowercase(),
                json!({"spec": {"admission": {"engine": other}}}),
            )
        } else {
            (default.to_string(), json!({"spec": {"admission": null}}))
        };
        let started = std::time::Instant::now();
        policies
            .patch(&ns.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("switch the engine");
        let (old_kind, old_name) = if engine == "native" {
            (
                "mutatingwebhookconfiguration",
                format!("enclave-operator-{}", ns.name),
            )
        } else {
            (
                "validatingadmissionpolicy",
                format!("enclave-check.{}", ns.name),
            )
        };
        eventually(
            TIMEOUT,
            &format!("the switch to the {engine} engine"),
            || async {
                let (status, message) = ready(&ns.name).await;
                let switched = status == "True"
                    && message.contains(&format!("by the {engine} admission engine"))
                    && !exists(old_kind, &old_name);
                if switched {
                    Ok(())
                } else {
                    Err((status, message))
                }
            },
        )
        .await;
        switches.push((engine, started.elapsed()));
        // Pods keep coming under the new engine alone for a moment.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    stop.store(true, Ordering::SeqCst);
    let mut admitted = Vec::new();
    for creator in creators {
        admitted.extend(creator.await.expect("creator"));
    }
    let attempts = attempts.load(Ordering::SeqCst);
    eprintln!("switches {switches:?}; {attempts} pinned pods tried");
    assert!(attempts >= 50, "only {attempts} pinned pods were tried");
    assert!(
        admitted.is_empty(),
        "pinned pods admitted during engine switches: {admitted:?}"
    );
    assert!(
        pods(&client, &ns.name).await.is_empty(),
        "no pod was admitted"
    );
}

/// The objects a hand edit targets, per engine: (kind, name, JSON pointer of the list of
/// match conditions, JSON pointer of where an object selector goes).
fn targets(namespace: &str) -> Vec<(&'static str, String, &'static str, &'static str)> {
    if webhook_engine() {
        let name = format!("enclave-operator-{namespace}");
        vec![
            (
                "mutatingwebhookconfiguration",
                name.clone(),
                "/webhooks/0/matchConditions",
                "/webhooks/0/objectSelector",
            ),
            (
                "validatingwebhookconfiguration",
                name,
                "/webhooks/0/matchConditions",
                "/webhooks/0/objectSelector",
            ),
        ]
    } else {
        vec![
            (
                "mutatingadmissionpolicy",
                format!("enclave-place.{namespace}"),
                "/spec/matchConditions",
                "",
            ),
            (
                "validatingadmissionpolicy",
                format!("enclave-check.{namespace}"),
                "/spec/matchConditions",
                "",
            ),
            (
                "mutatingadmissionpolicybinding",
                format!("enclave-place.{namespace}"),
                "",
                "/spec/matchResources/objectSelector",
            ),
            (
                "validatingadmissionpolicybinding",
                format!("enclave-check.{namespace}"),
                "",
                "/spec/matchResources/objectSelector",
            ),
        ]
    }
}

/// An object as JSON, without its managedFields (which name fields a manager once
/// owned).
fn json_of(kind: &str, name: &str) -> serde_json::Value {
    let mut object: serde_json::Value =
        serde_json::from_str(&kubectl_ok(&["get", kind, name, "-o", "json"])).expect("json");
    if let Some(meta) = object["metadata"].as_object_mut() {
        meta.remove("managedFields");
    }
    object
}

/// Item 6: a match condition and an object selector added by hand (each switches the
/// gate off) are found, repaired and recorded (decision log and Event), and a pinned
/// pod is refused again.
#[tokio::test]
async fn admission_objects_edited_by_hand_are_compared_in_full_and_repaired() {
    let _cluster = cluster_lock().read().await;
    let ns = setup("int-tamper", "");
    wait_for_admission(&ns.name).await;
    let client = client().await;
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    for what in ["matchCondition", "objectSelector"] {
        let mut edited = Vec::new();
        for (kind, name, conditions, selector) in targets(&ns.name) {
            let patch = match what {
                // Appended to the list, or the list added where the object has none
                // (the native policies carry none).
                "matchCondition" if !conditions.is_empty() => {
                    let tampered = json!({"name": "tampered", "expression": "false"});
                    if json_of(kind, &name).pointer(conditions).is_some() {
                        json!([{"op": "add", "path": format!("{conditions}/-"), "value": tampered}])
                    } else {
                        json!([{"op": "add", "path": conditions, "value": [tampered]}])
                    }
                }
                "objectSelector" if !selector.is_empty() => json!([{
                    "op": "add",
                    "path": selector,
                    "value": {"matchLabels": {"tampered": "never-set"}},
                }]),
                _ => continue,
            };
            kubectl_ok(&[
                "patch",
                kind,
                &name,
                "--type=json",
                "-p",
                &patch.to_string(),
            ]);
            edited.push((kind, name));
        }
        assert!(!edited.is_empty());
        eventually(
            Duration::from_secs(20),
            &format!("the hand-added {what} removed"),
            || async {
                let left: Vec<&(&str, String)> = edited
                    .iter()
                    .filter(|(kind, name)| json_of(kind, name).to_string().contains("tampered"))
                    .collect();
                if left.is_empty() {
                    Ok(())
                } else {
                    Err(format!("{left:?}"))
                }
            },
        )
        .await;
        // The API server loads the repaired object a moment later.
        eventually(
            Duration::from_secs(20),
            "a pinned dry-run pod refused",
            || async {
                let dry_run = PostParams {
                    dry_run: true,
                    ..PostParams::default()
                };
                match api.create(&dry_run, &pinned(true)).await {
                    Err(kube::Error::Api(s)) if s.code == 403 => Ok(()),
                    other => Err(format!("{other:?}").chars().take(300).collect::<String>()),
                }
            },
        )
        .await;
        let refused = api.create(&PostParams::default(), &pinned(true)).await;
        assert!(
            matches!(&refused, Err(kube::Error::Api(s)) if s.code == 403),
            "a pinned pod is refused again after the {what} was removed: {refused:?}"
        );
        for (kind, name) in &edited {
            eventually(
                Duration::from_secs(20),
                &format!("an AdmissionTampered record of {kind} {name}"),
                || async {
                    let found = shared_decisions().into_iter().any(|record| {
                        record["kind"] == "AdmissionTampered"
                            && record["fields"]["policy"] == ns.name.as_str()
                            && record["fields"]["object"]["name"] == name.as_str()
                            && record["fields"]["object"]["kind"]
                                .as_str()
                                .is_some_and(|k| k.eq_ignore_ascii_case(kind))
                    });
                    if found { Ok(()) } else { Err(()) }
                },
            )
            .await;
        }
    }
    eventually(
        TIMEOUT,
        "an AdmissionTampered Event on the policy",
        || async {
            let out = kubectl_ok(&[
                "get",
                "events",
                "-A",
                "--field-selector",
                &format!("involvedObject.name={},reason=AdmissionTampered", ns.name),
                "-o",
                "jsonpath={.items[*].message}",
            ]);
            if out.contains("repaired") {
                Ok(())
            } else {
                Err(out)
            }
        },
    )
    .await;
    assert!(pods(&client, &ns.name).await.is_empty());
}

/// Item 7: a policy that selects the operator's own namespace reaches nothing there:
/// a pod pinned to Virginia is neither evicted, fenced nor refused, and the policy
/// counts no pod. Holds the cluster lock exclusively: the operator's namespace is shared.
#[tokio::test]
async fn the_operators_namespace_is_never_in_scope() {
    let _cluster = cluster_lock().write().await;
    shared_operator("integrity");
    apply(&eu_enclave(ENCLAVE));
    let name = "int-operator-namespace";
    let cleanup = || {
        let _ = kubectl(
            &["delete", "residencypolicy", name, "--ignore-not-found"],
            None,
        );
        let _ = kubectl(
            &[
                "delete",
                "deployment",
                "-n",
                OPERATOR_NAMESPACE,
                name,
                "--ignore-not-found",
            ],
            None,
        );
    };
    cleanup();
    // A workload in the operator's namespace, running in Virginia before the policy.
    kubectl_ok_stdin(
        &["apply", "-n", OPERATOR_NAMESPACE, "-f", "-"],
        &format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\nspec:\n  replicas: 1\n  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}}}}}\n    spec:\n      nodeSelector: {{{SITE_LABEL}: virginia}}\n      containers: [{{name: app, image: registry.k8s.io/pause:3.10}}]\n"
        ),
    );
    let client = client().await;
    let before = eventually(TIMEOUT, "the workload running in Virginia", || async {
        let running: Vec<Pod> = pods(&client, OPERATOR_NAMESPACE)
            .await
            .into_iter()
            .filter(|p| {
                is_running(p)
                    && p.metadata
                        .name
                        .as_deref()
                        .is_some_and(|n| n.starts_with(name))
            })
            .collect();
        if running.len() == 1 && node_of(&running[0]).is_some_and(|n| n.starts_with("virginia")) {
            Ok(running[0].metadata.uid.clone().unwrap_or_default())
        } else {
            Err(running.len())
        }
    })
    .await;
    apply(&format!(
        "apiVersion: enclave.dev/v1alpha1\nkind: ResidencyPolicy\nmetadata:\n  name: {name}\nspec:\n  enclave: {ENCLAVE}\n  match:\n    namespaceSelector: {{matchLabels: {{kubernetes.io/metadata.name: {OPERATOR_NAMESPACE}}}}}\n  migration: {{enabled: true, evictUnmanagedPods: true}}\n"
    ));
    // The policy is reconciled (Ready) and counts nothing.
    eventually(TIMEOUT, "the policy reconciled", || async {
        let api: Api<ResidencyPolicy> = Api::all(client.clone());
        let status = api.get_status(name).await.ok().and_then(|p| p.status);
        match status {
            Some(s) if s.observed_generation.is_some() => Ok(s),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    // Passes run every few hundred milliseconds while anything changes: give several.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let api: Api<ResidencyPolicy> = Api::all(client.clone());
    let status = api
        .get_status(name)
        .await
        .expect("policy")
        .status
        .expect("status");
    let now: Vec<String> = pods(&client, OPERATOR_NAMESPACE)
        .await
        .into_iter()
        .filter(|p| {
            p.metadata
                .name
                .as_deref()
                .is_some_and(|n| n.starts_with(name))
        })
        .filter_map(|p| p.metadata.uid)
        .collect();
    let result = (|| {
        if status.matched_pods != 0 {
            return Err(format!("the policy counts {} pods", status.matched_pods));
        }
        if now != [before.clone()] {
            return Err(format!(
                "the workload's pod was evicted: {now:?} != [{before}]"
            ));
        }
        let fence = kubectl_ok(&[
            "get",
            "networkpolicies",
            "-n",
            OPERATOR_NAMESPACE,
            "-l",
            "app.kubernetes.io/managed-by=enclave-operator",
            "-o",
            "name",
        ]);
        if !fence.trim().is_empty() {
            return Err(format!("the operator's namespace is fenced: {fence}"));
        }
        // Neither refused nor placed: a pod pinned to Virginia is admitted as it is.
        let out = kubectl(
            &[
                "apply",
                "--dry-run=server",
                "-n",
                OPERATOR_NAMESPACE,
                "-f",
                "-",
                "-o",
                "json",
            ],
            Some(&format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}-pinned}}\nspec:\n  nodeName: virginia-a\n  containers: [{{name: app, image: registry.k8s.io/pause:3.10}}]\n"
            )),
        );
        if !out.status.success() {
            return Err(format!(
                "a pinned pod is refused: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(())
    })();
    cleanup();
    if let Err(problem) = result {
        panic!("{problem}");
    }
}
