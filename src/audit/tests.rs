//! The report from YAML fixtures: a compliant enclave is all green, a planted violation
//! of each kind shows up (and only where it belongs), and the bytes do not depend on the
//! order the cluster listed things in.

use std::{collections::BTreeMap, sync::Arc};

use jiff::Timestamp;

use super::{
    fixtures, render,
    report::{
        ChainHead, ChainObservation, Observation, Report, Unreadable, Verdict, build, chain_heads,
    },
};
use crate::{access::rbac::RbacObjects, cache::CachedPod, catalog::StaticCatalog};

const OPERATOR_NAMESPACE: &str = "enclave-system";

/// The compliant world: the fixture, its RBAC, and the fence the operator would write.
fn compliant() -> StaticCatalog {
    let mut catalog =
        StaticCatalog::from_yaml(include_str!("testdata/compliant.yaml")).expect("fixture");
    catalog.rbac = RbacObjects::from_yaml(include_str!("testdata/rbac.yaml")).expect("rbac");
    fixtures::add_operator_fence(&mut catalog, OPERATOR_NAMESPACE);
    catalog
}

fn observation() -> Observation {
    fixtures::observation(OPERATOR_NAMESPACE)
}

fn report(catalog: &StaticCatalog) -> Report {
    build(catalog, &observation())
}

/// (placement, volumes, network, access) of the only policy.
fn verdicts(report: &Report) -> [Verdict; 4] {
    let checks = &report.policies[0].checks;
    [
        checks.placement.verdict,
        checks.volumes.verdict,
        checks.network.verdict,
        checks.access.verdict,
    ]
}

fn pod(yaml: &str) -> Arc<CachedPod> {
    Arc::new(serde_yaml::from_str(yaml).expect("pod"))
}

fn plant_pod_outside(catalog: &mut StaticCatalog) {
    catalog.pods.push(pod(
        "metadata: {name: web-2, namespace: shop, uid: uid-web-2, creationTimestamp: '2026-01-01T00:00:00Z', labels: {app: web}, ownerReferences: [{apiVersion: apps/v1, kind: ReplicaSet, name: web-rs, uid: rs-web, controller: true}]}\nspec: {nodeName: virginia-a}\nstatus: {phase: Running}\n",
    ));
}

fn plant_claim_outside(catalog: &mut StaticCatalog) {
    let claim: k8s_openapi::api::core::v1::PersistentVolumeClaim = serde_yaml::from_str(
        "metadata: {name: scratch, namespace: api}\nspec: {storageClassName: us-east-ssd}\n",
    )
    .expect("claim");
    catalog
        .claims
        .insert(("api".into(), "scratch".into()), Arc::new(claim));
    // A pod of the scope uses it, so the pod's volume column shows it too.
    catalog.pods.push(pod(
        "metadata: {name: api-2, namespace: api, uid: uid-api-2, creationTimestamp: '2026-01-01T00:00:00Z', labels: {app: api}, ownerReferences: [{apiVersion: apps/v1, kind: ReplicaSet, name: api-rs, uid: rs-api, controller: true}]}\nspec:\n  affinity: {nodeAffinity: {requiredDuringSchedulingIgnoredDuringExecution: {nodeSelectorTerms: [{matchExpressions: [{key: node-restriction.kubernetes.io/enclave-site, operator: In, values: [dublin]}]}]}}}\n  volumes: [{name: s, persistentVolumeClaim: {claimName: scratch}}]\nstatus: {phase: Pending}\n",
    ));
}

fn plant_network_leak(catalog: &mut StaticCatalog) {
    let np: k8s_openapi::api::networking::v1::NetworkPolicy = serde_yaml::from_str(
        "metadata: {name: allow-all-egress, namespace: shop}\nspec:\n  podSelector: {}\n  policyTypes: [Egress]\n  egress: [{}]\n",
    )
    .expect("networkpolicy");
    catalog.network_policies.push(Arc::new(np));
}

