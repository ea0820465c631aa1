//! The cache role's operator capability, used by the console (and meant
//! for the CLI's `cache` commands as well): hit counts per family, and
//! invalidation of a family by name.

use std::collections::BTreeMap;
use std::time::Duration;

use super::Cache;
use super::policy::FAMILIES;
use crate::kv::keys::Namespace;

/// The outcomes counted per family.
pub const OUTCOMES: [&str; 4] = ["near_hit", "hit", "miss", "error"];

/// How long a read refreshes a shared counter for (as `stats` writes it).
const STATS_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

impl Cache {
    /// Hits, misses and errors per family so far: the counters shared by
    /// every instance plus this instance's counts not yet added to them.
    pub async fn hit_counts(&self) -> anyhow::Result<BTreeMap<String, BTreeMap<String, u64>>> {
        let _moving = self.stats().moving.read().await;
        let local = self.stats().snapshot();
        let mut out = BTreeMap::new();
        for family in FAMILIES {
            let mut outcomes = BTreeMap::new();
            for outcome in OUTCOMES {
                let shared = self
                    .store()
                    .incr(&self.keys().cache_stats(family, outcome), 0, STATS_TTL)
                    .await?;
                let pending = local.get(&(family, outcome)).copied().unwrap_or(0);
                outcomes.insert(
                    outcome.to_owned(),
                    u64::try_from(shared).unwrap_or(0) + pending,
                );
            }
            out.insert(family.to_owned(), outcomes);
        }
        Ok(out)
    }

    /// Makes every entry of the family `name` stale on every instance;
    /// `Ok(false)` for a name that is no family. Every property family
    /// (lists, featured, details, dashboards' recommendations) depends on
    /// one generation today, so any of them invalidates all four.
    pub async fn invalidate_family(&self, name: &str) -> anyhow::Result<bool> {
        if !FAMILIES.contains(&name) {
            return Ok(false);
        }
        self.invalidate(Namespace::Properties).await?;
        Ok(true)
    }
}
