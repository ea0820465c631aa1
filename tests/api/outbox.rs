//! Writes that are never half done (the outbox), on real processes: two
//! instances on one Redis and one PostgreSQL, instance A reaching the
//! cache's Redis through a TCP proxy of the test that can be cut (its
//! connections hang), a worker that relays what writes leave.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::chaos_support::{Env, Service, login};
use crate::helpers::{
    SHARED_REDIS, TestApp, TestDb, TestOptions, day, fresh_database, property_body, spawn_app_with,
    wait_until,
};

/// A TCP proxy that can be cut: while cut, it forwards nothing in either
/// direction and new connections hang, as a partition does.
struct Proxy {
    port: u16,
    cut: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(target: u16) -> anyhow::Result<Proxy> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let cut = Arc::new(AtomicBool::new(false));
        let c = cut.clone();
        let task = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let c = c.clone();
                tokio::spawn(async move {
                    let Ok(outbound) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await
                    else {
                        return;
                    };
                    let (ri, wi) = inbound.into_split();
                    let (ro, wo) = outbound.into_split();
                    tokio::join!(pump(ri, wo, c.clone()), pump(ro, wi, c));
                });
            }
        });
        Ok(Proxy { port, cut, task })
    }

    fn set_cut(&self, cut: bool) {
        self.cut.store(cut, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    cut: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if cut.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        }
        match tokio::time::timeout(Duration::from_millis(20), from.read(&mut buf)).await {
            Err(_) => continue,
            Ok(Ok(0) | Err(_)) => return,
            Ok(Ok(n)) => {
                // Read just as the cut began: held until it ends.
                while cut.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                if to.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}

struct Two {
    a: Service,
    b: Service,
    _worker: Service,
    proxy: Proxy,
    db_url: String,
    _db: crate::helpers::DbGuard,
}

/// A (cache through the proxy), B and a worker on one PostgreSQL database
/// and the shared Redis (a prefix of their own).
async fn two_instances() -> anyhow::Result<Two> {
    let (db_url, db) = fresh_database(TestDb::Postgres).await?;
    let env = Env::new(&db_url, &[("REDIS_URL", SHARED_REDIS.into())])?;
    let db_url = db_url.clone();
    let proxy = Proxy::start(6379).await?;
    let mut env_a = env.clone();
    env_a.vars.push((
        "REDIS_CACHE_URL".into(),
        format!("redis://127.0.0.1:{}/1", proxy.port),
    ));
    let a = env_a.serve().await?;
    let b = env.serve().await?;
    let worker = env.worker()?;
    Ok(Two {
        a,
        b,
        _worker: worker,
        proxy,
        db_url,
        _db: db,
    })
}

async fn price_on(s: &Service, id: i64) -> anyhow::Result<String> {
    let v: Value = reqwest::get(s.url(&format!("/api/v1/properties/{id}")))
        .await?
        .json()
        .await?;
    Ok(v["price_per_night"].as_str().unwrap_or_default().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_cut_from_the_cache_is_never_2xx_while_others_serve_the_old_value()
-> anyhow::Result<()> {
    let t = two_instances().await?;
    let host = reqwest::Client::builder().cookie_store(true).build()?;
    let r = host
        .post(t.b.url("/api/v1/auth/register"))
        .json(&json!({"email": "outbox.host@example.com", "password": "password123", "full_name": "H", "role": "host"}))
        .send()
        .await?;
    assert_eq!(r.status(), 201);
    let host_cookie = login(&t.b, &host, "outbox.host@example.com").await?;
    let r = host
        .post(t.b.url("/api/v1/properties"))
        .json(&property_body("Nairobi", "80.00", false))
        .send()
        .await?;
    assert_eq!(r.status(), 201);
    let id = r.json::<Value>().await?["id"].as_i64().unwrap_or_default();
    // Both instances have the detail cached (B in Redis and its near-cache).
    assert_eq!(price_on(&t.b, id).await?, "80.00");
    assert_eq!(price_on(&t.a, id).await?, "80.00");

    // A loses the cache's Redis; the PATCH on A is stored, never 2xx.
    t.proxy.set_cut(true);
    let r = reqwest::Client::new()
        .patch(t.a.url(&format!("/api/v1/properties/{id}")))
        .header("cookie", &host_cookie)
        .json(&json!({"price_per_night": "60.00"}))
        .send()
        .await?;
    assert_eq!(r.status(), 503, "a write A cannot make visible is not 2xx");
    let body: Value = r.json().await?;
    assert_eq!(body["error"]["details"]["stored"], true, "{body}");
    // B shows the new price within seconds, with no further write (the
    // worker's relay applied what A could not).
    wait_until(Duration::from_secs(10), "B shows the new price", || async {
        Ok(price_on(&t.b, id).await? == "60.00")
    })
    .await?;
    t.proxy.set_cut(false);
    wait_until(Duration::from_secs(10), "A shows the new price", || async {
        Ok(price_on(&t.a, id).await? == "60.00")
    })
    .await?;

    // A booking on A while cut: stored (503), and B shows it in the
    // guest's dashboard within seconds.
    let guest = reqwest::Client::builder().cookie_store(true).build()?;
    let r = guest
        .post(t.b.url("/api/v1/auth/register"))
        .json(&json!({"email": "outbox.guest@example.com", "password": "password123", "full_name": "G", "role": "guest"}))
        .send()
        .await?;
    assert_eq!(r.status(), 201);
    let cookie = login(&t.b, &guest, "outbox.guest@example.com").await?;
    let dashboard = |s: &Service| {
        reqwest::Client::new()
            .get(s.url("/api/v1/dashboard"))
            .header("cookie", &cookie)
            .send()
    };
    let before: Value = dashboard(&t.b).await?.json().await?;
    assert_eq!(before["stats"]["total_bookings"], 0);
    t.proxy.set_cut(true);
    let r = reqwest::Client::new()
        .post(t.a.url("/api/v1/bookings"))
        .header("cookie", &cookie)
        .json(&json!({"property_id": id, "check_in": day(3), "check_out": day(5), "guests": 1}))
        .send()
        .await?;
    assert_eq!(r.status(), 503);
    wait_until(
        Duration::from_secs(10),
        "B's dashboard shows the booking",
        || async {
            let v: Value = dashboard(&t.b).await?.json().await?;
            Ok(v["stats"]["total_bookings"] == 1)
        },
    )
    .await?;
    t.proxy.set_cut(false);
    // The confirmation is mailed once all the same.
    wait_until(Duration::from_secs(15), "the confirmation mail", || async {
        Ok(t.b.emails_to("outbox.guest@example.com") == 1)
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        t.b.emails_to("outbox.guest@example.com"),
        1,
        "exactly one mail"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_killed_after_its_commit_leaves_nothing_half_done() -> anyhow::Result<()> {
    let mut t = two_instances().await?;
    let host = reqwest::Client::builder().cookie_store(true).build()?;
    let r = host
        .post(t.b.url("/api/v1/auth/register"))
        .json(&json!({"email": "killed.host@example.com", "password": "password123", "full_name": "H", "role": "host"}))
        .send()
        .await?;
    assert_eq!(r.status(), 201);
    let cookie = login(&t.b, &host, "killed.host@example.com").await?;
    let r = host
        .post(t.b.url("/api/v1/properties"))
        .json(&property_body("Accra", "90.00", false))
        .send()
        .await?;
    let id = r.json::<Value>().await?["id"].as_i64().unwrap_or_default();
    assert_eq!(price_on(&t.b, id).await?, "90.00");

    // The PATCH commits on A, whose invalidation hangs (cut); A is killed
    // right after the commit, before it could answer or retry anything.
    t.proxy.set_cut(true);
    let url = t.a.url(&format!("/api/v1/properties/{id}"));
    let patch = tokio::spawn(async move {
        reqwest::Client::new()
            .patch(url)
            .header("cookie", cookie)
            .json(&json!({"price_per_night": "45.00"}))
            .send()
            .await
    });
    let pool = sqlx::PgPool::connect(&t.db_url).await?;
    wait_until(Duration::from_secs(10), "the PATCH committed", || async {
        let cents: i64 = sqlx::query_scalar("SELECT price_cents FROM properties WHERE id = $1")
            .bind(id)
            .fetch_one(&pool)
            .await?;
        Ok(cents == 4500)
    })
    .await?;
    t.a.kill_now();
    let _ = patch.await;
    wait_until(
        Duration::from_secs(10),
        "B shows the committed price",
        || async { Ok(price_on(&t.b, id).await? == "45.00") },
    )
    .await?;
    wait_until(Duration::from_secs(10), "the outbox is empty", || async {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox")
            .fetch_one(&pool)
            .await?;
        Ok(n == 0)
    })
    .await?;
    Ok(())
}

/// The broker's Redis down during a booking: the booking answers 201 (it
/// is visible: the cache is up), and its confirmation is mailed once the
/// broker is back, exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_booking_made_while_the_broker_is_down_is_mailed_once_it_is_back() -> anyhow::Result<()> {
    let mut broker = crate::helpers::RedisServer::start().await?;
    let broker_url = broker.url();
    let app: TestApp = spawn_app_with(TestOptions {
        db: TestDb::PostgresRedis,
        with_worker: true,
        tweak: Box::new(move |s| {
            if let Some(r) = s.redis.as_mut() {
                r.broker = broker_url.into();
            }
        }),
        ..TestOptions::default()
    })
    .await?;
    let host = app.new_client();
    app.signup_with(&host, "broker.host@example.com", "host")
        .await?;
    let p = app
        .create_property_with(&host, property_body("Lagos", "50.00", false))
        .await?;
    let pid = p["id"].as_i64().unwrap_or_default();
    let guest = app.new_client();
    app.signup_with(&guest, "broker.guest@example.com", "guest")
        .await?;

    broker.stop();
    let r = guest
        .post(app.url("/api/v1/bookings"))
        .json(&json!({"property_id": pid, "check_in": day(4), "check_out": day(6), "guests": 1}))
        .send()
        .await?;
    assert_eq!(r.status(), 201, "the booking stands and is visible");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !app.emails()
            .iter()
            .any(|m| m.contains("broker.guest@example.com")),
        "no mail while the broker is down"
    );
    broker.restart().await?;
    let mails = || {
        app.emails()
            .iter()
            .filter(|m| m.contains("To: broker.guest@example.com"))
            .count()
    };
    wait_until(Duration::from_secs(20), "the confirmation mail", || async {
        Ok(mails() == 1)
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(mails(), 1, "exactly one mail");
    Ok(())
}
