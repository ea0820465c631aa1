//! Properties: the public list (whole response cached per normalized query,
//! see `list_query`),
//! featured list and detail (cache-aside), and the host's create, update
//! and delete, each of which invalidates every cached view before answering.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::caching::{self, Audience, Conditional};
use super::extract::{ApiJson, ApiQuery, AuthUser, IdPath, non_null};
use super::limits;
use super::list_query::ListQuery;
use super::openapi::ErrorBody;
use crate::cache::Entry;
use crate::cache::policy::{Place, Shown};
use crate::cache::response::CachedResponse;
use crate::db::properties::{
    DeleteOutcome, HOST_FEATURED_MAX, NewProperty, Property, PropertyFields, Updated,
};
use crate::domain::{MAX_PRICE_CENTS, Money, Role, check_text};
use crate::error::{ApiError, ApiResult, FieldErrors};
use crate::outbox::Fact;
use crate::ratelimit::Scope;
use crate::views;

/// Routes of `/api/v1/properties`: public reads, host writes, each with
/// its description.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(featured))
        .routes(routes!(detail, update, remove))
}

/// One page of a list, as `API.md` shapes it.
#[derive(Serialize, ToSchema)]
pub struct Page<T> {
    /// Items matching across all pages, not only this one.
    #[schema(minimum = 0)]
    pub count: i64,
    #[schema(minimum = 1)]
    pub page: u32,
    pub results: Vec<T>,
}

/// One page of the public property list, as `API.md` shapes it.
#[derive(Serialize, ToSchema)]
pub struct PropertyPage {
    /// Matches across all pages, exact up to 10000; beyond that 10000
    /// with `count_capped`.
    #[schema(minimum = 0, maximum = 10000)]
    pub count: i64,
    /// More than 10000 properties match: `count` stopped there.
    pub count_capped: bool,
    /// The page number (with a cursor: how many pages it came through).
    #[schema(minimum = 1)]
    pub page: u32,
    /// Send as `cursor` (with the same filters) for the next page; null
    /// on the last page.
    pub next_cursor: Option<String>,
    pub results: Vec<Property>,
}

/// The public list, filtered, ordered by id, cached whole per normalized query.
#[utoipa::path(get, path = "/api/v1/properties", tag = "properties",
    params(ListQuery),
    responses(
        (status = 200, description = "One page of properties", body = PropertyPage),
        (status = 400, description = "`invalid_request`: a parameter that does not fit, `page × page_size` over 10000 (use `cursor`), or a cursor of another query", body = ErrorBody),
        (status = 422, description = "`validation_failed`: `check_in`/`check_out` break the booking rules or come alone (`details` per field)", body = ErrorBody),
    ))]
async fn list(
    State(state): State<AppState>,
    headers: Conditional,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Response> {
    let q = q.normalize()?;
    let compute = || async {
        let found = state
            .db
            .list_properties(&q.filter, q.position, q.page_size)
            .await?;
        let next_cursor = match found.results.last() {
            Some(last) if found.more => Some(q.next_cursor(last.id)),
            _ => None,
        };
        let body = PropertyPage {
            count: found.count,
            count_capped: found.capped,
            page: q.page,
            next_cursor,
            results: found.results,
        };
        Ok(Bytes::from(serde_json::to_vec(&body)?))
    };
    let query = &q.canonical;
    let place = Place::of(q.filter.city.as_deref(), q.filter.country.as_deref());
    let entry = if q.has_dates() {
        Entry::DateSearch { query, place }
    } else {
        Entry::PropertyList { query, place }
    };
    let entry = state.cache.response(entry, compute).await?;
    Ok(caching::respond(&headers, &entry, Audience::Public))
}

/// The featured list as stored: tag and compressed variants made once at
/// fill time.
async fn featured_entry(state: &AppState) -> anyhow::Result<CachedResponse> {
    let db = state.db.clone();
    state
        .cache
        .response(Entry::Featured, || async move {
            Ok(Bytes::from(serde_json::to_vec(
                &db.featured_properties().await?,
            )?))
        })
        .await
}

/// The featured list: a hit sends the stored bytes, never decoding and
/// re-encoding hundreds of properties, nor decompressing them.
#[utoipa::path(get, path = "/api/v1/properties/featured", tag = "properties",
    responses(
        (status = 200, description = "The featured properties", body = Vec<Property>),
    ))]
