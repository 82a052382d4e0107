//! A protocol client over a real WebSocket, speaking JSON frames.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::server::Server;

pub(crate) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long a frame the test waits for may take.
pub(crate) const RECV_TIMEOUT: Duration = Duration::from_secs(10);

/// A protocol client over a real WebSocket.
pub(crate) struct Client {
    pub ws: Ws,
    pub session_id: String,
}

/// What the connection did next.
enum Next {
    Frame(Value),
    /// The stream ended: with a close frame's code, or without one (an
    /// error or a plain end of the TCP stream).
    Closed(Option<u16>),
    /// Nothing within the limit.
    Silent,
}

impl Client {
    /// Connects and consumes the `welcome`.
    pub(crate) async fn connect(server: &Server) -> Client {
        Self::connect_url(&server.ws_url()).await
    }

    pub(crate) async fn connect_url(url: &str) -> Client {
        Self::try_connect(url).await.expect("websocket connect")
    }

    /// Connects with a receive buffer of about `bytes` (the kernel's
    /// minimum allows), so that the server's writes to a client that stops
    /// reading would block after little.
    pub(crate) async fn connect_small_buffer(server: &Server, bytes: u32) -> Client {
        let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
        socket.set_recv_buffer_size(bytes).expect("SO_RCVBUF");
        let stream = socket.connect(server.addr).await.expect("connect");
        let (ws, _) =
            tokio_tungstenite::client_async(server.ws_url(), MaybeTlsStream::Plain(stream))
                .await
                .expect("websocket handshake");
        Self::welcomed(ws).await
    }

    /// Connects from the loopback address `source` (any of 127.0.0.0/8),
    /// so the server counts it as another client address.
    pub(crate) async fn connect_from(server: &Server, source: &str) -> Client {
        let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
        let ip: std::net::IpAddr = source.parse().expect("an address");
        socket
            .bind(std::net::SocketAddr::new(ip, 0))
            .expect("bind the source address");
        let stream = socket.connect(server.addr).await.expect("connect");
        let (ws, _) =
            tokio_tungstenite::client_async(server.ws_url(), MaybeTlsStream::Plain(stream))
                .await
                .expect("websocket handshake");
        Self::welcomed(ws).await
    }

    /// Connects and consumes the `welcome`; the upgrade may be refused.
    pub(crate) async fn try_connect(url: &str) -> Result<Client, tungstenite::Error> {
        let (ws, _) = tokio_tungstenite::connect_async(url).await?;
        Ok(Self::welcomed(ws).await)
    }

    /// Consumes the `welcome` of a fresh connection.
    pub(crate) async fn welcomed(ws: Ws) -> Client {
        let mut c = Client {
            ws,
            session_id: String::new(),
        };
        let welcome = c.recv().await;
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        assert_eq!(welcome["protocol"], 1);
        c.session_id = welcome["session_id"]
            .as_str()
            .expect("welcome has a session_id")
            .to_owned();
        c
    }

    pub(crate) async fn send(&mut self, v: Value) {
        self.send_text(&v.to_string()).await;
    }

    pub(crate) async fn send_text(&mut self, t: &str) {
        self.ws
            .send(Message::Text(t.to_owned().into()))
            .await
            .expect("send a frame");
    }

