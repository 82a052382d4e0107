//! A station's MP3 stream (`/stations/{name}/stream`) with real clients:
//! ffprobe reads it as MP3, with and without ICY metadata; mpv plays it
//! and reads the ICY title, which changes at a track change; the first
//! audio is the station's position (a track whose tone steps up every
//! second, decoded by ffmpeg); a paused station streams silence and one
//! that stops ends the stream; a hundred listeners get the same bytes from
//! one encoder; HEAD, a station not live, the metrics, the connection
//! rules, https, and a cluster whose every node streams every station.

use std::io::{Read as _, Write as _};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use radio::ServerConfig;
use serde_json::json;
use tokio::io::AsyncReadExt as _;
use tokio::net::TcpStream;

use crate::mpv::MpvIpc;
use crate::support::http::send;
use crate::support::{Client, Server, TempDir, eventually, request};

/// The decoded audio's sample rate.
const RATE: usize = 44_100;
/// Bytes of a second of the stream at the default 128 kb/s.
const SECOND: usize = 16_000;

/// A WAV of `seconds` whose tone is `step_hz(k)` during second `k`.
fn steps_wav(seconds: usize, title: &str, artist: &str) -> Vec<u8> {
    let samples: Vec<i16> = (0..seconds * RATE)
        .map(|i| {
            let t = i as f64 / RATE as f64;
            let hz = step_hz(i / RATE);
            ((2.0 * std::f64::consts::PI * hz * t).sin() * 0.5 * f64::from(i16::MAX)) as i16
        })
        .collect();
    radio::encode_wav(
        RATE as u32,
        &samples,
        &[(b"INAM", title), (b"IART", artist)],
    )
}

fn step_hz(second: usize) -> f64 {
    400.0 + 100.0 * second as f64
}

/// A library of two tracks, `a.wav` and `b.wav` (30 s each, titled), and
/// a server on it with `edit`.
fn serve(edit: impl FnOnce(&mut ServerConfig)) -> (TempDir, Server) {
    let dir = TempDir::new("stream");
    dir.write("a.wav", steps_wav(30, "First Song", "The Testers"));
    dir.write("b.wav", steps_wav(30, "Don't Stop", "Other Band"));
    let server = Server::with(|c| {
        c.media.dir = Some(dir.path().to_owned());
        edit(c);
    });
    (dir, server)
}

/// A broadcaster on `station` playing `track` from `position_ms`.
async fn broadcast(server: &Server, station: &str, track: &str, position_ms: u64) -> Client {
    let mut b = Client::connect(server).await;
    b.start(station).await;
    b.update(station, track, position_ms, true).await;
    b
}

/// A stream listener over a raw socket: the response head, and the body
/// read so far.
struct Listener {
    socket: TcpStream,
    head: String,
    body: Vec<u8>,
}

impl Listener {
    async fn open(server: &Server, station: &str, headers: &[(&str, &str)]) -> Listener {
        let path = format!("/stations/{station}/stream");
        let mut socket = send(server.addr, "GET", &path, headers, None).await;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let split = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            let n = tokio::time::timeout(Duration::from_secs(10), socket.read(&mut chunk))
                .await
                .expect("the stream's head within 10 s")
                .expect("read the head");
            assert!(
                n > 0,
                "closed before its head: {:?}",
                String::from_utf8_lossy(&buf)
            );
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..split]).into_owned();
        assert!(head.starts_with("HTTP/1.0 200"), "{head}");
        Listener {
            socket,
            head,
            body: buf[split + 4..].to_vec(),
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.head.split("\r\n").find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then_some(v.trim())
        })
    }

    /// Reads until the body has `n` bytes (within 15 s).
    async fn read_to(&mut self, n: usize) {
        let mut chunk = vec![0u8; 64 * 1024];
        while self.body.len() < n {
            let got = tokio::time::timeout(Duration::from_secs(15), self.socket.read(&mut chunk))
                .await
                .unwrap_or_else(|_| panic!("{} of {n} bytes within 15 s", self.body.len()))
                .expect("read the stream");
            assert!(got > 0, "the stream ended after {} bytes", self.body.len());
            self.body.extend_from_slice(&chunk[..got]);
        }
    }

    /// Reads until the server ends the stream; the bytes read.
    async fn read_to_end(&mut self, limit: Duration) -> usize {
        let mut chunk = vec![0u8; 64 * 1024];
        let start = self.body.len();
        loop {
            let got = tokio::time::timeout(limit, self.socket.read(&mut chunk))
                .await
                .expect("the stream ends in time");
            match got {
                Ok(0) | Err(_) => return self.body.len() - start,
                Ok(n) => self.body.extend_from_slice(&chunk[..n]),
            }
        }
    }
}

