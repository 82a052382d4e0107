//! The server's library as `radio broadcast` sees it: fetched from
//! `GET /api/library`, and the rules that turn what a person types (or a
//! playlist's path) into one library id.
//!
//! A query resolves, in this order, to: the track whose id it is; else the
//! one track whose file name, file stem, title or "artist - title" it is;
//! else the one track with the query inside one of those. Past the exact
//! id, case and accents do not count (see [`fold`]). No track, or several,
//! is a refusal that names up to five candidates.

use std::path::Path;

use anyhow::bail;
use serde::{Deserialize, Serialize};

use crate::client::http::{Endpoint, HttpError};
use crate::fold::fold;
use crate::m3u::{self, Match};

/// Most candidates a refusal lists.
const CANDIDATES: usize = 5;

/// One track of `/api/library`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct LibTrack {
    pub id: String,
    pub title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artist: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
}

impl LibTrack {
    /// "Artist - Title", or the title alone.
    pub(super) fn name(&self) -> String {
        match &self.artist {
            Some(a) => format!("{a} - {}", self.title),
            None => self.title.clone(),
        }
    }

    fn file_name(&self) -> &str {
        self.id.rsplit('/').next().unwrap_or(&self.id)
    }

    fn stem(&self) -> &str {
        let name = self.file_name();
        match name.rfind('.') {
            Some(i) if i > 0 => &name[..i],
            _ => name,
        }
    }

    /// What a query is compared with, folded: file name, stem, title,
    /// "artist - title".
    fn keys(&self) -> [String; 4] {
        [
            fold(self.file_name()),
            fold(self.stem()),
            fold(&self.title),
            fold(&self.name()),
        ]
    }

    /// `"Artist - Title" (id)`, as refusals and listings show a track.
    pub(super) fn shown(&self) -> String {
        format!("{:?} ({})", self.name(), self.id)
    }
}

/// Why the library could not be had.
#[derive(Debug)]
pub(super) enum FetchError {
    /// Nothing answers at that address.
    Unreachable(HttpError),
    /// Something answered, but no library of this protocol's shape.
    NoLibrary(String),
}

/// The server's tracks, in the order `/api/library` lists them (by id).
#[derive(Debug, Clone, Default)]
pub(super) struct Library {
    tracks: Vec<LibTrack>,
}

/// `GET /api/library` from the server at `endpoint`.
pub(super) async fn fetch(endpoint: &Endpoint) -> Result<Library, FetchError> {
    let url = endpoint.url("/api/library");
    let (status, body) = endpoint.get("/api/library").await.map_err(|e| match e {
        HttpError::Unreachable { .. } => FetchError::Unreachable(e),
        HttpError::Failed { .. } => FetchError::NoLibrary(e.to_string()),
    })?;
    if !status.is_success() {
        return Err(FetchError::NoLibrary(format!("{url} answered {status}")));
    }
    let tracks: Vec<LibTrack> = serde_json::from_slice(&body)
        .map_err(|e| FetchError::NoLibrary(format!("{url} is not a radio library ({e})")))?;
    Ok(Library::new(tracks))
}

/// The library at start: required unless `--free-tracks`.
pub(super) async fn at_start(endpoint: &Endpoint, free: bool) -> anyhow::Result<Option<Library>> {
    match fetch(endpoint).await {
        Ok(lib) => Ok(Some(lib)),
        Err(FetchError::Unreachable(e)) if !free => {
            bail!("{e}\n{}", crate::client::first_failure_hint(&e.to_string()))
        }
        Err(FetchError::NoLibrary(why)) if !free && crate::client::untrusted_certificate(&why) => {
            bail!("{why}\n{}", crate::client::first_failure_hint(&why))
        }
        Err(FetchError::NoLibrary(why)) if !free => bail!(
            "the server has no library to play from ({why}); pass --free-tracks to send \
             track names as written (for listeners who play their own files)"
        ),
        Err(FetchError::Unreachable(e)) => {
            eprintln!("radio: no library ({e}); sending track names as written");
            Ok(None)
        }
        Err(FetchError::NoLibrary(why)) => {
            eprintln!("radio: no library ({why}); sending track names as written");
            Ok(None)
        }
    }
}

impl Library {
    pub(super) fn new(tracks: Vec<LibTrack>) -> Self {
        Self { tracks }
    }

