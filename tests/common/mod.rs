//! Test harness: a real `radio serve` process on a free loopback port, and a
//! real WebSocket client that speaks the protocol as JSON.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The radio binary under test.
pub fn radio_bin() -> &'static str {
    env!("CARGO_BIN_EXE_radio")
}

/// A running `radio serve`; killed on drop.
pub struct Server {
    pub addr: SocketAddr,
    pub child: Child,
    /// Everything the server logged so far.
    pub log: Arc<Mutex<String>>,
}

impl Server {
    /// Starts `radio serve --listen 127.0.0.1:0 ARGS...` and waits until it
    /// logs its bound address.
    pub fn start(args: &[&str]) -> Server {
        Self::start_with_env(args, &[])
    }

    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut cmd = Command::new(radio_bin());
        cmd.arg("serve");
        if !args.contains(&"--listen") {
            cmd.args(["--listen", "127.0.0.1:0"]);
        }
        cmd.args(args)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start radio serve");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let thread_log = log.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(i) = line.find("listening on http://") {
                    let addr = line[i + "listening on http://".len()..].trim().to_owned();
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(addr);
                    }
                }
                let mut l = thread_log.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(a) => a.parse().expect("bound address"),
            Err(_) => {
                let _ = child.kill();
                panic!("radio serve did not start; log:\n{}", log.lock().unwrap());
            }
        };
        Server { addr, child, log }
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Sends a signal to the server process.
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Waits for the process to exit, up to `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if std::time::Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A metric's value from `/metrics` (the first sample line that starts with `name`).
    pub async fn metric(&self, name: &str) -> f64 {
        let text = http_get(self.addr, "/metrics").await.1;
        text.lines()
            .find(|l| l.starts_with(name) && !l.starts_with('#'))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no metric {name} in\n{text}"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal HTTP/1.1 GET over a raw socket: (status, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    http_request(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
    )
    .await
}

/// Sends a raw request and reads the whole response: (status, body).
pub async fn http_request(addr: SocketAddr, raw: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(raw.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .expect("response in time")
        .expect("read");
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A protocol client over a real WebSocket.
pub struct Client {
    pub ws: Ws,
    pub session_id: String,
}

pub const RECV_TIMEOUT: Duration = Duration::from_secs(10);

impl Client {
    /// Connects and consumes the `welcome`.
    pub async fn connect(server: &Server) -> Client {
        Self::connect_url(&server.ws_url()).await
    }

    pub async fn connect_url(url: &str) -> Client {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("websocket connect");
        let mut c = Client {
            ws,
            session_id: String::new(),
        };
        let welcome = c.recv().await;
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        assert_eq!(welcome["protocol"], 1);
        c.session_id = welcome["session_id"].as_str().unwrap().to_owned();
        c
    }

    pub async fn send(&mut self, v: Value) {
        self.ws
            .send(Message::Text(v.to_string().into()))
            .await
            .expect("send");
    }

    pub async fn send_text(&mut self, t: &str) {
        self.ws
            .send(Message::Text(t.to_owned().into()))
            .await
            .expect("send");
    }

    /// The next JSON frame (pongs and pings at the WebSocket level skipped).
    pub async fn recv(&mut self) -> Value {
        match self.try_recv(RECV_TIMEOUT).await {
            Some(v) => v,
            None => panic!("no frame within {RECV_TIMEOUT:?}"),
        }
    }

    /// The next JSON frame within `limit`, or `None` on timeout or close.
    pub async fn try_recv(&mut self, limit: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .ok()??;
            match msg {
                Ok(Message::Text(t)) => {
                    return Some(serde_json::from_str(t.as_str()).expect("server sent JSON"));
                }
                Ok(Message::Close(_)) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// Skips frames until one of type `ty` arrives.
    pub async fn expect(&mut self, ty: &str) -> Value {
        let deadline = tokio::time::Instant::now() + RECV_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.try_recv(left).await {
                Some(v) if v["type"] == ty => return v,
                Some(_) => {}
                None => panic!("no {ty} frame within {RECV_TIMEOUT:?}"),
            }
        }
    }

    /// Asserts that no frame of type `ty` arrives within `limit`.
    pub async fn expect_none(&mut self, ty: &str, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.try_recv(left).await {
                Some(v) if v["type"] == ty => panic!("unexpected {ty}: {v}"),
                Some(_) => {}
                None => return,
            }
        }
    }

    /// Sends `v` and returns the next frame, which must be an `error` with `code`.
    pub async fn expect_error(&mut self, v: Value, code: &str) -> Value {
        self.send(v).await;
        let e = self.recv().await;
        assert_eq!(e["type"], "error", "expected error {code}, got {e}");
        assert_eq!(e["code"], code, "{e}");
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{e}");
        e
    }

    /// `start_broadcasting` that must succeed; returns the resume token.
    pub async fn start(&mut self, station: &str) -> String {
        self.send(json!({"type":"start_broadcasting","station":station}))
            .await;
        let r = self.recv().await;
        assert_eq!(r["type"], "broadcasting", "{r}");
        r["resume_token"].as_str().unwrap().to_owned()
    }

    /// An acknowledged `update`; returns its seq.
    pub async fn update(
        &mut self,
        station: &str,
        track: &str,
        position_ms: u64,
        playing: bool,
    ) -> u64 {
        self.send(json!({"type":"update","station":station,"track":track,
            "position_ms":position_ms,"playing":playing,"ack":true}))
            .await;
        let a = self.expect("ack").await;
        a["seq"].as_u64().unwrap()
    }

    /// `tune_in` that must succeed; returns `live`.
    pub async fn tune(&mut self, station: &str) -> bool {
        self.send(json!({"type":"tune_in","station":station})).await;
        let t = self.expect("tuned").await;
        assert_eq!(t["station"], station);
        t["live"].as_bool().unwrap()
    }
}
