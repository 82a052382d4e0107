//! Stations the server runs itself (`radio serve --station NAME=SOURCE`):
//! they play unattended, keep their clock with nobody listening, hand over
//! to a broadcaster and come back when it leaves, and every station's last
//! plays are listed at `GET /api/stations/{name}/history`.

use std::process::Command;
use std::time::Duration;

use radio::{BackendConfig, ServerConfig, StationSpec};
use serde_json::{Value, json};

use crate::support::{Client, Server, TempDir, eventually, radio_bin};

const RATE: u32 = 8_000;

/// A WAV file of `ms` of a tone, tagged with `title` and the artist "On air".
fn wav(ms: u32, title: &str) -> Vec<u8> {
    let seconds = ms.div_ceil(1000);
    let samples = radio::arpeggio(RATE, seconds, &[440.0, 554.37], 0.25);
    let n = (RATE * ms / 1000) as usize;
    radio::encode_wav(
        RATE,
        &samples[..n],
        &[(b"INAM", title), (b"IART", "On air")],
    )
}

/// A library of `(file, ms)` tracks, titled after their file.
pub(crate) fn library(tracks: &[(&str, u32)]) -> TempDir {
    let dir = TempDir::new("onair");
    for (id, ms) in tracks {
        dir.write(id, wav(*ms, &title_of(id)));
    }
    dir
}

/// `2.wav` is titled "Track 2".
fn title_of(id: &str) -> String {
    format!("Track {}", id.trim_end_matches(".wav"))
}

/// A server of `media` running `stations`, with `edit` on top.
fn server(media: &TempDir, stations: &[&str], edit: impl FnOnce(&mut ServerConfig)) -> Server {
    Server::with(|c| {
        c.media.dir = Some(media.path().to_path_buf());
        c.stations = stations
            .iter()
            .map(|s| StationSpec::parse(s).expect("a station spec"))
            .collect();
        edit(c);
    })
}

/// The station's history: its plays, newest first.
pub(crate) async fn history(server: &Server, station: &str) -> Vec<Value> {
    let r = server
        .get(&format!("/api/stations/{station}/history"))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["station"], station);
    v["tracks"].as_array().expect("tracks").clone()
}

/// Waits until the station has played at least `n` tracks.
async fn plays(server: &Server, station: &str, n: usize) -> Vec<Value> {
    eventually(&format!("{station} plays {n} tracks"), async || {
        let h = history(server, station).await;
        if h.len() >= n { Ok(h) } else { Err(h) }
    })
    .await
}

pub(crate) fn ms(v: &Value) -> i64 {
    v.as_i64().unwrap_or_else(|| panic!("a number: {v}"))
}

/// Tunes in and returns `tuned`.
async fn tune(l: &mut Client, station: &str) -> Value {
    l.send(json!({"type":"tune_in","station":station})).await;
    l.expect("tuned").await
}

