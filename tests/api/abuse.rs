//! Abuse by clients that follow every rule the limits enforce: lock-outs
//! of other people's accounts, IPv6 clients with a whole /64, IPv4 clients
//! through an IPv4-mapped listener behind a CIDR-trusted proxy, floods of
//! registrations from one address.

use std::net::IpAddr;

use reqwest::{Client, StatusCode};
use serde_json::json;
use stayafrica::ratelimit::{Action, Rate};

use crate::helpers::{
    TestApp, TestDb, TestOptions, code_in, error_code, property_body, spawn_app_with,
};
use crate::on_each_setup;

on_each_setup!(
    an_attacker_at_the_limits_does_not_lock_the_victim_out,
    ipv6_clients_are_limited_per_prefix,
    registrations_are_limited_per_client,
    featured_properties_are_bounded,
);

const HOUR: std::time::Duration = std::time::Duration::from_secs(3600);

/// A client whose connections leave from `local` (a loopback address:
/// Linux answers on all of 127.0.0.0/8).
fn client_from(local: IpAddr) -> anyhow::Result<Client> {
    Ok(Client::builder()
        .cookie_store(true)
        .local_address(local)
        .build()?)
}

async fn app(
    db: TestDb,
    tweak: impl FnOnce(&mut stayafrica::config::Settings) + Send + 'static,
) -> anyhow::Result<TestApp> {
    spawn_app_with(TestOptions {
        db,
        tweak: Box::new(tweak),
        ..TestOptions::default()
    })
    .await
}

async fn an_attacker_at_the_limits_does_not_lock_the_victim_out(db: TestDb) -> anyhow::Result<()> {
    let app = app(db, |_| {}).await?;
    let victim_email = "victim@example.com";
    let victim = client_from([127, 0, 0, 200].into())?;
    victim
        .post(app.url("/api/v1/auth/register"))
        .json(&json!({"email": victim_email, "password": "password123", "full_name": "Victim", "role": "guest"}))
        .send()
        .await?
        .error_for_status()?;

    // The victim asks for a code and has it in its inbox.
    let r = victim
        .post(app.url("/api/v1/auth/otp"))
        .json(&json!({"email": victim_email}))
        .send()
        .await?;
    assert_eq!(r.status(), 202);
    app.drain_jobs().await?;
    let inbox = app
        .emails()
        .last()
        .and_then(|m| code_in(m))
        .ok_or_else(|| anyhow::anyhow!("no code in the victim's mail"))?;

    // The attacker holds 20 addresses and uses each until it is refused:
    // wrong passwords and code requests for the victim's email.
    let mut refused_logins = 0;
    let mut refused_codes = 0;
    for a in 1..=20u8 {
        let attacker = client_from([127, 0, 1, a].into())?;
        for _ in 0..8 {
            let r = attacker
                .post(app.url("/api/v1/auth/login"))
                .json(&json!({"email": victim_email, "password": "wrong-password"}))
                .send()
                .await?;
            match r.status() {
                StatusCode::UNAUTHORIZED => {}
                StatusCode::TOO_MANY_REQUESTS => refused_logins += 1,
                other => anyhow::bail!("attacker's login answered {other}"),
            }
        }
        for _ in 0..7 {
            let r = attacker
                .post(app.url("/api/v1/auth/otp"))
                .json(&json!({"email": victim_email}))
                .send()
                .await?;
            match r.status() {
                StatusCode::ACCEPTED => {}
                StatusCode::TOO_MANY_REQUESTS => refused_codes += 1,
                other => anyhow::bail!("attacker's code request answered {other}"),
            }
        }
    }
    // The limits did bite the attacker: 5 logins per (email, address),
    // the 50-per-email ceiling, 5 code requests per email.
    assert!(
        refused_logins >= 20 * 3,
        "attacker's logins refused: {refused_logins}"
    );
    assert!(
        refused_codes >= 20 * 2,
        "attacker's code requests refused: {refused_codes}"
    );

    // The victim, from its own address, signs in on the first try.
    let r = victim
        .post(app.url("/api/v1/auth/login"))
        .json(&json!({"email": victim_email, "password": "password123"}))
        .send()
        .await?;
    assert_eq!(r.status(), 200, "password login of the victim");

    // The code in its inbox was mailed again to it, never voided.
    app.drain_jobs().await?;
    assert!(
        app.emails()
            .iter()
            .filter_map(|m| code_in(m))
            .all(|c| c == inbox),
        "every mail carries the victim's live code"
    );
    let r = victim
        .post(app.url("/api/v1/auth/otp/verify"))
        .json(&json!({"email": victim_email, "otp": inbox}))
        .send()
        .await?;
    assert_eq!(
        r.status(),
        200,
        "the code in the victim's inbox still works"
    );

    // And asking for a new code works on the first try too.
    app.drain_jobs().await?;
    let before = app.emails().len();
    let r = victim
        .post(app.url("/api/v1/auth/otp"))
        .json(&json!({"email": victim_email}))
        .send()
        .await?;
    assert_eq!(r.status(), 202, "code request of the victim");
    app.drain_jobs().await?;
    let mails = app.emails();
    assert!(mails.len() > before, "a code was mailed to the victim");
    let code = mails
        .last()
        .and_then(|m| code_in(m))
        .ok_or_else(|| anyhow::anyhow!("no code in the victim's mail"))?;
    let r = victim
        .post(app.url("/api/v1/auth/otp/verify"))
        .json(&json!({"email": victim_email, "otp": code}))
        .send()
        .await?;
    assert_eq!(r.status(), 200, "code login of the victim");
    Ok(())
}

