//! `radio listen --player mpv`: a real mpv, started idle with no video and
//! its JSON IPC on a private socket, driven the way Syncplay drives desktop
//! players. This file starts and ends the process; `ipc` speaks to it;
//! `follow` keeps it on the station's position (the drift loop).

pub mod follow;
mod ipc;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::bail;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub use ipc::Ipc;
use ipc::lock;

/// How long mpv may take to open its IPC socket.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Lines of mpv's own output kept to explain a failure.
const KEEP_LINES: usize = 8;

/// What mpv did.
pub enum News {
    Event(Value),
    Exited(ExitStatus),
}

/// A running mpv and our connection to it; the process is ended on drop.
pub struct Mpv {
    child: Child,
    pub ipc: Ipc,
    /// Our private socket folder, removed on drop (none when the user
    /// named the socket with `--input-ipc-server`).
    own_dir: Option<PathBuf>,
    /// mpv's last lines of output (errors only).
    said: Arc<Mutex<VecDeque<String>>>,
    exited: Option<ExitStatus>,
}

impl Mpv {
    /// Starts `mpv` with our options, then `user_args` (which may override
    /// them), and connects to its IPC socket: ours, in a private folder,
    /// unless `user_args` name one with `--input-ipc-server=PATH`.
    pub async fn start(user_args: &[String]) -> anyhow::Result<Mpv> {
        let theirs = user_args
            .iter()
            .rev()
            .find_map(|a| a.strip_prefix("--input-ipc-server="))
            .map(PathBuf::from);
        let (socket, own_dir) = match theirs {
            Some(path) => (path, None),
            None => {
                let dir = private_dir()?;
                (dir.join("mpv.sock"), Some(dir))
            }
        };
        let mut cmd = Command::new("mpv");
        cmd.args([
            "--idle=yes",
            "--no-video",
            "--force-window=no",
            // At a file's end mpv pauses on its last frame instead of
            // unloading it; it never starts a file again on its own.
            "--keep-open=yes",
            "--loop-file=no",
            "--resume-playback=no",
            "--save-position-on-quit=no",
            "--input-terminal=no",
            "--msg-level=all=error",
        ]);
        if own_dir.is_some() {
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
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                remove_dir(own_dir.as_deref());
                bail!(
                    "--player mpv needs mpv, and there is no `mpv` on PATH; install it \
                     (Debian/Ubuntu: sudo apt-get install mpv; macOS: brew install mpv), \
                     or listen without --player"
                );
            }
            Err(e) => {
                remove_dir(own_dir.as_deref());
                bail!("cannot start mpv: {e}");
            }
        };
        let said = Arc::new(Mutex::new(VecDeque::new()));
        for out in [
            child
                .stdout
                .take()
                .map(|o| Box::new(o) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
            child
                .stderr
                .take()
                .map(|o| Box::new(o) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
        ]
        .into_iter()
        .flatten()
        {
            let said = said.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(out).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let mut said = lock(&said);
                    if said.len() == KEEP_LINES {
                        said.pop_front();
                    }
                    said.push_back(line);
                }
            });
        }
        let ipc = match connect(&mut child, &socket).await {
            Ok(ipc) => ipc,
            Err(e) => {
                remove_dir(own_dir.as_deref());
                let said = lock(&said).iter().cloned().collect::<Vec<_>>().join("; ");
                let said = if said.is_empty() {
                    String::new()
                } else {
                    format!(" (mpv said: {said})")
                };
                bail!("{e}{said}");
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
    pub async fn exited(&mut self) -> ExitStatus {
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
    pub fn exit_note(&self, status: ExitStatus) -> String {
        let said = lock(&self.said)
            .iter()
            .cloned()
            .collect::<Vec<_>>()
            .join("; ");
        let said = if said.is_empty() {
            String::new()
        } else {
            format!("; it said: {said}")
        };
        format!("mpv exited ({status}){said}")
    }

    /// Asks mpv to quit and waits for it (killing it after 3 s).
    pub async fn quit(mut self) {
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
    pub async fn news(&mut self) -> News {
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
