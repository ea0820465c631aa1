//! The cache role: cache-aside with single flight, whole-response caching,
//! generation-based invalidation and one-time codes, over a [`CacheStore`]
//! (in-process or Redis). View counters live on the cache role's Redis too,
//! but belong to [`crate::views`].
//!
//! Invalidation never walks the keyspace: keys embed the generation of
//! their namespace, and a write bumps that generation before it answers, so
//! every older entry becomes unreachable at once and a read that was in
//! flight during the write can only refill a key nobody reads any more.
//!
//! The cache is an optimisation: when the store fails, reads are misses,
//! writes are skipped and callers compute from the database.
//!
//! Parts: [`policy`] (what is cached, for how long, and what each domain
//! event makes stale: the API handlers use), [`store::CacheStore`] (values
//! and generations) with [`memory`] (in-process, the embedded default) and
//! [`redis`]; [`otp`] (one-time codes), a trait with both implementations; [`near`] (the coherent in-process
//! copy of hot stored responses in front of Redis); [`codec`] (the byte
//! format the stores hold: header byte, LZ4 above a threshold);
//! [`response`] (whole responses as sent: ETag and compressed variants made
//! at fill time); [`api`] (the guide's helper functions); and [`Cache`],
//! the facade: metrics, encoding, single flight in a process and across
//! processes.

pub mod admin;
pub mod api;
pub mod codec;
pub mod memory;
pub mod near;
pub mod otp;
pub mod policy;
pub mod redis;
pub mod response;
pub mod stats;
pub mod store;

use foldhash::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use crate::kv::keys::Namespace;
use crate::kv::keys::{KeyTemplate, Keys};
pub use otp::{OtpOutcome, OtpStore};
pub use policy::{Entry, Event};
pub use store::CacheStore;

/// How long a cross-process compute lock lives if its holder never releases
/// it (crashed): longer than any computation should take.
const LOCK_TTL: Duration = Duration::from_secs(5);
/// How long a caller waits for another process's computation before it
/// computes the value itself: a bound, so nobody waits on a slow or dead
/// holder for long.
const LOCK_WAIT: Duration = Duration::from_secs(2);
/// Pause between two looks at a value another process is computing.
const LOCK_POLL: Duration = Duration::from_millis(20);

/// The cache facade the service uses: encoding ([`codec`]), metrics
/// (`cache_requests_total{family,outcome}`, `cache_latency_seconds{family}`),
/// single flight, and the rule that a failing store is a miss.
#[derive(Clone)]
pub struct Cache {
    store: Arc<dyn CacheStore>,
    otps: Arc<dyn otp::OtpStore>,
    keys: Keys,
    flights: Arc<Flights>,
    /// Invalidations this process has started: part of the single-flight
    /// key of a computation made without the store (it cannot be read), so
    /// a read that starts after one of our writes never shares a
    /// computation that began before it.
    writes: Arc<std::sync::atomic::AtomicU64>,
    /// Generation counters whose bump failed (store unreachable) and is
    /// being retried: until it succeeds this process bypasses the cache for
    /// them, so it never serves what its own write made stale.
    unbumped: Arc<Mutex<HashSet<String>>>,
    /// Hits, misses and errors per family, shared through the store by
    /// [`stats::flush`].
    stats: Arc<stats::HitStats>,
    /// Stored responses held in process memory ([`near`]); `None` when the
    /// store is itself in-process.
    near: Option<Arc<near::NearCache>>,
}

