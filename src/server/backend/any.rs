//! [`AnyBackend`]: the backend this node runs, as an enum whose arms are
//! one-line delegates to the backends (static dispatch; the Redis arms boxed,
//! see the parent module).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Backend, Handed, OwnedStation, local, redis};
use crate::protocol::{StationName, StationSummary, SyncState};
use crate::server::history::Played;
use crate::server::metrics::{Link, Metrics};
use crate::server::refusal::Refusal;
use crate::server::station::{Beat, Playback, Tuned};

/// Which backend `radio serve` runs, from its flags.
#[derive(Clone, Debug)]
pub enum BackendConfig {
    /// In memory; `grace` is how long a disconnected broadcaster may resume.
    Local { grace: Duration },
    /// Through Redis (`--redis`).
    Redis(redis::Config),
}

impl BackendConfig {
    /// How long a disconnected broadcaster may resume its station.
    pub(crate) fn grace(&self) -> Duration {
        match self {
            Self::Local { grace } => *grace,
            Self::Redis(cfg) => cfg.grace,
        }
    }
}

/// The backend this node runs.
#[derive(Clone)]
pub(crate) enum AnyBackend {
    Local(local::Local),
    Redis(redis::Redis),
}

/// A hold on a station of [`AnyBackend`].
pub(crate) enum AnyOwned {
    Local(local::LocalOwned),
    Redis(redis::RedisOwned),
}

impl AnyBackend {
    /// Starts the configured backend and its background tasks (in `tasks`,
    /// stopped by `shutdown`).
    /// `max_stations` bounds the stations live or in grace at once (in
    /// cluster mode, over the cluster).
    pub(crate) fn start(
        config: BackendConfig,
        max_stations: usize,
        metrics: Arc<Metrics>,
        tasks: TaskTracker,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        Ok(match config {
            BackendConfig::Local { grace } => AnyBackend::Local(local::Local::new(
                grace,
                max_stations,
                metrics,
                tasks,
                shutdown,
            )),
            BackendConfig::Redis(mut cfg) => {
                cfg.max_stations = max_stations;
                AnyBackend::Redis(redis::Redis::start(cfg, metrics, tasks, shutdown)?)
            }
        })
    }

    /// At start, an error if the backend's store refuses this node's
    /// credentials (a wrong Redis password): the server should not start.
    pub(crate) async fn check_credentials(&self) -> anyhow::Result<()> {
        match self {
            AnyBackend::Local(_) => Ok(()),
            AnyBackend::Redis(b) => b.check_credentials().await,
        }
    }
}

impl Backend for AnyBackend {
    type Owned = AnyOwned;

    fn answers_at_once(&self) -> bool {
        match self {
            AnyBackend::Local(b) => b.answers_at_once(),
            AnyBackend::Redis(b) => b.answers_at_once(),
        }
    }

    fn readiness(&self) -> Result<(), String> {
        match self {
            AnyBackend::Local(b) => b.readiness(),
            AnyBackend::Redis(b) => b.readiness(),
        }
    }

    fn link(&self) -> Option<Link> {
        match self {
            AnyBackend::Local(b) => b.link(),
            AnyBackend::Redis(b) => b.link(),
        }
    }

    fn local_listeners(&self) -> Vec<(StationName, u64)> {
        match self {
            AnyBackend::Local(b) => b.local_listeners(),
            AnyBackend::Redis(b) => b.local_listeners(),
        }
    }

    async fn claim(
        &self,
        conn: u64,
        name: &StationName,
        resume_token: Option<&str>,
    ) -> Result<AnyOwned, Refusal> {
        match self {
            AnyBackend::Local(b) => b.claim(conn, name, resume_token).await.map(AnyOwned::Local),
            AnyBackend::Redis(b) => Box::pin(b.claim(conn, name, resume_token))
                .await
                .map(AnyOwned::Redis),
        }
    }

    async fn tune_in(&self, name: &StationName) -> Result<Tuned, Refusal> {
        match self {
            AnyBackend::Local(b) => b.tune_in(name).await,
            AnyBackend::Redis(b) => Box::pin(b.tune_in(name)).await,
        }
    }

    async fn list(&self) -> Result<Vec<StationSummary>, Refusal> {
        match self {
            AnyBackend::Local(b) => b.list().await,
            AnyBackend::Redis(b) => Box::pin(b.list()).await,
        }
    }

    async fn is_live(&self, name: &StationName) -> bool {
        match self {
            AnyBackend::Local(b) => b.is_live(name).await,
            AnyBackend::Redis(b) => Box::pin(b.is_live(name)).await,
        }
    }

    async fn claim_auto(&self, conn: u64, name: &StationName) -> Result<AnyOwned, Refusal> {
        match self {
            AnyBackend::Local(b) => b.claim_auto(conn, name).await.map(AnyOwned::Local),
            AnyBackend::Redis(b) => Box::pin(b.claim_auto(conn, name))
                .await
                .map(AnyOwned::Redis),
        }
    }

    async fn history(&self, name: &StationName) -> Result<Option<Vec<Played>>, Refusal> {
        match self {
            AnyBackend::Local(b) => b.history(name).await,
            AnyBackend::Redis(b) => Box::pin(b.history(name)).await,
        }
    }
}

impl OwnedStation for AnyOwned {
    fn name(&self) -> &StationName {
        match self {
            AnyOwned::Local(o) => o.name(),
            AnyOwned::Redis(o) => o.name(),
        }
    }

    fn token(&self) -> &str {
        match self {
            AnyOwned::Local(o) => o.token(),
            AnyOwned::Redis(o) => o.token(),
        }
    }

    fn current(&self) -> Option<SyncState> {
        match self {
            AnyOwned::Local(o) => o.current(),
            AnyOwned::Redis(o) => o.current(),
        }
    }

    async fn update(&mut self, playback: Playback) -> Result<u64, Refusal> {
        match self {
            AnyOwned::Local(o) => o.update(playback).await,
            AnyOwned::Redis(o) => Box::pin(o.update(playback)).await,
        }
    }

    async fn heartbeat(&mut self, beat: Beat) -> Result<u64, Refusal> {
        match self {
            AnyOwned::Local(o) => o.heartbeat(beat).await,
            AnyOwned::Redis(o) => Box::pin(o.heartbeat(beat)).await,
        }
    }

    async fn stop(&mut self) -> Result<(), Refusal> {
        match self {
            AnyOwned::Local(o) => o.stop().await,
            AnyOwned::Redis(o) => Box::pin(o.stop()).await,
        }
    }

    async fn returned(&mut self) {
        match self {
            AnyOwned::Local(o) => o.returned().await,
            AnyOwned::Redis(o) => o.returned().await,
        }
    }

    fn handed(&mut self) -> Option<Handed> {
        match self {
            AnyOwned::Local(o) => o.handed(),
            AnyOwned::Redis(o) => o.handed(),
        }
    }
}
