//! The seeder and the importer, on SQLite and PostgreSQL: exact counts,
//! determinism, no overlapping bookings, ids kept and sequences moved past
//! them, passwords that verify, and all-or-nothing refusal of a malformed
//! export naming file, line and field.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::Path;

use anyhow::Context;
use stayafrica::db::Db;
use stayafrica::db::bulk::{BookingRecord, PropertyRecord, TableCounts, UserRecord};
use stayafrica::db::properties::NewProperty;
use stayafrica::db::users::NewUser;
use stayafrica::domain::{BookingStatus, Email, Money, Role};
use stayafrica::passwords::{self, Verified};
use stayafrica::seed::SeedOptions;
use stayafrica::with_pool;
use time::macros::{date, datetime};
use time::{Date, OffsetDateTime};

const PG_ADMIN: &str = "postgres://postgres@127.0.0.1:5432/postgres";
const GEN: &str = "/work/shared/data/gen_dataset.py";

#[derive(Debug, Clone, Copy)]
enum Backend {
    Sqlite,
    Postgres,
}

/// A fresh migrated database; [`TestDb::drop_db`] removes it.
struct TestDb {
    db: Db,
    pg_name: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    async fn new(backend: Backend) -> anyhow::Result<TestDb> {
        let t = match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir()?;
                let db = Db::connect(&format!("sqlite://{}/t.db", dir.path().display())).await?;
                TestDb {
                    db,
                    pg_name: None,
                    _dir: Some(dir),
                }
            }
            Backend::Postgres => {
                let name = format!("sa_test_{}", uuid::Uuid::new_v4().simple());
                let admin = sqlx::PgPool::connect(PG_ADMIN)
                    .await
                    .context("PostgreSQL must run on 127.0.0.1:5432 for these tests")?;
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
                    .execute(&admin)
                    .await?;
                admin.close().await;
                let db = Db::connect(&format!("postgres://postgres@127.0.0.1:5432/{name}")).await?;
                TestDb {
                    db,
                    pg_name: Some(name),
                    _dir: None,
                }
            }
        };
        t.db.migrate().await?;
        Ok(t)
    }

    /// Best effort: closes the pool and drops the PostgreSQL database.
    async fn drop_db(self) {
        self.db.close().await;
        if let Some(name) = self.pg_name
            && let Ok(admin) = sqlx::PgPool::connect(PG_ADMIN).await
        {
            let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
            let _ = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&admin).await;
            admin.close().await;
        }
    }
}

/// Runs `$body(backend)` as one test per backend.
macro_rules! on_both {
    ($name:ident) => {
        mod $name {
            #[tokio::test]
            async fn sqlite() -> anyhow::Result<()> {
                super::$name(super::Backend::Sqlite).await
            }
            #[tokio::test]
            async fn postgres() -> anyhow::Result<()> {
                super::$name(super::Backend::Postgres).await
            }
        }
    };
}

on_both!(seed_counts_determinism_and_no_overlap);
on_both!(import_sample_keeps_ids_and_passwords);
on_both!(import_refuses_malformed_line);
on_both!(import_refuses_overlapping_bookings);
on_both!(import_keeps_django_hashes);
on_both!(bulk_insert_overlap_is_refused_by_the_database);

type UserSum = (i64, String, String, String, OffsetDateTime);
type PropertySum = (
    i64,
    i64,
    String,
    String,
    String,
    String,
    i64,
    i32,
    bool,
    i64,
    OffsetDateTime,
    OffsetDateTime,
);
type BookingSum = (i64, i64, i64, Date, Date, i32, i64, String, OffsetDateTime);

