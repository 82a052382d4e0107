//! Cluster mode: a real redis-server and several nodes behind it; clients
//! on different nodes see exactly the single-node protocol. Nodes run in
//! this process, except those a test kills outright (a crashed node must be
//! a process) or whose log it reads: those are `radio serve --redis`.

use std::time::Duration;

use radio::BackendConfig;
use radio::RedisConfig;
use serde_json::{Value, json};

use crate::support::process::{free_port, radio_bin};
use crate::support::{Client, Redis, Server, TempDir, eventually, tone_wav, update_retrying};

/// A node's timing: `--lease` and `--grace-period`.
#[derive(Clone, Copy)]
struct Timing {
    lease: Duration,
    grace: Duration,
}

/// `radio serve`'s defaults.
const DEFAULTS: Timing = Timing {
    lease: Duration::from_secs(5),
    grace: Duration::from_secs(10),
};

const fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// A node of the cluster behind `redis`, in this process.
fn node(redis: &Redis, id: &str, t: Timing) -> Server {
    Server::with(|c| {
        c.backend = BackendConfig::Redis(RedisConfig {
            redis_url: redis.url(),
            node_id: id.to_owned(),
            lease: t.lease,
            grace: t.grace,
            ca_cert: None,
            password_file: None,
            sentinel_password_file: None,
            max_stations: 10_000,
        })
    })
}

/// A Redis that requires a password (with a `/` in it) is joined with
/// the password read from `--redis-password-file`, never in the URL; a
/// node without it does not start.
#[tokio::test]
async fn a_password_file_authenticates_to_redis() {
    let redis = Redis::start().await;
    let password = "s3cr/et pass";
    let admin = ::redis::Client::open(redis.url()).expect("a client");
    let mut admin = admin
        .get_multiplexed_async_connection()
        .await
        .expect("connect to redis");
    let () = ::redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg(password)
        .query_async(&mut admin)
        .await
        .expect("set a password");
    let dir = TempDir::new("redis-password");
    dir.write("password", format!("{password}\n"));
    let with = |file: Option<std::path::PathBuf>| {
        let url = redis.url();
        Server::with(move |c| {
            c.backend = BackendConfig::Redis(RedisConfig {
                redis_url: url,
                node_id: "pw".into(),
                lease: DEFAULTS.lease,
                grace: DEFAULTS.grace,
                ca_cert: None,
                password_file: file,
                sentinel_password_file: None,
                max_stations: 10_000,
            })
        })
    };
    let node = with(Some(dir.path().join("password")));
    wait_ready(&node, 200).await;
    let mut b = Client::connect(&node).await;
    b.start("locked").await;
    // Without it, Redis refuses the node, which stops at start saying so.
    let mut without = with(None);
    let err = without
        .shutdown()
        .expect_err("a node without the password stops");
    assert!(
        format!("{err:#}").contains("Redis asked for a password, and none was given"),
        "{err:#}"
    );
}

/// A node of the cluster behind `redis`, as a `radio serve` process.
fn node_process(redis: &Redis, id: &str, t: Timing) -> Server {
    let (lease, grace) = (ms(t.lease), ms(t.grace));
    Server::spawn_process(&[
        "--redis",
        &redis.url(),
        "--node-id",
        id,
        "--lease",
        &lease,
        "--grace-period",
        &grace,
    ])
}

