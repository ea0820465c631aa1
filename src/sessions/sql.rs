//! Sessions in the database (the embedded default).

use std::time::Duration;

use async_trait::async_trait;

use super::SessionStore;
use crate::db::{Db, now_ms};

/// [`SessionStore`] on the service's own database.
pub struct SqlSessionStore {
    db: Db,
}

impl SqlSessionStore {
    /// A store on `db`'s `sessions` table; it keeps no state of its own.
    pub fn new(db: Db) -> Self {
        SqlSessionStore { db }
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[async_trait]
impl SessionStore for SqlSessionStore {
    async fn create(&self, id_hash: &str, user_id: i64, ttl: Duration) -> anyhow::Result<()> {
        self.db
            .session_insert(id_hash, user_id, now_ms() + ms(ttl))
            .await
    }

    async fn load(&self, id_hash: &str, ttl: Duration) -> anyhow::Result<Option<i64>> {
        let Some((user_id, expires_at)) = self.db.session_get(id_hash).await? else {
            return Ok(None);
        };
        // Slide the expiry, but write only when it moved by a tenth of the
        // lifetime (at most once a minute): not one write per request.
        let target = now_ms() + ms(ttl);
        if target - expires_at > (ms(ttl) / 10).min(60_000) {
            self.db.session_touch(id_hash, target).await?;
        }
        Ok(Some(user_id))
    }

    async fn delete(&self, id_hash: &str) -> anyhow::Result<()> {
        self.db.session_delete(id_hash).await
    }

    async fn delete_user(&self, user_id: i64) -> anyhow::Result<u64> {
        self.db.session_delete_user(user_id).await
    }

    async fn ping(&self) -> anyhow::Result<()> {
        self.db.ping().await
    }
}