async fn featured(State(state): State<AppState>, headers: Conditional) -> ApiResult<Response> {
    let entry = featured_entry(&state).await?;
    Ok(caching::respond(&headers, &entry, Audience::Public))
}

/// A detail lookup that found no property: an error, so that nothing is
/// stored for it (ids that do not exist are for anyone to make up: a cached
/// answer for each would be a key per id) while callers waiting on the same
/// lookup still share it.
#[derive(Debug, thiserror::Error)]
#[error("no such property")]
struct NoSuchProperty;

/// The stored detail of `id`: the property's JSON without its view count
/// (see `views::stored_detail`); `None` for no such property.
async fn cached_property(state: &AppState, id: i64) -> anyhow::Result<Option<Bytes>> {
    let db = state.db.clone();
    let entry = state
        .cache
        .response(Entry::PropertyDetail(id), || async move {
            match db.property(id).await? {
                Some(p) => views::stored_detail(&p),
                None => Err(NoSuchProperty.into()),
            }
        })
        .await;
    match entry {
        Ok(entry) => Ok(Some(entry.identity)),
        Err(e) if e.chain().any(|c| c.is::<NoSuchProperty>()) => Ok(None),
        Err(e) => Err(e),
    }
}

/// One property; counts one view, and shows stored plus not yet flushed views.
#[utoipa::path(get, path = "/api/v1/properties/{id}", tag = "properties",
    params(("id" = i64, Path, minimum = 1, description = "Property id")),
    responses(
        (status = 200, description = "The property; this call counted one view", body = Property),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ))]
async fn detail(
    State(state): State<AppState>,
    headers: Conditional,
    IdPath(id): IdPath,
) -> ApiResult<Response> {
    // The views module counts the view (only of a property that exists)
    // and joins the live count to the stored detail.
    let live = state
        .views
        .detail(id, cached_property(&state, id))
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(caching::respond(&headers, &live, Audience::Public))
}

/// Body of `POST /api/v1/properties`: every field but `is_featured` is
/// required, so a missing one is a 400 (it does not fit the schema).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewPropertyBody {
    #[schema(min_length = 1, max_length = 200)]
    title: String,
    #[schema(max_length = 5000)]
    description: String,
    #[schema(min_length = 1, max_length = 100)]
    city: String,
    #[schema(min_length = 1, max_length = 100)]
    country: String,
    /// 0.01 to 100000.00, a decimal string.
    #[schema(pattern = "^[0-9]{1,12}\\.[0-9]{2}$", example = "85.50")]
    price_per_night: String,
    #[schema(minimum = 1, maximum = 50)]
    max_guests: i32,
    #[serde(default)]
    #[schema(default = false)]
    is_featured: bool,
}

/// Body of `PATCH /api/v1/properties/{id}`: any subset of the writable
/// fields. An absent field is left as it is; `null` is a wrong type (400),
/// never "no change", because no field of a property is nullable.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct PropertyBody {
    #[serde(default, deserialize_with = "non_null")]
    #[schema(nullable = false, min_length = 1, max_length = 200)]
    title: Option<String>,
    #[serde(default, deserialize_with = "non_null")]
    #[schema(nullable = false, max_length = 5000)]
    description: Option<String>,
    #[serde(default, deserialize_with = "non_null")]
    #[schema(nullable = false, min_length = 1, max_length = 100)]
    city: Option<String>,
    #[serde(default, deserialize_with = "non_null")]
    #[schema(nullable = false, min_length = 1, max_length = 100)]
    country: Option<String>,
    /// 0.01 to 100000.00, a decimal string.
    #[serde(default, deserialize_with = "non_null")]
    #[schema(
        nullable = false,
        pattern = "^[0-9]{1,12}\\.[0-9]{2}$",
        example = "85.50"
    )]
    price_per_night: Option<String>,
    #[serde(default, deserialize_with = "non_null")]
    #[schema(nullable = false, minimum = 1, maximum = 50)]
    max_guests: Option<i32>,
    #[serde(default, deserialize_with = "non_null")]
    #[schema(nullable = false)]
    is_featured: Option<bool>,
}

