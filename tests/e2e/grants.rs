//! Access grants against the local control plane, with real kubectl and impersonated
//! users: with no standing access, an approved, unexpired AccessGrant is the only way
//! to exec into or read the logs of an enclave pod; nobody asks or approves in someone
//! else's name nor approves their own grant; a grant cannot be widened; revocation and
//! expiry end it within seconds; repeated denials lock a subject out until an approver
//! clears it; break-glass works at once and stays unreviewed until acknowledged.
//!
//! RBAC gives every user here what they try (exec, logs, creating grants or approvals):
//! the grants are what stands between them and the pod.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{workloads::running_pause_pod, *};

const TIMEOUT: Duration = Duration::from_secs(60);
const REQUESTER_ROLE: &str = "enclave-operator-access-requester";
const APPROVER_ROLE: &str = "enclave-operator-access-approver";

/// An enclave without standing access whose approvers are carol and the group
/// `grant-approvers`; `extra` is appended to `spec.access`.
fn enclave(name: &str, extra: &str) -> String {
    format!(
        "{}  access: {{approvedUsers: [], approvedGroups: [], approverUsers: [carol], approverGroups: [grant-approvers], maxGrantMinutes: 60, breakGlassMinutes: 5{extra}}}\n",
        eu_enclave(name)
    )
}

/// exec and logs on pods in `namespace`, and the requester and approver roles
/// cluster-wide, for `users`; and the right to update grants, so that what refuses a
/// widened grant is the grant's immutability, not RBAC.
fn rbac(namespace: &str, users: &[&str]) {
    let subjects: String = users
        .iter()
        .map(|u| format!("- {{kind: User, name: \"{u}\", apiGroup: rbac.authorization.k8s.io}}\n"))
        .collect();
    apply(&format!(
        r#"apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: shells, namespace: {namespace}}}
rules:
- apiGroups: [""]
  resources: [pods, pods/log]
  verbs: [get, list]
- apiGroups: [""]
  resources: [pods/exec, pods/attach]
  verbs: [create, get]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: shells, namespace: {namespace}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: shells}}
subjects:
{subjects}---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{name: {namespace}-requesters}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: {REQUESTER_ROLE}}}
subjects:
{subjects}---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {{name: grants-e2e-grant-editor}}
rules:
- apiGroups: [enclave.dev]
  resources: [accessgrants]
  verbs: [update, patch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{name: {namespace}-grant-editors}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: grants-e2e-grant-editor}}
subjects:
{subjects}---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{name: {namespace}-approvers}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: {APPROVER_ROLE}}}
subjects:
{subjects}"#
    ));
}

/// An AccessGrant manifest.
fn grant(name: &str, enclave: &str, requester: &str, spec: &str) -> String {
    format!(
        "apiVersion: enclave.dev/v1alpha1\nkind: AccessGrant\nmetadata: {{name: {name}}}\nspec: {{enclave: {enclave}, requester: {requester}, reason: \"e2e: INC-25\", {spec}}}\n"
    )
}

/// Creates `yaml` as `who` (kubectl create, so that a refusal is an error to read).
fn create_as(who: &[&str], yaml: &str) -> (bool, String) {
    let mut args = vec!["create", "-f", "-"];
    args.extend_from_slice(who);
    kubectl_outcome(&args, Some(yaml))
}

fn uid(kind: &str, name: &str) -> String {
    kubectl_ok(&["get", kind, name, "-o", "jsonpath={.metadata.uid}"])
}

/// An AccessApproval of grant `grant` by `approver` (`groups` claimed), created as
/// `who`.
fn decide(
    who: &[&str],
    name: &str,
    grant: &str,
    decision: &str,
    approver: &str,
    groups: &str,
) -> (bool, String) {
    let uid = uid("accessgrant", grant);
    create_as(
        who,
        &format!(
            "apiVersion: enclave.dev/v1alpha1\nkind: AccessApproval\nmetadata: {{name: {name}}}\nspec: {{grant: {{name: {grant}, uid: \"{uid}\"}}, decision: {decision}, approver: {approver}, approverGroups: [{groups}]}}\n"
        ),
    )
}

/// Deletes what an earlier run left (grants and approvals are cluster-scoped).
fn forget(kind: &str, names: &[&str]) {
    let mut args = vec!["delete", kind, "--ignore-not-found", "--wait=true"];
    args.extend_from_slice(names);
    let _ = kubectl(&args, None);
}

