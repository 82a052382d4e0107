//! The station registry: which stations exist, who owns them, and the
//! conflating cell each station's listeners watch.
//!
//! How the old system's problems are made impossible here:
//! - **One global channel filtered by every connection** becomes one
//!   [`tokio::sync::watch`] per station. A listener is woken only by its own
//!   station and reads the newest [`View`]; a slow listener skips stale views
//!   instead of queueing them, and the newest is never dropped.
//! - **Serialize per listener** becomes serialize once: a state change is
//!   encoded to JSON when it is published, and every listener writes the same
//!   shared bytes.
//! - **A lock per message** is gone: the registry map's mutex is taken on
//!   start, stop, tune and disconnect only. An owner's `update` goes straight to
//!   its station's cell through the `Arc<Station>` the connection holds. No lock
//!   is ever held across an `.await` (every lock here is a `std` mutex inside a
//!   non-async function).
//! - **Counters never decremented, cleanup in the request path** become guards:
//!   [`Tuned`] and [`Owned`] undo themselves on drop, and a station entry
//!   vanishes as soon as it has neither a broadcaster nor a listener. The grace
//!   timers are tasks of the server's tracker, cancelled on shutdown.
//!
//! [`Registry`] is what connections talk to: the in-memory backend here
//! ([`Local`], the default) or the Redis-backed cluster
//! ([`crate::server::cluster`]). Both hand listeners the same [`Station`]
//! cell and [`Tuned`] guard, so a listener's connection code is one and the
//! same; only the cluster's cells are written by its Redis subscriber.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::protocol::{
    self, ErrorCode, OfflineReason, ServerMessage, StationName, StationSummary, Sync, SyncCause,
};
use crate::server::cluster;
use crate::server::metrics::Metrics;

/// What listeners of a station see: replaced whole on every change.
#[derive(Debug, Default)]
pub struct View {
    /// A broadcaster holds the station (also during its grace period).
    pub live: bool,
    /// Why it last went offline, when it is not live.
    pub offline_reason: Option<OfflineReason>,
    /// The newest state, from the broadcaster's last `update`/`heartbeat`.
    pub state: Option<State>,
}

/// One published state and its encoded `sync` frame.
#[derive(Debug)]
pub struct State {
    pub sync: Sync,
    /// `sync.seq`'s frame, encoded once for every listener.
    pub frame: Utf8Bytes,
}

/// Who holds a station.
#[derive(Debug)]
struct Ownership {
    /// The owning connection's id, `None` when free or in grace.
    owner: Option<u64>,
    resume_token: String,
    /// Set while the owner is gone but may resume; bumped on every grace
    /// start so an old timer can tell it has been superseded.
    grace_epoch: Option<u64>,
    epochs: u64,
}

/// One station.
#[derive(Debug)]
pub struct Station {
    pub name: StationName,
    tx: watch::Sender<Arc<View>>,
    /// Last `seq` assigned. Kept for as long as the entry exists, so the
    /// listeners of a station that stops and restarts see `seq` keep growing.
    seq: AtomicU64,
    listeners: AtomicU64,
    ownership: Mutex<Ownership>,
}

impl Station {
    pub(crate) fn new(name: StationName) -> Self {
        let (tx, _) = watch::channel(Arc::new(View::default()));
        Self {
            name,
            tx,
            seq: AtomicU64::new(0),
            listeners: AtomicU64::new(0),
            ownership: Mutex::new(Ownership {
                owner: None,
                resume_token: String::new(),
                grace_epoch: None,
                epochs: 0,
            }),
        }
    }

    fn ownership(&self) -> MutexGuard<'_, Ownership> {
        // A poisoned lock only means a panic elsewhere mid-update of plain
        // data; the data is still consistent enough to keep serving.
        self.ownership.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The newest view.
    pub fn view(&self) -> Arc<View> {
        self.tx.borrow().clone()
    }

    pub fn listener_count(&self) -> u64 {
        self.listeners.load(Ordering::Relaxed)
    }

    fn is_held(&self) -> bool {
        let o = self.ownership();
        o.owner.is_some() || o.grace_epoch.is_some()
    }

