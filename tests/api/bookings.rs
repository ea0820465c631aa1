//! Bookings: rules, the double-booking race, cancel rights, the dashboard.

use serde_json::{Value, json};

use crate::helpers::{TestDb, TestOptions, day, error_code, property_body, spawn_app_with};
use crate::on_each_setup;

on_each_setup!(
    booking_rules_and_cancel,
    concurrent_overlapping_bookings_one_wins,
    dashboard_reflects_bookings,
    delete_refused_with_active_bookings,
    delete_racing_bookings_never_orphans_one,
    confirmation_is_mailed_once_even_if_redelivered
);

async fn setup(db: TestDb) -> anyhow::Result<(crate::helpers::TestApp, reqwest::Client, i64)> {
    let app = spawn_app_with(TestOptions {
        db,
        tweak: Box::new(|s| {
            s.throttles.set(
                stayafrica::ratelimit::Action::Booking,
                stayafrica::ratelimit::Rate::new(1000, std::time::Duration::from_secs(3600)),
            )
        }),
        ..TestOptions::default()
    })
    .await?;
    let host = app.new_client();
    app.signup_with(&host, "host@example.com", "host").await?;
    let p = app
        .create_property_with(&host, property_body("Zanzibar City", "100.25", true))
        .await?;
    Ok((app, host, p["id"].as_i64().unwrap_or_default()))
}

async fn booking_rules_and_cancel(db: TestDb) -> anyhow::Result<()> {
    let (app, host, pid) = setup(db).await?;
    app.signup("guest@example.com", "guest").await?;
    let book = |ci: i64, co: i64, guests: i64| json!({"property_id": pid, "check_in": day(ci), "check_out": day(co), "guests": guests});

    let r = app.post("/api/v1/bookings", &book(10, 13, 2)).await?;
    assert_eq!(r.status(), 201);
    let b: Value = r.json().await?;
    assert_eq!(b["total_price"], "300.75");
    assert_eq!(b["status"], "confirmed");
    assert_eq!(b["check_in"], day(10));

    // Overlap -> 409; touching (check_in == other's check_out) is fine.
    let r = app.post("/api/v1/bookings", &book(12, 15, 1)).await?;
    assert_eq!(r.status(), 409);
    assert_eq!(error_code(r).await?, "conflict");
    assert_eq!(
        app.post("/api/v1/bookings", &book(13, 14, 1))
            .await?
            .status(),
        201
    );

    for (body, field) in [
        (book(-1, 2, 1), "check_in"),
        (book(20, 20, 1), "check_out"),
        (book(20, 111, 1), "check_out"),
        (book(20, 21, 5), "guests"),
        (
            json!({"property_id": 999999, "check_in": day(1), "check_out": day(2), "guests": 1}),
            "property_id",
        ),
        (
            json!({"property_id": pid, "check_in": "2030-02-30", "check_out": day(2), "guests": 1}),
            "check_in",
        ),
    ] {
        let r = app.post("/api/v1/bookings", &body).await?;
        assert_eq!(r.status(), 422, "{body}");
        let v: Value = r.json().await?;
        assert!(v["error"]["details"][field].is_string(), "{field}: {v}");
    }
    // Bad dates and a rule of the property broken: both fields named.
    let r = app.post("/api/v1/bookings", &book(20, 20, 5)).await?;
    assert_eq!(r.status(), 422);
    let v: Value = r.json().await?;
    assert!(v["error"]["details"]["check_out"].is_string(), "{v}");
    assert!(v["error"]["details"]["guests"].is_string(), "{v}");
    // The host cannot book their own property.
    let r = host
        .post(app.url("/api/v1/bookings"))
        .json(&book(40, 41, 1))
        .send()
        .await?;
    assert_eq!(r.status(), 422);
    let v: Value = r.json().await?;
    assert!(
        v["error"]["details"]["property_id"]
            .as_str()
            .is_some_and(|m| m.contains("own")),
        "{v}"
    );

    let list: Value = app.get("/api/v1/bookings").await?.json().await?;
    assert_eq!(list["count"], 2);
    assert!(
        list["results"][0]["id"].as_i64() > list["results"][1]["id"].as_i64(),
        "newest first"
    );

    // Cancel: a stranger cannot, the host can, twice is 409.
    let stranger = app.new_client();
    app.signup_with(&stranger, "stranger@example.com", "guest")
        .await?;
    let cancel = format!("/api/v1/bookings/{}/cancel", b["id"]);
    assert_eq!(stranger.post(app.url(&cancel)).send().await?.status(), 403);
    let r = host.post(app.url(&cancel)).send().await?;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await?["status"], "cancelled");
    assert_eq!(
        app.client.post(app.url(&cancel)).send().await?.status(),
        409
    );
    // The dates are free again.
    assert_eq!(
        app.post("/api/v1/bookings", &book(10, 12, 1))
            .await?
            .status(),
        201
    );
    // A confirmation email is sent by the background job.
    app.drain_jobs().await?;
    assert!(
        app.emails()
            .iter()
            .filter(|m| m.contains("confirmed"))
            .count()
            >= 3
    );
    Ok(())
}

