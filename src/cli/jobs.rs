//! `stayafrica jobs`: list dead jobs, replay one, show one's status, count
//! the queue, and benchmark it with real worker processes.

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
            None => anyhow::bail!("no job with id {id} (finished jobs are kept for a day)"),
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
    }
    Ok(())
}
