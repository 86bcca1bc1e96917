//! With the operator stopped, in-scope pods fail closed and out-of-scope pods are
//! created as if it did not exist: they never reach the webhook.

mod common;

use std::time::Duration;

use common::*;

fn pod(name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  containers: [{{name: app, image: registry.k8s.io/pause:3.10}}]\n"
    )
}

#[tokio::test]
async fn stopped_operator_blocks_only_its_scope() {
    let mut operator = Operator::start("fail-closed", &["--admission", "webhook"]);
    apply(&eu_enclave("fail-closed-eu"));
    let inside = TestNamespace::new("fc-inside", true);
    let outside = TestNamespace::new("fc-outside", false);
    apply(&policy(&inside.name, "fail-closed-eu", ""));
    wait_for_webhook(&inside.name).await;

    operator.stop();

    let out = kubectl(
        &["apply", "-n", &outside.name, "-f", "-"],
        Some(&pod("unaffected")),
    );
    assert!(
        out.status.success(),
        "an out-of-scope pod must not wait on the operator: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let client = client().await;
    eventually(
        Duration::from_secs(30),
        "the out-of-scope pod to run",
        || async {
            let pods = pods(&client, &outside.name).await;
            if pods.iter().any(is_running) {
                Ok(())
            } else {
                Err(pods.len())
            }
        },
    )
    .await;

    let out = kubectl(
        &["apply", "-n", &inside.name, "-f", "-"],
        Some(&pod("refused")),
    );
    assert!(
        !out.status.success(),
        "an in-scope pod must fail closed while the operator is down"
    );
    let error = String::from_utf8_lossy(&out.stderr);
    assert!(error.contains("failed calling webhook"), "{error}");
}

/// With the native engine every operator process can be gone: in-scope pods are still
/// placed and pinned ones refused by the API server itself, out-of-scope pods are
/// untouched, and a restarted operator changes nothing already admitted.
#[tokio::test]
async fn native_enforcement_holds_while_the_operator_is_down() {
    let mut operator = Operator::start("outage-native", &["--admission", "native"]);
    apply(&eu_enclave("outage-native-eu"));
    let inside = TestNamespace::new("on-inside", true);
    let outside = TestNamespace::new("on-outside", false);
    apply(&policy(&inside.name, "outage-native-eu", ""));
    wait_for_admission(&inside.name).await;

    operator.stop();

    // Placed by the API server alone.
    let out = kubectl(
        &["apply", "-n", &inside.name, "-f", "-"],
        Some(&pod("placed")),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let placed = kubectl_ok(&[
        "get",
        "pod",
        "placed",
        "-n",
        &inside.name,
        "-o",
        "jsonpath={.spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[*].matchExpressions[*].values[*]}",
    ]);
    assert!(
        placed.contains("dublin") && placed.contains("norway"),
        "{placed}"
    );
    // Refused by the API server alone, with the reason.
    let pinned = pod("pinned").replace("spec:\n", "spec:\n  nodeName: virginia-a\n");
    let out = kubectl(&["apply", "-n", &inside.name, "-f", "-"], Some(&pinned));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a node of the enclave"));
    // Untouched outside the scope.
    let out = kubectl(
        &["apply", "-n", &outside.name, "-f", "-"],
        Some(&pod("free")),
    );
    assert!(out.status.success());
    let free = kubectl_ok(&[
        "get",
        "pod",
        "free",
        "-n",
        &outside.name,
        "-o",
        "jsonpath={.spec.affinity}",
    ]);
    assert!(
        free.is_empty(),
        "an out-of-scope pod is not changed: {free}"
    );
    let client = client().await;
    let running = eventually(
        Duration::from_secs(60),
        "the placed pod running",
        || async {
            let pods = pods(&client, &inside.name).await;
            match pods
                .iter()
                .find(|p| p.metadata.name.as_deref() == Some("placed"))
            {
                Some(p) if is_running(p) => Ok(p.clone()),
                _ => Err(pods.len()),
            }
        },
    )
    .await;

    // A restart changes nothing already admitted.
    let _restarted = Operator::start("outage-native-again", &["--admission", "native"]);
    tokio::time::sleep(Duration::from_secs(8)).await;
    let after = pods(&client, &inside.name).await;
    let same = after
        .iter()
        .find(|p| p.metadata.name.as_deref() == Some("placed"));
    assert_eq!(
        same.and_then(|p| p.metadata.uid.clone()),
        running.metadata.uid,
        "the admitted pod was left alone"
    );
}
