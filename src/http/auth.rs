//! Sign-in: registration, password login, one-time-code login, logout
//! (this session or all of the user's sessions), and `/me`.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::client::Client;
use super::extract::{ApiJson, AuthUser};
use super::limits;
use super::middleware::session_cookie;
use super::openapi::ErrorBody;
use crate::cache::OtpOutcome;
use crate::db::users::{NewUser, User};
use crate::domain::{Email, Role, check_len, check_text};
use crate::error::{ApiError, ApiResult, FieldErrors};
use crate::jobs::Job;
use crate::passwords::Verified;
use crate::ratelimit::Scope;
use crate::sessions::{self, COOKIE};

/// Routes of `/api/v1/auth/*` and `/api/v1/me`, each with its description.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register))
        .routes(routes!(login))
        .routes(routes!(logout))
        .routes(routes!(logout_all))
        .routes(routes!(change_password))
        .routes(routes!(otp_request))
        .routes(routes!(otp_verify))
        .routes(routes!(me))
}

/// Body of `POST /api/v1/auth/register`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct RegisterBody {
    #[schema(format = Email, max_length = 254, example = "amara@example.com")]
    email: String,
    #[schema(min_length = 8, max_length = 128)]
    password: String,
    #[schema(min_length = 1, max_length = 200)]
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

#[utoipa::path(post, path = "/api/v1/auth/register", tag = "auth",
    params(("Idempotency-Key" = Option<String>, Header, description = "1 to 255 printable ASCII characters: a retry with the same key and body within 24 hours gets the first answer again (`Idempotent-Replayed: true`) and changes nothing; another body is 422, a retry while the first runs 409")),
    request_body = RegisterBody,
    responses(
        (status = 201, description = "The new user", body = User),
        (status = 409, description = "`conflict`: the email is already registered", body = ErrorBody),
        (status = 422, description = "`validation_failed`: email, password or name breaks a rule", body = ErrorBody),
    ))]
async fn register(
    State(state): State<AppState>,
    Client(client): Client,
    ApiJson(body): ApiJson<RegisterBody>,
) -> ApiResult<Response> {
    // Every attempt counts, invalid ones included.
    let decision = limits::enforce(&state, &[Scope::Register(client)]).await?;
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
    let hash = state.hasher.hash(body.password).await?;
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
    Ok(limits::noted(
        (StatusCode::CREATED, Json(user)).into_response(),
        decision,
    ))
}

/// Body of `POST /api/v1/auth/login`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    #[schema(format = Email, max_length = 254)]
    email: String,
    #[schema(max_length = 128)]
    password: String,
}

/// Password login; a fresh session id every time (no fixation).
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth",
    request_body = LoginBody,
    responses(
        (status = 200, description = "Signed in: the user, and the session cookie", body = User,
            headers(("Set-Cookie" = String, description = "`sessionid=…; Path=/; HttpOnly; SameSite=Lax; Max-Age=…` (and `Secure` when configured)"))),
        (status = 401, description = "`invalid_credentials`: wrong email or password", body = ErrorBody),
        (status = 422, description = "`validation_failed`: not an email address", body = ErrorBody),
    ))]
async fn login(
    State(state): State<AppState>,
    Client(client): Client,
    headers: HeaderMap,
    ApiJson(body): ApiJson<LoginBody>,
) -> ApiResult<Response> {
    let email = Email::parse(&body.email).map_err(|m| ApiError::field("email", m))?;
    let scope = Scope::Login(email.clone(), client);
    let decision =
        limits::enforce_with_ceiling(&state, &scope, &Scope::LoginEmail(email.clone())).await?;
    // No account has a longer password: refuse without hashing megabytes.
    if body.password.chars().count() > 128 {
        return Err(ApiError::InvalidCredentials("wrong email or password"));
    }
    let row = state.db.user_by_email(&email).await?;
    let stored = row.as_ref().map(|r| r.password_hash.clone());
    // Same work whether or not the email is registered.
    let verified = state.hasher.verify(body.password, stored).await?;
    let row = match (row, verified) {
        (Some(row), Verified::Yes) => row,
        (Some(row), Verified::YesRehash(new_hash)) => {
            state.db.set_password_hash(row.id, &new_hash).await?;
            row
        }
        _ => return Err(ApiError::InvalidCredentials("wrong email or password")),
    };
    // Failures before a success no longer count against this client.
    state.limiter.reset(&scope).await;
    Ok(limits::noted(
        start_session(&state, &headers, row.into_user()).await?,
        decision,
    ))
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
    let cookie = session_cookie_for(state, id, ttl);
    Ok((CookieJar::new().add(cookie), Json(user)).into_response())
}

/// The `sessionid` cookie as `API.md` wants it: HttpOnly, SameSite=Lax, the
/// whole site, `Secure` when configured.
fn session_cookie_for(
    state: &AppState,
    value: String,
    ttl: std::time::Duration,
) -> Cookie<'static> {
    Cookie::build((COOKIE, value))
        .path("/")
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(state.settings.cookie_secure)
        .max_age(time::Duration::seconds(
            i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX),
        ))
        .build()
}

/// 204 with the session cookie expired, so the browser forgets it.
fn clear_cookie(state: &AppState) -> Response {
    let cookie = session_cookie_for(state, String::new(), std::time::Duration::ZERO);
    (CookieJar::new().add(cookie), StatusCode::NO_CONTENT).into_response()
}

