//! Progress while the test runs: indicatif bars on a terminal, plain
//! periodic lines otherwise (CI logs, pipes), both on stdout.

use std::io::IsTerminal as _;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use tokio::time::Instant;

use super::plan::Progress;

/// How often a plain line is printed when stdout is not a terminal.
const PLAIN_EVERY: Duration = Duration::from_secs(2);
/// The window over which messages per second are averaged.
const RATE_WINDOW: Duration = Duration::from_secs(3);

pub(crate) struct Ui {
    bar: Option<ProgressBar>,
    last_plain: Instant,
    last_syncs: u64,
    last_at: Instant,
    rate: f64,
    /// Whether a full window has been averaged yet.
    rated: bool,
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

impl Ui {
    pub(crate) fn new() -> Self {
        let now = Instant::now();
        Self {
            bar: None,
            last_plain: now,
            last_syncs: 0,
            last_at: now,
            rate: 0.0,
            rated: false,
        }
    }

    fn tty() -> bool {
        std::io::stdout().is_terminal()
    }

    /// A line above the bars (or a plain line).
    pub(crate) fn note(&self, msg: &str) {
        match &self.bar {
            Some(b) => b.println(msg),
            None => say(msg),
        }
    }

    pub(crate) fn start_ramp(&mut self, total: u64) {
        if Self::tty() {
            let b = ProgressBar::new(total)
                .with_style(style("ramp {elapsed:>4} [{bar:30}] {pos}/{len} {msg}"));
            b.enable_steady_tick(Duration::from_millis(200));
            self.bar = Some(b);
        }
    }

    pub(crate) fn ramp(&mut self, p: &Progress) {
        let msg = format!("connected {} failed {}", p.connected, p.failed);
        match &self.bar {
            Some(b) => {
                b.set_position(p.connected + p.failed);
                b.set_message(msg);
            }
            None => self.plain(format!(
                "ramp: {}/{} answered, {msg}",
                p.connected + p.failed,
                p.attempted
            )),
        }
    }

    pub(crate) fn start_run(&mut self, duration: Duration, syncs: u64) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
        self.last_syncs = syncs;
        self.last_at = Instant::now();
        self.rated = false;
        if Self::tty() {
            let b = ProgressBar::new(duration.as_secs().max(1))
                .with_style(style("run  {elapsed:>4} [{bar:30}] {pos}/{len}s {msg}"));
            b.enable_steady_tick(Duration::from_millis(200));
            self.bar = Some(b);
        }
    }

    pub(crate) fn run(&mut self, p: &Progress, elapsed: Duration) {
        let now = Instant::now();
        let dt = now.duration_since(self.last_at).as_secs_f64();
        // Updates arrive in bursts (one a second per station), so average
        // over a few seconds rather than show a sawtooth.
        if dt >= RATE_WINDOW.as_secs_f64() {
            self.rate = p.syncs.saturating_sub(self.last_syncs) as f64 / dt;
            self.last_syncs = p.syncs;
            self.last_at = now;
            self.rated = true;
        } else if !self.rated && dt >= 0.5 {
            // Until the first full window, the average so far.
            self.rate = p.syncs.saturating_sub(self.last_syncs) as f64 / dt;
        }
        let p99 = p
            .p99_us
            .map_or("-".to_owned(), |v| format!("{:.1} ms", v as f64 / 1000.0));
        let msg = format!(
            "{:.0} msgs/s, p99 {p99}, connected {} failed {} dropped {}",
            self.rate, p.connected, p.failed, p.dropped
        );
        match &self.bar {
            Some(b) => {
                b.set_position(elapsed.as_secs());
                b.set_message(msg);
            }
            None => self.plain(format!("run: {:.0}s, {msg}", elapsed.as_secs_f64())),
        }
    }

    /// The run of `--stream`: audio bytes a second over every reader.
    pub(crate) fn stream_run(&mut self, p: &Progress, elapsed: Duration) {
        let now = Instant::now();
        let dt = now.duration_since(self.last_at).as_secs_f64();
        if dt >= RATE_WINDOW.as_secs_f64() || (!self.rated && dt >= 0.5) {
            self.rate = p.bytes.saturating_sub(self.last_syncs) as f64 / dt;
            if dt >= RATE_WINDOW.as_secs_f64() {
                self.last_syncs = p.bytes;
                self.last_at = now;
                self.rated = true;
            }
        }
        let msg = format!(
            "{:.0} KiB/s, {} stalls, reading {} failed {} ended {}",
            self.rate / 1024.0,
            p.stalls,
            p.connected.saturating_sub(p.dropped),
            p.failed,
            p.dropped
        );
        match &self.bar {
            Some(b) => {
                b.set_position(elapsed.as_secs());
                b.set_message(msg);
            }
            None => self.plain(format!("run: {:.0}s, {msg}", elapsed.as_secs_f64())),
        }
    }

    fn plain(&mut self, line: String) {
        if self.last_plain.elapsed() >= PLAIN_EVERY {
            self.last_plain = Instant::now();
            say(&line);
        }
    }

    pub(crate) fn finish(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}

impl Default for Ui {
    fn default() -> Self {
        Self::new()
    }
}

/// A line to stdout. A reader that went away (`| head`) stops seeing the
/// progress, and the run goes on: its exit status is what a pipeline gates.
fn say(line: &str) {
    if let Err(e) = crate::client::emit(line) {
        tracing::debug!(error = %e, "cannot write the progress line");
    }
}
