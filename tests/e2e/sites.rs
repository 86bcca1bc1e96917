//! The sites controller against the local control plane: a DataEnclave's status follows
//! the nodes as they are labelled, become Ready, and go away.

use std::time::Duration;

use crate::common::*;
use enclave_operator::crd::{DataEnclave, DataEnclaveStatus};
use kube::Api;

const TIMEOUT: Duration = Duration::from_secs(30);

fn enclave_yaml(name: &str, sites: &[(&str, &str, &str)]) -> String {
    let mut yaml = format!(
        "apiVersion: enclave.dev/v1alpha1\nkind: DataEnclave\nmetadata:\n  name: {name}\nspec:\n  jurisdiction: EU\n  sites:\n"
    );
    for (site, key, value) in sites {
        yaml.push_str(&format!(
            "  - name: {site}\n    nodeSelector:\n      matchLabels: {{\"{key}\": \"{value}\"}}\n"
        ));
    }
    yaml
}

const SITE: &str = "node-restriction.kubernetes.io/enclave-site";

/// Waits until the enclave's status reports exactly `expected` as (site, nodes, ready).
async fn wait_for_sites(
    api: &Api<DataEnclave>,
    name: &str,
    expected: &[(&str, i32, i32)],
) -> DataEnclaveStatus {
    let want: Vec<(String, i32, i32)> = expected
        .iter()
        .map(|(s, n, r)| (s.to_string(), *n, *r))
        .collect();
    eventually(
        TIMEOUT,
        &format!("status of {name} to be {want:?}"),
        || async {
            let enclave = api.get(name).await.map_err(|e| e.to_string())?;
            let status = enclave.status.ok_or("no status yet")?;
            let got: Vec<(String, i32, i32)> = status
                .sites
                .iter()
                .map(|s| (s.name.clone(), s.nodes, s.ready_nodes))
                .collect();
            if got == want && status.observed_generation == enclave.metadata.generation {
                Ok(status)
            } else {
                Err(format!("{got:?}"))
            }
        },
    )
    .await
}

fn condition<'a>(
    status: &'a DataEnclaveStatus,
    type_: &str,
) -> &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap_or_else(|| panic!("condition {type_} missing: {status:?}"))
}

#[tokio::test]
async fn status_converges_on_the_site_inventory() {
    // Adds, relabels and removes nodes other tests could place pods on.
    let _cluster = cluster_lock().write().await;
    shared_operator("sites");
    let api: Api<DataEnclave> = Api::all(client().await);
    apply(&enclave_yaml(
        "sites-inventory",
        &[("dublin", SITE, "dublin"), ("norway", SITE, "norway")],
    ));
    let status = wait_for_sites(
        &api,
        "sites-inventory",
        &[("dublin", 2, 2), ("norway", 1, 1)],
    )
    .await;
    assert_eq!(condition(&status, "Ready").status, "True");
    assert_eq!(condition(&status, "SitesPopulated").status, "True");
    assert_eq!(condition(&status, "SiteLabelsTrusted").status, "True");
    // kubectl shows it too, through the printer columns.
    let table = kubectl_ok(&["get", "dataenclave", "sites-inventory"]);
    assert!(
        table.contains("dublin=2/2 norway=1/1") && table.contains("True"),
        "{table}"
    );
    kubectl_ok(&["delete", "dataenclave", "sites-inventory"]);
}

#[tokio::test]
async fn kubelet_settable_labels_and_empty_sites_are_reported() {
    // Adds, relabels and removes nodes other tests could place pods on.
    let _cluster = cluster_lock().write().await;
    shared_operator("sites");
    let api: Api<DataEnclave> = Api::all(client().await);
    apply(&enclave_yaml(
        "sites-untrusted",
        &[
            ("dublin", "topology.kubernetes.io/region", "eu-west-1"),
            ("oslo", SITE, "oslo"),
        ],
    ));
    let status = wait_for_sites(&api, "sites-untrusted", &[("dublin", 2, 2), ("oslo", 0, 0)]).await;
    let trusted = condition(&status, "SiteLabelsTrusted");
    assert_eq!(trusted.status, "False");
    assert_eq!(trusted.reason, "KubeletSettableLabels");
    assert!(
        trusted.message.contains("topology.kubernetes.io/region"),
        "{}",
        trusted.message
    );
    let populated = condition(&status, "SitesPopulated");
    assert_eq!(
        (populated.status.as_str(), populated.reason.as_str()),
        ("False", "SiteHasNoNodes")
    );
    assert!(populated.message.contains("oslo"), "{}", populated.message);
    assert_eq!(condition(&status, "Ready").status, "False");
    // The warning is also an Event on the enclave.
    let events = eventually(TIMEOUT, "a KubeletSettableLabels Event", || async {
        let out = kubectl_ok(&[
            "get",
            "events",
            "-A",
            "--field-selector",
            "involvedObject.name=sites-untrusted",
            "-o",
            "name",
        ]);
        let reasons = kubectl_ok(&[
            "get",
            "events",
            "-A",
            "--field-selector",
            "involvedObject.name=sites-untrusted",
            "-o",
            "jsonpath={.items[*].reason}",
        ]);
        if reasons.contains("KubeletSettableLabels") {
            Ok(reasons)
        } else {
            Err(out)
        }
    })
    .await;
    assert!(events.contains("SiteHasNoNodes"), "{events}");
    kubectl_ok(&["delete", "dataenclave", "sites-untrusted"]);
}

