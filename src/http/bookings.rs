//! Bookings: create (rate limited per user; overlap refused by the database
//! with 409), list the caller's, cancel.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::properties::Page;
use time::OffsetDateTime;

use super::AppState;
use super::extract::{ApiJson, ApiQuery, AuthUser, IdPath};
use super::limits;
use super::openapi::ErrorBody;
use crate::db::bookings::{Booking, BookingRefused, NewBooking};
use crate::db::properties::Property;
use crate::db::users::User;
use crate::domain::{BookingStatus, StayDates};
use crate::error::{ApiError, ApiResult, FieldErrors};
use crate::outbox::Fact;
use crate::ratelimit::Scope;

/// Routes of `/api/v1/bookings`: list, create, cancel, each with its
/// description.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(cancel))
}

/// Paging of the caller's bookings.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct PageQuery {
    /// Page number, from 1.
    #[param(minimum = 1, maximum = 1000000, nullable = false)]
    page: Option<u32>,
    /// Results per page (default 20).
    #[param(minimum = 1, maximum = 100, nullable = false)]
    page_size: Option<u32>,
}

/// The caller's bookings as guest, newest first.
#[utoipa::path(get, path = "/api/v1/bookings", tag = "bookings",
    params(PageQuery),
    security(("sessionid" = [])),
    responses(
        (status = 200, description = "One page of bookings", body = Page<Booking>),
        (status = 401, description = "`not_authenticated`", body = ErrorBody),
    ))]
async fn list(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Json<Page<Booking>>> {
    let page = q.page.unwrap_or(1);
    let page_size = q.page_size.unwrap_or(20);
    if page == 0 || page > 1_000_000 || !(1..=100).contains(&page_size) {
        return Err(ApiError::InvalidRequest(
            "page must be 1 or more and page_size between 1 and 100".into(),
        ));
    }
    let (count, results) = state.db.guest_bookings(user.id, page, page_size).await?;
    Ok(Json(Page {
        count,
        page,
        results,
    }))
}

/// Body of `POST /api/v1/bookings`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct BookingBody {
    #[schema(minimum = 1)]
    property_id: i64,
    /// Today or later.
    #[schema(format = Date, example = "2030-01-10")]
    check_in: String,
    /// After `check_in`, at most 90 nights later.
    #[schema(format = Date, example = "2030-01-14")]
    check_out: String,
    /// 1 to the property's `max_guests`.
    #[schema(minimum = 1, maximum = 50)]
    guests: i32,
}

/// Books a stay; at most 5 attempts per user per hour.
#[utoipa::path(post, path = "/api/v1/bookings", tag = "bookings",
    params(("Idempotency-Key" = Option<String>, Header, description = "1 to 255 printable ASCII characters: a retry with the same key and body within 24 hours gets the first answer again (`Idempotent-Replayed: true`) and changes nothing; another body is 422, a retry while the first runs 409")),
    request_body = BookingBody,
    security(("sessionid" = [])),
    responses(
        (status = 201, description = "The booking, confirmed; a confirmation email follows", body = Booking),
        (status = 401, description = "`not_authenticated`", body = ErrorBody),
        (status = 409, description = "`conflict`: the dates overlap a confirmed booking", body = ErrorBody),
        (status = 422, description = "`validation_failed`: dates, guests, or the property (`details` per field)", body = ErrorBody),
    ))]
async fn create(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiJson(body): ApiJson<BookingBody>,
) -> ApiResult<Response> {
    // Every attempt counts, failed ones included.
    let decision = limits::enforce(&state, &[Scope::Booking(user.id)]).await?;
    // The middleware shows whichever limit has the least remaining.
    Ok(limits::noted(
        create_checked(&state, &user, body).await.into_response(),
        decision,
    ))
}

/// How often a booking refused as not bookable is tried again when the
/// property, looked up afterwards, breaks no rule (it changed in between).
const NOT_BOOKABLE_RETRIES: u32 = 2;