/// A checksum of every row (password hashes left out: their salt is random).
async fn checksum(db: &Db) -> anyhow::Result<u64> {
    let (users, props, bookings) = with_pool!(db, p => {
        let users: Vec<UserSum> = sqlx::query_as(
            "SELECT id, email, full_name, role, created_at FROM users ORDER BY id")
            .fetch_all(p).await?;
        let props: Vec<PropertySum> = sqlx::query_as(
            "SELECT id, host_id, title, description, city, country, price_cents, max_guests,
                    is_featured, view_count, created_at, updated_at FROM properties ORDER BY id")
            .fetch_all(p).await?;
        let bookings: Vec<BookingSum> = sqlx::query_as(
            "SELECT id, property_id, guest_id, check_in, check_out, guests, total_cents, status,
                    created_at FROM bookings ORDER BY id")
            .fetch_all(p).await?;
        (users, props, bookings)
    });
    let mut h = DefaultHasher::new();
    users.hash(&mut h);
    props.hash(&mut h);
    bookings.hash(&mut h);
    Ok(h.finish())
}

/// Pairs of bookings of one property whose dates overlap (`confirmed_only`:
/// both confirmed).
async fn overlaps(db: &Db, confirmed_only: bool) -> anyhow::Result<i64> {
    let filter = if confirmed_only {
        "AND a.status = 'confirmed' AND b.status = 'confirmed'"
    } else {
        ""
    };
    let sql = format!(
        "SELECT COUNT(*) FROM bookings a JOIN bookings b
           ON a.property_id = b.property_id AND a.id < b.id
          AND a.check_in < b.check_out AND b.check_in < a.check_out
         WHERE 1 = 1 {filter}"
    );
    Ok(
        with_pool!(db, p => sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql)).fetch_one(p).await)?,
    )
}

fn counts(users: i64, properties: i64, bookings: i64) -> TableCounts {
    TableCounts {
        users,
        properties,
        bookings,
    }
}

