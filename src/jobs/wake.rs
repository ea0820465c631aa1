//! Idle worker processes' wait for wake-up tokens on the Redis queue's
//! partitions ([`super::redis`]), on one server and on a Cluster.
//!
//! # Waiters
//!
//! The partitions' wake-up lists are put in groups that one `BLPOP` may
//! name together ([`Conn::script_groups`]: on one server or a Sentinel's
//! master every list is in one group, so the wait stays ONE `BLPOP`; on a
//! Cluster each partition's hash tag is a slot of its own, so there is a
//! group per partition: a multi-slot `BLPOP` would be refused with
//! `CROSSSLOT`). Each group has a waiter: a task of its own with its own
//! [`BlockingConn`] (reconnecting, with backoff), blocking in `BLPOP` on
//! its group's lists. All of them race: the first token a waiter pops
//! names its partition, which the woken worker exchanges with next.
//!
//! A waiter blocks only while the process waits for work (it is *armed*
//! while a [`Wakeups::wait`] call runs): a busy process takes no token
//! meant for an idle one, and a busy or idle process costs no command per
//! partition and wait. The waiters are not tied to one wait, though: a
//! `BLPOP` already sent stays pending when the wait it was sent for ends
//! (the worker woke on another partition's token, or on a due time), and
//! the next wait finds it still blocked. Cancelling the `BLPOP` instead
//! would cost a reconnection (a dropped blocked connection cannot be
//! reused) and could lose a token the server popped as the socket closed.
//!
//! # A token nobody waits for
//!
//! A pending `BLPOP` may pop a token while no wait runs (the process is
//! exchanging, running jobs, or its worker stopped). The waiter then keeps
//! it for [`HOLD`], which covers the gap between two waits of a process
//! that is draining a queue, and hands it to the next wait if one starts;
//! otherwise it pushes the token back onto its list, so that another idle
//! process wakes for that job. A token can still be lost for good: popped
//! by the server as the waiter's connection breaks, or held by a process
//! that is killed. Tokens are only hints: the partition's next exchange
//! puts one back while ready jobs remain, enqueues push new ones, and an
//! idle worker that no token wakes visits one partition per poll interval
//! (round robin), so a job whose token was lost waits at most the poll
//! interval times the partition count for an idle worker, much less while
//! any worker is busy with that partition.
//!
//! # Cost
//!
//! A waiter's `BLPOP` blocks for [`block_for`] (5 s on one server; on a
//! Cluster 2 s per group, at most a minute), so the waits of an idle process
//! cost at most half a command a second, whatever the partition count:
//! with the worker's one exchange per poll interval (5 s by default), an
//! idle worker stays within DESIGN.md's bound of one command a second.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::kv::blocking::BlockingConn;
use crate::kv::{Conn, RedisRole};

/// How long a waiter keeps a token popped while no wait ran, for the next
/// wait of its process, before it pushes the token back.
pub const HOLD: Duration = Duration::from_millis(250);

/// How long one waiter's `BLPOP` blocks: 5 s for one group, 2 s per group
/// on a Cluster (so that all of them together send at most one `BLPOP`
/// every 2 s), at most a minute.
pub fn block_for(groups: usize) -> Duration {
    let per_group =
        Duration::from_secs(2).saturating_mul(u32::try_from(groups).unwrap_or(u32::MAX));
    per_group.clamp(Duration::from_secs(5), Duration::from_secs(60))
}

/// What the waiters and the waits of a process share.
struct Shared {
    /// Which waits run now (the waiters block while one does).
    armed: watch::Sender<Armed>,
    /// Partitions whose token was popped and not yet handed to a wait,
    /// oldest first, each once.
    woken: Mutex<VecDeque<u16>>,
    /// Wakes a running wait when a partition is added to `woken`.
    notify: Notify,
}

impl Shared {
    fn woken(&self) -> std::sync::MutexGuard<'_, VecDeque<u16>> {
        self.woken.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn deliver(&self, partition: u16) {
        {
            let mut w = self.woken();
            if !w.contains(&partition) {
                w.push_back(partition);
            }
        }
        self.notify.notify_waiters();
    }
}

/// One group's waiter task.
struct Waiter {
    partitions: Vec<u16>,
    task: JoinHandle<()>,
}

/// The waiters of one queue in one process: see the module documentation.
pub struct Wakeups {
    url: String,
    role: RedisRole,
    shared: Arc<Shared>,
    waiters: Mutex<Vec<Waiter>>,
}

/// The waits running in a process.
#[derive(Clone, Copy, Default)]
struct Armed {
    /// How many run now.
    running: usize,
    /// How many ever started: a waiter that woke one wait blocks again
    /// only for a later one (a process takes one token per wait).
    started: u64,
}

/// Disarms on drop (a wait that is cancelled or returns).
struct Disarm<'a>(&'a Shared);

impl Drop for Disarm<'_> {
    fn drop(&mut self) {
        self.0
            .armed
            .send_modify(|a| a.running = a.running.saturating_sub(1));
    }
}