async fn concurrent_overlapping_bookings_one_wins(db: TestDb) -> anyhow::Result<()> {
    let (app, _host, pid) = setup(db).await?;
    let mut clients = Vec::new();
    for i in 0..10 {
        let c = app.new_client();
        app.signup_with(&c, &format!("racer{i}@example.com"), "guest")
            .await?;
        clients.push(c);
    }
    let mut handles = Vec::new();
    for n in 0..50 {
        let c = clients[n % clients.len()].clone();
        let url = app.url("/api/v1/bookings");
        // Every request overlaps every other (all contain day 30).
        let body = json!({"property_id": pid, "check_in": day(25 + (n % 5) as i64), "check_out": day(31 + (n % 3) as i64), "guests": 1});
        handles.push(tokio::spawn(async move {
            c.post(url)
                .json(&body)
                .send()
                .await
                .map(|r| r.status().as_u16())
        }));
    }
    let mut statuses = Vec::new();
    for h in handles {
        statuses.push(h.await??);
    }
    let created = statuses.iter().filter(|s| **s == 201).count();
    let conflicts = statuses.iter().filter(|s| **s == 409).count();
    assert_eq!(created, 1, "statuses: {statuses:?}");
    assert_eq!(conflicts, 49, "statuses: {statuses:?}");
    Ok(())
}

async fn dashboard_reflects_bookings(db: TestDb) -> anyhow::Result<()> {
    let (app, host, pid) = setup(db).await?;
    let other = app
        .create_property_with(&host, property_body("Zanzibar City", "50.00", true))
        .await?;
    let elsewhere = app
        .create_property_with(&host, property_body("Accra", "40.00", true))
        .await?;
    // Newer than the Accra one, but in the city the guest will book in.
    let late = app
        .create_property_with(&host, property_body("Zanzibar City", "45.00", true))
        .await?;
    app.signup("guest@example.com", "guest").await?;
    // The featured endpoint stores the list as bytes; the dashboard reads the
    // same entry typed.
    let featured: Value = app.get("/api/v1/properties/featured").await?.json().await?;
    assert_eq!(featured.as_array().map(Vec::len), Some(4));
    assert_eq!(
        app.client
            .get(app.url("/api/v1/dashboard"))
            .send()
            .await?
            .status(),
        200
    );
    let anon = reqwest::Client::new()
        .get(app.url("/api/v1/dashboard"))
        .send()
        .await?;
    assert_eq!(anon.status(), 401);

    let r = app
        .post(
            "/api/v1/bookings",
            &json!({"property_id": pid, "check_in": day(5), "check_out": day(7), "guests": 1}),
        )
        .await?;
    assert_eq!(r.status(), 201);
    let d: Value = app.get("/api/v1/dashboard").await?.json().await?;
    assert_eq!(d["stats"]["total_bookings"], 1);
    assert_eq!(d["stats"]["upcoming_bookings"], 1);
    assert_eq!(d["stats"]["nights_booked"], 2);
    assert_eq!(d["stats"]["total_spent"], "200.50");
    assert_eq!(d["bookings"].as_array().map(Vec::len), Some(1));
    let recs: Vec<i64> = d["recommendations"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["id"].as_i64())
        .collect();
    // Booked property excluded; same city first.
    assert_eq!(
        recs,
        vec![
            other["id"].as_i64().unwrap_or_default(),
            late["id"].as_i64().unwrap_or_default(),
            elsewhere["id"].as_i64().unwrap_or_default()
        ]
    );

    // A change to a recommended property shows in the cached dashboard.
    let r = host
        .patch(app.url(&format!("/api/v1/properties/{}", other["id"])))
        .json(&json!({"title": "Fresh title"}))
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    let d: Value = app.get("/api/v1/dashboard").await?.json().await?;
    assert_eq!(d["recommendations"][0]["title"], "Fresh title");

    // Cancelling updates the stats at once.
    let bid = d["bookings"][0]["id"].clone();
    assert_eq!(
        app.client
            .post(app.url(&format!("/api/v1/bookings/{bid}/cancel")))
            .send()
            .await?
            .status(),
        200
    );
    let d: Value = app.get("/api/v1/dashboard").await?.json().await?;
    assert_eq!(d["stats"]["total_bookings"], 0);
    assert_eq!(d["stats"]["total_spent"], "0.00");
    assert_eq!(d["bookings"][0]["status"], "cancelled");
    Ok(())
}

