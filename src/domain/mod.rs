//! Validated value types. Each parses untrusted input into a type that can
//! only hold valid values (`parse -> Result`), so handlers and repositories
//! never re-check them.

mod client;
mod email;
mod money;
mod role;
mod stay;
mod text;

pub use client::{ClientAddr, DEFAULT_IPV6_PREFIX};
pub use email::Email;
pub use money::{MAX_PRICE_CENTS, Money};
pub use role::Role;
pub use stay::{MAX_NIGHTS, StayDates, StayError, parse_date};
pub use text::{BookingStatus, check_len, check_text};