    /// Publishes a new state: assigns the next `seq`, stamps the server time,
    /// encodes the frame once and replaces the view. Owner only (the caller
    /// holds an [`Owned`]).
    fn publish(
        &self,
        track: String,
        position_ms: u64,
        playing: bool,
        duration_ms: Option<u64>,
        cause: SyncCause,
    ) -> u64 {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let sync = Sync {
            station: self.name.clone(),
            seq,
            track,
            position_ms,
            playing,
            duration_ms,
            server_time_ms: protocol::now_ms(),
            cause,
        };
        let frame = protocol::encode(&ServerMessage::Sync(sync.clone()));
        self.tx.send_replace(Arc::new(View {
            live: true,
            offline_reason: None,
            state: Some(State { sync, frame }),
        }));
        seq
    }

    /// Replaces the view (cluster mode: the node's Redis subscriber is the
    /// one writer of a station's view).
    pub(crate) fn set_view(&self, view: View) {
        self.tx.send_replace(Arc::new(view));
    }

    /// Counts one more local listener and subscribes it to the view.
    pub(crate) fn add_listener(&self) -> watch::Receiver<Arc<View>> {
        self.listeners.fetch_add(1, Ordering::Relaxed);
        self.tx.subscribe()
    }

    fn set_offline(&self, reason: OfflineReason) {
        self.tx.send_replace(Arc::new(View {
            live: false,
            offline_reason: Some(reason),
            state: None,
        }));
    }

    fn set_online(&self) {
        self.tx.send_modify(|view| {
            if !view.live {
                *view = Arc::new(View {
                    live: true,
                    offline_reason: None,
                    state: None,
                });
            }
        });
    }
}

/// The single-node backend: every station in this process's memory.
#[derive(Clone)]
pub struct Local(Arc<Inner>);

struct Inner {
    stations: Mutex<HashMap<StationName, Arc<Station>>>,
    grace: Duration,
    metrics: Arc<Metrics>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
    /// Cluster mode: told when a station's last listener leaves, instead of
    /// this map (which the cluster does not use) dropping the entry.
    last_listener_left: Option<LastListenerHook>,
}

/// See [`Inner::last_listener_left`].
pub(crate) type LastListenerHook = Box<dyn Fn(&StationName) + Send + std::marker::Sync>;

impl Local {
    pub fn new(
        grace: Duration,
        metrics: Arc<Metrics>,
        tasks: TaskTracker,
        shutdown: CancellationToken,
    ) -> Self {
        Self(Arc::new(Inner {
            stations: Mutex::new(HashMap::new()),
            grace,
            metrics,
            tasks,
            shutdown,
            last_listener_left: None,
        }))
    }

    /// The listener bookkeeping of the cluster backend: its [`Tuned`] guards
    /// count through here and call `hook` when a station's last listener
    /// leaves. Sharing this one guard type keeps it as small as on a single
    /// node (a connection task holds one).
    pub(crate) fn for_cluster(metrics: Arc<Metrics>, hook: LastListenerHook) -> Self {
        Self(Arc::new(Inner {
            stations: Mutex::new(HashMap::new()),
            grace: Duration::ZERO,
            metrics,
            tasks: TaskTracker::new(),
            shutdown: CancellationToken::new(),
            last_listener_left: Some(hook),
        }))
    }

    /// A cluster listener's guard: `station` has already counted it.
    pub(crate) fn tuned(&self, station: Arc<Station>, rx: watch::Receiver<Arc<View>>) -> Tuned {
        self.0.metrics.listeners.inc();
        Tuned {
            station,
            registry: Arc::downgrade(&self.0),
            rx,
        }
    }

    fn map(&self) -> MutexGuard<'_, HashMap<StationName, Arc<Station>>> {
        self.0.stations.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn entry(&self, name: &StationName) -> Arc<Station> {
        self.map()
            .entry(name.clone())
            .or_insert_with(|| Arc::new(Station::new(name.clone())))
            .clone()
    }

