//! The `stayafrica` binary: parse the command line, run the subcommand.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    stayafrica::telemetry::init_logging();
    let cli = stayafrica::cli::Cli::parse();
    match cli.run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
