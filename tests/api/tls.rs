//! Redis over TLS: a CA, server and client certificates made with the
//! `openssl` command, a standalone `redis-server` that speaks TLS only and
//! requires a client certificate, a TLS-only cluster of 3 masters and a
//! TLS-only Sentinel setup (master, replica, 3 sentinels), each started ONCE
//! per test run and killed by the `topologies` watchdog when the test
//! binary exits. [`tls_url`], [`tls_cluster_url`] and [`tls_sentinel_url`]
//! install the CA and client certificate as the process's Redis TLS
//! configuration (`kv::tls`), so the behaviour suites run on them unchanged
//! (their `tls`, `tls_cluster` and `tls_sentinel` cases). The refusals (a server certificate from an
//! unknown CA, no client certificate for a server that requires one) run
//! the real binary: its TLS configuration is its own.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use stayafrica::kv::tls::{TlsConfig, TlsFiles};
use tokio::sync::OnceCell;

use crate::chaos_support::free_port;

/// The test PKI: one CA with a server and a client certificate, and a
/// second CA that signed nothing the servers use.
pub struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    pub fn ca(&self) -> PathBuf {
        self.path("ca.pem")
    }
    pub fn other_ca(&self) -> PathBuf {
        self.path("other-ca.pem")
    }
    pub fn client_cert(&self) -> PathBuf {
        self.path("client.pem")
    }
    pub fn client_key(&self) -> PathBuf {
        self.path("client.key")
    }

    /// The files the service is given: the CA and the client certificate.
    pub fn files(&self) -> TlsFiles {
        TlsFiles {
            ca_file: Some(self.ca()),
            cert_file: Some(self.client_cert()),
            key_file: Some(self.client_key()),
        }
    }

    /// `redis-server` arguments: TLS with the server certificate, clients
    /// checked against the CA.
    fn server_args(&self) -> Vec<String> {
        let p = |n: &str| self.path(n).display().to_string();
        vec![
            "--tls-cert-file".into(),
            p("server.pem"),
            "--tls-key-file".into(),
            p("server.key"),
            "--tls-ca-cert-file".into(),
            p("ca.pem"),
            "--tls-auth-clients".into(),
            "yes".into(),
        ]
    }

    /// `redis-cli` arguments to reach the servers.
    fn cli_args(&self) -> Vec<String> {
        let p = |n: &str| self.path(n).display().to_string();
        vec![
            "--tls".into(),
            "--cacert".into(),
            p("ca.pem"),
            "--cert".into(),
            p("client.pem"),
            "--key".into(),
            p("client.key"),
        ]
    }

    fn generate() -> anyhow::Result<Pki> {
        let pki = Pki {
            dir: tempfile::tempdir()?,
        };
        let openssl = |args: &[&str]| -> anyhow::Result<()> {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(pki.dir.path())
                .stdin(Stdio::null())
                .output()
                .context("the openssl command must be on PATH")?;
            anyhow::ensure!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            Ok(())
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ];
        for (ca, cn) in [("ca", "StayAfrica test CA"), ("other-ca", "Unrelated CA")] {
            let (key, pem, subj) = (
                format!("{ca}.key"),
                format!("{ca}.pem"),
                format!("/CN={cn}"),
            );
            let mut args = vec!["req", "-x509", "-days", "2", "-subj", &subj];
            args.extend(ec);
            args.extend(["-keyout", &key, "-out", &pem]);
            args.extend(["-addext", "basicConstraints=critical,CA:TRUE"]);
            args.extend(["-addext", "keyUsage=critical,keyCertSign,cRLSign"]);
            openssl(&args)?;
        }
        // The server certificate also serves as the cluster bus's client
        // certificate, hence both usages.
        std::fs::write(
            pki.path("leaf.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
             keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\n",
        )?;
        for (leaf, serial) in [("server", "1001"), ("client", "1002")] {
            let (key, csr, pem) = (
                format!("{leaf}.key"),
                format!("{leaf}.csr"),
                format!("{leaf}.pem"),
            );
            let subj = format!("/CN=stayafrica-test-{leaf}");
            let mut args = vec!["req", "-new", "-subj", &subj];
            args.extend(ec);
            args.extend(["-keyout", &key, "-out", &csr]);
            openssl(&args)?;
            openssl(&[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-set_serial",
                serial,
                "-days",
                "2",
                "-extfile",
                "leaf.ext",
                "-out",
                &pem,
            ])?;
        }
        Ok(pki)
    }
}

