//! The media library and private sessions over real sockets, against a
//! server with a media directory of files these tests write; through
//! `radio serve` where the test sends a signal or reads the log.

use std::time::Duration;

use radio::ServerConfig;
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::support::http::{read_until_closed, send};
use crate::support::{
    Resp, Server, TempDir, eventually, ffmpeg_tone, radio_bin, request, tone_wav,
};

/// A library: a tagged WAV, an untagged file in a subdirectory whose name
/// needs percent-encoding, a FLAC with Vorbis comments (by a real ffmpeg)
/// and a file that is not media.
struct Library {
    dir: TempDir,
    song: Vec<u8>,
}

fn library() -> Library {
    let dir = TempDir::new("media");
    let song = tone_wav(
        2,
        &[440.0, 660.0],
        Some("Morning Song"),
        Some("The Testers"),
    );
    dir.write("song.wav", &song);
    dir.write(
        "sub dir/My_untagged_tune.wav",
        tone_wav(1, &[330.0], None, None),
    );
    ffmpeg_tone(
        &dir,
        "sub dir/vorbis.flac",
        3,
        &[
            "-c:a",
            "flac",
            "-metadata",
            "TITLE=Flac Title",
            "-metadata",
            "ARTIST=Flac Artist",
        ],
    );
    dir.write("notes.txt", b"not media");
    Library { dir, song }
}

fn serve(dir: &TempDir, edit: impl FnOnce(&mut ServerConfig)) -> Server {
    Server::with(|c| {
        c.media.dir = Some(dir.path().to_owned());
        edit(c);
    })
}

async fn get(server: &Server, path: &str, headers: &[(&str, &str)]) -> Resp {
    request(server.addr, "GET", path, headers, None).await
}

/// Starts downloading track `id` and reads the response's first 1 KiB;
/// returns the connection and those bytes.
async fn start_download(server: &Server, id: &str) -> (TcpStream, Vec<u8>) {
    let path = format!("/media/{id}");
    let mut s = send(server.addr, "GET", &path, &[("Connection", "close")], None).await;
    let mut first = vec![0u8; 1024];
    s.read_exact(&mut first).await.expect("read the beginning");
    (s, first)
}

fn track<'a>(list: &'a Value, id: &str) -> &'a Value {
    list.as_array()
        .expect("library is a JSON list")
        .iter()
        .find(|t| t["id"] == id)
        .unwrap_or_else(|| panic!("no track {id} in {list}"))
}

#[tokio::test]
async fn library_lists_tracks_with_tags_and_names() {
    let lib = library();
    let server = serve(&lib.dir, |_| {});
    let r = get(&server, "/api/library", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let list = r.json();
    assert_eq!(list.as_array().unwrap().len(), 3, "{list}");

    let song = track(&list, "song.wav");
    assert_eq!(song["title"], "Morning Song", "title from the INFO tag");
    assert_eq!(song["artist"], "The Testers", "artist from the INFO tag");
    assert_eq!(song["duration_ms"], 2000, "duration from the stream");
    assert_eq!(song["size"], lib.song.len());
    assert_eq!(song["mime"], "audio/wav");

    let flac = track(&list, "sub dir/vorbis.flac");
    assert_eq!(flac["title"], "Flac Title", "title from the Vorbis comment");
    assert_eq!(flac["artist"], "Flac Artist");
    assert_eq!(flac["duration_ms"], 3000, "duration from STREAMINFO");
    assert_eq!(flac["mime"], "audio/flac");

    let untagged = track(&list, "sub dir/My_untagged_tune.wav");
    assert_eq!(
        untagged["title"], "My untagged tune",
        "title from the file name"
    );
    assert!(untagged.get("artist").is_none(), "{untagged}");
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .all(|t| t["id"] != "notes.txt")
    );
}

