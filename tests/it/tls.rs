//! TLS in the server (https and wss on
//! `--listen` with `--tls-cert`/`--tls-key`, reloaded on SIGHUP) and
//! `--ca-cert` for the CLI clients. Real certificates from openssl, real
//! TLS on both ends. Before, `radio serve` had no TLS at all.

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;

use crate::support::cli::{Broadcast, json_lines, wait_for};
use crate::support::process::kill;
use crate::support::tls::Certs;
use crate::support::{Server, radio_bin};

fn tls_server(certs: &Certs) -> Server {
    Server::with(|c| {
        c.tls = Some(radio::TlsFiles {
            cert: certs.path("server.pem"),
            key: certs.path("server.key"),
        })
    })
}

/// HTTPS answers, wss carries the whole protocol, and the station's states
/// reach a TLS listener (the fan-out leaves TLS sockets to their own task:
/// a raw frame written under TLS would break the stream).
#[tokio::test]
async fn https_and_wss_end_to_end() {
    let certs = Certs::new("localhost");
    let server = tls_server(&certs);
    let health = certs.get(server.addr, "/healthz").await;
    assert_eq!(health.status, 200, "{}", health.text());
    let mut b = certs.ws(server.addr).await;
    let mut l = certs.ws(server.addr).await;
    b.start("secure").await;
    l.tune("secure").await;
    let mut last = 0;
    for i in 0..50 {
        last = b.update("secure", &format!("t{i}"), i, true).await;
    }
    // Every sync arrives whole and in order, ending with the newest.
    loop {
        let s = l.expect("sync").await;
        if s["seq"] == last {
            assert_eq!(s["track"], "t49");
            break;
        }
    }
    l.send(json!({"type":"list_stations"})).await;
    assert_eq!(l.expect("stations").await["total"], 1);
    // Plain HTTP to the TLS port is not served (a TLS alert, then closed).
    let mut s = crate::support::http::send(server.addr, "GET", "/healthz", &[], None).await;
    let answer = crate::support::http::read_until_closed(&mut s, "plain HTTP is refused").await;
    assert!(!answer.starts_with(b"HTTP/1.1"), "{answer:?}");
}

/// `radio listen --ca-cert` trusts a private CA; without it the server's
/// certificate is refused (unknown issuer).
#[tokio::test]
async fn the_cli_listens_over_wss_with_ca_cert() {
    let certs = Certs::new("localhost");
    let server = Server::spawn_process(&[
        "--tls-cert",
        &certs.arg("server.pem"),
        "--tls-key",
        &certs.arg("server.key"),
    ]);
    let url = format!("wss://localhost:{}/ws", server.addr.port());
    let mut b = certs.ws(server.addr).await;
    b.start("cli").await;
    b.update("cli", "over-tls", 0, true).await;
    let listen = |ca: Option<&str>| {
        let mut cmd = Command::new(radio_bin());
        cmd.args(["listen", "--url", &url, "--station", "cli", "--json"]);
        if let Some(ca) = ca {
            cmd.args(["--ca-cert", ca]);
        }
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd.spawn().expect("start radio listen")
    };
    let mut child = listen(Some(&certs.arg("ca.pem")));
    tokio::time::sleep(Duration::from_secs(2)).await;
    crate::support::process::kill(&mut child);
    let out = child.wait_with_output().expect("its output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("over-tls"),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The Mozilla roots do not know this CA.
    let mut child = listen(None);
    tokio::time::sleep(Duration::from_secs(2)).await;
    crate::support::process::kill(&mut child);
    let out = child.wait_with_output().expect("its output");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("over-tls"));
    assert!(stderr.to_lowercase().contains("certificate"), "{stderr}");
    assert!(stderr.contains("pass --ca-cert FILE"), "{stderr}");
}

