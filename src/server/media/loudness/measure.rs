//! One track's loudness: the whole file decoded by symphonia and fed to
//! an EBU R128 meter (`ebur128`), which gives its integrated loudness and
//! its sample peak; and the gain that follows from them ([`gain_db`]).
//!
//! A mono file counts as dual mono (as ReplayGain 2.0 scanners count it):
//! played on two speakers it is as loud as the same audio in stereo.

use std::path::Path;

use ebur128::{Channel, EbuR128, Mode};
use serde::{Deserialize, Serialize};
use symphonia::core::codecs::audio::AudioDecoderOptions;
use symphonia::core::codecs::audio::well_known::CODEC_ID_OPUS;
use symphonia::core::errors::Error;
use symphonia::core::formats::TrackType;
use tokio_util::sync::CancellationToken;

/// The loudness every track is brought to, in LUFS: ReplayGain 2.0's
/// reference, which leaves headroom for dynamic music (-14 or -16 would
/// push quiet tracks into their peak limit more often).
pub(crate) const TARGET_LUFS: f64 = -18.0;
/// The gain is kept within these bounds (dB): a near-silent track is not
/// raised by 40 dB, nor a broken loud one cut to nothing.
pub(crate) const MIN_GAIN_DB: f64 = -20.0;
pub(crate) const MAX_GAIN_DB: f64 = 12.0;

/// How often (in packets) a measurement looks at the cancellation.
const CANCEL_EVERY: u32 = 64;

/// What the meter read from one file.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub(crate) struct Measured {
    /// Integrated loudness, LUFS.
    pub lufs: f64,
    /// The largest sample, linear (1.0 is full scale).
    pub peak: f64,
}

/// Why a file has no measurement.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The server is stopping.
    Cancelled,
    /// It cannot be decoded (the reason, for the log).
    Unreadable(String),
}

/// The gain (dB, to 0.01) that brings a track measured `m` to
/// [`TARGET_LUFS`]: `TARGET_LUFS - lufs`, within [`MIN_GAIN_DB`,
/// `MAX_GAIN_DB`], and never so much that its sample peak would pass
/// 0 dBFS. `None` for silence (no integrated loudness).
pub(crate) fn gain_db(m: &Measured) -> Option<f64> {
    if !m.lufs.is_finite() {
        return None;
    }
    let mut gain = (TARGET_LUFS - m.lufs).clamp(MIN_GAIN_DB, MAX_GAIN_DB);
    if m.peak > 0.0 && m.peak.is_finite() {
        gain = gain.min(-20.0 * m.peak.log10());
    }
    Some((gain * 100.0).round() / 100.0)
}

/// Measures `path` (blocking: decodes all of it). A panic in a decoder is
/// a file that cannot be read, like any other.
pub(crate) fn measure(path: &Path, cancel: &CancellationToken) -> Result<Measured, Failure> {
    match std::panic::catch_unwind(|| decode(path, cancel)) {
        Ok(result) => result,
        Err(_) => Err(Failure::Unreadable("the decoder failed on it".into())),
    }
}

fn unreadable(why: impl Into<String>) -> Failure {
    Failure::Unreadable(why.into())
}

