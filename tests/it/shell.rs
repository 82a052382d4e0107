//! The command line as a person at a shell meets it: colour and NO_COLOR,
//! exit statuses, error text that says each thing once, a full server
//! waited for, and `listen --json`'s output.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::cli::{drain, exit_status, json_lines, lines, wait_for};
use crate::support::process::{free_port, kill};
use crate::support::{Client, Server, radio_bin};

/// `radio serve` on a free port until it logs its address; its stderr.
fn serve_log(args: &[&str], env: &[(&str, &str)]) -> String {
    let mut cmd = Command::new(radio_bin());
    cmd.args(["serve", "--listen", "127.0.0.1:0"])
        .args(args)
        .env_remove("NO_COLOR")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("start radio serve");
    let err = lines(child.stderr.take().expect("stderr"));
    let line = wait_for(&err, "listening", |l| l.contains("listening on"));
    kill(&mut child);
    line
}

/// `radio listen --json` tuned to station `s` of `server`.
fn listen_json(server: &Server) -> Command {
    let mut cmd = Command::new(radio_bin());
    cmd.args(["listen", "--json", "--station", "s", "--url"])
        .arg(server.ws_url());
    cmd
}

#[test]
fn colour_follows_the_flag_and_no_color() {
    assert!(serve_log(&["--color", "always"], &[]).contains("\x1b["));
    assert!(!serve_log(&["--color", "never"], &[]).contains("\x1b["));
    // Not a terminal: no colour by default.
    assert!(!serve_log(&[], &[]).contains("\x1b["));
    assert!(!serve_log(&[], &[("RADIO_COLOR", "never")]).contains("\x1b["));
}

