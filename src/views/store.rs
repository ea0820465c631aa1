//! [`ViewStore`]: where counted views wait for the database, and the count
//! each property's detail shows. Two implementations pass one behaviour
//! suite (`tests/api/views_suite.rs`): [`MemoryViews`] here (the embedded
//! default) and [`super::redis::RedisViews`] (the cache role's Redis).
//!
//! The state, per property:
//! - *pending*: views counted since the last flush round began;
//! - *draining*: views of the round being flushed, not yet in a batch;
//! - *batches*: chunks of at most N properties taken for the database,
//!   each with a flush id the database applies once, kept until
//!   acknowledged (a crashed flush retries the same batch);
//! - *shown*: the count the detail shows, the database's count plus every
//!   view not yet in it. A flush step moves views between the database and
//!   the other three without changing their sum, so the shown count is
//!   never touched by a flush: it only grows, one per view, and no cached
//!   entry has to be invalidated when views reach the database.
//!
//! The shown count starts from the database (*seeding*: first view of a
//! property, or after Redis lost the key). Seeding reads the database and
//! the store at two moments, so it is checked: the store keeps an *epoch*
//! that every take and every ack bumps; a seed states the epoch it saw and
//! which of the batches then in flight the database had applied, and is
//! refused (with a fresh snapshot) if the epoch moved meanwhile.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;
use tokio::time::{Duration, Instant};

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain counts behind, still
    // consistent: recover them rather than poisoning the counters forever.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Views taken out of the counters to be written to the database. The batch
/// stays recorded until acknowledged, so a crashed flush is retried with the
/// same id (and the database applies each id once).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewBatch {
    /// Idempotency key of the batch: the database applies each id once.
    pub flush_id: String,
    /// `(property id, views to add)` pairs, sorted by id.
    pub deltas: Vec<(i64, i64)>,
}

/// What the store needs to know to refuse a seed made from a stale
/// snapshot: the epoch and the ids of the batches in flight then.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Bumped by every take and ack.
    pub epoch: u64,
    /// Flush ids of the batches in flight at that epoch.
    pub in_flight: Vec<String>,
}

/// A seed for a property's shown count, read from the database in one
/// snapshot after [`Snapshot`] was taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedBasis {
    /// The snapshot's epoch.
    pub epoch: u64,
    /// The property's `view_count` in the database.
    pub stored: i64,
    /// Which of the snapshot's in-flight batches the database had applied.
    pub applied: Vec<String>,
}

/// The answer of [`ViewStore::seed`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seeded {
    /// The shown count (after the views added by the call).
    Shown(i64),
    /// Not known and not seeded (no basis, or the epoch moved): read the
    /// database for this snapshot and try again.
    Stale(Snapshot),
}

/// The view counters of one deployment. Every method may fail (a remote
/// store can be down).
#[async_trait]
pub trait ViewStore: Send + Sync + 'static {
    /// Counts one view of `id` if its shown count is known and returns the
    /// count after it; `None` (nothing written, no key created) otherwise.
    async fn count(&self, id: i64) -> anyhow::Result<Option<i64>>;
    /// The shown count of `id` after adding `views` (0: read only). If it is
    /// not known yet, `basis` (for the epoch it names) seeds it; without a
    /// basis, or with a stale one, nothing is written and a fresh
    /// [`Snapshot`] comes back.
    async fn seed(&self, id: i64, views: i64, basis: Option<&SeedBasis>) -> anyhow::Result<Seeded>;
    /// Counts a view that could not be shown exactly (seeding kept being
    /// refused): it still reaches the database.
    async fn count_unshown(&self, id: i64) -> anyhow::Result<()>;
    /// The oldest unacknowledged batch; else about `max` properties of the
    /// round being flushed (Redis may add up to a tenth: it scans by pages); else, when `start_round`, a new round made of
    /// every pending count (then its first batch); else `None`.
    async fn take(&self, max: usize, start_round: bool) -> anyhow::Result<Option<ViewBatch>>;
    /// Forgets a batch once the database has it.
    async fn ack(&self, flush_id: &str) -> anyhow::Result<()>;
    /// Forgets the shown count of a property that is gone.
    async fn forget(&self, id: i64) -> anyhow::Result<()>;
}

/// How long the in-process store trusts a shown count before it seeds it
/// again from the database. Within one process a seed is exact at any
/// time; this is for several processes on one SQLite file (each counts
/// into its own store): another process's flushed views reach this one's
/// shown counts within this, as they reached its cached details before.
pub const MEMORY_SHOWN_TTL: Duration = Duration::from_secs(600);

