//! Diagnostics of the job system, kept out of the queue's interface: the
//! [`Probe`] job (sleeps, fails on request, counts its runs) and
//! [`Tallies`], where probes count their runs so that tests and
//! `stayafrica jobs bench` can prove each job ran exactly once, and record
//! how long they waited to be picked up (the latency benchmark).
//!
//! Tallies live beside the queue (the broker's Redis, or the database's
//! `job_tallies` table) but are not part of [`super::QueueBackend`]: a queue
//! does not need them to deliver jobs.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::db::{Db, now_ms};
use crate::kv::RedisRole;
use crate::kv::keys::Keys;
use crate::with_pool;

/// The probe job: sleeps, records its run under `tally` (so that a double
/// execution is visible), then succeeds or fails. The optional fields make
/// delivery tests fast: a short lease (`timeout_ms`) and a short retry
/// backoff (`backoff_ms`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Probe {
    pub fail: bool,
    pub sleep_ms: u64,
    /// Lease timeout instead of the default (`sleep_ms / 2 + 5 s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Base of the retry backoff instead of 1 s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_ms: Option<u64>,
    /// Name of the tally that counts this job's runs ([`Tallies`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tally: Option<String>,
    /// When it was queued (Unix µs): the run then records its pick-up
    /// latency in the tally (the same host's clock; benchmarks only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued_at_us: Option<i64>,
    /// Succeed without a result (a true no-op, as the benchmark's jobs:
    /// nothing is kept of it once done).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_result: bool,
}

impl Probe {
    /// A probe that succeeds at once (the no-op job of tests and benchmarks).
    pub fn noop(tally: Option<String>) -> Probe {
        Probe {
            tally,
            ..Probe::default()
        }
    }

    /// A probe that succeeds at once without a result (the benchmark's job).
    pub fn bare(tally: Option<String>) -> Probe {
        Probe {
            tally,
            no_result: true,
            ..Probe::default()
        }
    }

    /// Its lease timeout.
    pub fn timeout(&self) -> Duration {
        match self.timeout_ms {
            Some(t) => Duration::from_millis(t),
            None => Duration::from_millis(self.sleep_ms / 2 + 5_000),
        }
    }

    /// Its first retry delay.
    pub fn backoff_base(&self) -> Duration {
        Duration::from_millis(self.backoff_ms.unwrap_or(1_000))
    }

    /// Runs the probe as job `id`: the pick-up latency is measured first,
    /// then it sleeps, counts the run, and fails if asked to.
    pub async fn run(&self, id: &str, tallies: Option<&Tallies>) -> anyhow::Result<Option<String>> {
        let pickup_us = self.queued_at_us.map(|q| now_us() - q);
        if self.sleep_ms > 0 {
            // (A zero sleep would still wait for the next timer tick.)
            tokio::time::sleep(Duration::from_millis(self.sleep_ms)).await;
        }
        if let Some(tally) = &self.tally {
            tallies
                .context("this queue has no tallies")?
                .record(tally, id, pickup_us)
                .await
                .context("counting the probe's run")?;
        }
        if self.fail {
            anyhow::bail!("probe job asked to fail");
        }
        if self.no_result {
            return Ok(None);
        }
        Ok(Some("{\"probe\":\"ok\"}".into()))
    }
}

/// Unix time in microseconds.
pub fn now_us() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000) as i64
}

/// How long tallies are kept after their last count.
const TALLY_TTL: Duration = Duration::from_secs(24 * 3600);

/// Most runs written in one round trip.
const BATCH: usize = 1024;

/// Run counts of probe jobs by tally name and job id (on Redis, a list of
/// the ids of the runs, one entry per run, counted when read: runs are
/// written by the thousand, read once).
#[derive(Clone)]
pub struct Tallies {
    store: Arc<Store>,
}

enum Store {
    /// Runs go through a batcher: one pipeline for every run counted while
    /// the previous one was in flight.
    Redis {
        role: RedisRole,
        keys: Keys,
        runs: mpsc::UnboundedSender<Run>,
    },
    Sql(Db),
}

/// One run to count, and who waits for it to be stored.
struct Run {
    tally: String,
    member: String,
    pickup_us: Option<i64>,
    done: oneshot::Sender<Result<(), String>>,
}

impl Tallies {
    /// Tallies in the broker's Redis, beside the queue (needs a tokio
    /// runtime: it starts the batcher task).
    pub fn redis(role: RedisRole, keys: Keys) -> Tallies {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(batcher(role.clone(), keys.clone(), rx));
        Tallies {
            store: Arc::new(Store::Redis {
                role,
                keys,
                runs: tx,
            }),
        }
    }

    /// Tallies in the database (`job_tallies`), for the embedded queue.
    pub fn sql(db: Db) -> Tallies {
        Tallies {
            store: Arc::new(Store::Sql(db)),
        }
    }

