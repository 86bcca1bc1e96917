//! The native engine's decisions in the evidence (issue 22): the API server sends its
//! audit events to the shared operator's audit sink (tools/cluster/up.sh), so a pod the
//! native engine refuses or places appears in the decision log once, and in
//! `enclave-operator audit --decision-log`'s report; an event posted by anyone but the
//! API server (without its client certificate) is refused and never becomes a line.
//!
//! Needs the local control plane's audit webhook (hack/test-integration.sh exports
//! where the sink listens); elsewhere (kind, an external operator) the tests say so and
//! return.

use std::{path::PathBuf, process::Command, time::Duration};

use serde_json::{Value, json};

use crate::common::*;

const TIMEOUT: Duration = Duration::from_secs(60);
const ENCLAVE: &str = "auditsink-eu";

fn configured(test: &str) -> bool {
    if audit_sink_args().is_empty() || external_operator() {
        eprintln!(
            "{test}: the cluster under test sends no audit events to the operator; nothing to check"
        );
        return false;
    }
    true
}

/// The records of the shared decision log about `name` in `namespace`.
fn records_about(namespace: &str, name: &str) -> Vec<Value> {
    shared_decisions()
        .into_iter()
        .filter(|r| {
            r["fields"]["object"]["namespace"] == namespace && r["fields"]["object"]["name"] == name
        })
        .collect()
}

#[tokio::test]
async fn a_pod_refused_by_the_native_engine_is_in_the_decision_log_and_the_audit_report() {
    let _cluster = cluster_lock().read().await;
    shared_operator("auditsink");
    if !configured("native refusal in the evidence") {
        return;
    }
    apply(&eu_enclave(ENCLAVE));
    let ns = TestNamespace::new("auditsink-native", true);
    apply(&format!(
        "{}  admission: {{engine: Native}}\n",
        policy(&ns.name, ENCLAVE, "")
    ));
    wait_for_admission(&ns.name).await;

    // Refused: pinned to a node outside the enclave (for real, not a dry run: a dry run
    // changes nothing and is not evidence).
    let pinned = "pinned-to-virginia";
    let refusal = kubectl_stdin_err(
        &ns.name,
        &json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": pinned},
            "spec": {"nodeName": "virginia-a", "containers": [{"name": "c", "image": "busybox"}]}}),
    );
    assert!(
        refusal.contains("ValidatingAdmissionPolicy") && refusal.contains("denied request"),
        "the native engine refuses the pinned pod: {refusal}"
    );
    // Placed: an ordinary pod gets the enclave ANDed in by the API server.
    let placed = "placed-by-the-api-server";
    apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {placed}, namespace: {}}}\nspec:\n  containers: [{{name: c, image: busybox}}]\n",
        ns.name
    ));

    let (denied, placement) = eventually(
        TIMEOUT,
        "the native decisions in the decision log",
        || async {
            let denied = records_about(&ns.name, pinned);
            let placement = records_about(&ns.name, placed);
            let denied_native = denied
                .iter()
                .any(|r| r["kind"] == "PodDenied" && r["fields"]["engine"] == "native");
            let placed_native = placement
                .iter()
                .any(|r| r["kind"] == "PodPlaced" && r["fields"]["engine"] == "native");
            if denied_native && placed_native {
                Ok((denied, placement))
            } else {
                Err(format!("refusal: {denied:?}; placement: {placement:?}"))
            }
        },
    )
    .await;
    // Once each, with the policy, the user and the API server's audit ID.
    assert_eq!(denied.len(), 1, "one line for one refusal: {denied:?}");
    let record = &denied[0];
    assert_eq!(record["fields"]["policy"], ns.name.as_str());
    assert_eq!(
        record["fields"]["admissionPolicy"],
        format!("enclave-check.{}", ns.name)
    );
    assert_eq!(record["fields"]["user"], "kubernetes-admin");
    assert!(
        record["fields"]["auditID"]
            .as_str()
            .is_some_and(|id| !id.is_empty())
    );
    assert!(
        record["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("virginia-a")),
        "{record}"
    );
    let placements: Vec<&Value> = placement
        .iter()
        .filter(|r| r["kind"] == "PodPlaced")
        .collect();
    assert_eq!(
        placements.len(),
        1,
        "one line for one placement: {placement:?}"
    );

    // (verify-log needs no test of its own here: these are records of the operator's
    // own chain, counted by kind like every other; the shared chain resumes from
    // checkpoints a long suite prunes, so this file alone is not verifiable.)
    // The operator says it receives the events.
    assert_eq!(
        shared_metric("enclave_operator_auditsink_configured").await,
        1.0
    );
    assert!(
        shared_metric("enclave_operator_auditsink_events_total{result=\"recorded\"}").await >= 2.0
    );
    assert!(shared_metric("enclave_operator_auditsink_last_event_timestamp_seconds").await > 0.0);

    // The audit report lists the refusal under the native engine.
    let json_path = dir().join("auditsink-report.json");
    let markdown_path = dir().join("auditsink-report.md");
    let out = Command::new(env!("CARGO_BIN_EXE_enclave-operator"))
        .arg("audit")
        .args(["--namespace", OPERATOR_NAMESPACE, "--policy", &ns.name])
        .arg("--decision-log")
        .arg(decision_log("shared"))
        .arg("--json")
        .arg(&json_path)
        .arg("--markdown")
        .arg(&markdown_path)
        .output()
        .expect("the audit runs");
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "a report is written: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&json_path).expect("the JSON report"))
            .expect("JSON");
    let refusals = &report["refusals"];
    assert!(
        refusals["byEngine"]["native"]
            .as_u64()
            .is_some_and(|n| n >= 1),
        "{refusals}"
    );
    let listed = refusals["refused"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["object"] == format!("Pod {}/{pinned}", ns.name))
        .collect::<Vec<_>>();
    assert_eq!(listed.len(), 1, "{refusals}");
    assert_eq!(listed[0]["engine"], "native");
    let markdown = std::fs::read_to_string(&markdown_path).expect("the Markdown report");
    assert!(
        markdown.contains("## Refusals in the decision log")
            && markdown.contains(&format!("`Pod {}/{pinned}`", ns.name)),
        "{markdown}"
    );
}

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
}

