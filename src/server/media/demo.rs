//! The built-in demo library: a few short tones generated in memory at
//! start, so `radio serve` with no `--media` gives a working player. They are
//! encoded as tagged WAV files and read back through the same tag reader as a
//! real library.

use std::io::Cursor;
use std::path::Path;
use std::time::UNIX_EPOCH;

use bytes::Bytes;

use super::index::{Source, Track};
use super::tags::read_tags;

/// Encodes 16-bit mono PCM as a WAV file, with a RIFF `INFO` list carrying
/// `tags` (`INAM` title, `IART` artist, ...) when given.
pub fn encode_wav(sample_rate: u32, samples: &[i16], tags: &[(&[u8; 4], &str)]) -> Vec<u8> {
    let mut info = Vec::new();
    if !tags.is_empty() {
        info.extend_from_slice(b"INFO");
        for (id, value) in tags {
            let mut v = value.as_bytes().to_vec();
            v.push(0);
            info.extend_from_slice(*id);
            info.extend_from_slice(&(v.len() as u32).to_le_bytes());
            info.extend_from_slice(&v);
            if v.len() % 2 == 1 {
                info.push(0);
            }
        }
    }
    let data_len = samples.len() * 2;
    let list_len = if info.is_empty() { 0 } else { 8 + info.len() };
    let mut out = Vec::with_capacity(44 + list_len + data_len);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&((4 + 24 + list_len + 8 + data_len) as u32).to_le_bytes());
    out.extend_from_slice(b"WAVE");
    out.extend_from_slice(b"fmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes()); // PCM
    out.extend_from_slice(&1u16.to_le_bytes()); // mono
    out.extend_from_slice(&sample_rate.to_le_bytes());
    out.extend_from_slice(&(sample_rate * 2).to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    if !info.is_empty() {
        out.extend_from_slice(b"LIST");
        out.extend_from_slice(&(info.len() as u32).to_le_bytes());
        out.extend_from_slice(&info);
    }
    out.extend_from_slice(b"data");
    out.extend_from_slice(&(data_len as u32).to_le_bytes());
    for s in samples {
        out.extend_from_slice(&s.to_le_bytes());
    }
    out
}

/// A gentle arpeggio over `notes` (Hz), one note every `step` seconds, with a
/// soft click on every whole second so two players' sync can be heard.
pub fn arpeggio(sample_rate: u32, seconds: u32, notes: &[f32], step: f32) -> Vec<i16> {
    let n = (sample_rate * seconds) as usize;
    let sr = sample_rate as f32;
    let step_samples = ((step * sr) as usize).max(1);
    (0..n)
        .map(|i| {
            let t = i as f32 / sr;
            let note = notes[(i / step_samples) % notes.len().max(1)];
            let in_note = (i % step_samples) as f32 / step_samples as f32;
            // Fast attack, exponential decay per note.
            let env = (in_note * 50.0).min(1.0) * (-3.0 * in_note).exp();
            let tone = (2.0 * std::f32::consts::PI * note * t).sin() * 0.6
                + (2.0 * std::f32::consts::PI * note * 2.0 * t).sin() * 0.15;
            let since_second = i % sample_rate as usize;
            let click = if since_second < (sample_rate as usize / 200) {
                (2.0 * std::f32::consts::PI * 2000.0 * t).sin() * 0.3
            } else {
                0.0
            };
            ((tone * env + click) * 0.5 * i16::MAX as f32) as i16
        })
        .collect()
}

/// The demo library: three generated tracks, tagged like real files and read
/// back through the same tag reader.
pub(super) fn demo_tracks() -> Vec<Track> {
    const RATE: u32 = 22_050;
    let demos: [(&str, &str, &[f32], f32); 3] = [
        (
            "demo/1-a-minor-arpeggio.wav",
            "A minor arpeggio",
            &[220.0, 261.63, 329.63, 440.0],
            0.25,
        ),
        (
            "demo/2-c-major-steps.wav",
            "C major steps",
            &[261.63, 293.66, 329.63, 349.23, 392.0, 440.0, 493.88, 523.25],
            0.5,
        ),
        ("demo/3-low-pulse.wav", "Low pulse", &[110.0, 146.83], 1.0),
    ];
    demos
        .iter()
        .map(|(id, title, notes, step)| {
            let samples = arpeggio(RATE, 40, notes, *step);
            let bytes = Bytes::from(encode_wav(
                RATE,
                &samples,
                &[(b"INAM", title), (b"IART", "radio demo")],
            ));
            let tags = read_tags(Cursor::new(bytes.clone()), Path::new(id));
            Track {
                id: (*id).to_owned(),
                url: String::new(),
                title: tags.title.unwrap_or_else(|| (*title).to_owned()),
                artist: tags.artist,
                duration_ms: tags.duration_ms,
                gain_db: None,
                size: bytes.len() as u64,
                mime: "audio/wav",
                source: Source::Memory(bytes),
                modified: UNIX_EPOCH,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_tracks_are_tagged() {
        let tracks = demo_tracks();
        assert_eq!(tracks.len(), 3);
        assert_eq!(tracks[0].title, "A minor arpeggio");
        assert_eq!(tracks[0].artist.as_deref(), Some("radio demo"));
        assert_eq!(tracks[0].duration_ms, Some(40_000));
    }
}
