//! The decision log writer: takes every record from the [`crate::decisions::Sink`],
//! appends it to the hash chain, writes the line to stdout (and a file), and
//! checkpoints the chain's head to the cluster — the `enclave-operator-checkpoints`
//! ConfigMap in the operator's namespace, one key per chain, kept bounded by
//! [`super::checkpoints`] — at least every `--checkpoint-interval`, so that an auditor
//! can detect deleted or edited lines in stored logs against checkpoints kept apart
//! from them. Each open chain also renews a Lease, its heartbeat: the audit reads it to
//! tell a chain whose checkpoints stopped while its writer runs, and writers retire the
//! chains whose Lease is gone. A checkpoint that is not stored is counted
//! (`enclave_operator_evidence_checkpoint_failures`), logged, shown as the
//! `DecisionLogCheckpointed` condition of every policy and a Warning Event on the
//! ConfigMap, and tried again at the next interval: it never counts as stored.
//!
//! A process resumes its chain from its last checkpoint when it restarts with the same
//! identity (`--chain-id`), writing a `ChainResumed` record that names the checkpoint.
//!
//! With leader election there are two chains per process: the replica's own, for the
//! admission decisions every replica makes, and the leader chain (`--leader-chain-id`)
//! for the controllers' decisions, which only the leader makes. A replica that becomes
//! leader resumes the leader chain from its last checkpoint; one that steps down
//! writes what its controllers decided, checkpoints and closes it, before the lease is
//! given up. Lines of both go to the same outputs; `verify-log --chain` picks one.
//! Records lost because the queue was full are themselves recorded (`RecordsLost`,
//! with the count) before the next record, so the log never has a silent hole.
//! Admission findings also become Events on their policy, best effort: an Event that
//! does not fit its queue is counted, not waited for.

use std::{sync::Arc, time::Duration};

use jiff::Timestamp;
use k8s_openapi::api::{
    coordination::v1::Lease,
    core::v1::{ConfigMap, ObjectReference},
};
use kube::{
    Api,
    runtime::events::{Event, EventType},
};
use tokio::{
    io::AsyncWriteExt,
    sync::{mpsc, oneshot, watch},
};

