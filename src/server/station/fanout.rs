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

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::view::{View, wire_frame};
use crate::protocol::{self, StationName};
use crate::server::metrics::Metrics;
use crate::server::outlet::{Delivery, Frames, Outlet};

/// A change to a shard's listeners.
pub(crate) enum Membership {
    /// Write to this outlet while it is attached under this generation.
    Join(Arc<Outlet>, u64),
    Leave(Arc<Outlet>),
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
        // The view's frames, built once for every listener of this shard;
        // what each listener lacks of them is `Sent::lacks`, as it is for
        // the listener's own task when it catches up.
        let notice = wire_frame(protocol::encode(&view.notice(&self.station)).as_bytes());
        let frames = Frames {
            mark: view.mark(),
            notice: &notice,
            newest: view.state.as_ref().map(|s| (s.sync.seq, &s.wire[..])),
        };
        let (mut syncs, mut skipped) = (0u64, 0u64);
        for (outlet, generation) in &self.outlets {
            match outlet.deliver(*generation, &frames) {
                Delivery::Written { sync: true } => syncs += 1,
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
