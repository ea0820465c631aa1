//! The cache role: cache-aside with single flight, whole-response caching,
//! generation-based invalidation, one-time codes and view counters, over a
//! [`CacheStore`] (in-process or Redis).
//!
//! Invalidation never walks the keyspace: keys embed the generation of
//! their namespace, and a write bumps that generation before it answers, so
//! every older entry becomes unreachable at once and a read that was in
//! flight during the write can only refill a key nobody reads any more.
//!
//! The cache is an optimisation: when the store fails, reads are misses,
//! writes are skipped and callers compute from the database.

pub mod memory;
pub mod store;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use crate::domain::Email;
use crate::kv::keys::Keys;
pub use store::{CacheStore, OtpOutcome, ViewBatch};

/// Namespace of everything derived from properties (lists, featured, details).
pub const PROPERTIES_NS: &str = "properties";

/// The cache facade the service uses.
#[derive(Clone)]
pub struct Cache {
    store: Arc<dyn CacheStore>,
    keys: Keys,
    flights: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

fn record(family: &'static str, outcome: &'static str) {
    metrics::counter!("cache_requests_total", "family" => family, "outcome" => outcome)
        .increment(1);
}

impl Cache {
    pub fn new(store: Arc<dyn CacheStore>, keys: Keys) -> Self {
        Cache {
            store,
            keys,
            flights: Arc::default(),
        }
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    pub fn store(&self) -> &Arc<dyn CacheStore> {
        &self.store
    }

    /// Stored bytes of `key`, or `None` on a miss or a store failure.
    pub async fn get_bytes(&self, family: &'static str, key: &str) -> Option<Bytes> {
        let started = Instant::now();
        let res = self.store.get(key).await;
        metrics::histogram!("cache_latency_seconds", "family" => family)
            .record(started.elapsed().as_secs_f64());
        match res {
            Ok(Some(b)) => {
                record(family, "hit");
                Some(b)
            }
            Ok(None) => {
                record(family, "miss");
                None
            }
            Err(e) => {
                record(family, "error");
                tracing::warn!(family, error = format!("{e:#}"), "cache read failed");
                None
            }
        }
    }

    /// Stores bytes; a failure is logged and otherwise ignored.
    pub async fn set_bytes(&self, family: &'static str, key: &str, value: Bytes, ttl: Duration) {
        if let Err(e) = self.store.set(key, value, ttl).await {
            record(family, "error");
            tracing::warn!(family, error = format!("{e:#}"), "cache write failed");
        }
    }

    /// The generation of a namespace, or `None` when the store cannot say
    /// (then the caller must not use the cache for this request).
    pub async fn generation(&self, ns: &str) -> Option<u64> {
        match self.store.generation(&self.keys.generation(ns)).await {
            Ok(g) => Some(g),
            Err(e) => {
                record("generation", "error");
                tracing::warn!(ns, error = format!("{e:#}"), "cache generation read failed");
                None
            }
        }
    }

    /// Makes every cached entry of a namespace stale, in O(1).
    pub async fn invalidate(&self, ns: &str) {
        if let Err(e) = self.store.bump(&self.keys.generation(ns)).await {
            record("generation", "error");
            tracing::error!(ns, error = format!("{e:#}"), "cache invalidation failed");
        }
    }

    /// Cache-aside: the cached value of `key`, or `compute()` stored for
    /// `ttl`. Concurrent callers for one key in this process wait for the
    /// one computation instead of repeating it.
    pub async fn get_or_compute<T, F, Fut>(
        &self,
        family: &'static str,
        key: &str,
        ttl: Duration,
        compute: F,
    ) -> anyhow::Result<T>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = anyhow::Result<T>>,
    {
        let mut computed = None;
        let bytes = self
            .get_or_compute_bytes(family, key, ttl, || async {
                let value = compute().await?;
                let bytes = Bytes::from(serde_json::to_vec(&value)?);
                computed = Some(value);
                Ok(bytes)
            })
            .await?;
        match computed {
            Some(v) => Ok(v),
            None => Ok(serde_json::from_slice(&bytes)?),
        }
    }

    /// [`Self::get_or_compute`] for values that are already bytes (whole
    /// responses): a hit returns the stored bytes untouched.
    pub async fn get_or_compute_bytes<F, Fut>(
        &self,
        family: &'static str,
        key: &str,
        ttl: Duration,
        compute: F,
    ) -> anyhow::Result<Bytes>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = anyhow::Result<Bytes>>,
    {
        if let Some(v) = self.get_bytes(family, key).await {
            return Ok(v);
        }
        let flight = {
            let mut flights = self.flights.lock().unwrap_or_else(|e| e.into_inner());
            flights.entry(key.to_owned()).or_default().clone()
        };
        let result = async {
            let _turn = flight.lock().await;
            // Whoever held the turn before us may have filled the key.
            if let Some(v) = self.get_bytes(family, key).await {
                return Ok(v);
            }
            let value = compute().await?;
            self.set_bytes(family, key, value.clone(), ttl).await;
            Ok(value)
        }
        .await;
        let mut flights = self.flights.lock().unwrap_or_else(|e| e.into_inner());
        if Arc::strong_count(&flight) <= 2 {
            flights.remove(key);
        }
        result
    }

    /// Stores a fresh one-time code for `email` (hashed), replacing any
    /// earlier one.
    pub async fn otp_put(&self, email: &Email, code: &str, ttl: Duration) -> anyhow::Result<()> {
        let key = self.keys.otp(email);
        self.store.otp_put(&key, &otp_hash(&key, code), ttl).await
    }

    /// One try at the code of `email`: consumed on success, dead after
    /// `max_attempts` wrong tries.
    pub async fn otp_attempt(
        &self,
        email: &Email,
        code: &str,
        max_attempts: u32,
    ) -> anyhow::Result<OtpOutcome> {
        let key = self.keys.otp(email);
        self.store
            .otp_attempt(&key, &otp_hash(&key, code), max_attempts)
            .await
    }
}

/// Codes are stored as SHA-256 of key and code: a dump of the store does not
/// show live codes. (Six digits can be brute-forced offline by someone who can
/// read the store; the five-minute TTL and attempt limit are the defence
/// online, which is the one that matters.)
fn otp_hash(key: &str, code: &str) -> String {
    let d = Sha256::new()
        .chain_update(key)
        .chain_update(b":")
        .chain_update(code)
        .finalize();
    d.iter().map(|b| format!("{b:02x}")).collect()
}