/// Runs `program` with `input` on its stdin; its stdout (and its stderr
/// in the failure message).
fn pipe(program: &str, args: &[&str], input: &[u8]) -> Vec<u8> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program} is missing ({e}): run scripts/setup.sh"));
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let mut out = Vec::new();
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_end(&mut out)
        .expect("read its output");
    let status = child.wait_with_output().expect("wait for it");
    // ffprobe may stop reading before the end: a broken pipe is fine.
    drop(writer.join());
    assert!(
        status.status.success(),
        "{program} failed: {}",
        String::from_utf8_lossy(&status.stderr)
    );
    out
}

/// The stream decoded to mono 44.1 kHz samples.
fn decode(mp3: &[u8]) -> Vec<f64> {
    let pcm = pipe(
        "ffmpeg",
        &[
            "-v", "error", "-f", "mp3", "-i", "pipe:0", "-ac", "1", "-ar", "44100",
        ]
        .iter()
        .chain(&["-f", "s16le", "pipe:1"])
        .copied()
        .collect::<Vec<_>>(),
        mp3,
    );
    pcm.chunks_exact(2)
        .map(|b| f64::from(i16::from_le_bytes([b[0], b[1]])) / f64::from(i16::MAX))
        .collect()
}

/// The power of `hz` in `samples` (Goertzel).
fn power(samples: &[f64], hz: f64) -> f64 {
    let w = 2.0 * std::f64::consts::PI * hz / RATE as f64;
    let (mut s1, mut s2) = (0.0, 0.0);
    for x in samples {
        let s = x + 2.0 * w.cos() * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    s1 * s1 + s2 * s2 - 2.0 * w.cos() * s1 * s2
}

/// Which second of a steps track `samples` come from.
fn second_of(samples: &[f64]) -> usize {
    (0..30)
        .max_by(|a, b| power(samples, step_hz(*a)).total_cmp(&power(samples, step_hz(*b))))
        .expect("candidates")
}

fn rms(samples: &[f64]) -> f64 {
    (samples.iter().map(|x| x * x).sum::<f64>() / samples.len().max(1) as f64).sqrt()
}

/// The ICY blocks of a body read with `Icy-MetaData: 1` every `metaint`
/// bytes: the audio without them, and the titles they carried in order.
fn strip_icy(body: &[u8], metaint: usize) -> (Vec<u8>, Vec<String>) {
    let (mut audio, mut titles) = (Vec::new(), Vec::new());
    let mut rest = body;
    while rest.len() > metaint {
        audio.extend_from_slice(&rest[..metaint]);
        let len = usize::from(rest[metaint]) * 16;
        let Some(block) = rest.get(metaint + 1..metaint + 1 + len) else {
            break;
        };
        if len > 0 {
            let text = String::from_utf8_lossy(block);
            let text = text.trim_end_matches('\0');
            let title = text
                .strip_prefix("StreamTitle='")
                .and_then(|t| t.strip_suffix("';"))
                .unwrap_or_else(|| panic!("a block of one StreamTitle, not {text:?}"));
            titles.push(title.to_owned());
        }
        rest = &rest[metaint + 1 + len..];
    }
    audio.extend_from_slice(rest);
    (audio, titles)
}

/// This process's ffmpeg children that exited and were never reaped.
fn zombie_ffmpegs() -> Vec<u32> {
    let me = std::process::id().to_string();
    let mut zombies = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let (state, ppid) = (fields.next(), fields.next());
        if head.ends_with("(ffmpeg") && state == Some("Z") && ppid == Some(me.as_str()) {
            zombies.extend(
                entry
                    .file_name()
                    .to_str()
                    .and_then(|p| p.parse::<u32>().ok()),
            );
        }
    }
    zombies
}

/// Every ffmpeg the servers of this process started and ended was reaped
/// (one may be between its end and its reaping for a moment).
async fn no_zombies() {
    eventually("no ffmpeg child left unreaped", async || {
        let zombies = zombie_ffmpegs();
        if zombies.is_empty() {
            Ok(())
        } else {
            Err(zombies)
        }
    })
    .await;
}

