//! The embedded queue: jobs in the database (see [`crate::db::jobs`]), so
//! that the single-process default loses no job on a restart.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;

use super::{Job, JobInfo, Leased, QueueBackend, QueueCounts};
use crate::db::jobs::JobRow;
use crate::db::{Db, now_ms};

/// [`QueueBackend`] on the service's own database.
pub struct SqlQueue {
    db: Db,
}

impl SqlQueue {
    /// A queue in `db`'s `jobs` table.
    pub fn new(db: Db) -> Self {
        SqlQueue { db }
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
    async fn enqueue(&self, id: &str, job: &Job, run_at_ms: i64) -> anyhow::Result<()> {
        let payload = serde_json::to_string(job)?;
        let attempts = i32::try_from(job.max_attempts()).unwrap_or(i32::MAX);
        self.db
            .job_insert(
                id,
                job.name(),
                &payload,
                attempts,
                ms(job.timeout()),
                run_at_ms.max(now_ms()),
            )
            .await
    }

    async fn reserve(&self, worker_id: &str) -> anyhow::Result<Option<Leased>> {
        let Some(row) = self.db.job_reserve(worker_id).await? else {
            return Ok(None);
        };
        Ok(Some(Leased {
            job: serde_json::from_str(&row.payload).map_err(|e| e.to_string()),
            id: row.id,
            attempt: u32::try_from(row.attempts).unwrap_or(0),
            max_attempts: u32::try_from(row.max_attempts).unwrap_or(0),
            timeout: Duration::from_millis(u64::try_from(row.timeout_ms).unwrap_or(0)),
        }))
    }

    async fn extend(&self, id: &str, worker_id: &str, timeout: Duration) -> anyhow::Result<bool> {
        self.db
            .job_extend(id, worker_id, now_ms() + ms(timeout))
            .await
    }

    async fn complete(
        &self,
        id: &str,
        worker_id: &str,
        result: Option<&str>,
    ) -> anyhow::Result<bool> {
        self.db.job_complete(id, worker_id, result).await
    }

    async fn fail(
        &self,
        id: &str,
        worker_id: &str,
        error: &str,
        retry_at_ms: Option<i64>,
    ) -> anyhow::Result<bool> {
        self.db.job_fail(id, worker_id, error, retry_at_ms).await
    }

    async fn release(&self, id: &str, worker_id: &str) -> anyhow::Result<bool> {
        self.db.job_release(id, worker_id).await
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
        self.db.job_replay(id).await
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

    async fn tally_run(&self, tally: &str, member: &str) -> anyhow::Result<()> {
        self.db.tally_incr(tally, member).await
    }

    async fn tally(&self, tally: &str) -> anyhow::Result<BTreeMap<String, i64>> {
        Ok(self.db.tally_get(tally).await?.into_iter().collect())
    }
}
