//! The exact duration of a raw ADTS AAC stream (`.aac`), by counting its
//! frames: each frame's header says how long the frame is and how many raw
//! data blocks of 1024 samples it carries, at the sample rate its header
//! names. Tag readers (and symphonia's ADTS reader) estimate it from the
//! bitrate instead, which is off by several percent (10.4 s for a 10 s
//! file).

use std::io::{BufReader, Read, Seek};
use std::path::Path;

/// Samples in one AAC raw data block.
const SAMPLES_PER_BLOCK: u64 = 1024;

/// The sample rates an ADTS header's 4-bit index names (ISO/IEC 14496-3).
const RATES: [u32; 13] = [
    96_000, 88_200, 64_000, 48_000, 44_100, 32_000, 24_000, 22_050, 16_000, 12_000, 11_025, 8_000,
    7_350,
];

/// The duration in milliseconds of the ADTS stream in `path`: `None` when
/// it does not start (after an optional ID3v2 tag) with an ADTS frame.
pub(super) fn duration_ms(path: &Path) -> Option<u64> {
    let file = std::fs::File::open(path).ok()?;
    count(BufReader::new(file)).map(|(samples, rate)| samples * 1000 / u64::from(rate))
}

/// Counts the samples of the ADTS frames from the start of `r` (an ID3v2
/// tag skipped) until its end or the first bytes that are not an ADTS
/// frame (a trailing tag); returns them with the first frame's sample rate.
fn count<R: Read + Seek>(mut r: R) -> Option<(u64, u32)> {
    let mut header = [0u8; 10];
    r.read_exact(&mut header[..7]).ok()?;
    if &header[..3] == b"ID3" {
        r.read_exact(&mut header[7..10]).ok()?;
        // A syncsafe size: 7 bits a byte; a footer adds 10 more bytes.
        let size = header[6..10]
            .iter()
            .fold(0i64, |n, b| (n << 7) | i64::from(b & 0x7f));
        let footer = if header[5] & 0x10 != 0 { 10 } else { 0 };
        r.seek_relative(size + footer).ok()?;
        r.read_exact(&mut header[..7]).ok()?;
    }
    let mut rate = None;
    let mut samples = 0u64;
    while let Some(frame) = Frame::parse(&header[..7]) {
        let first_rate = *rate.get_or_insert(frame.rate);
        if frame.rate != first_rate {
            break;
        }
        samples += frame.blocks * SAMPLES_PER_BLOCK;
        if r.seek_relative(frame.len - 7).is_err() || r.read_exact(&mut header[..7]).is_err() {
            break;
        }
    }
    rate.map(|rate| (samples, rate))
}

/// What one ADTS frame header says.
#[derive(Debug, PartialEq)]
struct Frame {
    rate: u32,
    /// The whole frame's length in bytes, its header included.
    len: i64,
    /// Raw data blocks in the frame.
    blocks: u64,
}

impl Frame {
    /// Parses a 7-byte ADTS header; `None` if these bytes are not one.
    fn parse(h: &[u8]) -> Option<Frame> {
        // Syncword 0xFFF, then the MPEG version bit, and layer 00.
        if h.len() < 7 || h[0] != 0xff || h[1] & 0xf6 != 0xf0 {
            return None;
        }
        let rate = *RATES.get(usize::from((h[2] >> 2) & 0x0f))?;
        let len = (i64::from(h[3] & 0x03) << 11) | (i64::from(h[4]) << 3) | i64::from(h[5] >> 5);
        // The header (9 bytes with its CRC) and at least a byte of payload.
        let protection_absent = h[1] & 0x01 != 0;
        let min = if protection_absent { 8 } else { 10 };
        if len < min {
            return None;
        }
        Some(Frame {
            rate,
            len,
            blocks: u64::from(h[6] & 0x03) + 1,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// An ADTS frame of `len` bytes at 44.1 kHz (index 4), one block, no CRC.
    fn frame(len: usize) -> Vec<u8> {
        let mut f = vec![0u8; len];
        f[0] = 0xff;
        f[1] = 0xf1;
        f[2] = (1 << 6) | (4 << 2);
        f[3] = ((len >> 11) & 0x03) as u8;
        f[4] = ((len >> 3) & 0xff) as u8;
        f[5] = (((len & 0x07) << 5) | 0x1f) as u8;
        f[6] = 0xfc;
        f
    }

    #[test]
    fn counts_every_frame_at_its_sample_rate() {
        let mut stream = Vec::new();
        for i in 0..431 {
            stream.extend(frame(200 + i % 50));
        }
        let (samples, rate) = count(Cursor::new(stream.clone())).unwrap();
        assert_eq!((samples, rate), (431 * 1024, 44_100));
        assert_eq!(samples * 1000 / u64::from(rate), 10_007);

        // A trailing ID3v1 tag ends the count; a leading ID3v2 tag is skipped.
        let mut tagged = b"ID3\x04\x00\x00\x00\x00\x00\x05hello".to_vec();
        tagged.extend(&stream);
        tagged.extend(b"TAG and the rest of an ID3v1 tag");
        assert_eq!(count(Cursor::new(tagged)), Some((431 * 1024, 44_100)));
    }

    #[test]
    fn what_is_not_adts_has_no_duration() {
        assert_eq!(count(Cursor::new(b"x\n".to_vec())), None);
        assert_eq!(count(Cursor::new(b"ID3 but nothing more".to_vec())), None);
        assert_eq!(count(Cursor::new(vec![0u8; 4096])), None);
        // A frame claiming to be shorter than its own header.
        assert_eq!(Frame::parse(&frame(7)), None);
        // A cut-off last frame still counts: its header was read.
        let mut cut = frame(300);
        cut.extend(&frame(300)[..100]);
        assert_eq!(count(Cursor::new(cut)), Some((2 * 1024, 44_100)));
    }
}
