//! The command line: one source of truth for the flags, their environment
//! variables, `--help`, the shell completions in `completions/` and the man
//! pages in `man/man1/` (both generated from [`command`], kept fresh by a test).
//!
//! The top of the crate: it names the server, the clients and the protocol,
//! and none of them names it back. `radio serve`'s flags become a
//! `ServerConfig` in [`serve`], where every check between flags is made;
//! their defaults are the server's ([`defaults`]).

mod loadtest;
mod parse;
mod serve;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};

use crate::logging::LogFormat;
use crate::server::config::defaults;

/// The one key-file reader, for `radio broadcast --key-file`.
pub(crate) use crate::key_file::read as read_key_file;
pub(crate) use loadtest::LoadtestArgs;
use parse::{parse_bitrate, parse_burst, parse_station};
pub(crate) use parse::{parse_duration, parse_interval};

/// Synchronized internet radio: everyone tuned to a station hears the same
/// moment of the same track.
#[derive(Debug, Parser)]
#[command(
    name = "radio",
    version = crate::version::LONG,
    propagate_version = true,
    max_term_width = 100
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// Colour in logs and messages: auto (when writing to a terminal and
    /// NO_COLOR is not set), always or never.
    #[arg(long, global = true, env = "RADIO_COLOR", value_name = "WHEN", value_enum, default_value_t = Color::Auto)]
    pub color: Color,
}

/// `--color`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Color {
    /// On a terminal, unless NO_COLOR is set (to anything but empty).
    Auto,
    Always,
    Never,
}

impl Color {
    /// Whether to colour what goes to stderr.
    pub(crate) fn on_stderr(self) -> bool {
        use std::io::IsTerminal as _;
        match self {
            Color::Always => true,
            Color::Never => false,
            Color::Auto => {
                std::io::stderr().is_terminal()
                    && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
            }
        }
    }
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the server: the WebSocket sync protocol at /ws, the media library,
    /// the web player at /, health and metrics.
    Serve(Box<ServeArgs>),
    /// Run a station of the server's library from a shell: commands on stdin,
    /// or a playlist.
    Broadcast(BroadcastArgs),
    /// Tune in from a terminal and show what plays and how well it is in sync;
    /// with --player mpv, hear it.
    Listen(ListenArgs),
    /// Generate load against one or more servers and report fan-out latency,
    /// delivery and server cost.
    Loadtest(LoadtestArgs),
    /// Print a shell completion script to stdout.
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Show the man page of radio (or of one subcommand): through man on a
    /// terminal, its roff source to a file or a pipe.
    Man {
        /// A subcommand whose page to print instead of the top-level one.
        subcommand: Option<String>,
    },
    /// Internal: one worker process of `radio loadtest` (reads its plan on stdin).
    #[command(hide = true)]
    LoadtestWorker,
}

/// `--loudness-cache`: a file, or `off`.
fn parse_loudness_cache(s: &str) -> Result<crate::server::media::LoudnessCache, String> {
    use crate::server::media::LoudnessCache;
    match s {
        "" => Err("name a file, or `off` to keep measured loudness in memory only".into()),
        "off" => Ok(LoudnessCache::Off),
        path => Ok(LoudnessCache::File(PathBuf::from(path))),
    }
}

/// A default duration as `--help` shows it and [`parse_duration`] reads it
/// back (`10s`, `1h`).
fn duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// Checks `--listen`'s shape, HOST:PORT (the host is resolved at start).
fn parse_listen(s: &str) -> Result<String, String> {
    let hint = "write HOST:PORT, like 127.0.0.1:8080, [::]:8080 or localhost:8080";
    // A port alone (`--listen 8080`): say which address to write.
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(match s.parse::<u16>() {
            Ok(port) => format!(
                "{s:?} is a port, not an address; write HOST:PORT: --listen 127.0.0.1:{port} \
                 (this machine only) or --listen 0.0.0.0:{port} (every interface)"
            ),
            Err(_) => format!("{s:?} is not a port (0-65535); {hint}"),
        });
    }
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(format!("no port in {s:?}; {hint}"));
    };
    if port.parse::<u16>().is_err() {
        return Err(format!("{port:?} is not a port (0-65535); {hint}"));
    }
    if host.is_empty() || (host.contains(':') && !(host.starts_with('[') && host.ends_with(']'))) {
        return Err(format!(
            "no host in {s:?}; {hint} (an IPv6 address in brackets)"
        ));
    }
    Ok(s.to_owned())
}

