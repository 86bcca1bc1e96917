//! The volume step, pure: claims of the policy's namespaces whose data lives (or would
//! be provisioned) outside the enclave, and enclave StorageClasses that can provision
//! outside it — for volumes that predate the policy too.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Node;
use kube::ResourceExt;

use crate::{
    catalog::Catalog,
    crd::{ResidencyPolicy, Violation},
    scope::{self, ResolvedEnclave},
    volumes::{self, Storage},
};

/// What the volume step found.
#[derive(Debug, Default)]
pub struct VolumeAssessment {
    pub violations: Vec<Violation>,
}

/// Judges every claim of the policy's namespaces and the enclave's storage classes.
pub fn assess<C: Catalog>(
    policy: &ResidencyPolicy,
    enclave: &ResolvedEnclave,
    catalog: &C,
) -> VolumeAssessment {
    let namespaces = catalog.namespaces();
    let nodes = catalog.nodes();
    let enclave_nodes: Vec<Arc<Node>> = nodes
        .iter()
        .filter(|n| enclave.contains_node(n.labels()))
        .cloned()
        .collect();
    let classes = catalog.storage_classes();
    let default_class = volumes::default_class(&classes);
    let storage = Storage {
        classes: &enclave.enclave.spec.storage.storage_class_names,
        default_class: default_class.as_deref(),
        enclave_nodes: &enclave_nodes,
    };
    let mut assessment = VolumeAssessment::default();
    for claim in catalog.claims() {
        let namespace = claim.namespace().unwrap_or_default();
        let in_scope = namespaces
            .get(&namespace)
            .is_some_and(|labels| scope::covers_namespace(policy, &namespace, labels));
        if !in_scope {
            continue;
        }
        let Some(spec) = claim.spec.as_ref() else {
            continue;
        };
        let bound = spec.volume_name.as_deref().filter(|v| !v.is_empty());
        let (reason, why) = match bound {
            Some(volume) => match catalog.volume(volume) {
                Some(pv) => match storage.volume_outside(&pv) {
                    Some(why) => ("VolumeOutsideEnclave", why),
                    None => continue,
                },
                // Bound to a volume not (yet) in the cache: nothing to judge yet.
                None => continue,
            },
            None => {
                match storage.claim_outside(claim.annotations(), spec, &|n| catalog.volume(n)) {
                    Some(why) => ("ClaimOutsideEnclave", format!("claim {why}")),
                    None => continue,
                }
            }
        };
        assessment.violations.push(Violation {
            kind: "PersistentVolumeClaim".into(),
            namespace: Some(namespace),
            name: claim.name_any(),
            reason: reason.into(),
            message: format!(
                "{why}; data in scope of policy {} must stay on the storage of DataEnclave {}",
                policy.name_any(),
                enclave.name()
            ),
        });
    }
    for class in classes
        .iter()
        .filter(|c| storage.classes.iter().any(|name| *name == c.name_any()))
    {
        if let Some(why) = storage.class_reaches_outside(class, &nodes) {
            assessment.violations.push(Violation {
                kind: "StorageClass".into(),
                namespace: None,
                name: class.name_any(),
                reason: "StorageClassReachesOutside".into(),
                message: format!("{why}: restrict its allowedTopologies to the enclave's sites"),
            });
        }
    }
    assessment
        .violations
        .sort_by(|a, b| (&a.kind, &a.namespace, &a.name).cmp(&(&b.kind, &b.namespace, &b.name)));
    assessment
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::StaticCatalog;

    #[test]
    fn claims_and_classes_outside_are_reported() {
        let extra = "
storageClasses:
- metadata: {name: eu-dublin-ssd}
  provisioner: x
  allowedTopologies: [{matchLabelExpressions: [{key: node-restriction.kubernetes.io/enclave-site, values: [dublin]}]}]
- metadata: {name: eu-norway-ssd}
  provisioner: x
";
        let yaml = format!(
            "{}{extra}",
            include_str!("testdata/world.yaml").replace(
                "claims:\n",
                "claims:\n  - metadata: {name: pending-us, namespace: api}\n    spec: {storageClassName: us-east-ssd}\n  - metadata: {name: fine, namespace: api}\n    spec: {storageClassName: eu-dublin-ssd}\n"
            )
        );
        let catalog = StaticCatalog::from_yaml(&yaml).expect("fixture");
        let policy = catalog.policies()[0].clone();
        let enclave = scope::resolve_enclave(&catalog, &policy).expect("enclave");
        let found: Vec<(String, String, String)> = assess(&policy, &enclave, &catalog)
            .violations
            .into_iter()
            .map(|v| (v.kind, v.name, v.reason))
            .collect();
        assert_eq!(
            found,
            [
                (
                    "PersistentVolumeClaim".to_string(),
                    "pending-us".to_string(),
                    "ClaimOutsideEnclave".to_string()
                ),
                (
                    "PersistentVolumeClaim".to_string(),
                    "data".to_string(),
                    "VolumeOutsideEnclave".to_string()
                ),
                (
                    "StorageClass".to_string(),
                    "eu-norway-ssd".to_string(),
                    "StorageClassReachesOutside".to_string()
                ),
            ]
        );
    }
}
