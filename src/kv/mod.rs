//! Redis connections, one per role (the guide's four DBs or one URL each),
//! and [`keys`], the only place Redis and cache keys are built.

pub mod keys;

use std::time::Duration;

use anyhow::Context;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// The four Redis roles of the guide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Broker,
    Cache,
    Sessions,
    RateLimit,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Cache, Role::Sessions, Role::RateLimit, Role::Broker];

    pub fn name(self) -> &'static str {
        match self {
            Role::Broker => "jobs",
            Role::Cache => "cache",
            Role::Sessions => "sessions",
            Role::RateLimit => "ratelimit",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.name() == s)
    }
}

/// Opens a multiplexed, self-reconnecting connection. Each command has a
/// short response timeout so that a dead Redis becomes an error quickly.
pub async fn connect(url: &str, response_timeout: Duration) -> anyhow::Result<ConnectionManager> {
    let client = redis::Client::open(url).context("invalid Redis URL")?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(response_timeout))
        .set_number_of_retries(1);
    ConnectionManager::new_with_config(client, config)
        .await
        .context("cannot connect to Redis")
}
