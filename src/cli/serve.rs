//! `stayafrica serve`: the HTTP API.

use std::net::SocketAddr;

use crate::config::Settings;
use crate::startup::{Application, ServeOptions, shutdown_signal};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to listen on (default 127.0.0.1:8000, or STAYAFRICA_BIND).
    #[arg(long, value_name = "ADDR")]
    bind: Option<SocketAddr>,
    /// Run job workers inside the API process. This is the default on the
    /// embedded backends; with Redis, API and workers scale separately and
    /// `serve` runs none unless given this flag.
    #[arg(long, conflicts_with = "no_worker")]
    with_worker: bool,
    /// Run no job workers here, even on the embedded backends.
    #[arg(long)]
    no_worker: bool,
    /// Concurrent jobs of the in-process workers.
    #[arg(long, default_value_t = 2, value_name = "N")]
    concurrency: usize,
}

pub async fn run(mut settings: Settings, args: Args) -> anyhow::Result<()> {
    if let Some(bind) = args.bind {
        settings.bind = bind;
    }
    let with_worker = !args.no_worker && (args.with_worker || settings.is_embedded());
    let app = Application::build(
        settings,
        ServeOptions {
            with_worker,
            worker_concurrency: args.concurrency,
        },
    )
    .await?;
    app.run_until_stopped(shutdown_signal()).await
}
