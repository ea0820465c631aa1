//! [`RedisStore`]: the cache role on Redis (the guide's DB 1, or a Redis of
//! its own with `allkeys-lru`). Every call goes through [`RedisRole::run`]
//! (250 ms timeout, circuit breaker, latency metric); the [`super::Cache`]
//! facade turns failed reads into misses and skips failed writes.
//!
//! Each multi-step operation is one Lua script (`lua/*.lua`, KEYS and ARGV
//! documented in each file's header), so it is atomic and costs one round
//! trip:
//!
//! - generations: read (and initialise when missing) together with the entry
//!   they name (`gen_lookup`), so an anonymous cached GET is ONE round trip;
//!   bumped with `gen_bump`. A lost counter restarts at the server time in
//!   microseconds, above any value it can have had, never at 0; so counters
//!   may also expire ([`GENERATION_TTL`]) instead of piling up.
//! - one-time codes: `otp_put`, `otp_attempt` (check and consume at once).
//! - view counters: `views_count`, `views_take`, `views_ack`.
//! - compute locks: `SET NX PX`, released by `unlock` only by their holder.
//!
//! Why the generation is read inside the value's script rather than kept in
//! an in-process near-cache invalidated by pub/sub: the design promises that
//! a write is visible on every instance as soon as the request that made it
//! has answered. Pub/sub delivers the bump to other instances some time
//! later, and not at all across a dropped connection, so a near-cache would
//! serve stale pages in that window. The script gives the same one round
//! trip with no window. Its cost on Redis Cluster: generation-keyed entries
//! share the hash tag `{g}` with the counters, so they live in one slot.

use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use bytes::Bytes;
use redis::{Script, Value};

use super::store::{CacheStore, OtpOutcome, ViewBatch};
use crate::kv::RedisRole;
use crate::kv::keys::{KeyTemplate, Keys};

/// Lifetime of a generation counter after it is created or bumped. Safe at
/// any length, because a counter that comes back starts above every value it
/// had (see `lua/gen_lookup.lua`); it keeps one counter per user from piling
/// up forever on a Redis that never evicts.
const GENERATION_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// Keys removed per `UNLINK` (and asked per `SCAN` step) by
/// [`CacheStore::delete_pattern`]: small steps keep Redis responsive.
const SCAN_BATCH: usize = 500;

/// The cache role's [`CacheStore`] on Redis.
pub struct RedisStore {
    role: RedisRole,
    keys: Keys,
    gen_lookup: Script,
    gen_bump: Script,
    otp_put: Script,
    otp_attempt: Script,
    views_count: Script,
    views_take: Script,
    views_ack: Script,
    unlock: Script,
}

impl RedisStore {
    /// A store on the cache role's connection; `keys` names the view
    /// counters (every other key is passed in by the facade).
    pub fn new(role: RedisRole, keys: Keys) -> Self {
        role.on_restart(forget_generations(keys.generation_pattern()));
        RedisStore {
            role,
            keys,
            gen_lookup: Script::new(include_str!("lua/gen_lookup.lua")),
            gen_bump: Script::new(include_str!("lua/gen_bump.lua")),
            otp_put: Script::new(include_str!("lua/otp_put.lua")),
            otp_attempt: Script::new(include_str!("lua/otp_attempt.lua")),
            views_count: Script::new(include_str!("lua/views_count.lua")),
            views_take: Script::new(include_str!("lua/views_take.lua")),
            views_ack: Script::new(include_str!("lua/views_ack.lua")),
            unlock: Script::new(include_str!("lua/unlock.lua")),
        }
    }

