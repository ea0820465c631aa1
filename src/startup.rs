//! Building and running the service: [`build_state`] connects the database
//! and picks every backend from the settings; [`Application`] binds the
//! listener (port 0 in tests), serves until the shutdown future resolves,
//! then stops accepting, finishes in-flight requests and jobs, and flushes
//! counted views.

use secrecy::ExposeSecret;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::cache::Cache;
use crate::cache::otp::OtpSealKey;
use crate::config::Settings;
use crate::db::Db;
use crate::email::Mailer;
use crate::http::{self, AppState, Inner};
use crate::idempotency::IdempotencyStore;
use crate::idempotency::redis::RedisIdempotency;
use crate::idempotency::sql::SqlIdempotency;
use crate::jobs::redis::{MAX_PARTITIONS, RedisQueue};
use crate::jobs::sql::SqlQueue;
use crate::jobs::worker::{JobContext, Worker};
use crate::jobs::{JobQueue, QueueBackend, Tallies};
use crate::kv::keys::Keys;
use crate::kv::{RedisRole, Role};
use crate::outbox::Outbox;
use crate::ratelimit::memory::MemoryLimiter;
use crate::ratelimit::redis::RedisLimiter;
use crate::ratelimit::{LimiterBackend, RateLimiter};
use crate::sessions::SessionStore;
use crate::sessions::identity::Identities;
use crate::sessions::redis::RedisSessionStore;
use crate::sessions::sql::SqlSessionStore;
use crate::telemetry;
use crate::views::Views;

/// Connects the database, applies migrations and builds every backend.
pub async fn build_state(settings: Settings) -> anyhow::Result<(AppState, Arc<JobContext>)> {
    if let Some(tls) = &settings.redis_tls {
        crate::kv::tls::install(tls)?;
    }
    let db = Db::connect(settings.database_url.expose_secret()).await?;
    db.migrate().await?;
    let keys = Keys::new(&settings.key_prefix);
    let broker = match &settings.redis {
        Some(r) => Some(RedisRole::connect(Role::Broker, r.broker.expose_secret()).await?),
        None => None,
    };
    let idempotency: Arc<dyn IdempotencyStore> = match &settings.redis {
        // On the sessions role: never evicted, unlike the cache.
        Some(r) => Arc::new(RedisIdempotency::new(
            RedisRole::connect(Role::Sessions, r.sessions.expose_secret()).await?,
        )),
        None => Arc::new(SqlIdempotency::new(db.clone())),
    };
    let Backends {
        cache,
        views,
        limiter_backend,
        sessions,
        queue,
    } = match &settings.redis {
        None => Backends {
            cache: Cache::memory(settings.memory_cache_bytes, keys.clone()),
            views: Views::memory(db.clone()),
            limiter_backend: Arc::new(MemoryLimiter::default()),
            sessions: Arc::new(SqlSessionStore::new(db.clone())),
            queue: Arc::new(SqlQueue::new(db.clone())),
        },
        // Production: each role on its own Redis connection (its own DB or
        // server), with the role's timeout and circuit breaker.
        Some(r) => {
            let cache_role = RedisRole::connect(Role::Cache, r.cache.expose_secret()).await?;
            Backends {
                // The store is remote: hot responses are kept near (cache::near).
                cache: Cache::redis(cache_role.clone(), keys.clone())
                    .with_near_cache(settings.near_cache_bytes),
                // The view counters are cache-role data too (one role, one breaker).
                views: Views::redis(cache_role, keys.clone(), db.clone()),
                // The limiter is handed keys already built by `RateLimiter`.
                limiter_backend: Arc::new(RedisLimiter::new(
                    RedisRole::connect(Role::RateLimit, r.ratelimit.expose_secret()).await?,
                )),
                sessions: Arc::new(RedisSessionStore::new(
                    RedisRole::connect(Role::Sessions, r.sessions.expose_secret()).await?,
                    keys.clone(),
                )),
                queue: {
                    let broker = broker.clone().context("the broker role is connected")?;
                    let partitions = match settings.job_partitions {
                        Some(n) => n,
                        None => default_job_partitions(&broker).await?,
                    };
                    let queue = RedisQueue::new(broker, &keys)
                        .with_partitions(partitions)
                        .with_wakeups(r.broker.expose_secret())?;
                    queue.register().await?;
                    Arc::new(queue)
                },
            }
        }
    };
    if settings.redis.is_some() {
        cache.spawn_stats_flusher(Duration::from_secs(5));
    }
    let limiter = RateLimiter::new(limiter_backend, keys.clone(), settings.throttles);
    // Probe jobs count their runs beside the queue (diagnostics).
    let tallies = match broker {
        Some(role) => Tallies::redis(role, keys.clone()),
        None => Tallies::sql(db.clone()),
    };
    let jobs = JobQueue::new(queue).with_tallies(tallies);
    let email = settings
        .email
        .clone()
        .unwrap_or(crate::config::EmailSetting::Log);
    let mailer = Mailer::from_settings(&email, settings.email_log_codes)?;
    let ctx = Arc::new(JobContext {
        db: db.clone(),
        cache: cache.clone(),
        views: views.clone(),
        mailer,
        otp_ttl: settings.otp_ttl,
        otp_seal: OtpSealKey::new(db.secret("otp_seal").await?),
        view_flush_interval: settings.view_flush_interval,
    });
    let outbox = Outbox::new(db.clone(), cache.clone(), jobs.clone());
    let state = AppState::new(Inner {
        settings,
        identities: Identities::new(db.clone()),
        db,
        cache,
        views,
        sessions,
        limiter,
        jobs,
        metrics: telemetry::metrics_handle(),
        hasher: crate::passwords::Hasher::per_core(crate::passwords::TURN_WAIT),
        health: http::ops::HealthCache::default(),
        requests: http::middleware::RequestMetrics::default(),
        outbox,
        idempotency,
    });
    Ok((state, ctx))
}

