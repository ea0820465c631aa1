//! Idempotent retries of creating requests (`Idempotency-Key`, API.md): the
//! first answer to a (caller, key) is kept for 24 hours and given again to
//! a retry with the same body, which then changes nothing.
//!
//! A record goes through two states: *running* (a request holds it, with a
//! lease) and *done* (the answer to replay). [`IdempotencyStore::begin`]
//! decides in one atomic step what a request with a key does:
//! proceed (no record, or a running one whose lease ran out: its process
//! died), wait its turn (409: the first is still running), refuse (422:
//! another body under this key) or replay the stored answer.
//! [`RedisIdempotency`] keeps records on the sessions role (never evicted,
//! unlike the cache; `lua/begin.lua`); [`SqlIdempotency`] in the database
//! (the embedded default, or PostgreSQL without Redis). Both pass the same
//! behaviour suite (`tests/api/idempotency.rs`).
//!
//! Bounded: records expire after [`RECORD_TTL`]; answers larger than
//! [`MAX_ANSWER`] are not kept (the key is then released, and a retry runs
//! again: none of the three creating answers comes near it); how many
//! records a caller can make is bounded by the limits of those requests.

pub mod redis;
pub mod sql;

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

/// How long an answer is kept for retries.
pub const RECORD_TTL: Duration = Duration::from_secs(24 * 3600);

/// Largest answer body kept.
pub const MAX_ANSWER: usize = 64 * 1024;

/// A kept answer: status, `Content-Type` and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub body: Bytes,
}

/// What a request with a key does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Begin {
    /// Run it: the record is now this request's, running.
    Proceed,
    /// The first request with this key is still running.
    InProgress,
    /// The key was used with another body.
    Mismatch,
    /// Already answered: give this answer again.
    Replay(Answer),
}

/// Where records live (see the module docs). `record` is the full key of
/// one (caller, key) record (`kv::keys::Keys::idempotency`); `fingerprint`
/// names the request (method, path and body hashed).
#[async_trait]
pub trait IdempotencyStore: Send + Sync + 'static {
    /// Decides, atomically, what the request does; on `Proceed` the record
    /// is held for `lease` (longer than any request may run).
    async fn begin(
        &self,
        record: &str,
        fingerprint: &str,
        lease: Duration,
    ) -> anyhow::Result<Begin>;
    /// Keeps `answer` as the record's, for [`RECORD_TTL`].
    async fn finish(&self, record: &str, fingerprint: &str, answer: &Answer) -> anyhow::Result<()>;
    /// Drops a running record (the request did nothing a retry must not
    /// redo: throttled, refused for a while, failed before any write).
    async fn release(&self, record: &str, fingerprint: &str) -> anyhow::Result<()>;
}

/// Whether an answer is kept for replay: a final outcome (created,
/// refused for a reason a retry would meet again) is; one that says "not
/// now" (429, 5xx) releases the key so that a retry runs again.
pub fn is_final(status: u16) -> bool {
    (200..500).contains(&status) && status != 429
}

/// Milliseconds since the Unix epoch, for leases and expiries.
fn now_ms() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis(),
    )
    .unwrap_or(i64::MAX)
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
