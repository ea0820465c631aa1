//! Typed settings, layered: built-in defaults, then an optional TOML file
//! (`--config FILE`, keys are the lower-case names below without the
//! `STAYAFRICA_` prefix), then environment variables. Every value is checked
//! at boot; a bad one stops startup with a message naming the variable and
//! where it came from (environment or file). figment extracts every value
//! into its type (durations, rates, booleans, address lists, URLs) through
//! serde: no value is read as text and parsed by hand afterwards.
//! Credentials (database, Redis and SMTP URLs) are [`SecretString`]s:
//! `Debug` of the settings and the logs never show them.
//!
//! | variable | default |
//! |---|---|
//! | `DATABASE_URL` | `sqlite://stayafrica.db` |
//! | `REDIS_URL` | unset: in-process backends (`redis://`, `rediss://`, `redis+cluster://`, `rediss+cluster://`, `redis+sentinel://`, `rediss+sentinel://`: see `kv::target`) |
//! | `REDIS_CACHE_URL`, `REDIS_SESSIONS_URL`, `REDIS_RATELIMIT_URL`, `REDIS_BROKER_URL` | `REDIS_URL` with the guide's DB (1, 2, 3, 0) where it has DBs (not on a cluster) |
//! | `STAYAFRICA_REDIS_TLS_CA_FILE` | unset: the system's roots (PEM CA of `rediss://` servers) |
//! | `STAYAFRICA_REDIS_TLS_CERT_FILE`, `STAYAFRICA_REDIS_TLS_KEY_FILE` | unset: no client certificate (PEM; mutual TLS) |
//! | `STAYAFRICA_KEY_PREFIX` | `stayafrica:` |
//! | `STAYAFRICA_THROTTLE_*` | the catalogue of limits: `ratelimit::Action` |
//! | `STAYAFRICA_EMAIL` | `log` (`file:DIR`, `log`, `smtp://…`) |
//! | `STAYAFRICA_SESSION_TTL_SECS` | `1209600` (2 weeks, sliding) |
//! | `STAYAFRICA_COOKIE_SECURE` | `false` |
//! | `STAYAFRICA_TRUSTED_PROXIES` | empty (comma-separated IPs and CIDR ranges) |
//! | `STAYAFRICA_IPV6_CLIENT_PREFIX` | `64` (IPv6 clients are limited per prefix) |
//! | `STAYAFRICA_VIEW_FLUSH_SECS` | `60` |
//! | `STAYAFRICA_OTP_TTL_SECS` | `300` |
//! | `STAYAFRICA_REQUEST_TIMEOUT_MS` | `30000` |
//! | `STAYAFRICA_MEMORY_CACHE_MB` | `256` (in-process cache bound) |
//! | `STAYAFRICA_JOB_PARTITIONS` | unset: twice the masters on a Redis Cluster, else 1 (partitions of the Redis job queue, 1 to 1024) |

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use std::sync::Arc;

use anyhow::{anyhow, bail};
use figment::Figment;
use figment::providers::{Env, Format, Toml};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};

use ipnet::IpNet;

use crate::domain::DEFAULT_IPV6_PREFIX;
use crate::kv::tls::{TlsConfig, TlsFiles};
use crate::ratelimit::{Action, Rate, Throttles};

/// The settings as the operator writes them (flat keys), each already in
/// its type; [`Settings::from_raw`] only combines them (the Redis roles).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawSettings {
    bind: SocketAddr,
    #[serde(deserialize_with = "opt_bind")]
    metrics_bind: Option<SocketAddr>,
    #[serde(deserialize_with = "opt_bind")]
    admin_bind: Option<SocketAddr>,
    #[serde(deserialize_with = "opt_secret")]
    admin_token: Option<SecretString>,
    admin_read_only: bool,
    #[serde(deserialize_with = "database_url")]
    database_url: SecretString,
    #[serde(deserialize_with = "opt_redis_url")]
    redis_url: Option<SecretString>,
    #[serde(deserialize_with = "opt_redis_url")]
    redis_cache_url: Option<SecretString>,
    #[serde(deserialize_with = "opt_redis_url")]
    redis_sessions_url: Option<SecretString>,
    #[serde(deserialize_with = "opt_redis_url")]
    redis_ratelimit_url: Option<SecretString>,
    #[serde(deserialize_with = "opt_redis_url")]
    redis_broker_url: Option<SecretString>,
    #[serde(deserialize_with = "opt_path")]
    redis_tls_ca_file: Option<PathBuf>,
    #[serde(deserialize_with = "opt_path")]
    redis_tls_cert_file: Option<PathBuf>,
    #[serde(deserialize_with = "opt_path")]
    redis_tls_key_file: Option<PathBuf>,
    #[serde(deserialize_with = "key_prefix")]
    key_prefix: String,
    throttle_anon: Rate,
    throttle_user: Rate,
    throttle_booking: Rate,
    throttle_otp: Rate,
    throttle_login: Rate,
    throttle_login_email: Rate,
    throttle_otp_client: Rate,
    throttle_register: Rate,
    throttle_property_create: Rate,
    email: Option<EmailSetting>,
    email_log_codes: bool,
    #[serde(deserialize_with = "positive_secs")]
    session_ttl_secs: Duration,
    cookie_secure: bool,
    #[serde(deserialize_with = "net_list")]
    trusted_proxies: Vec<IpNet>,
    #[serde(deserialize_with = "ipv6_prefix")]
    ipv6_client_prefix: u8,
    #[serde(deserialize_with = "positive_secs")]
    view_flush_secs: Duration,
    #[serde(deserialize_with = "positive_secs")]
    otp_ttl_secs: Duration,
    #[serde(deserialize_with = "positive_millis")]
    request_timeout_ms: Duration,
    #[serde(deserialize_with = "positive_mib")]
    memory_cache_mb: u64,
    #[serde(deserialize_with = "opt_partitions")]
    job_partitions: Option<u16>,
    near_cache_mb: u64,
}

