//! The `radio` binary under test and the child processes tests start.

use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

/// The radio binary under test.
pub(crate) fn radio_bin() -> &'static str {
    env!("CARGO_BIN_EXE_radio")
}

/// Waits up to `limit` for `child` to exit and returns how; if it does not,
/// kills it and fails the test, naming `what`.
pub(crate) fn exit_within(child: &mut Child, limit: Duration, what: &str) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("poll a child's exit") {
            return status;
        }
        if Instant::now() > deadline {
            kill(child);
            panic!("{what} did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends `SIG<name>` to process `pid`.
pub(crate) fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{name} {pid} failed");
}

/// Kills `child` at once (SIGKILL) and reaps it; a child already gone is fine.
pub(crate) fn kill(child: &mut Child) {
    // An error here means the child has exited already.
    let _ = child.kill();
    child.wait().expect("reap a killed child");
}

/// A free loopback TCP port (bound, read and released; the caller's server
/// takes it next).
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind a free port")
        .local_addr()
        .expect("local addr")
        .port()
}
