//! Redis connections, one per role (the guide's four DBs or one URL each;
//! a URL may name one server, a Redis Cluster or a Sentinel-managed master:
//! [`target`], [`conn`]), with the role's timeout, breaker, reconnection and
//! restart check ([`RedisRole`]), and [`keys`], the only place Redis and
//! cache keys are built.

pub mod blocking;
pub mod breaker;
pub mod coalesce;
pub mod conn;
pub mod keys;
pub mod target;
pub mod tls;

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use redis::RedisResult;

pub use breaker::Outcome;
pub use conn::{Conn, Master, connect, connect_plain};
pub use target::{Target, redact};

use conn::Source;

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

/// How many consecutive unhealthy outcomes open a role's breaker.
pub const BREAKER_THRESHOLD: u32 = 3;
/// How long an open breaker refuses calls before it lets one probe through:
/// the bound on how long after Redis answers again a role stays refused
/// (a constant for now; it will move into the typed settings).
pub const BREAKER_COOL_DOWN: Duration = Duration::from_secs(2);
/// A half-open probe that has not reported after this long (it cannot
/// normally outlive [`COMMAND_TIMEOUT`]) no longer blocks the next probe.
pub const PROBE_DEADLINE: Duration = Duration::from_secs(1);
/// Least time between two forced reconnections of one role (after
/// `READONLY`/`MASTERDOWN`), so a misconfigured endpoint is not hammered.
const RECONNECT_INTERVAL: Duration = Duration::from_secs(1);

/// A TTL in whole milliseconds for `PX`/`PEXPIRE`, at least 1 (Redis
/// refuses `PX 0`).
pub fn ttl_ms(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// What one Redis error says about the server (see [`verdict`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// Counted by the role's breaker as this.
    pub outcome: Outcome,
    /// The connection may lead to the wrong server: open a new one.
    pub reconnect: bool,
}

/// The table of Redis errors: which mean "this Redis cannot serve now"
/// (the breaker counts them; enough in a row open it) and which are about
/// the one call while the server itself answers (they count as healthy, so
/// a breaker never opens, or stays half-open, on an error that says the
/// server is there). Every error lands in exactly one row.
///
/// | error | unhealthy | reconnect | why |
/// |---|---|---|---|
/// | I/O, refused, dropped, client timeout | yes | the manager does; on Sentinel the sentinels are asked again (the master may have been replaced) | no answer |
/// | `LOADING` | yes | no | restarted, reading its data: seconds |
/// | `BUSY` | yes | no | a script blocks every client |
/// | `MASTERDOWN` | yes | yes | a replica without master: the endpoint may have moved |
/// | `READONLY` | yes | yes | failover: this connection reaches the old master, now a replica; a new one follows the endpoint (DNS, VIP, proxy; on Sentinel: the sentinels) to the new master |
/// | `TRYAGAIN`, `CLUSTERDOWN` | yes | no | the cluster cannot serve the slot now (the cluster connection itself follows `MOVED`/`ASK` and refreshes its slot map) |
/// | `MISCONF` | yes | no | it refuses writes until it can persist again |
/// | `NOAUTH`, `WRONGPASS`, auth failed | yes | no | we cannot use it |
/// | `OOM` | no | no | full (noeviction): reads still answered, only writes refused; callers skip the write |
/// | `NOSCRIPT` | no | no | a restart forgot the scripts; `Script` reloads them (EVALSHA, then SCRIPT LOAD and EVALSHA again), so this only surfaces if that failed too |
/// | `WRONGTYPE`, `ERR` (script errors, syntax), `EXECABORT`, `NOPERM`, other codes | no | no | about the call or the data, not the server |
/// | reply parse / type conversion, client-side | no | no | about the call |
pub fn verdict(e: &redis::RedisError) -> Verdict {
    let (outcome, reconnect) = match e.code() {
        Some("LOADING" | "BUSY" | "TRYAGAIN" | "CLUSTERDOWN" | "MISCONF") => {
            (Outcome::Unhealthy, false)
        }
        Some("MASTERDOWN" | "READONLY") => (Outcome::Unhealthy, true),
        Some("NOAUTH" | "WRONGPASS") => (Outcome::Unhealthy, false),
        Some(_) => (Outcome::Healthy, false),
        None if e.is_io_error()
            || e.is_timeout()
            || e.is_connection_dropped()
            || e.is_connection_refusal()
            || e.kind() == redis::ErrorKind::AuthenticationFailed =>
        {
            (Outcome::Unhealthy, false)
        }
        None => (Outcome::Healthy, false),
    };
    Verdict { outcome, reconnect }
}