#[tokio::test]
async fn whole_file_head_and_every_range_form() {
    let lib = library();
    let server = serve(&lib.dir, |_| {});
    let size = lib.song.len();

    let full = get(&server, "/media/song.wav", &[]).await;
    assert_eq!(full.status, 200);
    assert_eq!(full.body, lib.song);
    assert_eq!(full.header("content-type"), Some("audio/wav"));
    assert_eq!(full.header("accept-ranges"), Some("bytes"));
    assert_eq!(
        full.header("content-length"),
        Some(size.to_string().as_str())
    );
    assert!(full.header("etag").is_some_and(|e| e.starts_with('"')));
    assert!(full.header("last-modified").is_some());

    // The id is the relative path; percent-encoded separators work too.
    let encoded = get(&server, "/media/sub%20dir%2FMy_untagged_tune.wav", &[]).await;
    assert_eq!(encoded.status, 200);
    let plain = get(&server, "/media/sub%20dir/My_untagged_tune.wav", &[]).await;
    assert_eq!(plain.body, encoded.body);

    let head = request(server.addr, "HEAD", "/media/song.wav", &[], None).await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_eq!(
        head.header("content-length"),
        Some(size.to_string().as_str())
    );
    assert_eq!(head.header("etag"), full.header("etag"));

    let cases: [(&str, usize, usize); 5] = [
        ("bytes=0-9", 0, 9),
        ("bytes=100-", 100, size - 1),
        ("bytes=-10", size - 10, size - 1),
        ("bytes=50-99999999", 50, size - 1),
        ("bytes=-99999999", 0, size - 1),
    ];
    for (range, start, end) in cases {
        let r = get(&server, "/media/song.wav", &[("Range", range)]).await;
        assert_eq!(r.status, 206, "{range}");
        assert_eq!(
            r.header("content-range"),
            Some(format!("bytes {start}-{end}/{size}").as_str()),
            "{range}"
        );
        assert_eq!(r.body, &lib.song[start..=end], "{range}");
        assert_eq!(
            r.header("content-length"),
            Some((end - start + 1).to_string().as_str())
        );
    }

    let head = request(
        server.addr,
        "HEAD",
        "/media/song.wav",
        &[("Range", "bytes=0-9")],
        None,
    )
    .await;
    assert_eq!(head.status, 206);
    assert_eq!(head.header("content-length"), Some("10"));
    assert!(head.body.is_empty());

    for unsatisfiable in [
        format!("bytes={size}-"),
        format!("bytes={}-{}", size + 5, size + 9),
        "bytes=-0".into(),
    ] {
        let r = get(&server, "/media/song.wav", &[("Range", &unsatisfiable)]).await;
        assert_eq!(r.status, 416, "{unsatisfiable}");
        assert_eq!(
            r.header("content-range"),
            Some(format!("bytes */{size}").as_str())
        );
    }

    // Several ranges, another unit, or a malformed one: the whole file.
    for ignored in ["bytes=0-1,5-6", "items=0-5", "bytes=9-2", "bytes=x-"] {
        let r = get(&server, "/media/song.wav", &[("Range", ignored)]).await;
        assert_eq!(r.status, 200, "{ignored}");
        assert_eq!(r.body.len(), size, "{ignored}");
    }

    let post = request(server.addr, "POST", "/media/song.wav", &[], Some(b"x")).await;
    assert_eq!(post.status, 405);
}

#[tokio::test]
async fn conditional_requests() {
    let lib = library();
    let server = serve(&lib.dir, |_| {});
    let first = get(&server, "/media/song.wav", &[]).await;
    let etag = first.header("etag").expect("an ETag").to_owned();
    let modified = first
        .header("last-modified")
        .expect("a Last-Modified")
        .to_owned();

    let r = get(&server, "/media/song.wav", &[("If-None-Match", &etag)]).await;
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
    assert_eq!(r.header("etag"), Some(etag.as_str()));
    let weak = format!("\"other\", W/{etag}");
    let r = get(&server, "/media/song.wav", &[("If-None-Match", &weak)]).await;
    assert_eq!(r.status, 304, "If-None-Match compares weakly");
    let r = get(
        &server,
        "/media/song.wav",
        &[("If-None-Match", "\"stale\"")],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, lib.song);
    let r = get(
        &server,
        "/media/song.wav",
        &[("If-Modified-Since", &modified)],
    )
    .await;
    assert_eq!(r.status, 304);

    // If-Range: the range only while the validator still matches.
    let r = get(
        &server,
        "/media/song.wav",
        &[("Range", "bytes=0-3"), ("If-Range", &etag)],
    )
    .await;
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &lib.song[..4]);
    let r = get(
        &server,
        "/media/song.wav",
        &[("Range", "bytes=0-3"), ("If-Range", &modified)],
    )
    .await;
    assert_eq!(r.status, 206);
    let r = get(
        &server,
        "/media/song.wav",
        &[("Range", "bytes=0-3"), ("If-Range", "\"stale\"")],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, lib.song);

    // Changing the file changes the validators (its time set apart from
    // the first one's, rather than waiting for the clock to move).
    let changed = tone_wav(1, &[220.0], Some("Changed"), None);
    lib.dir.write("song.wav", &changed);
    let file = std::fs::File::options()
        .write(true)
        .open(lib.dir.path().join("song.wav"))
        .expect("open the changed file");
    file.set_modified(std::time::SystemTime::now() - Duration::from_secs(3600))
        .expect("set its modification time");
    // Seen within a second: an open file is trusted that long unchecked.
    let r = eventually("the changed file is served", async || {
        let r = get(&server, "/media/song.wav", &[("If-None-Match", &etag)]).await;
        if r.status == 200 {
            Ok(r)
        } else {
            Err(r.status)
        }
    })
    .await;
    assert_eq!(r.body, changed);
    assert_ne!(r.header("etag"), Some(etag.as_str()));
}

