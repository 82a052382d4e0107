//! The cluster settings (`--redis` and the rest) and where they say this
//! node finds the cluster's Redis: at one address (`redis://`,
//! `rediss://`), or through Redis Sentinel (`redis+sentinel://`,
//! `rediss+sentinel://`), which names the current master each time the node
//! connects. After a failover the node's links break (the old master died,
//! or Sentinel demoted it and closed its clients); the subscriber task's
//! next connect asks the Sentinels again and so lands on the new master,
//! where its usual resync (resubscribe, re-assert, snapshots) repairs what
//! the asynchronous replication may have lost.

use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context as _, bail};
use percent_encoding::percent_decode_str;
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{ConnectionAddr, RedisResult, TlsMode};

/// The port of a Sentinel given without one.
const SENTINEL_PORT: u16 = 26379;

/// Cluster settings from `radio serve`'s flags.
#[derive(Clone)]
pub struct Config {
    /// May hold a password: shown only through [`masked`].
    pub redis_url: String,
    pub node_id: String,
    /// Lease time: a dead node's stations go offline this long after its
    /// last renewal.
    pub lease: Duration,
    /// How long a disconnected broadcaster may resume with its token.
    pub grace: Duration,
    /// `--redis-ca-cert`: the CA a `rediss://` Redis's certificate must
    /// chain to (default: the system's roots).
    pub ca_cert: Option<std::path::PathBuf>,
    /// `--redis-password-file`: the Redis password on this file's first
    /// line (read at start), for a `redis_url` without one.
    pub password_file: Option<std::path::PathBuf>,
    /// `--redis-sentinel-password-file`: the Sentinels' own password
    /// (their `requirepass`), for a `redis+sentinel://` URL; the URL's
    /// password is the master's.
    pub sentinel_password_file: Option<std::path::PathBuf>,
    /// `--max-stations`: most stations live in the cluster at once.
    pub max_stations: usize,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("redis_url", &masked(&self.redis_url))
            .field("node_id", &self.node_id)
            .field("lease", &self.lease)
            .field("grace", &self.grace)
            .field("ca_cert", &self.ca_cert)
            .field("password_file", &self.password_file)
            .field("sentinel_password_file", &self.sentinel_password_file)
            .field("max_stations", &self.max_stations)
            .finish()
    }
}

/// The password of `--redis-password-file`, for a URL whose own password
/// is `in_url`: none without the flag; refused when both give one.
fn password_from_file(cfg: &Config, in_url: bool, shown: &str) -> anyhow::Result<Option<String>> {
    let Some(path) = &cfg.password_file else {
        return Ok(None);
    };
    if in_url {
        bail!(
            "--redis {shown} has a password and --redis-password-file gives another; leave the \
             password out of the URL"
        );
    }
    crate::key_file::read_secret(path, "--redis-password-file", "the Redis password").map(Some)
}

/// Where a password this node gives came from, to say so when it is
/// refused.
#[derive(Debug, Clone)]
pub(crate) enum Origin {
    None,
    Url,
    File(&'static str, std::path::PathBuf),
}

impl Origin {
    /// For the data nodes': the URL's, or `--redis-password-file`'s.
    fn data(cfg: &Config, in_url: bool) -> Origin {
        match (&cfg.password_file, in_url) {
            (Some(path), _) => Origin::File("--redis-password-file", path.clone()),
            (None, true) => Origin::Url,
            (None, false) => Origin::None,
        }
    }

