//! One shutdown signal for the whole process: SIGTERM or SIGINT trigger it, and every
//! task that must stop (controllers, servers, the leader lease) awaits [`signalled`], so
//! that the process ends promptly whatever it is doing — starting, syncing, migrating.

use std::sync::OnceLock;

use tokio::sync::watch;

fn sender() -> &'static watch::Sender<bool> {
    static SHUTDOWN: OnceLock<watch::Sender<bool>> = OnceLock::new();
    SHUTDOWN.get_or_init(|| watch::channel(false).0)
}

/// Asks every task to stop.
pub fn trigger() {
    sender().send_replace(true);
}

/// Has shutdown been asked for?
pub fn requested() -> bool {
    *sender().borrow()
}

/// Resolves once shutdown is asked for (at once if it already was).
pub async fn signalled() {
    let mut rx = sender().subscribe();
    let _ = rx.wait_for(|stop| *stop).await;
}

/// Waits for SIGTERM or SIGINT, then triggers shutdown.
pub async fn listen() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    tracing::info!("shutdown requested");
    trigger();
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn waiters_started_before_or_after_the_trigger_all_resolve() {
        let early = tokio::spawn(super::signalled());
        super::trigger();
        assert!(super::requested());
        tokio::time::timeout(std::time::Duration::from_secs(1), early)
            .await
            .expect("resolves")
            .expect("joins");
        tokio::time::timeout(std::time::Duration::from_secs(1), super::signalled())
            .await
            .expect("resolves at once");
    }
}
