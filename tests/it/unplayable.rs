//! A track listeners cannot play: `cannot_play` over real sockets (counted,
//! refused when it names another station, rate-limited like any request),
//! `track_failed` to the broadcaster once every listener has said so (and
//! only the listeners still tuned count), the metrics, and a real
//! `radio broadcast` that skips to its next track when told.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::cli::Broadcast;
use crate::support::{Client, Server, TempDir, tone_wav};

const QUIET: Duration = Duration::from_millis(300);

/// A broadcaster on `station` playing `track` (60 s), and `n` listeners.
async fn station(server: &Server, station: &str, track: &str, n: usize) -> (Client, Vec<Client>) {
    let mut b = Client::connect(server).await;
    b.start(station).await;
    b.send(json!({"type":"update","station":station,"track":track,
        "position_ms":0,"playing":true,"duration_ms":60_000,"ack":true}))
        .await;
    b.expect("ack").await;
    let mut listeners = Vec::new();
    for _ in 0..n {
        let mut l = Client::connect(server).await;
        l.tune(station).await;
        l.expect("sync").await;
        listeners.push(l);
    }
    (b, listeners)
}

/// Sends `cannot_play` and waits until the server handled it (a ping
/// sent after it is answered after it).
async fn cannot_play(l: &mut Client, station: &str, track: &str, reason: Option<&str>) {
    let mut msg = json!({"type":"cannot_play","station":station,"track":track});
    if let Some(r) = reason {
        msg["reason"] = json!(r);
    }
    l.send(msg).await;
    l.send(json!({"type":"ping","id":"after"})).await;
    let pong = l.expect("pong").await;
    assert_eq!(pong["id"], "after");
}

/// A heartbeat, its ack, and a `track_failed` if one follows it at once.
pub(crate) async fn heartbeat(b: &mut Client, station: &str) -> Option<Value> {
    b.send(json!({"type":"heartbeat","station":station,"position_ms":1_000,"ack":true}))
        .await;
    b.expect("ack").await;
    b.send(json!({"type":"ping","id":"hb"})).await;
    loop {
        let f = b.recv().await;
        match f["type"].as_str() {
            Some("track_failed") => return Some(f),
            Some("pong") if f["id"] == "hb" => return None,
            _ => {}
        }
    }
}

#[tokio::test]
async fn the_broadcaster_is_told_once_every_listener_failed() {
    let server = Server::start();
    let (mut b, mut ls) = station(&server, "s", "gone.mp3", 2).await;
    cannot_play(&mut ls[0], "s", "gone.mp3", Some("404 Not Found")).await;
    // Again from the same listener: still one of two.
    cannot_play(&mut ls[0], "s", "gone.mp3", None).await;
    assert_eq!(heartbeat(&mut b, "s").await, None, "one of two failed");
    cannot_play(&mut ls[1], "s", "gone.mp3", Some("decode error")).await;
    let told = heartbeat(&mut b, "s").await.expect("track_failed");
    assert_eq!(
        told,
        json!({"type":"track_failed","station":"s","track":"gone.mp3",
            "listeners":2,"reason":"404 Not Found"})
    );
    // Once.
    assert_eq!(heartbeat(&mut b, "s").await, None);
    // Listeners hear nothing of it, and are not answered.
    for l in &mut ls {
        l.expect_none("error", QUIET).await;
    }
    assert_eq!(server.metric("radio_cannot_play_total").await, 3.0);
    assert_eq!(server.metric("radio_tracks_failed_total").await, 1.0);
    assert_eq!(
        server
            .metric("radio_track_unplayable_reports{track=\"gone.mp3\"}")
            .await,
        2.0
    );
    assert_eq!(
        server
            .metric("radio_inbound_messages_total{type=\"cannot_play\"}")
            .await,
        3.0
    );
}

#[tokio::test]
async fn only_the_listeners_still_tuned_count() {
    let server = Server::start();
    let (mut b, mut ls) = station(&server, "s", "gone.mp3", 2).await;
    cannot_play(&mut ls[0], "s", "gone.mp3", None).await;
    // The one who reported leaves, another comes: two listeners, of whom
    // one (the newcomer, when it reports) has said so.
    let mut left = ls.remove(0);
    left.send(json!({"type":"tune_out"})).await;
    left.expect("tuned_out").await;
    let mut newcomer = Client::connect(&server).await;
    newcomer.tune("s").await;
    cannot_play(&mut newcomer, "s", "gone.mp3", None).await;
    assert_eq!(heartbeat(&mut b, "s").await, None, "one of the two now");
    cannot_play(&mut ls[0], "s", "gone.mp3", None).await;
    let told = heartbeat(&mut b, "s").await.expect("track_failed");
    assert_eq!(told["listeners"], 2);
    assert!(told.get("reason").is_none(), "{told}");

    // A report of a track the station no longer plays counts for nothing.
    b.send(json!({"type":"update","station":"s","track":"next.mp3",
        "position_ms":0,"playing":true,"ack":true}))
        .await;
    b.expect("ack").await;
    for l in [&mut newcomer, &mut ls[0]] {
        l.expect("sync").await;
        cannot_play(l, "s", "gone.mp3", None).await;
    }
    assert_eq!(heartbeat(&mut b, "s").await, None);
}

