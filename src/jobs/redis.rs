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
//! | `wake` | list | wake-up tokens: enqueues push, idle worker processes wait in `BLPOP` ([`super::wake`]) |
//! | `delayed` | zset | ids waiting for a retry or a later start (score: run-at ms) |
//! | `dead` | zset | ids out of attempts (score: time of death ms) |
//!
//! and, once (in partition 0's slot), `partitions` (string: the highest
//! partition count ever used, see "Changing the partition count"),
//! `periodic:{name}:{slot}` (string: claim of one period of a periodic
//! job, SET NX PX) and the diagnostic tallies of [`super::diagnostics`].
//!
//! The hash tag of a partition puts all its keys in one Cluster slot,
//! including the records the scripts compute from ids they pop. Redis
//! `TIME` is the clock of every script, so workers' clocks never decide a
//! lease.
//!
//! # Partitions
//!
//! The queue is split into [`RedisQueue::with_partitions`] partitions (by
//! default 1 on one server or a Sentinel's master, twice the number of
//! masters on a Cluster: [`crate::startup::default_job_partitions`];
//! `STAYAFRICA_JOB_PARTITIONS` overrides), each with its own hash tag
//! (`{q}`, `{q1}`, `{q2}`, …), so that enqueues and leases spread over
//! every master instead of one slot. A job's partition is a hash of its id
//! (FNV-1a), so `info`, `replay` and `extend` find it without searching
//! (and search every partition when it is not there, in case the count
//! changed). Enqueues split each batch by partition.
//!
//! A worker process exchanges with one partition at a time for its next
//! jobs, chosen (1) by the wake-up that woke it (the waiter that popped
//! the token knows its partition: [`super::wake`]), (2) the partition it
//! leased from last, while that one still has ready jobs (the exchange
//! says how many are left) and for at most [`STAY`], (3) by a partition
//! whose delayed job or lease deadline has come (each exchange reports its
//! partition's next one), or (4) round-robin, starting at a partition
//! picked by a hash of the worker's id (so that processes started together
//! do not all begin at partition 0), which keeps the partitions fair while
//! all are busy and, for an idle worker, visits one partition per poll
//! interval. Staying is what keeps a busy worker's exchange at ONE script
//! call: the outcomes of the jobs it leased from a partition go back to
//! that partition, so while it leases from the same one, outcomes and the
//! next lease share the call; moving on at every exchange costs a second
//! call per exchange, on a Cluster a second master. [`STAY`] bounds how
//! long a flooded partition can keep a worker from the others. Every exchange reports its partition's next due time
//! (delayed job or lease deadline), which the process keeps per partition
//! and sleeps until. A lease that runs out in a partition no live worker
//! has looked at since it was taken (its worker died, the others idle) is
//! found by that rotation: within a poll interval per partition after it
//! ran out, at the latest.
//! Outcomes go to the partition each job was leased from (remembered per
//! held job), in the same round trip. When the chosen partition has nothing
//! left, the worker does not try every other partition: it waits for a
//! wake-up token of any of them ([`super::wake`]: one `BLPOP` over every
//! list on one server; on a Cluster, where the lists are in different
//! slots, one `BLPOP` per partition on a connection of its own, raced),
//! which answers at once if any partition still has ready jobs (its
//! exchange keeps a token there while jobs remain) and otherwise sleeps
//! until an enqueue.
//!
//! # Changing the partition count
//!
//! Jobs are queued into the configured count, but every process serves
//! (leases from, waits on, counts, searches) the highest count ever used
//! with the queue: [`RedisQueue::register`] raises a key in partition 0's
//! slot (`jobs:{q}:partitions`) to the process's count at startup and
//! reads the highest back, and processes read it again every 30 s (on
//! their next exchange or operator read), so a worker started before an
//! API process with a higher count serves that process's partitions soon
//! after. Lowering the count (say a cluster shrank, or the setting was
//! removed) therefore strands nothing: the higher partitions stop getting
//! new jobs and are drained by every worker. The cost is one more
//! partition to visit per poll interval for each partition no longer used;
//! an operator who knows them empty (`jobs counts`) may delete the key
//! while every process runs the new count, and restart them.
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
//! lists on connections of its own ([`super::wake`], [`crate::kv::blocking`];
//! the role's multiplexed connection has a 250 ms response timeout and must
//! not be held by a block). `enqueue` pushes up to one token per job (at most
//! [`WAKE_TOKENS`]); `exchange` keeps one token while ready jobs remain, so
//! that idle processes wake one another, and drops stale tokens when the
//! partition is empty. A worker wakes by itself when the next delayed job
//! or lease deadline is due (`exchange` tells it when), and at the latest
//! after its poll interval, in case a token was lost with a connection.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use async_trait::async_trait;
use redis::Script;

