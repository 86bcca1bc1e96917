//! The audit report, pure: from a [`Catalog`] (the cluster as listed, or a YAML
//! fixture) and what else was observed — the chain heads, the objects that could not be
//! read — to a [`Report`], with the verdicts the controllers reach.
//!
//! Nothing here decides anything of its own: placement is the residency controller's
//! [`assess`](crate::controller::residency::assess::assess), volumes its
//! [`storage`](crate::controller::residency::storage::assess) step, the network its
//! [`reachability_report`](crate::controller::residency::network::reachability_report),
//! access the sites controller's [`exposures`](crate::controller::sites::exposures).
//! This module only lays their answers out per policy and per pod, and counts.
//!
//! Deterministic: every list is sorted, and the only time is
//! [`Observation::generated_at`], so the same cluster state gives the same bytes.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use jiff::Timestamp;
use kube::ResourceExt;
use serde::Serialize;

use crate::{
    access::rbac::{self, AppliesTo, Finding},
    cache::CachedPod,
    catalog::Catalog,
    controller::{
        residency::{assess, memory::Memory, network, storage},
        sites,
    },
    crd::{Enforcement, Exposure, NetworkIsolation, ResidencyPolicy, Violation},
    evidence::{
        chain::Checkpoint,
        checkpoints::{WriterState, retired_at},
    },
    placement, scope, selector,
    volumes::{self, Storage},
};

/// The `kind` of the JSON report, so that a reader can tell what it holds.
pub const REPORT_KIND: &str = "EnclaveAuditReport";
/// Bumped when a field changes meaning or goes away (fields may be added without).
pub const FORMAT_VERSION: u32 = 1;

/// The verdict of one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Verdict {
    Pass,
    Fail,
    /// Could not be judged (the policy's enclave cannot be resolved): not a pass.
    Unknown,
    /// The policy does not ask for it (e.g. `network.isolation: None`).
    NotApplicable,
}

impl Verdict {
    /// Does this verdict need someone's attention?
    pub fn is_finding(self) -> bool {
        matches!(self, Verdict::Fail | Verdict::Unknown)
    }
}

/// An object the audit could not parse as its kind. Reported, never a reason to stop.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Unreadable {
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
    pub error: String,
}

/// The last checkpoint of one decision-log chain, as found in the checkpoints ConfigMap.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChainHead {
    /// The ConfigMap key: the chain's id with characters a key cannot hold replaced.
    pub chain: String,
    #[serde(flatten)]
    pub head: Checkpoint,
    /// How many checkpoints the key holds.
    pub checkpoints: usize,
    /// When the chain was retired (its writer gone, the key sealed at this checkpoint).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retired: Option<String>,
}

/// What the audit saw of the decision log's checkpoints.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(
    rename_all = "camelCase",
    rename_all_fields = "camelCase",
    tag = "state"
)]
pub enum ChainObservation {
    /// The ConfigMap was read: the head of every chain in it, and lines that are not
    /// checkpoints; the writers' Leases (read before the ConfigMap), and the chains
    /// whose head stopped moving while their writer runs (each a finding).
    Read {
        config_map: String,
        heads: Vec<ChainHead>,
        problems: Vec<String>,
        writers: Vec<WriterState>,
        /// Filled in by [`build`], from the heads, the writers and the report's time.
        stalled: Vec<String>,
    },
    /// The ConfigMap does not exist: no operator has checkpointed a chain there.
    Absent { config_map: String },
    /// The ConfigMap could not be read (no right to, or the API failed).
    Unreadable { config_map: String, reason: String },
}

/// The head of each chain from the checkpoints ConfigMap's data (one key per chain, one
/// checkpoint per line, newest last, as [`crate::evidence::writer`] stores them).
/// Lines that are not checkpoints are reported, not fatal.
pub fn chain_heads(data: &BTreeMap<String, String>) -> (Vec<ChainHead>, Vec<String>) {
    let mut heads = Vec::new();
    let mut problems = Vec::new();
    for (key, text) in data {
        let mut last = None;
        let mut count = 0;
        for (index, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<Checkpoint>(line) {
                Ok(checkpoint) => {
                    count += 1;
                    last = Some(checkpoint);
                }
                Err(error) => problems.push(format!(
                    "key {key}, line {}: not a checkpoint: {error}",
                    index + 1
                )),
            }
        }
        match last {
            Some(head) => heads.push(ChainHead {
                chain: key.clone(),
                head,
                checkpoints: count,
                retired: retired_at(text),
            }),
            None => problems.push(format!("key {key}: holds no checkpoint")),
        }
    }
    (heads, problems)
}

