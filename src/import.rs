//! Import of the existing system's export (`shared/data/FORMAT.md`):
//! `users.jsonl`, `properties.jsonl` and `bookings.jsonl` of one directory,
//! ids kept.
//!
//! The files are streamed line by line; every record is parsed by serde
//! (unknown fields refused) and checked against the domain rules, then
//! written in multi-row inserts, all inside ONE transaction: a malformed
//! record anywhere refuses the whole import, names its file, line and field,
//! and leaves the database unchanged.
//!
//! Users carry either a plain `password` (hashed with argon2id, once per
//! distinct password) or a Django `password_hash`
//! (`pbkdf2_sha256$iterations$salt$hash`), stored as is: those users log in
//! with their old password and are moved to argon2id on their first login.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use indicatif::ProgressBar;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use time::{Date, OffsetDateTime};

use crate::db::bulk::{BookingRecord, BulkTx, CHUNK_ROWS, PropertyRecord, UserRecord};
use crate::db::{Db, is_overlap};
use crate::domain::{BookingStatus, Email, MAX_PRICE_CENTS, Money, Role, check_len, check_text};

const USERS: &str = "users.jsonl";
const PROPERTIES: &str = "properties.jsonl";
const BOOKINGS: &str = "bookings.jsonl";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserLine {
    id: i64,
    email: String,
    full_name: String,
    role: Role,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    password_hash: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PropertyLine {
    id: i64,
    host_id: i64,
    title: String,
    description: String,
    city: String,
    country: String,
    price_per_night: Money,
    max_guests: i32,
    is_featured: bool,
    view_count: i64,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    updated_at: OffsetDateTime,
    /// Not in FORMAT.md; accepted so that soft-deleted listings can be carried over.
    #[serde(default, with = "time::serde::rfc3339::option")]
    deleted_at: Option<OffsetDateTime>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BookingLine {
    id: i64,
    property_id: i64,
    guest_id: i64,
    check_in: Date,
    check_out: Date,
    guests: i32,
    total_price: Money,
    status: BookingStatus,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
}

/// A timestamp field on its own, to name it when it is malformed.
#[derive(Deserialize)]
struct Ts(
    #[allow(dead_code)]
    #[serde(with = "time::serde::rfc3339")]
    OffsetDateTime,
);

/// An optional timestamp field on its own.
#[derive(Deserialize)]
struct OptTs(
    #[allow(dead_code)]
    #[serde(with = "time::serde::rfc3339::option")]
    Option<OffsetDateTime>,
);

/// Checks one field's JSON value against its type; `Err` is the reason.
type FieldCheck = fn(serde_json::Value) -> Result<(), String>;

fn check<T: DeserializeOwned>(v: serde_json::Value) -> Result<(), String> {
    T::deserialize(v).map(|_| ()).map_err(|e| e.to_string())
}

const USER_FIELDS: &[(&str, FieldCheck)] = &[
    ("id", check::<i64>),
    ("email", check::<String>),
    ("full_name", check::<String>),
    ("role", check::<Role>),
    ("created_at", check::<Ts>),
    ("password", check::<Option<String>>),
    ("password_hash", check::<Option<String>>),
];

const PROPERTY_FIELDS: &[(&str, FieldCheck)] = &[
    ("id", check::<i64>),
    ("host_id", check::<i64>),
    ("title", check::<String>),
    ("description", check::<String>),
    ("city", check::<String>),
    ("country", check::<String>),
    ("price_per_night", check::<Money>),
    ("max_guests", check::<i32>),
    ("is_featured", check::<bool>),
    ("view_count", check::<i64>),
    ("created_at", check::<Ts>),
    ("updated_at", check::<Ts>),
    ("deleted_at", check::<OptTs>),
];

const BOOKING_FIELDS: &[(&str, FieldCheck)] = &[
    ("id", check::<i64>),
    ("property_id", check::<i64>),
    ("guest_id", check::<i64>),
    ("check_in", check::<Date>),
    ("check_out", check::<Date>),
    ("guests", check::<i32>),
    ("total_price", check::<Money>),
    ("status", check::<BookingStatus>),
    ("created_at", check::<Ts>),
];

/// Parses one JSON line; on failure says which field is wrong and why.
fn parse_line<T: DeserializeOwned>(line: &str, fields: &[(&str, FieldCheck)]) -> Result<T, String> {
    let err = match serde_json::from_str::<T>(line) {
        Ok(v) => return Ok(v),
        Err(e) => e,
    };
    // Find the field: serde's own message names missing and unknown fields
    // but not a field whose value is malformed.
    match serde_json::from_str::<serde_json::Value>(line) {
        Ok(serde_json::Value::Object(map)) => {
            for (name, check) in fields {
                if let Some(v) = map.get(*name)
                    && let Err(why) = check(v.clone())
                {
                    return Err(format!("{name}: {why}"));
                }
            }
            Err(strip_position(&err))
        }
        Ok(_) => Err("not a JSON object".to_owned()),
        Err(e) => Err(format!("invalid JSON: {}", strip_position(&e))),
    }
}

/// serde_json's message without its "at line 1 column N" (the line is the
/// file's, reported by the caller).
fn strip_position(e: &serde_json::Error) -> String {
    let msg = e.to_string();
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_owned(),
        None => msg,
    }
}

/// What has been loaded so far, for references and uniqueness.
#[derive(Default)]
struct Seen {
    /// user id -> role
    users: HashMap<i64, Role>,
    emails: HashSet<String>,
    /// property id -> max guests
    properties: HashMap<i64, i32>,
    bookings: HashSet<i64>,
    /// property id -> (check_in, check_out, booking id, line) of confirmed bookings
    stays: HashMap<i64, Vec<(Date, Date, i64, usize)>>,
    /// plain password -> its argon2id hash
    hashes: HashMap<String, String>,
}

fn text(name: &str, value: String, min: usize, max: usize) -> Result<String, String> {
    let value = value.trim().to_owned();
    check_text(&value, min, max).map_err(|m| format!("{name}: {m}"))?;
    Ok(value)
}

fn positive_id(name: &str, id: i64) -> Result<(), String> {
    if id < 1 {
        Err(format!("{name}: must be a positive integer"))
    } else {
        Ok(())
    }
}

/// The password of a user line: a hash to store as is, or a plain password to hash.
enum Password {
    Hash(String),
    Plain(String),
}

fn validate_user(u: UserLine, seen: &Seen) -> Result<(UserRecord, Password), String> {
    positive_id("id", u.id)?;
    if seen.users.contains_key(&u.id) {
        return Err(format!("id: duplicate user id {}", u.id));
    }
    let email = Email::parse(&u.email).map_err(|m| format!("email: {m}"))?;
    if seen.emails.contains(email.as_str()) {
        return Err(format!("email: duplicate email {email}"));
    }
    let full_name = text("full_name", u.full_name, 1, 200)?;
    let password = match (u.password, u.password_hash) {
        (Some(_), Some(_)) => {
            return Err("password: give either password or password_hash, not both".to_owned());
        }
        (None, None) => return Err("password: missing (give password or password_hash)".to_owned()),
        (Some(p), None) => {
            check_len(&p, 1, 128).map_err(|m| format!("password: {m}"))?;
            Password::Plain(p)
        }
        (None, Some(h)) => {
            if !valid_stored_hash(&h) {
                return Err("password_hash: must be a Django hash \
                            pbkdf2_sha256$<iterations>$<salt>$<base64> or an argon2id PHC string"
                    .to_owned());
            }
            Password::Hash(h)
        }
    };
    let record = UserRecord {
        id: u.id,
        email: email.as_str().to_owned(),
        password_hash: String::new(),
        full_name,
        role: u.role,
        created_at: u.created_at,
    };
    Ok((record, password))
}

/// A hash `crate::passwords::verify` understands.
fn valid_stored_hash(h: &str) -> bool {
    if h.starts_with("$argon2id$") {
        return true;
    }
    let parts: Vec<&str> = h.split('$').collect();
    matches!(parts[..], ["pbkdf2_sha256", it, salt, hash]
        if it.parse::<u32>().is_ok_and(|n| n > 0) && !salt.is_empty() && !hash.is_empty())
}

fn validate_property(p: PropertyLine, seen: &Seen) -> Result<PropertyRecord, String> {
    positive_id("id", p.id)?;
    if seen.properties.contains_key(&p.id) {
        return Err(format!("id: duplicate property id {}", p.id));
    }
    match seen.users.get(&p.host_id) {
        None => return Err(format!("host_id: no user {} in {USERS}", p.host_id)),
        Some(Role::Guest) => return Err(format!("host_id: user {} is not a host", p.host_id)),
        Some(Role::Host) => {}
    }
    let title = text("title", p.title, 1, 200)?;
    let description = text("description", p.description, 0, 5000)?;
    let city = text("city", p.city, 1, 100)?;
    let country = text("country", p.country, 1, 100)?;
    if !(1..=MAX_PRICE_CENTS).contains(&p.price_per_night.cents()) {
        return Err("price_per_night: must be between 0.01 and 100000.00".to_owned());
    }
    if !(1..=50).contains(&p.max_guests) {
        return Err("max_guests: must be between 1 and 50".to_owned());
    }
    if p.view_count < 0 {
        return Err("view_count: must not be negative".to_owned());
    }
    Ok(PropertyRecord {
        id: p.id,
        host_id: p.host_id,
        title,
        description,
        city,
        country,
        price_per_night: p.price_per_night,
        max_guests: p.max_guests,
        is_featured: p.is_featured,
        view_count: p.view_count,
        created_at: p.created_at,
        updated_at: p.updated_at,
        deleted_at: p.deleted_at,
    })
}

fn validate_booking(b: BookingLine, seen: &Seen) -> Result<BookingRecord, String> {
    positive_id("id", b.id)?;
    if seen.bookings.contains(&b.id) {
        return Err(format!("id: duplicate booking id {}", b.id));
    }
    if !seen.properties.contains_key(&b.property_id) {
        return Err(format!(
            "property_id: no property {} in {PROPERTIES}",
            b.property_id
        ));
    }
    if !seen.users.contains_key(&b.guest_id) {
        return Err(format!("guest_id: no user {} in {USERS}", b.guest_id));
    }
    if b.check_out <= b.check_in {
        return Err("check_out: must be after check_in".to_owned());
    }
    if !(1..=50).contains(&b.guests) {
        return Err("guests: must be between 1 and 50".to_owned());
    }
    Ok(BookingRecord {
        id: b.id,
        property_id: b.property_id,
        guest_id: b.guest_id,
        check_in: b.check_in,
        check_out: b.check_out,
        guests: b.guests,
        total_price: b.total_price,
        status: b.status,
        created_at: b.created_at,
    })
}

/// One export file read line by line, advancing the progress bar.
struct Lines {
    name: &'static str,
    reader: BufReader<File>,
    buf: String,
    line_no: usize,
}

impl Lines {
    fn open(dir: &Path, name: &'static str) -> anyhow::Result<Lines> {
        let path = dir.join(name);
        let file = File::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
        Ok(Lines {
            name,
            reader: BufReader::new(file),
            buf: String::new(),
            line_no: 0,
        })
    }

    /// The next non-blank line and its number.
    fn next(&mut self, bar: &ProgressBar) -> anyhow::Result<Option<(usize, &str)>> {
        loop {
            self.buf.clear();
            let n = self
                .reader
                .read_line(&mut self.buf)
                .with_context(|| format!("{} line {}: cannot read", self.name, self.line_no + 1))?;
            if n == 0 {
                return Ok(None);
            }
            self.line_no += 1;
            bar.inc(n as u64);
            if !self.buf.trim().is_empty() {
                return Ok(Some((self.line_no, self.buf.trim_end())));
            }
        }
    }

    fn error(&self, line: usize, why: impl std::fmt::Display) -> anyhow::Error {
        anyhow::anyhow!("{} line {line}: {why}", self.name)
    }
}

/// Imports the export in `dir` into `db`; returns a one-line report.
pub async fn run(db: &Db, dir: &Path, progress: bool) -> anyhow::Result<String> {
    let started = Instant::now();
    let paths: Vec<PathBuf> = [USERS, PROPERTIES, BOOKINGS]
        .iter()
        .map(|f| dir.join(f))
        .collect();
    let mut total_bytes = 0;
    for path in &paths {
        let meta = std::fs::metadata(path).with_context(|| {
            format!(
                "{} is missing: an export holds {USERS}, {PROPERTIES} and {BOOKINGS}",
                path.display()
            )
        })?;
        total_bytes += meta.len();
    }
    let existing = db.table_counts().await?;
    if !existing.is_empty() {
        anyhow::bail!(
            "the database already holds data ({} users, {} properties, {} bookings): \
             import loads into an empty database only",
            existing.users,
            existing.properties,
            existing.bookings
        );
    }

    let bar = crate::seed::progress_bar(progress, total_bytes, true);
    let mut tx = db.begin_bulk().await?;
    let mut seen = Seen::default();
    let loaded = load_all(&mut tx, dir, &bar, &mut seen).await;
    if let Err(e) = loaded {
        bar.abandon();
        // Dropping the transaction would roll back too; this is explicit.
        let _ = tx.rollback().await;
        // One message with the whole chain, so that it names file, line
        // and field however it is printed.
        return Err(anyhow::anyhow!(
            "import of {} refused, nothing was imported: {e:#}",
            dir.display()
        ));
    }
    tx.commit().await.context("committing the import failed")?;
    bar.finish_and_clear();
    Ok(format!(
        "imported {} users, {} properties, {} bookings from {} in {:.1}s",
        seen.users.len(),
        seen.properties.len(),
        seen.bookings.len(),
        dir.display(),
        started.elapsed().as_secs_f64()
    ))
}

async fn load_all(
    tx: &mut BulkTx,
    dir: &Path,
    bar: &ProgressBar,
    seen: &mut Seen,
) -> anyhow::Result<()> {
    let counts = tx.counts().await?;
    if !counts.is_empty() {
        anyhow::bail!("the database already holds data: import loads into an empty database only");
    }
    load_users(tx, dir, bar, seen).await?;
    load_properties(tx, dir, bar, seen).await?;
    load_bookings(tx, dir, bar, seen).await?;
    Ok(())
}

async fn load_users(
    tx: &mut BulkTx,
    dir: &Path,
    bar: &ProgressBar,
    seen: &mut Seen,
) -> anyhow::Result<()> {
    let mut lines = Lines::open(dir, USERS)?;
    let mut chunk = Vec::with_capacity(CHUNK_ROWS);
    let mut first_line = 0;
    loop {
        let Some((n, line)) = lines.next(bar)? else {
            break;
        };
        let parsed = parse_line::<UserLine>(line, USER_FIELDS)
            .and_then(|u| validate_user(u, seen))
            .map_err(|why| lines.error(n, why))?;
        let (mut user, password) = parsed;
        user.password_hash = match password {
            Password::Hash(h) => h,
            Password::Plain(p) => match seen.hashes.get(&p) {
                Some(h) => h.clone(),
                None => {
                    let plain = p.clone();
                    let h = tokio::task::spawn_blocking(move || crate::passwords::hash(&plain))
                        .await
                        .context("password hashing task failed")??;
                    seen.hashes.insert(p, h.clone());
                    h
                }
            },
        };
        seen.users.insert(user.id, user.role);
        seen.emails.insert(user.email.clone());
        if chunk.is_empty() {
            first_line = n;
        }
        chunk.push(user);
        if chunk.len() == CHUNK_ROWS {
            flush_users(tx, &mut chunk, first_line, n).await?;
        }
    }
    flush_users(tx, &mut chunk, first_line, lines.line_no).await
}

async fn flush_users(
    tx: &mut BulkTx,
    chunk: &mut Vec<UserRecord>,
    from: usize,
    to: usize,
) -> anyhow::Result<()> {
    if chunk.is_empty() {
        return Ok(());
    }
    tx.insert_users(chunk)
        .await
        .with_context(|| format!("{USERS} lines {from}-{to}: the database refused these users"))?;
    chunk.clear();
    Ok(())
}

async fn load_properties(
    tx: &mut BulkTx,
    dir: &Path,
    bar: &ProgressBar,
    seen: &mut Seen,
) -> anyhow::Result<()> {
    let mut lines = Lines::open(dir, PROPERTIES)?;
    let mut chunk = Vec::with_capacity(CHUNK_ROWS);
    let mut first_line = 0;
    loop {
        let Some((n, line)) = lines.next(bar)? else {
            break;
        };
        let property = parse_line::<PropertyLine>(line, PROPERTY_FIELDS)
            .and_then(|p| validate_property(p, seen))
            .map_err(|why| lines.error(n, why))?;
        seen.properties.insert(property.id, property.max_guests);
        if chunk.is_empty() {
            first_line = n;
        }
        chunk.push(property);
        if chunk.len() == CHUNK_ROWS {
            flush_properties(tx, &mut chunk, first_line, n).await?;
        }
    }
    flush_properties(tx, &mut chunk, first_line, lines.line_no).await
}

async fn flush_properties(
    tx: &mut BulkTx,
    chunk: &mut Vec<PropertyRecord>,
    from: usize,
    to: usize,
) -> anyhow::Result<()> {
    if chunk.is_empty() {
        return Ok(());
    }
    tx.insert_properties(chunk).await.with_context(|| {
        format!("{PROPERTIES} lines {from}-{to}: the database refused these properties")
    })?;
    chunk.clear();
    Ok(())
}

async fn load_bookings(
    tx: &mut BulkTx,
    dir: &Path,
    bar: &ProgressBar,
    seen: &mut Seen,
) -> anyhow::Result<()> {
    let mut lines = Lines::open(dir, BOOKINGS)?;
    let mut chunk = Vec::with_capacity(CHUNK_ROWS);
    let mut first_line = 0;
    loop {
        let Some((n, line)) = lines.next(bar)? else {
            break;
        };
        let booking = parse_line::<BookingLine>(line, BOOKING_FIELDS)
            .and_then(|b| validate_booking(b, seen))
            .map_err(|why| lines.error(n, why))?;
        if booking.status == BookingStatus::Confirmed {
            // The database refuses overlaps too; checking here names both lines.
            let stays = seen.stays.entry(booking.property_id).or_default();
            if let Some((_, _, other_id, other_line)) = stays
                .iter()
                .find(|(ci, co, _, _)| *ci < booking.check_out && booking.check_in < *co)
            {
                return Err(lines.error(
                    n,
                    format!(
                        "check_in: confirmed booking {} of property {} overlaps confirmed \
                         booking {other_id} (line {other_line})",
                        booking.id, booking.property_id
                    ),
                ));
            }
            stays.push((booking.check_in, booking.check_out, booking.id, n));
        }
        seen.bookings.insert(booking.id);
        if chunk.is_empty() {
            first_line = n;
        }
        chunk.push(booking);
        if chunk.len() == CHUNK_ROWS {
            flush_bookings(tx, &mut chunk, first_line, n).await?;
        }
    }
    flush_bookings(tx, &mut chunk, first_line, lines.line_no).await
}

async fn flush_bookings(
    tx: &mut BulkTx,
    chunk: &mut Vec<BookingRecord>,
    from: usize,
    to: usize,
) -> anyhow::Result<()> {
    if chunk.is_empty() {
        return Ok(());
    }
    match tx.insert_bookings(chunk).await {
        Ok(()) => {}
        Err(e) if is_overlap(&e) => anyhow::bail!(
            "{BOOKINGS} lines {from}-{to}: the database refused overlapping confirmed bookings \
             of one property (bookings_no_overlap)"
        ),
        Err(e) => {
            return Err(anyhow::Error::new(e).context(format!(
                "{BOOKINGS} lines {from}-{to}: the database refused these bookings"
            )));
        }
    }
    chunk.clear();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_fields_are_named() {
        let line = r#"{"id":1,"host_id":2,"title":"T","description":"","city":"Accra","country":"Ghana","price_per_night":"12.345","max_guests":2,"is_featured":false,"view_count":0,"created_at":"2024-01-01T00:00:00Z","updated_at":"2024-01-01T00:00:00Z"}"#;
        let err = parse_line::<PropertyLine>(line, PROPERTY_FIELDS)
            .err()
            .unwrap_or_default();
        assert!(
            err.starts_with("price_per_night: must be a decimal string"),
            "{err}"
        );

        let line = line.replace("12.345", "12.34");
        assert!(parse_line::<PropertyLine>(&line, PROPERTY_FIELDS).is_ok());

        let bad_ts = line.replace("2024-01-01T00:00:00Z\",\"updated", "yesterday\",\"updated");
        let err = parse_line::<PropertyLine>(&bad_ts, PROPERTY_FIELDS)
            .err()
            .unwrap_or_default();
        assert!(err.starts_with("created_at: "), "{err}");

        let unknown = line.replace("\"view_count\"", "\"owner\":1,\"view_count\"");
        let err = parse_line::<PropertyLine>(&unknown, PROPERTY_FIELDS)
            .err()
            .unwrap_or_default();
        assert!(
            err.contains("unknown field `owner`") && !err.contains("line 1"),
            "{err}"
        );

        let err = parse_line::<PropertyLine>("{\"id\":", PROPERTY_FIELDS)
            .err()
            .unwrap_or_default();
        assert!(err.starts_with("invalid JSON"), "{err}");
    }

    #[test]
    fn booking_dates_parse_as_iso() {
        let line = r#"{"id":1,"property_id":30,"guest_id":15,"check_in":"2026-04-06","check_out":"2026-04-19","guests":2,"total_price":"2734.16","status":"confirmed","created_at":"2026-01-07T05:25:53Z"}"#;
        let b = parse_line::<BookingLine>(line, BOOKING_FIELDS);
        assert!(
            b.is_ok_and(|b| b.check_in == time::macros::date!(2026 - 04 - 06)
                && b.total_price.cents() == 273_416
                && b.status == BookingStatus::Confirmed)
        );
    }

    #[test]
    fn stored_hash_formats() {
        assert!(valid_stored_hash(&crate::passwords::django_hash(
            "x", "salt", 1000
        )));
        assert!(valid_stored_hash("$argon2id$v=19$m=19456,t=2,p=1$abc$def"));
        assert!(!valid_stored_hash("pbkdf2_sha256$abc$salt$hash"));
        assert!(!valid_stored_hash("md5$salt$hash"));
    }
}
