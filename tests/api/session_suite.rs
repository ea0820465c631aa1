//! Sessions: one behaviour suite run on every `SessionStore` (database and
//! Redis), and the sign-in flows over HTTP with every role on real Redis:
//! cookies, logout, logout everywhere, where the keys live, Redis down, and
//! the `sessions revoke` command.

use std::sync::Arc;
use std::time::Duration;

use reqwest::{Client, Response};
use serde_json::{Value, json};
use stayafrica::db::Db;
use stayafrica::kv::Conn;
use stayafrica::kv::keys::Keys;
use stayafrica::kv::{RedisRole, Role};
use stayafrica::sessions::redis::RedisSessionStore;
use stayafrica::sessions::sql::SqlSessionStore;
use stayafrica::sessions::{SessionStore, hash_id, new_session_id};

use crate::helpers::{
    DbGuard, RedisServer, SHARED_REDIS, TestApp, TestDb, TestOptions, error_code, fresh_database,
    spawn_app_with,
};

/// The sessions role's DB on the shared Redis.
fn sessions_url(base: &str) -> String {
    format!("{base}/2")
}

async fn raw_sessions_conn() -> anyhow::Result<Conn> {
    stayafrica::kv::connect(&sessions_url(SHARED_REDIS), Duration::from_secs(5)).await
}

/// A store under test, with a raw view of its storage where it has one.
struct Store {
    store: Arc<dyn SessionStore>,
    /// Redis only: a connection to the store's DB and its key builder.
    raw: Option<(Conn, Keys)>,
    _db: Option<DbGuard>,
}

impl Store {
    async fn sql() -> anyhow::Result<Store> {
        let (url, guard) = fresh_database(TestDb::Sqlite).await?;
        let db = Db::connect(&url).await?;
        db.migrate().await?;
        Ok(Store {
            store: Arc::new(SqlSessionStore::new(db)),
            raw: None,
            _db: Some(guard),
        })
    }

    async fn redis() -> anyhow::Result<Store> {
        Store::redis_on(SHARED_REDIS).await
    }

    /// On the sessions role of the Redis at `base` (one server, a cluster,
    /// a Sentinel's master).
    async fn redis_on(base: &str) -> anyhow::Result<Store> {
        let url = crate::topologies::role_url(base, Role::Sessions);
        let keys = Keys::new(&format!("satest:{}:", uuid::Uuid::new_v4().simple()));
        let role = RedisRole::connect(Role::Sessions, &url).await?;
        Ok(Store {
            store: Arc::new(RedisSessionStore::new(role, keys.clone())),
            raw: Some((
                stayafrica::kv::connect(&url, Duration::from_secs(5)).await?,
                keys,
            )),
            _db: None,
        })
    }

    /// Redis only: whether the session key of `id_hash` exists.
    async fn key_exists(&self, id_hash: &str) -> anyhow::Result<Option<bool>> {
        let Some((conn, keys)) = &self.raw else {
            return Ok(None);
        };
        let n: i64 = redis::cmd("EXISTS")
            .arg(keys.session(id_hash))
            .query_async(&mut conn.clone())
            .await?;
        Ok(Some(n == 1))
    }
}

/// A fresh, hashed session id, as the HTTP layer passes it to the store.
fn new_hash() -> anyhow::Result<String> {
    Ok(hash_id(&new_session_id()?))
}

