//! The in-memory backend (the default): every station in this process.
//!
//! How the old system's problems are made impossible here:
//! - **A lock per message** is gone: the station map's mutex is taken on
//!   start, stop, tune and disconnect only. An owner's `update` goes straight
//!   to its station's cell through the [`LocalOwned`] the connection holds.
//!   No lock is ever held across an `.await` (every lock here is a `std`
//!   mutex inside a non-async function), and every call completes at its
//!   first poll.
//! - **Cleanup in the request path** becomes guards: a station entry
//!   vanishes as soon as it has neither a broadcaster nor a listener (when
//!   the last [`Tuned`] or [`LocalOwned`] lets go), and the grace timers are
//!   tasks of the server's tracker, cancelled on shutdown.
//!
//! A server-run station (`radio serve --station`) is held by the server's
//! own player through the same kind of hold ([`auto`]): a broadcaster's
//! claim takes it over, and its stop or grace end gives it back.

mod auto;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Backend, OwnedStation, summary};
use crate::protocol::{
    self, OfflineReason, OnlineReason, StationName, StationSummary, SyncCause, SyncState,
};
use crate::server::history::{self, History, Played};
use crate::server::metrics::{Link, Metrics};
use crate::server::refusal::Refusal;
use crate::server::station::{self, Beat, Listeners, Playback, State, Station, Tuned};

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
    /// The server's own player, when the server runs this station: it
    /// owns the station whenever no broadcaster does.
    seat: Option<Seat>,
}

/// The server's player's place on a station it runs (the hold and its
/// hand-overs are in [`auto`], which names this module, never the reverse).
#[derive(Debug)]
struct Seat {
    /// The id its hold owns the station with.
    conn: u64,
    /// Counts the times the station came back to it.
    returns: watch::Sender<u64>,
}

/// One station of this node: its cell, its `seq` and who holds it.
#[derive(Debug)]
struct Entry {
    station: Arc<Station>,
    /// Last `seq` assigned. Kept for as long as the entry exists, so the
    /// listeners of a station that stops and restarts see `seq` keep growing.
    seq: AtomicU64,
    ownership: Mutex<Ownership>,
    /// What it played; taken once per track, not per update.
    history: Mutex<History>,
}

impl Entry {
    fn new(name: &StationName) -> Self {
        Self {
            station: Arc::new(Station::new(name.clone())),
            seq: AtomicU64::new(0),
            ownership: Mutex::new(Ownership {
                owner: None,
                resume_token: String::new(),
                grace_epoch: None,
                epochs: 0,
                seat: None,
            }),
            history: Mutex::new(History::default()),
        }
    }

    fn ownership(&self) -> MutexGuard<'_, Ownership> {
        // A poisoned lock only means a panic elsewhere mid-update of plain
        // data; the data is still consistent enough to keep serving.
        self.ownership.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn history(&self) -> MutexGuard<'_, History> {
        self.history.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn is_held(&self) -> bool {
        let o = self.ownership();
        o.owner.is_some() || o.grace_epoch.is_some() || o.seat.is_some()
    }

    /// Assigns the next `seq`, stamps the state and publishes it; an
    /// `update` that starts a track is recorded as played `by`.
    fn publish(&self, playback: Playback, cause: SyncCause, by: OnlineReason) -> u64 {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let sync = playback.stamp(self.station.name.clone(), seq, cause);
        if cause == SyncCause::Update {
            let before = self.station.view();
            if history::starts_play(before.state.as_ref().map(|s| &s.sync), &sync) {
                self.history().record(Played::of(&sync, by));
            }
        }
        self.station.publish(State::new(sync));
        seq
    }
}

/// The in-memory backend; cheap to clone.
#[derive(Clone)]
pub(crate) struct Local(Arc<Inner>);

struct Inner {
    stations: Mutex<HashMap<StationName, Arc<Entry>>>,
    grace: Duration,
    /// `--max-stations`: most stations live or in grace at once.
    max_stations: usize,
    metrics: Arc<Metrics>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
    listeners: Arc<Listeners>,
}

impl Local {
    pub(crate) fn new(
        grace: Duration,
        max_stations: usize,
        metrics: Arc<Metrics>,
        tasks: TaskTracker,
        shutdown: CancellationToken,
    ) -> Self {
        Self(Arc::new_cyclic(|me: &Weak<Inner>| {
            let me = me.clone();
            let on_idle = Box::new(move |name: &StationName| {
                if let Some(inner) = me.upgrade() {
                    Local(inner).remove_if_unused(name);
                }
            });
            Inner {
                stations: Mutex::new(HashMap::new()),
                grace,
                max_stations,
                listeners: Arc::new(Listeners::new(
                    metrics.clone(),
                    tasks.clone(),
                    shutdown.clone(),
                    on_idle,
                )),
                metrics,
                tasks,
                shutdown,
            }
        }))
    }

