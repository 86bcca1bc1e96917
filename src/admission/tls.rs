//! Keeps the webhook server's certificate current and publishes the CA bundle the
//! admission configurations must carry, from the Secret every replica shares (see
//! [`super::certs`]) or from files a cert-manager Certificate mounts.

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use k8s_openapi::{api::core::v1::Secret, apimachinery::pkg::apis::meta::v1::ObjectMeta};
use kube::{
    Api, Client,
    api::PostParams,
    runtime::{WatchStreamExt, watcher},
};
use tokio::sync::watch;

use super::{
    WebhookOptions,
    certs::{self, Bundle, Plan},
    server::SwappableCert,
};
use crate::names::{FIELD_MANAGER, MANAGED_BY_LABEL};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Certs(#[from] certs::Error),
    #[error("the webhook Secret {namespace}/{name}: {source}")]
    Kube {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// The live TLS material: the certificate the server presents, and the CA bundle.
#[derive(Clone)]
pub struct Tls {
    pub cert: Arc<SwappableCert>,
    pub ca_bundle: watch::Receiver<Vec<u8>>,
}

/// How often the shared material is re-planned even without a change (renewal).
const RECHECK: Duration = Duration::from_secs(3600);

/// Loads (creating or renewing when due) the TLS material and keeps it current in the
/// background.
pub async fn start(client: Client, options: &WebhookOptions) -> Result<Tls, Error> {
    match &options.tls_dir {
        Some(dir) => {
            let bundle = certs::read_dir(dir)?;
            let cert = Arc::new(SwappableCert::new(&bundle)?);
            let (tx, rx) = watch::channel(bundle.ca_pem.clone().into_bytes());
            tokio::spawn(reread_files(dir.clone(), cert.clone(), tx, bundle));
            Ok(Tls {
                cert,
                ca_bundle: rx,
            })
        }
        None => {
            let shared = Shared {
                api: Api::namespaced(client, &options.namespace),
                namespace: options.namespace.clone(),
                name: options.secret.clone(),
                hosts: options.hosts.clone(),
            };
            let bundle = shared.ensure().await?;
            let cert = Arc::new(SwappableCert::new(&bundle)?);
            let (tx, rx) = watch::channel(bundle.ca_pem.clone().into_bytes());
            tokio::spawn(shared.follow(cert.clone(), tx, bundle));
            Ok(Tls {
                cert,
                ca_bundle: rx,
            })
        }
    }
}

/// cert-manager renews the files in place; re-read them every minute.
async fn reread_files(
    dir: std::path::PathBuf,
    cert: Arc<SwappableCert>,
    ca_bundle: watch::Sender<Vec<u8>>,
    mut current: Bundle,
) {
    loop {
        tokio::time::sleep(Duration::from_secs(60)).await;
        match certs::read_dir(&dir) {
            Ok(next) if next != current => {
                // Trust first, then serve: the new CA reaches the configurations before
                // the new certificate is presented.
                let _ = ca_bundle.send(next.ca_pem.clone().into_bytes());
                tokio::time::sleep(Duration::from_secs(5)).await;
                match cert.replace(&next) {
                    Ok(()) => {
                        tracing::info!("webhook certificate reloaded from files");
                        current = next;
                    }
                    Err(error) => {
                        tracing::warn!(%error, "could not load the renewed webhook certificate")
                    }
                }
            }
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(%error, "could not re-read the webhook certificate; keeping the current one")
            }
        }
    }
}

struct Shared {
    api: Api<Secret>,
    namespace: String,
    name: String,
    hosts: Vec<String>,
}

impl Shared {
    fn error(&self, source: kube::Error) -> Error {
        Error::Kube {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            source,
        }
    }

    /// Reads the Secret, writes what [`certs::plan`] asks for, and returns what to serve.
    /// A write that loses a race with another replica (AlreadyExists, Conflict) reads
    /// again and serves the winner's.
    async fn ensure(&self) -> Result<Bundle, Error> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let existing = self
                .api
                .get_opt(&self.name)
                .await
                .map_err(|e| self.error(e))?;
            let stored = match existing.as_ref().map(certs::from_secret) {
                Some(Ok(stored)) => Some(stored),
                Some(Err(error)) => {
                    tracing::warn!(%error, "the webhook Secret is unusable; replacing it");
                    None
                }
                None => None,
            };
            let plan = certs::plan(stored.as_ref(), &self.hosts, jiff::Timestamp::now())?;
            let next = match (plan, stored) {
                (Plan::Write(next), _) => next,
                (Plan::Keep, Some(stored)) => return Ok(stored.bundle()),
                // plan() always writes when nothing is stored; say so rather than panic.
                (Plan::Keep, None) => {
                    return Err(certs::Error::Incomplete(
                        self.name.clone(),
                        "nothing to keep".into(),
                    )
                    .into());
                }
            };
            let metadata = ObjectMeta {
                name: Some(self.name.clone()),
                namespace: Some(self.namespace.clone()),
                labels: Some([(MANAGED_BY_LABEL.to_string(), FIELD_MANAGER.to_string())].into()),
                resource_version: existing
                    .as_ref()
                    .and_then(|s| s.metadata.resource_version.clone()),
                annotations: existing
                    .as_ref()
                    .and_then(|s| s.metadata.annotations.clone()),
                ..ObjectMeta::default()
            };
            let secret = certs::to_secret(&next, metadata);
            let written = match existing {
                None => self.api.create(&PostParams::default(), &secret).await,
                Some(_) => {
                    self.api
                        .replace(&self.name, &PostParams::default(), &secret)
                        .await
                }
            };
            match written {
                Ok(_) => {
                    tracing::info!(secret = %self.name, hosts = ?next.hosts, "webhook certificate written");
                    return Ok(next.bundle());
                }
                Err(kube::Error::Api(status)) if (status.code == 409) && attempts < 5 => {
                    tracing::debug!("another replica wrote the webhook Secret first; reading it");
                }
                Err(error) => return Err(self.error(error)),
            }
        }
    }

    /// Follows the Secret: reloads when any replica changes it, and renews when due.
    async fn follow(
        self,
        cert: Arc<SwappableCert>,
        ca_bundle: watch::Sender<Vec<u8>>,
        mut current: Bundle,
    ) {
        let config = watcher::Config::default().fields(&format!("metadata.name={}", self.name));
        let mut changes = std::pin::pin!(
            watcher(self.api.clone(), config)
                .default_backoff()
                .applied_objects()
        );
        let mut recheck = tokio::time::interval(RECHECK);
        recheck.tick().await;
        loop {
            tokio::select! {
                change = changes.next() => match change {
                    Some(Ok(_)) => {}
                    Some(Err(error)) => {
                        tracing::debug!(%error, "watch of the webhook Secret failed; retrying");
                        continue;
                    }
                    None => return,
                },
                _ = recheck.tick() => {}
            }
            // Also recreates a deleted Secret and renews what is due.
            let next = match self.ensure().await {
                Ok(next) => next,
                Err(error) => {
                    tracing::warn!(%error, "could not refresh the webhook certificate; serving the current one");
                    continue;
                }
            };
            if next == current {
                continue;
            }
            if next.ca_pem != current.ca_pem {
                let _ = ca_bundle.send(next.ca_pem.clone().into_bytes());
            }
            match cert.replace(&next) {
                Ok(()) => {
                    tracing::info!("webhook certificate reloaded from the shared Secret");
                    current = next;
                }
                Err(error) => tracing::warn!(%error, "could not load the webhook certificate"),
            }
        }
    }
}
