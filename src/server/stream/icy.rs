//! ICY metadata, the song title in-band as Icecast and SHOUTcast send it:
//! a client that asks with `Icy-MetaData: 1` is told `icy-metaint: N`,
//! and after every `N` bytes of audio gets one metadata block: a length
//! byte `L`, then `16 * L` bytes, `StreamTitle='Artist - Title';` padded
//! with zeros. A block is sent when the title changed since the client's
//! last one, otherwise the empty block (one zero byte).
//!
//! Each title's block is built once ([`Title`]), where the stream's
//! chunks are made, and shared by every listener; a listener only keeps
//! its count of bytes until the next block ([`Inserter`]).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

/// Audio bytes between two metadata blocks (Icecast's default).
pub(crate) const METAINT: usize = 16_000;

/// The longest block: the length byte counts sixteens up to 255.
const MAX_TEXT: usize = 255 * 16;

/// One title and its metadata block, built once.
#[derive(Debug)]
pub(crate) struct Title {
    pub text: String,
    pub block: Bytes,
}

impl Title {
    /// `Artist - Title`, or the title alone, or the track id's file name.
    pub(crate) fn new(artist: Option<&str>, title: Option<&str>, track: &str) -> Title {
        let name = || track.rsplit('/').next().unwrap_or(track).to_owned();
        let text = match (artist, title) {
            (Some(a), Some(t)) => format!("{a} - {t}"),
            (None, Some(t)) => t.to_owned(),
            (Some(a), None) => format!("{a} - {}", name()),
            (None, None) => name(),
        };
        Title::of_text(text)
    }

    /// The block of no title: silence before any track.
    pub(crate) fn none() -> Title {
        Title::of_text(String::new())
    }

    fn of_text(text: String) -> Title {
        let block = block(&text);
        Title { text, block }
    }
}

/// `text` as a metadata block: `StreamTitle='...';`, the text escaped so
/// it cannot end the field (a `'` becomes `’`; control characters become
/// spaces) and cut on a character boundary to fit.
fn block(text: &str) -> Bytes {
    const HEAD: &str = "StreamTitle='";
    const TAIL: &str = "';";
    let mut body = String::with_capacity(HEAD.len() + text.len() + TAIL.len());
    body.push_str(HEAD);
    for c in text.chars() {
        let c = match c {
            '\'' => '\u{2019}',
            c if c.is_control() => ' ',
            c => c,
        };
        if body.len() + c.len_utf8() + TAIL.len() > MAX_TEXT {
            break;
        }
        body.push(c);
    }
    body.push_str(TAIL);
    let sixteens = body.len().div_ceil(16);
    let mut out = Vec::with_capacity(1 + sixteens * 16);
    out.push(sixteens as u8);
    out.extend_from_slice(body.as_bytes());
    out.resize(1 + sixteens * 16, 0);
    Bytes::from(out)
}

/// Where titles change in the stream: the feed marks the sample at which
/// a new title's audio starts, and the side that cuts the encoder's
/// output into chunks takes each mark when its frames reach that sample.
/// Bounded: a flood of track changes keeps only the newest marks.
#[derive(Debug, Default)]
pub(crate) struct Marks(Mutex<VecDeque<(u64, Arc<Title>)>>);

impl Marks {
    const MAX: usize = 32;

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(u64, Arc<Title>)>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `title` plays from sample `at`.
    pub(crate) fn mark(&self, at: u64, title: Arc<Title>) {
        let mut marks = self.lock();
        if marks.len() == Self::MAX {
            marks.pop_front();
        }
        marks.push_back((at, title));
    }

    /// The newest title whose audio starts by sample `at`, if one came.
    pub(crate) fn due(&self, at: u64) -> Option<Arc<Title>> {
        let mut marks = self.lock();
        let mut due = None;
        while marks.front().is_some_and(|(from, _)| *from <= at) {
            due = marks.pop_front().map(|(_, t)| t);
        }
        due
    }
}

/// One listener's place between metadata blocks.
#[derive(Debug)]
pub(crate) struct Inserter {
    /// Audio bytes until the next block.
    until: usize,
    /// The title of the last block sent.
    sent: Option<Arc<Title>>,
}

impl Inserter {
    pub(crate) fn new() -> Inserter {
        Inserter {
            until: METAINT,
            sent: None,
        }
    }

    /// `audio` (a chunk playing `title`) as the pieces to write, with a
    /// metadata block wherever one falls due.
    pub(crate) fn split(
        &mut self,
        mut audio: Bytes,
        title: &Arc<Title>,
        out: &mut VecDeque<Bytes>,
    ) {
        while !audio.is_empty() {
            if self.until == 0 {
                let same = self.sent.as_ref().is_some_and(|s| Arc::ptr_eq(s, title));
                if same {
                    out.push_back(Bytes::from_static(&[0]));
                } else {
                    out.push_back(title.block.clone());
                    self.sent = Some(title.clone());
                }
                self.until = METAINT;
            }
            let n = self.until.min(audio.len());
            out.push_back(audio.split_to(n));
            self.until -= n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_padded_and_escaped() {
        let t = Title::new(Some("The Band"), Some("It's ';over"), "x.mp3");
        assert_eq!(t.text, "The Band - It's ';over");
        let len = usize::from(t.block[0]) * 16;
        assert_eq!(t.block.len(), 1 + len);
        let body = std::str::from_utf8(&t.block[1..])
            .unwrap()
            .trim_end_matches('\0');
        assert_eq!(body, "StreamTitle='The Band - It\u{2019}s \u{2019};over';");
        // The only `';` is the one that ends the field.
        assert_eq!(body.matches("';").count(), 1);
        assert_eq!(Title::new(None, None, "dir/a b.ogg").text, "a b.ogg");
        let long = "é".repeat(5000);
        let b = Title::new(None, Some(&long), "x").block;
        assert_eq!(b[0], 255);
        assert!(std::str::from_utf8(&b[1..]).is_ok());
    }

    #[test]
    fn a_block_every_metaint_bytes_and_the_title_once() {
        let title = Arc::new(Title::new(None, Some("A"), "a"));
        let mut icy = Inserter::new();
        let mut out = VecDeque::new();
        for _ in 0..5 {
            icy.split(Bytes::from(vec![1u8; 10_000]), &title, &mut out);
        }
        let sizes: Vec<usize> = out.iter().map(Bytes::len).collect();
        let block = title.block.len();
        assert_eq!(
            sizes,
            [
                10_000, 6_000, block, 4_000, 10_000, 2_000, 1, 8_000, 8_000, 1, 2_000
            ]
        );
        assert_eq!(out[2], title.block);
        assert_eq!(&out[6][..], &[0]);
    }
}
