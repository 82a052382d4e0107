//! This node's side of the cluster: the state its facade, its owned-station
//! handles and its subscriber task share (the command connection, the
//! stations it listens to, the stations it broadcasts), and the one way
//! requests reach Redis ([`Node::call`], bounded by [`OP_TIMEOUT`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{FromRedisValue, RedisError, ScriptInvocation};
use tokio::sync::{Notify, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::scripts::Scripts;
use crate::protocol::{StationName, SyncState};
use crate::server::metrics::Metrics;
use crate::server::refusal::Refusal;
use crate::server::station::{Listeners, State, Station};

/// Every Redis request gives up after this; the client gets `unavailable`.
pub(crate) const OP_TIMEOUT: Duration = Duration::from_secs(2);

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
            .field("max_stations", &self.max_stations)
            .finish()
    }
}

/// The Redis client for `cfg`: `redis://`, or `rediss://` (TLS through
/// rustls) trusting `--redis-ca-cert` when given, with the password of
/// `--redis-password-file` when given. Errors name the URL with its
/// password masked.
pub(crate) fn client(cfg: &Config) -> anyhow::Result<redis::Client> {
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
    if let Some(path) = &cfg.password_file {
        if info.redis_settings().password().is_some() {
            anyhow::bail!(
                "--redis {shown} has a password and --redis-password-file gives \
                 another; leave the password out of the URL"
            );
        }
        let password =
            crate::key_file::read_secret(path, "--redis-password-file", "the Redis password")?;
        let settings = info.redis_settings().clone().set_password(password);
        info = info.set_redis_settings(settings);
    }
    let result = match &cfg.ca_cert {
        None => redis::Client::open(info),
        Some(path) => {
            if !url.starts_with("rediss://") {
                anyhow::bail!(
                    "--redis-ca-cert is for TLS connections; write the Redis URL as rediss://… \
                     (it is {shown})"
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
    result.map_err(bad_url)
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

/// What this node shares between its connections and its subscriber task.
pub(crate) struct Node {
    pub cfg: Config,
    /// `node:boot`: every lease this process takes is `node:boot:conn`, so a
    /// node restarted under the same id never mistakes an old lease for its own.
    pub holder_prefix: String,
    pub client: redis::Client,
    /// The command connection while Redis is reachable.
    pub conn: Mutex<Option<MultiplexedConnection>>,
    pub up: AtomicBool,
    /// Times the link to Redis came back after being lost
    /// (`radio_redis_reconnects_total`).
    pub reconnects: AtomicU64,
    /// Stations with local listeners, and whether their first snapshot arrived.
    pub stations: Mutex<HashMap<StationName, Entry>>,
    /// Stations broadcast from this node.
    pub holds: Mutex<HashMap<StationName, Arc<Hold>>>,
    pub bus: mpsc::UnboundedSender<BusCmd>,
    /// A request saw the connection fail; the subscriber task checks it.
    pub broken: Notify,
    pub scripts: Scripts,
    pub metrics: Arc<Metrics>,
    pub tasks: TaskTracker,
    pub shutdown: CancellationToken,
    /// Listener guards; tell the subscriber task when a station's last
    /// local listener leaves.
    pub listeners: Arc<Listeners>,
}

/// A station with local listeners.
pub(crate) struct Entry {
    pub station: Arc<Station>,
    /// Becomes true when the station's first snapshot has arrived.
    pub ready: watch::Receiver<bool>,
}

/// What the facade asks of the subscriber task.
pub(crate) enum BusCmd {
    /// A station got its first local listener.
    Subscribe {
        station: Arc<Station>,
        ready: watch::Sender<bool>,
    },
    /// A station's last local listener left.
    Idle(StationName),
}

/// One station broadcast from this node.
pub(crate) struct Hold {
    pub name: StationName,
    pub holder: String,
    pub token: String,
    pub state: Mutex<HoldState>,
}

pub(crate) struct HoldState {
    /// Last seq published (or found in Redis when claimed).
    pub seq: u64,
    /// The newest state published, for heartbeats and re-asserting.
    pub last: Option<State>,
    /// Another connection took the station over.
    pub lost: bool,
    /// Its connection stopped it or went away; a failed renewal is expected.
    pub ended: bool,
}

impl HoldState {
    pub(crate) fn last_sync(&self) -> Option<&SyncState> {
        self.last.as_ref().map(|s| &s.sync)
    }
}

/// Locks a node mutex. A poisoned lock only means a panic elsewhere
/// mid-update of plain data.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The refusal for anything that needs Redis while it is away.
pub(crate) fn unavailable() -> Refusal {
    Refusal::Unavailable("the cluster's Redis is unreachable right now")
}

impl Node {
    /// The command connection, while Redis is reachable.
    pub(crate) fn conn(&self) -> Result<MultiplexedConnection, Refusal> {
        lock(&self.conn).clone().ok_or_else(unavailable)
    }

    /// Runs a script on the command connection, bounded by [`OP_TIMEOUT`].
    pub(crate) async fn call<T: FromRedisValue>(
        &self,
        inv: &ScriptInvocation<'_>,
    ) -> Result<T, Refusal> {
        let mut conn = self.conn()?;
        match tokio::time::timeout(OP_TIMEOUT, inv.invoke_async(&mut conn)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                self.failed(&e);
                Err(unavailable())
            }
            Err(_) => {
                // Per request: the subscriber task logs the outage once.
                tracing::debug!("a Redis request timed out");
                self.broken.notify_one();
                Err(unavailable())
            }
        }
    }

    fn failed(&self, e: &RedisError) {
        if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() {
            tracing::debug!(error = %e, "Redis request failed");
            self.broken.notify_one();
        } else {
            tracing::error!(error = %e, "Redis refused a request");
        }
    }

    /// Forgets `hold` if it is still this node's hold of its station.
    pub(crate) fn forget_hold(&self, hold: &Arc<Hold>) {
        let mut holds = lock(&self.holds);
        if holds.get(&hold.name).is_some_and(|h| Arc::ptr_eq(h, hold)) {
            holds.remove(&hold.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::masked;

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
}
