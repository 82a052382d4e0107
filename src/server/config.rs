//! The server's configuration, as the server sees it: plain values grouped
//! by the part that uses them. The command line ([`ServeArgs`], clap) is
//! turned into this once, in [`ServerConfig::from`]; nothing past that point
//! sees clap, so tests and embedders build a [`ServerConfig`] directly.

use std::path::PathBuf;
use std::time::Duration;

use crate::cli::ServeArgs;
use crate::protocol;
use crate::server::backend::any::BackendConfig;
use crate::server::backend::redis;
use crate::server::keys::KeySources;
use crate::server::peer::Cidr;

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
    /// Most stations in one `stations` answer.
    pub max_list: usize,
    /// Origins besides the server's own allowed to open /ws and save sessions.
    pub allowed_origins: Vec<String>,
    /// Proxies whose forwarding headers name the client.
    pub trusted_proxies: Vec<Cidr>,
    /// `--tls-cert` and `--tls-key`: serve https and wss.
    pub tls: Option<TlsFiles>,
    /// How long shutdown waits for connections to close.
    pub shutdown_timeout: Duration,
    pub backend: BackendConfig,
    pub media: MediaConfig,
    pub sessions: SessionConfig,
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
            follow_symlinks: true,
        }
    }
}

impl Default for ServerConfig {
    /// The defaults of `radio serve` with no flags.
    fn default() -> Self {
        Self {
            conn: ConnConfig {
                max_message_bytes: protocol::DEFAULT_MAX_MESSAGE_BYTES,
                keepalive_interval: Duration::from_secs(15),
                keepalive_timeout: Duration::from_secs(45),
                write_timeout: Duration::from_secs(10),
                rate_limit: 50,
                keys: KeySources::default(),
            },
            handshake_timeout: Duration::from_secs(10),
            max_connections: crate::cli::DEFAULT_MAX_CONNECTIONS,
            max_connections_per_ip: 256,
            max_stations: 10_000,
            max_list: 200,
            allowed_origins: Vec::new(),
            trusted_proxies: Vec::new(),
            tls: None,
            shutdown_timeout: Duration::from_secs(5),
            backend: BackendConfig::Local {
                grace: Duration::from_secs(10),
            },
            media: MediaConfig::default(),
            sessions: SessionConfig {
                ttl: Duration::from_secs(3600),
                sweep: Duration::from_secs(300),
                max: 100_000,
                rate_per_minute: 10,
            },
            stations: Vec::new(),
        }
    }
}

impl From<ServeArgs> for ServerConfig {
    fn from(args: ServeArgs) -> Self {
        let backend = match args.redis {
            None => BackendConfig::Local {
                grace: args.grace_period,
            },
            Some(redis_url) => BackendConfig::Redis(redis::Config {
                redis_url,
                node_id: args
                    .node_id
                    .unwrap_or_else(|| format!("node-{}", protocol::random_token(4))),
                lease: args.lease,
                grace: args.grace_period,
                ca_cert: args.redis_ca_cert,
                max_stations: args.max_stations,
            }),
        };
        Self {
            conn: ConnConfig {
                max_message_bytes: args.max_message_bytes,
                keepalive_interval: args.keepalive_interval,
                keepalive_timeout: args.keepalive_timeout,
                write_timeout: args.write_timeout,
                rate_limit: args.rate_limit,
                keys: KeySources {
                    key: args.broadcast_key,
                    key_file: args.broadcast_key_file,
                    keys_file: args.broadcast_keys,
                },
            },
            handshake_timeout: args.handshake_timeout,
            max_connections: args
                .max_connections
                .unwrap_or(crate::cli::DEFAULT_MAX_CONNECTIONS),
            max_connections_per_ip: args.max_connections_per_ip,
            max_stations: args.max_stations,
            max_list: args.max_list,
            allowed_origins: args.allowed_origins,
            trusted_proxies: args.trusted_proxies,
            tls: match (args.tls_cert, args.tls_key) {
                (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
                _ => None,
            },
            shutdown_timeout: args.shutdown_timeout,
            backend,
            media: MediaConfig {
                dir: args.media,
                rescan_interval: args.rescan_interval,
                follow_symlinks: args.follow_symlinks,
            },
            sessions: SessionConfig {
                ttl: args.session_ttl,
                sweep: args.session_sweep,
                max: args.max_sessions,
                rate_per_minute: args.session_rate,
            },
            stations: args.stations.into_iter().flat_map(|l| l.0).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    /// The defaults written here agree with the command line's.
    #[test]
    fn defaults_match_the_command_line() {
        let cli = crate::cli::Cli::parse_from(["radio", "serve"]);
        let crate::cli::Command::Serve(args) = cli.command else {
            panic!("parsed as serve");
        };
        let from_cli = ServerConfig::from(*args);
        assert_eq!(
            format!("{from_cli:?}"),
            format!("{:?}", ServerConfig::default())
        );
    }
}
