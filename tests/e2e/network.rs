//! The network fence and the volume report against the local control plane: the
//! operator's NetworkPolicies are created, healed after an edit or a deletion, removed
//! where they no longer belong; a tenant's NetworkPolicy that opens a path out is
//! reported by name, one that stays inside is not; volumes outside are reported.
//!
//! No CNI enforces NetworkPolicies here (kwok runs no pod network): these tests check
//! what the operator writes and finds; `make kind-e2e` checks enforcement.

use std::time::Duration;

use crate::common::*;

const TIMEOUT: Duration = Duration::from_secs(60);
const ENCLAVE: &str = "network-eu";

/// The namespace, its enforcing policy, and admission in force (pods created before
/// that are refused while the placement comes into force: fail closed).
async fn setup(namespace: &str, extra: &str) -> TestNamespace {
    shared_operator("network");
    apply(&eu_enclave(ENCLAVE));
    let ns = TestNamespace::new(namespace, true);
    apply(&policy(namespace, ENCLAVE, extra));
    wait_for_admission(&ns.name).await;
    ns
}

fn fence_names(namespace: &str) -> String {
    kubectl_ok(&[
        "get",
        "networkpolicy",
        "-n",
        namespace,
        "-l",
        "app.kubernetes.io/managed-by=enclave-operator",
        "-o",
        "jsonpath={range .items[*]}{.metadata.name} {end}",
    ])
}

/// Waits until the operator's NetworkPolicies in `namespace` (their names, space
/// separated) satisfy `done`.
async fn fence_becomes(namespace: &str, what: &str, done: impl Fn(&str) -> bool) {
    let done = &done;
    eventually(TIMEOUT, what, || async move {
        let names = fence_names(namespace);
        if done(&names) { Ok(()) } else { Err(names) }
    })
    .await;
}

fn fence_is_empty(names: &str) -> bool {
    names.trim().is_empty()
}

fn fence_is_whole(names: &str) -> bool {
    names.split_whitespace().count() == 2
}

#[tokio::test]
async fn the_fence_is_kept_healed_and_removed_where_it_no_longer_belongs() {
    let _cluster = cluster_lock().read().await;
    let ns = setup("net-fence", "").await;
    let deny = "enclave-fence-deny-net-fence";
    let allow = "enclave-fence-allow-net-fence";
    fence_becomes(&ns.name, "the fence in place", |names| {
        names.contains(deny) && names.contains(allow)
    })
    .await;
    let owner = kubectl_ok(&[
        "get",
        "networkpolicy",
        deny,
        "-n",
        &ns.name,
        "-o",
        "jsonpath={.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].name}",
    ]);
    assert_eq!(owner, "ResidencyPolicy/net-fence");
    let egress_of_allow = || {
        kubectl_ok(&[
            "get",
            "networkpolicy",
            allow,
            "-n",
            &ns.name,
            "-o",
            "jsonpath={.spec.egress}",
        ])
    };
    let original = egress_of_allow();
    // Edited: restored.
    kubectl_ok(&[
        "patch",
        "networkpolicy",
        allow,
        "-n",
        &ns.name,
        "--type=merge",
        "-p",
        r#"{"spec":{"egress":[{}]}}"#,
    ]);
    eventually(TIMEOUT, "the edited fence restored", || async {
        let now = egress_of_allow();
        if now == original { Ok(()) } else { Err(now) }
    })
    .await;
    // Deleted: recreated.
    kubectl_ok(&["delete", "networkpolicy", deny, "-n", &ns.name]);
    fence_becomes(&ns.name, "the deleted fence recreated", |names| {
        names.contains(deny)
    })
    .await;
    eventually(TIMEOUT, "a FenceHealed Event", || async {
        let events = kubectl_ok(&[
            "get",
            "events",
            "-A",
            "--field-selector",
            "reason=FenceHealed,involvedObject.name=net-fence",
            "-o",
            "name",
        ]);
        if events.lines().count() >= 1 {
            Ok(())
        } else {
            Err(events)
        }
    })
    .await;
    // The namespace leaves the scope: its fence goes.
    kubectl_ok(&["label", "namespace", &ns.name, "enclave.dev/test-scope-"]);
    fence_becomes(
        &ns.name,
        "the fence removed from a namespace out of scope",
        fence_is_empty,
    )
    .await;
}

