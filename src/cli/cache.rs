//! `stayafrica cache …`: the guide's redis-cli checks as one safe tool.
//! Keys are logical (the tool adds `{prefix}{role namespace}`), every
//! listing uses SCAN in batches (never KEYS), deletes use UNLINK, and a
//! flush removes only our keys of one role (never FLUSHDB/FLUSHALL: a shared
//! Redis may hold other applications' data).

use secrecy::ExposeSecret;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use crate::kv::Conn;
use anyhow::{Context, bail};
use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};

use crate::config::Settings;
use crate::kv::keys::Keys;
use crate::kv::{Role, redact};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: CacheCommand,
}

#[derive(Debug, Subcommand)]
enum CacheCommand {
    /// Reach every configured role and print its round-trip time.
    Ping,
    /// List keys matching a glob PATTERN (SCAN, never KEYS) with TTL and size.
    Keys {
        /// Role whose keys to list: cache, sessions, ratelimit or jobs.
        #[arg(long, default_value = "cache")]
        role: String,
        /// Glob over logical keys, e.g. `property:*`.
        #[arg(default_value = "*")]
        pattern: String,
        /// Stop after this many keys.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Show a key's value, decoded (decompressed, JSON pretty-printed).
    Get {
        key: String,
        #[arg(long, default_value = "cache")]
        role: String,
    },
    /// Show a key's remaining time to live.
    Ttl {
        key: String,
        #[arg(long, default_value = "cache")]
        role: String,
    },
    /// Delete one key.
    Del {
        key: String,
        #[arg(long, default_value = "cache")]
        role: String,
    },
    /// Delete every cache key matching PATTERN (SCAN + UNLINK in batches).
    Invalidate { pattern: String },
    /// Remove all of one role's keys under our prefix.
    Flush {
        /// cache, sessions, ratelimit or jobs.
        #[arg(long)]
        role: String,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
        /// Needed for sessions (logs everyone out) and jobs (drops queued work).
        #[arg(long)]
        force: bool,
    },
    /// Memory, our key counts, hit ratios, evictions and eviction policy per role.
    Info {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Write, read, expire and delete a probe key in every role.
    Check,
}

struct Target {
    role: Role,
    url: String,
    ns: String,
}

fn targets(settings: &Settings) -> anyhow::Result<Vec<Target>> {
    let Some(r) = &settings.redis else {
        bail!(
            "no Redis configured (REDIS_URL is unset): on the embedded default the cache and rate \
             limits live inside the `serve` process and sessions and jobs in the database; set \
             REDIS_URL to inspect Redis"
        );
    };
    Ok(Role::ALL
        .into_iter()
        .map(|role| {
            let url = match role {
                Role::Cache => &r.cache,
                Role::Sessions => &r.sessions,
                Role::RateLimit => &r.ratelimit,
                Role::Broker => &r.broker,
            };
            Target {
                role,
                url: url.expose_secret().to_owned(),
                ns: Keys::new(&settings.key_prefix).role_ns(role),
            }
        })
        .collect())
}

fn target(settings: &Settings, role: &str) -> anyhow::Result<Target> {
    let role = Role::parse(role)
        .ok_or_else(|| anyhow::anyhow!("--role must be cache, sessions, ratelimit or jobs"))?;
    targets(settings)?
        .into_iter()
        .find(|t| t.role == role)
        .ok_or_else(|| anyhow::anyhow!("role not configured"))
}

/// A connection of the command's own to a target's Redis (one server, a
/// cluster, a Sentinel's master), as the service connects it (`kv`).
async fn connect(t: &Target) -> anyhow::Result<Conn> {
    tokio::time::timeout(
        Duration::from_secs(3),
        crate::kv::connect_plain(&t.url, Duration::from_secs(10)),
    )
    .await
    .map_err(|_| anyhow::anyhow!("timed out"))
    .and_then(|r| r)
    .with_context(|| {
        format!(
            "cannot reach Redis for the {} role at {}",
            t.role.name(),
            redact(&t.url)
        )
    })
}

/// Glob special characters in our prefix must not act as wildcards.
fn escape_glob(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            if "*?[]\\".contains(c) {
                vec!['\\', c]
            } else {
                vec![c]
            }
        })
        .collect()
}