fn ms(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

/// Waits until `/readyz` answers `status`.
async fn wait_ready(server: &Server, status: u16) {
    eventually(&format!("/readyz answers {status}"), async || {
        let now = server.get("/readyz").await.status;
        if now == status { Ok(()) } else { Err(now) }
    })
    .await;
}

/// Waits until every node's `/readyz` answers 200.
async fn all_ready(nodes: &[&Server]) {
    for n in nodes {
        wait_ready(n, 200).await;
    }
}

/// Tunes in and returns the listener with its `tuned` reply's `live`.
async fn listener(server: &Server, station: &str) -> (Client, bool) {
    let mut l = Client::connect(server).await;
    let live = l.tune(station).await;
    (l, live)
}

/// Reads frames until a `sync` with `seq >= until`; returns every `sync`
/// and the types of all frames seen.
async fn syncs_until(c: &mut Client, until: u64) -> (Vec<Value>, Vec<String>) {
    let mut syncs = Vec::new();
    let mut types = Vec::new();
    loop {
        let f = c.recv().await;
        let ty = f["type"].as_str().unwrap().to_owned();
        types.push(ty.clone());
        if ty == "sync" {
            let seq = f["seq"].as_u64().unwrap();
            syncs.push(f);
            if seq >= until {
                return (syncs, types);
            }
        }
    }
}

fn seqs(syncs: &[Value]) -> Vec<u64> {
    syncs.iter().map(|s| s["seq"].as_u64().unwrap()).collect()
}

fn assert_increasing(seqs: &[u64]) {
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "seq went backwards or repeated: {seqs:?}"
    );
}

/// `list_stations` until `station` shows `listeners`.
async fn wait_listeners(c: &mut Client, station: &str, listeners: u64) {
    let what = format!("list_stations shows {listeners} listeners of {station}");
    eventually(&what, async || {
        let s = c.list_stations().await;
        let n = s["stations"]
            .as_array()
            .expect("a list of stations")
            .iter()
            .find(|e| e["station"] == station)
            .map(|e| e["listeners"].as_u64().expect("a listener count"));
        if n == Some(listeners) { Ok(()) } else { Err(s) }
    })
    .await;
}

#[tokio::test]
async fn listeners_on_other_nodes_get_every_state_in_order() {
    let redis = Redis::start().await;
    let (a, b, c) = (
        node(&redis, "a", DEFAULTS),
        node(&redis, "b", DEFAULTS),
        node(&redis, "c", DEFAULTS),
    );
    all_ready(&[&a, &b, &c]).await;
    let (mut lb, live) = listener(&b, "jazz").await;
    assert!(!live, "not live before anyone broadcasts");
    let (mut lc, _) = listener(&c, "jazz").await;

    let mut bc = Client::connect(&a).await;
    bc.start("jazz").await;
    lb.expect("broadcaster_online").await;
    lc.expect("broadcaster_online").await;

    // Each state is read on both nodes before the next is sent, so none may
    // be conflated away: every one must arrive, in order, once.
    let mut sent = Vec::new();
    for i in 0..10u64 {
        let track = format!("t{i}.mp3");
        let seq = bc.update("jazz", &track, i * 1000, true).await;
        for l in [&mut lb, &mut lc] {
            let s = l.recv().await;
            assert_eq!(s["type"], "sync", "{s}");
            assert_eq!(s["seq"], seq, "{s}");
            assert_eq!(s["track"], track.as_str());
            assert_eq!(s["cause"], "update");
        }
        sent.push(seq);
    }
    assert_increasing(&sent);

    // A late listener on a third node gets the current state at once.
    let (mut late, live) = listener(&c, "jazz").await;
    assert!(live);
    let s = late.expect("sync").await;
    assert_eq!(s["cause"], "tune_in");
    assert_eq!(s["seq"], *sent.last().unwrap());
    assert_eq!(s["track"], "t9.mp3");

    // Listeners are counted over the cluster, from any node.
    wait_listeners(&mut bc, "jazz", 3).await;
    let r = b.get("/api/stations").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["stations"][0]["station"], "jazz", "{v}");
    assert_eq!(v["stations"][0]["track"], "t9.mp3", "{v}");

    drop(late);
    wait_listeners(&mut bc, "jazz", 2).await;

    // Stopping reaches every node.
    bc.send(json!({"type":"stop_broadcasting","station":"jazz"}))
        .await;
    bc.expect("stopped").await;
    for l in [&mut lb, &mut lc] {
        let off = l.expect("broadcaster_offline").await;
        assert_eq!(off["reason"], "stopped");
    }
}