async fn seed_counts_determinism_and_no_overlap(backend: Backend) -> anyhow::Result<()> {
    let opts = SeedOptions {
        users: 120,
        properties: 600,
        bookings: 1500,
        seed: 42,
    };
    let a = TestDb::new(backend).await?;
    let b = TestDb::new(backend).await?;
    let c = TestDb::new(backend).await?;

    let report = stayafrica::seed::run(&a.db, &opts, false).await?;
    assert!(report.contains("120 users"), "{report}");
    assert_eq!(a.db.table_counts().await?, counts(120, 600, 1500));

    // Hosts about one in ten; featured about one in twenty.
    let (hosts, featured, cancelled): (i64, i64, i64) = with_pool!(&a.db, p => sqlx::query_as(
        "SELECT (SELECT COUNT(*) FROM users WHERE role = 'host'),
                (SELECT COUNT(*) FROM properties WHERE is_featured),
                (SELECT COUNT(*) FROM bookings WHERE status = 'cancelled')")
        .fetch_one(p).await)?;
    assert_eq!(hosts, 12);
    assert_eq!(featured, 30);
    assert!(
        (50..=300).contains(&cancelled),
        "{cancelled} cancelled of 1500"
    );

    // No two bookings of one property overlap, confirmed or not.
    assert_eq!(overlaps(&a.db, false).await?, 0);

    // Totals are nights x price; dates in 2025-2026; properties belong to hosts,
    // bookings to guests.
    let rows: Vec<(Date, Date, i64, i64, String, String)> = with_pool!(&a.db, p => sqlx::query_as(
        "SELECT b.check_in, b.check_out, b.total_cents, p.price_cents, g.role, h.role
         FROM bookings b JOIN properties p ON p.id = b.property_id
         JOIN users g ON g.id = b.guest_id JOIN users h ON h.id = p.host_id")
        .fetch_all(p).await)?;
    assert_eq!(rows.len(), 1500);
    for (ci, co, total, price, guest_role, host_role) in rows {
        assert!(co > ci && ci >= date!(2025 - 01 - 01) && co <= date!(2026 - 12 - 31));
        assert_eq!(total, price * (co - ci).whole_days());
        assert_eq!((guest_role.as_str(), host_role.as_str()), ("guest", "host"));
    }

    // Every user shares one hash, of password123.
    let email = Email::parse("user7@example.com").map_err(anyhow::Error::msg)?;
    let user = a.db.user_by_email(&email).await?.context("user7 seeded")?;
    assert_eq!(
        passwords::verify("password123", &user.password_hash)?,
        Verified::Yes
    );
    let distinct: i64 = with_pool!(&a.db, p => sqlx::query_scalar(
        "SELECT COUNT(DISTINCT password_hash) FROM users").fetch_one(p).await)?;
    assert_eq!(distinct, 1);

    // The same seed gives the same data; another seed other data.
    stayafrica::seed::run(&b.db, &opts, false).await?;
    assert_eq!(checksum(&a.db).await?, checksum(&b.db).await?);
    stayafrica::seed::run(
        &c.db,
        &SeedOptions {
            seed: 43,
            ..opts.clone()
        },
        false,
    )
    .await?;
    assert_ne!(checksum(&a.db).await?, checksum(&c.db).await?);

    // Seeding again is refused and changes nothing.
    let err = stayafrica::seed::run(&a.db, &opts, false)
        .await
        .err()
        .context("second seed")?;
    assert!(err.to_string().contains("already holds data"), "{err:#}");
    assert_eq!(a.db.table_counts().await?, counts(120, 600, 1500));

    // New rows get ids above the seeded ones.
    let now = OffsetDateTime::now_utc();
    let new_user = NewUser {
        email: "fresh@example.com",
        password_hash: &user.password_hash,
        full_name: "Fresh User",
        role: Role::Host,
        created_at: now,
    };
    let created =
        a.db.create_user(&new_user)
            .await?
            .context("fresh user created")?;
    assert_eq!(created.id, 121);
    let property = a.db.create_property(&new_property(created.id, now)).await?;
    assert_eq!(property.id, 601);

    a.drop_db().await;
    b.drop_db().await;
    c.drop_db().await;
    Ok(())
}

/// The same seed gives the same rows on SQLite and PostgreSQL.
#[tokio::test]
async fn seed_is_the_same_on_both_databases() -> anyhow::Result<()> {
    let opts = SeedOptions {
        users: 30,
        properties: 80,
        bookings: 200,
        seed: 7,
    };
    let s = TestDb::new(Backend::Sqlite).await?;
    let p = TestDb::new(Backend::Postgres).await?;
    stayafrica::seed::run(&s.db, &opts, false).await?;
    stayafrica::seed::run(&p.db, &opts, false).await?;
    assert_eq!(checksum(&s.db).await?, checksum(&p.db).await?);
    s.drop_db().await;
    p.drop_db().await;
    Ok(())
}

fn new_property(host_id: i64, now: OffsetDateTime) -> NewProperty {
    NewProperty {
        host_id,
        title: "Brand new loft in Accra".into(),
        description: String::new(),
        city: "Accra".into(),
        country: "Ghana".into(),
        price_per_night: Money::from_cents(10_000),
        max_guests: 2,
        is_featured: false,
        view_count: 0,
        created_at: now,
        updated_at: now,
    }
}

fn generate_sample(dir: &Path) -> anyhow::Result<()> {
    let out = std::process::Command::new("python3")
        .arg(GEN)
        .arg(dir)
        .args([
            "--users",
            "40",
            "--hosts",
            "4",
            "--properties",
            "100",
            "--bookings",
            "150",
        ])
        .output()
        .context("running python3 gen_dataset.py")?;
    anyhow::ensure!(out.status.success(), "gen_dataset.py failed: {out:?}");
    Ok(())
}

async fn import_sample_keeps_ids_and_passwords(backend: Backend) -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    generate_sample(data.path())?;
    let t = TestDb::new(backend).await?;

    let report = stayafrica::import::run(&t.db, data.path(), false).await?;
    assert!(
        report.contains("40 users, 100 properties, 150 bookings"),
        "{report}"
    );
    assert_eq!(t.db.table_counts().await?, counts(40, 100, 150));
    assert_eq!(overlaps(&t.db, true).await?, 0);

    // Ids kept: every row of the files is in the database under its id.
    let ids: (i64, i64, i64, i64, i64, i64) = with_pool!(&t.db, p => sqlx::query_as(
        "SELECT (SELECT MIN(id) FROM users), (SELECT MAX(id) FROM users),
                (SELECT MIN(id) FROM properties), (SELECT MAX(id) FROM properties),
                (SELECT MIN(id) FROM bookings), (SELECT MAX(id) FROM bookings)")
        .fetch_one(p).await)?;
    assert_eq!(ids, (1, 40, 1, 100, 1, 150));
    let props = std::fs::read_to_string(data.path().join("properties.jsonl"))?;
    for line in props.lines() {
        let v: serde_json::Value = serde_json::from_str(line)?;
        let id = v["id"].as_i64().context("property id")?;
        let p = t.db.property(id).await?.context("imported property")?;
        assert_eq!(Some(p.title.as_str()), v["title"].as_str());
        assert_eq!(Some(p.host_id), v["host_id"].as_i64());
        assert_eq!(
            Some(p.price_per_night.to_string().as_str()),
            v["price_per_night"].as_str()
        );
        assert_eq!(Some(p.view_count), v["view_count"].as_i64());
        assert_eq!(Some(p.is_featured), v["is_featured"].as_bool());
    }
    let bookings = std::fs::read_to_string(data.path().join("bookings.jsonl"))?;
    let first: serde_json::Value =
        serde_json::from_str(bookings.lines().next().context("a booking")?)?;
    let b = t.db.booking(1).await?.context("booking 1")?;
    assert_eq!(Some(b.property_id), first["property_id"].as_i64());
    assert_eq!(
        Some(b.check_in.to_string().as_str()),
        first["check_in"].as_str()
    );
    assert_eq!(
        Some(b.total_price.to_string().as_str()),
        first["total_price"].as_str()
    );
    assert_eq!(Some(b.status.as_str()), first["status"].as_str());

    // Users log in with password123 (one hash shared by the import).
    let email = Email::parse("user12@example.com").map_err(anyhow::Error::msg)?;
    let user =
        t.db.user_by_email(&email)
            .await?
            .context("user12 imported")?;
    assert_eq!(user.id, 12);
    assert_eq!(
        passwords::verify("password123", &user.password_hash)?,
        Verified::Yes
    );
    assert_eq!(
        passwords::verify("password124", &user.password_hash)?,
        Verified::No
    );

    // New rows get ids above the imported ones.
    let now = OffsetDateTime::now_utc();
    let property = t.db.create_property(&new_property(1, now)).await?;
    assert_eq!(property.id, 101);
    let booking = stayafrica::db::bookings::NewBooking {
        property_id: property.id,
        guest_id: 12,
        check_in: date!(2030 - 01 - 01),
        check_out: date!(2030 - 01 - 03),
        guests: 1,
        status: BookingStatus::Confirmed,
        created_at: now,
    };
    let created = t.db.create_booking(&booking).await?;
    assert!(matches!(created, Ok(ref b) if b.id == 151), "{created:?}");
    let new_user = NewUser {
        email: "late@example.com",
        password_hash: &user.password_hash,
        full_name: "Late Comer",
        role: Role::Guest,
        created_at: now,
    };
    assert_eq!(t.db.create_user(&new_user).await?.map(|u| u.id), Some(41));

    // Importing again is refused.
    let err = stayafrica::import::run(&t.db, data.path(), false)
        .await
        .err()
        .context("2nd")?;
    assert!(err.to_string().contains("already holds data"), "{err:#}");

    t.drop_db().await;
    Ok(())
}

/// Replaces line `line_no` (1-based) of `file` in `dir` with `f(line)`.
fn edit_line(
    dir: &Path,
    file: &str,
    line_no: usize,
    f: impl Fn(&str) -> String,
) -> anyhow::Result<()> {
    let path = dir.join(file);
    let text = std::fs::read_to_string(&path)?;
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let line = lines.get_mut(line_no - 1).context("no such line")?;
    *line = f(line);
    std::fs::write(&path, lines.join("\n") + "\n")?;
    Ok(())
}

async fn import_refuses_malformed_line(backend: Backend) -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    generate_sample(data.path())?;
    edit_line(data.path(), "properties.jsonl", 3, |l| {
        let mut v: serde_json::Value = serde_json::from_str(l).unwrap_or_default();
        v["price_per_night"] = "12.3.4".into();
        v.to_string()
    })?;
    let t = TestDb::new(backend).await?;

    let err = stayafrica::import::run(&t.db, data.path(), false)
        .await
        .err()
        .context("refused")?;
    let msg = err.to_string();
    assert!(
        msg.contains("properties.jsonl line 3: price_per_night: must be a decimal"),
        "{msg}"
    );
    assert_eq!(t.db.table_counts().await?, counts(0, 0, 0));

    // An unknown field, a bad email, a guest as host, a bad date order.
    let cases: [(&str, usize, &str, &str, serde_json::Value, &str); 4] = [
        (
            "users.jsonl",
            5,
            "nickname",
            "",
            "Ama".into(),
            "users.jsonl line 5: unknown field `nickname`",
        ),
        (
            "users.jsonl",
            6,
            "email",
            "",
            "not-an-email".into(),
            "users.jsonl line 6: email: must be",
        ),
        (
            "properties.jsonl",
            4,
            "host_id",
            "",
            30.into(),
            "properties.jsonl line 4: host_id: user 30 is not a host",
        ),
        (
            "bookings.jsonl",
            9,
            "check_out",
            "check_in",
            serde_json::Value::Null,
            "bookings.jsonl line 9: check_out: must be after check_in",
        ),
    ];
    for (file, line_no, field, copy_from, value, expected) in cases {
        let data = tempfile::tempdir()?;
        generate_sample(data.path())?;
        edit_line(data.path(), file, line_no, |l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap_or_default();
            v[field] = if copy_from.is_empty() {
                value.clone()
            } else {
                v[copy_from].clone()
            };
            v.to_string()
        })?;
        let err = stayafrica::import::run(&t.db, data.path(), false)
            .await
            .err()
            .context(expected)?;
        assert!(err.to_string().contains(expected), "{err}");
        assert_eq!(t.db.table_counts().await?, counts(0, 0, 0));
    }

    // The database is still usable: the clean sample imports.
    let data = tempfile::tempdir()?;
    generate_sample(data.path())?;
    stayafrica::import::run(&t.db, data.path(), false).await?;
    assert_eq!(t.db.table_counts().await?, counts(40, 100, 150));

    t.drop_db().await;
    Ok(())
}

