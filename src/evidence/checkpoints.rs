//! The checkpoints ConfigMap, kept bounded, and the writers' Leases that say which
//! chains are still written.
//!
//! Layout (unchanged for readers: `verify-log --checkpoints`, the audit): one key per
//! chain, one checkpoint per line, newest last. What is new:
//!
//! - **Every open chain has a Lease** (`enclave-chain-<hash of the chain id>`, labelled
//!   [`WRITER_LABEL`]) that its writer renews every checkpoint interval, with what it has
//!   flushed and what it has stored as annotations. A Lease is the writer's heartbeat
//!   apart from the ConfigMap: when checkpoints cannot be written, the Lease still says
//!   the writer runs and how far its log has gone, so the audit can tell a stalled
//!   checkpoint from a quiet chain.
//! - **Chains whose writer is gone are retired**: a chain whose Lease lapsed (or that
//!   has none) is sealed by the next writer that stores a checkpoint or checks (every
//!   interval) — its key keeps only its last checkpoint, marked `"retired"` with the
//!   time — and that writer records a `ChainRetired` decision naming the checkpoint in
//!   its own chain. The last checkpoint of a retired chain is what verification needs
//!   (it holds the whole chain to its end); the ones before it only anchor fragments.
//! - **The total stays under [`BUDGET_BYTES`]** whatever the number of replicas and
//!   rollouts: at most [`MAX_RETIRED`] sealed keys are kept (newest first; the seal of
//!   one dropped lives on in the `ChainRetired` record, itself checkpointed), and live
//!   chains keep [`KEPT`] checkpoints each, halved for all of them while the total
//!   would not fit. Only when one checkpoint per live chain no longer fits (thousands
//!   of replicas) is the write refused, and that refusal is an error like any other.
//! - **A write that does not happen is an error**: after [`ATTEMPTS`] conflicts the
//!   store fails (it used to return Ok), and the writer counts, logs and shows it.
//!
//! [`plan`] is the pure core; [`store`] reads, plans and writes.

use std::{
    collections::{BTreeMap, BTreeSet},
    future::Future,
    time::Duration,
};

use jiff::Timestamp;
use k8s_openapi::{
    api::{coordination::v1::Lease, core::v1::ConfigMap},
    apimachinery::pkg::apis::meta::v1::MicroTime,
};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams},
};
use sha2::{Digest as _, Sha256};

use super::chain::Checkpoint;
use crate::names::{FIELD_MANAGER, MANAGED_BY_LABEL};

/// The ConfigMap that holds every chain's recent checkpoints.
pub const CHECKPOINTS: &str = "enclave-operator-checkpoints";
/// Most bytes (keys and values) the checkpoints may take: half the API server's 1 MiB
/// limit on a ConfigMap, so that the object never comes near the limit.
pub const BUDGET_BYTES: usize = 512 * 1024;
/// Checkpoints kept per live chain while they fit (a day at one a minute).
pub const KEPT: usize = 1440;
/// Sealed chains kept, newest first.
pub const MAX_RETIRED: usize = 64;
/// Writes tried before a checkpoint counts as not stored.
pub const ATTEMPTS: u32 = 5;

/// Label of the writers' Leases.
pub const WRITER_LABEL: &str = "enclave.dev/chain-writer";
/// The chain id a Lease is the heartbeat of.
pub const CHAIN_ANNOTATION: &str = "enclave.dev/chain";
/// The head the writer has flushed (a checkpoint in JSON).
pub const FLUSHED_ANNOTATION: &str = "enclave.dev/flushed";
/// The last checkpoint the writer stored (JSON).
pub const STORED_ANNOTATION: &str = "enclave.dev/checkpointed";
/// Why the last store failed, while it fails.
pub const ERROR_ANNOTATION: &str = "enclave.dev/checkpoint-error";
/// Since when the stores fail, while they fail.
pub const FAILING_SINCE_ANNOTATION: &str = "enclave.dev/checkpoint-failing-since";
/// Set when the writer closed its chain: the chain may be retired.
pub const CLOSED_ANNOTATION: &str = "enclave.dev/closed";

