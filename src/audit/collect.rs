//! Reading the cluster for the audit: every kind a verdict depends on, listed (never
//! watched) in pages of `--page-size` objects with continue tokens, each object stripped
//! to what decisions read as its page arrives, so that memory grows with what is kept
//! (about what the operator's own caches keep), not with what the API server sends.
//!
//! Every object is decoded on its own ([`DeserializeGuard`]): one that does not parse as
//! its kind is reported as [`Unreadable`] and the listing goes on. A kind that cannot be
//! listed at all (no right to, API down) fails the audit: a report missing a kind would
//! pass what it never saw. VolumeMigrations are the exception ([`moves`]): no verdict
//! depends on them, so a failed list is reported and the audit goes on.
//!
//! Each kind is listed as its own consistent snapshot (a continue token keeps the list's
//! resource version); kinds are listed one after the other, so an object that changes
//! between two lists may be seen in two states, as with `kubectl get` of several kinds.

use std::{collections::BTreeMap, fmt::Debug, sync::Arc};

use k8s_openapi::api::{
    coordination::v1::Lease,
    core::v1::{ConfigMap, Namespace, Node, NodeStatus, PersistentVolume, PersistentVolumeClaim},
    networking::v1::NetworkPolicy,
    rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding},
    storage::v1::StorageClass,
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{ListParams, ObjectMeta},
    core::DeserializeGuard,
};
use serde::de::DeserializeOwned;

use super::report::{ChainObservation, Unreadable, chain_heads};
use crate::{
    cache::{CachedPod, CachedReplicaSet, CachedStatefulSet},
    catalog::StaticCatalog,
    crd::{DataEnclave, ResidencyPolicy},
    evidence::checkpoints::{self, CHECKPOINTS},
    volumes::DEFAULT_CLASS_ANNOTATION,
};

/// Why the cluster could not be read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot list {kind} (the auditor needs get and list on it): {}", explain(.source))]
    List {
        kind: String,
        #[source]
        source: kube::Error,
    },
}

/// An API error as the API server words it (its reason, code and message), without
/// the debug dump of the whole Status that kube's own message carries.
pub fn explain(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => {
            format!("{} ({}): {}", status.reason, status.code, status.message)
        }
        other => other.to_string(),
    }
}

/// The cluster as the report reads it, and what could not be parsed.
#[derive(Default)]
pub struct Collected {
    pub catalog: StaticCatalog,
    pub unreadable: Vec<Unreadable>,
    /// Every VolumeMigration (none when the kind is not installed).
    pub moves: Vec<crate::crd::VolumeMigration>,
}

/// Lists every object of a kind, page by page, handing each parsed object to `keep`
/// and each unparsable one to `unreadable`.
async fn list_all<K>(
    client: &Client,
    page_size: u32,
    unreadable: &mut Vec<Unreadable>,
    mut keep: impl FnMut(K),
) -> Result<(), Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    let api: Api<DeserializeGuard<K>> = Api::all(client.clone());
    let kind = K::kind(&()).to_string();
    let mut params = ListParams::default().limit(page_size);
    loop {
        let page = api.list(&params).await.map_err(|source| Error::List {
            kind: kind.clone(),
            source,
        })?;
        for item in page.items {
            match item.0 {
                Ok(object) => keep(object),
                Err(invalid) => unreadable.push(Unreadable {
                    kind: kind.clone(),
                    namespace: invalid.metadata.namespace,
                    name: invalid.metadata.name.unwrap_or_default(),
                    error: invalid.error,
                }),
            }
        }
        match page.metadata.continue_.filter(|token| !token.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(()),
        }
    }
}

/// Metadata without what no decision reads: managed fields (often the largest part of
/// an object), annotations (`kubectl apply` keeps a whole copy of the object there),
/// resource versions and finalizers.
fn lean_meta(meta: &mut ObjectMeta) {
    meta.managed_fields = None;
    meta.annotations = None;
    meta.resource_version = None;
    meta.finalizers = None;
    meta.generate_name = None;
}

/// A node's name, labels and Ready condition: its image list and status are often tens
/// of KB, and placement reads only labels.
fn lean_node(node: Node) -> Node {
    let ready = node
        .status
        .and_then(|s| s.conditions)
        .map(|c| c.into_iter().filter(|c| c.type_ == "Ready").collect());
    Node {
        metadata: ObjectMeta {
            name: node.metadata.name,
            labels: node.metadata.labels,
            ..ObjectMeta::default()
        },
        spec: None,
        status: Some(NodeStatus {
            conditions: ready,
            ..NodeStatus::default()
        }),
    }
}

