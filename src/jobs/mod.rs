//! Background jobs (the guide's Celery role): typed [`Job`]s, a
//! [`QueueBackend`] that delivers each at least once (in the database for the
//! embedded default, [`sql`], or in Redis, [`redis`]), the [`worker`] that
//! runs them, and a throughput [`bench`] with real worker processes.
//!
//! Delivery: a worker reserves a job under a lease as long as that job's
//! own timeout; the worker extends the lease while the job runs; a worker
//! that dies stops extending it and the job is delivered again once the
//! lease runs out. Failures retry with exponential backoff and jitter, then
//! the job is dead (kept with its last error, replayable). Handlers are
//! idempotent, because a job can run more than once.

pub mod bench;
pub mod diagnostics;
pub mod record;
pub mod redis;
pub mod sql;
pub mod wake;
pub mod worker;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub use diagnostics::{Probe, Tallies};

/// Every job the service runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", content = "payload", rename_all = "snake_case")]
pub enum Job {
    /// Issue a one-time login code to `email` if it is registered, and mail
    /// it. The code is made here, so the queue never holds it. `request`
    /// names the request (a random id) so that a redelivery of the same job
    /// does not mail a second code (which would void the first).
    SendOtp {
        email: String,
        #[serde(default)]
        request: String,
    },
    /// Mail the guest the confirmation of a booking.
    BookingConfirmation { booking_id: i64 },
    /// Move counted property views into the database.
    FlushViews,
    /// Diagnostics, tests and benchmarks (see [`diagnostics`]).
    Probe(Probe),
}

impl Job {
    /// A probe that succeeds at once (the no-op job of tests and benchmarks).
    pub fn noop_probe(tally: Option<String>) -> Job {
        Job::Probe(Probe::noop(tally))
    }

    /// The stable name stored with the job (logs, metrics, `jobs dead`).
    pub fn name(&self) -> &'static str {
        match self {
            Job::SendOtp { .. } => "send_otp",
            Job::BookingConfirmation { .. } => "booking_confirmation",
            Job::FlushViews => "flush_views",
            Job::Probe(_) => "probe",
        }
    }

    /// Deliveries before the job is dead.
    pub fn max_attempts(&self) -> u32 {
        match self {
            Job::SendOtp { .. } | Job::BookingConfirmation { .. } => 5,
            Job::FlushViews | Job::Probe(_) => 3,
        }
    }

    /// How long a delivery may go without its worker extending the lease
    /// before another worker gets the job.
    pub fn timeout(&self) -> Duration {
        match self {
            Job::SendOtp { .. } | Job::BookingConfirmation { .. } => Duration::from_secs(30),
            Job::FlushViews => Duration::from_secs(60),
            Job::Probe(p) => p.timeout(),
        }
    }

    /// First retry delay; it doubles with each failed attempt (see
    /// [`worker::backoff_ms`]).
    pub fn backoff_base(&self) -> Duration {
        match self {
            Job::Probe(p) => p.backoff_base(),
            _ => Duration::from_secs(1),
        }
    }
}

/// A job as queued: id, kind and delivery bookkeeping.
#[derive(Debug, Clone)]
pub struct Leased {
    /// The job's id (from [`JobQueue::enqueue`]).
    pub id: String,
    /// `Err` when the payload no longer decodes (it goes dead at once).
    pub job: Result<Job, String>,
    /// This delivery's number, from 1.
    pub attempt: u32,
    /// Deliveries before the job is dead.
    pub max_attempts: u32,
    /// The lease: how long the job may go without [`QueueBackend::extend`].
    pub timeout: Duration,
}

/// Status of a job as operators and tests read it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobInfo {
    pub id: String,
    pub name: String,
    /// `queued` (due now or waiting for a retry), `running`, `done` or `dead`.
    pub status: String,
    /// Deliveries so far (reset by a replay).
    pub attempts: u32,
    pub last_error: Option<String>,
    pub result: Option<String>,
    /// The worker that holds (or last held) the job.
    pub worker: Option<String>,
}

/// Queue depth by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct QueueCounts {
    /// Waiting: due now or scheduled (retries, delayed jobs).
    pub queued: i64,
    /// Leased to a worker (including leases that ran out and are not yet
    /// taken back).
    pub running: i64,
    /// Out of attempts; kept until replayed.
    pub dead: i64,
}

