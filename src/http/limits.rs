//! The one enforcement path of the limits catalogue
//! ([`crate::ratelimit::Action`]): counts an attempt in a set of scopes and
//! turns the binding decision into the answer — 429 `throttled` with
//! `Retry-After`, or 503 `unavailable` when a fail-closed scope cannot be
//! decided. The decision travels with the response (its extensions), and
//! the middleware writes the `X-RateLimit-*` headers of whichever limit of
//! the request has the least remaining.

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::Response;

use super::AppState;
use crate::error::{ApiError, ApiResult};
use crate::ratelimit::{Decision, LimiterUnavailable, Scope};

/// Counts one attempt in every scope of `scopes`; the binding decision
/// when the attempt may go on, else the 429 or 503 to answer.
pub async fn enforce(state: &AppState, scopes: &[Scope]) -> ApiResult<Decision> {
    verdict(state.limiter.check_all(scopes).await)
}

/// [`enforce`] for a pair limit under a shared ceiling (see
/// [`crate::ratelimit::RateLimiter::check_with_ceiling`]).
pub async fn enforce_with_ceiling(
    state: &AppState,
    pair: &Scope,
    ceiling: &Scope,
) -> ApiResult<Decision> {
    verdict(state.limiter.check_with_ceiling(pair, ceiling).await)
}

/// The answer to a decision taken elsewhere (the middleware's, which
/// overlaps its check with a pure read): the decision when the request may
/// go on, else the 429 or 503.
pub fn verdict(decided: Result<Decision, LimiterUnavailable>) -> ApiResult<Decision> {
    match decided {
        Ok(d) if d.allowed => Ok(d),
        Ok(d) => Err(ApiError::Throttled(d)),
        Err(LimiterUnavailable) => Err(ApiError::Unavailable("rate limiter")),
    }
}

/// Attaches `decision` to a response, for the middleware's headers.
pub fn noted(mut response: Response, decision: Decision) -> Response {
    response.extensions_mut().insert(decision);
    response
}

const RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
const RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
const RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

/// Writes the `X-RateLimit-*` headers of a decision.
pub fn set_limit_headers(headers: &mut HeaderMap, d: &Decision) {
    headers.insert(RATELIMIT_LIMIT, HeaderValue::from(d.limit));
    headers.insert(RATELIMIT_REMAINING, HeaderValue::from(d.remaining));
    headers.insert(RATELIMIT_RESET, HeaderValue::from(d.reset_after_secs()));
}