fn plant_exposure(catalog: &mut StaticCatalog) {
    let extra = RbacObjects::from_yaml(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: mallory-shell, namespace: api}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: debug}\nsubjects:\n- {kind: User, name: mallory, apiGroup: rbac.authorization.k8s.io}\n",
    )
    .expect("rbac");
    catalog.rbac.role_bindings.extend(extra.role_bindings);
}

#[test]
fn namespaces_whose_pods_may_take_host_access_are_listed_per_enclave_and_are_no_finding() {
    let mut catalog = compliant();
    let listed = report(&catalog);
    // Not a finding: the compliant enclave stays all green.
    assert!(listed.summary.all_green, "{}", render::markdown(&listed));
    // shop and api are held whole by the enforcing policy; kube-system and the
    // operator's namespace are never in scope; public is nobody's.
    assert_eq!(listed.host_access.len(), 1);
    assert_eq!(listed.host_access[0].enclave, "eu");
    assert_eq!(listed.host_access[0].namespaces, ["public"]);
    assert_eq!(listed.summary.host_access_namespaces, 1);
    let markdown = render::markdown(&listed);
    assert!(
        markdown.contains("## Host access on the enclaves' nodes")
            && markdown.contains("- `eu`: 1 namespace(s) do not refuse host access: `public`")
            && markdown.contains("- 1 namespace(s) may take host access"),
        "{markdown}"
    );

    // Pod Security Admission enforcing baseline there: nothing is listed.
    catalog
        .namespaces
        .get_mut("public")
        .expect("public")
        .insert(crate::access::host::ENFORCE_LABEL.into(), "baseline".into());
    let guarded = report(&catalog);
    assert!(guarded.host_access[0].namespaces.is_empty());
    assert_eq!(guarded.summary.host_access_namespaces, 0);
    assert!(
        render::markdown(&guarded).contains(
            "- `eu`: every namespace whose pods may run on its nodes refuses host access"
        )
    );
}

#[test]
fn a_compliant_enclave_is_all_green() {
    let report = report(&compliant());
    assert!(report.summary.all_green, "{}", render::markdown(&report));
    assert_eq!(report.summary.findings, 0);
    assert_eq!(verdicts(&report), [Verdict::Pass; 4]);
    let policy = &report.policies[0];
    assert_eq!(policy.namespaces, ["api", "shop"]);
    // In scope: not the finished pod, not the pod of another namespace.
    let pods: Vec<(String, Option<String>, Option<String>)> = policy
        .pods
        .iter()
        .map(|p| {
            (
                format!("{}/{}", p.namespace, p.name),
                p.node.clone(),
                p.site.clone(),
            )
        })
        .collect();
    assert_eq!(
        pods,
        [
            (
                "api/api-1".into(),
                Some("dublin-a".into()),
                Some("dublin".into())
            ),
            (
                "shop/db-0".into(),
                Some("norway-a".into()),
                Some("norway".into())
            ),
            (
                "shop/web-1".into(),
                Some("dublin-a".into()),
                Some("dublin".into())
            ),
        ]
    );
    assert!(policy.pods.iter().all(|p| p.network == Verdict::Pass));
    let db = &policy.pods[1];
    assert_eq!(db.volumes.len(), 1);
    assert_eq!(db.volumes[0].volume.as_deref(), Some("pv-eu"));
    assert_eq!(
        db.volumes[0].storage_class.as_deref(),
        Some("eu-norway-ssd")
    );
    assert_eq!(db.volumes[0].verdict, Verdict::Pass);
    // The stewards are approved; system:masters is built-in: listed, not a finding.
    assert_eq!(policy.exposures.len(), 1);
    assert!(policy.exposures[0].built_in);

    let markdown = render::markdown(&report);
    assert!(markdown.contains("- Result: **all green**"), "{markdown}");
    assert!(
        markdown.contains("| `p` | `eu` | Enforce | 3 | pass | pass | pass | pass | 0 |"),
        "{markdown}"
    );
    assert!(markdown.contains("| `shop/db-0` | norway-a | norway | inside | data → pv-eu (eu-norway-ssd): inside | fenced |"), "{markdown}");
}

