//! Ready means in force: a policy applied, then at once and in a loop a pod pinned to a
//! node outside the enclave and a claim on US storage are created (server-side dry runs,
//! which admission judges exactly as real requests). Before the policy says Ready either
//! may be admitted; once it says Ready for its generation, not one is.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::{Api, api::PostParams};
use serde::de::DeserializeOwned;

use super::{ENCLAVE, claim, pod};
use crate::common::*;

/// How long requests go on after Ready was first seen.
const AFTER_READY: Duration = Duration::from_secs(3);

/// Admitted (`true`) or refused, by a dry-run create of `yaml`.
async fn admitted<K>(api: &Api<K>, yaml: &str) -> bool
where
    K: Clone + std::fmt::Debug + serde::Serialize + DeserializeOwned,
{
    let object: K = serde_yaml::from_str(yaml).expect("fixture");
    let params = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    match api.create(&params, &object).await {
        Ok(_) => true,
        Err(kube::Error::Api(status)) if status.code == 403 => false,
        Err(error) => panic!("the API server did not judge the request: {error}"),
    }
}

#[tokio::test]
async fn nothing_is_admitted_once_a_new_policy_says_ready() {
    let _cluster = cluster_lock().read().await;
    shared_operator("admission");
    apply(&eu_enclave(ENCLAVE));
    // A name of its own per run: a policy of an earlier run, deleted, may still have
    // admission objects the garbage collector has not removed yet.
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() % 1_000_000)
        .unwrap_or_default();
    let ns = TestNamespace::new(&format!("adm-ready-{stamp}"), true);
    let client = client().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns.name);
    let pinned = pod("pinned", "  nodeName: virginia-a\n");
    let us_claim = claim("us", "  storageClassName: us-east-ssd\n");

    apply(&policy(&ns.name, ENCLAVE, ""));
    let started = Instant::now();
    let (mut before_ready, mut after_ready) = (0, 0);
    let mut ready_at = None;
    loop {
        // Ready first, then the requests: Ready seen means in force for what follows.
        let ready = ready_at.is_some() || policy_ready(&ns.name).is_ok();
        if ready && ready_at.is_none() {
            ready_at = Some(Instant::now());
        }
        let pod_admitted = admitted(&pods, &pinned).await;
        let claim_admitted = admitted(&claims, &us_claim).await;
        if ready {
            assert!(
                !pod_admitted && !claim_admitted,
                "policy {} said Ready, then admitted {}{}",
                ns.name,
                if pod_admitted {
                    "a pod pinned to virginia-a "
                } else {
                    ""
                },
                if claim_admitted {
                    "a claim on us-east-ssd"
                } else {
                    ""
                },
            );
            after_ready += 1;
        } else {
            before_ready += 1;
        }
        if ready_at.is_some_and(|at| at.elapsed() >= AFTER_READY) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "policy {} not Ready after 60 s: {:?}",
            ns.name,
            policy_ready(&ns.name)
        );
    }
    eprintln!(
        "policy {}: Ready after {:?}, {before_ready} rounds before it, {after_ready} after it, none admitted after",
        ns.name,
        ready_at.map(|at| at - started)
    );
}

/// A namespace stuck in deletion (a finalizer holds it) takes nothing new, so the
/// probes can observe nothing there: the policy covering only it still says Ready for
/// a new generation instead of waiting forever.
#[tokio::test]
async fn a_namespace_stuck_in_deletion_does_not_hold_ready_back() {
    let _cluster = cluster_lock().read().await;
    shared_operator("admission");
    apply(&eu_enclave(ENCLAVE));
    let ns = TestNamespace::new("adm-ready-stuck", true);
    kubectl_ok(&[
        "patch",
        "namespace",
        &ns.name,
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":["enclave.dev/test-hold"]}}"#,
    ]);
    struct Release(String);
    impl Drop for Release {
        fn drop(&mut self) {
            let _ = kubectl(
                &[
                    "patch",
                    "namespace",
                    &self.0,
                    "--type=merge",
                    "-p",
                    r#"{"metadata":{"finalizers":null}}"#,
                ],
                None,
            );
        }
    }
    let _release = Release(ns.name.clone());
    apply(&policy(&ns.name, ENCLAVE, ""));
    wait_for_admission(&ns.name).await;
    kubectl_ok(&["delete", "namespace", &ns.name, "--wait=false"]);
    // A new generation: its objects are written again and probed, in the only
    // namespace it covers, which takes nothing new now.
    apply(&policy(
        &ns.name,
        ENCLAVE,
        "  placement: {preferredSites: [{site: dublin, weight: 10}]}\n",
    ));
    wait_for_admission(&ns.name).await;
}
