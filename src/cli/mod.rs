//! The `stayafrica` command line: one binary, one subcommand per file.

mod cache;
mod import;
mod jobs;
mod migrate;
mod seed;
mod serve;
mod sessions;
mod worker;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::Settings;

/// StayAfrica: property-rental API with Redis-backed cache, sessions, rate
/// limits and background jobs. With no configuration it runs on embedded
/// backends (SQLite and in-process); see the README for the variables.
#[derive(Debug, Parser)]
#[command(name = "stayafrica", version, about, long_about = None)]
pub struct Cli {
    /// TOML settings file (values in it are overridden by environment variables).
    #[arg(long, global = true, env = "STAYAFRICA_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands; each lives in its own module and gets the loaded settings.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP API (applies migrations first).
    Serve(serve::Args),
    /// Run background job workers.
    Worker(worker::Args),
    /// Apply database migrations and exit.
    Migrate,
    /// Fill the database with a deterministic, realistic data set.
    Seed(seed::Args),
    /// Load the existing system's JSON Lines export, keeping ids.
    Import(import::Args),
    /// Inspect and replay background jobs.
    Jobs(jobs::Args),
    /// Manage user sessions.
    Sessions(sessions::Args),
    /// Inspect and manage the Redis roles (ping, keys, get, ttl, del,
    /// invalidate, flush, info, check).
    Cache(cache::Args),
}

impl Cli {
    /// Runs the chosen subcommand.
    pub async fn run(self) -> anyhow::Result<()> {
        let settings = Settings::load(self.config.as_deref())?;
        // Before any subcommand connects (some do without `build_state`).
        if let Some(tls) = &settings.redis_tls {
            crate::kv::tls::install(tls)?;
        }
        match self.command {
            Command::Serve(a) => serve::run(settings, a).await,
            Command::Worker(a) => worker::run(settings, a).await,
            Command::Migrate => migrate::run(settings).await,
            Command::Seed(a) => seed::run(settings, a).await,
            Command::Import(a) => import::run(settings, a).await,
            Command::Jobs(a) => jobs::run(settings, a).await,
            Command::Sessions(a) => sessions::run(settings, a).await,
            Command::Cache(a) => cache::run(settings, a).await,
        }
    }
}
