//! The guide's cache helpers as a typed API, one suite run on the in-process
//! store and on Redis.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use stayafrica::cache::{Cache, Namespace};
use stayafrica::kv::keys::Keys;
use stayafrica::kv::{RedisRole, Role};

use crate::helpers::SHARED_REDIS;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Stats {
    bookings: u32,
    city: String,
}

fn prefix() -> String {
    format!("satest:{}:", uuid::Uuid::new_v4().simple())
}

async fn redis_cache() -> anyhow::Result<Cache> {
    let keys = Keys::new(&prefix());
    let role = RedisRole::connect(Role::Cache, &format!("{SHARED_REDIS}/1")).await?;
    Ok(Cache::redis(role, keys))
}

fn memory_cache() -> Cache {
    Cache::memory(1 << 20, Keys::new(&prefix()))
}

async fn suite(cache: Cache) -> anyhow::Result<()> {
    // Temporary data is taken once, even by concurrent takers.
    let stats = Stats {
        bookings: 3,
        city: "Accra".into(),
    };
    cache
        .set_temporary("reset-token:42", &stats, Duration::from_secs(60))
        .await?;
    let mut takers = Vec::new();
    for _ in 0..20 {
        let c = cache.clone();
        takers.push(tokio::spawn(async move {
            c.take_temporary::<Stats>("reset-token:42").await
        }));
    }
    let mut got = Vec::new();
    for t in takers {
        if let Some(v) = t.await?? {
            got.push(v);
        }
    }
    assert_eq!(got, vec![stats.clone()]);
    cache
        .set_temporary("short", &1u8, Duration::from_millis(150))
        .await?;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(cache.take_temporary::<u8>("short").await?, None);

    // Counters count every increment under concurrency.
    let mut incs = Vec::new();
    for _ in 0..50 {
        let c = cache.clone();
        incs.push(tokio::spawn(async move {
            c.increment_counter("signups", Duration::from_secs(60))
                .await
        }));
    }
    let mut values = Vec::new();
    for i in incs {
        values.push(i.await??);
    }
    values.sort_unstable();
    assert_eq!(values, (1..=50).collect::<Vec<i64>>());

    // Per-user data: only that user's key, gone after invalidate_user_cache.
    cache
        .cache_user_data(7, "stats", &stats, Duration::from_secs(60))
        .await?;
    assert_eq!(
        cache.get_user_data::<Stats>(7, "stats").await?,
        Some(stats.clone())
    );
    assert_eq!(cache.get_user_data::<Stats>(8, "stats").await?, None);
    cache.invalidate_user_cache(8).await?;
    assert_eq!(
        cache.get_user_data::<Stats>(7, "stats").await?,
        Some(stats.clone())
    );
    cache.invalidate_user_cache(7).await?;
    assert_eq!(cache.get_user_data::<Stats>(7, "stats").await?, None);

    // Query results: computed once, recomputed after a property change.
    let runs = Arc::new(AtomicUsize::new(0));
    for _ in 0..3 {
        let r = runs.clone();
        let v: Vec<i64> = cache
            .cache_query_result("featured_ids", Duration::from_secs(60), || async move {
                r.fetch_add(1, Ordering::SeqCst);
                Ok(vec![1, 2, 3])
            })
            .await?;
        assert_eq!(v, vec![1, 2, 3]);
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    cache.invalidate(Namespace::Properties).await?;
    let r = runs.clone();
    let _: Vec<i64> = cache
        .cache_query_result("featured_ids", Duration::from_secs(60), || async move {
            r.fetch_add(1, Ordering::SeqCst);
            Ok(vec![1, 2])
        })
        .await?;
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    // One property's change is enough: a query result may show any.
    cache
        .happened(stayafrica::cache::Event::PropertyChanged {
            id: 5,
            before: None,
            after: None,
        })
        .await?;
    let r = runs.clone();
    let _: Vec<i64> = cache
        .cache_query_result("featured_ids", Duration::from_secs(60), || async move {
            r.fetch_add(1, Ordering::SeqCst);
            Ok(vec![1])
        })
        .await?;
    assert_eq!(runs.load(Ordering::SeqCst), 3);

    // The guide's pattern invalidation, for operators.
    cache
        .set_temporary("a:1", &1u8, Duration::from_secs(60))
        .await?;
    cache
        .set_temporary("a:2", &2u8, Duration::from_secs(60))
        .await?;
    cache
        .set_temporary("b:1", &3u8, Duration::from_secs(60))
        .await?;
    assert_eq!(cache.invalidate_pattern("tmp:a:*").await?, 2);
    assert_eq!(cache.take_temporary::<u8>("b:1").await?, Some(3));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_helpers_in_process() -> anyhow::Result<()> {
    suite(memory_cache()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_helpers_on_redis() -> anyhow::Result<()> {
    suite(redis_cache().await?).await
}