async fn import_refuses_overlapping_bookings(backend: Backend) -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    generate_sample(data.path())?;
    // Line 20 becomes a confirmed copy of booking 3 under id 20.
    let path = data.path().join("bookings.jsonl");
    let text = std::fs::read_to_string(&path)?;
    let third = text.lines().nth(2).context("booking 3")?.to_owned();
    edit_line(data.path(), "bookings.jsonl", 20, |_| {
        let mut v: serde_json::Value = serde_json::from_str(&third).unwrap_or_default();
        v["id"] = 20.into();
        v["status"] = "confirmed".into();
        v.to_string()
    })?;
    edit_line(data.path(), "bookings.jsonl", 3, |l| {
        let mut v: serde_json::Value = serde_json::from_str(l).unwrap_or_default();
        v["status"] = "confirmed".into();
        v.to_string()
    })?;
    let t = TestDb::new(backend).await?;
    let err = stayafrica::import::run(&t.db, data.path(), false)
        .await
        .err()
        .context("refused")?;
    let msg = err.to_string();
    assert!(
        msg.contains("bookings.jsonl line 20") && msg.contains("overlaps"),
        "{msg}"
    );
    assert!(msg.contains("line 3"), "{msg}");
    assert_eq!(t.db.table_counts().await?, counts(0, 0, 0));
    t.drop_db().await;
    Ok(())
}

