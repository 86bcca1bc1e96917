//! Reconcilers, one per concern. Each builds what it wants with pure functions and
//! then applies it; errors carry a category for metrics and Events.

pub mod residency;
pub mod sites;

use std::{sync::Arc, time::Instant};

use kube::{
    Resource,
    core::DeserializeGuard,
    runtime::{
        controller::Action,
        events::{Event, EventType},
    },
};

use tokio::sync::watch;

use crate::context::Context;

/// Runs every controller while this replica leads, until shutdown: a term starts when
/// `leading` turns true and ends, each controller finishing the reconcile in hand, when
/// it turns false or shutdown is asked for. Each term starts from fresh memory, as a
/// new leader's would.
pub async fn lead(ctx: Arc<Context>, mut leading: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            leads = async { leading.wait_for(|leads| *leads).await.is_ok() } => if !leads { return },
            () = crate::shutdown::signalled() => return,
        }
        ctx.metrics.leader.set(1);
        tracing::info!("leading: controllers started");
        tokio::join!(
            sites::run(ctx.client.clone(), ctx.clone(), term_end(leading.clone())),
            residency::run(ctx.clone(), term_end(leading.clone()))
        );
        ctx.metrics.leader.set(0);
        tracing::info!("controllers stopped");
        if crate::shutdown::requested() {
            return;
        }
    }
}

/// Resolves when a term ends: leadership lost (or the election gone), or shutdown.
async fn term_end(mut leading: watch::Receiver<bool>) {
    tokio::select! {
        _ = async { leading.wait_for(|leads| !*leads).await.is_ok() } => {}
        () = crate::shutdown::signalled() => {}
    }
}

/// What can go wrong in a reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server refused or could not be reached; retried with backoff.
    #[error("Kubernetes API call failed: {0}")]
    Kube(#[source] kube::Error),
    /// An object in the cluster does not parse as its kind; waits for a change.
    #[error("{kind} {name} cannot be read: {reason}")]
    InvalidObject {
        kind: String,
        name: String,
        reason: String,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The label used in metrics and the Event reason.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Kube(_) => "KubeApiError",
            Error::InvalidObject { .. } => "InvalidObject",
        }
    }

    /// Only API failures are worth retrying before the object changes.
    fn is_transient(&self) -> bool {
        matches!(self, Error::Kube(_))
    }
}

impl From<kube::Error> for Error {
    fn from(error: kube::Error) -> Self {
        Error::Kube(error)
    }
}

/// How often a healthy object is reconciled even without a change, to repair drift
/// that no watch reported.
pub const RESYNC: std::time::Duration = std::time::Duration::from_secs(300);

/// The shared error policy: transient errors retry with per-object exponential backoff,
/// errors in the object itself wait for it to change.
pub fn error_policy<K: Resource<DynamicType = ()>>(
    controller: &'static str,
    obj: &K,
    error: &Error,
    ctx: &Context,
) -> Action {
    ctx.metrics.reconcile.failed(controller, error.category());
    if error.is_transient() {
        let delay = ctx.backoff(&backoff_key(obj));
        tracing::warn!(controller, object = %obj.object_ref(&()).name.unwrap_or_default(), %error, ?delay, "reconcile failed; retrying");
        Action::requeue(delay)
    } else {
        tracing::warn!(controller, object = %obj.object_ref(&()).name.unwrap_or_default(), %error, "reconcile failed; waiting for a change");
        Action::await_change()
    }
}

/// Runs one reconcile with timing, metrics, and an Event for a failure, and resets the
/// object's backoff when it succeeds.
pub async fn instrumented<K, F>(
    controller: &'static str,
    obj: &K,
    ctx: &Arc<Context>,
    work: F,
) -> Result<Action>
where
    K: Resource<DynamicType = ()>,
    F: Future<Output = Result<Action>>,
{
    let started = Instant::now();
    let result = work.await;
    ctx.metrics.reconcile.observe(controller, started.elapsed());
    let reference = obj.object_ref(&());
    match &result {
        Ok(action) => {
            ctx.succeeded(&backoff_key(obj));
            tracing::debug!(controller, object = %obj.meta().name.clone().unwrap_or_default(), ?action, "reconciled");
        }
        Err(error) => {
            publish(
                ctx,
                &reference,
                EventType::Warning,
                error.category(),
                "Reconcile",
                error.to_string(),
            )
            .await
        }
    }
    result
}

/// The object a watch delivered, or — when it does not parse as its kind (version skew,
/// a hand-edited object) — a Warning Event on it and an error that waits for a change.
/// Bad objects never panic the controller or stall the others.
pub async fn unguard<'a, K>(guard: &'a DeserializeGuard<K>, ctx: &Context) -> Result<&'a K>
where
    K: Resource<DynamicType = ()>,
{
    match &guard.0 {
        Ok(object) => Ok(object),
        Err(invalid) => {
            let error = Error::InvalidObject {
                kind: K::kind(&()).into_owned(),
                name: invalid.metadata.name.clone().unwrap_or_default(),
                reason: invalid.error.clone(),
            };
            publish(
                ctx,
                &guard.object_ref(&()),
                EventType::Warning,
                error.category(),
                "Reconcile",
                error.to_string(),
            )
            .await;
            Err(error)
        }
    }
}

/// Publishes an Event, logging (not failing) when the API refuses it: an Event is a
/// report, and losing one must not stop the work it reports on.
pub async fn publish(
    ctx: &Context,
    reference: &k8s_openapi::api::core::v1::ObjectReference,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    publish_related(ctx, reference, None, type_, reason, action, note).await;
}

/// [`publish`] with a related object. Events that differ only in their note are merged
/// into one series (as client-go does), so findings about different objects name them
/// as related to keep one Event each.
pub async fn publish_related(
    ctx: &Context,
    reference: &k8s_openapi::api::core::v1::ObjectReference,
    related: Option<k8s_openapi::api::core::v1::ObjectReference>,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(crate::names::truncate(note, crate::names::MAX_EVENT_NOTE)),
        action: action.into(),
        secondary: related,
    };
    if let Err(error) = ctx.recorder.publish(&event, reference).await {
        tracing::warn!(%error, reason, "could not publish Event");
    }
}

/// Identifies an object in the backoff table.
fn backoff_key<K: Resource<DynamicType = ()>>(obj: &K) -> String {
    let meta = obj.meta();
    format!(
        "{}/{}/{}",
        K::kind(&()),
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default()
    )
}