fn record(stats: &stats::HitStats, family: &'static str, outcome: &'static str) {
    crate::telemetry::count(
        "cache_requests_total",
        &[("family", family), ("outcome", outcome)],
        1,
    );
    stats.count(family, outcome);
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The outcome of waiting for other processes computing a key.
enum Turn {
    /// Someone else stored the value meanwhile.
    Filled(Bytes),
    /// Compute it; holding the cross-process lock if one was taken.
    Compute(Option<HeldLock>),
}

/// A cross-process compute lock this process holds. Released explicitly
/// after the computation; if the holder's future is dropped first (client
/// gone, request deadline), `Drop` releases it in the background, so other
/// processes do not wait [`LOCK_WAIT`] on a holder that is no longer there.
struct HeldLock {
    store: Arc<dyn CacheStore>,
    key: String,
    token: String,
    released: bool,
}

impl HeldLock {
    /// Releases the lock (best effort: it expires after [`LOCK_TTL`] anyway).
    async fn release(&mut self) {
        if let Err(e) = self.store.unlock(&self.key, &self.token).await {
            tracing::debug!(error = format!("{e:#}"), "compute lock not released");
        }
        self.released = true;
    }
}

impl Drop for HeldLock {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        let (store, key, token) = (
            self.store.clone(),
            std::mem::take(&mut self.key),
            std::mem::take(&mut self.token),
        );
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = store.unlock(&key, &token).await;
            });
        }
    }
}

/// One key's computation in this process: the turn (held by the caller
/// computing) and the outcome it leaves for every caller waiting on it.
/// Sharing the outcome, a failure included, is the point: when the
/// database is slow or down, callers queued on one key would otherwise each
/// retry the failing computation in turn, one timeout after another.
#[derive(Default)]
struct Flight {
    turn: tokio::sync::Mutex<()>,
    outcome: Mutex<Option<Result<Bytes, Arc<anyhow::Error>>>>,
}

/// The in-process flights, by key.
type Flights = Mutex<HashMap<String, Arc<Flight>>>;

/// A computation's failure as each caller that shared it gets it: the
/// original error stays reachable as its source, so callers that look
/// along the chain (a database outage becomes a 503) still find it.
#[derive(Debug)]
struct SharedFailure(Arc<anyhow::Error>);

impl std::fmt::Display for SharedFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the shared computation failed")
    }
}

impl std::error::Error for SharedFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        let inner: &(dyn std::error::Error + Send + Sync + 'static) = self.0.as_ref().as_ref();
        Some(inner)
    }
}

fn shared(outcome: &Result<Bytes, Arc<anyhow::Error>>) -> anyhow::Result<Bytes> {
    match outcome {
        Ok(v) => Ok(v.clone()),
        Err(e) => Err(anyhow::Error::new(SharedFailure(e.clone()))),
    }
}

/// This caller's share of a key's in-process flight. Whoever drops the last
/// share removes the map entry, on every path, cancellation included: the
/// map is keyed by strings clients choose (query strings), so an entry left
/// behind by a dropped request would be a leak anyone can grow.
struct FlightShare<'a> {
    flights: &'a Flights,
    key: &'a str,
    /// Always `Some` until dropped (taken in `Drop`, under the map's lock).
    flight: Option<Arc<Flight>>,
}

impl<'a> FlightShare<'a> {
    fn join(flights: &'a Flights, key: &'a str) -> Self {
        let flight = lock(flights).entry(key.to_owned()).or_default().clone();
        FlightShare {
            flights,
            key,
            flight: Some(flight),
        }
    }

    fn flight(&self) -> anyhow::Result<&Flight> {
        self.flight
            .as_deref()
            .ok_or_else(|| anyhow::anyhow!("single flight share used after release"))
    }
}

impl Drop for FlightShare<'_> {
    fn drop(&mut self) {
        // Shares are taken AND given back under the map's lock, so the count
        // seen here is exact (2: the map's and ours). Our reference is
        // released before the lock is: checked under the lock but released
        // after it, two last shares dropping together could each see the
        // other's and both leave the entry behind.
        let mut flights = lock(self.flights);
        if let Some(flight) = self.flight.take() {
            if Arc::strong_count(&flight) <= 2 {
                flights.remove(self.key);
            }
            drop(flight);
        }
        drop(flights);
    }
}

impl Cache {
    /// A cache over its two stores; clones share them, the single
    /// flight, pending bumps and hit stats.
    pub fn from_parts(
        store: Arc<dyn CacheStore>,
        otps: Arc<dyn otp::OtpStore>,
        keys: Keys,
    ) -> Self {
        Cache {
            store,
            otps,
            keys,
            flights: Arc::default(),
            writes: Arc::default(),
            unbumped: Arc::default(),
            stats: Arc::default(),
            near: None,
        }
    }

