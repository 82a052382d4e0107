//! The fan-out under pressure: a station's states are written to its
//! listeners' sockets by the station's shards while each listener's own task
//! writes its replies, and the two must never interleave frames or lose the
//! newest state (docs/architecture.md, src/server/outlet.rs).

use std::time::Duration;

use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::support::{Client, Server};

/// A server with the rate limit out of the way of a flood.
fn server() -> Server {
    Server::with(|c| {
        c.conn.rate_limit = 100_000;
        c.conn.list_rate = 0;
    })
}

/// Sends `n` unacknowledged updates on `station` with tracks near the
/// 512-byte limit.
async fn flood(b: &mut Client, station: &str, n: u64) {
    let pad = "p".repeat(480);
    for i in 0..n {
        b.send(
            json!({"type":"update","station":station,"track":format!("{pad}-{i}"),
            "position_ms":i,"playing":true}),
        )
        .await;
    }
}

/// Reads `sync` frames (every frame is parsed as it arrives) until the one
/// with `last`; asserts `seq` only grows; returns how many arrived.
async fn syncs_until(c: &mut Client, last: u64) -> (u64, Value) {
    let mut prev = 0;
    let mut n = 0;
    loop {
        let f = c.expect("sync").await;
        let seq = f["seq"].as_u64().expect("a seq");
        assert!(seq > prev, "seq must only grow: {prev} then {seq}");
        prev = seq;
        n += 1;
        if seq == last {
            return (n, f);
        }
    }
}

/// A listener that stops reading, its receive buffer 4 KiB (the server's
/// send buffer is 32 KiB): the states the fan-out writes to it fill its
/// socket, and the write that fills it is cut short (the server logs each
/// one; the test fails if none was), so its task must write the rest of
/// that frame before anything else. Once the listener reads, every frame
/// parses and the states end with the newest.
#[tokio::test]
async fn a_listener_that_stops_reading_gets_whole_frames_ending_with_the_newest() {
    let server = Server::with_log("radio::server::outlet=debug", |c| {
        c.conn.rate_limit = 100_000;
    });
    let mut b = Client::connect(&server).await;
    let mut stalled = Client::connect_small_buffer(&server, 4096).await;
    let mut healthy = Client::connect(&server).await;
    stalled.tune("deep").await;
    healthy.tune("deep").await;
    b.start("deep").await;
    // 500 states of about 540 bytes, far more than both buffers hold, each
    // seen by the healthy listener before the next, so each is written to
    // the stalled one too rather than conflated away.
    let pad = "p".repeat(480);
    for i in 0..500 {
        let seq = b.update("deep", &format!("{pad}-{i}"), 0, true).await;
        syncs_until(&mut healthy, seq).await;
    }
    let last = b.update("deep", "newest", 0, true).await;
    assert_eq!(syncs_until(&mut healthy, last).await.1["track"], "newest");
    // The fan-out had to leave this listener to its own task, with half a
    // frame on the wire.
    assert!(
        server.metric("radio_fanout_skipped_total").await >= 1.0,
        "the stalled listener's socket never filled"
    );
    assert!(
        server.log().contains("fan-out write cut short"),
        "no fan-out write was cut short"
    );
    // Now it reads: every frame parses (tungstenite rejects a torn one and
    // the client fails on it), states skip stale ones and end with the newest.
    let (received, newest) = syncs_until(&mut stalled, last).await;
    assert_eq!(newest["track"], "newest");
    assert!(received <= 511, "{received} syncs");
}

#[tokio::test]
async fn replies_arrive_whole_and_in_order_during_a_fan_out_burst() {
    let server = server();
    let mut b = Client::connect(&server).await;
    let mut l = Client::connect(&server).await;
    l.tune("busy").await;
    b.start("busy").await;
    // Pings, WebSocket pings and station lists from the listener, while 500
    // states fan out to it.
    let burst = async {
        flood(&mut b, "busy", 500).await;
        b.update("busy", "last", 0, true).await
    };
    let asks = async {
        for id in 0..100u64 {
            l.send(json!({"type":"ping","id":id})).await;
            if id % 10 == 0 {
                l.send(json!({"type":"list_stations"})).await;
                l.ws.send(Message::Ping(vec![1, 2, 3].into()))
                    .await
                    .expect("a WebSocket ping");
            }
        }
    };
    let (last, ()) = tokio::join!(burst, asks);
    let (mut pongs, mut lists, mut prev_seq) = (0u64, 0u64, 0u64);
    while pongs < 100 || lists < 10 || prev_seq < last {
        let f = l.recv().await;
        match f["type"].as_str() {
            Some("pong") => {
                assert_eq!(f["id"], pongs, "pongs in the order of the pings");
                pongs += 1;
            }
            Some("stations") => {
                assert_eq!(f["stations"][0]["station"], "busy", "{f}");
                lists += 1;
            }
            Some("sync") => {
                let seq = f["seq"].as_u64().expect("a seq");
                assert!(seq > prev_seq, "seq must only grow: {prev_seq} then {seq}");
                prev_seq = seq;
            }
            Some("broadcaster_online") => {}
            _ => panic!("unexpected frame {f}"),
        }
    }
    assert_eq!(prev_seq, last, "the newest state arrived last");
    l.expect_none("sync", Duration::from_millis(200)).await;
}

#[tokio::test]
async fn no_state_follows_tuned_out_or_a_new_station() {
    let server = server();
    let mut a = Client::connect(&server).await;
    let mut c = Client::connect(&server).await;
    let mut l = Client::connect(&server).await;
    a.start("first").await;
    c.start("second").await;
    l.tune("first").await;
    // Retune and tune out in the middle of a burst: nothing of the old
    // station may arrive after the answer that left it.
    let burst = flood(&mut a, "first", 300);
    let moves = async {
        l.send(json!({"type":"tune_in","station":"second"})).await;
        l.send(json!({"type":"tune_out"})).await;
    };
    tokio::join!(burst, moves);
    let mut station = "first";
    loop {
        let f = l.recv().await;
        match f["type"].as_str() {
            Some("sync") => assert_eq!(f["station"], station, "{f}"),
            Some("tuned") => station = "second",
            Some("tuned_out") => break,
            _ => {}
        }
    }
    a.update("first", "after", 0, true).await;
    c.update("second", "after", 0, true).await;
    l.expect_none("sync", Duration::from_millis(300)).await;
}

/// A listener that re-tunes joins its new shard while its old shard, on
/// another thread, may not have taken its leave yet; both must still let
/// go of it once it leaves, or its socket stays open in the server for as
/// long as the station lives (a slot set by the new shard
/// made the old one drop the leave).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn re_tuning_listeners_leave_no_socket_behind() {
    let mut server = Server::spawn_process(&["--max-connections-per-ip", "0"]);
    let pid = server.pid();
    let open_files = move || {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|d| d.count())
            .expect("the server's open files")
    };
    let mut b = Client::connect(&server).await;
    b.start("one").await;
    b.start("two").await;
    b.update("one", "a", 0, true).await;
    b.update("two", "b", 0, true).await;
    let before = open_files();
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let url = server.ws_url();
        tasks.push(tokio::spawn(async move {
            let mut l = Client::connect_url(&url).await;
            for i in 0..100 {
                l.tune(if i % 2 == 0 { "one" } else { "two" }).await;
            }
        }));
    }
    for t in tasks {
        t.await.expect("a re-tuning listener");
    }
    crate::support::eventually("every listener's socket closed", async || {
        let now = open_files();
        if now <= before {
            Ok(())
        } else {
            Err(format!("{now} open files, {before} before the listeners"))
        }
    })
    .await;
    drop(b);
}
