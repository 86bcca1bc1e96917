//! Standard `metav1.Condition` bookkeeping: a condition's lastTransitionTime changes
//! only when its status does, so that `kubectl describe` tells how long a state has held.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// A condition as a reconciler computes it, before timestamps are settled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    pub type_: &'static str,
    pub status: bool,
    pub reason: &'static str,
    pub message: String,
}

impl Observed {
    pub fn new(
        type_: &'static str,
        status: bool,
        reason: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            type_,
            status,
            reason,
            message: message.into(),
        }
    }
}

/// Builds the new condition list from the observed ones, keeping the transition time of
/// every condition whose status did not change. Conditions not observed are dropped.
pub fn settle(
    previous: &[Condition],
    observed: Vec<Observed>,
    generation: Option<i64>,
    now: &Time,
) -> Vec<Condition> {
    observed
        .into_iter()
        .map(|o| {
            let status = if o.status { "True" } else { "False" }.to_string();
            let last_transition_time = previous
                .iter()
                .find(|c| c.type_ == o.type_ && c.status == status)
                .map(|c| c.last_transition_time.clone())
                .unwrap_or_else(|| now.clone());
            Condition {
                type_: o.type_.to_string(),
                status,
                reason: o.reason.to_string(),
                message: o.message,
                observed_generation: generation,
                last_transition_time,
            }
        })
        .collect()
}

/// Two condition lists say the same thing, timestamps aside. Used to skip status
/// writes that would change nothing.
pub fn same(a: &[Condition], b: &[Condition]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.type_ == y.type_
                && x.status == y.status
                && x.reason == y.reason
                && x.message == y.message
                && x.observed_generation == y.observed_generation
        })
}

/// The current time as a Kubernetes timestamp.
pub fn now() -> Time {
    Time(jiff::Timestamp::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_kept_while_status_holds_and_reset_when_it_flips() {
        let t0 = Time(jiff::Timestamp::from_second(1_000).expect("valid"));
        let t1 = Time(jiff::Timestamp::from_second(2_000).expect("valid"));
        let first = settle(
            &[],
            vec![Observed::new("Ready", true, "Ok", "fine")],
            Some(1),
            &t0,
        );
        let held = settle(
            &first,
            vec![Observed::new("Ready", true, "Ok", "still fine")],
            Some(2),
            &t1,
        );
        assert_eq!(held[0].last_transition_time, t0);
        assert_eq!(held[0].observed_generation, Some(2));
        let flipped = settle(
            &held,
            vec![Observed::new("Ready", false, "Broken", "no")],
            Some(2),
            &t1,
        );
        assert_eq!(flipped[0].last_transition_time, t1);
        assert_eq!(flipped[0].status, "False");
        assert!(!same(&held, &flipped));
        assert!(same(
            &first,
            &settle(
                &first,
                vec![Observed::new("Ready", true, "Ok", "fine")],
                Some(1),
                &t1
            )
        ));
    }
}
