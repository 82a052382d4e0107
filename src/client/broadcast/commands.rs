//! The command language of `radio broadcast`'s stdin: one command a line,
//! words quoted as in a shell. Apart from the session so the language can be
//! read (and tested) on its own.

use anyhow::{Context as _, bail};

use crate::client::position;

/// A line of input, parsed. Queries are resolved against the server's
/// library by the session, not here.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Command {
    Play {
        query: Option<String>,
        position_ms: Option<u64>,
    },
    Pause,
    Seek(u64),
    Track {
        query: String,
        duration_ms: Option<u64>,
    },
    Next,
    Prev,
    Search(String),
    Now,
    Stop,
    Help,
}

/// Every command, as `help`, `radio broadcast --help` and its man page list
/// them.
pub(crate) const HELP: &str = "\
Commands (one a line on stdin; quote words with spaces):
  play [QUERY] [AT]       play a track from AT, or resume
  track QUERY [LENGTH]    switch track, keeping play or pause
                          (LENGTH: its duration)
  pause                   pause
  seek AT                 jump to a position in the track
  next, prev              the next or previous track
  search WORDS            list the tracks whose id, title or
                          artist hold every word
  now                     print what plays
  stop                    stop the station and exit
  help                    this list

AT and LENGTH are seconds (90, 12.5), m:ss (1:30, 1:30.5) or
h:mm:ss (1:02:30), as positions are printed. A QUERY is a
library id, or a file name, file stem, title or \"artist -
title\", or a part of one that only one track has; case and
accents need not match. At a track's end the next track plays
(the library's order, or the playlist's); --stop-at-end pauses
instead. The end of stdin stops the station, except with
--playlist.";

/// The one-line reminder a refused line ends with.
const USAGE: &str = "commands: play, track, pause, seek, next, prev, search, now, stop, help";

/// A typed position or duration, in milliseconds (see [`position::parse`]).
fn time(word: &str, what: &str) -> anyhow::Result<u64> {
    position::parse(word).map_err(|why| anyhow::anyhow!("{what} {word:?} {why}"))
}

/// Parses one input line; `Ok(None)` for blank lines and `#` comments.
/// Words may be quoted as in a shell: `track "Side A.mp3" 181`.
pub(crate) fn parse_command(line: &str) -> anyhow::Result<Option<Command>> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let words = shell_words::split(line).with_context(|| format!("cannot read {line:?}"))?;
    let (cmd, args) = match words.split_first() {
        Some((c, a)) => (c.to_ascii_lowercase(), a),
        None => return Ok(None),
    };
    let too_many = |max: usize| -> anyhow::Result<()> {
        if args.len() > max {
            bail!("{cmd} takes at most {max} arguments; {USAGE}");
        }
        Ok(())
    };
    let command = match cmd.as_str() {
        "play" => {
            too_many(2)?;
            Command::Play {
                query: args.first().cloned(),
                position_ms: args.get(1).map(|w| time(w, "the position")).transpose()?,
            }
        }
        "pause" => {
            too_many(0)?;
            Command::Pause
        }
        "seek" => {
            too_many(1)?;
            let Some(w) = args.first() else {
                bail!("seek needs a position, like: seek 1:30 or seek 90");
            };
            Command::Seek(time(w, "the position")?)
        }
        "track" => {
            too_many(2)?;
            let Some(query) = args.first() else {
                bail!("track needs a track, like: track \"Side B\" or track side-b.mp3 3:00");
            };
            let duration_ms = args.get(1).map(|w| time(w, "the duration")).transpose()?;
            if duration_ms == Some(0) {
                bail!("a track's duration must be more than 0 seconds");
            }
            Command::Track {
                query: query.clone(),
                duration_ms,
            }
        }
        "next" => {
            too_many(0)?;
            Command::Next
        }
        "prev" | "previous" => {
            too_many(0)?;
            Command::Prev
        }
        "search" => {
            if args.is_empty() {
                bail!("search needs words, like: search side a");
            }
            Command::Search(args.join(" "))
        }
        "now" => {
            too_many(0)?;
            Command::Now
        }
        "stop" => Command::Stop,
        "help" | "?" => Command::Help,
        other => bail!("unknown command {other:?}; {USAGE}"),
    };
    Ok(Some(command))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_commands() {
        assert_eq!(
            parse_command("play \"Side A.mp3\" 12.5").unwrap(),
            Some(Command::Play {
                query: Some("Side A.mp3".into()),
                position_ms: Some(12_500)
            })
        );
        assert_eq!(
            parse_command("play").unwrap(),
            Some(Command::Play {
                query: None,
                position_ms: None
            })
        );
        assert_eq!(parse_command("PAUSE").unwrap(), Some(Command::Pause));
        assert_eq!(parse_command("seek 3").unwrap(), Some(Command::Seek(3_000)));
        assert_eq!(
            parse_command("track b.ogg 180").unwrap(),
            Some(Command::Track {
                query: "b.ogg".into(),
                duration_ms: Some(180_000)
            })
        );
        assert_eq!(parse_command("next").unwrap(), Some(Command::Next));
        assert_eq!(parse_command("prev").unwrap(), Some(Command::Prev));
        assert_eq!(parse_command("now").unwrap(), Some(Command::Now));
        assert_eq!(
            parse_command("search side  \"a b\"").unwrap(),
            Some(Command::Search("side a b".into()))
        );
        assert!(parse_command("search").is_err());
        assert!(parse_command("track x 0").is_err());
        assert!(parse_command("next 2").is_err());
        assert_eq!(parse_command("  # comment").unwrap(), None);
        assert_eq!(parse_command("").unwrap(), None);
        assert!(parse_command("seek").is_err());
        assert!(parse_command("seek -4").is_err());
        let e = parse_command("dance").unwrap_err().to_string();
        assert!(
            e.contains("unknown command \"dance\"") && e.contains("search"),
            "{e}"
        );
        assert!(parse_command("pause now").is_err());
        assert!(parse_command("play \"unterminated").is_err());
    }

    /// Positions and durations are typed as they print: seconds, m:ss or
    /// h:mm:ss.
    #[test]
    fn times_as_they_print() {
        assert_eq!(
            parse_command("seek 1:30").unwrap(),
            Some(Command::Seek(90_000))
        );
        assert_eq!(
            parse_command("seek 0:30.0").unwrap(),
            Some(Command::Seek(30_000))
        );
        assert_eq!(
            parse_command("play b.ogg 1:02:03.5").unwrap(),
            Some(Command::Play {
                query: Some("b.ogg".into()),
                position_ms: Some(3_723_500)
            })
        );
        assert_eq!(
            parse_command("track b.ogg 3:05").unwrap(),
            Some(Command::Track {
                query: "b.ogg".into(),
                duration_ms: Some(185_000)
            })
        );
        let e = parse_command("seek 1:75").unwrap_err().to_string();
        assert_eq!(
            e,
            "the position \"1:75\" has more than 59 seconds after a colon; \
             write m:ss with ss from 00 to 59"
        );
        let e = parse_command("track b.ogg soon").unwrap_err().to_string();
        assert_eq!(
            e,
            "the duration \"soon\" is not a time; \
             write seconds (90), m:ss (1:30) or h:mm:ss (1:02:30)"
        );
        assert!(parse_command("track x 0:00").is_err());
    }
}
