//! Idempotency records of the embedded default (`crate::idempotency::sql`
//! holds their policy; this is their table).

use bytes::Bytes;

use super::{Db, now_ms};
use crate::with_pool;

/// A kept answer as stored: status, content type, body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAnswer {
    pub status: u16,
    pub content_type: String,
    pub body: Bytes,
}

/// One record as stored.
#[derive(Debug)]
pub struct Record {
    pub fingerprint: String,
    /// `None` while running.
    pub answer: Option<StoredAnswer>,
}

#[derive(sqlx::FromRow)]
struct Row {
    fingerprint: String,
    status: Option<i32>,
    content_type: Option<String>,
    body: Option<Vec<u8>>,
}

impl Db {
    /// Makes the record this request's (running until `lease_until`) if
    /// there is none, or it expired, or its lease ran out; true if it did.
    pub async fn idempotency_claim(
        &self,
        record: &str,
        fingerprint: &str,
        now: i64,
        lease_until: i64,
        expires_at: i64,
    ) -> anyhow::Result<bool> {
        let n = with_pool!(self, p => sqlx::query(
            "INSERT INTO idempotency_records (record, fingerprint, lease_until, expires_at)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (record) DO UPDATE
               SET fingerprint = excluded.fingerprint, lease_until = excluded.lease_until,
                   expires_at = excluded.expires_at, status = NULL, content_type = NULL,
                   body = NULL
               WHERE idempotency_records.expires_at <= $5
                  OR (idempotency_records.status IS NULL
                      AND idempotency_records.fingerprint = $2
                      AND idempotency_records.lease_until <= $5)")
            .bind(record).bind(fingerprint).bind(lease_until).bind(expires_at).bind(now)
            .execute(p).await.map(|r| r.rows_affected()))?;
        Ok(n > 0)
    }

    /// The live record, if any.
    pub async fn idempotency_get(&self, record: &str) -> anyhow::Result<Option<Record>> {
        let row = with_pool!(self, p => sqlx::query_as::<_, Row>(
            "SELECT fingerprint, status, content_type, body FROM idempotency_records
             WHERE record = $1 AND expires_at > $2")
            .bind(record).bind(now_ms()).fetch_optional(p).await)?;
        Ok(row.map(|r| Record {
            fingerprint: r.fingerprint,
            answer: match (r.status, r.content_type, r.body) {
                (Some(status), Some(content_type), Some(body)) => Some(StoredAnswer {
                    status: u16::try_from(status).unwrap_or(500),
                    content_type,
                    body: Bytes::from(body),
                }),
                _ => None,
            },
        }))
    }

    /// Keeps the answer of this request's running record.
    pub async fn idempotency_finish(
        &self,
        record: &str,
        fingerprint: &str,
        answer: &StoredAnswer,
        expires_at: i64,
    ) -> anyhow::Result<()> {
        with_pool!(self, p => sqlx::query(
            "UPDATE idempotency_records SET status = $3, content_type = $4, body = $5,
               expires_at = $6
             WHERE record = $1 AND fingerprint = $2 AND status IS NULL")
            .bind(record).bind(fingerprint).bind(i32::from(answer.status))
            .bind(&answer.content_type).bind(answer.body.as_ref()).bind(expires_at)
            .execute(p).await.map(|r| r.rows_affected()))?;
        Ok(())
    }

    /// Drops this request's running record.
    pub async fn idempotency_release(&self, record: &str, fingerprint: &str) -> anyhow::Result<()> {
        with_pool!(self, p => sqlx::query(
            "DELETE FROM idempotency_records
             WHERE record = $1 AND fingerprint = $2 AND status IS NULL")
            .bind(record).bind(fingerprint)
            .execute(p).await.map(|r| r.rows_affected()))?;
        Ok(())
    }

    /// Removes expired records (run periodically by the worker).
    pub async fn idempotency_purge(&self) -> anyhow::Result<u64> {
        Ok(with_pool!(self, p => sqlx::query(
            "DELETE FROM idempotency_records WHERE expires_at <= $1")
            .bind(now_ms()).execute(p).await.map(|r| r.rows_affected()))?)
    }
}
