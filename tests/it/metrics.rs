//! `/metrics` as an operator uses it: read by Prometheus's own tools (the
//! classic text through `promtool check metrics`, OpenMetrics through a real
//! Prometheus server scraping it, both installed by scripts/setup.sh), and
//! each family moving when what it counts happens.

use std::process::{Child, Command, Stdio};

use serde_json::Value;

use crate::support::process::{free_port, kill};
use crate::support::{Client, Redis, Server, TempDir, eventually, radio_bin, request, tone_wav};
use radio::BackendConfig;
use radio::RedisConfig;

/// What Prometheus 2.42 sends when it scrapes.
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,\
    application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

/// A sample's value in an exposition: the line that starts with `name`
/// and a space (a full name with its labels).
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
}

async fn metrics(server: &Server, accept: Option<&str>) -> crate::support::Resp {
    let headers: Vec<(&str, &str)> = accept.map(|a| ("Accept", a)).into_iter().collect();
    request(server.addr, "GET", "/metrics", &headers, None).await
}

/// `--metrics-listen`: `/metrics` on its own address (say, a private
/// interface for the scraper), and no longer on the main one.
#[tokio::test]
async fn metrics_can_be_served_apart() {
    let port = free_port();
    let server = Server::with(|c| c.metrics_listen = Some(format!("127.0.0.1:{port}")));
    let apart: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    // Bound once the server has started.
    eventually("--metrics-listen bound", async || {
        tokio::net::TcpStream::connect(apart)
            .await
            .map_err(|e| e.to_string())
    })
    .await;
    let r = request(apart, "GET", "/metrics", &[], None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("radio_connections "), "{}", r.text());
    let main = metrics(&server, None).await;
    assert_eq!(main.status, 404, "{}", main.text());
    assert!(main.text().contains("--metrics-listen"), "{}", main.text());
    // The rest of the server stays on the main address alone.
    assert_eq!(request(apart, "GET", "/", &[], None).await.status, 404);
    assert_eq!(server.get("/healthz").await.status, 200);
}

/// A server that has seen some traffic: a station with a listener, a page,
/// a 404.
async fn busy_server() -> (Server, Client, Client) {
    let server = Server::start();
    let mut b = Client::connect(&server).await;
    let mut l = Client::connect(&server).await;
    b.start("lofi").await;
    l.tune("lofi").await;
    b.update("lofi", "t", 0, true).await;
    l.expect("sync").await;
    assert_eq!(server.get("/").await.status, 200);
    assert_eq!(server.get("/nope").await.status, 404);
    (server, b, l)
}

#[tokio::test]
async fn classic_text_passes_promtool() {
    let (server, _b, _l) = busy_server().await;
    for accept in [None, Some("*/*"), Some("text/plain;version=0.0.4")] {
        let r = metrics(&server, accept).await;
        assert_eq!(r.status, 200);
        assert_eq!(
            r.header("content-type"),
            Some("text/plain; version=0.0.4; charset=utf-8"),
            "Accept: {accept:?}"
        );
        let mut promtool = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run promtool (scripts/setup.sh installs prometheus)");
        std::io::Write::write_all(&mut promtool.stdin.take().expect("stdin"), &r.body)
            .expect("feed promtool");
        let out = promtool.wait_with_output().expect("promtool's verdict");
        // promtool prints nothing when the text parses and lints clean.
        let said = String::from_utf8_lossy(&[out.stdout, out.stderr].concat()).into_owned();
        assert!(
            out.status.success() && said.trim().is_empty(),
            "promtool: {said}\n{}",
            r.text()
        );
    }
}

#[tokio::test]
async fn openmetrics_when_the_scraper_asks() {
    let (server, _b, _l) = busy_server().await;
    let r = metrics(&server, Some(PROMETHEUS_ACCEPT)).await;
    assert_eq!(
        r.header("content-type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    let text = r.text();
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert!(text.contains("# TYPE radio_build info\n"), "{text}");
    assert!(text.contains("# TYPE radio_connections_accepted counter\n"));
}

/// A Prometheus server scraping `target` every second, killed on drop.
struct Prometheus {
    port: u16,
    child: Child,
    _dir: TempDir,
}

impl Prometheus {
    fn scraping(target: std::net::SocketAddr) -> Prometheus {
        let dir = TempDir::new("prometheus");
        dir.write(
            "prometheus.yml",
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
                 scrape_configs:\n  - job_name: radio\n    static_configs:\n      \
                 - targets: ['{target}']\n"
            ),
        );
        let port = free_port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}/prometheus.yml", dir.arg()))
            .arg(format!("--storage.tsdb.path={}/data", dir.arg()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus (scripts/setup.sh installs it)");
        Prometheus {
            port,
            child,
            _dir: dir,
        }
    }

    async fn api(&self, path: &str) -> Result<Value, String> {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], self.port));
        let connected = tokio::net::TcpStream::connect(addr).await;
        connected.map_err(|e| format!("prometheus not up yet: {e}"))?;
        let r = request(addr, "GET", path, &[], None).await;
        if r.status != 200 {
            return Err(format!("{path}: {} {}", r.status, r.text()));
        }
        let v = r.json();
        Ok(v["data"].clone())
    }

    /// The result of an instant query (no characters that need escaping).
    async fn query(&self, q: &str) -> Result<Vec<Value>, String> {
        let data = self.api(&format!("/api/v1/query?query={q}")).await?;
        let result = data["result"].as_array().cloned().unwrap_or_default();
        if result.is_empty() {
            return Err(format!("{q}: no result yet"));
        }
        Ok(result)
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}

