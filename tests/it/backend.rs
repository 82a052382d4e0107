//! The backend contract (src/server/backend/mod.rs), checked against every
//! backend: each test is written once, as an `async fn` taking the
//! [`Backend`] to run on, and [`suite!`] runs it once per backend, as
//! `backend::local::NAME` and `backend::redis::NAME` (ripgrep's `rgtest!`
//! reruns its tests per regex engine the same way).
//!
//! What is checked is what a client sees over a real WebSocket of a single
//! server: claiming a station, resuming it within its grace period, the
//! grace period's end, `not_owner` and `not_live`, `seq` that only grows,
//! heartbeats, stopping, the station cap. What only several nodes show
//! (a node dying, Redis restarting) is in `cluster.rs`.
//!
//! A new backend: a [`Backend`] variant, its arm in [`Backend::serve_with`]
//! (start what it needs, configure the server for it), and one line in the
//! backend list of the [`suite!`] call at the end of this file.

use std::ops::Deref;
use std::time::Duration;

use radio::{BackendConfig, RedisConfig, ServerConfig};
use serde_json::{Value, json};

use crate::support::{Client, Redis, Server, eventually};

/// A backend the suite runs on.
#[derive(Clone, Copy, Debug)]
enum Backend {
    /// In memory, the default.
    Local,
    /// Through a real redis-server of its own (one node).
    Redis,
}

/// A grace period no test waits out.
const LONG_GRACE: Duration = Duration::from_secs(30);

/// A grace period tests wait out.
const SHORT_GRACE: Duration = Duration::from_millis(300);

/// The Redis backend's lease: short, so that the end of a grace period is
/// noticed soon (a node reaps every fifth of a lease), yet long enough that
/// a busy machine never lets a live station's lease lapse.
const LEASE: Duration = Duration::from_secs(2);

/// A server on one backend, with what that backend needs running.
struct Bench {
    server: Server,
    /// The Redis backend's redis-server; dropped after the server.
    _redis: Option<Redis>,
}

impl Deref for Bench {
    type Target = Server;

    fn deref(&self) -> &Server {
        &self.server
    }
}

impl Backend {
    /// A ready server on this backend whose broadcasters may resume within
    /// `grace`.
    async fn serve(self, grace: Duration) -> Bench {
        self.serve_with(grace, |_| {}).await
    }

    /// [`Backend::serve`], with the server's configuration changed by `edit`.
    async fn serve_with(self, grace: Duration, edit: impl FnOnce(&mut ServerConfig)) -> Bench {
        let (backend, redis) = match self {
            Backend::Local => (BackendConfig::Local { grace }, None),
            Backend::Redis => {
                let redis = Redis::start().await;
                let config = BackendConfig::Redis(RedisConfig {
                    redis_url: redis.url(),
                    node_id: "suite".into(),
                    lease: LEASE,
                    grace,
                    ca_cert: None,
                    password_file: None,
                    sentinel_password_file: None,
                    max_stations: 10_000,
                });
                (config, Some(redis))
            }
        };
        let server = Server::with(|c| {
            c.backend = backend;
            edit(c);
        });
        eventually("/readyz answers 200", async || {
            let status = server.get("/readyz").await.status;
            if status == 200 { Ok(()) } else { Err(status) }
        })
        .await;
        Bench {
            server,
            _redis: redis,
        }
    }
}

/// `start_broadcasting` with `fields` added; returns the reply.
async fn claim(c: &mut Client, station: &str, fields: Value) -> Value {
    let mut request = json!({"type":"start_broadcasting","station":station});
    if let (Some(request), Some(fields)) = (request.as_object_mut(), fields.as_object()) {
        request.extend(fields.clone());
    }
    c.send(request).await;
    c.recv().await
}

/// Waits until the station is in its grace period: a claim without its
/// token is refused with a message saying it may be resumed.
async fn wait_in_grace(c: &mut Client, station: &str) {
    eventually(
        &format!("{station} waits for its resume token"),
        async || {
            let r = claim(c, station, json!({})).await;
            assert_eq!(r["code"], "station_taken", "{r}");
            let message = r["message"].as_str().expect("an error message");
            if message.contains("resume") {
                Ok(())
            } else {
                Err(r)
            }
        },
    )
    .await;
}

