//! View counters of the cache role: each detail request counts a view;
//! the flush job moves the counts to the database in batches that stay
//! recorded until acknowledged, so a crash anywhere loses and doubles
//! nothing. [`MemoryViews`] (embedded default) and [`RedisViews`] (the
//! cache role's Redis, keys with the hash tag `{v}`, one Lua script per step:
//! `lua/views_*.lua`) pass the same behaviour suite
//! (`tests/api/cache_suite.rs`).

use std::collections::HashMap;
use std::sync::Mutex;

use anyhow::Context;
use async_trait::async_trait;
use redis::Script;

use super::memory::lock;
use crate::kv::RedisRole;
use crate::kv::coalesce::Coalescer;
use crate::kv::keys::Keys;

/// Views taken out of the counters to be written to the database. The batch
/// stays recorded until acknowledged, so a crashed flush is retried with the
/// same id (and the database applies each id once).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewBatch {
    /// Idempotency key of the batch: the database applies each id once.
    pub flush_id: String,
    /// `(property id, views to add)` pairs.
    pub deltas: Vec<(i64, i64)>,
}

/// The view counters: views counted per request, moved to the database in
/// acknowledged batches by the flush job. Every method may fail (a remote
/// store can be down).
#[async_trait]
pub trait ViewCounter: Send + Sync + 'static {
    /// Counts one view; returns the views of that property not yet in the
    /// database (including any batch being flushed).
    async fn incr(&self, id: i64) -> anyhow::Result<i64>;
    /// Views of a property not yet in the database.
    async fn pending(&self, id: i64) -> anyhow::Result<i64>;
    /// The oldest unacknowledged batch, or a new one made of every pending
    /// count; `None` if there is nothing to flush.
    async fn take(&self) -> anyhow::Result<Option<ViewBatch>>;
    /// Forgets a batch once the database has it.
    async fn ack(&self, flush_id: &str) -> anyhow::Result<()>;
}

#[derive(Default)]
struct Views {
    pending: HashMap<i64, i64>,
    /// Batches taken but not acknowledged, oldest first.
    in_flight: Vec<ViewBatch>,
}

/// In-process [`ViewCounter`].
#[derive(Default)]
pub struct MemoryViews {
    views: Mutex<Views>,
}

#[async_trait]
impl ViewCounter for MemoryViews {
    async fn incr(&self, id: i64) -> anyhow::Result<i64> {
        let mut v = lock(&self.views);
        *v.pending.entry(id).or_insert(0) += 1;
        Ok(pending_of(&v, id))
    }

    async fn pending(&self, id: i64) -> anyhow::Result<i64> {
        Ok(pending_of(&lock(&self.views), id))
    }

