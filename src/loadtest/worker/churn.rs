//! Churn (`--churn N/min`): once the ramp is done, listeners leave and new
//! ones take their place at a steady rate, as on a real station where
//! people tune in and out all the time. A soak needs it: a leak shows on
//! connections that come and go, not on ones held for an hour.
//!
//! One churn is one disconnect and one connect: the listener's task is
//! aborted (its socket closes as a closed tab's does, without a close
//! frame) and a new listener takes its slot, through the same handshake
//! and `tune_in` as in the ramp. Slots are churned in turn, so over a long
//! run every listener is replaced about equally often.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::Semaphore;

use super::connection;
use super::ctx::{CONNECTED, Ctx, PENDING};
use crate::loadtest::plan::MAX_INFLIGHT_HANDSHAKES;

/// Churns this worker's share of `--churn` until the worker ends. Does
/// nothing without churn.
pub(super) async fn run(ctx: Arc<Ctx>) {
    let per_min = ctx.plan.churn_per_min;
    let count = ctx.plan.count;
    if per_min <= 0.0 || count == 0 {
        return;
    }
    let gap = Duration::from_secs_f64(60.0 / per_min);
    let inflight = Arc::new(Semaphore::new(MAX_INFLIGHT_HANDSHAKES));
    let mut tick = tokio::time::interval(gap);
    // Behind schedule (a busy machine), catch up at once: the rate is the
    // figure the run states.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    tick.tick().await;
    let mut cursor = fastrand::usize(0..count);
    loop {
        tick.tick().await;
        // The next connected slot; none at all (every listener is down)
        // skips this turn.
        let Some(local) = (0..count)
            .map(|k| (cursor + k) % count)
            .find(|&l| ctx.state[l].load(Ordering::Relaxed) == CONNECTED)
        else {
            continue;
        };
        cursor = (local + 1) % count;
        let Ok(permit) = inflight.clone().acquire_owned().await else {
            return;
        };
        if let Some(task) = ctx.tasks.take(local) {
            task.abort();
        }
        ctx.state[local].store(PENDING, Ordering::Relaxed);
        ctx.connected.fetch_sub(1, Ordering::Relaxed);
        ctx.churned.fetch_add(1, Ordering::Relaxed);
        let task = tokio::spawn(connection::listener(ctx.clone(), local, permit));
        ctx.tasks.set(local, task.abort_handle());
    }
}
