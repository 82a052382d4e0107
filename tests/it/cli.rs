//! The shell clients against `radio serve`, all three as processes:
//! `radio broadcast` fed a script on stdin while `radio listen --json`
//! receives the states.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::support::cli::{Broadcast, exit_status, json_lines, lines, listen_json, wait_for};
use crate::support::process::{free_port, kill, signal};
use crate::support::{Client, Server, TempDir, radio_bin};

#[test]
fn broadcast_script_reaches_listen_json() {
    let server = Server::spawn_process(&[]);
    let url = server.ws_url();
    let (mut listen, frames) = listen_json(&url, "cli");

    let mut broadcast = Command::new(radio_bin())
        .args([
            "broadcast",
            "--json",
            "--url",
            &format!("http://{}", server.addr),
            "--station",
            "cli",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start radio broadcast");
    let acked = json_lines(broadcast.stdout.take().expect("radio broadcast's stdout"));
    let mut stdin = broadcast.stdin.take().expect("radio broadcast's stdin");
    let mut say = |line: &str| writeln!(stdin, "{line}").expect("write to radio broadcast");
    say("# a comment, then commands: tracks by title, from the demo library");
    say("play \"a minor arpeggio\" 5");
    let s = wait_for(&frames, "first sync", |v| v["type"] == "sync");
    assert_eq!(s["track"], "demo/1-a-minor-arpeggio.wav");
    assert_eq!(s["title"], "A minor arpeggio");
    assert_eq!(s["duration_ms"], 40_000, "the library's duration");
    assert_eq!(s["playing"], true);
    let pos = s["position_ms"].as_u64().unwrap();
    assert!((4_000..30_000).contains(&pos), "{pos}");
    let a = wait_for(&acked, "first ack", |v| v["cause"] == "update");
    assert_eq!(a["seq"], s["seq"], "broadcast prints the acknowledged seq");
    assert_eq!(a["title"], "A minor arpeggio");

    say("pause");
    let s = wait_for(&frames, "pause", |v| {
        v["type"] == "sync" && v["playing"] == false
    });
    assert_eq!(s["track"], "demo/1-a-minor-arpeggio.wav");
    say("track pulse 30");
    say("seek 12");
    say("play");
    let s = wait_for(&frames, "second track playing", |v| {
        v["type"] == "sync" && v["track"] == "demo/3-low-pulse.wav" && v["playing"] == true
    });
    assert_eq!(s["duration_ms"], 30_000, "a duration given wins");
    assert_eq!(s["title"], "Low pulse");
    // Near 12 s: the server carries the position by the broadcaster's
    // clock estimate (`at_server_ms`), which may be off by a few ms.
    let pos = s["position_ms"].as_u64().unwrap();
    assert!((11_000..30_000).contains(&pos), "{pos}");
    // A heartbeat follows while playing.
    wait_for(&frames, "heartbeat", |v| v["cause"] == "heartbeat");
    say("stop");
    wait_for(&frames, "offline", |v| {
        v["type"] == "broadcaster_offline" && v["reason"] == "stopped"
    });
    let status = exit_status(&mut broadcast, "broadcast after stop");
    assert!(status.success(), "broadcast exits 0 after stop");

    // listen exits 0 on Ctrl-C.
    signal(listen.id(), "INT");
    let status = exit_status(&mut listen, "listen after SIGINT");
    assert!(status.success(), "listen exits 0 on SIGINT: {status:?}");
}

#[tokio::test]
async fn broadcast_explains_a_taken_station() {
    let server = Server::spawn_process(&[]);
    let mut owner = Client::connect(&server).await;
    owner.start("busy").await;
    let out = tokio::process::Command::new(radio_bin())
        .args(["broadcast", "--url", &server.ws_url(), "--station", "busy"])
        .stdin(Stdio::piped())
        .output()
        .await
        .expect("run radio broadcast");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is live from another connection"), "{err}");
    assert!(err.contains("--station"), "says what to do: {err}");
}

#[test]
fn broadcast_playlist_loops_through_tracks() {
    let server = Server::spawn_process(&[]);
    let dir = TempDir::new("m3u");
    // Paths relative to the playlist's folder, resolved by their suffix in
    // the demo library; #EXTINF:1 makes each last a second.
    dir.write(
        "list.m3u",
        "#EXTM3U\n#EXTINF:1,One\ndemo/1-a-minor-arpeggio.wav\n#EXTINF:1,Two\ndemo/2-c-major-steps.wav\n",
    );
    let m3u = dir.path().join("list.m3u");
    let (mut listen, frames) = listen_json(&server.ws_url(), "auto");
    let mut b = Command::new(radio_bin())
        .args(["broadcast", "--url", &server.ws_url(), "--station", "auto"])
        .arg("--playlist")
        .arg(&m3u)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start radio broadcast");
    let is_update = |track: &'static str| {
        move |v: &Value| v["type"] == "sync" && v["cause"] == "update" && v["track"] == track
    };
    let s = wait_for(&frames, "one", is_update("demo/1-a-minor-arpeggio.wav"));
    assert_eq!(s["duration_ms"], 1000);
    wait_for(&frames, "two", is_update("demo/2-c-major-steps.wav"));
    wait_for(
        &frames,
        "one again",
        is_update("demo/1-a-minor-arpeggio.wav"),
    );
    signal(b.id(), "INT");
    assert!(
        exit_status(&mut b, "broadcast after SIGINT").success(),
        "Ctrl-C stops the station and exits 0"
    );
    wait_for(&frames, "offline", |v| v["type"] == "broadcaster_offline");
    kill(&mut listen);
}

#[test]
fn clients_explain_bad_arguments() {
    let out = Command::new(radio_bin())
        .args(["listen", "--station", "no spaces allowed"])
        .output()
        .expect("run radio");
    // A usage error: exit 2, naming the flag and what a name may hold.
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--station") && err.contains("A-Z"), "{err}");

    let out = Command::new(radio_bin())
        .args(["listen", "--station", "ok", "--url", "38835"])
        .output()
        .expect("run radio");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is a port") && err.contains("127.0.0.1:38835"),
        "{err}"
    );

    let out = Command::new(radio_bin())
        .args(["listen", "--station", "ok", "--url", "ws://127.0.0.1:9/ws"])
        .output()
        .expect("run radio");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot connect") && err.contains("radio serve"),
        "{err}"
    );

    let out = Command::new(radio_bin())
        .args(["serve", "--grace-period", "ten"])
        .output()
        .expect("run radio");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("10s"));
}

