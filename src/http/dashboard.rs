//! The user dashboard: recent bookings, stats and recommendations, cached per
//! user for an hour and keyed by both the properties generation and the
//! user's own, so a booking change or a property change makes it stale.

use axum::extract::State;
use axum::response::Response;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::caching::{self, Audience, Conditional};
use super::extract::AuthUser;
use super::openapi::ErrorBody;
use crate::cache::Entry;
use crate::db::bookings::Booking;
use crate::db::properties::Property;
use crate::domain::Money;
use crate::error::ApiResult;

/// Recommendations a dashboard shows.
const RECOMMENDATIONS: i64 = 5;

/// Route of `/api/v1/dashboard` (signed-in users only).
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(dashboard))
}

/// Totals over the user's confirmed bookings; `total_spent` is a decimal string.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Stats {
    #[schema(minimum = 0)]
    total_bookings: i64,
    #[schema(minimum = 0)]
    upcoming_bookings: i64,
    #[schema(minimum = 0)]
    nights_booked: i64,
    #[schema(pattern = "^[0-9]+\\.[0-9]{2}$", example = "340.00")]
    total_spent: String,
}

/// Body of `GET /api/v1/dashboard`, cached whole: the 10 newest bookings, stats,
/// and up to 5 featured properties not yet booked, same cities first.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Dashboard {
    bookings: Vec<Booking>,
    stats: Stats,
    recommendations: Vec<Property>,
}

async fn compute(state: &AppState, user_id: i64) -> anyhow::Result<Dashboard> {
    let (_, bookings) = state.db.guest_bookings(user_id, 1, 10).await?;
    let stays = state.db.confirmed_stays(user_id).await?;
    let today = time::OffsetDateTime::now_utc().date();
    let mut spent = Money::default();
    for s in &stays {
        spent = spent
            .checked_add(Money::from_cents(s.total_cents))
            .ok_or_else(|| anyhow::anyhow!("total overflow"))?;
    }
    let stats = Stats {
        total_bookings: stays.len() as i64,
        upcoming_bookings: stays.iter().filter(|s| s.check_in >= today).count() as i64,
        nights_booked: stays
            .iter()
            .map(|s| (s.check_out - s.check_in).whole_days())
            .sum(),
        total_spent: spent.to_string(),
    };
    let recommendations = state.db.recommended_for(user_id, RECOMMENDATIONS).await?;
    Ok(Dashboard {
        bookings,
        stats,
        recommendations,
    })
}

/// The dashboard as stored: a hit sends the stored bytes (or a variant
/// compressed at fill time), never decoding and re-encoding the structs.
#[utoipa::path(get, path = "/api/v1/dashboard", tag = "dashboard",
    security(("sessionid" = [])),
    responses(
        (status = 200, description = "Recent bookings, stats and recommendations", body = Dashboard),
        (status = 401, description = "`not_authenticated`", body = ErrorBody),
    ))]
async fn dashboard(
    State(state): State<AppState>,
    headers: Conditional,
    AuthUser(user): AuthUser,
) -> ApiResult<Response> {
    let entry = state
        .cache
        .response(Entry::Dashboard(user.id), || async {
            Ok(Bytes::from(serde_json::to_vec(
                &compute(&state, user.id).await?,
            )?))
        })
        .await?;
    Ok(caching::respond(&headers, &entry, Audience::Private))
}
