//! A herd of media downloads against a `radio serve` process whose open
//! files are few (`ulimit -n`): one descriptor per track however many
//! download it, 503 with `Retry-After` (never 500) when the process is out
//! of descriptors, and the accept loop's failures told once, counted.

use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::support::{Resp, Server, TempDir, tone_wav};

/// The server's open-files limit in these tests.
const FILES: u32 = 64;

/// A library of a long track (6 MB: more than loopback's socket buffers
/// hold, so a download its client does not read stays in progress) and
/// a short one.
fn library() -> TempDir {
    let dir = TempDir::new("herd");
    dir.write("long.wav", tone_wav(150, &[440.0], None, None));
    dir.write("short.wav", tone_wav(1, &[330.0], None, None));
    dir
}

fn limited(dir: &TempDir) -> Server {
    Server::spawn_process_limited(
        FILES,
        &[
            "--media",
            dir.arg(),
            // Stalled downloads stay open for the whole test.
            "--write-timeout",
            "120s",
        ],
    )
}

/// Sends `GET path` and reads the answer's head (not the body) within
/// `wait`: the connection (its download in progress) and the head, or
/// `None` when no answer came.
async fn head_of(server: &Server, path: &str, wait: Duration) -> Option<(TcpStream, Resp)> {
    let mut s = TcpStream::connect(server.addr).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n", server.addr);
    s.write_all(req.as_bytes()).await.expect("send");
    let mut buf = Vec::new();
    let read = async {
        let mut chunk = [0u8; 4096];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        Some(())
    };
    tokio::time::timeout(wait, read).await.ok()??;
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let mut resp = Resp::parse(&buf[..end]);
    // A short answer's body came with its head.
    resp.body = buf[end..].to_vec();
    Some((s, resp))
}

/// Open descriptors of the server process.
fn open_fds(server: &mut Server) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", server.pid()))
        .expect("read /proc/PID/fd")
        .count()
}

/// Each download held its own descriptor of the file besides its socket,
/// so a herd of downloads of one track needed twice the descriptors and
/// ran the process out of them (answered 500). Now every download of a
/// track shares one: 40 downloads in progress fit in 64 files.
#[tokio::test]
async fn downloads_of_one_track_share_one_descriptor() {
    let dir = library();
    let mut server = limited(&dir);
    let before = open_fds(&mut server);
    let mut open = Vec::new();
    for i in 0..40 {
        let answer = head_of(&server, "/media/long.wav", Duration::from_secs(5)).await;
        let Some((s, head)) = answer else {
            panic!(
                "download {i} got no answer ({} descriptors open)\n{}",
                open_fds(&mut server),
                server.log()
            );
        };
        assert_eq!(head.status, 200, "download {i}: {}", head.text());
        open.push(s);
    }
    // A socket each and the one file (a file each would be 80 more); a
    // few spare for what else the server may hold a moment (the loudness
    // thread reading a track, a socket duplicated for the blocking pool).
    assert!(
        open_fds(&mut server) <= before + 41 + 5,
        "{} descriptors open, {before} before",
        open_fds(&mut server)
    );
    drop(open);
}

/// A media request that found the process out of descriptors was answered
/// 500 as if the file were unreadable, and each failed accept was an ERROR
/// line (a herd made thousands). Now the request is answered 503 with
/// `Retry-After: 1` and a message, the accept failures are one aggregated
/// warning, and both are counted in `radio_out_of_files_total`.
#[tokio::test]
async fn out_of_descriptors_is_503_with_retry_after_and_counted() {
    let dir = library();
    let server = limited(&dir);
    // Downloads in progress until the process has no descriptor left: the
    // last connection waits in the listen queue, unanswered.
    let mut holders = Vec::new();
    loop {
        match head_of(&server, "/media/long.wav", Duration::from_millis(1500)).await {
            Some((s, head)) => {
                assert_eq!(head.status, 200, "{}", head.text());
                holders.push(s);
            }
            None => break,
        }
        assert!(
            holders.len() < FILES as usize,
            "never ran out of descriptors"
        );
    }
    // The short track (never opened) waits in the queue too; as downloads
    // end, one descriptor at a time, it is accepted with none left to open
    // its file.
    let waiting = tokio::spawn({
        let addr = server.addr;
        async move {
            let mut s = TcpStream::connect(addr).await.expect("connect");
            let req = format!(
                "GET /media/short.wav HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
            );
            s.write_all(req.as_bytes()).await.expect("send");
            let mut buf = Vec::new();
            let _ = s.read_to_end(&mut buf).await;
            Resp::parse(&buf)
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut answered = None;
    while let Some(holder) = holders.pop() {
        drop(holder);
        tokio::time::sleep(Duration::from_millis(300)).await;
        if waiting.is_finished() {
            answered = Some(waiting.await.expect("the waiting request"));
            break;
        }
    }
    let refused = answered.expect("the waiting request is answered");
    assert_eq!(refused.status, 503, "{}", refused.text());
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert!(refused.text().contains("retry"), "{}", refused.text());
    drop(holders);
    // Retried once descriptors are free, it is served.
    crate::support::eventually("the retry is served", async || {
        let r = server.get("/media/short.wav").await;
        if r.status == 200 {
            Ok(())
        } else {
            Err(r.status)
        }
    })
    .await;
    let metrics = server.get("/metrics").await.text();
    let count = |at: &str| -> f64 {
        let name = format!("radio_out_of_files_total{{at=\"{at}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name.as_str()))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in\n{metrics}"))
    };
    assert!(count("media") >= 1.0, "{metrics}");
    let accept_failures = count("accept");
    let log = server.log();
    let lines = log.matches("left waiting in the listen queue").count();
    // Many failures (the queue was retried for more than a second), one line.
    assert!(accept_failures >= 5.0, "{accept_failures} accept failures");
    assert_eq!(lines, 1, "{log}");
    assert!(!log.contains("retrying in"), "{log}");
    assert!(log.contains("answered 503"), "{log}");
}

/// Through hyper's path (here: after another request on the connection,
/// as a page and its media share one) a range is read by offset from the
/// shared descriptor, across several reads, and arrives whole and in
/// order, while a sendfile download of the same file is in progress.
#[tokio::test]
async fn hyper_reads_a_range_by_offset_from_the_shared_file() {
    let dir = library();
    let server = limited(&dir);
    let want = tone_wav(150, &[440.0], None, None);
    let (_stalled, head) = head_of(&server, "/media/long.wav", Duration::from_secs(5))
        .await
        .expect("a download in progress");
    assert_eq!(head.status, 200);
    let mut s = TcpStream::connect(server.addr).await.expect("connect");
    let host = server.addr;
    let (from, to) = (40_000usize, 1_040_000usize);
    let requests = format!(
        "GET /api/library HTTP/1.1\r\nHost: {host}\r\n\r\n\
         GET /media/long.wav HTTP/1.1\r\nHost: {host}\r\nRange: bytes={from}-{}\r\n\
         Connection: close\r\n\r\n",
        to - 1
    );
    s.write_all(requests.as_bytes()).await.expect("send");
    let mut all = Vec::new();
    s.read_to_end(&mut all).await.expect("read");
    let marker = b"HTTP/1.1 206";
    let at = all
        .windows(marker.len())
        .position(|w| w == marker)
        .expect("a 206 answer");
    let r = Resp::parse(&all[at..]);
    assert_eq!(r.status, 206);
    assert!(r.body == want[from..to], "{} bytes", r.body.len());
}
