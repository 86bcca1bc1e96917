//! The custom resources of enclave.dev/v1alpha1, one file per kind. Doc comments on
//! these types become the CRD schema's descriptions (`kubectl explain`), and the CEL
//! rules here are enforced by the API server before the operator ever sees an object.

mod access_grant;
mod data_enclave;
mod residency_policy;
mod volume_migration;

pub use access_grant::*;
pub use data_enclave::*;
pub use residency_policy::*;
pub use volume_migration::*;

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    Condition, LabelSelector, LabelSelectorRequirement,
};
use kube::CustomResourceExt;
use kube::KubeSchema;
use schemars::JsonSchema;
use schemars::{Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};

/// The API group of every kind this operator serves.
pub const GROUP: &str = "enclave.dev";

/// Every CRD this operator owns, in the order `enclave-operator crd` prints them.
pub fn all()
-> Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>
{
    vec![
        DataEnclave::crd(),
        ResidencyPolicy::crd(),
        AccessGrant::crd(),
        AccessApproval::crd(),
        AccessAnomaly::crd(),
        VolumeMigration::crd(),
    ]
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

/// A label selector, as `metav1.LabelSelector` but with bounded sizes and a closed set
/// of operators, so that the API server checks it (an unknown operator is refused with
/// the allowed ones) and CEL rules on it stay within their cost budget. Label values,
/// expression keys and operators are checked by this schema as Kubernetes checks them;
/// `matchLabels` keys by the chart's ValidatingAdmissionPolicy (a CRD's CEL budget
/// cannot bound the length of a map key) and, whatever is installed, by the operator,
/// which refuses to resolve an enclave whose selectors no node could ever match.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Selector {
    /// Labels that must be present with exactly these values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "match_labels_schema")]
    pub match_labels: BTreeMap<String, String>,
    /// Further requirements on node labels, all of which must hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub match_expressions: Vec<SelectorRequirement>,
}

/// One requirement on a label.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(self.operator in ['In', 'NotIn']) == (has(self.values) && size(self.values) > 0)").message("values must be given for In and NotIn, and only for them"))]
pub struct SelectorRequirement {
    /// The label key.
    #[schemars(
        length(min = 1, max = 317),
        regex(
            pattern = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
        )
    )]
    pub key: String,
    /// How the label relates to `values`.
    pub operator: SelectorOperator,
    /// Values for In and NotIn; empty for Exists and DoesNotExist.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 64),
        inner(
            length(max = 63),
            regex(pattern = r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
        )
    )]
    pub values: Vec<String>,
}

/// Label selector operators.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum SelectorOperator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

impl SelectorOperator {
    pub fn as_str(self) -> &'static str {
        match self {
            SelectorOperator::In => "In",
            SelectorOperator::NotIn => "NotIn",
            SelectorOperator::Exists => "Exists",
            SelectorOperator::DoesNotExist => "DoesNotExist",
        }
    }
}

impl Selector {
    /// The same selector as a `metav1.LabelSelector`, the form matching code takes.
    pub fn to_label_selector(&self) -> LabelSelector {
        LabelSelector {
            match_labels: (!self.match_labels.is_empty()).then(|| self.match_labels.clone()),
            match_expressions: (!self.match_expressions.is_empty()).then(|| {
                self.match_expressions
                    .iter()
                    .map(|r| LabelSelectorRequirement {
                        key: r.key.clone(),
                        operator: r.operator.as_str().to_string(),
                        values: (!r.values.is_empty()).then(|| r.values.clone()),
                    })
                    .collect()
            }),
        }
    }
}

/// `matchLabels`: at most 16 labels, each value a label value (checked by the schema);
/// the keys are checked as [`Selector`] says.
fn match_labels_schema(_: &mut SchemaGenerator) -> Schema {
    schemars::json_schema!({
        "type": "object",
        "maxProperties": 16,
        "additionalProperties": {
            "type": "string",
            "maxLength": 63,
            "pattern": r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$"
        }
    })
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
