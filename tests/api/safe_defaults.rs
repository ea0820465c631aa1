//! Production refuses development defaults, as the real binary runs: no
//! silent `log` e-mail outside the embedded default, no one-time code in
//! the log, a made-up logout cookie does no shared work, `/health` checks
//! its dependencies at most once a second, `/metrics` on its own listener.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::json;

use crate::chaos_support::free_port;
use crate::helpers::{PG_ADMIN_URL, RedisServer, parse_commandstats, wait_until};

/// A `stayafrica serve` process (its worker in-process) on a fresh SQLite
/// file unless `env` names another database. Killed when dropped.
struct Served {
    child: Child,
    port: u16,
    log: std::path::PathBuf,
    dir: tempfile::TempDir,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Served {
    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn command(dir: &std::path::Path, env: &[(&str, String)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_stayafrica"));
    cmd.arg("serve")
        .env_clear()
        .env("DATABASE_URL", format!("sqlite://{}/app.db", dir.display()))
        .env(
            "STAYAFRICA_KEY_PREFIX",
            format!("safe:{}:", uuid::Uuid::new_v4().simple()),
        )
        .env("RUST_LOG", "info")
        .current_dir(dir)
        .stdout(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

async fn serve(env: &[(&str, String)]) -> anyhow::Result<Served> {
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    let log = dir.path().join("stderr.log");
    let child = command(dir.path(), env)
        .env("STAYAFRICA_BIND", format!("127.0.0.1:{port}"))
        .stderr(std::fs::File::create(&log)?)
        .spawn()?;
    let served = Served {
        child,
        port,
        log,
        dir,
    };
    let client = reqwest::Client::new();
    for _ in 0..300 {
        if client.get(served.url("/health")).send().await.is_ok() {
            return Ok(served);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("serve did not start: {}", served.log())
}

#[tokio::test]
async fn production_without_an_email_backend_does_not_start() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let out = command(
        dir.path(),
        &[("DATABASE_URL", PG_ADMIN_URL.replace("/postgres", "/test"))],
    )
    .env("STAYAFRICA_BIND", "127.0.0.1:0")
    .stderr(Stdio::piped())
    .output()?;
    assert!(
        !out.status.success(),
        "serve started without STAYAFRICA_EMAIL"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("STAYAFRICA_EMAIL"),
        "the message names the variable: {err}"
    );
    Ok(())
}

fn code_like(line: &str) -> bool {
    line.split(|c: char| !c.is_ascii_digit())
        .any(|w| w.len() == 6)
}

#[tokio::test]
async fn the_log_backend_withholds_one_time_codes() -> anyhow::Result<()> {
    let s = serve(&[("STAYAFRICA_EMAIL", "log".into())]).await?;
    let c = reqwest::Client::new();
    let r = c
        .post(s.url("/api/v1/auth/register"))
        .json(&json!({"email": "logged@example.com", "password": "password123", "full_name": "L", "role": "guest"}))
        .send()
        .await?;
    assert_eq!(r.status(), 201);
    let r = c
        .post(s.url("/api/v1/auth/otp"))
        .json(&json!({"email": "logged@example.com"}))
        .send()
        .await?;
    assert_eq!(r.status(), 202);
    wait_until(
        Duration::from_secs(20),
        "the code's mail in the log",
        || async { Ok(s.log().contains("sign-in code")) },
    )
    .await?;
    let log = s.log();
    let line = log
        .lines()
        .find(|l| l.contains("sign-in code"))
        .unwrap_or_default();
    assert!(line.contains("[withheld]"), "{line}");
    // The timestamp and the job id may hold six digits: the body counts.
    let (_, body) = line.split_once("body=").unwrap_or(("", line));
    assert!(!code_like(body), "a code in the log: {line}");
    Ok(())
}

#[tokio::test]
async fn a_made_up_logout_cookie_does_no_shared_work() -> anyhow::Result<()> {
    let s = serve(&[("STAYAFRICA_EMAIL", "log".into())]).await?;
    let ended = s.dir.path().join("app.db-sessions-ended");
    let size = || std::fs::metadata(&ended).map(|m| m.len()).unwrap_or(0);
    let c = reqwest::Client::new();
    let before = size();
    for i in 0..20 {
        let cookie = format!(
            "sessionid={}",
            format!("{i:02}").repeat(22)[..43].to_owned()
        );
        let r = c
            .post(s.url("/api/v1/auth/logout"))
            .header("cookie", cookie)
            .send()
            .await?;
        assert_eq!(r.status(), 204);
    }
    assert_eq!(
        size(),
        before,
        "the change file grew for sessions that never were"
    );
    // A real session's logout still marks the change.
    let r = c
        .post(s.url("/api/v1/auth/register"))
        .json(&json!({"email": "real@example.com", "password": "password123", "full_name": "R", "role": "guest"}))
        .send()
        .await?;
    assert_eq!(r.status(), 201);
    let r = c
        .post(s.url("/api/v1/auth/login"))
        .json(&json!({"email": "real@example.com", "password": "password123"}))
        .send()
        .await?;
    let cookie = r
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .unwrap_or_default()
        .to_owned();
    let r = c
        .post(s.url("/api/v1/auth/logout"))
        .header("cookie", cookie)
        .send()
        .await?;
    assert_eq!(r.status(), 204);
    assert!(size() > before, "a real logout is marked");
    Ok(())
}

#[tokio::test]
async fn health_checks_redis_at_most_once_a_second_and_metrics_listen_apart() -> anyhow::Result<()>
{
    let redis = RedisServer::start().await?;
    let metrics_port = free_port()?;
    let s = serve(&[
        ("STAYAFRICA_EMAIL", "log".into()),
        ("REDIS_URL", redis.url()),
        (
            "STAYAFRICA_METRICS_BIND",
            format!("127.0.0.1:{metrics_port}"),
        ),
    ])
    .await?;
    let pings = || -> anyhow::Result<u64> {
        let out = Command::new("redis-cli")
            .args(["-u", &redis.url(), "info", "commandstats"])
            .output()?;
        Ok(parse_commandstats(&String::from_utf8_lossy(&out.stdout))
            .into_iter()
            .filter(|(c, _)| c == "ping")
            .map(|(_, n)| n)
            .sum())
    };
    let c = reqwest::Client::new();
    let before = pings()?;
    let started = std::time::Instant::now();
    let answers = futures::future::join_all((0..200).map(|_| c.get(s.url("/health")).send())).await;
    for r in answers {
        assert_eq!(r?.status(), 200);
    }
    let seconds = started.elapsed().as_secs() + 1;
    let sent = pings()? - before;
    // Four roles on one Redis: at most one round of checks a second (and
    // one more for the second the burst began in).
    assert!(
        sent <= 4 * (seconds + 1),
        "{sent} PINGs for 200 health checks in {seconds} s"
    );

    let main = c.get(s.url("/metrics")).send().await?;
    assert_eq!(main.status(), 404, "not on the API's listener");
    let apart = c
        .get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .send()
        .await?;
    assert_eq!(apart.status(), 200);
    assert!(apart.text().await?.contains("http_requests_total"));
    Ok(())
}
