//! Operations endpoints: `/health` (each dependency checked with a short
//! timeout, 503 naming the failing part) and `/metrics` (Prometheus text).

use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::{Map, Value};

use super::AppState;

const CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// Routes of `/health` and `/metrics`, for load balancers and Prometheus.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
}

async fn check<F: std::future::Future<Output = anyhow::Result<()>>>(f: F) -> &'static str {
    match tokio::time::timeout(CHECK_TIMEOUT, f).await {
        Ok(Ok(())) => "ok",
        Ok(Err(_)) => "error",
        Err(_) => "timeout",
    }
}

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
