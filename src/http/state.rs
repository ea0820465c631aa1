//! [`AppState`]: everything a request may use, built once at startup.

use std::ops::Deref;
use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;

use crate::cache::Cache;
use crate::config::Settings;
use crate::db::Db;
use crate::idempotency::IdempotencyStore;
use crate::jobs::JobQueue;
use crate::outbox::Outbox;
use crate::passwords::Hasher;
use crate::ratelimit::RateLimiter;
use crate::sessions::SessionStore;
use crate::sessions::identity::Identities;
use crate::views::Views;

/// Shared, cheaply cloneable application state.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

/// The parts of [`AppState`].
pub struct Inner {
    pub settings: Settings,
    pub db: Db,
    pub cache: Cache,
    /// View counting: counts, the live count of a detail, the flush.
    pub views: Views,
    pub sessions: Arc<dyn SessionStore>,
    /// Who the user of a session is (cached; see [`Identities`]).
    pub identities: Identities,
    pub limiter: RateLimiter,
    pub jobs: JobQueue,
    pub metrics: PrometheusHandle,
    /// Password hashing and checks, bounded process-wide.
    pub hasher: Hasher,
    /// Applies what writes cause outside their transaction.
    pub outbox: Outbox,
    /// Answers kept for `Idempotency-Key` retries.
    pub idempotency: Arc<dyn IdempotencyStore>,
    /// Requests answered, per route (metrics) and per status class.
    pub requests: super::middleware::RequestMetrics,
    /// The last `/health` result (see `ops`).
    pub health: super::ops::HealthCache,
}

impl AppState {
    /// Wraps the parts once at startup; clones then share them.
    pub fn new(inner: Inner) -> Self {
        AppState(Arc::new(inner))
    }
}

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}