    fn map(&self) -> MutexGuard<'_, HashMap<StationName, Arc<Entry>>> {
        self.0.stations.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn entry(&self, name: &StationName) -> Arc<Entry> {
        self.map()
            .entry(name.clone())
            .or_insert_with(|| Arc::new(Entry::new(name)))
            .clone()
    }

    /// Removes the station's entry if nobody holds or listens to it.
    fn remove_if_unused(&self, name: &StationName) {
        let mut map = self.map();
        if let Some(e) = map.get(name) {
            if e.station.listener_count() == 0 && !e.is_held() {
                map.remove(name);
            }
        }
    }

    /// Number of station entries (held, in grace, or with listeners).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.map().len()
    }

    fn claim_now(
        &self,
        conn: u64,
        name: &StationName,
        resume_token: Option<&str>,
    ) -> Result<LocalOwned, Refusal> {
        // At the cap only a station already held (resumed, or claimed again
        // by its owner) may be claimed; checked before an entry is made.
        let live = usize::try_from(self.0.metrics.stations.get()).unwrap_or(0);
        if live >= self.0.max_stations && !self.map().get(name).is_some_and(|e| e.is_held()) {
            return Err(Refusal::ServerStationsFull(self.0.max_stations));
        }
        let entry = self.entry(name);
        let (token, went_live) = {
            let mut o = entry.ownership();
            match (o.owner, o.grace_epoch) {
                (Some(owner), _) if owner == conn => (o.resume_token.clone(), false),
                (Some(owner), _) if o.seat.as_ref().is_some_and(|s| s.conn == owner) => {
                    // A broadcaster takes over a station the server plays.
                    o.owner = Some(conn);
                    o.resume_token = protocol::random_token(16);
                    entry.station.hand_over(OnlineReason::Live);
                    (o.resume_token.clone(), false)
                }
                (Some(_), _) => return Err(Refusal::Taken(name.clone())),
                (None, Some(_)) => {
                    if resume_token.is_none_or(|t| t != o.resume_token) {
                        return Err(Refusal::InGrace(name.clone()));
                    }
                    o.owner = Some(conn);
                    o.grace_epoch = None;
                    (o.resume_token.clone(), false)
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
            entry.station.set_online(OnlineReason::Live);
        }
        Ok(LocalOwned {
            entry,
            registry: Arc::downgrade(&self.0),
            conn,
            token,
            released: false,
            returns: None,
        })
    }

    fn tune_in_now(&self, name: &StationName) -> Tuned {
        let mut map = self.map();
        let entry = map
            .entry(name.clone())
            .or_insert_with(|| Arc::new(Entry::new(name)));
        // Counted under the map lock so a concurrent removal sees it.
        self.0.listeners.tune(entry.station.clone())
    }

    fn list_now(&self) -> Vec<StationSummary> {
        let stations: Vec<Arc<Station>> = self.map().values().map(|e| e.station.clone()).collect();
        let now = protocol::now_ms();
        let mut out: Vec<StationSummary> = stations
            .iter()
            .filter_map(|st| {
                let view = st.view();
                view.live.then(|| {
                    let sync = view.state.as_ref().map(|s| &s.sync);
                    summary(st.name.clone(), st.listener_count(), sync, now)
                })
            })
            .collect();
        out.sort_by(|a, b| a.station.cmp(&b.station));
        out
    }
}

impl Backend for Local {
    type Owned = LocalOwned;

    fn answers_at_once(&self) -> bool {
        true
    }

    fn readiness(&self) -> Result<(), String> {
        Ok(())
    }

    fn link(&self) -> Option<Link> {
        None
    }

    fn local_listeners(&self) -> Vec<(StationName, u64)> {
        station::listened(self.map().values().map(|e| &*e.station))
    }

    async fn claim(
        &self,
        conn: u64,
        name: &StationName,
        resume_token: Option<&str>,
    ) -> Result<LocalOwned, Refusal> {
        self.claim_now(conn, name, resume_token)
    }

    async fn tune_in(&self, name: &StationName) -> Result<Tuned, Refusal> {
        Ok(self.tune_in_now(name))
    }

    async fn list(&self) -> Result<Vec<StationSummary>, Refusal> {
        Ok(self.list_now())
    }

    async fn is_live(&self, name: &StationName) -> bool {
        let entry = self.map().get(name).cloned();
        entry.is_some_and(|e| e.station.view().live)
    }

    async fn claim_auto(&self, conn: u64, name: &StationName) -> Result<LocalOwned, Refusal> {
        self.claim_auto_now(conn, name)
    }

    async fn history(&self, name: &StationName) -> Result<Option<Vec<Played>>, Refusal> {
        let entry = self.map().get(name).cloned();
        Ok(entry.map(|e| e.history().newest_first()))
    }
}

/// A broadcaster's hold on a station of this node. Dropping it without
/// [`OwnedStation::stop`] starts the grace period.
pub(crate) struct LocalOwned {
    entry: Arc<Entry>,
    registry: Weak<Inner>,
    conn: u64,
    token: String,
    released: bool,
    /// The server's own hold ([`Backend::claim_auto`]): the count of the
    /// times the station came back to it, as last seen.
    returns: Option<watch::Receiver<u64>>,
}

impl LocalOwned {
    fn stop_now(&mut self) {
        self.free_now(OfflineReason::Stopped);
    }

    /// Frees the station at once (no grace period): listeners are told
    /// `reason`, or the server's player takes its station back.
    fn free_now(&mut self, reason: OfflineReason) {
        if self.returns.is_some() {
            return self.unseat();
        }
        self.released = true;
        {
            let mut o = self.entry.ownership();
            if o.owner != Some(self.conn) {
                return;
            }
            o.owner = None;
            o.grace_epoch = None;
            if self.entry.hand_back(&mut o) {
                return;
            }
        }
        self.entry.station.set_offline(reason);
        if let Some(inner) = self.registry.upgrade() {
            inner.metrics.stations.dec();
            Local(inner).remove_if_unused(&self.entry.station.name);
        }
    }

    fn heartbeat_now(&mut self, beat: Beat) -> Result<u64, Refusal> {
        let view = self.entry.station.view();
        let last = &view.state.as_ref().ok_or(Refusal::NoTrackYet)?.sync;
        let playback = Playback::carried(last, beat);
        self.publish(playback, SyncCause::Heartbeat)
    }

    /// Publishes through this hold: a broadcaster's at once, the server's
    /// only while the station is its own.
    fn publish(&mut self, playback: Playback, cause: SyncCause) -> Result<u64, Refusal> {
        if self.returns.is_some() {
            return self.publish_auto(playback, cause);
        }
        Ok(self.entry.publish(playback, cause, OnlineReason::Live))
    }
}

impl OwnedStation for LocalOwned {
    fn name(&self) -> &StationName {
        &self.entry.station.name
    }

    fn token(&self) -> &str {
        &self.token
    }

    fn current(&self) -> Option<SyncState> {
        self.entry
            .station
            .view()
            .state
            .as_ref()
            .map(|s| s.sync.clone())
    }

    async fn update(&mut self, playback: Playback) -> Result<u64, Refusal> {
        self.publish(playback, SyncCause::Update)
    }

    async fn heartbeat(&mut self, beat: Beat) -> Result<u64, Refusal> {
        self.heartbeat_now(beat)
    }

    async fn stop(&mut self) -> Result<(), Refusal> {
        self.stop_now();
        Ok(())
    }

    async fn returned(&mut self) {
        self.returned_now().await;
    }
}

impl Drop for LocalOwned {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        if self.returns.is_some() {
            return self.unseat();
        }
        // A station that never had an update has nothing to resume: no
        // grace period, so a claim and a disconnect hold no slot.
        if self.entry.station.view().state.is_none() {
            return self.free_now(OfflineReason::Disconnected);
        }
        let Some(inner) = self.registry.upgrade() else {
            return;
        };
        let epoch = {
            let mut o = self.entry.ownership();
            if o.owner != Some(self.conn) {
                return;
            }
            o.owner = None;
            o.epochs += 1;
            o.grace_epoch = Some(o.epochs);
            o.epochs
        };
        tracing::debug!(station = %self.entry.station.name, "broadcaster gone, grace period starts");
        inner.tasks.spawn(grace_timer(
            self.entry.clone(),
            epoch,
            inner.grace,
            inner.shutdown.clone(),
            Arc::downgrade(&inner),
        ));
    }
}

