//! Search and the property list at depth: dates against bookings made
//! through the API, counts that stop at 10,000, the page-depth bound, and
//! cursors that walk every match exactly once, also while the catalogue
//! changes under them.

use std::collections::BTreeSet;

use anyhow::Context;
use serde_json::Value;
use stayafrica::db::bulk::{PropertyRecord, UserRecord};
use stayafrica::domain::{Money, Role};
use time::OffsetDateTime;

use crate::helpers::{TestApp, TestDb, day, error_code, property_body, spawn_app};
use crate::on_each_setup;

on_each_setup!(
    counts_stop_at_ten_thousand_and_cursors_go_deeper,
    cursors_walk_every_match_once_while_properties_come_and_go,
    dates_find_the_properties_free_for_the_stay,
    bad_dates_are_refused_naming_the_field,
);

/// GETs `path`, expecting 200, as JSON.
async fn page(app: &TestApp, path: &str) -> anyhow::Result<Value> {
    let r = app.get(path).await?;
    anyhow::ensure!(r.status() == 200, "GET {path}: {}", r.status());
    Ok(r.json().await?)
}

fn ids(v: &Value) -> Vec<i64> {
    v["results"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["id"].as_i64())
        .collect()
}

/// Follows `next_cursor` from the first page of `query` to the last;
/// calls `between` after each page; returns every id seen, in order.
async fn walk<F, Fut>(app: &TestApp, query: &str, mut between: F) -> anyhow::Result<Vec<i64>>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let mut seen = Vec::new();
    let mut v = page(app, &format!("/api/v1/properties?{query}")).await?;
    for n in 1.. {
        assert_eq!(v["page"], n, "page number of a cursor page");
        seen.extend(ids(&v));
        between(n).await?;
        let Some(cursor) = v["next_cursor"].as_str() else {
            break;
        };
        v = page(app, &format!("/api/v1/properties?{query}&cursor={cursor}")).await?;
    }
    Ok(seen)
}

