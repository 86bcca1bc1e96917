//! Anomalies, pure: denied attempts counted per subject and enclave in a sliding window
//! ([`Tracker`], memory bounded by size), and whether a subject is locked out
//! ([`lockout`]).
//!
//! Every replica counts the denials it answers (admission and authorizer requests are
//! spread over all replicas, not sent to the leader), so a leader change does not reset
//! an attacker's count: the counts are not the leader's to lose. A replica that
//! restarts loses the counts of its current window (at most one window's attempts
//! through that replica); the alarms it raised are AccessAnomaly objects and outlive
//! it, and so does every lockout. With several replicas the API server's load
//! balancing splits one subject's attempts between them, so the threshold can take up
//! to replicas × threshold attempts to trip: the limit is documented in docs/design.md.

use std::collections::{HashMap, VecDeque};

use jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;

use crate::crd::{AccessAnomaly, AnomalyRules, ApprovalDecision, DataEnclave};

use super::Grants;

/// Subjects tracked at once. An attacker minting identities fills it; the subject seen
/// least recently is dropped first, so a subject that keeps trying stays counted.
pub const MAX_SUBJECTS: usize = 10_000;

/// Pods named in an alarm.
const MAX_PODS_NAMED: usize = 16;

/// Why an alarm was raised: each is a rule of its own ([`AnomalyRules`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    RepeatedDenials,
    ManyPods,
    OutsideGrant,
    NeverApproved,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::RepeatedDenials => "RepeatedDenials",
            Reason::ManyPods => "ManyPods",
            Reason::OutsideGrant => "OutsideGrant",
            Reason::NeverApproved => "NeverApproved",
        }
    }
}

/// How the subject stood when denied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Standing {
    /// Holds an active grant of the enclave (the attempt was outside it).
    HoldsGrant,
    /// Approved by the enclave's standing list (denied for another reason).
    Approved,
    /// Neither now, but a grant of theirs was approved before (expired or revoked).
    HadAccess,
    /// Never had access: not on the standing lists, no grant of theirs ever approved
    /// (as far as the grants still in the cluster tell).
    Nobody,
}

/// An alarm: the threshold was crossed.
#[derive(Clone, Debug, PartialEq)]
pub struct Alarm {
    pub enclave: String,
    pub user: String,
    pub reasons: Vec<Reason>,
    pub attempts: i32,
    pub window_seconds: i32,
    pub pods: Vec<String>,
    pub lockout: bool,
    pub at: Timestamp,
}

impl Alarm {
    pub fn message(&self) -> String {
        let reasons: Vec<&str> = self.reasons.iter().map(|r| r.as_str()).collect();
        let times = match self.attempts {
            1 => "once".to_string(),
            n => format!("{n} times"),
        };
        format!(
            "{} was denied {times} within {} s on DataEnclave {} ({}; pods: {}){}",
            self.user,
            self.window_seconds,
            self.enclave,
            reasons.join(", "),
            self.pods.join(", "),
            if self.lockout {
                "; locked out until an approver clears it"
            } else {
                ""
            }
        )
    }
}

#[derive(Debug)]
struct Subject {
    /// Denials within the window, oldest first; at most the larger of the two
    /// thresholds (`deniedAttempts`, `manyPods`).
    denials: VecDeque<(Timestamp, String)>,
    /// Per rule, no second alarm before this moment (one per window and rule).
    quiet_until: Vec<(Reason, Timestamp)>,
    last: Timestamp,
}

/// Denied attempts per (enclave, subject), in memory bounded by [`MAX_SUBJECTS`]
/// subjects of at most `deniedAttempts` (≤ 1000, the schema's bound) entries each.
#[derive(Debug)]
pub struct Tracker {
    subjects: HashMap<(String, String), Subject>,
    capacity: usize,
}

impl Default for Tracker {
    fn default() -> Self {
        Self::with_capacity(MAX_SUBJECTS)
    }
}