    async fn take(&self) -> anyhow::Result<Option<ViewBatch>> {
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

    async fn ack(&self, flush_id: &str) -> anyhow::Result<()> {
        lock(&self.views)
            .in_flight
            .retain(|b| b.flush_id != flush_id);
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

/// [`ViewCounter`] on the cache role's Redis.
pub struct RedisViews {
    role: RedisRole,
    keys: Keys,
    views_count: Script,
    views_take: Script,
    views_ack: Script,
    /// Views counted by concurrent detail requests, one script call per round.
    counts: Coalescer<i64, i64>,
}

impl RedisViews {
    /// Counters on the cache role's connection, named by `keys`.
    pub fn new(role: RedisRole, keys: Keys) -> Self {
        RedisViews {
            counts: views_coalescer(role.clone(), keys.clone()),
            role,
            keys,
            views_count: Script::new(include_str!("lua/views_count.lua")),
            views_take: Script::new(include_str!("lua/views_take.lua")),
            views_ack: Script::new(include_str!("lua/views_ack.lua")),
        }
    }

    /// Adds `by` (0 to only read) to a property's pending views; returns
    /// its views not yet in the database, in-flight batches included.
    async fn count_views(&self, id: i64, by: i64) -> anyhow::Result<i64> {
        let (pending, in_flight, batch) = (
            self.keys.views_pending(),
            self.keys.views_in_flight(),
            self.keys.views_batch_prefix(),
        );
        self.role
            .run(|mut conn| async move {
                self.views_count
                    .key(&pending)
                    .key(&in_flight)
                    .arg(id)
                    .arg(by)
                    .arg(&batch)
                    .invoke_async(&mut conn)
                    .await
            })
            .await
    }
}

/// Counts the views of every waiting detail request in one script call.
fn views_coalescer(role: RedisRole, keys: Keys) -> Coalescer<i64, i64> {
    let script = Script::new(include_str!("lua/views_count_many.lua"));
    Coalescer::spawn("cache_views", move |ids: Vec<i64>| {
        let (role, script) = (role.clone(), script.clone());
        let (pending, in_flight, batch) = (
            keys.views_pending(),
            keys.views_in_flight(),
            keys.views_batch_prefix(),
        );
        async move {
            role.run(|mut conn| {
                let mut call = script.prepare_invoke();
                call.key(&pending).key(&in_flight).arg(&batch);
                for id in &ids {
                    call.arg(*id);
                }
                async move { call.invoke_async::<Vec<i64>>(&mut conn).await }
            })
            .await
            .context("cannot count the views")
        }
    })
}

/// `(property id, views)` pairs from a flat `HGETALL`-style reply.
fn parse_deltas(flat: &[String]) -> anyhow::Result<Vec<(i64, i64)>> {
    let mut deltas = flat
        .chunks(2)
        .map(|pair| match pair {
            [id, n] => Ok((
                id.parse::<i64>()
                    .with_context(|| format!("bad property id {id:?} in a view batch"))?,
                n.parse::<i64>()
                    .with_context(|| format!("bad count {n:?} in a view batch"))?,
            )),
            _ => anyhow::bail!("odd view batch reply"),
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    deltas.retain(|(_, n)| *n != 0);
    deltas.sort_unstable();
    Ok(deltas)
}

#[async_trait]
impl ViewCounter for RedisViews {
    async fn incr(&self, id: i64) -> anyhow::Result<i64> {
        self.counts.call(id).await
    }

    async fn pending(&self, id: i64) -> anyhow::Result<i64> {
        self.count_views(id, 0)
            .await
            .context("cannot read the pending views")
    }

    async fn take(&self) -> anyhow::Result<Option<ViewBatch>> {
        let new_id = uuid::Uuid::new_v4().to_string();
        let prefix = self.keys.views_batch_prefix();
        let new_batch = self.keys.views_batch(&new_id);
        let (pending, in_flight) = (self.keys.views_pending(), self.keys.views_in_flight());
        let reply: Option<Vec<String>> = self
            .role
            .run(|mut conn| async move {
                self.views_take
                    .key(&pending)
                    .key(&in_flight)
                    .key(&new_batch)
                    .arg(&prefix)
                    .arg(&new_id)
                    .invoke_async(&mut conn)
                    .await
            })
            .await
            .context("cannot take the pending views")?;
        let Some((flush_id, flat)) = reply.as_deref().and_then(<[String]>::split_first) else {
            return Ok(None);
        };
        Ok(Some(ViewBatch {
            flush_id: flush_id.clone(),
            deltas: parse_deltas(flat)?,
        }))
    }

    async fn ack(&self, flush_id: &str) -> anyhow::Result<()> {
        let batch = self.keys.views_batch(flush_id);
        let in_flight = self.keys.views_in_flight();
        self.role
            .run(|mut conn| async move {
                self.views_ack
                    .key(&in_flight)
                    .key(&batch)
                    .arg(flush_id)
                    .invoke_async::<i64>(&mut conn)
                    .await
            })
            .await
            .context("cannot acknowledge the view batch")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::parse_deltas;

    #[test]
    fn deltas_parse_sorted_and_reject_garbage() -> anyhow::Result<()> {
        let flat: Vec<String> = ["7", "3", "2", "1", "9", "0"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        assert_eq!(parse_deltas(&flat)?, vec![(2, 1), (7, 3)]);
        assert!(parse_deltas(&["x".to_owned(), "1".to_owned()]).is_err());
        assert!(parse_deltas(&["1".to_owned()]).is_err());
        Ok(())
    }
}
