//! Listeners' reports that they cannot play their station's current track
//! (`cannot_play`): one tally per station, of its current track only, which
//! counts each listener once and forgets it when it tunes out, so "every
//! listener failed" is measured against the listeners there are now.

use std::sync::Mutex;

/// A station's tally of the listeners that cannot play its current track.
#[derive(Debug, Default)]
pub(crate) struct Reports(Mutex<Tally>);

#[derive(Debug, Default)]
struct Tally {
    /// The track reported; a report of another track starts a new tally.
    track: String,
    /// Numbers each tally from 1, so a listener's report names the tally
    /// it counts in (and a listener of an older tally is not withdrawn
    /// from this one).
    generation: u64,
    /// Listeners, still tuned, that reported the track.
    reporters: u64,
    /// The first report's reason.
    reason: Option<String>,
    /// The track was found failed by every listener (once per tally).
    failed: bool,
}

/// What a report came to.
#[derive(Debug, PartialEq)]
pub(crate) enum Reported {
    /// The track is not what the station plays now (it moved on meanwhile).
    Stale,
    /// This listener had reported it already.
    Again,
    /// Counted; some listeners have not reported it.
    Counted,
    /// Counted, and now every listener (at least one) has reported it:
    /// said once per track.
    EveryListener {
        listeners: u64,
        reason: Option<String>,
    },
}

impl Reports {
    /// A listener reports it cannot play `track`, which the station plays
    /// now when `current` is it; `mark` is the listener's own record of the
    /// tally it counts in (0: none), and `listeners` the station's local
    /// listeners now.
    pub(crate) fn report(
        &self,
        mark: &mut u64,
        track: &str,
        current: Option<&str>,
        reason: Option<&str>,
        listeners: u64,
    ) -> Reported {
        if current != Some(track) {
            return Reported::Stale;
        }
        let mut t = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if t.generation == 0 || t.track != track {
            t.generation += 1;
            t.track = track.to_owned();
            t.reporters = 0;
            t.reason = None;
            t.failed = false;
        }
        if *mark == t.generation {
            return Reported::Again;
        }
        *mark = t.generation;
        t.reporters += 1;
        if t.reason.is_none() {
            t.reason = reason.map(str::to_owned);
        }
        if t.failed || t.reporters < listeners.max(1) {
            return Reported::Counted;
        }
        t.failed = true;
        Reported::EveryListener {
            listeners: t.reporters,
            reason: t.reason.clone(),
        }
    }

    /// A listener that reported in tally `mark` tunes out: it no longer
    /// counts.
    pub(crate) fn withdraw(&self, mark: u64) {
        let mut t = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if mark == t.generation {
            t.reporters = t.reporters.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listener_counted_once_and_only_while_tuned() {
        let r = Reports::default();
        let (mut a, mut b, mut c) = (0, 0, 0);
        let now = Some("x.mp3");
        assert_eq!(r.report(&mut a, "old.mp3", now, None, 2), Reported::Stale);
        assert_eq!(
            r.report(&mut a, "x.mp3", now, Some("404"), 2),
            Reported::Counted
        );
        assert_eq!(r.report(&mut a, "x.mp3", now, None, 2), Reported::Again);
        // A leaves and C comes: C's report is the second, not the last.
        r.withdraw(a);
        assert_eq!(r.report(&mut c, "x.mp3", now, None, 2), Reported::Counted);
        let all = r.report(&mut b, "x.mp3", now, None, 2);
        assert_eq!(
            all,
            Reported::EveryListener {
                listeners: 2,
                reason: Some("404".into())
            }
        );
        // Said once per track.
        let mut d = 0;
        assert_eq!(r.report(&mut d, "x.mp3", now, None, 3), Reported::Counted);
        // The next track starts afresh; a withdrawal of the old tally
        // leaves it alone.
        let next = Some("y.mp3");
        let mut e = 0;
        assert!(matches!(
            r.report(&mut e, "y.mp3", next, None, 1),
            Reported::EveryListener { listeners: 1, .. }
        ));
        r.withdraw(b);
        let mut f = 0;
        assert_eq!(r.report(&mut f, "y.mp3", next, None, 2), Reported::Counted);
    }
}
