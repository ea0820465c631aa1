//! The error contract: body shape, 413, 415, 400, 404, request ids,
//! throttling headers, health and metrics.

use serde_json::{Value, json};

use crate::helpers::{TestDb, TestOptions, error_code, spawn_app, spawn_app_with};

#[tokio::test]
async fn error_bodies_and_limits() -> anyhow::Result<()> {
    let app = spawn_app(TestDb::Sqlite).await?;
    // Not JSON content type -> 415.
    let r = app
        .client
        .post(app.url("/api/v1/auth/register"))
        .body("{}")
        .header("content-type", "text/plain")
        .send()
        .await?;
    assert_eq!(r.status(), 415);
    assert_eq!(error_code(r).await?, "unsupported_media_type");
    // Over 64 KiB -> 413.
    let big = json!({"email": "a@b.com", "password": "x".repeat(70_000), "full_name": "A", "role": "guest"});
    let r = app.post("/api/v1/auth/register", &big).await?;
    assert_eq!(r.status(), 413);
    // Broken JSON -> 400 with the error shape.
    let r = app
        .client
        .post(app.url("/api/v1/auth/login"))
        .body("{not json")
        .header("content-type", "application/json")
        .send()
        .await?;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await?;
    assert_eq!(v["error"]["code"], "invalid_request");
    assert!(v["error"]["message"].is_string());
    // Unknown route -> 404 JSON; every response has a request id.
    let r = app.get("/api/v1/nothing-here").await?;
    assert_eq!(r.status(), 404);
    assert!(r.headers().contains_key("x-request-id"));
    assert_eq!(error_code(r).await?, "not_found");
    // Wrong method on a known route -> 405 with the error body.
    let r = app.client.put(app.url("/api/v1/properties")).send().await?;
    assert_eq!(r.status(), 405);
    assert_eq!(error_code(r).await?, "method_not_allowed");
    // A given request id is echoed.
    let r = app
        .client
        .get(app.url("/health"))
        .header("x-request-id", "abc-123")
        .send()
        .await?;
    assert_eq!(
        r.headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok()),
        Some("abc-123")
    );
    Ok(())
}

#[tokio::test]
async fn anonymous_throttle_is_exact_with_headers() -> anyhow::Result<()> {
    let app = spawn_app_with(TestOptions {
        tweak: Box::new(|s| {
            s.throttles.set(
                stayafrica::ratelimit::Action::Anon,
                stayafrica::ratelimit::Rate::new(50, std::time::Duration::from_secs(3600)),
            )
        }),
        ..TestOptions::default()
    })
    .await?;
    let first = app.get("/api/v1/properties").await?;
    assert_eq!(
        first
            .headers()
            .get("x-ratelimit-limit")
            .and_then(|v| v.to_str().ok()),
        Some("50")
    );
    assert_eq!(
        first
            .headers()
            .get("x-ratelimit-remaining")
            .and_then(|v| v.to_str().ok()),
        Some("49")
    );
    let mut handles = Vec::new();
    for _ in 0..200 {
        let (c, url) = (app.client.clone(), app.url("/api/v1/properties"));
        handles.push(tokio::spawn(async move { c.get(url).send().await }));
    }
    let (mut ok, mut throttled) = (0, 0);
    for h in handles {
        let r = h.await??;
        match r.status().as_u16() {
            200 => ok += 1,
            429 => {
                throttled += 1;
                let retry: u64 = r
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                assert!(retry >= 1);
            }
            s => anyhow::bail!("unexpected status {s}"),
        }
    }
    assert_eq!((ok, throttled), (49, 151));
    // /health and /metrics are not throttled.
    assert_eq!(app.get("/health").await?.status(), 200);
    Ok(())
}

