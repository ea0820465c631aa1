//! Operations endpoints: `/health` (each dependency checked with a short
//! timeout, 503 naming the failing part) and `/metrics` (Prometheus text).

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde_json::{Map, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::openapi::Health;

const CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// Routes of `/health` and `/metrics`, for load balancers and Prometheus.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(health))
        .routes(routes!(metrics))
}

async fn check<F: std::future::Future<Output = anyhow::Result<()>>>(f: F) -> &'static str {
    match tokio::time::timeout(CHECK_TIMEOUT, f).await {
        Ok(Ok(())) => "ok",
        Ok(Err(_)) => "error",
        Err(_) => "timeout",
    }
}

/// Each dependency checked with a short timeout.
#[utoipa::path(get, path = "/health", tag = "operations",
    responses(
        (status = 200, description = "Everything is up", body = Health),
        (status = 503, description = "A part is down: named in the body", body = Health),
    ))]
async fn health(State(state): State<AppState>) -> impl IntoResponse {
    let (database, cache, sessions, ratelimit, jobs) = tokio::join!(
        check(state.db.ping()),
        check(state.cache.store().ping()),
        check(state.sessions.ping()),
        check(state.limiter.ping()),
        check(async { state.jobs.backend().counts().await.map(|_| ()) }),
    );
    let parts = [
        ("database", database),
        ("cache", cache),
        ("sessions", sessions),
        ("ratelimit", ratelimit),
        ("jobs", jobs),
    ];
    let healthy = parts.iter().all(|(_, s)| *s == "ok");
    let mut body = Map::new();
    body.insert(
        "status".into(),
        Value::from(if healthy { "ok" } else { "unavailable" }),
    );
    for (name, s) in parts {
        body.insert(name.into(), Value::from(s));
    }
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(Value::Object(body)))
}

/// Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses(
        (status = 200, description = "Counters and histograms", body = String, content_type = "text/plain"),
    ))]
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    if let Ok(Ok(c)) = tokio::time::timeout(CHECK_TIMEOUT, state.jobs.backend().counts()).await {
        metrics::gauge!("jobs_queue_depth", "state" => "queued").set(c.queued as f64);
        metrics::gauge!("jobs_queue_depth", "state" => "running").set(c.running as f64);
        metrics::gauge!("jobs_queue_depth", "state" => "dead").set(c.dead as f64);
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}
