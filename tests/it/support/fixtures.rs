//! Temporary directories and the media files tests write into them.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A fresh directory under the system temp dir, removed on drop.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new(tag: &str) -> TempDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("the clock is past 1970")
            .subsec_nanos();
        let dir = std::env::temp_dir().join(format!(
            "radio-test-{tag}-{}-{n}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }

    /// The path as a `&str` for command lines.
    pub(crate) fn arg(&self) -> &str {
        self.0.to_str().expect("utf-8 temp path")
    }

    /// Writes `bytes` to `name` (relative, parent directories created).
    pub(crate) fn write(&self, name: &str, bytes: impl AsRef<[u8]>) {
        let path = self.0.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create a fixture's directory");
        }
        std::fs::write(&path, bytes).expect("write a fixture");
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        // Best effort: a leftover directory under /tmp fails nothing.
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A WAV file of `seconds` of a tone, tagged with a RIFF INFO title and
/// artist when given (read back by the server's tag reader).
pub(crate) fn tone_wav(
    seconds: u32,
    notes: &[f32],
    title: Option<&str>,
    artist: Option<&str>,
) -> Vec<u8> {
    const RATE: u32 = 22_050;
    let samples = radio::arpeggio(RATE, seconds, notes, 0.5);
    let mut tags: Vec<(&[u8; 4], &str)> = Vec::new();
    if let Some(t) = title {
        tags.push((b"INAM", t));
    }
    if let Some(a) = artist {
        tags.push((b"IART", a));
    }
    radio::encode_wav(RATE, &samples, &tags)
}

/// [`tone_wav`] untagged, at `amplitude` (0 to 1) instead of one half: a
/// track louder or quieter than the rest, in the same small format.
pub(crate) fn tone_wav_at(seconds: u32, notes: &[f32], amplitude: f32) -> Vec<u8> {
    const RATE: u32 = 22_050;
    radio::encode_wav(RATE, &radio::arpeggio(RATE, seconds, notes, amplitude), &[])
}

/// Writes `name` in `dir`: `seconds` of a 440 Hz tone encoded by a real
/// ffmpeg, the container from the name's extension, `args` (codec
/// choices) before the output. ffmpeg is installed by scripts/setup.sh
/// (CI runs it); without it this fails and says so.
pub(crate) fn ffmpeg_tone(dir: &TempDir, name: &str, seconds: u32, args: &[&str]) {
    let out = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-nostdin", "-y", "-f", "lavfi", "-i"])
        .arg(format!(
            "sine=frequency=440:sample_rate=44100:duration={seconds}"
        ))
        .args(args)
        .arg(dir.path().join(name))
        .output()
        .unwrap_or_else(|e| panic!("ffmpeg is missing ({e}): run scripts/setup.sh"));
    assert!(
        out.status.success(),
        "ffmpeg could not write {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A WAV file of `seconds` of a 997 Hz sine peaking at `dbfs` (mono,
/// 48 kHz): EBU R128 reads such a tone at about `dbfs` LUFS (mono counted
/// as dual mono), so two of them `x` dB apart differ by `x` LU.
pub(crate) fn sine_wav(seconds: u32, dbfs: f64) -> Vec<u8> {
    const RATE: u32 = 48_000;
    let amplitude = 10f64.powf(dbfs / 20.0) * f64::from(i16::MAX);
    let samples: Vec<i16> = (0..RATE * seconds)
        .map(|i| {
            let t = f64::from(i) / f64::from(RATE);
            ((2.0 * std::f64::consts::PI * 997.0 * t).sin() * amplitude).round() as i16
        })
        .collect();
    radio::encode_wav(RATE, &samples, &[])
}