fn state(grant: &str) -> String {
    kubectl_ok(&[
        "get",
        "accessgrant",
        grant,
        "-o",
        "jsonpath={.status.state}|{.status.message}",
    ])
}

async fn state_becomes(grant: &str, want: &str) -> String {
    eventually(TIMEOUT, &format!("grant {grant} {want}"), || async {
        let now = state(grant);
        if now.starts_with(&format!("{want}|")) {
            Ok(now)
        } else {
            Err(now)
        }
    })
    .await
}

fn is_denial(output: &str) -> bool {
    output.contains("denied the request")
}

fn exec(user: &str, namespace: &str, pod: &str) -> String {
    attempt_as(
        &["--as", user],
        &["exec", "-n", namespace, pod],
        &["cat", "/etc/hostname"],
    )
}

fn logs(user: &str, namespace: &str, pod: &str) -> String {
    attempt_as(&["--as", user], &["logs", "-n", namespace, pod], &[])
}

/// The authorizer refused a read (the API server passes it on as Forbidden).
fn refused_by_authorizer(output: &str) -> bool {
    output.contains("forbidden") && output.contains("enclave-operator")
}

/// The shared operator's records of `kind` about an object.
fn records(kind: &str, namespace: Option<&str>, name: &str) -> Vec<Value> {
    decisions_about(namespace, name)
        .into_iter()
        .filter(|r| r["kind"] == kind)
        .collect()
}

async fn enclave_namespace(enclave_yaml: &str, name: &str, users: &[&str]) -> TestNamespace {
    apply(enclave_yaml);
    let ns = TestNamespace::new(name, true);
    let enclave = enclave_yaml
        .lines()
        .find_map(|l| l.trim().strip_prefix("name: "))
        .expect("enclave name")
        .to_string();
    apply(&policy(&ns.name, &enclave, ""));
    rbac(&ns.name, users);
    wait_for_admission(&ns.name).await;
    ns
}

#[tokio::test]
async fn a_requester_cannot_ask_in_anothers_name_approve_their_own_grant_or_widen_it() {
    let _cluster = cluster_lock().read().await;
    shared_operator("grants");
    forget(
        "accessapproval",
        &["own-1-self", "own-1-forged", "own-1-carol"],
    );
    forget("accessgrant", &["own-1", "own-forged"]);
    // alice is herself an approver of the enclave, by group: four eyes must still hold.
    let ns = enclave_namespace(
        &enclave("grants-own", ""),
        "grants-own",
        &["alice", "carol"],
    )
    .await;
    running_pause_pod(&ns.name, "db").await;
    let alice = ["--as", "alice", "--as-group", "grant-approvers"];

    // Asking in someone else's name is refused by the API server.
    let (ok, out) = create_as(
        &alice,
        &grant(
            "own-forged",
            "grants-own",
            "mallory",
            &format!(
                "verbs: [Exec], namespaces: [{}], durationMinutes: 10",
                ns.name
            ),
        ),
    );
    assert!(
        !ok && out.contains("spec.requester must be the user creating the grant"),
        "{out}"
    );

    let (ok, out) = create_as(
        &alice,
        &grant(
            "own-1",
            "grants-own",
            "alice",
            &format!(
                "verbs: [Exec], namespaces: [{}], pods: [db], durationMinutes: 10",
                ns.name
            ),
        ),
    );
    assert!(ok, "{out}");
    state_becomes("own-1", "Pending").await;

    // alice approves her own grant: the API server accepts the object (she is who she
    // says), the operator does not count it.
    let (ok, out) = decide(
        &alice,
        "own-1-self",
        "own-1",
        "Approve",
        "alice",
        "grant-approvers",
    );
    assert!(ok, "{out}");
    // ...nor may she write an approval in carol's name.
    let (ok, out) = decide(&alice, "own-1-forged", "own-1", "Approve", "carol", "");
    assert!(
        !ok && out.contains("spec.approver must be the user creating the approval"),
        "{out}"
    );
    eventually(TIMEOUT, "the own approval named as not counted", || async {
        let now = state("own-1");
        if now.starts_with("Pending|")
            && now.contains("the requester cannot decide on their own grant")
        {
            Ok(())
        } else {
            Err(now)
        }
    })
    .await;
    let refused = exec("alice", &ns.name, "db");
    assert!(is_denial(&refused), "{refused}");
    // alice never had access to the enclave: her first attempt is an anomaly of its
    // own (NeverApproved), raised at once and never a lockout.
    eventually(TIMEOUT, "a NeverApproved alarm for alice", || async {
        let anomalies = kubectl_ok(&[
            "get",
            "accessanomalies",
            "-o",
            "jsonpath={range .items[?(@.spec.enclave==\"grants-own\")]}{.spec.user} {.spec.lockout} {.spec.reasons}{\"\\n\"}{end}",
        ]);
        if anomalies
            .lines()
            .any(|l| l.starts_with("alice false") && l.contains("NeverApproved"))
        {
            Ok(())
        } else {
            Err(anomalies)
        }
    })
    .await;

    // carol approves: then alice may not widen what was approved.
    let (ok, out) = decide(
        &["--as", "carol"],
        "own-1-carol",
        "own-1",
        "Approve",
        "carol",
        "",
    );
    assert!(ok, "{out}");
    state_becomes("own-1", "Active").await;
    // `kubectl get` shows who approved it and what is left of it.
    let table = kubectl_ok(&["get", "accessgrant", "own-1"]);
    let mut lines = table.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let row: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let column = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .and_then(|i| row.get(i).copied())
            .unwrap_or_default()
    };
    assert_eq!(column("APPROVED-BY"), "carol", "{table}");
    let left = column("TIME-LEFT");
    assert!(
        left.ends_with('m')
            && left
                .trim_end_matches('m')
                .chars()
                .any(|c| c.is_ascii_digit()),
        "{table}"
    );
    let widen = attempt_as(
        &alice,
        &[
            "patch",
            "accessgrant",
            "own-1",
            "--type=merge",
            "-p",
            r#"{"spec":{"pods":[],"verbs":["Exec","Attach"]}}"#,
        ],
        &[],
    );
    assert!(widen.contains("spec is immutable"), "{widen}");
    let pods = kubectl_ok(&["get", "accessgrant", "own-1", "-o", "jsonpath={.spec.pods}"]);
    assert_eq!(pods, r#"["db"]"#);
    let approved_by = kubectl_ok(&[
        "get",
        "accessgrant",
        "own-1",
        "-o",
        "jsonpath={.status.approvedBy}",
    ]);
    assert_eq!(approved_by, "carol");
}

