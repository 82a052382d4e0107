//! `radio listen --player mpv`: a real mpv, started idle with no video and
//! its JSON IPC on a private socket, driven the way Syncplay drives desktop
//! players. This file starts and ends the process; `ipc` speaks to it;
//! `follow` keeps it on the station's position (the drift loop) by the
//! rules of `drift`; `trouble` says why a track would not play; `gain`
//! plays each track at the station's gain for it; `prefetch` puts the
//! next track in its playlist ahead of the end; `urls` says where each
//! track is fetched (the server's library's URL for it).

mod drift;
pub(crate) mod follow;
mod gain;
mod ipc;
mod prefetch;
pub(crate) mod trouble;
pub(crate) mod urls;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::bail;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};

pub(crate) use ipc::Ipc;
use ipc::lock;

/// How long mpv may take to open its IPC socket.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Lines of mpv's own output kept to explain a failure.
const KEEP_LINES: usize = 8;

/// What mpv did.
pub(crate) enum News {
    Event(Value),
    Exited(ExitStatus),
}

/// A running mpv and our connection to it; the process is ended on drop.
pub(crate) struct Mpv {
    child: Child,
    pub ipc: Ipc,
    /// Our private socket folder, removed on drop (none when the user
    /// named the socket with `--input-ipc-server`).
    own_dir: Option<PathBuf>,
    /// mpv's last lines of output (errors only).
    said: Said,
    exited: Option<ExitStatus>,
}

impl Mpv {
    /// Starts `mpv` with our options, then `user_args` (which may override
    /// them), and connects to its IPC socket: ours, in a private folder,
    /// unless `user_args` name one with `--input-ipc-server=PATH`.
    pub(crate) async fn start(user_args: &[String]) -> anyhow::Result<Mpv> {
        let (socket, own_dir) = match user_socket(user_args) {
            Some(path) => (path, None),
            None => {
                let dir = private_dir()?;
                (dir.join("mpv.sock"), Some(dir))
            }
        };
        let mut child = match command(&socket, own_dir.is_some(), user_args).spawn() {
            Ok(c) => c,
            Err(e) => {
                remove_dir(own_dir.as_deref());
                return Err(spawn_error(e));
            }
        };
        let said = Said::default();
        said.keep_output(&mut child);
        let ipc = match connect(&mut child, &socket).await {
            // mpv's errors come as events too: its words when a track fails.
            Ok(mut ipc) => ipc
                .command(json!(["request_log_messages", trouble::LOG_LEVEL]))
                .await
                .map(|_| ipc),
            Err(e) => Err(e),
        };
        let ipc = match ipc {
            Ok(ipc) => ipc,
            Err(e) => {
                remove_dir(own_dir.as_deref());
                match said.joined() {
                    Some(said) => bail!("{e} (mpv said: {said})"),
                    None => return Err(e),
                }
            }
        };
        Ok(Mpv {
            child,
            ipc,
            own_dir,
            said,
            exited: None,
        })
    }

    /// Waits until mpv exits, and says how (cancel-safe).
    pub(crate) async fn exited(&mut self) -> ExitStatus {
        if let Some(status) = self.exited {
            return status;
        }
        match self.child.wait().await {
            Ok(status) => {
                self.exited = Some(status);
                status
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot wait for mpv");
                std::future::pending().await
            }
        }
    }

    /// Why mpv ended, as a sentence (with the last thing it said).
    pub(crate) fn exit_note(&self, status: ExitStatus) -> String {
        match self.said.joined() {
            Some(said) => format!("mpv exited ({status}); it said: {said}"),
            None => format!("mpv exited ({status})"),
        }
    }

    /// Asks mpv to quit and waits for it (killing it after 3 s).
    pub(crate) async fn quit(mut self) {
        if self.exited.is_some() {
            return;
        }
        if let Err(e) = self.ipc.command(json!(["quit"])).await {
            tracing::debug!(error = %e, "mpv did not take quit");
        }
        if tokio::time::timeout(Duration::from_secs(3), self.exited())
            .await
            .is_err()
        {
            tracing::warn!("mpv did not quit within 3 s; killing it");
            if let Err(e) = self.child.kill().await {
                tracing::debug!(error = %e, "cannot kill mpv");
            }
        }
    }

