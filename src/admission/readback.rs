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

/// Annotation with a hash of what the operator writes into an admission object. The
/// object held before a write carries the hash of the operator's last write: when it
/// equals the hash of what it writes now, any difference the write takes back was made
/// by someone else. (Whoever edits the object can change the hash too: the object is
/// then still repaired, but the edit reads as an update of the operator's own and goes
/// unrecorded.)
pub const SPEC_HASH: &str = "enclave.dev/spec-hash";

/// The object with [`SPEC_HASH`] set to a hash of it, and the hash.
pub fn stamp<K: Resource + serde::Serialize>(mut object: K) -> (K, String) {
    let hash = serde_json::to_string(&object)
        .map(|json| crate::names::short_hash(&json))
        .unwrap_or_default();
    object
        .meta_mut()
        .annotations
        .get_or_insert_with(Default::default)
        .insert(SPEC_HASH.into(), hash.clone());
    (object, hash)
}

/// What a forced apply took back by itself (atomic fields such as a binding's
/// `matchResources`, and fields the operator sets, revert without a trace): the fields
/// where the object held before the write differs from the one after, when the one
/// before was written from exactly what the operator writes now (`hash`). Pure.
pub fn reverted<K: Resource + serde::Serialize>(
    before: Option<&K>,
    after: &K,
    hash: &str,
    pointer: &str,
) -> Vec<String> {
    let Some(before) = before else {
        return Vec::new();
    };
    if before
        .meta()
        .annotations
        .as_ref()
        .and_then(|a| a.get(SPEC_HASH))
        .map(String::as_str)
        != Some(hash)
    {
        return Vec::new();
    }
    prefixed(
        differences(&part(after, pointer), &part(before, pointer)),
        pointer,
    )
}

fn prefixed(fields: Vec<String>, pointer: &str) -> Vec<String> {
    fields
        .into_iter()
        .map(|f| {
            if f == "/" {
                pointer.to_string()
            } else {
                format!("{pointer}{f}")
            }
        })
        .collect()
}

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

