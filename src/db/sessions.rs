//! Server-side sessions of the embedded default, in the database so that a
//! restart logs nobody out. Only a hash of each session id is stored.

use super::{Db, now_ms};
use crate::with_pool;

impl Db {
    /// Records a session under the hash of its id; `expires_at_ms` is Unix ms.
    pub async fn session_insert(
        &self,
        id_hash: &str,
        user_id: i64,
        expires_at_ms: i64,
    ) -> anyhow::Result<()> {
        with_pool!(self, p => sqlx::query(
            "INSERT INTO sessions (id_hash, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4)")
            .bind(id_hash).bind(user_id).bind(now_ms()).bind(expires_at_ms)
            .execute(p).await.map(|r| r.rows_affected()))?;
        Ok(())
    }

    /// The user and expiry of a live session.
    pub async fn session_get(&self, id_hash: &str) -> anyhow::Result<Option<(i64, i64)>> {
        Ok(with_pool!(self, p => sqlx::query_as::<_, (i64, i64)>(
            "SELECT user_id, expires_at FROM sessions WHERE id_hash = $1 AND expires_at > $2")
            .bind(id_hash).bind(now_ms()).fetch_optional(p).await)?)
    }

    /// Moves a session's expiry (Unix ms); a missing session is not an error.
    pub async fn session_touch(&self, id_hash: &str, expires_at_ms: i64) -> anyhow::Result<()> {
        with_pool!(self, p => sqlx::query("UPDATE sessions SET expires_at = $2 WHERE id_hash = $1")
            .bind(id_hash).bind(expires_at_ms).execute(p).await.map(|r| r.rows_affected()))?;
        Ok(())
    }

    /// Ends one session; idempotent (an unknown hash is not an error).
    pub async fn session_delete(&self, id_hash: &str) -> anyhow::Result<bool> {
        let n = with_pool!(self, p => sqlx::query("DELETE FROM sessions WHERE id_hash = $1")
            .bind(id_hash).execute(p).await.map(|r| r.rows_affected()))?;
        Ok(n > 0)
    }

    /// Ends every session of a user; returns how many there were.
    pub async fn session_delete_user(&self, user_id: i64) -> anyhow::Result<u64> {
        Ok(
            with_pool!(self, p => sqlx::query("DELETE FROM sessions WHERE user_id = $1")
            .bind(user_id).execute(p).await.map(|r| r.rows_affected()))?,
        )
    }

    /// Removes expired sessions (run periodically).
    pub async fn session_purge_expired(&self) -> anyhow::Result<u64> {
        Ok(
            with_pool!(self, p => sqlx::query("DELETE FROM sessions WHERE expires_at <= $1")
            .bind(now_ms()).execute(p).await.map(|r| r.rows_affected()))?,
        )
    }
}
