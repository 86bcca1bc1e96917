//! The grant state machine with the clock injected: every moment is a fixed timestamp.

use super::*;
use crate::crd::{AccessApprovalSpec, AccessGrantSpec, ApprovalDecision, DataEnclave, GrantRef};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

const T0: i64 = 1_800_000_000;

fn at(seconds: i64) -> Timestamp {
    Timestamp::from_second(T0 + seconds).expect("valid")
}

fn enclave() -> DataEnclave {
    serde_yaml::from_str(
        r#"
apiVersion: enclave.dev/v1alpha1
kind: DataEnclave
metadata: {name: eu}
spec:
  jurisdiction: EU
  sites: [{name: dublin, nodeSelector: {matchLabels: {node-restriction.kubernetes.io/enclave-site: dublin}}}]
  access:
    approvedUsers: []
    approvedGroups: []
    approverUsers: [carol]
    approverGroups: [eu-approvers]
    maxGrantMinutes: 120
    breakGlassMinutes: 30
"#,
    )
    .expect("enclave parses")
}

fn grant(requester: &str, minutes: i32) -> AccessGrant {
    let mut grant = AccessGrant::new(
        "g",
        AccessGrantSpec {
            enclave: "eu".into(),
            requester: requester.into(),
            requester_groups: vec![],
            verbs: vec![GrantVerb::Exec, GrantVerb::Logs],
            namespaces: vec!["shop".into()],
            pods: vec!["db-0".into()],
            reason: "INC-1".into(),
            ticket: None,
            duration_minutes: minutes,
            break_glass: false,
        },
    );
    grant.metadata.uid = Some("uid-1".into());
    grant.metadata.creation_timestamp = Some(Time(at(0)));
    grant
}

fn decision(
    name: &str,
    approver: &str,
    groups: &[&str],
    decision: ApprovalDecision,
    seconds: i64,
) -> AccessApproval {
    let mut approval = AccessApproval::new(
        name,
        AccessApprovalSpec {
            volume_migration: None,
            grant: Some(GrantRef {
                name: "g".into(),
                uid: "uid-1".into(),
            }),
            lockout: None,
            decision,
            approver: approver.into(),
            approver_groups: groups.iter().map(|g| g.to_string()).collect(),
            reason: None,
        },
    );
    approval.metadata.creation_timestamp = Some(Time(at(seconds)));
    approval
}

fn eval(grant: &AccessGrant, approvals: &[AccessApproval], now: i64) -> Evaluation {
    let refs: Vec<&AccessApproval> = approvals.iter().collect();
    evaluate(grant, &refs, Some(&enclave()), at(now))
}

#[test]
fn a_grant_is_pending_until_an_approver_approves_it_and_active_for_its_duration_from_then() {
    let g = grant("alice", 60);
    assert_eq!(eval(&g, &[], 10).state, State::Pending);
    let approve = decision("a1", "carol", &[], ApprovalDecision::Approve, 100);
    let e = eval(&g, std::slice::from_ref(&approve), 101);
    assert_eq!(e.state, State::Active);
    assert_eq!(e.approved_by.as_deref(), Some("carol"));
    assert_eq!(e.expires_at, Some(at(100 + 3600)));
    assert_eq!(
        eval(&g, std::slice::from_ref(&approve), 100 + 3599).state,
        State::Active
    );
    assert_eq!(
        eval(&g, std::slice::from_ref(&approve), 100 + 3600).state,
        State::Expired
    );
}

/// `kubectl get accessgrants` shows what is left of an active grant, rounded up to
/// the minute, and nothing for a grant that is not active.
#[test]
fn time_left_is_shown_to_the_minute_while_active() {
    let g = grant("alice", 90);
    let approve = decision("a1", "carol", &[], ApprovalDecision::Approve, 100);
    let left = |now: i64| eval(&g, std::slice::from_ref(&approve), now).time_left(at(now));
    assert_eq!(left(100), Some("1h30m".into()));
    assert_eq!(left(100 + 1), Some("1h30m".into()));
    assert_eq!(left(100 + 60), Some("1h29m".into()));
    assert_eq!(left(100 + 31 * 60), Some("59m".into()));
    assert_eq!(left(100 + 90 * 60 - 1), Some("1m".into()));
    assert_eq!(left(100 + 90 * 60), None, "expired");
    assert_eq!(eval(&g, &[], 10).time_left(at(10)), None, "pending");
}

