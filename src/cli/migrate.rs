//! `stayafrica migrate`: applies the database migrations.

use crate::config::Settings;
use crate::db::Db;

pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let db = Db::connect(&settings.database_url).await?;
    db.migrate().await?;
    println!("migrations applied");
    Ok(())
}
