//! The worker: leases jobs, runs their handlers with the lease kept alive,
//! records results, retries failures with exponential backoff and jitter,
//! schedules periodic jobs once per period across all workers, and shuts
//! down gracefully (no new jobs; running ones finish within a grace period
//! or are given back to the queue).
//!
//! One dispatcher per process talks to the queue for all its slots: each
//! [`QueueBackend::exchange`] records the outcomes of the jobs that finished
//! since the last one and leases as many jobs as there are free slots (one
//! round trip on Redis, however many jobs), holding up to twice as many
//! leases as it has slots so that a slot never waits for a round trip. Jobs
//! run in tasks of their own; each extends its own lease while it waits for
//! a slot, while it runs and until its outcome is recorded. While every
//! slot is busy, the dispatcher lets outcomes gather for up to a
//! millisecond, so that one exchange carries many. When slots are free and the queue has nothing due, the
//! dispatcher waits in [`QueueBackend::wait_for_work`] (one blocking wait
//! per process, woken by enqueues), until the next delayed job or lease
//! deadline the queue reported, or at the latest the poll interval: an idle
//! worker sends no command per slot and almost none per second.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use rand::Rng;

use crate::cache::otp::OtpSealKey;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::Instrument;

use super::{Job, JobQueue, Leased, Outcome, Settle};
use crate::cache::Cache;
use crate::db::{Db, now_ms};
use crate::domain::Email;
use crate::email::{self, Mailer};
use crate::views::Views;

/// What job handlers may use.
pub struct JobContext {
    pub db: Db,
    pub cache: Cache,
    /// View counting (the `FlushViews` job).
    pub views: Views,
    pub mailer: Mailer,
    /// Lifetime of the one-time codes that `SendOtp` issues.
    pub otp_ttl: Duration,
    /// Seals the one-time codes kept for mailing again.
    pub otp_seal: OtpSealKey,
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
    poll: Duration,
    batch: usize,
    /// The periodic slot this worker last asked for: it claims each slot
    /// once, not once a tick.
    periodic_slot: Arc<AtomicI64>,
}

/// How long finished jobs' results are kept.
pub const RESULT_TTL: Duration = Duration::from_secs(24 * 3600);

/// How long a stopping worker lets running jobs finish before it gives them
/// back to the queue.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(30);

/// Longest an idle worker waits without asking the queue (a safety net:
/// enqueues wake it, and it wakes by itself when a delayed job is due).
pub const DEFAULT_POLL: Duration = Duration::from_secs(5);

/// Most jobs leased in one exchange with the queue.
pub const DEFAULT_BATCH: usize = 32;

/// How long the dispatcher waits for more outcomes while every slot is
/// busy, so that one exchange records many.
const LINGER: Duration = Duration::from_millis(1);

/// Failed exchanges in a row after which a stopping worker (grace period
/// over) stops trying to record outcomes (about 20 s of retries).
const GIVE_UP_AFTER: u32 = 20;

/// A job task's report to the dispatcher; `ack` fires once it is recorded
/// (the task keeps the lease alive until then).
struct Finished {
    outcome: Outcome,
    ack: oneshot::Sender<()>,
}

/// Outcomes waiting for the next exchange, and who waits for each to be
/// recorded (kept apart so that the exchange borrows the outcomes as they
/// are, without copying them).
#[derive(Default)]
struct Pending {
    outcomes: Vec<Outcome>,
    acks: Vec<oneshot::Sender<()>>,
}

impl Pending {
    fn push(&mut self, f: Finished) {
        self.outcomes.push(f.outcome);
        self.acks.push(f.ack);
    }
    fn len(&self) -> usize {
        self.outcomes.len()
    }
    fn is_empty(&self) -> bool {
        self.outcomes.is_empty()
    }
    fn drain(&mut self) -> impl Iterator<Item = (Outcome, oneshot::Sender<()>)> + '_ {
        self.outcomes.drain(..).zip(self.acks.drain(..))
    }
}

