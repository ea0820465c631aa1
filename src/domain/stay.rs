//! A stay: the dates of a booking, and of a search for free properties,
//! under one set of rules (API.md: check_in today or later, check_out
//! after it, at most [`MAX_NIGHTS`] nights), so that a search accepts
//! exactly the stays a booking would.

use time::Date;

/// Longest stay that can be booked (or searched for).
pub const MAX_NIGHTS: i64 = 90;

/// Dates that keep the stay rules: check_in is today or later, check_out
/// after it and at most [`MAX_NIGHTS`] nights later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StayDates {
    check_in: Date,
    check_out: Date,
}

/// One broken rule: the field at fault and what is wrong with it.
pub type StayError = (&'static str, String);

/// A `YYYY-MM-DD` date.
pub fn parse_date(s: &str) -> Option<Date> {
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    Date::parse(s, &fmt).ok()
}

impl StayDates {
    /// Parses and checks both dates on `today`; every broken rule is
    /// returned, each once, naming its field.
    pub fn parse(
        check_in: &str,
        check_out: &str,
        today: Date,
    ) -> Result<StayDates, Vec<StayError>> {
        let mut errors = Vec::new();
        let check_in = parse_date(check_in);
        let check_out = parse_date(check_out);
        match check_in {
            None => errors.push(("check_in", "must be a date YYYY-MM-DD".into())),
            Some(d) if d < today => errors.push(("check_in", "must be today or later".into())),
            _ => {}
        }
        match (check_in, check_out) {
            (_, None) => errors.push(("check_out", "must be a date YYYY-MM-DD".into())),
            (Some(i), Some(o)) if o <= i => {
                errors.push(("check_out", "must be after check_in".into()))
            }
            (Some(i), Some(o)) if (o - i).whole_days() > MAX_NIGHTS => errors.push((
                "check_out",
                format!("a stay is at most {MAX_NIGHTS} nights"),
            )),
            _ => {}
        }
        match (check_in, check_out) {
            (Some(check_in), Some(check_out)) if errors.is_empty() => Ok(StayDates {
                check_in,
                check_out,
            }),
            _ => Err(errors),
        }
    }

    /// The first night.
    pub fn check_in(self) -> Date {
        self.check_in
    }

    /// The day of departure (not a night of the stay).
    pub fn check_out(self) -> Date {
        self.check_out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    #[test]
    fn the_booking_rules_name_the_field_at_fault() {
        let today = date!(2030 - 01 - 10);
        let fields = |i: &str, o: &str| match StayDates::parse(i, o, today) {
            Ok(_) => Vec::new(),
            Err(e) => e.into_iter().map(|(f, _)| f).collect(),
        };
        assert_eq!(fields("2030-01-10", "2030-01-11"), Vec::<&str>::new());
        assert_eq!(fields("2030-01-10", "2030-04-10"), Vec::<&str>::new());
        assert_eq!(fields("2030-01-10", "2030-04-11"), ["check_out"]);
        assert_eq!(fields("2030-01-09", "2030-01-11"), ["check_in"]);
        assert_eq!(fields("2030-01-12", "2030-01-12"), ["check_out"]);
        assert_eq!(fields("2030-13-01", "x"), ["check_in", "check_out"]);
    }
}
