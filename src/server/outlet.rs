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
//! What a listener lacks is one answer for both writers, [`Sent::lacks`]:
//! from what the outlet records it was sent (by either writer) and the
//! station's newest view, a notice if the station went live or offline
//! since, and the newest state if it is newer. The fan-out writes that as
//! prebuilt frames; the owner, woken because the fan-out could not write,
//! queues the same through tungstenite (`Conn::catch_up`).
//!
//! A TLS socket cannot take prebuilt plain frames: an outlet made with
//! [`Outlet::new_tls`] is never written by the fan-out ([`Outlet::deliver`]
//! always leaves the delivery to the owner, which writes through rustls),
//! so its owner is its only writer. The owner's I/O is a [`ConnIo`]: plain
//! (the socket itself) or TLS (boxed, so the plain connection's task does
//! not grow).
//!
//! The state machine is checked in every interleaving of the two writers
//! (`outlet/model.rs`, driven by the scheduler in `outlet/schedule.rs`): a
//! test build marks each access to what they share (`interleave!`), and
//! the fan-out writes through [`Socket`], which the model replaces with a
//! recorded stream. Outside tests the marks are nothing and [`Socket`] is
//! the `TcpStream`, so the delivery path is the code it was.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A point where the model test (`outlet/model.rs`) may let the other
/// writer run, before code that touches what both writers share (the
/// `schedule::touch` bits named, up to the next point). Nothing outside
/// tests.
macro_rules! interleave {
    ($($touch:ident)|+) => {
        #[cfg(test)]
        schedule::point(0 $(| schedule::touch::$touch)+);
    };
}

const IDLE: u8 = 0;
const FANOUT: u8 = 1;
const OWNER: u8 = 2;
const HANDOFF: u8 = 3;
const CLOSED: u8 = 4;

/// What the fan-out writes to: a WebSocket's TCP socket; in the model test
/// (`outlet/model.rs`), a recorded stream that chooses how much of each
/// write it takes.
pub(crate) trait Socket {
    /// One non-blocking write: how much of `buf` was taken.
    fn try_write(&self, buf: &[u8]) -> io::Result<usize>;
    /// One non-blocking write of `bufs`, in order.
    fn try_write_vectored(&self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize>;
}

impl Socket for TcpStream {
    #[inline]
    fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        TcpStream::try_write(self, buf)
    }

    #[inline]
    fn try_write_vectored(&self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        TcpStream::try_write_vectored(self, bufs)
    }
}

/// One WebSocket's socket, its writer state, and what its listener has been
/// sent (by either writer).
pub(crate) struct Outlet<S = TcpStream> {
    stream: S,
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

/// What a listener has been sent, by either writer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Sent {
    /// The highest `seq` of its station's states written to it.
    pub seq: u64,
    /// The liveness it was last told of: its station view's
    /// [`mark`](crate::server::station::View::mark) (0: offline, else who
    /// plays, so a hand-over between the server and a broadcaster is told
    /// too).
    pub told: u64,
}

/// What a listener lacks of its station's newest view, as [`Sent::lacks`]
/// tells it. `T` is the newest state as its writer writes it: the
/// fan-out's whole frame, or the `State` the connection's task queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Lack<T> {
    /// The station's notice, `broadcaster_online` or `broadcaster_offline`:
    /// the listener was last told otherwise. It goes first.
    pub notice: bool,
    /// The newest state: newer than any the listener was sent.
    pub sync: Option<T>,
    /// What the listener will have been sent once it has these.
    pub then: Sent,
}

impl Sent {
    /// What a listener that was sent `self` lacks of a view whose liveness
    /// mark is `mark` and whose newest state is `newest` (its `seq`, and the state as the
    /// caller writes it); `None` when it lacks nothing.
    ///
    /// The one answer for both writers: the fan-out writes it as prebuilt
    /// frames ([`Outlet::deliver`]), the connection's task queues it when
    /// the fan-out could not write.
    #[inline]
    pub(crate) fn lacks<T>(self, mark: u64, newest: Option<(u64, T)>) -> Option<Lack<T>> {
        let notice = mark != self.told;
        let sync = newest.filter(|(seq, _)| *seq > self.seq);
        if !notice && sync.is_none() {
            return None;
        }
        Some(Lack {
            notice,
            then: Sent {
                seq: sync.as_ref().map_or(self.seq, |(seq, _)| *seq),
                told: mark,
            },
            sync: sync.map(|(_, state)| state),
        })
    }
}

/// A station's newest view as the fan-out writes it, built once per pass
/// for every listener of a shard: whole WebSocket frames.
pub(crate) struct Frames<'a> {
    /// The view's liveness mark.
    pub mark: u64,
    /// `broadcaster_online` or `broadcaster_offline`, as `mark` says.
    pub notice: &'a [u8],
    /// The newest state's `seq` and `sync` frame, if there is one.
    pub newest: Option<(u64, &'a [u8])>,
}

/// What the fan-out did with one delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Delivery {
    /// Written whole; `sync` when a state was among it.
    Written { sync: bool },
    /// Nothing was missing.
    Nothing,
    /// Not written now (or cut short); the owner was woken to catch up.
    Skipped,
}

/// Waits a moment for a fan-out write in progress on another thread (one
/// non-blocking system call).
#[inline]
fn wait_out(spins: u32) {
    #[cfg(test)]
    schedule::spin();
    if spins % 64 == 0 {
        std::thread::yield_now();
    } else {
        std::hint::spin_loop();
    }
}

impl Outlet {
    pub(crate) fn new(stream: TcpStream) -> Arc<Self> {
        Self::with(stream, false)
    }