    /// Runs `gen_lookup` on `generation_keys`, with the entry template
    /// `parts` when given.
    async fn run_lookup(
        &self,
        generation_keys: &[String],
        parts: &[String],
    ) -> anyhow::Result<(Vec<u64>, Option<Bytes>)> {
        let reply: Vec<Value> = self
            .role
            .run(|mut conn| async move {
                let mut call = self.gen_lookup.prepare_invoke();
                for k in generation_keys {
                    call.key(k);
                }
                call.arg(ttl_ms(GENERATION_TTL));
                for p in parts {
                    call.arg(p);
                }
                call.invoke_async(&mut conn).await
            })
            .await
            .context("cannot read cache generations")?;
        let n = generation_keys.len();
        anyhow::ensure!(
            reply.len() == n || reply.len() == n + 1,
            "generation lookup returned {} values for {n} counters",
            reply.len()
        );
        let mut generations = Vec::with_capacity(n);
        let mut entry = None;
        for (i, v) in reply.into_iter().enumerate() {
            let raw = match v {
                Value::BulkString(b) => b,
                other => anyhow::bail!("unexpected generation lookup reply {other:?}"),
            };
            if i < n {
                let text = std::str::from_utf8(&raw).context("generation is not text")?;
                generations.push(
                    text.parse::<u64>()
                        .with_context(|| format!("generation {text:?} is not a number"))?,
                );
            } else {
                entry = Some(Bytes::from(raw));
            }
        }
        Ok((generations, entry))
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

/// What the cache does when its Redis restarted or was replaced: that
/// server may hold a generation counter from before a bump it acknowledged
/// but lost (AOF `everysec`, asynchronous replication), and with it an
/// entry the bump had made unreachable. Deleting every counter makes the
/// next lookup restart each one at the server time in microseconds, above
/// any value it had: every entry cached before is unreachable (a cold cache
/// once per restart, never a stale one).
fn forget_generations(pattern: String) -> crate::kv::RestartHook {
    std::sync::Arc::new(move |conn| {
        let pattern = pattern.clone();
        Box::pin(async move {
            // Every master of the role (on a cluster the counters may live
            // on any of them).
            conn.unlink_matching(&pattern, SCAN_BATCH)
                .await
                .map_err(|e| {
                    redis::RedisError::from((
                        redis::ErrorKind::Io,
                        "cannot reset the cache generations",
                        format!("{e:#}"),
                    ))
                })?;
            tracing::info!("cache generations reset after a Redis restart");
            Ok(())
        })
    })
}

/// A TTL in whole milliseconds, at least 1 (Redis refuses `PX 0`).
fn ttl_ms(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
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
impl CacheStore for RedisStore {
    async fn get(&self, key: &str) -> anyhow::Result<Option<Bytes>> {
        let value: Option<Vec<u8>> = self
            .role
            .run(|mut conn| async move { redis::cmd("GET").arg(key).query_async(&mut conn).await })
            .await
            .context("cache GET")?;
        Ok(value.map(Bytes::from))
    }

    async fn take(&self, key: &str) -> anyhow::Result<Option<Bytes>> {
        let value: Option<Vec<u8>> =
            self.role
                .run(|mut conn| async move {
                    redis::cmd("GETDEL").arg(key).query_async(&mut conn).await
                })
                .await
                .context("cache GETDEL")?;
        Ok(value.map(Bytes::from))
    }

    async fn incr(&self, key: &str, by: i64, ttl: Duration) -> anyhow::Result<i64> {
        // One round trip, atomic: the counter and its expiry (set once, when
        // the counter is new: PEXPIRE NX) cannot be separated by a crash.
        let (value,): (i64,) = self
            .role
            .run(|mut conn| async move {
                redis::pipe()
                    .atomic()
                    .cmd("INCRBY")
                    .arg(key)
                    .arg(by)
                    .cmd("PEXPIRE")
                    .arg(key)
                    .arg(ttl_ms(ttl))
                    .arg("NX")
                    .ignore()
                    .query_async(&mut conn)
                    .await
            })
            .await
            .context("cache INCRBY")?;
        Ok(value)
    }

    async fn set(&self, key: &str, value: Bytes, ttl: Duration) -> anyhow::Result<()> {
        self.role
            .run(|mut conn| async move {
                redis::cmd("SET")
                    .arg(key)
                    .arg(value.as_ref())
                    .arg("PX")
                    .arg(ttl_ms(ttl))
                    .query_async::<()>(&mut conn)
                    .await
            })
            .await
            .context("cache SET")
    }

    async fn delete(&self, keys: &[String]) -> anyhow::Result<u64> {
        if keys.is_empty() {
            return Ok(0);
        }
        self.role
            .run(|mut conn| async move {
                redis::cmd("UNLINK").arg(keys).query_async(&mut conn).await
            })
            .await
            .context("cache UNLINK")
    }

    /// SCAN + UNLINK in batches: each step is short, so Redis keeps serving
    /// everyone else while a large namespace is removed (never KEYS, whose
    /// one O(all keys) call blocks the server).
    async fn delete_pattern(&self, pattern: &str) -> anyhow::Result<u64> {
        // On every master of the role (a cluster has several).
        let masters = self
            .role
            .run(|conn| async move { conn.masters().await })
            .await
            .context("cache masters")?;
        let mut removed = 0;
        for master in &masters {
            let mut cursor: u64 = 0;
            loop {
                let (next, found): (u64, Vec<String>) = self
                    .role
                    .run(|_| master.scan_step(cursor, pattern, SCAN_BATCH))
                    .await
                    .context("cache SCAN")?;
                removed += self.delete(&found).await?;
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(removed)
    }

    async fn generation(&self, key: &str) -> anyhow::Result<u64> {
        let (generations, _) = self.run_lookup(&[key.to_owned()], &[]).await?;
        generations
            .first()
            .copied()
            .context("generation lookup returned nothing")
    }

    async fn bump(&self, key: &str) -> anyhow::Result<u64> {
        self.role
            .run(|mut conn| async move {
                self.gen_bump
                    .key(key)
                    .arg(ttl_ms(GENERATION_TTL))
                    .invoke_async(&mut conn)
                    .await
            })
            .await
            .context("cannot bump the cache generation")
    }

    async fn lookup(&self, template: &KeyTemplate) -> anyhow::Result<(Vec<u64>, Option<Bytes>)> {
        self.run_lookup(template.generation_keys(), template.parts())
            .await
    }

    async fn try_lock(&self, key: &str, token: &str, ttl: Duration) -> anyhow::Result<bool> {
        let set: Option<String> = self
            .role
            .run(|mut conn| async move {
                redis::cmd("SET")
                    .arg(key)
                    .arg(token)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl_ms(ttl))
                    .query_async(&mut conn)
                    .await
            })
            .await
            .context("cannot take the compute lock")?;
        Ok(set.is_some())
    }

    async fn unlock(&self, key: &str, token: &str) -> anyhow::Result<()> {
        self.role
            .run(|mut conn| async move {
                self.unlock
                    .key(key)
                    .arg(token)
                    .invoke_async::<i64>(&mut conn)
                    .await
            })
            .await
            .context("cannot release the compute lock")?;
        Ok(())
    }

    async fn otp_put(&self, key: &str, code_hash: &str, ttl: Duration) -> anyhow::Result<()> {
        self.role
            .run(|mut conn| async move {
                self.otp_put
                    .key(key)
                    .arg(code_hash)
                    .arg(ttl_ms(ttl))
                    .invoke_async::<i64>(&mut conn)
                    .await
            })
            .await
            .context("cannot store the one-time code")?;
        Ok(())
    }

    async fn otp_attempt(
        &self,
        key: &str,
        candidate_hash: &str,
        max_attempts: u32,
    ) -> anyhow::Result<OtpOutcome> {
        let outcome: String = self
            .role
            .run(|mut conn| async move {
                self.otp_attempt
                    .key(key)
                    .arg(candidate_hash)
                    .arg(max_attempts)
                    .invoke_async(&mut conn)
                    .await
            })
            .await
            .context("cannot check the one-time code")?;
        match outcome.as_str() {
            "accepted" => Ok(OtpOutcome::Accepted),
            "rejected" => Ok(OtpOutcome::Rejected),
            "missing" => Ok(OtpOutcome::Missing),
            other => anyhow::bail!("unexpected one-time code outcome {other:?}"),
        }
    }

    async fn views_incr(&self, id: i64) -> anyhow::Result<i64> {
        self.count_views(id, 1)
            .await
            .context("cannot count the view")
    }

    async fn views_pending(&self, id: i64) -> anyhow::Result<i64> {
        self.count_views(id, 0)
            .await
            .context("cannot read the pending views")
    }

    async fn views_take(&self) -> anyhow::Result<Option<ViewBatch>> {
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

    async fn views_ack(&self, flush_id: &str) -> anyhow::Result<()> {
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

    async fn ping(&self) -> anyhow::Result<()> {
        self.role
            .run(
                |mut conn| async move { redis::cmd("PING").query_async::<String>(&mut conn).await },
            )
            .await
            .context("cache PING")?;
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
