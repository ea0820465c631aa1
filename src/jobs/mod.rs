//! Background jobs (the guide's Celery role): typed [`Job`]s, a
//! [`QueueBackend`] that delivers each at least once (in the database for the
//! embedded default, or in Redis), and the [`worker`] that runs them.
//!
//! Delivery: a worker reserves a job under a lease as long as that job's
//! own timeout; the worker extends the lease while the job runs; a worker
//! that dies stops extending it and the job is delivered again once the
//! lease runs out. Failures retry with exponential backoff and jitter, then
//! the job is dead (kept with its last error, replayable). Handlers are
//! idempotent, because a job can run more than once.

pub mod sql;
pub mod worker;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// Every job the service runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", content = "payload", rename_all = "snake_case")]
pub enum Job {
    /// Issue a one-time login code to `email` if it is registered, and mail
    /// it. The code is made here, so the queue never holds it.
    SendOtp { email: String },
    /// Mail the guest the confirmation of a booking.
    BookingConfirmation { booking_id: i64 },
    /// Move counted property views into the database.
    FlushViews,
    /// Diagnostics and benchmarks: sleeps, then succeeds or fails.
    Probe { fail: bool, sleep_ms: u64 },
}

impl Job {
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
            Job::Probe { sleep_ms, .. } => Duration::from_millis(sleep_ms / 2 + 5_000),
        }
    }
}

/// A job as queued: id, kind and delivery bookkeeping.
#[derive(Debug, Clone)]
pub struct Leased {
    pub id: String,
    /// `Err` when the payload no longer decodes (it goes dead at once).
    pub job: Result<Job, String>,
    pub attempt: u32,
    pub max_attempts: u32,
    pub timeout: Duration,
}

/// Status of a job as operators and tests read it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobInfo {
    pub id: String,
    pub name: String,
    pub status: String,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub result: Option<String>,
}

/// Queue depth by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct QueueCounts {
    pub queued: i64,
    pub running: i64,
    pub dead: i64,
}

/// Storage of the queue.
#[async_trait]
pub trait QueueBackend: Send + Sync + 'static {
    /// Queues a job to run at `run_at_ms` (Unix ms; now or earlier = at once).
    async fn enqueue(&self, id: &str, job: &Job, run_at_ms: i64) -> anyhow::Result<()>;
    /// Leases the next due job to `worker_id`.
    async fn reserve(&self, worker_id: &str) -> anyhow::Result<Option<Leased>>;
    /// Extends a lease; false when the worker no longer holds the job.
    async fn extend(&self, id: &str, worker_id: &str, timeout: Duration) -> anyhow::Result<bool>;
    async fn complete(&self, id: &str, worker_id: &str, result: Option<&str>)
    -> anyhow::Result<()>;
    /// Back to the queue at `retry_at_ms`, or dead when `None`.
    async fn fail(
        &self,
        id: &str,
        worker_id: &str,
        error: &str,
        retry_at_ms: Option<i64>,
    ) -> anyhow::Result<()>;
    async fn info(&self, id: &str) -> anyhow::Result<Option<JobInfo>>;
    async fn dead(&self, limit: usize) -> anyhow::Result<Vec<JobInfo>>;
    /// Queues a dead job again with fresh attempts; false if it is not dead.
    async fn replay(&self, id: &str) -> anyhow::Result<bool>;
    /// True for exactly one caller per (name, slot).
    async fn claim_periodic(&self, name: &str, slot: i64, period: Duration)
    -> anyhow::Result<bool>;
    async fn counts(&self) -> anyhow::Result<QueueCounts>;
    /// Housekeeping: drops results older than their TTL.
    async fn purge(&self, result_ttl: Duration) -> anyhow::Result<()>;
}

/// The queue handle the API and CLI use.
#[derive(Clone)]
pub struct JobQueue {
    backend: Arc<dyn QueueBackend>,
}

impl JobQueue {
    pub fn new(backend: Arc<dyn QueueBackend>) -> Self {
        JobQueue { backend }
    }

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
