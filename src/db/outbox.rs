//! The outbox table (`crate::outbox`): rows recorded by triggers in the
//! transaction of each write, read and deleted here.

use super::Db;
use crate::with_pool;

/// One recorded fact.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct OutboxRow {
    pub id: i64,
    pub event: String,
    pub subject: i64,
}

impl Db {
    /// The ids of the rows of (`event`, `subject`) committed so far.
    pub async fn outbox_ids(&self, event: &str, subject: i64) -> anyhow::Result<Vec<i64>> {
        Ok(with_pool!(self, p => sqlx::query_scalar(
            "SELECT id FROM outbox WHERE event = $1 AND subject = $2 ORDER BY id LIMIT 1000")
            .bind(event).bind(subject).fetch_all(p).await)?)
    }

    /// Up to `limit` of the oldest rows recorded before `before_ms`.
    pub async fn outbox_batch(&self, before_ms: i64, limit: i64) -> anyhow::Result<Vec<OutboxRow>> {
        Ok(with_pool!(self, p => sqlx::query_as::<_, OutboxRow>(
            "SELECT id, event, subject FROM outbox WHERE created_at < $1 ORDER BY id LIMIT $2")
            .bind(before_ms).bind(limit).fetch_all(p).await)?)
    }

    /// Deletes applied rows.
    pub async fn outbox_delete(&self, ids: &[i64]) -> anyhow::Result<()> {
        for chunk in ids.chunks(500) {
            with_pool!(self, p => {
                let mut qb = sqlx::QueryBuilder::new("DELETE FROM outbox WHERE id IN (");
                let mut list = qb.separated(", ");
                for id in chunk {
                    list.push_bind(*id);
                }
                qb.push(")");
                qb.build().execute(p).await.map(|r| r.rows_affected())
            })?;
        }
        Ok(())
    }

    /// Rows waiting (for `/health`-style checks and tests).
    pub async fn outbox_len(&self) -> anyhow::Result<i64> {
        Ok(
            with_pool!(self, p => sqlx::query_scalar("SELECT COUNT(*) FROM outbox")
            .fetch_one(p).await)?,
        )
    }
}