#[tokio::test]
async fn an_approved_grant_lets_exec_and_logs_through_for_its_scope_and_time_only() {
    let _cluster = cluster_lock().read().await;
    shared_operator("grants");
    forget("accessapproval", &["use-1-ok", "use-2-ok", "use-2-revoke"]);
    forget("accessgrant", &["use-1", "use-2"]);
    let ns = enclave_namespace(&enclave("grants-use", ""), "grants-use", &["dora", "carol"]).await;
    running_pause_pod(&ns.name, "db").await;
    running_pause_pod(&ns.name, "other").await;

    // No standing access: dora is refused every way.
    let refused = exec("dora", &ns.name, "db");
    assert!(
        is_denial(&refused)
            && refused.contains("admits only its approved staff (groups: none; users: none) and holders of an active AccessGrant"),
        "{refused}"
    );
    let authorizer = authorizer_configured();
    if authorizer {
        let refused = logs("dora", &ns.name, "db");
        assert!(refused_by_authorizer(&refused), "{refused}");
    }

    // A one-minute grant for exec and logs on db, approved by carol.
    let (ok, out) = create_as(
        &["--as", "dora"],
        &grant(
            "use-1",
            "grants-use",
            "dora",
            &format!(
                "verbs: [Exec, Logs], namespaces: [{}], pods: [db], durationMinutes: 1",
                ns.name
            ),
        ),
    );
    assert!(ok, "{out}");
    let (ok, out) = decide(
        &["--as", "carol"],
        "use-1-ok",
        "use-1",
        "Approve",
        "carol",
        "",
    );
    assert!(ok, "{out}");
    let approved = Instant::now();
    state_becomes("use-1", "Active").await;

    let passed = exec("dora", &ns.name, "db");
    assert!(!is_denial(&passed), "the grant lets exec through: {passed}");
    if authorizer {
        // The API server keeps the earlier refusal for up to 10 s (unauthorizedTTL).
        eventually(TIMEOUT, "logs through the grant", || async {
            let out = logs("dora", &ns.name, "db");
            if refused_by_authorizer(&out) {
                Err(out)
            } else {
                Ok(())
            }
        })
        .await;
    }
    // Outside its scope: another pod, another verb.
    let other = exec("dora", &ns.name, "other");
    assert!(is_denial(&other), "{other}");
    let attach = attempt_as(&["--as", "dora"], &["attach", "-n", &ns.name, "db"], &[]);
    assert!(is_denial(&attach), "{attach}");

    // A second grant, revoked: refused again within seconds.
    let (ok, out) = create_as(
        &["--as", "dora"],
        &grant(
            "use-2",
            "grants-use",
            "dora",
            &format!(
                "verbs: [Exec], namespaces: [{}], pods: [other], durationMinutes: 30",
                ns.name
            ),
        ),
    );
    assert!(ok, "{out}");
    let (ok, out) = decide(
        &["--as", "carol"],
        "use-2-ok",
        "use-2",
        "Approve",
        "carol",
        "",
    );
    assert!(ok, "{out}");
    eventually(TIMEOUT, "exec on other through use-2", || async {
        let out = exec("dora", &ns.name, "other");
        if is_denial(&out) { Err(out) } else { Ok(()) }
    })
    .await;
    let (ok, out) = decide(
        &["--as", "carol"],
        "use-2-revoke",
        "use-2",
        "Revoke",
        "carol",
        "",
    );
    assert!(ok, "{out}");
    let revoked = Instant::now();
    eventually(
        Duration::from_secs(10),
        "refused after revocation",
        || async {
            let out = exec("dora", &ns.name, "other");
            if is_denial(&out) { Ok(()) } else { Err(out) }
        },
    )
    .await;
    eprintln!(
        "refused {:.1} s after the revocation",
        revoked.elapsed().as_secs_f64()
    );
    state_becomes("use-2", "Revoked").await;

    // Expiry: one minute after approval, exec and logs are refused again.
    let expires = Duration::from_secs(61).saturating_sub(approved.elapsed());
    tokio::time::sleep(expires).await;
    let expired = eventually(Duration::from_secs(10), "refused after expiry", || async {
        let out = exec("dora", &ns.name, "db");
        if is_denial(&out) { Ok(out) } else { Err(out) }
    })
    .await;
    eprintln!(
        "refused {:.1} s after approval (grant of 60 s)",
        approved.elapsed().as_secs_f64()
    );
    assert!(
        expired.contains("holders of an active AccessGrant"),
        "{expired}"
    );
    if authorizer {
        eventually(
            Duration::from_secs(15),
            "logs refused after expiry",
            || async {
                let out = logs("dora", &ns.name, "db");
                if refused_by_authorizer(&out) {
                    Ok(())
                } else {
                    Err(out)
                }
            },
        )
        .await;
    }
    state_becomes("use-1", "Expired").await;

    // The evidence: every step of the grants, and the access that used them.
    eventually(TIMEOUT, "grant steps and uses recorded", || async {
        let steps: Vec<String> = ["GrantRequested", "GrantApproved", "GrantExpired"]
            .iter()
            .filter(|k| records(k, None, "use-1").is_empty())
            .chain(
                ["GrantRevoked"]
                    .iter()
                    .filter(|k| records(k, None, "use-2").is_empty()),
            )
            .map(|k| k.to_string())
            .collect();
        let used = records("AccessAllowed", Some(&ns.name), "db")
            .iter()
            .any(|r| r["fields"]["user"] == "dora" && r["fields"]["grants"][0] == "use-1");
        if steps.is_empty() && used {
            Ok(())
        } else {
            Err(format!(
                "missing {steps:?}, exec under use-1 recorded: {used}"
            ))
        }
    })
    .await;
}

