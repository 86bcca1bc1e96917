//! The access gate and the exposure report against the local control plane, with real
//! kubectl and impersonated users: exec, attach, port-forward and debug containers into
//! an in-scope pod are admitted only for the enclave's approved staff, every attempt is
//! recorded, a RoleBinding that gives an outsider exec shows up in the DataEnclave's
//! status and goes when it goes, and a pod outside every policy never reaches the
//! operator.
//!
//! RBAC is checked before admission, so each test grants the impersonated users exec
//! (and the rest) in its namespace: the gate is what stands between them and the pod.

use std::time::Duration;

use crate::common::{workloads::running_pause_pod, *};

const TIMEOUT: Duration = Duration::from_secs(60);
const ENCLAVE: &str = "access-eu";

fn enclave() -> String {
    format!(
        "{}  access: {{approvedUsers: [bob], approvedGroups: [enclave-sre]}}\n",
        eu_enclave(ENCLAVE)
    )
}

/// A Role that lets its subjects reach into pods every way there is, bound to mallory,
/// bob, the group enclave-sre and a user who merely bears the group's name.
fn grant_shells(namespace: &str, binding: &str) {
    apply(&format!(
        r#"apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: shells, namespace: {namespace}}}
rules:
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list]
- apiGroups: [""]
  resources: [pods/exec, pods/attach, pods/portforward]
  verbs: [create, get]
- apiGroups: [""]
  resources: [pods/ephemeralcontainers]
  verbs: [patch, update]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: {binding}, namespace: {namespace}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: shells}}
subjects:
- {{kind: User, name: mallory, apiGroup: rbac.authorization.k8s.io}}
- {{kind: User, name: bob, apiGroup: rbac.authorization.k8s.io}}
- {{kind: Group, name: enclave-sre, apiGroup: rbac.authorization.k8s.io}}
- {{kind: User, name: enclave-sre, apiGroup: rbac.authorization.k8s.io}}
"#
    ));
}

fn is_denial(output: &str) -> bool {
    output.contains("denied the request")
}

