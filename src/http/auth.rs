//! Sign-in: registration, password login, one-time-code login, logout
//! (this session or all of the user's sessions), and `/me`.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use super::AppState;
use super::extract::{ApiJson, AuthUser};
use super::middleware::session_cookie;
use crate::cache::OtpOutcome;
use crate::db::users::{NewUser, User};
use crate::domain::{Email, Role, check_len, check_text};
use crate::error::{ApiError, ApiResult, FieldErrors};
use crate::jobs::Job;
use crate::passwords::{self, Verified};
use crate::ratelimit::Scope;
use crate::sessions::{self, COOKIE};

/// Wrong tries before a one-time code is dead.
pub const OTP_MAX_ATTEMPTS: u32 = 5;

/// Routes of `/api/v1/auth/*` and `/api/v1/me`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/auth/register", post(register))
        .route("/api/v1/auth/login", post(login))
        .route("/api/v1/auth/logout", post(logout))
        .route("/api/v1/auth/logout-all", post(logout_all))
        .route("/api/v1/auth/password", post(change_password))
        .route("/api/v1/auth/otp", post(otp_request))
        .route("/api/v1/auth/otp/verify", post(otp_verify))
        .route("/api/v1/me", get(me))
}

/// Counts one attempt in a sign-in scope (these fail closed): 503 when the
/// limiter cannot decide, 429 when the attempt is over the limit.
async fn enforce(state: &AppState, scope: &Scope) -> ApiResult<()> {
    let decision = state
        .limiter
        .check(scope)
        .await
        .map_err(|_| ApiError::Unavailable("rate limiter"))?;
    if decision.allowed {
        Ok(())
    } else {
        Err(ApiError::Throttled {
            retry_after: decision.retry_after_secs(),
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterBody {
    email: String,
    password: String,
    full_name: String,
    role: Role,
}

fn parse_email(raw: &str, errors: &mut FieldErrors) -> Option<Email> {
    match Email::parse(raw) {
        Ok(e) => Some(e),
        Err(m) => {
            errors.insert("email".into(), m.into());
            None
        }
    }
}

async fn register(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<RegisterBody>,
) -> ApiResult<(StatusCode, Json<User>)> {
    let mut errors = FieldErrors::new();
    let email = parse_email(&body.email, &mut errors);
    if let Err(m) = check_len(&body.password, 8, 128) {
        errors.insert("password".into(), m);
    }
    if let Err(m) = check_text(body.full_name.trim(), 1, 200) {
        errors.insert("full_name".into(), m);
    }
    let Some(email) = email.filter(|_| errors.is_empty()) else {
        return Err(ApiError::Validation(errors));
    };
    let password = body.password;
    let hash = tokio::task::spawn_blocking(move || passwords::hash(&password))
        .await
        .map_err(anyhow::Error::from)??;
    let user = state
        .db
        .create_user(&NewUser {
            email: email.as_str(),
            password_hash: &hash,
            full_name: body.full_name.trim(),
            role: body.role,
            created_at: time::OffsetDateTime::now_utc(),
        })
        .await?
        .ok_or(ApiError::Conflict("this email is already registered"))?;
    Ok((StatusCode::CREATED, Json(user)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    email: String,
    password: String,
}

async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<LoginBody>,
) -> ApiResult<Response> {
    let email = Email::parse(&body.email).map_err(|m| ApiError::field("email", m))?;
    let scope = Scope::Login(email.clone());
    enforce(&state, &scope).await?;
    // No account has a longer password: refuse without hashing megabytes.
    if body.password.chars().count() > 128 {
        return Err(ApiError::InvalidCredentials("wrong email or password"));
    }
    let row = state.db.user_by_email(&email).await?;
    let password = body.password;
    let stored = row.as_ref().map(|r| r.password_hash.clone());
    // Same work whether or not the email is registered.
    let verified = tokio::task::spawn_blocking(move || match stored {
        Some(h) => passwords::verify(&password, &h),
        None => {
            passwords::verify_dummy(&password);
            Ok(Verified::No)
        }
    })
    .await
    .map_err(anyhow::Error::from)??;
    let row = match (row, verified) {
        (Some(row), Verified::Yes) => row,
        (Some(row), Verified::YesRehash(new_hash)) => {
            state.db.set_password_hash(row.id, &new_hash).await?;
            row
        }
        _ => return Err(ApiError::InvalidCredentials("wrong email or password")),
    };
    // Failures before a success no longer count against the user.
    state.limiter.reset(&scope).await;
    start_session(&state, &headers, row.into_user()).await
}

/// Issues a fresh session (never reusing the one the client had) and
/// answers 200 with the user and the cookie.
async fn start_session(state: &AppState, headers: &HeaderMap, user: User) -> ApiResult<Response> {
    let ttl = state.settings.session_ttl;
    if let Some(old) = session_cookie(headers) {
        state
            .sessions
            .delete(&sessions::hash_id(&old))
            .await
            .map_err(ApiError::unavailable("session store"))?;
    }
    let id = sessions::new_session_id()?;
    state
        .sessions
        .create(&sessions::hash_id(&id), user.id, ttl)
        .await
        .map_err(ApiError::unavailable("session store"))?;
    let secure = if state.settings.cookie_secure {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!(
        "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}{secure}",
        ttl.as_secs()
    );
    let mut response = Json(user).into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).map_err(anyhow::Error::from)?,
    );
    Ok(response)
}

fn clear_cookie(state: &AppState) -> Response {
    let secure = if state.settings.cookie_secure {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0{secure}");
    let mut response = StatusCode::NO_CONTENT.into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
}

async fn logout(State(state): State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    if let Some(id) = session_cookie(&headers) {
        state
            .sessions
            .delete(&sessions::hash_id(&id))
            .await
            .map_err(ApiError::unavailable("session store"))?;
    }
    Ok(clear_cookie(&state))
}

/// Ends every session of the caller ("log out everywhere").
async fn logout_all(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
) -> ApiResult<Response> {
    state
        .sessions
        .delete_user(user.id)
        .await
        .map_err(ApiError::unavailable("session store"))?;
    Ok(clear_cookie(&state))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordBody {
    current_password: String,
    new_password: String,
}

/// Changes the caller's password: every session of the user ends (a stolen
/// session dies with the old password) and this client gets a fresh one.
/// Wrong current passwords count against the login limit of the email.
async fn change_password(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiJson(body): ApiJson<PasswordBody>,
) -> ApiResult<Response> {
    check_len(&body.new_password, 8, 128).map_err(|m| ApiError::field("new_password", m))?;
    let email =
        Email::parse(&user.email).map_err(|m| anyhow::anyhow!("stored email invalid: {m}"))?;
    let scope = Scope::Login(email.clone());
    enforce(&state, &scope).await?;
    let row = state
        .db
        .user_by_email(&email)
        .await?
        .ok_or(ApiError::NotAuthenticated)?;
    let (current, new) = (body.current_password, body.new_password);
    let (verified, new_hash) = tokio::task::spawn_blocking(move || {
        let verified = passwords::verify(&current, &row.password_hash)?;
        anyhow::Ok((verified, passwords::hash(&new)?))
    })
    .await
    .map_err(anyhow::Error::from)??;
    if verified == Verified::No {
        return Err(ApiError::InvalidCredentials("wrong current password"));
    }
    state.limiter.reset(&scope).await;
    state.db.set_password_hash(user.id, &new_hash).await?;
    state
        .sessions
        .delete_user(user.id)
        .await
        .map_err(ApiError::unavailable("session store"))?;
    start_session(&state, &HeaderMap::new(), user).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OtpBody {
    email: String,
}

async fn otp_request(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<OtpBody>,
) -> ApiResult<StatusCode> {
    let email = Email::parse(&body.email).map_err(|m| ApiError::field("email", m))?;
    enforce(&state, &Scope::OtpRequest(email.clone())).await?;
    state
        .jobs
        .enqueue(&Job::SendOtp {
            email: email.to_string(),
            request: uuid::Uuid::new_v4().simple().to_string(),
        })
        .await
        .map_err(|e| {
            tracing::error!(error = format!("{e:#}"), "cannot queue the one-time code");
            ApiError::Unavailable("job queue")
        })?;
    Ok(StatusCode::ACCEPTED)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OtpVerifyBody {
    email: String,
    otp: String,
}

async fn otp_verify(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<OtpVerifyBody>,
) -> ApiResult<Response> {
    let email = Email::parse(&body.email).map_err(|m| ApiError::field("email", m))?;
    if body.otp.len() > 32 {
        return Err(ApiError::field("otp", "must be the 6-digit code"));
    }
    let outcome = state
        .cache
        .otp_attempt(&email, body.otp.trim(), OTP_MAX_ATTEMPTS)
        .await
        .map_err(ApiError::unavailable("cache"))?;
    if outcome != OtpOutcome::Accepted {
        return Err(ApiError::InvalidCredentials("wrong or expired code"));
    }
    let user = state
        .db
        .user_by_email(&email)
        .await?
        .ok_or(ApiError::InvalidCredentials("wrong or expired code"))?;
    start_session(&state, &headers, user.into_user()).await
}

async fn me(AuthUser(user): AuthUser) -> Json<User> {
    Json(user)
}