/// One role's connection manager, replaceable: a forced reconnection (see
/// [`verdict`]) builds a new manager in the background and swaps it in;
/// calls in flight keep the old one until they finish. (`ConnectionManager`
/// reconnects by itself only when the socket breaks, not when a live socket
/// reaches a server that has become a replica.)
struct Connection {
    current: RwLock<Conn>,
    source: Source,
    response_timeout: Duration,
    reconnecting: AtomicBool,
    /// A forced reconnection came while one was running: run one more.
    again: AtomicBool,
    last_reconnect: Mutex<Option<Instant>>,
    /// `run_id`s of the masters last verified (one for a single server);
    /// a new one means a restart or another server (failover, promotion).
    run_ids: Mutex<BTreeSet<String>>,
    /// The connection broke (or the server said LOADING): until the server
    /// is verified, calls are refused (see [`RedisRole::run`]).
    suspect: AtomicBool,
    verifying: AtomicBool,
    hooks: Mutex<Vec<RestartHook>>,
}

/// What a role's owner does when its Redis turns out to have restarted or
/// been replaced: its data may be older than what it acknowledged (AOF
/// `everysec` loses up to a second or two of writes even on a process
/// crash; a promoted replica lacks what had not replicated yet).
pub type RestartHook =
    Arc<dyn Fn(Conn) -> futures::future::BoxFuture<'static, redis::RedisResult<()>> + Send + Sync>;

/// How long the restart check (INFO and the hooks) may take.
const VERIFY_TIMEOUT: Duration = Duration::from_secs(30);

/// The `run_id` in an `INFO server` reply.
fn run_id(info: &str) -> Option<String> {
    info.lines()
        .find_map(|l| l.strip_prefix("run_id:"))
        .map(|v| v.trim().to_owned())
}

/// The `run_id` of every master of `conn`.
async fn master_run_ids(conn: &Conn) -> RedisResult<BTreeSet<String>> {
    let mut ids = BTreeSet::new();
    for master in conn.masters().await? {
        let info: String = master.query(redis::cmd("INFO").arg("server")).await?;
        ids.extend(run_id(&info));
    }
    Ok(ids)
}

/// What is risky in one master's configuration for `role` (see
/// [`RedisRole::configuration_warnings`]).
async fn master_warnings(role: Role, master: &Master) -> Vec<String> {
    let get = |name: &'static str| async move {
        master
            .query::<Vec<String>>(redis::cmd("CONFIG").arg("GET").arg(name))
            .await
            .ok()
            .and_then(|v| v.into_iter().nth(1))
    };
    let mut warnings = Vec::new();
    let policy = get("maxmemory-policy").await;
    match (role, policy.as_deref()) {
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
    if matches!(role, Role::Sessions | Role::Broker) {
        let (save, aof) = (get("save").await, get("appendonly").await);
        if save.as_deref().is_some_and(|v| v.trim().is_empty()) && aof.as_deref() == Some("no") {
            warnings.push(
                "this Redis persists nothing (no snapshots, no AOF): a restart logs every \
                 user out or loses queued jobs; enable appendonly"
                    .to_owned(),
            );
        }
    }
    warnings
}

