//! The outbox: what a write must cause outside its own transaction —
//! cache invalidations, the booking confirmation job — recorded in that
//! transaction by database triggers (`migrations/*/0022_outbox.sql`), so
//! that no write path can forget it and no crash can lose it.
//!
//! The request that wrote applies its facts at once ([`Outbox::settle`],
//! today's fast path) and deletes their rows; it answers 2xx only once the
//! facts that make the write visible are applied (else 503 with
//! `details.stored = true`: the write stands, the relay makes it visible).
//! The relay ([`Outbox::run_relay`], in every worker) applies whatever is
//! left — a failed bump, a cancelled request, a killed process — within
//! seconds, at least once: every effect is idempotent (a generation bump
//! makes entries stale however often it lands; the confirmation job mails
//! a booking once).

use std::collections::HashSet;
use std::time::Duration;

use tokio::sync::watch;

use crate::cache::policy::Shown;
use crate::cache::{Cache, Event};
use crate::db::Db;
use crate::db::outbox::OutboxRow;
use crate::jobs::{Job, JobQueue};

/// A fact a write records (the triggers' `event` and `subject`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fact {
    /// A property was created, changed or deleted; where it was and is
    /// shown when the writer knows (the relay, reading rows, does not:
    /// then everything derived from properties is invalidated).
    PropertyChanged {
        id: i64,
        before: Option<Shown>,
        after: Option<Shown>,
    },
    /// A booking of this guest was made or its status changed.
    BookingChanged { guest_id: i64 },
    /// A booking was made: its confirmation is mailed.
    BookingCreated(i64),
}

impl Fact {
    fn event(self) -> &'static str {
        match self {
            Fact::PropertyChanged { .. } => "property_changed",
            Fact::BookingChanged { .. } => "booking_changed",
            Fact::BookingCreated(_) => "booking_created",
        }
    }

    fn subject(self) -> i64 {
        match self {
            Fact::PropertyChanged { id, .. } | Fact::BookingCreated(id) => id,
            Fact::BookingChanged { guest_id } => guest_id,
        }
    }

    fn from_row(row: &OutboxRow) -> Option<Fact> {
        match row.event.as_str() {
            "property_changed" => Some(Fact::PropertyChanged {
                id: row.subject,
                before: None,
                after: None,
            }),
            "booking_changed" => Some(Fact::BookingChanged {
                guest_id: row.subject,
            }),
            "booking_created" => Some(Fact::BookingCreated(row.subject)),
            _ => None,
        }
    }

    /// What the fact causes: a cache event (the cache's policy says what
    /// it makes stale), or a job.
    fn effect(self) -> Effect {
        match self {
            Fact::PropertyChanged {
                before: None,
                after: None,
                ..
            } => Effect::Cache(Event::PropertiesChanged),
            Fact::PropertyChanged { id, before, after } => {
                Effect::Cache(Event::PropertyChanged { id, before, after })
            }
            Fact::BookingChanged { guest_id } => Effect::Cache(Event::BookingChanged { guest_id }),
            Fact::BookingCreated(booking_id) => {
                Effect::Job(Job::BookingConfirmation { booking_id })
            }
        }
    }
}

#[derive(Debug, Clone)]
enum Effect {
    /// Makes the write visible: a 2xx waits for it.
    Cache(Event),
    /// A follow-up: the relay retries it, the answer does not wait.
    Job(Job),
}

/// The write could be stored but not yet made visible everywhere.
#[derive(Debug, thiserror::Error)]
#[error("stored, not yet visible everywhere")]
pub struct NotYetVisible;

/// How often a request tries to apply a fact before it answers 503.
const SETTLE_TRIES: u32 = 3;

/// Rows younger than this are left to the request that wrote them.
const RELAY_GRACE: Duration = Duration::from_secs(1);

/// How often the relay looks.
const RELAY_PERIOD: Duration = Duration::from_secs(1);

/// Rows the relay applies per round.
const RELAY_BATCH: i64 = 1000;

/// The outbox of one process.
#[derive(Clone)]
pub struct Outbox {
    db: Db,
    cache: Cache,
    jobs: JobQueue,
}

impl Outbox {
    /// The outbox over these parts.
    pub fn new(db: Db, cache: Cache, jobs: JobQueue) -> Self {
        Outbox { db, cache, jobs }
    }