    pub(super) fn len(&self) -> usize {
        self.tracks.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.tracks.is_empty()
    }

    /// The track at `i` of the library's order.
    pub(super) fn get(&self, i: usize) -> Option<&LibTrack> {
        self.tracks.get(i)
    }

    /// Where the track with this id is in the library's order.
    pub(super) fn position(&self, id: &str) -> Option<usize> {
        self.tracks.iter().position(|t| t.id == id)
    }

    /// The track with this id.
    pub(super) fn find(&self, id: &str) -> Option<&LibTrack> {
        self.position(id).and_then(|i| self.get(i))
    }

    /// Resolves what a person typed to one track (see the module's rules);
    /// `Err` is the one-line refusal to print.
    pub(super) fn resolve(&self, query: &str) -> Result<usize, String> {
        if let Some(i) = self.position(query) {
            return Ok(i);
        }
        if self.is_empty() {
            return Err(format!(
                "no track matches {query:?}: the server's library is empty"
            ));
        }
        let q = fold(query);
        let keyed: Vec<[String; 4]> = self.tracks.iter().map(LibTrack::keys).collect();
        for matches in [|k: &str, q: &str| k == q, |k: &str, q: &str| k.contains(q)] {
            let found: Vec<usize> = (0..keyed.len())
                .filter(|&i| keyed[i].iter().any(|k| matches(k, &q)))
                .collect();
            match found.len() {
                0 => continue,
                1 => return Ok(found[0]),
                n => {
                    return Err(format!(
                        "{query:?} matches {n} tracks: {}; say more of it, or give the id",
                        self.listed(&found)
                    ));
                }
            }
        }
        let similar = self.similar(&q, &keyed);
        if similar.is_empty() {
            Err(format!(
                "no track matches {query:?}; list some with: search WORDS"
            ))
        } else {
            Err(format!(
                "no track matches {query:?}; did you mean: {}",
                self.listed(&similar)
            ))
        }
    }

    /// Up to [`CANDIDATES`] of `found`, shown, and how many more there are.
    fn listed(&self, found: &[usize]) -> String {
        let mut s = found
            .iter()
            .take(CANDIDATES)
            .filter_map(|&i| self.get(i))
            .map(LibTrack::shown)
            .collect::<Vec<_>>()
            .join(", ");
        if found.len() > CANDIDATES {
            s.push_str(&format!(" and {} more", found.len() - CANDIDATES));
        }
        s
    }

    /// The tracks most like `q` (shared letter pairs), best first.
    fn similar(&self, q: &str, keyed: &[[String; 4]]) -> Vec<usize> {
        let mut scored: Vec<(f64, usize)> = keyed
            .iter()
            .enumerate()
            .map(|(i, keys)| {
                let best = keys.iter().map(|k| likeness(q, k)).fold(0.0, f64::max);
                (best, i)
            })
            .filter(|(score, _)| *score >= 0.3)
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        scored
            .into_iter()
            .map(|(_, i)| i)
            .take(CANDIDATES)
            .collect()
    }

    /// Tracks whose id, title or artist holds every word (case and accents
    /// aside), in library order.
    pub(super) fn search(&self, words: &str) -> Vec<usize> {
        let words: Vec<String> = words.split_whitespace().map(fold).collect();
        (0..self.tracks.len())
            .filter(|&i| {
                let t = &self.tracks[i];
                let hay = fold(&format!(
                    "{} {} {}",
                    t.id,
                    t.title,
                    t.artist.as_deref().unwrap_or_default()
                ));
                words.iter().all(|w| hay.contains(w.as_str()))
            })
            .collect()
    }

    /// Resolves a playlist entry: its path (relative to `base`, the
    /// playlist's folder, or absolute; a URL by its path) is matched by its
    /// longest suffix against the library's ids, then by file name.
    pub(super) fn resolve_entry(&self, entry: &str, base: &Path) -> Result<usize, String> {
        let ids = self.tracks.iter().map(|t| t.id.as_str());
        match m3u::match_entry(ids, entry, base) {
            Match::One(i) => Ok(i),
            Match::Empty => Err("an empty path".to_owned()),
            Match::None => Err("no library track has this path or file name".to_owned()),
            Match::Several(named) => Err(format!(
                "{} library tracks have this file name ({}); write more of the path",
                named.len(),
                self.listed(&named)
            )),
        }
    }
}

