//! Deterministic seeding (filled in by the seeder work).

use crate::db::Db;

/// What to seed.
#[derive(Debug, Clone)]
pub struct SeedOptions {
    pub users: u32,
    pub properties: u32,
    pub bookings: u32,
    pub seed: u64,
}

/// Seeds `db`; returns a one-line report.
pub async fn run(_db: &Db, _opts: &SeedOptions, _progress: bool) -> anyhow::Result<String> {
    anyhow::bail!("seeding is not implemented yet")
}