#[test]
fn four_eyes_the_requester_cannot_approve_their_own_grant() {
    // alice is an approver of the enclave (by group) but also the requester.
    let g = grant("alice", 60);
    let own = decision(
        "a1",
        "alice",
        &["eu-approvers"],
        ApprovalDecision::Approve,
        5,
    );
    let e = eval(&g, &[own], 10);
    assert_eq!(e.state, State::Pending);
    assert!(
        e.message
            .contains("the requester cannot decide on their own grant"),
        "{}",
        e.message
    );
}

#[test]
fn only_approvers_the_enclave_names_count() {
    let g = grant("alice", 60);
    let mallory = decision("a1", "mallory", &[], ApprovalDecision::Approve, 5);
    let e = eval(&g, &[mallory], 10);
    assert_eq!(e.state, State::Pending);
    assert!(
        e.message.contains("does not name them an approver"),
        "{}",
        e.message
    );
    // A member of an approver group (the group verified at creation) counts.
    let dave = decision(
        "a2",
        "dave",
        &["eu-approvers"],
        ApprovalDecision::Approve,
        5,
    );
    assert_eq!(eval(&g, &[dave], 10).state, State::Active);
}

#[test]
fn an_approval_of_another_grant_uid_does_not_count() {
    // The grant was deleted and created again under the same name, perhaps wider:
    // the old approval named the old UID.
    let mut g = grant("alice", 60);
    g.metadata.uid = Some("uid-2".into());
    let old = decision("a1", "carol", &[], ApprovalDecision::Approve, 5);
    assert_eq!(eval(&g, &[old], 10).state, State::Pending);
}

#[test]
fn longer_than_the_enclave_allows_is_invalid() {
    let g = grant("alice", 121);
    let approve = decision("a1", "carol", &[], ApprovalDecision::Approve, 5);
    let e = eval(&g, &[approve], 10);
    assert_eq!(e.state, State::Invalid);
    assert!(
        e.message.contains("spec.access.maxGrantMinutes: 120"),
        "{}",
        e.message
    );
}

#[test]
fn revocation_ends_an_active_grant_and_a_denial_ends_a_pending_one() {
    let g = grant("alice", 60);
    let approve = decision("a1", "carol", &[], ApprovalDecision::Approve, 5);
    let revoke = decision(
        "a2",
        "dave",
        &["eu-approvers"],
        ApprovalDecision::Revoke,
        20,
    );
    let e = eval(&g, &[approve.clone(), revoke.clone()], 21);
    assert_eq!(e.state, State::Revoked);
    assert_eq!(e.ended_by.as_deref(), Some("dave"));
    // Before the revocation, it was active.
    assert_eq!(
        eval(&g, std::slice::from_ref(&approve), 19).state,
        State::Active
    );
    // A revocation and an approval in the same second: never in favour of access
    // (whatever their names: this one sorts before the approval's).
    let same = decision(
        "a00",
        "dave",
        &["eu-approvers"],
        ApprovalDecision::Revoke,
        5,
    );
    assert_eq!(eval(&g, &[same, approve.clone()], 6).state, State::Revoked);
    // Denied before approval: an approval after it does not reopen it.
    let deny = decision("a0", "dave", &["eu-approvers"], ApprovalDecision::Deny, 2);
    assert_eq!(eval(&g, &[deny, approve], 6).state, State::Denied);
}

#[test]
fn the_requester_cannot_revoke_someone_elses_decision_away_nor_decide_at_all() {
    // A requester's own Deny or Revoke is not counted either (four eyes both ways):
    // it does not matter for access, but the record says who decided.
    let g = grant("alice", 60);
    let approve = decision("a1", "carol", &[], ApprovalDecision::Approve, 5);
    let own = decision("a2", "alice", &[], ApprovalDecision::Revoke, 6);
    assert_eq!(eval(&g, &[approve, own], 7).state, State::Active);
}

#[test]
fn a_grant_nobody_decides_on_expires() {
    let g = grant("alice", 60);
    assert_eq!(eval(&g, &[], 24 * 3600 - 1).state, State::Pending);
    assert_eq!(eval(&g, &[], 24 * 3600).state, State::Expired);
    let late = decision("a1", "carol", &[], ApprovalDecision::Approve, 24 * 3600 + 5);
    assert_eq!(eval(&g, &[late], 24 * 3600 + 6).state, State::Expired);
}

