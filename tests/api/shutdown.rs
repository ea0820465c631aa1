//! The real binary on SIGTERM: stops accepting, finishes, exits cleanly,
//! and loses nothing (views counted in memory are written out).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::json;

use crate::helpers::property_body;

/// Kills the server if the test fails before it exits by itself.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_flushes_views() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let db_url = format!("sqlite://{}/sa.db", dir.path().display());
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut server = Server(
        Command::new(env!("CARGO_BIN_EXE_stayafrica"))
            .args(["serve", "--bind", &format!("127.0.0.1:{port}")])
            .env("DATABASE_URL", &db_url)
            .env(
                "STAYAFRICA_EMAIL",
                format!("file:{}/mail", dir.path().display()),
            )
            .env("STAYAFRICA_VIEW_FLUSH_SECS", "3600")
            .env_remove("REDIS_URL")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::builder().cookie_store(true).build()?;
    let mut up = false;
    for _ in 0..100 {
        if client.get(format!("{base}/health")).send().await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::ensure!(up, "server did not come up");
    let r = client
        .post(format!("{base}/api/v1/auth/register"))
        .json(&json!({"email": "h@example.com", "password": "password123", "full_name": "H", "role": "host"}))
        .send()
        .await?;
    assert_eq!(r.status(), 201);
    let r = client
        .post(format!("{base}/api/v1/auth/login"))
        .json(&json!({"email": "h@example.com", "password": "password123"}))
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    let p: serde_json::Value = client
        .post(format!("{base}/api/v1/properties"))
        .json(&property_body("Lusaka", "30.00", false))
        .send()
        .await?
        .json()
        .await?;
    let id = p["id"].as_i64().unwrap_or_default();
    for _ in 0..5 {
        assert_eq!(
            client
                .get(format!("{base}/api/v1/properties/{id}"))
                .send()
                .await?
                .status(),
            200
        );
    }

    let status = Command::new("kill")
        .args(["-TERM", &server.0.id().to_string()])
        .status()?;
    assert!(status.success());
    let mut exit = None;
    for _ in 0..200 {
        if let Some(s) = server.0.try_wait()? {
            exit = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let exit = exit.ok_or_else(|| anyhow::anyhow!("server did not exit after SIGTERM"))?;
    assert!(exit.success(), "exit status {exit}");
    assert!(
        client.get(format!("{base}/health")).send().await.is_err(),
        "still accepting"
    );

    let db = stayafrica::db::Db::connect(&db_url).await?;
    let stored = db.property(id).await?.map(|p| p.view_count);
    assert_eq!(stored, Some(5), "views counted before SIGTERM were lost");
    Ok(())
}
