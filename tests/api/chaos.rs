//! The chaos suite: each fault of issue 10 injected into real processes
//! (own redis-server instances, own PostgreSQL, the `stayafrica` binary's
//! `serve` and `worker`) while concurrent clients run, half of them giving
//! up after 50 ms. Each case asserts the invariants of
//! [`chaos_support::check_invariants`], recovery within the breaker's
//! cool-down + 1 s after the dependency answers again, and where the case
//! has them, that jobs and views are neither lost nor doubled; and prints
//! its recovery time (recorded in docs/RELIABILITY.md).

use std::time::{Duration, Instant};

use serde_json::json;

use crate::chaos_support::{
    Allow, Endpoint, Env, Fixture, Kind, Load, Postgres, RECOVERY_BOUND, Redis, Sample, Service,
    await_health, await_recovery, check_invariants, fixture, login, metric, report, view_count,
};
use crate::helpers::{TestDb, fresh_database};

/// A service (API + worker) on PostgreSQL and one Redis for every role.
struct Setup {
    _env: Env,
    api: Service,
    _worker: Service,
    f: Fixture,
    _db: crate::helpers::DbGuard,
}

async fn setup(redis: &[(&str, String)]) -> anyhow::Result<Setup> {
    let (db_url, db) = fresh_database(TestDb::Postgres).await?;
    let env = Env::new(&db_url, redis)?;
    let api = env.serve().await?;
    let worker = env.worker()?;
    let f = fixture(&api, 4).await?;
    Ok(Setup {
        _env: env,
        api,
        _worker: worker,
        f,
        _db: db,
    })
}

/// Fails with the service's log when the invariants do not hold.
fn invariants(api: &Service, samples: &[Sample], allow: Allow) -> anyhow::Result<()> {
    check_invariants(samples, allow).map_err(|e| anyhow::anyhow!("{e}\n{}", api.log_tail()))
}

fn within_bound(case: &str, recovery: Duration) -> anyhow::Result<()> {
    anyhow::ensure!(
        recovery <= RECOVERY_BOUND,
        "{case}: recovered {} ms after the dependency answered (bound {} ms)",
        recovery.as_millis(),
        RECOVERY_BOUND.as_millis()
    );
    Ok(())
}

/// Jobs: every accepted one-time-code request mails once; a request
/// answered 503 or not at all may or may not have been queued, so those
/// bound the count from above. Waits for the worker to drain.
async fn jobs_exactly_once(
    s: &Setup,
    samples: &[Sample],
    lost_allowed: bool,
) -> anyhow::Result<()> {
    let otp: Vec<&Sample> = samples.iter().filter(|x| x.kind == Kind::Otp).collect();
    let accepted = otp.iter().filter(|x| x.status == Some(202)).count();
    let unsure = otp.iter().filter(|x| x.status != Some(202)).count();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut sent = s.api.emails_to(&s.f.otp_email);
    while sent < accepted && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        sent = s.api.emails_to(&s.f.otp_email);
    }
    // Anything still queued for a moment after that would be a double.
    tokio::time::sleep(Duration::from_millis(500)).await;
    sent = s.api.emails_to(&s.f.otp_email);
    println!("jobs: {accepted} accepted, {unsure} unsure, {sent} mailed");
    anyhow::ensure!(accepted > 0, "no job was accepted at all");
    anyhow::ensure!(
        lost_allowed || sent >= accepted,
        "jobs lost: {accepted} accepted, {sent} mailed"
    );
    anyhow::ensure!(
        sent <= accepted + unsure,
        "jobs run twice: {accepted} accepted (+{unsure} unsure), {sent} mailed"
    );
    Ok(())
}

/// Views: never more than were requested; every view answered 200 while
/// the cache was up (before the fault, and from shortly after recovery) is
/// counted. Views answered during the outage are not counted (the cost the
/// docs record).
async fn views_not_doubled(
    s: &Setup,
    samples: &[Sample],
    fault_at: Instant,
    recovered_at: Instant,
) -> anyhow::Result<()> {
    let details: Vec<&Sample> = samples.iter().filter(|x| x.kind == Kind::Detail).collect();
    let must = details
        .iter()
        .filter(|x| x.status == Some(200))
        .filter(|x| x.at < fault_at || x.at > recovered_at + Duration::from_millis(500))
        .count() as i64;
    let sent = details.len() as i64;
    // This read counts one more view.
    let counted = view_count(&s.api, s.f.property_id).await? - 1;
    println!("views: {sent} requested, {must} must be counted, {counted} counted");
    anyhow::ensure!(counted <= sent, "views doubled: {counted} > {sent}");
    anyhow::ensure!(counted >= must, "views lost: {counted} < {must}");
    Ok(())
}