/// Chains whose checkpointed head stopped while their writer runs: the writer's Lease
/// is live and says it has flushed lines beyond the last stored checkpoint (or that it
/// has flushed lines and none is stored), the oldest of them longer ago than the Lease
/// lasts (three checkpoint intervals). The writer renews its Lease right after each
/// store with the head it tried to store, and the audit reads the Leases before the
/// ConfigMap, so a healthy writer shows a flushed seq beyond its stored one only until
/// its next interval; one write that lost a race is not a stall. Pure.
pub fn stalled_chains(heads: &[ChainHead], writers: &[WriterState], now: Timestamp) -> Vec<String> {
    let mut stalled = Vec::new();
    for writer in writers.iter().filter(|w| w.live(now)) {
        let Some(flushed) = &writer.flushed else {
            continue;
        };
        // Since when the head has waited: the first failed store of the streak, or
        // (no error said) the flushed line itself.
        let waiting = writer.failing_since.unwrap_or(flushed.time);
        let grace = jiff::SignedDuration::from_secs(writer.lease_seconds);
        if waiting.checked_add(grace).is_ok_and(|until| until >= now) {
            continue;
        }
        let who = format!(
            "its writer {} runs (Lease renewed {})",
            writer.holder.as_deref().unwrap_or("(unnamed)"),
            writer
                .renewed
                .map_or_else(|| "never".to_string(), |t| t.to_string())
        );
        let why = writer
            .error
            .as_deref()
            .map(|e| format!("; its last error: {e}"))
            .unwrap_or_default();
        match heads.iter().find(|h| h.chain == writer.key) {
            None => stalled.push(format!(
                "chain {}: no checkpoint is stored, but {who} and has written up to seq {} ({}){why}",
                writer.chain, flushed.seq, flushed.time
            )),
            Some(head) if head.head.seq < flushed.seq => stalled.push(format!(
                "chain {}: the checkpointed head stopped at seq {} ({}), but {who} and has written up to seq {} ({}){why}",
                writer.chain, head.head.seq, head.head.time, flushed.seq, flushed.time
            )),
            Some(_) => {}
        }
    }
    stalled.sort();
    stalled
}

/// Everything the report is built from besides the catalog.
#[derive(Clone, Debug)]
pub struct Observation {
    /// The report's one time.
    pub generated_at: Timestamp,
    /// The operator's namespace: never in scope of the network fence.
    pub operator_namespace: String,
    pub chain: ChainObservation,
    /// Objects that did not parse, as listed.
    pub unreadable: Vec<Unreadable>,
    /// Report only these policies; empty: every policy.
    pub only_policies: Vec<String>,
    /// List only grants, anomalies and volume moves created at or after this time.
    pub since: Option<Timestamp>,
    /// Every VolumeMigration, as listed (none when the kind is not installed).
    pub moves: Vec<crate::crd::VolumeMigration>,
}

/// The whole report.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub kind: &'static str,
    pub format_version: u32,
    pub generated_at: String,
    pub operator_namespace: String,
    pub summary: Summary,
    pub chain: ChainObservation,
    pub policies: Vec<PolicyReport>,
    /// Policies asked for with `--policy` that do not exist (each a finding).
    pub missing_policies: Vec<String>,
    /// Cluster-scoped objects that could not be read (each a finding): any verdict may
    /// depend on them. Namespaced ones are listed under the policies whose scope holds them.
    pub unreadable: Vec<Unreadable>,
    /// The refusals of the decision logs given with `--decision-log` (not findings:
    /// a refusal is the enclave holding).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refusals: Option<super::refusals::Refusals>,
    /// AccessGrants and AccessAnomalies; an unacknowledged break-glass grant is a finding.
    #[serde(skip_serializing_if = "super::grants::AccessSection::is_empty")]
    pub access: super::grants::AccessSection,
    /// VolumeMigrations; a failed move, a source kept past its erasure time and an
    /// erased move without a verified copy are findings.
    #[serde(skip_serializing_if = "super::moves::MovesSection::is_empty")]
    pub moves: super::moves::MovesSection,
    /// Per enclave of the reported policies, the namespaces whose pods may take host
    /// access on its nodes ([`crate::access::host`]). Listed, not findings: the report
    /// judges what the policies hold, and cannot see the API server's default Pod
    /// Security level or its exemptions, so a namespace listed may be guarded after all.
    pub host_access: Vec<EnclaveHostAccess>,
}

