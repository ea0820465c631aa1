//! The physical limit of a cached GET on this machine, for
//! `scripts/bench-hot.sh`: a bare axum server that sends, from memory, the
//! very bytes the service answers. At startup it fetches each given path
//! once from the running service (with the given cookie, so the signed-in
//! dashboard is the same body) and then serves that body under the same
//! path with the service's `Content-Type`, doing nothing else per request.
//!
//!     cargo run --release --example bare -- --from http://127.0.0.1:8091 \
//!       --bind 127.0.0.1:8191 --cookie 'sessionid=…' \
//!       /api/v1/properties/featured '/api/v1/properties?city=Nairobi&page=2'
//!
//! Paths with a query are matched on path and query, so two scenarios on
//! one route get their own bodies.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::Context;
use axum::body::Bytes;
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::IntoResponse;
use clap::Parser;

#[derive(Parser)]
struct Cli {
    /// Base URL of the running service whose answers are copied.
    #[arg(long)]
    from: String,
    /// Where the bare server listens.
    #[arg(long, default_value = "127.0.0.1:8191")]
    bind: String,
    /// `Cookie` header sent when fetching (the dashboard needs a session).
    #[arg(long)]
    cookie: Option<String>,
    /// Paths (with query) to copy and serve.
    #[arg(required = true)]
    paths: Vec<String>,
}

/// One copied answer: what the service sent, ready to send again.
#[derive(Clone)]
struct Body {
    content_type: HeaderValue,
    bytes: Bytes,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let client = reqwest::Client::new();
    let mut bodies = HashMap::new();
    for path in &cli.paths {
        let mut req = client.get(format!("{}{path}", cli.from));
        if let Some(c) = &cli.cookie {
            req = req.header(reqwest::header::COOKIE, c);
        }
        let resp = req.send().await.with_context(|| format!("GET {path}"))?;
        anyhow::ensure!(resp.status() == 200, "GET {path}: {}", resp.status());
        let content_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| HeaderValue::from_bytes(v.as_bytes()).ok())
            .unwrap_or(HeaderValue::from_static("application/json"));
        let bytes = resp.bytes().await?;
        eprintln!("bare: {path}: {} bytes", bytes.len());
        bodies.insert(
            path.clone(),
            Body {
                content_type,
                bytes,
            },
        );
    }
    let bodies = Arc::new(bodies);
    let app = axum::Router::new().fallback(move |uri: Uri| {
        let bodies = bodies.clone();
        async move {
            let key = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
            match bodies.get(key) {
                Some(b) => {
                    let mut r = b.bytes.clone().into_response();
                    r.headers_mut()
                        .insert(header::CONTENT_TYPE, b.content_type.clone());
                    r
                }
                None => StatusCode::NOT_FOUND.into_response(),
            }
        }
    });
    let listener = tokio::net::TcpListener::bind(&cli.bind).await?;
    eprintln!("bare: serving {} bodies on {}", cli.paths.len(), cli.bind);
    axum::serve(listener, app).await?;
    Ok(())
}
