//! Test support: `spawn_app` runs the real server on port 0 against a fresh
//! database (a SQLite file in a temp dir, or a new PostgreSQL database) with
//! its own key prefix, and a client that keeps cookies.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use reqwest::{Client, Response};
use serde_json::{Value, json};
use stayafrica::config::Settings;
use stayafrica::db::Db;
use stayafrica::http::AppState;
use stayafrica::jobs::worker::Worker;
use stayafrica::startup::{Application, ServeOptions};
use tokio::sync::oneshot;

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestDb {
    Sqlite,
    Postgres,
    /// PostgreSQL with every role on the shared Redis: the production setup.
    PostgresRedis,
}

pub const PG_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A fresh, empty database of the given kind; returns its URL and a guard
/// that drops it (PostgreSQL) or its directory (SQLite).
pub async fn fresh_database(kind: TestDb) -> anyhow::Result<(String, DbGuard)> {
    match kind {
        TestDb::Sqlite => {
            let dir = tempfile::tempdir()?;
            let url = format!("sqlite://{}/test.db", dir.path().display());
            Ok((url, DbGuard::Sqlite(dir)))
        }
        TestDb::Postgres | TestDb::PostgresRedis => {
            let name = format!("sa_test_{}", uuid::Uuid::new_v4().simple());
            let admin = sqlx::PgPool::connect(PG_ADMIN_URL)
                .await
                .context("PostgreSQL must run on 127.0.0.1:5432 for these tests")?;
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
                .execute(&admin)
                .await?;
            admin.close().await;
            let url = format!("postgres://postgres@127.0.0.1:5432/{name}");
            Ok((url, DbGuard::Postgres(name)))
        }
    }
}

/// Removes a test database when dropped.
pub enum DbGuard {
    Sqlite(tempfile::TempDir),
    Postgres(String),
}

impl Drop for DbGuard {
    fn drop(&mut self) {
        if let DbGuard::Postgres(name) = self {
            let name = name.clone();
            // Best effort, on a thread of its own: Drop cannot await.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                if let Ok(rt) = rt {
                    rt.block_on(async {
                        if let Ok(admin) = sqlx::PgPool::connect(PG_ADMIN_URL).await {
                            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                                "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                            )))
                            .execute(&admin)
                            .await;
                        }
                    });
                }
            })
            .join();
        }
    }
}

/// A running server and a cookie-keeping client.
pub struct TestApp {
    pub addr: SocketAddr,
    pub client: Client,
    pub state: AppState,
    pub worker: Worker,
    pub email_dir: PathBuf,
    pub db_url: String,
    stop: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _tmp: tempfile::TempDir,
    _db: Option<DbGuard>,
}

/// Settings for a test app: fresh database, unique prefix, file email.
pub struct TestOptions {
    pub db: TestDb,
    pub with_worker: bool,
    /// `Some(base URL)`: every role on that Redis (the guide's DBs 0-3).
    pub redis: Option<String>,
    pub tweak: Box<dyn FnOnce(&mut Settings) + Send>,
}

impl Default for TestOptions {
    fn default() -> Self {
        TestOptions {
            db: TestDb::Sqlite,
            with_worker: false,
            redis: None,
            tweak: Box::new(|_| {}),
        }
    }
}

/// The shared Redis every session has (tests isolate by key prefix).
pub const SHARED_REDIS: &str = "redis://127.0.0.1:6379";

/// Settings for every role on the Redis at `base`, on the guide's DBs
/// where it has DBs (a cluster URL is used as it is for every role).
pub fn redis_settings(base: &str) -> stayafrica::config::RedisSettings {
    use stayafrica::kv::Role;
    let url = |role| crate::topologies::role_url(base, role).into();
    stayafrica::config::RedisSettings {
        broker: url(Role::Broker),
        cache: url(Role::Cache),
        sessions: url(Role::Sessions),
        ratelimit: url(Role::RateLimit),
    }
}

/// A redis-server of the test's own, on a free port, for tests that stop,
/// restart or fill Redis. Killed when dropped.
pub struct RedisServer {
    pub port: u16,
    child: Option<std::process::Child>,
    dir: tempfile::TempDir,
}