#[test]
fn break_glass_is_active_at_once_bounded_and_unreviewed_until_acknowledged() {
    let mut g = grant("carol", 120);
    g.spec.break_glass = true;
    let e = eval(&g, &[], 1);
    assert_eq!(e.state, State::Active);
    assert_eq!(e.approved_by.as_deref(), Some("carol"));
    // Bounded by breakGlassMinutes (30), not the 120 asked for.
    assert_eq!(e.expires_at, Some(at(30 * 60)));
    assert!(e.unreviewed_break_glass());
    assert_eq!(eval(&g, &[], 30 * 60).state, State::Expired);
    assert!(
        eval(&g, &[], 30 * 60).unreviewed_break_glass(),
        "expiry does not review it"
    );
    // carol cannot acknowledge her own; dave can.
    let own = decision("a1", "carol", &[], ApprovalDecision::Acknowledge, 60);
    assert!(eval(&g, std::slice::from_ref(&own), 61).unreviewed_break_glass());
    let ack = decision(
        "a2",
        "dave",
        &["eu-approvers"],
        ApprovalDecision::Acknowledge,
        62,
    );
    let e = eval(&g, &[own, ack], 63);
    assert_eq!(e.reviewed_by.as_deref(), Some("dave"));
    assert!(!e.unreviewed_break_glass());
}

#[test]
fn break_glass_by_someone_who_is_not_an_approver_is_invalid() {
    let mut g = grant("alice", 30);
    g.spec.break_glass = true;
    let e = eval(&g, &[], 1);
    assert_eq!(e.state, State::Invalid);
    assert!(
        e.message.contains("break-glass is for the approvers"),
        "{}",
        e.message
    );
}

#[test]
fn a_grant_covers_only_its_user_verbs_namespaces_and_pods_while_active() {
    let g = grant("alice", 60);
    let approve = decision("a1", "carol", &[], ApprovalDecision::Approve, 5);
    let grants = Grants {
        grants: vec![Arc::new(g)],
        approvals: vec![Arc::new(approve)],
        ..Grants::default()
    };
    let enclave = enclave();
    let attempt = |user, verb, namespace, pod| Attempt {
        user,
        verb,
        namespace,
        pod,
    };
    let covered = |a: Attempt, now| grants.covering(&enclave, &a, at(now)).is_some();
    assert!(covered(
        attempt("alice", GrantVerb::Exec, "shop", "db-0"),
        10
    ));
    assert!(covered(
        attempt("alice", GrantVerb::Logs, "shop", "db-0"),
        10
    ));
    assert!(!covered(
        attempt("bob", GrantVerb::Exec, "shop", "db-0"),
        10
    ));
    assert!(!covered(
        attempt("alice", GrantVerb::Attach, "shop", "db-0"),
        10
    ));
    assert!(!covered(
        attempt("alice", GrantVerb::Exec, "bank", "db-0"),
        10
    ));
    assert!(!covered(
        attempt("alice", GrantVerb::Exec, "shop", "db-1"),
        10
    ));
    assert!(
        !covered(attempt("alice", GrantVerb::Exec, "shop", "db-0"), 4),
        "before approval"
    );
    assert!(
        !covered(attempt("alice", GrantVerb::Exec, "shop", "db-0"), 5 + 3600),
        "after expiry"
    );
    assert!(grants.holds_any(&enclave, "alice", at(10)));
    assert!(!grants.holds_any(&enclave, "alice", at(4000)));
}

#[test]
fn the_gate_refuses_a_locked_out_subject_whatever_approves_them() {
    let mut enclave = enclave();
    if let Some(access) = enclave.spec.access.as_mut() {
        access.approved_users = vec!["bob".into()];
    }
    let mut anomaly = crate::crd::AccessAnomaly::new(
        "eu-bob",
        crate::crd::AccessAnomalySpec {
            enclave: "eu".into(),
            user: "bob".into(),
            reasons: vec!["RepeatedDenials".into()],
            denied_attempts: 5,
            window_seconds: 300,
            pods: vec![],
            lockout: true,
        },
    );
    anomaly.metadata.creation_timestamp = Some(Time(at(0)));
    let grants = Grants {
        anomalies: vec![Arc::new(anomaly)],
        ..Grants::default()
    };
    let access = enclave.spec.access.clone().unwrap_or_default();
    let ask = |grants: Option<&Grants>, user: &str| {
        gate(
            grants,
            &enclave,
            &access,
            user,
            &[],
            Some(GrantVerb::Exec),
            "shop",
            "db-0",
            at(10),
        )
    };
    match ask(Some(&grants), "bob") {
        Gate::Refused(why) => assert!(why.contains("bob is locked out of DataEnclave eu"), "{why}"),
        other => panic!("bob is locked out: {other:?}"),
    }
    assert!(matches!(
        ask(Some(&Grants::default()), "bob"),
        Gate::Admitted { grant: None, .. }
    ));
    match ask(None, "bob") {
        Gate::Refused(why) => assert!(why.contains("has not yet synced"), "{why}"),
        other => panic!("unsynced grants fail closed: {other:?}"),
    }
}
