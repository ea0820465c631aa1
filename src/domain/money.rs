//! [`Money`]: an exact amount in cents. Never a float: parsed from and
//! rendered as a decimal string with exactly two places (`"85.50"`).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An amount of money in minor units (cents).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Money(i64);

/// Largest accepted price per night, in cents: 100000.00.
pub const MAX_PRICE_CENTS: i64 = 10_000_000;

impl Money {
    /// Unchecked (any `i64`); [`Money::parse`] is the validating way in.
    pub const fn from_cents(cents: i64) -> Self {
        Money(cents)
    }

    /// The amount in cents, as the database stores it.
    pub const fn cents(self) -> i64 {
        self.0
    }

    /// Parses `"123"`, `"123.4"` or `"123.45"` (non-negative, at most two
    /// decimal places, at most 12 integer digits).
    pub fn parse(s: &str) -> Result<Self, &'static str> {
        const MSG: &str =
            "must be a decimal string with at most two decimal places, like \"85.50\"";
        let (int, frac) = match s.split_once('.') {
            Some((i, f)) => (i, f),
            None => (s, ""),
        };
        if int.is_empty()
            || int.len() > 12
            || frac.len() > 2
            || (s.contains('.') && frac.is_empty())
            || !int.bytes().all(|b| b.is_ascii_digit())
            || !frac.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(MSG);
        }
        let int: i64 = int.parse().map_err(|_| MSG)?;
        let frac: i64 = match frac.len() {
            0 => 0,
            1 => frac.parse::<i64>().map_err(|_| MSG)? * 10,
            _ => frac.parse().map_err(|_| MSG)?,
        };
        Ok(Money(int * 100 + frac))
    }

    /// `None` on overflow (e.g. price per night times nights).
    pub fn checked_mul(self, n: i64) -> Option<Money> {
        self.0.checked_mul(n).map(Money)
    }

    /// `None` on overflow.
    pub fn checked_add(self, other: Money) -> Option<Money> {
        self.0.checked_add(other.0).map(Money)
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        write!(f, "{sign}{}.{:02}", abs / 100, abs % 100)
    }
}

impl Serialize for Money {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Money {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Money::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::Money;

    #[test]
    fn parses_exactly() {
        assert_eq!(Money::parse("85.50"), Ok(Money(8550)));
        assert_eq!(Money::parse("85.5"), Ok(Money(8550)));
        assert_eq!(Money::parse("85"), Ok(Money(8500)));
        assert_eq!(Money::parse("0.01"), Ok(Money(1)));
        for bad in [
            "", ".5", "5.", "1.234", "-1.00", "1e3", "1,00", " 1.00", "abc", "1.2.3",
        ] {
            assert!(Money::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn renders_two_places() {
        assert_eq!(Money(8550).to_string(), "85.50");
        assert_eq!(Money(5).to_string(), "0.05");
        assert_eq!(Money(10_000_000).to_string(), "100000.00");
    }
}