/// Checks a client's `--url` and writes it as the WebSocket URL it means.
fn parse_url(s: &str) -> Result<String, String> {
    crate::client::ws_url(s).map_err(|e| e.to_string())
}

fn parse_lease(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < Duration::from_millis(300) {
        return Err(
            "a lease shorter than 300ms would expire between renewals; use 300ms or more".into(),
        );
    }
    Ok(d)
}

fn parse_node_id(s: &str) -> Result<String, String> {
    if s.is_empty() || s.len() > 64 {
        return Err("a node id has 1 to 64 characters".into());
    }
    if let Some(bad) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "a node id may use only A-Z a-z 0-9 . _ - (found {bad:?})"
        ));
    }
    Ok(s.to_owned())
}

// `radio serve`'s flags. `pub` (as its field types) only because
// `ServerConfig: TryFrom<ServeArgs>` is a public impl; nothing outside can
// reach it. (A `///` comment here would become clap's help text.)
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on, HOST:PORT: an IP address or a host name (every
    /// address it resolves to is bound, like 127.0.0.1 and ::1 for
    /// localhost); port 0 picks a free port (the bound address is logged).
    #[arg(short, long, env = "RADIO_LISTEN", value_name = "ADDR", default_value = defaults::LISTEN, value_parser = parse_listen)]
    pub listen: String,

    /// Serve /metrics on this address (HOST:PORT, plain HTTP) instead of
    /// --listen's, say on a private interface for the scraper alone; the
    /// main address then answers /metrics with 404.
    #[arg(long, env = "RADIO_METRICS_LISTEN", value_name = "ADDR", value_parser = parse_listen)]
    pub metrics_listen: Option<String>,

    /// How long a station stays live after its broadcaster disconnects, waiting
    /// for it to resume with its token.
    #[arg(long, env = "RADIO_GRACE_PERIOD", default_value = duration(defaults::GRACE_PERIOD), value_name = "DURATION", value_parser = parse_duration)]
    pub grace_period: Duration,

    /// Largest inbound WebSocket message; larger ones close the connection (1009).
    #[arg(long, env = "RADIO_MAX_MESSAGE_BYTES", value_name = "BYTES", default_value_t = crate::protocol::DEFAULT_MAX_MESSAGE_BYTES)]
    pub max_message_bytes: usize,

    /// How often the server checks each connection: a ping, unless it was
    /// written states since the last check and acknowledged them all.
    #[arg(long, env = "RADIO_KEEPALIVE_INTERVAL", default_value = duration(defaults::KEEPALIVE_INTERVAL), value_name = "DURATION", value_parser = parse_interval)]
    pub keepalive_interval: Duration,

    /// A connection silent for this long (no frame, no pong, no acknowledged
    /// state) is closed.
    #[arg(long, env = "RADIO_KEEPALIVE_TIMEOUT", default_value = duration(defaults::KEEPALIVE_TIMEOUT), value_name = "DURATION", value_parser = parse_interval)]
    pub keepalive_timeout: Duration,

    /// A client that accepts no bytes for this long is closed (1008).
    #[arg(long, env = "RADIO_WRITE_TIMEOUT", default_value = duration(defaults::WRITE_TIMEOUT), value_name = "DURATION", value_parser = parse_duration)]
    pub write_timeout: Duration,

    // Not `default_value_t`: the server warns only about a number given
    // explicitly, so the default is applied in the conversion and shown here.
    #[arg(long, env = "RADIO_MAX_CONNECTIONS", value_name = "N", help = format!(
        "Most concurrent connections, HTTP and WebSocket alike; more are answered \
         503 [default: {}]. Given explicitly, the server warns at start when its \
         open-files limit cannot hold that many",
        defaults::MAX_CONNECTIONS
    ))]
    pub max_connections: Option<usize>,

    /// Most concurrent connections from one client address (0: no limit);
    /// more are answered 429. IPv6: per /64, and 4 and 16 times it per /56
    /// and /48.
    #[arg(
        long,
        env = "RADIO_MAX_CONNECTIONS_PER_IP",
        value_name = "N",
        default_value_t = defaults::MAX_CONNECTIONS_PER_IP
    )]
    pub max_connections_per_ip: usize,

    /// Most stations live or in their grace period at once; beyond it
    /// `start_broadcasting` is refused (`unsupported`).
    #[arg(
        long,
        env = "RADIO_MAX_STATIONS",
        value_name = "N",
        default_value_t = defaults::MAX_STATIONS
    )]
    pub max_stations: usize,

    /// Most stations live or in their grace period that one client address
    /// (its /64 for IPv6) may hold at once (0: no limit); beyond it
    /// `start_broadcasting` is refused (`too_many_stations`). Stations the
    /// server runs (--station) do not count.
    #[arg(long, env = "RADIO_MAX_STATIONS_PER_IP", value_name = "N", default_value_t = defaults::MAX_STATIONS_PER_IP)]
    pub max_stations_per_ip: usize,

    /// `start_broadcasting` requests one client address may send a minute,
    /// in bursts of that many (0: no limit); beyond it `rate_limited`.
    /// IPv6: per /64, and 4 and 16 times it per /56 and /48.
    #[arg(long, env = "RADIO_CLAIM_RATE", value_name = "N", default_value_t = defaults::CLAIM_RATE)]
    pub claim_rate: u32,

    /// Most stations in one `stations` answer (and GET /api/stations); the
    /// most listened are kept and the answer says `truncated`.
    #[arg(long, env = "RADIO_MAX_LIST", value_name = "N", default_value_t = defaults::MAX_LIST)]
    pub max_list: usize,

    /// `list_stations` requests a connection may send per second (bursts up
    /// to twice that; 0: no limit beyond --rate-limit); beyond it
    /// `rate_limited`.
    #[arg(long, env = "RADIO_LIST_RATE", value_name = "N", default_value_t = defaults::LIST_RATE)]
    pub list_rate: u32,

    /// Web origins besides the server's own whose pages may open /ws and save
    /// sessions (comma-separated `scheme://host[:port]`; `*` for any).
    #[arg(
        long,
        env = "RADIO_ALLOWED_ORIGINS",
        value_name = "ORIGINS",
        value_delimiter = ','
    )]
    pub allowed_origins: Vec<String>,

    /// Host names the server answers to besides IP addresses, localhost and
    /// the hosts of --allowed-origins (comma-separated; `*.example.com` for
    /// the names under it; `*` for any). A request for any other name (its
    /// Host header) is refused 421, against DNS rebinding: a server reached
    /// by a domain name needs it here.
    #[arg(
        long,
        env = "RADIO_ALLOWED_HOSTS",
        value_name = "HOSTS",
        value_delimiter = ','
    )]
    pub allowed_hosts: Vec<String>,

    /// A proxy (address or CIDR block) whose X-Forwarded-For / Forwarded
    /// headers name the real client; repeat for several.
    #[arg(
        long = "trusted-proxy",
        env = "RADIO_TRUSTED_PROXIES",
        value_name = "CIDR",
        value_delimiter = ','
    )]
    pub trusted_proxies: Vec<crate::server::peer::Cidr>,

    /// Inbound messages a connection may send per second (bursts up to twice
    /// that); beyond it `rate_limited`, and a client that keeps on is closed (1008).
    #[arg(long, env = "RADIO_RATE_LIMIT", value_name = "N", default_value_t = defaults::RATE_LIMIT)]
    pub rate_limit: u32,

    /// Time a client has to send its HTTP request and complete the WebSocket upgrade.
    #[arg(long, env = "RADIO_HANDSHAKE_TIMEOUT", default_value = duration(defaults::HANDSHAKE_TIMEOUT), value_name = "DURATION", value_parser = parse_duration)]
    pub handshake_timeout: Duration,

    /// On SIGINT/SIGTERM, how long to wait for connections to close before exiting.
    #[arg(long, env = "RADIO_SHUTDOWN_TIMEOUT", default_value = duration(defaults::SHUTDOWN_TIMEOUT), value_name = "DURATION", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,

    /// Require this key (at least 8 characters) in `start_broadcasting`
    /// (listeners need none). Prefer --broadcast-key-file: a key in argv is
    /// visible to every local user.
    #[arg(
        long,
        env = "RADIO_BROADCAST_KEY",
        value_name = "KEY",
        hide_env_values = true
    )]
    pub broadcast_key: Option<String>,

    /// Read the one broadcast key from this file's first line (it wins over --broadcast-key,
    /// so a RADIO_BROADCAST_KEY left in the environment does not get in its way).
    #[arg(long, env = "RADIO_BROADCAST_KEY_FILE", value_name = "FILE")]
    pub broadcast_key_file: Option<PathBuf>,

    /// Per-station broadcast keys: lines `PATTERN KEY` (a station name or a glob
    /// like `team-*`; first match wins; keys of at least 8 characters);
    /// stations no line matches may not be broadcast. Read again on SIGHUP.
    #[arg(long, env = "RADIO_BROADCAST_KEYS", value_name = "FILE")]
    pub broadcast_keys: Option<PathBuf>,

    /// Serve https and wss with this certificate chain (PEM); needs --tls-key.
    /// Read again on SIGHUP.
    #[arg(
        long,
        env = "RADIO_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,

    /// The private key (PEM) of --tls-cert.
    #[arg(
        long,
        env = "RADIO_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,

    /// Log format.
    #[arg(long, env = "RADIO_LOG_FORMAT", value_name = "FORMAT", value_enum, default_value_t = LogFormat::Pretty)]
    pub log_format: LogFormat,

    /// Join a cluster through this Redis server (redis://[user:password@]host:port/db,
    /// or rediss:// for TLS), or through the Sentinels that name its master
    /// (redis+sentinel://host:port,host:port/MASTER[/db], or rediss+sentinel://).
    #[arg(long, env = "RADIO_REDIS", value_name = "URL", hide_env_values = true)]
    pub redis: Option<String>,

    /// Cluster mode: trust this CA certificate (PEM) for a rediss:// Redis,
    /// or for the Sentinels and the master of a rediss+sentinel:// URL
    /// (default: the system's roots).
    #[arg(long, env = "RADIO_REDIS_CA_CERT", value_name = "FILE")]
    pub redis_ca_cert: Option<PathBuf>,

    /// Cluster mode: read the Redis password (through Sentinel, the
    /// master's) from this file's first line, so it is neither in argv nor
    /// in the environment (the --redis URL then carries none).
    #[arg(
        long,
        env = "RADIO_REDIS_PASSWORD_FILE",
        value_name = "FILE",
        requires = "redis"
    )]
    pub redis_password_file: Option<PathBuf>,

    /// Cluster mode through Sentinel: read the Sentinels' own password
    /// (their requirepass) from this file's first line. The master's
    /// password is the URL's or --redis-password-file's.
    #[arg(
        long,
        env = "RADIO_REDIS_SENTINEL_PASSWORD_FILE",
        value_name = "FILE",
        requires = "redis"
    )]
    pub redis_sentinel_password_file: Option<PathBuf>,

    /// This node's id in the cluster (default: generated). Ids must be unique
    /// among the nodes sharing a Redis.
    #[arg(long, env = "RADIO_NODE_ID", value_name = "ID", value_parser = parse_node_id)]
    pub node_id: Option<String>,

    /// Cluster mode: how long a station's lease lasts without renewal. When a
    /// node dies, listeners elsewhere are told its stations went offline
    /// (reason "timeout") about this long after, unless the broadcaster
    /// resumed on another node first.
    #[arg(long, env = "RADIO_LEASE", default_value = duration(defaults::LEASE), value_name = "DURATION", value_parser = parse_lease)]
    pub lease: Duration,

    /// Share the listening port with other processes (SO_REUSEPORT).
    #[arg(long, env = "RADIO_REUSE_PORT")]
    pub reuse_port: bool,

    /// Directory of audio and video to serve (scanned recursively). Without it
    /// a small generated demo library is served.
    #[arg(short, long, env = "RADIO_MEDIA", value_name = "DIR")]
    pub media: Option<PathBuf>,

    /// Run a station on the server itself, for ever: NAME=SOURCE[,shuffle],
    /// SOURCE an M3U playlist, a folder of the library (relative to --media)
    /// or `library` (all of it). Repeat for several; RADIO_STATIONS takes a
    /// list (commas or newlines). A broadcaster may take it over; it comes
    /// back to its SOURCE when the broadcaster stops. SIGHUP re-reads
    /// playlists. With --redis every node may name a station: one drives it
    /// at a time, and another takes over if it dies.
    #[arg(long = "station", env = "RADIO_STATIONS", value_name = "NAME=SOURCE", value_parser = crate::server::onair::spec::parse_list)]
    pub stations: Vec<crate::server::onair::spec::StationList>,

    /// Rescan the media library this often (it is also rescanned on SIGHUP).
    #[arg(long, env = "RADIO_RESCAN_INTERVAL", value_name = "DURATION", value_parser = parse_duration)]
    pub rescan_interval: Option<Duration>,

    /// Follow symbolic links in the media directory when scanning (true or
    /// false); only links whose real target lies under --media are ever
    /// followed. Either way a file swapped after the scan is not served until
    /// a rescan.
    #[arg(long, env = "RADIO_FOLLOW_SYMLINKS", value_name = "BOOL", default_value_t = defaults::FOLLOW_SYMLINKS, action = clap::ArgAction::Set)]
    pub follow_symlinks: bool,

    /// File that keeps each track's measured loudness across restarts, so a
    /// restart decodes nothing again (`off`: kept in memory only). By default
    /// $XDG_CACHE_HOME/radio/ (else ~/.cache/radio/), one file per --media;
    /// never in the library itself.
    #[arg(long, env = "RADIO_LOUDNESS_CACHE", value_name = "PATH", value_parser = parse_loudness_cache)]
    pub loudness_cache: Option<crate::server::media::LoudnessCache>,

    /// Where players fetch the tracks: a CDN or object store that holds the
    /// library's files under /media/ (or pulls them from this server), like
    /// https://cdn.example.com. The library's track URLs, and so the web
    /// player and `radio listen --player mpv`, name it; this server still
    /// serves /media/ for the CDN to pull. See docs/cluster.md.
    #[arg(long, env = "RADIO_MEDIA_BASE_URL", value_name = "URL", value_parser = crate::cli::parse::parse_base_url)]
    pub media_base_url: Option<String>,

    /// Private player sessions idle this long are removed.
    #[arg(long, env = "RADIO_SESSION_TTL", default_value = duration(defaults::SESSION_TTL), value_name = "DURATION", value_parser = parse_duration)]
    pub session_ttl: Duration,

    /// How often idle sessions are swept.
    #[arg(long, env = "RADIO_SESSION_SWEEP", default_value = duration(defaults::SESSION_SWEEP), value_name = "DURATION", value_parser = parse_interval)]
    pub session_sweep: Duration,

    /// Most private sessions kept; the least recently used is evicted beyond it.
    #[arg(
        long,
        env = "RADIO_MAX_SESSIONS",
        value_name = "N",
        default_value_t = defaults::MAX_SESSIONS
    )]
    pub max_sessions: usize,

    /// New private sessions one client address may create per minute (0: no
    /// limit); more are answered 429. IPv6: per /64, and 4 and 16 times it
    /// per /56 and /48.
    #[arg(
        long,
        env = "RADIO_SESSION_RATE",
        value_name = "N",
        default_value_t = defaults::SESSION_RATE
    )]
    pub session_rate: u32,

    /// Bitrate of each station's MP3 stream (/stations/NAME/stream), kb/s:
    /// one of 32 40 48 56 64 80 96 112 128 160 192 224 256 320.
    #[arg(long, env = "RADIO_STREAM_BITRATE", value_name = "KBPS", default_value_t = defaults::STREAM_BITRATE, value_parser = parse_bitrate)]
    pub stream_bitrate: u32,

    /// The most audio a new stream listener is sent at once so its player
    /// starts at once (up to 10s; 0s still sends the newest fifth of a
    /// second, one chunk of frames); the stream is encoded this
    /// far ahead, so a seek or pause reaches stream listeners this late.
    #[arg(long, env = "RADIO_STREAM_BURST", default_value = duration(defaults::STREAM_BURST), value_name = "DURATION", value_parser = parse_burst)]
    pub stream_burst: Duration,
}

