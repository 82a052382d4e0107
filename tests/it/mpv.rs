//! `radio listen --player mpv` drives a real mpv (`--ao=null`): the test
//! reads mpv's `time-pos` over the same IPC socket (`--player-arg=
//! --input-ipc-server=PATH`) and compares it with the station's position,
//! after tune-in, a seek, a pause and play, and a track change; at a
//! track's end mpv waits; each track plays at its measured gain (mpv's
//! `af`, read back); and listen's exits: Ctrl-C, mpv dying, no mpv.

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

/// The gain mpv applies: the `volume` of its `@radio-gain` audio filter
/// (`None` without one).
fn radio_gain(mpv: &mut MpvIpc) -> Option<String> {
    let af = mpv.get("af");
    af.as_array()?
        .iter()
        .find(|f| f["label"] == "radio-gain")
        .map(|f| f["params"]["volume"].as_str().unwrap_or("?").to_owned())
}

/// Waits until mpv plays a file ending in `track` with the gain `want`.
fn wait_gain(mpv: &mut MpvIpc, track: &str, want: Option<String>) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let path = mpv.get("path");
        let at = path.as_str().unwrap_or("");
        let gain = radio_gain(mpv);
        if at.ends_with(&format!("/media/{track}")) && gain == want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{track} at {want:?}: mpv plays {at:?} at {gain:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Each track plays at the gain its `sync` gives (the server measured it),
/// as a per-file audio filter that leaves with the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mpv_plays_each_track_at_its_gain() {
    let media = TempDir::new("mpv-gain");
    media.write("loud.wav", crate::support::sine_wav(30, -6.0));
    media.write("quiet.wav", crate::support::sine_wav(30, -20.0));
    // mpv plays Opus; the server cannot decode it to measure it.
    crate::support::ffmpeg_tone(&media, "opus.opus", 30, &["-c:a", "libopus"]);
    let server = Server::with(|c| c.media.dir = Some(media.path().to_owned()));
    let gains = crate::support::eventually("the tracks are measured", async || {
        let list = server.get("/api/library").await.json();
        let gain = |id: &str| {
            list.as_array()?
                .iter()
                .find(|t| t["id"] == id)?
                .get("gain_db")?
                .as_f64()
        };
        match (gain("loud.wav"), gain("quiet.wav")) {
            (Some(l), Some(q)) => Ok((l, q)),
            _ => Err(list.clone()),
        }
    })
    .await;
    let (loud, quiet) = gains;
    let mut b = Client::connect(&server).await;
    b.start("gain").await;
    b.update("gain", "loud.wav", 1_000, true).await;
    let sockets = TempDir::new("mpv-gain-socket");
    let (mut listen, _frames, _err) = listen_mpv(&server, "gain", &socket_in(&sockets));
    let mut mpv = tokio::task::block_in_place(|| MpvIpc::connect(&socket_in(&sockets)));
    let db = |g: f64| Some(format!("{g:.2}dB"));
    tokio::task::block_in_place(|| wait_gain(&mut mpv, "loud.wav", db(loud)));
    b.update("gain", "quiet.wav", 1_000, true).await;
    tokio::task::block_in_place(|| wait_gain(&mut mpv, "quiet.wav", db(quiet)));
    // A track with no gain plays without the filter: none is left over.
    b.update("gain", "opus.opus", 1_000, true).await;
    tokio::task::block_in_place(|| wait_gain(&mut mpv, "opus.opus", None));
    signal(listen.id(), "INT");
    assert!(exit_status(&mut listen, "listen after Ctrl-C").success());
}
