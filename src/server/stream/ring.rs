//! The encoder's output as listeners take it: MP3 frames cut from the
//! encoder's bytes ([`Framer`]), gathered into [`Chunk`]s of a few frames,
//! and the newest burst's worth of chunks kept in a [`Ring`] that every
//! listener of the station reads (a [`Snapshot`] in a watch cell), so each
//! is written the same shared bytes and a new one starts with the burst.
//! Chunks start and end on frame boundaries, so a listener that skips
//! ahead lands on a frame.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncReadExt as _;
use tokio::process::ChildStdout;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::icy::{Marks, Title};

/// Frames per chunk: about a fifth of a second at 44.1 kHz, so a
/// listener's task wakes about five times a second.
pub(crate) const CHUNK_FRAMES: usize = 8;

/// Samples in one MPEG-1 Layer III frame.
pub(crate) const FRAME_SAMPLES: u64 = 1152;

/// The length of the MPEG-1 Layer III frame whose header starts `b`, or
/// `None` when `b` does not start one.
pub(crate) fn frame_len(b: &[u8]) -> Option<usize> {
    const KBPS: [u32; 15] = [
        0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320,
    ];
    const RATES: [u32; 3] = [44_100, 48_000, 32_000];
    let [0xFF, b1, b2, ..] = *b else {
        return None;
    };
    // Sync, MPEG-1 (0b11), Layer III (0b01); the CRC bit either way.
    if b1 & 0xFE != 0xFA {
        return None;
    }
    let kbps = *KBPS.get(usize::from(b2 >> 4)).filter(|k| **k > 0)?;
    let rate = *RATES.get(usize::from((b2 >> 2) & 0b11))?;
    let padding = u32::from((b2 >> 1) & 1);
    Some((144_000 * kbps / rate + padding) as usize)
}

/// Cuts whole frames out of the encoder's output.
#[derive(Default)]
pub(crate) struct Framer {
    buf: BytesMut,
    /// Bytes skipped to find a frame (none from a sound encoder).
    pub skipped: u64,
}

impl Framer {
    pub(crate) fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole frame, if one has arrived.
    pub(crate) fn next_frame(&mut self) -> Option<Bytes> {
        loop {
            if self.buf.len() < 4 {
                return None;
            }
            match frame_len(&self.buf) {
                Some(len) if self.buf.len() >= len => return Some(self.buf.split_to(len).freeze()),
                Some(_) => return None,
                None => {
                    // Resynchronize at the next 0xFF.
                    let skip = self.buf[1..]
                        .iter()
                        .position(|b| *b == 0xFF)
                        .map_or(self.buf.len(), |i| i + 1);
                    self.skipped += skip as u64;
                    drop(self.buf.split_to(skip));
                }
            }
        }
    }
}

/// A few whole frames, shared by every listener.
#[derive(Clone, Debug)]
pub(crate) struct Chunk {
    /// Counts chunks from the stream's start.
    pub seq: u64,
    /// The stream's bytes before this chunk.
    pub offset: u64,
    pub bytes: Bytes,
    /// What plays in it (the ICY title).
    pub title: Arc<Title>,
}

/// What listeners read: the chunks kept, oldest first, and whether the
/// stream has ended.
#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    pub chunks: Vec<Chunk>,
    pub ended: bool,
}

/// What a listener at `cursor` (the next chunk it wants; `None` before its
/// first) gets next.
#[derive(Debug, PartialEq)]
pub(crate) enum Next<'a> {
    /// This chunk; it skipped `dropped` bytes to reach it (it fell out of
    /// the ring).
    Chunk { chunk: &'a Chunk, dropped: u64 },
    /// Nothing new yet.
    Wait,
    /// The stream has ended and the listener has all of it.
    End,
}

impl PartialEq for Chunk {
    fn eq(&self, other: &Self) -> bool {
        self.seq == other.seq
    }
}

impl Snapshot {
    /// What comes for a listener whose next chunk is `cursor`, whose
    /// stream has reached byte `offset`.
    pub(crate) fn next(&self, cursor: Option<u64>, offset: u64) -> Next<'_> {
        let Some(first) = self.chunks.first() else {
            return if self.ended { Next::End } else { Next::Wait };
        };
        let Some(cursor) = cursor else {
            return Next::Chunk {
                chunk: first,
                dropped: 0,
            };
        };
        if cursor < first.seq {
            return Next::Chunk {
                chunk: first,
                dropped: first.offset.saturating_sub(offset),
            };
        }
        match usize::try_from(cursor - first.seq)
            .ok()
            .and_then(|i| self.chunks.get(i))
        {
            Some(chunk) => Next::Chunk { chunk, dropped: 0 },
            None if self.ended => Next::End,
            None => Next::Wait,
        }
    }
}

/// The writing side: keeps the newest `max_frames` of frames (at least
/// one chunk) and publishes each change to the listeners.
pub(crate) struct Ring {
    tx: watch::Sender<Arc<Snapshot>>,
    chunks: VecDeque<(Chunk, usize)>,
    frames: usize,
    max_frames: usize,
    next_seq: u64,
    offset: u64,
}

impl Ring {
    pub(crate) fn new(max_frames: usize) -> (Ring, watch::Receiver<Arc<Snapshot>>) {
        let (tx, rx) = watch::channel(Arc::new(Snapshot::default()));
        let ring = Ring {
            tx,
            chunks: VecDeque::new(),
            frames: 0,
            max_frames,
            next_seq: 0,
            offset: 0,
        };
        (ring, rx)
    }

