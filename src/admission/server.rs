//! The webhook server: HTTPS (rustls) with one route per admission entry, hardened
//! against slow and idle clients so that webhook load can never starve the process.
//!
//! - **Connections** are capped ([`Limits::max_connections`]); past the cap a new
//!   connection is closed at once instead of queueing, and the process's file limit is
//!   raised at start, so the kube client's watches and the probes keep their sockets.
//! - **Timeouts**: the TLS handshake; the idle time between requests (longer than the
//!   API server's own 90 s idle timeout, so that it closes first and never sends on a
//!   connection we are closing); and one request, from its first byte to our first
//!   response byte (header or body dripping ends there). hyper's own header timer also
//!   runs while a keep-alive connection idles, so it cannot tell idle from dripping:
//!   [`Guarded`] wraps the connection and keeps the two apart.
//! - **Bodies** up to [`Limits::max_body`] (the API server's request limit is 3 MiB, and
//!   a review of an UPDATE carries the object twice), and at most
//!   [`Limits::max_inflight_bytes`] of bodies read at once, so memory stays bounded
//!   whatever the clients send.

use std::{
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, RwLock},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::{DefaultBodyLimit, Request, State},
    http::{StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::post,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::metrics::counter::Counter;
use rustls::{
    ServerConfig,
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpListener,
    sync::Semaphore,
    time::Sleep,
};

use super::{ENTRIES, Entry, certs, review};
pub use crate::metrics::AdmissionMetrics;
use crate::{
    decisions::{self, Kind, Record, Sink},
    metrics::{ClosedLabels, ReviewLabels},
    scope::Catalog,
};

/// Resource limits of the webhook server.
#[derive(Clone, Debug)]
pub struct Limits {
    pub max_connections: usize,
    pub handshake_timeout: Duration,
    pub idle_timeout: Duration,
    pub request_timeout: Duration,
    pub max_body: usize,
    pub max_inflight_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 512,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            request_timeout: Duration::from_secs(10),
            max_body: 7 * 1024 * 1024,
            max_inflight_bytes: 64 * 1024 * 1024,
        }
    }
}

/// What the handlers share.
pub struct AdmissionState<C> {
    pub catalog: C,
    pub metrics: AdmissionMetrics,
    /// Where placements, denials and Audit findings are recorded.
    pub sink: Option<Sink>,
    /// The authorizer's state (its node index).
    pub authz: crate::authz::review::AuthzState,
    /// Counts denied access attempts per subject (anomalies, lockouts).
    pub observer: Arc<crate::controller::grants::Observer>,
    /// Bytes of request bodies being read or decided at once.
    body_budget: Arc<Semaphore>,
    limits: Limits,
}

impl<C> AdmissionState<C> {
    pub fn new(catalog: C, metrics: AdmissionMetrics, sink: Option<Sink>, limits: Limits) -> Self {
        Self {
            catalog,
            metrics,
            sink,
            authz: crate::authz::review::AuthzState::default(),
            observer: Arc::default(),
            body_budget: Arc::new(Semaphore::new(limits.max_inflight_bytes)),
            limits,
        }
    }
}

/// The routes, one per entry of the admission table.
pub fn router<C: Catalog + Send + Sync + 'static>(state: Arc<AdmissionState<C>>) -> Router {
    let mut router = Router::new();
    for entry in ENTRIES {
        router = router.route(
            &entry.path(),
            post(move |state: State<Arc<AdmissionState<C>>>, body: Bytes| {
                handle(state, entry, body)
            }),
        );
    }
    // The SubjectAccessReview webhook the API server's authorization configuration
    // points at (see crate::authz).
    router = router.route(crate::authz::PATH, post(crate::authz::review::handle::<C>));
    let max_body = state.limits.max_body;
    router
        .layer(middleware::from_fn_with_state(state.clone(), budget::<C>))
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}

/// Refuses bodies over the limit before reading them, and holds a share of the
/// in-flight byte budget while one is read and decided.
async fn budget<C: Send + Sync + 'static>(
    State(state): State<Arc<AdmissionState<C>>>,
    request: Request,
    next: Next,
) -> Response {
    let max = state.limits.max_body;
    let length = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if length.is_some_and(|l| l > max) {
        return (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("admission reviews are limited to {max} bytes"),
        )
            .into_response();
    }
    let weight = length
        .unwrap_or(max)
        .clamp(1, state.limits.max_inflight_bytes);
    let Ok(_permit) = state
        .body_budget
        .clone()
        .acquire_many_owned(u32::try_from(weight).unwrap_or(u32::MAX))
        .await
    else {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    };
    next.run(request).await
}

