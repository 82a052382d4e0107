//! `radio serve`'s flags as the server takes them: [`ServerConfig`], made
//! once here, with every check between flags (a flag that parses alone but
//! cannot work with another is a usage error, exit 2), and the
//! [`Startup`] that only the command line needs (where to bind).

use crate::errors::Usage;
use crate::protocol;
use crate::server::backend::any::BackendConfig;
use crate::server::backend::redis;
use crate::server::config::{
    ConnConfig, MediaConfig, ServerConfig, SessionConfig, Startup, StreamConfig, TlsFiles, defaults,
};
use crate::server::keys::KeySources;

use super::ServeArgs;

impl TryFrom<ServeArgs> for ServerConfig {
    type Error = Usage;

    fn try_from(args: ServeArgs) -> Result<Self, Usage> {
        check(&args)?;
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
                password_file: args.redis_password_file,
                sentinel_password_file: args.redis_sentinel_password_file,
                max_stations: args.max_stations,
            }),
        };
        Ok(Self {
            conn: ConnConfig {
                max_message_bytes: args.max_message_bytes,
                keepalive_interval: args.keepalive_interval,
                keepalive_timeout: args.keepalive_timeout,
                write_timeout: args.write_timeout,
                rate_limit: args.rate_limit,
                list_rate: args.list_rate,
                keys: KeySources {
                    key: args.broadcast_key,
                    key_file: args.broadcast_key_file,
                    keys_file: args.broadcast_keys,
                },
            },
            handshake_timeout: args.handshake_timeout,
            max_connections: args.max_connections.unwrap_or(defaults::MAX_CONNECTIONS),
            max_connections_per_ip: args.max_connections_per_ip,
            max_stations: args.max_stations,
            max_stations_per_ip: args.max_stations_per_ip,
            claim_rate: args.claim_rate,
            max_list: args.max_list,
            allowed_origins: args.allowed_origins,
            allowed_hosts: args.allowed_hosts,
            metrics_listen: args.metrics_listen,
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
                base_url: args.media_base_url,
                loudness_cache: args
                    .loudness_cache
                    .unwrap_or(crate::server::media::LoudnessCache::Auto),
            },
            sessions: SessionConfig {
                ttl: args.session_ttl,
                sweep: args.session_sweep,
                max: args.max_sessions,
                rate_per_minute: args.session_rate,
            },
            stream: StreamConfig {
                bitrate_kbps: args.stream_bitrate,
                burst: args.stream_burst,
            },
            stations: args.stations.into_iter().flat_map(|l| l.0).collect(),
        })
    }
}

impl From<&ServeArgs> for Startup {
    fn from(args: &ServeArgs) -> Self {
        Self {
            listen: args.listen.clone(),
            reuse_port: args.reuse_port,
            max_connections_asked: args.max_connections,
        }
    }
}

/// The checks between flags; each flag's own shape is checked by its
/// parser (`--tls-cert` without `--tls-key` by clap's `requires`).
fn check(args: &ServeArgs) -> Result<(), Usage> {
    if args.keepalive_timeout <= args.keepalive_interval {
        return Err(Usage(format!(
            "--keepalive-timeout ({:?}) must be longer than --keepalive-interval ({:?}), \
             or connections that answer every ping are closed; make it 3 intervals",
            args.keepalive_timeout, args.keepalive_interval
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::cli::{Cli, Command};

    fn serve_args(flags: &[&str]) -> ServeArgs {
        let argv = ["radio", "serve"].iter().chain(flags);
        let Command::Serve(args) = Cli::try_parse_from(argv).expect("parses").command else {
            panic!("parsed as serve");
        };
        *args
    }

    /// `radio serve` with no flags is `ServerConfig::default()`: the
    /// defaults clap shows are the server's.
    #[test]
    fn defaults_match_the_command_line() {
        let from_cli = ServerConfig::try_from(serve_args(&[])).expect("the defaults are valid");
        assert_eq!(
            format!("{from_cli:?}"),
            format!("{:?}", ServerConfig::default())
        );
        let startup = Startup::from(&serve_args(&[]));
        assert_eq!(startup.listen, defaults::LISTEN);
        assert_eq!(startup.max_connections_asked, None);
    }

    #[test]
    fn keepalive_timeout_must_outlast_the_interval() {
        for flags in [
            ["--keepalive-interval", "15s", "--keepalive-timeout", "15s"],
            ["--keepalive-interval", "1m", "--keepalive-timeout", "45s"],
        ] {
            let Err(Usage(why)) = ServerConfig::try_from(serve_args(&flags)) else {
                panic!("{flags:?} accepted");
            };
            assert!(why.contains("--keepalive-timeout"), "{why}");
        }
        let ok = ["--keepalive-interval", "5s", "--keepalive-timeout", "15s"];
        assert!(ServerConfig::try_from(serve_args(&ok)).is_ok());
    }
}
