//! The objects of a guarded store that parse, shared ([`Parsed`]).
//!
//! Why: a guarded store (`DeserializeGuard<K>`) holds each object inside its guard, and
//! reading it as a `K` meant copying it out, whole, on every read. Admission reads every
//! ResidencyPolicy and the enclaves on every review, and the authorizer every policy and
//! grant on every decision; with eleven policies that copying was most of what a webhook
//! review cost in the live operator (docs/benchmarks.md, "Admission path"). Each object is
//! now copied once per resource version and shared after that.

use std::sync::{Arc, Mutex, PoisonError};

use kube::{Resource, core::DeserializeGuard};

/// Where an object is and which version of it: namespace, name, resource version.
type Version = (Option<String>, Option<String>, Option<String>);

/// The parsed objects of one guarded store, as of the versions they were copied at.
pub struct Parsed<K> {
    memo: Mutex<Memo<K>>,
}

struct Memo<K> {
    /// Every guard's version (invalid ones too), in the order of the guards read.
    versions: Vec<Version>,
    /// The guards' objects that parse, in the same order.
    objects: Vec<Arc<K>>,
}

impl<K> Default for Parsed<K> {
    fn default() -> Self {
        Self {
            memo: Mutex::new(Memo {
                versions: Vec::new(),
                objects: Vec::new(),
            }),
        }
    }
}

fn version<K: Resource>(guard: &DeserializeGuard<K>) -> Version {
    let meta = guard.meta();
    (
        meta.namespace.clone(),
        meta.name.clone(),
        meta.resource_version.clone(),
    )
}

impl<K: Resource + Clone> Parsed<K> {
    /// The objects of `guards` (a store's state) that parse, by namespace and name: the
    /// ones copied before when every guard is at the version it was copied at, copied
    /// anew otherwise. An object without a resource version (never one from the API
    /// server) is copied on every read.
    pub fn of(&self, mut guards: Vec<Arc<DeserializeGuard<K>>>) -> Vec<Arc<K>> {
        guards.sort_by(|a, b| {
            (&a.meta().namespace, &a.meta().name).cmp(&(&b.meta().namespace, &b.meta().name))
        });
        let mut memo = self.memo.lock().unwrap_or_else(PoisonError::into_inner);
        let current = guards.len() == memo.versions.len()
            && guards.iter().zip(&memo.versions).all(|(guard, copied)| {
                let meta = guard.meta();
                meta.resource_version.is_some()
                    && (&meta.namespace, &meta.name, &meta.resource_version)
                        == (&copied.0, &copied.1, &copied.2)
            });
        if !current {
            memo.versions = guards.iter().map(|g| version(g)).collect();
            memo.objects = guards
                .iter()
                .filter_map(|g| g.0.as_ref().ok().cloned().map(Arc::new))
                .collect();
        }
        memo.objects.clone()
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::core::error_boundary::InvalidObject;

    use super::*;

    fn guard(name: &str, version: Option<&str>, data: &str) -> Arc<DeserializeGuard<ConfigMap>> {
        let mut map = ConfigMap::default();
        map.metadata.name = Some(name.into());
        map.metadata.resource_version = version.map(str::to_string);
        map.data = Some([("v".to_string(), data.to_string())].into());
        Arc::new(DeserializeGuard(Ok(map)))
    }

    fn data(objects: &[Arc<ConfigMap>]) -> Vec<String> {
        objects
            .iter()
            .map(|o| o.data.as_ref().expect("data")["v"].clone())
            .collect()
    }

    #[test]
    fn objects_are_copied_once_per_version_and_read_in_name_order() {
        let parsed = Parsed::default();
        let first = parsed.of(vec![
            guard("b", Some("2"), "b2"),
            guard("a", Some("1"), "a1"),
        ]);
        assert_eq!(data(&first), ["a1", "b2"]);
        // The same versions, in another order: the same shared objects.
        let again = parsed.of(vec![
            guard("a", Some("1"), "a1"),
            guard("b", Some("2"), "b2"),
        ]);
        assert!(first.iter().zip(&again).all(|(x, y)| Arc::ptr_eq(x, y)));
        // A new version of one, one more, one gone: read anew.
        let changed = parsed.of(vec![
            guard("b", Some("3"), "b3"),
            guard("c", Some("1"), "c1"),
        ]);
        assert_eq!(data(&changed), ["b3", "c1"]);
        // Without a resource version nothing can say it is unchanged: read every time.
        let unversioned = parsed.of(vec![guard("d", None, "d1")]);
        let read_again = parsed.of(vec![guard("d", None, "d2")]);
        assert_eq!(data(&unversioned), ["d1"]);
        assert_eq!(data(&read_again), ["d2"]);
    }

    #[test]
    fn an_object_that_does_not_parse_is_left_out_and_its_fix_is_read() {
        let parsed = Parsed::default();
        let meta = kube::api::ObjectMeta {
            name: Some("bad".into()),
            resource_version: Some("5".into()),
            ..Default::default()
        };
        let invalid: Arc<DeserializeGuard<ConfigMap>> =
            Arc::new(DeserializeGuard(Err(InvalidObject {
                error: "spec: missing field".into(),
                metadata: meta,
            })));
        let objects = parsed.of(vec![invalid, guard("good", Some("1"), "g1")]);
        assert_eq!(data(&objects), ["g1"]);
        let fixed = parsed.of(vec![
            guard("bad", Some("6"), "fixed"),
            guard("good", Some("1"), "g1"),
        ]);
        assert_eq!(data(&fixed), ["fixed", "g1"]);
    }
}