async fn metric(server: &Server, name: &str) -> f64 {
    let page = request(server.addr, "GET", "/metrics", &[], None)
        .await
        .text();
    page.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} not in the metrics"))
}

#[tokio::test]
async fn ffprobe_reads_the_stream_with_its_icy_titles_and_head_works() {
    let (_dir, server) = serve(|_| {});
    let not_live = request(server.addr, "GET", "/stations/nobody/stream", &[], None).await;
    assert_eq!(not_live.status, 404, "{}", not_live.text());
    assert!(not_live.text().contains("not live"), "{}", not_live.text());
    let head = request(server.addr, "HEAD", "/stations/nobody/stream", &[], None).await;
    assert_eq!(head.status, 404);

    let _b = broadcast(&server, "tones", "a.wav", 0).await;
    let head = request(server.addr, "HEAD", "/stations/tones/stream", &[], None).await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-type"), Some("audio/mpeg"));
    assert_eq!(head.header("icy-br"), Some("128"));
    assert_eq!(head.header("icy-name"), Some("tones"));
    assert!(head.body.is_empty());
    assert_eq!(
        metric(&server, "radio_stream_encoders").await,
        0.0,
        "HEAD encodes nothing"
    );

    let started = Instant::now();
    let mut plain = Listener::open(&server, "tones", &[]).await;
    assert_eq!(plain.header("icy-metaint"), None);
    assert_eq!(
        plain.header("icy-url"),
        Some("http://localhost/?station=tones")
    );
    plain.read_to(SECOND).await;
    // The burst: a second of audio well before a second has passed, and
    // never much more than --stream-burst.
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    assert!(
        plain.body.len() <= 2 * SECOND + 4_000,
        "{} bytes at once",
        plain.body.len()
    );
    assert_eq!(
        &plain.body[..2],
        &[0xFF, 0xFB],
        "the stream starts on an MP3 frame"
    );
    let probe = pipe(
        "ffprobe",
        &[
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name,sample_rate,channels",
            "-of",
            "csv=p=0",
            "-",
        ],
        &plain.body,
    );
    assert_eq!(String::from_utf8_lossy(&probe).trim(), "mp3,44100,2");
    // After the burst, real time: five seconds of audio take three.
    plain.read_to(5 * SECOND).await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(2_700),
        "5 s of audio in {took:?}"
    );

    let mut icy = Listener::open(&server, "tones", &[("Icy-MetaData", "1")]).await;
    assert_eq!(icy.header("icy-metaint"), Some("16000"));
    icy.read_to(2 * 16_000 + 200).await;
    let (audio, titles) = strip_icy(&icy.body, 16_000);
    assert_eq!(
        titles,
        ["The Testers - First Song"],
        "the title once, then empty blocks"
    );
    let probe = pipe(
        "ffprobe",
        &[
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name",
            "-of",
            "csv=p=0",
            "-",
        ],
        &audio,
    );
    assert_eq!(String::from_utf8_lossy(&probe).trim(), "mp3");
    assert_eq!(
        metric(&server, "radio_stream_encoders").await,
        1.0,
        "one encoder for both"
    );
}

#[tokio::test]
async fn the_first_audio_is_the_stations_position() {
    let (_dir, server) = serve(|_| {});
    let _b = broadcast(&server, "steps", "a.wav", 6_000).await;
    let updated = Instant::now();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let asked = Instant::now();
    let mut l = Listener::open(&server, "steps", &[]).await;
    l.read_to(SECOND + SECOND / 2).await;
    let samples = decode(&l.body);
    // Past the encoder's first frames, a fifth of a second.
    let heard = second_of(&samples[RATE / 10..RATE / 10 + RATE / 5]);
    let station_s = (6_000 + (asked - updated).as_millis() as usize) / 1000;
    eprintln!("first audio: second {heard}; the station: second {station_s}");
    assert!(
        heard.abs_diff(station_s) <= 2,
        "the stream starts at second {heard}, the station is at {station_s}"
    );
    // It runs on in order: half a second later, at most a second further.
    let later = second_of(&samples[RATE * 6 / 10..RATE * 8 / 10]);
    assert!(later == heard || later == heard + 1, "{heard} then {later}");
}

