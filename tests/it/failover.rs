//! No single point of failure: a cluster behind Redis Sentinel keeps every
//! station and every listener's final state through a failover of its
//! Redis, and clients given several `--url`s move to another node when
//! theirs dies. Real processes throughout: redis-server, its replica, three
//! Sentinels, and `radio` nodes and clients.

use std::time::Duration;

use radio::{BackendConfig, RedisConfig};
use serde_json::Value;

use crate::support::cli::{Broadcast, json_lines, wait_for};
use crate::support::process::{kill, radio_bin};
use crate::support::sentinel::Sentinels;
use crate::support::{Client, Redis, Server, eventually, update_retrying};

/// A node behind `url` (a Redis or a Sentinel URL), in this process, with a
/// two-second lease.
fn node(url: &str, id: &str) -> Server {
    Server::with(|c| {
        c.backend = BackendConfig::Redis(RedisConfig {
            redis_url: url.to_owned(),
            node_id: id.to_owned(),
            lease: Duration::from_secs(2),
            grace: Duration::from_secs(10),
            ca_cert: None,
            password_file: None,
            sentinel_password_file: None,
            max_stations: 10_000,
        })
    })
}

async fn wait_ready(server: &Server, status: u16) {
    eventually(&format!("/readyz answers {status}"), async || {
        let now = server.get("/readyz").await.status;
        if now == status { Ok(()) } else { Err(now) }
    })
    .await;
}

/// Reads frames until a `sync` with `seq >= until`; gives the `seq`s of
/// the syncs, the last sync, and the types of all frames seen.
async fn syncs_until(c: &mut Client, until: u64) -> (Vec<u64>, Value, Vec<String>) {
    let mut seqs = Vec::new();
    let mut types = Vec::new();
    loop {
        let f = c.recv().await;
        let ty = f["type"].as_str().expect("a frame type").to_owned();
        types.push(ty.clone());
        if ty == "sync" {
            let seq = f["seq"].as_u64().expect("a seq");
            seqs.push(seq);
            if seq >= until {
                return (seqs, f, types);
            }
        }
    }
}

const STATIONS: usize = 4;
const LISTENERS: usize = 240;

#[tokio::test]
async fn a_redis_failover_under_listeners_loses_no_station_and_no_final_state() {
    let mut sentinels = Sentinels::start().await;
    let url = sentinels.url();
    let nodes = [node(&url, "a"), node(&url, "b")];
    for n in &nodes {
        wait_ready(n, 200).await;
    }
    // Stations 0 and 2 broadcast from node a, 1 and 3 from node b; each
    // station's listeners split over both nodes.
    let names: Vec<String> = (0..STATIONS).map(|s| format!("ha{s}")).collect();
    let mut broadcasters = Vec::new();
    for (s, name) in names.iter().enumerate() {
        let mut b = Client::connect(&nodes[s % 2]).await;
        b.start(name).await;
        broadcasters.push(b);
    }
    let mut listeners = Vec::new();
    for i in 0..LISTENERS {
        let mut l = Client::connect(&nodes[(i / STATIONS) % 2]).await;
        assert!(l.tune(&names[i % STATIONS]).await, "station is live");
        listeners.push((i % STATIONS, l, Vec::<u64>::new()));
    }
    // Every station's newest write goes in just before the master dies: the
    // replica may never get it, and the owners' re-assertion must put it
    // back on the new master.
    let mut before = Vec::new();
    for (s, b) in broadcasters.iter_mut().enumerate() {
        before.push(b.update(&names[s], "before.mp3", 0, true).await);
    }
    let old = sentinels.kill_master().await;
    for n in &nodes {
        wait_ready(n, 503).await;
    }
    let new = sentinels.wait_failover(old).await;
    assert_ne!(new, old);
    for n in &nodes {
        wait_ready(n, 200).await;
    }
    let mut last = Vec::new();
    for (s, b) in broadcasters.iter_mut().enumerate() {
        let seq = update_retrying(b, &names[s], &format!("after-{s}.mp3"), 0).await;
        assert!(
            seq > before[s],
            "{}: seq grows across the failover: {} then {seq}",
            names[s],
            before[s]
        );
        last.push(seq);
    }
    for (s, l, seen) in &mut listeners {
        let (seqs, final_sync, types) = syncs_until(l, last[*s]).await;
        seen.extend(seqs);
        assert!(
            seen.windows(2).all(|w| w[0] < w[1]),
            "a listener's seq went backwards or repeated: {seen:?}"
        );
        assert_eq!(final_sync["track"], format!("after-{s}.mp3"));
        assert!(
            !types.iter().any(|t| t == "broadcaster_offline"),
            "no station went offline: {types:?}"
        );
    }
    // Every station is still listed, live, on both nodes.
    for n in &nodes {
        let mut c = Client::connect(n).await;
        let list = c.list_stations().await;
        for name in &names {
            assert!(
                list["stations"]
                    .as_array()
                    .expect("a list")
                    .iter()
                    .any(|e| e["station"] == name.as_str()),
                "{name} is listed: {list}"
            );
        }
        assert_eq!(n.metric("radio_redis_up").await, 1.0);
        assert!(n.metric("radio_redis_reconnects_total").await >= 1.0);
        let log = n.log();
        assert_eq!(
            log.matches("Redis failed over").count(),
            1,
            "the failover is logged once:\n{log}"
        );
    }
}

