//! The external engine: ffmpeg (scripts/setup.sh installs it; README,
//! "Listen in any app"). It decodes every format the library scans (Opus
//! included, which the server's own decoder lacks) and encodes MP3 with
//! LAME, in processes of their own, so a codec's crash or a slow file never
//! stalls the server's threads.
//!
//! Per station with stream listeners: one **encoder** for as long as it has
//! them (raw PCM on stdin, MP3 on stdout), and one **decoder** at a time
//! (a track from a position, as raw PCM on stdout), replaced at each
//! track change or seek. A [`Proc`] is killed and reaped when it is done
//! with (or, as a last resort, when dropped), and the CPU time it used is
//! read from `/proc` while it runs and once more at its end, for
//! `radio_stream_encoder_cpu_seconds_total`.

use std::io;
use std::os::unix::fs::MetadataExt as _;
use std::process::Stdio;

use prometheus_client::metrics::counter::Counter;
use std::sync::atomic::AtomicU64;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio_util::task::TaskTracker;

use crate::server::media::Decodable;

/// The PCM between decoder and encoder: 44.1 kHz, stereo, 16-bit little
/// endian (what MP3 at 44.1 kHz takes).
pub(crate) const RATE: u64 = 44_100;
/// Bytes of one sample frame (both channels).
pub(crate) const FRAME_BYTES: u64 = 4;

/// The program run; found on `PATH`.
const FFMPEG: &str = "ffmpeg";

/// A CPU-seconds counter (`radio_stream_encoder_cpu_seconds_total`).
pub(crate) type CpuCounter = Counter<f64, AtomicU64>;

/// One ffmpeg process.
pub(crate) struct Proc {
    child: Child,
    pid: Option<u32>,
    /// Clock ticks of CPU counted so far.
    ticks: u64,
}

impl Proc {
    fn spawn(mut cmd: Command) -> io::Result<Proc> {
        // A last resort: a Proc dropped without `finish` (the runtime
        // shutting down) is still killed, and tokio reaps it.
        cmd.kill_on_drop(true);
        let child = cmd.spawn().map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => io::Error::new(
                e.kind(),
                "ffmpeg is not installed (the stream needs it: scripts/setup.sh installs it)",
            ),
            _ => e,
        })?;
        let pid = child.id();
        Ok(Proc {
            child,
            pid,
            ticks: 0,
        })
    }

    /// Counts the CPU time the process used since the last look.
    pub(crate) fn sample(&mut self, cpu: &CpuCounter) {
        let Some(ticks) = self.pid.and_then(cpu_ticks) else {
            return;
        };
        if ticks > self.ticks {
            cpu.inc_by((ticks - self.ticks) as f64 / ticks_per_second());
            self.ticks = ticks;
        }
    }

    /// Kills the process (if it still runs), counts its last CPU time and
    /// reaps it.
    pub(crate) async fn finish(mut self, cpu: &CpuCounter) {
        if let Err(e) = self.child.start_kill() {
            tracing::debug!(error = %e, "ffmpeg had exited already");
        }
        self.sample(cpu);
        if let Err(e) = self.child.wait().await {
            tracing::warn!(error = %e, "cannot reap an ffmpeg process");
        }
    }

    /// Waits for the process to exit by itself (its input ended), for at
    /// most `limit`, then finishes it.
    pub(crate) async fn finish_within(mut self, limit: std::time::Duration, cpu: &CpuCounter) {
        self.sample(cpu);
        if tokio::time::timeout(limit, self.child.wait())
            .await
            .is_err()
        {
            tracing::debug!("ffmpeg did not end by itself; killing it");
        }
        self.finish(cpu).await;
    }
}

