//! `stayafrica import DIR`: loads users.jsonl, properties.jsonl and
//! bookings.jsonl of the existing system's export.

use secrecy::ExposeSecret;
use std::path::PathBuf;

use crate::config::Settings;
use crate::db::Db;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory holding users.jsonl, properties.jsonl and bookings.jsonl.
    dir: PathBuf,
}

pub async fn run(settings: Settings, a: Args) -> anyhow::Result<()> {
    let db = Db::connect(settings.database_url.expose_secret()).await?;
    db.migrate().await?;
    let report = crate::import::run(&db, &a.dir, true).await?;
    println!("{report}");
    Ok(())
}
