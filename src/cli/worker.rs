//! `stayafrica worker`: runs background jobs until SIGINT/SIGTERM, then stops
//! taking jobs, lets the running ones finish for a grace period, and gives
//! the ones still running back to the queue (another worker takes them at
//! once, without losing an attempt).

use std::time::Duration;

use secrecy::ExposeSecret;
use tokio::sync::watch;

use crate::config::Settings;
use crate::jobs::worker::Worker;
use crate::startup::{build_state, shutdown_signal};

/// Default poll interval of a worker process on the SQL queue on SQLite: it
/// is not woken by enqueues of other processes (PostgreSQL's are: `LISTEN`).
const SQLITE_POLL_MS: u64 = 500;

/// Options of `stayafrica worker`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Jobs run at once by this process.
    #[arg(long, default_value_t = 4, value_name = "N")]
    concurrency: usize,
    /// Seconds running jobs get to finish after SIGINT/SIGTERM before they
    /// are given back to the queue.
    #[arg(long, default_value_t = 30.0, value_name = "SECS")]
    grace_secs: f64,
    /// Longest an idle worker waits before asking the queue again although
    /// nothing woke it (new jobs wake it at once on Redis and PostgreSQL;
    /// delayed ones when due). Default 5000; 500 on the SQL queue on
    /// SQLite, whose enqueues wake only workers in the process that queued.
    #[arg(long, value_name = "MS")]
    poll_interval_ms: Option<u64>,
    /// Most jobs this process leases in one exchange with the queue.
    #[arg(long, default_value_t = crate::jobs::worker::DEFAULT_BATCH, value_name = "N")]
    batch: usize,
}

/// Runs the worker until a shutdown signal, then stops it gracefully.
pub async fn run(settings: Settings, args: Args) -> anyhow::Result<()> {
    let grace = Duration::try_from_secs_f64(args.grace_secs)
        .map_err(|_| anyhow::anyhow!("--grace-secs must be a non-negative number"))?;
    let on_sqlite = settings.is_embedded()
        && settings
            .database_url
            .expose_secret()
            .trim()
            .starts_with("sqlite:");
    let poll = Duration::from_millis(args.poll_interval_ms.unwrap_or(if on_sqlite {
        SQLITE_POLL_MS
    } else {
        5000
    }));
    let (state, ctx) = build_state(settings).await?;
    let worker = Worker::new(state.jobs.clone(), ctx)
        .with_grace(grace)
        .with_poll_interval(poll)
        .with_batch(args.batch);
    let (tx, rx) = watch::channel(false);
    let handle = tokio::spawn(worker.run(args.concurrency, rx));
    shutdown_signal().await;
    let _ = tx.send(true);
    let _ = handle.await;
    state.db.close().await;
    Ok(())
}