#[tokio::test]
async fn a_server_run_station_plays_three_tracks_in_a_row_unattended() {
    let ids = ["1.wav", "2.wav", "3.wav"];
    let media = library(&[(ids[0], 700), (ids[1], 700), (ids[2], 700)]);
    let server = server(&media, &["auto=library"], |_| {});
    let mut l = Client::connect(&server).await;
    let t = tune(&mut l, "auto").await;
    assert_eq!(
        (t["live"].as_bool(), t["reason"].as_str()),
        (Some(true), Some("auto")),
        "{t}"
    );

    // The next three starts, each where the last ended, from 0, in the
    // library's order, described as a broadcaster's track would be.
    let mut starts: Vec<Value> = Vec::new();
    while starts.len() < 3 {
        let s = l.expect("sync").await;
        if s["cause"] == "update" {
            starts.push(s);
        }
    }
    let first = ids
        .iter()
        .position(|id| *id == starts[0]["track"])
        .expect("a track of the library");
    let mut seq = 0;
    for (i, s) in starts.iter().enumerate() {
        let id = ids[(first + i) % 3];
        assert_eq!(s["track"], id, "{starts:?}");
        assert_eq!(s["title"], title_of(id), "{s}");
        assert_eq!(s["artist"], "On air", "{s}");
        assert_eq!(s["duration_ms"], 700, "{s}");
        assert_eq!(s["playing"], true, "{s}");
        assert!(ms(&s["position_ms"]) < 300, "starts at its beginning: {s}");
        assert!(ms(&s["seq"]) > seq, "{starts:?}");
        seq = ms(&s["seq"]);
    }
    // Each track starts where the last one's end was on the timeline.
    let started = |s: &Value| ms(&s["server_time_ms"]) - ms(&s["position_ms"]);
    for w in starts.windows(2) {
        let gap = started(&w[1]) - started(&w[0]);
        assert!(
            (680..=720).contains(&gap),
            "{gap} ms between starts: {starts:?}"
        );
    }
    // It is listed like any live station.
    let list = server.get("/api/stations").await.json();
    let entry = list["stations"]
        .as_array()
        .and_then(|l| l.iter().find(|s| s["station"] == "auto"))
        .cloned()
        .unwrap_or_else(|| panic!("auto is listed: {list}"));
    assert_eq!(entry["live"], true, "{entry}");
    assert_eq!(entry["listeners"], 1, "{entry}");
}

/// Nobody listens, yet the station keeps its clock: the first listener
/// hears the moment the timeline says, mid-track.
#[tokio::test]
async fn a_listener_tuning_in_mid_track_hears_the_right_moment() {
    let media = library(&[("1.wav", 600), ("2.wav", 4_000)]);
    let server = server(&media, &["clock=library"], |_| {});
    let h = plays(&server, "clock", 2).await;
    assert_eq!(
        (&h[0]["track"], &h[1]["track"]),
        (&json!("2.wav"), &json!("1.wav")),
        "{h:?}"
    );
    let (one, two) = (ms(&h[1]["started_at_ms"]), ms(&h[0]["started_at_ms"]));
    assert!(
        (580..=620).contains(&(two - one)),
        "the second starts at the first's end: {h:?}"
    );

    tokio::time::sleep(Duration::from_millis(800)).await;
    let mut l = Client::connect(&server).await;
    tune(&mut l, "clock").await;
    let s = l.expect("sync").await;
    assert_eq!(s["cause"], "tune_in", "{s}");
    assert_eq!(s["track"], "2.wav", "{s}");
    let position = ms(&s["position_ms"]);
    let expected = ms(&s["server_time_ms"]) - two;
    assert!(
        (position - expected).abs() <= 50,
        "at {position} ms, the timeline says {expected}: {s}"
    );
    assert!((700..4_000).contains(&position), "mid-track: {s}");
}

/// What a listener gets until a frame of type `ty`, that frame last.
async fn until(l: &mut Client, ty: &str) -> Vec<Value> {
    let mut seen = Vec::new();
    loop {
        let v = l.recv().await;
        let done = v["type"] == ty;
        seen.push(v);
        if done {
            return seen;
        }
    }
}

/// The highest `seq` among `frames`' syncs.
fn top_seq(frames: &[Value], floor: i64) -> i64 {
    let mut seq = floor;
    for f in frames.iter().filter(|f| f["type"] == "sync") {
        assert!(ms(&f["seq"]) > seq, "seq only grows: {frames:?}");
        seq = ms(&f["seq"]);
    }
    seq
}

