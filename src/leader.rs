//! Leader election on a `coordination.k8s.io` Lease.
//!
//! Every replica serves admission, metrics and probes; one replica, the leader, runs the
//! controllers: status, migration, the fence and the writing of admission objects. Two
//! replicas evicting at once would each stay within `maxConcurrent` and together break
//! it, and two writers of one object fight.
//!
//! The lease itself is kept by `kube-lease-manager` (acquire, renew before expiry,
//! release on shutdown). On top of it this module holds one rule of its own: a replica
//! leads only while the Lease, as it last saw it, names it as holder with a renewal that
//! has not expired. The manager reports losing the lease when it sees someone else hold
//! it; a replica cut off from the API server sees nothing, and must still step down
//! before another replica may take over, i.e. before its own last renewal expires.

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::{
    Api, Client,
    runtime::{WatchStreamExt, watcher},
};
use kube_lease_manager::LeaseManagerBuilder;
use tokio::sync::watch;

/// How the election is run.
#[derive(Clone, Debug)]
pub struct Settings {
    pub namespace: String,
    pub lease_name: String,
    /// Unique per process: the pod name in a cluster.
    pub identity: String,
    /// How long a lease holds without renewal; another replica takes over after it.
    pub duration: Duration,
    /// How long before expiry the holder renews.
    pub renew_before: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("leader election on Lease {namespace}/{name}: {source}")]
    Lease {
        namespace: String,
        name: String,
        #[source]
        source: kube_lease_manager::LeaseManagerError,
    },
    #[error("--lease-duration must be at least 2 s more than --lease-renew-before")]
    Durations,
}

/// A running election: whether this replica leads now, and the task that keeps the
/// lease. [`Election::release`] gives the lease up (at shutdown).
pub struct Election {
    leading: watch::Receiver<bool>,
    /// Dropping the manager's receiver makes its task release the lease and end.
    manager: Option<(
        watch::Receiver<bool>,
        tokio::task::JoinHandle<kube_lease_manager::Result<kube_lease_manager::LeaseManager>>,
    )>,
    judge: tokio::task::JoinHandle<()>,
}

impl Election {
    /// Whether this replica leads, now and as it changes.
    pub fn leading(&self) -> watch::Receiver<bool> {
        self.leading.clone()
    }

    /// Gives the lease up so that another replica takes over at once rather than after
    /// the lease expires. Bounded by the caller.
    pub async fn release(mut self) {
        self.judge.abort();
        if let Some((receiver, task)) = self.manager.take() {
            drop(receiver);
            match task.await {
                Ok(Ok(_)) => tracing::info!("leader lease released"),
                Ok(Err(error)) => tracing::warn!(%error, "could not release the leader lease"),
                Err(_) => {}
            }
        }
    }
}

/// Starts the election.
pub async fn start(client: Client, settings: Settings) -> Result<Election, Error> {
    if settings.duration < settings.renew_before + Duration::from_secs(2) {
        return Err(Error::Durations);
    }
    let lease_error = |source| Error::Lease {
        namespace: settings.namespace.clone(),
        name: settings.lease_name.clone(),
        source,
    };
    let manager = LeaseManagerBuilder::new(client.clone(), &settings.lease_name)
        .with_namespace(&settings.namespace)
        .with_identity(&settings.identity)
        .with_duration(settings.duration.as_secs())
        .with_grace(settings.renew_before.as_secs())
        .with_field_manager(format!("enclave-operator-{}", settings.identity))
        .build()
        .await
        .map_err(lease_error)?;
    let (held, task) = manager.watch().await;
    let (tx, leading) = watch::channel(false);
    let judge = tokio::spawn(judge(client, settings, held.clone(), tx));
    Ok(Election {
        leading,
        manager: Some((held, task)),
        judge,
    })
}

/// The rule of the module docs: lead while the manager holds the lease and the Lease as
/// last seen names this replica with an unexpired renewal.
async fn judge(
    client: Client,
    settings: Settings,
    mut held: watch::Receiver<bool>,
    leading: watch::Sender<bool>,
) {
    let api: Api<Lease> = Api::namespaced(client, &settings.namespace);
    let config =
        watcher::Config::default().fields(&format!("metadata.name={}", settings.lease_name));
    let mut leases = std::pin::pin!(watcher(api, config).default_backoff().applied_objects());
    // Until when the Lease, as last seen, is ours.
    let mut ours_until: Option<std::time::Instant> = None;
    loop {
        let holds = *held.borrow() && ours_until.is_some_and(|t| t > std::time::Instant::now());
        leading.send_if_modified(|now| {
            if *now != holds {
                *now = holds;
                tracing::info!(identity = %settings.identity, leading = holds, "leadership changed");
                true
            } else {
                false
            }
        });
        let expiry = async {
            match ours_until {
                Some(t) if holds => tokio::time::sleep_until(t.into()).await,
                _ => std::future::pending().await,
            }
        };
        tokio::select! {
            changed = held.changed() => if changed.is_err() { break },
            lease = leases.next() => match lease {
                Some(Ok(lease)) => ours_until = valid_until(&lease, &settings.identity),
                Some(Err(error)) => tracing::debug!(%error, "watching the leader Lease"),
                None => break,
            },
            () = expiry => {}
        }
    }
    leading.send_replace(false);
}

/// Until when a Lease is held by `identity`, on this process's clock: its renewal plus
/// its duration, or `None` when someone else holds it (or it says nothing usable).
fn valid_until(lease: &Lease, identity: &str) -> Option<std::time::Instant> {
    let spec = lease.spec.as_ref()?;
    if spec.holder_identity.as_deref() != Some(identity) {
        return None;
    }
    let renewed = spec.renew_time.as_ref().or(spec.acquire_time.as_ref())?;
    let duration = Duration::from_secs(u64::try_from(spec.lease_duration_seconds?).ok()?);
    let expires = renewed
        .0
        .checked_add(jiff::SignedDuration::try_from(duration).ok()?)
        .ok()?;
    let left = jiff::Timestamp::now().duration_until(expires);
    let left = Duration::try_from(left).unwrap_or(Duration::ZERO);
    Some(std::time::Instant::now() + left)
}

/// The identity of this process: the pod's name in a cluster; elsewhere host and pid,
/// so that two processes on one machine are two candidates.
pub fn default_identity() -> String {
    std::env::var("POD_NAME").unwrap_or_else(|_| {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "enclave-operator".into());
        format!("{host}-{}", std::process::id())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

    fn lease(holder: &str, renewed_secs_ago: i64, duration: i32) -> Lease {
        let renewed = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(renewed_secs_ago);
        Lease {
            spec: Some(LeaseSpec {
                holder_identity: Some(holder.into()),
                renew_time: Some(MicroTime(renewed)),
                lease_duration_seconds: Some(duration),
                ..LeaseSpec::default()
            }),
            ..Lease::default()
        }
    }

    #[test]
    fn a_lease_is_ours_until_its_renewal_expires() {
        let now = std::time::Instant::now();
        let until = valid_until(&lease("me", 5, 15), "me").expect("ours");
        let left = until.duration_since(now);
        assert!(
            left > Duration::from_secs(9) && left <= Duration::from_millis(10_100),
            "{left:?}"
        );
        // Expired: ours in name only.
        let until = valid_until(&lease("me", 20, 15), "me").expect("named");
        assert!(until <= std::time::Instant::now());
        // Someone else's.
        assert!(valid_until(&lease("other", 0, 15), "me").is_none());
        assert!(valid_until(&Lease::default(), "me").is_none());
    }
}