#[derive(Debug, Clone, Args)]
pub(crate) struct ClientArgs {
    /// Server to connect to: ws://, wss://, http:// or https:// (the /ws path is added when missing).
    /// Repeat (or list them: a,b) for nodes of one cluster: a lost connection moves on to the next.
    #[arg(
        short,
        long,
        env = "RADIO_URL",
        value_name = "URL",
        default_value = "ws://127.0.0.1:8080/ws",
        value_delimiter = ',',
        value_parser = parse_url
    )]
    pub url: Vec<String>,

    /// Station name (1-64 of A-Z a-z 0-9 . _ -).
    #[arg(short, long, env = "RADIO_STATION", value_name = "NAME", value_parser = parse_station)]
    pub station: String,

    /// Trust this CA certificate (PEM) instead of the Mozilla roots, for the
    /// server's wss:// and https:// (its library, its media; mpv too): for a
    /// server with a private CA or a self-signed certificate.
    #[arg(long, env = "RADIO_CA_CERT", value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
#[command(after_help = crate::client::broadcast::commands::HELP)]
pub(crate) struct BroadcastArgs {
    #[command(flatten)]
    pub client: ClientArgs,

    /// Broadcast key, when the server requires one.
    #[arg(
        short,
        long,
        env = "RADIO_BROADCAST_KEY",
        value_name = "KEY",
        hide_env_values = true
    )]
    pub key: Option<String>,

    /// Read the broadcast key from this file (its first line), so that it is
    /// in neither argv, which every local user can read, nor the environment;
    /// it wins over --key.
    #[arg(long, env = "RADIO_BROADCAST_KEY_FILE", value_name = "FILE")]
    pub key_file: Option<PathBuf>,

    /// Play this M3U playlist in order, looping. Each entry (a path relative to
    /// the playlist's folder, or absolute) resolves to a library track; stdin
    /// still takes commands, and its end does not stop the station.
    #[arg(short, long, env = "RADIO_PLAYLIST", value_name = "FILE")]
    pub playlist: Option<PathBuf>,

    /// Send tracks as written instead of resolving them in the server's library
    /// (for stations whose listeners play their own files); needed when the
    /// server has no library to read.
    #[arg(long, env = "RADIO_FREE_TRACKS")]
    pub free_tracks: bool,

    /// At a track's end, pause there instead of playing the next track.
    #[arg(long, env = "RADIO_STOP_AT_END")]
    pub stop_at_end: bool,

    /// How often to send a heartbeat while playing.
    #[arg(long, env = "RADIO_HEARTBEAT_INTERVAL", default_value = "2s", value_name = "DURATION", value_parser = parse_interval)]
    pub heartbeat_interval: Duration,

    /// Print each state as one JSON line instead of a sentence.
    #[arg(long, env = "RADIO_JSON")]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub(crate) struct ListenArgs {
    #[command(flatten)]
    pub client: ClientArgs,

    /// Print every frame received as one JSON line (for scripts) instead of a
    /// status line; with --player, also a `player` line a second. Pongs are
    /// printed only with --verbose.
    #[arg(long, env = "RADIO_JSON")]
    pub json: bool,

    /// With --json, also print the pongs of the clock's pings.
    #[arg(short, long, env = "RADIO_VERBOSE")]
    pub verbose: bool,

    /// Play the station's sound through this player, kept on the station's
    /// position (it must be installed: `apt-get install mpv`).
    #[arg(long, env = "RADIO_PLAYER", value_name = "PLAYER", value_enum)]
    pub player: Option<PlayerKind>,

    /// An argument for the player, repeatable: --player-arg=--volume=50,
    /// --player-arg=--ao=pulse. With --player-arg=--input-ipc-server=PATH the
    /// player's control socket is that path instead of a private one. Keep
    /// the audio output real-time: a file output (--ao=pcm) runs ahead of
    /// the station; to record it, record a real-time output.
    #[arg(
        long = "player-arg",
        env = "RADIO_PLAYER_ARG",
        value_name = "ARG",
        allow_hyphen_values = true,
        requires = "player"
    )]
    pub player_args: Vec<String>,
}

