//! The next track, announced: every `sync` of a station that knows what
//! plays after its current track carries `next` (the library's id, title,
//! artist and duration), and the track that follows is that one. A station
//! the server runs knows it from its rotation (in order and shuffled, the
//! next pass decided ahead); `radio broadcast` from its queue (a playlist,
//! the library's order), sending its id in `update` and `heartbeat`, which
//! the server checks against its library. The players' side (fetching it
//! ahead, starting it on time) is in `browser` and `mpv`.

use radio::StationSpec;
use serde_json::{Value, json};

use crate::support::cli::Broadcast;
use crate::support::{Client, Server, TempDir, tone_wav};

/// A library of 1 s tones `1.wav` ... `n.wav`, titled "Tone N" by "Next".
fn library(n: usize) -> TempDir {
    let dir = TempDir::new("next");
    for i in 1..=n {
        let title = format!("Tone {i}");
        dir.write(
            &format!("{i}.wav"),
            tone_wav(1, &[220.0 * i as f32], Some(&title), Some("Next")),
        );
    }
    dir
}

fn serve(media: &TempDir, stations: &[&str]) -> Server {
    Server::with(|c| {
        c.media.dir = Some(media.path().to_owned());
        c.stations = stations
            .iter()
            .map(|s| StationSpec::parse(s).expect("a station spec"))
            .collect();
    })
}

/// The next `n` syncs that start a track (`update`s, the tune-in's first).
async fn starts(l: &mut Client, n: usize) -> Vec<Value> {
    let mut out = Vec::new();
    while out.len() < n {
        let s = l.expect("sync").await;
        if s["cause"] != "heartbeat" {
            out.push(s);
        }
    }
    out
}

/// `next` as the library describes `id` ("3.wav": "Tone 3" by "Next", 1 s).
fn described(id: &str) -> Value {
    let n = id.trim_end_matches(".wav");
    json!({"track": id, "title": format!("Tone {n}"), "artist": "Next", "duration_ms": 1000})
}

/// `next` without its `gain_db`, which comes once the server has
/// measured the track (a scan in the background).
fn ungained(next: &Value) -> Value {
    let mut v = next.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("gain_db");
    }
    v
}

/// Each start announces the track the next one plays, at the gain the
/// start of that track carries.
fn assert_each_announces_the_next(starts: &[Value]) {
    for w in starts.windows(2) {
        let told = &w[0]["next"];
        let id = w[1]["track"].as_str().expect("a track");
        assert_eq!(ungained(told), described(id), "{starts:#?}");
        if let (Some(a), Some(b)) = (told.get("gain_db"), w[1].get("gain_db")) {
            assert_eq!(a, b, "{starts:#?}");
        }
    }
}

#[tokio::test]
async fn a_server_run_station_announces_its_next_track_in_order_and_shuffled() {
    let media = library(3);
    let server = serve(&media, &["inorder=library", "mixed=library,shuffle"]);

    let mut l = Client::connect(&server).await;
    assert!(l.tune("inorder").await);
    let seen = starts(&mut l, 5).await;
    assert_each_announces_the_next(&seen);
    // In order, wrapping: the next of 3.wav is 1.wav.
    for s in &seen {
        let n: usize = s["track"]
            .as_str()
            .unwrap()
            .trim_end_matches(".wav")
            .parse()
            .unwrap();
        assert_eq!(s["next"]["track"], format!("{}.wav", n % 3 + 1), "{s}");
    }

    // Shuffled over two passes and more: the next pass's first track is
    // announced at the last of a pass, and is what plays.
    let mut l = Client::connect(&server).await;
    assert!(l.tune("mixed").await);
    let seen = starts(&mut l, 8).await;
    assert_each_announces_the_next(&seen);
    for w in seen.windows(2) {
        assert_ne!(w[0]["track"], w[1]["track"], "{seen:#?}");
    }
}

