//! [`Email`]: a syntactically valid, normalized (trimmed, lower-cased) address.

use std::fmt;

/// An email address: at most 254 characters, `local@domain.tld`, no spaces.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Email(String);

impl Email {
    /// Trims and lower-cases `raw`, then checks it; the error is a message for the client.
    pub fn parse(raw: &str) -> Result<Self, &'static str> {
        let s = raw.trim().to_lowercase();
        if s.is_empty() || s.len() > 254 {
            return Err("must be a valid email address of at most 254 characters");
        }
        let Some((local, domain)) = s.split_once('@') else {
            return Err("must be a valid email address");
        };
        let bad_char =
            |c: char| c.is_whitespace() || c.is_control() || "<>()[],;:\\\"@".contains(c);
        let domain_ok = domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && !domain.contains("..")
            && domain.split('.').all(|l| {
                !l.is_empty()
                    && !l.starts_with('-')
                    && !l.ends_with('-')
                    && l.chars().all(|c| c.is_alphanumeric() || c == '-')
            });
        if local.is_empty() || local.len() > 64 || local.chars().any(bad_char) || !domain_ok {
            return Err("must be a valid email address");
        }
        Ok(Email(s))
    }

    /// The normalized address, as stored and as keys hash it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::Email;

    #[test]
    fn accepts_and_normalizes() {
        assert_eq!(
            Email::parse(" Amara@Example.COM ").map(|e| e.0),
            Ok("amara@example.com".into())
        );
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "a",
            "a@b",
            "@b.com",
            "a@.com",
            "a b@c.com",
            "a@b..com",
            "a@@b.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad} accepted");
        }
        assert!(Email::parse(&format!("{}@x.com", "a".repeat(250))).is_err());
    }
}
