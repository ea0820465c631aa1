//! Properties: listings of hosts. Deleted properties are kept (soft delete)
//! so that past bookings keep their record, and hidden from every lookup.

use serde::{Deserialize, Serialize};
use sqlx::{Database, Encode, QueryBuilder, Type};
use time::OffsetDateTime;

use super::Db;
use crate::domain::{Money, StayDates};
use crate::with_pool;

/// A property as the API shows it (`view_count` as stored; a detail shows
/// the live count `views` keeps instead).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Property {
    pub id: i64,
    pub host_id: i64,
    pub title: String,
    pub description: String,
    pub city: String,
    pub country: String,
    #[schema(value_type = String, pattern = "^[0-9]+\\.[0-9]{2}$", example = "85.50")]
    pub price_per_night: Money,
    pub max_guests: i32,
    pub is_featured: bool,
    #[schema(minimum = 0)]
    pub view_count: i64,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: OffsetDateTime,
}

#[derive(sqlx::FromRow)]
struct PropertyRow {
    id: i64,
    host_id: i64,
    title: String,
    description: String,
    city: String,
    country: String,
    price_cents: i64,
    max_guests: i32,
    is_featured: bool,
    view_count: i64,
    created_at: OffsetDateTime,
    updated_at: OffsetDateTime,
}

