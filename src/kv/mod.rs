//! Redis connections, one per role (the guide's four DBs or one URL each),
//! and [`keys`], the only place Redis and cache keys are built.

pub mod blocking;
pub mod breaker;
pub mod keys;
pub mod target;

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo, SingleNodeRoutingInfo};
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{AsyncConnectionConfig, RedisError, RedisResult, Value};

pub use breaker::Outcome;
pub use target::{Target, redact};

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

fn manager_config(response_timeout: Duration) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(response_timeout))
        .set_number_of_retries(1)
}

/// A role's connection, whatever its URL names (see [`target`]): a
/// self-reconnecting manager for one server (also a Sentinel's current
/// master), or a cluster connection (it follows `MOVED`/`ASK` and refreshes
/// the slot map itself). Cheap to clone; every clone shares the sockets.
#[derive(Clone)]
pub enum Conn {
    /// One server, or the master a Sentinel named.
    Single(ConnectionManager),
    /// A plain multiplexed connection (blocking reads, operator commands).
    Plain(MultiplexedConnection),
    /// Every master of a Redis Cluster.
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> redis::RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Plain(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Plain(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Plain(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// One master of a role: the server itself for a standalone or Sentinel
/// URL, each master of a cluster (commands are routed to it by address).
#[derive(Clone)]
pub struct Master {
    /// `host:port`, for messages.
    pub addr: String,
    conn: Conn,
    route: Option<(String, u16)>,
}

impl Master {
    /// Runs `cmd` on this master only.
    pub async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> RedisResult<T> {
        let mut conn = self.conn.clone();
        match (&mut conn, &self.route) {
            (Conn::Cluster(c), Some((host, port))) => {
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                    host: host.clone(),
                    port: *port,
                });
                let v = c.route_command(cmd.clone(), routing).await?;
                redis::from_redis_value(v).map_err(Into::into)
            }
            _ => cmd.query_async(&mut conn).await,
        }
    }

    /// One `SCAN cursor MATCH pattern COUNT count` step on this master.
    pub async fn scan_step(
        &self,
        cursor: u64,
        pattern: &str,
        count: usize,
    ) -> RedisResult<(u64, Vec<String>)> {
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(count);
        self.query(&cmd).await
    }
}

impl Conn {
    /// Every master this connection writes to: one for a standalone server
    /// or a Sentinel's master; on a cluster, each master that owns slots
    /// now (asked of the cluster, so after a failover or resharding the
    /// list is the new one). Fails if one of them cannot be reached.
    pub async fn masters(&self) -> RedisResult<Vec<Master>> {
        let Conn::Cluster(c) = self else {
            return Ok(vec![Master {
                addr: "server".to_owned(),
                conn: self.clone(),
                route: None,
            }]);
        };
        let reply = c
            .clone()
            .route_command(
                redis::cmd("PING"),
                RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None)),
            )
            .await?;
        let Value::Map(pairs) = reply else {
            return Err(RedisError::from((
                redis::ErrorKind::UnexpectedReturnType,
                "the masters' PING replies did not come back by address",
            )));
        };
        let mut masters = Vec::with_capacity(pairs.len());
        for (addr, pong) in pairs {
            if let Value::ServerError(e) = pong {
                return Err(RedisError::from(e));
            }
            let addr: String = redis::from_redis_value(addr)?;
            let Some((host, port)) = addr
                .rsplit_once(':')
                .and_then(|(h, p)| Some((h.to_owned(), p.parse::<u16>().ok()?)))
            else {
                return Err(RedisError::from((
                    redis::ErrorKind::UnexpectedReturnType,
                    "a cluster node address without a port",
                )));
            };
            masters.push(Master {
                addr,
                conn: self.clone(),
                route: Some((host, port)),
            });
        }
        masters.sort_by(|a, b| a.addr.cmp(&b.addr));
        Ok(masters)
    }

