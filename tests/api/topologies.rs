//! Redis setups of the tests' own beyond one server: a Redis Cluster of six
//! `redis-server` processes (3 masters, 3 replicas, short node timeout) and
//! a Sentinel setup (1 master, 1 replica, 3 sentinels), on free ports and
//! temp directories, persisting nothing. [`shared_cluster`] and
//! [`shared_sentinel`] start one of each ONCE per test run, shared by every
//! test under its own key prefix (nothing is ever flushed); tests that
//! break a setup (failover, resharding) start their own with
//! [`Cluster::start`] / [`SentinelSetup::start`], killed when dropped.
//!
//! A shared setup lives in a static, which is never dropped: a watchdog
//! (`sh`, one per setup) kills its processes and removes their directories
//! once the test binary has exited.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::OnceCell;

use crate::chaos_support::{Redis, free_port};

/// The cluster's `cluster-node-timeout` (ms): how long a master may be
/// unreachable before its replica is promoted.
pub const NODE_TIMEOUT_MS: u64 = 2000;
/// The sentinels' `down-after-milliseconds`.
pub const SENTINEL_DOWN_AFTER_MS: u64 = 1000;
/// The master name the sentinels watch.
pub const MASTER_NAME: &str = "stayafrica";

/// Arguments every test node gets: no persistence (temp dirs anyway).
const NO_PERSISTENCE: [&str; 4] = ["--save", "", "--appendonly", "no"];

/// Kills `pids` and removes `dirs` once this test process has exited.
pub fn watchdog(pids: &[u32], dirs: &[PathBuf]) -> anyhow::Result<()> {
    let me = std::process::id();
    let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
    let dirs: Vec<String> = dirs.iter().map(|d| format!("'{}'", d.display())).collect();
    let script = format!(
        "while kill -0 {me} 2>/dev/null; do sleep 1; done; kill -9 {} 2>/dev/null; rm -rf {}",
        pids.join(" "),
        dirs.join(" ")
    );
    Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start the watchdog")?;
    Ok(())
}

/// One `INFO section` reply of the server on `port`.
async fn info(port: u16, section: &str) -> anyhow::Result<String> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}"))?;
    let mut conn = tokio::time::timeout(
        Duration::from_secs(2),
        client.get_multiplexed_async_connection(),
    )
    .await
    .context("connect timed out")??;
    let v = tokio::time::timeout(
        Duration::from_secs(5),
        redis::cmd("INFO").arg(section).query_async(&mut conn),
    )
    .await
    .context("INFO timed out")??;
    Ok(v)
}

