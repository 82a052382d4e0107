//! The command line: one source of truth for the flags, their environment
//! variables, `--help`, the shell completions in `completions/` and the man
//! pages in `man/` (both generated from [`command`], kept fresh by a test).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};

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
    /// Print the man page of radio (or of one subcommand) to stdout.
    Man {
        /// A subcommand whose page to print instead of the top-level one.
        subcommand: Option<String>,
    },
    /// Internal: one worker process of `radio loadtest` (reads its plan on stdin).
    #[command(hide = true)]
    LoadtestWorker,
}

/// Parses durations written like `10s`, `500ms`, `1m 30s`.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (write durations like 10s, 500ms, 2m)"))
}

/// The key in the file a flag (`flag`) names: its first line, trimmed, not
/// empty. Keys come from files so that they are in neither argv nor the
/// environment (`--broadcast-key-file`, `radio broadcast --key-file`).
pub(crate) fn read_key_file(path: &std::path::Path, flag: &str) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read {flag} {}: {e}", path.display()))?;
    match text.lines().next().map(str::trim) {
        Some(key) if !key.is_empty() => Ok(key.to_owned()),
        _ => anyhow::bail!(
            "{flag} {} is empty; put the broadcast key on its first line",
            path.display()
        ),
    }
}

/// A duration that paces something: more than zero.
pub(crate) fn parse_interval(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        d if d.is_zero() => Err("must be more than 0 (like 1s or 500ms)".to_owned()),
        d => Ok(d),
    }
}

