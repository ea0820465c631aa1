//! [`RedisStore`]: the cache role on Redis (the guide's DB 1, or a Redis of
//! its own with `allkeys-lru`). Every call goes through [`RedisRole::run`]
//! (250 ms timeout, circuit breaker, latency metric); the [`super::Cache`]
//! facade turns failed reads into misses and skips failed writes.
//!
//! Each multi-step operation is one Lua script (`lua/*.lua`, KEYS and ARGV
//! documented in each file's header), so it is atomic and costs one round
//! trip:
//!
//! - generations: read with one `MGET` (a missing counter is started by
//!   `gen_lookup`), one call shared by every request waiting together
//!   (`kv::coalesce`; the near-cache's validation, `cache::near`); an entry not held near is
//!   then read with a plain `GET`: entries carry no hash tag, so on a
//!   cluster they spread over every master. Bumped with `gen_bump`. A lost
//!   counter restarts at the server time in microseconds, above any value
//!   it can have had, never at 0 (so a rendered key never names two
//!   contents, which the near-cache relies on); so counters may also expire
//!   ([`GENERATION_TTL`]) instead of piling up.
//! - one-time codes and view counters: in [`super::otp`] and [`super::views`].
//! - compute locks: `SET NX PX`, released by `unlock` only by their holder.
//!
//! Why the near-cache is validated by reading the generations on every
//! request rather than invalidated by pub/sub or client tracking: the
//! design promises that a write is visible on every instance as soon as the
//! request that made it has answered; a push arrives some time later, and
//! not at all across a dropped connection (see `cache::near`). On Redis
//! Cluster the counters share one slot (`{g}`): the validation of a batch
//! is one script there; the entries, the payload, are spread.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use bytes::Bytes;
use redis::Script;

use super::store::CacheStore;
use crate::kv::coalesce::Coalescer;
use crate::kv::keys::Keys;
use crate::kv::{RedisRole, ttl_ms};

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
    gen_lookup: Script,
    gen_bump: Script,
    unlock: Script,
    /// Generation reads of concurrent requests, one script call per round.
    generations: Coalescer<Vec<String>, Vec<u64>>,
}

impl RedisStore {
    /// A store on the cache role's connection; `keys` names the view
    /// counters (every other key is passed in by the facade).
    pub fn new(role: RedisRole, keys: Keys) -> Self {
        role.on_restart(forget_generations(keys.generation_pattern()));
        let gen_lookup = Script::new(include_str!("lua/gen_lookup.lua"));
        RedisStore {
            generations: generations_coalescer(role.clone(), gen_lookup.clone()),
            role,
            gen_lookup,
            gen_bump: Script::new(include_str!("lua/gen_bump.lua")),
            unlock: Script::new(include_str!("lua/unlock.lua")),
        }
    }

    /// Runs `gen_lookup` on `generation_keys`.
    async fn run_lookup(&self, generation_keys: &[String]) -> anyhow::Result<Vec<u64>> {
        lookup_call(&self.role, &self.gen_lookup, generation_keys).await
    }
}

/// The generations of `generation_keys`: one `MGET` when every counter
/// exists (the usual case: no Lua, the cheapest read Redis has), else one
/// `gen_lookup` call, which starts the missing ones. Either way one read
/// sent after the caller's requests began.
async fn lookup_call(
    role: &RedisRole,
    script: &Script,
    generation_keys: &[String],
) -> anyhow::Result<Vec<u64>> {
    if generation_keys.is_empty() {
        return Ok(Vec::new());
    }
    let stored: Vec<Option<String>> = role
        .run(|mut conn| async move {
            redis::cmd("MGET")
                .arg(generation_keys)
                .query_async(&mut conn)
                .await
        })
        .await
        .context("cannot read cache generations")?;
    let reply: Vec<String> = match stored.into_iter().collect::<Option<Vec<String>>>() {
        Some(all) => all,
        None => role
            .run(|mut conn| async move {
                let mut call = script.prepare_invoke();
                for k in generation_keys {
                    call.key(k);
                }
                call.arg(ttl_ms(GENERATION_TTL));
                call.invoke_async(&mut conn).await
            })
            .await
            .context("cannot read cache generations")?,
    };
    anyhow::ensure!(
        reply.len() == generation_keys.len(),
        "generation lookup returned {} values for {} counters",
        reply.len(),
        generation_keys.len()
    );
    reply
        .iter()
        .map(|text| {
            text.parse::<u64>()
                .with_context(|| format!("generation {text:?} is not a number"))
        })
        .collect()
}

/// Reads the generations every waiting request asks for in one `gen_lookup`
/// call (each distinct counter once). The call is sent after each of its
/// requests began, which the near-cache relies on (`kv::coalesce`).
fn generations_coalescer(role: RedisRole, script: Script) -> Coalescer<Vec<String>, Vec<u64>> {
    Coalescer::spawn("cache_generations", move |requests: Vec<Vec<String>>| {
        let (role, script) = (role.clone(), script.clone());
        async move {
            let mut distinct: Vec<String> = Vec::new();
            let mut index: HashMap<String, usize> = HashMap::new();
            for key in requests.iter().flatten() {
                if !index.contains_key(key) {
                    index.insert(key.clone(), distinct.len());
                    distinct.push(key.clone());
                }
            }
            let generations = lookup_call(&role, &script, &distinct).await?;
            requests
                .iter()
                .map(|keys| {
                    keys.iter()
                        .map(|k| {
                            index
                                .get(k)
                                .and_then(|&i| generations.get(i).copied())
                                .context("generation missing from the reply")
                        })
                        .collect()
                })
                .collect()
        }
    })
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
        let generations = self.run_lookup(&[key.to_owned()]).await?;
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

    async fn generations(&self, keys: &[String]) -> anyhow::Result<Vec<u64>> {
        self.generations.call(keys.to_vec()).await
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
