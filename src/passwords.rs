//! Password hashing: argon2id for every new hash, and verification of the
//! Django hashes (`pbkdf2_sha256$iterations$salt$hash`) of imported users,
//! who are rehashed to argon2id on their first successful login.
//!
//! Hashing is CPU- and memory-bound: the argon2id parameters are the
//! crate's defaults, OWASP's first recommendation (m = 19 MiB, t = 2, p = 1):
//! about 19 MiB and 20-40 ms of one core per hash or check. Requests go
//! through [`Hasher`], which runs them on the blocking pool under one
//! process-wide bound, so that a flood of sign-ins costs at most
//! `permits × 19 MiB` and queues briefly instead of piling up threads and
//! memory (100 concurrent registrations held about 1.9 GiB before).
//! The bare functions are for batch tools (seed, import) that bound
//! themselves.

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine;
use subtle::ConstantTimeEq;

/// How long a request waits for a hashing turn before it is answered 503
/// with `Retry-After`: several turns' worth (each is 20-40 ms), short
/// enough that a flood is refused rather than queued.
pub const TURN_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Runs password hashing and checks with at most `permits` at once in this
/// process (see the module docs); a request that waits longer than `wait`
/// for its turn is refused with [`HashError::Busy`] instead of queuing
/// without bound. A permit is held until the hashing itself has finished,
/// also when the request that asked has gone (the blocking work cannot be
/// cancelled, so its memory counts until it ends).
#[derive(Clone)]
pub struct Hasher {
    permits: std::sync::Arc<tokio::sync::Semaphore>,
    wait: std::time::Duration,
}

/// Why a [`Hasher`] did not answer.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// Every permit was taken for longer than the wait: try again shortly.
    #[error("password hashing is saturated")]
    Busy,
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

impl Hasher {
    /// A bound of `permits` concurrent hashes (at least 1), each request
    /// waiting at most `wait` for its turn.
    pub fn new(permits: usize, wait: std::time::Duration) -> Self {
        Hasher {
            permits: std::sync::Arc::new(tokio::sync::Semaphore::new(permits.max(1))),
            wait,
        }
    }

    /// One permit per core: hashing is CPU-bound, so more at once only
    /// adds memory and latency, not throughput.
    pub fn per_core(wait: std::time::Duration) -> Self {
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
        Self::new(cores, wait)
    }

    /// Runs `f` on the blocking pool once a permit is free.
    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
    ) -> Result<T, HashError> {
        let permit = tokio::time::timeout(self.wait, self.permits.clone().acquire_owned())
            .await
            .map_err(|_| HashError::Busy)?
            .map_err(|_| HashError::Busy)?;
        let task = tokio::task::spawn_blocking(move || {
            let out = f();
            drop(permit);
            out
        });
        Ok(task.await.map_err(anyhow::Error::from)??)
    }

    /// [`hash`], bounded.
    pub async fn hash(&self, password: String) -> Result<String, HashError> {
        self.run(move || hash(&password)).await
    }

    /// [`verify`] against `stored`, or [`verify_dummy`] when there is no
    /// stored hash (an unknown email): the same work either way.
    pub async fn verify(
        &self,
        password: String,
        stored: Option<String>,
    ) -> Result<Verified, HashError> {
        self.run(move || match stored {
            Some(h) => verify(&password, &h),
            None => {
                verify_dummy(&password);
                Ok(Verified::No)
            }
        })
        .await
    }

    /// Checks `current` against `stored` and hashes `new`, as one turn.
    pub async fn verify_and_hash(
        &self,
        current: String,
        stored: String,
        new: String,
    ) -> Result<(Verified, String), HashError> {
        self.run(move || Ok((verify(&current, &stored)?, hash(&new)?)))
            .await
    }
}

/// The outcome of a password check.
#[derive(Debug, PartialEq, Eq)]
pub enum Verified {
    No,
    Yes,
    /// Correct, but stored in a legacy format: store this new hash.
    YesRehash(String),
}

/// An argon2id hash (PHC string) of `password`.
pub fn hash(password: &str) -> anyhow::Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("argon2 hashing failed: {e}"))
}

/// Checks `password` against a stored hash of either format.
pub fn verify(password: &str, stored: &str) -> anyhow::Result<Verified> {
    if stored.starts_with("pbkdf2_sha256$") {
        return Ok(if verify_django(password, stored) {
            Verified::YesRehash(hash(password)?)
        } else {
            Verified::No
        });
    }
    let Ok(parsed) = PasswordHash::new(stored) else {
        return Ok(Verified::No);
    };
    Ok(
        match Argon2::default().verify_password(password.as_bytes(), &parsed) {
            Ok(()) => Verified::Yes,
            Err(_) => Verified::No,
        },
    )
}

/// Spends the same work as a real check, for unknown emails, so that the
/// response time does not tell whether an address is registered.
pub fn verify_dummy(password: &str) {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let stored = DUMMY.get_or_init(|| hash("dummy password for timing").unwrap_or_default());
    let _ = verify(password, stored);
}

/// Django's `pbkdf2_sha256$<iterations>$<salt>$<base64 of the derived key>`.
fn verify_django(password: &str, stored: &str) -> bool {
    let parts: Vec<&str> = stored.split('$').collect();
    let [_, iterations, salt, expected] = parts[..] else {
        return false;
    };
    let Ok(iterations) = iterations.parse::<u32>() else {
        return false;
    };
    if iterations == 0 || iterations > 10_000_000 {
        return false;
    }
    let Ok(expected) = base64::engine::general_purpose::STANDARD.decode(expected) else {
        return false;
    };
    if expected.len() != 32 {
        return false;
    }
    let mut derived = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<sha2::Sha256>(
        password.as_bytes(),
        salt.as_bytes(),
        iterations,
        &mut derived,
    );
    derived.ct_eq(&expected).into()
}

/// A Django-format hash (used by tests and the importer's fixtures).
pub fn django_hash(password: &str, salt: &str, iterations: u32) -> String {
    let mut derived = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<sha2::Sha256>(
        password.as_bytes(),
        salt.as_bytes(),
        iterations,
        &mut derived,
    );
    let b64 = base64::engine::general_purpose::STANDARD.encode(derived);
    format!("pbkdf2_sha256${iterations}${salt}${b64}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argon2_round_trip() -> anyhow::Result<()> {
        let h = hash("password123")?;
        assert!(h.starts_with("$argon2id$"));
        assert_eq!(verify("password123", &h)?, Verified::Yes);
        assert_eq!(verify("password124", &h)?, Verified::No);
        Ok(())
    }

    #[test]
    fn django_hashes_verify_and_ask_for_rehash() -> anyhow::Result<()> {
        let stored = django_hash("password123", "seasalt", 1000);
        assert!(
            matches!(verify("password123", &stored)?, Verified::YesRehash(h) if h.starts_with("$argon2id$"))
        );
        assert_eq!(verify("wrong", &stored)?, Verified::No);
        assert_eq!(verify("x", "pbkdf2_sha256$abc$salt$zzz")?, Verified::No);
        Ok(())
    }

    #[test]
    fn django_known_vector() {
        // PBKDF2-HMAC-SHA256(P="password", S="salt", c=1), as Python's hashlib computes it.
        let h = django_hash("password", "salt", 1);
        assert_eq!(
            h,
            "pbkdf2_sha256$1$salt$Eg+2z/z4syxD5yJSVsT4N6hlSMkszDVICAWYfLcL4Xs="
        );
    }
}
