//! [`RedisViews`]: the [`ViewStore`] on the cache role's Redis. Every key
//! carries the hash tag `{v}` (one slot on a cluster: the scripts touch
//! several together); one Lua script per step (`lua/views_*.lua`).

use anyhow::Context;
use async_trait::async_trait;
use redis::Script;

use super::store::{SeedBasis, Seeded, Snapshot, ViewBatch, ViewStore};
use crate::kv::RedisRole;
use crate::kv::coalesce::Coalescer;
use crate::kv::keys::Keys;

/// [`ViewStore`] on the cache role's Redis.
pub struct RedisViews {
    role: RedisRole,
    keys: Keys,
    seed: Script,
    take: Script,
    ack: Script,
    /// Views counted by concurrent detail requests, one script call per round.
    counts: Coalescer<i64, i64>,
}

impl RedisViews {
    /// Counters on the cache role's connection, named by `keys`.
    pub fn new(role: RedisRole, keys: Keys) -> Self {
        RedisViews {
            counts: views_coalescer(role.clone(), keys.clone()),
            role,
            keys,
            seed: Script::new(include_str!("lua/views_seed.lua")),
            take: Script::new(include_str!("lua/views_take.lua")),
            ack: Script::new(include_str!("lua/views_ack.lua")),
        }
    }
}

/// Counts the views of every waiting detail request in one script call.
fn views_coalescer(role: RedisRole, keys: Keys) -> Coalescer<i64, i64> {
    let script = Script::new(include_str!("lua/views_count_many.lua"));
    Coalescer::spawn("views", move |ids: Vec<i64>| {
        let (role, script) = (role.clone(), script.clone());
        let (pending, shown) = (keys.views_pending(), keys.views_shown());
        async move {
            role.run(|mut conn| {
                let mut call = script.prepare_invoke();
                call.key(&pending).key(&shown);
                for id in &ids {
                    call.arg(*id);
                }
                async move { call.invoke_async::<Vec<i64>>(&mut conn).await }
            })
            .await
            .context("cannot count the views")
        }
    })
}

