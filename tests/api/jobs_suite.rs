//! Background jobs: ONE behaviour suite of the queue contract
//! ([`QueueBackend`]) run against the SQL queue (SQLite and PostgreSQL) and
//! the Redis queue; the worker's retry, dead-letter and graceful release on
//! both; then real `stayafrica worker` processes on Redis: an OTP mail sent
//! only once a worker runs, a worker killed mid-job, a job that always
//! fails and its replay through the CLI, 10,000 jobs each run exactly once
//! by 4 processes, and two workers flushing views without double counting.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use serde_json::json;
use stayafrica::db::{Db, now_ms};
use stayafrica::jobs::redis::RedisQueue;
use stayafrica::jobs::sql::SqlQueue;
use stayafrica::jobs::{Job, JobQueue, Probe, QueueBackend, Tallies};
use stayafrica::kv::keys::Keys;
use stayafrica::kv::{RedisRole, Role};
use tokio::sync::watch;

use crate::helpers::{
    self, DbGuard, SHARED_REDIS, TestApp, TestDb, TestOptions, fresh_database, property_body,
    wait_until,
};
use crate::workers::Workers;

// ---------------------------------------------------------------------------
// Backends under test
// ---------------------------------------------------------------------------

/// A queue under test and what keeps its storage alive (and cleans it up).
struct QueueUnderTest {
    queue: Arc<dyn QueueBackend>,
    _guard: Box<dyn Send>,
}

async fn sql_queue(kind: TestDb) -> anyhow::Result<QueueUnderTest> {
    let (url, guard): (String, DbGuard) = fresh_database(kind).await?;
    let db = Db::connect(&url).await?;
    db.migrate().await?;
    Ok(QueueUnderTest {
        queue: Arc::new(SqlQueue::new(db)),
        _guard: Box::new(guard),
    })
}

async fn redis_queue(partitions: u16) -> anyhow::Result<QueueUnderTest> {
    let prefix = format!("satest:{}:", uuid::Uuid::new_v4().simple());
    let role = RedisRole::connect(Role::Broker, &format!("{SHARED_REDIS}/0")).await?;
    Ok(QueueUnderTest {
        queue: Arc::new(RedisQueue::new(role, &Keys::new(&prefix)).with_partitions(partitions)),
        _guard: Box::new(RedisCleanup(prefix)),
    })
}

/// The Redis queue on the broker role of a cluster or Sentinel setup of
/// the tests' own (`topologies`: it dies with the test run, so what the
/// test leaves under its prefix goes with it).
async fn redis_queue_on(base: &str) -> anyhow::Result<QueueUnderTest> {
    let prefix = format!("satest:{}:", uuid::Uuid::new_v4().simple());
    let url = crate::topologies::role_url(base, Role::Broker);
    let role = RedisRole::connect(Role::Broker, &url).await?;
    Ok(QueueUnderTest {
        queue: Arc::new(RedisQueue::new(role, &Keys::new(&prefix))),
        _guard: Box::new(()),
    })
}

/// Deletes every key of a test prefix from the shared Redis (SCAN + UNLINK,
/// never KEYS) when dropped.
pub(crate) struct RedisCleanup(pub(crate) String);

impl Drop for RedisCleanup {
    fn drop(&mut self) {
        let pattern = format!("{}*", self.0);
        let _ = (|| -> redis::RedisResult<()> {
            let client = redis::Client::open(format!("{SHARED_REDIS}/0"))?;
            let mut con = client.get_connection()?;
            let mut cursor = 0u64;
            loop {
                let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(1000)
                    .query(&mut con)?;
                if !keys.is_empty() {
                    redis::cmd("UNLINK").arg(&keys).query::<()>(&mut con)?;
                }
                if next == 0 {
                    return Ok(());
                }
                cursor = next;
            }
        })();
    }
}

