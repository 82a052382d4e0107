//! [`Shared`]: the state every connection and request handler holds, and
//! how it is put together at start.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::server::admission::Gate;
use crate::server::backend::Backend as _;
use crate::server::backend::any::AnyBackend;
use crate::server::claims::{ClaimLimits, Claims};
use crate::server::config::{ConnConfig, MediaConfig, ServerConfig};
use crate::server::icestats;
use crate::server::keys::Keys;
use crate::server::listing::Listing;
use crate::server::media::{self, Library};
use crate::server::metrics::{Metrics, Scrape, TRACK_SERIES};
use crate::server::onair;
use crate::server::origin::{AllowedHosts, AllowedOrigins};
use crate::server::peer::TrustedProxies;
use crate::server::reload::{self, Reloader};
use crate::server::sessions::{self, Sessions};
use crate::server::station::Unplayable;
use crate::server::stream::Streams;
use crate::server::tls::Tls;
use crate::server::warnings::Warnings;

/// State shared by every connection and request handler.
pub(crate) struct Shared {
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
    /// `--max-connections` and `--max-connections-per-ip`.
    pub gate: Gate,
    pub media: Arc<Library>,
    pub sessions: Arc<Sessions>,
    /// `--allowed-origins`.
    pub origins: AllowedOrigins,
    /// `--allowed-hosts` (and the hosts of `--allowed-origins`).
    pub hosts: AllowedHosts,
    /// `--metrics-listen`: `/metrics` is served there, not on the main
    /// address.
    pub metrics_apart: bool,
    /// `--trusted-proxy`.
    pub proxies: TrustedProxies,
    /// The broadcast keys (reloaded on SIGHUP).
    pub keys: Arc<Keys>,
    /// `--max-stations-per-ip` and `--claim-rate`.
    pub claims: Claims,
    /// The `stations` answer, bounded and cached.
    pub listing: Listing,
    /// Client-caused warnings, aggregated.
    pub warnings: Warnings,
    /// `--tls-cert`: serve https and wss (reloaded on SIGHUP).
    pub tls: Option<Arc<Tls>>,
    /// Tracks listeners cannot play: for broadcasters, and `/metrics`.
    pub unplayable: Arc<Unplayable>,
    /// What `/status-json.xsl` has seen of each station.
    pub icestats: icestats::Seen,
    /// The stations' MP3 streams.
    pub streams: Streams,
    /// Plain-TCP downloads still sending their first bytes.
    pub heads: media::Heads,
}

impl Shared {
    /// Loads the media library, starts the backend and the background
    /// tasks (rescans, the session sweep) in `tasks`, stopped by `shutdown`.
    pub(crate) async fn start(
        config: ServerConfig,
        tasks: &TaskTracker,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<Self> {
        onair::check(&config.stations)?;
        let keys = Arc::new(Keys::load(config.conn.keys.clone())?);
        let tls = config.tls.clone().map(Tls::load).transpose()?.map(Arc::new);
        let metrics = Arc::new(Metrics::new());
        let claims = Claims::new(
            ClaimLimits {
                max_per_ip: config.max_stations_per_ip,
                rate_per_minute: config.claim_rate,
                grace: config.backend.grace(),
            },
            metrics.clone(),
            tasks.clone(),
            shutdown.clone(),
        );
        let backend = AnyBackend::start(
            config.backend,
            config.max_stations,
            metrics.clone(),
            tasks.clone(),
            shutdown.clone(),
        )?;
        backend.check_credentials().await?;
        let media = Arc::new(load_library(&config.media, shutdown).await?);
        media.start_measuring(tasks, shutdown);
        // SIGHUP reloads the keys and the certificate, and rescans the library.
        let mut reloaders: Vec<Reloader> = Vec::new();
        let k = keys.clone();
        reloaders.push(Box::new(move || k.reload()));
        if let Some(t) = tls.clone() {
            reloaders.push(Box::new(move || t.reload()));
        }
        let (hangup_task, hangups) = reload::hangups(reloaders, shutdown.clone());
        tasks.spawn(hangup_task);
        let (dir, stations) = (config.media.dir.as_deref(), &config.stations);
        let unplayable = Arc::new(Unplayable::default());
        let cues = onair::Cues {
            hangups: &hangups,
            unplayable: &unplayable,
        };
        onair::start(stations, dir, &backend, &media, cues, tasks, shutdown).await?;
        tasks.spawn(media::rescan_task(
            media.clone(),
            config.media.rescan_interval,
            shutdown.clone(),
            hangups,
        ));
        let sessions = Arc::new(Sessions::new(
            config.sessions.ttl,
            config.sessions.max,
            config.sessions.rate_per_minute,
        ));
        tasks.spawn(sessions::sweep_task(
            sessions.clone(),
            config.sessions.sweep,
            shutdown.clone(),
        ));
        let listing = Listing::new(config.max_list, metrics.clone());
        let streams = Streams::new(
            config.stream,
            config.conn.write_timeout,
            media.clone(),
            metrics.stream.clone(),
            tasks.clone(),
            shutdown.clone(),
        );
        Ok(Self {
            conn: config.conn,
            handshake_timeout: config.handshake_timeout,
            backend,
            metrics,
            shutdown: shutdown.clone(),
            tasks: tasks.clone(),
            next_id: AtomicU64::new(1),
            started: tokio::time::Instant::now(),
            gate: Gate::new(config.max_connections, config.max_connections_per_ip),
            media,
            sessions,
            origins: AllowedOrigins::new(&config.allowed_origins),
            hosts: AllowedHosts::new(&config.allowed_hosts, &config.allowed_origins),
            metrics_apart: config.metrics_listen.is_some(),
            proxies: TrustedProxies::new(config.trusted_proxies),
            keys,
            claims,
            listing,
            warnings: Warnings::new(),
            tls,
            unplayable,
            icestats: icestats::Seen::default(),
            streams,
            heads: Default::default(),
        })
    }
}

impl Shared {
    /// What `/metrics` reads when scraped: each station's listeners, the
    /// sessions, the library, the backend's link.
    pub(crate) fn scrape(&self) -> Scrape {
        let index = self.media.index();
        let (loudness_measured, loudness_pending) = self.media.loudness_progress();
        Scrape {
            stations: (self.backend.local_listeners().into_iter())
                .map(|(name, n)| (name.to_string(), n))
                .collect(),
            sessions: self.sessions.len(),
            library_tracks: index.len(),
            library_bytes: index.tracks().map(|t| t.size).sum(),
            library_unplayable: index.unplayable(),
            loudness_measured,
            loudness_pending,
            unplayable_tracks: self.unplayable.most_reported(TRACK_SERIES),
            link: self.backend.link(),
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
    let follow = config.follow_symlinks;
    let cache = config.loudness_cache.clone();
    let base = config.base_url.clone();
    let library = tokio::task::spawn_blocking(move || match dir {
        Some(dir) => Library::scan(dir, follow, &cache, base.as_deref(), &cancel),
        None => Ok(Library::demo(base.as_deref())),
    })
    .await??;
    tracing::info!(tracks = library.index().len(), "media library ready");
    Ok(library)
}
