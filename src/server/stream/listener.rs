//! One stream listener: the response body that writes the station's
//! shared chunks (see `ring.rs`) to its connection, the burst first, with
//! ICY metadata blocks when it asked for them.
//!
//! hyper asks for the next piece only while its queue for the connection
//! has room (`max_buf_size`, of references to the shared chunks on a
//! plain connection), so what one listener holds is its place in the
//! ring, the pieces of one chunk and that queue. A listener that falls out
//! of the ring (it reads slower than real time) skips ahead to the oldest
//! chunk kept, a frame boundary (the bytes it missed are counted); one
//! that is still behind `--write-timeout` after its first skip, never
//! having caught up, is closed. One that reads nothing at all meets the
//! connection's own write timeout.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, StreamBody};
use hyper::body::Frame;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::icy::Inserter;
use super::ring::{Next, Snapshot};
use crate::server::metrics::stream::StreamSeries;
use crate::server::response::Body;

/// What a listener keeps alive while it listens: its place among the
/// station's listeners, and the station's encoding.
pub(crate) type Hold = Box<dyn Send + 'static>;

/// Counts a stream listener in `radio_stream_listeners` while it lives.
struct Counted(Arc<StreamSeries>);

impl Counted {
    fn new(series: Arc<StreamSeries>) -> Self {
        series.listeners.inc();
        Counted(series)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.listeners.dec();
    }
}

struct Listener {
    rx: watch::Receiver<Arc<Snapshot>>,
    /// The next chunk it wants (`None`: the burst's first), and the
    /// stream's bytes it has reached.
    cursor: Option<u64>,
    offset: u64,
    icy: Option<Inserter>,
    /// The pieces of the current chunk still to write.
    pending: VecDeque<Bytes>,
    /// Since when it has been behind: from its first skip until it next
    /// catches up.
    behind_since: Option<Instant>,
    write_timeout: Duration,
    shutdown: CancellationToken,
    counted: Counted,
    done: bool,
    _hold: Hold,
}

/// The settings of one listener's body.
pub(crate) struct Setup {
    pub rx: watch::Receiver<Arc<Snapshot>>,
    pub icy: bool,
    pub write_timeout: Duration,
    pub shutdown: CancellationToken,
    pub series: Arc<StreamSeries>,
    pub hold: Hold,
}

/// The response body of one stream listener.
pub(crate) fn body(setup: Setup) -> Body {
    let listener = Listener {
        rx: setup.rx,
        cursor: None,
        offset: 0,
        icy: setup.icy.then(Inserter::new),
        pending: VecDeque::with_capacity(4),
        behind_since: None,
        write_timeout: setup.write_timeout,
        shutdown: setup.shutdown,
        counted: Counted::new(setup.series),
        done: false,
        _hold: setup.hold,
    };
    let pieces = futures_util::stream::unfold(listener, |mut l| async move {
        let piece = l.next_piece().await?;
        Some((piece, l))
    });
    StreamBody::new(pieces).boxed_unsync()
}

