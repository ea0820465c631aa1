//! What a role's Redis URL names: one server, a Redis Cluster, or a
//! Sentinel-managed master.
//!
//! | URL | meaning |
//! |---|---|
//! | `redis://[user:pass@]HOST[:PORT][/DB]`, `rediss://…` | one server (TLS with `rediss`) |
//! | `redis+cluster://[user:pass@]HOST:PORT[,HOST:PORT…]`, `rediss+cluster://…` | a cluster, by seed nodes; DB 0 only |
//! | `redis+sentinel://[user:pass@]HOST:PORT[,HOST:PORT…]/MASTER[/DB]`, `rediss+sentinel://…` | the master the sentinels name `MASTER` (sentinels and master over TLS with `rediss`) |
//!
//! Credentials in a cluster URL are those of every node; in a Sentinel URL
//! those of the master (the sentinels are reached without). Ports default
//! to 6379 (26379 for sentinels). Error messages never repeat the URL: it
//! may hold a password.

/// A parsed role URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// One server: the URL as given (`redis://` or `rediss://`).
    Standalone(String),
    /// Seed nodes of a cluster, each as a `redis://` (or `rediss://`) URL
    /// carrying the credentials.
    Cluster { nodes: Vec<String> },
    /// A master watched by sentinels.
    Sentinel(SentinelTarget),
}

/// The parts of a `redis+sentinel://` URL.
#[derive(Clone, PartialEq, Eq)]
pub struct SentinelTarget {
    /// `rediss+sentinel://`: the sentinels and the master over TLS.
    pub tls: bool,
    pub sentinels: Vec<(String, u16)>,
    pub master: String,
    pub db: Option<i64>,
    pub username: Option<String>,
    pub password: Option<String>,
}

impl std::fmt::Debug for SentinelTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentinelTarget")
            .field("tls", &self.tls)
            .field("sentinels", &self.sentinels)
            .field("master", &self.master)
            .field("db", &self.db)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish()
    }
}

impl Target {
    /// A short word for logs: `standalone`, `cluster` or `sentinel`.
    pub fn kind(&self) -> &'static str {
        match self {
            Target::Standalone(_) => "standalone",
            Target::Cluster { .. } => "cluster",
            Target::Sentinel(_) => "sentinel",
        }
    }
}

/// The scheme of `url`, lower-cased, if it has one.
fn scheme(url: &str) -> Option<(String, &str)> {
    let (scheme, rest) = url.split_once("://")?;
    Some((scheme.to_ascii_lowercase(), rest))
}

