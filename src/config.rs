//! Typed settings, layered: built-in defaults, then an optional TOML file
//! (`--config FILE`, keys are the lower-case names below without the
//! `STAYAFRICA_` prefix), then environment variables. Every value is checked
//! at boot; a bad one stops startup with a message naming the variable.
//!
//! | variable | default |
//! |---|---|
//! | `DATABASE_URL` | `sqlite://stayafrica.db` |
//! | `REDIS_URL` | unset: in-process backends |
//! | `REDIS_CACHE_URL`, `REDIS_SESSIONS_URL`, `REDIS_RATELIMIT_URL`, `REDIS_BROKER_URL` | `REDIS_URL` with the guide's DB (1, 2, 3, 0) |
//! | `STAYAFRICA_KEY_PREFIX` | `stayafrica:` |
//! | `STAYAFRICA_THROTTLE_ANON` / `_USER` / `_BOOKING` | `100/hour`, `1000/hour`, `5/hour` |
//! | `STAYAFRICA_THROTTLE_OTP` / `_LOGIN` | `5/hour`, `5/15min` |
//! | `STAYAFRICA_EMAIL` | `log` (`file:DIR`, `log`, `smtp://…`) |
//! | `STAYAFRICA_SESSION_TTL_SECS` | `1209600` (2 weeks, sliding) |
//! | `STAYAFRICA_COOKIE_SECURE` | `false` |
//! | `STAYAFRICA_TRUSTED_PROXIES` | empty (comma-separated IPs) |
//! | `STAYAFRICA_VIEW_FLUSH_SECS` | `60` |
//! | `STAYAFRICA_OTP_TTL_SECS` | `300` |
//! | `STAYAFRICA_REQUEST_TIMEOUT_MS` | `30000` |

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail};
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// The settings as read, before validation: every value a string so that a
/// bad value can be reported with the variable's name.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    #[serde(deserialize_with = "string_like")]
    bind: String,
    #[serde(deserialize_with = "string_like")]
    database_url: String,
    redis_url: Option<String>,
    redis_cache_url: Option<String>,
    redis_sessions_url: Option<String>,
    redis_ratelimit_url: Option<String>,
    redis_broker_url: Option<String>,
    #[serde(deserialize_with = "string_like")]
    key_prefix: String,
    #[serde(deserialize_with = "string_like")]
    throttle_anon: String,
    #[serde(deserialize_with = "string_like")]
    throttle_user: String,
    #[serde(deserialize_with = "string_like")]
    throttle_booking: String,
    #[serde(deserialize_with = "string_like")]
    throttle_otp: String,
    #[serde(deserialize_with = "string_like")]
    throttle_login: String,
    #[serde(deserialize_with = "string_like")]
    email: String,
    #[serde(deserialize_with = "string_like")]
    session_ttl_secs: String,
    #[serde(deserialize_with = "string_like")]
    cookie_secure: String,
    #[serde(deserialize_with = "string_like")]
    trusted_proxies: String,
    #[serde(deserialize_with = "string_like")]
    view_flush_secs: String,
    #[serde(deserialize_with = "string_like")]
    otp_ttl_secs: String,
    #[serde(deserialize_with = "string_like")]
    request_timeout_ms: String,
}

/// Environment values such as `60` or `true` arrive typed; every raw
/// setting is read as text and validated by [`Settings::validate`].
fn string_like<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        S(String),
        I(i64),
        U(u64),
        F(f64),
        B(bool),
    }
    Ok(match Raw::deserialize(d)? {
        Raw::S(s) => s,
        Raw::I(n) => n.to_string(),
        Raw::U(n) => n.to_string(),
        Raw::F(n) => n.to_string(),
        Raw::B(b) => b.to_string(),
    })
}

impl Default for RawSettings {
    fn default() -> Self {
        RawSettings {
            bind: "127.0.0.1:8000".into(),
            database_url: "sqlite://stayafrica.db".into(),
            redis_url: None,
            redis_cache_url: None,
            redis_sessions_url: None,
            redis_ratelimit_url: None,
            redis_broker_url: None,
            key_prefix: "stayafrica:".into(),
            throttle_anon: "100/hour".into(),
            throttle_user: "1000/hour".into(),
            throttle_booking: "5/hour".into(),
            throttle_otp: "5/hour".into(),
            throttle_login: "5/15min".into(),
            email: "log".into(),
            session_ttl_secs: "1209600".into(),
            cookie_secure: "false".into(),
            trusted_proxies: String::new(),
            view_flush_secs: "60".into(),
            otp_ttl_secs: "300".into(),
            request_timeout_ms: "30000".into(),
        }
    }
}

/// A rate limit: `limit` requests per `period`, sliding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub limit: u32,
    pub period: Duration,
}

