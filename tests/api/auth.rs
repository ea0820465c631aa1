//! Registration, password login, sessions, logout, OTP login.

use serde_json::{Value, json};
use stayafrica::passwords;

use crate::helpers::{TestDb, code_in, error_code, spawn_app};
use crate::on_each_setup;

on_each_setup!(
    register_login_me_logout,
    duplicate_email_conflicts,
    otp_login_flow,
    django_user_is_rehashed,
    otp_job_redelivered_mails_one_code
);

async fn register_login_me_logout(db: TestDb) -> anyhow::Result<()> {
    let app = spawn_app(db).await?;
    let r = app
        .post("/api/v1/auth/register", &json!({"email": "Amara@Example.com", "password": "password123", "full_name": "Amara Okafor", "role": "guest"}))
        .await?;
    assert_eq!(r.status(), 201);
    let user: Value = r.json().await?;
    assert_eq!(user["email"], "amara@example.com");
    assert_eq!(user["role"], "guest");
    assert!(user.get("password_hash").is_none());

    assert_eq!(app.get("/api/v1/me").await?.status(), 401);

    let r = app
        .post(
            "/api/v1/auth/login",
            &json!({"email": "amara@example.com", "password": "password123"}),
        )
        .await?;
    assert_eq!(r.status(), 200);
    let cookie = r
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(cookie.starts_with("sessionid="), "{cookie}");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    let sid = cookie
        .trim_start_matches("sessionid=")
        .split(';')
        .next()
        .unwrap_or_default()
        .to_owned();

    let me: Value = app.get("/api/v1/me").await?.json().await?;
    assert_eq!(me["id"], user["id"]);

    // A second login issues a different id (no fixation) and ends the old one.
    let r = app
        .post(
            "/api/v1/auth/login",
            &json!({"email": "amara@example.com", "password": "password123"}),
        )
        .await?;
    let cookie2 = r
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(!cookie2.contains(&sid));
    let old = reqwest::Client::new()
        .get(app.url("/api/v1/me"))
        .header("cookie", format!("sessionid={sid}"))
        .send()
        .await?;
    assert_eq!(old.status(), 401);

    // Logout deletes the session server-side: replaying the cookie fails.
    let sid2 = cookie2
        .trim_start_matches("sessionid=")
        .split(';')
        .next()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(
        app.client
            .post(app.url("/api/v1/auth/logout"))
            .send()
            .await?
            .status(),
        204
    );
    let replay = reqwest::Client::new()
        .get(app.url("/api/v1/me"))
        .header("cookie", format!("sessionid={sid2}"))
        .send()
        .await?;
    assert_eq!(replay.status(), 401);

    let r = app
        .post(
            "/api/v1/auth/login",
            &json!({"email": "amara@example.com", "password": "wrong-password"}),
        )
        .await?;
    assert_eq!(r.status(), 401);
    assert_eq!(error_code(r).await?, "invalid_credentials");
    let r = app
        .post(
            "/api/v1/auth/login",
            &json!({"email": "nobody@example.com", "password": "password123"}),
        )
        .await?;
    assert_eq!(error_code(r).await?, "invalid_credentials");

    // Log out everywhere ends every session of the user.
    let other = app.new_client();
    for c in [&app.client, &other] {
        let r = c
            .post(app.url("/api/v1/auth/login"))
            .json(&json!({"email": "amara@example.com", "password": "password123"}))
            .send()
            .await?;
        assert_eq!(r.status(), 200);
    }
    assert_eq!(other.get(app.url("/api/v1/me")).send().await?.status(), 200);
    assert_eq!(
        app.client
            .post(app.url("/api/v1/auth/logout-all"))
            .send()
            .await?
            .status(),
        204
    );
    assert_eq!(other.get(app.url("/api/v1/me")).send().await?.status(), 401);
    Ok(())
}

async fn duplicate_email_conflicts(db: TestDb) -> anyhow::Result<()> {
    let app = spawn_app(db).await?;
    let body = json!({"email": "kofi@example.com", "password": "password123", "full_name": "Kofi", "role": "host"});
    assert_eq!(
        app.post("/api/v1/auth/register", &body).await?.status(),
        201
    );
    let r = app.post("/api/v1/auth/register", &body).await?;
    assert_eq!(r.status(), 409);
    assert_eq!(error_code(r).await?, "conflict");
    let r = app
        .post(
            "/api/v1/auth/register",
            &json!({"email": "bad", "password": "short", "full_name": "", "role": "guest"}),
        )
        .await?;
    assert_eq!(r.status(), 422);
    let v: Value = r.json().await?;
    for field in ["email", "password", "full_name"] {
        assert!(
            v["error"]["details"][field].is_string(),
            "{field} not reported: {v}"
        );
    }
    let r = app
        .post("/api/v1/auth/register", &json!({"email": "a@b.com", "password": "password123", "full_name": "A", "role": "admin"}))
        .await?;
    assert_eq!(r.status(), 400);
    Ok(())
}

