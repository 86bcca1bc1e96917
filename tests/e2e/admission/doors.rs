//! Side doors at admission (issue 21, items 1 and 2), run with each engine: pods that
//! would slip past the fence or the storage rules — host network, inline volumes that
//! reach storage or servers by themselves — are refused in scope naming the field,
//! unless the DataEnclave's `spec.podSecurity` allows them; Audit only warns; and
//! claims, claim templates and generic ephemeral volumes are judged by the class that
//! provisions them, the beta annotation first.

use super::*;

/// `kubectl apply --dry-run=server` of `yaml` in `namespace`: (admitted, stderr).
fn try_apply(namespace: &str, yaml: &str) -> (bool, String) {
    let out = kubectl(
        &["apply", "--dry-run=server", "-n", namespace, "-f", "-"],
        Some(yaml),
    );
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn refused(namespace: &str, what: &str, yaml: &str, needles: &[&str]) {
    let (admitted, error) = try_apply(namespace, yaml);
    assert!(!admitted, "{what} must be refused in {namespace}");
    for needle in needles {
        assert!(
            error.contains(needle),
            "{what}: {needle:?} missing from: {error}"
        );
    }
}

fn admitted(namespace: &str, what: &str, yaml: &str) -> String {
    let (admitted, error) = try_apply(namespace, yaml);
    assert!(admitted, "{what} must be admitted in {namespace}: {error}");
    error
}

/// A pod with `spec_extra` and one volume (`volume` is its source, YAML flow style).
fn with_volume(name: &str, volume: &str) -> String {
    pod(
        name,
        &format!(
            "  volumes: [{{name: data, {volume}}}]\n  nodeSelector: {{{SITE_LABEL}: dublin}}\n"
        ),
    )
}

const NFS: &str = "nfs: {server: 198.51.100.7, path: /export}";
const HOST_PATH: &str = "hostPath: {path: /var/lib/data}";
const ISCSI: &str =
    "iscsi: {targetPortal: '198.51.100.7:3260', iqn: 'iqn.2001-04.com.example:storage', lun: 0}";
const RBD: &str = "rbd: {monitors: ['198.51.100.7:6789'], image: data}";
const CEPHFS: &str = "cephfs: {monitors: ['198.51.100.7:6789']}";
const CSI_NFS: &str =
    "csi: {driver: nfs.csi.k8s.io, volumeAttributes: {server: 198.51.100.7, share: /export}}";

#[tokio::test]
async fn host_network_and_inline_volumes_are_refused_naming_the_field() {
    let _cluster = cluster_lock().read().await;
    let ns = setup("adm-doors", "");
    wait_for_admission(&ns.name).await;
    let n = ns.name.as_str();
    refused(
        n,
        "a pod on the host network",
        &pod(
            "host-net",
            &format!("  hostNetwork: true\n  nodeSelector: {{{SITE_LABEL}: dublin}}\n"),
        ),
        &[
            "policy adm-doors",
            "spec.hostNetwork: true",
            "outside every NetworkPolicy",
            "spec.podSecurity.allowHostNetwork",
            "DataEnclave admission-eu",
        ],
    );
    for (field, volume) in [
        ("nfs", NFS),
        ("hostPath", HOST_PATH),
        ("iscsi", ISCSI),
        ("rbd", RBD),
        ("cephfs", CEPHFS),
    ] {
        refused(
            n,
            &format!("an inline {field} volume"),
            &with_volume("inline", volume),
            &[
                "policy adm-doors",
                &format!("spec.volumes[0].{field} (volume data)"),
                "allowedVolumeTypes): none",
            ],
        );
    }
    refused(
        n,
        "an inline CSI volume",
        &with_volume("inline-csi", CSI_NFS),
        &[
            "spec.volumes[0].csi (volume data)",
            "\"nfs.csi.k8s.io\"",
            "allowedCSIDrivers): none",
        ],
    );
    // What reaches nothing by itself is admitted, wherever it comes in the list.
    admitted(
        n,
        "a pod with contained volumes",
        &pod(
            "contained",
            "  volumes:\n  - {name: a, configMap: {name: c}}\n  - {name: b, secret: {secretName: s}}\n  - {name: c, emptyDir: {}}\n  - {name: d, downwardAPI: {items: [{path: labels, fieldRef: {fieldPath: metadata.labels}}]}}\n  - {name: e, projected: {sources: [{serviceAccountToken: {path: token}}]}}\n  - {name: f, persistentVolumeClaim: {claimName: data}}\n",
        ),
    );
    // The second volume is the door: it is the one named.
    refused(
        n,
        "a door after a contained volume",
        &pod(
            "second",
            &format!("  volumes: [{{name: ok, emptyDir: {{}}}}, {{name: out, {NFS}}}]\n"),
        ),
        &["spec.volumes[1].nfs (volume out)"],
    );
}

#[tokio::test]
async fn the_enclave_allows_what_it_lists() {
    let _cluster = cluster_lock().read().await;
    shared_operator("admission");
    const ALLOWING: &str = "admission-doors-eu";
    apply(&format!(
        "{}  podSecurity:\n    allowHostNetwork: true\n    allowedVolumeTypes: [nfs]\n    allowedCSIDrivers: [nfs.csi.k8s.io]\n",
        eu_enclave(ALLOWING)
    ));
    let allowing = TestNamespace::new("adm-doors-allowed", true);
    apply(&policy(&allowing.name, ALLOWING, ""));
    wait_for_admission(&allowing.name).await;
    let n = allowing.name.as_str();
    admitted(
        n,
        "host network, allowed",
        &pod(
            "host-net",
            &format!("  hostNetwork: true\n  nodeSelector: {{{SITE_LABEL}: dublin}}\n"),
        ),
    );
    admitted(n, "nfs, allowed", &with_volume("nfs", NFS));
    admitted(n, "CSI nfs, allowed", &with_volume("csi", CSI_NFS));
    refused(
        n,
        "hostPath, not listed",
        &with_volume("host-path", HOST_PATH),
        &[
            "spec.volumes[0].hostPath (volume data)",
            "allowedVolumeTypes): nfs",
        ],
    );
    refused(
        n,
        "another CSI driver",
        &with_volume(
            "csi-smb",
            "csi: {driver: smb.csi.k8s.io, volumeAttributes: {source: '//198.51.100.7/share'}}",
        ),
        &["\"smb.csi.k8s.io\"", "allowedCSIDrivers): nfs.csi.k8s.io"],
    );
}

/// Audit: side doors are admitted, with a warning saying what Enforce would do.
#[tokio::test]
async fn audit_admits_side_doors_with_a_warning() {
    let _cluster = cluster_lock().read().await;
    let audit = setup("adm-doors-audit", "  enforcement: Audit\n");
    let n = audit.name.as_str();
    let warning = eventually(
        Duration::from_secs(60),
        "the Audit warning about the host network",
        || async {
            let (admitted, stderr) = try_apply(
                n,
                &pod(
                    "host-net",
                    &format!("  hostNetwork: true\n  nodeSelector: {{{SITE_LABEL}: dublin}}\n"),
                ),
            );
            if admitted && stderr.contains("spec.hostNetwork") {
                Ok(stderr)
            } else {
                Err(stderr)
            }
        },
    )
    .await;
    assert!(warning.contains("(Audit) would deny"), "{warning}");
    let warning = admitted(n, "nfs under Audit", &with_volume("nfs", NFS));
    assert!(
        warning.contains("(Audit) would deny") && warning.contains("spec.volumes[0].nfs"),
        "{warning}"
    );
}

fn annotated_claim(name: &str, annotation: &str, spec: &str) -> String {
    format!(
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: {name}\n  annotations: {{volume.beta.kubernetes.io/storage-class: {annotation}}}\nspec:\n  accessModes: [ReadWriteOnce]\n  resources: {{requests: {{storage: 1Gi}}}}\n{spec}"
    )
}

fn statefulset(name: &str, template_metadata: &str, class: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: StatefulSet\nmetadata:\n  name: {name}\nspec:\n  serviceName: {name}\n  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}}}}}\n    spec:\n      containers: [{{name: app, image: registry.k8s.io/pause:3.10}}]\n  volumeClaimTemplates:\n  - metadata: {{name: data{template_metadata}}}\n    spec: {{accessModes: [ReadWriteOnce], {class}resources: {{requests: {{storage: 1Gi}}}}}}\n"
    )
}

