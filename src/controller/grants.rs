//! Grants and anomalies, I/O: the leader's grant controller (status for `kubectl get
//! accessgrants`, a decision-log record and an Event at every step), the denial
//! [`Observer`] every replica's admission gate and authorizer feed, and the task that
//! turns its alarms into AccessAnomaly objects, Warning Events and records.

use std::{
    collections::HashSet,
    hash::{DefaultHasher, Hash, Hasher},
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::StreamExt;
use jiff::Timestamp;
use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams, PostParams},
    runtime::events::EventType,
};
use serde_json::json;
use tokio::sync::mpsc;

use super::{Term, publish};
use crate::{
    catalog::Catalog,
    context::Context,
    crd::{AccessAnomaly, AccessAnomalySpec, AccessGrant, ApprovalDecision},
    decisions::{Kind, Record, Subject},
    grants::{
        Evaluation, State,
        anomaly::{Alarm, Standing, Tracker},
        evaluate,
    },
    metrics::{AdmissionMetrics, SuspiciousLabels},
};

/// How often grants are evaluated when nothing changes: an expiry is recorded and
/// shown within this time (access itself ends at the expiry exactly, as the gate
/// evaluates at every attempt).
pub const TICK: Duration = Duration::from_secs(5);

/// Alarms waiting to be raised; one that does not fit is dropped (and counted by the
/// metric all the same): the admission path never waits.
const ALARM_QUEUE: usize = 1024;

/// Counts denied attempts on enclave pods, for every replica's admission gate and
/// authorizer. Never blocks on I/O: alarms go to [`raise_alarms`] through a queue.
pub struct Observer {
    tracker: Mutex<Tracker>,
    alarms: Option<mpsc::Sender<Alarm>>,
}

impl Default for Observer {
    fn default() -> Self {
        Self {
            tracker: Mutex::new(Tracker::default()),
            alarms: None,
        }
    }
}

impl Observer {
    /// An observer whose alarms go to `alarms`, and the receiver for [`raise_alarms`].
    pub fn new() -> (Self, mpsc::Receiver<Alarm>) {
        let (tx, rx) = mpsc::channel(ALARM_QUEUE);
        (
            Self {
                tracker: Mutex::new(Tracker::default()),
                alarms: Some(tx),
            },
            rx,
        )
    }

    /// One denied attempt by `user` on a pod of `enclave`.
    #[allow(clippy::too_many_arguments)]
    pub fn denied<C: Catalog>(
        &self,
        catalog: &C,
        metrics: &AdmissionMetrics,
        enclave: &str,
        user: &str,
        groups: &[String],
        pod: &str,
        now: Timestamp,
    ) -> Option<Alarm> {
        let enclave = catalog.enclave(enclave)?;
        let access = enclave.spec.access.clone().unwrap_or_default();
        let rules = access.anomalies.clone().unwrap_or_default();
        let grants = catalog.grants();
        let standing = if access.admits(user, groups).is_some() {
            Standing::Approved
        } else if grants
            .as_ref()
            .is_some_and(|g| g.holds_any(&enclave, user, now))
        {
            Standing::HoldsGrant
        } else if grants
            .as_ref()
            .is_some_and(|g| g.ever_approved(&enclave, user, now))
        {
            Standing::HadAccess
        } else {
            Standing::Nobody
        };
        let alarm = self
            .tracker
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .denied(&enclave.name_any(), user, pod, standing, &rules, now)?;
        for reason in &alarm.reasons {
            metrics
                .suspicious
                .get_or_create(&SuspiciousLabels {
                    reason: reason.as_str(),
                    lockout: if alarm.lockout { "true" } else { "false" },
                })
                .inc();
        }
        if let Some(tx) = &self.alarms
            && tx.try_send(alarm.clone()).is_err()
        {
            tracing::warn!(
                user,
                "alarm queue full; suspicious access not raised as an object"
            );
        }
        Some(alarm)
    }
}

/// The AccessAnomaly name of an alarm: the enclave (shortened), a digest of the subject
/// (user names are not DNS names) and of what the alarm says (two rules can fire for
/// one subject within a second: a first attempt outside a grant, then the lockout),
/// and the second it was raised.
pub fn anomaly_name(alarm: &Alarm) -> String {
    let mut hasher = DefaultHasher::new();
    let reasons: Vec<&str> = alarm.reasons.iter().map(|r| r.as_str()).collect();
    (
        &alarm.enclave,
        &alarm.user,
        reasons,
        alarm.attempts,
        alarm.lockout,
    )
        .hash(&mut hasher);
    let enclave: String = alarm.enclave.chars().take(180).collect();
    format!(
        "{enclave}-{:016x}-{}",
        hasher.finish(),
        alarm.at.as_second()
    )
}

