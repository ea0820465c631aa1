//! Our own cache hit ratio per key family, shared by every instance: each
//! [`super::Cache`] counts hits, misses and errors in memory (besides
//! `/metrics`) and a background task adds the counts to counters in the
//! store every few seconds, off the request path. `stayafrica cache info`
//! reads them.

use foldhash::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use super::Cache;

/// Counts not yet added to the store, by (family, outcome).
#[derive(Debug, Default)]
pub struct HitStats {
    counts: Mutex<HashMap<(&'static str, &'static str), u64>>,
    /// Held (write) while counts move from memory to the store, and (read)
    /// while they are read from both: a reader never sees a count in both
    /// places, or in neither.
    pub(super) moving: tokio::sync::RwLock<()>,
}

/// How long the shared counters live after their last update.
const STATS_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

impl HitStats {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(&'static str, &'static str), u64>> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts one cache outcome of `family`.
    pub fn count(&self, family: &'static str, outcome: &'static str) {
        self.add(family, outcome, 1);
    }

    fn add(&self, family: &'static str, outcome: &'static str, n: u64) {
        *self.lock().entry((family, outcome)).or_default() += n;
    }

    /// The counts not yet added to the store.
    pub fn snapshot(&self) -> HashMap<(&'static str, &'static str), u64> {
        self.lock().clone()
    }

    fn drain(&self) -> Vec<((&'static str, &'static str), u64)> {
        std::mem::take(&mut *self.lock()).into_iter().collect()
    }
}

impl Cache {
    /// Adds this instance's counts to the shared counters; what cannot be
    /// written is kept for the next round.
    pub async fn flush_stats(&self) {
        let _moving = self.stats().moving.write().await;
        for ((family, outcome), n) in self.stats().drain() {
            let name = self.keys().cache_stats(family, outcome);
            let by = i64::try_from(n).unwrap_or(i64::MAX);
            if self.store().incr(&name, by, STATS_TTL).await.is_err() {
                self.stats().add(family, outcome, n);
            }
        }
    }

    /// Flushes the counts every `every` until the process ends.
    pub fn spawn_stats_flusher(&self, every: Duration) {
        let cache = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                cache.flush_stats().await;
            }
        });
    }
}
