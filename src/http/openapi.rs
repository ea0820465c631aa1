//! The OpenAPI 3.1 description of the API, generated from the code: each
//! handler's `#[utoipa::path]` (collected by the routers themselves, so a
//! route cannot be served without being described) and the request and
//! response types' `ToSchema` derives, which carry `API.md`'s field rules.
//! [`finish`] then adds what every operation shares — the error responses
//! of the middleware (400, 413, 415, 429, 503), `X-Request-Id` on every
//! response and the rate-limit headers on `/api/` — in one place rather than
//! repeated on forty handlers. Served at `/api/v1/openapi.json`, with an
//! offline viewer at `/docs`.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Map, Value, json};
use utoipa::openapi::OpenApi as Spec;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

/// Path of the machine-readable description.
pub const SPEC_PATH: &str = "/api/v1/openapi.json";
/// Path of the interactive viewer.
pub const DOCS_PATH: &str = "/docs";

/// The API's error body, as `crate::error::ApiError` writes it (the type
/// exists for the description only; `.ci/fuzz-api` checks that every error
/// answer fits it).
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// The inside of [`ErrorBody`].
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorDetail {
    /// Stable, snake_case: clients match on it (`invalid_request`,
    /// `not_authenticated`, `validation_failed`, `throttled`, …).
    #[schema(pattern = "^[a-z_]+$")]
    pub code: String,
    /// For people; may change.
    pub message: String,
    /// With `validation_failed`: field name -> what is wrong with it.
    #[schema(nullable = false)]
    pub details: Option<BTreeMap<String, String>>,
}

/// Body of `/health`: `status` and each dependency (`ok`, `error`,
/// `timeout`).
#[derive(Serialize, ToSchema)]
pub struct Health {
    /// `ok`, or `unavailable` when any part is not.
    #[schema(pattern = "^(ok|unavailable)$")]
    pub status: String,
    #[schema(pattern = "^(ok|error|timeout)$")]
    pub database: String,
    #[schema(pattern = "^(ok|error|timeout)$")]
    pub cache: String,
    #[schema(pattern = "^(ok|error|timeout)$")]
    pub sessions: String,
    #[schema(pattern = "^(ok|error|timeout)$")]
    pub ratelimit: String,
    #[schema(pattern = "^(ok|error|timeout)$")]
    pub jobs: String,
}

/// The document's frame: info, the `sessionid` cookie scheme, shared schemas.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "StayAfrica API",
        version = "1",
        description = "Property rentals in African cities: hosts list homes, guests book stays. \
                       The contract of API.md."
    ),
    components(schemas(ErrorBody, ErrorDetail)),
    modifiers(&SessionCookie)
)]
pub struct ApiDoc;

/// Adds the `sessionid` cookie security scheme.
struct SessionCookie;

impl Modify for SessionCookie {
    fn modify(&self, spec: &mut Spec) {
        if let Some(components) = spec.components.as_mut() {
            components.add_security_scheme(
                "sessionid",
                SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                    crate::sessions::COOKIE,
                    "Opaque session id, HttpOnly and SameSite=Lax, set by login and \
                     one-time-code verification",
                ))),
            );
        }
    }
}

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
    })
}

fn header(description: &str, schema: Value, required: bool) -> Value {
    json!({"description": description, "required": required, "schema": schema})
}

/// Appends the catalogue of limits (`crate::ratelimit::Action`) to the
/// document's description, and as `x-rate-limits` (name, setting, default
/// rate, whether it fails open) for tools: the same source as enforcement.
fn describe_limits(doc: &mut Value) {
    use crate::ratelimit::Action;
    let mut text = String::from(
        "\n\nRate limits (defaults; each setting is `STAYAFRICA_` + its name in upper case):\n\n\
         | limit | setting | default |\n|---|---|---|\n",
    );
    let mut list = Vec::new();
    for a in Action::ALL {
        let spec = a.spec();
        let secs = spec.default.period.as_secs();
        text.push_str(&format!(
            "| {} | `{}` | {}/{}s |\n",
            spec.describe, spec.setting, spec.default.limit, secs
        ));
        list.push(json!({
            "name": spec.name,
            "setting": spec.setting,
            "limit": spec.default.limit,
            "period_seconds": secs,
            "fails_open": spec.fails_open,
            "description": spec.describe,
        }));
    }
    if let Some(info) = doc.get_mut("info").and_then(Value::as_object_mut) {
        let description = info
            .get("description")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        info.insert("description".into(), Value::from(description + &text));
        info.insert("x-rate-limits".into(), Value::Array(list));
    }
}

