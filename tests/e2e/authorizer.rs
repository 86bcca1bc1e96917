//! The authorizer against the local control plane, whose API server asks it between
//! Node and RBAC (tools/cluster/up.sh): one test per door admission never sees — logs,
//! the kubelet's API through `nodes/<node>/proxy`, `pods/proxy` and `services/proxy`,
//! impersonating or minting tokens for an approved service account — and mirror pods
//! spoofed by impersonating the `system:nodes` group. RBAC grants every user here what
//! they try: the authorizer (or, for mirror pods, admission) is what refuses them.
//!
//! On a cluster whose API server does not ask the authorizer (`make kind-e2e`), each
//! test checks instead that the DataEnclave says so (`AuthorizerInForce=False`).

use std::time::Duration;

use serde_json::Value;

use crate::common::{workloads::running_pause_pod, *};

const TIMEOUT: Duration = Duration::from_secs(60);
const ENCLAVE: &str = "authz-eu";
/// The namespace of the approved service account of the impersonation test.
const IDENTITY_NS: &str = "authz-identity";

fn enclave() -> String {
    format!(
        "{}  access: {{approvedUsers: [bob, \"system:serviceaccount:{IDENTITY_NS}:backup\"], approvedGroups: [enclave-sre]}}\n",
        eu_enclave(ENCLAVE)
    )
}

/// The authorizer's refusal, as the API server passes it on in a Forbidden error.
fn refused_by_authorizer(output: &str, phrase: &str) -> bool {
    output.contains("forbidden") && output.contains("enclave-operator") && output.contains(phrase)
}

/// Binds `role` (a ClusterRole) to users in a namespace.
fn bind(namespace: &str, role: &str, users: &[&str]) {
    let subjects: String = users
        .iter()
        .map(|u| format!("- {{kind: User, name: \"{u}\", apiGroup: rbac.authorization.k8s.io}}\n"))
        .collect();
    apply(&format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {{name: {role}-users, namespace: {namespace}}}\nroleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: {role}}}\nsubjects:\n{subjects}"
    ));
}

/// The enclave's `AuthorizerInForce` condition as (status, reason).
fn in_force(enclave: &str) -> (String, String) {
    let out = kubectl_ok(&[
        "get",
        "dataenclave",
        enclave,
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"AuthorizerInForce\")].status}/{.status.conditions[?(@.type==\"AuthorizerInForce\")].reason}",
    ]);
    let (status, reason) = out.split_once('/').unwrap_or(("", ""));
    (status.to_string(), reason.to_string())
}

/// Without the authorizer configured for the tests, the enclave must say it is weaker.
async fn reported_absent() -> bool {
    if authorizer_configured() {
        return false;
    }
    eventually(TIMEOUT, "AuthorizerInForce=False", || async {
        match in_force(ENCLAVE) {
            (status, reason) if status == "False" => Ok(reason),
            other => Err(other),
        }
    })
    .await;
    true
}

/// Sets up an in-scope namespace of the enclave, with admission (hence the operator's
/// caches) aware of its policy.
async fn enclave_namespace(name: &str) -> TestNamespace {
    apply(&enclave());
    let ns = TestNamespace::new(name, true);
    apply(&policy(&ns.name, ENCLAVE, ""));
    wait_for_admission(&ns.name).await;
    ns
}

/// The shared operator's decision records of `kind` about an object.
fn records_of(kind: &str, namespace: Option<&str>, name: &str) -> Vec<Value> {
    decisions_about(namespace, name)
        .into_iter()
        .filter(|r| r["kind"] == kind)
        .collect()
}

#[tokio::test]
async fn the_enclave_reports_the_authorizer_in_force() {
    let _cluster = cluster_lock().read().await;
    shared_operator("authorizer");
    apply(&enclave());
    if reported_absent().await {
        return;
    }
    // A condition left by an earlier run proves nothing: clear the status, so that what
    // comes back is this operator's probe.
    clear_enclave_conditions(ENCLAVE);
    eventually(TIMEOUT, "AuthorizerInForce=True", || async {
        match in_force(ENCLAVE) {
            (status, reason) if status == "True" && reason == "Answering" => Ok(()),
            other => Err(other),
        }
    })
    .await;
}