/// The stations `list_stations` names.
async fn listed(c: &mut Client) -> Vec<String> {
    c.send(json!({"type":"list_stations"})).await;
    let list = c.expect("stations").await;
    let stations = list["stations"].as_array().expect("a list of stations");
    stations
        .iter()
        .map(|s| s["station"].as_str().expect("a station name").to_owned())
        .collect()
}

/// `update`, `heartbeat` and `stop_broadcasting` of `station` from `c`,
/// each refused with `code`.
async fn refused_to_broadcast(c: &mut Client, station: &str, code: &str) {
    for request in [
        json!({"type":"update","station":station,"track":"t","position_ms":0,"playing":true}),
        json!({"type":"heartbeat","station":station,"position_ms":0}),
        json!({"type":"stop_broadcasting","station":station}),
    ] {
        c.expect_error(request, code).await;
    }
}

/// An acknowledged `heartbeat`; returns its seq.
async fn heartbeat(c: &mut Client, station: &str, position_ms: u64) -> u64 {
    c.send(json!({"type":"heartbeat","station":station,"position_ms":position_ms,"ack":true}))
        .await;
    let ack = c.expect("ack").await;
    ack["seq"].as_u64().expect("ack has a seq")
}

/// `stop_broadcasting` that must succeed.
async fn stop(c: &mut Client, station: &str) {
    c.send(json!({"type":"stop_broadcasting","station":station}))
        .await;
    assert_eq!(c.expect("stopped").await["station"], station);
}

/// A free station is claimed with a resume token, which its owner keeps
/// when it claims it again; nobody else may take it, with or without a
/// wrong token; listeners learn it went live.
async fn claim_takes_a_free_station_once(backend: Backend) {
    let server = backend.serve(LONG_GRACE).await;
    let mut l = Client::connect(&server).await;
    assert!(!l.tune("s").await, "not live before the claim");
    let mut b = Client::connect(&server).await;
    let token = b.start("s").await;
    assert!(!token.is_empty());
    l.expect("broadcaster_online").await;
    assert_eq!(b.start("s").await, token, "claimed again by its owner");
    let mut other = Client::connect(&server).await;
    for fields in [json!({}), json!({"resume_token":"not-the-token"})] {
        let r = claim(&mut other, "s", fields).await;
        assert_eq!(r["code"], "station_taken", "{r}");
    }
    let mut late = Client::connect(&server).await;
    assert!(late.tune("s").await, "live for a listener tuning in now");
    // Another station is still free.
    other.start("t").await;
}

async fn tune_in_to_a_playing_station_gets_its_state_at_once(backend: Backend) {
    let server = backend.serve(LONG_GRACE).await;
    let mut b = Client::connect(&server).await;
    b.start("rock").await;
    let sent = std::time::Instant::now();
    b.send(
        json!({"type":"update","station":"rock","track":"x.ogg","position_ms":5000,
        "playing":true,"duration_ms":200000}),
    )
    .await;
    // Let the state age a little so the extrapolation shows (the update was
    // not acknowledged, so an error would come now).
    b.expect_none("error", Duration::from_millis(300)).await;
    let mut l = Client::connect(&server).await;
    assert!(l.tune("rock").await);
    let s = l.recv().await;
    assert_eq!(s["type"], "sync");
    assert_eq!(s["cause"], "tune_in");
    assert_eq!(s["track"], "x.ogg");
    assert_eq!(s["duration_ms"], 200000);
    // Extrapolated from when the server took the update (some time after
    // it was sent, on a busy machine) to the tune-in: past 5000, and not
    // past the time that has gone by since the send (give or take the
    // whole milliseconds both clocks are cut to).
    let pos = s["position_ms"].as_u64().unwrap();
    let most = 5000 + u64::try_from(sent.elapsed().as_millis()).unwrap() + 2;
    assert!(
        pos > 5000 && pos <= most,
        "position extrapolated to now: got {pos}, want 5001..={most}"
    );
}