pub use super::checkpoints::{CHECKPOINTS, checkpoint_key};
use super::{
    chain::{Chain, Checkpoint, Kind},
    checkpoints::{self, Heartbeat},
    cli::LogArgs,
};
use crate::{
    context::Context,
    decisions::{self, Record, Subject},
};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the decision log file {path}: {source}")]
    File {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the decision log's chain: {0}")]
    Chain(#[from] super::chain::ChainError),
    #[error("reading the last checkpoint: {0}")]
    Kube(#[from] kube::Error),
    #[error("--checkpoint-interval must be a positive number of seconds")]
    Interval,
}

/// The identity of this process, for the default chain id.
fn identity() -> String {
    std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "enclave-operator".into())
}

/// A running writer; [`Writer::close`] drains the queue and takes a last checkpoint.
pub struct Writer {
    close: Option<oneshot::Sender<()>>,
    done: Option<tokio::task::JoinHandle<()>>,
}

impl Writer {
    pub async fn close(mut self) {
        if let Some(close) = self.close.take() {
            let _ = close.send(());
        }
        if let Some(done) = self.done.take() {
            let _ = done.await;
        }
    }
}

/// Reads the last checkpoint of `chain_id`, if any.
pub async fn last_checkpoint(
    client: &kube::Client,
    namespace: &str,
    chain_id: &str,
) -> Result<Option<Checkpoint>, kube::Error> {
    let Some(config_map) = Api::<ConfigMap>::namespaced(client.clone(), namespace)
        .get_opt(CHECKPOINTS)
        .await?
    else {
        return Ok(None);
    };
    let text = config_map
        .data
        .and_then(|mut d| d.remove(&checkpoint_key(chain_id)))
        .unwrap_or_default();
    Ok(text
        .lines()
        .rev()
        .find_map(|line| serde_json::from_str::<Checkpoint>(line).ok()))
}

/// A chain being written: its state and the head its checkpointer stores.
struct Written {
    chain: Chain,
    head: watch::Sender<Checkpoint>,
    checkpoints: tokio::task::JoinHandle<()>,
}

impl Written {
    /// Resumes `chain_id` from its last checkpoint, or starts it; returns the chain and
    /// its first line (`ChainResumed` or `ChainStarted`), not yet written.
    async fn open(
        ctx: &Arc<Context>,
        namespace: &str,
        chain_id: &str,
        interval: Duration,
    ) -> Result<(Written, String), Error> {
        let (chain, first) = match last_checkpoint(&ctx.client, namespace, chain_id).await? {
            Some(checkpoint) => Chain::resume(chain_id.to_string(), &checkpoint, Timestamp::now())?,
            None => Chain::start(chain_id.to_string(), Timestamp::now())?,
        };
        tracing::info!(chain = %chain_id, seq = chain.head().seq, "decision log chain opened");
        let (head, head_rx) = watch::channel(chain.head());
        let checkpoints = tokio::spawn(checkpoint(
            ctx.clone(),
            namespace.to_string(),
            chain_id.to_string(),
            head_rx,
            interval,
        ));
        Ok((
            Written {
                chain,
                head,
                checkpoints,
            },
            first,
        ))
    }

    /// Publishes the head (of flushed lines only).
    fn flushed(&self) {
        self.head.send_replace(self.chain.head());
    }

    /// Ends the chain's checkpointer, which stores the head once more first.
    async fn close(self) {
        drop(self.head);
        let _ = self.checkpoints.await;
    }
}

/// Starts the writer: resumes this replica's chain from its last checkpoint (or starts
/// one), and, with an election, the leader chain whenever `leading` turns true. Without
/// one (a single process) every record goes to the process's chain.
pub async fn start(
    args: &LogArgs,
    ctx: Arc<Context>,
    records: mpsc::Receiver<Record>,
    leading: Option<watch::Receiver<bool>>,
) -> Result<Writer, Error> {
    let interval = Duration::try_from_secs_f64(args.checkpoint_interval)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or(Error::Interval)?;
    let namespace = ctx.admission.operator_namespace.clone();
    let chain_id = args
        .chain_id
        .clone()
        .unwrap_or_else(|| format!("{namespace}/{}", identity()));
    let leader_id = args
        .leader_chain_id
        .clone()
        .unwrap_or_else(|| format!("{namespace}/leader"));
    let file = match &args.decision_log {
        Some(path) => Some(
            tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .await
                .map_err(|source| Error::File {
                    path: path.display().to_string(),
                    source,
                })?,
        ),
        None => None,
    };
    let (replica, first) = Written::open(&ctx, &namespace, &chain_id, interval).await?;
    let (events_tx, events_rx) = mpsc::channel(1024);
    tokio::spawn(publish_events(ctx.clone(), events_rx));
    let (close_tx, close_rx) = oneshot::channel();
    let done = tokio::spawn(async move {
        let mut log = Log {
            replica,
            leader: None,
            leader_id,
            namespace,
            interval,
            stdout: tokio::io::BufWriter::new(tokio::io::stdout()),
            file: file.map(tokio::io::BufWriter::new),
            ctx,
            events: events_tx,
        };
        log.write(&first).await;
        log.flush().await;
        log.run(records, leading, close_rx).await;
        // The last heads after the final flush.
        if let Some(leader) = log.leader.take() {
            leader.close().await;
        }
        log.replica.close().await;
    });
    Ok(Writer {
        close: Some(close_tx),
        done: Some(done),
    })
}

/// Why records are lost while the writer runs.
const FULL: &str = "the decision queue was full";

struct Log {
    /// This replica's chain: admission decisions, and the controllers' when the leader
    /// chain is not open.
    replica: Written,
    /// The leader chain, open while this replica leads.
    leader: Option<Written>,
    leader_id: String,
    namespace: String,
    interval: Duration,
    stdout: tokio::io::BufWriter<tokio::io::Stdout>,
    file: Option<tokio::io::BufWriter<tokio::fs::File>>,
    ctx: Arc<Context>,
    events: mpsc::Sender<Record>,
}

impl Log {
    async fn write(&mut self, line: &str) {
        // A line that cannot be written is not dropped from the chain: the verifier
        // names the gap it leaves.
        if self.stdout.write_all(line.as_bytes()).await.is_err()
            || self.stdout.write_all(b"\n").await.is_err()
        {
            tracing::warn!("could not write the decision log to stdout");
        }
        if let Some(file) = &mut self.file
            && (file.write_all(line.as_bytes()).await.is_err()
                || file.write_all(b"\n").await.is_err())
        {
            tracing::warn!("could not write the decision log file");
        }
        self.ctx.metrics.evidence.lines.inc();
    }

    async fn flush(&mut self) {
        if self.stdout.flush().await.is_err() {
            tracing::warn!("could not write the decision log to stdout");
        }
        if let Some(file) = &mut self.file
            && (file.flush().await.is_err() || file.get_ref().sync_data().await.is_err())
        {
            // The head is still checkpointed below: lines missing from the file then
            // show as a truncation or a gap when the file is verified.
            tracing::warn!("could not write the decision log file");
        }
        // Only what is flushed may be checkpointed.
        self.replica.flushed();
        if let Some(leader) = &self.leader {
            leader.flushed();
        }
    }

    /// Writes how many records the queue turned away since the last call, if any.
    async fn lost(&mut self, reason: &str) {
        let lost = self.ctx.sink.take_lost();
        if lost > 0 {
            self.ctx.metrics.evidence.lost.inc_by(lost);
            let line = self
                .replica
                .chain
                .records_lost(lost, reason, Timestamp::now());
            self.write(&line).await;
        }
    }

    async fn record(&mut self, record: Record) {
        self.lost(FULL).await;
        let kind = Kind::from_static(record.kind.as_str()).unwrap_or(Kind::POD_DENIED);
        let chain = match &mut self.leader {
            Some(leader) if record.kind.by_leader() => &mut leader.chain,
            _ => &mut self.replica.chain,
        };
        let line = chain.append(kind, record.fields(), Timestamp::now());
        self.write(&line).await;
        let told = match record.kind {
            decisions::Kind::PodDenied | decisions::Kind::AuditFinding => record.policy.is_some(),
            decisions::Kind::AccessAllowed | decisions::Kind::AccessDenied => true,
            _ => false,
        };
        if told && self.events.try_send(record).is_err() {
            self.ctx.metrics.evidence.events_dropped.inc();
        }
    }

    /// Takes the leader chain up where the last leader's checkpoint left it.
    async fn lead(&mut self) {
        if self.leader.is_some() {
            return;
        }
        match Written::open(&self.ctx, &self.namespace, &self.leader_id, self.interval).await {
            Ok((leader, first)) => {
                self.leader = Some(leader);
                self.write(&first).await;
                self.flush().await;
            }
            // The controllers' records then stay in this replica's chain: nothing is
            // lost, the leader chain has a gap that its checkpoints show.
            Err(error) => {
                tracing::warn!(%error, chain = %self.leader_id, "could not open the leader chain")
            }
        }
    }

    /// Ends this replica's part of the leader chain, with its last head checkpointed,
    /// so that the next leader continues from it.
    async fn step_down(&mut self, records: &mut mpsc::Receiver<Record>) {
        // What the controllers decided before they stopped belongs to this term.
        while let Ok(more) = records.try_recv() {
            self.record(more).await;
        }
        self.flush().await;
        if let Some(leader) = self.leader.take() {
            leader.close().await;
        }
    }

    async fn run(
        &mut self,
        mut records: mpsc::Receiver<Record>,
        leading: Option<watch::Receiver<bool>>,
        mut close: oneshot::Receiver<()>,
    ) {
        let mut election = leading.is_some();
        // Without an election: a receiver that never changes, and a branch never polled.
        let mut leading = leading.unwrap_or_else(|| watch::channel(false).1);
        if election && *leading.borrow_and_update() {
            self.lead().await;
        }
        loop {
            tokio::select! {
                biased;
                record = records.recv() => match record {
                    Some(record) => {
                        self.record(record).await;
                        // Batch what is already queued before flushing.
                        while let Ok(more) = records.try_recv() {
                            self.record(more).await;
                        }
                        // Losses after the last record of a burst are written now, not
                        // only before a next record that may never come.
                        self.lost(FULL).await;
                        self.flush().await;
                    }
                    None => break,
                },
                changed = leading.changed(), if election => {
                    if changed.is_err() {
                        election = false;
                        continue;
                    }
                    if *leading.borrow_and_update() {
                        self.lead().await;
                    } else {
                        self.step_down(&mut records).await;
                    }
                }
                _ = &mut close => {
                    // Refuse new records (counted as lost from here on), so that the
                    // drain ends, and write the count of those refused before the end.
                    records.close();
                    while let Ok(more) = records.try_recv() {
                        self.record(more).await;
                    }
                    self.lost("the decision queue was full, or the decision log was closing")
                        .await;
                    self.flush().await;
                    break;
                }
            }
        }
    }
}

/// Admission findings as Events on their ResidencyPolicy, so that `kubectl describe`
/// shows what a policy refused, and access attempts as Events on the pod. The recorder
/// aggregates repeats into one Event.
async fn publish_events(ctx: Arc<Context>, mut records: mpsc::Receiver<Record>) {
    while let Some(record) = records.recv().await {
        let reference = match record.kind {
            // Access attempts are told on the pod they reached for.
            decisions::Kind::AccessAllowed | decisions::Kind::AccessDenied => ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                namespace: record.subject.namespace.clone(),
                name: Some(record.subject.name.clone()),
                ..ObjectReference::default()
            },
            _ => {
                let Some(policy) = record.policy.clone() else {
                    continue;
                };
                ObjectReference {
                    api_version: Some("enclave.dev/v1alpha1".into()),
                    kind: Some("ResidencyPolicy".into()),
                    name: Some(policy),
                    ..ObjectReference::default()
                }
            }
        };
        let (type_, reason) = match record.kind {
            decisions::Kind::AuditFinding => (EventType::Normal, "AuditFinding"),
            decisions::Kind::AccessAllowed => (EventType::Normal, "AccessAllowed"),
            decisions::Kind::AccessDenied => (EventType::Warning, "AccessDenied"),
            _ => (EventType::Warning, "Denied"),
        };
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(crate::names::truncate(
                record.message.clone(),
                crate::names::MAX_EVENT_NOTE,
            )),
            // One series per way in: the recorder merges Events that differ only in
            // their note, and the decision log holds every attempt.
            action: match record.details.get("subresource").and_then(|s| s.as_str()) {
                Some("exec") => "Exec".into(),
                Some("attach") => "Attach".into(),
                Some("portforward") => "PortForward".into(),
                Some("ephemeralcontainers") => "Debug".into(),
                _ => "Admit".into(),
            },
            secondary: None,
        };
        if let Err(error) = ctx.recorder.publish(&event, &reference).await {
            tracing::debug!(%error, "could not record an admission Event");
        }
    }
}

