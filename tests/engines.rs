//! The admission engine a policy gets, against what the API server really serves: an
//! API server started without the MutatingAdmissionPolicy API (switched off with
//! `--runtime-config`, as on clusters before 1.36) gets webhooks under `--admission
//! auto`, and a policy that insists on `Native` is `Ready=False EngineUnavailable`; an
//! enclave too large to compile into native policies is `Ready=False Unrepresentable`.
//!
//! These tests restart the local control plane's API server, so they run in a binary
//! of their own, one at a time, after the shared suite.

mod common;

use std::time::Duration;

use common::*;
use enclave_operator::crd::ResidencyPolicy;
use futures::StreamExt;
use k8s_openapi::api::core::v1::PersistentVolume;
use kube::Api;

const TIMEOUT: Duration = Duration::from_secs(60);
/// The API switched off, and the admission plugin that would otherwise wait for ever
/// to list it (the API server never became ready with the API off and the plugin on).
const MAP_OFF: &[&str] = &[
    "--runtime-config=admissionregistration.k8s.io/v1/mutatingadmissionpolicies=false",
    "--disable-admission-plugins=MutatingAdmissionPolicy",
];

/// Restarts the local control plane's API server with `flags` added to its command line
/// (none: as `make cluster-up` started it).
fn restart_apiserver(flags: &[&str]) {
    let cluster_dir = std::env::var("ENCLAVE_CLUSTER_DIR")
        .expect("ENCLAVE_CLUSTER_DIR names the local control plane to restart (make test sets it)");
    let status = std::process::Command::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tools/cluster/restart-apiserver.sh"
    ))
    .arg(&cluster_dir)
    .arg("0")
    .arg("--")
    .args(flags)
    .status()
    .expect("run restart-apiserver.sh");
    assert!(status.success(), "the API server did not come back");
}

/// Puts the API server back as `make cluster-up` started it, however the test ends.
struct RestoreApiServer;

impl Drop for RestoreApiServer {
    fn drop(&mut self) {
        restart_apiserver(&[]);
    }
}

/// The policy's Ready condition as (status, reason, message), once it has one.
async fn ready_condition(name: &str) -> (String, String, String) {
    let api: Api<ResidencyPolicy> = Api::all(client().await);
    eventually(
        TIMEOUT,
        &format!("policy {name} has a Ready condition"),
        || async {
            let policy = api.get_status(name).await.map_err(|e| e.to_string())?;
            policy
                .status
                .and_then(|s| s.conditions.into_iter().find(|c| c.type_ == "Ready"))
                .map(|c| (c.status, c.reason, c.message))
                .ok_or_else(|| "no Ready condition yet".to_string())
        },
    )
    .await
}

/// Waits until the Ready condition has `reason`; returns the message.
async fn ready_reason(name: &str, status: &str, reason: &str) -> String {
    eventually(
        TIMEOUT,
        &format!("policy {name} Ready={status} {reason}"),
        || async {
            let (s, r, message) = ready_condition(name).await;
            if s == status && r == reason {
                Ok(message)
            } else {
                Err(format!("Ready={s} {r}: {message}"))
            }
        },
    )
    .await
}

