//! The production shape on a Redis Cluster and on a Sentinel-managed
//! master: two API instances and a worker on one PostgreSQL database, every
//! role on the same Redis setup (the `topologies` ones).

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{
    TestApp, TestDb, TestOptions, property_body, redis_settings, spawn_app_with, spawn_on,
};
use crate::topologies::{cluster_url, sentinel_url};

/// The first instance (with the job worker) on a fresh PostgreSQL database
/// and the Redis at `base`, and a second instance on the same database,
/// Redis and key prefix.
pub async fn two_instances(base: &str) -> anyhow::Result<(TestApp, TestApp)> {
    let first = spawn_app_with(TestOptions {
        db: TestDb::Postgres,
        redis: Some(base.to_owned()),
        with_worker: true,
        ..TestOptions::default()
    })
    .await?;
    let prefix = first.state.settings.key_prefix.clone();
    let settings = redis_settings(base);
    let second = spawn_on(
        &first.db_url,
        false,
        Box::new(move |s| {
            s.redis = Some(settings);
            s.key_prefix = prefix;
        }),
    )
    .await?;
    Ok((first, second))
}

async fn json_of(r: reqwest::Response) -> anyhow::Result<Value> {
    anyhow::ensure!(r.status().is_success(), "status {}", r.status());
    Ok(r.json().await?)
}

/// The 6-digit code in an email.
fn code_in(mail: &str) -> Option<String> {
    mail.split_whitespace()
        .map(|w| w.trim_matches(|c: char| !c.is_ascii_digit()))
        .find(|w| w.len() == 6 && w.chars().all(|c| c.is_ascii_digit()))
        .map(str::to_owned)
}

