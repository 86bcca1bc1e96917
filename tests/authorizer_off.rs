//! The authorizer switched off: an operator that does not answer the API server's
//! authorization webhook (no `--authorizer-addr`), on a control plane whose API server is
//! configured to ask it. The enclave must say the authorizer is not in force, covered
//! requests must be refused by the failure policy (never let through), and requests the
//! authorizer does not cover must not notice. On a cluster whose API server is not
//! configured for it at all, the enclave must say `NotConfigured`.
//!
//! A binary of its own: the shared e2e operator answers the authorizer's address.

mod common;

use std::time::Duration;

use common::*;

const TIMEOUT: Duration = Duration::from_secs(90);
const ENCLAVE: &str = "authz-off-eu";

fn condition() -> (String, String, String) {
    let path =
        |field: &str| format!("{{.status.conditions[?(@.type==\"AuthorizerInForce\")].{field}}}");
    let out = kubectl_ok(&[
        "get",
        "dataenclave",
        ENCLAVE,
        "-o",
        &format!(
            "jsonpath={}|{}|{}",
            path("status"),
            path("reason"),
            path("message")
        ),
    ]);
    let mut parts = out.splitn(3, '|').map(str::to_string);
    (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    )
}

#[tokio::test]
async fn without_the_authorizer_the_enclave_says_so_and_covered_requests_are_not_let_through() {
    // Without authorizer arguments: nobody answers the API server's webhook address.
    let mut operator = Operator::start("authorizer-off", &[]);
    operator.ready().await;
    apply(&eu_enclave(ENCLAVE));
    // Whatever an earlier run left in the status proves nothing.
    clear_enclave_conditions(ENCLAVE);
    let expected = if authorizer_configured() {
        "NotAnswering"
    } else {
        "NotConfigured"
    };
    let (_, _, message) = eventually(
        TIMEOUT,
        &format!("AuthorizerInForce=False ({expected})"),
        || async {
            match condition() {
                (status, reason, message) if status == "False" && reason == expected => {
                    Ok((status, reason, message))
                }
                other => Err(other),
            }
        },
    )
    .await;
    eprintln!("AuthorizerInForce=False {expected}: {message}");

    if authorizer_configured() {
        // Covered requests are refused by the failure policy (Deny), not let through to
        // RBAC; requests the authorizer does not cover never wait on it.
        let ns = TestNamespace::new("authz-off", false);
        apply(&format!(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {{name: view, namespace: {}}}\nroleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: view}}\nsubjects:\n- {{kind: User, name: viewer, apiGroup: rbac.authorization.k8s.io}}\n",
            ns.name
        ));
        kubectl_ok(&[
            "run",
            "web",
            "-n",
            &ns.name,
            "--image=registry.k8s.io/pause:3.10",
            "--restart=Never",
        ]);
        let out = kubectl(
            &[
                "logs",
                "-n",
                &ns.name,
                "web",
                "--as",
                "viewer",
                "--request-timeout=20s",
            ],
            None,
        );
        let text = String::from_utf8_lossy(&out.stderr).into_owned();
        // The API server answers an Internal Server Error naming the webhook it could
        // not reach: refused, with the reason in plain sight.
        assert!(
            !out.status.success() && text.contains("/authorize"),
            "a covered request went through while the authorizer was unreachable: {text}"
        );
        let started = std::time::Instant::now();
        kubectl_ok(&["get", "pods", "-n", &ns.name, "--as", "viewer"]);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "an uncovered request waited on the missing authorizer"
        );
    }
    operator.stop();
}
