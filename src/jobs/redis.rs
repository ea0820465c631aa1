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
//! | `wake` | list | wake-up tokens: enqueues push, idle worker processes wait with one `BLPOP` each |
//! | `delayed` | zset | ids waiting for a retry or a later start (score: run-at ms) |
//! | `leases` | zset | ids being run (score: lease deadline ms; the owner is `worker` in the hash) |
//! | `dead` | zset | ids out of attempts (score: time of death ms) |
//! | `periodic:{name}:{slot}` | string | claim of one period of a periodic job (SET NX PX) |
//! | `tally:{name}` | hash | diagnostic run counts by job id (probe jobs, [`super::diagnostics`]) |
//!
//! The hash tag `{q}` puts every key in one Cluster slot, including the job
//! hashes the scripts compute from ids they pop. Redis `TIME` is the clock
//! of every script, so workers' clocks never decide a lease.
//!
//! # Delivery
//!
//! A worker process calls `exchange` (one script, `src/jobs/lua/exchange.lua`) for
//! everything on its hot path: it records the outcomes of the jobs its slots
//! finished and leases the next batch, after moving due delayed ids to
//! `ready` and taking back leases that ran out. `extend` changes a lease only
//! while the caller still holds it. A finished job's hash expires after the
//! result TTL; dead jobs stay until replayed.
//!
//! # Waking idle workers
//!
//! An idle worker process does not poll: it waits in `BLPOP wake` on a
//! connection of its own ([`crate::kv::blocking`]; the role's multiplexed
//! connection has a 250 ms response timeout and must not be held by a
//! block). `enqueue` pushes up to one token per job (at most
//! [`WAKE_TOKENS`]); `exchange` keeps one token while ready jobs remain, so
//! that idle processes wake one another, and drops stale tokens when the
//! queue is empty. A worker wakes by itself when the next delayed job or
//! lease deadline is due (`exchange` tells it when), and at the latest after
//! its poll interval, in case a token was lost with a connection.

use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use redis::Script;

use super::{Exchanged, Job, JobInfo, Leased, Outcome, QueueBackend, QueueCounts, Settle};
use crate::kv::RedisRole;
use crate::kv::blocking::BlockingConn;
use crate::kv::keys::Keys;

/// How long finished jobs' results are kept by default (as in the worker).
const DEFAULT_RESULT_TTL: Duration = super::worker::RESULT_TTL;

/// At most this many delayed ids and lapsed leases are moved per `reserve`.
const RESERVE_BATCH: u32 = 100;

/// Most wake-up tokens waiting at once: enough to wake this many idle
/// worker processes for a burst of jobs.
pub const WAKE_TOKENS: u32 = 64;

/// Most jobs queued by one script call (larger batches are split).
const ENQUEUE_BATCH: usize = 500;

/// The queue's Lua scripts (SHA1 computed once; loaded on first use).
struct Scripts {
    enqueue: Script,
    exchange: Script,
    extend: Script,
    replay: Script,
}

