//! `stayafrica jobs bench`: throughput of the queue with real worker
//! processes. It starts N `stayafrica worker` processes on the configured
//! queue (they inherit this process's environment), queues no-op probe jobs
//! that count their runs in a tally, waits until every job has run, checks
//! that each ran exactly once, and reports jobs per second.
//!
//! `stayafrica jobs latency`: pick-up latency of an idle worker process:
//! probes queued one at a time, each only once the worker is idle again,
//! each recording how long after its enqueue began it started.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;

use super::diagnostics::{Probe, now_us};
use super::{Job, JobQueue};

/// What to measure.
#[derive(Debug, Clone, Copy)]
pub struct BenchOptions {
    /// Probe jobs to queue.
    pub jobs: usize,
    /// `stayafrica worker` processes to start.
    pub processes: usize,
    /// Jobs each worker process runs at once.
    pub concurrency: usize,
    /// Give up after this long.
    pub timeout: Duration,
}

/// What was measured.
#[derive(Debug, Clone, Copy)]
pub struct BenchReport {
    pub jobs: usize,
    /// Time to queue every job (workers already consuming meanwhile).
    pub enqueue: Duration,
    /// From the first enqueue until the last job's run was counted.
    pub total: Duration,
}

impl BenchReport {
    /// Jobs queued, run and recorded per second, end to end.
    pub fn jobs_per_sec(&self) -> f64 {
        self.jobs as f64 / self.total.as_secs_f64().max(1e-9)
    }
}

/// Worker processes, stopped (SIGTERM, then SIGKILL) when dropped.
struct Workers(Vec<Child>);

