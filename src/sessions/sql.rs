//! Sessions in the database (the embedded default). On SQLite the live
//! sessions are also held in process memory ([`super::near`]), so that a
//! signed-in request reads no database.

use std::time::Duration;

use async_trait::async_trait;

use super::SessionStore;
use super::near::{ChangeFile, NearSessions};
use crate::db::{Db, SqliteFile, now_ms};

/// [`SessionStore`] on the service's own database.
pub struct SqlSessionStore {
    db: Db,
    /// Sessions held in memory: on SQLite only (see [`super::near`]).
    near: Option<NearSessions>,
}

impl SqlSessionStore {
    /// A store on `db`'s `sessions` table.
    pub fn new(db: Db) -> Self {
        let near = match db.sqlite_file() {
            Some(SqliteFile::Path(path)) => {
                Some(NearSessions::new(Some(ChangeFile::beside(&path))))
            }
            Some(SqliteFile::Memory) => Some(NearSessions::new(None)),
            None => None,
        };
        SqlSessionStore { db, near }
    }

    /// Moves the expiry to `ttl` from now when it moved by a tenth of the
    /// lifetime (at most once a minute): not one write per request.
    /// Returns the expiry the database now has.
    async fn slide(&self, id_hash: &str, expires_at: i64, ttl: Duration) -> anyhow::Result<i64> {
        let target = now_ms() + ms(ttl);
        if target - expires_at > (ms(ttl) / 10).min(60_000) {
            self.db.session_touch(id_hash, target).await?;
            return Ok(target);
        }
        Ok(expires_at)
    }

    /// After sessions ended in the database: no process may keep them.
    fn ended(&self) -> anyhow::Result<()> {
        match &self.near {
            Some(near) => near.ended(),
            None => Ok(()),
        }
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
        let Some(near) = &self.near else {
            let Some((user_id, expires_at)) = self.db.session_get(id_hash).await? else {
                return Ok(None);
            };
            self.slide(id_hash, expires_at, ttl).await?;
            return Ok(Some(user_id));
        };
        let found = near.lookup(id_hash)?;
        let (user_id, expires_at) = match found.held {
            Some((user_id, expires_at)) if expires_at > now_ms() => (user_id, expires_at),
            held => {
                if held.is_some() {
                    near.forget(id_hash);
                }
                match self.db.session_get(id_hash).await? {
                    Some(row) => row,
                    None => return Ok(None),
                }
            }
        };
        let slid = self.slide(id_hash, expires_at, ttl).await?;
        if found.held != Some((user_id, slid)) {
            near.put(found.epoch, id_hash, user_id, slid);
        }
        Ok(Some(user_id))
    }

    async fn delete(&self, id_hash: &str) -> anyhow::Result<()> {
        // A cookie that matches no session (made up, or already ended)
        // ends nothing: no mark in the change file, so no process drops
        // the sessions it holds because of it.
        if self.db.session_delete(id_hash).await? {
            self.ended()?;
        }
        Ok(())
    }

    async fn delete_user(&self, user_id: i64) -> anyhow::Result<u64> {
        let n = self.db.session_delete_user(user_id).await?;
        if n > 0 {
            self.ended()?;
        }
        Ok(n)
    }

    async fn ping(&self) -> anyhow::Result<()> {
        self.db.ping().await
    }
}