#[tokio::test]
async fn a_paused_station_streams_silence_and_a_stop_ends_the_stream() {
    let (_dir, server) = serve(|c| c.stream.burst = Duration::from_secs(1));
    let mut b = broadcast(&server, "quiet", "a.wav", 3_000).await;
    let mut l = Listener::open(&server, "quiet", &[]).await;
    l.read_to(SECOND).await;
    assert!(rms(&decode(&l.body)[RATE / 10..]) > 0.1, "the tone plays");
    b.send(json!({"type":"update","station":"quiet","track":"a.wav",
        "position_ms":4_000,"playing":false,"ack":true}))
        .await;
    b.expect("ack").await;
    // Past the burst that was already out, the stream goes quiet, and
    // stays open.
    let paused_at = l.body.len();
    l.read_to(paused_at + 3 * SECOND).await;
    let after = decode(&l.body[paused_at + 3 * SECOND / 2..]);
    assert!(
        rms(&after[RATE / 10..]) < 0.01,
        "silence, not {}",
        rms(&after)
    );
    // Another track, still paused: its title, over silence, for a new
    // listener once the burst before it is out.
    b.send(json!({"type":"update","station":"quiet","track":"b.wav",
        "position_ms":0,"playing":false,"ack":true}))
        .await;
    b.expect("ack").await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let mut late = Listener::open(&server, "quiet", &[("Icy-MetaData", "1")]).await;
    late.read_to(16_000 + 200).await;
    let (audio, titles) = strip_icy(&late.body, 16_000);
    assert_eq!(titles, ["Other Band - Don\u{2019}t Stop"]);
    assert!(
        rms(&decode(&audio)[RATE / 10..]) < 0.01,
        "silence for a new listener"
    );

    b.send(json!({"type":"stop_broadcasting","station":"quiet"}))
        .await;
    let tail = l.read_to_end(Duration::from_secs(8)).await;
    assert!(
        tail < 4 * SECOND,
        "the stream ended after {tail} more bytes"
    );
    eventually("the encoder is gone", async || {
        match metric(&server, "radio_stream_encoders").await {
            0.0 => Ok(()),
            n => Err(n),
        }
    })
    .await;
    no_zombies().await;
}