/// Keeps the load running for `d`.
async fn run_for(d: Duration) {
    tokio::time::sleep(d).await;
}

/// A signed-in host (its own client) with one property in Kigali, whose
/// list page is cached: the client, the property id and the list URL.
async fn host_with_listed_property(
    api: &Service,
) -> anyhow::Result<(reqwest::Client, i64, String)> {
    let host = reqwest::Client::builder().cookie_store(true).build()?;
    let r = host
        .post(api.url("/api/v1/auth/register"))
        .json(&json!({"email": "owner@example.com", "password": "password123", "full_name": "O", "role": "host"}))
        .send()
        .await?;
    anyhow::ensure!(r.status() == 201, "register: {}", r.status());
    login(api, &host, "owner@example.com").await?;
    let created: serde_json::Value = host
        .post(api.url("/api/v1/properties"))
        .json(&crate::helpers::property_body("Kigali", "50.00", false))
        .send()
        .await?
        .json()
        .await?;
    let pid = created["id"].as_i64().unwrap_or(0);
    let list = api.url("/api/v1/properties?city=Kigali");
    anyhow::ensure!(
        reqwest::get(&list)
            .await?
            .text()
            .await?
            .contains("Lovely home"),
        "the new property is not listed"
    );
    Ok((host, pid, list))
}