async fn list_stations_and_http_stations_count_listeners(backend: Backend) {
    let server = backend.serve(LONG_GRACE).await;
    let mut b = Client::connect(&server).await;
    b.start("beta").await;
    b.start("alpha").await;
    b.update("alpha", "song", 1000, true).await;
    let mut l1 = Client::connect(&server).await;
    let mut l2 = Client::connect(&server).await;
    l1.tune("alpha").await;
    l2.tune("alpha").await;
    l1.send(json!({"type":"list_stations"})).await;
    let list = l1.expect("stations").await;
    let stations = list["stations"].as_array().unwrap();
    assert_eq!(stations.len(), 2, "{list}");
    assert_eq!(stations[0]["station"], "alpha");
    assert_eq!(stations[0]["listeners"], 2);
    assert_eq!(stations[0]["track"], "song");
    assert_eq!(stations[0]["playing"], true);
    assert!(stations[0]["position_ms"].as_u64().unwrap() >= 1000);
    assert_eq!(stations[1]["station"], "beta");
    assert_eq!(stations[1]["listeners"], 0);
    let r = server.get("/api/stations").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["stations"][0]["listeners"], 2);
    drop(l2);
    eventually("the listener count falls on disconnect", async || {
        let list = l1.list_stations().await;
        let listeners = &list["stations"][0]["listeners"];
        if listeners == 1 { Ok(()) } else { Err(list) }
    })
    .await;
}

/// A broadcaster gone is waited for: only its resume token takes the
/// station, which it gets back as it was (the same token, its track, the
/// next `seq`), and its listeners notice nothing.
async fn resume_within_grace_keeps_the_token_the_track_and_seq(backend: Backend) {
    let server = backend.serve(LONG_GRACE).await;
    let mut l = Client::connect(&server).await;
    l.tune("g").await;
    let mut b = Client::connect(&server).await;
    let token = b.start("g").await;
    l.expect("broadcaster_online").await;
    let s1 = b.update("g", "t.mp3", 0, true).await;
    assert_eq!(l.expect("sync").await["seq"], s1);
    drop(b);
    let mut thief = Client::connect(&server).await;
    wait_in_grace(&mut thief, "g").await;
    let r = claim(&mut thief, "g", json!({"resume_token":"wrong"})).await;
    assert_eq!(r["code"], "station_taken", "{r}");
    // Still live meanwhile, and still listed.
    assert_eq!(listed(&mut thief).await, ["g"]);
    let mut b2 = Client::connect(&server).await;
    let r = claim(&mut b2, "g", json!({"resume_token":token})).await;
    assert_eq!(r["type"], "broadcasting", "{r}");
    assert_eq!(r["resume_token"], token.as_str());
    // The track is the station's: a heartbeat may come first.
    let s2 = heartbeat(&mut b2, "g", 500).await;
    assert_eq!(s2, s1 + 1);
    let f = l.recv().await;
    assert_eq!(f["type"], "sync", "no offline notice on resume: {f}");
    assert_eq!(f["seq"], s2);
    assert_eq!(f["track"], "t.mp3");
    assert_eq!(f["cause"], "heartbeat");
    let s3 = b2.update("g", "u.mp3", 0, true).await;
    assert_eq!(s3, s2 + 1);
    assert_eq!(l.recv().await["seq"], s3);
}

/// Broadcasters that do not come back: once the grace period is over, a
/// station's listeners are told `broadcaster_offline{reason:"disconnected"}`;
/// a station nobody listened to is over all the same (unlisted, not live to
/// `update` or to a listener tuning in); neither token resumes anything,
/// both stations are anyone's, and `seq` goes on growing for those who
/// stayed tuned.
async fn grace_expiry_takes_stations_offline_listened_to_or_not(backend: Backend) {
    let server = backend.serve(SHORT_GRACE).await;
    let mut l = Client::connect(&server).await;
    l.tune("heard").await;
    let mut b = Client::connect(&server).await;
    let heard = b.start("heard").await;
    let gone = b.start("gone").await;
    let s1 = b.update("heard", "t.mp3", 0, true).await;
    b.update("gone", "t.mp3", 0, true).await;
    assert_eq!(l.expect("sync").await["seq"], s1);
    drop(b);
    let off = l.expect("broadcaster_offline").await;
    assert_eq!(off["reason"], "disconnected", "{off}");
    assert_eq!(off["station"], "heard");
    let mut c = Client::connect(&server).await;
    eventually("a stranger's update of the unheard station is not_live", async || {
        c.send(json!({"type":"update","station":"gone","track":"t","position_ms":0,"playing":true}))
            .await;
        let e = c.expect("error").await;
        if e["code"] == "not_live" { Ok(()) } else { Err(e) }
    })
    .await;
    eventually("the stations leave the list", async || {
        let names = listed(&mut c).await;
        if names.is_empty() { Ok(()) } else { Err(names) }
    })
    .await;
    let mut late = Client::connect(&server).await;
    eventually("a listener finds the unheard station offline", async || {
        if late.tune("gone").await {
            Err("live")
        } else {
            Ok(())
        }
    })
    .await;
    let mut b2 = Client::connect(&server).await;
    for (station, token) in [("heard", &heard), ("gone", &gone)] {
        let r = claim(&mut b2, station, json!({"resume_token":token})).await;
        assert_eq!(r["type"], "broadcasting", "{r}");
        assert_ne!(r["resume_token"], token.as_str(), "nothing left to resume");
    }
    l.expect("broadcaster_online").await;
    late.expect("broadcaster_online").await;
    let s2 = b2.update("heard", "u.mp3", 0, true).await;
    assert!(s2 > s1, "{s1} then {s2}");
    assert_eq!(l.expect("sync").await["seq"], s2);
}