    /// Adds a chunk of `frames` frames.
    pub(crate) fn push(&mut self, bytes: Bytes, frames: usize, title: Arc<Title>) {
        let len = bytes.len() as u64;
        let chunk = Chunk {
            seq: self.next_seq,
            offset: self.offset,
            bytes,
            title,
        };
        self.next_seq += 1;
        self.offset += len;
        self.chunks.push_back((chunk, frames));
        self.frames += frames;
        while self.chunks.len() > 1 && self.frames > self.max_frames {
            if let Some((_, n)) = self.chunks.pop_front() {
                self.frames -= n;
            }
        }
        self.publish(false);
    }

    /// Marks the stream ended: listeners finish what they lack, then end.
    pub(crate) fn end(&mut self) {
        self.publish(true);
    }

    fn publish(&self, ended: bool) {
        let chunks = self.chunks.iter().map(|(c, _)| c.clone()).collect();
        self.tx.send_replace(Arc::new(Snapshot { chunks, ended }));
    }
}

/// Reads the encoder's MP3 into `ring` until the encoder ends (its input
/// closed: the station went offline; or it failed) or `stop`: chunks of
/// [`CHUNK_FRAMES`] frames, a new chunk at each title `marks` places.
pub(crate) async fn collect(
    mut mp3: ChildStdout,
    mut ring: Ring,
    marks: std::sync::Arc<Marks>,
    stop: CancellationToken,
) {
    let mut framer = Framer::default();
    let mut buf = vec![0u8; 16 * 1024];
    let mut chunk = BytesMut::new();
    let mut frames = 0;
    let mut samples = 0u64;
    let mut title = Arc::new(Title::none());
    loop {
        let n = tokio::select! {
            _ = stop.cancelled() => return,
            read = mp3.read(&mut buf) => match read {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the stream's encoder");
                    break;
                }
            },
        };
        framer.push(&buf[..n]);
        while let Some(frame) = framer.next_frame() {
            if let Some(due) = marks.due(samples) {
                if frames > 0 {
                    ring.push(chunk.split().freeze(), frames, title.clone());
                    frames = 0;
                }
                title = due;
            }
            chunk.extend_from_slice(&frame);
            frames += 1;
            samples += FRAME_SAMPLES;
            if frames == CHUNK_FRAMES {
                ring.push(chunk.split().freeze(), frames, title.clone());
                frames = 0;
            }
        }
    }
    if frames > 0 {
        ring.push(chunk.split().freeze(), frames, title);
    }
    if framer.skipped > 0 {
        tracing::warn!(
            bytes = framer.skipped,
            "the encoder wrote bytes that are no MP3 frame"
        );
    }
    ring.end();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_lengths_from_headers() {
        // 128 kb/s, 44.1 kHz, without and with padding.
        assert_eq!(frame_len(&[0xFF, 0xFB, 0x90, 0x64]), Some(417));
        assert_eq!(frame_len(&[0xFF, 0xFB, 0x92, 0x64]), Some(418));
        // 320 kb/s at 48 kHz.
        assert_eq!(frame_len(&[0xFF, 0xFB, 0xE4, 0x00]), Some(960));
        // Not Layer III, a free or bad bitrate, a bad rate, no sync.
        assert_eq!(frame_len(&[0xFF, 0xFD, 0x90, 0x64]), None);
        assert_eq!(frame_len(&[0xFF, 0xFB, 0x00, 0x64]), None);
        assert_eq!(frame_len(&[0xFF, 0xFB, 0xF0, 0x64]), None);
        assert_eq!(frame_len(&[0xFF, 0xFB, 0x9C, 0x64]), None);
        assert_eq!(frame_len(&[0x49, 0x44, 0x33, 0x04]), None);
    }

    #[test]
    fn the_framer_cuts_whole_frames_and_resyncs() {
        let mut frame = vec![0u8; 417];
        frame[..4].copy_from_slice(&[0xFF, 0xFB, 0x90, 0x64]);
        let mut f = Framer::default();
        f.push(b"junk");
        f.push(&frame[..100]);
        assert_eq!(f.next_frame(), None);
        f.push(&frame[100..]);
        f.push(&frame[..10]);
        assert_eq!(f.next_frame().map(|b| b.len()), Some(417));
        assert_eq!(f.next_frame(), None);
        assert_eq!(f.skipped, 4);
    }

    fn title() -> Arc<Title> {
        Arc::new(Title::new(Some("A"), Some("T"), "t.ogg"))
    }

    #[test]
    fn listeners_start_at_the_burst_and_skip_when_behind() {
        let (mut ring, rx) = Ring::new(20);
        assert_eq!(rx.borrow().next(None, 0), Next::Wait);
        for _ in 0..4 {
            ring.push(Bytes::from(vec![0u8; 100]), 8, title());
        }
        // 32 frames made, 20 kept at most: chunks 2 and 3 (16 frames).
        let snap = rx.borrow().clone();
        assert_eq!(snap.chunks.len(), 2);
        let Next::Chunk { chunk, dropped } = snap.next(None, 0) else {
            panic!("a new listener gets the burst");
        };
        assert_eq!((chunk.seq, dropped), (2, 0));
        // A listener that wanted chunk 1 skipped its 100 bytes.
        let Next::Chunk { chunk, dropped } = snap.next(Some(1), 100) else {
            panic!("a late listener skips ahead");
        };
        assert_eq!((chunk.seq, dropped), (2, 100));
        assert_eq!(snap.next(Some(4), 400), Next::Wait);
        ring.end();
        assert_eq!(rx.borrow().next(Some(4), 400), Next::End);
        assert!(matches!(rx.borrow().next(Some(3), 300), Next::Chunk { .. }));
    }
}
