//! Idle workers cost (almost) nothing and still start new jobs at once: an
//! idle `stayafrica worker` with 16 slots on a Redis of its own sends at
//! most 5 commands in 5 s (MONITOR); with the poll interval set to an hour, a job
//! queued to an idle worker still runs (it is woken, on Redis by its
//! blocking wait, on the embedded queue in-process, on PostgreSQL by
//! `LISTEN`/`NOTIFY` across processes), and so does a delayed job when it
//! is due; the blocking wait reconnects by itself after a Redis restart and
//! after `CLIENT KILL`.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use stayafrica::db::Db;
use stayafrica::db::now_ms;
use stayafrica::jobs::redis::RedisQueue;
use stayafrica::jobs::sql::SqlQueue;
use stayafrica::jobs::{Job, QueueBackend};
use stayafrica::kv::keys::Keys;
use stayafrica::kv::{RedisRole, Role};
use tokio::sync::watch;

use crate::helpers::{
    self, RedisServer, TestDb, TestOptions, fresh_database, parse_commandstats, wait_until,
};

/// An hour: no poll happens within a test.
const NEVER_MS: &str = "3600000";

/// One `stayafrica worker` process on the Redis at `redis` (every role) and
/// a throw-away SQLite file; killed when dropped.
struct WorkerProcess {
    child: Child,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl WorkerProcess {
    fn start(redis: &str, prefix: &str, args: &[&str]) -> anyhow::Result<WorkerProcess> {
        Self::start_on(None, Some(redis), prefix, args)
    }

    /// [`WorkerProcess::start`] on a queue of `partitions` partitions.
    fn start_partitioned(
        redis: &str,
        prefix: &str,
        partitions: u16,
        args: &[&str],
    ) -> anyhow::Result<WorkerProcess> {
        Self::start_with(
            None,
            Some(redis),
            prefix,
            args,
            &[("STAYAFRICA_JOB_PARTITIONS", &partitions.to_string())],
        )
    }

    /// A worker on `database` (a SQLite file of its own if `None`) and, if
    /// given, the Redis at `redis`.
    fn start_on(
        database: Option<&str>,
        redis: Option<&str>,
        prefix: &str,
        args: &[&str],
    ) -> anyhow::Result<WorkerProcess> {
        Self::start_with(database, redis, prefix, args, &[])
    }

    fn start_with(
        database: Option<&str>,
        redis: Option<&str>,
        prefix: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<WorkerProcess> {
        let dir = tempfile::tempdir()?;
        let log = dir.path().join("worker.log");
        let out = std::fs::File::create(&log)?;
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_stayafrica"));
        for var in [
            "STAYAFRICA_CONFIG",
            "REDIS_CACHE_URL",
            "REDIS_SESSIONS_URL",
            "REDIS_RATELIMIT_URL",
            "REDIS_BROKER_URL",
        ] {
            cmd.env_remove(var);
        }
        let sqlite = format!("sqlite://{}", dir.path().join("w.db").display());
        cmd.env("DATABASE_URL", database.unwrap_or(&sqlite));
        match redis {
            Some(url) => cmd.env("REDIS_URL", url),
            None => cmd.env_remove("REDIS_URL"),
        };
        cmd.envs(env.iter().copied());
        let child = cmd
            .arg("worker")
            .args(args)
            .env("STAYAFRICA_KEY_PREFIX", prefix)
            // The view flush is periodic work of its own: far away here.
            .env("STAYAFRICA_VIEW_FLUSH_SECS", "100000000")
            .env("STAYAFRICA_EMAIL", "log")
            .env("RUST_LOG", "info,sqlx=warn")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("running the stayafrica binary")?;
        Ok(WorkerProcess {
            child,
            log,
            _dir: dir,
        })
    }

    fn tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sync_conn(url: &str) -> anyhow::Result<redis::Connection> {
    Ok(redis::Client::open(url)?.get_connection()?)
}

/// Calls per command from `INFO commandstats` (script-internal included).
fn commandstats(con: &mut redis::Connection) -> anyhow::Result<Vec<(String, u64)>> {
    let info: String = redis::cmd("INFO").arg("commandstats").query(con)?;
    Ok(parse_commandstats(&info))
}

/// The ids of clients blocked in `BLPOP` (the idle workers' waits).
fn blocked_clients(con: &mut redis::Connection) -> anyhow::Result<Vec<String>> {
    let list: String = redis::cmd("CLIENT").arg("LIST").query(con)?;
    Ok(list
        .lines()
        .filter(|l| l.contains(" cmd=blpop ") && l.contains(" flags=b "))
        .filter_map(|l| l.strip_prefix("id=")?.split(' ').next().map(str::to_owned))
        .collect())
}

/// A queue handle on the worker's Redis and prefix, as the API would have.
async fn queue_on(url: &str, prefix: &str) -> anyhow::Result<Arc<dyn QueueBackend>> {
    let role = RedisRole::connect(Role::Broker, &format!("{url}/0")).await?;
    Ok(Arc::new(RedisQueue::new(role, &Keys::new(prefix))))
}

async fn runs_to_done(
    q: &Arc<dyn QueueBackend>,
    job: &Job,
    run_at_ms: i64,
    w: &WorkerProcess,
) -> anyhow::Result<String> {
    let id = uuid::Uuid::new_v4().to_string();
    // This client's own connection may still be reconnecting (its Redis
    // just restarted): retry the enqueue a little.
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Err(e) = q.enqueue(&id, job, run_at_ms).await {
        if format!("{e:#}").contains("exists already") {
            break; // an earlier try got through, its answer did not
        }
        anyhow::ensure!(Instant::now() < deadline, "enqueue failed: {e:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_until(Duration::from_secs(20), "the job is done", || async {
        Ok(q.info(&id).await?.is_some_and(|i| i.status == "done"))
    })
    .await
    .with_context(|| w.tail())?;
    Ok(id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_worker_with_16_slots_sends_at_most_5_commands_in_5_s() -> anyhow::Result<()> {
    idle_cost(1).await
}

/// The same with 4 partitions: still one wait for all of them, and one
/// partition looked at per poll interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_worker_of_4_partitions_sends_at_most_5_commands_in_5_s() -> anyhow::Result<()> {
    idle_cost(4).await
}

async fn idle_cost(partitions: u16) -> anyhow::Result<()> {
    let redis = RedisServer::start().await?;
    let url = redis.url();
    let prefix = format!("satest:{}:", uuid::Uuid::new_v4().simple());
    let w = WorkerProcess::start_partitioned(&url, &prefix, partitions, &["--concurrency", "16"])?;
    let mut con = sync_conn(&url)?;
    // Started: connected, migrated, and waiting on its wake-up list.
    wait_until(Duration::from_secs(30), "the worker waits", || {
        let blocked = blocked_clients(&mut con).map(|b| !b.is_empty());
        async move { blocked }
    })
    .await
    .with_context(|| w.tail())?;
    // Settled: no command for a second (startup work is over).
    let total = |con: &mut redis::Connection| -> anyhow::Result<u64> {
        Ok(commandstats(con)?
            .iter()
            .filter(|(n, _)| !n.starts_with("info") && !n.starts_with("client|"))
            .map(|(_, c)| c)
            .sum())
    };
    let mut last = total(&mut con)?;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = total(&mut con)?;
        if now == last {
            break;
        }
        last = now;
    }

    // MONITOR shows every command as it runs, including those run inside
    // scripts (`[0 lua]`), which are not sent: only sent commands count.
    let mut monitor = sync_conn(&url)?;
    monitor.send_packed_command(&redis::cmd("MONITOR").get_packed_command())?;
    monitor.set_read_timeout(Some(Duration::from_millis(100)))?;
    let started = Instant::now();
    let mut sent = Vec::new();
    while started.elapsed() < Duration::from_secs(5) {
        match monitor.recv_response() {
            Ok(redis::Value::SimpleString(line)) if line != "OK" => {
                if !line.contains(" lua] ") {
                    sent.push(line);
                }
            }
            Ok(_) => {}
            Err(e) if e.is_timeout() => {}
            Err(e) => return Err(e.into()),
        }
    }
    drop(monitor);
    assert!(
        sent.len() <= 5,
        "an idle worker sent {} commands in 5 s: {sent:#?}",
        sent.len()
    );

    // It was idle, not dead: a new job still runs.
    let role = RedisRole::connect(Role::Broker, &format!("{url}/0")).await?;
    let q: Arc<dyn QueueBackend> =
        Arc::new(RedisQueue::new(role, &Keys::new(&prefix)).with_partitions(partitions));
    runs_to_done(&q, &Job::noop_probe(None), 0, &w).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_redis_worker_is_woken_for_new_and_delayed_jobs_and_survives_restarts()
-> anyhow::Result<()> {
    let mut redis = RedisServer::start().await?;
    let url = redis.url();
    let prefix = format!("satest:{}:", uuid::Uuid::new_v4().simple());
    let w = WorkerProcess::start(
        &url,
        &prefix,
        &["--concurrency", "4", "--poll-interval-ms", NEVER_MS],
    )?;
    let q = queue_on(&url, &prefix).await?;
    let mut con = sync_conn(&url)?;
    let waits_again = |con: &mut redis::Connection| -> anyhow::Result<bool> {
        Ok(!blocked_clients(con)?.is_empty())
    };
    let probe = Job::noop_probe(None);

    // Idle (blocked in its wait), then a job: only the wake-up can start it.
    runs_to_done(&q, &probe, 0, &w).await?;
    wait_until(Duration::from_secs(10), "idle again", || {
        let r = waits_again(&mut con);
        async move { r }
    })
    .await?;
    runs_to_done(&q, &probe, 0, &w).await?;

    // A delayed job runs when due: the worker wakes by itself (no poll).
    let due = now_ms() + 700;
    let id = runs_to_done(&q, &probe, due, &w).await?;
    let info = q.info(&id).await?.context("done job kept")?;
    assert_eq!(info.status, "done");

    // The blocking connection is killed: the worker reconnects and waits
    // again, and the next job still wakes it.
    wait_until(Duration::from_secs(10), "idle again", || {
        let r = waits_again(&mut con);
        async move { r }
    })
    .await?;
    for id in blocked_clients(&mut con)? {
        redis::cmd("CLIENT")
            .arg("KILL")
            .arg("ID")
            .arg(id)
            .query::<()>(&mut con)?;
    }
    wait_until(
        Duration::from_secs(10),
        "waiting again after CLIENT KILL",
        || {
            let r = waits_again(&mut con);
            async move { r }
        },
    )
    .await
    .with_context(|| w.tail())?;
    runs_to_done(&q, &probe, 0, &w).await?;

    // Redis restarts (queue kept: AOF): the same.
    redis.stop();
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.restart().await?;
    let mut con = sync_conn(&url)?;
    wait_until(
        Duration::from_secs(20),
        "waiting again after a restart",
        || {
            let r = waits_again(&mut con);
            async move { r }
        },
    )
    .await
    .with_context(|| w.tail())?;
    runs_to_done(&q, &probe, 0, &w).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_embedded_worker_is_woken_in_process_for_new_and_delayed_jobs() -> anyhow::Result<()>
{
    let app = helpers::spawn_app_with(TestOptions {
        db: TestDb::Sqlite,
        ..TestOptions::default()
    })
    .await?;
    let q = app.state.jobs.backend().clone();
    let worker = app
        .worker
        .clone()
        .with_poll_interval(Duration::from_secs(3600));
    let (stop, stopped) = watch::channel(false);
    let running = tokio::spawn(worker.run(4, stopped));
    let done = |id: String| {
        let q = q.clone();
        async move {
            wait_until(Duration::from_secs(20), "the job is done", || async {
                Ok(q.info(&id).await?.is_some_and(|i| i.status == "done"))
            })
            .await
        }
    };
    // Give the worker time to find the queue empty and wait.
    tokio::time::sleep(Duration::from_millis(300)).await;
    done(app.state.jobs.enqueue(&Job::noop_probe(None)).await?).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    done(app.state.jobs.enqueue(&Job::noop_probe(None)).await?).await?;
    let later = app
        .state
        .jobs
        .enqueue_at(&Job::noop_probe(None), now_ms() + 700)
        .await?;
    done(later).await?;
    let _ = stop.send(true);
    tokio::time::timeout(Duration::from_secs(10), running).await??;
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_worker_process_on_postgresql_is_woken_by_notify_for_new_and_delayed_jobs()
-> anyhow::Result<()> {
    let (url, _guard) = fresh_database(TestDb::Postgres).await?;
    let db = Db::connect(&url).await?;
    db.migrate().await?;
    // Another process's queue: only NOTIFY can reach the worker, which
    // never polls within the test.
    let q: Arc<dyn QueueBackend> = Arc::new(SqlQueue::new(db.clone()));
    let w = WorkerProcess::start_on(
        Some(&url),
        None,
        "satest:",
        &["--concurrency", "4", "--poll-interval-ms", NEVER_MS],
    )?;
    // Started and listening: its first job shows it (queued before it
    // listened, it is found by the worker's first look).
    runs_to_done(&q, &Job::noop_probe(None), 0, &w).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    runs_to_done(&q, &Job::noop_probe(None), 0, &w).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    runs_to_done(&q, &Job::noop_probe(None), 0, &w).await?;
    // A delayed job: woken by its NOTIFY, the worker then sleeps until it
    // is due.
    let id = runs_to_done(&q, &Job::noop_probe(None), now_ms() + 700, &w).await?;
    assert_eq!(q.info(&id).await?.context("kept")?.status, "done");
    drop(w);
    db.close().await;
    Ok(())
}