/// Writes the head to the checkpoints ConfigMap whenever it moved, at most once per
/// `interval`, and once more at the end; renews the chain's Lease at every interval.
/// A head that could not be stored is tried again at the next interval.
async fn checkpoint(
    ctx: Arc<Context>,
    namespace: String,
    chain_id: String,
    mut head: watch::Receiver<Checkpoint>,
    interval: Duration,
) {
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &namespace);
    let leases: Api<Lease> = Api::namespaced(ctx.client.clone(), &namespace);
    let key = checkpoint_key(&chain_id);
    let holder = identity();
    let mut written: Option<Checkpoint> = None;
    // The last store's error, and since when stores fail.
    let mut error: Option<(String, Timestamp)> = None;
    let mut ticker = tokio::time::interval(interval);
    loop {
        let closed = tokio::select! {
            _ = ticker.tick() => false,
            changed = head.changed() => {
                if changed.is_ok() {
                    continue;
                }
                true
            }
        };
        let current = head.borrow().clone();
        // The heartbeat first: a writer's key never exists without its Lease, so that
        // no other writer (of this process, too) takes it for a gone writer's chain.
        // It says what is about to be stored; the audit allows it a few intervals.
        if !closed {
            renew(
                &ctx,
                &leases,
                Heartbeat {
                    chain_id: &chain_id,
                    holder: &holder,
                    interval,
                    flushed: &current,
                    stored: written.as_ref(),
                    error: error.as_ref().map(|(e, since)| (e.as_str(), *since)),
                    closed: false,
                },
            )
            .await;
        }
        if written.as_ref() == Some(&current) && !closed {
            // Nothing to store: still retire the chains whose writer went away.
            match checkpoints::retire(&api, &leases, &key).await {
                Ok(stored) => retired(&ctx, &namespace, &stored),
                Err(failure) => {
                    tracing::debug!(chain = %chain_id, error = %failure, "could not retire gone writers' chains")
                }
            }
        }
        if written.as_ref() != Some(&current) {
            match checkpoints::store(&api, &leases, &key, &current).await {
                Ok(stored) => {
                    ctx.metrics.evidence.checkpoints.inc();
                    written = Some(current.clone());
                    error = None;
                    if ctx.checkpoints.stored(&chain_id) {
                        tracing::info!(chain = %chain_id, seq = current.seq, "decision log checkpoints are stored again");
                    }
                    retired(&ctx, &namespace, &stored);
                }
                Err(failure) => {
                    ctx.metrics
                        .evidence
                        .checkpoint_failures
                        .get_or_create(&crate::metrics::CheckpointFailureLabels {
                            reason: failure.category(),
                        })
                        .inc();
                    let message = failure.to_string();
                    tracing::warn!(
                        chain = %chain_id,
                        seq = current.seq,
                        error = %message,
                        "the decision log's checkpoint was NOT stored; trying again at the next interval"
                    );
                    let now = Timestamp::now();
                    if ctx
                        .checkpoints
                        .failing(&chain_id, message.clone(), current.seq, now)
                    {
                        failed_event(&ctx, &namespace, &chain_id, current.seq, &message).await;
                    }
                    let since = error.as_ref().map_or(now, |(_, since)| *since);
                    error = Some((message, since));
                }
            }
            ctx.metrics
                .evidence
                .chains_failing
                .set(i64::try_from(ctx.checkpoints.failures().len()).unwrap_or(i64::MAX));
        }
        if closed {
            renew(
                &ctx,
                &leases,
                Heartbeat {
                    chain_id: &chain_id,
                    holder: &holder,
                    interval,
                    flushed: &current,
                    stored: written.as_ref(),
                    error: error.as_ref().map(|(e, since)| (e.as_str(), *since)),
                    closed: true,
                },
            )
            .await;
        }
        if closed {
            // A closed chain is no longer this process's to store.
            ctx.checkpoints.stored(&chain_id);
            return;
        }
    }
}

