//! The plain-HTTP server for probes and metrics (the webhook has its own TLS server).
//! Health endpoints are not traced: kubelets call them every few seconds.

use std::sync::Arc;

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};

use crate::{cache::Caches, metrics::Metrics};

async fn serve_metrics(State((metrics, _)): State<(Arc<Metrics>, Caches)>) -> impl IntoResponse {
    match metrics.encode() {
        Ok(body) => (
            StatusCode::OK,
            [(
                "content-type",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// Ready once every cache admission reads has synced: before that, admission would
/// refuse in-scope pods for namespaces it has not seen. The pod cache may still be
/// filling (see [`Caches::admission_ready`]).
async fn ready(State((_, caches)): State<(Arc<Metrics>, Caches)>) -> impl IntoResponse {
    if caches.admission_ready() {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "caches not synced")
    }
}

/// The router: `/metrics`, `/healthz`, `/readyz`.
pub fn router(metrics: Arc<Metrics>, caches: Caches) -> Router {
    Router::new()
        .route("/metrics", get(serve_metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .with_state((metrics, caches))
}

/// Serves the router until shutdown.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    caches: Caches,
) -> std::io::Result<()> {
    tracing::info!(addr = %listener.local_addr()?, "serving /metrics and health probes");
    axum::serve(listener, router(metrics, caches))
        .with_graceful_shutdown(crate::shutdown::signalled())
        .await
}
