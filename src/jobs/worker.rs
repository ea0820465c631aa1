//! The worker: reserves jobs, runs their handlers with the lease kept alive,
//! records results, retries failures with exponential backoff and jitter,
//! schedules periodic jobs once per period across all workers.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rand::{Rng, TryRngCore};
use tokio::sync::watch;
use tracing::Instrument;

use super::{Job, JobQueue};
use crate::cache::{Cache, PROPERTIES_NS};
use crate::db::{Db, now_ms};
use crate::domain::Email;
use crate::email::{self, Mailer};

/// What job handlers may use.
pub struct JobContext {
    pub db: Db,
    pub cache: Cache,
    pub mailer: Mailer,
    pub otp_ttl: Duration,
    pub view_flush_interval: Duration,
}

/// One worker process's job runner (any number of concurrent slots).
#[derive(Clone)]
pub struct Worker {
    queue: JobQueue,
    ctx: Arc<JobContext>,
    id: String,
}

/// How long finished jobs' results are kept.
pub const RESULT_TTL: Duration = Duration::from_secs(24 * 3600);

impl Worker {
    pub fn new(queue: JobQueue, ctx: Arc<JobContext>) -> Self {
        // Unique per process and start: a restarted worker never inherits the
        // leases of the process it replaces.
        let id = format!(
            "w-{}-{}",
            std::process::id(),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        Worker { queue, ctx, id }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Runs one due job if there is one; `Ok(true)` if a job was handled
    /// (whatever its outcome). Tests drain the queue with it.
    pub async fn try_execute_one(&self) -> anyhow::Result<bool> {
        let backend = self.queue.backend();
        let Some(lease) = backend.reserve(&self.id).await? else {
            return Ok(false);
        };
        let job = match lease.job {
            Ok(job) => job,
            Err(e) => {
                tracing::error!(job_id = %lease.id, error = %e, "undecodable job payload; dead");
                backend
                    .fail(
                        &lease.id,
                        &self.id,
                        &format!("undecodable payload: {e}"),
                        None,
                    )
                    .await?;
                return Ok(true);
            }
        };
        let name = job.name();
        let span =
            tracing::info_span!("job", job_id = %lease.id, job = name, attempt = lease.attempt);
        async {
            tracing::info!("job started");
            let started = std::time::Instant::now();
            let keep_alive = {
                let (backend, id, worker, timeout) = (
                    backend.clone(),
                    lease.id.clone(),
                    self.id.clone(),
                    lease.timeout,
                );
                tokio::spawn(async move {
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
                })
            };
            let outcome = self.handle(&job).await;
            keep_alive.abort();
            metrics::histogram!("job_duration_seconds", "job" => name)
                .record(started.elapsed().as_secs_f64());
            match outcome {
                Ok(result) => {
                    backend
                        .complete(&lease.id, &self.id, result.as_deref())
                        .await?;
                    metrics::counter!("jobs_completed_total", "job" => name).increment(1);
                    tracing::info!(
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "job done"
                    );
                }
                Err(e) => {
                    let error = format!("{e:#}");
                    if lease.attempt >= lease.max_attempts {
                        backend.fail(&lease.id, &self.id, &error, None).await?;
                        metrics::counter!("jobs_dead_total", "job" => name).increment(1);
                        tracing::error!(error, "job failed for the last time; dead");
                    } else {
                        let retry_at = now_ms() + backoff_ms(lease.attempt);
                        backend
                            .fail(&lease.id, &self.id, &error, Some(retry_at))
                            .await?;
                        metrics::counter!("jobs_retried_total", "job" => name).increment(1);
                        tracing::warn!(error, "job failed; will retry");
                    }
                }
            }
            anyhow::Ok(())
        }
        .instrument(span)
        .await?;
        Ok(true)
    }

    async fn handle(&self, job: &Job) -> anyhow::Result<Option<String>> {
        let ctx = &self.ctx;
        match job {
            Job::SendOtp { email } => {
                let email = Email::parse(email).map_err(|e| anyhow::anyhow!("bad email: {e}"))?;
                // Unknown addresses get nothing; the API answered 202 either way.
                if ctx.db.user_by_email(&email).await?.is_none() {
                    return Ok(None);
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
                Ok(None)
            }
            Job::BookingConfirmation { booking_id } => {
                let Some(b) = ctx.db.booking(*booking_id).await? else {
                    return Ok(Some("booking no longer exists".into()));
                };
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
                Ok(None)
            }
            Job::FlushViews => {
                let flushed = flush_views(&ctx.db, &ctx.cache).await?;
                Ok(Some(format!("{{\"views_flushed\":{flushed}}}")))
            }
            Job::Probe { fail, sleep_ms } => {
                tokio::time::sleep(Duration::from_millis(*sleep_ms)).await;
                if *fail {
                    anyhow::bail!("probe job asked to fail");
                }
                Ok(Some("{\"probe\":\"ok\"}".into()))
            }
        }
    }

    /// Runs `concurrency` job slots plus the periodic scheduler until
    /// `shutdown` turns true; then stops taking jobs and lets running ones
    /// finish.
    pub async fn run(self, concurrency: usize, mut shutdown: watch::Receiver<bool>) {
        tracing::info!(worker_id = %self.id, concurrency, "worker started");
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..concurrency.max(1) {
            let (me, mut stop) = (self.clone(), shutdown.clone());
            tasks.spawn(async move {
                while !*stop.borrow() {
                    let idle = match me.try_execute_one().await {
                        Ok(true) => continue,
                        Ok(false) => Duration::from_millis(50),
                        Err(e) => {
                            tracing::warn!(error = format!("{e:#}"), "queue unavailable");
                            Duration::from_secs(1)
                        }
                    };
                    tokio::select! {
                        _ = tokio::time::sleep(idle) => {}
                        _ = stop.changed() => {}
                    }
                }
            });
        }
        let sched = self.clone();
        let mut stop = shutdown.clone();
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            let mut last_purge = std::time::Instant::now();
            while !*stop.borrow() {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.changed() => continue,
                }
                if let Err(e) = sched.schedule_periodic().await {
                    tracing::warn!(error = format!("{e:#}"), "periodic scheduling failed");
                }
                if last_purge.elapsed() > Duration::from_secs(600) {
                    last_purge = std::time::Instant::now();
                    let _ = sched.queue.backend().purge(RESULT_TTL).await;
                    let _ = sched.ctx.db.session_purge_expired().await;
                }
            }
        });
        let _ = shutdown.changed().await;
        while tasks.join_next().await.is_some() {}
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

/// Retry delay after `attempt` failures: 1 s doubling, capped at 5 min, with
/// up to 50 % jitter so retries of many jobs do not stampede.
fn backoff_ms(attempt: u32) -> i64 {
    let base = 1_000i64
        .saturating_mul(1 << attempt.saturating_sub(1).min(20))
        .min(300_000);
    base + rand::rng().random_range(0..=base / 2)
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
