//! The in-process limiter: the same GCRA as the Redis script over a moka
//! cache of timestamps. (governor keeps GCRA state too, but does not expose
//! the remaining count and reset time the `X-RateLimit-*` headers need in
//! the same terms as the Redis script, so both share [`super::gcra`].)
//!
//! Why moka: each key's state is worth keeping only until its TAT (after
//! that the key holds no information), so every entry expires exactly then
//! (per-entry expiry on a timer wheel, no sweep of the map), the map has a
//! size bound whatever the number of clients, and checks of different keys
//! do not contend on one lock. `and_compute_with` serialises the checks of
//! one key, so a check stays one atomic read-modify-write.
//!
//! At the bound, moka's admission policy (TinyLFU) keeps the states of keys
//! seen often (a client hammering the service) and may drop rarely seen
//! ones; a dropped state is a fresh allowance for that key. That only
//! happens with more than [`MAX_STATE_BYTES`] of live state.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use moka::Expiry;
use moka::future::Cache;
use moka::ops::compute::Op;

use super::LimiterBackend;
use super::gcra::{self, Decision};
use crate::config::Rate;

/// Bound on the limiter's state, in bytes of key plus timestamp (a few
/// hundred thousand live clients at typical key lengths).
pub const MAX_STATE_BYTES: u64 = 64 * 1024 * 1024;

/// A key's TAT, in microseconds since the limiter's origin.
#[derive(Debug, Clone, Copy)]
struct Tat(i64);

/// Expires each entry when its TAT passes.
struct UntilTat {
    origin: Instant,
}

impl UntilTat {
    fn left(&self, tat: &Tat, at: Instant) -> Option<Duration> {
        let tat_at = self.origin + Duration::from_micros(u64::try_from(tat.0).unwrap_or(0));
        Some(tat_at.saturating_duration_since(at))
    }
}

impl Expiry<String, Tat> for UntilTat {
    fn expire_after_create(
        &self,
        _key: &String,
        tat: &Tat,
        created_at: Instant,
    ) -> Option<Duration> {
        self.left(tat, created_at)
    }

    fn expire_after_update(
        &self,
        _key: &String,
        tat: &Tat,
        updated_at: Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        self.left(tat, updated_at)
    }
}

/// In-process [`LimiterBackend`].
pub struct MemoryLimiter {
    origin: Instant,
    state: Cache<String, Tat>,
}

impl Default for MemoryLimiter {
    fn default() -> Self {
        MemoryLimiter::with_capacity(MAX_STATE_BYTES)
    }
}

impl MemoryLimiter {
    /// A limiter keeping at most about `bytes` of state.
    pub fn with_capacity(bytes: u64) -> Self {
        let origin = Instant::now();
        MemoryLimiter {
            origin,
            state: Cache::builder()
                .max_capacity(bytes)
                .weigher(|k: &String, _| u32::try_from(k.len() + 8).unwrap_or(u32::MAX))
                .expire_after(UntilTat { origin })
                .build(),
        }
    }

    fn now_us(&self) -> i64 {
        i64::try_from(self.origin.elapsed().as_micros()).unwrap_or(i64::MAX)
    }

    /// Keys with live state (approximate: moka applies its bookkeeping lazily).
    pub async fn live_keys(&self) -> u64 {
        self.state.run_pending_tasks().await;
        self.state.entry_count()
    }
}

#[async_trait]
impl LimiterBackend for MemoryLimiter {
    async fn check(&self, key: &str, rate: Rate) -> anyhow::Result<Decision> {
        let period = i64::try_from(rate.period.as_micros()).unwrap_or(i64::MAX);
        let mut decision = None;
        self.state
            .entry_by_ref(key)
            .and_compute_with(|entry| {
                // Read the clock under the key's lock: checks of one key see
                // non-decreasing times.
                let now = self.now_us();
                let tat = entry.map(|e| e.into_value().0).filter(|t| *t > now);
                let (d, new_tat) = gcra::check(tat, now, rate.limit, period);
                decision = Some(d);
                std::future::ready(match new_tat {
                    Some(t) => Op::Put(Tat(t)),
                    None => Op::Nop,
                })
            })
            .await;
        decision.ok_or_else(|| anyhow::anyhow!("rate limit check did not run"))
    }

    async fn reset(&self, key: &str) -> anyhow::Result<()> {
        self.state.invalidate(key).await;
        Ok(())
    }

    async fn ping(&self) -> anyhow::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn state_expires_with_its_tat_and_stays_bounded() -> anyhow::Result<()> {
        let limiter = MemoryLimiter::with_capacity(64 * 1024);
        let rate = Rate::new(1, Duration::from_millis(50));
        for i in 0..20_000 {
            limiter.check(&format!("client:{i}"), rate).await?;
        }
        let live = limiter.live_keys().await;
        assert!(live < 20_000, "bounded: {live} keys kept of 20,000");
        // moka's timer wheel removes expired entries in buckets of about
        // a second.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert_eq!(limiter.live_keys().await, 0, "every TAT has passed");
        Ok(())
    }

    #[tokio::test]
    async fn concurrent_checks_of_one_key_admit_exactly_the_limit() -> anyhow::Result<()> {
        let limiter = std::sync::Arc::new(MemoryLimiter::default());
        let rate = Rate::new(50, Duration::from_secs(3600));
        let tasks: Vec<_> = (0..200)
            .map(|_| {
                let l = limiter.clone();
                tokio::spawn(async move { l.check("one", rate).await })
            })
            .collect();
        let mut allowed = 0;
        for t in tasks {
            if t.await??.allowed {
                allowed += 1;
            }
        }
        assert_eq!(allowed, 50);
        Ok(())
    }
}
