//! The Helm chart: lints, renders, and every object it renders is accepted by the real
//! API server (server-side dry run), in both certificate modes; its values schema
//! rejects bad values by name; and installed, upgraded and uninstalled for real, with an
//! operator running under its ServiceAccount, it leaves nothing that blocks the cluster.

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

/// The chart rendered as release `enclave-operator` in enclave-system, each of `sets`
/// a `--set` value.
fn template(sets: &[&str]) -> String {
    let mut args = vec![
        "template",
        "enclave-operator",
        CHART,
        "--namespace",
        "enclave-system",
    ];
    for set in sets {
        args.extend(["--set", set]);
    }
    helm(&args)
}

#[test]
fn chart_lints_and_renders_objects_the_api_server_accepts() {
    helm(&["lint", CHART]);
    let _ = kubectl(&["create", "namespace", "enclave-system"], None);
    let rendered = template(&[]);
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
    let rendered = template(&[
        "webhook.certManager.enabled=true",
        "webhook.certManager.issuerRef.name=ca",
        "webhook.certManager.issuerRef.kind=ClusterIssuer",
    ]);
    assert!(rendered.contains("kind: Certificate"));
    assert!(rendered.contains("--webhook-tls-dir=/tls"));
    assert!(rendered.contains("secretName: enclave-operator-webhook-tls"));
}

/// helm that must fail: its combined output.
fn helm_fails(args: &[&str]) -> String {
    let out = Command::new("helm").args(args).output().expect("helm runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !out.status.success(),
        "helm {args:?} should have failed: {text}"
    );
    text
}

#[test]
fn bad_values_are_rejected_naming_the_field_and_what_is_allowed() {
    for (set, expected) in [
        ("replicaCount=-1", "/replicaCount"),
        ("logFormat=xml", "'text', 'json'"),
        ("admission.engine=cel", "'auto', 'native', 'webhook'"),
        ("image.pullPolicy=Sometimes", "/image/pullPolicy"),
        ("webhook.port=70000", "/webhook/port"),
        ("replicaCont=2", "replicaCont"),
        (
            "leaderElection.leaseDurationSeconds=1",
            "/leaderElection/leaseDurationSeconds",
        ),
    ] {
        let out = helm_fails(&["template", "enclave-operator", CHART, "--set", set]);
        assert!(
            out.contains(expected),
            "--set {set}: expected {expected:?} in {out}"
        );
    }
}

#[test]
fn defaults_run_two_replicas_that_elect_a_leader_and_survive_a_drain() {
    let rendered = template(&[]);
    assert!(rendered.contains("replicas: 2"));
    assert!(rendered.contains("kind: PodDisruptionBudget") && rendered.contains("minAvailable: 1"));
    assert!(rendered.contains("topologySpreadConstraints:"));
    assert!(rendered.contains("--lease-name=enclave-operator"));
    assert!(rendered.contains("--owner-cluster-role=enclave-operator"));
    assert!(rendered.contains("resources: [leases]"));
    assert!(rendered.contains("terminationGracePeriodSeconds: 10"));
    // One replica: no PDB (it would block every drain). The optional ServiceMonitor.
    let single = template(&["replicaCount=1"]);
    assert!(!single.contains("kind: PodDisruptionBudget"));
    assert!(!rendered.contains("kind: ServiceMonitor"));
    let monitored = template(&["metrics.serviceMonitor.enabled=true"]);
    assert!(monitored.contains("kind: ServiceMonitor") && monitored.contains("port: metrics"));
    // A second installation does not collide with the first on cluster-scoped names.
    let other = helm(&["template", "canary", CHART]);
    assert!(
        other.contains("name: canary-enclave-operator")
            && !other.contains("\n  name: enclave-operator\n")
    );
    // NOTES tell the next steps.
    let notes = helm(&[
        "install",
        "enclave-operator",
        CHART,
        "--dry-run=client",
        "--namespace",
        "enclave-system",
    ]);
    assert!(
        notes.contains("Next steps") && notes.contains("kubectl get residencypolicy"),
        "{notes}"
    );
}

const RELEASE: &str = "uninstall-test";
const RELEASE_NAMESPACE: &str = "enclave-uninstall";
/// What the chart names a release's objects.
const INSTALLATION: &str = "uninstall-test-enclave-operator";

fn webhook_configurations_of(policy: &str) -> String {
    let name = enclave_operator::admission::webhooks::configuration_name(policy);
    kubectl_ok(&[
        "get",
        "mutatingwebhookconfigurations,validatingwebhookconfigurations",
        "--field-selector",
        &format!("metadata.name={name}"),
        "-o",
        "name",
    ])
}

/// The whole life of an installation, as a user lives it: install, an operator running
/// under the release's ServiceAccount enforcing a policy with webhooks, upgrade, then
/// uninstall while the operator is still running (the race in which other operators
/// recreate their webhooks after uninstall), and then an in-scope pod can be created.
#[tokio::test]
async fn install_upgrade_and_uninstall_leave_nothing_that_blocks_pods() {
    life_of_an_installation("webhook").await;
}

/// The same life under the native engine: uninstalling removes every webhook (the
/// access gate's too), an in-scope pod is still created (placed by the native policy,
/// which needs no operator and stays in force while its ResidencyPolicy exists), and
/// deleting the ResidencyPolicy removes its native policies and bindings.
#[tokio::test]
async fn uninstall_under_the_native_engine_leaves_only_what_the_policy_owns() {
    life_of_an_installation("native").await;
}