#[tokio::test]
async fn isolation_none_removes_the_fence_and_a_deleted_policy_leaves_none() {
    let _cluster = cluster_lock().read().await;
    let ns = setup("net-none", "").await;
    fence_becomes(&ns.name, "the fence in place", fence_is_whole).await;
    apply(&policy(&ns.name, ENCLAVE, "  network: {isolation: None}\n"));
    fence_becomes(&ns.name, "no fence with isolation None", fence_is_empty).await;
    // The status is written at the end of the pass that removed the fence: wait for it.
    status_becomes(
        &ns.name,
        TIMEOUT,
        "NetworkFenced with reason IsolationNone",
        |status| condition(status, "NetworkFenced").1 == "IsolationNone",
    )
    .await;
    apply(&policy(
        &ns.name,
        ENCLAVE,
        "  network: {isolation: Enclave}\n",
    ));
    fence_becomes(&ns.name, "the fence back", fence_is_whole).await;
    kubectl_ok(&["delete", "residencypolicy", &ns.name]);
    fence_becomes(&ns.name, "the fence gone with its policy", fence_is_empty).await;
}

#[tokio::test]
async fn a_tenants_policy_opening_a_path_out_is_reported_by_name() {
    let _cluster = cluster_lock().read().await;
    let ns = setup("net-leak", "").await;
    let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: app, labels: {app: web}}\nspec:\n  containers: [{name: app, image: registry.k8s.io/pause:3.10}]\n";
    kubectl_ok_stdin(&["apply", "-n", &ns.name, "-f", "-"], pod);
    status_becomes(
        &ns.name,
        TIMEOUT,
        "the fenced namespace reported clean",
        |status| condition(status, "NetworkFenced").0 == "True" && status.network_leaks == 0,
    )
    .await;
    // A tenant policy opening traffic only inside the enclave (its own namespace): fine.
    kubectl_ok_stdin(
        &["apply", "-n", &ns.name, "-f", "-"],
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: same-namespace}\nspec:\n  podSelector: {}\n  policyTypes: [Egress]\n  egress: [{to: [{podSelector: {}}]}]\n",
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let status = policy_status(&ns.name).await;
    assert_eq!(
        (
            condition(&status, "NetworkFenced").0.as_str(),
            status.network_leaks
        ),
        ("True", 0)
    );
    // An allow-all egress policy: reported, naming it.
    kubectl_ok_stdin(
        &["apply", "-n", &ns.name, "-f", "-"],
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: allow-all-egress}\nspec:\n  podSelector: {}\n  policyTypes: [Egress]\n  egress: [{}]\n",
    );
    let status = status_becomes(&ns.name, TIMEOUT, "the leak reported", |status| {
        status.network_leaks > 0
    })
    .await;
    assert_eq!(
        condition(&status, "NetworkFenced"),
        ("False".into(), "NetworkLeak".into())
    );
    let leak = status
        .violations
        .iter()
        .find(|v| v.reason == "NetworkLeak")
        .expect("a NetworkLeak violation");
    assert!(
        leak.message.contains("net-leak/allow-all-egress"),
        "{}",
        leak.message
    );
    // Removing it closes the path again.
    kubectl_ok(&[
        "delete",
        "networkpolicy",
        "allow-all-egress",
        "-n",
        &ns.name,
    ]);
    status_becomes(&ns.name, TIMEOUT, "the leak gone", |status| {
        status.network_leaks == 0
    })
    .await;
}

#[tokio::test]
async fn a_volume_in_virginia_bound_to_a_claim_in_scope_is_reported() {
    let _cluster = cluster_lock().read().await;
    shared_operator("network");
    apply(&eu_enclave(ENCLAVE));
    let ns = TestNamespace::new("net-volume", true);
    // The claim and its Virginia volume predate the policy.
    apply(
        "apiVersion: v1\nkind: PersistentVolume\nmetadata:\n  name: net-volume-us\nspec:\n  capacity: {storage: 1Gi}\n  accessModes: [ReadWriteOnce]\n  storageClassName: us-east-ssd\n  hostPath: {path: /tmp/net-volume-us}\n  claimRef: {namespace: net-volume, name: data}\n",
    );
    kubectl_ok_stdin(
        &["apply", "-n", &ns.name, "-f", "-"],
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: data}\nspec:\n  accessModes: [ReadWriteOnce]\n  storageClassName: us-east-ssd\n  volumeName: net-volume-us\n  resources: {requests: {storage: 1Gi}}\n",
    );
    apply(&policy(&ns.name, ENCLAVE, ""));
    let status = status_becomes(&ns.name, TIMEOUT, "the volume reported", |status| {
        status.non_compliant_volumes > 0
    })
    .await;
    assert_eq!(
        condition(&status, "VolumesCompliant"),
        ("False".into(), "VolumesOutsideEnclave".into())
    );
    let violation = status
        .violations
        .iter()
        .find(|v| v.kind == "PersistentVolumeClaim" && v.name == "data")
        .expect("the claim listed");
    assert_eq!(violation.reason, "VolumeOutsideEnclave");
    assert!(
        violation.message.contains("us-east-ssd"),
        "{}",
        violation.message
    );
    let _ = kubectl(&["delete", "pv", "net-volume-us", "--wait=false"], None);
}

