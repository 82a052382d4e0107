//! Writes to a non-blocking socket driven by tokio's readiness: bytes from
//! memory (`send`), and a file's range from the page cache (`sendfile`).
//!
//! A `sendfile` that finds its pages on disk reads them there and then, on
//! the thread that called it; so before each window of [`WINDOW`] bytes the
//! page cache is asked whether the window is resident (`cachestat(2)`, which
//! reads no page). A resident window goes by `sendfile` on the runtime
//! thread, as the socket takes it; a window that is not (or a kernel that
//! cannot tell: before Linux 6.5, or a file the server neither owns nor may
//! write, which `cachestat` refuses to describe) goes by `sendfile` on the
//! blocking pool, one call at a time, after the socket is writable, so the
//! disk read never stalls a runtime thread. The blocking call writes what
//! the socket takes and reads ahead what the kernel reads ahead, so the
//! next window is usually resident again.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd as _, AsRawFd as _, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tokio::io::Interest;
use tokio::net::TcpStream;

use crate::server::media::{HEAD, Heads};

/// Bytes whose residency one `cachestat` checks.
const WINDOW: u64 = 2 << 20;

/// Most bytes one download sends in a turn before it lets the others
/// have theirs: at a track change thousands of downloads start at once,
/// and each should get its first bytes early, rather than the first served
/// filling their socket buffers with whole files while the last wait.
const TURN: u64 = 128 << 10;

/// `cachestat(2)`'s number: 451 on every architecture (syscalls added
/// since Linux 5.1 share one numbering); libc does not name it on every
/// target.
const SYS_CACHESTAT: libc::c_long = 451;

/// `cachestat(2)` answered ENOSYS once: the kernel has none.
static NO_CACHESTAT: AtomicBool = AtomicBool::new(false);

fn timed_out() -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        "the client accepted no bytes for the write timeout",
    )
}

/// Writes all of `buf`, waiting at most `timeout` for each step of
/// progress; `more` says a body follows (MSG_MORE: the head and the first
/// body bytes share a packet).
pub(super) async fn write_all(
    stream: &TcpStream,
    mut buf: &[u8],
    more: bool,
    timeout: Duration,
) -> io::Result<()> {
    let flags = libc::MSG_NOSIGNAL | if more { libc::MSG_MORE } else { 0 };
    let fd = stream.as_raw_fd();
    while !buf.is_empty() {
        let step = stream.async_io(Interest::WRITABLE, || send(fd, buf, flags));
        let n = tokio::time::timeout(timeout, step)
            .await
            .map_err(|_| timed_out())??;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        buf = &buf[n..];
    }
    Ok(())
}

fn send(fd: RawFd, buf: &[u8], flags: libc::c_int) -> io::Result<usize> {
    // SAFETY: `buf` is valid for reads of `buf.len()` bytes for the call,
    // and `fd` is the caller's open socket.
    let n = unsafe { libc::send(fd, buf.as_ptr().cast(), buf.len(), flags) };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// Sends `len` bytes of `file` from `start`, counting them in `sent` as
/// they go; waits at most `timeout` for each step of progress.
pub(super) async fn send_file(
    stream: &TcpStream,
    file: Arc<File>,
    start: u64,
    len: u64,
    timeout: Duration,
    sent: &Counter,
    heads: &Heads,
) -> io::Result<()> {
    let end = start.saturating_add(len);
    // Sending its first bytes, ahead of other downloads' rest.
    let head_end = start.saturating_add(HEAD).min(end);
    let mut head = Some(heads.begin());
    let mut off = start;
    // The page cache holds [off, resident_to), as last asked.
    let mut resident_to = start;
    // When the last bytes went, for the steps that wait without a socket.
    let mut progress = tokio::time::Instant::now();
    while off < end {
        if off >= head_end {
            // Its own head sent: make way for those still sending theirs.
            drop(head.take());
            heads.clear().await;
        }
        // A head's last turn stops where the head ends.
        let limit = if off < head_end { head_end } else { end };
        if off >= resident_to {
            let window = (end - off).min(WINDOW);
            if resident(&file, off, window) {
                resident_to = off + window;
            }
        }
        let n = if off < resident_to {
            let count = (resident_to.min(limit) - off).min(TURN);
            here(stream, &file, off, count, timeout).await?
        } else {
            match from_disk(stream, &file, off, (limit - off).min(TURN), timeout).await? {
                Some(n) => n,
                None if progress.elapsed() > timeout => return Err(timed_out()),
                None => continue,
            }
        };
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file is shorter than when it was opened",
            ));
        }
        off += n;
        sent.inc_by(n);
        progress = tokio::time::Instant::now();
        if off < end {
            // The others' turn: back of the runtime's queue.
            tokio::task::yield_now().await;
        }
    }
    Ok(())
}

