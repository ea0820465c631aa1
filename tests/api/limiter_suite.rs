//! The rate limiter: one behaviour suite run on every `LimiterBackend`
//! (in-process and Redis), the failure policy per scope with Redis down,
//! and the HTTP limits against real Redis, across two API instances too.

use std::sync::Arc;
use std::time::Duration;

use reqwest::{Client, Response};
use serde_json::json;
use stayafrica::domain::{ClientAddr, Email};
use stayafrica::kv::keys::Keys;
use stayafrica::kv::{RedisRole, Role};
use stayafrica::ratelimit::memory::MemoryLimiter;
use stayafrica::ratelimit::redis::RedisLimiter;
use stayafrica::ratelimit::{Action, Rate, Throttles};
use stayafrica::ratelimit::{LimiterBackend, RateLimiter, Scope};

use crate::helpers::{
    RedisServer, SHARED_REDIS, TestApp, TestOptions, day, error_code, spawn_app_with,
};

const HOUR: Duration = Duration::from_secs(3600);

/// The rate-limit role's DB on the shared Redis.
fn ratelimit_url(base: &str) -> String {
    format!("{base}/3")
}

fn unique_keys() -> Keys {
    Keys::new(&format!("satest:{}:", uuid::Uuid::new_v4().simple()))
}

/// A limiter under test, with a raw view of its storage where it has one.
struct Limiter {
    backend: Arc<dyn LimiterBackend>,
    /// Redis only: a connection to the limiter's DB, to look at TTLs.
    raw: Option<stayafrica::kv::Conn>,
}

impl Limiter {
    fn memory() -> Limiter {
        Limiter {
            backend: Arc::new(MemoryLimiter::default()),
            raw: None,
        }
    }

    async fn redis() -> anyhow::Result<Limiter> {
        Limiter::redis_on(SHARED_REDIS).await
    }

    /// On the rate-limit role of the Redis at `base` (one server, a
    /// cluster, a Sentinel's master).
    async fn redis_on(base: &str) -> anyhow::Result<Limiter> {
        let url = crate::topologies::role_url(base, Role::RateLimit);
        let role = RedisRole::connect(Role::RateLimit, &url).await?;
        let raw = stayafrica::kv::connect(&url, Duration::from_secs(5)).await?;
        Ok(Limiter {
            backend: Arc::new(RedisLimiter::new(role)),
            raw: Some(raw),
        })
    }
}

