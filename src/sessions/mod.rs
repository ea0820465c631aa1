//! Server-side sessions: opaque random ids (256 bits from the OS CSPRNG)
//! handed out in the `sessionid` cookie; the store keeps only a SHA-256 of
//! each id, the user it belongs to and a sliding expiry. A per-user index
//! lets all of a user's sessions end at once.
//!
//! Stores: [`sql::SqlSessionStore`] (the embedded default, in the database,
//! so a restart logs nobody out) and the Redis store; both pass the same
//! behaviour suite (`tests/api/session_suite.rs`).

pub mod identity;
pub mod near;
pub mod redis;
pub mod sql;

use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use rand::TryRngCore;
use sha2::{Digest, Sha256};

/// The name of the session cookie.
pub const COOKIE: &str = "sessionid";

/// Where sessions live.
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// Records a session of `user_id` under `id_hash`, valid for `ttl`.
    async fn create(&self, id_hash: &str, user_id: i64, ttl: Duration) -> anyhow::Result<()>;
    /// The user of a live session, extending its expiry to `ttl` from now.
    async fn load(&self, id_hash: &str, ttl: Duration) -> anyhow::Result<Option<i64>>;
    /// Ends one session; idempotent (an unknown hash is not an error).
    async fn delete(&self, id_hash: &str) -> anyhow::Result<()>;
    /// Ends every session of a user; returns how many there were.
    async fn delete_user(&self, user_id: i64) -> anyhow::Result<u64>;
    /// Health check for `/health`.
    async fn ping(&self) -> anyhow::Result<()>;
}

/// A new session id: 32 random bytes, URL-safe base64.
pub fn new_session_id() -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng
        .try_fill_bytes(&mut bytes)
        .map_err(|e| anyhow::anyhow!("OS random source failed: {e}"))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// What the store keys a session by: a leaked store does not leak usable ids.
pub fn hash_id(id: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(id.as_bytes());
    let mut out = String::with_capacity(digest.len() * 2);
    for b in digest {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    out
}

/// Plausible session ids only: anything else is not looked up at all.
pub fn looks_like_id(id: &str) -> bool {
    id.len() == 43
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stored_hash_is_the_lowercase_hex_sha256_of_the_id() {
        // Stores hold these: a change here would log everybody out.
        assert_eq!(
            hash_id("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
