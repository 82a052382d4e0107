//! A TCP stream whose writes give up after the write timeout.
//!
//! hyper waits for a socket to become writable for as long as it takes, so a
//! client that starts a media download and stops reading would hold its file,
//! its buffers and its socket until shutdown. Wrapping the stream bounds that
//! wait: a write that makes no progress for `--write-timeout` fails with
//! `TimedOut`, and hyper closes the connection. The timer is armed only while
//! a write is blocked, so the common path costs nothing. After a WebSocket
//! upgrade the wrapper is taken off again (the connection task has its own
//! write timeout).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Sleep;

pub(crate) struct TimedStream<T = TcpStream> {
    inner: T,
    timeout: Duration,
    /// Set while a write is blocked; reset by any progress.
    stalled: Option<Pin<Box<Sleep>>>,
    /// Bytes read from the socket before hyper took it (the plain-TCP media
    /// path read a request it hands over): read again first.
    replay: Bytes,
}

impl<T: AsyncRead + AsyncWrite + Unpin> TimedStream<T> {
    pub(crate) fn new(inner: T, timeout: Duration) -> Self {
        Self {
            inner,
            timeout,
            stalled: None,
            replay: Bytes::new(),
        }
    }

    /// A stream whose reads give `replay` first, then the socket's bytes.
    pub(crate) fn replaying(inner: T, timeout: Duration, replay: Bytes) -> Self {
        Self {
            replay,
            ..Self::new(inner, timeout)
        }
    }

    /// The stream, and what of the replayed bytes was not read yet.
    pub(crate) fn into_parts(self) -> (T, Bytes) {
        (self.inner, self.replay)
    }

    /// Turns a pending write into a timeout error once it has waited too long.
    fn check<R>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        match polled {
            Poll::Ready(r) => {
                self.stalled = None;
                Poll::Ready(r)
            }
            Poll::Pending => {
                let timeout = self.timeout;
                let sleep = self
                    .stalled
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                if sleep.as_mut().poll(cx).is_ready() {
                    self.stalled = None;
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client accepted no bytes for the write timeout",
                    )));
                }
                Poll::Pending
            }
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for TimedStream<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.replay.is_empty() {
            let n = self.replay.len().min(buf.remaining());
            buf.put_slice(&self.replay.split_to(n));
            if self.replay.is_empty() {
                // An empty view would still hold the buffer it was cut from.
                self.replay = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TimedStream<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.check(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.check(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        self.check(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
