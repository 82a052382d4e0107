//! Over HTTP and the process: caps, timeouts, proxies, sessions,
//! stations, the media library, logs and secrets. Each test is one finding
//! of the review and fails on the code before its fix (the reason is in
//! each test's comment).

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::AsyncReadExt;

use crate::support::http::{UPGRADE, read_until_closed, send};
use crate::support::{Client, Resp, Server, TempDir, eventually, radio_bin, request, tone_wav};

/// A `PUT /api/session` whose body never came held its
/// connection forever (headers time out, bodies never).
#[tokio::test]
async fn a_body_that_never_arrives_is_answered_408() {
    let server = Server::with(|c| c.handshake_timeout = Duration::from_secs(1));
    let started = Instant::now();
    let mut s = send(
        server.addr,
        "PUT",
        "/api/session",
        &[
            ("Content-Type", "application/json"),
            ("Content-Length", "2048"),
        ],
        None,
    )
    .await;
    let answer = Resp::parse(&read_until_closed(&mut s, "a stalled body is answered").await);
    assert_eq!(answer.status, 408, "{}", answer.text());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

/// Plain HTTP connections had no cap at all (270 stalled
/// requests made /ws and /healthz time out) and WebSockets none per
/// address. Now every connection counts against --max-connections (503),
/// and one address gets --max-connections-per-ip (429) before any upgrade.
#[tokio::test]
async fn connections_are_capped_in_all_and_per_address() {
    let server = Server::with(|c| c.max_connections_per_ip = 2);
    let a = Client::connect(&server).await;
    let _b = Client::connect(&server).await;
    let third = request(server.addr, "GET", "/ws", &UPGRADE, None).await;
    assert_eq!(third.status, 429, "{}", third.text());
    assert!(third.text().contains("--max-connections-per-ip"));
    drop(a);
    crate::support::eventually("a closed connection frees its place", async || {
        Client::try_connect(&server.ws_url())
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .await;

    // Idle HTTP connections count against --max-connections too.
    let all = Server::with(|c| c.max_connections = 2);
    let _idle1 = tokio::net::TcpStream::connect(all.addr)
        .await
        .expect("connect");
    let _idle2 = tokio::net::TcpStream::connect(all.addr)
        .await
        .expect("connect");
    crate::support::eventually("a third connection is refused 503", async || {
        let r = request(all.addr, "GET", "/healthz", &[], None).await;
        if r.status == 503 {
            Ok(())
        } else {
            Err(r.status)
        }
    })
    .await;
}

/// Behind a proxy every peer was the proxy. Now only a
/// `--trusted-proxy` has its `X-Forwarded-For` believed, and per-address
/// caps count the client it names; anyone else's header is ignored.
#[tokio::test]
async fn a_trusted_proxys_clients_are_told_apart() {
    let proxied = Server::with(|c| {
        c.max_connections_per_ip = 1;
        c.trusted_proxies = vec!["127.0.0.0/8".parse().expect("a block")];
    });
    let via = |ip: &'static str| [&UPGRADE[..], &[("X-Forwarded-For", ip)]].concat();
    let mut open = Vec::new();
    for ip in ["198.51.100.1", "198.51.100.2"] {
        let mut s = send(proxied.addr, "GET", "/ws", &via(ip), None).await;
        let mut buf = [0u8; 256];
        let n = s.read(&mut buf).await.expect("read");
        assert!(
            buf[..n].starts_with(b"HTTP/1.1 101"),
            "{ip}: {}",
            String::from_utf8_lossy(&buf[..n])
        );
        open.push(s);
    }
    let again = request(proxied.addr, "GET", "/ws", &via("198.51.100.1"), None).await;
    assert_eq!(again.status, 429, "{}", again.text());
    // Not a trusted peer: its header names nobody.
    let direct = Server::with(|c| c.max_connections_per_ip = 1);
    let _first = Client::connect(&direct).await;
    let forged = request(direct.addr, "GET", "/ws", &via("203.0.113.9"), None).await;
    assert_eq!(forged.status, 429, "{}", forged.text());
}

/// A trusted proxy's connection is counted against no one when accepted,
/// and only a WebSocket upgrade was counted against the client it
/// forwards for: one client behind the proxy could hold any number of
/// plain HTTP requests at once. Now each is counted against its client
/// while it lasts.
#[tokio::test]
async fn a_proxied_clients_plain_requests_are_counted() {
    let server = Server::with(|c| {
        c.max_connections_per_ip = 2;
        c.trusted_proxies = vec!["127.0.0.1".parse().expect("an address")];
    });
    let from = |ip: &'static str| {
        [
            ("X-Forwarded-For", ip),
            ("Content-Type", "application/json"),
            ("Content-Length", "64"),
        ]
    };
    // Two session saves whose bodies never come: in flight until the body
    // timeout.
    let mut waiting = Vec::new();
    for _ in 0..2 {
        waiting.push(
            send(
                server.addr,
                "PUT",
                "/api/session",
                &from("198.51.100.4"),
                None,
            )
            .await,
        );
    }
    eventually("the two requests are counted", async || {
        let r = request(
            server.addr,
            "GET",
            "/healthz",
            &[("X-Forwarded-For", "198.51.100.4")],
            None,
        )
        .await;
        if r.status == 429 {
            Ok(r)
        } else {
            Err(r.status)
        }
    })
    .await;
    // Another client behind the same proxy is not.
    let other = request(
        server.addr,
        "GET",
        "/healthz",
        &[("X-Forwarded-For", "198.51.100.5")],
        None,
    )
    .await;
    assert_eq!(other.status, 200, "{}", other.text());
    // Once the requests end, their client is counted no more.
    drop(waiting);
    eventually("the ended requests are given back", async || {
        let r = request(
            server.addr,
            "GET",
            "/healthz",
            &[("X-Forwarded-For", "198.51.100.4")],
            None,
        )
        .await;
        if r.status == 200 {
            Ok(())
        } else {
            Err(r.status)
        }
    })
    .await;
}

/// Cookieless `PUT /api/session` could evict everyone's saved
/// positions (the LRU) as fast as one client could send. Now new sessions
/// are limited per client address; saving to one's own session is not.
#[tokio::test]
async fn new_sessions_are_rate_limited_per_address() {
    let server = Server::with(|c| {
        c.sessions.rate_per_minute = 3;
        c.trusted_proxies = vec!["127.0.0.1".parse().expect("an address")];
    });
    let put = async |headers: &[(&str, &str)]| {
        let body = br#"{"track":"t","position_ms":1}"#;
        let h = [&[("Content-Type", "application/json")], headers].concat();
        request(server.addr, "PUT", "/api/session", &h, Some(body)).await
    };
    let mut cookie = String::new();
    for _ in 0..3 {
        let r = put(&[]).await;
        assert_eq!(r.status, 200, "{}", r.text());
        cookie = r
            .header("set-cookie")
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_owned();
    }
    let refused = put(&[]).await;
    assert_eq!(refused.status, 429, "{}", refused.text());
    assert!(refused.header("retry-after").is_some());
    // An existing session still saves; another client has its own budget.
    assert_eq!(put(&[("Cookie", &cookie)]).await.status, 200);
    assert_eq!(
        put(&[("X-Forwarded-For", "198.51.100.7")]).await.status,
        200
    );
}

/// A scanned file replaced by a symlink was followed at request
/// time, serving any file the server user could read, with no rescan. Now
/// the file opened must be the one scanned (device and inode): 404 until a
/// rescan, which applies `--follow-symlinks`.
#[tokio::test]
async fn a_file_swapped_for_a_symlink_is_not_served() {
    let lib = TempDir::new("swap-lib");
    let outside = TempDir::new("swap-secret");
    lib.write("song.wav", tone_wav(1, &[440.0], None, None));
    outside.write("secret.wav", b"RIFF top secret, not music");
    let mut server = Server::spawn_process(&["--media", lib.arg(), "--follow-symlinks", "false"]);
    assert_eq!(server.get("/media/song.wav").await.status, 200);
    let song = lib.path().join("song.wav");
    std::fs::remove_file(&song).expect("remove");
    std::os::unix::fs::symlink(outside.path().join("secret.wav"), &song).expect("symlink");
    // Refused within a second (an open file is trusted that long
    // unchecked), and until then the file the scan found is what is sent.
    crate::support::eventually("the swap is refused", async || {
        let r = server.get("/media/song.wav").await;
        assert!(!r.text().contains("top secret"));
        if r.status == 404 {
            Ok(())
        } else {
            Err(r.status)
        }
    })
    .await;
    // A rescan applies the policy: links are not followed, so it is gone.
    server.signal("HUP");
    crate::support::eventually("the rescan drops the link", async || {
        let lib = server.get("/api/library").await.json();
        if lib.as_array().is_some_and(|a| a.is_empty()) {
            Ok(())
        } else {
            Err(lib)
        }
    })
    .await;
    assert_eq!(server.get("/media/song.wav").await.status, 404);
}

/// A scanned file replaced by a FIFO: opening it used to block until a
/// writer came, holding a blocking thread per request; about 512 requests
/// later no media request was answered at all. Now it is opened without
/// blocking and refused like any swapped file.
#[tokio::test]
async fn a_file_swapped_for_a_fifo_is_refused_at_once() {
    let lib = TempDir::new("fifo-lib");
    lib.write("song.wav", tone_wav(1, &[440.0], None, None));
    lib.write("other.wav", tone_wav(1, &[330.0], None, None));
    let server = Server::with(|c| c.media.dir = Some(lib.path().to_owned()));
    assert_eq!(server.get("/media/song.wav").await.status, 200);
    let song = lib.path().join("song.wav");
    std::fs::remove_file(&song).expect("remove");
    let made = std::process::Command::new("mkfifo")
        .arg(&song)
        .status()
        .expect("run mkfifo");
    assert!(made.success());
    // Refused within a second (an open file is trusted that long unchecked).
    crate::support::eventually("the swap is refused", async || {
        let r = server.get("/media/song.wav").await;
        if r.status == 404 {
            Ok(())
        } else {
            Err(r.status)
        }
    })
    .await;
    // More requests than the blocking pool has threads.
    for _ in 0..600 {
        let r = server.get("/media/song.wav").await;
        assert_eq!(r.status, 404, "{}", r.text());
    }
    assert_eq!(server.get("/media/other.wav").await.status, 200);
}

/// 20 connections produced 830 INFO lines a second while under
/// the rate limit, and every refused upgrade was a WARN. Now per-connection
/// events are debug, and client-caused warnings are one line per reason per
/// 10 s with a count.
#[tokio::test]
async fn logs_stay_quiet_whatever_clients_do() {
    // Dropped stations end their grace period within the run, too.
    let server = Server::spawn_process(&[
        "--max-connections-per-ip",
        "20",
        "--rate-limit",
        "5",
        "--grace-period",
        "100ms",
        // Churn from one address beyond its share and claim rate.
        "--max-stations-per-ip",
        "0",
        "--claim-rate",
        "0",
    ]);
    let before = server.log().lines().count();
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut round = 0;
    while Instant::now() < deadline {
        round += 1;
        let mut clients = Vec::new();
        for i in 0..20 {
            let mut c = Client::connect(&server).await;
            c.start(&format!("churn{round}x{i}")).await;
            clients.push(c);
        }
        // Over the per-address cap: refused upgrades.
        for _ in 0..10 {
            let r = request(server.addr, "GET", "/ws", &UPGRADE, None).await;
            assert_eq!(r.status, 429);
        }
        // Floods closed for the rate.
        for c in clients.iter_mut().take(5) {
            for _ in 0..40 {
                c.send(json!({"type":"ping"})).await;
            }
        }
        drop(clients);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let log = server.log();
    let lines: Vec<&str> = log.lines().skip(before).collect();
    // One line per reason (refused, flood) at most in these 3 s, not hundreds.
    assert!(
        lines.len() <= 6,
        "{} lines:\n{}",
        lines.len(),
        lines.join("\n")
    );
}

/// The Redis password showed in `radio serve --help`
/// (`[env: RADIO_REDIS=...]`) and in the error for a malformed URL.
#[test]
fn redis_passwords_are_never_printed() {
    let help = Command::new(radio_bin())
        .args(["serve", "--help"])
        .env("RADIO_REDIS", "redis://user:hunter2@127.0.0.1:6379/0")
        .env("RADIO_BROADCAST_KEY", "sesame-hunter3")
        .output()
        .expect("run radio serve --help");
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(text.contains("--redis"), "{text}");
    assert!(
        !text.contains("hunter2") && !text.contains("hunter3"),
        "{text}"
    );
    let bad = Command::new(radio_bin())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--redis",
            "redis://user:hunter2@host:notaport/0",
        ])
        .output()
        .expect("run radio serve");
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("user:***@host"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
    // A password with an unencoded `/` was printed whole: the masking
    // took the `/` for the end of the URL's authority.
    let slash = serve_err(&["--redis", "redis://user:hun/ter2@host:6379/0"]);
    assert!(slash.contains("user:***@host"), "{slash}");
    assert!(!slash.contains("ter2"), "{slash}");
}

/// `radio serve`'s stderr, for arguments it must refuse.
fn serve_err(args: &[&str]) -> String {
    let out = Command::new(radio_bin())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(args)
        .output()
        .expect("run radio serve");
    assert!(!out.status.success(), "{args:?} was accepted");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The Redis password could only be given in the `--redis` URL, which is
/// in argv (every local user can read it): `--redis-password-file` reads
/// it from a file, and says what to do when the file will not do.
#[test]
fn a_redis_password_file_that_will_not_do_is_explained() {
    let dir = TempDir::new("redis-password");
    dir.write("empty", "\n");
    dir.write("password", "s3cret\n");
    let url = "redis://127.0.0.1:1/0";
    let missing = dir.path().join("missing");
    let missing = missing.to_str().expect("a UTF-8 path");
    let err = serve_err(&["--redis", url, "--redis-password-file", missing]);
    assert!(
        err.contains("cannot read --redis-password-file") && err.contains("missing"),
        "{err}"
    );
    let empty = dir.path().join("empty");
    let err = serve_err(&[
        "--redis",
        url,
        "--redis-password-file",
        empty.to_str().expect("UTF-8"),
    ]);
    assert!(
        err.contains("--redis-password-file") && err.contains("is empty"),
        "{err}"
    );
    // Two passwords: which one was meant?
    let password = dir.path().join("password");
    let err = serve_err(&[
        "--redis",
        "redis://:other@127.0.0.1:1/0",
        "--redis-password-file",
        password.to_str().expect("UTF-8"),
    ]);
    assert!(err.contains("leave the password out of the URL"), "{err}");
    assert!(!err.contains("other@"), "{err}");
    // Without --redis it has nothing to do: a usage error.
    let err = serve_err(&["--redis-password-file", password.to_str().expect("UTF-8")]);
    assert!(err.contains("--redis"), "{err}");
}

/// With `--follow-symlinks` (the default), a rescan followed a link to any
/// file the server could read and served it. Now a link is followed only
/// when its real target lies under the media root (canonicalized), and the
/// scan says which were not.
#[tokio::test]
async fn a_rescan_follows_only_links_inside_the_media_root() {
    let lib = TempDir::new("root-lib");
    let outside = TempDir::new("root-secret");
    lib.write("song.wav", tone_wav(1, &[440.0], None, None));
    lib.write("kept.wav", tone_wav(1, &[330.0], None, None));
    // It plays: only where it lies keeps it out.
    outside.write("secret.wav", tone_wav(1, &[220.0], Some("Secret"), None));
    let mut server = Server::spawn_process(&["--media", lib.arg()]);
    let song = lib.path().join("song.wav");
    std::fs::remove_file(&song).expect("remove");
    std::os::unix::fs::symlink(outside.path().join("secret.wav"), &song).expect("symlink");
    std::os::unix::fs::symlink(outside.path(), lib.path().join("elsewhere")).expect("symlink");
    std::os::unix::fs::symlink(lib.path().join("kept.wav"), lib.path().join("alias.wav"))
        .expect("symlink");
    server.signal("HUP");
    let ids = crate::support::eventually("the rescan sees the links", async || {
        let lib = server.get("/api/library").await.json();
        let ids: Vec<String> = lib
            .as_array()
            .expect("a list")
            .iter()
            .map(|t| t["id"].as_str().expect("an id").to_owned())
            .collect();
        if ids.iter().any(|i| i == "alias.wav") {
            Ok(ids)
        } else {
            Err(ids)
        }
    })
    .await;
    assert_eq!(ids, ["alias.wav", "kept.wav"]);
    assert_eq!(server.get("/media/alias.wav").await.status, 200);
    let secret = server.get("/media/song.wav").await;
    assert_eq!(secret.status, 404);
    assert_eq!(server.get("/media/elsewhere/secret.wav").await.status, 404);
    assert!(
        server.log().contains("outside the media root"),
        "{}",
        server.log()
    );
}

/// A scanned file replaced by a symlink to that very file (same device
/// and inode) passed the inode check, since the open followed the link.
/// Now the scan's files are opened with `O_NOFOLLOW`: a link there is a
/// swap, 404 until a rescan.
#[tokio::test]
async fn a_file_swapped_for_a_symlink_to_itself_is_not_served() {
    let lib = TempDir::new("nofollow-lib");
    lib.write("song.wav", tone_wav(1, &[440.0], None, None));
    let server = Server::with(|c| c.media.dir = Some(lib.path().to_owned()));
    assert_eq!(server.get("/media/song.wav").await.status, 200);
    let song = lib.path().join("song.wav");
    let hidden = lib.path().join(".hidden.wav");
    std::fs::rename(&song, &hidden).expect("rename");
    std::os::unix::fs::symlink(&hidden, &song).expect("symlink");
    // Refused within a second (an open file is trusted that long unchecked).
    let r = crate::support::eventually("the swap is refused", async || {
        let r = server.get("/media/song.wav").await;
        if r.status == 404 {
            Ok(r)
        } else {
            Err(r.status)
        }
    })
    .await;
    assert!(r.text().contains("changed since"), "{}", r.text());
}

/// A track whose file could not be opened logged a WARN line per request.
/// Now it is one aggregated line per 10 s, with the count.
#[tokio::test]
async fn an_unreadable_media_file_is_one_aggregated_warning() {
    let lib = TempDir::new("unreadable-lib");
    lib.write("dir/song.wav", tone_wav(1, &[440.0], None, None));
    let server = Server::with_log("", |c| c.media.dir = Some(lib.path().to_owned()));
    assert_eq!(server.get("/media/dir/song.wav").await.status, 200);
    // Its directory becomes a file: opening the track fails (ENOTDIR).
    std::fs::remove_dir_all(lib.path().join("dir")).expect("remove");
    lib.write("dir", b"not a directory");
    // Seen within a second (an open file is trusted that long unchecked).
    crate::support::eventually("the open fails", async || {
        let r = server.get("/media/dir/song.wav").await;
        if r.status == 500 {
            Ok(())
        } else {
            Err(r.status)
        }
    })
    .await;
    for _ in 0..19 {
        assert_eq!(server.get("/media/dir/song.wav").await.status, 500);
    }
    let log = server.log();
    assert_eq!(log.matches("cannot be read").count(), 1, "{log}");
    assert!(!log.contains("cannot open a media file"), "{log}");
}

/// IPv6 clients were counted per /64 only, so a /48 was 65,536 budgets:
/// 300 connections of 300 got in under a limit of 2. Now a /56 holds 4
/// times the limit and a /48 16 times it (here through a trusted proxy,
/// which names the clients: loopback has one IPv6 address).
#[tokio::test]
async fn an_ipv6_site_is_counted_in_its_slash_56_and_48() {
    let server = Server::with(|c| {
        c.max_connections_per_ip = 2;
        c.trusted_proxies = vec!["127.0.0.1".parse().expect("an address")];
    });
    let upgrade = async |client: String| {
        let headers = [&UPGRADE[..], &[("X-Forwarded-For", client.as_str())]].concat();
        let mut s = send(server.addr, "GET", "/ws", &headers, None).await;
        let mut buf = [0u8; 256];
        let n = s.read(&mut buf).await.expect("read");
        buf[..n].starts_with(b"HTTP/1.1 101").then_some(s)
    };
    let mut open = Vec::new();
    // 300 /64s of one /56: 4 x 2 get in.
    for n in 0..300u32 {
        if let Some(s) = upgrade(format!("2001:db8:7:{:x}::1", n % 256)).await {
            open.push(s);
        }
    }
    assert_eq!(open.len(), 8);
    // Spread over the /48's other /56s: 16 x 2 in all.
    for n in 1..300u32 {
        let site = (n % 256) << 8;
        if let Some(s) = upgrade(format!("2001:db8:7:{site:x}::1")).await {
            open.push(s);
        }
    }
    assert_eq!(open.len(), 32);
    // Another /48 has its own.
    assert!(upgrade("2001:db8:8::1".to_owned()).await.is_some());
}

/// Over real IPv6 (`::1`): the per-address limit counts the client's /64.
#[tokio::test]
async fn connections_over_ipv6_loopback_are_counted() {
    let server = Server::spawn_process(&["--listen", "[::1]:0", "--max-connections-per-ip", "2"]);
    assert!(server.addr.is_ipv6(), "{}", server.addr);
    let url = server.ws_url();
    let _a = Client::try_connect(&url).await.expect("first");
    let _b = Client::try_connect(&url).await.expect("second");
    let third = request(server.addr, "GET", "/ws", &UPGRADE, None).await;
    assert_eq!(third.status, 429, "{}", third.text());
}