impl From<NewPropertyBody> for PropertyBody {
    fn from(b: NewPropertyBody) -> Self {
        PropertyBody {
            title: Some(b.title),
            description: Some(b.description),
            city: Some(b.city),
            country: Some(b.country),
            price_per_night: Some(b.price_per_night),
            max_guests: Some(b.max_guests),
            is_featured: Some(b.is_featured),
        }
    }
}

impl PropertyBody {
    /// Validates the fields present; with `require_all`, the required ones
    /// must be present too (create).
    fn validate(self, require_all: bool) -> Result<PropertyFields, ApiError> {
        let mut errors = FieldErrors::new();
        let mut text = |name: &str, v: Option<String>, min: usize, max: usize| -> Option<String> {
            match v {
                None if require_all && min > 0 => {
                    errors.insert(name.into(), "is required".into());
                    None
                }
                None => None,
                Some(s) => {
                    let s = s.trim().to_owned();
                    match check_text(&s, min, max) {
                        Ok(()) => Some(s),
                        Err(m) => {
                            errors.insert(name.into(), m);
                            None
                        }
                    }
                }
            }
        };
        let title = text("title", self.title, 1, 200);
        let description = text("description", self.description, 0, 5000);
        let city = text("city", self.city, 1, 100);
        let country = text("country", self.country, 1, 100);
        let price_per_night = match self.price_per_night {
            None if require_all => {
                errors.insert("price_per_night".into(), "is required".into());
                None
            }
            None => None,
            Some(s) => match Money::parse(&s) {
                Ok(m) if (1..=MAX_PRICE_CENTS).contains(&m.cents()) => Some(m),
                Ok(_) => {
                    errors.insert(
                        "price_per_night".into(),
                        "must be between 0.01 and 100000.00".into(),
                    );
                    None
                }
                Err(m) => {
                    errors.insert("price_per_night".into(), m.into());
                    None
                }
            },
        };
        let max_guests = match self.max_guests {
            None if require_all => {
                errors.insert("max_guests".into(), "is required".into());
                None
            }
            Some(n) if !(1..=50).contains(&n) => {
                errors.insert("max_guests".into(), "must be between 1 and 50".into());
                None
            }
            other => other,
        };
        if !errors.is_empty() {
            return Err(ApiError::Validation(errors));
        }
        Ok(PropertyFields {
            title,
            description: description.or_else(|| require_all.then(String::new)),
            city,
            country,
            price_per_night,
            max_guests,
            is_featured: self.is_featured.or(require_all.then_some(false)),
        })
    }
}

/// A new listing of the signed-in host.
#[utoipa::path(post, path = "/api/v1/properties", tag = "properties",
    params(("Idempotency-Key" = Option<String>, Header, description = "1 to 255 printable ASCII characters: a retry with the same key and body within 24 hours gets the first answer again (`Idempotent-Replayed: true`) and changes nothing; another body is 422, a retry while the first runs 409")),
    request_body = NewPropertyBody,
    security(("sessionid" = [])),
    responses(
        (status = 201, description = "The new property", body = Property),
        (status = 401, description = "`not_authenticated`", body = ErrorBody),
        (status = 409, description = "`conflict`: a request with this `Idempotency-Key` is still being processed", body = ErrorBody),
        (status = 403, description = "`forbidden`: only hosts list properties", body = ErrorBody),
        (status = 422, description = "`validation_failed`: a value breaks a rule (`details` per field)", body = ErrorBody),
    ))]
async fn create(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiJson(body): ApiJson<NewPropertyBody>,
) -> ApiResult<Response> {
    if user.role != Role::Host {
        return Err(ApiError::Forbidden);
    }
    let decision = limits::enforce(&state, &[Scope::PropertyCreate(user.id)]).await?;
    let f = PropertyBody::from(body).validate(true)?;
    let now = OffsetDateTime::now_utc();
    let (Some(title), Some(description), Some(city), Some(country), Some(price), Some(max_guests)) = (
        f.title,
        f.description,
        f.city,
        f.country,
        f.price_per_night,
        f.max_guests,
    ) else {
        return Err(ApiError::InvalidRequest("missing fields".into()));
    };
    let property = state
        .db
        .create_host_property(&NewProperty {
            host_id: user.id,
            title,
            description,
            city,
            country,
            price_per_night: price,
            max_guests,
            is_featured: f.is_featured.unwrap_or(false),
            view_count: 0,
            created_at: now,
            updated_at: now,
        })
        .await?
        .ok_or_else(featured_quota_full)?;
    state
        .outbox
        .settle(&[Fact::PropertyChanged {
            id: property.id,
            before: None,
            after: Some(shown(&property)),
        }])
        .await?;
    Ok(limits::noted(
        (StatusCode::CREATED, Json(property)).into_response(),
        decision,
    ))
}

