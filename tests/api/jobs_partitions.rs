//! The Redis queue split into 4 partitions (as on a Cluster, here on the
//! tests' standalone Redis, under a prefix of each test's own): enqueues spread over every
//! partition; real `stayafrica worker` processes with
//! `STAYAFRICA_JOB_PARTITIONS=4` run each job exactly once, redeliver the
//! jobs of a SIGKILLed worker after their lease, start delayed jobs when due
//! (not before), and dead jobs of every partition are listed and replayed
//! through the CLI; `jobs counts` sums the partitions. And jobs queued by the
//! version before string records (hashes) still run and replay.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use stayafrica::db::now_ms;
use stayafrica::jobs::diagnostics::now_us;
use stayafrica::jobs::redis::RedisQueue;
use stayafrica::jobs::{Job, JobQueue, Probe, QueueBackend, Tallies};
use stayafrica::kv::keys::Keys;
use stayafrica::kv::{RedisRole, Role};

use crate::helpers::SHARED_REDIS;
use crate::jobs_suite::RedisCleanup;
use crate::workers::{FLUSH_SECS, Workers};

const PARTITIONS: u16 = 4;

/// A 4-partition queue under a prefix of its own, with the probes'
/// tallies, and the worker processes started on it (killed when dropped,
/// before the keys are deleted).
struct Setup {
    prefix: String,
    queue: JobQueue,
    redis_queue: Arc<RedisQueue>,
    workers: Workers,
    _cleanup: RedisCleanup,
}

impl Setup {
    async fn start() -> anyhow::Result<Setup> {
        let prefix = format!("satest:{}:", uuid::Uuid::new_v4().simple());
        let keys = Keys::new(&prefix);
        let role = RedisRole::connect(Role::Broker, &format!("{SHARED_REDIS}/0")).await?;
        let redis_queue =
            Arc::new(RedisQueue::new(role.clone(), &keys).with_partitions(PARTITIONS));
        // The workers' periodic view flush (a job with a 60 s lease) is
        // claimed here for the period they run in, so that it does not
        // queue: these tests count every job.
        assert!(
            redis_queue
                .claim_periodic(
                    "flush_views",
                    now_ms() / 1000 / FLUSH_SECS,
                    Duration::from_secs(60)
                )
                .await?
        );
        let queue = JobQueue::new(redis_queue.clone()).with_tallies(Tallies::redis(role, keys));
        let mut workers = Workers::on_queue(SHARED_REDIS, &prefix)?;
        workers.set("STAYAFRICA_JOB_PARTITIONS", &PARTITIONS.to_string());
        Ok(Setup {
            _cleanup: RedisCleanup(prefix.clone()),
            prefix,
            queue,
            redis_queue,
            workers,
        })
    }

    fn q(&self) -> &Arc<dyn QueueBackend> {
        self.queue.backend()
    }

    /// Starts `stayafrica worker ARGS…`; returns its index.
    fn start_worker(&mut self, args: &[&str]) -> anyhow::Result<usize> {
        self.workers.start(args)
    }

    fn kill(&mut self, n: usize) -> anyhow::Result<()> {
        self.workers.kill(n)
    }

    fn cli(&self, args: &[&str]) -> anyhow::Result<String> {
        self.workers.cli(args)
    }

    async fn wait<F, Fut>(&self, limit: Duration, what: &str, check: F) -> anyhow::Result<()>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = anyhow::Result<bool>>,
    {
        self.workers.wait(limit, what, check).await
    }

    async fn runs(&self, tally: &str) -> anyhow::Result<BTreeMap<String, i64>> {
        self.queue
            .tallies()
            .context("the queue has tallies")?
            .runs(tally)
            .await
    }