/// 1. SIGKILL, then restart on an AOF big enough that Redis spends seconds
/// answering `LOADING`. A property changed just before the crash: after
/// recovery no cached list shows the old title. Queued jobs survive (AOF).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_through_loading() -> anyhow::Result<()> {
    let mut redis = Redis::start(&[]).await?;
    // Ballast for a LOADING phase of seconds, written into the AOF's base.
    let _: String = redis
        .cmd(&["DEBUG", "POPULATE", "1500000", "ballast", "64"])
        .await?;
    let _: String = redis.cmd(&["BGREWRITEAOF"]).await?;
    loop {
        let info: String = redis.cmd(&["INFO", "persistence"]).await?;
        if info.contains("aof_rewrite_in_progress:0") && !info.contains("aof_rewrite_scheduled:1") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let s = setup(&[("REDIS_URL", redis.url())]).await?;
    let (host, pid, list) = host_with_listed_property(&s.api).await?;

    let load = Load::start(&s.api, &s.f, true)?;
    run_for(Duration::from_secs(1)).await;
    // Changed just before the crash: the cached list of the old title is
    // in the AOF, and so must be the invalidation.
    let r = host
        .patch(s.api.url(&format!("/api/v1/properties/{pid}")))
        .json(&json!({"title": "Renamed just before the crash"}))
        .send()
        .await?;
    anyhow::ensure!(r.status() == 200, "PATCH: {}", r.status());
    let fault_at = Instant::now();
    redis.kill();
    redis.restart()?;
    let mut saw_loading = false;
    let answered = loop {
        match redis.cmd::<String>(&["PING"]).await {
            Ok(p) if p == "PONG" => break Instant::now(),
            Err(e)
                if e.downcast_ref::<redis::RedisError>()
                    .and_then(redis::RedisError::code)
                    == Some("LOADING") =>
            {
                saw_loading = true
            }
            _ => {}
        }
        anyhow::ensure!(
            fault_at.elapsed() < Duration::from_secs(120),
            "Redis never came back"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    anyhow::ensure!(saw_loading, "the restart went through no LOADING phase");
    let loading_ms = answered.duration_since(fault_at).as_millis();
    let recovery = await_recovery(&s.api, &s.f.cookies[0], answered).await?;
    let recovered_at = Instant::now();
    run_for(Duration::from_secs(1)).await;
    let samples = load.stop().await;
    report("1 kill+LOADING", recovery, &samples);
    println!("killed to PONG: {loading_ms} ms");
    invariants(&s.api, &samples, Allow::default())?;
    within_bound("kill+LOADING", recovery)?;
    let text = reqwest::get(&list).await?.text().await?;
    anyhow::ensure!(
        text.contains("Renamed just before the crash"),
        "a cached list older than the write came back: {text}"
    );
    jobs_exactly_once(&s, &samples, false).await?;
    views_not_doubled(&s, &samples, fault_at, recovered_at).await?;
    Ok(())
}

/// 2. Frozen for 5 s (SIGSTOP, then SIGCONT): nobody waits on the frozen
/// server for long; recovery once it runs again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_frozen_for_five_seconds() -> anyhow::Result<()> {
    let redis = Redis::start(&[]).await?;
    let s = setup(&[("REDIS_URL", redis.url())]).await?;
    let load = Load::start(&s.api, &s.f, true)?;
    run_for(Duration::from_secs(1)).await;
    let fault_at = Instant::now();
    redis.freeze()?;
    run_for(Duration::from_secs(5)).await;
    redis.thaw()?;
    let answered = redis.wait_until_answering(Duration::from_secs(10)).await?;
    let recovery = await_recovery(&s.api, &s.f.cookies[0], answered).await?;
    let recovered_at = Instant::now();
    run_for(Duration::from_secs(1)).await;
    let samples = load.stop().await;
    report("2 SIGSTOP 5 s", recovery, &samples);
    invariants(&s.api, &samples, Allow::default())?;
    within_bound("SIGSTOP", recovery)?;
    // Every Redis call has a 250 ms timeout and the breaker opens after
    // three: a request answered during the freeze took a few timeouts at
    // most, never the freeze itself.
    let slowest = samples
        .iter()
        .filter(|x| !x.impatient && x.kind != Kind::Otp && x.at >= fault_at)
        .map(|x| x.elapsed)
        .max()
        .unwrap_or_default();
    anyhow::ensure!(
        slowest < Duration::from_millis(2500),
        "a request waited {} ms on the frozen Redis",
        slowest.as_millis()
    );
    jobs_exactly_once(&s, &samples, false).await?;
    views_not_doubled(&s, &samples, fault_at, recovered_at).await?;
    Ok(())
}

/// 3. Restarted empty (data lost, as with no persistence): sessions are
/// gone (401, never 500), new logins work at once; no job runs twice (the
/// queued ones are lost with the data: the docs say so).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_empty() -> anyhow::Result<()> {
    let mut redis = Redis::start(&[]).await?;
    let s = setup(&[("REDIS_URL", redis.url())]).await?;
    let load = Load::start(&s.api, &s.f, true)?;
    run_for(Duration::from_secs(1)).await;
    redis.restart_empty()?;
    let answered = redis.wait_until_answering(Duration::from_secs(10)).await?;
    // Every role answers again; the old sessions are gone, a new login
    // works at once (its password check is not part of the recovery time).
    let recovery = await_health(&s.api, None, answered).await?;
    let cookie = login(&s.api, &reqwest::Client::new(), &s.f.otp_email).await?;
    await_recovery(&s.api, &cookie, Instant::now()).await?;
    run_for(Duration::from_secs(1)).await;
    let samples = load.stop().await;
    report("3 restart empty", recovery, &samples);
    invariants(
        &s.api,
        &samples,
        Allow {
            sessions_lost: true,
            ..Allow::default()
        },
    )?;
    within_bound("restart empty", recovery)?;
    let old = reqwest::Client::new()
        .get(s.api.url("/api/v1/me"))
        .header("cookie", &s.f.cookies[0])
        .send()
        .await?;
    anyhow::ensure!(
        old.status() == 401,
        "a lost session answered {}",
        old.status()
    );
    jobs_exactly_once(&s, &samples, true).await?;
    Ok(())
}

