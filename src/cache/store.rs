//! [`CacheStore`]: the byte-level operations on values and generations the
//! cache role needs from its backend (one-time codes have a trait of their
//! own: [`super::otp`]; view counters belong to [`crate::views`]). The in-process store ([`super::memory`]) and the Redis store
//! implement it and pass the same behaviour suite (`tests/api/cache_suite.rs`).

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

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

    /// Takes the cross-process compute lock `key` for `ttl` if nobody holds
    /// it; `token` identifies the holder for [`Self::unlock`]. A store that
    /// lives inside one process returns `true`: the facade's in-process
    /// single flight already covers it.
    async fn try_lock(&self, key: &str, token: &str, ttl: Duration) -> anyhow::Result<bool>;
    /// Releases a lock taken with `token` (a lock that expired and was taken
    /// by someone else is left alone).
    async fn unlock(&self, key: &str, token: &str) -> anyhow::Result<()>;

    /// Health check for `/health`: an error when the store cannot be reached.
    async fn ping(&self) -> anyhow::Result<()>;
}
