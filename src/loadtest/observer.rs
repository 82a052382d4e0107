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
use crate::client::{self, Ws};
use crate::protocol::{ClientMessage, ServerMessage, StationName, SyncCause};

/// Connects to `url` and tunes in to `station`, which must be live.
pub(crate) async fn connect(
    url: &str,
    station: StationName,
    duration: Duration,
) -> anyhow::Result<Handle> {
    let (mut ws, _) = client::connect(url).await?;
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
    let task = tokio::spawn(observe(ws, duration, start_rx, done_tx, stop_rx));
    Ok(Handle::new(start_tx, done_rx, stop_tx, task))
}

/// Reads the station's states until the run ends, counting those of the
/// run; then reports, and keeps reading (so pings are answered) until told
/// to stop.
async fn observe(
    mut ws: Ws,
    duration: Duration,
    mut start: oneshot::Receiver<Instant>,
    done: oneshot::Sender<Outcome>,
    mut stop: oneshot::Receiver<()>,
) {
    let mut outcome = Outcome::default();
    let mut end: Option<Instant> = None;
    let far = Instant::now() + Duration::from_secs(365 * 24 * 3600);
    loop {
        tokio::select! {
            at = &mut start, if end.is_none() => match at {
                Ok(at) => end = Some(at + duration),
                // The parent gave up.
                Err(_) => return,
            },
            _ = tokio::time::sleep_until(end.unwrap_or(far)), if end.is_some() => break,
            msg = client::next_message(&mut ws) => match msg {
                Ok(Some(ServerMessage::Sync(s))) => {
                    outcome.final_seq = outcome.final_seq.max(s.seq);
                    if end.is_some() {
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
