//! The station hub: what every backend feeds and every listener reads.
//!
//! A [`Station`] is one conflating cell (a [`tokio::sync::watch`]) holding
//! the newest [`View`] of a station, plus its count of local listeners. A
//! backend writes the cell: the in-memory backend when its owner publishes,
//! the Redis backend from its subscriber task. A listener's connection holds
//! a [`Tuned`] guard and reads the cell, so a listener's code is one and the
//! same whichever backend runs.
//!
//! How the old system's problems are made impossible here:
//! - **One global channel filtered by every connection** becomes one cell per
//!   station: a listener is woken only by its own station and reads the
//!   newest view; a slow listener skips stale views instead of queueing them,
//!   and the newest is never dropped.
//! - **Serialize per listener** becomes serialize once: a [`State`] carries
//!   its `sync` frame encoded when it is published, and every listener writes
//!   the same shared bytes.
//! - **Counters never decremented** become guards: [`Tuned`] counts its
//!   listener in the station and in the metrics, and its `Drop` undoes both
//!   and tells the backend when a station's last listener left.

pub(crate) mod fanout;
mod reports;
mod unplayable;
mod view;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::protocol::{OfflineReason, OnlineReason, StationName};
use crate::server::metrics::Metrics;
use crate::server::outlet::Outlet;
use fanout::{Membership, Shard};
use reports::Reports;

pub(crate) use reports::Reported;
pub(crate) use unplayable::Unplayable;
pub(crate) use view::{Beat, Playback, State, View};

/// One station's cell, its local listener count, and its fan-out.
#[derive(Debug)]
pub(crate) struct Station {
    pub name: StationName,
    tx: watch::Sender<Arc<View>>,
    listeners: AtomicU64,
    /// The fan-out shards' channels, started with the first listener that
    /// attaches its socket.
    shards: OnceLock<Box<[mpsc::UnboundedSender<Membership>]>>,
    /// Deals listeners to shards in turn.
    next_shard: AtomicUsize,
    /// Listeners that cannot play the current track.
    reports: Reports,
}

impl Station {
    pub(crate) fn new(name: StationName) -> Self {
        let (tx, _) = watch::channel(Arc::new(View::default()));
        Self {
            name,
            tx,
            listeners: AtomicU64::new(0),
            shards: OnceLock::new(),
            next_shard: AtomicUsize::new(0),
            reports: Reports::default(),
        }
    }

    /// The newest view.
    pub(crate) fn view(&self) -> Arc<View> {
        self.tx.borrow().clone()
    }

    /// Connections of this process tuned to the station.
    pub(crate) fn listener_count(&self) -> u64 {
        self.listeners.load(Ordering::Relaxed)
    }

    /// Replaces the view; every listener wakes once and reads the newest.
    pub(crate) fn set_view(&self, view: View) {
        self.tx.send_replace(Arc::new(view));
    }

    /// Publishes a new state: the station is live with it, played by
    /// whoever played it (a hand-over is [`Station::hand_over`]).
    pub(crate) fn publish(&self, state: State) {
        self.tx.send_modify(|view| {
            *view = Arc::new(View {
                by: view.by,
                turn: view.turn,
                ..View::live(Some(state))
            });
        });
    }

    /// Passes the live station to another player (`by`), keeping its state
    /// until the new player publishes: listeners are told
    /// `broadcaster_online` with the new player.
    pub(crate) fn hand_over(&self, by: OnlineReason) {
        self.tx.send_modify(|view| {
            *view = Arc::new(View {
                by,
                turn: view.turn.wrapping_add(1),
                state: view.state.clone(),
                ..View::live(None)
            });
        });
    }

    /// Goes offline for `reason`, forgetting the state. The turn moves on,
    /// so a listener that missed this view still hears of the next player.
    pub(crate) fn set_offline(&self, reason: OfflineReason) {
        self.tx.send_modify(|view| {
            *view = Arc::new(View {
                turn: view.turn.wrapping_add(1),
                ..View::offline(reason)
            });
        });
    }

    /// Goes live (with no state yet), played by `by`, unless it already is.
    pub(crate) fn set_online(&self, by: OnlineReason) {
        self.tx.send_modify(|view| {
            if !view.live {
                *view = Arc::new(View {
                    by,
                    turn: view.turn,
                    ..View::live(None)
                });
            }
        });
    }
}

/// The stations of `stations` with local listeners, and how many each has.
pub(crate) fn listened<'a>(stations: impl Iterator<Item = &'a Station>) -> Vec<(StationName, u64)> {
    stations
        .map(|s| (s.name.clone(), s.listener_count()))
        .filter(|(_, n)| *n > 0)
        .collect()
}

/// Called with a station's name when its last local listener leaves.
pub(crate) type IdleHook = Box<dyn Fn(&StationName) + Send + std::marker::Sync>;

/// A backend's listener bookkeeping: hands out [`Tuned`] guards, keeps the
/// `radio_listeners` gauge, starts stations' fan-out shards (in the server's
/// task tracker) and tells the backend when a station has no local listener
/// left (so it can drop the entry or unsubscribe).
pub(crate) struct Listeners {
    metrics: Arc<Metrics>,
    on_idle: IdleHook,
    tasks: TaskTracker,
    shutdown: CancellationToken,
}