/// The namespaces whose pods may take host access on one enclave's nodes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EnclaveHostAccess {
    pub enclave: String,
    pub namespaces: Vec<String>,
}

/// The report in numbers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// No finding anywhere.
    pub all_green: bool,
    pub findings: usize,
    pub policies: usize,
    pub policies_green: usize,
    pub pods_in_scope: usize,
    /// Namespaced objects that could not be read, in no reported policy's scope: they
    /// change no verdict here, so they are counted, not listed.
    pub unreadable_out_of_scope: usize,
    /// Namespaces whose pods may take host access on some reported enclave's nodes
    /// (not findings: see [`Report::host_access`]).
    pub host_access_namespaces: usize,
}

/// One policy's verdicts and what they rest on.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyReport {
    pub name: String,
    pub enclave: String,
    /// The enclave's jurisdiction, when it resolved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jurisdiction: Option<String>,
    pub sites: Vec<String>,
    pub enforcement: Enforcement,
    pub network_isolation: NetworkIsolation,
    /// Pass when every check passes (or does not apply) and nothing was unreadable.
    pub verdict: Verdict,
    pub findings: usize,
    /// Why the enclave cannot be resolved, if it cannot: then nothing could be judged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enclave_problem: Option<String>,
    /// The namespaces the policy covers (its pod selector aside).
    pub namespaces: Vec<String>,
    pub checks: Checks,
    pub counts: PodCounts,
    /// Every pod in scope (not finished), by namespace and name.
    pub pods: Vec<PodReport>,
    /// The residency controller's violations for pods (placement).
    pub placement_findings: Vec<Violation>,
    /// Claims and enclave StorageClasses that keep data outside.
    pub volume_findings: Vec<VolumeFinding>,
    /// Every group of in-scope pods the NetworkPolicies treat alike, leaking or not.
    pub network_groups: Vec<NetworkGroup>,
    /// RBAC grants into the policy's namespaces outside the approved staff: the ones
    /// that need a decision first, then built-in ones (expected, not findings).
    pub exposures: Vec<Exposure>,
    /// Namespaced objects in scope that could not be read (each a finding).
    pub unreadable: Vec<Unreadable>,
}

/// One verdict per concern.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Checks {
    pub placement: Check,
    pub volumes: Check,
    pub network: Check,
    pub access: Check,
}

impl Checks {
    fn all(&self) -> [&Check; 4] {
        [&self.placement, &self.volumes, &self.network, &self.access]
    }

