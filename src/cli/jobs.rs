//! `stayafrica jobs`: list dead jobs, replay one, show one's status.

use clap::Subcommand;

use crate::config::Settings;
use crate::startup::build_state;

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
}

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
    }
    Ok(())
}
