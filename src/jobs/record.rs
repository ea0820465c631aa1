//! The job record of the Redis queue: ONE string per job (`job:{id}`),
//! written once when the job is queued and rewritten only when its state
//! is kept beyond a delivery (a retry, a death, a result). A string costs
//! Redis one `MSETNX` share to write and one `MGET` share to read, where a
//! hash cost an `HSET` and `HMGET`s per step; the scripts read it without
//! parsing on the hot path (`src/jobs/lua/record.lua` has the same format
//! for Lua):
//!
//! ```text
//! status|timeout_ms|attempts|max_attempts|created_ms|finished_ms|name|wl|el|rl|
//! then the worker (wl bytes), the last error (el), the result (rl), the payload
//! ```
//!
//! `status` is `q` (queued; also while running, which the partition's
//! `running` hash says), `d` (done) or `x` (dead); `attempts` counts the
//! deliveries that ended; `wl`, `el` and `rl` are byte lengths, or `n` when
//! the value is absent.

use std::fmt::Write;

/// A decoded record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record<'a> {
    pub status: u8,
    pub timeout_ms: u64,
    pub attempts: u32,
    pub max_attempts: u32,
    pub created_ms: i64,
    pub finished_ms: i64,
    pub name: &'a str,
    pub worker: Option<&'a str>,
    pub last_error: Option<&'a str>,
    pub result: Option<&'a str>,
    pub payload: &'a str,
}

/// The record of a job just queued.
pub fn queued(
    timeout_ms: u64,
    max_attempts: u32,
    created_ms: i64,
    name: &str,
    payload: &str,
) -> String {
    let mut s = String::with_capacity(payload.len() + name.len() + 40);
    // Writing to a String cannot fail.
    let _ = write!(
        s,
        "q|{timeout_ms}|0|{max_attempts}|{created_ms}|0|{name}|n|n|n|{payload}"
    );
    s
}

/// Parses a record; `None` if it is not one (corrupt, or another format).
pub fn decode(rec: &str) -> Option<Record<'_>> {
    let mut fields = rec.splitn(11, '|');
    let mut next = || fields.next();
    let status = *next()?.as_bytes().first()?;
    let timeout_ms = next()?.parse().ok()?;
    let attempts = next()?.parse().ok()?;
    let max_attempts = next()?.parse().ok()?;
    let created_ms = next()?.parse().ok()?;
    let finished_ms = next()?.parse().ok()?;
    let name = next()?;
    let lens = [next()?, next()?, next()?];
    let mut rest = next().unwrap_or("");
    let mut take = |len: &str| -> Option<Option<&str>> {
        if len == "n" {
            return Some(None);
        }
        let n: usize = len.parse().ok()?;
        let (v, r) = (rest.get(..n)?, rest.get(n..)?);
        rest = r;
        Some(Some(v))
    };
    let worker = take(lens[0])?;
    let last_error = take(lens[1])?;
    let result = take(lens[2])?;
    Some(Record {
        status,
        timeout_ms,
        attempts,
        max_attempts,
        created_ms,
        finished_ms,
        name,
        worker,
        last_error,
        result,
        payload: rest,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queued_record_reads_back() {
        let rec = queued(5000, 3, 17, "probe", "{\"a\":\"x|y\"}");
        assert_eq!(rec, "q|5000|0|3|17|0|probe|n|n|n|{\"a\":\"x|y\"}");
        let r = decode(&rec).unwrap_or_else(|| panic!("decodes"));
        assert_eq!(
            (r.status, r.timeout_ms, r.attempts, r.max_attempts, r.name),
            (b'q', 5000, 0, 3, "probe")
        );
        assert_eq!((r.worker, r.last_error, r.result), (None, None, None));
        assert_eq!(r.payload, "{\"a\":\"x|y\"}");
    }

    #[test]
    fn texts_are_length_prefixed_so_any_bytes_fit() {
        // As record.lua's encode writes it: worker, error, result, payload.
        let rec = "x|100|2|3|1|2|send_otp|2|4|0|w1a|b|{}";
        let r = decode(rec).unwrap_or_else(|| panic!("decodes"));
        assert_eq!(r.worker, Some("w1"));
        assert_eq!(r.last_error, Some("a|b|"));
        assert_eq!(r.result, Some(""));
        assert_eq!(r.payload, "{}");
        assert!(decode("q|1|0|3|0|0|probe|9|n|n|short").is_none());
        assert!(decode("nonsense").is_none());
    }
}
