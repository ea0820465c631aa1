//! StayAfrica: a property-rental API (hosts list homes in African cities,
//! guests book stays) with the Redis-backed performance layer of the Django
//! system it replaces, done without that system's traps.
//!
//! Map of the crate:
//!
//! - [`config`]: typed settings (defaults, optional TOML file, environment).
//! - [`startup`]: [`startup::Application`] builds the state, binds, serves and
//!   shuts down gracefully.
//! - [`domain`]: validated value types (email, money, roles, stay dates).
//! - [`db`]: the database (SQLite embedded default or PostgreSQL) and its
//!   repositories; double booking is prevented by the database itself.
//! - [`http`]: the HTTP API of `API.md`: routers, extractors, middleware.
//! - [`error`]: [`error::ApiError`], the one error type at the HTTP edge.
//! - [`idempotency`]: answers kept for `Idempotency-Key` retries.
//! - [`outbox`]: what a write causes outside its transaction, recorded in
//!   it and applied at least once.
//! - Backends, each behind a small trait with an in-process implementation
//!   (the embedded default) and a Redis one: [`cache`], [`sessions`],
//!   [`ratelimit`], [`jobs`]; plus [`email`].
//! - [`views`]: property views end to end: counting, the live count a
//!   detail shows, the chunked flush into the database.
//! - [`kv`]: Redis connections per role and [`kv::keys`], the only place keys
//!   are built.
//! - [`passwords`]: argon2id hashing and verification of imported Django hashes.
//! - [`seed`] and [`import`]: fill the database with a deterministic data set
//!   or the existing system's export.
//! - [`cli`]: the `stayafrica` subcommands.

pub mod cache;
pub mod cli;
pub mod config;
pub mod db;
pub mod domain;
pub mod email;
pub mod error;
pub mod http;
pub mod idempotency;
pub mod import;
pub mod jobs;
pub mod kv;
pub mod outbox;
pub mod passwords;
pub mod ratelimit;
pub mod seed;
pub mod sessions;
pub mod startup;
pub mod telemetry;
pub mod views;
