//! The embedded queue: jobs in the database (see [`crate::db::jobs`]), so
//! that the single-process default loses no job on a restart.
//!
//! Idle workers of the same process wait on a [`Notify`] that every enqueue
//! (and replay) signals, so a new job starts at once without polling the
//! database. Worker processes other than the one that queues (`stayafrica
//! worker` beside `serve` on the SQL queue) are not woken: they see new jobs
//! within their poll interval.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;

use super::{Exchanged, Job, JobInfo, Leased, Outcome, QueueBackend, QueueCounts, Settle};
use crate::db::jobs::JobRow;
use crate::db::{Db, now_ms};

/// [`QueueBackend`] on the service's own database.
pub struct SqlQueue {
    db: Db,
    /// Wakes this process's idle worker: a stored permit means a job may
    /// have been queued since it last looked (no wake-up is lost).
    wake: Arc<Notify>,
}

impl SqlQueue {
    /// A queue in `db`'s `jobs` table.
    pub fn new(db: Db) -> Self {
        SqlQueue {
            db,
            wake: Arc::new(Notify::new()),
        }
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
        self.wake.notify_one();
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
                    // Another worker of this process may take it at once.
                    self.wake.notify_one();
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
            self.wake.notify_one();
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
