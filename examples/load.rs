//! A small closed-loop load generator for docs/PERFORMANCE.md: N concurrent
//! workers, each sending its next request as soon as the previous one
//! answers, for D seconds per phase; reports requests/s and latency
//! percentiles. Only for servers on this machine (loopback).
//!
//! `http`: a cached GET of the public property list against an uncached one
//! (a new query every request, so every request misses, queries the database
//! and stores the page), side by side in one run:
//!
//!     cargo run --release --example load -- http --base http://127.0.0.1:8080
//!
//! `cache`: the cache facade alone against Redis, the two ways to read a
//! generation-keyed entry: generation then entry (two round trips), or both
//! in one script (one round trip):
//!
//!     cargo run --release --example load -- cache --redis redis://127.0.0.1:6379/1

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use clap::{Parser, Subcommand};
use stayafrica::cache::{Cache, Namespace};
use stayafrica::kv::keys::Keys;
use stayafrica::kv::{RedisRole, Role};

#[derive(Parser)]
struct Cli {
    /// Concurrent workers (connections).
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Seconds per phase.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Cached against uncached GET /api/v1/properties on a running server.
    Http {
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        base: String,
        /// Query of the cached phase.
        #[arg(long, default_value = "city=Nairobi&page_size=20")]
        query: String,
    },
    /// One phase of GETs of one URL (e.g. a bare hello handler, for scale).
    Get {
        #[arg(long)]
        url: String,
    },
    /// Serve a bare axum "hello" handler: the baseline cached endpoints are
    /// compared with.
    Hello {
        #[arg(long, default_value = "127.0.0.1:8099")]
        bind: String,
    },
    /// One rate-limit check per request: in-process against Redis (the
    /// latency the limiter adds to a request that waits for it).
    Limiter {
        #[arg(long, default_value = "redis://127.0.0.1:6379/3")]
        redis: String,
    },
    /// Generation + entry in two round trips against one script.
    Cache {
        #[arg(long, default_value = "redis://127.0.0.1:6379/1")]
        redis: String,
    },
}

/// Latencies of one phase, in microseconds.
struct Phase {
    name: &'static str,
    latencies: Vec<u64>,
    errors: u64,
    elapsed: Duration,
}

impl Phase {
    fn report(mut self) {
        self.latencies.sort_unstable();
        let pct = |p: f64| -> f64 {
            if self.latencies.is_empty() {
                return 0.0;
            }
            let i = ((self.latencies.len() as f64 * p).ceil() as usize)
                .clamp(1, self.latencies.len())
                - 1;
            self.latencies[i] as f64 / 1000.0
        };
        println!(
            "{:<34} {:>8} req {:>6} err {:>10.0} req/s   p50 {:>7.3} ms  p90 {:>7.3} ms  p99 {:>7.3} ms  max {:>7.3} ms",
            self.name,
            self.latencies.len(),
            self.errors,
            self.latencies.len() as f64 / self.elapsed.as_secs_f64(),
            pct(0.50),
            pct(0.90),
            pct(0.99),
            pct(1.0),
        );
    }
}

