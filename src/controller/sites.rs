//! The sites controller: keeps each DataEnclave's status current — per site the
//! matching nodes and how many are Ready, whether every site has nodes, whether the
//! site selectors rely only on labels a kubelet cannot set on its own Node, who
//! outside the approved staff holds access to the enclave's pods through RBAC, and
//! which namespaces' pods may take host access on its nodes.

use std::collections::{BTreeMap, BTreeSet};
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

use super::{RESYNC, Result, error_policy, instrumented, publish, publish_related, unguard};
use crate::{
    access::{
        host,
        rbac::{self, AccessScope, ExposureSummary, Finding, Holder},
    },
    cache,
    catalog::Catalog,
    conditions::{self, Observed},
    context::Context,
    crd::{
        DataEnclave, DataEnclaveStatus, Exposure, ExposureHolder, SiteStatus, TRUSTED_LABEL_PREFIX,
    },
    decisions::{Kind, Record, Subject},
    names::FIELD_MANAGER,
    scope, selector,
};

const CONTROLLER: &str = "sites";

/// How many exposures a status lists; the counts cover all of them.
pub const MAX_LISTED_EXPOSURES: usize = 50;

/// The namespaces an enclave holds: those covered by any ResidencyPolicy naming it,
/// whatever the policy's enforcement (an Audit policy's data is still the enclave's).
pub fn enclave_namespaces<C: Catalog>(catalog: &C, enclave: &str) -> BTreeSet<String> {
    let policies: Vec<_> = catalog
        .policies()
        .into_iter()
        .filter(|p| p.spec.enclave == enclave)
        .collect();
    catalog
        .namespaces()
        .into_iter()
        .filter(|(name, labels)| {
            policies
                .iter()
                .any(|p| scope::covers_namespace(p, name, labels))
        })
        .map(|(name, _)| name)
        .collect()
}

/// Who the enclave approves, and where: the scope of its exposure report. The
/// operator's own service accounts are the installation's (built-in).
pub fn access_scope(
    enclave: &DataEnclave,
    namespaces: BTreeSet<String>,
    operator_namespace: &str,
) -> AccessScope {
    let access = enclave.spec.access.clone().unwrap_or_default();
    AccessScope::new(namespaces, access.approved_users, access.approved_groups)
        .with_operator_namespace(operator_namespace)
}

/// The exposure report for one enclave from the catalog's RBAC objects.
pub fn exposures<C: Catalog>(
    catalog: &C,
    enclave: &DataEnclave,
    operator_namespace: &str,
) -> Vec<Finding> {
    let namespaces = enclave_namespaces(catalog, &enclave.name_any());
    if namespaces.is_empty() {
        // ClusterRoleBindings reach every namespace, but an enclave without
        // namespaces holds no data yet: nothing is exposed.
        return Vec::new();
    }
    catalog
        .rbac()
        .exposures(&access_scope(enclave, namespaces, operator_namespace))
}

impl From<&Finding> for Exposure {
    fn from(finding: &Finding) -> Self {
        Exposure {
            binding: finding.binding.to_string(),
            subject: finding.subject.to_string(),
            role: finding.role.to_string(),
            grants: finding.grants.iter().map(ToString::to_string).collect(),
            applies_to: finding.applies_to.to_string(),
            built_in: finding.built_in(),
            holder: match finding.holder {
                Holder::Unapproved => ExposureHolder::Unapproved,
                Holder::Node => ExposureHolder::Node,
                Holder::BuiltIn => ExposureHolder::BuiltIn,
            },
            acts_as: finding.acts_as.iter().map(ToString::to_string).collect(),
        }
    }
}

fn access_condition(summary: &ExposureSummary) -> Observed {
    let built_in = match summary.built_in {
        0 => String::new(),
        n => format!(" ({n} built-in system grant(s) are expected and listed as builtIn)"),
    };
    if summary.other == 0 {
        return Observed::new(
            "AccessRestricted",
            true,
            "OnlyApprovedStaff",
            format!(
                "no RBAC binding gives anyone outside the approved staff a way to the enclave's pods, logs, secrets or claims, to its scope or admission, or to an approved identity{built_in}"
            ),
        );
    }
    let first: Vec<String> = summary
        .findings
        .iter()
        .filter(|f| !f.built_in())
        .take(3)
        .map(|f| format!("{} gives {}", f.binding, f.subject))
        .collect();
    let nodes = match summary.node {
        0 => String::new(),
        n => format!(", {n} of them to node credentials"),
    };
    Observed::new(
        "AccessRestricted",
        false,
        "UnapprovedAccess",
        format!(
            "{} RBAC grant(s) reach enclave data outside the approved staff{nodes}, e.g. {}; see status.exposures{built_in}",
            summary.other,
            first.join("; ")
        ),
    )
}

