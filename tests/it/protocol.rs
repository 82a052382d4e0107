//! Every message and error code of the protocol, over real sockets against
//! a real server: in this process, and through `radio serve` for the smoke
//! test and SIGTERM. What a backend decides (claims, grace periods, `seq`,
//! stopping, the listing) is checked on every backend in `backend.rs`.

use std::time::Duration;

use futures_util::SinkExt;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

use crate::support::http::{UPGRADE, read_until_closed, send};
use crate::support::{Client, Server, eventually, request};

#[tokio::test]
async fn welcome_then_ping_pong_echoes() {
    let server = Server::start();
    let mut c = Client::connect(&server).await;
    assert!(!c.session_id.is_empty());
    c.send(json!({"type":"ping","id":"abc","client_time_ms":12345}))
        .await;
    let p = c.recv().await;
    assert_eq!(p["type"], "pong");
    assert_eq!(p["id"], "abc");
    assert_eq!(p["client_time_ms"], 12345);
    assert!(p["server_time_ms"].as_i64().unwrap() > 1_700_000_000_000);
    c.send(json!({"type":"ping","id":7})).await;
    let p = c.recv().await;
    assert_eq!(p["id"], 7);
    assert!(p.get("client_time_ms").is_none());
}

/// The smoke test through the binary: `radio serve` as a process.
#[tokio::test]
async fn broadcast_reaches_a_listener() {
    let server = Server::spawn_process(&[]);
    let mut b = Client::connect(&server).await;
    let mut l = Client::connect(&server).await;
    assert!(!l.tune("jazz").await, "not live before start");
    b.start("jazz").await;
    l.expect("broadcaster_online").await;
    let seq = b.update("jazz", "a.mp3", 1000, true).await;
    let s = l.expect("sync").await;
    assert_eq!(s["seq"], seq);
    assert_eq!(s["station"], "jazz");
    assert_eq!(s["track"], "a.mp3");
    assert_eq!(s["position_ms"], 1000);
    assert_eq!(s["playing"], true);
    assert_eq!(s["cause"], "update");
    assert!(s["server_time_ms"].as_i64().is_some());
}

#[tokio::test]
async fn at_server_ms_carries_the_position_forward() {
    let server = Server::start();
    let mut b = Client::connect(&server).await;
    let mut l = Client::connect(&server).await;
    b.start("lag").await;
    l.tune("lag").await;
    b.send(json!({"type":"ping","client_time_ms":0})).await;
    let now = b.recv().await["server_time_ms"].as_i64().unwrap();
    b.send(
        json!({"type":"update","station":"lag","track":"t","position_ms":10000,
        "playing":true,"at_server_ms": now - 1000}),
    )
    .await;
    let s = l.expect("sync").await;
    let pos = s["position_ms"].as_u64().unwrap();
    assert!(
        (11_000..12_000).contains(&pos),
        "carried forward by ~1s: {pos}"
    );
    // Further than 5 s off: ignored, position taken as at receipt.
    b.send(
        json!({"type":"update","station":"lag","track":"t","position_ms":10000,
        "playing":true,"at_server_ms": now - 60_000}),
    )
    .await;
    let s = l.expect("sync").await;
    assert_eq!(s["position_ms"], 10000);
}

#[tokio::test]
async fn tune_out_stops_syncs_and_retuning_switches_station() {
    let server = Server::start();
    let mut b = Client::connect(&server).await;
    let mut l = Client::connect(&server).await;
    b.start("one").await;
    b.start("two").await;
    l.tune("one").await;
    b.update("one", "a", 0, true).await;
    l.expect("sync").await;
    // Tuning to another station replaces the first.
    l.tune("two").await;
    b.update("one", "b", 0, true).await;
    b.update("two", "c", 0, true).await;
    let s = l.expect("sync").await;
    assert_eq!(s["station"], "two");
    l.send(json!({"type":"tune_out"})).await;
    assert_eq!(l.expect("tuned_out").await["type"], "tuned_out");
    b.update("two", "d", 0, true).await;
    l.expect_none("sync", Duration::from_millis(300)).await;
}

