//! The console's audit log (`admin_audit`): appended to, read newest
//! first, never changed.

use super::{Db, now_ms};
use crate::with_pool;

/// One audited action.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, sqlx::FromRow)]
pub struct AuditEntry {
    pub id: i64,
    /// Unix milliseconds.
    pub at_ms: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub result: String,
}

impl Db {
    /// Appends one entry.
    pub async fn audit(
        &self,
        actor: &str,
        action: &str,
        target: &str,
        result: &str,
    ) -> anyhow::Result<()> {
        with_pool!(self, p => sqlx::query(
            "INSERT INTO admin_audit (at_ms, actor, action, target, result) VALUES ($1, $2, $3, $4, $5)")
            .bind(now_ms()).bind(actor).bind(action).bind(target).bind(result)
            .execute(p).await.map(|r| r.rows_affected()))?;
        Ok(())
    }

    /// The `limit` newest entries.
    pub async fn audit_log(&self, limit: i64) -> anyhow::Result<Vec<AuditEntry>> {
        Ok(with_pool!(self, p => sqlx::query_as::<_, AuditEntry>(
            "SELECT id, at_ms, actor, action, target, result FROM admin_audit
             ORDER BY id DESC LIMIT $1")
            .bind(limit).fetch_all(p).await)?)
    }
}