/// The native admission objects compiled for `policy`, by kind and name.
fn native_objects_of(policy: &str) -> Vec<String> {
    kubectl_ok(&[
        "get",
        "mutatingadmissionpolicies,mutatingadmissionpolicybindings,validatingadmissionpolicies,validatingadmissionpolicybindings",
        "-o",
        r#"jsonpath={range .items[*]}{.kind}/{.metadata.name} {.metadata.annotations.enclave\.dev/policy-name}{"\n"}{end}"#,
    ])
    .lines()
    .filter_map(|line| line.split_once(' '))
    .filter(|(_, owner)| *owner == policy)
    .map(|(object, _)| object.to_string())
    .collect()
}

async fn life_of_an_installation(engine: &str) {
    let _ = helm_best_effort(&[
        "uninstall",
        RELEASE,
        "--namespace",
        RELEASE_NAMESPACE,
        "--wait",
    ]);
    // An earlier life (the other engine's test) deletes the namespace without waiting.
    let _ = kubectl(
        &[
            "delete",
            "namespace",
            RELEASE_NAMESPACE,
            "--ignore-not-found",
            "--wait=true",
            "--timeout=120s",
        ],
        None,
    );
    helm(&[
        "install",
        RELEASE,
        CHART,
        "--namespace",
        RELEASE_NAMESPACE,
        "--create-namespace",
        "--set",
        "replicaCount=0",
        "--wait",
    ]);
    let kubeconfig =
        std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("uninstall-test.kubeconfig");
    service_account_kubeconfig(RELEASE_NAMESPACE, INSTALLATION, &kubeconfig);
    let secret = format!("{INSTALLATION}-webhook-ca");
    let mut operator = Operator::start_as(
        "uninstall",
        &[
            "--admission",
            engine,
            "--namespace",
            RELEASE_NAMESPACE,
            "--owner-cluster-role",
            INSTALLATION,
            "--webhook-secret",
            &secret,
            "--lease-name",
            INSTALLATION,
        ],
        Some(&kubeconfig),
    );
    operator.ready().await;
    apply(&eu_enclave("uninstall-eu"));
    let ns = TestNamespace::new("uninstall-scope", true);
    apply(&policy(&ns.name, "uninstall-eu", ""));
    wait_for_webhook(&ns.name).await;
    if engine == "native" {
        let native = native_objects_of(&ns.name);
        assert!(
            native
                .iter()
                .any(|o| o.starts_with("MutatingAdmissionPolicy/")),
            "the policy is compiled into native admission: {native:?}"
        );
    }
    let owner = kubectl_ok(&[
        "get",
        "validatingwebhookconfiguration",
        &enclave_operator::admission::webhooks::configuration_name(&ns.name),
        "-o",
        "jsonpath={.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].name}",
    ]);
    assert_eq!(owner, format!("ClusterRole/{INSTALLATION}"));

    // Upgrade in place: the operator keeps its rights and keeps enforcing.
    helm(&[
        "upgrade",
        RELEASE,
        CHART,
        "--namespace",
        RELEASE_NAMESPACE,
        "--set",
        "replicaCount=0",
        "--set",
        "logLevel=debug",
        "--wait",
    ]);
    let revision = kubectl_ok(&[
        "get",
        "secret",
        "-n",
        RELEASE_NAMESPACE,
        "-l",
        &format!("owner=helm,name={RELEASE}"),
        "-o",
        "name",
    ]);
    assert_eq!(
        revision.lines().count(),
        2,
        "two release revisions: {revision}"
    );
    wait_for_webhook(&ns.name).await;

    // Uninstall with the operator still running: what it writes after its ClusterRole
    // is gone names a dead owner and is collected again.
    helm(&[
        "uninstall",
        RELEASE,
        "--namespace",
        RELEASE_NAMESPACE,
        "--wait",
    ]);
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    operator.stop();
    eventually(
        std::time::Duration::from_secs(60),
        "no webhook configuration left",
        || async {
            let left = webhook_configurations_of(&ns.name);
            if left.trim().is_empty() {
                Ok(())
            } else {
                Err(left)
            }
        },
    )
    .await;
    // And an in-scope pod is created: nothing the operator made blocks it.
    let created = kubectl(
        &[
            "run",
            "after-uninstall",
            "-n",
            &ns.name,
            "--image=registry.k8s.io/pause:3.10",
        ],
        None,
    );
    assert!(
        created.status.success(),
        "an in-scope pod after uninstall: {}",
        String::from_utf8_lossy(&created.stderr)
    );
    if engine == "native" {
        let placed = kubectl_ok(&[
            "get",
            "pod",
            "after-uninstall",
            "-n",
            &ns.name,
            "-o",
            "jsonpath={.spec.affinity.nodeAffinity}",
        ]);
        assert!(
            placed.contains("enclave-site"),
            "the native policy still places in-scope pods: {placed}"
        );
    }
    let _ = kubectl(
        &["delete", "residencypolicy", &ns.name, "--ignore-not-found"],
        None,
    );
    eventually(
        std::time::Duration::from_secs(60),
        "no native admission object of the deleted policy left",
        || async {
            let left = native_objects_of(&ns.name);
            if left.is_empty() { Ok(()) } else { Err(left) }
        },
    )
    .await;
    let _ = kubectl(
        &["delete", "namespace", RELEASE_NAMESPACE, "--wait=false"],
        None,
    );
}

/// helm whose failure is fine (cleaning up what an earlier run left).
fn helm_best_effort(args: &[&str]) -> bool {
    Command::new("helm")
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}
