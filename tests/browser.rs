//! The web player in a real headless Chromium (Debian's `chromium`, driven by
//! playwright-core from tests/browser/) against a real `radio serve` with
//! tracks this test generates: tune-in sync, pause, track switch and the
//! broadcaster going offline (tests/browser/sync.mjs says how).
//!
//! Chromium, Node and the npm packages are installed by scripts/setup.sh
//! (CI runs it); without them this test fails and says so, never skips.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Server, TempDir, tone_wav};

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn chromium() -> String {
    std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned())
}

fn require(ok: bool, what: &str) {
    assert!(
        ok,
        "{what} is missing: run scripts/setup.sh (it installs Chromium, Node and the \
         browser tests' npm packages; CI runs it before the tests)"
    );
}

#[test]
fn two_browsers_stay_in_sync() {
    let browser_dir = manifest_dir().join("tests/browser");
    require(
        Path::new(&chromium()).exists(),
        &format!("Chromium ({})", chromium()),
    );
    require(
        Command::new("node")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success()),
        "Node.js (node)",
    );
    require(
        browser_dir.join("node_modules/playwright-core").exists(),
        "playwright-core (tests/browser/node_modules)",
    );

    let media = TempDir::new("browser");
    std::fs::write(
        media.path().join("first.wav"),
        tone_wav(
            90,
            &[220.0, 277.18, 329.63],
            Some("First tone"),
            Some("Browser test"),
        ),
    )
    .unwrap();
    std::fs::write(
        media.path().join("second.wav"),
        tone_wav(
            90,
            &[392.0, 493.88],
            Some("Second tone"),
            Some("Browser test"),
        ),
    )
    .unwrap();
    // A short grace period, so B sees the station go offline soon after A's
    // tab closes (but long enough for A to reconnect after a dropped line).
    let server = Server::start(&["--media", media.arg(), "--grace-period", "2s"]);

    let screenshot = manifest_dir().join("target/artifacts/player.png");
    let mut child = Command::new("node")
        .arg(browser_dir.join("sync.mjs"))
        .arg(server.http_url(""))
        .arg(&screenshot)
        .env("CHROMIUM", chromium())
        .current_dir(&browser_dir)
        .spawn()
        .expect("start node");
    let deadline = Instant::now() + Duration::from_secs(180);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for node") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the browser test did not finish in 180 s; server log:\n{}",
                server.log()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        status.success(),
        "the browser test failed ({status}); its output is above; server log:\n{}",
        server.log()
    );
    assert!(
        screenshot.exists(),
        "no screenshot at {}",
        screenshot.display()
    );
}
