//! The Redis limiter: one GCRA check per request, the checks of every
//! request waiting together in one Lua script call (`lua/gcra.lua`,
//! `kv::coalesce`), so a check is one round trip shared under load, atomic across any number
//! of API instances, with O(1) state per key (the TAT) that expires when the
//! key goes idle. The clock is Redis `TIME`: instances may disagree on the
//! time without changing any decision.
//!
//! Every call goes through [`RedisRole::run`] (timeout, circuit breaker);
//! an error is returned as such and [`super::RateLimiter::check`] applies
//! the scope's fail-open or fail-closed policy.

use async_trait::async_trait;

use super::LimiterBackend;
use super::Rate;
use super::gcra::Decision;
use crate::kv::RedisRole;
use crate::kv::coalesce::Coalescer;

/// [`LimiterBackend`] on the rate-limit role's Redis.
pub struct RedisLimiter {
    role: RedisRole,
    /// Checks of concurrent requests: `(key, limit, period_us)`.
    checks: Coalescer<(String, u32, i64), Reply>,
}

impl RedisLimiter {
    /// A limiter on `role` (the keys it receives are already prefixed).
    pub fn new(role: RedisRole) -> Self {
        RedisLimiter {
            checks: checks_coalescer(role.clone()),
            role,
        }
    }
}

/// Decides every waiting request in one `gcra` call, in arrival order.
fn checks_coalescer(role: RedisRole) -> Coalescer<(String, u32, i64), Reply> {
    let script = redis::Script::new(include_str!("lua/gcra.lua"));
    Coalescer::spawn(
        "ratelimit_checks",
        move |requests: Vec<(String, u32, i64)>| {
            let (role, script) = (role.clone(), script.clone());
            async move {
                let (requests, script) = (&requests, &script);
                // On a cluster one call per hash slot (a script touches one
                // slot's keys), all sent at once; elsewhere one call.
                let parts: Vec<(Vec<usize>, Vec<i64>)> = role
                    .run(|conn| {
                        let keys: Vec<&str> = requests.iter().map(|(k, _, _)| k.as_str()).collect();
                        let groups = conn.script_groups(&keys);
                        futures::future::try_join_all(groups.into_iter().map(move |group| {
                            let mut conn = conn.clone();
                            async move {
                                let mut call = script.prepare_invoke();
                                for &i in &group {
                                    let (key, limit, period_us) = &requests[i];
                                    call.key(key).arg(*limit).arg(*period_us);
                                }
                                let flat: Vec<i64> = call.invoke_async(&mut conn).await?;
                                Ok::<_, redis::RedisError>((group, flat))
                            }
                        }))
                    })
                    .await?;
                let mut replies = vec![(0, 0, 0, 0); requests.len()];
                for (group, flat) in parts {
                    anyhow::ensure!(flat.len() == group.len() * 4, "short rate limit reply");
                    for (i, c) in group.into_iter().zip(flat.chunks(4)) {
                        replies[i] = (c[0], c[1], c[2], c[3]);
                    }
                }
                Ok(replies)
            }
        },
    )
}

/// The script's reply: allowed (1|0), remaining, reset_after_us, retry_after_us.
type Reply = (i64, i64, i64, i64);

fn decision(limit: u32, (allowed, remaining, reset_after_us, retry_after_us): Reply) -> Decision {
    Decision {
        allowed: allowed == 1,
        limit,
        remaining: u32::try_from(remaining.max(0)).unwrap_or(u32::MAX),
        reset_after_us,
        retry_after_us,
    }
}

#[async_trait]
impl LimiterBackend for RedisLimiter {
    async fn check(&self, key: &str, rate: Rate) -> anyhow::Result<Decision> {
        let period_us = i64::try_from(rate.period.as_micros()).unwrap_or(i64::MAX);
        let reply = self
            .checks
            .call((key.to_owned(), rate.limit, period_us))
            .await?;
        Ok(decision(rate.limit, reply))
    }

    async fn reset(&self, key: &str) -> anyhow::Result<()> {
        self.role
            .run(|mut conn| async move {
                redis::cmd("DEL")
                    .arg(key)
                    .query_async::<i64>(&mut conn)
                    .await
            })
            .await?;
        Ok(())
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