    /// The embedded default's cache: every store in this process, values
    /// bounded by `max_bytes`.
    pub fn memory(max_bytes: u64, keys: Keys) -> Self {
        Cache::from_parts(
            Arc::new(memory::MemoryStore::new(max_bytes)),
            Arc::new(otp::MemoryOtps::default()),
            keys,
        )
    }

    /// The cache on the cache role's Redis (no near-cache until
    /// [`Self::with_near_cache`]).
    pub fn redis(role: crate::kv::RedisRole, keys: Keys) -> Self {
        Cache::from_parts(
            Arc::new(redis::RedisStore::new(role.clone(), keys.clone())),
            Arc::new(otp::RedisOtps::new(role)),
            keys,
        )
    }

    /// Puts a near-cache of at most `max_bytes` in front of the store (for a
    /// store in another process; see [`near`]). 0 leaves it out.
    pub fn with_near_cache(mut self, max_bytes: u64) -> Self {
        self.near = (max_bytes > 0).then(|| Arc::new(near::NearCache::new(max_bytes)));
        self
    }

    /// The near-cache, if there is one.
    pub fn near(&self) -> Option<&near::NearCache> {
        self.near.as_deref()
    }

    fn stats(&self) -> &stats::HitStats {
        &self.stats
    }

    /// The key builder, for callers that build templates for [`Self::get_or_compute_in`].
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// Keys being computed in this process now (each has a single-flight
    /// entry); 0 when idle, whatever happened to earlier callers.
    pub fn flights_in_progress(&self) -> usize {
        lock(&self.flights).len()
    }

    /// The raw store: no codec, metrics or single flight (health checks, tests).
    pub fn store(&self) -> &Arc<dyn CacheStore> {
        &self.store
    }

    /// The decoded value of `key`, without metrics.
    async fn fetch(&self, key: &str) -> anyhow::Result<Option<Bytes>> {
        match self.store.get(key).await? {
            Some(stored) => Ok(Some(codec::decode(stored)?)),
            None => Ok(None),
        }
    }

    /// Records the outcome and latency of one read of `family`.
    fn observe(
        &self,
        family: &'static str,
        started: Instant,
        res: anyhow::Result<Option<Bytes>>,
    ) -> Option<Bytes> {
        crate::telemetry::observe(
            "cache_latency_seconds",
            &[("family", family)],
            started.elapsed().as_secs_f64(),
        );
        match res {
            Ok(Some(b)) => {
                record(&self.stats, family, "hit");
                Some(b)
            }
            Ok(None) => {
                record(&self.stats, family, "miss");
                None
            }
            Err(e) => {
                record(&self.stats, family, "error");
                tracing::warn!(family, error = format!("{e:#}"), "cache read failed");
                None
            }
        }
    }

    /// Stored bytes of `key`, or `None` on a miss or a store failure.
    pub async fn get_bytes(&self, family: &'static str, key: &str) -> Option<Bytes> {
        let started = Instant::now();
        let res = self.fetch(key).await;
        self.observe(family, started, res)
    }

    /// Stores bytes (compressed when large); a failure is logged and
    /// otherwise ignored.
    pub async fn set_bytes(&self, family: &'static str, key: &str, value: Bytes, ttl: Duration) {
        if let Err(e) = self.store.set(key, codec::encode(&value), ttl).await {
            record(&self.stats, family, "error");
            tracing::warn!(family, error = format!("{e:#}"), "cache write failed");
        }
    }

    /// The generation of a namespace, or `None` when the store cannot say
    /// (then the caller must not use the cache for this request).
    pub async fn generation(&self, ns: Namespace) -> Option<u64> {
        let key = self.keys.generation(ns);
        if lock(&self.unbumped).contains(&key) {
            return None;
        }
        match self.store.generation(&key).await {
            Ok(g) => Some(g),
            Err(e) => {
                record(&self.stats, "generation", "error");
                tracing::warn!(
                    ?ns,
                    error = format!("{e:#}"),
                    "cache generation read failed"
                );
                None
            }
        }
    }