#[tokio::test]
async fn a_report_on_another_station_is_refused_and_floods_are_limited() {
    let server = Server::with(|c| c.conn.rate_limit = 5);
    let (_b, mut ls) = station(&server, "s", "t.mp3", 1).await;
    let l = &mut ls[0];
    let e = l
        .expect_error(
            json!({"type":"cannot_play","station":"other","track":"t.mp3"}),
            "bad_message",
        )
        .await;
    assert_eq!(e["request_type"], "cannot_play");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("not tuned to station other"),
        "{e}"
    );
    let long = "x".repeat(513);
    l.expect_error(
        json!({"type":"cannot_play","station":"s","track":"t.mp3","reason":long}),
        "bad_message",
    )
    .await;
    // Not tuned at all.
    let mut stranger = Client::connect(&server).await;
    stranger
        .expect_error(
            json!({"type":"cannot_play","station":"s","track":"t.mp3"}),
            "bad_message",
        )
        .await;
    // A flood of reports meets the rate limit like any other request.
    for _ in 0..12 {
        l.send(json!({"type":"cannot_play","station":"s","track":"t.mp3"}))
            .await;
    }
    let limited = l.expect("error").await;
    assert_eq!(limited["code"], "rate_limited", "{limited}");
}

/// A shell station whose playlist starts with a track no listener can
/// play moves on to the next when its listener says so, and says why; with
/// no other track it pauses, and says why.
#[tokio::test]
async fn radio_broadcast_skips_a_track_every_listener_failed() {
    let media = TempDir::new("skip-lib");
    media.write("good.wav", tone_wav(30, &[330.0], Some("Good"), None));
    let server = Server::with(|c| c.media.dir = Some(media.path().to_owned()));
    let lists = TempDir::new("skip-lists");
    lists.write(
        "list.m3u",
        "#EXTINF:60,Not here\nmissing.mp3\n#EXTINF:30,Good\ngood.wav\n",
    );
    let mut l = Client::connect(&server).await;
    l.tune("skip").await;
    let list = lists.path().join("list.m3u");
    let url = server.ws_url();
    let b = Broadcast::spawn(&[
        "--url",
        &url,
        "--station",
        "skip",
        "--free-tracks",
        "--heartbeat-interval",
        "200ms",
        "--playlist",
        list.to_str().expect("a UTF-8 path"),
    ]);
    let s = l.expect("sync").await;
    assert_eq!(s["track"], "missing.mp3");
    l.send(
        json!({"type":"cannot_play","station":"skip","track":"missing.mp3",
        "reason":"404"}),
    )
    .await;
    let said = b.err_line("could not play");
    assert!(
        said.contains("the station's one listener could not play \"missing.mp3\" (404); skipping to \"good.wav\""),
        "{said}"
    );
    loop {
        let s = l.expect("sync").await;
        if s["track"] == "good.wav" {
            assert_eq!(s["playing"], true);
            assert_eq!(s["cause"], "update");
            break;
        }
    }

    // Now the good track fails too: nothing is left, so the station pauses.
    l.send(json!({"type":"cannot_play","station":"skip","track":"good.wav"}))
        .await;
    let said = b.err_line("could not play \"good.wav\"");
    assert!(
        said.contains("paused: no track of the order can play"),
        "{said}"
    );
    loop {
        let s = l.expect("sync").await;
        if s["playing"] == false {
            assert_eq!(s["track"], "good.wav");
            break;
        }
    }
}

/// A station the server runs has no broadcaster to tell: once every
/// listener failed its track, it plays the next entry at once, long
/// before the failed one's end.
#[tokio::test]
async fn a_server_run_station_moves_on_when_every_listener_failed() {
    let media = crate::onair::library(&[("1.wav", 60_000), ("2.wav", 60_000)]);
    let server = Server::with(|c| {
        c.media.dir = Some(media.path().to_path_buf());
        c.stations = vec![radio::StationSpec::parse("auto=library").expect("a station spec")];
    });
    let mut ls = Vec::new();
    for _ in 0..2 {
        let mut l = Client::connect(&server).await;
        l.tune("auto").await;
        ls.push(l);
    }
    let first = ls[0].expect("sync").await;
    let track = first["track"].as_str().expect("a track").to_owned();
    ls[1].expect("sync").await;
    // One of two is not every listener: the track plays on.
    cannot_play(&mut ls[0], "auto", &track, Some("decode error")).await;
    let quiet = tokio::time::timeout(QUIET, ls[1].expect("sync")).await;
    assert!(quiet.is_err(), "no track change yet: {quiet:?}");
    // Sent bare: the helper's pong would skip the sync that follows.
    ls[1]
        .send(json!({"type":"cannot_play","station":"auto","track":track}))
        .await;
    for l in &mut ls {
        let next = l.expect("sync").await;
        assert_eq!(next["cause"], "update", "{next}");
        assert_ne!(next["track"], track.as_str(), "the next entry: {next}");
        assert!(
            crate::onair::ms(&next["position_ms"]) < 1_000,
            "from its start: {next}"
        );
    }
    assert!(
        server
            .log()
            .contains("every listener failed to play the track"),
        "said in the log"
    );
}
