//! Bulk loading for the seeder and the importer: rows with explicit ids,
//! written by multi-row `INSERT … VALUES (…), (…)` statements of at most
//! [`CHUNK_ROWS`] rows inside one transaction ([`BulkTx`]), so a load is
//! fast (no round trip per row) and all-or-nothing.
//!
//! On PostgreSQL, [`BulkTx::commit`] moves the id sequences past the
//! inserted ids so that rows created later get ids above them. SQLite needs
//! nothing: an `AUTOINCREMENT` table records the largest id ever inserted,
//! explicit ones included.

use sqlx::{Postgres, QueryBuilder, Sqlite, Transaction};
use time::OffsetDateTime;

use super::Db;
use super::bookings::Booking;
use crate::domain::{Money, Role};
use crate::with_pool;

/// Rows per `INSERT` statement: 500 rows of at most 13 columns stay far
/// below the bind limits (SQLite 32766, PostgreSQL 65535).
pub const CHUNK_ROWS: usize = 500;

/// A user with its id.
#[derive(Debug, Clone, PartialEq)]
pub struct UserRecord {
    pub id: i64,
    pub email: String,
    pub password_hash: String,
    pub full_name: String,
    pub role: Role,
    pub created_at: OffsetDateTime,
}

/// A property with its id.
#[derive(Debug, Clone, PartialEq)]
pub struct PropertyRecord {
    pub id: i64,
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
    pub deleted_at: Option<OffsetDateTime>,
}

/// A booking with its id: exactly the API's [`Booking`], so seeded and
/// imported rows are the same type the service reads back.
pub type BookingRecord = Booking;

/// Row counts of the data tables.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableCounts {
    pub users: i64,
    pub properties: i64,
    pub bookings: i64,
}

impl TableCounts {
    /// True when no user, property or booking exists: seed and import refuse otherwise.
    pub fn is_empty(&self) -> bool {
        self.users == 0 && self.properties == 0 && self.bookings == 0
    }
}

