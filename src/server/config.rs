//! The server's configuration, as the server sees it: plain values grouped
//! by the part that uses them, and the defaults of `radio serve`
//! ([`defaults`]). The command line (`crate::cli`, above the server) turns
//! its flags into a [`ServerConfig`] and checks them against each other;
//! the server never sees clap, so tests and embedders build a
//! [`ServerConfig`] directly.

use std::path::PathBuf;
use std::time::Duration;

use crate::protocol;
use crate::server::backend::any::BackendConfig;
use crate::server::keys::KeySources;
use crate::server::peer::Cidr;

/// The defaults of `radio serve`, each written once: [`ServerConfig::default`]
/// is made of them, and the command line shows and applies them
/// (`[default: ...]` in `--help`, the man page and the completions).
pub(crate) mod defaults {
    use std::time::Duration;

    /// `--listen`.
    pub(crate) const LISTEN: &str = "127.0.0.1:8080";
    /// `--grace-period`.
    pub(crate) const GRACE_PERIOD: Duration = Duration::from_secs(10);
    /// `--keepalive-interval`.
    pub(crate) const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(15);
    /// `--keepalive-timeout`: three intervals.
    pub(crate) const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(45);
    /// `--write-timeout`.
    pub(crate) const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
    /// `--max-connections`.
    pub(crate) const MAX_CONNECTIONS: usize = 100_000;
    /// `--max-connections-per-ip`.
    pub(crate) const MAX_CONNECTIONS_PER_IP: usize = 256;
    /// `--max-stations`.
    pub(crate) const MAX_STATIONS: usize = 10_000;
    /// `--max-stations-per-ip`.
    pub(crate) const MAX_STATIONS_PER_IP: usize = 16;
    /// `--claim-rate`: `start_broadcasting` a minute per client address.
    pub(crate) const CLAIM_RATE: u32 = 60;
    /// `--max-list`.
    pub(crate) const MAX_LIST: usize = 200;
    /// `--list-rate`: `list_stations` a second per connection.
    pub(crate) const LIST_RATE: u32 = 2;
    /// `--rate-limit`: messages per second per connection.
    pub(crate) const RATE_LIMIT: u32 = 50;
    /// `--handshake-timeout`.
    pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
    /// `--shutdown-timeout`.
    pub(crate) const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);
    /// `--lease` (cluster mode).
    pub(crate) const LEASE: Duration = Duration::from_secs(5);
    /// `--follow-symlinks`.
    pub(crate) const FOLLOW_SYMLINKS: bool = true;
    /// `--session-ttl`.
    pub(crate) const SESSION_TTL: Duration = Duration::from_secs(3600);
    /// `--session-sweep`.
    pub(crate) const SESSION_SWEEP: Duration = Duration::from_secs(300);
    /// `--max-sessions`.
    pub(crate) const MAX_SESSIONS: usize = 100_000;
    /// `--session-rate`: new sessions per minute per client address.
    pub(crate) const SESSION_RATE: u32 = 10;
    /// `--stream-bitrate`, kb/s.
    pub(crate) const STREAM_BITRATE: u32 = 128;
    /// `--stream-burst`.
    pub(crate) const STREAM_BURST: Duration = Duration::from_secs(2);
}

/// What `radio serve` does besides what [`ServerConfig`] says: the address
/// it binds (a test binds its own listener and calls `server::run`), and
/// `--max-connections` as given, to warn when the open-files limit cannot
/// hold that many.
#[derive(Clone, Debug)]
pub(crate) struct Startup {
    /// HOST:PORT; every address the host resolves to is bound.
    pub(crate) listen: String,
    /// SO_REUSEPORT on the listening sockets.
    pub(crate) reuse_port: bool,
    /// `--max-connections` when given explicitly.
    pub(crate) max_connections_asked: Option<usize>,
}

/// Everything `radio serve` needs besides its listening socket.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub conn: ConnConfig,
    /// Time a client has to send its HTTP request and complete an upgrade.
    pub handshake_timeout: Duration,
    /// Most concurrent connections, HTTP included (more get 503).
    pub max_connections: usize,
    /// Most concurrent connections from one client address (0: no limit; 429).
    pub max_connections_per_ip: usize,
    /// Most stations live or in grace at once.
    pub max_stations: usize,
    /// Most stations live or in grace claimed from one client address (its
    /// /64 for IPv6) at once (0: no limit).
    pub max_stations_per_ip: usize,
    /// `start_broadcasting` one client address may send a minute, in bursts
    /// of that many (0: no limit).
    pub claim_rate: u32,
    /// Most stations in one `stations` answer.
    pub max_list: usize,
    /// Origins besides the server's own allowed to open /ws and save sessions.
    pub allowed_origins: Vec<String>,
    /// Host names the server answers to besides IP addresses, localhost and
    /// the hosts of `allowed_origins` (`*`: any).
    pub allowed_hosts: Vec<String>,
    /// Where `/metrics` is served instead of the main address (HOST:PORT).
    pub metrics_listen: Option<String>,
    /// Proxies whose forwarding headers name the client.
    pub trusted_proxies: Vec<Cidr>,
    /// `--tls-cert` and `--tls-key`: serve https and wss.
    pub tls: Option<TlsFiles>,
    /// How long shutdown waits for connections to close.
    pub shutdown_timeout: Duration,
    pub backend: BackendConfig,
    pub media: MediaConfig,
    pub sessions: SessionConfig,
    /// Each station's MP3 stream (`/stations/{name}/stream`).
    pub stream: StreamConfig,
    /// `--station`: the stations the server runs itself.
    pub stations: Vec<crate::server::onair::StationSpec>,
}

