//! [`IdempotencyStore`] in the database (`idempotency_records`): the
//! embedded default, or PostgreSQL without Redis. Each step is one
//! statement whose `WHERE` makes it atomic; expired records are replaced
//! on use and purged by the worker ([`crate::db::Db::idempotency_purge`]).

use std::time::Duration;

use async_trait::async_trait;

use super::{Answer, Begin, IdempotencyStore, RECORD_TTL, ms, now_ms};
use crate::db::Db;
use crate::db::idempotency::{Record, StoredAnswer};

/// Records in the database (see the module docs).
pub struct SqlIdempotency {
    db: Db,
}

impl SqlIdempotency {
    /// Records in `db`.
    pub fn new(db: Db) -> Self {
        SqlIdempotency { db }
    }
}

#[async_trait]
impl IdempotencyStore for SqlIdempotency {
    async fn begin(
        &self,
        record: &str,
        fingerprint: &str,
        lease: Duration,
    ) -> anyhow::Result<Begin> {
        let now = now_ms();
        // Twice at most: a record that expires or whose lease runs out
        // between the two statements is taken over on the second pass.
        for _ in 0..2 {
            if self
                .db
                .idempotency_claim(
                    record,
                    fingerprint,
                    now,
                    now + ms(lease),
                    now + ms(RECORD_TTL),
                )
                .await?
            {
                return Ok(Begin::Proceed);
            }
            match self.db.idempotency_get(record).await? {
                None => continue,
                Some(r) if r.fingerprint != fingerprint => return Ok(Begin::Mismatch),
                Some(Record {
                    answer: Some(a), ..
                }) => {
                    return Ok(Begin::Replay(Answer {
                        status: a.status,
                        content_type: a.content_type,
                        body: a.body,
                    }));
                }
                Some(_) => return Ok(Begin::InProgress),
            }
        }
        Ok(Begin::InProgress)
    }

    async fn finish(&self, record: &str, fingerprint: &str, answer: &Answer) -> anyhow::Result<()> {
        let stored = StoredAnswer {
            status: answer.status,
            content_type: answer.content_type.clone(),
            body: answer.body.clone(),
        };
        self.db
            .idempotency_finish(record, fingerprint, &stored, now_ms() + ms(RECORD_TTL))
            .await
    }

    async fn release(&self, record: &str, fingerprint: &str) -> anyhow::Result<()> {
        self.db.idempotency_release(record, fingerprint).await
    }
}
