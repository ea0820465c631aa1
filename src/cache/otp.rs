//! One-time login codes of the cache role: stored hashed (SHA-256 of key
//! and code) with a TTL, consumed by the right code, dead after too many
//! wrong ones, each step atomic. [`MemoryOtps`] (embedded default) and
//! [`RedisOtps`] (one Lua script per step: `lua/otp_*.lua`) pass the same
//! behaviour suite (`tests/api/cache_suite.rs`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context;
use async_trait::async_trait;
use redis::Script;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::Cache;
use super::memory::lock;
use crate::domain::Email;
use crate::kv::{RedisRole, ttl_ms};

/// The outcome of one try at a one-time code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtpOutcome {
    /// Right code: it has been consumed.
    Accepted,
    /// Wrong code: one attempt used.
    Rejected,
    /// No live code (never issued, expired, used, or out of attempts).
    Missing,
}

/// Where one-time codes live: hashed, with a TTL and an attempt limit.
#[async_trait]
pub trait OtpStore: Send + Sync + 'static {
    /// Stores a one-time code hash with a TTL, replacing any earlier code.
    async fn put(&self, key: &str, code_hash: &str, ttl: Duration) -> anyhow::Result<()>;
    /// Checks a code hash and consumes the code on success, in one atomic
    /// step; after `max_attempts` wrong tries the code is dead.
    async fn attempt(
        &self,
        key: &str,
        candidate_hash: &str,
        max_attempts: u32,
    ) -> anyhow::Result<OtpOutcome>;
}

struct Otp {
    hash: String,
    attempts: u32,
    expires: Instant,
}

/// In-process [`OtpStore`].
#[derive(Default)]
pub struct MemoryOtps {
    otps: Mutex<HashMap<String, Otp>>,
}

#[async_trait]
impl OtpStore for MemoryOtps {
    async fn put(&self, key: &str, code_hash: &str, ttl: Duration) -> anyhow::Result<()> {
        let now = Instant::now();
        let mut otps = lock(&self.otps);
        otps.retain(|_, o| o.expires > now);
        otps.insert(
            key.to_owned(),
            Otp {
                hash: code_hash.to_owned(),
                attempts: 0,
                expires: now + ttl,
            },
        );
        Ok(())
    }

    async fn attempt(
        &self,
        key: &str,
        candidate_hash: &str,
        max_attempts: u32,
    ) -> anyhow::Result<OtpOutcome> {
        let mut otps = lock(&self.otps);
        let Some(otp) = otps.get_mut(key) else {
            return Ok(OtpOutcome::Missing);
        };
        if otp.expires <= Instant::now() || otp.attempts >= max_attempts {
            otps.remove(key);
            return Ok(OtpOutcome::Missing);
        }
        if bool::from(otp.hash.as_bytes().ct_eq(candidate_hash.as_bytes())) {
            otps.remove(key);
            return Ok(OtpOutcome::Accepted);
        }
        otp.attempts += 1;
        if otp.attempts >= max_attempts {
            otps.remove(key);
        }
        Ok(OtpOutcome::Rejected)
    }
}

/// [`OtpStore`] on the cache role's Redis.
pub struct RedisOtps {
    role: RedisRole,
    put: Script,
    attempt: Script,
}

impl RedisOtps {
    /// Codes on the cache role's connection (keys come from the facade).
    pub fn new(role: RedisRole) -> Self {
        RedisOtps {
            role,
            put: Script::new(include_str!("lua/otp_put.lua")),
            attempt: Script::new(include_str!("lua/otp_attempt.lua")),
        }
    }
}

#[async_trait]
impl OtpStore for RedisOtps {
    async fn put(&self, key: &str, code_hash: &str, ttl: Duration) -> anyhow::Result<()> {
        self.role
            .run(|mut conn| async move {
                self.put
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

    async fn attempt(
        &self,
        key: &str,
        candidate_hash: &str,
        max_attempts: u32,
    ) -> anyhow::Result<OtpOutcome> {
        let outcome: String = self
            .role
            .run(|mut conn| async move {
                self.attempt
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
}

impl Cache {
    /// Stores a fresh one-time code for `email` (hashed), replacing any
    /// earlier one.
    pub async fn otp_put(&self, email: &Email, code: &str, ttl: Duration) -> anyhow::Result<()> {
        let key = self.keys.otp(email);
        self.otps.put(&key, &otp_hash(&key, code), ttl).await
    }

    /// One try at the code of `email`: consumed on success, dead after
    /// `max_attempts` wrong tries.
    pub async fn otp_attempt(
        &self,
        email: &Email,
        code: &str,
        max_attempts: u32,
    ) -> anyhow::Result<OtpOutcome> {
        let key = self.keys.otp(email);
        self.otps
            .attempt(&key, &otp_hash(&key, code), max_attempts)
            .await
    }
}

/// Codes are stored as SHA-256 of key and code: a dump of the store does not
/// show live codes. (Six digits can be brute-forced offline by someone who can
/// read the store; the five-minute TTL and attempt limit are the defence
/// online, which is the one that matters.)
fn otp_hash(key: &str, code: &str) -> String {
    let d = Sha256::new()
        .chain_update(key)
        .chain_update(b":")
        .chain_update(code)
        .finalize();
    d.iter().map(|b| format!("{b:02x}")).collect()
}