/// The per-connection limits.
#[derive(Clone, Debug)]
pub struct ConnConfig {
    pub max_message_bytes: usize,
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
    pub write_timeout: Duration,
    pub rate_limit: u32,
    /// `list_stations` a second per connection, bursts of twice that (0: no
    /// limit beyond `rate_limit`).
    pub list_rate: u32,
    pub keys: KeySources,
}

/// The certificate chain and key files of `--tls-cert`/`--tls-key`.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The media library.
#[derive(Clone, Debug)]
pub struct MediaConfig {
    /// The directory to serve; `None` serves the generated demo library.
    pub dir: Option<PathBuf>,
    /// Rescan this often (it is also rescanned on SIGHUP).
    pub rescan_interval: Option<Duration>,
    /// Whether a scan follows symbolic links.
    pub follow_symlinks: bool,
    /// Where measured loudness is kept across restarts.
    pub loudness_cache: crate::server::media::LoudnessCache,
    /// `--media-base-url`: where players fetch the tracks (no trailing
    /// `/`); `None`: from this server.
    pub base_url: Option<String>,
}

/// The stations' MP3 streams for radio apps.
#[derive(Clone, Debug)]
pub struct StreamConfig {
    /// `--stream-bitrate`: the MP3 bitrate, kb/s (an MPEG-1 Layer III rate).
    pub bitrate_kbps: u32,
    /// `--stream-burst`: the most audio a new stream listener is sent at
    /// once; the stream is encoded this far ahead of the station.
    pub burst: Duration,
}

/// Private player sessions.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    pub ttl: Duration,
    pub sweep: Duration,
    pub max: usize,
    /// New sessions per minute per client address (0: no limit).
    pub rate_per_minute: u32,
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            dir: None,
            rescan_interval: None,
            follow_symlinks: defaults::FOLLOW_SYMLINKS,
            loudness_cache: crate::server::media::LoudnessCache::Auto,
            base_url: None,
        }
    }
}

impl Default for ServerConfig {
    /// The defaults of `radio serve` with no flags.
    fn default() -> Self {
        Self {
            conn: ConnConfig {
                max_message_bytes: protocol::DEFAULT_MAX_MESSAGE_BYTES,
                keepalive_interval: defaults::KEEPALIVE_INTERVAL,
                keepalive_timeout: defaults::KEEPALIVE_TIMEOUT,
                write_timeout: defaults::WRITE_TIMEOUT,
                rate_limit: defaults::RATE_LIMIT,
                list_rate: defaults::LIST_RATE,
                keys: KeySources::default(),
            },
            handshake_timeout: defaults::HANDSHAKE_TIMEOUT,
            max_connections: defaults::MAX_CONNECTIONS,
            max_connections_per_ip: defaults::MAX_CONNECTIONS_PER_IP,
            max_stations: defaults::MAX_STATIONS,
            max_stations_per_ip: defaults::MAX_STATIONS_PER_IP,
            claim_rate: defaults::CLAIM_RATE,
            max_list: defaults::MAX_LIST,
            allowed_origins: Vec::new(),
            allowed_hosts: Vec::new(),
            metrics_listen: None,
            trusted_proxies: Vec::new(),
            tls: None,
            shutdown_timeout: defaults::SHUTDOWN_TIMEOUT,
            backend: BackendConfig::Local {
                grace: defaults::GRACE_PERIOD,
            },
            media: MediaConfig::default(),
            sessions: SessionConfig {
                ttl: defaults::SESSION_TTL,
                sweep: defaults::SESSION_SWEEP,
                max: defaults::MAX_SESSIONS,
                rate_per_minute: defaults::SESSION_RATE,
            },
            stream: StreamConfig {
                bitrate_kbps: defaults::STREAM_BITRATE,
                burst: defaults::STREAM_BURST,
            },
            stations: Vec::new(),
        }
    }
}
