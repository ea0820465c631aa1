//! The `stayafrica` binary: parse the command line, run the subcommand.

use clap::Parser;

/// mimalloc instead of glibc's allocator: the request path allocates small,
/// short-lived buffers on every call, and glibc's malloc/free took about a
/// sixth of the service's CPU time on the cached GETs (perf, see
/// docs/PERFORMANCE.md, "Hot path").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