#[test]
fn a_pod_outside_the_enclave_fails_placement_only() {
    let mut catalog = compliant();
    plant_pod_outside(&mut catalog);
    let report = report(&catalog);
    assert_eq!(
        verdicts(&report),
        [Verdict::Fail, Verdict::Pass, Verdict::Pass, Verdict::Pass]
    );
    assert_eq!(report.summary.findings, 1);
    let policy = &report.policies[0];
    let web2 = policy
        .pods
        .iter()
        .find(|p| p.name == "web-2")
        .expect("web-2 listed");
    assert_eq!(web2.site, None);
    assert_eq!(web2.placement.verdict, Verdict::Fail);
    assert_eq!(web2.placement.reason.as_deref(), Some("OutsideEnclave"));
    assert_eq!(policy.placement_findings.len(), 1);
    let markdown = render::markdown(&report);
    assert!(
        markdown.contains("| `shop/web-2` | virginia-a | **outside** | **FAIL**: OutsideEnclave |"),
        "{markdown}"
    );
    assert!(markdown.contains("- Result: **1 finding(s)**"));
}

#[test]
fn a_claim_on_a_class_outside_the_enclave_fails_volumes_only() {
    let mut catalog = compliant();
    plant_claim_outside(&mut catalog);
    let report = report(&catalog);
    assert_eq!(
        verdicts(&report),
        [Verdict::Pass, Verdict::Fail, Verdict::Pass, Verdict::Pass],
        "{}",
        render::markdown(&report)
    );
    let policy = &report.policies[0];
    let found: Vec<(&str, &str)> = policy
        .volume_findings
        .iter()
        .map(|v| (v.name.as_str(), v.reason.as_str()))
        .collect();
    assert_eq!(found, [("scratch", "ClaimOutsideEnclave")]);
    let api2 = policy
        .pods
        .iter()
        .find(|p| p.name == "api-2")
        .expect("api-2");
    assert_eq!(api2.node, None, "pending, held to Dublin");
    assert_eq!(api2.placement.verdict, Verdict::Pass);
    assert_eq!(
        api2.volumes[0].storage_class.as_deref(),
        Some("us-east-ssd")
    );
    assert_eq!(api2.volumes[0].verdict, Verdict::Fail);
    assert!(
        render::markdown(&report)
            .contains("PersistentVolumeClaim `api/scratch`: ClaimOutsideEnclave")
    );
}

#[test]
fn a_network_policy_that_opens_a_path_out_fails_network_only() {
    let mut catalog = compliant();
    plant_network_leak(&mut catalog);
    let report = report(&catalog);
    assert_eq!(
        verdicts(&report),
        [Verdict::Pass, Verdict::Pass, Verdict::Fail, Verdict::Pass]
    );
    let policy = &report.policies[0];
    // Every pod of shop leaks through it; api's pods stay fenced.
    for pod in &policy.pods {
        let expected = if pod.namespace == "shop" {
            Verdict::Fail
        } else {
            Verdict::Pass
        };
        assert_eq!(pod.network, expected, "{}/{}", pod.namespace, pod.name);
    }
    let leaking: Vec<_> = policy
        .network_groups
        .iter()
        .filter(|g| g.verdict == Verdict::Fail)
        .collect();
    assert_eq!(leaking.len(), 1);
    assert!(
        leaking[0]
            .selected_by
            .contains(&"shop/allow-all-egress".to_string())
    );
    let markdown = render::markdown(&report);
    assert!(
        markdown.contains("Egress to any address") && markdown.contains("shop/allow-all-egress"),
        "{markdown}"
    );
}

