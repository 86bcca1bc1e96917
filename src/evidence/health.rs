//! Whether this process's checkpoints are being stored: the writer reports each
//! chain's store as it happens, the residency controller turns the state into the
//! `DecisionLogCheckpointed` condition of every policy (so a stalled checkpoint is seen
//! with `kubectl describe`, not only in the operator's log), and the metrics count it.

use std::collections::BTreeMap;

use jiff::Timestamp;
use tokio::sync::watch;

use crate::conditions::Observed;

/// The condition type on every ResidencyPolicy.
pub const CONDITION: &str = "DecisionLogCheckpointed";

/// A chain whose head is not stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// Since when its stores fail.
    pub since: Timestamp,
    /// The last error.
    pub error: String,
    /// The seq of the flushed head that is not stored.
    pub seq: u64,
}

/// The chains of this process whose checkpoints fail, by chain id.
pub struct Health(watch::Sender<BTreeMap<String, Failure>>);

impl Default for Health {
    fn default() -> Self {
        Self(watch::channel(BTreeMap::new()).0)
    }
}

impl Health {
    /// A store of `chain` failed; true when it had not been failing.
    pub fn failing(&self, chain: &str, error: String, seq: u64, now: Timestamp) -> bool {
        let mut newly = false;
        self.0
            .send_modify(|failures| match failures.get_mut(chain) {
                Some(failure) => {
                    failure.error = error;
                    failure.seq = seq;
                }
                None => {
                    newly = true;
                    failures.insert(
                        chain.to_string(),
                        Failure {
                            since: now,
                            error,
                            seq,
                        },
                    );
                }
            });
        newly
    }

    /// `chain` stored its head (or was closed); true when it had been failing.
    pub fn stored(&self, chain: &str) -> bool {
        let mut was = false;
        self.0.send_if_modified(|failures| {
            was = failures.remove(chain).is_some();
            was
        });
        was
    }

    pub fn failures(&self) -> BTreeMap<String, Failure> {
        self.0.borrow().clone()
    }

    /// Yields whenever a chain starts or stops failing.
    pub fn changes(&self) -> impl futures::Stream<Item = ()> + Send + 'static {
        futures::stream::unfold(self.0.subscribe(), |mut rx| async move {
            rx.changed().await.ok().map(|()| ((), rx))
        })
    }
}

/// The policies' `DecisionLogCheckpointed` condition from the failing chains. Pure.
pub fn condition(failures: &BTreeMap<String, Failure>) -> Observed {
    if failures.is_empty() {
        return Observed::new(
            CONDITION,
            true,
            "Stored",
            "the operator's decision log chains have their heads checkpointed",
        );
    }
    let each: Vec<String> = failures
        .iter()
        .map(|(chain, f)| {
            format!(
                "chain {chain}: head seq {} not stored since {}: {}",
                f.seq, f.since, f.error
            )
        })
        .collect();
    Observed::new(
        CONDITION,
        false,
        "CheckpointFailing",
        crate::names::truncate(
            format!(
                "decisions are logged but their checkpoints are not stored, so edits to the stored log after seq {} cannot be detected; {}",
                failures.values().map(|f| f.seq).min().unwrap_or_default(),
                each.join("; ")
            ),
            4096,
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_chain_turns_the_condition_false_until_it_stores_again() {
        let health = Health::default();
        assert!(condition(&health.failures()).status);
        let now = Timestamp::from_second(1_800_000_000).expect("time");
        assert!(health.failing("ns/op-0", "conflict".into(), 7, now));
        assert!(!health.failing("ns/op-0", "conflict again".into(), 8, now));
        let observed = condition(&health.failures());
        assert!(!observed.status);
        assert_eq!(observed.reason, "CheckpointFailing");
        assert!(
            observed
                .message
                .contains("chain ns/op-0: head seq 8 not stored since"),
            "{}",
            observed.message
        );
        assert!(health.stored("ns/op-0"));
        assert!(!health.stored("ns/op-0"));
        assert!(condition(&health.failures()).status);
    }
}
