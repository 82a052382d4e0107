//! The drift policy: what the mpv follower does at one measurement, as a
//! pure function of what mpv says of itself, the measured drift, where the
//! station is and where its track ends. `follow` gathers these and applies
//! the answer; the rules and their numbers are here, with a table of cases.
//!
//! A seek is a *park*: mpv is paused and sought ahead of the station by
//! how long a seek takes (learned, apart for a seek within what mpv holds
//! cached and one that must fetch), and released (played) at the moment
//! the station reaches that position. So a seek lands where the station is
//! however long mpv took to fetch and decode, and a seek that landed late
//! anyway is aimed again rather than nudged back for seconds. While mpv
//! seeks or waits for data its position stands still: nothing is measured
//! or corrected then.
//!
//! The web player's `correct()` (src/server/player/app.js) applies the same
//! thresholds to its media element (seek over 300 ms, nudge 1-5 % over
//! 40 ms until within 15 ms); docs/player.md has the two side by side and
//! says where they still differ and why.

/// Drift beyond this (while playing): seek.
pub(crate) const SEEK_OVER_MS: f64 = 300.0;
/// Drift beyond this: nudge the speed...
pub(crate) const NUDGE_OVER_MS: f64 = 40.0;
/// ... until back within this.
pub(crate) const NUDGE_UNTIL_MS: f64 = 15.0;
/// The largest speed nudge (±5 %).
pub(crate) const MAX_NUDGE: f64 = 0.05;
/// A park that lands at most this late is released at once (a nudge makes
/// up the rest); later, it is aimed again.
pub(crate) const LATE_OK_MS: f64 = NUDGE_OVER_MS;
/// Seeks are aimed at most this far ahead: a park never waits longer.
pub(crate) const MAX_LEAD_MS: f64 = 3_000.0;
/// Added to the last seek's time when aiming the next one.
pub(crate) const LEAD_MARGIN_MS: f64 = 30.0;
/// A park lands within what mpv holds cached when this much past its
/// target is cached too (to decode from, and to play on without a stall).
pub(crate) const CACHED_PAST_MS: f64 = 500.0;
/// mpv's position gaining this much on the clock between two readings
/// (a nudge gains 5 % of [`follow::EVERY`](super::follow::EVERY)) means
/// its audio output does not play in real time (`--ao=pcm` writes a file
/// as fast as mpv decodes).
pub(crate) const TOO_FAST_BY_MS: f64 = 2_000.0;
/// mpv at its file's end while the station is this near it: the station
/// will get there; waiting beats playing the rest again. (mpv may say it
/// reached the end a few hundred ms early, with its audio buffer unplayed.)
pub(crate) const END_SLACK_MS: f64 = 1_000.0;

/// What the follower last made mpv do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Paused where it was sought (or loaded), to be released when the
    /// station gets there, or held there while the station is paused.
    Parked,
    /// Playing.
    Playing,
}

/// mpv's state at a measurement.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Reading {
    pub phase: Phase,
    /// mpv seeks or waits for data (`seeking`, `paused-for-cache`): its
    /// position stands still and says nothing of the drift.
    pub buffering: bool,
    /// mpv stopped at the file's end (`eof-reached`).
    pub at_eof: bool,
    /// The speed mpv plays at (not 1: a nudge is under way).
    pub speed: f64,
    /// How far mpv's position moved beyond the clock (at its speed) since
    /// the last reading while playing (or since its release), if any.
    pub gained_ms: Option<f64>,
    /// Where the stretch mpv holds cached around the station's position
    /// ends (`demuxer-cache-state`), if it holds that position.
    pub cached_until_ms: Option<f64>,
    /// Parked before the station, mpv fetches on from there faster than
    /// the station moves: it will soon hold where the station is.
    pub catching_up: bool,
}

/// Where the station is now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Expected {
    pub position_ms: f64,
    pub playing: bool,
    /// How long a seek is expected to take: a park aims this far ahead.
    pub leads: Leads,
}