    /// What `who` did with it: refused it, or asked for one.
    fn refused(&self, who: &str) -> String {
        match self {
            Origin::None => format!("{who} asked for a password, and none was given"),
            Origin::Url => format!("{who} refused the password in the --redis URL"),
            Origin::File(flag, path) => {
                format!("{who} refused the password in {flag} {}", path.display())
            }
        }
    }
}

/// Whether `e` is Redis refusing this node's credentials (a wrong
/// password, none where one is required, or one where none is set): no
/// retry mends that.
pub(crate) fn is_refusal(e: &redis::RedisError) -> bool {
    e.kind() == redis::ErrorKind::AuthenticationFailed
        || matches!(e.code(), Some("NOAUTH" | "WRONGPASS"))
}

/// The Redis client for `cfg`: `redis://`, or `rediss://` (TLS through
/// rustls) trusting `--redis-ca-cert` when given, with the password of
/// `--redis-password-file` when given. Errors name the URL with its
/// password masked.
fn client(cfg: &Config) -> anyhow::Result<(redis::Client, Origin)> {
    use redis::IntoConnectionInfo as _;
    let shown = masked(&cfg.redis_url);
    let url = cfg.redis_url.as_str();
    // The redis crate's own message does not repeat the URL.
    let bad_url = |e: redis::RedisError| {
        anyhow::anyhow!(
            "--redis {shown} is not a usable Redis URL ({e}); write it like \
             redis://127.0.0.1:6379/0 or rediss://host:6380/0"
        )
    };
    let mut info = url.into_connection_info().map_err(bad_url)?;
    let in_url = info.redis_settings().password().is_some();
    if cfg.sentinel_password_file.is_some() {
        bail!(
            "--redis-sentinel-password-file is for Sentinels; write the Redis URL as \
             redis+sentinel://… (it is {shown})"
        );
    }
    let origin = Origin::data(cfg, in_url);
    if let Some(password) = password_from_file(cfg, in_url, &shown)? {
        let settings = info.redis_settings().clone().set_password(password);
        info = info.set_redis_settings(settings);
    }
    let result = match &cfg.ca_cert {
        None => redis::Client::open(info),
        Some(path) => {
            if !url.starts_with("rediss://") {
                anyhow::bail!(
                    "--redis-ca-cert is for TLS connections; write the Redis URL as rediss://…                      (it is {shown})"
                );
            }
            let pem = std::fs::read(path).map_err(|e| {
                anyhow::anyhow!("cannot read --redis-ca-cert {}: {e}", path.display())
            })?;
            let certs = redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(pem),
            };
            redis::Client::build_with_tls(info, certs)
        }
    };
    result.map(|c| (c, origin)).map_err(bad_url)
}

/// A Redis URL fit to print: its password (everything of the user info
/// after the user name, or all of it when it has no `:`) replaced by `***`.
/// Works on malformed URLs too, which is when they are printed: the user
/// info ends at the last `@`, wherever it is, since a password may hold an
/// unencoded `/`, `?` or `#` (masking part of a path with an `@` in it is
/// the lesser harm).
pub fn masked(url: &str) -> String {
    let start = url.find("://").map_or(0, |i| i + 3);
    let Some(at) = url[start..].rfind('@').map(|i| start + i) else {
        return url.to_owned();
    };
    let userinfo = &url[start..at];
    let user = match userinfo.split_once(':') {
        Some((user, _)) => format!("{user}:***"),
        None => "***".to_owned(),
    };
    format!("{}{user}{}", &url[..start], &url[at..])
}

/// How this node reaches the master.
pub(crate) enum Source {
    /// One address.
    Direct {
        client: redis::Client,
        /// Where its password came from.
        password: Origin,
    },
    /// Whatever master the Sentinels name.
    Sentinel {
        /// The Sentinels, asked in turn (behind a lock: the crate's client
        /// keeps a connection per Sentinel and needs `&mut`).
        client: tokio::sync::Mutex<SentinelClient>,
        /// The master's name in the Sentinels' configuration.
        master: String,
        /// The address of the master this node last connected to, to tell a
        /// failover from a reconnect to the same master.
        last: Mutex<Option<String>>,
        /// Where the master's password came from.
        password: Origin,
        /// Where the Sentinels' password came from.
        sentinel_password: Origin,
    },
}

/// A Sentinel URL taken apart.
#[derive(Debug, PartialEq)]
pub(crate) struct SentinelUrl {
    pub tls: bool,
    pub sentinels: Vec<(String, u16)>,
    pub master: String,
    pub db: i64,
    pub username: Option<String>,
    pub password: Option<String>,
    /// The Sentinels' own password: never in the URL (it is the
    /// master's), from `--redis-sentinel-password-file`.
    pub sentinel_password: Option<String>,
}