#[test]
fn an_rbac_grant_to_someone_not_approved_fails_access_only() {
    let mut catalog = compliant();
    plant_exposure(&mut catalog);
    let report = report(&catalog);
    assert_eq!(
        verdicts(&report),
        [Verdict::Pass, Verdict::Pass, Verdict::Pass, Verdict::Fail]
    );
    let policy = &report.policies[0];
    assert_eq!(policy.checks.access.findings, 1);
    // The one that needs a decision comes first.
    assert_eq!(policy.exposures[0].binding, "RoleBinding api/mallory-shell");
    assert_eq!(policy.exposures[0].subject, "User mallory");
    assert!(!policy.exposures[0].built_in);
    assert!(render::markdown(&report).contains(
        "- RoleBinding api/mallory-shell gives User mallory Exec via ClusterRole debug in namespace api"
    ));
}

/// The same objects in other orders, as another list of the same cluster may give them.
fn shuffled(catalog: &StaticCatalog) -> StaticCatalog {
    let mut other = catalog.clone();
    other.pods.reverse();
    other.pods.rotate_left(2);
    other.owners.reverse();
    other.storage_classes.reverse();
    other.network_policies.reverse();
    other.rbac.roles.reverse();
    other.rbac.cluster_roles.reverse();
    other.rbac.role_bindings.reverse();
    other.rbac.cluster_role_bindings.reverse();
    other
}

#[test]
fn the_same_cluster_state_gives_the_same_bytes_whatever_the_order() {
    let mut catalog = compliant();
    plant_pod_outside(&mut catalog);
    plant_claim_outside(&mut catalog);
    plant_network_leak(&mut catalog);
    plant_exposure(&mut catalog);
    let mut observed = observation();
    observed.chain = ChainObservation::Read {
        config_map: "enclave-operator-checkpoints".into(),
        heads: Vec::new(),
        problems: Vec::new(),
        writers: Vec::new(),
        stalled: Vec::new(),
    };
    let first = build(&catalog, &observed);
    // web-2 outside, the claim scratch, shop's leak, mallory's exec.
    assert_eq!(first.summary.findings, 4);
    let second = build(&shuffled(&catalog), &observed);
    assert_eq!(render::markdown(&first), render::markdown(&second));
    assert_eq!(
        render::json(&first).expect("json"),
        render::json(&second).expect("json")
    );
    // The one time is the header field.
    let json = render::json(&first).expect("json");
    assert_eq!(json.matches("2027-01-15T08:00:00Z").count(), 1, "{json}");
}

#[test]
fn a_policy_whose_enclave_is_missing_is_not_judged_and_is_a_finding() {
    let mut catalog = compliant();
    catalog.enclaves.clear();
    let mut observed = observation();
    observed.unreadable.push(Unreadable {
        kind: "DataEnclave".into(),
        namespace: None,
        name: "eu".into(),
        error: "spec.sites: invalid type".into(),
    });
    let report = build(&catalog, &observed);
    let policy = &report.policies[0];
    assert_eq!(verdicts(&report), [Verdict::Unknown; 4]);
    assert_eq!(
        policy.enclave_problem.as_deref(),
        Some("DataEnclave \"eu\" could not be read: spec.sites: invalid type")
    );
    // The policy's finding and the unreadable enclave itself.
    assert_eq!(report.summary.findings, 2);
    assert!(!report.summary.all_green);
}

#[test]
fn unreadable_objects_count_where_a_verdict_depends_on_them() {
    let mut observed = observation();
    let unreadable = |kind: &str, namespace: Option<&str>, name: &str| Unreadable {
        kind: kind.into(),
        namespace: namespace.map(Into::into),
        name: name.into(),
        error: "bad".into(),
    };
    observed.unreadable = vec![
        unreadable("Pod", Some("shop"), "mystery"),
        unreadable("Pod", Some("public"), "elsewhere"),
        unreadable("Node", None, "strange-node"),
        unreadable("ResidencyPolicy", None, "other"),
    ];
    observed.only_policies = vec!["p".into(), "typo".into()];
    let report = build(&compliant(), &observed);
    let policy = &report.policies[0];
    assert_eq!(policy.unreadable.len(), 1, "the pod in shop");
    assert_eq!(policy.verdict, Verdict::Fail);
    assert_eq!(report.summary.unreadable_out_of_scope, 1);
    // The node counts; the policy that was not asked for does not; "typo" does not exist.
    let global: Vec<&str> = report.unreadable.iter().map(|u| u.name.as_str()).collect();
    assert_eq!(global, ["strange-node"]);
    assert_eq!(report.missing_policies, ["typo"]);
    assert_eq!(report.summary.findings, 3);
}

