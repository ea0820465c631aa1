//! Sign-in limits, password change and `/health` on the production setup
//! (every role on Redis), including Redis going away.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{RedisServer, SHARED_REDIS, TestDb, TestOptions, error_code, spawn_app_with};

fn on_redis(url: String, db: TestDb) -> TestOptions {
    TestOptions {
        db,
        redis: Some(url),
        ..TestOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_failed_logins_then_429_and_otp_requests_limited() -> anyhow::Result<()> {
    let app = spawn_app_with(on_redis(SHARED_REDIS.into(), TestDb::Sqlite)).await?;
    app.signup_with(&app.new_client(), "kamau@example.com", "guest")
        .await?;
    let login = |pw: &'static str| json!({"email": "kamau@example.com", "password": pw});
    // A success clears earlier failures.
    for _ in 0..4 {
        assert_eq!(
            app.post("/api/v1/auth/login", &login("wrongpass1"))
                .await?
                .status(),
            401
        );
    }
    assert_eq!(
        app.post("/api/v1/auth/login", &login("password123"))
            .await?
            .status(),
        200
    );
    for _ in 0..5 {
        assert_eq!(
            app.post("/api/v1/auth/login", &login("wrongpass1"))
                .await?
                .status(),
            401
        );
    }
    // The sixth attempt is refused, even with the right password.
    let r = app
        .post("/api/v1/auth/login", &login("password123"))
        .await?;
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(error_code(r).await?, "throttled");
    // Unknown emails are limited the same way (no difference to probe).
    for _ in 0..5 {
        let r = app
            .post(
                "/api/v1/auth/login",
                &json!({"email": "nobody@example.com", "password": "x"}),
            )
            .await?;
        assert_eq!(r.status(), 401);
    }
    let r = app
        .post(
            "/api/v1/auth/login",
            &json!({"email": "nobody@example.com", "password": "x"}),
        )
        .await?;
    assert_eq!(r.status(), 429);

    for _ in 0..5 {
        assert_eq!(
            app.post("/api/v1/auth/otp", &json!({"email": "kamau@example.com"}))
                .await?
                .status(),
            202
        );
    }
    assert_eq!(
        app.post("/api/v1/auth/otp", &json!({"email": "kamau@example.com"}))
            .await?
            .status(),
        429
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_change_ends_every_session() -> anyhow::Result<()> {
    let app = spawn_app_with(on_redis(SHARED_REDIS.into(), TestDb::Postgres)).await?;
    let laptop = app.new_client();
    app.signup_with(&laptop, "wanjiru@example.com", "guest")
        .await?;
    let phone = app.new_client();
    let r = phone
        .post(app.url("/api/v1/auth/login"))
        .json(&json!({"email": "wanjiru@example.com", "password": "password123"}))
        .send()
        .await?;
    assert_eq!(r.status(), 200);

    let change =
        |current: &str| json!({"current_password": current, "new_password": "a-new-password"});
    let r = laptop
        .post(app.url("/api/v1/auth/password"))
        .json(&change("not-my-password"))
        .send()
        .await?;
    assert_eq!(r.status(), 401);
    let r = laptop
        .post(app.url("/api/v1/auth/password"))
        .json(&json!({"current_password": "password123", "new_password": "short"}))
        .send()
        .await?;
    assert_eq!(r.status(), 422);
    let r = laptop
        .post(app.url("/api/v1/auth/password"))
        .json(&change("password123"))
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    // The phone's session is gone; the laptop got a fresh one.
    assert_eq!(phone.get(app.url("/api/v1/me")).send().await?.status(), 401);
    assert_eq!(
        laptop.get(app.url("/api/v1/me")).send().await?.status(),
        200
    );
    let login = |pw: &str| json!({"email": "wanjiru@example.com", "password": pw});
    assert_eq!(
        app.post("/api/v1/auth/login", &login("password123"))
            .await?
            .status(),
        401
    );
    assert_eq!(
        app.post("/api/v1/auth/login", &login("a-new-password"))
            .await?
            .status(),
        200
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_names_what_is_down_and_recovers() -> anyhow::Result<()> {
    let mut redis = RedisServer::start().await?;
    let app = spawn_app_with(on_redis(redis.url(), TestDb::Sqlite)).await?;
    let v: Value = app.get("/health").await?.json().await?;
    assert_eq!(v["status"], "ok", "{v}");

    redis.stop();
    // `/health` answers from a result at most a second old.
    let mut r = app.get("/health").await?;
    for _ in 0..30 {
        if r.status() == 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        r = app.get("/health").await?;
    }
    assert_eq!(r.status(), 503);
    let v: Value = r.json().await?;
    assert_eq!(v["status"], "unavailable");
    assert_eq!(v["database"], "ok");
    for part in ["cache", "sessions", "ratelimit", "jobs"] {
        assert_ne!(v[part], "ok", "{part} should be reported down: {v}");
    }

    redis.restart().await?;
    let mut status = 0;
    for _ in 0..50 {
        status = app.get("/health").await?.status().as_u16();
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(status, 200, "health did not recover after Redis came back");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_info_reports_our_hit_ratio_per_family() -> anyhow::Result<()> {
    let redis = RedisServer::start().await?;
    let app = spawn_app_with(on_redis(redis.url(), TestDb::Sqlite)).await?;
    for _ in 0..3 {
        assert_eq!(
            app.get("/api/v1/properties?city=Harare").await?.status(),
            200
        );
    }
    // The server flushes every few seconds; do it now instead of waiting.
    app.state.cache.flush_stats().await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_stayafrica"))
        .args(["cache", "info", "--json"])
        .env("REDIS_URL", redis.url())
        .env("STAYAFRICA_KEY_PREFIX", &app.state.settings.key_prefix)
        .output()?;
    assert!(out.status.success(), "{out:?}");
    let info: Value = serde_json::from_slice(&out.stdout)?;
    let list = &info[0]["our_hit_ratio_by_family"]["property_list"];
    assert_eq!(list["hits"], 2.0, "{info}");
    assert_eq!(list["misses"], 1.0, "{info}");
    // After the miss filled it, this process answered from its near-cache.
    assert_eq!(list["near_hits"], 2.0, "{info}");
    assert!(list["hit_ratio"].as_f64().is_some(), "{info}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_get_decodes_what_the_service_stored() -> anyhow::Result<()> {
    let redis = RedisServer::start().await?;
    let app = spawn_app_with(on_redis(redis.url(), TestDb::Sqlite)).await?;
    let host = app.new_client();
    app.signup_with(&host, "host@example.com", "host").await?;
    for i in 0..30 {
        let body = crate::helpers::property_body("Windhoek", &format!("{}.00", 40 + i), false);
        app.create_property_with(&host, body).await?;
    }
    // A 30-item page is well over the compression threshold.
    assert_eq!(
        app.get("/api/v1/properties?page_size=30").await?.status(),
        200
    );
    let cli = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_stayafrica"))
            .args(args)
            .env("REDIS_URL", redis.url())
            .env("STAYAFRICA_KEY_PREFIX", &app.state.settings.key_prefix)
            .output()
    };
    let o = cli(&["cache", "keys", "property:list:*"])?;
    let listing = String::from_utf8_lossy(&o.stdout).into_owned();
    let key = listing
        .lines()
        .find(|l| l.contains("[1,30,"))
        .and_then(|l| l.split('\t').next())
        .ok_or_else(|| anyhow::anyhow!("page not listed: {listing}"))?
        .to_owned();
    assert!(listing.contains("ttl="), "{listing}");
    let o = cli(&["cache", "get", &key])?;
    assert!(o.status.success(), "{o:?}");
    let shown: Value = serde_json::from_slice(&o.stdout)?;
    assert_eq!(shown["count"], 30);
    assert_eq!(shown["results"].as_array().map(Vec::len), Some(30));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_warns_where_a_role_could_lose_keys() -> anyhow::Result<()> {
    use stayafrica::kv::{RedisRole, Role};
    let redis = RedisServer::start().await?;
    let sessions = RedisRole::connect(Role::Sessions, &redis.url()).await?;
    let cache = RedisRole::connect(Role::Cache, &redis.url()).await?;
    // Our own server: appendonly, noeviction. Fine for sessions; the cache
    // would rather evict.
    assert!(sessions.configuration_warnings().await.is_empty());
    assert_eq!(cache.configuration_warnings().await.len(), 1);

    let client = redis::Client::open(redis.url())?;
    let mut c = client.get_multiplexed_async_connection().await?;
    for (k, v) in [
        ("maxmemory-policy", "allkeys-lru"),
        ("appendonly", "no"),
        ("save", ""),
    ] {
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg(k)
            .arg(v)
            .query_async(&mut c)
            .await?;
    }
    let warnings = sessions.configuration_warnings().await;
    assert!(
        warnings.iter().any(|w| w.contains("allkeys-lru")),
        "{warnings:?}"
    );
    assert!(
        warnings.iter().any(|w| w.contains("persists nothing")),
        "{warnings:?}"
    );
    assert!(cache.configuration_warnings().await.is_empty());
    Ok(())
}