/// The ConfigMap key of a chain: its id with every character a key may not hold
/// replaced.
pub fn checkpoint_key(chain_id: &str) -> String {
    chain_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '.'
            }
        })
        .collect()
}

/// The Lease of a chain's writer: a hash of the id, since ids hold characters a name
/// cannot.
pub fn lease_name(chain_id: &str) -> String {
    let digest = Sha256::digest(chain_id.as_bytes());
    let hex: String = digest.iter().take(10).map(|b| format!("{b:02x}")).collect();
    format!("enclave-chain-{hex}")
}

/// How long a writer's Lease holds without renewal: three checkpoint intervals, at
/// least five seconds.
pub fn lease_duration(interval: Duration) -> Duration {
    (interval * 3).max(Duration::from_secs(5))
}

/// What a writer's Lease says.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WriterState {
    pub chain: String,
    /// The ConfigMap key of the chain.
    pub key: String,
    /// Who writes it (the process's identity).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub holder: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub renewed: Option<Timestamp>,
    pub lease_seconds: i64,
    pub closed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flushed: Option<Checkpoint>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stored: Option<Checkpoint>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failing_since: Option<Timestamp>,
}

impl WriterState {
    /// Reads a writer's Lease; `None` for a Lease that names no chain.
    pub fn from_lease(lease: &Lease) -> Option<WriterState> {
        let annotations = lease.metadata.annotations.as_ref()?;
        let chain = annotations.get(CHAIN_ANNOTATION)?.clone();
        let checkpoint = |key: &str| {
            annotations
                .get(key)
                .and_then(|text| serde_json::from_str::<Checkpoint>(text).ok())
        };
        let spec = lease.spec.as_ref();
        Some(WriterState {
            key: checkpoint_key(&chain),
            chain,
            holder: spec.and_then(|s| s.holder_identity.clone()),
            renewed: spec.and_then(|s| s.renew_time.as_ref()).map(|t| t.0),
            lease_seconds: spec
                .and_then(|s| s.lease_duration_seconds)
                .map_or(0, i64::from),
            closed: annotations.contains_key(CLOSED_ANNOTATION),
            flushed: checkpoint(FLUSHED_ANNOTATION),
            stored: checkpoint(STORED_ANNOTATION),
            error: annotations
                .get(ERROR_ANNOTATION)
                .filter(|e| !e.is_empty())
                .cloned(),
            failing_since: annotations
                .get(FAILING_SINCE_ANNOTATION)
                .and_then(|t| t.parse().ok()),
        })
    }

    /// Does its writer still run at `now`: renewed within its duration, not closed?
    pub fn live(&self, now: Timestamp) -> bool {
        !self.closed && !self.expired(now)
    }

    /// Has its Lease lapsed at `now`? Only then is the chain retired: a closed chain too
    /// waits out its Lease, so that the next leader takes the leader chain over (and
    /// renews its Lease) before anyone seals it.
    pub fn expired(&self, now: Timestamp) -> bool {
        !self.renewed.is_some_and(|renewed| {
            renewed
                .checked_add(jiff::SignedDuration::from_secs(self.lease_seconds))
                .is_ok_and(|until| until >= now)
        })
    }
}

/// A writer's heartbeat: what its Lease says.
#[derive(Clone, Debug)]
pub struct Heartbeat<'a> {
    pub chain_id: &'a str,
    /// The process's identity.
    pub holder: &'a str,
    pub interval: Duration,
    pub flushed: &'a Checkpoint,
    pub stored: Option<&'a Checkpoint>,
    /// The last store's error and since when stores fail, while they fail.
    pub error: Option<(&'a str, Timestamp)>,
    /// The writer closed the chain: it may be retired.
    pub closed: bool,
}

