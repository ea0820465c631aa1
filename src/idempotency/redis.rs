//! [`IdempotencyStore`] on the sessions role's Redis (never evicted): one
//! hash per record, each step one Lua script (`lua/*.lua`).

use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use bytes::Bytes;
use redis::Script;

use super::{Answer, Begin, IdempotencyStore, RECORD_TTL, ms, now_ms};
use crate::kv::RedisRole;

/// Records in Redis (see the module docs).
pub struct RedisIdempotency {
    role: RedisRole,
    begin: Script,
    finish: Script,
    release: Script,
}

impl RedisIdempotency {
    /// Records on `role` (the sessions role).
    pub fn new(role: RedisRole) -> Self {
        RedisIdempotency {
            role,
            begin: Script::new(include_str!("lua/begin.lua")),
            finish: Script::new(include_str!("lua/finish.lua")),
            release: Script::new(include_str!("lua/release.lua")),
        }
    }
}

#[async_trait]
impl IdempotencyStore for RedisIdempotency {
    async fn begin(
        &self,
        record: &str,
        fingerprint: &str,
        lease: Duration,
    ) -> anyhow::Result<Begin> {
        let reply: Vec<redis::Value> = self
            .role
            .run(|mut conn| async move {
                self.begin
                    .key(record)
                    .arg(fingerprint)
                    .arg(now_ms())
                    .arg(ms(lease))
                    .arg(ms(RECORD_TTL))
                    .invoke_async(&mut conn)
                    .await
            })
            .await
            .context("idempotency record")?;
        let text = |i: usize| -> anyhow::Result<Vec<u8>> {
            match reply.get(i) {
                Some(redis::Value::BulkString(b)) => Ok(b.clone()),
                Some(redis::Value::SimpleString(s)) => Ok(s.clone().into_bytes()),
                Some(redis::Value::Int(n)) => Ok(n.to_string().into_bytes()),
                other => anyhow::bail!("unexpected idempotency reply part {other:?}"),
            }
        };
        Ok(match text(0)?.as_slice() {
            b"proceed" => Begin::Proceed,
            b"running" => Begin::InProgress,
            b"mismatch" => Begin::Mismatch,
            b"done" => Begin::Replay(Answer {
                status: String::from_utf8(text(1)?)?.parse()?,
                content_type: String::from_utf8(text(2)?)?,
                body: Bytes::from(text(3)?),
            }),
            other => anyhow::bail!("unexpected idempotency outcome {other:?}"),
        })
    }

    async fn finish(&self, record: &str, fingerprint: &str, answer: &Answer) -> anyhow::Result<()> {
        self.role
            .run(|mut conn| async move {
                self.finish
                    .key(record)
                    .arg(fingerprint)
                    .arg(answer.status)
                    .arg(&answer.content_type)
                    .arg(answer.body.as_ref())
                    .arg(ms(RECORD_TTL))
                    .invoke_async::<i64>(&mut conn)
                    .await
            })
            .await
            .context("keeping the idempotent answer")?;
        Ok(())
    }

    async fn release(&self, record: &str, fingerprint: &str) -> anyhow::Result<()> {
        self.role
            .run(|mut conn| async move {
                self.release
                    .key(record)
                    .arg(fingerprint)
                    .invoke_async::<i64>(&mut conn)
                    .await
            })
            .await
            .context("releasing the idempotency record")?;
        Ok(())
    }
}
