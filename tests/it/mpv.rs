//! `radio listen --player mpv` drives a real mpv (`--ao=null`): the test
//! reads mpv's position over the same IPC socket (`--player-arg=
//! --input-ipc-server=PATH`) and compares it with the station's position,
//! after tune-in, a seek, a pause and play, and a track change, also over
//! a far link (a TCP proxy with latency and a bandwidth cap) on WAV and
//! MP3; at a track's end mpv waits; each track plays at its measured gain
//! (mpv's `af`, read back); a track mpv cannot decode is named with mpv's
//! reason; no sound at all, or an output that is not real-time, is said;
//! with `--media-base-url` the media comes from there (a second server);
//! and listen's exits: Ctrl-C, mpv dying, no mpv, no sound.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::cli::{drain, exit_status, json_lines, lines, wait_for};
use crate::support::process::{kill, signal};
use crate::support::{Client, Server, TempDir, radio_bin, tone_wav, tone_wav_at};

/// How far mpv may be from the station 3 s after a change.
const TOLERANCE_MS: f64 = 250.0;

/// mpv's IPC socket, as the test's own second client of it.
pub(crate) struct MpvIpc {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    id: u64,
}

impl MpvIpc {
    /// Connects once mpv has opened the socket.
    pub(crate) fn connect(path: &Path) -> MpvIpc {
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
    pub(crate) fn get(&mut self, property: &str) -> Value {
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

/// The URL mpv plays (its `path`) without its query: the library's
/// URLs name the file's version (`?v=`).
fn file_of(path: &Value) -> &str {
    let url = path.as_str().unwrap_or_default();
    url.split('?').next().unwrap_or_default()
}

/// The station's position now from its newest `sync`, as listen received it.
fn station_ms(sync: &Value) -> f64 {
    station_at(sync, radio::protocol::now_ms() as f64)
}

/// The station's position at `at_ms` (the server's clock, which is ours).
fn station_at(sync: &Value, at_ms: f64) -> f64 {
    let pos = sync["position_ms"].as_f64().expect("position_ms");
    if sync["playing"] != true {
        return pos;
    }
    let age = at_ms - sync["server_time_ms"].as_f64().unwrap();
    let end = sync["duration_ms"].as_f64().unwrap_or(f64::MAX);
    (pos + age).min(end)
}

/// mpv's drift from the station now: its `audio-pts` (its position,
/// sharper than `time-pos`, which moves in audio-buffer steps) against the
/// station's timeline at the middle of the IPC round trip.
fn drift_now(mpv: &mut MpvIpc) -> (Option<f64>, f64) {
    let before = radio::protocol::now_ms() as f64;
    let pts = mpv.get("audio-pts").as_f64().map(|s| s * 1000.0);
    let after = radio::protocol::now_ms() as f64;
    (pts, (before + after) / 2.0)
}

/// How far mpv may be from the station [`LANDED_AFTER`] a change.
const LANDED_MS: f64 = 100.0;
/// How soon after a change mpv must be within [`LANDED_MS`].
const LANDED_AFTER: Duration = Duration::from_millis(1_500);

/// From [`LANDED_AFTER`] after `since` (when listen printed `sync`), mpv
/// is within [`LANDED_MS`] of the station: ten readings 100 ms apart, of
/// which two may be off (a loaded machine may starve mpv's audio for a
/// moment, which the follower then mends; a follower that lands off stays
/// off for seconds).
fn assert_landed(mpv: &mut MpvIpc, sync: &Value, since: std::time::Instant, what: &str) {
    std::thread::sleep((since + LANDED_AFTER).saturating_duration_since(std::time::Instant::now()));
    let mut drifts = Vec::new();
    for _ in 0..10 {
        let (pts, at) = drift_now(mpv);
        drifts.push(pts.map_or(f64::NAN, |p| (p - station_at(sync, at)).round()));
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("{what}: drift {drifts:?} ms");
    let within = drifts.iter().filter(|d| d.abs() <= LANDED_MS).count();
    assert!(
        within >= 8,
        "{what}: mpv's drift from the station (ms), from {LANDED_AFTER:?} after: {drifts:?}"
    );
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

/// mpv's audio output in these tests: none, in real time, with a small
/// buffer (paused, mpv reports its position less what it holds buffered).
const NULL_OUTPUT: &[&str] = &[
    "--player-arg=--ao=null",
    "--player-arg=--ao-null-buffer=0.05",
];

/// `radio listen --json --player mpv` at `url` with the test's socket and
/// `player_args`; returns the process, its JSON lines (frames and `player`
/// lines) and its stderr.
fn listen_mpv(
    url: &str,
    station: &str,
    socket: &Path,
    player_args: &[&str],
) -> (Child, Receiver<Value>, Receiver<String>) {
    let mut child = Command::new(radio_bin())
        .args(["listen", "--json", "--url", url, "--station", station])
        .args(["--player", "mpv"])
        .args(player_args)
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
    station_with(
        media(),
        station,
        track,
        position_ms,
        Link::Direct,
        NULL_OUTPUT,
    )
    .await
}

/// How listen reaches the server.
#[derive(Clone, Copy)]
enum Link {
    Direct,
    /// Through [`slow_link`]: [`FAR_MS`] away, [`FAR_BYTES_PER_SEC`] wide.
    Far,
}

async fn station_with(
    media: TempDir,
    station: &str,
    track: &str,
    position_ms: u64,
    link: Link,
    player_args: &[&str],
) -> Setup {
    let server = Server::with(|c| c.media.dir = Some(media.path().to_owned()));
    let mut b = Client::connect(&server).await;
    b.start(station).await;
    let seq = b.update(station, track, position_ms, true).await;
    let sockets = TempDir::new("mpv-socket");
    let url = match link {
        Link::Direct => server.ws_url(),
        Link::Far => format!("ws://{}/ws", slow_link(server.addr).await),
    };
    let (listen, frames, said) = listen_mpv(&url, station, &socket_in(&sockets), player_args);
    // What listen says is shown (when a test fails) with its time, and
    // passed on.
    let (tee, err) = std::sync::mpsc::channel();
    let t0 = std::time::Instant::now();
    std::thread::spawn(move || {
        while let Ok(line) = said.recv() {
            eprintln!("{:>6} ms: {line}", t0.elapsed().as_millis());
            tee.send(line).ok();
        }
    });
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
        assert!(file_of(&mpv.get("path")).ends_with("/media/alpha.wav"));
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
        assert!(file_of(&mpv.get("path")).ends_with("/media/beta.wav"));
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

/// With `radio serve --media-base-url` (media on a CDN or an object
/// store), mpv fetches each track from where the server's library says,
/// as the web player does: here a second server on the same files stands
/// for the CDN, and serves every media request, the one listened to none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mpv_fetches_the_media_from_the_media_base_url() {
    let media = media();
    let cdn = Server::with(|c| c.media.dir = Some(media.path().to_owned()));
    let server = Server::with(|c| {
        c.media.dir = Some(media.path().to_owned());
        c.media.base_url = Some(cdn.http_url(""));
    });
    let mut b = Client::connect(&server).await;
    b.start("cdn").await;
    let seq = b.update("cdn", "alpha.wav", 10_000, true).await;
    let sockets = TempDir::new("mpv-socket");
    let socket = socket_in(&sockets);
    let (mut listen, frames, _err) = listen_mpv(&server.ws_url(), "cdn", &socket, NULL_OUTPUT);
    let mut mpv = tokio::task::block_in_place(|| MpvIpc::connect(&socket));
    let sync = sync_seq(&frames, seq);
    let from_cdn = |mpv: &mut MpvIpc, track: &str| {
        let path = mpv.get("path");
        let want = cdn.http_url(&format!("/media/{track}?v="));
        assert!(
            path.as_str().unwrap_or_default().starts_with(&want),
            "mpv plays {path}, not {want}..."
        );
    };
    tokio::task::block_in_place(|| {
        assert_in_sync(&mut mpv, &sync, "3 s after tune-in");
        from_cdn(&mut mpv, "alpha.wav");
    });
    let seq = b.update("cdn", "beta.wav", 5_000, true).await;
    let sync = sync_seq(&frames, seq);
    tokio::task::block_in_place(|| {
        assert_in_sync(&mut mpv, &sync, "after a track change");
        from_cdn(&mut mpv, "beta.wav");
    });
    assert!(
        media_requests(&cdn).await >= 2.0,
        "the CDN served both tracks"
    );
    assert_eq!(
        media_requests(&server).await,
        0.0,
        "media requests to the server itself"
    );
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
        let at = file_of(&path);
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

/// The gains the server measured for two tracks, once it has.
async fn measured_gains(server: &Server, a: &str, b: &str) -> (f64, f64) {
    crate::support::eventually("the tracks are measured", async || {
        let list = server.get("/api/library").await.json();
        let gain = |id: &str| {
            list.as_array()?
                .iter()
                .find(|t| t["id"] == id)?
                .get("gain_db")?
                .as_f64()
        };
        match (gain(a), gain(b)) {
            (Some(x), Some(y)) => Ok((x, y)),
            _ => Err(list.clone()),
        }
    })
    .await
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
    let (loud, quiet) = measured_gains(&server, "loud.wav", "quiet.wav").await;
    let mut b = Client::connect(&server).await;
    b.start("gain").await;
    b.update("gain", "loud.wav", 1_000, true).await;
    let sockets = TempDir::new("mpv-gain-socket");
    let (mut listen, _frames, _err) =
        listen_mpv(&server.ws_url(), "gain", &socket_in(&sockets), NULL_OUTPUT);
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

/// One way's delay of [`slow_link`]: a server across an ocean.
const FAR_MS: u64 = 100;
/// [`slow_link`]'s width: 16 Mbit/s. mpv fetches ahead some 40 times as
/// fast as it plays, yet every seek beyond what it holds waits a round
/// trip and more, as on a real line.
const FAR_BYTES_PER_SEC: f64 = 2_000_000.0;

/// A TCP proxy to `to` on a port of its own, [`FAR_MS`] away and
/// [`FAR_BYTES_PER_SEC`] wide each way, as a far server is.
async fn slow_link(to: std::net::SocketAddr) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the slow link");
    let addr = listener.local_addr().expect("its address");
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = tokio::net::TcpStream::connect(to).await else {
                continue;
            };
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            tokio::spawn(far(client_read, server_write));
            tokio::spawn(far(server_read, client_write));
        }
    });
    addr
}

/// Copies `from` to `to` at [`FAR_BYTES_PER_SEC`], each piece passed on
/// [`FAR_MS`] after it was read.
async fn far(mut from: tokio::net::tcp::OwnedReadHalf, mut to: tokio::net::tcp::OwnedWriteHalf) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::time::Instant;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let n = from.read(&mut buf).await.unwrap_or(0);
            let due = Instant::now() + Duration::from_millis(FAR_MS);
            // An empty piece is the end.
            if tx.send((due, buf[..n].to_vec())).is_err() || n == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_secs_f64(n as f64 / FAR_BYTES_PER_SEC)).await;
        }
    });
    while let Some((due, piece)) = rx.recv().await {
        tokio::time::sleep_until(due).await;
        if piece.is_empty() || to.write_all(&piece).await.is_err() {
            break;
        }
    }
    if let Err(e) = to.shutdown().await {
        eprintln!("slow link: {e}");
    }
}

