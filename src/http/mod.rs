//! The HTTP API of `API.md`: one router per resource, the extractors that
//! map client mistakes to the error body, and the middleware stack
//! (request id, tracing, panic guard, metrics, caller and rate limits, body
//! limit).

pub mod admin;
pub mod auth;
pub mod bookings;
pub mod caching;
pub mod client;
pub mod dashboard;
pub mod extract;
pub mod idempotency;
pub mod limits;
pub mod list_query;
pub mod middleware;
pub mod openapi;
pub mod ops;
pub mod properties;
pub mod request_id;
mod state;

use std::any::Any;

use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath};
use axum::http::{HeaderName, Request};
use axum::response::{IntoResponse, Response};
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_swagger_ui::SwaggerUi;

pub use state::{AppState, Inner};

use crate::error::ApiError;

/// Largest accepted request body.
pub const BODY_LIMIT: usize = 64 * 1024;

fn panic_response(_: Box<dyn Any + Send + 'static>) -> Response {
    ApiError::Internal(anyhow::anyhow!("handler panicked")).into_response()
}

/// The routers with their descriptions: the operations endpoints (outside
/// the API's session lookup, rate limits and deadline), the API, and the
/// OpenAPI document they make together (see [`openapi::finish`]).
pub fn routes_and_spec() -> (Router<AppState>, Router<AppState>, serde_json::Value) {
    let (ops, mut spec) = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .merge(ops::router())
        .split_for_parts();
    let (api, api_spec) = OpenApiRouter::new()
        .merge(auth::router())
        .merge(properties::router())
        .merge(bookings::router())
        .merge(dashboard::router())
        .split_for_parts();
    spec.merge(api_spec);
    (ops, api, openapi::finish(spec))
}

/// The whole application router.
pub fn router(state: AppState) -> Router {
    let request_id = HeaderName::from_static("x-request-id");
    let (ops, api, spec) = routes_and_spec();
    let metrics = state.requests.clone();
    // The spec is served as built (JSON), and read by the offline viewer.
    let docs = SwaggerUi::new(openapi::DOCS_PATH).external_url_unchecked(openapi::SPEC_PATH, spec);
    // Each fallback after its routes: it applies to the routes registered before it.
    let ops = ops
        .merge(docs)
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed });
    let api = api
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn_with_state(
            middleware::GuardState {
                app: state.clone(),
                metrics: metrics.clone(),
            },
            middleware::guard,
        ));
    let ops = ops.layer(axum::middleware::from_fn_with_state(
        metrics,
        middleware::record_metrics,
    ));
    Router::new()
        .merge(ops)
        .merge(api)
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::new(
                    request_id.clone(),
                    request_id::MakeSequentialId,
                ))
                .layer(
                    TraceLayer::new_for_http()
                        .make_span_with(request_span)
                        .on_request(())
                        .on_response(on_response),
                )
                .layer(PropagateRequestIdLayer::new(request_id))
                .layer(CatchPanicLayer::custom(panic_response)),
        )
        .with_state(state)
}

/// The span of one request: every log line written while it is handled
/// carries its request id and route, and, once answered, status and latency.
fn request_span<B>(req: &Request<B>) -> tracing::Span {
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("-", MatchedPath::as_str);
    tracing::info_span!(
        "request",
        request_id = %id,
        method = %req.method(),
        route = %route,
        path = %req.uri().path(),
        status = tracing::field::Empty,
        latency_ms = tracing::field::Empty,
    )
}

/// One line per answered request, in its span.
fn on_response<B>(res: &Response<B>, latency: Duration, span: &tracing::Span) {
    let status = res.status().as_u16();
    let latency_ms = latency.as_secs_f64() * 1000.0;
    span.record("status", status);
    span.record("latency_ms", latency_ms);
    tracing::info!(status, latency_ms, "answered");
}