/// Whether every namespace whose pods may run on the enclave's nodes refuses host
/// access there ([`host`]).
fn host_access_condition(unguarded: &[String]) -> Observed {
    if unguarded.is_empty() {
        return Observed::new(
            "HostAccessGuarded",
            true,
            "PodSecurityBaseline",
            format!(
                "Pod Security Admission refuses host access (host namespaces, privileged containers, added capabilities, hostPath volumes) in every namespace whose pods may run on the enclave's nodes (all but kube-system, the operator's namespace and those the enclave holds whole): {} is baseline or restricted there",
                host::ENFORCE_LABEL
            ),
        );
    }
    let first: Vec<&str> = unguarded.iter().take(5).map(String::as_str).collect();
    let more = match unguarded.len() - first.len() {
        0 => String::new(),
        n => format!(" and {n} more"),
    };
    Observed::new(
        "HostAccessGuarded",
        false,
        "HostAccessAllowed",
        format!(
            "pods of {} namespace(s) may take host access (hostPath, privileged, host namespaces, added capabilities) on the enclave's nodes and read what the nodes hold, as Pod Security Admission does not enforce baseline there: {}{more}; label them {}=baseline (see status.hostAccessNamespaces)",
            unguarded.len(),
            first.join(", "),
            host::ENFORCE_LABEL
        ),
    )
}