static PKI: OnceCell<&'static Pki> = OnceCell::const_new();

/// The PKI of this test run, made on first use.
pub async fn pki() -> anyhow::Result<&'static Pki> {
    PKI.get_or_try_init(|| async {
        let pki = Pki::generate()?;
        crate::topologies::watchdog(&[], &[pki.dir.path().to_owned()])?;
        Ok(&*Box::leak(Box::new(pki)))
    })
    .await
    .copied()
}

static INSTALLED: OnceCell<()> = OnceCell::const_new();

/// Installs the test CA and client certificate as this process's Redis TLS
/// configuration, as the service does at startup.
async fn install_tls() -> anyhow::Result<&'static Pki> {
    let pki = pki().await?;
    INSTALLED
        .get_or_try_init(|| async {
            let config = TlsConfig::load(&pki.files(), str::to_owned)?
                .context("the test TLS files are set")?;
            stayafrica::kv::tls::install(&config)
        })
        .await?;
    Ok(pki)
}

/// A client of the TLS server on `port` with the test certificates, for
/// the fixtures' own checks.
fn client_of(pki: &Pki, port: u16) -> anyhow::Result<redis::Client> {
    stayafrica::kv::tls::ensure_provider();
    let certs = redis::TlsCertificates {
        client_tls: Some(redis::ClientTlsConfig {
            client_cert: std::fs::read(pki.client_cert())?,
            client_key: std::fs::read(pki.client_key())?,
        }),
        root_cert: Some(std::fs::read(pki.ca())?),
    };
    Ok(redis::Client::build_with_tls(
        format!("rediss://127.0.0.1:{port}"),
        certs,
    )?)
}

async fn query<T: redis::FromRedisValue>(
    pki: &Pki,
    port: u16,
    cmd: &redis::Cmd,
) -> anyhow::Result<T> {
    let client = client_of(pki, port)?;
    let mut conn = tokio::time::timeout(
        Duration::from_secs(2),
        client.get_multiplexed_async_connection(),
    )
    .await
    .context("connect timed out")??;
    Ok(
        tokio::time::timeout(Duration::from_secs(5), cmd.query_async(&mut conn))
            .await
            .context("no answer")??,
    )
}

/// A `redis-server` listening on a TLS port only (`--port 0`); killed
/// when dropped (the shared ones never are: the watchdog kills them).
pub struct TlsNode {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Child,
}

