//! The operator console, on its own listener (`STAYAFRICA_ADMIN_BIND`,
//! default `127.0.0.1:8001`): closed by default. Without
//! `STAYAFRICA_ADMIN_TOKEN` it answers loopback clients only; with it every
//! client signs in first (the token, exchanged for an HttpOnly,
//! SameSite=Strict cookie; the JSON API answers 401 without it). Every
//! state-changing action checks `Origin`/`Sec-Fetch-Site`, is refused in
//! read-only mode (`STAYAFRICA_ADMIN_READ_ONLY`), and is written to the
//! audit log (database), refused ones included.
//!
//! This is the console's first part: the overview (roles up/down with
//! their round-trip time, requests answered by this process, the cache's
//! hit counts per family, the job queue) as a page that refreshes itself
//! and as `GET /admin/api/overview`; invalidating a cache family
//! (`POST /admin/api/cache/invalidate`, `{"family": "property_list"}`);
//! the audit log (`GET /admin/api/audit`). The reads and actions are the
//! roles' own (`Cache::hit_counts`, `Cache::invalidate_family`, …).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use maud::{DOCTYPE, html};
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;

use super::AppState;

/// The console's sign-in cookie.
const COOKIE: &str = "sa_admin";

/// How long a console sign-in lasts.
const SIGN_IN_TTL: Duration = Duration::from_secs(12 * 3600);

/// Console sign-ins held at most (the oldest go first).
const MAX_SIGN_INS: usize = 1000;

/// Longest a role's check may take in the overview.
const CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// What the console's handlers share.
#[derive(Clone)]
struct Console {
    app: AppState,
    /// Signed-in console sessions of this process: id -> expiry.
    sign_ins: Arc<Mutex<HashMap<String, Instant>>>,
}

/// Who acts, as the audit log names them.
#[derive(Debug, Clone)]
struct Actor(String);

/// The console's router (serve it with `ConnectInfo<SocketAddr>`).
pub fn router(app: AppState) -> Router {
    let console = Console {
        app,
        sign_ins: Arc::new(Mutex::new(HashMap::new())),
    };
    let guarded = Router::new()
        .route("/", get(overview_page))
        .route("/admin/api/overview", get(overview_json))
        .route("/admin/api/audit", get(audit_json))
        .route("/admin/api/cache/invalidate", post(invalidate))
        .layer(axum::middleware::from_fn_with_state(
            console.clone(),
            authorize,
        ));
    Router::new()
        .route("/login", get(login_page).post(login))
        .merge(guarded)
        .with_state(console)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Whether a client may use the console without signing in: only from
/// this machine, and only when no token is configured.
pub fn open_to(peer: IpAddr, token_set: bool) -> bool {
    !token_set && peer.to_canonical().is_loopback()
}

fn error(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(json!({"error": {"code": match status {
            StatusCode::UNAUTHORIZED => "not_authenticated",
            StatusCode::FORBIDDEN => "forbidden",
            StatusCode::UNPROCESSABLE_ENTITY => "validation_failed",
            _ => "unavailable",
        }, "message": message}})),
    )
        .into_response()
}

fn cookie_value(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_owned())
}

/// Lets a request through as an [`Actor`], or answers 401/403 (pages
/// without a sign-in go to the sign-in page).
async fn authorize(
    State(c): State<Console>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut req: Request,
    next: Next,
) -> Response {
    let api = req.uri().path().starts_with("/admin/api/");
    let actor = match &c.app.settings.admin_token {
        None if open_to(peer.ip(), false) => Actor(format!("loopback {}", peer.ip())),
        None => {
            return error(
                StatusCode::FORBIDDEN,
                "the console answers loopback clients only",
            );
        }
        Some(_) => {
            let now = Instant::now();
            let held = cookie_value(req.headers()).filter(|id| {
                lock(&c.sign_ins)
                    .get(id)
                    .is_some_and(|expires| *expires > now)
            });
            match held {
                Some(id) => Actor(format!("token sign-in {}", &id[..8.min(id.len())])),
                None if api => return error(StatusCode::UNAUTHORIZED, "sign in first"),
                None => return Redirect::to("/login").into_response(),
            }
        }
    };
    req.extensions_mut().insert(actor);
    next.run(req).await
}

