//! The drift policy: what the mpv follower does at one measurement, as a
//! pure function of what mpv says of itself, the measured drift, where the
//! station is and where its track ends. `follow` gathers these and applies
//! the answer; the rules and their numbers are here, with a table of cases.
//!
//! The web player's `correct()` (src/server/player/app.js) applies rules of
//! the same kind to its media element, with these numbers: measured every
//! 200 ms, a seek over 300 ms, a nudge of 1-5 % over 40 ms until within
//! 15 ms, a seek lead of at most 500 ms. mpv's differ because its
//! `time-pos` moves in audio-buffer steps, so one reading may be tens of
//! ms off: a nudge goes on the median of [`SAMPLES`] readings and stops at
//! [`NUDGE_OVER_MS`] (15 ms is inside the noise), a seek needs one reading
//! a second off, and each reading costs IPC round trips, hence every
//! 500 ms. docs/player.md has the two side by side.

/// Drift beyond this (one reading): seek.
pub(crate) const SEEK_OVER_MS: f64 = 1_000.0;
/// Drift beyond this (the median of the last readings): nudge the speed,
/// until back within it.
pub(crate) const NUDGE_OVER_MS: f64 = 40.0;
/// Drift readings the nudge decides on (their median: mpv's position
/// moves in audio-buffer steps, so one reading may be tens of ms off).
pub(crate) const SAMPLES: usize = 3;
/// The largest speed nudge (±5 %).
pub(crate) const MAX_NUDGE: f64 = 0.05;
/// Seeks are aimed at most this far ahead.
pub(crate) const MAX_LEAD_MS: f64 = 500.0;

/// What the follower last made mpv do.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Phase {
    /// The track has just loaded (`file-loaded`): nothing sought yet.
    Loaded,
    /// Paused with the station, sought to its position `at_ms`.
    Held { at_ms: u64 },
    /// Playing.
    Playing,
}

/// mpv's state at a measurement.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Reading {
    pub phase: Phase,
    /// mpv stopped at the file's end (`eof-reached`).
    pub at_eof: bool,
}

/// mpv's position less the station's, in ms (positive: mpv is ahead).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Drift {
    /// This reading's.
    pub latest: f64,
    /// The median of the last [`SAMPLES`] readings (this one included).
    pub median: f64,
}

/// Where the station is now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Expected {
    pub position_ms: f64,
    pub playing: bool,
    /// How late a seek lands (learned): a seek while playing aims this far
    /// ahead of the station.
    pub lead_ms: f64,
}

/// What to make mpv do.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Action {
    /// The station is at (or about to reach) the track's end: no seek, no
    /// nudge; mpv plays to its end and waits there (`--keep-open`).
    Ended,
    /// The station is paused: pause at speed 1, seeking to `seek_to` first
    /// when given.
    Hold { seek_to: Option<f64> },
    /// Far off: seek to `to_ms` (the station plus the lead) and play at
    /// speed 1.
    Seek { to_ms: f64 },
    /// Play at this speed (1: in sync, or nothing to go on yet).
    Play { speed: f64 },
}

/// What to do at one measurement; `end` is where the track ends (the
/// station's duration or mpv's file, whichever is shorter), if known.
pub(crate) fn decide(
    reading: &Reading,
    drift: Drift,
    expected: &Expected,
    end: Option<f64>,
) -> Action {
    let Expected {
        position_ms: station,
        playing,
        lead_ms,
    } = *expected;
    if playing && end.is_some_and(|end| station >= end - NUDGE_OVER_MS) {
        return Action::Ended;
    }
    if !playing {
        // Paused, mpv reports its position less the audio it holds
        // buffered: sought once to the station's position, that reading is
        // not chased until the station moves.
        let held_here = reading.phase
            == Phase::Held {
                at_ms: station as u64,
            };
        let seek =
            reading.phase == Phase::Loaded || (!held_here && drift.latest.abs() > NUDGE_OVER_MS);
        return Action::Hold {
            seek_to: seek.then_some(station),
        };
    }
    // A second off is no jitter: the station moved, or mpv stalled.
    if reading.phase == Phase::Loaded || reading.at_eof || drift.latest.abs() >= SEEK_OVER_MS {
        return Action::Seek {
            to_ms: station + lead_ms,
        };
    }
    if matches!(reading.phase, Phase::Held { .. }) {
        // Its paused readings were off by its audio buffer: measure anew.
        return Action::Play { speed: 1.0 };
    }
    Action::Play {
        speed: nudge(drift.median),
    }
}

/// The speed that brings a `drift` back: 1 within [`NUDGE_OVER_MS`]; else
/// 1-5 %, more the further off, faster when behind.
pub(crate) fn nudge(drift: f64) -> f64 {
    if drift.abs() <= NUDGE_OVER_MS {
        return 1.0;
    }
    let k = (0.01 + drift.abs() / 5_000.0).min(MAX_NUDGE);
    if drift < 0.0 { 1.0 + k } else { 1.0 - k }
}