    /// Applies the facts a request's write recorded, in a task of its own
    /// (a cancelled request still applies them), and deletes their rows.
    /// `Err` when an effect that makes the write visible could not be
    /// applied in a few tries: its rows stay for the relay.
    pub async fn settle(&self, facts: &[Fact]) -> Result<(), NotYetVisible> {
        let this = self.clone();
        let facts = facts.to_vec();
        tokio::spawn(async move { this.settle_now(&facts).await })
            .await
            .unwrap_or(Err(NotYetVisible))
    }

    async fn settle_now(&self, facts: &[Fact]) -> Result<(), NotYetVisible> {
        let mut visible = true;
        for fact in facts {
            // The rows committed before the effect: it covers them.
            let ids = match self.db.outbox_ids(fact.event(), fact.subject()).await {
                Ok(ids) => ids,
                Err(e) => {
                    tracing::warn!(error = format!("{e:#}"), "outbox rows not read");
                    Vec::new()
                }
            };
            let effect = fact.effect();
            let mut done = false;
            for attempt in 0..SETTLE_TRIES {
                if attempt > 0 {
                    tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
                }
                match self.apply(&effect).await {
                    Ok(()) => {
                        done = true;
                        break;
                    }
                    Err(e) => tracing::warn!(
                        ?fact,
                        error = format!("{e:#}"),
                        "outbox effect not applied; the relay will"
                    ),
                }
                if matches!(effect, Effect::Job(_)) {
                    // A follow-up does not hold the answer: the relay retries.
                    break;
                }
            }
            if done {
                // Off the answer's path: a row left over only costs the
                // relay an idempotent second application.
                if !ids.is_empty() {
                    let db = self.db.clone();
                    tokio::spawn(async move {
                        if let Err(e) = db.outbox_delete(&ids).await {
                            tracing::warn!(
                                error = format!("{e:#}"),
                                "applied outbox rows not deleted"
                            );
                        }
                    });
                }
            } else if matches!(effect, Effect::Cache(_)) {
                visible = false;
            }
        }
        if visible { Ok(()) } else { Err(NotYetVisible) }
    }

    async fn apply(&self, effect: &Effect) -> anyhow::Result<()> {
        match effect {
            Effect::Cache(event) => self.cache.happened(*event).await,
            Effect::Job(job) => self.jobs.enqueue(job).await.map(|_| ()),
        }
    }

    /// One round of the relay: applies the rows older than the grace the
    /// requests get (each distinct effect once) and deletes those whose
    /// effect landed. Returns how many rows it applied.
    pub async fn relay_once(&self) -> anyhow::Result<usize> {
        let before = now_ms() - i64::try_from(RELAY_GRACE.as_millis()).unwrap_or(0);
        let rows = self.db.outbox_batch(before, RELAY_BATCH).await?;
        let mut applied = Vec::new();
        // Effects by their text: the same event or job is applied once.
        let mut failed: HashSet<String> = HashSet::new();
        let mut done: HashSet<String> = HashSet::new();
        for row in &rows {
            let Some(fact) = Fact::from_row(row) else {
                tracing::warn!(event = row.event, "unknown outbox event; dropped");
                applied.push(row.id);
                continue;
            };
            let effect = fact.effect();
            let name = format!("{effect:?}");
            if done.contains(&name) {
                applied.push(row.id);
                continue;
            }
            if failed.contains(&name) {
                continue;
            }
            match self.apply(&effect).await {
                Ok(()) => {
                    done.insert(name);
                    applied.push(row.id);
                }
                Err(e) => {
                    tracing::warn!(?fact, error = format!("{e:#}"), "outbox relay: not applied");
                    failed.insert(name);
                }
            }
        }
        self.db.outbox_delete(&applied).await?;
        Ok(applied.len())
    }

    /// The relay: a round every second until `stop` turns true.
    pub async fn run_relay(self, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(RELAY_PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !*stop.borrow() {
            tokio::select! {
                _ = tick.tick() => {}
                changed = stop.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    continue;
                }
            }
            match self.relay_once().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(rows = n, "outbox relay applied what requests left"),
                Err(e) => tracing::warn!(error = format!("{e:#}"), "outbox relay round failed"),
            }
        }
    }
}

fn now_ms() -> i64 {
    crate::db::now_ms()
}
