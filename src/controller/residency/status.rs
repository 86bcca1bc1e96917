//! A ResidencyPolicy's status, pure: from what the other steps found — the enclave,
//! the admission objects read back, the assessment of the scope — to counts, bounded
//! violations and conditions.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::assess::{Assessment, MAX_VIOLATIONS};
use crate::{
    conditions::{self, Observed},
    crd::{Enforcement, ResidencyPolicy, ResidencyPolicyStatus},
    scope::ResolvedEnclave,
};

/// Whether the policy's admission objects are really in place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdmissionReadiness {
    /// Written and read back as asked, by this engine.
    InPlace { engine: &'static str },
    /// Not in place: the reason (CamelCase) and a message for the user.
    NotInPlace {
        reason: &'static str,
        message: String,
    },
    /// This replica does not write admission objects (it is not the leader).
    Unknown,
}

/// What the network step did and found.
pub struct NetworkFound<'a> {
    pub isolation: crate::crd::NetworkIsolation,
    /// The fence written (how many objects were healed), or why not.
    pub fence: Result<usize, String>,
    pub leaks: &'a super::network::LeakAssessment,
}

/// Everything status is built from.
pub struct Found<'a> {
    pub enclave: Result<&'a ResolvedEnclave, &'a str>,
    pub admission: &'a AdmissionReadiness,
    pub assessment: Option<&'a Assessment>,
    pub volumes: Option<&'a super::storage::VolumeAssessment>,
    pub network: Option<NetworkFound<'a>>,
    /// Whether this operator's decision log checkpoints are stored
    /// ([`crate::evidence::health::condition`]).
    pub checkpoints: Option<Observed>,
}

fn ready(policy: &ResidencyPolicy, found: &Found) -> Observed {
    let enclave = match found.enclave {
        Ok(enclave) => enclave,
        Err(problem) => {
            return Observed::new(
                "Ready",
                false,
                "EnclaveNotFound",
                format!("{problem}; in-scope pods are refused until it exists"),
            );
        }
    };
    let unknown_sites: Vec<&str> = policy
        .spec
        .placement
        .iter()
        .flat_map(|p| &p.preferred_sites)
        .filter(|p| !enclave.enclave.spec.sites.iter().any(|s| s.name == p.site))
        .map(|p| p.site.as_str())
        .collect();
    if !unknown_sites.is_empty() {
        return Observed::new(
            "Ready",
            false,
            "UnknownPreferredSite",
            format!(
                "placement.preferredSites names sites DataEnclave {} does not have: {}",
                enclave.name(),
                unknown_sites.join(", ")
            ),
        );
    }
    match found.admission {
        AdmissionReadiness::NotInPlace { reason, message } => {
            Observed::new("Ready", false, reason, message.clone())
        }
        AdmissionReadiness::InPlace { engine } => Observed::new(
            "Ready",
            true,
            "Enforcing",
            format!(
                "DataEnclave {} ({}) is {} by the {engine} admission engine",
                enclave.name(),
                enclave.site_names().join(", "),
                match policy.spec.enforcement {
                    Enforcement::Enforce => "enforced",
                    Enforcement::Audit => "audited",
                }
            ),
        ),
        AdmissionReadiness::Unknown => Observed::new(
            "Ready",
            false,
            "AdmissionUnknown",
            "the operator has not yet written this policy's admission objects",
        ),
    }
}

fn compliant(policy: &ResidencyPolicy, assessment: &Assessment) -> Observed {
    if assessment.non_compliant == 0 && assessment.awaiting_detail == 0 {
        return Observed::new(
            "Compliant",
            true,
            "AllPodsInEnclave",
            format!(
                "all {} pods in scope are inside the enclave",
                assessment.matched
            ),
        );
    }
    let (reason, what) = if policy.spec.enforcement == Enforcement::Audit {
        ("AuditOnly", "Audit mode moves nothing")
    } else if assessment.migrating > 0 || !assessment.to_evict.is_empty() {
        ("Migrating", "moving them into the enclave")
    } else if assessment.blocked > 0 {
        ("Blocked", "they need manual action (see violations)")
    } else if assessment.awaiting_detail > 0 {
        (
            "Assessing",
            "their namespace just came into scope and is being read in full",
        )
    } else {
        ("OutsideEnclave", "see violations")
    };
    Observed::new(
        "Compliant",
        false,
        reason,
        format!(
            "{} of {} pods in scope are outside the enclave: {what}{}",
            assessment.non_compliant,
            assessment.matched,
            match assessment.awaiting_detail {
                0 => String::new(),
                n => format!(" ({n} not read in full yet)"),
            }
        ),
    )
}

