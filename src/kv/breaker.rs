//! A circuit breaker shared by every call to one Redis role, so that a dead
//! or hanging Redis costs one short timeout now and then instead of one per
//! request. Closed: calls go through. After `threshold` consecutive
//! unhealthy outcomes it opens for `cool_down`: calls fail at once. Then one
//! call is let through (half-open); a healthy outcome closes the breaker, an
//! unhealthy one opens it for another cool-down.
//!
//! Every call the breaker lets through holds a [`Permit`] and must end in
//! exactly one outcome. A permit dropped without a report (the caller's
//! future was cancelled: client gone, request deadline, a speculative read
//! thrown away) reports itself as abandoned: that says nothing about Redis,
//! so it counts neither way, but an abandoned half-open probe frees the probe
//! slot at once. A probe that neither reports nor is dropped (stuck) is
//! superseded after `probe_deadline`. So the breaker can never stay
//! half-open: the bug this module once had, where a probe answered
//! `LOADING` reported nothing and every later call was refused for ever.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What one call let through says about the health of its Redis (the
/// per-error table lives in [`crate::kv::verdict`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Redis answered in time (with a value, or with an error about this
    /// call rather than about the server): it is reachable and serving.
    Healthy,
    /// Redis did not answer in time, or answered that it cannot serve now.
    Unhealthy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// One probe is out; `probe` names it, so that only its own report or
    /// abandonment ends this state, and `since` bounds how long it may take.
    HalfOpen {
        probe: u64,
        since: Instant,
    },
}

/// Consecutive-failure circuit breaker.
#[derive(Debug)]
pub struct Breaker {
    name: &'static str,
    threshold: u32,
    cool_down: Duration,
    probe_deadline: Duration,
    state: Mutex<(State, u64)>,
}

/// The right to make one call; report its outcome with [`Permit::report`].
/// Dropping it unreported counts as an abandoned call (see the module doc).
#[must_use = "a permit reports on drop; hold it for the duration of the call"]
#[derive(Debug)]
pub struct Permit<'a> {
    breaker: &'a Breaker,
    /// `Some(id)` when this call is the half-open probe.
    probe: Option<u64>,
    reported: bool,
}

impl Permit<'_> {
    /// Whether this call is the half-open probe.
    pub fn is_probe(&self) -> bool {
        self.probe.is_some()
    }

    /// Records the outcome of the call.
    pub fn report(mut self, outcome: Outcome) {
        self.reported = true;
        match outcome {
            Outcome::Healthy => self.breaker.success(),
            Outcome::Unhealthy => self.breaker.failure(),
        }
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.reported {
            self.breaker.abandoned(self.probe);
        }
    }
}

impl Breaker {
    /// A closed breaker for role `name`: opens after `threshold` consecutive
    /// unhealthy outcomes, for `cool_down`; a half-open probe that has not
    /// reported after `probe_deadline` no longer blocks the next one.
    pub fn new(
        name: &'static str,
        threshold: u32,
        cool_down: Duration,
        probe_deadline: Duration,
    ) -> Self {
        Breaker {
            name,
            threshold,
            cool_down,
            probe_deadline,
            state: Mutex::new((State::Closed { failures: 0 }, 0)),
        }
    }

    /// How long the breaker stays open before it lets a probe through.
    pub fn cool_down(&self) -> Duration {
        self.cool_down
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (State, u64)> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A permit for one call, or `None` while the breaker refuses calls.
    pub fn try_acquire(&self) -> Option<Permit<'_>> {
        let now = Instant::now();
        let mut guard = self.lock();
        let (state, next_probe) = &mut *guard;
        let probe = match *state {
            State::Closed { .. } => None,
            State::Open { until } if now < until => return None,
            State::HalfOpen { since, .. } if now < since + self.probe_deadline => return None,
            // Cool-down over, or the previous probe is overdue: probe now.
            State::Open { .. } | State::HalfOpen { .. } => {
                *next_probe += 1;
                *state = State::HalfOpen {
                    probe: *next_probe,
                    since: now,
                };
                Some(*next_probe)
            }
        };
        Some(Permit {
            breaker: self,
            probe,
            reported: false,
        })
    }

    /// A healthy outcome: closes the breaker and clears the failure count.
    fn success(&self) {
        let mut guard = self.lock();
        let state = &mut guard.0;
        if *state != (State::Closed { failures: 0 }) {
            if !matches!(*state, State::Closed { .. }) {
                tracing::info!(role = self.name, "Redis answering again; circuit closed");
            }
            *state = State::Closed { failures: 0 };
            self.publish(0.0);
        }
    }

    /// Closes the breaker: the connection was replaced, so what it counted
    /// was about a server the role no longer talks to.
    pub fn reset(&self) {
        self.success();
    }

