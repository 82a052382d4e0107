//! Server-run stations in cluster mode: every node names the station, the
//! nodes contend for its lease and exactly one drives it (one publish per
//! track change); when the driving node is killed another takes over
//! within the lease, where the timeline is; a broadcaster on any node
//! takes the station over and gives it back. Real redis-server, real
//! nodes (processes where one is killed).

use std::time::Duration;

use radio::{BackendConfig, RedisConfig, StationSpec};
use serde_json::{Value, json};

use crate::onair::{history, library, ms};
use crate::support::{Client, Redis, Server, TempDir, eventually};

const LEASE: Duration = Duration::from_secs(1);

/// A node of `redis` running `auto=library` over `media`, as a process.
fn node_process(redis: &Redis, id: &str, media: &TempDir) -> Server {
    Server::spawn_process(&[
        "--redis",
        &redis.url(),
        "--node-id",
        id,
        "--lease",
        "1000ms",
        "--media",
        media.arg(),
        "--station",
        "auto=library",
    ])
}

/// A node of `redis` running `auto=library` over `media`, in this process.
fn node(redis: &Redis, id: &str, media: &TempDir, grace: Duration) -> Server {
    Server::with(|c| {
        c.stations = vec![StationSpec::parse("auto=library").expect("a station spec")];
        c.media.dir = Some(media.path().to_path_buf());
        c.backend = BackendConfig::Redis(RedisConfig {
            redis_url: redis.url(),
            node_id: id.to_owned(),
            lease: LEASE,
            grace,
            ca_cert: None,
            password_file: None,
            sentinel_password_file: None,
            max_stations: 10_000,
        });
    })
}

/// A node of `redis` that runs no station, in this process.
fn plain_node(redis: &Redis, id: &str) -> Server {
    Server::with(|c| {
        c.backend = BackendConfig::Redis(RedisConfig {
            redis_url: redis.url(),
            node_id: id.to_owned(),
            lease: LEASE,
            grace: Duration::from_secs(10),
            ca_cert: None,
            password_file: None,
            sentinel_password_file: None,
            max_stations: 10_000,
        });
    })
}

async fn ready(nodes: &[&Server]) {
    for n in nodes {
        eventually("the node is ready", async || {
            let status = n.get("/readyz").await.status;
            if status == 200 { Ok(()) } else { Err(status) }
        })
        .await;
    }
}

/// How many stations each node says it drives (`radio_stations`).
async fn driving(nodes: &[&Server]) -> Vec<f64> {
    let mut out = Vec::new();
    for n in nodes {
        out.push(n.metric("radio_stations ").await);
    }
    out
}

/// Waits until exactly one of `nodes` drives the station; gives its index.
async fn the_driver(nodes: &[&Server]) -> usize {
    eventually("exactly one node drives the station", async || {
        let d = driving(nodes).await;
        match d.iter().filter(|&&n| n == 1.0).count() {
            1 if d.iter().all(|&n| n == 0.0 || n == 1.0) => {
                Ok(d.iter().position(|&n| n == 1.0).unwrap_or(0))
            }
            _ => Err(d),
        }
    })
    .await
}

/// Waits until the station has started its first track (its history is
/// 404 until then).
async fn on_air(server: &Server) {
    eventually("the station plays", async || {
        let r = server.get("/api/stations/auto/history").await;
        let n = (r.status == 200).then(|| r.json()["tracks"].as_array().map_or(0, Vec::len));
        if n.unwrap_or(0) > 0 {
            Ok(())
        } else {
            Err(r.status)
        }
    })
    .await;
}