    /// The generations `template` embeds, read after this call began (on
    /// Redis: one round trip shared with every request waiting meanwhile);
    /// `None` when they cannot be used now (a bump of ours is pending, or
    /// the store failed), and then the caller must not use a near-cache.
    pub async fn fresh_generations(&self, template: &KeyTemplate) -> Option<Vec<u64>> {
        let keys = template.generation_keys();
        {
            let unbumped = lock(&self.unbumped);
            if keys.iter().any(|k| unbumped.contains(k)) {
                return None;
            }
        }
        match self.store.generations(keys).await {
            Ok(g) if g.len() == keys.len() => Some(g),
            Ok(_) => None,
            Err(e) => {
                record(&self.stats, "generation", "error");
                tracing::warn!(error = format!("{e:#}"), "cache generations read failed");
                None
            }
        }
    }

    /// Makes every cached entry of a namespace stale, in O(1); an error
    /// when the store cannot be reached. Then this process does not use the
    /// namespace's cache until a bump of its own lands (retried in the
    /// background for that purpose only: what makes the change visible on
    /// every instance is the outbox's relay, `crate::outbox`).
    ///
    /// The bump runs in a task of its own and this waits for it: a request
    /// cancelled after its write (client gone, deadline) still invalidates.
    pub async fn invalidate(&self, ns: Namespace) -> anyhow::Result<()> {
        self.writes
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let this = self.clone();
        let task = tokio::spawn(async move { this.invalidate_now(ns).await });
        task.await
            .map_err(|e| anyhow::anyhow!("cache invalidation task failed: {e}"))?
    }

    async fn invalidate_now(&self, ns: Namespace) -> anyhow::Result<()> {
        let key = self.keys.generation(ns);
        let bumped = self.store.bump(&key).await;
        if let Err(e) = &bumped {
            record(&self.stats, "generation", "error");
            tracing::error!(
                ?ns,
                error = format!("{e:#}"),
                "cache invalidation failed; retrying"
            );
            if lock(&self.unbumped).insert(key.clone()) {
                let (store, unbumped) = (self.store.clone(), self.unbumped.clone());
                tokio::spawn(async move {
                    let mut pause = Duration::from_millis(100);
                    loop {
                        tokio::time::sleep(pause).await;
                        if store.bump(&key).await.is_ok() {
                            lock(&unbumped).remove(&key);
                            tracing::info!("delayed cache invalidation done");
                            return;
                        }
                        pause = (pause * 2).min(Duration::from_secs(5));
                    }
                });
            }
        }
        bumped.map(|_| ())
    }

    /// Deletes every cache entry whose logical key matches the glob
    /// `pattern` (e.g. `property:*`), with SCAN + UNLINK in batches on Redis:
    /// the guide's `invalidate_cache_pattern`, for operators. The request
    /// path invalidates with [`Self::invalidate`] instead, in O(1).
    pub async fn invalidate_pattern(&self, pattern: &str) -> anyhow::Result<u64> {
        self.store.delete_pattern(&self.keys.cache(pattern)).await
    }

