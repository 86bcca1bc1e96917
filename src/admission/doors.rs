//! Side doors, pure: what lets an in-scope pod's data past the enclave's fence or its
//! storage rules without any placement field saying so.
//!
//! - `spec.hostNetwork: true` puts the pod on its node's network namespace, where no
//!   NetworkPolicy applies: the fence does not hold it.
//! - Inline volumes that reach storage or a server by themselves (nfs, iscsi, rbd,
//!   cephfs, hostPath, inline CSI, ...) are mounted by the kubelet on the node's network,
//!   from wherever the pod names, with no storage class to judge.
//! - Generic ephemeral volumes are claims: judged like claims, by their template's
//!   class (the caller does that, it needs the cluster's storage; see
//!   [`ephemeral_claims`]).
//!
//! Always fine: configMap, secret, downwardAPI, projected (API objects the pod reads),
//! emptyDir (node-local scratch, gone with the pod), persistentVolumeClaim (judged at
//! the claim), and `image` (an OCI image mounted read-only, pulled the way every
//! container image is: nothing can be written out through it). A volume of a type this
//! build does not know is refused: where its data goes cannot be judged.
//!
//! The DataEnclave's `spec.podSecurity` lists the exceptions an enclave really needs.
//! The native engine's CEL ([`super::native::doors`]) decides exactly the same, with
//! the same messages.

use k8s_openapi::api::core::v1::{PersistentVolumeClaimTemplate, PodSpec, Volume};

use crate::crd::{InlineVolumeType, PodSecurity};

/// What a pod volume is, as the side-door rules see it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum VolumeKind<'a> {
    /// Reaches nothing by itself: configMap, secret, downwardAPI, projected, emptyDir,
    /// persistentVolumeClaim, image.
    Contained,
    /// A generic ephemeral volume: a claim made from its template.
    Ephemeral(Option<&'a PersistentVolumeClaimTemplate>),
    /// An inline CSI volume of this driver.
    Csi(&'a str),
    /// An inline volume that reaches storage or a server by itself.
    Door(InlineVolumeType),
    /// None of the types this build knows.
    Unknown,
}

/// The field of `volume` set for one inline type.
fn has(volume: &Volume, kind: InlineVolumeType) -> bool {
    use InlineVolumeType as T;
    match kind {
        T::AwsElasticBlockStore => volume.aws_elastic_block_store.is_some(),
        T::AzureDisk => volume.azure_disk.is_some(),
        T::AzureFile => volume.azure_file.is_some(),
        T::Cephfs => volume.cephfs.is_some(),
        T::Cinder => volume.cinder.is_some(),
        T::Fc => volume.fc.is_some(),
        T::FlexVolume => volume.flex_volume.is_some(),
        T::Flocker => volume.flocker.is_some(),
        T::GcePersistentDisk => volume.gce_persistent_disk.is_some(),
        T::GitRepo => volume.git_repo.is_some(),
        T::Glusterfs => volume.glusterfs.is_some(),
        T::HostPath => volume.host_path.is_some(),
        T::Iscsi => volume.iscsi.is_some(),
        T::Nfs => volume.nfs.is_some(),
        T::PhotonPersistentDisk => volume.photon_persistent_disk.is_some(),
        T::PortworxVolume => volume.portworx_volume.is_some(),
        T::Quobyte => volume.quobyte.is_some(),
        T::Rbd => volume.rbd.is_some(),
        T::ScaleIo => volume.scale_io.is_some(),
        T::Storageos => volume.storageos.is_some(),
        T::VsphereVolume => volume.vsphere_volume.is_some(),
    }
}

/// The fields of the volume types that reach nothing by themselves, as the API names
/// them (the native engine tests the same fields).
pub const CONTAINED: [&str; 7] = [
    "configMap",
    "secret",
    "downwardAPI",
    "projected",
    "emptyDir",
    "persistentVolumeClaim",
    "image",
];

/// What `volume` is. Doors are looked for first, in [`InlineVolumeType::ALL`] order,
/// then CSI, ephemeral and the contained types (a volume has one type once the API
/// server has validated it; the order only matters to a mutating webhook that sees it
/// before).
pub fn kind(volume: &Volume) -> VolumeKind<'_> {
    if let Some(door) = InlineVolumeType::ALL.into_iter().find(|t| has(volume, *t)) {
        return VolumeKind::Door(door);
    }
    if let Some(csi) = &volume.csi {
        return VolumeKind::Csi(&csi.driver);
    }
    if let Some(ephemeral) = &volume.ephemeral {
        return VolumeKind::Ephemeral(ephemeral.volume_claim_template.as_ref());
    }
    let contained = volume.config_map.is_some()
        || volume.secret.is_some()
        || volume.downward_api.is_some()
        || volume.projected.is_some()
        || volume.empty_dir.is_some()
        || volume.persistent_volume_claim.is_some()
        || volume.image.is_some();
    if contained {
        VolumeKind::Contained
    } else {
        VolumeKind::Unknown
    }
}