/// The resourceVersion of each admission object last found exactly as the operator
/// writes it. While an object still has that version nothing changed it since, and the
/// comparison is skipped: its dry-run replace makes the API server compile a policy's
/// CEL again (with thousands of node names, most of a pass on a busy API server).
#[derive(Default)]
pub struct Verified(std::sync::Mutex<std::collections::HashMap<(&'static str, String), String>>);

impl Verified {
    /// Was `kind`/`name` found exact at `version`?
    pub fn holds(&self, kind: &'static str, name: &str, version: Option<&str>) -> bool {
        let Some(version) = version else {
            return false;
        };
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(kind, name.to_string()))
            .is_some_and(|held| held == version)
    }

    /// `kind`/`name` was found exact at `version` (`None`: forget it).
    pub fn record(&self, kind: &'static str, name: &str, version: Option<String>) {
        let mut held = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match version {
            Some(version) => held.insert((kind, name.to_string()), version),
            None => held.remove(&(kind, name.to_string())),
        };
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

/// Attempts when the object changes between reading and replacing it (the API server's
/// type checker writes an admission policy's status right after each change).
const ATTEMPTS: usize = 4;

/// Compares `applied` (what the API server answered to the apply) with `desired` at
/// `pointer`, normalised by a dry-run replace, and repairs it by a replace when they
/// differ. `before`: the object held before the apply, and `hash` the [`SPEC_HASH`]
/// of `desired`, to report what the apply itself took back ([`reverted`]).
pub async fn verify<K>(
    client: &Client,
    kind: &'static str,
    pointer: &str,
    (before, hash): (Option<&K>, &str),
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
    let api_error = |source| Error::Api {
        kind,
        name: name.clone(),
        source,
    };
    let at = |fields: Vec<String>| prefixed(fields, pointer);
    let by_the_apply = reverted(before, applied, hash, pointer);
    let mut held = applied.clone();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut wanted = desired.clone();
        // Replaces exactly the version compared: a change in between fails (409) and is
        // compared again.
        wanted.meta_mut().resource_version = held.resource_version();
        let dry_run = PostParams {
            dry_run: true,
            field_manager: Some(FIELD_MANAGER.into()),
        };
        let expected = match api.replace(&name, &dry_run, &wanted).await {
            Ok(expected) => part(&expected, pointer),
            Err(kube::Error::Api(status)) if status.code == 409 && attempt < ATTEMPTS => {
                held = api.get(&name).await.map_err(api_error)?;
                continue;
            }
            Err(error) => return Err(api_error(error)),
        };
        let fields = differences(&expected, &part(&held, pointer));
        if fields.is_empty() {
            if by_the_apply.is_empty() {
                return Ok(Held::Exact);
            }
            tracing::warn!(kind, name = %name, fields = ?by_the_apply, "an admission object differed from what the operator writes: repaired by the write");
            return Ok(Held::Repaired(Tampered {
                kind,
                name,
                fields: by_the_apply,
            }));
        }
        let write = PostParams {
            dry_run: false,
            field_manager: Some(FIELD_MANAGER.into()),
        };
        let repaired = match api.replace(&name, &write, &wanted).await {
            Ok(repaired) => repaired,
            Err(kube::Error::Api(status)) if status.code == 409 && attempt < ATTEMPTS => {
                held = api.get(&name).await.map_err(api_error)?;
                continue;
            }
            Err(error) => return Err(api_error(error)),
        };
        let left = differences(&expected, &part(&repaired, pointer));
        if !left.is_empty() {
            return Err(Error::NotRepaired {
                kind,
                name,
                fields: at(left),
            });
        }
        let mut fields = at(fields);
        fields.extend(
            by_the_apply
                .iter()
                .filter(|f| !fields.contains(f))
                .cloned()
                .collect::<Vec<_>>(),
        );
        tracing::warn!(kind, name = %name, fields = ?fields, "an admission object differed from what the operator writes: repaired");
        return Ok(Held::Repaired(Tampered { kind, name, fields }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_object_is_trusted_exact_only_at_the_version_it_was_found_exact() {
        let verified = Verified::default();
        let kind = "ValidatingAdmissionPolicy";
        assert!(
            !verified.holds(kind, "enclave-check.p", Some("7")),
            "never compared"
        );
        verified.record(kind, "enclave-check.p", Some("7".into()));
        assert!(verified.holds(kind, "enclave-check.p", Some("7")));
        assert!(
            !verified.holds(kind, "enclave-check.p", Some("8")),
            "changed since (an edit, or the type checker's status)"
        );
        assert!(!verified.holds(kind, "enclave-check.q", Some("7")));
        assert!(!verified.holds(
            "ValidatingAdmissionPolicyBinding",
            "enclave-check.p",
            Some("7")
        ));
        assert!(!verified.holds(kind, "enclave-check.p", None));
        verified.record(kind, "enclave-check.p", None);
        assert!(
            !verified.holds(kind, "enclave-check.p", Some("7")),
            "repaired: compare again"
        );
    }
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
    fn what_the_write_took_back_counts_only_when_the_operator_wrote_the_same_before() {
        use k8s_openapi::api::admissionregistration::v1::ValidatingAdmissionPolicyBinding;
        let binding = |selector: Value| -> ValidatingAdmissionPolicyBinding {
            serde_json::from_value(json!({
                "metadata": {"name": "enclave-check.p"},
                "spec": {"policyName": "enclave-check.p", "validationActions": ["Deny"],
                         "matchResources": {"objectSelector": selector}}
            }))
            .expect("binding")
        };
        let (after, hash) = stamp(binding(json!({})));
        let mut before = binding(json!({"matchLabels": {"never": "set"}}));
        assert!(
            reverted(Some(&before), &after, &hash, "/spec").is_empty(),
            "unstamped: the operator's own update"
        );
        before.metadata.annotations = after.metadata.annotations.clone();
        assert_eq!(
            reverted(Some(&before), &after, &hash, "/spec"),
            ["/spec/matchResources/objectSelector/matchLabels"]
        );
        assert!(reverted(Some(&after), &after, &hash, "/spec").is_empty());
        assert!(reverted(None, &after, &hash, "/spec").is_empty(), "created");
        assert!(
            reverted(Some(&before), &after, "another", "/spec").is_empty(),
            "what the operator writes changed"
        );
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