/// How alike two strings are, from 0 to 1: the Sørensen-Dice coefficient of
/// their letter pairs (so typos and swapped letters still score).
fn likeness(a: &str, b: &str) -> f64 {
    fn pairs(s: &str) -> Vec<(char, char)> {
        let c: Vec<char> = s.chars().collect();
        c.windows(2).map(|w| (w[0], w[1])).collect()
    }
    let (pa, mut pb) = (pairs(a), pairs(b));
    if pa.is_empty() || pb.is_empty() {
        return 0.0;
    }
    let total = (pa.len() + pb.len()) as f64;
    let mut shared = 0usize;
    for p in &pa {
        if let Some(j) = pb.iter().position(|q| q == p) {
            pb.swap_remove(j);
            shared += 1;
        }
    }
    2.0 * shared as f64 / total
}

#[cfg(test)]
mod tests {
    use super::*;

    fn track(id: &str, title: &str, artist: Option<&str>) -> LibTrack {
        LibTrack {
            id: id.into(),
            title: title.into(),
            artist: artist.map(Into::into),
            duration_ms: Some(1000),
        }
    }

    fn library() -> Library {
        Library::new(vec![
            track("a/Side A.mp3", "Side A", Some("The Band")),
            track("a/Side B.mp3", "Side B", Some("The Band")),
            track("b/intro.ogg", "Overture", None),
            track("c/intro.ogg", "Intro", Some("Other")),
            track("d/Sidewalk.flac", "Walking", Some("Solo")),
        ])
    }

    fn id(lib: &Library, q: &str) -> Result<String, String> {
        lib.resolve(q).map(|i| lib.get(i).unwrap().id.clone())
    }

    #[test]
    fn an_exact_id_wins() {
        let lib = library();
        assert_eq!(id(&lib, "b/intro.ogg").unwrap(), "b/intro.ogg");
    }

    #[test]
    fn a_unique_name_stem_title_or_artist_and_title() {
        let lib = library();
        assert_eq!(id(&lib, "side a.MP3").unwrap(), "a/Side A.mp3");
        assert_eq!(id(&lib, "sidewalk").unwrap(), "d/Sidewalk.flac");
        assert_eq!(id(&lib, "overture").unwrap(), "b/intro.ogg");
        assert_eq!(id(&lib, "the band - side b").unwrap(), "a/Side B.mp3");
        // An exact match is looked for before substrings.
        assert_eq!(id(&lib, "other - intro").unwrap(), "c/intro.ogg");
    }

    #[test]
    fn then_a_unique_substring() {
        let lib = library();
        assert_eq!(id(&lib, "walk").unwrap(), "d/Sidewalk.flac");
        assert_eq!(id(&lib, "vert").unwrap(), "b/intro.ogg");
        assert_eq!(id(&lib, "solo -").unwrap(), "d/Sidewalk.flac");
    }

    #[test]
    fn several_matches_are_refused_with_the_candidates() {
        let lib = library();
        let e = id(&lib, "intro").unwrap_err();
        assert!(e.starts_with("\"intro\" matches 2 tracks:"), "{e}");
        assert!(
            e.contains("(b/intro.ogg)") && e.contains("(c/intro.ogg)"),
            "{e}"
        );
        let e = id(&lib, "side").unwrap_err();
        assert!(e.contains("matches 3 tracks"), "{e}");
    }

    #[test]
    fn no_match_suggests_similar_tracks() {
        let lib = library();
        let e = id(&lib, "sdie a").unwrap_err();
        assert!(
            e.starts_with("no track matches \"sdie a\"; did you mean: "),
            "{e}"
        );
        assert!(e.contains("\"The Band - Side A\" (a/Side A.mp3)"), "{e}");
        let e = id(&lib, "zzzz").unwrap_err();
        assert_eq!(e, "no track matches \"zzzz\"; list some with: search WORDS");
        let e = id(&Library::default(), "x").unwrap_err();
        assert!(e.contains("library is empty"), "{e}");
    }