/// The node that stamps an update fills its metadata, once: a listener on
/// a node whose library lacks the track still gets the title.
#[tokio::test]
async fn metadata_comes_from_the_node_that_stamps_the_update() {
    let redis = Redis::start().await;
    let media = TempDir::new("cluster-meta");
    media.write(
        "a.wav",
        tone_wav(3, &[440.0], Some("Only on a"), Some("Node a")),
    );
    let a = Server::with(|c| {
        c.media.dir = Some(media.path().to_owned());
        c.backend = BackendConfig::Redis(RedisConfig {
            redis_url: redis.url(),
            node_id: "a".into(),
            lease: DEFAULTS.lease,
            grace: DEFAULTS.grace,
            ca_cert: None,
            password_file: None,
            sentinel_password_file: None,
            max_stations: 10_000,
        });
    });
    // b serves the demo library, which has no a.wav.
    let b = node(&redis, "b", DEFAULTS);
    all_ready(&[&a, &b]).await;
    let (mut lb, _) = listener(&b, "meta").await;
    let mut bc = Client::connect(&a).await;
    bc.start("meta").await;
    let seq = update_retrying(&mut bc, "meta", "a.wav", 0).await;
    let (syncs, _) = syncs_until(&mut lb, seq).await;
    let s = syncs.last().unwrap();
    assert_eq!(s["title"], "Only on a", "{s}");
    assert_eq!(s["artist"], "Node a");
    assert_eq!(s["duration_ms"], 3_000);
    // A heartbeat carries it, and a late listener's snapshot has it.
    bc.send(json!({"type":"heartbeat","station":"meta","position_ms":500,"ack":true}))
        .await;
    let hb = bc.expect("ack").await["seq"].as_u64().unwrap();
    let (syncs, _) = syncs_until(&mut lb, hb).await;
    assert_eq!(syncs.last().unwrap()["title"], "Only on a");
    let (mut late, _) = listener(&b, "meta").await;
    assert_eq!(late.expect("sync").await["title"], "Only on a");
}

#[tokio::test]
async fn a_station_held_on_one_node_is_taken_on_another() {
    let redis = Redis::start().await;
    let a = node(&redis, "a", DEFAULTS);
    let b = node(&redis, "b", DEFAULTS);
    all_ready(&[&a, &b]).await;

    let mut owner = Client::connect(&a).await;
    owner.start("rock").await;
    let mut other = Client::connect(&b).await;
    other
        .expect_error(
            json!({"type":"start_broadcasting","station":"rock"}),
            "station_taken",
        )
        .await;
    other
        .expect_error(
            json!({"type":"start_broadcasting","station":"rock","resume_token":"not-the-token"}),
            "station_taken",
        )
        .await;
    other
        .expect_error(
            json!({"type":"update","station":"rock","track":"x","position_ms":0,"playing":true}),
            "not_owner",
        )
        .await;
    // On the owner's own node too.
    let mut same = Client::connect(&a).await;
    same.expect_error(
        json!({"type":"start_broadcasting","station":"rock"}),
        "station_taken",
    )
    .await;
    // Once stopped, anyone may take it.
    owner
        .send(json!({"type":"stop_broadcasting","station":"rock"}))
        .await;
    owner.expect("stopped").await;
    other.start("rock").await;
}