/// Door 1: a `view` user reads no logs of an enclave pod; approved staff get past
/// authorization (on kwok the request then fails at the missing kubelet).
#[tokio::test]
async fn logs_of_enclave_pods_are_refused_to_a_viewer() {
    let _cluster = cluster_lock().read().await;
    shared_operator("authorizer");
    let ns = enclave_namespace("authz-logs").await;
    if reported_absent().await {
        return;
    }
    bind(&ns.name, "view", &["viewer", "bob"]);
    running_pause_pod(&ns.name, "db").await;

    let refused = eventually(TIMEOUT, "the viewer's logs refused", || async {
        let out = attempt_as(&["--as", "viewer"], &["logs", "-n", &ns.name, "db"], &[]);
        if refused_by_authorizer(&out, "viewer may not read the logs of pod authz-logs/db") {
            Ok(out)
        } else {
            Err(out)
        }
    })
    .await;
    assert!(
        refused.contains("DataEnclave authz-eu admits only its approved staff"),
        "{refused}"
    );
    let approved = attempt_as(&["--as", "bob"], &["logs", "-n", &ns.name, "db"], &[]);
    assert!(
        !approved.contains("forbidden") && !approved.contains("enclave-operator"),
        "approved staff pass authorization: {approved}"
    );
    eventually(
        TIMEOUT,
        "the refusal and the approved read in the decision log",
        || async {
            let denied = records_of("AuthorizerDenied", Some(&ns.name), "db");
            let passed = records_of("AuthorizerNoOpinion", Some(&ns.name), "db");
            match (
                denied.iter().find(|r| r["fields"]["user"] == "viewer"),
                passed.iter().find(|r| r["fields"]["user"] == "bob"),
            ) {
                (Some(denied), Some(_)) if denied["fields"]["door"] == "logs" => Ok(()),
                _ => Err(format!("{denied:?} {passed:?}")),
            }
        },
    )
    .await;

    // Outside every enclave the same viewer is RBAC's business alone.
    let outside = TestNamespace::new("authz-logs-outside", false);
    bind(&outside.name, "view", &["viewer"]);
    kubectl_ok(&[
        "run",
        "web",
        "-n",
        &outside.name,
        "--image=registry.k8s.io/pause:3.10",
        "--restart=Never",
    ]);
    let out = attempt_as(
        &["--as", "viewer"],
        &["logs", "-n", &outside.name, "web"],
        &[],
    );
    assert!(!out.contains("enclave-operator"), "{out}");
}

/// Door 2: exec through the kubelet's API, `nodes/<node>/proxy/exec/...`, never reaches
/// pod admission: refused for a monitoring user with `nodes/proxy`, allowed through
/// authorization for approved staff.
#[tokio::test]
async fn exec_through_the_kubelet_api_is_refused_to_unapproved_users() {
    // A cluster-wide grant shows in every enclave's exposures (the audit test expects
    // none), and the nodes are every enclave's: no other test may run meanwhile.
    let _cluster = cluster_lock().write().await;
    shared_operator("authorizer");
    let ns = enclave_namespace("authz-kubelet").await;
    if reported_absent().await {
        return;
    }
    apply(
        r#"apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: authz-test-kubelet-api}
rules:
- apiGroups: [""]
  resources: [nodes/proxy]
  verbs: [get, create]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: authz-test-kubelet-api}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: authz-test-kubelet-api}
