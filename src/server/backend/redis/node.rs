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
use super::source::{Config, Source};
use crate::protocol::{StationName, SyncState};
use crate::server::metrics::Metrics;
use crate::server::refusal::Refusal;
use crate::server::station::{Listeners, State, Station};

/// Every Redis request gives up after this; the client gets `unavailable`.
pub(crate) const OP_TIMEOUT: Duration = Duration::from_secs(2);

/// What this node shares between its connections and its subscriber task.
pub(crate) struct Node {
    pub cfg: Config,
    /// `node:boot`: every lease this process takes is `node:boot:conn`, so a
    /// node restarted under the same id never mistakes an old lease for its own.
    pub holder_prefix: String,
    /// Where the master is: one address, or what the Sentinels say.
    pub source: Source,
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

/// A write refused by a replica: the master this node knows was demoted
/// (a failover); the link is checked, and made again to the new master.
pub(crate) fn read_only(e: &RedisError) -> bool {
    e.code() == Some("READONLY") || e.to_string().contains("READONLY")
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
    /// How long an offline station's hash, history and counts are kept
    /// past the last refresh ([`super::keys::keep_offline`]).
    pub(crate) fn keep_offline_ms(&self) -> u64 {
        super::keys::keep_offline(self.cfg.lease)
    }

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
        if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() || read_only(e) {
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