#[tokio::test]
async fn empty_file_per_rfc_9110() {
    let lib = library();
    // An empty file does not play, so the scan leaves it out; one emptied
    // after the scan (the same file) is still served, as it now is.
    lib.dir
        .write("empty.wav", tone_wav(1, &[440.0], None, None));
    let server = serve(&lib.dir, |_| {});
    // Answered once the scan is over.
    assert_eq!(get(&server, "/media/empty.wav", &[]).await.status, 200);
    std::fs::File::create(lib.dir.path().join("empty.wav")).expect("empty the file");
    // Seen within a second: an open file is trusted that long unchecked.
    let r = eventually("the emptied file is served", async || {
        let r = get(&server, "/media/empty.wav", &[]).await;
        if r.header("content-length") == Some("0") {
            Ok(r)
        } else {
            Err(r.status)
        }
    })
    .await;
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    // No int-range is satisfiable on zero bytes.
    let r = get(&server, "/media/empty.wav", &[("Range", "bytes=0-")]).await;
    assert_eq!(r.status, 416);
    assert_eq!(r.header("content-range"), Some("bytes */0"));
    // A suffix range is, but no 206 can describe zero bytes: the empty 200.
    let r = get(&server, "/media/empty.wav", &[("Range", "bytes=-5")]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("0"));
}

#[tokio::test]
async fn no_request_reaches_a_file_outside_the_index() {
    let outer = TempDir::new("outer");
    outer.write("secret.wav", tone_wav(1, &[100.0], None, None));
    outer.write("lib/ok.wav", tone_wav(1, &[200.0], None, None));
    outer.write("lib/notes.txt", b"text");
    let server = Server::with(|c| c.media.dir = Some(outer.path().join("lib")));
    let secret = outer.path().join("secret.wav");
    let secret = secret.to_str().expect("utf-8 temp path");

    assert_eq!(get(&server, "/media/ok.wav", &[]).await.status, 200);
    let attempts = [
        "/media/../secret.wav".to_owned(),
        "/media/..%2Fsecret.wav".into(),
        "/media/%2e%2e%2fsecret.wav".into(),
        "/media/%2E%2E/secret.wav".into(),
        "/media/ok.wav/../../secret.wav".into(),
        "/media/..%5Csecret.wav".into(),
        "/media/%252e%252e%252fsecret.wav".into(),
        format!("/media/{secret}"),
        format!("/media/{}", secret.replace('/', "%2F")),
        "/media//etc/passwd".into(),
        "/media/%2Fetc%2Fpasswd".into(),
        "/media/notes.txt".into(),
        "/media/".into(),
        "/media/%zz".into(),
        "/media/%00".into(),
    ];
    for path in &attempts {
        let r = get(&server, path, &[]).await;
        assert_eq!(r.status, 404, "{path}: {}", r.text());
        assert!(
            r.text().contains("no such track") || r.text().contains("no such"),
            "{path}: {}",
            r.text()
        );
    }
}