/// On a terminal (a pseudo-terminal from `script`): coloured by default,
/// plain when NO_COLOR is set.
#[test]
fn no_color_is_honoured_on_a_terminal() {
    // A server that starts (it has logged its capacity once it answers
    // HTTP) and is then stopped with SIGINT. A server that cannot start
    // logs nothing before its error.
    let serve_on_tty = |no_color: Option<&str>| {
        let port = free_port();
        let session = format!(
            "{bin} serve --listen 127.0.0.1:{port} & pid=$!
             for _ in $(seq 300); do (exec 3<>/dev/tcp/127.0.0.1/{port}) 2>/dev/null && break; sleep 0.05; done
             exec 3<>/dev/tcp/127.0.0.1/{port}
             printf 'GET /healthz HTTP/1.0\\r\\n\\r\\n' >&3
             read -r -t 30 status <&3
             kill -INT $pid; wait $pid",
            bin = radio_bin()
        );
        let mut cmd = Command::new("script");
        cmd.args(["-qec", &session, "/dev/null"])
            .env("SHELL", "/bin/bash")
            .env_remove("NO_COLOR");
        if let Some(v) = no_color {
            cmd.env("NO_COLOR", v);
        }
        let out = cmd.output().expect("run script (util-linux)");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let coloured = serve_on_tty(None);
    assert!(coloured.contains("\x1b["), "{coloured:?}");
    let plain = serve_on_tty(Some("1"));
    assert!(plain.contains("room for about"), "{plain:?}");
    assert!(!plain.contains("\x1b["), "{plain:?}");
}

#[test]
fn exit_statuses_and_errors_said_once() {
    let run = |args: &[&str]| {
        let out = Command::new(radio_bin())
            .args(args)
            .output()
            .expect("run radio");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // Usage errors: 2.
    for args in [
        &["listen", "--station", "bad name"][..],
        &["broadcast", "--station", "x", "--url", "ftp://h"],
        &["serve", "--grace-period", "ten"],
        // A zero interval would be a timer that never waits.
        &["serve", "--keepalive-interval", "0s"],
        &[
            "serve",
            "--keepalive-interval",
            "10s",
            "--keepalive-timeout",
            "5s",
        ],
        &["broadcast", "--station", "x", "--heartbeat-interval", "0s"],
        &["man", "nosuch"],
        &["loadtest", "--url", "127.0.0.1:1"],
        &["loadtest", "--url", "127.0.0.1:1", "--listeners", "0"],
        &[
            "loadtest",
            "--url",
            "127.0.0.1:1",
            "--listeners",
            "5",
            "--workers",
            "many",
        ],
    ] {
        let (code, err) = run(args);
        assert_eq!(code, Some(2), "{args:?}: {err}");
    }
    // A reader that stops reading (`| head`) is no failure.
    let out = Command::new("bash")
        .args([
            "-c",
            &format!(
                "{} man serve | head -c 1 >/dev/null; exit ${{PIPESTATUS[0]}}",
                radio_bin()
            ),
        ])
        .output()
        .expect("run bash");
    assert_eq!(out.status.code(), Some(0));
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A runtime failure: 1, and the cause said once.
    let port = free_port();
    let url = format!("ws://127.0.0.1:{port}/ws");
    let (code, err) = run(&["listen", "--station", "s", "--url", &url]);
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(err.matches("Connection refused").count(), 1, "{err}");
    assert!(err.contains("Is `radio serve` running there?"), "{err}");
}

#[tokio::test]
async fn a_full_server_is_waited_for() {
    waits_for_room(&["--max-connections", "1"], "the server is full").await;
}

/// The listener and the holder share 127.0.0.1, so the listener meets the
/// per-address cap (429), which is waited for the same way.
#[tokio::test]
async fn a_full_address_is_waited_for() {
    waits_for_room(
        &["--max-connections-per-ip", "1"],
        "all the connections it allows from this address",
    )
    .await;
}

/// With one connection held, `radio listen` says `full` and waits (no
/// "is radio serve running" hint, no exit), and tunes in once it is closed.
async fn waits_for_room(flags: &[&str], full: &str) {
    let server = Server::spawn_process(flags);
    let holder = Client::connect(&server).await;
    let mut listen = listen_json(&server)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start radio listen");
    let out = json_lines(listen.stdout.take().expect("stdout"));
    let err = lines(listen.stderr.take().expect("stderr"));
    let said = wait_for(&err, "the wait", |l| l.contains("retrying"));
    assert!(
        said.contains(full) && said.contains("retrying in"),
        "{said}"
    );
    assert!(!said.contains("radio serve` running"), "{said}");
    assert!(listen.try_wait().expect("poll").is_none(), "listen gave up");
    drop(holder);
    // Retry-After is 5 s: it gets in once the place is free.
    wait_for(&out, "tuned after the wait", |v| v["type"] == "tuned");
    kill(&mut listen);
}

#[tokio::test]
async fn listen_json_prints_pongs_only_when_verbose() {
    let server = Server::spawn_process(&[]);
    let frames = |verbose: bool| {
        let mut cmd = listen_json(&server);
        if verbose {
            cmd.arg("--verbose");
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start radio listen");
        let rx = json_lines(child.stdout.take().expect("stdout"));
        wait_for(&rx, "tuned", |v| v["type"] == "tuned");
        // The clock pings at once and then every second or so.
        let seen = drain(&rx, Duration::from_secs(3));
        kill(&mut child);
        seen.iter().filter(|v| v["type"] == "pong").count()
    };
    assert_eq!(frames(false), 0);
    assert!(frames(true) > 0);
}

/// A reader that goes away early (`radio man serve | head -1`, a pager
/// quit) is no failure: exit 0, nothing said, no panic.
#[test]
fn a_closed_stdout_is_no_failure() {
    for args in [&["man", "serve"][..], &["completions", "zsh"]] {
        let mut child = Command::new(radio_bin())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start radio");
        // Closed before it writes a byte.
        drop(child.stdout.take());
        let out = child.wait_with_output().expect("its exit");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
        assert!(err.is_empty(), "{args:?}: {err}");
    }
}

/// `radio listen | head -1`: once the reader has its line and goes, the
/// next status line fails to write and listen exits 0 (it kept running);
/// a title with a terminal escape in it is shown without the escape, and
/// without its bidi override and zero-width characters.
#[tokio::test]
async fn listen_ends_when_its_reader_goes() {
    let server = Server::spawn_process(&[]);
    let mut b = Client::connect(&server).await;
    b.start("s").await;
    b.send(
        serde_json::json!({"type":"update","station":"s","track":"x.ogg",
        "title":"evil\u{1b}[2J\u{202e}ti\u{200b}tle\u{2066}","position_ms":0,"playing":true,"ack":true}),
    )
    .await;
    b.expect("ack").await;
    let mut listen = Command::new(radio_bin())
        .args(["listen", "--station", "s", "--url"])
        .arg(server.ws_url())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start radio listen");
    let out = lines(listen.stdout.take().expect("stdout"));
    let first = wait_for(&out, "a status line", |l| l.contains("evil"));
    assert!(first.contains("evil [2Jtitle"), "{first}");
    drop(out);
    // A change to show: its line finds the pipe closed.
    for i in 1..20 {
        b.update("s", "x.ogg", i * 1000, true).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        if listen.try_wait().expect("poll").is_some() {
            break;
        }
    }
    assert_eq!(
        exit_status(&mut listen, "listen after its reader went").code(),
        Some(0)
    );
}

/// A program on a pseudo-terminal (through `script`, util-linux): the test
/// types into it and reads the terminal as it shows (stdout and stderr as
/// one, prompts without a newline included).
struct OnTerminal {
    child: std::process::Child,
    keys: std::process::ChildStdin,
    screen: std::sync::Arc<std::sync::Mutex<String>>,
}

impl OnTerminal {
    fn spawn(command: &str) -> OnTerminal {
        // `script` runs the command through $SHELL; `exec` makes the
        // program itself the terminal's foreground process, so Ctrl-C
        // reaches it alone (dash, unlike bash, would otherwise stay in
        // between and die of the SIGINT, exit 130).
        let mut child = Command::new("script")
            .env("SHELL", "/bin/sh")
            .args(["-qec", &format!("exec {command}"), "/dev/null"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("run script (util-linux)");
        let keys = child.stdin.take().expect("script's stdin");
        let mut out = child.stdout.take().expect("script's stdout");
        let screen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let shown = std::sync::Arc::clone(&screen);
        std::thread::spawn(move || {
            use std::io::Read as _;
            let mut buf = [0u8; 4096];
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let text = String::from_utf8_lossy(&buf[..n]);
                shown.lock().expect("screen").push_str(&text);
            }
        });
        OnTerminal {
            child,
            keys,
            screen,
        }
    }

    /// Keys typed, as is (`\x03` is Ctrl-C).
    fn press(&mut self, keys: &str) {
        use std::io::Write as _;
        self.keys
            .write_all(keys.as_bytes())
            .and_then(|()| self.keys.flush())
            .expect("type into script");
    }

    /// Waits until the terminal's text since `from` holds `text`; gives
    /// where it ends.
    fn shows(&self, from: usize, text: &str) -> usize {
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            let screen = self.screen.lock().expect("screen").clone();
            if let Some(i) = screen.get(from..).and_then(|s| s.find(text)) {
                return from + i + text.len();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the terminal never showed {text:?}; it shows {screen:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn screen(&self) -> String {
        self.screen.lock().expect("screen").clone()
    }
}

impl Drop for OnTerminal {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}

/// `radio broadcast` typed into at a terminal: one line says how to get
/// help, a prompt awaits each line (and is erased before output), and a
/// line refused there does not fail the exit status (the person saw it).
#[tokio::test]
async fn broadcast_at_a_terminal_prompts_and_forgives() {
    let server = Server::start();
    let mut t = OnTerminal::spawn(&format!(
        "'{}' broadcast --url {} --station tty",
        radio_bin(),
        server.ws_url()
    ));
    let at = t.shows(0, "radio: type help for commands\r\n> ");
    t.press("dance\n");
    let at = t.shows(at, "dance\r\nradio: unknown command \"dance\"");
    let at = t.shows(at, "\n> ");
    t.press("play arpeggio 0:02\n");
    // The acknowledged state erases the prompt shown meanwhile, and a
    // prompt follows it.
    let at = t.shows(at, "\r\x1b[Kseq 1: playing");
    let at = t.shows(at, "\n> ");
    t.press("\x03");
    t.shows(at, "radio: stopped station tty");
    let status = crate::support::cli::exit_status(&mut t.child, "radio broadcast on a terminal");
    assert_eq!(status.code(), Some(0), "{:?}", t.screen());
    assert!(!t.screen().contains("exit status 1"), "{:?}", t.screen());
}

/// From a script, nothing of that: no hint, no prompt; Ctrl-C after a
/// refused line exits 1 and says why.
#[tokio::test]
async fn a_script_with_a_refused_line_exits_1_and_says_why() {
    let server = Server::start();
    let mut b =
        crate::support::cli::Broadcast::spawn(&["--url", &server.ws_url(), "--station", "piped"]);
    b.say("dance");
    b.say("dance again");
    b.say("play arpeggio");
    b.out_line("seq 1: playing");
    crate::support::process::signal(b.child.id(), "INT");
    assert_eq!(b.exit().code(), Some(1));
    let said = drain(&b.err, Duration::from_millis(200));
    assert_eq!(
        said.iter()
            .filter(|l| l.contains("unknown command"))
            .count(),
        2,
        "{said:?}"
    );
    assert_eq!(
        said.last().map(String::as_str),
        Some("radio: exit status 1: 2 lines were refused (see above)"),
        "{said:?}"
    );
    assert!(
        !said
            .iter()
            .any(|l| l.contains("type help") || l.contains("> ")),
        "{said:?}"
    );
}