#[tokio::test]
async fn only_approved_staff_reach_into_enclave_pods_and_every_attempt_is_recorded() {
    let _cluster = cluster_lock().read().await;
    shared_operator("access");
    apply(&enclave());
    let ns = TestNamespace::new("access-gate", true);
    apply(&policy(&ns.name, ENCLAVE, ""));
    grant_shells(&ns.name, "shells");
    wait_for_admission(&ns.name).await;
    running_pause_pod(&ns.name, "db").await;

    // mallory, bound to exec by RBAC but not approved: every way in is refused, with
    // the enclave and its approved staff named.
    let exec = |who: &[&str]| {
        attempt_as(
            who,
            &["exec", "-n", &ns.name, "db"],
            &["cat", "/etc/hostname"],
        )
    };
    let denied = exec(&["--as", "mallory"]);
    assert!(is_denial(&denied), "{denied}");
    assert!(
        denied.contains("mallory may not exec into pod access-gate/db")
            && denied.contains("DataEnclave access-eu admits only its approved staff (groups: enclave-sre; users: bob)"),
        "{denied}"
    );
    let attach = attempt_as(&["--as", "mallory"], &["attach", "-n", &ns.name, "db"], &[]);
    assert!(
        is_denial(&attach) && attach.contains("may not attach to"),
        "{attach}"
    );
    let forward = attempt_as(
        &["--as", "mallory"],
        &["port-forward", "-n", &ns.name, "pod/db", "18080:80"],
        &[],
    );
    assert!(
        is_denial(&forward) && forward.contains("may not port-forward to"),
        "{forward}"
    );
    let debug = attempt_as(
        &["--as", "mallory"],
        &[
            "debug",
            "-n",
            &ns.name,
            "db",
            "--image=registry.k8s.io/pause:3.10",
        ],
        &[],
    );
    assert!(
        is_denial(&debug) && debug.contains("may not add a debug container to"),
        "{debug}"
    );
    let containers = kubectl_ok(&[
        "get",
        "pod",
        "db",
        "-n",
        &ns.name,
        "-o",
        "jsonpath={.spec.ephemeralContainers}",
    ]);
    assert!(
        containers.is_empty(),
        "a refused debug container was added: {containers}"
    );

    // bob (approved by name) and a member of enclave-sre pass the gate. The API server
    // then dials the kwok node's kubelet, which does not exist: any error after the gate
    // is not a denial.
    let bob = exec(&["--as", "bob"]);
    assert!(!is_denial(&bob), "{bob}");
    let sre = exec(&["--as", "carol", "--as-group", "enclave-sre"]);
    assert!(!is_denial(&sre), "{sre}");
    // The same group name set as a user does not count.
    let pretender = exec(&["--as", "enclave-sre"]);
    assert!(is_denial(&pretender), "{pretender}");
    // An approved steward's `kubectl debug` passes the gate: the container is added.
    let debug = attempt_as(
        &["--as", "bob"],
        &[
            "debug",
            "-n",
            &ns.name,
            "db",
            "--image=registry.k8s.io/pause:3.10",
            "--container=bob-debug",
        ],
        &[],
    );
    assert!(!is_denial(&debug), "{debug}");
    let containers = kubectl_ok(&[
        "get",
        "pod",
        "db",
        "-n",
        &ns.name,
        "-o",
        "jsonpath={.spec.ephemeralContainers[*].name}",
    ]);
    assert_eq!(containers, "bob-debug", "bob's debug container is added");

    // Every attempt is in the decision log: who, how, which command.
    eventually(TIMEOUT, "every attempt recorded", || async {
        let records = decisions_about(Some(&ns.name), "db");
        let kinds: Vec<(String, String, String)> = records
            .iter()
            .filter(|r| r["kind"].as_str().is_some_and(|k| k.starts_with("Access")))
            .map(|r| {
                (
                    r["kind"].as_str().unwrap_or_default().to_string(),
                    r["fields"]["user"].as_str().unwrap_or_default().to_string(),
                    r["fields"]["subresource"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                )
            })
            .collect();
        let has = |kind: &str, user: &str, sub: &str| {
            kinds
                .iter()
                .any(|(k, u, s)| k == kind && u == user && s == sub)
        };
        let all = has("AccessDenied", "mallory", "exec")
            && has("AccessAllowed", "bob", "ephemeralcontainers")
            && has("AccessDenied", "mallory", "attach")
            && has("AccessDenied", "mallory", "portforward")
            && has("AccessDenied", "mallory", "ephemeralcontainers")
            && has("AccessDenied", "enclave-sre", "exec")
            && has("AccessAllowed", "bob", "exec")
            && has("AccessAllowed", "carol", "exec");
        if all {
            Ok(())
        } else {
            Err(format!("{kinds:?}"))
        }
    })
    .await;
    let records = decisions_about(Some(&ns.name), "db");
    let bob_exec = records
        .iter()
        .find(|r| r["kind"] == "AccessAllowed" && r["fields"]["user"] == "bob")
        .expect("bob's exec recorded");
    assert_eq!(
        bob_exec["fields"]["command"],
        serde_json::json!(["cat", "/etc/hostname"])
    );
    assert_eq!(bob_exec["fields"]["policy"], ns.name.as_str());
    assert!(
        bob_exec["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("approved user bob may exec into pod access-gate/db")),
        "{bob_exec}"
    );

    // And told on the pod, for `kubectl describe`.
    eventually(
        TIMEOUT,
        "AccessDenied and AccessAllowed Events on the pod",
        || async {
            let reasons = kubectl_ok(&[
                "get",
                "events",
                "-n",
                &ns.name,
                "--field-selector",
                "involvedObject.name=db",
                "-o",
                "jsonpath={range .items[*]}{.reason} {end}",
            ]);
            if reasons.contains("AccessDenied") && reasons.contains("AccessAllowed") {
                Ok(())
            } else {
                Err(reasons)
            }
        },
    )
    .await;
}

#[tokio::test]
async fn an_outsiders_binding_shows_in_the_enclave_status_and_goes_when_it_goes() {
    let _cluster = cluster_lock().read().await;
    shared_operator("access");
    apply(&enclave());
    let ns = TestNamespace::new("access-report", true);
    apply(&policy(&ns.name, ENCLAVE, ""));
    let exposures = || {
        kubectl_ok(&[
            "get",
            "dataenclave",
            ENCLAVE,
            "-o",
            "jsonpath={range .status.exposures[*]}{.binding} gives {.subject}: {.grants}{\"\\n\"}{end}",
        ])
    };
    grant_shells(&ns.name, "outsider-shells");
    let listed = eventually(
        TIMEOUT,
        "mallory's binding in the enclave status",
        || async {
            let listed = exposures();
            if listed.contains("RoleBinding access-report/outsider-shells gives User mallory") {
                Ok(listed)
            } else {
                Err(listed)
            }
        },
    )
    .await;
    // The approved staff in the same binding are not exposures.
    assert!(
        !listed.contains("User bob") && !listed.contains("Group enclave-sre"),
        "{listed}"
    );
    assert!(
        listed.lines().any(
            |l| l.starts_with("RoleBinding access-report/outsider-shells")
                && l.contains("Exec")
                && l.contains("Attach")
                && l.contains("PortForward")
                && l.contains("EphemeralContainers")
        ),
        "{listed}"
    );
    let condition = kubectl_ok(&[
        "get",
        "dataenclave",
        ENCLAVE,
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"AccessRestricted\")].status}/{.status.conditions[?(@.type==\"AccessRestricted\")].reason}",
    ]);
    assert_eq!(condition, "False/UnapprovedAccess");
    eventually(
        TIMEOUT,
        "an UnapprovedAccess Event on the enclave",
        || async {
            let notes = kubectl_ok(&[
                "get",
                "events",
                "-A",
                "--field-selector",
                &format!("reason=UnapprovedAccess,involvedObject.name={ENCLAVE}"),
                "-o",
                "jsonpath={range .items[*]}{.note}{.message}{\"\\n\"}{end}",
            ]);
            if notes.contains("RoleBinding access-report/outsider-shells gives User mallory") {
                Ok(())
            } else {
                Err(notes)
            }
        },
    )
    .await;

    kubectl_ok(&["delete", "rolebinding", "outsider-shells", "-n", &ns.name]);
    eventually(
        TIMEOUT,
        "mallory's binding gone from the status",
        || async {
            let listed = exposures();
            if listed.contains("access-report/outsider-shells") {
                Err(listed)
            } else {
                Ok(())
            }
        },
    )
    .await;
}

#[tokio::test]
async fn access_to_a_pod_outside_every_policy_never_reaches_the_operator() {
    let _cluster = cluster_lock().read().await;
    shared_operator("access");
    apply(&enclave());
    let ns = TestNamespace::new("access-outside", false);
    grant_shells(&ns.name, "shells");
    running_pause_pod(&ns.name, "web").await;
    let out = attempt_as(
        &["--as", "mallory"],
        &["exec", "-n", &ns.name, "web"],
        &["true"],
    );
    assert!(!is_denial(&out), "{out}");
    // An in-scope attempt made after it is recorded, so the log has caught up with it.
    let inside = TestNamespace::new("access-outside-probe", true);
    apply(&policy(&inside.name, ENCLAVE, ""));
    grant_shells(&inside.name, "shells");
    wait_for_admission(&inside.name).await;
    running_pause_pod(&inside.name, "db").await;
    let denied = attempt_as(
        &["--as", "mallory"],
        &["exec", "-n", &inside.name, "db"],
        &["true"],
    );
    assert!(is_denial(&denied), "{denied}");
    eventually(TIMEOUT, "the in-scope attempt recorded", || async {
        if decisions_about(Some(&inside.name), "db")
            .iter()
            .any(|r| r["kind"] == "AccessDenied")
        {
            Ok(())
        } else {
            Err("not yet")
        }
    })
    .await;
    let outside = decisions_about(Some(&ns.name), "web");
    assert!(
        outside.is_empty(),
        "out-of-scope access reached the operator: {outside:?}"
    );
}

/// The gate of a policy in Audit mode lets everyone through, records what Enforce would
/// have refused, and counts each attempt as audited: one more attempt, one more count.
#[tokio::test]
async fn the_gate_in_audit_mode_lets_through_records_and_counts_each_attempt() {
    let _cluster = cluster_lock().read().await;
    shared_operator("access");
    apply(&enclave());
    let ns = TestNamespace::new("access-audit", true);
    apply(&policy(&ns.name, ENCLAVE, "  enforcement: Audit\n"));
    grant_shells(&ns.name, "shells");
    running_pause_pod(&ns.name, "db").await;
    let exec = || {
        attempt_as(
            &["--as", "mallory"],
            &["exec", "-n", &ns.name, "db"],
            &["true"],
        )
    };
    let audited = || {
        decisions_about(Some(&ns.name), "db")
            .into_iter()
            .filter(|r| {
                r["kind"] == "AccessAllowed"
                    && r["fields"]["user"] == "mallory"
                    && r["fields"]["message"]
                        .as_str()
                        .is_some_and(|m| m.starts_with("(Audit) would deny: policy access-audit: mallory may not exec into pod access-audit/db"))
            })
            .count()
    };
    // The gate's webhook comes into place a moment after the policy: until the first
    // attempt is recorded, attempts are made again (none may be refused).
    eventually(TIMEOUT, "an audited attempt recorded", || async {
        let out = exec();
        assert!(!is_denial(&out), "Audit mode refuses nothing: {out}");
        if audited() > 0 { Ok(()) } else { Err(out) }
    })
    .await;
    const SAMPLE: &str = r#"enclave_operator_admission_access_attempts_total{decision="audited",subresource="exec"}"#;
    let before = shared_metric(SAMPLE).await;
    let records_before = audited();
    assert!(before >= 1.0, "the audited attempts are counted: {before}");
    let out = exec();
    assert!(!is_denial(&out), "{out}");
    eventually(TIMEOUT, "the next attempt counted and recorded", || async {
        let now = shared_metric(SAMPLE).await;
        if now == before + 1.0 && audited() == records_before + 1 {
            Ok(())
        } else {
            Err(format!(
                "count {before} -> {now}, records {records_before} -> {}",
                audited()
            ))
        }
    })
    .await;
}

/// Deletes a cluster-scoped RBAC pair when dropped, so that a failed test leaves no
/// cluster-wide grant behind to show in other tests' reports.
struct ClusterGrant(&'static str);

impl Drop for ClusterGrant {
    fn drop(&mut self) {
        if keep() {
            return;
        }
        for kind in ["clusterrolebinding", "clusterrole"] {
            let _ = kubectl(&["delete", kind, self.0, "--ignore-not-found"], None);
        }
    }
}

/// The monitoring grant of issue 20: a ClusterRoleBinding that gives user `prom` the
/// kubelet's API (`nodes/proxy`), through which exec, attach, run, port-forward and
/// container logs reach every pod on every node without pod admission seeing them. It
/// shows in the enclave's exposures as NodeProxy in all namespaces, and goes when it
/// goes.
#[tokio::test]
async fn a_cluster_wide_kubelet_grant_shows_in_the_enclave_status() {
    // A cluster-wide grant is in every enclave's report: no other test may read one
    // meanwhile.
    let _cluster = cluster_lock().write().await;
    shared_operator("access");
    apply(&enclave());
    let ns = TestNamespace::new("access-kubelet", true);
    apply(&policy(&ns.name, ENCLAVE, ""));
    const GRANT: &str = "access-e2e-prom-kubelet";
    let _grant = ClusterGrant(GRANT);
    apply(&format!(
        r#"apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {{name: {GRANT}}}
rules:
- apiGroups: [""]
  resources: [nodes, nodes/metrics, nodes/stats]
  verbs: [get, list, watch]
- apiGroups: [""]
  resources: [nodes/proxy]
  verbs: [get, create]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{name: {GRANT}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: {GRANT}}}
subjects:
- {{kind: User, name: prom, apiGroup: rbac.authorization.k8s.io}}
"#
    ));
    let exposures = || {
        kubectl_ok(&[
            "get",
            "dataenclave",
            ENCLAVE,
            "-o",
            "jsonpath={range .status.exposures[*]}{.binding} gives {.subject}: {.grants} in {.appliesTo} ({.holder}){\"\\n\"}{end}",
        ])
    };
    let binding = format!("ClusterRoleBinding {GRANT} gives User prom");
    let listed = eventually(
        TIMEOUT,
        "prom's kubelet grant in the enclave status",
        || async {
            let listed = exposures();
            if listed.contains(&binding) {
                Ok(listed)
            } else {
                Err(listed)
            }
        },
    )
    .await;
    let line = listed
        .lines()
        .find(|l| l.starts_with(&binding))
        .expect("listed");
    // nodes/metrics and nodes/stats add nothing; nodes/proxy is its own category.
    assert_eq!(
        line,
        format!("{binding}: [\"NodeProxy\"] in all namespaces (Unapproved)")
    );
    let condition = kubectl_ok(&[
        "get",
        "dataenclave",
        ENCLAVE,
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"AccessRestricted\")].status}",
    ]);
    assert_eq!(condition, "False");

    kubectl_ok(&["delete", "clusterrolebinding", GRANT]);
    eventually(TIMEOUT, "prom's grant gone from the status", || async {
        let listed = exposures();
        if listed.contains(&binding) {
            Err(listed)
        } else {
            Ok(())
        }
    })
    .await;
}