/// What `serve` and `worker` check before they start outside the embedded
/// default (a PostgreSQL database or Redis): e-mail must go somewhere
/// chosen ([`Settings::email_backend`]), and a session cookie without
/// `Secure` is worth a warning (behind HTTPS it should be set).
pub fn refuse_development_defaults(settings: &Settings) -> anyhow::Result<()> {
    settings.email_backend()?;
    if settings.is_production() && !settings.cookie_secure {
        tracing::warn!(
            "STAYAFRICA_COOKIE_SECURE is false: the session cookie is sent over plain HTTP too; \
             set it when the service is reached over HTTPS"
        );
    }
    Ok(())
}

/// The job queue's partition count when `STAYAFRICA_JOB_PARTITIONS` is
/// unset: twice the number of masters on a Redis Cluster (each master then
/// holds about two partitions' slots, so enqueues and leases spread over
/// all of them), 1 on one server or a Sentinel's master.
pub async fn default_job_partitions(broker: &RedisRole) -> anyhow::Result<u16> {
    let conn = broker.connection();
    if !conn.is_cluster() {
        return Ok(1);
    }
    let masters = conn
        .masters()
        .await
        .context("listing the broker's Redis Cluster masters")?;
    let n = u16::try_from(masters.len().saturating_mul(2)).unwrap_or(MAX_PARTITIONS);
    Ok(n.clamp(1, MAX_PARTITIONS))
}

/// The four role backends, in-process or Redis.
struct Backends {
    cache: Cache,
    views: Views,
    limiter_backend: Arc<dyn LimiterBackend>,
    sessions: Arc<dyn SessionStore>,
    queue: Arc<dyn QueueBackend>,
}

/// How `serve` runs workers.
#[derive(Debug, Clone, Copy)]
pub struct ServeOptions {
    /// Run job workers inside the API process.
    pub with_worker: bool,
    /// Jobs the in-process worker runs at once.
    pub worker_concurrency: usize,
}

