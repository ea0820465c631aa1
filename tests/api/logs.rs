//! The real binary's logs as an operator ships them: plain text without
//! colour codes when stderr is a file, and with `STAYAFRICA_LOG_FORMAT=json`
//! one JSON object per line carrying the request id, route, status and
//! latency of the request it belongs to.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

/// A `stayafrica serve` process on a free port, on a fresh SQLite file,
/// with stderr going to a file. Killed when dropped.
struct Served {
    child: Child,
    port: u16,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn serve(log_format: Option<&str>) -> anyhow::Result<Served> {
    let dir = tempfile::tempdir()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let log = dir.path().join("stderr.log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_stayafrica"));
    cmd.arg("serve")
        .arg("--bind")
        .arg(format!("127.0.0.1:{port}"))
        .env_clear()
        .env(
            "DATABASE_URL",
            format!("sqlite://{}/logs.db", dir.path().display()),
        )
        .env(
            "STAYAFRICA_EMAIL",
            format!("file:{}", dir.path().join("mail").display()),
        )
        .env("RUST_LOG", "info")
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?);
    if let Some(f) = log_format {
        cmd.env("STAYAFRICA_LOG_FORMAT", f);
    }
    let served = Served {
        child: cmd.spawn()?,
        port,
        log,
        _dir: dir,
    };
    let client = reqwest::Client::new();
    for _ in 0..200 {
        if client
            .get(format!("http://127.0.0.1:{port}/health"))
            .send()
            .await
            .is_ok()
        {
            return Ok(served);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("stayafrica serve did not answer on port {port}")
}

/// Sends requests with known ids; returns the log once they are written.
async fn traffic(s: &Served, ids: &[&str]) -> anyhow::Result<String> {
    let client = reqwest::Client::new();
    for id in ids {
        let r = client
            .get(format!(
                "http://127.0.0.1:{}/api/v1/properties?city=Accra",
                s.port
            ))
            .header("x-request-id", *id)
            .send()
            .await?;
        assert_eq!(r.status(), 200);
    }
    let r = client
        .get(format!("http://127.0.0.1:{}/api/v1/properties/999", s.port))
        .header("x-request-id", "logs-not-found")
        .send()
        .await?;
    assert_eq!(r.status(), 404);
    // Lines are written as events happen; wait until the last one is there.
    for _ in 0..100 {
        let text = std::fs::read_to_string(&s.log)?;
        if text.contains("logs-not-found") {
            return Ok(text);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!(
        "request lines missing from the log: {}",
        std::fs::read_to_string(&s.log)?
    )
}

#[tokio::test]
async fn text_logs_to_a_file_have_no_colour_codes() -> anyhow::Result<()> {
    let s = serve(None).await?;
    let text = traffic(&s, &["logs-text-1"]).await?;
    assert!(!text.contains('\u{1b}'), "escape sequences in: {text}");
    let line = text
        .lines()
        .find(|l| l.contains("logs-text-1") && l.contains("answered"))
        .ok_or_else(|| anyhow::anyhow!("no line of the request in: {text}"))?;
    for part in ["route=/api/v1/properties", "status=200", "latency_ms="] {
        assert!(line.contains(part), "{part} not in {line}");
    }
    Ok(())
}

#[tokio::test]
async fn json_logs_are_one_object_per_line_with_the_request() -> anyhow::Result<()> {
    let s = serve(Some("json")).await?;
    let text = traffic(&s, &["logs-json-1", "logs-json-2"]).await?;
    assert!(!text.contains('\u{1b}'), "escape sequences in: {text}");
    let lines: Vec<Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).map_err(|e| anyhow::anyhow!("{e}: {l}")))
        .collect::<anyhow::Result<_>>()?;
    assert!(lines.len() >= 4, "{text}");
    for id in ["logs-json-1", "logs-json-2"] {
        let answered = lines
            .iter()
            .find(|l| l["span"]["request_id"] == id && l["message"] == "answered")
            .ok_or_else(|| anyhow::anyhow!("no `answered` line of {id} in: {text}"))?;
        assert_eq!(answered["span"]["route"], "/api/v1/properties");
        assert_eq!(answered["status"], 200);
        assert!(answered["latency_ms"].as_f64().is_some(), "{answered}");
        assert!(answered["timestamp"].is_string(), "{answered}");
        assert_eq!(answered["level"], "INFO");
    }
    let not_found = lines
        .iter()
        .find(|l| l["span"]["request_id"] == "logs-not-found" && l["message"] == "answered")
        .ok_or_else(|| anyhow::anyhow!("no line of the 404 in: {text}"))?;
    assert_eq!(not_found["status"], 404);
    assert_eq!(not_found["span"]["route"], "/api/v1/properties/{id}");
    Ok(())
}