/// A list for a message: the items, or `none`.
pub fn listed<T: AsRef<str>>(items: impl IntoIterator<Item = T>) -> String {
    let items: Vec<String> = items.into_iter().map(|i| i.as_ref().to_string()).collect();
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}

/// The message for `spec.hostNetwork: true`.
pub const HOST_NETWORK: &str = "spec.hostNetwork: true puts the pod on its node's network, outside every NetworkPolicy of the enclave's fence (an enclave allows it with spec.podSecurity.allowHostNetwork)";

/// The message for an inline volume of a door type (`at` is `spec.volumes[i]`).
pub fn door_message(at: &str, volume: &str, field: &str, allowed: &PodSecurity) -> String {
    format!(
        "{at}.{field} (volume {volume}) is mounted by the kubelet from wherever it points, outside the enclave's fence and storage classes; inline volume types the enclave allows (spec.podSecurity.allowedVolumeTypes): {}",
        listed(allowed.allowed_volume_types.iter().map(|t| t.field()))
    )
}

/// The message for an inline CSI volume of a driver the enclave does not allow.
pub fn csi_message(at: &str, volume: &str, driver: &str, allowed: &PodSecurity) -> String {
    format!(
        "{at}.csi (volume {volume}) uses CSI driver \"{driver}\", which mounts it from wherever it points, outside the enclave's storage classes; inline CSI drivers the enclave allows (spec.podSecurity.allowedCSIDrivers): {}",
        listed(&allowed.allowed_csi_drivers)
    )
}

/// The message for a volume of a type this build does not know.
pub fn unknown_message(at: &str, volume: &str) -> String {
    format!(
        "{at} (volume {volume}) is of a type enclave-operator does not know, so where its data goes cannot be judged"
    )
}

/// The first side door of the pod the enclave does not allow, as a message naming the
/// field: `spec.hostNetwork` first, then the volumes in order.
pub fn first_door(spec: &PodSpec, allowed: &PodSecurity) -> Option<String> {
    if spec.host_network == Some(true) && !allowed.allow_host_network {
        return Some(HOST_NETWORK.to_string());
    }
    spec.volumes
        .iter()
        .flatten()
        .enumerate()
        .find_map(|(i, volume)| {
            let at = format!("spec.volumes[{i}]");
            match kind(volume) {
                VolumeKind::Contained | VolumeKind::Ephemeral(_) => None,
                VolumeKind::Door(t) if allowed.allowed_volume_types.contains(&t) => None,
                VolumeKind::Door(t) => Some(door_message(&at, &volume.name, t.field(), allowed)),
                VolumeKind::Csi(driver)
                    if allowed.allowed_csi_drivers.iter().any(|d| d == driver) =>
                {
                    None
                }
                VolumeKind::Csi(driver) => Some(csi_message(&at, &volume.name, driver, allowed)),
                VolumeKind::Unknown => Some(unknown_message(&at, &volume.name)),
            }
        })
}

