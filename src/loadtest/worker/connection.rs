//! One listener's connection, from TCP connect through upgrade, `welcome`
//! and `tune_in` to the frames it receives, and the short labels its
//! failures are counted under. Apart from the worker's process-level
//! plumbing because this is the code that runs 50,000 times over, where
//! every byte of a task and every syscall counts.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::client::Response as UpgradeResponse;
use tokio_tungstenite::tungstenite::{self, Message};

use super::ctx::{CONNECTED, Ctx, Lite, lock};

/// Why a connection attempt failed, as a short stable label for the report.
pub(super) fn io_reason(e: &std::io::Error) -> String {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::ConnectionRefused => "refused".into(),
        K::ConnectionReset => "reset".into(),
        K::TimedOut => "timeout".into(),
        K::AddrNotAvailable => "addr_not_available".into(),
        K::AddrInUse => "addr_in_use".into(),
        _ if e.raw_os_error() == Some(24) => "too_many_open_files".into(),
        kind => format!("io_{kind:?}").to_ascii_lowercase(),
    }
}

fn ws_reason(e: &tungstenite::Error) -> String {
    match e {
        tungstenite::Error::Io(e) => io_reason(e),
        tungstenite::Error::Http(resp) => format!("http_{}", resp.status().as_u16()),
        tungstenite::Error::Tls(_) => "tls".into(),
        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => {
            "closed_during_handshake".into()
        }
        _ => "handshake".into(),
    }
}