/// Runs each case on the in-process and on the Redis limiter.
macro_rules! on_every_limiter {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn memory() -> anyhow::Result<()> {
                    super::$name(super::Limiter::memory()).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn redis() -> anyhow::Result<()> {
                    super::$name(super::Limiter::redis().await?).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn cluster() -> anyhow::Result<()> {
                    let url = crate::topologies::cluster_url().await?;
                    super::$name(super::Limiter::redis_on(&url).await?).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sentinel() -> anyhow::Result<()> {
                    let url = crate::topologies::sentinel_url().await?;
                    super::$name(super::Limiter::redis_on(&url).await?).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn tls() -> anyhow::Result<()> {
                    let url = crate::tls::tls_url().await?;
                    super::$name(super::Limiter::redis_on(&url).await?).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn tls_cluster() -> anyhow::Result<()> {
                    let url = crate::tls::tls_cluster_url().await?;
                    super::$name(super::Limiter::redis_on(&url).await?).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn tls_sentinel() -> anyhow::Result<()> {
                    let url = crate::tls::tls_sentinel_url().await?;
                    super::$name(super::Limiter::redis_on(&url).await?).await
                }
            }
        )*
    };
}

on_every_limiter!(
    concurrent_checks_admit_exactly_the_limit,
    remaining_counts_down_then_denies_with_retry_after,
    reset_clears_the_key,
    idle_keys_expire_and_refill,
    keys_are_independent,
    concurrent_checks_of_many_keys_each_count_their_own
);

/// 300 concurrent checks over 100 keys (3 each, at a limit of 2): checks
/// waiting together share calls, and on a cluster those keys live in many
/// slots: each key still admits exactly its limit.
async fn concurrent_checks_of_many_keys_each_count_their_own(l: Limiter) -> anyhow::Result<()> {
    let keys = unique_keys();
    let rate = Rate::new(2, HOUR);
    let tasks: Vec<_> = (0..300)
        .map(|i| {
            let backend = l.backend.clone();
            let key = keys.ratelimit("suite", &format!("subject-{}", i % 100));
            tokio::spawn(async move {
                Ok::<_, anyhow::Error>((i % 100, backend.check(&key, rate).await?))
            })
        })
        .collect();
    let mut allowed = std::collections::BTreeMap::<usize, u32>::new();
    for t in tasks {
        let (subject, d) = t.await??;
        *allowed.entry(subject).or_default() += u32::from(d.allowed);
    }
    assert_eq!(allowed.len(), 100);
    assert!(allowed.values().all(|n| *n == 2), "{allowed:?}");
    Ok(())
}

async fn concurrent_checks_admit_exactly_the_limit(l: Limiter) -> anyhow::Result<()> {
    let key = unique_keys().ratelimit("suite", "burst");
    let rate = Rate::new(50, HOUR);
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let backend = l.backend.clone();
            let key = key.clone();
            tokio::spawn(async move { backend.check(&key, rate).await })
        })
        .collect();
    let mut allowed = 0;
    for t in tasks {
        if t.await??.allowed {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 50);
    Ok(())
}

async fn remaining_counts_down_then_denies_with_retry_after(l: Limiter) -> anyhow::Result<()> {
    let key = unique_keys().ratelimit("suite", "countdown");
    let rate = Rate::new(50, HOUR);
    for expected in (0..50).rev() {
        let d = l.backend.check(&key, rate).await?;
        assert!(d.allowed);
        assert_eq!(d.limit, 50);
        assert_eq!(d.remaining, expected);
        assert_eq!(d.retry_after_us, 0);
        assert!(d.reset_after_us > 0 && d.reset_after_us <= 3_600_000_000);
    }
    let denied = l.backend.check(&key, rate).await?;
    assert!(!denied.allowed);
    assert_eq!((denied.limit, denied.remaining), (50, 0));
    // 50/hour lets one more through every 72 s.
    assert!(denied.retry_after_secs() >= 1);
    assert!(
        denied.retry_after_us > 60_000_000 && denied.retry_after_us <= 72_000_000,
        "{denied:?}"
    );
    // A denied attempt does not push the next allowed time further out.
    let again = l.backend.check(&key, rate).await?;
    assert!(!again.allowed);
    assert!(again.retry_after_us <= denied.retry_after_us);
    if let Some(mut raw) = l.raw {
        let ttl: i64 = redis::cmd("PTTL").arg(&key).query_async(&mut raw).await?;
        assert!(ttl > 0 && ttl <= 3_600_000, "PTTL {ttl}");
    }
    Ok(())
}

async fn reset_clears_the_key(l: Limiter) -> anyhow::Result<()> {
    let key = unique_keys().ratelimit("suite", "reset");
    let rate = Rate::new(3, HOUR);
    for _ in 0..3 {
        assert!(l.backend.check(&key, rate).await?.allowed);
    }
    assert!(!l.backend.check(&key, rate).await?.allowed);
    l.backend.reset(&key).await?;
    let d = l.backend.check(&key, rate).await?;
    assert!(d.allowed);
    assert_eq!(d.remaining, 2);
    // Resetting a key that holds nothing is fine.
    l.backend
        .reset(&unique_keys().ratelimit("suite", "none"))
        .await?;
    Ok(())
}

async fn idle_keys_expire_and_refill(l: Limiter) -> anyhow::Result<()> {
    let key = unique_keys().ratelimit("suite", "idle");
    let rate = Rate::new(2, Duration::from_millis(300));
    assert!(l.backend.check(&key, rate).await?.allowed);
    assert!(l.backend.check(&key, rate).await?.allowed);
    assert!(!l.backend.check(&key, rate).await?.allowed);
    if let Some(raw) = &l.raw {
        let ttl: i64 = redis::cmd("PTTL")
            .arg(&key)
            .query_async(&mut raw.clone())
            .await?;
        assert!(ttl > 0 && ttl <= 300, "PTTL {ttl}");
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    if let Some(raw) = &l.raw {
        let exists: i64 = redis::cmd("EXISTS")
            .arg(&key)
            .query_async(&mut raw.clone())
            .await?;
        assert_eq!(exists, 0, "an idle key must expire");
    }
    let d = l.backend.check(&key, rate).await?;
    assert!(d.allowed);
    assert_eq!(d.remaining, 1);
    Ok(())
}

async fn keys_are_independent(l: Limiter) -> anyhow::Result<()> {
    let keys = unique_keys();
    let (a, b) = (keys.ratelimit("suite", "a"), keys.ratelimit("suite", "b"));
    let rate = Rate::new(2, HOUR);
    for _ in 0..2 {
        assert!(l.backend.check(&a, rate).await?.allowed);
    }
    assert!(!l.backend.check(&a, rate).await?.allowed);
    let d = l.backend.check(&b, rate).await?;
    assert!(d.allowed);
    assert_eq!(d.remaining, 1);
    Ok(())
}

/// With its Redis gone, the limiter lets general traffic through and
/// refuses the sensitive scopes, and says so quickly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_policy_per_scope_with_redis_down() -> anyhow::Result<()> {
    let mut server = RedisServer::start().await?;
    let role = RedisRole::connect(Role::RateLimit, &ratelimit_url(&server.url())).await?;
    let limiter = RateLimiter::new(
        Arc::new(RedisLimiter::new(role)),
        unique_keys(),
        throttles(),
    );
    let email = Email::parse("policy@example.com").map_err(anyhow::Error::msg)?;
    let ip = ClientAddr::new([192, 0, 2, 1].into(), 64);
    assert!(
        limiter
            .check(&Scope::Login(email.clone(), ip))
            .await
            .is_ok()
    );
    server.stop();
    for _ in 0..5 {
        let anon = limiter.check(&Scope::Anon(ip)).await;
        assert!(anon.is_ok_and(|d| d.allowed), "anonymous fails open");
        let user = limiter.check(&Scope::User(1)).await;
        assert!(user.is_ok_and(|d| d.allowed), "per user fails open");
        assert!(
            limiter
                .check(&Scope::Login(email.clone(), ip))
                .await
                .is_err()
        );
        assert!(
            limiter
                .check(&Scope::OtpEmail(email.clone()))
                .await
                .is_err()
        );
        assert!(limiter.check(&Scope::Register(ip)).await.is_err());
        assert!(limiter.check(&Scope::PropertyCreate(1)).await.is_err());
        assert!(limiter.check(&Scope::Booking(1)).await.is_err());
    }
    assert!(limiter.ping().await.is_err());
    assert!(
        limiter.is_rate_limited("down", Rate::new(5, HOUR)).await,
        "the library call fails closed"
    );
    Ok(())
}

fn throttles() -> Throttles {
    stayafrica::config::Settings::defaults().throttles
}

/// The guide's `is_rate_limited(key, limit, period)` on Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn is_rate_limited_counts_in_redis() -> anyhow::Result<()> {
    let app = redis_app(50).await?;
    let rate = Rate::new(5, HOUR);
    for _ in 0..5 {
        assert!(!app.state.limiter.is_rate_limited("booking:42", rate).await);
    }
    assert!(app.state.limiter.is_rate_limited("booking:42", rate).await);
    assert!(!app.state.limiter.is_rate_limited("booking:43", rate).await);
    let key = Keys::new(&app.state.settings.key_prefix).ratelimit("custom", "booking:42");
    let mut raw =
        stayafrica::kv::connect(&ratelimit_url(SHARED_REDIS), Duration::from_secs(5)).await?;
    let ttl: i64 = redis::cmd("PTTL").arg(&key).query_async(&mut raw).await?;
    assert!(
        ttl > 0,
        "the state lives in Redis DB 3 with a TTL (PTTL {ttl})"
    );
    Ok(())
}

// ----- HTTP, every role on the shared Redis -----

/// An app on the shared Redis with `anon` requests per hour per client IP.
async fn redis_app(anon: u32) -> anyhow::Result<TestApp> {
    redis_app_with(anon, |_| {}).await
}

async fn redis_app_with(
    anon: u32,
    tweak: impl FnOnce(&mut stayafrica::config::Settings) + Send + 'static,
) -> anyhow::Result<TestApp> {
    redis_app_on(SHARED_REDIS, anon, tweak).await
}

/// An app with every role on the Redis at `base` (one server, a cluster, a
/// Sentinel's master) and `anon` anonymous requests an hour.
async fn redis_app_on(
    base: &str,
    anon: u32,
    tweak: impl FnOnce(&mut stayafrica::config::Settings) + Send + 'static,
) -> anyhow::Result<TestApp> {
    spawn_app_with(TestOptions {
        redis: Some(base.into()),
        tweak: Box::new(move |s| {
            s.throttles
                .set(stayafrica::ratelimit::Action::Anon, Rate::new(anon, HOUR));
            tweak(s);
        }),
        ..TestOptions::default()
    })
    .await
}

fn header_u64(r: &Response, name: &str) -> anyhow::Result<u64> {
    let v = r
        .headers()
        .get(name)
        .ok_or_else(|| anyhow::anyhow!("no {name} header"))?;
    Ok(v.to_str()?.parse()?)
}

/// What one throttled-or-not response said.
#[derive(Debug)]
struct Seen {
    status: u16,
    limit: u64,
    remaining: u64,
    reset: u64,
    retry_after: Option<u64>,
}

async fn get_properties(client: Client, url: String) -> anyhow::Result<Seen> {
    let r = client.get(url).send().await?;
    Ok(Seen {
        status: r.status().as_u16(),
        limit: header_u64(&r, "x-ratelimit-limit")?,
        remaining: header_u64(&r, "x-ratelimit-remaining")?,
        reset: header_u64(&r, "x-ratelimit-reset")?,
        retry_after: header_u64(&r, "retry-after").ok(),
    })
}

/// Checks a burst of anonymous requests: exactly 50 pass, each with its own
/// `remaining`, and every refusal says when to come back.
fn assert_exactly_fifty(seen: &[Seen]) {
    let mut remaining: Vec<u64> = seen
        .iter()
        .filter(|s| s.status == 200)
        .map(|s| s.remaining)
        .collect();
    remaining.sort_unstable();
    assert_eq!(
        remaining,
        (0..50).collect::<Vec<u64>>(),
        "one pass per slot"
    );
    assert_eq!(seen.iter().filter(|s| s.status == 429).count(), 150);
    for s in seen {
        assert!(s.status == 200 || s.status == 429, "{s:?}");
        assert_eq!(s.limit, 50, "{s:?}");
        assert!(s.reset >= 1 && s.reset <= 3600, "{s:?}");
        if s.status == 429 {
            assert_eq!(s.remaining, 0, "{s:?}");
            assert!(s.retry_after.is_some_and(|r| r >= 1), "{s:?}");
        } else {
            assert!(s.retry_after.is_none(), "{s:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_burst_admits_exactly_the_limit() -> anyhow::Result<()> {
    let app = redis_app(50).await?;
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            tokio::spawn(get_properties(
                app.client.clone(),
                app.url("/api/v1/properties"),
            ))
        })
        .collect();
    let mut seen = Vec::new();
    for t in tasks {
        seen.push(t.await??);
    }
    assert_exactly_fifty(&seen);
    Ok(())
}

/// 200 racing requests at a limit of 50, spread over two API instances on
/// one Redis: exactly 50 pass.
mod two_instances_share_one_limit {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis() -> anyhow::Result<()> {
        super::two_instances_share_one_limit_on(crate::helpers::SHARED_REDIS).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cluster() -> anyhow::Result<()> {
        super::two_instances_share_one_limit_on(&crate::topologies::cluster_url().await?).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sentinel() -> anyhow::Result<()> {
        super::two_instances_share_one_limit_on(&crate::topologies::sentinel_url().await?).await
    }
}

async fn two_instances_share_one_limit_on(base: &str) -> anyhow::Result<()> {
    let first = redis_app_on(base, 50, |_| {}).await?;
    let prefix = first.state.settings.key_prefix.clone();
    let second = redis_app_on(base, 50, move |s| s.key_prefix = prefix).await?;
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let app = if i % 2 == 0 { &first } else { &second };
            tokio::spawn(get_properties(
                app.client.clone(),
                app.url("/api/v1/properties"),
            ))
        })
        .collect();
    let mut seen = Vec::new();
    for t in tasks {
        seen.push(t.await??);
    }
    assert_exactly_fifty(&seen);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixth_booking_attempt_in_an_hour_is_throttled() -> anyhow::Result<()> {
    let app = redis_app(100_000).await?;
    let user = app.signup("limited.guest@example.com", "guest").await?;
    // Invalid attempts count too: an unknown property is a 422.
    let body =
        json!({"property_id": 999_999, "check_in": day(10), "check_out": day(12), "guests": 1});
    for _ in 0..5 {
        let r = app.post("/api/v1/bookings", &body).await?;
        assert_eq!(r.status(), 422);
    }
    let r = app.post("/api/v1/bookings", &body).await?;
    assert_eq!(r.status(), 429);
    assert!(header_u64(&r, "retry-after")? >= 1);
    // The booking limit has the least remaining: the headers describe it.
    assert_eq!(header_u64(&r, "x-ratelimit-limit")?, 5);
    assert_eq!(header_u64(&r, "x-ratelimit-remaining")?, 0);
    assert_eq!(error_code(r).await?, "throttled");

    let id = user["id"].as_i64().unwrap_or_default().to_string();
    let key = Keys::new(&app.state.settings.key_prefix).ratelimit("booking", &id);
    let mut raw =
        stayafrica::kv::connect(&ratelimit_url(SHARED_REDIS), Duration::from_secs(5)).await?;
    let ttl: i64 = redis::cmd("PTTL").arg(&key).query_async(&mut raw).await?;
    assert!(ttl > 0, "the booking state is in Redis DB 3 (PTTL {ttl})");
    Ok(())
}

async fn get_from(app: &TestApp, forwarded_for: &str) -> anyhow::Result<u16> {
    let r = app
        .client
        .get(app.url("/api/v1/properties"))
        .header("x-forwarded-for", forwarded_for)
        .send()
        .await?;
    Ok(r.status().as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_forwarded_for_does_not_change_the_bucket() -> anyhow::Result<()> {
    let app = redis_app(50).await?;
    for i in 0..50 {
        assert_eq!(get_from(&app, &format!("203.0.113.{i}")).await?, 200);
    }
    assert_eq!(get_from(&app, "198.51.100.7").await?, 429);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_each_client_has_its_bucket() -> anyhow::Result<()> {
    let app = redis_app_with(50, |s| {
        s.trusted_proxies = vec![std::net::IpAddr::from([127, 0, 0, 1]).into()]
    })
    .await?;
    for _ in 0..50 {
        assert_eq!(get_from(&app, "203.0.113.1").await?, 200);
    }
    assert_eq!(get_from(&app, "203.0.113.1").await?, 429);
    assert_eq!(get_from(&app, "203.0.113.2").await?, 200);
    // The nearest untrusted hop counts, not a spoofable first value.
    assert_eq!(get_from(&app, "203.0.113.2, 203.0.113.1").await?, 429);
    Ok(())
}

async fn login_status(app: &TestApp, client: &Client, email: &str) -> anyhow::Result<Response> {
    Ok(client
        .post(app.url("/api/v1/auth/login"))
        .json(&json!({"email": email, "password": "password123"}))
        .send()
        .await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_anonymous_passes_login_refused_then_recovers() -> anyhow::Result<()> {
    let mut server = RedisServer::start().await?;
    let app = spawn_app_with(TestOptions {
        redis: Some(server.url()),
        tweak: Box::new(|s| s.throttles.set(Action::Anon, Rate::new(50, HOUR))),
        ..TestOptions::default()
    })
    .await?;
    let email = "down.user@example.com";
    let r = app
        .post("/api/v1/auth/register", &json!({"email": email, "password": "password123", "full_name": "Down User", "role": "guest"}))
        .await?;
    assert_eq!(r.status(), 201);

    server.stop();
    // A hang would fail here rather than stall the suite.
    let client = Client::builder().timeout(Duration::from_secs(5)).build()?;
    for _ in 0..3 {
        let r = client.get(app.url("/api/v1/properties")).send().await?;
        assert_eq!(r.status(), 200, "anonymous traffic fails open");
        let r = login_status(&app, &client, email).await?;
        assert_eq!(r.status(), 503, "login fails closed");
        assert_eq!(error_code(r).await?, "unavailable");
    }

    server.restart().await?;
    let mut last = 503;
    for _ in 0..50 {
        last = login_status(&app, &client, email).await?.status().as_u16();
        if last != 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(last, 200, "recovers by itself once Redis is back");
    Ok(())
}