impl Tracker {
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            subjects: HashMap::new(),
            capacity: capacity.max(1),
        }
    }

    /// Subjects tracked now.
    pub fn len(&self) -> usize {
        self.subjects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.subjects.is_empty()
    }

    /// Counts one denied attempt; an alarm when it crosses the enclave's threshold
    /// (once per window and subject).
    pub fn denied(
        &mut self,
        enclave: &str,
        user: &str,
        pod: &str,
        standing: Standing,
        rules: &AnomalyRules,
        now: Timestamp,
    ) -> Option<Alarm> {
        let key = (enclave.to_string(), user.to_string());
        if !self.subjects.contains_key(&key) && self.subjects.len() >= self.capacity {
            // Drop the subject seen least recently.
            if let Some(oldest) = self
                .subjects
                .iter()
                .min_by_key(|(_, s)| s.last)
                .map(|(k, _)| k.clone())
            {
                self.subjects.remove(&oldest);
            }
        }
        let window = SignedDuration::from_secs(i64::from(rules.window_seconds));
        let threshold = usize::try_from(rules.denied_attempts.max(1)).unwrap_or(1);
        let many_pods = usize::try_from(rules.many_pods.max(0)).unwrap_or(0);
        let subject = self.subjects.entry(key).or_insert_with(|| Subject {
            denials: VecDeque::new(),
            quiet_until: Vec::new(),
            last: now,
        });
        subject.last = now;
        subject.denials.push_back((now, pod.to_string()));
        while subject
            .denials
            .front()
            .is_some_and(|(t, _)| *t + window <= now)
            || subject.denials.len() > threshold.max(many_pods)
        {
            subject.denials.pop_front();
        }
        let mut pods: Vec<String> = Vec::new();
        for (_, pod) in &subject.denials {
            if !pods.contains(pod) {
                pods.push(pod.clone());
            }
        }
        // Every rule that holds now; those that raised an alarm within the window stay
        // quiet, so that one attempt never raises the same alarm twice in a window, and
        // a rule that fired does not silence the others (a first attempt by a stranger
        // must not keep their repeated attempts from locking them out).
        let holds = [
            (Reason::RepeatedDenials, subject.denials.len() >= threshold),
            (Reason::ManyPods, many_pods > 0 && pods.len() >= many_pods),
            (
                Reason::OutsideGrant,
                rules.outside_grant && standing == Standing::HoldsGrant,
            ),
            (
                Reason::NeverApproved,
                rules.never_approved && standing == Standing::Nobody,
            ),
        ];
        subject.quiet_until.retain(|(_, until)| now < *until);
        let fired: Vec<Reason> = holds
            .iter()
            .filter(|(reason, holds)| {
                *holds && !subject.quiet_until.iter().any(|(quiet, _)| quiet == reason)
            })
            .map(|(reason, _)| *reason)
            .collect();
        if fired.is_empty() {
            return None;
        }
        for reason in &fired {
            subject.quiet_until.push((*reason, now + window));
        }
        // The alarm names every rule that holds (what the attempts look like), and
        // locks out only for the rules of many attempts.
        let reasons: Vec<Reason> = holds
            .iter()
            .filter(|(_, holds)| *holds)
            .map(|(reason, _)| *reason)
            .collect();
        let lockout = rules.lockout
            && fired
                .iter()
                .any(|r| matches!(r, Reason::RepeatedDenials | Reason::ManyPods));
        pods.truncate(MAX_PODS_NAMED);
        Some(Alarm {
            enclave: enclave.to_string(),
            user: user.to_string(),
            reasons,
            attempts: i32::try_from(subject.denials.len()).unwrap_or(i32::MAX),
            window_seconds: rules.window_seconds,
            pods,
            lockout,
            at: now,
        })
    }
}

