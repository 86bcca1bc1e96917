//! `enclave-operator audit` against the local control plane, run with the token of a
//! ServiceAccount bound to nothing but the chart's auditor ClusterRole and Role: get
//! and list suffice. A compliant enclave namespace is green (exit 0 when only it is
//! audited); a namespace with one planted violation of each kind — a pod outside, a
//! claim on a class outside, a NetworkPolicy that opens a path out, an exec grant to an
//! outsider — shows every one of them (exit 1); without the Role on the checkpoints
//! ConfigMap the report says the chain could not be read, and is still written. A
//! VolumeMigration of the red claim, its status written as an admin would (the status
//! subresource), is listed in the report's moves and named by the claim's finding.
//!
//! Other tests run in the same cluster at the same time with their own policies: every
//! assertion is about this test's policies, which the audit is asked for by name.

use std::{path::PathBuf, process::Command, time::Duration};

use serde_json::Value;

use crate::common::*;

const TIMEOUT: Duration = Duration::from_secs(90);
const ENCLAVE: &str = "audit-eu";
const GREEN: &str = "audit-green";
const RED: &str = "audit-red";
/// The chart's names (charts/enclave-operator/templates/auditor-rbac.yaml).
const AUDITOR_ROLE: &str = "enclave-operator-auditor";

/// A ServiceAccount bound to the chart's auditor ClusterRole (and, with `checkpoints`,
/// its Role on the checkpoints ConfigMap), and a kubeconfig with its token. The
/// bindings are cluster-wide or in the operator's namespace, so they are removed when
/// this is dropped; the ServiceAccount goes with its namespace.
struct Auditor {
    kubeconfig: PathBuf,
    binding: String,
}

impl Auditor {
    fn new(namespace: &str, name: &str, checkpoints: bool) -> Self {
        Self::bound(namespace, name, AUDITOR_ROLE, checkpoints)
    }

    /// Bound to a copy of the auditor ClusterRole without its rule on VolumeMigrations
    /// (the ClusterRole is named like the binding, and removed with it).
    fn without_moves(namespace: &str, name: &str) -> Self {
        let role_name = format!("{namespace}-{name}");
        let mut role: Value = serde_json::from_str(&kubectl_ok(&[
            "get",
            "clusterrole",
            AUDITOR_ROLE,
            "-o",
            "json",
        ]))
        .expect("the auditor ClusterRole parses");
        let rules: Vec<Value> = role["rules"]
            .as_array()
            .expect("rules")
            .iter()
            .filter(|r| !r["resources"].to_string().contains("volumemigrations"))
            .cloned()
            .collect();
        role = serde_json::json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": role_name},
            "rules": rules,
        });
        apply(&role.to_string());
        Self::bound(namespace, name, &role_name, true)
    }

    fn bound(namespace: &str, name: &str, role: &str, checkpoints: bool) -> Self {
        let binding = format!("{namespace}-{name}");
        let subject =
            format!("subjects: [{{kind: ServiceAccount, name: {name}, namespace: {namespace}}}]");
        let mut yaml = format!(
            "apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: {name}, namespace: {namespace}}}\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {{name: {binding}}}\nroleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: {role}}}\n{subject}\n"
        );
        if checkpoints {
            yaml.push_str(&format!(
                "---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {{name: {binding}, namespace: {OPERATOR_NAMESPACE}}}\nroleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: {AUDITOR_ROLE}}}\n{subject}\n"
            ));
        }
        apply(&yaml);
        let kubeconfig =
            PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{binding}.kubeconfig"));
        service_account_kubeconfig(namespace, name, &kubeconfig);
        Self {
            kubeconfig,
            binding,
        }
    }

    /// `kubectl auth can-i` as the auditor.
    fn can(&self, args: &[&str]) -> bool {
        let out = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["auth", "can-i"])
            .args(args)
            .output()
            .expect("kubectl runs");
        String::from_utf8_lossy(&out.stdout).trim() == "yes"
    }

    /// Runs the audit of `policies` as the auditor: (exit code, JSON report, Markdown).
    fn audit(&self, policies: &[&str]) -> (i32, Value, String) {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        let json = dir.join(format!("{}.json", self.binding));
        let markdown = dir.join(format!("{}.md", self.binding));
        let mut command = Command::new(env!("CARGO_BIN_EXE_enclave-operator"));
        command
            .arg("audit")
            .args(["--namespace", OPERATOR_NAMESPACE])
            .arg("--json")
            .arg(&json)
            .arg("--markdown")
            .arg(&markdown)
            // Small pages, so that continue tokens are exercised here too.
            .args(["--page-size", "7"])
            .env("KUBECONFIG", &self.kubeconfig);
        for policy in policies {
            command.args(["--policy", policy]);
        }
        let out = command.output().expect("run enclave-operator audit");
        let code = out.status.code().unwrap_or(-1);
        assert!(
            code == 0 || code == 1,
            "the audit wrote no report (exit {code}): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report = serde_json::from_str(&std::fs::read_to_string(&json).expect("JSON report"))
            .expect("the JSON report parses");
        let text = std::fs::read_to_string(&markdown).expect("Markdown report");
        (code, report, text)
    }
}