/// The media of [`media`] with `alpha` and `beta` also as MP3, encoded by
/// mpv itself (its libavcodec has LAME), so no other encoder is needed.
fn media_with_mp3() -> TempDir {
    let dir = media();
    for name in ["alpha", "beta"] {
        let out = Command::new("mpv")
            .args([
                "--no-config",
                "--msg-level=all=error",
                "--oac=libmp3lame",
                // As many bytes a second as the WAV's half: far seeks fetch.
                "--oacopts=b=160k",
                "--of=mp3",
            ])
            .arg(format!(
                "--o={}",
                dir.path().join(format!("{name}.mp3")).display()
            ))
            .arg(dir.path().join(format!("{name}.wav")))
            .output()
            .expect("run mpv to encode an MP3");
        assert!(
            out.status.success(),
            "mpv cannot encode MP3 here: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    dir
}

/// Over a far link, 1.5 s after a tune-in, a seek far ahead and a track
/// change, mpv is within 100 ms of the station: it waits for no stalled
/// reading and its seeks aim where the station is when they land.
async fn lands_in_sync(ext: &str) {
    let (alpha, beta) = (format!("alpha.{ext}"), format!("beta.{ext}"));
    let Setup {
        _media,
        _sockets,
        _server,
        mut b,
        listen: _listen,
        frames,
        err: _err,
        mut mpv,
        first,
    } = station_with(
        media_with_mp3(),
        "far",
        &alpha,
        30_000,
        Link::Far,
        NULL_OUTPUT,
    )
    .await;
    let since = std::time::Instant::now();
    tokio::task::block_in_place(|| assert_landed(&mut mpv, &first, since, "after a tune-in"));

    let seq = b.update("far", &alpha, 75_000, true).await;
    let sync = sync_seq(&frames, seq);
    let since = std::time::Instant::now();
    tokio::task::block_in_place(|| assert_landed(&mut mpv, &sync, since, "after a seek"));

    let seq = b.update("far", &beta, 40_000, true).await;
    let sync = sync_seq(&frames, seq);
    let since = std::time::Instant::now();
    tokio::task::block_in_place(|| assert_landed(&mut mpv, &sync, since, "after a track change"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mpv_lands_in_sync_over_a_far_link_wav() {
    lands_in_sync("wav").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mpv_lands_in_sync_over_a_far_link_mp3() {
    lands_in_sync("mp3").await;
}

/// A 3 s mono WAV file of silence in the codec `tag` names: 1 is PCM;
/// 0x2222 is a codec no decoder knows, which mpv cannot play.
fn wav_in_codec(tag: u16) -> Vec<u8> {
    let data = vec![0u8; 22_050 * 2 * 3];
    let mut fmt = Vec::new();
    fmt.extend_from_slice(&tag.to_le_bytes());
    fmt.extend_from_slice(&1u16.to_le_bytes()); // mono
    fmt.extend_from_slice(&22_050u32.to_le_bytes());
    fmt.extend_from_slice(&44_100u32.to_le_bytes());
    fmt.extend_from_slice(&2u16.to_le_bytes());
    fmt.extend_from_slice(&16u16.to_le_bytes());
    let mut riff = b"WAVEfmt ".to_vec();
    riff.extend_from_slice(&(fmt.len() as u32).to_le_bytes());
    riff.extend_from_slice(&fmt);
    riff.extend_from_slice(b"data");
    riff.extend_from_slice(&(data.len() as u32).to_le_bytes());
    riff.extend_from_slice(&data);
    let mut out = b"RIFF".to_vec();
    out.extend_from_slice(&(riff.len() as u32).to_le_bytes());
    out.extend_from_slice(&riff);
    out
}

/// mpv cannot open its audio output: listen quotes mpv's reason, blames
/// no track, and exits 1 (it cannot do its job), quitting mpv.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_sound_listen_says_why_and_exits_1() {
    let nowhere = TempDir::new("no-pulse");
    // A PulseAudio that is not there, whatever this machine runs.
    let pulse_host = format!(
        "--player-arg=--pulse-host=unix:{}",
        nowhere.path().join("none").display()
    );
    let outputs: [&[&str]; 2] = [
        &["--player-arg=--ao=bogus"],
        &["--player-arg=--ao=pulse", &pulse_host],
    ];
    for output in outputs {
        let Setup {
            _media,
            _sockets,
            _server,
            b: _b,
            mut listen,
            frames: _frames,
            err,
            mut mpv,
            first: _,
        } = station_with(media(), "mute", "alpha.wav", 0, Link::Direct, output).await;
        let pid = tokio::task::block_in_place(|| mpv.get("pid").as_u64().expect("mpv's pid"));
        let status = exit_status(&mut listen, "listen without sound");
        assert_eq!(status.code(), Some(1), "{output:?}");
        let said: Vec<String> = drain(&err, Duration::from_millis(200));
        let said = said.join("\n");
        eprintln!("{said}");
        assert!(
            said.contains("Could not open/initialize audio device -> no sound"),
            "{output:?}: {said}"
        );
        assert!(
            said.contains("mpv cannot output sound"),
            "{output:?}: {said}"
        );
        assert!(
            !said.contains("cannot play"),
            "{output:?}: no track is blamed: {said}"
        );
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "mpv (pid {pid}) outlived listen"
        );
    }
}

/// A track mpv cannot decode: listen says so in mpv's words, and plays the
/// station's next track.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_track_mpv_cannot_play_is_named_with_mpvs_reason() {
    let media = media();
    // Playable when the server scans it (a file that does not decode is
    // left out of the library), then rewritten in place, same size, in a
    // codec no decoder knows: what mpv fetches it cannot play.
    media.write("odd.wav", wav_in_codec(1));
    let odd = media.path().join("odd.wav");
    let Setup {
        _media,
        _sockets,
        _server,
        mut b,
        mut listen,
        frames,
        err,
        mpv: _mpv,
        first: _,
    } = station_with(media, "odd", "alpha.wav", 0, Link::Direct, NULL_OUTPUT).await;
    wait_for(&frames, "the first track playing", |v| {
        v["type"] == "player" && v["state"] == "playing"
    });
    std::fs::write(&odd, wav_in_codec(0x2222)).expect("rewrite odd.wav in place");
    b.update("odd", "odd.wav", 0, true).await;
    let note = wait_for(&err, "why", |l| l.contains("odd.wav"));
    eprintln!("{note}");
    assert!(
        note.starts_with("radio: mpv cannot play \"odd.wav\": no audio or video data played"),
        "{note}"
    );
    assert!(note.contains("mpv said: "), "mpv's own words: {note}");
    wait_for(&frames, "the player failed", |v| {
        v["type"] == "player" && v["state"] == "failed"
    });
    assert!(
        listen.try_wait().expect("listen's status").is_none(),
        "listen runs on"
    );
    // listen told the server (`cannot_play`); its only listener failed,
    // so the broadcaster hears `track_failed` with its next heartbeat.
    let told = crate::support::eventually("the broadcaster told", async || {
        crate::unplayable::heartbeat(&mut b, "odd").await.ok_or(())
    })
    .await;
    assert_eq!(told["track"], "odd.wav", "{told}");
    assert_eq!(told["listeners"], 1, "{told}");
    assert!(
        told["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "mpv's reason goes along: {told}"
    );

    let seq = b.update("odd", "alpha.wav", 5_000, true).await;
    sync_seq(&frames, seq);
    wait_for(&frames, "the next track playing", |v| {
        v["type"] == "player" && v["state"] == "playing"
    });
    kill(&mut listen);
}

/// A non-real-time output (`--ao=pcm`, a file): mpv races to the end;
/// listen says so rather than "playing".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_output_is_shown_as_not_real_time() {
    let out = TempDir::new("mpv-pcm");
    let pcm = format!(
        "--player-arg=--ao-pcm-file={}",
        out.path().join("out.wav").display()
    );
    let Setup {
        _media,
        _sockets,
        _server,
        b: _b,
        mut listen,
        frames,
        err,
        mpv: _mpv,
        first: _,
    } = station_with(
        media(),
        "pcm",
        "alpha.wav",
        10_000,
        Link::Direct,
        &["--player-arg=--ao=pcm", &pcm],
    )
    .await;
    wait_for(&frames, "the player not in real time", |v| {
        v["type"] == "player" && v["state"] == "not_real_time"
    });
    let note = wait_for(&err, "why", |l| l.contains("faster than real time"));
    assert!(note.contains("real-time output"), "{note}");
    // It stays so: mpv is not sent back to race again and again.
    let later = drain(&frames, Duration::from_millis(1_500));
    assert!(
        later
            .iter()
            .filter(|v| v["type"] == "player")
            .all(|v| v["state"] == "not_real_time"),
        "{later:?}"
    );
    kill(&mut listen);
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
    let path = path.split('?').next().unwrap_or_default().to_owned();
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
/// ahead), and the second track starts where the station's timeline puts it,
/// at its own gain (one is 14 dB quieter).
/// (The first track lasts 15 s, so the drift loop has brought mpv onto the
/// station's clock by its end, whatever its start.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mpv_goes_on_to_the_next_track_without_a_gap_or_a_fetch() {
    let media = TempDir::new("mpv-next");
    media.write("first.wav", tone_wav_at(15, &[330.0, 440.0], 0.5));
    media.write("second.wav", tone_wav_at(90, &[392.0], 0.1));
    let lists = TempDir::new("mpv-next-list");
    lists.write("list.m3u", "first.wav\nsecond.wav\n");
    let list = lists.path().join("list.m3u");
    let server = Server::with(|c| c.media.dir = Some(media.path().to_owned()));
    let (first_gain, second_gain) = measured_gains(&server, "first.wav", "second.wav").await;
    let sockets = TempDir::new("mpv-socket");
    let (mut listen, frames, _err) = listen_mpv(
        &server.ws_url(),
        "gapless",
        &socket_in(&sockets),
        NULL_OUTPUT,
    );
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
    let db = |g: f64| Some(format!("{g:.2}dB"));
    tokio::task::block_in_place(|| wait_gain(&mut mpv, "first.wav", db(first_gain)));
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
    // mpv fetches the appended track ahead, a moment after the append
    // (later on a busy machine): both tracks' requests are in before the
    // boundary, and none follows around it.
    let requests = loop {
        let n = media_requests(&server).await;
        if n >= 2.0 || epoch_ms() > boundary - 500.0 {
            break n;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(requests, 2.0, "second.wav was not fetched ahead");

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
    // mpv plays the entry it had, at the gain it was appended with: nothing
    // was loaded in its place.
    tokio::task::block_in_place(|| {
        assert_eq!(radio_gain(&mut mpv), db(second_gain), "second.wav's gain");
        let playlist = mpv.get("playlist");
        let entries = playlist.as_array().expect("a playlist");
        assert!(
            entries.iter().all(|e| e["filename"]
                .as_str()
                .map(|f| f.split('?').next().unwrap_or_default())
                .is_some_and(|f| f.ends_with("/first.wav") || f.ends_with("/second.wav"))),
            "{playlist}"
        );
    });
    drop(b);
    kill(&mut listen);
}