    /// Ready jobs per partition, read from Redis directly.
    fn ready_per_partition(&self) -> anyhow::Result<Vec<i64>> {
        let mut con = redis::Client::open(format!("{SHARED_REDIS}/0"))?.get_connection()?;
        let keys = Keys::new(&self.prefix);
        (0..PARTITIONS)
            .map(|p| {
                Ok(redis::cmd("LLEN")
                    .arg(keys.jobs_ready(p))
                    .query::<i64>(&mut con)?)
            })
            .collect()
    }
}

/// Fresh job ids, `per` of them in each partition.
fn ids_in_every_partition(q: &RedisQueue, per: usize) -> Vec<String> {
    let mut found: Vec<Vec<String>> = vec![Vec::new(); usize::from(PARTITIONS)];
    while found.iter().any(|f| f.len() < per) {
        let id = uuid::Uuid::new_v4().to_string();
        let f = &mut found[usize::from(q.partition_of(&id))];
        if f.len() < per {
            f.push(id);
        }
    }
    found.concat()
}

fn probe(tally: &str) -> Probe {
    Probe {
        tally: Some(tally.to_owned()),
        ..Probe::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_partitions_run_each_job_once_and_redeliver_after_a_sigkill() -> anyhow::Result<()> {
    const JOBS: usize = 2_000;
    let mut s = Setup::start().await?;
    let tally = uuid::Uuid::new_v4().simple().to_string();

    // Slow jobs with a short lease, to be held by the worker that is killed.
    let slow: Vec<String> = s
        .queue
        .enqueue_many(&vec![
            Job::Probe(Probe {
                sleep_ms: 4_000,
                timeout_ms: Some(2_000),
                ..probe(&tally)
            });
            8
        ])
        .await?;
    let first = s.start_worker(&["--concurrency", "8"])?;
    let q = s.q().clone();
    s.wait(Duration::from_secs(30), "8 slow jobs running", || async {
        for id in &slow {
            if q.info(id).await?.is_none_or(|i| i.status != "running") {
                return Ok(false);
            }
        }
        Ok(true)
    })
    .await?;
    let holders: Vec<Option<String>> = futures::future::try_join_all(
        slow.iter()
            .map(|id| async { Ok::<_, anyhow::Error>(q.info(id).await?.and_then(|i| i.worker)) }),
    )
    .await?;
    assert!(holders.iter().all(|h| h.is_some()), "{holders:?}");
    s.kill(first)?;

    // No-op jobs, queued while nobody runs: spread over every partition.
    let bare = Job::Probe(Probe::bare(Some(tally.clone())));
    let ids: Vec<String> = s.queue.enqueue_many(&vec![bare; JOBS]).await?;
    let ready = s.ready_per_partition()?;
    assert_eq!(ready.iter().sum::<i64>(), JOBS as i64, "{ready:?}");
    assert!(
        ready.iter().all(|n| *n > JOBS as i64 / 8),
        "every partition has a share: {ready:?}"
    );
    // Summed over the partitions: the no-op jobs and the 8 leases of the
    // killed worker.
    let counts = s.cli(&["jobs", "counts"])?;
    assert!(
        counts.contains(&format!("queued={JOBS}\trunning=8\tdead=0")),
        "{counts}"
    );

    s.start_worker(&["--concurrency", "8"])?;
    s.start_worker(&["--concurrency", "8"])?;
    s.wait(Duration::from_secs(60), "every job has run", || async {
        let c = q.counts().await?;
        Ok(c.queued == 0 && c.running == 0)
    })
    .await?;
    let runs = s.runs(&tally).await?;
    let doubles: Vec<_> = runs.iter().filter(|(_, n)| **n != 1).collect();
    assert!(doubles.is_empty(), "ran more than once: {doubles:?}");
    assert_eq!(runs.len(), JOBS + slow.len());
    assert!(ids.iter().chain(&slow).all(|id| runs.contains_key(id)));
    for id in &slow {
        let info = q.info(id).await?.context("a slow job's result is kept")?;
        assert_eq!(
            (info.status.as_str(), info.attempts),
            ("done", 2),
            "delivered again after its lease ran out"
        );
        assert_ne!(info.worker, holders[0], "run by another worker");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_partitions_start_delayed_jobs_when_due_and_replay_dead_ones() -> anyhow::Result<()> {
    let mut s = Setup::start().await?;
    let tally = uuid::Uuid::new_v4().simple().to_string();
    // Never polled: only wake-ups and due times start jobs.
    s.start_worker(&["--concurrency", "4", "--poll-interval-ms", "3600000"])?;
    let q = s.q().clone();
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Delayed jobs in every partition: each starts at or after its time.
    let due_us = now_us() + 800_000;
    let delayed = Job::Probe(Probe {
        queued_at_us: Some(due_us),
        ..probe(&tally)
    });
    let ids = ids_in_every_partition(&s.redis_queue, 4);
    for id in &ids {
        q.enqueue(id, &delayed, (due_us + 999) / 1000).await?;
    }
    assert_eq!(s.runs(&tally).await?.len(), 0, "none before its time");
    s.wait(Duration::from_secs(20), "the delayed jobs ran", || async {
        Ok(s.runs(&tally).await?.len() == ids.len())
    })
    .await?;
    let pickups = s
        .queue
        .tallies()
        .context("tallies")?
        .pickups(&tally)
        .await?;
    assert_eq!(pickups.len(), ids.len());
    assert!(
        pickups.values().all(|us| *us >= 0),
        "started at or after the due time: {pickups:?}"
    );

    // Failing jobs in every partition die after their retries...
    let failing = Job::Probe(Probe {
        fail: true,
        backoff_ms: Some(20),
        ..probe(&tally)
    });
    let dead = ids_in_every_partition(&s.redis_queue, 3);
    for id in &dead {
        q.enqueue(id, &failing, 0).await?;
    }
    s.wait(Duration::from_secs(30), "12 dead jobs", || async {
        Ok(q.counts().await?.dead == 12)
    })
    .await?;
    let listed = s.cli(&["jobs", "dead"])?;
    for id in &dead {
        assert!(listed.contains(id.as_str()), "{id} in {listed}");
    }
    assert_eq!(
        q.dead(5).await?.len(),
        5,
        "the limit holds across partitions"
    );
    // ... and replay from the CLI, each in its own partition.
    for id in &dead {
        let out = s.cli(&["jobs", "replay", id])?;
        assert!(out.contains("queued again"), "{out}");
    }
    s.wait(Duration::from_secs(30), "three more runs each", || async {
        let runs = s.runs(&tally).await?;
        Ok(dead.iter().all(|id| runs.get(id) == Some(&6)) && q.counts().await?.dead == 12)
    })
    .await?;
    assert!(s.cli(&["jobs", "replay", "no-such-job"]).is_err());
    Ok(())
}

/// A worker stays with a partition while it has ready jobs (so that its
/// outcomes and its next lease share one script call), but not for good:
/// with 20,000 jobs waiting in partition 0, the one job of each other
/// partition runs while most of partition 0's are still queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_busy_with_one_partition_still_serves_the_others() -> anyhow::Result<()> {
    const FLOOD: usize = 20_000;
    let mut s = Setup::start().await?;
    let tally = uuid::Uuid::new_v4().simple().to_string();
    let q = s.q().clone();
    let flood = Job::Probe(Probe::bare(None));
    let mut in_first = Vec::with_capacity(FLOOD);
    while in_first.len() < FLOOD {
        let id = uuid::Uuid::new_v4().to_string();
        if s.redis_queue.partition_of(&id) == 0 {
            in_first.push((id, flood.clone(), 0));
        }
    }
    for chunk in in_first.chunks(1_000) {
        q.enqueue_many(chunk).await?;
    }
    let others: Vec<String> = ids_in_every_partition(&s.redis_queue, 1)
        .into_iter()
        .filter(|id| s.redis_queue.partition_of(id) != 0)
        .collect();
    assert_eq!(others.len(), usize::from(PARTITIONS) - 1);
    let one = Job::Probe(probe(&tally));
    for id in &others {
        q.enqueue(id, &one, 0).await?;
    }

    s.start_worker(&["--concurrency", "8"])?;
    s.wait(
        Duration::from_secs(60),
        "the other partitions' jobs ran",
        || async { Ok(s.runs(&tally).await?.len() == others.len()) },
    )
    .await?;
    let ready = s.ready_per_partition()?;
    assert!(
        ready[0] > FLOOD as i64 / 2,
        "the other partitions waited for partition 0 to be drained: {ready:?}"
    );
    // And the flood runs to the end.
    s.wait(Duration::from_secs(120), "every job ran", || async {
        let c = q.counts().await?;
        Ok(c.queued == 0 && c.running == 0)
    })
    .await?;
    Ok(())
}

/// Jobs as the version before string records queued them: a hash per job
/// in the unpartitioned queue (now partition 0), queued and dead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_queued_by_the_previous_version_run_and_replay() -> anyhow::Result<()> {
    let s = Setup::start().await?;
    let keys = Keys::new(&s.prefix);
    let mut con = redis::Client::open(format!("{SHARED_REDIS}/0"))?.get_connection()?;
    let tally = uuid::Uuid::new_v4().simple().to_string();
    let payload = serde_json::to_string(&Job::Probe(probe(&tally)))?;
    let old = |id: &str, status: &str, con: &mut redis::Connection| -> anyhow::Result<()> {
        redis::cmd("HSET")
            .arg(keys.jobs_job(0, id))
            .arg(&[
                ("name", "probe"),
                ("payload", payload.as_str()),
                ("status", status),
                ("attempts", if status == "dead" { "3" } else { "0" }),
                ("max_attempts", "3"),
                ("timeout_ms", "5000"),
                ("created_ms", "1"),
            ])
            .query::<()>(con)?;
        Ok(())
    };
    old("old-queued", "queued", &mut con)?;
    redis::cmd("LPUSH")
        .arg(keys.jobs_ready(0))
        .arg("old-queued")
        .query::<()>(&mut con)?;
    old("old-dead", "dead", &mut con)?;
    redis::cmd("HSET")
        .arg(keys.jobs_job(0, "old-dead"))
        .arg("last_error")
        .arg("boom")
        .query::<()>(&mut con)?;
    redis::cmd("ZADD")
        .arg(keys.jobs_dead(0))
        .arg(1)
        .arg("old-dead")
        .query::<()>(&mut con)?;

    let q = s.q().clone();
    let info = q.info("old-queued").await?.context("an old job reads")?;
    assert_eq!((info.status.as_str(), info.attempts), ("queued", 0));
    let dead = q.dead(10).await?;
    assert_eq!(dead.len(), 1);
    assert_eq!(
        (dead[0].id.as_str(), dead[0].last_error.as_deref()),
        ("old-dead", Some("boom"))
    );

    // Leased, run and completed by the new code.
    let lease = q.reserve("w1").await?.context("the old job is due")?;
    assert_eq!(lease.id, "old-queued");
    assert_eq!((lease.attempt, lease.max_attempts), (1, 3));
    assert_eq!(lease.job.as_ref().ok(), Some(&Job::Probe(probe(&tally))));
    assert!(q.complete("old-queued", "w1", Some("ok")).await?);
    let info = q.info("old-queued").await?.context("result kept")?;
    assert_eq!(
        (info.status.as_str(), info.attempts, info.result.as_deref()),
        ("done", 1, Some("ok"))
    );

    // The old dead job replays with fresh attempts.
    assert!(q.replay("old-dead").await?);
    let lease = q.reserve("w1").await?.context("replayed")?;
    assert_eq!((lease.id.as_str(), lease.attempt), ("old-dead", 1));
    assert!(q.complete("old-dead", "w1", None).await?);
    assert!(q.info("old-dead").await?.is_none());
    Ok(())
}