/// `radio broadcast --playlist` announces its playlist's next entry, the
/// library's order after a track played by name, and nothing with
/// `--stop-at-end`.
#[tokio::test]
async fn a_shell_station_announces_its_queues_next_track() {
    let media = library(3);
    let server = serve(&media, &[]);
    let lists = TempDir::new("next-lists");
    lists.write("list.m3u", "3.wav\n1.wav\n");
    let list = lists.path().join("list.m3u");
    let list = list.to_str().expect("a UTF-8 path");

    let mut l = Client::connect(&server).await;
    l.tune("shell").await;
    let url = server.ws_url();
    let b = Broadcast::spawn(&["--url", &url, "--station", "shell", "--playlist", list]);
    let seen = starts(&mut l, 4).await;
    assert_each_announces_the_next(&seen);
    let order: Vec<&str> = seen.iter().map(|s| s["track"].as_str().unwrap()).collect();
    assert_eq!(order, ["3.wav", "1.wav", "3.wav", "1.wav"]);
    drop(b);

    // In the library's order, after a track played by name; a heartbeat
    // carries it too.
    let mut l = Client::connect(&server).await;
    l.tune("bylib").await;
    let mut b = Broadcast::spawn(&[
        "--url",
        &url,
        "--station",
        "bylib",
        "--heartbeat-interval",
        "300ms",
    ]);
    b.say("play 2.wav");
    let s = l.expect("sync").await;
    assert_eq!(
        (&s["track"], &ungained(&s["next"])),
        (&json!("2.wav"), &described("3.wav"))
    );
    let beat = loop {
        let s = l.expect("sync").await;
        if s["cause"] == "heartbeat" {
            break s;
        }
    };
    assert_eq!(ungained(&beat["next"]), described("3.wav"), "{beat}");
    drop(b);

    let mut l = Client::connect(&server).await;
    l.tune("once").await;
    let mut b = Broadcast::spawn(&["--url", &url, "--station", "once", "--stop-at-end"]);
    b.say("play 2.wav");
    let s = l.expect("sync").await;
    assert_eq!(s["track"], "2.wav");
    assert!(s.get("next").is_none(), "nothing follows it: {s}");
}

/// The server announces only what its library has, described by the
/// library; a heartbeat keeps the last one unless it names another.
#[tokio::test]
async fn the_server_checks_next_against_its_library() {
    let media = library(3);
    let server = serve(&media, &[]);
    let mut l = Client::connect(&server).await;
    l.tune("checked").await;
    let mut b = Client::connect(&server).await;
    b.start("checked").await;
    let update = |track: &str, next: Value| {
        json!({"type":"update","station":"checked","track":track,"position_ms":0,
            "playing":true,"next":next})
    };
    let beat = |next: Option<&str>| {
        let mut v = json!({"type":"heartbeat","station":"checked","position_ms":100});
        if let Some(n) = next {
            v["next"] = json!(n);
        }
        v
    };

    b.send(update("mine.ogg", json!("2.wav"))).await;
    let s = l.expect("sync").await;
    assert_eq!(ungained(&s["next"]), described("2.wav"), "{s}");
    b.send(beat(None)).await;
    assert_eq!(
        ungained(&l.expect("sync").await["next"]),
        described("2.wav")
    );
    b.send(beat(Some("3.wav"))).await;
    assert_eq!(
        ungained(&l.expect("sync").await["next"]),
        described("3.wav")
    );
    // Not in the library: nothing a player could fetch, so nothing said.
    b.send(beat(Some("elsewhere.ogg"))).await;
    assert!(l.expect("sync").await.get("next").is_none());
    b.send(update("1.wav", json!("nowhere.ogg"))).await;
    assert!(l.expect("sync").await.get("next").is_none());
    // Too long is refused, like a track.
    let long = "x".repeat(600);
    let e = b
        .expect_error(update("1.wav", json!(long)), "bad_message")
        .await;
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .starts_with("next is 600 bytes"),
        "{e}"
    );
    // A late listener's tune-in sync carries it.
    b.send(update("1.wav", json!("2.wav"))).await;
    l.expect("sync").await;
    let mut late = Client::connect(&server).await;
    late.tune("checked").await;
    let s = late.expect("sync").await;
    assert_eq!(
        (&s["cause"], &ungained(&s["next"])),
        (&json!("tune_in"), &described("2.wav"))
    );
}
