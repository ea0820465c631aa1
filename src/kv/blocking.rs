//! A dedicated Redis connection for blocking commands (the job queue's
//! wake-up `BLPOP`). The roles' multiplexed connections have a 250 ms
//! response timeout and are shared by every caller, so a command that
//! blocks for seconds must not run on them: it would time out, trip the
//! breaker and hold up everything queued behind it.
//!
//! The connection is opened on first use, and again after any error (Redis
//! restarted, `CLIENT KILL`, a network failure), with exponential backoff
//! between failed attempts so that a Redis that is down is not hammered.
//! A call whose future is dropped mid-block drops the connection with it
//! (its block would otherwise delay the next command on that socket), so
//! the type is cancellation-safe.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::Conn;
use super::conn::Source;

/// First pause after a failed connection; it doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Longest pause between two connection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long an answer may be late beyond the block itself before the
/// connection counts as dead.
const GRACE: Duration = Duration::from_secs(2);

/// A self-reconnecting connection for blocking commands; see the module
/// documentation. Meant for one caller at a time (concurrent calls each
/// open their own connection rather than queue behind a block).
pub struct BlockingConn {
    source: Source,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    conn: Option<Conn>,
    /// Failed attempts in a row (backoff), and when the next may start.
    failures: u32,
    retry_at: Option<Instant>,
}

impl BlockingConn {
    /// A connection to whatever `url` names (one server, a cluster: a
    /// cluster connection of its own, which sends the BLPOP to the master
    /// owning the key's slot; a Sentinel's master, asked again at every
    /// reconnection), opened on first use.
    pub fn new(url: &str) -> anyhow::Result<BlockingConn> {
        Ok(BlockingConn {
            source: Source::new(url)?,
            state: Mutex::new(State::default()),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `BLPOP key` for at most `timeout`: `Ok(Some(value))` if a value was
    /// popped, `Ok(None)` when the time ran out. On a connection failure
    /// the error comes back after the backoff pause (never sooner than the
    /// pause, never later than `timeout`), so a caller looping on it does
    /// not spin while Redis is down.
    pub async fn blpop(&self, key: &str, timeout: Duration) -> anyhow::Result<Option<String>> {
        Ok(self
            .blpop_any(&[key], timeout)
            .await?
            .map(|(_, value)| value))
    }

    /// `BLPOP key1 key2 …` (one server: on a Cluster, keys of different
    /// slots are refused): like [`BlockingConn::blpop`], and says which key
    /// the value came from.
    pub async fn blpop_any(
        &self,
        keys: &[&str],
        timeout: Duration,
    ) -> anyhow::Result<Option<(String, String)>> {
        let started = Instant::now();
        // BLPOP takes seconds with millisecond resolution; 0 would block for ever.
        let secs = (timeout.as_millis().max(1) as f64) / 1000.0;
        let conn = self.take_or_wait(timeout).await;
        let mut conn = match conn {
            Ok(Some(c)) => c,
            Ok(None) => match tokio::time::timeout(GRACE, self.source.open_plain(None)).await {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => return Err(self.failed(started, timeout, e.into()).await),
                Err(_) => {
                    let e = anyhow::anyhow!("connecting timed out");
                    return Err(self.failed(started, timeout, e).await);
                }
            },
            Err(e) => return Err(e),
        };
        let popped = tokio::time::timeout(
            timeout + GRACE,
            redis::cmd("BLPOP")
                .arg(keys)
                .arg(secs)
                .query_async::<Option<(String, String)>>(&mut conn),
        )
        .await;
        match popped {
            Ok(Ok(v)) => {
                let mut s = self.state();
                s.conn = Some(conn);
                s.failures = 0;
                s.retry_at = None;
                Ok(v)
            }
            Ok(Err(e)) => Err(self.failed(started, timeout, e.into()).await),
            Err(_) => {
                let e = anyhow::anyhow!("no answer within {:?}", timeout + GRACE);
                Err(self.failed(started, timeout, e).await)
            }
        }
    }

    /// The open connection (taken out: a dropped call drops it), `None` if
    /// one must be opened; waits out a running backoff first (at most until
    /// `timeout`), failing if the backoff outlasts it.
    async fn take_or_wait(&self, timeout: Duration) -> anyhow::Result<Option<Conn>> {
        let (conn, retry_at) = {
            let mut s = self.state();
            (s.conn.take(), s.retry_at)
        };
        if conn.is_some() {
            return Ok(conn);
        }
        if let Some(at) = retry_at {
            let deadline = Instant::now() + timeout;
            if at > deadline {
                tokio::time::sleep_until(deadline.into()).await;
                anyhow::bail!("Redis for blocking reads unavailable (reconnecting)");
            }
            tokio::time::sleep_until(at.into()).await;
        }
        Ok(None)
    }

    /// Records a failure (the connection is gone), schedules the next
    /// attempt, and waits the backoff pause (within `timeout` of `started`).
    async fn failed(&self, started: Instant, timeout: Duration, e: anyhow::Error) -> anyhow::Error {
        let pause = {
            let mut s = self.state();
            s.conn = None;
            s.failures = s.failures.saturating_add(1);
            let pause = MIN_BACKOFF
                .saturating_mul(1 << s.failures.saturating_sub(1).min(6))
                .min(MAX_BACKOFF);
            s.retry_at = Some(Instant::now() + pause);
            pause
        };
        let left = timeout.saturating_sub(started.elapsed());
        tokio::time::sleep(pause.min(left)).await;
        e.context("Redis blocking read failed; reconnecting")
    }
}
