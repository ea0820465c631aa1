//! `stayafrica jobs`: list dead jobs, replay one, show one's status, count
//! the queue, and benchmark it (throughput, pick-up latency) with real
//! worker processes.

use std::time::Duration;

use clap::Subcommand;

use crate::config::Settings;
use crate::jobs::bench::{self, BenchOptions};
use crate::startup::build_state;

/// Options of `stayafrica jobs`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: JobsCommand,
}

#[derive(Debug, Subcommand)]
enum JobsCommand {
    /// List dead jobs (retries exhausted) with their last error.
    Dead {
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Queue a dead job again with fresh attempts.
    Replay {
        /// The job id (from `jobs dead`).
        id: String,
    },
    /// Show one job's status and result.
    Status { id: String },
    /// Count queued, running and dead jobs.
    Counts,
    /// Measure jobs per second: start worker processes (same environment),
    /// queue no-op jobs, wait until each ran exactly once. Use an idle queue
    /// (its own STAYAFRICA_KEY_PREFIX or database).
    Bench {
        /// No-op jobs to run.
        #[arg(long, default_value_t = 20_000)]
        jobs: usize,
        /// Worker processes.
        #[arg(long, default_value_t = 4)]
        processes: usize,
        /// `--concurrency` of each worker process.
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
    },
    /// Measure pick-up latency: start one worker process (same
    /// environment), queue no-op jobs one at a time, each once the worker is
    /// idle again, and report how soon each started (p50, p99, max).
    Latency {
        /// Jobs to queue, one at a time.
        #[arg(long, default_value_t = 100)]
        jobs: usize,
        /// `--concurrency` of the worker process.
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// Pause before each job, so that the worker is idle (waiting) again.
        #[arg(long, default_value_t = 50)]
        idle_ms: u64,
        /// Queue each job to run this much later and measure how late it
        /// starts after its due time (0: run at once, measure the pick-up).
        #[arg(long, default_value_t = 0)]
        delay_ms: u64,
    },
}

/// Runs the chosen `jobs` subcommand.
pub async fn run(settings: Settings, args: Args) -> anyhow::Result<()> {
    let (state, _) = build_state(settings).await?;
    let queue = state.jobs.backend();
    match args.command {
        JobsCommand::Dead { limit } => {
            let dead = queue.dead(limit).await?;
            if dead.is_empty() {
                println!("no dead jobs");
            }
            for j in dead {
                println!(
                    "{}\t{}\tattempts={}\t{}",
                    j.id,
                    j.name,
                    j.attempts,
                    j.last_error.unwrap_or_default()
                );
            }
        }
        JobsCommand::Replay { id } => {
            if !queue.replay(&id).await? {
                anyhow::bail!("no dead job with id {id}");
            }
            println!("job {id} queued again");
        }
        JobsCommand::Status { id } => match queue.info(&id).await? {
            Some(j) => println!("{}", serde_json::to_string_pretty(&j)?),
            None => anyhow::bail!(
                "no job with id {id} (finished jobs with a result are kept for a day, \
                 those without one are not kept)"
            ),
        },
        JobsCommand::Counts => {
            let c = queue.counts().await?;
            println!(
                "queued={}\trunning={}\tdead={}",
                c.queued, c.running, c.dead
            );
        }
        JobsCommand::Bench {
            jobs,
            processes,
            concurrency,
        } => {
            let report = bench::run(
                &state.jobs,
                BenchOptions {
                    jobs,
                    processes,
                    concurrency,
                    timeout: Duration::from_secs(600),
                },
            )
            .await?;
            println!(
                "backend={}\tprocesses={processes}\tconcurrency={concurrency}\tjobs={jobs}\t\
                 enqueue={:.2}s\ttotal={:.2}s\tjobs_per_sec={:.0}\texactly_once=yes",
                if state.settings.is_embedded() {
                    "sql"
                } else {
                    "redis"
                },
                report.enqueue.as_secs_f64(),
                report.total.as_secs_f64(),
                report.jobs_per_sec()
            );
        }
        JobsCommand::Latency {
            jobs,
            concurrency,
            idle_ms,
            delay_ms,
        } => {
            let report = bench::latency(
                &state.jobs,
                jobs,
                concurrency,
                Duration::from_millis(idle_ms),
                Duration::from_millis(delay_ms),
            )
            .await?;
            let ms = |d: Duration| d.as_secs_f64() * 1000.0;
            println!(
                "backend={}\tconcurrency={concurrency}\tjobs={jobs}\tdelay_ms={delay_ms}\tp50_ms={:.2}\tp99_ms={:.2}\tmax_ms={:.2}",
                if state.settings.is_embedded() {
                    "sql"
                } else {
                    "redis"
                },
                ms(report.quantile(0.50)),
                ms(report.quantile(0.99)),
                ms(report.quantile(1.0)),
            );
        }
    }
    Ok(())
}
