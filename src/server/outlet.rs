//! An [`Outlet`]: one WebSocket's TCP socket, shared by the two writers that
//! may use it, and the rule that keeps their frames from interleaving.
//!
//! The connection's own task (the *owner*) reads the socket and writes its
//! replies through tungstenite, over [`OutletIo`]. A station's fan-out
//! ([`crate::server::station::fanout`]) writes prebuilt `sync` frames to the same
//! socket directly, with one non-blocking `write` per listener, so that a
//! delivery costs what the kernel costs instead of a task wake-up, a waiter
//! re-registration and a copy per listener.
//!
//! Who may write is one atomic state:
//!
//! | state | meaning | who leaves it |
//! |---|---|---|
//! | `IDLE` | no frame is half-written, tungstenite holds nothing to send | the fan-out (to `FANOUT`) or the owner (to `OWNER`) |
//! | `FANOUT` | a fan-out is in one non-blocking write | that fan-out, at once |
//! | `OWNER` | the owner is writing (it may wait, under the write timeout) | the owner |
//! | `HANDOFF` | a fan-out write was cut short; the rest is in `partial` | the owner, who writes the rest first |
//! | `CLOSED` | the owner said goodbye; nobody writes again | nobody |
//!
//! The fan-out never waits: an outlet it cannot take, or whose socket would
//! block, is skipped, and its owner is woken ([`Outlet::skipped`]) to catch
//! up with the newest state itself, under the write timeout, exactly as a
//! slow listener always was. The owner takes the outlet before it queues a
//! frame and gives it back once tungstenite has written everything, so
//! tungstenite's buffer is empty whenever the fan-out may write. (tungstenite
//! also writes on its read path, but only a reply it queued while reading a
//! ping or a close; the owner flushes those before it reads again.)
//!
//! A TLS socket cannot take prebuilt plain frames: an outlet made with
//! [`Outlet::new_tls`] is never written by the fan-out ([`Outlet::deliver`]
//! always leaves the delivery to the owner, which writes through rustls),
//! so its owner is its only writer. The owner's I/O is a [`ConnIo`]: plain
//! (the socket itself) or TLS (boxed, so the plain connection's task does
//! not grow).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

const IDLE: u8 = 0;
const FANOUT: u8 = 1;
const OWNER: u8 = 2;
const HANDOFF: u8 = 3;
const CLOSED: u8 = 4;

/// One WebSocket's socket, its writer state, and what its listener has been
/// sent (by either writer).
pub(crate) struct Outlet {
    stream: TcpStream,
    /// A TLS socket: only its owner writes to it.
    tls: bool,
    state: AtomicU8,
    /// The highest `seq` written to this socket.
    sent_seq: AtomicU64,
    /// The liveness the listener was last told of: its station view's
    /// [`mark`](crate::server::station::View::mark) (0: offline).
    told: AtomicU64,
    /// The fan-out skipped this outlet (or cut a write short): the owner
    /// must catch up.
    missed: AtomicBool,
    /// The owner's task, woken by [`Outlet::skipped`].
    waker: AtomicWaker,
    /// The rest of a fan-out write cut short, while `HANDOFF`.
    partial: Mutex<Option<Bytes>>,
    /// Where this outlet sits in its fan-out shard's list: a hint, checked
    /// before use (while a listener re-tunes, two shards may write it).
    slot: AtomicUsize,
    /// Bumped on every attach and detach: a shard writes only to an outlet
    /// still attached under the generation it joined with.
    generation: AtomicU64,
}

/// What a listener lacks, as [`Outlet::deliver`] asks of its caller: up to
/// two frames to write in one go, and the `seq` and liveness mark it will
/// then have been sent.
pub(crate) struct Wanted<'a> {
    pub frames: [&'a [u8]; 2],
    pub seq: u64,
    pub told: u64,
}

/// What the fan-out did with one delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Delivery {
    /// Written whole.
    Written,
    /// Nothing was missing.
    Nothing,
    /// Not written now; the owner was woken to catch up.
    Skipped,
}