    fn unknown(why: &str) -> Self {
        let check = || Check {
            verdict: Verdict::Unknown,
            findings: 0,
            summary: why.to_string(),
        };
        Checks {
            placement: check(),
            volumes: check(),
            network: check(),
            access: check(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Check {
    pub verdict: Verdict,
    pub findings: usize,
    pub summary: String,
}

/// The residency controller's counts for the scope.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodCounts {
    pub matched: i32,
    pub compliant: i32,
    pub non_compliant: i32,
    pub migrating: i32,
    pub blocked: i32,
}

/// One pod in scope.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodReport {
    pub namespace: String,
    pub name: String,
    /// `None`: not scheduled yet.
    pub node: Option<String>,
    /// The enclave site of its node; `None` when it has no node or the node is outside.
    pub site: Option<String>,
    pub phase: Option<String>,
    pub placement: PodVerdict,
    /// Its PersistentVolumeClaims, by claim name.
    pub volumes: Vec<PodVolume>,
    /// Pass: no NetworkPolicy opens a path out for it; Fail: its group leaks;
    /// NotApplicable: not evaluated (no network isolation asked for, or terminating).
    pub network: Verdict,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodVerdict {
    pub verdict: Verdict,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Where one claim of a pod keeps its data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodVolume {
    pub claim: String,
    /// The PersistentVolume it is bound to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volume: Option<String>,
    /// The volume's class when bound, else the class the claim would be provisioned with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<String>,
    /// Pass: the class is the enclave's and any node affinity reaches enclave nodes.
    pub verdict: Verdict,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A claim or enclave StorageClass that keeps data outside, and for a claim the
/// VolumeMigration moving (or that moved, or failed to move) its data, if any.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeFinding {
    #[serde(flatten)]
    pub violation: Violation,
    #[serde(rename = "move", skip_serializing_if = "Option::is_none")]
    pub volume_move: Option<super::moves::ClaimMove>,
}

impl std::ops::Deref for VolumeFinding {
    type Target = Violation;

    fn deref(&self) -> &Violation {
        &self.violation
    }
}

/// In-scope pods of one namespace selected by the same NetworkPolicies.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkGroup {
    pub namespace: String,
    pub pods: usize,
    pub representative_pod: String,
    /// The NetworkPolicies selecting these pods, as namespace/name.
    pub selected_by: Vec<String>,
    pub verdict: Verdict,
    /// The paths out, at most [`crate::network::MAX_LEAKS_PER_GROUP`].
    pub leaks: Vec<String>,
    pub leaks_left_out: usize,
}

fn is_finished(pod: &CachedPod) -> bool {
    matches!(pod.phase(), Some("Succeeded" | "Failed"))
}

/// Builds the report. Pure: reads the catalog and the observation only.
pub fn build<C: Catalog>(catalog: &C, observation: &Observation) -> Report {
    let policies: Vec<_> = {
        let mut all = catalog.policies();
        all.sort_by_key(|p| p.name_any());
        all.into_iter()
            .filter(|p| {
                observation.only_policies.is_empty()
                    || observation.only_policies.contains(&p.name_any())
            })
            .collect()
    };
    let mut missing_policies: Vec<String> = observation
        .only_policies
        .iter()
        .filter(|name| !policies.iter().any(|p| &p.name_any() == *name))
        .cloned()
        .collect();
    missing_policies.sort();
    missing_policies.dedup();

    let namespaces = catalog.namespaces();
    let nodes: BTreeMap<String, _> = catalog
        .nodes()
        .into_iter()
        .map(|n| (n.name_any(), n))
        .collect();
    let pods = catalog.pods();
    // The exposure report is per enclave; policies of one enclave share it.
    let mut exposures_by_enclave: HashMap<String, Vec<Finding>> = HashMap::new();
    let mut in_some_scope: BTreeSet<String> = BTreeSet::new();
    let claim_moves = super::moves::by_claim(&observation.moves);

    let mut reports = Vec::new();
    for policy in &policies {
        let scope_namespaces: BTreeSet<String> = namespaces
            .iter()
            .filter(|(name, labels)| scope::covers_namespace(policy, name, labels))
            .map(|(name, _)| name.clone())
            .collect();
        in_some_scope.extend(scope_namespaces.iter().cloned());
        let unreadable: Vec<Unreadable> = observation
            .unreadable
            .iter()
            .filter(|u| {
                u.namespace
                    .as_ref()
                    .is_some_and(|ns| scope_namespaces.contains(ns))
            })
            .cloned()
            .collect();
        let scene = PolicyScene {
            catalog,
            observation,
            policy,
            namespaces: &namespaces,
            nodes: &nodes,
            pods: &pods,
            claim_moves: &claim_moves,
        };
        let report = match scope::resolve_enclave(catalog, policy) {
            Ok(enclave) => scene.judge(
                &enclave,
                scope_namespaces,
                unreadable,
                &mut exposures_by_enclave,
            ),
            Err(problem) => scene.unresolved(problem, scope_namespaces, unreadable),
        };
        reports.push(report);
    }

    let mut unreadable: Vec<Unreadable> = observation
        .unreadable
        .iter()
        .filter(|u| u.namespace.is_none())
        .filter(|u| {
            // A policy the report was not asked about changes nothing in it.
            u.kind != "ResidencyPolicy"
                || observation.only_policies.is_empty()
                || observation.only_policies.contains(&u.name)
        })
        .cloned()
        .collect();
    unreadable.sort();
    let unreadable_out_of_scope = observation
        .unreadable
        .iter()
        .filter(|u| {
            u.namespace
                .as_ref()
                .is_some_and(|ns| !in_some_scope.contains(ns))
        })
        .count();

    let mut chain = observation.chain.clone();
    let mut chains_stalled = 0;
    if let ChainObservation::Read {
        heads,
        problems,
        writers,
        stalled,
        ..
    } = &mut chain
    {
        heads.sort_by(|a, b| a.chain.cmp(&b.chain));
        problems.sort();
        writers.sort_by(|a, b| a.chain.cmp(&b.chain));
        *stalled = stalled_chains(heads, writers, observation.generated_at);
        chains_stalled = stalled.len();
    }
    let access = super::grants::section(catalog, observation.generated_at, observation.since);
    let moves = super::moves::section(
        &observation.moves,
        observation.generated_at,
        observation.since,
    );
    let enclaves: BTreeSet<&str> = reports
        .iter()
        .filter(|r| r.jurisdiction.is_some())
        .map(|r| r.enclave.as_str())
        .collect();
    let host_access: Vec<EnclaveHostAccess> = enclaves
        .into_iter()
        .map(|enclave| EnclaveHostAccess {
            enclave: enclave.to_string(),
            namespaces: crate::access::host::unguarded_namespaces(
                enclave,
                &catalog.policies(),
                &namespaces,
            ),
        })
        .collect();
    let host_access_namespaces = host_access
        .iter()
        .flat_map(|h| &h.namespaces)
        .collect::<BTreeSet<_>>()
        .len();
    let findings = reports.iter().map(|r| r.findings).sum::<usize>()
        + missing_policies.len()
        + unreadable.len()
        + chains_stalled
        + access.unreviewed_break_glass
        + moves.findings;
    Report {
        kind: REPORT_KIND,
        format_version: FORMAT_VERSION,
        generated_at: observation.generated_at.to_string(),
        operator_namespace: observation.operator_namespace.clone(),
        summary: Summary {
            all_green: findings == 0,
            findings,
            policies: reports.len(),
            policies_green: reports
                .iter()
                .filter(|r| r.verdict == Verdict::Pass)
                .count(),
            pods_in_scope: reports.iter().map(|r| r.pods.len()).sum(),
            unreadable_out_of_scope,
            host_access_namespaces,
        },
        chain,
        policies: reports,
        missing_policies,
        unreadable,
        refusals: None,
        access,
        moves,
        host_access,
    }
}

/// What judging one policy reads.
struct PolicyScene<'a, C: Catalog> {
    catalog: &'a C,
    observation: &'a Observation,
    policy: &'a ResidencyPolicy,
    namespaces: &'a BTreeMap<String, BTreeMap<String, String>>,
    nodes: &'a BTreeMap<String, std::sync::Arc<k8s_openapi::api::core::v1::Node>>,
    pods: &'a [std::sync::Arc<CachedPod>],
    /// Each claim's VolumeMigration, by (namespace, claim), named in its volume finding.
    claim_moves: &'a BTreeMap<(String, String), super::moves::ClaimMove>,
}

impl<C: Catalog> PolicyScene<'_, C> {
    fn skeleton(&self, namespaces: BTreeSet<String>, unreadable: Vec<Unreadable>) -> PolicyReport {
        let policy = self.policy;
        PolicyReport {
            name: policy.name_any(),
            enclave: policy.spec.enclave.clone(),
            jurisdiction: None,
            sites: Vec::new(),
            enforcement: policy.spec.enforcement,
            network_isolation: policy.spec.network.isolation,
            verdict: Verdict::Unknown,
            findings: 0,
            enclave_problem: None,
            namespaces: namespaces.into_iter().collect(),
            checks: Checks::unknown(""),
            counts: PodCounts::default(),
            pods: Vec::new(),
            placement_findings: Vec::new(),
            volume_findings: Vec::new(),
            network_groups: Vec::new(),
            exposures: Vec::new(),
            unreadable,
        }
    }

    /// A policy whose enclave cannot be resolved: nothing can be judged, and that is
    /// one finding (plus what could not be read).
    fn unresolved(
        &self,
        problem: String,
        namespaces: BTreeSet<String>,
        unreadable: Vec<Unreadable>,
    ) -> PolicyReport {
        let enclave = &self.policy.spec.enclave;
        // A DataEnclave that exists but does not parse is not "missing".
        let problem = self
            .observation
            .unreadable
            .iter()
            .find(|u| u.kind == "DataEnclave" && &u.name == enclave)
            .map(|u| format!("DataEnclave {enclave:?} could not be read: {}", u.error))
            .unwrap_or(problem);
        let mut report = self.skeleton(namespaces, unreadable);
        report.checks = Checks::unknown(&format!("not judged: {problem}"));
        report.findings = 1 + report.unreadable.len();
        report.enclave_problem = Some(problem);
        report.verdict = Verdict::Unknown;
        report
    }

    fn judge(
        &self,
        enclave: &scope::ResolvedEnclave,
        namespaces: BTreeSet<String>,
        unreadable: Vec<Unreadable>,
        exposures_by_enclave: &mut HashMap<String, Vec<Finding>>,
    ) -> PolicyReport {
        let policy = self.policy;
        let catalog = self.catalog;
        let mut report = self.skeleton(namespaces, unreadable);
        report.jurisdiction = Some(enclave.enclave.spec.jurisdiction.clone());
        report.sites = enclave
            .site_names()
            .into_iter()
            .map(str::to_string)
            .collect();

        // Placement: the residency controller's assessment, with an empty memory (the
        // audit has seen no eviction) at the report's time.
        let assessment = assess::assess(
            policy,
            enclave,
            catalog,
            &Memory::default(),
            self.observation.generated_at,
        );
        report.counts = PodCounts {
            matched: assessment.matched,
            compliant: assessment.compliant,
            non_compliant: assessment.non_compliant,
            migrating: assessment.migrating,
            blocked: assessment.blocked,
        };
        let violations: HashMap<(Option<&str>, &str), &Violation> = assessment
            .violations
            .iter()
            .map(|v| ((v.namespace.as_deref(), v.name.as_str()), v))
            .collect();

        // Volumes: the controller's volume step, and each pod's claims judged by the
        // same rules.
        let volume_assessment = storage::assess(policy, enclave, catalog);
        let enclave_nodes: Vec<_> = self
            .nodes
            .values()
            .filter(|n| enclave.contains_node(n.labels()))
            .cloned()
            .collect();
        let default_class = volumes::default_class(&catalog.storage_classes());
        let storage = Storage {
            classes: &enclave.enclave.spec.storage.storage_class_names,
            default_class: default_class.as_deref(),
            enclave_nodes: &enclave_nodes,
        };

        // Network: the controller's reachability report over every NetworkPolicy.
        let inside = network::namespaces(policy, catalog, &self.observation.operator_namespace);
        let reachability = network::reachability_report(policy, enclave, catalog, &inside);
        let leaks = reachability
            .as_ref()
            .map(network::leak_assessment)
            .unwrap_or_default();
        let mut pod_network: HashMap<(&str, &str), Verdict> = HashMap::new();
        for group in reachability.iter().flat_map(|r| &r.groups) {
            let verdict = if group.leaks.is_empty() {
                Verdict::Pass
            } else {
                Verdict::Fail
            };
            for pod in &group.pods {
                pod_network.insert((group.namespace.as_str(), pod.as_str()), verdict);
            }
        }

        // Every pod the assessment counted, in order.
        let mut pods: Vec<PodReport> =
            self.pods
                .iter()
                .filter_map(|pod| {
                    let namespace = pod.namespace()?;
                    let labels = self.namespaces.get(&namespace)?;
                    (!is_finished(pod) && scope::covers(policy, &namespace, labels, pod.labels()))
                        .then(|| {
                            self.pod_report(
                                pod,
                                namespace,
                                enclave,
                                &violations,
                                &storage,
                                &pod_network,
                            )
                        })
                })
                .collect();
        pods.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));