/// Parses a role URL; the message of an error does not contain the URL.
pub fn parse(url: &str) -> Result<Target, String> {
    const EXPECTED: &str = "expected a redis://, rediss://, redis+cluster://, \
                            rediss+cluster://, redis+sentinel:// or rediss+sentinel:// URL";
    let url = url.trim();
    let Some((scheme, rest)) = scheme(url) else {
        return Err(EXPECTED.to_owned());
    };
    match scheme.as_str() {
        // redis-rs reads `#insecure` as "skip the certificate checks".
        "redis" | "rediss" if url.contains('#') => Err(
            "URL fragments are refused (`#insecure` would turn the certificate checks \
             off): give a private CA in STAYAFRICA_REDIS_TLS_CA_FILE instead"
                .to_owned(),
        ),
        "redis" | "rediss" => match redis::parse_redis_url(url) {
            Some(_) => Ok(Target::Standalone(url.to_owned())),
            None => Err(EXPECTED.to_owned()),
        },
        "redis+cluster" | "rediss+cluster" => {
            let node_scheme = scheme.trim_end_matches("+cluster");
            let (userinfo, hosts, path) = split(rest)?;
            if !path.trim_matches('/').is_empty() && path.trim_matches('/') != "0" {
                return Err("a Redis Cluster has only DB 0: remove the /DB from the URL".into());
            }
            let nodes = hosts
                .split(',')
                .map(|h| node(h, 6379))
                .collect::<Result<Vec<_>, _>>()?;
            let auth = userinfo.map(|u| format!("{u}@")).unwrap_or_default();
            let nodes = nodes
                .into_iter()
                .map(|(host, port)| format!("{node_scheme}://{auth}{host}:{port}"))
                .collect::<Vec<_>>();
            for n in &nodes {
                if redis::parse_redis_url(n).is_none() {
                    return Err("invalid credentials or host in the cluster URL".into());
                }
            }
            Ok(Target::Cluster { nodes })
        }
        "redis+sentinel" | "rediss+sentinel" => {
            let (userinfo, hosts, path) = split(rest)?;
            let sentinels = hosts
                .split(',')
                .map(|h| node(h, 26379))
                .collect::<Result<Vec<_>, _>>()?;
            let mut parts = path.trim_matches('/').split('/');
            let master = parts.next().unwrap_or_default().to_owned();
            if master.is_empty() {
                return Err(
                    "a Sentinel URL names its master: redis+sentinel://HOST:PORT/NAME".into(),
                );
            }
            let db = match parts.next() {
                None | Some("") => None,
                Some(d) => Some(
                    d.parse::<i64>()
                        .map_err(|_| "the DB after the master name must be a number".to_owned())?,
                ),
            };
            if parts.next().is_some() {
                return Err("a Sentinel URL's path is /MASTER or /MASTER/DB".into());
            }
            let (username, password) = match userinfo {
                None => (None, None),
                Some(u) => {
                    let (user, pass) = match u.split_once(':') {
                        Some((user, pass)) => (user, Some(pass)),
                        None => (u, None),
                    };
                    let decode = |s: &str| {
                        url::form_urlencoded::parse(format!("x={s}").as_bytes())
                            .next()
                            .map(|(_, v)| v.into_owned())
                            .unwrap_or_default()
                    };
                    (
                        Some(decode(user)).filter(|u| !u.is_empty()),
                        pass.map(decode),
                    )
                }
            };
            Ok(Target::Sentinel(SentinelTarget {
                tls: scheme == "rediss+sentinel",
                sentinels,
                master,
                db,
                username,
                password,
            }))
        }
        _ => Err(EXPECTED.to_owned()),
    }
}

/// Whether `url` (a role URL or one node of a cluster) uses TLS:
/// `rediss://`, `rediss+cluster://` or `rediss+sentinel://`.
pub fn is_tls(url: &str) -> bool {
    scheme(url.trim()).is_some_and(|(s, _)| s.starts_with("rediss"))
}

/// `[userinfo@]hosts[/path]` (no query string).
fn split(rest: &str) -> Result<(Option<&str>, &str, &str), String> {
    if rest.contains('?') || rest.contains('#') {
        return Err(
            "query parameters and fragments (such as #insecure) are not supported \
                    in a cluster or Sentinel URL"
                .into(),
        );
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let (userinfo, hosts) = match authority.rfind('@') {
        Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
        None => (None, authority),
    };
    if hosts.is_empty() {
        return Err("the URL names no host".into());
    }
    Ok((userinfo, hosts, path))
}

/// One `HOST[:PORT]` (IPv6 in brackets), with `default` as the port.
fn node(s: &str, default: u16) -> Result<(String, u16), String> {
    let s = s.trim();
    let bad = || "each node must be HOST:PORT".to_owned();
    if s.is_empty() {
        return Err(bad());
    }
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(bad)?;
        match after.strip_prefix(':') {
            Some(p) => (format!("[{host}]"), Some(p)),
            None if after.is_empty() => (format!("[{host}]"), None),
            None => return Err(bad()),
        }
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), Some(p)),
            None => (s.to_owned(), None),
        }
    };
    if host.is_empty() || host.contains(['/', '@', ' ']) {
        return Err(bad());
    }
    let port = match port {
        Some(p) => p.parse::<u16>().map_err(|_| bad())?,
        None => default,
    };
    Ok((host, port))
}

/// `url` with any password replaced by `***`, for messages and logs; works
/// on every scheme above (several hosts included).
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<invalid URL>".to_owned();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    match authority.rfind('@') {
        Some(at) => {
            let userinfo = &authority[..at];
            let user = match userinfo.split_once(':') {
                Some((user, _)) => format!("{user}:***"),
                None => userinfo.to_owned(),
            };
            format!("{scheme}://{user}@{}{tail}", &authority[at + 1..])
        }
        None => url.to_owned(),
    }
}