/// Node `a` is killed, so it is a process.
#[tokio::test]
async fn broadcaster_resumes_on_another_node_when_its_node_dies() {
    let redis = Redis::start().await;
    let t = Timing {
        lease: secs(2),
        grace: secs(10),
    };
    let mut a = node_process(&redis, "a", t);
    let (b, c) = (node(&redis, "b", t), node(&redis, "c", t));
    all_ready(&[&a, &b, &c]).await;
    let mut bc = Client::connect(&a).await;
    let token = bc.start("talk").await;
    let (mut lb, live) = listener(&b, "talk").await;
    assert!(live);
    let (mut lc, _) = listener(&c, "talk").await;
    let mut before = Vec::new();
    for i in 0..3u64 {
        before.push(bc.update("talk", "show.mp3", i * 1000, true).await);
    }
    for l in [&mut lb, &mut lc] {
        syncs_until(l, *before.last().unwrap()).await;
    }

    a.kill();
    drop(bc);
    let mut bc = Client::connect(&b).await;
    bc.send(json!({"type":"start_broadcasting","station":"talk","resume_token":token}))
        .await;
    let r = bc.recv().await;
    assert_eq!(r["type"], "broadcasting", "{r}");
    assert_eq!(
        r["resume_token"],
        token.as_str(),
        "same token after resuming"
    );

    let mut after = Vec::new();
    for i in 3..6u64 {
        after.push(bc.update("talk", "show.mp3", i * 1000, true).await);
    }
    assert!(
        after[0] > *before.last().unwrap(),
        "seq continues: {before:?} then {after:?}"
    );
    // Past the lease: nobody reaped the station, nobody was told it went away.
    let (early_b, early_c) = tokio::join!(
        lb.expect_none("broadcaster_offline", secs(3)),
        lc.expect_none("broadcaster_offline", secs(3)),
    );
    let last = bc.update("talk", "show.mp3", 9_000, true).await;
    for (l, early) in [(&mut lb, early_b), (&mut lc, early_c)] {
        let (syncs, types) = syncs_until(l, last).await;
        assert!(
            !types.iter().any(|t| t == "broadcaster_offline"),
            "no offline notice: {types:?}"
        );
        let mut all: Vec<Value> = early.into_iter().filter(|f| f["type"] == "sync").collect();
        all.extend(syncs);
        assert_increasing(&seqs(&all));
    }
}

#[tokio::test]
async fn listeners_end_with_the_newest_state_when_redis_restarts() {
    let mut redis = Redis::start().await;
    let t = Timing {
        lease: secs(2),
        ..DEFAULTS
    };
    let (a, b) = (node(&redis, "a", t), node(&redis, "b", t));
    all_ready(&[&a, &b]).await;
    let mut bc = Client::connect(&a).await;
    bc.start("news").await;
    let (mut l, _) = listener(&b, "news").await;
    let mut seen = Vec::new();
    let s1 = bc.update("news", "one.mp3", 0, true).await;
    let (syncs, _) = syncs_until(&mut l, s1).await;
    seen.extend(seqs(&syncs));

    redis.kill();
    wait_ready(&a, 503).await;
    wait_ready(&b, 503).await;
    assert_eq!(a.get("/healthz").await.status, 200, "alive, not ready");
    // Requests that need Redis say so; connections stay open.
    bc.expect_error(
        json!({"type":"update","station":"news","track":"two.mp3","position_ms":0,"playing":true}),
        "unavailable",
    )
    .await;
    bc.expect_error(json!({"type":"list_stations"}), "unavailable")
        .await;
    assert_eq!(b.get("/api/stations").await.status, 503);

    redis.restart().await;
    all_ready(&[&a, &b]).await;
    let s2 = update_retrying(&mut bc, "news", "three.mp3", 5_000).await;
    assert!(
        s2 > s1,
        "seq keeps growing across the restart: {s1} then {s2}"
    );
    let (syncs, types) = syncs_until(&mut l, s2).await;
    seen.extend(seqs(&syncs));
    assert_increasing(&seen);
    assert_eq!(syncs.last().unwrap()["track"], "three.mp3");
    assert!(
        !types.iter().any(|t| t == "broadcaster_offline"),
        "the broadcaster never left: {types:?}"
    );
    // The listener is still subscribed after the restart.
    let s3 = bc.update("news", "four.mp3", 0, true).await;
    let (syncs, _) = syncs_until(&mut l, s3).await;
    assert_eq!(syncs.last().unwrap()["track"], "four.mp3");
}