/// Keys asked per SCAN step (and removed per UNLINK).
const SCAN_COUNT: usize = 1000;

fn progress(label: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new_spinner();
    if let Ok(style) = ProgressStyle::with_template("{spinner} {msg}: {pos} keys") {
        pb.set_style(style);
    }
    pb.set_message(label.to_owned());
    pb
}

/// Deletes every key matching `pattern` under a target's namespace, on
/// every master of its Redis.
async fn delete_matching(t: &Target, pattern: &str, label: &str) -> anyhow::Result<usize> {
    let conn = connect(t).await?;
    let pb = progress(label);
    let full = format!("{}{}", escape_glob(&t.ns), pattern);
    let n = conn
        .scan_each_master(&full, SCAN_COUNT, usize::MAX, |keys| {
            let mut c = conn.clone();
            let pb = pb.clone();
            async move {
                let n = keys.len() as u64;
                let _: i64 = redis::cmd("UNLINK").arg(&keys).query_async(&mut c).await?;
                pb.inc(n);
                Ok(())
            }
        })
        .await?;
    pb.finish_and_clear();
    Ok(n)
}

/// A stored value for people: our cache codec undone (decompressed) when it
/// is one of ours, JSON pretty-printed when it is JSON, text otherwise.
fn decode(raw: &[u8]) -> String {
    let pretty = |b: &[u8]| {
        serde_json::from_slice::<Value>(b)
            .ok()
            .and_then(|v| serde_json::to_string_pretty(&v).ok())
    };
    // A stored response shows its identity body (tag and compressed
    // variants are not for reading).
    let plain = crate::cache::codec::decode(bytes::Bytes::copy_from_slice(raw))
        .map(
            |b| match crate::cache::response::CachedResponse::decode(b.clone()) {
                Ok(r) => r.identity.to_vec(),
                Err(_) => b.to_vec(),
            },
        )
        .unwrap_or_else(|_| raw.to_vec());
    pretty(&plain)
        .or_else(|| pretty(raw))
        .unwrap_or_else(|| String::from_utf8_lossy(&plain).into_owned())
}

