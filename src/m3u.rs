//! Extended M3U playlists: the parser, and the rule that matches an entry's
//! path to one library id. Shared by `radio broadcast --playlist` (which
//! knows the server's library only by its ids) and `radio serve --station`
//! (which also knows its library's folder); a leaf, so both may use it.

use std::path::{Component, Path};

use anyhow::bail;

use crate::fold::fold;

/// One entry of an M3U playlist, as written.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The path (or URL) as written.
    pub track: String,
    /// `#EXTINF`'s title, if any.
    pub title: Option<String>,
    /// `#EXTINF`'s duration when positive (`-1` means unknown).
    pub duration_ms: Option<u64>,
    /// Its line in the file, for messages.
    pub line: usize,
}

/// Parses an (extended) M3U playlist: every line that is not a comment is
/// an entry, its `#EXTINF:SECONDS,TITLE` line (optional) before it.
pub fn parse_m3u(text: &str) -> anyhow::Result<Vec<Entry>> {
    let mut entries = Vec::new();
    let mut info: Option<(Option<u64>, Option<String>)> = None;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim().trim_start_matches('\u{feff}');
        if line.is_empty() {
            continue;
        }
        if let Some(extinf) = line.strip_prefix("#EXTINF:") {
            let (dur, title) = extinf.split_once(',').unwrap_or((extinf, ""));
            // Attributes may follow the duration: `#EXTINF:123 tvg-id="x",Title`.
            let dur = dur.split_whitespace().next().unwrap_or("");
            let secs = dur
                .parse::<f64>()
                .ok()
                .filter(|s| s.is_finite() && *s > 0.0);
            let title = (!title.trim().is_empty()).then(|| title.trim().to_owned());
            // Rounded to whole ms, a tiny duration is none.
            let ms = secs
                .map(|s| (s * 1000.0).round() as u64)
                .filter(|ms| *ms > 0);
            info = Some((ms, title));
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (duration_ms, title) = info.take().unwrap_or((None, None));
        entries.push(Entry {
            track: line.to_owned(),
            title,
            duration_ms,
            line: n + 1,
        });
    }
    if entries.is_empty() {
        bail!(
            "the playlist has no entries (one path a line, each after an optional #EXTINF:SECONDS,TITLE)"
        );
    }
    Ok(entries)
}

/// How an entry matched a library's ids ([`match_entry`]).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Match {
    /// The id at this index.
    One(usize),
    /// No id has this path or file name.
    None,
    /// These ids share the entry's file name and none its longer path.
    Several(Vec<usize>),
    /// The entry has no path at all.
    Empty,
}

/// Matches a playlist entry to one of `ids` (library ids: `/`-separated
/// paths below the library's folder): its path (relative to `base`, the
/// playlist's folder, or absolute; a URL by its path) by its longest suffix
/// that is an id, then by its file name when one id alone has it
/// (case-insensitively).
pub(crate) fn match_entry<'a>(
    ids: impl Iterator<Item = &'a str> + Clone,
    entry: &str,
    base: &Path,
) -> Match {
    let parts = entry_components(entry, base);
    let suffix = ids
        .clone()
        .enumerate()
        .filter(|(_, id)| {
            let id: Vec<&str> = id.split('/').collect();
            id.len() <= parts.len()
                && parts[parts.len() - id.len()..]
                    .iter()
                    .zip(&id)
                    .all(|(p, i)| p == i)
        })
        .max_by_key(|(_, id)| id.split('/').count());
    if let Some((i, _)) = suffix {
        return Match::One(i);
    }
    let Some(name) = parts.last().map(|n| fold(n)) else {
        return Match::Empty;
    };
    let named: Vec<usize> = ids
        .enumerate()
        .filter(|(_, id)| fold(id.rsplit('/').next().unwrap_or(id)) == name)
        .map(|(i, _)| i)
        .collect();
    match named.len() {
        0 => Match::None,
        1 => Match::One(named[0]),
        _ => Match::Several(named),
    }
}

/// An entry's path as components, made absolute against `base` and with
/// `.` and `..` taken out (nothing is read from the disk). A URL keeps the
/// path after its host, decoded; `\` separates like `/`.
pub(crate) fn entry_components(entry: &str, base: &Path) -> Vec<String> {
    if entry.contains("://") {
        return url_components(entry);
    }
    let mut parts: Vec<String> = Vec::new();
    if !is_absolute(entry) {
        for c in base.components() {
            match c {
                Component::Normal(s) => parts.push(s.to_string_lossy().into_owned()),
                Component::ParentDir => {
                    parts.pop();
                }
                _ => {}
            }
        }
    }
    for piece in entry.split(['/', '\\']) {
        step(&mut parts, piece);
    }
    parts
}