impl Connection {
    fn get(&self) -> Conn {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Starts one background reconnection, unless one runs or ran within
    /// [`RECONNECT_INTERVAL`].
    fn reconnect(self: &Arc<Self>, role: Role, breaker: Arc<breaker::Breaker>) {
        self.start_reconnect(role, breaker, false);
    }

    /// [`Self::reconnect`]; `force` (the sentinels announced a new master)
    /// skips the interval, and if a reconnection is running, one more
    /// follows it (the running one may have found the old master).
    fn start_reconnect(self: &Arc<Self>, role: Role, breaker: Arc<breaker::Breaker>, force: bool) {
        {
            let mut last = self
                .last_reconnect
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if !force && last.is_some_and(|t| t.elapsed() < RECONNECT_INTERVAL) {
                return;
            }
            if self.reconnecting.swap(true, Ordering::AcqRel) {
                if force {
                    self.again.store(true, Ordering::Release);
                }
                return;
            }
            *last = Some(Instant::now());
        }
        let this = self.clone();
        tokio::spawn(async move {
            match this.source.open_managed(this.response_timeout).await {
                Ok(fresh) => {
                    *this.current.write().unwrap_or_else(|e| e.into_inner()) = fresh;
                    // Possibly another server now: check it before use. The
                    // breaker's count was about the old server: start afresh.
                    this.suspect.store(true, Ordering::Release);
                    breaker.reset();
                    tracing::info!(role = role.name(), "Redis connection replaced");
                }
                Err(e) => tracing::warn!(
                    role = role.name(),
                    error = %e,
                    "Redis reconnection failed; will retry on the next such error"
                ),
            }
            this.reconnecting.store(false, Ordering::Release);
            if this.again.swap(false, Ordering::AcqRel) {
                this.start_reconnect(role, breaker, true);
            }
        });
    }

    /// Starts the check of a suspect connection unless one runs: reads the
    /// server's `run_id`; if it changed, runs the restart hooks; then lets
    /// calls through again. The check is a task of its own, so no caller's
    /// cancellation can cut it short.
    fn verify(self: &Arc<Self>, role: Role, breaker: Arc<breaker::Breaker>) {
        if self.verifying.swap(true, Ordering::AcqRel) {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            let res = tokio::time::timeout(VERIFY_TIMEOUT, this.check_server(role)).await;
            match res {
                Ok(Ok(())) => this.suspect.store(false, Ordering::Release),
                Ok(Err(e)) if verdict(&e).outcome == Outcome::Healthy => {
                    // INFO refused (a managed Redis): nothing can be told.
                    tracing::debug!(role = role.name(), error = %e, "cannot read the run id");
                    this.suspect.store(false, Ordering::Release);
                }
                // Still down or loading: the next call retries. A Sentinel's
                // master that does not answer may have been replaced: ask
                // the sentinels again (nothing else would, as no call
                // reaches the server meanwhile).
                Ok(Err(e)) => {
                    let lost = e.is_io_error()
                        || e.is_timeout()
                        || e.is_connection_dropped()
                        || e.is_connection_refusal();
                    if this.source.is_sentinel() && (lost || verdict(&e).reconnect) {
                        this.reconnect(role, breaker);
                    }
                }
                Err(_) => {
                    if this.source.is_sentinel() {
                        this.reconnect(role, breaker);
                    }
                }
            }
            this.verifying.store(false, Ordering::Release);
        });
    }

    async fn check_server(&self, role: Role) -> redis::RedisResult<()> {
        let conn = self.get();
        let now = master_run_ids(&conn).await?;
        let before = self
            .run_ids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if !before.is_empty() && !now.is_empty() && before != now {
            tracing::warn!(
                role = role.name(),
                "Redis restarted or was replaced; its data may be older than it acknowledged"
            );
            let hooks = self.hooks.lock().unwrap_or_else(|e| e.into_inner()).clone();
            for hook in hooks {
                hook(conn.clone()).await?;
            }
        }
        *self.run_ids.lock().unwrap_or_else(|e| e.into_inner()) = now;
        Ok(())
    }
}

