//! Secrets the service makes for itself (one row per name), created on
//! first use by whichever process comes first and then shared by every
//! process of the deployment through the database.

use super::Db;
use crate::with_pool;

impl Db {
    /// The 32-byte secret `name` (hex in the table), made now if there is
    /// none yet; concurrent first uses agree on one (the insert of the
    /// losers does nothing, and everyone reads the winner's).
    pub async fn secret(&self, name: &str) -> anyhow::Result<[u8; 32]> {
        let fresh: [u8; 32] = rand::random();
        let hex: String = fresh.iter().map(|b| format!("{b:02x}")).collect();
        with_pool!(self, p => sqlx::query(
            "INSERT INTO app_secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
            .bind(name).bind(&hex).execute(p).await.map(|r| r.rows_affected()))?;
        let stored: String = with_pool!(self, p => sqlx::query_scalar(
            "SELECT value FROM app_secrets WHERE name = $1")
            .bind(name).fetch_one(p).await)?;
        let mut out = [0u8; 32];
        anyhow::ensure!(stored.len() == 64, "secret {name} is not 32 bytes of hex");
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&stored[2 * i..2 * i + 2], 16)
                .map_err(|_| anyhow::anyhow!("secret {name} is not hex"))?;
        }
        Ok(out)
    }
}
