//! The worker: reserves jobs, runs their handlers with the lease kept alive,
//! records results, retries failures with exponential backoff and jitter,
//! schedules periodic jobs once per period across all workers, and shuts
//! down gracefully (no new jobs; running ones finish within a grace period
//! or are given back to the queue).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use rand::{Rng, TryRngCore};
use tokio::sync::watch;
use tracing::Instrument;

use super::{Job, JobQueue, Leased};
use crate::cache::{Cache, PROPERTIES_NS};
use crate::db::{Db, now_ms};
use crate::domain::Email;
use crate::email::{self, Mailer};

/// What job handlers may use.
pub struct JobContext {
    pub db: Db,
    pub cache: Cache,
    pub mailer: Mailer,
    /// Lifetime of the one-time codes that `SendOtp` issues.
    pub otp_ttl: Duration,
    /// Period of the `FlushViews` job.
    pub view_flush_interval: Duration,
}

/// One worker process's job runner (any number of concurrent slots).
#[derive(Clone)]
pub struct Worker {
    queue: JobQueue,
    ctx: Arc<JobContext>,
    id: String,
    grace: Duration,
}

/// How long finished jobs' results are kept.
pub const RESULT_TTL: Duration = Duration::from_secs(24 * 3600);

/// How long a stopping worker lets running jobs finish before it gives them
/// back to the queue.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(30);

/// Longest pause between two polls of an empty queue.
const MAX_IDLE: Duration = Duration::from_millis(400);