impl RedisServer {
    pub async fn start() -> anyhow::Result<RedisServer> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let dir = tempfile::tempdir()?;
        let mut server = RedisServer {
            port,
            child: None,
            dir,
        };
        server.restart().await?;
        Ok(server)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// (Re)starts the server on the same port and data directory.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(std::process::Stdio::null())
            .spawn()
            .context("redis-server must be on PATH")?;
        self.child = Some(child);
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        anyhow::bail!("redis-server did not start on port {}", self.port)
    }

    /// Kills the server (SIGKILL), as a crash would.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

pub async fn spawn_app(db: TestDb) -> anyhow::Result<TestApp> {
    spawn_app_with(TestOptions {
        db,
        ..TestOptions::default()
    })
    .await
}

pub async fn spawn_app_with(opts: TestOptions) -> anyhow::Result<TestApp> {
    let (db_url, guard) = fresh_database(opts.db).await?;
    let tweak = opts.tweak;
    let redis = opts
        .redis
        .or_else(|| (opts.db == TestDb::PostgresRedis).then(|| SHARED_REDIS.to_owned()))
        .map(|base| redis_settings(&base));
    let mut app = spawn_on(
        &db_url,
        opts.with_worker,
        Box::new(move |s: &mut Settings| {
            s.redis = redis;
            tweak(s);
        }),
    )
    .await?;
    app._db = Some(guard);
    Ok(app)
}

/// Starts a server on an existing database (restart tests).
pub async fn spawn_on(
    db_url: &str,
    with_worker: bool,
    tweak: Box<dyn FnOnce(&mut Settings) + Send>,
) -> anyhow::Result<TestApp> {
    stayafrica::telemetry::init_test_logging();
    let tmp = tempfile::tempdir()?;
    let email_dir = tmp.path().join("mail");
    let mut settings = Settings::defaults();
    settings.bind = "127.0.0.1:0".parse()?;
    // No operator console unless a test asks for one (its default port
    // would be shared by every test).
    settings.admin_bind = None;
    settings.database_url = db_url.into();
    settings.key_prefix = format!("satest:{}:", uuid::Uuid::new_v4().simple());
    settings.email = Some(stayafrica::config::EmailSetting::File(email_dir.clone()));
    // Generous general limits so that tests of other things are not throttled.
    settings.throttles.set(
        stayafrica::ratelimit::Action::Anon,
        stayafrica::ratelimit::Rate::new(100_000, Duration::from_secs(3600)),
    );
    for action in [
        stayafrica::ratelimit::Action::User,
        stayafrica::ratelimit::Action::Register,
        stayafrica::ratelimit::Action::PropertyCreate,
        stayafrica::ratelimit::Action::OtpClient,
    ] {
        settings.throttles.set(
            action,
            stayafrica::ratelimit::Rate::new(100_000, Duration::from_secs(3600)),
        );
    }
    // Test sessions left in the shared Redis expire within the hour.
    settings.session_ttl = Duration::from_secs(3600);
    tweak(&mut settings);
    let app = Application::build(
        settings,
        ServeOptions {
            with_worker,
            worker_concurrency: 2,
        },
    )
    .await?;
    let addr = app.local_addr()?;
    let state = app.state().clone();
    let worker = app.worker();
    let (tx, rx) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async move {
        let _ = rx.await;
    }));
    let client = Client::builder().cookie_store(true).build()?;
    Ok(TestApp {
        addr,
        client,
        state,
        worker,
        email_dir,
        db_url: db_url.to_owned(),
        stop: Some(tx),
        server: Some(server),
        _tmp: tmp,
        _db: None,
    })
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// A second client with its own cookie jar (another user or browser).
    pub fn new_client(&self) -> Client {
        Client::builder()
            .cookie_store(true)
            .build()
            .unwrap_or_else(|_| Client::new())
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Response> {
        Ok(self.client.get(self.url(path)).send().await?)
    }

    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Response> {
        Ok(self.client.post(self.url(path)).json(body).send().await?)
    }

    pub async fn patch(&self, path: &str, body: &Value) -> anyhow::Result<Response> {
        Ok(self.client.patch(self.url(path)).json(body).send().await?)
    }

    pub async fn delete(&self, path: &str) -> anyhow::Result<Response> {
        Ok(self.client.delete(self.url(path)).send().await?)
    }

    /// Registers a user and logs this app's client in as them.
    pub async fn signup(&self, email: &str, role: &str) -> anyhow::Result<Value> {
        self.signup_with(&self.client, email, role).await
    }

    pub async fn signup_with(
        &self,
        client: &Client,
        email: &str,
        role: &str,
    ) -> anyhow::Result<Value> {
        let r = client
            .post(self.url("/api/v1/auth/register"))
            .json(&json!({"email": email, "password": "password123", "full_name": "Test User", "role": role}))
            .send()
            .await?;
        anyhow::ensure!(r.status() == 201, "register failed: {}", r.status());
        let r = client
            .post(self.url("/api/v1/auth/login"))
            .json(&json!({"email": email, "password": "password123"}))
            .send()
            .await?;
        anyhow::ensure!(r.status() == 200, "login failed: {}", r.status());
        Ok(r.json().await?)
    }

    /// Creates a property as the logged-in host of `client`.
    pub async fn create_property_with(
        &self,
        client: &Client,
        body: Value,
    ) -> anyhow::Result<Value> {
        let r = client
            .post(self.url("/api/v1/properties"))
            .json(&body)
            .send()
            .await?;
        anyhow::ensure!(r.status() == 201, "create property failed: {}", r.status());
        Ok(r.json().await?)
    }

    /// Runs queued jobs until none is due.
    pub async fn drain_jobs(&self) -> anyhow::Result<usize> {
        let mut n = 0;
        while self.worker.try_execute_one().await? {
            n += 1;
        }
        Ok(n)
    }

    /// The emails written so far, oldest first.
    pub fn emails(&self) -> Vec<String> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.email_dir)
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        files.retain(|p| p.extension().is_some_and(|e| e == "eml"));
        files.sort();
        files
            .iter()
            .filter_map(|p| std::fs::read_to_string(p).ok())
            .collect()
    }

    pub fn db(&self) -> &Db {
        &self.state.db
    }

    /// Stops the server gracefully and waits for it.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(s) = self.server.take() {
            s.await??;
        }
        Ok(())
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// A sample property body.
pub fn property_body(city: &str, price: &str, featured: bool) -> Value {
    json!({
        "title": format!("Lovely home in {city}"),
        "description": "Near the market",
        "city": city,
        "country": "Kenya",
        "price_per_night": price,
        "max_guests": 4,
        "is_featured": featured
    })
}