impl Rate {
    /// Unchecked (a zero limit is accepted here); [`Rate::parse`] validates input.
    pub const fn new(limit: u32, period: Duration) -> Self {
        Rate { limit, period }
    }

    /// Parses `N/UNIT` or `N/kUNIT`: `100/hour`, `5/15min`, `10/s`.
    pub fn parse(s: &str) -> Result<Rate, String> {
        let expected = || format!("expected a rate like `100/hour` or `5/15min`, got `{s}`");
        let (n, per) = s.trim().split_once('/').ok_or_else(expected)?;
        let limit: u32 = n.trim().parse().map_err(|_| expected())?;
        let per = per.trim();
        let digits = per.chars().take_while(char::is_ascii_digit).count();
        let mult: u64 = if digits == 0 {
            1
        } else {
            per[..digits].parse().map_err(|_| expected())?
        };
        let unit = match &per[digits..] {
            "s" | "sec" | "second" | "seconds" => 1,
            "m" | "min" | "minute" | "minutes" => 60,
            "h" | "hour" | "hours" => 3600,
            "d" | "day" | "days" => 86400,
            _ => return Err(expected()),
        };
        if limit == 0 || mult == 0 {
            return Err(expected());
        }
        Ok(Rate {
            limit,
            period: Duration::from_secs(mult * unit),
        })
    }
}

/// Where outgoing email goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EmailSetting {
    /// One file per message in this directory.
    File(PathBuf),
    /// Logged (development only: the log then holds one-time codes).
    Log,
    /// Sent through this SMTP server URL (`smtp://` or `smtps://`).
    Smtp(String),
}

/// The four Redis roles of the guide, each with its own URL.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    pub broker: String,
    pub cache: String,
    pub sessions: String,
    pub ratelimit: String,
}

/// Rates of every rate-limited scope.
#[derive(Debug, Clone, Copy)]
pub struct Throttles {
    pub anon: Rate,
    pub user: Rate,
    pub booking: Rate,
    pub otp: Rate,
    pub login: Rate,
}

/// The validated settings of the whole service.
#[derive(Debug, Clone)]
pub struct Settings {
    pub bind: SocketAddr,
    pub database_url: String,
    /// `None`: in-process backends (the embedded default).
    pub redis: Option<RedisSettings>,
    /// Prefix of every Redis key, so several deployments or tests can share a Redis.
    pub key_prefix: String,
    pub throttles: Throttles,
    pub email: EmailSetting,
    /// Sliding lifetime of a session: each request that uses it moves its expiry this far ahead.
    pub session_ttl: Duration,
    /// Mark the session cookie `Secure` (HTTPS only); set it in production.
    pub cookie_secure: bool,
    /// Peers whose `X-Forwarded-For` is believed when finding the client IP.
    pub trusted_proxies: Vec<IpAddr>,
    /// How often counted property views are written to the database.
    pub view_flush_interval: Duration,
    /// Lifetime of a one-time login code.
    pub otp_ttl: Duration,
    /// Longest time one API request may take before it is answered 503.
    pub request_timeout: Duration,
}

const ENV_NAMES: &[(&str, &str)] = &[
    ("DATABASE_URL", "database_url"),
    ("REDIS_URL", "redis_url"),
    ("REDIS_CACHE_URL", "redis_cache_url"),
    ("REDIS_SESSIONS_URL", "redis_sessions_url"),
    ("REDIS_RATELIMIT_URL", "redis_ratelimit_url"),
    ("REDIS_BROKER_URL", "redis_broker_url"),
];

/// The environment variable an operator sets for a settings key.
fn var_name(key: &str) -> String {
    ENV_NAMES
        .iter()
        .find(|(_, k)| *k == key)
        .map(|(v, _)| (*v).to_owned())
        .unwrap_or_else(|| format!("STAYAFRICA_{}", key.to_uppercase()))
}

