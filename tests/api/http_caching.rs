//! HTTP caching of the cached GETs: strong ETags and 304s, an outdated tag
//! after a write gets the new body, compressed variants decode to the very
//! bytes of the identity body, `Cache-Control` and `Vary` as documented.

use std::io::Read;

use anyhow::Context;
use reqwest::Response;
use reqwest::header::{
    ACCEPT_ENCODING, CACHE_CONTROL, CONTENT_ENCODING, ETAG, IF_NONE_MATCH, VARY,
};
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestDb, property_body, spawn_app};
use crate::on_each_setup;

on_each_setup!(
    public_gets_revalidate_with_etags,
    compressed_variants_are_the_same_bytes,
    details_and_dashboard_headers
);

fn header(r: &Response, name: reqwest::header::HeaderName) -> String {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

async fn get(app: &TestApp, path: &str, extra: &[(&str, &str)]) -> anyhow::Result<Response> {
    let mut req = app.client.get(app.url(path));
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    Ok(req.send().await?)
}

/// A signed-in host with `n` featured properties in Nairobi (5, a host's
/// most, make a featured list large enough to get compressed variants).
async fn host_with_featured(db: TestDb, n: usize) -> anyhow::Result<(TestApp, Vec<i64>)> {
    let app = spawn_app(db).await?;
    app.signup("host@example.com", "host").await?;
    let mut ids = Vec::new();
    for _ in 0..n {
        let p = app
            .create_property_with(&app.client, property_body("Nairobi", "85.50", true))
            .await?;
        ids.push(p["id"].as_i64().context("id")?);
    }
    Ok((app, ids))
}

async fn public_gets_revalidate_with_etags(db: TestDb) -> anyhow::Result<()> {
    let (app, ids) = host_with_featured(db, 5).await?;
    for path in [
        "/api/v1/properties/featured",
        "/api/v1/properties?city=nairobi",
    ] {
        let r = get(&app, path, &[]).await?;
        assert_eq!(r.status(), 200, "{path}");
        let tag = header(&r, ETAG);
        assert!(
            tag.starts_with('"') && tag.ends_with('"') && tag.len() > 2,
            "{path}: {tag}"
        );
        assert_eq!(
            header(&r, CACHE_CONTROL),
            "public, max-age=0, must-revalidate"
        );
        assert_eq!(header(&r, VARY), "Accept-Encoding");
        let before = r.bytes().await?;

        // Same tag again: 304 without a body, same tag.
        let r = get(&app, path, &[("if-none-match", &tag)]).await?;
        assert_eq!(r.status(), 304, "{path}");
        assert_eq!(header(&r, ETAG), tag);
        assert_eq!(
            header(&r, CACHE_CONTROL),
            "public, max-age=0, must-revalidate"
        );
        assert!(r.bytes().await?.is_empty());
        // A list of tags, one of them weak, also matches.
        let r = get(
            &app,
            path,
            &[("if-none-match", &format!("\"nope\", W/{tag}"))],
        )
        .await?;
        assert_eq!(r.status(), 304, "{path}");
        // Another tag: the full answer.
        let r = get(&app, path, &[("if-none-match", "\"nope\"")]).await?;
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(r.bytes().await?, before);

        // After a write the old tag is outdated: 200, the new body, a new tag.
        let title = format!("Renamed for {path}");
        let r = app
            .patch(
                &format!("/api/v1/properties/{}", ids[0]),
                &json!({"title": title}),
            )
            .await?;
        assert_eq!(r.status(), 200);
        let r = get(&app, path, &[("if-none-match", &tag)]).await?;
        assert_eq!(r.status(), 200, "{path}");
        let new_tag = header(&r, ETAG);
        assert_ne!(new_tag, tag, "{path}");
        let body: Value = serde_json::from_slice(&r.bytes().await?)?;
        let items = body.get("results").unwrap_or(&body);
        assert_eq!(items[0]["title"], title.as_str(), "{path}: {body}");
        let r = get(&app, path, &[("if-none-match", &new_tag)]).await?;
        assert_eq!(r.status(), 304, "{path}");
    }
    app.stop().await
}

fn gunzip(b: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(b).read_to_end(&mut out)?;
    Ok(out)
}

fn unbrotli(b: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    brotli::Decompressor::new(b, 4096).read_to_end(&mut out)?;
    Ok(out)
}

async fn compressed_variants_are_the_same_bytes(db: TestDb) -> anyhow::Result<()> {
    let (app, _) = host_with_featured(db, 5).await?;
    for path in [
        "/api/v1/properties/featured",
        "/api/v1/properties?city=nairobi",
        "/api/v1/dashboard",
    ] {
        let plain = get(&app, path, &[]).await?;
        assert_eq!(plain.status(), 200, "{path}");
        assert_eq!(header(&plain, CONTENT_ENCODING), "", "{path}");
        let plain_tag = header(&plain, ETAG);
        let plain = plain.bytes().await?;
        assert!(plain.len() > 1024, "{path}: {} bytes", plain.len());

        let mut tags = vec![plain_tag];
        for (accept, coding, decode) in [
            (
                "gzip",
                "gzip",
                gunzip as fn(&[u8]) -> anyhow::Result<Vec<u8>>,
            ),
            ("gzip, deflate, br", "br", unbrotli),
            ("br;q=0, gzip;q=0.8", "gzip", gunzip),
        ] {
            let r = get(&app, path, &[("accept-encoding", accept)]).await?;
            assert_eq!(r.status(), 200, "{path} {accept}");
            assert_eq!(header(&r, CONTENT_ENCODING), coding, "{path} {accept}");
            assert!(header(&r, VARY).contains("Accept-Encoding"));
            let tag = header(&r, ETAG);
            let sent = r.bytes().await?;
            assert!(
                sent.len() < plain.len() / 2,
                "{path} {accept}: {}",
                sent.len()
            );
            assert_eq!(decode(&sent)?, plain, "{path} {accept}");
            // The variant's own tag revalidates it.
            let r = get(
                &app,
                path,
                &[("accept-encoding", accept), ("if-none-match", &tag)],
            )
            .await?;
            assert_eq!(r.status(), 304, "{path} {accept}");
            tags.push(tag);
        }
        // Identity, gzip and br are different representations: distinct strong tags.
        assert_ne!(tags[0], tags[1]);
        assert_ne!(tags[1], tags[2]);
        assert_eq!(tags[1], tags[3]);
    }
    let r = get(
        &app,
        "/api/v1/properties/featured",
        &[("accept-encoding", "identity")],
    )
    .await?;
    assert_eq!(header(&r, CONTENT_ENCODING), "");
    app.stop().await
}

async fn details_and_dashboard_headers(db: TestDb) -> anyhow::Result<()> {
    let (app, ids) = host_with_featured(db, 1).await?;
    let path = format!("/api/v1/properties/{}", ids[0]);
    let r = get(&app, &path, &[]).await?;
    assert_eq!(r.status(), 200);
    assert_eq!(
        header(&r, CACHE_CONTROL),
        "public, max-age=0, must-revalidate"
    );
    let tag = header(&r, ETAG);
    let first: Value = r.json().await?;
    // Every call counts a view, so the previous answer is outdated at once:
    // its tag gets the new count, never a 304.
    let r = get(&app, &path, &[("if-none-match", &tag)]).await?;
    assert_eq!(r.status(), 200);
    assert_ne!(header(&r, ETAG), tag);
    let second: Value = r.json().await?;
    assert_eq!(
        second["view_count"].as_i64(),
        first["view_count"].as_i64().map(|v| v + 1)
    );
    assert_eq!(second["title"], first["title"]);
    let r = get(&app, "/api/v1/properties/999999", &[("if-none-match", "*")]).await?;
    assert_eq!(r.status(), 404);

    // The dashboard is per user: private, varies by cookie.
    let r = get(&app, "/api/v1/dashboard", &[]).await?;
    assert_eq!(r.status(), 200);
    assert_eq!(
        header(&r, CACHE_CONTROL),
        "private, max-age=0, must-revalidate"
    );
    assert_eq!(header(&r, VARY), "Cookie, Accept-Encoding");
    let tag = header(&r, ETAG);
    let r = get(&app, "/api/v1/dashboard", &[("if-none-match", &tag)]).await?;
    assert_eq!(r.status(), 304);
    assert_eq!(header(&r, VARY), "Cookie, Accept-Encoding");
    // Someone else's tag is no use without their session.
    let anon = app
        .new_client()
        .get(app.url("/api/v1/dashboard"))
        .header(IF_NONE_MATCH, &tag)
        .header(ACCEPT_ENCODING, "br")
        .send()
        .await?;
    assert_eq!(anon.status(), 401);
    app.stop().await
}
