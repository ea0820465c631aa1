//! Support of the chaos suite (`chaos.rs`): real processes the tests start
//! and break (redis-server instances, a PostgreSQL cluster, the
//! `stayafrica` binary's `serve` and `worker`), a TCP forwarder standing in
//! for a failover endpoint (DNS name or virtual IP), and a mixed client load
//! that records every answer.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Value, json};

/// The breaker's cool-down plus the one second: the bound on
/// recovery after a dependency answers again.
pub const RECOVERY_BOUND: Duration = Duration::from_secs(3);

/// A free TCP port on 127.0.0.1 (released before use; the OS does not hand
/// it out again at once).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn signal(pid: u32, sig: &str) -> anyhow::Result<()> {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()?
        .success();
    anyhow::ensure!(ok, "kill {sig} {pid} failed");
    Ok(())
}

/// A redis-server of the test's own, on a free port and a temp directory.
pub struct Redis {
    pub port: u16,
    dir: tempfile::TempDir,
    extra: Vec<String>,
    child: Option<Child>,
}

impl Redis {
    /// Starts one with AOF persistence (`appendonly yes`), plus `extra` args.
    pub async fn start(extra: &[&str]) -> anyhow::Result<Redis> {
        let mut r = Redis {
            port: free_port()?,
            dir: tempfile::tempdir()?,
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
            child: None,
        };
        r.spawn()?;
        r.wait_until_answering(Duration::from_secs(10)).await?;
        Ok(r)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Its data directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn pid(&self) -> anyhow::Result<u32> {
        self.child
            .as_ref()
            .map(Child::id)
            .context("redis-server not running")
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "yes"])
            .args(["--enable-debug-command", "local"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.extra)
            .stdout(Stdio::null())
            .spawn()
            .context("redis-server must be on PATH")?;
        self.child = Some(child);
        Ok(())
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port and data; does not wait.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.spawn()
    }

    /// Kills it, deletes its data, starts it again empty; does not wait.
    pub fn restart_empty(&mut self) -> anyhow::Result<()> {
        self.kill();
        for entry in std::fs::read_dir(self.dir.path())? {
            let p = entry?.path();
            if p.is_dir() {
                std::fs::remove_dir_all(&p)?;
            } else {
                std::fs::remove_file(&p)?;
            }
        }
        self.spawn()
    }

    /// A copy of its data files as they are now (what an older backup, or
    /// an AOF that lost its last second, would hold).
    pub fn copy_data(&self) -> anyhow::Result<tempfile::TempDir> {
        let copy = tempfile::tempdir()?;
        copy_tree(self.dir.path(), copy.path())?;
        Ok(copy)
    }

    /// Kills it and starts it again on the data of `copy`; does not wait.
    pub fn restart_from(&mut self, copy: &tempfile::TempDir) -> anyhow::Result<()> {
        self.kill();
        std::fs::remove_dir_all(self.dir.path())?;
        std::fs::create_dir_all(self.dir.path())?;
        copy_tree(copy.path(), self.dir.path())?;
        self.spawn()
    }

    pub fn freeze(&self) -> anyhow::Result<()> {
        signal(self.pid()?, "-STOP")
    }

    pub fn thaw(&self) -> anyhow::Result<()> {
        signal(self.pid()?, "-CONT")
    }

    /// One command on a fresh connection (the server may have restarted).
    pub async fn cmd<T: redis::FromRedisValue>(&self, args: &[&str]) -> anyhow::Result<T> {
        let client = redis::Client::open(self.url())?;
        // Populating and rewriting take seconds: no response timeout here.
        let config = redis::AsyncConnectionConfig::new()
            .set_response_timeout(None)
            .set_connection_timeout(Some(Duration::from_secs(2)));
        let mut conn = tokio::time::timeout(
            Duration::from_secs(3),
            client.get_multiplexed_async_connection_with_config(&config),
        )
        .await
        .context("connect timed out")??;
        let mut c = redis::cmd(args[0]);
        for a in &args[1..] {
            c.arg(*a);
        }
        let v = tokio::time::timeout(Duration::from_secs(60), c.query_async(&mut conn))
            .await
            .context("command timed out")??;
        Ok(v)
    }