/// One piece of a path: `.` stays, `..` goes up, any other goes in.
fn step(parts: &mut Vec<String>, piece: &str) {
    match piece {
        "" | "." => {}
        ".." => {
            parts.pop();
        }
        p => parts.push(p.to_owned()),
    }
}

/// The path of an entry written as a URL, segment by segment, decoded
/// (`file:///music/Side%20A.mp3` is `music`, `Side A.mp3`); no query.
fn url_components(entry: &str) -> Vec<String> {
    let path = match url::Url::parse(entry) {
        Ok(u) => u.path().to_owned(),
        // Not a URL after all: what follows the host, as written.
        Err(_) => entry
            .split_once("://")
            .and_then(|(_, rest)| rest.split_once('/'))
            .map_or(String::new(), |(_, p)| p.to_owned()),
    };
    let mut parts: Vec<String> = Vec::new();
    for piece in path.split('/') {
        step(
            &mut parts,
            &percent_encoding::percent_decode_str(piece).decode_utf8_lossy(),
        );
    }
    parts
}

/// `/x`, `\x` or `C:\x`.
fn is_absolute(path: &str) -> bool {
    let b = path.as_bytes();
    path.starts_with(['/', '\\'])
        || (b.len() > 2
            && b[0].is_ascii_alphabetic()
            && b[1] == b':'
            && matches!(b[2], b'/' | b'\\'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_m3u() {
        let text = "#EXTM3U\n#EXTINF:181,Artist - One\none.mp3\n\n#EXTINF:-1,Stream\nhttp://x/stream\n#EXTINF:2.5 tvg-id=\"a\",Two\nsub/two.ogg\nbare.mp3\n";
        let e = parse_m3u(text).unwrap();
        assert_eq!(e.len(), 4);
        assert_eq!(e[0].track, "one.mp3");
        assert_eq!(e[0].title.as_deref(), Some("Artist - One"));
        assert_eq!(e[0].duration_ms, Some(181_000));
        assert_eq!(e[0].line, 3);
        assert_eq!(e[1].duration_ms, None, "-1 is unknown");
        assert_eq!(e[1].title.as_deref(), Some("Stream"));
        assert_eq!(e[2].track, "sub/two.ogg");
        assert_eq!(e[2].duration_ms, Some(2_500));
        assert_eq!((e[3].duration_ms, e[3].title.as_ref()), (None, None));
        assert!(parse_m3u("#EXTM3U\n# nothing\n").is_err());
    }

    #[test]
    fn entries_match_by_longest_suffix_then_file_name() {
        let ids = [
            "intro.ogg",
            "b/intro.ogg",
            "x/y/song.mp3",
            "z/song.mp3",
            "one.flac",
        ];
        let base = Path::new("/home/me/Music/lists");
        let id = |e: &str| match match_entry(ids.iter().copied(), e, base) {
            Match::One(i) => Ok(ids[i]),
            other => Err(other),
        };
        // Relative to the playlist's folder, the longest suffix wins.
        assert_eq!(id("../b/intro.ogg"), Ok("b/intro.ogg"));
        assert_eq!(id("intro.ogg"), Ok("intro.ogg"));
        // Absolute, and Windows separators.
        assert_eq!(id("/srv/music/x/y/song.mp3"), Ok("x/y/song.mp3"));
        assert_eq!(id("C:\\Music\\z\\song.mp3"), Ok("z/song.mp3"));
        // A URL by its path, decoded, without its query.
        assert_eq!(
            id("http://host:8080/media/x/y/song.mp3"),
            Ok("x/y/song.mp3")
        );
        assert_eq!(
            id("file:///home/me/Music/x/y/song.mp3?t=3"),
            Ok("x/y/song.mp3")
        );
        let spaced = ["a/Side A.mp3"];
        let entry = "file:///srv/music/a/Side%20A.mp3";
        assert_eq!(
            match_entry(spaced.iter().copied(), entry, base),
            Match::One(0)
        );
        // No suffix matches: the file name, when one id has it.
        assert_eq!(id("elsewhere/ONE.FLAC"), Ok("one.flac"));
        assert_eq!(id("q/song.mp3"), Err(Match::Several(vec![2, 3])));
        assert_eq!(id("missing.mp3"), Err(Match::None));
        assert_eq!(id("http://host"), Err(Match::Empty));
    }
}