/// `not_live` for a station nobody broadcasts (never, or stopped);
/// `not_owner` for one somebody else does, also while in its grace period.
async fn not_owner_and_not_live(backend: Backend) {
    let server = backend.serve(LONG_GRACE).await;
    let mut stranger = Client::connect(&server).await;
    refused_to_broadcast(&mut stranger, "s", "not_live").await;
    let mut b = Client::connect(&server).await;
    b.start("s").await;
    b.update("s", "t.mp3", 0, true).await;
    refused_to_broadcast(&mut stranger, "s", "not_owner").await;
    drop(b);
    wait_in_grace(&mut stranger, "s").await;
    refused_to_broadcast(&mut stranger, "s", "not_owner").await;
    let mut b2 = Client::connect(&server).await;
    b2.start("t").await;
    stop(&mut b2, "t").await;
    refused_to_broadcast(&mut stranger, "t", "not_live").await;
    // Its former owner too: stopping let go of it.
    refused_to_broadcast(&mut b2, "t", "not_live").await;
}

/// A heartbeat repeats the station's track at a new position, so before
/// the broadcaster's first update there is none to repeat, even when the
/// station had one before a stop.
async fn heartbeat_before_an_update_is_bad_message(backend: Backend) {
    let server = backend.serve(LONG_GRACE).await;
    let mut l = Client::connect(&server).await;
    l.tune("hb").await;
    let mut b = Client::connect(&server).await;
    b.start("hb").await;
    let hb = json!({"type":"heartbeat","station":"hb","position_ms":0});
    let e = b.expect_error(hb.clone(), "bad_message").await;
    assert!(e["message"].as_str().unwrap().contains("update"), "{e}");
    let seq = b.update("hb", "t.mp3", 0, true).await;
    assert_eq!(heartbeat(&mut b, "hb", 100).await, seq + 1);
    stop(&mut b, "hb").await;
    l.expect("broadcaster_offline").await;
    // Started again (by anyone): no track until its update.
    b.start("hb").await;
    b.expect_error(hb, "bad_message").await;
}

async fn heartbeat_keeps_the_track_and_acks(backend: Backend) {
    let server = backend.serve(LONG_GRACE).await;
    let mut b = Client::connect(&server).await;
    let mut l = Client::connect(&server).await;
    b.start("hb").await;
    l.tune("hb").await;
    let first = b.update("hb", "song.flac", 0, true).await;
    l.expect("sync").await;
    b.send(json!({"type":"heartbeat","station":"hb","position_ms":2000,"ack":true}))
        .await;
    let ack = b.expect("ack").await;
    assert_eq!(ack["station"], "hb");
    assert_eq!(ack["seq"].as_u64().unwrap(), first + 1);
    let s = l.expect("sync").await;
    assert_eq!(s["cause"], "heartbeat");
    assert_eq!(s["track"], "song.flac");
    assert_eq!(s["position_ms"], 2000);
    assert_eq!(s["playing"], true);
    // A heartbeat may pause too.
    b.send(json!({"type":"heartbeat","station":"hb","position_ms":2500,"playing":false}))
        .await;
    let s = l.expect("sync").await;
    assert_eq!(s["playing"], false);
    assert_eq!(s["position_ms"], 2500);
}

