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
//! Redis Cluster: the session key and the user's index hash to different
//! slots, so the two scripts need a standalone (or single-shard) sessions
//! Redis, which is what the guide and our deployment use for this role.

use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;

use super::SessionStore;
use crate::kv::RedisRole;
use crate::kv::coalesce::Coalescer;
use crate::kv::keys::Keys;

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
/// its own). Each call is sent after its requests began, so a logout that
/// answered before a request started is seen by it (`kv::coalesce`).
fn loads_coalescer(role: RedisRole) -> Coalescer<(String, u64), Option<i64>> {
    let script = redis::Script::new(include_str!("lua/load_many.lua"));
    Coalescer::spawn("session_loads", move |requests: Vec<(String, u64)>| {
        let (role, script) = (role.clone(), script.clone());
        async move {
            let mut answers = Vec::with_capacity(requests.len());
            for group in requests.chunk_by(|a, b| a.1 == b.1) {
                let values: Vec<Option<String>> = role
                    .run(|mut conn| {
                        let mut call = script.prepare_invoke();
                        for (key, _) in group {
                            call.key(key);
                        }
                        call.arg(group[0].1);
                        async move { call.invoke_async(&mut conn).await }
                    })
                    .await
                    .context("cannot load the sessions")?;
                anyhow::ensure!(values.len() == group.len(), "short session reply");
                for v in values {
                    answers.push(
                        v.map(|v| {
                            v.parse::<i64>()
                                .context("a session key holds something other than a user id")
                        })
                        .transpose()?,
                    );
                }
            }
            Ok(answers)
        }
    })
}

/// A TTL in whole milliseconds, at least 1 (Redis refuses `PX 0`).
fn ttl_ms(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

#[async_trait]
impl SessionStore for RedisSessionStore {
    async fn create(&self, id_hash: &str, user_id: i64, ttl: Duration) -> anyhow::Result<()> {
        let session = self.keys.session(id_hash);
        let index = self.keys.user_sessions(user_id);
        let ns = self.keys.session_ns();
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
        self.loads
            .call((self.keys.session(id_hash), ttl_ms(ttl)))
            .await
    }

    async fn delete(&self, id_hash: &str) -> anyhow::Result<()> {
        // The user's index may keep the hash: `create` prunes ended sessions
        // from it and `delete_user` ignores them.
        let session = self.keys.session(id_hash);
        self.role
            .run(|mut conn| async move {
                redis::cmd("DEL")
                    .arg(&session)
                    .query_async::<i64>(&mut conn)
                    .await
            })
            .await
            .context("cannot delete the session")?;
        Ok(())
    }

    async fn delete_user(&self, user_id: i64) -> anyhow::Result<u64> {
        let index = self.keys.user_sessions(user_id);
        let ns = self.keys.session_ns();
        let ended: i64 = self
            .role
            .run(|mut conn| async move {
                self.delete_user
                    .key(&index)
                    .arg(&ns)
                    .invoke_async(&mut conn)
                    .await
            })
            .await
            .context("cannot end the user's sessions")?;
        Ok(u64::try_from(ended).unwrap_or(0))
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
