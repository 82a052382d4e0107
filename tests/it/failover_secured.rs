//! Redis Sentinel the way it is run in production: TLS on every link
//! (`rediss+sentinel://` with `--redis-ca-cert`), and passwords on the data
//! nodes (in the URL or in `--redis-password-file`) and on the Sentinels
//! (`--redis-sentinel-password-file`). Each setup serves a station through
//! a failover of its master; a password that will not do stops
//! `radio serve` at start with a message that says which one. Real
//! redis-server processes throughout, the Sentinels too.

use std::time::Duration;

use radio::{BackendConfig, RedisConfig};

use crate::support::sentinel::{Sentinels, Setup};
use crate::support::tls::Certs;
use crate::support::{Client, Server, TempDir, eventually, update_retrying};

/// A node behind `url`, in this process, with a two-second lease.
fn node(url: &str, id: &str, edit: impl FnOnce(&mut RedisConfig)) -> Server {
    let mut cfg = RedisConfig {
        redis_url: url.to_owned(),
        node_id: id.to_owned(),
        lease: Duration::from_secs(2),
        grace: Duration::from_secs(10),
        ca_cert: None,
        password_file: None,
        sentinel_password_file: None,
        max_stations: 10_000,
    };
    edit(&mut cfg);
    Server::with(|c| c.backend = BackendConfig::Redis(cfg))
}

async fn wait_ready(server: &Server, status: u16) {
    eventually(&format!("/readyz answers {status}"), async || {
        let now = server.get("/readyz").await.status;
        if now == status { Ok(()) } else { Err(now) }
    })
    .await;
}

/// A station broadcast from `from`, with a listener on each of `to`: the
/// master is killed, the Sentinels promote the replica, and every listener
/// ends with the state sent after the failover, its `seq` never going
/// back.
async fn a_station_survives_a_failover(sentinels: &mut Sentinels, from: &Server, to: &[&Server]) {
    for n in [from].iter().chain(to) {
        wait_ready(n, 200).await;
    }
    let mut b = Client::connect(from).await;
    b.start("guarded").await;
    let mut listeners = Vec::new();
    for n in to {
        let mut l = Client::connect(n).await;
        assert!(l.tune("guarded").await, "the station is live");
        listeners.push(l);
    }
    let before = b.update("guarded", "before.mp3", 0, true).await;
    let old = sentinels.kill_master().await;
    let new = sentinels.wait_failover(old).await;
    assert_ne!(new, old);
    for n in [from].iter().chain(to) {
        wait_ready(n, 200).await;
    }
    let after = update_retrying(&mut b, "guarded", "after.mp3", 0).await;
    assert!(after > before, "seq grows across the failover");
    for l in &mut listeners {
        let mut seen = Vec::new();
        loop {
            let f = l.recv().await;
            if f["type"] == "sync" {
                seen.push(f["seq"].as_u64().expect("a seq"));
                if f["seq"].as_u64() >= Some(after) {
                    assert_eq!(f["track"], "after.mp3");
                    break;
                }
            }
        }
        assert!(
            seen.windows(2).all(|w| w[0] < w[1]),
            "a listener's seq went backwards or repeated: {seen:?}"
        );
    }
    for n in [from].iter().chain(to) {
        assert_eq!(
            n.log().matches("Redis failed over").count(),
            1,
            "the failover is logged once:\n{}",
            n.log()
        );
    }
}

/// TLS on every link: the node asks the Sentinels over TLS, and reaches
/// the master they name (an address, 127.0.0.1, which the certificate
/// names too) over TLS, trusting `--redis-ca-cert`, before and after the
/// failover; with the master's password, as production runs it.
#[tokio::test]
async fn a_tls_sentinel_setup_keeps_a_station_through_a_failover() {
    let certs = Certs::new("localhost");
    let mut sentinels = Sentinels::start_with(Setup {
        tls: Some(&certs),
        password: Some("tls-pass"),
        ..Setup::default()
    })
    .await;
    let url = sentinels.url_with(":tls-pass@");
    assert!(url.starts_with("rediss+sentinel://"), "{url}");
    let ca = certs.path("ca.pem");
    let a = node(&url, "a", |c| c.ca_cert = Some(ca.clone()));
    let b = node(&url, "b", |c| c.ca_cert = Some(ca.clone()));
    a_station_survives_a_failover(&mut sentinels, &a, &[&a, &b]).await;
}