impl Source {
    /// The source `cfg.redis_url` names. Errors name the URL with its
    /// password masked.
    pub(crate) fn new(cfg: &Config) -> anyhow::Result<Source> {
        let url = cfg.redis_url.as_str();
        if !is_sentinel(url) {
            return client(cfg).map(|(client, password)| Source::Direct { client, password });
        }
        let shown = masked(url);
        let mut parsed = parse_sentinel_url(url).with_context(|| {
            format!(
                "--redis {shown} is not a usable Sentinel URL; write it like \
                 redis+sentinel://host1:26379,host2:26379/mymaster"
            )
        })?;
        let password = Origin::data(cfg, parsed.password.is_some());
        if let Some(pw) = password_from_file(cfg, parsed.password.is_some(), &shown)? {
            parsed.password = Some(pw);
        }
        let sentinel_password = match &cfg.sentinel_password_file {
            None => Origin::None,
            Some(path) => {
                parsed.sentinel_password = Some(crate::key_file::read_secret(
                    path,
                    "--redis-sentinel-password-file",
                    "the Sentinels' password",
                )?);
                Origin::File("--redis-sentinel-password-file", path.clone())
            }
        };
        let certs = match &cfg.ca_cert {
            None => None,
            Some(path) => {
                if !parsed.tls {
                    bail!(
                        "--redis-ca-cert is for TLS connections; write the Redis URL as \
                         rediss+sentinel://… (it is {shown})"
                    );
                }
                let pem = std::fs::read(path).map_err(|e| {
                    anyhow::anyhow!("cannot read --redis-ca-cert {}: {e}", path.display())
                })?;
                Some(redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem),
                })
            }
        };
        let client = sentinel_client(&parsed, certs)
            .map_err(|e| anyhow::anyhow!("--redis {shown}: cannot use these Sentinels ({e})"))?;
        Ok(Source::Sentinel {
            client: tokio::sync::Mutex::new(client),
            master: parsed.master,
            last: Mutex::new(None),
            password,
            sentinel_password,
        })
    }

    /// A client for the current master: for Sentinel, asked of the
    /// Sentinels now (the crate checks the named master's `ROLE` too).
    pub(crate) async fn master(&self) -> RedisResult<redis::Client> {
        match self {
            Source::Direct { client, .. } => Ok(client.clone()),
            Source::Sentinel { client, .. } => client.lock().await.async_get_client().await,
        }
    }

    /// Whether a connection can find itself talking to a demoted master
    /// (only through Sentinel: one address is what the operator chose).
    pub(crate) fn follows_failovers(&self) -> bool {
        matches!(self, Source::Sentinel { .. })
    }

    /// Connects once, at start, to tell credentials Redis refuses (which
    /// no retry mends: the node stops, saying which password and who
    /// refused it) from a Redis not reachable yet (which the subscriber
    /// task keeps trying, as it always does). `Ok` unless refused.
    pub(crate) async fn check_credentials(&self, shown: &str) -> anyhow::Result<()> {
        let probe = async {
            if let Source::Sentinel {
                client,
                sentinel_password,
                ..
            } = self
            {
                if let Err(e) = client.lock().await.async_get_sentinel_client().await {
                    return Err(is_refusal(&e)
                        .then(|| format!("{} ({e})", sentinel_password.refused("the Sentinels"))));
                }
            }
            let master = self.master().await.map_err(|e| self.refused(&e))?;
            let mut conn = master
                .get_multiplexed_async_connection()
                .await
                .map_err(|e| self.refused(&e))?;
            redis::cmd("PING")
                .query_async::<String>(&mut conn)
                .await
                .map(drop)
                .map_err(|e| self.refused(&e))
        };
        match tokio::time::timeout(super::node::OP_TIMEOUT * 2, probe).await {
            Ok(Err(Some(why))) => bail!(
                "cannot join the cluster through --redis {shown}: {why}. The master's password \
                 goes in the URL or in --redis-password-file; the Sentinels' own, if they have \
                 one, in --redis-sentinel-password-file"
            ),
            _ => Ok(()),
        }
    }

    /// For a refusal by the master: what it refused, and the error.
    fn refused(&self, e: &redis::RedisError) -> Option<String> {
        if !is_refusal(e) {
            return None;
        }
        let why = match self {
            Source::Direct { password, .. } => password.refused("Redis"),
            Source::Sentinel {
                password, master, ..
            } => password.refused(&format!("the master the Sentinels name for {master}")),
        };
        Some(format!("{why} ({e})"))
    }

    /// Records that the node connected to `client`'s master; gives the
    /// previous master's address when this is another one (a failover).
    pub(crate) fn connected_to(&self, client: &redis::Client) -> Option<(String, String)> {
        let Source::Sentinel { last, master, .. } = self else {
            return None;
        };
        let now = client.get_connection_info().addr().to_string();
        let before = last
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .replace(now.clone());
        match before {
            Some(before) if before != now => Some((before, format!("{now} ({master})"))),
            _ => None,
        }
    }
}

