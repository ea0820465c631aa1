//! Every role on a Redis Cluster and on a Sentinel-managed master (the
//! setups of `topologies`): the data of each role spread over the
//! cluster's masters, the startup checks and the operator commands on
//! every master.

use std::collections::BTreeMap;
use std::process::Output;
use std::time::Duration;

use stayafrica::kv::keys::Keys;
use stayafrica::kv::{RedisRole, Role};
use stayafrica::sessions::redis::RedisSessionStore;
use stayafrica::sessions::{SessionStore, hash_id, new_session_id};

use crate::helpers::{TestApp, TestOptions, spawn_app_with};
use crate::topologies::{Cluster, cluster_url, role_url, sentinel_url, shared_cluster};

fn unique_prefix() -> String {
    format!("satest:{}:", uuid::Uuid::new_v4().simple())
}

/// How many keys matching `pattern` each master of `cluster` holds, by
/// port, counted on each master directly (SCAN on a plain connection).
pub async fn per_master(cluster: &Cluster, pattern: &str) -> anyhow::Result<BTreeMap<u16, usize>> {
    let mut counts = BTreeMap::new();
    for port in cluster.master_ports().await? {
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}"))?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        let mut cursor = 0u64;
        let mut n = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await?;
            n += keys.len();
            if next == 0 {
                break;
            }
            cursor = next;
        }
        counts.insert(port, n);
    }
    Ok(counts)
}

