//! Title, artist and duration from a file's tags (ID3, Vorbis comments, MP4
//! atoms, RIFF INFO) and stream properties, through lofty.

use std::io::{Read, Seek};
use std::path::Path;

use lofty::prelude::*;

#[derive(Debug, Default)]
pub(super) struct Tags {
    pub title: Option<String>,
    pub artist: Option<String>,
    pub duration_ms: Option<u64>,
}

pub(super) fn read_tags_file(path: &Path) -> Tags {
    match std::fs::File::open(path) {
        Ok(f) => read_tags(std::io::BufReader::new(f), path),
        Err(e) => {
            tracing::debug!(path = %path.display(), error = %e, "cannot open for tags");
            Tags::default()
        }
    }
}

/// Title, artist and duration from the file's tags and stream properties.
/// A file lofty cannot parse (or a parser panic) just has no tags.
pub(super) fn read_tags<R: Read + Seek>(reader: R, what: &Path) -> Tags {
    let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        lofty::probe::Probe::new(reader)
            .guess_file_type()
            .map_err(lofty::error::LoftyError::from)
            .and_then(|p| p.read())
    }));
    let tagged = match read {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => {
            tracing::debug!(path = %what.display(), error = %e, "no tags read");
            return Tags::default();
        }
        Err(_) => {
            tracing::warn!(path = %what.display(), "the tag reader panicked on this file; using its name");
            return Tags::default();
        }
    };
    let tag = tagged.primary_tag().or_else(|| tagged.first_tag());
    let clean = |s: Option<std::borrow::Cow<'_, str>>| {
        s.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty())
    };
    let duration = tagged.properties().duration();
    Tags {
        title: clean(tag.and_then(|t| t.title())),
        artist: clean(tag.and_then(|t| t.artist())),
        duration_ms: (!duration.is_zero()).then_some(duration.as_millis() as u64),
    }
}

/// `01_My_song.mp3` -> `01 My song`.
pub(super) fn title_from_name(name: &str) -> String {
    let stem = Path::new(name)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| name.to_owned());
    stem.replace('_', " ")
}