impl Heartbeat<'_> {
    /// The Lease the writer applies.
    pub fn lease(&self, now: Timestamp) -> Lease {
        let mut annotations = BTreeMap::from([
            (CHAIN_ANNOTATION.to_string(), self.chain_id.to_string()),
            (
                FLUSHED_ANNOTATION.to_string(),
                serde_json::to_string(self.flushed).unwrap_or_default(),
            ),
        ]);
        if let Some(stored) = self.stored {
            annotations.insert(
                STORED_ANNOTATION.to_string(),
                serde_json::to_string(stored).unwrap_or_default(),
            );
        }
        if let Some((error, since)) = self.error {
            annotations.insert(
                ERROR_ANNOTATION.to_string(),
                crate::names::truncate(error.to_string(), 1024),
            );
            annotations.insert(FAILING_SINCE_ANNOTATION.to_string(), since.to_string());
        }
        if self.closed {
            annotations.insert(CLOSED_ANNOTATION.to_string(), now.to_string());
        }
        Lease {
            metadata: ObjectMeta {
                name: Some(lease_name(self.chain_id)),
                labels: Some(BTreeMap::from([
                    (MANAGED_BY_LABEL.to_string(), FIELD_MANAGER.to_string()),
                    (WRITER_LABEL.to_string(), "true".to_string()),
                ])),
                annotations: Some(annotations),
                ..ObjectMeta::default()
            },
            spec: Some(k8s_openapi::api::coordination::v1::LeaseSpec {
                holder_identity: Some(self.holder.to_string()),
                lease_duration_seconds: i32::try_from(lease_duration(self.interval).as_secs()).ok(),
                renew_time: Some(MicroTime(now)),
                ..Default::default()
            }),
        }
    }
}

/// One line of a key: a checkpoint, and the time its chain was retired if it was.
fn parse_line(line: &str) -> Option<(Checkpoint, Option<String>)> {
    #[derive(serde::Deserialize)]
    struct Retired {
        retired: Option<String>,
    }
    let checkpoint = serde_json::from_str::<Checkpoint>(line).ok()?;
    let retired = serde_json::from_str::<Retired>(line)
        .ok()
        .and_then(|r| r.retired);
    Some((checkpoint, retired))
}

/// The seal of a retired chain: its last checkpoint with the time it was retired. The
/// extra field is ignored by every reader of checkpoints (`verify-log`, `resume`).
pub fn sealed_line(checkpoint: &Checkpoint, retired: Timestamp) -> String {
    let mut value = serde_json::to_value(checkpoint).unwrap_or_default();
    if let Some(object) = value.as_object_mut() {
        object.insert("retired".into(), retired.to_string().into());
    }
    value.to_string()
}

/// When the chain of a key's text was retired, if its last checkpoint is a seal.
pub fn retired_at(text: &str) -> Option<String> {
    text.lines()
        .rev()
        .find_map(parse_line)
        .and_then(|(_, retired)| retired)
}

/// What a store does to the ConfigMap's data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub data: BTreeMap<String, String>,
    /// Chains sealed by this write, with their last checkpoint: each is recorded.
    pub retired: Vec<(String, Checkpoint)>,
    /// Keys removed: sealed chains beyond [`MAX_RETIRED`] or the budget, and keys that
    /// held no checkpoint.
    pub dropped: Vec<String>,
    /// Checkpoints kept per live chain.
    pub kept: usize,
}

/// Bytes the API server counts against the ConfigMap's limit.
pub fn size(data: &BTreeMap<String, String>) -> usize {
    data.iter().map(|(k, v)| k.len() + v.len()).sum()
}

/// Why a checkpoint cannot be stored within the budget.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "{live} live chains need {bytes} bytes with one checkpoint each, over the {BUDGET_BYTES}-byte budget of ConfigMap {CHECKPOINTS}"
)]
pub struct TooLarge {
    pub live: usize,
    pub bytes: usize,
}