/// Checks `--listen`'s shape, HOST:PORT (the host is resolved at start).
fn parse_listen(s: &str) -> Result<String, String> {
    let hint = "write HOST:PORT, like 127.0.0.1:8080, [::]:8080 or localhost:8080";
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

/// Checks a station name (`--station`).
fn parse_station(s: &str) -> Result<String, String> {
    crate::protocol::StationName::new(s).map(|n| n.as_str().to_owned())
}

/// Checks a client's `--url` and writes it as the WebSocket URL it means.
fn parse_url(s: &str) -> Result<String, String> {
    crate::client::ws_url(s).map_err(|e| e.to_string())
}

/// `--max-connections` when not given.
pub(crate) const DEFAULT_MAX_CONNECTIONS: usize = 100_000;

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

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line, for log collectors.
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on, HOST:PORT: an IP address or a host name (every
    /// address it resolves to is bound, like 127.0.0.1 and ::1 for
    /// localhost); port 0 picks a free port (the bound address is logged).
    #[arg(short, long, env = "RADIO_LISTEN", value_name = "ADDR", default_value = "127.0.0.1:8080", value_parser = parse_listen)]
    pub listen: String,

    /// How long a station stays live after its broadcaster disconnects, waiting
    /// for it to resume with its token.
    #[arg(long, env = "RADIO_GRACE_PERIOD", default_value = "10s", value_name = "DURATION", value_parser = parse_duration)]
    pub grace_period: Duration,

    /// Largest inbound WebSocket message; larger ones close the connection (1009).
    #[arg(long, env = "RADIO_MAX_MESSAGE_BYTES", value_name = "BYTES", default_value_t = crate::protocol::DEFAULT_MAX_MESSAGE_BYTES)]
    pub max_message_bytes: usize,

    /// How often the server checks each connection: a ping, unless it was
    /// written states since the last check and acknowledged them all.
    #[arg(long, env = "RADIO_KEEPALIVE_INTERVAL", default_value = "15s", value_name = "DURATION", value_parser = parse_interval)]
    pub keepalive_interval: Duration,

    /// A connection silent for this long (no frame, no pong, no acknowledged
    /// state) is closed.
    #[arg(long, env = "RADIO_KEEPALIVE_TIMEOUT", default_value = "45s", value_name = "DURATION", value_parser = parse_interval)]
    pub keepalive_timeout: Duration,

    /// A client that accepts no bytes for this long is closed (1008).
    #[arg(long, env = "RADIO_WRITE_TIMEOUT", default_value = "10s", value_name = "DURATION", value_parser = parse_duration)]
    pub write_timeout: Duration,

    /// Most concurrent connections, HTTP and WebSocket alike; more are answered
    /// 503 [default: 100000]. Given explicitly, the server warns at start
    /// when its open-files limit cannot hold that many.
    #[arg(long, env = "RADIO_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<usize>,

    /// Most concurrent connections from one client address (0: no limit);
    /// more are answered 429.
    #[arg(
        long,
        env = "RADIO_MAX_CONNECTIONS_PER_IP",
        value_name = "N",
        default_value_t = 256
    )]
    pub max_connections_per_ip: usize,

    /// Most stations live or in their grace period at once; beyond it
    /// `start_broadcasting` is refused (`unsupported`).
    #[arg(
        long,
        env = "RADIO_MAX_STATIONS",
        value_name = "N",
        default_value_t = 10_000
    )]
    pub max_stations: usize,

    /// Most stations in one `stations` answer (and GET /api/stations); the
    /// most listened are kept and the answer says `truncated`.
    #[arg(long, env = "RADIO_MAX_LIST", value_name = "N", default_value_t = 200)]
    pub max_list: usize,

    /// Web origins besides the server's own whose pages may open /ws and save
    /// sessions (comma-separated `scheme://host[:port]`; `*` for any).
    #[arg(
        long,
        env = "RADIO_ALLOWED_ORIGINS",
        value_name = "ORIGINS",
        value_delimiter = ','
    )]
    pub allowed_origins: Vec<String>,

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
    #[arg(long, env = "RADIO_RATE_LIMIT", value_name = "N", default_value_t = 50)]
    pub rate_limit: u32,

    /// Time a client has to send its HTTP request and complete the WebSocket upgrade.
    #[arg(long, env = "RADIO_HANDSHAKE_TIMEOUT", default_value = "10s", value_name = "DURATION", value_parser = parse_duration)]
    pub handshake_timeout: Duration,

    /// On SIGINT/SIGTERM, how long to wait for connections to close before exiting.
    #[arg(long, env = "RADIO_SHUTDOWN_TIMEOUT", default_value = "5s", value_name = "DURATION", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,

    /// Require this key in `start_broadcasting` (listeners need none). Prefer
    /// --broadcast-key-file: a key in argv is visible to every local user.
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
    /// like `team-*`; first match wins); stations no line matches may not be
    /// broadcast. Read again on SIGHUP.
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
    /// or rediss:// for TLS).
    #[arg(long, env = "RADIO_REDIS", value_name = "URL", hide_env_values = true)]
    pub redis: Option<String>,

    /// Cluster mode: trust this CA certificate (PEM) for a rediss:// Redis
    /// (default: the system's roots).
    #[arg(long, env = "RADIO_REDIS_CA_CERT", value_name = "FILE")]
    pub redis_ca_cert: Option<PathBuf>,

    /// This node's id in the cluster (default: generated). Ids must be unique
    /// among the nodes sharing a Redis.
    #[arg(long, env = "RADIO_NODE_ID", value_name = "ID", value_parser = parse_node_id)]
    pub node_id: Option<String>,

    /// Cluster mode: how long a station's lease lasts without renewal. When a
    /// node dies, listeners elsewhere are told its stations went offline
    /// (reason "timeout") about this long after, unless the broadcaster
    /// resumed on another node first.
    #[arg(long, env = "RADIO_LEASE", default_value = "5s", value_name = "DURATION", value_parser = parse_lease)]
    pub lease: Duration,

    /// Share the listening port with other processes (SO_REUSEPORT).
    #[arg(long, env = "RADIO_REUSE_PORT")]
    pub reuse_port: bool,

    /// Directory of audio and video to serve (scanned recursively). Without it
    /// a small generated demo library is served.
    #[arg(short, long, env = "RADIO_MEDIA", value_name = "DIR")]
    pub media: Option<PathBuf>,

    /// Rescan the media library this often (it is also rescanned on SIGHUP).
    #[arg(long, env = "RADIO_RESCAN_INTERVAL", value_name = "DURATION", value_parser = parse_duration)]
    pub rescan_interval: Option<Duration>,

    /// Follow symbolic links in the media directory when scanning (true or
    /// false). Either way a file swapped after the scan is not served until a
    /// rescan.
    #[arg(long, env = "RADIO_FOLLOW_SYMLINKS", value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    pub follow_symlinks: bool,

    /// Private player sessions idle this long are removed.
    #[arg(long, env = "RADIO_SESSION_TTL", default_value = "1h", value_name = "DURATION", value_parser = parse_duration)]
    pub session_ttl: Duration,

    /// How often idle sessions are swept.
    #[arg(long, env = "RADIO_SESSION_SWEEP", default_value = "5m", value_name = "DURATION", value_parser = parse_interval)]
    pub session_sweep: Duration,

    /// Most private sessions kept; the least recently used is evicted beyond it.
    #[arg(
        long,
        env = "RADIO_MAX_SESSIONS",
        value_name = "N",
        default_value_t = 100_000
    )]
    pub max_sessions: usize,

    /// New private sessions one client address may create per minute (0: no
    /// limit); more are answered 429.
    #[arg(
        long,
        env = "RADIO_SESSION_RATE",
        value_name = "N",
        default_value_t = 10
    )]
    pub session_rate: u32,
}

