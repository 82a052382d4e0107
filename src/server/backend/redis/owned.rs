//! [`RedisOwned`]: a broadcaster's hold on a cluster station. It publishes
//! through one script that checks the lease, stores the frame and
//! `PUBLISH`es it; dropped, it turns the lease into a grace lease so the
//! broadcaster can resume on any node.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::auto::{self, Seated};
use super::keys::{self, HISTORY_LIVE_MS, LIVE_SET, millis};
use super::node::{Hold, HoldState, Node, lock, unavailable};
use crate::protocol::{self, OnlineReason, StationName, SyncCause, SyncState};
use crate::server::backend::{Handed, OwnedStation};
use crate::server::history::{self, Played};
use crate::server::refusal::Refusal;
use crate::server::station::{Beat, Playback, State};

/// A broadcaster's hold on a cluster station, or the server's own player
/// on a station it runs ([`super::auto`]).
pub(crate) struct RedisOwned {
    hold: Arc<Hold>,
    node: Arc<Node>,
    /// Stopped or lost: nothing to release on drop.
    released: bool,
    /// The server's own player: its seat on the station.
    seat: Option<Seated>,
}

impl RedisOwned {
    /// A hold just claimed in Redis, registered with the node.
    pub(super) fn new(node: Arc<Node>, hold: Hold) -> Self {
        let hold = Arc::new(hold);
        lock(&node.holds).insert(hold.name.clone(), hold.clone());
        node.metrics.stations.inc();
        Self {
            hold,
            node,
            released: false,
            seat: None,
        }
    }

    /// The server's own player on a station; counted as a station of this
    /// node while it drives it.
    pub(super) fn seated(node: Arc<Node>, hold: Arc<Hold>, seat: Seated) -> Self {
        Self {
            hold,
            node,
            released: false,
            seat: Some(seat),
        }
    }

    /// The hold's record, for a claim's reply.
    pub(super) fn hold(
        name: &StationName,
        holder: String,
        token: String,
        seq: u64,
        last: Option<State>,
    ) -> Hold {
        Hold {
            name: name.clone(),
            holder,
            token,
            state: Mutex::new(HoldState {
                seq,
                last,
                lost: false,
                ended: false,
            }),
        }
    }

    /// Assigns the next seq, encodes the frame once, and has Redis check the
    /// lease, store it and publish it, all in one script.
    async fn publish(&mut self, playback: Playback, cause: SyncCause) -> Result<u64, Refusal> {
        let hold = self.hold.clone();
        // The server's player publishes only while it holds the lease.
        let by = match &mut self.seat {
            Some(seat) => {
                if !seat.may_publish() {
                    return Err(Refusal::TakenOver(hold.name.clone()));
                }
                OnlineReason::Auto
            }
            None => OnlineReason::Live,
        };
        let (mut seq, mut sync, play) = {
            let st = lock(&hold.state);
            let seq = st.seq + 1;
            let sync = playback.stamp(hold.name.clone(), seq, cause);
            let play = (cause == SyncCause::Update && history::starts_play(st.last_sync(), &sync))
                .then(|| protocol::encode(&Played::of(&sync, by)));
            (seq, sync, play)
        };
        let play = play.as_ref().map_or("", |p| p.as_str());
        let name = hold.name.as_str();
        // Redis may be ahead of this hold (it was raised after losing its
        // data); follow it, a bounded number of times.
        for _ in 0..3 {
            let state = State::new(sync);
            let (outcome, r): (i64, i64) = self
                .node
                .call(
                    self.node
                        .scripts
                        .update
                        .key(keys::lease(name))
                        .key(keys::station(name))
                        .key(keys::history(name))
                        .arg(&hold.holder)
                        .arg(seq)
                        .arg(state.frame.as_str())
                        .arg(keys::channel(name))
                        .arg(play)
                        .arg(history::LEN)
                        .arg(HISTORY_LIVE_MS),
                )
                .await?;
            if outcome == -1 {
                // The server's player keeps its seat: its task sees the
                // lease gone and waits for the station to come back.
                if self.seat.is_none() {
                    self.lost();
                }
                return Err(Refusal::TakenOver(hold.name.clone()));
            }
            if outcome == 1 {
                let mut st = lock(&hold.state);
                st.seq = seq;
                st.last = Some(state);
                return Ok(seq);
            }
            seq = u64::try_from(r).unwrap_or(0) + 1;
            sync = state.sync;
            sync.seq = seq;
        }
        tracing::error!(station = name, "could not agree on a seq with Redis");
        Err(unavailable())
    }