#[tokio::test]
async fn a_lockout_after_repeated_denials_blocks_even_an_approved_grant_until_cleared() {
    let _cluster = cluster_lock().read().await;
    shared_operator("grants");
    forget(
        "accessapproval",
        &["lock-1-ok", "lock-eve-clear", "lock-carol-clear"],
    );
    forget("accessgrant", &["lock-1"]);
    // Anomalies an earlier run raised on this enclave (their names start with it).
    let earlier = kubectl_ok(&["get", "accessanomalies", "-o", "name"]);
    let earlier: Vec<&str> = earlier
        .lines()
        .filter(|n| n.starts_with("accessanomaly.enclave.dev/grants-lock-"))
        .collect();
    if !earlier.is_empty() {
        let mut args = vec!["delete", "--ignore-not-found"];
        args.extend(earlier);
        let _ = kubectl(&args, None);
    }
    let ns = enclave_namespace(
        &enclave(
            "grants-lock",
            ", anomalies: {deniedAttempts: 3, windowSeconds: 120, lockout: true}",
        ),
        "grants-lock",
        &["eve", "carol"],
    )
    .await;
    running_pause_pod(&ns.name, "db").await;
    running_pause_pod(&ns.name, "vault").await;
    let (ok, out) = create_as(
        &["--as", "eve"],
        &grant(
            "lock-1",
            "grants-lock",
            "eve",
            &format!(
                "verbs: [Exec], namespaces: [{}], pods: [db], durationMinutes: 30",
                ns.name
            ),
        ),
    );
    assert!(ok, "{out}");
    let (ok, out) = decide(
        &["--as", "carol"],
        "lock-1-ok",
        "lock-1",
        "Approve",
        "carol",
        "",
    );
    assert!(ok, "{out}");
    eventually(TIMEOUT, "exec through lock-1", || async {
        let out = exec("eve", &ns.name, "db");
        if is_denial(&out) { Err(out) } else { Ok(()) }
    })
    .await;

    // Three attempts outside the grant: the alarm, and the lockout.
    for _ in 0..3 {
        let out = exec("eve", &ns.name, "vault");
        assert!(is_denial(&out), "{out}");
    }
    let locked = eventually(TIMEOUT, "eve locked out on db too", || async {
        let out = exec("eve", &ns.name, "db");
        if is_denial(&out) { Ok(out) } else { Err(out) }
    })
    .await;
    assert!(
        locked.contains("eve is locked out of DataEnclave grants-lock"),
        "{locked}"
    );
    let anomaly = kubectl_ok(&[
        "get",
        "accessanomalies",
        "-o",
        "jsonpath={range .items[?(@.spec.enclave==\"grants-lock\")]}{.spec.user} {.spec.lockout} {.spec.reasons}{\"\\n\"}{end}",
    ]);
    assert!(
        anomaly.contains("eve true") && anomaly.contains("OutsideGrant"),
        "{anomaly}"
    );
    eventually(TIMEOUT, "SuspiciousAccess names eve", || async {
        let c = kubectl_ok(&[
            "get",
            "dataenclave",
            "grants-lock",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"SuspiciousAccess\")].message}",
        ]);
        if c.contains("eve") { Ok(()) } else { Err(c) }
    })
    .await;
    let alarms = shared_metric("enclave_operator_admission_suspicious_access_total{reason=\"OutsideGrant\",lockout=\"true\"}").await;
    assert!(alarms >= 1.0, "{alarms}");

    // eve cannot clear her own lockout; carol can.
    let clear = |who: &str| {
        format!(
            "apiVersion: enclave.dev/v1alpha1\nkind: AccessApproval\nmetadata: {{name: lock-{who}-clear}}\nspec: {{decision: ClearLockout, lockout: {{enclave: grants-lock, user: eve}}, approver: {who}}}\n"
        )
    };
    let (ok, out) = create_as(&["--as", "eve"], &clear("eve"));
    assert!(ok, "{out}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let still = exec("eve", &ns.name, "db");
    assert!(still.contains("is locked out"), "{still}");
    let (ok, out) = create_as(&["--as", "carol"], &clear("carol"));
    assert!(ok, "{out}");
    eventually(TIMEOUT, "eve back in through her grant", || async {
        let out = exec("eve", &ns.name, "db");
        if is_denial(&out) { Err(out) } else { Ok(()) }
    })
    .await;
    forget("accessapproval", &["lock-carol-clear", "lock-eve-clear"]);
}

/// The audit report, as an administrator, in JSON: (exit code, report).
fn audit_report() -> (i32, Value) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_enclave-operator"))
        .args(["audit", "--namespace", "enclave-system", "--json", "-"])
        .output()
        .expect("run enclave-operator audit");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "the audit prints JSON ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), report)
}

