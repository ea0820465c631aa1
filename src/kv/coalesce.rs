//! [`Coalescer`]: many concurrent requests of one kind answered by one call
//! to the backend (one Redis script, one round trip) instead of one each.
//!
//! One task per coalescer owns the calls. It takes the first waiting
//! request, then every other request already queued behind it (up to a
//! bound), makes ONE call for all of them, hands each its answer, and
//! starts over. Requests that arrive while a call is in flight queue for
//! the next one. So under load a call carries everyone who arrived during
//! the previous round trip, and idle it costs nothing (no timer, no poll):
//! a lone request is sent at once, one round trip as before.
//!
//! The property the callers rely on (the cache's near-cache, the sessions):
//! **every answer comes from a call sent after the request was queued**.
//! A request is queued before the task can see it, and the task sends a
//! call only with requests it has already taken off the queue; a call in
//! flight never gains members. So a value read for a request reflects
//! every write that completed (was acknowledged) before the request began,
//! exactly as a call of its own would.
//!
//! Cancellation: a caller that stops waiting (client gone, deadline) only
//! drops its receiver; the task owns every call and its state, so nothing
//! (no lock, no half-sent batch) is left behind, and the others in its
//! call get their answers. A request whose caller went away before its call
//! was sent is left out of it: under pressure the queue holds many requests
//! nobody waits for any more (timed-out clients), and sending them would
//! spend Redis time on answers nobody reads (and count views nobody saw).
//!
//! Pressure: the queue is bounded ([`MAX_QUEUED`]). When Redis is slower
//! than requests arrive, a full queue answers [`QueueFull`] at once rather
//! than growing without bound and making every later request wait behind
//! all the earlier ones; callers treat it as the store being unavailable
//! (a cache miss, a 503 for sessions), as they treat a timeout.
//!
//! Written here rather than taken from a crate: batching crates batch by
//! size or time window (a window adds latency to a lone request and to
//! every request under light load); this needs "whoever is waiting when the
//! previous call returns", with the ordering property above.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

/// Requests carried by one call at most: bounds a script's size and the
/// time Redis spends on one call (other clients wait meanwhile).
pub const MAX_BATCH: usize = 256;

/// Requests that may wait for a call at most: 16 full calls. Beyond that a
/// request would wait for 16 round trips of a Redis that is not keeping up;
/// answering at once lets the caller fall back (database, 503) instead.
pub const MAX_QUEUED: usize = 16 * MAX_BATCH;

