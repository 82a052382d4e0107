//! What points a radio app at a station's stream: the `.m3u` and `.pls`
//! playlists (absolute URLs as the client asked for them, through a trusted
//! proxy too) and `/status-json.xsl` in Icecast's shape, on one node and on
//! every node of a cluster.

use std::time::Duration;

use radio::{BackendConfig, RedisConfig, ServerConfig};
use serde_json::{Value, json};

use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;

use crate::support::http::read_until_closed;
use crate::support::{Client, Redis, Resp, Server, eventually};

/// A broadcaster playing `track` (titled) on `station`.
async fn on_air(server: &Server, station: &str, title: &str, artist: &str) -> Client {
    let mut caster = Client::connect(server).await;
    caster.start(station).await;
    caster
        .send(
            json!({"type":"update","station":station,"track":"a.mp3","position_ms":0,
            "playing":true,"title":title,"artist":artist,"ack":true}),
        )
        .await;
    caster.expect("ack").await;
    caster
}

/// `GET path` with `headers` as they are (the harness's requests say
/// `Host: localhost`; these name their own).
async fn get_with(server: &Server, path: &str, headers: &[(&str, &str)]) -> Resp {
    let mut req = format!("GET {path} HTTP/1.1\r\nConnection: close\r\n");
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let mut s = TcpStream::connect(server.addr).await.expect("connect");
    s.write_all(req.as_bytes()).await.expect("send the request");
    Resp::parse(&read_until_closed(&mut s, "the response").await)
}

/// The playlists of a live station name its stream by an absolute URL on
/// the host the client asked; a station that is not live has none.
#[tokio::test]
async fn playlists_point_at_the_stream() {
    let server = Server::start();
    let _caster = on_air(&server, "jazz", "So What", "Miles Davis").await;
    let host = server.addr.to_string();
    let stream = format!("http://{host}/stations/jazz/stream");

    let m3u = get_with(&server, "/stations/jazz/stream.m3u", &[("Host", &host)]).await;
    assert_eq!(m3u.status, 200, "{}", m3u.text());
    assert_eq!(m3u.header("content-type"), Some("audio/x-mpegurl"));
    assert_eq!(m3u.text(), format!("#EXTM3U\n#EXTINF:-1,jazz\n{stream}\n"));

    let pls = get_with(&server, "/stations/jazz/stream.pls", &[("Host", &host)]).await;
    assert_eq!(pls.status, 200, "{}", pls.text());
    assert_eq!(pls.header("content-type"), Some("audio/x-scpls"));
    let text = pls.text();
    assert!(text.starts_with("[playlist]\n"), "{text}");
    assert!(text.contains(&format!("\nFile1={stream}\n")), "{text}");
    assert!(text.contains("\nNumberOfEntries=1\n"), "{text}");

    let off = server.get("/stations/nobody/stream.m3u").await;
    assert_eq!(off.status, 404, "{}", off.text());
    assert_eq!(server.get("/stations/a%20b/stream.pls").await.status, 400);
    // A host that would add a line to the playlist is refused (by the
    // server's check of host names, before the playlist is made).
    let bad = get_with(&server, "/stations/jazz/stream.m3u", &[("Host", "a b")]).await;
    assert_eq!(bad.status, 421, "{}", bad.text());
    // So is a request that names two hosts.
    let two = [("Host", host.as_str()), ("Host", "elsewhere")];
    let bad = get_with(&server, "/stations/jazz/stream.m3u", &two).await;
    assert_eq!(bad.status, 400, "{}", bad.text());
}

/// Behind a trusted proxy the links are the proxy's (its scheme and host);
/// anyone else's forwarding headers change nothing.
#[tokio::test]
async fn playlists_honour_a_trusted_proxy_only() {
    let forwarded = [
        ("Host", "10.1.2.3:8080"),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Host", "radio.example"),
        ("X-Forwarded-For", "192.0.2.9"),
    ];
    let trusting = Server::with(|c| c.trusted_proxies = vec!["127.0.0.1".parse().unwrap()]);
    let _caster = on_air(&trusting, "jazz", "t", "a").await;
    let m3u = get_with(&trusting, "/stations/jazz/stream.m3u", &forwarded).await;
    assert_eq!(m3u.status, 200, "{}", m3u.text());
    assert!(
        m3u.text()
            .ends_with("\nhttps://radio.example/stations/jazz/stream\n"),
        "{}",
        m3u.text()
    );
    let status = get_with(&trusting, "/status-json.xsl", &forwarded)
        .await
        .json();
    assert_eq!(
        status["icestats"]["source"]["listenurl"],
        "https://radio.example/stations/jazz/stream"
    );
    assert_eq!(status["icestats"]["host"], "radio.example");

    let wary = Server::start();
    let _caster = on_air(&wary, "jazz", "t", "a").await;
    let m3u = get_with(&wary, "/stations/jazz/stream.m3u", &forwarded).await;
    assert!(
        m3u.text()
            .ends_with("\nhttp://10.1.2.3:8080/stations/jazz/stream\n"),
        "{}",
        m3u.text()
    );
}

