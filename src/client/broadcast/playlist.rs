//! `radio broadcast --playlist`: extended M3U, where each entry's
//! `#EXTINF` duration says when the next track starts. Apart from the
//! session because it is a file format, read once at start.

use std::path::Path;

use anyhow::{Context as _, bail};

/// One entry of an extended M3U playlist.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub track: String,
    pub title: Option<String>,
    pub duration_ms: u64,
}

/// Parses an extended M3U playlist. Entries without a positive `#EXTINF`
/// duration cannot be timed and are skipped with a warning.
pub fn parse_m3u(text: &str) -> anyhow::Result<Vec<Entry>> {
    let mut entries = Vec::new();
    let mut pending: Option<(Option<u64>, Option<String>)> = None;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim().trim_start_matches('\u{feff}');
        if line.is_empty() {
            continue;
        }
        if let Some(info) = line.strip_prefix("#EXTINF:") {
            let (dur, title) = info.split_once(',').unwrap_or((info, ""));
            // Attributes may follow the duration: `#EXTINF:123 tvg-id="x",Title`.
            let dur = dur.split_whitespace().next().unwrap_or("");
            let secs = dur
                .parse::<f64>()
                .ok()
                .filter(|s| s.is_finite() && *s > 0.0);
            let title = (!title.trim().is_empty()).then(|| title.trim().to_owned());
            pending = Some((secs.map(|s| (s * 1000.0).round() as u64), title));
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        match pending.take() {
            Some((Some(duration_ms), title)) => entries.push(Entry {
                track: line.to_owned(),
                title,
                duration_ms,
            }),
            _ => eprintln!(
                "radio: playlist line {}: {line:?} has no #EXTINF duration; skipping it",
                n + 1
            ),
        }
    }
    if entries.is_empty() {
        bail!("the playlist has no entry with a duration (#EXTINF:SECONDS,TITLE before each path)");
    }
    Ok(entries)
}

/// Reads and parses the playlist file at `path`.
pub(super) fn load_playlist(path: &Path) -> anyhow::Result<Vec<Entry>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the playlist {}", path.display()))?;
    parse_m3u(&text).with_context(|| format!("in {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_m3u() {
        let text = "#EXTM3U\n#EXTINF:181,Artist - One\none.mp3\n\n#EXTINF:-1,Stream\nhttp://x/stream\n#EXTINF:2.5 tvg-id=\"a\",Two\nsub/two.ogg\nbare.mp3\n";
        let e = parse_m3u(text).unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].track, "one.mp3");
        assert_eq!(e[0].title.as_deref(), Some("Artist - One"));
        assert_eq!(e[0].duration_ms, 181_000);
        assert_eq!(e[1].track, "sub/two.ogg");
        assert_eq!(e[1].duration_ms, 2_500);
        assert!(parse_m3u("#EXTM3U\nnothing.mp3\n").is_err());
    }
}
