//! The in-process cache store of the embedded default: moka (TinyLFU,
//! per-entry TTL, bounded by bytes) for values, and small locked maps for
//! generations, one-time codes and view counters.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use moka::Expiry;
use subtle::ConstantTimeEq;

use super::store::{CacheStore, OtpOutcome, ViewBatch};

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

struct Otp {
    hash: String,
    attempts: u32,
    expires: Instant,
}

#[derive(Default)]
struct Views {
    pending: HashMap<i64, i64>,
    /// Batches taken but not acknowledged, oldest first.
    in_flight: Vec<ViewBatch>,
}

/// In-process [`CacheStore`].
pub struct MemoryStore {
    values: moka::future::Cache<String, Entry>,
    generations: Mutex<HashMap<String, u64>>,
    otps: Mutex<HashMap<String, Otp>>,
    views: Mutex<Views>,
    counters: Mutex<HashMap<String, (i64, Instant)>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
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
            .build();
        MemoryStore {
            values,
            generations: Mutex::new(HashMap::new()),
            otps: Mutex::new(HashMap::new()),
            views: Mutex::new(Views::default()),
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

    async fn otp_put(&self, key: &str, code_hash: &str, ttl: Duration) -> anyhow::Result<()> {
        let now = Instant::now();
        let mut otps = lock(&self.otps);
        otps.retain(|_, o| o.expires > now);
        otps.insert(
            key.to_owned(),
            Otp {
                hash: code_hash.to_owned(),
                attempts: 0,
                expires: now + ttl,
            },
        );
        Ok(())
    }

    async fn otp_attempt(
        &self,
        key: &str,
        candidate_hash: &str,
        max_attempts: u32,
    ) -> anyhow::Result<OtpOutcome> {
        let mut otps = lock(&self.otps);
        let Some(otp) = otps.get_mut(key) else {
            return Ok(OtpOutcome::Missing);
        };
        if otp.expires <= Instant::now() || otp.attempts >= max_attempts {
            otps.remove(key);
            return Ok(OtpOutcome::Missing);
        }
        if bool::from(otp.hash.as_bytes().ct_eq(candidate_hash.as_bytes())) {
            otps.remove(key);
            return Ok(OtpOutcome::Accepted);
        }
        otp.attempts += 1;
        if otp.attempts >= max_attempts {
            otps.remove(key);
        }
        Ok(OtpOutcome::Rejected)
    }

    async fn views_incr(&self, id: i64) -> anyhow::Result<i64> {
        let mut v = lock(&self.views);
        *v.pending.entry(id).or_insert(0) += 1;
        Ok(pending_of(&v, id))
    }

    async fn views_pending(&self, id: i64) -> anyhow::Result<i64> {
        Ok(pending_of(&lock(&self.views), id))
    }

    async fn views_take(&self) -> anyhow::Result<Option<ViewBatch>> {
        let mut v = lock(&self.views);
        if let Some(b) = v.in_flight.first() {
            return Ok(Some(b.clone()));
        }
        if v.pending.is_empty() {
            return Ok(None);
        }
        let mut deltas: Vec<(i64, i64)> = std::mem::take(&mut v.pending).into_iter().collect();
        deltas.sort_unstable();
        let batch = ViewBatch {
            flush_id: uuid::Uuid::new_v4().to_string(),
            deltas,
        };
        v.in_flight.push(batch.clone());
        Ok(Some(batch))
    }

    async fn views_ack(&self, flush_id: &str) -> anyhow::Result<()> {
        lock(&self.views)
            .in_flight
            .retain(|b| b.flush_id != flush_id);
        Ok(())
    }

    async fn ping(&self) -> anyhow::Result<()> {
        Ok(())
    }
}

fn pending_of(v: &Views, id: i64) -> i64 {
    let in_flight: i64 = v
        .in_flight
        .iter()
        .flat_map(|b| b.deltas.iter())
        .filter(|(pid, _)| *pid == id)
        .map(|(_, d)| d)
        .sum();
    v.pending.get(&id).copied().unwrap_or(0) + in_flight
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