/// The worker's metric handles for one job name, registered once: a
/// registration per job would cost a key and a registry lookup each time.
struct JobMetrics {
    duration: metrics::Histogram,
    completed: metrics::Counter,
    retried: metrics::Counter,
    dead: metrics::Counter,
}

impl JobMetrics {
    fn of(name: &'static str) -> &'static JobMetrics {
        static ALL: std::sync::Mutex<Vec<(&str, &JobMetrics)>> = std::sync::Mutex::new(Vec::new());
        let mut all = ALL.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, m)) = all.iter().find(|(n, _)| *n == name) {
            return m;
        }
        // One per job name (a handful), for the life of the process.
        let m: &'static JobMetrics = Box::leak(Box::new(JobMetrics {
            duration: metrics::histogram!("job_duration_seconds", "job" => name),
            completed: metrics::counter!("jobs_completed_total", "job" => name),
            retried: metrics::counter!("jobs_retried_total", "job" => name),
            dead: metrics::counter!("jobs_dead_total", "job" => name),
        }));
        all.push((name, m));
        m
    }
}

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
            poll: DEFAULT_POLL,
            batch: DEFAULT_BATCH,
            periodic_slot: Arc::new(AtomicI64::new(i64::MIN)),
        }
    }

    /// Sets how long [`Worker::run`] lets running jobs finish at shutdown.
    pub fn with_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Sets the longest an idle worker waits before asking the queue again
    /// although nothing woke it (at least 1 ms).
    pub fn with_poll_interval(mut self, poll: Duration) -> Self {
        self.poll = poll.max(Duration::from_millis(1));
        self
    }

    /// Sets the most jobs leased in one exchange with the queue (at least 1).
    pub fn with_batch(mut self, batch: usize) -> Self {
        self.batch = batch.max(1);
        self
    }

    /// This worker's id (lease owner in the queue, and in its logs).
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
        let (_never, release) = watch::channel(false);
        let settle = self.with_lease(&lease, self.run_job(&lease, release)).await;
        let held = self.with_lease(&lease, self.record(&lease, settle)).await?;
        if !held {
            tracing::warn!(job_id = %lease.id,
                "lease lost before the outcome was recorded; the job's other delivery decides");
        }
        Ok(true)
    }

    /// Runs `fut` while extending `lease` every third of its timeout.
    async fn with_lease<T>(&self, lease: &Leased, fut: impl Future<Output = T>) -> T {
        let backend = self.queue.backend();
        let period = (lease.timeout / 3).max(Duration::from_millis(10));
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut lost = false;
        tokio::pin!(fut);
        loop {
            tokio::select! {
                out = &mut fut => return out,
                _ = tick.tick(), if !lost => {
                    match backend.extend(&lease.id, &self.id, lease.timeout).await {
                        Ok(true) => {}
                        Ok(false) => lost = true,
                        Err(e) => tracing::warn!(job_id = %lease.id, error = format!("{e:#}"),
                            "lease extension failed"),
                    }
                }
            }
        }
    }

    /// Records one outcome, retrying while the queue is briefly unreachable
    /// (the caller keeps extending the lease). Gives up after the lease's
    /// timeout: the job is then delivered again (at least once).
    async fn record(&self, lease: &Leased, settle: Settle) -> anyhow::Result<bool> {
        let backend = self.queue.backend();
        let started = Instant::now();
        let mut pause = Duration::from_millis(50);
        loop {
            match backend.settle(&lease.id, &self.id, settle.clone()).await {
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

    /// Runs a leased job's handler and decides how the delivery ends: done,
    /// retry after the backoff, dead, or given back when `release` turns
    /// true (the grace period of a shutdown is over).
    async fn run_job(&self, lease: &Leased, mut release: watch::Receiver<bool>) -> Settle {
        let job = match &lease.job {
            Ok(job) => job,
            Err(e) => {
                tracing::error!(job_id = %lease.id, error = %e, "undecodable job payload; dead");
                return Settle::Dead(format!("undecodable payload: {e}"));
            }
        };
        let name = job.name();
        let span =
            tracing::info_span!("job", job_id = %lease.id, job = name, attempt = lease.attempt);
        async {
            tracing::info!("job started");
            let started = Instant::now();
            let outcome = tokio::select! {
                outcome = self.handle(&lease.id, job) => Some(outcome),
                _ = async {
                    if release.wait_for(|r| *r).await.is_err() {
                        std::future::pending::<()>().await;
                    }
                } => None,
            };
            let m = JobMetrics::of(name);
            m.duration.record(started.elapsed().as_secs_f64());
            match outcome {
                None => {
                    tracing::warn!("worker stopping: job given back to the queue unfinished");
                    Settle::Release
                }
                Some(Ok(result)) => {
                    m.completed.increment(1);
                    tracing::info!(
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "job done"
                    );
                    Settle::Done(result)
                }
                Some(Err(e)) => {
                    let error = format!("{e:#}");
                    if lease.attempt >= lease.max_attempts {
                        m.dead.increment(1);
                        tracing::error!(error, "job failed for the last time; dead");
                        Settle::Dead(error)
                    } else {
                        let at_ms = now_ms() + backoff_ms(lease.attempt, job.backoff_base());
                        m.retried.increment(1);
                        tracing::warn!(error, "job failed; will retry");
                        Settle::Retry { error, at_ms }
                    }
                }
            }
        }
        .instrument(span)
        .await
    }

    /// One job of [`Worker::run`]: waits for a slot, runs the job with its
    /// lease kept alive, hands the outcome to the dispatcher and keeps the
    /// lease until it is recorded.
    async fn job_task(
        self,
        lease: Leased,
        done: mpsc::UnboundedSender<Finished>,
        slots: Arc<tokio::sync::Semaphore>,
        mut shutdown: watch::Receiver<bool>,
        release: watch::Receiver<bool>,
    ) {
        let run = async {
            // Wait for a free slot; a job that has not started when the
            // worker stops goes back to the queue at once.
            let permit = tokio::select! {
                p = slots.acquire_owned() => p.ok(),
                _ = shutdown.wait_for(|s| *s) => None,
            };
            match permit {
                Some(_slot) => self.run_job(&lease, release).await,
                None => Settle::Release,
            }
        };
        let settle = self.with_lease(&lease, run).await;
        let (ack, recorded) = oneshot::channel();
        let outcome = Outcome {
            id: lease.id.clone(),
            settle,
        };
        if done.send(Finished { outcome, ack }).is_ok() {
            let _ = self.with_lease(&lease, recorded).await;
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
                // The live code again if there is one: a new request must
                // not void the code in the user's inbox.
                let issued = ctx
                    .cache
                    .otp_issue(&email, &ctx.otp_seal, ctx.otp_ttl)
                    .await
                    .context("issuing the code")?;
                let code = issued.code;
                let minutes = issued.valid_for.as_secs().div_ceil(60).max(1);
                ctx.mailer
                    .send(&email::Email {
                        to: email.to_string(),
                        subject: "Your StayAfrica sign-in code".into(),
                        body: format!(
                            "Your sign-in code is {code}. It is valid for {minutes} minutes and can be used once."
                        ),
                        secret: Some(code.clone()),
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
                        secret: None,
                    })
                    .await?;
                ctx.db
                    .mark_confirmation_sent(b.id, time::OffsetDateTime::now_utc())
                    .await?;
                Ok(None)
            }
            Job::FlushViews => {
                let flushed = ctx.views.flush().await?;
                Ok(Some(format!(
                    "{{\"views_flushed\":{},\"chunks\":{}}}",
                    flushed.views, flushed.chunks
                )))
            }
            Job::Probe(probe) => probe.run(id, self.queue.tallies()).await,
        }
    }

    /// Runs `concurrency` job slots plus the periodic scheduler until
    /// `shutdown` turns true (or its sender is dropped); then stops taking
    /// jobs, lets running ones finish for the grace period, and gives the
    /// ones still running back to the queue.
    pub async fn run(self, concurrency: usize, mut shutdown: watch::Receiver<bool>) {
        let slots = concurrency.max(1);
        tracing::info!(worker_id = %self.id, concurrency = slots, "worker started");
        let backend = self.queue.backend().clone();
        let (release_tx, release_rx) = watch::channel(false);
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Finished>();
        // The one blocking wait of this process runs in a task of its own so
        // that the dispatcher can record outcomes meanwhile without
        // cancelling it (a cancelled blocking read costs a reconnection).
        let (wait_tx, mut wait_rx) = mpsc::channel::<Duration>(1);
        let (woke_tx, mut woke_rx) = mpsc::channel::<anyhow::Result<()>>(1);
        let waiter = tokio::spawn({
            let backend = backend.clone();
            async move {
                while let Some(timeout) = wait_rx.recv().await {
                    let woke = backend.wait_for_work(timeout).await;
                    if woke_tx.send(woke).await.is_err() {
                        break;
                    }
                }
            }
        });
        let scheduler = tokio::spawn(self.clone().scheduler(shutdown.clone()));

        let mut jobs = tokio::task::JoinSet::new();
        // Leases held: jobs running plus jobs waiting for a slot. A process
        // holds up to twice its slots, so that a slot whose job finished
        // starts the next at once instead of waiting for a round trip.
        let capacity = slots * 2;
        let slot_permits = Arc::new(tokio::sync::Semaphore::new(slots));
        let mut held = 0usize;
        let mut pending = Pending::default();
        let mut fetch = true;
        let mut waiting = false;
        let mut due: Option<tokio::time::Instant> = None;
        let mut stopping = *shutdown.borrow();
        let mut grace_end: Option<tokio::time::Instant> = None;
        let mut failures = 0u32;
        loop {
            while let Ok(f) = done_rx.try_recv() {
                pending.push(f);
            }
            // Every slot still has a job: let more outcomes come in (for up
            // to a millisecond) so that one exchange carries many.
            if !pending.is_empty() && !stopping && held - pending.len() >= slots {
                let until = tokio::time::Instant::now() + LINGER;
                while pending.len() < self.batch {
                    match tokio::time::timeout_at(until, done_rx.recv()).await {
                        Ok(Some(f)) => pending.push(f),
                        _ => break,
                    }
                }
            }
            let free = if stopping {
                0
            } else {
                capacity.saturating_sub(held)
            };
            let want = free.min(self.batch);
            if !pending.is_empty() || (fetch && want > 0) {
                match backend.exchange(&self.id, &pending.outcomes, want).await {
                    Ok(ex) => {
                        failures = 0;
                        for (i, (o, ack)) in pending.drain().enumerate() {
                            if !ex.held.get(i).copied().unwrap_or(false) {
                                tracing::warn!(job_id = %o.id,
                                    "lease lost before the outcome was recorded; the job's other delivery decides");
                            }
                            let _ = ack.send(());
                            held = held.saturating_sub(1);
                        }
                        let got = ex.leased.len();
                        for lease in ex.leased {
                            held += 1;
                            jobs.spawn(self.clone().job_task(
                                lease,
                                done_tx.clone(),
                                slot_permits.clone(),
                                shutdown.clone(),
                                release_rx.clone(),
                            ));
                        }
                        fetch = want > 0 && got == want && held < capacity;
                        due = ex.next_due.map(|d| tokio::time::Instant::now() + d);
                    }
                    Err(e) => {
                        failures = failures.saturating_add(1);
                        tracing::warn!(error = format!("{e:#}"), "queue unavailable");
                        if stopping && grace_end.is_none() && failures >= GIVE_UP_AFTER {
                            // Shutting down and the queue stays away: the
                            // leases run out and the jobs are delivered again.
                            tracing::error!(
                                jobs = pending.len(),
                                "outcomes not recorded; the queue will deliver these jobs again"
                            );
                            held = held.saturating_sub(pending.len());
                            pending.drain().for_each(drop);
                            continue;
                        }
                        let pause = Duration::from_millis(50)
                            .saturating_mul(1 << failures.min(5))
                            .min(Duration::from_secs(1));
                        tokio::time::sleep(pause).await;
                        fetch = true;
                        continue;
                    }
                }
                while jobs.try_join_next().is_some() {}
                if fetch {
                    continue;
                }
            }
            if stopping && held == 0 {
                break;
            }
            if !stopping && held < capacity && !waiting {
                let now = tokio::time::Instant::now();
                let timeout = due.map_or(self.poll, |d| {
                    d.saturating_duration_since(now).min(self.poll)
                });
                waiting = wait_tx.try_send(timeout).is_ok();
            }
            tokio::select! {
                Some(f) = done_rx.recv() => pending.push(f),
                Some(woke) = woke_rx.recv(), if waiting => {
                    waiting = false;
                    fetch = true;
                    if let Err(e) = woke {
                        tracing::warn!(error = format!("{e:#}"), "waiting for jobs failed");
                    }
                }
                _ = sleep_until(due), if due.is_some() && !stopping => {
                    due = None;
                    fetch = true;
                }
                changed = shutdown.changed(), if !stopping => {
                    if changed.is_err() || *shutdown.borrow() {
                        stopping = true;
                        grace_end = Some(tokio::time::Instant::now() + self.grace);
                        tracing::info!(worker_id = %self.id, grace_secs = self.grace.as_secs_f64(),
                            "worker stopping: taking no new jobs, letting running ones finish");
                    }
                }
                _ = sleep_until(grace_end), if grace_end.is_some() => {
                    grace_end = None;
                    tracing::warn!(worker_id = %self.id, "grace period over; giving unfinished jobs back");
                    let _ = release_tx.send(true);
                }
            }
        }
        waiter.abort();
        let _ = scheduler.await;
        while jobs.join_next().await.is_some() {}
        tracing::info!(worker_id = %self.id, "worker stopped");
    }

    /// Queues periodic jobs and purges old results until `shutdown`. Its
    /// one-second tick is local: the queue is asked once per period.
    async fn scheduler(self, mut stop: watch::Receiver<bool>) {
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
            if let Err(e) = self.schedule_periodic().await {
                tracing::warn!(error = format!("{e:#}"), "periodic scheduling failed");
            }
            if last_purge.elapsed() > Duration::from_secs(600) {
                last_purge = Instant::now();
                let _ = self.queue.backend().purge(RESULT_TTL).await;
                let _ = self.ctx.db.session_purge_expired().await;
                let _ = self.ctx.db.idempotency_purge().await;
            }
        }
    }

    /// Queues the periodic jobs whose period has begun, once across workers.
    /// Each worker asks once per period (not on every call).
    pub async fn schedule_periodic(&self) -> anyhow::Result<()> {
        let period = self.ctx.view_flush_interval;
        let secs = i64::try_from(period.as_secs().max(1)).unwrap_or(60);
        let slot = now_ms() / 1000 / secs;
        if self.periodic_slot.swap(slot, Ordering::Relaxed) == slot {
            return Ok(());
        }
        let claimed = async {
            if self
                .queue
                .backend()
                .claim_periodic("flush_views", slot, period)
                .await?
            {
                self.queue.enqueue(&Job::FlushViews).await?;
            }
            anyhow::Ok(())
        }
        .await;
        if claimed.is_err() {
            // Ask again on the next call.
            self.periodic_slot.store(i64::MIN, Ordering::Relaxed);
        }
        claimed
    }
}

/// Sleeps until `at`; never resolves for `None` (a disabled select arm).
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
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
