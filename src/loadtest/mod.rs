//! `radio loadtest`: the stress generator, and the instrument behind every
//! performance figure the project states.
//!
//! The parent process plans the run, plays one broadcaster per station
//! ([`broadcaster`]), and starts worker processes of the same binary
//! (`radio loadtest-worker`, [`worker`]) that hold the listeners, because one
//! process may only open so many sockets. A run has three phases:
//!
//! 1. **Ramp**: the broadcasters claim their stations and send a first
//!    update; the workers connect their listeners (at `--connect-rate`, or as
//!    fast as the server accepts) and tune each in.
//! 2. **Run**: for `--duration`, every broadcaster sends an update every
//!    `--update-interval`; every listener measures every sync it receives.
//! 3. **Finish**: the parent tells the workers each station's newest `seq`;
//!    they wait until their listeners hold it (bounded), then report their
//!    HDR histograms as `(value, count)` pairs, which the parent merges
//!    ([`stats`]) into one report ([`report`]).
//!
//! With `--listen-only` it plays no broadcaster: the listeners tune to
//! stations that already play (a server-run station), and one observer per
//! station ([`observer`]) counts what the server publishes during the run.
//!
//! With `--stream` the listeners are HTTP audio stream readers instead
//! ([`stream`]): the same workers and source addresses, no broadcaster.
//!
//! Numbers are only as honest as the generator is idle, so it also measures
//! its own CPU and warns when it used most of the machine.

pub(crate) mod broadcaster;
mod fleet;
mod marks;
pub(crate) mod media;
pub(crate) mod net;
mod observer;
mod phases;
pub(crate) mod plan;
pub(crate) mod progress;
pub(crate) mod report;
pub(crate) mod stats;
pub(crate) mod stream;
pub(crate) mod worker;

use std::process::ExitCode;

pub(crate) use worker::worker_main;

use crate::cli::LoadtestArgs;
use phases::{RunPlan, Session};

/// Runs `radio loadtest`: plans the run, starts the broadcasters and the
/// workers, ramps, runs, finishes, and reports.
pub(crate) async fn run(args: LoadtestArgs) -> anyhow::Result<ExitCode> {
    if args.stream {
        return stream::run(args).await;
    }
    let plan = RunPlan::new(&args).await?;
    let mut session = Session::start(args, plan).await?;
    let after_ramp = session.ramp().await?;
    let outcomes = session.run(&after_ramp).await?;
    let reports = session.finish(&outcomes).await?;
    session.report(&outcomes, &reports)
}
