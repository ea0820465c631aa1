//! Rate limiting: typed [`Scope`]s, GCRA decisions ([`gcra`]) and a
//! [`LimiterBackend`] that keeps one timestamp per key, in-process
//! ([`memory`]) or in Redis. Each scope decides whether a broken backend
//! lets traffic through (general throttles) or refuses it (login, OTP,
//! booking).

pub mod gcra;
pub mod memory;
pub mod redis;

use std::sync::Arc;

use async_trait::async_trait;

use crate::config::{Rate, Throttles};
use crate::domain::Email;
use crate::kv::keys::{Keys, email_tag};
pub use gcra::Decision;

/// What is being limited, and per what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every `/api/` request of a client without a session, per client IP.
    Anon(std::net::IpAddr),
    /// Every `/api/` request of a signed-in user.
    User(i64),
    /// Booking attempts per user.
    Booking(i64),
    /// One-time code requests per email.
    OtpRequest(Email),
    /// Password login failures per email.
    Login(Email),
}

impl Scope {
    /// Stable: part of the state's key and of the `scope` metric label.
    pub fn name(&self) -> &'static str {
        match self {
            Scope::Anon(_) => "anon",
            Scope::User(_) => "user",
            Scope::Booking(_) => "booking",
            Scope::OtpRequest(_) => "otp",
            Scope::Login(_) => "login",
        }
    }

    fn subject(&self) -> String {
        match self {
            Scope::Anon(std::net::IpAddr::V4(ip)) => {
                // Without `Display`, whose padding support cost more than
                // the rest of the key; same text.
                let mut s = String::with_capacity(15);
                for (i, octet) in ip.octets().iter().enumerate() {
                    if i > 0 {
                        s.push('.');
                    }
                    s.push_str(itoa::Buffer::new().format(*octet));
                }
                s
            }
            Scope::Anon(ip) => ip.to_string(),
            Scope::User(id) | Scope::Booking(id) => itoa::Buffer::new().format(*id).to_owned(),
            Scope::OtpRequest(e) | Scope::Login(e) => email_tag(e),
        }
    }

    /// True where an unavailable limiter should let requests through.
    pub fn fails_open(&self) -> bool {
        matches!(self, Scope::Anon(_) | Scope::User(_))
    }

    fn rate(&self, t: &Throttles) -> Rate {
        match self {
            Scope::Anon(_) => t.anon,
            Scope::User(_) => t.user,
            Scope::Booking(_) => t.booking,
            Scope::OtpRequest(_) => t.otp,
            Scope::Login(_) => t.login,
        }
    }
}

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
        let rate = scope.rate(&self.rates);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_are_the_displayed_addresses_and_ids() {
        for ip in [
            "0.0.0.0",
            "10.0.0.1",
            "192.168.100.255",
            "::1",
            "2001:db8::7",
        ] {
            let addr: std::net::IpAddr = ip.parse().unwrap_or(std::net::IpAddr::from([1, 1, 1, 1]));
            assert_eq!(Scope::Anon(addr).subject(), ip);
        }
        assert_eq!(Scope::User(-12).subject(), "-12");
    }
}