/// A node of our own (not one of the shared topology nodes, which other tests use):
/// not managed by kwok, so its readiness is what this test writes into its status.
fn extra_node(name: &str, site: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n  labels:\n    {SITE}: {site}\n    enclave.dev/test: sites\nspec:\n  taints:\n  - {{key: enclave.dev/test-only, effect: NoSchedule}}\n"
    )
}

/// Sets the node's Ready condition, with a heartbeat of now: no kubelet renews this
/// node, and the node lifecycle controller marks a node without a heartbeat for its
/// grace period (50 s) Unknown, which on a busy machine came before the test's last step.
fn set_ready(name: &str, ready: bool) {
    let status = if ready { "True" } else { "False" };
    let now = jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ");
    let patch = format!(
        r#"{{"status":{{"conditions":[{{"type":"Ready","status":"{status}","reason":"Test","message":"set by the test","lastHeartbeatTime":"{now}","lastTransitionTime":"{now}"}}]}}}}"#
    );
    kubectl_ok(&[
        "patch",
        "node",
        name,
        "--subresource=status",
        "--type=merge",
        "-p",
        &patch,
    ]);
}

#[tokio::test]
async fn status_follows_node_labels_readiness_and_deletion() {
    // Adds, relabels and removes nodes other tests could place pods on.
    let _cluster = cluster_lock().write().await;
    shared_operator("sites");
    let api: Api<DataEnclave> = Api::all(client().await);
    // The extra node goes whatever happens: left behind (a failed run), labelled into
    // Dublin and never Ready, it misled the next run's site and placement tests.
    struct ExtraNode;
    impl Drop for ExtraNode {
        fn drop(&mut self) {
            let _ = kubectl(
                &["delete", "node", "sites-extra-1", "--ignore-not-found"],
                None,
            );
        }
    }
    drop(ExtraNode);
    let _extra = ExtraNode;
    apply(&enclave_yaml(
        "sites-follow",
        &[("dublin", SITE, "dublin"), ("lisbon", SITE, "lisbon")],
    ));
    wait_for_sites(&api, "sites-follow", &[("dublin", 2, 2), ("lisbon", 0, 0)]).await;

    // A new node joins Lisbon, not Ready yet.
    apply(&extra_node("sites-extra-1", "lisbon"));
    wait_for_sites(&api, "sites-follow", &[("dublin", 2, 2), ("lisbon", 1, 0)]).await;
    // It becomes Ready.
    set_ready("sites-extra-1", true);
    let status = wait_for_sites(&api, "sites-follow", &[("dublin", 2, 2), ("lisbon", 1, 1)]).await;
    assert_eq!(condition(&status, "Ready").status, "True");
    // It is relabelled into Dublin.
    kubectl_ok(&[
        "label",
        "node",
        "sites-extra-1",
        &format!("{SITE}=dublin"),
        "--overwrite",
    ]);
    wait_for_sites(&api, "sites-follow", &[("dublin", 3, 3), ("lisbon", 0, 0)]).await;
    // It stops being Ready.
    set_ready("sites-extra-1", false);
    wait_for_sites(&api, "sites-follow", &[("dublin", 3, 2), ("lisbon", 0, 0)]).await;
    // It is deleted.
    kubectl_ok(&["delete", "node", "sites-extra-1"]);
    wait_for_sites(&api, "sites-follow", &[("dublin", 2, 2), ("lisbon", 0, 0)]).await;

    // Editing the enclave is followed too, with observedGeneration.
    apply(&enclave_yaml("sites-follow", &[("norway", SITE, "norway")]));
    wait_for_sites(&api, "sites-follow", &[("norway", 1, 1)]).await;
    kubectl_ok(&["delete", "dataenclave", "sites-follow"]);
}