/// Raises each alarm: an AccessAnomaly (the lockout itself, when the enclave asks for
/// one: every replica's gate reads it from its cache), a Warning Event on the
/// DataEnclave, and a decision-log record. Runs on every replica until the queue closes.
pub async fn raise_alarms(ctx: Arc<Context>, mut alarms: mpsc::Receiver<Alarm>) {
    let api: Api<AccessAnomaly> = Api::all(ctx.client.clone());
    while let Some(alarm) = alarms.recv().await {
        let name = anomaly_name(&alarm);
        let anomaly = AccessAnomaly::new(
            &name,
            AccessAnomalySpec {
                enclave: alarm.enclave.clone(),
                user: alarm.user.clone(),
                reasons: alarm
                    .reasons
                    .iter()
                    .map(|r| r.as_str().to_string())
                    .collect(),
                denied_attempts: alarm.attempts,
                window_seconds: alarm.window_seconds,
                pods: alarm.pods.clone(),
                lockout: alarm.lockout,
            },
        );
        match api.create(&PostParams::default(), &anomaly).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(error) => {
                tracing::warn!(%error, user = %alarm.user, "could not create the AccessAnomaly")
            }
        }
        let message = alarm.message();
        ctx.sink.record(
            Record::new(
                Kind::SuspiciousAccess,
                Some(&alarm.enclave),
                Subject::new("AccessAnomaly", None, &name),
                message.clone(),
            )
            .with("user", alarm.user.clone())
            .with("enclave", alarm.enclave.clone())
            .with(
                "reasons",
                alarm
                    .reasons
                    .iter()
                    .map(|r| r.as_str().to_string())
                    .collect::<Vec<_>>(),
            )
            .with("attempts", alarm.attempts)
            .with("lockout", alarm.lockout),
        );
        publish(
            &ctx,
            &enclave_ref(&alarm.enclave),
            EventType::Warning,
            "SuspiciousAccess",
            if alarm.lockout { "Lockout" } else { "Alarm" },
            message,
        )
        .await;
    }
}

fn enclave_ref(name: &str) -> k8s_openapi::api::core::v1::ObjectReference {
    k8s_openapi::api::core::v1::ObjectReference {
        api_version: Some("enclave.dev/v1alpha1".into()),
        kind: Some("DataEnclave".into()),
        name: Some(name.into()),
        ..Default::default()
    }
}

/// The status the operator shows for an evaluation.
pub fn status_of(eval: &Evaluation, now: Timestamp) -> serde_json::Value {
    json!({
        "state": eval.state.as_str(),
        "approvedBy": eval.approved_by,
        "activeFrom": eval.active_from.map(|t| t.to_string()),
        "expiresAt": eval.expires_at.map(|t| t.to_string()),
        "timeLeft": eval.time_left(now),
        "reviewedBy": eval.reviewed_by,
        "message": eval.message,
    })
}

/// The records a change from `old` (the status the operator last wrote; `None`: never
/// seen) to `new` calls for. The status is the memory of what was recorded, so a
/// restart or a new leader records nothing twice.
pub fn transitions(
    old: Option<&crate::crd::AccessGrantStatus>,
    new: &Evaluation,
) -> Vec<(Kind, String)> {
    let mut out = Vec::new();
    let old_state = old.and_then(|s| s.state.as_deref());
    if old_state.is_none() {
        out.push((Kind::GrantRequested, "requested".to_string()));
    }
    let was_approved = old.and_then(|s| s.approved_by.as_deref()).is_some();
    if let Some(by) = &new.approved_by
        && !was_approved
    {
        let message = if new.break_glass {
            format!("break-glass invoked by {by}, to be acknowledged by another approver")
        } else {
            format!("approved by {by}")
        };
        out.push((Kind::GrantApproved, message));
    }
    if old_state != Some(new.state.as_str()) {
        let by = new.ended_by.as_deref().unwrap_or("nobody");
        match new.state {
            State::Denied => out.push((Kind::GrantDenied, format!("denied by {by}"))),
            State::Revoked => out.push((Kind::GrantRevoked, format!("revoked by {by}"))),
            State::Expired => out.push((Kind::GrantExpired, new.message.clone())),
            State::Invalid => out.push((Kind::GrantInvalid, new.message.clone())),
            State::Pending | State::Active => {}
        }
    }
    if let Some(by) = &new.reviewed_by
        && old.and_then(|s| s.reviewed_by.as_deref()).is_none()
    {
        out.push((
            Kind::GrantReviewed,
            format!("break-glass acknowledged by {by}"),
        ));
    }
    out
}