    /// Removes the station's entry if nobody holds or listens to it.
    fn remove_if_unused(&self, name: &StationName) {
        let mut map = self.map();
        if let Some(st) = map.get(name) {
            if st.listener_count() == 0 && !st.is_held() {
                map.remove(name);
            }
        }
    }

    /// Number of station entries (live or with listeners).
    pub fn len(&self) -> usize {
        self.map().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Looks a station up without creating it.
    pub fn get(&self, name: &StationName) -> Option<Arc<Station>> {
        self.map().get(name).cloned()
    }

    /// Claims `name` for connection `conn`, or resumes it with its token
    /// during the grace period.
    pub fn start(
        &self,
        conn: u64,
        name: &StationName,
        resume_token: Option<&str>,
    ) -> Result<LocalOwned, Refusal> {
        let station = self.entry(name);
        let (token, went_live) = {
            let mut o = station.ownership();
            match (o.owner, o.grace_epoch) {
                (Some(owner), _) if owner == conn => (o.resume_token.clone(), false),
                (Some(_), _) => {
                    return Err((
                        ErrorCode::StationTaken,
                        format!("station {name} is live from another connection"),
                    ));
                }
                (None, Some(_)) => {
                    if resume_token.is_some_and(|t| t == o.resume_token) {
                        o.owner = Some(conn);
                        o.grace_epoch = None;
                        (o.resume_token.clone(), false)
                    } else {
                        return Err((
                            ErrorCode::StationTaken,
                            format!(
                                "station {name} is waiting for its broadcaster to resume; \
                                 resume with its resume_token or wait for the grace period to end"
                            ),
                        ));
                    }
                }
                (None, None) => {
                    o.owner = Some(conn);
                    o.resume_token = protocol::random_token(16);
                    (o.resume_token.clone(), true)
                }
            }
        };
        if went_live {
            self.0.metrics.stations.inc();
            station.set_online();
        }
        Ok(LocalOwned {
            station,
            registry: Arc::downgrade(&self.0),
            conn,
            token,
            released: false,
        })
    }

    /// Tunes a listener to `name`, creating the entry if needed.
    pub fn tune_in(&self, name: &StationName) -> Tuned {
        let station = {
            let mut map = self.map();
            let st = map
                .entry(name.clone())
                .or_insert_with(|| Arc::new(Station::new(name.clone())))
                .clone();
            // Counted under the map lock so a concurrent removal sees it.
            st.listeners.fetch_add(1, Ordering::Relaxed);
            st
        };
        self.0.metrics.listeners.inc();
        let rx = station.tx.subscribe();
        Tuned {
            station,
            registry: Arc::downgrade(&self.0),
            rx,
        }
    }

    /// The `stations` list: every live station.
    pub fn summaries(&self) -> Vec<StationSummary> {
        let stations: Vec<Arc<Station>> = self.map().values().cloned().collect();
        let now = protocol::now_ms();
        let mut out: Vec<StationSummary> = stations
            .iter()
            .filter_map(|st| {
                let view = st.view();
                if !view.live {
                    return None;
                }
                let (track, playing, position_ms) = match &view.state {
                    Some(s) => (
                        Some(s.sync.track.clone()),
                        s.sync.playing,
                        s.sync.position_at(now),
                    ),
                    None => (None, false, 0),
                };
                Some(StationSummary {
                    station: st.name.clone(),
                    listeners: st.listener_count(),
                    live: true,
                    track,
                    playing,
                    position_ms,
                    server_time_ms: now,
                })
            })
            .collect();
        out.sort_by(|a, b| a.station.cmp(&b.station));
        out
    }
}

/// A listener's subscription to one station; dropping it tunes out.
pub struct Tuned {
    pub station: Arc<Station>,
    registry: Weak<Inner>,
    pub rx: watch::Receiver<Arc<View>>,
}

impl Drop for Tuned {
    fn drop(&mut self) {
        let left = self.station.listeners.fetch_sub(1, Ordering::Relaxed) - 1;
        if let Some(inner) = self.registry.upgrade() {
            inner.metrics.listeners.dec();
            if left == 0 {
                match &inner.last_listener_left {
                    Some(hook) => hook(&self.station.name),
                    None => Local(inner).remove_if_unused(&self.station.name),
                }
            }
        }
    }
}

/// A broadcaster's hold on a station of this node. Dropping it without
/// [`LocalOwned::stop`] starts the grace period.
pub struct LocalOwned {
    pub station: Arc<Station>,
    registry: Weak<Inner>,
    conn: u64,
    pub token: String,
    released: bool,
}

impl LocalOwned {
    /// Whether this hold is still the station's owner (it always is on one
    /// node; cluster mode may lose it).
    fn is_owner(&self) -> bool {
        self.station.ownership().owner == Some(self.conn)
    }