#[tokio::test]
async fn booking_attempts_are_limited() -> anyhow::Result<()> {
    let app = spawn_app(TestDb::Sqlite).await?;
    app.signup("guest@example.com", "guest").await?;
    for i in 0..5 {
        let r = app.post("/api/v1/bookings", &json!({"property_id": 12345, "check_in": "2030-01-01", "check_out": "2030-01-02", "guests": 1})).await?;
        assert_eq!(r.status(), 422, "attempt {i}");
        assert_eq!(
            r.headers()
                .get("x-ratelimit-limit")
                .and_then(|v| v.to_str().ok()),
            Some("5")
        );
    }
    let r = app.post("/api/v1/bookings", &json!({"property_id": 12345, "check_in": "2030-01-01", "check_out": "2030-01-02", "guests": 1})).await?;
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    Ok(())
}

/// Parses Prometheus text: every sample line is `name{labels} value`.
fn samples(text: &str) -> anyhow::Result<Vec<(String, f64)>> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (series, value) = l
                .rsplit_once(' ')
                .ok_or_else(|| anyhow::anyhow!("bad line {l}"))?;
            Ok((series.to_owned(), value.parse::<f64>()?))
        })
        .collect()
}

fn value(samples: &[(String, f64)], name: &str, labels: &[&str]) -> f64 {
    samples
        .iter()
        .filter(|(s, _)| s.starts_with(name) && labels.iter().all(|l| s.contains(l)))
        .map(|(_, v)| v)
        .sum()
}

#[tokio::test]
async fn health_and_metrics() -> anyhow::Result<()> {
    let app = spawn_app(TestDb::Sqlite).await?;
    let r = app.get("/health").await?;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await?;
    for part in [
        "status",
        "database",
        "cache",
        "sessions",
        "ratelimit",
        "jobs",
    ] {
        assert_eq!(v[part], "ok", "{part}: {v}");
    }
    app.get("/api/v1/properties/featured").await?;
    let labels = ["route=\"/api/v1/properties/featured\"", "status=\"200\""];
    let before = samples(&app.get("/metrics").await?.text().await?)?;
    for _ in 0..3 {
        app.get("/api/v1/properties/featured").await?;
    }
    let text = app.get("/metrics").await?.text().await?;
    let after = samples(&text)?;
    // The metrics recorder is process-wide and tests run in parallel: other
    // tests may add to the same series, never subtract.
    assert!(
        value(&after, "http_requests_total", &labels)
            >= value(&before, "http_requests_total", &labels) + 3.0
    );
    assert!(value(&after, "http_request_duration_seconds_count", &labels) >= 4.0);
    assert!(
        value(
            &after,
            "cache_requests_total",
            &["family=\"featured\"", "outcome=\"hit\""]
        ) >= 3.0,
        "{text}"
    );
    assert!(value(&after, "ratelimit_decisions_total", &["scope=\"anon\""]) >= 4.0);
    assert!(text.contains("jobs_queue_depth"), "{text}");
    Ok(())
}

crate::on_each_setup!(garbage_in_is_never_a_server_error);