async fn two_instances_and_a_worker_on(base: &str) -> anyhow::Result<()> {
    let (first, second) = two_instances(base).await?;
    // One client for both instances: cookies are per host, not per port,
    // so a session made on one is presented to the other.
    let host = first.new_client();
    first
        .signup_with(&host, "two.host@example.com", "host")
        .await?;
    let me = host.get(second.url("/api/v1/me")).send().await?;
    assert_eq!(
        me.status(),
        200,
        "the session is valid on the other instance"
    );

    let p = first
        .create_property_with(&host, property_body("Kigali", "70.00", false))
        .await?;
    let id = p["id"].as_i64().unwrap_or_default();
    let path = format!("/api/v1/properties/{id}");
    // Read (and cached) on the second instance, changed on the first: the
    // next read on the second shows the change.
    let before = json_of(second.get(&path).await?).await?;
    assert_eq!(before["title"], p["title"]);
    let list = json_of(second.get("/api/v1/properties?city=Kigali").await?).await?;
    assert_eq!(list["count"], 1);
    for round in 0..3 {
        let title = format!("Renamed {round}");
        let r = host
            .patch(first.url(&path))
            .json(&json!({ "title": title }))
            .send()
            .await?;
        assert_eq!(r.status(), 200);
        let after = json_of(second.get(&path).await?).await?;
        assert_eq!(after["title"], title.as_str(), "round {round}");
        let list = json_of(second.get("/api/v1/properties?city=Kigali").await?).await?;
        assert_eq!(list["results"][0]["title"], title.as_str(), "round {round}");
    }

    // A one-time code asked of the second instance is mailed by the worker
    // (running in the first) and logs in on the second; the session works
    // on the first.
    let guest = second.new_client();
    second
        .signup_with(&guest, "two.guest@example.com", "guest")
        .await?;
    let r = guest
        .post(second.url("/api/v1/auth/otp"))
        .json(&json!({"email": "two.guest@example.com"}))
        .send()
        .await?;
    assert_eq!(r.status(), 202);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let code = loop {
        if let Some(code) = first.emails().iter().rev().find_map(|m| {
            m.contains("two.guest@example.com")
                .then(|| code_in(m))
                .flatten()
        }) {
            break code;
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "no code mailed by the worker"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let fresh = second.new_client();
    let r = fresh
        .post(second.url("/api/v1/auth/otp/verify"))
        .json(&json!({"email": "two.guest@example.com", "otp": code}))
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    let me = json_of(fresh.get(first.url("/api/v1/me")).send().await?).await?;
    assert_eq!(me["email"], "two.guest@example.com");
    second.stop().await?;
    first.stop().await
}

mod two_instances_and_a_worker_on_postgres {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cluster() -> anyhow::Result<()> {
        super::two_instances_and_a_worker_on(&super::cluster_url().await?).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sentinel() -> anyhow::Result<()> {
        super::two_instances_and_a_worker_on(&super::sentinel_url().await?).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tls() -> anyhow::Result<()> {
        super::two_instances_and_a_worker_on(&crate::tls::tls_url().await?).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tls_cluster() -> anyhow::Result<()> {
        super::two_instances_and_a_worker_on(&crate::tls::tls_cluster_url().await?).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tls_sentinel() -> anyhow::Result<()> {
        super::two_instances_and_a_worker_on(&crate::tls::tls_sentinel_url().await?).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filled_cache_spreads_over_every_master() -> anyhow::Result<()> {
    let cluster = crate::topologies::shared_cluster().await?;
    let (first, second) = two_instances(&cluster.url()).await?;
    let prefix = first.state.settings.key_prefix.clone();
    let host = first.new_client();
    first
        .signup_with(&host, "filler@example.com", "host")
        .await?;
    let cities = ["Accra", "Lagos", "Nairobi", "Kigali", "Dakar", "Lusaka"];
    let mut ids = Vec::new();
    for i in 0..30 {
        let p = first
            .create_property_with(
                &host,
                property_body(
                    cities[i % cities.len()],
                    &format!("{}.00", 50 + i),
                    // A host has at most 5 featured properties.
                    i % 6 == 0,
                ),
            )
            .await?;
        ids.push(p["id"].as_i64().unwrap_or_default());
    }
    for (i, id) in ids.iter().enumerate() {
        let app = if i % 2 == 0 { &first } else { &second };
        json_of(app.get(&format!("/api/v1/properties/{id}")).await?).await?;
    }
    for city in cities {
        for page in 1..=3 {
            json_of(
                second
                    .get(&format!(
                        "/api/v1/properties?city={city}&page={page}&page_size=2"
                    ))
                    .await?,
            )
            .await?;
        }
    }
    // The cached responses (the generation counters share one slot by
    // design, `{g}`, and are not entries). The keys differ only in a few
    // trailing characters, and CRC16 over such keys does not spread like
    // independent draws: about 1 prefix in 100 puts over half of these 48
    // entries on one master (CI met 27/10/11). In 20,000 simulated
    // prefixes each family reached every master and no master held under
    // an eighth or over two thirds; a tag pinning a family to one slot
    // (the fault this test is about) leaves two masters without it.
    for family in ["detail", "list"] {
        let counts =
            crate::topology_ops::per_master(cluster, &format!("{prefix}cache:property:{family}:*"))
                .await?;
        println!("cached {family} responses per master: {counts:?}");
        assert_eq!(counts.len(), 3, "{counts:?}");
        for (port, n) in &counts {
            assert!(*n > 0, "master {port} holds no {family} entry: {counts:?}");
        }
    }
    let counts =
        crate::topology_ops::per_master(cluster, &format!("{prefix}cache:property:*")).await?;
    let total: usize = counts.values().sum();
    println!("cached responses per master: {counts:?}");
    assert!(total >= 40, "{counts:?}");
    for (port, n) in &counts {
        assert!(
            *n * 8 >= total,
            "master {port} holds under an eighth: {counts:?}"
        );
        assert!(
            *n * 3 <= total * 2,
            "master {port} holds over two thirds: {counts:?}"
        );
    }
    second.stop().await?;
    first.stop().await
}
