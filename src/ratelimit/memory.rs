//! The in-process limiter: the same GCRA as the Redis script over a map of
//! timestamps. (governor keeps GCRA state too, but does not expose the
//! remaining count and reset time the `X-RateLimit-*` headers need in the
//! same terms as the Redis script, so both share [`super::gcra`].)

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use async_trait::async_trait;

use super::LimiterBackend;
use super::gcra::{self, Decision};
use crate::config::Rate;

/// In-process [`LimiterBackend`].
pub struct MemoryLimiter {
    origin: Instant,
    state: Mutex<HashMap<String, i64>>,
}

impl Default for MemoryLimiter {
    fn default() -> Self {
        MemoryLimiter {
            origin: Instant::now(),
            state: Mutex::new(HashMap::new()),
        }
    }
}

impl MemoryLimiter {
    fn now_us(&self) -> i64 {
        i64::try_from(self.origin.elapsed().as_micros()).unwrap_or(i64::MAX)
    }
}

#[async_trait]
impl LimiterBackend for MemoryLimiter {
    async fn check(&self, key: &str, rate: Rate) -> anyhow::Result<Decision> {
        let now = self.now_us();
        let period = i64::try_from(rate.period.as_micros()).unwrap_or(i64::MAX);
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.len() > 100_000 {
            // Keys whose TAT has passed hold no information: drop them.
            state.retain(|_, tat| *tat > now);
        }
        let (d, new_tat) = gcra::check(state.get(key).copied(), now, rate.limit, period);
        if let Some(t) = new_tat {
            state.insert(key.to_owned(), t);
        }
        Ok(d)
    }

    async fn reset(&self, key: &str) -> anyhow::Result<()> {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
        Ok(())
    }

    async fn ping(&self) -> anyhow::Result<()> {
        Ok(())
    }
}
