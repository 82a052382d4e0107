//! `radio serve --station NAME=SOURCE[,shuffle]`, as written: parsed by
//! clap (one `--station`, or the whole `RADIO_STATIONS` list), checked
//! against the library when the server starts ([`super::source`]).

use std::fmt;

use crate::protocol::StationName;

/// What follows a SOURCE to shuffle it.
const SHUFFLE: &str = "shuffle";

/// One station the server runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StationSpec {
    pub name: StationName,
    /// An M3U playlist's path, a folder of the library (relative to
    /// `--media`), or `library` for all of it.
    pub source: String,
    /// A new order each pass.
    pub shuffle: bool,
}

impl StationSpec {
    /// Parses one `NAME=SOURCE[,shuffle]`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut list = parse_list(s)?.0;
        match (list.pop(), list.is_empty()) {
            (Some(spec), true) => Ok(spec),
            _ => Err(format!("{s:?} names more than one station")),
        }
    }
}

impl fmt::Display for StationSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.name, self.source)?;
        if self.shuffle {
            write!(f, ",{SHUFFLE}")?;
        }
        Ok(())
    }
}

/// The stations of one `--station` value, or of `RADIO_STATIONS` (which
/// clap reads as one value: stations separated by commas or newlines).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StationList(pub Vec<StationSpec>);

/// Parses stations separated by commas or newlines: `NAME=SOURCE` starts a
/// station; `shuffle` after it shuffles it; any other piece after a comma
/// belongs to the SOURCE before it (a path may hold a comma).
pub(crate) fn parse_list(s: &str) -> Result<StationList, String> {
    let mut out: Vec<StationSpec> = Vec::new();
    for line in s.lines() {
        // Whether the piece before this one was part of a SOURCE (so a
        // piece without `=` continues it), not a `shuffle` or a new line.
        let mut in_source = false;
        for piece in line.split(',') {
            let trimmed = piece.trim();
            if trimmed.is_empty() {
                continue;
            }
            if trimmed == SHUFFLE {
                let Some(last) = out.last_mut() else {
                    return Err(format!("{SHUFFLE} must follow a NAME=SOURCE ({})", usage()));
                };
                last.shuffle = true;
                in_source = false;
                continue;
            }
            let named = trimmed
                .split_once('=')
                .filter(|(name, _)| StationName::new(name.trim()).is_ok());
            match (named, out.last_mut()) {
                (Some((name, source)), _) => {
                    let name = StationName::new(name.trim())?;
                    let source = source.trim();
                    if source.is_empty() {
                        return Err(format!("station {name} has no SOURCE ({})", usage()));
                    }
                    out.push(StationSpec {
                        name,
                        source: source.to_owned(),
                        shuffle: false,
                    });
                    in_source = true;
                }
                (None, Some(last)) if in_source => {
                    last.source.push(',');
                    last.source.push_str(piece.trim_end());
                }
                (None, _) => {
                    let why = match trimmed.split_once('=') {
                        Some((name, _)) => StationName::new(name.trim()).err().unwrap_or_default(),
                        None => "no NAME=".to_owned(),
                    };
                    return Err(format!("{trimmed:?}: {why} ({})", usage()));
                }
            }
        }
    }
    if out.is_empty() {
        return Err(format!("no station given ({})", usage()));
    }
    Ok(StationList(out))
}

fn usage() -> String {
    format!(
        "a server-run station is NAME=SOURCE, SOURCE a playlist file, a folder of the \
         library or `library`, then ,{SHUFFLE} to shuffle it"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn specs(s: &str) -> Vec<String> {
        parse_list(s)
            .unwrap_or_else(|e| panic!("{s:?}: {e}"))
            .0
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn stations_by_commas_and_lines_with_their_options() {
        assert_eq!(specs("jazz=/srv/jazz.m3u"), ["jazz=/srv/jazz.m3u"]);
        assert_eq!(
            specs("jazz=jazz.m3u,shuffle,all=library"),
            ["jazz=jazz.m3u,shuffle", "all=library"]
        );
        assert_eq!(
            specs("rock=Rock/Classics\n  all = library , shuffle\n"),
            ["rock=Rock/Classics", "all=library,shuffle"]
        );
        // A comma inside a path stays in it.
        assert_eq!(
            specs("a=Songs, Vol. 2/x.m3u,shuffle"),
            ["a=Songs, Vol. 2/x.m3u,shuffle"]
        );
        assert_eq!(
            StationSpec::parse("s=library,shuffle"),
            Ok(StationSpec {
                name: StationName::new("s").expect("a name"),
                source: "library".into(),
                shuffle: true,
            })
        );
    }

    #[test]
    fn what_cannot_be_a_station_says_why() {
        for bad in [
            "",
            "jazz",
            "shuffle,a=b",
            "jazz=",
            "bad name=library",
            "a=b\nc",
        ] {
            let e = parse_list(bad).expect_err(bad);
            assert!(e.contains("NAME=SOURCE"), "{bad:?}: {e}");
        }
        assert!(StationSpec::parse("a=b,c=d").is_err());
    }
}