    /// mpv's next event, or its exit, whichever comes first.
    pub(crate) async fn news(&mut self) -> News {
        if let Some(status) = self.exited {
            return News::Exited(status);
        }
        tokio::select! {
            event = self.ipc.event() => match event {
                Some(e) => News::Event(e),
                // The socket closed: mpv is ending; wait for it.
                None => News::Exited(self.exited().await),
            },
            status = self.child.wait() => match status {
                Ok(status) => {
                    self.exited = Some(status);
                    News::Exited(status)
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot wait for mpv");
                    std::future::pending().await
                }
            },
        }
    }
}

impl Drop for Mpv {
    fn drop(&mut self) {
        // kill_on_drop ends the process; reap it if it is gone already.
        if let Err(e) = self.child.start_kill() {
            tracing::debug!(error = %e, "mpv was gone already");
        }
        if let Err(e) = self.child.try_wait() {
            tracing::debug!(error = %e, "cannot reap mpv");
        }
        remove_dir(self.own_dir.as_deref());
    }
}

/// The socket `user_args` name with `--input-ipc-server=PATH` (the last one
/// wins, as in mpv).
fn user_socket(user_args: &[String]) -> Option<PathBuf> {
    user_args
        .iter()
        .rev()
        .find_map(|a| a.strip_prefix("--input-ipc-server="))
        .map(PathBuf::from)
}

/// mpv with our options, our socket unless the user named one, then theirs.
fn command(socket: &Path, own_socket: bool, user_args: &[String]) -> Command {
    let mut cmd = Command::new("mpv");
    cmd.args([
        "--idle=yes",
        "--no-video",
        "--force-window=no",
        // At a file's end mpv pauses on its last frame instead of
        // unloading it; it never starts a file again on its own.
        "--keep-open=yes",
        "--loop-file=no",
        // A next track appended to the playlist is opened and read while
        // the current one plays, and follows it without a gap.
        "--prefetch-playlist=yes",
        "--gapless-audio=yes",
        "--resume-playback=no",
        "--save-position-on-quit=no",
        "--input-terminal=no",
        "--msg-level=all=error",
        // A URL that fails is ours to explain, not youtube-dl's to try.
        "--ytdl=no",
    ]);
    if own_socket {
        cmd.arg(format!("--input-ipc-server={}", socket.display()));
    }
    cmd.args(user_args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group: a Ctrl-C in the terminal is ours to
        // handle (we quit mpv), not mpv's.
        .process_group(0)
        .kill_on_drop(true);
    end_with_us(&mut cmd);
    cmd
}

/// Has the kernel end mpv (SIGTERM) when this process dies, even by
/// SIGKILL, when no drop or signal handler of ours runs.
#[cfg(target_os = "linux")]
fn end_with_us(cmd: &mut Command) {
    let parent = std::process::id();
    // SAFETY: the closure runs in the child between fork and exec, where
    // only async-signal-safe calls are allowed: `after_fork` makes only
    // prctl and getppid calls, and allocates nothing (its errors are bare
    // errno values, not boxed messages).
    unsafe {
        cmd.pre_exec(move || after_fork(parent));
    }
}

/// What the child does between fork and exec: ask for SIGTERM when its
/// parent dies, and refuse to start if `parent` is already gone. It must
/// not allocate (another thread of the parent may have held the
/// allocator's lock at the fork): std reports only an error's errno to
/// the parent anyway.
#[cfg(target_os = "linux")]
fn after_fork(parent: u32) -> std::io::Result<()> {
    // SAFETY: prctl with PR_SET_PDEATHSIG takes a signal number and
    // touches no memory of ours.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // We died before the prctl: no signal will come; do not start.
    // SAFETY: getppid has no arguments and cannot fail.
    if u32::try_from(unsafe { libc::getppid() }).ok() != Some(parent) {
        return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn end_with_us(_cmd: &mut Command) {}

/// Why mpv could not be started, and what to do.
fn spawn_error(e: std::io::Error) -> anyhow::Error {
    if e.kind() == std::io::ErrorKind::NotFound {
        anyhow::anyhow!(
            "--player mpv needs mpv, and there is no `mpv` on PATH; install it \
             (Debian/Ubuntu: sudo apt-get install mpv; macOS: brew install mpv), \
             or listen without --player"
        )
    } else {
        anyhow::anyhow!("cannot start mpv: {e}")
    }
}

/// mpv's last few lines of output, kept to explain a failure.
#[derive(Clone, Default)]
struct Said(Arc<Mutex<VecDeque<String>>>);

impl Said {
    /// Reads the child's stdout and stderr until they close, keeping the
    /// last [`KEEP_LINES`].
    fn keep_output(&self, child: &mut Child) {
        let stdout = child
            .stdout
            .take()
            .map(|o| Box::new(o) as Box<dyn AsyncRead + Send + Unpin>);
        let stderr = child
            .stderr
            .take()
            .map(|o| Box::new(o) as Box<dyn AsyncRead + Send + Unpin>);
        for out in [stdout, stderr].into_iter().flatten() {
            let said = self.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(out).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let mut kept = lock(&said.0);
                    if kept.len() == KEEP_LINES {
                        kept.pop_front();
                    }
                    kept.push_back(line);
                }
            });
        }
    }

    /// The kept lines joined with "; ", if any.
    fn joined(&self) -> Option<String> {
        let kept = lock(&self.0);
        (!kept.is_empty()).then(|| kept.iter().cloned().collect::<Vec<_>>().join("; "))
    }
}