async fn import_keeps_django_hashes(backend: Backend) -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let django = passwords::django_hash("secret123", "somesalt", 1000);
    let users = [
        serde_json::json!({"id": 7, "email": "Old.Host@Example.com", "full_name": "Kwame Mensah",
            "role": "host", "created_at": "2019-03-01T10:00:00Z", "password_hash": django}),
        serde_json::json!({"id": 9, "email": "guest@example.com", "full_name": "Nia Otieno",
            "role": "guest", "created_at": "2020-03-01T10:00:00Z", "password": "password123"}),
    ];
    let users: String = users.iter().map(|u| format!("{u}\n")).collect();
    std::fs::write(data.path().join("users.jsonl"), users)?;
    std::fs::write(
        data.path().join("properties.jsonl"),
        r#"{"id": 3, "host_id": 7, "title": "Old villa in Kumasi", "description": "", "city": "Kumasi", "country": "Ghana", "price_per_night": "40", "max_guests": 4, "is_featured": true, "view_count": 0, "created_at": "2019-04-01T00:00:00Z", "updated_at": "2019-04-01T00:00:00Z"}"#
            .to_owned()
            + "\n",
    )?;
    std::fs::write(data.path().join("bookings.jsonl"), "")?;
    let t = TestDb::new(backend).await?;

    stayafrica::import::run(&t.db, data.path(), false).await?;
    assert_eq!(t.db.table_counts().await?, counts(2, 1, 0));
    let email = Email::parse("old.host@example.com").map_err(anyhow::Error::msg)?;
    let user =
        t.db.user_by_email(&email)
            .await?
            .context("django user imported")?;
    assert_eq!(user.id, 7);
    assert_eq!(user.password_hash, django);
    assert!(matches!(
        passwords::verify("secret123", &user.password_hash)?,
        Verified::YesRehash(h) if h.starts_with("$argon2id$")
    ));
    assert_eq!(
        passwords::verify("secret124", &user.password_hash)?,
        Verified::No
    );
    let p = t.db.property(3).await?.context("property 3")?;
    assert_eq!(
        (p.host_id, p.price_per_night.cents(), p.is_featured),
        (7, 4000, true)
    );

    // Sequences move past the largest ids, not the counts.
    let now = OffsetDateTime::now_utc();
    assert_eq!(t.db.create_property(&new_property(7, now)).await?.id, 4);

    t.drop_db().await;
    Ok(())
}

