//! The decision log writer: takes every record from the [`crate::decisions::Sink`],
//! appends it to the hash chain, writes the line to stdout (and a file), and
//! checkpoints the chain's head to the cluster — the `enclave-operator-checkpoints`
//! ConfigMap in the operator's namespace, one key per chain — at least every
//! `--checkpoint-interval`, so that an auditor can detect deleted or edited lines in
//! stored logs against checkpoints kept apart from them.
//!
//! A process resumes its chain from its last checkpoint when it restarts with the same
//! identity (`--chain-id`), writing a `ChainResumed` record that names the checkpoint.
//! Records lost because the queue was full are themselves recorded (`RecordsLost`,
//! with the count) before the next record, so the log never has a silent hole.
//! Admission findings also become Events on their policy, best effort: an Event that
//! does not fit its queue is counted, not waited for.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference};
use kube::{
    Api,
    api::{Patch, PatchParams, PostParams},
    runtime::events::{Event, EventType},
};
use tokio::{
    io::AsyncWriteExt,
    sync::{mpsc, oneshot, watch},
};

use super::{
    chain::{Chain, Checkpoint, Kind},
    cli::LogArgs,
};
use crate::{
    context::Context,
    decisions::{self, Record},
    names::{FIELD_MANAGER, MANAGED_BY_LABEL},
};

/// The ConfigMap that holds every chain's recent checkpoints.
pub const CHECKPOINTS: &str = "enclave-operator-checkpoints";
/// Checkpoints kept per chain (a day at one a minute, about 150 bytes each).
const KEPT: usize = 1440;

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

/// Starts the writer: resumes the chain from its last checkpoint (or starts one).
pub async fn start(
    args: &LogArgs,
    ctx: Arc<Context>,
    records: mpsc::Receiver<Record>,
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
    let (chain, first) = match last_checkpoint(&ctx.client, &namespace, &chain_id).await? {
        Some(checkpoint) => Chain::resume(chain_id.clone(), &checkpoint, Timestamp::now())?,
        None => Chain::start(chain_id.clone(), Timestamp::now())?,
    };
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
    tracing::info!(chain = %chain_id, seq = chain.head().seq, "decision log started");
    let (head_tx, head_rx) = watch::channel(chain.head());
    let (events_tx, events_rx) = mpsc::channel(1024);
    tokio::spawn(publish_events(ctx.clone(), events_rx));
    let checkpoints = tokio::spawn(checkpoint(
        ctx.clone(),
        namespace,
        chain_id,
        head_rx,
        interval,
    ));
    let (close_tx, close_rx) = oneshot::channel();
    let done = tokio::spawn(async move {
        let mut log = Log {
            chain,
            stdout: tokio::io::BufWriter::new(tokio::io::stdout()),
            file: file.map(tokio::io::BufWriter::new),
            ctx,
            head: head_tx,
            events: events_tx,
        };
        log.write(&first).await;
        log.flush().await;
        log.run(records, close_rx).await;
        // The last head after the final flush.
        drop(log);
        let _ = checkpoints.await;
    });
    Ok(Writer {
        close: Some(close_tx),
        done: Some(done),
    })
}

struct Log {
    chain: Chain,
    stdout: tokio::io::BufWriter<tokio::io::Stdout>,
    file: Option<tokio::io::BufWriter<tokio::fs::File>>,
    ctx: Arc<Context>,
    head: watch::Sender<Checkpoint>,
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
        let _ = self.stdout.flush().await;
        if let Some(file) = &mut self.file {
            let _ = file.flush().await;
            let _ = file.get_ref().sync_data().await;
        }
        // Only what is flushed may be checkpointed.
        self.head.send_replace(self.chain.head());
    }

    async fn record(&mut self, record: Record) {
        let lost = self.ctx.sink.take_lost();
        if lost > 0 {
            self.ctx.metrics.evidence.lost.inc_by(lost);
            let line =
                self.chain
                    .records_lost(lost, "the decision queue was full", Timestamp::now());
            self.write(&line).await;
        }
        let kind = Kind::from_static(record.kind.as_str()).unwrap_or(Kind::POD_DENIED);
        let line = self.chain.append(kind, record.fields(), Timestamp::now());
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

    async fn run(&mut self, mut records: mpsc::Receiver<Record>, mut close: oneshot::Receiver<()>) {
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
                        self.flush().await;
                    }
                    None => break,
                },
                _ = &mut close => {
                    while let Ok(more) = records.try_recv() {
                        self.record(more).await;
                    }
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
/// `interval`, and once more at the end.
async fn checkpoint(
    ctx: Arc<Context>,
    namespace: String,
    chain_id: String,
    mut head: watch::Receiver<Checkpoint>,
    interval: Duration,
) {
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &namespace);
    let key = checkpoint_key(&chain_id);
    let mut written: Option<Checkpoint> = None;
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
        if written.as_ref() != Some(&current) {
            match store(&api, &key, &current).await {
                Ok(()) => {
                    ctx.metrics.evidence.checkpoints.inc();
                    written = Some(current);
                }
                Err(error) => tracing::warn!(%error, "could not checkpoint the decision log"),
            }
        }
        if closed {
            return;
        }
    }
}

/// Appends a checkpoint to the chain's key, keeping the last [`KEPT`].
async fn store(
    api: &Api<ConfigMap>,
    key: &str,
    checkpoint: &Checkpoint,
) -> Result<(), kube::Error> {
    let line = serde_json::to_string(checkpoint).unwrap_or_default();
    for _ in 0..5 {
        let existing = api.get_opt(CHECKPOINTS).await?;
        let previous = existing
            .as_ref()
            .and_then(|c| c.data.as_ref())
            .and_then(|d| d.get(key))
            .cloned()
            .unwrap_or_default();
        let mut lines: Vec<&str> = previous.lines().filter(|l| !l.is_empty()).collect();
        lines.push(&line);
        let start = lines.len().saturating_sub(KEPT);
        let value = lines[start..].join("\n");
        let result = match existing {
            None => {
                let config_map = ConfigMap {
                    metadata: kube::api::ObjectMeta {
                        name: Some(CHECKPOINTS.into()),
                        labels: Some(BTreeMap::from([(
                            MANAGED_BY_LABEL.to_string(),
                            FIELD_MANAGER.to_string(),
                        )])),
                        ..Default::default()
                    },
                    data: Some(BTreeMap::from([(key.to_string(), value)])),
                    ..ConfigMap::default()
                };
                api.create(&PostParams::default(), &config_map)
                    .await
                    .map(|_| ())
            }
            Some(config_map) => {
                // A merge patch at the version read: other chains' keys stay, a
                // concurrent writer makes us read again.
                let patch = serde_json::json!({
                    "metadata": {"resourceVersion": config_map.metadata.resource_version},
                    "data": {key: value},
                });
                api.patch(CHECKPOINTS, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map(|_| ())
            }
        };
        match result {
            Err(kube::Error::Api(status)) if status.code == 409 => continue,
            other => return other,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn checkpoint_keys_are_valid_config_map_keys() {
        assert_eq!(
            super::checkpoint_key("enclave-system/enclave-operator-7d9f"),
            "enclave-system.enclave-operator-7d9f"
        );
        assert_eq!(super::checkpoint_key("a b:c"), "a.b.c");
    }
}
