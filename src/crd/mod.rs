//! The custom resources of enclave.dev/v1alpha1, one file per kind. Doc comments on
//! these types become the CRD schema's descriptions (`kubectl explain`), and the CEL
//! rules here are enforced by the API server before the operator ever sees an object.

mod data_enclave;
mod residency_policy;

pub use data_enclave::*;
pub use residency_policy::*;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResourceExt;
use schemars::{Schema, SchemaGenerator};

/// The API group of every kind this operator serves.
pub const GROUP: &str = "enclave.dev";

/// Every CRD this operator owns, in the order `enclave-operator crd` prints them.
pub fn all()
-> Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>
{
    vec![DataEnclave::crd(), ResidencyPolicy::crd()]
}

/// All CRDs as one multi-document YAML stream, as committed in `crds/`.
pub fn all_yaml() -> Result<String, serde_yaml::Error> {
    let mut out = String::new();
    for crd in all() {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&crd)?);
    }
    Ok(out)
}

/// Conditions are a list-map keyed by `type`, as in every built-in Kubernetes status,
/// so that server-side apply merges them entry by entry.
pub(crate) fn conditions_schema(generator: &mut SchemaGenerator) -> Schema {
    let mut schema = generator.subschema_for::<Vec<Condition>>();
    schema.insert("x-kubernetes-list-type".into(), "map".into());
    schema.insert(
        "x-kubernetes-list-map-keys".into(),
        serde_json::json!(["type"]),
    );
    schema
}

#[cfg(test)]
mod tests {
    /// `crds/` and the chart's copy are generated from these types; a change to the
    /// types without `make crds` fails here.
    #[test]
    fn committed_crds_match_the_rust_types() {
        let generated = super::all_yaml().expect("CRDs serialize");
        for path in [
            "crds/enclave.dev.yaml",
            "charts/enclave-operator/crds/enclave.dev.yaml",
        ] {
            let committed =
                std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/").to_owned() + path)
                    .unwrap_or_else(|e| panic!("{path}: {e}; run `make crds`"));
            assert!(
                committed == generated,
                "{path} is out of date with the Rust types; run `make crds`"
            );
        }
    }
}
