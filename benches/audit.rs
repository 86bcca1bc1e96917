//! The audit report for 10,000 pods in scope, from memory: building it — every
//! policy's placement, volumes, NetworkPolicy reachability and access exposure, with
//! the controllers' own decision code — and rendering it as Markdown and JSON.
//!
//! `cargo bench --bench audit`; docs/benchmarks.md records the results. The cluster
//! behind it, at roughly the ratios of bench-memory's: 500 nodes (200 in Dublin, 100 in
//! Norway, 200 in Virginia), 100 namespaces in scope of two policies with 100 pods each
//! (2,000 ReplicaSets of 5; every tenth pod a StatefulSet's with a claim bound to a
//! volume), 1% of the pods outside the enclave, 20 namespaces out of scope with 50 pods
//! each, the operator's fence plus one tenant NetworkPolicy per namespace, and a Role
//! and RoleBinding per namespace (five of them to someone not approved) besides 40
//! ClusterRoles and ClusterRoleBindings.

use std::{hint::black_box, sync::Arc, time::Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use enclave_operator::{
    access::rbac::RbacObjects,
    audit::{fixtures, render, report::build},
    catalog::StaticCatalog,
};
use serde_json::{Value, json};

const IN_SCOPE_NAMESPACES: usize = 100;
const PODS_PER_NAMESPACE: usize = 100;
const OUT_OF_SCOPE_NAMESPACES: usize = 20;
const PODS_PER_OUT_OF_SCOPE_NAMESPACE: usize = 50;
const NODES: usize = 500;
const PODS_PER_OWNER: usize = 5;
const SITE: &str = "node-restriction.kubernetes.io/enclave-site";
const OPERATOR_NAMESPACE: &str = "enclave-system";

fn parse<T: serde::de::DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).expect("the benchmark's objects parse")
}

fn site_of(node: usize) -> &'static str {
    match node % 5 {
        0 | 1 => "dublin",
        2 => "norway",
        _ => "virginia",
    }
}

