//! Admission objects compared in full with what the operator would write, and repaired.
//!
//! A forced server-side apply takes back every field the operator sets, but leaves
//! fields it does not set to whoever added them: a `matchCondition` or an
//! `objectSelector` added by hand survives every apply and can switch the gate off
//! for good (`request.userInfo.username != ''` as a match condition, an object
//! selector no pod carries). So after each apply the part that decides what is
//! enforced (`webhooks` of a configuration, `spec` of a policy or binding) is
//! compared in full with what the operator would write, normalised by the API server
//! itself: a server-side dry-run replace of the desired object returns it with the
//! server's defaults filled in exactly as they are stored. Any difference is repaired
//! by a real replace (an apply cannot remove fields another manager owns), and reported
//! ([`Tampered`]) so that the controller records it (`AdmissionTampered`).
//!
//! Not `managedFields`: anyone who can edit the object can rewrite them too, so they
//! cannot say who changed what.

use kube::{Api, Client, Resource, ResourceExt, api::PostParams};
use serde_json::Value;

use crate::names::FIELD_MANAGER;

/// Differences named at most, per object.
const MAX_FIELDS: usize = 16;

/// An admission object that differed from what the operator would write, and was repaired.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tampered {
    pub kind: &'static str,
    pub name: String,
    /// JSON pointers of the fields that differed (at most [`MAX_FIELDS`]).
    pub fields: Vec<String>,
}

impl Tampered {
    pub fn message(&self) -> String {
        format!(
            "{} {} differed from what the operator writes at {}; repaired",
            self.kind,
            self.name,
            self.fields.join(", ")
        )
    }
}

/// How an object was found after the apply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Held {
    /// Exactly as the operator would write it.
    Exact,
    /// It was not; it is now.
    Repaired(Tampered),
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("could not compare {kind} {name} with what the operator writes: {source}")]
    Api {
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("{kind} {name} still differs after its repair at {}", fields.join(", "))]
    NotRepaired {
        kind: &'static str,
        name: String,
        fields: Vec<String>,
    },
}

/// The JSON pointers where `held` differs from `expected`, in order, at most
/// [`MAX_FIELDS`]. Objects are compared key by key, lists of equal length item by item;
/// anything else that differs is named whole. Pure.
pub fn differences(expected: &Value, held: &Value) -> Vec<String> {
    let mut out = Vec::new();
    walk(expected, held, String::new(), &mut out);
    out
}

fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

fn walk(expected: &Value, held: &Value, at: String, out: &mut Vec<String>) {
    if out.len() >= MAX_FIELDS || expected == held {
        return;
    }
    match (expected, held) {
        (Value::Object(e), Value::Object(h)) => {
            let mut keys: Vec<&String> = e.keys().chain(h.keys()).collect();
            keys.sort();
            keys.dedup();
            for key in keys {
                let path = format!("{at}/{}", escape(key));
                match (e.get(key), h.get(key)) {
                    (Some(e), Some(h)) => walk(e, h, path, out),
                    _ => out.push(path),
                }
                if out.len() >= MAX_FIELDS {
                    return;
                }
            }
        }
        (Value::Array(e), Value::Array(h)) if e.len() == h.len() => {
            for (i, (e, h)) in e.iter().zip(h).enumerate() {
                walk(e, h, format!("{at}/{i}"), out);
            }
        }
        _ => out.push(if at.is_empty() { "/".into() } else { at }),
    }
}

fn part<K: serde::Serialize>(object: &K, pointer: &str) -> Value {
    serde_json::to_value(object)
        .ok()
        .and_then(|v| v.pointer(pointer).cloned())
        .unwrap_or(Value::Null)
}

/// Compares `applied` (what the API server answered to the apply) with `desired` at
/// `pointer`, normalised by a dry-run replace, and repairs it by a replace when they
/// differ.
pub async fn verify<K>(
    client: &Client,
    kind: &'static str,
    pointer: &str,
    applied: &K,
    desired: &K,
) -> Result<Held, Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::ClusterResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::Serialize
        + serde::de::DeserializeOwned,
{
    let name = applied.name_any();
    let api = Api::<K>::all(client.clone());
    let mut wanted = desired.clone();
    // Replaces exactly the version the apply answered with: a change in between fails
    // (409) and the next pass compares again.
    wanted.meta_mut().resource_version = applied.resource_version();
    let api_error = |source| Error::Api {
        kind,
        name: name.clone(),
        source,
    };
    let dry_run = PostParams {
        dry_run: true,
        field_manager: Some(FIELD_MANAGER.into()),
    };
    let expected = api
        .replace(&name, &dry_run, &wanted)
        .await
        .map_err(api_error)?;
    let expected = part(&expected, pointer);
    let fields = differences(&expected, &part(applied, pointer));
    if fields.is_empty() {
        return Ok(Held::Exact);
    }
    let write = PostParams {
        dry_run: false,
        field_manager: Some(FIELD_MANAGER.into()),
    };
    let repaired = api
        .replace(&name, &write, &wanted)
        .await
        .map_err(api_error)?;
    let left = differences(&expected, &part(&repaired, pointer));
    if !left.is_empty() {
        return Err(Error::NotRepaired {
            kind,
            name,
            fields: left,
        });
    }
    tracing::warn!(kind, name = %name, fields = ?fields, "an admission object differed from what the operator writes: repaired");
    Ok(Held::Repaired(Tampered { kind, name, fields }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_hand_added_match_condition_or_object_selector_is_named() {
        let expected = json!({"webhooks": [{
            "name": "pods.p.policies.enclave.dev",
            "matchConditions": [{"name": "not-from-a-node", "expression": "x"}],
            "objectSelector": {},
            "failurePolicy": "Fail"
        }]});
        assert!(differences(&expected, &expected).is_empty());
        let mut held = expected.clone();
        held["webhooks"][0]["matchConditions"]
            .as_array_mut()
            .expect("list")
            .push(json!({"name": "sneaky", "expression": "false"}));
        held["webhooks"][0]["objectSelector"] = json!({"matchLabels": {"never": "true"}});
        assert_eq!(
            differences(&expected, &held),
            [
                "/webhooks/0/matchConditions",
                "/webhooks/0/objectSelector/matchLabels"
            ]
        );
        let mut relaxed = expected.clone();
        relaxed["webhooks"][0]["failurePolicy"] = json!("Ignore");
        assert_eq!(
            differences(&expected, &relaxed),
            ["/webhooks/0/failurePolicy"]
        );
        assert_eq!(differences(&expected, &Value::Null), ["/"]);
    }

    #[test]
    fn differences_are_bounded_and_keys_escaped() {
        let expected = json!({});
        let held: serde_json::Map<String, Value> =
            (0..100).map(|i| (format!("k/{i:03}"), json!(i))).collect();
        let found = differences(&expected, &Value::Object(held));
        assert_eq!(found.len(), MAX_FIELDS);
        assert_eq!(found[0], "/k~1000");
    }
}