#[tokio::test]
async fn a_real_prometheus_scrapes_openmetrics() {
    let (server, _b, _l) = busy_server().await;
    let prometheus = Prometheus::scraping(server.addr);
    // The target is healthy: its scrape parsed with no error.
    eventually("prometheus scrapes radio without an error", async || {
        let targets = prometheus.api("/api/v1/targets").await?;
        let t = targets["activeTargets"][0].clone();
        if t["health"] == "up" && t["lastError"] == "" {
            Ok(())
        } else {
            Err(t.to_string())
        }
    })
    .await;
    let build = eventually("radio_build_info is stored", async || {
        prometheus.query("radio_build_info").await
    })
    .await;
    assert_eq!(build[0]["metric"]["version"], env!("CARGO_PKG_VERSION"));
    assert!(
        build[0]["metric"]["commit"]
            .as_str()
            .is_some_and(|c| !c.is_empty())
    );
    // OpenMetrics was spoken: only it can tell Prometheus a family is an info.
    let meta = eventually("metadata of radio_build", async || {
        let m = prometheus
            .api("/api/v1/metadata?metric=radio_build")
            .await?;
        m["radio_build"][0]["type"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| m.to_string())
    })
    .await;
    assert_eq!(meta, "info");
    let listeners = eventually("listeners of lofi are stored", async || {
        prometheus.query("radio_station_listeners").await
    })
    .await;
    assert_eq!(listeners[0]["metric"]["station"], "lofi");
    assert_eq!(listeners[0]["value"][1], "1");
}