/// The shared operator's decision records of `kind` about `namespace`.
fn records(kind: &str, namespace: &str) -> Vec<serde_json::Value> {
    shared_decisions()
        .into_iter()
        .filter(|r| r["kind"] == kind)
        .filter(|r| {
            let object = &r["fields"]["object"];
            object["namespace"] == namespace
                || (object["kind"] == "Namespace" && object["name"] == namespace)
        })
        .collect()
}

/// Events with `reason` on the policy of UID `uid` (not on an earlier policy of the
/// same name: Events outlive their object), one message a line.
fn policy_events(uid: &str, reason: &str) -> Vec<String> {
    let out = kubectl_ok(&[
        "get",
        "events",
        "-A",
        "--field-selector",
        &format!("reason={reason},involvedObject.uid={uid},involvedObject.kind=ResidencyPolicy"),
        "-o",
        "jsonpath={range .items[*]}{.note}{.message}{\"\\n\"}{end}",
    ]);
    out.lines().map(str::to_string).collect()
}

#[tokio::test]
async fn a_namespace_leaving_scope_and_the_removal_of_its_fence_are_recorded() {
    let _cluster = cluster_lock().read().await;
    let ns = setup("net-leave", "").await;
    eventually(TIMEOUT, "the fence in place", || async {
        let names = fence_names(&ns.name);
        if names.split_whitespace().count() == 2 {
            Ok(())
        } else {
            Err(names)
        }
    })
    .await;
    assert!(records("NamespaceLeftScope", &ns.name).is_empty());
    kubectl_ok(&["label", "namespace", &ns.name, "enclave.dev/test-scope-"]);
    eventually(TIMEOUT, "the fence removed", || async {
        let names = fence_names(&ns.name);
        if names.trim().is_empty() {
            Ok(())
        } else {
            Err(names)
        }
    })
    .await;
    let left = eventually(TIMEOUT, "a NamespaceLeftScope record", || async {
        let found = records("NamespaceLeftScope", &ns.name);
        if found.is_empty() {
            Err("none yet")
        } else {
            Ok(found)
        }
    })
    .await;
    assert_eq!(left.len(), 1, "{left:?}");
    let fields = &left[0]["fields"];
    assert_eq!(fields["policy"], "net-leave");
    assert_eq!(fields["reason"], "NamespaceRelabelled");
    let message = fields["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("no longer match") && message.contains("fence no longer cover"),
        "{message}"
    );
    let removed = eventually(TIMEOUT, "two FenceRemoved records", || async {
        let found = records("FenceRemoved", &ns.name);
        if found.len() >= 2 {
            Ok(found)
        } else {
            Err(found)
        }
    })
    .await;
    let mut names: Vec<&str> = removed
        .iter()
        .map(|r| r["fields"]["object"]["name"].as_str().unwrap_or_default())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "enclave-fence-allow-net-leave",
            "enclave-fence-deny-net-leave"
        ]
    );
    assert!(
        removed
            .iter()
            .all(|r| r["fields"]["reason"] == "NamespaceLeftScope"
                && r["fields"]["policy"] == "net-leave"),
        "{removed:?}"
    );
    // The leader chain holds them: the controllers decided.
    assert!(
        removed
            .iter()
            .chain(&left)
            .all(|r| r["chain"].as_str().is_some_and(|c| c.ends_with("/leader"))),
        "{removed:?}"
    );
    let uid = kubectl_ok(&[
        "get",
        "residencypolicy",
        "net-leave",
        "-o",
        "jsonpath={.metadata.uid}",
    ]);
    eventually(TIMEOUT, "Events on the policy", || async {
        let left = policy_events(&uid, "NamespaceLeftScope");
        let removed = policy_events(&uid, "FenceRemoved");
        if left.len() == 1 && removed.len() == 2 {
            Ok(())
        } else {
            Err(format!("left: {left:?}, removed: {removed:?}"))
        }
    })
    .await;
}
