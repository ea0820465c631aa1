//! The in-process limiter: the same GCRA as the Redis script over a sharded
//! map of timestamps. (governor keeps GCRA state too, but does not expose
//! the remaining count and reset time the `X-RateLimit-*` headers need in
//! the same terms as the Redis script, so both share [`super::gcra`].)
//!
//! Why a map of our own rather than a cache crate: a check is a few
//! arithmetic steps on one timestamp, made for every API request. moka's
//! `and_compute_with` (used before) serialised the checks of one key with
//! an async per-key lock and a waiter table: about 11% of the embedded
//! service's CPU on a cached list, and a sleeping task woken from the other
//! worker thread whenever two requests of one client met. Here a check
//! holds a plain mutex over one shard for the arithmetic, never across an
//! await, so it is one atomic read-modify-write that cannot be left locked
//! by a dropped future. And the policy we need at the bound is specific:
//!
//! - A key's state is worth keeping only until its TAT (after that it holds
//!   no information), so a shard drops passed TATs whenever it reaches its
//!   share of the bound, and [`MemoryLimiter::live_keys`] sweeps every shard.
//! - If live state alone exceeds the bound (more than
//!   [`MAX_STATE_BYTES`]: a few hundred thousand clients), the shard drops
//!   the half of its entries whose TATs come soonest: those are the
//!   clients closest to a fresh allowance anyway, so the limit loses the
//!   least. A client hammering the service has the latest TAT and is kept.

use foldhash::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use async_trait::async_trait;

use super::LimiterBackend;
use super::Rate;
use super::gcra::{self, Decision};

/// Bound on the limiter's state, in bytes of key plus timestamp and map
/// overhead (a few hundred thousand live clients at typical key lengths).
pub const MAX_STATE_BYTES: u64 = 64 * 1024 * 1024;

/// Shards of the map: checks of different keys rarely meet on one lock.
const SHARDS: usize = 64;

/// What one entry costs besides its key: the TAT, the key's box and the
/// map's slot.
const ENTRY_OVERHEAD: usize = 40;

/// One shard: TATs in microseconds since the limiter's origin, and the
/// bytes they take.
#[derive(Default)]
struct Shard {
    tats: HashMap<Box<str>, i64>,
    bytes: usize,
}

impl Shard {
    fn cost(key: &str) -> usize {
        key.len() + ENTRY_OVERHEAD
    }

    /// Keeps only the entries whose TAT comes after `t` (`t` = now: drops
    /// every passed one).
    fn keep_after(&mut self, t: i64) {
        self.tats.retain(|_, tat| *tat > t);
        self.bytes = self.tats.keys().map(|k| Self::cost(k)).sum();
    }

    /// Makes room for an entry of `cost` bytes within `bound`: passed TATs
    /// first, then, if live state alone is over, the half of the entries
    /// whose TATs come soonest.
    fn make_room(&mut self, cost: usize, bound: usize, now: i64) {
        if self.bytes + cost <= bound {
            return;
        }
        self.keep_after(now);
        if self.bytes + cost <= bound / 2 || self.tats.is_empty() {
            return;
        }
        let mut tats: Vec<i64> = self.tats.values().copied().collect();
        let middle = tats.len() / 2;
        let (_, cut, _) = tats.select_nth_unstable(middle);
        let cut = *cut;
        self.keep_after(cut);
    }
}

/// A shard's lock. A panic cannot leave a shard half-updated (the map's own
/// methods do not panic midway), so a poisoned lock is still consistent.
fn lock(shard: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    shard.lock().unwrap_or_else(PoisonError::into_inner)
}

/// In-process [`LimiterBackend`].
pub struct MemoryLimiter {
    origin: Instant,
    hasher: RandomState,
    shard_bound: usize,
    shards: Box<[Mutex<Shard>]>,
}

impl Default for MemoryLimiter {
    fn default() -> Self {
        MemoryLimiter::with_capacity(MAX_STATE_BYTES)
    }
}