fn conflicted(assessment: Option<&Assessment>) -> Observed {
    match assessment.map(|a| &a.conflicts).filter(|c| !c.is_empty()) {
        None => Observed::new(
            "Conflicted",
            false,
            "NoConflict",
            "no other enforcing policy holds pods of this scope to a disjoint enclave",
        ),
        Some(others) => Observed::new(
            "Conflicted",
            true,
            "DisjointEnclaves",
            format!(
                "policy {} also enforces its enclave on pods of this scope, and no node is in both enclaves: new pods are refused and running ones are not evicted",
                others.iter().cloned().collect::<Vec<_>>().join(", policy ")
            ),
        ),
    }
}

fn volumes_compliant(
    policy: &ResidencyPolicy,
    volumes: &super::storage::VolumeAssessment,
) -> Observed {
    let bad = &volumes.violations;
    if bad.is_empty() {
        return Observed::new(
            "VolumesCompliant",
            true,
            "AllVolumesInEnclave",
            "every claim in scope keeps its data on the enclave's storage",
        );
    }
    let reason = if bad.iter().all(|v| v.kind == "StorageClass") {
        "StorageClassReachesOutside"
    } else {
        "VolumesOutsideEnclave"
    };
    Observed::new(
        "VolumesCompliant",
        false,
        reason,
        format!(
            "{} claim(s) or storage class(es) keep data outside the enclave{}: see violations",
            bad.len(),
            if policy.spec.volumes.enforce_storage_classes {
                ""
            } else {
                " (volumes.enforceStorageClasses is false: new claims are not refused)"
            }
        ),
    )
}

fn network_fenced(network: &NetworkFound) -> Observed {
    if network.isolation == crate::crd::NetworkIsolation::None {
        return Observed::new(
            "NetworkFenced",
            false,
            "IsolationNone",
            "network.isolation is None: the operator manages no NetworkPolicy for this policy",
        );
    }
    if let Err(problem) = &network.fence {
        return Observed::new("NetworkFenced", false, "FenceWriteFailed", problem.clone());
    }
    if network.leaks.leaks > 0 {
        return Observed::new(
            "NetworkFenced",
            false,
            "NetworkLeak",
            format!(
                "{} path(s) out of the enclave are open through NetworkPolicies selecting pods in scope: see violations",
                network.leaks.leaks
            ),
        );
    }
    Observed::new(
        "NetworkFenced",
        true,
        "Fenced",
        "the enclave's NetworkPolicies are in place and no NetworkPolicy opens a path out",
    )
}

/// The status the policy should have. Pure.
pub fn build(policy: &ResidencyPolicy, found: &Found, now: &Time) -> ResidencyPolicyStatus {
    let previous = policy
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let mut status = ResidencyPolicyStatus {
        observed_generation: policy.metadata.generation,
        ..ResidencyPolicyStatus::default()
    };
    let mut observed = vec![ready(policy, found)];
    let mut violations = Vec::new();
    if let Some(assessment) = found.assessment {
        status.matched_pods = assessment.matched;
        status.compliant_pods = assessment.compliant;
        status.non_compliant_pods = assessment.non_compliant;
        status.migrating_pods = assessment.migrating;
        status.blocked_pods = assessment.blocked;
        violations.extend(assessment.violations.iter().cloned());
        observed.push(compliant(policy, assessment));
    }
    observed.push(conflicted(found.assessment));
    if let Some(volumes) = found.volumes {
        status.non_compliant_volumes = i32::try_from(volumes.violations.len()).unwrap_or(i32::MAX);
        violations.extend(volumes.violations.iter().cloned());
        observed.push(volumes_compliant(policy, volumes));
    }
    if let Some(network) = &found.network {
        status.network_leaks = network.leaks.leaks;
        violations.extend(network.leaks.violations.iter().cloned());
        observed.push(network_fenced(network));
    }
    if let Some(checkpoints) = &found.checkpoints {
        observed.push(checkpoints.clone());
    }
    violations.sort_by(|a, b| {
        (&a.namespace, &a.name, &a.kind, &a.reason).cmp(&(
            &b.namespace,
            &b.name,
            &b.kind,
            &b.reason,
        ))
    });
    violations.truncate(MAX_VIOLATIONS);
    status.violations = violations;
    status.conditions = conditions::settle(previous, observed, policy.metadata.generation, now);
    status
}

/// Does the new status say anything the old one did not (condition timestamps aside)?
pub fn changed(old: Option<&ResidencyPolicyStatus>, new: &ResidencyPolicyStatus) -> bool {
    let Some(old) = old else { return true };
    let strip = |s: &ResidencyPolicyStatus| ResidencyPolicyStatus {
        conditions: Vec::new(),
        ..s.clone()
    };
    strip(old) != strip(new) || !conditions::same(&old.conditions, &new.conditions)
}
