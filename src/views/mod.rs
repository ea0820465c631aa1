//! Property views, end to end: counting a view of an existing property's
//! detail, the live count the detail shows, and the flush that moves the
//! counts into the database. Nothing else in the service counts, patches
//! or invalidates anything for views.
//!
//! - A detail request counts a view only for a property that exists: the
//!   counting script writes nothing for an id whose shown count is not
//!   known, and a count is seeded only once the detail lookup found the
//!   property. So a 404 creates no counter and no flush work (and the
//!   HTTP layer caches no entry for it either).
//! - The shown count lives beside the counters ([`store`]): the database's
//!   count plus every view not yet in it. The cached detail holds no count
//!   ([`stored_detail`]); [`Views::detail`] joins the live one. A flush
//!   changes no shown count and so invalidates no cache entry.
//! - [`Views::flush`] moves the counts in chunks of [`FLUSH_CHUNK`]
//!   properties: per chunk one take and one ack (bounded scripts) and one
//!   set-based `UPDATE` in a transaction that records the chunk's flush id,
//!   so a flush that crashes anywhere is retried without losing or
//!   doubling a view.
//!
//! Stores: [`store::MemoryViews`] (embedded default) and
//! [`redis::RedisViews`] (the cache role's Redis), one behaviour suite.

pub mod redis;
pub mod store;

use std::future::Future;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};

use crate::cache::response::{CachedResponse, etag_of};
use crate::db::Db;
use crate::db::properties::Property;
use crate::kv::RedisRole;
use crate::kv::keys::Keys;
pub use store::{SeedBasis, Seeded, Snapshot, ViewBatch, ViewStore};

/// Properties per flush chunk (Redis may add about a tenth: it scans by
/// pages): one take, one `UPDATE` and one ack each. A chunk of this size is
/// a few milliseconds of Redis and of the database, well inside the cache
/// role's timeout, and 100,000 viewed properties are about 100 chunks
/// rather than 100,000 statements.
pub const FLUSH_CHUNK: usize = 1000;

/// How long the database remembers an applied flush id. A batch is retried
/// with its id only while it is in flight, i.e. until the next flush that
/// reaches the database (a minute apart); 30 days leaves room for any
/// outage, and bounds the table (one row per chunk) all the same.
pub const FLUSH_ID_KEEP: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);

/// Tries at seeding a shown count while flush steps keep moving batches
/// under it; each try is one database read and one script, and a flush
/// step takes longer than that, so a second try almost always lands.
const SEED_ATTEMPTS: usize = 8;

/// What one flush did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flushed {
    /// Views moved into the database.
    pub views: i64,
    /// Chunks applied (each one take, one transaction, one ack).
    pub chunks: u64,
}

/// The view counting of one deployment: its store and the database the
/// counts go to. Clones share both.
#[derive(Clone)]
pub struct Views {
    store: Arc<dyn ViewStore>,
    db: Db,
}

impl Views {
    /// Views kept in `store`, flushed into `db`.
    pub fn new(store: Arc<dyn ViewStore>, db: Db) -> Self {
        Views { store, db }
    }

    /// The embedded default: counters in this process.
    pub fn memory(db: Db) -> Self {
        Views::new(Arc::new(store::MemoryViews::default()), db)
    }

    /// Counters on the cache role's Redis, named by `keys`.
    pub fn redis(role: RedisRole, keys: Keys, db: Db) -> Self {
        Views::new(Arc::new(redis::RedisViews::new(role, keys)), db)
    }

    /// The store (tests drive its steps one by one).
    pub fn store(&self) -> &Arc<dyn ViewStore> {
        &self.store
    }

    /// The detail of property `id` with this view counted: `stored` is the
    /// cached detail ([`stored_detail`]), `None` for no such property,
    /// looked up while the view is counted (one round trip of latency).
    /// `None` for a property that does not exist, and then nothing is
    /// counted.
    pub async fn detail<F>(&self, id: i64, stored: F) -> anyhow::Result<Option<CachedResponse>>
    where
        F: Future<Output = anyhow::Result<Option<Bytes>>>,
    {
        let (stored, counted) = tokio::join!(stored, self.store.count(id));
        let Some(stored) = stored? else {
            return Ok(None);
        };
        let shown = match counted {
            Ok(Some(shown)) => Some(shown),
            Ok(None) => self.seeded(id, 1).await,
            Err(e) => {
                tracing::warn!(
                    error = format!("{e:#}"),
                    "view not counted: store unavailable"
                );
                None
            }
        };
        let shown = match shown {
            Some(n) => n,
            // The store cannot say: the database's count, as it stands.
            None => match self.db.view_count(id).await? {
                Some(n) => n,
                None => return Ok(None),
            },
        };
        let body = join_count(&stored, shown)
            .ok_or_else(|| anyhow::anyhow!("stored detail is not a JSON object"))?;
        Ok(Some(CachedResponse::identity_only(etag_of(&body), body)))
    }