fn same_status(
    old: Option<&crate::crd::AccessGrantStatus>,
    eval: &Evaluation,
    now: Timestamp,
) -> bool {
    let Some(old) = old else {
        return false;
    };
    old.state.as_deref() == Some(eval.state.as_str())
        && old.approved_by == eval.approved_by
        && old.expires_at == eval.expires_at.map(|t| t.to_string())
        && old.time_left == eval.time_left(now)
        && old.reviewed_by == eval.reviewed_by
        && old.message.as_deref() == Some(eval.message.as_str())
}

/// One pass over every grant: status written where it changed, each step recorded.
async fn pass(ctx: &Context, cleared: &mut HashSet<String>) {
    let Some(grants) = ctx.caches.grants() else {
        return;
    };
    let now = Timestamp::now();
    let api: Api<AccessGrant> = Api::all(ctx.client.clone());
    for grant in &grants.grants {
        let enclave = ctx.caches.enclave(&grant.spec.enclave);
        let eval = evaluate(grant, &grants.approvals_of(grant), enclave.as_deref(), now);
        if same_status(grant.status.as_ref(), &eval, now) {
            continue;
        }
        let name = grant.name_any();
        let patch = json!({"status": status_of(&eval, now)});
        if let Err(error) = api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            // Not recorded either: the next pass tries both again.
            tracing::warn!(%error, grant = %name, "could not write the grant's status");
            continue;
        }
        for (kind, message) in transitions(grant.status.as_ref(), &eval) {
            let spec = &grant.spec;
            let verbs: Vec<&str> = spec.verbs.iter().map(|v| v.as_str()).collect();
            let mut record = Record::new(
                kind,
                Some(&spec.enclave),
                Subject::new("AccessGrant", None, &name),
                format!(
                    "AccessGrant {name} of {} to DataEnclave {}: {message}",
                    spec.requester, spec.enclave
                ),
            )
            .with("grant", name.clone())
            .with("requester", spec.requester.clone())
            .with("verbs", verbs)
            .with("namespaces", spec.namespaces.clone())
            .with("pods", spec.pods.clone())
            .with("reason", spec.reason.clone())
            .with("durationMinutes", spec.duration_minutes)
            .with("breakGlass", spec.break_glass)
            .with("state", eval.state.as_str());
            if let Some(ticket) = &spec.ticket {
                record = record.with("ticket", ticket.clone());
            }
            if let Some(by) = &eval.approved_by {
                record = record.with("approvedBy", by.clone());
            }
            if let Some(by) = &eval.reviewed_by {
                record = record.with("reviewedBy", by.clone());
            }
            if let Some(at) = eval.expires_at {
                record = record.with("expiresAt", at.to_string());
            }
            ctx.sink.record(record);
            let warning = spec.break_glass && kind == Kind::GrantApproved;
            publish(
                ctx,
                &grant.object_ref(&()),
                if warning {
                    EventType::Warning
                } else {
                    EventType::Normal
                },
                kind.as_str(),
                "Grant",
                message.clone(),
            )
            .await;
            if warning {
                publish(
                    ctx,
                    &enclave_ref(&spec.enclave),
                    EventType::Warning,
                    "BreakGlass",
                    "Grant",
                    format!("AccessGrant {name}: {} {message}", spec.requester),
                )
                .await;
            }
        }
    }
    // Lockouts cleared: recorded once per term (a new leader may record one again).
    for approval in &grants.approvals {
        let spec = &approval.spec;
        let (ApprovalDecision::ClearLockout, Some(lockout)) = (spec.decision, &spec.lockout) else {
            continue;
        };
        let uid = approval.metadata.uid.clone().unwrap_or_default();
        if cleared.contains(&uid) {
            continue;
        }
        let Some(enclave) = ctx.caches.enclave(&lockout.enclave) else {
            continue;
        };
        let counted = spec.approver != lockout.user
            && enclave
                .spec
                .access
                .clone()
                .unwrap_or_default()
                .approver(&spec.approver, &spec.approver_groups)
                .is_some();
        cleared.insert(uid);
        let message = if counted {
            format!(
                "{} cleared the lockout of {} on DataEnclave {}",
                spec.approver, lockout.user, lockout.enclave
            )
        } else {
            format!(
                "{} tried to clear the lockout of {} on DataEnclave {} and is not an approver who may (never the subject)",
                spec.approver, lockout.user, lockout.enclave
            )
        };
        ctx.sink.record(
            Record::new(
                Kind::LockoutCleared,
                Some(&lockout.enclave),
                Subject::new("AccessApproval", None, &approval.name_any()),
                message,
            )
            .with("user", lockout.user.clone())
            .with("approver", spec.approver.clone())
            .with("counted", counted),
        );
    }
}