/// Through `radio serve`: the loop is checked in its log.
#[cfg(unix)]
#[tokio::test]
async fn symlinks_are_followed_and_loops_detected() {
    let outer = TempDir::new("links");
    let lib = outer.path().join("lib");
    let elsewhere = outer.path().join("elsewhere");
    outer.write("lib/a/one.wav", tone_wav(1, &[300.0], None, None));
    outer.write("elsewhere/two.wav", tone_wav(1, &[400.0], None, None));
    let link = |to: &std::path::Path, at: &str| {
        std::os::unix::fs::symlink(to, lib.join(at)).expect("make a symlink");
    };
    // Outside the media root: not followed.
    link(&elsewhere, "linked");
    // Inside it: followed.
    link(&lib.join("a/one.wav"), "alias.wav");
    // A loop: lib/a/up -> lib.
    link(&lib, "a/up");
    link(&lib.join("missing.wav"), "dangling.wav");

    let server = Server::spawn_process(&["--media", lib.to_str().expect("utf-8 temp path")]);
    let list = get(&server, "/api/library", &[]).await.json();
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["a/one.wav", "alias.wav"]);
    assert_eq!(get(&server, "/media/alias.wav", &[]).await.status, 200);
    assert_eq!(get(&server, "/media/linked/two.wav", &[]).await.status, 404);
    assert!(
        server.log().contains("outside the media root"),
        "{}",
        server.log()
    );
    assert!(
        server.log().contains("symlink loop"),
        "the loop is logged:\n{}",
        server.log()
    );
}

/// The SIGHUP half through `radio serve`; the interval half in this process.
#[cfg(unix)]
#[tokio::test]
async fn rescan_on_sighup_and_interval_never_breaks_a_stream() {
    let lib = library();
    // Big enough that the response cannot sit whole in socket buffers.
    let big = tone_wav(400, &[440.0], Some("Long"), None);
    lib.dir.write("long.wav", &big);
    let mut server = Server::spawn_process(&["--media", lib.dir.arg()]);

    // Start a stream and read only its beginning.
    let (mut s, first) = start_download(&server, "long.wav").await;

    // The file goes away and a new one comes; SIGHUP rescans.
    std::fs::remove_file(lib.dir.path().join("long.wav")).expect("remove long.wav");
    lib.dir.write("new.wav", tone_wav(1, &[500.0], None, None));
    server.signal("HUP");
    eventually("SIGHUP rescans", async || {
        let list = get(&server, "/api/library", &[]).await.json();
        let has = |id: &str| {
            list.as_array()
                .is_some_and(|l| l.iter().any(|t| t["id"] == id))
        };
        if has("new.wav") && !has("long.wav") {
            Ok(())
        } else {
            Err(list)
        }
    })
    .await;
    assert_eq!(get(&server, "/media/long.wav", &[]).await.status, 404);

    // The stream in progress still delivers every byte.
    let mut whole = first;
    whole.extend(read_until_closed(&mut s, "the stream completes").await);
    let resp = Resp::parse(&whole);
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body.len(), big.len());
    assert!(resp.body == big, "the streamed bytes are the file's");

    // --rescan-interval picks up changes without a signal.
    let lib2 = library();
    let server2 = serve(&lib2.dir, |c| {
        c.media.rescan_interval = Some(Duration::from_millis(200))
    });
    lib2.dir
        .write("later.wav", tone_wav(1, &[600.0], None, None));
    eventually("an interval rescan finds later.wav", async || {
        let r = get(&server2, "/media/later.wav", &[]).await;
        if r.status == 200 {
            Ok(())
        } else {
            Err(r.status)
        }
    })
    .await;
}

#[test]
fn a_missing_media_directory_is_a_clear_error() {
    let out = std::process::Command::new(radio_bin())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--media",
            "/nonexistent/music",
        ])
        .output()
        .expect("run radio serve");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/nonexistent/music") && err.contains("--media"),
        "{err}"
    );
}

// ---- sessions ----

fn cookie_of(r: &Resp) -> String {
    let set = r.header("set-cookie").expect("a Set-Cookie");
    for attr in ["HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(set.contains(attr), "{set} lacks {attr}");
    }
    set.split(';').next().unwrap().to_owned()
}