async fn status_of(api: &Api<DataEnclave>, name: &str) -> Result<DataEnclaveStatus, String> {
    api.get(name)
        .await
        .map_err(|e| e.to_string())?
        .status
        .ok_or_else(|| "no status yet".to_string())
}

/// A pod that reads its node's disk, pinned to an enclave node as `kubectl debug node/…`
/// pins one.
fn host_reader(namespace: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: host-reader, namespace: {namespace}}}\nspec:\n  nodeName: dublin-a\n  containers: [{{name: c, image: busybox, volumeMounts: [{{name: host, mountPath: /host}}]}}]\n  volumes: [{{name: host, hostPath: {{path: /var/lib/kubelet/pods}}}}]\n"
    )
}

#[tokio::test]
async fn namespaces_whose_pods_may_take_host_access_on_the_enclaves_nodes_are_reported() {
    let _cluster = cluster_lock().read().await;
    shared_operator("sites");
    let api: Api<DataEnclave> = Api::all(client().await);
    // The status lists the first 50 namespaces by name, and other tests make many:
    // these names sort first.
    let (open, guarded, held) = ("0-hosts-open", "0-hosts-guarded", "0-hosts-held");
    let enclave = "sites-hosts";
    apply(&enclave_yaml(
        enclave,
        &[("dublin", SITE, "dublin"), ("norway", SITE, "norway")],
    ));
    apply(&format!(
        "apiVersion: enclave.dev/v1alpha1\nkind: ResidencyPolicy\nmetadata: {{name: {enclave}}}\nspec:\n  enclave: {enclave}\n  match: {{namespaceSelector: {{matchLabels: {{test.enclave.dev/hosts: held}}}}}}\n"
    ));
    apply(&format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {open}}}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: {guarded}, labels: {{pod-security.kubernetes.io/enforce: baseline}}}}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: {held}, labels: {{test.enclave.dev/hosts: held}}}}\n"
    ));
    let listed = |status: &DataEnclaveStatus, name: &str| {
        status.host_access_namespaces.iter().any(|n| n == name)
    };
    let status = eventually(TIMEOUT, "the open namespace listed", || async {
        let status = status_of(&api, enclave).await?;
        if listed(&status, open) {
            Ok(status)
        } else {
            Err(format!("{:?}", status.host_access_namespaces))
        }
    })
    .await;
    // In the decision log too, naming the enclave.
    eventually(
        TIMEOUT,
        "a HostAccessFound record of the open namespace",
        || async {
            decisions_about(None, open)
                .into_iter()
                .find(|r| r["kind"] == "HostAccessFound" && r["fields"]["enclave"] == enclave)
                .ok_or("no record yet")
        },
    )
    .await;
    // Pod Security enforcing baseline, or every pod placed by an enforcing policy.
    assert!(!listed(&status, guarded), "{status:?}");
    assert!(!listed(&status, held), "{status:?}");
    assert!(!listed(&status, "kube-system"), "{status:?}");
    assert!(status.host_access_namespace_count >= 1);
    let host = condition(&status, "HostAccessGuarded");
    assert_eq!(
        (host.status.as_str(), host.reason.as_str()),
        ("False", "HostAccessAllowed")
    );

    // What it reports is a way in: the API server admits the pod where it is listed,
    // and refuses it where Pod Security enforces baseline.
    kubectl_ok_stdin(
        &["apply", "--dry-run=server", "-f", "-"],
        &host_reader(open),
    );
    let refused = kubectl(
        &["apply", "--dry-run=server", "-f", "-"],
        Some(&host_reader(guarded)),
    );
    let error = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && error.contains("violates PodSecurity"),
        "{error}"
    );

    // Labelled by an admin: no longer listed.
    kubectl_ok(&[
        "label",
        "namespace",
        open,
        "pod-security.kubernetes.io/enforce=baseline",
    ]);
    eventually(
        TIMEOUT,
        "the labelled namespace no longer listed",
        || async {
            let status = status_of(&api, enclave).await?;
            if listed(&status, open) {
                Err(format!("{:?}", status.host_access_namespaces))
            } else {
                Ok(())
            }
        },
    )
    .await;

    kubectl_ok(&["delete", "namespace", open, guarded, held, "--wait=false"]);
    kubectl_ok(&["delete", "residencypolicy", enclave]);
    kubectl_ok(&["delete", "dataenclave", enclave]);
}