/// One `sendfile` on the runtime thread, as the socket takes it: waits at
/// most `timeout` for the socket to take anything.
async fn here(
    stream: &TcpStream,
    file: &File,
    off: u64,
    count: u64,
    timeout: Duration,
) -> io::Result<u64> {
    let sock = stream.as_raw_fd();
    let step = stream.async_io(Interest::WRITABLE, || sendfile(sock, file, off, count));
    tokio::time::timeout(timeout, step)
        .await
        .map_err(|_| timed_out())?
}

/// One `sendfile` on the blocking pool once the socket is writable, for
/// pages that may have to be read from disk (on the runtime thread when no
/// descriptor is free to lend the pool): the bytes sent, or `None` when the
/// socket took nothing after all (its readiness is then cleared).
async fn from_disk(
    stream: &TcpStream,
    file: &Arc<File>,
    off: u64,
    count: u64,
    timeout: Duration,
) -> io::Result<Option<u64>> {
    tokio::time::timeout(timeout, stream.writable())
        .await
        .map_err(|_| timed_out())??;
    // The socket's own descriptor, duplicated: the call may outlive this
    // future (a connection dropped at shutdown), and must never write to a
    // descriptor number reused by then.
    let sock = match stream.as_fd().try_clone_to_owned() {
        Ok(sock) => sock,
        // Out of descriptors (a herd's downloads hold them): the pages are
        // read here, on the runtime thread, a short stall. Waiting for a
        // descriptor instead would wait for downloads that may be waiting
        // for one too, each of them holding its own, until the write
        // timeout cut them all.
        Err(e) if crate::server::media::out_of_descriptors(&e) => {
            return here(stream, file, off, count, timeout).await.map(Some);
        }
        Err(e) => return Err(e),
    };
    let file = file.clone();
    let sent = tokio::task::spawn_blocking(move || sendfile(sock.as_raw_fd(), &file, off, count))
        .await
        .map_err(io::Error::other)?;
    match sent {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            // tokio saw the socket writable; clear that, to wait again.
            let _ = stream.try_io(Interest::WRITABLE, || {
                Err::<(), _>(io::Error::from(io::ErrorKind::WouldBlock))
            });
            Ok(None)
        }
        other => other.map(Some),
    }
}

/// One `sendfile(2)` of at most `count` bytes of `file` from `off` to the
/// socket `sock`.
fn sendfile(sock: RawFd, file: &File, off: u64, count: u64) -> io::Result<u64> {
    // Linux sends at most this much per call.
    const MAX: u64 = 0x7fff_f000;
    let mut offset = libc::off_t::try_from(off).map_err(io::Error::other)?;
    let count = usize::try_from(count.min(MAX)).unwrap_or(usize::MAX);
    // SAFETY: both descriptors are open for the call (`file` is borrowed,
    // `sock` the caller's), and `offset` is a live `off_t` the kernel
    // updates; no memory of ours is read or written besides it.
    let n = unsafe { libc::sendfile(sock, file.as_raw_fd(), &mut offset, count) };
    u64::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// `struct cachestat_range` (include/uapi/linux/mman.h).
#[repr(C)]
struct CachestatRange {
    off: u64,
    len: u64,
}

/// `struct cachestat` (include/uapi/linux/mman.h).
#[repr(C)]
#[derive(Default)]
struct Cachestat {
    nr_cache: u64,
    nr_dirty: u64,
    nr_writeback: u64,
    nr_evicted: u64,
    nr_recently_evicted: u64,
}

/// Whether the page cache holds every page of `len` bytes of `file` from
/// `off`; false when the kernel cannot say.
fn resident(file: &File, off: u64, len: u64) -> bool {
    if len == 0 || NO_CACHESTAT.load(Ordering::Relaxed) {
        return false;
    }
    let range = CachestatRange { off, len };
    let mut stat = Cachestat::default();
    // SAFETY: the kernel reads `range` and writes `stat`, both live and laid
    // out as its uapi header declares; `file` is open for the call.
    let r = unsafe {
        libc::syscall(
            SYS_CACHESTAT,
            file.as_raw_fd(),
            &range as *const CachestatRange,
            &mut stat as *mut Cachestat,
            0u32,
        )
    };
    if r != 0 {
        if io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS) {
            NO_CACHESTAT.store(true, Ordering::Relaxed);
        }
        return false;
    }
    let page = page_size();
    let pages = (off + len - 1) / page - off / page + 1;
    stat.nr_cache >= pages
}