#[tokio::test]
async fn mpv_plays_the_stream_and_reads_the_title_change() {
    let (_dir, server) = serve(|c| c.stream.burst = Duration::from_secs(1));
    let mut b = broadcast(&server, "titles", "a.wav", 0).await;
    let dir = TempDir::new("stream-mpv");
    let socket = dir.path().join("mpv.sock");
    let mut mpv = Command::new("mpv")
        .args([
            "--no-config",
            "--ao=null",
            "--vo=null",
            "--msg-level=all=error",
        ])
        .arg(format!("--input-ipc-server={}", socket.display()))
        .arg(format!("http://{}/stations/titles/stream", server.addr))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("mpv is installed (scripts/setup.sh)");
    let mut ipc = MpvIpc::connect(&socket);
    let title_is = |ipc: &mut MpvIpc, want: &str| {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let meta = ipc.get("metadata");
            let title = ipc.get("media-title");
            if meta.to_string().contains(want) || title.as_str() == Some(want) {
                return (meta, title);
            }
            assert!(
                Instant::now() < deadline,
                "mpv never showed {want:?}: {meta} {title}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let (meta, _) = title_is(&mut ipc, "The Testers - First Song");
    eprintln!("mpv's metadata: {meta}");
    let codec = ipc.get("audio-codec-name");
    assert_eq!(codec.as_str(), Some("mp3"), "{codec}");
    b.update("titles", "b.wav", 0, true).await;
    // The quote survives as a typographic one: it cannot end the field.
    title_is(&mut ipc, "Other Band - Don\u{2019}t Stop");
    let playing = ipc.get("time-pos").as_f64().unwrap_or(0.0);
    assert!(playing > 1.0, "mpv plays the stream: at {playing} s");
    crate::support::process::kill(&mut mpv);
}

#[tokio::test]
async fn a_hundred_listeners_get_the_same_bytes_from_one_encoder() {
    let (_dir, server) = serve(|_| {});
    let _b = broadcast(&server, "crowd", "a.wav", 0).await;
    let mut first = Listener::open(&server, "crowd", &[]).await;
    first.read_to(SECOND).await;
    let (release, hold) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let addr = server.addr;
        let mut hold = hold.clone();
        tasks.push(tokio::spawn(async move {
            let mut socket = send(addr, "GET", "/stations/crowd/stream", &[], None).await;
            let mut buf = Vec::new();
            let mut chunk = vec![0u8; 16 * 1024];
            while buf
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .is_none_or(|i| buf.len() < i + 4 + 2 * SECOND)
            {
                let n = socket.read(&mut chunk).await.expect("read");
                assert!(n > 0, "closed early");
                buf.extend_from_slice(&chunk[..n]);
            }
            let start = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
            let body = buf[start..start + 2 * SECOND].to_vec();
            // Stay tuned until the counts are read.
            hold.wait_for(|r| *r).await.expect("released");
            (body, socket)
        }));
    }
    eventually("101 stream listeners counted", async || {
        let n = metric(&server, "radio_stream_listeners").await;
        if n == 101.0 { Ok(()) } else { Err(n) }
    })
    .await;
    assert_eq!(
        metric(&server, "radio_stream_encoders").await,
        1.0,
        "one encoder"
    );
    let stations = request(server.addr, "GET", "/api/stations", &[], None)
        .await
        .json();
    assert_eq!(stations["stations"][0]["listeners"], 101, "{stations}");
    release.send_replace(true);
    let mut bodies = Vec::new();
    for t in tasks {
        bodies.push(t.await.expect("a listener").0);
    }
    first.read_to(first.body.len() + 3 * SECOND).await;
    let reference = &first.body;
    for (i, body) in bodies.iter().enumerate() {
        assert_eq!(&body[..2], &[0xFF, 0xFB], "listener {i} starts on a frame");
        let at = reference
            .windows(1024)
            .position(|w| w == &body[..1024])
            .unwrap_or_else(|| panic!("listener {i}'s bytes are not the first listener's"));
        assert_eq!(&reference[at..at + body.len()], &body[..], "listener {i}");
    }
    assert!(metric(&server, "radio_stream_bytes_total").await >= 100.0 * 2.0 * SECOND as f64);
    assert!(metric(&server, "radio_stream_encoder_cpu_seconds_total").await > 0.0);
    drop(first);
    eventually(
        "the encoder stops with its last listener",
        async || match metric(&server, "radio_stream_encoders").await {
            0.0 => Ok(()),
            n => Err(n),
        },
    )
    .await;
    no_zombies().await;
}

/// Cluster mode: a node streams a station broadcast on another node, and
/// follows its track change.
#[tokio::test]
async fn any_node_streams_a_station_of_the_cluster() {
    let redis = crate::support::Redis::start().await;
    let dir = TempDir::new("stream-cluster");
    dir.write("a.wav", steps_wav(30, "First Song", "The Testers"));
    dir.write("b.wav", steps_wav(30, "Don't Stop", "Other Band"));
    let node = |id: &str| {
        Server::with(|c| {
            c.media.dir = Some(dir.path().to_owned());
            c.stream.burst = Duration::from_secs(1);
            c.backend = radio::BackendConfig::Redis(radio::RedisConfig {
                redis_url: redis.url(),
                node_id: id.to_owned(),
                lease: Duration::from_secs(5),
                grace: Duration::from_secs(10),
                ca_cert: None,
                password_file: None,
                sentinel_password_file: None,
                max_stations: 10_000,
            })
        })
    };
    let (a, b) = (node("a"), node("b"));
    for n in [&a, &b] {
        eventually("the node is ready (its Redis link up)", async || {
            let status = request(n.addr, "GET", "/readyz", &[], None).await.status;
            if status == 200 { Ok(()) } else { Err(status) }
        })
        .await;
    }
    let mut broadcaster = broadcast(&a, "far", "a.wav", 5_000).await;
    eventually("node b sees the station live", async || {
        let head = request(b.addr, "HEAD", "/stations/far/stream", &[], None).await;
        if head.status == 200 {
            Ok(())
        } else {
            Err(head.status)
        }
    })
    .await;
    let mut l = Listener::open(&b, "far", &[("Icy-MetaData", "1")]).await;
    l.read_to(16_000 + 100).await;
    let (audio, titles) = strip_icy(&l.body, 16_000);
    assert_eq!(titles, ["The Testers - First Song"]);
    let heard = second_of(&decode(&audio)[RATE / 10..RATE / 10 + RATE / 5]);
    assert!(
        heard.abs_diff(5) <= 2,
        "node b's stream starts at second {heard}"
    );
    broadcaster.update("far", "b.wav", 0, true).await;
    let changed = l.body.len();
    l.read_to(changed + 4 * 16_000).await;
    let (_, titles) = strip_icy(&l.body, 16_000);
    assert_eq!(
        titles.last().map(String::as_str),
        Some("Other Band - Don\u{2019}t Stop")
    );
    let stations = request(a.addr, "GET", "/api/stations", &[], None)
        .await
        .json();
    assert_eq!(
        stations["stations"][0]["listeners"], 1,
        "counted across nodes: {stations}"
    );
}

/// The stream is under the connection rules: a page of another origin is
/// refused, and behind a trusted proxy each client's streams count
/// against its own address.
#[tokio::test]
async fn stream_listeners_fall_under_the_origin_rule_and_the_address_cap() {
    let (_dir, server) = serve(|c| {
        c.trusted_proxies = vec!["127.0.0.1".parse().expect("an address")];
        c.max_connections_per_ip = 1;
    });
    let _b = broadcast(&server, "capped", "a.wav", 0).await;
    let path = "/stations/capped/stream";
    // From a client of its own behind the proxy: the broadcaster holds
    // the proxy's own one connection.
    let other = [
        ("Origin", "https://elsewhere.example"),
        ("X-Forwarded-For", "203.0.113.99"),
    ];
    let refused = request(server.addr, "GET", path, &other, None).await;
    assert_eq!(refused.status, 403, "{}", refused.text());
    let client = [("X-Forwarded-For", "203.0.113.7")];
    let mut first = Listener::open(&server, "capped", &client).await;
    first.read_to(1000).await;
    let second = request(server.addr, "GET", path, &client, None).await;
    assert_eq!(second.status, 429, "{}", second.text());
    let elsewhere = [("X-Forwarded-For", "203.0.113.8")];
    let mut third = Listener::open(&server, "capped", &elsewhere).await;
    third.read_to(1000).await;
}

/// Over https the stream is the same, and its `icy-url` says https.
#[tokio::test]
async fn the_stream_plays_over_https() {
    use tokio::io::AsyncWriteExt as _;
    let certs = crate::support::tls::Certs::new("localhost");
    let (_dir, server) = serve(|c| {
        c.tls = Some(radio::TlsFiles {
            cert: certs.path("server.pem"),
            key: certs.path("server.key"),
        });
    });
    let mut b = certs.ws(server.addr).await;
    b.start("secure").await;
    b.update("secure", "a.wav", 0, true).await;
    let (mut tls, _) = certs.connect(server.addr).await;
    let req = "GET /stations/secure/stream HTTP/1.1\r\nHost: localhost\r\n\r\n";
    tls.write_all(req.as_bytes()).await.expect("send");
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    while buf.len() < SECOND {
        let n = tokio::time::timeout(Duration::from_secs(15), tls.read(&mut chunk))
            .await
            .expect("the stream within 15 s")
            .expect("read");
        assert!(n > 0, "the stream ended early");
        buf.extend_from_slice(&chunk[..n]);
    }
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a head");
    let head = String::from_utf8_lossy(&buf[..split]).to_lowercase();
    assert!(head.starts_with("http/1.0 200"), "{head}");
    assert!(
        head.contains("icy-url: https://localhost/?station=secure"),
        "{head}"
    );
    let body = &buf[split + 4..];
    assert_eq!(&body[..2], &[0xFF, 0xFB]);
    let probe = pipe(
        "ffprobe",
        &[
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name",
            "-of",
            "csv=p=0",
            "-",
        ],
        body,
    );
    assert_eq!(String::from_utf8_lossy(&probe).trim(), "mp3");
}

/// Without ffmpeg the server runs as ever, and a stream request says what
/// is missing.
#[tokio::test]
async fn without_ffmpeg_a_stream_request_says_so() {
    let empty = TempDir::new("no-ffmpeg");
    let server =
        Server::spawn_process_env(&["--station", "demo=library"], &[("PATH", empty.arg())]);
    let path = "/stations/demo/stream";
    let res = request(server.addr, "GET", path, &[], None).await;
    assert_eq!(res.status, 503, "{}", res.text());
    assert!(
        res.text().contains("ffmpeg is not installed"),
        "{}",
        res.text()
    );
    let head = request(server.addr, "HEAD", path, &[], None).await;
    assert_eq!(head.status, 200, "HEAD starts nothing");
    let stations = request(server.addr, "GET", "/api/stations", &[], None)
        .await
        .json();
    assert_eq!(stations["stations"][0]["listeners"], 0, "{stations}");
}