/// Appends `line` (if any) to `own`'s key, seals every other chain whose key is not in
/// `live`, and bounds the whole. Pure.
pub fn plan(
    data: &BTreeMap<String, String>,
    own: &str,
    line: Option<&str>,
    live: &BTreeSet<String>,
    now: Timestamp,
) -> Result<Plan, TooLarge> {
    let mut live_lines: BTreeMap<String, Vec<String>> = BTreeMap::new();
    // (retired time, key, sealed line)
    let mut sealed: Vec<(String, String, String)> = Vec::new();
    let mut retired = Vec::new();
    let mut dropped = Vec::new();
    for (key, text) in data {
        if key == own {
            continue;
        }
        let lines: Vec<String> = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_string)
            .collect();
        if live.contains(key) {
            live_lines.insert(key.clone(), lines);
            continue;
        }
        match lines
            .iter()
            .rev()
            .find_map(|l| parse_line(l).map(|p| (l, p)))
        {
            None => dropped.push(key.clone()),
            Some((l, (_, Some(at)))) => sealed.push((at, key.clone(), l.clone())),
            Some((_, (checkpoint, None))) => {
                let at = now.to_string();
                sealed.push((at, key.clone(), sealed_line(&checkpoint, now)));
                retired.push((key.clone(), checkpoint));
            }
        }
    }
    let mut own_lines: Vec<String> = data
        .get(own)
        .map(|t| {
            t.lines()
                .filter(|l| !l.trim().is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    own_lines.extend(line.map(str::to_string));
    if !own_lines.is_empty() {
        live_lines.insert(own.to_string(), own_lines);
    }

    // Newest seals first; the oldest go first when something must.
    sealed.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    for (_, key, _) in sealed.drain(MAX_RETIRED.min(sealed.len())..) {
        dropped.push(key);
    }
    let build = |kept: usize, sealed: &[(String, String, String)]| {
        let mut out: BTreeMap<String, String> = live_lines
            .iter()
            .map(|(key, lines)| {
                let start = lines.len().saturating_sub(kept);
                (
                    key.clone(),
                    lines.get(start..).unwrap_or_default().join("\n"),
                )
            })
            .collect();
        for (_, key, line) in sealed {
            out.insert(key.clone(), line.clone());
        }
        out
    };
    let mut kept = KEPT;
    let mut out = build(kept, &sealed);
    while size(&out) > BUDGET_BYTES && kept > 1 {
        kept /= 2;
        out = build(kept, &sealed);
    }
    while size(&out) > BUDGET_BYTES {
        let Some((_, key, _)) = sealed.pop() else {
            return Err(TooLarge {
                live: live_lines.len(),
                bytes: size(&out),
            });
        };
        out.remove(&key);
        dropped.push(key);
    }
    dropped.sort();
    Ok(Plan {
        data: out,
        retired,
        dropped,
        kept,
    })
}

/// Why a checkpoint was not stored.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the API server refused the checkpoint: {}", kube_message(.0))]
    Kube(#[from] kube::Error),
    #[error(
        "ConfigMap {CHECKPOINTS} changed under each of {0} attempts to write the checkpoint: not stored"
    )]
    Conflicts(u32),
    #[error("{0}")]
    TooLarge(#[from] TooLarge),
}

/// The API server's own message for a refusal (the Status, not its Debug form).
fn kube_message(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => format!("{} ({})", status.message, status.code),
        other => other.to_string(),
    }
}

impl StoreError {
    /// The metric label of the failure.
    pub fn category(&self) -> &'static str {
        match self {
            StoreError::Kube(kube::Error::Api(status)) if status.code == 403 => "forbidden",
            StoreError::Kube(kube::Error::Api(_)) => "refused",
            StoreError::Kube(_) => "unreachable",
            StoreError::Conflicts(_) => "conflict",
            StoreError::TooLarge(_) => "too_large",
        }
    }
}

/// What a store did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stored {
    pub retired: Vec<(String, Checkpoint)>,
    pub dropped: Vec<String>,
    pub bytes: usize,
}

