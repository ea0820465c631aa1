//! The cache role: one behaviour suite run on every `CacheStore` (the
//! in-process store and Redis, through the `Cache` facade), Redis-only
//! properties (lost generation counters, single flight across processes,
//! one round trip per cached read), then the HTTP-level guarantees on real
//! Redis: cached responses, invalidation without KEYS/SCAN, OTP, and
//! Redis going away and coming back.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Value, json};
use stayafrica::cache::otp::OtpSealKey;
use stayafrica::cache::{Cache, Entry, Event, Namespace, OtpOutcome};
use stayafrica::domain::Email;
use stayafrica::kv::keys::Keys;
use stayafrica::kv::{RedisRole, Role};

use crate::helpers::{
    RedisServer, SHARED_REDIS, TestApp, TestDb, TestOptions, code_in, property_body, spawn_app_with,
};

// ---------------------------------------------------------------------------
// Harness: the same suite on every store.

fn unique_keys() -> Keys {
    Keys::new(&format!("satest:{}:", uuid::Uuid::new_v4().simple()))
}

fn memory_cache() -> Cache {
    Cache::memory(64 * 1024 * 1024, unique_keys())
}

/// A cache on the Redis at `base` (DB 1, the guide's cache DB), under a
/// prefix of its own.
async fn redis_cache_on(base: &str, keys: Keys) -> anyhow::Result<Cache> {
    let url = crate::topologies::role_url(base, Role::Cache);
    let role = RedisRole::connect(Role::Cache, &url).await?;
    Ok(Cache::redis(role, keys))
}

async fn redis_cache() -> anyhow::Result<Cache> {
    redis_cache_on(SHARED_REDIS, unique_keys()).await
}

/// Removes everything a test left under its prefix in the shared Redis.
async fn cleanup(cache: &Cache) {
    let _ = cache.invalidate_pattern("*").await;
}

