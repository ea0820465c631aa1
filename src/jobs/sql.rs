//! The embedded queue: jobs in the database (see [`crate::db::jobs`]), so
//! that the single-process default loses no job on a restart.
//!
//! Idle workers of the same process wait on a [`Notify`] that every enqueue
//! (and replay) signals, so a new job starts at once without polling the
//! database. On PostgreSQL, enqueues also `NOTIFY` the channel
//! [`CHANNEL`], and a process whose worker waits `LISTEN`s to it (one
//! [`PgListener`] connection, opened by the first wait): a `stayafrica
//! worker` beside `serve` starts a new job at once as well. SQLite has no
//! such channel: there, a worker process other than the one that queued
//! sees new jobs within its poll interval (500 ms by default).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgListener, PgPool};
use tokio::sync::Notify;

use super::{Exchanged, Job, JobInfo, Leased, Outcome, QueueBackend, QueueCounts, Settle};
use crate::db::jobs::JobRow;
use crate::db::{Db, now_ms};

/// The PostgreSQL notification channel of new jobs (per database).
pub const CHANNEL: &str = "stayafrica_jobs";

/// [`QueueBackend`] on the service's own database.
pub struct SqlQueue {
    db: Db,
    /// Wakes this process's idle worker: a stored permit means a job may
    /// have been queued since it last looked (no wake-up is lost).
    wake: Arc<Notify>,
    /// The `LISTEN` task (PostgreSQL), started by the first wait.
    listening: AtomicBool,
    listener: std::sync::Mutex<Option<tokio::task::AbortHandle>>,
}

impl SqlQueue {
    /// A queue in `db`'s `jobs` table.
    pub fn new(db: Db) -> Self {
        SqlQueue {
            db,
            wake: Arc::new(Notify::new()),
            listening: AtomicBool::new(false),
            listener: std::sync::Mutex::new(None),
        }
    }

    /// Wakes this process's worker, and on PostgreSQL the other
    /// processes' (best effort: they also poll).
    async fn wake_all(&self) {
        self.wake.notify_one();
        if let Db::Postgres(pool) = &self.db
            && let Err(e) = sqlx::query("SELECT pg_notify($1, '')")
                .bind(CHANNEL)
                .execute(pool)
                .await
        {
            tracing::warn!(error = %e, "notifying workers of new jobs failed");
        }
    }
}

impl Drop for SqlQueue {
    fn drop(&mut self) {
        let handle = self
            .listener
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(h) = handle {
            h.abort();
        }
    }
}