/// `(property id, views)` pairs from a flat `HGETALL`-style reply.
fn parse_deltas(flat: &[String]) -> anyhow::Result<Vec<(i64, i64)>> {
    let mut deltas = flat
        .chunks(2)
        .map(|pair| match pair {
            [id, n] => Ok((
                id.parse::<i64>()
                    .with_context(|| format!("bad property id {id:?} in a view batch"))?,
                n.parse::<i64>()
                    .with_context(|| format!("bad count {n:?} in a view batch"))?,
            )),
            _ => anyhow::bail!("odd view batch reply"),
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    deltas.retain(|(_, n)| *n != 0);
    deltas.sort_unstable();
    Ok(deltas)
}

/// The reply of `views_seed.lua`: `{1, shown}` or `{0, epoch, ids…}`.
fn parse_seeded(reply: &[redis::Value]) -> anyhow::Result<Seeded> {
    use redis::FromRedisValue;
    let int = |v: &redis::Value| i64::from_redis_value(v.clone()).context("bad view seed reply");
    match reply {
        [flag, shown] if int(flag)? == 1 => Ok(Seeded::Shown(int(shown)?)),
        [flag, epoch, ids @ ..] if int(flag)? == 0 => Ok(Seeded::Stale(Snapshot {
            epoch: u64::try_from(int(epoch)?).context("negative view epoch")?,
            in_flight: ids
                .iter()
                .map(|v| String::from_redis_value(v.clone()).context("bad batch id"))
                .collect::<anyhow::Result<_>>()?,
        })),
        _ => anyhow::bail!("unexpected view seed reply"),
    }
}

#[async_trait]
impl ViewStore for RedisViews {
    async fn count(&self, id: i64) -> anyhow::Result<Option<i64>> {
        let shown = self.counts.call(id).await?;
        Ok((shown >= 0).then_some(shown))
    }

    async fn seed(&self, id: i64, views: i64, basis: Option<&SeedBasis>) -> anyhow::Result<Seeded> {
        let k = &self.keys;
        let keys = [
            k.views_pending(),
            k.views_draining(),
            k.views_in_flight(),
            k.views_shown(),
            k.views_epoch(),
        ];
        let prefix = k.views_batch_prefix();
        let reply: Vec<redis::Value> = self
            .role
            .run(|mut conn| {
                let mut call = self.seed.prepare_invoke();
                for key in &keys {
                    call.key(key);
                }
                call.arg(&prefix).arg(id).arg(views);
                match basis {
                    Some(b) => {
                        call.arg(b.epoch).arg(b.stored);
                        for applied in &b.applied {
                            call.arg(applied);
                        }
                    }
                    None => {
                        call.arg("").arg(0);
                    }
                }
                async move { call.invoke_async(&mut conn).await }
            })
            .await
            .context("cannot read the shown views")?;
        parse_seeded(&reply)
    }

    async fn count_unshown(&self, id: i64) -> anyhow::Result<()> {
        let pending = self.keys.views_pending();
        self.role
            .run(|mut conn| async move {
                redis::cmd("HINCRBY")
                    .arg(&pending)
                    .arg(id)
                    .arg(1)
                    .query_async::<i64>(&mut conn)
                    .await
            })
            .await
            .context("cannot count the view")?;
        Ok(())
    }

    async fn take(&self, max: usize, start_round: bool) -> anyhow::Result<Option<ViewBatch>> {
        let new_id = uuid::Uuid::new_v4().to_string();
        let k = &self.keys;
        let prefix = k.views_batch_prefix();
        let keys = [
            k.views_pending(),
            k.views_in_flight(),
            k.views_batch(&new_id),
            k.views_draining(),
            k.views_epoch(),
            k.views_cursor(),
        ];
        let reply: Option<Vec<String>> = self
            .role
            .run(|mut conn| {
                let mut call = self.take.prepare_invoke();
                for key in &keys {
                    call.key(key);
                }
                call.arg(&prefix)
                    .arg(&new_id)
                    .arg(max.max(1))
                    .arg(if start_round { "1" } else { "0" });
                async move { call.invoke_async(&mut conn).await }
            })
            .await
            .context("cannot take the pending views")?;
        let Some((flush_id, flat)) = reply.as_deref().and_then(<[String]>::split_first) else {
            return Ok(None);
        };
        Ok(Some(ViewBatch {
            flush_id: flush_id.clone(),
            deltas: parse_deltas(flat)?,
        }))
    }

    async fn ack(&self, flush_id: &str) -> anyhow::Result<()> {
        let batch = self.keys.views_batch(flush_id);
        let (in_flight, epoch) = (self.keys.views_in_flight(), self.keys.views_epoch());
        self.role
            .run(|mut conn| async move {
                self.ack
                    .key(&in_flight)
                    .key(&batch)
                    .key(&epoch)
                    .arg(flush_id)
                    .invoke_async::<i64>(&mut conn)
                    .await
            })
            .await
            .context("cannot acknowledge the view batch")?;
        Ok(())
    }

    async fn forget(&self, id: i64) -> anyhow::Result<()> {
        let shown = self.keys.views_shown();
        self.role
            .run(|mut conn| async move {
                redis::cmd("HDEL")
                    .arg(&shown)
                    .arg(id)
                    .query_async::<i64>(&mut conn)
                    .await
            })
            .await
            .context("cannot forget the shown views")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{Seeded, Snapshot, parse_deltas, parse_seeded};
    use redis::Value;

    #[test]
    fn deltas_parse_sorted_and_reject_garbage() -> anyhow::Result<()> {
        let flat: Vec<String> = ["7", "3", "2", "1", "9", "0"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        assert_eq!(parse_deltas(&flat)?, vec![(2, 1), (7, 3)]);
        assert!(parse_deltas(&["x".to_owned(), "1".to_owned()]).is_err());
        assert!(parse_deltas(&["1".to_owned()]).is_err());
        Ok(())
    }

    #[test]
    fn seed_replies_parse() -> anyhow::Result<()> {
        assert_eq!(
            parse_seeded(&[Value::Int(1), Value::Int(42)])?,
            Seeded::Shown(42)
        );
        assert_eq!(
            parse_seeded(&[
                Value::Int(0),
                Value::Int(3),
                Value::BulkString(b"b1".to_vec())
            ])?,
            Seeded::Stale(Snapshot {
                epoch: 3,
                in_flight: vec!["b1".to_owned()]
            })
        );
        assert!(parse_seeded(&[Value::Int(2)]).is_err());
        Ok(())
    }
}