/// Connects to the socket once mpv has made it; fails if mpv exits first.
async fn connect(child: &mut Child, socket: &Path) -> anyhow::Result<Ipc> {
    let deadline = tokio::time::Instant::now() + START_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait()? {
            bail!(
                "mpv exited at start ({status}); check the --player-arg arguments \
                 (mpv ARGS alone shows its complaint)"
            );
        }
        match Ipc::connect(socket).await {
            Ok(ipc) => return Ok(ipc),
            Err(e) if tokio::time::Instant::now() > deadline => {
                bail!(
                    "mpv opened no IPC socket at {} within {START_TIMEOUT:?}: {e}",
                    socket.display()
                );
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// A new folder only we may enter, for our socket: in `$XDG_RUNTIME_DIR`
/// when there is one, else the temporary folder.
fn private_dir() -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let base = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_dir())
        .unwrap_or_else(std::env::temp_dir);
    let dir = base.join(format!(
        "radio-mpv-{}-{}",
        std::process::id(),
        crate::protocol::random_token(6)
    ));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot make a folder for mpv's socket at {}: {e}",
                dir.display()
            )
        })?;
    Ok(dir)
}

fn remove_dir(dir: Option<&Path>) {
    if let Some(dir) = dir {
        if let Err(e) = std::fs::remove_dir_all(dir) {
            tracing::debug!(error = %e, dir = %dir.display(), "cannot remove mpv's socket folder");
        }
    }
}

#[cfg(test)]
mod tests {
    /// The code run between fork and exec allocates nothing, on its error
    /// path too (a parent that is not ours), so a lock another thread held
    /// at the fork cannot hang the child.
    #[test]
    #[cfg(target_os = "linux")]
    fn after_fork_does_not_allocate() {
        use crate::allocations::allocations;
        let before = allocations();
        let gone = super::after_fork(u32::MAX);
        let after = allocations();
        // SAFETY: as in after_fork; 0 takes back the death signal it asked
        // for this test process.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, 0) };
        assert_eq!(after, before, "after_fork allocated");
        assert!(gone.is_err());
        assert_eq!(gone.unwrap_err().raw_os_error(), Some(libc::ESRCH));
    }
}