/// Turns notifications on [`CHANNEL`] into wake-ups of this process's
/// worker. It runs in a task of its own so that a receive is never
/// cancelled half way, and the [`Notify`] permit folds a burst of
/// notifications into one wake-up. A lost connection also wakes the worker
/// (a notification may have been missed) and is opened again after a pause.
async fn listen(pool: PgPool, wake: Arc<Notify>) {
    let mut pause = Duration::from_millis(100);
    loop {
        let listener = async {
            let mut l = PgListener::connect_with(&pool).await?;
            l.listen(CHANNEL).await?;
            Ok::<_, sqlx::Error>(l)
        }
        .await;
        match listener {
            Ok(mut l) => {
                pause = Duration::from_millis(100);
                loop {
                    match l.try_recv().await {
                        Ok(Some(_)) => wake.notify_one(),
                        Ok(None) => wake.notify_one(),
                        Err(e) => {
                            tracing::warn!(error = %e, "listening for new jobs failed; reconnecting");
                            wake.notify_one();
                            break;
                        }
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "listening for new jobs failed; retrying");
            }
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(5));
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn info(r: JobRow) -> JobInfo {
    JobInfo {
        id: r.id,
        name: r.name,
        status: r.status,
        attempts: u32::try_from(r.attempts).unwrap_or(0),
        last_error: r.last_error,
        result: r.result,
        worker: r.worker_id,
    }
}

#[async_trait]
impl QueueBackend for SqlQueue {
    async fn enqueue_many(&self, jobs: &[(String, Job, i64)]) -> anyhow::Result<()> {
        for (id, job, run_at_ms) in jobs {
            let payload = serde_json::to_string(job)?;
            let attempts = i32::try_from(job.max_attempts()).unwrap_or(i32::MAX);
            self.db
                .job_insert(
                    id,
                    job.name(),
                    &payload,
                    attempts,
                    ms(job.timeout()),
                    (*run_at_ms).max(now_ms()),
                )
                .await?;
        }
        self.wake_all().await;
        Ok(())
    }

    async fn exchange(
        &self,
        worker_id: &str,
        outcomes: &[Outcome],
        want: usize,
    ) -> anyhow::Result<Exchanged> {
        let mut held = Vec::with_capacity(outcomes.len());
        for o in outcomes {
            let db = &self.db;
            let h = match &o.settle {
                Settle::Done(result) => {
                    db.job_complete(&o.id, worker_id, result.as_deref()).await?
                }
                Settle::Retry { error, at_ms } => {
                    db.job_fail(&o.id, worker_id, error, Some(*at_ms)).await?
                }
                Settle::Dead(error) => db.job_fail(&o.id, worker_id, error, None).await?,
                Settle::Release => {
                    let h = db.job_release(&o.id, worker_id).await?;
                    // Another worker may take it at once.
                    self.wake_all().await;
                    h
                }
            };
            held.push(h);
        }
        let rows = if want > 0 {
            let limit = i64::try_from(want).unwrap_or(i64::MAX);
            self.db.job_reserve(worker_id, limit).await?
        } else {
            Vec::new()
        };
        let next_due = if rows.len() < want {
            self.db.job_next_due().await?
        } else {
            None
        };
        Ok(Exchanged {
            held,
            leased: rows
                .into_iter()
                .map(|row| Leased {
                    job: serde_json::from_str(&row.payload).map_err(|e| e.to_string()),
                    id: row.id,
                    attempt: u32::try_from(row.attempts).unwrap_or(0),
                    max_attempts: u32::try_from(row.max_attempts).unwrap_or(0),
                    timeout: Duration::from_millis(u64::try_from(row.timeout_ms).unwrap_or(0)),
                })
                .collect(),
            next_due: next_due.map(|d| Duration::from_millis(u64::try_from(d).unwrap_or(0))),
        })
    }

    async fn wait_for_work(&self, timeout: Duration) -> anyhow::Result<()> {
        if let Db::Postgres(pool) = &self.db
            && !self.listening.swap(true, Ordering::AcqRel)
        {
            let task = tokio::spawn(listen(pool.clone(), self.wake.clone()));
            *self.listener.lock().unwrap_or_else(|e| e.into_inner()) = Some(task.abort_handle());
        }
        let _ = tokio::time::timeout(timeout, self.wake.notified()).await;
        Ok(())
    }

    async fn extend(&self, id: &str, worker_id: &str, timeout: Duration) -> anyhow::Result<bool> {
        self.db
            .job_extend(id, worker_id, now_ms() + ms(timeout))
            .await
    }

    async fn info(&self, id: &str) -> anyhow::Result<Option<JobInfo>> {
        Ok(self.db.job_get(id).await?.map(info))
    }

    async fn dead(&self, limit: usize) -> anyhow::Result<Vec<JobInfo>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        Ok(self
            .db
            .jobs_dead(limit)
            .await?
            .into_iter()
            .map(info)
            .collect())
    }

    async fn replay(&self, id: &str) -> anyhow::Result<bool> {
        let replayed = self.db.job_replay(id).await?;
        if replayed {
            self.wake_all().await;
        }
        Ok(replayed)
    }

    async fn claim_periodic(
        &self,
        name: &str,
        slot: i64,
        _period: Duration,
    ) -> anyhow::Result<bool> {
        self.db.periodic_claim(name, slot).await
    }

    async fn counts(&self) -> anyhow::Result<QueueCounts> {
        let (queued, running, dead) = self.db.job_counts().await?;
        Ok(QueueCounts {
            queued,
            running,
            dead,
        })
    }

    async fn purge(&self, result_ttl: Duration) -> anyhow::Result<()> {
        self.db
            .jobs_purge_done(now_ms() - ms(result_ttl))
            .await
            .map(|_| ())
    }
}
