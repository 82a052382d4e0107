//! [`Shared`]: the state every connection and request handler holds, and
//! how it is put together at start.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::server::backend::Backend as _;
use crate::server::backend::any::{AnyBackend, BackendConfig};
use crate::server::config::{ConnConfig, MediaConfig, ServerConfig};
use crate::server::media::{self, Library};
use crate::server::metrics::{Metrics, Scrape};
use crate::server::sessions::{self, Sessions};

/// State shared by every connection and request handler.
pub struct Shared {
    pub conn: ConnConfig,
    pub handshake_timeout: Duration,
    pub backend: AnyBackend,
    pub metrics: Arc<Metrics>,
    pub shutdown: CancellationToken,
    pub tasks: TaskTracker,
    /// Connection ids, for ownership and log spans.
    pub next_id: AtomicU64,
    /// When the server started: the grid keepalive pings are aligned to.
    pub started: tokio::time::Instant,
    /// One permit per WebSocket connection (`--max-connections`).
    pub permits: Arc<Semaphore>,
    pub media: Arc<Library>,
    pub sessions: Arc<Sessions>,
}

impl Shared {
    /// Loads the media library, starts the backend and the background
    /// tasks (rescans, the session sweep) in `tasks`, stopped by `shutdown`.
    pub async fn start(
        config: ServerConfig,
        tasks: &TaskTracker,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<Self> {
        let cluster = matches!(config.backend, BackendConfig::Redis(_));
        let metrics = Arc::new(Metrics::with_redis(cluster));
        let backend = AnyBackend::start(
            config.backend,
            metrics.clone(),
            tasks.clone(),
            shutdown.clone(),
        )?;
        let media = Arc::new(load_library(&config.media, shutdown).await?);
        tasks.spawn(media::rescan_task(
            media.clone(),
            config.media.rescan_interval,
            shutdown.clone(),
        ));
        let sessions = Arc::new(Sessions::new(config.sessions.ttl, config.sessions.max));
        tasks.spawn(sessions::sweep_task(
            sessions.clone(),
            config.sessions.sweep,
            shutdown.clone(),
        ));
        Ok(Self {
            conn: config.conn,
            handshake_timeout: config.handshake_timeout,
            backend,
            metrics,
            shutdown: shutdown.clone(),
            tasks: tasks.clone(),
            next_id: AtomicU64::new(1),
            started: tokio::time::Instant::now(),
            permits: Arc::new(Semaphore::new(config.max_connections)),
            media,
            sessions,
        })
    }
}

impl Shared {
    /// What `/metrics` reads when scraped: each station's listeners, the
    /// sessions, the library, the Redis link.
    pub fn scrape(&self) -> Scrape {
        let index = self.media.index();
        Scrape {
            stations: (self.backend.local_listeners().into_iter())
                .map(|(name, n)| (name.to_string(), n))
                .collect(),
            sessions: self.sessions.len(),
            library_tracks: index.len(),
            library_bytes: index.tracks().map(|t| t.size).sum(),
            redis_up: matches!(self.backend, AnyBackend::Redis(_))
                .then(|| self.backend.readiness().is_ok()),
        }
    }
}

/// Scans `--media` (off the async threads), or generates the demo library.
async fn load_library(
    config: &MediaConfig,
    shutdown: &CancellationToken,
) -> anyhow::Result<Library> {
    let cancel = shutdown.clone();
    let dir = config.dir.clone();
    let library = tokio::task::spawn_blocking(move || match dir {
        Some(dir) => Library::scan(dir, &cancel),
        None => Ok(Library::demo()),
    })
    .await??;
    tracing::info!(tracks = library.index().len(), "media library ready");
    Ok(library)
}
