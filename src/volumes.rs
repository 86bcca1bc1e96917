//! The volume rules, pure, shared by admission (both engines decide the same) and the
//! residency controller: where a claim's data would live, and whether that is inside
//! the enclave.
//!
//! - A claim whose beta annotation `volume.beta.kubernetes.io/storage-class` and
//!   `spec.storageClassName` name different classes is refused: Kubernetes provisions
//!   by the annotation, so the field would say one thing and the data go elsewhere.
//! - A claim naming a PersistentVolume (`spec.volumeName`) is judged by that volume.
//! - Otherwise by the class that provisions it: the beta annotation first (the PV
//!   controller and external provisioners read it before the field), then
//!   `spec.storageClassName`, or the cluster's default
//!   StorageClass when it names none (the API server's DefaultStorageClass admission
//!   plugin sets it on a new claim before our checks run, and not when the annotation
//!   is there; StatefulSet claim templates and generic ephemeral volumes are judged by
//!   the default the operator knows). No class and no default: refused.
//! - A volume is inside when its class is one of the enclave's and, if it has node
//!   affinity, some node of the enclave satisfies it.
//! - An enclave StorageClass whose `allowedTopologies` let it provision on a node
//!   outside the enclave (or that has none, while nodes outside exist) leaks.

use std::{collections::BTreeMap, sync::Arc};

use k8s_openapi::api::{
    core::v1::{Node, PersistentVolume, PersistentVolumeClaimSpec},
    storage::v1::StorageClass,
};
use kube::ResourceExt;

use crate::placement;

/// The annotation that marks the cluster's default StorageClass.
pub const DEFAULT_CLASS_ANNOTATION: &str = "storageclass.kubernetes.io/is-default-class";

/// The deprecated annotation that names a claim's storage class. Kubernetes still
/// honours it, before `spec.storageClassName` (`GetPersistentVolumeClaimClass`).
pub const BETA_CLASS_ANNOTATION: &str = "volume.beta.kubernetes.io/storage-class";

/// Where a claim's storage class comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClassSource {
    /// The beta annotation.
    Annotation,
    /// `spec.storageClassName`.
    Field,
    /// Neither: the cluster's default, when there is one.
    Default,
}

/// The class that will provision a claim, as Kubernetes picks it: the beta annotation,
/// then the field; `Ok(None)` when it names neither. `Err` when the two disagree, with
/// the reason.
pub fn claim_class<'a>(
    annotations: &'a BTreeMap<String, String>,
    spec: &'a PersistentVolumeClaimSpec,
) -> Result<Option<(&'a str, ClassSource)>, String> {
    let annotated = annotations.get(BETA_CLASS_ANNOTATION).map(String::as_str);
    let field = spec.storage_class_name.as_deref();
    match (annotated, field) {
        (Some(a), Some(f)) if a != f => Err(disagreement(a, f)),
        (Some(a), _) => Ok(Some((a, ClassSource::Annotation))),
        (None, Some(f)) => Ok(Some((f, ClassSource::Field))),
        (None, None) => Ok(None),
    }
}

/// Why a claim whose annotation and field disagree is refused.
pub fn disagreement(annotated: &str, field: &str) -> String {
    format!(
        "its annotation {BETA_CLASS_ANNOTATION} names storage class \"{annotated}\" and its spec.storageClassName \"{field}\"; Kubernetes provisions by the annotation: remove it or make the two agree"
    )
}

/// Why a claim of `class` (named by `source`) is outside an enclave whose classes are
/// `allowed` (as [`allowed_classes`] says them).
pub fn class_outside(class: &str, source: ClassSource, allowed: &str) -> String {
    match source {
        ClassSource::Annotation => format!(
            "its annotation {BETA_CLASS_ANNOTATION} names storage class \"{class}\", not one of the enclave's ({allowed})"
        ),
        ClassSource::Field => {
            format!("it uses storage class \"{class}\", not one of the enclave's ({allowed})")
        }
        ClassSource::Default => format!(
            "it names no storage class and the cluster's default ({class}) is not one of the enclave's ({allowed})"
        ),
    }
}

/// Why a claim that names no class is outside when the cluster has no default.
pub fn no_class(allowed: &str) -> String {
    format!(
        "it names no storage class and the cluster has no default StorageClass; name one of the enclave's ({allowed})"
    )
}

/// The enclave's classes, for messages.
pub fn allowed_classes(classes: &[String]) -> String {
    if classes.is_empty() {
        "the enclave lists none".into()
    } else {
        classes.join(", ")
    }
}

