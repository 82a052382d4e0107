//! `radio loadtest` against `radio serve`, both processes, with real
//! worker processes and real sockets. Nothing here asserts a speed; the
//! benchmarks in bench/ do the measuring.

use std::process::{Command, Output};

use serde_json::Value;

use crate::support::{Server, TempDir, radio_bin};

fn loadtest(server: &Server, args: &[&str]) -> Output {
    Command::new(radio_bin())
        .arg("loadtest")
        .args(["--url", &server.ws_url()])
        .args(args)
        .output()
        .expect("run radio loadtest")
}

fn text(out: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn field<'a>(report: &'a Value, path: &str) -> &'a Value {
    let v = path.split('.').fold(report, |v, key| &v[key]);
    assert!(!v.is_null(), "the report lacks {path}: {report:#}");
    v
}

#[test]
fn ten_thousand_listeners_over_three_workers_get_every_final_state() {
    let mut server = Server::spawn_process(&["--max-connections-per-ip", "0"]);
    let dir = TempDir::new("loadtest");
    let json = dir.path().join("report.json");
    let pid = server.pid().to_string();
    let out = loadtest(
        &server,
        &[
            "--listeners",
            "10000",
            "--workers",
            "3",
            "--stations",
            "2",
            "--duration",
            "3s",
            "--update-interval",
            "500ms",
            "--server-pid",
            &pid,
            "--min-delivery",
            "100",
            "--json",
            json.to_str().expect("utf-8 temp path"),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let report: Value =
        serde_json::from_slice(&std::fs::read(&json).expect("the JSON report is written"))
            .expect("the report is JSON");

    // Every field the issue promises is there.
    for path in [
        "listeners.attempted",
        "listeners.connected",
        "listeners.failed",
        "fanout_ms.p50",
        "fanout_ms.p90",
        "fanout_ms.p99",
        "fanout_ms.p999",
        "fanout_ms.max",
        "final_state_delivery_pct",
        "seq_regressions",
        "deliveries_per_sec",
        "server.rss_per_connection_bytes",
        "parameters.listeners",
        "parameters.stations",
        "parameters.workers",
        "handshake_ms.p99",
        "last_listener_ms.max",
        "sync_error_ms.p99",
        "generator.cpu_pct_of_machine_run",
    ] {
        field(&report, path);
    }
    assert_eq!(report["parameters"]["workers"], 3);
    assert_eq!(report["parameters"]["listeners"], 10000);
    assert_eq!(report["listeners"]["attempted"], 10000, "{report:#}");
    assert_eq!(report["listeners"]["connected"], 10000, "{report:#}");
    assert_eq!(report["listeners"]["failed"], 0, "{report:#}");
    assert_eq!(report["final_state_delivery_pct"], 100.0, "{report:#}");
    assert_eq!(report["seq_regressions"], 0, "{report:#}");
    // Every listener got the state of its station when it tuned in, and
    // syncs flowed during the run.
    assert_eq!(report["delivery"]["tune_in_syncs"], 10000, "{report:#}");
    assert!(report["delivery"]["updates_sent"].as_u64().unwrap() >= 2);
    assert!(report["delivery"]["syncs_received"].as_u64().unwrap() > 0);
    assert!(report["fanout_ms"]["count"].as_u64().unwrap() > 0);
    assert_eq!(report["thresholds"]["passed"], true);
    // The human summary says the same.
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("10000 connected"), "{stdout}");
    assert!(stdout.contains("final state 100.000%"), "{stdout}");
}

#[test]
fn an_impossible_p99_fails_the_run() {
    let server = Server::spawn_process(&["--max-connections-per-ip", "0"]);
    let out = loadtest(
        &server,
        &[
            "--listeners",
            "1000",
            "--workers",
            "1",
            "--duration",
            "2s",
            "--update-interval",
            "250ms",
            "--max-p99",
            "1ms",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("above --max-p99"), "{stdout}");
}

#[test]
fn bad_flags_are_explained() {
    let server = Server::spawn_process(&[]);
    let out = loadtest(&server, &["--listeners", "10", "--workers", "none"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("--workers must be a positive number or auto"),
        "{}",
        text(&out)
    );
    let out = loadtest(&server, &["--listeners", "10", "--server-pid", "999999999"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--server-pid 999999999"),
        "{}",
        text(&out)
    );
}

/// `--listen-only`: no broadcaster; the listeners tune to a station the
/// server runs and measure its own track changes, one state per track.
#[test]
fn listeners_of_a_server_run_station_measure_its_track_changes() {
    let media = crate::onair::library(&[("1.wav", 500), ("2.wav", 500)]);
    let mut server = Server::spawn_process(&[
        "--max-connections-per-ip",
        "0",
        "--media",
        media.arg(),
        "--station",
        "auto=library",
    ]);
    let dir = TempDir::new("loadtest-onair");
    let json = dir.path().join("report.json");
    let pid = server.pid().to_string();
    let out = loadtest(
        &server,
        &[
            "--listen-only",
            "auto",
            "--listeners",
            "300",
            // A ramp of 1.5 s: the station changes track meanwhile, states
            // the run must not count.
            "--connect-rate",
            "200",
            "--workers",
            "1",
            "--duration",
            "3s",
            "--server-pid",
            &pid,
            "--min-delivery",
            "100",
            "--json",
            json.to_str().expect("utf-8 temp path"),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let report: Value =
        serde_json::from_slice(&std::fs::read(&json).expect("the JSON report is written"))
            .expect("the report is JSON");
    assert_eq!(report["parameters"]["listen_only"], true, "{report:#}");
    assert_eq!(
        report["parameters"]["station_names"],
        serde_json::json!(["auto"])
    );
    assert_eq!(report["listeners"]["connected"], 300, "{report:#}");
    assert_eq!(report["final_state_delivery_pct"], 100.0, "{report:#}");
    assert_eq!(report["seq_regressions"], 0, "{report:#}");
    // One state a track: about six in three seconds, all of them owed to
    // every listener, and received.
    let states = report["delivery"]["updates_sent"].as_u64().unwrap();
    assert!((4..=8).contains(&states), "{report:#}");
    assert_eq!(report["delivery"]["expected"], states * 300, "{report:#}");
    // Exactly those: the states published while the listeners connected,
    // or after the run, are no part of it (nor of its latencies).
    assert_eq!(
        report["delivery"]["syncs_received"],
        states * 300,
        "{report:#}"
    );
    assert_eq!(report["fanout_ms"]["count"], states * 300, "{report:#}");
    // No timeline is known of a station the generator does not play.
    assert!(report["sync_error_ms"]["p99"].is_null(), "{report:#}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("(listening only)"), "{stdout}");
    assert!(stdout.contains("heartbeats published"), "{stdout}");

    // A station that does not play is refused, saying what to do; a
    // broadcaster's flags do not go with --listen-only.
    let out = loadtest(&server, &["--listen-only", "nobody", "--listeners", "10"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("the station is not live"),
        "{}",
        text(&out)
    );
    let out = loadtest(
        &server,
        &[
            "--listen-only",
            "auto",
            "--listeners",
            "10",
            "--stations",
            "2",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("cannot be used with"), "{}", text(&out));
}

/// `--fetch-media`: every listener of a server-run station fetches the
/// tracks it plays from `/media` (the library's URLs), as the web player
/// does; with prefetch, the announced next track ahead of its start, so a
/// track change needs no request; without (`current`), each change does.
#[test]
fn listeners_fetch_their_media_as_the_player_does() {
    let media = crate::onair::library(&[("1.wav", 700), ("2.wav", 700)]);
    let server = Server::spawn_process(&[
        "--max-connections-per-ip",
        "0",
        "--media",
        media.arg(),
        "--station",
        "auto=library",
    ]);
    let dir = TempDir::new("loadtest-media");
    let run = |mode: &str| -> (Value, String) {
        let json = dir.path().join(format!("{mode}.json"));
        let out = loadtest(
            &server,
            &[
                "--listen-only",
                "auto",
                "--listeners",
                "100",
                "--workers",
                "1",
                "--duration",
                "3s",
                &format!("--fetch-media={mode}"),
                "--json",
                json.to_str().expect("utf-8 temp path"),
            ],
        );
        assert!(out.status.success(), "{}", text(&out));
        let report: Value =
            serde_json::from_slice(&std::fs::read(&json).expect("the JSON report is written"))
                .expect("the report is JSON");
        (report, String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let size = std::fs::metadata(media.path().join("1.wav"))
        .expect("a track")
        .len() as f64;
    for mode in ["prefetch", "current"] {
        let (report, stdout) = run(mode);
        let m = field(&report, "media");
        assert_eq!(m["refused_total"], 0, "{mode}: {m:#}");
        assert_eq!(m["unknown_tracks"], 0, "{mode}: {m:#}");
        // Every listener fetched its first track at least, whole.
        assert!(
            m["bytes_per_listener"].as_f64().unwrap() >= size,
            "{mode}: {m:#}"
        );
        assert!(m["track_starts"].as_u64().unwrap() >= 200, "{mode}: {m:#}");
        assert_eq!(m["tune_in_playable_ms"]["count"], 100, "{mode}: {m:#}");
        assert!(
            m["playable_ms"]["count"].as_u64().unwrap() > 0,
            "{mode}: {m:#}"
        );
        let ahead = m["ahead_starts"].as_u64().unwrap();
        let starts = m["track_starts"].as_u64().unwrap();
        let requests = m["requests"].as_u64().unwrap();
        if mode == "prefetch" {
            assert!(ahead > 0, "{m:#}");
        } else {
            assert_eq!(ahead, 0, "{m:#}");
            assert_eq!(requests, starts, "one request per track start: {m:#}");
        }
        assert!(stdout.contains("media: "), "{stdout}");
    }
}
