//! `radio broadcast --playlist`: extended M3U, each entry resolved to a
//! track of the server's library. Apart from the session because it is a
//! file format, read once at start.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

use super::library::Library;
use super::player::Choice;
use crate::m3u::{Entry, parse_m3u};

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