impl Drop for Auditor {
    fn drop(&mut self) {
        let _ = kubectl(
            &[
                "delete",
                "clusterrolebinding",
                &self.binding,
                "--ignore-not-found",
            ],
            None,
        );
        // The copy of the ClusterRole `without_moves` made, if it made one.
        let _ = kubectl(
            &["delete", "clusterrole", &self.binding, "--ignore-not-found"],
            None,
        );
        let _ = kubectl(
            &[
                "delete",
                "rolebinding",
                &self.binding,
                "-n",
                OPERATOR_NAMESPACE,
                "--ignore-not-found",
            ],
            None,
        );
    }
}

fn policy_of<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["policies"]
        .as_array()
        .and_then(|all| all.iter().find(|p| p["name"] == name))
        .unwrap_or_else(|| panic!("policy {name} missing from {report:#}"))
}

fn verdict(policy: &Value, check: &str) -> String {
    policy["checks"][check]["verdict"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// The compliant namespace: a Deployment placed by admission, and a pod whose claim is
/// bound to a Dublin volume of an enclave class.
async fn plant_compliant(namespace: &str) {
    kubectl_ok_stdin(
        &["apply", "-n", namespace, "-f", "-"],
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  replicas: 2\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      containers: [{name: app, image: registry.k8s.io/pause:3.10}]\n",
    );
    apply(&format!(
        "apiVersion: v1\nkind: PersistentVolume\nmetadata:\n  name: {namespace}-data\nspec:\n  capacity: {{storage: 1Gi}}\n  accessModes: [ReadWriteOnce]\n  storageClassName: eu-dublin-ssd\n  hostPath: {{path: /tmp/{namespace}-data}}\n  claimRef: {{namespace: {namespace}, name: data}}\n  nodeAffinity: {{required: {{nodeSelectorTerms: [{{matchExpressions: [{{key: {SITE_LABEL}, operator: In, values: [dublin]}}]}}]}}}}\n"
    ));
    // Admission admits a claim naming a volume once the operator knows the volume is
    // the enclave's (the native engine's compiled facts follow the volumes).
    let claim = format!(
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: data}}\nspec:\n  accessModes: [ReadWriteOnce]\n  storageClassName: eu-dublin-ssd\n  volumeName: {namespace}-data\n  resources: {{requests: {{storage: 1Gi}}}}\n"
    );
    eventually(
        TIMEOUT,
        "the claim on the enclave's volume admitted",
        || async {
            let out = kubectl(&["apply", "-n", namespace, "-f", "-"], Some(&claim));
            if out.status.success() {
                Ok(())
            } else {
                Err(String::from_utf8_lossy(&out.stderr).into_owned())
            }
        },
    )
    .await;
    kubectl_ok_stdin(
        &["apply", "-n", namespace, "-f", "-"],
        "apiVersion: v1\nkind: Pod\nmetadata: {name: db}\nspec:\n  containers: [{name: app, image: registry.k8s.io/pause:3.10}]\n  volumes: [{name: data, persistentVolumeClaim: {claimName: data}}]\n",
    );
}

