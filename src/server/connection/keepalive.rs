//! Keepalive: when a connection pings, and when it need not.
//!
//! Every keepalive interval a connection's task checks its peer. A peer is
//! alive if it sent us a request, or a pong echoing our last ping, within
//! the keepalive timeout, or if it was written a station state since the
//! last check and its TCP has acknowledged every byte written to it: its
//! host is up and taking what we send, which is all a pong would prove,
//! and the kernel has already said so at no cost. Only the others are
//! pinged. At 18,000 listeners of a playing station that skips nearly
//! every ping, which cost about 15% of the server's CPU (bench/RESULTS.md).
//!
//! Our own pings do not count as a state written: their acknowledgement
//! would otherwise keep a peer alive that never answers one. Each ping
//! carries a random payload, and a pong counts only when it echoes the
//! last one: a pong sent unasked (which WebSocket allows), or a ping of
//! the peer's own, shows that the peer writes, not that it reads, and
//! would keep a client that never reads on an idle station for ever. A
//! listener that stops reading is not kept alive this way either: its
//! unacknowledged bytes fail the check, and the write timeout closes it.
//! An acknowledgement proves a TCP peer, which may be a proxy in front of
//! the client, or a client whose application hangs while its kernel still
//! takes bytes; so a peer must also have sent a request or an echoing pong
//! within [`HEARD_WITHIN_TIMEOUTS`] keepalive timeouts, or it is pinged
//! again, and closed if it does not answer: a pong every 3 minutes by
//! default, instead of every 15 s.

use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;

/// A peer that acknowledges its states is still pinged once it has sent no
/// frame for this many keepalive timeouts.
pub(super) const HEARD_WITHIN_TIMEOUTS: u32 = 4;

/// Keepalive pings go out in slots of this width, at most: a slot's pings
/// are handled in one burst of work instead of waking the server for each
/// (which cost about twice as much CPU per ping, measured), while spread
/// over the interval so that connections that joined in the same second do
/// not all ping in the same second.
pub(super) const PING_SLOT: Duration = Duration::from_millis(1000);

/// When a connection that starts `now` pings first: a random point of its
/// interval, moved to the next slot boundary counted from `base`.
pub(super) fn first_ping(base: Instant, now: Instant, period: Duration) -> Instant {
    let slot = PING_SLOT.min(period).max(Duration::from_millis(1));
    let at = now + period.mul_f64(fastrand::f64());
    let since = at.saturating_duration_since(base).as_nanos();
    let slot_ns = slot.as_nanos();
    let slots = since.div_ceil(slot_ns);
    let offset = u64::try_from(slots * slot_ns).unwrap_or(u64::MAX);
    (base + Duration::from_nanos(offset)).max(now + Duration::from_millis(1))
}

/// Whether the peer's TCP has acknowledged every byte written to `stream`
/// (`SIOCOUTQ`: written but not yet acknowledged, is 0). False when it
/// cannot be told, so the caller pings.
#[cfg(target_os = "linux")]
pub(super) fn all_acknowledged(stream: &TcpStream) -> bool {
    use std::os::fd::AsRawFd;
    let mut outstanding: libc::c_int = 0;
    // SAFETY: SIOCOUTQ (TIOCOUTQ on Linux) writes one int to the pointer
    // it is given, which points to a live local; the descriptor is owned by
    // `stream`, open for the duration of the call.
    let rc = unsafe { libc::ioctl(stream.as_raw_fd(), libc::TIOCOUTQ, &mut outstanding) };
    rc == 0 && outstanding == 0
}

#[cfg(not(target_os = "linux"))]
pub fn all_acknowledged(_stream: &TcpStream) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_pings_fall_on_slots_within_the_interval() {
        let base = Instant::now();
        let now = base + Duration::from_millis(1234);
        let period = Duration::from_secs(15);
        for _ in 0..100 {
            let first = first_ping(base, now, period);
            let since = first.duration_since(base);
            assert_eq!(since.as_nanos() % PING_SLOT.as_nanos(), 0, "{since:?}");
            assert!(
                first > now && first <= now + period + PING_SLOT,
                "{since:?}"
            );
        }
    }

    #[tokio::test]
    async fn acknowledged_once_the_peer_has_taken_the_bytes() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let (mut client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let (mut server, _) = accepted.expect("accept");
        let client = client.as_mut().expect("connect");
        assert!(all_acknowledged(&server), "nothing written yet");
        server.write_all(b"hello").await.expect("write");
        let mut buf = [0u8; 5];
        client.read_exact(&mut buf).await.expect("read");
        // The ACK may trail the data by a delayed-ACK timeout.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !all_acknowledged(&server) {
            assert!(std::time::Instant::now() < deadline, "never acknowledged");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}