    /// An unhealthy outcome: opens the breaker at `threshold` in a row, or at
    /// once when half-open. A late failure of a call admitted before the
    /// breaker opened does not prolong an open breaker.
    fn failure(&self) {
        let mut guard = self.lock();
        let state = &mut guard.0;
        let next = match *state {
            State::Closed { failures } if failures + 1 < self.threshold => State::Closed {
                failures: failures + 1,
            },
            State::Open { .. } => return,
            State::Closed { .. } | State::HalfOpen { .. } => {
                if matches!(*state, State::Closed { .. }) {
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
        *state = next;
        self.publish(if matches!(next, State::Open { .. }) {
            1.0
        } else {
            0.0
        });
    }

    /// A call dropped before it finished: no evidence either way. If it was
    /// the current probe, the next call may probe at once.
    fn abandoned(&self, probe: Option<u64>) {
        let mut guard = self.lock();
        if let (Some(id), State::HalfOpen { probe: current, .. }) = (probe, guard.0)
            && id == current
        {
            guard.0 = State::Open {
                until: Instant::now(),
            };
        }
    }

    /// True while calls are refused or only a probe may pass (half-open counts as open).
    pub fn is_open(&self) -> bool {
        matches!(self.lock().0, State::Open { .. } | State::HalfOpen { .. })
    }

    fn publish(&self, open: f64) {
        metrics::gauge!("redis_circuit_open", "role" => self.name).set(open);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COOL: Duration = Duration::from_millis(20);
    const DEADLINE: Duration = Duration::from_millis(60);

    fn breaker() -> Breaker {
        Breaker::new("test", 3, COOL, DEADLINE)
    }

    /// One call through `b` (if admitted) with `outcome`.
    fn call(b: &Breaker, outcome: Outcome) {
        if let Some(p) = b.try_acquire() {
            p.report(outcome);
        }
    }

    /// Opens the breaker and waits out the cool-down.
    fn open_and_cool(b: &Breaker) {
        for _ in 0..3 {
            if let Some(p) = b.try_acquire() {
                p.report(Outcome::Unhealthy);
            }
        }
        assert!(b.try_acquire().is_none(), "open after 3 failures");
        std::thread::sleep(COOL + Duration::from_millis(5));
    }

    #[test]
    fn opens_after_threshold_and_recovers_through_one_probe() {
        let b = breaker();
        for _ in 0..2 {
            call(&b, Outcome::Unhealthy);
        }
        assert!(!b.is_open(), "two failures do not open it");
        open_and_cool(&b);
        let probe = b.try_acquire();
        assert!(
            probe.as_ref().is_some_and(Permit::is_probe),
            "half-open probe"
        );
        assert!(b.try_acquire().is_none(), "only one probe");
        if let Some(p) = probe {
            p.report(Outcome::Healthy);
        }
        assert!(!b.is_open());
        assert!(b.try_acquire().is_some_and(|p| !p.is_probe()));
    }

    #[test]
    fn a_healthy_answer_resets_the_failure_count() {
        let b = breaker();
        for _ in 0..10 {
            call(&b, Outcome::Unhealthy);
            call(&b, Outcome::Unhealthy);
            call(&b, Outcome::Healthy);
        }
        assert!(!b.is_open(), "failures must be consecutive to open it");
    }

    #[test]
    fn an_unhealthy_probe_reopens_for_a_full_cool_down() {
        let b = breaker();
        open_and_cool(&b);
        call(&b, Outcome::Unhealthy);
        assert!(b.is_open());
        assert!(
            b.try_acquire().is_none(),
            "refused during the new cool-down"
        );
        std::thread::sleep(COOL + Duration::from_millis(5));
        assert!(b.try_acquire().is_some_and(|p| p.is_probe()));
    }

    #[test]
    fn a_dropped_probe_frees_the_probe_slot_at_once() {
        let b = breaker();
        open_and_cool(&b);
        let probe = b.try_acquire();
        assert!(probe.is_some());
        drop(probe); // the caller's future was cancelled mid-call
        let next = b.try_acquire();
        assert!(
            next.as_ref().is_some_and(Permit::is_probe),
            "a new probe may go"
        );
        if let Some(p) = next {
            p.report(Outcome::Healthy);
        }
        assert!(!b.is_open());
    }

    #[test]
    fn a_stuck_probe_is_superseded_after_its_deadline() {
        let b = breaker();
        open_and_cool(&b);
        let stuck = b.try_acquire();
        assert!(stuck.is_some());
        assert!(b.try_acquire().is_none(), "within the deadline: one probe");
        std::thread::sleep(DEADLINE + Duration::from_millis(5));
        let second = b.try_acquire();
        assert!(second.as_ref().is_some_and(Permit::is_probe));
        // The superseded probe's late drop does not disturb the new one.
        drop(stuck);
        assert!(
            b.try_acquire().is_none(),
            "the new probe still holds the slot"
        );
        if let Some(p) = second {
            p.report(Outcome::Healthy);
        }
        assert!(!b.is_open());
    }

    #[test]
    fn dropped_calls_while_closed_count_neither_way() {
        let b = breaker();
        call(&b, Outcome::Unhealthy);
        call(&b, Outcome::Unhealthy);
        for _ in 0..10 {
            drop(b.try_acquire());
        }
        assert!(!b.is_open(), "abandoned calls are not failures");
        call(&b, Outcome::Unhealthy);
        assert!(b.is_open(), "nor do they reset the count");
    }

    #[test]
    fn late_failures_do_not_prolong_an_open_breaker() {
        let b = breaker();
        let late: Vec<_> = (0..5).filter_map(|_| b.try_acquire()).collect();
        open_and_cool(&b);
        for p in late {
            p.report(Outcome::Unhealthy);
        }
        assert!(
            b.try_acquire().is_some_and(|p| p.is_probe()),
            "cool-down not extended by calls admitted before it opened"
        );
    }
}