/// A self-signed certificate made the common way (`openssl req -x509`,
/// which OpenSSL 3 marks `CA:TRUE`) was refused even when given to
/// `--ca-cert` (webpki: `CaUsedAsEndEntity`). Now a `--ca-cert` file holding
/// exactly the server's certificate is trusted; another self-signed
/// certificate for the same name still is not.
#[tokio::test]
async fn the_cli_trusts_a_self_signed_certificate_given_as_ca_cert() {
    let certs = Certs::self_signed();
    let other = Certs::self_signed();
    let server = tls_server(&certs);
    let url = format!("wss://localhost:{}/ws", server.addr.port());
    let ca = certs.arg("server.pem");
    // The broadcaster reads the library over https, and broadcasts over wss.
    let mut b = Broadcast::spawn(&["--url", &url, "--station", "self", "--ca-cert", &ca]);
    b.say("play arpeggio");
    let mut listen = Command::new(radio_bin())
        .args(["listen", "--url", &url, "--station", "self", "--json"])
        .args(["--ca-cert", &ca])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start radio listen");
    tokio::time::sleep(Duration::from_secs(2)).await;
    kill(&mut listen);
    let out = listen.wait_with_output().expect("its output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("A minor arpeggio"),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    b.say("stop");
    assert_eq!(b.exit().code(), Some(0));

    // Another certificate is not the server's: refused, saying why.
    let ca = other.arg("server.pem");
    let mut b = Broadcast::spawn(&["--url", &url, "--station", "self", "--ca-cert", &ca]);
    let said = b.err_line("certificate");
    assert!(said.starts_with("radio:"), "{said}");
    assert_eq!(b.exit().code(), Some(1));
}

/// `radio broadcast` over wss reads the library over https with the same
/// `--ca-cert`, so a query resolves and listeners get its title; without
/// the CA it stops at the certificate, saying so.
#[tokio::test]
async fn the_cli_broadcasts_the_library_over_https() {
    let certs = Certs::new("localhost");
    let server = tls_server(&certs);
    let url = format!("wss://localhost:{}/ws", server.addr.port());
    let mut l = certs.ws(server.addr).await;
    l.tune("tls-lib").await;
    let ca = certs.arg("ca.pem");
    let mut b = Broadcast::spawn(&["--url", &url, "--station", "tls-lib", "--ca-cert", &ca]);
    b.say("play arpeggio");
    let s = l.expect("sync").await;
    assert_eq!(s["track"], "demo/1-a-minor-arpeggio.wav", "{s}");
    assert_eq!(s["title"], "A minor arpeggio", "{s}");
    b.say("stop");
    assert_eq!(b.exit().code(), Some(0));

    let mut b = Broadcast::spawn(&["--url", &url, "--station", "tls-lib"]);
    let said = b.err_line("certificate");
    assert!(said.starts_with("radio:"), "{said}");
    b.err_line("pass --ca-cert FILE");
    assert_eq!(b.exit().code(), Some(1));
}

/// `radio listen --player mpv` over wss: the media check and mpv's own
/// https fetch trust `--ca-cert`, and mpv checks the certificate (by
/// default it checks none): with another CA file it plays nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mpv_plays_over_https_trusting_ca_cert() {
    let certs = Certs::new("localhost");
    let server = tls_server(&certs);
    let mut b = certs.ws(server.addr).await;
    b.start("tls-mpv").await;
    b.update("tls-mpv", "demo/1-a-minor-arpeggio.wav", 0, true)
        .await;
    let url = format!("wss://localhost:{}/ws", server.addr.port());
    let ca = certs.arg("ca.pem");
    let listen = |extra: &[&str]| {
        let mut child = Command::new(radio_bin())
            .args(["listen", "--json", "--url", &url, "--station", "tls-mpv"])
            .args([
                "--ca-cert",
                &ca,
                "--player",
                "mpv",
                "--player-arg=--ao=null",
            ])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start radio listen --player mpv");
        let out = json_lines(child.stdout.take().expect("stdout"));
        (child, out)
    };
    let (mut child, out) = listen(&[]);
    wait_for(&out, "mpv playing over https", |v| {
        v["type"] == "player"
            && v["state"] == "playing"
            && v["position_ms"].as_u64().is_some_and(|p| p > 500)
    });
    kill(&mut child);

    let (mut child, out) = listen(&["--player-arg=--tls-ca-file=/dev/null"]);
    wait_for(&out, "mpv refusing the certificate", |v| {
        v["type"] == "player" && v["state"] == "failed"
    });
    kill(&mut child);
}

