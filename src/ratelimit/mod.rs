//! Rate limiting: typed [`Scope`]s, GCRA decisions ([`gcra`]) and a
//! [`LimiterBackend`] that keeps one timestamp per key, in-process
//! ([`memory`]) or in Redis. Each scope decides whether a broken backend
//! lets traffic through (general throttles) or refuses it (login, OTP,
//! booking).

pub mod gcra;
pub mod memory;
mod rate;
pub mod redis;
mod scope;

use std::sync::Arc;

use async_trait::async_trait;

use crate::kv::keys::Keys;
pub use gcra::Decision;
pub use rate::Rate;
pub use scope::{Action, Scope, Spec, Throttles};

/// Keeps GCRA state per key.
#[async_trait]
pub trait LimiterBackend: Send + Sync + 'static {
    /// One atomic check-and-count of `key` against `rate`.
    async fn check(&self, key: &str, rate: Rate) -> anyhow::Result<Decision>;
    /// Forgets the state of `key` (e.g. failed logins after a success).
    async fn reset(&self, key: &str) -> anyhow::Result<()>;
    /// Health check for `/health`; the in-process backend always answers.
    async fn ping(&self) -> anyhow::Result<()>;
}

/// The limiter the service uses: scopes, rates and failure policy.
#[derive(Clone)]
pub struct RateLimiter {
    backend: Arc<dyn LimiterBackend>,
    keys: Keys,
    rates: Throttles,
}

/// The limiter could not decide and the scope fails closed.
#[derive(Debug, thiserror::Error)]
#[error("rate limiter unavailable")]
pub struct LimiterUnavailable;

impl RateLimiter {
    /// A limiter enforcing `rates` over `backend`; clones share the backend.
    pub fn new(backend: Arc<dyn LimiterBackend>, keys: Keys, rates: Throttles) -> Self {
        RateLimiter {
            backend,
            keys,
            rates,
        }
    }

    /// The configured rate of every scope.
    pub fn rates(&self) -> &Throttles {
        &self.rates
    }

    /// Counts one request in `scope` and decides on it.
    pub async fn check(&self, scope: &Scope) -> Result<Decision, LimiterUnavailable> {
        let rate = self.rates.get(scope.action());
        let key = self.keys.ratelimit(scope.name(), &scope.subject());
        let name = scope.name();
        match self.backend.check(&key, rate).await {
            Ok(d) => {
                let outcome = if d.allowed { "allowed" } else { "throttled" };
                crate::telemetry::count(
                    "ratelimit_decisions_total",
                    &[("scope", name), ("outcome", outcome)],
                    1,
                );
                Ok(d)
            }
            Err(e) => {
                crate::telemetry::count(
                    "ratelimit_decisions_total",
                    &[("scope", name), ("outcome", "error")],
                    1,
                );
                tracing::warn!(
                    scope = name,
                    error = format!("{e:#}"),
                    "rate limiter failed"
                );
                if scope.fails_open() {
                    Ok(Decision::open(rate.limit))
                } else {
                    Err(LimiterUnavailable)
                }
            }
        }
    }

    /// Counts one attempt in every scope of `scopes` (all of them, also
    /// after a refusal, so that every attempt counts everywhere) and
    /// returns the decision that binds: the first refusal, else the one
    /// with the least remaining.
    pub async fn check_all(&self, scopes: &[Scope]) -> Result<Decision, LimiterUnavailable> {
        let mut binding: Option<Decision> = None;
        for scope in scopes {
            let d = self.check(scope).await?;
            binding = Some(match binding {
                Some(b) if !b.allowed || (d.allowed && b.remaining <= d.remaining) => b,
                _ => d,
            });
        }
        Ok(binding.unwrap_or_else(|| Decision::open(0)))
    }

    /// A per-(subject, client) limit under a looser per-subject ceiling
    /// that cannot be used to lock anybody out: both count the attempt,
    /// but the ceiling binds only a client that has attempts of its own in
    /// the window (its pair bucket was not full before this one). A victim
    /// signing in from an address the attacker does not hold is judged by
    /// its own bucket alone; an attacker spreading over many addresses
    /// gets one attempt per address and window once over the ceiling.
    pub async fn check_with_ceiling(
        &self,
        pair: &Scope,
        ceiling: &Scope,
    ) -> Result<Decision, LimiterUnavailable> {
        let own = self.check(pair).await?;
        let shared = self.check(ceiling).await?;
        let fresh = own.allowed && own.remaining.saturating_add(1) >= own.limit;
        if !own.allowed || fresh || shared.allowed {
            return Ok(own);
        }
        Ok(shared)
    }

    /// Whether the backend answers (for `/health`).
    pub async fn ping(&self) -> anyhow::Result<()> {
        self.backend.ping().await
    }

    /// Clears a scope's state (best effort).
    pub async fn reset(&self, scope: &Scope) {
        let key = self.keys.ratelimit(scope.name(), &scope.subject());
        if let Err(e) = self.backend.reset(&key).await {
            tracing::warn!(
                scope = scope.name(),
                error = format!("{e:#}"),
                "rate limit reset failed"
            );
        }
    }

    /// The guide's `is_rate_limited(key, limit, period)` for custom limits in
    /// code: counts one attempt under `name` and says whether it is over.
    /// Fails closed (an unavailable limiter counts as limited).
    pub async fn is_rate_limited(&self, name: &str, rate: Rate) -> bool {
        let key = self.keys.ratelimit("custom", name);
        match self.backend.check(&key, rate).await {
            Ok(d) => !d.allowed,
            Err(_) => true,
        }
    }
}
