//! Marked moments: a fault injected from outside the run (a node killed,
//! Redis failed over) is marked by sending `radio loadtest` SIGUSR1 at that
//! moment. From each mark the parent times how long until every listener
//! holds its station's newest state again, and counts what happened until
//! the next mark (or the end): reconnects, `seq` regressions, and the
//! listeners still without a connection.
//!
//! "The newest state" is measured, not assumed: every half second the
//! parent sends the workers each station's newest acknowledged `seq`
//! ([`ParentCmd::Newest`]), and they answer with the listeners that lack it
//! or have no connection. A mark has converged once a station-wide answer
//! says none, for `seq`s every station produced after the mark: a fault
//! that stops the broadcasters cannot pass for converged.

use serde::Serialize;
use tokio::time::{Duration, Instant};

use super::plan::{ParentCmd, Progress};

/// How often the newest `seq`s go to the workers.
pub(super) const EVERY: Duration = Duration::from_millis(500);

/// One mark, as the report states it.
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct MarkReport {
    /// 1 for the first mark.
    pub n: usize,
    /// Seconds into the run phase.
    pub at_s: f64,
    /// Seconds from the mark until every listener held the newest state
    /// again; `None` if that did not happen before the next mark or the end.
    pub converged_after_s: Option<f64>,
    /// Until the next mark (or the end): listeners' reconnects, reconnect
    /// attempts that failed, and `seq` regressions seen.
    pub reconnects: u64,
    pub reconnect_failures: u64,
    pub seq_regressions: u64,
    /// At the next mark (or the end): listeners once connected and not
    /// connected then.
    pub down_at_end: u64,
}

struct Mark {
    at: Instant,
    /// Each station's newest `seq` at the mark.
    seqs_at: Vec<u64>,
    base: Progress,
    report: MarkReport,
    closed: bool,
}

/// The marks of a run, and the newest `seq`s sent to the workers.
pub(super) struct Marks {
    run_start: Option<Instant>,
    next_id: u64,
    /// The latest newest-`seq`s sent: their id and `seq`s.
    sent: (u64, Vec<u64>),
    marks: Vec<Mark>,
}

impl Marks {
    pub(super) fn new() -> Self {
        Self {
            run_start: None,
            next_id: 1,
            sent: (0, Vec::new()),
            marks: Vec::new(),
        }
    }

    pub(super) fn run_started(&mut self, at: Instant) {
        self.run_start = Some(at);
    }

    /// The command that tells the workers the stations' newest `seq`s now.
    pub(super) fn newest(&mut self, seqs: Vec<u64>) -> ParentCmd {
        let id = self.next_id;
        self.next_id += 1;
        self.sent = (id, seqs.clone());
        ParentCmd::Newest { id, seqs }
    }

    /// A mark now; `totals` are the workers' figures at this moment, `seqs`
    /// the stations' newest. Closes the mark before it. Gives its number.
    pub(super) fn mark(&mut self, totals: Progress, seqs: Vec<u64>) -> usize {
        self.close_open(&totals);
        let now = Instant::now();
        let n = self.marks.len() + 1;
        let at_s = self
            .run_start
            .map_or(0.0, |s| now.saturating_duration_since(s).as_secs_f64());
        self.marks.push(Mark {
            at: now,
            seqs_at: seqs,
            base: totals,
            report: MarkReport {
                n,
                at_s: (at_s * 10.0).round() / 10.0,
                ..MarkReport::default()
            },
            closed: false,
        });
        n
    }

    /// After a worker's report: whether the open mark has now converged;
    /// gives its number and the seconds it took, once.
    pub(super) fn check(&mut self, latest: &[Progress]) -> Option<(usize, f64)> {
        let (id, seqs) = &self.sent;
        let mark = self.marks.last_mut()?;
        if mark.closed || mark.report.converged_after_s.is_some() {
            return None;
        }
        // Every station has a state newer than at the mark, and every
        // worker has answered for those very seqs with nobody lacking it.
        let moved_on = seqs.len() == mark.seqs_at.len()
            && seqs.iter().zip(&mark.seqs_at).all(|(now, then)| now > then);
        let all_hold = latest
            .iter()
            .all(|p| p.newest_id == *id && p.behind == 0 && p.down == 0);
        if !(moved_on && all_hold) {
            return None;
        }
        let took = mark.at.elapsed().as_secs_f64();
        mark.report.converged_after_s = Some((took * 10.0).round() / 10.0);
        Some((mark.report.n, took))
    }

    fn close_open(&mut self, totals: &Progress) {
        if let Some(mark) = self.marks.last_mut().filter(|m| !m.closed) {
            mark.closed = true;
            let r = &mut mark.report;
            r.reconnects = totals.reconnects.saturating_sub(mark.base.reconnects);
            r.reconnect_failures = totals
                .reconnect_failures
                .saturating_sub(mark.base.reconnect_failures);
            r.seq_regressions = totals
                .seq_regressions
                .saturating_sub(mark.base.seq_regressions);
            r.down_at_end = totals.down;
        }
    }

    /// At the end of the run: closes the open mark; gives every mark.
    pub(super) fn finish(&mut self, totals: &Progress) -> Vec<MarkReport> {
        self.close_open(totals);
        self.marks.iter().map(|m| m.report.clone()).collect()
    }
}

/// SIGUSR1, as a stream of marks (never fires where there is none).
pub(super) struct MarkSignal(#[cfg(unix)] Option<tokio::signal::unix::Signal>);

impl MarkSignal {
    /// Listens for SIGUSR1 from now on (so it no longer ends the process).
    pub(super) fn new() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            match signal(SignalKind::user_defined1()) {
                Ok(s) => Self(Some(s)),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for SIGUSR1; no marks");
                    Self(None)
                }
            }
        }
        #[cfg(not(unix))]
        Self()
    }

    /// The next SIGUSR1.
    pub(super) async fn recv(&mut self) {
        #[cfg(unix)]
        if let Some(s) = &mut self.0 {
            if s.recv().await.is_some() {
                return;
            }
        }
        std::future::pending::<()>().await;
    }
}