/// A broadcaster takes the station over (with its key), then stops: the
/// station comes back to its source at the next entry, never offline, and
/// `seq` only grows.
#[tokio::test]
async fn a_broadcaster_takes_over_and_the_station_comes_back_when_it_stops() {
    let ids = ["1.wav", "2.wav", "3.wav"];
    let media = library(&[(ids[0], 5_000), (ids[1], 5_000), (ids[2], 5_000)]);
    let keys = TempDir::new("onair-keys");
    keys.write("keys", "takeover the-key-1\n");
    let file = keys.path().join("keys");
    let server = server(&media, &["takeover=library"], |c| {
        c.conn.keys.keys_file = Some(file);
    });
    let mut l = Client::connect(&server).await;
    tune(&mut l, "takeover").await;
    let before = l.expect("sync").await;
    let mut seq = ms(&before["seq"]);

    let mut b = Client::connect(&server).await;
    b.expect_error(
        json!({"type":"start_broadcasting","station":"takeover"}),
        "unauthorized",
    )
    .await;
    b.send(json!({"type":"start_broadcasting","station":"takeover","key":"the-key-1"}))
        .await;
    assert_eq!(b.expect("broadcasting").await["station"], "takeover");
    let got = until(&mut l, "broadcaster_online").await;
    assert_eq!(got.last().expect("online")["reason"], "live", "{got:?}");
    // What the server played last before it was taken over.
    let playing = std::iter::once(&before)
        .chain(&got)
        .rfind(|f| f["type"] == "sync")
        .and_then(|s| s["track"].as_str())
        .expect("a track")
        .to_owned();
    seq = top_seq(&got, seq);
    let live_seq = b.update("takeover", "elsewhere.ogg", 1_234, true).await as i64;
    let got = until(&mut l, "sync").await;
    assert!(
        got.iter().all(|f| f["type"] != "broadcaster_offline"),
        "{got:?}"
    );
    let s = got.last().expect("a sync");
    assert_eq!(
        (&s["track"], ms(&s["seq"])),
        (&json!("elsewhere.ogg"), live_seq),
        "{s}"
    );
    seq = top_seq(&got, seq);

    b.send(json!({"type":"stop_broadcasting","station":"takeover"}))
        .await;
    b.expect("stopped").await;
    let got = until(&mut l, "broadcaster_online").await;
    assert!(
        got.iter().all(|f| f["type"] != "broadcaster_offline"),
        "never offline: {got:?}"
    );
    assert_eq!(got.last().expect("online")["reason"], "auto", "{got:?}");
    let back = l.expect("sync").await;
    let next = ids[(ids.iter().position(|i| *i == playing).expect("known") + 1) % 3];
    assert_eq!(
        back["track"], next,
        "the next entry after {playing}: {back}"
    );
    assert!(ms(&back["position_ms"]) < 300, "from its start: {back}");
    assert!(ms(&back["seq"]) > seq, "seq only grows: {back} after {seq}");

    // The history says who played what.
    let h = history(&server, "takeover").await;
    let by: Vec<(&str, &str)> = h
        .iter()
        .take(3)
        .map(|p| {
            (
                p["track"].as_str().unwrap_or(""),
                p["by"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        by,
        [
            (next, "auto"),
            ("elsewhere.ogg", "live"),
            (playing.as_str(), "auto")
        ]
    );
}

/// A broadcaster that took the station over and vanished: when its grace
/// period ends, the station plays its source again.
#[tokio::test]
async fn the_station_comes_back_when_a_broadcasters_grace_period_ends() {
    let media = library(&[("1.wav", 5_000), ("2.wav", 5_000)]);
    let server = server(&media, &["grace=library"], |c| {
        c.backend = BackendConfig::Local {
            grace: Duration::from_millis(800),
        };
    });
    let mut l = Client::connect(&server).await;
    tune(&mut l, "grace").await;
    let mut seq = ms(&l.expect("sync").await["seq"]);

    let mut b = Client::connect(&server).await;
    b.start("grace").await;
    assert_eq!(l.expect("broadcaster_online").await["reason"], "live");
    b.update("grace", "elsewhere.ogg", 0, true).await;
    drop(b);

    let got = until(&mut l, "broadcaster_online").await;
    assert!(
        got.iter().all(|f| f["type"] != "broadcaster_offline"),
        "never offline: {got:?}"
    );
    assert_eq!(got.last().expect("online")["reason"], "auto", "{got:?}");
    seq = top_seq(&got, seq);
    let back = l.expect("sync").await;
    assert!(
        back["track"] == "1.wav" || back["track"] == "2.wav",
        "{back}"
    );
    assert!(ms(&back["position_ms"]) < 300, "from its start: {back}");
    assert!(ms(&back["seq"]) > seq, "seq only grows: {back} after {seq}");

    // A listener who tunes in now is told who plays.
    let mut late = Client::connect(&server).await;
    let t = tune(&mut late, "grace").await;
    assert_eq!(t["reason"], "auto", "{t}");
}

#[tokio::test]
async fn history_lists_the_last_plays_newest_first() {
    let ids = ["a.wav", "b.wav", "c.wav"];
    let media = library(&[(ids[0], 400), (ids[1], 400), (ids[2], 400)]);
    let server = server(&media, &["hist=library"], |_| {});
    let h = plays(&server, "hist", 5).await;
    // Every play since the start is kept (fewer than 50), oldest last.
    for (i, p) in h.iter().rev().take(5).enumerate() {
        let id = ids[i % 3];
        assert_eq!(p["track"], id, "{h:?}");
        assert_eq!(p["title"], title_of(id), "{p}");
        assert_eq!(p["artist"], "On air", "{p}");
        assert_eq!(p["duration_ms"], 400, "{p}");
        assert_eq!(p["by"], "auto", "{p}");
    }
    for w in h.windows(2) {
        let gap = ms(&w[0]["started_at_ms"]) - ms(&w[1]["started_at_ms"]);
        assert!((380..=420).contains(&gap), "{gap}: {h:?}");
    }

    // A shell station has one too, by its broadcaster.
    let mut b = Client::connect(&server).await;
    b.start("shell").await;
    b.update("shell", "x.ogg", 0, true).await;
    b.update("shell", "x.ogg", 100, true).await; // a seek is no new play
    b.update("shell", "y.ogg", 0, true).await;
    let h = history(&server, "shell").await;
    let tracks: Vec<_> = h.iter().map(|p| (&p["track"], &p["by"])).collect();
    assert_eq!(
        tracks,
        [
            (&json!("y.ogg"), &json!("live")),
            (&json!("x.ogg"), &json!("live"))
        ]
    );

    // A station the server does not know is 404, a bad name 400.
    let r = server.get("/api/stations/nobody/history").await;
    assert_eq!(r.status, 404);
    assert!(r.text().contains("no station nobody"), "{}", r.text());
    assert_eq!(server.get("/api/stations/a%20b/history").await.status, 400);
    let r = request_post(&server, "/api/stations/hist/history").await;
    assert_eq!(r, 405);
}

async fn request_post(server: &Server, path: &str) -> u16 {
    crate::support::request(server.addr, "POST", path, &[], None)
        .await
        .status
}

/// `radio serve` with a SOURCE that cannot play: exit 2, saying why.
#[test]
fn a_source_with_nothing_to_play_is_a_usage_error() {
    let media = library(&[("music/1.wav", 500)]);
    media.write(
        "lists/bad.m3u",
        "#EXTM3U\nnot-here.ogg\n../music/missing.wav\n",
    );
    let bad_list = media.path().join("lists/bad.m3u");
    let bad_list = format!("x={}", bad_list.display());
    for (station, says) in [
        ("x=Nope", "no track with a known duration under Nope/"),
        ("x=missing.m3u", "cannot read the playlist missing.m3u"),
        (
            bad_list.as_str(),
            "line 2: \"not-here.ogg\": no library track",
        ),
        (
            "x=library\ny=library,shuffle\nx=music",
            "names the station x twice",
        ),
        ("bad name=library", "NAME=SOURCE"),
    ] {
        let out = Command::new(radio_bin())
            .args(["serve", "--listen", "127.0.0.1:0", "--media", media.arg()])
            .env("RADIO_STATIONS", station)
            .output()
            .expect("run radio serve");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{station}: {err}");
        assert!(err.contains(says), "{station}: {err}");
    }
}

/// SIGHUP reads a playlist again; an entry that does not resolve is logged
/// once, not at every pass.
#[cfg(unix)]
#[tokio::test]
async fn sighup_reads_the_playlist_again() {
    let media = library(&[("1.wav", 300), ("2.wav", 300)]);
    media.write("list.m3u", "1.wav\nmissing.wav\n");
    let list = media.path().join("list.m3u");
    let station = format!("hup={}", list.display());
    let mut server = Server::spawn_process(&["--media", media.arg(), "--station", &station]);
    plays(&server, "hup", 4).await;
    let h = history(&server, "hup").await;
    assert!(h.iter().all(|p| p["track"] == "1.wav"), "{h:?}");
    let warned = server.log().matches("\"missing.wav\"").count();
    assert_eq!(warned, 1, "{}", server.log());

    media.write("list.m3u", "2.wav\n");
    server.signal("HUP");
    eventually("the new playlist plays", async || {
        let h = history(&server, "hup").await;
        if h[0]["track"] == "2.wav" {
            Ok(())
        } else {
            Err(h)
        }
    })
    .await;
}

/// In cluster mode every node answers the same history: the plays are
/// kept in Redis, pushed where the owner's node stamps each update.
#[tokio::test]
async fn every_node_of_a_cluster_answers_the_same_history() {
    let redis = crate::support::Redis::start().await;
    let node = |id: &str| {
        Server::with(|c| {
            c.backend = BackendConfig::Redis(radio::RedisConfig {
                redis_url: redis.url(),
                node_id: id.to_owned(),
                lease: Duration::from_secs(5),
                grace: Duration::from_secs(10),
                ca_cert: None,
                password_file: None,
                sentinel_password_file: None,
                max_stations: 10_000,
            })
        })
    };
    let (a, b) = (node("a"), node("b"));
    for n in [&a, &b] {
        eventually("the node is ready", async || {
            let status = n.get("/readyz").await.status;
            if status == 200 { Ok(()) } else { Err(status) }
        })
        .await;
    }
    let mut caster = Client::connect(&a).await;
    caster.start("shared").await;
    caster.update("shared", "x.ogg", 0, true).await;
    caster.update("shared", "x.ogg", 200, true).await;
    caster.update("shared", "y.ogg", 0, true).await;
    let tracks = |h: Vec<Value>| -> Vec<(String, String)> {
        h.iter()
            .map(|p| (p["track"].to_string(), p["by"].to_string()))
            .collect()
    };
    let want = [
        ("\"y.ogg\"".to_owned(), "\"live\"".to_owned()),
        ("\"x.ogg\"".to_owned(), "\"live\"".to_owned()),
    ];
    assert_eq!(tracks(history(&a, "shared").await), want);
    assert_eq!(tracks(history(&b, "shared").await), want);
    assert_eq!(b.get("/api/stations/nobody/history").await.status, 404);
}

/// The server's own stations are not a client address's: with a share of
/// one station per address, two server-run stations play and a
/// broadcaster still gets its one.
#[tokio::test]
async fn server_run_stations_take_no_address_share() {
    let media = library(&[("1.wav", 2_000)]);
    let server = server(&media, &["first=library", "second=library"], |c| {
        c.max_stations_per_ip = 1;
    });
    let mut l = Client::connect(&server).await;
    for s in ["first", "second"] {
        assert_eq!(tune(&mut l, s).await["live"], true, "{s}");
    }
    let mut b = Client::connect(&server).await;
    b.start("mine").await;
    // Taking over a server-run station is a claim like any other.
    b.expect_error(
        json!({"type":"start_broadcasting","station":"first"}),
        "too_many_stations",
    )
    .await;
}