/// How long a quiet `+switch-master` subscription waits before checking
/// that its role still exists.
const WATCH_IDLE_CHECK: Duration = Duration::from_secs(5);

/// Follows the sentinels' `+switch-master` announcements for `master` and
/// replaces the role's connection at once when one comes. Hand-written:
/// redis-rs' sentinel client finds the master when asked but does not
/// watch. Without this a switch is noticed only when the old master fails a
/// call; an old master that stays up (a failover the sentinels were asked
/// for, a network partition) does so only once the sentinels demote it,
/// up to seconds later, and meanwhile accepts writes that its resync with
/// the new master drops. Listens on one sentinel at a time, moving to the
/// next (with backoff) when it goes; ends once the role is dropped.
fn watch_switches(
    conn: std::sync::Weak<Connection>,
    sentinels: Vec<String>,
    master: String,
    role: Role,
    breaker: Arc<breaker::Breaker>,
) {
    use futures::StreamExt;
    tokio::spawn(async move {
        let mut pause = Duration::from_millis(100);
        loop {
            for sentinel in &sentinels {
                if conn.strong_count() == 0 {
                    return;
                }
                let Ok(client) = tls::client(sentinel) else {
                    continue;
                };
                let pubsub =
                    tokio::time::timeout(Duration::from_secs(2), client.get_async_pubsub()).await;
                let Ok(Ok(mut pubsub)) = pubsub else {
                    continue;
                };
                if pubsub.subscribe("+switch-master").await.is_err() {
                    continue;
                }
                pause = Duration::from_millis(100);
                tracing::debug!(role = role.name(), sentinel = %sentinel,
                    "following the sentinels' master switches");
                let mut messages = pubsub.into_on_message();
                loop {
                    match tokio::time::timeout(WATCH_IDLE_CHECK, messages.next()).await {
                        Err(_) if conn.strong_count() == 0 => return,
                        Err(_) => {}
                        Ok(None) => break, // this sentinel went: the next one
                        Ok(Some(msg)) => {
                            // `<name> <old ip> <old port> <new ip> <new port>`
                            let payload: String = msg.get_payload().unwrap_or_default();
                            if payload.split(' ').next() != Some(master.as_str()) {
                                continue;
                            }
                            let Some(c) = conn.upgrade() else { return };
                            tracing::info!(
                                role = role.name(),
                                "the sentinels switched the master; reconnecting"
                            );
                            c.start_reconnect(role, breaker.clone(), true);
                        }
                    }
                }
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(5));
        }
    });
}

/// One Redis role's connection with its timeout and circuit breaker. Every
/// Redis call of a backend goes through [`RedisRole::run`].
#[derive(Clone)]
pub struct RedisRole {
    pub role: Role,
    conn: Arc<Connection>,
    timeout: Duration,
    breaker: Arc<breaker::Breaker>,
}

/// Per-command timeout of the request path.
pub const COMMAND_TIMEOUT: Duration = Duration::from_millis(250);

impl RedisRole {
    /// Connects `url` for `role` (fails if Redis cannot be reached now):
    /// one server, a cluster or a Sentinel's master (see [`target`]).
    pub async fn connect(role: Role, url: &str) -> anyhow::Result<RedisRole> {
        let context = || format!("Redis for the {} role ({})", role.name(), redact(url));
        let source = Source::new(url).with_context(context)?;
        let manager = source
            .open_managed(COMMAND_TIMEOUT)
            .await
            .map_err(|e| tls::with_hint(url, e))
            .context("cannot connect to Redis")
            .with_context(context)?;
        let role = RedisRole {
            role,
            conn: Arc::new(Connection {
                current: RwLock::new(manager),
                source,
                response_timeout: COMMAND_TIMEOUT,
                reconnecting: AtomicBool::new(false),
                again: AtomicBool::new(false),
                last_reconnect: Mutex::new(None),
                run_ids: Mutex::new(BTreeSet::new()),
                suspect: AtomicBool::new(false),
                verifying: AtomicBool::new(false),
                hooks: Mutex::new(Vec::new()),
            }),
            timeout: COMMAND_TIMEOUT,
            breaker: Arc::new(breaker::Breaker::new(
                role.name(),
                BREAKER_THRESHOLD,
                BREAKER_COOL_DOWN,
                PROBE_DEADLINE,
            )),
        };
        for warning in role.configuration_warnings().await {
            tracing::warn!(role = role.role.name(), "{warning}");
        }
        if let Ok(ids) = master_run_ids(&role.connection()).await {
            *role.conn.run_ids.lock().unwrap_or_else(|e| e.into_inner()) = ids;
        }
        if let Some((sentinels, master)) = role.conn.source.sentinel_watch() {
            watch_switches(
                Arc::downgrade(&role.conn),
                sentinels,
                master,
                role.role,
                role.breaker.clone(),
            );
        }
        Ok(role)
    }