/// Polls `check` every 50 ms until it holds, for at most `limit`.
async fn wait_for<F, Fut>(what: &str, limit: Duration, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let deadline = Instant::now() + limit;
    loop {
        let last = check().await;
        if matches!(last, Ok(true)) {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{what}: not within {limit:?} ({last:?})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------
// Cluster
// ---------------------------------------------------------------------------

/// A Redis Cluster of 3 masters and 3 replicas of the test's own.
pub struct Cluster {
    pub nodes: Vec<Redis>,
}

impl Cluster {
    /// Starts six nodes and joins them (`redis-cli --cluster create …
    /// --cluster-replicas 1`); returns once every node sees every slot
    /// served and every replica is in sync.
    pub async fn start() -> anyhow::Result<Cluster> {
        let mut nodes = Vec::new();
        for _ in 0..6 {
            let bus = free_port()?.to_string();
            let timeout = NODE_TIMEOUT_MS.to_string();
            let mut args = vec![
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                &timeout,
                "--cluster-port",
                &bus,
            ];
            args.extend(NO_PERSISTENCE);
            nodes.push(Redis::start(&args).await?);
        }
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for n in &nodes {
            create.arg(format!("127.0.0.1:{}", n.port));
        }
        let out = create
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .context("redis-cli must be on PATH")?;
        anyhow::ensure!(
            out.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let cluster = Cluster { nodes };
        cluster.wait_healthy(Duration::from_secs(30)).await?;
        Ok(cluster)
    }

    /// Waits until every running node reports `cluster_state:ok` with all
    /// 16384 slots served, and every replica's link to its master is up.
    pub async fn wait_healthy(&self, limit: Duration) -> anyhow::Result<()> {
        for n in &self.nodes {
            if n.pid().is_err() {
                continue;
            }
            let port = n.port;
            wait_for("cluster state ok", limit, || async move {
                let ci: String = info_cluster(port).await?;
                Ok(ci.contains("cluster_state:ok") && ci.contains("cluster_slots_ok:16384"))
            })
            .await?;
            wait_for("replica in sync", limit, || async move {
                let r = info(port, "replication").await?;
                Ok(r.contains("role:master") || r.contains("master_link_status:up"))
            })
            .await?;
        }
        Ok(())
    }

    /// `redis+cluster://` URL naming every node as a seed.
    pub fn url(&self) -> String {
        let seeds: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        format!("redis+cluster://{}", seeds.join(","))
    }

    /// Ports of the nodes that are masters now.
    pub async fn master_ports(&self) -> anyhow::Result<Vec<u16>> {
        let mut ports = Vec::new();
        for n in &self.nodes {
            if n.pid().is_ok()
                && info(n.port, "replication")
                    .await
                    .is_ok_and(|r| r.contains("role:master"))
            {
                ports.push(n.port);
            }
        }
        Ok(ports)
    }

    fn leak_to_watchdog(self) -> anyhow::Result<&'static Cluster> {
        let pids = self
            .nodes
            .iter()
            .map(Redis::pid)
            .collect::<anyhow::Result<Vec<_>>>()?;
        let dirs: Vec<PathBuf> = self.nodes.iter().map(|n| n.dir().to_owned()).collect();
        watchdog(&pids, &dirs)?;
        Ok(Box::leak(Box::new(self)))
    }
}

async fn info_cluster(port: u16) -> anyhow::Result<String> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}"))?;
    let mut conn = tokio::time::timeout(
        Duration::from_secs(2),
        client.get_multiplexed_async_connection(),
    )
    .await
    .context("connect timed out")??;
    Ok(redis::cmd("CLUSTER")
        .arg("INFO")
        .query_async(&mut conn)
        .await?)
}

static SHARED_CLUSTER: OnceCell<&'static Cluster> = OnceCell::const_new();

/// The cluster every test of this run shares (started on first use).
pub async fn shared_cluster() -> anyhow::Result<&'static Cluster> {
    SHARED_CLUSTER
        .get_or_try_init(|| async { Cluster::start().await?.leak_to_watchdog() })
        .await
        .copied()
}

/// The shared cluster's URL.
pub async fn cluster_url() -> anyhow::Result<String> {
    Ok(shared_cluster().await?.url())
}

// ---------------------------------------------------------------------------
// Sentinel
// ---------------------------------------------------------------------------

/// One sentinel process of the test's own.
pub struct Sentinel {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Sentinel {
    async fn start(master_port: u16) -> anyhow::Result<Sentinel> {
        let port = free_port()?;
        let dir = tempfile::tempdir()?;
        let conf = dir.path().join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndaemonize no\ndir {dir}\n\
                 sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 2\n\
                 sentinel down-after-milliseconds {MASTER_NAME} {SENTINEL_DOWN_AFTER_MS}\n\
                 sentinel failover-timeout {MASTER_NAME} 4000\n\
                 sentinel parallel-syncs {MASTER_NAME} 1\n",
                dir = dir.path().display()
            ),
        )?;
        let child = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .spawn()
            .context("redis-server must be on PATH")?;
        let s = Sentinel {
            port,
            dir,
            child: Some(child),
        };
        wait_for(
            "sentinel answering",
            Duration::from_secs(10),
            || async move { Ok(sentinel_master(port).await.is_ok()) },
        )
        .await?;
        Ok(s)
    }

    pub fn pid(&self) -> anyhow::Result<u32> {
        self.child
            .as_ref()
            .map(Child::id)
            .context("sentinel not running")
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The master address a sentinel names now.
pub async fn sentinel_master(port: u16) -> anyhow::Result<(String, u16)> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}"))?;
    let mut conn = tokio::time::timeout(
        Duration::from_secs(2),
        client.get_multiplexed_async_connection(),
    )
    .await
    .context("connect timed out")??;
    let (host, port): (String, String) = redis::cmd("SENTINEL")
        .arg("get-master-addr-by-name")
        .arg(MASTER_NAME)
        .query_async(&mut conn)
        .await?;
    Ok((host, port.parse()?))
}

