//! Per-request middleware: who is calling (one session lookup), the general
//! rate limits with their headers, and request metrics.

use foldhash::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum_extra::extract::cookie::Cookie;

use super::AppState;
use super::client::client_ip;
use super::extract::Caller;
use super::idempotency;
use super::limits::{self, set_limit_headers};
use crate::domain::ClientAddr;
use crate::error::ApiError;
use crate::ratelimit::{Decision, Scope};
use crate::sessions::{self, COOKIE};

/// The raw session id of the request's cookie, if it looks like one.
/// Parsed pair by pair rather than into a `CookieJar` (which copies every
/// cookie of the request into a set first: 3% of a signed-in request's
/// CPU); like the jar, the last `sessionid` pair wins.
pub fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .filter(|c| c.name() == COOKIE)
        .last()
        .map(|c| c.value().to_owned())
        .filter(|v| sessions::looks_like_id(v))
}

/// Resolves the caller and applies the anonymous or per-user limit to every
/// `/api/` request; adds `X-RateLimit-*` headers, describing whichever limit
/// (this one or one a handler applied) has the least remaining.
async fn identify_and_throttle(state: AppState, mut req: Request, next: Next) -> Response {
    let caller = match session_cookie(req.headers()) {
        None => Caller::Anonymous,
        Some(id) => match state
            .sessions
            .load(&sessions::hash_id(&id), state.settings.session_ttl)
            .await
        {
            Ok(Some(user_id)) => Caller::User(user_id),
            Ok(None) => Caller::Anonymous,
            Err(e) => {
                tracing::warn!(error = format!("{e:#}"), "session store unavailable");
                Caller::StoreUnavailable
            }
        },
    };
    // Absent means anonymous (see `AuthUser`): most requests insert nothing.
    if caller != Caller::Anonymous {
        req.extensions_mut().insert(caller);
    }
    if !req.uri().path().starts_with("/api/") {
        return next.run(req).await;
    }
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::from([127, 0, 0, 1]));
    let client = ClientAddr::new(
        client_ip(peer, req.headers(), &state.settings.trusted_proxies),
        state.settings.ipv6_client_prefix,
    );
    req.extensions_mut().insert(client);
    let scope = match caller {
        Caller::User(id) => Scope::User(id),
        _ => Scope::Anon(client),
    };
    let speculative = req.method() == Method::GET && is_pure_read(req.uri().path());
    let (decision, response) = if speculative {
        // A pure read may start while the limiter decides: the two Redis
        // round trips (limiter, cache lookup) then overlap, so a cached GET
        // costs one round trip of latency. A denied request's read is dropped
        // (cancelled) as soon as the limiter answers.
        let mut handler = std::pin::pin!(next.run(req));
        let mut check = std::pin::pin!(state.limiter.check(&scope));
        tokio::select! {
            decided = &mut check => match decided {
                Ok(d) if d.allowed => (Ok(d), Some(handler.await)),
                other => (other, None),
            },
            response = &mut handler => (check.await, Some(response)),
        }
    } else {
        match state.limiter.check(&scope).await {
            Ok(d) if d.allowed => (Ok(d), Some(idempotency::run(state, req, next).await)),
            other => (other, None),
        }
    };
    let (decision, mut response) = match (limits::verdict(decision), response) {
        (Ok(d), Some(r)) => (d, r),
        // Not reached: an allowed request has run its handler.
        (Ok(d), None) => (d, ApiError::Throttled(d).into_response()),
        (Err(e @ ApiError::Throttled(d)), _) => (d, e.into_response()),
        (Err(e), _) => return e.into_response(),
    };
    let shown = match response.extensions().get::<Decision>() {
        Some(other) if other.remaining < decision.remaining => *other,
        _ => decision,
    };
    set_limit_headers(response.headers_mut(), &shown);
    response
}

/// Routes whose GET has no side effect (no view counted, nothing written),
/// so they may run while the rate limiter decides.
fn is_pure_read(path: &str) -> bool {
    matches!(
        path,
        "/api/v1/properties"
            | "/api/v1/properties/featured"
            | "/api/v1/dashboard"
            | "/api/v1/bookings"
            | "/api/v1/me"
    )
}