/// Every key of [`RawSettings`]: `STAYAFRICA_` variables not listed here
/// (such as `STAYAFRICA_CONFIG` or `STAYAFRICA_LOG_FORMAT`, read elsewhere)
/// are not settings and are not an error.
const KEYS: &[&str] = &[
    "bind",
    "metrics_bind",
    "admin_bind",
    "admin_token",
    "admin_read_only",
    "database_url",
    "redis_url",
    "redis_cache_url",
    "redis_sessions_url",
    "redis_ratelimit_url",
    "redis_broker_url",
    "redis_tls_ca_file",
    "redis_tls_cert_file",
    "redis_tls_key_file",
    "key_prefix",
    "throttle_anon",
    "throttle_user",
    "throttle_booking",
    "throttle_otp",
    "throttle_login",
    "throttle_login_email",
    "throttle_otp_client",
    "throttle_register",
    "throttle_property_create",
    "email",
    "email_log_codes",
    "session_ttl_secs",
    "cookie_secure",
    "trusted_proxies",
    "ipv6_client_prefix",
    "view_flush_secs",
    "otp_ttl_secs",
    "request_timeout_ms",
    "memory_cache_mb",
    "job_partitions",
    "near_cache_mb",
];

impl Default for RawSettings {
    fn default() -> Self {
        RawSettings {
            bind: SocketAddr::from(([127, 0, 0, 1], 8000)),
            metrics_bind: None,
            admin_bind: Some(SocketAddr::from(([127, 0, 0, 1], 8001))),
            admin_token: None,
            admin_read_only: false,
            database_url: SecretString::from("sqlite://stayafrica.db"),
            redis_url: None,
            redis_cache_url: None,
            redis_sessions_url: None,
            redis_ratelimit_url: None,
            redis_broker_url: None,
            redis_tls_ca_file: None,
            redis_tls_cert_file: None,
            redis_tls_key_file: None,
            key_prefix: "stayafrica:".into(),
            throttle_anon: Action::Anon.spec().default,
            throttle_user: Action::User.spec().default,
            throttle_booking: Action::Booking.spec().default,
            throttle_otp: Action::OtpEmail.spec().default,
            throttle_login: Action::Login.spec().default,
            throttle_login_email: Action::LoginEmail.spec().default,
            throttle_otp_client: Action::OtpClient.spec().default,
            throttle_register: Action::Register.spec().default,
            throttle_property_create: Action::PropertyCreate.spec().default,
            email: None,
            email_log_codes: false,
            session_ttl_secs: Duration::from_secs(1_209_600),
            cookie_secure: false,
            trusted_proxies: Vec::new(),
            ipv6_client_prefix: DEFAULT_IPV6_PREFIX,
            view_flush_secs: Duration::from_secs(60),
            otp_ttl_secs: Duration::from_secs(300),
            request_timeout_ms: Duration::from_millis(30_000),
            memory_cache_mb: 256,
            job_partitions: None,
            near_cache_mb: 64,
        }
    }
}

fn database_url<'de, D: Deserializer<'de>>(d: D) -> Result<SecretString, D::Error> {
    let url = String::deserialize(d)?;
    let url = url.trim();
    if url.starts_with("sqlite:")
        || url.starts_with("postgres://")
        || url.starts_with("postgresql://")
    {
        Ok(SecretString::from(url))
    } else {
        // The value may hold a password: it is not repeated in the message.
        Err(de::Error::custom(
            "expected a `sqlite://PATH` or `postgres://…` URL",
        ))
    }
}

fn opt_redis_url<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SecretString>, D::Error> {
    let url = String::deserialize(d)?;
    let url = url.trim();
    if url.is_empty() {
        return Ok(None);
    }
    // The message never repeats the URL: it may hold a password.
    match crate::kv::target::parse(url) {
        Ok(_) => Ok(Some(SecretString::from(url))),
        Err(m) => Err(de::Error::custom(m)),
    }
}

