//! `stayafrica migrate`: applies the database migrations.

use crate::config::Settings;
use crate::db::Db;
use secrecy::ExposeSecret;

pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let db = Db::connect(settings.database_url.expose_secret()).await?;
    db.migrate().await?;
    println!("migrations applied");
    Ok(())
}