    /// Publishes a full state (`update`).
    pub fn update(
        &self,
        track: String,
        position_ms: u64,
        playing: bool,
        duration_ms: Option<u64>,
    ) -> u64 {
        self.station
            .publish(track, position_ms, playing, duration_ms, SyncCause::Update)
    }

    /// Publishes a heartbeat: the stored track and duration with a new
    /// position (and play state). Without a stored state there is nothing to
    /// carry forward, so `Err(NotLive)`-style refusal is the caller's job.
    pub fn heartbeat(&self, position_ms: u64, playing: Option<bool>) -> Option<u64> {
        let view = self.station.view();
        let state = view.state.as_ref()?;
        Some(self.station.publish(
            state.sync.track.clone(),
            position_ms,
            playing.unwrap_or(state.sync.playing),
            state.sync.duration_ms,
            SyncCause::Heartbeat,
        ))
    }

    /// The current state's position extrapolated to `now`, if any.
    pub fn current(&self) -> Option<Sync> {
        self.station.view().state.as_ref().map(|s| s.sync.clone())
    }

    /// `stop_broadcasting`: frees the station now; listeners are told
    /// `broadcaster_offline{reason:"stopped"}`.
    pub fn stop(&mut self) {
        self.released = true;
        if !self.is_owner() {
            return;
        }
        {
            let mut o = self.station.ownership();
            o.owner = None;
            o.grace_epoch = None;
        }
        self.station.set_offline(OfflineReason::Stopped);
        if let Some(inner) = self.registry.upgrade() {
            inner.metrics.stations.dec();
            Local(inner).remove_if_unused(&self.station.name);
        }
    }
}

impl Drop for LocalOwned {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        let Some(inner) = self.registry.upgrade() else {
            return;
        };
        let epoch = {
            let mut o = self.station.ownership();
            if o.owner != Some(self.conn) {
                return;
            }
            o.owner = None;
            o.epochs += 1;
            o.grace_epoch = Some(o.epochs);
            o.epochs
        };
        tracing::debug!(station = %self.station.name, "broadcaster gone, grace period starts");
        let station = self.station.clone();
        let grace = inner.grace;
        let shutdown = inner.shutdown.clone();
        let registry = Arc::downgrade(&inner);
        inner.tasks.spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(grace) => {}
                _ = shutdown.cancelled() => return,
            }
            let expired = {
                let mut o = station.ownership();
                if o.grace_epoch == Some(epoch) {
                    o.grace_epoch = None;
                    true
                } else {
                    false
                }
            };
            if expired {
                tracing::info!(station = %station.name, "grace period over, station offline");
                station.set_offline(OfflineReason::Disconnected);
                if let Some(inner) = registry.upgrade() {
                    inner.metrics.stations.dec();
                    Local(inner).remove_if_unused(&station.name);
                }
            }
        });
    }
}

/// A refused request: the `error` frame's code and message.
pub type Refusal = (ErrorCode, String);

/// Where stations live: this process's memory (the default), or a cluster of
/// nodes sharing them through Redis (`--redis`).
///
/// An enum rather than a trait object: the local arm's calls are plain
/// synchronous code behind an `async fn` that completes at its first poll, so
/// a single node allocates nothing and waits on nothing it did not before.
/// The cluster arms' futures (up to 768 bytes, with their Redis calls) are
/// boxed, so they never bear on the size of the connection task that
/// embeds these calls, on a single node too: measured, that task's state is
/// 2,240 bytes, 24 more than before cluster mode existed.
#[derive(Clone)]
pub enum Registry {
    Local(Local),
    Cluster(cluster::Cluster),
}