        report.checks.placement = placement_check(&report.counts, enclave);
        report.checks.volumes = volumes_check(&volume_assessment);
        report.checks.network = network_check(policy, &leaks);
        let findings = exposures_by_enclave
            .entry(enclave.name())
            .or_insert_with(|| {
                sites::exposures(
                    catalog,
                    &enclave.enclave,
                    &self.observation.operator_namespace,
                )
            });
        let exposures = in_namespaces(findings, &report.namespaces);
        report.checks.access = access_check(&exposures);
        let summary = rbac::summarize(&exposures, usize::MAX);
        report.exposures = summary.findings.iter().map(Exposure::from).collect();

        report.placement_findings = assessment.violations;
        report.volume_findings = volume_assessment
            .violations
            .into_iter()
            .map(|violation| {
                let volume_move = (violation.kind == "PersistentVolumeClaim")
                    .then(|| {
                        let key = (violation.namespace.clone()?, violation.name.clone());
                        self.claim_moves.get(&key).cloned()
                    })
                    .flatten();
                VolumeFinding {
                    violation,
                    volume_move,
                }
            })
            .collect();
        report.network_groups = reachability
            .into_iter()
            .flat_map(|r| r.groups)
            .map(|group| NetworkGroup {
                verdict: if group.leaks.is_empty() {
                    Verdict::Pass
                } else {
                    Verdict::Fail
                },
                namespace: group.namespace,
                pods: group.pod_count,
                representative_pod: group.representative_pod,
                selected_by: group.selected_by.iter().map(ToString::to_string).collect(),
                leaks: group.leaks.iter().map(ToString::to_string).collect(),
                leaks_left_out: group.leaks_left_out,
            })
            .collect();
        report.pods = pods;
        report.findings = report
            .checks
            .all()
            .iter()
            .map(|c| c.findings)
            .sum::<usize>()
            + report.unreadable.len();
        report.verdict = if report.checks.all().iter().any(|c| c.verdict.is_finding())
            || !report.unreadable.is_empty()
        {
            Verdict::Fail
        } else {
            Verdict::Pass
        };
        report
    }

    fn pod_report(
        &self,
        pod: &CachedPod,
        namespace: String,
        enclave: &scope::ResolvedEnclave,
        violations: &HashMap<(Option<&str>, &str), &Violation>,
        storage: &Storage,
        pod_network: &HashMap<(&str, &str), Verdict>,
    ) -> PodReport {
        let name = pod.name_any();
        let node = pod.node_name().map(str::to_string);
        let node_labels = node
            .as_ref()
            .and_then(|n| self.nodes.get(n))
            .map(|n| n.labels());
        let site = node_labels.and_then(|labels| {
            enclave
                .enclave
                .spec
                .sites
                .iter()
                .find(|s| selector::matches(&s.node_selector, labels))
                .map(|s| s.name.clone())
        });
        let placement = match violations.get(&(Some(namespace.as_str()), name.as_str())) {
            Some(violation) => PodVerdict {
                verdict: Verdict::Fail,
                reason: Some(violation.reason.clone()),
                message: Some(violation.message.clone()),
            },
            None => {
                // The assessment lists every non-compliant pod but those on their way
                // out: outside, and being deleted.
                let inside = match &node {
                    Some(_) => site.is_some(),
                    None => placement::implies_enclave(&pod.placement_spec(), &enclave.site_terms),
                };
                if !inside && pod.metadata.deletion_timestamp.is_some() {
                    PodVerdict {
                        verdict: Verdict::Fail,
                        reason: Some("Migrating".into()),
                        message: Some(format!(
                            "pod is being deleted from node {}, outside DataEnclave {}",
                            node.as_deref().unwrap_or("(none)"),
                            enclave.name()
                        )),
                    }
                } else {
                    PodVerdict {
                        verdict: Verdict::Pass,
                        reason: None,
                        message: None,
                    }
                }
            }
        };
        let mut claims: Vec<&String> = pod.spec.claims.iter().collect();
        claims.sort();
        claims.dedup();
        let volumes = claims
            .into_iter()
            .map(|claim| self.pod_volume(&namespace, claim, storage))
            .collect();
        let network = pod_network
            .get(&(namespace.as_str(), name.as_str()))
            .copied()
            .unwrap_or(Verdict::NotApplicable);
        PodReport {
            namespace,
            name,
            node,
            site,
            phase: pod.phase().map(str::to_string),
            placement,
            volumes,
            network,
        }
    }

    fn pod_volume(&self, namespace: &str, claim_name: &str, storage: &Storage) -> PodVolume {
        let Some(claim) = self.catalog.claim(namespace, claim_name) else {
            return PodVolume {
                claim: claim_name.to_string(),
                volume: None,
                storage_class: None,
                verdict: Verdict::Unknown,
                message: Some(format!(
                    "PersistentVolumeClaim {namespace}/{claim_name} does not exist"
                )),
            };
        };
        let spec = claim.spec.clone().unwrap_or_default();
        let bound = spec.volume_name.clone().filter(|v| !v.is_empty());
        let volume = bound.as_deref().and_then(|v| self.catalog.volume(v));
        let annotations = claim.metadata.annotations.clone().unwrap_or_default();
        let storage_class = match &volume {
            Some(pv) => pv.spec.as_ref().and_then(|s| s.storage_class_name.clone()),
            // The class that provisions it: the beta annotation before the field.
            None => match crate::volumes::claim_class(&annotations, &spec) {
                Ok(Some((class, _))) => Some(class.to_string()),
                Ok(None) => storage.default_class.map(str::to_string),
                Err(_) => None,
            },
        };
        let outside = match &volume {
            Some(pv) => storage.volume_outside(pv),
            None => storage
                .claim_outside(&annotations, &spec, &|n| self.catalog.volume(n))
                .map(|why| format!("claim {why}")),
        };
        PodVolume {
            claim: claim_name.to_string(),
            volume: bound,
            storage_class,
            verdict: if outside.is_some() {
                Verdict::Fail
            } else {
                Verdict::Pass
            },
            message: outside,
        }
    }
}

