//! A circuit breaker shared by every call to one Redis role, so that a dead
//! or hanging Redis costs one short timeout now and then instead of one per
//! request. Closed: calls go through. After `threshold` consecutive
//! failures it opens for `cool_down`: calls fail at once. Then one call is
//! let through (half-open); its success closes the breaker again.

use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen,
}

/// Consecutive-failure circuit breaker.
#[derive(Debug)]
pub struct Breaker {
    name: &'static str,
    threshold: u32,
    cool_down: Duration,
    state: Mutex<State>,
}

impl Breaker {
    /// A closed breaker for role `name`: opens after `threshold` consecutive failures,
    /// for `cool_down`.
    pub fn new(name: &'static str, threshold: u32, cool_down: Duration) -> Self {
        Breaker {
            name,
            threshold,
            cool_down,
            state: Mutex::new(State::Closed { failures: 0 }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// May a call go through now?
    pub fn allow(&self) -> bool {
        let mut s = self.lock();
        match *s {
            State::Closed { .. } => true,
            State::Open { until } if Instant::now() >= until => {
                *s = State::HalfOpen;
                true
            }
            // One probe at a time while half-open.
            State::Open { .. } | State::HalfOpen => false,
        }
    }

    /// Records a successful call: closes the breaker and clears the failure count.
    pub fn success(&self) {
        let mut s = self.lock();
        if *s != (State::Closed { failures: 0 }) {
            if !matches!(*s, State::Closed { .. }) {
                tracing::info!(role = self.name, "Redis reachable again; circuit closed");
            }
            *s = State::Closed { failures: 0 };
            self.publish(0.0);
        }
    }

    /// Records a failed call: opens the breaker at `threshold` failures in a row, or
    /// at once when the half-open probe fails.
    pub fn failure(&self) {
        let mut s = self.lock();
        let next = match *s {
            State::Closed { failures } if failures + 1 < self.threshold => State::Closed {
                failures: failures + 1,
            },
            _ => {
                if !matches!(*s, State::Open { .. }) {
                    tracing::warn!(
                        role = self.name,
                        cool_down_ms = self.cool_down.as_millis() as u64,
                        "Redis failing; circuit open"
                    );
                }
                State::Open {
                    until: Instant::now() + self.cool_down,
                }
            }
        };
        *s = next;
        self.publish(if matches!(next, State::Open { .. }) {
            1.0
        } else {
            0.0
        });
    }

    /// True while calls are refused or only a probe may pass (half-open counts as open).
    pub fn is_open(&self) -> bool {
        matches!(*self.lock(), State::Open { .. } | State::HalfOpen)
    }

    fn publish(&self, open: f64) {
        metrics::gauge!("redis_circuit_open", "role" => self.name).set(open);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_threshold_and_recovers_through_one_probe() {
        let b = Breaker::new("test", 3, Duration::from_millis(20));
        for _ in 0..2 {
            assert!(b.allow());
            b.failure();
        }
        assert!(b.allow());
        b.failure();
        assert!(!b.allow(), "open after 3 failures");
        std::thread::sleep(Duration::from_millis(25));
        assert!(b.allow(), "half-open probe");
        assert!(!b.allow(), "only one probe");
        b.success();
        assert!(b.allow());
        assert!(!b.is_open());
    }
}
