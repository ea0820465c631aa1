//! What the service caches and what makes it stale: the families of whole
//! responses with their keys and lifetimes, and the domain events that
//! invalidate them. Handlers name an [`Entry`] or an [`Event`]; they build
//! no keys and bump no generations themselves.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;

use super::Cache;
use super::response::CachedResponse;
use crate::kv::keys::{KeyTemplate, Keys, Namespace, place_tag};

/// How long a date search may show bookings as they were: its entries are
/// keyed by the window of this length they were read in, so an entry is
/// served only within its window, whoever holds it (Redis, or a
/// near-cache that kept it from later in its TTL), and expires with it.
pub const SEARCH_WINDOW: Duration = Duration::from_secs(30);

/// The number of the current [`SEARCH_WINDOW`] since the epoch.
fn search_window() -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    now.as_secs() / SEARCH_WINDOW.as_secs()
}

/// A whole response the service caches.
#[derive(Debug, Clone, Copy)]
pub enum Entry<'a> {
    /// One page of the public property list, by its normalized query.
    PropertyList { query: &'a str, place: Place<'a> },
    /// One page of a search by dates, by its normalized query: it depends
    /// on bookings too, which do not invalidate it (a booking would
    /// otherwise make every date search of every property stale): it is
    /// kept only for the current [`SEARCH_WINDOW`] (API.md: a date search
    /// may lag bookings by up to 30 seconds; the booking itself is always
    /// checked).
    DateSearch { query: &'a str, place: Place<'a> },
    /// Every featured property.
    Featured,
    /// One property that exists, without its view count (`views` joins
    /// the live one).
    PropertyDetail(i64),
    /// One user's dashboard.
    Dashboard(i64),
}

/// Every family of [`Entry`], by name (what operators name).
pub const FAMILIES: [&str; 4] = ["property_list", "featured", "property_detail", "dashboard"];

impl Entry<'_> {
    /// The family name in metrics and hit counters.
    pub fn family(self) -> &'static str {
        match self {
            Entry::PropertyList { .. } => "property_list",
            Entry::DateSearch { .. } => "date_search",
            Entry::Featured => "featured",
            Entry::PropertyDetail(_) => "property_detail",
            Entry::Dashboard(_) => "dashboard",
        }
    }

    /// How long an entry lives if nothing makes it stale sooner (API.md:
    /// lists 10 minutes, featured and dashboards an hour).
    pub fn ttl(self) -> Duration {
        match self {
            Entry::PropertyList { .. } | Entry::PropertyDetail(_) => Duration::from_secs(600),
            Entry::DateSearch { .. } => SEARCH_WINDOW,
            Entry::Featured | Entry::Dashboard(_) => Duration::from_secs(3600),
        }
    }

    /// Its key, before the generations it depends on are read.
    fn template(self, keys: &Keys) -> KeyTemplate {
        match self {
            Entry::PropertyList { query, place } => {
                keys.property_list_template(query, place.namespace())
            }
            Entry::DateSearch { query, place } => {
                keys.date_search_template(query, search_window(), place.namespace())
            }
            Entry::Featured => keys.featured_template(),
            Entry::PropertyDetail(id) => keys.property_detail_template(id),
            Entry::Dashboard(user_id) => keys.dashboard_template(user_id),
        }
    }
}

/// Which list pages a list entry may be among: those of its city filter,
/// else of its country filter, else every list (a page filtered by price,
/// guests or dates alone may gain or lose any property).
#[derive(Debug, Clone, Copy)]
pub enum Place<'a> {
    City(&'a str),
    Country(&'a str),
    Anywhere,
}

impl Place<'_> {
    /// The place of a list query's filters.
    pub fn of<'a>(city: Option<&'a str>, country: Option<&'a str>) -> Place<'a> {
        match (city, country) {
            (Some(c), _) => Place::City(c),
            (None, Some(c)) => Place::Country(c),
            (None, None) => Place::Anywhere,
        }
    }

    fn namespace(self) -> Namespace {
        match self {
            Place::City(c) => Namespace::City(place_tag(c)),
            Place::Country(c) => Namespace::Country(place_tag(c)),
            Place::Anywhere => Namespace::Lists,
        }
    }
}

/// What of a property decides where it is shown, before or after a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Shown {
    city: u64,
    country: u64,
    featured: bool,
}

impl Shown {
    /// A property in `city`, `country`, featured or not.
    pub fn new(city: &str, country: &str, featured: bool) -> Self {
        Shown {
            city: place_tag(city),
            country: place_tag(country),
            featured,
        }
    }
}

/// Something that happened which cached entries may show the old state of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Event {
    /// Property `id` was created (`before` none), changed, or deleted
    /// (`after` none): its detail, the list pages of its city and country
    /// before and after, the unplaced lists, and the featured list and
    /// dashboards' recommendations when it is or was featured. Every other
    /// property's entries stay.
    PropertyChanged {
        id: i64,
        before: Option<Shown>,
        after: Option<Shown>,
    },
    /// Properties changed in ways not known here (a write the outbox's
    /// relay applies, an operator's request): everything derived from
    /// properties.
    PropertiesChanged,
    /// A booking of this guest was made or changed: their dashboard.
    BookingChanged { guest_id: i64 },
}

impl Event {
    /// The namespaces whose entries may show the state before the event.
    fn namespaces(self) -> Vec<Namespace> {
        match self {
            Event::PropertyChanged { id, before, after } => {
                let mut out = vec![Namespace::Property(id), Namespace::Lists];
                for shown in [before, after].into_iter().flatten() {
                    out.push(Namespace::City(shown.city));
                    out.push(Namespace::Country(shown.country));
                    if shown.featured {
                        out.push(Namespace::Featured);
                    }
                }
                out.sort_unstable_by_key(|n| format!("{n:?}"));
                out.dedup();
                out
            }
            Event::PropertiesChanged => vec![Namespace::Properties],
            Event::BookingChanged { guest_id } => vec![Namespace::User(guest_id)],
        }
    }
}

impl Cache {
    /// The stored `entry`, or `compute()`'s body stored as it (see
    /// [`Cache::response_in`]).
    pub async fn response<F, Fut>(
        &self,
        entry: Entry<'_>,
        compute: F,
    ) -> anyhow::Result<CachedResponse>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = anyhow::Result<Bytes>>,
    {
        let template = entry.template(self.keys());
        self.response_in(entry.family(), &template, entry.ttl(), compute)
            .await
    }

    /// Makes every entry that may show the state before `event` stale, on
    /// every instance, before returning `Ok`; an error means it could not
    /// be done now (this process then bypasses those entries until it is:
    /// see [`Cache::invalidate`]). Writes reach this through the outbox
    /// (`crate::outbox`), which applies it again later if it failed.
    pub async fn happened(&self, event: Event) -> anyhow::Result<()> {
        let bumps = event.namespaces().into_iter().map(|ns| self.invalidate(ns));
        futures::future::try_join_all(bumps).await.map(|_| ())
    }
}
