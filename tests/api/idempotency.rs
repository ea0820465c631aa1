//! `Idempotency-Key` (API.md): retries of a creating request get the first
//! answer and change nothing, on every setup (records in the database on
//! the embedded default and PostgreSQL alone, on the sessions role's Redis
//! otherwise).

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestDb, day, error_code, property_body, spawn_app};
use crate::on_each_setup;

on_each_setup!(
    concurrent_retries_make_one_booking,
    a_client_that_gives_up_can_retry_without_a_second_booking,
    registration_and_property_retries_replay,
);

async fn host_and_property(app: &TestApp) -> anyhow::Result<i64> {
    let host = app.new_client();
    app.signup_with(&host, "host@example.com", "host").await?;
    let p = app
        .create_property_with(&host, property_body("Kigali", "70.00", false))
        .await?;
    Ok(p["id"].as_i64().unwrap_or_default())
}

async fn bookings_of(app: &TestApp, guest: &reqwest::Client) -> anyhow::Result<i64> {
    let v: Value = guest
        .get(app.url("/api/v1/bookings"))
        .send()
        .await?
        .json()
        .await?;
    Ok(v["count"].as_i64().unwrap_or(-1))
}

async fn concurrent_retries_make_one_booking(db: TestDb) -> anyhow::Result<()> {
    let app = spawn_app(db).await?;
    let pid = host_and_property(&app).await?;
    let guest = app.new_client();
    app.signup_with(&guest, "guest@example.com", "guest")
        .await?;
    let body = json!({"property_id": pid, "check_in": day(5), "check_out": day(8), "guests": 2});
    let send = |body: Value, key: &'static str| {
        guest
            .post(app.url("/api/v1/bookings"))
            .header("Idempotency-Key", key)
            .json(&body)
            .send()
    };
    let answers =
        futures::future::join_all((0..20).map(|_| send(body.clone(), "book-once-1"))).await;
    let mut created = Vec::new();
    for r in answers {
        let r = r?;
        match r.status() {
            StatusCode::CREATED => created.push(r.text().await?),
            StatusCode::CONFLICT => {
                assert_eq!(error_code(r).await?, "conflict");
            }
            other => anyhow::bail!("answer {other}"),
        }
    }
    assert!(!created.is_empty());
    assert!(
        created.iter().all(|b| *b == created[0]),
        "one body: {created:?}"
    );
    assert_eq!(bookings_of(&app, &guest).await?, 1, "one booking");

    // A retry after the first finished: the first answer, replayed.
    let r = send(body.clone(), "book-once-1").await?;
    assert_eq!(r.status(), 201);
    assert_eq!(
        r.headers()
            .get("idempotent-replayed")
            .and_then(|v| v.to_str().ok()),
        Some("true")
    );
    assert_eq!(r.text().await?, created[0]);
    assert_eq!(bookings_of(&app, &guest).await?, 1);

    // The key with another body: 422.
    let other = json!({"property_id": pid, "check_in": day(20), "check_out": day(22), "guests": 1});
    let r = send(other, "book-once-1").await?;
    assert_eq!(r.status(), 422);

    // Another user's key of the same name is theirs: no replay of ours.
    let second = app.new_client();
    app.signup_with(&second, "second@example.com", "guest")
        .await?;
    let theirs =
        json!({"property_id": pid, "check_in": day(30), "check_out": day(31), "guests": 1});
    let r = second
        .post(app.url("/api/v1/bookings"))
        .header("Idempotency-Key", "book-once-1")
        .json(&theirs)
        .send()
        .await?;
    assert_eq!(r.status(), 201);
    assert!(r.headers().get("idempotent-replayed").is_none());

    // A bad key is a bad request.
    let r = guest
        .post(app.url("/api/v1/bookings"))
        .header("Idempotency-Key", "has a space")
        .json(&body)
        .send()
        .await?;
    assert_eq!(r.status(), 400);
    Ok(())
}

async fn a_client_that_gives_up_can_retry_without_a_second_booking(
    db: TestDb,
) -> anyhow::Result<()> {
    let app = spawn_app(db).await?;
    let pid = host_and_property(&app).await?;
    let guest = app.new_client();
    app.signup_with(&guest, "quitter@example.com", "guest")
        .await?;
    for (i, give_up_ms) in [1u64, 3, 8, 20].into_iter().enumerate() {
        let start = 10 + i as i64 * 5;
        let body = json!({"property_id": pid, "check_in": day(start), "check_out": day(start + 2), "guests": 1});
        let key = format!("quit-{i}");
        // The first attempt gives up after a few milliseconds: it may have
        // been cut before, during or after the booking was written.
        let _ = guest
            .post(app.url("/api/v1/bookings"))
            .header("Idempotency-Key", &key)
            .timeout(Duration::from_millis(give_up_ms))
            .json(&body)
            .send()
            .await;
        // Retries until an answer: exactly one booking, never a 409 against
        // the client's own booking of those dates.
        let mut answer = None;
        for _ in 0..100 {
            let r = guest
                .post(app.url("/api/v1/bookings"))
                .header("Idempotency-Key", &key)
                .json(&body)
                .send()
                .await?;
            if r.status() == StatusCode::CONFLICT {
                let code = error_code(r).await?;
                assert_eq!(code, "conflict");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            answer = Some(r.status());
            break;
        }
        assert_eq!(answer, Some(StatusCode::CREATED), "attempt {i}");
        assert_eq!(
            bookings_of(&app, &guest).await?,
            i as i64 + 1,
            "attempt {i}"
        );
    }
    Ok(())
}

async fn registration_and_property_retries_replay(db: TestDb) -> anyhow::Result<()> {
    let app = spawn_app(db).await?;
    let body = json!({"email": "retry@example.com", "password": "password123", "full_name": "Retry", "role": "host"});
    let register = || {
        app.client
            .post(app.url("/api/v1/auth/register"))
            .header("Idempotency-Key", "register-retry")
            .json(&body)
            .send()
    };
    let first = register().await?;
    assert_eq!(first.status(), 201);
    let first = first.text().await?;
    let again = register().await?;
    assert_eq!(
        again.status(),
        201,
        "not a 409 against the client's own account"
    );
    assert_eq!(again.text().await?, first);
    // Without the key, the email is taken as before.
    let r = app.post("/api/v1/auth/register", &body).await?;
    assert_eq!(r.status(), 409);

    let host = app.new_client();
    let r = host
        .post(app.url("/api/v1/auth/login"))
        .json(&json!({"email": "retry@example.com", "password": "password123"}))
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    let create = || {
        host.post(app.url("/api/v1/properties"))
            .header("Idempotency-Key", "listing-1")
            .json(&property_body("Accra", "55.00", false))
            .send()
    };
    let a = create().await?;
    assert_eq!(a.status(), 201);
    let a: Value = a.json().await?;
    let b = create().await?;
    assert_eq!(b.status(), 201);
    let b: Value = b.json().await?;
    assert_eq!(a["id"], b["id"], "one listing");
    let list: Value = app
        .get("/api/v1/properties?city=Accra")
        .await?
        .json()
        .await?;
    assert_eq!(list["count"], 1);
    Ok(())
}