async fn login_page() -> Html<String> {
    Html(
        html! {
            (DOCTYPE)
            html { head { title { "StayAfrica console: sign in" } }
                body {
                    h1 { "StayAfrica console" }
                    form method="post" action="/login" {
                        label { "Token " input type="password" name="token" autofocus; }
                        button type="submit" { "Sign in" }
                    }
                }
            }
        }
        .into_string(),
    )
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

/// Exchanges the token for a console cookie.
async fn login(
    State(c): State<Console>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Form(form): Form<LoginForm>,
) -> Response {
    let Some(token) = &c.app.settings.admin_token else {
        return Redirect::to("/").into_response();
    };
    let ok: bool = token
        .expose_secret()
        .as_bytes()
        .ct_eq(form.token.as_bytes())
        .into();
    let actor = format!("sign-in from {}", peer.ip());
    if !ok {
        audit(
            &c.app,
            &Actor(actor),
            "sign_in",
            "console",
            "refused: wrong token",
        )
        .await;
        return error(StatusCode::UNAUTHORIZED, "wrong token");
    }
    let Ok(id) = crate::sessions::new_session_id() else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "no randomness");
    };
    {
        let mut held = lock(&c.sign_ins);
        let now = Instant::now();
        held.retain(|_, expires| *expires > now);
        if held.len() >= MAX_SIGN_INS
            && let Some(oldest) = held.iter().min_by_key(|(_, e)| **e).map(|(k, _)| k.clone())
        {
            held.remove(&oldest);
        }
        held.insert(id.clone(), now + SIGN_IN_TTL);
    }
    audit(&c.app, &Actor(actor), "sign_in", "console", "ok").await;
    let cookie = format!(
        "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
        SIGN_IN_TTL.as_secs()
    );
    ([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response()
}

/// Appends to the audit log; a failure to do so is logged.
async fn audit(app: &AppState, actor: &Actor, action: &str, target: &str, result: &str) {
    if let Err(e) = app.db.audit(&actor.0, action, target, result).await {
        tracing::error!(
            error = format!("{e:#}"),
            action,
            "console action not audited"
        );
    }
}

/// Refuses an action from another site (a browser says so in `Origin` or
/// `Sec-Fetch-Site`) and every action in read-only mode.
fn action_refused(app: &AppState, headers: &HeaderMap) -> Option<&'static str> {
    if app.settings.admin_read_only {
        return Some("the console is read-only");
    }
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok())
        && site != "same-origin"
        && site != "none"
    {
        return Some("the request comes from another site");
    }
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        let host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let origin_host = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            .unwrap_or("");
        if host.is_empty() || origin_host != host {
            return Some("the request comes from another origin");
        }
    }
    None
}

#[derive(Deserialize)]
struct InvalidateBody {
    family: String,
}

/// `POST /admin/api/cache/invalidate`: makes a family stale everywhere.
async fn invalidate(
    State(c): State<Console>,
    axum::Extension(actor): axum::Extension<Actor>,
    headers: HeaderMap,
    body: Result<Json<InvalidateBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Ok(Json(body)) = body else {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "expected {\"family\": \"…\"}",
        );
    };
    let target = format!("cache family {}", body.family);
    if let Some(why) = action_refused(&c.app, &headers) {
        audit(
            &c.app,
            &actor,
            "cache.invalidate",
            &target,
            &format!("refused: {why}"),
        )
        .await;
        return error(StatusCode::FORBIDDEN, why);
    }
    match c.app.cache.invalidate_family(&body.family).await {
        Ok(true) => {
            audit(&c.app, &actor, "cache.invalidate", &target, "ok").await;
            Json(json!({"family": body.family, "invalidated": true})).into_response()
        }
        Ok(false) => {
            audit(
                &c.app,
                &actor,
                "cache.invalidate",
                &target,
                "refused: no such family",
            )
            .await;
            error(StatusCode::UNPROCESSABLE_ENTITY, "no such family")
        }
        Err(e) => {
            audit(
                &c.app,
                &actor,
                "cache.invalidate",
                &target,
                &format!("error: {e:#}"),
            )
            .await;
            error(StatusCode::SERVICE_UNAVAILABLE, "the cache is unavailable")
        }
    }
}

