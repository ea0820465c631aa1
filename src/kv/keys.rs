//! Every key this service stores, built from typed values under the
//! configured prefix and the role's namespace:
//! `{prefix}{namespace}:{hierarchical name}`. No other module formats keys.

use sha2::{Digest, Sha256};

use crate::domain::Email;

/// Key builder for one deployment (one prefix).
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

/// Sessions role: how many shards (hash tags) the sessions are spread over
/// (see the sessions section of [`Keys`]). 64: on three masters with the
/// even slot ranges of `redis-cli --cluster create` their tags fall 23, 20
/// and 21 (32 tags fall 15, 9, 8: one master would hold about half).
pub const SESSION_SHARDS: u8 = 64;
// `Keys::session` writes the shard as two digits.
const _: () = assert!(SESSION_SHARDS <= 100);

/// Cache role: a namespace of cached data, whose generation counter makes
/// every entry keyed by it stale at once when bumped. Typed, so that no key
/// is built from a free string and a namespace cannot be misspelt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Namespace {
    /// Everything derived from properties (lists, featured, details,
    /// dashboards' recommendations, the guide's query results): every
    /// entry below depends on it too, so bumping it makes them all stale
    /// (what an operator, or a change whose details are unknown, does).
    Properties,
    /// One property's detail.
    Property(i64),
    /// The list pages filtered by one city ([`place_tag`] of its name).
    City(u64),
    /// The list pages filtered by one country (no city filter).
    Country(u64),
    /// The list pages filtered by neither city nor country: any property
    /// may enter or leave them.
    Lists,
    /// The featured list and the dashboards' recommendations.
    Featured,
    /// One user's cached data (dashboard, the guide's user data).
    User(i64),
}

impl Namespace {
    /// Its name inside the generation counter's key, as parts.
    fn name(self, id: &mut itoa::Buffer) -> [&str; 2] {
        match self {
            Namespace::Properties => ["properties", ""],
            Namespace::Property(n) => ["property:", id.format(n)],
            Namespace::City(t) => ["city:", id.format(t)],
            Namespace::Country(t) => ["country:", id.format(t)],
            Namespace::Lists => ["lists", ""],
            Namespace::Featured => ["featured", ""],
            Namespace::User(n) => ["user:", id.format(n)],
        }
    }
}