/// Node `a` is killed, so it is a process.
#[tokio::test]
async fn listeners_elsewhere_are_told_when_a_node_dies() {
    let redis = Redis::start().await;
    let t = Timing {
        lease: secs(1),
        ..DEFAULTS
    };
    let mut a = node_process(&redis, "a", t);
    let (b, c) = (node(&redis, "b", t), node(&redis, "c", t));
    all_ready(&[&a, &b, &c]).await;
    let mut bc = Client::connect(&a).await;
    bc.start("gone").await;
    let seq = bc.update("gone", "last.mp3", 0, true).await;
    let (mut lb, _) = listener(&b, "gone").await;
    let (mut lc, _) = listener(&c, "gone").await;
    for l in [&mut lb, &mut lc] {
        assert_eq!(l.expect("sync").await["seq"], seq);
    }
    a.kill();
    for l in [&mut lb, &mut lc] {
        let off = l.expect("broadcaster_offline").await;
        assert_eq!(off["reason"], "timeout", "{off}");
        assert_eq!(off["station"], "gone");
    }
    // The station is free again, and its seq keeps growing for its listeners.
    let mut nb = Client::connect(&b).await;
    nb.start("gone").await;
    lb.expect("broadcaster_online").await;
    let next = nb.update("gone", "new.mp3", 0, true).await;
    assert!(next > seq, "{seq} then {next}");
    assert_eq!(lc.expect("sync").await["seq"], next);
}

/// Processes: one is killed, and the refusal is a message and an exit.
#[tokio::test]
async fn nodes_share_one_port_with_reuse_port() {
    let redis = Redis::start().await;
    let listen = format!("127.0.0.1:{}", free_port());
    let url = redis.url();
    let args = ["--redis", &url, "--reuse-port", "--listen", &listen];
    let mut a = Server::spawn_process(&args);
    let b = Server::spawn_process(&args);
    assert_eq!(a.addr, b.addr);
    wait_ready(&b, 200).await;
    // Either process answers on the shared address; with one gone, the
    // other still does.
    assert_eq!(a.get("/healthz").await.status, 200);
    a.kill();
    for _ in 0..5 {
        assert_eq!(b.get("/healthz").await.status, 200);
    }
    // Without the flag the port is refused, with a message saying why.
    let out = std::process::Command::new(radio_bin())
        .args(["serve", "--listen", &listen])
        .output()
        .expect("run radio serve");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot listen on"), "{err}");
}

#[tokio::test]
async fn a_disconnected_broadcaster_gets_its_grace_period_across_nodes() {
    let redis = Redis::start().await;
    let t = Timing {
        lease: secs(1),
        grace: secs(1),
    };
    let (a, b) = (node(&redis, "a", t), node(&redis, "b", t));
    all_ready(&[&a, &b]).await;
    let mut bc = Client::connect(&a).await;
    bc.start("late").await;
    bc.update("late", "x.mp3", 0, true).await;
    let (mut l, _) = listener(&b, "late").await;
    l.expect("sync").await;
    drop(bc);
    // During the grace period only the token may take it.
    let mut other = Client::connect(&b).await;
    eventually("the station waits for its resume token", async || {
        other
            .send(json!({"type":"start_broadcasting","station":"late"}))
            .await;
        let r = other.recv().await;
        assert_eq!(r["code"], "station_taken", "{r}");
        // Until the old node turns the lease into a grace lease, the
        // message does not mention resuming.
        let message = r["message"].as_str().expect("an error message");
        if message.contains("resume") {
            Ok(())
        } else {
            Err(r)
        }
    })
    .await;
    let off = l.expect("broadcaster_offline").await;
    assert_eq!(off["reason"], "disconnected", "{off}");
    other.start("late").await;
    l.expect("broadcaster_online").await;
}

/// Node `a` stops through its shutdown token, as SIGTERM stops it.
#[tokio::test]
async fn broadcaster_resumes_on_another_node_when_its_node_shuts_down() {
    let redis = Redis::start().await;
    let mut a = node(&redis, "a", DEFAULTS);
    let b = node(&redis, "b", DEFAULTS);
    all_ready(&[&a, &b]).await;
    let mut bc = Client::connect(&a).await;
    let token = bc.start("calm").await;
    let s1 = bc.update("calm", "a.mp3", 0, true).await;
    let (mut l, _) = listener(&b, "calm").await;
    assert_eq!(l.expect("sync").await["seq"], s1);

    a.cancel();
    bc.expect("server_shutdown").await;
    a.shutdown().expect("node a stops cleanly");
    let mut bc = Client::connect(&b).await;
    bc.send(json!({"type":"start_broadcasting","station":"calm","resume_token":token}))
        .await;
    let r = bc.recv().await;
    assert_eq!(r["type"], "broadcasting", "{r}");
    let s2 = bc.update("calm", "b.mp3", 0, true).await;
    assert!(s2 > s1);
    let (syncs, types) = syncs_until(&mut l, s2).await;
    assert!(
        !types.iter().any(|t| t == "broadcaster_offline"),
        "{types:?}"
    );
    assert_eq!(syncs.last().unwrap()["track"], "b.mp3");
}