/// Runs each case on the database store and on the Redis store.
macro_rules! on_every_store {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sql() -> anyhow::Result<()> {
                    super::$name(super::Store::sql().await?).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn redis() -> anyhow::Result<()> {
                    super::$name(super::Store::redis().await?).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn cluster() -> anyhow::Result<()> {
                    let url = crate::topologies::cluster_url().await?;
                    super::$name(super::Store::redis_on(&url).await?).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sentinel() -> anyhow::Result<()> {
                    let url = crate::topologies::sentinel_url().await?;
                    super::$name(super::Store::redis_on(&url).await?).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn tls() -> anyhow::Result<()> {
                    let url = crate::tls::tls_url().await?;
                    super::$name(super::Store::redis_on(&url).await?).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn tls_cluster() -> anyhow::Result<()> {
                    let url = crate::tls::tls_cluster_url().await?;
                    super::$name(super::Store::redis_on(&url).await?).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn tls_sentinel() -> anyhow::Result<()> {
                    let url = crate::tls::tls_sentinel_url().await?;
                    super::$name(super::Store::redis_on(&url).await?).await
                }
            }
        )*
    };
}

on_every_store!(
    create_load_delete,
    delete_user_ends_only_that_users_sessions,
    loading_slides_the_expiry,
    unknown_ids_load_nothing,
    concurrent_loads_of_many_sessions_each_find_their_own
);

/// 100 sessions of 100 users loaded concurrently, with unknown ids among
/// them: loads waiting together share calls, and on a cluster those
/// sessions live in many slots: each load finds its own user.
async fn concurrent_loads_of_many_sessions_each_find_their_own(s: Store) -> anyhow::Result<()> {
    let mut hashes = Vec::new();
    for user in 0..100 {
        let h = new_hash()?;
        s.store.create(&h, 1000 + user, HOUR).await?;
        hashes.push((h, Some(1000 + user)));
        hashes.push((new_hash()?, None));
    }
    let store = s.store.clone();
    let loads = hashes.iter().map(|(h, _)| {
        let store = store.clone();
        let h = h.clone();
        tokio::spawn(async move { store.load(&h, HOUR).await })
    });
    let loads: Vec<_> = loads.collect();
    for ((_, expected), load) in hashes.iter().zip(loads) {
        assert_eq!(load.await??, *expected);
    }
    Ok(())
}

const HOUR: Duration = Duration::from_secs(3600);

async fn create_load_delete(s: Store) -> anyhow::Result<()> {
    let h = new_hash()?;
    s.store.create(&h, 7, HOUR).await?;
    assert_eq!(s.store.load(&h, HOUR).await?, Some(7));
    assert_eq!(s.store.load(&h, HOUR).await?, Some(7), "loading keeps it");
    assert_ne!(s.key_exists(&h).await?, Some(false));
    s.store.delete(&h).await?;
    assert_eq!(s.store.load(&h, HOUR).await?, None);
    assert_ne!(s.key_exists(&h).await?, Some(true));
    // Deleting twice is fine.
    s.store.delete(&h).await?;
    s.store.ping().await?;
    Ok(())
}

async fn delete_user_ends_only_that_users_sessions(s: Store) -> anyhow::Result<()> {
    let (a1, a2, a3, b) = (new_hash()?, new_hash()?, new_hash()?, new_hash()?);
    s.store.create(&a1, 11, HOUR).await?;
    s.store.create(&a2, 11, HOUR).await?;
    s.store.create(&a3, 11, HOUR).await?;
    s.store.create(&b, 12, HOUR).await?;
    // One already logged out: not counted again.
    s.store.delete(&a3).await?;
    assert_eq!(s.store.delete_user(11).await?, 2);
    assert_eq!(s.store.load(&a1, HOUR).await?, None);
    assert_eq!(s.store.load(&a2, HOUR).await?, None);
    assert_eq!(s.store.load(&b, HOUR).await?, Some(12));
    assert_eq!(s.store.delete_user(11).await?, 0);
    // The user can sign in again afterwards.
    let a4 = new_hash()?;
    s.store.create(&a4, 11, HOUR).await?;
    assert_eq!(s.store.load(&a4, HOUR).await?, Some(11));
    if let Some((conn, keys)) = &s.raw {
        let n: i64 = redis::cmd("SCARD")
            .arg(keys.user_sessions(11, Keys::session_shard(&a4)))
            .query_async(&mut conn.clone())
            .await?;
        assert_eq!(n, 1, "the user's index was emptied");
    }
    Ok(())
}

async fn loading_slides_the_expiry(s: Store) -> anyhow::Result<()> {
    let ttl = Duration::from_secs(2);
    let (used, idle) = (new_hash()?, new_hash()?);
    s.store.create(&used, 21, ttl).await?;
    s.store.create(&idle, 21, ttl).await?;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(s.store.load(&used, ttl).await?, Some(21));
    tokio::time::sleep(Duration::from_millis(1200)).await;
    // 2.4 s after creation: past the original expiry of both.
    assert_ne!(
        s.key_exists(&idle).await?,
        Some(true),
        "the idle key expired"
    );
    assert_eq!(s.store.load(&idle, ttl).await?, None, "not loaded: expired");
    assert_eq!(
        s.store.load(&used, ttl).await?,
        Some(21),
        "loaded at 1.2 s: alive past the original 2 s (SqlSessionStore::load \
         writes the new expiry only when it moves by over 60 s, so a TTL under a \
         minute never slides there)"
    );
    Ok(())
}

async fn unknown_ids_load_nothing(s: Store) -> anyhow::Result<()> {
    assert_eq!(s.store.load(&new_hash()?, HOUR).await?, None);
    assert_eq!(s.store.delete_user(987_654_321).await?, 0);
    Ok(())
}

/// Sessions written before the shards (`{prefix}session:{hash}`, indexed
/// in `{prefix}session:user:{id}`) still load, slide, delete and end with
/// their user: an upgrade logs nobody out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_of_the_layout_before_the_shards_still_work() -> anyhow::Result<()> {
    let s = Store::redis().await?;
    let Some((conn, keys)) = &s.raw else {
        anyhow::bail!("a Redis store has a raw view");
    };
    let mut conn = conn.clone();
    let (a, b) = (new_hash()?, new_hash()?);
    for h in [&a, &b] {
        let _: () = redis::pipe()
            .cmd("SET")
            .arg(keys.legacy_session(h))
            .arg(31)
            .arg("PX")
            .arg(60_000)
            .ignore()
            .cmd("SADD")
            .arg(keys.legacy_user_sessions(31))
            .arg(h)
            .ignore()
            .query_async(&mut conn)
            .await?;
    }
    assert_eq!(s.store.load(&a, HOUR).await?, Some(31));
    let ttl: i64 = redis::cmd("PTTL")
        .arg(keys.legacy_session(&a))
        .query_async(&mut conn)
        .await?;
    assert!(ttl > 60_000, "loading slid its expiry: {ttl}");
    s.store.delete(&a).await?;
    assert_eq!(s.store.load(&a, HOUR).await?, None);
    let fresh = new_hash()?;
    s.store.create(&fresh, 31, HOUR).await?;
    assert_eq!(
        s.store.delete_user(31).await?,
        2,
        "the old one and the new one"
    );
    assert_eq!(s.store.load(&b, HOUR).await?, None);
    assert_eq!(s.store.load(&fresh, HOUR).await?, None);
    Ok(())
}

// ----- HTTP, every role on Redis -----

async fn redis_app(
    tweak: impl FnOnce(&mut stayafrica::config::Settings) + Send + 'static,
) -> anyhow::Result<TestApp> {
    spawn_app_with(TestOptions {
        redis: Some(SHARED_REDIS.into()),
        tweak: Box::new(tweak),
        ..TestOptions::default()
    })
    .await
}

fn set_cookie(r: &Response) -> String {
    r.headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// The session id a `Set-Cookie: sessionid=…` header carries.
fn session_id(cookie: &str) -> String {
    cookie
        .trim_start_matches("sessionid=")
        .split(';')
        .next()
        .unwrap_or_default()
        .to_owned()
}

async fn register(app: &TestApp, email: &str) -> anyhow::Result<Value> {
    let r = app
        .post("/api/v1/auth/register", &json!({"email": email, "password": "password123", "full_name": "Session User", "role": "guest"}))
        .await?;
    anyhow::ensure!(r.status() == 201, "register: {}", r.status());
    Ok(r.json().await?)
}

async fn login(app: &TestApp, client: &Client, email: &str) -> anyhow::Result<Response> {
    Ok(client
        .post(app.url("/api/v1/auth/login"))
        .json(&json!({"email": email, "password": "password123"}))
        .send()
        .await?)
}

/// `/me` with exactly this session id (no cookie jar involved).
async fn me_with(app: &TestApp, sid: &str) -> anyhow::Result<Response> {
    Ok(Client::new()
        .get(app.url("/api/v1/me"))
        .header("cookie", format!("sessionid={sid}"))
        .send()
        .await?)
}

/// Every key of the sessions role under the app's prefix, by SCAN.
async fn session_keys(app: &TestApp) -> anyhow::Result<Vec<String>> {
    let mut conn = raw_sessions_conn().await?;
    let pattern = format!(
        "{}*",
        Keys::new(&app.state.settings.key_prefix).session_ns()
    );
    let mut cursor: u64 = 0;
    let mut found = Vec::new();
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await?;
        found.extend(batch);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    found.sort();
    Ok(found)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_me_logout_on_redis() -> anyhow::Result<()> {
    let app = redis_app(|_| {}).await?;
    let user = register(&app, "redis.session@example.com").await?;
    let r = login(&app, &app.client, "redis.session@example.com").await?;
    assert_eq!(r.status(), 200);
    let cookie = set_cookie(&r);
    assert!(cookie.starts_with("sessionid="), "{cookie}");
    for flag in ["HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(cookie.contains(flag), "{flag} missing: {cookie}");
    }
    assert!(!cookie.contains("Secure"), "{cookie}");
    let sid = session_id(&cookie);

    let r = app.get("/api/v1/me").await?;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await?["id"], user["id"]);

    // The session lives in DB 2, hashed, under the prefix, with a TTL.
    let keys = Keys::new(&app.state.settings.key_prefix);
    let id = user["id"].as_i64().unwrap_or_default();
    let session_key = keys.session(&hash_id(&sid));
    assert_eq!(session_keys(&app).await?, {
        let shard = Keys::session_shard(&hash_id(&sid));
        let mut v = vec![session_key.clone(), keys.user_sessions(id, shard)];
        v.sort();
        v
    });
    let mut conn = raw_sessions_conn().await?;
    let (value, ttl): (String, i64) = redis::pipe()
        .cmd("GET")
        .arg(&session_key)
        .cmd("PTTL")
        .arg(&session_key)
        .query_async(&mut conn)
        .await?;
    assert_eq!(value, id.to_string());
    let max = i64::try_from(app.state.settings.session_ttl.as_millis())?;
    assert!(ttl > 0 && ttl <= max, "PTTL {ttl}");
    assert!(
        !session_keys(&app).await?.iter().any(|k| k.contains(&sid)),
        "the raw id is never stored"
    );

    // A new login issues a new id; the old one is over.
    let r = login(&app, &app.client, "redis.session@example.com").await?;
    let sid2 = session_id(&set_cookie(&r));
    assert_ne!(sid2, sid);
    assert_eq!(me_with(&app, &sid).await?.status(), 401);
    assert_eq!(me_with(&app, &sid2).await?.status(), 200);

    let r = app
        .client
        .post(app.url("/api/v1/auth/logout"))
        .send()
        .await?;
    assert_eq!(r.status(), 204);
    assert_eq!(
        me_with(&app, &sid2).await?.status(),
        401,
        "the same cookie is dead"
    );
    let mut conn = raw_sessions_conn().await?;
    let exists: i64 = redis::cmd("EXISTS")
        .arg(keys.session(&hash_id(&sid2)))
        .query_async(&mut conn)
        .await?;
    assert_eq!(exists, 0, "logout deleted the key");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secure_cookie_when_configured() -> anyhow::Result<()> {
    let app = redis_app(|s| s.cookie_secure = true).await?;
    register(&app, "secure.cookie@example.com").await?;
    let r = login(&app, &app.client, "secure.cookie@example.com").await?;
    assert_eq!(r.status(), 200);
    let cookie = set_cookie(&r);
    assert!(cookie.contains("; Secure"), "{cookie}");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_all_ends_every_session_of_the_user() -> anyhow::Result<()> {
    let app = redis_app(|_| {}).await?;
    register(&app, "everywhere@example.com").await?;
    register(&app, "bystander@example.com").await?;
    let (phone, laptop, other) = (app.new_client(), app.new_client(), app.new_client());
    let sid_phone = session_id(&set_cookie(
        &login(&app, &phone, "everywhere@example.com").await?,
    ));
    let sid_laptop = session_id(&set_cookie(
        &login(&app, &laptop, "everywhere@example.com").await?,
    ));
    let sid_other = session_id(&set_cookie(
        &login(&app, &other, "bystander@example.com").await?,
    ));
    assert_eq!(me_with(&app, &sid_phone).await?.status(), 200);
    assert_eq!(me_with(&app, &sid_laptop).await?.status(), 200);

    let r = phone
        .post(app.url("/api/v1/auth/logout-all"))
        .send()
        .await?;
    assert_eq!(r.status(), 204);
    assert_eq!(me_with(&app, &sid_phone).await?.status(), 401);
    assert_eq!(me_with(&app, &sid_laptop).await?.status(), 401);
    assert_eq!(me_with(&app, &sid_other).await?.status(), 200);
    // Only the bystander's session and index are left.
    assert_eq!(session_keys(&app).await?.len(), 2);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_is_503_for_sessions_never_a_logout() -> anyhow::Result<()> {
    let mut server = RedisServer::start().await?;
    let app = spawn_app_with(TestOptions {
        redis: Some(server.url()),
        ..TestOptions::default()
    })
    .await?;
    register(&app, "outage@example.com").await?;
    let sid = session_id(&set_cookie(
        &login(&app, &app.client, "outage@example.com").await?,
    ));
    assert_eq!(me_with(&app, &sid).await?.status(), 200);

    server.stop();
    let client = Client::builder().timeout(Duration::from_secs(5)).build()?;
    for _ in 0..3 {
        let r = client
            .get(app.url("/api/v1/me"))
            .header("cookie", format!("sessionid={sid}"))
            .send()
            .await?;
        assert_eq!(r.status(), 503);
        assert_eq!(error_code(r).await?, "unavailable");
        let r = client.get(app.url("/api/v1/properties")).send().await?;
        assert_eq!(r.status(), 200, "anonymous reads still work");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_revoke_ends_a_users_sessions() -> anyhow::Result<()> {
    let app = redis_app(|_| {}).await?;
    cli_revoke_on(&app, Some(SHARED_REDIS)).await
}

/// The embedded default holds sessions in process memory: a revocation by
/// another process (the CLI, on the same SQLite file) still ends them for
/// the very next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_revoke_ends_a_users_sessions_on_the_embedded_default() -> anyhow::Result<()> {
    let app = crate::helpers::spawn_app(TestDb::Sqlite).await?;
    cli_revoke_on(&app, None).await
}

async fn cli_revoke_on(app: &TestApp, redis: Option<&'static str>) -> anyhow::Result<()> {
    register(app, "revoked@example.com").await?;
    register(app, "kept@example.com").await?;
    let sid = session_id(&set_cookie(
        &login(app, &app.client, "revoked@example.com").await?,
    ));
    let kept = session_id(&set_cookie(
        &login(app, &app.new_client(), "kept@example.com").await?,
    ));
    for _ in 0..3 {
        assert_eq!(me_with(app, &sid).await?.status(), 200);
        assert_eq!(me_with(app, &kept).await?.status(), 200);
    }

    let db_url = app.db_url.clone();
    let prefix = app.state.settings.key_prefix.clone();
    let out = tokio::task::spawn_blocking(move || {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_stayafrica"));
        cmd.args(["sessions", "revoke", "--user", "Revoked@Example.com"])
            .env("DATABASE_URL", db_url)
            .env("STAYAFRICA_KEY_PREFIX", prefix)
            .env_remove("REDIS_URL");
        if let Some(redis) = redis {
            cmd.env("REDIS_URL", redis);
        }
        cmd.output()
    })
    .await??;
    assert!(
        out.status.success(),
        "revoke failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("ended 1 session"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(me_with(app, &sid).await?.status(), 401);
    assert_eq!(me_with(app, &kept).await?.status(), 200);
    Ok(())
}

/// Two SQL stores on one SQLite file (two processes, as far as the file is
/// concerned): a session held by one is gone for it as soon as the other
/// ended it, by `delete` or `delete_user`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_stores_on_one_file_see_each_others_endings() -> anyhow::Result<()> {
    let (url, _guard) = fresh_database(TestDb::Sqlite).await?;
    let (db_a, db_b) = (Db::connect(&url).await?, Db::connect(&url).await?);
    db_a.migrate().await?;
    let (a, b) = (SqlSessionStore::new(db_a), SqlSessionStore::new(db_b));
    let ttl = Duration::from_secs(600);
    for round in 0..50 {
        let (one, two) = (new_hash()?, new_hash()?);
        a.create(&one, 7, ttl).await?;
        a.create(&two, 7, ttl).await?;
        for _ in 0..3 {
            assert_eq!(a.load(&one, ttl).await?, Some(7));
            assert_eq!(a.load(&two, ttl).await?, Some(7));
        }
        b.delete(&one).await?;
        assert_eq!(a.load(&one, ttl).await?, None, "round {round}: delete");
        assert_eq!(a.load(&two, ttl).await?, Some(7));
        b.delete_user(7).await?;
        assert_eq!(a.load(&two, ttl).await?, None, "round {round}: delete_user");
    }
    Ok(())
}
