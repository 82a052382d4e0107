//! What plays, as every client sees it: the server fills a `sync`'s
//! `title`, `artist` and `duration_ms` from its library where it stamps the
//! update, and never extrapolates a playing station past its track's end.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Client, Server};

/// The demo library's first track (`radio serve` without `--media`).
const DEMO: &str = "demo/1-a-minor-arpeggio.wav";

/// Sends an unacknowledged `update` built from `fields` (station "meta",
/// playing) and returns the listener's next `sync`.
async fn sync_after(b: &mut Client, l: &mut Client, fields: Value) -> Value {
    let mut update = json!({"type":"update","station":"meta","position_ms":0,"playing":true});
    for (k, v) in fields.as_object().expect("an object of fields") {
        update[k] = v.clone();
    }
    b.send(update).await;
    l.expect("sync").await
}

#[tokio::test]
async fn sync_carries_the_librarys_title_artist_and_duration() {
    let server = Server::start();
    let mut b = Client::connect(&server).await;
    let mut l = Client::connect(&server).await;
    b.start("meta").await;
    l.tune("meta").await;

    let s = sync_after(&mut b, &mut l, json!({"track": DEMO})).await;
    assert_eq!(s["title"], "A minor arpeggio");
    assert_eq!(s["artist"], "radio demo");
    assert_eq!(s["duration_ms"], 40_000, "the library's duration: {s}");

    // A heartbeat carries them on.
    b.send(json!({"type":"heartbeat","station":"meta","position_ms":1000}))
        .await;
    let s = l.expect("sync").await;
    assert_eq!(s["cause"], "heartbeat");
    assert_eq!(s["title"], "A minor arpeggio");
    assert_eq!(s["duration_ms"], 40_000);

    // So does a late listener's snapshot.
    let mut late = Client::connect(&server).await;
    late.tune("meta").await;
    let s = late.expect("sync").await;
    assert_eq!(s["cause"], "tune_in");
    assert_eq!(s["title"], "A minor arpeggio");
    assert_eq!(s["artist"], "radio demo");

    // The library's title wins over the broadcaster's; a duration the
    // broadcaster gives is kept.
    let s = sync_after(
        &mut b,
        &mut l,
        json!({"track": DEMO, "title": "Not this", "duration_ms": 39_990}),
    )
    .await;
    assert_eq!(s["title"], "A minor arpeggio");
    assert_eq!(s["duration_ms"], 39_990);

    // A track the library lacks: the broadcaster's title, or none at all.
    let s = sync_after(
        &mut b,
        &mut l,
        json!({"track": "elsewhere.mp3", "title": "Given"}),
    )
    .await;
    assert_eq!(s["title"], "Given");
    assert!(s.get("artist").is_none(), "{s}");
    assert!(s.get("duration_ms").is_none(), "{s}");
    let s = sync_after(&mut b, &mut l, json!({"track": "elsewhere.mp3"})).await;
    assert!(s.get("title").is_none(), "nothing to show: {s}");
}

#[tokio::test]
async fn a_playing_station_stops_at_its_tracks_end() {
    let server = Server::start();
    let mut b = Client::connect(&server).await;
    b.start("ending").await;
    // Half a second before the end of a 40 s track.
    b.update("ending", DEMO, 39_500, true).await;
    b.expect_none("error", Duration::from_millis(1_500)).await;

    let mut l = Client::connect(&server).await;
    l.tune("ending").await;
    let s = l.expect("sync").await;
    assert_eq!(
        s["position_ms"], 40_000,
        "the snapshot stops at the end: {s}"
    );
    assert_eq!(s["playing"], true);

    l.send(json!({"type":"list_stations"})).await;
    let list = l.expect("stations").await;
    let entry = &list["stations"][0];
    assert_eq!(entry["position_ms"], 40_000, "{list}");
    assert_eq!(entry["title"], "A minor arpeggio");
    assert_eq!(entry["duration_ms"], 40_000);
    let http = server.get("/api/stations").await.json();
    assert_eq!(http["stations"][0]["position_ms"], 40_000, "{http}");

    // Paused, or without a known duration, nothing is cut.
    b.update("ending", "free text", 39_500, true).await;
    b.expect_none("error", Duration::from_millis(700)).await;
    let mut l2 = Client::connect(&server).await;
    l2.tune("ending").await;
    let pos = l2.expect("sync").await["position_ms"].as_u64().unwrap();
    assert!(pos >= 40_100, "no duration, no end: {pos}");
}
