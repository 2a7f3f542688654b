//! The HTTP endpoints of the operator process: liveness, readiness and Prometheus metrics.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;

use crate::error::{Error, Result};
use crate::metrics;

/// What the endpoints report on.
pub struct Health {
    pub registry: Registry,
    /// Set once the process reached the API server; a standby replica is ready too, so that a
    /// rollout of the operator does not wait for leadership.
    pub ready: AtomicBool,
}

pub fn router(health: Arc<Health>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(health)
}

async fn readyz(State(health): State<Arc<Health>>) -> impl IntoResponse {
    if health.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting")
    }
}

async fn metrics_text(State(health): State<Arc<Health>>) -> impl IntoResponse {
    match metrics::encode(&health.registry) {
        Ok(text) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// Serves the endpoints until the process ends.
pub async fn serve(addr: SocketAddr, health: Arc<Health>) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Io {
            path: addr.to_string(),
            source,
        })?;
    axum::serve(listener, router(health))
        .await
        .map_err(|source| Error::Io {
            path: addr.to_string(),
            source,
        })
}
