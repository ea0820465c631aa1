//! [`CacheStore`]: the byte-level operations the cache role needs from its
//! backend. The in-process store ([`super::memory`]) and the Redis store
//! implement it and pass the same behaviour suite (`tests/api/cache_suite.rs`).

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::kv::keys::KeyTemplate;

/// The outcome of one try at a one-time code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtpOutcome {
    /// Right code: it has been consumed.
    Accepted,
    /// Wrong code: one attempt used.
    Rejected,
    /// No live code (never issued, expired, used, or out of attempts).
    Missing,
}

/// Views taken out of the counters to be written to the database. The batch
/// stays recorded until acknowledged, so a crashed flush is retried with the
/// same id (and the database applies each id once).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewBatch {
    /// Idempotency key of the batch: the database applies each id once.
    pub flush_id: String,
    /// `(property id, views to add)` pairs.
    pub deltas: Vec<(i64, i64)>,
}

/// Byte-level cache operations. Every method may fail (a remote store can
/// be down); callers decide whether that is a miss or an error.
#[async_trait]
pub trait CacheStore: Send + Sync + 'static {
    /// The bytes stored under `key`; `None` when absent or expired.
    async fn get(&self, key: &str) -> anyhow::Result<Option<Bytes>>;
    /// Stores `value` under `key` for `ttl`, replacing any earlier value.
    async fn set(&self, key: &str, value: Bytes, ttl: Duration) -> anyhow::Result<()>;
    /// Deletes keys; returns how many existed.
    async fn delete(&self, keys: &[String]) -> anyhow::Result<u64>;
    /// Deletes every key matching a glob `pattern` (over full keys), without
    /// blocking the store; returns how many were removed. Operators only.
    async fn delete_pattern(&self, pattern: &str) -> anyhow::Result<u64>;

    /// Gets and deletes `key` in one atomic step: of two concurrent takers,
    /// one gets the value and the other nothing.
    async fn take(&self, key: &str) -> anyhow::Result<Option<Bytes>>;
    /// Adds `by` to the counter `key` (created at 0) and returns the new
    /// value; a new counter expires after `ttl`.
    async fn incr(&self, key: &str, by: i64, ttl: Duration) -> anyhow::Result<i64>;

    /// Current generation of a namespace (0 if never bumped).
    async fn generation(&self, key: &str) -> anyhow::Result<u64>;
    /// Bumps a namespace generation, making every key built on the old one
    /// unreachable at once.
    async fn bump(&self, key: &str) -> anyhow::Result<u64>;

    /// Current generations of several namespaces, in order. A remote store
    /// must read them with a call sent after this was called (never an
    /// answer it had before): the near-cache's coherence rests on it. Redis
    /// shares one such call among concurrent callers.
    async fn generations(&self, keys: &[String]) -> anyhow::Result<Vec<u64>> {
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            out.push(self.generation(key).await?);
        }
        Ok(out)
    }

    /// The generations `template` embeds and the entry stored under the key
    /// they render to. A store that can should do this in one round trip
    /// (Redis: one script); the default takes one call per generation plus
    /// one for the entry.
    async fn lookup(&self, template: &KeyTemplate) -> anyhow::Result<(Vec<u64>, Option<Bytes>)> {
        let mut generations = Vec::with_capacity(template.generation_keys().len());
        for key in template.generation_keys() {
            generations.push(self.generation(key).await?);
        }
        let value = self.get(&template.render(&generations)).await?;
        Ok((generations, value))
    }

    /// Takes the cross-process compute lock `key` for `ttl` if nobody holds
    /// it; `token` identifies the holder for [`Self::unlock`]. A store that
    /// lives inside one process returns `true`: the facade's in-process
    /// single flight already covers it.
    async fn try_lock(&self, key: &str, token: &str, ttl: Duration) -> anyhow::Result<bool>;
    /// Releases a lock taken with `token` (a lock that expired and was taken
    /// by someone else is left alone).
    async fn unlock(&self, key: &str, token: &str) -> anyhow::Result<()>;

    /// Stores a one-time code hash with a TTL, replacing any earlier code.
    async fn otp_put(&self, key: &str, code_hash: &str, ttl: Duration) -> anyhow::Result<()>;
    /// Checks a code hash and consumes the code on success, in one atomic
    /// step; after `max_attempts` wrong tries the code is dead.
    async fn otp_attempt(
        &self,
        key: &str,
        candidate_hash: &str,
        max_attempts: u32,
    ) -> anyhow::Result<OtpOutcome>;

    /// Counts one view; returns the views of that property not yet in the
    /// database (including any batch being flushed).
    async fn views_incr(&self, id: i64) -> anyhow::Result<i64>;
    /// Views of a property not yet in the database.
    async fn views_pending(&self, id: i64) -> anyhow::Result<i64>;
    /// The oldest unacknowledged batch, or a new one made of every pending
    /// count; `None` if there is nothing to flush.
    async fn views_take(&self) -> anyhow::Result<Option<ViewBatch>>;
    /// Forgets a batch once the database has it.
    async fn views_ack(&self, flush_id: &str) -> anyhow::Result<()>;

    /// Health check for `/health`: an error when the store cannot be reached.
    async fn ping(&self) -> anyhow::Result<()>;
}
