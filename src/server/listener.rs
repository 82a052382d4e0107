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

use crate::server::admission::Full;
use crate::server::http;
use crate::server::media::out_of_descriptors;
use crate::server::peer::canonical;
use crate::server::shared::Shared;
use crate::server::warnings::Reason;

mod thread;

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

/// Accepts connections until shutdown, each served by its own task, on a
/// thread of its own ([`thread`]).
pub(crate) async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let started = listener.into_std().and_then(|listener| {
        let stop = Arc::new(thread::Stop::new()?);
        Ok((listener, stop))
    });
    let (listener, stop) = match started {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot start accepting");
            return;
        }
    };
    let runtime = tokio::runtime::Handle::current();
    let (done, ended) = tokio::sync::oneshot::channel::<()>();
    let accepting = std::thread::Builder::new()
        .name("radio-accept".into())
        .spawn({
            let (stop, shared) = (stop.clone(), shared.clone());
            move || {
                // Sockets are registered with, and tasks spawned on, the runtime.
                let _runtime = runtime.enter();
                thread::accept_until_stopped(
                    &listener,
                    &stop,
                    |stream, peer| take(stream, peer, &shared),
                    |e| failed(e, &shared),
                );
                drop(done);
            }
        });
    if let Err(e) = accepting {
        tracing::error!(error = %e, "cannot start the accept thread");
        return;
    }
    shared.shutdown.cancelled().await;
    stop.stop();
    // The thread ends at once: it was waiting, or between two connections.
    let _ = ended.await;
}

/// An accepted connection, made a runtime socket and admitted.
fn take(stream: std::net::TcpStream, peer: SocketAddr, shared: &Arc<Shared>) {
    let stream = stream
        .set_nonblocking(true)
        .and_then(|()| tokio::net::TcpStream::from_std(stream));
    shared.heads.set_starved(false);
    match stream {
        Ok(stream) => admit(stream, peer, shared),
        Err(e) => tracing::debug!(%peer, error = %e, "cannot serve an accepted connection"),
    }
}

/// An accept that failed: EMFILE and friends are counted and told once per
/// window (a herd makes thousands a second), anything else is logged.
fn failed(e: &std::io::Error, shared: &Shared) {
    if out_of_descriptors(e) {
        shared.heads.set_starved(true);
        shared.metrics.out_of_files[0].inc();
        shared.warnings.note(Reason::AcceptOutOfFiles);
    } else {
        tracing::warn!(error = %e, "accept failed; retrying");
    }
}

/// Serves an accepted connection in its own task, or refuses it over
/// `--max-connections` or `--max-connections-per-ip`.
fn admit(stream: tokio::net::TcpStream, peer: SocketAddr, shared: &Arc<Shared>) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY");
    }
    // A trusted proxy's connections are counted against the client it
    // names, once its request is read.
    let ip = canonical(peer.ip());
    let counted = (!shared.proxies.trusts(ip)).then_some(ip);
    match shared.gate.admit(counted) {
        Ok(admission) => {
            shared.tasks.spawn(http::serve_connection(
                stream,
                peer,
                admission,
                shared.clone(),
            ));
        }
        Err(full) => {
            shared
                .tasks
                .spawn(refuse(stream, peer, full, shared.clone()));
        }
    }
}

/// Most connections open at once to the `--metrics-listen` address (a
/// scraper needs one); more are closed at once.
const METRICS_CONNECTIONS: usize = 16;

/// Accepts connections to the `--metrics-listen` address until shutdown,
/// each served `/metrics` alone by its own task.
pub(crate) async fn metrics_loop(listener: TcpListener, shared: Arc<Shared>) {
    let open = Arc::new(tokio::sync::Semaphore::new(METRICS_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, peer)) => {
                // Over the bound: dropped, which closes it.
                let Ok(permit) = open.clone().try_acquire_owned() else {
                    continue;
                };
                let shared_conn = shared.clone();
                shared.tasks.spawn(async move {
                    http::serve_metrics(stream, peer, shared_conn).await;
                    drop(permit);
                });
            }
            Err(e) => {
                tracing::debug!(error = %e, "accept failed on --metrics-listen");
                tokio::select! {
                    _ = shared.shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
        }
    }
}