/// `/status-json.xsl` as Icecast gives it: no `source` with no station,
/// one object with one, an array with several; the listing's listeners,
/// title and artist; the stream's type and bitrate.
#[tokio::test]
async fn status_json_has_icecasts_shape() {
    let server = Server::start();
    let empty = server.get("/status-json.xsl").await;
    assert_eq!(empty.status, 200);
    assert_eq!(empty.header("content-type"), Some("application/json"));
    let empty = empty.json();
    assert!(empty["icestats"].get("source").is_none(), "{empty}");
    assert!(
        empty["icestats"]["server_id"]
            .as_str()
            .unwrap()
            .starts_with("radio ")
    );
    assert!(
        empty["icestats"]["server_start_iso8601"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );

    let _jazz = on_air(&server, "jazz", "So What", "Miles Davis").await;
    let mut listener = Client::connect(&server).await;
    assert!(listener.tune("jazz").await);
    // The listing is cached for a second.
    let one = eventually("the listener is counted", async || {
        let s = server.get("/status-json.xsl").await.json();
        if s["icestats"]["source"]["listeners"] == 1 {
            Ok(s)
        } else {
            Err(s)
        }
    })
    .await;
    let source = &one["icestats"]["source"];
    assert!(source.is_object(), "{one}");
    assert_eq!(
        source["listenurl"],
        format!("http://localhost/stations/jazz/stream"),
        "the test's requests say Host: localhost"
    );
    assert_eq!(source["title"], "So What");
    assert_eq!(source["artist"], "Miles Davis");
    assert_eq!(source["server_name"], "jazz");
    assert_eq!(source["server_type"], "audio/mpeg");
    assert_eq!(source["bitrate"], 128);
    assert_eq!(source["listener_peak"], 1);
    assert!(source["stream_start_iso8601"].as_str().is_some(), "{one}");

    let _rock = on_air(&server, "rock", "Paranoid", "Black Sabbath").await;
    drop(listener);
    let two = eventually("both stations are listed", async || {
        let s = server.get("/status-json.xsl").await.json();
        if s["icestats"]["source"]
            .as_array()
            .is_some_and(|a| a.len() == 2)
        {
            Ok(s)
        } else {
            Err(s)
        }
    })
    .await;
    let sources = two["icestats"]["source"].as_array().unwrap();
    let jazz = sources.iter().find(|s| s["server_name"] == "jazz").unwrap();
    // The listener left; its peak stays.
    assert_eq!(jazz["listener_peak"], 1, "{two}");
    let rock = sources.iter().find(|s| s["server_name"] == "rock").unwrap();
    assert_eq!(rock["title"], "Paranoid");
}

fn node(redis: &Redis, id: &str) -> impl FnOnce(&mut ServerConfig) {
    let url = redis.url();
    let id = id.to_owned();
    move |c| {
        c.backend = BackendConfig::Redis(RedisConfig {
            redis_url: url,
            node_id: id,
            lease: Duration::from_secs(5),
            grace: Duration::from_secs(10),
            ca_cert: None,
            password_file: None,
            sentinel_password_file: None,
            max_stations: 10_000,
        });
    }
}

/// In a cluster every node lists every station and gives its playlist,
/// wherever its broadcaster is connected.
#[tokio::test]
async fn every_node_links_every_station() {
    let redis = Redis::start().await;
    let a = Server::with(node(&redis, "a"));
    let b = Server::with(node(&redis, "b"));
    for s in [&a, &b] {
        eventually("/readyz answers 200", async || {
            let now = s.get("/readyz").await.status;
            if now == 200 { Ok(()) } else { Err(now) }
        })
        .await;
    }
    let _caster = on_air(&a, "jazz", "So What", "Miles Davis").await;
    let status: Value = eventually("node b lists the station", async || {
        let s = b.get("/status-json.xsl").await.json();
        if s["icestats"]["source"]["server_name"] == "jazz" {
            Ok(s)
        } else {
            Err(s)
        }
    })
    .await;
    assert_eq!(status["icestats"]["source"]["title"], "So What");
    let m3u = b.get("/stations/jazz/stream.m3u").await;
    assert_eq!(m3u.status, 200, "{}", m3u.text());
    assert!(
        m3u.text()
            .ends_with("\nhttp://localhost/stations/jazz/stream\n")
    );
    assert_eq!(b.get("/stations/nobody/stream.pls").await.status, 404);
}