/// Generates, for each suite function `async fn name(q: Arc<dyn QueueBackend>)`,
/// one test per queue implementation (Redis with one partition and with 4).
macro_rules! on_every_queue {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() -> anyhow::Result<()> {
                    let q = super::sql_queue(crate::helpers::TestDb::Sqlite).await?;
                    super::$name(q.queue.clone()).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() -> anyhow::Result<()> {
                    let q = super::sql_queue(crate::helpers::TestDb::Postgres).await?;
                    super::$name(q.queue.clone()).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn redis() -> anyhow::Result<()> {
                    let q = super::redis_queue(1).await?;
                    super::$name(q.queue.clone()).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn redis_4_partitions() -> anyhow::Result<()> {
                    let q = super::redis_queue(4).await?;
                    super::$name(q.queue.clone()).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn cluster() -> anyhow::Result<()> {
                    let url = crate::topologies::cluster_url().await?;
                    let q = super::redis_queue_on(&url).await?;
                    super::$name(q.queue.clone()).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sentinel() -> anyhow::Result<()> {
                    let url = crate::topologies::sentinel_url().await?;
                    let q = super::redis_queue_on(&url).await?;
                    super::$name(q.queue.clone()).await
                }
            }
        )*
    };
}

on_every_queue!(
    enqueue_reserve_complete,
    expired_lease_is_delivered_again,
    failure_retries_after_backoff_then_dies_and_replays,
    release_gives_the_job_back_without_using_an_attempt,
    periodic_claim_is_won_once_per_slot,
);

fn probe(timeout_ms: Option<u64>) -> Job {
    Job::Probe(Probe {
        fail: false,
        sleep_ms: 0,
        timeout_ms,
        backoff_ms: None,
        tally: None,
        ..Probe::default()
    })
}

/// The probes' tallies of a test app.
fn tallies(app: &TestApp) -> anyhow::Result<&Tallies> {
    app.state
        .jobs
        .tallies()
        .context("the app's queue has tallies")
}

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

// ---------------------------------------------------------------------------
// The queue contract
// ---------------------------------------------------------------------------

async fn enqueue_reserve_complete(q: Arc<dyn QueueBackend>) -> anyhow::Result<()> {
    assert!(
        q.reserve("w1").await?.is_none(),
        "an empty queue has nothing"
    );
    let id = new_id();
    let job = probe(None);
    q.enqueue(&id, &job, 0).await?;
    let info = q.info(&id).await?.context("queued job readable")?;
    assert_eq!(
        (info.name.as_str(), info.status.as_str(), info.attempts),
        ("probe", "queued", 0)
    );
    assert_eq!(q.counts().await?.queued, 1);

    let lease = q.reserve("w1").await?.context("the job is due")?;
    assert_eq!(lease.id, id);
    assert_eq!(lease.job.as_ref().ok(), Some(&job));
    assert_eq!((lease.attempt, lease.max_attempts), (1, job.max_attempts()));
    assert_eq!(lease.timeout, job.timeout());
    let c = q.counts().await?;
    assert_eq!((c.queued, c.running, c.dead), (0, 1, 0));
    assert!(
        q.reserve("w2").await?.is_none(),
        "a leased job is not given twice"
    );
    let info = q.info(&id).await?.context("running")?;
    assert_eq!(info.status, "running");
    assert_eq!(info.worker.as_deref(), Some("w1"));

    // Only the holder may extend or complete.
    assert!(!q.extend(&id, "w2", Duration::from_secs(5)).await?);
    assert!(q.extend(&id, "w1", Duration::from_secs(5)).await?);
    assert!(!q.complete(&id, "w2", Some("stolen")).await?);
    assert_eq!(q.info(&id).await?.context("still there")?.status, "running");
    assert!(q.complete(&id, "w1", Some("{\"ok\":1}")).await?);
    let info = q.info(&id).await?.context("results are kept")?;
    assert_eq!(info.status, "done");
    assert_eq!(info.result.as_deref(), Some("{\"ok\":1}"));
    assert_eq!(info.attempts, 1);
    assert!(!q.complete(&id, "w1", None).await?, "done only once");
    let c = q.counts().await?;
    assert_eq!((c.queued, c.running, c.dead), (0, 0, 0));

    // Nothing is kept of a job done without a result.
    let bare = new_id();
    q.enqueue(&bare, &job, 0).await?;
    let lease = q.reserve("w1").await?.context("due")?;
    assert_eq!(lease.id, bare);
    assert!(q.complete(&bare, "w1", None).await?);
    assert!(q.info(&bare).await?.is_none(), "not kept");
    assert!(!q.complete(&bare, "w1", None).await?, "done only once");

    // A job for later is counted but not given out before its time.
    let later = new_id();
    q.enqueue(&later, &job, now_ms() + 60_000).await?;
    assert!(q.reserve("w1").await?.is_none());
    assert_eq!(q.counts().await?.queued, 1);
    assert!(q.info("no-such-job").await?.is_none());
    assert!(q.enqueue(&later, &job, 0).await.is_err(), "ids are unique");
    Ok(())
}

async fn expired_lease_is_delivered_again(q: Arc<dyn QueueBackend>) -> anyhow::Result<()> {
    let id = new_id();
    let job = probe(Some(150));
    q.enqueue(&id, &job, 0).await?;
    let first = q.reserve("w1").await?.context("due")?;
    assert_eq!(first.timeout, Duration::from_millis(150));
    tokio::time::sleep(Duration::from_millis(300)).await;
    // w1 "died": its lease ran out, so the job goes to the next worker.
    let second = q.reserve("w2").await?.context("redelivered")?;
    assert_eq!((second.id.as_str(), second.attempt), (id.as_str(), 2));
    assert!(!q.extend(&id, "w1", Duration::from_secs(1)).await?);
    assert!(
        !q.complete(&id, "w1", None).await?,
        "the lost lease cannot complete"
    );
    assert!(q.complete(&id, "w2", Some("{}")).await?);
    let info = q.info(&id).await?.context("done")?;
    assert_eq!((info.status.as_str(), info.attempts), ("done", 2));

    // A job whose lease runs out on its last attempt is dead, not looping.
    let id = new_id();
    q.enqueue(&id, &job, 0).await?;
    for attempt in 1..=job.max_attempts() {
        let l = q.reserve(&format!("w{attempt}")).await?.context("due")?;
        assert_eq!(l.attempt, attempt);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(q.reserve("w9").await?.is_none());
    let info = q.info(&id).await?.context("dead job kept")?;
    assert_eq!(info.status, "dead");
    assert!(
        info.last_error
            .as_deref()
            .unwrap_or_default()
            .contains("lease"),
        "{info:?}"
    );
    assert_eq!(q.dead(10).await?.len(), 1);
    Ok(())
}

async fn failure_retries_after_backoff_then_dies_and_replays(
    q: Arc<dyn QueueBackend>,
) -> anyhow::Result<()> {
    let id = new_id();
    q.enqueue(&id, &probe(None), 0).await?;
    let l = q.reserve("w1").await?.context("due")?;
    assert!(!q.fail(&id, "w2", "not mine", None).await?);
    assert!(q.fail(&id, "w1", "boom 1", Some(now_ms() + 300)).await?);
    let info = q.info(&id).await?.context("kept")?;
    assert_eq!(info.status, "queued");
    assert_eq!(info.last_error.as_deref(), Some("boom 1"));
    assert!(
        q.reserve("w1").await?.is_none(),
        "not before its retry time"
    );
    let c = q.counts().await?;
    assert_eq!((c.queued, c.running), (1, 0));
    tokio::time::sleep(Duration::from_millis(400)).await;
    let again = q.reserve("w2").await?.context("back after its time")?;
    assert_eq!((again.id.as_str(), again.attempt), (l.id.as_str(), 2));

    assert!(q.fail(&id, "w2", "boom 2", None).await?);
    let info = q.info(&id).await?.context("kept")?;
    assert_eq!(info.status, "dead");
    assert_eq!(info.last_error.as_deref(), Some("boom 2"));
    let dead = q.dead(10).await?;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].id, id);
    assert_eq!(dead[0].last_error.as_deref(), Some("boom 2"));
    let c = q.counts().await?;
    assert_eq!((c.queued, c.running, c.dead), (0, 0, 1));
    assert!(
        q.reserve("w3").await?.is_none(),
        "dead jobs are not delivered"
    );

    assert!(q.replay(&id).await?);
    assert!(!q.replay(&id).await?, "only dead jobs replay");
    let info = q.info(&id).await?.context("kept")?;
    assert_eq!((info.status.as_str(), info.attempts), ("queued", 0));
    assert!(q.dead(10).await?.is_empty());
    let fresh = q.reserve("w3").await?.context("replayed job is due")?;
    assert_eq!(fresh.attempt, 1);
    assert!(!q.replay("no-such-job").await?);
    Ok(())
}

async fn release_gives_the_job_back_without_using_an_attempt(
    q: Arc<dyn QueueBackend>,
) -> anyhow::Result<()> {
    let id = new_id();
    q.enqueue(&id, &probe(None), 0).await?;
    q.reserve("w1").await?.context("due")?;
    assert!(!q.release(&id, "w2").await?);
    assert!(q.release(&id, "w1").await?);
    let info = q.info(&id).await?.context("kept")?;
    assert_eq!((info.status.as_str(), info.attempts), ("queued", 0));
    let l = q.reserve("w2").await?.context("due at once")?;
    assert_eq!(l.attempt, 1);
    assert!(!q.release(&id, "w1").await?, "w1 no longer holds it");
    Ok(())
}

async fn periodic_claim_is_won_once_per_slot(q: Arc<dyn QueueBackend>) -> anyhow::Result<()> {
    let name = format!("flush_{}", uuid::Uuid::new_v4().simple());
    let period = Duration::from_secs(60);
    let claims = futures::future::join_all((0..5).map(|_| {
        let (q, name) = (q.clone(), name.clone());
        tokio::spawn(async move { q.claim_periodic(&name, 1000, period).await })
    }))
    .await;
    let mut won = 0;
    for c in claims {
        if c?? {
            won += 1;
        }
    }
    assert_eq!(won, 1, "one of 5 concurrent callers wins the slot");
    assert!(!q.claim_periodic(&name, 1000, period).await?);
    assert!(q.claim_periodic(&name, 1001, period).await?, "next slot");
    assert!(q.claim_periodic(&format!("{name}x"), 1000, period).await?);
    Ok(())
}

/// Diagnostics: probe tallies on the database and on Redis (the same
/// behaviour; not part of the queue's interface).
mod tallies_on_every_store {
    use stayafrica::db::Db;
    use stayafrica::jobs::Tallies;
    use stayafrica::kv::keys::Keys;
    use stayafrica::kv::{RedisRole, Role};

    use crate::helpers::{SHARED_REDIS, TestDb, fresh_database};

    async fn sql(kind: TestDb) -> anyhow::Result<()> {
        let (url, _guard) = fresh_database(kind).await?;
        let db = Db::connect(&url).await?;
        db.migrate().await?;
        super::tally_counts_every_run(Tallies::sql(db)).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() -> anyhow::Result<()> {
        sql(TestDb::Sqlite).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() -> anyhow::Result<()> {
        sql(TestDb::Postgres).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis() -> anyhow::Result<()> {
        let prefix = format!("satest:{}:", uuid::Uuid::new_v4().simple());
        let _cleanup = super::RedisCleanup(prefix.clone());
        let role = RedisRole::connect(Role::Broker, &format!("{SHARED_REDIS}/0")).await?;
        super::tally_counts_every_run(Tallies::redis(role, Keys::new(&prefix))).await
    }
}

async fn tally_counts_every_run(t: Tallies) -> anyhow::Result<()> {
    let tally = uuid::Uuid::new_v4().simple().to_string();
    assert!(t.runs(&tally).await?.is_empty());
    // Concurrent runs are all counted (the Redis store batches them).
    let runs =
        futures::future::join_all(["a", "b", "a", "c", "a"].map(|m| t.record(&tally, m, None)))
            .await;
    for r in runs {
        r?;
    }
    t.record(&format!("{tally}x"), "a", None).await?;
    t.record(&tally, "d", Some(1234)).await?;
    let expected: BTreeMap<String, i64> = [("a", 3), ("b", 1), ("c", 1), ("d", 1)]
        .map(|(m, n)| (m.to_owned(), n))
        .into();
    assert_eq!(t.runs(&tally).await?, expected);
    let pickups: BTreeMap<String, i64> = [("d".to_owned(), 1234)].into();
    assert_eq!(t.pickups(&tally).await?, pickups);
    Ok(())
}

// ---------------------------------------------------------------------------
// The worker, in process, on every backend
// ---------------------------------------------------------------------------

mod worker_on_every_queue {
    use crate::helpers::{SHARED_REDIS, TestDb};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() -> anyhow::Result<()> {
        super::worker_retries_kills_and_releases(TestDb::Sqlite, None).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() -> anyhow::Result<()> {
        super::worker_retries_kills_and_releases(TestDb::Postgres, None).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis() -> anyhow::Result<()> {
        super::worker_retries_kills_and_releases(TestDb::Sqlite, Some(SHARED_REDIS)).await
    }
}

async fn worker_retries_kills_and_releases(db: TestDb, redis: Option<&str>) -> anyhow::Result<()> {
    let app = helpers::spawn_app_with(TestOptions {
        db,
        redis: redis.map(str::to_owned),
        ..TestOptions::default()
    })
    .await?;
    let _cleanup = RedisCleanup(app.state.settings.key_prefix.clone());
    let q = app.state.jobs.backend().clone();

    // A failing job is retried after its backoff, then dead with its error.
    let tally = uuid::Uuid::new_v4().simple().to_string();
    let failing = app
        .state
        .jobs
        .enqueue(&Job::Probe(Probe {
            fail: true,
            sleep_ms: 0,
            timeout_ms: None,
            backoff_ms: Some(20),
            tally: Some(tally.clone()),
            ..Probe::default()
        }))
        .await?;
    wait_until(
        Duration::from_secs(10),
        "the failing job is dead",
        || async {
            app.drain_jobs().await?;
            Ok(q.info(&failing).await?.is_some_and(|i| i.status == "dead"))
        },
    )
    .await?;
    let info = q.info(&failing).await?.context("dead job kept")?;
    assert_eq!(info.attempts, 3);
    assert!(
        info.last_error
            .as_deref()
            .unwrap_or_default()
            .contains("asked to fail")
    );
    assert_eq!(tallies(&app)?.runs(&tally).await?.get(&failing), Some(&3));

    // A job still running when the grace period ends goes back to the
    // queue, without losing an attempt.
    let slow = app
        .state
        .jobs
        .enqueue(&Job::Probe(Probe {
            fail: false,
            sleep_ms: 30_000,
            timeout_ms: None,
            backoff_ms: None,
            tally: None,
            ..Probe::default()
        }))
        .await?;
    let worker = app.worker.clone().with_grace(Duration::from_millis(100));
    let (stop, stopped) = watch::channel(false);
    let running = tokio::spawn(worker.run(1, stopped));
    wait_until(Duration::from_secs(10), "the slow job runs", || async {
        Ok(q.info(&slow).await?.is_some_and(|i| i.status == "running"))
    })
    .await?;
    let _ = stop.send(true);
    tokio::time::timeout(Duration::from_secs(10), running).await??;
    let info = q.info(&slow).await?.context("kept")?;
    assert_eq!((info.status.as_str(), info.attempts), ("queued", 0));
    app.stop().await
}

// ---------------------------------------------------------------------------
// Real worker processes on Redis
// ---------------------------------------------------------------------------

async fn redis_app() -> anyhow::Result<(TestApp, RedisCleanup)> {
    let app = helpers::spawn_app_with(TestOptions {
        redis: Some(SHARED_REDIS.into()),
        with_worker: false,
        ..TestOptions::default()
    })
    .await?;
    let cleanup = RedisCleanup(app.state.settings.key_prefix.clone());
    Ok((app, cleanup))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otp_mail_is_sent_only_once_a_worker_process_runs() -> anyhow::Result<()> {
    let (app, _cleanup) = redis_app().await?;
    let email = format!("otp-{}@example.com", uuid::Uuid::new_v4().simple());
    app.signup(&email, "guest").await?;
    let r = app
        .post("/api/v1/auth/otp", &json!({ "email": email }))
        .await?;
    assert_eq!(r.status(), 202);
    // Queued in Redis, and nobody runs it yet.
    assert!(app.state.jobs.backend().counts().await?.queued >= 1);
    assert!(app.emails().is_empty());

    let mut workers = Workers::for_app(&app)?;
    workers.start(&["--concurrency", "2"])?;
    workers
        .wait(Duration::from_secs(20), "the OTP mail", || async {
            Ok(!app.emails().is_empty())
        })
        .await?;
    let q = app.state.jobs.backend().clone();
    workers
        .wait(Duration::from_secs(10), "an empty queue", || async {
            let c = q.counts().await?;
            Ok(c.queued == 0 && c.running == 0)
        })
        .await?;
    let mails = app.emails();
    assert_eq!(mails.len(), 1);
    assert!(mails[0].contains(&format!("To: {email}")));
    assert!(mails[0].contains("sign-in code"));
    drop(workers);
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_of_a_killed_worker_completes_on_another() -> anyhow::Result<()> {
    let (app, _cleanup) = redis_app().await?;
    let q = app.state.jobs.backend().clone();
    let tally = uuid::Uuid::new_v4().simple().to_string();
    let id = app
        .state
        .jobs
        .enqueue(&Job::Probe(Probe {
            fail: false,
            sleep_ms: 2_500,
            timeout_ms: Some(1_000),
            backoff_ms: None,
            tally: Some(tally.clone()),
            ..Probe::default()
        }))
        .await?;
    let mut workers = Workers::for_app(&app)?;
    let first = workers.start(&["--concurrency", "1"])?;
    let first_pid = workers.pid(first);
    workers
        .wait(
            Duration::from_secs(20),
            "the first worker runs the job",
            || async { Ok(q.info(&id).await?.is_some_and(|i| i.status == "running")) },
        )
        .await?;
    let holder = q
        .info(&id)
        .await?
        .and_then(|i| i.worker)
        .unwrap_or_default();
    assert!(
        holder.starts_with(&format!("w-{first_pid}-")),
        "held by {holder}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    workers.kill(first)?;
    workers.start(&["--concurrency", "1"])?;
    workers
        .wait(Duration::from_secs(30), "the job completes", || async {
            Ok(q.info(&id).await?.is_some_and(|i| i.status == "done"))
        })
        .await?;
    let info = q.info(&id).await?.context("done job kept")?;
    assert_eq!(info.attempts, 2, "delivered again after the lease ran out");
    assert_ne!(info.worker.as_deref(), Some(holder.as_str()));
    assert_eq!(info.result.as_deref(), Some("{\"probe\":\"ok\"}"));
    // The killed run never finished; the second ran once.
    assert_eq!(tallies(&app)?.runs(&tally).await?.get(&id), Some(&1));
    drop(workers);
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_job_dies_after_its_retries_and_replays_from_the_cli() -> anyhow::Result<()> {
    let (app, _cleanup) = redis_app().await?;
    let q = app.state.jobs.backend().clone();
    let tally = uuid::Uuid::new_v4().simple().to_string();
    let id = app
        .state
        .jobs
        .enqueue(&Job::Probe(Probe {
            fail: true,
            sleep_ms: 0,
            timeout_ms: None,
            backoff_ms: Some(50),
            tally: Some(tally.clone()),
            ..Probe::default()
        }))
        .await?;
    let mut workers = Workers::for_app(&app)?;
    workers.start(&["--concurrency", "2"])?;
    workers
        .wait(Duration::from_secs(20), "the job is dead", || async {
            Ok(q.info(&id).await?.is_some_and(|i| i.status == "dead"))
        })
        .await?;
    let info = q.info(&id).await?.context("dead job kept")?;
    assert_eq!(info.attempts, 3);
    assert!(
        info.last_error
            .as_deref()
            .unwrap_or_default()
            .contains("asked to fail")
    );
    assert_eq!(tallies(&app)?.runs(&tally).await?.get(&id), Some(&3));

    let listed = workers.cli(&["jobs", "dead"])?;
    assert!(listed.contains(&id), "{listed}");
    assert!(listed.contains("asked to fail"), "{listed}");
    let replayed = workers.cli(&["jobs", "replay", &id])?;
    assert!(replayed.contains("queued again"), "{replayed}");
    // Replayed with fresh attempts: three more runs, then dead again.
    workers
        .wait(Duration::from_secs(20), "three more runs", || async {
            Ok(tallies(&app)?.runs(&tally).await?.get(&id) == Some(&6)
                && q.info(&id).await?.is_some_and(|i| i.status == "dead"))
        })
        .await?;
    assert!(workers.cli(&["jobs", "replay", "no-such-job"]).is_err());
    drop(workers);
    app.stop().await
}

/// 10,000 jobs over 4 worker processes, each run exactly once, on one
/// server, a cluster and a Sentinel's master.
mod ten_thousand_jobs_run_exactly_once_on_four_worker_processes {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis() -> anyhow::Result<()> {
        let (app, _cleanup) = super::redis_app().await?;
        super::ten_thousand_jobs_on(app, crate::helpers::SHARED_REDIS, None).await
    }
    /// With the default partition count of a cluster (6 for 3 masters),
    /// the queue's records are on every master, none holding over half.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cluster() -> anyhow::Result<()> {
        let cluster = crate::topologies::shared_cluster().await?;
        let base = cluster.url();
        super::ten_thousand_jobs_on(super::redis_app_on(&base).await?, &base, Some(cluster)).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sentinel() -> anyhow::Result<()> {
        let base = crate::topologies::sentinel_url().await?;
        super::ten_thousand_jobs_on(super::redis_app_on(&base).await?, &base, None).await
    }
}

/// An app with every role on the Redis at `base` (a setup of the tests'
/// own: what it leaves goes with the setup).
async fn redis_app_on(base: &str) -> anyhow::Result<TestApp> {
    helpers::spawn_app_with(TestOptions {
        redis: Some(base.into()),
        with_worker: false,
        ..TestOptions::default()
    })
    .await
}

/// 10,000 jobs on the Redis at `base`; on `cluster`, queued with its
/// default partition count, whose records must spread over its masters.
async fn ten_thousand_jobs_on(
    app: TestApp,
    base: &str,
    cluster: Option<&crate::topologies::Cluster>,
) -> anyhow::Result<()> {
    const JOBS: usize = 10_000;
    let q = app.state.jobs.backend().clone();
    let tally = uuid::Uuid::new_v4().simple().to_string();
    let job = Job::noop_probe(Some(tally.clone()));
    let queue: &JobQueue = &app.state.jobs;
    let ids: Vec<anyhow::Result<String>> = futures::stream::iter(0..JOBS)
        .map(|_| queue.enqueue(&job))
        .buffer_unordered(64)
        .collect()
        .await;
    let ids: Vec<String> = ids.into_iter().collect::<anyhow::Result<_>>()?;
    let prefix = app.state.settings.key_prefix.clone();
    if let Some(cluster) = cluster {
        // The default count, as every process of the app's recorded it.
        let conn = stayafrica::kv::connect_plain(base, Duration::from_secs(5)).await?;
        let recorded: Option<u16> = redis::cmd("GET")
            .arg(Keys::new(&prefix).jobs_partitions())
            .query_async(&mut conn.clone())
            .await?;
        assert_eq!(recorded, Some(6), "twice the 3 masters");
        let records =
            crate::topology_ops::per_master(cluster, &format!("{prefix}jobs:*:job:*")).await?;
        assert_eq!(records.values().sum::<usize>(), JOBS, "{records:?}");
        crate::topology_ops::assert_spread("queued job records", &records);
        // And every master holds ready lists of its own.
        let ready =
            crate::topology_ops::per_master(cluster, &format!("{prefix}jobs:*:ready")).await?;
        crate::topology_ops::assert_spread("ready lists", &ready);
    }

    let mut workers = Workers::for_app_on(&app, base)?;
    workers.set_log_level("warn");
    for _ in 0..4 {
        workers.start(&["--concurrency", "4"])?;
    }
    workers
        .wait(Duration::from_secs(50), "every job has run", || async {
            let c = q.counts().await?;
            Ok(c.queued == 0 && c.running == 0)
        })
        .await?;
    drop(workers);

    let runs = tallies(&app)?.runs(&tally).await?;
    let doubles: Vec<_> = runs.iter().filter(|(_, n)| **n != 1).collect();
    assert!(doubles.is_empty(), "ran more than once: {doubles:?}");
    assert_eq!(runs.len(), JOBS);
    assert_eq!(runs.values().sum::<i64>(), JOBS as i64);
    assert!(ids.iter().all(|id| runs.contains_key(id)));
    let c = q.counts().await?;
    assert_eq!((c.queued, c.running, c.dead), (0, 0, 0));
    let done = futures::stream::iter(&ids)
        .map(|id| {
            let q = q.clone();
            async move { q.info(id).await }
        })
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await;
    for info in done {
        let info = info?.context("finished job kept")?;
        assert_eq!((info.status.as_str(), info.attempts), ("done", 1));
    }
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_flushing_views_do_not_double_count() -> anyhow::Result<()> {
    let (app, _cleanup) = redis_app().await?;
    let host = app.new_client();
    app.signup_with(
        &host,
        &format!("host-{}@example.com", uuid::Uuid::new_v4().simple()),
        "host",
    )
    .await?;
    let p = app
        .create_property_with(&host, property_body("Accra", "60.00", false))
        .await?;
    let id = p["id"].as_i64().context("property id")?;
    let path = format!("/api/v1/properties/{id}");
    let view = |n: usize| {
        let path = path.clone();
        let app = &app;
        async move {
            for _ in 0..n {
                let r = app.get(&path).await?;
                anyhow::ensure!(r.status() == 200, "detail: {}", r.status());
            }
            anyhow::Ok(())
        }
    };
    view(30).await?;

    let mut workers = Workers::for_app(&app)?;
    workers.start(&["--concurrency", "2"])?;
    workers.start(&["--concurrency", "2"])?;
    let stored =
        || async { Ok::<_, anyhow::Error>(app.db().property(id).await?.map(|p| p.view_count)) };
    workers
        .wait(
            Duration::from_secs(20),
            "30 views in the database",
            || async { Ok(stored().await? == Some(30)) },
        )
        .await?;
    // More views while both workers flush every second.
    view(12).await?;
    workers
        .wait(
            Duration::from_secs(20),
            "42 views in the database",
            || async { Ok(stored().await? == Some(42)) },
        )
        .await?;
    // Two more periods: nothing is added twice.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(stored().await?, Some(42));
    drop(workers);
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_running_jobs_finish_or_gives_them_back() -> anyhow::Result<()> {
    let (app, _cleanup) = redis_app().await?;
    let q = app.state.jobs.backend().clone();
    let slow = |sleep_ms| {
        Job::Probe(Probe {
            fail: false,
            sleep_ms,
            timeout_ms: None,
            backoff_ms: None,
            tally: None,
            ..Probe::default()
        })
    };
    let mut workers = Workers::for_app(&app)?;

    // Within the grace period: the running job finishes, nothing new starts.
    let short = app.state.jobs.enqueue(&slow(2_000)).await?;
    let first = workers.start(&["--concurrency", "1", "--grace-secs", "10"])?;
    workers
        .wait(Duration::from_secs(20), "the short job runs", || async {
            Ok(q.info(&short).await?.is_some_and(|i| i.status == "running"))
        })
        .await?;
    let next = app.state.jobs.enqueue(&slow(0)).await?;
    assert!(workers.terminate(first)?, "clean exit");
    let info = q.info(&short).await?.context("kept")?;
    assert_eq!((info.status.as_str(), info.attempts), ("done", 1));
    let info = q.info(&next).await?.context("kept")?;
    assert_eq!(info.status, "queued", "a stopping worker takes no new job");

    // Past the grace period: the job goes back to the queue, attempt unused.
    let long = app.state.jobs.enqueue(&slow(60_000)).await?;
    let second = workers.start(&["--concurrency", "2", "--grace-secs", "0.2"])?;
    workers
        .wait(Duration::from_secs(20), "the long job runs", || async {
            Ok(q.info(&long).await?.is_some_and(|i| i.status == "running"))
        })
        .await?;
    assert!(workers.terminate(second)?, "clean exit");
    let info = q.info(&long).await?.context("kept")?;
    assert_eq!((info.status.as_str(), info.attempts), ("queued", 0));
    drop(workers);
    app.stop().await
}