/// Opens the TCP connection of global listener `i`, bound to its source address.
pub(super) async fn tcp_connect(ctx: &Ctx, i: usize) -> std::io::Result<TcpStream> {
    let target = ctx.targets[ctx.plan.url_of(i)].addr;
    let socket = if target.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(src) = ctx.plan.source_of(i) {
        // Lets the kernel reuse this address's ports still in TIME_WAIT from
        // an earlier run; the four-tuple still has to be unique.
        socket.set_reuseaddr(true)?;
        bind_address_no_port(&socket)?;
        socket.bind(SocketAddr::new(src, 0))?;
    }
    let stream = socket.connect(target).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Asks the kernel to pick the local port at `connect` rather than at
/// `bind`. A `bind` to port 0 must find a port free towards every
/// destination, a search that grows with every socket already bound (and
/// with TIME_WAIT sockets of earlier runs): measured, it made the generator
/// spend 230 µs to 880 µs of CPU per connection at 18,000. At `connect` the
/// kernel only needs the four-tuple to be unique.
#[cfg(target_os = "linux")]
fn bind_address_no_port(socket: &TcpSocket) -> std::io::Result<()> {
    use std::os::fd::AsRawFd as _;
    let one: libc::c_int = 1;
    // SAFETY: the descriptor belongs to `socket`, which outlives the call;
    // the option value points to a live c_int and its size is passed.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&raw const one).cast::<libc::c_void>(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn bind_address_no_port(_socket: &TcpSocket) -> std::io::Result<()> {
    Ok(())
}

/// One listener, from TCP connect to the end of the run.
///
/// The handshake runs in a boxed future that is freed once it is done, so
/// the task a listener keeps for the whole run holds little more than its
/// socket (measured: an 11,184-byte task future when handshake, session and
/// the TLS variant shared one future; 1,128 bytes like this).
pub(super) async fn listener(ctx: Arc<Ctx>, local: usize, permit: OwnedSemaphorePermit) {
    let node = ctx.plan.url_of(ctx.plan.first + local);
    if ctx.targets[node].tls {
        // Boxed whole: its futures are large and would size every
        // listener's task, plain ones included.
        return Box::pin(tls_listener(ctx, local, permit)).await;
    }
    let url = ctx.targets[node].url.as_str();
    let config = Some(ctx.config);
    let upgrade = |s| tokio_tungstenite::client_async_with_config(url, s, config);
    // Bound to a variable, so the boxed handshake is freed before the
    // session starts (a temporary in `if let` would live as long as it).
    let opened = Box::pin(open(&ctx, local, permit, upgrade)).await;
    if let Some(ws) = opened {
        receive(&ctx, local, ws).await;
    }
}

/// [`listener`] over `wss://`.
async fn tls_listener(ctx: Arc<Ctx>, local: usize, permit: OwnedSemaphorePermit) {
    let node = ctx.plan.url_of(ctx.plan.first + local);
    let url = ctx.targets[node].url.as_str();
    let config = Some(ctx.config);
    // The settings every client connection uses: `--ca-cert`'s when given.
    let connector = match crate::client::tls_config() {
        Ok(tls) => Some(tokio_tungstenite::Connector::Rustls(tls)),
        Err(_) => {
            ctx.fail(local, "tls_config".into());
            return;
        }
    };
    let upgrade = |s| tokio_tungstenite::client_async_tls_with_config(url, s, config, connector);
    let opened = Box::pin(open(&ctx, local, permit, upgrade)).await;
    if let Some(ws) = opened {
        receive(&ctx, local, ws).await;
    }
}

/// Connects, upgrades, waits for `welcome` and tunes in. A failure is
/// recorded with its reason and gives `None`.
async fn open<S, F, Fut>(
    ctx: &Ctx,
    local: usize,
    permit: OwnedSemaphorePermit,
    upgrade: F,
) -> Option<WebSocketStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: FnOnce(TcpStream) -> Fut,
    Fut: Future<Output = Result<(WebSocketStream<S>, UpgradeResponse), tungstenite::Error>>,
{
    let i = ctx.plan.first + local;
    let started = Instant::now();
    let deadline = started + Duration::from_millis(ctx.plan.handshake_timeout_ms);
    let stream = match tokio::time::timeout_at(deadline, tcp_connect(ctx, i)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return ctx.fail_with(local, io_reason(&e)),
        Err(_) => return ctx.fail_with(local, "timeout".into()),
    };
    let mut ws = match tokio::time::timeout_at(deadline, upgrade(stream)).await {
        Ok(Ok((ws, _))) => ws,
        Ok(Err(e)) => return ctx.fail_with(local, ws_reason(&e)),
        Err(_) => return ctx.fail_with(local, "timeout".into()),
    };
    let welcome = loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => break Err("no_welcome".to_owned()),
            Ok(None) => break Err("closed_during_handshake".to_owned()),
            Ok(Some(Err(e))) => break Err(ws_reason(&e)),
            Ok(Some(Ok(Message::Text(t)))) => {
                break match serde_json::from_str::<Lite>(t.as_str()) {
                    Ok(f) if f.ty == "welcome" => Ok(()),
                    _ => Err("no_welcome".to_owned()),
                };
            }
            Ok(Some(Ok(Message::Close(_)))) => break Err("closed_during_handshake".to_owned()),
            Ok(Some(Ok(_))) => {}
        }
    };
    if let Err(reason) = welcome {
        return ctx.fail_with(local, reason);
    }
    let took = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    lock(&ctx.handshake_us).record(took);
    drop(permit);
    ctx.state[local].store(CONNECTED, Ordering::Relaxed);
    ctx.connected.fetch_add(1, Ordering::Relaxed);
    let station = ctx.plan.station_of(i);
    if ws
        .send(Message::Text(ctx.tune_frames[station].clone()))
        .await
        .is_err()
    {
        ctx.drop_listener(local);
        return None;
    }
    Some(ws)
}

/// Measures every frame a tuned-in listener receives until its connection
/// ends (or the worker exits).
async fn receive<S>(ctx: &Arc<Ctx>, local: usize, mut ws: WebSocketStream<S>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let i = ctx.plan.first + local;
    let node = ctx.plan.url_of(i);
    let station = ctx.plan.station_of(i) as u32;
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => {
                ctx.on_text(local, station, node, t.as_str());
                if let Some(media) = &ctx.media {
                    super::media::on_text(ctx, media, local, t.as_str());
                }
            }
            Some(Ok(Message::Close(frame))) => {
                let code =
                    frame.map_or_else(|| "none".to_owned(), |f| u16::from(f.code).to_string());
                *ctx.shard(local).close_codes.entry(code).or_default() += 1;
                return ctx.drop_listener(local);
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return ctx.drop_listener(local),
        }
    }
}