/// Decodes, decides, records and answers one review.
async fn handle<C: Catalog>(
    State(state): State<Arc<AdmissionState<C>>>,
    entry: &'static Entry,
    body: Bytes,
) -> Response {
    let started = Instant::now();
    let (out, verdict) = match serde_json::from_slice::<review::ReviewIn>(&body) {
        Ok(review::ReviewIn {
            request: Some(request),
        }) => {
            let answer = review::decide(entry.handler, &state.catalog, &request);
            let verdict = answer.decision.label();
            if entry.handler == super::Handler::GateAccess {
                if let Some(enclave) = &answer.decision.refused_by
                    && !request.dry_run
                {
                    state.observer.denied(
                        &state.catalog,
                        &state.metrics,
                        enclave,
                        &request.user_info.username,
                        &request.user_info.groups,
                        &request.name,
                        jiff::Timestamp::now(),
                    );
                }
                record_access(
                    &state.metrics,
                    state.sink.as_ref(),
                    &request,
                    &answer.decision,
                );
            } else if !request.dry_run
                && let Some(sink) = &state.sink
            {
                record(sink, entry, &request, &answer.decision);
            }
            if let review::ReviewOut {
                response:
                    review::Response {
                        allowed: false,
                        status: Some(status),
                        ..
                    },
                ..
            } = &answer.review
            {
                tracing::info!(webhook = entry.name, message = %status.message, "admission denied");
            }
            (answer.review, verdict)
        }
        Ok(review::ReviewIn { request: None }) => (
            review::ReviewOut::refuse("", "an AdmissionReview without a request"),
            "invalid",
        ),
        Err(error) => (
            review::ReviewOut::refuse("", format!("the AdmissionReview does not parse: {error}")),
            "invalid",
        ),
    };
    answer(&state.metrics, entry.name, verdict, started, &out)
}

