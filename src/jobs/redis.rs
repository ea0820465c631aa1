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
//! # Layout (keys from [`crate::kv::keys::Keys`], per partition, all under `{prefix}jobs:{tag}:`)
//!
//! | key | type | holds |
//! |---|---|---|
//! | `job:{id}` | string | the job's record ([`super::record`]: status, attempts, payload, last error, result) |
//! | `ready` | list | ids due now (LPUSH to queue, RPOP to take; due retries and taken-back leases go to the head) |
//! | `running` | hash | id → worker holding it: a job runs exactly while it is a field here |
//! | `leases` | zset | ids being run (score: lease deadline ms) |
//! | `wake` | list | wake-up tokens: enqueues push, idle worker processes wait with one `BLPOP` each |
//! | `delayed` | zset | ids waiting for a retry or a later start (score: run-at ms) |
//! | `dead` | zset | ids out of attempts (score: time of death ms) |
//!
//! and, once (in partition 0's slot), `periodic:{name}:{slot}` (string:
//! claim of one period of a periodic job, SET NX PX) and the diagnostic
//! tallies of [`super::diagnostics`].
//!
//! The hash tag of a partition puts all its keys in one Cluster slot,
//! including the records the scripts compute from ids they pop. Redis
//! `TIME` is the clock of every script, so workers' clocks never decide a
//! lease.
//!
//! # Partitions
//!
//! The queue is split into [`RedisQueue::with_partitions`] partitions (1 by
//! default; on a Cluster, twice the number of masters spreads them), each
//! with its own hash tag (`{q}`, `{q1}`, `{q2}`, …), so that enqueues and
//! leases spread over every master instead of one slot. A job's partition
//! is a hash of its id (FNV-1a), so `info`, `replay` and `extend` find it
//! without searching (and search every partition when it is not there, in
//! case the count changed). Enqueues split each batch by partition.
//!
//! A worker process exchanges with one partition at a time for its next
//! jobs, chosen (1) by the wake-up that woke it (the `BLPOP` answer names
//! the partition's list), (2) by a partition whose delayed job or lease
//! deadline has come (each exchange reports its partition's next one), or
//! (3) round-robin, which keeps the partitions fair while all are busy
//! and, for an idle worker, visits one partition per poll interval: the
//! idle cost stays one `BLPOP` and one exchange per interval whatever the
//! partition count. Every exchange reports its partition's next due time
//! (delayed job or lease deadline), which the process keeps per partition
//! and sleeps until. A lease that runs out in a partition no live worker
//! has looked at since it was taken (its worker died, the others idle) is
//! found by that rotation: within a poll interval per partition after it
//! ran out, at the latest.
//! Outcomes go to the partition each job was leased from (remembered per
//! held job), in the same round trip. When the chosen partition has nothing
//! left, the worker does not try every other partition: it waits on the
//! wake-up lists of all of them in ONE `BLPOP`, which answers at once if
//! any partition still has ready jobs (its exchange keeps a token there
//! while jobs remain) and otherwise sleeps until an enqueue. That is legal
//! on one server; on a Cluster the lists are in different slots, so the
//! wait there is one `BLPOP` per partition (to be wired with the Cluster
//! connection); the exchange protocol stays the same.
//!
//! # Records of the previous version
//!
//! Before records were strings, a job was a hash at the same key, in the
//! queue that is now partition 0. The scripts read such a hash where they
//! read a record (`load` in `src/jobs/lua/record.lua`) and rewrite it as a
//! record, so jobs queued, delayed or dead under the previous version run,
//! retry and replay; `info` reads both. Stop the previous version's
//! workers before starting these (SIGTERM gives their running jobs back):
//! the two cannot share a queue.
//!
//! # Delivery
//!
//! A worker process calls `exchange` (one script, `src/jobs/lua/exchange.lua`) for
//! everything on its hot path: it records the outcomes of the jobs its slots
//! finished and leases the next batch, after moving due delayed ids to
//! `ready` and taking back leases that ran out. `extend` changes a lease only
//! while the caller still holds it. A job done with a result keeps its
//! record for the result TTL; a job done without one is deleted at once
//! (nothing to keep: at thousands of jobs a second, a record per finished
//! job would fill Redis); dead jobs stay until replayed.
//!
//! # Waking idle workers
//!
//! An idle worker process does not poll: it waits in `BLPOP` on the wake-up
//! lists on a connection of its own ([`crate::kv::blocking`]; the role's
//! multiplexed connection has a 250 ms response timeout and must not be
//! held by a block). `enqueue` pushes up to one token per job (at most
//! [`WAKE_TOKENS`]); `exchange` keeps one token while ready jobs remain, so
//! that idle processes wake one another, and drops stale tokens when the
//! partition is empty. A worker wakes by itself when the next delayed job
//! or lease deadline is due (`exchange` tells it when), and at the latest
//! after its poll interval, in case a token was lost with a connection.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::Context;
use async_trait::async_trait;
use redis::Script;