/// `base` on the guide's DB `db` unless it names one (or cannot have one:
/// a cluster has only DB 0, so there the roles are kept apart by their key
/// namespaces alone).
pub fn with_db(base: &str, db: u8) -> Result<String, String> {
    match parse(base)? {
        Target::Standalone(_) => {
            let mut url =
                url::Url::parse(base).map_err(|_| "expected a redis:// URL".to_owned())?;
            if url.path().trim_matches('/').is_empty() {
                url.set_path(&format!("/{db}"));
            }
            Ok(url.to_string())
        }
        Target::Cluster { .. } => Ok(base.to_owned()),
        Target::Sentinel(s) => {
            if s.db.is_some() {
                Ok(base.to_owned())
            } else {
                Ok(format!("{}/{db}", base.trim_end_matches('/')))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_kind() {
        assert_eq!(
            parse("redis://127.0.0.1:6379/2"),
            Ok(Target::Standalone("redis://127.0.0.1:6379/2".into()))
        );
        assert_eq!(
            parse("redis+cluster://:s3cret@10.0.0.1:7000,10.0.0.2:7001,node3"),
            Ok(Target::Cluster {
                nodes: vec![
                    "redis://:s3cret@10.0.0.1:7000".into(),
                    "redis://:s3cret@10.0.0.2:7001".into(),
                    "redis://:s3cret@node3:6379".into(),
                ]
            })
        );
        assert_eq!(
            parse("rediss+cluster://[::1]:7000"),
            Ok(Target::Cluster {
                nodes: vec!["rediss://[::1]:7000".into()]
            })
        );
        let Ok(Target::Sentinel(s)) = parse("redis+sentinel://u:p%40ss@h1:26379,h2/mymaster/3")
        else {
            panic!("not a sentinel target");
        };
        assert_eq!(
            s.sentinels,
            vec![("h1".into(), 26379), ("h2".into(), 26379)]
        );
        assert_eq!(s.master, "mymaster");
        assert_eq!(s.db, Some(3));
        assert_eq!(s.username.as_deref(), Some("u"));
        assert_eq!(s.password.as_deref(), Some("p@ss"));
        assert!(!format!("{s:?}").contains("p@ss"));
        assert!(!s.tls);
        let Ok(Target::Sentinel(s)) = parse("rediss+sentinel://h1:26380/mymaster") else {
            panic!("not a sentinel target");
        };
        assert!(s.tls && s.master == "mymaster");
    }

    #[test]
    fn refuses_bad_urls_without_repeating_them() {
        for bad in [
            "http://x",
            "redis+cluster://",
            "redis+cluster://h:notaport",
            "redis+cluster://:pw@h:7000/3",
            "redis+cluster://h:7000?protocol=resp3",
            "redis+sentinel://:pw@h:26379",
            "redis+sentinel://h:26379/m/x",
            "redis+sentinel://h:26379,,h2/m",
            "rediss://:pw@h:6380/#insecure",
            "rediss+cluster://:pw@h:7000#insecure",
            "nonsense",
        ] {
            let e = match parse(bad) {
                Err(e) => e,
                Ok(t) => panic!("{bad} parsed as {t:?}"),
            };
            assert!(!e.contains("pw") && !e.contains(bad), "{bad}: {e}");
        }
    }

    #[test]
    fn redacts_passwords_of_every_kind() {
        assert_eq!(
            redact("redis+cluster://user:pw@h1:1,h2:2"),
            "redis+cluster://user:***@h1:1,h2:2"
        );
        assert_eq!(
            redact("redis+sentinel://:pw@h1:1/master/2"),
            "redis+sentinel://:***@h1:1/master/2"
        );
        assert_eq!(redact("redis://h:1/0"), "redis://h:1/0");
        assert_eq!(redact("redis://:pw@h:1/0"), "redis://:***@h:1/0");
    }

    #[test]
    fn guide_dbs_only_where_there_are_dbs() {
        assert_eq!(
            with_db("redis://127.0.0.1:6379", 2).as_deref(),
            Ok("redis://127.0.0.1:6379/2")
        );
        assert_eq!(
            with_db("redis+cluster://h:7000,h:7001", 2).as_deref(),
            Ok("redis+cluster://h:7000,h:7001")
        );
        assert_eq!(
            with_db("redis+sentinel://h:26379/m", 2).as_deref(),
            Ok("redis+sentinel://h:26379/m/2")
        );
        assert_eq!(
            with_db("redis+sentinel://h:26379/m/5", 2).as_deref(),
            Ok("redis+sentinel://h:26379/m/5")
        );
    }
}
