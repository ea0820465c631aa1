//! Our own cache hit ratio per key family, shared by every instance: each
//! process counts hits, misses and errors in memory (besides `/metrics`) and
//! a background task adds the counts to Redis counters every few seconds,
//! off the request path. `stayafrica cache info` reads them.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use super::Cache;

static COUNTS: LazyLock<Mutex<HashMap<(&'static str, &'static str), u64>>> =
    LazyLock::new(Mutex::default);

/// How long the shared counters live after their last update.
const STATS_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// Counts one cache outcome of `family` in this process.
pub fn count(family: &'static str, outcome: &'static str) {
    *COUNTS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry((family, outcome))
        .or_default() += 1;
}

fn drain() -> Vec<((&'static str, &'static str), u64)> {
    std::mem::take(&mut *COUNTS.lock().unwrap_or_else(|e| e.into_inner()))
        .into_iter()
        .collect()
}

/// Adds this process's counts to the shared counters; on failure they are
/// kept for the next round.
pub async fn flush(cache: &Cache) {
    for ((family, outcome), n) in drain() {
        let name = cache.keys().cache_stats(family, outcome);
        if cache
            .store()
            .incr(&name, n as i64, STATS_TTL)
            .await
            .is_err()
        {
            *COUNTS
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry((family, outcome))
                .or_default() += n;
        }
    }
}

/// Flushes every `every` until the process ends.
pub fn spawn_flusher(cache: Cache, every: Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            flush(&cache).await;
        }
    });
}
