//! The server's own player on a station of this node (`radio serve
//! --station`), through the same ownership a broadcaster's claim takes.
//!
//! The station's owner is the server's hold whenever no broadcaster holds
//! it. A broadcaster's claim takes the station over at once (listeners are
//! told `broadcaster_online{reason:"live"}` and get its updates); the
//! server's hold is refused its updates from then on. When the broadcaster
//! stops, or its grace period ends, [`Entry::hand_back`] makes the server's
//! hold the owner again, tells listeners `broadcaster_online{reason:"auto"}`
//! and wakes the hold ([`LocalOwned::returned_now`]): the station never goes
//! offline in between. Each step is taken under the station's ownership
//! lock, so an update of the server's hold and a broadcaster's claim cannot
//! cross; `seq` is the station's, so it only grows across the hand-overs.

use std::sync::Arc;

use tokio::sync::watch;

use super::{Entry, Local, LocalOwned, Ownership, Seat};
use crate::protocol::{OfflineReason, OnlineReason, StationName, SyncCause};
use crate::server::refusal::Refusal;
use crate::server::station::Playback;

impl Entry {
    /// Gives the station back to the server's player, if it has one (`o`
    /// is this entry's ownership, locked, with no owner now): listeners are
    /// told it plays again, and its hold wakes. False when the server does
    /// not run the station.
    pub(super) fn hand_back(&self, o: &mut Ownership) -> bool {
        let Some(seat) = &o.seat else {
            return false;
        };
        o.owner = Some(seat.conn);
        o.grace_epoch = None;
        seat.returns.send_modify(|n| *n += 1);
        self.station.hand_over(OnlineReason::Auto);
        true
    }
}

impl Local {
    pub(super) fn claim_auto_now(
        &self,
        conn: u64,
        name: &StationName,
    ) -> Result<LocalOwned, Refusal> {
        let live = usize::try_from(self.0.metrics.stations.get()).unwrap_or(0);
        if live >= self.0.max_stations && !self.map().get(name).is_some_and(|e| e.is_held()) {
            return Err(Refusal::ServerStationsFull(self.0.max_stations));
        }
        let entry = self.entry(name);
        let (returns, went_live) = {
            let mut o = entry.ownership();
            if o.seat.is_some() {
                return Err(Refusal::Taken(name.clone()));
            }
            let (tx, rx) = watch::channel(0);
            o.seat = Some(Seat { conn, returns: tx });
            // A broadcaster that holds the station (or may resume it) keeps
            // it; the server plays it once that is over.
            let free = o.owner.is_none() && o.grace_epoch.is_none();
            if free {
                o.owner = Some(conn);
            }
            (rx, free)
        };
        if went_live {
            self.0.metrics.stations.inc();
            entry.station.set_online(OnlineReason::Auto);
        }
        Ok(LocalOwned {
            entry,
            registry: Arc::downgrade(&self.0),
            conn,
            token: String::new(),
            released: false,
            returns: Some(returns),
        })
    }
}

impl LocalOwned {
    /// The server's hold publishes only while the station is its own.
    pub(super) fn publish_auto(
        &mut self,
        playback: Playback,
        cause: SyncCause,
    ) -> Result<u64, Refusal> {
        let o = self.entry.ownership();
        // Under the lock: a return before this update is no reason to wake.
        if let Some(returns) = &mut self.returns {
            returns.borrow_and_update();
        }
        if o.owner != Some(self.conn) {
            return Err(Refusal::TakenOver(self.entry.station.name.clone()));
        }
        Ok(self.entry.publish(playback, cause, OnlineReason::Auto))
    }

    /// Waits until the station comes back to the server's hold; never, for
    /// a broadcaster's.
    pub(super) async fn returned_now(&mut self) {
        if let Some(returns) = &mut self.returns {
            if returns.changed().await.is_ok() {
                return;
            }
        }
        std::future::pending().await
    }