/// Answers a connection over a limit with 503 (`--max-connections`) or 429
/// (`--max-connections-per-ip`) without reading its request, and closes it
/// (with TLS, closes it without an answer).
/// Bounded: a client that does not read the answer gets a second at most.
async fn refuse(
    mut stream: tokio::net::TcpStream,
    peer: SocketAddr,
    full: Full,
    shared: Arc<Shared>,
) {
    use tokio::io::AsyncWriteExt as _;
    full.count(&shared.metrics, &shared.warnings, peer.ip());
    if shared.tls.is_some() {
        // A plain-text answer would be garbage to a TLS client, and a
        // handshake per refusal costs more than the refusal saves: closed.
        return;
    }
    let status = full.status();
    let body = format!("{}\n", full.message());
    let answer = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: text/plain; charset=utf-8\r\n\
         retry-after: 5\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    );
    let bye = async {
        stream.write_all(answer.as_bytes()).await?;
        stream.shutdown().await?;
        // Read what the client sent until it closes, so that closing does
        // not reset the connection before the answer is read.
        let mut sink = [0u8; 1024];
        loop {
            use tokio::io::AsyncReadExt as _;
            if stream.read(&mut sink).await? == 0 {
                return Ok::<(), std::io::Error>(());
            }
        }
    };
    if let Ok(Err(e)) = tokio::time::timeout(Duration::from_secs(1), bye).await {
        tracing::debug!(%peer, error = %e, "refusing a connection failed");
    }
}

/// Raises the open-files soft limit to the hard limit, and says how many
/// connections that holds: a warning when the operator asked for more
/// (`explicit`: `--max-connections` given), at info otherwise (the default
/// is a cap, not a request).
pub(crate) fn raise_open_files_limit(explicit: Option<usize>) {
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
pub(crate) async fn bind_all(
    flag: &str,
    listen: &str,
    reuse_port: bool,
) -> anyhow::Result<Vec<TcpListener>> {
    use anyhow::Context as _;
    let mut addrs: Vec<SocketAddr> = tokio::net::lookup_host(listen)
        .await
        .with_context(|| format!("cannot resolve {flag} {listen}"))?
        .collect();
    addrs.dedup();
    let mut bound = Vec::new();
    let mut failed = Vec::new();
    for addr in addrs {
        match bind(addr, reuse_port) {
            Ok(l) => bound.push(l),
            Err(e) => failed.push((addr, e)),
        }
    }
    if bound.is_empty() {
        anyhow::bail!(cannot_listen(flag, listen, &failed));
    }
    for (addr, e) in failed {
        tracing::warn!("not listening on {addr}: {e}");
    }
    Ok(bound)
}

/// Why `flag` (`--listen`, `--metrics-listen`) could not be bound at all,
/// each address said once: the addresses a host name resolved to are named
/// only when they differ from what was written. An address in use gets
/// what to do about it.
fn cannot_listen(flag: &str, listen: &str, failed: &[(SocketAddr, std::io::Error)]) -> String {
    let literal = matches!(failed, [(addr, _)] if addr.to_string() == listen);
    let reasons: Vec<String> = failed
        .iter()
        .map(|(addr, e)| {
            let why = if e.kind() == std::io::ErrorKind::AddrInUse {
                "another process is listening there (address in use)".to_owned()
            } else {
                e.to_string()
            };
            if literal {
                why
            } else {
                format!("{addr}: {why}")
            }
        })
        .collect();
    let mut text = format!("cannot listen on {listen}: {}", reasons.join("; "));
    if failed
        .iter()
        .any(|(_, e)| e.kind() == std::io::ErrorKind::AddrInUse)
    {
        let host = listen.rsplit_once(':').map_or(listen, |(host, _)| host);
        text.push_str(&format!(
            "; stop that process, or listen elsewhere: {flag} {host}:0 takes any free \
             port (the log says which), or choose another port"
        ));
    }
    text
}