/// The lead after a seek aimed `lead` ahead landed `drift` off: late
/// (negative) adds to it, early takes from it, within 0 and [`MAX_LEAD_MS`].
pub(crate) fn learn_lead(lead: f64, drift: f64) -> f64 {
    (lead - drift).clamp(0.0, MAX_LEAD_MS)
}

/// The median of a few readings (the mean of the middle two when even).
pub(crate) fn median(v: impl IntoIterator<Item = f64>) -> f64 {
    let mut sorted: Vec<f64> = v.into_iter().collect();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAYING: Reading = Reading {
        phase: Phase::Playing,
        at_eof: false,
    };

    fn drift(latest: f64, median: f64) -> Drift {
        Drift { latest, median }
    }

    fn station(position_ms: f64, playing: bool) -> Expected {
        Expected {
            position_ms,
            playing,
            lead_ms: 100.0,
        }
    }

    /// What, mpv's reading, the drift, the station, the track's end, and
    /// the action wanted.
    type Case = (&'static str, Reading, Drift, Expected, Option<f64>, Action);

    #[test]
    fn decisions() {
        let loaded = Reading {
            phase: Phase::Loaded,
            at_eof: false,
        };
        let held = Reading {
            phase: Phase::Held { at_ms: 5_000 },
            at_eof: false,
        };
        let at_eof = Reading {
            at_eof: true,
            ..PLAYING
        };
        let end = Some(60_000.0);
        #[rustfmt::skip]
        let table: &[Case] = &[
            ("in sync", PLAYING, drift(10.0, 5.0), station(5_000.0, true), end,
                Action::Play { speed: 1.0 }),
            ("behind: faster", PLAYING, drift(-100.0, -100.0), station(5_000.0, true), end,
                Action::Play { speed: 1.03 }),
            ("ahead: slower", PLAYING, drift(100.0, 100.0), station(5_000.0, true), end,
                Action::Play { speed: 0.97 }),
            ("one odd reading: the median decides", PLAYING, drift(90.0, 10.0), station(5_000.0, true), end,
                Action::Play { speed: 1.0 }),
            ("a second off: seek ahead by the lead", PLAYING, drift(-1_000.0, -30.0), station(5_000.0, true), end,
                Action::Seek { to_ms: 5_100.0 }),
            ("just loaded: seek whatever the drift", loaded, drift(0.0, 0.0), station(5_000.0, true), end,
                Action::Seek { to_ms: 5_100.0 }),
            ("mpv at its end, the station not: seek", at_eof, drift(0.0, 0.0), station(5_000.0, true), end,
                Action::Seek { to_ms: 5_100.0 }),
            ("the station at the end: wait there", PLAYING, drift(-3_000.0, -3_000.0), station(59_970.0, true), end,
                Action::Ended),
            ("end unknown: no end", PLAYING, drift(10.0, 10.0), station(59_970.0, true), None,
                Action::Play { speed: 1.0 }),
            ("resumed after a pause: speed 1, measure anew", held, drift(-200.0, -200.0), station(5_000.0, true), end,
                Action::Play { speed: 1.0 }),
            ("paused: seek to the station", PLAYING, drift(300.0, 300.0), station(7_000.0, false), end,
                Action::Hold { seek_to: Some(7_000.0) }),
            ("paused, close enough: stay", PLAYING, drift(20.0, 20.0), station(7_000.0, false), end,
                Action::Hold { seek_to: None }),
            ("paused there already: its buffer is not chased", held, drift(-200.0, -200.0), station(5_000.0, false), end,
                Action::Hold { seek_to: None }),
            ("paused, the station moved: seek", held, drift(-2_000.0, -2_000.0), station(7_000.0, false), end,
                Action::Hold { seek_to: Some(7_000.0) }),
            ("loaded paused: seek whatever the drift", loaded, drift(0.0, 0.0), station(7_000.0, false), end,
                Action::Hold { seek_to: Some(7_000.0) }),
            ("paused at the end: held, not ended", PLAYING, drift(0.0, 0.0), station(60_000.0, false), end,
                Action::Hold { seek_to: None }),
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
            (0.0, 1.0),
            (40.0, 1.0),
            (-40.0, 1.0),
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
    fn the_lead_learns_where_seeks_land() {
        assert_eq!(learn_lead(0.0, -120.0), 120.0, "late: aim further ahead");
        assert_eq!(learn_lead(120.0, 20.0), 100.0, "early: a little less");
        assert_eq!(learn_lead(50.0, 80.0), 0.0, "never behind");
        assert_eq!(learn_lead(400.0, -300.0), MAX_LEAD_MS, "at most");
    }

    #[test]
    fn median_of_readings() {
        assert_eq!(median([30.0, -40.0, 25.0]), 25.0);
        assert_eq!(median([10.0, 20.0]), 15.0);
        assert_eq!(median([]), 0.0);
    }
}
