//! Properties: listing, filters, pagination, featured, detail views,
//! ownership rules and invalidation of every cached view after a write.

use serde_json::{Value, json};

use crate::helpers::{TestDb, error_code, property_body, spawn_app};
use crate::on_each_setup;

on_each_setup!(
    host_crud_and_rules,
    list_filters_and_pages,
    writes_are_visible_in_the_next_read,
    views_are_counted_and_flushed
);

async fn host_crud_and_rules(db: TestDb) -> anyhow::Result<()> {
    let app = spawn_app(db).await?;
    let host = app.new_client();
    app.signup_with(&host, "host@example.com", "host").await?;
    let guest = app.new_client();
    app.signup_with(&guest, "guest@example.com", "guest")
        .await?;

    // Anonymous and guests cannot create.
    let r = app
        .post(
            "/api/v1/properties",
            &property_body("Nairobi", "85.50", false),
        )
        .await?;
    assert_eq!(r.status(), 401);
    let r = guest
        .post(app.url("/api/v1/properties"))
        .json(&property_body("Nairobi", "85.50", false))
        .send()
        .await?;
    assert_eq!(r.status(), 403);

    let p = app
        .create_property_with(&host, property_body("Nairobi", "85.5", false))
        .await?;
    assert_eq!(p["price_per_night"], "85.50");
    assert_eq!(p["is_featured"], false);
    assert_eq!(p["view_count"], 0);
    let id = p["id"].as_i64().unwrap_or_default();

    // Validation: 422 with details, 400 for wrong types and unknown fields.
    let mut bad = property_body("Nairobi", "0.00", false);
    bad["title"] = json!("");
    bad["max_guests"] = json!(51);
    let r = host
        .post(app.url("/api/v1/properties"))
        .json(&bad)
        .send()
        .await?;
    assert_eq!(r.status(), 422);
    let v: Value = r.json().await?;
    for f in ["title", "max_guests", "price_per_night"] {
        assert!(v["error"]["details"][f].is_string(), "{f}: {v}");
    }
    let mut float = property_body("Nairobi", "1.00", false);
    float["price_per_night"] = json!(85.5);
    assert_eq!(
        host.post(app.url("/api/v1/properties"))
            .json(&float)
            .send()
            .await?
            .status(),
        400
    );
    let mut extra = property_body("Nairobi", "1.00", false);
    extra["owner"] = json!(1);
    assert_eq!(
        host.post(app.url("/api/v1/properties"))
            .json(&extra)
            .send()
            .await?
            .status(),
        400
    );

    // Only the owner edits or deletes.
    let other_host = app.new_client();
    app.signup_with(&other_host, "host2@example.com", "host")
        .await?;
    let path = format!("/api/v1/properties/{id}");
    let r = other_host
        .patch(app.url(&path))
        .json(&json!({"title": "Mine now"}))
        .send()
        .await?;
    assert_eq!(r.status(), 403);
    assert_eq!(
        other_host.delete(app.url(&path)).send().await?.status(),
        403
    );
    let r = host
        .patch(app.url(&path))
        .json(&json!({"price_per_night": "99.99"}))
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await?;
    assert_eq!(v["price_per_night"], "99.99");
    assert_eq!(v["title"], p["title"]);
    let r = host
        .patch(app.url(&path))
        .json(&json!({"max_guests": 0}))
        .send()
        .await?;
    assert_eq!(r.status(), 422);

    assert_eq!(host.delete(app.url(&path)).send().await?.status(), 204);
    assert_eq!(app.get(&path).await?.status(), 404);
    assert_eq!(host.delete(app.url(&path)).send().await?.status(), 404);
    let list: Value = app.get("/api/v1/properties").await?.json().await?;
    assert_eq!(list["count"], 0);
    assert_eq!(app.get("/api/v1/properties/999999").await?.status(), 404);
    let r = app.get("/api/v1/properties/abc").await?;
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await?, "not_found");
    Ok(())
}