/// The players `radio listen --player` can drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum PlayerKind {
    /// mpv, over its JSON IPC.
    Mpv,
}

/// The clap command tree, for completions and man pages.
pub fn command() -> clap::Command {
    Cli::command()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_consistent() {
        command().debug_assert();
    }

    #[test]
    fn stream_flags_take_what_mp3_can_do() {
        assert_eq!(parse_bitrate("192"), Ok(192));
        assert_eq!(parse_bitrate("64k"), Ok(64));
        assert!(
            parse_bitrate("100")
                .unwrap_err()
                .contains("MP3 has no 100 kb/s")
        );
        assert!(parse_bitrate("fast").is_err());
        assert_eq!(parse_burst("0s"), Ok(Duration::ZERO));
        assert!(parse_burst("11s").unwrap_err().contains("10s or less"));
    }

    /// Every flag of every command can be set from the environment
    /// (`RADIO_*`), so a service manager or container configures anything.
    #[test]
    fn every_flag_has_an_env_var() {
        let root = command();
        for cmd in root.get_subcommands().filter(|c| !c.is_hide_set()) {
            if matches!(cmd.get_name(), "completions" | "man") {
                continue;
            }
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if matches!(id, "help" | "version") {
                    continue;
                }
                let env = arg.get_env().and_then(|e| e.to_str());
                assert!(
                    env.is_some_and(|e| e.starts_with("RADIO_")),
                    "radio {} --{id} has no RADIO_* variable",
                    cmd.get_name()
                );
            }
        }
    }

    #[test]
    fn listen_addresses_are_host_and_port() {
        for ok in [
            "127.0.0.1:8080",
            "localhost:0",
            "[::]:8080",
            "radio.example:443",
        ] {
            assert_eq!(parse_listen(ok).as_deref(), Ok(ok));
        }
        for bad in [
            "localhost",
            "localhost:x",
            ":8080",
            "::1:80",
            "h:70000",
            "99999",
        ] {
            assert!(parse_listen(bad).is_err(), "{bad}");
        }
        // A port alone is told the addresses to write.
        let why = parse_listen("8080").expect_err("a port is not an address");
        assert!(
            why.contains("is a port") && why.contains("--listen 127.0.0.1:8080"),
            "{why}"
        );
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert!(parse_duration("ten").is_err());
    }
}