fn ephemeral(name: &str, template_metadata: &str, class: &str) -> String {
    pod(
        name,
        &format!(
            "  volumes:\n  - name: scratch\n    ephemeral:\n      volumeClaimTemplate:\n        metadata: {{{template_metadata}}}\n        spec: {{accessModes: [ReadWriteOnce], {class}resources: {{requests: {{storage: 1Gi}}}}}}\n"
        ),
    )
}

const US_ANNOTATION: &str = ", annotations: {volume.beta.kubernetes.io/storage-class: us-east-ssd}";

#[tokio::test]
async fn claims_are_judged_by_the_class_that_provisions_them() {
    let _cluster = cluster_lock().read().await;
    let ns = setup("adm-beta-class", "");
    wait_for_admission(&ns.name).await;
    let n = ns.name.as_str();
    // The annotation says US, the field EU: Kubernetes provisions by the annotation.
    refused(
        n,
        "a claim whose annotation and field disagree",
        &annotated_claim(
            "mixed",
            "us-east-ssd",
            "  storageClassName: eu-dublin-ssd\n",
        ),
        &[
            "policy adm-beta-class",
            "claim mixed",
            "volume.beta.kubernetes.io/storage-class names storage class \"us-east-ssd\"",
            "spec.storageClassName \"eu-dublin-ssd\"",
            "make the two agree",
        ],
    );
    refused(
        n,
        "a claim with only a US annotation",
        &annotated_claim("us-only", "us-east-ssd", ""),
        &[
            "annotation volume.beta.kubernetes.io/storage-class names storage class \"us-east-ssd\"",
            "eu-dublin-ssd, eu-norway-ssd",
        ],
    );
    admitted(
        n,
        "a claim with only an EU annotation",
        &annotated_claim("eu-only", "eu-norway-ssd", ""),
    );
    admitted(
        n,
        "a claim whose annotation and field agree",
        &annotated_claim(
            "agreed",
            "eu-dublin-ssd",
            "  storageClassName: eu-dublin-ssd\n",
        ),
    );
    // StatefulSet claim templates, the same.
    refused(
        n,
        "a StatefulSet whose template's annotation says US",
        &statefulset(
            "db-mixed",
            US_ANNOTATION,
            "storageClassName: eu-dublin-ssd, ",
        ),
        &["StatefulSet", "claim data", "make the two agree"],
    );
    admitted(
        n,
        "a StatefulSet whose template has only an EU annotation",
        &statefulset(
            "db-eu",
            ", annotations: {volume.beta.kubernetes.io/storage-class: eu-norway-ssd}",
            "",
        ),
    );
    // Generic ephemeral volumes are claims too, judged at the pod.
    refused(
        n,
        "an ephemeral volume on US storage",
        &ephemeral("scratch-us", "", "storageClassName: us-east-ssd, "),
        &[
            "policy adm-beta-class",
            "spec.volumes[0].ephemeral (volume scratch)",
            "it uses storage class \"us-east-ssd\"",
            "eu-dublin-ssd, eu-norway-ssd",
        ],
    );
    refused(
        n,
        "an ephemeral volume whose template's annotation says US",
        &ephemeral(
            "scratch-mixed",
            "annotations: {volume.beta.kubernetes.io/storage-class: us-east-ssd}",
            "storageClassName: eu-dublin-ssd, ",
        ),
        &[
            "spec.volumes[0].ephemeral (volume scratch)",
            "make the two agree",
        ],
    );
    admitted(
        n,
        "an ephemeral volume on EU storage",
        &ephemeral("scratch-eu", "", "storageClassName: eu-dublin-ssd, "),
    );
}
