//! The OpenAPI document at `/api/v1/openapi.json` and the viewer at `/docs`.

use serde_json::Value;

use crate::helpers::{TestDb, spawn_app};

/// Every route of `API.md` and the README's extras.
const ROUTES: &[(&str, &str)] = &[
    ("post", "/api/v1/auth/register"),
    ("post", "/api/v1/auth/login"),
    ("post", "/api/v1/auth/logout"),
    ("post", "/api/v1/auth/logout-all"),
    ("post", "/api/v1/auth/password"),
    ("post", "/api/v1/auth/otp"),
    ("post", "/api/v1/auth/otp/verify"),
    ("get", "/api/v1/me"),
    ("get", "/api/v1/properties"),
    ("post", "/api/v1/properties"),
    ("get", "/api/v1/properties/featured"),
    ("get", "/api/v1/properties/{id}"),
    ("patch", "/api/v1/properties/{id}"),
    ("delete", "/api/v1/properties/{id}"),
    ("get", "/api/v1/bookings"),
    ("post", "/api/v1/bookings"),
    ("post", "/api/v1/bookings/{id}/cancel"),
    ("get", "/api/v1/dashboard"),
    ("get", "/health"),
    ("get", "/metrics"),
];

async fn spec(app: &crate::helpers::TestApp) -> anyhow::Result<Value> {
    let r = app.get("/api/v1/openapi.json").await?;
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"))
    );
    Ok(r.json().await?)
}

#[tokio::test]
async fn the_spec_is_openapi_3_1_and_names_every_route() -> anyhow::Result<()> {
    let app = spawn_app(TestDb::Sqlite).await?;
    let doc = spec(&app).await?;
    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1.")),
        "{}",
        doc["openapi"]
    );
    let paths = doc["paths"]
        .as_object()
        .ok_or_else(|| anyhow::anyhow!("no paths"))?;
    let mut documented = 0;
    for (path, item) in paths {
        for (method, op) in item.as_object().into_iter().flatten() {
            documented += 1;
            assert!(
                ROUTES.contains(&(method.as_str(), path.as_str())),
                "{method} {path} documented but not in API.md"
            );
            let responses = op["responses"]
                .as_object()
                .ok_or_else(|| anyhow::anyhow!("{method} {path}: no responses"))?;
            for (status, response) in responses {
                assert_eq!(
                    response["headers"]["X-Request-Id"]["required"], true,
                    "{method} {path} {status}"
                );
            }
            if path.starts_with("/api/") {
                for status in ["429", "503"] {
                    assert!(
                        responses.contains_key(status),
                        "{method} {path}: no {status}"
                    );
                }
                assert_eq!(responses["429"]["headers"]["Retry-After"]["required"], true);
            }
            if op.get("requestBody").is_some() {
                for status in ["400", "413", "415"] {
                    assert!(
                        responses.contains_key(status),
                        "{method} {path}: no {status}"
                    );
                }
            }
            // Every operation answers with something the router serves: no
            // path is in the document that the router does not know.
            let concrete = path.replace("{id}", "1");
            let r = app
                .client
                .request(method.to_uppercase().parse()?, app.url(&concrete))
                .send()
                .await?;
            assert_ne!(r.status(), 405, "{method} {path} not routed");
            if !path.contains("{id}") {
                assert_ne!(r.status(), 404, "{method} {path} not routed");
            }
        }
    }
    assert_eq!(documented, ROUTES.len(), "every route documented once");
    // The session cookie is the security scheme of signed-in operations.
    assert_eq!(
        doc["components"]["securitySchemes"]["sessionid"]["type"],
        "apiKey"
    );
    assert_eq!(
        doc["components"]["securitySchemes"]["sessionid"]["in"],
        "cookie"
    );
    assert_eq!(
        doc["components"]["securitySchemes"]["sessionid"]["name"],
        "sessionid"
    );
    assert!(doc["paths"]["/api/v1/dashboard"]["get"]["security"][0]["sessionid"].is_array());
    // Signing in always sets the cookie.
    for path in ["/api/v1/auth/login", "/api/v1/auth/otp/verify"] {
        assert_eq!(
            doc["paths"][path]["post"]["responses"]["200"]["headers"]["Set-Cookie"]["required"],
            true,
            "{path}"
        );
    }
    Ok(())
}