impl MemoryLimiter {
    /// A limiter keeping at most about `bytes` of state.
    pub fn with_capacity(bytes: u64) -> Self {
        let bytes = usize::try_from(bytes).unwrap_or(usize::MAX);
        MemoryLimiter {
            origin: Instant::now(),
            hasher: RandomState::new(),
            shard_bound: (bytes / SHARDS).max(1),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }

    fn now_us(&self) -> i64 {
        i64::try_from(self.origin.elapsed().as_micros()).unwrap_or(i64::MAX)
    }

    fn shard(&self, key: &str) -> MutexGuard<'_, Shard> {
        let i = usize::try_from(self.hasher.hash_one(key)).unwrap_or(0) % SHARDS;
        lock(&self.shards[i])
    }

    /// Keys with live state (a TAT still to come), after dropping the others.
    pub async fn live_keys(&self) -> u64 {
        let now = self.now_us();
        let mut live = 0;
        for shard in &self.shards {
            let mut s = lock(shard);
            s.keep_after(now);
            live += s.tats.len() as u64;
        }
        live
    }

    /// Bytes of state held, as counted against the bound.
    pub fn state_bytes(&self) -> u64 {
        self.shards.iter().map(|s| lock(s).bytes as u64).sum()
    }

    fn check_now(&self, key: &str, rate: Rate) -> Decision {
        let period = i64::try_from(rate.period.as_micros()).unwrap_or(i64::MAX);
        let mut shard = self.shard(key);
        // Read the clock under the shard's lock: checks of one key see
        // non-decreasing times.
        let now = self.now_us();
        let tat = shard.tats.get(key).copied().filter(|t| *t > now);
        let (decision, new_tat) = gcra::check(tat, now, rate.limit, period);
        if let Some(t) = new_tat {
            if let Some(slot) = shard.tats.get_mut(key) {
                *slot = t;
            } else {
                let cost = Shard::cost(key);
                shard.make_room(cost, self.shard_bound, now);
                shard.tats.insert(key.into(), t);
                shard.bytes += cost;
            }
        }
        decision
    }
}

#[async_trait]
impl LimiterBackend for MemoryLimiter {
    async fn check(&self, key: &str, rate: Rate) -> anyhow::Result<Decision> {
        Ok(self.check_now(key, rate))
    }

    async fn reset(&self, key: &str) -> anyhow::Result<()> {
        let mut shard = self.shard(key);
        if shard.tats.remove(key).is_some() {
            shard.bytes -= Shard::cost(key);
        }
        Ok(())
    }

    async fn ping(&self) -> anyhow::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn state_expires_with_its_tat_and_stays_bounded() -> anyhow::Result<()> {
        let bound = 64 * 1024;
        let limiter = MemoryLimiter::with_capacity(bound);
        let rate = Rate::new(1, Duration::from_millis(50));
        for i in 0..20_000 {
            limiter.check(&format!("client:{i}"), rate).await?;
            assert!(limiter.state_bytes() <= bound, "within the bound");
        }
        let live = limiter.live_keys().await;
        assert!(live < 20_000, "bounded: {live} keys kept of 20,000");
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(limiter.live_keys().await, 0, "every TAT has passed");
        assert_eq!(limiter.state_bytes(), 0);
        Ok(())
    }

    #[tokio::test]
    async fn at_the_bound_a_hammering_client_keeps_its_limit() -> anyhow::Result<()> {
        let limiter = MemoryLimiter::with_capacity(64 * 1024);
        let rate = Rate::new(5, Duration::from_secs(3600));
        for _ in 0..5 {
            assert!(limiter.check("hammer", rate).await?.allowed);
        }
        // A flood of distinct clients, each one request, far over the bound.
        for i in 0..50_000 {
            limiter.check(&format!("client:{i}"), rate).await?;
        }
        assert!(
            !limiter.check("hammer", rate).await?.allowed,
            "the client with the latest TAT is never the one dropped"
        );
        Ok(())
    }

    #[tokio::test]
    async fn reset_forgets_a_key() -> anyhow::Result<()> {
        let limiter = MemoryLimiter::default();
        let rate = Rate::new(1, Duration::from_secs(3600));
        assert!(limiter.check("k", rate).await?.allowed);
        assert!(!limiter.check("k", rate).await?.allowed);
        limiter.reset("k").await?;
        assert!(limiter.check("k", rate).await?.allowed);
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
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