/// How long seeks take, learned ([`learn_lead`]) apart for the two kinds.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub(crate) struct Leads {
    /// Within what mpv holds cached: decoding only.
    pub cached_ms: f64,
    /// Beyond it: a request to the server, and its answer.
    pub fetched_ms: f64,
}

/// What to make mpv do.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Action {
    /// mpv is seeking or buffering: measure nothing, change nothing.
    Wait,
    /// The station is at (or about to reach) the track's end: no seek, no
    /// nudge; mpv plays to its end and waits there (`--keep-open`).
    Ended,
    /// Pause at speed 1 and seek to `to_ms` (within what mpv holds
    /// `cached`, or not); then, the station playing, release when it gets
    /// there.
    Park { to_ms: f64, cached: bool },
    /// Parked: play in `in_ms` (0: now), when the station gets here.
    Release { in_ms: f64 },
    /// Parked where the paused station is: stay.
    Stay,
    /// Play on at this speed (1: in sync).
    Play { speed: f64 },
    /// mpv plays faster than real time: it cannot follow the station.
    TooFast,
}

/// What to do at one measurement: `drift` is mpv's position less the
/// station's, in ms (positive: mpv is ahead); `end` is where the track ends
/// (the station's duration or mpv's file, whichever is shorter), if known.
pub(crate) fn decide(
    reading: &Reading,
    drift: f64,
    expected: &Expected,
    end: Option<f64>,
) -> Action {
    let Expected {
        position_ms: station,
        playing,
        leads,
    } = *expected;
    if reading.buffering {
        return Action::Wait;
    }
    if reading.phase == Phase::Playing && reading.gained_ms.is_some_and(|g| g > TOO_FAST_BY_MS) {
        return Action::TooFast;
    }
    let slack = if reading.at_eof {
        END_SLACK_MS
    } else {
        NUDGE_OVER_MS
    };
    if playing && end.is_some_and(|end| station >= end - slack) {
        return Action::Ended;
    }
    let held = |to_ms: f64| {
        reading
            .cached_until_ms
            .is_some_and(|until| to_ms + CACHED_PAST_MS <= until)
    };
    let ahead = if held(station + leads.cached_ms) {
        Action::Park {
            to_ms: station + leads.cached_ms,
            cached: true,
        }
    } else {
        Action::Park {
            to_ms: station + leads.fetched_ms,
            cached: false,
        }
    };
    match (playing, reading.phase) {
        // Parked by a seek, mpv's position is exact: only a paused station
        // that moved is followed.
        (false, Phase::Parked) if drift.abs() <= NUDGE_UNTIL_MS => Action::Stay,
        (false, _) => Action::Park {
            to_ms: station,
            cached: held(station),
        },
        (true, Phase::Parked) => match drift {
            // Ahead: play when the station gets here (too far ahead, the
            // station went back: aim anew).
            early if early > MAX_LEAD_MS + SEEK_OVER_MS => ahead,
            early if early >= 0.0 => Action::Release { in_ms: early },
            late if late >= -LATE_OK_MS => Action::Release { in_ms: 0.0 },
            // Late, and what mpv fetches on from here gains on the
            // station: once it holds where the station is, a seek there is
            // quick; a seek before that would fetch anew.
            _ if reading.catching_up && matches!(ahead, Action::Park { cached: false, .. }) => {
                Action::Wait
            }
            _ => ahead,
        },
        (true, Phase::Playing) => {
            // At its end while the station is not, or far off: the station
            // moved, or mpv stalled.
            if reading.at_eof || drift.abs() > SEEK_OVER_MS {
                return ahead;
            }
            let nudging = reading.speed != 1.0;
            let off = drift.abs();
            if off > NUDGE_OVER_MS || (nudging && off >= NUDGE_UNTIL_MS) {
                Action::Play {
                    speed: nudge(drift),
                }
            } else {
                Action::Play { speed: 1.0 }
            }
        }
    }
}

