//! The one integration test binary: the real server over HTTP on SQLite,
//! PostgreSQL, and PostgreSQL with every role on Redis, and the behaviour
//! suites run against every backend.

mod helpers;

mod abuse;
mod auth;
mod bookings;
mod cache_api;
mod cache_suite;
mod chaos;
mod chaos_support;
mod cli_cache;
mod console;
mod console_browser;
mod contract;
mod errors;
mod http_caching;
mod idempotency;
mod invalidation;
mod jobs_cluster;
mod jobs_partitions;
mod jobs_suite;
mod jobs_wakeup;
mod limiter_suite;
mod logs;
mod near_cache;
mod openapi;
mod ops;
mod outbox;
mod properties;
mod restart;
mod safe_defaults;
mod search;
mod seed_import;
mod session_suite;
mod shutdown;
mod tls;
mod topologies;
mod topology_chaos;
mod topology_e2e;
mod topology_ops;
mod views_suite;
mod workers;