use super::record::{self, Record};
use super::{Exchanged, Job, JobInfo, Leased, Outcome, QueueBackend, QueueCounts, Settle};
use crate::kv::RedisRole;
use crate::kv::blocking::BlockingConn;
use crate::kv::keys::Keys;

/// How long finished jobs' results are kept by default (as in the worker).
const DEFAULT_RESULT_TTL: Duration = super::worker::RESULT_TTL;

/// At most this many delayed ids and lapsed leases are moved per exchange.
const RESERVE_BATCH: u32 = 100;

/// Most wake-up tokens waiting at once on a partition: enough to wake this
/// many idle worker processes for a burst of jobs.
pub const WAKE_TOKENS: u32 = 64;

/// Most jobs queued by one script call (larger batches are split).
const ENQUEUE_BATCH: usize = 500;

/// Most partitions a queue may have.
pub const MAX_PARTITIONS: u16 = 1024;

/// The queue's Lua scripts (SHA1 computed once; loaded on first use). The
/// scripts that read records get `record.lua` prepended.
struct Scripts {
    enqueue: Script,
    exchange: Script,
    info: Script,
    extend: Script,
    replay: Script,
}

static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    enqueue: Script::new(include_str!("lua/enqueue.lua")),
    exchange: Script::new(concat!(
        include_str!("lua/record.lua"),
        include_str!("lua/exchange.lua")
    )),
    extend: Script::new(include_str!("lua/extend.lua")),
    info: Script::new(include_str!("lua/info.lua")),
    replay: Script::new(concat!(
        include_str!("lua/record.lua"),
        include_str!("lua/replay.lua")
    )),
});

/// The keys of one partition.
struct Part {
    ready: String,
    delayed: String,
    leases: String,
    running: String,
    dead: String,
    wake: String,
    job_prefix: String,
}

impl Part {
    fn new(keys: &Keys, p: u16) -> Part {
        Part {
            ready: keys.jobs_ready(p),
            delayed: keys.jobs_delayed(p),
            leases: keys.jobs_leases(p),
            running: keys.jobs_running(p),
            dead: keys.jobs_dead(p),
            wake: keys.jobs_wake(p),
            job_prefix: keys.jobs_job_prefix(p),
        }
    }
}

/// Where a worker process leases next (see "Partitions" above).
struct Sched {
    /// The partition whose wake-up list last woke this process.
    hint: Option<u16>,
    /// Per partition: when its next delayed job or lease deadline is due,
    /// as its last exchange that left the worker short reported.
    due: Vec<Option<Instant>>,
    /// The round-robin position.
    cursor: u16,
}