#[tokio::test]
async fn every_error_code() {
    let server = Server::with(|c| c.conn.keys.key = Some("open-sesame".into()));
    let mut c = Client::connect(&server).await;
    // bad_message: not JSON, not an object, no type, missing or mistyped field.
    c.send_text("hello").await;
    assert_eq!(c.recv().await["code"], "bad_message");
    c.send_text("[1,2,3]").await;
    assert_eq!(c.recv().await["code"], "bad_message");
    c.expect_error(json!({"station":"x"}), "bad_message").await;
    let e = c
        .expect_error(json!({"type":"tune_in"}), "bad_message")
        .await;
    assert_eq!(e["request_type"], "tune_in");
    c.expect_error(
        json!({"type":"update","station":"s","track":"t","position_ms":"ten","playing":true}),
        "bad_message",
    )
    .await;
    c.expect_error(
        json!({"type":"update","station":"s","track":"x".repeat(513),"position_ms":1,"playing":true}),
        "bad_message",
    )
    .await;
    // unknown_type
    c.expect_error(json!({"type":"dance"}), "unknown_type")
        .await;
    // invalid_station
    c.expect_error(
        json!({"type":"tune_in","station":"no spaces"}),
        "invalid_station",
    )
    .await;
    c.expect_error(
        json!({"type":"start_broadcasting","station":"x".repeat(65),"key":"open-sesame"}),
        "invalid_station",
    )
    .await;
    // unauthorized: missing and wrong key.
    c.expect_error(
        json!({"type":"start_broadcasting","station":"k"}),
        "unauthorized",
    )
    .await;
    c.expect_error(
        json!({"type":"start_broadcasting","station":"k","key":"nope"}),
        "unauthorized",
    )
    .await;
    // not_live: update/heartbeat/stop before start.
    c.expect_error(
        json!({"type":"update","station":"k","track":"t","position_ms":0,"playing":true}),
        "not_live",
    )
    .await;
    c.expect_error(
        json!({"type":"heartbeat","station":"k","position_ms":0}),
        "not_live",
    )
    .await;
    c.expect_error(
        json!({"type":"stop_broadcasting","station":"k"}),
        "not_live",
    )
    .await;
    // station_taken and not_owner.
    c.send(json!({"type":"start_broadcasting","station":"k","key":"open-sesame"}))
        .await;
    assert_eq!(c.recv().await["type"], "broadcasting");
    let mut other = Client::connect(&server).await;
    other
        .expect_error(
            json!({"type":"start_broadcasting","station":"k","key":"open-sesame"}),
            "station_taken",
        )
        .await;
    other
        .expect_error(
            json!({"type":"update","station":"k","track":"t","position_ms":0,"playing":true}),
            "not_owner",
        )
        .await;
    other
        .expect_error(
            json!({"type":"stop_broadcasting","station":"k"}),
            "not_owner",
        )
        .await;
    // unsupported: binary frames.
    c.ws.send(Message::Binary(vec![1, 2, 3].into()))
        .await
        .expect("send a binary frame");
    let e = c.recv().await;
    assert_eq!(e["code"], "unsupported");
    // The connection survives all of it.
    c.send(json!({"type":"ping"})).await;
    assert_eq!(c.recv().await["type"], "pong");
    assert!(
        server
            .metric("radio_errors_total{code=\"bad_message\"}")
            .await
            >= 6.0
    );
}