/// The cluster's default StorageClass, if exactly one is marked (several: the newest,
/// as the API server's DefaultStorageClass plugin picks).
pub fn default_class(classes: &[Arc<StorageClass>]) -> Option<String> {
    classes
        .iter()
        .filter(|c| {
            c.annotations()
                .get(DEFAULT_CLASS_ANNOTATION)
                .map(String::as_str)
                == Some("true")
        })
        .max_by_key(|c| {
            (
                c.metadata.creation_timestamp.clone().map(|t| t.0),
                c.name_any(),
            )
        })
        .map(|c| c.name_any())
}

/// Why a PersistentVolume's data lives outside the enclave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VolumeOutside<'v> {
    /// Its storage class (empty when it names none) is not one of the enclave's.
    Class(&'v str),
    /// Its node affinity admits no node of the enclave.
    Unreachable,
}

/// The enclave's side of the rules.
pub struct Storage<'a> {
    /// The enclave's storage classes.
    pub classes: &'a [String],
    /// The cluster's default StorageClass.
    pub default_class: Option<&'a str>,
    /// The nodes of the enclave (name, labels), for volumes' node affinity.
    pub enclave_nodes: &'a [Arc<Node>],
}

impl Storage<'_> {
    fn allowed(&self) -> String {
        allowed_classes(self.classes)
    }

    /// Why the volume's data lives outside the enclave, if it does, as facts: the one
    /// rule the volume report ([`Storage::volume_outside`]) and migration's check of a
    /// pod's claims share; each words it for its reader.
    pub fn volume_outside_reason<'v>(
        &self,
        volume: &'v PersistentVolume,
    ) -> Option<VolumeOutside<'v>> {
        let spec = volume.spec.as_ref();
        let class = spec
            .and_then(|s| s.storage_class_name.as_deref())
            .unwrap_or_default();
        if !self.classes.iter().any(|c| c == class) {
            return Some(VolumeOutside::Class(class));
        }
        let terms = spec
            .and_then(|s| s.node_affinity.as_ref())
            .and_then(|a| a.required.as_ref())
            .map(|r| r.node_selector_terms.as_slice());
        if let Some(terms) = terms
            && !self.enclave_nodes.iter().any(|n| {
                terms
                    .iter()
                    .any(|t| placement::term_matches_node(t, &n.name_any(), n.labels()))
            })
        {
            return Some(VolumeOutside::Unreachable);
        }
        None
    }

    /// Why the volume lives outside the enclave, if it does.
    pub fn volume_outside(&self, volume: &PersistentVolume) -> Option<String> {
        let name = volume.name_any();
        Some(match self.volume_outside_reason(volume)? {
            VolumeOutside::Class(class) => format!(
                "PersistentVolume {name} is of storage class {class:?}, not one of the enclave's ({})",
                self.allowed()
            ),
            VolumeOutside::Unreachable => format!(
                "PersistentVolume {name} can only be reached from nodes outside the enclave (its node affinity)"
            ),
        })
    }

    /// Why a claim with these annotations and this spec would keep its data outside the
    /// enclave, if it would. `volume` looks a PersistentVolume up by name.
    pub fn claim_outside(
        &self,
        annotations: &BTreeMap<String, String>,
        spec: &PersistentVolumeClaimSpec,
        volume: &dyn Fn(&str) -> Option<Arc<PersistentVolume>>,
    ) -> Option<String> {
        let named = match claim_class(annotations, spec) {
            Ok(named) => named,
            Err(why) => return Some(why),
        };
        if let Some(name) = spec.volume_name.as_deref().filter(|n| !n.is_empty()) {
            return match volume(name) {
                Some(pv) => self.volume_outside(&pv),
                None => Some(format!(
                    "it names PersistentVolume {name}, which does not exist, so where its data lives cannot be known"
                )),
            };
        }
        let (class, source) = match named {
            Some(named) => named,
            None => match self.default_class {
                Some(class) => (class, ClassSource::Default),
                None => return Some(no_class(&self.allowed())),
            },
        };
        (!self.classes.iter().any(|c| c == class))
            .then(|| class_outside(class, source, &self.allowed()))
    }

    /// Why an enclave StorageClass can provision outside the enclave, if it can: some
    /// node outside the enclave matches one of its `allowedTopologies` terms (or it has
    /// none, and such nodes exist).
    pub fn class_reaches_outside(
        &self,
        class: &StorageClass,
        all_nodes: &[Arc<Node>],
    ) -> Option<String> {
        let outside: Vec<&Arc<Node>> = all_nodes
            .iter()
            .filter(|n| {
                !self
                    .enclave_nodes
                    .iter()
                    .any(|e| e.name_any() == n.name_any())
            })
            .collect();
        let name = class.name_any();
        let terms = class.allowed_topologies.as_deref().unwrap_or_default();
        if terms.is_empty() {
            return outside.first().map(|node| {
                format!(
                    "StorageClass {name} has no allowedTopologies, so it may provision where node {} (outside the enclave) runs",
                    node.name_any()
                )
            });
        }
        outside.iter().find_map(|node| {
            let labels = node.labels();
            terms
                .iter()
                .any(|term| {
                    term.match_label_expressions.iter().flatten().all(|e| {
                        labels.get(&e.key).is_some_and(|v| e.values.contains(v))
                    })
                })
                .then(|| {
                    format!(
                        "StorageClass {name} allows topologies that node {} (outside the enclave) is in",
                        node.name_any()
                    )
                })
        })
    }
}

