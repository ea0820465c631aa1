//! The Redis limiter: one GCRA check per request as one Lua script call
//! (`lua/gcra.lua`), so a check is one round trip, atomic across any number
//! of API instances, with O(1) state per key (the TAT) that expires when the
//! key goes idle. The clock is Redis `TIME`: instances may disagree on the
//! time without changing any decision.
//!
//! Every call goes through [`RedisRole::run`] (timeout, circuit breaker);
//! an error is returned as such and [`super::RateLimiter::check`] applies
//! the scope's fail-open or fail-closed policy.

use async_trait::async_trait;

use super::LimiterBackend;
use super::gcra::Decision;
use crate::config::Rate;
use crate::kv::RedisRole;

/// [`LimiterBackend`] on the rate-limit role's Redis.
pub struct RedisLimiter {
    role: RedisRole,
    gcra: redis::Script,
}

impl RedisLimiter {
    /// A limiter on `role` (the keys it receives are already prefixed).
    pub fn new(role: RedisRole) -> Self {
        RedisLimiter {
            role,
            gcra: redis::Script::new(include_str!("lua/gcra.lua")),
        }
    }
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
        let reply: Reply = self
            .role
            .run(|mut conn| async move {
                self.gcra
                    .key(key)
                    .arg(rate.limit)
                    .arg(period_us)
                    .invoke_async(&mut conn)
                    .await
            })
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