#[tokio::test]
async fn rate_limit_answers_then_closes_a_flooder() {
    let server = Server::with(|c| c.conn.rate_limit = 5);
    let mut c = Client::connect(&server).await;
    for _ in 0..15 {
        c.send(json!({"type":"ping"})).await;
    }
    let mut pongs = 0;
    let mut limited = 0;
    for _ in 0..15 {
        let f = c.recv().await;
        match f["type"].as_str() {
            Some("pong") => pongs += 1,
            Some("error") => {
                assert_eq!(f["code"], "rate_limited");
                limited += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    // A burst of twice the rate passes (plus what refills meanwhile).
    assert!(pongs >= 10, "{pongs} pongs");
    assert!(limited >= 1, "{limited} refused");
    assert_eq!(pongs + limited, 15);
    // A refused message was dropped, not handled too: no more pongs.
    c.expect_none("pong", Duration::from_millis(300)).await;
    // Keep flooding: the server closes the connection.
    for _ in 0..200 {
        if c.ws
            .send(Message::Text("{\"type\":\"ping\"}".into()))
            .await
            .is_err()
        {
            break;
        }
    }
    // (Closed mid-flood, the socket may be reset before the close frame
    // is read, so the code is not asserted.)
    c.expect_closed().await;
    server
        .wait_metric("radio_disconnects_total{reason=\"rate_limit\"}", 1.0)
        .await;
    // Others are unaffected.
    let mut ok = Client::connect(&server).await;
    ok.send(json!({"type":"ping"})).await;
    assert_eq!(ok.recv().await["type"], "pong");
}

#[tokio::test]
async fn oversized_message_closes_with_1009() {
    let server = Server::with(|c| c.conn.max_message_bytes = 1024);
    let mut c = Client::connect(&server).await;
    let big = format!(r#"{{"type":"ping","id":"{}"}}"#, "x".repeat(2000));
    c.send_text(&big).await;
    c.expect_close(1009).await;
}

#[tokio::test]
async fn burst_of_updates_arrives_in_order_ending_with_the_newest() {
    let server = Server::with(|c| c.conn.rate_limit = 100_000);
    let mut b = Client::connect(&server).await;
    let mut listeners = Vec::new();
    for _ in 0..5 {
        let mut l = Client::connect(&server).await;
        l.tune("burst").await;
        listeners.push(l);
    }
    b.start("burst").await;
    for i in 0..500u64 {
        b.send(
            json!({"type":"update","station":"burst","track":format!("t{i}"),
            "position_ms":i,"playing":true}),
        )
        .await;
    }
    let last = b.update("burst", "final", 0, true).await;
    for l in &mut listeners {
        let mut prev = 0;
        loop {
            let f = l.recv().await;
            if f["type"] != "sync" {
                continue;
            }
            let seq = f["seq"].as_u64().unwrap();
            assert!(seq > prev, "seq must only grow: {prev} then {seq}");
            prev = seq;
            if seq == last {
                assert_eq!(f["track"], "final");
                break;
            }
        }
    }
}

/// A server with `write_timeout` (and no rate limit to speak of), a
/// broadcaster live on `station` and two listeners tuned to it: one that
/// is to stop reading, and one that keeps up. Returns (server,
/// broadcaster, stalled, healthy).
async fn stall_setup(write_timeout: Duration, station: &str) -> (Server, Client, Client, Client) {
    let server = Server::with(|c| {
        c.conn.rate_limit = 100_000;
        c.conn.write_timeout = write_timeout;
    });
    let mut b = Client::connect(&server).await;
    let mut stalled = Client::connect(&server).await;
    let mut healthy = Client::connect(&server).await;
    stalled.tune(station).await;
    healthy.tune(station).await;
    b.start(station).await;
    (server, b, stalled, healthy)
}

/// Sends `n` unacknowledged updates with 500-byte track names tagged `tag`.
async fn flood(b: &mut Client, station: &str, tag: &str, n: u64) {
    let pad = "p".repeat(500);
    for i in 0..n {
        b.send(
            json!({"type":"update","station":station,"track":format!("{pad}{tag}-{i}"),
            "position_ms":i,"playing":true}),
        )
        .await;
    }
}

/// Skips frames until the `sync` with `seq`, and returns it.
async fn sync_with_seq(c: &mut Client, seq: u64) -> serde_json::Value {
    loop {
        let f = c.expect("sync").await;
        if f["seq"] == seq {
            return f;
        }
    }
}

#[tokio::test]
async fn stalled_listener_gets_the_newest_state_and_others_are_unaffected() {
    let (_server, mut b, mut stalled, mut healthy) =
        stall_setup(Duration::from_secs(60), "slow").await;
    stalled.expect("broadcaster_online").await;
    // ~4 MB of states while `stalled` reads nothing: far more than the
    // socket buffers hold.
    let mut last = 0;
    for round in 0..8u64 {
        flood(&mut b, "slow", &round.to_string(), 1000).await;
        last = b.update("slow", &format!("newest-{round}"), 0, true).await;
        // The healthy listener keeps up and sees each round's newest.
        sync_with_seq(&mut healthy, last).await;
    }
    // Now the stalled listener reads: it skips stale states but ends with
    // the newest, in order.
    let mut prev = 0;
    let mut received = 0;
    loop {
        let f = stalled.expect("sync").await;
        let seq = f["seq"].as_u64().unwrap();
        assert!(seq > prev);
        prev = seq;
        received += 1;
        if seq == last {
            assert_eq!(f["track"], "newest-7");
            break;
        }
    }
    assert!(
        received < 8001,
        "conflation skipped stale states ({received} received)"
    );
}

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_after_the_write_timeout() {
    let (server, mut b, mut stalled, mut healthy) = stall_setup(Duration::from_secs(1), "w").await;
    // Keep the stalled client's socket full for longer than the timeout.
    eventually("the stalled client is closed", async || {
        flood(&mut b, "w", "", 200).await;
        let last = b.update("w", "mark", 0, true).await;
        sync_with_seq(&mut healthy, last).await;
        let closed = server
            .metric("radio_disconnects_total{reason=\"slow_client\"}")
            .await;
        if closed >= 1.0 { Ok(()) } else { Err(closed) }
    })
    .await;
    // The healthy listener still gets the newest, and the server counts one
    // listener fewer.
    let last = b.update("w", "after", 0, true).await;
    assert_eq!(sync_with_seq(&mut healthy, last).await["track"], "after");
    server.wait_metric("radio_listeners", 1.0).await;
    // The stalled client finds its stream ended once it drains the buffer
    // (without a close frame: the server gave up writing to it).
    stalled.expect_closed().await;
}

#[tokio::test]
async fn half_open_connections_are_reaped() {
    let server = Server::with(|c| {
        c.conn.keepalive_interval = Duration::from_millis(200);
        c.conn.keepalive_timeout = Duration::from_secs(1);
    });
    let mut s = send(server.addr, "GET", "/ws", &UPGRADE, None).await;
    // Read (so buffers never fill) but never answer a ping, like a peer
    // whose application is gone.
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf).await.expect("read the 101");
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 101"));
    server.wait_metric("radio_connections", 1.0).await;
    read_until_closed(&mut s, "the server closes the silent connection").await;
    server
        .wait_metric("radio_disconnects_total{reason=\"keepalive_timeout\"}", 1.0)
        .await;
    server.wait_metric("radio_connections", 0.0).await;
}

/// A client that never reads could stay on an idle station for ever by
/// sending pongs nobody asked for (WebSocket allows them), or pings of its
/// own: only a pong that echoes the server's last ping counts as life.
#[tokio::test]
async fn unsolicited_pongs_do_not_keep_a_silent_client() {
    let server = Server::with(|c| {
        c.conn.keepalive_interval = Duration::from_millis(200);
        c.conn.keepalive_timeout = Duration::from_secs(1);
    });
    let mut s = send(server.addr, "GET", "/ws", &UPGRADE, None).await;
    let mut raw = RawFrames::after_upgrade(&mut s).await;
    let (mut reader, mut writer) = s.split();
    // A pong and a ping every 100 ms, unasked, for up to 8 s.
    let nags = async {
        let mask = [0x11, 0x22, 0x33, 0x44];
        for _ in 0..80 {
            for opcode in [0x8a, 0x89] {
                let mut frame = vec![opcode, 0x80 | 4];
                frame.extend_from_slice(&mask);
                frame.extend(b"nag!".iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
                if writer.write_all(&frame).await.is_err() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let close = async {
        loop {
            match raw.next_from(&mut reader).await {
                Some((0x8, payload)) => return payload,
                Some(_) => {}
                None => panic!("closed without a close frame"),
            }
        }
    };
    let close = tokio::select! {
        close = close => close,
        () = nags => panic!("still connected after 8 s of unsolicited pongs"),
    };
    assert_keepalive_close(&close);
}

/// Keepalive every 300 ms, closed after 1.2 s of silence; a station with a
/// state; and a raw listener tuned to it, which never answers a ping.
async fn unanswering_listener(station: &str) -> (Server, Client, tokio::net::TcpStream, RawFrames) {
    let server = Server::with(|c| {
        c.conn.keepalive_interval = Duration::from_millis(300);
        c.conn.keepalive_timeout = Duration::from_millis(1200);
    });
    let mut b = Client::connect(&server).await;
    b.start(station).await;
    b.update(station, "t", 0, true).await;
    let mut s = send(server.addr, "GET", "/ws", &UPGRADE, None).await;
    let raw = RawFrames::after_upgrade(&mut s).await;
    let tune = format!(r#"{{"type":"tune_in","station":"{station}"}}"#);
    s.write_all(&masked_text(&tune))
        .await
        .expect("send tune_in");
    (server, b, s, raw)
}

/// States every 100 ms from `b` until `until`, while reading the raw
/// listener; returns (syncs, pings) seen, or the close frame's payload if
/// it was closed meanwhile.
async fn states_until(
    b: &mut Client,
    station: &str,
    s: &mut tokio::net::TcpStream,
    raw: &mut RawFrames,
    until: tokio::time::Instant,
) -> Result<(u32, u32), Vec<u8>> {
    let updates = async {
        let mut i = 0;
        while tokio::time::Instant::now() < until {
            i += 1;
            b.update(station, "t", i, true).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let reads = async {
        let (mut syncs, mut pings) = (0, 0);
        while let Ok(frame) = tokio::time::timeout_at(until, raw.next(s)).await {
            match frame {
                Some((0x1, text))
                    if String::from_utf8_lossy(&text).contains(r#""type":"sync""#) =>
                {
                    syncs += 1
                }
                Some((0x9, _)) => pings += 1,
                Some((0x8, payload)) => return Err(payload),
                Some(_) => {}
                None => panic!("closed without a close frame"),
            }
        }
        Ok((syncs, pings))
    };
    // The reads end at `until` or at the close, whichever comes first.
    let mut reads = std::pin::pin!(reads);
    tokio::select! {
        r = &mut reads => r,
        () = updates => reads.await,
    }
}

/// Reads the raw listener until its close frame; whether it was pinged
/// first, and the close frame's payload.
async fn until_closed(s: &mut tokio::net::TcpStream, raw: &mut RawFrames) -> (bool, Vec<u8>) {
    let mut pinged = false;
    loop {
        match raw.next(s).await {
            Some((0x9, _)) => pinged = true,
            Some((0x8, payload)) => return (pinged, payload),
            Some(_) => {}
            None => panic!("closed without a close frame"),
        }
    }
}

fn assert_keepalive_close(close: &[u8]) {
    assert_eq!(
        close.get(..2),
        Some(&1008u16.to_be_bytes()[..]),
        "{close:?}"
    );
    assert_eq!(String::from_utf8_lossy(&close[2..]), "keepalive timeout");
}

/// A listener whose TCP acknowledges the states written to it needs no ping
/// (src/server/connection/keepalive.rs): this one never answers a ping yet
/// stays connected for three keepalive timeouts while states flow; once
/// they stop, it is pinged, and closed when it does not answer.
#[tokio::test]
async fn a_listener_taking_its_states_is_not_pinged_until_they_stop() {
    let (_server, mut b, mut s, mut raw) = unanswering_listener("acks").await;
    let until = tokio::time::Instant::now() + Duration::from_millis(3600);
    let (syncs, pings) = states_until(&mut b, "acks", &mut s, &mut raw, until)
        .await
        .unwrap_or_else(|close| panic!("closed while taking its states: {close:?}"));
    eprintln!("{syncs} syncs, {pings} pings while states flowed");
    assert!(syncs >= 15, "{syncs} syncs");
    assert!(pings <= 3, "{pings} pings in 12 checks while states flowed");
    // The states stop: pinged, no answer, closed for keepalive.
    let (pinged, close) = until_closed(&mut s, &mut raw).await;
    assert!(pinged, "no ping once the states stopped");
    assert_keepalive_close(&close);
}

/// An acknowledgement proves a TCP peer, not the client behind it (a proxy,
/// a hung application): a peer that has sent no frame for four keepalive
/// timeouts is pinged even while it takes its states, and closed when it
/// does not answer.
#[tokio::test]
async fn a_listener_that_never_answers_is_closed_even_while_taking_states() {
    let (_server, mut b, mut s, mut raw) = unanswering_listener("hung").await;
    let started = tokio::time::Instant::now();
    let until = started + Duration::from_secs(15);
    let close = states_until(&mut b, "hung", &mut s, &mut raw, until)
        .await
        .expect_err("never closed while it answered nothing");
    let after = started.elapsed();
    // Four timeouts without a frame (4.8 s), then one more unanswered.
    assert!(
        after >= Duration::from_millis(4800),
        "closed after {after:?}"
    );
    assert_keepalive_close(&close);
}

/// A text frame as a client must send it (masked).
fn masked_text(text: &str) -> Vec<u8> {
    let payload = text.as_bytes();
    assert!(payload.len() < 126, "a short frame");
    let mask = [0x11, 0x22, 0x33, 0x44];
    let mut frame = vec![0x81, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

/// The server's frames off a raw socket, which answers nothing by itself
/// (tungstenite answers pings while it reads).
struct RawFrames(Vec<u8>);

impl RawFrames {
    /// Reads the 101 response; what followed it is the first frames' bytes.
    async fn after_upgrade(s: &mut tokio::net::TcpStream) -> RawFrames {
        let mut buf = Vec::new();
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                assert!(buf.starts_with(b"HTTP/1.1 101"), "{buf:?}");
                return RawFrames(buf.split_off(end + 4));
            }
            let mut chunk = [0u8; 4096];
            let n = s.read(&mut chunk).await.expect("read the 101");
            assert!(n > 0, "closed before the 101");
            buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// The next frame's opcode and payload; `None` once the socket closed.
    async fn next(&mut self, s: &mut tokio::net::TcpStream) -> Option<(u8, Vec<u8>)> {
        self.next_from(s).await
    }

    /// [`RawFrames::next`] from any reader (the read half of a socket).
    async fn next_from(
        &mut self,
        s: &mut (impl tokio::io::AsyncRead + Unpin),
    ) -> Option<(u8, Vec<u8>)> {
        loop {
            if let Some((head, len)) = self.header() {
                if self.0.len() >= head + len {
                    let frame: Vec<u8> = self.0.drain(..head + len).collect();
                    return Some((frame[0] & 0x0f, frame[head..].to_vec()));
                }
            }
            let mut chunk = [0u8; 4096];
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.0.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// The buffered frame's header length and payload length, once whole.
    fn header(&self) -> Option<(usize, usize)> {
        let b = &self.0;
        match *b.get(1)? & 0x7f {
            126 => Some((4, u16::from_be_bytes([*b.get(2)?, *b.get(3)?]) as usize)),
            127 => {
                let len: [u8; 8] = b.get(2..10)?.try_into().ok()?;
                Some((10, u64::from_be_bytes(len) as usize))
            }
            n => Some((2, n as usize)),
        }
    }
}

#[tokio::test]
async fn a_responsive_client_is_kept_alive() {
    let server = Server::with(|c| {
        c.conn.keepalive_interval = Duration::from_millis(100);
        c.conn.keepalive_timeout = Duration::from_millis(500);
    });
    // tungstenite answers pings while the client reads.
    let mut c = Client::connect(&server).await;
    c.expect_none("error", Duration::from_millis(1500)).await;
    c.send(json!({"type":"ping"})).await;
    assert_eq!(c.recv().await["type"], "pong");
}

#[tokio::test]
async fn max_connections_answers_503_before_the_upgrade() {
    let server = Server::with(|c| c.max_connections = 2);
    let a = Client::connect(&server).await;
    let _b = Client::connect(&server).await;
    let r = request(server.addr, "GET", "/ws", &UPGRADE, None).await;
    assert_eq!(r.status, 503);
    assert!(r.text().contains("too many connections"), "{}", r.text());
    drop(a);
    eventually("a closed connection frees its slot", async || {
        Client::try_connect(&server.ws_url())
            .await
            .map_err(|e| e.to_string())
    })
    .await;
}

#[tokio::test]
async fn plain_http_to_the_websocket_endpoint_is_explained() {
    let server = Server::start();
    let r = server.get("/ws").await;
    assert_eq!(r.status, 400);
    assert!(r.text().contains("WebSocket"), "{}", r.text());
}

#[tokio::test]
async fn health_and_metrics() {
    let server = Server::start();
    assert_eq!(server.get("/healthz").await.status, 200);
    assert_eq!(server.get("/readyz").await.status, 200);
    let mut b = Client::connect(&server).await;
    let mut l = Client::connect(&server).await;
    b.start("m").await;
    l.tune("m").await;
    b.update("m", "t", 0, true).await;
    l.expect("sync").await;
    // The fan-out counts its pass once it has written to every listener,
    // which may be just after this one read its frame.
    server.wait_metric("radio_syncs_sent_total", 1.0).await;
    let r = server.get("/metrics").await;
    assert_eq!(r.status, 200);
    let text = r.text();
    for name in [
        "radio_connections 2",
        "radio_stations 1",
        "radio_listeners 1",
        "radio_inbound_messages_total{type=\"update\"} 1",
        "radio_syncs_sent_total 1",
        "radio_message_handling_seconds_count",
        "radio_disconnects_total{reason=\"slow_client\"} 0",
        "radio_errors_total{code=\"bad_message\"} 0",
    ] {
        assert!(text.contains(name), "missing {name} in\n{text}");
    }
    drop(b);
    drop(l);
    server.wait_metric("radio_connections", 0.0).await;
    server.wait_metric("radio_listeners", 0.0).await;
}

/// Through the binary: the signal, the close codes and the exit status.
#[tokio::test]
async fn sigterm_tells_clients_and_exits() {
    let mut server = Server::spawn_process(&[]);
    let mut a = Client::connect(&server).await;
    let mut b = Client::connect(&server).await;
    b.start("bye").await;
    a.tune("bye").await;
    server.signal("TERM");
    for c in [&mut a, &mut b] {
        let f = c.expect("server_shutdown").await;
        assert!(f["reconnect_after_ms"].as_u64().unwrap() > 0);
        c.expect_close(1001).await;
    }
    // It exits after SIGTERM, with status 0.
    let status = server.exit_within(Duration::from_secs(10));
    assert!(status.success(), "{status:?}");
    assert!(server.log().contains("SIGTERM"));
}

#[tokio::test]
async fn a_thousand_listeners_all_receive_a_sync() {
    // All from 127.0.0.1: past the default per-address cap.
    let server = Server::with(|c| c.max_connections_per_ip = 0);
    let mut b = Client::connect(&server).await;
    b.start("crowd").await;
    let mut tasks = tokio::task::JoinSet::new();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel(1000);
    for _ in 0..1000 {
        let url = server.ws_url();
        let ready = ready_tx.clone();
        tasks.spawn(async move {
            let mut l = Client::connect_url(&url).await;
            assert!(l.tune("crowd").await);
            ready.send(()).await.unwrap();
            let s = l.expect("sync").await;
            s["track"].as_str().unwrap().to_owned()
        });
    }
    for _ in 0..1000 {
        ready_rx.recv().await.unwrap();
    }
    b.update("crowd", "everyone", 0, true).await;
    let mut n = 0;
    while let Some(r) = tasks.join_next().await {
        assert_eq!(r.unwrap(), "everyone");
        n += 1;
    }
    assert_eq!(n, 1000);
}

#[tokio::test]
async fn a_client_that_never_finishes_its_handshake_is_dropped() {
    let server = Server::with(|c| c.handshake_timeout = Duration::from_millis(500));
    let connect = || tokio::net::TcpStream::connect(server.addr);
    let mut silent = connect().await.expect("connect");
    let mut partial = connect().await.expect("connect");
    partial
        .write_all(b"GET /ws HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .expect("send half a request");
    for s in [&mut silent, &mut partial] {
        read_until_closed(s, "the server closes the stalled handshake").await;
    }
}
