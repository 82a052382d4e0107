//! Server-run stations in cluster mode (`radio serve --redis --station`):
//! every node that names a station seats its own player on it, and the
//! players contend for the station's lease, the same lease a broadcaster's
//! claim takes, so exactly one node drives the station at a time.
//!
//! Each seated node runs a small task, once a tick (a tenth of a lease, at
//! most 500 ms), through one script (`lua/claim_auto.lua`):
//! - it refreshes the station's mark (`radio:auto:{station}`, lasting a
//!   lease), which tells the reapers and the sweep that a station whose
//!   lease is gone is not abandoned, and tells a broadcaster's claim and
//!   stop that the station is the server's to take back;
//! - the driving node's player renews its lease;
//! - a standby player takes the station when nobody holds it: its driving
//!   node died (the lease ran out), left (it freed the lease), or a
//!   broadcaster that took it over stopped or ran out of grace. The script
//!   says where the station was left ([`Handed`]): the server's last state,
//!   which the new driver goes on with at its place on the timeline, or a
//!   broadcaster's, after which it plays the next entry.
//!
//! A standby player's updates are refused [`Refusal::TakenOver`] without a
//! round trip, so only the driving node publishes: one update per track
//! for the whole cluster. A broadcaster's claim takes the lease from the
//! server's player (`lua/claim.lua`, announced `Hlive`); the driving node
//! sees the lease gone at its next tick or update, and the station comes
//! back (`Hauto`) to whichever seated node takes it first.
//!
//! [`Refusal::TakenOver`]: crate::server::refusal::Refusal::TakenOver

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::keys::{self, LIVE_SET, millis};
use super::node::{Hold, HoldState, Node, lock};
use crate::protocol::StationName;
use crate::server::backend::Handed;
use crate::server::station::State;

/// What a node's player on a server-run station shares with its task.
pub(crate) struct Seat {
    /// Whether this player holds the station's lease.
    driving: AtomicBool,
    /// Where the station was left when this player last took it, until
    /// the driver asks.
    handed: Mutex<Option<Handed>>,
    /// Counts the times the station came to this player.
    returns: watch::Sender<u64>,
    /// Ends the task (the hold was dropped, or the server stops).
    leave: CancellationToken,
}

/// The player's side of its seat, kept in its hold
/// ([`super::owned::RedisOwned`]).
pub(crate) struct Seated {
    seat: Arc<Seat>,
    /// The count of the station's returns, as last seen.
    returns: watch::Receiver<u64>,
}

impl Seated {
    /// Whether the player may publish now: it holds the lease. A return
    /// before this check is no reason to wake the player later.
    pub(super) fn may_publish(&mut self) -> bool {
        self.returns.borrow_and_update();
        self.seat.driving.load(Ordering::Acquire)
    }