impl Drop for TlsNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl TlsNode {
    async fn start(pki: &Pki, extra: &[&str]) -> anyhow::Result<TlsNode> {
        let port = free_port()?;
        let dir = tempfile::tempdir()?;
        let child = Command::new("redis-server")
            .args(["--port", "0", "--tls-port", &port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .args(pki.server_args())
            .args(extra)
            .stdout(Stdio::null())
            .spawn()
            .context("redis-server must be on PATH")?;
        TlsNode { port, dir, child }.answering(pki).await
    }

    /// A sentinel on a TLS port only, watching the master on `master_port`
    /// (reached over TLS: `tls-replication yes`).
    async fn sentinel(pki: &Pki, master_port: u16) -> anyhow::Result<TlsNode> {
        let port = free_port()?;
        let dir = tempfile::tempdir()?;
        let conf = dir.path().join("sentinel.conf");
        let args = pki.server_args();
        let tls_conf: String = args
            .chunks(2)
            .map(|kv| format!("{} {}\n", kv[0].trim_start_matches("--"), kv[1]))
            .collect();
        let name = crate::topologies::MASTER_NAME;
        std::fs::write(
            &conf,
            format!(
                "port 0\ntls-port {port}\nbind 127.0.0.1\ndaemonize no\ndir {dir}\n\
                 {tls_conf}tls-replication yes\n\
                 sentinel monitor {name} 127.0.0.1 {master_port} 2\n\
                 sentinel down-after-milliseconds {name} 1000\n\
                 sentinel failover-timeout {name} 4000\n",
                dir = dir.path().display()
            ),
        )?;
        let child = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .spawn()
            .context("redis-server must be on PATH")?;
        TlsNode { port, dir, child }.answering(pki).await
    }

    /// Returns once it answers PING over TLS.
    async fn answering(self, pki: &Pki) -> anyhow::Result<TlsNode> {
        let port = self.port;
        let node = self;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let pong = query::<String>(pki, port, &redis::cmd("PING")).await;
            if pong.is_ok() {
                return Ok(node);
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "TLS redis-server on {port} not answering: {pong:?}"
            );
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    }

    fn leak_to_watchdog(nodes: Vec<TlsNode>) -> anyhow::Result<&'static [TlsNode]> {
        let pids: Vec<u32> = nodes.iter().map(|n| n.child.id()).collect();
        let dirs: Vec<PathBuf> = nodes.iter().map(|n| n.dir.path().to_owned()).collect();
        crate::topologies::watchdog(&pids, &dirs)?;
        Ok(Box::leak(nodes.into_boxed_slice()))
    }
}

static TLS_REDIS: OnceCell<&'static [TlsNode]> = OnceCell::const_new();

/// The standalone TLS server every test of this run shares (started on
/// first use; it requires a client certificate).
pub async fn shared_tls_redis() -> anyhow::Result<&'static TlsNode> {
    let pki = pki().await?;
    let nodes = TLS_REDIS
        .get_or_try_init(|| async {
            TlsNode::leak_to_watchdog(vec![TlsNode::start(pki, &[]).await?])
        })
        .await?;
    nodes.first().context("one server")
}

/// `rediss://` URL of the shared TLS server, with the test CA and client
/// certificate installed.
pub async fn tls_url() -> anyhow::Result<String> {
    install_tls().await?;
    Ok(format!(
        "rediss://127.0.0.1:{}",
        shared_tls_redis().await?.port
    ))
}