/// What the API's [`guard`] needs: the application and the request metrics.
#[derive(Clone)]
pub struct GuardState {
    pub app: AppState,
    pub metrics: RequestMetrics,
}

/// The API's guard: [`identify_and_throttle`] and the handler within the
/// configured deadline, answering 503 when they run longer (a hung
/// dependency must not hold a client, or a connection, for ever), and the
/// request's metrics. Dropping them cancels their remaining work. One
/// middleware rather than three (metrics, deadline, caller and limits):
/// each layer of `from_fn` clones and boxes the rest of the stack per
/// request, which cost more than what the layer did.
pub async fn guard(State(guard): State<GuardState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = req.extensions().get::<MatchedPath>().cloned();
    let method = req.method().clone();
    let timeout = guard.app.settings.request_timeout;
    let response =
        match tokio::time::timeout(timeout, identify_and_throttle(guard.app, req, next)).await {
            Ok(response) => response,
            Err(_) => {
                tracing::warn!("request deadline exceeded");
                ApiError::Unavailable("the service (request deadline exceeded)").into_response()
            }
        };
    guard
        .metrics
        .finish(route.as_ref(), &method, &response, started);
    response
}

/// The request counter and latency histogram of each (route, method,
/// status) seen, registered once: building a metric key (three owned label
/// strings, a registry lookup) per request cost more than the recording.
/// Created with the router, after the process's recorder is installed
/// (`telemetry::metrics_handle`), so no handle is a no-op one.
#[derive(Clone, Default)]
pub struct RequestMetrics {
    handles: Arc<RwLock<HashMap<String, Vec<RouteMetric>>>>,
    classes: Arc<StatusClasses>,
}

/// Requests answered by this process, per status class (the console's
/// overview; `/metrics` has them per route).
#[derive(Debug, Default)]
struct StatusClasses([std::sync::atomic::AtomicU64; 4]);

/// Requests answered so far: `[total, 2xx/3xx, 4xx, 5xx]`.
pub type Traffic = [u64; 4];

#[derive(Clone)]
struct RouteMetric {
    method: Method,
    status: u16,
    count: metrics::Counter,
    latency: metrics::Histogram,
}

impl RequestMetrics {
    /// Counts one answered request of `route` that began at `started`.
    fn finish(
        &self,
        route: Option<&MatchedPath>,
        method: &Method,
        response: &Response,
        started: Instant,
    ) {
        let route = route.map_or("unmatched", MatchedPath::as_str);
        let seconds = started.elapsed().as_secs_f64();
        self.record(route, method, response.status().as_u16(), seconds);
    }

    /// Requests answered by this process so far (see [`Traffic`]).
    pub fn traffic(&self) -> Traffic {
        self.classes
            .0
            .each_ref()
            .map(|c| c.load(std::sync::atomic::Ordering::Relaxed))
    }

    fn record(&self, route: &str, method: &Method, status: u16, seconds: f64) {
        let class = match status {
            500.. => 3,
            400..=499 => 2,
            _ => 1,
        };
        for i in [0, class] {
            self.classes.0[i].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let found = read(&self.handles).get(route).and_then(|list| {
            list.iter()
                .find(|m| m.status == status && m.method == *method)
                .cloned()
        });
        let metric = match found {
            Some(m) => m,
            None => {
                let labels = [
                    ("route", route.to_owned()),
                    ("method", method.as_str().to_owned()),
                    ("status", status.to_string()),
                ];
                let m = RouteMetric {
                    method: method.clone(),
                    status,
                    count: metrics::counter!("http_requests_total", &labels),
                    latency: metrics::histogram!("http_request_duration_seconds", &labels),
                };
                write(&self.handles)
                    .entry(route.to_owned())
                    .or_default()
                    .push(m.clone());
                m
            }
        };
        metric.count.increment(1);
        metric.latency.record(seconds);
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Counts requests and their latency per route and status (the routes
/// outside the API's [`guard`], which counts its own).
pub async fn record_metrics(
    State(metrics): State<RequestMetrics>,
    req: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let route = req.extensions().get::<MatchedPath>().cloned();
    let method = req.method().clone();
    let response = next.run(req).await;
    metrics.finish(route.as_ref(), &method, &response, started);
    response
}