/// The 422 of a sixth featured property of one host.
fn featured_quota_full() -> ApiError {
    ApiError::field(
        "is_featured",
        format!("a host may have at most {HOST_FEATURED_MAX} featured properties"),
    )
}

/// Where a property is shown (what its change makes stale).
fn shown(p: &Property) -> Shown {
    Shown::new(&p.city, &p.country, p.is_featured)
}

/// Loads a live property and checks that `user` is its host.
async fn owned(state: &AppState, id: i64, user_id: i64) -> ApiResult<Property> {
    let p = state.db.property(id).await?.ok_or(ApiError::NotFound)?;
    if p.host_id != user_id {
        return Err(ApiError::Forbidden);
    }
    Ok(p)
}

/// Changes any subset of the writable fields (the owning host only).
#[utoipa::path(patch, path = "/api/v1/properties/{id}", tag = "properties",
    params(("id" = i64, Path, minimum = 1, description = "Property id")),
    request_body = PropertyBody,
    security(("sessionid" = [])),
    responses(
        (status = 200, description = "The property as changed", body = Property),
        (status = 401, description = "`not_authenticated`", body = ErrorBody),
        (status = 403, description = "`forbidden`: not the property's host", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 422, description = "`validation_failed`: a value breaks a rule (`details` per field)", body = ErrorBody),
    ))]
async fn update(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    IdPath(id): IdPath,
    ApiJson(body): ApiJson<PropertyBody>,
) -> ApiResult<Json<Property>> {
    let before = owned(&state, id, user.id).await?;
    let fields = body.validate(false)?;
    let updated = match state
        .db
        .update_property(id, &fields, OffsetDateTime::now_utc())
        .await?
    {
        Updated::Saved(p) => p,
        Updated::NotFound => return Err(ApiError::NotFound),
        Updated::FeaturedQuotaFull => return Err(featured_quota_full()),
    };
    state
        .outbox
        .settle(&[Fact::PropertyChanged {
            id,
            before: Some(shown(&before)),
            after: Some(shown(&updated)),
        }])
        .await?;
    let view_count = state.views.shown(id).await?.unwrap_or(updated.view_count);
    Ok(Json(Property {
        view_count,
        ..updated
    }))
}

/// Removes a listing (the owning host only); past bookings keep their record.
#[utoipa::path(delete, path = "/api/v1/properties/{id}", tag = "properties",
    params(("id" = i64, Path, minimum = 1, description = "Property id")),
    security(("sessionid" = [])),
    responses(
        (status = 204, description = "Gone from every listing and lookup"),
        (status = 401, description = "`not_authenticated`", body = ErrorBody),
        (status = 403, description = "`forbidden`: not the property's host", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`conflict`: confirmed bookings that have not ended", body = ErrorBody),
    ))]
async fn remove(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    IdPath(id): IdPath,
) -> ApiResult<StatusCode> {
    let before = owned(&state, id, user.id).await?;
    let now = OffsetDateTime::now_utc();
    match state.db.delete_property(id, now.date(), now).await? {
        DeleteOutcome::Deleted => {
            state
                .outbox
                .settle(&[Fact::PropertyChanged {
                    id,
                    before: Some(shown(&before)),
                    after: None,
                }])
                .await?;
            state.views.forget(id).await;
            Ok(StatusCode::NO_CONTENT)
        }
        DeleteOutcome::NotFound => Err(ApiError::NotFound),
        DeleteOutcome::HasActiveBookings => Err(ApiError::Conflict(
            "the property has confirmed bookings that have not ended",
        )),
    }
}