/// The document as served: `spec` (paths from the routers) plus what every
/// operation shares, the answers of the middleware (body limit, media type,
/// rate limits, deadline) and the headers every response carries, written
/// once here rather than on every handler.
pub fn finish(spec: Spec) -> Value {
    let mut doc = serde_json::to_value(&spec).unwrap_or_else(|_| json!({}));
    describe_limits(&mut doc);
    let request_id = header(
        "Id of this request (the client's own when it sent one), also in the server's logs",
        json!({"type": "string", "minLength": 1}),
        true,
    );
    let int = json!({"type": "integer", "minimum": 0});
    let limit_headers = |required: bool| {
        [
            (
                "X-RateLimit-Limit",
                "Requests allowed per window of the limit with the least remaining",
            ),
            (
                "X-RateLimit-Remaining",
                "Requests that could be made right now without waiting",
            ),
            (
                "X-RateLimit-Reset",
                "Seconds until the limit is fully replenished",
            ),
        ]
        .map(|(name, d)| (name, header(d, int.clone(), required)))
    };
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return doc;
    };
    for (path, item) in paths.iter_mut() {
        let api = path.starts_with("/api/") && path != SPEC_PATH;
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for (method, op) in item.iter_mut() {
            if !matches!(method.as_str(), "get" | "post" | "put" | "patch" | "delete") {
                continue;
            }
            let has_body = op.get("requestBody").is_some();
            let has_query = op
                .get("parameters")
                .and_then(Value::as_array)
                .is_some_and(|ps| ps.iter().any(|p| p["in"] == "query"));
            let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut) else {
                continue;
            };
            let mut add = |status: &str, r: Value| {
                responses.entry(status.to_owned()).or_insert(r);
            };
            if has_body || has_query {
                add(
                    "400",
                    error_response("`invalid_request`: not JSON, or does not fit the schema"),
                );
            }
            if has_body {
                add(
                    "413",
                    error_response("`payload_too_large`: the body is over 64 KiB"),
                );
                add(
                    "415",
                    error_response(
                        "`unsupported_media_type`: Content-Type is not application/json",
                    ),
                );
            }
            if api {
                let mut throttled = error_response(
                    "`throttled`: a rate limit was hit; retry after `Retry-After` seconds",
                );
                throttled["headers"] = Value::Object(
                    limit_headers(true)
                        .into_iter()
                        .map(|(n, h)| (n.to_owned(), h))
                        .chain([(
                            "Retry-After".to_owned(),
                            header(
                                "Seconds until a retry can succeed",
                                json!({"type": "integer", "minimum": 1}),
                                true,
                            ),
                        )])
                        .collect(),
                );
                add("429", throttled);
            }
            if api {
                add(
                    "503",
                    error_response(
                        "`unavailable`: a backing service needed for this request is down, or the \
                         service is saturated (with `Retry-After`); for a write that was stored but \
                         is not yet visible everywhere, `details` is `{\"stored\": true}`",
                    ),
                );
            }
            for (status, response) in responses.iter_mut() {
                let Some(r) = response.as_object_mut() else {
                    continue;
                };
                let headers = r
                    .entry("headers")
                    .or_insert_with(|| Value::Object(Map::new()));
                let Some(headers) = headers.as_object_mut() else {
                    continue;
                };
                // A header a handler declares (`Set-Cookie` of a sign-in) is
                // one it always sends.
                for h in headers.values_mut() {
                    if let Some(h) = h.as_object_mut() {
                        h.entry("required").or_insert(Value::Bool(true));
                    }
                }
                headers
                    .entry("X-Request-Id")
                    .or_insert_with(|| request_id.clone());
                // Present on every /api/ answer but a 503 of a limiter that
                // could not decide: documented, required only on 429.
                if api && status != "503" {
                    for (n, h) in limit_headers(false) {
                        headers.entry(n).or_insert(h);
                    }
                }
            }
        }
    }
    doc
}