    /// Cache-aside: the cached value of `key`, or `compute()` stored for
    /// `ttl`. Concurrent callers for one key wait for the one computation
    /// instead of repeating it, in this process and across processes.
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
        let mut slot = Some(compute);
        let mut computed = None;
        let bytes = self
            .get_or_compute_bytes(family, key, ttl, || to_bytes(slot.take(), &mut computed))
            .await?;
        from_bytes(&self.stats, family, bytes, computed, slot).await
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
        self.fill(family, key, ttl, compute).await
    }

    /// [`Self::get_or_compute`] for a key embedding namespace generations:
    /// the generations are read first (on Redis one call shared by the
    /// requests waiting together), then the entry they name.
    pub async fn get_or_compute_in<T, F, Fut>(
        &self,
        family: &'static str,
        template: &KeyTemplate,
        ttl: Duration,
        compute: F,
    ) -> anyhow::Result<T>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = anyhow::Result<T>>,
    {
        let mut slot = Some(compute);
        let mut computed = None;
        let bytes = self
            .get_or_compute_bytes_in(family, template, ttl, || {
                to_bytes(slot.take(), &mut computed)
            })
            .await?;
        from_bytes(&self.stats, family, bytes, computed, slot).await
    }

    /// [`Self::get_or_compute_bytes`] for a key embedding namespace
    /// generations (see [`Self::get_or_compute_in`]).
    pub async fn get_or_compute_bytes_in<F, Fut>(
        &self,
        family: &'static str,
        template: &KeyTemplate,
        ttl: Duration,
        compute: F,
    ) -> anyhow::Result<Bytes>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = anyhow::Result<Bytes>>,
    {
        // Generations read after this call began (shared round trip), then
        // the entry they name; without generations (a bump of ours pending,
        // or the store down) the cache is not used for this request, but
        // concurrent callers still compute once.
        match self.fresh_generations(template).await {
            Some(g) => {
                self.get_or_compute_bytes(family, &template.render(&g), ttl, compute)
                    .await
            }
            None => {
                let writes = self.writes.load(std::sync::atomic::Ordering::SeqCst);
                self.once_in_process(&template.uncached_flight(writes), compute)
                    .await
            }
        }
    }

    /// `run()`'s outcome, computed once for every caller of `key` waiting
    /// together in this process: one caller runs, the others get its
    /// outcome, failure included. If the running caller is dropped
    /// (cancelled), the next waiter runs its own.
    async fn once_in_process<F, Fut>(&self, key: &str, run: F) -> anyhow::Result<Bytes>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = anyhow::Result<Bytes>>,
    {
        let share = FlightShare::join(&self.flights, key);
        let flight = share.flight()?;
        let _turn = flight.turn.lock().await;
        if let Some(outcome) = lock(&flight.outcome).as_ref() {
            return shared(outcome);
        }
        let outcome = run().await.map_err(Arc::new);
        let answer = shared(&outcome);
        *lock(&flight.outcome) = Some(outcome);
        answer
    }

    /// The miss path: one computation of `key` at a time in this process
    /// (its outcome, failure included, shared with whoever waited on it)
    /// and across processes (a compute lock in the store; the others read
    /// the value it stored).
    async fn fill<F, Fut>(
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
        self.once_in_process(key, || async move {
            // A caller before us that was dropped may have filled the key.
            if let Ok(Some(v)) = self.fetch(key).await {
                return Ok(v);
            }
            let mut held = match self.cross_process_turn(key).await {
                Turn::Filled(v) => return Ok(v),
                Turn::Compute(held) => held,
            };
            let value = compute().await;
            if let Ok(v) = &value {
                self.set_bytes(family, key, v.clone(), ttl).await;
            }
            if let Some(lock) = held.as_mut() {
                lock.release().await;
            }
            value
        })
        .await
    }

    /// Takes the cross-process compute lock of `key`, or waits (bounded by
    /// [`LOCK_WAIT`]) for the process holding it to store the value. If the
    /// holder vanishes without storing it, the lock frees and we take it;
    /// if the wait runs out or the store fails, we compute without it:
    /// nobody is ever left without an answer.
    async fn cross_process_turn(&self, key: &str) -> Turn {
        let lock_key = self.keys.compute_lock(key);
        let token = uuid::Uuid::new_v4().simple().to_string();
        let deadline = Instant::now() + LOCK_WAIT;
        loop {
            match self.store.try_lock(&lock_key, &token, LOCK_TTL).await {
                Ok(true) => {
                    let mut held = HeldLock {
                        store: self.store.clone(),
                        key: lock_key,
                        token,
                        released: false,
                    };
                    // The previous holder may have stored the value and
                    // released the lock since we last looked.
                    if let Ok(Some(v)) = self.fetch(key).await {
                        held.release().await;
                        return Turn::Filled(v);
                    }
                    return Turn::Compute(Some(held));
                }
                Ok(false) => {}
                Err(_) => return Turn::Compute(None),
            }
            if Instant::now() >= deadline {
                tracing::warn!("gave up waiting for another process to fill a cache key");
                return Turn::Compute(None);
            }
            tokio::time::sleep(LOCK_POLL).await;
            match self.fetch(key).await {
                Ok(Some(v)) => return Turn::Filled(v),
                Ok(None) => {}
                Err(_) => return Turn::Compute(None),
            }
        }
    }
}

