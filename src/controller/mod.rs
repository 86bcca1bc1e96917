//! Reconcilers, one per concern. Each builds what it wants with pure functions and
//! then applies it; errors carry a category for metrics and Events.

pub mod grants;
pub mod residency;
pub mod sites;
pub mod volume_move;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use futures::{
    FutureExt,
    future::{BoxFuture, Shared},
};
use kube::{
    Resource,
    core::DeserializeGuard,
    runtime::{
        controller::Action,
        events::{Event, EventType},
        reflector::Store,
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
        let term = Term::new(term_end(leading.clone()));
        tokio::join!(
            term.bounded(sites::run(ctx.client.clone(), ctx.clone(), term.clone())),
            term.bounded(residency::run(ctx.clone(), term.clone())),
            term.bounded(crate::authz::probe::run(ctx.clone(), term.clone())),
            term.bounded(crate::controller::grants::run(ctx.clone(), term.clone())),
            term.bounded(volume_move::run(ctx.clone(), term.clone()))
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

/// How long the controllers may take to wind down once a term ended: the reconcile in
/// hand finishes (an eviction call is bounded at 10 s), and what is still running after
/// this is dropped, so that a replica that no longer leads stops acting.
const WIND_DOWN: Duration = Duration::from_secs(15);

/// The end of one term of leadership, as the controllers of that term see it.
#[derive(Clone)]
pub struct Term(Shared<BoxFuture<'static, ()>>);

impl Term {
    pub fn new(end: impl Future<Output = ()> + Send + 'static) -> Self {
        Self(end.boxed().shared())
    }

    /// Resolves when the term ends.
    pub fn end(&self) -> Shared<BoxFuture<'static, ()>> {
        self.0.clone()
    }

    /// Has the term ended (as far as anyone waiting on it has seen)? A reconcile that
    /// would start after the end does nothing: this replica no longer leads.
    pub fn ended(&self) -> bool {
        self.0.peek().is_some()
    }

    /// The trigger for a controller's graceful shutdown: the term's end, but not before
    /// the controller's own store has synced. kube-runtime holds a controller's runner
    /// until that store is ready, and a graceful shutdown cuts the stream that feeds
    /// it; a term that ended in the first milliseconds (two replicas starting at once,
    /// a lease taken and lost at once) left a runner waiting for ever, and the replica
    /// never led again.
    pub fn graceful_shutdown<K>(
        &self,
        store: Store<K>,
    ) -> impl Future<Output = ()> + Send + Sync + 'static
    where
        K: Resource + Clone + Send + Sync + 'static,
        K::DynamicType: Eq + std::hash::Hash + Clone + Send + Sync,
    {
        let end = self.end();
        async move {
            end.await;
            let _ = store.wait_until_ready().await;
        }
    }

    /// `reconcile`, except that one which would start after the term ended does
    /// nothing: this replica no longer leads.
    pub fn guard<K, S, F, Fut>(
        &self,
        reconcile: F,
    ) -> impl FnMut(Arc<K>, Arc<S>) -> BoxFuture<'static, Result<Action>> + use<K, S, F, Fut>
    where
        K: Send + Sync + 'static,
        S: Send + Sync + 'static,
        F: Fn(Arc<K>, Arc<S>) -> Fut + Clone + Send + 'static,
        Fut: Future<Output = Result<Action>> + Send + 'static,
    {
        let term = self.clone();
        move |object, state| {
            if term.ended() {
                return futures::future::ready(Ok(Action::await_change())).boxed();
            }
            reconcile(object, state).boxed()
        }
    }

    /// Runs `work` until it finishes, or until [`WIND_DOWN`] after the term's end.
    pub async fn bounded(&self, work: impl Future<Output = ()>) {
        self.bounded_by(work, WIND_DOWN).await;
    }

    async fn bounded_by(&self, work: impl Future<Output = ()>, grace: Duration) {
        let deadline = async {
            self.end().await;
            tokio::time::sleep(grace).await;
        };
        tokio::select! {
            () = work => {}
            () = deadline => tracing::warn!(
                "a controller was still winding down {grace:?} after the term ended; stopped"
            ),
        }
    }
}

/// Passes on change notices at most once per `window`: the first notice after a quiet
/// spell comes out `window` later, standing for every notice that arrived meanwhile.
///
/// This replaces kube's `debounce`, which postpones a reconcile for as long as notices
/// keep coming less than the debounce apart: a steady flow of pod changes (a migration
/// of thousands of pods, or churn anywhere in a large cluster) held the residency pass
/// back until a quiet moment, and a 10,000-pod migration moved in ~10 s steps. Here a
/// flow of changes runs the pass at least once per `window`.
pub fn coalesce(
    changes: impl futures::Stream<Item = ()> + Send + 'static,
    window: Duration,
) -> impl futures::Stream<Item = ()> + Send + 'static {
    use futures::StreamExt;
    futures::stream::unfold(changes.boxed().fuse(), move |mut changes| async move {
        changes.next().await?;
        let quiet = tokio::time::sleep(window);
        tokio::pin!(quiet);
        loop {
            tokio::select! {
                () = &mut quiet => return Some(((), changes)),
                more = changes.next() => if more.is_none() { return Some(((), changes)) },
            }
        }
    })
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

/// Publishes an Event that will not repeat (one per pod evicted: the pod is gone after
/// it), straight to the API and not through kube's recorder. The recorder keeps every
/// Event it sent for six minutes to merge repeats, and sweeps that whole cache on every
/// publish: across a 10,000-pod migration that was 10,000 Events held and a sweep
/// growing with each one, for repeats that never come. Logs, not fails, when refused.
pub async fn publish_once(
    ctx: &Context,
    reference: &k8s_openapi::api::core::v1::ObjectReference,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    use k8s_openapi::{
        api::events::v1::Event as K8sEvent,
        apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    };
    let now = k8s_openapi::jiff::Timestamp::now();
    let namespace = reference
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let event = K8sEvent {
        action: Some(action.into()),
        reason: Some(reason.into()),
        event_time: Some(MicroTime(now)),
        regarding: Some(reference.clone()),
        note: Some(crate::names::truncate(note, crate::names::MAX_EVENT_NOTE)),
        metadata: ObjectMeta {
            namespace: Some(namespace.clone()),
            name: Some(format!(
                "{}.{:x}",
                reference.name.as_deref().unwrap_or("enclave-operator"),
                now.as_nanosecond()
            )),
            ..ObjectMeta::default()
        },
        reporting_controller: Some(ctx.reporter.controller.clone()),
        reporting_instance: Some(
            ctx.reporter
                .instance
                .clone()
                .unwrap_or_else(|| ctx.reporter.controller.clone()),
        ),
        type_: Some(
            match type_ {
                EventType::Normal => "Normal",
                EventType::Warning => "Warning",
            }
            .into(),
        ),
        ..K8sEvent::default()
    };
    let events: kube::Api<K8sEvent> = kube::Api::namespaced(ctx.client.clone(), &namespace);
    if let Err(error) = events
        .create(&kube::api::PostParams::default(), &event)
        .await
    {
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

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http;
    use futures::StreamExt;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::{Api, runtime::Controller};

    /// An API server whose lists answer after `delay` and whose watches never do: the
    /// controller's store syncs only after the term ended, which a real server will not
    /// do on demand (it is the 20 ms lease flap of two replicas starting at once).
    fn slow_list_client(delay: Duration) -> kube::Client {
        let service = tower::service_fn(
            move |request: http::Request<kube::client::Body>| async move {
                if request
                    .uri()
                    .query()
                    .unwrap_or_default()
                    .contains("watch=true")
                {
                    futures::future::pending::<()>().await;
                }
                tokio::time::sleep(delay).await;
                let list = serde_json::json!({
                    "apiVersion": "v1", "kind": "ConfigMapList",
                    "metadata": {"resourceVersion": "1"}, "items": []
                });
                Ok::<_, std::convert::Infallible>(http::Response::new(kube::client::Body::from(
                    serde_json::to_vec(&list).expect("serialises"),
                )))
            },
        );
        kube::Client::new(service, "default")
    }

    #[tokio::test]
    async fn a_term_that_ends_before_the_controller_synced_still_ends_the_controller() {
        let term = Term::new(async {}); // over before the controller started
        let controller = Controller::new(
            Api::<ConfigMap>::all(slow_list_client(Duration::from_millis(100))),
            kube::runtime::watcher::Config::default(),
        );
        let graceful = term.graceful_shutdown(controller.store());
        let reconciles = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let run = controller
            .graceful_shutdown_on(graceful)
            .run(
                term.guard({
                    let reconciles = reconciles.clone();
                    move |_: Arc<ConfigMap>, _: Arc<()>| {
                        reconciles.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        async { Ok(Action::await_change()) }
                    }
                }),
                |_, _, _| Action::await_change(),
                Arc::new(()),
            )
            .for_each(|_| async {});
        tokio::time::timeout(Duration::from_secs(5), run)
            .await
            .expect("the controller ends once its store has synced, not never");
        assert!(term.ended());
        assert_eq!(
            reconciles.load(std::sync::atomic::Ordering::SeqCst),
            0,
            "nothing is reconciled after the term ended"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_steady_flow_of_changes_is_passed_on_once_per_window_not_held_back() {
        let window = Duration::from_millis(300);
        // A notice every 100 ms for 3 s: kube's debounce would hold the reconcile for
        // the whole 3 s; coalescing passes one on every 300 ms.
        let flow = futures::stream::iter(0..30).then(|_| async {
            tokio::time::sleep(Duration::from_millis(100)).await;
        });
        let started = tokio::time::Instant::now();
        let passed: Vec<Duration> = coalesce(flow, window)
            .map(|()| started.elapsed())
            .collect()
            .await;
        // One per window, give or take a notice that falls on the window's last instant.
        assert!(
            (7..=11).contains(&passed.len()),
            "30 notices over 3 s give one per window: {passed:?}"
        );
        assert!(passed[0] <= Duration::from_millis(400), "{passed:?}");
        for pair in passed.windows(2) {
            assert!(
                pair[1] - pair[0] <= Duration::from_millis(400),
                "{passed:?}"
            );
        }
        // A burst is one notice.
        let burst = futures::stream::iter([(); 50]);
        assert_eq!(coalesce(burst, window).count().await, 1);
    }

    #[tokio::test]
    async fn a_controller_that_will_not_wind_down_is_stopped_after_the_grace() {
        let grace = Duration::from_millis(50);
        let running = Term::new(futures::future::pending());
        let kept = tokio::time::timeout(
            Duration::from_millis(200),
            running.bounded_by(futures::future::pending(), grace),
        )
        .await;
        assert!(kept.is_err(), "a term that goes on keeps its controllers");
        let over = Term::new(async {});
        tokio::time::timeout(
            Duration::from_secs(5),
            over.bounded_by(futures::future::pending(), grace),
        )
        .await
        .expect("work that never ends is dropped after the grace");
    }
}
