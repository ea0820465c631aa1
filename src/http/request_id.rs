//! Request ids (`X-Request-Id`) for requests that come without one.
//!
//! `tower_http`'s `MakeRequestUuid` draws a random v4 UUID and formats it
//! through `Display`: about 3,000 instructions per request, a twentieth of
//! a cached GET. An id only has to be unique, not unpredictable (it is
//! neither a secret nor a capability), so each process draws 128 random
//! bits once and numbers its requests from there: a version-8 (custom)
//! UUID of `seed + n`, written with the crate's own encoder. Ids of one
//! process never repeat (before 2^62 of them: the version and variant bits
//! overwrite a few bits of the sum, a difference no smaller count reaches);
//! two processes collide only if their random seeds do.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::http::{HeaderValue, Request};
use tower_http::request_id::{MakeRequestId, RequestId};

/// Makes the id of each request that has none (see the module docs).
#[derive(Clone, Copy, Default)]
pub struct MakeSequentialId;

fn seed() -> &'static (u64, u64) {
    static SEED: OnceLock<(u64, u64)> = OnceLock::new();
    SEED.get_or_init(rand::random)
}

/// The `n`-th id of this process.
fn nth(n: u64) -> uuid::Uuid {
    let (hi, lo) = *seed();
    let bits = (u128::from(hi) << 64 | u128::from(lo)).wrapping_add(u128::from(n));
    uuid::Builder::from_custom_bytes(bits.to_be_bytes()).into_uuid()
}

impl MakeRequestId for MakeSequentialId {
    fn make_request_id<B>(&mut self, _request: &Request<B>) -> Option<RequestId> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let id = nth(NEXT.fetch_add(1, Ordering::Relaxed));
        let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
        let text = id.hyphenated().encode_lower(&mut text);
        HeaderValue::from_str(text).ok().map(RequestId::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_distinct_uuids() -> anyhow::Result<()> {
        let mut make = MakeSequentialId;
        let req = Request::new(());
        let mut seen = std::collections::HashSet::new();
        for _ in 0..1000 {
            let id = make
                .make_request_id(&req)
                .ok_or_else(|| anyhow::anyhow!("no id"))?;
            let text = id.header_value().to_str()?.to_owned();
            let parsed = uuid::Uuid::parse_str(&text)?;
            assert_eq!(parsed.get_version_num(), 8);
            assert!(seen.insert(text), "an id repeated");
        }
        // Neighbouring counters differ in more than the version bits.
        assert_ne!(nth(0), nth(1));
        Ok(())
    }
}