/// [`QueueBackend`] on Redis: see the module documentation.
pub struct RedisQueue {
    role: RedisRole,
    keys: Keys,
    parts: Vec<Part>,
    result_ttl: Duration,
    /// The blocking connection idle workers wait on; without it,
    /// [`QueueBackend::wait_for_work`] just sleeps (polling).
    blocking: Option<BlockingConn>,
    /// With several partitions: the partition each job this process holds
    /// was leased from (its outcome and extensions go there, even if the
    /// partition count changed since it was queued).
    held: Mutex<HashMap<String, u16>>,
    sched: Mutex<Sched>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl RedisQueue {
    /// A queue of one partition on the broker role's connection, under
    /// `keys`' prefix.
    pub fn new(role: RedisRole, keys: &Keys) -> Self {
        RedisQueue {
            role,
            keys: keys.clone(),
            parts: vec![Part::new(keys, 0)],
            result_ttl: DEFAULT_RESULT_TTL,
            blocking: None,
            held: Mutex::new(HashMap::new()),
            sched: Mutex::new(Sched {
                hint: None,
                due: vec![None],
                cursor: 0,
            }),
        }
    }

    /// Splits the queue into `n` partitions (1 to [`MAX_PARTITIONS`]); every
    /// process of a deployment must use the same count. Raising it later
    /// is safe; lowering it strands the jobs of the partitions dropped.
    pub fn with_partitions(mut self, n: u16) -> Self {
        let n = n.clamp(1, MAX_PARTITIONS);
        self.parts = (0..n).map(|p| Part::new(&self.keys, p)).collect();
        lock(&self.sched).due = vec![None; usize::from(n)];
        self
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

    /// The number of partitions.
    pub fn partitions(&self) -> u16 {
        u16::try_from(self.parts.len()).unwrap_or(MAX_PARTITIONS)
    }

    /// The partition a job id is queued in: FNV-1a of the id, modulo the
    /// partition count (stable across processes and versions).
    pub fn partition_of(&self, id: &str) -> u16 {
        let n = self.partitions();
        if n == 1 {
            return 0;
        }
        let mut h: u32 = 0x811c_9dc5;
        for b in id.bytes() {
            h ^= u32::from(b);
            h = h.wrapping_mul(0x0100_0193);
        }
        u16::try_from(h % u32::from(n)).unwrap_or(0)
    }

    /// The partition a job this process holds was leased from.
    fn held_in(&self, id: &str) -> u16 {
        if self.parts.len() == 1 {
            return 0;
        }
        lock(&self.held)
            .get(id)
            .copied()
            .unwrap_or_else(|| self.partition_of(id))
    }

    /// The partition to lease from next: the one a wake-up named, one whose
    /// next job is due, or the next in turn.
    fn pick(&self) -> u16 {
        let n = self.partitions();
        if n == 1 {
            return 0;
        }
        let mut s = lock(&self.sched);
        if let Some(p) = s.hint.take() {
            return p;
        }
        let now = Instant::now();
        if let Some(p) = s.due.iter().position(|d| d.is_some_and(|d| d <= now)) {
            return u16::try_from(p).unwrap_or(0);
        }
        s.cursor = (s.cursor + 1) % n;
        s.cursor
    }

    fn part(&self, p: u16) -> &Part {
        &self.parts[usize::from(p) % self.parts.len()]
    }

    async fn enqueue_in(&self, p: u16, jobs: &[&(String, Job, i64)]) -> anyhow::Result<()> {
        let part = self.part(p);
        let created = crate::db::now_ms();
        let mut args: Vec<String> = Vec::with_capacity(jobs.len() * 3);
        for (id, job, run_at_ms) in jobs {
            let payload = serde_json::to_string(job)?;
            args.push(id.clone());
            args.push(record::queued(
                ms(job.timeout()),
                job.max_attempts(),
                created,
                job.name(),
                &payload,
            ));
            args.push(run_at_ms.to_string());
        }
        let args = &args;
        let queued: i64 = self
            .role
            .run(|mut c| async move {
                SCRIPTS
                    .enqueue
                    .key(&part.ready)
                    .key(&part.delayed)
                    .key(&part.wake)
                    .arg(&part.job_prefix)
                    .arg(WAKE_TOKENS)
                    .arg(args)
                    .invoke_async(&mut c)
                    .await
            })
            .await
            .context("queueing jobs")?;
        if queued < 0 {
            let at = usize::try_from(-queued - 1).unwrap_or(0);
            let id = jobs.get(at).map(|(id, _, _)| id.as_str()).unwrap_or("?");
            anyhow::bail!("a job with id {id} exists already");
        }
        Ok(())
    }

    /// One exchange script call on partition `p`.
    async fn exchange_in(
        &self,
        p: u16,
        worker_id: &str,
        outcomes: &[&Outcome],
        want: usize,
        report_due: bool,
    ) -> anyhow::Result<Exchanged> {
        let part = self.part(p);
        let retry_at: Vec<String> = outcomes
            .iter()
            .map(|o| match &o.settle {
                Settle::Retry { at_ms, .. } => at_ms.to_string(),
                _ => String::new(),
            })
            .collect();
        let mut args: Vec<&str> = Vec::with_capacity(outcomes.len() * 4);
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
        let (held, leased, next_due): (Vec<i64>, Vec<(String, String)>, i64) = self
            .role
            .run(|mut c| async move {
                SCRIPTS
                    .exchange
                    .key(&part.ready)
                    .key(&part.delayed)
                    .key(&part.leases)
                    .key(&part.running)
                    .key(&part.dead)
                    .key(&part.wake)
                    .arg(&part.job_prefix)
                    .arg(worker_id)
                    .arg(want)
                    .arg(RESERVE_BATCH)
                    .arg(ms(self.result_ttl).max(1))
                    .arg(if report_due { "1" } else { "0" })
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
                .map(|(id, rec)| leased_job(id, &rec))
                .collect(),
            next_due: u64::try_from(next_due).ok().map(Duration::from_millis),
        })
    }

    /// Status of `id` in partition `p`, if it is there.
    async fn info_in(&self, p: u16, id: &str) -> anyhow::Result<Option<JobInfo>> {
        let key = self.keys.jobs_job(p, id);
        let running = &self.part(p).running;
        type Raw = (
            Option<String>,
            Option<String>,
            Option<HashMap<String, String>>,
        );
        let (rec, worker, hash): Raw = self
            .role
            .run(|mut c| async move {
                SCRIPTS
                    .info
                    .key(&key)
                    .key(running)
                    .arg(id)
                    .invoke_async(&mut c)
                    .await
            })
            .await
            .context("reading a job")?;
        Ok(match (rec, hash) {
            (Some(rec), _) => record::decode(&rec).map(|r| info_of(id, &r, worker)),
            (None, Some(h)) => hash_info(id, h),
            (None, None) => None,
        })
    }

    /// The partitions to look for `id` in: its own first, then the others
    /// (in case the partition count changed since it was queued).
    fn search_order(&self, id: &str) -> impl Iterator<Item = u16> {
        let home = self.partition_of(id);
        std::iter::once(home).chain((0..self.partitions()).filter(move |p| *p != home))
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A job leased by the exchange script, from its record.
fn leased_job(id: String, rec: &str) -> Leased {
    match record::decode(rec) {
        Some(r) => Leased {
            job: serde_json::from_str(r.payload).map_err(|e| e.to_string()),
            id,
            attempt: r.attempts.saturating_add(1),
            max_attempts: r.max_attempts,
            timeout: Duration::from_millis(r.timeout_ms),
        },
        None => Leased {
            job: Err("unreadable job record".to_owned()),
            id,
            attempt: 1,
            max_attempts: 1,
            timeout: Duration::from_secs(30),
        },
    }
}

/// A record as operators read it; `running` is the worker holding it.
fn info_of(id: &str, r: &Record<'_>, running: Option<String>) -> JobInfo {
    let (status, attempts, worker) = match (running, r.status) {
        (Some(w), _) => ("running", r.attempts.saturating_add(1), Some(w)),
        (None, b'd') => ("done", r.attempts, r.worker.map(str::to_owned)),
        (None, b'x') => ("dead", r.attempts, r.worker.map(str::to_owned)),
        (None, _) => ("queued", r.attempts, r.worker.map(str::to_owned)),
    };
    JobInfo {
        id: id.to_owned(),
        name: r.name.to_owned(),
        status: status.to_owned(),
        attempts,
        last_error: r.last_error.map(str::to_owned),
        result: r.result.map(str::to_owned),
        worker,
    }
}

/// A job hash of the version before string records, as read by HGETALL;
/// `None` when the job does not exist.
fn hash_info(id: &str, mut h: HashMap<String, String>) -> Option<JobInfo> {
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
            let mut groups: Vec<Vec<&(String, Job, i64)>> = Vec::new();
            groups.resize_with(self.parts.len(), Vec::new);
            for job in chunk {
                groups[usize::from(self.partition_of(&job.0))].push(job);
            }
            // Partitions may live on different masters: queue them at once.
            let calls = groups
                .iter()
                .enumerate()
                .filter(|(_, g)| !g.is_empty())
                .map(|(p, g)| self.enqueue_in(u16::try_from(p).unwrap_or(0), g));
            futures::future::try_join_all(calls).await?;
        }
        Ok(())
    }

    async fn exchange(
        &self,
        worker_id: &str,
        outcomes: &[Outcome],
        want: usize,
    ) -> anyhow::Result<Exchanged> {
        if self.parts.len() == 1 {
            let outcomes: Vec<&Outcome> = outcomes.iter().collect();
            return self.exchange_in(0, worker_id, &outcomes, want, false).await;
        }
        // One script call per partition that has outcomes, plus the one
        // leased from; all at once (on a Cluster they may be on different
        // masters). If one fails, the exchange fails and the worker sends
        // every outcome again (those already recorded are then reported
        // as not held, which changes nothing); jobs a successful call
        // leased meanwhile come back after their lease.
        let lease_p = (want > 0).then(|| self.pick());
        let mut groups: Vec<(u16, Vec<&Outcome>)> = Vec::new();
        let mut index: Vec<(usize, usize)> = Vec::with_capacity(outcomes.len());
        for o in outcomes {
            let p = self.held_in(&o.id);
            let g = match groups.iter().position(|(q, _)| *q == p) {
                Some(g) => g,
                None => {
                    groups.push((p, Vec::new()));
                    groups.len() - 1
                }
            };
            index.push((g, groups[g].1.len()));
            groups[g].1.push(o);
        }
        if let Some(lp) = lease_p
            && !groups.iter().any(|(q, _)| *q == lp)
        {
            groups.push((lp, Vec::new()));
        }
        // Every call reports its partition's next due time, which this
        // process keeps per partition: the earliest over all of them is
        // when the worker must look again.
        let calls = groups.iter().map(|(p, outs)| {
            let w = if Some(*p) == lease_p { want } else { 0 };
            self.exchange_in(*p, worker_id, outs, w, true)
        });
        let mut results = futures::future::try_join_all(calls).await?;
        let held: Vec<bool> = index
            .iter()
            .map(|&(g, k)| results[g].held.get(k).copied().unwrap_or(false))
            .collect();
        let mut ex = Exchanged {
            held,
            ..Exchanged::default()
        };
        let now = Instant::now();
        {
            let mut map = lock(&self.held);
            for o in outcomes {
                map.remove(&o.id);
            }
            let mut s = lock(&self.sched);
            for ((p, _), r) in groups.iter().zip(&results) {
                s.due[usize::from(*p)] = r.next_due.map(|d| now + d);
            }
            if let Some(lp) = lease_p
                && let Some(g) = groups.iter().position(|(q, _)| *q == lp)
            {
                ex.leased = std::mem::take(&mut results[g].leased);
                for l in &ex.leased {
                    map.insert(l.id.clone(), lp);
                }
            }
            // Always the earliest due time over all partitions, even when
            // this exchange leased all it wanted or none: a partition whose
            // delayed jobs came due while this worker was full has no token
            // to wake it (only an exchange with that partition moves them to
            // its ready list), so the worker must come back for it.
            ex.next_due = s
                .due
                .iter()
                .flatten()
                .min()
                .map(|d| d.saturating_duration_since(now));
        }
        Ok(ex)
    }

    /// Leases the next due job from any partition (operators and tests;
    /// workers use [`QueueBackend::exchange`]).
    async fn reserve(&self, worker_id: &str) -> anyhow::Result<Option<Leased>> {
        let n = self.partitions();
        let start = self.pick();
        for k in 0..n {
            let p = (start + k) % n;
            let mut ex = self.exchange_in(p, worker_id, &[], 1, false).await?;
            if let Some(l) = ex.leased.pop() {
                if n > 1 {
                    lock(&self.held).insert(l.id.clone(), p);
                }
                return Ok(Some(l));
            }
        }
        Ok(None)
    }

    async fn wait_for_work(&self, timeout: Duration) -> anyhow::Result<()> {
        match &self.blocking {
            Some(conn) => {
                // One BLPOP over every partition's wake-up list (one
                // server; see "Partitions" above for a Cluster).
                let keys: Vec<&str> = self.parts.iter().map(|p| p.wake.as_str()).collect();
                if let Some((key, _)) = conn.blpop_any(&keys, timeout).await?
                    && self.parts.len() > 1
                {
                    lock(&self.sched).hint = self
                        .parts
                        .iter()
                        .position(|p| p.wake == key)
                        .and_then(|p| u16::try_from(p).ok());
                }
                Ok(())
            }
            None => {
                tokio::time::sleep(timeout).await;
                Ok(())
            }
        }
    }

    async fn extend(&self, id: &str, worker_id: &str, timeout: Duration) -> anyhow::Result<bool> {
        let part = self.part(self.held_in(id));
        let held: i64 = self
            .role
            .run(|mut c| async move {
                SCRIPTS
                    .extend
                    .key(&part.leases)
                    .key(&part.running)
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
        for p in self.search_order(id) {
            if let Some(info) = self.info_in(p, id).await? {
                return Ok(Some(info));
            }
        }
        Ok(None)
    }

    async fn dead(&self, limit: usize) -> anyhow::Result<Vec<JobInfo>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let stop = i64::try_from(limit).unwrap_or(i64::MAX) - 1;
        let lists = futures::future::try_join_all(self.parts.iter().enumerate().map(
            |(p, part)| async move {
                let ids: Vec<(String, f64)> = self
                    .role
                    .run(|mut c| async move {
                        redis::cmd("ZREVRANGE")
                            .arg(&part.dead)
                            .arg(0)
                            .arg(stop)
                            .arg("WITHSCORES")
                            .query_async(&mut c)
                            .await
                    })
                    .await
                    .context("listing dead jobs")?;
                anyhow::Ok((p, ids))
            },
        ))
        .await?;
        // Most recently dead first, across partitions.
        let mut all: Vec<(u16, String, f64)> = lists
            .into_iter()
            .flat_map(|(p, ids)| {
                let p = u16::try_from(p).unwrap_or(0);
                ids.into_iter().map(move |(id, at)| (p, id, at))
            })
            .collect();
        all.sort_by(|a, b| b.2.total_cmp(&a.2));
        all.truncate(limit);
        let infos =
            futures::future::try_join_all(all.iter().map(|(p, id, _)| self.info_in(*p, id)))
                .await?;
        Ok(infos.into_iter().flatten().collect())
    }

    async fn replay(&self, id: &str) -> anyhow::Result<bool> {
        for p in self.search_order(id) {
            let part = self.part(p);
            let job_key = self.keys.jobs_job(p, id);
            let done: i64 = self
                .role
                .run(|mut c| async move {
                    SCRIPTS
                        .replay
                        .key(&part.dead)
                        .key(&part.ready)
                        .key(&job_key)
                        .key(&part.wake)
                        .arg(id)
                        .invoke_async(&mut c)
                        .await
                })
                .await
                .context("replaying a job")?;
            if done == 1 {
                return Ok(true);
            }
        }
        Ok(false)
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
        let per_part = futures::future::try_join_all(self.parts.iter().map(|part| async move {
            self.role
                .run(|mut c| async move {
                    redis::pipe()
                        .cmd("LLEN")
                        .arg(&part.ready)
                        .cmd("ZCARD")
                        .arg(&part.delayed)
                        .cmd("ZCARD")
                        .arg(&part.leases)
                        .cmd("ZCARD")
                        .arg(&part.dead)
                        .query_async::<(i64, i64, i64, i64)>(&mut c)
                        .await
                })
                .await
                .context("counting jobs")
        }))
        .await?;
        let mut c = QueueCounts::default();
        for (ready, delayed, running, dead) in per_part {
            c.queued += ready + delayed;
            c.running += running;
            c.dead += dead;
        }
        Ok(c)
    }

    /// Nothing to do: finished jobs' records expire by themselves (the TTL
    /// is set when they complete).
    async fn purge(&self, _result_ttl: Duration) -> anyhow::Result<()> {
        Ok(())
    }
}
