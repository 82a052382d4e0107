//! `radio broadcast --playlist`: extended M3U, each entry resolved to a
//! track of the server's library. Apart from the session because it is a
//! file format, read once at start.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

use super::library::Library;
use super::player::Choice;

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

/// Reads and parses the playlist file at `path`; returns its entries and
/// its folder (absolute), which relative entries are relative to.
pub(super) fn load_playlist(path: &Path) -> anyhow::Result<(Vec<Entry>, PathBuf)> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the playlist {}", path.display()))?;
    let entries = parse_m3u(&text).with_context(|| format!("in {}", path.display()))?;
    let folder = std::path::absolute(path)
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_default();
    Ok((entries, folder))
}

/// Reads and resolves `--playlist`, saying how many entries resolved and
/// which did not; with none to play, the error lists them.
pub(super) fn order(
    path: &std::path::Path,
    library: Option<&Library>,
    free: bool,
) -> anyhow::Result<Vec<Choice>> {
    let (entries, folder) = load_playlist(path)?;
    let r = resolve(&entries, library, &folder, free);
    let problems: String = r.problems.iter().map(|p| format!("\n  {p}")).collect();
    if r.choices.is_empty() {
        bail!(
            "no entry of the playlist {} can be played:{problems}",
            path.display()
        );
    }
    let kept = r.choices.len() - r.in_library;
    let kept = if kept > 0 {
        format!(", {kept} kept as written (--free-tracks)")
    } else {
        String::new()
    };
    eprintln!(
        "radio: playlist {}: {} of {} entries resolved to library tracks{kept}{}",
        path.display(),
        r.in_library,
        entries.len(),
        if problems.is_empty() {
            ""
        } else {
            "; not played:"
        },
    );
    for p in &r.problems {
        eprintln!("radio:   {p}");
    }
    Ok(r.choices)
}

/// A playlist's entries made playable.
#[derive(Debug, Default)]
pub(super) struct Resolved {
    /// What plays, in order.
    pub choices: Vec<Choice>,
    /// Entries that resolved to a library track.
    pub in_library: usize,
    /// One line for each entry that did not, saying why.
    pub problems: Vec<String>,
}

/// Resolves every entry against `library` (see
/// [`Library::resolve_entry`]). A duration comes from `#EXTINF` when it is
/// positive, else from the library. With `free` (`--free-tracks`) an entry
/// the library lacks is kept as written, with its `#EXTINF` title.
pub(super) fn resolve(
    entries: &[Entry],
    library: Option<&Library>,
    folder: &Path,
    free: bool,
) -> Resolved {
    let mut out = Resolved::default();
    for e in entries {
        let found = match library {
            Some(lib) => lib
                .resolve_entry(&e.track, folder)
                .map(|i| lib.get(i).cloned()),
            None => Err("the server's library is not available".to_owned()),
        };
        let choice = match found {
            Ok(Some(t)) => Choice {
                duration_ms: e.duration_ms.or(t.duration_ms),
                track: t.id,
                title: None,
            },
            Ok(None) => continue,
            Err(why) if !free => {
                out.problems
                    .push(format!("line {}: {:?}: {why}", e.line, e.track));
                continue;
            }
            Err(_) => Choice {
                track: e.track.clone(),
                duration_ms: e.duration_ms,
                title: e.title.clone(),
            },
        };
        if choice.duration_ms.is_none() {
            out.problems.push(format!(
                "line {}: {:?}: no duration in the playlist (#EXTINF) or the library; skipped",
                e.line, e.track
            ));
            continue;
        }
        if library.and_then(|l| l.find(&choice.track)).is_some() {
            out.in_library += 1;
        }
        out.choices.push(choice);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::broadcast::library::LibTrack;

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
    fn resolves_entries_against_the_library() {
        let lib = Library::new(vec![
            LibTrack {
                id: "a/one.mp3".into(),
                title: "One".into(),
                artist: None,
                duration_ms: Some(60_000),
            },
            LibTrack {
                id: "b/untimed.mp3".into(),
                title: "Untimed".into(),
                artist: None,
                duration_ms: None,
            },
        ]);
        let entries = parse_m3u(
            "#EXTINF:-1,x\n../a/one.mp3\n#EXTINF:5,Mine\nmine.ogg\n#EXTINF:7,One again\n/x/a/one.mp3\nuntimed.mp3\n",
        )
        .unwrap();
        let folder = Path::new("/music/lists");
        let r = resolve(&entries, Some(&lib), folder, false);
        assert_eq!(r.in_library, 2);
        let got: Vec<_> = r
            .choices
            .iter()
            .map(|c| (c.track.as_str(), c.duration_ms))
            .collect();
        // -1 takes the library's duration; a positive #EXTINF is kept.
        assert_eq!(
            got,
            [("a/one.mp3", Some(60_000)), ("a/one.mp3", Some(7_000))]
        );
        assert_eq!(r.problems.len(), 2, "{:?}", r.problems);
        assert!(r.problems[0].starts_with("line 4: \"mine.ogg\": no library track"));
        assert!(r.problems[1].contains("no duration"), "{:?}", r.problems);

        // --free-tracks keeps what the library lacks, with its title.
        let r = resolve(&entries, Some(&lib), folder, true);
        assert_eq!(r.choices.len(), 3);
        assert_eq!(r.choices[1].track, "mine.ogg");
        assert_eq!(r.choices[1].title.as_deref(), Some("Mine"));
        let r = resolve(&entries, None, folder, true);
        assert_eq!((r.choices.len(), r.in_library), (2, 0));
    }
}
