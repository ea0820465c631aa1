//! `Idempotency-Key` on the creating requests (API.md): the first answer is
//! kept and given again to a retry with the same body; the policy and the
//! records are [`crate::idempotency`]'s, this module only reads the request
//! and writes the response.
//!
//! Once a request may proceed, its handler runs in a task of its own: a
//! client that goes away, or the deadline, stops waiting for it but does
//! not cut it between its write and the keeping of its answer, so the
//! retry finds the answer (or a 409 while it is still running), never a
//! second booking.

use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::AppState;
use super::extract::Caller;
use crate::domain::ClientAddr;
use crate::error::ApiError;
use crate::idempotency::{Answer, Begin, MAX_ANSWER, is_final};

const KEY_HEADER: &str = "idempotency-key";
const REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// The requests that honour the header.
fn honours(method: &Method, path: &str) -> bool {
    method == Method::POST
        && matches!(
            path,
            "/api/v1/bookings" | "/api/v1/properties" | "/api/v1/auth/register"
        )
}

/// Margin of a running record's lease over the request deadline.
const LEASE_MARGIN: Duration = Duration::from_secs(30);

/// Runs an allowed `/api/` request, by way of its `Idempotency-Key` when
/// it is one of the creating requests and has one. Called by the API's
/// guard once it has resolved the caller and the limits (not a layer of
/// its own: a layer would box and clone the rest of the stack on every
/// request, for a check that applies to three routes).
pub async fn run(state: AppState, req: Request, next: Next) -> Response {
    if !honours(req.method(), req.uri().path()) {
        return next.run(req).await;
    }
    let Some(key) = req.headers().get(KEY_HEADER) else {
        return next.run(req).await;
    };
    let key = match key.to_str() {
        Ok(k) if (1..=255).contains(&k.len()) && k.bytes().all(|b| (0x21..=0x7e).contains(&b)) => {
            k.to_owned()
        }
        _ => {
            return ApiError::InvalidRequest(
                "Idempotency-Key must be 1 to 255 printable ASCII characters".into(),
            )
            .into_response();
        }
    };
    let caller = match req.extensions().get::<Caller>() {
        Some(Caller::User(id)) => format!("user:{id}"),
        _ => match req.extensions().get::<ClientAddr>() {
            Some(addr) => format!("addr:{addr}"),
            None => "addr:unknown".to_owned(),
        },
    };
    let (parts, body) = req.into_parts();
    let Ok(body) = axum::body::to_bytes(body, super::BODY_LIMIT).await else {
        return ApiError::PayloadTooLarge.into_response();
    };
    let fingerprint = {
        let d = Sha256::new()
            .chain_update(parts.method.as_str())
            .chain_update(b" ")
            .chain_update(parts.uri.path())
            .chain_update(b"\n")
            .chain_update(&body)
            .finalize();
        d.iter().map(|b| format!("{b:02x}")).collect::<String>()
    };
    let record = state.cache.keys().idempotency(&caller, &key);
    let lease = state.settings.request_timeout + LEASE_MARGIN;
    let store = state.idempotency.clone();
    // From the claim of the key to the keeping of the answer in a task of
    // its own: a request dropped in between (client gone, deadline) would
    // leave the key claimed and unanswered until its lease ends.
    let run = tokio::spawn(async move {
        match store.begin(&record, &fingerprint, lease).await {
            Err(e) => ApiError::unavailable("idempotency store")(e).into_response(),
            Ok(Begin::InProgress) => {
                ApiError::Conflict("a request with this Idempotency-Key is still being processed")
                    .into_response()
            }
            Ok(Begin::Mismatch) => ApiError::field(
                "Idempotency-Key",
                "was already used with another request body",
            )
            .into_response(),
            Ok(Begin::Replay(answer)) => replay(answer),
            Ok(Begin::Proceed) => {
                let req = Request::from_parts(parts, Body::from(body));
                let response = next.run(req).await;
                keep(&*store, &record, &fingerprint, response).await
            }
        }
    });
    match run.await {
        Ok(response) => response,
        Err(e) => ApiError::Internal(anyhow::anyhow!("request task failed: {e}")).into_response(),
    }
}

/// Keeps a final answer for retries, or releases the key.
async fn keep(
    store: &dyn crate::idempotency::IdempotencyStore,
    record: &str,
    fingerprint: &str,
    response: Response,
) -> Response {
    let status = response.status().as_u16();
    if !is_final(status) {
        if let Err(e) = store.release(record, fingerprint).await {
            tracing::warn!(error = format!("{e:#}"), "idempotency key not released");
        }
        return response;
    }
    let (parts, body) = response.into_parts();
    let body = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(b) => b,
        Err(e) => {
            let _ = store.release(record, fingerprint).await;
            return ApiError::Internal(anyhow::anyhow!("reading the answer: {e}")).into_response();
        }
    };
    let kept = if body.len() <= MAX_ANSWER {
        let answer = Answer {
            status,
            content_type: parts
                .headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("application/json")
                .to_owned(),
            body: body.clone(),
        };
        store.finish(record, fingerprint, &answer).await
    } else {
        store.release(record, fingerprint).await
    };
    if let Err(e) = kept {
        // The answer stands; a retry within the lease gets 409, after it
        // runs again.
        tracing::warn!(error = format!("{e:#}"), "idempotent answer not kept");
    }
    Response::from_parts(parts, Body::from(body))
}

/// The kept answer, marked as replayed.
fn replay(answer: Answer) -> Response {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK);
    let mut response = (status, answer.body).into_response();
    let h = response.headers_mut();
    if let Ok(ct) = HeaderValue::from_str(&answer.content_type) {
        h.insert(header::CONTENT_TYPE, ct);
    }
    h.insert(REPLAYED, HeaderValue::from_static("true"));
    response
}