/// A listen address; empty means unset.
fn opt_bind<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    let s = String::deserialize(d)?;
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    s.parse().map(Some).map_err(|_| {
        de::Error::custom(format!(
            "expected an address like `127.0.0.1:9100`, got `{s}`"
        ))
    })
}

/// A secret; empty means unset. Never repeated in messages.
fn opt_secret<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SecretString>, D::Error> {
    let s = String::deserialize(d)?;
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    if s.len() < 16 {
        return Err(de::Error::custom("expected at least 16 characters"));
    }
    Ok(Some(SecretString::from(s)))
}

/// A file path; empty means unset.
fn opt_path<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    let path = String::deserialize(d)?;
    let path = path.trim();
    Ok((!path.is_empty()).then(|| PathBuf::from(path)))
}

fn key_prefix<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let prefix = String::deserialize(d)?;
    if prefix.len() > 64 || prefix.chars().any(char::is_whitespace) {
        return Err(de::Error::custom(format!(
            "expected at most 64 characters, no spaces, got `{prefix}`"
        )));
    }
    Ok(prefix)
}

fn positive<'de, D: Deserializer<'de>>(d: D, unit: &str) -> Result<u64, D::Error> {
    match u64::deserialize(d)? {
        0 => Err(de::Error::custom(format!(
            "expected a positive number of {unit}, got 0"
        ))),
        n => Ok(n),
    }
}

fn positive_secs<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    positive(d, "seconds").map(Duration::from_secs)
}

fn positive_millis<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    positive(d, "milliseconds").map(Duration::from_millis)
}

fn positive_mib<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    positive(d, "MiB")
}

/// Partitions of the Redis job queue: 1 to 1024.
fn opt_partitions<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
    let n = u16::deserialize(d)?;
    if !(1..=1024).contains(&n) {
        return Err(de::Error::custom("expected 1 to 1024 partitions"));
    }
    Ok(Some(n))
}

/// Addresses and CIDR ranges (`10.0.0.1`, `10.0.0.0/8`, `fd00::/8`) as a
/// TOML array or, as an environment variable holds them, one
/// comma-separated string. A bare address is a range of one.
fn net_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
    fn parse<E: de::Error>(s: &str) -> Result<IpNet, E> {
        let s = s.trim();
        s.parse::<IpNet>()
            .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
            .map(|n| n.trunc())
            .map_err(|_| {
                E::custom(format!(
                    "expected IP addresses or CIDR ranges (`10.0.0.0/8`), got `{s}`"
                ))
            })
    }
    struct NetList;
    impl<'de> Visitor<'de> for NetList {
        type Value = Vec<IpNet>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("comma-separated IP addresses or CIDR ranges")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(parse)
                .collect()
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(s) = seq.next_element::<String>()? {
                out.push(parse(&s)?);
            }
            Ok(out)
        }
    }
    d.deserialize_any(NetList)
}

/// Prefix length IPv6 clients are counted by: 32 to 128.
fn ipv6_prefix<'de, D: Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
    let n = u8::deserialize(d)?;
    if !(32..=128).contains(&n) {
        return Err(de::Error::custom("expected a prefix length from 32 to 128"));
    }
    Ok(n)
}

/// Where outgoing email goes.
#[derive(Debug, Clone)]
pub enum EmailSetting {
    /// One file per message in this directory.
    File(PathBuf),
    /// Logged (development only: the log then holds one-time codes).
    Log,
    /// Sent through this SMTP server URL (`smtp://` or `smtps://`), which
    /// may hold the server's password.
    Smtp(SecretString),
}

impl<'de> Deserialize<'de> for EmailSetting {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.trim() {
            "log" => Ok(EmailSetting::Log),
            s if s.starts_with("file:") && s.len() > 5 => {
                Ok(EmailSetting::File(PathBuf::from(&s[5..])))
            }
            s if s.starts_with("smtp://") || s.starts_with("smtps://") => {
                Ok(EmailSetting::Smtp(SecretString::from(s)))
            }
            // Not echoed: a mistyped SMTP URL may still hold a password.
            _ => Err(de::Error::custom(
                "expected `log`, `file:DIR` or `smtp://…`",
            )),
        }
    }
}

/// The four Redis roles of the guide, each with its own URL (URLs may
/// carry a password, hence secret).
#[derive(Debug, Clone)]
pub struct RedisSettings {
    pub broker: SecretString,
    pub cache: SecretString,
    pub sessions: SecretString,
    pub ratelimit: SecretString,
}