/// The status a DataEnclave should have, given the nodes in the cluster and the
/// exposure report. Pure.
pub fn desired_status(
    enclave: &DataEnclave,
    nodes: &[Arc<Node>],
    exposures: &[Finding],
    host_access: &[String],
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

    let summary = rbac::summarize(exposures, MAX_LISTED_EXPOSURES);
    let access = access_condition(&summary);
    let host = host_access_condition(host_access);

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
        exposures: summary.findings.iter().map(Exposure::from).collect(),
        exposure_count: count(summary.total),
        built_in_exposure_count: count(summary.built_in),
        node_exposure_count: count(summary.node),
        host_access_namespaces: host_access
            .iter()
            .take(MAX_LISTED_EXPOSURES)
            .cloned()
            .collect(),
        host_access_namespace_count: count(host_access.len()),
        conditions: conditions::settle(
            previous,
            vec![ready, populated, trusted, access, host],
            generation,
            now,
        ),
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
                || old.exposures != new.exposures
                || old.exposure_count != new.exposure_count
                || old.built_in_exposure_count != new.built_in_exposure_count
                || old.node_exposure_count != new.node_exposure_count
                || old.host_access_namespaces != new.host_access_namespaces
                || old.host_access_namespace_count != new.host_access_namespace_count
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
        // Ready repeats another condition; AccessRestricted is told per binding.
        .filter(|c| c.status == "False" && c.type_ != "Ready" && c.type_ != "AccessRestricted")
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
    let findings = exposures(&ctx.caches, enclave, &ctx.admission.operator_namespace);
    let unguarded = host::unguarded_namespaces(
        &enclave.name_any(),
        &ctx.caches.policies(),
        &ctx.caches.namespaces(),
    );
    let mut status = desired_status(enclave, &nodes, &findings, &unguarded, &conditions::now());
    let probed = ctx.authorizer.borrow().clone();
    if let Some(probed) = probed {
        crate::authz::probe::add_condition(&mut status, enclave, &probed, &conditions::now());
    }
    if let Some(grants) = ctx.caches.grants() {
        let previous = enclave
            .status
            .as_ref()
            .map(|s| s.conditions.as_slice())
            .unwrap_or_default();
        status.conditions.extend(conditions::settle(
            previous,
            crate::grants::observed_conditions(&grants, enclave, jiff::Timestamp::now()),
            enclave.metadata.generation,
            &conditions::now(),
        ));
    }
    if status_changed(enclave.status.as_ref(), &status) {
        record_new_exposures(ctx, enclave, &findings, &status).await;
        for record in new_host_access_records(enclave, &status) {
            ctx.sink.record(record);
        }
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

/// A `HostAccessFound` record for each namespace the status lists and the previous
/// status did not (the status is the memory, as for exposures). Pure.
fn new_host_access_records(enclave: &DataEnclave, status: &DataEnclaveStatus) -> Vec<Record> {
    let before = enclave
        .status
        .as_ref()
        .map(|s| s.host_access_namespaces.as_slice())
        .unwrap_or_default();
    let name = enclave.name_any();
    status
        .host_access_namespaces
        .iter()
        .filter(|namespace| !before.contains(namespace))
        .map(|namespace| {
            Record::new(
                Kind::HostAccessFound,
                None,
                Subject::new("Namespace", None, namespace),
                format!(
                    "pods of namespace {namespace} may take host access (hostPath, privileged, host namespaces, added capabilities) on the nodes of DataEnclave {name}: Pod Security Admission does not enforce baseline there"
                ),
            )
            .with("enclave", name.clone())
        })
        .collect()
}

/// Records each listed exposure the previous status did not list, with an Event on the
/// enclave that names the binding as its related object (so that Events about
/// different bindings are not merged into one series). The status is the memory, so a
/// restart does not record them again.
async fn record_new_exposures(
    ctx: &Context,
    enclave: &DataEnclave,
    findings: &[Finding],
    status: &DataEnclaveStatus,
) {
    let before = enclave
        .status
        .as_ref()
        .map(|s| s.exposures.as_slice())
        .unwrap_or_default();
    let name = enclave.name_any();
    // One Event per binding: Events about one object merge unless their related
    // object differs, so new subjects of one binding are told together.
    let mut told: BTreeMap<(String, Option<String>, String), Vec<String>> = BTreeMap::new();
    for finding in findings {
        let exposure = Exposure::from(finding);
        if before.contains(&exposure) || !status.exposures.contains(&exposure) {
            continue;
        }
        let binding = &finding.binding;
        let kind = match binding.kind {
            rbac::BindingKind::RoleBinding => "RoleBinding",
            rbac::BindingKind::ClusterRoleBinding => "ClusterRoleBinding",
        };
        ctx.sink.record(
            Record::new(
                Kind::ExposureFound,
                None,
                Subject::new(kind, binding.namespace.as_deref(), &binding.name),
                finding.to_string(),
            )
            .with("enclave", name.clone())
            .with("subject", exposure.subject.clone())
            .with("builtIn", exposure.built_in)
            .with("holder", finding.holder.as_str()),
        );
        if !exposure.built_in {
            told.entry((
                kind.to_string(),
                binding.namespace.clone(),
                binding.name.clone(),
            ))
            .or_default()
            .push(finding.to_string());
        }
    }
    for ((kind, namespace, binding), notes) in told {
        let related = k8s_openapi::api::core::v1::ObjectReference {
            api_version: Some("rbac.authorization.k8s.io/v1".into()),
            kind: Some(kind),
            namespace,
            name: Some(binding),
            ..Default::default()
        };
        publish_related(
            ctx,
            &enclave.object_ref(&()),
            Some(related),
            EventType::Warning,
            "UnapprovedAccess",
            "Audit",
            notes.join("; "),
        )
        .await;
    }
}

/// Runs the sites controller until shutdown. Node changes (labels, readiness,
/// existence), RBAC changes and changes to policies and namespaces (which decide the
/// enclave's namespaces) re-run every enclave: enclaves are few and each run reads only
/// caches.
pub async fn run(client: Client, ctx: Arc<Context>, term: super::Term) {
    let enclaves: Api<DeserializeGuard<DataEnclave>> = Api::all(client);
    tokio::select! {
        () = ctx.caches.wait_until_ready() => {}
        () = term.end() => return,
    }
    let controller = Controller::new(enclaves, watcher::Config::default().any_semantic());
    let graceful = term.graceful_shutdown(controller.store());
    controller
        .reconcile_all_on(super::coalesce(
            futures::stream::select_all([
                ctx.caches.nodes.changes().boxed(),
                ctx.caches.namespaces.changes().boxed(),
                ctx.caches.policies.changes().boxed(),
                ctx.caches.roles.changes().boxed(),
                ctx.caches.cluster_roles.changes().boxed(),
                ctx.caches.role_bindings.changes().boxed(),
                ctx.caches.cluster_role_bindings.changes().boxed(),
                crate::authz::probe::changes(&ctx).boxed(),
                ctx.caches.access_grants.changes().boxed(),
                ctx.caches.access_approvals.changes().boxed(),
                ctx.caches.access_anomalies.changes().boxed(),
            ]),
            std::time::Duration::from_millis(200),
        ))
        .graceful_shutdown_on(graceful)
        .run(
            term.guard(reconcile),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::rbac::RbacObjects;
    use crate::catalog::StaticCatalog;

    const OPERATOR: &str = "enclave-system";

    fn catalog(rbac: &str) -> StaticCatalog {
        let mut catalog =
            StaticCatalog::from_yaml(include_str!("../../tests/fixtures/catalog.yaml"))
                .expect("fixture parses");
        catalog.rbac = RbacObjects::from_yaml(rbac).expect("RBAC parses");
        catalog
    }

    const SHELLS: &str = r#"
kind: ClusterRole
apiVersion: rbac.authorization.k8s.io/v1
metadata: {name: shell}
rules: [{apiGroups: [""], resources: [pods/exec], verbs: [create]}]
---
kind: RoleBinding
apiVersion: rbac.authorization.k8s.io/v1
metadata: {name: mallory-shell, namespace: shop}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: shell}
subjects: [{kind: User, name: mallory}, {kind: User, name: bob}]
---
kind: RoleBinding
apiVersion: rbac.authorization.k8s.io/v1
metadata: {name: public-shell, namespace: public}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: shell}
subjects: [{kind: User, name: eve}]
---
kind: RoleBinding
apiVersion: rbac.authorization.k8s.io/v1
metadata: {name: audit-shell, namespace: analytics}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: shell}
subjects: [{kind: Group, name: analysts}]
"#;

    fn with_staff(catalog: &StaticCatalog) -> DataEnclave {
        let mut enclave = DataEnclave::clone(&catalog.enclaves["eu"]);
        enclave.spec.access = Some(crate::crd::Access {
            approved_users: vec!["bob".into()],
            approved_groups: vec![],
            ..Default::default()
        });
        enclave
    }

    fn condition<'a>(
        status: &'a DataEnclaveStatus,
        type_: &str,
    ) -> &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
        status
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
            .unwrap_or_else(|| panic!("no {type_} condition"))
    }

    #[test]
    fn namespaces_whose_pods_may_take_host_access_are_listed_counted_and_a_condition() {
        let catalog = catalog("");
        let enclave = DataEnclave::clone(&catalog.enclaves["eu"]);
        let unguarded =
            host::unguarded_namespaces("eu", &catalog.policies(), &catalog.namespaces());
        // shop is held whole by the enforcing policy; analytics is only audited, so its
        // pods may run anywhere; public is no policy's.
        assert_eq!(unguarded, ["analytics", "public"]);
        let now = conditions::now();
        let status = desired_status(&enclave, &catalog.nodes(), &[], &unguarded, &now);
        assert_eq!(status.host_access_namespaces, ["analytics", "public"]);
        assert_eq!(status.host_access_namespace_count, 2);
        let guarded = condition(&status, "HostAccessGuarded");
        assert_eq!(
            (guarded.status.as_str(), guarded.reason.as_str()),
            ("False", "HostAccessAllowed")
        );
        assert!(
            guarded.message.contains("2 namespace(s)")
                && guarded.message.contains("analytics, public;")
                && guarded
                    .message
                    .contains("pod-security.kubernetes.io/enforce=baseline"),
            "{}",
            guarded.message
        );
        // A warning worth an Event when it turns False, as the other conditions.
        assert!(
            new_warnings(None, &status)
                .iter()
                .any(|c| c.type_ == "HostAccessGuarded")
        );

        // Many: the status lists the first 50, counts all, and the message names five.
        let many: Vec<String> = (0..60).map(|i| format!("ns-{i:02}")).collect();
        let status = desired_status(&enclave, &catalog.nodes(), &[], &many, &now);
        assert_eq!(status.host_access_namespaces.len(), MAX_LISTED_EXPOSURES);
        assert_eq!(status.host_access_namespace_count, 60);
        let message = &condition(&status, "HostAccessGuarded").message;
        assert!(
            message.contains("ns-00, ns-01, ns-02, ns-03, ns-04 and 55 more"),
            "{message}"
        );

        // None: True, and the list is left out.
        let status = desired_status(&enclave, &catalog.nodes(), &[], &[], &now);
        assert_eq!(condition(&status, "HostAccessGuarded").status, "True");
        assert!(status.host_access_namespaces.is_empty());
        assert_eq!(status.host_access_namespace_count, 0);
        // A change of the list alone is a change worth writing.
        let before = desired_status(&enclave, &catalog.nodes(), &[], &many[..1], &now);
        let after = desired_status(&enclave, &catalog.nodes(), &[], &many[..3], &now);
        assert!(status_changed(Some(&before), &after));
        // Only the namespaces the previous status did not list are recorded.
        let mut written = enclave.clone();
        written.status = Some(before);
        let records: Vec<String> = new_host_access_records(&written, &after)
            .iter()
            .map(|r| format!("{} {}", r.kind.as_str(), r.subject.name))
            .collect();
        assert_eq!(records, ["HostAccessFound ns-01", "HostAccessFound ns-02"]);
        assert_eq!(new_host_access_records(&enclave, &after).len(), 3);
    }

    #[test]
    fn namespaces_are_those_of_every_policy_of_the_enclave() {
        let catalog = catalog("");
        let namespaces: Vec<String> = enclave_namespaces(&catalog, "eu").into_iter().collect();
        // Enforce (shop) and Audit (analytics) alike; never the namespace no policy covers.
        assert_eq!(namespaces, ["analytics", "shop"]);
        assert!(enclave_namespaces(&catalog, "other").is_empty());
    }

    #[test]
    fn exposures_name_unapproved_subjects_in_enclave_namespaces_only() {
        let catalog = catalog(SHELLS);
        let enclave = with_staff(&catalog);
        let found: Vec<String> = exposures(&catalog, &enclave, OPERATOR)
            .iter()
            .map(|f| format!("{} -> {}", f.binding, f.subject))
            .collect();
        assert_eq!(
            found,
            [
                "RoleBinding analytics/audit-shell -> Group analysts",
                "RoleBinding shop/mallory-shell -> User mallory",
            ]
        );
    }

    #[test]
    fn status_lists_exposures_and_turns_access_condition_false() {
        let catalog = catalog(SHELLS);
        let enclave = with_staff(&catalog);
        let nodes = catalog.nodes();
        let findings = exposures(&catalog, &enclave, OPERATOR);
        let status = desired_status(&enclave, &nodes, &findings, &[], &conditions::now());
        assert_eq!(status.exposure_count, 2);
        assert_eq!(status.built_in_exposure_count, 0);
        assert_eq!(status.exposures.len(), 2);
        let mallory = &status.exposures[1];
        assert_eq!(mallory.binding, "RoleBinding shop/mallory-shell");
        assert_eq!(mallory.subject, "User mallory");
        assert_eq!(mallory.role, "ClusterRole shell");
        assert_eq!(mallory.grants, ["Exec"]);
        assert_eq!(mallory.applies_to, "namespace shop");
        let access = status
            .conditions
            .iter()
            .find(|c| c.type_ == "AccessRestricted")
            .expect("condition");
        assert_eq!(access.status, "False");
        assert_eq!(access.reason, "UnapprovedAccess");
        assert!(
            access
                .message
                .contains("RoleBinding shop/mallory-shell gives User mallory")
        );

        // Approving the subjects clears the report and the condition.
        let mut approved = enclave.clone();
        approved.spec.access = Some(crate::crd::Access {
            approved_users: vec!["bob".into(), "mallory".into()],
            approved_groups: vec!["analysts".into()],
            ..Default::default()
        });
        let findings = exposures(&catalog, &approved, OPERATOR);
        let status = desired_status(&approved, &nodes, &findings, &[], &conditions::now());
        assert_eq!(status.exposure_count, 0);
        assert!(status.exposures.is_empty());
        let access = status
            .conditions
            .iter()
            .find(|c| c.type_ == "AccessRestricted")
            .expect("condition");
        assert_eq!(
            (access.status.as_str(), access.reason.as_str()),
            ("True", "OnlyApprovedStaff")
        );
    }

    #[test]
    fn status_names_node_credentials_the_operator_and_who_acts_as_approved_staff() {
        let catalog = catalog(
            r#"
kind: ClusterRole
apiVersion: rbac.authorization.k8s.io/v1
metadata: {name: secrets}
rules: [{apiGroups: [""], resources: [secrets], verbs: [get]}]
---
kind: ClusterRoleBinding
apiVersion: rbac.authorization.k8s.io/v1
metadata: {name: nodes-secrets}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: secrets}
subjects: [{kind: Group, name: "system:nodes"}, {kind: ServiceAccount, name: enclave-operator, namespace: enclave-system}]
---
kind: ClusterRole
apiVersion: rbac.authorization.k8s.io/v1
metadata: {name: be-bob}
rules: [{apiGroups: [""], resources: [users], resourceNames: [bob], verbs: [impersonate]}]
---
kind: ClusterRoleBinding
apiVersion: rbac.authorization.k8s.io/v1
metadata: {name: eve-as-bob}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: be-bob}
subjects: [{kind: User, name: eve}]
"#,
        );
        let enclave = with_staff(&catalog);
        let findings = exposures(&catalog, &enclave, OPERATOR);
        let status = desired_status(
            &enclave,
            &catalog.nodes(),
            &findings,
            &[],
            &conditions::now(),
        );
        assert_eq!(
            (
                status.exposure_count,
                status.node_exposure_count,
                status.built_in_exposure_count
            ),
            (3, 1, 1)
        );
        let eve = &status.exposures[0];
        assert_eq!(eve.subject, "User eve");
        assert_eq!(eve.holder, ExposureHolder::Unapproved);
        assert_eq!(eve.grants, ["ImpersonateUsers [bob]"]);
        assert_eq!(eve.acts_as, ["User bob"]);
        let nodes = &status.exposures[1];
        assert_eq!(nodes.subject, "Group system:nodes");
        assert_eq!(nodes.holder, ExposureHolder::Node);
        assert!(!nodes.built_in);
        let operator = &status.exposures[2];
        assert_eq!(
            operator.subject,
            "ServiceAccount enclave-system/enclave-operator"
        );
        assert_eq!(operator.holder, ExposureHolder::BuiltIn);
        assert!(operator.built_in);
        let access = status
            .conditions
            .iter()
            .find(|c| c.type_ == "AccessRestricted")
            .expect("condition");
        assert_eq!(access.status, "False");
        assert!(
            access.message.starts_with(
                "2 RBAC grant(s) reach enclave data outside the approved staff, 1 of them to node credentials"
            ),
            "{}",
            access.message
        );
    }

    #[test]
    fn status_lists_at_most_the_limit_but_counts_all() {
        let mut rbac = String::from(SHELLS);
        for i in 0..(MAX_LISTED_EXPOSURES + 7) {
            rbac.push_str(&format!(
                "---\nkind: RoleBinding\napiVersion: rbac.authorization.k8s.io/v1\nmetadata: {{name: b{i}, namespace: shop}}\nroleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: shell}}\nsubjects: [{{kind: User, name: u{i}}}]\n"
            ));
        }
        let catalog = catalog(&rbac);
        let enclave = with_staff(&catalog);
        let findings = exposures(&catalog, &enclave, OPERATOR);
        let status = desired_status(
            &enclave,
            &catalog.nodes(),
            &findings,
            &[],
            &conditions::now(),
        );
        assert_eq!(status.exposures.len(), MAX_LISTED_EXPOSURES);
        assert_eq!(status.exposure_count as usize, MAX_LISTED_EXPOSURES + 9);
    }

    #[test]
    fn an_enclave_without_namespaces_exposes_nothing() {
        let catalog = catalog(
            r#"
kind: ClusterRole
apiVersion: rbac.authorization.k8s.io/v1
metadata: {name: cluster-admin}
rules: [{apiGroups: ["*"], resources: ["*"], verbs: ["*"]}]
---
kind: ClusterRoleBinding
apiVersion: rbac.authorization.k8s.io/v1
metadata: {name: everyone-shell}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cluster-admin}
subjects: [{kind: Group, name: system:authenticated}]
"#,
        );
        let mut enclave = with_staff(&catalog);
        // The same binding exposes the enclave that has namespaces…
        assert_eq!(exposures(&catalog, &enclave, OPERATOR).len(), 1);
        // …and not one that has none yet.
        enclave.metadata.name = Some("unused".into());
        assert!(exposures(&catalog, &enclave, OPERATOR).is_empty());
    }
}
