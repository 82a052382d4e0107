//! `radio loadtest --listen-only`: the generator plays no broadcaster, and
//! its listeners tune to stations that already play (a server-run station,
//! `radio serve --station`, or someone else's broadcast). Instead of a
//! broadcaster, the parent keeps one observer per station: a plain
//! listener that counts the states the server publishes during the run
//! (so the report knows what every listener was owed) and the newest `seq`
//! at its end (what every listener must hold). It reports through the same
//! [`Handle`] as a broadcaster, so the run's phases do not tell them apart.
//!
//! States published while the listeners ramp up are not owed: only those
//! of the run phase count.

use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::broadcaster::{Handle, Outcome};

/// How long after the run's end the observer waits for a state published
/// by then to reach it (the fan-out to every listener comes first).
const LATE: Duration = Duration::from_secs(2);
use crate::client::{self, ClockOffset, Ws};
use crate::protocol::{self, ClientMessage, ServerMessage, StationName, SyncCause};

/// Connects to `url` and tunes in to `station`, which must be live.
pub(crate) async fn connect(
    url: &str,
    station: StationName,
    duration: Duration,
) -> anyhow::Result<Handle> {
    let (mut ws, _) = client::connect(url).await?;
    // The server's clock, so that "published during the run" means what
    // it means to the listeners (they judge by the frames' server time).
    let mut clock = ClockOffset::default();
    for _ in 0..8 {
        client::sample_clock(&mut ws, &mut clock).await?;
    }
    let offset_ms = clock.offset_ms().unwrap_or(0.0).round() as i64;
    client::send(
        &mut ws,
        &ClientMessage::TuneIn {
            station: station.clone(),
        },
    )
    .await?;
    let tuned = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match client::next_message(&mut ws).await? {
                Some(ServerMessage::Tuned { live, .. }) => return anyhow::Ok(live),
                Some(ServerMessage::Error { code, message, .. }) => {
                    bail!("cannot listen to {station}: {code}: {message}")
                }
                Some(_) => {}
                None => bail!("the server closed the connection before tuned"),
            }
        }
    })
    .await
    .context("no reply to tune_in within 10s")??;
    if !tuned {
        bail!(
            "--listen-only {station}: the station is not live; start it first (radio serve \
             --station {station}=SOURCE, or a broadcaster)"
        );
    }
    let (start_tx, start_rx) = oneshot::channel();
    let (done_tx, done_rx) = oneshot::channel();
    let (stop_tx, stop_rx) = oneshot::channel();
    let task = tokio::spawn(observe(ws, offset_ms, duration, start_rx, done_tx, stop_rx));
    Ok(Handle::new(start_tx, done_rx, stop_tx, task))
}

/// Reads the station's states, counting those published during the run
/// (from its start for `duration`, by the server's clock, as the listeners
/// count them); then reports, and keeps reading (so pings are answered)
/// until told to stop. It reports at the first state published after the
/// run, or [`LATE`] after the run's end when none comes.
async fn observe(
    mut ws: Ws,
    offset_ms: i64,
    duration: Duration,
    mut start: oneshot::Receiver<Instant>,
    done: oneshot::Sender<Outcome>,
    mut stop: oneshot::Receiver<()>,
) {
    let mut outcome = Outcome::default();
    // The run on the server's clock, in milliseconds: [from, until).
    let mut window: Option<(i64, i64)> = None;
    let mut end = Instant::now() + Duration::from_secs(365 * 24 * 3600);
    loop {
        tokio::select! {
            at = &mut start, if window.is_none() => match at {
                Ok(at) => {
                    let ago = i64::try_from(at.elapsed().as_millis()).unwrap_or(0);
                    let from = protocol::now_ms() - ago + offset_ms;
                    let long = i64::try_from(duration.as_millis()).unwrap_or(i64::MAX);
                    window = Some((from, from.saturating_add(long)));
                    end = at + duration + LATE;
                }
                // The parent gave up.
                Err(_) => return,
            },
            _ = tokio::time::sleep_until(end), if window.is_some() => break,
            msg = client::next_message(&mut ws) => match msg {
                Ok(Some(ServerMessage::Sync(s))) => {
                    if window.is_some_and(|(_, until)| s.server_time_ms >= until) {
                        break;
                    }
                    outcome.final_seq = outcome.final_seq.max(s.seq);
                    if window.is_some_and(|(from, _)| s.server_time_ms >= from) {
                        match s.cause {
                            SyncCause::Update => outcome.updates_sent += 1,
                            SyncCause::Heartbeat => outcome.heartbeats_sent += 1,
                            SyncCause::TuneIn => {}
                        }
                    }
                }
                Ok(Some(ServerMessage::BroadcasterOffline { reason, .. })) => {
                    let reason = format!("{reason:?}").to_ascii_lowercase();
                    outcome.lost = Some(format!("the station went offline ({reason})"));
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => {
                    outcome.lost = Some("the server closed the observer's connection".into());
                    break;
                }
            },
        }
    }
    if done.send(outcome).is_err() {
        return;
    }
    loop {
        tokio::select! {
            _ = &mut stop => break,
            msg = client::next_message(&mut ws) => {
                if !matches!(msg, Ok(Some(_))) {
                    return;
                }
            }
        }
    }
    let _ = ws.close(None).await;
}
