//! Length rules for free text fields and the booking status.

use serde::{Deserialize, Serialize};

/// Checks that `value` has between `min` and `max` characters (not bytes).
pub fn check_len(value: &str, min: usize, max: usize) -> Result<(), String> {
    let n = value.chars().count();
    if n < min || n > max {
        Err(format!("must be {min} to {max} characters long"))
    } else {
        Ok(())
    }
}

/// [`check_len`] for text shown to people: no control characters (NUL
/// cannot even be stored by PostgreSQL) except line breaks and tabs.
pub fn check_text(value: &str, min: usize, max: usize) -> Result<(), String> {
    if value
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err("must not contain control characters".into());
    }
    check_len(value, min, max)
}

/// A booking is confirmed until cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum BookingStatus {
    Confirmed,
    Cancelled,
}

impl BookingStatus {
    /// The lower-case name the database stores and the API shows.
    pub fn as_str(self) -> &'static str {
        match self {
            BookingStatus::Confirmed => "confirmed",
            BookingStatus::Cancelled => "cancelled",
        }
    }

    /// Reads a stored status; never fails: anything but `cancelled` is confirmed.
    pub fn from_db(s: &str) -> Self {
        if s == "cancelled" {
            BookingStatus::Cancelled
        } else {
            BookingStatus::Confirmed
        }
    }
}