macro_rules! on_every_store {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn memory() -> anyhow::Result<()> {
                    super::$name(super::memory_cache()).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn redis() -> anyhow::Result<()> {
                    let cache = super::redis_cache().await?;
                    let result = super::$name(cache.clone()).await;
                    super::cleanup(&cache).await;
                    result
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn cluster() -> anyhow::Result<()> {
                    let url = crate::topologies::cluster_url().await?;
                    let cache = super::redis_cache_on(&url, super::unique_keys()).await?;
                    let result = super::$name(cache.clone()).await;
                    super::cleanup(&cache).await;
                    result
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sentinel() -> anyhow::Result<()> {
                    let url = crate::topologies::sentinel_url().await?;
                    let cache = super::redis_cache_on(&url, super::unique_keys()).await?;
                    let result = super::$name(cache.clone()).await;
                    super::cleanup(&cache).await;
                    result
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn tls() -> anyhow::Result<()> {
                    let url = crate::tls::tls_url().await?;
                    let cache = super::redis_cache_on(&url, super::unique_keys()).await?;
                    let result = super::$name(cache.clone()).await;
                    super::cleanup(&cache).await;
                    result
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn tls_cluster() -> anyhow::Result<()> {
                    let url = crate::tls::tls_cluster_url().await?;
                    let cache = super::redis_cache_on(&url, super::unique_keys()).await?;
                    let result = super::$name(cache.clone()).await;
                    super::cleanup(&cache).await;
                    result
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn tls_sentinel() -> anyhow::Result<()> {
                    let url = crate::tls::tls_sentinel_url().await?;
                    let cache = super::redis_cache_on(&url, super::unique_keys()).await?;
                    let result = super::$name(cache.clone()).await;
                    super::cleanup(&cache).await;
                    result
                }
            }
        )*
    };
}

on_every_store!(
    get_set_delete_and_expiry,
    large_values_round_trip_compressed,
    corrupt_entries_are_misses,
    generations_bump_and_templates_follow,
    pattern_delete_removes_only_matches,
    otp_single_use,
    otp_five_wrong_tries_kill_it,
    otp_replaced_by_a_new_code,
    otp_expires,
    otp_issue_mails_the_live_code_again,
    cold_key_with_100_callers_is_computed_once,
);

// ---------------------------------------------------------------------------
// The behaviour suite.

async fn get_set_delete_and_expiry(cache: Cache) -> anyhow::Result<()> {
    let (a, b) = (cache.keys().cache("t:a"), cache.keys().cache("t:b"));
    assert_eq!(cache.get_bytes("test", &a).await, None);
    cache
        .set_bytes(
            "test",
            &a,
            Bytes::from_static(b"{\"v\":1}"),
            Duration::from_secs(60),
        )
        .await;
    cache
        .set_bytes(
            "test",
            &b,
            Bytes::from_static(b"short"),
            Duration::from_millis(300),
        )
        .await;
    assert_eq!(
        cache.get_bytes("test", &a).await.as_deref(),
        Some(&b"{\"v\":1}"[..])
    );
    assert_eq!(
        cache.get_bytes("test", &b).await.as_deref(),
        Some(&b"short"[..])
    );
    // Overwrite replaces.
    cache
        .set_bytes(
            "test",
            &a,
            Bytes::from_static(b"{\"v\":2}"),
            Duration::from_secs(60),
        )
        .await;
    assert_eq!(
        cache.get_bytes("test", &a).await.as_deref(),
        Some(&b"{\"v\":2}"[..])
    );

    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(cache.get_bytes("test", &b).await, None, "expired");
    assert!(
        cache.get_bytes("test", &a).await.is_some(),
        "long TTL lives on"
    );

    assert_eq!(cache.store().delete(&[a.clone(), b.clone()]).await?, 1);
    assert_eq!(cache.get_bytes("test", &a).await, None);
    assert_eq!(cache.store().delete(&[]).await?, 0);
    Ok(())
}

async fn large_values_round_trip_compressed(cache: Cache) -> anyhow::Result<()> {
    let key = cache.keys().cache("t:large");
    let rows: Vec<Value> = (0..2000)
        .map(|i| json!({"id": i, "title": format!("Lovely home in Nairobi #{i}"), "city": "Nairobi"}))
        .collect();
    let body = Bytes::from(serde_json::to_vec(&rows)?);
    cache
        .set_bytes("test", &key, body.clone(), Duration::from_secs(60))
        .await;
    assert_eq!(cache.get_bytes("test", &key).await, Some(body.clone()));
    // What the store holds is the framed, compressed form.
    let stored = cache
        .store()
        .get(&key)
        .await?
        .ok_or_else(|| anyhow::anyhow!("nothing stored"))?;
    assert_eq!(stored[0], 1, "LZ4 header");
    assert!(
        stored.len() * 4 < body.len(),
        "{} vs {}",
        stored.len(),
        body.len()
    );

    // Typed values round-trip too.
    let typed: Vec<Value> = cache
        .get_or_compute(
            "test",
            &cache.keys().cache("t:typed"),
            Duration::from_secs(60),
            || {
                let rows = rows.clone();
                async move { Ok(rows) }
            },
        )
        .await?;
    let again: Vec<Value> = cache
        .get_or_compute(
            "test",
            &cache.keys().cache("t:typed"),
            Duration::from_secs(60),
            || async { anyhow::bail!("must be a hit") },
        )
        .await?;
    assert_eq!(typed, again);
    assert_eq!(again.len(), 2000);
    Ok(())
}

async fn corrupt_entries_are_misses(cache: Cache) -> anyhow::Result<()> {
    let key = cache.keys().cache("t:corrupt");
    cache
        .store()
        .set(
            &key,
            Bytes::from_static(&[9, 9, 9]),
            Duration::from_secs(60),
        )
        .await?;
    assert_eq!(cache.get_bytes("test", &key).await, None);
    let v = cache
        .get_or_compute_bytes("test", &key, Duration::from_secs(60), || async {
            Ok(Bytes::from_static(b"fresh"))
        })
        .await?;
    assert_eq!(&v[..], b"fresh");
    assert_eq!(
        cache.get_bytes("test", &key).await.as_deref(),
        Some(&b"fresh"[..])
    );
    // A typed entry that no longer deserializes is recomputed, not an error.
    let typed_key = cache.keys().cache("t:typed");
    cache
        .set_bytes(
            "test",
            &typed_key,
            Bytes::from_static(b"\"text\""),
            Duration::from_secs(60),
        )
        .await;
    let n: i64 = cache
        .get_or_compute("test", &typed_key, Duration::from_secs(60), || async {
            Ok(42)
        })
        .await?;
    assert_eq!(n, 42);
    Ok(())
}

async fn generations_bump_and_templates_follow(cache: Cache) -> anyhow::Result<()> {
    let g0 = cache
        .generation(Namespace::Properties)
        .await
        .ok_or_else(|| anyhow::anyhow!("no generation"))?;
    assert_eq!(
        cache.generation(Namespace::Properties).await,
        Some(g0),
        "stable"
    );
    cache.invalidate(Namespace::Properties).await?;
    let g1 = cache
        .generation(Namespace::Properties)
        .await
        .ok_or_else(|| anyhow::anyhow!("no generation"))?;
    assert!(g1 > g0, "{g1} > {g0}");

    // A template and the key built from the generation name the same entry.
    let computed = AtomicUsize::new(0);
    let template = cache.keys().property_detail_template(7);
    let compute = || async {
        computed.fetch_add(1, Ordering::SeqCst);
        Ok(Bytes::from_static(b"{\"id\":7}"))
    };
    let ttl = Duration::from_secs(60);
    cache
        .get_or_compute_bytes_in("test", &template, ttl, compute)
        .await?;
    cache
        .get_or_compute_bytes_in("test", &template, ttl, compute)
        .await?;
    assert_eq!(computed.load(Ordering::SeqCst), 1);
    let generations = cache
        .store()
        .generations(template.generation_keys())
        .await?;
    assert_eq!(generations[0], g1);
    let key = template.render(&generations);
    assert_eq!(
        cache.get_bytes("test", &key).await.as_deref(),
        Some(&b"{\"id\":7}"[..])
    );

    // A bump makes it unreachable at once; the next read computes again.
    cache.invalidate(Namespace::Properties).await?;
    cache
        .get_or_compute_bytes_in("test", &template, ttl, compute)
        .await?;
    assert_eq!(computed.load(Ordering::SeqCst), 2);

    // Two generations (dashboard): bumping either one invalidates.
    let user_ns = Namespace::User(5);
    let dash = cache.keys().dashboard_template(5);
    let n = AtomicUsize::new(0);
    let compute = || async {
        n.fetch_add(1, Ordering::SeqCst);
        Ok(Bytes::from_static(b"{}"))
    };
    cache
        .get_or_compute_bytes_in("test", &dash, ttl, compute)
        .await?;
    cache
        .get_or_compute_bytes_in("test", &dash, ttl, compute)
        .await?;
    assert_eq!(n.load(Ordering::SeqCst), 1);
    cache.invalidate(user_ns).await?;
    cache
        .get_or_compute_bytes_in("test", &dash, ttl, compute)
        .await?;
    assert_eq!(n.load(Ordering::SeqCst), 2);
    cache.invalidate(Namespace::Properties).await?;
    cache
        .get_or_compute_bytes_in("test", &dash, ttl, compute)
        .await?;
    assert_eq!(n.load(Ordering::SeqCst), 3);
    Ok(())
}

async fn pattern_delete_removes_only_matches(cache: Cache) -> anyhow::Result<()> {
    let ttl = Duration::from_secs(60);
    for i in 0..30 {
        cache
            .set_bytes(
                "test",
                &cache.keys().property_detail_template(i).render(&[1, 1]),
                Bytes::from_static(b"x"),
                ttl,
            )
            .await;
    }
    let other = cache.keys().cache("user:dashboard:1:x");
    cache
        .set_bytes("test", &other, Bytes::from_static(b"y"), ttl)
        .await;
    let removed = cache.invalidate_pattern("property:*").await?;
    assert_eq!(removed, 30);
    assert_eq!(
        cache
            .get_bytes(
                "test",
                &cache.keys().property_detail_template(3).render(&[1, 1]),
            )
            .await,
        None
    );
    assert!(cache.get_bytes("test", &other).await.is_some());
    Ok(())
}

fn email(s: &str) -> anyhow::Result<Email> {
    Email::parse(s).map_err(|e| anyhow::anyhow!("{e}"))
}

async fn otp_single_use(cache: Cache) -> anyhow::Result<()> {
    let e = email("nia@example.com")?;
    let ttl = Duration::from_secs(60);
    assert_eq!(cache.otp_attempt(&e, "123456").await?, OtpOutcome::Missing);
    cache.otp_put(&e, "123456", ttl).await?;
    assert_eq!(cache.otp_attempt(&e, "654321").await?, OtpOutcome::Rejected);
    assert_eq!(cache.otp_attempt(&e, "123456").await?, OtpOutcome::Accepted);
    assert_eq!(cache.otp_attempt(&e, "123456").await?, OtpOutcome::Missing);
    // Another email's code is another code.
    let other = email("other@example.com")?;
    cache.otp_put(&other, "111111", ttl).await?;
    assert_eq!(cache.otp_attempt(&e, "111111").await?, OtpOutcome::Missing);
    assert_eq!(
        cache.otp_attempt(&other, "111111").await?,
        OtpOutcome::Accepted
    );
    Ok(())
}

async fn otp_five_wrong_tries_kill_it(cache: Cache) -> anyhow::Result<()> {
    let e = email("nia@example.com")?;
    cache.otp_put(&e, "123456", Duration::from_secs(60)).await?;
    for _ in 0..5 {
        assert_eq!(cache.otp_attempt(&e, "000000").await?, OtpOutcome::Rejected);
    }
    assert_eq!(cache.otp_attempt(&e, "123456").await?, OtpOutcome::Missing);

    // Concurrent guesses cannot exceed the limit either.
    cache.otp_put(&e, "123456", Duration::from_secs(60)).await?;
    let tries = futures::future::join_all((0..20).map(|i| {
        let cache = cache.clone();
        let e = e.clone();
        async move { cache.otp_attempt(&e, &format!("{:06}", i + 200_000)).await }
    }))
    .await;
    let rejected = tries
        .into_iter()
        .filter(|r| matches!(r, Ok(OtpOutcome::Rejected)))
        .count();
    assert_eq!(rejected, 5);
    assert_eq!(cache.otp_attempt(&e, "123456").await?, OtpOutcome::Missing);
    Ok(())
}

async fn otp_replaced_by_a_new_code(cache: Cache) -> anyhow::Result<()> {
    let e = email("nia@example.com")?;
    let ttl = Duration::from_secs(60);
    cache.otp_put(&e, "111111", ttl).await?;
    for _ in 0..4 {
        assert_eq!(cache.otp_attempt(&e, "000000").await?, OtpOutcome::Rejected);
    }
    cache.otp_put(&e, "222222", ttl).await?;
    // The old code is gone and the attempt count starts again.
    assert_eq!(cache.otp_attempt(&e, "111111").await?, OtpOutcome::Rejected);
    for _ in 0..3 {
        assert_eq!(cache.otp_attempt(&e, "000000").await?, OtpOutcome::Rejected);
    }
    assert_eq!(cache.otp_attempt(&e, "222222").await?, OtpOutcome::Accepted);
    Ok(())
}

async fn otp_issue_mails_the_live_code_again(cache: Cache) -> anyhow::Result<()> {
    let e = email("nia@example.com")?;
    let seal = OtpSealKey::new(rand::random());
    let ttl = Duration::from_secs(60);
    let first = cache.otp_issue(&e, &seal, ttl).await?;
    assert!(first.fresh);
    assert_eq!(first.code.len(), 6);
    // Asked again while live (wrong tries included, short of the last):
    // the same code, not a new one.
    for _ in 0..4 {
        assert_eq!(
            cache.otp_attempt(&e, "999999x").await?,
            OtpOutcome::Rejected
        );
        let again = cache.otp_issue(&e, &seal, ttl).await?;
        assert!(!again.fresh);
        assert_eq!(again.code, first.code);
        assert!(again.valid_for <= ttl);
    }
    assert_eq!(
        cache.otp_attempt(&e, &first.code).await?,
        OtpOutcome::Accepted
    );
    // Used: the next request makes a new code.
    let second = cache.otp_issue(&e, &seal, ttl).await?;
    assert!(second.fresh);
    // Dead after the last wrong try: a new code as well.
    for _ in 0..5 {
        assert_eq!(
            cache.otp_attempt(&e, "999999x").await?,
            OtpOutcome::Rejected
        );
    }
    let third = cache.otp_issue(&e, &seal, ttl).await?;
    assert!(third.fresh);
    assert_eq!(
        cache.otp_attempt(&e, &third.code).await?,
        OtpOutcome::Accepted
    );
    // Concurrent requests agree on one code.
    let codes = futures::future::join_all((0..10).map(|_| cache.otp_issue(&e, &seal, ttl))).await;
    let codes: HashSet<String> = codes
        .into_iter()
        .map(|r| r.map(|c| c.code))
        .collect::<anyhow::Result<_>>()?;
    assert_eq!(codes.len(), 1, "{codes:?}");
    Ok(())
}

async fn otp_expires(cache: Cache) -> anyhow::Result<()> {
    let e = email("nia@example.com")?;
    cache
        .otp_put(&e, "123456", Duration::from_millis(300))
        .await?;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(cache.otp_attempt(&e, "123456").await?, OtpOutcome::Missing);
    Ok(())
}

async fn cold_key_with_100_callers_is_computed_once(cache: Cache) -> anyhow::Result<()> {
    let computed = Arc::new(AtomicUsize::new(0));
    let key = cache.keys().cache("t:cold");
    let results = futures::future::join_all((0..100).map(|_| {
        let (cache, computed, key) = (cache.clone(), computed.clone(), key.clone());
        tokio::spawn(async move {
            cache
                .get_or_compute("test", &key, Duration::from_secs(60), || async {
                    computed.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    Ok(json!({"answer": 42}))
                })
                .await
        })
    }))
    .await;
    for r in results {
        let v: Value = r??;
        assert_eq!(v["answer"], 42);
    }
    assert_eq!(computed.load(Ordering::SeqCst), 1);
    Ok(())
}

// ---------------------------------------------------------------------------
// Redis only.

/// Calls per command since the server started (`INFO commandstats`).
async fn command_stats(url: &str) -> anyhow::Result<HashMap<String, u64>> {
    let client = redis::Client::open(url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut conn)
        .await?;
    Ok(crate::helpers::parse_commandstats(&info)
        .into_iter()
        .collect())
}

fn delta(before: &HashMap<String, u64>, after: &HashMap<String, u64>) -> HashMap<String, u64> {
    after
        .iter()
        .filter(|(k, _)| *k != "info")
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0)))
        .filter(|(_, v)| *v > 0)
        .collect()
}