fn confirm(question: &str) -> anyhow::Result<bool> {
    if !std::io::stdin().is_terminal() {
        bail!("refusing without confirmation: pass --yes in scripts");
    }
    eprint!("{question} [y/N] ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

pub async fn run(settings: Settings, args: Args) -> anyhow::Result<()> {
    if settings.redis.is_none() && matches!(args.command, CacheCommand::Ping | CacheCommand::Check)
    {
        return embedded(&settings, matches!(args.command, CacheCommand::Check)).await;
    }
    match args.command {
        CacheCommand::Ping => {
            let mut failed = 0;
            for t in targets(&settings)? {
                let started = Instant::now();
                let res = async {
                    let mut c = connect(&t).await?;
                    let pong: String = redis::cmd("PING").query_async(&mut c).await?;
                    anyhow::Ok(pong)
                }
                .await;
                match res {
                    Ok(_) => println!(
                        "{:<10} ok    {:>8.2} ms  {}",
                        t.role.name(),
                        started.elapsed().as_secs_f64() * 1000.0,
                        redact(&t.url)
                    ),
                    Err(e) => {
                        failed += 1;
                        println!("{:<10} DOWN  {e:#}", t.role.name());
                    }
                }
            }
            if failed > 0 {
                bail!("{failed} role(s) unreachable");
            }
        }
        CacheCommand::Keys {
            role,
            pattern,
            limit,
        } => {
            let t = target(&settings, &role)?;
            let conn = connect(&t).await?;
            let full = format!("{}{}", escape_glob(&t.ns), pattern);
            let ns_len = t.ns.len();
            let n = conn
                .scan_each_master(&full, SCAN_COUNT, limit, |keys| {
                    let conn = conn.clone();
                    async move {
                        // One key at a time, concurrently: on a cluster the
                        // keys of one batch live in many slots.
                        let info = futures::future::try_join_all(keys.iter().map(|k| {
                            let mut c = conn.clone();
                            async move {
                                let mut pipe = redis::pipe();
                                pipe.cmd("PTTL").arg(k).cmd("MEMORY").arg("USAGE").arg(k);
                                pipe.query_async::<(Option<i64>, Option<i64>)>(&mut c).await
                            }
                        }))
                        .await?;
                        for (k, (ttl, size)) in keys.iter().zip(info) {
                            let ttl = match ttl {
                                Some(ms) if ms >= 0 => format!("{:.1}s", ms as f64 / 1000.0),
                                _ => "none".to_owned(),
                            };
                            let size = size.unwrap_or(0);
                            println!("{}\tttl={ttl}\tbytes={size}", &k[ns_len.min(k.len())..]);
                        }
                        Ok(())
                    }
                })
                .await?;
            eprintln!("{n} key(s)");
        }
        CacheCommand::Get { key, role } => {
            let t = target(&settings, &role)?;
            let mut c = connect(&t).await?;
            let full = format!("{}{}", t.ns, key);
            let kind: String = redis::cmd("TYPE").arg(&full).query_async(&mut c).await?;
            match kind.as_str() {
                "none" => bail!("no such key: {key}"),
                "string" => {
                    let raw: Vec<u8> = redis::cmd("GET").arg(&full).query_async(&mut c).await?;
                    println!("{}", decode(&raw));
                }
                "hash" => {
                    let h: Vec<(String, String)> =
                        redis::cmd("HGETALL").arg(&full).query_async(&mut c).await?;
                    let map: serde_json::Map<String, Value> =
                        h.into_iter().map(|(k, v)| (k, Value::from(v))).collect();
                    println!("{}", serde_json::to_string_pretty(&map)?);
                }
                other => println!("({other}: use redis-cli for this type)"),
            }
        }
        CacheCommand::Ttl { key, role } => {
            let t = target(&settings, &role)?;
            let mut c = connect(&t).await?;
            let ms: i64 = redis::cmd("PTTL")
                .arg(format!("{}{}", t.ns, key))
                .query_async(&mut c)
                .await?;
            match ms {
                -2 => bail!("no such key: {key}"),
                -1 => println!("no expiry"),
                ms => println!("{:.3}s", ms as f64 / 1000.0),
            }
        }
        CacheCommand::Del { key, role } => {
            let t = target(&settings, &role)?;
            let mut c = connect(&t).await?;
            let n: i64 = redis::cmd("UNLINK")
                .arg(format!("{}{}", t.ns, key))
                .query_async(&mut c)
                .await?;
            println!("{n} key(s) removed");
        }
        CacheCommand::Invalidate { pattern } => {
            let t = target(&settings, "cache")?;
            let n = delete_matching(&t, &pattern, "invalidating").await?;
            println!("{n} key(s) removed");
        }
        CacheCommand::Flush { role, yes, force } => {
            let t = target(&settings, &role)?;
            if matches!(t.role, Role::Sessions | Role::Broker) && !force {
                bail!(
                    "flushing {} {}: pass --force if you mean it",
                    t.role.name(),
                    if t.role == Role::Sessions {
                        "logs every user out"
                    } else {
                        "drops queued and running jobs"
                    }
                );
            }
            if !yes && !confirm(&format!("Remove every key under {}* ?", t.ns))? {
                bail!("aborted");
            }
            let n = delete_matching(&t, "*", "flushing").await?;
            println!("{n} key(s) removed from the {} role", t.role.name());
        }
        CacheCommand::Info { json: as_json } => {
            let mut report = Vec::new();
            for t in targets(&settings)? {
                report.push(
                    role_info(&t).await.unwrap_or_else(
                        |e| json!({"role": t.role.name(), "error": format!("{e:#}")}),
                    ),
                );
            }
            if as_json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                for r in &report {
                    println!("{}", r["role"].as_str().unwrap_or("?"));
                    if let Some(obj) = r.as_object() {
                        for (k, v) in obj.iter().filter(|(k, _)| *k != "role") {
                            println!("  {k:<22} {v}");
                        }
                    }
                }
            }
        }
        CacheCommand::Check => {
            let mut failed = 0;
            for t in targets(&settings)? {
                match check_role(&t).await {
                    Ok(steps) => println!("{:<10} ok    {}", t.role.name(), steps.join(", ")),
                    Err(e) => {
                        failed += 1;
                        println!("{:<10} FAIL  {e:#}", t.role.name());
                    }
                }
            }
            if failed > 0 {
                bail!("cache check failed for {failed} role(s)");
            }
        }
    }
    Ok(())
}

/// `ping` and `check` on the embedded default: sessions and jobs live in the
/// database (checked here, a probe session written, read and deleted); the
/// cache and rate limits live inside the `serve` process (its `/health`).
async fn embedded(settings: &Settings, check: bool) -> anyhow::Result<()> {
    use crate::sessions::SessionStore;
    let started = Instant::now();
    let db = crate::db::Db::connect(settings.database_url.expose_secret()).await?;
    db.migrate().await?;
    db.ping().await?;
    let rtt = started.elapsed().as_secs_f64() * 1000.0;
    println!("cache      in-process (inside `serve`; see its /health)");
    println!("ratelimit  in-process (inside `serve`; see its /health)");
    if check {
        let store = crate::sessions::sql::SqlSessionStore::new(db.clone());
        let probe = format!("check-{}", uuid::Uuid::new_v4().simple());
        store.create(&probe, 0, Duration::from_secs(60)).await?;
        anyhow::ensure!(
            store.load(&probe, Duration::from_secs(60)).await? == Some(0),
            "probe session not read back"
        );
        store.delete(&probe).await?;
        anyhow::ensure!(
            store.load(&probe, Duration::from_secs(60)).await?.is_none(),
            "probe session not deleted"
        );
        println!("sessions   ok    database: write, read, delete");
    } else {
        println!("sessions   ok    {rtt:>8.2} ms  database");
    }
    let counts = crate::jobs::sql::SqlQueue::new(db);
    let c = crate::jobs::QueueBackend::counts(&counts).await?;
    println!(
        "jobs       ok    database: {} queued, {} running, {} dead",
        c.queued, c.running, c.dead
    );
    Ok(())
}

fn info_field(info: &str, name: &str) -> Option<String> {
    info.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(':')))
        .map(|v| v.trim().to_owned())
}

