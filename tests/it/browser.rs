//! The web player in a real headless Chromium (Debian's `chromium`, driven by
//! playwright-core from tests/browser/) against two servers in this process:
//! one with tracks this test generates (tune-in sync, pause, track switch,
//! the broadcaster going offline, a `radio broadcast` station moving on at
//! a track's end, and one skipping a track its listener cannot play) and one on `radio serve`'s defaults, whose demo library
//! must play. One Node and Chromium run does both (tests/browser/sync.mjs
//! says how). Another run (tests/browser/next.mjs) measures the gap between
//! tracks of a station the server runs, and the requests at the boundary.
//!
//! Chromium, Node and the npm packages are installed by scripts/setup.sh
//! (CI runs it); without them this test fails and says so, never skips.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use radio::{BackendConfig, StationSpec};

use crate::support::process::exit_within;
use crate::support::{Server, TempDir, radio_bin, tone_wav};

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// One Chromium run at a time: the gaps measured are a real browser's
/// timing, which a second browser on the same cores would blur.
static ONE_BROWSER: Mutex<()> = Mutex::new(());

pub(crate) fn chromium() -> String {
    std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned())
}

fn require(ok: bool, what: &str) {
    assert!(
        ok,
        "{what} is missing: run scripts/setup.sh (it installs Chromium, Node and the \
         browser tests' npm packages; CI runs it before the tests)"
    );
}

/// The screenshots the run saves: the broadcaster's page (the path passed
/// to sync.mjs), the listener's and the listener's on a phone next to it.
fn screenshots() -> [PathBuf; 3] {
    let dir = manifest_dir().join("target/artifacts");
    ["player.png", "player-listener.png", "player-phone.png"].map(|name| dir.join(name))
}

/// Fails unless `path` holds a PNG written at or after `since`.
fn assert_fresh_png(path: &Path, since: SystemTime) {
    let shown = path.display();
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("no screenshot at {shown}: {e}"));
    assert!(
        bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{shown} is not a PNG ({} bytes)",
        bytes.len()
    );
    let modified = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .expect("the screenshot's modification time");
    assert!(modified >= since, "{shown} was not written by this run");
}

/// Fails, saying what to install, unless Chromium, Node and the browser
/// tests' npm packages are there.
pub(crate) fn require_browser() {
    let browser_dir = manifest_dir().join("tests/browser");
    require(
        Path::new(&chromium()).exists(),
        &format!("Chromium ({})", chromium()),
    );
    require(
        Command::new("node")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success()),
        "Node.js (node)",
    );
    require(
        browser_dir.join("node_modules/playwright-core").exists(),
        "playwright-core (tests/browser/node_modules)",
    );
}

/// Three tones of `seconds` each (1.wav to 3.wav, titled "Tone 1" to "Tone
/// 3", by `artist`), in a folder of their own.
fn three_tones(folder: &str, seconds: u32, artist: &str) -> TempDir {
    let media = TempDir::new(folder);
    for (i, notes) in [[261.63, 329.63], [293.66, 369.99], [329.63, 415.3]]
        .iter()
        .enumerate()
    {
        let title = format!("Tone {}", i + 1);
        media.write(
            &format!("{}.wav", i + 1),
            tone_wav(seconds, notes, Some(&title), Some(artist)),
        );
    }
    media
}

/// Runs `node tests/browser/SCRIPT ARGS...`, which must succeed.
fn run_script(script: &str, args: &[&str]) {
    let browser_dir = manifest_dir().join("tests/browser");
    let mut child = Command::new("node")
        .arg(browser_dir.join(script))
        .args(args)
        .env("CHROMIUM", chromium())
        .current_dir(&browser_dir)
        .spawn()
        .expect("start node");
    let status = exit_within(
        &mut child,
        Duration::from_secs(180),
        &format!("the browser test (node tests/browser/{script})"),
    );
    assert!(
        status.success(),
        "the browser test failed ({status}); its output is above"
    );
}