/// The exposures that reach the given namespaces: RoleBindings in them, every
/// ClusterRoleBinding, and every binding that acts as an approved identity, which passes
/// as approved staff wherever the enclave is (none when there are no namespaces: no
/// data is held yet, as the sites controller rules).
fn in_namespaces(findings: &[Finding], namespaces: &[String]) -> Vec<Finding> {
    if namespaces.is_empty() {
        return Vec::new();
    }
    findings
        .iter()
        .filter(|f| match &f.applies_to {
            _ if !f.acts_as.is_empty() => true,
            AppliesTo::AllNamespaces => true,
            AppliesTo::Namespace(ns) => namespaces.binary_search(ns).is_ok(),
        })
        .cloned()
        .collect()
}

fn count(n: i32) -> usize {
    usize::try_from(n).unwrap_or(0)
}

fn placement_check(counts: &PodCounts, enclave: &scope::ResolvedEnclave) -> Check {
    if counts.non_compliant == 0 {
        return Check {
            verdict: Verdict::Pass,
            findings: 0,
            summary: format!(
                "all {} pod(s) in scope run on, or are held to, nodes of DataEnclave {} ({})",
                counts.matched,
                enclave.name(),
                enclave.site_names().join(", ")
            ),
        };
    }
    Check {
        verdict: Verdict::Fail,
        findings: count(counts.non_compliant),
        summary: format!(
            "{} of {} pod(s) in scope are outside DataEnclave {} ({} being moved, {} blocked)",
            counts.non_compliant,
            counts.matched,
            enclave.name(),
            counts.migrating,
            counts.blocked
        ),
    }
}