    /// The next JSON frame within `limit` (WebSocket pings and pongs skipped).
    async fn next_within(&mut self, limit: Duration) -> Next {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let Ok(msg) = tokio::time::timeout_at(deadline, self.ws.next()).await else {
                return Next::Silent;
            };
            match msg {
                Some(Ok(Message::Text(t))) => {
                    return Next::Frame(
                        serde_json::from_str(t.as_str()).expect("server sent JSON"),
                    );
                }
                Some(Ok(Message::Close(frame))) => {
                    return Next::Closed(frame.map(|f| u16::from(f.code)));
                }
                None | Some(Err(_)) => return Next::Closed(None),
                Some(Ok(_)) => {}
            }
        }
    }

    /// The next JSON frame; fails the test on a close or after [`RECV_TIMEOUT`].
    pub(crate) async fn recv(&mut self) -> Value {
        match self.next_within(RECV_TIMEOUT).await {
            Next::Frame(v) => v,
            Next::Closed(code) => panic!("the connection closed ({code:?}) awaiting a frame"),
            Next::Silent => panic!("no frame within {RECV_TIMEOUT:?}"),
        }
    }

    /// Skips frames until one of type `ty` arrives.
    pub(crate) async fn expect(&mut self, ty: &str) -> Value {
        let deadline = tokio::time::Instant::now() + RECV_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_within(left).await {
                Next::Frame(v) if v["type"] == ty => return v,
                Next::Frame(_) => {}
                Next::Closed(code) => panic!("the connection closed ({code:?}) awaiting {ty}"),
                Next::Silent => panic!("no {ty} frame within {RECV_TIMEOUT:?}"),
            }
        }
    }

    /// `list_stations` until answered: the `stations` frame (others
    /// skipped). A refusal for this connection's list rate (`--list-rate`)
    /// is waited out and the request sent again, as a polite client would.
    pub(crate) async fn list_stations(&mut self) -> Value {
        let deadline = tokio::time::Instant::now() + RECV_TIMEOUT;
        self.send(json!({"type":"list_stations"})).await;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_within(left).await {
                Next::Frame(v) if v["type"] == "stations" => return v,
                Next::Frame(v)
                    if v["type"] == "error"
                        && v["code"] == "rate_limited"
                        && v["request_type"] == "list_stations" =>
                {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    self.send(json!({"type":"list_stations"})).await;
                }
                Next::Frame(_) => {}
                Next::Closed(code) => panic!("the connection closed ({code:?}) awaiting stations"),
                Next::Silent => panic!("no stations frame within {RECV_TIMEOUT:?}"),
            }
        }
    }

    /// Asserts that for `limit` the connection stays open and no frame of
    /// type `ty` arrives; returns the other frames that did, in order.
    pub(crate) async fn expect_none(&mut self, ty: &str, limit: Duration) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + limit;
        let mut others = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_within(left).await {
                Next::Frame(v) if v["type"] == ty => panic!("unexpected {ty}: {v}"),
                Next::Frame(v) => others.push(v),
                Next::Closed(code) => {
                    panic!("the connection closed ({code:?}) while no {ty} was to arrive")
                }
                Next::Silent => return others,
            }
        }
    }

    /// Skips frames until the server ends the connection, for at most 30 s;
    /// returns the close frame's code, `None` if the stream ended without
    /// one (a server giving up on a stalled socket cannot send it).
    pub(crate) async fn expect_closed(&mut self) -> Option<u16> {
        let limit = Duration::from_secs(30);
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_within(left).await {
                Next::Frame(_) => {}
                Next::Closed(code) => return code,
                Next::Silent => panic!("the server did not close the connection within {limit:?}"),
            }
        }
    }

    /// Asserts that the server closes the connection with a close frame of
    /// `code` (frames before it skipped).
    pub(crate) async fn expect_close(&mut self, code: u16) {
        assert_eq!(self.expect_closed().await, Some(code), "close code");
    }

    /// Sends `v` and returns the next frame, which must be an `error` with `code`.
    pub(crate) async fn expect_error(&mut self, v: Value, code: &str) -> Value {
        self.send(v).await;
        let e = self.recv().await;
        assert_eq!(e["type"], "error", "expected error {code}, got {e}");
        assert_eq!(e["code"], code, "{e}");
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{e}");
        e
    }

    /// `start_broadcasting` that must succeed; returns the resume token.
    pub(crate) async fn start(&mut self, station: &str) -> String {
        self.send(json!({"type":"start_broadcasting","station":station}))
            .await;
        let r = self.recv().await;
        assert_eq!(r["type"], "broadcasting", "{r}");
        r["resume_token"]
            .as_str()
            .expect("broadcasting has a resume_token")
            .to_owned()
    }

    /// An acknowledged `update`; returns its seq.
    pub(crate) async fn update(
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
        a["seq"].as_u64().expect("ack has a seq")
    }

    /// `tune_in` that must succeed; returns `live`.
    pub(crate) async fn tune(&mut self, station: &str) -> bool {
        self.send(json!({"type":"tune_in","station":station})).await;
        let t = self.expect("tuned").await;
        assert_eq!(t["station"], station);
        t["live"].as_bool().expect("tuned has live")
    }
}
