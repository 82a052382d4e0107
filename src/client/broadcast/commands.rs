//! The command language of `radio broadcast`'s stdin: one command a line,
//! words quoted as in a shell. Apart from the session so the language can be
//! read (and tested) on its own.

use anyhow::{Context as _, bail};

/// A line of input, parsed.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Play {
        track: Option<String>,
        position_ms: Option<u64>,
    },
    Pause,
    Seek(u64),
    Track {
        name: String,
        duration_ms: Option<u64>,
    },
    Stop,
    Help,
}

pub const HELP: &str = "commands: play [TRACK] [SECONDS] | pause | seek SECONDS | \
                        track NAME [DURATION_SECONDS] | stop | help";

fn seconds(word: &str, what: &str) -> anyhow::Result<u64> {
    let secs: f64 = word
        .parse()
        .ok()
        .filter(|s: &f64| s.is_finite() && *s >= 0.0)
        .with_context(|| format!("{what} must be a number of seconds, not {word:?}"))?;
    Ok((secs * 1000.0).round() as u64)
}

/// Parses one input line; `Ok(None)` for blank lines and `#` comments.
/// Words may be quoted as in a shell: `track "Side A.mp3" 181`.
pub fn parse_command(line: &str) -> anyhow::Result<Option<Command>> {
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
            bail!("{cmd} takes at most {max} arguments; {HELP}");
        }
        Ok(())
    };
    let command = match cmd.as_str() {
        "play" => {
            too_many(2)?;
            Command::Play {
                track: args.first().cloned(),
                position_ms: args
                    .get(1)
                    .map(|w| seconds(w, "the position"))
                    .transpose()?,
            }
        }
        "pause" => {
            too_many(0)?;
            Command::Pause
        }
        "seek" => {
            too_many(1)?;
            let Some(w) = args.first() else {
                bail!("seek needs a position in seconds, like: seek 42");
            };
            Command::Seek(seconds(w, "the position")?)
        }
        "track" => {
            too_many(2)?;
            let Some(name) = args.first() else {
                bail!("track needs a name, like: track song.mp3 180");
            };
            Command::Track {
                name: name.clone(),
                duration_ms: args
                    .get(1)
                    .map(|w| seconds(w, "the duration"))
                    .transpose()?,
            }
        }
        "stop" => Command::Stop,
        "help" | "?" => Command::Help,
        other => bail!("unknown command {other:?}; {HELP}"),
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
                track: Some("Side A.mp3".into()),
                position_ms: Some(12_500)
            })
        );
        assert_eq!(
            parse_command("play").unwrap(),
            Some(Command::Play {
                track: None,
                position_ms: None
            })
        );
        assert_eq!(parse_command("PAUSE").unwrap(), Some(Command::Pause));
        assert_eq!(parse_command("seek 3").unwrap(), Some(Command::Seek(3_000)));
        assert_eq!(
            parse_command("track b.ogg 180").unwrap(),
            Some(Command::Track {
                name: "b.ogg".into(),
                duration_ms: Some(180_000)
            })
        );
        assert_eq!(parse_command("  # comment").unwrap(), None);
        assert_eq!(parse_command("").unwrap(), None);
        assert!(parse_command("seek").is_err());
        assert!(parse_command("seek -4").is_err());
        assert!(parse_command("dance").is_err());
        assert!(parse_command("pause now").is_err());
        assert!(parse_command("play \"unterminated").is_err());
    }
}