subjects:
- {kind: User, name: prom, apiGroup: rbac.authorization.k8s.io}
- {kind: User, name: bob, apiGroup: rbac.authorization.k8s.io}
"#,
    );
    let node = running_pause_pod(&ns.name, "db").await;
    let path = format!(
        "/api/v1/nodes/{node}/proxy/exec/{}/db/db?command=cat&command=/etc/hostname&output=1",
        ns.name
    );
    let refused = eventually(
        TIMEOUT,
        "prom's exec through the kubelet refused",
        || async {
            let out = attempt_as(
                &["--as", "prom"],
                &["create", "--raw", &path, "-f", "/dev/null"],
                &[],
            );
            let get = attempt_as(&["--as", "prom"], &["get", "--raw", &path], &[]);
            let phrase = format!("prom may not reach the kubelet API of node {node}");
            if refused_by_authorizer(&out, &phrase) && refused_by_authorizer(&get, &phrase) {
                Ok(out)
            } else {
                Err(format!("{out}\n{get}"))
            }
        },
    )
    .await;
    // Every enclave with a site on the node gates it: the refusal names whichever
    // policy answered first (another test's may still be going away).
    assert!(
        refused.contains("admits only its approved staff"),
        "{refused}"
    );
    // bob is approved by this test's enclave; another test's enclave on the same node,
    // still being deleted, may refuse him until it is gone (and its refusal is cached
    // for the authorizer's TTL): wait for that, never for an answer of ours.
    eventually(TIMEOUT, "approved staff pass authorization", || async {
        let approved = attempt_as(&["--as", "bob"], &["get", "--raw", &path], &[]);
        if approved.contains("DataEnclave authz-eu") {
            panic!("this test's own enclave refused its approved staff: {approved}");
        }
        if !approved.contains("forbidden") && !approved.contains("enclave-operator") {
            Ok(())
        } else {
            Err(approved)
        }
    })
    .await;
    eventually(TIMEOUT, "the refusal in the decision log", || async {
        let records = records_of("AuthorizerDenied", None, &node);
        records
            .iter()
            .find(|r| r["fields"]["user"] == "prom" && r["fields"]["door"] == "nodes/proxy")
            .map(|_| ())
            .ok_or(records.len())
    })
    .await;
    let _ = kubectl(
        &[
            "delete",
            "clusterrolebinding,clusterrole",
            "authz-test-kubelet-api",
            "--ignore-not-found",
        ],
        None,
    );
}

/// Door 3: `pods/proxy` and `services/proxy` (which the built-in `edit` role has) reach
/// a pod's ports through the API server.
#[tokio::test]
async fn pod_and_service_proxies_are_refused_to_unapproved_users() {
    let _cluster = cluster_lock().read().await;
    shared_operator("authorizer");
    let ns = enclave_namespace("authz-proxy").await;
    if reported_absent().await {
        return;
    }
    bind(&ns.name, "edit", &["mallory"]);
    running_pause_pod(&ns.name, "db").await;
    kubectl_ok(&[
        "create",
        "service",
        "clusterip",
        "db",
        "-n",
        &ns.name,
        "--tcp=80:80",
    ]);
    let pod_path = format!("/api/v1/namespaces/{}/pods/db:80/proxy/", ns.name);
    let service_path = format!("/api/v1/namespaces/{}/services/db:80/proxy/", ns.name);
    eventually(TIMEOUT, "both proxies refused", || async {
        let pod = attempt_as(&["--as", "mallory"], &["get", "--raw", &pod_path], &[]);
        let service = attempt_as(&["--as", "mallory"], &["get", "--raw", &service_path], &[]);
        if refused_by_authorizer(&pod, "mallory may not proxy to pod authz-proxy/db")
            && refused_by_authorizer(&service, "mallory may not proxy to service authz-proxy/db")
        {
            Ok(())
        } else {
            Err(format!("{pod}\n{service}"))
        }
    })
    .await;
}