/// The validated settings of the whole service. `Debug` shows no
/// credential: the URLs that may hold one are secret.
#[derive(Debug, Clone)]
pub struct Settings {
    pub bind: SocketAddr,
    /// Where `/metrics` is served instead of the API's listener (`None`:
    /// on the API's listener).
    pub metrics_bind: Option<SocketAddr>,
    /// The operator console's listener (`None`: no console).
    pub admin_bind: Option<SocketAddr>,
    /// The console's sign-in token (`None`: loopback clients only, no
    /// sign-in).
    pub admin_token: Option<SecretString>,
    /// The console shows and refuses every action.
    pub admin_read_only: bool,
    /// `sqlite://PATH` or `postgres://…` (may hold a password).
    pub database_url: SecretString,
    /// `None`: in-process backends (the embedded default).
    pub redis: Option<RedisSettings>,
    /// The CA and client certificate of `rediss://` connections, loaded
    /// and checked (`None`: the system's roots, no client certificate).
    /// Process-wide once installed: see [`crate::kv::tls`].
    pub redis_tls: Option<Arc<TlsConfig>>,
    /// Prefix of every Redis key, so several deployments or tests can share a Redis.
    pub key_prefix: String,
    pub throttles: Throttles,
    /// Where e-mail goes; `None`: not set (see [`Settings::email_backend`]).
    pub email: Option<EmailSetting>,
    /// The `log` e-mail backend writes one-time codes in clear (development
    /// only: whoever reads the log can sign in as anyone).
    pub email_log_codes: bool,
    /// Sliding lifetime of a session: each request that uses it moves its expiry this far ahead.
    pub session_ttl: Duration,
    /// Mark the session cookie `Secure` (HTTPS only); set it in production.
    pub cookie_secure: bool,
    /// Peers whose `X-Forwarded-For` is believed when finding the client
    /// address (addresses and CIDR ranges).
    pub trusted_proxies: Vec<IpNet>,
    /// IPv6 clients are counted by this many leading bits (64).
    pub ipv6_client_prefix: u8,
    /// How often counted property views are written to the database.
    pub view_flush_interval: Duration,
    /// Lifetime of a one-time login code.
    pub otp_ttl: Duration,
    /// Longest time one API request may take before it is answered 503.
    pub request_timeout: Duration,
    /// Size bound of the in-process cache (the embedded default's cache),
    /// in bytes.
    pub memory_cache_bytes: u64,
    /// Partitions of the Redis job queue; `None`: chosen from the server
    /// at startup (1 on a standalone Redis or a Sentinel's master; on a
    /// Cluster, twice its masters: `startup::default_job_partitions`).
    pub job_partitions: Option<u16>,
    /// Size bound of the near-cache of stored responses in front of a Redis
    /// cache, in bytes (0: no near-cache).
    pub near_cache_bytes: u64,
}

/// Settings whose variable has no `STAYAFRICA_` prefix (the usual names).
const ENV_NAMES: &[(&str, &str)] = &[
    ("DATABASE_URL", "database_url"),
    ("REDIS_URL", "redis_url"),
    ("REDIS_CACHE_URL", "redis_cache_url"),
    ("REDIS_SESSIONS_URL", "redis_sessions_url"),
    ("REDIS_RATELIMIT_URL", "redis_ratelimit_url"),
    ("REDIS_BROKER_URL", "redis_broker_url"),
];

/// The providers, lowest precedence first: defaults (serde's), the file,
/// the unprefixed variables, the `STAYAFRICA_` ones.
fn figment(file: Option<&Path>) -> Figment {
    let mut fig = Figment::new();
    if let Some(path) = file {
        fig = fig.merge(Toml::file_exact(path));
    }
    let raw_env = Env::raw().filter_map(|k| {
        ENV_NAMES
            .iter()
            .find(|(v, _)| k.as_str().eq_ignore_ascii_case(v))
            .map(|(_, key)| (*key).into())
    });
    let prefixed = Env::prefixed("STAYAFRICA_")
        .filter(|k| KEYS.iter().any(|n| k.as_str().eq_ignore_ascii_case(n)));
    fig.merge(raw_env).merge(prefixed)
}

/// The environment variable an operator sets for a settings key.
fn var_name(key: &str) -> String {
    ENV_NAMES
        .iter()
        .find(|(_, k)| *k == key)
        .map(|(v, _)| (*v).to_owned())
        .unwrap_or_else(|| format!("STAYAFRICA_{}", key.to_uppercase()))
}

/// How an operator finds where `key` was set: the variable
/// (`STAYAFRICA_THROTTLE_ANON (environment variable)`), the key in its
/// file (`throttle_anon in /etc/stayafrica.toml`), or the built-in default.
fn where_set(meta: Option<&figment::Metadata>, key: &str) -> String {
    match meta {
        Some(m) if m.name.contains("environment") => {
            format!("{} (environment variable)", var_name(key))
        }
        Some(m) => match &m.source {
            Some(src) => format!("{key} in {src}"),
            None => format!("{key} in {}", m.name),
        },
        None => format!("{key} (built-in default)"),
    }
}

/// figment's errors, one line each, naming the variable or file key and
/// its source: `STAYAFRICA_THROTTLE_ANON (environment variable): expected a
/// rate like …`.
fn describe(err: figment::Error) -> anyhow::Error {
    let lines: Vec<String> = err
        .into_iter()
        .map(|e| {
            let key = e.path.join(".");
            format!("{}: {}", where_set(e.metadata.as_ref(), &key), e.kind)
        })
        .collect();
    anyhow!("invalid configuration: {}", lines.join("; "))
}

