//! The outlet over real sockets: what the fan-out skips, what it leaves
//! to the owner, and a write cut short by construction.

use super::*;
use futures_util::StreamExt;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;

/// A connected pair: the server's end and the client's.
async fn sockets() -> (TcpStream, TcpStream) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let client = TcpStream::connect(addr).await.expect("connect");
    let (server, _) = listener.accept().await.expect("accept");
    (server, client)
}

async fn pair() -> (Arc<Outlet>, TcpStream) {
    let (server, client) = sockets().await;
    (Outlet::new(server), client)
}

/// A station that stays offline, with its newest state `seq` in `frame`:
/// the listener lacks only the state.
fn newest(seq: u64, frame: &[u8]) -> Frames<'_> {
    Frames {
        mark: 0,
        notice: b"",
        newest: Some((seq, frame)),
    }
}

/// A server's text frame: unmasked, the length in its shortest form.
fn text_frame(payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![0x81];
    match payload.len() {
        n if n < 126 => frame.push(n as u8),
        n if n <= usize::from(u16::MAX) => {
            frame.push(126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(payload);
    frame
}

#[test]
fn what_a_listener_lacks() {
    let sent = |seq, told| Sent { seq, told };
    let lack = |notice: u8, sync: Option<u64>, then: Sent| Lack {
        notice: notice == 1,
        sync,
        then,
    };
    // (sent, the view's liveness mark, newest) -> lack; mark 0 is
    // offline, 1 and 2 two players' turns (the server's, a broadcaster's).
    let cases = [
        (sent(0, 0), 0, None, None),
        (sent(0, 0), 1, None, Some(lack(1, None, sent(0, 1)))),
        (sent(0, 0), 1, Some(3), Some(lack(1, Some(3), sent(3, 1)))),
        (sent(3, 1), 1, Some(3), None),
        (sent(3, 1), 1, Some(4), Some(lack(0, Some(4), sent(4, 1)))),
        // A state older than what was sent (a restarted cluster's).
        (sent(5, 1), 1, Some(4), None),
        (sent(5, 1), 0, None, Some(lack(1, None, sent(5, 0)))),
        // A hand-over between players: live all along, told anew.
        (sent(5, 1), 2, Some(5), Some(lack(1, None, sent(5, 2)))),
    ];
    for (was, mark, seq, want) in cases {
        let got = was.lacks(mark, seq.map(|s| (s, s)));
        assert_eq!(got, want, "sent {was:?}, mark {mark}, newest {seq:?}");
    }
}

#[tokio::test]
async fn the_fan_out_skips_an_outlet_its_owner_holds() {
    let (outlet, _client) = pair().await;
    assert!(!outlet.take());
    let g = outlet.attach();
    assert_eq!(outlet.deliver(g, &newest(1, b"x")), Delivery::Skipped);
    // The owner is told, and catches up itself.
    outlet.missed().await;
    assert_eq!(outlet.sent(), Sent::default());
    outlet.give_back();
    let written = outlet.deliver(g, &newest(2, b"abcd"));
    assert_eq!(written, Delivery::Written { sync: true });
    assert_eq!(outlet.sent(), Sent { seq: 2, told: 0 });
    // Nothing newer: nothing written.
    assert_eq!(outlet.deliver(g, &newest(2, b"abcd")), Delivery::Nothing);
    // Detached: the shard's generation is stale, nothing is written.
    outlet.take();
    outlet.detach();
    outlet.give_back();
    let stale = outlet.deliver(g, &newest(3, b"ef"));
    assert_eq!(stale, Delivery::Nothing);
}

#[tokio::test]
async fn a_tls_outlet_is_left_to_its_owner() {
    let (server, _client) = sockets().await;
    let outlet = Outlet::new_tls(server);
    let g = outlet.attach();
    assert_eq!(outlet.deliver(g, &newest(1, b"x")), Delivery::Skipped);
    outlet.missed().await;
    assert_eq!(outlet.sent(), Sent::default());
}

/// The socket cannot take the frame whole by construction: its send
/// buffer and the peer's receive buffer are a few KiB, the frame is
/// 256 KiB, and nobody reads. Its one non-blocking write takes what
/// fits; the owner writes the rest before its own frame, and a
/// WebSocket client reads both whole and in order.
#[tokio::test]
async fn a_write_cut_short_is_handed_to_the_owner() {
    let (outlet, client) = pair().await;
    socket2::SockRef::from(outlet.stream())
        .set_send_buffer_size(4096)
        .expect("SO_SNDBUF");
    socket2::SockRef::from(&client)
        .set_recv_buffer_size(4096)
        .expect("SO_RCVBUF");
    let payload: String = (0..256 * 1024)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let frame = text_frame(payload.as_bytes());
    let g = outlet.attach();
    assert_eq!(outlet.deliver(g, &newest(1, &frame)), Delivery::Skipped);
    outlet.missed().await;
    // Half a frame is on the wire: the fan-out writes nothing more here.
    let newer = text_frame(b"newer");
    assert_eq!(outlet.deliver(g, &newest(2, &newer)), Delivery::Skipped);
    assert!(outlet.take(), "the write was cut short");
    let rest = outlet.handed_over().expect("the rest of the frame");
    assert!(
        !rest.is_empty() && rest.len() < frame.len(),
        "{}",
        rest.len()
    );
    assert_eq!(outlet.sent(), Sent { seq: 1, told: 0 });
    let reader = tokio::spawn(async move {
        let mut ws = WebSocketStream::from_raw_socket(client, Role::Client, None).await;
        let first = ws.next().await.expect("a frame").expect("a whole frame");
        let second = ws.next().await.expect("a frame").expect("a whole frame");
        (first, second)
    });
    write_all(&outlet, &rest).await.expect("the rest written");
    write_all(&outlet, &text_frame(b"reply"))
        .await
        .expect("the reply written");
    outlet.give_back();
    let (first, second) = reader.await.expect("the reader");
    assert_eq!(first, Message::text(payload));
    assert_eq!(second, Message::text("reply"));
}