/// Every master holds some of `counts`' keys and none more than half.
pub fn assert_spread(what: &str, counts: &BTreeMap<u16, usize>) {
    let total: usize = counts.values().sum();
    assert_eq!(counts.len(), 3, "{what}: three masters: {counts:?}");
    for (port, n) in counts {
        assert!(*n > 0, "{what}: master {port} holds none: {counts:?}");
        assert!(
            *n * 2 <= total,
            "{what}: master {port} holds over half: {counts:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_and_rate_limits_spread_over_every_master() -> anyhow::Result<()> {
    let cluster = shared_cluster().await?;
    let url = cluster.url();
    let prefix = unique_prefix();
    let keys = Keys::new(&prefix);
    let store = RedisSessionStore::new(
        RedisRole::connect(Role::Sessions, &url).await?,
        keys.clone(),
    );
    let mut hashes = Vec::new();
    for user in 0..300 {
        let h = hash_id(&new_session_id()?);
        store.create(&h, user, Duration::from_secs(600)).await?;
        hashes.push(h);
    }
    assert_spread(
        "sessions",
        &per_master(cluster, &format!("{prefix}session:*")).await?,
    );
    // And they work wherever they landed.
    for (user, h) in hashes.iter().enumerate().take(50) {
        assert_eq!(
            store.load(h, Duration::from_secs(600)).await?,
            Some(i64::try_from(user)?)
        );
    }

    let limiter = stayafrica::ratelimit::redis::RedisLimiter::new(
        RedisRole::connect(Role::RateLimit, &url).await?,
    );
    let rate = stayafrica::ratelimit::Rate::new(10, Duration::from_secs(60));
    for ip in 0..300 {
        let key = keys.ratelimit("anon", &format!("10.0.{}.{}", ip / 256, ip % 256));
        stayafrica::ratelimit::LimiterBackend::check(&limiter, &key, rate).await?;
    }
    assert_spread(
        "rate limits",
        &per_master(cluster, &format!("{prefix}rl:*")).await?,
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_checks_ask_every_master() -> anyhow::Result<()> {
    let cluster = shared_cluster().await?;
    // The test setups persist nothing: the sessions role says so for each
    // master, naming it.
    let role = RedisRole::connect(Role::Sessions, &cluster.url()).await?;
    let warnings = role.configuration_warnings().await;
    let masters = cluster.master_ports().await?;
    assert_eq!(warnings.len(), masters.len(), "{warnings:?}");
    for port in masters {
        assert!(
            warnings
                .iter()
                .any(|w| w.starts_with(&format!("127.0.0.1:{port}: "))
                    && w.contains("persists nothing")),
            "no warning about master {port}: {warnings:?}"
        );
    }
    // The cache role has nothing to say about persistence (and the test
    // nodes evict nothing).
    let cache = RedisRole::connect(Role::Cache, &cluster.url()).await?;
    assert_eq!(
        cache.configuration_warnings().await.len(),
        3,
        "noeviction, per master"
    );

    let sentinel = RedisRole::connect(
        Role::Sessions,
        &role_url(&sentinel_url().await?, Role::Sessions),
    )
    .await?;
    let warnings = sentinel.configuration_warnings().await;
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].starts_with("this Redis persists nothing"),
        "{warnings:?}"
    );
    Ok(())
}

/// Runs the real binary against `app`'s database and the Redis at `base`.
fn cli(app: &TestApp, base: &str, args: &[&str]) -> anyhow::Result<Output> {
    Ok(std::process::Command::new(env!("CARGO_BIN_EXE_stayafrica"))
        .args(args)
        .env("REDIS_URL", base)
        .env("STAYAFRICA_KEY_PREFIX", &app.state.settings.key_prefix)
        .env("DATABASE_URL", &app.db_url)
        .env_remove("RUST_LOG")
        .env_remove("REDIS_CACHE_URL")
        .env_remove("REDIS_SESSIONS_URL")
        .env_remove("REDIS_RATELIMIT_URL")
        .env_remove("REDIS_BROKER_URL")
        .output()?)
}

fn ok(o: &Output) -> anyhow::Result<String> {
    anyhow::ensure!(
        o.status.success(),
        "failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_commands_work_on_every_master_of_a_cluster() -> anyhow::Result<()> {
    let cluster = shared_cluster().await?;
    let base = cluster.url();
    let app = spawn_app_with(TestOptions {
        redis: Some(base.clone()),
        ..TestOptions::default()
    })
    .await?;
    let prefix = app.state.settings.key_prefix.clone();
    app.signup("operator.user@example.com", "guest").await?;
    assert_eq!(app.get("/api/v1/me").await?.status(), 200);

    // Cache keys on every master.
    let mut conn = stayafrica::kv::connect(&base, Duration::from_secs(5)).await?;
    for i in 0..60 {
        let _: () = redis::cmd("SET")
            .arg(format!("{prefix}cache:probe:{i}"))
            .arg(i)
            .query_async(&mut conn)
            .await?;
    }
    assert_spread(
        "probe keys",
        &per_master(cluster, &format!("{prefix}cache:probe:*")).await?,
    );

    let out = ok(&cli(
        &app,
        &base,
        &["cache", "keys", "probe:*", "--limit", "1000"],
    )?)?;
    for i in 0..60 {
        assert!(
            out.lines().any(|l| l.starts_with(&format!("probe:{i}\t"))),
            "probe:{i} not listed: {out}"
        );
    }
    let out = ok(&cli(&app, &base, &["cache", "get", "probe:7"])?)?;
    assert_eq!(out.trim(), "7");
    let out = ok(&cli(&app, &base, &["cache", "info", "--json"])?)?;
    let info: serde_json::Value = serde_json::from_str(&out)?;
    let cache = &info[0];
    assert_eq!(cache["role"], "cache", "{info}");
    assert!(cache["keys_under_prefix"].as_u64() >= Some(60), "{info}");
    assert_eq!(
        cache["masters"].as_object().map(|m| m.len()),
        Some(3),
        "{info}"
    );
    let out = ok(&cli(&app, &base, &["cache", "check"])?)?;
    assert_eq!(
        out.lines().filter(|l| l.contains(" ok ")).count(),
        4,
        "{out}"
    );

    // A flush of the cache role empties it on every master and logs
    // nobody out: on a cluster every role shares DB 0, only the
    // namespaces keep them apart.
    let sessions_before = per_master(cluster, &format!("{prefix}session:*")).await?;
    let out = ok(&cli(
        &app,
        &base,
        &["cache", "flush", "--role", "cache", "--yes"],
    )?)?;
    assert!(out.contains("removed from the cache role"), "{out}");
    let left = per_master(cluster, &format!("{prefix}cache:*")).await?;
    assert!(left.values().all(|n| *n == 0), "{left:?}");
    assert_eq!(
        per_master(cluster, &format!("{prefix}session:*")).await?,
        sessions_before
    );
    assert_eq!(
        app.get("/api/v1/me").await?.status(),
        200,
        "still signed in"
    );

    // `sessions revoke` ends them, wherever they live.
    let out = ok(&cli(
        &app,
        &base,
        &["sessions", "revoke", "--user", "operator.user@example.com"],
    )?)?;
    assert!(out.contains("ended 1 session"), "{out}");
    assert_eq!(app.get("/api/v1/me").await?.status(), 401);
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_commands_work_on_a_sentinel_master() -> anyhow::Result<()> {
    let base = sentinel_url().await?;
    let app = spawn_app_with(TestOptions {
        redis: Some(base.clone()),
        ..TestOptions::default()
    })
    .await?;
    app.signup("sentinel.operator@example.com", "guest").await?;
    let out = ok(&cli(&app, &base, &["cache", "ping"])?)?;
    assert_eq!(
        out.lines().filter(|l| l.contains(" ok ")).count(),
        4,
        "{out}"
    );
    let out = ok(&cli(&app, &base, &["cache", "keys", "--role", "sessions"])?)?;
    assert_eq!(
        out.lines().count(),
        2,
        "the session and its user's index: {out}"
    );
    let out = ok(&cli(
        &app,
        &base,
        &["cache", "flush", "--role", "cache", "--yes"],
    )?)?;
    assert!(out.contains("removed from the cache role"), "{out}");
    assert_eq!(
        app.get("/api/v1/me").await?.status(),
        200,
        "still signed in"
    );
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_url_without_a_live_seed_fails_to_start_naming_the_role() -> anyhow::Result<()> {
    let _ = cluster_url().await?;
    let dead = crate::chaos_support::free_port()?;
    let err = match RedisRole::connect(
        Role::Cache,
        &format!("redis+cluster://:s3cret@127.0.0.1:{dead}"),
    )
    .await
    {
        Ok(_) => anyhow::bail!("connected to nothing"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.contains("cache role") && !err.contains("s3cret"),
        "{err}"
    );
    Ok(())
}

/// The clients of the servers on `ports` blocked in `BLPOP`, as
/// `port/client id`.
async fn blocked_in_blpop(ports: &[u16]) -> anyhow::Result<std::collections::BTreeSet<String>> {
    let mut found = std::collections::BTreeSet::new();
    for port in ports {
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}"))?;
        let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
            continue;
        };
        let list: String = redis::cmd("CLIENT")
            .arg("LIST")
            .query_async(&mut conn)
            .await?;
        found.extend(
            list.lines()
                .filter(|l| l.contains(" cmd=blpop ") && l.contains(" flags=b "))
                .filter_map(|l| l.strip_prefix("id=")?.split(' ').next())
                .map(|id| format!("{port}/{id}")),
        );
    }
    Ok(found)
}

/// An idle `stayafrica worker` (polling once an hour) on the Redis at
/// `base` is blocked in its wake-up wait on one of `ports`, and a job
/// queued then runs: only the wake-up can start it.
async fn idle_worker_is_woken_on(base: &str, ports: &[u16]) -> anyhow::Result<()> {
    // Other tests' workers may wait on the same setup (and come and go):
    // ours is a blocked client that was not there before it started.
    let others = blocked_in_blpop(ports).await?;
    let dir = tempfile::tempdir()?;
    let prefix = unique_prefix();
    let log = dir.path().join("worker.log");
    let out = std::fs::File::create(&log)?;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_stayafrica"))
        .args([
            "worker",
            "--concurrency",
            "2",
            "--poll-interval-ms",
            "3600000",
        ])
        .env(
            "DATABASE_URL",
            format!("sqlite://{}", dir.path().join("w.db").display()),
        )
        .env("REDIS_URL", base)
        .env("STAYAFRICA_KEY_PREFIX", &prefix)
        .env("STAYAFRICA_VIEW_FLUSH_SECS", "100000000")
        .env("STAYAFRICA_EMAIL", "log")
        .env("RUST_LOG", "info,sqlx=warn")
        .env_remove("REDIS_CACHE_URL")
        .env_remove("REDIS_SESSIONS_URL")
        .env_remove("REDIS_RATELIMIT_URL")
        .env_remove("REDIS_BROKER_URL")
        .stdin(std::process::Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()?;
    let result = async {
        let role = RedisRole::connect(Role::Broker, &role_url(base, Role::Broker)).await?;
        let q = stayafrica::jobs::redis::RedisQueue::new(role, &Keys::new(&prefix));
        for round in 0..2 {
            // Generous: a worker process starting on a loaded machine.
            let deadline = std::time::Instant::now() + Duration::from_secs(45);
            while blocked_in_blpop(ports).await?.is_subset(&others) {
                anyhow::ensure!(
                    std::time::Instant::now() < deadline,
                    "round {round}: the worker never waits in BLPOP"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let id = uuid::Uuid::new_v4().to_string();
            let job = stayafrica::jobs::Job::noop_probe(None);
            stayafrica::jobs::QueueBackend::enqueue(&q, &id, &job, 0).await?;
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            loop {
                let info = stayafrica::jobs::QueueBackend::info(&q, &id).await?;
                if info.is_some_and(|i| i.status == "done") {
                    break;
                }
                anyhow::ensure!(
                    std::time::Instant::now() < deadline,
                    "round {round}: the job never ran"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        anyhow::Ok(())
    }
    .await;
    let _ = child.kill();
    let _ = child.wait();
    result.map_err(|e| {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        anyhow::anyhow!("{e:#}\n{text}")
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_worker_is_woken_by_its_blocking_wait_on_a_cluster() -> anyhow::Result<()> {
    let cluster = shared_cluster().await?;
    let ports: Vec<u16> = cluster.nodes.iter().map(|n| n.port).collect();
    idle_worker_is_woken_on(&cluster.url(), &ports).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_worker_is_woken_by_its_blocking_wait_on_sentinel() -> anyhow::Result<()> {
    let setup = crate::topologies::shared_sentinel().await?;
    let ports: Vec<u16> = setup.servers.iter().map(|n| n.port).collect();
    idle_worker_is_woken_on(&setup.url(), &ports).await
}