    /// Waits until the station comes (back) to this player.
    pub(super) async fn returned(&mut self) {
        if self.returns.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    pub(super) fn handed(&mut self) -> Option<Handed> {
        lock(&self.seat.handed).take()
    }
}

/// Seats this node's player on `name` and starts its task, which takes the
/// station as soon as nobody holds it (at once, for a station that is
/// free). Never waits on Redis: a node started before its Redis seats its
/// players all the same, and they take their stations once it answers.
/// Gives the player's hold (no lease yet) and its seat.
pub(super) fn claim(node: &Arc<Node>, conn: u64, name: &StationName) -> (Arc<Hold>, Seated) {
    let hold = Arc::new(Hold {
        name: name.clone(),
        holder: format!("auto:{}:{conn}", node.holder_prefix),
        token: String::new(),
        state: Mutex::new(HoldState {
            seq: 0,
            last: None,
            lost: false,
            ended: false,
        }),
    });
    let (returns, rx) = watch::channel(0);
    let seat = Arc::new(Seat {
        driving: AtomicBool::new(false),
        handed: Mutex::new(None),
        returns,
        leave: node.shutdown.child_token(),
    });
    node.tasks
        .spawn(contend(node.clone(), hold.clone(), seat.clone()));
    let seated = Seated { seat, returns: rx };
    (hold, seated)
}

/// How often a seated player looks at its station: as often as a node's
/// subscriber task ticks.
fn tick(lease: Duration) -> Duration {
    (lease / 10).clamp(Duration::from_millis(50), Duration::from_millis(500))
}

/// The seat's task: one `claim_auto` script a tick until the seat is left.
async fn contend(node: Arc<Node>, hold: Arc<Hold>, seat: Arc<Seat>) {
    let every = tick(node.cfg.lease);
    // Said once until it changes.
    let mut full = false;
    loop {
        match attempt(&node, &hold).await {
            // Taken by a try whose reply was lost.
            Some(Reply::Mine) if !seat.driving.load(Ordering::Acquire) => {
                took(&node, &hold, &seat, None);
            }
            Some(Reply::Mine) => {}
            Some(Reply::Other) => {
                full = false;
                if seat.driving.swap(false, Ordering::AcqRel) {
                    node.metrics.stations.dec();
                    tracing::info!(station = %hold.name, "the station is played elsewhere now");
                }
            }
            Some(Reply::Full) if !full => {
                tracing::warn!(station = %hold.name, max = node.cfg.max_stations, "the cluster has its most live stations (--max-stations); this station waits for room");
                full = true;
            }
            Some(Reply::Full) => {}
            Some(Reply::Taken { seq, handed, last }) => {
                full = false;
                let driving = seat.driving.load(Ordering::Acquire);
                {
                    let mut st = lock(&hold.state);
                    st.seq = st.seq.max(seq);
                    // Still driving: Redis had lost the station (restarted
                    // empty), and this player goes on from its own state.
                    if !driving {
                        st.last = last.map(|s| *s);
                    }
                }
                if !driving {
                    took(&node, &hold, &seat, handed.map(|h| *h));
                }
            }
            None => {}
        }
        tokio::select! {
            _ = seat.leave.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// The station came to this player: it drives from now on.
fn took(node: &Node, hold: &Hold, seat: &Seat, handed: Option<Handed>) {
    tracing::info!(station = %hold.name, from = ?handed.as_ref().map(|h| match h {
        Handed::Playing(_) => "another node",
        Handed::After(_) => "a broadcaster",
    }), "this node plays the station");
    *lock(&seat.handed) = handed;
    if !seat.driving.swap(true, Ordering::AcqRel) {
        node.metrics.stations.inc();
    }
    seat.returns.send_modify(|n| *n += 1);
}

/// What one `claim_auto` script said.
enum Reply {
    /// This player holds the lease (renewed).
    Mine,
    /// Someone else does.
    Other,
    /// The cluster has its most live stations.
    Full,
    /// This player took the station: its seq in Redis, where it was left,
    /// and its newest state.
    Taken {
        seq: u64,
        handed: Option<Box<Handed>>,
        last: Option<Box<State>>,
    },
}

/// One try; `None` when Redis did not answer (the next tick tries again).
async fn attempt(node: &Node, hold: &Hold) -> Option<Reply> {
    let name = hold.name.as_str();
    let floor = lock(&hold.state).seq;
    let reply: Vec<String> = node
        .call(
            node.scripts
                .claim_auto
                .key(keys::lease(name))
                .key(keys::station(name))
                .key(LIVE_SET)
                .key(keys::auto(name))
                .arg(&hold.holder)
                .arg(millis(node.cfg.lease))
                .arg(keys::channel(name))
                .arg(name)
                .arg(node.cfg.max_stations)
                .arg(floor),
        )
        .await
        .ok()?;
    let state = |frame: &str| {
        (!frame.is_empty())
            .then(|| State::from_frame(frame))
            .flatten()
    };
    Some(match reply.as_slice() {
        [code] if code == "1" => Reply::Mine,
        [code] if code == "0" => Reply::Other,
        [code] if code == "-3" => Reply::Full,
        [code, seq, by, frame, auto_frame] if code == "2" => {
            let last = state(frame).map(Box::new);
            let handed = match by.as_str() {
                "" => None,
                "auto" => last
                    .as_ref()
                    .map(|s| Handed::Playing(Box::new(s.sync.clone()))),
                _ => state(auto_frame).map(|s| Handed::After(s.sync.track)),
            }
            .map(Box::new);
            Reply::Taken {
                seq: seq.parse().unwrap_or(0),
                handed,
                last,
            }
        }
        other => {
            tracing::error!(?other, "unexpected reply from the claim_auto script");
            return None;
        }
    })
}

/// Leaves the seat: the task ends, and the lease, if this player held it,
/// is freed for a player on another node, which takes the station where
/// the timeline is. When no other node runs the station, its mark runs out
/// and it goes offline as a station whose lease is gone.
pub(super) fn unseat(node: &Arc<Node>, hold: &Arc<Hold>, seated: &Seated) {
    seated.seat.leave.cancel();
    if seated.seat.driving.swap(false, Ordering::AcqRel) {
        node.metrics.stations.dec();
    }
    let (node, hold) = (node.clone(), hold.clone());
    // Runs even during shutdown (its one call is bounded).
    node.tasks.clone().spawn(async move {
        let name = hold.name.as_str();
        let mark = millis(node.cfg.lease / 2).max(2 * millis(tick(node.cfg.lease)));
        let freed: Result<i64, _> = node
            .call(
                node.scripts
                    .unseat
                    .key(keys::lease(name))
                    .key(keys::auto(name))
                    .arg(&hold.holder)
                    .arg(mark),
            )
            .await;
        if freed.is_err() {
            tracing::debug!(station = name, "could not free the lease; it runs out");
        }
    });
}
