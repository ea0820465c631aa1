//! The operator console's first part over HTTP: closed by default (loopback
//! only, or a token sign-in), the overview's figures moving with traffic,
//! a family invalidated from the console making the next GET a miss, and
//! every action — refused ones too — in the audit log.

use serde_json::{Value, json};
use stayafrica::config::Settings;

use crate::chaos_support::free_port;
use crate::helpers::{TestApp, TestDb, TestOptions, spawn_app_with, wait_until};
use crate::on_each_setup;

on_each_setup!(overview_moves_and_an_invalidation_makes_the_next_get_a_miss);

const TOKEN: &str = "a-console-token-of-some-length";

async fn console_app(
    db: TestDb,
    tweak: impl FnOnce(&mut Settings) + Send + 'static,
) -> anyhow::Result<(TestApp, String)> {
    let port = free_port()?;
    let app = spawn_app_with(TestOptions {
        db,
        tweak: Box::new(move |s| {
            s.admin_bind = Some(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
            tweak(s);
        }),
        ..TestOptions::default()
    })
    .await?;
    let base = format!("http://127.0.0.1:{port}");
    let c = reqwest::Client::new();
    wait_until(
        std::time::Duration::from_secs(10),
        "the console listens",
        || async { Ok(c.get(format!("{base}/login")).send().await.is_ok()) },
    )
    .await?;
    Ok((app, base))
}

fn count(overview: &Value, family: &str, outcome: &str) -> u64 {
    overview["cache"][family][outcome].as_u64().unwrap_or(0)
}

async fn overview_moves_and_an_invalidation_makes_the_next_get_a_miss(
    db: TestDb,
) -> anyhow::Result<()> {
    let (app, base) = console_app(db, |_| {}).await?;
    let c = reqwest::Client::new();
    let overview = || async {
        let v: Value = c
            .get(format!("{base}/admin/api/overview"))
            .send()
            .await?
            .json()
            .await?;
        anyhow::Ok(v)
    };
    let before = overview().await?;
    assert_eq!(before["roles"]["database"]["status"], "ok", "{before}");
    assert_eq!(before["roles"]["cache"]["status"], "ok", "{before}");

    let list = "/api/v1/properties?city=Kigali";
    for _ in 0..3 {
        assert_eq!(app.get(list).await?.status(), 200);
    }
    let after = overview().await?;
    assert!(
        after["requests"]["total"].as_u64() > before["requests"]["total"].as_u64(),
        "the request count moves: {before} -> {after}"
    );
    let hits = |o: &Value| count(o, "property_list", "hit") + count(o, "property_list", "near_hit");
    assert!(hits(&after) >= hits(&before) + 2, "hits move: {after}");

    // Invalidated from the console: the next GET is a miss.
    let misses = count(&after, "property_list", "miss");
    let r = c
        .post(format!("{base}/admin/api/cache/invalidate"))
        .json(&json!({"family": "property_list"}))
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    assert_eq!(app.get(list).await?.status(), 200);
    let then = overview().await?;
    assert_eq!(count(&then, "property_list", "miss"), misses + 1, "{then}");

    // From another origin: refused, and audited as refused.
    let r = c
        .post(format!("{base}/admin/api/cache/invalidate"))
        .header("origin", "http://evil.example")
        .json(&json!({"family": "property_list"}))
        .send()
        .await?;
    assert_eq!(r.status(), 403);
    let r = c
        .post(format!("{base}/admin/api/cache/invalidate"))
        .json(&json!({"family": "no_such_family"}))
        .send()
        .await?;
    assert_eq!(r.status(), 422);
    let audit: Value = c
        .get(format!("{base}/admin/api/audit"))
        .send()
        .await?
        .json()
        .await?;
    let results: Vec<&str> = audit["entries"]
        .as_array()
        .map(|a| a.iter().filter_map(|e| e["result"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(results.len(), 3, "{audit}");
    assert!(results.contains(&"ok"), "{audit}");
    assert!(
        results.iter().any(|r| r.contains("another origin")),
        "{audit}"
    );
    assert!(
        results.iter().any(|r| r.contains("no such family")),
        "{audit}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_everyone_signs_in_first() -> anyhow::Result<()> {
    let (_app, base) = console_app(TestDb::Sqlite, |s| {
        s.admin_token = Some(TOKEN.into());
    })
    .await?;
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let r = plain
        .get(format!("{base}/admin/api/overview"))
        .send()
        .await?;
    assert_eq!(r.status(), 401, "loopback too signs in when a token is set");
    let r = plain.get(format!("{base}/")).send().await?;
    assert!(r.status().is_redirection());
    let r = plain
        .post(format!("{base}/login"))
        .form(&[("token", "wrong-token-wrong-token")])
        .send()
        .await?;
    assert_eq!(r.status(), 401);
    let signed = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let r = signed
        .post(format!("{base}/login"))
        .form(&[("token", TOKEN)])
        .send()
        .await?;
    let cookie = r
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let r = signed
        .get(format!("{base}/admin/api/overview"))
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    let page = signed.get(format!("{base}/")).send().await?;
    assert_eq!(page.status(), 200);
    assert!(page.text().await?.contains("StayAfrica console"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_refuses_actions_and_audits_them() -> anyhow::Result<()> {
    let (_app, base) = console_app(TestDb::Sqlite, |s| s.admin_read_only = true).await?;
    let c = reqwest::Client::new();
    let r = c
        .post(format!("{base}/admin/api/cache/invalidate"))
        .json(&json!({"family": "featured"}))
        .send()
        .await?;
    assert_eq!(r.status(), 403);
    let page = c.get(format!("{base}/")).send().await?.text().await?;
    assert!(page.contains("Read-only") && !page.contains("class=\"invalidate\""));
    let audit: Value = c
        .get(format!("{base}/admin/api/audit"))
        .send()
        .await?
        .json()
        .await?;
    assert!(
        audit["entries"][0]["result"]
            .as_str()
            .is_some_and(|r| r.contains("read-only")),
        "{audit}"
    );
    Ok(())
}