/// Runs the grant controller while this replica leads: a pass at every change of
/// grants, approvals, anomalies or enclaves, and every [`TICK`].
pub async fn run(ctx: Arc<Context>, term: Term) {
    tokio::select! {
        () = ctx.caches.wait_until_ready() => {}
        () = term.end() => return,
    }
    let mut changes = futures::stream::select_all([
        ctx.caches.access_grants.changes().boxed(),
        ctx.caches.access_approvals.changes().boxed(),
        ctx.caches.access_anomalies.changes().boxed(),
        ctx.caches.enclaves.changes().boxed(),
    ]);
    let mut cleared = HashSet::new();
    loop {
        if term.ended() {
            return;
        }
        pass(&ctx, &mut cleared).await;
        tokio::select! {
            _ = changes.next() => {}
            () = tokio::time::sleep(TICK) => {}
            () = term.end() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::AccessGrantStatus;

    fn eval(state: State) -> Evaluation {
        Evaluation::new(state, String::new())
    }

    fn kinds(old: Option<&AccessGrantStatus>, new: &Evaluation) -> Vec<Kind> {
        transitions(old, new).into_iter().map(|(k, _)| k).collect()
    }

    #[test]
    fn each_step_is_recorded_once() {
        let pending = eval(State::Pending);
        assert_eq!(kinds(None, &pending), [Kind::GrantRequested]);
        let seen = AccessGrantStatus {
            state: Some("Pending".into()),
            ..Default::default()
        };
        assert!(kinds(Some(&seen), &pending).is_empty());
        let mut active = eval(State::Active);
        active.approved_by = Some("carol".into());
        assert_eq!(kinds(Some(&seen), &active), [Kind::GrantApproved]);
        let approved = AccessGrantStatus {
            state: Some("Active".into()),
            approved_by: Some("carol".into()),
            ..Default::default()
        };
        let mut expired = active.clone();
        expired.state = State::Expired;
        assert_eq!(kinds(Some(&approved), &expired), [Kind::GrantExpired]);
        // Approved and expired while the operator was away: both are recorded.
        assert_eq!(
            kinds(Some(&seen), &expired),
            [Kind::GrantApproved, Kind::GrantExpired]
        );
        let mut revoked = active.clone();
        revoked.state = State::Revoked;
        revoked.ended_by = Some("dave".into());
        assert_eq!(kinds(Some(&approved), &revoked), [Kind::GrantRevoked]);
        let mut reviewed = active;
        reviewed.break_glass = true;
        reviewed.reviewed_by = Some("dave".into());
        assert_eq!(kinds(Some(&approved), &reviewed), [Kind::GrantReviewed]);
    }

    #[test]
    fn anomaly_names_are_dns_names_whatever_the_user() {
        let alarm = Alarm {
            enclave: "eu".into(),
            user: "system:serviceaccount:ops:Backup@corp".into(),
            reasons: vec![],
            attempts: 3,
            window_seconds: 60,
            pods: vec![],
            lockout: true,
            at: Timestamp::from_second(1_800_000_000).expect("valid"),
        };
        let name = anomaly_name(&alarm);
        assert!(
            name.starts_with("eu-") && name.ends_with("-1800000000"),
            "{name}"
        );
        assert!(
            name.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
            "{name}"
        );
    }
}
