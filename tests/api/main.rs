//! The one integration test binary: the real server over HTTP, on SQLite
//! and PostgreSQL, and the behaviour suites run against every backend.

mod helpers;

mod auth;
mod cli_cache;
mod bookings;
mod errors;
mod properties;
mod restart;
mod seed_import;
mod limiter_suite;
mod session_suite;