#[test]
fn chain_heads_are_the_last_checkpoint_of_each_key() {
    let hash = |c: char| c.to_string().repeat(64);
    let data = BTreeMap::from([
        (
            "enclave-system.op-0".to_string(),
            format!(
                "{{\"seq\":1,\"hash\":\"{}\",\"time\":\"2027-01-01T00:00:00Z\"}}\n{{\"seq\":7,\"hash\":\"{}\",\"time\":\"2027-01-01T00:01:00Z\"}}\n",
                hash('a'),
                hash('b')
            ),
        ),
        ("broken".to_string(), "not json".to_string()),
    ]);
    let (heads, problems) = chain_heads(&data);
    assert_eq!(heads.len(), 1);
    assert_eq!(heads[0].chain, "enclave-system.op-0");
    assert_eq!(heads[0].head.seq, 7);
    assert_eq!(heads[0].head.hash.to_string(), hash('b'));
    assert_eq!(heads[0].checkpoints, 2);
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems.iter().all(|p| p.contains("broken")));

    let mut observed = observation();
    observed.chain = ChainObservation::Read {
        config_map: "enclave-operator-checkpoints".into(),
        heads,
        problems,
        writers: Vec::new(),
        stalled: Vec::new(),
    };
    let report = build(&compliant(), &observed);
    assert!(
        report.summary.all_green,
        "a broken chain line is not a finding"
    );
    let markdown = render::markdown(&report);
    assert!(
        markdown.contains(&format!(
            "| `enclave-system.op-0` | 7 | `{}` | 2027-01-01T00:01:00Z | 2 |",
            hash('b')
        )),
        "{markdown}"
    );
    let json = render::json(&report).expect("json");
    assert!(json.contains("\"state\": \"read\""), "{json}");
}

#[test]
fn an_unreadable_checkpoints_config_map_is_said_not_failed() {
    let mut observed = observation();
    observed.chain = ChainObservation::Unreadable {
        config_map: "enclave-operator-checkpoints".into(),
        reason: "configmaps \"enclave-operator-checkpoints\" is forbidden".into(),
    };
    let report = build(&compliant(), &observed);
    assert!(report.summary.all_green);
    assert!(render::markdown(&report).contains(
        "ConfigMap `enclave-system/enclave-operator-checkpoints` could not be read: configmaps \"enclave-operator-checkpoints\" is forbidden"
    ));
}