impl From<PropertyRow> for Property {
    fn from(r: PropertyRow) -> Self {
        Property {
            id: r.id,
            host_id: r.host_id,
            title: r.title,
            description: r.description,
            city: r.city,
            country: r.country,
            price_per_night: Money::from_cents(r.price_cents),
            max_guests: r.max_guests,
            is_featured: r.is_featured,
            view_count: r.view_count,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

const COLS: &str = "id, host_id, title, description, city, country, price_cents, max_guests, \
                    is_featured, view_count, created_at, updated_at";

/// Filters of the public list (all optional, combined with AND).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PropertyFilter {
    pub city: Option<String>,
    pub country: Option<String>,
    pub min_price: Option<Money>,
    pub max_price: Option<Money>,
    pub guests: Option<i32>,
    /// Free for this stay: no confirmed booking overlaps it.
    pub stay: Option<StayDates>,
}

/// The writable fields of a property, all set (create) or some (patch).
#[derive(Debug, Clone, Default)]
pub struct PropertyFields {
    pub title: Option<String>,
    pub description: Option<String>,
    pub city: Option<String>,
    pub country: Option<String>,
    pub price_per_night: Option<Money>,
    pub max_guests: Option<i32>,
    pub is_featured: Option<bool>,
}

/// A property to insert (seeder and importer set every column).
pub struct NewProperty {
    pub host_id: i64,
    pub title: String,
    pub description: String,
    pub city: String,
    pub country: String,
    pub price_per_night: Money,
    pub max_guests: i32,
    pub is_featured: bool,
    pub view_count: i64,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

/// Featured properties a host may have at once: the featured list is
/// shared by every visitor, so no host may fill it.
pub const HOST_FEATURED_MAX: i64 = 5;

/// Length of the featured list (the first by id): a bound on the size of
/// the response and of its cached entry whatever hosts do.
pub const FEATURED_LIST_MAX: i64 = 100;

/// The outcome of an update.
#[derive(Debug)]
pub enum Updated {
    Saved(Property),
    NotFound,
    /// It would make a sixth featured property of its host.
    FeaturedQuotaFull,
}

/// Why a delete did not happen.
#[derive(Debug, PartialEq, Eq)]
pub enum DeleteOutcome {
    Deleted,
    NotFound,
    /// A confirmed booking of it has not ended yet; nothing was deleted.
    HasActiveBookings,
}

/// Matches a list counts exactly; beyond it the count stops (API.md: an
/// exact count of a million matches would read a million rows).
pub const LIST_COUNT_CAP: i64 = 10_000;

/// Where a page of the list starts: an offset (page numbers, bounded by
/// the caller) or after an id (cursors: one index seek at any depth).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    Offset(i64),
    After(i64),
}

/// One page of the filtered list.
#[derive(Debug)]
pub struct ListPage {
    /// Matches, at most [`LIST_COUNT_CAP`].
    pub count: i64,
    /// More than [`LIST_COUNT_CAP`] match.
    pub capped: bool,
    pub results: Vec<Property>,
    /// Matches follow the last of `results`.
    pub more: bool,
}

/// Appends the `WHERE` clause of `f`: only the filters given, each a plain
/// condition on an indexed expression, so that the plan of a query (also a
/// PostgreSQL generic plan, made once per statement text) is the one for
/// its filters, never a catch-all for `$n IS NULL OR …`. The text of a
/// condition matches its index expression exactly (`lower(city)`), see
/// `docs/PERFORMANCE.md` for the plan each takes.
fn push_filter<DB: Database>(qb: &mut QueryBuilder<DB>, f: &PropertyFilter)
where
    for<'t> String: Encode<'t, DB> + Type<DB>,
    for<'t> i64: Encode<'t, DB> + Type<DB>,
    for<'t> i32: Encode<'t, DB> + Type<DB>,
    for<'t> time::Date: Encode<'t, DB> + Type<DB>,
{
    qb.push(" WHERE deleted_at IS NULL");
    if let Some(city) = &f.city {
        qb.push(" AND lower(city) = ").push_bind(city.clone());
    }
    if let Some(country) = &f.country {
        qb.push(" AND lower(country) = ").push_bind(country.clone());
    }
    if let Some(min) = f.min_price {
        qb.push(" AND price_cents >= ").push_bind(min.cents());
    }
    if let Some(max) = f.max_price {
        qb.push(" AND price_cents <= ").push_bind(max.cents());
    }
    if let Some(guests) = f.guests {
        qb.push(" AND max_guests >= ").push_bind(guests);
    }
    if let Some(stay) = f.stay {
        // The overlap test of the booking rules (half-open stays: a
        // check-out day is free for the next check-in), per property
        // through the partial index on confirmed bookings.
        qb.push(
            " AND NOT EXISTS (SELECT 1 FROM bookings b WHERE b.property_id = properties.id \
             AND b.status = 'confirmed' AND b.check_in < ",
        )
        .push_bind(stay.check_out())
        .push(" AND b.check_out > ")
        .push_bind(stay.check_in())
        .push(")");
    }
}

impl Db {
    /// One page of the filtered list, ordered by id, with the count of
    /// matches up to [`LIST_COUNT_CAP`]: the count reads at most one row
    /// more than the cap, the page at most its offset plus `limit + 1`
    /// rows (the extra one says whether more follow).
    pub async fn list_properties(
        &self,
        f: &PropertyFilter,
        at: Position,
        limit: u32,
    ) -> anyhow::Result<ListPage> {
        let (count, mut rows) = with_pool!(self, p => {
            let mut count_q = QueryBuilder::new("SELECT count(*) FROM (SELECT 1 FROM properties");
            push_filter(&mut count_q, f);
            count_q.push(" LIMIT ").push_bind(LIST_COUNT_CAP + 1).push(") AS m");
            let mut page_q = QueryBuilder::new(format!("SELECT {COLS} FROM properties"));
            push_filter(&mut page_q, f);
            if let Position::After(id) = at {
                page_q.push(" AND id > ").push_bind(id);
            }
            page_q.push(" ORDER BY id LIMIT ").push_bind(i64::from(limit) + 1);
            if let Position::Offset(offset) = at {
                page_q.push(" OFFSET ").push_bind(offset);
            }
            // Two statements on two connections at once: the answer waits
            // for the slower, not for both.
            tokio::try_join!(
                count_q.build_query_scalar::<i64>().fetch_one(p),
                page_q.build_query_as::<PropertyRow>().fetch_all(p),
            )?
        });
        let more = rows.len() > limit as usize;
        rows.truncate(limit as usize);
        Ok(ListPage {
            count: count.min(LIST_COUNT_CAP),
            capped: count > LIST_COUNT_CAP,
            results: rows.into_iter().map(Property::from).collect(),
            more,
        })
    }

    /// The first [`FEATURED_LIST_MAX`] featured properties by id.
    pub async fn featured_properties(&self) -> anyhow::Result<Vec<Property>> {
        let sql = format!(
            "SELECT {COLS} FROM properties WHERE is_featured AND deleted_at IS NULL
             ORDER BY id LIMIT $1"
        );
        let rows = with_pool!(self, p => sqlx::query_as::<_, PropertyRow>(sqlx::AssertSqlSafe(sql))
            .bind(FEATURED_LIST_MAX).fetch_all(p).await)?;
        Ok(rows.into_iter().map(Property::from).collect())
    }

    /// Up to `n` featured properties `guest_id` has no confirmed booking
    /// of: those in the cities of the guest's confirmed bookings first,
    /// then by id (the dashboard's recommendations). Two branches, each
    /// read in id order and stopped after `n` (the partial index of
    /// featured properties), then merged: ranking every featured property
    /// by its city took 157 ms at 1,000,000 properties on PostgreSQL, this
    /// 8 ms.
    pub async fn recommended_for(&self, guest_id: i64, n: i64) -> anyhow::Result<Vec<Property>> {
        let branch = |rank: u8, cities: &str| {
            format!(
                "SELECT * FROM (SELECT {COLS}, {rank} AS rank FROM properties q
                   WHERE is_featured AND deleted_at IS NULL AND city {cities} (SELECT city FROM booked)
                     AND NOT EXISTS (SELECT 1 FROM bookings b WHERE b.property_id = q.id
                       AND b.guest_id = $1 AND b.status = 'confirmed')
                   ORDER BY id LIMIT $2) branch{rank}"
            )
        };
        let sql = format!(
            "WITH booked AS (SELECT DISTINCT p.city FROM bookings b
               JOIN properties p ON p.id = b.property_id
               WHERE b.guest_id = $1 AND b.status = 'confirmed')
             SELECT {COLS} FROM ({} UNION ALL {}) r ORDER BY rank, id LIMIT $2",
            branch(0, "IN"),
            branch(1, "NOT IN"),
        );
        let rows = with_pool!(self, p => sqlx::query_as::<_, PropertyRow>(sqlx::AssertSqlSafe(sql.clone()))
            .bind(guest_id).bind(n).fetch_all(p).await)?;
        Ok(rows.into_iter().map(Property::from).collect())
    }

