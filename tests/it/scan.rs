//! The library scan over real files: what plays is listed (each format the
//! library serves, encoded by a real ffmpeg), what does not is left out
//! with one warning and a metric; an exact duration for raw ADTS AAC; and
//! a `--media` with nothing to play says so in the real binary's log.

use crate::support::{Server, TempDir, ffmpeg_tone, tone_wav};

/// The library's tracks by id, with their durations.
async fn durations(server: &Server) -> Vec<(String, Option<u64>)> {
    let list = server.get("/api/library").await.json();
    list.as_array()
        .expect("the library is a JSON list")
        .iter()
        .map(|t| {
            (
                t["id"].as_str().expect("an id").to_owned(),
                t["duration_ms"].as_u64(),
            )
        })
        .collect()
}

#[tokio::test]
async fn files_that_do_not_play_are_left_out_with_one_warning() {
    let dir = TempDir::new("scan");
    // Every kind the library plays, 10 s each.
    ffmpeg_tone(&dir, "tone.mp3", 10, &["-c:a", "libmp3lame"]);
    ffmpeg_tone(&dir, "tone.ogg", 10, &["-c:a", "libvorbis"]);
    ffmpeg_tone(&dir, "tone.opus", 10, &["-c:a", "libopus"]);
    ffmpeg_tone(&dir, "tone.flac", 10, &["-c:a", "flac"]);
    ffmpeg_tone(&dir, "tone.m4a", 10, &["-c:a", "aac"]);
    ffmpeg_tone(&dir, "tone.webm", 10, &["-c:a", "libopus"]);
    dir.write("tone.wav", tone_wav(10, &[440.0], None, None));
    // And what does not play: not audio, empty, cut short.
    dir.write("broken.mp3", "x\n");
    dir.write("sub/empty.ogg", "");
    let flac = std::fs::read(dir.path().join("tone.flac")).expect("read tone.flac");
    dir.write("cut.flac", &flac[..100]);
    dir.write("notes.m4a", "hello, not music");

    let server = Server::with(|c| c.media.dir = Some(dir.path().to_owned()));
    let tracks = durations(&server).await;
    let ids: Vec<&str> = tracks.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "tone.flac",
            "tone.m4a",
            "tone.mp3",
            "tone.ogg",
            "tone.opus",
            "tone.wav",
            "tone.webm"
        ],
        "{tracks:?}"
    );
    for (id, ms) in &tracks {
        let ms = ms.unwrap_or_else(|| panic!("{id} has no duration"));
        assert!((9_900..=10_100).contains(&ms), "{id}: {ms} ms");
    }
    // The broken files are not served either.
    assert_eq!(server.get("/media/broken.mp3").await.status, 404);

    // One warning for them all: how many, the names, why.
    let log = server.log();
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains("left out")).collect();
    assert_eq!(warnings.len(), 1, "{log}");
    let w = warnings[0];
    assert!(w.contains("WARN"), "{w}");
    assert!(w.contains("4 media files left out of the library"), "{w}");
    for (name, why) in [
        ("broken.mp3", "not an audio format"),
        ("sub/empty.ogg", "it is empty"),
        ("cut.flac", "cannot read it"),
        ("notes.m4a", "not an audio format"),
    ] {
        assert!(w.contains(&format!("{name:?} ({why}")), "{name}: {w}");
    }
    assert_eq!(server.metric("radio_library_unplayable").await, 4.0);
}

#[tokio::test]
async fn a_rescan_warns_only_of_new_files_that_do_not_play() {
    let dir = TempDir::new("rescan-broken");
    dir.write("good.wav", tone_wav(1, &[440.0], None, None));
    dir.write("broken.mp3", "x\n");
    let server = Server::with(|c| {
        c.media.dir = Some(dir.path().to_owned());
        c.media.rescan_interval = Some(std::time::Duration::from_millis(200));
    });
    // Answered once the first scan is over.
    assert_eq!(durations(&server).await.len(), 1);
    dir.write("also broken.ogg", "not ogg");
    crate::support::eventually("the rescan finds the new broken file", async || {
        let log = server.log();
        if log.contains("\"also broken.ogg\"") {
            Ok(())
        } else {
            Err(log)
        }
    })
    .await;
    // Several rescans later the first warning was not repeated.
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    let log = server.log();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("left out")).collect();
    assert_eq!(lines.len(), 2, "{log}");
    assert!(lines[0].contains("1 media file left out") && lines[0].contains("broken.mp3"));
    assert!(lines[1].contains("1 media file left out") && !lines[1].contains("\"broken.mp3\""));
    assert_eq!(server.metric("radio_library_unplayable").await, 2.0);
    let tracks = durations(&server).await;
    assert_eq!(tracks, [("good.wav".to_owned(), Some(1_000))]);
}

/// A raw ADTS `.aac` file's duration comes from its frames, not from its
/// bitrate (which said 10.4 s for a 10 s file).
#[tokio::test]
async fn a_raw_aac_file_has_its_exact_duration() {
    let dir = TempDir::new("adts");
    ffmpeg_tone(&dir, "ten.aac", 10, &["-c:a", "aac", "-b:a", "96k"]);
    ffmpeg_tone(&dir, "three.aac", 3, &["-c:a", "aac", "-b:a", "160k"]);
    let server = Server::with(|c| c.media.dir = Some(dir.path().to_owned()));
    let tracks = durations(&server).await;
    let ms = |id: &str| {
        tracks
            .iter()
            .find(|(t, _)| t == id)
            .and_then(|(_, ms)| *ms)
            .unwrap_or_else(|| panic!("no duration for {id}: {tracks:?}"))
    };
    // ffmpeg's encoder adds one frame (1024 samples, 23 ms) of priming.
    assert!((10_000..=10_060).contains(&ms("ten.aac")), "{tracks:?}");
    assert!((3_000..=3_060).contains(&ms("three.aac")), "{tracks:?}");
}

/// An empty or wrong `--media` starts, and says so: through the binary.
#[test]
fn a_media_dir_with_nothing_to_play_says_so() {
    let empty = TempDir::new("no-audio");
    empty.write("notes/readme.txt", "no music here");
    // The scan is over before the server says it listens, which
    // spawn_process waits for.
    let mut server = Server::spawn_process(&["--media", empty.arg()]);
    let said = format!("no audio files found in {}", empty.arg());
    let log = server.log();
    let line = log.lines().find(|l| l.contains(&said)).expect("the line");
    assert!(line.contains("WARN") && line.contains("--media"), "{line}");
    server.kill();

    // Only files that do not play: said too, with how many.
    let broken = TempDir::new("only-broken");
    broken.write("a.mp3", "x\n");
    let mut server = Server::spawn_process(&["--media", broken.arg()]);
    let said = format!(
        "no audio files found in {} (1 file there does not play",
        broken.arg()
    );
    assert!(server.log().contains(&said), "{}", server.log());
    server.kill();
}
