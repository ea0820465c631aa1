//! The embedded job queue's table (used when no Redis broker is
//! configured): jobs survive a restart because they live in the database.
//! A job is reserved by setting a lease; a lease that runs out (its worker
//! died) makes the job reservable again, so delivery is at-least-once.

use super::{Db, DbKind, now_ms};
use crate::with_pool;

/// A job row as a worker sees it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct JobRow {
    pub id: String,
    pub name: String,
    pub payload: String,
    /// `queued`, `running`, `done` or `dead`.
    pub status: String,
    pub attempts: i32,
    pub max_attempts: i32,
    /// Lease length in milliseconds: past it, the job may be taken back and retried.
    pub timeout_ms: i64,
    /// When the job is due, in Unix milliseconds.
    pub run_at: i64,
    pub last_error: Option<String>,
    pub result: Option<String>,
    /// The worker that holds (or last held) the lease.
    pub worker_id: Option<String>,
}

const COLS: &str = "id, name, payload, status, attempts, max_attempts, timeout_ms, run_at, \
                    last_error, result, worker_id";

impl Db {
    /// Queues a job due at `run_at_ms` (Unix ms) with no attempts used;
    /// fails if `id` already exists.
    pub async fn job_insert(
        &self,
        id: &str,
        name: &str,
        payload: &str,
        max_attempts: i32,
        timeout_ms: i64,
        run_at_ms: i64,
    ) -> anyhow::Result<()> {
        with_pool!(self, p => sqlx::query(
            "INSERT INTO jobs (id, name, payload, status, attempts, max_attempts, timeout_ms,
               run_at, created_at)
             VALUES ($1, $2, $3, 'queued', 0, $4, $5, $6, $7)")
            .bind(id).bind(name).bind(payload).bind(max_attempts).bind(timeout_ms)
            .bind(run_at_ms).bind(now_ms())
            .execute(p).await.map(|r| r.rows_affected()))?;
        Ok(())
    }