/// Ends this session server-side; fine without one.
#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "auth",
    security((), ("sessionid" = [])),
    responses(
        (status = 204, description = "Signed out; the cookie is expired",
            headers(("Set-Cookie" = String, description = "`sessionid=` with `Max-Age=0`"))),
    ))]
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
#[utoipa::path(post, path = "/api/v1/auth/logout-all", tag = "auth",
    security(("sessionid" = [])),
    responses(
        (status = 204, description = "Every session of the caller ended; the cookie is expired",
            headers(("Set-Cookie" = String, description = "`sessionid=` with `Max-Age=0`"))),
        (status = 401, description = "`not_authenticated`", body = ErrorBody),
    ))]
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

/// Body of `POST /api/v1/auth/password`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct PasswordBody {
    #[schema(max_length = 128)]
    current_password: String,
    #[schema(min_length = 8, max_length = 128)]
    new_password: String,
}

/// Changes the caller's password: every session of the user ends (a stolen
/// session dies with the old password) and this client gets a fresh one.
/// Wrong current passwords count against the login limit of the email.
#[utoipa::path(post, path = "/api/v1/auth/password", tag = "auth",
    request_body = PasswordBody,
    security(("sessionid" = [])),
    responses(
        (status = 200, description = "Changed: every other session ended, a fresh one for this client", body = User,
            headers(("Set-Cookie" = String, description = "`sessionid=…; Path=/; HttpOnly; SameSite=Lax; Max-Age=…` (and `Secure` when configured)"))),
        (status = 401, description = "`not_authenticated`, or `invalid_credentials`: wrong current password", body = ErrorBody),
        (status = 422, description = "`validation_failed`: the new password breaks a rule", body = ErrorBody),
    ))]
async fn change_password(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Client(client): Client,
    ApiJson(body): ApiJson<PasswordBody>,
) -> ApiResult<Response> {
    check_len(&body.new_password, 8, 128).map_err(|m| ApiError::field("new_password", m))?;
    let email =
        Email::parse(&user.email).map_err(|m| anyhow::anyhow!("stored email invalid: {m}"))?;
    let scope = Scope::Login(email.clone(), client);
    limits::enforce_with_ceiling(&state, &scope, &Scope::LoginEmail(email.clone())).await?;
    let row = state
        .db
        .user_by_email(&email)
        .await?
        .ok_or(ApiError::NotAuthenticated)?;
    let (verified, new_hash) = state
        .hasher
        .verify_and_hash(body.current_password, row.password_hash, body.new_password)
        .await?;
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

/// Body of `POST /api/v1/auth/otp`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct OtpBody {
    #[schema(format = Email, max_length = 254)]
    email: String,
}

/// Mails a one-time code (by a background job); 202 for an unknown email
/// too, so the answer tells nothing about who is registered.
#[utoipa::path(post, path = "/api/v1/auth/otp", tag = "auth",
    request_body = OtpBody,
    responses(
        (status = 202, description = "A code is on its way if the email is registered"),
        (status = 422, description = "`validation_failed`: not an email address", body = ErrorBody),
    ))]
async fn otp_request(
    State(state): State<AppState>,
    Client(client): Client,
    ApiJson(body): ApiJson<OtpBody>,
) -> ApiResult<StatusCode> {
    let email = Email::parse(&body.email).map_err(|m| ApiError::field("email", m))?;
    limits::enforce(&state, &[Scope::OtpClient(client)]).await?;
    limits::enforce_with_ceiling(
        &state,
        &Scope::OtpEmailClient(email.clone(), client),
        &Scope::OtpEmail(email.clone()),
    )
    .await?;
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

/// Body of `POST /api/v1/auth/otp/verify`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct OtpVerifyBody {
    #[schema(format = Email, max_length = 254)]
    email: String,
    /// The 6-digit code of the email.
    #[schema(pattern = "^[0-9]{6}$", example = "042917")]
    otp: String,
}

/// Signs in with a one-time code: single use, dead after 5 wrong tries.
#[utoipa::path(post, path = "/api/v1/auth/otp/verify", tag = "auth",
    request_body = OtpVerifyBody,
    responses(
        (status = 200, description = "Signed in: the user, and the session cookie", body = User,
            headers(("Set-Cookie" = String, description = "`sessionid=…; Path=/; HttpOnly; SameSite=Lax; Max-Age=…` (and `Secure` when configured)"))),
        (status = 401, description = "`invalid_credentials`: wrong, used or expired code", body = ErrorBody),
        (status = 422, description = "`validation_failed`: not an email address, or not a code", body = ErrorBody),
    ))]
async fn otp_verify(
    State(state): State<AppState>,
    Client(client): Client,
    headers: HeaderMap,
    ApiJson(body): ApiJson<OtpVerifyBody>,
) -> ApiResult<Response> {
    let email = Email::parse(&body.email).map_err(|m| ApiError::field("email", m))?;
    if body.otp.len() > 32 {
        return Err(ApiError::field("otp", "must be the 6-digit code"));
    }
    let outcome = state
        .cache
        .otp_attempt(&email, body.otp.trim())
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
    // Signed in: this client's requests for the email no longer count
    // against it (so the per-email ceiling an attacker fills does not bind
    // the owner's next request).
    state
        .limiter
        .reset(&Scope::OtpEmailClient(email, client))
        .await;
    start_session(&state, &headers, user.into_user()).await
}

/// The signed-in user.
#[utoipa::path(get, path = "/api/v1/me", tag = "auth",
    security(("sessionid" = [])),
    responses(
        (status = 200, description = "The caller", body = User),
        (status = 401, description = "`not_authenticated`", body = ErrorBody),
    ))]
async fn me(AuthUser(user): AuthUser) -> Json<User> {
    Json(user)
}