/// The HTTP answer to a review, admission's or the authorizer's: the review counted by
/// webhook and verdict, its duration observed, and the body as JSON (a 500 only if
/// it cannot be serialized, which the types never allow).
pub(crate) fn answer(
    metrics: &AdmissionMetrics,
    webhook: &'static str,
    verdict: &'static str,
    started: Instant,
    out: &impl serde::Serialize,
) -> Response {
    metrics.duration.observe(started.elapsed().as_secs_f64());
    metrics
        .reviews
        .get_or_create(&ReviewLabels { webhook, verdict })
        .inc();
    match serde_json::to_vec(out) {
        Ok(bytes) => (
            [(header::CONTENT_TYPE, "application/json")],
            Body::from(bytes),
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// One record for every attempt to reach into an in-scope pod, allowed or denied, with
/// who, how and what; counted by decision and subresource.
fn record_access(
    metrics: &AdmissionMetrics,
    sink: Option<&Sink>,
    request: &review::Request,
    decision: &super::decide::Decision,
) {
    use super::decide::Outcome;
    let subresource = request.sub_resource.clone().unwrap_or_default();
    let denied = matches!(decision.outcome, Outcome::Deny(_));
    // A pod in a covered namespace that no policy's pod selector picks: the request
    // reaches the webhook (a CONNECT carries no pod labels to filter on) but concerns
    // no enclave, so it is counted and not recorded.
    let in_scope = denied || !decision.findings.is_empty();
    metrics
        .access
        .get_or_create(&crate::metrics::AccessLabels {
            decision: if denied {
                "denied"
            } else if decision.audited() {
                "audited"
            } else if in_scope {
                "allowed"
            } else {
                "out_of_scope"
            },
            subresource: match subresource.as_str() {
                "exec" => "exec",
                "attach" => "attach",
                "portforward" => "portforward",
                "ephemeralcontainers" => "ephemeralcontainers",
                _ => "other",
            },
        })
        .inc();
    let Some(sink) = sink.filter(|_| in_scope) else {
        return;
    };
    let (container, command) = review::access_details(request);
    let policies: Vec<String> = decision.findings.iter().map(|f| f.policy.clone()).collect();
    let message = match &decision.outcome {
        Outcome::Deny(message) => message.clone(),
        _ if decision.audited() => decision.warnings.join("; "),
        _ => decision
            .findings
            .iter()
            .map(|f| f.message.as_str())
            .collect::<Vec<_>>()
            .join("; "),
    };
    let mut record = Record::new(
        if denied {
            Kind::AccessDenied
        } else {
            Kind::AccessAllowed
        },
        policies.first().map(String::as_str),
        decisions::Subject::new("Pod", request.namespace.as_deref(), &request.name),
        message,
    )
    .with("user", request.user_info.username.clone())
    .with("groups", request.user_info.groups.clone())
    .with("subresource", subresource);
    if let Some(container) = container {
        record = record.with("container", container);
    }
    if let Some(command) = command {
        record = record.with("command", command);
    }
    if !policies.is_empty() {
        record = record.with("policies", policies);
    }
    if !decision.grants.is_empty() {
        // What was done under which grant: the audit report joins on it.
        record = record.with("grants", decision.grants.clone());
    }
    sink.record(record);
}

/// Every finding of a decision, and a denial no policy owns, goes to the sink.
fn record(
    sink: &Sink,
    entry: &Entry,
    request: &review::Request,
    decision: &super::decide::Decision,
) {
    let subject = decisions::Subject::new(
        &request.kind.kind,
        request.namespace.as_deref(),
        &request.name,
    );
    for finding in &decision.findings {
        let kind = match finding.kind {
            super::decide::FindingKind::Placed => Kind::PodPlaced,
            super::decide::FindingKind::Denied => Kind::PodDenied,
            super::decide::FindingKind::Admitted => Kind::AccessAllowed,
            _ => Kind::AuditFinding,
        };
        sink.record(
            Record::new(
                kind,
                Some(&finding.policy),
                subject.clone(),
                finding.message.clone(),
            )
            .with("engine", "webhook")
            .with("webhook", entry.name)
            .with("user", request.user_info.username.clone()),
        );
    }
    if decision.findings.is_empty()
        && let super::decide::Outcome::Deny(message) = &decision.outcome
    {
        sink.record(
            Record::new(Kind::PodDenied, None, subject, message.clone())
                .with("engine", "webhook")
                .with("webhook", entry.name)
                .with("user", request.user_info.username.clone()),
        );
    }
}

/// The serving certificate, replaceable while the server runs (rotation, a new Secret).
#[derive(Debug)]
pub struct SwappableCert(RwLock<Arc<CertifiedKey>>);

impl SwappableCert {
    pub fn new(bundle: &certs::Bundle) -> Result<Self, certs::Error> {
        Ok(Self(RwLock::new(Arc::new(certs::certified_key(bundle)?))))
    }

    pub fn replace(&self, bundle: &certs::Bundle) -> Result<(), certs::Error> {
        let key = Arc::new(certs::certified_key(bundle)?);
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = key;
        Ok(())
    }
}

impl ResolvesServerCert for SwappableCert {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().unwrap_or_else(|p| p.into_inner()).clone())
    }
}

/// A connection with the idle and per-request deadlines of [`Limits`].
///
/// Reading the first byte of a request starts the request deadline; writing the response
/// switches to the idle deadline. A read or a write that waits past the current deadline
/// fails the connection with `TimedOut`.
pub struct Guarded<S> {
    inner: S,
    deadline: Pin<Box<Sleep>>,
    in_request: bool,
    idle: Duration,
    request: Duration,
    /// Counts the connections this guard ended.
    timeouts: Counter,
}

impl<S> Guarded<S> {
    pub fn new(inner: S, idle: Duration, request: Duration, timeouts: Counter) -> Self {
        Self {
            inner,
            deadline: Box::pin(tokio::time::sleep(idle)),
            in_request: false,
            idle,
            request,
            timeouts,
        }
    }

    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        self.deadline.as_mut().poll(cx).is_ready()
    }

    fn timed_out(&self) -> io::Error {
        self.timeouts.inc();
        let what = if self.in_request {
            "request not completed in time"
        } else {
            "connection idle for too long"
        };
        io::Error::new(io::ErrorKind::TimedOut, what)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before && !this.in_request {
                    this.in_request = true;
                    let at = tokio::time::Instant::now() + this.request;
                    this.deadline.as_mut().reset(at);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending if this.expired(cx) => Poll::Ready(Err(this.timed_out())),
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write(cx, data) {
            Poll::Ready(Ok(n)) => {
                if n > 0 && this.in_request {
                    this.in_request = false;
                    let at = tokio::time::Instant::now() + this.idle;
                    this.deadline.as_mut().reset(at);
                }
                Poll::Ready(Ok(n))
            }
            // A client that stops reading our response holds the connection no longer
            // than an idle one.
            Poll::Pending if this.expired(cx) => Poll::Ready(Err(this.timed_out())),
            other => other,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Raises the soft limit of open files to the hard limit, so that the connection cap,
/// not the file limit, is what turns clients away.
pub fn raise_file_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed in.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 0;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                return raised.rlim_cur;
            }
        }
    }
    limit.rlim_cur
}

