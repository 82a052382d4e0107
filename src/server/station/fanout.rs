//! A station's fan-out: a few shard tasks, each owning a share of the
//! station's listeners, that write every new state to their sockets in a
//! loop.
//!
//! Why: with a task per listener woken per update, a delivery cost a task
//! wake-up, a re-registration on the station's cell and a framing and copy of
//! the payload, about twice what the kernel's write costs (bench/RESULTS.md).
//! Here a state's frame is built once, header and payload ([`wire_frame`]:
//! server frames are unmasked, so the bytes are the same for everyone), and a
//! shard writes it to each of its listeners with one non-blocking `write`
//! ([`Outlet::deliver`]). A listener's own task is woken only when its socket
//! would block, a write was cut short, or it was busy writing frames of its
//! own; it then catches up with the newest state itself, as before.
//!
//! One shard per runtime worker thread, so a fan-out to a large station uses
//! every core; listeners are dealt to shards in turn. A shard waits on the
//! station's cell, so updates that arrive while it writes conflate: it wakes
//! once and writes the newest. Its list of listeners is its own, changed only
//! through its channel, so no lock is held while it writes.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::view::{View, wire_frame};
use crate::protocol::{self, StationName};
use crate::server::metrics::Metrics;
use crate::server::outlet::{Delivery, Outlet, Wanted};

/// A change to a shard's listeners.
pub(crate) enum Membership {
    /// Write to this outlet while it is attached under this generation.
    Join(Arc<Outlet>, u64),
    Leave(Arc<Outlet>),
}

/// The frames of one view, built once per shard: the notice of the
/// station's going live or offline, and the newest `sync`.
struct Frames {
    /// The view's liveness mark ([`View::mark`]).
    mark: u64,
    seq: u64,
    notice: Bytes,
    sync: Option<Bytes>,
}

impl Frames {
    fn of(station: &StationName, view: &View) -> Self {
        let notice = view.notice(station);
        Self {
            mark: view.mark(),
            seq: view.state.as_ref().map_or(0, |s| s.sync.seq),
            notice: wire_frame(protocol::encode(&notice).as_bytes()),
            sync: view.state.as_ref().map(|s| s.wire.clone()),
        }
    }

    /// What a listener that was sent `sent` and told mark `told` lacks.
    fn lacks(&self, sent: u64, told: u64) -> Option<Wanted<'_>> {
        let notice: &[u8] = if told != self.mark { &self.notice } else { &[] };
        let sync: &[u8] = match &self.sync {
            Some(s) if self.seq > sent => s,
            _ => &[],
        };
        (!notice.is_empty() || !sync.is_empty()).then_some(Wanted {
            frames: [notice, sync],
            seq: if sync.is_empty() { sent } else { self.seq },
            told: self.mark,
        })
    }
}

/// One shard: its listeners, and the station's cell it watches.
pub(crate) struct Shard {
    station: StationName,
    view: watch::Receiver<Arc<View>>,
    members: mpsc::UnboundedReceiver<Membership>,
    /// Each listener's outlet and the generation it joined with.
    outlets: Vec<(Arc<Outlet>, u64)>,
    metrics: Arc<Metrics>,
}

impl Shard {
    pub(crate) fn new(
        station: StationName,
        view: watch::Receiver<Arc<View>>,
        members: mpsc::UnboundedReceiver<Membership>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            station,
            view,
            members,
            outlets: Vec::new(),
            metrics,
        }
    }

    /// Serves until the station is gone or the server stops.
    pub(crate) async fn run(mut self, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return,
                m = self.members.recv() => match m {
                    Some(m) => self.apply(m),
                    None => return,
                },
                changed = self.view.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    // Joins queued before this view was published are in.
                    while let Ok(m) = self.members.try_recv() {
                        self.apply(m);
                    }
                    let view = self.view.borrow_and_update().clone();
                    self.fan_out(&view);
                }
            }
        }
    }

    fn apply(&mut self, m: Membership) {
        match m {
            Membership::Join(outlet, generation) => {
                outlet.set_slot(self.outlets.len());
                self.outlets.push((outlet, generation));
            }
            Membership::Leave(outlet) => {
                // The slot is a hint: a listener that re-tunes joins its new
                // shard (which sets the slot) while its old one may not have
                // taken the leave yet, on another thread.
                let hinted = outlet.slot();
                let i = if self
                    .outlets
                    .get(hinted)
                    .is_some_and(|(o, _)| Arc::ptr_eq(o, &outlet))
                {
                    Some(hinted)
                } else {
                    self.outlets
                        .iter()
                        .position(|(o, _)| Arc::ptr_eq(o, &outlet))
                };
                if let Some(i) = i {
                    self.outlets.swap_remove(i);
                    if let Some((moved, _)) = self.outlets.get(i) {
                        moved.set_slot(i);
                    }
                }
            }
        }
    }

    fn fan_out(&self, view: &View) {
        if self.outlets.is_empty() {
            return;
        }
        let frames = Frames::of(&self.station, view);
        let (mut syncs, mut skipped) = (0u64, 0u64);
        for (outlet, generation) in &self.outlets {
            let mut wrote_sync = false;
            let delivery = outlet.deliver(*generation, |sent, told| {
                let wanted = frames.lacks(sent, told)?;
                wrote_sync = !wanted.frames[1].is_empty();
                Some(wanted)
            });
            match delivery {
                Delivery::Written if wrote_sync => syncs += 1,
                Delivery::Skipped => skipped += 1,
                _ => {}
            }
        }
        self.metrics.syncs_sent.inc_by(syncs);
        self.metrics.fanout_skipped.inc_by(skipped);
        // Once per pass that had a state to deliver, not per delivery.
        if let Some(state) = view.state.as_ref().filter(|_| syncs + skipped > 0) {
            self.metrics
                .fanout_seconds
                .observe(state.published.elapsed());
        }
    }
}
