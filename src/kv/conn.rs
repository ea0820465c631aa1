//! A role's connection, whatever its URL names (see [`super::target`]):
//! [`Conn`] (one server's manager, a cluster connection, a plain
//! connection), where connections come from ([`Source`]: a client, the
//! sentinels, a cluster's seeds), and [`Master`], the "for each master of
//! this role" facility (SCAN, UNLINK, INFO, CONFIG on every master) used by
//! the startup checks, the restart check, the cache's pattern deletes and
//! the operator commands.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo, SingleNodeRoutingInfo, Slot};
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{AsyncConnectionConfig, RedisError, RedisResult, Value};

use super::target::{self, Target};

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
    /// Whether this is a cluster connection.
    pub fn is_cluster(&self) -> bool {
        matches!(self, Conn::Cluster(_))
    }

    /// The positions of `keys` in groups that may each go into one script
    /// call: on a cluster by hash slot (a script may only touch the keys of
    /// one slot), elsewhere all in one group. Positions keep their order
    /// within a group; groups come in the order of their first key.
    pub fn script_groups<S: AsRef<str>>(&self, keys: &[S]) -> Vec<Vec<usize>> {
        if !self.is_cluster() {
            return if keys.is_empty() {
                Vec::new()
            } else {
                vec![(0..keys.len()).collect()]
            };
        }
        let mut groups: Vec<(Slot, Vec<usize>)> = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            let slot = Slot::for_key(key.as_ref());
            match groups.iter_mut().find(|(s, _)| *s == slot) {
                Some((_, members)) => members.push(i),
                None => groups.push((slot, vec![i])),
            }
        }
        groups.into_iter().map(|(_, members)| members).collect()
    }

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
pub(crate) enum Source {
    Standalone(redis::Client),
    /// Asked again for the master at each (re)connection.
    Sentinel {
        client: tokio::sync::Mutex<SentinelClient>,
        /// The sentinels' addresses and the master's name, for
        /// [`Source::sentinel_watch`].
        sentinels: Vec<(String, u16)>,
        master: String,
        /// The sentinels are reached over TLS.
        tls: bool,
    },
    /// The seed nodes' URLs.
    Cluster(Vec<String>),
}

impl Source {
    /// The source `url` names; an error names what is wrong, never the URL.
    pub(crate) fn new(url: &str) -> anyhow::Result<Source> {
        let parsed = target::parse(url).map_err(|m| anyhow::anyhow!("invalid Redis URL: {m}"))?;
        Ok(match parsed {
            Target::Standalone(u) => {
                Source::Standalone(super::tls::client(&u).context("invalid Redis URL")?)
            }
            Target::Cluster { nodes } => {
                Self::cluster(&nodes, None).context("invalid Redis Cluster URL")?;
                Source::Cluster(nodes)
            }
            Target::Sentinel(s) => {
                let addrs = s.sentinels.iter().map(|(h, p)| {
                    let host = h.trim_matches(['[', ']']).to_owned();
                    if s.tls {
                        redis::ConnectionAddr::TcpTls {
                            host,
                            port: *p,
                            insecure: false,
                            tls_params: None,
                        }
                    } else {
                        redis::ConnectionAddr::Tcp(host, *p)
                    }
                });
                let mut b =
                    SentinelClientBuilder::new(addrs, &s.master, SentinelServerType::Master)
                        .context("invalid Redis Sentinel URL")?;
                // `rediss+sentinel://`: the sentinels and the master they
                // name over TLS, with the process's CA and client certificate.
                if s.tls {
                    b = b
                        .set_client_to_sentinel_tls_mode(redis::TlsMode::Secure)
                        .set_client_to_redis_tls_mode(redis::TlsMode::Secure);
                    if let Some(certs) = super::tls::certificates_for_tls() {
                        b = b
                            .set_client_to_sentinel_certificates(certs.clone())
                            .set_client_to_redis_certificates(certs);
                    }
                }
                if let Some(db) = s.db {
                    b = b.set_client_to_redis_db(db);
                }
                if let Some(u) = &s.username {
                    b = b.set_client_to_redis_username(u);
                }
                if let Some(p) = &s.password {
                    b = b.set_client_to_redis_password(p);
                }
                Source::Sentinel {
                    client: tokio::sync::Mutex::new(
                        b.build().context("invalid Redis Sentinel URL")?,
                    ),
                    sentinels: s.sentinels.clone(),
                    master: s.master.clone(),
                    tls: s.tls,
                }
            }
        })
    }

    pub(crate) fn is_sentinel(&self) -> bool {
        matches!(self, Source::Sentinel { .. })
    }

    /// The sentinels' URLs (`redis://` or `rediss://` each) and the
    /// master's name, for a Sentinel URL.
    pub(crate) fn sentinel_watch(&self) -> Option<(Vec<String>, String)> {
        match self {
            Source::Sentinel {
                sentinels,
                master,
                tls,
                ..
            } => {
                let scheme = if *tls { "rediss" } else { "redis" };
                let urls = sentinels
                    .iter()
                    .map(|(h, p)| format!("{scheme}://{h}:{p}"))
                    .collect();
                Some((urls, master.clone()))
            }
            _ => None,
        }
    }

    /// The client of the server to use now (a Sentinel is asked which).
    async fn client(&self) -> RedisResult<redis::Client> {
        match self {
            Source::Standalone(c) => Ok(c.clone()),
            Source::Sentinel { client, .. } => client.lock().await.async_get_client().await,
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
        let mut b = ClusterClient::builder(nodes.iter().map(String::as_str))
            .connection_timeout(Duration::from_secs(2))
            .retries(3)
            .min_retry_wait(10)
            .max_retry_wait(200);
        // `rediss+cluster://`: every node over TLS (the nodes' scheme says
        // so), with the process's CA and client certificate if set.
        if nodes.iter().any(|n| target::is_tls(n))
            && let Some(certs) = super::tls::certificates_for_tls()
        {
            b = b.certs(certs);
        }
        match response_timeout {
            Some(t) => b.response_timeout(t),
            None => b.overall_response_timeout(None),
        }
        .build()
    }

    /// A self-reconnecting connection for a role's shared use.
    pub(crate) async fn open_managed(&self, response_timeout: Duration) -> RedisResult<Conn> {
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
    pub(crate) async fn open_plain(&self, response_timeout: Option<Duration>) -> RedisResult<Conn> {
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
        .map_err(|e| super::tls::with_hint(url, e))
        .context("cannot connect to Redis")
}

/// A connection of its own to whatever `url` names, for operator commands
/// (no breaker; `response_timeout` per command).
pub async fn connect_plain(url: &str, response_timeout: Duration) -> anyhow::Result<Conn> {
    Source::new(url)?
        .open_plain(Some(response_timeout))
        .await
        .map_err(|e| super::tls::with_hint(url, e))
        .context("cannot connect to Redis")
}