impl Worker {
    /// A worker on `queue` with a fresh id.
    pub fn new(queue: JobQueue, ctx: Arc<JobContext>) -> Self {
        // Unique per process and start: a restarted worker never inherits the
        // leases of the process it replaces.
        let id = format!(
            "w-{}-{}",
            std::process::id(),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        Worker {
            queue,
            ctx,
            id,
            grace: DEFAULT_GRACE,
        }
    }

    /// Sets how long [`Worker::run`] lets running jobs finish at shutdown.
    pub fn with_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// This worker's id (lease owner in the queue, and in its logs).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Runs one due job if there is one; `Ok(true)` if a job was handled
    /// (whatever its outcome). Tests drain the queue with it.
    pub async fn try_execute_one(&self) -> anyhow::Result<bool> {
        self.execute_one(None).await
    }

    /// [`Worker::try_execute_one`], giving the job back to the queue as soon
    /// as `release` turns true (the grace period of a shutdown is over).
    async fn execute_one(&self, release: Option<watch::Receiver<bool>>) -> anyhow::Result<bool> {
        let backend = self.queue.backend();
        let Some(lease) = backend.reserve(&self.id).await? else {
            return Ok(false);
        };
        let job = match &lease.job {
            Ok(job) => job.clone(),
            Err(e) => {
                tracing::error!(job_id = %lease.id, error = %e, "undecodable job payload; dead");
                let error = format!("undecodable payload: {e}");
                self.settle(&lease, || backend.fail(&lease.id, &self.id, &error, None))
                    .await?;
                return Ok(true);
            }
        };
        let name = job.name();
        let span =
            tracing::info_span!("job", job_id = %lease.id, job = name, attempt = lease.attempt);
        async {
            tracing::info!("job started");
            let started = Instant::now();
            // The lease is kept alive until the outcome is recorded, so that
            // a slow write of the outcome cannot let the job be redelivered.
            let keep_alive = self.keep_alive(&lease);
            let outcome = match release {
                None => Some(self.handle(&lease.id, &job).await),
                Some(mut release) => tokio::select! {
                    outcome = self.handle(&lease.id, &job) => Some(outcome),
                    _ = async {
                        if release.wait_for(|r| *r).await.is_err() {
                            std::future::pending::<()>().await;
                        }
                    } => None,
                },
            };
            metrics::histogram!("job_duration_seconds", "job" => name)
                .record(started.elapsed().as_secs_f64());
            let recorded = match outcome {
                None => {
                    let held = self
                        .settle(&lease, || backend.release(&lease.id, &self.id))
                        .await;
                    tracing::warn!("worker stopping: job given back to the queue unfinished");
                    held
                }
                Some(Ok(result)) => {
                    let held = self
                        .settle(&lease, || {
                            backend.complete(&lease.id, &self.id, result.as_deref())
                        })
                        .await;
                    metrics::counter!("jobs_completed_total", "job" => name).increment(1);
                    tracing::info!(
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "job done"
                    );
                    held
                }
                Some(Err(e)) => {
                    let error = format!("{e:#}");
                    if lease.attempt >= lease.max_attempts {
                        let held = self
                            .settle(&lease, || backend.fail(&lease.id, &self.id, &error, None))
                            .await;
                        metrics::counter!("jobs_dead_total", "job" => name).increment(1);
                        tracing::error!(error, "job failed for the last time; dead");
                        held
                    } else {
                        let retry_at = now_ms() + backoff_ms(lease.attempt, job.backoff_base());
                        let held = self
                            .settle(&lease, || {
                                backend.fail(&lease.id, &self.id, &error, Some(retry_at))
                            })
                            .await;
                        metrics::counter!("jobs_retried_total", "job" => name).increment(1);
                        tracing::warn!(error, "job failed; will retry");
                        held
                    }
                }
            };
            keep_alive.abort();
            if !recorded? {
                tracing::warn!(
                    "lease lost before the outcome was recorded; the job's other delivery decides"
                );
            }
            anyhow::Ok(())
        }
        .instrument(span)
        .await?;
        Ok(true)
    }

    /// Extends the lease every third of its timeout until aborted.
    fn keep_alive(&self, lease: &Leased) -> tokio::task::JoinHandle<()> {
        let (backend, id, worker, timeout) = (
            self.queue.backend().clone(),
            lease.id.clone(),
            self.id.clone(),
            lease.timeout,
        );
        tokio::spawn(
            async move {
                loop {
                    tokio::time::sleep(timeout / 3).await;
                    match backend.extend(&id, &worker, timeout).await {
                        Ok(true) => {}
                        Ok(false) => break,
                        Err(e) => {
                            tracing::warn!(error = format!("{e:#}"), "lease extension failed")
                        }
                    }
                }
            }
            .in_current_span(),
        )
    }

    /// Records an outcome, retrying while the queue is briefly unreachable
    /// (the lease is still extended meanwhile). Gives up after the lease's
    /// timeout: the job is then delivered again (at least once).
    async fn settle<F, Fut>(&self, lease: &Leased, record: F) -> anyhow::Result<bool>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = anyhow::Result<bool>>,
    {
        let started = Instant::now();
        let mut pause = Duration::from_millis(50);
        loop {
            match record().await {
                Ok(held) => return Ok(held),
                Err(e) if started.elapsed() < lease.timeout.max(Duration::from_secs(5)) => {
                    tracing::warn!(
                        error = format!("{e:#}"),
                        "recording the outcome failed; retrying"
                    );
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
                Err(e) => return Err(e.context("recording the job's outcome")),
            }
        }
    }

    async fn handle(&self, id: &str, job: &Job) -> anyhow::Result<Option<String>> {
        let ctx = &self.ctx;
        match job {
            Job::SendOtp { email, request } => {
                let email = Email::parse(email).map_err(|e| anyhow::anyhow!("bad email: {e}"))?;
                // Unknown addresses get nothing; the API answered 202 either way.
                if ctx.db.user_by_email(&email).await?.is_none() {
                    return Ok(None);
                }
                let sent_marker = format!("otp-sent:{request}");
                if !request.is_empty()
                    && ctx
                        .cache
                        .store()
                        .get(&ctx.cache.keys().temporary(&sent_marker))
                        .await?
                        .is_some()
                {
                    return Ok(Some("already sent".into()));
                }
                let code = format!(
                    "{:06}",
                    rand::rngs::OsRng.unwrap_err().random_range(0..1_000_000u32)
                );
                ctx.cache
                    .otp_put(&email, &code, ctx.otp_ttl)
                    .await
                    .context("storing the code")?;
                let minutes = ctx.otp_ttl.as_secs().div_ceil(60);
                ctx.mailer
                    .send(&email::Email {
                        to: email.to_string(),
                        subject: "Your StayAfrica sign-in code".into(),
                        body: format!(
                            "Your sign-in code is {code}. It is valid for {minutes} minutes and can be used once."
                        ),
                    })
                    .await?;
                // Best effort: failing the job now would mail yet another code.
                if !request.is_empty()
                    && let Err(e) = ctx
                        .cache
                        .set_temporary(&sent_marker, &true, ctx.otp_ttl)
                        .await
                {
                    tracing::warn!(
                        error = format!("{e:#}"),
                        "one-time code sent but not marked"
                    );
                }
                Ok(None)
            }
            Job::BookingConfirmation { booking_id } => {
                let Some(b) = ctx.db.booking(*booking_id).await? else {
                    return Ok(Some("booking no longer exists".into()));
                };
                // Idempotent: a redelivered job (its worker died, or recording
                // the result failed) does not mail the guest again. Only a crash
                // between sending and marking can still send twice.
                if ctx.db.confirmation_sent(b.id).await? {
                    return Ok(Some("already sent".into()));
                }
                let guest = ctx
                    .db
                    .user_by_id(b.guest_id)
                    .await?
                    .context("guest missing")?;
                ctx.mailer
                    .send(&email::Email {
                        to: guest.email,
                        subject: format!("Booking #{} confirmed", b.id),
                        body: format!(
                            "Hello {}, your stay at property #{} from {} to {} for {} guest(s) is confirmed. Total: {}.",
                            guest.full_name, b.property_id, b.check_in, b.check_out, b.guests, b.total_price
                        ),
                    })
                    .await?;
                ctx.db
                    .mark_confirmation_sent(b.id, time::OffsetDateTime::now_utc())
                    .await?;
                Ok(None)
            }
            Job::FlushViews => {
                let flushed = flush_views(&ctx.db, &ctx.cache).await?;
                Ok(Some(format!("{{\"views_flushed\":{flushed}}}")))
            }
            Job::Probe {
                fail,
                sleep_ms,
                tally,
                ..
            } => {
                tokio::time::sleep(Duration::from_millis(*sleep_ms)).await;
                if let Some(tally) = tally {
                    self.queue
                        .backend()
                        .tally_run(tally, id)
                        .await
                        .context("counting the probe's run")?;
                }
                if *fail {
                    anyhow::bail!("probe job asked to fail");
                }
                Ok(Some("{\"probe\":\"ok\"}".into()))
            }
        }
    }

    /// Runs `concurrency` job slots plus the periodic scheduler until
    /// `shutdown` turns true (or its sender is dropped); then stops taking
    /// jobs, lets running ones finish for the grace period, and gives the
    /// ones still running back to the queue.
    pub async fn run(self, concurrency: usize, mut shutdown: watch::Receiver<bool>) {
        tracing::info!(worker_id = %self.id, concurrency, "worker started");
        let (release_tx, release_rx) = watch::channel(false);
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..concurrency.max(1) {
            let (me, mut stop, release) = (self.clone(), shutdown.clone(), release_rx.clone());
            tasks.spawn(async move {
                let mut idle = Duration::ZERO;
                while !*stop.borrow() {
                    match me.execute_one(Some(release.clone())).await {
                        Ok(true) => {
                            idle = Duration::ZERO;
                            continue;
                        }
                        Ok(false) => {
                            idle = (idle * 2).clamp(Duration::from_millis(25), MAX_IDLE);
                        }
                        Err(e) => {
                            tracing::warn!(error = format!("{e:#}"), "queue unavailable");
                            idle = Duration::from_secs(1);
                        }
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(idle) => {}
                        // A dropped sender means stop too (never spin on it).
                        changed = stop.changed() => if changed.is_err() { break },
                    }
                }
            });
        }
        let sched = self.clone();
        let mut stop = shutdown.clone();
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            let mut last_purge = Instant::now();
            while !*stop.borrow() {
                tokio::select! {
                    _ = tick.tick() => {}
                    changed = stop.changed() => {
                        if changed.is_err() {
                            break;
                        }
                        continue;
                    }
                }
                if let Err(e) = sched.schedule_periodic().await {
                    tracing::warn!(error = format!("{e:#}"), "periodic scheduling failed");
                }
                if last_purge.elapsed() > Duration::from_secs(600) {
                    last_purge = Instant::now();
                    let _ = sched.queue.backend().purge(RESULT_TTL).await;
                    let _ = sched.ctx.db.session_purge_expired().await;
                }
            }
        });
        let _ = shutdown.wait_for(|stop| *stop).await;
        tracing::info!(worker_id = %self.id, grace_secs = self.grace.as_secs_f64(),
            "worker stopping: taking no new jobs, letting running ones finish");
        let drain = async { while tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(self.grace, drain).await.is_err() {
            tracing::warn!(worker_id = %self.id, "grace period over; giving unfinished jobs back");
            let _ = release_tx.send(true);
            while tasks.join_next().await.is_some() {}
        }
        tracing::info!(worker_id = %self.id, "worker stopped");
    }

    /// Queues the periodic jobs whose period has begun, once across workers.
    pub async fn schedule_periodic(&self) -> anyhow::Result<()> {
        let period = self.ctx.view_flush_interval;
        let secs = i64::try_from(period.as_secs().max(1)).unwrap_or(60);
        let slot = now_ms() / 1000 / secs;
        if self
            .queue
            .backend()
            .claim_periodic("flush_views", slot, period)
            .await?
        {
            self.queue.enqueue(&Job::FlushViews).await?;
        }
        Ok(())
    }
}

/// Retry delay after `attempt` failures: `base` doubling, capped at 5 min,
/// plus up to 50 % jitter so that retries of many jobs do not stampede.
pub fn backoff_ms(attempt: u32, base: Duration) -> i64 {
    let base_ms = i64::try_from(base.as_millis()).unwrap_or(1_000).max(1);
    let delay = base_ms
        .saturating_mul(1 << attempt.saturating_sub(1).min(20))
        .min(300_000);
    delay + rand::rng().random_range(0..=delay / 2)
}

/// Moves pending view counts into the database; returns the views moved.
/// A batch is acknowledged only after the database has it, and the database
/// applies each batch id once, so a crash anywhere loses and doubles nothing.
pub async fn flush_views(db: &Db, cache: &Cache) -> anyhow::Result<i64> {
    let store = cache.store();
    let mut total = 0;
    for _ in 0..100 {
        let Some(batch) = store.views_take().await? else {
            break;
        };
        db.apply_view_deltas(&batch.flush_id, &batch.deltas).await?;
        store.views_ack(&batch.flush_id).await?;
        total += batch.deltas.iter().map(|(_, d)| d).sum::<i64>();
        // Cached details hold the stored count: drop them so the detail shows
        // the new stored count, not the old one without the pending views.
        if let Some(generation) = cache.generation(PROPERTIES_NS).await {
            let keys: Vec<String> = batch
                .deltas
                .iter()
                .map(|(id, _)| cache.keys().property_detail(generation, *id))
                .collect();
            let _ = store.delete(&keys).await;
        }
    }
    Ok(total)
}