impl Drop for Workers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
        }
        for c in &mut self.0 {
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Workers {
    /// Starts `processes` × `stayafrica worker --concurrency N`.
    fn start(processes: usize, concurrency: usize) -> anyhow::Result<Workers> {
        let exe = std::env::current_exe().context("finding the stayafrica binary")?;
        let mut workers = Workers(Vec::new());
        for _ in 0..processes.max(1) {
            let mut cmd = Command::new(&exe);
            cmd.arg("worker")
                .arg("--concurrency")
                .arg(concurrency.max(1).to_string())
                .arg("--grace-secs")
                .arg("5")
                .stdin(Stdio::null())
                .stdout(Stdio::null());
            if std::env::var_os("RUST_LOG").is_none() {
                cmd.env("RUST_LOG", "warn");
            }
            workers
                .0
                .push(cmd.spawn().context("starting a worker process")?);
        }
        Ok(workers)
    }
}

/// Runs the benchmark on `queue` (which must be the queue the spawned
/// workers see: same settings).
pub async fn run(queue: &JobQueue, opts: BenchOptions) -> anyhow::Result<BenchReport> {
    let workers = Workers::start(opts.processes, opts.concurrency)?;
    // Warm up: every process connected and polling before the clock starts.
    let warm = format!("bench-warm-{}", uuid::Uuid::new_v4().simple());
    let warm_jobs = opts.processes.max(1) * opts.concurrency.max(1) * 4;
    enqueue_all(queue, warm_jobs, &warm).await?;
    wait_for_tally(queue, &warm, warm_jobs, Duration::from_secs(60)).await?;

    let tally = format!("bench-{}", uuid::Uuid::new_v4().simple());
    let started = Instant::now();
    enqueue_all(queue, opts.jobs, &tally).await?;
    let enqueue = started.elapsed();
    let runs = wait_for_tally(queue, &tally, opts.jobs, opts.timeout).await?;
    let total = started.elapsed();
    drop(workers);
    let doubles = runs.iter().filter(|(_, n)| **n != 1).count();
    anyhow::ensure!(
        runs.len() == opts.jobs && doubles == 0,
        "{} jobs ran, {doubles} of them more than once (expected {} runs of one)",
        runs.len(),
        opts.jobs
    );
    Ok(BenchReport {
        jobs: opts.jobs,
        enqueue,
        total,
    })
}

/// Jobs per enqueue call (one script on Redis).
const ENQUEUE_CHUNK: usize = 500;

async fn enqueue_all(queue: &JobQueue, n: usize, tally: &str) -> anyhow::Result<()> {
    let chunk = vec![Job::Probe(Probe::bare(Some(tally.to_owned()))); ENQUEUE_CHUNK];
    let sizes: Vec<usize> = (0..n)
        .step_by(ENQUEUE_CHUNK)
        .map(|from| ENQUEUE_CHUNK.min(n - from))
        .collect();
    let results: Vec<anyhow::Result<Vec<String>>> = futures::stream::iter(sizes)
        .map(|k| queue.enqueue_many(&chunk[..k]))
        .buffer_unordered(4)
        .collect()
        .await;
    for r in results {
        r?;
    }
    Ok(())
}

fn tallies(queue: &JobQueue) -> anyhow::Result<&super::Tallies> {
    queue
        .tallies()
        .context("this queue has no tallies (built without diagnostics)")
}

/// Pick-up latencies measured by [`latency`].
#[derive(Debug, Clone)]
pub struct LatencyReport {
    /// Sorted, one per job.
    pub samples: Vec<Duration>,
}

impl LatencyReport {
    /// The `q` quantile (0..=1), nearest rank.
    pub fn quantile(&self, q: f64) -> Duration {
        if self.samples.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((q * self.samples.len() as f64).ceil() as usize).clamp(1, self.samples.len());
        self.samples[rank - 1]
    }
}

/// Queues `jobs` probes one at a time to one idle worker process with
/// `concurrency` slots; each job is queued only after the previous one ran
/// and the worker had `idle` to go back to waiting. With a `delay`, each job
/// is queued to run that much later, and what is measured is how late it
/// started after its due time (delayed jobs and retries).
pub async fn latency(
    queue: &JobQueue,
    jobs: usize,
    concurrency: usize,
    idle: Duration,
    delay: Duration,
) -> anyhow::Result<LatencyReport> {
    let _workers = Workers::start(1, concurrency)?;
    let tallies = tallies(queue)?;
    let warm = format!("latency-warm-{}", uuid::Uuid::new_v4().simple());
    enqueue_all(queue, 1, &warm).await?;
    wait_for_tally(queue, &warm, 1, Duration::from_secs(60)).await?;
    let tally = format!("latency-{}", uuid::Uuid::new_v4().simple());
    for _ in 0..jobs {
        tokio::time::sleep(idle).await;
        let delay_us = i64::try_from(delay.as_micros()).unwrap_or(i64::MAX);
        let due_us = now_us().saturating_add(delay_us);
        let job = Job::Probe(Probe {
            tally: Some(tally.clone()),
            queued_at_us: Some(due_us),
            ..Probe::default()
        });
        let id = if delay.is_zero() {
            queue.enqueue(&job).await?
        } else {
            queue.enqueue_at(&job, (due_us + 999) / 1000).await?
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !tallies.runs(&tally).await?.contains_key(&id) {
            anyhow::ensure!(
                Instant::now() < deadline,
                "job {id} did not run within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    let mut samples: Vec<Duration> = tallies
        .pickups(&tally)
        .await?
        .into_values()
        .map(|us| Duration::from_micros(u64::try_from(us).unwrap_or(0)))
        .collect();
    anyhow::ensure!(
        samples.len() == jobs,
        "{} of {jobs} pick-up times recorded",
        samples.len()
    );
    samples.sort();
    Ok(LatencyReport { samples })
}

/// Waits until the queue is empty (every job queued before the call has
/// run), then reads the tally. Polls the cheap counts, not the tally.
async fn wait_for_tally(
    queue: &JobQueue,
    tally: &str,
    n: usize,
    timeout: Duration,
) -> anyhow::Result<std::collections::BTreeMap<String, i64>> {
    let deadline = Instant::now() + timeout;
    loop {
        let c = queue.backend().counts().await?;
        if c.queued == 0 && c.running == 0 {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{} jobs still queued and {} running after {timeout:?}",
            c.queued,
            c.running
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let runs = tallies(queue)?.runs(tally).await?;
    anyhow::ensure!(
        runs.len() >= n,
        "the queue is empty but only {} of {n} jobs ran",
        runs.len()
    );
    Ok(runs)
}