    /// `SCAN MATCH pattern` on every master (never KEYS), handing each
    /// non-empty batch to `f`; stops once `limit` keys were handed over.
    /// Returns how many were.
    pub async fn scan_each_master<F, Fut>(
        &self,
        pattern: &str,
        count: usize,
        limit: usize,
        mut f: F,
    ) -> anyhow::Result<usize>
    where
        F: FnMut(Vec<String>) -> Fut,
        Fut: Future<Output = anyhow::Result<()>>,
    {
        let mut seen = 0;
        for master in self.masters().await? {
            let mut cursor = 0;
            loop {
                let (next, mut keys) = master
                    .scan_step(cursor, pattern, count)
                    .await
                    .with_context(|| format!("SCAN on {}", master.addr))?;
                keys.truncate(limit.saturating_sub(seen));
                seen += keys.len();
                if !keys.is_empty() {
                    f(keys).await?;
                }
                if seen >= limit {
                    return Ok(seen);
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(seen)
    }

    /// SCAN + UNLINK of every key matching `pattern`, master by master, in
    /// steps of `count` (each step is short, so Redis keeps serving
    /// everyone else). Returns how many keys were removed.
    pub async fn unlink_matching(&self, pattern: &str, count: usize) -> anyhow::Result<u64> {
        let removed = std::sync::atomic::AtomicU64::new(0);
        let removed_ref = &removed;
        let this = self.clone();
        self.scan_each_master(pattern, count, usize::MAX, |keys| {
            let mut conn = this.clone();
            async move {
                // The cluster connection splits a multi-key UNLINK by slot.
                let n: u64 = redis::cmd("UNLINK")
                    .arg(&keys)
                    .query_async(&mut conn)
                    .await?;
                removed_ref.fetch_add(n, Ordering::Relaxed);
                Ok(())
            }
        })
        .await?;
        Ok(removed.into_inner())
    }
}

/// Where a role's connections come from.
enum Source {
    Standalone(redis::Client),
    /// Asked again for the master at each (re)connection.
    Sentinel(tokio::sync::Mutex<SentinelClient>),
    /// The seed nodes' URLs.
    Cluster(Vec<String>),
}

impl Source {
    /// The source `url` names; an error names what is wrong, never the URL.
    fn new(url: &str) -> anyhow::Result<Source> {
        let parsed = target::parse(url).map_err(|m| anyhow::anyhow!("invalid Redis URL: {m}"))?;
        Ok(match parsed {
            Target::Standalone(u) => {
                Source::Standalone(redis::Client::open(u.as_str()).context("invalid Redis URL")?)
            }
            Target::Cluster { nodes } => {
                Self::cluster(&nodes, None).context("invalid Redis Cluster URL")?;
                Source::Cluster(nodes)
            }
            Target::Sentinel(s) => {
                let addrs = s.sentinels.iter().map(|(h, p)| {
                    redis::ConnectionAddr::Tcp(h.trim_matches(['[', ']']).to_owned(), *p)
                });
                let mut b =
                    SentinelClientBuilder::new(addrs, &s.master, SentinelServerType::Master)
                        .context("invalid Redis Sentinel URL")?;
                if let Some(db) = s.db {
                    b = b.set_client_to_redis_db(db);
                }
                if let Some(u) = &s.username {
                    b = b.set_client_to_redis_username(u);
                }
                if let Some(p) = &s.password {
                    b = b.set_client_to_redis_password(p);
                }
                Source::Sentinel(tokio::sync::Mutex::new(
                    b.build().context("invalid Redis Sentinel URL")?,
                ))
            }
        })
    }

    fn is_sentinel(&self) -> bool {
        matches!(self, Source::Sentinel(_))
    }

    /// The client of the server to use now (a Sentinel is asked which).
    async fn client(&self) -> RedisResult<redis::Client> {
        match self {
            Source::Standalone(c) => Ok(c.clone()),
            Source::Sentinel(s) => s.lock().await.async_get_client().await,
            Source::Cluster(_) => Err(RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "a cluster has no single client",
            ))),
        }
    }

    /// A cluster client with `response_timeout` per command (`None`: no
    /// limit). Few, quick retries: the role's own timeout bounds a call,
    /// and the crate's default waits (seconds) would outlast it.
    fn cluster(nodes: &[String], response_timeout: Option<Duration>) -> RedisResult<ClusterClient> {
        let b = ClusterClient::builder(nodes.iter().map(String::as_str))
            .connection_timeout(Duration::from_secs(2))
            .retries(3)
            .min_retry_wait(10)
            .max_retry_wait(200);
        match response_timeout {
            Some(t) => b.response_timeout(t),
            None => b.overall_response_timeout(None),
        }
        .build()
    }

    /// A self-reconnecting connection for a role's shared use.
    async fn open_managed(&self, response_timeout: Duration) -> RedisResult<Conn> {
        match self {
            Source::Cluster(nodes) => Ok(Conn::Cluster(
                Self::cluster(nodes, Some(response_timeout))?
                    .get_async_connection()
                    .await?,
            )),
            _ => Ok(Conn::Single(
                ConnectionManager::new_with_config(
                    self.client().await?,
                    manager_config(response_timeout),
                )
                .await?,
            )),
        }
    }

    /// A connection of its own (not shared with the role's callers), with
    /// `response_timeout` per command (`None`: wait as long as it takes).
    async fn open_plain(&self, response_timeout: Option<Duration>) -> RedisResult<Conn> {
        match self {
            Source::Cluster(nodes) => Ok(Conn::Cluster(
                Self::cluster(nodes, response_timeout)?
                    .get_async_connection()
                    .await?,
            )),
            _ => {
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(Duration::from_secs(2)))
                    .set_response_timeout(response_timeout);
                Ok(Conn::Plain(
                    self.client()
                        .await?
                        .get_multiplexed_async_connection_with_config(&config)
                        .await?,
                ))
            }
        }
    }
}

