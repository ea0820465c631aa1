//! View counting: one behaviour suite run on every `ViewStore` (in-process,
//! Redis, Redis Cluster) against a stand-in database, then over HTTP on
//! SQLite (in-process store) and on PostgreSQL + Redis: only existing
//! properties count, a flush of thousands of viewed properties moves them
//! in bounded chunks, and the shown count stays exact through crashed and
//! concurrent flushes.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;
use stayafrica::kv::keys::Keys;
use stayafrica::kv::{RedisRole, Role};
use stayafrica::views::{FLUSH_CHUNK, SeedBasis, Seeded, ViewStore};

use crate::helpers::{
    RedisServer, SHARED_REDIS, TestApp, TestDb, TestOptions, parse_commandstats, spawn_app_with,
};

// ---------------------------------------------------------------------------
// Harness: the same suite on every store.

fn unique_keys() -> Keys {
    Keys::new(&format!("satest:{}:", uuid::Uuid::new_v4().simple()))
}

async fn redis_store_on(base: &str, keys: Keys) -> anyhow::Result<Arc<dyn ViewStore>> {
    let url = crate::topologies::role_url(base, Role::Cache);
    let role = RedisRole::connect(Role::Cache, &url).await?;
    Ok(Arc::new(stayafrica::views::redis::RedisViews::new(
        role, keys,
    )))
}

/// Removes what a test left under its prefix (a cache on the same role).
async fn cleanup(base: &str, keys: Keys) {
    let url = crate::topologies::role_url(base, Role::Cache);
    if let Ok(role) = RedisRole::connect(Role::Cache, &url).await {
        let _ = stayafrica::cache::Cache::redis(role, keys)
            .invalidate_pattern("*")
            .await;
    }
}

macro_rules! on_every_store {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn memory() -> anyhow::Result<()> {
                    super::$name(std::sync::Arc::new(stayafrica::views::store::MemoryViews::default())).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn redis() -> anyhow::Result<()> {
                    let keys = super::unique_keys();
                    let store = super::redis_store_on(crate::helpers::SHARED_REDIS, keys.clone()).await?;
                    let result = super::$name(store).await;
                    super::cleanup(crate::helpers::SHARED_REDIS, keys).await;
                    result
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn cluster() -> anyhow::Result<()> {
                    let url = crate::topologies::cluster_url().await?;
                    let keys = super::unique_keys();
                    let store = super::redis_store_on(&url, keys.clone()).await?;
                    let result = super::$name(store).await;
                    super::cleanup(&url, keys).await;
                    result
                }
            }
        )*
    };
}

on_every_store!(
    unknown_properties_write_nothing,
    shown_counts_stay_exact_through_a_flush,
    a_crashed_take_is_returned_again,
    rounds_move_in_bounded_chunks,
    a_seed_read_across_a_flush_step_is_refused,
    concurrent_views_seeds_and_flushes_count_every_view_once,
);

/// A stand-in for the database's side: stored counts, flush ids applied
/// once, and a consistent read of both (as `Db::view_basis`).
#[derive(Default)]
struct FakeDb {
    stored: HashMap<i64, i64>,
    applied: HashSet<String>,
}

type Shared = Arc<Mutex<FakeDb>>;

fn locked(db: &Shared) -> std::sync::MutexGuard<'_, FakeDb> {
    db.lock().unwrap_or_else(|e| e.into_inner())
}

fn apply(db: &Shared, batch: &stayafrica::views::ViewBatch) {
    let mut db = locked(db);
    if db.applied.insert(batch.flush_id.clone()) {
        for (id, d) in &batch.deltas {
            *db.stored.entry(*id).or_default() += d;
        }
    }
}

/// One view (or a read, `views` 0) the way `Views` does it: the fast count,
/// else seeding from the database until a seed lands.
async fn view(store: &dyn ViewStore, db: &Shared, id: i64, views: i64) -> anyhow::Result<i64> {
    if views == 1
        && let Some(n) = store.count(id).await?
    {
        return Ok(n);
    }
    let mut basis = None;
    for _ in 0..1000 {
        let snapshot = match store.seed(id, views, basis.as_ref()).await? {
            Seeded::Shown(n) => return Ok(n),
            Seeded::Stale(s) => s,
        };
        let db = locked(db);
        basis = Some(SeedBasis {
            epoch: snapshot.epoch,
            stored: db.stored.get(&id).copied().unwrap_or(0),
            applied: snapshot
                .in_flight
                .iter()
                .filter(|b| db.applied.contains(*b))
                .cloned()
                .collect(),
        });
    }
    anyhow::bail!("seed never landed")
}