async fn counts_stop_at_ten_thousand_and_cursors_go_deeper(db: TestDb) -> anyhow::Result<()> {
    let app = spawn_app(db).await?;
    // 10,001 matches, loaded in bulk before any list is cached: 10,000 at
    // 50.00 and one at 99.00.
    let at = OffsetDateTime::now_utc();
    let mut tx = app.db().begin_bulk().await?;
    tx.insert_users(&[UserRecord {
        id: 1,
        email: "bulkhost@example.com".into(),
        password_hash: "x".into(),
        full_name: "Bulk Host".into(),
        role: Role::Host,
        created_at: at,
    }])
    .await?;
    let rows: Vec<PropertyRecord> = (1..=10_001)
        .map(|id| PropertyRecord {
            id,
            host_id: 1,
            title: format!("Flat {id}"),
            description: String::new(),
            city: "Lusaka".into(),
            country: "Zambia".into(),
            price_per_night: Money::from_cents(if id == 5_000 { 9_900 } else { 5_000 }),
            max_guests: 2,
            is_featured: false,
            view_count: 0,
            created_at: at,
            updated_at: at,
            deleted_at: None,
        })
        .collect();
    tx.insert_properties(&rows).await?;
    tx.commit().await?;

    let all = page(&app, "/api/v1/properties?city=LUSAKA").await?;
    assert_eq!(all["count"], 10_000);
    assert_eq!(all["count_capped"], true);
    assert!(all["next_cursor"].is_string(), "{}", all["next_cursor"]);
    let exact = page(&app, "/api/v1/properties?max_price=50.00&page_size=1").await?;
    assert_eq!(exact["count"], 10_000);
    assert_eq!(exact["count_capped"], false);
    let one = page(&app, "/api/v1/properties?min_price=99.00").await?;
    assert_eq!((one["count"].clone(), ids(&one)), (1.into(), vec![5_000]));
    assert_eq!(one["count_capped"], false);
    assert!(
        one["next_cursor"].is_null(),
        "last page: {}",
        one["next_cursor"]
    );

    // The deepest page a number reaches, and one past it.
    let deepest = page(&app, "/api/v1/properties?page=100&page_size=100").await?;
    assert_eq!(ids(&deepest).first(), Some(&9_901));
    for past in [
        "page=101&page_size=100",
        "page=10001",
        "page=501&page_size=20",
    ] {
        let r = app.get(&format!("/api/v1/properties?{past}")).await?;
        assert_eq!(r.status(), 400, "{past}");
        let v: Value = r.json().await?;
        assert_eq!(v["error"]["code"], "invalid_request", "{past}");
        let message = v["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("cursor"), "{past}: {message}");
    }

    // Cursors go on past 10,000, each match once, in id order.
    let seen = walk(&app, "city=lusaka&page_size=100", |_| async { Ok(()) }).await?;
    assert_eq!(seen, (1..=10_001).collect::<Vec<i64>>());
    Ok(())
}

async fn cursors_walk_every_match_once_while_properties_come_and_go(
    db: TestDb,
) -> anyhow::Result<()> {
    let app = spawn_app(db).await?;
    let host = app.new_client();
    app.signup_with(&host, "host@example.com", "host").await?;
    let mut kigali = Vec::new();
    for i in 0..12 {
        let p = app
            .create_property_with(&host, property_body("Kigali", "70.00", false))
            .await?;
        kigali.push(p["id"].as_i64().context("id")?);
        if i % 4 == 0 {
            app.create_property_with(&host, property_body("Accra", "70.00", false))
                .await?;
        }
    }
    let (seen_then_deleted, unseen_then_deleted) = (kigali[1], kigali[10]);
    let added = std::cell::RefCell::new(Vec::new());
    let seen = walk(&app, "city=kigali&page_size=3", |n| {
        let (app, host, added) = (&app, &host, &added);
        async move {
            if n == 2 {
                for id in [seen_then_deleted, unseen_then_deleted] {
                    let r = host
                        .delete(app.url(&format!("/api/v1/properties/{id}")))
                        .send()
                        .await?;
                    anyhow::ensure!(r.status() == 204, "delete {id}: {}", r.status());
                }
                for city in ["Kigali", "Accra", "Kigali"] {
                    let p = app
                        .create_property_with(host, property_body(city, "70.00", false))
                        .await?;
                    if city == "Kigali" {
                        added.borrow_mut().push(p["id"].as_i64().context("id")?);
                    }
                }
            }
            Ok(())
        }
    })
    .await?;
    let expected: Vec<i64> = kigali
        .iter()
        .copied()
        .filter(|id| *id != unseen_then_deleted)
        .chain(added.borrow().iter().copied())
        .collect();
    assert_eq!(seen, expected, "every match once, in id order");
    assert_eq!(seen.iter().collect::<BTreeSet<_>>().len(), seen.len());

    // A cursor continues only the query that gave it.
    let first = page(&app, "/api/v1/properties?city=kigali&page_size=3").await?;
    let cursor = first["next_cursor"].as_str().context("a next page")?;
    for other in [
        format!("city=accra&page_size=3&cursor={cursor}"),
        format!("page_size=3&cursor={cursor}"),
        format!("city=kigali&page_size=3&min_price=1.00&cursor={cursor}"),
        format!("city=kigali&page=2&cursor={cursor}"),
        "cursor=not-a-cursor".to_owned(),
        format!("city=kigali&cursor={}", &cursor[1..]),
    ] {
        let r = app.get(&format!("/api/v1/properties?{other}")).await?;
        assert_eq!(r.status(), 400, "{other}");
        assert_eq!(error_code(r).await?, "invalid_request", "{other}");
    }
    // The same filters in another spelling and another page size are the
    // same query.
    let next = page(
        &app,
        &format!("/api/v1/properties?page_size=5&city=KIGALI&cursor={cursor}"),
    )
    .await?;
    assert_eq!(next["page"], 2);
    assert_eq!(ids(&next).len(), 5);
    assert!(ids(&next)[0] > ids(&first)[2]);
    Ok(())
}

/// The ids a search by dates (and `extra` filters) finds.
async fn free(app: &TestApp, from: i64, to: i64, extra: &str) -> anyhow::Result<Vec<i64>> {
    let path = format!(
        "/api/v1/properties?check_in={}&check_out={}{extra}",
        day(from),
        day(to)
    );
    Ok(ids(&page(app, &path).await?))
}

async fn dates_find_the_properties_free_for_the_stay(db: TestDb) -> anyhow::Result<()> {
    let app = spawn_app(db).await?;
    let host = app.new_client();
    app.signup_with(&host, "host@example.com", "host").await?;
    let mut made = Vec::new();
    for city in ["Nairobi", "Nairobi", "Mombasa"] {
        let p = app
            .create_property_with(&host, property_body(city, "80.00", false))
            .await?;
        made.push(p["id"].as_i64().context("id")?);
    }
    let [a, b, c] = made[..] else {
        anyhow::bail!("three properties");
    };
    let guest = app.new_client();
    app.signup_with(&guest, "guest@example.com", "guest")
        .await?;
    let book = |property: i64, from: i64, to: i64| {
        let (app, guest) = (&app, &guest);
        async move {
            let r = guest
                .post(app.url("/api/v1/bookings"))
                .json(&serde_json::json!({"property_id": property,
                    "check_in": day(from), "check_out": day(to), "guests": 2}))
                .send()
                .await?;
            anyhow::ensure!(r.status() == 201, "booking: {}", r.status());
            let v: Value = r.json().await?;
            v["id"].as_i64().context("booking id")
        }
    };
    // a: nights 10 to 14; b: nights 20 and 21, cancelled below.
    book(a, 10, 15).await?;
    let cancelled = book(b, 20, 22).await?;

    // Each search below is a query of its own: a date search may be
    // served from a cache that lags bookings (API.md), the first of its
    // query never is.
    assert_eq!(free(&app, 12, 13, "").await?, [b, c], "inside the stay");
    assert_eq!(free(&app, 8, 11, "").await?, [b, c], "overlaps its start");
    assert_eq!(free(&app, 14, 18, "").await?, [b, c], "overlaps its end");
    assert_eq!(free(&app, 9, 16, "").await?, [b, c], "covers it");
    assert_eq!(
        free(&app, 15, 17, "").await?,
        [a, b, c],
        "back to back after"
    );
    assert_eq!(
        free(&app, 5, 10, "").await?,
        [a, b, c],
        "back to back before"
    );
    assert_eq!(free(&app, 21, 22, "").await?, [a, c], "b is booked");
    assert_eq!(
        free(&app, 12, 13, "&city=NAIROBI").await?,
        [b],
        "with other filters"
    );

    let r = guest
        .post(app.url(&format!("/api/v1/bookings/{cancelled}/cancel")))
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    assert_eq!(free(&app, 20, 22, "").await?, [a, b, c], "cancelled: free");
    // The booking rules still hold the dates themselves: back to back is
    // bookable, an overlap is not, whatever a search showed.
    book(a, 15, 17).await?;
    let r = guest
        .post(app.url("/api/v1/bookings"))
        .json(&serde_json::json!({"property_id": a,
            "check_in": day(16), "check_out": day(18), "guests": 2}))
        .send()
        .await?;
    assert_eq!(r.status(), 409);
    assert_eq!(free(&app, 16, 17, "&page_size=10").await?, [b, c]);

    // Dates go with cursors: the next page keeps them.
    let first = page(
        &app,
        &format!(
            "/api/v1/properties?check_in={}&check_out={}&page_size=1",
            day(12),
            day(13)
        ),
    )
    .await?;
    assert_eq!((first["count"].clone(), ids(&first)), (2.into(), vec![b]));
    let cursor = first["next_cursor"].as_str().context("a next page")?;
    let next = page(
        &app,
        &format!(
            "/api/v1/properties?check_in={}&check_out={}&page_size=1&cursor={cursor}",
            day(12),
            day(13)
        ),
    )
    .await?;
    assert_eq!(ids(&next), [c]);
    assert!(next["next_cursor"].is_null());
    let r = app
        .get(&format!(
            "/api/v1/properties?check_in={}&check_out={}&page_size=1&cursor={cursor}",
            day(12),
            day(14)
        ))
        .await?;
    assert_eq!(r.status(), 400, "a cursor of other dates");
    Ok(())
}

async fn bad_dates_are_refused_naming_the_field(db: TestDb) -> anyhow::Result<()> {
    let app = spawn_app(db).await?;
    for (query, field) in [
        (format!("check_in={}", day(3)), "check_out"),
        (format!("check_out={}", day(3)), "check_in"),
        (
            format!("check_in={}&check_out={}", day(-1), day(3)),
            "check_in",
        ),
        (
            format!("check_in={}&check_out={}", day(3), day(3)),
            "check_out",
        ),
        (
            format!("check_in={}&check_out={}", day(5), day(4)),
            "check_out",
        ),
        (
            format!("check_in={}&check_out={}", day(1), day(92)),
            "check_out",
        ),
        (
            format!("check_in=2030-13-01&check_out={}", day(3)),
            "check_in",
        ),
        (
            format!("check_in={}&check_out=tomorrow", day(3)),
            "check_out",
        ),
    ] {
        let r = app.get(&format!("/api/v1/properties?{query}")).await?;
        assert_eq!(r.status(), 422, "{query}");
        let v: Value = r.json().await?;
        assert_eq!(v["error"]["code"], "validation_failed", "{query}");
        assert!(v["error"]["details"][field].is_string(), "{query}: {v}");
    }
    // 90 nights is a stay.
    let r = app
        .get(&format!(
            "/api/v1/properties?check_in={}&check_out={}",
            day(1),
            day(91)
        ))
        .await?;
    assert_eq!(r.status(), 200);
    Ok(())
}