/// Reads everything the report needs. Fails only when a kind cannot be listed.
pub async fn collect(client: &Client, page_size: u32) -> Result<Collected, Error> {
    let mut unreadable = Vec::new();
    let mut catalog = StaticCatalog::default();

    list_all::<ResidencyPolicy>(client, page_size, &mut unreadable, |mut p| {
        p.metadata.managed_fields = None;
        catalog.policies.push(Arc::new(p));
    })
    .await?;
    // The Catalog contract: policies in name order.
    catalog.policies.sort_by_key(|p| p.name_any());
    list_all::<DataEnclave>(client, page_size, &mut unreadable, |mut e| {
        e.metadata.managed_fields = None;
        catalog.enclaves.insert(e.name_any(), Arc::new(e));
    })
    .await?;
    list_all::<Namespace>(client, page_size, &mut unreadable, |n| {
        catalog
            .namespaces
            .insert(n.name_any(), n.metadata.labels.unwrap_or_default());
    })
    .await?;
    list_all::<Node>(client, page_size, &mut unreadable, |n| {
        catalog.nodes.insert(n.name_any(), Arc::new(lean_node(n)));
    })
    .await?;
    // Pods are decoded as CachedPod: containers, most of the status and every volume
    // but PVCs are skipped by serde and never materialised.
    list_all::<CachedPod>(client, page_size, &mut unreadable, |mut p| {
        lean_meta(&mut p.metadata);
        catalog.pods.push(Arc::new(p));
    })
    .await?;
    list_all::<PersistentVolumeClaim>(client, page_size, &mut unreadable, |mut c| {
        lean_meta(&mut c.metadata);
        c.status = None;
        let key = (c.namespace().unwrap_or_default(), c.name_any());
        catalog.claims.insert(key, Arc::new(c));
    })
    .await?;
    list_all::<PersistentVolume>(client, page_size, &mut unreadable, |mut v| {
        lean_meta(&mut v.metadata);
        v.status = None;
        catalog.volumes.insert(v.name_any(), Arc::new(v));
    })
    .await?;
    list_all::<StorageClass>(client, page_size, &mut unreadable, |mut c| {
        // The default-class annotation is the one annotation a decision reads.
        let default = c
            .metadata
            .annotations
            .as_mut()
            .and_then(|a| a.remove_entry(DEFAULT_CLASS_ANNOTATION));
        lean_meta(&mut c.metadata);
        c.metadata.annotations = default.map(|(k, v)| BTreeMap::from([(k, v)]));
        catalog.storage_classes.push(Arc::new(c));
    })
    .await?;
    list_all::<NetworkPolicy>(client, page_size, &mut unreadable, |mut n| {
        lean_meta(&mut n.metadata);
        catalog.network_policies.push(Arc::new(n));
    })
    .await?;
    list_all::<CachedReplicaSet>(client, page_size, &mut unreadable, |mut r| {
        lean_meta(&mut r.metadata);
        catalog.owners.push(Arc::new(r.owner()));
    })
    .await?;
    list_all::<CachedStatefulSet>(client, page_size, &mut unreadable, |mut s| {
        lean_meta(&mut s.metadata);
        catalog.owners.push(Arc::new(s.owner()));
    })
    .await?;
    // RBAC keeps its labels: aggregation and the bootstrapping label read them.
    list_all::<Role>(client, page_size, &mut unreadable, |mut r| {
        lean_meta(&mut r.metadata);
        catalog.rbac.roles.push(r);
    })
    .await?;
    list_all::<ClusterRole>(client, page_size, &mut unreadable, |mut r| {
        lean_meta(&mut r.metadata);
        catalog.rbac.cluster_roles.push(r);
    })
    .await?;
    list_all::<RoleBinding>(client, page_size, &mut unreadable, |mut b| {
        lean_meta(&mut b.metadata);
        catalog.rbac.role_bindings.push(b);
    })
    .await?;
    list_all::<ClusterRoleBinding>(client, page_size, &mut unreadable, |mut b| {
        lean_meta(&mut b.metadata);
        catalog.rbac.cluster_role_bindings.push(b);
    })
    .await?;

    // Access grants, the decisions on them and the anomalies, judged by the report.
    list_all::<crate::crd::AccessGrant>(client, page_size, &mut unreadable, |mut g| {
        lean_meta(&mut g.metadata);
        catalog.grants.grants.push(Arc::new(g));
    })
    .await?;
    list_all::<crate::crd::AccessApproval>(client, page_size, &mut unreadable, |mut a| {
        lean_meta(&mut a.metadata);
        catalog.grants.approvals.push(Arc::new(a));
    })
    .await?;
    list_all::<crate::crd::AccessAnomaly>(client, page_size, &mut unreadable, |mut a| {
        lean_meta(&mut a.metadata);
        catalog.grants.anomalies.push(Arc::new(a));
    })
    .await?;

    let moves = moves(client, page_size, &mut unreadable).await;

    unreadable.sort();
    Ok(Collected {
        catalog,
        unreadable,
        moves,
    })
}