#[tokio::test]
async fn without_the_mutating_admission_policy_api_auto_uses_webhooks_and_native_is_unavailable() {
    // Put back however this ends, a failed restart included.
    let _restore = RestoreApiServer;
    restart_apiserver(MAP_OFF);
    let served = kubectl_ok(&[
        "api-resources",
        "--api-group=admissionregistration.k8s.io",
        "-o",
        "name",
    ]);
    assert!(
        !served.contains("mutatingadmissionpolicies"),
        "the API server still serves MutatingAdmissionPolicy: {served}"
    );

    let mut operator = Operator::start("engines-fallback", &["--admission", "auto"]);
    operator.ready().await;
    apply(&eu_enclave("engines-eu"));

    // auto: the webhook engine, which places and refuses as the native one would.
    let auto = TestNamespace::new("engines-auto", true);
    apply(&policy(&auto.name, "engines-eu", ""));
    wait_for_webhook(&auto.name).await;
    let message = ready_reason(&auto.name, "True", "Enforcing").await;
    assert!(
        message.contains("by the webhook admission engine"),
        "{message}"
    );
    assert!(
        kubectl_ok(&["get", "validatingwebhookconfigurations", "-o", "name"]).contains(
            &enclave_operator::admission::webhooks::configuration_name(&auto.name)
        ),
        "the policy's webhooks are in place"
    );

    // A policy that asks for the native engine by name cannot have it here, and says so.
    let native = TestNamespace::new("engines-native", true);
    apply(&policy(
        &native.name,
        "engines-eu",
        "  admission: {engine: Native}\n",
    ));
    let message = ready_reason(&native.name, "False", "EngineUnavailable").await;
    assert!(
        message.contains("does not serve MutatingAdmissionPolicy")
            && message.contains("use Webhook"),
        "{message}"
    );
    operator.stop();
}

/// An enclave with more volumes than fit into the facts a native policy carries (1 MB):
/// the policy is not Ready, with the reason and what to do, rather than half compiled.
#[tokio::test]
async fn an_enclave_too_large_for_native_policies_is_unrepresentable() {
    const CLASS: &str = "engines-big-ssd";
    const VOLUMES: usize = 4_000;
    let client = client().await;
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    let created = futures::stream::iter(0..VOLUMES)
        .map(|i| {
            let volumes = volumes.clone();
            async move {
                // Long names (240 of the 253 characters allowed) fill the facts sooner.
                let name = format!("engines-big-{i:05}-{}", "v".repeat(222));
                let volume: PersistentVolume = serde_json::from_value(serde_json::json!({
                    "metadata": {"name": name, "labels": {"enclave.dev/test": "engines-big"}},
                    "spec": {
                        "capacity": {"storage": "1Gi"},
                        "accessModes": ["ReadWriteOnce"],
                        "storageClassName": CLASS,
                        "hostPath": {"path": "/tmp/engines-big"},
                    },
                }))
                .expect("a volume");
                match volumes.create(&Default::default(), &volume).await {
                    Ok(_) => true,
                    Err(kube::Error::Api(e)) => e.code == 409,
                    Err(_) => false,
                }
            }
        })
        .buffer_unordered(32)
        .filter(|ok| futures::future::ready(*ok))
        .count()
        .await;
    assert_eq!(created, VOLUMES, "every volume created");
    /// The volumes go however the test ends.
    struct DeleteVolumes;
    impl Drop for DeleteVolumes {
        fn drop(&mut self) {
            let _ = kubectl(
                &[
                    "delete",
                    "pv",
                    "-l",
                    "enclave.dev/test=engines-big",
                    "--wait=false",
                ],
                None,
            );
        }
    }
    let _cleanup = DeleteVolumes;

    let mut operator = Operator::start("engines-big", &["--admission", "native"]);
    operator.ready().await;
    apply(&format!(
        "apiVersion: enclave.dev/v1alpha1\nkind: DataEnclave\nmetadata:\n  name: engines-big\nspec:\n  jurisdiction: EU\n  sites:\n  - name: dublin\n    nodeSelector: {{matchLabels: {{{SITE_LABEL}: dublin}}}}\n  storage: {{storageClassNames: [{CLASS}]}}\n"
    ));
    let ns = TestNamespace::new("engines-big", true);
    apply(&policy(&ns.name, "engines-big", ""));
    let message = ready_reason(&ns.name, "False", "Unrepresentable").await;
    assert!(
        message.contains("too many to compile into native admission policies")
            && message.contains(&format!("{VOLUMES} volumes"))
            && message.contains("use the webhook engine"),
        "{message}"
    );
    operator.stop();
    let _ = kubectl(
        &["delete", "dataenclave", "engines-big", "--wait=false"],
        None,
    );
}
