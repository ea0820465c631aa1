//! The guide's `utils.cache_helpers` module as a typed API on [`Cache`]:
//! `cache_query_result`, `cache_view_result`, `cache_user_data` /
//! `get_user_data`, `cache_temporary_data` (with an atomic take),
//! `increment_counter`, `invalidate_cache_pattern` and
//! `invalidate_user_cache`. Values are serde types; keys come from
//! [`crate::kv::keys`]; every read is one round trip on Redis.
//!
//! Unlike the guide's helpers, none of these needs a pattern delete to stay
//! correct: query results and per-user data are keyed by generations, so
//! `invalidate_user_cache` (and any property write) is O(1).

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Cache, codec};
use crate::kv::keys::Namespace;

impl Cache {
    /// The guide's `cache_query_result(name, f, timeout)`: the result of
    /// `f` cached under `name` until `ttl` passes or a property changes.
    pub async fn cache_query_result<T, F, Fut>(
        &self,
        name: &str,
        ttl: Duration,
        f: F,
    ) -> anyhow::Result<T>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = anyhow::Result<T>>,
    {
        let template = self.keys().query_template(name);
        self.get_or_compute_in("query", &template, ttl, f).await
    }

    /// The guide's `cache_view_result`: a whole response body cached under a
    /// caller-independent name (the HTTP layer normalizes the query). Never
    /// use it for responses that depend on who is asking: that is
    /// [`Self::cache_user_data`].
    pub async fn cache_view_result<F, Fut>(
        &self,
        name: &str,
        ttl: Duration,
        f: F,
    ) -> anyhow::Result<Bytes>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = anyhow::Result<Bytes>>,
    {
        let template = self.keys().query_template(name);
        self.get_or_compute_bytes_in("view", &template, ttl, f)
            .await
    }

    /// The guide's `cache_user_data(user_id, data, timeout)`: stored under
    /// that user's key only, stale once [`Self::invalidate_user_cache`] runs
    /// (a booking change does it).
    pub async fn cache_user_data<T: Serialize>(
        &self,
        user_id: i64,
        name: &str,
        value: &T,
        ttl: Duration,
    ) -> anyhow::Result<()> {
        let template = self.keys().user_data_template(user_id, name);
        let generations = self.store().generations(template.generation_keys()).await?;
        let bytes = Bytes::from(serde_json::to_vec(value)?);
        self.store()
            .set(&template.render(&generations), codec::encode(&bytes), ttl)
            .await
    }

    /// The guide's `get_user_data(user_id)`: what [`Self::cache_user_data`]
    /// stored, unless it expired or was invalidated.
    pub async fn get_user_data<T: DeserializeOwned>(
        &self,
        user_id: i64,
        name: &str,
    ) -> anyhow::Result<Option<T>> {
        let template = self.keys().user_data_template(user_id, name);
        let generations = self.store().generations(template.generation_keys()).await?;
        match self.store().get(&template.render(&generations)).await? {
            Some(stored) => Ok(Some(serde_json::from_slice(&codec::decode(stored)?)?)),
            None => Ok(None),
        }
    }

    /// The guide's `invalidate_user_cache(user_id)`: everything cached for
    /// that user (dashboard, user data) becomes stale, in O(1); an error
    /// when the store cannot be reached.
    pub async fn invalidate_user_cache(&self, user_id: i64) -> anyhow::Result<()> {
        self.invalidate(Namespace::User(user_id)).await
    }

    /// The guide's `cache_temporary_data(name, value, timeout)`.
    pub async fn set_temporary<T: Serialize>(
        &self,
        name: &str,
        value: &T,
        ttl: Duration,
    ) -> anyhow::Result<()> {
        let bytes = Bytes::from(serde_json::to_vec(value)?);
        self.store()
            .set(&self.keys().temporary(name), codec::encode(&bytes), ttl)
            .await
    }

    /// Reads and deletes temporary data in one atomic step (the guide's get,
    /// compare, delete, without its race): a value is taken once.
    pub async fn take_temporary<T: DeserializeOwned>(
        &self,
        name: &str,
    ) -> anyhow::Result<Option<T>> {
        match self.store().take(&self.keys().temporary(name)).await? {
            Some(stored) => Ok(Some(serde_json::from_slice(&codec::decode(stored)?)?)),
            None => Ok(None),
        }
    }

    /// The guide's `increment_counter(name)`: adds one and returns the new
    /// count. Counters are cache data (they may be evicted): durable counts
    /// such as property views go through the view counters, which only hold
    /// deltas and are flushed to the database.
    pub async fn increment_counter(&self, name: &str, ttl: Duration) -> anyhow::Result<i64> {
        self.store().incr(&self.keys().counter(name), 1, ttl).await
    }
}
