//! The station's gain for a track (`gain_db` in its `sync`), in mpv: a
//! per-file option of `loadfile` that adds a labelled volume filter
//! (`af-add=@radio-gain:lavfi-volume=volume=-3.5dB`). mpv resets per-file
//! options when the file ends, so each track has its own gain and none
//! leaks into the next; `af-add` keeps the user's own `--af` filters.
//! It works in every mpv with libavfilter's `volume` (mpv 0.35 has no
//! `volume-gain` property), and the user's volume stays theirs.

use serde_json::{Value, json};

/// The filter's label in mpv's `af` property.
pub(crate) const LABEL: &str = "radio-gain";

/// The `loadfile` command for `url` (with mpv's `flags`, such as
/// `replace`), applying `gain_db` when the station gives one.
pub(crate) fn loadfile(url: &str, flags: &str, gain_db: Option<f64>) -> Value {
    let mut command = json!({"name": "loadfile", "url": url, "flags": flags});
    if let Some(db) = gain_db.filter(|db| db.is_finite()) {
        command["options"] = json!({ "af-add": filter(db) });
    }
    command
}

/// The volume filter for `db` decibels.
fn filter(db: f64) -> String {
    format!("@{LABEL}:lavfi-volume=volume={db:.2}dB")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gain_is_a_per_file_filter() {
        let with = loadfile("http://h/media/a.wav", "replace", Some(-11.984));
        assert_eq!(
            with["options"]["af-add"],
            "@radio-gain:lavfi-volume=volume=-11.98dB"
        );
        assert_eq!(with["flags"], "replace");
        let without = loadfile("http://h/media/a.wav", "replace", None);
        assert!(without.get("options").is_none(), "{without}");
    }
}