async fn delete_refused_with_active_bookings(db: TestDb) -> anyhow::Result<()> {
    let (app, host, pid) = setup(db).await?;
    app.signup("guest@example.com", "guest").await?;
    let r = app
        .post(
            "/api/v1/bookings",
            &json!({"property_id": pid, "check_in": day(3), "check_out": day(4), "guests": 1}),
        )
        .await?;
    assert_eq!(r.status(), 201);
    let b: Value = r.json().await?;
    let path = format!("/api/v1/properties/{pid}");
    assert_eq!(host.delete(app.url(&path)).send().await?.status(), 409);
    assert_eq!(
        app.client
            .post(app.url(&format!("/api/v1/bookings/{}/cancel", b["id"])))
            .send()
            .await?
            .status(),
        200
    );
    assert_eq!(host.delete(app.url(&path)).send().await?.status(), 204);
    // The booking keeps its record.
    let list: Value = app.get("/api/v1/bookings").await?.json().await?;
    assert_eq!(list["count"], 1);
    Ok(())
}

/// A delete racing new bookings: either the delete wins (and no booking of
/// the deleted property is confirmed for the future) or a booking wins (and
/// the delete answers 409); never both.
async fn delete_racing_bookings_never_orphans_one(db: TestDb) -> anyhow::Result<()> {
    let (app, host, _) = setup(db).await?;
    app.signup("guest@example.com", "guest").await?;
    for round in 0..8 {
        let p = app
            .create_property_with(&host, property_body("Kampala", "20.00", false))
            .await?;
        let pid = p["id"].as_i64().unwrap_or_default();
        let mut bookings = Vec::new();
        for n in 0..10i64 {
            let (c, url) = (app.client.clone(), app.url("/api/v1/bookings"));
            let body = json!({"property_id": pid, "check_in": day(2 * n + 1), "check_out": day(2 * n + 2), "guests": 1});
            bookings.push(tokio::spawn(async move {
                c.post(url)
                    .json(&body)
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
            }));
        }
        let (h, url) = (host.clone(), app.url(&format!("/api/v1/properties/{pid}")));
        let delete =
            tokio::spawn(async move { h.delete(url).send().await.map(|r| r.status().as_u16()) });
        let mut created = 0;
        for b in bookings {
            let s = b.await??;
            assert!(s == 201 || s == 422, "round {round}: booking answered {s}");
            created += usize::from(s == 201);
        }
        let deleted = delete.await?? == 204;
        let live = app.db().property(pid).await?.is_some();
        assert_eq!(deleted, !live, "round {round}");
        if deleted {
            assert_eq!(
                created, 0,
                "round {round}: a booking was confirmed for a deleted property"
            );
        } else {
            assert!(
                created > 0,
                "round {round}: delete refused without bookings"
            );
        }
    }
    Ok(())
}

/// The confirmation job is idempotent: a second delivery of it (as after a
/// worker died) does not mail the guest again.
async fn confirmation_is_mailed_once_even_if_redelivered(db: TestDb) -> anyhow::Result<()> {
    let (app, _host, pid) = setup(db).await?;
    app.signup("guest@example.com", "guest").await?;
    let r = app
        .post(
            "/api/v1/bookings",
            &json!({"property_id": pid, "check_in": day(3), "check_out": day(5), "guests": 2}),
        )
        .await?;
    assert_eq!(r.status(), 201);
    let b: Value = r.json().await?;
    let id = b["id"].as_i64().unwrap_or_default();
    app.state
        .jobs
        .enqueue(&stayafrica::jobs::Job::BookingConfirmation { booking_id: id })
        .await?;
    assert_eq!(app.drain_jobs().await?, 2);
    let subject = format!("Subject: Booking #{id} confirmed");
    let sent = app.emails().iter().filter(|m| m.contains(&subject)).count();
    assert_eq!(sent, 1);
    Ok(())
}
