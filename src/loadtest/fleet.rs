//! The worker processes as the parent sees them: started with their plans,
//! their stdout read line by line, their latest progress and reports kept.
//! Apart from the phases because it is the parent's one piece of plumbing
//! (pipes, processes, a channel), not a step of the run.

use std::process::Stdio;

use anyhow::{Context as _, bail};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin};
use tokio::sync::mpsc;

use super::plan::{ParentCmd, Progress, WorkerMsg, WorkerPlan, WorkerReport};

/// What a worker's stdout reader saw.
enum Event {
    Msg(WorkerMsg),
    /// The worker's stdout closed (it exited).
    Ended,
}

/// The worker processes and what they last said.
pub(super) struct Fleet {
    pub(super) children: Vec<Child>,
    stdins: Vec<ChildStdin>,
    pub(super) pids: Vec<u32>,
    latest: Vec<Progress>,
    pub(super) ramp_done: Vec<bool>,
    pub(super) reports: Vec<Option<WorkerReport>>,
    events: mpsc::UnboundedReceiver<(usize, Event)>,
}

impl Fleet {
    pub(super) async fn spawn(plans: Vec<WorkerPlan>) -> anyhow::Result<Fleet> {
        let exe =
            std::env::current_exe().context("cannot find the radio binary to start workers")?;
        let (tx, events) = mpsc::unbounded_channel();
        let n = plans.len();
        let mut fleet = Fleet {
            children: Vec::with_capacity(n),
            stdins: Vec::with_capacity(n),
            pids: Vec::with_capacity(n),
            latest: vec![Progress::default(); n],
            ramp_done: vec![false; n],
            reports: (0..n).map(|_| None).collect(),
            events,
        };
        for (w, plan) in plans.into_iter().enumerate() {
            let mut child = tokio::process::Command::new(&exe)
                .arg("loadtest-worker")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .with_context(|| format!("cannot start worker process {}", exe.display()))?;
            let (Some(mut stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
                bail!("worker {w} has no stdin/stdout pipe");
            };
            let mut line = serde_json::to_vec(&plan)?;
            line.push(b'\n');
            stdin
                .write_all(&line)
                .await
                .with_context(|| format!("cannot send worker {w} its plan"))?;
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stdout).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    match serde_json::from_str::<WorkerMsg>(&line) {
                        Ok(msg) => {
                            if tx.send((w, Event::Msg(msg))).is_err() {
                                return;
                            }
                        }
                        Err(e) => tracing::warn!(worker = w, error = %e, "unreadable worker line"),
                    }
                }
                let _ = tx.send((w, Event::Ended));
            });
            fleet.pids.push(child.id().unwrap_or(0));
            fleet.children.push(child);
            fleet.stdins.push(stdin);
        }
        Ok(fleet)
    }

    /// Waits for the next worker event and applies it.
    pub(super) async fn next(&mut self) -> anyhow::Result<()> {
        let (w, event) = self
            .events
            .recv()
            .await
            .context("every worker's output closed")?;
        match event {
            Event::Msg(WorkerMsg::Progress(p)) => self.latest[w] = p,
            Event::Msg(WorkerMsg::RampDone(p)) => {
                self.latest[w] = p;
                self.ramp_done[w] = true;
            }
            Event::Msg(WorkerMsg::Report(r)) => {
                self.latest[w] = r.progress;
                self.reports[w] = Some(*r);
            }
            Event::Ended => {
                if self.reports[w].is_none() {
                    bail!("worker {w} exited before it reported (its error, if any, is above)");
                }
            }
        }
        Ok(())
    }

    pub(super) fn totals(&self) -> Progress {
        let mut t = Progress::default();
        for p in &self.latest {
            t.attempted += p.attempted;
            t.connected += p.connected;
            t.failed += p.failed;
            t.dropped += p.dropped;
            t.syncs += p.syncs;
            t.bytes += p.bytes;
            t.stalls += p.stalls;
            t.p99_us = t.p99_us.max(p.p99_us);
            t.churned += p.churned;
            t.reconnects += p.reconnects;
            t.reconnect_failures += p.reconnect_failures;
            t.seq_regressions += p.seq_regressions;
            t.down += p.down;
            t.behind += p.behind;
        }
        t
    }

    /// Each worker's latest progress.
    pub(super) fn latest(&self) -> &[Progress] {
        &self.latest
    }

    pub(super) async fn command(&mut self, cmd: &ParentCmd) -> anyhow::Result<()> {
        let mut line = serde_json::to_vec(cmd)?;
        line.push(b'\n');
        for (w, stdin) in self.stdins.iter_mut().enumerate() {
            stdin
                .write_all(&line)
                .await
                .with_context(|| format!("cannot reach worker {w}"))?;
            stdin.flush().await?;
        }
        Ok(())
    }
}