fn page_size() -> u64 {
    // SAFETY: sysconf reads a constant of the system.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(n).ok().filter(|&n| n > 0).unwrap_or(4096)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    /// A file of `len` bytes, unlinked at once: the test holds it open.
    fn scratch(name: &str, len: usize) -> (File, Vec<u8>) {
        let path = std::env::temp_dir().join(format!("radio-{name}-{}", std::process::id()));
        let mut f = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        let bytes: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
        f.write_all(&bytes).unwrap();
        f.sync_all().unwrap();
        (f, bytes)
    }

    /// Drops the file's clean pages from the page cache.
    fn evict(f: &File) {
        // SAFETY: the descriptor is open; the call only advises the kernel.
        let r = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        assert_eq!(r, 0);
    }

    #[test]
    fn a_file_just_written_is_resident() {
        let (f, _) = scratch("resident", 3 << 20);
        // The pages written are in the cache (a kernel without cachestat,
        // or one that will not describe the file, says no: also sound).
        let yes = resident(&f, 0, 3 << 20);
        if !NO_CACHESTAT.load(Ordering::Relaxed) {
            assert!(yes);
            evict(&f);
            assert!(!resident(&f, 0, 3 << 20));
        }
        // Past the end there is nothing to hold.
        assert!(!resident(&f, 3 << 20, 1 << 20));
    }

    /// Downloads take turns: on one thread, two downloads started together
    /// have each sent one turn when a third task first runs, rather than
    /// the first having filled its socket's buffers (megabytes on
    /// loopback) before the second began.
    #[test]
    fn downloads_take_turns() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let len = 4u64 << 20;
            let (f, _) = scratch("turns", len as usize);
            let f = Arc::new(f);
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            // Clients that read nothing yet: what is sent fills buffers.
            let mut clients = Vec::new();
            let mut servers = Vec::new();
            let counters = [Counter::default(), Counter::default()];
            for _ in &counters {
                clients.push(TcpStream::connect(addr).await.unwrap());
                servers.push(listener.accept().await.unwrap().0);
            }
            // Both start together, then the third task.
            let mut downloads = Vec::new();
            for (server, sent) in servers.into_iter().zip(counters.iter().cloned()) {
                let f = f.clone();
                downloads.push(tokio::spawn(async move {
                    let heads = Heads::default();
                    let _ =
                        send_file(&server, f, 0, len, Duration::from_secs(10), &sent, &heads).await;
                }));
            }
            let seen = tokio::spawn({
                let counters = counters.clone();
                async move { (counters[0].get(), counters[1].get()) }
            })
            .await
            .unwrap();
            assert!(
                (1..=TURN).contains(&seen.0) && (1..=TURN).contains(&seen.1),
                "sent {seen:?} when the third task ran; a turn is {TURN}"
            );
            for d in downloads {
                d.abort();
            }
            drop(clients);
        });
    }

    /// A download that has sent its head waits while another sends its
    /// own: the second listener holds its first bytes before the first gets
    /// more of its rest, however slowly the second reads.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn heads_go_before_tails() {
        use tokio::io::AsyncReadExt as _;
        // More than loopback's socket buffers hold: the first download is
        // still sending when the second starts.
        let len = 128 * HEAD;
        let (f, _) = scratch("heads", len as usize);
        let f = Arc::new(f);
        // No wait bound that a slow machine could reach.
        let heads = Arc::new(Heads::new(Duration::from_secs(3600)));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let counters = [Counter::default(), Counter::default()];
        // The first client reads all along; the second only once `go`.
        let (go, gone) = tokio::sync::oneshot::channel::<()>();
        let mut gone = Some(gone);
        let mut readers = Vec::new();
        let mut servers = Vec::new();
        for i in 0..2 {
            let gone = if i == 1 { gone.take() } else { None };
            readers.push(tokio::spawn(async move {
                let socket = tokio::net::TcpSocket::new_v4().unwrap();
                if gone.is_some() {
                    // Small buffers: the head cannot all be in flight.
                    socket.set_recv_buffer_size(16 << 10).unwrap();
                }
                let mut s = socket.connect(addr).await.unwrap();
                if let Some(gone) = gone {
                    gone.await.unwrap();
                }
                let mut sink = vec![0u8; 64 << 10];
                while s.read(&mut sink).await.unwrap() > 0 {}
            }));
            let server = listener.accept().await.unwrap().0;
            if i == 1 {
                socket2::SockRef::from(&server)
                    .set_send_buffer_size(16 << 10)
                    .unwrap();
            }
            servers.push(server);
        }
        let download = |server: TcpStream, sent: Counter| {
            let (f, heads) = (f.clone(), heads.clone());
            tokio::spawn(async move {
                send_file(&server, f, 0, len, Duration::from_secs(60), &sent, &heads)
                    .await
                    .unwrap();
            })
        };
        let mut servers = servers.into_iter();
        let first = download(servers.next().unwrap(), counters[0].clone());
        while counters[0].get() <= HEAD {
            tokio::task::yield_now().await;
        }
        let second = download(servers.next().unwrap(), counters[1].clone());
        while heads.sending() < 1 {
            tokio::task::yield_now().await;
        }
        let before = counters[0].get();
        assert!(
            before < len,
            "the first download ended before the second began"
        );
        // The second's client reads nothing, so its head cannot all be
        // sent (its small buffers take far less); meanwhile the first may end
        // the turn it was in, and no more, though its client reads on.
        for _ in 0..200 {
            tokio::time::sleep(Duration::from_millis(1)).await;
            assert!(counters[1].get() < HEAD);
            assert!(
                counters[0].get() <= before + TURN,
                "the first sent {} bytes of its rest while the second's head waited",
                counters[0].get() - before,
            );
        }
        go.send(()).unwrap();
        first.await.unwrap();
        second.await.unwrap();
        assert_eq!((counters[0].get(), counters[1].get()), (len, len));
        for r in readers {
            r.await.unwrap();
        }
    }

    /// A range of a file, from the page cache and from the disk (the
    /// blocking pool), arrives whole over a real socket.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_range_arrives_whole_from_the_cache_and_from_the_disk() {
        use tokio::io::AsyncReadExt as _;
        let (f, bytes) = scratch("range", 5 << 20);
        let f = Arc::new(f);
        for on_disk in [false, true] {
            if on_disk {
                evict(&f);
            }
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let reader = tokio::spawn(async move {
                let mut s = TcpStream::connect(addr).await.unwrap();
                let mut got = Vec::new();
                s.read_to_end(&mut got).await.unwrap();
                got
            });
            let (server, _) = listener.accept().await.unwrap();
            let sent = Counter::default();
            let (start, len) = (12_345u64, (4 << 20) + 17);
            send_file(
                &server,
                f.clone(),
                start,
                len,
                Duration::from_secs(10),
                &sent,
                &Heads::default(),
            )
            .await
            .unwrap();
            drop(server);
            let got = reader.await.unwrap();
            let want = &bytes[start as usize..(start + len) as usize];
            assert!(got == want, "{} bytes, on disk: {on_disk}", got.len());
            assert_eq!(sent.get(), len);
        }
    }
}
