//! `stayafrica worker`: runs background jobs until SIGINT/SIGTERM, then stops
//! taking jobs, lets the running ones finish for a grace period, and gives
//! the ones still running back to the queue (another worker takes them at
//! once, without losing an attempt).
//!
//! The worker runs on a runtime of its own with `--threads` threads, one by
//! default: its slots are concurrent, not parallel, as in the usual job
//! runners (Sidekiq's threads under one lock, Celery's prefork), and one
//! process per core scales out. On one thread, a job's task, the queue's
//! connection and the dispatcher hand work to one another without waking
//! another thread, which on the benchmark costs about a quarter less CPU
//! per job than two threads (docs/PERFORMANCE.md). The jobs are I/O-bound;
//! a job that computes for long without awaiting holds up the other slots
//! of its process (then give it more threads).

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
    /// Threads of the worker's runtime (0: the process's own runtime, one
    /// thread per core).
    #[arg(long, default_value_t = 1, value_name = "N")]
    threads: usize,
}

/// Runs the worker until a shutdown signal, then stops it gracefully, on a
/// runtime of `--threads` threads (on a thread of its own, so that
/// everything the worker uses, connections included, is created there).
pub async fn run(settings: Settings, args: Args) -> anyhow::Result<()> {
    if args.threads == 0 {
        return run_here(settings, args).await;
    }
    let threads = args.threads;
    let (done, finished) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("stayafrica-worker".into())
        .spawn(move || {
            let runtime = if threads == 1 {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
            } else {
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(threads)
                    .enable_all()
                    .build()
            };
            let result = match runtime {
                Ok(rt) => rt.block_on(run_here(settings, args)),
                Err(e) => Err(anyhow::Error::new(e).context("starting the worker's runtime")),
            };
            let _ = done.send(result);
        })?;
    finished
        .await
        .unwrap_or_else(|_| Err(anyhow::anyhow!("the worker's thread stopped unexpectedly")))
}

async fn run_here(settings: Settings, args: Args) -> anyhow::Result<()> {
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
    crate::startup::refuse_development_defaults(&settings)?;
    let (state, ctx) = build_state(settings).await?;
    let worker = Worker::new(state.jobs.clone(), ctx)
        .with_grace(grace)
        .with_poll_interval(poll)
        .with_batch(args.batch);
    let (tx, rx) = watch::channel(false);
    // Every worker also relays what writes left in the outbox.
    let relay = tokio::spawn(state.outbox.clone().run_relay(rx.clone()));
    let handle = tokio::spawn(worker.run(args.concurrency, rx));
    shutdown_signal().await;
    let _ = tx.send(true);
    let _ = handle.await;
    let _ = relay.await;
    state.db.close().await;
    Ok(())
}
