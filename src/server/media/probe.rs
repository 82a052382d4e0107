//! Whether a file of the library plays: its container probes, its first
//! packets decode, and it has a duration. A file that fails is left out of
//! the library (with the reason), so no station and no player ever meets
//! it: a track that never decodes never ends, and a looping station would
//! sit on it for ever.
//!
//! Through symphonia, decoding only the first [`PACKETS`] packets, so a
//! scan reads a little of each new file, not all of it. Opus has no
//! symphonia decoder: an Opus file passes when its Ogg container probes, it
//! holds an Opus stream with a packet, and its tags give a duration.

use std::path::Path;

use symphonia::core::codecs::audio::AudioDecoderOptions;
use symphonia::core::codecs::audio::well_known::CODEC_ID_OPUS;
use symphonia::core::errors::Error;
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, FormatReader, TrackType};
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::MetadataOptions;
use symphonia::core::units::{Duration, TimeBase};

use super::adts;

/// Packets decoded at most: one that decodes to audio is enough.
const PACKETS: usize = 16;

/// Checks that `path` plays; returns its duration in milliseconds:
/// `known_ms` (from its tags) when given, else the one the container
/// states, and for raw ADTS AAC (`mime` `audio/aac`) the frames counted.
/// `Err` says why it does not play.
pub(super) fn check(path: &Path, mime: &str, known_ms: Option<u64>) -> Result<u64, String> {
    let checked = std::panic::catch_unwind(|| decodes(path));
    let stated_ms = match checked {
        Ok(result) => result?,
        Err(_) => return Err("the decoder failed on it".into()),
    };
    let duration = if mime == "audio/aac" {
        adts::duration_ms(path).or(known_ms)
    } else {
        known_ms.or(stated_ms)
    };
    duration
        .filter(|&ms| crate::protocol::schedulable(Some(ms)))
        .ok_or_else(|| "no duration could be read from it".into())
}

/// Probes `path` and decodes its first packets; returns the duration its
/// container states, if any.
/// `file` (at `path`, whose extension hints its format) as a container
/// symphonia reads: the scan's check and the loudness measurement open
/// files alike.
pub(super) fn open_format(
    path: &Path,
    file: std::fs::File,
) -> symphonia::core::errors::Result<Box<dyn FormatReader>> {
    let mss = MediaSourceStream::new(Box::new(file), Default::default());
    let mut hint = Hint::new();
    if let Some(ext) = path.extension().and_then(|e| e.to_str()) {
        hint.with_extension(ext);
    }
    symphonia::default::get_probe().probe(
        &hint,
        mss,
        FormatOptions::default(),
        MetadataOptions::default(),
    )
}

fn decodes(path: &Path) -> Result<Option<u64>, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("cannot open it: {e}"))?;
    if file.metadata().is_ok_and(|m| m.len() == 0) {
        return Err("it is empty".into());
    }
    let mut format = open_format(path, file).map_err(|e| match e {
        Error::Unsupported(_) => "not an audio format the library knows".to_owned(),
        e => format!("cannot read it as audio: {e}"),
    })?;
    let track = format
        .default_track(TrackType::Audio)
        .ok_or("no audio track in it")?;
    let id = track.id;
    // The track's duration, else the whole file's (WebM states only that).
    let media = format.media_info();
    let stated_ms = stated_ms(track.time_base, track.duration)
        .or_else(|| stated_ms(media.time_base, media.duration));
    let params = track
        .codec_params
        .as_ref()
        .and_then(|p| p.audio())
        .ok_or("its audio track names no codec")?
        .clone();
    if params.codec == CODEC_ID_OPUS {
        return match next_packet(format.as_mut(), id)? {
            Some(()) => Ok(stated_ms),
            None => Err("its Opus stream holds no audio".into()),
        };
    }
    let mut decoder = symphonia::default::get_codecs()
        .make_audio_decoder(&params, &AudioDecoderOptions::default())
        .map_err(|e| format!("no decoder for its codec ({e})"))?;
    let mut last_error = None;
    let mut packets = 0;
    while packets < PACKETS {
        let packet = match format.next_packet() {
            Ok(Some(p)) => p,
            Ok(None) => break,
            Err(Error::ResetRequired) => break,
            Err(e) => {
                last_error = Some(e.to_string());
                break;
            }
        };
        if packet.track_id != id {
            continue;
        }
        packets += 1;
        match decoder.decode(&packet) {
            Ok(audio) if audio.frames() > 0 => return Ok(stated_ms),
            Ok(_) => {}
            Err(e) => last_error = Some(e.to_string()),
        }
    }
    Err(match last_error {
        Some(e) => format!("its first packets do not decode ({e})"),
        None => "it holds no audio".to_owned(),
    })
}

/// Reads packets until one of track `id`; `None` at the end of the stream.
fn next_packet(format: &mut dyn FormatReader, id: u32) -> Result<Option<()>, String> {
    for _ in 0..PACKETS {
        match format.next_packet() {
            Ok(Some(p)) if p.track_id == id => return Ok(Some(())),
            Ok(Some(_)) => {}
            Ok(None) | Err(Error::ResetRequired) => return Ok(None),
            Err(e) => return Err(format!("cannot read its packets ({e})")),
        }
    }
    Ok(None)
}

/// A duration the container states, in milliseconds.
fn stated_ms(time_base: Option<TimeBase>, duration: Option<Duration>) -> Option<u64> {
    let time = time_base?.calc_duration(duration?)?;
    u64::try_from(time.as_micros() / 1000).ok()
}
