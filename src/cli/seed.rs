//! `stayafrica seed`: fills the database with a deterministic data set.

use crate::config::Settings;
use crate::db::Db;
use crate::seed::{self, SeedOptions};
use secrecy::ExposeSecret;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Users to create (about one in ten is a host).
    #[arg(long, default_value_t = 1000)]
    users: u32,
    /// Properties to create.
    #[arg(long, default_value_t = 10_000)]
    properties: u32,
    /// Bookings to create (never overlapping on one property).
    #[arg(long, default_value_t = 20_000)]
    bookings: u32,
    /// Random seed: the same seed gives the same data.
    #[arg(long, default_value_t = 20240601)]
    seed: u64,
}

pub async fn run(settings: Settings, a: Args) -> anyhow::Result<()> {
    let db = Db::connect(settings.database_url.expose_secret()).await?;
    db.migrate().await?;
    let opts = SeedOptions {
        users: a.users,
        properties: a.properties,
        bookings: a.bookings,
        seed: a.seed,
    };
    let report = seed::run(&db, &opts, true).await?;
    println!("{report}");
    Ok(())
}
