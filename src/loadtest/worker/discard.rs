//! A media `GET` over plain TCP whose body the kernel drops as it arrives.
//!
//! A listener of the load test never plays what it fetches: it only needs
//! to know when the bytes reached it. Read through hyper, every byte is
//! copied into the generator's memory, and on one machine that copy costs
//! the generator about twice the CPU the server spends sending (measured
//! in the herd: 5.3-6.0 CPU s against 2.7-3.1 a run), CPU the server under
//! test then lacks. Here the head is read and parsed as a stream reader's
//! is ([`head`]), and the body is taken with `recv(MSG_TRUNC)`, which on a
//! TCP socket acknowledges and frees the bytes without copying them
//! (tcp(7)). A real listener pays its own copy on its own machine; this
//! keeps the server's figures the server's. A chunked body (a proxy's or a CDN's) is read and counted
//! through its framing ([`Body`]); TLS bodies, which must be decrypted,
//! stay on hyper's path.

use std::io;
use std::os::fd::AsRawFd as _;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, Interest};
use tokio::net::TcpStream;

use crate::loadtest::stream::body::{Body, Head, head};

/// The most a response head may take.
const MAX_HEAD: usize = 16 * 1024;
/// The most one `recv` drops.
const MAX_DROP: usize = 1 << 20;

/// `GET path` with `Range: bytes=0-`, its body read to the end; `on_bytes`
/// hears each amount of the body as it arrives. An error is why the fetch
/// failed: another status than 200/206 (`http_NNN`), a head this cannot
/// read, or a body cut short.
pub(super) async fn get(
    mut tcp: TcpStream,
    authority: &str,
    path: &str,
    mut on_bytes: impl FnMut(u64),
) -> Result<(), String> {
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nRange: bytes=0-\r\nConnection: close\r\n\r\n"
    );
    if let Err(e) = tcp.write_all(request.as_bytes()).await {
        return Err(crate::loadtest::net::io_reason(&e));
    }
    let mut buf = Vec::with_capacity(4096);
    let Head {
        status,
        chunked,
        length,
        body_at,
        ..
    } = loop {
        if buf.len() >= MAX_HEAD {
            return Err("bad_head".into());
        }
        let mut chunk = [0u8; 4096];
        let n = match tcp.read(&mut chunk).await {
            Ok(0) => return Err("no_answer".into()),
            Ok(n) => n,
            Err(e) => return Err(crate::loadtest::net::io_reason(&e)),
        };
        buf.extend_from_slice(&chunk[..n]);
        match head(&buf) {
            None => continue,
            Some(Err(_)) => return Err("bad_head".into()),
            Some(Ok(head)) => break head,
        }
    };
    if status != 200 && status != 206 {
        return Err(format!("http_{status}"));
    }
    if chunked {
        return read_chunked(tcp, &buf[body_at..], on_bytes).await;
    }
    let early = (buf.len() - body_at) as u64;
    if early > 0 {
        on_bytes(early);
    }
    let mut left = length.map(|l| l.saturating_sub(early));
    loop {
        if left == Some(0) {
            break Ok(());
        }
        let want = left.map_or(MAX_DROP, |l| {
            usize::try_from(l).unwrap_or(MAX_DROP).min(MAX_DROP)
        });
        let dropped = tcp
            .async_io(Interest::READABLE, || drop_bytes(&tcp, want))
            .await;
        match dropped {
            // The end: cut short if a length was promised and not met.
            Ok(0) => {
                break if left.is_some() {
                    Err("body_cut".into())
                } else {
                    Ok(())
                };
            }
            Ok(n) => {
                on_bytes(n as u64);
                left = left.map(|l| l.saturating_sub(n as u64));
            }
            Err(_) => break Err("body_cut".into()),
        }
    }
}

/// A chunked body, read (and so copied) to count its data through the
/// framing; `early` is what came with the head.
async fn read_chunked(
    mut tcp: TcpStream,
    early: &[u8],
    mut on_bytes: impl FnMut(u64),
) -> Result<(), String> {
    let mut body = Body::new(true);
    let mut count = |body: &mut Body, bytes: &[u8]| {
        let data = body.feed(bytes);
        if data > 0 {
            on_bytes(data as u64);
        }
    };
    count(&mut body, early);
    let mut chunk = vec![0u8; 64 * 1024];
    while !body.ended() {
        match tcp.read(&mut chunk).await {
            Ok(0) | Err(_) => return Err("body_cut".into()),
            Ok(n) => count(&mut body, &chunk[..n]),
        }
    }
    Ok(())
}

/// Takes up to `want` bytes off the socket without copying them.
fn drop_bytes(tcp: &TcpStream, want: usize) -> io::Result<usize> {
    // SAFETY: the descriptor belongs to `tcp`, alive for the call. With
    // MSG_TRUNC a TCP socket discards the bytes and never writes to the
    // buffer (tcp(7)), so no memory is given to the kernel to fill; the
    // null pointer only passes its range check.
    let n = unsafe {
        libc::recv(
            tcp.as_raw_fd(),
            std::ptr::null_mut(),
            want,
            libc::MSG_TRUNC | libc::MSG_DONTWAIT,
        )
    };
    // A negative return is the error in errno; WouldBlock sends async_io
    // back to waiting for readiness.
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}