    fn lost(&mut self) {
        if !self.released {
            self.released = true;
            lock(&self.hold.state).lost = true;
            self.node.forget_hold(&self.hold);
            self.node.metrics.stations.dec();
            tracing::warn!(station = %self.hold.name, "station taken over elsewhere");
        }
    }
}

impl OwnedStation for RedisOwned {
    fn name(&self) -> &StationName {
        &self.hold.name
    }

    fn token(&self) -> &str {
        &self.hold.token
    }

    fn current(&self) -> Option<SyncState> {
        lock(&self.hold.state).last_sync().cloned()
    }

    async fn update(&mut self, playback: Playback) -> Result<u64, Refusal> {
        self.publish(playback, SyncCause::Update).await
    }

    async fn heartbeat(&mut self, beat: Beat) -> Result<u64, Refusal> {
        let playback = match lock(&self.hold.state).last_sync() {
            Some(last) => Playback::carried(last, beat),
            None => return Err(Refusal::NoTrackYet),
        };
        self.publish(playback, SyncCause::Heartbeat).await
    }

    async fn stop(&mut self) -> Result<(), Refusal> {
        if let Some(seat) = self.seat.take() {
            auto::unseat(&self.node, &self.hold, &seat);
            self.released = true;
            return Ok(());
        }
        let name = self.hold.name.as_str();
        let stopped: i64 = self
            .node
            .call(
                self.node
                    .scripts
                    .stop
                    .key(keys::lease(name))
                    .key(keys::station(name))
                    .key(LIVE_SET)
                    .key(keys::auto(name))
                    .key(keys::history(name))
                    .arg(&self.hold.holder)
                    .arg(keys::channel(name))
                    .arg(name)
                    .arg(self.node.keep_offline_ms()),
            )
            .await?;
        if stopped == 0 {
            // Another holder has it: this broadcaster stopped nothing.
            self.lost();
            return Err(Refusal::TakenOver(self.hold.name.clone()));
        }
        if !self.released {
            self.released = true;
            lock(&self.hold.state).ended = true;
            self.node.forget_hold(&self.hold);
            self.node.metrics.stations.dec();
        }
        Ok(())
    }

    /// A broadcaster's hold is never given a station back; the server's
    /// player is, each time it takes the station.
    async fn returned(&mut self) {
        match &mut self.seat {
            Some(seat) => seat.returned().await,
            None => std::future::pending().await,
        }
    }

    fn handed(&mut self) -> Option<Handed> {
        self.seat.as_mut().and_then(Seated::handed)
    }
}

impl Drop for RedisOwned {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        if let Some(seat) = &self.seat {
            return auto::unseat(&self.node, &self.hold, seat);
        }
        self.node.forget_hold(&self.hold);
        self.node.metrics.stations.dec();
        let updated = {
            let mut st = lock(&self.hold.state);
            st.ended = true;
            if st.lost {
                return;
            }
            st.last.is_some()
        };
        if updated {
            tracing::debug!(station = %self.hold.name, "broadcaster gone, grace period starts");
        } else {
            // Nothing to resume: no grace period, so a claim and a
            // disconnect hold no slot.
            tracing::debug!(station = %self.hold.name, "broadcaster gone before any update");
        }
        // Runs even during shutdown, so a broadcaster can resume on another
        // node; bounded by the grace period.
        let node = self.node.clone();
        let grace = updated.then_some(node.cfg.grace);
        self.node
            .tasks
            .spawn(release(node, self.hold.clone(), grace));
    }
}

/// Turns the hold's lease into a grace lease of `grace`, or frees the
/// station at once (`None`), retrying until the grace period would be over
/// (once when shutting down).
async fn release(node: Arc<Node>, hold: Arc<Hold>, grace: Option<Duration>) {
    let give_up = Instant::now() + node.cfg.grace;
    let name = hold.name.as_str();
    loop {
        let released: Result<i64, _> = match grace {
            Some(grace) => {
                node.call(
                    node.scripts
                        .release
                        .key(keys::lease(name))
                        .key(keys::station(name))
                        .arg(&hold.holder)
                        .arg(millis(grace)),
                )
                .await
            }
            None => {
                node.call(
                    node.scripts
                        .stop
                        .key(keys::lease(name))
                        .key(keys::station(name))
                        .key(LIVE_SET)
                        .key(keys::auto(name))
                        .key(keys::history(name))
                        .arg(&hold.holder)
                        .arg(keys::channel(name))
                        .arg(name)
                        .arg(node.keep_offline_ms())
                        .arg("disconnected"),
                )
                .await
            }
        };
        // Shutting down: one try, so the node exits promptly.
        if released.is_ok() || Instant::now() >= give_up || node.shutdown.is_cancelled() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
