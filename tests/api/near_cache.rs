//! The hot path across instances: two API instances on one Redis and one
//! PostgreSQL, each with its near-cache. A write answered by one is seen by
//! the next read on the other (lists, detail, featured, dashboard), session
//! endings take effect on the other at once, the near-cache keeps its byte
//! bound, and a cached GET costs no database statement and, under
//! concurrency, at most one Redis command.

use std::time::Duration;

use anyhow::Context;
use reqwest::Client;
use serde_json::{Value, json};

use crate::helpers::{
    PG_ADMIN_URL, RedisServer, SHARED_REDIS, TestApp, TestDb, fresh_database, property_body,
    redis_settings, spawn_on,
};

/// Two instances sharing a database, a Redis and a key prefix (one
/// deployment), with `near_mb` MiB of near-cache each.
pub async fn two_instances(
    redis: &str,
    near_mb: u64,
) -> anyhow::Result<(TestApp, TestApp, crate::helpers::DbGuard)> {
    let (db_url, guard) = fresh_database(TestDb::Postgres).await?;
    let prefix = format!("satest:{}:", uuid::Uuid::new_v4().simple());
    let mut apps = Vec::new();
    for _ in 0..2 {
        let (prefix, redis) = (prefix.clone(), redis_settings(redis));
        apps.push(
            spawn_on(
                &db_url,
                false,
                Box::new(move |s| {
                    s.key_prefix = prefix;
                    s.redis = Some(redis);
                    s.near_cache_bytes = near_mb * 1024 * 1024;
                }),
            )
            .await?,
        );
    }
    let b = apps.pop().context("b")?;
    let a = apps.pop().context("a")?;
    Ok((a, b, guard))
}

async fn json_of(client: &Client, url: String) -> anyhow::Result<Value> {
    let r = client.get(url).send().await?;
    anyhow::ensure!(r.status() == 200, "GET answered {}", r.status());
    Ok(r.json().await?)
}

/// The list, detail and featured list (anonymous) and the guest's
/// dashboard, read at once.
async fn read_all(
    anon: &Client,
    guest: &Client,
    urls: &[String; 4],
) -> anyhow::Result<(Value, Value, Value, Value)> {
    tokio::try_join!(
        json_of(anon, urls[0].clone()),
        json_of(anon, urls[1].clone()),
        json_of(anon, urls[2].clone()),
        json_of(guest, urls[3].clone()),
    )
}

fn near_hits(app: &TestApp) -> u64 {
    app.state.cache.near().map_or(0, |n| n.hits())
}

#[tokio::test]
async fn a_patch_on_one_instance_is_seen_by_the_next_get_on_the_other() -> anyhow::Result<()> {
    let (a, b, _db) = two_instances(SHARED_REDIS, 64).await?;
    // The host writes through A; a guest reads its dashboard through B.
    a.signup("host@example.com", "host").await?;
    let p = a
        .create_property_with(&a.client, property_body("Nairobi", "85.50", true))
        .await?;
    let id = p["id"].as_i64().context("id")?;
    let guest = b.new_client();
    b.signup_with(&guest, "guest@example.com", "guest").await?;
    let urls = [
        b.url("/api/v1/properties?city=nairobi"),
        b.url(&format!("/api/v1/properties/{id}")),
        b.url("/api/v1/properties/featured"),
        b.url("/api/v1/dashboard"),
    ];
    let anon = b.new_client();
    for round in 0..1000 {
        let title = format!("Round {round}");
        // B holds the previous round's entries in its near-cache.
        let (l, d, f, g) = read_all(&anon, &guest, &urls).await?;
        if round > 0 {
            let prev = format!("Round {}", round - 1);
            anyhow::ensure!(l["results"][0]["title"] == prev.as_str(), "list {l}");
            anyhow::ensure!(d["title"] == prev.as_str(), "detail {d}");
            anyhow::ensure!(f[0]["title"] == prev.as_str(), "featured {f}");
            anyhow::ensure!(g["recommendations"][0]["title"] == prev.as_str());
        }
        let r = a
            .patch(
                &format!("/api/v1/properties/{id}"),
                &json!({"title": title}),
            )
            .await?;
        anyhow::ensure!(r.status() == 200, "PATCH answered {}", r.status());
        // At once, on the other instance: never the old title.
        let (l, d, f, g) = read_all(&anon, &guest, &urls).await?;
        assert_eq!(
            l["results"][0]["title"],
            title.as_str(),
            "list, round {round}"
        );
        assert_eq!(d["title"], title.as_str(), "detail, round {round}");
        assert_eq!(f[0]["title"], title.as_str(), "featured, round {round}");
        assert_eq!(
            g["recommendations"][0]["title"],
            title.as_str(),
            "dashboard, round {round}"
        );
    }
    // The reads before each PATCH were answered from B's near-cache: the
    // check above ran against it, not around it.
    assert!(near_hits(&b) >= 2000, "near-cache hits: {}", near_hits(&b));
    Ok(())
}