    /// Unseats the server's player: a station it was playing goes offline
    /// (a broadcaster's goes on, and ends as a shell station's does).
    pub(super) fn unseat(&mut self) {
        self.released = true;
        let was_playing = {
            let mut o = self.entry.ownership();
            o.seat = None;
            let playing = o.owner == Some(self.conn);
            if playing {
                o.owner = None;
            }
            playing
        };
        if was_playing {
            self.entry.station.set_offline(OfflineReason::Stopped);
            if let Some(inner) = self.registry.upgrade() {
                inner.metrics.stations.dec();
            }
        }
        if let Some(inner) = self.registry.upgrade() {
            Local(inner).remove_if_unused(&self.entry.station.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::tests::{backend, name, playback};
    use crate::protocol::{OfflineReason, OnlineReason};
    use crate::server::backend::{Backend, OwnedStation};
    use crate::server::refusal::Refusal;

    #[tokio::test(start_paused = true)]
    async fn a_broadcaster_takes_over_and_the_server_takes_back() {
        let (local, metrics) = backend(Duration::from_secs(10));
        let s = name("s");
        let tuned = local.tune_in(&s).await.expect("tune in");
        let mut auto = local.claim_auto(u64::MAX, &s).await.expect("seat");
        assert_eq!(metrics.stations.get(), 1);
        let view = tuned.station.view();
        assert!(view.live);
        assert_eq!(view.by, OnlineReason::Auto);
        assert_eq!(auto.update(playback("a")).await, Ok(1));

        // Taken over: the server's updates are refused, seq goes on.
        let mut live = local.claim(7, &s, None).await.expect("take over");
        let view = tuned.station.view();
        assert_eq!((view.by, view.live), (OnlineReason::Live, true));
        assert_eq!(
            auto.update(playback("b")).await,
            Err(Refusal::TakenOver(s.clone()))
        );
        assert_eq!(live.update(playback("x")).await, Ok(2));
        let entry_turn = tuned.station.view().turn;

        // Stopped: back to the server, never offline.
        live.stop().await.expect("stop");
        let view = tuned.station.view();
        assert_eq!((view.by, view.live), (OnlineReason::Auto, true));
        assert!(view.turn != entry_turn);
        tokio::time::timeout(Duration::from_secs(1), auto.returned())
            .await
            .expect("the hold wakes");
        assert_eq!(auto.update(playback("b")).await, Ok(3));
        assert_eq!(metrics.stations.get(), 1);

        // Taken over again, then the broadcaster vanishes: after its grace.
        let live = local.claim(8, &s, None).await.expect("take over");
        drop(live);
        assert_eq!(tuned.station.view().by, OnlineReason::Live);
        let back = tokio::time::timeout(Duration::from_secs(11), auto.returned()).await;
        assert!(back.is_ok(), "the grace period ends in the server's hands");
        assert_eq!(tuned.station.view().by, OnlineReason::Auto);
        assert_eq!(auto.update(playback("c")).await, Ok(4));

        let plays: Vec<_> = local
            .history(&s)
            .await
            .expect("history")
            .expect("a known station")
            .into_iter()
            .map(|p| (p.track, p.by))
            .collect();
        assert_eq!(
            plays,
            [
                ("c".to_owned(), OnlineReason::Auto),
                ("b".to_owned(), OnlineReason::Auto),
                ("x".to_owned(), OnlineReason::Live),
                ("a".to_owned(), OnlineReason::Auto),
            ]
        );

        // Unseated: the station goes offline like any other.
        drop(auto);
        let view = tuned.station.view();
        assert_eq!(view.offline_reason, Some(OfflineReason::Stopped));
        assert_eq!(metrics.stations.get(), 0);
    }

    #[tokio::test]
    async fn one_server_player_per_station() {
        let (local, _) = backend(Duration::from_secs(10));
        let s = name("s");
        let _auto = local.claim_auto(u64::MAX, &s).await.expect("seat");
        assert_eq!(
            local.claim_auto(u64::MAX - 1, &s).await.err(),
            Some(Refusal::Taken(s.clone()))
        );
        assert!(
            local
                .history(&name("other"))
                .await
                .expect("local")
                .is_none()
        );
    }
}
