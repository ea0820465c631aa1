//! Sessions in the sessions role's Redis (the guide's DB 2), under
//! `{prefix}session:`. One string key per session, named by the SHA-256 of
//! its id and holding the user id, with the session TTL; loading it slides
//! the expiry in the same step (`GETEX … PX`), and the loads of concurrent
//! requests share one script call (`lua/load_many.lua`, `kv::coalesce`). A set per user
//! (`{prefix}session:user:{id}`) indexes the user's sessions so that
//! [`SessionStore::delete_user`] ends them all atomically (`lua/*.lua`).
//!
//! Unlike the guide's cache-backed sessions, this role must never be
//! evicted (startup checks `maxmemory-policy`), and a Redis error is an
//! error, never an empty session: the HTTP layer answers 503, nobody is
//! silently logged out.
//!
//! Redis Cluster: a session and the user's index it is listed in share a
//! hash tag, the session's shard (see the sessions section of
//! `kv::keys`), so every script's keys are in one slot; the shards spread
//! the sessions over every master. A user has one index per shard holding
//! their sessions; [`SessionStore::delete_user`] ends them shard by shard,
//! each shard atomically.
//!
//! Sessions of the layout before the shards (`{prefix}session:{hash}`,
//! `{prefix}session:user:{id}`, standalone deployments only) are still
//! loaded, deleted and ended, never written: an upgrade logs nobody out.

use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;

use super::SessionStore;
use crate::kv::coalesce::Coalescer;
use crate::kv::keys::{Keys, SESSION_SHARDS};
use crate::kv::{RedisRole, ttl_ms};

/// [`SessionStore`] on the sessions role's Redis.
pub struct RedisSessionStore {
    role: RedisRole,
    keys: Keys,
    create: redis::Script,
    delete_user: redis::Script,
    /// Session loads of concurrent requests, one script call per round.
    loads: Coalescer<(String, u64), Option<i64>>,
}

impl RedisSessionStore {
    /// A store on `role`, with keys under `keys`' prefix.
    pub fn new(role: RedisRole, keys: Keys) -> Self {
        RedisSessionStore {
            loads: loads_coalescer(role.clone()),
            role,
            keys,
            create: redis::Script::new(include_str!("lua/create.lua")),
            delete_user: redis::Script::new(include_str!("lua/delete_user.lua")),
        }
    }
}

/// Loads every waiting request's session in one `load_many` call (a
/// request asks for `(key, ttl_ms)`; requests waiting together share a TTL
/// in practice, the setting's, and one with another TTL goes in a call of
/// its own; on a cluster, one call per hash slot, all sent at once). Each
/// call is sent after its requests began, so a logout that answered before
/// a request started is seen by it (`kv::coalesce`).
fn loads_coalescer(role: RedisRole) -> Coalescer<(String, u64), Option<i64>> {
    let script = redis::Script::new(include_str!("lua/load_many.lua"));
    Coalescer::spawn("session_loads", move |requests: Vec<(String, u64)>| {
        let (role, script) = (role.clone(), script.clone());
        async move {
            let (requests, script) = (&requests, &script);
            let parts: Vec<(Vec<usize>, Vec<Option<String>>)> = role
                .run(|conn| {
                    let mut groups = Vec::new();
                    let mut start = 0;
                    for by_ttl in requests.chunk_by(|a, b| a.1 == b.1) {
                        let keys: Vec<&str> = by_ttl.iter().map(|(k, _)| k.as_str()).collect();
                        for group in conn.script_groups(&keys) {
                            groups.push(group.into_iter().map(|i| start + i).collect::<Vec<_>>());
                        }
                        start += by_ttl.len();
                    }
                    futures::future::try_join_all(groups.into_iter().map(move |group| {
                        let mut conn = conn.clone();
                        async move {
                            let mut call = script.prepare_invoke();
                            for &i in &group {
                                call.key(&requests[i].0);
                            }
                            call.arg(requests[group[0]].1);
                            let values: Vec<Option<String>> = call.invoke_async(&mut conn).await?;
                            Ok::<_, redis::RedisError>((group, values))
                        }
                    }))
                })
                .await
                .context("cannot load the sessions")?;
            let mut answers: Vec<Option<i64>> = vec![None; requests.len()];
            for (group, values) in parts {
                anyhow::ensure!(values.len() == group.len(), "short session reply");
                for (i, v) in group.into_iter().zip(values) {
                    answers[i] = v
                        .map(|v| {
                            v.parse::<i64>()
                                .context("a session key holds something other than a user id")
                        })
                        .transpose()?;
                }
            }
            Ok(answers)
        }
    })
}