impl Settings {
    /// Loads defaults, then `file` if given, then the process environment.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Settings> {
        let mut fig = Figment::from(Serialized::defaults(RawSettings::default()));
        if let Some(path) = file {
            if !path.exists() {
                bail!("config file {} does not exist", path.display());
            }
            fig = fig.merge(Toml::file(path));
        }
        let raw_env = Env::raw().filter_map(|k| {
            ENV_NAMES
                .iter()
                .find(|(v, _)| k.as_str().eq_ignore_ascii_case(v))
                .map(|(_, key)| (*key).into())
        });
        // Only the STAYAFRICA_ variables we know: a stray one is not an error.
        let known: Vec<String> = serde_json::to_value(RawSettings::default())
            .ok()
            .and_then(|v| v.as_object().map(|m| m.keys().cloned().collect()))
            .unwrap_or_default();
        let prefixed = Env::prefixed("STAYAFRICA_")
            .filter(move |k| known.iter().any(|n| k.as_str().eq_ignore_ascii_case(n)));
        fig = fig.merge(raw_env).merge(prefixed);
        let raw: RawSettings = fig
            .extract()
            .map_err(|e| anyhow!("invalid configuration: {e}"))?;
        Self::validate(raw)
    }

    /// Settings from defaults and the given overrides only (no file, no
    /// environment): what tests use.
    pub fn defaults() -> Settings {
        #[allow(clippy::expect_used)]
        Self::validate(RawSettings::default()).expect("built-in defaults are valid")
    }

    fn validate(raw: RawSettings) -> anyhow::Result<Settings> {
        let bad = |key: &str, msg: String| anyhow!("{}: {msg}", var_name(key));
        let rate = |key: &str, v: &str| Rate::parse(v).map_err(|m| bad(key, m));
        let secs = |key: &str, v: &str| -> anyhow::Result<Duration> {
            match v.trim().parse::<u64>() {
                Ok(n) if n > 0 => Ok(Duration::from_secs(n)),
                _ => Err(bad(
                    key,
                    format!("expected a positive number of seconds, got `{v}`"),
                )),
            }
        };
        let bind = raw
            .bind
            .parse()
            .map_err(|_| bad("bind", format!("expected HOST:PORT, got `{}`", raw.bind)))?;
        let database_url = raw.database_url.trim().to_owned();
        if !(database_url.starts_with("sqlite:")
            || database_url.starts_with("postgres://")
            || database_url.starts_with("postgresql://"))
        {
            return Err(bad(
                "database_url",
                "expected a `sqlite://PATH` or `postgres://…` URL".to_owned(),
            ));
        }
        let redis = match raw
            .redis_url
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            None => {
                for (key, v) in [
                    ("redis_cache_url", &raw.redis_cache_url),
                    ("redis_sessions_url", &raw.redis_sessions_url),
                    ("redis_ratelimit_url", &raw.redis_ratelimit_url),
                    ("redis_broker_url", &raw.redis_broker_url),
                ] {
                    if v.is_some() {
                        return Err(bad(key, "needs REDIS_URL to be set as well".to_owned()));
                    }
                }
                None
            }
            Some(base) => {
                let role = |key: &str, own: &Option<String>, db: u8| -> anyhow::Result<String> {
                    let url = match own {
                        Some(u) => u.trim().to_owned(),
                        None => with_db(base, db).map_err(|m| bad("redis_url", m))?,
                    };
                    redis::parse_redis_url(&url)
                        .ok_or_else(|| bad(key, format!("expected a redis:// URL, got `{url}`")))?;
                    Ok(url)
                };
                Some(RedisSettings {
                    broker: role("redis_broker_url", &raw.redis_broker_url, 0)?,
                    cache: role("redis_cache_url", &raw.redis_cache_url, 1)?,
                    sessions: role("redis_sessions_url", &raw.redis_sessions_url, 2)?,
                    ratelimit: role("redis_ratelimit_url", &raw.redis_ratelimit_url, 3)?,
                })
            }
        };
        if raw.key_prefix.len() > 64 || raw.key_prefix.chars().any(|c| c.is_whitespace()) {
            return Err(bad(
                "key_prefix",
                "expected at most 64 characters, no spaces".to_owned(),
            ));
        }
        let email = match raw.email.trim() {
            "log" => EmailSetting::Log,
            s if s.starts_with("file:") && s.len() > 5 => {
                EmailSetting::File(PathBuf::from(&s[5..]))
            }
            s if s.starts_with("smtp://") || s.starts_with("smtps://") => {
                EmailSetting::Smtp(s.to_owned())
            }
            s => {
                return Err(bad(
                    "email",
                    format!("expected `log`, `file:DIR` or `smtp://…`, got `{s}`"),
                ));
            }
        };
        let cookie_secure = match raw.cookie_secure.trim() {
            "true" | "1" | "yes" => true,
            "false" | "0" | "no" | "" => false,
            s => {
                return Err(bad(
                    "cookie_secure",
                    format!("expected true or false, got `{s}`"),
                ));
            }
        };
        let trusted_proxies = raw
            .trusted_proxies
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<IpAddr>().map_err(|_| {
                    bad(
                        "trusted_proxies",
                        format!("expected IP addresses, got `{s}`"),
                    )
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Settings {
            bind,
            database_url,
            redis,
            key_prefix: raw.key_prefix,
            throttles: Throttles {
                anon: rate("throttle_anon", &raw.throttle_anon)?,
                user: rate("throttle_user", &raw.throttle_user)?,
                booking: rate("throttle_booking", &raw.throttle_booking)?,
                otp: rate("throttle_otp", &raw.throttle_otp)?,
                login: rate("throttle_login", &raw.throttle_login)?,
            },
            email,
            session_ttl: secs("session_ttl_secs", &raw.session_ttl_secs)?,
            cookie_secure,
            trusted_proxies,
            view_flush_interval: secs("view_flush_secs", &raw.view_flush_secs)?,
            otp_ttl: secs("otp_ttl_secs", &raw.otp_ttl_secs)?,
            request_timeout: match raw.request_timeout_ms.trim().parse::<u64>() {
                Ok(ms) if ms > 0 => Duration::from_millis(ms),
                _ => {
                    return Err(bad(
                        "request_timeout_ms",
                        format!(
                            "expected a positive number of milliseconds, got `{}`",
                            raw.request_timeout_ms
                        ),
                    ));
                }
            },
        })
    }

    /// True when no Redis is configured: every backend then runs in-process.
    pub fn is_embedded(&self) -> bool {
        self.redis.is_none()
    }
}

