//! The job queue on Redis (the guide's Celery broker and result store, DB 0):
//! a small queue of our own on lists, sorted sets and Lua scripts.
//!
//! # Why not apalis-redis
//!
//! apalis-redis 1.0 builds with our redis-rs, but does not meet every
//! guarantee of [`super::QueueBackend`]: a dead worker's jobs are recovered
//! by a heartbeat reaper (30 s × 10 missed beats = 5 min by default) instead
//! of each job's own visibility timeout, and its open issues on orphan
//! recovery and worker-id reuse mean a restarted worker can inherit or strand
//! jobs; its Lua scripts also touch an undeclared key outside the queue's
//! hash slot, which breaks on Redis Cluster unless every queue is named into
//! that slot. What we need is a few atomic steps, so they are written here,
//! each a documented script under `src/jobs/lua/`, and the same behaviour
//! suite runs against this queue and the SQL one.
//!
//! # Layout (keys from [`crate::kv::keys::Keys`], all under `{prefix}jobs:{q}:`)
//!
//! | key | type | holds |
//! |---|---|---|
//! | `job:{id}` | hash | name, payload, status, attempts, max_attempts, timeout_ms, worker, last_error, result |
//! | `ready` | list | ids due now (LPUSH to queue, RPOP to take; due retries and taken-back leases go to the head) |
//! | `delayed` | zset | ids waiting for a retry or a later start (score: run-at ms) |
//! | `leases` | zset | ids being run (score: lease deadline ms; the owner is `worker` in the hash) |
//! | `dead` | zset | ids out of attempts (score: time of death ms) |
//! | `periodic:{name}:{slot}` | string | claim of one period of a periodic job (SET NX PX) |
//! | `tally:{name}` | hash | diagnostic run counts by job id (probe jobs) |
//!
//! The hash tag `{q}` puts every key in one Cluster slot, including the job
//! hashes the scripts compute from ids they pop. Redis `TIME` is the clock
//! of every script, so workers' clocks never decide a lease.
//!
//! # Delivery
//!
//! `reserve` (one script) moves due delayed ids to `ready`, takes back
//! leases that ran out (or kills the job if that was its last attempt),
//! pops one id, counts the attempt and leases the job for its own timeout.
//! `extend`, `complete`, `fail` and `release` change a job only while the
//! caller still holds its lease. A finished job's hash expires after the
//! result TTL; dead jobs stay until replayed.

use std::collections::{BTreeMap, HashMap};
use std::sync::LazyLock;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use redis::Script;

use super::{Job, JobInfo, Leased, QueueBackend, QueueCounts};
use crate::kv::RedisRole;
use crate::kv::keys::Keys;

/// How long finished jobs' results are kept by default (as in the worker).
const DEFAULT_RESULT_TTL: Duration = super::worker::RESULT_TTL;

/// At most this many delayed ids and lapsed leases are moved per `reserve`.
const RESERVE_BATCH: u32 = 100;

/// How long diagnostic tallies are kept after their last count.
const TALLY_TTL: Duration = Duration::from_secs(24 * 3600);

/// The queue's Lua scripts (SHA1 computed once; loaded on first use).
struct Scripts {
    enqueue: Script,
    reserve: Script,
    extend: Script,
    complete: Script,
    fail: Script,
    release: Script,
    replay: Script,
}

static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    enqueue: Script::new(include_str!("lua/enqueue.lua")),
    reserve: Script::new(include_str!("lua/reserve.lua")),
    extend: Script::new(include_str!("lua/extend.lua")),
    complete: Script::new(include_str!("lua/complete.lua")),
    fail: Script::new(include_str!("lua/fail.lua")),
    release: Script::new(include_str!("lua/release.lua")),
    replay: Script::new(include_str!("lua/replay.lua")),
});

/// [`QueueBackend`] on Redis: see the module documentation.
pub struct RedisQueue {
    role: RedisRole,
    keys: Keys,
    ready: String,
    delayed: String,
    leases: String,
    dead: String,
    job_prefix: String,
    result_ttl: Duration,
}

impl RedisQueue {
    /// A queue on the broker role's connection, under `keys`' prefix.
    pub fn new(role: RedisRole, keys: &Keys) -> Self {
        RedisQueue {
            role,
            ready: keys.jobs_ready(),
            delayed: keys.jobs_delayed(),
            leases: keys.jobs_leases(),
            dead: keys.jobs_dead(),
            job_prefix: keys.jobs_job_prefix(),
            keys: keys.clone(),
            result_ttl: DEFAULT_RESULT_TTL,
        }
    }

