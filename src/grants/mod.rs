//! Access grants, pure: where an [`AccessGrant`] stands, from its spec, the
//! [`AccessApproval`]s that name it, its enclave's rules and the time; and whether a
//! request to reach into a pod is covered by an active grant.
//!
//! Nothing here reads a status or a field whose author is not established: the
//! requester and each approver are what the API server authenticated at creation (the
//! chart's ValidatingAdmissionPolicy `enclave-operator-access-identity` refuses any
//! other value) and both specs are immutable (CRD rules), so a state is recomputed
//! from trusted inputs at every decision instead of being read back from a status a
//! tenant could forge. The I/O (status, Events, decision-log records, alarms) is in
//! [`crate::controller::grants`].
//!
//! The state machine: `Pending` until a counted approval (`Active` from its time for
//! the grant's duration) or a counted denial (`Denied`); `Active` until its expiry
//! (`Expired`) or a counted revocation or later denial (`Revoked`); a pending grant
//! nobody decides on expires after [`PENDING_TTL`]. A break-glass grant by an approver
//! of the enclave is `Active` from its creation for at most the enclave's
//! `breakGlassMinutes`, and stays unreviewed until another approver acknowledges it.
//! A grant the enclave could never approve (longer than its maximum, break-glass by a
//! non-approver, the enclave missing) is `Invalid`.

pub mod anomaly;

use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;

use crate::crd::{AccessApproval, AccessGrant, ApprovalDecision, DataEnclave, GrantVerb};

/// How long a grant may wait for a decision: an approval weeks later would open access
/// nobody still expects.
pub const PENDING_TTL: SignedDuration = SignedDuration::from_hours(24);

/// Where a grant stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Pending,
    Active,
    Denied,
    Expired,
    Revoked,
    Invalid,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "Pending",
            State::Active => "Active",
            State::Denied => "Denied",
            State::Expired => "Expired",
            State::Revoked => "Revoked",
            State::Invalid => "Invalid",
        }
    }
}

/// A grant evaluated at one moment.
#[derive(Clone, Debug, PartialEq)]
pub struct Evaluation {
    pub state: State,
    /// The counted approver (the requester, for break-glass).
    pub approved_by: Option<String>,
    pub active_from: Option<Timestamp>,
    pub expires_at: Option<Timestamp>,
    /// Who revoked or denied it.
    pub ended_by: Option<String>,
    /// Break-glass: who acknowledged it.
    pub reviewed_by: Option<String>,
    pub break_glass: bool,
    /// Why it stands so, and every approval that was not counted and why.
    pub message: String,
}

impl Evaluation {
    /// What is left of an active grant, to the minute rounded up, for `kubectl get`
    /// ("1h05m", "42m"); `None` when it is not active. Minutes, not seconds: the status
    /// is written when this changes, once a minute per active grant at most.
    pub fn time_left(&self, now: Timestamp) -> Option<String> {
        if self.state != State::Active {
            return None;
        }
        let seconds = self.expires_at?.as_second() - now.as_second();
        if seconds <= 0 {
            return None;
        }
        let minutes = (seconds + 59) / 60;
        Some(if minutes >= 60 {
            format!("{}h{:02}m", minutes / 60, minutes % 60)
        } else {
            format!("{minutes}m")
        })
    }

    /// An evaluation in `state` with nothing decided yet.
    pub(crate) fn new(state: State, message: String) -> Self {
        Self {
            state,
            approved_by: None,
            active_from: None,
            expires_at: None,
            ended_by: None,
            reviewed_by: None,
            break_glass: false,
            message,
        }
    }

    /// A break-glass grant that took effect and nobody acknowledged: an audit finding.
    pub fn unreviewed_break_glass(&self) -> bool {
        self.break_glass && self.active_from.is_some() && self.reviewed_by.is_none()
    }
}