#[derive(Debug, Clone, Args)]
pub(crate) struct ClientArgs {
    /// Server to connect to: ws://, wss://, http:// or https:// (the /ws path is added when missing).
    #[arg(short, long, env = "RADIO_URL", value_name = "URL", default_value = "ws://127.0.0.1:8080/ws", value_parser = parse_url)]
    pub url: String,

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

#[derive(Debug, Clone, Args)]
pub(crate) struct LoadtestArgs {
    /// Server to load; repeat to spread listeners over several nodes.
    #[arg(
        short = 'u',
        long = "url",
        env = "RADIO_LOADTEST_URL",
        value_name = "URL",
        value_delimiter = ',',
        required = true
    )]
    pub urls: Vec<String>,

    /// Listeners to connect in total.
    #[arg(long, env = "RADIO_LOADTEST_LISTENERS", value_name = "N")]
    pub listeners: usize,

    /// Stations (one broadcaster each); listeners are spread evenly.
    #[arg(
        long,
        env = "RADIO_LOADTEST_STATIONS",
        value_name = "N",
        default_value_t = 1
    )]
    pub stations: usize,

    /// How long to run once every listener is connected.
    #[arg(long, env = "RADIO_LOADTEST_DURATION", default_value = "30s", value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Duration,

    /// Each broadcaster sends an `update` this often.
    #[arg(long, env = "RADIO_LOADTEST_UPDATE_INTERVAL", default_value = "1s", value_name = "DURATION", value_parser = parse_interval)]
    pub update_interval: Duration,

    /// Each broadcaster also sends a `heartbeat` this often (off by default).
    #[arg(long, env = "RADIO_LOADTEST_HEARTBEAT_INTERVAL", value_name = "DURATION", value_parser = parse_interval)]
    pub heartbeat_interval: Option<Duration>,

    /// New connections per second, over all workers (0: as fast as accepted).
    #[arg(
        long,
        env = "RADIO_LOADTEST_CONNECT_RATE",
        value_name = "N",
        default_value_t = 0
    )]
    pub connect_rate: u32,

    /// Worker processes, or `auto` (one per 15,000 connections).
    #[arg(
        long,
        env = "RADIO_LOADTEST_WORKERS",
        value_name = "N",
        default_value = "auto"
    )]
    pub workers: String,

    /// Local addresses to bind client sockets to: a range `A-B` or a list `A,B`
    /// (default for a loopback target: 127.0.0.1 onward, as many as needed).
    #[arg(long, env = "RADIO_LOADTEST_SOURCE_ADDRS", value_name = "ADDRS")]
    pub source_addrs: Option<String>,

    /// Prefix of the station names used.
    #[arg(
        long,
        env = "RADIO_LOADTEST_STATION_PREFIX",
        value_name = "PREFIX",
        default_value = "loadtest"
    )]
    pub station_prefix: String,

    /// Broadcast key, when the server requires one.
    #[arg(
        long,
        env = "RADIO_BROADCAST_KEY",
        value_name = "KEY",
        hide_env_values = true
    )]
    pub key: Option<String>,

    /// Write the report as JSON to this file.
    #[arg(long, env = "RADIO_LOADTEST_JSON", value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// Fail (exit 1) when fan-out p99 exceeds this.
    #[arg(long, env = "RADIO_LOADTEST_MAX_P99", value_name = "DURATION", value_parser = parse_duration)]
    pub max_p99: Option<Duration>,

    /// Fail (exit 1) when final-state delivery is below this percentage.
    #[arg(long, env = "RADIO_LOADTEST_MIN_DELIVERY", value_name = "PERCENT")]
    pub min_delivery: Option<f64>,

    /// Measure this server process's memory and CPU (repeat for several, or
    /// list them: 12,34).
    #[arg(
        long = "server-pid",
        env = "RADIO_LOADTEST_SERVER_PID",
        value_name = "PID",
        value_delimiter = ','
    )]
    pub server_pids: Vec<u32>,
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
        for bad in ["localhost", "localhost:x", ":8080", "::1:80", "h:70000"] {
            assert!(parse_listen(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert!(parse_duration("ten").is_err());
    }
}