/// How a delivery ended, as the worker reports it to the queue.
#[derive(Debug, Clone, PartialEq)]
pub enum Settle {
    /// Success, with the result to keep for the result TTL (a job done
    /// without a result is not kept at all).
    Done(Option<String>),
    /// Failed; queued again at `at_ms` (Unix ms).
    Retry { error: String, at_ms: i64 },
    /// Failed for the last time: dead, kept with its error until replayed.
    Dead(String),
    /// Given back unfinished (the worker is stopping), due at once, without
    /// using up an attempt.
    Release,
}

/// The outcome of one held job, for [`QueueBackend::exchange`].
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The job's id.
    pub id: String,
    /// How it ended.
    pub settle: Settle,
}

/// What one [`QueueBackend::exchange`] did.
#[derive(Debug, Clone, Default)]
pub struct Exchanged {
    /// Per outcome, in order: false when the worker no longer held the job
    /// (its lease ran out and another delivery decides; nothing changed).
    pub held: Vec<bool>,
    /// The jobs now leased to the worker (at most the number asked for).
    pub leased: Vec<Leased>,
    /// How long until the next job is due (a delayed job or retry, or a
    /// lease that may run out), when none was left to lease now; `None`
    /// when nothing is waiting. Workers sleep this long at most.
    pub next_due: Option<Duration>,
}

/// Storage of the queue: [`sql::SqlQueue`] (embedded) and
/// [`redis::RedisQueue`] implement it and pass one behaviour suite
/// (`tests/api/jobs_suite.rs`). Every operation on a held job checks that the
/// caller still holds the lease, so a worker whose lease ran out cannot
/// overwrite the outcome of the delivery that replaced it.
///
/// The hot path is [`QueueBackend::exchange`]: a worker process records the
/// outcomes of the jobs its slots finished and leases the next batch in one
/// step (one round trip on Redis), and, when idle, waits in
/// [`QueueBackend::wait_for_work`] (one blocking command per process, or an
/// in-process wake-up) instead of polling per slot.
#[async_trait]
pub trait QueueBackend: Send + Sync + 'static {
    /// Queues jobs, each `(id, job, run_at_ms)` (Unix ms; now or earlier =
    /// at once), and wakes a waiting worker. Fails (queueing none of the
    /// batch on Redis) if an id exists already.
    async fn enqueue_many(&self, jobs: &[(String, Job, i64)]) -> anyhow::Result<()>;
    /// Records `outcomes` of jobs `worker_id` holds, then leases up to
    /// `want` due jobs to it, each for its own timeout and counting one
    /// attempt. Delayed jobs that are due and leases that ran out come back
    /// first (a lease that ran out on its last attempt is dead).
    async fn exchange(
        &self,
        worker_id: &str,
        outcomes: &[Outcome],
        want: usize,
    ) -> anyhow::Result<Exchanged>;
    /// Waits until a job may have been queued (an enqueue wakes it) or
    /// `timeout` passed. Only one caller per process is expected (the
    /// worker's dispatcher); dropping the future is safe.
    async fn wait_for_work(&self, timeout: Duration) -> anyhow::Result<()>;
    /// Extends a lease; false when the worker no longer holds the job.
    async fn extend(&self, id: &str, worker_id: &str, timeout: Duration) -> anyhow::Result<bool>;
    /// Status of one job; `None` if unknown, finished without a result
    /// (nothing is kept of those), or finished longer ago than the result
    /// TTL.
    async fn info(&self, id: &str) -> anyhow::Result<Option<JobInfo>>;
    /// Dead jobs, most recently dead first.
    async fn dead(&self, limit: usize) -> anyhow::Result<Vec<JobInfo>>;
    /// Queues a dead job again with fresh attempts; false if it is not dead.
    async fn replay(&self, id: &str) -> anyhow::Result<bool>;
    /// True for exactly one caller per (name, slot).
    async fn claim_periodic(&self, name: &str, slot: i64, period: Duration)
    -> anyhow::Result<bool>;
    /// Queue depth by state (health check, metrics, operators).
    async fn counts(&self) -> anyhow::Result<QueueCounts>;
    /// Housekeeping: drops results older than their TTL.
    async fn purge(&self, result_ttl: Duration) -> anyhow::Result<()>;

    // Single-job forms of the above, for operators and tests.

    /// Queues one job to run at `run_at_ms` (Unix ms; now or earlier = at once).
    async fn enqueue(&self, id: &str, job: &Job, run_at_ms: i64) -> anyhow::Result<()> {
        self.enqueue_many(&[(id.to_owned(), job.clone(), run_at_ms)])
            .await
    }
    /// Leases the next due job to `worker_id` ([`QueueBackend::exchange`]
    /// with no outcome and one wanted).
    async fn reserve(&self, worker_id: &str) -> anyhow::Result<Option<Leased>> {
        Ok(self.exchange(worker_id, &[], 1).await?.leased.pop())
    }
    /// Records one outcome; false when the worker no longer holds the job.
    async fn settle(&self, id: &str, worker_id: &str, settle: Settle) -> anyhow::Result<bool> {
        let outcome = Outcome {
            id: id.to_owned(),
            settle,
        };
        let done = self.exchange(worker_id, &[outcome], 0).await?;
        Ok(done.held.first().copied().unwrap_or(false))
    }
    /// Records success and its result (kept for the result TTL).
    async fn complete(
        &self,
        id: &str,
        worker_id: &str,
        result: Option<&str>,
    ) -> anyhow::Result<bool> {
        self.settle(id, worker_id, Settle::Done(result.map(str::to_owned)))
            .await
    }
    /// Back to the queue at `retry_at_ms`, or dead when `None`.
    async fn fail(
        &self,
        id: &str,
        worker_id: &str,
        error: &str,
        retry_at_ms: Option<i64>,
    ) -> anyhow::Result<bool> {
        let error = error.to_owned();
        let settle = match retry_at_ms {
            Some(at_ms) => Settle::Retry { error, at_ms },
            None => Settle::Dead(error),
        };
        self.settle(id, worker_id, settle).await
    }
    /// Gives a held job back, due at once, without using up an attempt.
    async fn release(&self, id: &str, worker_id: &str) -> anyhow::Result<bool> {
        self.settle(id, worker_id, Settle::Release).await
    }
}