fn created(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Option<Timestamp> {
    meta.creation_timestamp.as_ref().map(|t| t.0)
}

/// Does this approval name this grant (name and UID)?
pub fn names(approval: &AccessApproval, grant: &AccessGrant) -> bool {
    approval.spec.grant.as_ref().is_some_and(|g| {
        g.name == grant.name_any() && grant.metadata.uid.as_deref() == Some(g.uid.as_str())
    })
}

/// Where `grant` stands at `now`, given the approvals that name it (others are
/// ignored) and its enclave (`None`: not found).
pub fn evaluate(
    grant: &AccessGrant,
    approvals: &[&AccessApproval],
    enclave: Option<&DataEnclave>,
    now: Timestamp,
) -> Evaluation {
    let spec = &grant.spec;
    let Some(enclave) = enclave else {
        return Evaluation::new(
            State::Invalid,
            format!("DataEnclave {} does not exist", spec.enclave),
        );
    };
    let Some(created_at) = created(&grant.metadata) else {
        return Evaluation::new(State::Invalid, "no creation time".into());
    };
    let access = enclave.spec.access.clone().unwrap_or_default();
    if spec.duration_minutes > access.max_grant_minutes {
        return Evaluation::new(
            State::Invalid,
            format!(
                "spec.durationMinutes {} is longer than DataEnclave {} allows (spec.access.maxGrantMinutes: {})",
                spec.duration_minutes, spec.enclave, access.max_grant_minutes
            ),
        );
    }
    let mut notes: Vec<String> = Vec::new();
    // The approvals that count, in the order they were made (a revocation made in the
    // same second as an approval comes after it: ties never favour access).
    let mut counted: Vec<(&AccessApproval, Timestamp)> = Vec::new();
    for approval in approvals.iter().copied().filter(|a| names(a, grant)) {
        let who = &approval.spec.approver;
        let decision = approval.spec.decision;
        // Only what was decided by `now` counts (a clock behind the API server's must
        // not open a grant before its approval).
        let Some(at) = created(&approval.metadata).filter(|at| *at <= now) else {
            continue;
        };
        if decision == ApprovalDecision::ClearLockout {
            continue;
        }
        if who == &spec.requester {
            notes.push(format!(
                "{} by {who} not counted: the requester cannot decide on their own grant",
                decision.as_str()
            ));
            continue;
        }
        if access
            .approver(who, &approval.spec.approver_groups)
            .is_none()
        {
            notes.push(format!(
                "{} by {who} not counted: DataEnclave {} does not name them an approver",
                decision.as_str(),
                spec.enclave
            ));
            continue;
        }
        counted.push((approval, at));
    }
    counted.sort_by_key(|(a, at)| {
        let rank = match a.spec.decision {
            ApprovalDecision::Approve | ApprovalDecision::Acknowledge => 0,
            _ => 1,
        };
        (*at, rank, a.name_any())
    });

    let mut eval = Evaluation::new(State::Pending, String::new());
    if spec.break_glass {
        eval.break_glass = true;
        match access.approver(&spec.requester, &spec.requester_groups) {
            Some(_) => {
                let minutes = spec.duration_minutes.min(access.break_glass_minutes);
                eval.state = State::Active;
                eval.approved_by = Some(spec.requester.clone());
                eval.active_from = Some(created_at);
                eval.expires_at = Some(created_at + minutes_(minutes));
            }
            None => {
                return Evaluation::new(
                    State::Invalid,
                    format!(
                        "break-glass is for the approvers of DataEnclave {} only; {} is not one",
                        spec.enclave, spec.requester
                    ),
                );
            }
        }
    }
    for (approval, at) in &counted {
        let who = approval.spec.approver.clone();
        match (eval.state, approval.spec.decision) {
            (State::Pending, ApprovalDecision::Approve) if *at < created_at + PENDING_TTL => {
                eval.state = State::Active;
                eval.approved_by = Some(who);
                eval.active_from = Some(*at);
                eval.expires_at = Some(*at + minutes_(spec.duration_minutes));
            }
            (State::Pending, ApprovalDecision::Deny) => {
                eval.state = State::Denied;
                eval.ended_by = Some(who);
            }
            (State::Active, ApprovalDecision::Revoke | ApprovalDecision::Deny)
                if eval.expires_at.is_some_and(|end| *at < end) =>
            {
                eval.state = State::Revoked;
                eval.ended_by = Some(who);
                eval.expires_at = Some(*at);
            }
            (_, ApprovalDecision::Acknowledge) if eval.break_glass => {
                eval.reviewed_by.get_or_insert(who);
            }
            _ => {}
        }
    }
    match eval.state {
        State::Pending if now >= created_at + PENDING_TTL => {
            eval.state = State::Expired;
            eval.message = "nobody decided on it within 24 hours".into();
        }
        State::Pending => {
            eval.message = format!(
                "waiting for an approver of DataEnclave {} other than {}",
                spec.enclave, spec.requester
            );
        }
        State::Active if eval.expires_at.is_some_and(|end| now >= end) => {
            eval.state = State::Expired;
            eval.message = "its time is up".into();
        }
        State::Active => {
            eval.message = if eval.break_glass {
                "break-glass: active at once, to be acknowledged by another approver".into()
            } else {
                "approved".into()
            };
        }
        State::Denied => eval.message = "denied".into(),
        State::Revoked => eval.message = "revoked".into(),
        State::Expired | State::Invalid => {}
    }
    // A revocation that comes after expiry leaves an expired grant expired; one that
    // comes before takes effect even if the time is now up.
    if let Some(note) = (!notes.is_empty()).then(|| notes.join("; ")) {
        eval.message = format!("{}; {note}", eval.message);
    }
    eval
}

fn minutes_(minutes: i32) -> SignedDuration {
    SignedDuration::from_mins(i64::from(minutes))
}

/// The grants and approvals the operator has seen.
#[derive(Clone, Debug, Default)]
pub struct Grants {
    pub grants: Vec<Arc<AccessGrant>>,
    pub approvals: Vec<Arc<AccessApproval>>,
    /// Alarms raised, lockouts among them.
    pub anomalies: Vec<Arc<crate::crd::AccessAnomaly>>,
}

/// A request to reach into a pod, as far as grants are concerned.
#[derive(Clone, Copy, Debug)]
pub struct Attempt<'a> {
    pub user: &'a str,
    pub verb: GrantVerb,
    pub namespace: &'a str,
    pub pod: &'a str,
}

