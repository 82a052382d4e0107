//! `radio loadtest` against `radio serve`, both processes, with real
//! worker processes and real sockets. Nothing here asserts a speed; the
//! benchmarks in bench/ do the measuring.

use std::process::{Command, Output};

use serde_json::Value;

use crate::support::{Server, TempDir, radio_bin};

fn loadtest(server: &Server, args: &[&str]) -> Output {
    Command::new(radio_bin())
        .arg("loadtest")
        .args(["--url", &server.ws_url()])
        .args(args)
        .output()
        .expect("run radio loadtest")
}

fn text(out: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn field<'a>(report: &'a Value, path: &str) -> &'a Value {
    let v = path.split('.').fold(report, |v, key| &v[key]);
    assert!(!v.is_null(), "the report lacks {path}: {report:#}");
    v
}

#[test]
fn ten_thousand_listeners_over_three_workers_get_every_final_state() {
    let mut server = Server::spawn_process(&["--max-connections-per-ip", "0"]);
    let dir = TempDir::new("loadtest");
    let json = dir.path().join("report.json");
    let pid = server.pid().to_string();
    let out = loadtest(
        &server,
        &[
            "--listeners",
            "10000",
            "--workers",
            "3",
            "--stations",
            "2",
            "--duration",
            "3s",
            "--update-interval",
            "500ms",
            "--server-pid",
            &pid,
            "--min-delivery",
            "100",
            "--json",
            json.to_str().expect("utf-8 temp path"),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let report: Value =
        serde_json::from_slice(&std::fs::read(&json).expect("the JSON report is written"))
            .expect("the report is JSON");

    // Every field the issue promises is there.
    for path in [
        "listeners.attempted",
        "listeners.connected",
        "listeners.failed",
        "fanout_ms.p50",
        "fanout_ms.p90",
        "fanout_ms.p99",
        "fanout_ms.p999",
        "fanout_ms.max",
        "final_state_delivery_pct",
        "seq_regressions",
        "deliveries_per_sec",
        "server.rss_per_connection_bytes",
        "parameters.listeners",
        "parameters.stations",
        "parameters.workers",
        "handshake_ms.p99",
        "last_listener_ms.max",
        "sync_error_ms.p99",
        "generator.cpu_pct_of_machine_run",
    ] {
        field(&report, path);
    }
    assert_eq!(report["parameters"]["workers"], 3);
    assert_eq!(report["parameters"]["listeners"], 10000);
    assert_eq!(report["listeners"]["attempted"], 10000, "{report:#}");
    assert_eq!(report["listeners"]["connected"], 10000, "{report:#}");
    assert_eq!(report["listeners"]["failed"], 0, "{report:#}");
    assert_eq!(report["final_state_delivery_pct"], 100.0, "{report:#}");
    assert_eq!(report["seq_regressions"], 0, "{report:#}");
    // Every listener got the state of its station when it tuned in, and
    // syncs flowed during the run.
    assert_eq!(report["delivery"]["tune_in_syncs"], 10000, "{report:#}");
    assert!(report["delivery"]["updates_sent"].as_u64().unwrap() >= 2);
    assert!(report["delivery"]["syncs_received"].as_u64().unwrap() > 0);
    assert!(report["fanout_ms"]["count"].as_u64().unwrap() > 0);
    assert_eq!(report["thresholds"]["passed"], true);
    // The human summary says the same.
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("10000 connected"), "{stdout}");
    assert!(stdout.contains("final state 100.000%"), "{stdout}");
}

#[test]
fn an_impossible_p99_fails_the_run() {
    let server = Server::spawn_process(&["--max-connections-per-ip", "0"]);
    let out = loadtest(
        &server,
        &[
            "--listeners",
            "1000",
            "--workers",
            "1",
            "--duration",
            "2s",
            "--update-interval",
            "250ms",
            "--max-p99",
            "1ms",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("above --max-p99"), "{stdout}");
}

#[test]
fn bad_flags_are_explained() {
    let server = Server::spawn_process(&[]);
    let out = loadtest(&server, &["--listeners", "10", "--workers", "none"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("--workers must be a positive number or auto"),
        "{}",
        text(&out)
    );
    let out = loadtest(&server, &["--listeners", "10", "--server-pid", "999999999"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--server-pid 999999999"),
        "{}",
        text(&out)
    );
}

/// `--listen-only`: no broadcaster; the listeners tune to a station the
/// server runs and measure its own track changes, one state per track.
#[test]
fn listeners_of_a_server_run_station_measure_its_track_changes() {
    let media = crate::onair::library(&[("1.wav", 500), ("2.wav", 500)]);
    let mut server = Server::spawn_process(&[
        "--max-connections-per-ip",
        "0",
        "--media",
        media.arg(),
        "--station",
        "auto=library",
    ]);
    let dir = TempDir::new("loadtest-onair");
    let json = dir.path().join("report.json");
    let pid = server.pid().to_string();
    let out = loadtest(
        &server,
        &[
            "--listen-only",
            "auto",
            "--listeners",
            "300",
            // A ramp of 1.5 s: the station changes track meanwhile, states
            // the run must not count.
            "--connect-rate",
            "200",
            "--workers",
            "1",
            "--duration",
            "3s",
            "--server-pid",
            &pid,
            "--min-delivery",
            "100",
            "--json",
            json.to_str().expect("utf-8 temp path"),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let report: Value =
        serde_json::from_slice(&std::fs::read(&json).expect("the JSON report is written"))
            .expect("the report is JSON");
    assert_eq!(report["parameters"]["listen_only"], true, "{report:#}");
    assert_eq!(
        report["parameters"]["station_names"],
        serde_json::json!(["auto"])
    );
    assert_eq!(report["listeners"]["connected"], 300, "{report:#}");
    assert_eq!(report["final_state_delivery_pct"], 100.0, "{report:#}");
    assert_eq!(report["seq_regressions"], 0, "{report:#}");
    // One state a track: about six in three seconds, all of them owed to
    // every listener, and received.
    let states = report["delivery"]["updates_sent"].as_u64().unwrap();
    assert!((4..=8).contains(&states), "{report:#}");
    assert_eq!(report["delivery"]["expected"], states * 300, "{report:#}");
    // Exactly those: the states published while the listeners connected,
    // or after the run, are no part of it (nor of its latencies).
    assert_eq!(
        report["delivery"]["syncs_received"],
        states * 300,
        "{report:#}"
    );
    assert_eq!(report["fanout_ms"]["count"], states * 300, "{report:#}");
    // No timeline is known of a station the generator does not play.
    assert!(report["sync_error_ms"]["p99"].is_null(), "{report:#}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("(listening only)"), "{stdout}");
    assert!(stdout.contains("heartbeats published"), "{stdout}");

    // A station that does not play is refused, saying what to do; a
    // broadcaster's flags do not go with --listen-only.
    let out = loadtest(&server, &["--listen-only", "nobody", "--listeners", "10"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("the station is not live"),
        "{}",
        text(&out)
    );
    let out = loadtest(
        &server,
        &[
            "--listen-only",
            "auto",
            "--listeners",
            "10",
            "--stations",
            "2",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("cannot be used with"), "{}", text(&out));
}

/// A real HTTP stream on a socket: MP3-rate bytes (16,000 a second) in
/// chunked framing, after a 2 s burst, as a radio's stream sends them;
/// `/stall` pauses for 2.5 s from 1.5 s after each request. Runs until the
/// test ends (its thread is detached with its listener).
fn streamer() -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let addr = listener.local_addr().expect("address");
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match sock.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&head);
                    if !head.starts_with("GET /steady ") && !head.starts_with("GET /stall ") {
                        let _ = sock.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n").await;
                        return;
                    }
                    let stall = head.starts_with("GET /stall ");
                    let chunk = |n: usize| {
                        let mut c = format!("{n:x}\r\n").into_bytes();
                        c.extend(std::iter::repeat_n(0xFFu8, n));
                        c.extend_from_slice(b"\r\n");
                        c
                    };
                    let mut out = b"HTTP/1.1 200 OK\r\nContent-Type: audio/mpeg\r\nicy-br: 128\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
                    out.extend(chunk(32_000));
                    if sock.write_all(&out).await.is_err() {
                        return;
                    }
                    let start = tokio::time::Instant::now();
                    let mut tick = tokio::time::interval(std::time::Duration::from_millis(100));
                    loop {
                        tick.tick().await;
                        let t = start.elapsed().as_secs_f64();
                        if stall && (1.5..4.0).contains(&t) {
                            continue;
                        }
                        if sock.write_all(&chunk(1_600)).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
    });
    addr
}

fn stream_loadtest(url: &str, json: &std::path::Path) -> (Output, Value) {
    let out = Command::new(radio_bin())
        .args(["loadtest", "--stream", "--url", url])
        .args(["--listeners", "20", "--duration", "5s", "--json"])
        .arg(json)
        .output()
        .expect("run radio loadtest");
    let report = std::fs::read(json)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null);
    (out, report)
}

/// `--stream` counts a stream's audio (not its chunked framing), its
/// start, and the stalls and lost audio of a stream that pauses.
#[test]
fn stream_readers_measure_audio_stalls_and_loss() {
    let addr = streamer();
    let dir = TempDir::new("loadtest-stream");

    let (out, steady) =
        stream_loadtest(&format!("http://{addr}/steady"), &dir.path().join("s.json"));
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(field(&steady, "readers.started"), 20, "{}", text(&out));
    assert_eq!(field(&steady, "readers.failed"), 0);
    assert_eq!(field(&steady, "stalls.count"), 0, "{steady:#}");
    assert_eq!(field(&steady, "audio.bitrate_kbps"), 128);
    assert_eq!(field(&steady, "audio.bitrate_from"), "icy-br");
    // 16,000 audio bytes a second; the framing (about 1% here) is not audio.
    let rate = field(&steady, "audio.bytes_per_s.p50").as_f64().unwrap();
    assert!((15_000.0..16_100.0).contains(&rate), "{rate}: {steady:#}");
    assert_eq!(field(&steady, "audio.lost_bytes_estimate"), 0, "{steady:#}");
    assert!(field(&steady, "start_ms.p99").as_f64().unwrap() > 0.0);
    assert!(text(&out).contains("stalls      0"), "{}", text(&out));

    let (out, stalling) =
        stream_loadtest(&format!("http://{addr}/stall"), &dir.path().join("t.json"));
    assert!(out.status.success(), "{}", text(&out));
    // Each reader's 2.5 s pause is one stall, and what it never got is lost.
    assert_eq!(field(&stalling, "stalls.count"), 20, "{stalling:#}");
    assert_eq!(field(&stalling, "stalls.readers"), 20);
    assert!(
        field(&stalling, "audio.lost_bytes_estimate")
            .as_u64()
            .unwrap()
            > 20 * 8_000,
        "{stalling:#}"
    );

    // A stream that is not there: every reader fails, and the run fails.
    let (out, missing) = stream_loadtest(
        &format!("http://{addr}/nothing"),
        &dir.path().join("m.json"),
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(
        field(&missing, "readers.failed_by_reason.http_404"),
        20,
        "{missing:#}"
    );
}

/// `--stream --listen-only STATION` reads radio's own stream of a station
/// the server runs: every reader starts, at the bitrate the stream says.
#[test]
fn stream_readers_read_a_server_run_station() {
    let media = crate::onair::library(&[("1.wav", 4_000), ("2.wav", 4_000)]);
    let mut server = Server::spawn_process(&[
        "--max-connections-per-ip",
        "0",
        "--media",
        media.arg(),
        "--station",
        "auto=library",
    ]);
    let dir = TempDir::new("loadtest-stream-radio");
    let json = dir.path().join("report.json");
    let pid = server.pid().to_string();
    let out = Command::new(radio_bin())
        .args(["loadtest", "--stream", "--url", &server.http_url("")])
        .args([
            "--listen-only",
            "auto",
            "--listeners",
            "100",
            "--duration",
            "3s",
        ])
        .args(["--server-pid", &pid, "--json"])
        .arg(&json)
        .output()
        .expect("run radio loadtest");
    assert!(out.status.success(), "{}", text(&out));
    let report: Value =
        serde_json::from_slice(&std::fs::read(&json).expect("the JSON report is written"))
            .expect("the report is JSON");
    assert_eq!(
        field(&report, "parameters.urls")[0],
        format!("{}/stations/auto/stream", server.http_url("")),
        "{report:#}"
    );
    assert_eq!(field(&report, "readers.started"), 100, "{report:#}");
    assert_eq!(field(&report, "readers.failed"), 0, "{report:#}");
    assert_eq!(field(&report, "audio.bitrate_from"), "icy-br");
    assert_eq!(field(&report, "audio.bitrate_kbps"), 128);
    let rate = field(&report, "audio.bytes_per_s.p50").as_f64().unwrap();
    assert!(rate > 8_000.0, "{rate}: {report:#}");
    assert!(field(&report, "server.cpu_seconds_run").as_f64().unwrap() > 0.0);
}

/// `--fetch-media`: every listener of a server-run station fetches the
/// tracks it plays from `/media` (the library's URLs), as the web player
/// does; with prefetch, the announced next track ahead of its start, so a
/// track change needs no request; without (`current`), each change does.
#[test]
fn listeners_fetch_their_media_as_the_player_does() {
    let media = crate::onair::library(&[("1.wav", 700), ("2.wav", 700)]);
    let server = Server::spawn_process(&[
        "--max-connections-per-ip",
        "0",
        "--media",
        media.arg(),
        "--station",
        "auto=library",
    ]);
    let dir = TempDir::new("loadtest-media");
    let run = |mode: &str| -> (Value, String) {
        let json = dir.path().join(format!("{mode}.json"));
        let out = loadtest(
            &server,
            &[
                "--listen-only",
                "auto",
                "--listeners",
                "100",
                "--workers",
                "1",
                "--duration",
                "3s",
                &format!("--fetch-media={mode}"),
                "--json",
                json.to_str().expect("utf-8 temp path"),
            ],
        );
        assert!(out.status.success(), "{}", text(&out));
        let report: Value =
            serde_json::from_slice(&std::fs::read(&json).expect("the JSON report is written"))
                .expect("the report is JSON");
        (report, String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let size = std::fs::metadata(media.path().join("1.wav"))
        .expect("a track")
        .len() as f64;
    for mode in ["prefetch", "current"] {
        let (report, stdout) = run(mode);
        let m = field(&report, "media");
        assert_eq!(m["refused_total"], 0, "{mode}: {m:#}");
        assert_eq!(m["unknown_tracks"], 0, "{mode}: {m:#}");
        // Every listener fetched its first track at least, whole.
        assert!(
            m["bytes_per_listener"].as_f64().unwrap() >= size,
            "{mode}: {m:#}"
        );
        assert!(m["track_starts"].as_u64().unwrap() >= 200, "{mode}: {m:#}");
        assert_eq!(m["tune_in_playable_ms"]["count"], 100, "{mode}: {m:#}");
        assert!(
            m["playable_ms"]["count"].as_u64().unwrap() > 0,
            "{mode}: {m:#}"
        );
        let ahead = m["ahead_starts"].as_u64().unwrap();
        let starts = m["track_starts"].as_u64().unwrap();
        let requests = m["requests"].as_u64().unwrap();
        if mode == "prefetch" {
            assert!(ahead > 0, "{m:#}");
        } else {
            assert_eq!(ahead, 0, "{m:#}");
            assert_eq!(requests, starts, "one request per track start: {m:#}");
        }
        assert!(stdout.contains("media: "), "{stdout}");
    }
}

/// A CDN that answers every `GET` with the file `body` in chunks of 1,000
/// bytes (`Transfer-Encoding: chunked`, as a proxy of unknown length
/// sends), until `stop`; how many it answered.
fn chunking_cdn(
    body: Vec<u8>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> (std::net::SocketAddr, std::thread::JoinHandle<usize>) {
    use std::io::{Read, Write};
    use std::sync::atomic::Ordering;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the CDN");
    let addr = listener.local_addr().expect("its address");
    listener.set_nonblocking(true).expect("non-blocking accept");
    let answered = std::thread::spawn(move || {
        let mut answered = 0;
        while !stop.load(Ordering::Relaxed) {
            let Ok((mut conn, _)) = listener.accept() else {
                std::thread::sleep(std::time::Duration::from_millis(5));
                continue;
            };
            conn.set_nonblocking(false).expect("blocking connection");
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && conn.read(&mut byte).is_ok_and(|n| n == 1) {
                head.push(byte[0]);
            }
            let mut out = b"HTTP/1.1 200 OK\r\ncontent-type: audio/wav\r\n\
                transfer-encoding: chunked\r\nconnection: close\r\n\r\n"
                .to_vec();
            for chunk in body.chunks(1000) {
                out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                out.extend_from_slice(chunk);
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"0\r\n\r\n");
            // A listener may hang up once it has what it needs.
            let _ = conn.write_all(&out);
            answered += 1;
        }
        answered
    });
    (addr, answered)
}

/// `--fetch-media` through a CDN that chunks its answers: each body is
/// counted through the framing, every byte of the file and nothing else.
/// One long track, so that every fetch (one per listener, at tune-in) is
/// over before the run ends.
#[test]
fn fetched_media_is_counted_through_chunked_framing() {
    let media = crate::onair::library(&[("1.wav", 30_000)]);
    let file = std::fs::read(media.path().join("1.wav")).expect("a track");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (cdn, answered) = chunking_cdn(file.clone(), stop.clone());
    let base = format!("http://{cdn}");
    let server = Server::spawn_process(&[
        "--max-connections-per-ip",
        "0",
        "--media",
        media.arg(),
        "--media-base-url",
        &base,
        "--station",
        "auto=library",
    ]);
    let dir = TempDir::new("loadtest-chunked");
    let json = dir.path().join("report.json");
    let out = loadtest(
        &server,
        &[
            "--listen-only",
            "auto",
            "--listeners",
            "20",
            "--workers",
            "1",
            "--duration",
            "2s",
            "--fetch-media=current",
            "--json",
            json.to_str().expect("utf-8 temp path"),
        ],
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let answered = answered.join().expect("the CDN thread");
    assert!(out.status.success(), "{}", text(&out));
    let report: Value =
        serde_json::from_slice(&std::fs::read(&json).expect("the JSON report is written"))
            .expect("the report is JSON");
    let m = field(&report, "media");
    assert_eq!(m["refused_total"], 0, "{m:#}");
    assert_eq!(m["requests"], 20, "{m:#}");
    assert_eq!(answered, 20, "every fetch went to the CDN");
    assert_eq!(
        m["bytes"].as_u64(),
        Some(20 * file.len() as u64),
        "every body counted whole, without its framing: {m:#}"
    );
}
