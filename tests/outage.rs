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
