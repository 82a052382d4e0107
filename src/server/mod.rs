//! `radio serve`: the listener, the shared server state, and shutdown.
//!
//! Shape borrowed from mini-redis: a listener that backs off on accept
//! errors, a [`Shared`] state every handler holds, one
//! [`CancellationToken`] every task watches, and one [`TaskTracker`] that owns
//! every spawned task so shutdown can wait for all of them, bounded by
//! `--shutdown-timeout`.

pub mod cluster;
pub mod connection;
pub mod http;
pub mod media;
pub mod metrics;
pub mod player;
pub mod registry;
pub mod response;
pub mod sessions;
pub mod timed_io;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use anyhow::Context as _;
use socket2::{Domain, Socket, Type};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cli::ServeArgs;
use connection::ConnConfig;
use metrics::Metrics;
use registry::{Local, Registry};

/// State shared by every connection and request handler.
pub struct Shared {
    pub conn: ConnConfig,
    pub handshake_timeout: Duration,
    pub registry: Registry,
    pub metrics: Arc<Metrics>,
    pub shutdown: CancellationToken,
    pub tasks: TaskTracker,
    /// Connection ids, for ownership and log spans.
    pub next_id: AtomicU64,
    /// One permit per WebSocket connection (`--max-connections`).
    pub permits: Arc<Semaphore>,
    // --- media library and private sessions (docs/player.md) ---
    pub media: Arc<media::Library>,
    pub sessions: Arc<sessions::Sessions>,
}

/// Kernel send buffer of an upgraded WebSocket. Small, so a stalled client
/// parks little in the kernel and the write timeout notices it soon; a sync
/// frame is a few hundred bytes.
const WS_SEND_BUFFER: usize = 32 * 1024;

/// Runs the server until SIGINT or SIGTERM.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    raise_open_files_limit(args.max_connections);
    let shutdown = CancellationToken::new();
    let tasks = TaskTracker::new();
    // --- media library and private sessions (docs/player.md) ---
    let media = Arc::new(load_library(args.media.clone(), &shutdown).await?);
    let sessions = Arc::new(sessions::Sessions::new(args.session_ttl, args.max_sessions));
    tasks.spawn(media::rescan_task(
        media.clone(),
        args.rescan_interval,
        shutdown.clone(),
    ));
    tasks.spawn(sessions::sweep_task(
        sessions.clone(),
        args.session_sweep,
        shutdown.clone(),
    ));
    let metrics = Arc::new(Metrics::new());
    let registry = match &args.redis {
        None => Registry::Local(Local::new(
            args.grace_period,
            metrics.clone(),
            tasks.clone(),
            shutdown.clone(),
        )),
        Some(url) => Registry::Cluster(cluster::Cluster::start_node(
            cluster::Config {
                redis_url: url.clone(),
                node_id: args
                    .node_id
                    .clone()
                    .unwrap_or_else(|| format!("node-{}", crate::protocol::random_token(4))),
                lease: args.lease,
                grace: args.grace_period,
            },
            metrics.clone(),
            tasks.clone(),
            shutdown.clone(),
        )?),
    };
    // After the backend, so a bad --redis is reported before anything listens.
    let listener = match bind(args.listen, args.reuse_port) {
        Ok(l) => l,
        Err(e) => {
            shutdown.cancel();
            return Err(e).with_context(|| format!("cannot listen on {}", args.listen));
        }
    };
    let local = listener.local_addr()?;
    tracing::info!("listening on http://{local}");
    let shared = Arc::new(Shared {
        conn: ConnConfig {
            max_message_bytes: args.max_message_bytes,
            keepalive_interval: args.keepalive_interval,
            keepalive_timeout: args.keepalive_timeout,
            write_timeout: args.write_timeout,
            rate_limit: args.rate_limit,
            broadcast_key: args.broadcast_key.clone(),
        },
        handshake_timeout: args.handshake_timeout,
        registry,
        metrics,
        shutdown: shutdown.clone(),
        tasks: tasks.clone(),
        next_id: AtomicU64::new(1),
        permits: Arc::new(Semaphore::new(args.max_connections)),
        media,
        sessions,
    });

    tasks.spawn(wait_for_signal(shutdown.clone()));
    accept_loop(listener, shared).await;

    tracing::info!("shutting down: no new connections, closing the open ones");
    tasks.close();
    if tokio::time::timeout(args.shutdown_timeout, tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            "{} tasks still running after {:?}; exiting anyway",
            tasks.len(),
            args.shutdown_timeout
        );
    }
    tracing::info!("stopped");
    Ok(())
}

/// Scans `--media` (off the async threads), or generates the demo library.
async fn load_library(
    dir: Option<std::path::PathBuf>,
    shutdown: &CancellationToken,
) -> anyhow::Result<media::Library> {
    let cancel = shutdown.clone();
    let library = tokio::task::spawn_blocking(move || match dir {
        Some(dir) => media::Library::scan(dir, &cancel),
        None => Ok(media::Library::demo()),
    })
    .await??;
    tracing::info!(tracks = library.index().len(), "media library ready");
    Ok(library)
}

async fn wait_for_signal(shutdown: CancellationToken) {
    tokio::select! {
        signal = crate::signals::terminate() => tracing::info!("{signal} received"),
        _ = shutdown.cancelled() => return,
    }
    shutdown.cancel();
}

fn bind(addr: SocketAddr, reuse_port: bool) -> std::io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    #[cfg(unix)]
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    #[cfg(not(unix))]
    let _ = reuse_port;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    // A deep backlog absorbs connect storms; the kernel caps it at somaxconn.
    socket.listen(16_384)?;
    TcpListener::from_std(socket.into())
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut backoff = Duration::from_millis(10);
    loop {
        let accepted = tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = Duration::from_millis(10);
                tune_socket(&stream);
                shared
                    .tasks
                    .spawn(http::serve_connection(stream, peer, shared.clone()));
            }
            Err(e) => {
                // EMFILE and friends: the listener is fine, the process is
                // out of something. Wait for connections to close.
                tracing::error!(error = %e, "accept failed; retrying in {backoff:?}");
                tokio::select! {
                    _ = shared.shutdown.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

fn tune_socket(stream: &TcpStream) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY");
    }
}

/// Caps the kernel send buffer of an upgraded WebSocket.
pub(crate) fn cap_send_buffer(stream: &TcpStream) {
    if let Err(e) = socket2::SockRef::from(stream).set_send_buffer_size(WS_SEND_BUFFER) {
        tracing::debug!(error = %e, "cannot set SO_SNDBUF");
    }
}

/// Raises the open-files soft limit to the hard limit and says so.
fn raise_open_files_limit(max_connections: usize) {
    match rlimit::getrlimit(rlimit::Resource::NOFILE) {
        Ok((soft, hard)) => {
            let raised = rlimit::increase_nofile_limit(hard).unwrap_or(soft);
            tracing::info!(soft = raised, hard, was = soft, "open files limit");
            // Each connection is one file; keep some for listeners, logs, media.
            let usable = raised.saturating_sub(64);
            if usable < max_connections as u64 {
                tracing::warn!(
                    "this process may open {raised} files, so it can hold about {usable} \
                     connections, fewer than --max-connections {max_connections}; raise the \
                     hard limit (ulimit -Hn, LimitNOFILE=) or run several nodes"
                );
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot read the open files limit"),
    }
}