/// Client mistakes are 4xx with the error body, never a 500 or a panic.
async fn garbage_in_is_never_a_server_error(db: TestDb) -> anyhow::Result<()> {
    let app = spawn_app(db).await?;
    app.signup("host@example.com", "host").await?;
    let bodies = [
        "null",
        "[]",
        "42",
        "\"text\"",
        "{}",
        "{\"property_id\": -1, \"check_in\": \"2030-01-01\", \"check_out\": \"2030-01-02\", \"guests\": 1}",
        "{\"property_id\": 9223372036854775807, \"check_in\": \"9999-12-31\", \"check_out\": \"9999-12-31\", \"guests\": 2147483647}",
        "{\"property_id\": 1, \"check_in\": \"+002030-01-01\", \"check_out\": \"2030-1-2\", \"guests\": -5}",
        "{\"title\": null, \"price_per_night\": \"99999999999999999999.99\", \"max_guests\": 1e9}",
        "{\"title\": \"\\u0000\", \"description\": \"x\", \"city\": \"\u{1F3E0}\", \"country\": \"K\", \"price_per_night\": \"1.00\", \"max_guests\": 1}",
        "{\"email\": \"a@b.com\", \"password\": [1,2], \"full_name\": {}, \"role\": \"host\"}",
        "{\"email\": \"a@b.com\", \"otp\": \"\"}",
        "{\"current_password\": \"\", \"new_password\": \"\"}",
        &format!("{}1{}", "[".repeat(200), "]".repeat(200)),
    ];
    let posts = [
        "/api/v1/bookings",
        "/api/v1/properties",
        "/api/v1/auth/register",
        "/api/v1/auth/login",
        "/api/v1/auth/otp",
        "/api/v1/auth/otp/verify",
        "/api/v1/auth/password",
    ];
    for path in posts {
        for body in &bodies {
            let r = app
                .client
                .post(app.url(path))
                .header("content-type", "application/json")
                .body(body.to_string())
                .send()
                .await?;
            let status = r.status().as_u16();
            assert!(
                (400..500).contains(&status),
                "POST {path} {body} -> {status}"
            );
            let v: Value = r.json().await?;
            assert!(v["error"]["code"].is_string(), "POST {path} {body} -> {v}");
        }
    }
    for query in [
        "page=99999999999",
        "page_size=-1",
        "min_price=-1",
        "max_price=1e3",
        "guests=99999999999",
        "city=",
        "city=%00",
        "page=1&page=2",
    ] {
        let r = app.get(&format!("/api/v1/properties?{query}")).await?;
        let status = r.status().as_u16();
        assert!(
            status == 200 || (400..500).contains(&status),
            "GET ?{query} -> {status}"
        );
    }
    for path in [
        "/api/v1/properties/0",
        "/api/v1/properties/-1",
        "/api/v1/properties/99999999999999999999",
        "/api/v1/bookings/abc/cancel",
    ] {
        let r = app.client.get(app.url(path)).send().await?;
        assert!(
            (400..500).contains(&r.status().as_u16()),
            "GET {path} -> {}",
            r.status()
        );
    }
    let r = app
        .client
        .patch(app.url("/api/v1/properties/1"))
        .json(&json!({"title": "x"}))
        .send()
        .await?;
    assert_eq!(r.status(), 404);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_over_its_deadline_is_a_503_not_a_hang() -> anyhow::Result<()> {
    let app = spawn_app_with(TestOptions {
        tweak: Box::new(|s| s.request_timeout = std::time::Duration::from_millis(2)),
        ..TestOptions::default()
    })
    .await?;
    // Hashing a password with argon2id takes far longer than 2 ms.
    let r = app
        .post("/api/v1/auth/register", &json!({"email": "slow@example.com", "password": "password123", "full_name": "Slow", "role": "guest"}))
        .await?;
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("x-request-id"));
    assert_eq!(error_code(r).await?, "unavailable");
    // Operations endpoints are not under the API deadline.
    assert_eq!(app.get("/health").await?.status(), 200);
    Ok(())
}

/// The database going away is a backing service down: 503, not 500; and the
/// service recovers by itself when it comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_down_is_503_and_recovers() -> anyhow::Result<()> {
    let app = spawn_app(TestDb::Postgres).await?;
    assert_eq!(
        app.get("/api/v1/properties?city=Accra").await?.status(),
        200
    );
    let name = app.db_url.rsplit('/').next().unwrap_or_default().to_owned();
    let admin = sqlx::PgPool::connect(crate::helpers::PG_ADMIN_URL).await?;
    let exec = |sql: String| {
        let admin = admin.clone();
        async move { sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&admin).await }
    };
    exec(format!("ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS false")).await?;
    exec(format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
    ))
    .await?;
    // Uncached queries need the database.
    let mut statuses = Vec::new();
    for city in ["Lagos", "Cairo", "Dakar"] {
        let r = app.get(&format!("/api/v1/properties?city={city}")).await?;
        statuses.push(r.status().as_u16());
        if r.status() == 503 {
            assert_eq!(error_code(r).await?, "unavailable");
        }
    }
    assert!(statuses.iter().all(|s| *s == 503), "{statuses:?}");
    let health = app.get("/health").await?;
    assert_eq!(health.status(), 503);
    exec(format!("ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS true")).await?;
    let mut status = 0;
    for _ in 0..50 {
        status = app
            .get("/api/v1/properties?city=Kumasi")
            .await?
            .status()
            .as_u16();
        if status == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(status, 200);
    Ok(())
}
