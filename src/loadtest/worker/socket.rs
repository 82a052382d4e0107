//! A listener's TCP socket: connected from its source address, and the
//! short labels its I/O failures are counted under. Shared by the
//! WebSocket connection and the media fetches (`--fetch-media`).

use std::net::SocketAddr;

use tokio::net::{TcpSocket, TcpStream};

use super::ctx::Ctx;

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