#[test]
fn two_browsers_stay_in_sync_and_the_demo_library_plays() {
    let _one = ONE_BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    require_browser();

    let media = TempDir::new("browser");
    media.write(
        "first.wav",
        tone_wav(
            90,
            &[220.0, 277.18, 329.63],
            Some("First tone"),
            Some("Browser test"),
        ),
    );
    media.write(
        "second.wav",
        tone_wav(
            90,
            &[392.0, 493.88],
            Some("Second tone"),
            Some("Browser test"),
        ),
    );
    // An accented title and artist for the library search (last by id, so
    // the first two tracks stay the first two).
    media.write(
        "x/Hoppípolla.wav",
        tone_wav(20, &[261.63], Some("Hoppípolla"), Some("Sigur Rós")),
    );
    // A 4 s track, for a shell station that must move on at its end.
    media.write(
        "short.wav",
        tone_wav(4, &[523.25], Some("Short tone"), Some("Browser test")),
    );
    let server = Server::with(|c| {
        c.media.dir = Some(media.path().to_owned());
        // A short grace period, so B sees the station go offline soon after
        // A's tab closes (but long enough for A to reconnect after a
        // dropped line).
        c.backend = BackendConfig::Local {
            grace: Duration::from_secs(2),
        };
    });
    // `radio serve` with no flags: no --media, so the demo library.
    let demo = Server::start();

    // Screenshots left by an earlier run must not pass for this one's.
    let shots = screenshots();
    for shot in &shots {
        match std::fs::remove_file(shot) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                panic!("cannot remove {}: {e}", shot.display())
            }
            _ => {}
        }
    }
    let started = SystemTime::now();
    let shot = shots[0].to_str().expect("a UTF-8 path");
    run_script(
        "sync.mjs",
        &[&server.http_url(""), shot, &demo.http_url(""), radio_bin()],
    );
    for shot in &shots {
        assert_fresh_png(shot, started);
    }
}

/// A station the server runs, of 7 s tracks: the page fetches each next
/// track ahead and starts it at the boundary with a gap under 50 ms and no
/// request there (tests/browser/next.mjs measures and says how).
#[test]
fn the_next_track_starts_on_time_without_a_gap_or_a_fetch() {
    let _one = ONE_BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    require_browser();
    let media = three_tones("browser-next", 7, "Next");
    let server = Server::with(|c| {
        c.media.dir = Some(media.path().to_owned());
        c.stations = vec![StationSpec::parse("onair=library").expect("a station spec")];
    });
    run_script("next.mjs", &[&server.http_url(""), "onair"]);
}

/// A page tuned to a station offers it to other apps: the stream's
/// absolute URL and its .m3u playlist, which names that URL, following the
/// page to another station (tests/browser/inapp.mjs).
#[test]
fn the_page_offers_the_stream_to_other_apps() {
    let _one = ONE_BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    require_browser();
    let server = Server::with(|c| {
        c.stations = vec![
            StationSpec::parse("first=library").expect("a station spec"),
            StationSpec::parse("second=library").expect("a station spec"),
        ];
    });
    run_script("inapp.mjs", &[&server.http_url(""), "first", "second"]);
}

/// A track that fails to load for a moment (503 with Retry-After, a cut
/// connection) is retried at the station's position and plays in sync,
/// and the server counts no `cannot_play`; a file that is not audio is
/// still reported (tests/browser/retry.mjs, through a fault-making front
/// of its own).
#[test]
fn a_track_that_fails_to_load_is_retried_and_a_damaged_one_reported() {
    let _one = ONE_BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    require_browser();
    let media = three_tones("browser-retry", 15, "Retry");
    let server = Server::with(|c| {
        c.media.dir = Some(media.path().to_owned());
        c.stations = vec![StationSpec::parse("onair=library").expect("a station spec")];
    });
    run_script("retry.mjs", &[&server.http_url(""), "onair"]);
    // What the page reported: the damaged file, once; the failed fetches,
    // never.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let reported = runtime.block_on(server.metric("radio_cannot_play_total"));
    assert_eq!(reported, 1.0, "cannot_play reports");
}

/// A station broadcast from the page ("Go live") skips a track none of its
/// listeners can play, says why, and its listener plays the next one
/// (tests/browser/golive.mjs: the listener's copy of the first track is
/// damaged on its way to the page).
#[test]
fn a_page_run_station_skips_a_track_no_listener_can_play() {
    let _one = ONE_BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    require_browser();
    let media = three_tones("browser-golive", 20, "Go live");
    let server = Server::with(|c| c.media.dir = Some(media.path().to_owned()));
    run_script("golive.mjs", &[&server.http_url(""), "pagelive"]);
}
