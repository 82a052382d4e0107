//! `radio broadcast` plays the server's library: queries resolved (and
//! refused with candidates), `next`/`prev`/`search`/`now`/`help`, playlists
//! resolved against the library, `--free-tracks`, a track's end, the exit
//! status, and the reconnect backoff. Each broadcaster is the binary; the
//! servers run in this process unless a test needs otherwise.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::time::Duration;

use radio::BackendConfig;
use radio::RedisConfig;
use serde_json::Value;

use crate::support::cli::{Broadcast, drain, exit_status, listen_json, wait_for};
use crate::support::process::kill;
use crate::support::{Client, Redis, Server, TempDir, radio_bin, tone_wav};

/// A library of five short tones: two sides by one band, two intros, a
/// sidewalk.
fn library() -> TempDir {
    let dir = TempDir::new("broadcast-lib");
    let tracks = [
        ("a/Side A.wav", "Side A", Some("The Band")),
        ("a/Side B.wav", "Side B", Some("The Band")),
        ("b/intro.wav", "Overture", None),
        ("c/intro.wav", "Intro", Some("Other")),
        ("d/Sidewalk.wav", "Walking", Some("Solo")),
    ];
    for (id, title, artist) in tracks {
        dir.write(id, tone_wav(30, &[330.0], Some(title), artist));
    }
    dir
}

fn serve(media: &TempDir) -> Server {
    Server::with(|c| c.media.dir = Some(media.path().to_owned()))
}

fn broadcast(server: &Server, station: &str, extra: &[&str]) -> Broadcast {
    let url = server.ws_url();
    let mut args = vec!["--url", url.as_str(), "--station", station];
    args.extend_from_slice(extra);
    Broadcast::spawn(&args)
}