    /// Counts one run of `member` (a job id) under `tally`, with its pick-up
    /// latency if measured; returns once it is stored.
    pub async fn record(
        &self,
        tally: &str,
        member: &str,
        pickup_us: Option<i64>,
    ) -> anyhow::Result<()> {
        match &*self.store {
            Store::Redis { runs, .. } => {
                let (done, stored) = oneshot::channel();
                runs.send(Run {
                    tally: tally.to_owned(),
                    member: member.to_owned(),
                    pickup_us,
                    done,
                })
                .map_err(|_| anyhow::anyhow!("the tally batcher stopped"))?;
                stored
                    .await
                    .map_err(|_| anyhow::anyhow!("the tally batcher stopped"))?
                    .map_err(anyhow::Error::msg)
            }
            Store::Sql(db) => {
                with_pool!(db, p => sqlx::query(
                    "INSERT INTO job_tallies (tally, member, runs, pickup_us, updated_at)
                     VALUES ($1, $2, 1, $3, $4)
                     ON CONFLICT (tally, member) DO UPDATE
                     SET runs = job_tallies.runs + 1, pickup_us = excluded.pickup_us,
                         updated_at = excluded.updated_at")
                    .bind(tally).bind(member).bind(pickup_us).bind(now_ms())
                    .execute(p).await.map(|_| ()))?;
                Ok(())
            }
        }
    }

    /// Runs counted under `tally`, by member.
    pub async fn runs(&self, tally: &str) -> anyhow::Result<BTreeMap<String, i64>> {
        match &*self.store {
            Store::Redis { role, keys, .. } => {
                let key = keys.jobs_tally(tally);
                let members: Vec<String> = role
                    .run(|mut c| async move {
                        redis::cmd("LRANGE")
                            .arg(&key)
                            .arg(0)
                            .arg(-1)
                            .query_async(&mut c)
                            .await
                    })
                    .await
                    .context("reading a tally")?;
                let mut runs = BTreeMap::new();
                for m in members {
                    *runs.entry(m).or_insert(0) += 1;
                }
                Ok(runs)
            }
            Store::Sql(db) => {
                let rows = with_pool!(db, p => sqlx::query_as::<_, (String, i64)>(
                    "SELECT member, runs FROM job_tallies WHERE tally = $1")
                    .bind(tally).fetch_all(p).await)?;
                Ok(rows.into_iter().collect())
            }
        }
    }

    /// Pick-up latencies (µs) recorded under `tally`, by member.
    pub async fn pickups(&self, tally: &str) -> anyhow::Result<BTreeMap<String, i64>> {
        match &*self.store {
            Store::Redis { role, keys, .. } => {
                let key = keys.jobs_tally_pickups(tally);
                let h: HashMap<String, i64> = role
                    .run(|mut c| async move {
                        redis::cmd("HGETALL").arg(&key).query_async(&mut c).await
                    })
                    .await
                    .context("reading pick-up times")?;
                Ok(h.into_iter().collect())
            }
            Store::Sql(db) => {
                let rows = with_pool!(db, p => sqlx::query_as::<_, (String, i64)>(
                    "SELECT member, pickup_us FROM job_tallies
                     WHERE tally = $1 AND pickup_us IS NOT NULL")
                    .bind(tally).fetch_all(p).await)?;
                Ok(rows.into_iter().collect())
            }
        }
    }
}

/// Writes runs to Redis in batches: whatever arrived while the previous
/// pipeline was in flight goes in the next one (group commit), so that
/// thousands of probes a second cost a few round trips, not one each.
/// Written here because it is a dozen lines over an mpsc channel; the
/// batching crates found add a timer per batch, which this does not need.
async fn batcher(role: RedisRole, keys: Keys, mut rx: mpsc::UnboundedReceiver<Run>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(run) => batch.push(run),
                Err(_) => break,
            }
        }
        // Per tally, one RPUSH of every run's job id and one HSET of every
        // pick-up time: a few commands per batch, not one per run.
        type Runs<'a> = (Vec<&'a str>, Vec<(&'a str, i64)>);
        let mut by_tally: BTreeMap<&str, Runs<'_>> = BTreeMap::new();
        for run in &batch {
            let (runs, pickups) = by_tally.entry(run.tally.as_str()).or_default();
            runs.push(run.member.as_str());
            if let Some(us) = run.pickup_us {
                pickups.push((run.member.as_str(), us));
            }
        }
        let mut pipe = redis::pipe();
        let mut expire = Vec::new();
        for (tally, (runs, pickups)) in &by_tally {
            let key = keys.jobs_tally(tally);
            pipe.cmd("RPUSH").arg(&key).arg(runs).ignore();
            expire.push(key);
            if !pickups.is_empty() {
                let pkey = keys.jobs_tally_pickups(tally);
                let mut cmd = redis::cmd("HSET");
                cmd.arg(&pkey);
                for (member, us) in pickups {
                    cmd.arg(member).arg(us);
                }
                pipe.add_command(cmd).ignore();
                expire.push(pkey);
            }
        }
        let ttl = u64::try_from(TALLY_TTL.as_millis()).unwrap_or(u64::MAX);
        for key in &expire {
            pipe.cmd("PEXPIRE").arg(key).arg(ttl).ignore();
        }
        let res = role
            .run(|mut c| async move { pipe.query_async::<()>(&mut c).await })
            .await
            .map_err(|e| format!("{e:#}"));
        for run in batch {
            let _ = run.done.send(res.clone());
        }
    }
}