#[test]
fn a_chain_head_that_stopped_while_its_writer_runs_is_a_finding() {
    use crate::evidence::{chain::Checkpoint, checkpoints::WriterState};
    let now = observation().generated_at;
    let ago = |s: i64| {
        now.checked_sub(jiff::SignedDuration::from_secs(s))
            .expect("time")
    };
    let checkpoint = |seq: u64, time: Timestamp| Checkpoint {
        seq,
        hash: crate::evidence::chain::Digest::of(&seq.to_le_bytes()),
        time,
    };
    let head = |chain: &str, seq: u64| ChainHead {
        chain: chain.into(),
        head: checkpoint(seq, ago(600)),
        checkpoints: 1,
        retired: None,
    };
    let writer = |chain: &str, flushed: u64, renewed: i64, failing: Option<i64>| WriterState {
        chain: chain.replace('.', "/"),
        key: chain.into(),
        holder: Some("op-0".into()),
        renewed: Some(ago(renewed)),
        lease_seconds: 180,
        closed: false,
        flushed: Some(checkpoint(flushed, ago(300))),
        stored: None,
        error: failing.map(|_| "ConfigMap is immutable".into()),
        failing_since: failing.map(ago),
    };
    let heads = vec![
        head("ns.stalled", 5),
        head("ns.quiet", 9),
        head("ns.dead", 3),
        head("ns.just-failed", 4),
    ];
    let writers = vec![
        // Flushed 7, stored 5, failing for 5 minutes, Lease renewed 10 s ago.
        writer("ns.stalled", 7, 10, Some(300)),
        // Nothing beyond its stored head.
        writer("ns.quiet", 9, 10, None),
        // Its writer is gone (Lease expired): not running, not stalled.
        writer("ns.dead", 8, 600, Some(600)),
        // One store failed 10 s ago: not yet a stall.
        writer("ns.just-failed", 5, 1, Some(10)),
        // Flushed, never stored.
        writer("ns.never", 2, 10, Some(300)),
    ];
    let mut observed = observation();
    observed.chain = ChainObservation::Read {
        config_map: "enclave-operator-checkpoints".into(),
        heads,
        problems: Vec::new(),
        writers,
        stalled: Vec::new(),
    };
    let report = build(&compliant(), &observed);
    let ChainObservation::Read { stalled, .. } = &report.chain else {
        panic!("read");
    };
    assert_eq!(stalled.len(), 2, "{stalled:?}");
    assert!(
        stalled[0].starts_with("chain ns/never: no checkpoint is stored"),
        "{stalled:?}"
    );
    assert!(
        stalled[1].starts_with("chain ns/stalled: the checkpointed head stopped at seq 5")
            && stalled[1].contains("written up to seq 7")
            && stalled[1].contains("ConfigMap is immutable"),
        "{stalled:?}"
    );
    assert_eq!(report.summary.findings, 2);
    assert!(!report.summary.all_green);
    let markdown = render::markdown(&report);
    assert!(
        markdown.contains("**Stalled (a finding):** chain ns/stalled"),
        "{markdown}"
    );
    assert!(markdown.contains("| runs: op-0 |"), "{markdown}");
    assert!(markdown.contains("| gone, not yet retired |"), "{markdown}");
}

#[test]
fn node_credentials_and_who_acts_as_approved_staff_are_listed_and_fail_access() {
    let mut catalog = compliant();
    // Impersonating the approved group (from any namespace's point of view: a
    // ClusterRoleBinding), and a kubelet grant to every node's credentials.
    let extra = RbacObjects::from_yaml(
        r#"apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: be-a-steward}
rules: [{apiGroups: [""], resources: [groups], resourceNames: [eu-data-stewards], verbs: [impersonate]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: eve-as-steward}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: be-a-steward}
subjects: [{kind: User, name: eve, apiGroup: rbac.authorization.k8s.io}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: kubelet-api}
rules: [{apiGroups: [""], resources: [nodes/proxy], verbs: [get, create]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: nodes-kubelet-api}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: kubelet-api}
subjects: [{kind: Group, name: "system:nodes", apiGroup: rbac.authorization.k8s.io}]
"#,
    )
    .expect("rbac");
    catalog.rbac.cluster_roles.extend(extra.cluster_roles);
    catalog
        .rbac
        .cluster_role_bindings
        .extend(extra.cluster_role_bindings);
    let report = report(&catalog);
    assert_eq!(
        verdicts(&report),
        [Verdict::Pass, Verdict::Pass, Verdict::Pass, Verdict::Fail]
    );
    let access = &report.policies[0].checks.access;
    assert_eq!(access.findings, 2);
    assert!(
        access.summary.contains("1 of them to node credentials"),
        "{}",
        access.summary
    );
    let markdown = render::markdown(&report);
    assert!(
        markdown.contains(
            "- ClusterRoleBinding eve-as-steward gives User eve ImpersonateGroups [eu-data-stewards] \
             via ClusterRole be-a-steward in all namespaces, acting as approved Group eu-data-stewards"
        ),
        "{markdown}"
    );
    assert!(
        markdown.contains(
            "- (node credentials) ClusterRoleBinding nodes-kubelet-api gives Group system:nodes \
             NodeProxy via ClusterRole kubelet-api in all namespaces"
        ),
        "{markdown}"
    );
}