/// 3b. Restarted on data older than what it acknowledged (an AOF that lost
/// its last second, an old backup): the invalidation of a change is lost
/// with it, and the entry it had made unreachable is back in Redis. The
/// service notices the new server (run id) and forgets every generation
/// before reading: the list shows the change, never the old entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_on_older_data() -> anyhow::Result<()> {
    let mut redis = Redis::start(&[]).await?;
    let s = setup(&[("REDIS_URL", redis.url())]).await?;
    let (host, pid, list) = host_with_listed_property(&s.api).await?;
    let before = redis.copy_data()?;
    let r = host
        .patch(s.api.url(&format!("/api/v1/properties/{pid}")))
        .json(&json!({"title": "Renamed after the backup"}))
        .send()
        .await?;
    anyhow::ensure!(r.status() == 200, "PATCH: {}", r.status());
    let load = Load::start(&s.api, &s.f, false)?;
    run_for(Duration::from_millis(500)).await;
    redis.restart_from(&before)?;
    let answered = redis.wait_until_answering(Duration::from_secs(10)).await?;
    let recovery = await_recovery(&s.api, &s.f.cookies[0], answered).await?;
    let text = reqwest::get(&list).await?.text().await?;
    run_for(Duration::from_millis(500)).await;
    let samples = load.stop().await;
    report("3b restart on older data", recovery, &samples);
    invariants(&s.api, &samples, Allow::default())?;
    within_bound("restart on older data", recovery)?;
    anyhow::ensure!(
        text.contains("Renamed after the backup"),
        "the entry the lost invalidation had hidden came back: {text}"
    );
    Ok(())
}

/// 4. `CLIENT KILL` of every connection of the service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_connections_killed() -> anyhow::Result<()> {
    let redis = Redis::start(&[]).await?;
    let s = setup(&[("REDIS_URL", redis.url())]).await?;
    let load = Load::start(&s.api, &s.f, true)?;
    run_for(Duration::from_secs(1)).await;
    let fault_at = Instant::now();
    let killed: i64 = redis
        .cmd(&["CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"])
        .await?;
    anyhow::ensure!(killed >= 4, "only {killed} connections killed");
    let recovery = await_recovery(&s.api, &s.f.cookies[0], fault_at).await?;
    let recovered_at = Instant::now();
    run_for(Duration::from_secs(1)).await;
    let samples = load.stop().await;
    report("4 CLIENT KILL", recovery, &samples);
    invariants(&s.api, &samples, Allow::default())?;
    within_bound("CLIENT KILL", recovery)?;
    jobs_exactly_once(&s, &samples, false).await?;
    views_not_doubled(&s, &samples, fault_at, recovered_at).await?;
    Ok(())
}

/// 5. The cache's own Redis full with `noeviction` (every write OOM): the
/// cache keeps answering reads (its breaker stays closed: OOM says the
/// server is there), no client sees an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_redis_full_with_noeviction() -> anyhow::Result<()> {
    let main = Redis::start(&[]).await?;
    let cache = Redis::start(&["--maxmemory-policy", "noeviction"]).await?;
    let s = setup(&[
        ("REDIS_URL", main.url()),
        ("REDIS_CACHE_URL", format!("{}/1", cache.url())),
    ])
    .await?;
    let load = Load::start(&s.api, &s.f, false)?;
    run_for(Duration::from_secs(1)).await;
    // Hits from Redis and from the near-cache (outcomes `hit`, `near_hit`).
    let hits_before = metric(&s.api, "cache_requests_total", &["hit\""]).await?;
    let _: String = cache.cmd(&["CONFIG", "SET", "maxmemory", "1"]).await?;
    let fault_at = Instant::now();
    run_for(Duration::from_secs(3)).await;
    let oom = metric(
        &s.api,
        "redis_errors_total",
        &["role=\"cache\"", "code=\"OOM\""],
    )
    .await?;
    let open = metric(&s.api, "redis_circuit_open", &["role=\"cache\""]).await?;
    let hits_during = metric(&s.api, "cache_requests_total", &["hit\""]).await?;
    let _: String = cache.cmd(&["CONFIG", "SET", "maxmemory", "0"]).await?;
    let answered = Instant::now();
    let recovery = await_recovery(&s.api, &s.f.cookies[0], answered).await?;
    let samples = load.stop().await;
    report("5 cache OOM", recovery, &samples);
    println!(
        "OOM errors {oom}, cache hits during the fault {}",
        hits_during - hits_before
    );
    invariants(&s.api, &samples, Allow::default())?;
    anyhow::ensure!(oom > 0.0, "the fault did not reach the service");
    anyhow::ensure!(open == 0.0, "the cache's breaker opened on OOM");
    anyhow::ensure!(
        hits_during > hits_before,
        "no cache hit while the cache was full"
    );
    within_bound("cache OOM", recovery)?;
    let _ = fault_at;
    Ok(())
}