/// When a sync's track started, in server time.
fn started(s: &Value) -> i64 {
    ms(&s["server_time_ms"]) - ms(&s["position_ms"])
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

fn no_offline(frames: &[Value]) {
    assert!(
        frames.iter().all(|f| f["type"] != "broadcaster_offline"),
        "never offline: {frames:?}"
    );
}

/// Three nodes name the station; the first drives it, alone. Killed, its
/// station goes on from another node within the lease: the same track at
/// the place its timeline says, `seq` going on, one play in the history.
#[tokio::test]
async fn another_node_goes_on_where_the_killed_driver_was() {
    let media = library(&[("1.wav", 1_500), ("2.wav", 1_500), ("3.wav", 6_000)]);
    let redis = Redis::start().await;
    let mut a = node_process(&redis, "a", &media);
    ready(&[&a]).await;
    on_air(&a).await;
    let b = node_process(&redis, "b", &media);
    let c = node_process(&redis, "c", &media);
    ready(&[&b, &c]).await;
    assert_eq!(the_driver(&[&a, &b, &c]).await, 0, "the first node drives");

    let mut l = Client::connect(&c).await;
    l.send(json!({"type":"tune_in","station":"auto"})).await;
    let t = l.expect("tuned").await;
    assert_eq!(
        (&t["live"], &t["reason"]),
        (&json!(true), &json!("auto")),
        "{t}"
    );

    // Every state the listener gets until the long track is early enough
    // to kill its driver in the middle of it.
    let mut syncs: Vec<Value> = Vec::new();
    let long = loop {
        let f = l.recv().await;
        assert_ne!(f["type"], "broadcaster_offline", "{f}");
        if f["type"] != "sync" {
            continue;
        }
        syncs.push(f.clone());
        let at = ms(&f["position_ms"]) + radio::protocol::now_ms() - ms(&f["server_time_ms"]);
        if f["track"] == "3.wav" && at < 2_500 {
            break f;
        }
    };
    tokio::time::sleep(Duration::from_millis(700)).await;
    let killed_at = radio::protocol::now_ms();
    a.kill();

    // The next state continues the same track where its timeline is, from
    // another node, within the lease (and a tick), without a notice.
    let got = until(&mut l, "sync").await;
    assert!(
        got.iter().all(|f| f["type"] == "sync"),
        "a silent failover: {got:?}"
    );
    let on = got.last().expect("a sync").clone();
    assert_eq!(
        (&on["track"], &on["cause"]),
        (&json!("3.wav"), &json!("update")),
        "{on}"
    );
    let jump = started(&on) - started(&long);
    assert!(
        jump.abs() <= 1_000,
        "the position jumped {jump} ms: {long} then {on}"
    );
    assert!(
        jump.abs() <= 50,
        "the timeline is kept to the ms: {jump} ms"
    );
    let took = ms(&on["server_time_ms"]) - killed_at;
    assert!(
        took <= 2_500,
        "taken over {took} ms after the kill (lease 1 s)"
    );
    assert!(ms(&on["seq"]) > ms(&long["seq"]), "{long} then {on}");
    syncs.push(on.clone());
    let driver = the_driver(&[&b, &c]).await;

    // The next track starts at the long one's end on the timeline.
    let next = l.expect("sync").await;
    assert_eq!(next["track"], "1.wav", "{next}");
    let gap = started(&next) - started(&long);
    assert!(
        (5_900..=6_100).contains(&gap),
        "{gap} ms: {long} then {next}"
    );
    syncs.push(next);

    // One publish per state: seq counts every update, with no gap (a
    // second driver would have made one) and never back.
    let updates: Vec<&Value> = syncs.iter().filter(|s| s["cause"] == "update").collect();
    for w in updates.windows(2) {
        assert_eq!(ms(&w[1]["seq"]), ms(&w[0]["seq"]) + 1, "{updates:?}");
    }
    // Every play once in the history, each at its predecessor's end, the
    // same on every node.
    let h = history(&b, "auto").await;
    assert_eq!(h, history(&c, "auto").await);
    for w in h.windows(2) {
        let (newer, older) = (&w[0], &w[1]);
        let gap = ms(&newer["started_at_ms"]) - ms(&older["started_at_ms"]);
        let length = ms(&older["duration_ms"]);
        assert!(
            (length - 100..=length + 100).contains(&gap),
            "{gap} ms after a {length} ms track: {h:?}"
        );
        assert_eq!(newer["by"], "auto");
    }
    let long_plays = h
        .iter()
        .filter(|p| (ms(&p["started_at_ms"]) - started(&long)).abs() <= 50)
        .count();
    assert_eq!(long_plays, 1, "{h:?}");
    assert!(driver < 2);
}

/// A broadcaster on the node that does not drive takes the station over
/// (listeners on both nodes are told, and only its states go out), stops,
/// and the station comes back at the entry after the server's last; a
/// broadcaster that vanishes gives it back at the end of its grace period.
#[tokio::test]
async fn a_broadcaster_on_any_node_takes_over_and_the_station_comes_back() {
    let ids = ["1.wav", "2.wav", "3.wav"];
    let media = library(&[(ids[0], 1_500), (ids[1], 1_500), (ids[2], 1_500)]);
    let redis = Redis::start().await;
    let grace = Duration::from_secs(1);
    let a = node(&redis, "a", &media, grace);
    ready(&[&a]).await;
    on_air(&a).await;
    let b = node(&redis, "b", &media, grace);
    ready(&[&b]).await;
    assert_eq!(the_driver(&[&a, &b]).await, 0);

    let mut la = Client::connect(&a).await;
    let mut lb = Client::connect(&b).await;
    let mut seq = 0;
    for l in [&mut la, &mut lb] {
        l.send(json!({"type":"tune_in","station":"auto"})).await;
        assert_eq!(l.expect("tuned").await["reason"], "auto");
        seq = seq.max(ms(&l.expect("sync").await["seq"]));
    }

    let mut caster = Client::connect(&b).await;
    caster.start("auto").await;
    let mut playing = Vec::new();
    for l in [&mut la, &mut lb] {
        let got = until(l, "broadcaster_online").await;
        assert_eq!(got.last().expect("online")["reason"], "live", "{got:?}");
        no_offline(&got);
        playing.push(
            got.iter()
                .rfind(|f| f["type"] == "sync")
                .map(|s| s["track"].clone()),
        );
    }
    let live = caster.update("auto", "elsewhere.ogg", 0, true).await as i64;
    assert!(live > seq, "seq only grows: {live} after {seq}");
    for l in [&mut la, &mut lb] {
        let s = l.expect("sync").await;
        assert_eq!(
            (&s["track"], ms(&s["seq"])),
            (&json!("elsewhere.ogg"), live)
        );
        // The server's player is quiet past its track's end.
        l.expect_none("sync", Duration::from_millis(2_000)).await;
    }
    assert_eq!(
        driving(&[&a, &b]).await,
        [0.0, 1.0],
        "the broadcaster's node"
    );
    // What the server played last before it was taken over.
    let h = history(&a, "auto").await;
    let last_auto = h[1]["track"].as_str().expect("a track").to_owned();
    for p in playing.into_iter().flatten() {
        assert_eq!(p, last_auto.as_str());
    }

    caster
        .send(json!({"type":"stop_broadcasting","station":"auto"}))
        .await;
    caster.expect("stopped").await;
    let next = ids[(ids.iter().position(|i| *i == last_auto).expect("known") + 1) % 3];
    for l in [&mut la, &mut lb] {
        let got = until(l, "broadcaster_online").await;
        no_offline(&got);
        assert_eq!(got.last().expect("online")["reason"], "auto", "{got:?}");
        let back = l.expect("sync").await;
        assert_eq!(back["track"], next, "the entry after {last_auto}: {back}");
        assert!(ms(&back["position_ms"]) < 300, "from its start: {back}");
        assert!(ms(&back["seq"]) > live, "seq only grows: {back}");
    }
    let h = history(&b, "auto").await;
    assert_eq!(h, history(&a, "auto").await);
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
            (last_auto.as_str(), "auto")
        ]
    );

    // Taken over from the other node, then the broadcaster vanishes: the
    // station comes back once its grace period is over, never offline.
    let mut gone = Client::connect(&a).await;
    gone.start("auto").await;
    let gone_seq = gone.update("auto", "vanishing.ogg", 0, true).await as i64;
    drop(gone);
    let got = until(&mut lb, "broadcaster_online").await;
    assert_eq!(got.last().expect("online")["reason"], "live", "{got:?}");
    let got = until(&mut lb, "broadcaster_online").await;
    no_offline(&got);
    assert_eq!(got.last().expect("online")["reason"], "auto", "{got:?}");
    let back = lb.expect("sync").await;
    assert!(ms(&back["position_ms"]) < 300, "from its start: {back}");
    assert!(ms(&back["seq"]) > gone_seq, "seq only grows: {back}");
    the_driver(&[&a, &b]).await;

    // A listener who tunes in now, anywhere, is told who plays.
    for n in [&a, &b] {
        let mut late = Client::connect(n).await;
        late.send(json!({"type":"tune_in","station":"auto"})).await;
        assert_eq!(late.expect("tuned").await["reason"], "auto");
    }
}