/// `kubectl create -f -` of `pod` in `namespace`, expected to fail: its stderr.
fn kubectl_stdin_err(namespace: &str, pod: &Value) -> String {
    let out = kubectl(
        &["create", "-n", namespace, "-f", "-"],
        Some(&pod.to_string()),
    );
    assert!(
        !out.status.success(),
        "refused: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// One audit event, as the API server would send it, refusing pod `name` in `namespace`.
fn forged(namespace: &str, name: &str) -> String {
    json!({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": [{
        "auditID": format!("forged-{name}"), "stage": "ResponseComplete", "verb": "create",
        "requestURI": format!("/api/v1/namespaces/{namespace}/pods"),
        "user": {"username": "mallory"},
        "objectRef": {"resource": "pods", "namespace": namespace, "name": name},
        "responseStatus": {"code": 403, "message": format!("pods \"{name}\" is forbidden: ValidatingAdmissionPolicy 'enclave-check.{namespace}' with binding 'enclave-check.{namespace}' denied request: forged")},
    }]})
    .to_string()
}

/// POSTs `body` to the sink with curl, with the client certificate `cert` (a name in
/// the cluster's pki directory) or none: whether the sink answered 200.
fn post(body: &str, cert: Option<&str>) -> bool {
    let dir = PathBuf::from(std::env::var("ENCLAVE_CLUSTER_DIR").expect("the local control plane"));
    let pki = dir.join("pki");
    let addr = std::env::var("ENCLAVE_TEST_AUDIT_SINK_ADDR").expect("the sink's address");
    let mut command = Command::new("curl");
    command
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "10",
        ])
        .arg("--cacert")
        .arg(pki.join("ca.crt"));
    if let Some(cert) = cert {
        command
            .arg("--cert")
            .arg(pki.join(format!("{cert}.crt")))
            .arg("--key")
            .arg(pki.join(format!("{cert}.key")));
    }
    let out = command
        .args([
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            body,
        ])
        .arg(format!("https://{addr}/audit-events"))
        .output()
        .expect("curl runs");
    String::from_utf8_lossy(&out.stdout).trim() == "200"
}

#[tokio::test]
async fn an_event_without_the_api_servers_client_certificate_is_refused() {
    let _cluster = cluster_lock().read().await;
    shared_operator("auditsink");
    if !configured("forged audit events") {
        return;
    }
    let namespace = "auditsink-forged";
    // Nobody but the API server: no certificate, and not a certificate of the cluster's
    // own CA either (the admin's is valid for the API server, not for the sink).
    assert!(
        !post(&forged(namespace, "no-certificate"), None),
        "a post without a client certificate is refused"
    );
    assert!(
        !post(&forged(namespace, "cluster-admin"), Some("admin")),
        "a certificate the audit CA did not sign is refused"
    );
    // The API server's own certificate is accepted: once its line is in the log, the
    // refused posts would be too had they been taken.
    assert!(
        post(&forged(namespace, "api-server"), Some("audit-client")),
        "the API server's certificate is accepted"
    );
    eventually(
        TIMEOUT,
        "the accepted event in the decision log",
        || async {
            if records_about(namespace, "api-server").is_empty() {
                Err("not yet")
            } else {
                Ok(())
            }
        },
    )
    .await;
    // A batch the API server sends again is recorded once.
    assert!(post(&forged(namespace, "api-server"), Some("audit-client")));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        records_about(namespace, "api-server").len(),
        1,
        "an event sent twice is one line"
    );
    for refused in ["no-certificate", "cluster-admin"] {
        assert!(
            records_about(namespace, refused).is_empty(),
            "the event posted as {refused} is not in the decision log"
        );
    }
}