    /// Registers what to do when this role's Redis turns out to have
    /// restarted or been replaced (see [`RestartHook`]); it runs before any
    /// other call reaches the new server.
    pub fn on_restart(&self, hook: RestartHook) {
        self.conn
            .hooks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(hook);
    }
    /// What is risky in this role's Redis configuration (DESIGN: the cache
    /// may be evicted; sessions, rate limits and jobs must never be, and
    /// sessions and jobs should survive a Redis restart). Managed Redis often
    /// forbids CONFIG: then nothing can be said.
    ///
    /// Every master of the role is asked (a cluster's masters may differ);
    /// a warning names the master it is about when there are several.
    pub async fn configuration_warnings(&self) -> Vec<String> {
        let masters = match self.connection().masters().await {
            Ok(m) => m,
            Err(e) => {
                return vec![format!(
                    "cannot list this role's Redis masters to check their configuration: {e}"
                )];
            }
        };
        let several = masters.len() > 1;
        let mut warnings = Vec::new();
        for master in masters {
            let at = |w: String| {
                if several {
                    format!("{}: {w}", master.addr)
                } else {
                    w
                }
            };
            for w in master_warnings(self.role, &master).await {
                warnings.push(at(w));
            }
        }
        warnings
    }

    /// A clone of the multiplexed connection, for calls that must not go
    /// through the breaker (operator commands, blocking reads).
    pub fn connection(&self) -> Conn {
        self.conn.get()
    }