/// The request schemas carry the field rules of `API.md`.
#[tokio::test]
async fn request_schemas_encode_the_field_rules() -> anyhow::Result<()> {
    let app = spawn_app(TestDb::Sqlite).await?;
    let doc = spec(&app).await?;
    let schemas = &doc["components"]["schemas"];
    let body_of = |path: &str, method: &str| -> Value {
        let r = doc["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"]
            ["$ref"]
            .as_str()
            .unwrap_or_default()
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        schemas[r.as_str()].clone()
    };
    let create = body_of("/api/v1/properties", "post");
    assert_eq!(create["additionalProperties"], false);
    let mut required: Vec<&str> = create["required"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    required.sort_unstable();
    assert_eq!(
        required,
        [
            "city",
            "country",
            "description",
            "max_guests",
            "price_per_night",
            "title"
        ]
    );
    let p = &create["properties"];
    assert_eq!(
        (
            p["title"]["minLength"].as_u64(),
            p["title"]["maxLength"].as_u64()
        ),
        (Some(1), Some(200))
    );
    assert_eq!(p["description"]["maxLength"], 5000);
    assert_eq!(p["city"]["maxLength"], 100);
    assert_eq!(
        (
            p["max_guests"]["minimum"].as_u64(),
            p["max_guests"]["maximum"].as_u64()
        ),
        (Some(1), Some(50))
    );
    let pattern = p["price_per_night"]["pattern"].as_str().unwrap_or_default();
    assert!(pattern.contains(r"\.[0-9]{2}$"), "{pattern}");
    let patch = body_of("/api/v1/properties/{id}", "patch");
    assert_eq!(patch["additionalProperties"], false);
    assert!(
        patch
            .get("required")
            .is_none_or(|r| r.as_array().is_some_and(Vec::is_empty))
    );
    // Not nullable: a plain type, no `null` alternative.
    for (name, field) in patch["properties"].as_object().into_iter().flatten() {
        let text = field.to_string();
        assert!(!text.contains("null"), "{name}: {text}");
    }
    let register = body_of("/api/v1/auth/register", "post");
    let rp = &register["properties"];
    assert_eq!(rp["email"]["format"], "email");
    assert_eq!(rp["email"]["maxLength"], 254);
    assert_eq!(
        (
            rp["password"]["minLength"].as_u64(),
            rp["password"]["maxLength"].as_u64()
        ),
        (Some(8), Some(128))
    );
    assert_eq!(rp["full_name"]["maxLength"], 200);
    let booking = body_of("/api/v1/bookings", "post");
    assert_eq!(booking["properties"]["check_in"]["format"], "date");
    assert_eq!(booking["additionalProperties"], false);
    // The error body.
    let err = &schemas["ErrorBody"];
    assert_eq!(err["required"][0], "error");
    Ok(())
}

#[tokio::test]
async fn the_viewer_is_html_served_from_the_binary() -> anyhow::Result<()> {
    let app = spawn_app(TestDb::Sqlite).await?;
    let r = app.get("/docs").await?;
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/html"))
    );
    let html = r.text().await?;
    assert!(html.contains("<html"), "{html}");
    // Its scripts and styles come from this server, not a CDN.
    for asset in [
        "swagger-ui-bundle.js",
        "swagger-ui.css",
        "swagger-initializer.js",
    ] {
        assert!(html.contains(asset), "{asset} not in {html}");
        let r = app.get(&format!("/docs/{asset}")).await?;
        assert_eq!(r.status(), 200, "{asset}");
        let text = r.text().await?;
        assert!(text.len() > 100, "{asset}");
        if asset == "swagger-initializer.js" {
            assert!(text.contains("/api/v1/openapi.json"), "{text}");
        }
    }
    assert!(!html.contains("https://"), "{html}");
    Ok(())
}

/// Every limit of the catalogue is described in the served document and in
/// the README's settings table, from the one source enforcement uses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rate_limit_is_documented() -> anyhow::Result<()> {
    let app = spawn_app(TestDb::Sqlite).await?;
    let doc = spec(&app).await?;
    let listed = doc["info"]["x-rate-limits"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))?;
    let description = doc["info"]["description"].as_str().unwrap_or_default();
    assert_eq!(listed.len(), stayafrica::ratelimit::Action::ALL.len());
    for action in stayafrica::ratelimit::Action::ALL {
        let spec = action.spec();
        assert!(
            listed
                .iter()
                .any(|l| l["name"] == spec.name && l["setting"] == spec.setting),
            "{} not in x-rate-limits",
            spec.name
        );
        assert!(
            description.contains(spec.setting),
            "{} not described",
            spec.setting
        );
        let var = format!("`STAYAFRICA_{}`", spec.setting.to_uppercase());
        assert!(readme.contains(&var), "{var} not in the README");
    }
    Ok(())
}