    /// An outlet for a TLS connection: the fan-out never writes to it.
    pub(crate) fn new_tls(stream: TcpStream) -> Arc<Self> {
        Self::with(stream, true)
    }
}

impl<S: Socket> Outlet<S> {
    fn with(stream: S, tls: bool) -> Arc<Self> {
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

    pub(crate) fn stream(&self) -> &S {
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
            interleave!(STATE);
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
                    wait_out(spins);
                }
            }
        }
    }

    /// The rest of a fan-out frame cut short, after [`Outlet::take`] said so.
    pub(crate) fn handed_over(&self) -> Option<Bytes> {
        interleave!(PARTIAL);
        self.partial
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// Gives the socket back once everything the owner queued is written.
    pub(crate) fn give_back(&self) {
        interleave!(STATE);
        // Only an outlet the owner holds is given back (never a closed one).
        self.state
            .compare_exchange(OWNER, IDLE, Ordering::Release, Ordering::Relaxed)
            .ok();
    }

    /// The owner's goodbye: nobody writes to this socket again but the
    /// owner. `true` as for [`Outlet::take`].
    pub(crate) fn close(&self) -> bool {
        let handed_off = self.take();
        interleave!(STATE);
        self.state.store(CLOSED, Ordering::Release);
        handed_off
    }

    /// Whether the owner may write: it holds the socket, or it is the only
    /// writer (closed, or TLS).
    pub(crate) fn owner_holds(&self) -> bool {
        self.tls || matches!(self.state.load(Ordering::Relaxed), OWNER | CLOSED)
    }

    /// Whether the fan-out skipped this outlet since the last call (and
    /// forgets it).
    pub(crate) fn was_skipped(&self) -> bool {
        interleave!(MISSED);
        self.missed.swap(false, Ordering::Acquire)
    }

    /// Waits until the fan-out skipped this outlet since the last call.
    pub(crate) fn missed(&self) -> impl std::future::Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            if self.was_skipped() {
                return Poll::Ready(());
            }
            self.waker.register(cx.waker());
            if self.was_skipped() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
    }

    /// What the listener has been sent. Read and written by whoever holds
    /// the socket.
    pub(crate) fn sent(&self) -> Sent {
        interleave!(SENT);
        Sent {
            seq: self.sent_seq.load(Ordering::Relaxed),
            told: self.told.load(Ordering::Relaxed),
        }
    }

    /// Records what was just queued or written for the listener.
    pub(crate) fn set_sent(&self, sent: Sent) {
        interleave!(SENT);
        self.sent_seq.store(sent.seq, Ordering::Relaxed);
        self.told.store(sent.told, Ordering::Relaxed);
    }

    // --- the fan-out's side ---

    /// A new attachment (the owner holds the outlet): returns the
    /// generation a shard must see to write here.
    pub(crate) fn attach(&self) -> u64 {
        interleave!(GENERATION);
        self.generation.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Ends the attachment (the owner holds the outlet): no shard writes
    /// here again under the old generation.
    pub(crate) fn detach(&self) {
        interleave!(GENERATION);
        self.generation.fetch_add(1, Ordering::Relaxed);
    }

    /// Writes what the listener lacks of `frames` ([`Sent::lacks`]), in one
    /// non-blocking write, if the socket is free and still attached under
    /// `generation`.
    pub(crate) fn deliver(&self, generation: u64, frames: &Frames<'_>) -> Delivery {
        interleave!(STATE | GENERATION);
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
        let lack = (self.generation.load(Ordering::Relaxed) == generation)
            .then(|| self.sent().lacks(frames.mark, frames.newest))
            .flatten();
        let Some(lack) = lack else {
            interleave!(STATE);
            self.state.store(IDLE, Ordering::Release);
            return Delivery::Nothing;
        };
        let notice: &[u8] = if lack.notice { frames.notice } else { &[] };
        let sync: &[u8] = lack.sync.unwrap_or_default();
        let total = notice.len() + sync.len();
        interleave!(SOCKET);
        // An error (a reset peer) is the owner's to find on its own write.
        let written = match (notice.is_empty(), sync.is_empty()) {
            (true, _) => self.stream.try_write(sync),
            (_, true) => self.stream.try_write(notice),
            _ => self
                .stream
                .try_write_vectored(&[io::IoSlice::new(notice), io::IoSlice::new(sync)]),
        }
        .unwrap_or(0);
        if written == 0 {
            interleave!(STATE);
            self.state.store(IDLE, Ordering::Release);
            self.skipped();
            return Delivery::Skipped;
        }
        self.set_sent(lack.then);
        if written < total {
            // A frame is half on the wire: nothing else may be written before
            // its rest, which the owner writes (it may wait; we may not).
            let mut rest = Vec::with_capacity(total - written);
            let mut skip = written;
            for f in [notice, sync] {
                let s = skip.min(f.len());
                rest.extend_from_slice(&f[s..]);
                skip -= s;
            }
            tracing::debug!(
                written,
                total,
                "fan-out write cut short; the listener's task writes the rest"
            );
            interleave!(PARTIAL);
            *self.partial.lock().unwrap_or_else(|p| p.into_inner()) = Some(Bytes::from(rest));
            interleave!(STATE);
            self.state.store(HANDOFF, Ordering::Release);
            self.skipped();
            return Delivery::Skipped;
        }
        interleave!(STATE);
        self.state.store(IDLE, Ordering::Release);
        Delivery::Written {
            sync: !sync.is_empty(),
        }
    }

    /// Tells the owner the fan-out could not deliver here.
    fn skipped(&self) {
        interleave!(MISSED);
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
            self.0.owner_holds(),
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
mod schedule;

#[cfg(test)]
mod model;

#[cfg(test)]
mod tests;