/// A city's or country's tag in generation keys: the first 8 bytes of the
/// SHA-256 of its name in lower case, trimmed (the list filters match
/// names case-insensitively; a tag keeps free text out of keys).
pub fn place_tag(name: &str) -> u64 {
    let digest = Sha256::digest(name.trim().to_lowercase().as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// The strings `parts` joined, allocated once at the final size. Keys on
/// the request path are built with this rather than `format!`, whose
/// formatting machinery cost several times the copying.
fn cat(parts: &[&str]) -> String {
    let mut s = String::with_capacity(parts.iter().map(|p| p.len()).sum());
    for p in parts {
        s.push_str(p);
    }
    s
}

/// Cache role: hash tag of the generation counters (the near-cache's
/// validation reads several in one script, so they share a slot; the
/// entries keyed by them carry no tag and spread over every master).
const GEN_TAG: &str = "{g}";

/// Cache role: hash tag of the view counters (pending, draining and shown
/// hashes, in-flight set, batches, epoch): their scripts touch several.
const VIEWS_TAG: &str = "{v}";

/// Cache role: a key embedding the generations of one or more namespaces, before
/// they are read: the counters' keys and the text around each generation.
/// The cache renders it once it has read the generations (on Redis, one
/// call shared by the requests waiting together; see `cache::near`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyTemplate {
    generation_keys: Vec<String>,
    /// One more than `generation_keys`: text before, between and after.
    parts: Vec<String>,
}

impl KeyTemplate {
    fn new(generation_keys: Vec<String>, parts: Vec<String>) -> Self {
        debug_assert_eq!(parts.len(), generation_keys.len() + 1);
        KeyTemplate {
            generation_keys,
            parts,
        }
    }

    /// Keys of the generation counters the key embeds, in order.
    pub fn generation_keys(&self) -> &[String] {
        &self.generation_keys
    }

    /// Not a store key: the in-process single-flight name of this entry
    /// computed without the store (its generations cannot be read), after
    /// `writes` invalidations of this process. `~` cannot start a rendered
    /// key (they start with the prefix), so the two never share a flight
    /// unless the prefix is `~`-led, which only merges two computations of
    /// the same entry.
    pub fn uncached_flight(&self, writes: u64) -> String {
        let mut name = String::from("~");
        name.push_str(itoa::Buffer::new().format(writes));
        for part in &self.parts {
            name.push(':');
            name.push_str(part);
        }
        name
    }

    /// The key for these generations (one per generation key).
    pub fn render(&self, generations: &[u64]) -> String {
        let mut key = String::with_capacity(self.parts.iter().map(String::len).sum::<usize>() + 40);
        let mut digits = itoa::Buffer::new();
        for (i, part) in self.parts.iter().enumerate() {
            key.push_str(part);
            if let Some(g) = generations.get(i).filter(|_| i + 1 < self.parts.len()) {
                key.push_str(digits.format(*g));
            }
        }
        key
    }
}

/// A short, stable, non-reversible id for an email, so that keys carry no
/// personal data.
pub fn email_tag(email: &Email) -> String {
    let digest = Sha256::digest(email.as_str().as_bytes());
    digest[..12].iter().map(|b| format!("{b:02x}")).collect()
}

/// The hash tags of the job queue's first partitions (see `jobs_base`),
/// chosen so that a Cluster's default count, twice its masters, puts
/// exactly two partitions on each master, for 1 to 6 masters owning equal
/// contiguous slot ranges (as `redis-cli --cluster create` assigns them):
/// the first 2m tags fall two into each m-th of the 16384 slots, none
/// within 48 slots of a boundary. The plain `q{N}` tags fall 3/2/1 over
/// three masters for N < 6, one master holding half the queue. Each tag is
/// the first of `q{N}`, `q{N}-1`, `q{N}-2`, … that keeps that property
/// (found once by a search; the unit test below checks it). Fixed for
/// good: a tag that changed would strand its partition's jobs.
pub const JOB_PARTITION_TAGS: [&str; 12] = [
    "q", "q1", "q2", "q3-2", "q4", "q5", "q6-7", "q7", "q8-15", "q9-2", "q10-30", "q11-3",
];

impl Keys {
    /// Keys under `prefix`, used verbatim (include the separator: `stayafrica:`).
    pub fn new(prefix: &str) -> Self {
        Keys {
            prefix: prefix.to_owned(),
        }
    }

    /// The prefix every key starts with, as configured.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Everything of one Redis role starts with this (operators' commands
    /// list, inspect and flush under it).
    pub fn role_ns(&self, role: super::Role) -> String {
        match role {
            super::Role::Cache => self.cache_ns(),
            super::Role::Sessions => self.session_ns(),
            super::Role::RateLimit => self.ratelimit_ns(),
            super::Role::Broker => self.jobs_ns(),
        }
    }

    // ---- Cache role (owner: the cache engineer) ----------------------------
    //
    // Layout: `{prefix}cache:{guide-style name}`. The generation counters
    // carry the hash tag `{g}`: the near-cache's validation reads the
    // counters of many requests in one Lua script, and on Redis Cluster the
    // keys one script touches must share a slot. The entries keyed by them
    // carry no tag (they are read with a plain GET once the generations are
    // known), so on a cluster they spread over every master. The view
    // counters share the tag `{v}` (their scripts take the pending counts
    // and the batches together). Tags come after the guide-style name so
    // that the guide's patterns (`property:*`) still match.

    /// `{prefix}cache:` — everything of the cache role starts with this.
    pub fn cache_ns(&self) -> String {
        format!("{}cache:", self.prefix)
    }

    /// The logical (un-prefixed) cache key `name`, prefixed.
    pub fn cache(&self, name: &str) -> String {
        cat(&[&self.prefix, "cache:", name])
    }

    /// Generation counter of a cache namespace (bumped to invalidate it).
    pub fn generation(&self, ns: Namespace) -> String {
        let mut id = itoa::Buffer::new();
        let [name, id] = ns.name(&mut id);
        cat(&[&self.prefix, "cache:gen:", GEN_TAG, ":", name, id])
    }

    /// A `SCAN MATCH` pattern of every generation counter (glob characters
    /// of the prefix escaped): what a Redis that came back with older data
    /// than it acknowledged must forget (see `cache::redis`).
    pub fn generation_pattern(&self) -> String {
        let escaped: String = self
            .cache(&format!("gen:{GEN_TAG}:"))
            .chars()
            .flat_map(|c| {
                let escape = "*?[]\\".contains(c).then_some('\\');
                escape.into_iter().chain(std::iter::once(c))
            })
            .collect();
        format!("{escaped}*")
    }

    /// Whole response of the public property list for one normalized query,
    /// before the properties generation is known.
    /// `place` is the namespace of the pages it may be among (a city, a
    /// country, or every list: [`Namespace::Lists`]).
    pub fn property_list_template(&self, normalized_query: &str, place: Namespace) -> KeyTemplate {
        KeyTemplate::new(
            vec![
                self.generation(Namespace::Properties),
                self.generation(place),
            ],
            vec![
                self.cache("property:list:g"),
                ":p".to_owned(),
                cat(&[":", normalized_query]),
            ],
        )
    }

    /// One page of a search by dates for one normalized query, read in
    /// time window `window` (see `cache::policy::SEARCH_WINDOW`), before
    /// the properties generation is known. Under `property:list:` so that
    /// the guide's list patterns take it too.
    pub fn date_search_template(
        &self,
        normalized_query: &str,
        window: u64,
        place: Namespace,
    ) -> KeyTemplate {
        KeyTemplate::new(
            vec![
                self.generation(Namespace::Properties),
                self.generation(place),
            ],
            vec![
                self.cache("property:list:dates:g"),
                ":p".to_owned(),
                cat(&[
                    ":w",
                    itoa::Buffer::new().format(window),
                    ":",
                    normalized_query,
                ]),
            ],
        )
    }

    /// The featured list, before the properties generation is known.
    pub fn featured_template(&self) -> KeyTemplate {
        KeyTemplate::new(
            vec![
                self.generation(Namespace::Properties),
                self.generation(Namespace::Featured),
            ],
            vec![
                self.cache("property:list:featured:g"),
                ":f".to_owned(),
                String::new(),
            ],
        )
    }

    /// One property (its view count kept out: `views` joins the live
    /// one), before the properties generation is known. The `:n:` keeps
    /// it apart from the entries of older versions, which held the count.
    pub fn property_detail_template(&self, id: i64) -> KeyTemplate {
        KeyTemplate::new(
            vec![
                self.generation(Namespace::Properties),
                self.generation(Namespace::Property(id)),
            ],
            vec![
                self.cache("property:detail:g"),
                ":p".to_owned(),
                cat(&[":n:", itoa::Buffer::new().format(id)]),
            ],
        )
    }

    /// A user's dashboard, before the properties and user generations are
    /// known.
    pub fn dashboard_template(&self, user_id: i64) -> KeyTemplate {
        KeyTemplate::new(
            vec![
                self.generation(Namespace::Properties),
                self.generation(Namespace::Featured),
                self.generation(Namespace::User(user_id)),
            ],
            vec![
                cat(&[
                    &self.prefix,
                    "cache:user:dashboard:",
                    itoa::Buffer::new().format(user_id),
                    ":g",
                ]),
                ":f".to_owned(),
                ":u".to_owned(),
                String::new(),
            ],
        )
    }

    /// Short-lived data stored once and taken once (the guide's
    /// `cache_temporary_data`).
    pub fn temporary(&self, name: &str) -> String {
        self.cache(&format!("tmp:{name}"))
    }

    /// A counter (the guide's `increment_counter`).
    pub fn counter(&self, name: &str) -> String {
        self.cache(&format!("counter:{name}"))
    }

    /// Query results cached under a name (the guide's `cache_query_result`),
    /// before the generations are known. Such a result may show any
    /// property, so it depends on [`Namespace::Lists`], which every
    /// property's change bumps, besides the properties-wide generation.
    pub fn query_template(&self, name: &str) -> KeyTemplate {
        KeyTemplate::new(
            vec![
                self.generation(Namespace::Properties),
                self.generation(Namespace::Lists),
            ],
            vec![self.cache("query:g"), ":l".to_owned(), format!(":{name}")],
        )
    }

    /// Data cached for one user under a name (the guide's `cache_user_data`),
    /// before that user's generation is known.
    pub fn user_data_template(&self, user_id: i64, name: &str) -> KeyTemplate {
        KeyTemplate::new(
            vec![self.generation(Namespace::User(user_id))],
            vec![
                self.cache(&format!("user:data:{user_id}:u")),
                format!(":{name}"),
            ],
        )
    }

    /// Shared count of one cache outcome of a key family (see
    /// `cache::stats`); the logical part is `stats:{family}:{outcome}`.
    pub fn cache_stats(&self, family: &str, outcome: &str) -> String {
        self.cache(&format!("stats:{family}:{outcome}"))
    }

    /// The one-time login code of an email.
    pub fn otp(&self, email: &Email) -> String {
        self.cache(&format!("otp:{}", email_tag(email)))
    }

    /// The lock one process holds while it computes `value_key`, so that
    /// other processes wait for its result instead of computing it again.
    /// Hashed: value keys can be long (normalized queries).
    pub fn compute_lock(&self, value_key: &str) -> String {
        let digest = Sha256::digest(value_key.as_bytes());
        let tag: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        self.cache(&format!("lock:{tag}"))
    }

    /// Views counted but not yet written to the database (a hash: property
    /// id to count).
    pub fn views_pending(&self) -> String {
        self.cache(&format!("views:{VIEWS_TAG}:pending"))
    }

    /// Ids of the view batches taken but not yet acknowledged (a sorted set
    /// scored by the time each was taken, so the oldest comes first).
    pub fn views_in_flight(&self) -> String {
        self.cache(&format!("views:{VIEWS_TAG}:inflight"))
    }

    /// Prefix of the view batch keys; a batch is this followed by its id
    /// (scripts build them from the ids in [`Self::views_in_flight`]).
    pub fn views_batch_prefix(&self) -> String {
        self.cache(&format!("views:{VIEWS_TAG}:batch:"))
    }

    /// The views of the flush round under way not yet taken into batches
    /// (a hash: property id to views; the pending hash renamed).
    pub fn views_draining(&self) -> String {
        self.cache(&format!("views:{VIEWS_TAG}:draining"))
    }

    /// Where the next view batch continues the HSCAN of the round being
    /// flushed (a cursor string).
    pub fn views_cursor(&self) -> String {
        self.cache(&format!("views:{VIEWS_TAG}:cursor"))
    }

    /// The view count each property's detail shows (a hash: property id to
    /// the database's count plus every view not yet in it).
    pub fn views_shown(&self) -> String {
        self.cache(&format!("views:{VIEWS_TAG}:shown"))
    }

    /// Bumped by every take and ack of a view batch: a seed of a shown
    /// count read across one is refused.
    pub fn views_epoch(&self) -> String {
        self.cache(&format!("views:{VIEWS_TAG}:epoch"))
    }

    /// One view batch taken for flushing (a hash: property id to views).
    pub fn views_batch(&self, flush_id: &str) -> String {
        format!("{}{flush_id}", self.views_batch_prefix())
    }

    // ---- end of the cache role ---------------------------------------------

    // ---- Sessions role (src/sessions/redis.rs) ----
    //
    // Layout: `{prefix}session:{sNN}:{id hash}` for a session and
    // `{prefix}session:{sNN}:user:{user id}` for the index of a user's
    // sessions in shard NN. The scripts touch a session and its user's
    // index together, so on Redis Cluster the two must share a slot; but a
    // session is loaded by its hash alone (the cookie says nothing about its
    // user), so the shared hash tag can only come from the hash: the shard
    // `{sNN}`, NN = [`SESSION_SHARDS`] values taken from the hash. A user's
    // index is kept per shard, and ending all of a user's sessions runs the
    // script once per shard. The shards spread the role over
    // [`SESSION_SHARDS`] slots, so over every master of a cluster; no tag
    // holds more than its share of the sessions.

    /// `{prefix}session:` — everything of the sessions role starts with this.
    pub fn session_ns(&self) -> String {
        format!("{}session:", self.prefix)
    }

    /// The shard of a session (its hash tag), from its id hash.
    pub fn session_shard(id_hash: &str) -> u8 {
        let digest = Sha256::digest(id_hash.as_bytes());
        digest[0] % SESSION_SHARDS
    }

    /// `{prefix}session:{sNN}:` — the session keys of one shard are this
    /// followed by their id hash (the scripts build them so).
    pub fn session_shard_ns(&self, shard: u8) -> String {
        format!("{}session:{{s{shard:02}}}:", self.prefix)
    }

    /// One session, keyed by the SHA-256 of its id, never the id itself.
    pub fn session(&self, id_hash: &str) -> String {
        let shard = Self::session_shard(id_hash);
        let digits = [b'0' + shard / 10, b'0' + shard % 10];
        let digits = std::str::from_utf8(&digits).unwrap_or("00");
        cat(&[&self.prefix, "session:{s", digits, "}:", id_hash])
    }

    /// Index of a user's session hashes in one shard (same slot as the
    /// sessions it lists), so that all of them can end at once.
    pub fn user_sessions(&self, user_id: i64, shard: u8) -> String {
        format!("{}user:{user_id}", self.session_shard_ns(shard))
    }

    /// A session in the layout before the shards
    /// (`{prefix}session:{id hash}`): only read and deleted, never written,
    /// so that sessions made before the upgrade stay valid until they end.
    pub fn legacy_session(&self, id_hash: &str) -> String {
        format!("{}{id_hash}", self.session_ns())
    }

    /// A user's index in the layout before the shards
    /// (`{prefix}session:user:{id}`, members named by
    /// [`Self::legacy_session`]): only ended, never written.
    pub fn legacy_user_sessions(&self, user_id: i64) -> String {
        format!("{}user:{user_id}", self.session_ns())
    }

    // ---- Idempotency records, on the sessions role (src/idempotency) ----
    //
    // One hash per (caller, key), named by the SHA-256 of both: the key is
    // the client's own text (up to 255 characters) and the caller may be an
    // address, so neither appears in the key itself. Every script touches
    // one key: no hash tag.

    /// The record of the `Idempotency-Key` `key` sent by `caller`.
    pub fn idempotency(&self, caller: &str, key: &str) -> String {
        let digest = Sha256::new()
            .chain_update(caller)
            .chain_update([0u8])
            .chain_update(key)
            .finalize();
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        cat(&[&self.prefix, "idem:", &hex])
    }

    // ---- Rate-limit role (src/ratelimit/redis.rs) ----
    //
    // One key per (scope, subject), and every script touches one key: no
    // hash tag, so the keys spread over every slot of a cluster.

    /// `{prefix}rl:` — everything of the rate-limit role starts with this.
    pub fn ratelimit_ns(&self) -> String {
        format!("{}rl:", self.prefix)
    }

    /// Limiter state of one (scope, subject).
    pub fn ratelimit(&self, scope: &str, subject: &str) -> String {
        cat(&[&self.prefix, "rl:", scope, ":", subject])
    }

    /// `{prefix}jobs:` — everything of the broker role starts with this.
    pub fn jobs_ns(&self) -> String {
        format!("{}jobs:", self.prefix)
    }

    // ---- Jobs (broker role, src/jobs/redis.rs) ----
    // The queue is split into partitions; every key of one partition carries
    // that partition's hash tag so that all of them live in one Redis
    // Cluster slot: the Lua scripts touch several of them (and job records
    // they compute from ids) atomically. Partition 0's tag is `{q}`, the
    // tag of the queue before it was partitioned, so that jobs queued by
    // that version are partition 0's; the others are [`JOB_PARTITION_TAGS`]
    // (`{q1}`, `{q2}`, `{q3-2}`, …), then `{qN}`.

    /// `{prefix}jobs:{q}:` (partition 0) or `{prefix}jobs:{TAG}:`: the
    /// hash-tagged base of every key of partition `partition`.
    fn jobs_base(&self, partition: u16) -> String {
        match JOB_PARTITION_TAGS.get(usize::from(partition)) {
            Some(tag) => format!("{}jobs:{{{tag}}}:", self.prefix),
            None => format!("{}jobs:{{q{partition}}}:", self.prefix),
        }
    }

    /// List of ids due now (pushed left, popped right).
    pub fn jobs_ready(&self, partition: u16) -> String {
        format!("{}ready", self.jobs_base(partition))
    }

    /// Sorted set of ids waiting for their time (score: run-at, Unix ms).
    pub fn jobs_delayed(&self, partition: u16) -> String {
        format!("{}delayed", self.jobs_base(partition))
    }

    /// Sorted set of leased ids (score: lease deadline, Unix ms).
    pub fn jobs_leases(&self, partition: u16) -> String {
        format!("{}leases", self.jobs_base(partition))
    }

    /// Hash of leased ids to the worker holding each (a job is running
    /// exactly while its id is a field here).
    pub fn jobs_running(&self, partition: u16) -> String {
        format!("{}running", self.jobs_base(partition))
    }

    /// Sorted set of dead ids (score: when they died, Unix ms).
    pub fn jobs_dead(&self, partition: u16) -> String {
        format!("{}dead", self.jobs_base(partition))
    }

    /// Prefix of the job records: the record of job `id` is this plus `id`
    /// (the Lua scripts append ids they pop).
    pub fn jobs_job_prefix(&self, partition: u16) -> String {
        format!("{}job:", self.jobs_base(partition))
    }

    /// Record of one job (one string: status, attempts, payload, last
    /// error, result; see `src/jobs/record.rs`).
    pub fn jobs_job(&self, partition: u16, id: &str) -> String {
        format!("{}{id}", self.jobs_job_prefix(partition))
    }

    /// Wake-up list of a partition: enqueues push a token, idle worker
    /// processes wait on it with a blocking pop (no polling). Under the
    /// partition's hash tag, so the scripts that push or clear it stay in
    /// the partition's slot.
    pub fn jobs_wake(&self, partition: u16) -> String {
        format!("{}wake", self.jobs_base(partition))
    }

    /// The highest partition count ever used with the queue (a string, in
    /// partition 0's slot): every process serves that many partitions, so
    /// that lowering the count strands no job.
    pub fn jobs_partitions(&self) -> String {
        format!("{}partitions", self.jobs_base(0))
    }

    /// Claim marker of one period of a periodic job (SET NX; one key, in
    /// partition 0's slot whatever the partition count).
    pub fn jobs_periodic(&self, name: &str, slot: i64) -> String {
        format!("{}periodic:{name}:{slot}", self.jobs_base(0))
    }

    /// List of the job ids whose runs a diagnostic tally counted, one entry
    /// per run (probe jobs).
    pub fn jobs_tally(&self, tally: &str) -> String {
        format!("{}tally-runs:{tally}", self.jobs_base(0))
    }

    /// Hash of probe jobs' pick-up latencies (µs) by job id (diagnostics).
    pub fn jobs_tally_pickups(&self, tally: &str) -> String {
        format!("{}tally-pickup:{tally}", self.jobs_base(0))
    }
    // ---- end of Jobs ----
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis::cluster_routing::Slot;

    fn slot_of(key: &str) -> usize {
        let slot = Slot::for_key(key);
        (0..16384u16)
            .find(|s| Slot::new(*s) == Some(slot))
            .map(usize::from)
            .unwrap_or(usize::MAX)
    }

    #[test]
    fn the_default_partition_counts_put_two_partitions_on_every_master() {
        let keys = Keys::new("p:");
        assert_eq!(keys.jobs_ready(0), "p:jobs:{q}:ready");
        let slots: Vec<usize> = (0..12).map(|p| slot_of(&keys.jobs_ready(p))).collect();
        for masters in 1..=6usize {
            let mut per_master = vec![0; masters];
            for s in &slots[..2 * masters] {
                per_master[s * masters / 16384] += 1;
            }
            assert_eq!(per_master, vec![2; masters], "{masters} masters: {slots:?}");
        }
        // Past the table: the plain tags.
        assert_eq!(keys.jobs_ready(12), "p:jobs:{q12}:ready");
    }

    #[test]
    fn request_path_keys_keep_their_layout() {
        let keys = Keys::new("p:");
        for h in ["a", "b", "0f3c", "ffff"] {
            let shard = Keys::session_shard(h);
            assert_eq!(
                keys.session(h),
                format!("{}{h}", keys.session_shard_ns(shard))
            );
        }
        assert_eq!(keys.ratelimit("anon", "10.0.0.1"), "p:rl:anon:10.0.0.1");
        assert_eq!(
            keys.generation(Namespace::Properties),
            "p:cache:gen:{g}:properties"
        );
        assert_eq!(
            keys.generation(Namespace::User(7)),
            "p:cache:gen:{g}:user:7"
        );
        assert_eq!(
            keys.property_list_template("[1]", Namespace::Lists)
                .render(&[12, 4]),
            "p:cache:property:list:g12:p4:[1]"
        );
        assert_eq!(
            keys.featured_template().render(&[3, 1]),
            "p:cache:property:list:featured:g3:f1"
        );
        assert_eq!(
            keys.property_detail_template(42).render(&[5, 2]),
            "p:cache:property:detail:g5:p2:n:42"
        );
        assert_eq!(
            keys.dashboard_template(9).render(&[1, 3, 2]),
            "p:cache:user:dashboard:9:g1:f3:u2"
        );
        assert_eq!(
            keys.generation(Namespace::City(place_tag(" Nairobi "))),
            keys.generation(Namespace::City(place_tag("nairobi"))),
            "a city's tag does not depend on case or spaces"
        );
        assert_eq!(keys.generation(Namespace::Lists), "p:cache:gen:{g}:lists");
    }
}