/// The writers' Leases in `namespace`.
pub async fn writers(leases: &Api<Lease>) -> Result<Vec<WriterState>, kube::Error> {
    let list = leases
        .list(&ListParams::default().labels(&format!("{WRITER_LABEL}=true")))
        .await?;
    Ok(list
        .items
        .iter()
        .filter_map(WriterState::from_lease)
        .collect())
}

/// Stores `checkpoint` as the newest line of `key`, retiring chains whose writer is
/// gone; see [`store_with`].
pub async fn store(
    api: &Api<ConfigMap>,
    leases: &Api<Lease>,
    key: &str,
    checkpoint: &Checkpoint,
) -> Result<Stored, StoreError> {
    store_with(api, leases, key, Some(checkpoint), || async {}).await
}

/// Retires chains whose writer is gone without storing a checkpoint: a writer whose
/// head does not move still seals the chains of writers that went away meanwhile.
/// Writes only when something is to be sealed or dropped.
pub async fn retire(
    api: &Api<ConfigMap>,
    leases: &Api<Lease>,
    key: &str,
) -> Result<Stored, StoreError> {
    store_with(api, leases, key, None, || async {}).await
}

/// [`store`], calling `between` after each read and before the write that depends on
/// it: the place where a concurrent writer makes the write conflict (tests race a real
/// API server there). Succeeds only when the line is written; [`ATTEMPTS`] conflicts in
/// a row are an error. Leases of writers that are gone are deleted once their chain is
/// sealed.
pub async fn store_with<F, Fut>(
    api: &Api<ConfigMap>,
    leases: &Api<Lease>,
    key: &str,
    checkpoint: Option<&Checkpoint>,
    mut between: F,
) -> Result<Stored, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let line = checkpoint.map(|c| serde_json::to_string(c).unwrap_or_default());
    for _ in 0..ATTEMPTS {
        // Read the Leases first: a writer that starts after this read has not stored
        // anything yet that could be sealed by mistake.
        let now = Timestamp::now();
        let writers = writers(leases).await?;
        let live: BTreeSet<String> = writers
            .iter()
            .filter(|w| !w.expired(now))
            .map(|w| w.key.clone())
            .collect();
        let existing = api.get_opt(CHECKPOINTS).await?;
        let data = existing
            .as_ref()
            .and_then(|c| c.data.clone())
            .unwrap_or_default();
        let plan = plan(&data, key, line.as_deref(), &live, now)?;
        let stale_leases = writers.iter().any(|w| w.expired(now) && w.key != key);
        if line.is_none() && plan.data == data && !stale_leases {
            return Ok(Stored::default());
        }
        between().await;
        let bytes = size(&plan.data);
        let result = match existing {
            None => {
                let config_map = ConfigMap {
                    metadata: ObjectMeta {
                        name: Some(CHECKPOINTS.into()),
                        labels: Some(BTreeMap::from([(
                            MANAGED_BY_LABEL.to_string(),
                            FIELD_MANAGER.to_string(),
                        )])),
                        ..Default::default()
                    },
                    data: Some(plan.data),
                    ..ConfigMap::default()
                };
                api.create(&PostParams::default(), &config_map)
                    .await
                    .map(|_| ())
            }
            Some(mut config_map) => {
                // A replace at the version read (kept in the metadata): keys removed
                // go, and a concurrent writer makes us read again.
                config_map.data = Some(plan.data);
                api.replace(CHECKPOINTS, &PostParams::default(), &config_map)
                    .await
                    .map(|_| ())
            }
        };
        match result {
            Err(kube::Error::Api(status)) if status.code == 409 => continue,
            Err(error) => return Err(error.into()),
            Ok(()) => {
                // Leases of writers that are gone: their chains are sealed now (or never
                // stored anything). Best effort: the next store tries again.
                for writer in writers.iter().filter(|w| w.expired(now) && w.key != key) {
                    let name = lease_name(&writer.chain);
                    if let Err(error) = leases.delete(&name, &DeleteParams::default()).await {
                        tracing::debug!(%error, lease = %name, "could not delete a gone writer's Lease");
                    }
                }
                return Ok(Stored {
                    retired: plan.retired,
                    dropped: plan.dropped,
                    bytes,
                });
            }
        }
    }
    Err(StoreError::Conflicts(ATTEMPTS))
}