/// Whether a `--redis` URL is a Sentinel one.
pub(crate) fn is_sentinel(url: &str) -> bool {
    url.starts_with("redis+sentinel://") || url.starts_with("rediss+sentinel://")
}

/// Parses `redis+sentinel://[user[:password]@]host[:port][,host[:port]…]/master[/db]`
/// (`rediss+sentinel://` for TLS to the Sentinels and the master). The
/// user and password are the master's; Sentinels are asked without.
pub(crate) fn parse_sentinel_url(url: &str) -> anyhow::Result<SentinelUrl> {
    let (tls, rest) = if let Some(rest) = url.strip_prefix("redis+sentinel://") {
        (false, rest)
    } else if let Some(rest) = url.strip_prefix("rediss+sentinel://") {
        (true, rest)
    } else {
        bail!("it does not start with redis+sentinel:// or rediss+sentinel://");
    };
    let (authority, path) = rest
        .split_once('/')
        .context("it names no master: add /NAME, the name in the Sentinels' configuration")?;
    let (userinfo, hosts) = match authority.rfind('@') {
        Some(at) => (Some(&authority[..at]), &authority[at + 1..]),
        None => (None, authority),
    };
    let decode = |s: &str| -> anyhow::Result<String> {
        Ok(percent_decode_str(s)
            .decode_utf8()
            .context("its user or password is not UTF-8 once %-decoded")?
            .into_owned())
    };
    let (username, password) = match userinfo {
        None => (None, None),
        Some(info) => match info.split_once(':') {
            Some((user, pass)) => (
                (!user.is_empty()).then(|| decode(user)).transpose()?,
                Some(decode(pass)?),
            ),
            None => (None, Some(decode(info)?)),
        },
    };
    let mut sentinels = Vec::new();
    for host in hosts.split(',') {
        sentinels.push(host_port(host.trim())?);
    }
    let mut parts = path.trim_end_matches('/').splitn(2, '/');
    let master = parts.next().unwrap_or_default();
    if master.is_empty() {
        bail!("it names no master: add /NAME, the name in the Sentinels' configuration");
    }
    let db = match parts.next() {
        None => 0,
        Some(db) => db
            .parse::<i64>()
            .ok()
            .filter(|&d| d >= 0)
            .with_context(|| format!("{db:?} is not a database number"))?,
    };
    Ok(SentinelUrl {
        tls,
        sentinels,
        master: decode(master)?,
        db,
        username,
        password,
        sentinel_password: None,
    })
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`.
fn host_port(s: &str) -> anyhow::Result<(String, u16)> {
    if s.is_empty() {
        bail!("a Sentinel's address is empty (write host:port,host:port)");
    }
    let (host, port) = if let Some(v6) = s.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .with_context(|| format!("{s:?}: an IPv6 address needs its closing ]"))?;
        (host, after.strip_prefix(':'))
    } else {
        match s.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (s, None),
        }
    };
    if host.is_empty() {
        bail!("{s:?} has no host");
    }
    let port = match port {
        None => SENTINEL_PORT,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|&p| p > 0)
            .with_context(|| format!("{s:?}: {p:?} is not a port"))?,
    };
    Ok((host.to_owned(), port))
}

fn sentinel_client(
    url: &SentinelUrl,
    certs: Option<redis::TlsCertificates>,
) -> RedisResult<SentinelClient> {
    let addrs = url.sentinels.iter().map(|(host, port)| {
        if url.tls {
            ConnectionAddr::TcpTls {
                host: host.clone(),
                port: *port,
                insecure: false,
                tls_params: None,
            }
        } else {
            ConnectionAddr::Tcp(host.clone(), *port)
        }
    });
    let mut b = SentinelClientBuilder::new(addrs, &url.master, SentinelServerType::Master)?
        .set_client_to_redis_db(url.db);
    if let Some(user) = &url.username {
        b = b.set_client_to_redis_username(user);
    }
    if let Some(password) = &url.password {
        b = b.set_client_to_redis_password(password);
    }
    if let Some(password) = &url.sentinel_password {
        b = b.set_client_to_sentinel_password(password);
    }
    if url.tls {
        b = b
            .set_client_to_redis_tls_mode(TlsMode::Secure)
            .set_client_to_sentinel_tls_mode(TlsMode::Secure);
        if let Some(certs) = certs {
            b = b
                .set_client_to_redis_certificates(certs.clone())
                .set_client_to_sentinel_certificates(certs);
        }
    }
    b.build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_masked() {
        assert_eq!(
            masked("redis://user:hunter2@h:6379/0"),
            "redis://user:***@h:6379/0"
        );
        assert_eq!(masked("rediss://:hunter2@h/0"), "rediss://:***@h/0");
        assert_eq!(masked("redis://hunter2@h"), "redis://***@h");
        assert_eq!(masked("redis://h:6379/0"), "redis://h:6379/0");
        assert_eq!(masked("nonsense:hunter2@x"), "nonsense:***@x");
        assert!(!masked("redis://u:p@ss@h/0").contains("p@ss"));
        // Unencoded `/`, `?` and `#` in a password: not where a URL's
        // authority would end.
        assert_eq!(
            masked("redis://u:hun/ter2@h:6379/0"),
            "redis://u:***@h:6379/0"
        );
        assert_eq!(masked("redis://:a?b#c/d@h/0"), "redis://:***@h/0");
        assert_eq!(masked("redis://s3/cret@h"), "redis://***@h");
    }

    #[test]
    fn a_sentinel_password_is_for_sentinel_urls_only() {
        let cfg = Config {
            redis_url: "redis://:pw@127.0.0.1:1/0".into(),
            node_id: "n".into(),
            lease: Duration::from_secs(5),
            grace: Duration::from_secs(5),
            ca_cert: None,
            password_file: None,
            sentinel_password_file: Some("/nonexistent".into()),
            max_stations: 1,
        };
        let err = Source::new(&cfg).err().expect("refused").to_string();
        assert!(
            err.contains("--redis-sentinel-password-file is for Sentinels")
                && err.contains("redis://:***@"),
            "{err}"
        );
    }

    #[test]
    fn sentinel_urls() {
        let u = parse_sentinel_url("redis+sentinel://a:26380,b,[::1]:5/mymaster").unwrap();
        assert_eq!(
            u,
            SentinelUrl {
                tls: false,
                sentinels: vec![("a".into(), 26380), ("b".into(), 26379), ("::1".into(), 5)],
                master: "mymaster".into(),
                db: 0,
                username: None,
                password: None,
                sentinel_password: None,
            }
        );
        let u = parse_sentinel_url("rediss+sentinel://user:p%40ss@h:1/m/3").unwrap();
        assert!(u.tls);
        assert_eq!(u.username.as_deref(), Some("user"));
        assert_eq!(u.password.as_deref(), Some("p@ss"));
        assert_eq!(u.db, 3);
        let u = parse_sentinel_url("redis+sentinel://:secret@h/m").unwrap();
        assert_eq!((u.username, u.password.as_deref()), (None, Some("secret")));
        for bad in [
            "redis+sentinel://h:1",
            "redis+sentinel://h:1/",
            "redis+sentinel://h:x/m",
            "redis+sentinel://h:1,/m",
            "redis+sentinel://h/m/-1",
            "redis://h/m",
        ] {
            assert!(parse_sentinel_url(bad).is_err(), "{bad}");
        }
    }
}