/// Times one check of a role.
async fn timed<F, T>(f: F) -> Value
where
    F: std::future::Future<Output = anyhow::Result<T>>,
{
    let started = Instant::now();
    let status = match tokio::time::timeout(CHECK_TIMEOUT, f).await {
        Ok(Ok(_)) => "ok",
        Ok(Err(_)) => "error",
        Err(_) => "timeout",
    };
    json!({"status": status, "rtt_ms": started.elapsed().as_secs_f64() * 1000.0})
}

/// The overview's figures.
async fn overview(app: &AppState) -> Value {
    let (database, cache, sessions, ratelimit, jobs) = tokio::join!(
        timed(app.db.ping()),
        timed(app.cache.store().ping()),
        timed(app.sessions.ping()),
        timed(app.limiter.ping()),
        timed(app.jobs.backend().counts()),
    );
    let counts = app.jobs.backend().counts().await.ok();
    let hits = app.cache.hit_counts().await.ok();
    let [total, ok, client, server] = app.requests.traffic();
    json!({
        "roles": {"database": database, "cache": cache, "sessions": sessions,
                  "ratelimit": ratelimit, "jobs": jobs},
        "requests": {"total": total, "2xx_3xx": ok, "4xx": client, "5xx": server},
        "cache": hits,
        "jobs": counts.map(|c| json!({"queued": c.queued, "running": c.running, "dead": c.dead})),
        "read_only": app.settings.admin_read_only,
        "embedded": app.settings.is_embedded(),
    })
}

async fn overview_json(State(c): State<Console>) -> Json<Value> {
    Json(overview(&c.app).await)
}

async fn audit_json(State(c): State<Console>) -> Response {
    match c.app.db.audit_log(200).await {
        Ok(entries) => Json(json!({"entries": entries})).into_response(),
        Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the database is unavailable",
        ),
    }
}

/// The overview page: the figures as the server sees them now, refreshed
/// by polling the JSON endpoint every two seconds; one form per cache
/// family (with a confirmation) unless read-only.
async fn overview_page(State(c): State<Console>) -> Html<String> {
    let o = overview(&c.app).await;
    let read_only = c.app.settings.admin_read_only;
    let pretty = serde_json::to_string_pretty(&o).unwrap_or_default();
    Html(
        html! {
            (DOCTYPE)
            html {
                head {
                    title { "StayAfrica console" }
                    style { "body{font-family:sans-serif;margin:2em}pre{background:#f4f4f4;padding:1em}" }
                }
                body {
                    h1 { "StayAfrica console: overview" }
                    p { "Requests answered by this process: " span id="requests" { (o["requests"]["total"]) } }
                    pre id="overview" { (pretty) }
                    h2 { "Cache families" }
                    @if read_only {
                        p { "Read-only: no actions." }
                    } @else {
                        @for family in crate::cache::policy::FAMILIES {
                            button class="invalidate" data-family=(family) { "Invalidate " (family) }
                            " "
                        }
                    }
                    p { a href="/admin/api/audit" { "Audit log (JSON)" } }
                    script { (maud::PreEscaped(SCRIPT)) }
                }
            }
        }
        .into_string(),
    )
}

/// The page's live updates and its confirmed actions.
const SCRIPT: &str = r#"
async function refresh() {
  try {
    const r = await fetch('/admin/api/overview');
    if (r.ok) {
      const o = await r.json();
      document.getElementById('overview').textContent = JSON.stringify(o, null, 2);
      document.getElementById('requests').textContent = o.requests.total;
    }
  } catch (e) {}
}
setInterval(refresh, 2000);
for (const b of document.querySelectorAll('button.invalidate')) {
  b.addEventListener('click', async () => {
    const family = b.dataset.family;
    if (!confirm('Invalidate every cached ' + family + ' entry on every instance?')) return;
    const r = await fetch('/admin/api/cache/invalidate', {method: 'POST',
      headers: {'Content-Type': 'application/json'}, body: JSON.stringify({family})});
    alert(r.ok ? family + ' invalidated' : 'refused: ' + (await r.text()));
    refresh();
  });
}
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_without_a_token() {
        let ip = |s: &str| s.parse().unwrap_or(IpAddr::from([8, 8, 8, 8]));
        assert!(open_to(ip("127.0.0.1"), false));
        assert!(open_to(ip("::1"), false));
        assert!(open_to(ip("::ffff:127.0.0.1"), false));
        assert!(!open_to(ip("10.0.0.5"), false));
        assert!(
            !open_to(ip("127.0.0.1"), true),
            "with a token, loopback signs in too"
        );
    }
}