async fn otp_login_flow(db: TestDb) -> anyhow::Result<()> {
    let app = spawn_app(db).await?;
    app.signup_with(&app.new_client(), "nia@example.com", "guest")
        .await?;

    // Unknown email: 202 as well, and nothing is sent.
    assert_eq!(
        app.post("/api/v1/auth/otp", &json!({"email": "ghost@example.com"}))
            .await?
            .status(),
        202
    );
    app.drain_jobs().await?;
    assert!(app.emails().is_empty());

    // The email is produced by the job, not by the request.
    assert_eq!(
        app.post("/api/v1/auth/otp", &json!({"email": "nia@example.com"}))
            .await?
            .status(),
        202
    );
    assert!(app.emails().is_empty());
    app.drain_jobs().await?;
    let mails = app.emails();
    assert_eq!(mails.len(), 1);
    assert!(mails[0].contains("To: nia@example.com"));
    let code = code_in(&mails[0]).ok_or_else(|| anyhow::anyhow!("no code in {}", mails[0]))?;

    let r = app
        .post(
            "/api/v1/auth/otp/verify",
            &json!({"email": "nia@example.com", "otp": code}),
        )
        .await?;
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("set-cookie").is_some());
    assert_eq!(app.get("/api/v1/me").await?.status(), 200);
    // Single use.
    let r = app
        .post(
            "/api/v1/auth/otp/verify",
            &json!({"email": "nia@example.com", "otp": code}),
        )
        .await?;
    assert_eq!(r.status(), 401);

    // Five wrong tries kill the code, even the right one afterwards.
    app.post("/api/v1/auth/otp", &json!({"email": "nia@example.com"}))
        .await?;
    app.drain_jobs().await?;
    let code = app
        .emails()
        .last()
        .and_then(|m| code_in(m))
        .unwrap_or_default();
    let wrong = if code == "000000" { "111111" } else { "000000" };
    for _ in 0..5 {
        let r = app
            .post(
                "/api/v1/auth/otp/verify",
                &json!({"email": "nia@example.com", "otp": wrong}),
            )
            .await?;
        assert_eq!(r.status(), 401);
    }
    let r = app
        .post(
            "/api/v1/auth/otp/verify",
            &json!({"email": "nia@example.com", "otp": code}),
        )
        .await?;
    assert_eq!(r.status(), 401);
    Ok(())
}

async fn django_user_is_rehashed(db: TestDb) -> anyhow::Result<()> {
    let app = spawn_app(db).await?;
    let django = passwords::django_hash("oldpassword1", "legacysalt", 1000);
    app.db()
        .create_user(&stayafrica::db::users::NewUser {
            email: "legacy@example.com",
            password_hash: &django,
            full_name: "Legacy User",
            role: stayafrica::domain::Role::Guest,
            created_at: time::OffsetDateTime::now_utc(),
        })
        .await?;
    let r = app
        .post(
            "/api/v1/auth/login",
            &json!({"email": "legacy@example.com", "password": "wrongpassword"}),
        )
        .await?;
    assert_eq!(r.status(), 401);
    let r = app
        .post(
            "/api/v1/auth/login",
            &json!({"email": "legacy@example.com", "password": "oldpassword1"}),
        )
        .await?;
    assert_eq!(r.status(), 200);
    let email =
        stayafrica::domain::Email::parse("legacy@example.com").map_err(anyhow::Error::msg)?;
    let row = app
        .db()
        .user_by_email(&email)
        .await?
        .ok_or_else(|| anyhow::anyhow!("user gone"))?;
    assert!(
        row.password_hash.starts_with("$argon2id$"),
        "not rehashed: {}",
        row.password_hash
    );
    let r = app
        .post(
            "/api/v1/auth/login",
            &json!({"email": "legacy@example.com", "password": "oldpassword1"}),
        )
        .await?;
    assert_eq!(r.status(), 200);
    Ok(())
}

/// A redelivered one-time-code job (same request) does not mail a second
/// code, which would silently void the first.
async fn otp_job_redelivered_mails_one_code(db: TestDb) -> anyhow::Result<()> {
    let app = spawn_app(db).await?;
    app.signup_with(&app.new_client(), "esi@example.com", "guest")
        .await?;
    let job = stayafrica::jobs::Job::SendOtp {
        email: "esi@example.com".into(),
        request: "req-1".into(),
    };
    app.state.jobs.enqueue(&job).await?;
    app.state.jobs.enqueue(&job).await?;
    assert_eq!(app.drain_jobs().await?, 2);
    let mails = app.emails();
    assert_eq!(mails.len(), 1);
    let code = code_in(&mails[0]).ok_or_else(|| anyhow::anyhow!("no code"))?;
    let r = app
        .post(
            "/api/v1/auth/otp/verify",
            &json!({"email": "esi@example.com", "otp": code}),
        )
        .await?;
    assert_eq!(r.status(), 200);
    Ok(())
}