/// Runs the typed computation (once) and keeps its value, so that the
/// caller that computed does not deserialize what it just serialized.
async fn to_bytes<T, F, Fut>(compute: Option<F>, computed: &mut Option<T>) -> anyhow::Result<Bytes>
where
    T: Serialize,
    F: FnOnce() -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    let compute = compute.ok_or_else(|| anyhow::anyhow!("cache computation called twice"))?;
    let value = compute().await?;
    let bytes = Bytes::from(serde_json::to_vec(&value)?);
    *computed = Some(value);
    Ok(bytes)
}

/// The typed value: the one computed, or the cached one deserialized. An
/// entry that no longer deserializes (written by another version of the
/// service) is counted as an error and the value computed afresh.
async fn from_bytes<T, F, Fut>(
    stats: &stats::HitStats,
    family: &'static str,
    bytes: Bytes,
    computed: Option<T>,
    compute: Option<F>,
) -> anyhow::Result<T>
where
    T: DeserializeOwned,
    F: FnOnce() -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    if let Some(v) = computed {
        return Ok(v);
    }
    match serde_json::from_slice(&bytes) {
        Ok(v) => Ok(v),
        Err(e) => {
            record(stats, family, "error");
            tracing::warn!(family, error = %e, "cached value does not deserialize; computing");
            let compute =
                compute.ok_or_else(|| anyhow::anyhow!("cached value does not deserialize: {e}"))?;
            compute().await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache() -> Cache {
        Cache::memory(1 << 20, Keys::new("test:"))
    }

    #[tokio::test]
    async fn a_dropped_filler_neither_blocks_its_key_nor_leaks_its_entry() -> anyhow::Result<()> {
        let cache = cache();
        let ttl = Duration::from_secs(60);
        // A computation that never finishes, abandoned by its caller (the
        // client went away, the request deadline passed).
        let stuck = cache.get_or_compute_bytes("test", "k", ttl, || async {
            std::future::pending::<anyhow::Result<Bytes>>().await
        });
        assert!(
            tokio::time::timeout(Duration::from_millis(20), stuck)
                .await
                .is_err()
        );
        assert_eq!(cache.flights_in_progress(), 0, "entry removed on drop");
        // The key is free: the next caller computes at once.
        let v = tokio::time::timeout(
            Duration::from_secs(1),
            cache.get_or_compute_bytes("test", "k", ttl, || async { Ok(Bytes::from("v")) }),
        )
        .await??;
        assert_eq!(v, Bytes::from("v"));
        assert_eq!(cache.flights_in_progress(), 0);
        Ok(())
    }

    /// A store that cannot be reached: every call fails.
    struct DownStore;

    #[async_trait::async_trait]
    impl CacheStore for DownStore {
        async fn get(&self, _: &str) -> anyhow::Result<Option<Bytes>> {
            anyhow::bail!("down")
        }
        async fn set(&self, _: &str, _: Bytes, _: Duration) -> anyhow::Result<()> {
            anyhow::bail!("down")
        }
        async fn delete(&self, _: &[String]) -> anyhow::Result<u64> {
            anyhow::bail!("down")
        }
        async fn delete_pattern(&self, _: &str) -> anyhow::Result<u64> {
            anyhow::bail!("down")
        }
        async fn take(&self, _: &str) -> anyhow::Result<Option<Bytes>> {
            anyhow::bail!("down")
        }
        async fn incr(&self, _: &str, _: i64, _: Duration) -> anyhow::Result<i64> {
            anyhow::bail!("down")
        }
        async fn generation(&self, _: &str) -> anyhow::Result<u64> {
            anyhow::bail!("down")
        }
        async fn bump(&self, _: &str) -> anyhow::Result<u64> {
            anyhow::bail!("down")
        }
        async fn try_lock(&self, _: &str, _: &str, _: Duration) -> anyhow::Result<bool> {
            anyhow::bail!("down")
        }
        async fn unlock(&self, _: &str, _: &str) -> anyhow::Result<()> {
            anyhow::bail!("down")
        }
        async fn ping(&self) -> anyhow::Result<()> {
            anyhow::bail!("down")
        }
    }

    /// `n` concurrent callers of one key whose computation takes a while;
    /// returns how many answers were errors and how often it ran.
    async fn concurrent_misses(
        cache: &Cache,
        fails: bool,
        n: usize,
    ) -> anyhow::Result<(usize, u32)> {
        let runs = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let template = cache.keys().property_detail_template(7);
        let callers = (0..n).map(|_| {
            let runs = runs.clone();
            let template = &template;
            async move {
                cache
                    .get_or_compute_bytes_in("test", template, Duration::from_secs(60), || async {
                        runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(30)).await;
                        if fails {
                            // An error whose cause callers look for along the chain.
                            return Err(anyhow::Error::new(sqlx::Error::PoolTimedOut)
                                .context("loading property 7"));
                        }
                        Ok(Bytes::from("v"))
                    })
                    .await
            }
        });
        let answers = futures::future::join_all(callers).await;
        let mut errors = 0;
        for a in answers {
            match a {
                Ok(v) => assert_eq!(v, Bytes::from("v")),
                Err(e) => {
                    assert!(
                        e.chain().any(|c| c.downcast_ref::<sqlx::Error>().is_some()),
                        "the cause stays reachable: {e:#}"
                    );
                    errors += 1;
                }
            }
        }
        assert_eq!(cache.flights_in_progress(), 0);
        Ok((errors, runs.load(std::sync::atomic::Ordering::SeqCst)))
    }

    #[tokio::test]
    async fn a_failing_computation_is_shared_by_its_waiters() -> anyhow::Result<()> {
        let (errors, runs) = concurrent_misses(&cache(), true, 20).await?;
        assert_eq!((errors, runs), (20, 1));
        // The failure is not remembered: the next caller computes again.
        let (errors, runs) = concurrent_misses(&cache(), false, 1).await?;
        assert_eq!((errors, runs), (0, 1));
        Ok(())
    }

    #[tokio::test]
    async fn misses_compute_once_when_the_store_cannot_be_read() -> anyhow::Result<()> {
        let down = Cache::from_parts(
            Arc::new(DownStore),
            Arc::new(otp::MemoryOtps::default()),
            Keys::new("test:"),
        );
        assert_eq!(concurrent_misses(&down, false, 20).await?, (0, 1));
        assert_eq!(concurrent_misses(&down, true, 20).await?, (20, 1));
        Ok(())
    }

    #[tokio::test]
    async fn waiters_of_a_dropped_filler_compute_and_the_map_empties() -> anyhow::Result<()> {
        let cache = cache();
        let ttl = Duration::from_secs(60);
        let first = cache.get_or_compute_bytes("test", "k", ttl, || async {
            std::future::pending::<anyhow::Result<Bytes>>().await
        });
        let second =
            cache.get_or_compute_bytes("test", "k", ttl, || async { Ok(Bytes::from("second")) });
        let mut first = Box::pin(first);
        // Let the first take the turn; the second queues behind it.
        let pending = Duration::from_millis(10);
        assert!(tokio::time::timeout(pending, first.as_mut()).await.is_err());
        let mut second = Box::pin(second);
        assert!(
            tokio::time::timeout(pending, second.as_mut())
                .await
                .is_err()
        );
        assert_eq!(cache.flights_in_progress(), 1);
        drop(first);
        let v = tokio::time::timeout(Duration::from_secs(1), second).await??;
        assert_eq!(v, Bytes::from("second"));
        assert_eq!(cache.flights_in_progress(), 0);
        Ok(())
    }
}
