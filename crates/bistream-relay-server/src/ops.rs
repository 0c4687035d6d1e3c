//! The ops endpoint: `/health` and `/healthz` (liveness, with a few figures) and `/metrics`
//! (Prometheus text format), on its own address so it can stay private.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::conn::Shared;

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let health = {
        let shared = shared.clone();
        move || {
            let shared = shared.clone();
            async move {
                let m = &shared.metrics;
                let status = if shared.shutdown.is_cancelled() {
                    "stopping"
                } else {
                    "ok"
                };
                let body = serde_json::json!({
                    "status": status,
                    "connections": m.connections_open.load(Relaxed),
                    "registered_clients": shared.registry.len(),
                });
                let code = if shared.shutdown.is_cancelled() {
                    axum::http::StatusCode::SERVICE_UNAVAILABLE
                } else {
                    axum::http::StatusCode::OK
                };
                (code, axum::Json(body))
            }
        }
    };
    let metrics = move || {
        let shared = shared.clone();
        async move {
            let m = &shared.metrics;
            m.registered_clients
                .store(shared.registry.len() as i64, Relaxed);
            (
                [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
                crate::cluster::render_metrics(&shared, m.render()),
            )
                .into_response()
        }
    };
    Router::new()
        .route("/health", get(health.clone()))
        .route("/healthz", get(health))
        .route("/metrics", get(metrics))
}