impl Outlet {
    pub(crate) fn new(stream: TcpStream) -> Arc<Self> {
        Self::with(stream, false)
    }

    /// An outlet for a TLS connection: the fan-out never writes to it.
    pub(crate) fn new_tls(stream: TcpStream) -> Arc<Self> {
        Self::with(stream, true)
    }

    fn with(stream: TcpStream, tls: bool) -> Arc<Self> {
        Arc::new(Self {
            stream,
            tls,
            state: AtomicU8::new(IDLE),
            sent_seq: AtomicU64::new(0),
            told: AtomicU64::new(0),
            missed: AtomicBool::new(false),
            waker: AtomicWaker::new(),
            partial: Mutex::new(None),
            slot: AtomicUsize::new(usize::MAX),
            generation: AtomicU64::new(0),
        })
    }

    pub(crate) fn stream(&self) -> &TcpStream {
        &self.stream
    }

    // --- the owner's side ---

    /// Takes the socket for the owner's writes. Waits out a fan-out write in
    /// progress (one non-blocking system call). `true` when a fan-out frame
    /// was cut short: its rest ([`Outlet::handed_over`]) must be written
    /// before anything else.
    pub(crate) fn take(&self) -> bool {
        let mut spins = 0u32;
        loop {
            match self.state.compare_exchange_weak(
                IDLE,
                OWNER,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return false,
                Err(OWNER | CLOSED) => return false,
                Err(HANDOFF) => {
                    if self
                        .state
                        .compare_exchange(HANDOFF, OWNER, Ordering::Acquire, Ordering::Relaxed)
                        .is_ok()
                    {
                        return true;
                    }
                }
                Err(_) => {
                    // IDLE (a spurious failure) or FANOUT: a write of a few
                    // microseconds is in progress on another thread.
                    spins += 1;
                    if spins % 64 == 0 {
                        std::thread::yield_now();
                    } else {
                        std::hint::spin_loop();
                    }
                }
            }
        }
    }

    /// The rest of a fan-out frame cut short, after [`Outlet::take`] said so.
    pub(crate) fn handed_over(&self) -> Option<Bytes> {
        self.partial
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// Gives the socket back once everything the owner queued is written.
    pub(crate) fn give_back(&self) {
        // Only an outlet the owner holds is given back (never a closed one).
        self.state
            .compare_exchange(OWNER, IDLE, Ordering::Release, Ordering::Relaxed)
            .ok();
    }

    /// The owner's goodbye: nobody writes to this socket again but the
    /// owner. `true` as for [`Outlet::take`].
    pub(crate) fn close(&self) -> bool {
        let handed_off = self.take();
        self.state.store(CLOSED, Ordering::Release);
        handed_off
    }

    /// Waits until the fan-out skipped this outlet since the last call.
    pub(crate) fn missed(&self) -> impl std::future::Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            if self.missed.swap(false, Ordering::Acquire) {
                return Poll::Ready(());
            }
            self.waker.register(cx.waker());
            if self.missed.swap(false, Ordering::Acquire) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
    }

    /// What the listener has been sent: the highest `seq` and the liveness
    /// mark it was last told of. Read and written by whoever holds the
    /// socket.
    pub(crate) fn sent(&self) -> (u64, u64) {
        (
            self.sent_seq.load(Ordering::Relaxed),
            self.told.load(Ordering::Relaxed),
        )
    }

    /// Records what was just queued or written for the listener.
    pub(crate) fn set_sent(&self, seq: u64, told: u64) {
        self.sent_seq.store(seq, Ordering::Relaxed);
        self.told.store(told, Ordering::Relaxed);
    }

    // --- the fan-out's side ---