/// A master, its replica and three sentinels, all on TLS ports only
/// (replication and the sentinels' links over TLS too): `[master, replica,
/// sentinel × 3]`, once every sentinel sees the replica and the others.
async fn start_tls_sentinel(pki: &Pki) -> anyhow::Result<Vec<TlsNode>> {
    let mut nodes = vec![TlsNode::start(pki, &["--tls-replication", "yes"]).await?];
    let mport = nodes[0].port.to_string();
    let replica = TlsNode::start(
        pki,
        &[
            "--tls-replication",
            "yes",
            "--replicaof",
            "127.0.0.1",
            &mport,
        ],
    )
    .await?;
    let rport = replica.port;
    nodes.push(replica);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = query::<String>(pki, rport, redis::cmd("INFO").arg("replication")).await;
        if r.as_ref()
            .is_ok_and(|r| r.contains("master_link_status:up"))
        {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "TLS replica not in sync: {r:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for _ in 0..3 {
        let master = nodes[0].port;
        nodes.push(TlsNode::sentinel(pki, master).await?);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    for s in &nodes[2..] {
        loop {
            let i = query::<String>(pki, s.port, redis::cmd("INFO").arg("sentinel")).await;
            if i.as_ref().is_ok_and(|i| i.contains("slaves=1,sentinels=3")) {
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "TLS sentinel {} does not see the setup: {i:?}",
                s.port
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(nodes)
}

fn sentinel_url_of(nodes: &[TlsNode]) -> String {
    let hosts: Vec<String> = nodes[2..]
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port))
        .collect();
    format!(
        "rediss+sentinel://{}/{}",
        hosts.join(","),
        crate::topologies::MASTER_NAME
    )
}

static TLS_SENTINEL: OnceCell<&'static [TlsNode]> = OnceCell::const_new();

/// The TLS Sentinel setup every test of this run shares.
pub async fn shared_tls_sentinel() -> anyhow::Result<&'static [TlsNode]> {
    let pki = pki().await?;
    TLS_SENTINEL
        .get_or_try_init(|| async { TlsNode::leak_to_watchdog(start_tls_sentinel(pki).await?) })
        .await
        .copied()
}

/// `rediss+sentinel://` URL of the shared TLS Sentinel setup, with the
/// test CA and client certificate installed.
pub async fn tls_sentinel_url() -> anyhow::Result<String> {
    install_tls().await?;
    Ok(sentinel_url_of(shared_tls_sentinel().await?))
}

static TLS_CLUSTER: OnceCell<&'static [TlsNode]> = OnceCell::const_new();

/// A cluster of 3 masters (no replicas) that speaks TLS only, on clients'
/// connections and its bus (`--tls-cluster yes`), shared by the run.
pub async fn shared_tls_cluster() -> anyhow::Result<&'static [TlsNode]> {
    let pki = pki().await?;
    TLS_CLUSTER
        .get_or_try_init(|| async {
            let mut nodes = Vec::new();
            for _ in 0..3 {
                let bus = free_port()?.to_string();
                nodes.push(
                    TlsNode::start(
                        pki,
                        &[
                            "--cluster-enabled",
                            "yes",
                            "--cluster-config-file",
                            "nodes.conf",
                            "--cluster-node-timeout",
                            "2000",
                            "--cluster-port",
                            &bus,
                            "--tls-cluster",
                            "yes",
                        ],
                    )
                    .await?,
                );
            }
            let nodes = TlsNode::leak_to_watchdog(nodes)?;
            let mut create = Command::new("redis-cli");
            create.args(pki.cli_args()).args(["--cluster", "create"]);
            for n in nodes {
                create.arg(format!("127.0.0.1:{}", n.port));
            }
            let out = create
                .arg("--cluster-yes")
                .stdin(Stdio::null())
                .output()
                .context("redis-cli must be on PATH")?;
            anyhow::ensure!(
                out.status.success(),
                "redis-cli --cluster create failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            let deadline = Instant::now() + Duration::from_secs(30);
            for n in nodes {
                loop {
                    let info =
                        query::<String>(pki, n.port, redis::cmd("CLUSTER").arg("INFO")).await;
                    if info.as_ref().is_ok_and(|i| {
                        i.contains("cluster_state:ok") && i.contains("cluster_slots_ok:16384")
                    }) {
                        break;
                    }
                    anyhow::ensure!(
                        Instant::now() < deadline,
                        "TLS cluster node {} not ok: {info:?}",
                        n.port
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            Ok(nodes)
        })
        .await
        .copied()
}

/// `rediss+cluster://` URL of the shared TLS cluster, with the test CA and
/// client certificate installed.
pub async fn tls_cluster_url() -> anyhow::Result<String> {
    install_tls().await?;
    let seeds: Vec<String> = shared_tls_cluster()
        .await?
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port))
        .collect();
    Ok(format!("rediss+cluster://{}", seeds.join(",")))
}

// ---------------------------------------------------------------------------
// The service on TLS
// ---------------------------------------------------------------------------

/// The cluster connection reaches every master over TLS, and SCAN/UNLINK
/// on each master (the operator commands' facility) works there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_master_of_a_tls_cluster_is_reached() -> anyhow::Result<()> {
    let url = tls_cluster_url().await?;
    let conn = stayafrica::kv::connect_plain(&url, Duration::from_secs(5)).await?;
    let masters = conn.masters().await?;
    assert_eq!(
        masters.len(),
        3,
        "{:?}",
        masters.iter().map(|m| &m.addr).collect::<Vec<_>>()
    );
    let prefix = format!("tlstest:{}:", uuid::Uuid::new_v4().simple());
    let mut c = conn.clone();
    for i in 0..60 {
        let _: () = redis::cmd("SET")
            .arg(format!("{prefix}{i}"))
            .arg(i)
            .query_async(&mut c)
            .await?;
    }
    let mut per_master = Vec::new();
    for m in &masters {
        let mut n = 0;
        let mut cursor = 0;
        loop {
            let (next, keys) = m.scan_step(cursor, &format!("{prefix}*"), 100).await?;
            n += keys.len();
            if next == 0 {
                break;
            }
            cursor = next;
        }
        per_master.push(n);
    }
    assert_eq!(per_master.iter().sum::<usize>(), 60, "{per_master:?}");
    assert!(per_master.iter().all(|n| *n > 0), "{per_master:?}");
    assert_eq!(conn.unlink_matching(&format!("{prefix}*"), 100).await?, 60);
    Ok(())
}

/// The worker's blocking connection (its BLPOP wake-ups) is opened over
/// TLS too: an idle in-process worker blocks on a TLS-only server of the
/// test's own (so the blocked client is this app's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_workers_blocking_connection_uses_tls() -> anyhow::Result<()> {
    let pki = install_tls().await?;
    let node = TlsNode::start(pki, &[]).await?;
    let app = crate::helpers::spawn_app_with(crate::helpers::TestOptions {
        redis: Some(format!("rediss://127.0.0.1:{}", node.port)),
        with_worker: true,
        ..crate::helpers::TestOptions::default()
    })
    .await?;
    crate::helpers::wait_until(Duration::from_secs(10), "a BLPOP over TLS", || async {
        let clients: String = query(pki, node.port, redis::cmd("CLIENT").arg("LIST")).await?;
        Ok(clients.contains("cmd=blpop"))
    })
    .await?;
    app.stop().await
}