/// The driving node shuts down: another node that runs the station goes on
/// with it at once, where the timeline is. When the last one leaves, the
/// station goes offline for the listeners elsewhere.
#[tokio::test]
async fn a_node_that_leaves_hands_the_station_on() {
    let media = library(&[("1.wav", 8_000), ("2.wav", 8_000)]);
    let redis = Redis::start().await;
    let mut a = node(&redis, "a", &media, LEASE);
    ready(&[&a]).await;
    on_air(&a).await;
    let mut b = node(&redis, "b", &media, LEASE);
    let c = plain_node(&redis, "c");
    ready(&[&b, &c]).await;
    assert_eq!(the_driver(&[&a, &b]).await, 0);

    let mut l = Client::connect(&c).await;
    l.send(json!({"type":"tune_in","station":"auto"})).await;
    assert_eq!(l.expect("tuned").await["reason"], "auto");
    let before = l.expect("sync").await;
    a.shutdown().expect("a stops");
    let left_at = radio::protocol::now_ms();
    let got = until(&mut l, "sync").await;
    assert!(got.iter().all(|f| f["type"] == "sync"), "{got:?}");
    let on = got.last().expect("a sync");
    assert_eq!(on["track"], before["track"], "the same track: {on}");
    assert_eq!(
        started(on),
        started(&before),
        "at its place: {before} then {on}"
    );
    let took = ms(&on["server_time_ms"]) - left_at;
    assert!(
        took < 900,
        "handed on {took} ms after the node left (lease 1 s)"
    );
    assert_eq!(driving(&[&b]).await, [1.0]);

    b.shutdown().expect("b stops");
    let got = until(&mut l, "broadcaster_offline").await;
    assert_eq!(got.last().expect("offline")["reason"], "timeout", "{got:?}");
}