/// The `sessionid` value a login response set.
fn session_of(r: &reqwest::Response) -> anyhow::Result<String> {
    r.headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| c.strip_prefix("sessionid="))
        .and_then(|c| c.split(';').next())
        .map(str::to_owned)
        .context("no session cookie")
}

async fn login(app: &TestApp, email: &str, password: &str) -> anyhow::Result<String> {
    let r = Client::new()
        .post(app.url("/api/v1/auth/login"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await?;
    anyhow::ensure!(r.status() == 200, "login answered {}", r.status());
    session_of(&r)
}

async fn me_status(app: &TestApp, session: &str) -> anyhow::Result<u16> {
    Ok(Client::new()
        .get(app.url("/api/v1/me"))
        .header("cookie", format!("sessionid={session}"))
        .send()
        .await?
        .status()
        .as_u16())
}

async fn post_as(app: &TestApp, session: &str, path: &str, body: Value) -> anyhow::Result<u16> {
    Ok(Client::new()
        .post(app.url(path))
        .header("cookie", format!("sessionid={session}"))
        .json(&body)
        .send()
        .await?
        .status()
        .as_u16())
}

#[tokio::test]
async fn session_endings_on_one_instance_hold_on_the_other_at_once() -> anyhow::Result<()> {
    let (a, b, _db) = two_instances(SHARED_REDIS, 64).await?;
    a.signup("user@example.com", "guest").await?;
    let mut password = "password123".to_owned();
    for round in 0..50 {
        // Logout-all on A: B refuses the other session on its next request.
        let (s1, s2) = (
            login(&a, "user@example.com", &password).await?,
            login(&a, "user@example.com", &password).await?,
        );
        assert_eq!(me_status(&b, &s2).await?, 200);
        assert_eq!(
            post_as(&a, &s1, "/api/v1/auth/logout-all", json!({})).await?,
            204
        );
        assert_eq!(me_status(&b, &s2).await?, 401, "logout-all, round {round}");
        // Logout of one session on A.
        let s3 = login(&a, "user@example.com", &password).await?;
        assert_eq!(me_status(&b, &s3).await?, 200);
        assert_eq!(
            post_as(&a, &s3, "/api/v1/auth/logout", json!({})).await?,
            204
        );
        assert_eq!(me_status(&b, &s3).await?, 401, "logout, round {round}");
        // A password change on A ends the other sessions.
        let (s4, s5) = (
            login(&a, "user@example.com", &password).await?,
            login(&a, "user@example.com", &password).await?,
        );
        assert_eq!(me_status(&b, &s5).await?, 200);
        let new_password = format!("password-{round}");
        let changed = post_as(
            &a,
            &s4,
            "/api/v1/auth/password",
            json!({"current_password": password, "new_password": new_password}),
        )
        .await?;
        assert_eq!(changed, 200);
        password = new_password;
        assert_eq!(
            me_status(&b, &s5).await?,
            401,
            "password change, round {round}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn the_near_cache_stays_within_its_bound_under_distinct_queries() -> anyhow::Result<()> {
    let (a, b, _db) = two_instances(SHARED_REDIS, 1).await?;
    a.signup("host@example.com", "host").await?;
    for _ in 0..30 {
        a.create_property_with(&a.client, property_body("Nairobi", "85.50", false))
            .await?;
    }
    // 3,000 distinct pages of about 6 KB each: 18 MB offered to a 1 MiB cache.
    for max in 0..3000 {
        let r = b
            .get(&format!(
                "/api/v1/properties?city=nairobi&page_size=30&max_price={}",
                100 + max
            ))
            .await?;
        assert_eq!(r.status(), 200);
    }
    let near = b.state.cache.near().context("near-cache configured")?;
    let held = near.weighted_size().await;
    assert!(held <= 1024 * 1024, "near-cache holds {held} bytes");
    assert!(held > 256 * 1024, "near-cache still caches: {held} bytes");
    Ok(())
}

/// Every command line MONITOR printed, except those run inside scripts.
fn sent_commands(monitor: &str) -> usize {
    monitor
        .lines()
        .filter(|l| l.starts_with(|c: char| c.is_ascii_digit()))
        .filter(|l| !l.contains(" lua] "))
        .count()
}

#[tokio::test]
async fn cached_gets_cost_no_statement_and_share_redis_commands() -> anyhow::Result<()> {
    let redis = RedisServer::start().await?;
    let (a, b, _db) = two_instances(&redis.url(), 64).await?;
    drop(a);
    b.signup("host@example.com", "host").await?;
    let mut ids = Vec::new();
    for i in 0..8 {
        let p = b
            .create_property_with(&b.client, property_body("Nairobi", "85.50", i % 2 == 0))
            .await?;
        ids.push(p["id"].as_i64().context("id")?);
    }
    let paths: Vec<String> = [
        "/api/v1/properties?city=nairobi".to_owned(),
        "/api/v1/properties/featured".to_owned(),
        "/api/v1/dashboard".to_owned(),
        "/api/v1/me".to_owned(),
    ]
    .into_iter()
    .chain(ids.iter().map(|id| format!("/api/v1/properties/{id}")))
    .collect();
    for p in &paths {
        assert_eq!(b.get(p).await?.status(), 200, "{p}");
    }
    let db_name = b.db_url.rsplit('/').next().context("db name")?.to_owned();
    let statements = || async {
        // PostgreSQL publishes a backend's counts within about 10 s of its
        // last statement (PGSTAT_IDLE_INTERVAL), later on a loaded machine:
        // read until the count has held still for 4 s, after at least 11 s.
        let admin = sqlx::PgPool::connect(PG_ADMIN_URL).await?;
        let started = std::time::Instant::now();
        let mut seen: Vec<i64> = Vec::new();
        loop {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let _ = sqlx::query("SELECT pg_stat_clear_snapshot()")
                .execute(&admin)
                .await;
            let n: i64 = sqlx::query_scalar(
                "SELECT (xact_commit + xact_rollback)::bigint FROM pg_stat_database \
                 WHERE datname = $1",
            )
            .bind(&db_name)
            .fetch_one(&admin)
            .await?;
            seen.push(n);
            let still = seen.len() >= 3 && seen[seen.len() - 3..].iter().all(|&v| v == n);
            if still && started.elapsed() >= Duration::from_secs(11) {
                admin.close().await;
                return anyhow::Ok(n);
            }
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(60),
                "counts never settled: {seen:?}"
            );
        }
    };
    let before = statements().await?;
    // 32 concurrent clients (one anonymous and one signed in each), 20
    // rounds over every path, under MONITOR of this Redis of our own.
    let log = tempfile::NamedTempFile::new()?;
    let mut monitor = std::process::Command::new("redis-cli")
        .args(["-p", &redis.port.to_string(), "monitor"])
        .stdout(log.reopen()?)
        .spawn()?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let (signed_in, anon) = (b.client.clone(), b.new_client());
        let paths = paths.clone();
        let base = b.url("");
        tasks.push(tokio::spawn(async move {
            let mut anon_gets = 0usize;
            let mut user_gets = 0usize;
            for _ in 0..20 {
                for p in &paths {
                    let signed = p.ends_with("dashboard") || p.ends_with("/me");
                    let client = if signed { &signed_in } else { &anon };
                    let r = client.get(format!("{base}{p}")).send().await?;
                    anyhow::ensure!(r.status() == 200, "{p}: {}", r.status());
                    if signed {
                        user_gets += 1;
                    } else {
                        anon_gets += 1;
                    }
                }
            }
            anyhow::Ok((anon_gets, user_gets))
        }));
    }
    let (mut anon_gets, mut user_gets) = (0, 0);
    for t in tasks {
        let (a, u) = t.await??;
        anon_gets += a;
        user_gets += u;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    monitor.kill()?;
    monitor.wait()?;
    let sent = sent_commands(&std::fs::read_to_string(log.path())?);
    let after = statements().await?;
    assert_eq!(
        after - before,
        0,
        "database transactions during cached GETs"
    );
    let per_request = sent as f64 / (anon_gets + user_gets) as f64;
    eprintln!(
        "{sent} Redis commands sent for {anon_gets} anonymous and {user_gets} signed-in GETs"
    );
    assert!(
        per_request <= 1.0,
        "{sent} Redis commands for {anon_gets} anonymous and {user_gets} signed-in GETs"
    );
    Ok(())
}