async fn put_session(server: &Server, cookie: Option<&str>, body: Value) -> Resp {
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(c) = cookie {
        headers.push(("Cookie", c));
    }
    request(
        server.addr,
        "PUT",
        "/api/session",
        &headers,
        Some(body.to_string().as_bytes()),
    )
    .await
}

async fn get_session(server: &Server, cookie: Option<&str>) -> Value {
    let headers: Vec<(&str, &str)> = cookie.map(|c| ("Cookie", c)).into_iter().collect();
    let r = get(server, "/api/session", &headers).await;
    assert_eq!(r.status, 200);
    r.json()
}

#[tokio::test]
async fn session_resumes_and_forged_cookies_are_not_trusted() {
    let server = Server::start();
    let empty = json!({"track": null, "position_ms": 0});
    let r = get(&server, "/api/session", &[]).await;
    assert_eq!(r.json(), empty);
    assert!(
        r.header("set-cookie").is_none(),
        "reading allocates nothing"
    );

    let saved = json!({"track": "demo/2-c-major-steps.wav", "position_ms": 12_345});
    let r = put_session(&server, None, saved.clone()).await;
    assert_eq!(r.status, 200);
    let cookie = cookie_of(&r);
    assert_eq!(get_session(&server, Some(&cookie)).await, saved);

    let moved = json!({"track": "demo/2-c-major-steps.wav", "position_ms": 20_000});
    let r = put_session(&server, Some(&cookie), moved.clone()).await;
    assert_eq!(cookie_of(&r), cookie, "the same session is updated");
    assert_eq!(get_session(&server, Some(&cookie)).await, moved);

    // A cookie the server never issued is not a session.
    let forged = format!("radio_session={}", "ab".repeat(16));
    assert_eq!(get_session(&server, Some(&forged)).await, empty);
    let r = put_session(&server, Some(&forged), saved.clone()).await;
    let issued = cookie_of(&r);
    assert_ne!(issued, forged);
    assert_eq!(get_session(&server, Some(&forged)).await, empty);
    assert_eq!(get_session(&server, Some(&issued)).await, saved);

    // Bad input gets a clear 4xx.
    let r = request(server.addr, "PUT", "/api/session", &[], Some(b"{not json")).await;
    assert_eq!(r.status, 400);
    assert!(r.text().contains("position_ms"), "{}", r.text());
    let r = put_session(&server, None, json!({"track": "x", "position_ms": -5})).await;
    assert_eq!(r.status, 400);
    let big = vec![b' '; 10_000];
    let r = request(server.addr, "PUT", "/api/session", &[], Some(&big)).await;
    assert_eq!(r.status, 413);
    let r = request(server.addr, "DELETE", "/api/session", &[], None).await;
    assert_eq!(r.status, 405);
}