    /// Runs one Redis call with the role's timeout, breaker and metrics.
    /// Every outcome reaches the breaker: a value, each kind of error (as
    /// [`verdict`] classifies it), the timeout, and cancellation (the
    /// permit reports itself when this future is dropped mid-call).
    pub async fn run<T, F, Fut>(&self, f: F) -> anyhow::Result<T>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        if self.conn.suspect.load(Ordering::Acquire) {
            // The connection broke: the server may have restarted with older
            // data. Nothing reads it until that is checked (milliseconds).
            self.conn.verify(self.role, self.breaker.clone());
            anyhow::bail!(
                "Redis {} role unavailable (checking the server after a reconnection)",
                self.role.name()
            );
        }
        let Some(permit) = self.breaker.try_acquire() else {
            anyhow::bail!("Redis {} role unavailable (circuit open)", self.role.name());
        };
        let started = Instant::now();
        let res = tokio::time::timeout(self.timeout, f(self.connection())).await;
        crate::telemetry::observe(
            "redis_roundtrip_seconds",
            &[("role", self.role.name())],
            started.elapsed().as_secs_f64(),
        );
        match res {
            Ok(Ok(v)) => {
                permit.report(Outcome::Healthy);
                Ok(v)
            }
            Ok(Err(e)) => {
                let v = verdict(&e);
                permit.report(v.outcome);
                let kind = e
                    .code()
                    .unwrap_or(if e.is_io_error() { "io" } else { "other" });
                metrics::counter!("redis_errors_total", "role" => self.role.name(),
                    "code" => kind.to_owned())
                .increment(1);
                // A Sentinel's master that stopped answering may have been
                // replaced: its manager would only ever reconnect to the
                // same address, so the sentinels are asked again.
                let lost = e.is_io_error()
                    || e.is_timeout()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal();
                if v.reconnect || (lost && self.conn.source.is_sentinel()) {
                    self.conn.reconnect(self.role, self.breaker.clone());
                }
                if e.is_connection_dropped()
                    || e.is_connection_refusal()
                    || e.code() == Some("LOADING")
                {
                    self.conn.suspect.store(true, Ordering::Release);
                }
                Err(anyhow::Error::new(e).context(format!("Redis {} role", self.role.name())))
            }
            Err(_) => {
                permit.report(Outcome::Unhealthy);
                if self.conn.source.is_sentinel() {
                    self.conn.reconnect(self.role, self.breaker.clone());
                }
                anyhow::bail!(
                    "Redis {} role timed out after {:?}",
                    self.role.name(),
                    self.timeout
                )
            }
        }
    }

    /// Whether the role's breaker refuses calls now (for `/health` and tests).
    pub fn is_refusing(&self) -> bool {
        self.breaker.is_open()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The error Redis answers with this RESP error line.
    fn server_error(line: &str) -> redis::RedisError {
        match redis::parse_redis_value(format!("-{line}\r\n").as_bytes())
            .and_then(redis::Value::extract_error)
        {
            Err(e) => e,
            Ok(v) => panic!("{line:?} parsed as a value: {v:?}"),
        }
    }

    #[test]
    fn every_kind_of_error_has_a_verdict() {
        let unhealthy = |reconnect| Verdict {
            outcome: Outcome::Unhealthy,
            reconnect,
        };
        let healthy = Verdict {
            outcome: Outcome::Healthy,
            reconnect: false,
        };
        let cases = [
            (
                "LOADING Redis is loading the dataset in memory",
                unhealthy(false),
            ),
            ("BUSY Redis is busy running a script.", unhealthy(false)),
            ("MASTERDOWN Link with MASTER is down", unhealthy(true)),
            (
                "READONLY You can't write against a read only replica.",
                unhealthy(true),
            ),
            (
                "TRYAGAIN Multiple keys request during rehashing of slot",
                unhealthy(false),
            ),
            ("CLUSTERDOWN The cluster is down", unhealthy(false)),
            (
                "MISCONF Redis is configured to save RDB snapshots",
                unhealthy(false),
            ),
            ("NOAUTH Authentication required.", unhealthy(false)),
            ("WRONGPASS invalid username-password pair", unhealthy(false)),
            (
                "OOM command not allowed when used memory > 'maxmemory'.",
                healthy,
            ),
            ("NOSCRIPT No matching script. Please use EVAL.", healthy),
            (
                "WRONGTYPE Operation against a key holding the wrong kind of value",
                healthy,
            ),
            (
                "ERR user_script:1: Script attempted to access nonexistent global",
                healthy,
            ),
            (
                "EXECABORT Transaction discarded because of previous errors.",
                healthy,
            ),
            ("NOPERM this user has no permissions", healthy),
        ];
        for (line, expected) in cases {
            assert_eq!(verdict(&server_error(line)), expected, "{line}");
        }
        for kind in [
            std::io::ErrorKind::ConnectionRefused,
            std::io::ErrorKind::ConnectionReset,
            std::io::ErrorKind::BrokenPipe,
            std::io::ErrorKind::TimedOut,
            std::io::ErrorKind::UnexpectedEof,
        ] {
            let e = redis::RedisError::from(std::io::Error::from(kind));
            assert_eq!(verdict(&e), unhealthy(false), "{kind:?}");
        }
        let conversion = redis::RedisError::from((
            redis::ErrorKind::UnexpectedReturnType,
            "response was of incompatible type",
        ));
        assert_eq!(verdict(&conversion), healthy);
    }
}