/// Every VolumeMigration. Unlike the kinds above, a list that fails does not stop the
/// audit: no policy verdict depends on the moves, so the report is written with the
/// failure as an unreadable entry (a finding: the moves could not be checked). A kind
/// the API server does not know (404: the CRD is not installed, as on a cluster set up
/// before moves existed) means there are no moves, which is not a finding.
async fn moves(
    client: &Client,
    page_size: u32,
    unreadable: &mut Vec<Unreadable>,
) -> Vec<crate::crd::VolumeMigration> {
    let mut moves = Vec::new();
    let listed = list_all::<crate::crd::VolumeMigration>(client, page_size, unreadable, |mut m| {
        lean_meta(&mut m.metadata);
        if let Some(status) = m.status.as_mut() {
            status.conditions.clear();
        }
        moves.push(m);
    })
    .await;
    moves_listed(listed, moves, unreadable)
}

/// What a VolumeMigration list ended with: the moves, none when the kind is not
/// installed (404), or, for any other failure, an unreadable entry besides the moves a
/// first page showed before a later one failed.
fn moves_listed(
    listed: Result<(), Error>,
    moves: Vec<crate::crd::VolumeMigration>,
    unreadable: &mut Vec<Unreadable>,
) -> Vec<crate::crd::VolumeMigration> {
    match listed {
        Ok(()) => moves,
        Err(Error::List {
            source: kube::Error::Api(status),
            ..
        }) if status.code == 404 => Vec::new(),
        Err(error) => {
            unreadable.push(Unreadable {
                kind: "VolumeMigration".into(),
                namespace: None,
                name: "(list)".into(),
                error: error.to_string(),
            });
            moves
        }
    }
}

/// Reads the decision log's checkpoints, and before them the writers' Leases (so that
/// a checkpoint stored after the Lease was read is seen, never the other way round).
/// Never fails: an absent or unreadable ConfigMap is what the report then says.
pub async fn chain(client: &Client, namespace: &str) -> ChainObservation {
    let config_map = CHECKPOINTS.to_string();
    let leases = checkpoints::writers(&Api::<Lease>::namespaced(client.clone(), namespace)).await;
    match Api::<ConfigMap>::namespaced(client.clone(), namespace)
        .get_opt(CHECKPOINTS)
        .await
    {
        Ok(Some(found)) => {
            let (heads, mut problems) = chain_heads(&found.data.unwrap_or_default());
            let writers = leases.unwrap_or_else(|error| {
                problems.push(format!(
                    "the chain writers' Leases could not be read ({}): a head that stopped while its writer runs cannot be told",
                    explain(&error)
                ));
                Vec::new()
            });
            ChainObservation::Read {
                config_map,
                heads,
                problems,
                writers,
                stalled: Vec::new(),
            }
        }
        Ok(None) => ChainObservation::Absent { config_map },
        Err(error) => ChainObservation::Unreadable {
            config_map,
            reason: explain(&error),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Status;

    fn failed(code: u16, reason: &str) -> Result<(), Error> {
        Err(Error::List {
            kind: "VolumeMigration".into(),
            source: kube::Error::Api(
                Status::failure("volumemigrations.enclave.dev is forbidden", reason)
                    .with_code(code)
                    .boxed(),
            ),
        })
    }

    /// A cluster without the kind has no moves, and that is no finding; any other
    /// failure to list them is an unreadable entry (a finding), never the end of the audit.
    #[test]
    fn moves_not_installed_are_none_and_moves_not_readable_are_said() {
        let mut unreadable = Vec::new();
        assert!(moves_listed(failed(404, "NotFound"), Vec::new(), &mut unreadable).is_empty());
        assert!(unreadable.is_empty());
        moves_listed(failed(403, "Forbidden"), Vec::new(), &mut unreadable);
        assert_eq!(unreadable.len(), 1);
        let entry = &unreadable[0];
        assert_eq!(
            (
                entry.kind.as_str(),
                entry.namespace.as_deref(),
                entry.name.as_str()
            ),
            ("VolumeMigration", None, "(list)")
        );
        assert!(
            entry.error.contains(
                "cannot list VolumeMigration (the auditor needs get and list on it): Forbidden (403)"
            ),
            "{}",
            entry.error
        );
    }
}