use super::record::{self, Record};
use super::wake::Wakeups;
use super::{Exchanged, Job, JobInfo, Leased, Outcome, QueueBackend, QueueCounts, Settle};
use crate::kv::RedisRole;
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

/// How often a process reads the highest partition count ever used again
/// (see "Changing the partition count" above).
const REFRESH: Duration = Duration::from_secs(30);

/// The queue's Lua scripts (SHA1 computed once; loaded on first use). The
/// scripts that read records get `record.lua` prepended.
struct Scripts {
    enqueue: Script,
    exchange: Script,
    info: Script,
    extend: Script,
    replay: Script,
    partitions: Script,
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
    partitions: Script::new(include_str!("lua/partitions.lua")),
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

/// How long a worker process stays with one partition that still has
/// ready jobs before it moves on to the next in turn (see "Partitions").
pub const STAY: Duration = Duration::from_millis(200);

/// Where a worker process leases next (see "Partitions" above).
struct Sched {
    /// The partition whose wake-up token last woke this process.
    hint: Option<u16>,
    /// The partition the process leases from while it has ready jobs, and
    /// since when.
    stay: Option<(u16, Instant)>,
    /// Whether the round-robin position was set from the worker's id yet.
    seeded: bool,
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
    /// The partition count jobs are queued into (the setting).
    configured: u16,
    /// The partitions served and searched: the highest count ever used
    /// (see "Changing the partition count"), at least `configured`.
    parts: RwLock<Vec<Arc<Part>>>,
    /// When the highest count was last read.
    refreshed: Mutex<Option<Instant>>,
    result_ttl: Duration,
    /// The waiters idle workers wait on ([`super::wake`]); without them,
    /// [`QueueBackend::wait_for_work`] just sleeps (polling).
    wakeups: Option<Wakeups>,
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
            configured: 1,
            parts: RwLock::new(vec![Arc::new(Part::new(keys, 0))]),
            refreshed: Mutex::new(None),
            result_ttl: DEFAULT_RESULT_TTL,
            wakeups: None,
            held: Mutex::new(HashMap::new()),
            sched: Mutex::new(Sched {
                hint: None,
                stay: None,
                seeded: false,
                due: vec![Some(Instant::now())],
                cursor: 0,
            }),
        }
    }

    /// Splits the queue into `n` partitions (1 to [`MAX_PARTITIONS`]): jobs
    /// are queued into `n`. Every process serves (leases from, counts,
    /// searches) the highest count ever used with this queue as well, once
    /// [`RedisQueue::register`] read it, so changing the count strands no
    /// job (see "Changing the partition count" in the module docs).
    pub fn with_partitions(mut self, n: u16) -> Self {
        let n = n.clamp(1, MAX_PARTITIONS);
        self.configured = n;
        self.serve(n);
        self
    }

    /// Raises the highest partition count ever used with this queue (a key
    /// in partition 0's slot) to this process's, and serves up to it. Run
    /// at startup by every process; workers read it again every 30 s.
    pub async fn register(&self) -> anyhow::Result<()> {
        let key = self.keys.jobs_partitions();
        let configured = self.configured;
        let highest: i64 = self
            .role
            .run(|mut c| async move {
                SCRIPTS
                    .partitions
                    .key(&key)
                    .arg(configured)
                    .invoke_async(&mut c)
                    .await
            })
            .await
            .context("recording the job queue's partition count")?;
        *lock(&self.refreshed) = Some(Instant::now());
        self.serve_highest(highest);
        Ok(())
    }

    /// Reads the highest partition count again if [`REFRESH`] passed (a
    /// process started with a higher count since); errors are only logged.
    async fn refresh(&self) {
        {
            let mut at = lock(&self.refreshed);
            if at.is_some_and(|t| t.elapsed() < REFRESH) {
                return;
            }
            *at = Some(Instant::now());
        }
        let key = self.keys.jobs_partitions();
        let read = self
            .role
            .run(|mut c| async move {
                redis::cmd("GET")
                    .arg(&key)
                    .query_async::<Option<i64>>(&mut c)
                    .await
            })
            .await;
        match read {
            Ok(highest) => self.serve_highest(highest.unwrap_or(0)),
            Err(e) => tracing::debug!(
                error = format!("{e:#}"),
                "reading the job queue's partition count failed"
            ),
        }
    }

    fn serve_highest(&self, highest: i64) {
        let highest = u16::try_from(highest.clamp(1, i64::from(MAX_PARTITIONS))).unwrap_or(1);
        if highest > self.served() {
            tracing::info!(
                partitions = self.configured,
                served = highest,
                "serving the job partitions of a higher count used before"
            );
            self.serve(highest);
        }
    }

    /// Serves `n` partitions (never fewer than now).
    fn serve(&self, n: u16) {
        {
            let mut parts = self.parts.write().unwrap_or_else(|e| e.into_inner());
            let from = u16::try_from(parts.len()).unwrap_or(MAX_PARTITIONS);
            for p in from..n {
                parts.push(Arc::new(Part::new(&self.keys, p)));
            }
        }
        // A partition not looked at yet counts as due: a process visits
        // each once at the start, and so learns of the delayed jobs and
        // the leases of a worker that died there without waiting for the
        // rotation to come round.
        let served = usize::from(self.served());
        lock(&self.sched).due.resize(served, Some(Instant::now()));
        if let Some(w) = &self.wakeups
            && tokio::runtime::Handle::try_current().is_ok()
            && let Err(e) = w.cover(&self.wake_lists())
        {
            tracing::warn!(error = format!("{e:#}"), "waiting for wake-ups failed");
        }
    }

    fn wake_lists(&self) -> Vec<String> {
        self.parts_now().iter().map(|p| p.wake.clone()).collect()
    }

    /// Lets idle workers wait for new jobs on blocking connections of their
    /// own to `url` (the broker's Redis) instead of polling: one for all
    /// partitions on one server, one per partition on a Cluster
    /// ([`super::wake`]). The waits start with the first wait for work.
    pub fn with_wakeups(mut self, url: &str) -> anyhow::Result<Self> {
        self.wakeups = Some(Wakeups::new(url, self.role.clone())?);
        Ok(self)
    }

    /// Keeps finished jobs' results for `ttl` instead of a day.
    pub fn with_result_ttl(mut self, ttl: Duration) -> Self {
        self.result_ttl = ttl;
        self
    }

    /// The number of partitions jobs are queued into.
    pub fn partitions(&self) -> u16 {
        self.configured
    }

    /// The number of partitions served: the highest count ever used, as
    /// last read (at least [`RedisQueue::partitions`]).
    pub fn served(&self) -> u16 {
        u16::try_from(self.parts.read().unwrap_or_else(|e| e.into_inner()).len())
            .unwrap_or(MAX_PARTITIONS)
    }

    fn parts_now(&self) -> Vec<Arc<Part>> {
        self.parts.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The partition a job id is queued in: FNV-1a of the id, modulo the
    /// partition count (stable across processes and versions).
    pub fn partition_of(&self, id: &str) -> u16 {
        let n = self.partitions();
        if n == 1 {
            return 0;
        }
        fnv1a_mod(id, n)
    }

    /// The partition a job this process holds was leased from.
    fn held_in(&self, id: &str) -> u16 {
        if self.served() == 1 {
            return 0;
        }
        lock(&self.held)
            .get(id)
            .copied()
            .unwrap_or_else(|| self.partition_of(id))
    }

    /// The partition to lease from next: the one a wake-up named, the one
    /// leased from last while it has ready jobs (for [`STAY`] at most), one
    /// whose next job is due, or the next in turn.
    fn pick(&self, worker_id: &str) -> u16 {
        let n = self.served();
        if n == 1 {
            return 0;
        }
        let mut s = lock(&self.sched);
        if !s.seeded {
            s.seeded = true;
            // The position is advanced before use: start just before.
            s.cursor = (fnv1a_mod(worker_id, n) + n - 1) % n;
        }
        if let Some(p) = s.hint.take().filter(|p| *p < n) {
            return p;
        }
        let now = Instant::now();
        if let Some((p, since)) = s.stay
            && p < n
            && now.duration_since(since) < STAY
        {
            return p;
        }
        if let Some(p) = s.due.iter().position(|d| d.is_some_and(|d| d <= now)) {
            return u16::try_from(p).unwrap_or(0);
        }
        s.cursor = (s.cursor + 1) % n;
        s.cursor
    }

    fn part(&self, p: u16) -> Arc<Part> {
        let parts = self.parts.read().unwrap_or_else(|e| e.into_inner());
        parts[usize::from(p) % parts.len()].clone()
    }

    async fn enqueue_in(&self, p: u16, jobs: &[&(String, Job, i64)]) -> anyhow::Result<()> {
        let part = &*self.part(p);
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
    ) -> anyhow::Result<(Exchanged, u64)> {
        let part = &*self.part(p);
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
        type Raw = (Vec<i64>, Vec<(String, String)>, i64, i64);
        let (held, leased, next_due, ready): Raw = self
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
        let ex = Exchanged {
            held: held.into_iter().map(|h| h == 1).collect(),
            leased: leased
                .into_iter()
                .map(|(id, rec)| leased_job(id, &rec))
                .collect(),
            next_due: u64::try_from(next_due).ok().map(Duration::from_millis),
        };
        Ok((ex, u64::try_from(ready).unwrap_or(0)))
    }

    /// Status of `id` in partition `p`, if it is there.
    async fn info_in(&self, p: u16, id: &str) -> anyhow::Result<Option<JobInfo>> {
        let key = self.keys.jobs_job(p, id);
        let part = self.part(p);
        let running = &part.running;
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
        std::iter::once(home).chain((0..self.served()).filter(move |p| *p != home))
    }
}

