//! What `radio broadcast` prints on stdout: each acknowledged state, and the
//! answers to `now` and `search`; a sentence each, or JSON lines with
//! `--json`.

use serde::Serialize;
use serde_json::json;

use super::library::{LibTrack, Library};
use crate::client;

/// Most tracks `search` lists.
const SEARCH_LISTED: usize = 50;

/// A state sent with `ack`, waiting for its `seq`.
#[derive(Debug, Clone, Serialize)]
pub(super) struct Sent {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    pub station: String,
    pub track: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub artist: Option<String>,
    pub position_ms: u64,
    pub playing: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    pub cause: &'static str,
}

impl Sent {
    /// `"Artist - Title" (id)`, or the track as written.
    fn shown(&self) -> String {
        match (&self.title, &self.artist) {
            (Some(t), Some(a)) => format!("{:?} ({})", format!("{a} - {t}"), self.track),
            (Some(t), None) => format!("{t:?} ({})", self.track),
            _ => format!("{:?}", self.track),
        }
    }

    /// `playing "Artist - Title" (id) at 0:01.0 of 0:40.0`.
    fn what(&self) -> String {
        let of = self
            .duration_ms
            .map(|d| format!(" of {}", client::clock(d)))
            .unwrap_or_default();
        format!(
            "{} {} at {}{of}",
            if self.playing { "playing" } else { "paused" },
            self.shown(),
            client::clock(self.position_ms),
        )
    }

    /// The line an acknowledged state prints (`None`: a heartbeat, printed
    /// only as JSON).
    pub(super) fn line(&self, json: bool) -> Option<String> {
        if json {
            return Some(encode(self));
        }
        (self.cause != "heartbeat")
            .then(|| format!("seq {}: {}", self.seq.unwrap_or(0), self.what()))
    }

    /// `now`'s answer; `last_seq` is the newest state the server acknowledged.
    pub(super) fn now(&self, last_seq: Option<u64>, json: bool) -> String {
        if json {
            let mut v = serde_json::to_value(self).unwrap_or_default();
            v["type"] = json!("now");
            v["seq"] = json!(last_seq);
            return v.to_string();
        }
        let seq = last_seq.map(|s| format!(", seq {s}")).unwrap_or_default();
        format!("now: {} on {}{seq}", self.what(), self.station)
    }
}

/// `now`'s answer before anything plays.
pub(super) fn nothing_yet(station: &str, json: bool) -> String {
    if json {
        json!({"type": "now", "station": station, "track": null}).to_string()
    } else {
        format!("now: nothing plays on {station} yet; use play QUERY")
    }
}

/// `search`'s answer: the tracks at `found`, in library order.
pub(super) fn search(lib: &Library, words: &str, found: &[usize], json: bool) -> Vec<String> {
    let tracks: Vec<&LibTrack> = found.iter().filter_map(|&i| lib.get(i)).collect();
    let more = tracks.len().saturating_sub(SEARCH_LISTED);
    let listed = &tracks[..tracks.len() - more];
    if json {
        let v = json!({"type": "search", "query": words, "matches": listed, "more": more});
        return vec![v.to_string()];
    }
    let mut lines = vec![match tracks.len() {
        0 => format!("no track matches {words:?}"),
        1 => format!("1 track matches {words:?}:"),
        n => format!("{n} tracks match {words:?}:"),
    }];
    for t in listed {
        let d = t
            .duration_ms
            .map(client::clock)
            .unwrap_or_else(|| "?".into());
        lines.push(format!("  {}  {:?}  {d}", t.id, t.name()));
    }
    if more > 0 {
        lines.push(format!("  ... and {more} more; add words to narrow it"));
    }
    lines
}

fn encode<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|e| format!(r#"{{"error":"cannot encode: {e}"}}"#))
}
