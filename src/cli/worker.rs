//! `stayafrica worker`: runs background jobs until SIGINT/SIGTERM, then stops
//! taking jobs and finishes the running ones.

use tokio::sync::watch;

use crate::config::Settings;
use crate::jobs::worker::Worker;
use crate::startup::{build_state, shutdown_signal};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Jobs run at once by this process.
    #[arg(long, default_value_t = 4, value_name = "N")]
    concurrency: usize,
}

pub async fn run(settings: Settings, args: Args) -> anyhow::Result<()> {
    let (state, ctx) = build_state(settings).await?;
    let worker = Worker::new(state.jobs.clone(), ctx);
    let (tx, rx) = watch::channel(false);
    let handle = tokio::spawn(worker.run(args.concurrency, rx));
    shutdown_signal().await;
    let _ = tx.send(true);
    let _ = handle.await;
    Ok(())
}