/// Takes the station offline when its grace period `epoch` ends unresumed.
async fn grace_timer(
    entry: Arc<Entry>,
    epoch: u64,
    grace: Duration,
    shutdown: CancellationToken,
    registry: Weak<Inner>,
) {
    tokio::select! {
        _ = tokio::time::sleep(grace) => {}
        _ = shutdown.cancelled() => return,
    }
    let expired = {
        let mut o = entry.ownership();
        let expired = o.grace_epoch == Some(epoch);
        if expired {
            o.grace_epoch = None;
            if entry.hand_back(&mut o) {
                tracing::debug!(station = %entry.station.name, "grace period over, the server plays the station again");
                return;
            }
        }
        expired
    };
    if expired {
        let name = &entry.station.name;
        // Per station, and clients choose how many: debug.
        tracing::debug!(station = %name, "grace period over, station offline");
        entry.station.set_offline(OfflineReason::Disconnected);
        if let Some(inner) = registry.upgrade() {
            inner.metrics.stations.dec();
            Local(inner).remove_if_unused(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn name(s: &str) -> StationName {
        StationName::new(s).expect("a valid name")
    }

    pub(super) fn backend(grace: Duration) -> (Local, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::new());
        let local = Local::new(
            grace,
            10_000,
            metrics.clone(),
            TaskTracker::new(),
            CancellationToken::new(),
        );
        (local, metrics)
    }

    pub(super) fn playback(track: &str) -> Playback {
        Playback {
            track: track.into(),
            position_ms: 0,
            playing: true,
            duration_ms: None,
            title: None,
            artist: None,
            gain_db: None,
            next: None,
        }
    }

    /// A heartbeat at `position_ms`.
    pub(super) fn beat(position_ms: u64) -> Beat {
        Beat {
            position_ms,
            ..Beat::default()
        }
    }

    #[tokio::test]
    async fn claim_publish_and_listen() {
        let (local, metrics) = backend(Duration::from_secs(10));
        let jazz = name("jazz");
        let tuned = local.tune_in(&jazz).await.expect("tune in");
        assert!(!tuned.station.view().live);
        let mut owned = local.claim(1, &jazz, None).await.expect("claim");
        assert!(tuned.station.view().live);
        assert_eq!(metrics.stations.get(), 1);
        assert_eq!(owned.update(playback("a")).await, Ok(1));
        assert_eq!(owned.heartbeat(beat(500)).await, Ok(2));
        let view = tuned.station.view();
        let sync = &view.state.as_ref().expect("a state").sync;
        assert_eq!(
            (sync.seq, sync.track.as_str(), sync.position_ms),
            (2, "a", 500)
        );
        let list = local.list().await.expect("list");
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].listeners, 1);
        assert_eq!(
            local.claim(2, &jazz, None).await.err(),
            Some(Refusal::Taken(jazz.clone()))
        );
        owned.stop().await.expect("stop");
        let view = tuned.station.view();
        assert_eq!(view.offline_reason, Some(OfflineReason::Stopped));
        assert_eq!(metrics.stations.get(), 0);
    }

    #[tokio::test]
    async fn a_heartbeat_needs_a_track() {
        let (local, _) = backend(Duration::from_secs(10));
        let mut owned = local.claim(1, &name("s"), None).await.expect("claim");
        assert_eq!(owned.heartbeat(beat(1)).await, Err(Refusal::NoTrackYet));
    }

    #[tokio::test]
    async fn entries_vanish_with_their_last_guard() {
        let (local, _) = backend(Duration::from_secs(10));
        let s = name("s");
        let tuned = local.tune_in(&s).await.expect("tune in");
        assert_eq!(local.len(), 1);
        drop(tuned);
        assert_eq!(local.len(), 0);
        let mut owned = local.claim(1, &s, None).await.expect("claim");
        owned.stop().await.expect("stop");
        assert_eq!(local.len(), 0);
    }

    #[tokio::test]
    async fn a_station_never_updated_has_no_grace_period() {
        let (local, metrics) = backend(Duration::from_secs(10));
        let s = name("s");
        let tuned = local.tune_in(&s).await.expect("tune in");
        drop(local.claim(1, &s, None).await.expect("claim"));
        let view = tuned.station.view();
        assert_eq!(view.offline_reason, Some(OfflineReason::Disconnected));
        assert_eq!(metrics.stations.get(), 0);
        local.claim(2, &s, None).await.expect("free at once");
    }

    #[tokio::test(start_paused = true)]
    async fn grace_then_resume_or_offline() {
        let (local, metrics) = backend(Duration::from_secs(10));
        let s = name("s");
        let tuned = local.tune_in(&s).await.expect("tune in");
        let mut owned = local.claim(1, &s, None).await.expect("claim");
        owned.update(playback("a")).await.expect("update");
        let token = owned.token().to_owned();
        drop(owned);
        // In grace: live for listeners, closed to others, open to the token.
        assert!(tuned.station.view().live);
        assert_eq!(
            local.claim(2, &s, None).await.err(),
            Some(Refusal::InGrace(s.clone()))
        );
        let mut resumed = local.claim(2, &s, Some(&token)).await.expect("resume");
        assert_eq!(resumed.update(playback("b")).await, Ok(2));
        drop(resumed);
        tokio::time::sleep(Duration::from_secs(11)).await;
        let view = tuned.station.view();
        assert_eq!(view.offline_reason, Some(OfflineReason::Disconnected));
        assert_eq!(metrics.stations.get(), 0);
    }
}
