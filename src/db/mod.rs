//! The database: SQLite (the embedded default, WAL mode) or PostgreSQL,
//! chosen by `DATABASE_URL`. sqlx's `Any` driver cannot carry dates and
//! timestamps, so [`Db`] holds a typed pool of either kind and each
//! repository function runs the same SQL on whichever it holds
//! ([`with_pool!`]); where the dialects differ, the function says so.
//!
//! Money is stored in cents (integers), never floats.

pub mod audit;
pub mod bookings;
pub mod bulk;
pub mod idempotency;
pub mod jobs;
pub mod outbox;
pub mod properties;
pub mod secrets;
pub mod sessions;
pub mod users;

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};

/// A pooled PostgreSQL connection idle for this long is pinged before use.
const PING_IF_IDLE_FOR: Duration = Duration::from_secs(1);

/// A pool on the configured database.
#[derive(Clone, Debug)]
pub enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `$body` with `$p` bound to the pool of whichever database `$db` is.
/// The body is compiled once per backend, so each gets its own types.
#[macro_export]
macro_rules! with_pool {
    ($db:expr, $p:ident => $body:expr) => {
        match $db {
            $crate::db::Db::Sqlite($p) => $body,
            $crate::db::Db::Postgres($p) => $body,
        }
    };
}

/// Where a SQLite database lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SqliteFile {
    /// A file other processes may open too.
    Path(std::path::PathBuf),
    /// Memory of this process only.
    Memory,
}

/// Which kind of database a [`Db`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbKind {
    Sqlite,
    Postgres,
}

impl Db {
    /// Connects to `url` (`sqlite://PATH`, created if missing, or
    /// `postgres://…`).
    pub async fn connect(url: &str) -> anyhow::Result<Db> {
        if url.starts_with("sqlite:") {
            let opts = SqliteConnectOptions::from_str(url)
                .context("DATABASE_URL is not a valid sqlite:// URL")?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(15))
                .foreign_keys(true)
                // Statistics for the planner, refreshed (sampled, bounded)
                // where they are missing or stale as each connection
                // opens: without them SQLite serves `guests=` pages from
                // its index and sorts every match instead of walking ids.
                .pragma("analysis_limit", "1000")
                .pragma("optimize", "0x10002");
            let pool = SqlitePoolOptions::new()
                .max_connections(8)
                .acquire_timeout(Duration::from_secs(15))
                .connect_with(opts)
                .await
                .context("cannot open the SQLite database named by DATABASE_URL")?;
            Ok(Db::Sqlite(pool))
        } else {
            let opts = PgConnectOptions::from_str(url)
                .context("DATABASE_URL is not a valid postgres:// URL")?;
            // sqlx pings a connection when it goes back to the pool and, by
            // default, again when it is taken out: two extra round trips per
            // query (on a booking, three for one statement). The ping on
            // taking is kept only for a connection idle for a while (one
            // the database may have closed meanwhile); one in steady use was
            // proven live by its release ping moments ago, and if it broke
            // since, its query fails as unreachable (503) and it is dropped.
            let pool = PgPoolOptions::new()
                .max_connections(16)
                .acquire_timeout(Duration::from_secs(5))
                .test_before_acquire(false)
                .before_acquire(|conn, meta| {
                    Box::pin(async move {
                        if meta.idle_for >= PING_IF_IDLE_FOR {
                            sqlx::Connection::ping(conn).await?;
                        }
                        Ok(true)
                    })
                })
                .connect_with(opts)
                .await
                .context("cannot connect to the PostgreSQL database named by DATABASE_URL")?;
            Ok(Db::Postgres(pool))
        }
    }

    /// The SQLite database's file (or that it lives in memory); `None` on
    /// PostgreSQL.
    pub fn sqlite_file(&self) -> Option<SqliteFile> {
        match self {
            Db::Sqlite(p) => {
                let opts = p.connect_options();
                let name = opts.get_filename();
                let in_memory = name.as_os_str().is_empty()
                    || name.as_os_str() == ":memory:"
                    || name.to_string_lossy().contains("mode=memory");
                Some(if in_memory {
                    SqliteFile::Memory
                } else {
                    SqliteFile::Path(name.to_path_buf())
                })
            }
            Db::Postgres(_) => None,
        }
    }

    /// Which database this is, for the few statements that differ by dialect.
    pub fn kind(&self) -> DbKind {
        match self {
            Db::Sqlite(_) => DbKind::Sqlite,
            Db::Postgres(_) => DbKind::Postgres,
        }
    }

    /// Applies the migrations of this database kind.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        match self {
            Db::Sqlite(p) => sqlx::migrate!("migrations/sqlite").run(p).await,
            Db::Postgres(p) => sqlx::migrate!("migrations/postgres").run(p).await,
        }
        .context("applying database migrations failed")
    }

    /// A cheap round trip, for `/health`.
    pub async fn ping(&self) -> anyhow::Result<()> {
        with_pool!(self, p => sqlx::query("SELECT 1").execute(p).await.map(|_| ()))?;
        Ok(())
    }

    /// Closes the pool, waiting for checked-out connections to come back.
    pub async fn close(&self) {
        with_pool!(self, p => p.close().await)
    }
}

/// True when `err` is the database refusing an overlapping confirmed booking
/// (PostgreSQL's exclusion constraint or SQLite's trigger).
pub fn is_overlap(err: &sqlx::Error) -> bool {
    err.as_database_error().is_some_and(|e| {
        e.constraint() == Some("bookings_no_overlap") || e.message().contains("bookings_no_overlap")
    })
}

/// True when PostgreSQL aborted the statement to break a deadlock (40P01).
/// Concurrent inserts checked by one exclusion constraint can wait on each
/// other (PostgreSQL's documented behaviour for exclusion constraints): one
/// of them is aborted, and running it again decides it cleanly.
pub fn is_deadlock(err: &sqlx::Error) -> bool {
    err.as_database_error()
        .is_some_and(|e| e.code().as_deref() == Some("40P01"))
}

/// True when `err` is a unique-key violation.
pub fn is_unique_violation(err: &sqlx::Error) -> bool {
    err.as_database_error()
        .is_some_and(|e| e.is_unique_violation())
}

/// Unix time in milliseconds (the job and session tables use it).
pub fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}