async fn bulk_insert_overlap_is_refused_by_the_database(backend: Backend) -> anyhow::Result<()> {
    let t = TestDb::new(backend).await?;
    let at = datetime!(2024-06-01 12:00 UTC);
    let mut tx = t.db.begin_bulk().await?;
    let users = [(1, Role::Host), (2, Role::Guest)].map(|(id, role)| UserRecord {
        id,
        email: format!("user{id}@example.com"),
        password_hash: "x".into(),
        full_name: "Test User".into(),
        role,
        created_at: at,
    });
    tx.insert_users(&users).await?;
    tx.insert_properties(&[PropertyRecord {
        id: 1,
        host_id: 1,
        title: "Loft".into(),
        description: String::new(),
        city: "Accra".into(),
        country: "Ghana".into(),
        price_per_night: Money::from_cents(5000),
        max_guests: 2,
        is_featured: false,
        view_count: 0,
        created_at: at,
        updated_at: at,
        deleted_at: None,
    }])
    .await?;
    let booking = |id, check_in: Date, nights, status| BookingRecord {
        id,
        property_id: 1,
        guest_id: 2,
        check_in,
        check_out: check_in + time::Duration::days(nights),
        guests: 1,
        total_price: Money::from_cents(5000 * nights),
        status,
        created_at: at,
    };
    // A cancelled booking may overlap; a second confirmed one may not.
    let rows = [
        booking(1, date!(2025 - 03 - 01), 5, BookingStatus::Confirmed),
        booking(2, date!(2025 - 03 - 02), 2, BookingStatus::Cancelled),
        booking(3, date!(2025 - 03 - 06), 2, BookingStatus::Confirmed),
    ];
    tx.insert_bookings(&rows).await?;
    let clash = [booking(
        4,
        date!(2025 - 03 - 04),
        3,
        BookingStatus::Confirmed,
    )];
    let err = tx
        .insert_bookings(&clash)
        .await
        .err()
        .context("overlap refused")?;
    assert!(stayafrica::db::is_overlap(&err), "{err}");
    tx.rollback().await?;
    assert_eq!(t.db.table_counts().await?, counts(0, 0, 0));
    t.drop_db().await;
    Ok(())
}
