//! Even loudness: the library measures each track (EBU R128 integrated
//! loudness) behind the scan, and `/api/library` and every `sync` of the
//! track carry the gain toward -18 LUFS; a file it cannot decode plays
//! without one, and says nothing louder than a debug line; nothing is
//! decoded twice, across rescans or restarts (the cache file). The web
//! player's GainNode, in a real Chromium, is checked here too
//! (tests/browser/gain.mjs); mpv's filter in tests/it/mpv.rs.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use radio::{LoudnessCache, StationSpec};
use serde_json::json;

use crate::support::process::exit_within;
use crate::support::{Client, Server, TempDir, eventually, ffmpeg_tone, sine_wav};

const MEASURED: &str = "radio_library_loudness_measured_total";
const PENDING: &str = "radio_library_loudness_pending";
/// The loudness every track is brought to (LUFS).
const TARGET: f64 = -18.0;

/// Each track of the library and its gain (`None`: it has none).
async fn gains(server: &Server) -> BTreeMap<String, Option<f64>> {
    let list = server.get("/api/library").await.json();
    list.as_array()
        .expect("the library is a JSON list")
        .iter()
        .map(|t| {
            let id = t["id"].as_str().expect("an id").to_owned();
            (id, t["gain_db"].as_f64())
        })
        .collect()
}

/// Waits until every track of `ids` has a gain; returns all the gains.
async fn gains_of(server: &Server, ids: &[&str]) -> BTreeMap<String, Option<f64>> {
    eventually("the tracks are measured", async || {
        let g = gains(server).await;
        if ids.iter().all(|id| g.get(*id).is_some_and(Option::is_some)) {
            Ok(g)
        } else {
            Err(g)
        }
    })
    .await
}

fn gain(gains: &BTreeMap<String, Option<f64>>, id: &str) -> f64 {
    gains
        .get(id)
        .copied()
        .flatten()
        .unwrap_or_else(|| panic!("{id} has no gain: {gains:?}"))
}

#[tokio::test]
async fn tracks_are_brought_to_one_loudness_and_syncs_carry_their_gain() {
    let dir = TempDir::new("loudness");
    dir.write("loud.wav", sine_wav(3, -6.0));
    dir.write("quiet.wav", sine_wav(3, -18.0));
    // Plays (the scan admits it), but no decoder here can measure it.
    ffmpeg_tone(&dir, "opus.opus", 3, &["-c:a", "libopus"]);
    let server = Server::with(|c| c.media.dir = Some(dir.path().to_owned()));

    let g = gains_of(&server, &["loud.wav", "quiet.wav"]).await;
    server.wait_metric(MEASURED, 3.0).await;
    server.wait_metric(PENDING, 0.0).await;
    let (loud, quiet) = (gain(&g, "loud.wav"), gain(&g, "quiet.wav"));
    // A sine peaking at X dBFS reads about X LUFS: the gain is TARGET - X.
    assert!((loud - (TARGET + 6.0)).abs() < 0.5, "loud.wav: {loud} dB");
    assert!(
        (quiet - (TARGET + 18.0)).abs() < 0.5,
        "quiet.wav: {quiet} dB"
    );
    assert!(
        ((quiet - loud) - 12.0).abs() < 0.5,
        "12 dB apart, 12 dB of gain apart: {g:?}"
    );
    // The file that cannot be measured plays, without a gain, and without
    // a word above the debug log.
    let g = gains(&server).await;
    assert_eq!(g.get("opus.opus"), Some(&None), "{g:?}");
    let log = server.log();
    assert!(
        !log.lines()
            .any(|l| (l.contains("WARN") || l.contains("ERROR")) && l.contains("opus")),
        "{log}"
    );
    assert_eq!(server.get("/media/opus.opus").await.status, 200);

    // A station's syncs carry the library's gain for their track.
    let mut b = Client::connect(&server).await;
    let mut l = Client::connect(&server).await;
    b.start("even").await;
    l.tune("even").await;
    let sync_of = async |b: &mut Client, l: &mut Client, track: &str| {
        b.send(
            json!({"type":"update","station":"even","track":track,"position_ms":0,"playing":true}),
        )
        .await;
        l.expect("sync").await
    };
    let s = sync_of(&mut b, &mut l, "loud.wav").await;
    assert_eq!(s["gain_db"].as_f64(), Some(loud), "{s}");
    b.send(json!({"type":"heartbeat","station":"even","position_ms":500}))
        .await;
    let s = l.expect("sync").await;
    assert_eq!(s["cause"], "heartbeat");
    assert_eq!(
        s["gain_db"].as_f64(),
        Some(loud),
        "a heartbeat carries it on: {s}"
    );
    let s = sync_of(&mut b, &mut l, "quiet.wav").await;
    assert_eq!(s["gain_db"].as_f64(), Some(quiet), "{s}");
    for track in ["opus.opus", "not-in-the-library.mp3"] {
        let s = sync_of(&mut b, &mut l, track).await;
        assert!(s.get("gain_db").is_none(), "{track}: {s}");
    }
}