/// Renews a writer's Lease (server-side apply: created when missing, and fields this
/// operator set before but not now, such as the error, go).
pub async fn renew(leases: &Api<Lease>, lease: &Lease) -> Result<(), kube::Error> {
    leases
        .patch(
            &lease.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(lease),
        )
        .await
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evidence::chain::Digest;

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + second).expect("time")
    }

    fn checkpoint(seq: u64) -> Checkpoint {
        Checkpoint {
            seq,
            hash: Digest::of(&seq.to_le_bytes()),
            time: at(i64::try_from(seq).unwrap_or(0)),
        }
    }

    fn line(seq: u64) -> String {
        serde_json::to_string(&checkpoint(seq)).expect("json")
    }

    fn lines(n: u64) -> String {
        (0..n).map(line).collect::<Vec<_>>().join("\n")
    }

    #[test]
    fn keys_are_valid_config_map_keys_and_leases_valid_names() {
        assert_eq!(
            checkpoint_key("enclave-system/enclave-operator-7d9f"),
            "enclave-system.enclave-operator-7d9f"
        );
        assert_eq!(checkpoint_key("a b:c"), "a.b.c");
        let name = lease_name("enclave-system/enclave-operator-7d9f");
        assert!(
            name.starts_with("enclave-chain-") && name.len() == 34,
            "{name}"
        );
        assert_ne!(name, lease_name("enclave-system/leader"));
    }

    #[test]
    fn chains_whose_writer_is_gone_are_sealed_at_their_last_checkpoint() {
        let data = BTreeMap::from([
            ("dead".to_string(), lines(10)),
            ("alive".to_string(), lines(3)),
            ("garbage".to_string(), "not a checkpoint".to_string()),
        ]);
        let live = BTreeSet::from(["alive".to_string()]);
        let plan = plan(&data, "me", Some(&line(0)), &live, at(100)).expect("fits");
        assert_eq!(plan.retired, vec![("dead".to_string(), checkpoint(9))]);
        assert_eq!(plan.dropped, vec!["garbage".to_string()]);
        assert_eq!(plan.data["alive"], lines(3));
        assert_eq!(plan.data["me"], line(0));
        let seal = &plan.data["dead"];
        assert_eq!(seal.lines().count(), 1);
        // Readers of checkpoints read the seal as the chain's last checkpoint.
        assert_eq!(
            serde_json::from_str::<Checkpoint>(seal).expect("a checkpoint"),
            checkpoint(9)
        );
        assert_eq!(retired_at(seal), Some(at(100).to_string()));
        // Sealed once: the next write keeps the seal and retires nothing again.
        let again = super::plan(&plan.data, "me", Some(&line(1)), &live, at(200)).expect("fits");
        assert!(again.retired.is_empty());
        assert_eq!(&again.data["dead"], seal);
        assert_eq!(again.data["me"], format!("{}\n{}", line(0), line(1)));
    }

    #[test]
    fn a_retired_chain_written_again_is_live_again() {
        let seal = sealed_line(&checkpoint(4), at(50));
        let data = BTreeMap::from([("me".to_string(), seal.clone())]);
        let plan = plan(&data, "me", Some(&line(5)), &BTreeSet::new(), at(60)).expect("fits");
        assert_eq!(plan.data["me"], format!("{seal}\n{}", line(5)));
        assert_eq!(retired_at(&plan.data["me"]), None);
    }

    /// Thousands of rollouts, each a new chain that writes a day of checkpoints and
    /// dies, with three replicas alive at any time: the total never passes the budget,
    /// every live chain keeps at least its newest checkpoint, and the newest seals stay.
    #[test]
    fn the_total_stays_within_the_budget_whatever_the_number_of_chains() {
        let mut data: BTreeMap<String, String> = BTreeMap::new();
        let day = lines(KEPT as u64);
        let mut largest = 0;
        for rollout in 0..200_i64 {
            let replicas: Vec<String> = (0..3).map(|r| format!("ns.op-{rollout}-{r}")).collect();
            for replica in &replicas {
                data.insert(replica.clone(), day.clone());
            }
            let live: BTreeSet<String> = replicas.iter().cloned().collect();
            for replica in &replicas {
                let plan = plan(&data, replica, Some(&line(KEPT as u64)), &live, at(rollout))
                    .expect("three replicas always fit");
                largest = largest.max(size(&plan.data));
                data = plan.data;
            }
            for replica in &replicas {
                assert!(!data[replica].is_empty(), "{replica} keeps its checkpoints");
            }
        }
        assert!(largest <= BUDGET_BYTES, "{largest} bytes");
        let sealed = data.values().filter(|v| retired_at(v).is_some()).count();
        assert_eq!(sealed, MAX_RETIRED);
        assert!(
            data.contains_key("ns.op-198-0"),
            "the newest seals are kept"
        );
        assert!(!data.contains_key("ns.op-0-0"), "the oldest go");
    }

    #[test]
    fn live_chains_share_the_budget_and_too_many_is_an_error() {
        let day = lines(KEPT as u64);
        let data: BTreeMap<String, String> = (0..10)
            .map(|i| (format!("ns.op-{i}"), day.clone()))
            .collect();
        let live: BTreeSet<String> = data.keys().cloned().collect();
        let plan = plan(&data, "ns.op-0", Some(&line(KEPT as u64)), &live, at(0)).expect("fits");
        assert!(size(&plan.data) <= BUDGET_BYTES);
        assert!(plan.kept < KEPT && plan.kept >= 1, "{}", plan.kept);
        assert!(plan.data["ns.op-0"].ends_with(&line(KEPT as u64)));

        let crowd: BTreeMap<String, String> = (0..10_000)
            .map(|i| (format!("ns.op-{i}"), line(1)))
            .collect();
        let live: BTreeSet<String> = crowd.keys().cloned().collect();
        let error =
            super::plan(&crowd, "ns.op-0", Some(&line(2)), &live, at(0)).expect_err("too many");
        assert_eq!(error.live, 10_000);
        assert!(error.to_string().contains("budget"), "{error}");
    }

    #[test]
    fn a_writer_is_live_while_renewed_and_not_closed() {
        let (flushed, stored) = (checkpoint(3), checkpoint(2));
        let heartbeat = Heartbeat {
            chain_id: "ns/op-0",
            holder: "op-0",
            interval: Duration::from_secs(60),
            flushed: &flushed,
            stored: Some(&stored),
            error: Some(("refused", at(-5))),
            closed: false,
        };
        let lease = heartbeat.lease(at(0));
        let state = WriterState::from_lease(&lease).expect("a writer's lease");
        assert_eq!(state.key, "ns.op-0");
        assert_eq!(state.flushed, Some(checkpoint(3)));
        assert_eq!(state.stored, Some(checkpoint(2)));
        assert_eq!(state.error.as_deref(), Some("refused"));
        assert_eq!(state.failing_since, Some(at(-5)));
        assert_eq!(state.lease_seconds, 180);
        assert!(state.live(at(180)));
        assert!(!state.live(at(181)));
        let closed = Heartbeat {
            stored: None,
            error: None,
            closed: true,
            ..heartbeat
        }
        .lease(at(0));
        let closed = WriterState::from_lease(&closed).expect("a writer's lease");
        assert!(!closed.live(at(1)), "a closed chain's writer does not run");
        assert!(
            !closed.expired(at(1)),
            "but it is retired only once its Lease lapses"
        );
        assert!(closed.expired(at(181)));
    }
}
