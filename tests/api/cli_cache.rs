//! The `stayafrica cache` operator commands, run as the real binary against a
//! Redis of the test's own holding our keys and another application's.

use std::process::Output;

use crate::helpers::RedisServer;

const PREFIX: &str = "clitest:";

fn run(redis: &RedisServer, args: &[&str]) -> anyhow::Result<Output> {
    Ok(std::process::Command::new(env!("CARGO_BIN_EXE_stayafrica"))
        .args(args)
        .env("REDIS_URL", redis.url())
        .env("STAYAFRICA_KEY_PREFIX", PREFIX)
        .env("DATABASE_URL", "sqlite://unused-by-cache-commands.db")
        .env_remove("RUST_LOG")
        .output()?)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

async fn conn(redis: &RedisServer, db: u8) -> anyhow::Result<redis::aio::MultiplexedConnection> {
    let client = redis::Client::open(format!("{}/{db}", redis.url()))?;
    Ok(client.get_multiplexed_async_connection().await?)
}

async fn set(redis: &RedisServer, db: u8, key: &str, value: &str) -> anyhow::Result<()> {
    let mut c = conn(redis, db).await?;
    let _: () = redis::cmd("SET")
        .arg(key)
        .arg(value)
        .query_async(&mut c)
        .await?;
    Ok(())
}

async fn exists(redis: &RedisServer, db: u8, key: &str) -> anyhow::Result<bool> {
    let mut c = conn(redis, db).await?;
    let n: i64 = redis::cmd("EXISTS").arg(key).query_async(&mut c).await?;
    Ok(n == 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_commands_touch_only_our_keys() -> anyhow::Result<()> {
    let mut redis = RedisServer::start().await?;
    set(&redis, 1, "clitest:cache:property:list:g1:a", "[1,2]").await?;
    set(
        &redis,
        1,
        "clitest:cache:property:detail:g1:7",
        r#"{"id":7,"title":"Villa"}"#,
    )
    .await?;
    set(&redis, 1, "clitest:cache:user:dashboard:1", "{}").await?;
    set(&redis, 2, "clitest:session:abc", "1").await?;
    set(&redis, 1, "otherapp:property:list", "theirs").await?;
    set(&redis, 2, "otherapp:session:xyz", "theirs").await?;

    let o = run(&redis, &["cache", "ping"])?;
    assert!(o.status.success(), "{o:?}");
    for role in ["cache", "sessions", "ratelimit", "jobs"] {
        assert!(stdout(&o).contains(role), "{}", stdout(&o));
    }

    let o = run(&redis, &["cache", "keys", "property:*"])?;
    assert!(o.status.success());
    let out = stdout(&o);
    assert!(
        out.contains("property:list:g1:a") && out.contains("property:detail:g1:7"),
        "{out}"
    );
    assert!(
        !out.contains("otherapp") && !out.contains("dashboard"),
        "{out}"
    );
    assert!(out.contains("ttl=none"), "{out}");

    let o = run(&redis, &["cache", "get", "property:detail:g1:7"])?;
    assert!(
        stdout(&o).contains("\"title\": \"Villa\""),
        "{}",
        stdout(&o)
    );
    let o = run(&redis, &["cache", "get", "no:such:key"])?;
    assert!(!o.status.success());
    let o = run(&redis, &["cache", "ttl", "property:detail:g1:7"])?;
    assert_eq!(stdout(&o).trim(), "no expiry");

    let o = run(&redis, &["cache", "invalidate", "property:list:*"])?;
    assert!(stdout(&o).contains("1 key(s) removed"), "{}", stdout(&o));
    assert!(!exists(&redis, 1, "clitest:cache:property:list:g1:a").await?);
    assert!(exists(&redis, 1, "otherapp:property:list").await?);

    let o = run(&redis, &["cache", "del", "property:detail:g1:7"])?;
    assert!(stdout(&o).contains("1 key(s) removed"));

    // Sessions need --force; a cache flush leaves sessions and foreign keys.
    let o = run(&redis, &["cache", "flush", "--role", "sessions", "--yes"])?;
    assert!(!o.status.success());
    assert!(exists(&redis, 2, "clitest:session:abc").await?);
    let o = run(&redis, &["cache", "flush", "--role", "cache"])?;
    assert!(
        !o.status.success(),
        "a flush without --yes in a script must refuse"
    );
    let o = run(&redis, &["cache", "flush", "--role", "cache", "--yes"])?;
    assert!(o.status.success(), "{o:?}");
    assert!(!exists(&redis, 1, "clitest:cache:user:dashboard:1").await?);
    assert!(exists(&redis, 2, "clitest:session:abc").await?);
    assert!(exists(&redis, 1, "otherapp:property:list").await?);
    assert!(exists(&redis, 2, "otherapp:session:xyz").await?);

    let o = run(&redis, &["cache", "info", "--json"])?;
    let info: serde_json::Value = serde_json::from_slice(&o.stdout)?;
    assert_eq!(info.as_array().map(Vec::len), Some(4));
    assert_eq!(info[1]["role"], "sessions");
    assert_eq!(info[1]["keys_under_prefix"], 1);
    assert_eq!(info[1]["maxmemory_policy"], "noeviction");

    let o = run(&redis, &["cache", "check"])?;
    assert!(o.status.success(), "{}", stdout(&o));
    assert!(stdout(&o).contains("write, read, expire, invalidate"));

    // None of this used KEYS.
    let mut c = conn(&redis, 0).await?;
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut c)
        .await?;
    assert!(!stats.contains("cmdstat_keys:"), "{stats}");
    assert!(stats.contains("cmdstat_scan:"), "{stats}");

    redis.stop();
    let o = run(&redis, &["cache", "check"])?;
    assert!(!o.status.success());
    assert!(
        stdout(&o).contains("FAIL") && stdout(&o).contains("cannot reach Redis"),
        "{}",
        stdout(&o)
    );
    let o = run(&redis, &["cache", "ping"])?;
    assert!(!o.status.success());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_default_checks_the_database_roles() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_stayafrica"))
            .args(args)
            .env_remove("REDIS_URL")
            .env(
                "DATABASE_URL",
                format!("sqlite://{}/e.db", dir.path().display()),
            )
            .output()
    };
    let o = run(&["cache", "check"])?;
    assert!(o.status.success(), "{o:?}");
    assert!(
        stdout(&o).contains("sessions   ok    database: write, read, delete"),
        "{}",
        stdout(&o)
    );
    let o = run(&["cache", "ping"])?;
    assert!(o.status.success());
    assert!(stdout(&o).contains("jobs       ok"));
    // Key listings need Redis: a clear refusal, not a crash.
    let o = run(&["cache", "keys", "*"])?;
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("REDIS_URL is unset"));
    Ok(())
}