/// The claims the pod's generic ephemeral volumes will make, with where each is in the
/// pod: (`spec.volumes[i].ephemeral (volume <name>)`, template). A template that is
/// missing is judged as an empty one: the API server refuses it anyway.
pub fn ephemeral_claims(spec: &PodSpec) -> Vec<(String, PersistentVolumeClaimTemplate)> {
    spec.volumes
        .iter()
        .flatten()
        .enumerate()
        .filter_map(|(i, volume)| match kind(volume) {
            VolumeKind::Ephemeral(template) => Some((
                format!("spec.volumes[{i}].ephemeral (volume {})", volume.name),
                template.cloned().unwrap_or_default(),
            )),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> PodSpec {
        serde_yaml::from_str(yaml).expect("fixture")
    }

    fn allowed(yaml: &str) -> PodSecurity {
        serde_yaml::from_str(yaml).expect("fixture")
    }

    #[test]
    fn host_network_is_a_door_unless_allowed() {
        let pod = spec("containers: []\nhostNetwork: true");
        let message = first_door(&pod, &PodSecurity::default()).expect("refused");
        assert!(message.starts_with("spec.hostNetwork: true"), "{message}");
        assert_eq!(first_door(&pod, &allowed("allowHostNetwork: true")), None);
        assert_eq!(
            first_door(
                &spec("containers: []\nhostNetwork: false"),
                &PodSecurity::default()
            ),
            None
        );
    }

    #[test]
    fn every_door_type_is_refused_by_name_and_allowed_when_listed() {
        for t in InlineVolumeType::ALL {
            let field = t.field();
            let pod = spec(&format!(
                "containers: []\nvolumes: [{{name: ok, configMap: {{name: c}}}}, {{name: door, {field}: {{}}}}]"
            ));
            let message = first_door(&pod, &PodSecurity::default())
                .unwrap_or_else(|| panic!("{field} is a door"));
            assert!(
                message.starts_with(&format!("spec.volumes[1].{field} (volume door)"))
                    && message.ends_with("(spec.podSecurity.allowedVolumeTypes): none"),
                "{message}"
            );
            let listed = allowed(&format!("allowedVolumeTypes: [{field}]"));
            assert_eq!(first_door(&pod, &listed), None, "{field} allowed");
        }
    }

    #[test]
    fn contained_volumes_and_ephemeral_ones_are_not_doors() {
        let pod = spec(
            "containers: []\nvolumes:\n- {name: a, configMap: {name: c}}\n- {name: b, secret: {secretName: s}}\n- {name: c, emptyDir: {}}\n- {name: d, downwardAPI: {}}\n- {name: e, projected: {sources: []}}\n- {name: f, persistentVolumeClaim: {claimName: x}}\n- {name: g, image: {reference: registry.example/data:1}}\n- {name: h, ephemeral: {volumeClaimTemplate: {spec: {storageClassName: us-east-ssd}}}}",
        );
        assert_eq!(first_door(&pod, &PodSecurity::default()), None);
        let claims = ephemeral_claims(&pod);
        assert_eq!(claims.len(), 1);
        assert_eq!(claims[0].0, "spec.volumes[7].ephemeral (volume h)");
        assert_eq!(
            claims[0].1.spec.storage_class_name.as_deref(),
            Some("us-east-ssd")
        );
    }

    #[test]
    fn inline_csi_is_allowed_per_driver() {
        let pod = spec("containers: []\nvolumes: [{name: v, csi: {driver: nfs.csi.k8s.io}}]");
        let message = first_door(
            &pod,
            &allowed("allowedCSIDrivers: [secrets-store.csi.k8s.io]"),
        )
        .expect("another driver");
        assert!(
            message.contains("spec.volumes[0].csi (volume v)")
                && message.contains("\"nfs.csi.k8s.io\"")
                && message.ends_with("allowedCSIDrivers): secrets-store.csi.k8s.io"),
            "{message}"
        );
        assert_eq!(
            first_door(&pod, &allowed("allowedCSIDrivers: [nfs.csi.k8s.io]")),
            None
        );
        // Allowing a volume type does not allow CSI drivers.
        assert!(first_door(&pod, &allowed("allowedVolumeTypes: [nfs]")).is_some());
    }

    /// A volume of a type this build does not parse comes out with no known field.
    #[test]
    fn a_volume_of_an_unknown_type_is_refused() {
        let pod = spec("containers: []\nvolumes: [{name: v, teleport: {to: mars}}]");
        let message = first_door(&pod, &PodSecurity::default()).expect("refused");
        assert!(
            message
                .contains("spec.volumes[0] (volume v) is of a type enclave-operator does not know"),
            "{message}"
        );
    }

    #[test]
    fn the_crd_spells_every_type_as_the_pod_spec_does() {
        for t in InlineVolumeType::ALL {
            assert_eq!(
                serde_json::to_value(t).expect("serializes"),
                serde_json::Value::String(t.field().to_string())
            );
        }
    }
}
