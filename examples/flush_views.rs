//! Times one view flush for docs/PERFORMANCE.md: a fresh database seeded
//! with N properties, one pending view for each of them, then
//! `Views::flush`, with the Redis calls it made (from `INFO commandstats`)
//! and a check that every view reached the database. `scripts/bench-views.sh`
//! runs it for several sizes on SQLite and on Redis + PostgreSQL.
//!
//!     cargo run --release --example flush_views -- --properties 100000 \
//!         --database postgres --redis redis://127.0.0.1:6379

use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use futures::StreamExt;
use sqlx::Connection;
use stayafrica::cache::Cache;
use stayafrica::db::Db;
use stayafrica::kv::keys::Keys;
use stayafrica::kv::{RedisRole, Role};
use stayafrica::views::Views;

#[derive(Parser)]
struct Cli {
    /// Properties seeded, each viewed once.
    #[arg(long, default_value_t = 10_000)]
    properties: u32,
    /// `sqlite` (a file in a temporary directory) or `postgres` (a fresh
    /// database on --postgres, dropped at the end).
    #[arg(long, default_value = "sqlite")]
    database: String,
    /// PostgreSQL server (trust auth) for `--database postgres`.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432")]
    postgres: String,
    /// Redis for the view counters (its DB 1, the cache role's); without
    /// it, the in-process counters of the embedded default.
    #[arg(long)]
    redis: Option<String>,
}

/// Calls the service sent to Redis so far (a script's own commands are
/// counted by Redis under their names, not as calls of ours).
async fn redis_calls(url: &str) -> anyhow::Result<u64> {
    let mut conn = redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await?;
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut conn)
        .await?;
    Ok(info
        .lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            if !["evalsha", "eval", "script|load"].contains(&name) {
                return None;
            }
            rest.strip_prefix("calls=")?
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum())
}

async fn total_views(db: &Db) -> anyhow::Result<i64> {
    Ok(stayafrica::with_pool!(db, p => {
        sqlx::query_scalar::<_, i64>("SELECT CAST(COALESCE(SUM(view_count), 0) AS BIGINT) FROM properties")
            .fetch_one(p)
            .await?
    }))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let tmp = tempfile::tempdir()?;
    let pg_name = format!("bench_views_{}", uuid::Uuid::new_v4().simple());
    let db_url = match cli.database.as_str() {
        "sqlite" => format!("sqlite://{}/bench.db", tmp.path().display()),
        "postgres" => {
            let mut admin =
                sqlx::PgConnection::connect(&format!("{}/postgres", cli.postgres)).await?;
            // The name is ours (a UUID), not input.
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {pg_name}")))
                .execute(&mut admin)
                .await?;
            format!("{}/{pg_name}", cli.postgres)
        }
        other => anyhow::bail!("--database sqlite|postgres, not {other}"),
    };
    let db = Db::connect(&db_url).await?;
    db.migrate().await?;
    let seeding = Instant::now();
    stayafrica::seed::run(
        &db,
        &stayafrica::seed::SeedOptions {
            users: 100,
            properties: cli.properties,
            bookings: 0,
            seed: 23,
        },
        false,
    )
    .await?;
    eprintln!(
        "seeded {} properties in {:.1?}",
        cli.properties,
        seeding.elapsed()
    );

    let keys = Keys::new(&format!("benchviews:{}:", uuid::Uuid::new_v4().simple()));
    let (views, redis_url, cache) = match &cli.redis {
        Some(base) => {
            let url = stayafrica::kv::target::with_db(base, 1).map_err(anyhow::Error::msg)?;
            let role = RedisRole::connect(Role::Cache, &url).await?;
            let cache = Cache::redis(role.clone(), keys.clone());
            (Views::redis(role, keys, db.clone()), Some(url), Some(cache))
        }
        None => (Views::memory(db.clone()), None, None),
    };
    // One pending view per property, as the detail requests of a minute
    // would leave them (counted straight into the store: the flush is what
    // is measured).
    let store = views.store().clone();
    let counting = Instant::now();
    let failures = futures::stream::iter(1..=i64::from(cli.properties))
        .map(|id| {
            let store = store.clone();
            async move { store.count_unshown(id).await }
        })
        .buffer_unordered(64)
        .filter(|r| std::future::ready(r.is_err()))
        .count()
        .await;
    anyhow::ensure!(failures == 0, "{failures} views not counted");
    eprintln!(
        "counted {} views in {:.1?}",
        cli.properties,
        counting.elapsed()
    );

    let before = total_views(&db).await?;
    let calls_before = match &redis_url {
        Some(u) => redis_calls(u).await?,
        None => 0,
    };
    let started = Instant::now();
    let flushed = if std::env::var_os("FLUSH_STEPS").is_some() {
        // The flush's steps one by one, timed (where the time goes).
        let (mut take, mut apply, mut ack) = (0.0, 0.0, 0.0);
        let mut done = stayafrica::views::Flushed::default();
        let mut start_round = true;
        loop {
            let t = Instant::now();
            let Some(batch) = store
                .take(stayafrica::views::FLUSH_CHUNK, start_round)
                .await?
            else {
                break;
            };
            start_round = false;
            take += t.elapsed().as_secs_f64();
            let t = Instant::now();
            db.apply_view_deltas(&batch.flush_id, &batch.deltas).await?;
            apply += t.elapsed().as_secs_f64();
            let t = Instant::now();
            store.ack(&batch.flush_id).await?;
            ack += t.elapsed().as_secs_f64();
            done.views += batch.deltas.iter().map(|(_, d)| d).sum::<i64>();
            done.chunks += 1;
        }
        eprintln!("take {take:.3}s apply {apply:.3}s ack {ack:.3}s");
        done
    } else {
        views.flush().await.context("the flush failed")?
    };
    let elapsed = started.elapsed();
    let calls = match &redis_url {
        Some(u) => redis_calls(u).await? - calls_before,
        None => 0,
    };
    let moved = total_views(&db).await? - before;
    anyhow::ensure!(
        moved == i64::from(cli.properties) && flushed.views == moved,
        "moved {moved}, flush says {}, sent {}",
        flushed.views,
        cli.properties
    );
    println!(
        "{}+{} properties={} flush_ms={:.0} chunks={} redis_calls={} views_per_s={:.0}",
        cli.database,
        if redis_url.is_some() {
            "redis"
        } else {
            "in-process"
        },
        cli.properties,
        elapsed.as_secs_f64() * 1000.0,
        flushed.chunks,
        calls,
        f64::from(cli.properties) / elapsed.as_secs_f64(),
    );

    if let Some(cache) = cache {
        cache.invalidate_pattern("*").await?;
    }
    db.close().await;
    if cli.database == "postgres" {
        let mut admin = sqlx::PgConnection::connect(&format!("{}/postgres", cli.postgres)).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE {pg_name} WITH (FORCE)"
        )))
        .execute(&mut admin)
        .await?;
    }
    Ok(())
}
