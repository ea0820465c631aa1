//! Password hashing: argon2id for every new hash, and verification of the
//! Django hashes (`pbkdf2_sha256$iterations$salt$hash`) of imported users,
//! who are rehashed to argon2id on their first successful login.
//!
//! Hashing is CPU-bound (tens of ms), so callers run it on the blocking pool.

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine;
use subtle::ConstantTimeEq;

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