/// A whole flush as `Views::flush` makes it, with pauses between the steps
/// (where a crash or another flusher may come).
async fn flush(store: &dyn ViewStore, db: &Shared, chunk: usize) -> anyhow::Result<usize> {
    let mut chunks = 0;
    let mut round_started = false;
    loop {
        let batch = match store.take(chunk, false).await? {
            Some(b) => b,
            None if round_started => return Ok(chunks),
            None => {
                round_started = true;
                match store.take(chunk, true).await? {
                    Some(b) => b,
                    None => return Ok(chunks),
                }
            }
        };
        tokio::task::yield_now().await;
        apply(db, &batch);
        tokio::task::yield_now().await;
        store.ack(&batch.flush_id).await?;
        chunks += 1;
    }
}

fn db_with(stored: &[(i64, i64)]) -> Shared {
    Arc::new(Mutex::new(FakeDb {
        stored: stored.iter().copied().collect(),
        applied: HashSet::new(),
    }))
}

// ---------------------------------------------------------------------------
// The behaviour suite.

async fn unknown_properties_write_nothing(s: Arc<dyn ViewStore>) -> anyhow::Result<()> {
    for id in [5, 900_000_001, -1] {
        assert_eq!(s.count(id).await?, None);
    }
    // Nothing to flush: the counts of unknown ids were never written.
    assert_eq!(s.take(FLUSH_CHUNK, true).await?, None);
    Ok(())
}

async fn shown_counts_stay_exact_through_a_flush(s: Arc<dyn ViewStore>) -> anyhow::Result<()> {
    let db = db_with(&[(1, 10), (2, 0)]);
    assert_eq!(view(&*s, &db, 1, 1).await?, 11, "seeded from the database");
    assert_eq!(s.count(1).await?, Some(12));
    assert_eq!(view(&*s, &db, 2, 1).await?, 1);
    assert_eq!(s.take(FLUSH_CHUNK, false).await?, None, "no round started");
    let batch = s
        .take(FLUSH_CHUNK, true)
        .await?
        .ok_or_else(|| anyhow::anyhow!("nothing taken"))?;
    assert_eq!(batch.deltas, vec![(1, 2), (2, 1)]);
    // Taken, applied, acknowledged: the shown count never moves.
    assert_eq!(view(&*s, &db, 1, 0).await?, 12);
    apply(&db, &batch);
    assert_eq!(view(&*s, &db, 1, 0).await?, 12);
    s.ack(&batch.flush_id).await?;
    assert_eq!(view(&*s, &db, 1, 0).await?, 12);
    assert_eq!(locked(&db).stored.get(&1), Some(&12));
    assert_eq!(s.count(1).await?, Some(13));
    let next = s
        .take(FLUSH_CHUNK, true)
        .await?
        .ok_or_else(|| anyhow::anyhow!("nothing taken"))?;
    assert_eq!(next.deltas, vec![(1, 1)]);
    s.ack(&next.flush_id).await?;
    assert_eq!(s.take(FLUSH_CHUNK, true).await?, None);
    // A property that is gone: its shown count is forgotten, views of it
    // count nothing any more.
    s.forget(2).await?;
    assert_eq!(s.count(2).await?, None);
    Ok(())
}

async fn a_crashed_take_is_returned_again(s: Arc<dyn ViewStore>) -> anyhow::Result<()> {
    let db = db_with(&[(9, 0)]);
    for _ in 0..5 {
        view(&*s, &db, 9, 1).await?;
    }
    let first = s
        .take(FLUSH_CHUNK, true)
        .await?
        .ok_or_else(|| anyhow::anyhow!("nothing taken"))?;
    // The flusher "crashed": more views arrive, and the next take returns
    // the same batch with the same id (not the new views), whatever it asks.
    assert_eq!(view(&*s, &db, 9, 1).await?, 6);
    assert_eq!(s.take(FLUSH_CHUNK, true).await?, Some(first.clone()));
    assert_eq!(s.take(FLUSH_CHUNK, false).await?, Some(first.clone()));
    // Applied twice (a retry after a crash before the ack): once in effect.
    apply(&db, &first);
    apply(&db, &first);
    s.ack(&first.flush_id).await?;
    assert_eq!(locked(&db).stored.get(&9), Some(&5));
    assert_eq!(view(&*s, &db, 9, 0).await?, 6);
    assert_eq!(flush(&*s, &db, FLUSH_CHUNK).await?, 1);
    assert_eq!(locked(&db).stored.get(&9), Some(&6));
    Ok(())
}