static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    enqueue: Script::new(include_str!("lua/enqueue.lua")),
    exchange: Script::new(include_str!("lua/exchange.lua")),
    extend: Script::new(include_str!("lua/extend.lua")),
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
    wake: String,
    job_prefix: String,
    result_ttl: Duration,
    /// The blocking connection idle workers wait on; without it,
    /// [`QueueBackend::wait_for_work`] just sleeps (polling).
    blocking: Option<BlockingConn>,
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
            wake: keys.jobs_wake(),
            job_prefix: keys.jobs_job_prefix(),
            keys: keys.clone(),
            result_ttl: DEFAULT_RESULT_TTL,
            blocking: None,
        }
    }

    /// Lets idle workers wait for new jobs on a blocking connection of their
    /// own to `url` (the broker's Redis) instead of polling.
    pub fn with_wakeups(mut self, url: &str) -> anyhow::Result<Self> {
        self.blocking = Some(BlockingConn::new(url)?);
        Ok(self)
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
    async fn enqueue_many(&self, jobs: &[(String, Job, i64)]) -> anyhow::Result<()> {
        for chunk in jobs.chunks(ENQUEUE_BATCH) {
            let mut args: Vec<String> = Vec::with_capacity(chunk.len() * 6);
            for (id, job, run_at_ms) in chunk {
                args.push(id.clone());
                args.push(job.name().to_owned());
                args.push(serde_json::to_string(job)?);
                args.push(job.max_attempts().to_string());
                args.push(ms(job.timeout()).to_string());
                args.push(run_at_ms.to_string());
            }
            let args = &args;
            let queued: i64 = self
                .role
                .run(|mut c| async move {
                    SCRIPTS
                        .enqueue
                        .key(&self.ready)
                        .key(&self.delayed)
                        .key(&self.wake)
                        .arg(&self.job_prefix)
                        .arg(WAKE_TOKENS)
                        .arg(args)
                        .invoke_async(&mut c)
                        .await
                })
                .await
                .context("queueing jobs")?;
            if queued < 0 {
                let at = usize::try_from(-queued - 1).unwrap_or(0);
                let id = chunk.get(at).map(|(id, _, _)| id.as_str()).unwrap_or("?");
                anyhow::bail!("a job with id {id} exists already");
            }
        }
        Ok(())
    }

    async fn exchange(
        &self,
        worker_id: &str,
        outcomes: &[Outcome],
        want: usize,
    ) -> anyhow::Result<Exchanged> {
        let mut args: Vec<&str> = Vec::with_capacity(outcomes.len() * 4);
        let retry_at: Vec<String> = outcomes
            .iter()
            .map(|o| match &o.settle {
                Settle::Retry { at_ms, .. } => at_ms.to_string(),
                _ => String::new(),
            })
            .collect();
        for (o, at) in outcomes.iter().zip(&retry_at) {
            let (kind, text, num) = match &o.settle {
                Settle::Done(Some(r)) => ("done", r.as_str(), "1"),
                Settle::Done(None) => ("done", "", "0"),
                Settle::Retry { error, .. } => ("retry", error.as_str(), at.as_str()),
                Settle::Dead(error) => ("dead", error.as_str(), ""),
                Settle::Release => ("release", "", ""),
            };
            args.extend([o.id.as_str(), kind, text, num]);
        }
        let args = &args;
        type Row = (String, String, u32, u32, u64);
        let (held, leased, next_due): (Vec<i64>, Vec<Row>, i64) = self
            .role
            .run(|mut c| async move {
                SCRIPTS
                    .exchange
                    .key(&self.ready)
                    .key(&self.delayed)
                    .key(&self.leases)
                    .key(&self.dead)
                    .key(&self.wake)
                    .arg(&self.job_prefix)
                    .arg(worker_id)
                    .arg(want)
                    .arg(RESERVE_BATCH)
                    .arg(ms(self.result_ttl).max(1))
                    .arg(args)
                    .invoke_async(&mut c)
                    .await
            })
            .await
            .context("exchanging jobs with the queue")?;
        Ok(Exchanged {
            held: held.into_iter().map(|h| h == 1).collect(),
            leased: leased
                .into_iter()
                .map(|(id, payload, attempt, max_attempts, timeout_ms)| Leased {
                    job: serde_json::from_str(&payload).map_err(|e| e.to_string()),
                    id,
                    attempt,
                    max_attempts,
                    timeout: Duration::from_millis(timeout_ms),
                })
                .collect(),
            next_due: u64::try_from(next_due).ok().map(Duration::from_millis),
        })
    }

    async fn wait_for_work(&self, timeout: Duration) -> anyhow::Result<()> {
        match &self.blocking {
            Some(conn) => conn.blpop(&self.wake, timeout).await.map(|_| ()),
            None => {
                tokio::time::sleep(timeout).await;
                Ok(())
            }
        }
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
                    .key(&self.wake)
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
}