/// 6. Failover on standalone Redis: the replica is promoted, the old master
/// becomes its read-only replica (`FAILOVER`), and the endpoint the
/// service connects to (a name or virtual IP; here a TCP forwarder) moves to the new master.
/// The service's open connections still reach the old master and get
/// `READONLY`: that makes it reconnect, through the endpoint, to the new
/// master. Sessions survive (they were replicated).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_to_a_promoted_replica() -> anyhow::Result<()> {
    let a = Redis::start(&[]).await?;
    let b = Redis::start(&["--replicaof", "127.0.0.1", &a.port.to_string()]).await?;
    let endpoint = Endpoint::start(a.port).await?;
    let s = setup(&[("REDIS_URL", endpoint.url())]).await?;
    let load = Load::start(&s.api, &s.f, true)?;
    run_for(Duration::from_secs(1)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let replica: String = b.cmd(&["INFO", "replication"]).await?;
        let master: String = a.cmd(&["INFO", "replication"]).await?;
        if replica.contains("master_link_status:up") && master.contains("state=online") {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "replica never in sync");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A coordinated failover (`FAILOVER`, Redis 6.2+: the master pauses
    // writes until the replica has them all, then they swap roles), so no
    // acknowledged write is lost: an unplanned promotion loses what had not
    // replicated yet, and with a lost view-batch take that counts views
    // twice (docs/RELIABILITY.md).
    let fault_at = Instant::now();
    let _: String = a
        .cmd(&[
            "FAILOVER",
            "TO",
            "127.0.0.1",
            &b.port.to_string(),
            "TIMEOUT",
            "5000",
        ])
        .await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (ra, rb): (String, String) = (
            a.cmd(&["INFO", "replication"]).await?,
            b.cmd(&["INFO", "replication"]).await?,
        );
        if rb.contains("role:master") && ra.contains("role:slave") {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "failover did not complete");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    endpoint.switch(b.port);
    let answered = Instant::now();
    let recovery = await_recovery(&s.api, &s.f.cookies[0], answered).await?;
    let recovered_at = Instant::now();
    run_for(Duration::from_secs(1)).await;
    let samples = load.stop().await;
    report("6 failover", recovery, &samples);
    invariants(&s.api, &samples, Allow::default())?;
    within_bound("failover", recovery)?;
    jobs_exactly_once(&s, &samples, false).await?;
    views_not_doubled(&s, &samples, fault_at, recovered_at).await?;
    Ok(())
}

/// 7. PostgreSQL (a cluster of the test's own) restarted, then every
/// connection to it terminated, under load: 503 (never 500) while it is
/// away, cached public pages still 200, recovery once it answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_and_connections_terminated() -> anyhow::Result<()> {
    let mut pg = Postgres::start().await?;
    let redis = Redis::start(&[]).await?;
    let env = Env::new(&pg.url(), &[("REDIS_URL", redis.url())])?;
    let api = env.serve().await?;
    let _worker = env.worker()?;
    let f = fixture(&api, 4).await?;
    let load = Load::start(&api, &f, false)?;
    run_for(Duration::from_secs(1)).await;

    pg.restart().await?;
    let answered = pg.wait_until_answering(Duration::from_secs(30)).await?;
    let restart_recovery = await_recovery(&api, &f.cookies[0], answered).await?;
    run_for(Duration::from_secs(1)).await;

    let admin = sqlx::PgPool::connect(&pg.url()).await?;
    let terminated_at = Instant::now();
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = 'postgres' AND pid <> pg_backend_pid()",
    )
    .execute(&admin)
    .await?;
    let terminate_recovery = await_recovery(&api, &f.cookies[0], terminated_at).await?;
    admin.close().await;
    run_for(Duration::from_secs(1)).await;
    let samples = load.stop().await;
    report("7a PostgreSQL restart", restart_recovery, &samples);
    println!(
        "chaos 7b pg_terminate_backend: recovered {} ms after the terminate",
        terminate_recovery.as_millis()
    );
    invariants(
        &api,
        &samples,
        Allow {
            database_down: true,
            ..Allow::default()
        },
    )?;
    within_bound("PostgreSQL restart", restart_recovery)?;
    within_bound("pg_terminate_backend", terminate_recovery)?;
    Ok(())
}
