//! Deterministic seeding: a realistic data set (hosts and guests with
//! African names, properties in 30 African cities, non-overlapping bookings
//! in 2025–2026) that is the same for the same seed. Rows are generated in
//! chunks and written with multi-row inserts in one transaction
//! ([`crate::db::bulk`]); every user's password is `password123`, hashed
//! once and shared (argon2 per user would take minutes).

use std::io::IsTerminal;
use std::time::Instant;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use time::macros::{date, datetime};
use time::{Date, Duration, OffsetDateTime};

use crate::db::Db;
use crate::db::bulk::{BookingRecord, CHUNK_ROWS, PropertyRecord, UserRecord};
use crate::domain::{BookingStatus, Money, Role};

/// What to seed.
#[derive(Debug, Clone)]
pub struct SeedOptions {
    pub users: u32,
    pub properties: u32,
    pub bookings: u32,
    /// Random seed: the same seed gives the same data set.
    pub seed: u64,
}

/// The password of every seeded user.
pub const SEED_PASSWORD: &str = "password123";

/// Cities with their country and a weight (how many properties they get),
/// as in `shared/data/gen_dataset.py`.
const CITIES: [(&str, &str, u32); 30] = [
    ("Nairobi", "Kenya", 6),
    ("Mombasa", "Kenya", 3),
    ("Kisumu", "Kenya", 1),
    ("Lagos", "Nigeria", 5),
    ("Abuja", "Nigeria", 3),
    ("Accra", "Ghana", 4),
    ("Kumasi", "Ghana", 1),
    ("Cape Town", "South Africa", 6),
    ("Johannesburg", "South Africa", 5),
    ("Durban", "South Africa", 3),
    ("Cairo", "Egypt", 4),
    ("Alexandria", "Egypt", 2),
    ("Marrakech", "Morocco", 4),
    ("Casablanca", "Morocco", 3),
    ("Tunis", "Tunisia", 2),
    ("Dakar", "Senegal", 2),
    ("Addis Ababa", "Ethiopia", 3),
    ("Kigali", "Rwanda", 3),
    ("Kampala", "Uganda", 2),
    ("Dar es Salaam", "Tanzania", 3),
    ("Zanzibar City", "Tanzania", 3),
    ("Arusha", "Tanzania", 2),
    ("Harare", "Zimbabwe", 2),
    ("Victoria Falls", "Zimbabwe", 2),
    ("Lusaka", "Zambia", 1),
    ("Windhoek", "Namibia", 1),
    ("Gaborone", "Botswana", 1),
    ("Maputo", "Mozambique", 1),
    ("Antananarivo", "Madagascar", 1),
    ("Luanda", "Angola", 1),
];
const FIRST: [&str; 30] = [
    "Amara", "Kwame", "Zanele", "Tendai", "Chidi", "Nia", "Kofi", "Ayana", "Thabo", "Imani",
    "Femi", "Wanjiru", "Sipho", "Aisha", "Jabari", "Lindiwe", "Obinna", "Makena", "Tariq", "Esi",
    "Baraka", "Nomsa", "Yaw", "Halima", "Rudo", "Kamau", "Adaeze", "Moussa", "Farai", "Naledi",
];
const LAST: [&str; 20] = [
    "Okafor", "Mensah", "Dlamini", "Mwangi", "Nkosi", "Abebe", "Diallo", "Moyo", "Banda", "Otieno",
    "Adeyemi", "Boateng", "Ndlovu", "Kariuki", "Haddad", "Sow", "Tesfaye", "Chukwu", "Phiri",
    "Kamara",
];
const ADJ: [&str; 15] = [
    "Cozy", "Sunny", "Modern", "Charming", "Spacious", "Quiet", "Elegant", "Rustic", "Bright",
    "Stylish", "Breezy", "Leafy", "Central", "Hidden", "Airy",
];
const KIND: [&str; 10] = [
    "apartment",
    "studio",
    "villa",
    "cottage",
    "loft",
    "guesthouse",
    "bungalow",
    "townhouse",
    "cabin",
    "suite",
];
const NEAR: [&str; 10] = [
    "the old town",
    "the beach",
    "the market",
    "the park",
    "the river",
    "the business district",
    "the national museum",
    "the harbour",
    "the hills",
    "the university",
];
const PERKS: [&str; 10] = [
    "fast Wi-Fi",
    "a rooftop terrace",
    "a pool",
    "secure parking",
    "a garden",
    "sea views",
    "a fully equipped kitchen",
    "air conditioning",
    "a backup generator",
    "a braai area",
];

