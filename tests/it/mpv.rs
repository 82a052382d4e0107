//! `radio listen --player mpv` drives a real mpv (`--ao=null`): the test
//! reads mpv's `time-pos` over the same IPC socket (`--player-arg=
//! --input-ipc-server=PATH`) and compares it with the station's position,
//! after tune-in, a seek, a pause and play, and a track change; at a
//! track's end mpv waits; and listen's exits: Ctrl-C, mpv dying, no mpv.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::cli::{drain, exit_status, json_lines, lines, wait_for};
use crate::support::process::{kill, signal};
use crate::support::{Client, Server, TempDir, radio_bin, tone_wav};

/// How far mpv may be from the station (the number).
const TOLERANCE_MS: f64 = 250.0;

/// mpv's IPC socket, as the test's own second client of it.
struct MpvIpc {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    id: u64,
}

impl MpvIpc {
    /// Connects once mpv has opened the socket.
    fn connect(path: &Path) -> MpvIpc {
        for _ in 0..200 {
            if let Ok(s) = UnixStream::connect(path) {
                s.set_read_timeout(Some(Duration::from_secs(5)))
                    .expect("a read timeout");
                return MpvIpc {
                    reader: BufReader::new(s.try_clone().expect("clone the socket")),
                    writer: s,
                    id: 1000,
                };
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("mpv opened no socket at {}", path.display());
    }

    /// A property's value (`null` while unavailable).
    fn get(&mut self, property: &str) -> Value {
        self.id += 1;
        let id = self.id;
        let line = json!({"command": ["get_property", property], "request_id": id});
        writeln!(self.writer, "{line}").expect("write to mpv");
        loop {
            let mut buf = String::new();
            let n = self.reader.read_line(&mut buf).expect("read from mpv");
            assert!(n > 0, "mpv closed its socket");
            let v: Value = serde_json::from_str(&buf).expect("mpv speaks JSON");
            if v["request_id"] == id {
                return v["data"].clone();
            }
        }
    }

    fn time_pos_ms(&mut self) -> Option<f64> {
        self.get("time-pos").as_f64().map(|s| s * 1000.0)
    }
}

/// The station's position now from its newest `sync`, as listen received it.
fn station_ms(sync: &Value) -> f64 {
    let pos = sync["position_ms"].as_f64().expect("position_ms");
    if sync["playing"] != true {
        return pos;
    }
    let age = radio::protocol::now_ms() as f64 - sync["server_time_ms"].as_f64().unwrap();
    let end = sync["duration_ms"].as_f64().unwrap_or(f64::MAX);
    (pos + age).min(end)
}

/// 3 s after a change, mpv is within [`TOLERANCE_MS`] of the station, in
/// three samples 300 ms apart.
fn assert_in_sync(mpv: &mut MpvIpc, sync: &Value, what: &str) {
    std::thread::sleep(Duration::from_secs(3));
    let mut drifts = Vec::new();
    for _ in 0..3 {
        let at = mpv.time_pos_ms().unwrap_or(-1e9);
        drifts.push((at - station_ms(sync)).round());
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(
        drifts.iter().all(|d| d.abs() < TOLERANCE_MS),
        "{what}: mpv's drift from the station (ms): {drifts:?}"
    );
    eprintln!("{what}: drift {drifts:?} ms");
}

/// `radio listen --json --player mpv` with the test's socket; returns the
/// process, its JSON lines (frames and `player` lines) and its stderr.
fn listen_mpv(
    server: &Server,
    station: &str,
    socket: &Path,
) -> (Child, Receiver<Value>, Receiver<String>) {
    let mut child = Command::new(radio_bin())
        .args([
            "listen",
            "--json",
            "--url",
            &server.ws_url(),
            "--station",
            station,
        ])
        .args([
            "--player",
            "mpv",
            "--player-arg=--ao=null",
            "--player-arg=--ao-null-buffer=0.05",
        ])
        .arg(format!(
            "--player-arg=--input-ipc-server={}",
            socket.display()
        ))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start radio listen --player mpv");
    let out = json_lines(child.stdout.take().expect("stdout"));
    let err = lines(child.stderr.take().expect("stderr"));
    (child, out, err)
}

/// The `sync` with this `seq`, as listen printed it.
fn sync_seq(frames: &Receiver<Value>, seq: u64) -> Value {
    wait_for(frames, &format!("sync {seq}"), |v| {
        v["type"] == "sync" && v["seq"].as_u64() >= Some(seq)
    })
}

fn media() -> TempDir {
    let dir = TempDir::new("mpv");
    dir.write(
        "alpha.wav",
        tone_wav(90, &[220.0, 330.0], Some("Alpha"), Some("Tones")),
    );
    dir.write(
        "beta.wav",
        tone_wav(90, &[440.0, 550.0], Some("Beta"), Some("Tones")),
    );
    dir.write("short.wav", tone_wav(4, &[660.0], Some("Short"), None));
    dir
}

fn socket_in(dir: &TempDir) -> PathBuf {
    dir.path().join("mpv.sock")
}

/// A station playing `track` from `position_ms`, a `radio listen --player
/// mpv` tuned to it, and the test's own line to that mpv.
struct Setup {
    _media: TempDir,
    _sockets: TempDir,
    _server: Server,
    b: Client,
    listen: Child,
    frames: Receiver<Value>,
    err: Receiver<String>,
    mpv: MpvIpc,
    /// The station's first `sync`, as listen received it.
    first: Value,
}

async fn station_with_mpv(station: &str, track: &str, position_ms: u64) -> Setup {
    let media = media();
    let server = Server::with(|c| c.media.dir = Some(media.path().to_owned()));
    let mut b = Client::connect(&server).await;
    b.start(station).await;
    let seq = b.update(station, track, position_ms, true).await;
    let sockets = TempDir::new("mpv-socket");
    let (listen, frames, err) = listen_mpv(&server, station, &socket_in(&sockets));
    let mpv = tokio::task::block_in_place(|| MpvIpc::connect(&socket_in(&sockets)));
    let first = sync_seq(&frames, seq);
    Setup {
        _media: media,
        _sockets: sockets,
        _server: server,
        b,
        listen,
        frames,
        err,
        mpv,
        first,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mpv_plays_the_station_in_sync() {
    let Setup {
        _media,
        _sockets,
        _server,
        mut b,
        mut listen,
        frames,
        err: _err,
        mut mpv,
        first: sync,
    } = station_with_mpv("mpv", "alpha.wav", 10_000).await;
    tokio::task::block_in_place(|| {
        assert_in_sync(&mut mpv, &sync, "3 s after tune-in");
        assert!(
            mpv.get("path")
                .as_str()
                .unwrap_or("")
                .ends_with("/media/alpha.wav")
        );
    });

    let seq = b.update("mpv", "alpha.wav", 40_000, true).await;
    let sync = sync_seq(&frames, seq);
    tokio::task::block_in_place(|| assert_in_sync(&mut mpv, &sync, "after a seek"));

    // Paused, mpv reports its position less the audio it holds buffered
    // (hence the null output's 50 ms buffer here, not its default 200 ms),
    // though it resumes from the right place: the check after play.
    let seq = b.update("mpv", "alpha.wav", 50_000, false).await;
    let sync = sync_seq(&frames, seq);
    tokio::task::block_in_place(|| {
        assert_in_sync(&mut mpv, &sync, "paused");
        assert_eq!(mpv.get("pause"), true, "mpv pauses with the station");
    });
    let seq = b.update("mpv", "alpha.wav", 50_000, true).await;
    let sync = sync_seq(&frames, seq);
    tokio::task::block_in_place(|| {
        assert_in_sync(&mut mpv, &sync, "after pause and play");
        assert_eq!(mpv.get("pause"), false);
    });

    let seq = b.update("mpv", "beta.wav", 5_000, true).await;
    let sync = sync_seq(&frames, seq);
    tokio::task::block_in_place(|| {
        assert_in_sync(&mut mpv, &sync, "after a track change");
        assert!(
            mpv.get("path")
                .as_str()
                .unwrap_or("")
                .ends_with("/media/beta.wav")
        );
    });
    // listen says how far mpv is, once a second.
    let report = drain(&frames, Duration::from_millis(1_200))
        .into_iter()
        .rfind(|v| v["type"] == "player")
        .expect("a player line a second");
    assert_eq!(report["state"], "playing", "{report}");
    assert!(report["drift_ms"].as_i64().unwrap().abs() < 250, "{report}");

    // Ctrl-C: mpv quits, listen exits 0 and leaves no player behind.
    let pid = mpv.get("pid").as_u64().expect("mpv's pid");
    signal(listen.id(), "INT");
    assert!(exit_status(&mut listen, "listen after Ctrl-C").success());
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "mpv (pid {pid}) outlived listen"
    );
}

/// `radio listen` killed outright (SIGKILL: no handler or drop of ours
/// runs) takes its mpv with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mpv_ends_when_listen_is_killed() {
    let mut setup = station_with_mpv("killed", "alpha.wav", 0).await;
    let pid = tokio::task::block_in_place(|| setup.mpv.get("pid").as_u64().expect("mpv's pid"));
    kill(&mut setup.listen);
    // Reparented when listen died, it may linger as a zombie: that is gone.
    let running = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            !stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while running() {
        assert!(
            std::time::Instant::now() < deadline,
            "mpv (pid {pid}) outlived a killed listen"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mpv_waits_at_a_tracks_end_and_skips_what_the_server_lacks() {
    // Two seconds before the end of a 4 s track, and no next state yet.
    let Setup {
        _media,
        _sockets,
        _server,
        mut b,
        mut listen,
        frames,
        err,
        mut mpv,
        first: _,
    } = station_with_mpv("ends", "short.wav", 2_000).await;
    wait_for(&frames, "the player waiting at the end", |v| {
        v["type"] == "player" && v["state"] == "ended"
    });
    tokio::task::block_in_place(|| {
        // It stays at the end: never started again on its own.
        for _ in 0..6 {
            let at = mpv.time_pos_ms().unwrap_or(0.0);
            assert!(at > 3_500.0, "mpv went back to {at} ms");
            std::thread::sleep(Duration::from_millis(300));
        }
    });

    // The station plays something the server does not serve.
    let seq = b.update("ends", "not here.mp3", 0, true).await;
    sync_seq(&frames, seq);
    wait_for(&frames, "the player idle", |v| {
        v["type"] == "player" && v["state"] == "not_in_library"
    });
    wait_for(&err, "a note", |l| {
        l.contains("not in this server's library")
    });
    tokio::task::block_in_place(|| {
        assert_eq!(mpv.get("idle-active"), true, "mpv stays idle");
    });

    // mpv dies: listen says so and exits 1.
    let pid = tokio::task::block_in_place(|| mpv.get("pid").as_u64().expect("mpv's pid"));
    signal(u32::try_from(pid).unwrap(), "KILL");
    let status = exit_status(&mut listen, "listen after mpv died");
    assert_eq!(status.code(), Some(1));
    wait_for(&err, "why", |l| l.contains("mpv exited"));
    kill(&mut listen);
}

#[test]
fn without_mpv_listen_says_what_to_install() {
    let empty = TempDir::new("no-mpv");
    let out = Command::new(radio_bin())
        .args(["listen", "--station", "s", "--player", "mpv"])
        .env("PATH", empty.path())
        .output()
        .expect("run radio listen");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("apt-get install mpv"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");

    // A player argument mpv refuses: it exits at start, and so do we.
    let out = Command::new(radio_bin())
        .args(["listen", "--station", "s", "--player", "mpv"])
        .arg("--player-arg=--no-such-option")
        .output()
        .expect("run radio listen");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("mpv exited at start"), "{err}");
}

/// One command on the test's own line to mpv; its `data`.
fn mpv_command(mpv: &mut MpvIpc, command: Value) -> Value {
    mpv.id += 1;
    let id = mpv.id;
    writeln!(
        mpv.writer,
        "{}",
        json!({"command": command, "request_id": id})
    )
    .expect("write to mpv");
    loop {
        let mut buf = String::new();
        let n = mpv.reader.read_line(&mut buf).expect("read from mpv");
        assert!(n > 0, "mpv closed its socket");
        let v: Value = serde_json::from_str(&buf).expect("mpv speaks JSON");
        if v["request_id"] == id {
            return v["data"].clone();
        }
    }
}

/// The server's media requests so far, whatever their answer.
async fn media_requests(server: &Server) -> f64 {
    let text = server.get("/metrics").await.text();
    text.lines()
        .filter(|l| l.starts_with("radio_http_requests_total{route=\"media\","))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The wall clock in ms, finer than [`radio::protocol::now_ms`].
fn epoch_ms() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64()
        * 1000.0
}

/// mpv's file, audio clock and speed at one instant (one command, so
/// they agree), and that instant.
struct Sample {
    at_ms: f64,
    path: String,
    pts_ms: Option<f64>,
    speed: f64,
}

fn sample(mpv: &mut MpvIpc) -> Sample {
    let text = mpv_command(
        mpv,
        json!(["expand-text", "${path}\n${=audio-pts}\n${=speed}"]),
    );
    let at_ms = epoch_ms();
    let mut parts = text.as_str().unwrap_or_default().split('\n');
    let mut next = || parts.next().unwrap_or_default().to_owned();
    let (path, pts, speed) = (next(), next(), next());
    Sample {
        at_ms,
        path,
        pts_ms: pts.parse::<f64>().ok().map(|s| s * 1000.0),
        speed: speed.parse().unwrap_or(1.0),
    }
}

/// A shell station whose playlist says what plays next: listen appends the
/// next track to mpv's playlist ahead of the end, and mpv goes on to it at
/// the boundary. Measured on mpv's audio clock (`audio-pts`, sampled every
/// 2 ms over its IPC): the first track's clock reaching its end, the
/// second's starting from 0: the gap between is under 50 ms. No request
/// reaches the server around the boundary (the next track was fetched
/// ahead), and the second track starts where the station's timeline puts it.
/// (The first track lasts 15 s, so the drift loop has brought mpv onto the
/// station's clock by its end, whatever its start.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mpv_goes_on_to_the_next_track_without_a_gap_or_a_fetch() {
    let media = TempDir::new("mpv-next");
    media.write(
        "first.wav",
        tone_wav(15, &[330.0, 440.0], Some("First"), None),
    );
    media.write("second.wav", tone_wav(90, &[392.0], Some("Second"), None));
    let lists = TempDir::new("mpv-next-list");
    lists.write("list.m3u", "first.wav\nsecond.wav\n");
    let list = lists.path().join("list.m3u");
    let server = Server::with(|c| c.media.dir = Some(media.path().to_owned()));
    let sockets = TempDir::new("mpv-socket");
    let (mut listen, frames, _err) = listen_mpv(&server, "gapless", &socket_in(&sockets));
    let mut mpv = tokio::task::block_in_place(|| MpvIpc::connect(&socket_in(&sockets)));
    wait_for(&frames, "tuned", |v| v["type"] == "tuned");
    let url = server.ws_url();
    let b = crate::support::cli::Broadcast::spawn(&[
        "--url",
        &url,
        "--station",
        "gapless",
        "--playlist",
        list.to_str().expect("a UTF-8 path"),
    ]);
    let first = wait_for(&frames, "the first track's sync", |v| {
        v["type"] == "sync" && v["track"] == "first.wav"
    });
    assert_eq!(first["next"]["track"], "second.wav", "{first}");
    let ms = |v: &Value| v.as_f64().expect("a number");
    let boundary =
        ms(&first["server_time_ms"]) + ms(&first["duration_ms"]) - ms(&first["position_ms"]);

    // The next track is in mpv's playlist well before the boundary.
    let appended_at = tokio::task::block_in_place(|| {
        loop {
            if mpv_command(&mut mpv, json!(["get_property", "playlist-count"])) == 2 {
                break epoch_ms();
            }
            assert!(epoch_ms() < boundary, "nothing appended before the end");
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    let lead = boundary - appended_at;
    eprintln!("second.wav appended {lead:.0} ms before the boundary");
    assert!(lead > 1_500.0, "appended only {lead:.0} ms before the end");
    let requests = media_requests(&server).await;

    let (samples, first_ms) = tokio::task::block_in_place(|| {
        let first_ms = mpv.get("duration").as_f64().expect("first's duration") * 1000.0;
        let mut samples = Vec::new();
        loop {
            let s = sample(&mut mpv);
            let done = s.path.ends_with("/second.wav") && s.pts_ms.is_some_and(|p| p > 1_000.0);
            samples.push(s);
            if done {
                break (samples, first_ms);
            }
            assert!(
                epoch_ms() < boundary + 10_000.0,
                "mpv never played second.wav"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    });
    assert_eq!(
        media_requests(&server).await,
        requests,
        "a media request around the boundary"
    );

    // Where the first track's clock reached its end, and the second's
    // started, on the wall clock. mpv names the second file while the
    // first one's last moments still play from its audio buffer (the
    // second's clock is below 0 then), so the first one ends where its
    // clock reaches its length; unless the second was heard at once (the
    // first was cut short), which ends it there.
    let played = |name: &str| {
        samples
            .iter()
            .filter(|s| s.path.ends_with(name) && s.pts_ms.is_some())
            .collect::<Vec<_>>()
    };
    let (a, b2) = (played("/first.wav"), played("/second.wav"));
    let last = a.last().expect("samples of first.wav");
    let left_ms = first_ms - last.pts_ms.unwrap_or(0.0);
    let mut ended = last.at_ms + left_ms / last.speed;
    let heard = b2.first().expect("samples of second.wav");
    if heard.pts_ms.is_some_and(|p| p >= 0.0) {
        ended = ended.min(heard.at_ms);
    }
    let moving = b2
        .iter()
        .find(|s| s.pts_ms.is_some_and(|p| p > 0.0))
        .expect("second.wav playing");
    let started = moving.at_ms - moving.pts_ms.unwrap_or(0.0) / moving.speed;
    let gap = started - ended;
    let second = wait_for(&frames, "the second track's sync", |v| {
        v["type"] == "sync" && v["track"] == "second.wav"
    });
    let timeline = ms(&second["server_time_ms"]) - ms(&second["position_ms"]);
    eprintln!(
        "first.wav -> second.wav in mpv: gap {gap:.1} ms; {:.0} ms from the station's timeline; \
         last sample of first.wav {:.0} ms before its end",
        started - timeline,
        left_ms
    );
    assert!(gap.abs() < 50.0, "a gap of {gap:.1} ms between the tracks");
    assert!(
        (started - timeline).abs() < TOLERANCE_MS,
        "second.wav started {:.0} ms from the station's timeline",
        started - timeline
    );
    // mpv plays the entry it had: nothing was loaded in its place.
    tokio::task::block_in_place(|| {
        let playlist = mpv.get("playlist");
        let entries = playlist.as_array().expect("a playlist");
        assert!(
            entries.iter().all(|e| e["filename"]
                .as_str()
                .is_some_and(|f| f.ends_with("/first.wav") || f.ends_with("/second.wav"))),
            "{playlist}"
        );
    });
    drop(b);
    kill(&mut listen);
}