/// FNV-1a of `s`, modulo `n` (stable across processes and versions).
fn fnv1a_mod(s: &str, n: u16) -> u16 {
    let mut h: u32 = 0x811c_9dc5;
    for b in s.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    u16::try_from(h % u32::from(n.max(1))).unwrap_or(0)
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
            groups.resize_with(usize::from(self.partitions()), Vec::new);
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
        self.refresh().await;
        if self.served() == 1 {
            let outcomes: Vec<&Outcome> = outcomes.iter().collect();
            return Ok(self
                .exchange_in(0, worker_id, &outcomes, want, false)
                .await?
                .0);
        }
        // One script call per partition that has outcomes, plus the one
        // leased from; all at once (on a Cluster they may be on different
        // masters). If one fails, the exchange fails and the worker sends
        // every outcome again (those already recorded are then reported
        // as not held, which changes nothing); jobs a successful call
        // leased meanwhile come back after their lease.
        let lease_p = (want > 0).then(|| self.pick(worker_id));
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
            .map(|&(g, k)| results[g].0.held.get(k).copied().unwrap_or(false))
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
            for ((p, _), (r, _)) in groups.iter().zip(&results) {
                s.due[usize::from(*p)] = r.next_due.map(|d| now + d);
            }
            if let Some(lp) = lease_p
                && let Some(g) = groups.iter().position(|(q, _)| *q == lp)
            {
                // Stay while jobs are left there (from now on, if this is
                // a partition the process was not staying with).
                let ready = results[g].1;
                let staying = s.stay.is_some_and(|(q, _)| q == lp);
                if ready == 0 {
                    s.stay = None;
                } else if !staying {
                    s.stay = Some((lp, now));
                }
                ex.leased = std::mem::take(&mut results[g].0.leased);
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
        self.refresh().await;
        let n = self.served();
        let start = self.pick(worker_id);
        for k in 0..n {
            let p = (start + k) % n;
            let (mut ex, _) = self.exchange_in(p, worker_id, &[], 1, false).await?;
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
        match &self.wakeups {
            Some(w) => {
                // The waiters start with the first wait (inside the
                // runtime); later calls find them running.
                w.cover(&self.wake_lists())?;
                // The partition a token named is the next one leased from.
                if let Some(p) = w.wait(timeout).await {
                    lock(&self.sched).hint = Some(p);
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
        let part = &*self.part(self.held_in(id));
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
        self.refresh().await;
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
        self.refresh().await;
        let stop = i64::try_from(limit).unwrap_or(i64::MAX) - 1;
        let parts = self.parts_now();
        let lists =
            futures::future::try_join_all(parts.iter().enumerate().map(|(p, part)| async move {
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
            }))
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
        self.refresh().await;
        for p in self.search_order(id) {
            let part = &*self.part(p);
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
        self.refresh().await;
        let parts = self.parts_now();
        let per_part = futures::future::try_join_all(parts.iter().map(|part| async move {
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