/// The encoder: PCM on its stdin, `kbps` MP3 (CBR, no ID3 or Xing header:
/// a stream has no start for them) on its stdout, each packet flushed as
/// it is made.
pub(crate) fn encoder(kbps: u32) -> io::Result<(Proc, ChildStdin, ChildStdout)> {
    let mut cmd = Command::new(FFMPEG);
    cmd.args(["-nostats", "-hide_banner", "-loglevel", "error"])
        .args(["-f", "s16le", "-ar", "44100", "-ac", "2", "-i", "pipe:0"])
        .args(["-c:a", "libmp3lame", "-b:a", &format!("{kbps}k")])
        .args([
            "-id3v2_version",
            "0",
            "-write_xing",
            "0",
            "-flush_packets",
            "1",
        ])
        .args(["-f", "mp3", "pipe:1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut proc = Proc::spawn(cmd)?;
    let (Some(stdin), Some(stdout)) = (proc.child.stdin.take(), proc.child.stdout.take()) else {
        return Err(io::Error::other("ffmpeg's pipes were not opened"));
    };
    Ok((proc, stdin, stdout))
}

/// A decoder of `input` from `from_ms`, at `gain_db` (the library's
/// loudness gain, as the synced players apply it): PCM on its stdout. What
/// ffmpeg says of a file it cannot read is logged, naming `track`.
pub(crate) fn decoder(
    input: &Decodable,
    from_ms: u64,
    gain_db: Option<f64>,
    track: &str,
    tasks: &TaskTracker,
) -> io::Result<(Proc, ChildStdout)> {
    let mut cmd = Command::new(FFMPEG);
    cmd.args(["-nostats", "-hide_banner", "-loglevel", "error"])
        .arg("-ss")
        .arg(format!("{}.{:03}", from_ms / 1000, from_ms % 1000));
    match input {
        Decodable::File(path, key) => {
            // What is decoded is the file the scan found, as for /media/.
            let meta = std::fs::metadata(path)?;
            if (meta.dev(), meta.ino()) != *key {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    "the file was replaced since the library's scan",
                ));
            }
            // `file:` so a name with a colon is not read as a protocol.
            let mut arg = std::ffi::OsString::from("file:");
            arg.push(path);
            cmd.arg("-i").arg(arg).stdin(Stdio::null());
        }
        Decodable::Memory(_) => {
            cmd.args(["-i", "pipe:0"]).stdin(Stdio::piped());
        }
    }
    cmd.args(["-vn", "-sn", "-dn"]);
    if let Some(db) = gain_db.filter(|g| g.is_finite() && *g != 0.0) {
        cmd.arg("-af").arg(format!("volume={db:.2}dB"));
    }
    cmd.args(["-f", "s16le", "-ar", "44100", "-ac", "2", "pipe:1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut proc = Proc::spawn(cmd)?;
    let Some(stdout) = proc.child.stdout.take() else {
        return Err(io::Error::other("ffmpeg's stdout was not opened"));
    };
    if let (Decodable::Memory(bytes), Some(mut stdin)) = (input, proc.child.stdin.take()) {
        let bytes = bytes.clone();
        tasks.spawn(async move {
            // Cut short when the decoder is replaced: nothing to tell.
            if let Err(e) = stdin.write_all(&bytes).await {
                tracing::trace!(error = %e, "decoder input cut short");
            }
        });
    }
    if let Some(stderr) = proc.child.stderr.take() {
        let track = track.to_owned();
        tasks.spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            let mut told = 0;
            while let Ok(Some(line)) = lines.next_line().await {
                if told < 5 {
                    tracing::warn!(%track, "ffmpeg: {line}");
                    told += 1;
                }
            }
        });
    }
    Ok((proc, stdout))
}

/// A process's user and system CPU time in clock ticks
/// (`/proc/PID/stat`, fields 14 and 15).
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces.
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    // Fields from 3 on: utime is the 12th of them, stime the 13th.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 { hz as f64 } else { 100.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_process_cpu_time() {
        assert!(cpu_ticks(std::process::id()).is_some());
        assert_eq!(cpu_ticks(u32::MAX), None);
    }
}
