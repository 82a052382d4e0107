//! The requests a connection answers: broadcasting (start, stop, update,
//! heartbeat) through the backend, tuning in, which attaches the
//! listener's socket to its station's fan-out, and a listener's report
//! that it cannot play its station's track.

use crate::protocol::{
    self, ClientMessage, Heartbeat, RequestType, ServerMessage, StationName, SyncCause, Update,
};
use std::time::Duration;

use tokio::time::Instant;

use crate::server::backend::any::AnyBackend;
use crate::server::backend::{Backend as _, OwnedStation as _};
use crate::server::claims::Broadcast;
use crate::server::keys;
use crate::server::metrics::limits::Limit;
use crate::server::outlet::Sent;
use crate::server::ratelimit::{RateLimiter, Verdict};
use crate::server::refusal::Refusal;
use crate::server::station::{Beat, Playback, Reported};
use crate::server::warnings::Reason;

use super::{Conn, MAX_OWNED_STATIONS};

impl Conn {
    /// Answers one decoded request.
    pub(super) async fn on_request(&mut self, msg: ClientMessage) {
        let ty = msg.request_type();
        match msg {
            ClientMessage::Ping { id, client_time_ms } => self.send(&ServerMessage::Pong {
                id,
                client_time_ms,
                server_time_ms: protocol::now_ms(),
            }),
            ClientMessage::StartBroadcasting {
                station,
                resume_token,
                key,
            } => self.start(station, resume_token, key).await,
            ClientMessage::StopBroadcasting { station } => self.stop(station).await,
            ClientMessage::Update(u) => self.update(u).await,
            ClientMessage::Heartbeat(h) => self.heartbeat(h).await,
            ClientMessage::TuneIn { station } => self.tune_in(station).await,
            ClientMessage::TuneOut => {
                // Held first, so no state of the station follows `tuned_out`.
                self.hold();
                self.tuned = None;
                self.send(&ServerMessage::TunedOut);
            }
            ClientMessage::ListStations => {
                if let Err(refusal) = self.list_rate() {
                    return self.refuse(refusal, Some(ty));
                }
                match self.shared.listing.get(&self.shared.backend).await {
                    Ok(page) => self.push(page.answer()),
                    Err(refusal) => self.refuse(refusal, Some(ty)),
                }
            }
            ClientMessage::CannotPlay {
                station,
                track,
                reason,
            } => self.cannot_play(station, track, reason),
        }
    }

    /// Takes a token of this connection's `list_stations` rate
    /// (`--list-rate`): a client that asks more often is answered
    /// `rate_limited`, so no one connection keeps the listing busy.
    fn list_rate(&mut self) -> Result<(), Refusal> {
        let rate = self.shared.conn.list_rate;
        if rate == 0 {
            return Ok(());
        }
        let limiter = self
            .lists
            .get_or_insert_with(|| Box::new(RateLimiter::new(rate)));
        // Its own flood verdict is not used: the connection's rate limit
        // closes a flood.
        if limiter.check() == Verdict::Allow {
            return Ok(());
        }
        self.shared.metrics.limits.refused(Limit::ListRate);
        Err(Refusal::ListRate(rate))
    }

    /// A listener's player cannot play `track`: counted, and when every
    /// listener of the station now says so about what it plays, its
    /// broadcaster is told at its next update or heartbeat
    /// ([`Conn::tell_failed`]). Only on a single node: in cluster mode a
    /// node knows its own listeners only, so it cannot tell that all of
    /// them failed.
    fn cannot_play(&mut self, station: StationName, track: String, reason: Option<String>) {
        let Some(tuned) = self.tuned.as_mut().filter(|t| t.station.name == station) else {
            return self.refuse(Refusal::NotTuned(station), Some(RequestType::CannotPlay));
        };
        self.shared.metrics.cannot_play.inc();
        match tuned.cannot_play(&track, reason.as_deref()) {
            Reported::Stale | Reported::Again => {}
            Reported::Counted => self.shared.unplayable.count(&track),
            Reported::EveryListener { listeners, reason } => {
                self.shared.unplayable.count(&track);
                if matches!(self.shared.backend, AnyBackend::Local(_)) {
                    self.shared.warnings.note_with(Reason::UnplayableTrack, || {
                        format!("station {station}, track {track:?}")
                    });
                    (self.shared.unplayable).failed(&station, &track, listeners, reason);
                }
            }
        }
    }

    /// After an owner's update or heartbeat of `owned[i]`: tells it the
    /// track it plays failed for every listener, if it did.
    fn tell_failed(&mut self, i: usize) {
        // One atomic load on this per-message path when nothing waits.
        if !self.shared.unplayable.any_waiting() {
            return;
        }
        let owned = &self.owned[i];
        let current = owned.current();
        let told =
            (self.shared.unplayable).take(owned.name(), current.as_ref().map(|s| s.track.as_str()));
        if let Some(msg) = told {
            self.shared.metrics.tracks_failed.inc();
            self.send(&msg);
        }
    }

