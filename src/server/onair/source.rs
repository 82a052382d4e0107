//! A server-run station's SOURCE, resolved against the library: an M3U
//! playlist (read at start and on SIGHUP), a folder of the library, or all
//! of it. [`Source::items`] gives one pass's tracks, in the source's order,
//! from the library's current index, so a rescan shows at the next pass.
//!
//! Only tracks with a known duration play (the station's clock needs each
//! track's end): a playlist's positive `#EXTINF`, as `radio broadcast
//! --playlist` takes it, else the library's. What cannot play is logged
//! once per reading of the source, not at every pass.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::m3u::{self, Entry, Match};
use crate::protocol::StationName;
use crate::server::media::Index;

/// Most problems an error at start lists.
const LISTED: usize = 5;

/// One track of a pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Item {
    /// Its library id.
    pub id: String,
    pub duration_ms: u64,
}

/// Where a station's tracks come from.
#[derive(Debug)]
enum Kind {
    Playlist {
        path: PathBuf,
        entries: Vec<Entry>,
        /// The playlist's folder, which relative entries are relative to.
        folder: PathBuf,
    },
    /// The library's ids that start with this (`""`: the whole library).
    Folder(String),
}

/// A station's source, and what it has logged of it.
#[derive(Debug)]
pub(crate) struct Source {
    station: StationName,
    kind: Kind,
    /// The library's folder, absolute (`None`: the built-in demo).
    root: Option<PathBuf>,
    /// Problems already logged since the source was last read.
    logged: HashSet<String>,
}

impl Source {
    /// Opens `source` as written after `NAME=`: `library`, a playlist
    /// (an existing file, or a name ending in `.m3u`/`.m3u8`), else a folder
    /// of the library. `Err` says why it cannot be (a sentence).
    pub(crate) fn open(
        station: StationName,
        source: &str,
        root: Option<&Path>,
    ) -> Result<Self, String> {
        let path = Path::new(source);
        let is_playlist = path.is_file()
            || path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| e.eq_ignore_ascii_case("m3u") || e.eq_ignore_ascii_case("m3u8"));
        let kind = if source == "library" {
            Kind::Folder(String::new())
        } else if is_playlist {
            let (entries, folder) = read_playlist(path)?;
            Kind::Playlist {
                path: path.to_path_buf(),
                entries,
                folder,
            }
        } else {
            Kind::Folder(folder_prefix(source, root))
        };
        Ok(Self {
            station,
            kind,
            root: root.map(Path::to_path_buf),
            logged: HashSet::new(),
        })
    }

    /// Reads a playlist again (SIGHUP); true when it was. On failure the
    /// old entries stay, and the error is logged. A folder needs no
    /// reading: each pass takes the library as it is.
    pub(crate) fn reread(&mut self) -> bool {
        let Kind::Playlist { path, entries, .. } = &mut self.kind else {
            return false;
        };
        match read_playlist(path) {
            Ok((new, _)) => {
                tracing::info!(station = %self.station, playlist = %path.display(), entries = new.len(), "playlist read again");
                *entries = new;
                self.logged.clear();
                true
            }
            Err(e) => {
                tracing::error!(station = %self.station, "{e}; the station keeps the entries it had");
                false
            }
        }
    }

    /// One pass's tracks, in the source's order, from `index`; what cannot
    /// play is logged (once) and left out.
    pub(crate) fn items(&mut self, index: &Index) -> Vec<Item> {
        let mut problems = Vec::new();
        let items = self.resolve(index, &mut problems);
        for p in problems {
            if self.logged.insert(p.clone()) {
                tracing::warn!(station = %self.station, "{p}; not played");
            }
        }
        items
    }

    /// Like [`Source::items`] at start: the pass, or an error that says why
    /// nothing can play.
    pub(crate) fn first_pass(&mut self, index: &Index) -> Result<Vec<Item>, String> {
        let mut problems = Vec::new();
        let items = self.resolve(index, &mut problems);
        if !items.is_empty() {
            for p in problems {
                if self.logged.insert(p.clone()) {
                    tracing::warn!(station = %self.station, "{p}; not played");
                }
            }
            return Ok(items);
        }
        let mut why = match &self.kind {
            Kind::Playlist { path, .. } => {
                format!("no entry of the playlist {} can be played", path.display())
            }
            Kind::Folder(p) if p.is_empty() => {
                "the library has no track with a known duration".to_owned()
            }
            Kind::Folder(p) => format!(
                "the library has no track with a known duration under {p} (a folder is \
                 relative to --media; a playlist must exist or end in .m3u)"
            ),
        };
        for p in problems.iter().take(LISTED) {
            why.push_str("\n  ");
            why.push_str(p);
        }
        if problems.len() > LISTED {
            why.push_str(&format!("\n  and {} more", problems.len() - LISTED));
        }
        Err(why)
    }

    fn resolve(&self, index: &Index, problems: &mut Vec<String>) -> Vec<Item> {
        match &self.kind {
            Kind::Folder(prefix) => {
                let mut ids: Vec<(&str, Option<u64>)> = index
                    .tracks()
                    .filter(|t| t.id.starts_with(prefix.as_str()))
                    .map(|t| (t.id.as_str(), t.duration_ms))
                    .collect();
                ids.sort_unstable();
                ids.into_iter()
                    .filter_map(|(id, duration)| match duration {
                        Some(ms) if ms > 0 => Some(Item {
                            id: id.to_owned(),
                            duration_ms: ms,
                        }),
                        _ => {
                            problems.push(format!("{id:?} has no known duration"));
                            None
                        }
                    })
                    .collect()
            }
            Kind::Playlist {
                entries, folder, ..
            } => {
                // Sorted once per pass, only if an entry needs matching.
                let mut sorted: Option<Vec<&str>> = None;
                let mut out = Vec::with_capacity(entries.len());
                for e in entries {
                    let found = self.entry_id(index, e, folder, &mut sorted);
                    let id = match found {
                        Ok(id) => id,
                        Err(why) => {
                            problems.push(format!("line {}: {:?}: {why}", e.line, e.track));
                            continue;
                        }
                    };
                    let library = index.get(&id).and_then(|t| t.duration_ms);
                    match e.duration_ms.or(library).filter(|ms| *ms > 0) {
                        Some(duration_ms) => out.push(Item { id, duration_ms }),
                        None => problems.push(format!(
                            "line {}: {:?}: no duration in the playlist (#EXTINF) or the library",
                            e.line, e.track
                        )),
                    }
                }
                out
            }
        }
    }

    /// The library id of a playlist entry: its path below the library's
    /// folder, else the entry as an id, else the match `radio broadcast
    /// --playlist` makes (longest suffix, then file name).
    fn entry_id<'a>(
        &self,
        index: &'a Index,
        e: &Entry,
        folder: &Path,
        sorted: &mut Option<Vec<&'a str>>,
    ) -> Result<String, String> {
        if let Some(root) = &self.root {
            let parts = m3u::entry_components(&e.track, folder);
            let root = m3u::entry_components(&root.to_string_lossy(), Path::new("/"));
            if parts.len() > root.len() && parts[..root.len()] == root[..] {
                let id = parts[root.len()..].join("/");
                if index.get(&id).is_some() {
                    return Ok(id);
                }
            }
        }
        if index.get(&e.track).is_some() {
            return Ok(e.track.clone());
        }
        let ids = sorted.get_or_insert_with(|| {
            let mut ids: Vec<&str> = index.ids().collect();
            ids.sort_unstable();
            ids
        });
        match m3u::match_entry(ids.iter().copied(), &e.track, folder) {
            Match::One(i) => Ok(ids[i].to_owned()),
            Match::None => Err("no library track has this path or file name".to_owned()),
            Match::Empty => Err("an empty path".to_owned()),
            Match::Several(n) => Err(format!(
                "{} library tracks have this file name; write more of the path",
                n.len()
            )),
        }
    }
}