async fn list_filters_and_pages(db: TestDb) -> anyhow::Result<()> {
    let app = spawn_app(db).await?;
    let host = app.new_client();
    app.signup_with(&host, "host@example.com", "host").await?;
    for (i, city) in ["Nairobi", "Lagos", "Nairobi", "Accra", "Nairobi"]
        .iter()
        .enumerate()
    {
        let price = format!("{}.00", 50 + i * 10);
        app.create_property_with(&host, property_body(city, &price, i % 2 == 0))
            .await?;
    }
    let v: Value = app
        .get("/api/v1/properties?city=nairobi&page_size=2")
        .await?
        .json()
        .await?;
    assert_eq!(v["count"], 3);
    assert_eq!(v["page"], 1);
    assert_eq!(v["results"].as_array().map(Vec::len), Some(2));
    let ids: Vec<i64> = v["results"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["id"].as_i64())
        .collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "not ordered by id: {ids:?}"
    );
    let v2: Value = app
        .get("/api/v1/properties?page=2&page_size=2&city=Nairobi")
        .await?
        .json()
        .await?;
    assert_eq!(v2["results"].as_array().map(Vec::len), Some(1));
    let v: Value = app
        .get("/api/v1/properties?min_price=60&max_price=80.00")
        .await?
        .json()
        .await?;
    assert_eq!(v["count"], 3);
    let v: Value = app.get("/api/v1/properties?guests=5").await?.json().await?;
    assert_eq!(v["count"], 0);
    let featured: Value = app.get("/api/v1/properties/featured").await?.json().await?;
    assert_eq!(featured.as_array().map(Vec::len), Some(3));
    for bad in [
        "page=0",
        "page_size=101",
        "page=x",
        "min_price=1.234",
        "colour=red",
        "guests=0",
    ] {
        let r = app.get(&format!("/api/v1/properties?{bad}")).await?;
        assert_eq!(r.status(), 400, "{bad}");
        assert_eq!(error_code(r).await?, "invalid_request");
    }
    Ok(())
}

async fn writes_are_visible_in_the_next_read(db: TestDb) -> anyhow::Result<()> {
    let app = spawn_app(db).await?;
    let host = app.new_client();
    app.signup_with(&host, "host@example.com", "host").await?;
    let p = app
        .create_property_with(&host, property_body("Kigali", "120.00", true))
        .await?;
    let id = p["id"].as_i64().unwrap_or_default();
    // Warm every cache.
    for path in [
        "/api/v1/properties",
        "/api/v1/properties/featured",
        &format!("/api/v1/properties/{id}"),
    ] {
        assert_eq!(app.get(path).await?.status(), 200);
        assert_eq!(app.get(path).await?.status(), 200);
    }
    let r = host
        .patch(app.url(&format!("/api/v1/properties/{id}")))
        .json(&json!({"title": "Renamed villa"}))
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    let list: Value = app.get("/api/v1/properties").await?.json().await?;
    assert_eq!(list["results"][0]["title"], "Renamed villa");
    let featured: Value = app.get("/api/v1/properties/featured").await?.json().await?;
    assert_eq!(featured[0]["title"], "Renamed villa");
    let detail: Value = app
        .get(&format!("/api/v1/properties/{id}"))
        .await?
        .json()
        .await?;
    assert_eq!(detail["title"], "Renamed villa");
    // A new property shows up at once too.
    app.create_property_with(&host, property_body("Kigali", "60.00", false))
        .await?;
    let list: Value = app
        .get("/api/v1/properties?city=Kigali")
        .await?
        .json()
        .await?;
    assert_eq!(list["count"], 2);
    Ok(())
}

async fn views_are_counted_and_flushed(db: TestDb) -> anyhow::Result<()> {
    let app = spawn_app(db).await?;
    let host = app.new_client();
    app.signup_with(&host, "host@example.com", "host").await?;
    let p = app
        .create_property_with(&host, property_body("Cairo", "70.00", false))
        .await?;
    let path = format!("/api/v1/properties/{}", p["id"]);
    let mut handles = Vec::new();
    for _ in 0..40 {
        let (c, url) = (app.client.clone(), app.url(&path));
        handles.push(tokio::spawn(async move {
            c.get(url).send().await.map(|r| r.status().as_u16())
        }));
    }
    for h in handles {
        assert_eq!(h.await??, 200);
    }
    let flushed = app.state.views.flush().await?;
    assert_eq!(flushed.views, 40);
    let stored = app
        .db()
        .property(p["id"].as_i64().unwrap_or_default())
        .await?
        .map(|p| p.view_count);
    assert_eq!(stored, Some(40));
    // Flushing again adds nothing; the next view shows 41.
    assert_eq!(app.state.views.flush().await?.views, 0);
    let v: Value = app.get(&path).await?.json().await?;
    assert_eq!(v["view_count"], 41);
    Ok(())
}
