//! `radio loadtest`'s flags.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::parse::{PerMinute, parse_duration, parse_interval, parse_per_minute, parse_station};

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

    /// Once every listener is connected, replace this many a minute (one
    /// disconnect and one connect each), like `1000/min` or `20/s`.
    #[arg(long, env = "RADIO_LOADTEST_CHURN", value_name = "RATE", value_parser = parse_per_minute)]
    pub churn: Option<PerMinute>,

    /// On a lost connection, listeners connect again to the next --url and
    /// broadcasters resume their station there, with the clients' backoff;
    /// the report counts reconnects. SIGUSR1 marks a moment (a fault): the
    /// report says how long until every listener held the newest state again.
    #[arg(long, env = "RADIO_LOADTEST_RECONNECT")]
    pub reconnect: bool,

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

    /// Play no broadcaster: tune the listeners to these stations, which
    /// already play (a server-run station, `radio serve --station`), and
    /// measure the states the server publishes. Repeat, or list them: a,b.
    #[arg(
        long = "listen-only",
        env = "RADIO_LOADTEST_LISTEN_ONLY",
        value_name = "STATION",
        value_delimiter = ',',
        value_parser = parse_station,
        conflicts_with_all = ["stations", "update_interval", "heartbeat_interval", "station_prefix", "key"]
    )]
    pub listen_only: Vec<String>,

    /// Read HTTP audio streams instead of holding WebSocket listeners:
    /// each of --listeners reads a stream, measuring the time to its first
    /// audio byte, its bytes a second, its stalls (over 1 s without a
    /// byte) and the audio lost against the stream's bitrate. With
    /// --listen-only STATION it reads URL/stations/STATION/stream; without,
    /// each --url is a stream itself (an Icecast mount, say).
    #[arg(
        long,
        env = "RADIO_LOADTEST_STREAM",
        conflicts_with_all = ["stations", "update_interval", "heartbeat_interval", "station_prefix", "key", "max_p99", "min_delivery", "churn", "reconnect", "fetch_media"]
    )]
    pub stream: bool,

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

    /// Trust this CA certificate (PEM) instead of the Mozilla roots, for a
    /// wss:// server with a private CA or a self-signed certificate (the
    /// listeners, broadcasters and observers all use it).
    #[arg(long, env = "RADIO_CA_CERT", value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,

    /// Each listener also fetches its media as the web player does: the
    /// track it is told at tune-in and each change (`Range: bytes=0-`), and
    /// with `prefetch` (the default) the announced next track ahead of its
    /// start. Reports bytes per listener, time from a track's start to
    /// holding its first 256 KiB, and requests refused.
    #[arg(
        long,
        env = "RADIO_LOADTEST_FETCH_MEDIA",
        value_name = "MODE",
        num_args = 0..=1,
        default_missing_value = "prefetch"
    )]
    pub fetch_media: Option<crate::loadtest::media::FetchMedia>,
}