#[tokio::test]
async fn process_metrics_and_version_are_the_servers() {
    let mut server = Server::spawn_process(&[]);
    let text = server.get("/metrics").await.text();
    let pid = server.pid();
    let value = |name: &str| sample(&text, name).unwrap_or_else(|| panic!("no {name} in\n{text}"));
    let rss = value("process_resident_memory_bytes");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    let vm_rss_kib: f64 = (status.lines())
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    // The same process's RSS, read a moment apart.
    assert!(
        (rss / 1024.0 / vm_rss_kib - 1.0).abs() < 0.5,
        "{rss} vs {vm_rss_kib} KiB"
    );
    let fds = value("process_open_fds");
    let listed = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("fds")
        .count() as f64;
    assert!((fds - listed).abs() <= 4.0, "{fds} vs {listed}");
    assert!(value("process_max_fds") >= fds);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64();
    let started = value("process_start_time_seconds");
    assert!(
        started <= now + 1.0 && started > now - 120.0,
        "{started} vs {now}"
    );
    assert!(value("process_cpu_seconds_total") >= 0.0);

    // radio --version and radio_build_info name the same commit.
    let out = Command::new(radio_bin())
        .arg("--version")
        .output()
        .expect("radio --version");
    let version = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let commit = version
        .strip_suffix(')')
        .and_then(|v| v.rsplit_once("(commit "))
        .map(|(_, c)| c.to_owned())
        .unwrap_or_else(|| panic!("no commit in {version:?}"));
    assert_eq!(
        version,
        format!("radio {} (commit {commit})", env!("CARGO_PKG_VERSION"))
    );
    let info = format!(
        "radio_build_info{{version=\"{}\",commit=\"{commit}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    assert!(text.contains(&info), "{info} not in\n{text}");
    if let Ok(git) = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
    {
        if git.status.success() {
            assert_eq!(commit, String::from_utf8_lossy(&git.stdout).trim());
        }
    }
}

#[tokio::test]
async fn http_requests_and_bytes_by_route_and_status() {
    let dir = TempDir::new("metrics-media");
    let wav = tone_wav(1, &[440.0], None, None);
    dir.write("a.wav", &wav);
    let server = Server::with(|c| c.media.dir = Some(dir.path().to_owned()));
    let full = server.get("/media/a.wav").await;
    assert_eq!((full.status, full.body.len()), (200, wav.len()));
    let range = request(
        server.addr,
        "GET",
        "/media/a.wav",
        &[("Range", "bytes=0-99")],
        None,
    )
    .await;
    assert_eq!((range.status, range.body.len()), (206, 100));
    let head = request(server.addr, "HEAD", "/media/a.wav", &[], None).await;
    assert_eq!(head.status, 200);
    assert_eq!(server.get("/media/missing.wav").await.status, 404);
    assert_eq!(server.get("/healthz").await.status, 200);
    let text = server.get("/metrics").await.text();
    let value = |name: &str| sample(&text, name).unwrap_or_else(|| panic!("no {name} in\n{text}"));
    let media = |what: &str, class: &str| {
        value(&format!(
            "radio_http_{what}_total{{route=\"media\",status=\"{class}\"}}"
        ))
    };
    assert_eq!(media("requests", "2xx"), 3.0);
    assert_eq!(media("requests", "4xx"), 1.0);
    // The whole file, the range; nothing for HEAD.
    assert_eq!(media("response_bytes", "2xx"), (wav.len() + 100) as f64);
    assert_eq!(
        value("radio_http_requests_total{route=\"health\",status=\"2xx\"}"),
        1.0
    );
    // This scrape is answered after it is counted, so it is not in yet.
    assert_eq!(
        value("radio_http_requests_total{route=\"metrics\",status=\"2xx\"}"),
        0.0
    );
    assert_eq!(value("radio_library_tracks"), 1.0);
    assert_eq!(value("radio_library_bytes"), wav.len() as f64);
}

#[tokio::test]
async fn each_disconnect_has_its_reason() {
    let server = Server::with(|c| c.conn.max_message_bytes = 256);
    let mut big = Client::connect(&server).await;
    big.send_text(&"x".repeat(1024)).await;
    big.expect_close(1009).await;
    let mut polite = Client::connect(&server).await;
    polite.tune("s").await;
    drop(polite);
    let upgrade =
        |class: &str| format!("radio_http_requests_total{{route=\"ws\",status=\"{class}\"}}");
    server
        .wait_metric("radio_disconnects_total{reason=\"message_too_big\"}", 1.0)
        .await;
    server
        .wait_metric("radio_disconnects_total{reason=\"closed\"}", 1.0)
        .await;
    server.wait_metric(&upgrade("1xx"), 2.0).await;
}

#[tokio::test]
async fn listeners_per_station_sessions_and_fanout_time() {
    let server = Server::start();
    let mut b = Client::connect(&server).await;
    b.start("big").await;
    let mut listeners = Vec::new();
    for station in ["big", "big", "small"] {
        let mut l = Client::connect(&server).await;
        l.tune(station).await;
        listeners.push(l);
    }
    server
        .wait_metric("radio_station_listeners{station=\"big\"}", 2.0)
        .await;
    server
        .wait_metric("radio_station_listeners{station=\"small\"}", 1.0)
        .await;
    // A state written to big's two listeners by the fan-out.
    b.update("big", "t", 0, true).await;
    for l in &mut listeners[..2] {
        l.expect("sync").await;
    }
    eventually("a fan-out pass is timed", async || {
        let n = server.metric("radio_fanout_seconds_count").await;
        if n >= 1.0 { Ok(()) } else { Err(n) }
    })
    .await;

    let put = request(
        server.addr,
        "PUT",
        "/api/session",
        &[("Content-Type", "application/json")],
        Some(br#"{"track":"t","position_ms":1000}"#),
    )
    .await;
    assert!(put.status < 300, "{} {}", put.status, put.text());
    server.wait_metric("radio_sessions", 1.0).await;
    drop(listeners);
    eventually("stations without listeners leave the family", async || {
        let text = server.get("/metrics").await.text();
        match text.contains("radio_station_listeners{") {
            false => Ok(()),
            true => Err(text),
        }
    })
    .await;
}

#[tokio::test]
async fn the_redis_link_and_its_reconnects() {
    let mut redis = Redis::start().await;
    let node = Server::with(|c| {
        c.backend = BackendConfig::Redis(RedisConfig {
            redis_url: redis.url(),
            node_id: "m".to_owned(),
            lease: std::time::Duration::from_secs(5),
            grace: std::time::Duration::from_secs(10),
            ca_cert: None,
            password_file: None,
            sentinel_password_file: None,
            max_stations: 10_000,
        })
    });
    node.wait_metric("radio_redis_up", 1.0).await;
    assert_eq!(node.metric("radio_redis_reconnects_total").await, 0.0);
    redis.kill();
    node.wait_metric("radio_redis_up", 0.0).await;
    redis.spawn().await;
    node.wait_metric("radio_redis_up", 1.0).await;
    node.wait_metric("radio_redis_reconnects_total", 1.0).await;
    // A single node has no Redis series at all.
    let single = Server::start();
    assert!(!single.get("/metrics").await.text().contains("radio_redis"));
}
