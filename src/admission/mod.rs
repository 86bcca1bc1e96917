//! The admission webhooks: an HTTPS server (rustls) with one handler per resource kind,
//! the certificates it serves, and the webhook configurations that point the API
//! server at it. Decisions are pure ([`decide`]) and read only in-memory caches.

pub mod certs;
pub mod config;
pub mod decide;
pub mod server;

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use axum_server::tls_rustls::RustlsConfig;
use futures::StreamExt;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::{
    Client,
    runtime::events::{Event, EventType, Recorder},
};

use crate::{cache::Caches, scope::Catalog};

/// How the webhook is reached and where its certificates come from.
#[derive(Clone, Debug)]
pub struct WebhookOptions {
    pub listen: SocketAddr,
    pub endpoint: config::Endpoint,
    /// DNS names or IPs the serving certificate must cover (when generated).
    pub hosts: Vec<String>,
    /// A directory with tls.crt, tls.key and ca.crt (for example a cert-manager
    /// Secret); certificates are generated and rotated in memory when absent.
    pub tls_dir: Option<PathBuf>,
    /// The operator's own namespace, always excluded from the webhooks.
    pub operator_namespace: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Certs(#[from] certs::Error),
    #[error("webhook TLS setup failed: {0}")]
    Tls(#[source] std::io::Error),
    #[error("webhook server failed: {0}")]
    Serve(#[source] std::io::Error),
}

fn load(options: &WebhookOptions) -> Result<certs::Bundle, certs::Error> {
    match &options.tls_dir {
        Some(dir) => certs::read_dir(dir),
        None => certs::generate(&options.hosts, certs::VALIDITY),
    }
}

/// Keeps the webhook configurations current: on every policy change, when the
/// certificates rotate, and every few minutes. Retries API failures with a short delay.
async fn keep_configurations(
    client: Client,
    caches: Caches,
    options: WebhookOptions,
    mut ca_bundle: tokio::sync::watch::Receiver<Vec<u8>>,
) {
    let mut changes = std::pin::pin!(caches.policies.changes());
    caches.wait_until_ready().await;
    loop {
        let policies = caches.policies();
        let bundle = ca_bundle.borrow_and_update().clone();
        let ns = options.operator_namespace.as_deref();
        let mutating = config::mutating(&policies, &options.endpoint, &bundle, ns);
        let validating = config::validating(&policies, &options.endpoint, &bundle, ns);
        match config::apply(&client, &mutating, &validating).await {
            Ok(()) => tracing::info!(policies = policies.len(), "webhook configurations applied"),
            Err(error) => {
                tracing::warn!(%error, "could not apply webhook configurations; retrying");
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            }
        }
        tokio::select! {
            _ = changes.next() => {}
            _ = ca_bundle.changed() => {}
            // Repairs a configuration someone edited or deleted by hand.
            () = tokio::time::sleep(crate::controller::RESYNC) => {}
        }
    }
}

/// Rotates generated certificates (or re-reads mounted ones) and publishes the CA
/// bundle. During a rotation the bundle trusts the old and the new CA, and it is
/// published before the server switches, so the API server never sees a certificate
/// it does not trust.
async fn rotate(
    options: WebhookOptions,
    tls: RustlsConfig,
    mut current: certs::Bundle,
    ca_bundle: tokio::sync::watch::Sender<Vec<u8>>,
) {
    let period = match options.tls_dir {
        Some(_) => Duration::from_secs(60),
        None => certs::rotation_due(certs::VALIDITY),
    };
    loop {
        tokio::time::sleep(period).await;
        let next = match load(&options) {
            Ok(next) => next,
            Err(error) => {
                tracing::warn!(%error, "could not renew the webhook certificate; keeping the current one");
                continue;
            }
        };
        if next.cert_pem == current.cert_pem {
            continue;
        }
        let _ = ca_bundle.send(format!("{}{}", next.ca_pem, current.ca_pem).into_bytes());
        // Give the configuration a moment to reach the API server before switching.
        tokio::time::sleep(Duration::from_secs(5)).await;
        if let Err(error) = tls
            .reload_from_pem(
                next.cert_pem.clone().into_bytes(),
                next.key_pem.clone().into_bytes(),
            )
            .await
        {
            tracing::warn!(%error, "could not load the renewed webhook certificate");
            continue;
        }
        tracing::info!("webhook certificate rotated");
        current = next;
    }
}

/// Records denials and Audit findings as Events on their ResidencyPolicy, so that
/// `kubectl describe residencypolicy` shows every access the policy refused. The
/// recorder aggregates repeats into one Event with a count.
async fn publish_reports(
    recorder: Recorder,
    mut reports: tokio::sync::mpsc::Receiver<decide::Report>,
) {
    while let Some(report) = reports.recv().await {
        let reference = ObjectReference {
            api_version: Some("enclave.dev/v1alpha1".into()),
            kind: Some("ResidencyPolicy".into()),
            name: Some(report.policy.clone()),
            ..Default::default()
        };
        let (type_, reason) = if report.audit {
            (EventType::Normal, "AuditFinding")
        } else {
            (EventType::Warning, "Denied")
        };
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(report.message),
            action: "Admit".into(),
            secondary: None,
        };
        if let Err(error) = recorder.publish(&event, &reference).await {
            tracing::debug!(%error, policy = %report.policy, "could not record an admission Event");
        }
    }
}

/// Runs the webhook server and keeps its configurations and certificates current.
pub async fn run(
    client: Client,
    caches: Caches,
    recorder: Recorder,
    metrics: server::AdmissionMetrics,
    options: WebhookOptions,
) -> Result<(), Error> {
    let bundle = load(&options)?;
    let tls = RustlsConfig::from_pem(
        bundle.cert_pem.clone().into_bytes(),
        bundle.key_pem.clone().into_bytes(),
    )
    .await
    .map_err(Error::Tls)?;
    let (ca_tx, ca_rx) = tokio::sync::watch::channel(bundle.ca_pem.clone().into_bytes());
    let (events, reports) = tokio::sync::mpsc::channel(1024);
    tokio::spawn(publish_reports(recorder, reports));
    let state = Arc::new(server::AdmissionState {
        catalog: caches.clone(),
        metrics,
        events: Some(events),
    });
    tokio::spawn(keep_configurations(client, caches, options.clone(), ca_rx));
    tokio::spawn(rotate(options.clone(), tls.clone(), bundle, ca_tx));
    server::serve(options.listen, tls, server::router(state))
        .await
        .map_err(Error::Serve)
}