/// A switch of master the sentinels announce (over TLS) is followed at
/// once: the role's next writes land on the promoted replica within a few
/// seconds, well before the old master would be demoted (about 10 s, see
/// docs/RELIABILITY.md), on a setup of the test's own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_sentinel_switch_is_followed() -> anyhow::Result<()> {
    use stayafrica::kv::{RedisRole, Role};
    let pki = install_tls().await?;
    let nodes = start_tls_sentinel(pki).await?;
    let role = RedisRole::connect(Role::Sessions, &sentinel_url_of(&nodes)).await?;
    let key = format!("tlstest:{}:switch", uuid::Uuid::new_v4().simple());
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg("before")
        .query_async(&mut role.connection())
        .await?;
    let promoted = nodes[1].port;
    let _: String = query(
        pki,
        nodes[2].port,
        redis::cmd("SENTINEL")
            .arg("FAILOVER")
            .arg(crate::topologies::MASTER_NAME),
    )
    .await?;
    crate::helpers::wait_until(Duration::from_secs(20), "the replica promoted", || async {
        // The sentinels kill the clients of a node they reconfigure: a
        // probe cut by that is "not yet", not a failure.
        let r: Option<String> = query(pki, promoted, redis::cmd("INFO").arg("replication"))
            .await
            .ok();
        Ok(r.is_some_and(|r| r.contains("role:master")))
    })
    .await?;
    crate::helpers::wait_until(
        Duration::from_secs(5),
        "writes on the new master",
        || async {
            let _ = redis::cmd("SET")
                .arg(&key)
                .arg("after")
                .query_async::<()>(&mut role.connection())
                .await;
            let v: Option<String> = query(pki, promoted, redis::cmd("GET").arg(&key))
                .await
                .ok()
                .flatten();
            Ok(v.as_deref() == Some("after"))
        },
    )
    .await?;
    Ok(())
}

// ---------------------------------------------------------------------------
// Refusals, run as the real binary
// ---------------------------------------------------------------------------