async fn ipv6_clients_are_limited_per_prefix(db: TestDb) -> anyhow::Result<()> {
    let app = app(db, |s| {
        s.bind = "[::1]:0".parse().unwrap_or(s.bind);
        s.trusted_proxies = vec![
            "::1/128"
                .parse()
                .unwrap_or_else(|_| IpAddr::from([0, 0, 0, 0]).into()),
        ];
        s.throttles.set(Action::Anon, Rate::new(100, HOUR));
    })
    .await?;
    assert!(app.addr.is_ipv6(), "listening on [::1]");
    let from = |xff: String| {
        app.client
            .get(app.url("/api/v1/properties/featured"))
            .header("x-forwarded-for", xff)
            .send()
    };
    // 101 addresses of one /64: one client, one budget of 100.
    for i in 0..100u32 {
        let r = from(format!("2001:db8:aa:1:{:x}::{:x}", i / 7, i + 1)).await?;
        assert_eq!(r.status(), 200, "request {i} of the /64");
    }
    let r = from("2001:db8:aa:1:ffff:ffff:ffff:1".into()).await?;
    assert_eq!(r.status(), 429, "the 101st address of the same /64");
    // Another /64 has its own budget.
    let r = from("2001:db8:aa:2::1".into()).await?;
    assert_eq!(r.status(), 200, "a neighbouring /64");
    Ok(())
}

async fn registrations_are_limited_per_client(db: TestDb) -> anyhow::Result<()> {
    let app = app(db, |s| {
        s.throttles.set(Action::Register, Rate::new(3, HOUR));
    })
    .await?;
    let register = |c: &Client, n: u32| {
        c.post(app.url("/api/v1/auth/register"))
            .json(&json!({"email": format!("r{n}@example.com"), "password": "password123", "full_name": "R", "role": "guest"}))
            .send()
    };
    let one = client_from([127, 0, 2, 1].into())?;
    for n in 0..3 {
        assert_eq!(register(&one, n).await?.status(), 201);
    }
    let r = register(&one, 3).await?;
    assert_eq!(r.status(), 429);
    assert!(r.headers().get("retry-after").is_some());
    assert_eq!(
        r.headers()
            .get("x-ratelimit-limit")
            .and_then(|v| v.to_str().ok()),
        Some("3"),
        "the headers describe the registration limit"
    );
    // Another address registers.
    let other = client_from([127, 0, 2, 2].into())?;
    assert_eq!(register(&other, 4).await?.status(), 201);
    Ok(())
}