/// The data nodes' password (with characters a URL must %-encode) goes to
/// the master the Sentinels name; the Sentinels' own password, another,
/// to the Sentinels. One node has the master's in the URL, the other (a
/// `radio serve` process) in `--redis-password-file`; both have the
/// Sentinels' in `--redis-sentinel-password-file`. Neither logs them.
#[tokio::test]
async fn a_password_master_behind_sentinel_keeps_a_station_through_a_failover() {
    let password = "s3cr/et p@ss";
    let mut sentinels = Sentinels::start_with(Setup {
        password: Some(password),
        sentinel_password: Some("watchw0rd"),
        ..Setup::default()
    })
    .await;
    let dir = TempDir::new("sentinel-password");
    dir.write("password", format!("{password}\n"));
    dir.write("sentinels", "watchw0rd\n");
    let (file, sentinel_file) = (dir.path().join("password"), dir.path().join("sentinels"));
    let in_url = sentinels.url_with(":s3cr%2Fet%20p%40ss@");
    let a = node(&in_url, "a", |c| {
        c.sentinel_password_file = Some(sentinel_file.clone());
    });
    let b = Server::spawn_process(&[
        "--redis",
        &sentinels.url(),
        "--redis-password-file",
        file.to_str().expect("a UTF-8 path"),
        "--redis-sentinel-password-file",
        sentinel_file.to_str().expect("a UTF-8 path"),
        "--node-id",
        "b",
        "--lease",
        "2s",
    ]);
    a_station_survives_a_failover(&mut sentinels, &a, &[&a, &b]).await;
    for n in [&a, &b] {
        let log = n.log();
        assert!(
            !log.contains("s3cr") && !log.contains("p%40ss") && !log.contains("watchw0rd"),
            "no password is logged:\n{log}"
        );
    }
}

/// `radio serve` with `args`, expected to stop at start: its exit status
/// and what it printed.
fn serve_fails(args: &[&str]) -> (std::process::ExitStatus, String) {
    let mut child = std::process::Command::new(crate::support::process::radio_bin())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(args)
        .env("RADIO_LOUDNESS_CACHE", "off")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start radio serve");
    let status =
        crate::support::process::exit_within(&mut child, Duration::from_secs(20), "radio serve");
    let mut err = String::new();
    if let Some(mut stderr) = child.stderr.take() {
        std::io::Read::read_to_string(&mut stderr, &mut err).expect("read stderr");
    }
    (status, err)
}

/// A wrong password, or none where one is needed, for the master or for
/// the Sentinels, is an error at start that says which password was
/// refused, by whom, and where it came from; not a node that waits
/// forever for a Redis that will never let it in.
#[tokio::test]
async fn a_wrong_password_behind_sentinel_stops_the_node_at_start() {
    let sentinels = Sentinels::start_with(Setup {
        password: Some("right"),
        sentinel_password: Some("watchw0rd"),
        ..Setup::default()
    })
    .await;
    let dir = TempDir::new("sentinel-password");
    dir.write("sentinels", "watchw0rd\n");
    dir.write("wrong", "wr0ng\n");
    let sentinel_file = dir.path().join("sentinels");
    let sentinel_file = sentinel_file.to_str().expect("a UTF-8 path");
    let wrong_file = dir.path().join("wrong");
    let wrong_file = wrong_file.to_str().expect("a UTF-8 path");
    let with_sentinels = ["--redis-sentinel-password-file", sentinel_file];
    let (wrong, none, right) = (
        sentinels.url_with(":wr0ng@"),
        sentinels.url(),
        sentinels.url_with(":right@"),
    );
    let cases: [(Vec<&str>, &[&str]); 4] = [
        (
            [&["--redis", &wrong][..], &with_sentinels].concat(),
            &["the master", "refused the password in the --redis URL"],
        ),
        (
            [&["--redis", &none][..], &with_sentinels].concat(),
            &["the master", "asked for a password, and none was given"],
        ),
        (
            vec!["--redis", &right],
            &["the Sentinels asked for a password, and none was given"],
        ),
        (
            vec![
                "--redis",
                &right,
                "--redis-sentinel-password-file",
                wrong_file,
            ],
            &["the Sentinels refused the password in --redis-sentinel-password-file"],
        ),
    ];
    for (args, says) in cases {
        let (status, err) = serve_fails(&args);
        assert!(!status.success(), "{args:?}");
        for said in says {
            assert!(err.contains(said), "{args:?}: {said:?} in:\n{err}");
        }
        assert!(
            !err.contains("wr0ng") && !err.contains("right@") && !err.contains("watchw0rd"),
            "no password is printed: {err}"
        );
        assert!(err.contains("--redis-password-file"), "{err}");
    }
}