/// The speed that brings a `drift` back: 1-5 %, more the further off,
/// faster when behind.
pub(crate) fn nudge(drift: f64) -> f64 {
    let k = (0.01 + drift.abs() / 5_000.0).min(MAX_NUDGE);
    if drift < 0.0 { 1.0 + k } else { 1.0 - k }
}

/// How far ahead to aim the next seek of a kind, now that one took
/// `took_ms`: that, and a margin. Aimed too far, a park waits (in silence)
/// for the station; too near, it lands late and is aimed again, which
/// costs less once mpv holds what follows: so the last seek is the guess,
/// not the slowest.
pub(crate) fn learn_lead(took_ms: f64) -> f64 {
    (took_ms + LEAD_MARGIN_MS).clamp(0.0, MAX_LEAD_MS)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAYING: Reading = Reading {
        phase: Phase::Playing,
        buffering: false,
        at_eof: false,
        speed: 1.0,
        gained_ms: Some(0.0),
        cached_until_ms: None,
        catching_up: false,
    };
    const PARKED: Reading = Reading {
        phase: Phase::Parked,
        gained_ms: None,
        ..PLAYING
    };

    fn station(position_ms: f64, playing: bool) -> Expected {
        Expected {
            position_ms,
            playing,
            leads: Leads {
                cached_ms: 10.0,
                fetched_ms: 100.0,
            },
        }
    }

    /// A park that must fetch, to `to_ms`.
    fn fetch(to_ms: f64) -> Action {
        Action::Park {
            to_ms,
            cached: false,
        }
    }

    /// What, mpv's reading, the drift, the station, the track's end, and
    /// the action wanted.
    type Case = (&'static str, Reading, f64, Expected, Option<f64>, Action);

    #[test]
    fn decisions() {
        let buffering = Reading {
            buffering: true,
            ..PLAYING
        };
        let nudging = Reading {
            speed: 1.02,
            ..PLAYING
        };
        let at_eof = Reading {
            at_eof: true,
            ..PLAYING
        };
        let racing = Reading {
            gained_ms: Some(40_000.0),
            ..PLAYING
        };
        let end = Some(60_000.0);
        #[rustfmt::skip]
        let table: &[Case] = &[
            ("in sync", PLAYING, 10.0, station(5_000.0, true), end,
                Action::Play { speed: 1.0 }),
            ("behind: faster", PLAYING, -100.0, station(5_000.0, true), end,
                Action::Play { speed: 1.03 }),
            ("ahead: slower", PLAYING, 100.0, station(5_000.0, true), end,
                Action::Play { speed: 0.97 }),
            ("nudging, not yet within 15 ms: on", nudging, -20.0, station(5_000.0, true), end,
                Action::Play { speed: 1.014 }),
            ("nudging, within 15 ms: stop", nudging, -10.0, station(5_000.0, true), end,
                Action::Play { speed: 1.0 }),
            ("not nudging, within 40 ms: leave it", PLAYING, -30.0, station(5_000.0, true), end,
                Action::Play { speed: 1.0 }),
            ("300 ms off: park ahead by the lead", PLAYING, -301.0, station(5_000.0, true), end,
                fetch(5_100.0)),
            ("mpv at its end, the station not: park", at_eof, 0.0, station(5_000.0, true), end,
                fetch(5_100.0)),
            ("mpv at its end, the station within a second: wait", at_eof, 0.0, station(59_100.0, true), end,
                Action::Ended),
            ("buffering: its stalled position is not chased", buffering, -900.0, station(5_000.0, true), end,
                Action::Wait),
            ("buffering while parked: wait for the seek", Reading { buffering: true, ..PARKED }, -900.0, station(5_000.0, true), end,
                Action::Wait),
            ("faster than real time", racing, 50_000.0, station(5_000.0, true), end,
                Action::TooFast),
            ("a nudge is no race", Reading { gained_ms: Some(25.0), ..PLAYING }, 0.0, station(5_000.0, true), end,
                Action::Play { speed: 1.0 }),
            ("an end said early is no race", Reading { gained_ms: Some(800.0), at_eof: true, ..PLAYING }, 700.0, station(59_300.0, true), end,
                Action::Ended),
            ("the station at the end: wait there", PLAYING, -3_000.0, station(59_970.0, true), end,
                Action::Ended),
            ("end unknown: no end", PLAYING, 10.0, station(59_970.0, true), None,
                Action::Play { speed: 1.0 }),
            ("parked ahead: release when the station gets there", PARKED, 80.0, station(5_000.0, true), end,
                Action::Release { in_ms: 80.0 }),
            ("parked a little late: release now", PARKED, -30.0, station(5_000.0, true), end,
                Action::Release { in_ms: 0.0 }),
            ("parked too late: aim again", PARKED, -200.0, station(5_000.0, true), end,
                fetch(5_100.0)),
            ("parked too late, mpv holds what follows: aim by the quick lead",
                Reading { cached_until_ms: Some(6_000.0), ..PARKED }, -200.0, station(5_000.0, true), end,
                Action::Park { to_ms: 5_010.0, cached: true }),
            ("parked too late, mpv fetching towards the station: wait for it",
                Reading { catching_up: true, ..PARKED }, -1_400.0, station(5_000.0, true), end,
                Action::Wait),
            ("parked too late, mpv fetching and holding it already: aim",
                Reading { catching_up: true, cached_until_ms: Some(6_000.0), ..PARKED }, -1_400.0, station(5_000.0, true), end,
                Action::Park { to_ms: 5_010.0, cached: true }),
            ("held, but not enough past the target: fetch", Reading { cached_until_ms: Some(5_300.0), ..PLAYING },
                -400.0, station(5_000.0, true), end,
                fetch(5_100.0)),
            ("just loaded at 0, the station at 10 s: park ahead", PARKED, -10_000.0, station(10_000.0, true), end,
                fetch(10_100.0)),
            ("parked far ahead (the station went back): aim anew", PARKED, 20_000.0, station(5_000.0, true), end,
                fetch(5_100.0)),
            ("the station pauses: park at its position", PLAYING, 300.0, station(7_000.0, false), end,
                fetch(7_000.0)),
            ("the station pauses, mpv close: park there anyway", PLAYING, 5.0, station(7_000.0, false), end,
                fetch(7_000.0)),
            ("parked where the paused station is: stay", PARKED, 0.0, station(7_000.0, false), end,
                Action::Stay),
            ("paused station moved: park there", PARKED, -2_000.0, station(7_000.0, false), end,
                fetch(7_000.0)),
            ("paused at the end: parked, not ended", PARKED, 0.0, station(60_000.0, false), end,
                Action::Stay),
        ];
        for (what, reading, drift, expected, end, want) in table {
            let got = decide(reading, *drift, expected, *end);
            let same = match (got, *want) {
                (Action::Play { speed: a }, Action::Play { speed: b }) => (a - b).abs() < 1e-9,
                (got, want) => got == want,
            };
            assert!(same, "{what}: {got:?}, want {want:?}");
        }
    }

    #[test]
    fn nudges_grow_with_the_drift_up_to_five_percent() {
        for (drift, speed) in [
            (20.0, 0.986),
            (50.0, 0.98),
            (-50.0, 1.02),
            (-150.0, 1.04),
            (-900.0, 1.05),
            (900.0, 0.95),
        ] {
            assert!(
                (nudge(drift) - speed).abs() < 1e-9,
                "{drift}: {}",
                nudge(drift)
            );
        }
    }

    #[test]
    fn the_lead_is_what_the_last_seek_took() {
        assert_eq!(learn_lead(400.0), 430.0);
        assert_eq!(learn_lead(1.0), 31.0);
        assert_eq!(learn_lead(9_000.0), MAX_LEAD_MS, "at most");
    }
}