impl Listener {
    /// The next piece to write; `None` when the stream ended (the station
    /// went offline, or the server shuts down).
    async fn next_piece(&mut self) -> Option<std::io::Result<Frame<Bytes>>> {
        if self.done {
            return None;
        }
        loop {
            if let Some(piece) = self.pending.pop_front() {
                self.counted.0.bytes.inc_by(piece.len() as u64);
                return Some(Ok(Frame::data(piece)));
            }
            let snapshot = self.rx.borrow_and_update().clone();
            match snapshot.next(self.cursor, self.offset) {
                Next::Chunk { chunk, dropped } => {
                    if dropped > 0 {
                        self.counted.0.dropped_bytes.inc_by(dropped);
                        let since = *self.behind_since.get_or_insert_with(Instant::now);
                        if since.elapsed() >= self.write_timeout {
                            self.counted.0.slow_closed.inc();
                            self.done = true;
                            return Some(Err(std::io::Error::new(
                                std::io::ErrorKind::TimedOut,
                                "the stream listener stayed behind for the write timeout",
                            )));
                        }
                    }
                    self.cursor = Some(chunk.seq + 1);
                    self.offset = chunk.offset + chunk.bytes.len() as u64;
                    match &mut self.icy {
                        Some(icy) => {
                            icy.split(chunk.bytes.clone(), &chunk.title, &mut self.pending)
                        }
                        None => self.pending.push_back(chunk.bytes.clone()),
                    }
                }
                Next::End => return None,
                Next::Wait => {
                    self.behind_since = None;
                    tokio::select! {
                        _ = self.shutdown.cancelled() => return None,
                        changed = self.rx.changed() => if changed.is_err() {
                            return None;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::stream::icy::Title;
    use crate::server::stream::ring::Ring;

    async fn piece(body: &mut Body) -> Option<std::io::Result<Bytes>> {
        let frame = body.frame().await?;
        Some(frame.map(|f| f.into_data().unwrap_or_default()))
    }

    /// A listener that falls out of the ring skips to its oldest chunk,
    /// counting what it missed; one still behind the write timeout after
    /// its first skip is closed; one that catches up is forgiven.
    #[tokio::test(start_paused = true)]
    async fn a_slow_listener_skips_ahead_then_is_closed() {
        let (mut ring, rx) = Ring::new(16);
        let title = Arc::new(Title::none());
        let series = Arc::new(StreamSeries::default());
        let mut body = body(Setup {
            rx,
            icy: false,
            write_timeout: Duration::from_secs(5),
            shutdown: CancellationToken::new(),
            series: series.clone(),
            hold: Box::new(()),
        });
        let chunk = |n: u8| Bytes::from(vec![n; 100]);
        ring.push(chunk(0), 8, title.clone());
        assert_eq!(series.listeners.get(), 1);
        assert_eq!(piece(&mut body).await.unwrap().unwrap(), chunk(0));
        // Four more chunks while it does not read: two fall out.
        for n in 1..5 {
            ring.push(chunk(n), 8, title.clone());
        }
        assert_eq!(piece(&mut body).await.unwrap().unwrap(), chunk(3));
        assert_eq!(series.dropped_bytes.get(), 200);
        // It catches up: behind no more.
        assert_eq!(piece(&mut body).await.unwrap().unwrap(), chunk(4));
        let next = tokio::spawn(async move {
            let got = piece(&mut body).await;
            (got, body)
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        ring.push(chunk(5), 8, title.clone());
        let (got, mut body) = next.await.unwrap();
        assert_eq!(got.unwrap().unwrap(), chunk(5));
        // Behind again, and still behind past the write timeout: closed.
        for n in 6..10 {
            ring.push(chunk(n), 8, title.clone());
        }
        assert_eq!(piece(&mut body).await.unwrap().unwrap(), chunk(8));
        tokio::time::sleep(Duration::from_secs(6)).await;
        for n in 10..14 {
            ring.push(chunk(n), 8, title.clone());
        }
        let closed = piece(&mut body).await.unwrap();
        assert_eq!(closed.unwrap_err().kind(), std::io::ErrorKind::TimedOut);
        assert_eq!(series.slow_closed.get(), 1);
        assert!(piece(&mut body).await.is_none());
        drop(body);
        assert_eq!(series.listeners.get(), 0);
        assert_eq!(series.bytes.get(), 500);
    }

    #[tokio::test]
    async fn the_stream_ends_when_the_ring_does() {
        let (mut ring, rx) = Ring::new(16);
        let mut body = body(Setup {
            rx,
            icy: true,
            write_timeout: Duration::from_secs(5),
            shutdown: CancellationToken::new(),
            series: Arc::default(),
            hold: Box::new(()),
        });
        ring.push(Bytes::from_static(b"mp3"), 1, Arc::new(Title::none()));
        ring.end();
        assert_eq!(piece(&mut body).await.unwrap().unwrap(), &b"mp3"[..]);
        assert!(piece(&mut body).await.is_none());
    }
}