    #[test]
    fn at_most_five_candidates_are_listed() {
        let many = Library::new(
            (0..8)
                .map(|i| track(&format!("song {i}.mp3"), &format!("Song {i}"), None))
                .collect(),
        );
        let e = id(&many, "song").unwrap_err();
        assert_eq!(e.matches(".mp3)").count(), 5, "{e}");
        assert!(e.contains("and 3 more"), "{e}");
    }

    #[test]
    fn search_needs_every_word() {
        let lib = library();
        assert_eq!(lib.search("band side"), vec![0, 1]);
        assert_eq!(lib.search("OTHER"), vec![3]);
        assert!(lib.search("band walk").is_empty());
    }

    #[test]
    fn playlist_entries_match_by_longest_suffix_then_file_name() {
        let lib = Library::new(vec![
            track("intro.ogg", "Top intro", None),
            track("b/intro.ogg", "B intro", None),
            track("x/y/song.mp3", "Song", None),
            track("z/song.mp3", "Other song", None),
            track("one.flac", "One", None),
        ]);
        let base = Path::new("/home/me/Music/lists");
        let id = |e: &str| {
            lib.resolve_entry(e, base)
                .map(|i| lib.get(i).unwrap().id.clone())
        };
        // Relative to the playlist's folder, the longest suffix wins.
        assert_eq!(id("../b/intro.ogg").unwrap(), "b/intro.ogg");
        assert_eq!(id("intro.ogg").unwrap(), "intro.ogg");
        // Absolute, and Windows separators.
        assert_eq!(id("/srv/music/x/y/song.mp3").unwrap(), "x/y/song.mp3");
        assert_eq!(id("C:\\Music\\z\\song.mp3").unwrap(), "z/song.mp3");
        // A URL by its path, decoded, without its query.
        assert_eq!(
            id("http://host:8080/media/x/y/song.mp3").unwrap(),
            "x/y/song.mp3"
        );
        assert_eq!(
            id("file:///home/me/Music/x/y/song.mp3?t=3").unwrap(),
            "x/y/song.mp3"
        );
        let spaced = Library::new(vec![track("a/Side A.mp3", "Side A", None)]);
        let entry = "file:///srv/music/a/Side%20A.mp3";
        let i = spaced.resolve_entry(entry, base).unwrap();
        assert_eq!(spaced.get(i).unwrap().id, "a/Side A.mp3");
        // No suffix matches: the file name, when one track has it.
        assert_eq!(id("elsewhere/ONE.FLAC").unwrap(), "one.flac");
        let e = id("q/song.mp3").unwrap_err();
        assert!(e.starts_with("2 library tracks have this file name"), "{e}");
        assert!(id("missing.mp3").unwrap_err().contains("no library track"));
    }

    #[test]
    fn case_and_accents_do_not_count() {
        assert_eq!(fold("Hoppípolla"), "hoppipolla");
        // The same é precomposed and decomposed, and a compatibility ligature.
        assert_eq!(fold("CAF\u{e9}"), fold("cafe\u{301}"));
        assert_eq!(fold("\u{fb01}n"), "fin");
        assert_eq!(fold("Ångström İstanbul"), "angstrom istanbul");
        let lib = Library::new(vec![
            track("s/Hoppípolla.flac", "Hoppípolla", Some("Sigur Rós")),
            track("s/Glósóli.flac", "Glósóli", Some("Sigur Rós")),
            track("x/cafe\u{301}.mp3", "Café", None),
        ]);
        assert_eq!(lib.search("hoppipolla"), vec![0]);
        assert_eq!(lib.search("SIGUR ROS"), vec![0, 1]);
        assert_eq!(lib.search("glòsoli"), vec![1]);
        assert_eq!(lib.search("caf\u{e9}"), vec![2]);
        assert_eq!(id(&lib, "hoppipolla").unwrap(), "s/Hoppípolla.flac");
        assert_eq!(id(&lib, "sigur ros - glosoli").unwrap(), "s/Glósóli.flac");
        assert!(id(&lib, "hopip").unwrap_err().contains("did you mean"));
        let base = Path::new("/m");
        assert_eq!(lib.resolve_entry("elsewhere/glosoli.FLAC", base), Ok(1));
    }

    #[test]
    fn likeness_scores_typos() {
        assert!(likeness("sdie a", "side a") >= 0.3);
        assert!(likeness("abc", "xyz") < 0.1);
        assert_eq!(likeness("a", "abc"), 0.0);
    }
}