#[tokio::test]
async fn idle_sessions_are_swept() {
    let server = Server::with(|c| {
        c.sessions.ttl = Duration::from_millis(300);
        c.sessions.sweep = Duration::from_millis(100);
    });
    let saved = json!({"track": "t", "position_ms": 1});
    let idle = cookie_of(&put_session(&server, None, saved.clone()).await);
    let busy = cookie_of(&put_session(&server, None, saved.clone()).await);
    // Keep one in use while the other idles well past the TTL (reading a
    // session is a use, so the idle one is not looked at until the end,
    // and the time passing is the point: there is no condition to wait for).
    let until = tokio::time::Instant::now() + Duration::from_secs(2);
    while tokio::time::Instant::now() < until {
        assert_eq!(
            get_session(&server, Some(&busy)).await,
            saved,
            "a session in use stays"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        get_session(&server, Some(&idle)).await["track"].is_null(),
        "the idle session was swept"
    );
    assert_eq!(get_session(&server, Some(&busy)).await, saved);
}

#[tokio::test]
async fn session_count_is_capped_evicting_the_least_recently_used() {
    // One address creates them all: no per-address rate here.
    let server = Server::with(|c| {
        c.sessions.max = 3;
        c.sessions.rate_per_minute = 0;
    });
    // A new session holding track `t{i}`; its cookie.
    let new_session = async |i: u32| {
        let saved = json!({"track": format!("t{i}"), "position_ms": i});
        cookie_of(&put_session(&server, None, saved).await)
    };
    let mut cookies = Vec::new();
    for i in 0..3 {
        cookies.push(new_session(i).await);
    }
    // Use the first, so the second is now the least recently used.
    assert_eq!(get_session(&server, Some(&cookies[0])).await["track"], "t0");
    // A flood of new sessions never grows past the cap.
    for i in 3..20 {
        cookies.push(new_session(i).await);
        if i == 3 {
            assert!(
                get_session(&server, Some(&cookies[1])).await["track"].is_null(),
                "LRU evicted"
            );
            assert_eq!(get_session(&server, Some(&cookies[0])).await["track"], "t0");
        }
    }
    let alive = {
        let mut n = 0;
        for c in &cookies {
            if !get_session(&server, Some(c)).await["track"].is_null() {
                n += 1;
            }
        }
        n
    };
    assert_eq!(alive, 3);
}

/// Through `radio serve`: SIGTERM and the exit status.
#[cfg(unix)]
#[tokio::test]
async fn a_stalled_download_does_not_hold_up_shutdown() {
    let lib = library();
    lib.dir
        .write("long.wav", tone_wav(300, &[440.0], None, None));
    let mut server = Server::spawn_process(&["--media", lib.dir.arg(), "--shutdown-timeout", "1s"]);
    // A client that reads the first bytes of a long file and then stops.
    let (s, _) = start_download(&server, "long.wav").await;
    server.signal("TERM");
    // It exits although a download is stalled, with status 0.
    let status = server.exit_within(Duration::from_secs(20));
    assert!(status.success(), "{status}");
    drop(s);
}

#[tokio::test]
async fn a_stalled_download_is_closed_after_the_write_timeout() {
    let lib = library();
    let long = tone_wav(300, &[440.0], None, None);
    lib.dir.write("long.wav", &long);
    let server = serve(&lib.dir, |c| c.conn.write_timeout = Duration::from_secs(1));
    let (mut s, first) = start_download(&server, "long.wav").await;
    // Stop reading for longer than the write timeout: the socket buffers
    // fill, the server's write waits, and the server gives up. (The stall
    // is the point; nothing the client can see says when the server gave
    // up, short of reading, which would end the stall.)
    tokio::time::sleep(Duration::from_secs(4)).await;
    let got = first.len() + read_until_closed(&mut s, "the connection ends").await.len();
    assert!(
        got < long.len(),
        "closed before the whole file was sent ({got} of {} bytes)",
        long.len()
    );
    // The server itself is fine.
    assert_eq!(get(&server, "/api/library", &[]).await.status, 200);
}

/// Splits pipelined responses read off one connection; `head[i]` says the
/// i-th answered a HEAD (a body's length, but no body).
fn split_responses(mut buf: &[u8], head: &[bool]) -> Vec<Resp> {
    let mut out = Vec::new();
    for &is_head in head {
        let end = buf
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("another response")
            + 4;
        let mut r = Resp::parse(&buf[..end]);
        let len = match r.header("content-length") {
            Some(n) if !is_head && r.status != 304 => n.parse().expect("a length"),
            _ => 0,
        };
        r.body = buf[end..end + len].to_vec();
        buf = &buf[end + len..];
        out.push(r);
    }
    assert!(
        buf.is_empty(),
        "{} bytes after the last response",
        buf.len()
    );
    out
}

/// A player's connection: requests pipelined on one keep-alive connection,
/// the media ones and then others, each answered in order.
#[tokio::test]
async fn pipelined_requests_on_one_connection_are_answered_in_order() {
    let lib = library();
    let server = serve(&lib.dir, |_| {});
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    let requests = "GET /media/song.wav HTTP/1.1\r\nHost: localhost\r\nRange: bytes=0-99\r\n\r\n\
                    HEAD /media/song.wav HTTP/1.1\r\nHost: localhost\r\n\r\n\
                    GET /media/nope.wav HTTP/1.1\r\nHost: localhost\r\n\r\n\
                    GET /media/song.wav HTTP/1.1\r\nHost: localhost\r\nRange: bytes=-10\r\n\r\n\
                    GET /media/song.wav HTTP/1.1\r\nHost: localhost\r\n\r\n\
                    GET /api/library HTTP/1.1\r\nHost: localhost\r\n\r\n\
                    GET /media/song.wav HTTP/1.1\r\nHost: localhost\r\nRange: bytes=5-9\r\n\
                    Connection: close\r\n\r\n";
    tokio::io::AsyncWriteExt::write_all(&mut s, requests.as_bytes())
        .await
        .unwrap();
    let all = read_until_closed(&mut s, "the responses").await;
    let r = split_responses(&all, &[false, true, false, false, false, false, false]);
    let song = &lib.song;
    assert_eq!((r[0].status, &r[0].body[..]), (206, &song[..100]));
    assert_eq!(r[1].status, 200);
    assert_eq!(
        r[1].header("content-length"),
        Some(&*song.len().to_string())
    );
    assert_eq!(r[2].status, 404);
    assert_eq!(
        (r[3].status, &r[3].body[..]),
        (206, &song[song.len() - 10..])
    );
    assert_eq!((r[4].status, &r[4].body), (200, song));
    for r in &r[..5] {
        assert!(r.header("date").is_some(), "{:?}", r.headers);
    }
    assert_eq!(r[5].status, 200);
    assert!(r[5].json().as_array().is_some());
    assert_eq!((r[6].status, &r[6].body[..]), (206, &song[5..10]));
}

/// A WebSocket upgrade on a connection that downloaded media first.
#[tokio::test]
async fn a_connection_that_downloaded_media_can_upgrade() {
    let lib = library();
    let server = serve(&lib.dir, |_| {});
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    let get = "GET /media/song.wav HTTP/1.1\r\nHost: localhost\r\nRange: bytes=0-9\r\n\r\n";
    tokio::io::AsyncWriteExt::write_all(&mut s, get.as_bytes())
        .await
        .unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let whole = |b: &[u8]| {
        b.windows(4)
            .position(|w| w == b"\r\n\r\n")
            .is_some_and(|p| b.len() >= p + 4 + 10)
    };
    while !whole(&buf) {
        let n = s.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed early");
        buf.extend_from_slice(&chunk[..n]);
    }
    let mut upgrade = "GET /ws HTTP/1.1\r\nHost: localhost\r\n".to_owned();
    for (n, v) in crate::support::http::UPGRADE {
        upgrade.push_str(&format!("{n}: {v}\r\n"));
    }
    upgrade.push_str("\r\n");
    tokio::io::AsyncWriteExt::write_all(&mut s, upgrade.as_bytes())
        .await
        .unwrap();
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk))
        .await
        .expect("an answer to the upgrade")
        .unwrap();
    let answer = String::from_utf8_lossy(&chunk[..n]);
    assert!(answer.starts_with("HTTP/1.1 101"), "{answer}");
}