#[test]
fn clients_reconnect_after_the_server_restarts() {
    let port = free_port();
    let listen_addr = format!("127.0.0.1:{port}");
    let mut server = Server::spawn_process(&["--listen", &listen_addr]);
    let url = server.ws_url();
    let (mut listen, frames) = listen_json(&url, "phoenix");
    let mut broadcast = Command::new(radio_bin())
        .args(["broadcast", "--url", &url, "--station", "phoenix"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start radio broadcast");
    let mut stdin = broadcast.stdin.take().expect("radio broadcast's stdin");
    writeln!(stdin, "play pulse").expect("write to radio broadcast");
    wait_for(&frames, "first sync", |v| v["type"] == "sync");

    // The server dies hard and comes back on the same port.
    server.kill();
    let _server = Server::spawn_process(&["--listen", &listen_addr]);

    // Both clients reconnect on their own: the broadcaster claims the
    // station again and re-sends its state; the listener re-tunes and gets it.
    wait_for(&frames, "tuned again", |v| v["type"] == "tuned");
    let s = wait_for(&frames, "state after restart", |v| {
        v["type"] == "sync" && v["track"] == "demo/3-low-pulse.wav"
    });
    assert_eq!(s["playing"], true);
    writeln!(stdin, "stop").expect("write to radio broadcast");
    assert!(exit_status(&mut broadcast, "broadcast after stop").success());
    kill(&mut listen);
}

/// `radio listen`'s status lines (not a terminal: a line per change).
fn listen_lines(
    url: &str,
    station: &str,
) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    let mut listen = Command::new(radio_bin())
        .args(["listen", "--url", url, "--station", station])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start radio listen");
    let out = lines(listen.stdout.take().expect("radio listen's stdout"));
    (listen, out)
}

/// A server restart counts `seq` from 1 again: `tuned` is a new baseline,
/// so the listener shows the new station's state, not the old one's.
#[test]
fn listen_follows_a_new_broadcast_after_the_server_restarts() {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut server = Server::spawn_process(&["--listen", &addr]);
    let url = server.ws_url();
    let (mut listen, out) = listen_lines(&url, "again");
    let mut first = Broadcast::spawn(&[
        "--url",
        &url,
        "--station",
        "again",
        "--heartbeat-interval",
        "100ms",
    ]);
    first.say("play \"a minor arpeggio\"");
    let line = wait_for(&out, "the first station", |l| {
        l.contains("▶ radio demo - A minor arpeggio")
    });
    assert!(line.starts_with("again [online] ▶"), "{line}");
    // Heartbeats take the seq well past what a new server starts with.
    wait_for(&out, "seq 10", |l| {
        l.contains("| seq 1") && !l.contains("| seq 1 ")
    });

    server.kill();
    drop(first);
    let _server = Server::spawn_process(&["--listen", &addr]);
    wait_for(&out, "the listener back, offline", |l| {
        l.starts_with("again [offline]")
    });
    let mut second = Broadcast::spawn(&["--url", &url, "--station", "again"]);
    second.say("play pulse");
    let line = wait_for(&out, "the new station's track", |l| {
        l.contains("radio demo - Low pulse")
    });
    assert!(
        line.contains("seq 1 "),
        "a new server's first state: {line}"
    );

    // Stopped, the station shows offline with its last track, stopped.
    second.say("stop");
    let line = wait_for(&out, "offline", |l| l.starts_with("again [offline]"));
    assert!(
        line.contains("■ radio demo - Low pulse") && !line.contains('▶'),
        "{line}"
    );
    kill(&mut listen);
}

/// A server that stops answering without closing (a half-open connection:
/// a laptop that slept, a NAT that forgot) shows no error on the socket;
/// `radio listen` notices the silence and connects again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_leaves_a_server_gone_silent() {
    use futures_util::SinkExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("ws://{}/ws", listener.local_addr().expect("address"));
    let welcome = serde_json::json!({"type":"welcome","protocol":radio::protocol::PROTOCOL_VERSION,
        "session_id":"silent","server_time_ms":radio::protocol::now_ms()});
    let mut listen = Command::new(radio_bin())
        .args(["listen", "--json", "--station", "s", "--url", &url])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start radio listen");
    let err = lines(listen.stderr.take().expect("stderr"));
    // First connection: welcomed, then never a word, never closed.
    let (tcp, _) = listener.accept().await.expect("the first connection");
    let mut first = tokio_tungstenite::accept_async(tcp)
        .await
        .expect("the upgrade");
    first
        .send(tokio_tungstenite::tungstenite::Message::Text(
            welcome.to_string().into(),
        ))
        .await
        .expect("send welcome");
    let again = tokio::time::timeout(std::time::Duration::from_secs(30), listener.accept()).await;
    assert!(again.is_ok(), "listen never left the silent server");
    let said =
        tokio::task::block_in_place(|| wait_for(&err, "why", |l| l.contains("has said nothing")));
    assert!(said.contains("15s"), "{said}");
    drop(first);
    kill(&mut listen);
}