impl Registry {
    /// A single node: every call completes at its first poll.
    pub fn is_local(&self) -> bool {
        matches!(self, Registry::Local(_))
    }

    /// Whether the backend can serve every request (`GET /readyz`).
    pub fn ready(&self) -> bool {
        match self {
            Registry::Local(_) => true,
            Registry::Cluster(c) => c.ready(),
        }
    }

    /// `start_broadcasting` for connection `conn`.
    pub async fn start(
        &self,
        conn: u64,
        name: &StationName,
        resume_token: Option<&str>,
    ) -> Result<Owned, Refusal> {
        match self {
            Registry::Local(l) => l.start(conn, name, resume_token).map(Owned::Local),
            Registry::Cluster(c) => Box::pin(c.start(conn, name, resume_token))
                .await
                .map(Owned::Cluster),
        }
    }

    /// `tune_in`: the listener's subscription, its view current.
    pub async fn tune_in(&self, name: &StationName) -> Result<Tuned, Refusal> {
        match self {
            Registry::Local(l) => Ok(l.tune_in(name)),
            Registry::Cluster(c) => Box::pin(c.tune_in(name)).await,
        }
    }

    /// The `stations` list: every live station, with its listeners counted
    /// over every node.
    pub async fn summaries(&self) -> Result<Vec<StationSummary>, Refusal> {
        match self {
            Registry::Local(l) => Ok(l.summaries()),
            Registry::Cluster(c) => Box::pin(c.summaries()).await,
        }
    }

    /// Whether someone broadcasts `name` (to tell `not_owner` from `not_live`).
    pub async fn is_live(&self, name: &StationName) -> bool {
        match self {
            Registry::Local(l) => l.get(name).is_some_and(|s| s.view().live),
            Registry::Cluster(c) => Box::pin(c.is_live(name)).await,
        }
    }
}

/// A broadcaster's hold on a station; dropping it without [`Owned::stop`]
/// starts the grace period.
pub enum Owned {
    Local(LocalOwned),
    Cluster(cluster::Owned),
}

impl Owned {
    pub fn name(&self) -> &StationName {
        match self {
            Owned::Local(o) => &o.station.name,
            Owned::Cluster(o) => o.name(),
        }
    }

    pub fn token(&self) -> &str {
        match self {
            Owned::Local(o) => &o.token,
            Owned::Cluster(o) => o.token(),
        }
    }

    /// Publishes a full state (`update`); returns its `seq`. A cluster hold
    /// may have been taken over (`not_owner`) or be unable to reach Redis
    /// (`unavailable`).
    pub async fn update(
        &mut self,
        track: String,
        position_ms: u64,
        playing: bool,
        duration_ms: Option<u64>,
    ) -> Result<u64, Refusal> {
        match self {
            Owned::Local(o) => Ok(o.update(track, position_ms, playing, duration_ms)),
            Owned::Cluster(o) => Box::pin(o.update(track, position_ms, playing, duration_ms)).await,
        }
    }

    /// Publishes a heartbeat; `Ok(None)` when there is no state to carry
    /// forward yet.
    pub async fn heartbeat(
        &mut self,
        position_ms: u64,
        playing: Option<bool>,
    ) -> Result<Option<u64>, Refusal> {
        match self {
            Owned::Local(o) => Ok(o.heartbeat(position_ms, playing)),
            Owned::Cluster(o) => Box::pin(o.heartbeat(position_ms, playing)).await,
        }
    }

    /// The newest state this broadcaster published, if any.
    pub fn current(&self) -> Option<Sync> {
        match self {
            Owned::Local(o) => o.current(),
            Owned::Cluster(o) => o.current(),
        }
    }

    /// `stop_broadcasting`: frees the station; listeners are told
    /// `broadcaster_offline{reason:"stopped"}`. On `Err` the hold is kept.
    pub async fn stop(&mut self) -> Result<(), Refusal> {
        match self {
            Owned::Local(o) => {
                o.stop();
                Ok(())
            }
            Owned::Cluster(o) => Box::pin(o.stop()).await,
        }
    }
}