    /// The count the detail of `id` shows now (no view counted), e.g. for
    /// the answer to a change; the database's count if the store cannot
    /// say.
    pub async fn shown(&self, id: i64) -> anyhow::Result<Option<i64>> {
        match self.seeded(id, 0).await {
            Some(n) => Ok(Some(n)),
            None => self.db.view_count(id).await,
        }
    }

    /// The shown count of `id` after adding `views`, seeded from the
    /// database if needed; `None` if the store failed or the property is
    /// gone. A view whose count could not be seeded in
    /// [`SEED_ATTEMPTS`] is still counted (it reaches the database).
    async fn seeded(&self, id: i64, views: i64) -> Option<i64> {
        let res = async {
            let mut basis = None;
            for _ in 0..SEED_ATTEMPTS {
                let snapshot = match self.store.seed(id, views, basis.as_ref()).await? {
                    Seeded::Shown(n) => return Ok(Some(n)),
                    Seeded::Stale(s) => s,
                };
                let Some((stored, applied)) = self.db.view_basis(id, &snapshot.in_flight).await?
                else {
                    return Ok(None);
                };
                basis = Some(SeedBasis {
                    epoch: snapshot.epoch,
                    stored,
                    applied,
                });
            }
            tracing::warn!(id, "shown view count not seeded: flush steps kept moving");
            if views > 0 {
                self.store.count_unshown(id).await?;
            }
            anyhow::Ok(None)
        }
        .await;
        res.unwrap_or_else(|e| {
            tracing::warn!(error = format!("{e:#}"), "view count unavailable");
            None
        })
    }

    /// Forgets the shown count of a deleted property (best effort: a left
    /// over count is only shown if the property comes back, which it
    /// cannot).
    pub async fn forget(&self, id: i64) {
        if let Err(e) = self.store.forget(id).await {
            tracing::warn!(error = format!("{e:#}"), "shown view count not forgotten");
        }
    }

    /// Moves the counted views into the database, chunk by chunk: first
    /// whatever an earlier flush left (a crashed one's batch is applied
    /// with its own id, so at most once), then one new round of every view
    /// counted so far. Views counted meanwhile wait for the next flush, so
    /// a flush ends however busy the site is.
    pub async fn flush(&self) -> anyhow::Result<Flushed> {
        let mut done = Flushed::default();
        let mut round_started = false;
        loop {
            let batch = match self.store.take(FLUSH_CHUNK, false).await? {
                Some(b) => b,
                None if round_started => break,
                None => {
                    round_started = true;
                    match self.store.take(FLUSH_CHUNK, true).await? {
                        Some(b) => b,
                        None => break,
                    }
                }
            };
            self.db
                .apply_view_deltas(&batch.flush_id, &batch.deltas)
                .await?;
            self.store.ack(&batch.flush_id).await?;
            done.views += batch.deltas.iter().map(|(_, d)| d).sum::<i64>();
            done.chunks += 1;
        }
        if done.chunks > 0 {
            let keep = i64::try_from(FLUSH_ID_KEEP.as_millis()).unwrap_or(i64::MAX);
            self.db
                .prune_view_flushes(crate::db::now_ms().saturating_sub(keep))
                .await?;
        }
        Ok(done)
    }
}

/// The bytes the cache stores for a property's detail: its JSON without
/// `view_count` (joined live by [`Views::detail`]).
pub fn stored_detail(property: &Property) -> anyhow::Result<Bytes> {
    let mut value = serde_json::to_value(property)?;
    if let Some(fields) = value.as_object_mut() {
        fields.remove("view_count");
    }
    Ok(Bytes::from(serde_json::to_vec(&value)?))
}

/// `stored` (a JSON object without a view count) with `"view_count": shown`
/// as its last member; `None` if `stored` is not an object.
fn join_count(stored: &Bytes, shown: i64) -> Option<Bytes> {
    let body = stored.strip_suffix(b"}")?;
    if !body.starts_with(b"{") {
        return None;
    }
    let mut digits = itoa::Buffer::new();
    let count = digits.format(shown);
    let mut out = BytesMut::with_capacity(stored.len() + count.len() + 15);
    out.put_slice(body);
    if body.len() > 1 {
        out.put_u8(b',');
    }
    out.put_slice(b"\"view_count\":");
    out.put_slice(count.as_bytes());
    out.put_u8(b'}');
    Some(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::join_count;
    use bytes::Bytes;

    #[test]
    fn the_count_is_joined_as_the_last_member() -> anyhow::Result<()> {
        let joined = join_count(&Bytes::from_static(br#"{"id":7,"title":"}"}"#), 43);
        let joined = joined.ok_or_else(|| anyhow::anyhow!("not joined"))?;
        let v: serde_json::Value = serde_json::from_slice(&joined)?;
        assert_eq!(v["view_count"], 43);
        assert_eq!(v["title"], "}");
        assert_eq!(
            join_count(&Bytes::from_static(b"{}"), 1),
            Some(Bytes::from_static(br#"{"view_count":1}"#))
        );
        assert_eq!(join_count(&Bytes::from_static(b"null"), 1), None);
        Ok(())
    }
}