/// A move of the red claim `scratch`, rolled back: a status the operator could have
/// written, set through the status subresource. Terminal, so an operator running moves
/// leaves it as it is, and not a finding, so the green audit stays green.
async fn plant_rolled_back_move(namespace: &str) {
    kubectl_ok_stdin(
        &["apply", "-n", namespace, "-f", "-"],
        "apiVersion: enclave.dev/v1alpha1\nkind: VolumeMigration\nmetadata: {name: scratch-move}\nspec: {claimName: scratch}\n",
    );
    // Read, then replace: a custom resource's update needs the resourceVersion, and a
    // controller may write the status in between (then read again).
    eventually(TIMEOUT, "the move's status written", || async {
        let mut object: Value = serde_json::from_str(&kubectl_ok(&[
            "get",
            "volumemigration",
            "scratch-move",
            "-n",
            namespace,
            "-o",
            "json",
        ]))
        .map_err(|e| e.to_string())?;
        object["status"] = serde_json::json!({
            "phase": "RolledBack",
            "sourceVolume": "pv-us-scratch",
            "rolledBackFrom": "Copying",
            "rollbackReason": "the transfer was cut",
            "times": {"rolledBack": "2027-01-01T00:00:00Z"},
        });
        let out = kubectl(
            &["replace", "--subresource=status", "-f", "-"],
            Some(&object.to_string()),
        );
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    })
    .await;
}

/// One violation of each kind, under an Audit policy (which refuses and moves nothing,
/// so that they stay).
fn plant_violations(namespace: &str) {
    kubectl_ok_stdin(
        &["apply", "-n", namespace, "-f", "-"],
        r#"apiVersion: v1
kind: Pod
metadata: {name: stray}
spec:
  nodeName: virginia-a
  containers: [{name: app, image: registry.k8s.io/pause:3.10}]
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: scratch}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: us-east-ssd
  resources: {requests: {storage: 1Gi}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-all-egress}
spec:
  podSelector: {}
  policyTypes: [Egress]
  egress: [{}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: shell}
rules:
- apiGroups: [""]
  resources: [pods/exec]
  verbs: [create]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: mallory-shell}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: shell}
subjects:
- {kind: User, name: mallory, apiGroup: rbac.authorization.k8s.io}
"#,
    );
}

