use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// What the native admission engine's expressions read about an enclave that changes
/// without the enclave's spec changing: its node names, its volumes, the default class. Written by the operator only,
/// one per DataEnclave (same name, owned by it); read by the API server as the params
/// of the enclave's admission policies. A kind of its own, not a ConfigMap: an
/// admission policy's author must be able to read every object of its params' kind.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "enclave.dev",
    version = "v1alpha1",
    kind = "EnclaveParams",
    plural = "enclaveparams",
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct EnclaveParamsSpec {
    /// The enclave's nodes, each with the site it belongs to.
    #[serde(default)]
    pub nodes: BTreeMap<String, String>,
    /// The PersistentVolumes whose data lives inside the enclave, each with its storage
    /// class: a claim naming a volume must name one of these.
    #[serde(default)]
    pub volumes: BTreeMap<String, String>,
    /// The cluster's default StorageClass (for StatefulSet claim templates without a
    /// class; claims get it from the API server before admission).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_storage_class: Option<String>,
}
