//! [`Identities`]: who the user of a session is, without a database read
//! per request.
//!
//! Coherence: what this holds (id, email, full name, role, creation time)
//! is never changed by the service once the user registered — a password
//! change touches only the hash, which is not held here — so an entry
//! cannot become wrong through the API. Whether the caller is still signed
//! in is NOT cached: the session is looked up in its store on every request
//! (on Redis one round trip shared by concurrent requests), so logout,
//! logout-all, a password change and `sessions revoke` take effect for the
//! next request on every instance. The lifetime bound ([`TTL`]) covers
//! changes made to the users table outside the service (an operator's SQL).

use std::time::Duration;

use crate::db::Db;
use crate::db::users::User;

/// Users held at most (a bound whatever the number of users).
const CAPACITY: u64 = 100_000;
/// How long an entry is trusted before it is read again.
const TTL: Duration = Duration::from_secs(600);

/// Users by id, read from the database once and then from memory.
#[derive(Clone)]
pub struct Identities {
    db: Db,
    users: moka::future::Cache<i64, User, foldhash::quality::RandomState>,
}

impl Identities {
    /// An empty directory over `db`.
    pub fn new(db: Db) -> Self {
        Identities {
            db,
            users: moka::future::Cache::builder()
                .max_capacity(CAPACITY)
                .time_to_live(TTL)
                .build_with_hasher(foldhash::quality::RandomState::default()),
        }
    }

    /// The user with `id`; `None` if there is none (not remembered, so a
    /// user created later is found).
    pub async fn user(&self, id: i64) -> anyhow::Result<Option<User>> {
        if let Some(u) = self.users.get(&id).await {
            return Ok(Some(u));
        }
        let found = self.db.user_by_id(id).await?;
        if let Some(u) = &found {
            self.users.insert(id, u.clone()).await;
        }
        Ok(found)
    }
}
