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

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::protocol::{self, OfflineReason, ServerMessage, StationName, Sync, SyncCause};
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

impl View {
    /// Offline for `reason`, with no state.
    pub fn offline(reason: OfflineReason) -> Self {
        Self {
            live: false,
            offline_reason: Some(reason),
            state: None,
        }
    }

    /// Live, with `state` if there is one yet.
    pub fn live(state: Option<State>) -> Self {
        Self {
            live: true,
            offline_reason: None,
            state,
        }
    }
}

/// One published state and its encoded `sync` frame.
#[derive(Debug, Clone)]
pub struct State {
    pub sync: Sync,
    /// `sync`'s frame, encoded once for every listener.
    pub frame: Utf8Bytes,
}

impl State {
    /// Encodes `sync`'s frame, once.
    pub fn new(sync: Sync) -> Self {
        let msg = ServerMessage::Sync(sync);
        let frame = protocol::encode(&msg);
        match msg {
            ServerMessage::Sync(sync) => Self { sync, frame },
            _ => unreachable!("built as a sync above"),
        }
    }

    /// A state from a frame another process encoded (a cluster node's).
    pub fn from_frame(frame: &str) -> Option<Self> {
        match serde_json::from_str::<ServerMessage>(frame) {
            Ok(ServerMessage::Sync(sync)) => Some(Self {
                sync,
                frame: Utf8Bytes::from(frame.to_owned()),
            }),
            _ => {
                tracing::warn!(frame, "ignoring a malformed state");
                None
            }
        }
    }
}

/// What a broadcaster chooses in an `update`, with what the server's library
/// says of its track (filled once, where the update is stamped): the rest of
/// a `sync` (station, `seq`, server time, cause) is the server's to stamp.
#[derive(Debug, Clone, PartialEq)]
pub struct Playback {
    pub track: String,
    pub position_ms: u64,
    pub playing: bool,
    pub duration_ms: Option<u64>,
    pub title: Option<String>,
    pub artist: Option<String>,
}

impl Playback {
    /// The `sync` this playback becomes, stamped now.
    pub fn stamp(self, station: StationName, seq: u64, cause: SyncCause) -> Sync {
        Sync {
            station,
            seq,
            track: self.track,
            position_ms: self.position_ms,
            playing: self.playing,
            duration_ms: self.duration_ms,
            title: self.title,
            artist: self.artist,
            server_time_ms: protocol::now_ms(),
            cause,
        }
    }

    /// A heartbeat's playback: `last`'s track, duration, title and artist at
    /// a new position (and play state, when given).
    pub fn carried(last: &Sync, position_ms: u64, playing: Option<bool>) -> Self {
        Self {
            track: last.track.clone(),
            position_ms,
            playing: playing.unwrap_or(last.playing),
            duration_ms: last.duration_ms,
            title: last.title.clone(),
            artist: last.artist.clone(),
        }
    }
}

/// One station's cell and its local listener count.
#[derive(Debug)]
pub struct Station {
    pub name: StationName,
    tx: watch::Sender<Arc<View>>,
    listeners: AtomicU64,
}

impl Station {
    pub fn new(name: StationName) -> Self {
        let (tx, _) = watch::channel(Arc::new(View::default()));
        Self {
            name,
            tx,
            listeners: AtomicU64::new(0),
        }
    }

    /// The newest view.
    pub fn view(&self) -> Arc<View> {
        self.tx.borrow().clone()
    }

    /// Connections of this process tuned to the station.
    pub fn listener_count(&self) -> u64 {
        self.listeners.load(Ordering::Relaxed)
    }

    /// Replaces the view; every listener wakes once and reads the newest.
    pub fn set_view(&self, view: View) {
        self.tx.send_replace(Arc::new(view));
    }

    /// Publishes a new state: the station is live with it.
    pub fn publish(&self, state: State) {
        self.set_view(View::live(Some(state)));
    }

    /// Goes offline for `reason`, forgetting the state.
    pub fn set_offline(&self, reason: OfflineReason) {
        self.set_view(View::offline(reason));
    }

    /// Goes live (with no state yet) unless it already is.
    pub fn set_online(&self) {
        self.tx.send_modify(|view| {
            if !view.live {
                *view = Arc::new(View::live(None));
            }
        });
    }
}

/// Called with a station's name when its last local listener leaves.
pub type IdleHook = Box<dyn Fn(&StationName) + Send + std::marker::Sync>;

/// A backend's listener bookkeeping: hands out [`Tuned`] guards, keeps the
/// `radio_listeners` gauge, and tells the backend when a station has no
/// local listener left (so it can drop the entry or unsubscribe).
pub struct Listeners {
    metrics: Arc<Metrics>,
    on_idle: IdleHook,
}

impl Listeners {
    pub fn new(metrics: Arc<Metrics>, on_idle: IdleHook) -> Self {
        Self { metrics, on_idle }
    }

    /// Counts one more listener of `station` and subscribes it to the view.
    /// A backend whose entries can be removed calls this under the lock that
    /// guards removal, so a concurrent removal sees the count.
    pub fn tune(self: &Arc<Self>, station: Arc<Station>) -> Tuned {
        station.listeners.fetch_add(1, Ordering::Relaxed);
        self.metrics.listeners.inc();
        let rx = station.tx.subscribe();
        Tuned {
            station,
            rx,
            listeners: Arc::downgrade(self),
        }
    }
}

/// A listener's subscription to one station; dropping it tunes out.
pub struct Tuned {
    pub station: Arc<Station>,
    pub rx: watch::Receiver<Arc<View>>,
    listeners: Weak<Listeners>,
}

impl Drop for Tuned {
    fn drop(&mut self) {
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

    #[test]
    fn a_state_is_encoded_once_and_read_back() {
        let playback = Playback {
            track: "a.ogg".into(),
            position_ms: 5,
            playing: true,
            duration_ms: Some(9),
            title: Some("A".into()),
            artist: None,
        };
        let state = State::new(playback.stamp(name("s"), 3, SyncCause::Update));
        let back = State::from_frame(state.frame.as_str()).expect("a sync frame");
        assert_eq!(back.sync, state.sync);
        assert!(State::from_frame(r#"{"type":"pong","server_time_ms":1}"#).is_none());
    }
}