/// The rules a property breaks for this booking, into `errors`.
fn property_errors(
    property: Option<&Property>,
    user: &User,
    guests: i32,
    errors: &mut FieldErrors,
) {
    match property {
        None => drop(errors.insert("property_id".into(), "no such property".into())),
        Some(p) if p.host_id == user.id => drop(errors.insert(
            "property_id".into(),
            "hosts cannot book their own property".into(),
        )),
        Some(p) if !(1..=p.max_guests).contains(&guests) => drop(errors.insert(
            "guests".into(),
            format!("must be between 1 and {}", p.max_guests),
        )),
        _ => {}
    }
}

/// Validates and creates a booking once the attempt has been counted.
///
/// One database statement when the booking is valid: the insert itself
/// checks the property's rules (live, not the guest's own, enough room) and
/// prices the stay; only a refused or invalid request reads the property to
/// say which rule it broke.
async fn create_checked(
    state: &AppState,
    user: &User,
    body: BookingBody,
) -> ApiResult<(StatusCode, Json<Booking>)> {
    let mut errors = FieldErrors::new();
    let today = OffsetDateTime::now_utc().date();
    let stay = match StayDates::parse(&body.check_in, &body.check_out, today) {
        Ok(stay) => stay,
        Err(broken) => {
            errors.extend(broken.into_iter().map(|(f, m)| (f.to_owned(), m)));
            // The answer names every field at fault, the property's too.
            let property = state.db.property(body.property_id).await?;
            property_errors(property.as_ref(), user, body.guests, &mut errors);
            return Err(ApiError::Validation(errors));
        }
    };
    let (check_in, check_out) = (stay.check_in(), stay.check_out());
    let new = NewBooking {
        property_id: body.property_id,
        guest_id: user.id,
        check_in,
        check_out,
        guests: body.guests,
        status: BookingStatus::Confirmed,
        created_at: OffsetDateTime::now_utc(),
    };
    let mut attempt = 0;
    let booking = loop {
        attempt += 1;
        match state.db.create_booking(&new).await? {
            Ok(b) => break b,
            Err(BookingRefused::Overlap) => {
                return Err(ApiError::Conflict(
                    "these dates overlap an existing booking",
                ));
            }
            Err(BookingRefused::NotBookable) => {
                let property = state.db.property(body.property_id).await?;
                property_errors(property.as_ref(), user, body.guests, &mut errors);
                if !errors.is_empty() {
                    return Err(ApiError::Validation(errors));
                }
                if attempt > NOT_BOOKABLE_RETRIES {
                    return Err(anyhow::anyhow!(
                        "booking of property {} refused, yet it breaks no rule",
                        body.property_id
                    )
                    .into());
                }
            }
        }
    };
    // The guest's dashboard before the answer; the confirmation job now
    // if the queue takes it, else by the outbox's relay once it does.
    state
        .outbox
        .settle(&[
            Fact::BookingChanged { guest_id: user.id },
            Fact::BookingCreated(booking.id),
        ])
        .await?;
    Ok((StatusCode::CREATED, Json(booking)))
}

/// Cancels a booking (its guest or the property's host).
#[utoipa::path(post, path = "/api/v1/bookings/{id}/cancel", tag = "bookings",
    params(("id" = i64, Path, minimum = 1, description = "Booking id")),
    security(("sessionid" = [])),
    responses(
        (status = 200, description = "The booking, cancelled", body = Booking),
        (status = 401, description = "`not_authenticated`", body = ErrorBody),
        (status = 403, description = "`forbidden`: neither its guest nor the host", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`conflict`: already cancelled", body = ErrorBody),
    ))]
async fn cancel(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    IdPath(id): IdPath,
) -> ApiResult<Json<Booking>> {
    let booking = state.db.booking(id).await?.ok_or(ApiError::NotFound)?;
    if booking.guest_id != user.id {
        let host = state.db.property_host(booking.property_id).await?;
        if host != Some(user.id) {
            return Err(ApiError::Forbidden);
        }
    }
    let cancelled = state
        .db
        .cancel_booking(id)
        .await?
        .ok_or(ApiError::Conflict("the booking is already cancelled"))?;
    state
        .outbox
        .settle(&[Fact::BookingChanged {
            guest_id: cancelled.guest_id,
        }])
        .await?;
    Ok(Json(cancelled))
}
