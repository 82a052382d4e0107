//! Running `radio serve` as an operator would: the address it is told to
//! listen on, and what it says at start about the open-files limit.

use std::process::Command;

use crate::support::{Server, radio_bin};

#[tokio::test]
async fn listens_on_a_host_name() {
    let server = Server::spawn_process(&["--listen", "localhost:0"]);
    // localhost resolves to 127.0.0.1 (and ::1 where the host has IPv6):
    // each address is bound and logged.
    assert!(server.addr.ip().is_loopback(), "{}", server.addr);
    assert_eq!(server.get("/healthz").await.status, 200);
    assert!(
        server.log().contains("listening on http://"),
        "{}",
        server.log()
    );
}

#[test]
fn a_bad_listen_address_is_a_usage_error() {
    for (arg, says) in [
        ("localhost", "no port"),
        ("localhost:http", "is not a port"),
        ("::1:8080", "IPv6 address in brackets"),
    ] {
        let out = Command::new(radio_bin())
            .args(["serve", "--listen", arg])
            .output()
            .expect("run radio serve");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{arg}: {err}");
        assert!(
            err.contains(says) && err.contains("HOST:PORT"),
            "{arg}: {err}"
        );
    }
    let out = Command::new(radio_bin())
        .args(["serve", "--listen", "no-such-host.invalid:8080"])
        .output()
        .expect("run radio serve");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("cannot resolve --listen no-such-host.invalid:8080"),
        "{err}"
    );
}

/// `--listen 8080`, a port alone, is told the HOST:PORT to write.
#[test]
fn a_port_alone_is_told_the_address_to_write() {
    let out = Command::new(radio_bin())
        .args(["serve", "--listen", "8080"])
        .output()
        .expect("run radio serve");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("\"8080\" is a port"), "{err}");
    assert!(
        err.contains("--listen 127.0.0.1:8080") && err.contains("--listen 0.0.0.0:8080"),
        "{err}"
    );
}

/// An address another process holds: said once, with who holds it and how
/// to listen elsewhere, and before anything about the server's capacity.
#[test]
fn an_address_in_use_says_what_to_do() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a port");
    let addr = taken.local_addr().expect("its address").to_string();
    let out = Command::new(radio_bin())
        .args(["serve", "--listen", &addr])
        .output()
        .expect("run radio serve");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("another process is listening there"), "{err}");
    assert!(err.contains("--listen 127.0.0.1:0"), "{err}");
    assert_eq!(
        err.matches(&addr).count(),
        1,
        "the address said once: {err}"
    );
    assert!(!err.contains("room for about"), "{err}");
}

/// A server that cannot start says why first: no INFO line about its
/// capacity (open files) above the error.
#[test]
fn a_start_up_error_comes_before_the_capacity() {
    let missing = std::env::temp_dir().join(format!("radio-no-key-{}", std::process::id()));
    let out = Command::new(radio_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--broadcast-key-file"])
        .arg(&missing)
        .output()
        .expect("run radio serve");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot read --broadcast-key-file"), "{err}");
    assert!(!err.contains("room for about"), "{err}");
}

#[test]
fn the_open_files_limit_warns_only_below_what_was_asked() {
    // The default --max-connections is a cap: the capacity is told at info.
    let server = Server::spawn_process(&[]);
    let log = server.log();
    assert!(log.contains("room for about"), "{log}");
    assert!(!log.contains("WARN"), "{log}");
    drop(server);
    // Asked for more than the limit holds: a warning that says what to do.
    let server = Server::spawn_process(&["--max-connections", "100000000"]);
    let log = server.log();
    assert!(
        log.contains("WARN") && log.contains("fewer than --max-connections 100000000"),
        "{log}"
    );
    assert!(log.contains("LimitNOFILE="), "{log}");
}
