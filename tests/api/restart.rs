//! Nothing is lost on a graceful restart of the embedded default: queued
//! jobs (in the database), sessions (in the database) and counted views
//! (flushed at shutdown).

use serde_json::{Value, json};

use crate::helpers::{TestDb, fresh_database, property_body, spawn_on};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_sessions_and_views_survive_a_restart() -> anyhow::Result<()> {
    let (db_url, _guard) = fresh_database(TestDb::Sqlite).await?;
    let app = spawn_on(&db_url, false, Box::new(|_| {})).await?;
    app.signup("host@example.com", "host").await?;
    let p = app
        .create_property_with(&app.client, property_body("Dakar", "45.00", false))
        .await?;
    let path = format!("/api/v1/properties/{}", p["id"]);
    for _ in 0..7 {
        assert_eq!(app.get(&path).await?.status(), 200);
    }
    // Queued, not yet run (no worker in this app).
    assert_eq!(
        app.post("/api/v1/auth/otp", &json!({"email": "host@example.com"}))
            .await?
            .status(),
        202
    );
    let client = app.client.clone();
    app.stop().await?;

    let app = spawn_on(&db_url, false, Box::new(|_| {})).await?;
    // The old cookie still works: sessions live in the database.
    assert_eq!(
        client.get(app.url("/api/v1/me")).send().await?.status(),
        200
    );
    // The views counted before the restart were written out at shutdown.
    let v: Value = app.get(&path).await?.json().await?;
    assert_eq!(v["view_count"], 8);
    // The queued job runs after the restart.
    assert_eq!(app.drain_jobs().await?, 1);
    assert_eq!(app.emails().len(), 1);
    Ok(())
}
