//! The audit sink's endpoint: HTTPS that requires the API server's client certificate,
//! `POST` [`super::PATH`] with an `audit.k8s.io/v1` EventList, the records to the
//! decision log. The I/O edge of [`super::event`].

use std::{
    path::Path,
    sync::{Arc, Mutex},
    time::{SystemTime, UNIX_EPOCH},
};

use axum::{
    Router,
    body::Bytes,
    extract::{DefaultBodyLimit, State},
    http::StatusCode,
    routing::post,
};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use rustls::{
    RootCertStore, ServerConfig,
    pki_types::{CertificateDer, pem::PemObject},
    server::WebPkiClientVerifier,
};

use super::event::{self, EventList, Seen};
use crate::{admission::server::SwappableCert, decisions::Sink};

/// The API server's batches are at most 400 events by default, a pod create at
/// RequestResponse a few KiB twice; this leaves room for large pods.
pub const MAX_BODY: usize = 64 * 1024 * 1024;

/// How many audit IDs are remembered to drop an event sent again.
const SEEN: usize = 65_536;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("--audit-sink-client-ca {path}: {reason}")]
    ClientCa { path: String, reason: String },
}

/// What the sink counts, for `/metrics` (`enclave_operator_auditsink_*`): whether it is
/// configured, what it received and when last.
#[derive(Clone, Default)]
pub struct Metrics {
    pub configured: Gauge,
    pub events: Family<EventLabels, Counter>,
    pub records: Counter,
    pub invalid_batches: Counter,
    pub last_event: Gauge,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    /// `recorded` (an enclave policy decided it), `ignored` (none did), `duplicate`.
    pub result: &'static str,
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "configured",
            "1 when the operator receives the API server's audit events (--audit-sink-addr), else 0",
            metrics.configured.clone(),
        );
        registry.register(
            "events",
            "Audit events received, by result (recorded, ignored, duplicate)",
            metrics.events.clone(),
        );
        registry.register(
            "records",
            "Decision records written from audit events (native engine decisions)",
            metrics.records.clone(),
        );
        registry.register(
            "invalid_batches",
            "Posted bodies that were not an audit EventList",
            metrics.invalid_batches.clone(),
        );
        registry.register(
            "last_event_timestamp_seconds",
            "When the last audit event was received (Unix seconds); 0 before the first",
            metrics.last_event.clone(),
        );
        metrics
    }
}

/// What the handler shares.
pub struct SinkState {
    sink: Sink,
    metrics: Metrics,
    seen: Mutex<Seen>,
}

impl SinkState {
    pub fn new(sink: Sink, metrics: Metrics) -> Self {
        Self {
            sink,
            metrics,
            seen: Mutex::new(Seen::new(SEEN)),
        }
    }
}

pub fn router(state: Arc<SinkState>) -> Router {
    Router::new()
        .route(super::PATH, post(handle))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

async fn handle(State(state): State<Arc<SinkState>>, body: Bytes) -> (StatusCode, String) {
    let list: EventList = match serde_json::from_slice(&body) {
        Ok(list) => list,
        Err(error) => {
            state.metrics.invalid_batches.inc();
            return (
                StatusCode::BAD_REQUEST,
                format!("the body is not an audit.k8s.io/v1 EventList: {error}"),
            );
        }
    };
    if !list.items.is_empty() {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        state.metrics.last_event.set(now);
    }
    for item in &list.items {
        let first = state
            .seen
            .lock()
            .map(|mut seen| seen.first(&item.audit_id))
            // A poisoned lock (a panic elsewhere) must not lose evidence: record.
            .unwrap_or(true);
        let result = if !first {
            "duplicate"
        } else {
            let records = event::records(item);
            if records.is_empty() {
                "ignored"
            } else {
                state.metrics.records.inc_by(records.len() as u64);
                for record in records {
                    state.sink.record(record);
                }
                "recorded"
            }
        };
        state
            .metrics
            .events
            .get_or_create(&EventLabels { result })
            .inc();
    }
    (StatusCode::OK, String::new())
}

/// The CAs in `pem` whose client certificates the sink accepts.
pub fn client_roots(pem: &[u8]) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for der in CertificateDer::pem_slice_iter(pem) {
        let der = der.map_err(|e| format!("not PEM: {e}"))?;
        roots
            .add(der)
            .map_err(|e| format!("not a CA certificate: {e}"))?;
    }
    if roots.is_empty() {
        return Err("no certificate in it".into());
    }
    Ok(roots)
}

/// [`client_roots`] from a file: read at start, before anything else, so that a wrong
/// file is a clear error at once.
pub fn read_client_ca(path: &Path) -> Result<RootCertStore, Error> {
    let error = |reason: String| Error::ClientCa {
        path: path.display().to_string(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| error(e.to_string()))?;
    client_roots(&pem).map_err(error)
}

/// TLS that presents `cert` and accepts only clients with a certificate signed by one
/// of `roots`: the handshake fails for any other client, before a byte is read.
pub fn tls_config(cert: Arc<SwappableCert>, roots: RootCertStore) -> Result<ServerConfig, String> {
    let verifier = WebPkiClientVerifier::builder(Arc::new(roots))
        .build()
        .map_err(|e| e.to_string())?;
    Ok(ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(cert))
}