/// A built, bound, not yet running service.
pub struct Application {
    listener: TcpListener,
    state: AppState,
    ctx: Arc<JobContext>,
    options: ServeOptions,
}

impl Application {
    /// Builds the state and binds `settings.bind` (port 0 picks a free port).
    pub async fn build(settings: Settings, options: ServeOptions) -> anyhow::Result<Application> {
        refuse_development_defaults(&settings)?;
        let bind = settings.bind;
        let (state, ctx) = build_state(settings).await?;
        let listener = TcpListener::bind(bind)
            .await
            .with_context(|| format!("cannot bind {bind}"))?;
        Ok(Application {
            listener,
            state,
            ctx,
            options,
        })
    }

    /// The bound address: with port 0 in the settings, the port the OS chose.
    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    /// The state the server uses, so tests can reach its database and backends.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// A worker on this application's queue (tests drive it by hand).
    pub fn worker(&self) -> Worker {
        Worker::new(self.state.jobs.clone(), self.ctx.clone())
    }

    /// Serves until `shutdown` resolves, then shuts down gracefully.
    pub async fn run_until_stopped<F>(self, shutdown: F) -> anyhow::Result<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let (stop_tx, stop_rx) = watch::channel(false);
        let worker = self.options.with_worker.then(|| {
            let w = self.worker();
            // The in-process worker relays the outbox as well.
            tokio::spawn(self.state.outbox.clone().run_relay(stop_rx.clone()));
            tokio::spawn(w.run(self.options.worker_concurrency, stop_rx.clone()))
        });
        let app = http::router(self.state.clone());
        if let Some(bind) = self.state.settings.admin_bind {
            // The console is optional: a port already taken leaves the API
            // serving, and says why there is no console.
            match TcpListener::bind(bind).await {
                Ok(listener) => {
                    tracing::info!(addr = %listener.local_addr()?, "serving the operator console");
                    let console = http::admin::router(self.state.clone());
                    let mut stop = stop_rx.clone();
                    tokio::spawn(async move {
                        let served = axum::serve(
                            listener,
                            console.into_make_service_with_connect_info::<SocketAddr>(),
                        )
                        .with_graceful_shutdown(async move {
                            let _ = stop.changed().await;
                        })
                        .await;
                        if let Err(e) = served {
                            tracing::error!(error = %e, "operator console failed");
                        }
                    });
                }
                Err(e) => tracing::error!(%bind, error = %e, "no operator console: cannot bind"),
            }
        }
        if let Some(bind) = self.state.settings.metrics_bind {
            let listener = TcpListener::bind(bind)
                .await
                .with_context(|| format!("cannot bind the metrics listener {bind}"))?;
            tracing::info!(addr = %listener.local_addr()?, "serving /metrics");
            let metrics = http::ops::metrics_router(self.state.clone());
            let mut stop = stop_rx.clone();
            tokio::spawn(async move {
                let served = axum::serve(listener, metrics)
                    .with_graceful_shutdown(async move {
                        let _ = stop.changed().await;
                    })
                    .await;
                if let Err(e) = served {
                    tracing::error!(error = %e, "metrics listener failed");
                }
            });
        }
        tracing::info!(addr = %self.listener.local_addr()?, embedded = self.state.settings.is_embedded(),
            workers = self.options.with_worker, "serving");
        let mut stop_wait = stop_rx.clone();
        axum::serve(
            self.listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            tokio::select! {
                _ = shutdown => {}
                _ = stop_wait.changed() => {}
            }
        })
        .await
        .context("server error")?;
        tracing::info!("no longer accepting; in-flight requests done");
        let _ = stop_tx.send(true);
        if let Some(w) = worker {
            let _ = tokio::time::timeout(Duration::from_secs(60), w).await;
        }
        // In-process view counters live in memory: write them out before exit.
        if self.state.settings.is_embedded()
            && let Err(e) = self.state.views.flush().await
        {
            tracing::error!(error = format!("{e:#}"), "final view flush failed");
        }
        self.state.db.close().await;
        Ok(())
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    tracing::info!("shutdown signal received");
}
