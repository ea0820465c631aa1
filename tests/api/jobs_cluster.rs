//! The Redis queue on the tests' Redis Cluster (3 masters, shared by the
//! run; a key prefix of each test's own) with the default partition count
//! of a cluster, twice its masters: an idle worker that never polls is
//! woken for a job landing in any of the partitions (each partition's own
//! blocking wait, on the master of its slot), and the jobs a SIGKILLed
//! worker held are delivered again after their lease. (10,000 jobs over 4
//! worker processes and the spread of the queue over the masters:
//! `jobs_suite::ten_thousand_jobs_run_exactly_once_on_four_worker_processes::cluster`.)

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use stayafrica::db::now_ms;
use stayafrica::jobs::redis::RedisQueue;
use stayafrica::jobs::{Job, JobQueue, Probe, QueueBackend, Tallies};
use stayafrica::kv::keys::Keys;
use stayafrica::kv::{RedisRole, Role};
use stayafrica::startup::default_job_partitions;

use crate::topologies::{cluster_url, role_url};
use crate::workers::{FLUSH_SECS, Workers};

/// A queue handle on the cluster under a prefix of its own (as an API
/// process has it: the default count, registered), and workers on it.
struct Setup {
    queue: JobQueue,
    redis_queue: Arc<RedisQueue>,
    workers: Workers,
}

impl Setup {
    async fn start() -> anyhow::Result<Setup> {
        let base = cluster_url().await?;
        let prefix = format!("satest:{}:", uuid::Uuid::new_v4().simple());
        let keys = Keys::new(&prefix);
        let role = RedisRole::connect(Role::Broker, &role_url(&base, Role::Broker)).await?;
        let partitions = default_job_partitions(&role).await?;
        assert_eq!(partitions, 6, "twice the cluster's 3 masters");
        let redis_queue =
            Arc::new(RedisQueue::new(role.clone(), &keys).with_partitions(partitions));
        redis_queue.register().await?;
        // The workers' periodic view flush is claimed for the period they
        // run in, so that it does not queue: these tests count every job.
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
        Ok(Setup {
            queue,
            redis_queue,
            workers: Workers::on_queue(&base, &prefix)?,
        })
    }

    fn q(&self) -> &Arc<dyn QueueBackend> {
        self.queue.backend()
    }

    async fn runs(&self, tally: &str) -> anyhow::Result<BTreeMap<String, i64>> {
        self.queue
            .tallies()
            .context("the queue has tallies")?
            .runs(tally)
            .await
    }

    /// A fresh job id in partition `p`.
    fn id_in(&self, p: u16) -> String {
        loop {
            let id = uuid::Uuid::new_v4().to_string();
            if self.redis_queue.partition_of(&id) == p {
                return id;
            }
        }
    }
}

/// Longest a job may wait for an idle worker that is woken by its token.
const WOKEN_WITHIN: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_worker_on_a_cluster_is_woken_for_a_job_in_every_partition() -> anyhow::Result<()> {
    let mut s = Setup::start().await?;
    let tally = uuid::Uuid::new_v4().simple().to_string();
    // Never polls within the test: only a wake-up (or a due time, and
    // these jobs have none) can start a job.
    s.workers
        .start(&["--concurrency", "2", "--poll-interval-ms", "3600000"])?;
    let q = s.q().clone();
    let job = Job::Probe(Probe::noop(Some(tally.clone())));
    // Started (connected, its first look at every partition done).
    let first = s.id_in(0);
    q.enqueue(&first, &job, 0).await?;
    s.workers
        .wait(Duration::from_secs(30), "the first job is done", || async {
            Ok(q.info(&first).await?.is_some_and(|i| i.status == "done"))
        })
        .await?;
    let mut took = Vec::new();
    for p in 0..6u16 {
        // Idle again: back in its wait.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let id = s.id_in(p);
        let queued = Instant::now();
        q.enqueue(&id, &job, 0).await?;
        s.workers
            .wait(
                WOKEN_WITHIN,
                &format!("the job in partition {p} is done"),
                || async { Ok(q.info(&id).await?.is_some_and(|i| i.status == "done")) },
            )
            .await?;
        took.push(queued.elapsed());
    }
    assert!(took.iter().all(|t| *t < WOKEN_WITHIN), "{took:?}");
    let runs = s.runs(&tally).await?;
    assert_eq!(runs.len(), 7);
    assert!(runs.values().all(|n| *n == 1), "{runs:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jobs_of_a_sigkilled_worker_on_a_cluster_are_delivered_again() -> anyhow::Result<()> {
    let mut s = Setup::start().await?;
    let tally = uuid::Uuid::new_v4().simple().to_string();
    let q = s.q().clone();
    // One slow job with a short lease in every partition.
    let slow = Job::Probe(Probe {
        sleep_ms: 4_000,
        timeout_ms: Some(2_000),
        tally: Some(tally.clone()),
        ..Probe::default()
    });
    let ids: Vec<String> = (0..6).map(|p| s.id_in(p)).collect();
    for id in &ids {
        q.enqueue(id, &slow, 0).await?;
    }
    let first = s.workers.start(&["--concurrency", "8"])?;
    s.workers
        .wait(Duration::from_secs(30), "6 slow jobs running", || async {
            for id in &ids {
                if q.info(id).await?.is_none_or(|i| i.status != "running") {
                    return Ok(false);
                }
            }
            Ok(true)
        })
        .await?;
    let holder = q.info(&ids[0]).await?.and_then(|i| i.worker);
    assert!(holder.is_some());
    s.workers.kill(first)?;

    s.workers.start(&["--concurrency", "8"])?;
    s.workers
        .wait(Duration::from_secs(40), "every job done", || async {
            for id in &ids {
                if q.info(id).await?.is_none_or(|i| i.status != "done") {
                    return Ok(false);
                }
            }
            Ok(true)
        })
        .await?;
    for id in &ids {
        let info = q.info(id).await?.context("kept with its result")?;
        assert_eq!(info.attempts, 2, "delivered again after its lease ran out");
        assert_ne!(info.worker, holder, "run by the other worker");
    }
    // The killed runs never finished: one run each.
    let runs = s.runs(&tally).await?;
    assert_eq!(runs.len(), ids.len());
    assert!(runs.values().all(|n| *n == 1), "{runs:?}");
    Ok(())
}