/// Where `key` was set: for messages about a combination of settings.
fn source_of(fig: &Figment, key: &str) -> String {
    where_set(fig.find_metadata(key), key)
}

impl Settings {
    /// Loads defaults, then `file` if given, then the process environment.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Settings> {
        if let Some(path) = file
            && !path.exists()
        {
            bail!("config file {} does not exist", path.display());
        }
        let fig = figment(file);
        let raw: RawSettings = fig.extract().map_err(describe)?;
        Self::from_raw(raw, |key| source_of(&fig, key))
    }

    /// The built-in defaults only (no file, no environment): what tests
    /// start from.
    pub fn defaults() -> Settings {
        #[allow(clippy::expect_used)]
        Self::from_raw(RawSettings::default(), str::to_owned).expect("built-in defaults are valid")
    }

    /// Combines the typed values: the Redis role URLs default to
    /// `REDIS_URL` on the guide's DBs. `name` says where a key was set.
    fn from_raw(raw: RawSettings, name: impl Fn(&str) -> String) -> anyhow::Result<Settings> {
        let redis = match raw.redis_url {
            None => {
                for (key, v) in [
                    ("redis_cache_url", &raw.redis_cache_url),
                    ("redis_sessions_url", &raw.redis_sessions_url),
                    ("redis_ratelimit_url", &raw.redis_ratelimit_url),
                    ("redis_broker_url", &raw.redis_broker_url),
                ] {
                    if v.is_some() {
                        bail!("{}: needs REDIS_URL to be set as well", name(key));
                    }
                }
                None
            }
            Some(base) => {
                let role = |own: Option<SecretString>, db: u8| -> anyhow::Result<SecretString> {
                    match own {
                        Some(u) => Ok(u),
                        None => with_db(base.expose_secret(), db)
                            .map(SecretString::from)
                            .map_err(|m| anyhow!("{}: {m}", name("redis_url"))),
                    }
                };
                Some(RedisSettings {
                    broker: role(raw.redis_broker_url, 0)?,
                    cache: role(raw.redis_cache_url, 1)?,
                    sessions: role(raw.redis_sessions_url, 2)?,
                    ratelimit: role(raw.redis_ratelimit_url, 3)?,
                })
            }
        };
        let tls_files = TlsFiles {
            ca_file: raw.redis_tls_ca_file,
            cert_file: raw.redis_tls_cert_file,
            key_file: raw.redis_tls_key_file,
        };
        // A file left unset is named by its variable.
        let tls_name = |key: &str| {
            let set = match key {
                "redis_tls_ca_file" => tls_files.ca_file.is_some(),
                "redis_tls_cert_file" => tls_files.cert_file.is_some(),
                _ => tls_files.key_file.is_some(),
            };
            if set {
                name(key)
            } else {
                format!("{} (not set)", var_name(key))
            }
        };
        if !tls_files.is_empty() {
            let any_tls = redis.as_ref().is_some_and(|r| {
                [&r.broker, &r.cache, &r.sessions, &r.ratelimit]
                    .iter()
                    .any(|u| crate::kv::target::is_tls(u.expose_secret()))
            });
            if !any_tls {
                // Most likely a URL left on redis:// by mistake: it would
                // send everything in clear text, ignoring the files.
                bail!(
                    "{}: Redis TLS files are set, but no Redis URL uses TLS \
                     (rediss://, rediss+cluster:// or rediss+sentinel://)",
                    [
                        ("redis_tls_ca_file", tls_files.ca_file.is_some()),
                        ("redis_tls_cert_file", tls_files.cert_file.is_some()),
                        ("redis_tls_key_file", tls_files.key_file.is_some()),
                    ]
                    .iter()
                    .filter(|(_, set)| *set)
                    .map(|(key, _)| name(key))
                    .collect::<Vec<_>>()
                    .join(", ")
                );
            }
        }
        let redis_tls = TlsConfig::load(&tls_files, tls_name)?;

        Ok(Settings {
            bind: raw.bind,
            metrics_bind: raw.metrics_bind,
            admin_bind: raw.admin_bind,
            admin_token: raw.admin_token,
            admin_read_only: raw.admin_read_only,
            database_url: raw.database_url,
            redis,
            redis_tls,
            key_prefix: raw.key_prefix,
            throttles: {
                let mut t = Throttles::default();
                for (setting, rate) in [
                    ("throttle_anon", raw.throttle_anon),
                    ("throttle_user", raw.throttle_user),
                    ("throttle_booking", raw.throttle_booking),
                    ("throttle_otp", raw.throttle_otp),
                    ("throttle_login", raw.throttle_login),
                    ("throttle_login_email", raw.throttle_login_email),
                    ("throttle_otp_client", raw.throttle_otp_client),
                    ("throttle_register", raw.throttle_register),
                    ("throttle_property_create", raw.throttle_property_create),
                ] {
                    t.set_setting(setting, rate);
                }
                t
            },
            email: raw.email,
            email_log_codes: raw.email_log_codes,
            session_ttl: raw.session_ttl_secs,
            cookie_secure: raw.cookie_secure,
            trusted_proxies: raw.trusted_proxies,
            ipv6_client_prefix: raw.ipv6_client_prefix,
            view_flush_interval: raw.view_flush_secs,
            otp_ttl: raw.otp_ttl_secs,
            request_timeout: raw.request_timeout_ms,
            memory_cache_bytes: raw.memory_cache_mb.saturating_mul(1024 * 1024),
            job_partitions: raw.job_partitions,
            near_cache_bytes: raw.near_cache_mb.saturating_mul(1024 * 1024),
        })
    }

    /// True when no Redis is configured: every backend then runs in-process.
    pub fn is_embedded(&self) -> bool {
        self.redis.is_none()
    }

    /// True outside the embedded default: a PostgreSQL database or Redis,
    /// where development defaults must not apply silently.
    pub fn is_production(&self) -> bool {
        !self.is_embedded()
            || !self
                .database_url
                .expose_secret()
                .trim()
                .starts_with("sqlite:")
    }

    /// Where the processes that send e-mail (`serve`, `worker`) send it.
    /// Unset, that is the log on the embedded default; outside it, an
    /// error: the log backend would quietly deliver nothing to anyone, so
    /// it has to be chosen (`STAYAFRICA_EMAIL=log`).
    pub fn email_backend(&self) -> anyhow::Result<EmailSetting> {
        match &self.email {
            Some(e) => Ok(e.clone()),
            None if self.is_production() => bail!(
                "STAYAFRICA_EMAIL (not set): with a PostgreSQL database or Redis, choose where \
                 e-mail goes (`smtp://…`, `file:DIR`, or `log` to only log it)"
            ),
            None => Ok(EmailSetting::Log),
        }
    }
}