fn decode(path: &Path, cancel: &CancellationToken) -> Result<Measured, Failure> {
    let file = std::fs::File::open(path).map_err(|e| unreadable(format!("cannot open it: {e}")))?;
    let mut format = crate::server::media::probe::open_format(path, file)
        .map_err(|e| unreadable(format!("cannot read it as audio: {e}")))?;
    let track = format
        .default_track(TrackType::Audio)
        .ok_or_else(|| unreadable("no audio track in it"))?;
    let id = track.id;
    let params = track
        .codec_params
        .as_ref()
        .and_then(|p| p.audio())
        .ok_or_else(|| unreadable("its audio track names no codec"))?
        .clone();
    if params.codec == CODEC_ID_OPUS {
        return Err(unreadable("no Opus decoder here"));
    }
    let mut decoder = symphonia::default::get_codecs()
        .make_audio_decoder(&params, &AudioDecoderOptions::default())
        .map_err(|e| unreadable(format!("no decoder for its codec ({e})")))?;
    let mut meter: Option<EbuR128> = None;
    let mut samples: Vec<f32> = Vec::new();
    let (mut packets, mut bad) = (0u32, 0u32);
    loop {
        if packets % CANCEL_EVERY == 0 && cancel.is_cancelled() {
            return Err(Failure::Cancelled);
        }
        let packet = match format.next_packet() {
            Ok(Some(p)) => p,
            Ok(None) | Err(Error::ResetRequired) => break,
            // A file cut short ends where it ends, as it does in a player.
            Err(Error::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(unreadable(format!("cannot read its packets ({e})"))),
        };
        if packet.track_id != id {
            continue;
        }
        packets += 1;
        let audio = match decoder.decode(&packet) {
            Ok(audio) => audio,
            // A damaged packet is skipped, as a player skips it.
            Err(Error::DecodeError(_)) => {
                bad += 1;
                continue;
            }
            Err(e) => return Err(unreadable(format!("it does not decode ({e})"))),
        };
        if audio.frames() == 0 {
            continue;
        }
        let spec = audio.spec();
        let (rate, channels) = (spec.rate(), audio.num_planes() as u32);
        let meter = match &mut meter {
            Some(m) if m.rate() == rate && m.channels() == channels => m,
            Some(_) => return Err(unreadable("its sample rate or channels change midway")),
            None => meter.insert(new_meter(channels, rate)?),
        };
        audio.copy_to_vec_interleaved::<f32>(&mut samples);
        meter
            .add_frames_f32(&samples)
            .map_err(|e| unreadable(format!("cannot measure it ({e})")))?;
    }
    // Most of it damaged: whatever was measured does not stand for it.
    if bad > 8 && bad * 10 > packets {
        return Err(unreadable(format!(
            "{bad} of its {packets} packets do not decode"
        )));
    }
    let meter = meter.ok_or_else(|| unreadable("it holds no audio"))?;
    let lufs = meter
        .loudness_global()
        .map_err(|e| unreadable(format!("cannot measure it ({e})")))?;
    let mut peak = 0.0f64;
    for ch in 0..meter.channels() {
        peak = peak.max(meter.sample_peak(ch).unwrap_or(0.0));
    }
    Ok(Measured { lufs, peak })
}

/// A meter for integrated loudness and sample peak, in constant memory
/// (its histogram mode) however long the file.
fn new_meter(channels: u32, rate: u32) -> Result<EbuR128, Failure> {
    let mode = Mode::I | Mode::SAMPLE_PEAK | Mode::HISTOGRAM;
    let mut meter = EbuR128::new(channels, rate, mode)
        .map_err(|e| unreadable(format!("cannot measure its format ({e})")))?;
    if channels == 1 {
        meter
            .set_channel(0, Channel::DualMono)
            .map_err(|e| unreadable(format!("cannot measure its format ({e})")))?;
    }
    Ok(meter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gain_brings_a_track_to_the_target() {
        let g = |lufs, peak| gain_db(&Measured { lufs, peak });
        assert_eq!(g(-6.0, 0.5), Some(-12.0));
        assert_eq!(g(-23.5, 0.1), Some(5.5));
        // Within its bounds.
        assert_eq!(g(5.0, 1.0), Some(MIN_GAIN_DB));
        assert_eq!(g(-50.0, 0.001), Some(MAX_GAIN_DB));
        // Never past full scale: a peak at -3 dBFS allows +3 dB at most.
        let peak = 10f64.powf(-3.0 / 20.0);
        assert_eq!(g(-30.0, peak), Some(3.0));
        // Silence has no loudness, so no gain.
        assert_eq!(g(f64::NEG_INFINITY, 0.0), None);
    }

    #[test]
    fn a_tone_is_measured() {
        let dir = std::env::temp_dir().join(format!("radio-loudness-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temp dir");
        let path = dir.join("tone.wav");
        // A 997 Hz sine at half of full scale, mono: -6.02 LUFS as dual mono.
        let samples: Vec<i16> = (0..48_000 * 3)
            .map(|i| {
                let t = i as f32 / 48_000.0;
                ((2.0 * std::f32::consts::PI * 997.0 * t).sin() * 0.5 * 32767.0) as i16
            })
            .collect();
        std::fs::write(
            &path,
            crate::server::media::encode_wav(48_000, &samples, &[]),
        )
        .expect("write the tone");
        let m = measure(&path, &CancellationToken::new()).expect("a measurement");
        assert!((m.lufs + 6.02).abs() < 0.2, "{m:?}");
        assert!((m.peak - 0.5).abs() < 0.01, "{m:?}");
        std::fs::write(&path, b"RIFF not really").expect("write");
        assert!(matches!(
            measure(&path, &CancellationToken::new()),
            Err(Failure::Unreadable(_))
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
