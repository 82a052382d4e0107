//! Where stations live: the backend contract, and the backends.
//!
//! A backend decides who owns a station, assigns its `seq`, keeps its newest
//! state and feeds the station's [`Station`](crate::server::station::Station)
//! cell that local listeners read. Two exist:
//! - [`local`]: this process's memory, the default; every call completes at
//!   its first poll.
//! - [`redis`]: several nodes sharing stations through one Redis
//!   (`--redis`), the way Socket.IO's Redis adapter and Centrifugo's Redis
//!   engine do.
//!
//! [`Backend`] and [`OwnedStation`], here, are the contract: what a new
//! backend must implement, and all a connection may ask of one. The
//! connection task talks to [`any::AnyBackend`], an enum over the backends
//! whose arms are one-line delegates: static dispatch, so a single node
//! allocates nothing and waits on nothing, while the Redis arms' futures are
//! boxed so that their Redis round trips never bear on the size of the
//! connection task that embeds these calls (a unit test in
//! `server::connection` pins that size).
//!
//! To add a backend: a module here implementing both traits, an arm in
//! [`any::AnyBackend`] and [`any::AnyOwned`], and its construction in
//! [`any::AnyBackend::start`] from a new [`any::BackendConfig`] variant.
//! What it reports of itself ([`Backend::readiness`], [`Backend::link`]) is
//! all `/readyz` and `/metrics` know of it. `tests/it/backend.rs` runs the
//! contract's tests on every backend: a new one is a line in its list.

pub(crate) mod any;
pub(crate) mod local;
pub(crate) mod redis;

use std::future::Future;

use crate::protocol::{StationName, StationSummary, SyncState};
use crate::server::history::Played;
use crate::server::metrics::Link;
use crate::server::refusal::Refusal;
use crate::server::station::{Beat, Playback, Tuned};

/// What a backend must do for the connections of this node.
pub(crate) trait Backend {
    /// A broadcaster's hold on one station.
    type Owned: OwnedStation;

    /// Whether every call completes at its first poll (no I/O). The
    /// connection then answers requests in place, without boxing them.
    fn answers_at_once(&self) -> bool;

    /// `Ok` when the backend can serve every request (`GET /readyz`), or the
    /// reason it cannot.
    fn readiness(&self) -> Result<(), String>;

    /// The link to the service this backend stands on (Redis, say): up or
    /// not, and how often it came back; `None` for a backend without one.
    /// Read when `/metrics` is scraped, which shows it as
    /// `radio_{name}_up` and `radio_{name}_reconnects_total`. Never waits
    /// on I/O.
    fn link(&self) -> Option<Link>;

    /// `start_broadcasting` for connection `conn`: claims a free station, or
    /// resumes one in its grace period when `resume_token` is its token.
    fn claim(
        &self,
        conn: u64,
        name: &StationName,
        resume_token: Option<&str>,
    ) -> impl Future<Output = Result<Self::Owned, Refusal>> + Send;

    /// `tune_in`: the listener's guard, its view current.
    fn tune_in(&self, name: &StationName) -> impl Future<Output = Result<Tuned, Refusal>> + Send;

    /// The `stations` list: every live station, with its listeners counted
    /// over every node, sorted by name.
    fn list(&self) -> impl Future<Output = Result<Vec<StationSummary>, Refusal>> + Send;

    /// Whether someone broadcasts `name` (tells `not_owner` from `not_live`).
    fn is_live(&self, name: &StationName) -> impl Future<Output = bool> + Send;

    /// This node's stations with local listeners, and how many each has
    /// (`radio_station_listeners`). Never waits on I/O.
    fn local_listeners(&self) -> Vec<(StationName, u64)>;

    /// Seats the server's own player on a server-run station (`radio serve
    /// --station`) for `conn` (an id no connection has): the same kind of
    /// hold a broadcaster gets, which keeps the station live whenever no
    /// broadcaster holds it. A broadcaster's claim takes the station over
    /// (this hold's updates are then refused [`Refusal::TakenOver`]); when
    /// the broadcaster stops, or its grace period ends, the station comes
    /// back to this hold ([`OwnedStation::returned`]) instead of going
    /// offline. Dropping the hold unseats the server's player.
    fn claim_auto(
        &self,
        conn: u64,
        name: &StationName,
    ) -> impl Future<Output = Result<Self::Owned, Refusal>> + Send;

    /// The station's last plays, newest first (`GET
    /// /api/stations/{name}/history`); `None` for a station this backend
    /// does not know.
    fn history(
        &self,
        name: &StationName,
    ) -> impl Future<Output = Result<Option<Vec<Played>>, Refusal>> + Send;
}

/// A broadcaster's hold on one station. Dropping it releases the station:
/// listeners keep it live for the grace period, during which the
/// broadcaster may resume it with [`OwnedStation::token`].
pub(crate) trait OwnedStation: Send {
    fn name(&self) -> &StationName;

    /// The resume token.
    fn token(&self) -> &str;

    /// The newest state this broadcaster published, if any.
    fn current(&self) -> Option<SyncState>;

    /// Publishes a full state (`update`); returns its `seq`. A hold may have
    /// been taken over ([`Refusal::TakenOver`]: forget it) or be unable to
    /// reach its backend ([`Refusal::Unavailable`]).
    fn update(&mut self, playback: Playback) -> impl Future<Output = Result<u64, Refusal>> + Send;

    /// Publishes a heartbeat: the stored track and duration at a new
    /// position (and play state, and next track, when it says them).
    /// [`Refusal::NoTrackYet`] before any update.
    fn heartbeat(&mut self, beat: Beat) -> impl Future<Output = Result<u64, Refusal>> + Send;

    /// `stop_broadcasting`: frees the station now; listeners are told
    /// `broadcaster_offline{reason:"stopped"}`, or, on a server-run
    /// station, `broadcaster_online{reason:"auto"}`. On `Err` the hold is
    /// kept.
    fn stop(&mut self) -> impl Future<Output = Result<(), Refusal>> + Send;

    /// Resolves when the station comes back to this hold after a
    /// broadcaster took it over; only the server's own hold
    /// ([`Backend::claim_auto`]) is ever taken over and given back, so a
    /// broadcaster's never resolves.
    fn returned(&mut self) -> impl Future<Output = ()> + Send;

    /// The server's own hold, once the station has come to it from
    /// another node's player or from a broadcaster there (cluster mode):
    /// where the station was left, taken once. `None` when this hold's
    /// own player knows already (a single node), or the station starts
    /// afresh.
    fn handed(&mut self) -> Option<Handed> {
        None
    }
}

/// Where a server-run station was left when another node hands it to
/// this node's player ([`OwnedStation::handed`]).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Handed {
    /// The server's player on another node stopped (its node died or
    /// left) while this state played: go on with it, at the place its
    /// timeline has reached.
    Playing(Box<SyncState>),
    /// A broadcaster gave the station back: play the entry after this
    /// track, the last the server's player started.
    After(String),
}

/// Builds one `stations` entry from a station's newest state at `now`.
pub(crate) fn summary(
    station: StationName,
    listeners: u64,
    sync: Option<&SyncState>,
    now: i64,
) -> StationSummary {
    StationSummary {
        station,
        listeners,
        live: true,
        track: sync.map(|s| s.track.clone()),
        playing: sync.is_some_and(|s| s.playing),
        position_ms: sync.map_or(0, |s| s.position_at(now)),
        duration_ms: sync.and_then(|s| s.duration_ms),
        title: sync.and_then(|s| s.title.clone()),
        artist: sync.and_then(|s| s.artist.clone()),
        server_time_ms: now,
    }
}