fn world() -> StaticCatalog {
    let mut catalog = StaticCatalog::from_yaml(&format!(
        r#"
enclave:
  apiVersion: enclave.dev/v1alpha1
  kind: DataEnclave
  metadata: {{name: eu}}
  spec:
    jurisdiction: EU
    sites:
      - name: dublin
        nodeSelector: {{matchLabels: {{{SITE}: dublin}}}}
      - name: norway
        nodeSelector: {{matchLabels: {{{SITE}: norway}}}}
    storage: {{storageClassNames: [eu-dublin-ssd, eu-norway-ssd]}}
    access: {{approvedGroups: [eu-data-stewards]}}
policies:
  - apiVersion: enclave.dev/v1alpha1
    kind: ResidencyPolicy
    metadata: {{name: payments}}
    spec:
      enclave: eu
      match: {{namespaceSelector: {{matchLabels: {{enclave.dev/residency: payments}}}}}}
  - apiVersion: enclave.dev/v1alpha1
    kind: ResidencyPolicy
    metadata: {{name: analytics}}
    spec:
      enclave: eu
      match: {{namespaceSelector: {{matchLabels: {{enclave.dev/residency: analytics}}}}}}
storageClasses:
  - metadata: {{name: eu-dublin-ssd}}
    provisioner: x
    allowedTopologies: [{{matchLabelExpressions: [{{key: {SITE}, values: [dublin]}}]}}]
  - metadata: {{name: eu-norway-ssd}}
    provisioner: x
    allowedTopologies: [{{matchLabelExpressions: [{{key: {SITE}, values: [norway]}}]}}]
  - metadata: {{name: us-east-ssd}}
    provisioner: x
    allowedTopologies: [{{matchLabelExpressions: [{{key: {SITE}, values: [virginia]}}]}}]
"#
    ))
    .expect("the benchmark's fixture parses");

    for node in 0..NODES {
        let name = format!("node-{node}");
        let labels =
            json!({SITE: site_of(node), "topology.kubernetes.io/zone": format!("z{}", node % 3)});
        let node: k8s_openapi::api::core::v1::Node = parse(json!({
            "metadata": {"name": name, "labels": labels},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]},
        }));
        catalog.nodes.insert(name, Arc::new(node));
    }
    // Nodes of each kind, to place pods on.
    let inside: Vec<usize> = (0..NODES).filter(|n| site_of(*n) != "virginia").collect();
    let outside: Vec<usize> = (0..NODES).filter(|n| site_of(*n) == "virginia").collect();

    let mut rbac = String::from(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: cluster-admin, labels: {kubernetes.io/bootstrapping: rbac-defaults}}\nrules: [{apiGroups: ['*'], resources: ['*'], verbs: ['*']}]\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {name: cluster-admin, labels: {kubernetes.io/bootstrapping: rbac-defaults}}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cluster-admin}\nsubjects: [{kind: Group, name: 'system:masters', apiGroup: rbac.authorization.k8s.io}]\n",
    );
    for i in 0..40 {
        rbac.push_str(&format!(
            "---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {{name: viewer-{i}}}\nrules: [{{apiGroups: [''], resources: [pods, services, configmaps], verbs: [get, list, watch]}}]\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {{name: viewer-{i}}}\nroleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: viewer-{i}}}\nsubjects: [{{kind: Group, name: team-{i}, apiGroup: rbac.authorization.k8s.io}}]\n"
        ));
    }

    let mut pod_index = 0usize;
    let namespaces = (0..IN_SCOPE_NAMESPACES)
        .map(|i| (i, format!("tenant-{i}"), true))
        .chain((0..OUT_OF_SCOPE_NAMESPACES).map(|i| (i, format!("public-{i}"), false)));
    for (index, namespace, in_scope) in namespaces {
        let mut labels = std::collections::BTreeMap::new();
        if in_scope {
            let policy = if index % 10 < 6 {
                "payments"
            } else {
                "analytics"
            };
            labels.insert("enclave.dev/residency".to_string(), policy.to_string());
        }
        catalog.namespaces.insert(namespace.clone(), labels);
        let pods = if in_scope {
            PODS_PER_NAMESPACE
        } else {
            PODS_PER_OUT_OF_SCOPE_NAMESPACE
        };
        for p in 0..pods {
            pod_index += 1;
            let owner = p / PODS_PER_OWNER;
            let stateful = p.is_multiple_of(10);
            let (kind, owner_name) = if stateful {
                ("StatefulSet", format!("db-{owner}"))
            } else {
                ("ReplicaSet", format!("app-{owner}-7d9f8c"))
            };
            let owner_uid = format!("{namespace}-{owner_name}");
            // 1% of the pods in scope run in Virginia.
            let node = if in_scope && pod_index.is_multiple_of(100) {
                outside[pod_index % outside.len()]
            } else {
                inside[pod_index % inside.len()]
            };
            let name = format!("{owner_name}-{p}");
            let mut pod = json!({
                "metadata": {
                    "name": name,
                    "namespace": namespace,
                    "uid": format!("{namespace}-{name}"),
                    "creationTimestamp": "2027-01-01T00:00:00Z",
                    "labels": {"app": format!("app-{owner}"), "tier": "backend", "team": "payments"},
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": kind, "name": owner_name, "uid": owner_uid, "controller": true}],
                },
                "spec": {
                    "nodeName": format!("node-{node}"),
                    "containers": [{"name": "app", "ports": [{"name": "http", "containerPort": 8080}]}],
                },
                "status": {"phase": "Running"},
            });
            if stateful {
                let claim = format!("data-{name}");
                pod["spec"]["volumes"] =
                    json!([{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]);
                let volume = format!("pv-{namespace}-{name}");
                let site = site_of(node);
                let class = match site {
                    "dublin" => "eu-dublin-ssd",
                    "norway" => "eu-norway-ssd",
                    _ => "us-east-ssd",
                };
                catalog.claims.insert(
                    (namespace.clone(), claim.clone()),
                    Arc::new(parse(json!({
                        "metadata": {"name": claim, "namespace": namespace},
                        "spec": {"storageClassName": class, "volumeName": volume},
                    }))),
                );
                catalog.volumes.insert(
                    volume.clone(),
                    Arc::new(parse(json!({
                        "metadata": {"name": volume},
                        "spec": {
                            "storageClassName": class,
                            "capacity": {"storage": "1Gi"},
                            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [{"key": SITE, "operator": "In", "values": [site]}]}]}},
                        },
                    }))),
                );
            }
            catalog.pods.push(Arc::new(parse(pod)));
            if p.is_multiple_of(PODS_PER_OWNER) {
                catalog.owners.push(Arc::new(parse(json!({
                    "kind": kind,
                    "metadata": {"name": owner_name, "namespace": namespace, "uid": owner_uid},
                    "desired": PODS_PER_OWNER,
                    "templateLabels": {"app": format!("app-{owner}"), "tier": "backend", "team": "payments"},
                }))));
            }
        }
        // A tenant's own NetworkPolicy: its pods talk to each other.
        catalog.network_policies.push(Arc::new(parse(json!({
            "metadata": {"name": "same-namespace", "namespace": namespace},
            "spec": {"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]},
        }))));
        if in_scope {
            let who = if index % 20 == 7 {
                "{kind: User, name: contractor, apiGroup: rbac.authorization.k8s.io}"
            } else {
                "{kind: Group, name: eu-data-stewards, apiGroup: rbac.authorization.k8s.io}"
            };
            rbac.push_str(&format!(
                "---\napiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {{name: debug, namespace: {namespace}}}\nrules: [{{apiGroups: [''], resources: [pods/exec, pods/portforward], verbs: [create, get]}}]\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {{name: debug, namespace: {namespace}}}\nroleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: debug}}\nsubjects: [{who}]\n"
            ));
        }
    }
    catalog.rbac = RbacObjects::from_yaml(&rbac).expect("the benchmark's RBAC parses");

    // The operator's fence in every namespace in scope.
    fixtures::add_operator_fence(&mut catalog, OPERATOR_NAMESPACE);
    catalog
}

