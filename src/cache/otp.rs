//! One-time login codes of the cache role: stored hashed (SHA-256 of key
//! and code) with a TTL, consumed by the right code, dead after too many
//! wrong ones, each step atomic.
//!
//! A request while a code is live mails that same code again instead of
//! replacing it, so nobody can void the code a user is about to type by
//! asking for another. For that the code is also kept sealed: added, digit
//! block against a pad, to `HMAC-SHA256(seal key, key ‖ nonce) mod 10^6`
//! under a fresh nonce. The seal key ([`OtpSealKey`]) lives in the
//! database (`app_secrets`), never in Redis, so a dump of the cache alone
//! shows no live code (the hash of a six-digit code could be brute-forced
//! offline; the sealed value cannot without the key). [`MemoryOtps`] (embedded default) and
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

/// Wrong tries before a one-time code is dead.
pub const OTP_MAX_ATTEMPTS: u32 = 5;

/// Where one-time codes live: hashed, with a TTL and an attempt limit.
#[async_trait]
pub trait OtpStore: Send + Sync + 'static {
    /// Stores a one-time code hash with a TTL, replacing any earlier code.
    async fn put(&self, key: &str, code_hash: &str, ttl: Duration) -> anyhow::Result<()>;
    /// Keeps the live code of `key` (not expired, fewer than
    /// `max_attempts` wrong tries) or, if there is none, stores this one
    /// (`code_hash`, `sealed`) for `ttl`, in one atomic step. Returns the
    /// sealed value of the code now live and its remaining lifetime.
    async fn issue(
        &self,
        key: &str,
        code_hash: &str,
        sealed: &str,
        ttl: Duration,
        max_attempts: u32,
    ) -> anyhow::Result<(String, Duration)>;
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
    /// Empty for a code stored by `put` (it cannot be mailed again).
    sealed: String,
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
                sealed: String::new(),
                attempts: 0,
                expires: now + ttl,
            },
        );
        Ok(())
    }

    async fn issue(
        &self,
        key: &str,
        code_hash: &str,
        sealed: &str,
        ttl: Duration,
        max_attempts: u32,
    ) -> anyhow::Result<(String, Duration)> {
        let now = Instant::now();
        let mut otps = lock(&self.otps);
        otps.retain(|_, o| o.expires > now);
        if let Some(o) = otps.get(key)
            && o.attempts < max_attempts
            && !o.sealed.is_empty()
        {
            return Ok((o.sealed.clone(), o.expires - now));
        }
        otps.insert(
            key.to_owned(),
            Otp {
                hash: code_hash.to_owned(),
                sealed: sealed.to_owned(),
                attempts: 0,
                expires: now + ttl,
            },
        );
        Ok((sealed.to_owned(), ttl))
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
    issue: Script,
    attempt: Script,
}