/// A listener on `[::]` sees IPv4 peers as `::ffff:a.b.c.d`: they are
/// matched against an IPv4 CIDR range of trusted proxies all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv4_through_a_mapped_listener_matches_a_cidr_range() -> anyhow::Result<()> {
    let app = app(TestDb::Sqlite, |s| {
        s.bind = "[::]:0".parse().unwrap_or(s.bind);
        s.trusted_proxies = vec![
            "127.0.0.0/8"
                .parse()
                .unwrap_or_else(|_| IpAddr::from([0, 0, 0, 0]).into()),
        ];
        s.throttles.set(Action::Anon, Rate::new(2, HOUR));
    })
    .await?;
    let url = format!(
        "http://127.0.0.1:{}/api/v1/properties/featured",
        app.addr.port()
    );
    let from = |xff: &'static str| app.client.get(&url).header("x-forwarded-for", xff).send();
    // Each forwarded client has its own budget of 2: the proxy is trusted.
    for xff in [
        "198.51.100.1",
        "198.51.100.1",
        "198.51.100.2",
        "198.51.100.2",
    ] {
        assert_eq!(from(xff).await?.status(), 200, "{xff}");
    }
    assert_eq!(from("198.51.100.1").await?.status(), 429);
    Ok(())
}

async fn featured_properties_are_bounded(db: TestDb) -> anyhow::Result<()> {
    let app = app(db, |s| {
        s.throttles.set(Action::PropertyCreate, Rate::new(8, HOUR));
    })
    .await?;
    let host = app.new_client();
    let me = app
        .signup_with(&host, "busy.host@example.com", "host")
        .await?;
    let host_id = me["id"].as_i64().unwrap_or_default();
    let mut ids = Vec::new();
    for _ in 0..5 {
        let p = app
            .create_property_with(&host, property_body("Nairobi", "50.00", true))
            .await?;
        ids.push(p["id"].as_i64().unwrap_or_default());
    }
    // A sixth featured property, by create or by PATCH, is refused.
    let r = host
        .post(app.url("/api/v1/properties"))
        .json(&property_body("Nairobi", "50.00", true))
        .send()
        .await?;
    assert_eq!(r.status(), 422);
    let body: serde_json::Value = r.json().await?;
    assert!(
        body["error"]["details"]["is_featured"].is_string(),
        "{body}"
    );
    let plain = app
        .create_property_with(&host, property_body("Nairobi", "50.00", false))
        .await?;
    let plain_id = plain["id"].as_i64().unwrap_or_default();
    let r = host
        .patch(app.url(&format!("/api/v1/properties/{plain_id}")))
        .json(&json!({"is_featured": true}))
        .send()
        .await?;
    assert_eq!(r.status(), 422);
    assert_eq!(error_code(r).await?, "validation_failed");
    // Un-featuring one makes room again; a featured one stays editable.
    let r = host
        .patch(app.url(&format!("/api/v1/properties/{}", ids[0])))
        .json(&json!({"is_featured": false}))
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    let r = host
        .patch(app.url(&format!("/api/v1/properties/{plain_id}")))
        .json(&json!({"is_featured": true, "title": "Now featured"}))
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    let r = host
        .patch(app.url(&format!("/api/v1/properties/{}", ids[1])))
        .json(&json!({"is_featured": true, "title": "Still featured"}))
        .send()
        .await?;
    assert_eq!(r.status(), 200, "re-saving a featured property is no sixth");

    // Creation is limited per host: 7 attempts so far, the 8th passes,
    // the 9th is 429.
    let r = host
        .post(app.url("/api/v1/properties"))
        .json(&property_body("Nairobi", "50.00", false))
        .send()
        .await?;
    assert_eq!(r.status(), 201);
    let r = host
        .post(app.url("/api/v1/properties"))
        .json(&property_body("Nairobi", "50.00", false))
        .send()
        .await?;
    assert_eq!(r.status(), 429);

    // However many featured properties exist (imported ones bypass the
    // per-host quota), the list holds the first 100 by id.
    let now = time::OffsetDateTime::now_utc();
    for i in 0..150 {
        app.db()
            .create_property(&stayafrica::db::properties::NewProperty {
                host_id,
                title: format!("Imported {i}"),
                description: "x".repeat(100),
                city: "Kigali".into(),
                country: "Rwanda".into(),
                price_per_night: stayafrica::domain::Money::from_cents(5_000),
                max_guests: 2,
                is_featured: true,
                view_count: 0,
                created_at: now,
                updated_at: now,
            })
            .await?;
    }
    let list: Vec<serde_json::Value> = app.get("/api/v1/properties/featured").await?.json().await?;
    assert_eq!(list.len(), 100);
    let got: Vec<i64> = list.iter().filter_map(|p| p["id"].as_i64()).collect();
    let mut sorted = got.clone();
    sorted.sort_unstable();
    assert_eq!(got, sorted, "ordered by id");
    assert_eq!(got.first(), Some(&ids[1]), "the first featured by id");
    Ok(())
}

