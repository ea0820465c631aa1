//! GCRA (generic cell rate algorithm), the arithmetic shared by the
//! in-process limiter and the Redis Lua script (`lua/gcra.lua` mirrors it
//! line by line). State per key is one timestamp, the theoretical arrival
//! time (TAT); a limit of `L` per `P` admits `L` at once and then one every
//! `P / L`: a sliding limit with no burst at window edges.

/// The answer to one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u32,
    /// Requests that could be made right now without waiting.
    pub remaining: u32,
    /// Microseconds until the limit is fully replenished.
    pub reset_after_us: i64,
    /// Microseconds until the next request can pass (0 when allowed).
    pub retry_after_us: i64,
}

impl Decision {
    /// An allow that a failed-open check reports.
    pub fn open(limit: u32) -> Decision {
        Decision {
            allowed: true,
            limit,
            remaining: limit,
            reset_after_us: 0,
            retry_after_us: 0,
        }
    }

    /// Whole seconds until fully replenished, rounded up (`X-RateLimit-Reset`).
    pub fn reset_after_secs(&self) -> u64 {
        ceil_secs(self.reset_after_us)
    }

    /// `Retry-After` in whole seconds, at least 1.
    pub fn retry_after_secs(&self) -> u64 {
        ceil_secs(self.retry_after_us).max(1)
    }
}

fn ceil_secs(us: i64) -> u64 {
    u64::try_from((us.max(0) + 999_999) / 1_000_000).unwrap_or(0)
}

/// One GCRA step at time `now_us` for a key whose stored TAT is `tat_us`.
/// Returns the decision and the TAT to store (`None`: leave it unchanged).
pub fn check(
    tat_us: Option<i64>,
    now_us: i64,
    limit: u32,
    period_us: i64,
) -> (Decision, Option<i64>) {
    let limit_i = i64::from(limit.max(1));
    let interval = (period_us / limit_i).max(1);
    let tat = tat_us.unwrap_or(now_us).max(now_us);
    let new_tat = tat + interval;
    let allow_at = new_tat - period_us;
    if now_us < allow_at {
        let d = Decision {
            allowed: false,
            limit,
            remaining: 0,
            reset_after_us: tat - now_us,
            retry_after_us: allow_at - now_us,
        };
        return (d, None);
    }
    let remaining = ((period_us - (new_tat - now_us)) / interval).clamp(0, limit_i);
    let d = Decision {
        allowed: true,
        limit,
        remaining: u32::try_from(remaining).unwrap_or(0),
        reset_after_us: new_tat - now_us,
        retry_after_us: 0,
    };
    (d, Some(new_tat))
}

#[cfg(test)]
mod tests {
    use super::check;

    const HOUR: i64 = 3_600_000_000;

    #[test]
    fn admits_exactly_the_limit_at_once() {
        let mut tat = None;
        let mut allowed = 0;
        for _ in 0..200 {
            let (d, t) = check(tat, 0, 50, HOUR);
            if d.allowed {
                allowed += 1;
                tat = t;
            }
        }
        assert_eq!(allowed, 50);
    }

    #[test]
    fn remaining_counts_down_and_refills_smoothly() {
        let (d, tat) = check(None, 0, 5, HOUR);
        assert_eq!((d.allowed, d.remaining), (true, 4));
        let (mut d, mut tat) = (d, tat);
        for _ in 0..4 {
            (d, tat) = check(tat, 0, 5, HOUR);
        }
        assert_eq!((d.allowed, d.remaining), (true, 0));
        let (denied, _) = check(tat, 0, 5, HOUR);
        assert!(!denied.allowed);
        assert_eq!(denied.retry_after_secs(), 720);
        // One interval later exactly one more passes: no edge burst.
        let (again, tat2) = check(tat, HOUR / 5, 5, HOUR);
        assert!(again.allowed);
        assert!(!check(tat2, HOUR / 5, 5, HOUR).0.allowed);
    }
}