impl Wakeups {
    /// Waiters that will connect to `url` (the broker's Redis) for their
    /// `BLPOP`s and push tokens back through `role`; none runs until
    /// [`Wakeups::cover`] names the lists.
    pub fn new(url: &str, role: RedisRole) -> anyhow::Result<Wakeups> {
        // Parsed now, so that a bad URL fails at startup.
        BlockingConn::new(url)?;
        Ok(Wakeups {
            url: url.to_owned(),
            role,
            shared: Arc::new(Shared {
                armed: watch::channel(Armed::default()).0,
                woken: Mutex::new(VecDeque::new()),
                notify: Notify::new(),
            }),
            waiters: Mutex::new(Vec::new()),
        })
    }

    fn waiters(&self) -> std::sync::MutexGuard<'_, Vec<Waiter>> {
        self.waiters.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes the waiters cover the wake-up lists `lists` (partition `p`'s
    /// list at position `p`): groups already waited on keep their waiter,
    /// new groups get one, waiters of groups that changed are replaced.
    /// Must run inside the Tokio runtime.
    pub fn cover(&self, lists: &[String]) -> anyhow::Result<()> {
        let groups: Vec<Vec<u16>> = self
            .role
            .connection()
            .script_groups(lists)
            .into_iter()
            .map(|g| {
                g.into_iter()
                    .filter_map(|i| u16::try_from(i).ok())
                    .collect()
            })
            .collect();
        let block = block_for(groups.len());
        let mut waiters = self.waiters();
        waiters.retain(|w| {
            let keep = groups.contains(&w.partitions) && !w.task.is_finished();
            if !keep {
                w.task.abort();
            }
            keep
        });
        for g in groups {
            if waiters.iter().any(|w| w.partitions == g) {
                continue;
            }
            let keys: Vec<(u16, String)> = g
                .iter()
                .map(|p| (*p, lists[usize::from(*p)].clone()))
                .collect();
            let conn = BlockingConn::new(&self.url)?;
            let task = tokio::spawn(waiter(
                conn,
                keys,
                block,
                self.shared.clone(),
                self.role.clone(),
            ));
            waiters.push(Waiter {
                partitions: g,
                task,
            });
        }
        Ok(())
    }

    /// Waits until a waiter pops a token (then `Some(partition)`, the
    /// token's: the oldest one not returned yet) or `timeout` passed
    /// (`None`). Dropping the future is safe: it only disarms.
    pub async fn wait(&self, timeout: Duration) -> Option<u16> {
        let deadline = tokio::time::Instant::now() + timeout;
        self.shared.armed.send_modify(|a| {
            a.running += 1;
            a.started += 1;
        });
        let _disarm = Disarm(&self.shared);
        loop {
            let notified = self.shared.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(p) = self.shared.woken().pop_front() {
                return Some(p);
            }
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(deadline) => return None,
            }
        }
    }
}

impl Drop for Wakeups {
    fn drop(&mut self) {
        for w in self.waiters().drain(..) {
            w.task.abort();
        }
    }
}

/// One group's waiter: `BLPOP` on its lists while armed; a token goes to
/// the running wait, or to the next one within [`HOLD`], or back onto its
/// list.
async fn waiter(
    conn: BlockingConn,
    lists: Vec<(u16, String)>,
    block: Duration,
    shared: Arc<Shared>,
    role: RedisRole,
) {
    let keys: Vec<&str> = lists.iter().map(|(_, k)| k.as_str()).collect();
    let mut armed = shared.armed.subscribe();
    let mut failing = false;
    // The waits started before this one woke one of them.
    let mut served = 0u64;
    loop {
        if armed
            .wait_for(|a| a.running > 0 && a.started > served)
            .await
            .is_err()
        {
            return;
        }
        let (key, token) = match conn.blpop_any(&keys, block).await {
            Ok(Some(popped)) => popped,
            Ok(None) => {
                failing = false;
                continue;
            }
            Err(e) => {
                // The connection reconnects by itself (with backoff, which
                // the call waited out); say so once per outage.
                if !failing {
                    tracing::warn!(error = format!("{e:#}"), "waiting for jobs failed");
                }
                failing = true;
                continue;
            }
        };
        failing = false;
        let Some(&(partition, _)) = lists.iter().find(|(_, k)| *k == key) else {
            continue;
        };
        let waited = match tokio::time::timeout(HOLD, armed.wait_for(|a| a.running > 0)).await {
            Ok(Ok(a)) => Some(a.started),
            _ => None,
        };
        if let Some(started) = waited {
            served = started;
            shared.deliver(partition);
            continue;
        }
        // Nobody here waits for it: give it to another idle process.
        let key = &key;
        let token = &token;
        let back = role
            .run(|mut c: Conn| async move {
                redis::cmd("LPUSH")
                    .arg(key)
                    .arg(token)
                    .query_async::<i64>(&mut c)
                    .await
            })
            .await;
        if let Err(e) = back {
            tracing::debug!(
                error = format!("{e:#}"),
                "a wake-up token could not be given back"
            );
        }
    }
}
