//! Gaps between the service and `API.md`, each closed: required fields,
//! `null` for a field that is not nullable, media types other than
//! `application/json`, wrong methods, and the request id on answers made
//! by middleware rather than handlers.

use serde_json::{Value, json};

use crate::helpers::{TestDb, TestOptions, error_code, property_body, spawn_app, spawn_app_with};

#[tokio::test]
async fn a_property_without_description_is_a_400() -> anyhow::Result<()> {
    let app = spawn_app(TestDb::Sqlite).await?;
    app.signup("host@example.com", "host").await?;
    let mut body = property_body("Accra", "80.00", false);
    body.as_object_mut().map(|o| o.remove("description"));
    let r = app.post("/api/v1/properties", &body).await?;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await?;
    assert_eq!(v["error"]["code"], "invalid_request");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("description")),
        "{v}"
    );
    // Every required field is required; `is_featured` is optional.
    for field in ["title", "city", "country", "price_per_night", "max_guests"] {
        let mut body = property_body("Accra", "80.00", false);
        body.as_object_mut().map(|o| o.remove(field));
        let r = app.post("/api/v1/properties", &body).await?;
        assert_eq!(r.status(), 400, "{field}");
    }
    let mut body = property_body("Accra", "80.00", false);
    body.as_object_mut().map(|o| o.remove("is_featured"));
    let r = app.post("/api/v1/properties", &body).await?;
    assert_eq!(r.status(), 201);
    let p: Value = r.json().await?;
    assert_eq!(p["is_featured"], false);
    // An empty description is allowed (0..5000).
    let mut body = property_body("Accra", "80.00", false);
    body["description"] = json!("");
    assert_eq!(app.post("/api/v1/properties", &body).await?.status(), 201);
    Ok(())
}

#[tokio::test]
async fn null_for_a_field_that_is_not_nullable_is_a_400() -> anyhow::Result<()> {
    let app = spawn_app(TestDb::Sqlite).await?;
    app.signup("host@example.com", "host").await?;
    let p = app
        .create_property_with(&app.client, property_body("Accra", "80.00", false))
        .await?;
    let path = format!("/api/v1/properties/{}", p["id"]);
    for field in [
        "title",
        "description",
        "city",
        "country",
        "price_per_night",
        "max_guests",
        "is_featured",
    ] {
        let r = app.patch(&path, &json!({ field: null })).await?;
        assert_eq!(r.status(), 400, "{field}: null");
        assert_eq!(error_code(r).await?, "invalid_request");
    }
    let mut create = property_body("Accra", "80.00", false);
    create["is_featured"] = Value::Null;
    assert_eq!(app.post("/api/v1/properties", &create).await?.status(), 400);
    // Nothing changed; an absent field is still "no change".
    let r = app.patch(&path, &json!({"max_guests": 6})).await?;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await?;
    assert_eq!(v["max_guests"], 6);
    assert_eq!(v["title"], p["title"]);
    assert_eq!(v["price_per_night"], "80.00");
    Ok(())
}

#[tokio::test]
async fn only_application_json_is_read_as_json() -> anyhow::Result<()> {
    let app = spawn_app(TestDb::Sqlite).await?;
    let body = json!({"email": "media@example.com", "password": "password123", "full_name": "M", "role": "guest"}).to_string();
    for content_type in [
        "application/json-patch+json",
        "application/merge-patch+json",
        "application/vnd.api+json",
        "text/json",
        "application/jsonx",
    ] {
        let r = app
            .client
            .post(app.url("/api/v1/auth/register"))
            .header("content-type", content_type)
            .body(body.clone())
            .send()
            .await?;
        assert_eq!(r.status(), 415, "{content_type}");
        assert!(r.headers().contains_key("x-request-id"));
        assert_eq!(error_code(r).await?, "unsupported_media_type");
    }
    let r = app
        .client
        .post(app.url("/api/v1/auth/register"))
        .body(body.clone())
        .send()
        .await?;
    assert_eq!(r.status(), 415, "no Content-Type at all");
    // Parameters and case are fine.
    let r = app
        .client
        .post(app.url("/api/v1/auth/register"))
        .header("content-type", "Application/JSON; charset=utf-8")
        .body(body)
        .send()
        .await?;
    assert_eq!(r.status(), 201);
    Ok(())
}

#[tokio::test]
async fn wrong_methods_get_the_error_body() -> anyhow::Result<()> {
    let app = spawn_app(TestDb::Sqlite).await?;
    let cases = [
        (reqwest::Method::DELETE, "/health", "GET"),
        (reqwest::Method::PUT, "/metrics", "GET"),
        (reqwest::Method::POST, "/health", "GET"),
        (reqwest::Method::DELETE, "/api/v1/me", "GET"),
        (reqwest::Method::PUT, "/api/v1/properties", "GET"),
        (reqwest::Method::GET, "/api/v1/auth/login", "POST"),
        (reqwest::Method::POST, "/api/v1/properties/1", "GET"),
        (reqwest::Method::PUT, "/api/v1/openapi.json", "GET"),
    ];
    for (method, path, allowed) in cases {
        let r = app
            .client
            .request(method.clone(), app.url(path))
            .send()
            .await?;
        assert_eq!(r.status(), 405, "{method} {path}");
        assert!(r.headers().contains_key("x-request-id"), "{method} {path}");
        let allow = r
            .headers()
            .get("allow")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(allow.contains(allowed), "{method} {path}: Allow {allow}");
        assert_eq!(
            r.headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("application/json")
        );
        assert_eq!(
            error_code(r).await?,
            "method_not_allowed",
            "{method} {path}"
        );
    }
    Ok(())
}

/// Answers made by middleware (limits, throttling, deadline, fallback) carry
/// the request id like the handlers' do. (hyper's own answers to requests
/// it cannot parse are the exception the README names.)
#[tokio::test]
async fn middleware_answers_carry_the_request_id() -> anyhow::Result<()> {
    let app = spawn_app_with(TestOptions {
        tweak: Box::new(|s| {
            s.throttles.set(
                stayafrica::ratelimit::Action::Anon,
                stayafrica::ratelimit::Rate::new(2, std::time::Duration::from_secs(3600)),
            )
        }),
        ..TestOptions::default()
    })
    .await?;
    let big = json!({"email": "a@b.com", "password": "x".repeat(70_000), "full_name": "A", "role": "guest"});
    let mut statuses = Vec::new();
    for r in [
        app.post("/api/v1/auth/register", &big).await?,
        app.client
            .post(app.url("/api/v1/auth/login"))
            .header("content-type", "application/json")
            .body("{oops")
            .send()
            .await?,
        app.get("/nowhere").await?,
        app.get("/api/v1/properties").await?,
        app.get("/api/v1/properties").await?,
    ] {
        statuses.push(r.status().as_u16());
        let id = r
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(!id.is_empty(), "{} without X-Request-Id", r.status());
    }
    assert_eq!(statuses, vec![413, 400, 404, 429, 429]);
    Ok(())
}
