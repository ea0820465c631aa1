//! Invalidation that spares what did not change (issue 26), on two
//! instances sharing Redis and PostgreSQL: after a PATCH of one property,
//! every entry that could show it misses on both instances, and the
//! entries of other properties stay hits. A hit is told from a miss by
//! the data itself: the titles are changed in the database behind the
//! cache's back, so an entry served from the cache still shows the old
//! title and a recomputed one the new.

use serde_json::{Value, json};

use crate::helpers::{SHARED_REDIS, TestApp, property_body};
use crate::near_cache::two_instances;

async fn get(app: &TestApp, path: &str) -> anyhow::Result<Value> {
    let r = app.client.get(app.url(path)).send().await?;
    anyhow::ensure!(r.status() == 200, "GET {path}: {}", r.status());
    Ok(r.json().await?)
}

fn titles(v: &Value) -> Vec<String> {
    let list = v["results"].as_array().or_else(|| v.as_array());
    list.map(|l| {
        l.iter()
            .filter_map(|p| p["title"].as_str().map(str::to_owned))
            .collect()
    })
    .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patch_spares_the_entries_of_other_properties() -> anyhow::Result<()> {
    let (a, b, _db) = two_instances(SHARED_REDIS, 64).await?;
    let host = a.new_client();
    a.signup_with(&host, "spare.host@example.com", "host")
        .await?;
    let mut ids = Vec::new();
    for (city, country, featured) in [
        ("Nairobi", "Kenya", false),
        ("Accra", "Ghana", true),
        ("Lagos", "Nigeria", false),
    ] {
        let mut body = property_body(city, "50.00", featured);
        body["country"] = json!(country);
        let p = a.create_property_with(&host, body).await?;
        ids.push(p["id"].as_i64().unwrap_or_default());
    }
    let (nairobi, accra, lagos) = (ids[0], ids[1], ids[2]);
    let pages = [
        format!("/api/v1/properties/{nairobi}"),
        format!("/api/v1/properties/{accra}"),
        format!("/api/v1/properties/{lagos}"),
        "/api/v1/properties?city=Nairobi".to_owned(),
        "/api/v1/properties?city=Accra".to_owned(),
        "/api/v1/properties?country=Kenya".to_owned(),
        "/api/v1/properties?country=Ghana".to_owned(),
        "/api/v1/properties".to_owned(),
        "/api/v1/properties/featured".to_owned(),
    ];
    for app in [&a, &b] {
        for p in &pages {
            get(app, p).await?;
        }
    }
    // Behind the cache's back: every title changes in the database.
    let pool = sqlx::PgPool::connect(&a.db_url).await?;
    sqlx::query("UPDATE properties SET title = 'Renamed ' || id")
        .execute(&pool)
        .await?;

    // A PATCH of the Nairobi property (not featured) on instance a.
    let r = host
        .patch(a.url(&format!("/api/v1/properties/{nairobi}")))
        .json(&json!({"price_per_night": "65.00"}))
        .send()
        .await?;
    assert_eq!(r.status(), 200);

    for (name, app) in [("a", &a), ("b", &b)] {
        // Recomputed: whatever could show the Nairobi property.
        let v = get(app, &format!("/api/v1/properties/{nairobi}")).await?;
        assert_eq!(v["price_per_night"], "65.00", "{name}: its detail");
        for list in [
            "/api/v1/properties?city=Nairobi",
            "/api/v1/properties?country=Kenya",
            "/api/v1/properties",
        ] {
            let v = get(app, list).await?;
            assert!(
                titles(&v).contains(&format!("Renamed {nairobi}")),
                "{name}: {list} recomputed: {v}"
            );
        }
        // Spared: the other properties' entries are still the cached ones.
        for id in [accra, lagos] {
            let v = get(app, &format!("/api/v1/properties/{id}")).await?;
            assert!(
                !v["title"]
                    .as_str()
                    .unwrap_or_default()
                    .starts_with("Renamed"),
                "{name}: detail of {id} is still a hit: {v}"
            );
        }
        for list in [
            "/api/v1/properties?city=Accra",
            "/api/v1/properties?country=Ghana",
            "/api/v1/properties/featured",
        ] {
            let v = get(app, list).await?;
            assert!(
                titles(&v).iter().all(|t| !t.starts_with("Renamed")),
                "{name}: {list} is still a hit: {v}"
            );
        }
    }

    // A featured property's change reaches the featured list.
    let r = host
        .patch(b.url(&format!("/api/v1/properties/{accra}")))
        .json(&json!({"max_guests": 3}))
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    for app in [&a, &b] {
        let v = get(app, "/api/v1/properties/featured").await?;
        assert!(titles(&v).contains(&format!("Renamed {accra}")), "{v}");
        let v = get(app, &format!("/api/v1/properties/{lagos}")).await?;
        assert!(
            !v["title"]
                .as_str()
                .unwrap_or_default()
                .starts_with("Renamed")
        );
    }
    Ok(())
}
