//! `stayafrica sessions revoke --user EMAIL`: ends all of a user's sessions.

use clap::Subcommand;

use crate::config::Settings;
use crate::domain::Email;
use crate::startup::build_state;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: SessionsCommand,
}

#[derive(Debug, Subcommand)]
enum SessionsCommand {
    /// End every session of one user (log them out everywhere).
    Revoke {
        /// The user's email address.
        #[arg(long, value_name = "EMAIL")]
        user: String,
    },
}

pub async fn run(settings: Settings, args: Args) -> anyhow::Result<()> {
    let (state, _) = build_state(settings).await?;
    match args.command {
        SessionsCommand::Revoke { user } => {
            let email = Email::parse(&user).map_err(|m| anyhow::anyhow!("--user: {m}"))?;
            let row = state
                .db
                .user_by_email(&email)
                .await?
                .ok_or_else(|| anyhow::anyhow!("no user with email {email}"))?;
            let n = state.sessions.delete_user(row.id).await?;
            println!("ended {n} session(s) of user {}", row.id);
        }
    }
    Ok(())
}