/// Binds the webhook address, with a clear error when it is taken.
pub async fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|error| {
        io::Error::new(
            error.kind(),
            format!("cannot listen for admission webhooks on {addr}: {error}"),
        )
    })
}

/// Serves the router over TLS until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    cert: Arc<SwappableCert>,
    router: Router,
    limits: Limits,
    metrics: AdmissionMetrics,
    shutdown: impl Future<Output = ()>,
) {
    let config = ServerConfig::builder()
        .with_no_client_auth()
        .with_cert_resolver(cert);
    serve_with(listener, config, router, limits, metrics, shutdown).await;
}

/// [`serve`] with a TLS configuration of the caller's (the audit sink requires client
/// certificates), with the same limits and timeouts.
pub async fn serve_with(
    listener: TcpListener,
    mut config: ServerConfig,
    router: Router,
    limits: Limits,
    metrics: AdmissionMetrics,
    shutdown: impl Future<Output = ()>,
) {
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, max_connections = limits.max_connections, "serving admission webhooks over TLS");
    }
    let mut shutdown = std::pin::pin!(shutdown);
    // Tells open connections to finish the request in hand and close.
    let (stop, stopping) = tokio::sync::watch::channel(false);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => {
                drop(listener);
                let _ = stop.send(true);
                // Every connection holds a slot until it is done: holding them all
                // means every review in flight was answered (and its decision handed to
                // the log before the log closes). The caller bounds the wait.
                let total = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
                let _ = slots.acquire_many(total).await;
                return;
            }
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                // Out of file descriptors or similar: back off instead of spinning.
                tracing::warn!(%error, "could not accept a webhook connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            metrics
                .closed
                .get_or_create(&ClosedLabels { reason: "limit" })
                .inc();
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        let router = router.clone();
        let limits = limits.clone();
        let metrics = metrics.clone();
        let mut stopping = stopping.clone();
        tokio::spawn(async move {
            let _slot = slot;
            metrics.connections.inc();
            let tls = match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(stream))
                .await
            {
                Ok(Ok(tls)) => Some(tls),
                Ok(Err(_)) => None,
                Err(_) => {
                    metrics
                        .closed
                        .get_or_create(&ClosedLabels {
                            reason: "handshake",
                        })
                        .inc();
                    None
                }
            };
            if let Some(tls) = tls {
                let timeouts = metrics
                    .closed
                    .get_or_create(&ClosedLabels { reason: "timeout" })
                    .clone();
                let io = TokioIo::new(Guarded::new(
                    tls,
                    limits.idle_timeout,
                    limits.request_timeout,
                    timeouts,
                ));
                let service = hyper_util::service::TowerToHyperService::new(router);
                // Guarded enforces the header deadline; hyper's would also cut idle
                // keep-alive connections. Errors are the client's (reset, timeout).
                let builder = {
                    let mut builder = hyper::server::conn::http1::Builder::new();
                    builder.timer(TokioTimer::new()).header_read_timeout(None);
                    builder
                };
                let connection = builder.serve_connection(io, service);
                let mut connection = std::pin::pin!(connection);
                tokio::select! {
                    _ = connection.as_mut() => {}
                    _ = async { stopping.wait_for(|stop| *stop).await.is_ok() } => {
                        connection.as_mut().graceful_shutdown();
                        let _ = connection.await;
                    }
                }
            }
            metrics.connections.dec();
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scope::StaticCatalog;
    use http_body_util::BodyExt;
    use prometheus_client::registry::Registry;
    use serde_json::Value;
    use tower::ServiceExt;

    const REVIEW: &str = include_str!("../../tests/fixtures/pod-review.json");

    fn state() -> Arc<AdmissionState<StaticCatalog>> {
        let catalog = StaticCatalog::from_yaml(include_str!("../../tests/fixtures/catalog.yaml"))
            .expect("fixture");
        Arc::new(AdmissionState::new(
            catalog,
            AdmissionMetrics::register(&mut Registry::default()),
            None,
            Limits::default(),
        ))
    }

    async fn call(path: &str, body: String) -> (StatusCode, Value) {
        let request = axum::http::Request::post(path)
            .header("content-type", "application/json")
            .body(Body::from(body))
            .expect("request");
        let response = router(state()).oneshot(request).await.expect("served");
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    fn patch_of(review: &Value) -> Vec<Value> {
        let encoded = review["response"]["patch"]
            .as_str()
            .expect("the patch is a base64 string, as the API server expects");
        use base64::Engine;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .expect("base64");
        serde_json::from_slice(&bytes).expect("a JSON patch")
    }

    #[tokio::test]
    async fn mutation_patch_places_the_pod_and_keeps_its_own_terms() {
        let (status, review) = call("/mutate/pods", REVIEW.to_string()).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(review["response"]["allowed"], true, "{review}");
        assert_eq!(review["response"]["patchType"], "JSONPatch");
        let ops = patch_of(&review);
        let fixture: Value = serde_json::from_str(REVIEW).expect("fixture");
        let mut pod = fixture["request"]["object"].clone();
        review::apply_patch(&mut pod, &ops).expect("the patch applies");
        assert_eq!(
            pod["metadata"]["annotations"][crate::names::POLICY_ANNOTATION],
            "eu-user-data"
        );
        assert_eq!(
            review::required_terms(&pod).len(),
            4,
            "2 own terms × 2 sites"
        );
        assert!(
            pod["spec"]["affinity"]["podAntiAffinity"].is_object(),
            "the rest is kept"
        );
        assert_eq!(
            pod["spec"]["containers"],
            fixture["request"]["object"]["spec"]["containers"]
        );
        // The patched pod passes validation.
        let mut validated = fixture.clone();
        validated["request"]["object"] = pod;
        let (_, review) = call("/validate/pods", validated.to_string()).await;
        assert_eq!(review["response"]["allowed"], true, "{review}");
    }

    #[tokio::test]
    async fn pinned_pods_garbage_and_missing_objects_are_refused() {
        let mut review: Value = serde_json::from_str(REVIEW).expect("fixture");
        review["request"]["object"]["spec"]["nodeSelector"] =
            serde_json::json!({"node-restriction.kubernetes.io/enclave-site": "virginia"});
        let (_, out) = call("/mutate/pods", review.to_string()).await;
        assert_eq!(out["response"]["allowed"], false);
        assert!(
            out["response"]["status"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("policy eu-user-data")),
            "{out}"
        );
        let (_, out) = call(
            "/mutate/pods",
            r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#.into(),
        )
        .await;
        assert_eq!(
            out["response"]["allowed"], false,
            "a review without a request is refused"
        );
        let mut without_object: Value = serde_json::from_str(REVIEW).expect("fixture");
        without_object["request"]
            .as_object_mut()
            .expect("request")
            .remove("object");
        let (_, out) = call("/mutate/pods", without_object.to_string()).await;
        assert_eq!(
            out["response"]["allowed"], false,
            "a CREATE without an object is refused"
        );
        let (status, _) = call("/mutate/pods", "not json".into()).await;
        assert_eq!(status, StatusCode::OK, "answered, not an HTTP error");
    }

    #[tokio::test]
    async fn mirror_pods_are_recognised_by_who_creates_them() {
        let mut review: Value = serde_json::from_str(REVIEW).expect("fixture");
        review["request"]["object"]["spec"]["nodeName"] = "virginia-a".into();
        review["request"]["object"]["metadata"]["annotations"] =
            serde_json::json!({"kubernetes.io/config.mirror": "forged"});
        let (_, out) = call("/mutate/pods", review.to_string()).await;
        assert_eq!(
            out["response"]["allowed"], false,
            "a tenant's annotation changes nothing"
        );
        review["request"]["userInfo"] = serde_json::json!({"username": "system:node:virginia-a", "groups": ["system:nodes", "system:authenticated"]});
        let (_, out) = call("/mutate/pods", review.to_string()).await;
        assert_eq!(
            out["response"]["allowed"], true,
            "a kubelet's mirror pod is not ours to refuse"
        );
        // The group alone is what impersonating `--as-group=system:nodes` gives anyone.
        review["request"]["userInfo"] =
            serde_json::json!({"username": "mallory", "groups": ["system:nodes"]});
        let (_, out) = call("/mutate/pods", review.to_string()).await;
        assert_eq!(
            out["response"]["allowed"], false,
            "the system:nodes group without a node's user name is no kubelet"
        );
        // A node's identity creating a pod bound to another node is no mirror pod of its own.
        review["request"]["userInfo"] =
            serde_json::json!({"username": "system:node:dublin-a", "groups": ["system:nodes"]});
        let (_, out) = call("/mutate/pods", review.to_string()).await;
        assert_eq!(
            out["response"]["allowed"], false,
            "a node's mirror pod is bound to that node"
        );
        // A node's user name without the group is no node either.
        review["request"]["userInfo"] =
            serde_json::json!({"username": "system:node:virginia-a", "groups": []});
        let (_, out) = call("/mutate/pods", review.to_string()).await;
        assert_eq!(out["response"]["allowed"], false);
    }

    #[tokio::test]
    async fn bodies_over_the_limit_are_refused_before_they_are_read() {
        let request = axum::http::Request::post("/mutate/pods")
            .header("content-type", "application/json")
            .header("content-length", (8 * 1024 * 1024).to_string())
            .body(Body::from("{}"))
            .expect("request");
        let response = router(state()).oneshot(request).await.expect("served");
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[tokio::test]
    async fn a_large_review_within_the_api_servers_limit_is_decided() {
        // A DaemonSet of ~2.5 MB (an UPDATE review carries it twice): decided, not 413.
        let big = "x".repeat(2_500_000);
        let review = serde_json::json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": "u", "kind": {"group": "apps", "version": "v1", "kind": "DaemonSet"},
                "operation": "UPDATE", "namespace": "shop", "name": "agent",
                "userInfo": {"username": "alice"},
                "object": {"metadata": {"name": "agent", "annotations": {"big": big}},
                    "spec": {"template": {"metadata": {}, "spec": {"containers": []}}}},
                "oldObject": {"metadata": {"name": "agent", "annotations": {"big": big}}}
            }
        });
        let (status, out) = call("/mutate/daemonsets", review.to_string()).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            out["response"]["allowed"], true,
            "{}",
            out["response"]["status"]
        );
        assert!(out["response"]["patch"].is_string());
    }

    #[tokio::test]
    async fn guarded_connections_time_out_when_idle_or_dripping() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (client, server) = tokio::io::duplex(1024);
        let timeouts = Counter::default();
        let mut guarded = Guarded::new(
            server,
            Duration::from_millis(100),
            Duration::from_millis(300),
            timeouts.clone(),
        );
        let mut buf = [0u8; 16];
        // Idle: nothing arrives.
        let error = guarded.read(&mut buf).await.expect_err("idle timeout");
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);

        // Dripping: one byte every 50 ms keeps it from idling out, not from the request deadline.
        let (mut client2, server) = tokio::io::duplex(1024);
        let mut guarded = Guarded::new(
            server,
            Duration::from_millis(100),
            Duration::from_millis(300),
            timeouts.clone(),
        );
        let drip = tokio::spawn(async move {
            for _ in 0..20 {
                if client2.write_all(b"x").await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        let started = Instant::now();
        let error = loop {
            match guarded.read(&mut buf).await {
                Ok(_) => continue,
                Err(error) => break error,
            }
        };
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert!(
            started.elapsed() < Duration::from_millis(600),
            "{:?}",
            started.elapsed()
        );
        drip.abort();
        drop(client);
        assert_eq!(timeouts.get(), 2);
    }
}
