//! What a station's stream plays at a moment, from the station's view: a
//! pure function ([`want`]), and the rule that keeps a running decoder
//! when the station's timeline still agrees with it ([`keeps`]), so a
//! heartbeat restarts nothing and a seek or track change restarts it.

use crate::server::station::View;

/// How far a running decoder may be from the station's timeline before it
/// is restarted at the station's position: a seek shorter than this is
/// not followed, and a broadcaster's position reports jitter by less.
pub(crate) const TOLERANCE_MS: u64 = 300;

/// What the stream plays at a moment.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Want {
    /// The station went offline: the stream ends.
    End,
    /// Between tracks, or live with no track yet.
    Silence,
    /// Paused on this track: silence, under its title.
    Paused(Play),
    Play(Play),
}

/// A track at a position.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Play {
    pub track: String,
    /// The track's position at the moment asked about.
    pub position_ms: u64,
    pub gain_db: Option<f64>,
    pub title: Option<String>,
    pub artist: Option<String>,
}

/// What the station plays at `at_ms` (server time), by its newest view.
/// A playing track past its end hands over to the `next` track the
/// station announced, from its start at that end, as the synced players
/// do; the station's own `update` for it then agrees, and nothing restarts.
pub(crate) fn want(view: &View, at_ms: i64) -> Want {
    if !view.live {
        return Want::End;
    }
    let Some(state) = &view.state else {
        return Want::Silence;
    };
    let sync = &state.sync;
    let position_ms = sync.position_at(at_ms);
    let here = || Play {
        track: sync.track.clone(),
        position_ms,
        gain_db: sync.gain_db,
        title: sync.title.clone(),
        artist: sync.artist.clone(),
    };
    if !sync.playing {
        return Want::Paused(here());
    }
    let Some(end) = sync.duration_ms.filter(|end| position_ms >= *end) else {
        return Want::Play(here());
    };
    let Some(next) = &sync.next else {
        return Want::Silence;
    };
    let left = i64::try_from(end.saturating_sub(sync.position_ms)).unwrap_or(i64::MAX);
    let ended_at = sync.server_time_ms.saturating_add(left);
    let into = u64::try_from(at_ms.saturating_sub(ended_at)).unwrap_or(0);
    if next.duration_ms.is_some_and(|d| into >= d) {
        return Want::Silence;
    }
    Want::Play(Play {
        track: next.track.clone(),
        position_ms: into,
        gain_db: next.gain_db,
        title: next.title.clone(),
        artist: next.artist.clone(),
    })
}

/// Whether a decoder at `running` (the track it decodes and where it is
/// now) can go on when the station wants `wanted`.
pub(crate) fn keeps(running: (&str, u64), wanted: &Play) -> bool {
    running.0 == wanted.track && running.1.abs_diff(wanted.position_ms) <= TOLERANCE_MS
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{NextTrack, StationName, SyncCause, SyncState};
    use crate::server::station::State;

    fn view(playing: bool, position_ms: u64, next: Option<&str>) -> View {
        let sync = SyncState {
            station: StationName::new("s").unwrap(),
            seq: 1,
            track: "a.ogg".into(),
            position_ms,
            playing,
            duration_ms: Some(10_000),
            title: Some("A".into()),
            artist: None,
            gain_db: Some(-3.0),
            next: next.map(|t| NextTrack {
                track: t.into(),
                title: Some("B".into()),
                artist: None,
                duration_ms: Some(5_000),
                gain_db: None,
            }),
            server_time_ms: 1_000_000,
            cause: SyncCause::Update,
        };
        View::live(Some(State::new(sync)))
    }

    fn play(track: &str, position_ms: u64) -> Want {
        let (title, gain_db) = if track == "a.ogg" {
            ("A", Some(-3.0))
        } else {
            ("B", None)
        };
        Want::Play(Play {
            track: track.into(),
            position_ms,
            gain_db,
            title: Some(title.into()),
            artist: None,
        })
    }

    #[test]
    fn the_stream_follows_the_station() {
        let t = 1_000_000;
        // Playing: its position moves on with the clock.
        assert_eq!(
            want(&view(true, 2_000, None), t + 1_500),
            play("a.ogg", 3_500)
        );
        // Paused: silence wherever it stands, under its title.
        let Want::Play(paused) = play("a.ogg", 2_000) else {
            unreachable!()
        };
        assert_eq!(
            want(&view(false, 2_000, None), t + 1_500),
            Want::Paused(paused)
        );
        // Past the end: the announced next track from its start, or silence.
        assert_eq!(
            want(&view(true, 9_000, Some("b.ogg")), t + 1_200),
            play("b.ogg", 200)
        );
        assert_eq!(want(&view(true, 9_000, None), t + 1_200), Want::Silence);
        assert_eq!(
            want(&view(true, 9_000, Some("b.ogg")), t + 7_000),
            Want::Silence
        );
        // Live with no track yet, and offline.
        assert_eq!(want(&View::live(None), t), Want::Silence);
        let offline = View::offline(crate::protocol::OfflineReason::Stopped);
        assert_eq!(want(&offline, t), Want::End);
    }

    #[test]
    fn a_decoder_goes_on_unless_the_timeline_moved() {
        let Want::Play(p) = play("a.ogg", 5_000) else {
            unreachable!()
        };
        assert!(keeps(("a.ogg", 5_100), &p), "a heartbeat's jitter");
        assert!(!keeps(("a.ogg", 4_000), &p), "a seek");
        assert!(!keeps(("b.ogg", 5_000), &p), "another track");
    }
}