#[tokio::test]
async fn a_node_started_before_its_redis_waits_for_it() {
    let mut redis = Redis::not_started();
    let a = node(&redis, "a", DEFAULTS);
    assert_eq!(a.get("/readyz").await.status, 503);
    assert_eq!(a.get("/healthz").await.status, 200);
    let mut c = Client::connect(&a).await;
    c.expect_error(json!({"type":"tune_in","station":"soon"}), "unavailable")
        .await;
    c.expect_error(
        json!({"type":"start_broadcasting","station":"soon"}),
        "unavailable",
    )
    .await;
    redis.spawn().await;
    wait_ready(&a, 200).await;
    c.start("soon").await;
    let (mut l, live) = listener(&a, "soon").await;
    assert!(live);
    let seq = c.update("soon", "x.mp3", 0, true).await;
    assert_eq!(l.expect("sync").await["seq"], seq);
}

/// Through `radio serve`: the loss would show in its log.
#[tokio::test]
async fn a_node_with_subscriptions_keeps_its_redis_link() {
    // The link's health check runs every 5 s; with a subscription open,
    // Redis answers its PING differently, and that must not read as a loss.
    let redis = Redis::start().await;
    let a = node_process(&redis, "a", DEFAULTS);
    wait_ready(&a, 200).await;
    let mut b = Client::connect(&a).await;
    b.start("steady").await;
    let (mut l, _) = listener(&a, "steady").await;
    let first = update_retrying(&mut b, "steady", "t", 0).await;
    // Past a health check, the station stays live for its listener.
    l.expect_none("broadcaster_offline", secs(6)).await;
    let later = b.update("steady", "t", 6000, true).await;
    assert_eq!(later, first + 1);
    let (syncs, _) = syncs_until(&mut l, later).await;
    assert_eq!(syncs.last().unwrap()["seq"], later);
    assert!(!a.log().contains("lost Redis"), "{}", a.log());
}