async fn rounds_move_in_bounded_chunks(s: Arc<dyn ViewStore>) -> anyhow::Result<()> {
    let n = 2_500;
    let db = db_with(&[]);
    futures::stream::iter(0..n)
        .map(|id| {
            let (s, db) = (s.clone(), db.clone());
            async move { view(&*s, &db, id, 1).await }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut seen = HashSet::new();
    let mut chunks = 0;
    let mut start = true;
    while let Some(batch) = s.take(1_000, start).await? {
        start = false;
        // About 1,000: Redis scans by pages and may add a tenth.
        assert!(
            !batch.deltas.is_empty() && batch.deltas.len() <= 1_200,
            "{}",
            batch.deltas.len()
        );
        for (id, d) in &batch.deltas {
            assert_eq!(*d, 1);
            assert!(seen.insert(*id), "property {id} in two batches");
        }
        // Views counted during the round wait for the next one.
        view(&*s, &db, 0, 1).await?;
        apply(&db, &batch);
        s.ack(&batch.flush_id).await?;
        chunks += 1;
    }
    assert_eq!(seen.len(), 2_500);
    assert!((3..=4).contains(&chunks), "{chunks} chunks");
    let next = s
        .take(1_000, true)
        .await?
        .ok_or_else(|| anyhow::anyhow!("the views of the round are left"))?;
    assert_eq!(next.deltas, vec![(0, i64::from(chunks))]);
    Ok(())
}

async fn a_seed_read_across_a_flush_step_is_refused(s: Arc<dyn ViewStore>) -> anyhow::Result<()> {
    // Three views counted while the shown count was unknown (Redis lost
    // it); the database holds 5.
    for _ in 0..3 {
        s.count_unshown(7).await?;
    }
    let db = db_with(&[(7, 5)]);
    let Seeded::Stale(before) = s.seed(7, 0, None).await? else {
        anyhow::bail!("seeded without a basis");
    };
    // A database read at that snapshot, but a take lands before the seed:
    // the seed is refused and the new snapshot names the batch in flight.
    let old = SeedBasis {
        epoch: before.epoch,
        stored: 5,
        applied: vec![],
    };
    let batch = s
        .take(FLUSH_CHUNK, true)
        .await?
        .ok_or_else(|| anyhow::anyhow!("nothing taken"))?;
    let Seeded::Stale(after) = s.seed(7, 0, Some(&old)).await? else {
        anyhow::bail!("a seed across a take landed");
    };
    assert_eq!(after.in_flight, vec![batch.flush_id.clone()]);
    // Read before the apply, seeded after it (no ack yet): the batch is
    // counted from the store, once.
    let read = SeedBasis {
        epoch: after.epoch,
        stored: 5,
        applied: vec![],
    };
    apply(&db, &batch);
    assert_eq!(s.seed(7, 0, Some(&read)).await?, Seeded::Shown(8));
    // And a read across the ack is refused as well.
    s.forget(7).await?;
    let Seeded::Stale(again) = s.seed(7, 0, None).await? else {
        anyhow::bail!("seeded without a basis");
    };
    s.ack(&batch.flush_id).await?;
    let across_ack = SeedBasis {
        epoch: again.epoch,
        stored: 5,
        applied: vec![],
    };
    assert!(matches!(
        s.seed(7, 0, Some(&across_ack)).await?,
        Seeded::Stale(_)
    ));
    assert_eq!(view(&*s, &db, 7, 0).await?, 8);
    Ok(())
}

async fn concurrent_views_seeds_and_flushes_count_every_view_once(
    s: Arc<dyn ViewStore>,
) -> anyhow::Result<()> {
    let db = db_with(&[(0, 100), (1, 0), (2, 7)]);
    let viewers = futures::future::join_all((0..4).map(|w| {
        let (s, db) = (s.clone(), db.clone());
        tokio::spawn(async move {
            for i in 0..60 {
                let id = (w + i) % 3;
                view(&*s, &db, id, 1).await?;
                if i % 20 == 0 {
                    // Redis lost the shown counts: seeds race the flushes.
                    s.forget(id).await?;
                }
            }
            anyhow::Ok(())
        })
    }));
    let flushers = futures::future::join_all((0..2).map(|_| {
        let (s, db) = (s.clone(), db.clone());
        tokio::spawn(async move {
            for _ in 0..20 {
                flush(&*s, &db, 2).await?;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            anyhow::Ok(())
        })
    }));
    let (v, f) = tokio::join!(viewers, flushers);
    for r in v.into_iter().chain(f) {
        r??;
    }
    flush(&*s, &db, 2).await?;
    let stored = locked(&db).stored.clone();
    assert_eq!(stored.values().sum::<i64>(), 107 + 240);
    for id in 0..3 {
        assert_eq!(
            view(&*s, &db, id, 0).await?,
            stored.get(&id).copied().unwrap_or(0),
            "property {id}: shown equals stored once everything is flushed"
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Over HTTP.

/// Properties in the seeded database of the HTTP tests. The figure
/// is 100,000 (`scripts/bench-views.sh` times that); this keeps CI quick
/// while still spanning several chunks.
const SEEDED: u32 = 3_000;

async fn seeded_app(db: TestDb, redis: Option<String>) -> anyhow::Result<TestApp> {
    let app = spawn_app_with(TestOptions {
        db,
        redis,
        tweak: Box::new(|s| s.view_flush_interval = Duration::from_secs(3600)),
        ..TestOptions::default()
    })
    .await?;
    stayafrica::seed::run(
        app.db(),
        &stayafrica::seed::SeedOptions {
            users: 20,
            properties: SEEDED,
            bookings: 0,
            seed: 23,
        },
        false,
    )
    .await?;
    Ok(app)
}

/// Every property's stored `view_count`.
async fn stored_counts(app: &TestApp) -> anyhow::Result<HashMap<i64, i64>> {
    let rows: Vec<(i64, i64)> = stayafrica::with_pool!(app.db(), p => {
        sqlx::query_as("SELECT id, view_count FROM properties").fetch_all(p).await?
    });
    Ok(rows.into_iter().collect())
}

/// GETs each path once, 32 at a time; returns the statuses and bodies.
async fn get_all(app: &TestApp, paths: Vec<String>) -> anyhow::Result<Vec<(u16, Value)>> {
    futures::stream::iter(paths)
        .map(|p| {
            let (client, url) = (app.client.clone(), app.url(&p));
            async move {
                let r = client.get(url).send().await?;
                let status = r.status().as_u16();
                anyhow::Ok((status, r.json::<Value>().await.unwrap_or(Value::Null)))
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

async fn calls_to(url: &str) -> anyhow::Result<u64> {
    let mut conn = redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await?;
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut conn)
        .await?;
    // Calls the service sent (commands run inside its scripts are counted
    // by Redis under their own names; the scripts' calls are these).
    Ok(parse_commandstats(&info)
        .into_iter()
        .filter(|(name, _)| ["evalsha", "eval", "script|load"].contains(&name.as_str()))
        .map(|(_, n)| n)
        .sum())
}

/// Views every seeded property 1 to 3 times, then flushes: one flush, in
/// bounded chunks, and every stored count is the views sent.
async fn many_viewed_properties_flush_in_chunks(
    app: &TestApp,
    redis: Option<&str>,
) -> anyhow::Result<()> {
    let before = stored_counts(app).await?;
    assert_eq!(before.len(), SEEDED as usize);
    let mut paths = Vec::new();
    for id in before.keys() {
        for _ in 0..=(id % 3) {
            paths.push(format!("/api/v1/properties/{id}"));
        }
    }
    let sent = paths.len() as i64;
    for (status, _) in get_all(app, paths).await? {
        assert_eq!(status, 200);
    }
    // A flush id applied long ago: the flush forgets it (FLUSH_ID_KEEP).
    stayafrica::with_pool!(app.db(), p => {
        sqlx::query("INSERT INTO view_flushes (id, applied_at) VALUES ('ancient', 1)")
            .execute(p)
            .await
            .map(|_| ())
    })?;
    let calls_before = match redis {
        Some(url) => calls_to(url).await?,
        None => 0,
    };
    let flushed = tokio::time::timeout(Duration::from_secs(60), app.state.views.flush()).await??;
    // About FLUSH_CHUNK properties a chunk (Redis may add a tenth).
    let most = u64::from(SEEDED).div_ceil(FLUSH_CHUNK as u64);
    let chunks = flushed.chunks;
    assert_eq!(flushed.views, sent);
    assert!((most * 10 / 12..=most).contains(&chunks), "{flushed:?}");
    if let Some(url) = redis {
        // Per chunk one take and one ack, plus the take that finds nothing
        // left of an earlier flush and the one that finds this round done;
        // and, on a fresh Redis, for each of the two scripts the first
        // EVALSHA refused (NOSCRIPT), its SCRIPT LOAD and the retry.
        let calls = calls_to(url).await? - calls_before;
        assert!(
            calls <= 2 * chunks + 2 + 4,
            "{calls} Redis calls for {chunks} chunks"
        );
    }
    // Each chunk is one transaction recording its flush id; the old id
    // is gone.
    let recorded: i64 = stayafrica::with_pool!(app.db(), p => {
        sqlx::query_scalar("SELECT count(*) FROM view_flushes").fetch_one(p).await?
    });
    assert_eq!(recorded as u64, chunks);
    let after = stored_counts(app).await?;
    for (id, n) in &before {
        assert_eq!(after.get(id), Some(&(n + 1 + id % 3)), "property {id}");
    }
    // Nothing timed out and no circuit opened: the cache role is healthy.
    let health: Value = app.get("/health").await?.json().await?;
    assert_eq!(health["cache"], "ok", "{health}");
    // The detail keeps counting from the exact figure.
    let (id, n) = before
        .iter()
        .next()
        .ok_or_else(|| anyhow::anyhow!("empty"))?;
    let d: Value = app
        .get(&format!("/api/v1/properties/{id}"))
        .await?
        .json()
        .await?;
    assert_eq!(d["view_count"], n + 1 + id % 3 + 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_viewed_properties_flush_in_chunks_on_redis_and_postgres() -> anyhow::Result<()> {
    // A Redis of its own: its command counts are this test's alone.
    let server = RedisServer::start().await?;
    let app = seeded_app(TestDb::Postgres, Some(server.url())).await?;
    let cache_url = crate::topologies::role_url(&server.url(), Role::Cache);
    many_viewed_properties_flush_in_chunks(&app, Some(&cache_url)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_viewed_properties_flush_in_chunks_on_sqlite() -> anyhow::Result<()> {
    let app = seeded_app(TestDb::Sqlite, None).await?;
    many_viewed_properties_flush_in_chunks(&app, None).await
}

async fn scan(url: &str, pattern: &str) -> anyhow::Result<Vec<String>> {
    let mut conn = redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await?;
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

async fn unknown_ids_count_nothing(
    app: &TestApp,
    redis: Option<(&str, &str)>,
) -> anyhow::Result<()> {
    let paths = (0..10_000)
        .map(|i| format!("/api/v1/properties/{}", 900_000_001 + i))
        .collect();
    for (status, body) in get_all(app, paths).await? {
        assert_eq!(status, 404);
        assert_eq!(body["error"]["code"], "not_found");
    }
    if let Some((url, prefix)) = redis {
        // No counter, and no cached answer either.
        for family in ["views", "property"] {
            let keys = scan(url, &format!("{prefix}cache:{family}:*")).await?;
            assert!(keys.is_empty(), "{keys:?}");
        }
    }
    let flushed = app.state.views.flush().await?;
    assert_eq!((flushed.views, flushed.chunks), (0, 0));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_ids_count_nothing_on_redis() -> anyhow::Result<()> {
    let app = seeded_app(TestDb::Postgres, Some(SHARED_REDIS.to_owned())).await?;
    let url = crate::topologies::role_url(SHARED_REDIS, Role::Cache);
    let prefix = app.state.settings.key_prefix.clone();
    let result = unknown_ids_count_nothing(&app, Some((&url, &prefix))).await;
    let _ = app.state.cache.invalidate_pattern("*").await;
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_ids_count_nothing_on_sqlite() -> anyhow::Result<()> {
    let app = seeded_app(TestDb::Sqlite, None).await?;
    unknown_ids_count_nothing(&app, None).await
}

/// The shown count through crashed and concurrent flushes: every GET shows
/// one more than the one before, and the database ends with every view.
async fn crashed_and_parallel_flushes(app: &TestApp) -> anyhow::Result<()> {
    let id = 17;
    let path = format!("/api/v1/properties/{id}");
    let start = stored_counts(app).await?.get(&id).copied().unwrap_or(0);
    let mut last = start;
    let mut views = async |n: usize| -> anyhow::Result<()> {
        for _ in 0..n {
            let d: Value = app.get(&path).await?.json().await?;
            let shown = d["view_count"].as_i64().unwrap_or(-1);
            anyhow::ensure!(shown == last + 1, "shown {shown} after {last}");
            last = shown;
        }
        Ok(())
    };
    let store = app.state.views.store();
    views(20).await?;
    // Crash after the take: the next flush applies that batch (same id)
    // first, then the views that came meanwhile.
    let taken = store
        .take(FLUSH_CHUNK, true)
        .await?
        .ok_or_else(|| anyhow::anyhow!("nothing taken"))?;
    assert_eq!(taken.deltas, vec![(id, 20)]);
    views(5).await?;
    app.state.views.flush().await?;
    assert_eq!(stored_counts(app).await?.get(&id), Some(&(start + 25)));
    views(5).await?;
    // Crash after the database applied the batch, before the ack: shown
    // neither drops nor doubles, and the retry applies nothing twice.
    let taken = store
        .take(FLUSH_CHUNK, true)
        .await?
        .ok_or_else(|| anyhow::anyhow!("nothing taken"))?;
    assert!(
        app.db()
            .apply_view_deltas(&taken.flush_id, &taken.deltas)
            .await?
    );
    views(5).await?;
    app.state.views.flush().await?;
    assert_eq!(stored_counts(app).await?.get(&id), Some(&(start + 35)));
    views(1).await?;
    // The database refuses the apply (its flush-id table is gone): the
    // flush fails with its batch kept, and the retry once the table is
    // back applies it once.
    let rename = |from: &'static str, to: &'static str| async move {
        let sql = sqlx::AssertSqlSafe(format!("ALTER TABLE {from} RENAME TO {to}"));
        stayafrica::with_pool!(app.db(), p => sqlx::query(sql).execute(p).await.map(|_| ()))
    };
    rename("view_flushes", "view_flushes_away").await?;
    let failed = app.state.views.flush().await;
    rename("view_flushes_away", "view_flushes").await?;
    anyhow::ensure!(failed.is_err(), "the flush applied without its table");
    views(4).await?;
    app.state.views.flush().await?;
    assert_eq!(stored_counts(app).await?.get(&id), Some(&(start + 40)));
    views(1).await?;
    // Two flushers at once while views keep coming (concurrent GETs).
    let flusher = || async {
        for _ in 0..10 {
            app.state.views.flush().await?;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        anyhow::Ok(())
    };
    let burst = get_all(app, vec![path.clone(); 100]);
    let (a, b, c) = tokio::join!(burst, flusher(), flusher());
    for (status, _) in a? {
        assert_eq!(status, 200);
    }
    b?;
    c?;
    app.state.views.flush().await?;
    assert_eq!(stored_counts(app).await?.get(&id), Some(&(start + 141)));
    let d: Value = app.get(&path).await?.json().await?;
    assert_eq!(d["view_count"], start + 142);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashed_and_parallel_flushes_on_redis() -> anyhow::Result<()> {
    let app = seeded_app(TestDb::Postgres, Some(SHARED_REDIS.to_owned())).await?;
    let result = crashed_and_parallel_flushes(&app).await;
    let _ = app.state.cache.invalidate_pattern("*").await;
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashed_and_parallel_flushes_on_sqlite() -> anyhow::Result<()> {
    let app = seeded_app(TestDb::Sqlite, None).await?;
    crashed_and_parallel_flushes(&app).await
}
