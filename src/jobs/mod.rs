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
pub mod redis;
pub mod sql;
pub mod worker;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

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
    /// Diagnostics, tests and benchmarks: sleeps, records its run under
    /// `tally` (so that a double execution is visible), then succeeds or
    /// fails. The optional fields make delivery tests fast: a short lease
    /// (`timeout_ms`) and a short retry backoff (`backoff_ms`).
    Probe {
        fail: bool,
        sleep_ms: u64,
        /// Lease timeout instead of the default (`sleep_ms / 2 + 5 s`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout_ms: Option<u64>,
        /// Base of the retry backoff instead of 1 s.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        backoff_ms: Option<u64>,
        /// Name of the tally that counts this job's runs
        /// ([`QueueBackend::tally_run`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tally: Option<String>,
    },
}

impl Job {
    /// A probe that succeeds at once (the no-op job of tests and benchmarks).
    pub fn noop_probe(tally: Option<String>) -> Job {
        Job::Probe {
            fail: false,
            sleep_ms: 0,
            timeout_ms: None,
            backoff_ms: None,
            tally,
        }
    }

    /// The stable name stored with the job (logs, metrics, `jobs dead`).
    pub fn name(&self) -> &'static str {
        match self {
            Job::SendOtp { .. } => "send_otp",
            Job::BookingConfirmation { .. } => "booking_confirmation",
            Job::FlushViews => "flush_views",
            Job::Probe { .. } => "probe",
        }
    }

    /// Deliveries before the job is dead.
    pub fn max_attempts(&self) -> u32 {
        match self {
            Job::SendOtp { .. } | Job::BookingConfirmation { .. } => 5,
            Job::FlushViews | Job::Probe { .. } => 3,
        }
    }

    /// How long a delivery may go without its worker extending the lease
    /// before another worker gets the job.
    pub fn timeout(&self) -> Duration {
        match self {
            Job::SendOtp { .. } | Job::BookingConfirmation { .. } => Duration::from_secs(30),
            Job::FlushViews => Duration::from_secs(60),
            Job::Probe {
                timeout_ms: Some(t),
                ..
            } => Duration::from_millis(*t),
            Job::Probe { sleep_ms, .. } => Duration::from_millis(sleep_ms / 2 + 5_000),
        }
    }

    /// First retry delay; it doubles with each failed attempt (see
    /// [`worker::backoff_ms`]).
    pub fn backoff_base(&self) -> Duration {
        match self {
            Job::Probe {
                backoff_ms: Some(b),
                ..
            } => Duration::from_millis(*b),
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

/// Storage of the queue: [`sql::SqlQueue`] (embedded) and
/// [`redis::RedisQueue`] implement it and pass one behaviour suite
/// (`tests/api/jobs_suite.rs`). Every operation on a held job checks that the
/// caller still holds the lease, so a worker whose lease ran out cannot
/// overwrite the outcome of the delivery that replaced it.
#[async_trait]
pub trait QueueBackend: Send + Sync + 'static {
    /// Queues a job to run at `run_at_ms` (Unix ms; now or earlier = at once).
    async fn enqueue(&self, id: &str, job: &Job, run_at_ms: i64) -> anyhow::Result<()>;
    /// Leases the next due job to `worker_id` for the job's own timeout,
    /// counting one attempt. Jobs whose lease ran out come back first (or go
    /// dead if that was their last attempt).
    async fn reserve(&self, worker_id: &str) -> anyhow::Result<Option<Leased>>;
    /// Extends a lease; false when the worker no longer holds the job.
    async fn extend(&self, id: &str, worker_id: &str, timeout: Duration) -> anyhow::Result<bool>;
    /// Records success and its result (kept for the result TTL); false when
    /// the worker no longer holds the job (nothing changed).
    async fn complete(
        &self,
        id: &str,
        worker_id: &str,
        result: Option<&str>,
    ) -> anyhow::Result<bool>;
    /// Back to the queue at `retry_at_ms`, or dead when `None`; false when
    /// the worker no longer holds the job (nothing changed).
    async fn fail(
        &self,
        id: &str,
        worker_id: &str,
        error: &str,
        retry_at_ms: Option<i64>,
    ) -> anyhow::Result<bool>;
    /// Gives a held job back, due at once, without using up an attempt (a
    /// worker shutting down before the job finished); false if not held.
    async fn release(&self, id: &str, worker_id: &str) -> anyhow::Result<bool>;
    /// Status of one job; `None` if unknown (or finished longer ago than the
    /// result TTL).
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
    /// Diagnostics: counts one run of `member` (a job id) under `tally`.
    /// Probe jobs call it so that tests and the benchmark can prove that
    /// each job ran exactly once.
    async fn tally_run(&self, tally: &str, member: &str) -> anyhow::Result<()>;
    /// Runs counted under `tally`, by member.
    async fn tally(&self, tally: &str) -> anyhow::Result<BTreeMap<String, i64>>;
}

/// The queue handle the API and CLI use.
#[derive(Clone)]
pub struct JobQueue {
    backend: Arc<dyn QueueBackend>,
}

impl JobQueue {
    /// A queue on `backend`.
    pub fn new(backend: Arc<dyn QueueBackend>) -> Self {
        JobQueue { backend }
    }

    /// The storage, for workers and operator commands.
    pub fn backend(&self) -> &Arc<dyn QueueBackend> {
        &self.backend
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
}