fn audited_grant(report: &Value, name: &str) -> Value {
    report["access"]["grants"]
        .as_array()
        .and_then(|grants| grants.iter().find(|g| g["name"] == name))
        .cloned()
        .unwrap_or(Value::Null)
}

#[tokio::test]
async fn break_glass_opens_at_once_and_stays_a_finding_until_another_approver_acknowledges_it() {
    let _cluster = cluster_lock().read().await;
    shared_operator("grants");
    forget("accessapproval", &["glass-1-ack", "glass-1-own-ack"]);
    forget("accessgrant", &["glass-1", "glass-mallory"]);
    let ns = enclave_namespace(
        &enclave("grants-glass", ""),
        "grants-glass",
        &["carol", "dave", "mallory"],
    )
    .await;
    running_pause_pod(&ns.name, "db").await;

    // Someone who is not an approver gets nothing from break-glass.
    let (ok, out) = create_as(
        &["--as", "mallory"],
        &grant(
            "glass-mallory",
            "grants-glass",
            "mallory",
            &format!(
                "verbs: [Exec], namespaces: [{}], durationMinutes: 5, breakGlass: true",
                ns.name
            ),
        ),
    );
    assert!(ok, "{out}");
    state_becomes("glass-mallory", "Invalid").await;
    let refused = exec("mallory", &ns.name, "db");
    assert!(is_denial(&refused), "{refused}");

    // carol, an approver, breaks the glass: in at once, without a second person.
    let (ok, out) = create_as(
        &["--as", "carol"],
        &grant(
            "glass-1",
            "grants-glass",
            "carol",
            &format!(
                "verbs: [Exec], namespaces: [{}], durationMinutes: 30, breakGlass: true",
                ns.name
            ),
        ),
    );
    assert!(ok, "{out}");
    eventually(TIMEOUT, "carol in through break-glass", || async {
        let out = exec("carol", &ns.name, "db");
        if is_denial(&out) { Err(out) } else { Ok(()) }
    })
    .await;
    // Bounded by the enclave's breakGlassMinutes (5), not the 30 asked for.
    state_becomes("glass-1", "Active").await;
    let created: jiff::Timestamp = kubectl_ok(&[
        "get",
        "accessgrant",
        "glass-1",
        "-o",
        "jsonpath={.metadata.creationTimestamp}",
    ])
    .parse()
    .expect("a timestamp");
    let expires: jiff::Timestamp = kubectl_ok(&[
        "get",
        "accessgrant",
        "glass-1",
        "-o",
        "jsonpath={.status.expiresAt}",
    ])
    .parse()
    .expect("a timestamp");
    assert_eq!(expires.duration_since(created).as_secs(), 300);
    eventually(TIMEOUT, "BreakGlassActive on the enclave", || async {
        let c = kubectl_ok(&[
            "get",
            "dataenclave",
            "grants-glass",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"BreakGlassActive\")].message}",
        ]);
        if c.contains("glass-1 by carol") {
            Ok(())
        } else {
            Err(c)
        }
    })
    .await;
    eventually(TIMEOUT, "a Warning Event for the break-glass", || async {
        let events = kubectl_ok(&[
            "get",
            "events",
            "-A",
            "--field-selector",
            "reason=BreakGlass,type=Warning",
            "-o",
            "name",
        ]);
        if events.is_empty() {
            Err("none")
        } else {
            Ok(())
        }
    })
    .await;

    // The audit lists it as unreviewed: a finding.
    let (code, report) = audit_report();
    let listed = audited_grant(&report, "glass-1");
    assert_eq!(listed["breakGlass"], true, "{listed}");
    assert!(
        listed["finding"]
            .as_str()
            .is_some_and(|f| f.contains("not acknowledged")),
        "{listed}"
    );
    assert_eq!(code, 1, "findings make the exit code 1");

    // carol cannot acknowledge her own; dave (an approver by group) can.
    let (ok, out) = decide(
        &["--as", "carol"],
        "glass-1-own-ack",
        "glass-1",
        "Acknowledge",
        "carol",
        "",
    );
    assert!(ok, "{out}");
    let (ok, out) = decide(
        &["--as", "dave", "--as-group", "grant-approvers"],
        "glass-1-ack",
        "glass-1",
        "Acknowledge",
        "dave",
        "grant-approvers",
    );
    assert!(ok, "{out}");
    eventually(TIMEOUT, "acknowledged by dave", || async {
        let by = kubectl_ok(&[
            "get",
            "accessgrant",
            "glass-1",
            "-o",
            "jsonpath={.status.reviewedBy}",
        ]);
        if by == "dave" { Ok(()) } else { Err(by) }
    })
    .await;
    let (_, report) = audit_report();
    let listed = audited_grant(&report, "glass-1");
    assert_eq!(listed["reviewedBy"], "dave", "{listed}");
    assert!(listed["finding"].is_null(), "{listed}");
}