/// The `error.code` of an API error body.
pub async fn error_code(r: Response) -> anyhow::Result<String> {
    let v: Value = r.json().await?;
    Ok(v["error"]["code"].as_str().unwrap_or_default().to_owned())
}

/// A date `days` from today, as `YYYY-MM-DD`.
pub fn day(days: i64) -> String {
    (time::OffsetDateTime::now_utc().date() + time::Duration::days(days)).to_string()
}

/// Generates a test for each setup (SQLite, PostgreSQL, PostgreSQL + Redis) from `async fn name(db: TestDb) -> anyhow::Result<()>`.
#[macro_export]
macro_rules! on_each_setup {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() -> anyhow::Result<()> {
                    super::$name($crate::helpers::TestDb::Sqlite).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() -> anyhow::Result<()> {
                    super::$name($crate::helpers::TestDb::Postgres).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres_redis() -> anyhow::Result<()> {
                    super::$name($crate::helpers::TestDb::PostgresRedis).await
                }
            }
        )*
    };
}

/// Polls `check` until it is true; fails after `limit`.
pub async fn wait_until<F, Fut>(limit: Duration, what: &str, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let deadline = std::time::Instant::now() + limit;
    loop {
        if check().await? {
            return Ok(());
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Calls per command from an `INFO commandstats` reply (commands run inside
/// scripts included).
pub fn parse_commandstats(info: &str) -> Vec<(String, u64)> {
    info.lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest
                .strip_prefix("calls=")?
                .split(',')
                .next()?
                .parse()
                .ok()?;
            Some((name.to_owned(), calls))
        })
        .collect()
}

/// The six-digit one-time code in a mail, if any.
pub fn code_in(email: &str) -> Option<String> {
    email
        .split_whitespace()
        .map(|w| w.trim_matches(|c: char| !c.is_ascii_digit()))
        .find(|w| w.len() == 6 && w.chars().all(|c| c.is_ascii_digit()))
        .map(str::to_owned)
}