/// A station whose node died while nobody listened
/// stayed live in Redis for ever (its hash `PERSIST`ed, its name in the live
/// set, walked by every `list_stations`): only nodes with listeners reaped.
/// Now every node sweeps the live set: the station goes offline, leaves
/// the set, and its hash expires.
#[tokio::test]
async fn an_abandoned_station_expires_in_redis() {
    let redis = Redis::start().await;
    let fast = Timing {
        lease: Duration::from_millis(500),
        grace: Duration::from_millis(500),
    };
    let mut a = node_process(&redis, "a", fast);
    let b = node(&redis, "b", fast);
    all_ready(&[&a, &b]).await;
    let mut bc = Client::connect(&a).await;
    bc.start("abandoned").await;
    bc.update("abandoned", "t", 0, true).await;
    let client = ::redis::Client::open(redis.url()).expect("a Redis URL");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect to Redis");
    let live: bool = ::redis::cmd("SISMEMBER")
        .arg("radio:live")
        .arg("abandoned")
        .query_async(&mut conn)
        .await
        .expect("SISMEMBER");
    assert!(live);
    // Its node dies; no node has a listener of it.
    a.kill();
    eventually("the abandoned station leaves the live set", async || {
        let live: bool = ::redis::cmd("SISMEMBER")
            .arg("radio:live")
            .arg("abandoned")
            .query_async(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        if live {
            Err("still live".to_owned())
        } else {
            Ok(())
        }
    })
    .await;
    let ttl: i64 = ::redis::cmd("PTTL")
        .arg("radio:station:abandoned")
        .query_async(&mut conn)
        .await
        .expect("PTTL");
    assert!(ttl > 0, "the station's hash expires (PTTL {ttl})");
    let listed = b.get("/api/stations").await.json();
    assert_eq!(listed["total"], 0, "{listed}");
}

/// `rediss://` with `--redis-ca-cert`, against a redis-server that
/// speaks TLS only: two nodes share a station through it.
#[tokio::test]
async fn nodes_share_stations_through_a_tls_redis() {
    let certs = crate::support::tls::Certs::new("localhost");
    let redis = Redis::start_tls(&certs).await;
    let tls_node = |id: &str| {
        Server::with(|c| {
            c.backend = BackendConfig::Redis(RedisConfig {
                redis_url: redis.url(),
                node_id: id.to_owned(),
                lease: DEFAULTS.lease,
                grace: DEFAULTS.grace,
                ca_cert: Some(certs.path("ca.pem")),
                password_file: None,
                sentinel_password_file: None,
                max_stations: 10_000,
            })
        })
    };
    let a = tls_node("a");
    let b = tls_node("b");
    all_ready(&[&a, &b]).await;
    let (mut l, live) = listener(&b, "secret-line").await;
    assert!(!live);
    let mut bc = Client::connect(&a).await;
    bc.start("secret-line").await;
    let seq = update_retrying(&mut bc, "secret-line", "via-tls", 0).await;
    let (syncs, _) = syncs_until(&mut l, seq).await;
    assert_eq!(syncs.last().expect("a sync")["track"], "via-tls");
}

/// An update whose reply was lost may have been stored: Redis is then one
/// seq ahead of the node. The next update proposes exactly that seq; it
/// was taken for stored (acked, yet never published). Now the node moves
/// past it, and listeners get the state.
#[tokio::test]
async fn an_update_after_a_lost_reply_is_published() {
    let redis = Redis::start().await;
    let (a, b) = (node(&redis, "a", DEFAULTS), node(&redis, "b", DEFAULTS));
    all_ready(&[&a, &b]).await;
    let (mut l, _) = listener(&b, "lost").await;
    let mut bc = Client::connect(&a).await;
    bc.start("lost").await;
    let first = bc.update("lost", "one.mp3", 0, true).await;
    assert_eq!(l.expect("sync").await["seq"], first);
    // What a stored update whose reply never came leaves behind.
    let ahead = (first + 1).to_string();
    let set = std::process::Command::new("redis-cli")
        .args(["-u", &redis.url(), "HSET"])
        .arg(radio::redis_station_key("lost"))
        .args(["seq", &ahead])
        .output()
        .expect("run redis-cli");
    assert!(set.status.success(), "{set:?}");
    let next = bc.update("lost", "two.mp3", 0, true).await;
    assert!(next > first + 1, "acked seq {next} is Redis's own");
    let s = l.expect("sync").await;
    assert_eq!(s["track"], "two.mp3", "{s}");
    assert_eq!(s["seq"], next);
}

/// A station stops; Redis restarts with nothing; a new broadcaster starts
/// it again. Listeners who stayed tuned hold the old seq, so the new states
/// must be numbered above it: the node that serves them teaches the empty
/// Redis the highest seq it sent, even for a station gone offline (it
/// taught 0, and listeners got no state until seq passed the old one).
#[tokio::test]
async fn a_station_started_again_after_redis_lost_everything_reaches_its_listeners() {
    let mut redis = Redis::start().await;
    let (a, b) = (node(&redis, "a", DEFAULTS), node(&redis, "b", DEFAULTS));
    all_ready(&[&a, &b]).await;
    let (mut l, _) = listener(&b, "again").await;
    let mut first = Client::connect(&a).await;
    first.start("again").await;
    let mut last = 0;
    for i in 0..5 {
        last = first.update("again", &format!("old{i}.mp3"), 0, true).await;
    }
    syncs_until(&mut l, last).await;
    first
        .send(json!({"type":"stop_broadcasting","station":"again"}))
        .await;
    l.expect("broadcaster_offline").await;

    redis.kill();
    wait_ready(&b, 503).await;
    redis.restart().await;
    all_ready(&[&a, &b]).await;
    let mut second = Client::connect(&a).await;
    second.start("again").await;
    let seq = update_retrying(&mut second, "again", "new.mp3", 0).await;
    assert!(
        seq > last,
        "new seq {seq} not above the {last} listeners hold"
    );
    let s = l.expect("sync").await;
    assert_eq!(s["track"], "new.mp3", "{s}");
}

/// Every key Redis holds for `station`, with its `PTTL`.
async fn station_keys(
    conn: &mut ::redis::aio::MultiplexedConnection,
    station: &str,
) -> Vec<(String, i64)> {
    let names: Vec<String> = ::redis::cmd("KEYS")
        .arg(format!("radio:*:{station}"))
        .query_async(conn)
        .await
        .expect("KEYS");
    let mut out = Vec::new();
    for name in names {
        let ttl: i64 = ::redis::cmd("PTTL")
            .arg(&name)
            .query_async(conn)
            .await
            .expect("PTTL");
        out.push((name, ttl));
    }
    out
}

/// A stopped station kept its hash (and later its history and counts) for
/// 24 hours, so claiming and stopping names filled Redis without bound.
/// Now a station that never had an update leaves nothing at once, one that
/// did leaves nothing within six leases once nobody is tuned to it, and
/// while a listener is tuned its `seq` is kept, so the next broadcaster's
/// states reach that listener (a cell never goes back to an older `seq`).
#[tokio::test]
async fn a_stopped_station_leaves_nothing_in_redis_unless_someone_is_tuned() {
    let redis = Redis::start().await;
    // A lease of 500 ms: offline stations are kept 3 s past the last refresh.
    let fast = Timing {
        lease: Duration::from_millis(500),
        grace: Duration::from_millis(500),
    };
    let a = node(&redis, "a", fast);
    let b = node(&redis, "b", fast);
    all_ready(&[&a, &b]).await;
    let client = ::redis::Client::open(redis.url()).expect("a Redis URL");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect to Redis");
    let stop = async |c: &mut Client, station: &str| {
        c.send(json!({"type":"stop_broadcasting","station":station}))
            .await;
        c.expect("stopped").await;
    };

    // Claimed and stopped without an update: nothing is left.
    let mut bc = Client::connect(&a).await;
    bc.start("never").await;
    stop(&mut bc, "never").await;
    assert_eq!(station_keys(&mut conn, "never").await, vec![]);

    // Played, with a listener on the other node, then stopped.
    bc.start("played").await;
    let (mut l, _) = listener(&b, "played").await;
    let mut last = 0;
    for i in 0..3 {
        last = bc.update("played", "t", i * 1000, true).await;
    }
    syncs_until(&mut l, last).await;
    stop(&mut bc, "played").await;
    l.expect("broadcaster_offline").await;
    // Longer than six leases: the listener's node keeps the seq meanwhile.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let keys = station_keys(&mut conn, "played").await;
    assert!(
        keys.iter().any(|(k, _)| k == "radio:station:played"),
        "the hash is kept while a listener is tuned: {keys:?}"
    );
    // A new broadcaster goes on from there, and the listener hears it.
    let mut next = Client::connect(&a).await;
    next.start("played").await;
    let seq = next.update("played", "u", 0, true).await;
    assert!(seq > last, "seq went back from {last} to {seq}");
    let (syncs, _) = syncs_until(&mut l, seq).await;
    assert_eq!(syncs.last().map(|s| s["track"].clone()), Some(json!("u")));

    // Nobody tuned any more: within six leases nothing is left.
    drop(l);
    stop(&mut next, "played").await;
    let keys = station_keys(&mut conn, "played").await;
    assert!(
        keys.iter()
            .all(|(_, ttl)| *ttl == -2 || (0..=3_000).contains(ttl)),
        "every key of a stopped station expires: {keys:?}"
    );
    eventually("the stopped station leaves nothing in Redis", async || {
        let keys = station_keys(&mut conn, "played").await;
        if keys.is_empty() { Ok(()) } else { Err(keys) }
    })
    .await;
}
