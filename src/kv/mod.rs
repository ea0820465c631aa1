//! Redis connections, one per role (the guide's four DBs or one URL each),
//! and [`keys`], the only place Redis and cache keys are built.

pub mod blocking;
pub mod breaker;
pub mod keys;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// The four Redis roles of the guide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The job queue (named `jobs` in commands, logs and metrics).
    Broker,
    Cache,
    Sessions,
    RateLimit,
}

impl Role {
    /// Every role, in the order operators' commands list them.
    pub const ALL: [Role; 4] = [Role::Cache, Role::Sessions, Role::RateLimit, Role::Broker];

    /// Its name in commands, logs and metric labels; the broker is `jobs`.
    pub fn name(self) -> &'static str {
        match self {
            Role::Broker => "jobs",
            Role::Cache => "cache",
            Role::Sessions => "sessions",
            Role::RateLimit => "ratelimit",
        }
    }

    /// The role whose [`Role::name`] is `s`; `None` for an unknown name.
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

/// One Redis role's connection with its timeout and circuit breaker. Every
/// Redis call of a backend goes through [`RedisRole::run`].
#[derive(Clone)]
pub struct RedisRole {
    pub role: Role,
    conn: ConnectionManager,
    timeout: Duration,
    breaker: Arc<breaker::Breaker>,
}

/// Per-command timeout of the request path.
pub const COMMAND_TIMEOUT: Duration = Duration::from_millis(250);

impl RedisRole {
    /// Connects `url` for `role` (fails if Redis cannot be reached now).
    pub async fn connect(role: Role, url: &str) -> anyhow::Result<RedisRole> {
        let conn = connect(url, COMMAND_TIMEOUT)
            .await
            .with_context(|| format!("Redis for the {} role ({})", role.name(), redact(url)))?;
        let role = RedisRole {
            role,
            conn,
            timeout: COMMAND_TIMEOUT,
            breaker: Arc::new(breaker::Breaker::new(
                role.name(),
                3,
                Duration::from_secs(2),
            )),
        };
        for warning in role.configuration_warnings().await {
            tracing::warn!(role = role.role.name(), "{warning}");
        }
        Ok(role)
    }

    /// What is risky in this role's Redis configuration (DESIGN: the cache
    /// may be evicted; sessions, rate limits and jobs must never be, and
    /// sessions and jobs should survive a Redis restart). Managed Redis often
    /// forbids CONFIG: then nothing can be said.
    pub async fn configuration_warnings(&self) -> Vec<String> {
        let get = |name: &'static str| {
            let mut conn = self.conn.clone();
            async move {
                redis::cmd("CONFIG")
                    .arg("GET")
                    .arg(name)
                    .query_async::<Vec<String>>(&mut conn)
                    .await
                    .ok()
                    .and_then(|v| v.into_iter().nth(1))
            }
        };
        let mut warnings = Vec::new();
        let policy = get("maxmemory-policy").await;
        match (self.role, policy.as_deref()) {
            (_, None) => {}
            (Role::Cache, Some("noeviction")) => warnings.push(
                "the cache's Redis refuses writes when full (maxmemory-policy noeviction); \
                 allkeys-lru is recommended"
                    .to_owned(),
            ),
            (Role::Cache, Some(_)) => {}
            (_, Some("noeviction")) => {}
            (_, Some(p)) => warnings.push(format!(
                "maxmemory-policy {p} may evict this role's keys (sessions, rate limits or \
                 jobs would be lost): give it a Redis with noeviction"
            )),
        }
        if matches!(self.role, Role::Sessions | Role::Broker) {
            let (save, aof) = (get("save").await, get("appendonly").await);
            if save.as_deref().is_some_and(|v| v.trim().is_empty()) && aof.as_deref() == Some("no")
            {
                warnings.push(
                    "this Redis persists nothing (no snapshots, no AOF): a restart logs every \
                     user out or loses queued jobs; enable appendonly"
                        .to_owned(),
                );
            }
        }
        warnings
    }

    /// A clone of the multiplexed connection, for calls that must not go
    /// through the breaker (operator commands, blocking reads).
    pub fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// Runs one Redis call with the role's timeout, breaker and metrics.
    pub async fn run<T, F, Fut>(&self, f: F) -> anyhow::Result<T>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        if !self.breaker.allow() {
            anyhow::bail!("Redis {} role unavailable (circuit open)", self.role.name());
        }
        let started = Instant::now();
        let res = tokio::time::timeout(self.timeout, f(self.conn.clone())).await;
        metrics::histogram!("redis_roundtrip_seconds", "role" => self.role.name())
            .record(started.elapsed().as_secs_f64());
        match res {
            Ok(Ok(v)) => {
                self.breaker.success();
                Ok(v)
            }
            Ok(Err(e)) => {
                if e.is_io_error()
                    || e.is_timeout()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()
                {
                    self.breaker.failure();
                }
                Err(anyhow::Error::new(e).context(format!("Redis {} role", self.role.name())))
            }
            Err(_) => {
                self.breaker.failure();
                anyhow::bail!(
                    "Redis {} role timed out after {:?}",
                    self.role.name(),
                    self.timeout
                )
            }
        }
    }
}

/// A Redis URL with any password removed, for messages and logs.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            u.to_string()
        }
        Err(_) => "<invalid URL>".to_owned(),
    }
}