/// `redis://host:port` (or with a DB already) -> the same URL on DB `db`,
/// unless the URL names a DB itself, which then wins for every role.
fn with_db(base: &str, db: u8) -> Result<String, String> {
    let mut url =
        url::Url::parse(base).map_err(|_| format!("expected a redis:// URL, got `{base}`"))?;
    if !matches!(url.scheme(), "redis" | "rediss") {
        return Err(format!("expected a redis:// URL, got `{base}`"));
    }
    if url.path().trim_matches('/').is_empty() {
        url.set_path(&format!("/{db}"));
    }
    Ok(url.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rates() {
        assert_eq!(
            Rate::parse("100/hour"),
            Ok(Rate::new(100, Duration::from_secs(3600)))
        );
        assert_eq!(
            Rate::parse("5/15min"),
            Ok(Rate::new(5, Duration::from_secs(900)))
        );
        assert_eq!(
            Rate::parse("10/s"),
            Ok(Rate::new(10, Duration::from_secs(1)))
        );
        for bad in ["", "100", "0/hour", "x/hour", "100/fortnight", "100/0h"] {
            assert!(Rate::parse(bad).is_err(), "{bad} accepted");
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
    fn a_toml_file_overrides_defaults() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("stayafrica.toml");
        std::fs::write(
            &path,
            "throttle_anon = \"7/minute\"\nkey_prefix = \"sa2:\"\n",
        )?;
        let s = Settings::load(Some(&path))?;
        assert_eq!(s.throttles.anon, Rate::new(7, Duration::from_secs(60)));
        assert_eq!(s.key_prefix, "sa2:");
        std::fs::write(&path, "view_flush_secs = 5\ncookie_secure = true\n")?;
        let s = Settings::load(Some(&path))?;
        assert_eq!(s.view_flush_interval, Duration::from_secs(5));
        assert!(s.cookie_secure);
        std::fs::write(&path, "throttle_anonymous = \"7/minute\"\n")?;
        let err = Settings::load(Some(&path))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("throttle_anonymous"), "{err}");
        assert!(Settings::load(Some(&dir.path().join("missing.toml"))).is_err());
        Ok(())
    }

    #[test]
    fn each_role_can_have_its_own_redis() -> anyhow::Result<()> {
        let raw = RawSettings {
            redis_url: Some("redis://10.0.0.1:6379".into()),
            redis_cache_url: Some("redis://cache.internal:6380/0".into()),
            ..RawSettings::default()
        };
        let r = Settings::validate(raw)?
            .redis
            .ok_or_else(|| anyhow!("no redis"))?;
        assert_eq!(r.cache, "redis://cache.internal:6380/0");
        assert_eq!(r.sessions, "redis://10.0.0.1:6379/2");
        assert_eq!(r.ratelimit, "redis://10.0.0.1:6379/3");
        assert_eq!(r.broker, "redis://10.0.0.1:6379/0");
        let raw = RawSettings {
            redis_cache_url: Some("redis://cache.internal:6380/0".into()),
            ..RawSettings::default()
        };
        let err = Settings::validate(raw)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("REDIS_CACHE_URL"), "{err}");
        Ok(())
    }

    #[test]
    fn bad_values_name_the_variable() {
        let raw = RawSettings {
            throttle_anon: "lots".into(),
            ..RawSettings::default()
        };
        let err = Settings::validate(raw)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("STAYAFRICA_THROTTLE_ANON"), "{err}");
        let raw = RawSettings {
            database_url: "mysql://x".into(),
            ..RawSettings::default()
        };
        let err = Settings::validate(raw)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("DATABASE_URL"), "{err}");
    }
}