/// Stopping frees the station at once (no grace period: its token resumes
/// nothing) and tells its listeners why.
async fn stop_frees_the_station_and_tells_listeners(backend: Backend) {
    let server = backend.serve(LONG_GRACE).await;
    let mut b = Client::connect(&server).await;
    let mut l = Client::connect(&server).await;
    let token = b.start("st").await;
    l.tune("st").await;
    let seq = b.update("st", "t", 0, true).await;
    l.expect("sync").await;
    stop(&mut b, "st").await;
    let off = l.expect("broadcaster_offline").await;
    assert_eq!(off["reason"], "stopped");
    assert!(!Client::connect(&server).await.tune("st").await);
    // Free now: another connection may take it; seq keeps growing for the
    // listener who stayed tuned.
    let mut b2 = Client::connect(&server).await;
    let r = claim(&mut b2, "st", json!({"resume_token":token})).await;
    assert_eq!(r["type"], "broadcasting", "{r}");
    assert_ne!(r["resume_token"], token.as_str(), "nothing left to resume");
    l.expect("broadcaster_online").await;
    let seq2 = b2.update("st", "u", 0, true).await;
    assert!(seq2 > seq);
    assert_eq!(l.expect("sync").await["seq"], seq2);
}

/// A listener who stays tuned while the station stops and starts again,
/// by one broadcaster or another, sees `seq` only grow.
async fn seq_only_grows_across_stop_and_restart_while_tuned(backend: Backend) {
    let server = backend.serve(LONG_GRACE).await;
    let mut l = Client::connect(&server).await;
    l.tune("up").await;
    let mut seen = Vec::new();
    for round in 0..3u64 {
        let mut b = Client::connect(&server).await;
        b.start("up").await;
        l.expect("broadcaster_online").await;
        let sent = [
            b.update("up", &format!("r{round}.mp3"), 0, true).await,
            heartbeat(&mut b, "up", 100).await,
            b.update("up", &format!("r{round}b.mp3"), 0, true).await,
        ];
        // States sent in a row may conflate: the newest always arrives.
        loop {
            let s = l.expect("sync").await;
            let seq = s["seq"].as_u64().expect("a seq");
            assert!(sent.contains(&seq), "{s} is none of {sent:?}");
            seen.push(seq);
            if seq == sent[2] {
                break;
            }
        }
        stop(&mut b, "up").await;
        l.expect("broadcaster_offline").await;
    }
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "seq went back or repeated: {seen:?}"
    );
}

/// Connect, claim, drop, repeat made thousands of stations in no time,
/// each squatted for the grace period; so `--max-stations` bounds live and
/// grace stations together.
async fn max_stations_bounds_live_and_grace_stations(backend: Backend) {
    let server = backend.serve_with(LONG_GRACE, |c| c.max_stations = 3).await;
    let mut a = Client::connect(&server).await;
    a.start("one").await;
    a.start("two").await;
    {
        let mut gone = Client::connect(&server).await;
        gone.start("three").await;
        gone.update("three", "a.ogg", 0, true).await;
    }
    // "three" is in its grace period (it had an update): still counted.
    let mut b = Client::connect(&server).await;
    let e = b
        .expect_error(
            json!({"type":"start_broadcasting","station":"four"}),
            "unsupported",
        )
        .await;
    assert!(
        e["message"].as_str().unwrap().contains("--max-stations"),
        "{e}"
    );
    // Stopping one makes room.
    stop(&mut a, "one").await;
    b.start("four").await;
}

/// Runs every test of the list on every backend of the list: a module per
/// backend, a `#[tokio::test]` per test in it.
macro_rules! suite {
    (backends: [$($backend:ident => $kind:expr),* $(,)?], tests: $tests:tt $(,)?) => {
        $( suite!(@on $backend, $kind, $tests); )*
    };
    (@on $backend:ident, $kind:expr, [$($test:ident),* $(,)?]) => {
        mod $backend {
            use super::*;
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test($kind).await;
                }
            )*
        }
    };
}

suite! {
    backends: [
        local => Backend::Local,
        redis => Backend::Redis,
    ],
    tests: [
        claim_takes_a_free_station_once,
        tune_in_to_a_playing_station_gets_its_state_at_once,
        list_stations_and_http_stations_count_listeners,
        resume_within_grace_keeps_the_token_the_track_and_seq,
        grace_expiry_takes_stations_offline_listened_to_or_not,
        not_owner_and_not_live,
        heartbeat_before_an_update_is_bad_message,
        heartbeat_keeps_the_track_and_acks,
        stop_frees_the_station_and_tells_listeners,
        seq_only_grows_across_stop_and_restart_while_tuned,
        max_stations_bounds_live_and_grace_stations,
    ],
}
