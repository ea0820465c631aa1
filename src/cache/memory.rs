//! The in-process cache store of the embedded default: moka (TinyLFU,
//! per-entry TTL, bounded by bytes) for values, and a small locked map for
//! generations.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use foldhash::{HashMap, HashMapExt};
use moka::Expiry;

use super::store::CacheStore;

#[derive(Clone)]
struct Entry {
    value: Bytes,
    ttl: Duration,
    /// moka hides expired entries from `get` but `remove` still returns
    /// them: `take` checks this.
    expires: Instant,
}

struct PerEntryTtl;

impl Expiry<String, Entry> for PerEntryTtl {
    fn expire_after_create(&self, _k: &String, v: &Entry, _at: Instant) -> Option<Duration> {
        Some(v.ttl)
    }
    fn expire_after_update(
        &self,
        _k: &String,
        v: &Entry,
        _at: Instant,
        _left: Option<Duration>,
    ) -> Option<Duration> {
        Some(v.ttl)
    }
}

/// In-process [`CacheStore`].
pub struct MemoryStore {
    values: moka::future::Cache<String, Entry, foldhash::quality::RandomState>,
    generations: Mutex<HashMap<String, u64>>,
    counters: Mutex<HashMap<String, (i64, Instant)>>,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain data behind,
    // still consistent: recover it rather than poisoning the cache forever.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl MemoryStore {
    /// A store holding at most `max_bytes` of values.
    pub fn new(max_bytes: u64) -> Self {
        let values = moka::future::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|k: &String, v: &Entry| {
                u32::try_from(k.len() + v.value.len()).unwrap_or(u32::MAX)
            })
            .expire_after(PerEntryTtl)
            .build_with_hasher(foldhash::quality::RandomState::default());
        MemoryStore {
            values,
            generations: Mutex::new(HashMap::new()),
            counters: Mutex::new(HashMap::new()),
        }
    }
}

/// Glob match supporting `*` and `?` (what operators type for patterns).
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[async_trait]
impl CacheStore for MemoryStore {
    async fn get(&self, key: &str) -> anyhow::Result<Option<Bytes>> {
        Ok(self.values.get(key).await.map(|e| e.value))
    }

    async fn take(&self, key: &str) -> anyhow::Result<Option<Bytes>> {
        // moka's remove hands the removed value to exactly one caller.
        let now = Instant::now();
        Ok(self
            .values
            .remove(key)
            .await
            .filter(|e| e.expires > now)
            .map(|e| e.value))
    }

    async fn incr(&self, key: &str, by: i64, ttl: Duration) -> anyhow::Result<i64> {
        let now = Instant::now();
        let mut counters = lock(&self.counters);
        if counters.len() > 10_000 {
            counters.retain(|_, (_, expires)| *expires > now);
        }
        let entry = counters.entry(key.to_owned()).or_insert((0, now + ttl));
        if entry.1 <= now {
            *entry = (0, now + ttl);
        }
        entry.0 += by;
        Ok(entry.0)
    }

    async fn set(&self, key: &str, value: Bytes, ttl: Duration) -> anyhow::Result<()> {
        self.values
            .insert(
                key.to_owned(),
                Entry {
                    value,
                    ttl,
                    expires: Instant::now() + ttl,
                },
            )
            .await;
        Ok(())
    }

    async fn delete(&self, keys: &[String]) -> anyhow::Result<u64> {
        let mut n = 0;
        for k in keys {
            // `remove` also returns entries that have expired but are not
            // yet evicted: count only live ones.
            if self.values.get(k).await.is_some() {
                n += 1;
            }
            self.values.invalidate(k).await;
        }
        Ok(n)
    }

    async fn delete_pattern(&self, pattern: &str) -> anyhow::Result<u64> {
        let matching: Vec<String> = self
            .values
            .iter()
            .filter(|(k, _)| glob_match(pattern, k))
            .map(|(k, _)| (*k).clone())
            .collect();
        self.delete(&matching).await
    }

    async fn generation(&self, key: &str) -> anyhow::Result<u64> {
        Ok(lock(&self.generations).get(key).copied().unwrap_or(0))
    }

    async fn bump(&self, key: &str) -> anyhow::Result<u64> {
        let mut g = lock(&self.generations);
        let v = g.entry(key.to_owned()).or_insert(0);
        *v += 1;
        Ok(*v)
    }

    async fn try_lock(&self, _key: &str, _token: &str, _ttl: Duration) -> anyhow::Result<bool> {
        // One process: the facade's in-process single flight is the lock.
        Ok(true)
    }

    async fn unlock(&self, _key: &str, _token: &str) -> anyhow::Result<()> {
        Ok(())
    }

    async fn ping(&self) -> anyhow::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn globs() {
        assert!(glob_match(
            "stayafrica:cache:property:*",
            "stayafrica:cache:property:list:{g}:g1:x"
        ));
        assert!(glob_match("a?c", "abc"));
        assert!(!glob_match("a*c", "abd"));
        assert!(glob_match("*", ""));
    }
}