/// The grant that lets an attempt through.
#[derive(Clone, Debug, PartialEq)]
pub struct Covering {
    pub grant: String,
    pub approved_by: String,
    pub expires_at: Timestamp,
    pub break_glass: bool,
}

impl Covering {
    /// How a decision names it.
    pub fn describe(&self, user: &str) -> String {
        let kind = if self.break_glass {
            "break-glass grant"
        } else {
            "grant"
        };
        format!(
            "{user} under {kind} {} (approved by {}, until {})",
            self.grant, self.approved_by, self.expires_at
        )
    }
}

impl Grants {
    /// The approvals that name `grant`.
    pub fn approvals_of(&self, grant: &AccessGrant) -> Vec<&AccessApproval> {
        self.approvals
            .iter()
            .map(|a| a.as_ref())
            .filter(|a| names(a, grant))
            .collect()
    }

    /// An active grant of `enclave` to the attempt's user that covers its verb,
    /// namespace and pod at `now`, if there is one.
    pub fn covering(
        &self,
        enclave: &DataEnclave,
        attempt: &Attempt,
        now: Timestamp,
    ) -> Option<Covering> {
        let enclave_name = enclave.name_any();
        self.grants
            .iter()
            .filter(|g| {
                g.spec.requester == attempt.user
                    && g.spec.enclave == enclave_name
                    && g.spec.verbs.contains(&attempt.verb)
                    && g.spec.namespaces.iter().any(|n| n == attempt.namespace)
                    && (g.spec.pods.is_empty() || g.spec.pods.iter().any(|p| p == attempt.pod))
                    && g.metadata.deletion_timestamp.is_none()
            })
            .find_map(|g| {
                let eval = evaluate(g, &self.approvals_of(g), Some(enclave), now);
                (eval.state == State::Active).then(|| Covering {
                    grant: g.name_any(),
                    approved_by: eval.approved_by.unwrap_or_default(),
                    expires_at: eval.expires_at.unwrap_or(now),
                    break_glass: eval.break_glass,
                })
            })
    }

    /// Was any grant of `user` to `enclave` ever approved (active now, expired or
    /// revoked)? As far as the grants still in the cluster tell.
    pub fn ever_approved(&self, enclave: &DataEnclave, user: &str, now: Timestamp) -> bool {
        let enclave_name = enclave.name_any();
        self.grants
            .iter()
            .filter(|g| g.spec.requester == user && g.spec.enclave == enclave_name)
            .any(|g| {
                evaluate(g, &self.approvals_of(g), Some(enclave), now)
                    .approved_by
                    .is_some()
            })
    }

    /// Does `user` hold any grant of `enclave` that is active at `now`, whatever its
    /// scope? (An attempt outside every active grant's scope is an anomaly of its own.)
    pub fn holds_any(&self, enclave: &DataEnclave, user: &str, now: Timestamp) -> bool {
        let enclave_name = enclave.name_any();
        self.grants
            .iter()
            .filter(|g| g.spec.requester == user && g.spec.enclave == enclave_name)
            .any(|g| evaluate(g, &self.approvals_of(g), Some(enclave), now).state == State::Active)
    }
}

#[cfg(test)]
mod tests;

/// What the access gate and the authorizer answer for one enclave.
#[derive(Clone, Debug, PartialEq)]
pub enum Gate {
    /// Let through: how (standing approval or grant), and the grant if one was used.
    Admitted { how: String, grant: Option<String> },
    /// Refused, and why (the end of a sentence naming the enclave).
    Refused(String),
}

