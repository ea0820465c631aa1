//! [`ApiError`]: the single error type at the HTTP edge, mapped 1:1 to the
//! status codes and error codes of `API.md`. Internal errors are logged once
//! and answered with an opaque body.

use std::collections::BTreeMap;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Field name -> human readable problem, the `details` of a 422.
pub type FieldErrors = BTreeMap<String, String>;

/// Every way a request can fail, as the client sees it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    InvalidRequest(String),
    #[error("authentication required")]
    NotAuthenticated,
    #[error("{0}")]
    InvalidCredentials(&'static str),
    #[error("you are not allowed to do this")]
    Forbidden,
    #[error("not found")]
    NotFound,
    #[error("this method is not allowed here")]
    MethodNotAllowed,
    #[error("{0}")]
    Conflict(&'static str),
    #[error("request body is larger than 64 KiB")]
    PayloadTooLarge,
    #[error("Content-Type must be application/json")]
    UnsupportedMediaType,
    #[error("validation failed")]
    Validation(FieldErrors),
    /// Over a limit: the decision that refused (its `Retry-After`, and the
    /// `X-RateLimit-*` headers the middleware writes from it).
    #[error("too many requests")]
    Throttled(crate::ratelimit::Decision),
    #[error("{0} is unavailable")]
    Unavailable(&'static str),
    /// A write was stored but could not yet be made visible on every
    /// instance: 503 with `details.stored = true` (API.md); the outbox
    /// makes it visible within seconds, no retry needed.
    #[error("the change is stored and will be visible within seconds")]
    Stored,
    /// The service is saturated (a bounded resource stayed busy): 503 with
    /// `Retry-After`, so a client backs off instead of retrying at once.
    #[error("{0} is busy, retry shortly")]
    Saturated(&'static str),
    #[error("internal error")]
    Internal(anyhow::Error),
}

impl ApiError {
    /// Turns the failure of a backing service into a 503 naming `what`, and
    /// logs its cause: here, where the cause becomes a response, so each 503
    /// says why exactly once (the body names only `what`). For failures
    /// already logged where they happened (the rate limiter, the session
    /// lookup of the middleware), build `ApiError::Unavailable` directly.
    pub fn unavailable<E>(what: &'static str) -> impl FnOnce(E) -> ApiError
    where
        E: Into<anyhow::Error>,
    {
        move |e| {
            let e: anyhow::Error = e.into();
            tracing::warn!(
                unavailable = what,
                error = format!("{e:#}"),
                "answering 503"
            );
            ApiError::Unavailable(what)
        }
    }

    /// A 422 for one field.
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        let mut m = FieldErrors::new();
        m.insert(field.to_owned(), message.into());
        ApiError::Validation(m)
    }

    /// The HTTP status of this error, as `API.md` lists it.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotAuthenticated | ApiError::InvalidCredentials(_) => {
                StatusCode::UNAUTHORIZED
            }
            ApiError::Forbidden => StatusCode::FORBIDDEN,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Throttled(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) | ApiError::Saturated(_) | ApiError::Stored => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The `error.code` of the response body: stable, clients match on it.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidRequest(_) => "invalid_request",
            ApiError::NotAuthenticated => "not_authenticated",
            ApiError::InvalidCredentials(_) => "invalid_credentials",
            ApiError::Forbidden => "forbidden",
            ApiError::NotFound => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::Conflict(_) => "conflict",
            ApiError::PayloadTooLarge => "payload_too_large",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::Validation(_) => "validation_failed",
            ApiError::Throttled(_) => "throttled",
            ApiError::Unavailable(_) | ApiError::Saturated(_) | ApiError::Stored => "unavailable",
            ApiError::Internal(_) => "internal_error",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = match &self {
            ApiError::Internal(e) => {
                tracing::error!(error = format!("{e:#}"), "request failed");
                "internal server error".to_owned()
            }
            other => other.to_string(),
        };
        let mut error = json!({ "code": self.code(), "message": message });
        if let ApiError::Validation(details) = &self {
            error["details"] = json!(details);
        }
        if let ApiError::Stored = &self {
            error["details"] = json!({ "stored": true });
        }
        let mut response = (status, axum::Json(json!({ "error": error }))).into_response();
        let retry_after = match self {
            ApiError::Throttled(decision) => {
                response.extensions_mut().insert(decision);
                Some(decision.retry_after_secs())
            }
            ApiError::Saturated(_) => Some(SATURATED_RETRY_AFTER),
            _ => None,
        };
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// `Retry-After` of a saturated answer: the bounded work it waited for
/// takes milliseconds, so a second is enough to find a free turn.
const SATURATED_RETRY_AFTER: u64 = 1;

impl From<crate::outbox::NotYetVisible> for ApiError {
    fn from(_: crate::outbox::NotYetVisible) -> Self {
        ApiError::Stored
    }
}

impl From<crate::passwords::HashError> for ApiError {
    fn from(e: crate::passwords::HashError) -> Self {
        match e {
            crate::passwords::HashError::Busy => ApiError::Saturated("password hashing"),
            crate::passwords::HashError::Failed(e) => ApiError::Internal(e),
        }
    }
}

impl From<anyhow::Error> for ApiError {
    /// Internal errors, except that a database that cannot be reached is a
    /// backing service being down: 503 `unavailable`, as `API.md` says.
    fn from(e: anyhow::Error) -> Self {
        if e.chain()
            .any(|c| c.downcast_ref::<sqlx::Error>().is_some_and(is_unreachable))
        {
            tracing::error!(error = format!("{e:#}"), "database unavailable");
            return ApiError::Unavailable("database");
        }
        ApiError::Internal(e)
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        anyhow::Error::from(e).into()
    }
}

/// Errors that mean "the database is not there" rather than "this query is
/// wrong": connection and pool failures, and PostgreSQL's connection
/// exception (08), invalid authorization (28), insufficient resources (53)
/// and operator intervention (57P: shutdown, terminated connection) classes,
/// plus what a new connection gets from a database that is gone (3D000) or
/// not accepting connections (55000) — codes our queries never raise.
fn is_unreachable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|c| {
            ["08", "28", "53", "57P"]
                .iter()
                .any(|class| c.starts_with(class))
                || c == "3D000"
                || c == "55000"
        }),
        _ => false,
    }
}

/// Result type of handlers.
pub type ApiResult<T> = Result<T, ApiError>;