/// A map of the enclave's PersistentVolumes, by name, for the facts the native engine compiles into its policies:
/// the volumes a claim may name.
pub fn inside_volumes(
    storage: &Storage,
    volumes: &[Arc<PersistentVolume>],
) -> BTreeMap<String, String> {
    volumes
        .iter()
        .filter(|v| storage.volume_outside(v).is_none())
        .map(|v| {
            let class = v
                .spec
                .as_ref()
                .and_then(|s| s.storage_class_name.clone())
                .unwrap_or_default();
            (v.name_any(), class)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml<T: serde::de::DeserializeOwned>(text: &str) -> T {
        serde_yaml::from_str(text).expect("fixture")
    }

    fn nodes() -> Vec<Arc<Node>> {
        ["dublin-a:dublin", "norway-a:norway", "virginia-a:virginia"]
            .iter()
            .map(|s| {
                let (name, site) = s.split_once(':').expect("pair");
                Arc::new(yaml(&format!(
                    "metadata: {{name: {name}, labels: {{site: {site}, topology.kubernetes.io/zone: {site}-1a}}}}"
                )))
            })
            .collect()
    }

    fn storage<'a>(
        classes: &'a [String],
        enclave_nodes: &'a [Arc<Node>],
        default: Option<&'a str>,
    ) -> Storage<'a> {
        Storage {
            classes,
            default_class: default,
            enclave_nodes,
        }
    }

    #[test]
    fn claims_are_judged_by_class_default_or_volume() {
        let classes = vec!["eu-dublin-ssd".to_string(), "eu-norway-ssd".to_string()];
        let all = nodes();
        let inside = all[..2].to_vec();
        let s = storage(&classes, &inside, Some("us-east-ssd"));
        let none = |_: &str| None;
        let plain = BTreeMap::new();
        let us: PersistentVolumeClaimSpec = yaml("{storageClassName: us-east-ssd}");
        let message = s.claim_outside(&plain, &us, &none).expect("outside");
        assert!(
            message.contains("us-east-ssd") && message.contains("eu-dublin-ssd, eu-norway-ssd"),
            "{message}"
        );
        assert!(
            s.claim_outside(&plain, &yaml("{storageClassName: eu-dublin-ssd}"), &none)
                .is_none()
        );
        // No class: the default decides.
        assert!(
            s.claim_outside(&plain, &yaml("{}"), &none)
                .is_some_and(|m| m.contains("us-east-ssd"))
        );
        let eu_default = storage(&classes, &inside, Some("eu-norway-ssd"));
        assert!(
            eu_default
                .claim_outside(&plain, &yaml("{}"), &none)
                .is_none()
        );
        let no_default = storage(&classes, &inside, None);
        assert!(
            no_default
                .claim_outside(&plain, &yaml("{}"), &none)
                .is_some_and(|m| m.contains("no default StorageClass"))
        );
        // A named volume decides, whatever the claim's class says.
        let pv: Arc<PersistentVolume> = Arc::new(yaml(
            "metadata: {name: pv-us}\nspec: {storageClassName: eu-dublin-ssd, nodeAffinity: {required: {nodeSelectorTerms: [{matchExpressions: [{key: site, operator: In, values: [virginia]}]}]}}}",
        ));
        let lookup = |name: &str| (name == "pv-us").then(|| pv.clone());
        let named: PersistentVolumeClaimSpec =
            yaml("{volumeName: pv-us, storageClassName: eu-dublin-ssd}");
        assert!(
            s.claim_outside(&plain, &named, &lookup)
                .is_some_and(|m| m.contains("outside the enclave"))
        );
        let missing: PersistentVolumeClaimSpec = yaml("{volumeName: nope}");
        assert!(
            s.claim_outside(&plain, &missing, &lookup)
                .is_some_and(|m| m.contains("does not exist"))
        );
        assert_eq!(inside_volumes(&s, &[pv]).len(), 0);
    }

    /// Kubernetes provisions by the beta annotation before the field: it is read first,
    /// alone it decides, and a claim whose annotation and field disagree is refused.
    #[test]
    fn the_beta_annotation_decides_before_the_field() {
        let classes = vec!["eu-dublin-ssd".to_string(), "eu-norway-ssd".to_string()];
        let all = nodes();
        let s = storage(&classes, &all[..2], Some("eu-norway-ssd"));
        let none = |_: &str| None;
        let annotated =
            |class: &str| BTreeMap::from([(BETA_CLASS_ANNOTATION.to_string(), class.to_string())]);
        let eu_field: PersistentVolumeClaimSpec = yaml("{storageClassName: eu-dublin-ssd}");
        let message = s
            .claim_outside(&annotated("us-east-ssd"), &eu_field, &none)
            .expect("the annotation and the field disagree");
        assert!(
            message.contains("\"us-east-ssd\"")
                && message.contains("\"eu-dublin-ssd\"")
                && message.contains(BETA_CLASS_ANNOTATION),
            "{message}"
        );
        // Alone, the annotation is the class (the default does not apply).
        let bare: PersistentVolumeClaimSpec = yaml("{}");
        let message = s
            .claim_outside(&annotated("us-east-ssd"), &bare, &none)
            .expect("outside by its annotation");
        assert!(
            message.contains("annotation") && message.contains("us-east-ssd"),
            "{message}"
        );
        assert_eq!(
            s.claim_outside(&annotated("eu-dublin-ssd"), &bare, &none),
            None
        );
        // Both, agreeing: fine.
        assert_eq!(
            s.claim_outside(&annotated("eu-dublin-ssd"), &eu_field, &none),
            None
        );
        // The disagreement is refused even when a volume is named.
        let named: PersistentVolumeClaimSpec =
            yaml("{volumeName: pv-1, storageClassName: eu-dublin-ssd}");
        assert!(
            s.claim_outside(&annotated("eu-norway-ssd"), &named, &none)
                .is_some_and(|m| m.contains("make the two agree"))
        );
        assert_eq!(
            claim_class(&annotated("a"), &bare),
            Ok(Some(("a", ClassSource::Annotation)))
        );
        assert_eq!(claim_class(&BTreeMap::new(), &bare), Ok(None));
    }

    #[test]
    fn classes_reaching_outside_are_found() {
        let classes = vec!["eu".to_string()];
        let all = nodes();
        let inside = all[..2].to_vec();
        let s = storage(&classes, &inside, None);
        let unbounded: StorageClass = yaml("metadata: {name: eu}\nprovisioner: x");
        assert!(
            s.class_reaches_outside(&unbounded, &all)
                .is_some_and(|m| m.contains("no allowedTopologies"))
        );
        let eu_only: StorageClass = yaml(
            "metadata: {name: eu}\nprovisioner: x\nallowedTopologies: [{matchLabelExpressions: [{key: site, values: [dublin, norway]}]}]",
        );
        assert_eq!(s.class_reaches_outside(&eu_only, &all), None);
        let leaky: StorageClass = yaml(
            "metadata: {name: eu}\nprovisioner: x\nallowedTopologies: [{matchLabelExpressions: [{key: site, values: [dublin, virginia]}]}]",
        );
        assert!(
            s.class_reaches_outside(&leaky, &all)
                .is_some_and(|m| m.contains("virginia-a"))
        );
    }

    #[test]
    fn the_newest_marked_class_is_the_default() {
        let classes: Vec<Arc<StorageClass>> = vec![
            Arc::new(yaml(
                "metadata: {name: a, creationTimestamp: '2026-01-01T00:00:00Z', annotations: {storageclass.kubernetes.io/is-default-class: 'true'}}\nprovisioner: x",
            )),
            Arc::new(yaml(
                "metadata: {name: b, creationTimestamp: '2026-02-01T00:00:00Z', annotations: {storageclass.kubernetes.io/is-default-class: 'true'}}\nprovisioner: x",
            )),
            Arc::new(yaml("metadata: {name: c}\nprovisioner: x")),
        ];
        assert_eq!(default_class(&classes).as_deref(), Some("b"));
        assert_eq!(default_class(&classes[2..]), None);
    }
}