/// Memory, key counts, hit ratio, evictions and eviction policy of a
/// role, summed over every master of its Redis (the policy and used memory
/// per master when there are several).
async fn role_info(t: &Target) -> anyhow::Result<Value> {
    let c = connect(t).await?;
    let num = |s: &str, f: &str| {
        info_field(s, f)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let masters = c.masters().await?;
    let (mut hits, mut misses, mut evicted, mut memory_bytes) = (0.0, 0.0, 0.0, 0.0);
    let mut per_master = serde_json::Map::new();
    let mut policies = std::collections::BTreeSet::new();
    for m in &masters {
        let memory: String = m.query(redis::cmd("INFO").arg("memory")).await?;
        let stats: String = m.query(redis::cmd("INFO").arg("stats")).await?;
        let policy: Vec<String> = m
            .query(redis::cmd("CONFIG").arg("GET").arg("maxmemory-policy"))
            .await
            .unwrap_or_default();
        let policy = policy.get(1).cloned().unwrap_or_else(|| "unknown".into());
        hits += num(&stats, "keyspace_hits");
        misses += num(&stats, "keyspace_misses");
        evicted += num(&stats, "evicted_keys");
        memory_bytes += num(&memory, "used_memory");
        per_master.insert(
            m.addr.clone(),
            json!({
                "used_memory": info_field(&memory, "used_memory_human"),
                "maxmemory_policy": policy,
            }),
        );
        policies.insert(policy);
    }
    let ours = c
        .scan_each_master(
            &format!("{}*", escape_glob(&t.ns)),
            SCAN_COUNT,
            usize::MAX,
            |_| async { Ok(()) },
        )
        .await?;
    let policy = policies.into_iter().collect::<Vec<_>>().join(",");
    let mut v = json!({
        "role": t.role.name(),
        "used_memory": format!("{:.2}M", memory_bytes / (1024.0 * 1024.0)),
        "keys_under_prefix": ours,
        "redis_keyspace_hit_ratio": if hits + misses > 0.0 { Some(hits / (hits + misses)) } else { None },
        "evicted_keys": evicted,
        "maxmemory_policy": policy,
    });
    if masters.len() > 1 {
        v["masters"] = Value::Object(per_master);
    }
    if t.role == Role::Cache {
        v["our_hit_ratio_by_family"] = our_hit_ratios(t, &c).await?;
    }
    if t.role != Role::Cache && policy != "noeviction" {
        v["warning"] = json!("this role's keys can be evicted: use maxmemory-policy noeviction");
    }
    Ok(v)
}

/// Our hit ratio per key family, from the counters every instance adds to
/// (`cache::stats`): `{family: {hits, near_hits, redis_hits, misses,
/// errors, hit_ratio}}`; `hits` counts both kinds (from an API process's
/// near-cache, from Redis).
async fn our_hit_ratios(t: &Target, c: &Conn) -> anyhow::Result<Value> {
    let stats_ns = format!("{}stats:", t.ns);
    let mut names = Vec::new();
    c.scan_each_master(
        &format!("{}*", escape_glob(&stats_ns)),
        SCAN_COUNT,
        10_000,
        |keys| {
            names.extend(keys);
            async { Ok(()) }
        },
    )
    .await?;
    let mut families: std::collections::BTreeMap<String, [f64; 4]> = Default::default();
    if !names.is_empty() {
        // The cluster connection splits a multi-key MGET by slot.
        let values: Vec<Option<f64>> = redis::cmd("MGET")
            .arg(&names)
            .query_async(&mut c.clone())
            .await?;
        for (name, value) in names.iter().zip(values) {
            let Some((family, outcome)) = name[stats_ns.len()..].rsplit_once(':') else {
                continue;
            };
            let slot = match outcome {
                "hit" => 0,
                "miss" => 1,
                "near_hit" => 3,
                _ => 2,
            };
            families.entry(family.to_owned()).or_default()[slot] += value.unwrap_or(0.0);
        }
    }
    Ok(families
        .into_iter()
        .map(|(family, [redis_hits, misses, errors, near_hits])| {
            let hits = redis_hits + near_hits;
            let ratio = (hits + misses > 0.0).then(|| hits / (hits + misses));
            (
                family,
                json!({"hits": hits, "near_hits": near_hits, "redis_hits": redis_hits,
                       "misses": misses, "errors": errors, "hit_ratio": ratio}),
            )
        })
        .collect::<serde_json::Map<String, Value>>()
        .into())
}

async fn check_role(t: &Target) -> anyhow::Result<Vec<String>> {
    let mut c = connect(t).await?;
    let key = format!("{}check:{}", t.ns, uuid::Uuid::new_v4().simple());
    let mut steps = Vec::new();
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg("probe")
        .arg("PX")
        .arg(10_000)
        .query_async(&mut c)
        .await?;
    steps.push("write");
    let got: Option<String> = redis::cmd("GET").arg(&key).query_async(&mut c).await?;
    anyhow::ensure!(
        got.as_deref() == Some("probe"),
        "read back {got:?} instead of the probe"
    );
    steps.push("read");
    let _: i64 = redis::cmd("PEXPIRE")
        .arg(&key)
        .arg(50)
        .query_async(&mut c)
        .await?;
    tokio::time::sleep(Duration::from_millis(120)).await;
    let exists: i64 = redis::cmd("EXISTS").arg(&key).query_async(&mut c).await?;
    anyhow::ensure!(exists == 0, "the probe did not expire");
    steps.push("expire");
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg("probe")
        .arg("PX")
        .arg(10_000)
        .query_async(&mut c)
        .await?;
    let removed: i64 = redis::cmd("UNLINK").arg(&key).query_async(&mut c).await?;
    anyhow::ensure!(removed == 1, "the probe could not be deleted");
    steps.push("invalidate");
    Ok(steps.into_iter().map(str::to_owned).collect())
}