/// The queue handle the API and CLI use.
#[derive(Clone)]
pub struct JobQueue {
    backend: Arc<dyn QueueBackend>,
    tallies: Option<Tallies>,
}

impl JobQueue {
    /// A queue on `backend`.
    pub fn new(backend: Arc<dyn QueueBackend>) -> Self {
        JobQueue {
            backend,
            tallies: None,
        }
    }

    /// Where probe jobs count their runs (diagnostics, tests, benchmarks).
    pub fn with_tallies(mut self, tallies: Tallies) -> Self {
        self.tallies = Some(tallies);
        self
    }

    /// The storage, for workers and operator commands.
    pub fn backend(&self) -> &Arc<dyn QueueBackend> {
        &self.backend
    }

    /// The probes' tallies, if this queue has them.
    pub fn tallies(&self) -> Option<&Tallies> {
        self.tallies.as_ref()
    }

    /// Queues `job` to run now; returns its id.
    pub async fn enqueue(&self, job: &Job) -> anyhow::Result<String> {
        self.enqueue_at(job, 0).await
    }

    /// Queues `job` to run at `run_at_ms` (Unix ms).
    pub async fn enqueue_at(&self, job: &Job, run_at_ms: i64) -> anyhow::Result<String> {
        let id = uuid::Uuid::new_v4().to_string();
        self.backend.enqueue(&id, job, run_at_ms).await?;
        metrics::counter!("jobs_enqueued_total", "job" => job.name()).increment(1);
        Ok(id)
    }

    /// Queues every job of `jobs` to run now, in one step where the storage
    /// allows; returns their ids in order.
    pub async fn enqueue_many(&self, jobs: &[Job]) -> anyhow::Result<Vec<String>> {
        let batch: Vec<(String, Job, i64)> = jobs
            .iter()
            .map(|j| (uuid::Uuid::new_v4().to_string(), j.clone(), 0))
            .collect();
        self.backend.enqueue_many(&batch).await?;
        // One increment per job name, not one registration per job.
        let mut names: Vec<(&'static str, u64)> = Vec::new();
        for j in jobs {
            match names.iter_mut().find(|(n, _)| *n == j.name()) {
                Some((_, k)) => *k += 1,
                None => names.push((j.name(), 1)),
            }
        }
        for (name, k) in names {
            metrics::counter!("jobs_enqueued_total", "job" => name).increment(k);
        }
        Ok(batch.into_iter().map(|(id, _, _)| id).collect())
    }
}