/// All keys matching `pattern` in DB `db` of the Redis at `base` (SCAN).
async fn scan(base: &str, db: u8, pattern: &str) -> anyhow::Result<Vec<String>> {
    let client = redis::Client::open(format!("{base}/{db}"))?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let mut cursor = 0u64;
    let mut found = Vec::new();
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await?;
        found.extend(keys);
        if next == 0 {
            return Ok(found);
        }
        cursor = next;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_held_near_costs_one_command_and_no_payload() -> anyhow::Result<()> {
    let server = RedisServer::start().await?;
    let cache = redis_cache_on(&server.url(), unique_keys())
        .await?
        .with_near_cache(1 << 20);
    let entry = Entry::PropertyList {
        query: "[1,20]",
        place: stayafrica::cache::policy::Place::Anywhere,
    };
    let filled = cache
        .response(entry, || async { Ok(Bytes::from_static(b"page")) })
        .await?;
    let monitor = Monitor::start(server.port).await?;
    let seen = monitor.lines().len();
    let hit = cache
        .response(entry, || async { anyhow::bail!("must be a hit") })
        .await?;
    monitor.sync().await?;
    assert_eq!(hit, filled);
    // Only the generations' validation (one MGET of the counters), and no
    // GET of the entry: the payload stays here.
    let sent: Vec<String> = monitor.lines()[seen..]
        .iter()
        .filter(|l| l.contains(" [1 127.0.0.1:") && !l.contains("\"ECHO\""))
        .cloned()
        .collect();
    assert_eq!(sent.len(), 1, "{sent:#?}");
    assert!(sent[0].contains("\"MGET\""), "{sent:#?}");
    // After a bump the old copy is not served: the next read computes.
    cache.happened(Event::PropertiesChanged).await?;
    let fresh = cache
        .response(entry, || async { Ok(Bytes::from_static(b"page 2")) })
        .await?;
    assert_eq!(&fresh.identity[..], b"page 2");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_generation_counter_never_revives_old_entries() -> anyhow::Result<()> {
    let cache = redis_cache().await?;
    let result = async {
        let template = cache.keys().featured_template();
        let ttl = Duration::from_secs(60);
        let serve = |body: &'static [u8]| {
            let cache = cache.clone();
            let template = template.clone();
            async move {
                cache
                    .get_or_compute_bytes_in("test", &template, ttl, || async {
                        Ok(Bytes::from_static(body))
                    })
                    .await
            }
        };
        // Cached under g0, then invalidated and cached under g0+1 …
        assert_eq!(&serve(b"v1").await?[..], b"v1");
        cache.invalidate(Namespace::Properties).await?;
        assert_eq!(&serve(b"v2").await?[..], b"v2");
        cache.invalidate(Namespace::Properties).await?;
        let before = cache
            .generation(Namespace::Properties)
            .await
            .unwrap_or_default();
        // … then the counter is evicted (or Redis restarted without it) while
        // entries survive. It must come back above every generation already
        // used (a restart at 0 would count up through them again), so the
        // old entries are never served.
        let gen_key = cache.keys().generation(Namespace::Properties);
        assert_eq!(
            cache.store().delete(std::slice::from_ref(&gen_key)).await?,
            1
        );
        assert_eq!(&serve(b"v3").await?[..], b"v3");
        let after = cache
            .generation(Namespace::Properties)
            .await
            .unwrap_or_default();
        assert!(after > before, "{after} > {before}");
        // Bumping a lost counter does not restart it low either.
        assert_eq!(
            cache.store().delete(std::slice::from_ref(&gen_key)).await?,
            1
        );
        let bumped = cache.store().bump(&gen_key).await?;
        assert!(bumped > after, "{bumped} > {after}");
        // Which is also why counters may expire (one per user must not pile
        // up on a Redis that never evicts).
        let client = redis::Client::open(format!("{SHARED_REDIS}/1"))?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        let ttl: i64 = redis::cmd("PTTL")
            .arg(&gen_key)
            .query_async(&mut conn)
            .await?;
        assert!(ttl > 0, "generation counter without a lifetime: {ttl}");
        anyhow::Ok(())
    }
    .await;
    cleanup(&cache).await;
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_flight_across_processes() -> anyhow::Result<()> {
    // Two facades on one Redis prefix: two processes' worth of in-process
    // single flight, so only the Redis compute lock can keep it to one.
    let keys = unique_keys();
    let a = redis_cache_on(SHARED_REDIS, keys.clone()).await?;
    let b = redis_cache_on(SHARED_REDIS, keys).await?;
    let computed = Arc::new(AtomicUsize::new(0));
    let key = a.keys().cache("t:shared");
    let results = futures::future::join_all((0..100).map(|i| {
        let cache = if i % 2 == 0 { a.clone() } else { b.clone() };
        let (computed, key) = (computed.clone(), key.clone());
        tokio::spawn(async move {
            cache
                .get_or_compute_bytes("test", &key, Duration::from_secs(60), || async {
                    computed.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    Ok(Bytes::from_static(b"once"))
                })
                .await
        })
    }))
    .await;
    cleanup(&a).await;
    for r in results {
        assert_eq!(&r??[..], b"once");
    }
    assert_eq!(computed.load(Ordering::SeqCst), 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vanished_or_stuck_lock_holders_do_not_leave_callers_without_an_answer()
-> anyhow::Result<()> {
    let cache = redis_cache().await?;
    let result = async {
        let s = cache.store();
        // A holder that died: its lock expires and the waiter computes.
        let key = cache.keys().cache("t:vanished");
        assert!(
            s.try_lock(
                &cache.keys().compute_lock(&key),
                "dead",
                Duration::from_millis(300)
            )
            .await?
        );
        let v = cache
            .get_or_compute_bytes("test", &key, Duration::from_secs(60), || async {
                Ok(Bytes::from_static(b"mine"))
            })
            .await?;
        assert_eq!(&v[..], b"mine");
        // A holder that hangs: the wait is bounded, then the waiter computes.
        let key = cache.keys().cache("t:stuck");
        let lock = cache.keys().compute_lock(&key);
        assert!(s.try_lock(&lock, "stuck", Duration::from_secs(60)).await?);
        let v = cache
            .get_or_compute_bytes("test", &key, Duration::from_secs(60), || async {
                Ok(Bytes::from_static(b"anyway"))
            })
            .await?;
        assert_eq!(&v[..], b"anyway");
        // Our unlock never releases someone else's lock.
        s.unlock(&lock, "not-the-holder").await?;
        assert!(!s.try_lock(&lock, "third", Duration::from_secs(1)).await?);
        s.unlock(&lock, "stuck").await?;
        assert!(s.try_lock(&lock, "third", Duration::from_secs(1)).await?);
        anyhow::Ok(())
    }
    .await;
    cleanup(&cache).await;
    result
}

// ---------------------------------------------------------------------------
// Over HTTP, on real Redis.

async fn redis_app(db: TestDb, redis: &str) -> anyhow::Result<TestApp> {
    spawn_app_with(TestOptions {
        db,
        redis: Some(redis.to_owned()),
        ..TestOptions::default()
    })
    .await
}

fn id_of(v: &Value) -> anyhow::Result<i64> {
    v["id"]
        .as_i64()
        .ok_or_else(|| anyhow::anyhow!("no id in {v}"))
}

async fn text(app: &TestApp, path: &str) -> anyhow::Result<String> {
    let r = app.get(path).await?;
    anyhow::ensure!(r.status() == 200, "GET {path}: {}", r.status());
    Ok(r.text().await?)
}

/// Removes everything an app left under its prefix in DB 1 of the shared Redis.
async fn cleanup_app(app: &TestApp) {
    cleanup(&app.state.cache).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_is_served_from_cache_whatever_the_parameter_order() -> anyhow::Result<()> {
    let app = redis_app(TestDb::Postgres, SHARED_REDIS).await?;
    let result = async {
        let host = app.new_client();
        app.signup_with(&host, "host@example.com", "host").await?;
        let mut ids = Vec::new();
        for price in ["80.00", "90.00"] {
            let p = app
                .create_property_with(&host, property_body("Nairobi", price, false))
                .await?;
            ids.push(id_of(&p)?);
        }
        let first = text(&app, "/api/v1/properties?page=2&city=Nairobi&page_size=1").await?;
        let page: Value = serde_json::from_str(&first)?;
        assert_eq!(page["count"], 2);
        let shown = id_of(&page["results"][0])?;
        let kept = ids
            .iter()
            .copied()
            .find(|id| *id != shown)
            .ok_or_else(|| anyhow::anyhow!("page shows an unknown property"))?;

        // Remove the shown property in the database behind the cache's back
        // (no invalidation): only a cached response can still show it.
        let now = time::OffsetDateTime::now_utc();
        app.db().delete_property(shown, now.date(), now).await?;
        let same = text(&app, "/api/v1/properties?page_size=1&city=nairobi&page=2").await?;
        assert_eq!(
            same, first,
            "served from the cache, parameters in any order"
        );

        // A write through the API invalidates: the next read sees the database.
        let patched = host
            .patch(app.url(&format!("/api/v1/properties/{kept}")))
            .json(&json!({"title": "Renamed"}))
            .send()
            .await?;
        assert_eq!(patched.status(), 200);
        let fresh: Value = serde_json::from_str(
            &text(&app, "/api/v1/properties?page=2&city=Nairobi&page_size=1").await?,
        )?;
        assert_eq!(fresh["count"], 1);
        assert_eq!(fresh["results"], json!([]));
        anyhow::Ok(())
    }
    .await;
    cleanup_app(&app).await;
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_is_visible_in_the_very_next_list_featured_and_detail() -> anyhow::Result<()> {
    let app = redis_app(TestDb::Sqlite, SHARED_REDIS).await?;
    let result = async {
        let host = app.new_client();
        app.signup_with(&host, "host@example.com", "host").await?;
        let p = app
            .create_property_with(&host, property_body("Mombasa", "70.00", false))
            .await?;
        let id = id_of(&p)?;
        let detail = format!("/api/v1/properties/{id}");
        let (list, featured) = (
            "/api/v1/properties?city=Mombasa",
            "/api/v1/properties/featured",
        );
        // Warm every cached view, twice so the second is a hit.
        for _ in 0..2 {
            for path in [list, featured, detail.as_str()] {
                text(&app, path).await?;
            }
        }
        let r = host
            .patch(app.url(&detail))
            .json(&json!({"title": "Ocean view", "is_featured": true}))
            .send()
            .await?;
        assert_eq!(r.status(), 200);
        let l: Value = serde_json::from_str(&text(&app, list).await?)?;
        assert_eq!(l["results"][0]["title"], "Ocean view");
        let f: Value = serde_json::from_str(&text(&app, featured).await?)?;
        assert!(
            f.as_array().is_some_and(|a| a
                .iter()
                .any(|p| p["id"] == id && p["title"] == "Ocean view")),
            "{f}"
        );
        let d: Value = serde_json::from_str(&text(&app, &detail).await?)?;
        assert_eq!(d["title"], "Ocean view");
        assert_eq!(d["is_featured"], true);
        anyhow::Ok(())
    }
    .await;
    cleanup_app(&app).await;
    result
}

/// `redis-cli MONITOR` on a test's own server: every command, in order.
struct Monitor {
    port: u16,
    child: std::process::Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Monitor {
    async fn start(port: u16) -> anyhow::Result<Monitor> {
        use std::io::BufRead;
        let mut child = std::process::Command::new("redis-cli")
            .args(["-p", &port.to_string(), "monitor"])
            .stdout(std::process::Stdio::piped())
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                sink.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            }
        });
        let monitor = Monitor { port, child, lines };
        monitor.sync().await?;
        Ok(monitor)
    }

    /// Waits until every command sent before this call has been seen.
    async fn sync(&self) -> anyhow::Result<()> {
        let marker = format!("sync-{}", uuid::Uuid::new_v4().simple());
        let client = redis::Client::open(format!("redis://127.0.0.1:{}", self.port))?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            redis::cmd("ECHO")
                .arg(&marker)
                .query_async::<String>(&mut conn)
                .await?;
            tokio::time::sleep(Duration::from_millis(50)).await;
            if self.lines().iter().any(|l| l.contains(&marker)) {
                return Ok(());
            }
        }
        anyhow::bail!("MONITOR saw nothing")
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_concurrent_requests_for_a_cold_key_compute_it_once() -> anyhow::Result<()> {
    let server = RedisServer::start().await?;
    let app = redis_app(TestDb::Sqlite, &server.url()).await?;
    let host = app.new_client();
    app.signup_with(&host, "host@example.com", "host").await?;
    for price in ["50.00", "60.00", "70.00"] {
        app.create_property_with(&host, property_body("Kigali", price, false))
            .await?;
    }
    let monitor = Monitor::start(server.port).await?;
    let url = app.url("/api/v1/properties?city=Kigali");
    let bodies = futures::future::join_all((0..100).map(|_| {
        let (client, url) = (app.client.clone(), url.clone());
        tokio::spawn(async move {
            let r = client.get(url).send().await?;
            anyhow::ensure!(r.status() == 200, "status {}", r.status());
            Ok(r.text().await?)
        })
    }))
    .await;
    let mut distinct = HashSet::new();
    for b in bodies {
        distinct.insert(b??);
    }
    assert_eq!(distinct.len(), 1, "every caller got the same page");
    monitor.sync().await?;
    let is_list_write = |l: &String| l.contains("\"SET\" \"") && l.contains("cache:property:list:");
    let stores = monitor.lines().iter().filter(|l| is_list_write(l)).count();
    assert_eq!(stores, 1, "computed and stored once");

    // And a cached GET writes nothing and costs at most two cache commands.
    let seen = monitor.lines().len();
    text(&app, "/api/v1/properties?city=Kigali").await?;
    monitor.sync().await?;
    let cache_cmds: Vec<String> = monitor.lines()[seen..]
        .iter()
        .filter(|l| l.contains(" [1 127.0.0.1:") && !l.contains("\"ECHO\""))
        .cloned()
        .collect();
    assert!(
        !cache_cmds.is_empty() && cache_cmds.len() <= 2,
        "{cache_cmds:#?}"
    );
    assert!(!cache_cmds.iter().any(is_list_write));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidation_issues_no_keys_or_scan() -> anyhow::Result<()> {
    let server = RedisServer::start().await?;
    let app = redis_app(TestDb::Sqlite, &server.url()).await?;
    let host = app.new_client();
    app.signup_with(&host, "host@example.com", "host").await?;
    let p = app
        .create_property_with(&host, property_body("Accra", "40.00", true))
        .await?;
    let detail = format!("/api/v1/properties/{}", id_of(&p)?);
    for path in [
        "/api/v1/properties?city=Accra",
        "/api/v1/properties/featured",
        detail.as_str(),
    ] {
        text(&app, path).await?;
    }
    let before = command_stats(&server.url()).await?;
    let r = host
        .patch(app.url(&detail))
        .json(&json!({"title": "Accra loft"}))
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    let after = command_stats(&server.url()).await?;
    let used = delta(&before, &after);
    assert!(!used.contains_key("keys"), "{used:?}");
    assert!(!used.contains_key("scan"), "{used:?}");
    let l: Value = serde_json::from_str(&text(&app, "/api/v1/properties?city=Accra").await?)?;
    assert_eq!(l["results"][0]["title"], "Accra loft");
    Ok(())
}

async fn otp_app(otp_ttl: Duration) -> anyhow::Result<TestApp> {
    otp_app_on(SHARED_REDIS, otp_ttl).await
}

/// An app with every role on the Redis at `base` (one server, a cluster, a
/// Sentinel's master).
async fn otp_app_on(base: &str, otp_ttl: Duration) -> anyhow::Result<TestApp> {
    spawn_app_with(TestOptions {
        db: TestDb::Sqlite,
        redis: Some(base.into()),
        tweak: Box::new(move |s| {
            s.otp_ttl = otp_ttl;
            s.throttles.set_setting(
                "throttle_otp",
                stayafrica::ratelimit::Rate::new(1000, Duration::from_secs(3600)),
            );
        }),
        ..TestOptions::default()
    })
    .await
}

/// Asks for a code for `email` and returns it, read from the email sent.
async fn fresh_code(app: &TestApp, email: &str) -> anyhow::Result<String> {
    let r = app
        .post("/api/v1/auth/otp", &json!({ "email": email }))
        .await?;
    anyhow::ensure!(r.status() == 202, "otp request: {}", r.status());
    app.drain_jobs().await?;
    app.emails()
        .last()
        .and_then(|m| code_in(m))
        .ok_or_else(|| anyhow::anyhow!("no code sent"))
}

async fn verify(app: &TestApp, email: &str, code: &str) -> anyhow::Result<u16> {
    let r = app
        .new_client()
        .post(app.url("/api/v1/auth/otp/verify"))
        .json(&json!({ "email": email, "otp": code }))
        .send()
        .await?;
    Ok(r.status().as_u16())
}

/// One-time-code login end to end, on one server, a cluster and a
/// Sentinel's master.
mod otp_end_to_end {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis() -> anyhow::Result<()> {
        super::otp_end_to_end_on(crate::helpers::SHARED_REDIS).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cluster() -> anyhow::Result<()> {
        super::otp_end_to_end_on(&crate::topologies::cluster_url().await?).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sentinel() -> anyhow::Result<()> {
        super::otp_end_to_end_on(&crate::topologies::sentinel_url().await?).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tls_cluster() -> anyhow::Result<()> {
        super::otp_end_to_end_on(&crate::tls::tls_cluster_url().await?).await
    }
}

async fn otp_end_to_end_on(base: &str) -> anyhow::Result<()> {
    let app = otp_app_on(base, Duration::from_secs(300)).await?;
    let result = async {
        let email = "nia@example.com";
        app.signup_with(&app.new_client(), email, "guest").await?;
        let code = fresh_code(&app, email).await?;

        // Stored in the cache role under the prefix, hashed: never the code.
        let prefix = &app.state.settings.key_prefix;
        let cache_url = crate::topologies::role_url(base, Role::Cache);
        let stored =
            crate::topologies::scan_all(&cache_url, &format!("{prefix}cache:otp:*")).await?;
        assert_eq!(stored.len(), 1);
        let mut conn = stayafrica::kv::connect(&cache_url, Duration::from_secs(5)).await?;
        let fields: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(&stored[0])
            .query_async(&mut conn)
            .await?;
        assert!(!stored[0].contains(email) && !stored[0].contains("nia"));
        assert!(fields.values().all(|v| !v.contains(&code)), "{fields:?}");

        assert_eq!(verify(&app, email, &code).await?, 200);
        assert_eq!(verify(&app, email, &code).await?, 401, "single use");

        let code = fresh_code(&app, email).await?;
        let wrong = if code == "000000" { "111111" } else { "000000" };
        for _ in 0..5 {
            assert_eq!(verify(&app, email, wrong).await?, 401);
        }
        assert_eq!(
            verify(&app, email, &code).await?,
            401,
            "dead after 5 wrong tries"
        );
        let code = fresh_code(&app, email).await?;
        assert_eq!(verify(&app, email, wrong).await?, 401);
        assert_eq!(verify(&app, email, &code).await?, 200, "a new code works");
        anyhow::Ok(())
    }
    .await;
    cleanup_app(&app).await;
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otp_expires_on_redis() -> anyhow::Result<()> {
    let app = otp_app(Duration::from_secs(1)).await?;
    let result = async {
        let email = "kofi@example.com";
        app.signup_with(&app.new_client(), email, "guest").await?;
        let code = fresh_code(&app, email).await?;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(verify(&app, email, &code).await?, 401);
        anyhow::Ok(())
    }
    .await;
    cleanup_app(&app).await;
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_gets_survive_redis_going_down_and_cache_again_after() -> anyhow::Result<()> {
    let mut server = RedisServer::start().await?;
    let app = redis_app(TestDb::Sqlite, &server.url()).await?;
    let host = app.new_client();
    app.signup_with(&host, "host@example.com", "host").await?;
    let p = app
        .create_property_with(&host, property_body("Dakar", "55.00", true))
        .await?;
    let detail = format!("/api/v1/properties/{}", id_of(&p)?);
    let paths = [
        "/api/v1/properties?city=Dakar",
        "/api/v1/properties/featured",
        detail.as_str(),
    ];
    for path in paths {
        text(&app, path).await?;
    }

    server.stop();
    for _ in 0..3 {
        for path in paths {
            let body: Value = serde_json::from_str(&text(&app, path).await?)?;
            assert!(body.is_object() || body.is_array());
        }
    }

    server.restart().await?;
    let list_keys = format!("{}cache:property:list:*", app.state.settings.key_prefix);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // Clear what the append-only file kept, then see a GET cache again.
        let cleared = app.state.cache.invalidate_pattern("property:list:*").await;
        text(&app, paths[0]).await?;
        if cleared.is_ok() && !scan(&server.url(), 1, &list_keys).await?.is_empty() {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "the cache did not recover");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_keys_live_in_db_1_under_the_prefix() -> anyhow::Result<()> {
    let app = redis_app(TestDb::Sqlite, SHARED_REDIS).await?;
    let result = async {
        let host = app.new_client();
        app.signup_with(&host, "host@example.com", "host").await?;
        let p = app
            .create_property_with(&host, property_body("Kampala", "45.00", true))
            .await?;
        for path in [
            "/api/v1/properties",
            "/api/v1/properties/featured",
            &format!("/api/v1/properties/{}", id_of(&p)?),
        ] {
            text(&app, path).await?;
        }
        let prefix = app.state.settings.key_prefix.clone();
        let ours = format!("{prefix}cache:*");
        let found = scan(SHARED_REDIS, 1, &ours).await?;
        for part in [
            "cache:gen:",
            "cache:property:list:",
            "cache:property:list:featured:",
            "cache:property:detail:",
            "cache:views:",
        ] {
            assert!(
                found.iter().any(|k| k.contains(part)),
                "{part} in {found:#?}"
            );
        }
        for db in [0, 2, 3] {
            assert!(scan(SHARED_REDIS, db, &ours).await?.is_empty(), "DB {db}");
        }
        anyhow::Ok(())
    }
    .await;
    cleanup_app(&app).await;
    result
}