fn volumes_check(volumes: &storage::VolumeAssessment) -> Check {
    let bad = &volumes.violations;
    if bad.is_empty() {
        return Check {
            verdict: Verdict::Pass,
            findings: 0,
            summary: "every claim in scope keeps its data on the enclave's storage".into(),
        };
    }
    let claims = bad.iter().filter(|v| v.kind != "StorageClass").count();
    Check {
        verdict: Verdict::Fail,
        findings: bad.len(),
        summary: format!(
            "{claims} claim(s) and {} enclave storage class(es) keep data outside the enclave",
            bad.len() - claims
        ),
    }
}

fn network_check(policy: &ResidencyPolicy, leaks: &network::LeakAssessment) -> Check {
    if policy.spec.network.isolation == NetworkIsolation::None {
        return Check {
            verdict: Verdict::NotApplicable,
            findings: 0,
            summary: "network.isolation is None: the policy asks for no network fence".into(),
        };
    }
    if leaks.violations.is_empty() {
        return Check {
            verdict: Verdict::Pass,
            findings: 0,
            summary: "no NetworkPolicy opens a path between a pod in scope and the outside".into(),
        };
    }
    Check {
        verdict: Verdict::Fail,
        findings: leaks.violations.len(),
        summary: format!(
            "{} path(s) out of the enclave are open, for {} group(s) of pods in scope",
            leaks.leaks,
            leaks.violations.len()
        ),
    }
}

fn access_check(exposures: &[Finding]) -> Check {
    let built_in = exposures.iter().filter(|f| f.built_in()).count();
    let nodes = exposures
        .iter()
        .filter(|f| f.holder == rbac::Holder::Node)
        .count();
    let others = exposures.len() - built_in;
    let expected = match built_in {
        0 => String::new(),
        n => format!(" ({n} built-in system grant(s), expected, are listed)"),
    };
    let to_nodes = match nodes {
        0 => String::new(),
        n => format!(", {n} of them to node credentials"),
    };
    if others == 0 {
        return Check {
            verdict: Verdict::Pass,
            findings: 0,
            summary: format!(
                "no RBAC binding gives anyone outside the approved staff a way to the pods, logs, secrets or claims in scope, to the enclave's scope or admission, or to an approved identity{expected}"
            ),
        };
    }
    Check {
        verdict: Verdict::Fail,
        findings: others,
        summary: format!(
            "{others} RBAC grant(s) reach the namespaces in scope outside the approved staff{to_nodes}{expected}"
        ),
    }
}