/// An open bulk-load transaction. Dropping it without [`BulkTx::commit`]
/// rolls everything back.
pub enum BulkTx {
    Sqlite(Transaction<'static, Sqlite>),
    Postgres(Transaction<'static, Postgres>),
}

/// Runs `$body` with `$t` bound to the transaction of whichever database.
macro_rules! with_tx {
    ($tx:expr, $t:ident => $body:expr) => {
        match $tx {
            BulkTx::Sqlite($t) => $body,
            BulkTx::Postgres($t) => $body,
        }
    };
}

const COUNTS_SQL: &str = "SELECT (SELECT COUNT(*) FROM users), (SELECT COUNT(*) FROM properties), \
                          (SELECT COUNT(*) FROM bookings)";

impl Db {
    /// Starts a bulk load. On SQLite the write lock is taken at once
    /// (`BEGIN IMMEDIATE`), so what the load reads first (is the database
    /// empty?) cannot change before it writes.
    pub async fn begin_bulk(&self) -> anyhow::Result<BulkTx> {
        // The load records nothing in the outbox (see its migration).
        Ok(match self {
            Db::Sqlite(p) => {
                let mut t = p.begin_with("BEGIN IMMEDIATE").await?;
                sqlx::query("INSERT INTO outbox_paused (paused) VALUES (1)")
                    .execute(&mut *t)
                    .await?;
                BulkTx::Sqlite(t)
            }
            Db::Postgres(p) => {
                let mut t = p.begin().await?;
                sqlx::query("SELECT set_config('stayafrica.bulk_load', 'on', true)")
                    .execute(&mut *t)
                    .await?;
                BulkTx::Postgres(t)
            }
        })
    }

    /// How many users, properties and bookings there are (deleted ones included).
    pub async fn table_counts(&self) -> anyhow::Result<TableCounts> {
        let (users, properties, bookings): (i64, i64, i64) =
            with_pool!(self, p => sqlx::query_as(COUNTS_SQL).fetch_one(p).await)?;
        Ok(TableCounts {
            users,
            properties,
            bookings,
        })
    }
}

impl BulkTx {
    /// The counts as this transaction sees them.
    pub async fn counts(&mut self) -> anyhow::Result<TableCounts> {
        let (users, properties, bookings): (i64, i64, i64) =
            with_tx!(self, t => sqlx::query_as(COUNTS_SQL).fetch_one(&mut **t).await)?;
        Ok(TableCounts {
            users,
            properties,
            bookings,
        })
    }

    /// Inserts `rows` (in statements of at most [`CHUNK_ROWS`] rows).
    pub async fn insert_users(&mut self, rows: &[UserRecord]) -> Result<(), sqlx::Error> {
        for chunk in rows.chunks(CHUNK_ROWS) {
            with_tx!(self, t => {
                let mut qb = QueryBuilder::new(
                    "INSERT INTO users (id, email, password_hash, full_name, role, created_at) ",
                );
                qb.push_values(chunk, |mut b, u| {
                    b.push_bind(u.id)
                        .push_bind(u.email.clone())
                        .push_bind(u.password_hash.clone())
                        .push_bind(u.full_name.clone())
                        .push_bind(u.role.as_str())
                        .push_bind(u.created_at);
                });
                qb.build().execute(&mut **t).await?;
            });
        }
        Ok(())
    }

    /// Inserts `rows` (in statements of at most [`CHUNK_ROWS`] rows).
    pub async fn insert_properties(&mut self, rows: &[PropertyRecord]) -> Result<(), sqlx::Error> {
        for chunk in rows.chunks(CHUNK_ROWS) {
            with_tx!(self, t => {
                let mut qb = QueryBuilder::new(
                    "INSERT INTO properties (id, host_id, title, description, city, country, \
                     price_cents, max_guests, is_featured, view_count, created_at, updated_at, \
                     deleted_at) ",
                );
                qb.push_values(chunk, |mut b, p| {
                    b.push_bind(p.id)
                        .push_bind(p.host_id)
                        .push_bind(p.title.clone())
                        .push_bind(p.description.clone())
                        .push_bind(p.city.clone())
                        .push_bind(p.country.clone())
                        .push_bind(p.price_per_night.cents())
                        .push_bind(p.max_guests)
                        .push_bind(p.is_featured)
                        .push_bind(p.view_count)
                        .push_bind(p.created_at)
                        .push_bind(p.updated_at)
                        .push_bind(p.deleted_at);
                });
                qb.build().execute(&mut **t).await?;
            });
        }
        Ok(())
    }

    /// Inserts `rows` (in statements of at most [`CHUNK_ROWS`] rows). An
    /// overlap of confirmed bookings fails with the error
    /// [`super::is_overlap`] recognizes.
    pub async fn insert_bookings(&mut self, rows: &[BookingRecord]) -> Result<(), sqlx::Error> {
        for chunk in rows.chunks(CHUNK_ROWS) {
            with_tx!(self, t => {
                let mut qb = QueryBuilder::new(
                    "INSERT INTO bookings (id, property_id, guest_id, check_in, check_out, \
                     guests, total_cents, status, created_at) ",
                );
                qb.push_values(chunk, |mut b, r| {
                    b.push_bind(r.id)
                        .push_bind(r.property_id)
                        .push_bind(r.guest_id)
                        .push_bind(r.check_in)
                        .push_bind(r.check_out)
                        .push_bind(r.guests)
                        .push_bind(r.total_price.cents())
                        .push_bind(r.status.as_str())
                        .push_bind(r.created_at);
                });
                qb.build().execute(&mut **t).await?;
            });
        }
        Ok(())
    }

    /// Commits; on PostgreSQL first moves each id sequence past the largest
    /// id, so that rows created later get ids above the loaded ones. The
    /// loaded tables are analyzed first: the list's plans (which index
    /// serves a filter, or the id order) depend on their statistics, and a
    /// catalogue loaded in bulk would otherwise be planned as empty until
    /// autovacuum (PostgreSQL) or the next `PRAGMA optimize` (SQLite).
    pub async fn commit(self) -> anyhow::Result<()> {
        match self {
            BulkTx::Sqlite(mut t) => {
                sqlx::query("DELETE FROM outbox_paused")
                    .execute(&mut *t)
                    .await?;
                // Sampled statistics: a bounded cost whatever was loaded.
                sqlx::query("PRAGMA analysis_limit = 1000")
                    .execute(&mut *t)
                    .await?;
                sqlx::query("ANALYZE properties; ANALYZE bookings")
                    .execute(&mut *t)
                    .await?;
                t.commit().await?;
            }
            BulkTx::Postgres(mut t) => {
                for table in ["users", "properties", "bookings"] {
                    let sql = format!(
                        "SELECT setval(pg_get_serial_sequence('{table}', 'id'), \
                         COALESCE(MAX(id), 0) + 1, false) FROM {table}"
                    );
                    sqlx::query(sqlx::AssertSqlSafe(sql))
                        .execute(&mut *t)
                        .await?;
                }
                sqlx::query("ANALYZE properties, bookings")
                    .execute(&mut *t)
                    .await?;
                t.commit().await?;
            }
        }
        Ok(())
    }

    /// Rolls everything back.
    pub async fn rollback(self) -> anyhow::Result<()> {
        with_tx!(self, t => t.rollback().await)?;
        Ok(())
    }
}