/// The library's URLs name each file's version: a cache (a browser, a CDN)
/// may keep what such a URL answers for good, and revalidates the rest.
#[tokio::test]
async fn versioned_urls_are_cached_for_good_and_others_revalidated() {
    let lib = library();
    let server = serve(&lib.dir, |c| {
        c.media.rescan_interval = Some(Duration::from_millis(200))
    });
    let list = get(&server, "/api/library", &[]).await.json();
    let url = track(&list, "song.wav")["url"].as_str().unwrap().to_owned();
    assert!(url.starts_with("/media/song.wav?v="), "{url}");
    let sub = track(&list, "sub dir/My_untagged_tune.wav")["url"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        sub.starts_with("/media/sub%20dir/My_untagged_tune.wav?v="),
        "{sub}"
    );
    assert_eq!(get(&server, &sub, &[]).await.status, 200);

    const FOREVER: &str = "public, max-age=31536000, immutable";
    let r = get(&server, &url, &[]).await;
    assert_eq!((r.status, &r.body), (200, &lib.song));
    assert_eq!(r.header("cache-control"), Some(FOREVER));
    let r = get(&server, &url, &[("Range", "bytes=0-9")]).await;
    assert_eq!((r.status, r.header("cache-control")), (206, Some(FOREVER)));
    let r = request(server.addr, "HEAD", &url, &[], None).await;
    assert_eq!(r.header("cache-control"), Some(FOREVER));
    // No version, or another one: the same bytes, revalidated.
    for other in [
        "/media/song.wav",
        "/media/song.wav?v=1-2",
        "/media/song.wav?x=1",
    ] {
        let r = get(&server, other, &[]).await;
        assert_eq!((r.status, &r.body), (200, &lib.song), "{other}");
        assert_eq!(r.header("cache-control"), Some("no-cache"), "{other}");
    }
    // No CDN in front: no cross-origin reads asked for.
    assert_eq!(
        get(&server, &url, &[])
            .await
            .header("access-control-allow-origin"),
        None
    );

    // Another file under the same name gets another URL; the old one now
    // answers the new bytes, but not for good.
    let new = tone_wav(3, &[550.0], None, None);
    lib.dir.write("song.wav", &new);
    let fresh = eventually("the rescan gives song.wav a new URL", async || {
        let list = get(&server, "/api/library", &[]).await.json();
        let now = track(&list, "song.wav")["url"].as_str().unwrap().to_owned();
        if now != url { Ok(now) } else { Err(now) }
    })
    .await;
    let r = get(&server, &fresh, &[]).await;
    assert_eq!(
        (r.status, &r.body, r.header("cache-control")),
        (200, &new, Some(FOREVER))
    );
    let r = get(&server, &url, &[]).await;
    assert_eq!(
        (r.status, &r.body, r.header("cache-control")),
        (200, &new, Some("no-cache"))
    );
}