    /// Takes up to `limit` due jobs (queued and due, or running with an
    /// expired lease), oldest due first, leasing each to `worker_id` for the
    /// job's own timeout. A job whose lease ran out on its last attempt is
    /// dead instead: a job that kills its worker every time must not loop
    /// for ever.
    pub async fn job_reserve(&self, worker_id: &str, limit: i64) -> anyhow::Result<Vec<JobRow>> {
        let now = now_ms();
        with_pool!(self, p => sqlx::query(
            "UPDATE jobs SET status = 'dead', finished_at = $1, lease_until = NULL,
               last_error = 'lease expired: the worker was lost on the last attempt'
             WHERE status = 'running' AND lease_until <= $1 AND attempts >= max_attempts")
            .bind(now).execute(p).await.map(|r| r.rows_affected()))?;
        // PostgreSQL needs SKIP LOCKED so that two workers never take the same
        // row; SQLite has one writer at a time, so the subquery cannot race.
        let lock = match self.kind() {
            DbKind::Postgres => "FOR UPDATE SKIP LOCKED",
            DbKind::Sqlite => "",
        };
        let sql = format!(
            "UPDATE jobs SET status = 'running', attempts = attempts + 1,
               lease_until = $1 + timeout_ms, worker_id = $2
             WHERE id IN (
               SELECT id FROM jobs
               WHERE (status = 'queued' AND run_at <= $1)
                  OR (status = 'running' AND lease_until <= $1)
               ORDER BY run_at LIMIT $3 {lock})
             RETURNING {COLS}"
        );
        let mut rows = with_pool!(self, p => sqlx::query_as::<_, JobRow>(sqlx::AssertSqlSafe(sql))
            .bind(now).bind(worker_id).bind(limit).fetch_all(p).await)?;
        // RETURNING gives no order; deliver the longest-waiting first.
        rows.sort_by_key(|r| r.run_at);
        Ok(rows)
    }

    /// Milliseconds until the next job is due (a queued job's run time or a
    /// lease deadline), 0 if one is due now; `None` when no job waits.
    pub async fn job_next_due(&self) -> anyhow::Result<Option<i64>> {
        let next: Option<i64> = with_pool!(self, p => sqlx::query_scalar::<_, Option<i64>>(
            "SELECT MIN(CASE WHEN status = 'queued' THEN run_at ELSE lease_until END)
             FROM jobs WHERE status IN ('queued', 'running')")
            .fetch_one(p).await)?;
        Ok(next.map(|t| (t - now_ms()).max(0)))
    }

    /// Gives a held job back, due now, without counting the attempt.
    pub async fn job_release(&self, id: &str, worker_id: &str) -> anyhow::Result<bool> {
        Ok(with_pool!(self, p => sqlx::query(
            "UPDATE jobs SET status = 'queued', attempts = attempts - 1, run_at = $3,
               lease_until = NULL, worker_id = NULL
             WHERE id = $1 AND worker_id = $2 AND status = 'running'")
            .bind(id).bind(worker_id).bind(now_ms()).execute(p).await.map(|r| r.rows_affected()))?
            == 1)
    }

    /// Extends the lease of a job this worker holds; false if it lost it.
    pub async fn job_extend(
        &self,
        id: &str,
        worker_id: &str,
        until_ms: i64,
    ) -> anyhow::Result<bool> {
        Ok(with_pool!(self, p => sqlx::query(
            "UPDATE jobs SET lease_until = $3 WHERE id = $1 AND worker_id = $2 AND status = 'running'")
            .bind(id).bind(worker_id).bind(until_ms).execute(p).await.map(|r| r.rows_affected()))?
            == 1)
    }

    /// Marks a job done with its result, if this worker still holds it; a
    /// job done without a result is deleted (nothing to keep, as on Redis).
    pub async fn job_complete(
        &self,
        id: &str,
        worker_id: &str,
        result: Option<&str>,
    ) -> anyhow::Result<bool> {
        if result.is_none() {
            return Ok(with_pool!(self, p => sqlx::query(
                "DELETE FROM jobs WHERE id = $1 AND worker_id = $2 AND status = 'running'")
                .bind(id).bind(worker_id).execute(p).await.map(|r| r.rows_affected()))?
                == 1);
        }
        Ok(with_pool!(self, p => sqlx::query(
            "UPDATE jobs SET status = 'done', result = $3, finished_at = $4, lease_until = NULL
             WHERE id = $1 AND worker_id = $2 AND status = 'running'")
            .bind(id).bind(worker_id).bind(result).bind(now_ms()).execute(p).await.map(|r| r.rows_affected()))?
            == 1)
    }

    /// Records a failure: back to the queue at `retry_at_ms`, or dead;
    /// false if this worker no longer holds the job.
    pub async fn job_fail(
        &self,
        id: &str,
        worker_id: &str,
        error: &str,
        retry_at_ms: Option<i64>,
    ) -> anyhow::Result<bool> {
        let (status, run_at) = match retry_at_ms {
            Some(t) => ("queued", t),
            None => ("dead", now_ms()),
        };
        Ok(with_pool!(self, p => sqlx::query(
            "UPDATE jobs SET status = $3, run_at = $4, last_error = $5, lease_until = NULL,
               finished_at = CASE WHEN $3 = 'dead' THEN $6 ELSE NULL END
             WHERE id = $1 AND worker_id = $2 AND status = 'running'")
            .bind(id).bind(worker_id).bind(status).bind(run_at).bind(error).bind(now_ms())
            .execute(p).await.map(|r| r.rows_affected()))?
            == 1)
    }

    /// Any job by id, whatever its status; `None` if unknown.
    pub async fn job_get(&self, id: &str) -> anyhow::Result<Option<JobRow>> {
        let sql = format!("SELECT {COLS} FROM jobs WHERE id = $1");
        Ok(
            with_pool!(self, p => sqlx::query_as::<_, JobRow>(sqlx::AssertSqlSafe(sql))
            .bind(id).fetch_optional(p).await)?,
        )
    }

    /// Up to `limit` dead jobs, most recently dead first.
    pub async fn jobs_dead(&self, limit: i64) -> anyhow::Result<Vec<JobRow>> {
        let sql = format!(
            "SELECT {COLS} FROM jobs WHERE status = 'dead' ORDER BY finished_at DESC LIMIT $1"
        );
        Ok(
            with_pool!(self, p => sqlx::query_as::<_, JobRow>(sqlx::AssertSqlSafe(sql))
            .bind(limit).fetch_all(p).await)?,
        )
    }

    /// Puts a dead job back in the queue with fresh attempts.
    pub async fn job_replay(&self, id: &str) -> anyhow::Result<bool> {
        Ok(with_pool!(self, p => sqlx::query(
            "UPDATE jobs SET status = 'queued', attempts = 0, run_at = $2, worker_id = NULL,
               finished_at = NULL WHERE id = $1 AND status = 'dead'")
            .bind(id).bind(now_ms()).execute(p).await.map(|r| r.rows_affected()))?
            == 1)
    }

    /// Counts of jobs by status: (queued, running, dead).
    pub async fn job_counts(&self) -> anyhow::Result<(i64, i64, i64)> {
        Ok(with_pool!(self, p => sqlx::query_as::<_, (i64, i64, i64)>(
            "SELECT
               COALESCE(SUM(CASE WHEN status = 'queued' THEN 1 ELSE 0 END), 0),
               COALESCE(SUM(CASE WHEN status = 'running' THEN 1 ELSE 0 END), 0),
               COALESCE(SUM(CASE WHEN status = 'dead' THEN 1 ELSE 0 END), 0)
             FROM jobs").fetch_one(p).await)?)
    }

    /// True for the first caller of a (name, slot): periodic jobs run once
    /// per period however many workers ask.
    pub async fn periodic_claim(&self, name: &str, slot: i64) -> anyhow::Result<bool> {
        Ok(with_pool!(self, p => sqlx::query(
            "INSERT INTO periodic_runs (name, slot) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .bind(name).bind(slot).execute(p).await.map(|r| r.rows_affected()))?
            == 1)
    }

    /// Deletes finished jobs older than `before_ms` (results have a TTL).
    pub async fn jobs_purge_done(&self, before_ms: i64) -> anyhow::Result<u64> {
        Ok(with_pool!(self, p => sqlx::query(
            "DELETE FROM jobs WHERE status = 'done' AND finished_at < $1")
            .bind(before_ms).execute(p).await.map(|r| r.rows_affected()))?)
    }
}