    async fn start(
        &mut self,
        station: StationName,
        resume_token: Option<String>,
        key: Option<String>,
    ) {
        const REQ: Option<RequestType> = Some(RequestType::StartBroadcasting);
        if let Err(why) = self.check_key(&station, key.as_deref()) {
            return self.refuse(why, REQ);
        }
        if let Some(owned) = self.owned.iter().find(|o| *o.name() == station) {
            let resume_token = owned.token().to_owned();
            return self.send(&ServerMessage::Broadcasting {
                station,
                resume_token,
            });
        }
        if self.owned.len() >= MAX_OWNED_STATIONS {
            return self.refuse(Refusal::TooManyStations(MAX_OWNED_STATIONS), REQ);
        }
        // The address's share and claim rate, before the backend is asked.
        let share = match self.shared.claims.admit(self.client, &station) {
            Ok(share) => share,
            Err(refusal) => return self.refuse(refusal, REQ),
        };
        let claimed = self
            .shared
            .backend
            .claim(self.id, &station, resume_token.as_deref())
            .await;
        match claimed {
            Ok(owned) => {
                tracing::debug!(%station, "broadcasting");
                let resume_token = owned.token().to_owned();
                self.owned.push(Broadcast::new(owned, share));
                self.send(&ServerMessage::Broadcasting {
                    station,
                    resume_token,
                });
            }
            Err(refusal) => self.refuse(refusal, REQ),
        }
    }

    /// Whether `key` opens `station`. A refused key counts against the
    /// connection, its address and the station; an address or station out
    /// of its budget is refused before the key is looked at.
    fn check_key(&mut self, station: &StationName, key: Option<&str>) -> Result<(), Refusal> {
        let shared = self.shared.clone();
        let client = self.client;
        if key.is_some() {
            if let Err(locked) = shared.keys.guard.check(client, station) {
                shared.metrics.limits.refused(Limit::KeyBudget);
                (shared.warnings).note_with(Reason::KeyBudget, || format!("{client}, {station}"));
                return Err(Refusal::KeyBudget(locked.remaining().as_secs().max(1)));
            }
        }
        match shared.keys.check(station.as_str(), key) {
            keys::Verdict::Allowed => Ok(()),
            keys::Verdict::Missing => Err(Refusal::Unauthorized),
            // Not told apart: a key for a station without one is a failure
            // like a wrong key, so a guesser cannot tell which names have keys.
            keys::Verdict::NotListed if key.is_none() => Err(Refusal::Unauthorized),
            keys::Verdict::Wrong | keys::Verdict::NotListed => {
                self.wrong_key();
                shared.keys.guard.fail(client, station);
                shared.metrics.limits.refused(Limit::WrongKey);
                (shared.warnings).note_with(Reason::WrongKey, || format!("{client}, {station}"));
                Err(Refusal::Unauthorized)
            }
        }
    }

    /// Counts a wrong broadcast key in this connection's current minute.
    fn wrong_key(&mut self) {
        let now = Instant::now();
        let w = self.wrong_keys.get_or_insert_with(|| Box::new((now, 0)));
        if now.duration_since(w.0) > Duration::from_secs(60) {
            **w = (now, 0);
        }
        w.1 += 1;
    }

    /// The index of an owned station, or the refusal that explains why not.
    async fn owned_index(&mut self, station: &StationName, request: RequestType) -> Option<usize> {
        if let Some(i) = self.owned.iter().position(|o| o.name() == station) {
            return Some(i);
        }
        let refusal = if self.shared.backend.is_live(station).await {
            Refusal::NotOwner(station.clone())
        } else {
            Refusal::NotLive(station.clone())
        };
        self.refuse(refusal, Some(request));
        None
    }

    async fn stop(&mut self, station: StationName) {
        const REQ: RequestType = RequestType::StopBroadcasting;
        if let Some(i) = self.owned_index(&station, REQ).await {
            match self.owned[i].stop().await {
                Ok(()) => {
                    self.owned.swap_remove(i).end();
                    tracing::debug!(%station, "stopped broadcasting");
                    self.send(&ServerMessage::Stopped { station });
                }
                Err(refusal) => self.refused(i, refusal, REQ),
            }
        }
    }

    /// A backend refused an owner's request: say so, and forget a station
    /// that was taken over (cluster mode).
    fn refused(&mut self, i: usize, refusal: Refusal, request: RequestType) {
        if matches!(refusal, Refusal::TakenOver(_)) {
            self.owned.swap_remove(i).end();
        }
        self.refuse(refusal, Some(request));
    }