/// SIGHUP reads the certificate again: new handshakes get the new one,
/// and a connection made before keeps working.
#[tokio::test]
async fn sighup_reloads_the_certificate_without_dropping_connections() {
    let certs = Certs::new("first");
    let mut server = Server::spawn_process(&[
        "--tls-cert",
        &certs.arg("server.pem"),
        "--tls-key",
        &certs.arg("server.key"),
    ]);
    let first = certs.server_der();
    let (_, presented) = certs.connect(server.addr).await;
    assert_eq!(presented, first);
    let mut before = certs.ws(server.addr).await;
    certs.issue("second");
    let second = certs.server_der();
    assert_ne!(first, second);
    server.signal("HUP");
    crate::support::eventually("new handshakes present the new certificate", async || {
        let (_, presented) = certs.connect(server.addr).await;
        if presented == second {
            Ok(())
        } else {
            Err("still the first")
        }
    })
    .await;
    before.send(json!({"type":"ping"})).await;
    before.expect("pong").await;
    // A broken file keeps the certificate in force.
    std::fs::write(certs.path("server.pem"), "not a certificate").expect("write");
    server.signal("HUP");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, presented) = certs.connect(server.addr).await;
    assert_eq!(presented, second);
    assert!(
        server.log().contains("TLS certificate not reloaded"),
        "{}",
        server.log()
    );
}

/// rustls logged a WARN line per event a client chose: an IP address as
/// SNI, a warning alert, so a client could fill the log. Now rustls's own
/// log is off (unless `RUST_LOG` names it) and the server counts the TLS
/// failures it sees in its aggregated warnings.
#[tokio::test]
async fn clients_cannot_fill_the_log_through_tls() {
    use tokio::io::AsyncWriteExt as _;
    let certs = Certs::new("localhost");
    let server = Server::spawn_process(&[
        "--tls-cert",
        &certs.arg("server.pem"),
        "--tls-key",
        &certs.arg("server.key"),
    ]);
    let connect = format!("127.0.0.1:{}", server.addr.port());
    for _ in 0..5 {
        // An IP address as the SNI host name (OpenSSL sends it as given).
        let out = Command::new("openssl")
            .args(["s_client", "-connect", &connect, "-servername", "127.0.0.1"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run openssl s_client");
        assert!(out.success());
    }
    for _ in 0..20 {
        // Warning alerts (close_notify, TLS 1.2) instead of a ClientHello.
        let mut s = tokio::net::TcpStream::connect(server.addr)
            .await
            .expect("connect");
        let alert = [0x15, 0x03, 0x03, 0x00, 0x02, 0x01, 0x00];
        let _ = s.write_all(&alert.repeat(3)).await;
        let _ = s.shutdown().await;
    }
    for _ in 0..30 {
        // A record that does not decrypt, after a good handshake.
        let (mut tls, _) = certs.connect(server.addr).await;
        let bad = [0x17, 0x03, 0x03, 0x00, 0x20].iter().chain(&[0u8; 32]);
        let bad: Vec<u8> = bad.copied().collect();
        let _ = tls.get_mut().0.write_all(&bad).await;
        let mut buf = [0u8; 64];
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            tokio::io::AsyncReadExt::read(&mut tls, &mut buf),
        )
        .await;
    }
    // The server still answers, and has seen every connection.
    assert_eq!(certs.get(server.addr, "/healthz").await.status, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = server.log();
    assert_eq!(
        log.matches("TLS connections ended by a bad record").count(),
        1,
        "{log}"
    );
    assert!(!log.contains("Illegal SNI"), "{log}");
    assert!(!log.contains("alert warning"), "{log}");
    assert!(!log.contains("rustls"), "{log}");
    assert!(log.matches("TLS handshakes failed").count() <= 1, "{log}");
}

/// `radio loadtest --ca-cert` reaches a wss:// server with a self-signed
/// certificate: its broadcaster, its clock probes and every listener of
/// its worker processes trust the file, and every listener gets the final
/// state. Without the flag the Mozilla roots refuse the certificate and
/// the run says so.
#[test]
fn loadtest_reaches_a_self_signed_wss_server_with_ca_cert() {
    let certs = Certs::self_signed();
    let server = Server::spawn_process(&[
        "--max-connections-per-ip",
        "0",
        "--tls-cert",
        &certs.arg("server.pem"),
        "--tls-key",
        &certs.arg("server.key"),
    ]);
    let url = format!("wss://127.0.0.1:{}/ws", server.addr.port());
    let run = |extra: &[&str]| {
        Command::new(radio_bin())
            .args(["loadtest", "--url", &url, "--listeners", "200"])
            .args(["--workers", "2", "--duration", "2s"])
            .args(["--update-interval", "250ms", "--min-delivery", "100"])
            .args(extra)
            .output()
            .expect("run radio loadtest")
    };
    let out = run(&["--ca-cert", &certs.arg("server.pem")]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.contains("200 connected"), "{stdout}");
    assert!(stdout.contains("final state 100.000%"), "{stdout}");

    let out = run(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.to_lowercase().contains("certificate"), "{stderr}");
}
