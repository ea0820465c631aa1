//! The near-cache: stored responses kept in this process's memory in front
//! of the shared (Redis) cache, so that a hit sends bytes it already holds
//! instead of transferring the payload from Redis on every request.
//!
//! Design: **coalesced validation** (not client tracking). Entries are
//! keyed by the rendered cache key, which embeds the generations of the
//! namespaces the entry depends on. A key's generations only move up (a
//! write bumps them before it answers; a lost counter restarts above every
//! value it had, see `lua/gen_lookup.lua`), so a key, once rendered, names
//! content of one generation for ever: an entry never needs invalidating,
//! only the generations need reading. Each request reads them from Redis
//! through [`crate::kv::coalesce::Coalescer`], which shares ONE round trip
//! among every request waiting when it is sent and never hands a request
//! the answer of a call sent before that request began.
//!
//! Why that is coherent: a write bumps its generation in Redis before it
//! answers. A read that starts after that answer gets generations from a
//! call sent after it started, so after the bump; it renders the new key,
//! which no entry filled before the write can have, and misses. No read on
//! any instance that starts after a write's response sees the old value —
//! the same guarantee as without a near-cache, with one round trip shared
//! by many requests and no payload transfer on a hit.
//!
//! Why not RESP3 client tracking (invalidation pushes): a push arrives some
//! time after the write answered, and not at all while a connection is
//! being replaced, so a read between the answer and the push would serve
//! the old entry unless every read waited for an ordering barrier, which is
//! a round trip again. Coalesced validation costs that round trip without
//! the push machinery.
//!
//! Bounds: moka, weighed in bytes (key and every stored variant), so the
//! configured size (`STAYAFRICA_NEAR_CACHE_MB`) bounds memory whatever
//! keys clients make us render. Each entry lives at most the family's TTL
//! from when this process stored it; as entries are immutable, the TTL only
//! bounds how long a hot entry stays, not what it shows.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use moka::Expiry;

use super::response::CachedResponse;

/// Bytes counted per entry beyond its key and bodies (the map's own cost).
const ENTRY_OVERHEAD: usize = 96;

#[derive(Clone)]
struct Entry {
    response: CachedResponse,
    ttl: Duration,
}

struct PerEntryTtl;

impl Expiry<String, Entry> for PerEntryTtl {
    fn expire_after_create(&self, _key: &String, e: &Entry, _now: Instant) -> Option<Duration> {
        Some(e.ttl)
    }
}

/// The in-process copy of hot stored responses (see the module docs).
pub struct NearCache {
    entries: moka::future::Cache<String, Entry, foldhash::quality::RandomState>,
    hits: AtomicU64,
}

impl NearCache {
    /// A near-cache holding at most `max_bytes` of keys and bodies.
    pub fn new(max_bytes: u64) -> Self {
        let entries = moka::future::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|key: &String, e: &Entry| {
                let r = &e.response;
                let bytes = key.len()
                    + r.etag.len()
                    + r.identity.len()
                    + r.gzip.as_ref().map_or(0, |b| b.len())
                    + r.br.as_ref().map_or(0, |b| b.len())
                    + ENTRY_OVERHEAD;
                u32::try_from(bytes).unwrap_or(u32::MAX)
            })
            .expire_after(PerEntryTtl)
            .build_with_hasher(foldhash::quality::RandomState::default());
        NearCache {
            entries,
            hits: AtomicU64::new(0),
        }
    }

    /// The response stored under `key`, if this process holds it.
    pub async fn get(&self, key: &str) -> Option<CachedResponse> {
        let hit = self.entries.get(key).await.map(|e| e.response);
        if hit.is_some() {
            self.hits.fetch_add(1, Ordering::Relaxed);
        }
        hit
    }

    /// Reads answered from this near-cache since it was made.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Keeps `response` under `key` for at most `ttl`.
    pub async fn insert(&self, key: String, response: CachedResponse, ttl: Duration) {
        self.entries.insert(key, Entry { response, ttl }).await;
    }

    /// Bytes held now (after pending evictions are applied).
    pub async fn weighted_size(&self) -> u64 {
        self.entries.run_pending_tasks().await;
        self.entries.weighted_size()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[tokio::test]
    async fn the_byte_bound_holds_under_a_flood_of_distinct_keys() -> anyhow::Result<()> {
        let near = NearCache::new(256 * 1024);
        let body = CachedResponse::build(Bytes::from(vec![b'x'; 900]))?;
        for i in 0..10_000 {
            near.insert(format!("k{i}"), body.clone(), Duration::from_secs(60))
                .await;
        }
        let held = near.weighted_size().await;
        assert!(held <= 256 * 1024, "held {held} bytes");
        assert!(held > 128 * 1024, "still caches: {held} bytes");
        Ok(())
    }

    #[tokio::test]
    async fn an_entry_ends_with_its_ttl() -> anyhow::Result<()> {
        let near = NearCache::new(1 << 20);
        let body = CachedResponse::build(Bytes::from_static(b"{}"))?;
        near.insert("a".into(), body.clone(), Duration::from_millis(30))
            .await;
        near.insert("b".into(), body.clone(), Duration::from_secs(60))
            .await;
        assert_eq!(near.get("a").await, Some(body.clone()));
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(near.get("a").await, None);
        assert_eq!(near.get("b").await, Some(body));
        Ok(())
    }
}
