//! Bookings: stays of guests. Two confirmed bookings of one property never
//! overlap: the database refuses the second (see the migrations).

use serde::{Deserialize, Serialize};
use time::{Date, OffsetDateTime};

use super::{Db, DbKind, is_deadlock, is_overlap};
use crate::domain::{BookingStatus, Money};
use crate::with_pool;

/// How often a booking insert aborted by a deadlock is tried in all.
const DEADLOCK_RETRIES: u32 = 3;

/// A booking as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Booking {
    pub id: i64,
    pub property_id: i64,
    pub guest_id: i64,
    #[schema(value_type = String, format = Date)]
    pub check_in: Date,
    #[schema(value_type = String, format = Date)]
    pub check_out: Date,
    pub guests: i32,
    #[schema(value_type = String, pattern = "^[0-9]+\\.[0-9]{2}$", example = "340.00")]
    pub total_price: Money,
    pub status: BookingStatus,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
}

#[derive(sqlx::FromRow)]
struct BookingRow {
    id: i64,
    property_id: i64,
    guest_id: i64,
    check_in: Date,
    check_out: Date,
    guests: i32,
    total_cents: i64,
    status: String,
    created_at: OffsetDateTime,
}

impl From<BookingRow> for Booking {
    fn from(r: BookingRow) -> Self {
        Booking {
            id: r.id,
            property_id: r.property_id,
            guest_id: r.guest_id,
            check_in: r.check_in,
            check_out: r.check_out,
            guests: r.guests,
            total_price: Money::from_cents(r.total_cents),
            status: BookingStatus::from_db(&r.status),
            created_at: r.created_at,
        }
    }
}

const COLS: &str =
    "id, property_id, guest_id, check_in, check_out, guests, total_cents, status, created_at";

/// A booking to insert. Its total is the property's price per night, as
/// stored when the row is inserted, times the nights.
#[derive(Debug, Clone)]
pub struct NewBooking {
    pub property_id: i64,
    pub guest_id: i64,
    pub check_in: Date,
    pub check_out: Date,
    pub guests: i32,
    pub status: BookingStatus,
    pub created_at: OffsetDateTime,
}

/// Why a booking was not created.
#[derive(Debug, PartialEq, Eq)]
pub enum BookingRefused {
    /// No live property takes it: the property does not exist (or was
    /// deleted), it is the guest's own, or it takes fewer guests.
    NotBookable,
    /// The dates overlap a confirmed booking of that property.
    Overlap,
}

/// A confirmed booking with the city of its property, for the dashboard.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StayRow {
    pub property_id: i64,
    pub city: String,
    pub check_in: Date,
    pub check_out: Date,
    pub total_cents: i64,
}

