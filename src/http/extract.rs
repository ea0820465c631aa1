//! Extractors that turn every client mistake into the `API.md` error body:
//! [`ApiJson`] (415, 413, 400), [`ApiQuery`] (400), [`IdPath`] (404), and
//! the caller's identity, [`AuthUser`] (401, or 503 when the session store
//! is down).

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::AppState;
use crate::db::users::User;
use crate::error::ApiError;

/// A JSON body (`Content-Type: application/json`, at most 64 KiB).
pub struct ApiJson<T>(pub T);

/// True when the media type is exactly `application/json` (parameters such
/// as `charset` allowed). axum's own check also takes every `+json` type
/// (`application/json-patch+json`), which `API.md` answers with 415: a
/// client sending another format must not have it read as ours.
fn is_json(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"))
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        if !is_json(req.headers()) {
            return Err(ApiError::UnsupportedMediaType);
        }
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            Err(JsonRejection::MissingJsonContentType(_)) => Err(ApiError::UnsupportedMediaType),
            Err(JsonRejection::JsonDataError(e)) => Err(ApiError::InvalidRequest(e.body_text())),
            Err(JsonRejection::JsonSyntaxError(e)) => Err(ApiError::InvalidRequest(e.body_text())),
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(ApiError::PayloadTooLarge),
            Err(e) => Err(ApiError::InvalidRequest(e.body_text())),
        }
    }
}

/// For `#[serde(default, deserialize_with = "non_null")]` on an optional
/// field: absent is `None`, a value is `Some`, and `null` is refused as the
/// wrong type (serde's `Option` would read it as absent).
pub fn non_null<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

/// Query parameters; anything that does not fit is a 400.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    /// Parsed straight with `serde_urlencoded`; only a query that does not
    /// fit goes through axum's `Query`, whose error names the parameter at
    /// fault (it tracks the path of every field it reads, which cost more
    /// than the parse itself on every good request).
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        if let Ok(v) = serde_urlencoded::from_str(parts.uri.query().unwrap_or_default()) {
            return Ok(ApiQuery(v));
        }
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| ApiQuery(v))
            .map_err(|e| ApiError::InvalidRequest(e.body_text()))
    }
}

/// A numeric id in the path; anything else names no object (404).
pub struct IdPath(pub i64);

impl<S: Send + Sync> FromRequestParts<S> for IdPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<i64>::from_request_parts(parts, state).await {
            Ok(Path(id)) if id > 0 => Ok(IdPath(id)),
            _ => Err(ApiError::NotFound),
        }
    }
}

/// Who is calling, as resolved once per request by the session middleware.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    Anonymous,
    User(i64),
    /// A session cookie was sent but the session store could not be asked.
    StoreUnavailable,
}

/// The signed-in user (401 otherwise).
pub struct AuthUser(pub User);

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match parts
            .extensions
            .get::<Caller>()
            .copied()
            .unwrap_or(Caller::Anonymous)
        {
            Caller::Anonymous => Err(ApiError::NotAuthenticated),
            Caller::StoreUnavailable => Err(ApiError::Unavailable("session store")),
            Caller::User(id) => state
                .identities
                .user(id)
                .await?
                .map(AuthUser)
                .ok_or(ApiError::NotAuthenticated),
        }
    }
}