#[tokio::test]
async fn the_audit_with_read_only_rights_is_green_for_a_compliant_enclave_and_names_each_violation()
{
    let _cluster = cluster_lock().read().await;
    shared_operator("audit");
    apply(&eu_enclave(ENCLAVE));
    let home = TestNamespace::new("audit-auditors", false);
    let green = TestNamespace::new(GREEN, true);
    let red = TestNamespace::new(RED, true);
    apply(&policy(&green.name, ENCLAVE, ""));
    apply(&policy(&red.name, ENCLAVE, "  enforcement: Audit\n"));
    wait_for_admission(&green.name).await;
    // A volume left by an earlier run that failed would be bound to a claim gone since.
    let _ = kubectl(
        &[
            "delete",
            "persistentvolume",
            &format!("{GREEN}-data"),
            "--ignore-not-found",
        ],
        None,
    );
    plant_compliant(&green.name).await;
    plant_violations(&red.name);
    plant_rolled_back_move(&red.name).await;

    let auditor = Auditor::new(&home.name, "auditor", true);
    // Read-only, and not even all reads.
    assert!(auditor.can(&["list", "pods", "-A"]));
    assert!(auditor.can(&["list", "volumemigrations.enclave.dev", "-A"]));
    for forbidden in [
        &["watch", "pods", "-A"][..],
        &["get", "secrets", "-A"],
        &["create", "pods", "-n", GREEN],
        &["create", "pods/exec", "-n", GREEN],
        &["list", "configmaps", "-n", OPERATOR_NAMESPACE],
    ] {
        assert!(!auditor.can(forbidden), "the auditor may {forbidden:?}");
    }

    // The operator fences the green namespace and the pods start: wait until the audit
    // sees it all green (and the red findings, which are there at once).
    let (code, report, markdown) = eventually(TIMEOUT, "the audit to settle", || async {
        let (code, report, markdown) = auditor.audit(&[GREEN, RED]);
        let green = policy_of(&report, GREEN);
        let red = policy_of(&report, RED);
        let running = green["pods"]
            .as_array()
            .map(|pods| pods.iter().filter(|p| p["phase"] == "Running").count())
            .unwrap_or_default();
        if green["verdict"] == "Pass"
            && running == 3
            && ["placement", "volumes", "network", "access"]
                .iter()
                .all(|check| verdict(red, check) == "Fail")
        {
            Ok((code, report, markdown))
        } else {
            Err(format!(
                "{GREEN}: {} ({running} running) {}; {RED}: {}",
                green["verdict"], green["checks"], red["checks"]
            ))
        }
    })
    .await;
    assert_eq!(code, 1, "findings exit 1");

    // Green: every pod on an enclave node, the claim on a Dublin volume, fenced.
    let green_report = policy_of(&report, GREEN);
    for pod in green_report["pods"].as_array().expect("pods") {
        let site = pod["site"].as_str().unwrap_or_default();
        assert!(site == "dublin" || site == "norway", "{pod:#}");
        assert_eq!(pod["placement"]["verdict"], "Pass", "{pod:#}");
        assert_eq!(pod["network"], "Pass", "{pod:#}");
    }
    let db = green_report["pods"]
        .as_array()
        .and_then(|pods| pods.iter().find(|p| p["name"] == "db"))
        .expect("pod db listed");
    assert_eq!(db["site"], "dublin", "its volume holds it to Dublin");
    assert_eq!(db["volumes"][0]["volume"], format!("{GREEN}-data"));
    assert_eq!(db["volumes"][0]["storageClass"], "eu-dublin-ssd");
    assert_eq!(db["volumes"][0]["verdict"], "Pass");

    // Red: each planted violation, by name.
    let red_report = policy_of(&report, RED);
    let stray = red_report["pods"]
        .as_array()
        .and_then(|pods| pods.iter().find(|p| p["name"] == "stray"))
        .expect("pod stray listed");
    assert_eq!(stray["node"], "virginia-a");
    assert_eq!(stray["site"], Value::Null);
    assert_eq!(stray["placement"]["verdict"], "Fail");
    assert!(
        red_report["volumeFindings"]
            .as_array()
            .expect("volume findings")
            .iter()
            .any(|v| v["name"] == "scratch" && v["reason"] == "ClaimOutsideEnclave"),
        "{:#}",
        red_report["volumeFindings"]
    );
    assert!(
        red_report["networkGroups"]
            .as_array()
            .expect("network groups")
            .iter()
            .any(|g| g["verdict"] == "Fail"
                && g["leaks"]
                    .to_string()
                    .contains(&format!("{RED}/allow-all-egress"))),
        "{:#}",
        red_report["networkGroups"]
    );
    assert!(
        red_report["exposures"]
            .as_array()
            .expect("exposures")
            .iter()
            .any(
                |e| e["binding"] == format!("RoleBinding {RED}/mallory-shell")
                    && e["subject"] == "User mallory"
                    && e["builtIn"] == false
            ),
        "{:#}",
        red_report["exposures"]
    );
    // The move: listed with its group and reason, and named by the claim's finding.
    let rolled_back = report["moves"]["moves"]
        .as_array()
        .and_then(|moves| {
            moves
                .iter()
                .find(|m| m["namespace"] == RED && m["name"] == "scratch-move")
        })
        .unwrap_or_else(|| panic!("the move missing from {:#}", report["moves"]));
    assert_eq!(rolled_back["group"], "RolledBack", "{rolled_back:#}");
    assert_eq!(rolled_back["rollbackReason"], "the transfer was cut");
    assert_eq!(
        rolled_back["finding"],
        Value::Null,
        "a rollback is no finding"
    );
    assert!(
        red_report["volumeFindings"]
            .as_array()
            .expect("volume findings")
            .iter()
            .any(|v| v["name"] == "scratch"
                && v["move"] == serde_json::json!({"name": "scratch-move", "phase": "RolledBack"})),
        "{:#}",
        red_report["volumeFindings"]
    );
    assert!(
        markdown.contains("— move: `scratch-move` (RolledBack)"),
        "{markdown}"
    );
    assert!(markdown.contains("## Volume moves"), "{markdown}");
    // The chain heads the shared operator checkpoints.
    assert_eq!(report["chain"]["state"], "read", "{:#}", report["chain"]);
    assert!(
        !report["chain"]["heads"]
            .as_array()
            .expect("heads")
            .is_empty()
    );
    // For people: the summary table first, then a section per policy.
    assert!(
        markdown.contains(&format!(
            "| `{GREEN}` | `{ENCLAVE}` | Enforce | 3 | pass | pass | pass | pass | 0 |"
        )),
        "{markdown}"
    );
    assert!(markdown.contains(&format!("| `{RED}/stray` | virginia-a | **outside** |")));
    assert!(markdown.contains(&format!("## Policy `{RED}`: **FAIL**")));

    // The compliant policy alone: all green, exit 0.
    let (code, report, markdown) = auditor.audit(&[GREEN]);
    assert_eq!(code, 0, "{markdown}");
    assert_eq!(report["summary"]["allGreen"], true);
    assert!(markdown.contains("- Result: **all green**"));

    // Without the Role on the checkpoints ConfigMap: the report says so, and is written.
    let blind = Auditor::new(&home.name, "no-checkpoints", false);
    let (code, report, markdown) = blind.audit(&[GREEN]);
    assert_eq!(code, 0, "an unreadable chain is not a finding: {markdown}");
    assert_eq!(
        report["chain"]["state"], "unreadable",
        "{:#}",
        report["chain"]
    );
    assert!(markdown.contains("enclave-operator-checkpoints` could not be read"));

    // Without the right to list VolumeMigrations: the report is still written, and the
    // list that failed is an unreadable entry, a finding.
    let no_moves = Auditor::without_moves(&home.name, "no-moves");
    assert!(!no_moves.can(&["list", "volumemigrations.enclave.dev", "-A"]));
    let (code, report, markdown) = no_moves.audit(&[GREEN]);
    assert_eq!(
        code, 1,
        "moves that cannot be read are a finding: {markdown}"
    );
    assert_eq!(policy_of(&report, GREEN)["verdict"], "Pass");
    let unreadable = report["unreadable"]
        .as_array()
        .and_then(|all| all.iter().find(|u| u["kind"] == "VolumeMigration"))
        .unwrap_or_else(|| {
            panic!(
                "no unreadable VolumeMigration in {:#}",
                report["unreadable"]
            )
        });
    assert_eq!(unreadable["name"], "(list)");
    assert!(
        unreadable["error"]
            .as_str()
            .is_some_and(|e| e.contains("(403)")),
        "{unreadable:#}"
    );
    assert!(
        markdown.contains("- VolumeMigration `(list)`: cannot list VolumeMigration"),
        "{markdown}"
    );

    if !keep() {
        let _ = kubectl(
            &[
                "delete",
                "persistentvolume",
                &format!("{GREEN}-data"),
                "--wait=false",
                "--ignore-not-found",
            ],
            None,
        );
    }
}