impl Db {
    /// Inserts a booking in one statement (one transaction) if the property
    /// is live, not the guest's own and takes `guests`; the database refuses
    /// it if it overlaps another confirmed booking. The caller finds out
    /// which rule a [`BookingRefused::NotBookable`] broke.
    pub async fn create_booking(
        &self,
        b: &NewBooking,
    ) -> anyhow::Result<Result<Booking, BookingRefused>> {
        // On PostgreSQL the property row is share-locked by the insert, so a
        // concurrent delete (which locks it for update) either waits for this
        // booking and then sees it, or wins and this insert finds no live
        // property. SQLite runs one writer at a time: no lock needed.
        let lock = match self.kind() {
            DbKind::Postgres => "FOR SHARE",
            DbKind::Sqlite => "",
        };
        let sql = format!(
            "INSERT INTO bookings (property_id, guest_id, check_in, check_out, guests,
               total_cents, status, created_at)
             SELECT id, $2, $3, $4, $5, price_cents * $6, $7, $8 FROM properties
             WHERE id = $1 AND deleted_at IS NULL AND host_id <> $2
               AND $5 BETWEEN 1 AND max_guests {lock}
             RETURNING {COLS}"
        );
        let nights = (b.check_out - b.check_in).whole_days();
        // A deadlock between overlapping inserts aborts one of them; it is
        // run again (it then sees the winner's booking, or none if that one
        // rolled back), so a client never gets a 500 for a race it lost.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let res = with_pool!(self, p => sqlx::query_as::<_, BookingRow>(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(b.property_id).bind(b.guest_id).bind(b.check_in).bind(b.check_out)
                .bind(b.guests).bind(nights).bind(b.status.as_str()).bind(b.created_at)
                .fetch_optional(p).await);
            return match res {
                Ok(Some(row)) => Ok(Ok(row.into())),
                Ok(None) => Ok(Err(BookingRefused::NotBookable)),
                Err(e) if is_overlap(&e) => Ok(Err(BookingRefused::Overlap)),
                Err(e) if is_deadlock(&e) && attempt < DEADLOCK_RETRIES => continue,
                Err(e) => Err(e.into()),
            };
        }
    }

    /// Any booking by id, confirmed or cancelled; `None` if there is none.
    pub async fn booking(&self, id: i64) -> anyhow::Result<Option<Booking>> {
        let sql = format!("SELECT {COLS} FROM bookings WHERE id = $1");
        let row = with_pool!(self, p => sqlx::query_as::<_, BookingRow>(sqlx::AssertSqlSafe(sql))
            .bind(id).fetch_optional(p).await)?;
        Ok(row.map(Booking::from))
    }

    /// Whether the confirmation email of a booking has gone out.
    pub async fn confirmation_sent(&self, id: i64) -> anyhow::Result<bool> {
        let sent: Option<bool> = with_pool!(self, p => sqlx::query_scalar(
            "SELECT confirmation_sent_at IS NOT NULL FROM bookings WHERE id = $1")
            .bind(id).fetch_optional(p).await)?;
        Ok(sent.unwrap_or(false))
    }

    /// Records that the confirmation email of a booking went out.
    pub async fn mark_confirmation_sent(&self, id: i64, at: OffsetDateTime) -> anyhow::Result<()> {
        with_pool!(self, p => sqlx::query(
            "UPDATE bookings SET confirmation_sent_at = $2 WHERE id = $1")
            .bind(id).bind(at).execute(p).await.map(|r| r.rows_affected()))?;
        Ok(())
    }

    /// The host of a property, deleted or not (for cancel rights).
    pub async fn property_host(&self, property_id: i64) -> anyhow::Result<Option<i64>> {
        Ok(with_pool!(self, p => sqlx::query_scalar::<_, i64>(
            "SELECT host_id FROM properties WHERE id = $1")
            .bind(property_id).fetch_optional(p).await)?)
    }

    /// Cancels a confirmed booking; `None` if it was not confirmed.
    pub async fn cancel_booking(&self, id: i64) -> anyhow::Result<Option<Booking>> {
        let sql = format!(
            "UPDATE bookings SET status = 'cancelled' WHERE id = $1 AND status = 'confirmed'
             RETURNING {COLS}"
        );
        let row = with_pool!(self, p => sqlx::query_as::<_, BookingRow>(sqlx::AssertSqlSafe(sql))
            .bind(id).fetch_optional(p).await)?;
        Ok(row.map(Booking::from))
    }

    /// One page of a guest's bookings, newest first, and their count.
    pub async fn guest_bookings(
        &self,
        guest_id: i64,
        page: u32,
        page_size: u32,
    ) -> anyhow::Result<(i64, Vec<Booking>)> {
        let sql = format!(
            "SELECT {COLS} FROM bookings WHERE guest_id = $1
             ORDER BY created_at DESC, id DESC LIMIT $2 OFFSET $3"
        );
        let offset = i64::from(page.saturating_sub(1)) * i64::from(page_size);
        let (count, rows) = with_pool!(self, p => {
            let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM bookings WHERE guest_id = $1")
                .bind(guest_id).fetch_one(p).await?;
            let rows = sqlx::query_as::<_, BookingRow>(sqlx::AssertSqlSafe(sql))
                .bind(guest_id).bind(i64::from(page_size)).bind(offset)
                .fetch_all(p).await?;
            (count, rows)
        });
        Ok((count, rows.into_iter().map(Booking::from).collect()))
    }

    /// Every confirmed booking of a guest with its property's city.
    pub async fn confirmed_stays(&self, guest_id: i64) -> anyhow::Result<Vec<StayRow>> {
        Ok(with_pool!(self, p => sqlx::query_as::<_, StayRow>(
            "SELECT b.property_id, p.city, b.check_in, b.check_out, b.total_cents
             FROM bookings b JOIN properties p ON p.id = b.property_id
             WHERE b.guest_id = $1 AND b.status = 'confirmed'")
            .bind(guest_id).fetch_all(p).await)?)
    }
}
