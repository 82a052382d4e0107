//! End-to-end: every message and error code of the protocol, over real
//! sockets against a real `radio serve`.

mod common;

use common::{Client, Server};
use serde_json::json;

#[tokio::test]
async fn broadcast_reaches_a_listener() {
    let server = Server::start(&[]);
    let mut b = Client::connect(&server).await;
    let mut l = Client::connect(&server).await;
    assert!(!l.tune("jazz").await, "not live before start");
    b.start("jazz").await;
    l.expect("broadcaster_online").await;
    let seq = b.update("jazz", "a.mp3", 1000, true).await;
    let s = l.expect("sync").await;
    assert_eq!(s["seq"], seq);
    assert_eq!(s["track"], "a.mp3");
    assert_eq!(s["cause"], "update");
}
