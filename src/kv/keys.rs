//! Every key this service stores, built from typed values under the
//! configured prefix and the role's namespace:
//! `{prefix}{namespace}:{hierarchical name}`. No other module formats keys.

use sha2::{Digest, Sha256};

use crate::domain::Email;

/// Key builder for one deployment (one prefix).
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

/// A short, stable, non-reversible id for an email, so that keys carry no
/// personal data.
pub fn email_tag(email: &Email) -> String {
    let digest = Sha256::digest(email.as_str().as_bytes());
    digest[..12].iter().map(|b| format!("{b:02x}")).collect()
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Keys {
            prefix: prefix.to_owned(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `{prefix}cache:` — everything of the cache role starts with this.
    pub fn cache_ns(&self) -> String {
        format!("{}cache:", self.prefix)
    }

    /// The logical (un-prefixed) cache key `name`, prefixed.
    pub fn cache(&self, name: &str) -> String {
        format!("{}cache:{name}", self.prefix)
    }

    /// Generation counter of a cache namespace (bumped to invalidate it).
    pub fn generation(&self, ns: &str) -> String {
        self.cache(&format!("gen:{ns}"))
    }

    /// Whole response of the public property list for one normalized query.
    pub fn property_list(&self, generation: u64, normalized_query: &str) -> String {
        self.cache(&format!("property:list:g{generation}:{normalized_query}"))
    }

    pub fn featured(&self, generation: u64) -> String {
        self.cache(&format!("property:list:featured:g{generation}"))
    }

    pub fn property_detail(&self, generation: u64, id: i64) -> String {
        self.cache(&format!("property:detail:g{generation}:{id}"))
    }

    pub fn dashboard(&self, generation: u64, user_generation: u64, user_id: i64) -> String {
        self.cache(&format!(
            "user:dashboard:{user_id}:g{generation}:u{user_generation}"
        ))
    }

    /// Namespace of one user's cached data (bumped when their bookings change).
    pub fn user_ns(user_id: i64) -> String {
        format!("user:{user_id}")
    }

    /// The one-time login code of an email.
    pub fn otp(&self, email: &Email) -> String {
        self.cache(&format!("otp:{}", email_tag(email)))
    }

    /// Views counted but not yet written to the database.
    pub fn views_pending(&self) -> String {
        self.cache("views:pending")
    }

    pub fn session_ns(&self) -> String {
        format!("{}session:", self.prefix)
    }

    pub fn session(&self, id_hash: &str) -> String {
        format!("{}session:{id_hash}", self.prefix)
    }

    pub fn user_sessions(&self, user_id: i64) -> String {
        format!("{}session:user:{user_id}", self.prefix)
    }

    pub fn ratelimit_ns(&self) -> String {
        format!("{}rl:", self.prefix)
    }

    /// Limiter state of one (scope, subject).
    pub fn ratelimit(&self, scope: &str, subject: &str) -> String {
        format!("{}rl:{scope}:{subject}", self.prefix)
    }

    pub fn jobs_ns(&self) -> String {
        format!("{}jobs:", self.prefix)
    }
}