fn audit(c: &mut Criterion) {
    let catalog = world();
    let observation = fixtures::observation(OPERATOR_NAMESPACE);

    // Once, with the figures a reader wants besides criterion's.
    let start = Instant::now();
    let report = build(&catalog, &observation);
    let built = start.elapsed();
    let markdown = render::markdown(&report);
    let json = render::json(&report).expect("json");
    let rendered = start.elapsed() - built;
    assert_eq!(
        report.summary.pods_in_scope,
        IN_SCOPE_NAMESPACES * PODS_PER_NAMESPACE,
        "10,000 pods in scope"
    );
    assert!(!report.summary.all_green, "the planted findings are found");
    println!(
        "audit of {} pods in scope: build {built:?}, render {rendered:?} ({} KB Markdown, {} KB JSON), {} findings",
        report.summary.pods_in_scope,
        markdown.len() / 1024,
        json.len() / 1024,
        report.summary.findings
    );

    let mut group = c.benchmark_group("audit_10k_pods");
    group.sample_size(10);
    group.bench_function("build", |b| {
        b.iter(|| black_box(build(black_box(&catalog), &observation)))
    });
    group.bench_function("build_and_render_markdown_and_json", |b| {
        b.iter(|| {
            let report = build(black_box(&catalog), &observation);
            black_box((
                render::markdown(&report),
                render::json(&report).expect("json"),
            ))
        })
    });
    group.finish();
}

criterion_group!(benches, audit);
criterion_main!(benches);