const EPOCH: OffsetDateTime = datetime!(2024-01-01 0:00 UTC);
const BOOK_FROM: Date = date!(2025 - 01 - 01);
const BOOK_TO: Date = date!(2026 - 12 - 31);
const DAY: i64 = 86_400;

/// Seeds `db`; returns a one-line report. Refuses a database that already
/// holds data, so running it twice is harmless.
pub async fn run(db: &Db, opts: &SeedOptions, progress: bool) -> anyhow::Result<String> {
    let started = Instant::now();
    let n_users = i64::from(opts.users);
    let n_props = i64::from(opts.properties);
    let n_bookings = i64::from(opts.bookings);
    // About one in ten users is a host, at least one, and one guest at least
    // when there are two users or more.
    let hosts = if n_users >= 2 {
        (n_users / 10).clamp(1, n_users - 1)
    } else {
        n_users
    };
    let guests = n_users - hosts;
    if n_props > 0 && hosts == 0 {
        anyhow::bail!("cannot seed properties without users: pass --users 1 or more");
    }
    if n_bookings > 0 && (n_props == 0 || guests == 0) {
        anyhow::bail!(
            "cannot seed bookings without properties and guests: pass --properties 1 or more \
             and --users 2 or more"
        );
    }

    let existing = db.table_counts().await?;
    if !existing.is_empty() {
        anyhow::bail!(
            "the database already holds data ({} users, {} properties, {} bookings): \
             seed fills an empty database only",
            existing.users,
            existing.properties,
            existing.bookings
        );
    }

    let password_hash = tokio::task::spawn_blocking(|| crate::passwords::hash(SEED_PASSWORD))
        .await
        .context("password hashing task failed")??;

    let bar = progress_bar(
        progress,
        (n_users + n_props + n_bookings).unsigned_abs(),
        false,
    );
    let mut rng = StdRng::seed_from_u64(opts.seed);
    let mut tx = db.begin_bulk().await?;
    let counts = tx.counts().await?;
    if !counts.is_empty() {
        anyhow::bail!("the database already holds data: seed fills an empty database only");
    }

    // Users: ids 1..=hosts are hosts, the rest guests.
    let mut chunk = Vec::with_capacity(CHUNK_ROWS);
    for id in 1..=n_users {
        let created_at = EPOCH + Duration::seconds(rng.random_range(0..366 * DAY));
        let full_name = format!("{} {}", pick(&mut rng, &FIRST), pick(&mut rng, &LAST));
        chunk.push(UserRecord {
            id,
            email: format!("user{id}@example.com"),
            password_hash: password_hash.clone(),
            full_name,
            role: if id <= hosts { Role::Host } else { Role::Guest },
            created_at,
        });
        if chunk.len() == CHUNK_ROWS || id == n_users {
            tx.insert_users(&chunk)
                .await
                .context("inserting seeded users failed")?;
            bar.inc(chunk.len() as u64);
            chunk.clear();
        }
    }

    // Properties; 5% of them (exactly n/20) featured.
    let featured: std::collections::HashSet<usize> = rand::seq::index::sample(
        &mut rng,
        opts.properties as usize,
        opts.properties as usize / 20,
    )
    .into_iter()
    .collect();
    let total_weight: u32 = CITIES.iter().map(|c| c.2).sum();
    // (price in cents, max guests) of each property, for its bookings.
    let mut prop_info: Vec<(i64, i32)> = Vec::with_capacity(opts.properties as usize);
    let mut chunk = Vec::with_capacity(CHUNK_ROWS);
    for id in 1..=n_props {
        let (city, country) = weighted_city(&mut rng, total_weight);
        let created_at = EPOCH + Duration::seconds(rng.random_range(0..366 * DAY));
        let updated_at = created_at + Duration::seconds(rng.random_range(0..180 * DAY));
        let kind = pick(&mut rng, &KIND);
        let title = format!("{} {kind} in {city}", pick(&mut rng, &ADJ));
        let article = if kind.starts_with(['a', 'e', 'i', 'o', 'u']) {
            "An"
        } else {
            "A"
        };
        let description = format!(
            "{article} {kind} near {} with {} and {}.",
            pick(&mut rng, &NEAR),
            pick(&mut rng, &PERKS),
            pick(&mut rng, &PERKS)
        );
        let price_cents = rng.random_range(1500..=45_000);
        let max_guests = rng.random_range(1..=10);
        prop_info.push((price_cents, max_guests));
        chunk.push(PropertyRecord {
            id,
            host_id: rng.random_range(1..=hosts),
            title,
            description,
            city: city.to_owned(),
            country: country.to_owned(),
            price_per_night: Money::from_cents(price_cents),
            max_guests,
            is_featured: featured.contains(&(prop_info.len() - 1)),
            view_count: rng.random_range(0..2000),
            created_at,
            updated_at,
            deleted_at: None,
        });
        if chunk.len() == CHUNK_ROWS || id == n_props {
            tx.insert_properties(&chunk)
                .await
                .context("inserting seeded properties failed")?;
            bar.inc(chunk.len() as u64);
            chunk.clear();
        }
    }

    // Bookings: a random property and stay, retried until it overlaps no
    // other booking of that property (cancelled ones included).
    let span = (BOOK_TO - BOOK_FROM).whole_days();
    let mut taken: Vec<Vec<(i64, i64)>> = vec![Vec::new(); prop_info.len()];
    let max_attempts = n_bookings * 100 + 10_000;
    let mut attempts = 0;
    let mut chunk = Vec::with_capacity(CHUNK_ROWS);
    let mut id = 0;
    while id < n_bookings {
        attempts += 1;
        if attempts > max_attempts {
            anyhow::bail!(
                "cannot fit {n_bookings} non-overlapping bookings into {n_props} properties \
                 over 2025-2026: seed fewer bookings or more properties"
            );
        }
        let idx = rng.random_range(0..prop_info.len());
        let nights = rng.random_range(1..=14);
        let start = rng.random_range(0..span - nights);
        let end = start + nights;
        let slots = &mut taken[idx];
        if slots.iter().any(|&(s, e)| s < end && start < e) {
            continue;
        }
        slots.push((start, end));
        id += 1;
        let (price_cents, max_guests) = prop_info[idx];
        let check_in = BOOK_FROM + Duration::days(start);
        let created_at =
            check_in.midnight().assume_utc() - Duration::seconds(rng.random_range(DAY..90 * DAY));
        chunk.push(BookingRecord {
            id,
            property_id: idx as i64 + 1,
            guest_id: rng.random_range(hosts + 1..=n_users),
            check_in,
            check_out: BOOK_FROM + Duration::days(end),
            guests: rng.random_range(1..=max_guests),
            total_price: Money::from_cents(price_cents * nights),
            status: if rng.random_bool(0.1) {
                BookingStatus::Cancelled
            } else {
                BookingStatus::Confirmed
            },
            created_at,
        });
        if chunk.len() == CHUNK_ROWS || id == n_bookings {
            tx.insert_bookings(&chunk)
                .await
                .context("inserting seeded bookings failed")?;
            bar.inc(chunk.len() as u64);
            chunk.clear();
        }
    }

    tx.commit()
        .await
        .context("committing the seeded data failed")?;
    bar.finish_and_clear();
    Ok(format!(
        "seeded {n_users} users ({hosts} hosts, {guests} guests), {n_props} properties \
         ({} featured), {n_bookings} bookings with seed {} in {:.1}s; every password is {SEED_PASSWORD}",
        featured.len(),
        opts.seed,
        started.elapsed().as_secs_f64()
    ))
}