/// Reads and parses a playlist; returns its entries and its folder.
fn read_playlist(path: &Path) -> Result<(Vec<Entry>, PathBuf), String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the playlist {}: {e}", path.display()))?;
    let entries = m3u::parse_m3u(&text).map_err(|e| format!("in {}: {e}", path.display()))?;
    let folder = std::path::absolute(path)
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_default();
    Ok((entries, folder))
}

/// A folder's id prefix (`Rock/Classics/`): relative to the library, or
/// absolute inside it; `.` and `..` taken out.
fn folder_prefix(source: &str, root: Option<&Path>) -> String {
    let mut parts = m3u::entry_components(source, Path::new(""));
    if let Some(root) = root.filter(|_| Path::new(source).is_absolute()) {
        let root = m3u::entry_components(&root.to_string_lossy(), Path::new("/"));
        if parts.len() >= root.len() && parts[..root.len()] == root[..] {
            parts.drain(..root.len());
        }
    }
    let mut prefix = parts.join("/");
    if !prefix.is_empty() {
        prefix.push('/');
    }
    prefix
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_are_id_prefixes() {
        let root = Path::new("/srv/music");
        assert_eq!(
            folder_prefix("Rock/Classics/", Some(root)),
            "Rock/Classics/"
        );
        assert_eq!(folder_prefix("./Rock//x/..", Some(root)), "Rock/");
        assert_eq!(folder_prefix("/srv/music/Jazz", Some(root)), "Jazz/");
        assert_eq!(folder_prefix(".", None), "");
    }
}
