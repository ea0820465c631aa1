//! The HTTP API of `API.md`: one router per resource, the extractors that
//! map client mistakes to the error body, and the middleware stack
//! (request id, tracing, panic guard, metrics, caller and rate limits, body
//! limit).

pub mod auth;
pub mod bookings;
pub mod caching;
pub mod dashboard;
pub mod extract;
pub mod middleware;
pub mod ops;
pub mod properties;
mod state;

use std::any::Any;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, Request};
use axum::response::{IntoResponse, Response};
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

pub use state::{AppState, Inner};

use crate::error::ApiError;

/// Largest accepted request body.
pub const BODY_LIMIT: usize = 64 * 1024;

fn panic_response(_: Box<dyn Any + Send + 'static>) -> Response {
    ApiError::Internal(anyhow::anyhow!("handler panicked")).into_response()
}

/// The whole application router.
pub fn router(state: AppState) -> Router {
    let request_id = HeaderName::from_static("x-request-id");
    let api = Router::new()
        .merge(auth::router())
        .merge(properties::router())
        .merge(bookings::router())
        .merge(dashboard::router())
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::identify_and_throttle,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::deadline,
        ));
    Router::new()
        .merge(ops::router())
        .merge(api)
        .layer(axum::middleware::from_fn(middleware::record_metrics))
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::new(request_id.clone(), MakeRequestUuid))
                .layer(TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
                    let id = req
                        .headers()
                        .get("x-request-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-");
                    tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
                }))
                .layer(PropagateRequestIdLayer::new(request_id))
                .layer(CatchPanicLayer::custom(panic_response)),
        )
        .with_state(state)
}