/// `stayafrica serve` on a fresh SQLite file with every role on `url`,
/// given `env`; fails if it is still running after 20 s.
fn serve(url: &str, env: &[(&str, &Path)]) -> anyhow::Result<Output> {
    let dir = tempfile::tempdir()?;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_stayafrica"));
    cmd.arg("serve")
        .env("REDIS_URL", url)
        .env(
            "DATABASE_URL",
            format!("sqlite://{}/t.db", dir.path().display()),
        )
        .env("STAYAFRICA_BIND", "127.0.0.1:0")
        .env("STAYAFRICA_EMAIL", "log")
        .env_remove("RUST_LOG")
        .env_remove("SSL_CERT_FILE")
        .env_remove("SSL_CERT_DIR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn()?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output()?;
            anyhow::bail!(
                "still running after 20 s: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(child.wait_with_output()?)
}

/// A failed start: exit status 1, no panic, the message on stderr.
fn refused(out: &Output) -> anyhow::Result<String> {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    anyhow::ensure!(!out.status.success(), "started: {stderr}");
    anyhow::ensure!(out.status.code() == Some(1), "{:?}: {stderr}", out.status);
    anyhow::ensure!(!stderr.contains("panicked"), "{stderr}");
    Ok(stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_certificate_of_an_unknown_ca_stops_startup_clearly() -> anyhow::Result<()> {
    let pki = pki().await?;
    let port = shared_tls_redis().await?.port;
    let url = format!("rediss://:s3cret@127.0.0.1:{port}");
    let (cert, key) = (pki.client_cert(), pki.client_key());
    // The wrong CA file; and none at all (the system's roots, which do not
    // hold the test CA).
    for ca in [Some(pki.other_ca()), None] {
        let mut env = vec![
            ("STAYAFRICA_REDIS_TLS_CERT_FILE", cert.as_path()),
            ("STAYAFRICA_REDIS_TLS_KEY_FILE", key.as_path()),
        ];
        if let Some(ca) = &ca {
            env.push(("STAYAFRICA_REDIS_TLS_CA_FILE", ca.as_path()));
        }
        let err = refused(&serve(&url, &env)?)?;
        println!("CA file {ca:?}: {err}");
        assert!(err.contains("Redis for the jobs role"), "{err}");
        assert!(err.contains("UnknownIssuer"), "{err}");
        assert!(err.contains("check STAYAFRICA_REDIS_TLS_CA_FILE"), "{err}");
        assert!(!err.contains("s3cret"), "{err}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_client_certificate_for_a_server_that_requires_one_stops_startup() -> anyhow::Result<()>
{
    let pki = pki().await?;
    let port = shared_tls_redis().await?.port;
    let ca = pki.ca();
    let err = refused(&serve(
        &format!("rediss://127.0.0.1:{port}"),
        &[("STAYAFRICA_REDIS_TLS_CA_FILE", ca.as_path())],
    )?)?;
    println!("no client certificate: {err}");
    assert!(err.contains("Redis for the jobs role"), "{err}");
    assert!(err.contains("CertificateRequired"), "{err}");
    assert!(err.contains("STAYAFRICA_REDIS_TLS_CERT_FILE"), "{err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_ca_file_the_system_roots_are_used() -> anyhow::Result<()> {
    // `SSL_CERT_FILE` replaces the system's store (rustls-native-certs):
    // the test CA as the only system root.
    let pki = pki().await?;
    let port = shared_tls_redis().await?.port;
    let out = Command::new(env!("CARGO_BIN_EXE_stayafrica"))
        .args(["cache", "ping"])
        .env("REDIS_URL", format!("rediss://127.0.0.1:{port}"))
        .env("DATABASE_URL", "sqlite://unused-by-cache-commands.db")
        .env("STAYAFRICA_REDIS_TLS_CERT_FILE", pki.client_cert())
        .env("STAYAFRICA_REDIS_TLS_KEY_FILE", pki.client_key())
        .env("SSL_CERT_FILE", pki.ca())
        .env_remove("SSL_CERT_DIR")
        .env_remove("RUST_LOG")
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    Ok(())
}