#[tokio::test]
async fn queries_resolve_and_refused_lines_fail_the_script() {
    let media = library();
    let server = serve(&media);
    let mut l = Client::connect(&server).await;
    l.tune("q").await;
    let mut b = broadcast(&server, "q", &[]);

    b.say("play \"side b\" 3");
    let s = l.expect("sync").await;
    assert_eq!(s["track"], "a/Side B.wav");
    assert_eq!(s["title"], "Side B");
    assert_eq!(s["artist"], "The Band");
    let line = b.out_line("seq");
    assert!(
        line.contains("playing \"The Band - Side B\" (a/Side B.wav) at 0:03"),
        "{line}"
    );

    // A typo: refused, with what it may have meant; the station plays on.
    b.say("play \"sdie a\"");
    let e = b.err_line("no track matches");
    assert!(
        e.contains(
            r#"no track matches "sdie a"; did you mean: "The Band - Side A" (a/Side A.wav)"#
        ),
        "{e}"
    );
    // Several matches: refused, naming them.
    b.say("play intro");
    let e = b.err_line("matches");
    assert!(e.contains(r#""intro" matches 2 tracks:"#), "{e}");
    assert!(
        e.contains("(b/intro.wav)") && e.contains("(c/intro.wav)"),
        "{e}"
    );
    b.say("dance");
    b.err_line("unknown command \"dance\"");
    let others = l.expect_none("sync", Duration::from_millis(300)).await;
    assert!(others.is_empty(), "refusals change nothing: {others:?}");

    // A unique substring, the artist and title, an exact id.
    b.say("track walk");
    assert_eq!(l.expect("sync").await["track"], "d/Sidewalk.wav");
    b.say("play \"other - intro\"");
    assert_eq!(l.expect("sync").await["track"], "c/intro.wav");
    b.say("play b/intro.wav");
    assert_eq!(l.expect("sync").await["track"], "b/intro.wav");

    b.say("now");
    let now = b.out_line("now:");
    assert!(now.contains("playing \"Overture\" (b/intro.wav)"), "{now}");
    b.say("search the band");
    b.out_line("2 tracks match \"the band\":");
    let first = b.out_line("a/Side A.wav");
    assert!(first.contains("\"The Band - Side A\"  0:30.0"), "{first}");
    b.out_line("a/Side B.wav");

    b.say("stop");
    assert_eq!(b.exit().code(), Some(1), "refused lines fail the script");
}

/// Positions and durations are typed as they print (`0:30.0`): seconds,
/// m:ss or h:mm:ss, for `play`, `seek` and `track`.
#[tokio::test]
async fn positions_are_typed_as_they_print() {
    let media = library();
    let server = serve(&media);
    let mut l = Client::connect(&server).await;
    l.tune("pos").await;
    let mut b = broadcast(&server, "pos", &[]);
    b.say("play \"side a\" 0:05.5");
    let s = l.expect("sync").await;
    assert_eq!(s["track"], "a/Side A.wav");
    assert!(
        (5_500..6_500).contains(&s["position_ms"].as_u64().unwrap()),
        "{s}"
    );
    b.out_line("at 0:05");
    b.say("pause");
    l.expect("sync").await;
    b.say("seek 0:20");
    let s = l.expect("sync").await;
    assert_eq!(s["position_ms"], 20_000, "{s}");
    b.out_line("paused \"The Band - Side A\" (a/Side A.wav) at 0:20.0 of 0:30.0");
    // Beyond the end, in the form the lengths print.
    b.say("seek 1:30");
    let e = b.err_line("only");
    assert!(e.contains("the track is only 0:30.0 long"), "{e}");
    b.say("seek 1:75");
    let e = b.err_line("1:75");
    assert!(e.contains("more than 59 seconds after a colon"), "{e}");
    b.say("track walk 1:02:03");
    let s = l.expect("sync").await;
    assert_eq!(s["track"], "d/Sidewalk.wav");
    assert_eq!(s["duration_ms"], 3_723_000, "{s}");
    b.out_line("of 1:02:03.0");
    b.say("stop");
    assert_eq!(b.exit().code(), Some(1), "two lines were refused");
}

/// Case and accents need not match: `search hoppipolla` finds
/// "Hoppípolla", and a query plays it.
#[tokio::test]
async fn accents_need_not_match() {
    let media = TempDir::new("accents");
    media.write(
        "Sigur Rós/Hoppípolla.wav",
        tone_wav(5, &[330.0], Some("Hoppípolla"), Some("Sigur Rós")),
    );
    media.write(
        "Sigur Rós/Glósóli.wav",
        tone_wav(5, &[440.0], Some("Glósóli"), Some("Sigur Rós")),
    );
    let server = serve(&media);
    let mut l = Client::connect(&server).await;
    l.tune("acc").await;
    let mut b = broadcast(&server, "acc", &[]);
    b.say("search hoppipolla");
    b.out_line("1 track matches \"hoppipolla\":");
    b.out_line("Sigur Rós/Hoppípolla.wav");
    b.say("search SIGUR ROS");
    b.out_line("2 tracks match");
    b.say("play \"sigur ros - glosoli\"");
    assert_eq!(l.expect("sync").await["track"], "Sigur Rós/Glósóli.wav");
    b.say("play hoppipolla");
    assert_eq!(l.expect("sync").await["track"], "Sigur Rós/Hoppípolla.wav");
    b.say("stop");
    assert_eq!(b.exit().code(), Some(0));
}

/// A taken station is told in one sentence: the server's reason (live, or
/// waiting for its broadcaster to resume), then what to do.
#[tokio::test]
async fn a_taken_station_is_one_sentence() {
    let server = Server::with(|c| {
        c.backend = BackendConfig::Local {
            grace: Duration::from_secs(30),
        }
    });
    let mut owner = Client::connect(&server).await;
    owner.start("busy").await;
    let mut b = broadcast(&server, "busy", &[]);
    let e = b.err_line("busy");
    assert_eq!(
        e,
        "radio: station busy is live from another connection; \
         pick another name with --station, or wait until it stops"
    );
    assert_eq!(b.exit().code(), Some(1));
    // Its broadcaster gone, a station that had an update waits for it
    // within the grace period.
    owner.update("busy", "a.ogg", 0, true).await;
    drop(owner);
    let mut b = broadcast(&server, "busy", &[]);
    let e = b.err_line("busy");
    assert_eq!(
        e,
        "radio: station busy is waiting for its broadcaster to resume (with its \
         resume_token) until its grace period ends; pick another name with \
         --station, or wait until it stops"
    );
    assert_eq!(b.exit().code(), Some(1));
}

#[tokio::test]
async fn next_prev_help_and_a_clean_script() {
    let media = library();
    let server = serve(&media);
    let mut l = Client::connect(&server).await;
    l.tune("np").await;
    let mut b = broadcast(&server, "np", &["--json"]);
    b.say("play walk");
    assert_eq!(l.expect("sync").await["track"], "d/Sidewalk.wav");
    // Library order wraps.
    b.say("next");
    assert_eq!(l.expect("sync").await["track"], "a/Side A.wav");
    b.say("prev");
    assert_eq!(l.expect("sync").await["track"], "d/Sidewalk.wav");
    b.say("prev");
    let s = l.expect("sync").await;
    assert_eq!(s["track"], "c/intro.wav");
    assert_eq!(s["position_ms"].as_u64().unwrap() / 1000, 0);
    b.say("help");
    for command in ["play [QUERY]", "next, prev", "search WORDS", "now", "stop"] {
        b.err_line(command);
    }
    // --json answers in JSON.
    b.say("now");
    let now = wait_for(&b.out, "now as JSON", |l| l.contains(r#""type":"now""#));
    let now: Value = serde_json::from_str(&now).expect("JSON");
    assert_eq!(now["track"], "c/intro.wav");
    assert_eq!(now["artist"], "Other");
    b.close_stdin();
    assert_eq!(
        b.exit().code(),
        Some(0),
        "nothing refused, the end of stdin"
    );

    let help = Command::new(radio_bin())
        .args(["broadcast", "--help"])
        .output()
        .expect("radio broadcast --help");
    let help = String::from_utf8_lossy(&help.stdout);
    for command in [
        "play [QUERY]",
        "track QUERY",
        "next, prev",
        "search WORDS",
        "now",
    ] {
        assert!(help.contains(command), "--help lists {command}: {help}");
    }
}

/// A server answering 404 to everything: not a radio server.
fn not_a_library() -> (String, std::thread::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", l.local_addr().expect("address"));
    let t = std::thread::spawn(move || {
        if let Ok((mut s, _)) = l.accept() {
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
        }
    });
    (url, t)
}

#[test]
fn without_a_library_free_tracks_is_needed() {
    let (url, t) = not_a_library();
    let out = Command::new(radio_bin())
        .args(["broadcast", "--station", "s", "--url", &url])
        .output()
        .expect("radio broadcast");
    t.join().expect("the fake server");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("404") && err.contains("--free-tracks"),
        "{err}"
    );

    let out = Command::new(radio_bin())
        .args([
            "broadcast",
            "--station",
            "s",
            "--url",
            "ws://127.0.0.1:9/ws",
        ])
        .output()
        .expect("radio broadcast");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot connect") && err.contains("radio serve"),
        "{err}"
    );
}

/// `--key-file`: the key read from a file, so it is in neither argv nor the
/// environment; a wrong or missing one ends the broadcaster with what to do.
#[tokio::test]
async fn the_key_comes_from_a_file() {
    let dir = TempDir::new("key-file");
    dir.write("server", "s3cret-key\n");
    dir.write("right", "s3cret-key\n");
    dir.write("wrong", "guess\n");
    let server = Server::with(|c| c.conn.keys.key_file = Some(dir.path().join("server")));
    let file = |name: &str| dir.path().join(name).display().to_string();
    let mut l = Client::connect(&server).await;
    l.tune("keyed").await;
    let right = file("right");
    let mut b = broadcast(&server, "keyed", &["--free-tracks", "--key-file", &right]);
    b.say("play song.ogg");
    assert_eq!(l.expect("sync").await["track"], "song.ogg");
    b.say("stop");
    assert_eq!(b.exit().code(), Some(0));

    let wrong = file("wrong");
    let mut b = broadcast(&server, "keyed", &["--free-tracks", "--key-file", &wrong]);
    b.err_line("refused the broadcast key");
    assert_eq!(b.exit().code(), Some(1));

    let missing = file("missing");
    let mut b = broadcast(&server, "keyed", &["--free-tracks", "--key-file", &missing]);
    b.err_line("cannot read --key-file");
    assert_eq!(b.exit().code(), Some(1));
}

#[tokio::test]
async fn free_tracks_go_as_written() {
    let server = Server::start();
    let mut l = Client::connect(&server).await;
    l.tune("free").await;
    let mut b = broadcast(&server, "free", &["--free-tracks"]);
    b.say("play \"my own.ogg\" 2");
    let s = l.expect("sync").await;
    assert_eq!(s["track"], "my own.ogg");
    assert!(s.get("title").is_none(), "{s}");
    // A line that is not UTF-8 is a line, not the end of the script.
    b.say_bytes(b"play caf\xe9.ogg\n");
    assert_eq!(l.expect("sync").await["track"], "caf\u{fffd}.ogg");
    b.say("stop");
    assert_eq!(b.exit().code(), Some(0));
}

#[tokio::test]
async fn playlist_entries_resolve_in_the_library() {
    let media = library();
    let server = serve(&media);
    let lists = TempDir::new("playlists");
    let absolute = media.path().join("b/intro.wav");
    let m3u = format!(
        "#EXTM3U\n\
         #EXTINF:-1,unknown length\n\
         ../somewhere/a/Side B.wav\n\
         #EXTINF:2,Missing\n\
         nowhere/missing.wav\n\
         {}\n\
         #EXTINF:5,Only by name\n\
         elsewhere/Sidewalk.wav\n",
        absolute.display()
    );
    lists.write("lists/tonight.m3u", m3u);
    let path = lists.path().join("lists/tonight.m3u");
    let path = path.to_str().expect("a UTF-8 path");
    let mut l = Client::connect(&server).await;
    l.tune("pl").await;
    let b = broadcast(&server, "pl", &["--playlist", path]);
    let summary = b.err_line("entries resolved");
    assert!(summary.contains("3 of 4 entries resolved"), "{summary}");
    let missing = b.err_line("missing.wav");
    assert!(
        missing.contains("line 5: \"nowhere/missing.wav\": no library track"),
        "{missing}"
    );
    // #EXTINF:-1 takes the library's duration.
    let s = l.expect("sync").await;
    assert_eq!(s["track"], "a/Side B.wav");
    assert_eq!(s["duration_ms"], 30_000);
    drop(b);

    // Nothing resolves: exit 1, naming each entry.
    lists.write("none.m3u", "one.wav\n#EXTINF:3,Two\nsub/two.wav\n");
    let none = lists.path().join("none.m3u");
    let out = Command::new(radio_bin())
        .args(["broadcast", "--url", &server.ws_url(), "--station", "pl2"])
        .arg("--playlist")
        .arg(&none)
        .output()
        .expect("radio broadcast");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no entry of the playlist"), "{err}");
    assert!(
        err.contains("line 1: \"one.wav\"") && err.contains("line 3: \"sub/two.wav\""),
        "{err}"
    );
}

/// A shell station on a 4 s track plays the next track within a second of
/// its end, as `radio listen --json` sees it; with `--stop-at-end` it
/// pauses at the end instead.
#[test]
fn a_station_moves_on_at_its_tracks_end() {
    let media = TempDir::new("track-end");
    media.write("1-short.wav", tone_wav(4, &[440.0], Some("Short"), None));
    media.write("2-next.wav", tone_wav(30, &[330.0], Some("Next"), None));
    let server = serve(&media);
    let (mut listen, frames) = listen_json(&server.ws_url(), "end");
    let mut b = broadcast(&server, "end", &["--heartbeat-interval", "500ms"]);
    b.say("play short");
    let first = wait_for(&frames, "the short track", |v| {
        v["type"] == "sync" && v["track"] == "1-short.wav"
    });
    let ends_at =
        first["server_time_ms"].as_i64().unwrap() + 4_000 - first["position_ms"].as_i64().unwrap();
    let next = wait_for(&frames, "the next track", |v| {
        v["type"] == "sync" && v["track"] != "1-short.wav"
    });
    assert_eq!(next["track"], "2-next.wav");
    assert_eq!(next["cause"], "update");
    assert_eq!(next["playing"], true);
    assert!(next["position_ms"].as_u64().unwrap() < 500, "{next}");
    let late = next["server_time_ms"].as_i64().unwrap() - ends_at;
    assert!(
        (-100..1_000).contains(&late),
        "next track {late} ms after the end"
    );
    drop(b);
    kill(&mut listen);

    let (mut listen, frames) = listen_json(&server.ws_url(), "hold");
    let mut b = broadcast(&server, "hold", &["--stop-at-end"]);
    b.say("play short 3");
    wait_for(&frames, "the short track", |v| v["type"] == "sync");
    let held = wait_for(&frames, "a pause at the end", |v| {
        v["type"] == "sync" && v["playing"] == false
    });
    assert_eq!(held["track"], "1-short.wav");
    assert_eq!(held["position_ms"], 4_000);
    // Paused, it sends nothing more.
    let more: Vec<Value> = drain(&frames, Duration::from_secs(1));
    assert!(more.iter().all(|v| v["type"] != "sync"), "{more:?}");
    b.say("stop");
    assert!(exit_status(&mut b.child, "broadcast").success());
    kill(&mut listen);
}

/// A cluster node whose Redis is down answers `start_broadcasting` with
/// `unavailable`: the broadcaster backs off instead of reconnecting several
/// times a second.
#[tokio::test]
async fn the_backoff_holds_while_the_server_refuses() {
    let redis_down = Redis::not_started();
    let server = Server::with(|c| {
        c.backend = BackendConfig::Redis(RedisConfig {
            redis_url: redis_down.url(),
            node_id: "lonely".into(),
            lease: Duration::from_secs(5),
            grace: Duration::from_secs(10),
            ca_cert: None,
            password_file: None,
            sentinel_password_file: None,
            max_stations: 10_000,
        })
    });
    let b = broadcast(&server, "patient", &[]);
    b.err_line("cannot take the station right now");
    let start = server.metric("radio_connections_accepted").await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    let connections = server.metric("radio_connections_accepted").await - start;
    // 250 ms doubling (with jitter): about 6 connections in 8 s.
    assert!(
        (2.0..=8.0).contains(&connections),
        "{connections} connections in 8 s"
    );
    drop(b);
}