impl Listeners {
    pub(crate) fn new(
        metrics: Arc<Metrics>,
        tasks: TaskTracker,
        shutdown: CancellationToken,
        on_idle: IdleHook,
    ) -> Self {
        Self {
            metrics,
            on_idle,
            tasks,
            shutdown,
        }
    }

    /// Counts one more listener of `station`. A backend whose entries can be
    /// removed calls this under the lock that guards removal, so a
    /// concurrent removal sees the count.
    pub(crate) fn tune(self: &Arc<Self>, station: Arc<Station>) -> Tuned {
        station.listeners.fetch_add(1, Ordering::Relaxed);
        self.metrics.listeners.inc();
        Tuned {
            station,
            listeners: Arc::downgrade(self),
            attached: None,
            reported: 0,
        }
    }

    /// Starts `station`'s fan-out shards: one per runtime worker thread.
    fn start_fanout(&self, station: &Station) -> Box<[mpsc::UnboundedSender<Membership>]> {
        let n = tokio::runtime::Handle::try_current()
            .map_or(1, |h| h.metrics().num_workers())
            .clamp(1, 16);
        (0..n)
            .map(|_| {
                let (tx, rx) = mpsc::unbounded_channel();
                let shard = Shard::new(
                    station.name.clone(),
                    station.tx.subscribe(),
                    rx,
                    self.metrics.clone(),
                );
                self.tasks.spawn(shard.run(self.shutdown.clone()));
                tx
            })
            .collect()
    }
}

/// A listener's subscription to one station; dropping it tunes out.
pub(crate) struct Tuned {
    pub station: Arc<Station>,
    listeners: Weak<Listeners>,
    /// The socket written by the station's fan-out, and its shard.
    attached: Option<(Arc<Outlet>, usize)>,
    /// The station's tally of unplayable reports this listener counts in
    /// (0: none), withdrawn when it tunes out.
    reported: u64,
}

impl Tuned {
    /// Joins the station's fan-out: from now on the station's shards write
    /// its states to `outlet` directly. The caller holds the outlet
    /// ([`Outlet::take`]) and has recorded what the listener was sent.
    pub(crate) fn attach(&mut self, outlet: Arc<Outlet>) {
        let Some(listeners) = self.listeners.upgrade() else {
            return;
        };
        let shards = self
            .station
            .shards
            .get_or_init(|| listeners.start_fanout(&self.station));
        let i = self.station.next_shard.fetch_add(1, Ordering::Relaxed) % shards.len();
        let generation = outlet.attach();
        if shards[i]
            .send(Membership::Join(outlet.clone(), generation))
            .is_ok()
        {
            self.attached = Some((outlet, i));
        }
    }
}

impl Tuned {
    /// This listener cannot play `track` (`cannot_play`): counted once in
    /// its station's tally when `track` is what the station plays now.
    pub(crate) fn cannot_play(&mut self, track: &str, reason: Option<&str>) -> Reported {
        let view = self.station.view();
        let current = view.state.as_ref().map(|s| s.sync.track.as_str());
        let listeners = self.station.listener_count();
        (self.station.reports).report(&mut self.reported, track, current, reason, listeners)
    }
}

impl Drop for Tuned {
    fn drop(&mut self) {
        if self.reported != 0 {
            self.station.reports.withdraw(self.reported);
        }
        if let Some((outlet, i)) = self.attached.take() {
            // The owner holds the outlet while it lets go of a station, so
            // no shard writes after what the owner writes next.
            outlet.detach();
            if let Some(shard) = self.station.shards.get().and_then(|s| s.get(i)) {
                if shard.send(Membership::Leave(outlet)).is_err() {
                    tracing::debug!("fan-out shard already stopped (shutting down)");
                }
            }
        }
        let left = self.station.listeners.fetch_sub(1, Ordering::Relaxed) - 1;
        if let Some(listeners) = self.listeners.upgrade() {
            listeners.metrics.listeners.dec();
            if left == 0 {
                (listeners.on_idle)(&self.station.name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn name(s: &str) -> StationName {
        StationName::new(s).expect("a valid name")
    }

    #[test]
    fn tuned_guards_count_and_report_the_last_listener() {
        let metrics = Arc::new(Metrics::new());
        let idle = Arc::new(Mutex::new(Vec::new()));
        let seen = idle.clone();
        let listeners = Arc::new(Listeners::new(
            metrics.clone(),
            TaskTracker::new(),
            CancellationToken::new(),
            Box::new(move |n| seen.lock().expect("lock").push(n.to_string())),
        ));
        let station = Arc::new(Station::new(name("s")));
        let a = listeners.tune(station.clone());
        let b = listeners.tune(station.clone());
        assert_eq!(station.listener_count(), 2);
        assert_eq!(metrics.listeners.get(), 2);
        drop(a);
        assert!(idle.lock().expect("lock").is_empty());
        drop(b);
        assert_eq!(station.listener_count(), 0);
        assert_eq!(metrics.listeners.get(), 0);
        assert_eq!(*idle.lock().expect("lock"), vec!["s".to_owned()]);
    }
}