/// `redis://host:port` (or with a DB already) -> the same URL on DB `db`,
/// unless the URL names a DB itself, which then wins for every role; a
/// cluster URL is used as it is (DB 0 only: the roles are kept apart by
/// their key namespaces), a Sentinel URL gets the DB after the master name.
fn with_db(base: &str, db: u8) -> Result<String, String> {
    crate::kv::target::with_db(base, db)
}

#[cfg(test)]
// figment's `Jail` closures return its (large) error type.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use figment::Jail;

    /// Runs `f` with a clean, private environment and working directory
    /// (figment's `Jail` serialises the tests that change them).
    fn jailed(f: impl FnOnce(&mut Jail) -> figment::error::Result<()>) {
        Jail::expect_with(|jail| {
            jail.clear_env();
            f(jail)
        });
    }

    fn net(s: &str) -> IpNet {
        s.parse()
            .unwrap_or_else(|_| IpNet::from(IpAddr::from([0, 0, 0, 0])))
    }

    /// The error text of a failed load, or a marker when it did not fail.
    fn load_err(file: Option<&Path>) -> String {
        match Settings::load(file) {
            Ok(_) => "<loaded without error>".to_owned(),
            Err(e) => format!("{e:#}"),
        }
    }

    #[test]
    fn redis_roles_get_guide_dbs() {
        assert_eq!(
            with_db("redis://127.0.0.1:6379", 2).as_deref(),
            Ok("redis://127.0.0.1:6379/2")
        );
        assert_eq!(with_db("redis://h:1/5", 2).as_deref(), Ok("redis://h:1/5"));
        assert!(with_db("http://h", 1).is_err());
    }

    #[test]
    fn no_configuration_is_the_embedded_default() {
        jailed(|_| {
            let s = Settings::load(None).map_err(|e| e.to_string())?;
            assert!(s.is_embedded());
            assert_eq!(s.database_url.expose_secret(), "sqlite://stayafrica.db");
            assert_eq!(
                s.throttles.get(Action::Login),
                Rate::new(5, Duration::from_secs(900))
            );
            assert_eq!(s.memory_cache_bytes, 256 * 1024 * 1024);
            Ok(())
        });
    }

    #[test]
    fn a_toml_file_overrides_defaults_and_the_environment_overrides_it() {
        jailed(|jail| {
            jail.create_file(
                "stayafrica.toml",
                "throttle_anon = \"7/minute\"\nkey_prefix = \"sa2:\"\nview_flush_secs = 5\n\
                 cookie_secure = true\ntrusted_proxies = [\"10.0.0.1\"]\nmemory_cache_mb = 32\n",
            )?;
            let path = Path::new("stayafrica.toml");
            let s = Settings::load(Some(path)).map_err(|e| e.to_string())?;
            assert_eq!(
                s.throttles.get(Action::Anon),
                Rate::new(7, Duration::from_secs(60))
            );
            assert_eq!(s.key_prefix, "sa2:");
            assert_eq!(s.view_flush_interval, Duration::from_secs(5));
            assert!(s.cookie_secure);
            assert_eq!(s.trusted_proxies, vec![net("10.0.0.1/32")]);
            assert_eq!(s.memory_cache_bytes, 32 * 1024 * 1024);
            jail.set_env("STAYAFRICA_THROTTLE_ANON", "9/hour");
            jail.set_env("STAYAFRICA_COOKIE_SECURE", "false");
            jail.set_env("STAYAFRICA_TRUSTED_PROXIES", "10.0.0.2, ::1, 10.1.2.3/16");
            jail.set_env("STAYAFRICA_REQUEST_TIMEOUT_MS", "250");
            jail.set_env("STAYAFRICA_LOG_FORMAT", "json");
            let s = Settings::load(Some(path)).map_err(|e| e.to_string())?;
            assert_eq!(
                s.throttles.get(Action::Anon),
                Rate::new(9, Duration::from_secs(3600))
            );
            assert!(!s.cookie_secure);
            assert_eq!(
                s.trusted_proxies,
                vec![net("10.0.0.2/32"), net("::1/128"), net("10.1.0.0/16")]
            );
            assert_eq!(s.request_timeout, Duration::from_millis(250));
            Ok(())
        });
    }

    #[test]
    fn bad_values_name_the_key_and_its_source() {
        jailed(|jail| {
            jail.set_env("STAYAFRICA_THROTTLE_ANON", "lots");
            let err = load_err(None);
            assert!(err.contains("STAYAFRICA_THROTTLE_ANON"), "{err}");
            assert!(err.contains("environment"), "{err}");
            assert!(err.contains("100/hour"), "names the expected form: {err}");
            jail.clear_env();
            jail.set_env("STAYAFRICA_SESSION_TTL_SECS", "soon");
            let err = load_err(None);
            assert!(err.contains("STAYAFRICA_SESSION_TTL_SECS"), "{err}");
            jail.clear_env();
            jail.set_env("DATABASE_URL", "mysql://x");
            let err = load_err(None);
            assert!(err.contains("DATABASE_URL"), "{err}");
            jail.clear_env();
            jail.create_file("bad.toml", "cookie_secure = \"maybe\"\n")?;
            let err = load_err(Some(Path::new("bad.toml")));
            assert!(err.contains("cookie_secure"), "{err}");
            assert!(err.contains("bad.toml"), "names the file: {err}");
            jail.create_file("unknown.toml", "throttle_anonymous = \"7/minute\"\n")?;
            let err = load_err(Some(Path::new("unknown.toml")));
            assert!(err.contains("throttle_anonymous"), "{err}");
            assert!(Settings::load(Some(Path::new("missing.toml"))).is_err());
            Ok(())
        });
    }

    #[test]
    fn each_role_can_have_its_own_redis() {
        jailed(|jail| {
            jail.set_env("REDIS_URL", "redis://10.0.0.1:6379");
            jail.set_env("REDIS_CACHE_URL", "redis://cache.internal:6380/0");
            let r = Settings::load(None)
                .map_err(|e| e.to_string())?
                .redis
                .ok_or("no redis")?;
            assert_eq!(r.cache.expose_secret(), "redis://cache.internal:6380/0");
            assert_eq!(r.sessions.expose_secret(), "redis://10.0.0.1:6379/2");
            assert_eq!(r.ratelimit.expose_secret(), "redis://10.0.0.1:6379/3");
            assert_eq!(r.broker.expose_secret(), "redis://10.0.0.1:6379/0");
            jail.clear_env();
            jail.set_env("REDIS_CACHE_URL", "redis://cache.internal:6380/0");
            let err = load_err(None);
            assert!(err.contains("REDIS_CACHE_URL"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn cluster_and_sentinel_urls_for_every_role() {
        jailed(|jail| {
            jail.set_env(
                "REDIS_URL",
                "redis+cluster://:pw@10.0.0.1:7000,10.0.0.2:7001",
            );
            jail.set_env("REDIS_SESSIONS_URL", "redis+sentinel://s1:26379,s2/main");
            let r = Settings::load(None)
                .map_err(|e| e.to_string())?
                .redis
                .ok_or("no redis")?;
            // A cluster has only DB 0: every role on the URL as it is.
            for url in [&r.cache, &r.ratelimit, &r.broker] {
                assert_eq!(
                    url.expose_secret(),
                    "redis+cluster://:pw@10.0.0.1:7000,10.0.0.2:7001"
                );
            }
            assert_eq!(
                r.sessions.expose_secret(),
                "redis+sentinel://s1:26379,s2/main"
            );
            // A bad one names its variable, never the password it holds.
            for (var, bad) in [
                ("REDIS_URL", "redis+cluster://:s3cret@h:notaport"),
                ("REDIS_URL", "redis+cluster://:s3cret@h:7000/4"),
                ("REDIS_BROKER_URL", "redis+sentinel://:s3cret@h:26379"),
                ("REDIS_CACHE_URL", "memcached://:s3cret@h"),
            ] {
                jail.clear_env();
                jail.set_env("REDIS_URL", "redis://127.0.0.1:6379");
                jail.set_env(var, bad);
                let err = load_err(None);
                assert!(err.contains(var) && !err.contains("s3cret"), "{err}");
            }
            Ok(())
        });
    }

    #[test]
    fn bad_redis_tls_files_name_their_variable() {
        jailed(|jail| {
            jail.set_env("REDIS_URL", "rediss://:pw@redis.internal:6380");
            jail.set_env("STAYAFRICA_REDIS_TLS_CA_FILE", "missing-ca.pem");
            let err = load_err(None);
            assert!(
                err.contains("STAYAFRICA_REDIS_TLS_CA_FILE") && err.contains("missing-ca.pem"),
                "{err}"
            );
            jail.create_file("ca.pem", "not a certificate\n")?;
            jail.set_env("STAYAFRICA_REDIS_TLS_CA_FILE", "ca.pem");
            let err = load_err(None);
            assert!(
                err.contains("STAYAFRICA_REDIS_TLS_CA_FILE") && err.contains("no PEM certificate"),
                "{err}"
            );
            jail.create_file(
                "bad-ca.pem",
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            )?;
            jail.set_env("STAYAFRICA_REDIS_TLS_CA_FILE", "bad-ca.pem");
            let err = load_err(None);
            assert!(
                err.contains("STAYAFRICA_REDIS_TLS_CA_FILE") && err.contains("unusable"),
                "{err}"
            );
            // A certificate without its key (and the reverse) names both.
            jail.clear_env();
            jail.set_env("REDIS_URL", "rediss://redis.internal:6380");
            jail.set_env("STAYAFRICA_REDIS_TLS_CERT_FILE", "client.pem");
            let err = load_err(None);
            assert!(
                err.contains("STAYAFRICA_REDIS_TLS_CERT_FILE")
                    && err.contains("STAYAFRICA_REDIS_TLS_KEY_FILE"),
                "{err}"
            );
            // A key file's content never shows in the message.
            jail.create_file("key.pem", "-----BEGIN PRIVATE KEY-----\nc2VjcmV0a2V5bWF0\n")?;
            jail.create_file("file.toml", "redis_tls_key_file = \"key.pem\"\n")?;
            let err = load_err(Some(Path::new("file.toml")));
            assert!(
                err.contains("redis_tls_key_file in") && err.contains("file.toml"),
                "names the key in its file: {err}"
            );
            assert!(!err.contains("c2VjcmV0a2V5"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn redis_tls_files_without_a_tls_url_are_refused() {
        jailed(|jail| {
            jail.create_file("ca.pem", "unused\n")?;
            jail.set_env("STAYAFRICA_REDIS_TLS_CA_FILE", "ca.pem");
            jail.set_env("REDIS_URL", "redis://redis.internal:6379");
            let err = load_err(None);
            assert!(
                err.contains("STAYAFRICA_REDIS_TLS_CA_FILE") && err.contains("rediss://"),
                "{err}"
            );
            // No file named: nothing to load, the system's roots apply.
            jail.clear_env();
            jail.set_env("REDIS_URL", "rediss://redis.internal:6380");
            jail.set_env("STAYAFRICA_REDIS_TLS_CA_FILE", "");
            let s = Settings::load(None).map_err(|e| e.to_string())?;
            assert!(s.redis_tls.is_none());
            // `#insecure` (no certificate checks) is refused, naming the variable.
            jail.set_env(
                "REDIS_URL",
                "rediss://:s3cret@redis.internal:6380/#insecure",
            );
            let err = load_err(None);
            assert!(
                err.contains("REDIS_URL") && err.contains("#insecure") && !err.contains("s3cret"),
                "{err}"
            );
            Ok(())
        });
    }

    #[test]
    fn debug_of_the_settings_shows_no_credential() {
        jailed(|jail| {
            jail.set_env(
                "DATABASE_URL",
                "postgres://app:hunter2@db.internal/stayafrica",
            );
            jail.set_env("REDIS_URL", "redis://:r3dispw@redis.internal:6379");
            jail.set_env("STAYAFRICA_EMAIL", "smtp://mailer:m41lpw@smtp.internal:587");
            let s = Settings::load(None).map_err(|e| e.to_string())?;
            let shown = format!("{s:?} {s:#?}");
            for secret in ["hunter2", "r3dispw", "m41lpw"] {
                assert!(!shown.contains(secret), "{secret} shown: {shown}");
            }
            // The values are all there for the code that connects.
            assert!(s.database_url.expose_secret().contains("hunter2"));
            let r = s.redis.ok_or("no redis")?;
            assert!(r.sessions.expose_secret().contains("r3dispw"));
            // A bad value is reported without repeating it (it may hold one).
            jail.set_env("DATABASE_URL", "mysql://app:hunter2@db.internal/x");
            let err = load_err(None);
            assert!(
                err.contains("DATABASE_URL") && !err.contains("hunter2"),
                "{err}"
            );
            Ok(())
        });
    }
}