/// Renews a chain's Lease: the writer runs (or, closed, has stopped), with what it has
/// flushed and stored and, while stores fail, why and since when.
async fn renew(ctx: &Context, leases: &Api<Lease>, heartbeat: Heartbeat<'_>) {
    if let Err(failure) = checkpoints::renew(leases, &heartbeat.lease(Timestamp::now())).await {
        ctx.metrics
            .evidence
            .checkpoint_failures
            .get_or_create(&crate::metrics::CheckpointFailureLabels { reason: "lease" })
            .inc();
        tracing::warn!(chain = %heartbeat.chain_id, error = %failure, "could not renew the decision log chain's Lease");
    }
}

/// Records the chains a store sealed: their last checkpoint then lives on in this
/// chain, itself checkpointed, after the sealed key is dropped.
fn retired(ctx: &Context, namespace: &str, stored: &checkpoints::Stored) {
    for (key, last) in &stored.retired {
        tracing::info!(chain = %key, seq = last.seq, "decision log chain retired: its writer is gone");
        ctx.sink.record(
            Record::new(
                decisions::Kind::ChainRetired,
                None,
                Subject::new("DecisionLogChain", Some(namespace), key),
                format!(
                    "the writer of chain {key} is gone: the chain is sealed at its last checkpoint, seq {} ({})",
                    last.seq, last.time
                ),
            )
            .with(
                "checkpoint",
                serde_json::json!({"seq": last.seq, "hash": last.hash.to_string(), "time": last.time.to_string()}),
            ),
        );
    }
    if !stored.dropped.is_empty() {
        tracing::info!(keys = ?stored.dropped, bytes = stored.bytes, "checkpoints of long-retired chains dropped to stay within the budget");
    }
}

/// A Warning Event on the checkpoints ConfigMap when a chain starts failing.
async fn failed_event(ctx: &Context, namespace: &str, chain: &str, seq: u64, message: &str) {
    let reference = ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("ConfigMap".into()),
        namespace: Some(namespace.to_string()),
        name: Some(CHECKPOINTS.into()),
        ..ObjectReference::default()
    };
    let event = Event {
        type_: EventType::Warning,
        reason: "CheckpointFailed".into(),
        note: Some(crate::names::truncate(
            format!("chain {chain}: head seq {seq} not stored: {message}"),
            crate::names::MAX_EVENT_NOTE,
        )),
        action: "Checkpoint".into(),
        secondary: None,
    };
    if let Err(error) = ctx.recorder.publish(&event, &reference).await {
        tracing::debug!(%error, "could not record a CheckpointFailed Event");
    }
}
