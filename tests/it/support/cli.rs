//! The shell clients as processes: `radio broadcast` fed lines on stdin,
//! `radio listen --json` read as JSON lines, and waiting on what they print.

use std::fmt::Debug;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::process::{exit_within, kill, radio_bin};

/// How long a client's line or exit may take.
pub(crate) const CLIENT_LIMIT: Duration = Duration::from_secs(15);

/// Reads lines from `reader` on a thread, so a test can wait with a limit.
pub(crate) fn lines(reader: impl std::io::Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(reader).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Reads JSON lines from `reader` on a thread (other lines are skipped).
pub(crate) fn json_lines(reader: impl std::io::Read + Send + 'static) -> Receiver<Value> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(reader).lines() {
            let Ok(line) = line else { break };
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                if tx.send(v).is_err() {
                    break;
                }
            }
        }
    });
    rx
}

/// The next item from `rx` that `pred` accepts, within [`CLIENT_LIMIT`];
/// fails the test naming `what` and the items seen instead.
pub(crate) fn wait_for<T: Debug>(rx: &Receiver<T>, what: &str, pred: impl Fn(&T) -> bool) -> T {
    let deadline = Instant::now() + CLIENT_LIMIT;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(v) if pred(&v) => return v,
            Ok(v) => seen.push(v),
            Err(_) => panic!("never saw {what}; saw instead: {seen:#?}"),
        }
    }
}

/// Everything `rx` holds now and receives within `d`.
pub(crate) fn drain<T>(rx: &Receiver<T>, d: Duration) -> Vec<T> {
    let deadline = Instant::now() + d;
    let mut out = Vec::new();
    while let Ok(v) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        out.push(v);
    }
    out
}

/// Waits for a client to exit; kills it and fails the test if it does not.
pub(crate) fn exit_status(child: &mut Child, what: &str) -> ExitStatus {
    exit_within(child, CLIENT_LIMIT, what)
}

/// Starts `radio listen --json` and waits until it is tuned; returns the
/// process and its frames.
pub(crate) fn listen_json(url: &str, station: &str) -> (Child, Receiver<Value>) {
    let mut listen = Command::new(radio_bin())
        .args(["listen", "--json", "--url", url, "--station", station])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start radio listen");
    let frames = json_lines(listen.stdout.take().expect("radio listen's stdout"));
    wait_for(&frames, "tuned", |v| v["type"] == "tuned");
    (listen, frames)
}

/// A `radio broadcast` process: lines go to its stdin; its stdout and
/// stderr are read line by line. Killed on drop.
pub(crate) struct Broadcast {
    pub child: Child,
    stdin: Option<ChildStdin>,
    pub out: Receiver<String>,
    pub err: Receiver<String>,
}

impl Broadcast {
    /// `radio broadcast ARGS...`.
    pub(crate) fn spawn(args: &[&str]) -> Broadcast {
        let mut child = Command::new(radio_bin())
            .arg("broadcast")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start radio broadcast");
        let stdin = child.stdin.take();
        let out = lines(child.stdout.take().expect("radio broadcast's stdout"));
        let err = lines(child.stderr.take().expect("radio broadcast's stderr"));
        Broadcast {
            child,
            stdin,
            out,
            err,
        }
    }

    /// Writes one line to its stdin.
    pub(crate) fn say(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin is open");
        writeln!(stdin, "{line}").expect("write to radio broadcast");
    }

    /// Writes raw bytes to its stdin (a line that is not UTF-8, say).
    pub(crate) fn say_bytes(&mut self, bytes: &[u8]) {
        let stdin = self.stdin.as_mut().expect("stdin is open");
        stdin.write_all(bytes).expect("write to radio broadcast");
    }

    /// Ends its stdin (the end of a script).
    pub(crate) fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Waits for it to exit.
    pub(crate) fn exit(&mut self) -> ExitStatus {
        exit_status(&mut self.child, "radio broadcast")
    }

    /// Its next stderr line holding `text`.
    pub(crate) fn err_line(&self, text: &str) -> String {
        wait_for(&self.err, &format!("a stderr line with {text:?}"), |l| {
            l.contains(text)
        })
    }

    /// Its next stdout line holding `text`.
    pub(crate) fn out_line(&self, text: &str) -> String {
        wait_for(&self.out, &format!("a stdout line with {text:?}"), |l| {
            l.contains(text)
        })
    }
}

impl Drop for Broadcast {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}