/// 300 registrations and 300 logins with unknown emails at once from 30
/// addresses, against the real binary on PostgreSQL and Redis: memory
/// stays flat (hashing is bounded), every answer is one a client expects,
/// and a cached GET from another address keeps answering meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_sign_ins_keeps_memory_flat_and_reads_answered() -> anyhow::Result<()> {
    use crate::chaos_support::Env;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    let (db_url, _db) = crate::helpers::fresh_database(TestDb::Postgres).await?;
    let env = Env::new(
        &db_url,
        &[("REDIS_URL", crate::helpers::SHARED_REDIS.into())],
    )?;
    let s = Arc::new(env.serve().await?);
    let reader = client_from([127, 0, 4, 1].into())?;
    let list = s.url("/api/v1/properties/featured");
    assert_eq!(reader.get(&list).send().await?.status(), 200);
    let baseline = s.rss_bytes()?;

    let done = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(baseline));
    let sampler = {
        let (s, done, peak) = (s.clone(), done.clone(), peak.clone());
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                if let Ok(rss) = s.rss_bytes() {
                    peak.fetch_max(rss, Ordering::Relaxed);
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        })
    };
    let reads = {
        let done = done.clone();
        tokio::spawn(async move {
            let mut got = Vec::new();
            while !done.load(Ordering::Relaxed) {
                let started = std::time::Instant::now();
                let status = reader.get(&list).send().await.map(|r| r.status().as_u16());
                got.push((status.unwrap_or(0), started.elapsed()));
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            got
        })
    };

    let mut flood = Vec::new();
    for a in 1..=30u8 {
        let c = client_from([127, 0, 3, a].into())?;
        for n in 0..10 {
            let (rc, url) = (c.clone(), s.url("/api/v1/auth/register"));
            flood.push(tokio::spawn(async move {
                rc.post(url)
                    .json(&json!({"email": format!("flood{a}-{n}@example.com"), "password": "password123", "full_name": "F", "role": "guest"}))
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
            }));
            let (lc, url) = (c.clone(), s.url("/api/v1/auth/login"));
            flood.push(tokio::spawn(async move {
                lc.post(url)
                    .json(&json!({"email": format!("nobody{a}-{n}@example.com"), "password": "password123"}))
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
            }));
        }
    }
    let mut statuses = std::collections::BTreeMap::new();
    for f in flood {
        let status = f.await??;
        *statuses.entry(status).or_insert(0) += 1;
    }
    done.store(true, Ordering::Relaxed);
    sampler.await?;
    let reads = reads.await?;
    let peak = peak.load(Ordering::Relaxed);
    eprintln!(
        "flood answers {statuses:?}; RSS {} MiB before, peak {} MiB; {} reads",
        baseline >> 20,
        peak >> 20,
        reads.len()
    );
    for status in statuses.keys() {
        assert!(
            [201, 409, 401, 429, 503].contains(status),
            "unexpected answer {status} in {statuses:?}"
        );
    }
    assert!(
        statuses.get(&201).is_some_and(|n| *n > 0),
        "some registrations went through"
    );
    assert!(peak < 300 << 20, "peak RSS {} MiB", peak >> 20);
    assert!(!reads.is_empty());
    assert!(
        reads.iter().all(|(status, _)| *status == 200),
        "a cached read failed during the flood: {reads:?}"
    );
    let mut latencies: Vec<_> = reads.iter().map(|(_, d)| *d).collect();
    latencies.sort_unstable();
    let median = latencies[latencies.len() / 2];
    assert!(
        median < std::time::Duration::from_millis(100),
        "median cached read {median:?} during the flood (max {:?})",
        latencies.last()
    );
    Ok(())
}
