//! Operations endpoints: `/health` (each dependency checked with a short
//! timeout, 503 naming the failing part; answered from a result at most a
//! second old, so a flood of health checks costs the dependencies one
//! round of checks a second) and `/metrics` (Prometheus text; on its own
//! listener when `STAYAFRICA_METRICS_BIND` is set).

use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
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

/// How long a `/health` result is answered again before the dependencies
/// are checked anew.
const HEALTH_FRESH: Duration = Duration::from_secs(1);

/// The last `/health` result and when it was taken. Behind an async lock
/// held while checking: concurrent requests wait for the one check and
/// share its result, instead of each sending its own.
#[derive(Default)]
pub struct HealthCache(tokio::sync::Mutex<Option<(Instant, bool, Value)>>);

impl HealthCache {
    /// The result of at most [`HEALTH_FRESH`] ago, or a new check.
    async fn get(&self, state: &AppState) -> (bool, Value) {
        let mut last = self.0.lock().await;
        if let Some((at, healthy, body)) = last.as_ref()
            && at.elapsed() < HEALTH_FRESH
        {
            return (*healthy, body.clone());
        }
        let (healthy, body) = check_all(state).await;
        *last = Some((Instant::now(), healthy, body.clone()));
        (healthy, body)
    }
}

/// Each dependency checked with a short timeout (at most once a second).
#[utoipa::path(get, path = "/health", tag = "operations",
    responses(
        (status = 200, description = "Everything is up", body = Health),
        (status = 503, description = "A part is down: named in the body", body = Health),
    ))]
async fn health(State(state): State<AppState>) -> impl IntoResponse {
    let (healthy, body) = state.health.get(&state).await;
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}

/// One round of checks: whether all passed, and the body naming each.
async fn check_all(state: &AppState) -> (bool, Value) {
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
    (healthy, Value::Object(body))
}

/// Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses(
        (status = 200, description = "Counters and histograms", body = String, content_type = "text/plain"),
    ))]
async fn metrics(State(state): State<AppState>) -> Response {
    // With a listener of their own, the metrics are not public.
    if state.settings.metrics_bind.is_some() {
        return crate::error::ApiError::NotFound.into_response();
    }
    render_metrics(&state).await
}

/// The metrics listener's only route (`STAYAFRICA_METRICS_BIND`).
pub fn metrics_router(state: AppState) -> axum::Router {
    axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(|State(state): State<AppState>| async move {
                render_metrics(&state).await
            }),
        )
        .with_state(state)
}

/// The Prometheus text, with the queue's depth read just now.
async fn render_metrics(state: &AppState) -> Response {
    if let Ok(Ok(c)) = tokio::time::timeout(CHECK_TIMEOUT, state.jobs.backend().counts()).await {
        metrics::gauge!("jobs_queue_depth", "state" => "queued").set(c.queued as f64);
        metrics::gauge!("jobs_queue_depth", "state" => "running").set(c.running as f64);
        metrics::gauge!("jobs_queue_depth", "state" => "dead").set(c.dead as f64);
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}