    async fn update(&mut self, u: Update) {
        const REQ: RequestType = RequestType::Update;
        let Some(i) = self.owned_index(&u.station, REQ).await else {
            return;
        };
        // The library's word on the track (and its gain), filled here,
        // where the update is stamped: once per update, never per
        // listener, on any backend.
        let index = self.shared.media.index();
        let known = index.get(&u.track);
        let playback = Playback {
            position_ms: carried_position(u.position_ms, u.playing, u.at_server_ms),
            playing: u.playing,
            duration_ms: u.duration_ms.or_else(|| known.and_then(|t| t.duration_ms)),
            title: known.map(|t| t.title.clone()).or(u.title),
            artist: match known {
                Some(t) => t.artist.clone(),
                None => u.artist,
            },
            gain_db: known.and_then(|t| t.gain_db),
            // Announced only when the library has it: players fetch it by id.
            next: u.next.and_then(|id| index.next_track(&id)),
            track: u.track,
        };
        drop(index);
        match self.owned[i].update(playback).await {
            Ok(seq) => {
                if u.ack {
                    self.send(&ServerMessage::Ack {
                        station: u.station,
                        seq,
                    });
                }
                self.tell_failed(i);
            }
            Err(refusal) => self.refused(i, refusal, REQ),
        }
    }

    async fn heartbeat(&mut self, h: Heartbeat) {
        const REQ: RequestType = RequestType::Heartbeat;
        let Some(i) = self.owned_index(&h.station, REQ).await else {
            return;
        };
        let playing = h
            .playing
            .or_else(|| self.owned[i].current().map(|s| s.playing))
            .unwrap_or(false);
        let beat = Beat {
            position_ms: carried_position(h.position_ms, playing, h.at_server_ms),
            playing: h.playing,
            next: h.next.map(|id| self.shared.media.index().next_track(&id)),
        };
        match self.owned[i].heartbeat(beat).await {
            Ok(seq) => {
                if h.ack {
                    self.send(&ServerMessage::Ack {
                        station: h.station,
                        seq,
                    });
                }
                self.tell_failed(i);
            }
            Err(refusal) => self.refused(i, refusal, REQ),
        }
    }

    async fn tune_in(&mut self, station: StationName) {
        // Held first, so no state of the old station follows what this
        // answers; the old subscription goes first so re-tuning to the same
        // station counts one listener, not two.
        self.hold();
        self.tuned = None;
        let mut tuned = match self.shared.backend.tune_in(&station).await {
            Ok(tuned) => tuned,
            Err(refusal) => return self.refuse(refusal, Some(RequestType::TuneIn)),
        };
        let view = tuned.station.view();
        self.send(&ServerMessage::Tuned {
            station,
            live: view.live,
            reason: view.live.then_some(view.by),
        });
        let mut last_seq = 0;
        if let Some(state) = &view.state {
            let now = protocol::now_ms();
            let mut sync = state.sync.clone();
            sync.position_ms = sync.position_at(now);
            sync.server_time_ms = now;
            sync.cause = SyncCause::TuneIn;
            last_seq = sync.seq;
            self.shared.metrics.syncs_sent.inc();
            self.send(&ServerMessage::Sync(sync));
        }
        // What this listener is sent from here on comes from the fan-out,
        // or from `catch_up` when the fan-out cannot write.
        self.outlet.set_sent(Sent {
            seq: last_seq,
            told: view.mark(),
        });
        tuned.attach(self.outlet.clone());
        self.tuned = Some(tuned);
    }
}

/// The position at the moment the server stamps it: carried forward from the
/// broadcaster's `at_server_ms` when that is within the allowed skew.
fn carried_position(position_ms: u64, playing: bool, at_server_ms: Option<i64>) -> u64 {
    match at_server_ms {
        Some(at) if playing => {
            // Saturating: `at` is the client's, any i64.
            let delta = protocol::now_ms().saturating_sub(at);
            if delta.unsigned_abs() <= protocol::MAX_AT_SERVER_SKEW_MS.unsigned_abs() {
                protocol::advance(position_ms, delta)
            } else {
                position_ms
            }
        }
        _ => position_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn position_carried_only_within_skew() {
        let now = protocol::now_ms();
        let p = carried_position(1_000, true, Some(now - 200));
        assert!((1_200..1_300).contains(&p), "{p}");
        assert_eq!(carried_position(1_000, true, Some(now - 60_000)), 1_000);
        assert_eq!(carried_position(1_000, false, Some(now - 200)), 1_000);
        assert_eq!(carried_position(1_000, true, None), 1_000);
    }

    /// Overflowed (a panic in a debug build) before it saturated.
    #[test]
    fn extreme_at_server_ms_leaves_the_position_alone() {
        assert_eq!(carried_position(1_000, true, Some(i64::MIN)), 1_000);
        assert_eq!(carried_position(1_000, true, Some(i64::MAX)), 1_000);
        assert_eq!(
            carried_position(u64::MAX, true, Some(i64::MIN + 1)),
            u64::MAX
        );
    }
}