/// Door 4: `edit` in a namespace grants impersonating its service accounts and minting
/// their tokens. When one of them is approved staff, anyone with `edit` there would pass
/// as it: the authorizer refuses the impersonation and the token itself.
#[tokio::test]
async fn an_approved_service_account_cannot_be_impersonated_or_minted_by_others() {
    let _cluster = cluster_lock().read().await;
    shared_operator("authorizer");
    let ns = enclave_namespace("authz-impersonated").await;
    if reported_absent().await {
        return;
    }
    bind(
        &ns.name,
        "view",
        &[&format!("system:serviceaccount:{IDENTITY_NS}:backup")],
    );
    running_pause_pod(&ns.name, "db").await;
    // The identity's namespace, with the approved account and an `edit` holder.
    let identity = TestNamespace::new(IDENTITY_NS, false);
    kubectl_ok(&["create", "serviceaccount", "backup", "-n", &identity.name]);
    kubectl_ok(&["create", "serviceaccount", "intern", "-n", &identity.name]);
    kubectl_ok(&[
        "create",
        "rolebinding",
        "intern-edit",
        "-n",
        &identity.name,
        "--clusterrole=edit",
        &format!("--serviceaccount={}:intern", identity.name),
    ]);
    let kubeconfig =
        std::env::temp_dir().join(format!("authz-intern-{}.kubeconfig", std::process::id()));
    service_account_kubeconfig(&identity.name, "intern", &kubeconfig);
    let as_intern = |args: &[&str]| {
        let mut all = vec!["--kubeconfig", kubeconfig.to_str().expect("utf-8 path")];
        all.extend_from_slice(args);
        attempt(&all)
    };
    let backup = format!("system:serviceaccount:{IDENTITY_NS}:backup");
    eventually(
        TIMEOUT,
        "impersonation and token minting refused",
        || async {
            let logs = as_intern(&[
                "logs",
                "-n",
                &ns.name,
                "db",
                "--as",
                &backup,
                "--request-timeout=10s",
            ]);
            let token = as_intern(&[
                "create",
                "token",
                "backup",
                "-n",
                IDENTITY_NS,
                "--request-timeout=10s",
            ]);
            // The API server reports the last impersonation mode it tried (constrained
            // impersonation's `impersonate-on:...`, which nobody holds here); the
            // authorizer's refusal of the legacy `impersonate` check, which `edit`
            // grants, is in the decision log.
            let recorded = records_of("AuthorizerDenied", Some(IDENTITY_NS), "backup")
                .iter()
                .any(|r| {
                    r["fields"]["door"] == "impersonate"
                        && r["fields"]["user"]
                            == format!("system:serviceaccount:{IDENTITY_NS}:intern")
                });
            if logs.contains("forbidden")
                && logs.contains("impersonate")
                && recorded
                && refused_by_authorizer(
                    &token,
                    &format!("may not mint a token for service account {IDENTITY_NS}/backup"),
                )
            {
                Ok(())
            } else {
                Err(format!("{logs}\n{token}\nrecorded: {recorded}"))
            }
        },
    )
    .await;
    // Other service accounts of the namespace stay the `edit` holder's to use.
    let other = as_intern(&[
        "create",
        "token",
        "intern",
        "-n",
        IDENTITY_NS,
        "--request-timeout=10s",
    ]);
    assert!(!other.contains("forbidden"), "{other}");
    let _ = std::fs::remove_file(kubeconfig);
}

/// Mirror pods are recognised by what only a kubelet can be. A user allowed to
/// impersonate groups who claims `system:nodes` gets no exemption: the pod is placed and
/// judged like any other (here: pinned to Virginia, refused).
#[tokio::test]
async fn a_pod_spoofed_as_a_mirror_pod_by_impersonating_system_nodes_is_refused() {
    let _cluster = cluster_lock().read().await;
    shared_operator("authorizer");
    let ns = enclave_namespace("authz-mirror").await;
    bind(&ns.name, "edit", &["mallory"]);
    let pod = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: spoofed\n  namespace: {}\n  annotations: {{kubernetes.io/config.mirror: forged}}\nspec:\n  nodeName: virginia-a\n  containers: [{{name: c, image: registry.k8s.io/pause:3.10}}]\n",
        ns.name
    );
    let (created, text) = kubectl_outcome(
        &[
            "create",
            "-f",
            "-",
            "--as",
            "mallory",
            "--as-group",
            "system:nodes",
            "--as-group",
            "system:authenticated",
        ],
        Some(&pod),
    );
    assert!(
        !created,
        "a forged mirror pod was admitted on virginia-a: {text}"
    );
    assert!(text.contains("virginia-a"), "{text}");
}
