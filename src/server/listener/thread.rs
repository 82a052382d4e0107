//! The accept loop's own thread.
//!
//! Accepting on a runtime task, the listen queue is drained only when the
//! task gets its turn, and at a track change it waits behind thousands of
//! downloads for it: the queue (`somaxconn`, 4,096 on many hosts) fills,
//! the kernel drops the handshakes that find it full, and each of those
//! clients tries again a second later, or three. A thread of its own is
//! scheduled by the kernel the moment a connection is queued, whatever the
//! runtime is doing, and hands the connection to the runtime, where it
//! waits for its turn in memory rather than in a queue that drops.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Wakes the accept thread to stop: an eventfd it polls beside the
/// listening socket, and a flag it reads between connections.
pub(super) struct Stop {
    fd: OwnedFd,
    stopped: AtomicBool,
}

impl Stop {
    pub(super) fn new() -> io::Result<Self> {
        // SAFETY: eventfd takes no pointers; a non-negative return is a new
        // descriptor this process owns.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self {
            // SAFETY: `fd` was just returned by eventfd and nothing else owns it.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            stopped: AtomicBool::new(false),
        })
    }

    /// Tells the thread to stop, at once if it is waiting.
    pub(super) fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes 8 bytes from a live buffer to our own eventfd. A
        // full counter (never, at one write) would only mean it is set.
        unsafe { libc::write(self.fd.as_raw_fd(), one.as_ptr().cast(), one.len()) };
    }

    fn stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    /// Waits until `listening` has a connection queued (when given), the
    /// stop is told, or `timeout` passes; whether to stop.
    fn wait(&self, listening: Option<&TcpListener>, timeout: Option<Duration>) -> bool {
        let mut fds = [
            libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: listening.map_or(-1, |l| l.as_raw_fd()),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        let ms = timeout.map_or(-1, |t| {
            libc::c_int::try_from(t.as_millis()).unwrap_or(libc::c_int::MAX)
        });
        // SAFETY: `fds` is a live array of two pollfd, its length passed; a
        // negative fd is ignored by poll(2).
        unsafe { libc::poll(fds.as_mut_ptr(), 2, ms) };
        self.stopped()
    }
}

/// The first wait after an accept fails, and the longest: a herd's
/// downloads free descriptors within milliseconds of each other, so the
/// connections waiting in the listen queue are taken soon after, and a
/// retry costs one system call.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(2), Duration::from_millis(50));

/// Accepts from `listener` (non-blocking) until `stop`, handing each
/// connection to `take` and each failure to `failed` (the listener is
/// fine: the process is out of something, and the connection waits in the
/// queue for a retry after a short, growing wait).
pub(super) fn accept_until_stopped(
    listener: &TcpListener,
    stop: &Stop,
    mut take: impl FnMut(std::net::TcpStream, SocketAddr),
    mut failed: impl FnMut(&io::Error),
) {
    let mut backoff = BACKOFF.0;
    while !stop.stopped() {
        match listener.accept() {
            Ok((stream, peer)) => {
                backoff = BACKOFF.0;
                take(stream, peer);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if stop.wait(Some(listener), None) {
                    return;
                }
            }
            // A connection reset while queued, or a signal: the next.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionAborted | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => {
                failed(&e);
                if stop.wait(None, Some(backoff)) {
                    return;
                }
                backoff = (backoff * 2).min(BACKOFF.1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::mpsc;

    /// Every queued connection is taken, and the thread stops when told
    /// while it waits for more.
    #[test]
    fn takes_the_queue_and_stops_when_told() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(Stop::new().unwrap());
        let (taken, seen) = mpsc::channel();
        let thread = std::thread::spawn({
            let stop = stop.clone();
            move || {
                accept_until_stopped(
                    &listener,
                    &stop,
                    |stream, _| taken.send(stream).unwrap(),
                    |e| panic!("{e}"),
                )
            }
        });
        let clients: Vec<_> = (0..600)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect();
        let accepted: Vec<_> = (0..600).map(|_| seen.recv().unwrap()).collect();
        assert_eq!(accepted.len(), clients.len());
        // Waiting in poll(2) now, with nothing queued.
        stop.stop();
        thread.join().unwrap();
    }
}
