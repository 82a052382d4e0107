//! Why mpv could not play a track, in its own words, and whose fault it
//! is: the track's (the station plays on; mpv waits for the next one) or
//! the audio output's (no track will ever sound: `radio listen` ends).
//!
//! mpv says it twice: its `end-file` event carries a short `file_error`
//! ("audio output initialization failed", "unrecognized file format"), and
//! its log (asked for over the IPC, `request_log_messages`) the reason
//! ("Could not open/initialize audio device -> no sound.").

use std::time::Duration;

use serde_json::Value;

/// mpv's error lines kept, since the track's load, to quote.
pub(crate) const KEEP_SAID: usize = 4;
/// The log level asked of mpv: its errors and fatal errors.
pub(crate) const LOG_LEVEL: &str = "error";
/// How long mpv's log lines about a failure are waited for after it, at
/// most...
pub(crate) const HEAR_OUT: Duration = Duration::from_millis(500);
/// ... and once it is quiet this long.
pub(crate) const QUIET: Duration = Duration::from_millis(100);
/// `file_error` when mpv's audio output cannot start: the device, not the
/// track.
const NO_AUDIO_OUTPUT: &str = "audio output initialization failed";

/// mpv cannot output sound at all: `radio listen --player mpv` cannot do
/// its job, and ends with this.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct NoSound(String);

/// Whose fault a track's failure is.
#[derive(Debug)]
pub(crate) enum Trouble {
    NoSound(NoSound),
    /// The track's, with why.
    Track(String),
}

/// What an `end-file` event with `reason: error` says, with the error
/// lines mpv logged since the track's load.
pub(crate) fn of_end_file(event: &Value, said: &[&str]) -> Trouble {
    let error = event
        .get("file_error")
        .and_then(Value::as_str)
        .unwrap_or("an error it did not name");
    let quoted: Vec<String> = said.iter().map(|l| format!("{l:?}")).collect();
    let said = if quoted.is_empty() {
        String::new()
    } else {
        format!("; mpv said: {}", quoted.join(", "))
    };
    if error == NO_AUDIO_OUTPUT {
        Trouble::NoSound(NoSound(format!(
            "mpv cannot output sound ({error}){said}; choose an audio output that \
             works here with --player-arg=--ao=NAME (`mpv --ao=help` lists them)"
        )))
    } else {
        Trouble::Track(format!("{error}{said}"))
    }
}

/// A `log-message` event as one line (`ao/pulse: Init failed: ...`; mpv's
/// own messages without their `cplayer` prefix), if it says anything of
/// playing: the IPC's own (`ipc_3: Read error`, another client of mpv's
/// socket going) are left out.
pub(crate) fn log_line(event: &Value) -> Option<String> {
    let text = event.get("text").and_then(Value::as_str)?.trim();
    if text.is_empty() {
        return None;
    }
    match event.get("prefix").and_then(Value::as_str) {
        Some("cplayer") | None => Some(text.to_owned()),
        Some(prefix) if prefix.starts_with("ipc") => None,
        Some(prefix) => Some(format!("{prefix}: {text}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_dead_audio_output_is_no_tracks_fault() {
        let event = json!({"event": "end-file", "reason": "error",
            "file_error": "audio output initialization failed"});
        let said = [
            "ao/pulse: Init failed: Connection refused",
            "Could not open/initialize audio device -> no sound.",
        ];
        let Trouble::NoSound(e) = of_end_file(&event, &said) else {
            panic!("blamed on the track");
        };
        let e = e.to_string();
        assert!(
            e.starts_with("mpv cannot output sound (audio output initialization failed); mpv said: \"ao/pulse: Init failed: Connection refused\", \"Could not open/initialize audio device -> no sound.\"; choose"),
            "{e}"
        );
    }

    #[test]
    fn a_broken_file_is() {
        let event = json!({"event": "end-file", "reason": "error",
            "file_error": "unrecognized file format"});
        match of_end_file(&event, &[]) {
            Trouble::Track(why) => assert_eq!(why, "unrecognized file format"),
            t => panic!("{t:?}"),
        }
    }

    #[test]
    fn log_lines() {
        let line = |prefix: &str, text: &str| {
            log_line(
                &json!({"event": "log-message", "prefix": prefix, "level": "error", "text": text}),
            )
        };
        assert_eq!(
            line("cplayer", "No video or audio streams selected.\n").as_deref(),
            Some("No video or audio streams selected.")
        );
        assert_eq!(
            line("ao", "Failed to initialize audio driver 'x'\n").as_deref(),
            Some("ao: Failed to initialize audio driver 'x'")
        );
        assert_eq!(line("ytdl_hook", " \n"), None);
        assert_eq!(
            line("ipc_0", "Read error (Connection reset by peer)\n"),
            None
        );
    }
}