/// The lockout in force for `user` on `enclave`, if any: an AccessAnomaly with
/// `lockout` that no counted ClearLockout approval (by an approver of the enclave who is
/// not the subject, created at or after the anomaly) has cleared.
pub fn lockout<'a>(
    grants: &'a Grants,
    enclave: &DataEnclave,
    user: &str,
) -> Option<&'a AccessAnomaly> {
    let enclave_name = enclave.name_any();
    let access = enclave.spec.access.clone().unwrap_or_default();
    grants
        .anomalies
        .iter()
        .map(|a| a.as_ref())
        .filter(|a| a.spec.lockout && a.spec.user == user && a.spec.enclave == enclave_name)
        .find(|anomaly| {
            let raised = anomaly.metadata.creation_timestamp.as_ref().map(|t| t.0);
            !grants.approvals.iter().any(|approval| {
                let spec = &approval.spec;
                spec.decision == ApprovalDecision::ClearLockout
                    && spec
                        .lockout
                        .as_ref()
                        .is_some_and(|l| l.user == user && l.enclave == enclave_name)
                    && spec.approver != user
                    && access
                        .approver(&spec.approver, &spec.approver_groups)
                        .is_some()
                    && match (raised, approval.metadata.creation_timestamp.as_ref()) {
                        (Some(raised), Some(cleared)) => cleared.0 >= raised,
                        _ => false,
                    }
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{AccessAnomalySpec, AccessApproval, AccessApprovalSpec, LockoutRef};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use std::sync::Arc;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).expect("valid")
    }

    fn rules(attempts: i32, window: i32, lockout: bool) -> AnomalyRules {
        AnomalyRules {
            denied_attempts: attempts,
            window_seconds: window,
            many_pods: 0,
            outside_grant: false,
            never_approved: false,
            lockout,
        }
    }

    #[test]
    fn the_threshold_within_the_window_raises_one_alarm_per_window() {
        let mut tracker = Tracker::default();
        let r = rules(3, 60, true);
        let deny =
            |t: &mut Tracker, s, pod| t.denied("eu", "mallory", pod, Standing::Nobody, &r, at(s));
        assert_eq!(deny(&mut tracker, 0, "db-0"), None);
        assert_eq!(deny(&mut tracker, 10, "db-1"), None);
        let alarm = deny(&mut tracker, 20, "db-2").expect("third denial in 60 s");
        assert_eq!(alarm.attempts, 3);
        assert_eq!(alarm.reasons, [Reason::RepeatedDenials]);
        assert!(alarm.lockout);
        assert!(
            alarm
                .message()
                .contains("mallory was denied 3 times within 60 s")
        );
        // No second alarm in the same window...
        assert_eq!(deny(&mut tracker, 30, "db-0"), None);
        // ...and one once the window has passed and the threshold is crossed again
        // (30, 81 and 82 are within 60 s).
        assert_eq!(deny(&mut tracker, 81, "db-0"), None);
        assert!(deny(&mut tracker, 82, "db-0").is_some());
    }

    #[test]
    fn attempts_older_than_the_window_do_not_count() {
        let mut tracker = Tracker::default();
        let r = rules(3, 60, false);
        let mut deny = |s| tracker.denied("eu", "slow", "db-0", Standing::Approved, &r, at(s));
        assert_eq!(deny(0), None);
        assert_eq!(deny(40), None);
        assert_eq!(deny(61), None, "the first has left the window");
        let alarm = deny(70).expect("three within 60 s: 40, 61, 70");
        assert_eq!(alarm.reasons, [Reason::RepeatedDenials]);
    }

    #[test]
    fn subjects_and_enclaves_are_counted_apart_and_memory_is_bounded() {
        let mut tracker = Tracker::with_capacity(2);
        let r = rules(2, 60, false);
        assert_eq!(
            tracker.denied("eu", "a", "p", Standing::HoldsGrant, &r, at(0)),
            None
        );
        assert_eq!(
            tracker.denied("us", "a", "p", Standing::HoldsGrant, &r, at(1)),
            None
        );
        // A third subject evicts the one seen least recently (eu/a).
        assert_eq!(
            tracker.denied("eu", "b", "p", Standing::Nobody, &r, at(2)),
            None
        );
        assert_eq!(tracker.len(), 2);
        let alarm = tracker
            .denied("us", "a", "p", Standing::HoldsGrant, &r, at(3))
            .expect("us/a kept its count");
        assert_eq!(alarm.reasons, [Reason::RepeatedDenials]);
        assert_eq!(
            tracker.denied("eu", "a", "p", Standing::HoldsGrant, &r, at(4)),
            None,
            "eu/a was dropped: its count restarted"
        );
        assert_eq!(tracker.len(), 2);
        // Each subject holds at most the threshold's worth of attempts.
        for s in 5..1000 {
            tracker.denied("us", "a", "p", Standing::HoldsGrant, &r, at(s));
        }
        assert!(tracker.subjects.values().all(|s| s.denials.len() <= 2));
    }

    /// Attempts on many distinct pods raise the alarm below the attempts threshold,
    /// and lock out where the enclave asks.
    #[test]
    fn attempts_on_many_pods_raise_the_alarm_on_their_own() {
        let mut tracker = Tracker::default();
        let r = AnomalyRules {
            many_pods: 3,
            ..rules(100, 60, true)
        };
        let mut deny = |s, pod| tracker.denied("eu", "scan", pod, Standing::Approved, &r, at(s));
        assert_eq!(deny(0, "db-0"), None);
        assert_eq!(deny(1, "db-0"), None, "the same pod twice is one pod");
        assert_eq!(deny(2, "db-1"), None);
        let alarm = deny(3, "db-2").expect("a third pod within 60 s");
        assert_eq!(alarm.reasons, [Reason::ManyPods]);
        assert_eq!(alarm.pods, ["db-0", "db-1", "db-2"]);
        assert!(alarm.lockout);
        assert_eq!(deny(4, "db-3"), None, "one alarm per window");
    }

    /// An attempt outside an active grant raises the alarm at once, without a lockout;
    /// the same subject's repeated attempts still lock them out (one rule firing does
    /// not silence another).
    #[test]
    fn an_attempt_outside_a_grant_raises_the_alarm_at_once_and_repeats_still_lock_out() {
        let mut tracker = Tracker::default();
        let r = AnomalyRules {
            outside_grant: true,
            ..rules(3, 60, true)
        };
        let mut deny = |s| tracker.denied("eu", "eve", "vault", Standing::HoldsGrant, &r, at(s));
        let first = deny(0).expect("the first attempt outside the grant");
        assert_eq!(first.reasons, [Reason::OutsideGrant]);
        assert!(!first.lockout, "a single attempt never locks out");
        assert!(first.message().contains("eve was denied once within 60 s"));
        assert_eq!(deny(1), None, "not twice in a window");
        let third = deny(2).expect("the threshold");
        assert_eq!(
            third.reasons,
            [Reason::RepeatedDenials, Reason::OutsideGrant]
        );
        assert!(third.lockout);
        assert_ne!(
            crate::controller::grants::anomaly_name(&first),
            crate::controller::grants::anomaly_name(&third),
            "two alarms within a second are two objects"
        );
    }

    /// A stranger's first attempt raises the alarm; someone who had a grant before, or
    /// is on the standing list, does not by that alone.
    #[test]
    fn a_subject_who_never_had_access_raises_the_alarm_at_their_first_attempt() {
        let mut tracker = Tracker::default();
        let r = AnomalyRules {
            never_approved: true,
            outside_grant: true,
            ..rules(5, 60, true)
        };
        let alarm = tracker
            .denied("eu", "stranger", "db", Standing::Nobody, &r, at(0))
            .expect("a stranger's first attempt");
        assert_eq!(alarm.reasons, [Reason::NeverApproved]);
        assert!(!alarm.lockout);
        for (user, standing) in [("former", Standing::HadAccess), ("bob", Standing::Approved)] {
            assert_eq!(
                tracker.denied("eu", user, "db", standing, &r, at(0)),
                None,
                "{user}"
            );
        }
        // Off: no alarm.
        let off = AnomalyRules {
            never_approved: false,
            ..r.clone()
        };
        assert_eq!(
            tracker.denied("eu", "other", "db", Standing::Nobody, &off, at(0)),
            None
        );
    }

    fn enclave() -> DataEnclave {
        serde_yaml::from_str(
            "metadata: {name: eu}\nspec: {jurisdiction: EU, sites: [{name: d, nodeSelector: {matchLabels: {a: b}}}], access: {approvedUsers: [bob], approverUsers: [carol, bob]}}",
        )
        .expect("enclave")
    }

    fn clear(by: &str, seconds: i64) -> Arc<AccessApproval> {
        let mut approval = AccessApproval::new(
            "clear",
            AccessApprovalSpec {
                volume_migration: None,
                grant: None,
                lockout: Some(LockoutRef {
                    enclave: "eu".into(),
                    user: "bob".into(),
                }),
                decision: ApprovalDecision::ClearLockout,
                approver: by.into(),
                approver_groups: vec![],
                reason: None,
            },
        );
        approval.metadata.creation_timestamp = Some(Time(at(seconds)));
        Arc::new(approval)
    }

    #[test]
    fn a_lockout_holds_until_another_approver_clears_it_after_it_was_raised() {
        let mut anomaly = AccessAnomaly::new(
            "eu-bob",
            AccessAnomalySpec {
                enclave: "eu".into(),
                user: "bob".into(),
                reasons: vec!["RepeatedDenials".into()],
                denied_attempts: 3,
                window_seconds: 60,
                pods: vec![],
                lockout: true,
            },
        );
        anomaly.metadata.creation_timestamp = Some(Time(at(100)));
        let mut grants = Grants {
            anomalies: vec![Arc::new(anomaly)],
            ..Grants::default()
        };
        let enclave = enclave();
        assert!(lockout(&grants, &enclave, "bob").is_some());
        assert!(lockout(&grants, &enclave, "alice").is_none());
        // bob clearing his own lockout does not count; nor does an older clearing.
        grants.approvals = vec![clear("bob", 200), clear("carol", 50)];
        assert!(lockout(&grants, &enclave, "bob").is_some());
        grants.approvals.push(clear("carol", 150));
        assert!(lockout(&grants, &enclave, "bob").is_none());
    }
}