/// Runs `op` in `concurrency` closed loops for `duration`; `op(worker, i)`
/// returns whether the request succeeded.
async fn run<F, Fut>(name: &'static str, concurrency: usize, duration: Duration, op: F) -> Phase
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let op = Arc::new(op);
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let workers: Vec<_> = (0..concurrency)
        .map(|w| {
            let (op, errors) = (op.clone(), errors.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(100_000);
                let mut i = 0u64;
                while Instant::now() < deadline {
                    let t = Instant::now();
                    let ok = op(w, i).await;
                    latencies.push(t.elapsed().as_micros() as u64);
                    if !ok {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                    i += 1;
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for w in workers {
        if let Ok(l) = w.await {
            latencies.extend(l);
        }
    }
    Phase {
        name,
        latencies,
        errors: errors.load(Ordering::Relaxed),
        elapsed: started.elapsed(),
    }
}

async fn http(
    base: String,
    query: String,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()?;
    let cached_url = format!("{base}/api/v1/properties?{query}");
    let warm = client.get(&cached_url).send().await?;
    anyhow::ensure!(warm.status() == 200, "GET {cached_url}: {}", warm.status());
    let ok = |r: reqwest::Result<reqwest::Response>| async move {
        match r {
            Ok(r) if r.status() == 200 => r.bytes().await.is_ok(),
            _ => false,
        }
    };

    let (c, url) = (client.clone(), cached_url.clone());
    run(
        "GET /api/v1/properties (cached)",
        concurrency,
        duration,
        move |_, _| {
            let (c, url) = (c.clone(), url.clone());
            async move { ok(c.get(url).send().await).await }
        },
    )
    .await
    .report();

    // Every request a query never asked before: a miss, a database query
    // and a cache write each time. A `max_price` above every price keeps
    // the page the same as the cached one while making each query unique.
    let run_id = u64::from(std::process::id());
    let (c, base2, q) = (client.clone(), base.clone(), query.clone());
    run(
        "GET /api/v1/properties (uncached)",
        concurrency,
        duration,
        move |w, i| {
            let n = 1_000_000 + (run_id % 1000) * 1_000_000_000 + (w as u64) * 10_000_000 + i;
            let url = format!("{base2}/api/v1/properties?{q}&max_price={n}");
            let c = c.clone();
            async move { ok(c.get(url).send().await).await }
        },
    )
    .await
    .report();

    let (c, url) = (client.clone(), cached_url);
    run(
        "GET /api/v1/properties (cached, again)",
        concurrency,
        duration,
        move |_, _| {
            let (c, url) = (c.clone(), url.clone());
            async move { ok(c.get(url).send().await).await }
        },
    )
    .await
    .report();
    Ok(())
}

async fn cache(redis: String, concurrency: usize, duration: Duration) -> anyhow::Result<()> {
    let keys = Keys::new(&format!("loadbench:{}:", uuid::Uuid::new_v4().simple()));
    let role = RedisRole::connect(Role::Cache, &redis)
        .await
        .context("connect")?;
    let cache = Cache::redis(role, keys.clone());
    let query = "[1,20,\"nairobi\",null,null,null,null]";
    let page = Bytes::from(vec![b'x'; 8 * 1024]);
    let template = keys.property_list_template(query, Namespace::Lists);
    let ttl = Duration::from_secs(600);
    let p = page.clone();
    cache
        .get_or_compute_bytes_in("bench", &template, ttl, || async move { Ok(p) })
        .await?;

    let c = cache.clone();
    run(
        "generations one by one, then entry (3 trips)",
        concurrency,
        duration,
        move |_, _| {
            let c = c.clone();
            async move {
                match (
                    c.generation(Namespace::Properties).await,
                    c.generation(Namespace::Lists).await,
                ) {
                    (Some(g), Some(p)) => {
                        let key = c
                            .keys()
                            .property_list_template(query, Namespace::Lists)
                            .render(&[g, p]);
                        c.get_bytes("bench", &key).await.is_some()
                    }
                    _ => false,
                }
            }
        },
    )
    .await
    .report();

    let (c, t) = (cache.clone(), template.clone());
    run("one script (1 trip)", concurrency, duration, move |_, _| {
        let (c, t) = (c.clone(), t.clone());
        async move {
            c.get_or_compute_bytes_in("bench", &t, ttl, || async { anyhow::bail!("miss") })
                .await
                .is_ok()
        }
    })
    .await
    .report();

    cache.invalidate_pattern("*").await?;
    Ok(())
}

/// Times `RateLimiter::check` on the in-process and the Redis backend. Every
/// worker has its own client key and a limit it never reaches, so each check
/// is a full check-and-count (the script's GET, TIME and SET).
async fn limiter(redis: String, concurrency: usize, duration: Duration) -> anyhow::Result<()> {
    use stayafrica::domain::ClientAddr;
    use stayafrica::ratelimit::memory::MemoryLimiter;
    use stayafrica::ratelimit::redis::RedisLimiter;
    use stayafrica::ratelimit::{Action, LimiterBackend, Rate, RateLimiter, Scope, Throttles};

    let rate = Rate::new(u32::MAX / 2, Duration::from_secs(3600));
    let mut rates = Throttles::default();
    for action in Action::ALL {
        rates.set(action, rate);
    }
    let keys = Keys::new(&format!("bench:{}:", std::process::id()));
    let backends: [(&'static str, Arc<dyn LimiterBackend>); 2] = [
        (
            "limiter check, in-process",
            Arc::new(MemoryLimiter::default()),
        ),
        (
            "limiter check, Redis",
            Arc::new(RedisLimiter::new(
                RedisRole::connect(Role::RateLimit, &redis).await?,
            )),
        ),
    ];
    for (name, backend) in backends {
        let limiter = RateLimiter::new(backend, keys.clone(), rates);
        run(name, concurrency, duration, move |w, _| {
            let limiter = limiter.clone();
            async move {
                let ip = std::net::IpAddr::from([10, 0, (w / 256) as u8, (w % 256) as u8]);
                let ip = ClientAddr::new(ip, 64);
                matches!(limiter.check(&Scope::Anon(ip)).await, Ok(d) if d.allowed)
            }
        })
        .await
        .report();
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let duration = Duration::from_secs(cli.duration);
    println!(
        "{} concurrent workers, {} s per phase",
        cli.concurrency, cli.duration
    );
    match cli.command {
        Command::Http { base, query } => http(base, query, cli.concurrency, duration).await,
        Command::Cache { redis } => cache(redis, cli.concurrency, duration).await,
        Command::Limiter { redis } => limiter(redis, cli.concurrency, duration).await,
        Command::Get { url } => {
            let client = reqwest::Client::new();
            run("GET", cli.concurrency, duration, move |_, _| {
                let (client, url) = (client.clone(), url.clone());
                async move {
                    match client.get(&url).send().await {
                        Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                        Err(_) => false,
                    }
                }
            })
            .await
            .report();
            Ok(())
        }
        Command::Hello { bind } => {
            let app = axum::Router::new().route("/", axum::routing::get(|| async { "hello" }));
            let listener = tokio::net::TcpListener::bind(&bind).await?;
            axum::serve(listener, app).await?;
            Ok(())
        }
    }
}