impl RedisOtps {
    /// Codes on the cache role's connection (keys come from the facade).
    pub fn new(role: RedisRole) -> Self {
        RedisOtps {
            role,
            put: Script::new(include_str!("lua/otp_put.lua")),
            issue: Script::new(include_str!("lua/otp_issue.lua")),
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

    async fn issue(
        &self,
        key: &str,
        code_hash: &str,
        sealed: &str,
        ttl: Duration,
        max_attempts: u32,
    ) -> anyhow::Result<(String, Duration)> {
        let (live, left_ms): (String, i64) = self
            .role
            .run(|mut conn| async move {
                self.issue
                    .key(key)
                    .arg(code_hash)
                    .arg(sealed)
                    .arg(ttl_ms(ttl))
                    .arg(max_attempts)
                    .invoke_async(&mut conn)
                    .await
            })
            .await
            .context("cannot issue the one-time code")?;
        let left = Duration::from_millis(u64::try_from(left_ms).unwrap_or(0));
        Ok((live, left))
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

/// The key that seals one-time codes (see the module docs). Its `Debug`
/// shows nothing.
#[derive(Clone)]
pub struct OtpSealKey([u8; 32]);

impl std::fmt::Debug for OtpSealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OtpSealKey(..)")
    }
}

/// Codes are six digits: sealing works modulo this.
const CODE_SPACE: u32 = 1_000_000;

impl OtpSealKey {
    /// A key from its 32 bytes (`Db::secret("otp_seal")`).
    pub fn new(bytes: [u8; 32]) -> Self {
        OtpSealKey(bytes)
    }

    /// The pad of one code: `HMAC(key, code key ‖ nonce) mod 10^6` (the
    /// bias of reducing 64 bits is below 10^-13).
    fn pad(&self, key: &str, nonce: &str) -> u32 {
        use hmac::Mac;
        let Ok(mut mac) = hmac::Hmac::<Sha256>::new_from_slice(&self.0) else {
            return 0;
        };
        mac.update(key.as_bytes());
        mac.update(b":");
        mac.update(nonce.as_bytes());
        let out = mac.finalize().into_bytes();
        let mut first = [0u8; 8];
        first.copy_from_slice(&out[..8]);
        u32::try_from(u64::from_be_bytes(first) % u64::from(CODE_SPACE)).unwrap_or(0)
    }

    /// `nonce:sealed` of `code` under `key`.
    fn seal(&self, key: &str, code: u32) -> String {
        let nonce = format!("{:016x}", rand::random::<u64>());
        let sealed = (code % CODE_SPACE + self.pad(key, &nonce)) % CODE_SPACE;
        format!("{nonce}:{sealed:06}")
    }

    /// The code sealed in `nonce:sealed`.
    fn unseal(&self, key: &str, stored: &str) -> anyhow::Result<u32> {
        let (nonce, sealed) = stored
            .split_once(':')
            .ok_or_else(|| anyhow::anyhow!("a sealed code without its nonce"))?;
        let sealed: u32 = sealed
            .parse()
            .context("a sealed code that is not a number")?;
        Ok((sealed % CODE_SPACE + CODE_SPACE - self.pad(key, nonce)) % CODE_SPACE)
    }
}

/// A code to mail: the live one again, or a new one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCode {
    /// The six digits.
    pub code: String,
    /// Until it expires.
    pub valid_for: Duration,
    /// False when it is a live code mailed again.
    pub fresh: bool,
}

impl Cache {
    /// The code to mail to `email`: its live code again (not used, expired
    /// or dead), otherwise a new random one stored for `ttl`.
    pub async fn otp_issue(
        &self,
        email: &Email,
        seal: &OtpSealKey,
        ttl: Duration,
    ) -> anyhow::Result<IssuedCode> {
        use rand::{Rng, TryRngCore};
        let key = self.keys.otp(email);
        let code = rand::rngs::OsRng.unwrap_err().random_range(0..CODE_SPACE);
        let text = format!("{code:06}");
        let sealed = seal.seal(&key, code);
        let (live, valid_for) = self
            .otps
            .issue(&key, &otp_hash(&key, &text), &sealed, ttl, OTP_MAX_ATTEMPTS)
            .await?;
        let fresh = live == sealed;
        let code = if fresh {
            text
        } else {
            format!("{:06}", seal.unseal(&key, &live)?)
        };
        Ok(IssuedCode {
            code,
            valid_for,
            fresh,
        })
    }

    /// Stores a fresh one-time code for `email` (hashed), replacing any
    /// earlier one (tests and operators; requests go through
    /// [`Cache::otp_issue`]).
    pub async fn otp_put(&self, email: &Email, code: &str, ttl: Duration) -> anyhow::Result<()> {
        let key = self.keys.otp(email);
        self.otps.put(&key, &otp_hash(&key, code), ttl).await
    }

    /// One try at the code of `email`: consumed on success, dead after
    /// [`OTP_MAX_ATTEMPTS`] wrong tries.
    pub async fn otp_attempt(&self, email: &Email, code: &str) -> anyhow::Result<OtpOutcome> {
        let key = self.keys.otp(email);
        self.otps
            .attempt(&key, &otp_hash(&key, code), OTP_MAX_ATTEMPTS)
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