#[async_trait]
impl SessionStore for RedisSessionStore {
    async fn create(&self, id_hash: &str, user_id: i64, ttl: Duration) -> anyhow::Result<()> {
        let shard = Keys::session_shard(id_hash);
        let session = self.keys.session(id_hash);
        let index = self.keys.user_sessions(user_id, shard);
        let ns = self.keys.session_shard_ns(shard);
        self.role
            .run(|mut conn| async move {
                self.create
                    .key(&session)
                    .key(&index)
                    .arg(user_id)
                    .arg(ttl_ms(ttl))
                    .arg(id_hash)
                    .arg(&ns)
                    .invoke_async::<i64>(&mut conn)
                    .await
            })
            .await
            .context("cannot create the session")?;
        Ok(())
    }

    async fn load(&self, id_hash: &str, ttl: Duration) -> anyhow::Result<Option<i64>> {
        let found = self
            .loads
            .call((self.keys.session(id_hash), ttl_ms(ttl)))
            .await?;
        if found.is_some() {
            return Ok(found);
        }
        // A session made before the shards (see `legacy_session`): read on
        // its own, only for the ids the current layout does not know.
        let legacy = self.keys.legacy_session(id_hash);
        let value: Option<String> = self
            .role
            .run(|mut conn| async move {
                redis::cmd("GETEX")
                    .arg(&legacy)
                    .arg("PX")
                    .arg(ttl_ms(ttl))
                    .query_async(&mut conn)
                    .await
            })
            .await
            .context("cannot load the session")?;
        value
            .map(|v| {
                v.parse::<i64>()
                    .context("a session key holds something other than a user id")
            })
            .transpose()
    }

    async fn delete(&self, id_hash: &str) -> anyhow::Result<()> {
        // The user's index may keep the hash: `create` prunes ended sessions
        // from it and `delete_user` ignores them.
        let keys = [
            self.keys.session(id_hash),
            self.keys.legacy_session(id_hash),
        ];
        self.role
            .run(|mut conn| async move {
                // Two slots on a cluster: the cluster connection splits it.
                redis::cmd("DEL")
                    .arg(&keys[..])
                    .query_async::<i64>(&mut conn)
                    .await
            })
            .await
            .context("cannot delete the session")?;
        Ok(())
    }

    async fn delete_user(&self, user_id: i64) -> anyhow::Result<u64> {
        // Every shard's index, concurrently, in one call of the role: each
        // shard's sessions end atomically, and once this returns no session
        // of the user created before it can be loaded.
        let shards: Vec<(String, String)> = (0..SESSION_SHARDS)
            .map(|shard| {
                (
                    self.keys.user_sessions(user_id, shard),
                    self.keys.session_shard_ns(shard),
                )
            })
            // And the index of the layout before the shards (its members
            // are `session_ns` + hash, see `legacy_session`).
            .chain(std::iter::once((
                self.keys.legacy_user_sessions(user_id),
                self.keys.session_ns(),
            )))
            .collect();
        let ended: Vec<i64> = self
            .role
            .run(|conn| {
                futures::future::try_join_all(shards.iter().map(|(index, ns)| {
                    let mut conn = conn.clone();
                    async move {
                        self.delete_user
                            .key(index)
                            .arg(ns)
                            .invoke_async::<i64>(&mut conn)
                            .await
                    }
                }))
            })
            .await
            .context("cannot end the user's sessions")?;
        Ok(ended
            .into_iter()
            .map(|n| u64::try_from(n).unwrap_or(0))
            .sum())
    }

    async fn ping(&self) -> anyhow::Result<()> {
        self.role
            .run(
                |mut conn| async move { redis::cmd("PING").query_async::<String>(&mut conn).await },
            )
            .await?;
        Ok(())
    }
}