/// Opens a multiplexed, self-reconnecting connection to whatever `url`
/// names (see [`target`]). Each command has a short response timeout so
/// that a dead Redis becomes an error quickly.
pub async fn connect(url: &str, response_timeout: Duration) -> anyhow::Result<Conn> {
    Source::new(url)?
        .open_managed(response_timeout)
        .await
        .context("cannot connect to Redis")
}

/// A connection of its own to whatever `url` names, for operator commands
/// (no breaker; `response_timeout` per command).
pub async fn connect_plain(url: &str, response_timeout: Duration) -> anyhow::Result<Conn> {
    Source::new(url)?
        .open_plain(Some(response_timeout))
        .await
        .context("cannot connect to Redis")
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
/// | I/O, refused, dropped, client timeout | yes | (the manager does) | no answer |
/// | `LOADING` | yes | no | restarted, reading its data: seconds |
/// | `BUSY` | yes | no | a script blocks every client |
/// | `MASTERDOWN` | yes | yes | a replica without master: the endpoint may have moved |
/// | `READONLY` | yes | yes | failover: this connection reaches the old master, now a replica; a new one follows the endpoint (DNS, VIP, proxy) to the new master |
/// | `TRYAGAIN`, `CLUSTERDOWN` | yes | no | the cluster cannot serve the slot now |
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
        {
            let mut last = self
                .last_reconnect
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|t| t.elapsed() < RECONNECT_INTERVAL) {
                return;
            }
            if self.reconnecting.swap(true, Ordering::AcqRel) {
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
            .context("cannot connect to Redis")
            .with_context(context)?;
        let role = RedisRole {
            role,
            conn: Arc::new(Connection {
                current: RwLock::new(manager),
                source,
                response_timeout: COMMAND_TIMEOUT,
                reconnecting: AtomicBool::new(false),
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
        metrics::histogram!("redis_roundtrip_seconds", "role" => self.role.name())
            .record(started.elapsed().as_secs_f64());
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