    /// A live property; `None` if unknown or soft-deleted.
    pub async fn property(&self, id: i64) -> anyhow::Result<Option<Property>> {
        let sql = format!("SELECT {COLS} FROM properties WHERE id = $1 AND deleted_at IS NULL");
        let row = with_pool!(self, p => sqlx::query_as::<_, PropertyRow>(sqlx::AssertSqlSafe(sql))
            .bind(id).fetch_optional(p).await)?;
        Ok(row.map(Property::from))
    }

    /// Inserts a property and returns it as stored, with its new id (the
    /// seeder and importer: no quota).
    pub async fn create_property(&self, n: &NewProperty) -> anyhow::Result<Property> {
        self.insert_property(n, None)
            .await?
            .ok_or_else(|| anyhow::anyhow!("insert returned no row"))
    }

    /// Inserts a host's property unless it is featured and the host already
    /// has [`HOST_FEATURED_MAX`] featured ones (`None` then).
    pub async fn create_host_property(&self, n: &NewProperty) -> anyhow::Result<Option<Property>> {
        self.insert_property(n, Some(HOST_FEATURED_MAX)).await
    }

    async fn insert_property(
        &self,
        n: &NewProperty,
        featured_max: Option<i64>,
    ) -> anyhow::Result<Option<Property>> {
        // The quota is checked by the insert itself; on PostgreSQL the
        // host's row is locked first, so two concurrent inserts of one host
        // cannot both see room for one more (SQLite has one writer).
        let sql = format!(
            "INSERT INTO properties (host_id, title, description, city, country, price_cents,
               max_guests, is_featured, view_count, created_at, updated_at)
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11
             WHERE NOT $8 OR $12 IS NULL OR (
               SELECT count(*) FROM properties
               WHERE host_id = $1 AND is_featured AND deleted_at IS NULL) < $12
             RETURNING {COLS}"
        );
        macro_rules! insert {
            ($q:expr) => {
                sqlx::query_as::<_, PropertyRow>(sqlx::AssertSqlSafe(sql))
                    .bind(n.host_id)
                    .bind(&n.title)
                    .bind(&n.description)
                    .bind(&n.city)
                    .bind(&n.country)
                    .bind(n.price_per_night.cents())
                    .bind(n.max_guests)
                    .bind(n.is_featured)
                    .bind(n.view_count)
                    .bind(n.created_at)
                    .bind(n.updated_at)
                    .bind(featured_max)
                    .fetch_optional($q)
                    .await?
            };
        }
        let row = match self {
            Db::Sqlite(p) => insert!(p),
            Db::Postgres(p) => {
                let mut tx = p.begin().await?;
                if n.is_featured && featured_max.is_some() {
                    sqlx::query("SELECT id FROM users WHERE id = $1 FOR UPDATE")
                        .bind(n.host_id)
                        .execute(&mut *tx)
                        .await?;
                }
                let row = insert!(&mut *tx);
                tx.commit().await?;
                row
            }
        };
        Ok(row.map(Property::from))
    }

    /// Applies the fields that are set, unless that makes the property
    /// featured while its host already has [`HOST_FEATURED_MAX`] featured
    /// ones (checked by the update itself, the host's row locked first on
    /// PostgreSQL as for an insert).
    pub async fn update_property(
        &self,
        id: i64,
        f: &PropertyFields,
        now: OffsetDateTime,
    ) -> anyhow::Result<Updated> {
        let sql = format!(
            "UPDATE properties SET
               title = COALESCE($2, title),
               description = COALESCE($3, description),
               city = COALESCE($4, city),
               country = COALESCE($5, country),
               price_cents = COALESCE($6, price_cents),
               max_guests = COALESCE($7, max_guests),
               is_featured = COALESCE($8, is_featured),
               updated_at = $9
             WHERE id = $1 AND deleted_at IS NULL
               AND (NOT COALESCE($8, FALSE) OR is_featured OR (
                 SELECT count(*) FROM properties q
                 WHERE q.host_id = properties.host_id AND q.is_featured
                   AND q.deleted_at IS NULL) < $10)
             RETURNING {COLS}"
        );
        macro_rules! update {
            ($q:expr) => {
                sqlx::query_as::<_, PropertyRow>(sqlx::AssertSqlSafe(sql))
                    .bind(id)
                    .bind(f.title.as_deref())
                    .bind(f.description.as_deref())
                    .bind(f.city.as_deref())
                    .bind(f.country.as_deref())
                    .bind(f.price_per_night.map(Money::cents))
                    .bind(f.max_guests)
                    .bind(f.is_featured)
                    .bind(now)
                    .bind(HOST_FEATURED_MAX)
                    .fetch_optional($q)
                    .await?
            };
        }
        let row = match self {
            Db::Sqlite(p) => update!(p),
            Db::Postgres(p) => {
                let mut tx = p.begin().await?;
                if f.is_featured == Some(true) {
                    sqlx::query(
                        "SELECT u.id FROM users u JOIN properties p ON p.host_id = u.id
                         WHERE p.id = $1 FOR UPDATE OF u",
                    )
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                }
                let row = update!(&mut *tx);
                tx.commit().await?;
                row
            }
        };
        Ok(match row {
            Some(row) => Updated::Saved(row.into()),
            None if f.is_featured == Some(true) && self.property(id).await?.is_some() => {
                Updated::FeaturedQuotaFull
            }
            None => Updated::NotFound,
        })
    }

    /// Soft-deletes a property unless a confirmed booking of it has not ended.
    pub async fn delete_property(
        &self,
        id: i64,
        today: time::Date,
        now: OffsetDateTime,
    ) -> anyhow::Result<DeleteOutcome> {
        const DELETE: &str = "UPDATE properties SET deleted_at = $2
             WHERE id = $1 AND deleted_at IS NULL AND NOT EXISTS (
               SELECT 1 FROM bookings
               WHERE property_id = $1 AND status = 'confirmed' AND check_out > $3)";
        let done = match self {
            // One writer at a time: the check and the update cannot race a booking.
            Db::Sqlite(p) => sqlx::query(DELETE)
                .bind(id)
                .bind(now)
                .bind(today)
                .execute(p)
                .await?
                .rows_affected(),
            // Lock the property first: bookings being inserted hold a share
            // lock on it, so once we have it every booking of it is committed,
            // and the next statement (a new snapshot) sees them all.
            Db::Postgres(p) => {
                let mut tx = p.begin().await?;
                sqlx::query("SELECT id FROM properties WHERE id = $1 FOR UPDATE")
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?;
                let n = sqlx::query(DELETE)
                    .bind(id)
                    .bind(now)
                    .bind(today)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                tx.commit().await?;
                n
            }
        };
        if done == 1 {
            return Ok(DeleteOutcome::Deleted);
        }
        Ok(if self.property(id).await?.is_some() {
            DeleteOutcome::HasActiveBookings
        } else {
            DeleteOutcome::NotFound
        })
    }

    /// Adds view-count deltas in one transaction, at most once per `flush_id`:
    /// a flush that is replayed after a crash adds nothing the second time.
    /// One set-based `UPDATE` whatever the number of deltas (PostgreSQL:
    /// two arrays `unnest`ed; SQLite: one JSON array read by `json_each`),
    /// so a chunk costs four statements (`BEGIN`, the flush id, the
    /// `UPDATE`, `COMMIT`), not one per property. Deltas of properties that
    /// are gone touch no row. Returns false when this flush was already
    /// applied.
    pub async fn apply_view_deltas(
        &self,
        flush_id: &str,
        deltas: &[(i64, i64)],
    ) -> anyhow::Result<bool> {
        const RECORD: &str =
            "INSERT INTO view_flushes (id, applied_at) VALUES ($1, $2) ON CONFLICT DO NOTHING";
        let now = super::now_ms();
        let fresh = match self {
            Db::Postgres(p) => {
                let mut tx = p.begin().await?;
                let fresh = sqlx::query(RECORD)
                    .bind(flush_id)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected()
                    == 1;
                if fresh && !deltas.is_empty() {
                    let (ids, views): (Vec<i64>, Vec<i64>) = deltas.iter().copied().unzip();
                    sqlx::query(
                        "UPDATE properties AS p SET view_count = p.view_count + d.n \
                         FROM unnest($1::int8[], $2::int8[]) AS d(id, n) WHERE p.id = d.id",
                    )
                    .bind(ids)
                    .bind(views)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                fresh
            }
            Db::Sqlite(p) => {
                let mut tx = p.begin().await?;
                let fresh = sqlx::query(RECORD)
                    .bind(flush_id)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected()
                    == 1;
                if fresh && !deltas.is_empty() {
                    sqlx::query(
                        "UPDATE properties SET view_count = view_count + d.n \
                         FROM (SELECT value ->> 0 AS id, value ->> 1 AS n FROM json_each($1)) AS d \
                         WHERE properties.id = d.id",
                    )
                    .bind(serde_json::to_string(deltas)?)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                fresh
            }
        };
        Ok(fresh)
    }

    /// Forgets the flush ids applied before `before_ms` (ms since the
    /// epoch); returns how many. Safe once no batch that old can still be
    /// retried (see `views::FLUSH_ID_KEEP`).
    pub async fn prune_view_flushes(&self, before_ms: i64) -> anyhow::Result<u64> {
        const SQL: &str = "DELETE FROM view_flushes WHERE applied_at < $1";
        Ok(with_pool!(self, p => sqlx::query(SQL)
            .bind(before_ms)
            .execute(p)
            .await?
            .rows_affected()))
    }

    /// The stored `view_count` of a property that exists.
    pub async fn view_count(&self, id: i64) -> anyhow::Result<Option<i64>> {
        const SQL: &str = "SELECT view_count FROM properties WHERE id = $1 AND deleted_at IS NULL";
        Ok(with_pool!(self, p => sqlx::query_scalar::<_, i64>(SQL)
            .bind(id)
            .fetch_optional(p)
            .await?))
    }

    /// What a shown view count is seeded from (see `views::store`): the
    /// stored `view_count` of a property that exists and which of
    /// `flush_ids` the database has applied, read in one snapshot (one
    /// transaction, repeatable read on PostgreSQL; a SQLite transaction
    /// reads one snapshot), so that each batch is either in the count or
    /// reported unapplied.
    pub async fn view_basis(
        &self,
        id: i64,
        flush_ids: &[String],
    ) -> anyhow::Result<Option<(i64, Vec<String>)>> {
        if flush_ids.is_empty() {
            return Ok(self.view_count(id).await?.map(|n| (n, Vec::new())));
        }
        const COUNT: &str =
            "SELECT view_count FROM properties WHERE id = $1 AND deleted_at IS NULL";
        let ids = serde_json::to_string(flush_ids)?;
        let basis = match self {
            Db::Postgres(p) => {
                let mut tx = p.begin().await?;
                sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                    .execute(&mut *tx)
                    .await?;
                let count = sqlx::query_scalar::<_, i64>(COUNT)
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?;
                let applied = sqlx::query_scalar::<_, String>(
                    "SELECT id FROM view_flushes \
                     WHERE id IN (SELECT jsonb_array_elements_text($1::jsonb))",
                )
                .bind(&ids)
                .fetch_all(&mut *tx)
                .await?;
                tx.commit().await?;
                count.map(|n| (n, applied))
            }
            Db::Sqlite(p) => {
                let mut tx = p.begin().await?;
                let count = sqlx::query_scalar::<_, i64>(COUNT)
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?;
                let applied = sqlx::query_scalar::<_, String>(
                    "SELECT id FROM view_flushes WHERE id IN (SELECT value FROM json_each($1))",
                )
                .bind(&ids)
                .fetch_all(&mut *tx)
                .await?;
                tx.commit().await?;
                count.map(|n| (n, applied))
            }
        };
        Ok(basis)
    }
}
