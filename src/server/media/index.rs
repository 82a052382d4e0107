//! What a scan found: the [`Track`]s of the library, by id, and the
//! `/api/library` answer encoded once per scan.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use serde::Serialize;

use crate::protocol::NextTrack;

/// One playable file.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Track {
    /// Relative path below the library root, `/`-separated.
    pub id: String,
    pub title: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub artist: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// The gain (dB) that brings it to the library's even loudness, once
    /// measured (`loudness`); `None` before, or when it cannot be.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gain_db: Option<f64>,
    pub size: u64,
    pub mime: &'static str,
    #[serde(skip)]
    pub(super) source: Source,
    /// Modification time at scan, to reuse tags on a rescan.
    #[serde(skip)]
    pub(super) modified: SystemTime,
}

/// What an external decoder reads for a track (the stream's, in
/// `server::stream`): the file the scan found, with its (device, inode)
/// then, or the demo's bytes.
#[derive(Debug, Clone)]
pub(crate) enum Decodable {
    File(PathBuf, (u64, u64)),
    Memory(Bytes),
}

impl Track {
    /// What a decoder reads for this track.
    pub(crate) fn decodable(&self) -> Decodable {
        match &self.source {
            Source::File(path, key) => Decodable::File(path.clone(), *key),
            Source::Memory(bytes) => Decodable::Memory(bytes.clone()),
        }
    }
}

#[derive(Debug, Clone)]
pub(super) enum Source {
    /// A file, and its (device, inode) at the scan: what is opened at
    /// request time must still be that file (not a symlink swapped in).
    File(PathBuf, (u64, u64)),
    /// The generated demo library, kept in memory.
    Memory(Bytes),
}

/// A file of a playable type that the scan left out: it does not play.
#[derive(Debug, Clone)]
pub(super) struct Rejected {
    /// What its track id would be.
    pub id: String,
    pub path: PathBuf,
    /// (device, inode), size and mtime at the scan: an unchanged file is
    /// not checked again at the next.
    pub key: (u64, u64),
    pub size: u64,
    pub modified: SystemTime,
    /// Why it does not play.
    pub reason: String,
}

/// One scan's result: every track, by id, and the encoded `/api/library`;
/// and the files left out.
#[derive(Debug, Default)]
pub(crate) struct Index {
    by_id: HashMap<String, Arc<Track>>,
    /// `GET /api/library`'s body, encoded once per scan.
    json: Bytes,
    rejected: Vec<Rejected>,
}

impl Index {
    /// An index of `tracks`, with the files a scan left out.
    pub(super) fn scanned(tracks: Vec<Track>, rejected: Vec<Rejected>) -> Self {
        Self {
            rejected,
            ..Self::new(tracks)
        }
    }

    pub(super) fn new(mut tracks: Vec<Track>) -> Self {
        tracks.sort_by(|a, b| a.id.cmp(&b.id));
        // Two file names that are not UTF-8 can map to one id; keep the first.
        tracks.dedup_by(|later, first| {
            let same = later.id == first.id;
            if same {
                tracing::warn!(id = %later.id, "two files share this id (names that are not UTF-8); serving the first");
            }
            same
        });
        let json = match serde_json::to_vec(&tracks) {
            Ok(v) => Bytes::from(v),
            Err(e) => {
                tracing::error!(error = %e, "cannot encode the library");
                Bytes::from_static(b"[]")
            }
        };
        let by_id = tracks
            .into_iter()
            .map(|t| (t.id.clone(), Arc::new(t)))
            .collect();
        Self {
            by_id,
            json,
            rejected: Vec::new(),
        }
    }

    /// The same index with `tracks` instead (the same ids, new gains).
    pub(super) fn with_tracks(&self, tracks: Vec<Track>) -> Self {
        Self::scanned(tracks, self.rejected.clone())
    }

    pub(crate) fn len(&self) -> usize {
        self.by_id.len()
    }

    pub(crate) fn get(&self, id: &str) -> Option<&Arc<Track>> {
        self.by_id.get(id)
    }

    /// `id` as a `sync`'s `next` announces it, when the library has it
    /// (players fetch it by id, so an id the library lacks is no use).
    pub(crate) fn next_track(&self, id: &str) -> Option<NextTrack> {
        let t = self.get(id)?;
        Some(NextTrack {
            track: t.id.clone(),
            title: Some(t.title.clone()),
            artist: t.artist.clone(),
            duration_ms: t.duration_ms,
            gain_db: t.gain_db,
        })
    }

    /// Every track's id.
    pub(crate) fn ids(&self) -> impl Iterator<Item = &str> {
        self.by_id.keys().map(String::as_str)
    }

    /// Every track.
    pub(crate) fn tracks(&self) -> impl Iterator<Item = &Arc<Track>> {
        self.by_id.values()
    }

    /// The files left out because they do not play.
    pub(super) fn rejected(&self) -> &[Rejected] {
        &self.rejected
    }

    /// How many files were left out because they do not play.
    pub(crate) fn unplayable(&self) -> usize {
        self.rejected.len()
    }

    /// `GET /api/library`'s body.
    pub(crate) fn json(&self) -> Bytes {
        self.json.clone()
    }
}

/// The MIME type browsers expect for a playable extension, `None` for files
/// the library does not serve.
pub(crate) fn mime_for(path: &Path) -> Option<&'static str> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    TYPES.iter().find(|(e, _)| *e == ext).map(|(_, mime)| *mime)
}

/// Every extension the library serves, and its MIME type.
pub(super) const TYPES: [(&str, &str); 13] = [
    ("mp3", "audio/mpeg"),
    ("ogg", "audio/ogg"),
    ("oga", "audio/ogg"),
    ("opus", "audio/ogg"),
    ("m4a", "audio/mp4"),
    ("m4b", "audio/mp4"),
    ("aac", "audio/aac"),
    ("flac", "audio/flac"),
    ("wav", "audio/wav"),
    ("weba", "audio/webm"),
    ("mp4", "video/mp4"),
    ("m4v", "video/mp4"),
    ("webm", "video/webm"),
];