#[tokio::test]
async fn a_station_the_server_runs_carries_the_gain() {
    let dir = TempDir::new("loudness-onair");
    dir.write("a.wav", sine_wav(1, -9.0));
    dir.write("b.wav", sine_wav(1, -21.0));
    let server = Server::with(|c| {
        c.media.dir = Some(dir.path().to_owned());
        c.stations = vec![StationSpec::parse("auto=library").expect("a station")];
    });
    let g = gains_of(&server, &["a.wav", "b.wav"]).await;
    let mut l = Client::connect(&server).await;
    l.tune("auto").await;
    // The first track may have started before it was measured; within a
    // few tracks each plays with its gain.
    let mut seen = BTreeMap::new();
    eventually("both tracks play with their gain", async || {
        let s = l.expect("sync").await;
        let track = s["track"].as_str().unwrap_or_default().to_owned();
        if let Some(db) = s["gain_db"].as_f64() {
            seen.insert(track, db);
        }
        if seen.len() == 2 {
            Ok(())
        } else {
            Err(seen.clone())
        }
    })
    .await;
    assert_eq!(seen["a.wav"], gain(&g, "a.wav"));
    assert_eq!(seen["b.wav"], gain(&g, "b.wav"));
}

#[tokio::test]
async fn nothing_is_decoded_twice_across_rescans_and_restarts() {
    let dir = TempDir::new("loudness-rescan");
    let cache_dir = TempDir::new("loudness-cache");
    // A folder that does not exist yet: the server makes it.
    let cache = cache_dir.path().join("radio/loudness.jsonl");
    dir.write("a.wav", sine_wav(2, -10.0));
    dir.write("b.wav", sine_wav(2, -20.0));
    let config = |rescan: Option<Duration>| {
        let (media, cache) = (dir.path().to_owned(), cache.clone());
        move |c: &mut radio::ServerConfig| {
            c.media.dir = Some(media);
            c.media.rescan_interval = rescan;
            c.media.loudness_cache = LoudnessCache::File(cache);
        }
    };
    let mut first = Server::with(config(Some(Duration::from_millis(100))));
    gains_of(&first, &["a.wav", "b.wav"]).await;
    first.wait_metric(MEASURED, 2.0).await;

    // A new file: only it is decoded, by the next rescan.
    dir.write("c.wav", sine_wav(2, -14.0));
    gains_of(&first, &["c.wav"]).await;
    first.wait_metric(MEASURED, 3.0).await;
    // Rescans of the unchanged library decode nothing.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(first.metric(MEASURED).await, 3.0);

    // A changed file is measured again: 30 dB quieter, its gain raised
    // to the most there is (+12 dB).
    let before = gain(&gains(&first).await, "a.wav");
    dir.write("a.wav", sine_wav(3, -40.0));
    let after = eventually("a.wav's new gain", async || {
        let now = gains(&first).await.get("a.wav").copied().flatten();
        match now {
            Some(db) if db != before => Ok(db),
            other => Err(other),
        }
    })
    .await;
    assert_eq!(after, 12.0, "{before} dB -> {after} dB");
    first.wait_metric(MEASURED, 4.0).await;
    let measured = gains(&first).await;
    first.shutdown().expect("the first server stops");
    drop(first);
    assert!(cache.exists(), "no cache file at {}", cache.display());

    // A restart reads the cache: every gain is there at the first answer,
    // and nothing is decoded.
    let second = Server::with(config(None));
    assert_eq!(gains(&second).await, measured);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(second.metric(MEASURED).await, 0.0);
    assert_eq!(second.metric(PENDING).await, 0.0);
}

/// The web player applies each track's gain through a GainNode: a
/// listener of a server-run station, per track, and private play of the
/// library (tests/browser/gain.mjs, in a real headless Chromium).
#[test]
fn the_web_player_applies_the_gain() {
    let browser_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    crate::browser::require_browser();
    let dir = TempDir::new("loudness-browser");
    dir.write("a.wav", sine_wav(4, -8.0));
    dir.write("b.wav", sine_wav(4, -22.0));
    let server = Server::with(|c| {
        c.media.dir = Some(dir.path().to_owned());
        c.stations = vec![StationSpec::parse("even=library").expect("a station")];
    });
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    runtime.block_on(gains_of(&server, &["a.wav", "b.wav"]));
    let mut child = Command::new("node")
        .arg(browser_dir.join("gain.mjs"))
        .arg(server.http_url(""))
        .arg("even")
        .env("CHROMIUM", crate::browser::chromium())
        .current_dir(&browser_dir)
        .stdin(Stdio::null())
        .spawn()
        .expect("start node");
    let status = exit_within(
        &mut child,
        Duration::from_secs(120),
        "the browser test (node tests/browser/gain.mjs)",
    );
    assert!(
        status.success(),
        "the browser test failed ({status}); its output is above"
    );
}