    /// A new attachment (the owner holds the outlet): returns the
    /// generation a shard must see to write here.
    pub(crate) fn attach(&self) -> u64 {
        self.generation.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Ends the attachment (the owner holds the outlet): no shard writes
    /// here again under the old generation.
    pub(crate) fn detach(&self) {
        self.generation.fetch_add(1, Ordering::Relaxed);
    }

    /// Writes what the listener lacks, in one non-blocking write, if the
    /// socket is free and still attached under `generation`. `lacks` is
    /// asked, with what the listener has been sent, once the socket is held.
    pub(crate) fn deliver<'a>(
        &self,
        generation: u64,
        lacks: impl FnOnce(u64, u64) -> Option<Wanted<'a>>,
    ) -> Delivery {
        // A TLS socket: its owner writes every frame, through rustls.
        if self.tls
            || self
                .state
                .compare_exchange(IDLE, FANOUT, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
        {
            if self.generation.load(Ordering::Relaxed) == generation {
                self.skipped();
            }
            return Delivery::Skipped;
        }
        let (sent, told) = self.sent();
        let wanted = (self.generation.load(Ordering::Relaxed) == generation)
            .then(|| lacks(sent, told))
            .flatten();
        let Some(wanted) = wanted else {
            self.state.store(IDLE, Ordering::Release);
            return Delivery::Nothing;
        };
        let [a, b] = wanted.frames;
        let total = a.len() + b.len();
        // An error (a reset peer) is the owner's to find on its own write.
        let written = match (a.is_empty(), b.is_empty()) {
            (true, _) => self.stream.try_write(b),
            (_, true) => self.stream.try_write(a),
            _ => self
                .stream
                .try_write_vectored(&[io::IoSlice::new(a), io::IoSlice::new(b)]),
        }
        .unwrap_or(0);
        if written == 0 {
            self.state.store(IDLE, Ordering::Release);
            self.skipped();
            return Delivery::Skipped;
        }
        self.set_sent(wanted.seq, wanted.told);
        if written < total {
            // A frame is half on the wire: nothing else may be written before
            // its rest, which the owner writes (it may wait; we may not).
            let mut rest = Vec::with_capacity(total - written);
            let mut skip = written;
            for f in wanted.frames {
                let s = skip.min(f.len());
                rest.extend_from_slice(&f[s..]);
                skip -= s;
            }
            *self.partial.lock().unwrap_or_else(|p| p.into_inner()) = Some(Bytes::from(rest));
            self.state.store(HANDOFF, Ordering::Release);
            self.skipped();
            return Delivery::Skipped;
        }
        self.state.store(IDLE, Ordering::Release);
        Delivery::Written
    }

    /// Tells the owner the fan-out could not deliver here.
    fn skipped(&self) {
        self.missed.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// This outlet's index in its shard's list, as last set (a hint).
    pub(crate) fn slot(&self) -> usize {
        self.slot.load(Ordering::Relaxed)
    }

    pub(crate) fn set_slot(&self, slot: usize) {
        self.slot.store(slot, Ordering::Relaxed);
    }
}

/// The owner's I/O over an [`Outlet`]: what its `WebSocketStream` reads and
/// writes through.
pub(crate) struct OutletIo(Arc<Outlet>);

impl OutletIo {
    pub(crate) fn new(outlet: Arc<Outlet>) -> Self {
        Self(outlet)
    }

    pub(crate) fn outlet(&self) -> &Arc<Outlet> {
        &self.0
    }
}

impl AsyncRead for OutletIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let stream = &self.0.stream;
        loop {
            ready!(stream.poll_read_ready(cx))?;
            match stream.try_read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for OutletIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        debug_assert!(
            self.0.tls || matches!(self.0.state.load(Ordering::Relaxed), OWNER | CLOSED),
            "the owner wrote without holding its outlet"
        );
        let stream = &self.0.stream;
        loop {
            ready!(stream.poll_write_ready(cx))?;
            match stream.try_write(buf) {
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = socket2::SockRef::from(&self.0.stream).shutdown(std::net::Shutdown::Write);
        Poll::Ready(match r {
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
            r => r,
        })
    }
}

/// The connection task's I/O: the plain socket, or TLS over it.
pub(crate) enum ConnIo {
    Plain(OutletIo),
    /// Boxed: rare, and large beside the plain arm.
    Tls(Box<tokio_rustls::server::TlsStream<OutletIo>>),
}

impl ConnIo {
    pub(crate) fn outlet(&self) -> &Arc<Outlet> {
        match self {
            ConnIo::Plain(io) => io.outlet(),
            ConnIo::Tls(tls) => tls.get_ref().0.outlet(),
        }
    }
}

impl AsyncRead for ConnIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ConnIo::Plain(io) => Pin::new(io).poll_read(cx, buf),
            ConnIo::Tls(tls) => Pin::new(tls.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ConnIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ConnIo::Plain(io) => Pin::new(io).poll_write(cx, buf),
            ConnIo::Tls(tls) => Pin::new(tls.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ConnIo::Plain(io) => Pin::new(io).poll_flush(cx),
            ConnIo::Tls(tls) => Pin::new(tls.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ConnIo::Plain(io) => Pin::new(io).poll_shutdown(cx),
            ConnIo::Tls(tls) => Pin::new(tls.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Writes `bytes` whole to the owner's socket (the rest of a fan-out frame
/// cut short), waiting for room as needed.
pub(crate) async fn write_all(outlet: &Outlet, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        outlet.stream.writable().await?;
        match outlet.stream.try_write(bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn pair() -> (Arc<Outlet>, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let client = TcpStream::connect(addr).await.expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        (Outlet::new(server), client)
    }

    fn wanted<'a>(a: &'a [u8], b: &'a [u8], seq: u64) -> Option<Wanted<'a>> {
        Some(Wanted {
            frames: [a, b],
            seq,
            told: 1,
        })
    }

    #[tokio::test]
    async fn the_fan_out_skips_an_outlet_its_owner_holds() {
        let (outlet, _client) = pair().await;
        assert!(!outlet.take());
        let g = outlet.attach();
        assert_eq!(
            outlet.deliver(g, |_, _| wanted(b"x", b"", 1)),
            Delivery::Skipped
        );
        // The owner is told, and catches up itself.
        outlet.missed().await;
        assert_eq!(outlet.sent(), (0, 0));
        outlet.give_back();
        let written = outlet.deliver(g, |_, _| wanted(b"ab", b"cd", 2));
        assert_eq!(written, Delivery::Written);
        assert_eq!(outlet.sent(), (2, 1));
        // Detached: the shard's generation is stale, nothing is written.
        outlet.take();
        outlet.detach();
        outlet.give_back();
        let stale = outlet.deliver(g, |_, _| wanted(b"ef", b"", 3));
        assert_eq!(stale, Delivery::Nothing);
    }

    #[tokio::test]
    async fn a_write_cut_short_is_handed_to_the_owner() {
        let (outlet, mut client) = pair().await;
        socket2::SockRef::from(outlet.stream())
            .set_send_buffer_size(4096)
            .expect("SO_SNDBUF");
        // Fill the socket until a write is cut short or refused.
        let frame = vec![7u8; 1000];
        let g = outlet.attach();
        let mut sent = 0usize;
        while outlet.deliver(g, |_, _| wanted(&frame, b"", 1)) == Delivery::Written {
            sent += frame.len();
        }
        outlet.missed().await;
        let rest = outlet.take().then(|| outlet.handed_over()).flatten();
        if let Some(rest) = &rest {
            sent += frame.len();
            let reader = tokio::spawn(async move {
                use tokio::io::AsyncReadExt;
                let mut got = vec![0u8; sent];
                client.read_exact(&mut got).await.expect("read");
                got
            });
            write_all(&outlet, rest).await.expect("rest written");
            let got = reader.await.expect("reader");
            assert!(got.iter().all(|b| *b == 7), "no frame interleaved");
        }
        outlet.give_back();
    }
}