/// The one rule the admission gate and the authorizer share: standing approval
/// (`approvedUsers`, `approvedGroups`) or an active grant covering the attempt. While
/// the grants are not synced (`None`), nobody passes: the gate cannot know which grants
/// exist, so in-scope requests fail closed. `verb` is `None` for doors no grant opens.
#[allow(clippy::too_many_arguments)]
pub fn gate(
    grants: Option<&Grants>,
    enclave: &DataEnclave,
    access: &crate::crd::Access,
    user: &str,
    groups: &[String],
    verb: Option<GrantVerb>,
    namespace: &str,
    pod: &str,
    now: Timestamp,
) -> Gate {
    let enclave_name = enclave.name_any();
    let Some(grants) = grants else {
        return Gate::Refused(format!(
            "enclave-operator has not yet synced the AccessGrants of DataEnclave {enclave_name}; retry in a moment"
        ));
    };
    // A lockout holds whatever approves the subject: it answers an attack, and a
    // stolen credential of approved staff is what an attack looks like.
    if let Some(anomaly) = anomaly::lockout(grants, enclave, user) {
        return Gate::Refused(format!(
            "{user} is locked out of DataEnclave {enclave_name} after repeated denied attempts (AccessAnomaly {}) until an approver clears it",
            anomaly.name_any()
        ));
    }
    if let Some(how) = access.admits(user, groups) {
        return Gate::Admitted { how, grant: None };
    }
    let covering = verb.and_then(|verb| {
        grants.covering(
            enclave,
            &Attempt {
                user,
                verb,
                namespace,
                pod,
            },
            now,
        )
    });
    match covering {
        Some(covering) => Gate::Admitted {
            how: covering.describe(user),
            grant: Some(covering.grant),
        },
        None => Gate::Refused(format!(
            "DataEnclave {enclave_name} admits only its approved staff ({}) and holders of an active AccessGrant covering the request",
            access.staff()
        )),
    }
}

/// How long an alarm without lockout keeps the enclave's `SuspiciousAccess` condition.
pub const ALARM_SHOWN: SignedDuration = SignedDuration::from_hours(1);

/// The DataEnclave's conditions about grants, observed at `now`: `SuspiciousAccess`
/// (True, naming the subjects, while a lockout holds or for [`ALARM_SHOWN`] after an
/// alarm) and `BreakGlassActive` (True while a break-glass grant is active or not yet
/// acknowledged). Each is present only while True: their False would be the normal
/// state, and the sites controller reports a False condition as a warning.
pub fn observed_conditions(
    grants: &Grants,
    enclave: &DataEnclave,
    now: Timestamp,
) -> Vec<crate::conditions::Observed> {
    let name = enclave.name_any();
    let mut out = Vec::new();
    let mut locked: Vec<String> = Vec::new();
    let mut alarmed: Vec<String> = Vec::new();
    for anomaly in grants.anomalies.iter().filter(|a| a.spec.enclave == name) {
        let user = &anomaly.spec.user;
        if anomaly.spec.lockout
            && anomaly::lockout(grants, enclave, user).is_some()
            && !locked.contains(user)
        {
            locked.push(user.clone());
        } else if created(&anomaly.metadata).is_some_and(|t| now < t + ALARM_SHOWN)
            && !alarmed.contains(user)
        {
            alarmed.push(user.clone());
        }
    }
    alarmed.retain(|u| !locked.contains(u));
    if !locked.is_empty() || !alarmed.is_empty() {
        let mut parts = Vec::new();
        if !locked.is_empty() {
            parts.push(format!(
                "locked out until an approver clears it: {}",
                locked.join(", ")
            ));
        }
        if !alarmed.is_empty() {
            parts.push(format!("repeated denied attempts: {}", alarmed.join(", ")));
        }
        out.push(crate::conditions::Observed::new(
            "SuspiciousAccess",
            true,
            if locked.is_empty() {
                "Alarm"
            } else {
                "Lockout"
            },
            parts.join("; "),
        ));
    }
    let mut glass: Vec<String> = Vec::new();
    for grant in grants
        .grants
        .iter()
        .filter(|g| g.spec.enclave == name && g.spec.break_glass)
    {
        let eval = evaluate(grant, &grants.approvals_of(grant), Some(enclave), now);
        if eval.state == State::Active || eval.unreviewed_break_glass() {
            glass.push(format!(
                "{} by {} ({}{})",
                grant.name_any(),
                grant.spec.requester,
                eval.state.as_str(),
                if eval.reviewed_by.is_none() {
                    ", not acknowledged"
                } else {
                    ""
                }
            ));
        }
    }
    if !glass.is_empty() {
        out.push(crate::conditions::Observed::new(
            "BreakGlassActive",
            true,
            "BreakGlass",
            format!("break-glass grants: {}", glass.join(", ")),
        ));
    }
    out
}
