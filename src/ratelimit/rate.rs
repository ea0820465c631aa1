//! [`Rate`]: a limit of `limit` requests per `period`, as operators write
//! it (`100/hour`, `5/15min`) in the settings.

use std::time::Duration;

use serde::de::{self, Deserialize, Deserializer};

/// A rate limit: `limit` requests per `period`, sliding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub limit: u32,
    pub period: Duration,
}

impl Rate {
    /// Unchecked (a zero limit is accepted here); [`Rate::parse`] validates input.
    pub const fn new(limit: u32, period: Duration) -> Self {
        Rate { limit, period }
    }

    /// Parses `N/UNIT` or `N/kUNIT`: `100/hour`, `5/15min`, `10/s`.
    pub fn parse(s: &str) -> Result<Rate, String> {
        let expected = || format!("expected a rate like `100/hour` or `5/15min`, got `{s}`");
        let (n, per) = s.trim().split_once('/').ok_or_else(expected)?;
        let limit: u32 = n.trim().parse().map_err(|_| expected())?;
        let per = per.trim();
        let digits = per.chars().take_while(char::is_ascii_digit).count();
        let mult: u64 = if digits == 0 {
            1
        } else {
            per[..digits].parse().map_err(|_| expected())?
        };
        let unit = match &per[digits..] {
            "s" | "sec" | "second" | "seconds" => 1,
            "m" | "min" | "minute" | "minutes" => 60,
            "h" | "hour" | "hours" => 3600,
            "d" | "day" | "days" => 86400,
            _ => return Err(expected()),
        };
        if limit == 0 || mult == 0 {
            return Err(expected());
        }
        Ok(Rate {
            limit,
            period: Duration::from_secs(mult * unit),
        })
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Rate::parse(&String::deserialize(d)?).map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rates() {
        assert_eq!(
            Rate::parse("100/hour"),
            Ok(Rate::new(100, Duration::from_secs(3600)))
        );
        assert_eq!(
            Rate::parse("5/15min"),
            Ok(Rate::new(5, Duration::from_secs(900)))
        );
        assert_eq!(
            Rate::parse("10/s"),
            Ok(Rate::new(10, Duration::from_secs(1)))
        );
        for bad in ["", "100", "0/hour", "x/hour", "100/fortnight", "100/0h"] {
            assert!(Rate::parse(bad).is_err(), "{bad} accepted");
        }
    }
}
