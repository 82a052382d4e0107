//! The listening socket and its accept loop, and the socket options every
//! connection gets.
//!
//! Shape borrowed from mini-redis: a listener that backs off on accept
//! errors (EMFILE and friends) instead of spinning or dying, and that stops
//! accepting the moment shutdown begins.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Socket, Type};
use tokio::net::TcpListener;

use crate::server::http;
use crate::server::shared::Shared;

/// Binds `addr` (with `SO_REUSEPORT` when asked, to share the port with
/// other nodes) with a deep backlog.
pub fn bind(addr: SocketAddr, reuse_port: bool) -> std::io::Result<TcpListener> {
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

/// Accepts connections until shutdown, each served by its own task.
pub async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut backoff = Duration::from_millis(10);
    loop {
        let accepted = tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = Duration::from_millis(10);
                if let Err(e) = stream.set_nodelay(true) {
                    tracing::debug!(error = %e, "cannot set TCP_NODELAY");
                }
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

/// Raises the open-files soft limit to the hard limit, and says how many
/// connections that holds: a warning when the operator asked for more
/// (`explicit`: `--max-connections` given), at info otherwise (the default
/// is a cap, not a request).
pub fn raise_open_files_limit(explicit: Option<usize>) {
    match rlimit::getrlimit(rlimit::Resource::NOFILE) {
        Ok((soft, hard)) => {
            let raised = rlimit::increase_nofile_limit(hard).unwrap_or(soft);
            // Each connection is one file; keep some for listeners, logs, media.
            let usable = raised.saturating_sub(64);
            match explicit {
                Some(asked) if usable < asked as u64 => tracing::warn!(
                    "this process may open {raised} files, so it can hold about {usable} \
                     connections, fewer than --max-connections {asked}; raise the hard limit \
                     (ulimit -Hn, LimitNOFILE=) or run several nodes"
                ),
                _ => tracing::info!(
                    open_files = raised,
                    was = soft,
                    hard,
                    "room for about {usable} connections"
                ),
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot read the open files limit"),
    }
}

/// Resolves `--listen` (HOST:PORT; a host name may give several addresses)
/// and binds every address. Addresses that cannot be bound are skipped with
/// a warning (`localhost` on a host without IPv6), unless none can be.
pub async fn bind_all(listen: &str, reuse_port: bool) -> anyhow::Result<Vec<TcpListener>> {
    use anyhow::Context as _;
    let mut addrs: Vec<SocketAddr> = tokio::net::lookup_host(listen)
        .await
        .with_context(|| format!("cannot resolve --listen {listen}"))?
        .collect();
    addrs.dedup();
    let mut bound = Vec::new();
    let mut failed = Vec::new();
    for addr in addrs {
        match bind(addr, reuse_port) {
            Ok(l) => bound.push(l),
            Err(e) => failed.push(format!("{addr}: {e}")),
        }
    }
    if bound.is_empty() {
        anyhow::bail!("cannot listen on {listen}: {}", failed.join("; "));
    }
    for f in failed {
        tracing::warn!("not listening on {f}");
    }
    Ok(bound)
}
