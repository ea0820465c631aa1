//! The console in a real browser: Debian's headless Chromium driven through
//! WebDriver (chromedriver), on the embedded default and on PostgreSQL +
//! Redis. `.ci/run` installs `chromium` and `chromium-driver` when they are
//! missing; without them this test fails, it does not skip. Screenshots go
//! to `target/console-screenshots/` (their paths are printed).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{ClientBuilder, Locator};
use serde_json::{Value, json};

use crate::chaos_support::free_port;
use crate::helpers::{TestDb, TestOptions, spawn_app_with, wait_until};

/// A chromedriver of the test's own. Killed when dropped.
struct Driver {
    child: Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn driver() -> anyhow::Result<Driver> {
    let port = free_port()?;
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| {
            anyhow::anyhow!(
                "chromedriver not found ({e}): install Debian's chromium and chromium-driver \
                 (.ci/run does)"
            )
        })?;
    let d = Driver { child, port };
    let c = reqwest::Client::new();
    wait_until(Duration::from_secs(20), "chromedriver answers", || async {
        Ok(c.get(format!("http://127.0.0.1:{port}/status"))
            .send()
            .await
            .is_ok())
    })
    .await?;
    Ok(d)
}

async fn browser(d: &Driver, profile: &std::path::Path) -> anyhow::Result<fantoccini::Client> {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": "/usr/bin/chromium",
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                     "--no-first-run", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync",
                     "--window-size=1200,900",
                     format!("--user-data-dir={}", profile.display())],
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    Ok(ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", d.port))
        .await?)
}

fn screenshot_path(name: &str) -> anyhow::Result<std::path::PathBuf> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join("console-screenshots");
    std::fs::create_dir_all(&dir)?;
    Ok(dir.join(name))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_moves_and_invalidates_from_the_browser() -> anyhow::Result<()> {
    let d = driver().await?;
    for db in [TestDb::Sqlite, TestDb::PostgresRedis] {
        let port = free_port()?;
        let app = spawn_app_with(TestOptions {
            db,
            with_worker: true,
            tweak: Box::new(move |s| {
                s.admin_bind = Some(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
            }),
            ..TestOptions::default()
        })
        .await?;
        let base = format!("http://127.0.0.1:{port}");
        let profile = tempfile::tempdir()?;
        let b = browser(&d, profile.path()).await?;
        let result = async {
            b.goto(&format!("{base}/")).await?;
            let shown = || async {
                let text = b.find(Locator::Id("requests")).await?.text().await?;
                anyhow::Ok(text.trim().parse::<u64>().unwrap_or(0))
            };
            let first = shown().await?;
            let list = "/api/v1/properties?city=Dakar";
            for _ in 0..5 {
                assert_eq!(app.get(list).await?.status(), 200);
            }
            // The page polls the overview: the number changes on the page.
            wait_until(
                Duration::from_secs(10),
                "the page's request count moves",
                || async { Ok(shown().await? > first) },
            )
            .await?;
            let path = screenshot_path(&format!("overview-{db:?}.png"))?;
            std::fs::write(&path, b.screenshot().await?)?;
            eprintln!("console screenshot: {}", path.display());

            // Invalidate the list family from the browser, confirming.
            let misses = || async {
                let v: Value = reqwest::get(format!("{base}/admin/api/overview"))
                    .await?
                    .json()
                    .await?;
                anyhow::Ok(v["cache"]["property_list"]["miss"].as_u64().unwrap_or(0))
            };
            let before = misses().await?;
            b.find(Locator::Css(
                "button.invalidate[data-family='property_list']",
            ))
            .await?
            .click()
            .await?;
            b.accept_alert().await?; // the confirmation
            wait_until(Duration::from_secs(5), "the result's alert", || async {
                Ok(b.get_alert_text().await.is_ok())
            })
            .await?;
            let said = b.get_alert_text().await?;
            assert!(said.contains("invalidated"), "{said}");
            b.accept_alert().await?;
            assert_eq!(app.get(list).await?.status(), 200);
            assert_eq!(misses().await?, before + 1, "the next GET is a miss");
            let audit: Value = reqwest::get(format!("{base}/admin/api/audit"))
                .await?
                .json()
                .await?;
            assert_eq!(audit["entries"][0]["action"], "cache.invalidate", "{audit}");
            assert_eq!(audit["entries"][0]["result"], "ok", "{audit}");
            anyhow::Ok(())
        }
        .await;
        let _ = b.close().await;
        result?;
        app.stop().await?;
    }
    Ok(())
}