/// A node of the cluster behind `redis`, as a `radio serve` process (it is
/// killed outright).
fn node_process(redis: &Redis, id: &str) -> Server {
    Server::spawn_process(&[
        "--redis",
        &redis.url(),
        "--node-id",
        id,
        "--lease",
        "2s",
        "--grace-period",
        "10s",
    ])
}

#[tokio::test]
async fn clients_with_two_urls_move_when_their_node_is_killed() {
    let redis = Redis::start().await;
    let mut a = node_process(&redis, "a");
    let b = node(&redis.url(), "b");
    wait_ready(&a, 200).await;
    wait_ready(&b, 200).await;
    let urls = format!("{},{}", a.ws_url(), b.ws_url());

    // The listener names the nodes in a comma list (as RADIO_URL may), the
    // broadcaster with --url twice; both start on node a.
    let mut listen = std::process::Command::new(radio_bin())
        .args(["listen", "--json", "--station", "moving", "--url", &urls])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start radio listen");
    let frames = json_lines(listen.stdout.take().expect("radio listen's stdout"));
    wait_for(&frames, "tuned", |v| v["type"] == "tuned");
    let (ua, ub) = (a.ws_url(), b.ws_url());
    let mut broadcast = Broadcast::spawn(&["--station", "moving", "--url", &ua, "--url", &ub]);
    broadcast.err_line(&format!("broadcasting station moving at {ua}"));
    broadcast.say("play \"a minor arpeggio\" 5");
    let first = wait_for(&frames, "the first track", |v| {
        v["type"] == "sync" && v["track"] == "demo/1-a-minor-arpeggio.wav"
    });

    a.kill();
    broadcast.err_line(&format!("resumed station moving at {ub}"));
    broadcast.say("track pulse 30");
    let moved = wait_for(&frames, "the next track, through node b", |v| {
        v["type"] == "sync" && v["track"] == "demo/3-low-pulse.wav"
    });
    assert!(
        moved["seq"].as_u64() > first["seq"].as_u64(),
        "seq continues on the other node: {first} then {moved}"
    );
    kill(&mut listen);
}

/// `radio loadtest ARGS... --json FILE`, as a process; gives it and the
/// report's path (read once it exited).
fn loadtest(args: &[&str], dir: &crate::support::TempDir) -> (std::process::Child, String) {
    let json = dir.path().join("report.json");
    let json = json.to_str().expect("utf-8 temp path").to_owned();
    let child = std::process::Command::new(radio_bin())
        .arg("loadtest")
        .args(args)
        .args(["--json", &json])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("start radio loadtest");
    (child, json)
}

fn report(child: std::process::Child, json: &str) -> Value {
    let out = child.wait_with_output().expect("radio loadtest runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "radio loadtest failed:\n{stdout}");
    serde_json::from_slice(&std::fs::read(json).expect("the JSON report is written"))
        .unwrap_or_else(|e| panic!("the report is JSON ({e}):\n{stdout}"))
}

#[test]
fn loadtest_churn_replaces_listeners_and_every_one_ends_with_the_newest_state() {
    let server = Server::spawn_process(&["--max-connections-per-ip", "0"]);
    let dir = crate::support::TempDir::new("churn");
    let url = server.ws_url();
    let (child, json) = loadtest(
        &[
            "--url",
            &url,
            "--listeners",
            "30",
            "--duration",
            "3s",
            "--churn",
            "20/s",
            "--min-delivery",
            "100",
        ],
        &dir,
    );
    let r = report(child, &json);
    let churned = r["listeners"]["churned"].as_u64().expect("churned");
    // 20 a second for 3 s (and until the workers are told to finish); a
    // busy machine may fall a little behind.
    assert!((30..=150).contains(&churned), "{churned} churned: {r:#}");
    assert_eq!(r["listeners"]["connected"], 30, "{r:#}");
    assert_eq!(r["final_state_delivery_pct"], 100.0);
}

#[tokio::test]
async fn loadtest_reconnects_when_a_node_dies_and_times_the_mark() {
    let redis = Redis::start().await;
    let mut a = node_process(&redis, "a");
    let b = node(&redis.url(), "b");
    wait_ready(&a, 200).await;
    wait_ready(&b, 200).await;
    let dir = crate::support::TempDir::new("reconnect");
    let (ua, ub) = (a.ws_url(), b.ws_url());
    // Station 0's broadcaster and half the listeners start on node a.
    let (mut child, json) = loadtest(
        &[
            "--url",
            &ua,
            "--url",
            &ub,
            "--listeners",
            "40",
            "--stations",
            "2",
            "--duration",
            "10s",
            "--reconnect",
        ],
        &dir,
    );
    let stdout = crate::support::cli::lines(child.stdout.take().expect("loadtest's stdout"));
    wait_for(&stdout, "the ramp", |l| l.contains("ramp done"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    a.kill();
    crate::support::process::signal(child.id(), "USR1");
    wait_for(&stdout, "convergence after the mark", |l| {
        l.contains("mark 1: every listener holds the newest state again")
    });
    let r = report(child, &json);
    let l = &r["listeners"];
    assert!(l["reconnects"].as_u64() >= Some(20), "{r:#}");
    assert_eq!(l["down_at_end"], 0, "{r:#}");
    assert!(l["broadcaster_resumes"].as_u64() >= Some(1), "{r:#}");
    assert_eq!(r["seq_regressions"], 0, "{r:#}");
    assert_eq!(r["final_state_delivery_pct"], 100.0, "{r:#}");
    let mark = &r["marks"][0];
    assert!(mark["converged_after_s"].as_f64().is_some(), "{r:#}");
    assert!(mark["reconnects"].as_u64() >= Some(20), "{r:#}");
}
