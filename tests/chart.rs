//! The Helm chart: lints, renders, and every object it renders is accepted by the real
//! API server (server-side dry run), in both certificate modes.

mod common;

use std::process::Command;

use common::*;

fn helm(args: &[&str]) -> String {
    let out = Command::new("helm")
        .args(args)
        .output()
        .expect("helm runs (make tools builds it and puts it on PATH)");
    assert!(
        out.status.success(),
        "helm {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/enclave-operator");

#[test]
fn chart_lints_and_renders_objects_the_api_server_accepts() {
    helm(&["lint", CHART]);
    let _ = kubectl(&["create", "namespace", "enclave-system"], None);
    let rendered = helm(&[
        "template",
        "enclave",
        CHART,
        "--namespace",
        "enclave-system",
    ]);
    for kind in [
        "kind: Deployment",
        "kind: ClusterRole",
        "kind: ServiceAccount",
        "kind: Service",
    ] {
        assert!(rendered.contains(kind), "{kind} missing from the chart");
    }
    assert!(rendered.contains("--webhook-service=enclave-system/enclave-operator:443"));
    assert!(
        rendered.contains("runAsNonRoot: true")
            && rendered.contains("readOnlyRootFilesystem: true")
    );
    let out = kubectl(&["apply", "--dry-run=server", "-f", "-"], Some(&rendered));
    assert!(
        out.status.success(),
        "the API server rejected the chart: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The chart's CRDs are the generated ones.
    let crds =
        std::fs::read_to_string(format!("{CHART}/crds/enclave.dev.yaml")).expect("chart CRDs");
    assert_eq!(
        crds,
        enclave_operator::crd::all_yaml().expect("CRDs serialize")
    );
}

#[test]
fn cert_manager_mode_mounts_the_secret() {
    let rendered = helm(&[
        "template",
        "enclave",
        CHART,
        "--namespace",
        "enclave-system",
        "--set",
        "webhook.certManager.enabled=true",
        "--set",
        "webhook.certManager.issuerRef.name=ca",
        "--set",
        "webhook.certManager.issuerRef.kind=ClusterIssuer",
    ]);
    assert!(rendered.contains("kind: Certificate"));
    assert!(rendered.contains("--webhook-tls-dir=/tls"));
    assert!(rendered.contains("secretName: enclave-operator-webhook-tls"));
}