/// A Sentinel-managed master with one replica and three sentinels.
pub struct SentinelSetup {
    /// `[master, replica]` as started (after a failover the roles swap).
    pub servers: Vec<Redis>,
    pub sentinels: Vec<Sentinel>,
}

impl SentinelSetup {
    /// Starts the master, its replica (in sync) and three sentinels that
    /// know the master, the replica and each other.
    pub async fn start() -> anyhow::Result<SentinelSetup> {
        let master = Redis::start(&NO_PERSISTENCE).await?;
        let mport = master.port.to_string();
        let mut replica_args = vec!["--replicaof", "127.0.0.1", &mport];
        replica_args.extend(NO_PERSISTENCE);
        let replica = Redis::start(&replica_args).await?;
        let rport = replica.port;
        wait_for("replica in sync", Duration::from_secs(20), || async move {
            Ok(info(rport, "replication")
                .await?
                .contains("master_link_status:up"))
        })
        .await?;
        let mut sentinels = Vec::new();
        for _ in 0..3 {
            sentinels.push(Sentinel::start(master.port).await?);
        }
        for s in &sentinels {
            let port = s.port;
            wait_for(
                "sentinel sees the replica and the other sentinels",
                Duration::from_secs(30),
                || async move {
                    let i = info(port, "sentinel").await?;
                    Ok(i.contains("slaves=1,sentinels=3"))
                },
            )
            .await?;
        }
        Ok(SentinelSetup {
            servers: vec![master, replica],
            sentinels,
        })
    }

    /// `redis+sentinel://` URL naming the three sentinels and the master.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect();
        format!("redis+sentinel://{}/{MASTER_NAME}", hosts.join(","))
    }

    fn leak_to_watchdog(self) -> anyhow::Result<&'static SentinelSetup> {
        let mut pids = self
            .servers
            .iter()
            .map(Redis::pid)
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut dirs: Vec<PathBuf> = self.servers.iter().map(|n| n.dir().to_owned()).collect();
        for s in &self.sentinels {
            pids.push(s.pid()?);
            dirs.push(s.dir().to_owned());
        }
        watchdog(&pids, &dirs)?;
        Ok(Box::leak(Box::new(self)))
    }
}

static SHARED_SENTINEL: OnceCell<&'static SentinelSetup> = OnceCell::const_new();

/// The Sentinel setup every test of this run shares (started on first use).
pub async fn shared_sentinel() -> anyhow::Result<&'static SentinelSetup> {
    SHARED_SENTINEL
        .get_or_try_init(|| async { SentinelSetup::start().await?.leak_to_watchdog() })
        .await
        .copied()
}

/// The shared Sentinel setup's URL.
pub async fn sentinel_url() -> anyhow::Result<String> {
    Ok(shared_sentinel().await?.url())
}

/// `base` as `role`'s URL, as the service derives it from `REDIS_URL`: the
/// guide's DB on a standalone or Sentinel URL, the URL itself on a cluster.
pub fn role_url(base: &str, role: stayafrica::kv::Role) -> String {
    use stayafrica::kv::Role;
    let db = match role {
        Role::Broker => 0,
        Role::Cache => 1,
        Role::Sessions => 2,
        Role::RateLimit => 3,
    };
    stayafrica::kv::target::with_db(base, db).unwrap_or_else(|_| base.to_owned())
}

/// Every key matching `pattern` on every master of the Redis at `url`
/// (SCAN, never KEYS), through the service's own per-master facility.
pub async fn scan_all(url: &str, pattern: &str) -> anyhow::Result<Vec<String>> {
    let conn = stayafrica::kv::connect_plain(url, Duration::from_secs(5)).await?;
    let mut found = Vec::new();
    conn.scan_each_master(pattern, 1000, usize::MAX, |keys| {
        found.extend(keys);
        async { Ok(()) }
    })
    .await?;
    found.sort();
    Ok(found)
}