#[derive(Default)]
struct State {
    pending: HashMap<i64, i64>,
    /// Ordered, so that a batch is cut from its front in O(batch): a hash
    /// map keeps the buckets of what was taken, and walking past them made
    /// each batch cost the size of the whole round.
    draining: BTreeMap<i64, i64>,
    /// Batches taken but not acknowledged, oldest first.
    in_flight: Vec<ViewBatch>,
    /// Shown count and when it was seeded.
    shown: HashMap<i64, (i64, Instant)>,
    epoch: u64,
}

impl State {
    fn add(&mut self, id: i64, views: i64) -> Option<i64> {
        let (shown, seeded) = self.shown.get_mut(&id)?;
        if seeded.elapsed() > MEMORY_SHOWN_TTL {
            self.shown.remove(&id);
            return None;
        }
        *shown += views;
        let shown = *shown;
        if views != 0 {
            *self.pending.entry(id).or_insert(0) += views;
        }
        Some(shown)
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot {
            epoch: self.epoch,
            in_flight: self.in_flight.iter().map(|b| b.flush_id.clone()).collect(),
        }
    }
}

/// In-process [`ViewStore`] (the embedded default).
#[derive(Default)]
pub struct MemoryViews {
    state: Mutex<State>,
}

#[async_trait]
impl ViewStore for MemoryViews {
    async fn count(&self, id: i64) -> anyhow::Result<Option<i64>> {
        Ok(lock(&self.state).add(id, 1))
    }

    async fn seed(&self, id: i64, views: i64, basis: Option<&SeedBasis>) -> anyhow::Result<Seeded> {
        let mut s = lock(&self.state);
        if let Some(shown) = s.add(id, views) {
            return Ok(Seeded::Shown(shown));
        }
        let Some(basis) = basis.filter(|b| b.epoch == s.epoch) else {
            return Ok(Seeded::Stale(s.snapshot()));
        };
        let unapplied: i64 = s
            .in_flight
            .iter()
            .filter(|b| !basis.applied.contains(&b.flush_id))
            .flat_map(|b| b.deltas.iter())
            .filter(|(pid, _)| *pid == id)
            .map(|(_, d)| d)
            .sum();
        let not_stored = s.pending.get(&id).copied().unwrap_or(0)
            + s.draining.get(&id).copied().unwrap_or(0)
            + unapplied;
        s.shown
            .insert(id, (basis.stored + not_stored, Instant::now()));
        let shown = s.add(id, views);
        shown
            .map(Seeded::Shown)
            .ok_or_else(|| anyhow::anyhow!("seeded count vanished"))
    }

    async fn count_unshown(&self, id: i64) -> anyhow::Result<()> {
        *lock(&self.state).pending.entry(id).or_insert(0) += 1;
        Ok(())
    }

    async fn take(&self, max: usize, start_round: bool) -> anyhow::Result<Option<ViewBatch>> {
        let mut s = lock(&self.state);
        if let Some(b) = s.in_flight.first() {
            return Ok(Some(b.clone()));
        }
        if s.draining.is_empty() {
            if !start_round || s.pending.is_empty() {
                return Ok(None);
            }
            s.draining = std::mem::take(&mut s.pending).into_iter().collect();
        }
        let rest = match s.draining.keys().nth(max.max(1)).copied() {
            Some(first_left) => s.draining.split_off(&first_left),
            None => BTreeMap::new(),
        };
        let deltas: Vec<(i64, i64)> = std::mem::replace(&mut s.draining, rest)
            .into_iter()
            .filter(|(_, n)| *n != 0)
            .collect();
        let batch = ViewBatch {
            flush_id: uuid::Uuid::new_v4().to_string(),
            deltas,
        };
        s.epoch += 1;
        s.in_flight.push(batch.clone());
        Ok(Some(batch))
    }

    async fn ack(&self, flush_id: &str) -> anyhow::Result<()> {
        let mut s = lock(&self.state);
        s.in_flight.retain(|b| b.flush_id != flush_id);
        s.epoch += 1;
        Ok(())
    }

    async fn forget(&self, id: i64) -> anyhow::Result<()> {
        lock(&self.state).shown.remove(&id);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_shown_count_is_seeded_again_after_its_ttl() -> anyhow::Result<()> {
        let s = MemoryViews::default();
        let basis = |epoch, stored| SeedBasis {
            epoch,
            stored,
            applied: vec![],
        };
        assert_eq!(s.seed(1, 1, Some(&basis(0, 10))).await?, Seeded::Shown(11));
        tokio::time::advance(MEMORY_SHOWN_TTL / 2).await;
        assert_eq!(s.count(1).await?, Some(12));
        tokio::time::advance(MEMORY_SHOWN_TTL).await;
        // Another process flushed 5 views meanwhile: the database says 15,
        // plus the 2 views of this process still pending here.
        assert_eq!(s.count(1).await?, None);
        assert_eq!(s.seed(1, 1, Some(&basis(0, 15))).await?, Seeded::Shown(18));
        Ok(())
    }
}