/// A progress bar on stderr when asked for and stderr is a terminal; a
/// hidden one otherwise.
/// `bytes`: the length is in bytes (the importer) rather than rows.
pub(crate) fn progress_bar(progress: bool, len: u64, bytes: bool) -> ProgressBar {
    if !(progress && std::io::stderr().is_terminal()) {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    let template = if bytes {
        "[{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} ({eta} left)"
    } else {
        "[{elapsed_precise}] {wide_bar} {pos}/{len} rows ({eta} left)"
    };
    let style =
        ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar
}

fn pick<'a>(rng: &mut StdRng, items: &[&'a str]) -> &'a str {
    items[rng.random_range(0..items.len())]
}

fn weighted_city(rng: &mut StdRng, total_weight: u32) -> (&'static str, &'static str) {
    let mut r = rng.random_range(0..total_weight);
    for (city, country, w) in CITIES {
        if r < w {
            return (city, country);
        }
        r -= w;
    }
    (CITIES[0].0, CITIES[0].1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weighted_city_covers_every_city() {
        let mut rng = StdRng::seed_from_u64(7);
        let total: u32 = CITIES.iter().map(|c| c.2).sum();
        let seen: std::collections::HashSet<&str> = (0..5000)
            .map(|_| weighted_city(&mut rng, total).0)
            .collect();
        assert_eq!(seen.len(), CITIES.len());
    }
}