/// The error of a request refused because the queue was full: the backend
/// is not keeping up, so the request is answered "unavailable" at once.
#[derive(Debug, thiserror::Error)]
#[error("{0}: too many requests waiting for Redis")]
pub struct QueueFull(&'static str);

type Reply<V> = oneshot::Sender<Result<V, Arc<anyhow::Error>>>;

/// A handle to one coalescing task; clones share it. The task ends when
/// the last handle is dropped.
pub struct Coalescer<K, V> {
    name: &'static str,
    tx: mpsc::Sender<(K, Reply<V>)>,
}

impl<K, V> Clone for Coalescer<K, V> {
    fn clone(&self) -> Self {
        Coalescer {
            name: self.name,
            tx: self.tx.clone(),
        }
    }
}

impl<K: Send + 'static, V: Send + 'static> Coalescer<K, V> {
    /// Starts the task. `call` gets the requests of one call in arrival
    /// order and must return one answer per request, in the same order; a
    /// failed call (or a wrong number of answers) fails every request it
    /// carried.
    pub fn spawn<F, Fut>(name: &'static str, call: F) -> Self
    where
        F: Fn(Vec<K>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = anyhow::Result<Vec<V>>> + Send,
    {
        Self::spawn_bounded(name, MAX_QUEUED, call)
    }

    /// [`Self::spawn`] with a queue of `capacity` requests (tests use a
    /// small one to fill it).
    pub fn spawn_bounded<F, Fut>(name: &'static str, capacity: usize, call: F) -> Self
    where
        F: Fn(Vec<K>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = anyhow::Result<Vec<V>>> + Send,
    {
        let (tx, mut rx) = mpsc::channel::<(K, Reply<V>)>(capacity.max(1));
        tokio::spawn(async move {
            let mut waiting = Vec::with_capacity(MAX_BATCH);
            while rx.recv_many(&mut waiting, MAX_BATCH).await > 0 {
                // Callers that gave up are not sent (see the module doc).
                let (requests, replies): (Vec<K>, Vec<Reply<V>>) =
                    waiting.drain(..).filter(|(_, r)| !r.is_closed()).unzip();
                if requests.is_empty() {
                    continue;
                }
                crate::telemetry::observe(
                    "coalesced_batch_size",
                    &[("call", name)],
                    requests.len() as f64,
                );
                let n = requests.len();
                match call(requests).await {
                    Ok(answers) if answers.len() == n => {
                        for (reply, answer) in replies.into_iter().zip(answers) {
                            let _ = reply.send(Ok(answer));
                        }
                    }
                    Ok(answers) => {
                        let e = Arc::new(anyhow::anyhow!(
                            "{name}: {} answers for {n} requests",
                            answers.len()
                        ));
                        for reply in replies {
                            let _ = reply.send(Err(e.clone()));
                        }
                    }
                    Err(e) => {
                        let e = Arc::new(e);
                        for reply in replies {
                            let _ = reply.send(Err(e.clone()));
                        }
                    }
                }
            }
        });
        Coalescer { name, tx }
    }

    /// The answer to `request`, from a call sent after this was called;
    /// [`QueueFull`] at once when the queue is full.
    pub async fn call(&self, request: K) -> anyhow::Result<V> {
        let (reply, answer) = oneshot::channel();
        self.tx.try_send((request, reply)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => {
                crate::telemetry::count("coalesced_refused_total", &[("call", self.name)], 1);
                anyhow::Error::new(QueueFull(self.name))
            }
            mpsc::error::TrySendError::Closed(_) => anyhow::anyhow!("coalescing task stopped"),
        })?;
        match answer.await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(anyhow::anyhow!("{e:#}")),
            Err(_) => Err(anyhow::anyhow!("coalescing task stopped")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    /// A call that reads a shared value after a pause (a round trip):
    /// answers are the value as of when the call was sent.
    fn reader(value: Arc<AtomicU64>, calls: Arc<AtomicU64>) -> Coalescer<(), u64> {
        Coalescer::spawn("test", move |reqs: Vec<()>| {
            let (value, calls) = (value.clone(), calls.clone());
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                let v = value.load(Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(30)).await;
                Ok(vec![v; reqs.len()])
            }
        })
    }

    #[tokio::test]
    async fn a_request_made_after_a_write_never_gets_a_call_sent_before_it() -> anyhow::Result<()> {
        let (value, calls) = (Arc::new(AtomicU64::new(1)), Arc::new(AtomicU64::new(0)));
        let c = reader(value.clone(), calls.clone());
        // A call is in flight, having read 1.
        let early = tokio::spawn({
            let c = c.clone();
            async move { c.call(()).await }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        // The write completes, then a request starts: it must not share
        // the call in flight (which read the old value).
        value.store(2, Ordering::SeqCst);
        let late = c.call(()).await?;
        assert_eq!(early.await??, 1);
        assert_eq!(late, 2);
        Ok(())
    }

    #[tokio::test]
    async fn requests_waiting_together_share_one_call() -> anyhow::Result<()> {
        let (value, calls) = (Arc::new(AtomicU64::new(7)), Arc::new(AtomicU64::new(0)));
        let c = reader(value, calls.clone());
        let first = tokio::spawn({
            let c = c.clone();
            async move { c.call(()).await }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        // 50 requests arrive while the first call is in flight: one more call.
        let mut rest = Vec::new();
        for _ in 0..50 {
            let c = c.clone();
            rest.push(tokio::spawn(async move { c.call(()).await }));
        }
        assert_eq!(first.await??, 7);
        for r in rest {
            assert_eq!(r.await??, 7);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        Ok(())
    }

    #[tokio::test]
    async fn a_caller_that_gives_up_leaves_the_others_answered() -> anyhow::Result<()> {
        let (value, calls) = (Arc::new(AtomicU64::new(3)), Arc::new(AtomicU64::new(0)));
        let c = reader(value, calls);
        let gone = c.call(());
        assert!(
            tokio::time::timeout(Duration::from_millis(5), gone)
                .await
                .is_err()
        );
        assert_eq!(c.call(()).await?, 3);
        Ok(())
    }

    #[tokio::test]
    async fn callers_that_gave_up_are_not_sent() -> anyhow::Result<()> {
        let sent = Arc::new(std::sync::Mutex::new(Vec::<u32>::new()));
        let c: Coalescer<u32, u32> = Coalescer::spawn("test", {
            let sent = sent.clone();
            move |reqs: Vec<u32>| {
                let sent = sent.clone();
                async move {
                    sent.lock()
                        .map_err(|_| anyhow::anyhow!("poisoned"))?
                        .extend(&reqs);
                    tokio::time::sleep(Duration::from_millis(30)).await;
                    Ok(reqs)
                }
            }
        });
        // 1 is in flight; 2 and 3 queue behind it, then 2's caller gives up.
        let first = tokio::spawn({
            let c = c.clone();
            async move { c.call(1).await }
        });
        tokio::time::sleep(Duration::from_millis(5)).await;
        let gone = tokio::spawn({
            let c = c.clone();
            async move { c.call(2).await }
        });
        let kept = tokio::spawn({
            let c = c.clone();
            async move { c.call(3).await }
        });
        tokio::time::sleep(Duration::from_millis(5)).await;
        gone.abort();
        assert_eq!(first.await??, 1);
        assert_eq!(kept.await??, 3);
        let sent = sent
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .clone();
        assert_eq!(sent, vec![1, 3], "the abandoned request was not sent");
        Ok(())
    }

    #[tokio::test]
    async fn a_full_queue_answers_at_once() -> anyhow::Result<()> {
        // A backend that never answers: the first call hangs, the queue fills.
        let c: Coalescer<u32, u32> = Coalescer::spawn_bounded("test", 4, |_reqs| async {
            std::future::pending::<anyhow::Result<Vec<u32>>>().await
        });
        let mut held = Vec::new();
        for i in 0..5 {
            let c = c.clone();
            held.push(tokio::spawn(async move { c.call(i).await }));
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        let started = std::time::Instant::now();
        let refused = tokio::time::timeout(Duration::from_secs(1), c.call(99)).await?;
        let err = refused
            .err()
            .ok_or_else(|| anyhow::anyhow!("a full queue accepted"))?;
        assert!(err.downcast_ref::<QueueFull>().is_some(), "{err:#}");
        assert!(started.elapsed() < Duration::from_millis(100));
        for h in held {
            h.abort();
        }
        Ok(())
    }

    #[tokio::test]
    async fn a_failed_call_fails_each_request_it_carried() {
        let c: Coalescer<u32, u32> =
            Coalescer::spawn("test", |_reqs| async { anyhow::bail!("down") });
        let e = c.call(1).await.err().map(|e| e.to_string());
        assert_eq!(e.as_deref(), Some("down"));
    }
}