/// `--media-base-url`: the library's URLs, and so the web player, fetch the
/// tracks from a CDN, which may pull them from this server.
#[tokio::test]
async fn a_media_base_url_points_players_at_a_cdn() {
    let lib = library();
    let server = serve(&lib.dir, |c| {
        c.media.base_url = Some("https://cdn.example.com/radio".into())
    });
    let list = get(&server, "/api/library", &[]).await.json();
    let url = track(&list, "sub dir/My_untagged_tune.wav")["url"]
        .as_str()
        .unwrap();
    assert!(
        url.starts_with("https://cdn.example.com/radio/media/sub%20dir/My_untagged_tune.wav?v="),
        "{url}"
    );
    // What the CDN pulls: the file, readable by the player's page (Web
    // Audio needs CORS for media of another origin).
    let path = url.strip_prefix("https://cdn.example.com/radio").unwrap();
    let r = get(&server, path, &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    assert_eq!(
        r.header("cache-control"),
        Some("public, max-age=31536000, immutable")
    );
    // The page may play from it.
    let page = get(&server, "/", &[]).await;
    let policy = page.header("content-security-policy").unwrap();
    assert!(
        policy.contains("media-src 'self' blob: https://cdn.example.com/radio/;"),
        "{policy}"
    );
    // And ask it why a track did not load (a HEAD, to retry or give up).
    assert!(
        policy.contains("connect-src 'self' ws: wss: https://cdn.example.com/radio/;"),
        "{policy}"
    );
}

/// What a download sends is counted, by route and status, in /metrics:
/// whole files, ranges, HEAD (no body) and errors alike.
#[tokio::test]
async fn media_downloads_are_counted_in_the_metrics() {
    let lib = library();
    let server = serve(&lib.dir, |_| {});
    assert_eq!(get(&server, "/media/song.wav", &[]).await.status, 200);
    let r = get(&server, "/media/song.wav", &[("Range", "bytes=0-9")]).await;
    assert_eq!(r.status, 206);
    let r = request(server.addr, "HEAD", "/media/song.wav", &[], None).await;
    assert_eq!(r.status, 200);
    let missing = get(&server, "/media/nope.wav", &[]).await;
    assert_eq!(missing.status, 404);
    let sent = (lib.song.len() + 10) as f64;
    let bytes = |class: &str| {
        format!("radio_http_response_bytes_total{{route=\"media\",status=\"{class}\"}}")
    };
    let requests =
        |class: &str| format!("radio_http_requests_total{{route=\"media\",status=\"{class}\"}}");
    server.wait_metric(&bytes("2xx"), sent).await;
    assert_eq!(server.metric(&requests("2xx")).await, 3.0);
    assert_eq!(server.metric(&requests("4xx")).await, 1.0);
    assert_eq!(
        server.metric(&bytes("4xx")).await,
        missing.body.len() as f64
    );
}
