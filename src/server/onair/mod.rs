//! Stations the server runs itself (`radio serve --station NAME=SOURCE`):
//! each plays its source for ever, a track from 0 to its end, then the
//! next, with no broadcaster, and listeners cannot tell it from a shell
//! station. A broadcaster may take one over; the station comes back to its
//! source when the broadcaster stops or its grace period ends.
//!
//! - [`spec`]: `NAME=SOURCE[,shuffle]` as written (parsed by clap);
//! - [`source`]: a SOURCE resolved against the library (a playlist, a
//!   folder of it, all of it);
//! - [`rotation`]: the order, pass after pass, shuffled or not;
//! - [`driver`]: the task that publishes each track at its start and
//!   sleeps until its end, through the backend's hold
//!   ([`Backend::claim_auto`]).

mod driver;
mod rotation;
mod source;
pub(crate) mod spec;

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::errors::Usage;
use crate::server::backend::Backend as _;
use crate::server::backend::any::AnyBackend;
use crate::server::media::Library;
use crate::server::station::Unplayable;
pub use spec::StationSpec;

/// What a server-run station's player hears from outside: the SIGHUPs
/// (each reads a playlist again), and the tracks every listener of a
/// station could not play (its player then moves on).
pub(crate) struct Cues<'a> {
    pub hangups: &'a watch::Receiver<u64>,
    pub unplayable: &'a Arc<Unplayable>,
}

/// The first id a server's own hold owns its station with, counting down;
/// connections count up from 1, so the two never meet.
const FIRST_HOLD_ID: u64 = u64::MAX;

/// Refuses what cannot run before anything starts: a station named twice.
/// In cluster mode every node may name a station: its nodes take turns
/// through the station's lease (`backend::redis::auto`).
pub(crate) fn check(stations: &[StationSpec]) -> Result<(), Usage> {
    let mut seen = HashSet::new();
    for s in stations {
        if !seen.insert(&s.name) {
            return Err(Usage(format!(
                "--station names the station {} twice; give each station one SOURCE",
                s.name
            )));
        }
    }
    Ok(())
}

/// Resolves each station's source against the library, seats the server's
/// player on it and starts its driver in `tasks`. A source that cannot be
/// read, or resolves to no playable track, is a usage error: the server
/// does not start.
pub(crate) async fn start(
    stations: &[StationSpec],
    media_dir: Option<&Path>,
    backend: &AnyBackend,
    media: &Arc<Library>,
    cues: Cues<'_>,
    tasks: &TaskTracker,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let root = media_dir.map(|d| std::path::absolute(d).unwrap_or_else(|_| d.to_path_buf()));
    let index = media.index();
    let mut ready = Vec::with_capacity(stations.len());
    for spec in stations {
        let bad = |why: String| Usage(format!("--station {spec}: {why}"));
        let mut source =
            source::Source::open(spec.name.clone(), &spec.source, root.as_deref()).map_err(bad)?;
        let tracks = source.first_pass(&index).map_err(bad)?;
        tracing::info!(station = %spec.name, source = %spec.source, tracks = tracks.len(), shuffle = spec.shuffle, "server-run station");
        ready.push((spec, source));
    }
    drop(index);
    for (i, (spec, source)) in ready.into_iter().enumerate() {
        let id = FIRST_HOLD_ID - i as u64;
        let hold = backend
            .claim_auto(id, &spec.name)
            .await
            .map_err(|refusal| {
                Usage(format!(
                    "--station {spec}: the server cannot run it: {refusal}"
                ))
            })?;
        let driver = driver::Driver {
            name: spec.name.clone(),
            source,
            rotation: rotation::Rotation::new(spec.shuffle, fastrand::Rng::new()),
            media: media.clone(),
            hold,
            hangups: cues.hangups.clone(),
            failures: cues.unplayable.watch(),
            unplayable: cues.unplayable.clone(),
            shutdown: shutdown.clone(),
        };
        tasks.spawn(driver.run());
    }
    Ok(())
}
