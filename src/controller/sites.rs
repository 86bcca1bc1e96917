//! The sites controller: keeps each DataEnclave's status current — per site the
//! matching nodes and how many are Ready, whether every site has nodes, and whether the
//! site selectors rely only on labels a kubelet cannot set on its own Node.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{Patch, PatchParams},
    core::DeserializeGuard,
    runtime::{Controller, controller::Action, events::EventType, watcher},
};
use serde_json::json;

use super::{RESYNC, Result, error_policy, instrumented, publish, unguard};
use crate::{
    cache,
    conditions::{self, Observed},
    context::Context,
    crd::{DataEnclave, DataEnclaveStatus, SiteStatus, TRUSTED_LABEL_PREFIX},
    names::FIELD_MANAGER,
    selector,
};

const CONTROLLER: &str = "sites";

/// The status a DataEnclave should have, given the nodes in the cluster. Pure.
pub fn desired_status(
    enclave: &DataEnclave,
    nodes: &[Arc<Node>],
    now: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
) -> DataEnclaveStatus {
    let sites: Vec<SiteStatus> = enclave
        .spec
        .sites
        .iter()
        .map(|site| {
            let selector = &site.node_selector;
            let members: Vec<&Arc<Node>> = nodes
                .iter()
                .filter(|n| selector::matches(selector, n.labels()))
                .collect();
            SiteStatus {
                name: site.name.clone(),
                nodes: count(members.len()),
                ready_nodes: count(members.iter().filter(|n| cache::node_is_ready(n)).count()),
                untrusted_label_keys: selector::keys(selector)
                    .into_iter()
                    .filter(|key| !key.starts_with(TRUSTED_LABEL_PREFIX))
                    .collect(),
            }
        })
        .collect();

    let empty: Vec<&str> = sites
        .iter()
        .filter(|s| s.nodes == 0)
        .map(|s| s.name.as_str())
        .collect();
    let unready: Vec<&str> = sites
        .iter()
        .filter(|s| s.nodes > 0 && s.ready_nodes == 0)
        .map(|s| s.name.as_str())
        .collect();
    let untrusted: Vec<String> = sites
        .iter()
        .filter(|s| !s.untrusted_label_keys.is_empty())
        .map(|s| format!("{} ({})", s.name, s.untrusted_label_keys.join(", ")))
        .collect();

    let populated = if !empty.is_empty() {
        Observed::new(
            "SitesPopulated",
            false,
            "SiteHasNoNodes",
            format!(
                "no node matches the selector of site(s): {}",
                empty.join(", ")
            ),
        )
    } else if !unready.is_empty() {
        Observed::new(
            "SitesPopulated",
            false,
            "SiteHasNoReadyNodes",
            format!("no Ready node in site(s): {}", unready.join(", ")),
        )
    } else {
        Observed::new(
            "SitesPopulated",
            true,
            "AllSitesHaveReadyNodes",
            "every site has at least one Ready node",
        )
    };
    let trusted = if untrusted.is_empty() {
        Observed::new(
            "SiteLabelsTrusted",
            true,
            "RestrictedLabels",
            format!(
                "every site selects nodes only by labels under {TRUSTED_LABEL_PREFIX}, which kubelets cannot set"
            ),
        )
    } else {
        Observed::new(
            "SiteLabelsTrusted",
            false,
            "KubeletSettableLabels",
            format!(
                "a kubelet could label its own Node into these sites: {}; select by labels under {TRUSTED_LABEL_PREFIX} instead",
                untrusted.join("; ")
            ),
        )
    };
    let ready = Observed::new(
        "Ready",
        populated.status,
        if populated.status {
            "SitesReady"
        } else {
            populated.reason
        },
        if populated.status {
            "the enclave has Ready nodes in every site".to_string()
        } else {
            populated.message.clone()
        },
    );

    let previous = enclave
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let generation = enclave.metadata.generation;
    DataEnclaveStatus {
        observed_generation: generation,
        ready_nodes_by_site: sites
            .iter()
            .map(|s| format!("{}={}/{}", s.name, s.ready_nodes, s.nodes))
            .collect::<Vec<_>>()
            .join(" "),
        sites,
        conditions: conditions::settle(previous, vec![ready, populated, trusted], generation, now),
    }
}

fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// Does the new status say anything the old one did not (timestamps aside)?
fn status_changed(old: Option<&DataEnclaveStatus>, new: &DataEnclaveStatus) -> bool {
    match old {
        None => true,
        Some(old) => {
            old.observed_generation != new.observed_generation
                || old.sites != new.sites
                || !conditions::same(&old.conditions, &new.conditions)
        }
    }
}

/// Warnings worth an Event: a condition that just turned False.
fn new_warnings<'a>(
    old: Option<&DataEnclaveStatus>,
    new: &'a DataEnclaveStatus,
) -> Vec<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    new.conditions
        .iter()
        .filter(|c| c.status == "False" && c.type_ != "Ready")
        .filter(|c| {
            !old.is_some_and(|old| {
                old.conditions
                    .iter()
                    .any(|o| o.type_ == c.type_ && o.status == c.status && o.reason == c.reason)
            })
        })
        .collect()
}

async fn reconcile(guard: Arc<DeserializeGuard<DataEnclave>>, ctx: Arc<Context>) -> Result<Action> {
    let enclave = unguard(&guard, &ctx).await?;
    instrumented(CONTROLLER, enclave, &ctx, apply_status(enclave, &ctx)).await
}

#[tracing::instrument(skip_all, fields(enclave = %enclave.name_any()))]
async fn apply_status(enclave: &DataEnclave, ctx: &Context) -> Result<Action> {
    let nodes = ctx.caches.nodes.store.state();
    let status = desired_status(enclave, &nodes, &conditions::now());
    if status_changed(enclave.status.as_ref(), &status) {
        for condition in new_warnings(enclave.status.as_ref(), &status) {
            publish(
                ctx,
                &enclave.object_ref(&()),
                EventType::Warning,
                &condition.reason,
                "Inventory",
                condition.message.clone(),
            )
            .await;
        }
        let api: Api<DataEnclave> = Api::all(ctx.client.clone());
        let patch = json!({
            "apiVersion": "enclave.dev/v1alpha1",
            "kind": "DataEnclave",
            "status": status,
        });
        api.patch_status(
            &enclave.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
        tracing::info!(sites = %status.ready_nodes_by_site, "enclave status updated");
    }
    Ok(Action::requeue(RESYNC))
}

/// Runs the sites controller until shutdown. Node changes (labels, readiness,
/// existence) re-run every enclave: enclaves are few and each run reads only caches.
pub async fn run(client: Client, ctx: Arc<Context>) {
    let enclaves: Api<DeserializeGuard<DataEnclave>> = Api::all(client);
    ctx.caches.wait_until_ready().await;
    Controller::new(enclaves, watcher::Config::default().any_semantic())
        .reconcile_all_on(ctx.caches.nodes.changes())
        .with_config(
            kube::runtime::controller::Config::default()
                .debounce(std::time::Duration::from_millis(200)),
        )
        .graceful_shutdown_on(crate::shutdown::signalled())
        .run(
            reconcile,
            |guard, error, ctx| error_policy(CONTROLLER, guard.as_ref(), error, &ctx),
            ctx.clone(),
        )
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(enclave = %object.name, "reconciled"),
                Err(error) => tracing::debug!(%error, "reconcile did not complete"),
            }
        })
        .await;
}