    /// Keeps finished jobs' results for `ttl` instead of a day.
    pub fn with_result_ttl(mut self, ttl: Duration) -> Self {
        self.result_ttl = ttl;
        self
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A job hash as read by HGETALL; `None` when the job does not exist.
fn info(id: &str, mut h: HashMap<String, String>) -> Option<JobInfo> {
    if h.is_empty() {
        return None;
    }
    Some(JobInfo {
        id: id.to_owned(),
        name: h.remove("name").unwrap_or_default(),
        status: h.remove("status").unwrap_or_default(),
        attempts: h
            .get("attempts")
            .and_then(|a| a.parse::<i64>().ok())
            .and_then(|a| u32::try_from(a).ok())
            .unwrap_or(0),
        last_error: h.remove("last_error"),
        result: h.remove("result"),
        worker: h.remove("worker"),
    })
}

#[async_trait]
impl QueueBackend for RedisQueue {
    async fn enqueue(&self, id: &str, job: &Job, run_at_ms: i64) -> anyhow::Result<()> {
        let payload = serde_json::to_string(job)?;
        let job_key = self.keys.jobs_job(id);
        let created: i64 = self
            .role
            .run(|mut c| async move {
                SCRIPTS
                    .enqueue
                    .key(&self.ready)
                    .key(&self.delayed)
                    .key(&job_key)
                    .arg(id)
                    .arg(job.name())
                    .arg(&payload)
                    .arg(job.max_attempts())
                    .arg(ms(job.timeout()))
                    .arg(run_at_ms)
                    .invoke_async(&mut c)
                    .await
            })
            .await
            .context("queueing a job")?;
        anyhow::ensure!(created == 1, "a job with id {id} exists already");
        Ok(())
    }

    async fn reserve(&self, worker_id: &str) -> anyhow::Result<Option<Leased>> {
        let got: Option<(String, String, u32, u32, u64)> = self
            .role
            .run(|mut c| async move {
                SCRIPTS
                    .reserve
                    .key(&self.ready)
                    .key(&self.delayed)
                    .key(&self.leases)
                    .key(&self.dead)
                    .arg(&self.job_prefix)
                    .arg(worker_id)
                    .arg(RESERVE_BATCH)
                    .invoke_async(&mut c)
                    .await
            })
            .await
            .context("reserving a job")?;
        Ok(
            got.map(|(id, payload, attempt, max_attempts, timeout_ms)| Leased {
                job: serde_json::from_str(&payload).map_err(|e| e.to_string()),
                id,
                attempt,
                max_attempts,
                timeout: Duration::from_millis(timeout_ms),
            }),
        )
    }

    async fn extend(&self, id: &str, worker_id: &str, timeout: Duration) -> anyhow::Result<bool> {
        let job_key = self.keys.jobs_job(id);
        let held: i64 = self
            .role
            .run(|mut c| async move {
                SCRIPTS
                    .extend
                    .key(&self.leases)
                    .key(&job_key)
                    .arg(id)
                    .arg(worker_id)
                    .arg(ms(timeout))
                    .invoke_async(&mut c)
                    .await
            })
            .await
            .context("extending a lease")?;
        Ok(held == 1)
    }

    async fn complete(
        &self,
        id: &str,
        worker_id: &str,
        result: Option<&str>,
    ) -> anyhow::Result<bool> {
        let job_key = self.keys.jobs_job(id);
        let done: i64 = self
            .role
            .run(|mut c| async move {
                SCRIPTS
                    .complete
                    .key(&self.leases)
                    .key(&job_key)
                    .arg(id)
                    .arg(worker_id)
                    .arg(if result.is_some() { "1" } else { "0" })
                    .arg(result.unwrap_or_default())
                    .arg(ms(self.result_ttl).max(1))
                    .invoke_async(&mut c)
                    .await
            })
            .await
            .context("completing a job")?;
        Ok(done == 1)
    }

    async fn fail(
        &self,
        id: &str,
        worker_id: &str,
        error: &str,
        retry_at_ms: Option<i64>,
    ) -> anyhow::Result<bool> {
        let job_key = self.keys.jobs_job(id);
        let retry = retry_at_ms.map(|t| t.to_string()).unwrap_or_default();
        let done: i64 = self
            .role
            .run(|mut c| async move {
                SCRIPTS
                    .fail
                    .key(&self.leases)
                    .key(&self.delayed)
                    .key(&self.dead)
                    .key(&job_key)
                    .arg(id)
                    .arg(worker_id)
                    .arg(error)
                    .arg(&retry)
                    .invoke_async(&mut c)
                    .await
            })
            .await
            .context("recording a job failure")?;
        Ok(done == 1)
    }

    async fn release(&self, id: &str, worker_id: &str) -> anyhow::Result<bool> {
        let job_key = self.keys.jobs_job(id);
        let done: i64 = self
            .role
            .run(|mut c| async move {
                SCRIPTS
                    .release
                    .key(&self.leases)
                    .key(&self.ready)
                    .key(&job_key)
                    .arg(id)
                    .arg(worker_id)
                    .invoke_async(&mut c)
                    .await
            })
            .await
            .context("releasing a job")?;
        Ok(done == 1)
    }

    async fn info(&self, id: &str) -> anyhow::Result<Option<JobInfo>> {
        let job_key = self.keys.jobs_job(id);
        let h: HashMap<String, String> = self
            .role
            .run(|mut c| async move {
                redis::cmd("HGETALL")
                    .arg(&job_key)
                    .query_async(&mut c)
                    .await
            })
            .await
            .context("reading a job")?;
        Ok(info(id, h))
    }

    async fn dead(&self, limit: usize) -> anyhow::Result<Vec<JobInfo>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let stop = i64::try_from(limit).unwrap_or(i64::MAX) - 1;
        let ids: Vec<String> = self
            .role
            .run(|mut c| async move {
                redis::cmd("ZREVRANGE")
                    .arg(&self.dead)
                    .arg(0)
                    .arg(stop)
                    .query_async(&mut c)
                    .await
            })
            .await
            .context("listing dead jobs")?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let hashes: Vec<HashMap<String, String>> = self
            .role
            .run(|mut c| {
                let mut pipe = redis::pipe();
                for id in &ids {
                    pipe.cmd("HGETALL").arg(self.keys.jobs_job(id));
                }
                async move { pipe.query_async(&mut c).await }
            })
            .await
            .context("reading dead jobs")?;
        Ok(ids
            .iter()
            .zip(hashes)
            .filter_map(|(id, h)| info(id, h))
            .collect())
    }

    async fn replay(&self, id: &str) -> anyhow::Result<bool> {
        let job_key = self.keys.jobs_job(id);
        let done: i64 = self
            .role
            .run(|mut c| async move {
                SCRIPTS
                    .replay
                    .key(&self.dead)
                    .key(&self.ready)
                    .key(&job_key)
                    .arg(id)
                    .invoke_async(&mut c)
                    .await
            })
            .await
            .context("replaying a job")?;
        Ok(done == 1)
    }

    async fn claim_periodic(
        &self,
        name: &str,
        slot: i64,
        period: Duration,
    ) -> anyhow::Result<bool> {
        let key = self.keys.jobs_periodic(name, slot);
        // The claim only has to outlive the period by far enough that no
        // worker still asks for this slot; then it is garbage.
        let px = ms(period.saturating_mul(2)).max(60_000);
        let set: Option<String> = self
            .role
            .run(|mut c| async move {
                redis::cmd("SET")
                    .arg(&key)
                    .arg(1)
                    .arg("NX")
                    .arg("PX")
                    .arg(px)
                    .query_async(&mut c)
                    .await
            })
            .await
            .context("claiming a periodic job")?;
        Ok(set.is_some())
    }

    async fn counts(&self) -> anyhow::Result<QueueCounts> {
        let (ready, delayed, running, dead): (i64, i64, i64, i64) = self
            .role
            .run(|mut c| async move {
                redis::pipe()
                    .cmd("LLEN")
                    .arg(&self.ready)
                    .cmd("ZCARD")
                    .arg(&self.delayed)
                    .cmd("ZCARD")
                    .arg(&self.leases)
                    .cmd("ZCARD")
                    .arg(&self.dead)
                    .query_async(&mut c)
                    .await
            })
            .await
            .context("counting jobs")?;
        Ok(QueueCounts {
            queued: ready + delayed,
            running,
            dead,
        })
    }

    /// Nothing to do: finished jobs' hashes expire by themselves (the TTL is
    /// set when they complete).
    async fn purge(&self, _result_ttl: Duration) -> anyhow::Result<()> {
        Ok(())
    }

    async fn tally_run(&self, tally: &str, member: &str) -> anyhow::Result<()> {
        let key = self.keys.jobs_tally(tally);
        self.role
            .run(|mut c| async move {
                redis::pipe()
                    .cmd("HINCRBY")
                    .arg(&key)
                    .arg(member)
                    .arg(1)
                    .ignore()
                    .cmd("PEXPIRE")
                    .arg(&key)
                    .arg(ms(TALLY_TTL))
                    .ignore()
                    .query_async::<()>(&mut c)
                    .await
            })
            .await
            .context("counting a run")
    }

    async fn tally(&self, tally: &str) -> anyhow::Result<BTreeMap<String, i64>> {
        let key = self.keys.jobs_tally(tally);
        let h: HashMap<String, i64> = self
            .role
            .run(|mut c| async move { redis::cmd("HGETALL").arg(&key).query_async(&mut c).await })
            .await
            .context("reading a tally")?;
        Ok(h.into_iter().collect())
    }
}