    /// Waits until PING answers PONG (not `LOADING`, not refused); returns
    /// the instant it first did.
    pub async fn wait_until_answering(&self, limit: Duration) -> anyhow::Result<Instant> {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(pong) = self.cmd::<String>(&["PING"]).await
                && pong == "PONG"
            {
                return Ok(Instant::now());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "redis on {} not answering",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(from)? {
        let p = entry?.path();
        let target = to.join(p.file_name().context("no file name")?);
        if p.is_dir() {
            std::fs::create_dir_all(&target)?;
            copy_tree(&p, &target)?;
        } else {
            std::fs::copy(&p, &target)?;
        }
    }
    Ok(())
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A PostgreSQL cluster of the test's own (initdb in a temp dir, its own
/// port), so the test may restart it: the shared server is never touched.
pub struct Postgres {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

/// Runs `program` as the `postgres` user when we are root (initdb and
/// postgres refuse to run as root).
fn as_postgres(program: &str) -> Command {
    let bin = std::fs::read_dir("/usr/lib/postgresql")
        .ok()
        .and_then(|d| d.filter_map(Result::ok).map(|e| e.path()).max())
        .map(|p| p.join("bin").join(program))
        .unwrap_or_else(|| PathBuf::from(program));
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0"))
        .unwrap_or(false);
    if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin);
        c
    } else {
        Command::new(bin)
    }
}

impl Postgres {
    pub async fn start() -> anyhow::Result<Postgres> {
        let dir = tempfile::tempdir()?;
        let _ = Command::new("chown")
            .args(["postgres:postgres"])
            .arg(dir.path())
            .status();
        let data = dir.path().join("data");
        let ok = as_postgres("initdb")
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(&data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .context("initdb")?
            .success();
        anyhow::ensure!(ok, "initdb failed");
        let mut pg = Postgres {
            port: free_port()?,
            dir,
            child: None,
        };
        pg.spawn()?;
        pg.wait_until_answering(Duration::from_secs(30)).await?;
        Ok(pg)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let child = as_postgres("postgres")
            .arg("-D")
            .arg(self.data())
            .args(["-p", &self.port.to_string(), "-k"])
            .arg(self.dir.path())
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("postgres")?;
        self.child = Some(child);
        Ok(())
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops it (fast shutdown: SIGINT to the postmaster, as `pg_ctl stop
    /// -m fast` does) and starts it again; does not wait.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop().await;
        self.spawn()
    }

    /// The postmaster's pid (our child may be `runuser` around it).
    fn postmaster(&self) -> Option<u32> {
        std::fs::read_to_string(self.data().join("postmaster.pid"))
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }

    async fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let pid = self.postmaster().unwrap_or(c.id());
            let _ = signal(pid, "-INT");
            for _ in 0..200 {
                if matches!(c.try_wait(), Ok(Some(_))) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub async fn wait_until_answering(&self, limit: Duration) -> anyhow::Result<Instant> {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(pool) = sqlx::PgPool::connect(&self.url()).await {
                let ok = sqlx::query("SELECT 1").execute(&pool).await.is_ok();
                pool.close().await;
                if ok {
                    return Ok(Instant::now());
                }
            }
            anyhow::ensure!(Instant::now() < deadline, "postgres not answering");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let pid = self.postmaster().unwrap_or(c.id());
            let _ = signal(pid, "-QUIT");
            let _ = c.wait();
        }
    }
}

/// A TCP forwarder: what the service connects to when its Redis is "an
/// endpoint" (a DNS name or virtual IP that follows the master). New
/// connections go to the current target; existing ones stay where they
/// were, as they do when DNS changes.
pub struct Endpoint {
    pub port: u16,
    target: Arc<AtomicU16>,
    task: tokio::task::JoinHandle<()>,
}

impl Endpoint {
    pub async fn start(target: u16) -> anyhow::Result<Endpoint> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let target = Arc::new(AtomicU16::new(target));
        let t = target.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let to = t.load(Ordering::SeqCst);
                tokio::spawn(async move {
                    if let Ok(mut outbound) =
                        tokio::net::TcpStream::connect(("127.0.0.1", to)).await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Ok(Endpoint { port, target, task })
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Points new connections at `port`.
    pub fn switch(&self, port: u16) {
        self.target.store(port, Ordering::SeqCst);
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The real `stayafrica` binary running `serve` or `worker`.
pub struct Service {
    pub port: u16,
    pub email_dir: PathBuf,
    child: Child,
    log: PathBuf,
    _tmp: Arc<tempfile::TempDir>,
}

/// Environment of a service under test: database, Redis, a prefix of its
/// own, file email, generous general throttles (the load must not be 429).
#[derive(Clone)]
pub struct Env {
    pub vars: Vec<(String, String)>,
    pub email_dir: PathBuf,
    tmp: Arc<tempfile::TempDir>,
}

impl Env {
    pub fn new(database_url: &str, redis: &[(&str, String)]) -> anyhow::Result<Env> {
        let tmp = Arc::new(tempfile::tempdir()?);
        let email_dir = tmp.path().join("mail");
        std::fs::create_dir_all(&email_dir)?;
        let mut vars: Vec<(String, String)> = vec![
            ("DATABASE_URL".into(), database_url.into()),
            (
                "STAYAFRICA_KEY_PREFIX".into(),
                format!("chaos:{}:", uuid::Uuid::new_v4().simple()),
            ),
            (
                "STAYAFRICA_EMAIL".into(),
                format!("file:{}", email_dir.display()),
            ),
            ("STAYAFRICA_THROTTLE_ANON".into(), "10000000/hour".into()),
            ("STAYAFRICA_THROTTLE_USER".into(), "10000000/hour".into()),
            ("STAYAFRICA_THROTTLE_OTP".into(), "100000/hour".into()),
            (
                "STAYAFRICA_THROTTLE_OTP_CLIENT".into(),
                "100000/hour".into(),
            ),
            ("STAYAFRICA_THROTTLE_REGISTER".into(), "100000/hour".into()),
            (
                "STAYAFRICA_THROTTLE_PROPERTY_CREATE".into(),
                "100000/hour".into(),
            ),
            ("STAYAFRICA_VIEW_FLUSH_SECS".into(), "1".into()),
            ("RUST_LOG".into(), "warn,stayafrica=info".into()),
        ];
        for (k, v) in redis {
            vars.push(((*k).to_owned(), v.clone()));
        }
        Ok(Env {
            vars,
            email_dir,
            tmp,
        })
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_stayafrica"));
        c.args(args);
        for (k, v) in &self.vars {
            c.env(k, v);
        }
        c
    }

    /// Starts `serve` and waits until it answers `/health`.
    pub async fn serve(&self) -> anyhow::Result<Service> {
        let port = free_port()?;
        let log = self.tmp.path().join(format!("serve-{port}.log"));
        let child = self
            .command(&["serve", "--no-worker"])
            .env("STAYAFRICA_BIND", format!("127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()?;
        let s = Service {
            port,
            email_dir: self.email_dir.clone(),
            child,
            log,
            _tmp: self.tmp.clone(),
        };
        let client = reqwest::Client::new();
        for _ in 0..600 {
            if client.get(s.url("/health")).send().await.is_ok() {
                return Ok(s);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::bail!("service did not start:\n{}", s.log_tail())
    }

    /// Starts `worker --concurrency 2`.
    pub fn worker(&self) -> anyhow::Result<Service> {
        let log = self
            .tmp
            .path()
            .join(format!("worker-{}.log", uuid::Uuid::new_v4().simple()));
        let child = self
            .command(&["worker", "--concurrency", "2"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()?;
        Ok(Service {
            port: 0,
            email_dir: self.email_dir.clone(),
            child,
            log,
            _tmp: self.tmp.clone(),
        })
    }
}

impl Service {
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    /// The last lines of its log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Whether its log contains `needle`.
    pub fn log_contains(&self, needle: &str) -> bool {
        std::fs::read_to_string(&self.log).is_ok_and(|t| t.contains(needle))
    }

    /// Kills it with SIGKILL (no shutdown of any kind) and reaps it.
    pub fn kill_now(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Its resident memory now, from `/proc` (bytes).
    pub fn rss_bytes(&self) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .context("no VmRSS")?;
        Ok(kib * 1024)
    }

    /// Still running (it must never exit on its own).
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Emails delivered so far to `to`.
    pub fn emails_to(&self, to: &str) -> usize {
        emails_to(&self.email_dir, to)
    }
}

pub fn emails_to(dir: &Path, to: &str) -> usize {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
                .filter(|e| {
                    std::fs::read_to_string(e.path())
                        .is_ok_and(|t| t.contains(&format!("To: {to}")))
                })
                .count()
        })
        .unwrap_or(0)
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a request of the load was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// An anonymous, cacheable GET (the property list, varied queries).
    Public,
    /// `GET /api/v1/me` with a valid session.
    Me,
    /// `GET /api/v1/properties/{id}`: counts a view.
    Detail,
    /// `POST /api/v1/auth/otp`: queues a job.
    Otp,
}

/// One answer (or its absence).
#[derive(Debug, Clone)]
pub struct Sample {
    pub at: Instant,
    pub kind: Kind,
    /// `None`: no answer (this client's own 50 ms timeout, or no connection).
    pub status: Option<u16>,
    pub elapsed: Duration,
    pub impatient: bool,
}

/// Concurrent clients running until stopped, recording every answer.
pub struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    samples: Arc<Mutex<Vec<Sample>>>,
}

/// What the load needs to know about the service's data.
#[derive(Clone)]
pub struct Fixture {
    pub cookies: Vec<String>,
    pub property_id: i64,
    pub otp_email: String,
}

/// A host with three properties and a guest with `sessions` sessions.
pub async fn fixture(s: &Service, sessions: usize) -> anyhow::Result<Fixture> {
    let c = reqwest::Client::builder().cookie_store(true).build()?;
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let host = format!("host{}@example.com", &tag[..8]);
    let guest = format!("guest{}@example.com", &tag[..8]);
    for (email, role) in [(&host, "host"), (&guest, "guest")] {
        let r = c
            .post(s.url("/api/v1/auth/register"))
            .json(&json!({"email": email, "password": "password123", "full_name": "Chaos", "role": role}))
            .send()
            .await?;
        anyhow::ensure!(r.status() == 201, "register: {}", r.status());
    }
    login(s, &c, &host).await?;
    let mut property_id = 0;
    for city in ["Nairobi", "Accra", "Dakar"] {
        let r = c
            .post(s.url("/api/v1/properties"))
            .json(&crate::helpers::property_body(city, "80.00", true))
            .send()
            .await?;
        anyhow::ensure!(r.status() == 201, "create property: {}", r.status());
        property_id = r.json::<Value>().await?["id"].as_i64().unwrap_or(0);
    }
    let mut cookies = Vec::new();
    for _ in 0..sessions {
        cookies.push(login(s, &reqwest::Client::new(), &guest).await?);
    }
    Ok(Fixture {
        cookies,
        property_id,
        otp_email: guest,
    })
}

/// Logs `email` in; returns the `Cookie` header value of its session.
pub async fn login(s: &Service, c: &reqwest::Client, email: &str) -> anyhow::Result<String> {
    let r = c
        .post(s.url("/api/v1/auth/login"))
        .json(&json!({"email": email, "password": "password123"}))
        .send()
        .await?;
    anyhow::ensure!(r.status() == 200, "login: {}", r.status());
    let cookie = r
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .context("no session cookie")?
        .to_owned();
    Ok(cookie)
}

impl Load {
    /// 8 clients: public reads and `/me`, half of each giving up after
    /// 50 ms; one patient detail reader (views); with `otp`, one patient
    /// client queueing one-time codes (jobs).
    pub fn start(s: &Service, f: &Fixture, otp: bool) -> anyhow::Result<Load> {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        let patient = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()?;
        let impatient = reqwest::Client::builder()
            .timeout(Duration::from_millis(50))
            .build()?;
        let base = s.url("");
        let mut spawn = |kind: Kind, n: usize, is_impatient: bool| {
            let client = if is_impatient {
                impatient.clone()
            } else {
                patient.clone()
            };
            let (stop, samples, base, f) = (stop.clone(), samples.clone(), base.clone(), f.clone());
            tasks.push(tokio::spawn(async move {
                let mut i: u64 = 0;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let req = match kind {
                        // Varied queries: single-flight entries keyed by
                        // what clients choose.
                        Kind::Public => client.get(format!(
                            "{base}/api/v1/properties?page={}&page_size={}",
                            1 + i % 3,
                            10 + (i + n as u64) % 7
                        )),
                        Kind::Me => client
                            .get(format!("{base}/api/v1/me"))
                            .header("cookie", &f.cookies[n % f.cookies.len()]),
                        Kind::Detail => {
                            client.get(format!("{base}/api/v1/properties/{}", f.property_id))
                        }
                        Kind::Otp => client
                            .post(format!("{base}/api/v1/auth/otp"))
                            .json(&json!({"email": f.otp_email})),
                    };
                    let started = Instant::now();
                    let status = req.send().await.ok().map(|r| r.status().as_u16());
                    let sample = Sample {
                        at: started,
                        kind,
                        status,
                        elapsed: started.elapsed(),
                        impatient: is_impatient,
                    };
                    samples
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(sample);
                    let pause = match kind {
                        Kind::Otp => 100,
                        Kind::Detail => 20,
                        _ => 5,
                    };
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                }
            }));
        };
        for n in 0..4 {
            spawn(Kind::Public, n, n % 2 == 1);
            spawn(Kind::Me, n, n % 2 == 1);
        }
        spawn(Kind::Detail, 0, false);
        if otp {
            spawn(Kind::Otp, 0, false);
        }
        Ok(Load {
            stop,
            tasks,
            samples,
        })
    }

    /// Stops the clients and returns every sample.
    pub async fn stop(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }
        std::mem::take(&mut *self.samples.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Status counts per kind, for the test's printout and the docs.
pub fn tally(samples: &[Sample]) -> BTreeMap<(Kind, String), usize> {
    let mut m = BTreeMap::new();
    for s in samples {
        let status = s
            .status
            .map_or_else(|| "no answer".to_owned(), |c| c.to_string());
        *m.entry((s.kind, status)).or_insert(0) += 1;
    }
    m
}

/// What a fault may legitimately cost clients beyond the common rules.
#[derive(Debug, Clone, Copy, Default)]
pub struct Allow {
    /// Redis lost its data: a session may be gone (401).
    pub sessions_lost: bool,
    /// The database is down: an uncached public GET may be 503.
    pub database_down: bool,
}

/// The invariants that hold through every fault: no 5xx but 503, public
/// GETs always 200 (from the database while Redis is down), `/me` with a
/// valid session 200 or 503 (never 401 while the store is down), one-time
/// code requests 202 or 503.
pub fn check_invariants(samples: &[Sample], allow: Allow) -> anyhow::Result<()> {
    for s in samples {
        let Some(code) = s.status else { continue };
        anyhow::ensure!(
            code < 500 || code == 503,
            "{:?} answered {code} ({s:?})",
            s.kind
        );
        match s.kind {
            Kind::Public | Kind::Detail => anyhow::ensure!(
                code == 200 || (code == 503 && allow.database_down),
                "public GET answered {code} ({s:?})"
            ),
            Kind::Me => anyhow::ensure!(
                code == 200 || code == 503 || (code == 401 && allow.sessions_lost),
                "/me with a valid session answered {code} ({s:?})"
            ),
            Kind::Otp => anyhow::ensure!(
                code == 202 || code == 503,
                "OTP request answered {code} ({s:?})"
            ),
        }
    }
    Ok(())
}

/// The value of one Prometheus sample of the service's `/metrics` (0 when absent).
pub async fn metric(s: &Service, name: &str, labels: &[&str]) -> anyhow::Result<f64> {
    let text = reqwest::get(s.url("/metrics")).await?.text().await?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with(name) && labels.iter().all(|lb| l.contains(lb)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

/// Waits until the service has recovered: `/health` 200 (every role's
/// breaker lets calls through and each answers) and `/me` with `cookie`
/// 200. Returns how long after `since` that was.
pub async fn await_recovery(s: &Service, cookie: &str, since: Instant) -> anyhow::Result<Duration> {
    await_health(s, Some(cookie), since).await
}

/// [`await_recovery`], with the `/me` check only when given a cookie.
pub async fn await_health(
    s: &Service,
    cookie: Option<&str>,
    since: Instant,
) -> anyhow::Result<Duration> {
    let c = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let health = c.get(s.url("/health")).send().await.map(|r| r.status());
        let me = match cookie {
            Some(cookie) => c
                .get(s.url("/api/v1/me"))
                .header("cookie", cookie)
                .send()
                .await
                .map(|r| r.status()),
            None => Ok(reqwest::StatusCode::OK),
        };
        if matches!(health, Ok(h) if h == 200) && matches!(me, Ok(m) if m == 200) {
            return Ok(since.elapsed());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "no recovery within 60 s (health {health:?}, /me {me:?}):\n{}",
            s.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The property's view count as the API shows it (database + pending).
pub async fn view_count(s: &Service, id: i64) -> anyhow::Result<i64> {
    let v: Value = reqwest::get(s.url(&format!("/api/v1/properties/{id}")))
        .await?
        .json()
        .await?;
    v["view_count"].as_i64().context("no view_count")
}

/// Prints a case's result in the form docs/RELIABILITY.md records.
pub fn report(case: &str, recovery: Duration, samples: &[Sample]) {
    let counts: Vec<String> = tally(samples)
        .into_iter()
        .map(|((k, s), n)| format!("{k:?} {s}: {n}"))
        .collect();
    let worst = samples
        .iter()
        .filter(|s| !s.impatient)
        .map(|s| s.elapsed)
        .max()
        .unwrap_or_default();
    println!(
        "chaos {case}: recovered {} ms after the dependency answered; slowest patient answer {} ms; {}",
        recovery.as_millis(),
        worst.as_millis(),
        counts.join(", ")
    );
}
