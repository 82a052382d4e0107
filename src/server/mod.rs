//! `radio serve`: the sync server, the media library and the web player.
//!
//! Shape borrowed from mini-redis: [`run`] takes a bound listener, a
//! [`ServerConfig`] and a shutdown token, so a test (or any embedder) can run
//! a server in its own process; [`serve`] is the command line's way in, which
//! binds the configured address and turns SIGINT/SIGTERM into that token.
//! The server never names the command line: `crate::cli` makes its
//! [`ServerConfig`].
//! Every task the server spawns is owned by one [`TaskTracker`], so shutdown
//! waits for all of them, bounded by `--shutdown-timeout`.
//!
//! The layers (docs/architecture.md draws them):
//! - [`listener`] accepts; [`http`] serves each TCP connection and routes it;
//!   [`upgrade`] turns `/ws` into a WebSocket run by [`connection`], one task
//!   per socket;
//! - a connection asks the [`backend`] (in memory, or Redis) to claim, tune
//!   and list stations, and reads the [`station`] cells the backend feeds;
//! - [`media`], [`sessions`] and [`player`] answer their own HTTP paths;
//! - [`shared`] holds what every handler needs, [`config`] what it was told.

pub(crate) mod admission;
pub(crate) mod backend;
pub(crate) mod claims;
pub(crate) mod config;
pub(crate) mod connection;
pub(crate) mod history;
pub(crate) mod http;
pub(crate) mod icestats;
pub(crate) mod keyguard;
pub(crate) mod keys;
pub(crate) mod listener;
pub(crate) mod listing;
pub(crate) mod media;
pub(crate) mod metrics;
pub(crate) mod onair;
pub(crate) mod origin;
pub(crate) mod outlet;
pub(crate) mod peer;
pub(crate) mod player;
pub(crate) mod playlists;
pub(crate) mod ratelimit;
pub(crate) mod refusal;
pub(crate) mod reload;
pub(crate) mod response;
pub(crate) mod sessions;
pub(crate) mod shared;
pub(crate) mod station;
pub(crate) mod stream;
pub(crate) mod timed_io;
pub(crate) mod tls;
pub(crate) mod upgrade;
pub(crate) mod warnings;
#[cfg(target_os = "linux")]
pub(crate) mod zerocopy;

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::ServerConfig;
use config::Startup;
use shared::Shared;

/// `radio serve`: binds where `startup` says and runs until SIGINT or
/// SIGTERM.
pub(crate) async fn serve(startup: Startup, config: ServerConfig) -> anyhow::Result<()> {
    let listeners = listener::bind_all("--listen", &startup.listen, startup.reuse_port).await?;
    let shutdown = CancellationToken::new();
    let signals = tokio::spawn(cancel_on_signal(shutdown.clone()));
    // The capacity is told once everything started: a failure to start is
    // the first thing an operator reads, not the last under a line of INFO.
    let started = || listener::raise_open_files_limit(startup.max_connections_asked);
    let result = run_all(listeners, config, shutdown.clone(), started).await;
    shutdown.cancel();
    signals.abort();
    result
}

/// Serves `listener` with `config` until `shutdown` is cancelled, then
/// closes every connection, bounded by the config's shutdown timeout.
pub async fn run(
    listener: TcpListener,
    config: ServerConfig,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    run_all(vec![listener], config, shutdown, || {}).await
}

/// [`run`] on several listening sockets (a host name's addresses); calls
/// `started` once the server has started, before it accepts.
async fn run_all(
    listeners: Vec<TcpListener>,
    config: ServerConfig,
    shutdown: CancellationToken,
    started: impl FnOnce(),
) -> anyhow::Result<()> {
    let tasks = TaskTracker::new();
    let shutdown_timeout = config.shutdown_timeout;
    let metrics_listen = config.metrics_listen.clone();
    let shared = match Shared::start(config, &tasks, &shutdown).await {
        Ok(s) => Arc::new(s),
        Err(e) => {
            // Stop whatever started before the failure.
            shutdown.cancel();
            return Err(e);
        }
    };
    let metrics_listeners = match &metrics_listen {
        Some(addr) => match listener::bind_all("--metrics-listen", addr, false).await {
            Ok(l) => l,
            Err(e) => {
                shutdown.cancel();
                return Err(e);
            }
        },
        None => Vec::new(),
    };
    started();
    let mut accepting = Vec::new();
    for listener in metrics_listeners {
        tracing::info!("serving /metrics on http://{}", listener.local_addr()?);
        accepting.push(tokio::spawn(listener::metrics_loop(
            listener,
            shared.clone(),
        )));
    }
    for listener in listeners {
        let local = listener.local_addr()?;
        let scheme = if shared.tls.is_some() {
            "https"
        } else {
            "http"
        };
        tracing::info!("listening on {scheme}://{local}");
        accepting.push(tokio::spawn(listener::accept_loop(
            listener,
            shared.clone(),
        )));
    }
    drop(shared);
    for a in accepting {
        if let Err(e) = a.await {
            tracing::error!(error = %e, "an accept loop failed");
        }
    }

    tracing::info!("shutting down: no new connections, closing the open ones");
    tasks.close();
    if tokio::time::timeout(shutdown_timeout, tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            "{} tasks still running after {:?}; exiting anyway",
            tasks.len(),
            shutdown_timeout
        );
    }
    tracing::info!("stopped");
    Ok(())
}

async fn cancel_on_signal(shutdown: CancellationToken) {
    tokio::select! {
        signal = crate::signals::terminate() => tracing::info!("{signal} received"),
        _ = shutdown.cancelled() => return,
    }
    shutdown.cancel();
}
