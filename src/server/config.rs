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

/// Everything `radio serve` needs besides its listening socket.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub conn: ConnConfig,
    /// Time a client has to send its HTTP request and complete an upgrade.
    pub handshake_timeout: Duration,
    /// Most concurrent WebSocket connections (more get 503).
    pub max_connections: usize,
    /// How long shutdown waits for connections to close.
    pub shutdown_timeout: Duration,
    pub backend: BackendConfig,
    pub media: MediaConfig,
    pub sessions: SessionConfig,
}

/// The per-connection limits.
#[derive(Clone, Debug)]
pub struct ConnConfig {
    pub max_message_bytes: usize,
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
    pub write_timeout: Duration,
    pub rate_limit: u32,
    pub broadcast_key: Option<String>,
}

/// The media library.
#[derive(Clone, Debug, Default)]
pub struct MediaConfig {
    /// The directory to serve; `None` serves the generated demo library.
    pub dir: Option<PathBuf>,
    /// Rescan this often (it is also rescanned on SIGHUP).
    pub rescan_interval: Option<Duration>,
}

/// Private player sessions.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    pub ttl: Duration,
    pub sweep: Duration,
    pub max: usize,
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
                broadcast_key: None,
            },
            handshake_timeout: Duration::from_secs(10),
            max_connections: crate::cli::DEFAULT_MAX_CONNECTIONS,
            shutdown_timeout: Duration::from_secs(5),
            backend: BackendConfig::Local {
                grace: Duration::from_secs(10),
            },
            media: MediaConfig::default(),
            sessions: SessionConfig {
                ttl: Duration::from_secs(3600),
                sweep: Duration::from_secs(300),
                max: 100_000,
            },
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
            }),
        };
        Self {
            conn: ConnConfig {
                max_message_bytes: args.max_message_bytes,
                keepalive_interval: args.keepalive_interval,
                keepalive_timeout: args.keepalive_timeout,
                write_timeout: args.write_timeout,
                rate_limit: args.rate_limit,
                broadcast_key: args.broadcast_key,
            },
            handshake_timeout: args.handshake_timeout,
            max_connections: args
                .max_connections
                .unwrap_or(crate::cli::DEFAULT_MAX_CONNECTIONS),
            shutdown_timeout: args.shutdown_timeout,
            backend,
            media: MediaConfig {
                dir: args.media,
                rescan_interval: args.rescan_interval,
            },
            sessions: SessionConfig {
                ttl: args.session_ttl,
                sweep: args.session_sweep,
                max: args.max_sessions,
            },
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
        let from_cli = ServerConfig::from(args);
        assert_eq!(
            format!("{from_cli:?}"),
            format!("{:?}", ServerConfig::default())
        );
    }
}
